//! Running a partition at EL1 under stage-2 translation, and what happens
//! when it traps back to EL2.
//!
//! Register fields: Arm ARM D24.2 (HCR_EL2, VTCR_EL2, VTTBR_EL2, CPTR_EL2,
//! CNTHCTL_EL2). The partition starts as a Linux-style kernel would: EL1h,
//! MMU off, interrupts masked, x0 = its DTB.

use super::exception::{Frame, Syndrome};
use crate::PhysAddr;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicUsize, Ordering};

/// HCR_EL2 for a running partition: stage 2 on (VM), set/way invalidation
/// as clean+invalidate (SWIO), physical FIQ/IRQ/SError to EL2 (FMO/IMO/AMO),
/// SMC trapped (TSC) so PSCI calls come to the kernel, EL1 is AArch64 (RW).
const HCR_GUEST: u64 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 19) | (1 << 31);
/// CPTR_EL2 RES1 bits (E2H = 0) with FP/SIMD not trapped: the partition owns
/// those registers (the kernel is built soft-float).
const CPTR_GUEST: u64 = 0x33ff & !(1 << 10);
/// MDCR_EL2: debug (TDA, TDOSA, TDRA) and performance-monitor (TPM, TPMCR)
/// registers trap to EL2: they would let a partition observe or disturb the
/// machine beyond its own state.
const MDCR_GUEST: u64 = (1 << 5) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11);
/// SCTLR_EL1 reset-like value: RES1 bits, MMU and caches off.
const SCTLR_EL1_OFF: u64 = 0x30d0_0800;
/// SPSR for EL1h with D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// CNTHCTL_EL2: EL1 may read the physical counter and use the physical timer.
const CNTHCTL_EL1_ACCESS: u64 = 0b11;

/// A partition CPU's stage-2 translation.
#[derive(Clone, Copy, Debug)]
pub struct Stage2 {
    /// Root table of the stage-2 tables.
    pub root: PhysAddr,
    /// VMID tagging the partition's TLB entries.
    pub vmid: u16,
    /// IPA size in bits (VTCR_EL2.T0SZ = 64 - bits).
    pub input_bits: u8,
    /// Level the walk starts at (0, 1 or 2 for the 4 KiB granule).
    pub start_level: u8,
}

impl Stage2 {
    /// VTCR_EL2 for these tables: 4 KiB granule, write-back inner-shareable
    /// walks, 16-bit VMIDs, output size from the CPU's PARange (≤ 48 bits).
    pub fn vtcr(&self) -> u64 {
        let t0sz = 64 - u64::from(self.input_bits);
        let sl0 = 2 - u64::from(self.start_level.min(2)); // 4K: 0 → L2, 1 → L1, 2 → L0
        let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
        let vs_16bit_vmid = 1 << 19;
        t0sz | (sl0 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (ps << 16) | vs_16bit_vmid | (1 << 31)
    }
}

/// The CPU's physical address size in bits (ID_AA64MMFR0_EL1.PARange),
/// capped at 48 (52-bit output needs LPA/LPA2, which the maps do not use).
pub fn pa_bits() -> u8 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    }
}

/// What the kernel does after a trap from a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapAction {
    /// Return to the partition at ELR (HVC: the next instruction).
    Resume,
    /// Return to the instruction after the one that trapped (SMC, MSR/MRS).
    Skip,
    /// Stop this CPU for good; other CPUs keep running.
    Halt,
}

/// The kernel's handler for traps from partitions.
pub type TrapHandler = fn(&mut Frame, &Syndrome) -> TrapAction;

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler every partition trap goes to.
pub fn set_trap_handler(h: TrapHandler) {
    HANDLER.store(h as usize, Ordering::Release);
}

/// Called by the exception entry for exceptions from a lower EL.
pub(super) fn dispatch(frame: &mut Frame, s: &Syndrome) -> Option<TrapAction> {
    let h = HANDLER.load(Ordering::Acquire);
    if h == 0 {
        return None;
    }
    // SAFETY: HANDLER only ever holds a `TrapHandler` stored by
    // `set_trap_handler`.
    let h: TrapHandler = unsafe { core::mem::transmute::<usize, TrapHandler>(h) };
    Some(h(frame, s))
}

/// Enters the partition at `entry` (EL1h, MMU off) with x0 = `x0`, under
/// `s2`. Never returns: the CPU comes back to EL2 only through traps.
///
/// # Safety
/// `s2` must map only the partition's own memory and devices; `entry` must
/// be inside that memory.
pub unsafe fn enter(s2: &Stage2, entry: PhysAddr, x0: u64) -> ! {
    VTCR_EL2.set(s2.vtcr());
    VTTBR_EL2.set((u64::from(s2.vmid) << 48) | s2.root.0);
    HCR_EL2.set(HCR_GUEST);
    CPTR_EL2.set(CPTR_GUEST);
    MDCR_EL2.set(MDCR_GUEST);
    CNTHCTL_EL2.set(CNTHCTL_EL1_ACCESS);
    CNTVOFF_EL2.set(0);
    VMPIDR_EL2.set(MPIDR_EL1.get());
    SCTLR_EL1.set(SCTLR_EL1_OFF);
    SPSR_EL2.set(SPSR_EL1H_MASKED);
    ELR_EL2.set(entry.0);
    barrier::isb(barrier::SY);
    // SAFETY: invalidates this VMID's stage-1+2 TLB entries (VTTBR now
    // selects it) so the partition starts from its own tables only; then
    // drops to EL1 with every general register cleared but x0.
    unsafe {
        core::arch::asm!(
            "tlbi vmalls12e1",
            "dsb ish",
            "isb",
            "mov x1, xzr", "mov x2, xzr", "mov x3, xzr", "mov x4, xzr", "mov x5, xzr", "mov x6, xzr",
            "mov x7, xzr", "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr", "mov x12, xzr",
            "mov x13, xzr", "mov x14, xzr", "mov x15, xzr", "mov x16, xzr", "mov x17, xzr", "mov x18, xzr",
            "mov x19, xzr", "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr", "mov x24, xzr",
            "mov x25, xzr", "mov x26, xzr", "mov x27, xzr", "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
            "eret",
            in("x0") x0,
            options(noreturn)
        )
    }
}

/// Parks this CPU for good: PSCI CPU_OFF, or a masked `wfe` loop if the
/// firmware refuses.
pub fn halt_this_cpu() -> ! {
    const PSCI_CPU_OFF: u64 = 0x8400_0002;
    super::exit::psci_call(PSCI_CPU_OFF, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Invalidates every CPU's stage-1 and stage-2 TLB entries of the partition
/// whose stage 2 is `s2` (after its stage 2 changed), from any CPU: VTTBR_EL2
/// selects the VMID the broadcast TLBI applies to, so it is switched to the
/// partition's for the invalidation and restored after (Arm ARM D8.13).
pub fn flush_stage2(s2: &Stage2) {
    let saved = VTTBR_EL2.get();
    VTTBR_EL2.set((u64::from(s2.vmid) << 48) | s2.root.0);
    // SAFETY: barriers and an inner-shareable TLB invalidation of one VMID;
    // the ISB makes the VTTBR write effective first.
    unsafe { core::arch::asm!("dsb ishst", "isb", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
    VTTBR_EL2.set(saved);
    barrier::isb(barrier::SY);
}
