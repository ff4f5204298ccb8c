//! The grouping rules, one topology each.

use super::*;
use crate::topology::Smmu;
use alloc::string::ToString;
use alloc::vec;
use devicetree::discovery::{self, IdMap, IdMapEntry, IommuRef, PciDtNode, PlatformMaster};
use devicetree::pci::{Acs, AcsFlags, Bdf, Function, FunctionKind, HostTopology};

const EDU: (u16, u16) = (0x1234, 0x11e8);
/// An ACS capability with these Capability and Control registers.
const fn acs(cap: u16, ctrl: u16) -> Acs {
    Acs { offset: 0x100, cap: AcsFlags(cap), ctrl: AcsFlags(ctrl) }
}

/// ACS with the isolation controls implemented and enabled.
const ACS_ON: Option<Acs> = Some(acs(AcsFlags::ENABLE, AcsFlags::ENABLE));

fn smmu(name: &str, sid_bits: u8) -> Smmu {
    Smmu { name: name.to_string(), sid_bits }
}

/// `iommu-map = <0 &smmu 0 0x10000>`: StreamID = requester ID.
fn identity_map(smmu: usize) -> IdMap {
    IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x1_0000, target: Some(smmu), phandle: 0x8000 + smmu as u32, out_base: 0 }], mask: None }
}

/// A function node's path, its (bus, dev, fn) chain and its group number.
type Hint<'a> = (&'a str, &'a [(u8, u8, u8)], u32);

/// Builds a host bridge function by function.
struct Host(PciHost);

impl Host {
    fn new(path: &str, map: IdMap) -> Host {
        Host(PciHost { bridge: discovery::PciHost { path: path.to_string(), iommu_map: map, ..discovery::PciHost::default() }, bus: HostTopology::default() })
    }
    fn add(&mut self, parent: Option<usize>, bdf: (u8, u8, u8), kind: FunctionKind) -> usize {
        let f = Function::new(Bdf::new(bdf.0, bdf.1, bdf.2), kind);
        self.0.bus.functions.push(Function { vendor: EDU.0, device: EDU.1, class: 0x00ff00, parent, ..f });
        self.0.bus.functions.len() - 1
    }
    /// A bridge-type function with its secondary bus.
    fn bridge(&mut self, parent: Option<usize>, bdf: (u8, u8, u8), kind: FunctionKind, secondary: u8, acs: Option<Acs>) -> usize {
        let i = self.add(parent, bdf, kind);
        let f = &mut self.0.bus.functions[i];
        *f = f.clone().bridging(secondary);
        f.acs = acs;
        i
    }
    fn multifunction(&mut self, i: usize, acs: Option<Acs>) {
        self.0.bus.functions[i].multifunction = true;
        self.0.bus.functions[i].acs = acs;
    }
    /// Function nodes of the tree below the host bridge that carry
    /// `bulkhead,isolation-group`: (path, chain, group).
    fn hints(&mut self, hints: &[Hint<'_>]) {
        self.0.bridge.nodes = hints
            .iter()
            .map(|&(path, chain, group)| PciDtNode {
                path: path.into(),
                chain: chain.iter().map(|&(b, d, f)| Bdf::new(b, d, f)).collect(),
                isolation_group: Some(group),
            })
            .collect();
    }
}

fn topo(hosts: Vec<Host>, platform: Vec<PlatformMaster>, smmus: Vec<Smmu>) -> Topology {
    Topology { smmus, hosts: hosts.into_iter().map(|h| h.0).collect(), platform }
}

fn pci(host: usize, function: usize) -> DeviceRef {
    DeviceRef::Pci { host, function }
}

fn sids(g: &Group) -> Vec<u32> {
    g.stream_ids.iter().map(|s| s.0).collect()
}

/// Every device is in exactly one group or listed as not isolatable.
fn check_partition(t: &Topology, g: &Groups) {
    let mut all: Vec<DeviceRef> = vec![];
    for (h, host) in t.hosts.iter().enumerate() {
        all.extend((0..host.bus.functions.len()).map(|f| pci(h, f)));
    }
    all.extend((0..t.platform.len()).map(DeviceRef::Platform));
    for d in all {
        let n = g.groups.iter().filter(|x| x.devices.contains(&d)).count() + g.not_isolatable.iter().filter(|x| x.device == d).count();
        assert_eq!(n, 1, "{d:?} appears {n} times");
    }
    for (i, x) in g.groups.iter().enumerate() {
        assert_eq!(x.id, GroupId(i as u32));
        assert!(x.stream_ids.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    }
}

fn run(t: &Topology) -> Groups {
    let g = compute(t);
    check_partition(t, &g);
    g
}

#[test]
fn root_bus_devices_are_alone() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    h.add(None, (0, 0, 0), FunctionKind::PciDevice);
    h.add(None, (0, 1, 0), FunctionKind::PciDevice);
    h.add(None, (0, 2, 0), FunctionKind::Endpoint);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    assert_eq!(g.groups.len(), 3);
    assert_eq!(sids(&g.groups[1]), [0x08]);
    assert_eq!(g.groups[1].devices, [pci(0, 1)]);
    assert_eq!(g.groups[1].smmu, SmmuIndex(0));
    assert!(g.groups.iter().all(|x| x.reasons.is_empty()));
    assert!(g.not_isolatable.is_empty());
}

#[test]
fn devices_behind_a_pcie_to_pci_bridge_share_its_group_and_alias() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let rp = h.bridge(None, (0, 2, 0), FunctionKind::RootPort, 1, ACS_ON);
    let br = h.bridge(Some(rp), (1, 0, 0), FunctionKind::PcieToPciBridge, 2, None);
    let a = h.add(Some(br), (2, 1, 0), FunctionKind::PciDevice);
    let b = h.add(Some(br), (2, 2, 0), FunctionKind::PciDevice);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    assert_eq!(g.groups.len(), 2);
    assert_eq!(g.group_of(pci(0, rp)).unwrap().devices, [pci(0, rp)], "the root port has ACS: alone");
    let grp = g.group_of(pci(0, a)).unwrap();
    assert_eq!(grp.devices, [pci(0, br), pci(0, a), pci(0, b)]);
    assert_eq!(sids(grp), [0x100, 0x200, 0x208, 0x210], "bridge, alias (secondary bus, devfn 0), both devices");
    assert_eq!(grp.reasons, [GroupReason::DmaAlias]);
}

