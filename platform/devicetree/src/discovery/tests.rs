//! Discovery against device trees compiled with the system `dtc`.

use super::*;
extern crate std;
use std::string::ToString;
use std::vec;

use crate::testutil::{dtb, forced_dtb};

const BOARD: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    dma-coherent;
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        #address-cells = <2>; #size-cells = <2>; ranges;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>;
        its: its@8080000 { compatible = "arm,gic-v3-its"; msi-controller; #msi-cells = <1>;
            reg = <0x0 0x8080000 0x0 0x20000>; }; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>; #iommu-cells = <1>; dma-coherent; };
    smmu2: smmuv3@9070000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9070000 0x0 0x20000>; #iommu-cells = <1>; };
    smmu3: smmuv3@9090000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9090000 0x0 0x20000>; #iommu-cells = <1>; status = "disabled"; };
    other: iommu@9100000 { compatible = "vendor,other-iommu"; reg = <0x0 0x9100000 0x0 0x1000>; #iommu-cells = <2>; };
    pcie@10000000 { compatible = "pci-host-ecam-generic"; device_type = "pci"; dma-coherent;
        #address-cells = <3>; #size-cells = <2>; reg = <0x40 0x10000000 0x0 0x10000000>;
        bus-range = <0x0 0xff>; linux,pci-domain = <0>;
        ranges = <0x1000000 0x0 0x0 0x0 0x3eff0000 0x0 0x10000
                  0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
                  0x43000000 0x80 0x0 0x80 0x0 0x80 0x0>;
        iommu-map = <0x0 &smmu 0x0 0x8000  0x8000 &smmu3 0x0 0x100>;
        iommu-map-mask = <0xfff8>;
        msi-map = <0x0 &its 0x0 0x10000>;
        edu@1,0 { reg = <0x0800 0 0 0 0>; bulkhead,isolation-group = <7>; };
        port@2,0 { reg = <0x1000 0 0 0 0>; #address-cells = <3>; #size-cells = <2>;
            edu@0,0 { reg = <0x10000 0 0 0 0>; }; };
        off@3,0 { reg = <0x1800 0 0 0 0>; status = "disabled"; }; };
    soc { compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>;
        ranges = <0x0 0x50 0x0 0x40000000>;
        pcie@20000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
            #address-cells = <3>; #size-cells = <2>; reg = <0x20000000 0x800000>;
            bus-range = <0x10 0x1f>;
            ranges = <0x2000000 0x0 0x30000000 0x30000000 0x0 0x1000000>;
            iommu-map = <0x1000 &smmu2 0x20 0x1000>; };
        dma@1000 { reg = <0x1000 0x100>; iommus = <&smmu2 0x42>; };
        off { status = "disabled"; dma@2000 { reg = <0x2000 0x100>; iommus = <&smmu2 0x43>; }; }; };
    pcie@30000000 { compatible = "pci-host-ecam-generic"; status = "disabled";
        #address-cells = <3>; #size-cells = <2>; reg = <0x0 0x30000000 0x0 0x100000>; };
    dma@9200000 { reg = <0x0 0x9200000 0x0 0x1000>; iommus = <&smmu 0x100 &smmu 0x101>; };
    dma@9210000 { reg = <0x0 0x9210000 0x0 0x1000>; iommus = <&smmu 0x100>; bulkhead,isolation-group = <7>; };
    dma@9220000 { reg = <0x0 0x9220000 0x0 0x1000>; iommus = <&smmu3 0x5>; };
    dma@9230000 { reg = <0x0 0x9230000 0x0 0x1000>; iommus = <&other 0x9 0x1>; };
    dma@9240000 { reg = <0x0 0x9240000 0x0 0x1000>; iommus = <&smmu 0x7>; status = "disabled"; };
    fw-cfg@9020000 { compatible = "qemu,fw-cfg-mmio"; reg = <0x0 0x9020000 0x0 0x18>; dma-coherent; };
    pl011@9000000 { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>; };
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; dma-coherent; }; };
    partitions { p { bulkhead,isolation-group = <1>; }; };
};
"#;

fn discover_dts(dts: &str) -> Result<Discovery, DtError> {
    let blob = dtb(dts);
    let dt = DeviceTree::parse(&blob).unwrap();
    let smmus = dt.smmus().unwrap();
    discover(&dt, &smmus)
}

fn r(base: u64, size: u64) -> PhysRange {
    PhysRange::new(base, size).unwrap()
}

