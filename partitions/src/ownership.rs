//! Who owns each isolation group, and how ownership changes (DESIGN.md
//! I2, I3, I6, I7).
//!
//! A group is `Blocked` (abort STEs, no bus mastering, MMIO mapped nowhere)
//! or `Assigned` to one partition. It only ever moves A → Blocked → B, each
//! move named by who asks and by the owner they expect to replace
//! (compare-and-set): a stale or stray request fails and changes nothing.
//! While a move is executed the group is in transition and every other
//! request for it is refused. This module decides; the kernel executes the
//! [`Step`]s in order and reports back, so a failure part-way leaves the
//! group Blocked, never half-assigned.

use crate::groups::GroupId;
use crate::validate::{PartitionId, Plan};
use alloc::vec::Vec;

/// The owner of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Nobody: every StreamID aborts.
    Blocked,
    /// A partition.
    Partition(PartitionId),
}

/// A group's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Settled with this owner.
    Stable(Owner),
    /// Being taken from a partition; Blocked when done (or failed).
    Releasing(PartitionId),
    /// Being given to a partition; Assigned when done, Blocked if it failed.
    Assigning(PartitionId),
}

/// Who makes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The kernel itself (fault quarantine).
    Kernel,
    /// A partition, through a hypercall.
    Partition(PartitionId),
}

/// Why a request was refused (nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such group.
    UnknownGroup,
    /// No such partition.
    UnknownPartition,
    /// The caller may not make this change.
    Denied,
    /// The group's owner is not the one the request expected.
    OwnerMismatch {
        /// Who actually owns it.
        actual: Owner,
    },
    /// Another change of this group is in progress.
    Busy,
    /// The group's SMMU failed closed: the group stays Blocked for good.
    Unavailable,
}

/// One thing the kernel must do, in order, to carry out a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Remove the group's MMIO from the partition's stage 2 and invalidate
    /// its CPU TLB entries for it.
    UnmapMmio(PartitionId),
    /// Clear bus mastering and memory decode of the group's devices.
    StopDevices,
    /// Abort STEs for every StreamID, CFGI_STE, TLBI of the old owner's
    /// domain, one CMD_SYNC.
    AbortStreams(PartitionId),
    /// Drain the SMMU's event queue, charging every record of the group to
    /// the old owner: after the abort's CMD_SYNC nothing the old owner
    /// started can still fault, and before anyone else owns the group no
    /// record of the old owner's can be charged to the next one.
    DrainEvents(PartitionId),
    /// Reset the devices that support it (PCIe FLR) and wait for them.
    ResetDevices,
    /// The new owner's STEs for every StreamID, CFGI_STE, one CMD_SYNC.
    AttachStreams(PartitionId),
    /// Memory decode and bus mastering on.
    StartDevices,
    /// Map the group's MMIO into the partition's stage 2.
    MapMmio(PartitionId),
}

/// The steps of a release, in the order I3 requires.
pub const RELEASE_STEPS: [fn(PartitionId) -> Step; 5] = [Step::UnmapMmio, |_| Step::StopDevices, Step::AbortStreams, Step::DrainEvents, |_| Step::ResetDevices];
/// The steps of an assignment, in the order I4 requires.
pub const ASSIGN_STEPS: [fn(PartitionId) -> Step; 3] = [Step::AttachStreams, |_| Step::StartDevices, Step::MapMmio];

/// A change in progress; hand it back with [`Ownership::finish`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a change must be finished (or failed) or the group stays in transition"]
pub struct Change {
    /// The group.
    pub group: GroupId,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

/// Ownership of every group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    states: Vec<State>,
    managers: Vec<bool>,
    /// Groups behind an SMMU that failed closed.
    unavailable: Vec<bool>,
}

impl Ownership {
    /// Ownership as the validated plan assigns it; `groups` is how many
    /// groups discovery found.
    pub fn from_plan(plan: &Plan, groups: usize) -> Ownership {
        let mut states = alloc::vec![State::Stable(Owner::Blocked); groups];
        for p in &plan.partitions {
            for g in &p.groups {
                if let Some(s) = states.get_mut(g.0 as usize) {
                    *s = State::Stable(Owner::Partition(p.id));
                }
            }
        }
        let unavailable = alloc::vec![false; states.len()];
        Ownership { states, managers: plan.partitions.iter().map(|p| p.manager).collect(), unavailable }
    }

    /// The state of `g`.
    pub fn state(&self, g: GroupId) -> Option<State> {
        self.states.get(g.0 as usize).copied()
    }

