//! The readers on compiled trees: the facts of a `virt`-like board, the
//! top-level index, refusals naming node and property, and corruptions.

use super::check::MAX_TOP;
use super::*;
use crate::addr::PhysRange;
extern crate std;
use std::vec::Vec;

use crate::testutil::dtb;

/// The byte-corruption fuzz below: its seed and number of cases.
pub(super) const DT_FUZZ_SEED: u64 = 0x2545_f491_4f6c_dd1d;
pub(super) const DT_FUZZ_CASES: usize = 20_000;

pub(super) const VIRT: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/ {
    #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    psci { compatible = "arm,psci-1.0"; method = "smc"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
        fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000>; no-map; }; };
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>;
        interrupts = <0 0x4a 1 0 0x4b 1 0 0x4c 1 0 0x4d 1>;
        interrupt-names = "eventq", "priq", "cmdq-sync", "gerror"; dma-coherent; #iommu-cells = <1>; };
    smmu2: smmuv3@9070000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9070000 0x0 0x20000>; status = "disabled"; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; };
    pcie@10000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
        #address-cells = <3>; #size-cells = <2>; reg = <0x40 0x10000000 0x0 0x10000000>;
        ranges = <0x1000000 0x0 0x0 0x0 0x3eff0000 0x0 0x10000
                  0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
                  0x3000000 0x80 0x0 0x80 0x0 0x80 0x0>; };
    chosen { stdout-path = "/pl011@9000000"; bootargs = "bulkhead.selftest=none"; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; reg = <1>; enable-method = "psci"; };
        cpu@2 { device_type = "cpu"; reg = <2>; status = "disabled"; }; };
};
"#;

#[test]
fn stdout_path_names_a_16550() {
    let uart = |props: &str| {
        let src = std::format!(
            r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
                    aliases {{ serial0 = "/serial@fe660000"; }};
                    chosen {{ stdout-path = "serial0:1500000n8"; }};
                    serial@fe660000 {{ reg = <0x0 0xfe660000 0x0 0x100>; {props} }}; }};"#
        );
        DeviceTree::parse(&dtb(&src)).unwrap().stdout_uart().map_err(|e| std::format!("{e}"))
    };
    let base = PhysAddr(0xfe66_0000);
    assert_eq!(
        uart(r#"compatible = "rockchip,rk3568-uart", "snps,dw-apb-uart"; reg-shift = <2>; reg-io-width = <4>;"#),
        Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 2, width: 4 } }))
    );
    assert_eq!(uart(r#"compatible = "ns16550a";"#), Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 0, width: 1 } })));
    assert_eq!(uart(r#"compatible = "arm,pl011", "arm,primecell";"#), Ok(Some(Uart::pl011(base))));
    assert_eq!(uart(r#"compatible = "vendor,other-uart";"#), Ok(None), "an unknown UART is not used");
    let e = uart(r#"compatible = "ns16550a"; reg-io-width = <4>;"#).unwrap_err();
    assert!(e.contains("serial@fe660000") && e.contains("reg-io-width"), "{e}");
}

#[test]
fn reads_the_virt_facts() {
    let blob = dtb(VIRT);
    let dt = DeviceTree::parse(&blob).unwrap();
    assert_eq!(dt.memory().unwrap().as_slice(), &[PhysRange::new(0x4000_0000, 0x8000_0000).unwrap()]);
    assert_eq!(dt.memreserve().collect::<Vec<_>>(), [PhysRange::new(0x4800_0000, 0x1000).unwrap()]);
    assert_eq!(dt.reserved_memory().unwrap().as_slice(), &[PhysRange::new(0x5000_0000, 0x10_0000).unwrap()]);
    let cpus = dt.cpus().unwrap();
    assert_eq!(cpus.len(), 2);
    assert_eq!(cpus[1], CpuNode { mpidr: 1, psci: true });
    assert_eq!(dt.stdout_uart().unwrap(), Some(Uart::pl011(PhysAddr(0x900_0000))));
    assert_eq!(dt.bootargs().unwrap(), "bulkhead.selftest=none");
    assert_eq!(dt.psci().unwrap(), Some(PsciConduit::Smc));
    let smmus = dt.smmus().unwrap();
    assert_eq!(smmus.len(), 1, "disabled SMMU skipped");
    let s = &smmus[0];
    assert_eq!(s.regs, PhysRange::new(0x905_0000, 0x2_0000).unwrap());
    assert_eq!(s.eventq, Some(Irq { intid: 32 + 0x4a, edge: true }));
    assert_eq!(s.gerror, Some(Irq { intid: 32 + 0x4d, edge: true }));
    assert!(s.coherent && !s.msi);
    let mmio = dt.mmio_regions().unwrap();
    assert!(mmio.contains(&PhysRange::new(0x40_1000_0000, 0x1000_0000).unwrap()), "ECAM from reg with parent cells");
    assert!(mmio.contains(&PhysRange::new(0x80_0000_0000, 0x80_0000_0000).unwrap()), "64-bit window");
    assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x3eff_0000)), "I/O space is not MMIO");
    assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x4000_0000)), "memory is not MMIO");
}