#[test]
fn reads_gic_its_hosts_and_masters() {
    let d = discover_dts(BOARD).unwrap();
    let gic = d.gic.as_ref().unwrap();
    assert_eq!(gic.path, "/intc@8000000");
    assert_eq!(gic.distributor, r(0x800_0000, 0x1_0000));
    assert_eq!(gic.redistributors, [r(0x80a_0000, 0xf6_0000)]);
    assert_eq!(d.its, [Its { path: "/intc@8000000/its@8080000".to_string(), regs: r(0x808_0000, 0x2_0000), phandle: Some(d.its[0].phandle.unwrap()) }]);

    assert_eq!(d.pci_hosts.len(), 2, "the disabled host bridge is skipped");
    let a = &d.pci_hosts[0];
    assert_eq!(a.path, "/pcie@10000000");
    assert_eq!(a.ecam, r(0x40_1000_0000, 0x1000_0000), "reg decoded with the parent's cells");
    assert_eq!((a.bus_start, a.bus_end, a.bus_range_clamped), (0, 0xff, false));
    assert_eq!(a.domain, Some(0));
    assert!(a.coherent);
    assert_eq!(
        a.windows,
        [
            Window { cpu: PhysAddr(0x1000_0000), pci: 0x1000_0000, size: 0x2eff_0000, prefetchable: false, mem64: false },
            Window { cpu: PhysAddr(0x80_0000_0000), pci: 0x80_0000_0000, size: 0x80_0000_0000, prefetchable: true, mem64: true },
        ],
        "I/O space dropped"
    );
    assert_eq!(a.iommu_map.entries.len(), 2);
    assert_eq!(a.iommu_map.entries[0].target, Some(0));
    assert_eq!(a.iommu_map.entries[1].target, None, "a disabled SMMU is not a target");
    assert_eq!(a.iommu_map.mask, Some(0xfff8));
    assert_eq!(a.msi_map.entries[0].target, Some(0));
    assert_eq!(a.rid_to_msi(0x123), Some((0, 0x123)));
    let chains: Vec<(&str, Vec<u16>, Option<u32>)> =
        a.nodes.iter().map(|n| (n.path.as_str(), n.chain.iter().map(|b| b.rid()).collect(), n.isolation_group)).collect();
    assert_eq!(
        chains,
        [
            ("/pcie@10000000/edu@1,0", vec![0x08], Some(7)),
            ("/pcie@10000000/port@2,0", vec![0x10], None),
            ("/pcie@10000000/port@2,0/edu@0,0", vec![0x10, 0x100], None),
        ]
    );

    let b = &d.pci_hosts[1];
    assert_eq!(b.path, "/soc/pcie@20000000");
    assert_eq!(b.ecam, r(0x50_2000_0000, 0x80_0000), "translated through /soc ranges");
    assert_eq!((b.bus_start, b.bus_end), (0x10, 0x17), "bus-range reduced to the 8 buses the ECAM holds");
    assert!(b.bus_range_clamped);
    assert_eq!(b.windows, [Window { cpu: PhysAddr(0x50_3000_0000), pci: 0x3000_0000, size: 0x100_0000, prefetchable: false, mem64: false }]);
    assert_eq!(b.iommu_map.entries[0].target, Some(1));

    type Master<'a> = (&'a str, Vec<(Option<usize>, u32)>, Option<u32>);
    let m: Vec<Master<'_>> = d.masters.iter().map(|m| (m.path.as_str(), m.iommus.iter().map(|i| (i.smmu, i.sid)).collect(), m.isolation_group)).collect();
    assert_eq!(
        m,
        [
            ("/soc/dma@1000", vec![(Some(1), 0x42)], None),
            ("/dma@9200000", vec![(Some(0), 0x100), (Some(0), 0x101)], None),
            ("/dma@9210000", vec![(Some(0), 0x100)], Some(7)),
            ("/dma@9220000", vec![(None, 0x5)], None),
            ("/dma@9230000", vec![(None, 0x9)], None),
            ("/fw-cfg@9020000", vec![], None),
        ]
    );
}

