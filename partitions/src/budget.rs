//! Log budgets: how much a partition may make the kernel print on its
//! behalf (boards/bindings/bulkhead,partitions.yaml, `bulkhead,log-limit`).
//! Policy only: the kernel asks before it prints and reports what was
//! dropped; the kernel's own lines (faults, quarantines, ownership changes,
//! a partition stopping) are never charged to a partition.
//!
//! One token bucket per partition and kind: console bytes (the console
//! hypercall) and refused-call lines (a hypercall the kernel refuses). Each
//! refills at the configured rate and holds [`BURST_SECONDS`] of it, so a
//! partition's start-up output passes and a storm is cut to the rate.
//! Accesses to a device window the partition lost print nothing and touch
//! only the partition's own state; they are counted, not limited, and
//! reported with the drops.

/// What a partition may make the kernel print, per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimit {
    /// Console bytes (the text of console hypercalls).
    pub console_bytes: u32,
    /// Lines about hypercalls the kernel refused.
    pub refused_calls: u32,
}

/// Without `bulkhead,log-limit`: 2 KiB of console text a second (a fifth of
/// a 115,200-baud UART) and 10 refused-call lines.
pub const DEFAULT_LOG_LIMIT: LogLimit = LogLimit { console_bytes: 2048, refused_calls: 10 };

/// A bucket holds this many seconds of its rate.
pub const BURST_SECONDS: u64 = 4;

/// Drops are reported at most this often (µs), and once after they stop.
pub const REPORT_PERIOD_US: u64 = 1_000_000;

/// Tokens are kept in millionths, so refills need no division.
const SCALE: u64 = 1_000_000;

/// A token bucket: `rate` tokens a second, at most `rate ×`
/// [`BURST_SECONDS`] held; starts full.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    micro_tokens: u64,
    rate: u64,
    last_us: u64,
}

impl Bucket {
    fn new(rate: u32, now_us: u64) -> Bucket {
        let rate = u64::from(rate);
        Bucket { micro_tokens: rate * BURST_SECONDS * SCALE, rate, last_us: now_us }
    }

    /// Takes `n` tokens at `now_us` if the bucket holds them.
    fn take(&mut self, n: u64, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        let cap = self.rate * BURST_SECONDS * SCALE;
        // elapsed µs × rate tokens/s = elapsed × rate micro-tokens.
        self.micro_tokens = self.micro_tokens.saturating_add(elapsed.saturating_mul(self.rate)).min(cap);
        let need = n.saturating_mul(SCALE);
        if self.micro_tokens >= need {
            self.micro_tokens -= need;
            true
        } else {
            false
        }
    }
}

/// What was dropped (and emulated) since the last report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Console bytes not printed.
    pub console_bytes: u64,
    /// Refused-call lines not printed.
    pub refused_calls: u64,
    /// Accesses to lost device windows emulated (counted, not limited).
    pub lost_device_accesses: u64,
    /// Over how long (µs since the previous report).
    pub over_us: u64,
}

/// One partition's budget.
#[derive(Clone, Debug)]
pub struct Budget {
    console: Bucket,
    refused: Bucket,
    since: Dropped,
    last_report_us: u64,
}

impl Budget {
    /// A full budget of `limit` at `now_us`.
    pub fn new(limit: LogLimit, now_us: u64) -> Budget {
        Budget {
            console: Bucket::new(limit.console_bytes, now_us),
            refused: Bucket::new(limit.refused_calls, now_us),
            since: Dropped::default(),
            last_report_us: now_us,
        }
    }

    /// May `bytes` of console text be printed at `now_us`? A write is
    /// printed whole or not at all.
    pub fn console(&mut self, bytes: u64, now_us: u64) -> bool {
        let ok = self.console.take(bytes, now_us);
        if !ok {
            self.since.console_bytes += bytes;
        }
        ok
    }

    /// May a refused call be reported at `now_us`?
    pub fn refused_call(&mut self, now_us: u64) -> bool {
        let ok = self.refused.take(1, now_us);
        if !ok {
            self.since.refused_calls += 1;
        }
        ok
    }

    /// Counts one emulated access to a lost device window.
    pub fn lost_device_access(&mut self) {
        self.since.lost_device_accesses += 1;
    }

