//! SMMU events and global errors: each event record attributed to its
//! group and the partition that owns the group, counted against that
//! partition's `bulkhead,fault-limit` (`partitions::faults` decides), and
//! logged. What to do about a group over its limit, or an SMMU that can no
//! longer be trusted, is the ownership module's.

use crate::discover::Discovered;
use crate::runtime::{Isolation, Partition};
use crate::smmus::{SmmuDriver, SmmuInstance};
use alloc::vec::Vec;
use partitions::faults::Verdict;
use partitions::groups::GroupId;
use partitions::ownership::{Owner, Ownership, State};
use partitions::validate::PartitionId;

/// Most event lines logged per drain; the rest are counted.
const EVENT_LINES_PER_DRAIN: u32 = 8;

/// What one drain found.
#[derive(Default)]
pub struct Drained {
    /// Groups over their owner's fault limit: (group, owner, faults in the
    /// window).
    pub over_limit: Vec<(GroupId, PartitionId, u32)>,
    /// The SMMU reported a global error after which it cannot be trusted:
    /// why (the caller fails it closed).
    pub untrusted: Option<&'static str>,
}

/// The owner `g`'s records are charged to: its partition, also while a
/// release of it runs (the records are the old owner's) or while an
/// assignment runs past its attach (they are the new owner's).
fn charged_to(o: &Ownership, g: GroupId) -> Option<PartitionId> {
    match o.state(g)? {
        State::Stable(Owner::Partition(p)) | State::Releasing(p) | State::Assigning(p) => Some(p),
        State::Stable(Owner::Blocked) => None,
    }
}

/// Drains SMMU `si`'s event queue (QEMU records one event per 4 bytes of a
/// faulting transfer, so repeats of the same (StreamID, type, page) are
/// counted, not printed), then reads its global errors.
pub fn drain(iso: &mut Isolation, si: usize, d: &Discovered, parts: &[Partition]) -> Drained {
    let now_us = platform::time::uptime_us();
    let mut out = Drained::default();
    let (ownership, faults) = (&iso.ownership, &mut iso.faults);
    let Some(SmmuInstance { node, smmu: Some(smmu), failed: false, .. }) = iso.smmus.get_mut(si) else { return out };
    let name = node.name.as_str();
    let over = &mut out.over_limit;
    let mut last: Option<(u32, smmu::EventType, u64)> = None;
    let (mut printed, mut repeats) = (0u32, 0u32);
    let report = smmu.drain_events(1024, |e| {
        let group = d.groups.groups.iter().find(|g| g.smmu.0 == si && g.stream_ids.contains(&e.stream_id));
        let who = group.and_then(|g| charged_to(ownership, g.id));
        if let (Some(g), Some(p)) = (group, who) {
            let limit = parts.get(usize::from(p.0)).map(|x| x.plan.fault_limit).unwrap_or((u32::MAX, 1));
            if let Verdict::Quarantine { count } = faults.record(g.id, p, limit.into(), now_us) {
                if !over.iter().any(|(x, _, _)| *x == g.id) {
                    over.push((g.id, p, count));
                }
            }
        }
        let page = e.input_addr.map(|a| a.0 >> 12).unwrap_or(u64::MAX);
        let key = (e.stream_id.0, e.event_type, page);
        if last == Some(key) || printed == EVENT_LINES_PER_DRAIN {
            repeats += 1;
            return;
        }
        last = Some(key);
        printed += 1;
        // The device: the endpoint whose requester ID is the StreamID,
        // else the group's first (an alias StreamID).
        let bdf = group
            .and_then(|g| {
                let mut fns = g.devices.iter().filter_map(|&x| d.topology.pci(x));
                let first = fns.clone().next();
                fns.find(|f| u32::from(f.rid()) == e.stream_id.0).or(first)
            })
            .map(|f| (f.bdf.bus, f.bdf.dev, f.bdf.func));
        defmt::warn!(
            "SMMU event {}: StreamID {=u32:#x}, group {=i64}, partition {=str}, device {}, {=str} at {=u64:#x}",
            e.event_type,
            e.stream_id.0,
            group.map(|g| i64::from(g.id.0)).unwrap_or(-1),
            who.and_then(|p| parts.get(usize::from(p.0))).map(Partition::name).unwrap_or("(none: blocked)"),
            DeviceName(bdf),
            match e.read {
                Some(true) => "read",
                Some(false) => "write",
                None => "access",
            },
            e.input_addr.map(|a| a.0).unwrap_or(0)
        );
    });
    if repeats > 0 {
        defmt::info!("SMMU events: {=u32} repeats not printed", repeats);
    }
    let (_, evtq_log2) = smmu.queue_log2();
    let filled = match report {
        Ok(r) if r.lost_events => {
            defmt::error!("SMMU {=str}: event queue overflowed, events were lost", name);
            false
        }
        Ok(r) => r.events >= 1 << evtq_log2,
        Err(e) => {
            defmt::error!("SMMU {=str}: draining events: {}", name, e);
            false
        }
    };
    out.untrusted = global_errors(smmu, name, filled);
    out
}

/// Reads and acknowledges the SMMU's global errors. A command error was
/// already repaired by the driver. EVENTQ_ABT_ERR right after a drain that
/// found the queue full is QEMU's way of reporting an overflow (it does not
/// set OVFLG): events were lost, processing goes on. Any other
/// EVENTQ_ABT_ERR, or SFM_ERR, means the SMMU cannot be trusted: returns
/// why.
fn global_errors(smmu: &mut SmmuDriver, name: &str, queue_was_full: bool) -> Option<&'static str> {
    let report = match smmu.handle_gerror() {
        Ok(r) => r,
        Err(e) => {
            defmt::error!("SMMU {=str}: reading GERROR: {}", name, e);
            return None;
        }
    };
    let g = report.errors;
    if g.is_empty() {
        return None;
    }
    if let Some(c) = report.command {
        defmt::warn!("SMMU {=str}: command error recovered: {}", name, c);
    }
    if g.eventq_abt_err() && !g.sfm_err() && queue_was_full {
        defmt::error!("SMMU {=str}: event queue overflowed (reported as EVENTQ_ABT_ERR): events were lost; decoding goes on", name);
        return None;
    }
    if g.eventq_abt_err() || g.sfm_err() {
        defmt::error!("SMMU {=str}: global error {}", name, g);
        return Some("global error");
    }
    defmt::warn!("SMMU {=str}: global errors {} acknowledged", name, g);
    None
}

/// A PCI function as `bb:dd.f` in logs.
struct DeviceName(Option<(u8, u8, u8)>);

impl defmt::Format for DeviceName {
    fn format(&self, f: defmt::Formatter) {
        match self.0 {
            Some((b, d, func)) => defmt::write!(f, "{=u8:02x}:{=u8:02x}.{=u8}", b, d, func),
            None => defmt::write!(f, "?"),
        }
    }
}
