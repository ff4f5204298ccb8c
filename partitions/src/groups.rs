//! Isolation groups: the smallest sets of devices the SMMU can keep apart,
//! and so the unit a partition is given (DESIGN.md I2: groups move whole).
//!
//! Devices end up in one group when the SMMU cannot tell their requests
//! apart, or when their requests can reach each other without passing the
//! SMMU at all. The rules are the PCI and SMMU architecture's, applied as
//! Linux applies them (`pci_for_each_dma_alias`, `pci_device_group`,
//! `pci_acs_enabled` with `REQ_ACS_FLAGS` = SV | RR | CR | UF):
//!
//! 1. **DMA aliases.** Behind a PCIe-to-PCI bridge, requests may carry the
//!    bridge's secondary bus number with devfn 0; behind a conventional
//!    PCI(-X) bridge or a PCI-to-PCIe bridge, the bridge's own requester ID.
//!    The device joins the bridge's group, and the alias StreamID is one of
//!    the group's.
//! 2. **No ACS upstream.** From the topmost alias up, every port on the path
//!    to the root must have ACS isolation in effect; below the highest port
//!    that does not, requests can go peer to peer, so the device joins that
//!    port's group.
//! 3. **Multi-function devices** whose functions lack ACS may route requests
//!    between functions internally: one group.
//! 4. **Shared StreamIDs** (platform masters sharing an ID, an
//!    `iommu-map-mask` folding requester IDs): one group.
//! 5. `bulkhead,isolation-group = <N>` merges every device carrying the same
//!    N; nothing splits a group.
//!
//! A device whose requests do not reach an SMMU as a StreamID the SMMU
//! decodes — no `iommus`, a requester ID outside `iommu-map`, a StreamID
//! ≥ 2^SIDSIZE — is not isolatable, and neither is any device sharing its
//! group (the group cannot move whole).

use crate::topology::{DeviceRef, PciHost, SmmuIndex, Topology};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use devicetree::pci::{AcsFlags, FunctionKind as Kind};
use smmu::StreamId;

/// Names an isolation group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Why devices share a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupReason {
    /// Behind a PCIe-to-PCI or PCI-to-PCI bridge: requests carry the
    /// bridge's requester ID (or its secondary bus number).
    DmaAlias,
    /// A port between the device and the root lacks ACS isolation
    /// (SV, RR, CR, UF): peer-to-peer requests bypass the SMMU.
    NoAcs,
    /// Functions of a multi-function device without ACS.
    Multifunction,
    /// The same StreamID on the same SMMU.
    SharedStreamId,
    /// `bulkhead,isolation-group = <N>`.
    IsolationGroup(u32),
}

impl GroupReason {
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            GroupReason::DmaAlias => "dma-alias",
            GroupReason::NoAcs => "no-acs",
            GroupReason::Multifunction => "multifunction",
            GroupReason::SharedStreamId => "shared-streamid",
            GroupReason::IsolationGroup(_) => "isolation-group",
        }
    }
}

/// An isolation group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub id: GroupId,
    /// The SMMU all its StreamIDs belong to.
    pub smmu: SmmuIndex,
    /// Every StreamID its devices may use, aliases included (sorted).
    pub stream_ids: Vec<StreamId>,
    /// Its devices, in discovery order.
    pub devices: Vec<DeviceRef>,
    /// Why they are together (empty: a device on its own).
    pub reasons: Vec<GroupReason>,
}

/// Why a device cannot be isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotIsolatableReason {
    /// A platform device without `iommus`: its DMA does not pass an SMMU.
    NoIommus,
    /// `iommus` names something that is not an enabled SMMUv3.
    IommusNotSmmu {
        /// The phandle.
        phandle: u32,
    },
    /// The host bridge has no `iommu-map`.
    NoIommuMap,
    /// No `iommu-map` entry covers this requester ID (after the mask); Linux
    /// would let it through untranslated.
    RidNotCovered {
        /// The requester ID.
        rid: u32,
    },
    /// The `iommu-map` entry for this requester ID names something that is
    /// not an enabled SMMUv3.
    MapTargetNotSmmu {
        /// The requester ID.
        rid: u32,
        /// The phandle.
        phandle: u32,
    },
    /// The StreamID does not fit the SMMU's SIDSIZE.
    SidTooLarge {
        /// The SMMU.
        smmu: SmmuIndex,
        /// The StreamID.
        sid: u64,
        /// SIDSIZE.
        sid_bits: u8,
    },
    /// The group's devices reach different SMMUs.
    SpansSmmus,
    /// Shares a group with a device that is not isolatable.
    GroupedWith(DeviceRef),
}

