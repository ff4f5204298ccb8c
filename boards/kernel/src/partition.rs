//! Partitions at run time: memory scrubbed, image copied, a DTB of their
//! own, CPUs started at EL1 under stage 2, hypercalls and traps handled.
//! A partition that faults is stopped alone; the others keep running.

use crate::discover::Discovered;
use crate::smmus::SmmuInstance;
use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use partitions::guest_dt::GuestDevice;
use partitions::topology::DeviceRef;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use partitions::binding::Region;
use partitions::hypercall::{self, Call, Status};
use partitions::validate::{PartitionPlan, Plan};
use smccc::psci;
use platform::arch::exception::{ec_name, fsc_name, Frame, Syndrome};
use platform::arch::exception::TrapAction;
use platform::arch::guest::{self, Stage2};
use platform::arch::smp::{self, CpuStart};
use platform::pgtable::{Access, IdentityMap, MemType, Table, PAGE_SIZE};
use platform::{ExitCode, PhysAddr, PhysRange};

/// Per-CPU EL2 stack for partition CPUs (traps run on it).
const CPU_STACK: u64 = 64 << 10;
/// Tables available to one partition's CPU stage 2.
const S2_TABLES: usize = 32;
/// Room kept at the top of the entry region for the partition's DTB.
const DTB_ROOM: u64 = 64 << 10;

const RUNNING: u8 = 0;
const EXITED: u8 = 1;
const FAILED: u8 = 2;

/// One partition at run time.
pub struct Part {
    /// What validation planned for it.
    pub(crate) plan: PartitionPlan,
    state: AtomicU8,
    status: AtomicU64,
}

struct Table_ {
    parts: Vec<Part>,
    /// (MPIDR, partition index) of every partition CPU.
    cpus: Vec<(u64, usize)>,
}

/// Set once before any partition CPU starts; read-only afterwards.
static mut TABLE: Option<&'static Table_> = None;

fn table() -> Option<&'static Table_> {
    // SAFETY: written once by `start` on the boot CPU before any partition
    // CPU runs (CPU_ON orders it), never written again.
    unsafe { *core::ptr::addr_of!(TABLE) }
}

/// Launch parameters of one partition CPU.
struct Launch {
    s2: Stage2,
    entry: PhysAddr,
    dtb: PhysAddr,
}

extern "C" fn partition_cpu(arg: u64) -> ! {
    // SAFETY: `arg` is the address of a leaked `Launch` made by `start`.
    let l = unsafe { &*(arg as *const Launch) };
    // SAFETY: the stage 2 maps only the partition's memory (built by
    // `stage2`), and the entry lies inside it (validated).
    unsafe { guest::enter(&l.s2, l.entry, l.dtb.0) }
}

fn err(what: &'static str) -> ExitCode {
    defmt::error!("cannot start partitions: {=str}", what);
    ExitCode::PlatformError
}

/// Builds the identity stage 2 of `p` in frames of its own: its RAM, and
/// its devices' MMIO as Device memory. Returns the tables' description for
/// later edits as well.
fn stage2(p: &PartitionPlan, mmio: &[PhysRange]) -> Result<(Stage2, crate::ownership::S2Pool), ExitCode> {
    let bytes = S2_TABLES as u64 * PAGE_SIZE;
    let pa = platform::memory::alloc_zeroed(bytes, PAGE_SIZE).ok_or_else(|| err("out of frames for stage-2 tables"))?;
    // SAFETY: fresh, zeroed, identity-mapped frames owned by this table.
    let pool = unsafe { core::slice::from_raw_parts_mut(pa.0 as *mut Table, S2_TABLES) };
    let (input_bits, start_level) = cpu_stage2_geometry();
    let mut m = IdentityMap::stage2(pool, pa, u32::from(input_bits)).map_err(|_| err("empty stage-2 pool"))?;
    for r in &p.memory {
        let range = PhysRange::new(r.base.0, r.size).ok_or_else(|| err("memory region overflows"))?;
        m.map(range, MemType::Normal, Access::ReadWrite).map_err(|e| {
            defmt::error!("partition {=str}: stage 2: {}", p.name.as_str(), e);
            ExitCode::PlatformError
        })?;
    }
    for r in mmio {
        m.map(r.grow_to(PAGE_SIZE), MemType::Device, Access::ReadWrite).map_err(|e| {
            defmt::error!("partition {=str}: stage 2 of device MMIO: {}", p.name.as_str(), e);
            ExitCode::PlatformError
        })?;
    }
    let root = m.root_at(start_level).ok_or_else(|| err("out of stage-2 tables"))?;
    platform::arch::cache::clean(PhysRange::new(pa.0, bytes).unwrap_or_default());
    let s2 = Stage2 { root, vmid: vmid_of(p), input_bits, start_level };
    Ok((s2, crate::ownership::S2Pool { pa, tables: S2_TABLES, used: m.tables_used() }))
}