#[test]
fn conventional_and_reverse_bridges_alias_to_their_own_requester_id() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let pb = h.bridge(None, (0, 3, 0), FunctionKind::PciBridge, 1, None);
    let a = h.add(Some(pb), (1, 0, 0), FunctionKind::PciDevice);
    h.add(Some(pb), (1, 1, 0), FunctionKind::PciDevice);
    let rb = h.bridge(None, (0, 4, 0), FunctionKind::PciToPcieBridge, 2, None);
    let c = h.add(Some(rb), (2, 0, 0), FunctionKind::Endpoint);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    assert_eq!(sids(g.group_of(pci(0, a)).unwrap()), [0x18, 0x100, 0x108]);
    assert_eq!(sids(g.group_of(pci(0, c)).unwrap()), [0x20, 0x200]);
    assert_eq!(g.groups.len(), 2);
}

#[test]
fn nested_bridges_add_every_alias_on_the_way_up() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let rp = h.bridge(None, (0, 1, 0), FunctionKind::RootPort, 1, ACS_ON);
    let br = h.bridge(Some(rp), (1, 0, 0), FunctionKind::PcieToPciBridge, 2, None);
    let pb = h.bridge(Some(br), (2, 1, 0), FunctionKind::PciBridge, 3, None);
    let d = h.add(Some(pb), (3, 0, 0), FunctionKind::PciDevice);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    let grp = g.group_of(pci(0, d)).unwrap();
    assert_eq!(grp.devices, [pci(0, br), pci(0, pb), pci(0, d)]);
    assert_eq!(sids(grp), [0x100, 0x200, 0x208, 0x300]);
}

