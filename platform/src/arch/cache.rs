//! Cache maintenance and the barriers around memory shared with devices.
//!
//! Arm ARM B2.3 (ordering), D7.4 (cache maintenance by VA to the point of
//! coherency). The minimum line size (64 bytes) is used, which is always safe.

use crate::PhysRange;
use aarch64_cpu::asm::barrier;

/// Cache line size used for maintenance (the architectural minimum stride).
const LINE: u64 = 64;

fn by_line(r: PhysRange, mut op: impl FnMut(u64)) {
    let mut a = r.start.0 & !(LINE - 1);
    while a < r.end.0 {
        op(a);
        a += LINE;
    }
}

/// Cleans `r` to the point of coherency: a non-coherent observer (a device,
/// or a CPU with its MMU off) then sees what this CPU wrote.
pub fn clean(r: PhysRange) {
    // SAFETY: DC CVAC only writes back dirty lines; no architectural state
    // beyond the caches changes.
    by_line(r, |a| unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack)) });
    barrier::dsb(barrier::SY);
}

/// Cleans and invalidates `r` to the point of coherency.
pub fn clean_invalidate(r: PhysRange) {
    // SAFETY: DC CIVAC writes back and drops lines of RAM the caller owns.
    by_line(r, |a| unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack)) });
    barrier::dsb(barrier::SY);
}

/// Writes to normal memory complete before later writes (to memory or MMIO)
/// that hand the memory to a device.
pub fn dsb_st() {
    barrier::dsb(barrier::ST);
}

/// Full-system barrier: all earlier accesses complete before any later one.
pub fn dsb_sy() {
    barrier::dsb(barrier::SY);
}

/// Reads after this see device writes announced by an earlier MMIO read
/// (outer-shareable load barrier).
pub fn dmb_oshld() {
    // SAFETY: a barrier has no effect besides ordering.
    unsafe { core::arch::asm!("dmb oshld", options(nostack)) };
}
