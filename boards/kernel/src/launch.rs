//! Partitions launched: memory scrubbed, image copied, a DTB of their own,
//! their groups attached, their stage 2 built, the run-time table
//! published, CPUs started at EL1; then the boot CPU drains SMMU events
//! until every partition has stopped. A partition that faults is stopped
//! alone; the others keep running.

use crate::devices::{self, OwnedDevice};
use crate::discover::Discovered;
use crate::runtime::{Isolation, Kernel, Life, Partition, Resources};
use crate::smmus::SmmuInstance;
use crate::stage2::Stage2Tables;
use crate::vm::VirtualHosts;
use alloc::boxed::Box;
use alloc::vec::Vec;
use partitions::binding::Region;
use partitions::guest_dt::{GuestDevice, GuestPci};
use partitions::topology::DeviceRef;
use partitions::validate::{PartitionId, PartitionPlan, Plan};
use platform::arch::guest::{self, Stage2};
use platform::arch::smp::{self, CpuStart};
use platform::pgtable::PAGE_SIZE;
use platform::{ExitCode, PhysAddr, PhysRange};

/// Per-CPU EL2 stack for partition CPUs (traps run on it).
const CPU_STACK: u64 = 64 << 10;
/// Room kept at the top of the entry region for the partition's DTB.
const DTB_ROOM: u64 = 64 << 10;

/// Launch parameters of one partition's CPUs.
struct Launch {
    s2: Stage2,
    entry: PhysAddr,
    dtb: PhysAddr,
    /// Only the first vCPU enters the image; the others wait for the
    /// partition's PSCI CPU_ON (a Linux `Image`). Otherwise every CPU
    /// enters it (the bulkhead payload).
    boots_one: bool,
}

/// What one partition CPU starts with: its partition's launch and the top
/// of its own EL2 stack (it starts over there after a partition reset).
pub struct CpuLaunch {
    launch: &'static Launch,
    /// Top of this CPU's EL2 stack.
    pub stack_top: u64,
}

/// The stack top of the `CpuLaunch` at `arg`.
pub fn stack_top(arg: u64) -> u64 {
    // SAFETY: `arg` is the address of a leaked `CpuLaunch` (vCPU slots
    // hold only those, set by `partition_cpu`).
    unsafe { (*(arg as *const CpuLaunch)).stack_top }
}

/// Where a partition CPU starts over after its partition's SYSTEM_RESET:
/// the virtual interface emptied, then parked until the vCPU is started.
pub extern "C" fn restart_cpu(arg: u64) -> ! {
    // SAFETY: `arg` is the address of a leaked `CpuLaunch` made by `start`.
    let c = unsafe { &*(arg as *const CpuLaunch) };
    let Some(p) = crate::runtime::kernel().and_then(|k| k.this_cpu()) else { smp::halt_this_cpu() };
    platform::arch::vgic::reset();
    let v = crate::vm::this_vcpu(p);
    match p.vcpus[v].wait_for_start(p) {
        // SAFETY: as in `partition_cpu`: the partition's own stage 2, an
        // entry in its memory (the image's, or its PSCI CPU_ON's, checked).
        Some((entry, x0)) => unsafe { guest::enter(&c.launch.s2, PhysAddr(entry), x0) },
        None => smp::halt_this_cpu(),
    }
}

extern "C" fn partition_cpu(arg: u64) -> ! {
    // SAFETY: `arg` is the address of a leaked `CpuLaunch` made by `start`.
    let c = unsafe { &*(arg as *const CpuLaunch) };
    let l = c.launch;
    let Some(p) = crate::runtime::kernel().and_then(|k| k.this_cpu()) else { smp::halt_this_cpu() };
    if let Err(e) = crate::vgic::cpu_init() {
        defmt::error!("partition {=str}: CPU {=u64:#x}: GIC: {}", p.name(), platform::arch::mpidr(), e);
        p.stop(crate::runtime::Life::Failed, u64::MAX);
        smp::halt_this_cpu();
    }
    let v = crate::vm::this_vcpu(p);
    p.vcpus[v].set_launch(arg);
    let (entry, x0) = if v == 0 || !l.boots_one {
        p.vcpus[v].set_on();
        (l.entry.0, l.dtb.0)
    } else {
        match p.vcpus[v].wait_for_start(p) {
            Some(start) => start,
            None => smp::halt_this_cpu(),
        }
    };
    // SAFETY: the stage 2 maps only the partition's memory (built by
    // `Stage2Tables::build`), and the entry lies inside it (validated, or
    // checked by the PSCI CPU_ON that asked for it).
    unsafe { guest::enter(&l.s2, PhysAddr(entry), x0) }
}

