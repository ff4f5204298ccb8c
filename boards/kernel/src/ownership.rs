//! Moving isolation groups between partitions at run time (DESIGN.md I2,
//! I3, I4, I7). `partitions::ownership` decides who may move what and in
//! which order; this module executes the steps on the SMMUs, the PCI
//! functions and the partitions' stage 2, under one lock shared by every
//! CPU that traps in and by the boot CPU that drains events.

use crate::discover::Discovered;
use crate::smmus::SmmuInstance;
use crate::partition::{describe_devices, part_name, Part};
use alloc::vec::Vec;
use partitions::faults::{FaultLedger, Verdict};
use partitions::groups::{Group, GroupId};
use partitions::hypercall::{Call, Status, OWNER_BLOCKED, OWNER_MOVING};
use partitions::ownership::{Caller, Change, Owner, Ownership, Refusal, State, Step};
use partitions::topology::DeviceRef;
use partitions::validate::{PartitionId, PartitionPlan};
use platform::arch::guest::{self, Stage2};
use platform::pci;
use platform::pgtable::{Access, Format, IdentityMap, MemType, Table, PAGE_SIZE};
use platform::sync::SpinLock;
use platform::{PhysAddr, PhysRange};
use smmu::{DomainConfig, Iova, Prot};

/// Where a partition's stage-2 tables live, to edit them later.
pub struct S2Pool {
    /// First table (the root).
    pub pa: PhysAddr,
    /// Tables in the pool.
    pub tables: usize,
    /// Tables in use.
    pub used: usize,
}

/// The mutable side of one partition.
pub struct PartRt {
    /// Its CPUs' stage 2.
    pub s2: Stage2,
    /// The tables of that stage 2.
    pub pool: S2Pool,
    /// Its DMA domains, by SMMU index.
    pub domains: Vec<(usize, smmu::Domain)>,
    /// The devices it owns now.
    pub devices: Vec<DeviceRef>,
    /// Bumped whenever `devices` changes.
    pub generation: u64,
    /// MMIO of devices taken away from it, which it may still touch while it
    /// notices: reads there return all ones and writes are dropped, as for a
    /// PCI device that was removed.
    pub revoked: Vec<PhysRange>,
}

/// Everything a group move touches.
pub struct Runtime {
    /// The SMMUs.
    pub smmus: Vec<SmmuInstance>,
    /// Topology and groups.
    pub discovered: &'static Discovered,
    /// Who owns what.
    pub ownership: Ownership,
    /// Per partition, by id.
    pub parts: Vec<PartRt>,
    /// SMMU events counted against each group's owners.
    pub faults: FaultLedger,
    /// Groups found over their owner's fault limit by a drain that ran
    /// inside another change (a release's): quarantined by the next
    /// periodic drain.
    pub pending_quarantine: Vec<(GroupId, PartitionId, u32)>,
}

static RUNTIME: SpinLock<Option<Runtime>> = SpinLock::new(None);

/// Hands the runtime over once partitions are set up.
pub fn install(rt: Runtime) {
    *RUNTIME.lock() = Some(rt);
}

/// Runs `f` on the runtime under the lock (nothing if not installed).
pub fn with<R: Default>(f: impl FnOnce(&mut Runtime) -> R) -> R {
    match RUNTIME.lock().as_mut() {
        Some(rt) => f(rt),
        None => R::default(),
    }
}

fn vmid_of(p: PartitionId) -> u16 {
    p.0 + 1
}

/// Attaches `g` to `plan`'s domain on `g`'s SMMU (created on first use:
/// tagged with the partition's VMID, mapping its RAM and, with dma-p2p, its
/// devices' MMIO); one CMD_SYNC.
/// Why an SMMU step failed: the driver's error, or no usable SMMU.
pub type AttachError = Option<smmu::Error>;