    /// Groups and their states.
    pub fn iter(&self) -> impl Iterator<Item = (GroupId, State)> + '_ {
        self.states.iter().enumerate().map(|(i, s)| (GroupId(i as u32), *s))
    }

    fn is_manager(&self, c: Caller) -> bool {
        match c {
            Caller::Kernel => true,
            Caller::Partition(p) => self.managers.get(p.0 as usize).copied().unwrap_or(false),
        }
    }

    fn stable(&self, g: GroupId) -> Result<Owner, Refusal> {
        match self.states.get(g.0 as usize).ok_or(Refusal::UnknownGroup)? {
            State::Stable(o) => Ok(*o),
            _ => Err(Refusal::Busy),
        }
    }

    /// The SMMU behind `groups` failed closed (every stream of it aborts,
    /// it translates nothing any more): each of them becomes Blocked for
    /// good. Returns the groups a partition held in a stable state, with
    /// that partition: the kernel takes their MMIO and bus mastering away
    /// (I4). A group in transition ends Blocked when its change finishes.
    pub fn smmu_failed(&mut self, groups: impl IntoIterator<Item = GroupId>) -> Vec<(GroupId, PartitionId)> {
        let mut taken = Vec::new();
        for g in groups {
            let i = g.0 as usize;
            let Some(s) = self.states.get_mut(i) else { continue };
            self.unavailable[i] = true;
            if let State::Stable(Owner::Partition(p)) = *s {
                taken.push((g, p));
                *s = State::Stable(Owner::Blocked);
            }
        }
        taken
    }

    /// `true` once `g`'s SMMU failed closed.
    pub fn is_unavailable(&self, g: GroupId) -> bool {
        self.unavailable.get(g.0 as usize).copied().unwrap_or(false)
    }

    /// Starts taking `g` from `expected`. A partition may release its own
    /// groups; a manager (or the kernel) any group.
    pub fn release(&mut self, by: Caller, g: GroupId, expected: PartitionId) -> Result<Change, Refusal> {
        let owner = self.stable(g)?;
        if owner != Owner::Partition(expected) {
            return Err(Refusal::OwnerMismatch { actual: owner });
        }
        if by != Caller::Partition(expected) && !self.is_manager(by) {
            return Err(Refusal::Denied);
        }
        self.states[g.0 as usize] = State::Releasing(expected);
        Ok(Change { group: g, steps: RELEASE_STEPS.iter().map(|s| s(expected)).collect() })
    }

    /// Starts giving the Blocked group `g` to `to`. Only a manager (or the
    /// kernel) may assign.
    pub fn assign(&mut self, by: Caller, g: GroupId, to: PartitionId) -> Result<Change, Refusal> {
        let owner = self.stable(g)?;
        if to.0 as usize >= self.managers.len() {
            return Err(Refusal::UnknownPartition);
        }
        if !self.is_manager(by) {
            return Err(Refusal::Denied);
        }
        if owner != Owner::Blocked {
            return Err(Refusal::OwnerMismatch { actual: owner });
        }
        if self.is_unavailable(g) {
            return Err(Refusal::Unavailable);
        }
        self.states[g.0 as usize] = State::Assigning(to);
        Ok(Change { group: g, steps: ASSIGN_STEPS.iter().map(|s| s(to)).collect() })
    }

    /// Ends a change: `ok` when every step succeeded. A failed change leaves
    /// the group Blocked. Returns the group's new owner.
    pub fn finish(&mut self, c: Change, ok: bool) -> Owner {
        let owner = match self.states.get(c.group.0 as usize) {
            Some(State::Assigning(to)) if ok => Owner::Partition(*to),
            _ => Owner::Blocked,
        };
        if let Some(s) = self.states.get_mut(c.group.0 as usize) {
            *s = State::Stable(owner);
        }
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{PartitionPlan, DEFAULT_FAULT_LIMIT};
    use alloc::string::String;
    use alloc::vec;

    fn plan() -> Plan {
        let p = |id: u16, manager: bool, groups: Vec<GroupId>| PartitionPlan {
            id: PartitionId(id),
            name: String::from("p"),
            memory: vec![],
            image: None,
            initrd: None,
            bootargs: String::new(),
            manager,
            fault_limit: DEFAULT_FAULT_LIMIT,
            log_limit: crate::budget::DEFAULT_LOG_LIMIT,
            dma_p2p: false,
            cpus: vec![1],
            groups,
            devices: vec![],
            irqs: vec![],
            uart_intid: crate::vm::board::UART_INTID,
        };
        Plan { partitions: vec![p(0, true, vec![GroupId(1)]), p(1, false, vec![GroupId(2)])], blocked: vec![GroupId(0)] }
    }

    const MGR: Caller = Caller::Partition(PartitionId(0));
    const B: Caller = Caller::Partition(PartitionId(1));

    #[test]
    fn groups_move_only_through_blocked() {
        let mut o = Ownership::from_plan(&plan(), 3);
        assert_eq!(o.state(GroupId(2)), Some(State::Stable(Owner::Partition(PartitionId(1)))));
        // Straight from B to the manager is impossible: assign needs Blocked.
        assert_eq!(o.assign(MGR, GroupId(2), PartitionId(0)), Err(Refusal::OwnerMismatch { actual: Owner::Partition(PartitionId(1)) }));
        let c = o.release(MGR, GroupId(2), PartitionId(1)).unwrap();
        assert_eq!(
            c.steps,
            [Step::UnmapMmio(PartitionId(1)), Step::StopDevices, Step::AbortStreams(PartitionId(1)), Step::DrainEvents(PartitionId(1)), Step::ResetDevices]
        );
        assert_eq!(o.state(GroupId(2)), Some(State::Releasing(PartitionId(1))));
        assert_eq!(o.release(MGR, GroupId(2), PartitionId(1)), Err(Refusal::Busy), "one change at a time");
        assert_eq!(o.finish(c, true), Owner::Blocked);
        let c = o.assign(MGR, GroupId(2), PartitionId(0)).unwrap();
        assert_eq!(c.steps, [Step::AttachStreams(PartitionId(0)), Step::StartDevices, Step::MapMmio(PartitionId(0))]);
        assert_eq!(o.finish(c, true), Owner::Partition(PartitionId(0)));
    }

    #[test]
    fn refusals_change_nothing() {
        let mut o = Ownership::from_plan(&plan(), 3);
        let before = o.clone();
        assert_eq!(o.release(B, GroupId(1), PartitionId(0)), Err(Refusal::Denied), "B may not take the manager's group");
        assert_eq!(o.release(MGR, GroupId(2), PartitionId(0)), Err(Refusal::OwnerMismatch { actual: Owner::Partition(PartitionId(1)) }));
        assert_eq!(o.release(MGR, GroupId(9), PartitionId(1)), Err(Refusal::UnknownGroup));
        assert_eq!(o.assign(B, GroupId(0), PartitionId(1)), Err(Refusal::Denied), "only managers assign");
        assert_eq!(o.assign(MGR, GroupId(0), PartitionId(7)), Err(Refusal::UnknownPartition));
        assert_eq!(o.release(MGR, GroupId(0), PartitionId(0)), Err(Refusal::OwnerMismatch { actual: Owner::Blocked }));
        assert_eq!(o, before);
    }

    #[test]
    fn owners_release_their_own_and_the_kernel_quarantines() {
        let mut o = Ownership::from_plan(&plan(), 3);
        let c = o.release(B, GroupId(2), PartitionId(1)).unwrap();
        assert_eq!(o.finish(c, true), Owner::Blocked);
        let c = o.release(Caller::Kernel, GroupId(1), PartitionId(0)).unwrap();
        assert_eq!(o.finish(c, true), Owner::Blocked);
    }

    /// Issue 12 item 7: the old owner's records are drained — and charged
    /// to it — after its streams abort and before the group can have a new
    /// owner; an assignment never drains (nothing of its own to charge).
    #[test]
    fn a_release_drains_events_after_the_abort_and_before_any_new_owner() {
        let mut o = Ownership::from_plan(&plan(), 3);
        let c = o.release(MGR, GroupId(2), PartitionId(1)).unwrap();
        let abort = c.steps.iter().position(|s| *s == Step::AbortStreams(PartitionId(1))).unwrap();
        let drain = c.steps.iter().position(|s| *s == Step::DrainEvents(PartitionId(1))).expect("a drain step");
        assert!(drain > abort, "drained after the abort's CMD_SYNC");
        assert_eq!(o.state(GroupId(2)), Some(State::Releasing(PartitionId(1))), "still the old owner's while it runs");
        o.finish(c, true);
        let c = o.assign(MGR, GroupId(2), PartitionId(0)).unwrap();
        assert!(!c.steps.iter().any(|s| matches!(s, Step::DrainEvents(_))));
    }

    /// Issue 12 item 4: an SMMU that failed closed takes every group behind
    /// it to Blocked for good, reporting whose MMIO must go; other groups
    /// are untouched.
    #[test]
    fn a_failed_smmu_blocks_its_groups_for_good() {
        let mut o = Ownership::from_plan(&plan(), 3);
        let taken = o.smmu_failed([GroupId(0), GroupId(2)]);
        assert_eq!(taken, [(GroupId(2), PartitionId(1))]);
        assert_eq!(o.state(GroupId(2)), Some(State::Stable(Owner::Blocked)));
        assert_eq!(o.state(GroupId(1)), Some(State::Stable(Owner::Partition(PartitionId(0)))), "another SMMU's group");
        assert_eq!(o.assign(MGR, GroupId(2), PartitionId(1)), Err(Refusal::Unavailable));
        assert_eq!(o.assign(MGR, GroupId(0), PartitionId(1)), Err(Refusal::Unavailable));
        let c = o.release(MGR, GroupId(1), PartitionId(0)).unwrap();
        assert_eq!(o.finish(c, true), Owner::Blocked);
        let c = o.assign(MGR, GroupId(1), PartitionId(1)).unwrap();
        assert_eq!(o.finish(c, true), Owner::Partition(PartitionId(1)));
    }

    #[test]
    fn a_failed_change_leaves_the_group_blocked() {
        let mut o = Ownership::from_plan(&plan(), 3);
        let c = o.assign(MGR, GroupId(0), PartitionId(1)).unwrap();
        assert_eq!(o.finish(c, false), Owner::Blocked);
        let c = o.release(MGR, GroupId(2), PartitionId(1)).unwrap();
        assert_eq!(o.finish(c, false), Owner::Blocked, "a failed release still ends Blocked, never back with the owner");
    }
}
