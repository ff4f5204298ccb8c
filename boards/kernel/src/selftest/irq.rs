//! `bulkhead.selftest=irq`: interrupts at EL2, end to end, on the boot CPU.
//!
//! The GIC is brought up (distributor, this CPU's redistributor, CPU
//! interface), then three real sources interrupt a CPU sleeping in
//! [`irq::wait_for_interrupt`]:
//!
//! 1. the EL2 physical timer (the DT's `/timer` PPI, level);
//! 2. the SMMU's `gerror` SPI (edge), raised by an illegal command
//!    (GERROR.CMDQ_ERR); the global error is then handled;
//! 3. the SMMU's `eventq` SPI (edge), raised by the first `edu` doing a DMA
//!    through an empty translation domain (F_TRANSLATION events); the event
//!    queue is drained each time the interrupt comes.
//!
//! The handler only records which INTIDs came (atomics); the SMMU work runs
//! after the wait returns, as it will in the kernel's idle loop. Every wait
//! is bounded by re-arming the timer, so a missing interrupt fails the test
//! with a message instead of hanging it.

use crate::discover::Discovered;
use crate::smmus::SmmuInstance;
use core::sync::atomic::{AtomicU32, Ordering};
use devicetree::Irq;
use platform::arch::{self, irq};
use platform::gic::{Gic, Trigger, DEFAULT_PRIORITY, FIRST_SPECIAL};
use platform::pci;
use platform::time::{uptime_us, Delay};
use platform::{ExitCode, PhysAddr};
use smmu::{DomainConfig, EventType};

/// How often a waiting CPU wakes without an interrupt (the timer's period).
const TICK_US: u64 = 10_000;
/// The timer test's one-shot delay.
const TIMER_TEST_US: u64 = 5_000;
/// Longest any one step may wait for its interrupt.
const STEP_TIMEOUT_US: u64 = 3_000_000;
/// Event records drained per interrupt at most.
const DRAIN_LIMIT: u32 = 256;

/// A device address the empty domain does not map: the DMA must fault.
const UNMAPPED_IOVA: u64 = 0x1000_0000;

/// How many times each INTID was taken (written by the handler).
static COUNTS: [AtomicU32; FIRST_SPECIAL as usize] = [const { AtomicU32::new(0) }; FIRST_SPECIAL as usize];