pub fn attach(
    plan: &PartitionPlan,
    g: &Group,
    devs: &[crate::partition::OwnedDevice],
    smmus: &mut [SmmuInstance],
    domains: &mut Vec<(usize, smmu::Domain)>,
) -> Result<(), AttachError> {
    let fail = |what: &'static str, e: smmu::Error| {
        defmt::error!("partition {=str}: {=str}: {}", plan.name.as_str(), what, e);
        Some(e)
    };
    let Some(smmu) = smmus.get_mut(g.smmu.0).and_then(SmmuInstance::usable) else {
        defmt::error!("partition {=str}: group {=u32}: its SMMU is out of use", plan.name.as_str(), g.id.0);
        return Err(None);
    };
    if !domains.iter().any(|(i, _)| *i == g.smmu.0) {
        let cfg = DomainConfig { tag: Some(vmid_of(plan.id)), ..DomainConfig::default() };
        let mut dom = smmu.create_domain(cfg).map_err(|e| fail("create domain", e))?;
        for m in &plan.memory {
            smmu.map(&mut dom, Iova(m.base.0), smmu::PhysAddr(m.base.0), m.size, Prot::RAM_RW).map_err(|e| fail("map RAM", e))?;
        }
        if plan.dma_p2p {
            for r in devs.iter().flat_map(|x| x.mmio.iter()) {
                let r = r.grow_to(PAGE_SIZE);
                smmu.map(&mut dom, Iova(r.start.0), smmu::PhysAddr(r.start.0), r.size(), Prot::MMIO_RW).map_err(|e| fail("map BAR", e))?;
            }
        }
        domains.push((g.smmu.0, dom));
    }
    let dom = &domains.iter().find(|(i, _)| *i == g.smmu.0).ok_or(None)?.1;
    let before = smmu.stats();
    smmu.attach(dom, &g.stream_ids).map_err(|e| fail("attach", e))?;
    let cost = smmu.stats() - before;
    let sids: Vec<u32> = g.stream_ids.iter().map(|s| s.0).collect();
    defmt::info!(
        "partition {=str}: group {=u32} (StreamIDs {=[?]:#x}) attached to its {} domain (VMID {=?}, ASID {=?}): {=u64} commands, {=u64} CMD_SYNC",
        plan.name.as_str(),
        g.id.0,
        sids.as_slice(),
        dom.stage(),
        dom.vmid().map(|v| v.0),
        dom.asid().map(|a| a.0),
        cost.commands,
        cost.syncs
    );
    Ok(())
}

/// Memory decode and bus mastering on for `devices` (and bus mastering on
/// the bridges above them, so they forward).
pub fn start_devices(devices: &[DeviceRef], d: &Discovered) -> Result<(), ()> {
    for &dev in devices {
        let DeviceRef::Pci { host, function } = dev else { continue };
        let t = d.pci.get(host).ok_or(())?;
        let mut cs = d.config_space(host).ok_or(())?;
        let f = t.functions.get(function).ok_or(())?;
        let mut up = f.parent;
        while let Some(b) = up {
            let bridge = t.functions.get(b).ok_or(())?;
            pci::set_bus_master(&mut cs, bridge.bdf, true).map_err(|_| ())?;
            up = bridge.parent;
        }
        pci::set_memory_decode(&mut cs, f.bdf, true).map_err(|_| ())?;
        pci::set_bus_master(&mut cs, f.bdf, true).map_err(|_| ())?;
    }
    Ok(())
}

fn stop_devices(devices: &[DeviceRef], d: &Discovered) -> Result<(), ()> {
    for &dev in devices {
        let DeviceRef::Pci { host, function } = dev else { continue };
        let f = d.pci.get(host).and_then(|t| t.functions.get(function)).ok_or(())?;
        let mut cs = d.config_space(host).ok_or(())?;
        pci::set_bus_master(&mut cs, f.bdf, false).map_err(|_| ())?;
        pci::set_memory_decode(&mut cs, f.bdf, false).map_err(|_| ())?;
    }
    Ok(())
}

fn reset_devices(devices: &[DeviceRef], d: &Discovered) -> Result<(), ()> {
    for &dev in devices {
        let DeviceRef::Pci { host, function } = dev else { continue };
        let f = d.pci.get(host).and_then(|t| t.functions.get(function)).ok_or(())?;
        if !f.flr {
            continue;
        }
        let mut cs = d.config_space(host).ok_or(())?;
        pci::function_level_reset(&mut cs, f.bdf, &mut platform::time::Delay).map_err(|_| ())?;
    }
    Ok(())
}

