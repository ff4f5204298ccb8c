//! Fault accounting: SMMU events counted per group against the owner's
//! `bulkhead,fault-limit` (faults per window), and the decision to
//! quarantine (boards/bindings/bulkhead,partitions.yaml). Policy only: the
//! kernel drains the event queues, attributes each record to the group and
//! to the partition that owned it when the record was written, and executes
//! the quarantine (a release by the kernel).
//!
//! Windows are kept per group and per owner: a record counts against the
//! partition that owned the group when the record was written, and an
//! assignment starts the new owner's window from zero, so one partition's
//! faults can never spend another's budget.

use crate::groups::GroupId;
use crate::validate::PartitionId;
use alloc::vec::Vec;

/// A fault limit: at most `faults` SMMU events in any window of
/// `window_ms` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed per window.
    pub faults: u32,
    /// Window length in milliseconds.
    pub window_ms: u32,
}

impl From<(u32, u32)> for Limit {
    fn from((faults, window_ms): (u32, u32)) -> Self {
        Limit { faults, window_ms }
    }
}

/// What one counted fault means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Within,
    /// Over the limit: quarantine the group (`count` faults in the window).
    Quarantine {
        /// Faults counted in the current window.
        count: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct Window {
    owner: PartitionId,
    start_us: u64,
    count: u32,
}

/// The fault windows of every group.
#[derive(Clone, Debug, Default)]
pub struct FaultLedger {
    /// Per group, one window per owner that faulted in it.
    windows: Vec<Vec<Window>>,
}

impl FaultLedger {
    /// Windows for `groups` groups, all empty.
    pub fn new(groups: usize) -> Self {
        FaultLedger { windows: alloc::vec![Vec::new(); groups] }
    }

    fn window(&mut self, group: GroupId, owner: PartitionId, now_us: u64) -> Option<&mut Window> {
        let ws = self.windows.get_mut(group.0 as usize)?;
        let i = match ws.iter().position(|w| w.owner == owner) {
            Some(i) => i,
            None => {
                ws.push(Window { owner, start_us: now_us, count: 0 });
                ws.len() - 1
            }
        };
        ws.get_mut(i)
    }

    /// Counts one fault of `group`, charged to `owner` (who owned the group
    /// when the record was written), at `now_us`, against `limit`.
    pub fn record(&mut self, group: GroupId, owner: PartitionId, limit: Limit, now_us: u64) -> Verdict {
        let Some(w) = self.window(group, owner, now_us) else {
            return Verdict::Within;
        };
        if now_us.saturating_sub(w.start_us) > u64::from(limit.window_ms) * 1000 {
            *w = Window { owner, start_us: now_us, count: 0 };
        }
        w.count = w.count.saturating_add(1);
        if w.count > limit.faults {
            Verdict::Quarantine { count: w.count }
        } else {
            Verdict::Within
        }
    }

    /// `owner` was just given `group`: its window starts now, from zero.
    pub fn restart(&mut self, group: GroupId, owner: PartitionId, now_us: u64) {
        if let Some(w) = self.window(group, owner, now_us) {
            *w = Window { owner, start_us: now_us, count: 0 };
        }
    }

    /// Faults counted against `owner` for `group` in its current window.
    pub fn count(&self, group: GroupId, owner: PartitionId) -> u32 {
        self.windows.get(group.0 as usize).and_then(|ws| ws.iter().find(|w| w.owner == owner)).map_or(0, |w| w.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PartitionId = PartitionId(0);
    const B: PartitionId = PartitionId(1);
    const G: GroupId = GroupId(3);
    const LIMIT: Limit = Limit { faults: 4, window_ms: 1000 };

    #[test]
    fn over_the_limit_within_a_window_quarantines() {
        let mut l = FaultLedger::new(4);
        for i in 0..4 {
            assert_eq!(l.record(G, A, LIMIT, 10 + i), Verdict::Within);
        }
        assert_eq!(l.record(G, A, LIMIT, 20), Verdict::Quarantine { count: 5 });
        // A later window starts again.
        assert_eq!(l.record(G, A, LIMIT, 2_000_000), Verdict::Within);
        assert_eq!(l.count(G, A), 1);
    }

    /// Issue 12 item 7: A's records, drained at A's release, are charged to
    /// A; B's window, started at B's assignment, holds none of them, and
    /// A's faults never push B toward quarantine.
    #[test]
    fn one_owners_faults_never_spend_anothers_budget() {
        let mut l = FaultLedger::new(4);
        l.restart(G, A, 0);
        for t in 0..3 {
            assert_eq!(l.record(G, A, LIMIT, t), Verdict::Within);
        }
        // Released: the drain after the abort charges A's last records.
        assert_eq!(l.record(G, A, LIMIT, 5), Verdict::Within);
        l.restart(G, B, 6);
        assert_eq!(l.count(G, B), 0);
        for t in 0..4 {
            assert_eq!(l.record(G, B, LIMIT, 7 + t), Verdict::Within, "B's own first four");
        }
        // A record of A's drained after B's assignment still counts
        // against A: B stays at its own four.
        assert_eq!(l.record(G, A, LIMIT, 20), Verdict::Quarantine { count: 5 }, "A's fifth in its window");
        assert_eq!(l.count(G, B), 4, "A's records are not B's");
        assert_eq!(l.record(G, B, LIMIT, 21), Verdict::Quarantine { count: 5 }, "B's own fifth");
    }

    #[test]
    fn unknown_groups_are_ignored() {
        let mut l = FaultLedger::new(1);
        assert_eq!(l.record(GroupId(9), A, Limit { faults: 0, window_ms: 1 }, 0), Verdict::Within);
        l.restart(GroupId(9), A, 0);
    }
}
