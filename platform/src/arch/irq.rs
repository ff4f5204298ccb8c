//! Interrupts at EL2: the GICv3 CPU interface (system registers), the
//! kernel's IRQ handler hook the exception vectors call, the idle wait, and
//! the EL2 physical timer as a wake-up source.
//!
//! The distributor and redistributors are MMIO and live in [`crate::gic`].
//!
//! - Routing (Arm ARM D1.3.6, "Asynchronous exception routing"): with
//!   HCR_EL2.{TGE, IMO} = {0, 0} a physical IRQ targets EL1 and is never
//!   taken while the CPU runs at EL2. [`init_cpu_interface`] sets IMO on the
//!   CPU it runs on, so physical IRQs are taken to EL2 there, masked by
//!   PSTATE.I like any same-EL exception. Partition CPUs run with IMO set
//!   (`guest.rs`), so an IRQ there arrives from a lower EL.
//! - CPU interface (IHI 0069 §12.2, §8.1): with ICC_SRE_EL2.SRE = 1 and
//!   E2H = 0, the ICC_*_EL1 registers accessed at EL2 are the physical CPU
//!   interface (the ICV_* virtual interface replaces them only for EL1 when
//!   IMO/FMO are set). Group 1 interrupts are acknowledged through
//!   ICC_IAR1_EL1 and completed through ICC_EOIR1_EL1 with EOImode 0 (EOI
//!   drops the priority and deactivates).
//! - Masking: the kernel runs with PSTATE.I set everywhere except inside
//!   [`wait_for_interrupt`]. A handler therefore never interrupts kernel
//!   code half-way (a held lock, a driver in the middle of a command): it
//!   shares nothing with the kernel but atomics, and the work an interrupt
//!   asks for is done after the wait returns.

use crate::gic::{GicError, FIRST_SPECIAL};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The kernel's IRQ handler: called with the acknowledged INTID, between
/// acknowledge and end of interrupt, with IRQs masked, on whichever CPU took
/// the interrupt. It must not block; a level-sensitive source it owns must
/// be quietened before it returns, or the interrupt is taken again at once.
pub type IrqHandler = fn(intid: u32);

static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The INTID of the EL2 physical timer's PPI; `u32::MAX` = not known.
static TIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static TAKEN: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static UNHANDLED: AtomicU64 = AtomicU64::new(0);

/// ICC_PMR_EL1: the lowest priority (0xff) passes the mask, so every
/// configured interrupt is signalled (§12.2.17; unimplemented low bits read
/// as 0, which still lets [`crate::gic::DEFAULT_PRIORITY`] through).
const PMR_ALL: u64 = 0xff;
/// ICC_CTLR_EL1.EOImode (§12.2.6).
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
/// ICC_IGRPEN1_EL1.Enable (§12.2.13).
const IGRPEN1_ENABLE: u64 = 1;
/// ICC_IAR1_EL1.INTID is bits \[23:0\] (§12.2.11).
const IAR_INTID_MASK: u64 = 0xff_ffff;

tock_registers::register_bitfields! {u64,
    /// ICC_SGI1R_EL1 (IHI 0069 §12.2.22): generates a Group 1 SGI.
    ICC_SGI1R [
        /// Aff0 values (0..15) of the targets in the cluster.
        TargetList OFFSET(0) NUMBITS(16) [],
        /// Aff1 of the targets.
        Aff1 OFFSET(16) NUMBITS(8) [],
        /// The SGI.
        INTID OFFSET(24) NUMBITS(4) [],
        /// Aff2 of the targets.
        Aff2 OFFSET(32) NUMBITS(8) [],
        /// Range selector: TargetList covers Aff0 16*RS..16*RS+15.
        RS OFFSET(44) NUMBITS(4) [],
        /// Aff3 of the targets.
        Aff3 OFFSET(48) NUMBITS(8) []
    ]
}

/// A partition CPU's handler: called for an interrupt taken while the
/// partition ran; `true` when the interrupt was forwarded to the partition
/// (linked through a list register), so the partition's deactivation
/// completes it and the kernel only drops its priority.
pub type GuestIrqHandler = fn(intid: u32) -> bool;

static GUEST_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler of interrupts taken from partitions.
pub fn set_guest_irq_handler(h: GuestIrqHandler) {
    GUEST_HANDLER.store(h as usize, Ordering::Release);
}

/// Sets up the CPU interface of a partition CPU: as [`init_cpu_interface`],
/// but with EOImode 1 (§12.2.6): ICC_EOIR1_EL1 only drops the priority and
/// ICC_DIR_EL1 deactivates, so an interrupt forwarded to the partition
/// stays active until the partition's own deactivation (the list
/// register's HW bit) ends it.
pub fn init_partition_cpu_interface() -> Result<(), GicError> {
    init_cpu_interface()?;
    // SAFETY: SRE = 1 (checked by init_cpu_interface); sets EOImode of this
    // CPU's interface only.
    unsafe {
        let ctlr: u64;
        core::arch::asm!("mrs {}, icc_ctlr_el1", out(reg) ctlr, options(nostack));
        core::arch::asm!("msr icc_ctlr_el1, {}", "isb", in(reg) ctlr | ICC_CTLR_EOIMODE, options(nostack));
    }
    Ok(())
}