/// Maps (or unmaps) `mmio` in partition `p`'s stage 2; an unmap is followed
/// by a broadcast invalidation of the partition's TLB entries.
fn stage2_mmio(p: &mut PartRt, mmio: &[PhysRange], map: bool) -> Result<(), ()> {
    // SAFETY: the pool was allocated for this partition's stage 2 only; the
    // lock serialises every edit.
    let pool = unsafe { core::slice::from_raw_parts_mut(p.pool.pa.0 as *mut Table, p.pool.tables) };
    let mut m = IdentityMap::resume(Format::Stage2, pool, p.pool.pa, p.pool.used, u32::from(p.s2.input_bits)).map_err(|_| ())?;
    for r in mmio {
        let r = r.grow_to(PAGE_SIZE);
        if map {
            m.map(r, MemType::Device, Access::ReadWrite).map_err(|_| ())?;
        } else {
            m.unmap(r).map_err(|_| ())?;
        }
    }
    p.pool.used = m.tables_used();
    platform::arch::cache::clean(PhysRange::new(p.pool.pa.0, p.pool.tables as u64 * PAGE_SIZE).unwrap_or_default());
    if !map {
        guest::flush_stage2(&p.s2);
    }
    Ok(())
}

/// The endpoints of `g` (bridges stay with the kernel).
fn endpoints(g: &Group, d: &Discovered) -> Vec<DeviceRef> {
    g.devices.iter().copied().filter(|&x| d.topology.pci(x).is_none_or(|f| f.secondary_bus().is_none())).collect()
}