    /// What to report at `now_us`: everything counted since the last
    /// report, once [`REPORT_PERIOD_US`] passed since it, when anything
    /// was counted; `None` otherwise. A storm shows as one line a period,
    /// and its tail one period after it ends.
    pub fn report(&mut self, now_us: u64) -> Option<Dropped> {
        let over_us = now_us.saturating_sub(self.last_report_us);
        if over_us < REPORT_PERIOD_US {
            return None;
        }
        self.last_report_us = now_us;
        let d = Dropped { over_us, ..core::mem::take(&mut self.since) };
        (d != Dropped { over_us, ..Dropped::default() }).then_some(d)
    }

    /// Everything counted and not reported yet (when the partition stops).
    pub fn flush(&mut self, now_us: u64) -> Option<Dropped> {
        self.last_report_us = now_us.saturating_sub(REPORT_PERIOD_US);
        self.report(now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_burst_passes_and_a_storm_is_cut_to_the_rate() {
        let mut b = Budget::new(LogLimit { console_bytes: 1000, refused_calls: 10 }, 0);
        // 4 s of burst: 4000 bytes at once.
        assert!((0..16).all(|_| b.console(250, 0)));
        assert!(!b.console(1, 0));
        // Then 1000 bytes a second: 10 s of 256-byte writes, every 1 ms.
        let printed = (1..=10_000u64).filter(|i| b.console(256, i * 1000)).count() as u64;
        assert_eq!(printed, 10 * 1000 / 256, "{printed}");
        let d = b.report(10 * S).unwrap();
        assert_eq!(d.console_bytes, 1 + (10_000 - printed) * 256);
        assert_eq!((d.refused_calls, d.lost_device_accesses, d.over_us), (0, 0, 10 * S));
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_burst() {
        let mut b = Budget::new(LogLimit { console_bytes: 100, refused_calls: 1 }, 0);
        assert!(b.console(400, 0));
        // An hour of silence refills 4 s, not an hour.
        assert!(b.console(400, 3600 * S));
        assert!(!b.console(1, 3600 * S));
        // Refused calls: 4 at once, then one a second.
        assert_eq!((0..10).filter(|_| b.refused_call(0)).count(), 4);
        assert!(!b.refused_call(S / 2));
        assert!(b.refused_call(S + S / 2));
    }

    #[test]
    fn time_going_backwards_or_huge_numbers_do_not_overflow() {
        let mut b = Budget::new(LogLimit { console_bytes: u32::MAX, refused_calls: u32::MAX }, u64::MAX - 5);
        assert!(b.console(u64::from(u32::MAX), 0));
        assert!(b.console(1, u64::MAX));
        assert!(!b.console(u64::MAX, u64::MAX));
        assert!(b.refused_call(7));
    }

    #[test]
    fn a_zero_limit_prints_nothing_and_counts_everything() {
        let mut b = Budget::new(LogLimit { console_bytes: 0, refused_calls: 0 }, 0);
        assert!(!b.console(1, 0) && !b.refused_call(0));
        b.lost_device_access();
        assert_eq!(b.report(S), Some(Dropped { console_bytes: 1, refused_calls: 1, lost_device_accesses: 1, over_us: S }));
    }

    #[test]
    fn reports_come_once_a_period_and_once_after_the_storm() {
        let mut b = Budget::new(LogLimit { console_bytes: 0, refused_calls: 0 }, 0);
        b.refused_call(10);
        assert_eq!(b.report(S - 1), None, "too early");
        assert_eq!(b.report(S).map(|d| d.refused_calls), Some(1));
        b.refused_call(S + 1);
        assert_eq!(b.report(S + 2), None);
        // The storm ended at S + 1: its tail comes one period later.
        assert_eq!(b.report(2 * S).map(|d| (d.refused_calls, d.over_us)), Some((1, S)));
        // Nothing counted: nothing reported, however long.
        assert_eq!(b.report(10 * S), None);
        b.console(5, 10 * S);
        assert_eq!(b.flush(10 * S + 1).map(|d| d.console_bytes), Some(5));
        assert_eq!(b.flush(10 * S + 2), None);
    }
}