/// Sends Group 1 SGI `intid` to the CPU with affinity `mpidr`.
pub fn send_sgi(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let v = (ICC_SGI1R::TargetList.val(1 << (aff0 % 16))
        + ICC_SGI1R::RS.val(aff0 / 16)
        + ICC_SGI1R::Aff1.val((mpidr >> 8) & 0xff)
        + ICC_SGI1R::Aff2.val((mpidr >> 16) & 0xff)
        + ICC_SGI1R::Aff3.val((mpidr >> 32) & 0xff)
        + ICC_SGI1R::INTID.val(u64::from(intid & 0xf)))
    .value;
    // SAFETY: ICC_SGI1R_EL1 at EL2 raises a physical SGI; the DSB makes
    // earlier memory writes visible to the target before it takes the SGI
    // (as Linux's gic_send_sgi), the ISB issues it.
    unsafe { core::arch::asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) v, options(nostack)) };
}

/// Deactivates `intid` (ICC_DIR_EL1; with EOImode 1 after its EOI): an
/// interrupt forwarded to a partition that will not deactivate it.
pub fn deactivate(intid: u32) {
    // SAFETY: writes ICC_DIR_EL1 of this CPU's interface (§12.2.8).
    unsafe { core::arch::asm!("msr icc_dir_el1, {}", "isb", in(reg) u64::from(intid), options(nostack)) };
}

/// An IRQ taken while a partition ran (its CPU's interface is in EOImode
/// 1): acknowledge, offer it to the guest handler, drop the priority, and
/// deactivate it unless it was forwarded.
pub(super) fn dispatch_from_partition() {
    let Some(intid) = acknowledge() else {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TAKEN.fetch_add(1, Ordering::Relaxed);
    let forwarded = match GUEST_HANDLER.load(Ordering::Acquire) {
        0 => false,
        h => {
            // SAFETY: GUEST_HANDLER only ever holds a `GuestIrqHandler`
            // stored by `set_guest_irq_handler`.
            let h: GuestIrqHandler = unsafe { core::mem::transmute::<usize, GuestIrqHandler>(h) };
            h(intid)
        }
    };
    end_of_interrupt(intid);
    if !forwarded {
        deactivate(intid);
    }
}

/// Installs the handler every IRQ goes to. Install it before enabling any
/// interrupt in the GIC: without one, an interrupt is only counted
/// ([`IrqStats::unhandled`]) and completed.
pub fn set_irq_handler(h: IrqHandler) {
    HANDLER.store(h as usize, Ordering::Release);
}

/// Removes the handler (interrupts are then only counted).
pub fn clear_irq_handler() {
    HANDLER.store(0, Ordering::Release);
}

/// Names the EL2 physical timer's INTID (the DT's `/timer`, fourth
/// interrupt; PPI 10 = INTID 26 on QEMU `virt`). Its interrupt is level
/// sensitive, so the dispatch path disarms the one-shot timer before the
/// handler sees the INTID.
pub fn set_timer_intid(intid: u32) {
    TIMER_INTID.store(intid, Ordering::Release);
}

/// Interrupt counters since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct IrqStats {
    /// Interrupts acknowledged and completed.
    pub taken: u64,
    /// IRQ exceptions where the acknowledge returned a special INTID
    /// (nothing pending any more, e.g. a stray IRQ on a partition CPU).
    pub spurious: u64,
    /// Interrupts taken with no handler installed.
    pub unhandled: u64,
}

/// Interrupt counters since boot.
pub fn stats() -> IrqStats {
    IrqStats { taken: TAKEN.load(Ordering::Relaxed), spurious: SPURIOUS.load(Ordering::Relaxed), unhandled: UNHANDLED.load(Ordering::Relaxed) }
}

/// Sets up this CPU's GIC CPU interface and routes physical IRQs to EL2:
/// system-register access (ICC_SRE_EL2.SRE, and Enable so EL1 may use
/// ICC_SRE_EL1 without trapping), priority mask open, EOImode 0, Group 1 on,
/// HCR_EL2.IMO. Run it after [`crate::gic::Gic::init`] woke this CPU's
/// redistributor, with IRQs masked (as the kernel always runs), and after
/// the MMU is on (`mmu::enable` rewrites HCR_EL2).
pub fn init_cpu_interface() -> Result<(), GicError> {
    ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
    // A write to ICC_SRE_EL2 takes effect for later ICC_* accesses only
    // after a context synchronization event (§12.2.16).
    barrier::isb(barrier::SY);
    if !ICC_SRE_EL2.is_set(ICC_SRE_EL2::SRE) {
        return Err(GicError::SystemRegistersDisabled);
    }
    // SAFETY: with SRE = 1 (checked) the ICC_* registers are accessible at
    // EL2; these writes configure only this CPU's interface.
    unsafe {
        core::arch::asm!("msr icc_pmr_el1, {}", in(reg) PMR_ALL, options(nostack));
        let ctlr: u64;
        core::arch::asm!("mrs {}, icc_ctlr_el1", out(reg) ctlr, options(nostack));
        core::arch::asm!("msr icc_ctlr_el1, {}", in(reg) ctlr & !ICC_CTLR_EOIMODE, options(nostack));
        core::arch::asm!("msr icc_igrpen1_el1, {}", in(reg) IGRPEN1_ENABLE, options(nostack));
    }
    HCR_EL2.modify(HCR_EL2::IMO::SET);
    // The routing and the interface changes apply from here on.
    barrier::isb(barrier::SY);
    Ok(())
}