#[test]
fn rid_to_sid_follows_iommu_map_and_refuses_the_rest() {
    let d = discover_dts(BOARD).unwrap();
    let a = &d.pci_hosts[0];
    // The mask 0xfff8 folds the functions of a device onto one StreamID.
    assert_eq!(a.rid_to_sid(0x0009, 16), Ok((0, 0x0008)));
    assert_eq!(a.rid_to_sid(0x0100, 16), Ok((0, 0x0100)));
    assert_eq!(a.rid_to_sid(0x8001, 16), Err(Unmapped::NotAnSmmu { phandle: a.iommu_map.entries[1].phandle }));
    assert_eq!(a.rid_to_sid(0x9000, 16), Err(Unmapped::NotCovered { rid: 0x9000 }));
    assert_eq!(a.rid_to_sid(0x0100, 8), Err(Unmapped::SidTooLarge { sid: 0x100, sid_bits: 8 }));
    let b = &d.pci_hosts[1];
    assert_eq!(b.rid_to_sid(0x1000, 16), Ok((1, 0x20)));
    assert_eq!(b.rid_to_sid(0x1fff, 16), Ok((1, 0x101f)));
    assert_eq!(b.rid_to_sid(0x0fff, 16), Err(Unmapped::NotCovered { rid: 0x0fff }));
    let mut none = b.clone();
    none.iommu_map.entries.clear();
    assert_eq!(none.rid_to_sid(0x1000, 16), Err(Unmapped::NoIommuMap));
}

/// Edits BOARD, checks the edit applied, and returns the error.
fn err(old: &str, new: &str) -> (std::string::String, &'static str) {
    let src = BOARD.replacen(old, new, 1);
    assert_ne!(src, BOARD, "edit {old:?} did not apply");
    match discover_dts(&src) {
        Err(DtError::BadProperty { node, prop, .. }) => (node.as_str().to_string(), prop),
        other => panic!("{old:?} -> {new:?}: {other:?}"),
    }
}

#[test]
fn malformed_properties_name_node_and_property() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("iommu-map = <0x0 &smmu 0x0 0x8000 ", "iommu-map = <0x0 &smmu 0x0 ", "pcie@10000000", "iommu-map"),
        ("iommu-map = <0x0 &smmu 0x0 0x8000 ", "iommu-map = <0x0 0x4242 0x0 0x8000 ", "pcie@10000000", "iommu-map"),
        ("iommu-map = <0x0 &smmu 0x0 0x8000 ", "iommu-map = <0x1 &smmu 0x0 0x8000 ", "pcie@10000000", "iommu-map"),
        ("iommu-map-mask = <0xfff8>;", "iommu-map-mask = <0xfff8 0>;", "pcie@10000000", "iommu-map-mask"),
        ("msi-map = <0x0 &its 0x0 0x10000>;", "msi-map = <0x0 &its 0x0>;", "pcie@10000000", "msi-map"),
        ("bus-range = <0x0 0xff>;", "bus-range = <0x0>;", "pcie@10000000", "bus-range"),
        ("bus-range = <0x0 0xff>;", "bus-range = <0x2 0x1>;", "pcie@10000000", "bus-range"),
        ("bus-range = <0x0 0xff>;", "bus-range = <0x0 0x100>;", "pcie@10000000", "bus-range"),
        ("0x43000000 0x80 0x0 0x80 0x0 0x80 0x0>;", "0x43000000 0x80 0x0 0x80 0x0 0x80>;", "pcie@10000000", "ranges"),
        ("reg = <0x40 0x10000000 0x0 0x10000000>;", "reg = <0x40 0x10000000 0x0 0x1000>;", "pcie@10000000", "reg"),
        ("reg = <0x40 0x10000000 0x0 0x10000000>;", "", "pcie@10000000", "reg"),
        ("edu@1,0 { reg = <0x0800 0 0 0 0>;", "edu@1,0 { reg = <0x0800>;", "edu@1,0", "reg"),
        ("bulkhead,isolation-group = <7>; };\n        port", "bulkhead,isolation-group = <7 8>; };\n        port", "edu@1,0", "bulkhead,isolation-group"),
        ("iommus = <&smmu 0x100 &smmu 0x101>;", "iommus = <&smmu 0x100 &smmu>;", "dma@9200000", "iommus"),
        ("iommus = <&smmu 0x100 &smmu 0x101>;", "iommus = <0x4242 0x100>;", "dma@9200000", "iommus"),
        ("iommus = <&smmu 0x100 &smmu 0x101>;", "iommus = <&gic 0x100>;", "dma@9200000", "iommus"),
        ("#iommu-cells = <1>; dma-coherent; };", "#iommu-cells = <2>; dma-coherent; };", "pcie@10000000", "iommu-map"),
        ("ranges = <0x0 0x50 0x0 0x40000000>;", "", "soc", "ranges"),
        ("ranges = <0x0 0x50 0x0 0x40000000>;", "ranges = <0x0 0x50 0x0 0x100000>;", "soc", "ranges"),
    ];
    for (old, new, node, prop) in cases {
        assert_eq!(err(old, new), (node.to_string(), *prop), "{old:?} -> {new:?}");
    }
    // The GIC: more redistributor regions than reg entries.
    let src = BOARD.replacen("ranges;\n        reg = <0x0 0x8000000", "ranges; #redistributor-regions = <3>;\n        reg = <0x0 0x8000000", 1);
    assert!(matches!(discover_dts(&src), Err(DtError::BadProperty { prop: "reg", .. })));
}

