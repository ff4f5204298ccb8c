//! Moving isolation groups between partitions at run time (DESIGN.md I2,
//! I3, I4, I7). `partitions::ownership` decides who may move what and in
//! which order; this module executes the steps on the SMMUs, the PCI
//! functions and the partitions' stage 2, under the kernel's isolation
//! lock, shared by every CPU that traps in and by the boot CPU that drains
//! events.

use crate::devices::{self, OwnedDevice};
use crate::events;
use crate::runtime::{Isolation, Kernel};
use crate::smmus::SmmuInstance;
use crate::stage2;
use alloc::vec::Vec;
use partitions::groups::{Group, GroupId};
use partitions::hypercall::{Call, Status, OWNER_BLOCKED, OWNER_MOVING};
use partitions::ownership::{Caller, Change, Owner, Ownership, Refusal, State, Step};
use partitions::topology::DeviceRef;
use partitions::validate::{PartitionId, PartitionPlan};
use platform::pgtable::PAGE_SIZE;
use platform::PhysRange;
use smmu::{DomainConfig, Iova, Prot};

/// Why an SMMU step failed: the driver's error, or no usable SMMU.
pub type AttachError = Option<smmu::Error>;

/// Attaches `g` to `plan`'s domain on `g`'s SMMU (created on first use:
/// tagged with the partition's VMID, mapping its RAM and, with dma-p2p, its
/// devices' MMIO); one CMD_SYNC.
pub fn attach(
    plan: &PartitionPlan,
    g: &Group,
    devs: &[OwnedDevice],
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
        let cfg = DomainConfig { tag: Some(stage2::vmid(plan.id)), ..DomainConfig::default() };
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
fn execute(k: &Kernel, iso: &mut Isolation, c: &Change) -> Result<(), Failure> {
    let d = k.discovered;
    let g = d.groups.get(c.group).ok_or(Failure::Step("unknown group"))?;
    let devs = devices::endpoints(g, d);
    let owned = devices::describe("", &devs, d).map_err(|_| Failure::Step("device vanished"))?;
    let mmio: Vec<PhysRange> = owned.iter().flat_map(|o| o.mmio.iter().copied()).collect();
    let partition = |p: PartitionId| k.partition(p).ok_or(Failure::Step("unknown partition"));
    for step in &c.steps {
        match *step {
            Step::UnmapMmio(p) => revoke(k, p, &devs, &mmio).map_err(|_| Failure::Step("unmapping MMIO"))?,
            Step::StopDevices => devices::stop(&devs, d).map_err(|_| Failure::Step("stopping devices"))?,
            Step::AbortStreams(_) => {
                let smmu = iso.smmus.get_mut(g.smmu.0).and_then(SmmuInstance::usable).ok_or(Failure::Step("no SMMU"))?;
                let before = smmu.stats();
                smmu.detach(&g.stream_ids).map_err(|e| Failure::of_smmu("aborting streams", &Some(e)))?;
                let cost = smmu.stats() - before;
                defmt::debug!("group {=u32}: abort STEs: {=u64} commands, {=u64} CMD_SYNC", g.id.0, cost.commands, cost.syncs);
            }
            Step::DrainEvents(_) => {
                // Charged to the old owner: the group is still Releasing.
                let drained = events::drain(iso, g.smmu.0, d, &k.partitions);
                if let Some(why) = drained.untrusted {
                    return Err(Failure::Smmu(why));
                }
                iso.pending_quarantine.extend(drained.over_limit.into_iter().filter(|(x, _, _)| *x != g.id));
            }
            Step::ResetDevices => devices::reset(&devs, d).map_err(|_| Failure::Step("resetting devices"))?,
            Step::AttachStreams(p) => {
                let part = partition(p)?;
                let mut res = part.resources.lock();
                attach(&part.plan, g, &owned, &mut iso.smmus, &mut res.domains).map_err(|e| Failure::of_smmu("attaching streams", &e))?;
                // The new owner's fault count starts now, from zero.
                iso.faults.restart(g.id, p, platform::time::uptime_us());
            }
            Step::StartDevices => devices::start(&devs, d).map_err(|_| Failure::Step("starting devices"))?,
            Step::MapMmio(p) => {
                let mut res = partition(p)?.resources.lock();
                res.stage2.map_mmio(&mmio).map_err(|_| Failure::Step("mapping MMIO"))?;
                res.devices.extend(devs.iter().copied());
                res.revoked.retain(|r| !mmio.contains(r));
                res.generation += 1;
                let part = partition(p)?;
                crate::vgic::enable_lines_of(part, &devs);
                present(k, part, &devs, true);
            }
        }
    }
    Ok(())
}

/// Takes `devs` (with their `mmio`) away from partition `p`: unmapped from
/// its stage 2 (and its TLBs), and what it touches there from now on reads
/// as a removed PCI device. They vanish from its virtual PCI host first
/// (no Command or FLR of the guest reaches them after this), and their
/// interrupt lines no other device of `p` raises are retired.
fn revoke(k: &Kernel, p: PartitionId, devs: &[DeviceRef], mmio: &[PhysRange]) -> Result<(), stage2::Stage2Error> {
    let Some(part) = k.partition(p) else { return Ok(()) };
    let mut res = part.resources.lock();
    present(k, part, devs, false);
    // Recorded as revoked first: an unmap that fails half-way leaves no
    // page the partition reaches without the kernel knowing it is gone.
    res.devices.retain(|x| !devs.contains(x));
    let kept = partitions::validate::owned_irqs(&k.discovered.topology, &res.devices);
    crate::vgic::set_lines(part, |intid| !kept.iter().any(|o| o.irq.intid == intid), false);
    res.revoked.extend(mmio.iter().copied());
    res.generation += 1;
    res.stage2.unmap_mmio(mmio)
}

/// Shows (`true`) or hides the PCI functions of `devs` in `part`'s virtual
/// PCI hosts, under its `vm` lock.
fn present(k: &Kernel, part: &crate::runtime::Partition, devs: &[DeviceRef], on: bool) {
    let d = k.discovered;
    let mut vm = part.vm.lock();
    for &dev in devs {
        let DeviceRef::Pci { host, function } = dev else { continue };
        let Some((_, vh)) = vm.pci.iter_mut().find(|(h, _)| *h == host) else { continue };
        if let (Some(f), Some(cs)) = (d.pci.get(host).and_then(|t| t.functions.get(function)), d.config_space(host)) {
            vh.set_present(&cs, f.bdf, on);
        }
    }
}

/// Fails SMMU `si` closed (GBPA abort, SMMUEN off: every stream aborts) and
/// takes every group behind it to Blocked for good: their owners lose the
/// devices' MMIO and bus mastering. Partitions keep their CPUs.
pub fn fail_smmu(k: &Kernel, iso: &mut Isolation, si: usize, why: &'static str) {
    let Some(instance) = iso.smmus.get_mut(si) else { return };
    let confirmed = instance.fail_closed();
    defmt::error!(
        "SMMU {=str}: {=str}: failed closed{=str}; every stream of it aborts, its groups are Blocked; partitions keep their CPUs",
        instance.node.name.as_str(),
        why,
        if confirmed { "" } else { " (not confirmed by the SMMU)" }
    );
    let d = k.discovered;
    let groups = d.groups.groups.iter().filter(|g| g.smmu.0 == si).map(|g| g.id);
    for (gid, p) in iso.ownership.smmu_failed(groups) {
        let Some(g) = d.groups.get(gid) else { continue };
        let devs = devices::endpoints(g, d);
        let mmio = devices::mmio(&devs, d).unwrap_or_default();
        if revoke(k, p, &devs, &mmio).is_err() || devices::stop(&devs, d).is_err() {
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
fn change(k: &Kernel, start: impl FnOnce(&mut Ownership) -> Result<Change, Refusal>) -> Result<Owner, Status> {
    let mut iso = k.isolation.lock();
    let c = start(&mut iso.ownership).map_err(refusal)?;
    let result = execute(k, &mut iso, &c);
    let group = c.group;
    let owner = iso.ownership.finish(c, result.is_ok());
    match result {
        Ok(()) => Ok(owner),
        Err(Failure::Step(why)) => {
            defmt::error!("group {=u32}: change failed ({=str}); the group is Blocked", group.0, why);
            Err(Status::Failed)
        }
        Err(Failure::Smmu(why)) => {
            defmt::error!("group {=u32}: change failed ({=str}); its SMMU cannot be trusted", group.0, why);
            if let Some(si) = k.discovered.groups.get(group).map(|g| g.smmu.0) {
                fail_smmu(k, &mut iso, si, why);
            }
            Err(Status::Failed)
        }
    }
}

/// The kernel's side of the group-management hypercalls from partition `me`.
pub fn hypercall(k: &Kernel, me: PartitionId, call: Call) -> Result<[u64; 3], Status> {
    let by = Caller::Partition(me);
    let d = k.discovered;
    match call {
        Call::GroupCount => Ok([k.isolation.lock().ownership.iter().count() as u64, 0, 0]),
        Call::GroupInfo { group } => {
            let g = d.groups.get(GroupId(group)).ok_or(Status::InvalidArgument)?;
            let owner = match k.isolation.lock().ownership.state(g.id).ok_or(Status::InvalidArgument)? {
                State::Stable(Owner::Blocked) => OWNER_BLOCKED,
                State::Stable(Owner::Partition(p)) => u64::from(p.0),
                _ => OWNER_MOVING,
            };
            let first_device = g.devices.iter().find_map(|&x| d.topology.pci(x)).map(|f| u64::from(f.rid())).unwrap_or(u64::from(u16::MAX));
            Ok([
                owner,
                ((g.devices.len() as u64) << 32) | g.stream_ids.len() as u64,
                (first_device << 32) | g.stream_ids.first().map(|s| u64::from(s.0)).unwrap_or(0),
            ])
        }
        Call::GroupRelease { group, expected } => change(k, |o| o.release(by, GroupId(group), PartitionId(expected))).map(|_| [0; 3]),
        Call::GroupAssign { group, to } => change(k, |o| o.assign(by, GroupId(group), PartitionId(to))).map(|_| [0; 3]),
        Call::Devices => {
            let res = k.partition(me).ok_or(Status::NotSupported)?.resources.lock();
            let first = devices::mmio(&res.devices, d).map_err(|_| Status::NotSupported)?.first().map(|r| r.start.0);
            Ok([res.generation, res.devices.len() as u64, first.unwrap_or(0)])
        }
        _ => Err(Status::NotSupported),
    }
}

/// Drains every SMMU's event queue (see [`events::drain`]), fails closed
/// each SMMU that reported it cannot be trusted, and quarantines (releases
/// to Blocked) each group over its owner's fault limit; the owner sees its
/// device go (DEVICES generation).
pub fn drain_events(k: &Kernel) {
    let quarantine: Vec<(GroupId, PartitionId, u32)> = {
        let mut iso = k.isolation.lock();
        let mut over = core::mem::take(&mut iso.pending_quarantine);
        for si in 0..iso.smmus.len() {
            let drained = events::drain(&mut iso, si, k.discovered, &k.partitions);
            if let Some(why) = drained.untrusted {
                fail_smmu(k, &mut iso, si, why);
            }
            for q in drained.over_limit {
                if !over.iter().any(|(x, _, _)| *x == q.0) {
                    over.push(q);
                }
            }
        }
        over
    };
    for (g, p, n) in quarantine {
        let (limit, window) = k.partition(p).map(|x| x.plan.fault_limit).unwrap_or((0, 0));
        match change(k, |o| o.release(Caller::Kernel, g, p)) {
            Ok(_) => defmt::warn!(
                "group {=u32} quarantined: partition {=str} exceeded its fault limit ({=u32} faults, limit {=u32} per {=u32} ms); the group is Blocked",
                g.0,
                k.name(p),
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