/// The IPA size and starting level of partitions' CPU stage 2 on this CPU,
/// by the rule the SMMU's stage 2 follows too
/// ([`smmu::pgtable::stage2_start`]): the whole physical address space,
/// from level 0, where that is legal (PA above 42 bits); the identity map
/// concatenates no tables, so on a CPU with 40 or 42 physical address bits
/// the IPA space is 39 bits, walked from level 1 (the partition's memory and
/// devices must lie below 512 GiB there, or the stage 2 refuses them).
fn cpu_stage2_geometry() -> (u8, u8) {
    let pa = guest::pa_bits();
    match smmu::pgtable::stage2_start(pa, pa) {
        Some((level, 1)) => (pa, level),
        _ => (39, 1),
    }
}

/// The VMID of partition `p` (0 is never used).
fn vmid_of(p: &PartitionPlan) -> u16 {
    p.id.0 + 1
}

/// A device of a partition: what its DTB says, and its MMIO.
pub struct OwnedDevice {
    /// Its node in the partition's DTB.
    pub guest: GuestDevice,
    /// Its MMIO (BARs).
    pub mmio: Vec<PhysRange>,
}

/// The devices `list` names, with their MMIO.
pub fn describe_devices(name: &str, list: &[DeviceRef], d: &Discovered) -> Result<Vec<OwnedDevice>, ExitCode> {
    let mut out = Vec::new();
    for &dev in list {
        match dev {
            DeviceRef::Pci { host, function } => {
                let f = d.pci.get(host).and_then(|t| t.functions.get(function)).ok_or_else(|| err("device vanished"))?;
                let mmio: Vec<PhysRange> = f.bars.iter().map(|b| b.range()).collect();
                let at = mmio.first().map(|r| r.start.0).unwrap_or(u64::from(f.bdf.rid()));
                out.push(OwnedDevice {
                    guest: GuestDevice {
                        name: format!("pci{:04x},{:04x}@{:x}", f.vendor, f.device, at),
                        compatible: vec![format!("pci{:04x},{:04x}", f.vendor, f.device)],
                        reg: mmio.iter().map(|r| (r.start.0, r.size())).collect(),
                        pci: Some((f.bdf.bus, f.bdf.dev, f.bdf.func)),
                    },
                    mmio,
                });
            }
            DeviceRef::Platform(i) => {
                let path = d.topology.platform.get(i).map(|x| x.path.as_str()).unwrap_or("?");
                defmt::warn!("partition {=str}: platform device {=str}: its MMIO is not passed through yet", name, path);
            }
        }
    }
    Ok(out)
}

fn devices_of(p: &PartitionPlan, d: &Discovered) -> Result<Vec<OwnedDevice>, ExitCode> {
    describe_devices(p.name.as_str(), &p.devices, d)
}

/// The DMA side of a partition (DESIGN.md I4, I5): for each SMMU its groups
/// sit behind, a domain mapping only the partition's RAM (and its own BARs
/// with `bulkhead,dma-p2p`); every StreamID of every group attached (one
/// CMD_SYNC per group); only then memory decode and bus mastering on.
fn attach_groups(
    p: &PartitionPlan,
    devs: &[OwnedDevice],
    smmus: &mut [SmmuInstance],
    d: &Discovered,
) -> Result<Vec<(usize, smmu::Domain)>, ExitCode> {
    let mut domains: Vec<(usize, smmu::Domain)> = Vec::new();
    for gid in &p.groups {
        let g = d.groups.get(*gid).ok_or_else(|| err("group vanished"))?;
        crate::ownership::attach(p, g, devs, smmus, &mut domains).map_err(|_| ExitCode::SmmuError)?;
    }
    // The STEs are live: now the devices may master, and the bridges above
    // them forward.
    crate::ownership::start_devices(&p.devices, d).map_err(|_| err("enabling devices"))?;
    Ok(domains)
}