#[test]
fn multifunction_devices_without_acs_are_one_group() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    // Conventional functions never have ACS.
    let a0 = h.add(None, (0, 3, 0), FunctionKind::PciDevice);
    let a1 = h.add(None, (0, 3, 1), FunctionKind::PciDevice);
    h.multifunction(a0, None);
    h.multifunction(a1, None);
    // PCIe functions with ACS isolation enabled stay apart.
    let b0 = h.add(None, (0, 4, 0), FunctionKind::Endpoint);
    let b1 = h.add(None, (0, 4, 1), FunctionKind::Endpoint);
    h.multifunction(b0, ACS_ON);
    h.multifunction(b1, ACS_ON);
    // ACS implemented but not enabled: together.
    let c0 = h.add(None, (0, 5, 0), FunctionKind::Endpoint);
    let c1 = h.add(None, (0, 5, 1), FunctionKind::Endpoint);
    h.multifunction(c0, Some(acs(AcsFlags::ISOLATION, 0)));
    h.multifunction(c1, Some(acs(AcsFlags::ISOLATION, 0)));
    // ACS capability present with nothing to control: nothing can be
    // turned off, so isolation holds (as in Linux).
    let d0 = h.add(None, (0, 6, 0), FunctionKind::Endpoint);
    let d1 = h.add(None, (0, 6, 1), FunctionKind::Endpoint);
    h.multifunction(d0, Some(acs(0, 0)));
    h.multifunction(d1, Some(acs(0, 0)));
    // No ACS capability at all on PCIe functions: together.
    let e0 = h.add(None, (0, 7, 0), FunctionKind::Endpoint);
    let e1 = h.add(None, (0, 7, 1), FunctionKind::Endpoint);
    h.multifunction(e0, None);
    h.multifunction(e1, None);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    let of = |i| g.group_of(pci(0, i)).unwrap();
    assert_eq!(of(a0).devices, [pci(0, a0), pci(0, a1)]);
    assert_eq!(sids(of(a0)), [0x18, 0x19]);
    assert_eq!(of(a0).reasons, [GroupReason::Multifunction]);
    assert_ne!(of(b0).id, of(b1).id);
    assert_eq!(of(c0).id, of(c1).id);
    assert_ne!(of(d0).id, of(d1).id);
    assert_eq!(of(e0).id, of(e1).id);
    assert_eq!(g.groups.len(), 7);
}

#[test]
fn below_a_root_port_without_acs_the_port_and_its_devices_are_one_group() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let rp1 = h.bridge(None, (0, 1, 0), FunctionKind::RootPort, 1, None);
    let a = h.add(Some(rp1), (1, 0, 0), FunctionKind::Endpoint);
    let rp2 = h.bridge(None, (0, 2, 0), FunctionKind::RootPort, 2, Some(acs(AcsFlags::ISOLATION, AcsFlags::SV | AcsFlags::RR)));
    let b = h.add(Some(rp2), (2, 0, 0), FunctionKind::Endpoint);
    let rp3 = h.bridge(None, (0, 3, 0), FunctionKind::RootPort, 3, ACS_ON);
    let c = h.add(Some(rp3), (3, 0, 0), FunctionKind::Endpoint);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    let ga = g.group_of(pci(0, a)).unwrap();
    assert_eq!(ga.devices, [pci(0, rp1), pci(0, a)]);
    assert_eq!(ga.reasons, [GroupReason::NoAcs]);
    assert_eq!(sids(ga), [0x08, 0x100]);
    assert_eq!(g.group_of(pci(0, b)).unwrap().devices, [pci(0, rp2), pci(0, b)], "CR and UF not enabled");
    assert_eq!(g.group_of(pci(0, c)).unwrap().devices, [pci(0, c)]);
    assert_eq!(g.groups.len(), 4, "root ports side by side are not grouped with each other");
}

#[test]
fn a_switch_isolates_only_when_the_whole_path_has_acs() {
    let build = |rp_acs: Option<Acs>| {
        let mut h = Host::new("/pcie@10000000", identity_map(0));
        let rp = h.bridge(None, (0, 1, 0), FunctionKind::RootPort, 1, rp_acs);
        let usp = h.bridge(Some(rp), (1, 0, 0), FunctionKind::UpstreamPort, 2, None);
        let d0 = h.bridge(Some(usp), (2, 0, 0), FunctionKind::DownstreamPort, 3, ACS_ON);
        let d1 = h.bridge(Some(usp), (2, 1, 0), FunctionKind::DownstreamPort, 4, ACS_ON);
        h.add(Some(d0), (3, 0, 0), FunctionKind::Endpoint);
        h.add(Some(d1), (4, 0, 0), FunctionKind::Endpoint);
        topo(vec![h], vec![], vec![smmu("smmu", 16)])
    };
    let g = run(&build(ACS_ON));
    assert_eq!(g.groups.len(), 6, "every function alone");
    let g = run(&build(None));
    assert_eq!(g.groups.len(), 1, "all below the root port without ACS");
    assert_eq!(sids(&g.groups[0]), [0x08, 0x100, 0x200, 0x208, 0x300, 0x400]);
    assert_eq!(g.groups[0].reasons, [GroupReason::NoAcs]);
}