#[test]
fn a_tree_without_pci_or_gic_is_empty() {
    let d = discover_dts("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>; };").unwrap();
    assert_eq!(d, Discovery::default());
}

/// The walk reads each node's properties once (`Facts::of`): what it sees
/// is what a lookup each (`DtNode::prop`, `has`, `is_compatible`) sees,
/// the first of a repeated name included.
#[test]
fn one_pass_reads_what_lookups_read() {
    let repeated = forced_dtb(
        r#"/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;
        a { status = "disabled"; status = "okay"; compatible = "x"; compatible = "arm,gic-v3"; phandle = <1>; phandle = <2 3>; };
        b { compatible = "arm,smmu-v3", "simple-bus"; status = "okay"; status = "disabled"; bulkhead,isolation-group = <1 2>;
            bulkhead,isolation-group = <3>; iommus; dma-noncoherent; device_type = "memory"; device_type = [ff]; };
        c { msi-controller; interrupt-controller; dma-coherent; bulkhead,partition; linux,phandle = <5>; linux,phandle = <6>;
            compatible = "", "pci-host-ecam-generic", "arm,armv8-timer", "arm,gic-v3-its"; }; };"#,
    );
    for blob in [dtb(BOARD), include_bytes!("../../tests/data/qemu-virt.dtb").to_vec(), repeated] {
        let dt = DeviceTree::parse(&blob).unwrap();
        let mut nodes = 0;
        dt.walk::<DtError>(&mut |n| {
            let p = Facts::of(n);
            assert_eq!(
                (p.status, p.phandle, p.linux_phandle, p.device_type, p.isolation_group),
                (n.prop("status"), n.prop("phandle"), n.prop("linux,phandle"), n.prop("device_type"), n.prop("bulkhead,isolation-group")),
                "{}",
                n.name()
            );
            assert_eq!(
                [p.msi_controller, p.interrupt_controller, p.dma_coherent, p.dma_noncoherent, p.partition, p.iommus],
                ["msi-controller", "interrupt-controller", "dma-coherent", "dma-noncoherent", "bulkhead,partition", "iommus"].map(|q| n.has(q)),
                "{}",
                n.name()
            );
            let c = |k| n.is_compatible(k);
            let kinds = Kinds {
                ecam: c(ECAM_COMPATIBLE),
                gic_v3: c("arm,gic-v3"),
                timer: c("arm,armv8-timer"),
                its: c("arm,gic-v3-its"),
                smmu_v3: c("arm,smmu-v3"),
                simple_bus: c("simple-bus"),
            };
            assert_eq!(p.compatible, kinds, "{}", n.name());
            nodes += 1;
            Ok(())
        })
        .unwrap();
        assert!(nodes > 3);
    }
}

/// A 32-bit space code whose PCI addresses go past 4 GiB (NXP LS1028A's
/// integrated endpoints and Arm Juno ship such windows; Linux takes them):
/// read as the 64-bit window the addresses say, not refused.
#[test]
fn a_32_bit_space_code_above_4_gib_is_a_64_bit_window() {
    let src = BOARD.replacen("0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000", "0x2000000 0x0 0xf0000000 0x0 0x10000000 0x0 0x2eff0000", 1);
    assert_ne!(src, BOARD);
    let d = discover_dts(&src).unwrap();
    let w = d.pci_hosts[0].windows.iter().find(|w| w.pci == 0xf000_0000).unwrap();
    assert!(w.mem64 && w.size == 0x2eff_0000);
}

