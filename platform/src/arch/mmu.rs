//! Switching the EL2 stage-1 MMU on (HCR_EL2.E2H = 0: TTBR0_EL2 only).
//!
//! Register fields: Arm ARM D24.2 (TCR_EL2, SCTLR_EL2, MAIR_EL2). The
//! sequence follows the architecture's rules for enabling translation:
//! tables visible to the walker, TLBs clean, then SCTLR with an ISB.

use crate::pgtable::{MAIR_VALUE, VA_BITS};
use crate::{PhysAddr, PhysRange};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

/// TCR_EL2 for a 48-bit, 4 KiB-granule, write-back, inner-shareable walk.
fn tcr(parange: u64) -> u64 {
    let t0sz = 64 - u64::from(VA_BITS);
    let ps = parange.min(0b101); // no more than 48-bit outputs
    let irgn0_wbwa = 0b01 << 8;
    let orgn0_wbwa = 0b01 << 10;
    let sh0_inner = 0b11 << 12;
    let tg0_4k = 0b00 << 14;
    let res1 = (1 << 23) | (1 << 31);
    t0sz | irgn0_wbwa | orgn0_wbwa | sh0_inner | tg0_4k | (ps << 16) | res1
}

/// Turns on translation with the identity map rooted at `root`, whose tables
/// occupy `tables`. Must run at EL2 with the MMU off.
///
/// # Safety
/// `root` must be a complete identity map covering the running code, its
/// stack, its data and every device the kernel touches afterwards.
pub unsafe fn enable(root: PhysAddr, tables: PhysRange) {
    // E2H=0 (one translation regime at EL2), RW=1 (EL1 is AArch64).
    HCR_EL2.write(HCR_EL2::RW::EL1IsAarch64);
    MAIR_EL2.set(MAIR_VALUE);
    TCR_EL2.set(tcr(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange)));
    TTBR0_EL2.set(root.0);
    super::cache::clean_invalidate(tables);
    // SAFETY: TLB and I-cache invalidation at EL2 before translation is on;
    // the DSB/ISB order them before the SCTLR write (Arm ARM D8.14).
    unsafe {
        core::arch::asm!("tlbi alle2", "dsb ish", "ic iallu", "dsb ish", "isb", options(nostack));
    }
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable + SCTLR_EL2::SA::Enable + SCTLR_EL2::WXN::Enable + SCTLR_EL2::A::Disable,
    );
    barrier::isb(barrier::SY);
}