/// Scrubs, loads and starts every partition of `plan`.
pub fn start(plan: Plan, mut smmus: Vec<SmmuInstance>, discovered: Discovered) -> Result<(), ExitCode> {
    let discovered = &discovered_leak(discovered);
    let mut launches = Vec::new();
    let mut rts: Vec<crate::ownership::PartRt> = Vec::new();
    for p in &plan.partitions {
        for m in &p.memory {
            // SAFETY: the plan was validated: the region is RAM owned by this
            // partition only, reserved from the kernel's allocators and
            // identity-mapped read-write.
            unsafe { core::ptr::write_bytes(m.base.0 as *mut u8, 0, m.size as usize) };
        }
        let entry_region = *p.memory.first().ok_or_else(|| err("partition without memory"))?;
        let (entry, home) = match p.image {
            Some((img, entry)) => {
                let home = p.memory.iter().find(|m| m.contains(entry)).copied().unwrap_or(entry_region);
                if entry.0 + img.size > home.end() - DTB_ROOM {
                    defmt::error!("partition {=str}: image leaves no room for its DTB", p.name.as_str());
                    return Err(ExitCode::ConfigRefused);
                }
                // SAFETY: validated: the image and the destination are RAM,
                // do not overlap, and the destination is this partition's.
                unsafe { core::ptr::copy_nonoverlapping(img.base.0 as *const u8, entry.0 as *mut u8, img.size as usize) };
                (entry, home)
            }
            None => (entry_region.base, entry_region),
        };
        let entry = PhysAddr(entry.0);
        let devs = devices_of(p, discovered)?;
        let domains = attach_groups(p, &devs, &mut smmus, discovered)?;
        let guests: Vec<GuestDevice> = devs.iter().map(|x| x.guest.clone()).collect();
        let dtb = partitions::guest_dt::build(p, &guests);
        let dtb_at = PhysAddr((home.end() - DTB_ROOM + 7) & !7);
        if dtb.len() as u64 > DTB_ROOM {
            return Err(err("partition DTB too large"));
        }
        // SAFETY: the top DTB_ROOM bytes of the partition's own region,
        // checked above not to overlap the image.
        unsafe { core::ptr::copy_nonoverlapping(dtb.as_ptr(), dtb_at.0 as *mut u8, dtb.len()) };
        let mmio: Vec<PhysRange> = devs.iter().flat_map(|x| x.mmio.iter().copied()).collect();
        let (s2, pool) = stage2(p, &mmio)?;
        rts.push(crate::ownership::PartRt { s2, pool, domains, devices: p.devices.clone(), generation: 0, revoked: Vec::new() });
        for m in &p.memory {
            // The partition starts with its caches off: make the scrub, the
            // image and the DTB visible to it.
            platform::arch::cache::clean(PhysRange::new(m.base.0, m.size).unwrap_or_default());
        }
        defmt::info!(
            "partition {=str}: id {=u16}, VMID {=u16}, entry {=u64:#x}, DTB at {=u64:#x} ({=usize} bytes), CPUs {=[?]}",
            p.name.as_str(),
            p.id.0,
            s2.vmid,
            entry.0,
            dtb_at.0,
            dtb.len(),
            p.cpus.as_slice()
        );
        for &mpidr in &p.cpus {
            launches.push((mpidr, p.id.0 as usize, Launch { s2, entry, dtb: dtb_at }));
        }
    }
    let t = Table_ {
        cpus: launches.iter().map(|(m, i, _)| (*m, *i)).collect(),
        parts: plan
            .partitions
            .into_iter()
            .map(|plan| Part { plan, state: AtomicU8::new(RUNNING), status: AtomicU64::new(0) })
            .collect(),
    };
    let ownership = partitions::ownership::Ownership::from_plan(
        &Plan { partitions: t.parts.iter().map(|p| p.plan.clone()).collect(), blocked: Vec::new() },
        discovered.groups.groups.len(),
    );
    let faults = partitions::faults::FaultLedger::new(discovered.groups.groups.len());
    crate::ownership::install(crate::ownership::Runtime { smmus, discovered, ownership, parts: rts, faults, pending_quarantine: Vec::new() });
    // SAFETY: no partition CPU runs yet; see `table`.
    unsafe { *core::ptr::addr_of_mut!(TABLE) = Some(Box::leak(Box::new(t))) };
    platform::arch::exception::set_trap_handler(trap);
    platform::log::enable_smp();
    for (mpidr, _, launch) in launches {
        let stack = platform::memory::alloc_zeroed(CPU_STACK, PAGE_SIZE).ok_or_else(|| err("out of frames for CPU stacks"))?;
        let launch: &'static Launch = Box::leak(Box::new(launch));
        let block: &'static mut CpuStart = Box::leak(Box::new(CpuStart {
            stack_top: 0,
            vbar: 0,
            mair: 0,
            tcr: 0,
            ttbr: 0,
            sctlr: 0,
            hcr: 0,
            entry: partition_cpu,
            arg: 0,
        }));
        smp::prepare(block, PhysRange::new(stack.0, CPU_STACK).unwrap_or_default(), partition_cpu, launch as *const Launch as u64);
        smp::start(mpidr, block).map_err(|e| {
            defmt::error!("CPU {=u64:#x} did not start: {}", mpidr, e);
            ExitCode::PlatformError
        })?;
    }
    Ok(())
}