#[test]
fn a_requester_id_outside_iommu_map_is_not_isolatable() {
    let map = IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x200, target: Some(0), phandle: 1, out_base: 0 }], mask: None };
    let mut h = Host::new("/pcie@10000000", map);
    let rp = h.bridge(None, (0, 2, 0), FunctionKind::RootPort, 1, ACS_ON);
    let br = h.bridge(Some(rp), (1, 0, 0), FunctionKind::PcieToPciBridge, 2, None);
    let a = h.add(Some(br), (2, 1, 0), FunctionKind::PciDevice);
    let b = h.add(Some(br), (2, 2, 0), FunctionKind::PciDevice);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let g = run(&t);
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.groups[0].devices, [pci(0, rp)]);
    assert_eq!(g.why_not_isolatable(pci(0, a)), Some(NotIsolatableReason::RidNotCovered { rid: 0x200 }));
    assert_eq!(g.why_not_isolatable(pci(0, b)), Some(NotIsolatableReason::RidNotCovered { rid: 0x200 }));
    // The bridge's own ID is covered, but its group cannot move whole.
    assert_eq!(g.why_not_isolatable(pci(0, br)), Some(NotIsolatableReason::GroupedWith(pci(0, a))));
    // No iommu-map at all.
    let mut h = Host::new("/pcie@20000000", IdMap::default());
    h.add(None, (0, 1, 0), FunctionKind::Endpoint);
    let g = run(&topo(vec![h], vec![], vec![]));
    assert_eq!(g.why_not_isolatable(pci(0, 0)), Some(NotIsolatableReason::NoIommuMap));
    // An entry naming something that is not an SMMU.
    let map = IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x100, target: None, phandle: 0x42, out_base: 0 }], mask: None };
    let mut h = Host::new("/pcie@30000000", map);
    h.add(None, (0, 1, 0), FunctionKind::Endpoint);
    let g = run(&topo(vec![h], vec![], vec![]));
    assert_eq!(g.why_not_isolatable(pci(0, 0)), Some(NotIsolatableReason::MapTargetNotSmmu { rid: 8, phandle: 0x42 }));
}

#[test]
fn iommu_map_offsets_and_mask() {
    // Requester IDs 0x100.. become StreamIDs 0x1000..; the mask folds the
    // functions of one device onto one StreamID, so they cannot be told apart.
    let map = IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x1_0000, target: Some(0), phandle: 1, out_base: 0x1000 }], mask: Some(0xfff8) };
    let mut h = Host::new("/pcie@10000000", map);
    let f0 = h.add(None, (0, 3, 0), FunctionKind::Endpoint);
    let f1 = h.add(None, (0, 3, 1), FunctionKind::Endpoint);
    h.multifunction(f0, ACS_ON);
    h.multifunction(f1, ACS_ON);
    let o = h.add(None, (0, 4, 0), FunctionKind::Endpoint);
    let g = run(&topo(vec![h], vec![], vec![smmu("smmu", 16)]));
    let grp = g.group_of(pci(0, f0)).unwrap();
    assert_eq!(grp.devices, [pci(0, f0), pci(0, f1)]);
    assert_eq!(sids(grp), [0x1018]);
    assert_eq!(grp.reasons, [GroupReason::SharedStreamId]);
    assert_eq!(sids(g.group_of(pci(0, o)).unwrap()), [0x1020]);
}

#[test]
fn a_stream_id_beyond_sidsize_is_not_isolatable() {
    let map = IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x1_0000, target: Some(0), phandle: 1, out_base: 0xff00 }], mask: None };
    let mut h = Host::new("/pcie@10000000", map);
    let ok = h.add(None, (0, 1, 0), FunctionKind::Endpoint);
    let big = h.add(None, (1, 0, 0), FunctionKind::Endpoint);
    let g = run(&topo(vec![h], vec![], vec![smmu("smmu", 16)]));
    assert_eq!(sids(g.group_of(pci(0, ok)).unwrap()), [0xff08]);
    assert_eq!(g.why_not_isolatable(pci(0, big)), Some(NotIsolatableReason::SidTooLarge { smmu: SmmuIndex(0), sid: 0x1_0000, sid_bits: 16 }));
}

