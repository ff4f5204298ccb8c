//! The boot path, from `_start` to partitions running.

use crate::{launch, smmus, Board};
use devicetree::machine::{Incomplete, ReadError};
use devicetree::memmap::{self, BootMap, BootMapError, MemoryMap, Reservation};
use devicetree::{DeviceTree, Machine, PsciConduit};
use platform::arch::{self, exit};
use platform::pgtable::{Access, IdentityMap, MemType, Table, PAGE_SIZE};
use platform::{ExitCode, PhysAddr, PhysRange};

/// Tables for the EL2 identity map (4 KiB each). QEMU's virt needs 11.
const PT_POOL_TABLES: usize = 32;

/// Not cleared by `_start` (kernel.ld's `.noinit`): `IdentityMap` zeroes
/// each table as it takes it, and nothing reads one it has not taken.
#[unsafe(link_section = ".bss.noinit.pt_pool")]
static mut PT_POOL: [Table; PT_POOL_TABLES] = [const { Table::EMPTY }; PT_POOL_TABLES];

/// The kernel, entered from the board's `bulkhead_board_entry` with the
/// loader's x0 and the current EL.
pub fn entry(board: &'static Board, x0: u64, el: u64) -> ! {
    if let Some(uart) = board.early_uart {
        // SAFETY: the board crate names a UART of this kind at this
        // address; with the MMU off every access is Device memory.
        unsafe { platform::console::init(uart) };
    }
    // Semihosting carries the exit status under QEMU and falls back to PSCI
    // by itself. PSCI's conduit is smc at EL2 until the DT says more.
    exit::configure(true, if el == 2 { PsciConduit::Smc } else { PsciConduit::Hvc });
    if el != 2 {
        defmt::error!("bulkhead must be entered at EL2 (hypervisor mode) but was entered at EL{=u64}; on QEMU use -machine virt,virtualization=on", el);
        exit::exit(ExitCode::WrongExceptionLevel);
    }
    let dtb_at = match (x0, board.dtb_when_x0_is_zero) {
        (0, Some(at)) => at,
        (0, None) => {
            defmt::error!("cannot boot: the loader passed no device tree (x0 = 0)");
            exit::exit(ExitCode::BadDeviceTree);
        }
        (x0, _) => PhysAddr(x0),
    };
    // SAFETY: the boot protocol puts a DTB at x0, or the board's loader at
    // `dtb_when_x0_is_zero`; `at` reads 8 bytes, then only `totalsize` bytes
    // after checking the magic and a size limit. Nothing writes there.
    let dt = match unsafe { platform::dtb::at(dtb_at) } {
        Ok(dt) => dt,
        Err(e) => {
            defmt::error!("cannot boot: device tree at {}: {}", dtb_at, e);
            exit::exit(ExitCode::BadDeviceTree);
        }
    };
    let dt_validated = platform::time::ticks();
    match boot(board, dt, dtb_at, dt_validated) {
        Ok(()) => exit::exit(ExitCode::Success),
        Err(code) => exit::exit(code),
    }
}

fn overlay_err(e: devicetree::overlay::OverlayError) -> ExitCode {
    defmt::error!("cannot boot: {}", e);
    ExitCode::BadDeviceTree
}