fn on_irq(intid: u32) {
    if let Some(c) = COUNTS.get(intid as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn count(intid: u32) -> u32 {
    COUNTS.get(intid as usize).map_or(0, |c| c.load(Ordering::Relaxed))
}

fn fail(what: &'static str) -> ExitCode {
    defmt::error!("irq-test: {=str}", what);
    ExitCode::SelfTestFailed
}

fn gic_fail(what: &'static str, e: platform::gic::GicError) -> ExitCode {
    defmt::error!("irq-test: {=str}: {}", what, e);
    ExitCode::SelfTestFailed
}

fn smmu_fail(what: &'static str, e: smmu::Error) -> ExitCode {
    defmt::error!("irq-test: {=str}: {}", what, e);
    ExitCode::SelfTestFailed
}

/// Sleeps in [`irq::wait_for_interrupt`] until `done` holds, waking at
/// least every [`TICK_US`] (the timer) to re-check; false after `timeout_us`.
fn wait_until(timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = uptime_us() + timeout_us;
    loop {
        if done() {
            irq::disarm_timer();
            return true;
        }
        let now = uptime_us();
        if now >= deadline {
            irq::disarm_timer();
            return false;
        }
        irq::arm_timer_us(TICK_US.min(deadline - now));
        irq::wait_for_interrupt();
    }
}

type KernelGic = Gic<'static, Delay>;

fn setup_line(gic: &mut KernelGic, irq: Irq) -> Result<(), ExitCode> {
    gic.configure(irq.intid, Trigger::from_edge(irq.edge), DEFAULT_PRIORITY).map_err(|e| gic_fail("configure", e))?;
    // An edge latched while the line was disabled is stale.
    gic.clear_pending(irq.intid).map_err(|e| gic_fail("clear pending", e))?;
    gic.enable(irq.intid).map_err(|e| gic_fail("enable", e))
}

/// Runs the test on the SMMU the first `edu` sits behind.
pub fn run(smmus: &mut [SmmuInstance], discovered: &Discovered) -> Result<(), ExitCode> {
    let g = discovered.machine.devices.gic.as_ref().ok_or_else(|| fail("the device tree has no arm,gic-v3"))?;
    // Boot identity-maps the GIC's `reg` wherever the tree puts it
    // (`DeviceTree::mmio_regions`, through its parents' `ranges`).
    let mapped = |r: &platform::PhysRange| discovered.machine.mmio.iter().any(|m| m.covers(r));
    if !mapped(&g.distributor) || !g.redistributors.iter().all(mapped) {
        return Err(fail("the GIC's registers are not in the kernel's map"));
    }
    let timer =
        discovered.machine.devices.timer.as_ref().and_then(|t| t.el2_physical).ok_or_else(|| fail("the DT's /timer names no EL2 physical timer interrupt"))?;

    let (h, f) = discovered.find_pci(edu::VENDOR_ID, edu::DEVICE_ID).ok_or_else(|| fail("no edu device"))?;
    let mut cs = discovered.config_space(h).ok_or_else(|| fail("no config space for edu's host"))?;
    let (smmu_index, sid) = discovered.stream_id(h, f.rid()).ok_or_else(|| fail("edu has no StreamID"))?;
    let bar = f.bars.first().ok_or_else(|| fail("edu has no BAR0"))?.cpu;
    let instance = smmus.get_mut(smmu_index).ok_or_else(|| fail("edu's SMMU is not in the device tree"))?;
    let eventq = instance.node.eventq.ok_or_else(|| fail("the SMMU has no wired eventq interrupt"))?;
    let gerror = instance.node.gerror.ok_or_else(|| fail("the SMMU has no wired gerror interrupt"))?;
    let (bdf, smmu) = (f.bdf, instance.usable().ok_or_else(|| fail("edu's SMMU was not brought up"))?);

    // SAFETY: the distributor and redistributor regions come from the GIC
    // node, whose `reg` boot maps as Device memory (checked above); the boot
    // CPU is the only one that programs the GIC.
    let mut gic = unsafe { Gic::new(g.distributor, &g.redistributors, arch::mpidr(), Delay) }.map_err(|e| gic_fail("probe", e))?;
    gic.init().map_err(|e| gic_fail("distributor/redistributor init", e))?;
    irq::set_irq_handler(on_irq);
    irq::init_cpu_interface().map_err(|e| gic_fail("CPU interface", e))?;
    defmt::info!(
        "irq-test: GICv3 distributor {} ({=u32} SPIs, {=str}), redistributor {} for MPIDR {=u64:#x}, CPU interface on",
        gic.distributor(),
        gic.spi_end() - platform::gic::FIRST_SPI,
        if gic.single_security_state() { "one Security state" } else { "two Security states" },
        gic.redistributor(),
        arch::mpidr()
    );

    let result = timer_test(&mut gic, timer)
        .and_then(|()| gerror_test(&mut gic, gerror, smmu))
        .and_then(|()| eventq_test(&mut gic, eventq, smmu, &mut cs, bdf, bar, sid));

    // Leave nothing armed: the lines off, the handler gone.
    irq::disarm_timer();
    for intid in [timer.intid, gerror.intid, eventq.intid] {
        let _ = gic.disable(intid);
    }
    irq::clear_irq_handler();
    result?;
    let s = irq::stats();
    if s.unhandled != 0 {
        return Err(fail("interrupts were taken without a handler"));
    }
    defmt::info!("irq-test: passed: {=u64} interrupts taken, {=u64} spurious", s.taken, s.spurious);
    Ok(())
}

/// The EL2 timer's PPI: pending in the redistributor on its own, then taken.
fn timer_test(gic: &mut KernelGic, timer: Irq) -> Result<(), ExitCode> {
    setup_line(gic, timer)?;
    irq::set_timer_intid(timer.intid);
    let before = count(timer.intid);
    let t0 = uptime_us();
    irq::arm_timer_us(TIMER_TEST_US);
    // The timer is the wake-up source of every later wait: check that its
    // PPI reaches the redistributor by polling, before the CPU sleeps on it.
    let mut pending = false;
    for _ in 0..1000 {
        pending = gic.is_pending(timer.intid).unwrap_or(false) || count(timer.intid) != before;
        if pending {
            break;
        }
        platform::time::sleep_us(100);
    }
    if !pending {
        irq::disarm_timer();
        return Err(fail("the EL2 timer's PPI never became pending"));
    }
    // Pending: the wait returns at once, with the interrupt taken.
    for _ in 0..10 {
        if count(timer.intid) != before {
            break;
        }
        irq::wait_for_interrupt();
    }
    if count(timer.intid) == before {
        return Err(fail("the EL2 timer's PPI was pending but never taken"));
    }
    defmt::info!(
        "irq-test: INTID {=u32} (EL2 physical timer, PPI {=u32}) taken {=u64} us after arming for {=u64} us",
        timer.intid,
        timer.intid - 16,
        uptime_us() - t0,
        TIMER_TEST_US
    );
    Ok(())
}

/// GERROR's SPI: an illegal command raises GERROR.CMDQ_ERR.
fn gerror_test(gic: &mut KernelGic, gerror: Irq, smmu: &mut crate::smmus::SmmuDriver) -> Result<(), ExitCode> {
    setup_line(gic, gerror)?;
    let before = count(gerror.intid);
    // Opcode 0x7f is not an architected command (IHI 0070 §4.1): CERROR_ILL.
    match smmu.diagnostic_submit_raw([0x7f, 0]) {
        Err(e) => defmt::info!("irq-test: illegal command refused: {}", e),
        Ok(()) => return Err(fail("the illegal command completed")),
    }
    if !wait_until(STEP_TIMEOUT_US, || count(gerror.intid) != before) {
        return Err(fail("no gerror interrupt within 3 s"));
    }
    let report = smmu.handle_gerror().map_err(|e| smmu_fail("handle gerror", e))?;
    defmt::info!("irq-test: INTID {=u32} (gerror) taken; global errors handled: {}", gerror.intid, report);
    Ok(())
}

/// The event queue's SPI: a faulting DMA through an empty domain, drained
/// from the interrupt until the device is done.
#[allow(clippy::too_many_arguments)]
fn eventq_test(
    gic: &mut KernelGic,
    eventq: Irq,
    smmu: &mut crate::smmus::SmmuDriver,
    cs: &mut impl pci::ConfigSpace,
    bdf: pci::Bdf,
    bar: PhysAddr,
    sid: smmu::StreamId,
) -> Result<(), ExitCode> {
    // Nothing old in the queue: every record drained below comes from this DMA.
    smmu.drain_events(DRAIN_LIMIT, |_| {}).map_err(|e| smmu_fail("drain stale events", e))?;
    setup_line(gic, eventq)?;
    let domain = smmu.create_domain(DomainConfig::default()).map_err(|e| smmu_fail("create domain", e))?;
    smmu.attach(&domain, &[sid]).map_err(|e| smmu_fail("attach", e))?;
    // I4: bus mastering only once the STE is live.
    pci::set_memory_decode(cs, bdf, true).map_err(|_| fail("edu memory decode"))?;
    pci::set_bus_master(cs, bdf, true).map_err(|_| fail("edu bus master"))?;
    defmt::info!("irq-test: edu {} StreamID {=u32:#x} attached to an empty domain; DMA to {=u64:#x}", bdf, sid.0, UNMAPPED_IOVA);

    let device = super::edu_at(bar);
    device.start_dma(UNMAPPED_IOVA, edu::BUFFER, super::dma::LEN, true);

    let mut seen = count(eventq.intid);
    let (mut interrupts, mut drained, mut faults) = (0u32, 0u32, 0u32);
    let mut drain_error = None;
    let mut drain = |smmu: &mut crate::smmus::SmmuDriver, faults: &mut u32| -> u32 {
        let r = smmu.drain_events(DRAIN_LIMIT, |e| {
            if e.event_type == EventType::F_TRANSLATION && e.stream_id == sid {
                *faults += 1;
            }
        });
        r.map(|r| r.events).unwrap_or_else(|e| {
            drain_error = Some(e);
            0
        })
    };
    // The edu finishes about 100 ms later (QEMU); meanwhile each eventq
    // interrupt drains what has arrived. The timer wakes the CPU to notice
    // the device's completion (there is no edu interrupt here).
    let done = wait_until(STEP_TIMEOUT_US, || {
        let now = count(eventq.intid);
        if now != seen {
            interrupts += now - seen;
            seen = now;
            drained += drain(smmu, &mut faults);
        }
        !device.dma_busy() && interrupts > 0
    });
    // Records written after the last drain raised another interrupt, or
    // are about to: take it, then drain once more whatever is left.
    let _ = wait_until(TICK_US, || count(eventq.intid) != seen);
    interrupts += count(eventq.intid) - seen;
    drained += drain(smmu, &mut faults);

    // I3: bus mastering off, then the stream aborts again.
    pci::set_bus_master(cs, bdf, false).map_err(|_| fail("edu bus master off"))?;
    smmu.detach(&[sid]).map_err(|e| smmu_fail("detach", e))?;
    smmu.destroy_domain(domain).map_err(|(_, e)| smmu_fail("destroy domain", e))?;
    if let Some(e) = drain_error {
        return Err(smmu_fail("drain events", e));
    }
    if !done {
        return Err(fail(if interrupts == 0 { "no eventq interrupt within 3 s" } else { "the edu DMA did not complete within 3 s" }));
    }
    if faults == 0 {
        return Err(fail("the faulting DMA left no F_TRANSLATION event for the edu"));
    }
    defmt::info!(
        "irq-test: INTID {=u32} (eventq) taken {=u32} times, {=u32} events drained ({=u32} F_TRANSLATION for StreamID {=u32:#x})",
        eventq.intid,
        interrupts,
        drained,
        faults,
        sid.0
    );
    Ok(())
}