#[test]
fn two_host_bridges_on_two_smmus_keep_the_same_ids_apart() {
    let mut a = Host::new("/pcie@10000000", identity_map(0));
    a.add(None, (0, 1, 0), FunctionKind::PciDevice);
    let mut b = Host::new("/pcie@20000000", identity_map(1));
    b.add(None, (0, 1, 0), FunctionKind::PciDevice);
    let g = run(&topo(vec![a, b], vec![], vec![smmu("smmu0", 16), smmu("smmu1", 16)]));
    assert_eq!(g.groups.len(), 2);
    assert_eq!((g.groups[0].smmu, sids(&g.groups[0])), (SmmuIndex(0), vec![8]));
    assert_eq!((g.groups[1].smmu, sids(&g.groups[1])), (SmmuIndex(1), vec![8]));
    // The same two hosts mapped onto one SMMU: the IDs collide.
    let mut a = Host::new("/pcie@10000000", identity_map(0));
    a.add(None, (0, 1, 0), FunctionKind::PciDevice);
    let mut b = Host::new("/pcie@20000000", identity_map(0));
    b.add(None, (0, 1, 0), FunctionKind::PciDevice);
    let g = run(&topo(vec![a, b], vec![], vec![smmu("smmu0", 16)]));
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.groups[0].reasons, [GroupReason::SharedStreamId]);
}

fn master(path: &str, streams: &[(Option<usize>, u32)], group: Option<u32>) -> PlatformMaster {
    PlatformMaster {
        path: path.to_string(),
        iommus: streams.iter().map(|&(smmu, sid)| IommuRef { phandle: 0x8000, smmu, sid }).collect(),
        isolation_group: group,
        ..PlatformMaster::default()
    }
}

#[test]
fn platform_masters_sharing_a_stream_id_are_one_group() {
    let t = topo(
        vec![],
        vec![
            master("/dma@1", &[(Some(0), 0x100), (Some(0), 0x101)], None),
            master("/dma@2", &[(Some(0), 0x101)], None),
            master("/dma@3", &[(Some(0), 0x102)], None),
            master("/dma@4", &[(Some(1), 0x101)], None),
            master("/virtio@5", &[], None),
            master("/dma@6", &[(None, 0x7)], None),
            master("/dma@7", &[(Some(0), 0x1_0000)], None),
        ],
        vec![smmu("smmu0", 16), smmu("smmu1", 16)],
    );
    let g = run(&t);
    let p = DeviceRef::Platform;
    let shared = g.group_of(p(0)).unwrap();
    assert_eq!(shared.devices, [p(0), p(1)]);
    assert_eq!(sids(shared), [0x100, 0x101]);
    assert_eq!(shared.reasons, [GroupReason::SharedStreamId]);
    assert_eq!(g.group_of(p(2)).unwrap().devices, [p(2)]);
    assert_eq!(g.group_of(p(3)).unwrap().smmu, SmmuIndex(1), "same ID, other SMMU: apart");
    assert_eq!(g.why_not_isolatable(p(4)), Some(NotIsolatableReason::NoIommus));
    assert_eq!(g.why_not_isolatable(p(5)), Some(NotIsolatableReason::IommusNotSmmu { phandle: 0x8000 }));
    assert!(matches!(g.why_not_isolatable(p(6)), Some(NotIsolatableReason::SidTooLarge { sid: 0x1_0000, .. })));
    assert_eq!(g.groups.len(), 3);
}