/// Merges the overlays `/chosen/bulkhead,overlays` names (`regions`) into a
/// copy of the DTB, kept in the heap for the kernel's life.
fn apply_overlays(dt: DeviceTree<'static>, regions: &[PhysRange]) -> Result<DeviceTree<'static>, ExitCode> {
    if regions.is_empty() {
        return Ok(dt);
    }
    let blobs: alloc::vec::Vec<&[u8]> = regions
        .iter()
        // SAFETY: `chosen_overlays` checked that each region lies in RAM,
        // which the identity map covers read-write; the regions were
        // reserved before the heap was placed, so no allocation overlaps
        // them, and nothing writes them while they are read.
        .map(|r| unsafe { core::slice::from_raw_parts(r.start.0 as *const u8, r.size() as usize) })
        .collect();
    let merged = devicetree::overlay::apply(dt.bytes(), &blobs).map_err(overlay_err)?;
    let merged: &'static [u8] = merged.leak();
    let dt = DeviceTree::parse(merged).map_err(dt_err)?;
    defmt::info!("overlays: {=usize} applied from /chosen/bulkhead,overlays, {=usize}-byte tree", regions.len(), merged.len());
    Ok(dt)
}

/// What stops the memory map: the device tree's fault (exit 3) or the
/// machine's (exit 5).
fn boot_map_err(e: BootMapError) -> ExitCode {
    defmt::error!("cannot boot: {}", defmt::Display2Format(&e));
    match e {
        BootMapError::ReservedInUse(_) => ExitCode::BadDeviceTree,
        BootMapError::NoRam | BootMapError::TooManyReservations | BootMapError::NoHeap => ExitCode::PlatformError,
    }
}

/// The tree cannot be read into the machine description.
fn read_err(e: ReadError) -> ExitCode {
    defmt::error!("cannot boot: {}", e);
    ExitCode::BadDeviceTree
}

/// The merged tree cannot be read into the rest of the machine description.
fn incomplete_err(e: Incomplete) -> ExitCode {
    match e {
        Incomplete::Tree(e) => dt_err(e),
        Incomplete::Discovery(e) => crate::discover::dt_err(e),
    }
}

fn dt_err(e: devicetree::DtError) -> ExitCode {
    defmt::error!("cannot boot: {}", e);
    ExitCode::BadDeviceTree
}

/// Logs a boot-benchmark milestone: counter ticks since `_start`'s first
/// instruction (one tick per guest instruction under QEMU's `-icount
/// shift=0` with the 1 GHz counter of `-cpu max`). Logged after the fact, so
/// the logging is not part of what it measures.
fn milestone(name: &str, at: u64) {
    let since = at.wrapping_sub(arch::boot::boot_ticks().entry);
    defmt::debug!("milestone {=str}: {=u64} ticks since entry (freq {=u64} Hz)", name, since, platform::time::frequency());
}

fn boot(board: &Board, dt: DeviceTree<'static>, dtb_at: PhysAddr, dt_validated: u64) -> Result<(), ExitCode> {
    // Boot step 3 (README "Boot path"; steps 1 and 2 are `_start` and
    // `entry`). Block all DMA before anything else: GBPA.ABORT on every SMMU.
    let smmus = dt.smmus().map_err(dt_err)?;
    let smmus_found = platform::time::ticks();
    for s in &smmus {
        smmus::abort(s);
    }
    let aborting = platform::time::ticks();

    // 4. Isolation: every SMMU enabled with all streams aborting (stream
    // table, queues, invalidation, SMMUEN), still with the MMU off and from
    // the early arena, before anything else is read or set up. The kernel's
    // boot arguments are the loader's (`/chosen/bootargs` of its tree).
    let bootargs = dt.bootargs().map_err(dt_err)?;
    let sizes = smmus::Sizes::from_bootargs(bootargs);
    let mut instances = smmus::SmmuSlots::new();
    smmus::bring_up(&smmus, sizes, &mut instances)?;

    if let Some(conduit) = dt.psci().map_err(dt_err)? {
        exit::configure(true, conduit);
    }

    // 5. The machine description, read once: from the loader's tree now,
    // with no heap, what the MMU, the console and the memory map need; the
    // rest (CPUs, devices) from the tree with its overlays merged, below.
    let mut machine = Machine::boot(&dt, smmus).map_err(read_err)?;
    if machine.ram.is_empty() {
        defmt::error!("cannot boot: the device tree describes no RAM (/memory is absent or of size 0: the bootloader fills it in; boot through one that does)");
        return Err(ExitCode::BadDeviceTree);
    }
    // MMU on with an identity map of the machine's RAM and MMIO (what the
    // kernel touches, wherever it sits in the tree), then the console it
    // names, then memory. The board's early UART stays mapped too: it is
    // the console when the tree names none the kernel drives.
    let layout = arch::boot::image_layout();
    let mut mmio = machine.mmio.clone();
    if let Some(r) = board.early_uart.and_then(|u| PhysRange::new(u.base.0, PAGE_SIZE)) {
        let _ = mmio.try_push(r);
    }
    build_and_enable_mmu(&machine.ram, &mmio, &layout)?;
    let mmu_on = platform::time::ticks();
    if let Some(uart) = machine.console {
        if Some(uart) != board.early_uart {
            // SAFETY: the DT's stdout-path names a UART of this kind whose
            // `reg` is in the identity map as Device memory.
            unsafe { platform::console::init(uart) };
        }
    }

    // The memory map (the same function `cargo xtask check` uses): RAM
    // minus the image, the DTB, the firmware's reservations and the overlay
    // blobs /chosen names, then the heap right after the image, so a
    // configuration knows where the kernel's memory ends.
    let dtb = PhysRange::new(dtb_at.0, dt.bytes().len() as u64).unwrap_or_default().grow_to(PAGE_SIZE);
    let BootMap { mut map, heap } = memmap::boot_map(&machine, Some(layout.image), Some(dtb)).map_err(boot_map_err)?;
    let heap = heap.ok_or_else(|| platform_err("no room for the kernel heap"))?;
    let (heap_proper, early_frames) = memmap::split_heap(heap);
    platform::memory::init_heap(heap_proper);
    platform::memory::add_frames(early_frames);
    // SMMUs the arena had no room for, from those frames (with frames,
    // nothing is deferred again).
    smmus::bring_up(&machine.smmus, sizes, &mut instances)?;
    // 6. From here on the kernel reads the DTB with those overlays merged in:
    // the rest of the machine, and what the overlays reserve.
    let merged = !machine.overlays.is_empty();
    let dt = apply_overlays(dt, &machine.overlays)?;
    if merged {
        // An overlay may enable an SMMU the loader's tree disables
        // (`status = "okay"`): it aborts now, before discovery touches any
        // device, and is brought up with the others. (Its registers are in
        // the identity map: `mmio_regions` maps disabled SMMUs too.)
        for s in dt.smmus().map_err(dt_err)? {
            if machine.smmus.iter().any(|m| m.regs == s.regs) {
                continue;
            }
            smmus::abort(&s);
            defmt::info!("SMMU {=str} at {}: enabled by an overlay; DMA aborted (GBPA.ABORT) since the overlays were merged", s.name.as_str(), s.regs.start);
            machine.smmus.try_push(s).map_err(|_| platform_err("more SMMUs than the kernel holds"))?;
        }
        smmus::bring_up(&machine.smmus, sizes, &mut instances)?;
    }
    machine.complete(&dt, merged).map_err(incomplete_err)?;
    let machine_read = platform::time::ticks();
    memmap::reserve_merged(&mut map, &machine.reserved, &[layout.image, heap]).map_err(boot_map_err)?;

    let memory_ready = platform::time::ticks();
    banner(board, &machine, &map, heap);
    smmus::report(&instances);
    let bannered = platform::time::ticks();

    // 7. Discovery: PCI enumeration (bus mastering off everywhere) and
    // isolation groups.
    let discovered = crate::discover::run(machine)?;
    let discovered_at = platform::time::ticks();

    // Still 7: configuration → validated plan. Nothing starts on a refusal.
    let plan = configure(&dt, &map, &layout, dtb, heap, &discovered)?;
    for (r, _) in launch::regions(&plan) {
        map.reserve(r, Reservation::Other).map_err(|_| platform_err("too many memory reservations"))?;
    }
    let configured = platform::time::ticks();
    // Every page nothing else holds now goes to the frame allocator (the
    // partitions' domains' tables, the stream table's second level).
    let frame_bytes = platform::memory::init_frames(&map);
    defmt::info!("frames: {=u64} MiB free for the kernel's tables and queues", frame_bytes >> 20);
    let frames_ready = platform::time::ticks();

    let ticks = arch::boot::boot_ticks();
    defmt::debug!("milestone entry: counter {=u64} at _start (freq {=u64} Hz)", ticks.entry, platform::time::frequency());
    milestone("relocated", ticks.relocated);
    milestone("bss-cleared", ticks.bss_cleared);
    milestone("dt-validated", dt_validated);
    milestone("smmus-found", smmus_found);
    // Every SMMU the DT names aborts from the board's early abort in
    // `_start` when the board listed it, else from the DT-driven one.
    let all_early = discovered.machine.smmus.iter().all(|s| arch::boot::early_abort(s.regs.start.0) == Some(arch::boot::EarlyAbort::Aborted));
    milestone("early-abort", ticks.early_abort);
    milestone("dt-abort", aborting);
    milestone("abort", if all_early { ticks.early_abort } else { aborting });
    milestone("mmu-on", mmu_on);
    milestone("machine-read", machine_read);
    milestone("memory-ready", memory_ready);
    milestone("banner-logged", bannered);
    milestone("discovered", discovered_at);
    milestone("configured", configured);
    milestone("frames-ready", frames_ready);
    milestone("isolation", instances.iter().map(|i| i.enabled_at).max().unwrap_or(aborting));
    defmt::debug!("memory: heap peak {=usize} bytes at isolation", platform::memory::heap_peak());

    #[cfg(feature = "selftest")]
    crate::selftest::before_partitions(bootargs, &layout, &discovered.machine.ram, &mut instances, &discovered)?;
    #[cfg(not(feature = "selftest"))]
    refuse_selftests(bootargs);

    // 8 and 9. The GIC, then partitions on their CPUs; the boot CPU waits
    // for them.
    if plan.partitions.is_empty() {
        defmt::info!("no partitions configured");
        return Ok(());
    }
    // The boot CPU sleeps in `launch::wait_all` until an SMMU interrupt
    // or the EL2 timer's tick wakes it.
    interrupts(&discovered, &instances)?;
    launch::start(plan, instances.into_iter().collect(), discovered)?;
    milestone("partitions-started", platform::time::ticks());
    #[cfg(feature = "selftest")]
    crate::selftest::after_partitions_started(bootargs);
    if let Some(k) = crate::runtime::kernel() {
        for i in &k.isolation.lock().smmus {
            if let Some(smmu) = &i.smmu {
                defmt::debug!("memory: SMMU {=str}: {=usize} bytes of DMA memory with partitions attached", i.node.name.as_str(), smmu.dma().bytes);
            }
        }
    }
    let code = launch::wait_all();
    defmt::debug!("memory: heap peak {=usize} bytes", platform::memory::heap_peak());
    match code {
        ExitCode::Success => Ok(()),
        code => Err(code),
    }
}

/// GICv3 on the boot CPU: the EL2 timer's PPI and every SMMU's eventq and
/// gerror SPIs enabled and routed here. The handler only wakes the idle
/// loop, which drains the event queues itself.
fn interrupts(discovered: &crate::discover::Discovered, instances: &[smmus::SmmuInstance]) -> Result<(), ExitCode> {
    use platform::arch::irq;
    use platform::gic::{Gic, GicError, Trigger, DEFAULT_PRIORITY};
    let gic_err = |e: GicError| {
        defmt::error!("cannot boot: GICv3: {}", e);
        ExitCode::PlatformError
    };
    let g = discovered.machine.devices.gic.as_ref().ok_or_else(|| platform_err("no arm,gic-v3 in the device tree"))?;
    // The GIC's registers are in the identity map wherever the tree puts
    // it (`DeviceTree::mmio_regions`, through its parents' `ranges`).
    if !discovered.machine.mmio.iter().any(|r| r.covers(&g.distributor)) {
        return Err(platform_err("the GIC's distributor is not in the identity map"));
    }
    let timer =
        discovered.machine.devices.timer.as_ref().and_then(|t| t.el2_physical).ok_or_else(|| platform_err("the DT's /timer names no EL2 physical timer"))?;
    // SAFETY: the GIC's windows are in the identity map as Device memory
    // (checked above); only the boot CPU programs the GIC.
    let mut gic = unsafe { Gic::new(g.distributor, &g.redistributors, arch::mpidr(), platform::time::Delay) }.map_err(gic_err)?;
    gic.init().map_err(gic_err)?;
    irq::set_irq_handler(|_| {});
    irq::set_timer_intid(timer.intid);
    irq::init_cpu_interface().map_err(gic_err)?;
    // An SMMU out of use raises nothing the kernel would drain.
    let lines = instances.iter().filter(|i| i.smmu.is_some() && !i.failed).flat_map(|i| [i.node.eventq, i.node.gerror]);
    for line in lines.flatten().chain([timer]) {
        gic.configure(line.intid, Trigger::from_edge(line.edge), DEFAULT_PRIORITY).map_err(gic_err)?;
        gic.enable(line.intid).map_err(gic_err)?;
    }
    Ok(())
}

fn refused(e: partitions::binding::ConfigError) -> ExitCode {
    defmt::error!("configuration refused: {}", defmt::Display2Format(&e));
    ExitCode::ConfigRefused
}

/// Reads the partition configuration from the DT and validates it against
/// the machine description and what discovery made of it.
fn configure(
    dt: &DeviceTree<'static>,
    map: &MemoryMap,
    layout: &arch::boot::ImageLayout,
    dtb: PhysRange,
    heap: PhysRange,
    discovered: &crate::discover::Discovered,
) -> Result<partitions::validate::Plan, ExitCode> {
    let cfg = partitions::binding::parse_tree(dt).map_err(refused)?;
    // The same conversion `cargo xtask check` makes offline.
    let placed = partitions::machine::Placement { kernel: Some(layout.image), dtb: Some(dtb), heap: Some(heap) };
    let (topology, groups) = (discovered.topology.clone(), discovered.groups.clone());
    let hw = partitions::machine::hardware(&discovered.machine, map, placed, arch::mpidr(), topology, groups);
    let plan = partitions::validate::validate(&cfg, &hw).map_err(refused)?;
    if !plan.partitions.is_empty() {
        defmt::info!("configuration: {=usize} partitions", plan.partitions.len());
    }
    Ok(plan)
}

fn platform_err(what: &'static str) -> ExitCode {
    defmt::error!("cannot boot: {=str}", what);
    ExitCode::PlatformError
}

fn build_and_enable_mmu(ram: &[PhysRange], mmio: &[PhysRange], layout: &arch::boot::ImageLayout) -> Result<(), ExitCode> {
    // SAFETY: boot runs on one CPU with the MMU off; nothing else refers to
    // the pool, and after `enable` only the MMU reads it.
    let pool = unsafe { &mut *core::ptr::addr_of_mut!(PT_POOL) };
    let pool_pa = PhysAddr(pool.as_ptr() as u64);
    let pool_range = PhysRange::new(pool_pa.0, core::mem::size_of_val(pool) as u64).unwrap_or_default();
    let mut m = IdentityMap::new(pool, pool_pa).map_err(|_| platform_err("page-table pool empty"))?;
    let fail = |e: platform::pgtable::MapError| {
        defmt::error!("cannot build the EL2 identity map: {}", e);
        ExitCode::PlatformError
    };
    // RAM outside the image: data, never executable.
    let mut ram_map = MemoryMap::new(ram.iter().copied()).map_err(|_| platform_err("no usable RAM in /memory"))?;
    ram_map.reserve(layout.image, Reservation::Kernel).map_err(|_| platform_err("bad image layout"))?;
    for r in ram_map.free() {
        m.map(r.shrink_to(PAGE_SIZE), MemType::Normal, Access::ReadWrite).map_err(fail)?;
    }
    // The image with W^X; the stack guard page stays unmapped.
    m.map(layout.text, MemType::Normal, Access::Execute).map_err(fail)?;
    m.map(layout.rodata, MemType::Normal, Access::ReadOnly).map_err(fail)?;
    m.map(layout.data, MemType::Normal, Access::ReadWrite).map_err(fail)?;
    m.map(layout.stack, MemType::Normal, Access::ReadWrite).map_err(fail)?;
    let mmio: arrayvec::ArrayVec<PhysRange, { devicetree::dt::MAX_MMIO }> = memmap::coalesce(mmio, PAGE_SIZE);
    for r in &mmio {
        m.map(*r, MemType::Device, Access::ReadWrite).map_err(fail)?;
    }
    let root = m.root();
    defmt::debug!("EL2 identity map: {=usize} tables", m.tables_used());
    // SAFETY: the map covers the running code, stack, data, all RAM and every
    // device the kernel touches (the DT's MMIO regions).
    unsafe { arch::mmu::enable(root, pool_range) };
    Ok(())
}

fn banner(board: &Board, machine: &Machine, map: &MemoryMap, heap: PhysRange) {
    let cpus = &machine.cpus;
    defmt::info!("bulkhead {=str} ({=str}) on {=str}", env!("CARGO_PKG_VERSION"), option_env!("BULKHEAD_GIT").unwrap_or("unknown"), board.name);
    defmt::info!("CurrentEL: EL{=u8}", arch::current_el());
    arch::boot::log_placement();
    defmt::info!("CPUs: {=usize} (boot CPU MPIDR {=u64:#x})", cpus.len(), arch::mpidr());
    for c in cpus {
        defmt::info!("  cpu MPIDR {=u64:#x} enable-method {=str}", c.mpidr, if c.psci { "psci" } else { "other" });
    }
    defmt::info!("memory: {=u64} MiB", map.ram_bytes() >> 20);
    for r in map.ram() {
        defmt::info!("  RAM      {} {=u64} MiB", r, r.size() >> 20);
    }
    for (r, why) in map.reserved() {
        defmt::info!("  reserved {} {}", r, why);
    }
    for r in map.free() {
        defmt::info!("  free     {} {=u64} KiB", r, r.size() >> 10);
    }
    defmt::info!("heap: {} ({=u64} MiB)", heap, heap.size() >> 20);
    defmt::info!("SMMUs: {=usize}", machine.smmus.len());
    // The board's early list against the machine: an SMMU it names that
    // is not there (a configurable machine) was found absent and left alone.
    for base in arch::boot::early_smmus().bases() {
        if machine.smmus.iter().any(|s| s.regs.start.0 == base) {
            continue;
        }
        match arch::boot::early_abort(base) {
            Some(arch::boot::EarlyAbort::Absent) => defmt::info!(
                "  board's early SMMU at {=u64:#x}: not on this machine (reading GBPA faulted in _start; nothing written), nor in the device tree",
                base
            ),
            Some(state) => defmt::warn!("  board's early SMMU at {=u64:#x}: {} in _start, but the device tree has no SMMU there", base, state),
            None => {}
        }
    }
    for s in &machine.smmus {
        defmt::info!(
            "  SMMUv3 {=str} at {} size {=u64:#x}, {=str}{=str}",
            s.name.as_str(),
            s.regs.start,
            s.regs.size(),
            if s.coherent { "coherent" } else { "not coherent" },
            if s.msi { ", MSI" } else { "" }
        );
        defmt::info!(
            "    DMA aborted (GBPA.ABORT) since {=str}",
            match arch::boot::early_abort(s.regs.start.0) {
                Some(arch::boot::EarlyAbort::Aborted) => "_start's first instructions (the board's early list)",
                Some(arch::boot::EarlyAbort::Unconfirmed) =>
                    "the device tree was read (the board's early list names it, but its GBPA.UPDATE did not clear in _start)",
                Some(arch::boot::EarlyAbort::Absent) => "the device tree was read (the board's early list names it, but nothing answered there in _start)",
                None => "the device tree was read (not in the board's early list)",
            }
        );
        let irqs = [("eventq", s.eventq), ("priq", s.priq), ("cmdq-sync", s.cmdq_sync), ("gerror", s.gerror), ("combined", s.combined)];
        for (name, irq) in irqs {
            if let Some(irq) = irq {
                defmt::info!("    interrupt {=str}: {}", name, irq);
            }
        }
        match &s.irqs {
            devicetree::dt::SmmuIrqs::NotWired(via) => defmt::info!(
                "    interrupts go to {=str}, not the GIC: the event queue and global errors are polled on every timer tick{=str}",
                via.as_str(),
                if s.msi { " (it has an msi-parent; MSIs are not used)" } else { "" }
            ),
            devicetree::dt::SmmuIrqs::None => defmt::info!(
                "    no interrupts in the device tree: the event queue and global errors are polled on every timer tick{=str}",
                if s.msi { " (it has an msi-parent; MSIs are not used)" } else { "" }
            ),
            devicetree::dt::SmmuIrqs::Wired if s.eventq.is_none() => {
                defmt::info!("    no wired eventq interrupt: the event queue is polled on every timer tick")
            }
            devicetree::dt::SmmuIrqs::Wired => {}
        }
    }
    for s in &machine.disabled_smmus {
        defmt::info!(
            "  SMMUv3 {=str}: disabled in the device tree ({=str}): not touched; the devices behind it cannot be isolated (an overlay with status = \"okay\" enables it)",
            s.name.as_str(),
            s.why
        );
    }
}

/// A production image has no selftests: `bulkhead.selftest=` words from the
/// loader's `/chosen/bootargs` do nothing but say so.
#[cfg(not(feature = "selftest"))]
fn refuse_selftests(bootargs: &str) {
    for arg in bootargs.split_ascii_whitespace().filter(|a| a.starts_with("bulkhead.selftest=")) {
        defmt::warn!("bootargs: {=str} ignored: this image was built without selftests (cargo feature `selftest`)", arg);
    }
}