/// What the partition's image is: an arm64 Linux `Image` (its header
/// checked against where it runs: Documentation/arch/arm64/booting.rst),
/// or a flat image entered at its first byte. The bytes it needs at the
/// entry (a Linux Image's `image_size` includes its bss).
fn image_kind(p: &PartitionPlan, img: Region, entry: PhysAddr) -> Result<(bool, u64), ExitCode> {
    use partitions::vm::image::{Header, ImageError, HEADER_SIZE};
    let len = (img.size as usize).min(HEADER_SIZE);
    // SAFETY: validated: the image region is RAM the loader filled, not
    // any partition's memory, identity-mapped.
    let head = unsafe { core::slice::from_raw_parts(img.base.0 as *const u8, len) };
    match Header::parse(head) {
        Ok(h) => {
            if !h.fits_at(entry.0) {
                defmt::error!(
                    "partition {=str}: bulkhead,entry {=u64:#x} is not a 2 MiB-aligned base plus the Image's text_offset {=u64:#x} (boards/bindings/bulkhead,partitions.yaml)",
                    p.name.as_str(),
                    entry.0,
                    h.text_offset
                );
                return Err(ExitCode::ConfigRefused);
            }
            defmt::info!(
                "partition {=str}: arm64 Linux Image: text_offset {=u64:#x}, image_size {=u64:#x}, {=u64} KiB pages",
                p.name.as_str(),
                h.text_offset,
                h.image_size,
                h.page_size.unwrap_or(0) >> 10
            );
            Ok((true, h.image_size.max(img.size)))
        }
        Err(ImageError::NotAnImage | ImageError::Truncated) => Ok((false, img.size)),
        Err(e) => {
            defmt::error!("partition {=str}: bulkhead,image: {}", p.name.as_str(), defmt::Display2Format(&e));
            Err(ExitCode::ConfigRefused)
        }
    }
}

fn err(what: &'static str) -> ExitCode {
    defmt::error!("cannot start partitions: {=str}", what);
    ExitCode::PlatformError
}

/// The DMA side of a partition (DESIGN.md I4, I5): for each SMMU its groups
/// sit behind, a domain mapping only the partition's RAM (and its own BARs
/// with `bulkhead,dma-p2p`); every StreamID of every group attached (one
/// CMD_SYNC per group); only then memory decode and bus mastering on.
fn attach_groups(p: &PartitionPlan, devs: &[OwnedDevice], smmus: &mut [SmmuInstance], d: &Discovered) -> Result<Vec<(usize, smmu::Domain)>, ExitCode> {
    let mut domains: Vec<(usize, smmu::Domain)> = Vec::new();
    for gid in &p.groups {
        let g = d.groups.get(*gid).ok_or_else(|| err("group vanished"))?;
        crate::ownership::attach(p, g, devs, smmus, &mut domains).map_err(|_| ExitCode::SmmuError)?;
    }
    // The STEs are live: now the devices may master, and the bridges above
    // them forward.
    devices::start(&p.devices, d).map_err(|_| err("enabling devices"))?;
    Ok(domains)
}

/// A partition's memory as loaded: where it is entered, its region, its
/// initrd, and whether only its first vCPU starts.
pub struct Loaded {
    /// Where its first instruction is.
    pub entry: PhysAddr,
    /// The memory region holding the entry (the DTB sits at its top).
    pub home: Region,
    /// Where its initrd was copied (start, end).
    pub initrd: Option<(u64, u64)>,
    /// A Linux `Image`: only the first vCPU enters it.
    pub boots_one: bool,
}