#[test]
fn isolation_group_property_merges_and_never_splits() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let rp = h.bridge(None, (0, 2, 0), FunctionKind::RootPort, 1, ACS_ON);
    let a = h.add(Some(rp), (1, 0, 0), FunctionKind::Endpoint);
    let b = h.add(None, (0, 3, 0), FunctionKind::PciDevice);
    let c0 = h.add(None, (0, 4, 0), FunctionKind::PciDevice);
    let c1 = h.add(None, (0, 4, 1), FunctionKind::PciDevice);
    h.multifunction(c0, None);
    h.multifunction(c1, None);
    h.hints(&[
        ("/pcie@10000000/port@2,0/edu@0,0", &[(0, 2, 0), (1, 0, 0)], 7),
        ("/pcie@10000000/edu@3,0", &[(0, 3, 0)], 7),
        // Only one function of a multi-function group carries the hint: the group stays whole.
        ("/pcie@10000000/edu@4,1", &[(0, 4, 1)], 9),
        ("/pcie@10000000/edu@9,0", &[(0, 9, 0)], 7),
    ]);
    let t = topo(vec![h], vec![master("/dma@1", &[(Some(0), 0x4000)], Some(7))], vec![smmu("smmu", 16)]);
    let g = run(&t);
    let merged = g.group_of(pci(0, a)).unwrap();
    assert_eq!(merged.devices, [pci(0, a), pci(0, b), DeviceRef::Platform(0)]);
    assert_eq!(sids(merged), [0x18, 0x100, 0x4000]);
    assert_eq!(merged.reasons, [GroupReason::IsolationGroup(7)]);
    assert_eq!(g.group_of(pci(0, c0)).unwrap().devices, [pci(0, c0), pci(0, c1)]);
    assert_eq!(g.unmatched_hints, [("/pcie@10000000/edu@9,0".to_string(), 7)]);
    assert_eq!(g.group_of(pci(0, rp)).unwrap().devices, [pci(0, rp)]);

    // A merge across SMMUs cannot be one group.
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    h.add(None, (0, 1, 0), FunctionKind::PciDevice);
    h.hints(&[("/pcie@10000000/edu@1,0", &[(0, 1, 0)], 1)]);
    let t = topo(vec![h], vec![master("/dma@1", &[(Some(1), 0x5)], Some(1))], vec![smmu("a", 16), smmu("b", 16)]);
    let g = run(&t);
    assert!(g.groups.is_empty());
    assert_eq!(g.why_not_isolatable(pci(0, 0)), Some(NotIsolatableReason::SpansSmmus));
    assert_eq!(g.why_not_isolatable(DeviceRef::Platform(0)), Some(NotIsolatableReason::SpansSmmus));
}

#[test]
fn overlay_pci_paths_resolve_as_the_binding_says() {
    let mut h = Host::new("/pcie@10000000", identity_map(0));
    let rp = h.bridge(None, (0, 2, 0), FunctionKind::RootPort, 1, ACS_ON);
    let usp = h.bridge(Some(rp), (1, 0, 0), FunctionKind::UpstreamPort, 2, None);
    let dsp = h.bridge(Some(usp), (2, 1, 0), FunctionKind::DownstreamPort, 3, ACS_ON);
    let ep = h.add(Some(dsp), (3, 0, 0), FunctionKind::Endpoint);
    let t = topo(vec![h], vec![], vec![smmu("smmu", 16)]);
    let step = Bdf::new;
    // Nested nodes: the bus field of inner steps is not needed.
    assert_eq!(t.resolve_pci(0, &[step(0, 2, 0), step(0, 0, 0), step(0, 1, 0), step(0, 0, 0)]), Some(ep));
    // A node directly under the host bridge naming a bus by number.
    assert_eq!(t.resolve_pci(0, &[step(3, 0, 0)]), Some(ep));
    assert_eq!(t.resolve_pci(0, &[step(2, 1, 0), step(3, 0, 0)]), Some(ep));
    assert_eq!(t.resolve_pci(0, &[step(0, 2, 0), step(1, 5, 0)]), None);
    assert_eq!(t.resolve_pci(0, &[step(0, 2, 0), step(1, 0, 0), step(2, 1, 0), step(3, 0, 0), step(4, 0, 0)]), None, "an endpoint has no bus below");
    assert_eq!(t.resolve_pci(0, &[]), None);
    assert_eq!(t.resolve_pci(1, &[step(0, 2, 0)]), None);
}

#[test]
fn acs_rules_follow_linux() {
    let a = acs(AcsFlags::ISOLATION | AcsFlags::EC, AcsFlags::ISOLATION);
    assert!(a.enabled(AcsFlags::ISOLATION));
    assert!(!a.enabled(AcsFlags::ISOLATION | AcsFlags::EC), "egress control only counts when enabled");
    assert!(acs(AcsFlags::SV, AcsFlags::SV).enabled(AcsFlags::ISOLATION), "unimplemented controls cannot be off");
    assert!(!acs(AcsFlags::ISOLATION, AcsFlags::SV | AcsFlags::RR | AcsFlags::CR).enabled(AcsFlags::ISOLATION));
}