/// Why a change stopped.
enum Failure {
    /// A step failed; the group ends Blocked.
    Step(&'static str),
    /// The SMMU returned an error after which it cannot be trusted (an
    /// invalidation that did not complete, a failed command): it is failed
    /// closed, and every group behind it ends Blocked.
    Smmu(&'static str),
}

impl Failure {
    fn of_smmu(what: &'static str, e: &AttachError) -> Failure {
        match e {
            Some(e) if e.leaves_smmu_untrusted() => Failure::Smmu(what),
            _ => Failure::Step(what),
        }
    }
}

/// Carries out `c` step by step; the first failure stops it (the group then
/// ends Blocked, by `Ownership::finish`).
fn execute(rt: &mut Runtime, plans: &[Part], c: &Change) -> Result<(), Failure> {
    let d = rt.discovered;
    let g = d.groups.get(c.group).ok_or(Failure::Step("unknown group"))?;
    let devs = endpoints(g, d);
    let owned = describe_devices("", &devs, d).map_err(|_| Failure::Step("device vanished"))?;
    let mmio: Vec<PhysRange> = owned.iter().flat_map(|o| o.mmio.iter().copied()).collect();
    for step in &c.steps {
        match *step {
            Step::UnmapMmio(p) => revoke(rt, p, &devs, &mmio).map_err(|_| Failure::Step("unmapping MMIO"))?,
            Step::StopDevices => stop_devices(&devs, d).map_err(|_| Failure::Step("stopping devices"))?,
            Step::AbortStreams(_) => {
                let smmu = rt.smmus.get_mut(g.smmu.0).and_then(SmmuInstance::usable).ok_or(Failure::Step("no SMMU"))?;
                let before = smmu.stats();
                smmu.detach(&g.stream_ids).map_err(|e| Failure::of_smmu("aborting streams", &Some(e)))?;
                let cost = smmu.stats() - before;
                defmt::debug!("group {=u32}: abort STEs: {=u64} commands, {=u64} CMD_SYNC", g.id.0, cost.commands, cost.syncs);
            }
            Step::DrainEvents(_) => {
                // Charged to the old owner: the group is still Releasing.
                let over = drain_smmu(rt, g.smmu.0, plans);
                rt.pending_quarantine.extend(over.into_iter().filter(|(x, _, _)| *x != g.id));
            }
            Step::ResetDevices => reset_devices(&devs, d).map_err(|_| Failure::Step("resetting devices"))?,
            Step::AttachStreams(p) => {
                let plan = &plans.get(usize::from(p.0)).ok_or(Failure::Step("unknown partition"))?.plan;
                let part = rt.parts.get_mut(usize::from(p.0)).ok_or(Failure::Step("unknown partition"))?;
                attach(plan, g, &owned, &mut rt.smmus, &mut part.domains).map_err(|e| Failure::of_smmu("attaching streams", &e))?;
                // The new owner's fault count starts now, from zero.
                rt.faults.restart(g.id, p, platform::time::uptime_us());
            }
            Step::StartDevices => start_devices(&devs, d).map_err(|_| Failure::Step("starting devices"))?,
            Step::MapMmio(p) => {
                let part = rt.parts.get_mut(usize::from(p.0)).ok_or(Failure::Step("unknown partition"))?;
                stage2_mmio(part, &mmio, true).map_err(|_| Failure::Step("mapping MMIO"))?;
                part.devices.extend(devs.iter().copied());
                part.revoked.retain(|r| !mmio.contains(r));
                part.generation += 1;
            }
        }
    }
    Ok(())
}

/// Takes `devs` (with their `mmio`) away from partition `p`: unmapped from
/// its stage 2 (and its TLBs), and what it touches there from now on reads
/// as a removed PCI device.
fn revoke(rt: &mut Runtime, p: PartitionId, devs: &[DeviceRef], mmio: &[PhysRange]) -> Result<(), ()> {
    let part = rt.parts.get_mut(usize::from(p.0)).ok_or(())?;
    stage2_mmio(part, mmio, false)?;
    part.devices.retain(|x| !devs.contains(x));
    part.revoked.extend(mmio.iter().copied());
    part.generation += 1;
    Ok(())
}

/// Fails SMMU `si` closed (GBPA abort, SMMUEN off: every stream aborts) and
/// takes every group behind it to Blocked for good: their owners lose the
/// devices' MMIO and bus mastering. Partitions keep their CPUs.
pub fn fail_smmu(rt: &mut Runtime, si: usize, why: &'static str) {
    let Some(instance) = rt.smmus.get_mut(si) else { return };
    let confirmed = instance.fail_closed();
    let name = instance.node.name.as_str();
    defmt::error!(
        "SMMU {=str}: {=str}: failed closed{=str}; every stream of it aborts, its groups are Blocked; partitions keep their CPUs",
        name,
        why,
        if confirmed { "" } else { " (not confirmed by the SMMU)" }
    );
    let d = rt.discovered;
    let groups = d.groups.groups.iter().filter(|g| g.smmu.0 == si).map(|g| g.id);
    for (gid, p) in rt.ownership.smmu_failed(groups) {
        let Some(g) = d.groups.get(gid) else { continue };
        let devs = endpoints(g, d);
        let mmio: Vec<PhysRange> = describe_devices("", &devs, d).map(|o| o.iter().flat_map(|x| x.mmio.iter().copied()).collect()).unwrap_or_default();
        if revoke(rt, p, &devs, &mmio).is_err() || stop_devices(&devs, d).is_err() {
            defmt::error!("group {=u32}: could not take its devices from partition {=u16}", gid.0, p.0);
        }
        defmt::warn!("group {=u32}: Blocked, its SMMU failed closed", gid.0);
    }
}

fn refusal(r: Refusal) -> Status {
    match r {
        Refusal::UnknownGroup | Refusal::UnknownPartition => Status::InvalidArgument,
        Refusal::Denied => Status::Denied,
        Refusal::OwnerMismatch { .. } => Status::OwnerMismatch,
        Refusal::Busy => Status::Busy,
        Refusal::Unavailable => Status::Failed,
    }
}

/// Runs `start` (a release or an assignment) to its end.
fn change(plans: &[Part], start: impl FnOnce(&mut Ownership) -> Result<Change, Refusal>) -> Result<Owner, Status> {
    let mut guard = RUNTIME.lock();
    let rt = guard.as_mut().ok_or(Status::NotSupported)?;
    let c = start(&mut rt.ownership).map_err(refusal)?;
    let result = execute(rt, plans, &c);
    let group = c.group;
    let owner = rt.ownership.finish(c, result.is_ok());
    match result {
        Ok(()) => Ok(owner),
        Err(Failure::Step(why)) => {
            defmt::error!("group {=u32}: change failed ({=str}); the group is Blocked", group.0, why);
            Err(Status::Failed)
        }
        Err(Failure::Smmu(why)) => {
            defmt::error!("group {=u32}: change failed ({=str}); its SMMU cannot be trusted", group.0, why);
            if let Some(si) = rt.discovered.groups.get(group).map(|g| g.smmu.0) {
                fail_smmu(rt, si, why);
            }
            Err(Status::Failed)
        }
    }
}

/// The kernel's side of the group-management hypercalls from partition `me`.
pub fn hypercall(plans: &'static [Part], me: PartitionId, call: Call) -> Result<[u64; 3], Status> {
    let by = Caller::Partition(me);
    match call {
        Call::GroupCount => with(|rt| Some(rt.ownership.iter().count() as u64)).map(|n| [n, 0, 0]).ok_or(Status::NotSupported),
        Call::GroupInfo { group } => with(|rt| {
            let g = rt.discovered.groups.get(GroupId(group))?;
            let owner = match rt.ownership.state(g.id)? {
                State::Stable(Owner::Blocked) => OWNER_BLOCKED,
                State::Stable(Owner::Partition(p)) => u64::from(p.0),
                _ => OWNER_MOVING,
            };
            let first_device = g.devices.iter().find_map(|&x| rt.discovered.topology.pci(x)).map(|f| u64::from(f.rid())).unwrap_or(u64::from(u16::MAX));
            Some([
                owner,
                ((g.devices.len() as u64) << 32) | g.stream_ids.len() as u64,
                (first_device << 32) | g.stream_ids.first().map(|s| u64::from(s.0)).unwrap_or(0),
            ])
        })
        .ok_or(Status::InvalidArgument),
        Call::GroupRelease { group, expected } => {
            change(plans, |o| o.release(by, GroupId(group), PartitionId(expected))).map(|_| [0; 3])
        }
        Call::GroupAssign { group, to } => change(plans, |o| o.assign(by, GroupId(group), PartitionId(to))).map(|_| [0; 3]),
        Call::Devices => with(|rt| {
            let p = rt.parts.get(usize::from(me.0))?;
            let first = describe_devices("", &p.devices, rt.discovered).ok()?.first().and_then(|o| o.mmio.first().map(|r| r.start.0));
            Some([p.generation, p.devices.len() as u64, first.unwrap_or(0)])
        })
        .ok_or(Status::NotSupported),
        _ => Err(Status::NotSupported),
    }
}

/// What to do with a stage-2 data abort of partition `me` that may come from
/// a group move racing with its MMIO access: if the device was given to it
/// meanwhile, run the access again; if the device was taken away, emulate
/// the access as to a removed PCI device (reads all ones, writes dropped).
/// `None`: a real fault.
pub fn mmio_fault(
    me: PartitionId,
    s: &platform::arch::exception::Syndrome,
    frame: &mut platform::arch::exception::Frame,
) -> Option<platform::arch::exception::TrapAction> {
    use platform::arch::exception::TrapAction;
    let iss = s.iss();
    let ipa = PhysAddr(s.fault_ipa());
    let (owned, revoked) = with(|rt| {
        let Some(p) = rt.parts.get(usize::from(me.0)) else { return (false, false) };
        let owned = describe_devices("", &p.devices, rt.discovered)
            .map(|ds| ds.iter().flat_map(|d| d.mmio.iter()).any(|r| r.grow_to(PAGE_SIZE).contains(ipa)))
            .unwrap_or(false);
        (owned, p.revoked.iter().any(|r| r.grow_to(PAGE_SIZE).contains(ipa)))
    });
    if owned {
        return Some(TrapAction::Resume);
    }
    // Emulating needs the syndrome to name the register (ISV).
    if !revoked || iss & (1 << 24) == 0 {
        return None;
    }
    let write = iss & (1 << 6) != 0;
    let srt = ((iss >> 16) & 0x1f) as usize;
    if !write && srt < 31 {
        let bits = 8u32 << ((iss >> 22) & 3);
        frame.x[srt] = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    }
    Some(TrapAction::Skip)
}

/// Most event lines logged per drain; the rest are counted.
const EVENT_LINES_PER_DRAIN: u32 = 8;

/// The owner `g`'s records are charged to: its partition, also while a
/// release of it runs (the records are the old owner's) or while an
/// assignment runs past its attach (they are the new owner's).
fn owner(o: &Ownership, g: GroupId) -> Option<PartitionId> {
    match o.state(g)? {
        State::Stable(Owner::Partition(p)) | State::Releasing(p) | State::Assigning(p) => Some(p),
        State::Stable(Owner::Blocked) => None,
    }
}

/// Drains SMMU `si`'s event queue: each record is attributed to its group
/// and the partition that owns it, counted against that partition's
/// `bulkhead,fault-limit`, and logged (QEMU records one event per 4 bytes
/// of a faulting transfer, so repeats of the same (StreamID, type, page)
/// are counted, not printed). Returns the groups found over their owner's
/// limit; global errors are handled after the drain.
fn drain_smmu(rt: &mut Runtime, si: usize, parts: &[Part]) -> Vec<(GroupId, PartitionId, u32)> {
    let now_us = platform::time::uptime_us();
    let d = rt.discovered;
    let mut over: Vec<(GroupId, PartitionId, u32)> = Vec::new();
    let (ownership, faults) = (&rt.ownership, &mut rt.faults);
    let Some(SmmuInstance { node, smmu: Some(smmu), failed: false, .. }) = rt.smmus.get_mut(si) else { return over };
    let name = node.name.as_str();
    let mut last: Option<(u32, smmu::EventType, u64)> = None;
    let (mut printed, mut repeats) = (0u32, 0u32);
    let report = smmu.drain_events(1024, |e| {
        let group = d.groups.groups.iter().find(|g| g.smmu.0 == si && g.stream_ids.contains(&e.stream_id));
        let who = group.and_then(|g| owner(ownership, g.id));
        if let (Some(g), Some(p)) = (group, who) {
            let limit = parts.get(usize::from(p.0)).map(|x| x.plan.fault_limit).unwrap_or((u32::MAX, 1));
            if let Verdict::Quarantine { count } = faults.record(g.id, p, limit.into(), now_us) {
                if !over.iter().any(|(x, _, _)| *x == g.id) {
                    over.push((g.id, p, count));
                }
            }
        }
        let page = e.input_addr.map(|a| a.0 >> 12).unwrap_or(u64::MAX);
        let key = (e.stream_id.0, e.event_type, page);
        if last == Some(key) || printed == EVENT_LINES_PER_DRAIN {
            repeats += 1;
            return;
        }
        last = Some(key);
        printed += 1;
        // The device: the endpoint whose requester ID is the StreamID,
        // else the group's first (an alias StreamID).
        let bdf = group
            .and_then(|g| {
                let fns = g.devices.iter().filter_map(|&x| d.topology.pci(x));
                let mut all = fns.clone();
                fns.clone().find(|f| u32::from(f.rid()) == e.stream_id.0).or_else(|| all.next())
            })
            .map(|f| (f.bdf.bus, f.bdf.dev, f.bdf.func));
        defmt::warn!(
            "SMMU event {}: StreamID {=u32:#x}, group {=i64}, partition {=str}, device {}, {=str} at {=u64:#x}",
            e.event_type,
            e.stream_id.0,
            group.map(|g| i64::from(g.id.0)).unwrap_or(-1),
            who.map(|p| part_name(parts, usize::from(p.0))).unwrap_or("(none: blocked)"),
            DeviceName(bdf),
            match e.read {
                Some(true) => "read",
                Some(false) => "write",
                None => "access",
            },
            e.input_addr.map(|a| a.0).unwrap_or(0)
        );
    });
    if repeats > 0 {
        defmt::info!("SMMU events: {=u32} repeats not printed", repeats);
    }
    let (_, evtq_log2) = smmu.queue_log2();
    let filled = match report {
        Ok(r) if r.lost_events => {
            defmt::error!("SMMU {=str}: event queue overflowed, events were lost", name);
            false
        }
        Ok(r) => r.events >= 1 << evtq_log2,
        Err(e) => {
            defmt::error!("SMMU {=str}: draining events: {}", name, e);
            false
        }
    };
    if let Some(why) = global_errors(smmu, name, filled) {
        fail_smmu(rt, si, why);
    }
    over
}

/// Drains every SMMU's event queue (see [`drain_smmu`]) and quarantines
/// (releases to Blocked) each group over its owner's fault limit; the owner
/// sees its device go (DEVICES generation).
pub fn drain_events(parts: &'static [Part]) {
    let quarantine: Vec<(GroupId, PartitionId, u32)> = with(|rt| {
        let mut over = core::mem::take(&mut rt.pending_quarantine);
        for si in 0..rt.smmus.len() {
            for q in drain_smmu(rt, si, parts) {
                if !over.iter().any(|(x, _, _)| *x == q.0) {
                    over.push(q);
                }
            }
        }
        over
    });
    for (g, p, n) in quarantine {
        let name = part_name(parts, usize::from(p.0));
        let (limit, window) = parts.get(usize::from(p.0)).map(|x| x.plan.fault_limit).unwrap_or((0, 0));
        match change(parts, |o| o.release(Caller::Kernel, g, p)) {
            Ok(_) => defmt::warn!(
                "group {=u32} quarantined: partition {=str} exceeded its fault limit ({=u32} faults, limit {=u32} per {=u32} ms); the group is Blocked",
                g.0,
                name,
                n,
                limit,
                window
            ),
            // Moved on meanwhile (released by its owner, or its SMMU failed).
            Err(Status::OwnerMismatch) => {}
            Err(e) => defmt::error!("group {=u32}: quarantine failed: {=i64}", g.0, e as i64),
        }
    }
}

/// Reads and acknowledges the SMMU's global errors. A command error was
/// already repaired by the driver. EVENTQ_ABT_ERR right after a drain that
/// found the queue full is QEMU's way of reporting an overflow (it does not
/// set OVFLG): events were lost, processing goes on. Any other
/// EVENTQ_ABT_ERR, or SFM_ERR, means the SMMU cannot be trusted: returns
/// why, and the caller fails it closed.
fn global_errors(smmu: &mut crate::smmus::SmmuDriver, name: &str, queue_was_full: bool) -> Option<&'static str> {
    let report = match smmu.handle_gerror() {
        Ok(r) => r,
        Err(e) => {
            defmt::error!("SMMU {=str}: reading GERROR: {}", name, e);
            return None;
        }
    };
    let g = report.errors;
    if g.is_empty() {
        return None;
    }
    if let Some(c) = report.command {
        defmt::warn!("SMMU {=str}: command error recovered: {}", name, c);
    }
    if g.eventq_abt_err() && !g.sfm_err() && queue_was_full {
        defmt::error!("SMMU {=str}: event queue overflowed (reported as EVENTQ_ABT_ERR): events were lost; decoding goes on", name);
        return None;
    }
    if g.eventq_abt_err() || g.sfm_err() {
        defmt::error!("SMMU {=str}: global error {}", name, g);
        return Some("global error");
    }
    defmt::warn!("SMMU {=str}: global errors {} acknowledged", name, g);
    None
}

/// A PCI function as `bb:dd.f` in logs.
struct DeviceName(Option<(u8, u8, u8)>);

impl defmt::Format for DeviceName {
    fn format(&self, f: defmt::Formatter) {
        match self.0 {
            Some((b, d, func)) => defmt::write!(f, "{=u8:02x}:{=u8:02x}.{=u8}", b, d, func),
            None => defmt::write!(f, "?"),
        }
    }
}