const MASTER_IRQS: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };
    mbigen: interrupt-controller@a0080000 { compatible = "hisilicon,mbigen-v2"; interrupt-controller; #interrupt-cells = <2>; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>; #iommu-cells = <1>; };
    dma@1 { iommus = <&smmu 1>; interrupts = <0 10 4 0 11 1 0 10 4>; };
    dma@2 { iommus = <&smmu 2>; interrupt-parent = <&mbigen>; interrupts = <5 4>; interrupts-extended = <&gic 0 12 4>; };
    dma@3 { iommus = <&smmu 3>; interrupt-parent = <&mbigen>; interrupts = <5 4>; };
    dma@4 { iommus = <&smmu 4>; interrupts = <0 13 4 1 7 4>; };
    dma@5 { iommus = <&smmu 5>; interrupts = <2 3 4>; };
    dma@6 { iommus = <&smmu 6>; };
    soc { compatible = "simple-bus"; #address-cells = <2>; #size-cells = <2>; ranges; interrupt-parent = <&mbigen>;
        dma@7 { iommus = <&smmu 7>; interrupts = <6 4>; }; };
    dma@8 { iommus = <&smmu 8>; interrupt-parent = <0x4242>; interrupts = <0 1 4>; };
    dma@9 { iommus = <&smmu 9>; interrupts-extended = <&gic 0 14 4 &mbigen 7 4>; };
    mb { compatible = "simple-bus"; #address-cells = <2>; #size-cells = <2>; ranges;
        #interrupt-cells = <1>; interrupt-map-mask = <0 0 63>; interrupt-map = <0 0 5 &gic 0 5 4>;
        dma@a { iommus = <&smmu 10>; interrupts = <5>; }; };
};
"#;

/// A master's interrupts: its SPIs each once in order, `interrupts-extended`
/// over `interrupts`, an inherited `interrupt-parent`; what cannot be
/// forwarded recorded (the tree still reads), named by property.
#[test]
fn masters_carry_their_spis_and_what_cannot_be_forwarded() {
    let d = discover_dts(MASTER_IRQS).unwrap();
    let of = |path: &str| d.masters.iter().find(|m| m.path == path).unwrap_or_else(|| panic!("{path}"));
    let spis = |path: &str| of(path).interrupts.iter().map(|i| (i.intid, i.edge)).collect::<Vec<_>>();
    let why = |path: &str| of(path).unforwardable.map(|n| (n.property, n.reason));
    assert_eq!((spis("/dma@1"), why("/dma@1")), (vec![(42, false), (43, true)], None), "SPI 10 listed twice is one line");
    assert_eq!((spis("/dma@2"), why("/dma@2")), (vec![(44, false)], None), "interrupts-extended wins");
    let mbigen = Unforwardable::Controller(crate::dt::Text::from("interrupt-controller@a0080000").unwrap());
    assert_eq!((spis("/dma@3"), why("/dma@3")), (vec![], Some(("interrupts", mbigen))));
    assert_eq!((spis("/dma@4"), why("/dma@4")), (vec![(45, false)], Some(("interrupts", Unforwardable::Ppi(23)))));
    assert_eq!(why("/dma@5"), Some(("interrupts", Unforwardable::Undecoded)), "an extended SPI");
    assert_eq!((spis("/dma@6"), why("/dma@6")), (vec![], None));
    assert_eq!(why("/soc/dma@7"), Some(("interrupts", mbigen)), "interrupt-parent inherited from the bus");
    assert_eq!(why("/dma@8"), Some(("interrupts", Unforwardable::NoParent)));
    assert_eq!(why("/dma@9"), Some(("interrupts-extended", mbigen)), "one entry elsewhere: the device cannot be given whole");
    let nexus = Unforwardable::Controller(crate::dt::Text::from("mb").unwrap());
    assert_eq!(why("/mb/dma@a"), Some(("interrupts", nexus)), "the parent bus takes specifiers (an interrupt-map nexus), as Linux finds it");
    let said = of("/dma@4").unforwardable.unwrap().to_string();
    assert!(said.contains("interrupts lists PPI 7 (INTID 23)"), "{said}");
}

#[test]
fn malformed_master_interrupts_name_node_and_property() {
    let cases = [
        ("interrupts = <0 10 4 0 11 1 0 10 4>;", "interrupts = <0 10 4 0 11>;", "dma@1", "interrupts"),
        ("interrupts-extended = <&gic 0 12 4>;", "interrupts-extended = <&gic 0 12>;", "dma@2", "interrupts-extended"),
        ("interrupts-extended = <&gic 0 12 4>;", "interrupts-extended = <0x4242 0 12 4>;", "dma@2", "interrupts-extended"),
    ];
    for (old, new, node, prop) in cases {
        let src = MASTER_IRQS.replacen(old, new, 1);
        assert_ne!(src, MASTER_IRQS, "edit {old:?} did not apply");
        match discover_dts(&src) {
            Err(DtError::BadProperty { node: n, prop: p, .. }) => assert_eq!((n.as_str(), p), (node, prop), "{old:?} -> {new:?}"),
            other => panic!("{old:?} -> {new:?}: {other:?}"),
        }
    }
}
