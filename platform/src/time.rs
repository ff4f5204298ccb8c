//! Time from the generic timer's physical counter (CNTPCT_EL0).

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};

/// Counter ticks since reset.
pub fn ticks() -> u64 {
    // The ISB keeps the counter read from being hoisted above earlier code.
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency in Hz (never 0).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// Microseconds since reset.
pub fn uptime_us() -> u64 {
    let (t, f) = (ticks() as u128, frequency() as u128);
    (t * 1_000_000 / f) as u64
}

/// A busy-wait delay on the counter, for bounded polling of hardware.
#[derive(Clone, Copy, Default)]
pub struct Delay;

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        let f = frequency() as u128;
        let wait = (u128::from(ns) * f).div_ceil(1_000_000_000) as u64;
        let start = ticks();
        while ticks().wrapping_sub(start) < wait {
            core::hint::spin_loop();
        }
    }
}

/// Busy-waits about `us` microseconds.
pub fn sleep_us(us: u32) {
    embedded_hal::delay::DelayNs::delay_us(&mut Delay, us);
}