/// Discovery results live for the kernel's life (the runtime refers to them).
fn discovered_leak(d: Discovered) -> &'static Discovered {
    Box::leak(Box::new(d))
}

/// Waits until every partition has stopped, draining SMMU events meanwhile;
/// the status says whether any partition failed.
pub fn wait_all() -> ExitCode {
    let Some(t) = table() else { return ExitCode::Success };
    loop {
        crate::ownership::drain_events(t_names(t));
        let states: Vec<u8> = t.parts.iter().map(|p| p.state.load(Ordering::Acquire)).collect();
        if states.iter().all(|&s| s != RUNNING) {
            crate::ownership::drain_events(t_names(t));
            let failed = states.iter().filter(|&&s| s == FAILED).count();
            defmt::info!("all {=usize} partitions stopped, {=usize} failed", states.len(), failed);
            return if failed == 0 { ExitCode::Success } else { ExitCode::PartitionFailed };
        }
        // Sleep until an SMMU interrupt (eventq, gerror) or the 10 ms tick:
        // a partition stopping interrupts nobody, so the tick bounds how
        // late the loop notices.
        platform::arch::irq::arm_timer_us(10_000);
        platform::arch::irq::wait_for_interrupt();
    }
}

fn owner(t: &Table_) -> Option<&Part> {
    let me = platform::arch::mpidr();
    t.cpus.iter().find(|(m, _)| *m == me).and_then(|(_, i)| t.parts.get(*i))
}

fn stop(p: &Part, state: u8, status: u64) -> TrapAction {
    p.status.store(status, Ordering::Relaxed);
    p.state.store(state, Ordering::Release);
    TrapAction::Halt
}