impl NotIsolatableReason {
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            NotIsolatableReason::NoIommus => "no iommus property",
            NotIsolatableReason::IommusNotSmmu { .. } => "iommus names no enabled SMMUv3",
            NotIsolatableReason::NoIommuMap => "host bridge has no iommu-map",
            NotIsolatableReason::RidNotCovered { .. } => "requester ID not covered by iommu-map",
            NotIsolatableReason::MapTargetNotSmmu { .. } => "iommu-map names no enabled SMMUv3",
            NotIsolatableReason::SidTooLarge { .. } => "StreamID beyond the SMMU's SIDSIZE",
            NotIsolatableReason::SpansSmmus => "group spans several SMMUs",
            NotIsolatableReason::GroupedWith(_) => "shares a group with a device that is not isolatable",
        }
    }
}

/// A device that cannot be given to a partition, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotIsolatable {
    /// The device.
    pub device: DeviceRef,
    /// Why.
    pub reason: NotIsolatableReason,
}

/// The groups of a topology.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// Isolatable groups, ordered by their first device; `groups[i].id == GroupId(i)`.
    pub groups: Vec<Group>,
    /// Devices that are in no group, with the reason.
    pub not_isolatable: Vec<NotIsolatable>,
    /// `bulkhead,isolation-group` nodes that name no enumerated PCI function
    /// (node path, group number).
    pub unmatched_hints: Vec<(String, u32)>,
}

impl Groups {
    /// The group holding `d`.
    pub fn group_of(&self, d: DeviceRef) -> Option<&Group> {
        self.groups.iter().find(|g| g.devices.contains(&d))
    }
    /// The group named `id`.
    pub fn get(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(id.0 as usize).filter(|g| g.id == id)
    }
    /// Why `d` is not isolatable, if it is not.
    pub fn why_not_isolatable(&self, d: DeviceRef) -> Option<NotIsolatableReason> {
        self.not_isolatable.iter().find(|n| n.device == d).map(|n| n.reason)
    }
}

/// Disjoint sets over device numbers; the root is the smallest member, so
/// groups come out in discovery order.
struct Sets {
    parent: Vec<usize>,
}