/// The top-level readers give the same from the check's index as from
/// walking the root's children, and a root with more children than the
/// index holds is walked (with the same answers).
#[test]
fn top_level_index_and_walk_agree() {
    let mut many = std::string::String::from(VIRT);
    let extra: std::string::String =
        (0..MAX_TOP).map(|i| std::format!("    extra@{i:x} {{ reg = <0x0 {:#x} 0x0 0x1000>; }};\n", 0x2000_0000 + i * 0x1000)).collect();
    many = many.replacen("    chosen", &std::format!("{extra}    chosen"), 1);
    for (src, indexed) in [(VIRT, true), (many.as_str(), false)] {
        let blob = dtb(src);
        let dt = DeviceTree::parse(&blob).unwrap();
        assert_eq!(dt.top.complete, indexed);
        let walked = DeviceTree { top: TopIndex::NONE, ..dt };
        let names = |t: &DeviceTree<'_>| t.top_places().map(|p| t.blob.name(p).to_vec()).collect::<Vec<_>>();
        let root = dt.root();
        let children: Vec<_> = root.child_places(root.scan().2).map(|p| dt.blob.name(p).to_vec()).collect();
        assert_eq!(names(&dt), children);
        assert_eq!(names(&walked), children);
        for t in [&dt, &walked] {
            assert_eq!(t.memory().unwrap().as_slice(), dt.memory().unwrap().as_slice());
            assert_eq!(std::format!("{:?}", t.mmio_regions()), std::format!("{:?}", dt.mmio_regions()));
            assert_eq!(t.bootargs().unwrap(), "bulkhead.selftest=none");
            assert_eq!(t.psci().unwrap(), Some(PsciConduit::Smc));
            assert_eq!(t.cpus().unwrap().len(), 2);
            assert!(t.find("/chosen").unwrap().is_some() && t.find("/nowhere").unwrap().is_none());
        }
        // The extra nodes are nothing the kernel touches: not mapped.
        assert_eq!(dt.mmio_regions().unwrap().len(), walked.mmio_regions().unwrap().len());
    }
}

#[test]
fn bad_reg_names_node_and_property() {
    let blob = dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;
        memory@0 { device_type = \"memory\"; reg = <0x0 0x40000000 0x0>; }; cpus { }; };");
    let dt = DeviceTree::parse(&blob).unwrap();
    match dt.memory().unwrap_err() {
        DtError::BadProperty { node, prop, .. } => {
            assert_eq!(node.as_str(), "memory@0");
            assert_eq!(prop, "reg");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn header_checks() {
    let blob = dtb(VIRT);
    let head: [u8; 8] = blob[..8].try_into().unwrap();
    assert_eq!(DeviceTree::blob_size(PhysAddr(0), &head).unwrap(), blob.len());
    let mut bad = head;
    bad[0] = 0;
    assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &bad), Err(DtError::NoHeader { .. })));
    let mut huge = head;
    huge[4] = 0x7f;
    assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &huge), Err(DtError::BadSize { .. })));
}

/// Every truncation and many byte corruptions of a real blob give a
/// result or an error, never a panic.
#[test]
fn corrupted_blobs_never_panic() {
    let blob = dtb(VIRT);
    let check = |b: &[u8]| {
        if let Ok(dt) = DeviceTree::parse(b) {
            let _ = dt.memory();
            let _ = dt.cpus();
            let _ = dt.smmus();
            let _ = dt.mmio_regions();
            let _ = dt.stdout_uart();
            let _ = dt.reserved_memory();
            let _ = dt.memreserve().count();
            let _ = dt.bootargs();
        }
    };
    for len in 0..blob.len() {
        check(&blob[..len]);
    }
    for b in crate::testutil::byte_corruptions(&blob, DT_FUZZ_SEED, DT_FUZZ_CASES) {
        check(&b);
    }
}