fn trap(frame: &mut Frame, s: &Syndrome) -> TrapAction {
    let Some(t) = table() else { return TrapAction::Halt };
    let Some(p) = owner(t) else { return TrapAction::Halt };
    let name = p.plan.name.as_str();
    use platform::arch::exception::EC;
    match s.class() {
        Some(EC::Value::HVC64) => hypercall(p, frame),
        // SMC: PSCI (DEN0022); the function ID is W0 (DEN0028).
        Some(EC::Value::SMC64) => match frame.x[0] as u32 {
            psci::PSCI_VERSION => {
                frame.x[0] = 1 << 16;
                TrapAction::Skip
            }
            psci::PSCI_SYSTEM_OFF | psci::PSCI_SYSTEM_RESET | psci::PSCI_CPU_OFF => {
                defmt::info!("partition {=str}: PSCI power-off, stopping it", name);
                stop(p, EXITED, 0)
            }
            _ => {
                frame.x[0] = i64::from(psci::error::NOT_SUPPORTED) as u64;
                TrapAction::Skip
            }
        },
        Some(class @ (EC::Value::InstrAbortLowerEL | EC::Value::DataAbortLowerEL)) => {
            let data = class == EC::Value::DataAbortLowerEL;
            if data {
                if let Some(action) = crate::ownership::mmio_fault(p.plan.id, s, frame) {
                    return action;
                }
            }
            let fsc = (s.iss() & 0x3f) as u8;
            let write = data && s.iss() & (1 << 6) != 0;
            defmt::error!(
                "partition {=str}: stage-2 {=str} on {=str} of IPA {=u64:#x} at ELR {=u64:#x} (ESR {=u64:#x}): stopping this partition",
                name,
                fsc_name(fsc),
                if !data { "instruction fetch" } else if write { "write" } else { "read" },
                s.fault_ipa(),
                s.elr,
                s.esr
            );
            stop(p, FAILED, u64::MAX)
        }
        _ => {
            let ec = s.ec();
            defmt::error!(
                "partition {=str}: {=str} (EC {=u8:#x}, ESR {=u64:#x}) at ELR {=u64:#x}: stopping this partition",
                name,
                ec_name(ec),
                ec,
                s.esr,
                s.elr
            );
            stop(p, FAILED, u64::MAX)
        }
    }
}

fn hypercall(p: &Part, frame: &mut Frame) -> TrapAction {
    let regs = [frame.x[0], frame.x[1], frame.x[2], frame.x[3], frame.x[4]];
    let name = p.plan.name.as_str();
    let call = match hypercall::decode(regs, &p.plan.memory) {
        Ok(c) => c,
        Err(e) => {
            defmt::warn!("partition {=str}: hypercall {=u64:#x} refused: {=i64}", name, regs[0], e as i64);
            frame.x[0] = e.code();
            return TrapAction::Resume;
        }
    };
    match call {
        Call::Version => {
            frame.x[1] = hypercall::ABI_VERSION;
        }
        Call::ConsoleWrite { at, len } => {
            // SAFETY: `decode` checked the buffer lies in the caller's own
            // memory, which the kernel identity-maps.
            let bytes = unsafe { core::slice::from_raw_parts(at.0 as *const u8, len as usize) };
            let text = core::str::from_utf8(bytes).unwrap_or("<not UTF-8>");
            defmt::info!("[{=str}] {=str}", name, text.trim_end());
        }
        Call::Exit { status } => {
            if status == 0 {
                defmt::info!("partition {=str}: exited with status 0", name);
                return stop(p, EXITED, 0);
            }
            defmt::warn!("partition {=str}: exited with status {=u64}", name, status);
            return stop(p, FAILED, status);
        }
        Call::WhoAmI => {
            frame.x[1] = u64::from(p.plan.id.0);
            frame.x[2] = p.plan.cpus.len() as u64;
            frame.x[3] = p.plan.devices.len() as u64;
        }
        call => {
            let Some(t) = table() else { return TrapAction::Halt };
            let r = crate::ownership::hypercall(t_names(t), p.plan.id, call);
            match r {
                Ok(out) => frame.x[1..4].copy_from_slice(&out),
                Err(e) => {
                    frame.x[0] = e.code();
                    return TrapAction::Resume;
                }
            }
        }
    }
    frame.x[0] = Status::Ok.code();
    TrapAction::Resume
}

/// The plan's regions as the memory map's ranges (for reservations).
pub fn regions(plan: &Plan) -> impl Iterator<Item = (PhysRange, bool)> + '_ {
    plan.partitions.iter().flat_map(|p| {
        p.memory
            .iter()
            .map(|m| (m, false))
            .chain(p.image.iter().map(|(img, _)| (img, true)))
            .filter_map(|(r, image): (&Region, bool)| PhysRange::new(r.base.0, r.size).map(|x| (x, image)))
    })
}

/// The partitions, by id.
fn t_names(t: &'static Table_) -> &'static [Part] {
    &t.parts
}

/// A partition's name (for the ownership module's messages).
pub fn part_name(parts: &[Part], id: usize) -> &str {
    parts.get(id).map(|p| p.plan.name.as_str()).unwrap_or("?")
}