/// Scrubs `p`'s memory and copies its image and initrd in.
pub fn fill_memory(p: &PartitionPlan) -> Result<Loaded, ExitCode> {
    for m in &p.memory {
        // SAFETY: the plan was validated: the region is RAM owned by this
        // partition only, reserved from the kernel's allocators and
        // identity-mapped read-write.
        unsafe { core::ptr::write_bytes(m.base.0 as *mut u8, 0, m.size as usize) };
    }
    let entry_region = *p.memory.first().ok_or_else(|| err("partition without memory"))?;
    let mut boots_one = false;
    let mut initrd = None;
    let (entry, home) = match p.image {
        Some((img, entry)) => {
            let home = p.memory.iter().find(|m| m.contains(entry)).copied().unwrap_or(entry_region);
            let (linux, need) = image_kind(p, img, PhysAddr(entry.0))?;
            boots_one = linux;
            // The DTB at the top of the region, the initrd below it, page
            // aligned; the image (its bss included) must end below both.
            let mut top = home.end() - DTB_ROOM;
            if let Some(rd) = p.initrd {
                let at = top.saturating_sub(rd.size) & !(PAGE_SIZE - 1);
                if at < entry.0 + need {
                    defmt::error!(
                        "partition {=str}: bulkhead,initrd of {=u64:#x} bytes does not fit between its image and its DTB in {=u64:#x}..{=u64:#x}",
                        p.name.as_str(),
                        rd.size,
                        home.base.0,
                        home.end()
                    );
                    return Err(ExitCode::ConfigRefused);
                }
                // SAFETY: validated: the initrd region is RAM outside every
                // partition's memory; the destination is this partition's
                // own, above the image and below the DTB.
                unsafe { core::ptr::copy_nonoverlapping(rd.base.0 as *const u8, at as *mut u8, rd.size as usize) };
                initrd = Some((at, at + rd.size));
                top = at;
            }
            if entry.0 + need > top {
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
    Ok(Loaded { entry: PhysAddr(entry.0), home, initrd, boots_one })
}

/// Writes `p`'s DTB (its devices `guests`, restarted `restarts` times) at
/// the top of its entry region and makes its memory visible to it with
/// its caches off; returns where and how long the DTB is.
pub fn write_dtb(p: &PartitionPlan, l: &Loaded, guests: &[GuestDevice], pci: &[GuestPci], restarts: u32) -> Result<(PhysAddr, usize), ExitCode> {
    let dtb = partitions::guest_dt::build(p, guests, pci, l.initrd, restarts);
    let dtb_at = PhysAddr((l.home.end() - DTB_ROOM + 7) & !7);
    if dtb.len() as u64 > DTB_ROOM {
        return Err(err("partition DTB too large"));
    }
    // SAFETY: the top DTB_ROOM bytes of the partition's own region,
    // checked by `fill_memory` not to overlap the image or the initrd.
    unsafe { core::ptr::copy_nonoverlapping(dtb.as_ptr(), dtb_at.0 as *mut u8, dtb.len()) };
    for m in &p.memory {
        // The partition starts with its caches off: make the scrub, the
        // image and the DTB visible to it.
        platform::arch::cache::clean(PhysRange::new(m.base.0, m.size).unwrap_or_default());
    }
    Ok((dtb_at, dtb.len()))
}

/// Writes `p`'s DTB (restarted `restarts` times) with its devices
/// `guests` and the virtual PCI hosts of `devices`, which the kernel has
/// started (each host shows their Command as the kernel left it); returns
/// where the DTB is, how long, and the virtual hosts.
pub fn write_dtb_with_pci(
    p: &PartitionPlan,
    l: &Loaded,
    guests: &[GuestDevice],
    devices: &[DeviceRef],
    d: &Discovered,
    restarts: u32,
) -> Result<((PhysAddr, usize), VirtualHosts), ExitCode> {
    let vpci = devices::virtual_pci(p.name.as_str(), devices, d);
    let nodes: Vec<GuestPci> = vpci.iter().map(|(_, _, g)| g.clone()).collect();
    let dtb = write_dtb(p, l, guests, &nodes, restarts)?;
    Ok((dtb, vpci.into_iter().map(|(h, vh, _)| (h, vh)).collect()))
}

/// Scrubs and loads `p`, attaches its groups and builds its stage 2.
/// Returns its resources, the launch of each of its CPUs and its virtual
/// PCI hosts.
fn load(p: &PartitionPlan, smmus: &mut [SmmuInstance], d: &Discovered) -> Result<(Resources, Launch, VirtualHosts), ExitCode> {
    let loaded = fill_memory(p)?;
    let devs = devices::describe(p.name.as_str(), &p.devices, d).map_err(|_| err("device vanished"))?;
    let domains = attach_groups(p, &devs, smmus, d)?;
    let guests: Vec<GuestDevice> = devs.iter().map(|x| x.guest.clone()).collect();
    let mmio: Vec<PhysRange> = devs.iter().flat_map(|x| x.mmio.iter().copied()).collect();
    let stage2 = Stage2Tables::build(p, &mmio).map_err(|e| {
        defmt::error!("partition {=str}: stage 2: {}", p.name.as_str(), e);
        ExitCode::PlatformError
    })?;
    // After the groups are attached and the functions started.
    let ((dtb_at, dtb_len), vpci) = write_dtb_with_pci(p, &loaded, &guests, &p.devices, d, 0)?;
    let s2 = stage2.s2;
    defmt::info!(
        "partition {=str}: id {=u16}, VMID {=u16}, entry {=u64:#x}, DTB at {=u64:#x} ({=usize} bytes), CPUs {=[?]}",
        p.name.as_str(),
        p.id.0,
        s2.vmid,
        loaded.entry.0,
        dtb_at.0,
        dtb_len,
        p.cpus.as_slice()
    );
    let resources = Resources { stage2, domains, devices: p.devices.clone(), generation: 0, revoked: Vec::new() };
    Ok((resources, Launch { s2, entry: loaded.entry, dtb: dtb_at, boots_one: loaded.boots_one }, vpci))
}

/// Scrubs, loads and starts every partition of `plan`.
pub fn start(plan: Plan, mut smmus: Vec<SmmuInstance>, discovered: Discovered) -> Result<(), ExitCode> {
    let discovered: &'static Discovered = Box::leak(Box::new(discovered));
    let mut partitions = Vec::new();
    let mut cpus: Vec<(u64, PartitionId, &'static Launch)> = Vec::new();
    let ownership = partitions::ownership::Ownership::from_plan(&plan, discovered.groups.groups.len());
    for p in plan.partitions {
        let (resources, launch, vpci) = load(&p, &mut smmus, discovered)?;
        let launch: &'static Launch = Box::leak(Box::new(launch));
        cpus.extend(p.cpus.iter().map(|&mpidr| (mpidr, p.id, launch)));
        // Its physical lines routed to its first CPU and enabled (here,
        // before any partition CPU runs: the only time the distributor's
        // shared configuration words are written).
        crate::vgic::forward_spis(&p, discovered).map_err(|e| {
            defmt::error!("partition {=str}: forwarding its interrupts: {}", p.name.as_str(), e);
            ExitCode::PlatformError
        })?;
        partitions.push(Partition::new(p, resources, vpci));
    }
    let isolation =
        Isolation { smmus, ownership, faults: partitions::faults::FaultLedger::new(discovered.groups.groups.len()), pending_quarantine: Vec::new() };
    Kernel::install(Kernel::new(partitions, cpus.iter().map(|&(m, p, _)| (m, p)).collect(), discovered, isolation));
    platform::arch::exception::set_trap_handler(crate::trap::handle);
    platform::arch::exception::set_resume_hook(crate::vgic::before_resume);
    platform::arch::irq::set_guest_irq_handler(crate::vgic::guest_irq);
    platform::log::enable_smp();
    for (mpidr, _, launch) in cpus {
        let stack = platform::memory::alloc_zeroed(CPU_STACK, PAGE_SIZE).ok_or_else(|| err("out of frames for CPU stacks"))?;
        let block: &'static mut CpuStart =
            Box::leak(Box::new(CpuStart { stack_top: 0, vbar: 0, mair: 0, tcr: 0, ttbr: 0, sctlr: 0, hcr: 0, entry: partition_cpu, arg: 0 }));
        let cpu: &'static CpuLaunch = Box::leak(Box::new(CpuLaunch { launch, stack_top: stack.0 + CPU_STACK }));
        smp::prepare(block, PhysRange::new(stack.0, CPU_STACK).unwrap_or_default(), partition_cpu, cpu as *const CpuLaunch as u64);
        smp::start(mpidr, block).map_err(|e| {
            defmt::error!("CPU {=u64:#x} did not start: {}", mpidr, e);
            ExitCode::PlatformError
        })?;
    }
    Ok(())
}

/// Waits until every partition has stopped, draining SMMU events meanwhile;
/// the status says whether any partition failed.
pub fn wait_all() -> ExitCode {
    let Some(k) = crate::runtime::kernel() else { return ExitCode::Success };
    loop {
        crate::ownership::drain_events(k);
        for p in &k.partitions {
            p.report_drops(p.life() != Life::Running);
        }
        if k.partitions.iter().all(|p| p.life() != Life::Running) {
            crate::ownership::drain_events(k);
            let failed = k.partitions.iter().filter(|p| p.life() == Life::Failed).count();
            defmt::info!("all {=usize} partitions stopped, {=usize} failed", k.partitions.len(), failed);
            return if failed == 0 { ExitCode::Success } else { ExitCode::PartitionFailed };
        }
        // Sleep until an SMMU interrupt (eventq, gerror) or the 10 ms tick:
        // a partition stopping interrupts nobody, so the tick bounds how
        // late the loop notices.
        platform::arch::irq::arm_timer_us(10_000);
        platform::arch::irq::wait_for_interrupt();
    }
}

/// The plan's regions as the memory map's ranges (for reservations):
/// `true` for an image to be copied in.
pub fn regions(plan: &Plan) -> impl Iterator<Item = (PhysRange, bool)> + '_ {
    plan.partitions.iter().flat_map(|p| {
        p.memory
            .iter()
            .map(|m| (m, false))
            .chain(p.image.iter().map(|(img, _)| (img, true)))
            .filter_map(|(r, image): (&Region, bool)| PhysRange::new(r.base.0, r.size).map(|x| (x, image)))
    })
}