impl Sets {
    fn find(&mut self, mut x: usize) -> usize {
        while let Some(&p) = self.parent.get(x) {
            if p == x {
                break;
            }
            let gp = self.parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = self.parent.get_mut(x) {
                *slot = gp;
            }
            x = p;
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        if let Some(slot) = self.parent.get_mut(hi) {
            *slot = lo;
        }
    }
}

/// Whether ACS isolation is in effect at a function, as Linux's
/// `pci_acs_enabled(dev, REQ_ACS_FLAGS)` decides it (quirks aside).
fn acs_enabled(host: &PciHost, i: usize) -> bool {
    let Some(f) = host.bus.functions.get(i) else { return false };
    let flags_enabled = || f.acs.is_some_and(|a| a.enabled(AcsFlags::ISOLATION));
    match f.kind {
        // Conventional PCI: a shared bus, any device can see any request.
        Kind::PciDevice | Kind::PciBridge => false,
        // PCIe §6.12.1: ACS never applies to these; treat as not isolating.
        Kind::PciToPcieBridge | Kind::PcieToPciBridge | Kind::RcEventCollector => false,
        // Ports must implement ACS to promise isolation between their children.
        Kind::RootPort | Kind::DownstreamPort => flags_enabled(),
        // Other PCIe functions only route peer to peer inside a multi-function device.
        Kind::Endpoint | Kind::UpstreamPort | Kind::LegacyEndpoint | Kind::RcIntegratedEndpoint => !f.multifunction || flags_enabled(),
        Kind::Reserved(_) => true,
    }
}

/// Whether ACS isolation is in effect at `i` and at every bridge above it
/// (Linux's `pci_acs_path_enabled(dev, NULL, REQ_ACS_FLAGS)`).
fn acs_path_enabled(host: &PciHost, i: usize) -> bool {
    let mut cur = Some(i);
    // Parents come before children, so the walk is at most as long as the list.
    for _ in 0..=host.bus.functions.len() {
        let Some(c) = cur else { return true };
        if !acs_enabled(host, c) {
            return false;
        }
        cur = host.bus.functions.get(c).and_then(|f| f.parent);
    }
    false
}

/// Maps a requester ID through a host bridge's `iommu-map`.
fn map_rid(t: &Topology, host: &PciHost, rid: u16) -> Result<(SmmuIndex, u32), NotIsolatableReason> {
    let map = &host.bridge.iommu_map;
    if map.entries.is_empty() {
        return Err(NotIsolatableReason::NoIommuMap);
    }
    let id = map.masked(u32::from(rid));
    let (e, sid) = map.lookup(u32::from(rid)).ok_or(NotIsolatableReason::RidNotCovered { rid: id })?;
    let smmu = e.target.map(SmmuIndex).ok_or(NotIsolatableReason::MapTargetNotSmmu { rid: id, phandle: e.phandle })?;
    check_sid(t, smmu, sid, e.phandle)
}

fn check_sid(t: &Topology, smmu: SmmuIndex, sid: u64, phandle: u32) -> Result<(SmmuIndex, u32), NotIsolatableReason> {
    let s = t.smmus.get(smmu.0).ok_or(NotIsolatableReason::IommusNotSmmu { phandle })?;
    let fits = if s.sid_bits >= 32 { sid <= u64::from(u32::MAX) } else { sid >> s.sid_bits == 0 };
    if !fits {
        return Err(NotIsolatableReason::SidTooLarge { smmu, sid, sid_bits: s.sid_bits });
    }
    Ok((smmu, sid as u32))
}

/// Computes the isolation groups of `t`.
pub fn compute(t: &Topology) -> Groups {
    // Number every device: PCI functions host by host, then platform devices.
    let mut refs: Vec<DeviceRef> = Vec::new();
    let mut first_of_host = Vec::new();
    for (h, host) in t.hosts.iter().enumerate() {
        first_of_host.push(refs.len());
        refs.extend((0..host.bus.functions.len()).map(|f| DeviceRef::Pci { host: h, function: f }));
    }
    let first_platform = refs.len();
    refs.extend((0..t.platform.len()).map(DeviceRef::Platform));
    let n = refs.len();

    let mut sets = Sets { parent: (0..n).collect() };
    let mut edges: Vec<(usize, GroupReason)> = Vec::new();
    // Only joins that bring two groups together are reasons; a rule that
    // holds inside an existing group adds nothing to "why".
    let mut join = |sets: &mut Sets, a: usize, b: usize, why: GroupReason| {
        if sets.find(a) != sets.find(b) {
            sets.union(a, b);
            edges.push((a, why));
        }
    };
    // The StreamIDs each device may use, or why it has none usable.
    let mut streams: Vec<Result<Vec<(SmmuIndex, u32)>, NotIsolatableReason>> = Vec::with_capacity(n);

    for (h, host) in t.hosts.iter().enumerate() {
        let base = first_of_host.get(h).copied().unwrap_or(0);
        // Functions by (parent, bus, device): the candidates of rule 3,
        // found without scanning the host per function.
        type Slot = (Option<usize>, u8, u8);
        let functions = &host.bus.functions;
        let slots: BTreeSet<(Slot, usize)> = functions.iter().enumerate().map(|(j, s)| ((s.parent, s.bdf.bus, s.bdf.dev), j)).collect();
        for (i, f) in functions.iter().enumerate() {
            let me = base + i;
            // 1. DMA aliases, walking up from the device (pci_for_each_dma_alias).
            let mut rids = Vec::from([f.rid()]);
            let mut top = i;
            let mut up = f.parent;
            for _ in 0..functions.len() {
                let Some(b) = up else { break };
                let Some(bridge) = functions.get(b) else { break };
                let alias = match bridge.kind {
                    Kind::PcieToPciBridge => bridge.secondary_bus().map(|s| u16::from(s) << 8),
                    Kind::PciToPcieBridge | Kind::PciBridge => Some(bridge.rid()),
                    // Ports pass requester IDs through unchanged.
                    _ => None,
                };
                if let Some(a) = alias {
                    rids.push(a);
                    join(&mut sets, me, base + b, GroupReason::DmaAlias);
                    top = b;
                }
                up = bridge.parent;
            }
            // 2. Up from the topmost alias to the first port with ACS on the
            //    whole path to the root.
            let mut anchor = top;
            let mut up = functions.get(top).and_then(|x| x.parent);
            for _ in 0..functions.len() {
                let Some(b) = up else { break };
                if acs_path_enabled(host, b) {
                    break;
                }
                join(&mut sets, me, base + b, GroupReason::NoAcs);
                anchor = b;
                up = functions.get(b).and_then(|x| x.parent);
            }
            // 3. Sibling functions without ACS (get_pci_function_alias_group).
            if let Some(a) = functions.get(anchor) {
                if a.multifunction && !acs_enabled(host, anchor) {
                    let slot = (a.parent, a.bdf.bus, a.bdf.dev);
                    for &(_, j) in slots.range((slot, 0)..=(slot, usize::MAX)) {
                        if j != anchor && !acs_enabled(host, j) {
                            join(&mut sets, base + anchor, base + j, GroupReason::Multifunction);
                        }
                    }
                }
            }
            rids.sort_unstable();
            rids.dedup();
            streams.push(rids.iter().map(|&r| map_rid(t, host, r)).collect());
        }
    }
    for p in &t.platform {
        let s = if p.iommus.is_empty() {
            Err(NotIsolatableReason::NoIommus)
        } else {
            p.iommus
                .iter()
                .map(|s| {
                    let smmu = s.smmu.map(SmmuIndex).ok_or(NotIsolatableReason::IommusNotSmmu { phandle: s.phandle })?;
                    check_sid(t, smmu, u64::from(s.sid), s.phandle)
                })
                .collect()
        };
        streams.push(s);
    }

    // 4. Shared StreamIDs.
    let mut seen: BTreeMap<(SmmuIndex, u32), usize> = BTreeMap::new();
    for (d, s) in streams.iter().enumerate() {
        for &key in s.iter().flatten() {
            match seen.get(&key) {
                Some(&other) => join(&mut sets, other, d, GroupReason::SharedStreamId),
                None => {
                    seen.insert(key, d);
                }
            }
        }
    }

    // 5. bulkhead,isolation-group merges.
    let mut unmatched_hints = Vec::new();
    let mut hinted: Vec<(u32, usize)> = Vec::new();
    for (h, host) in t.hosts.iter().enumerate() {
        for node in &host.bridge.nodes {
            let Some(group) = node.isolation_group else { continue };
            match t.resolve_pci(h, &node.chain) {
                Some(f) => hinted.push((group, first_of_host.get(h).copied().unwrap_or(0) + f)),
                None => unmatched_hints.push((node.path.clone(), group)),
            }
        }
    }
    for (i, p) in t.platform.iter().enumerate() {
        if let Some(g) = p.isolation_group {
            hinted.push((g, first_platform + i));
        }
    }
    for (k, &(g, d)) in hinted.iter().enumerate() {
        if let Some(&(_, first)) = hinted[..k].iter().find(|(g2, _)| *g2 == g) {
            join(&mut sets, first, d, GroupReason::IsolationGroup(g));
        }
    }

    // Collect the sets, in order of their smallest member.
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut slot_of_root: Vec<Option<usize>> = (0..n).map(|_| None).collect();
    for d in 0..n {
        let r = sets.find(d);
        let slot = match slot_of_root.get(r).copied().flatten() {
            Some(s) => s,
            None => {
                members.push(Vec::new());
                if let Some(x) = slot_of_root.get_mut(r) {
                    *x = Some(members.len() - 1);
                }
                members.len() - 1
            }
        };
        if let Some(m) = members.get_mut(slot) {
            m.push(d);
        }
    }
    let mut reasons_of: Vec<Vec<GroupReason>> = (0..members.len()).map(|_| Vec::new()).collect();
    for &(d, why) in &edges {
        let r = sets.find(d);
        if let Some(rs) = slot_of_root.get(r).copied().flatten().and_then(|s| reasons_of.get_mut(s)) {
            if !rs.contains(&why) {
                rs.push(why);
            }
        }
    }

    let mut out = Groups { unmatched_hints, ..Groups::default() };
    // Filled group by group; sorted into discovery order at the end.
    for (slot, devs) in members.iter().enumerate() {
        let refs_of = |ds: &[usize]| ds.iter().filter_map(|&d| refs.get(d).copied()).collect::<Vec<_>>();
        let failed: Vec<(usize, NotIsolatableReason)> = devs.iter().filter_map(|&d| streams.get(d).and_then(|s| s.as_ref().err()).map(|e| (d, *e))).collect();
        let mut ids: Vec<(SmmuIndex, u32)> = devs.iter().filter_map(|&d| streams.get(d)?.as_ref().ok()).flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let spans = ids.windows(2).any(|w| w[0].0 != w[1].0);
        if let Some(&(culprit, _)) = failed.first() {
            for &d in devs {
                let reason = match failed.iter().find(|(f, _)| *f == d) {
                    Some(&(_, why)) => why,
                    None => NotIsolatableReason::GroupedWith(refs.get(culprit).copied().unwrap_or(DeviceRef::Platform(0))),
                };
                if let Some(&device) = refs.get(d) {
                    out.not_isolatable.push(NotIsolatable { device, reason });
                }
            }
            continue;
        }
        if spans {
            for device in refs_of(devs) {
                out.not_isolatable.push(NotIsolatable { device, reason: NotIsolatableReason::SpansSmmus });
            }
            continue;
        }
        let Some(&(smmu, _)) = ids.first() else { continue };
        let mut reasons = reasons_of.get(slot).cloned().unwrap_or_default();
        reasons.sort_unstable();
        out.groups.push(Group {
            id: GroupId(out.groups.len() as u32),
            smmu,
            stream_ids: ids.iter().map(|&(_, s)| StreamId(s)).collect(),
            devices: refs_of(devs),
            reasons,
        });
    }
    out.not_isolatable.sort_by_key(|n| n.device);
    out
}

#[cfg(test)]
mod tests;