/// Acknowledges the highest-priority pending Group 1 interrupt
/// (ICC_IAR1_EL1): its INTID, or `None` if the read returned a special
/// INTID (1020..=1023: nothing pending for this CPU).
pub fn acknowledge() -> Option<u32> {
    let iar: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt of this CPU's
    // interface; the DSB makes the acknowledgement complete before the
    // handler touches the device (as Linux's gic_read_iar).
    unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", "dsb sy", out(reg) iar, options(nostack)) };
    let intid = (iar & IAR_INTID_MASK) as u32;
    (!(FIRST_SPECIAL..FIRST_SPECIAL + 4).contains(&intid)).then_some(intid)
}

/// Ends interrupt `intid` (ICC_EOIR1_EL1; EOImode 0: priority drop and
/// deactivation). `intid` must be the value [`acknowledge`] returned.
pub fn end_of_interrupt(intid: u32) {
    // SAFETY: writes ICC_EOIR1_EL1 of this CPU's interface; the ISB makes
    // the deactivation effective before the exception returns and may take
    // the next interrupt (§12.2.9).
    unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack)) };
}

/// Called by the exception entry for every IRQ exception (current EL or
/// lower EL): acknowledge, hand to the handler, end the interrupt. One
/// interrupt per exception: another one still pending is taken as soon as
/// the exception returns to a context with IRQs unmasked.
pub(super) fn dispatch() {
    let Some(intid) = acknowledge() else {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TAKEN.fetch_add(1, Ordering::Relaxed);
    if intid == TIMER_INTID.load(Ordering::Acquire) {
        // Level sensitive: the line stays up until the timer is disarmed.
        disarm_timer();
    }
    match HANDLER.load(Ordering::Acquire) {
        0 => {
            UNHANDLED.fetch_add(1, Ordering::Relaxed);
        }
        h => {
            // SAFETY: HANDLER only ever holds an `IrqHandler` stored by
            // `set_irq_handler`.
            let h: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(h) };
            h(intid);
        }
    }
    end_of_interrupt(intid);
}

/// Sleeps until an interrupt arrives, takes it (the handler runs), and
/// returns with IRQs masked again.
///
/// Race-free for the caller's "check a condition, then wait" loop: the
/// `wfi` runs with IRQs still masked, and a pending interrupt wakes it even
/// so (Arm ARM D1.6.2: WFI wake-up events ignore PSTATE.I), so an interrupt
/// that arrives after the check is not slept through. Only then are IRQs
/// unmasked long enough for it to be taken. A CPU can also wake for no
/// reason: callers loop on their condition, with a deadline ([`arm_timer_us`]
/// bounds the sleep).
///
/// Needs a wake-up source: [`init_cpu_interface`] done on this CPU and an
/// enabled interrupt that will come — the EL2 timer's PPI enabled in the
/// GIC and armed, typically. Without one the CPU sleeps for good.
pub fn wait_for_interrupt() {
    // SAFETY: DSB makes earlier memory accesses complete before the CPU
    // sleeps; WFI with IRQs masked; unmasking IRQs lets the pending one be
    // taken (the vector saves and restores every register it uses, on this
    // stack); the ISB is the context synchronization that guarantees it is
    // taken before IRQs are masked again.
    unsafe { core::arch::asm!("dsb sy", "wfi", "msr daifclr, #2", "isb", "msr daifset, #2") };
}

/// Arms the EL2 physical timer (CNTHP, Arm ARM D12.8) to fire once, `us`
/// microseconds from now. Its interrupt (see [`set_timer_intid`]) wakes
/// [`wait_for_interrupt`]; the dispatch path disarms it again.
pub fn arm_timer_us(us: u64) {
    let f = u128::from(crate::time::frequency());
    let ticks = (u128::from(us) * f).div_ceil(1_000_000).min(u128::from(u64::MAX / 2)) as u64;
    let deadline = crate::time::ticks().saturating_add(ticks);
    // SAFETY: CNTHP_CVAL_EL2 is the EL2 timer's compare value; writing it
    // affects only that timer. CVAL (not TVAL, a signed 32-bit count) so a
    // long timeout cannot wrap.
    unsafe { core::arch::asm!("msr cnthp_cval_el2, {}", in(reg) deadline, options(nostack)) };
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    barrier::isb(barrier::SY);
}

/// Stops the EL2 physical timer: its interrupt line drops.
pub fn disarm_timer() {
    CNTHP_CTL_EL2.set(0);
    barrier::isb(barrier::SY);
}
