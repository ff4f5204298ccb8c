//! Bounded polling. Every wait on the hardware goes through [`poll`]: it
//! checks, sleeps with exponential back-off through
//! [`DelayNs`](embedded_hal::delay::DelayNs) and gives up after a budget of
//! microseconds.

use embedded_hal::delay::DelayNs;

/// Longest single sleep between two polls.
const MAX_STEP_US: u32 = 64;

/// Polls `done` until it returns `true` or about `timeout_us` microseconds of
/// delay have been spent. Returns whether `done` succeeded.
pub(crate) fn poll(delay: &mut impl DelayNs, timeout_us: u32, mut done: impl FnMut() -> bool) -> bool {
    let mut waited: u32 = 0;
    let mut step: u32 = 1;
    loop {
        if done() {
            return true;
        }
        if waited >= timeout_us {
            return false;
        }
        let this = step.min(timeout_us - waited);
        delay.delay_us(this);
        waited = waited.saturating_add(this);
        step = (step * 2).min(MAX_STEP_US);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(u64);
    impl DelayNs for Count {
        fn delay_ns(&mut self, ns: u32) {
            self.0 += u64::from(ns);
        }
    }

    #[test]
    fn poll_is_bounded() {
        let mut d = Count(0);
        assert!(!poll(&mut d, 1000, || false));
        assert_eq!(d.0, 1000 * 1000, "exactly the budget was slept");
        let mut d = Count(0);
        let mut n = 0;
        assert!(poll(&mut d, 1000, || {
            n += 1;
            n == 3
        }));
        assert_eq!(d.0, 3 * 1000, "1 + 2 µs of back-off");
        let mut d = Count(0);
        assert!(!poll(&mut d, 0, || false));
        assert_eq!(d.0, 0);
    }
}
