//! The reading rules real boards' trees need (issue 14), each on a small
//! tree shaped as the board's own: long property names, `reg` through
//! parent buses' `ranges`, interrupts through `interrupt-parent` (3 and 4
//! cells, `interrupts-extended`, a non-GIC parent), disabled SMMUs and an
//! overlay enabling one, `/memory` left to the bootloader, many
//! `/reserved-memory` regions, and the consoles `stdout-path` names.

use super::*;
use crate::addr::PhysRange;
use crate::machine::Machine;
use crate::testutil::{dtb, dtc};
extern crate std;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

fn r(base: u64, size: u64) -> PhysRange {
    PhysRange::new(base, size).unwrap()
}

fn machine(dts: &str) -> Machine {
    let blob = dtb(dts);
    let dt = DeviceTree::parse(&blob).unwrap();
    Machine::read(&dt).unwrap_or_else(|e| panic!("{e:?}"))
}

/// An i.MX95 / TI K3-like SoC: SMMU, GIC, PCIe host, UART and a DMA
/// master under buses whose `ranges` move addresses (not identity), one
/// bus nested in another.
const NESTED: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    memory@80000000 { device_type = "memory"; reg = <0x0 0x80000000 0x0 0x80000000>; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; enable-method = "psci"; };
        cpu@100 { device_type = "cpu"; reg = <0x100>; enable-method = "psci"; }; };
    aliases { serial2 = "/bus@100000/bus@2000000/serial@800000"; };
    chosen { stdout-path = "serial2:1500000n8"; };
    bus@100000 { compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>;
        ranges = <0x0 0x0 0x10000000 0x40000000>;
        gic: interrupt-controller@1800000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
            reg = <0x1800000 0x10000 0x1900000 0x100000>; };
        bus@2000000 { compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>;
            ranges = <0x0 0x2000000 0x1000000>;
            serial@800000 { compatible = "ti,j721e-uart", "ti,am654-uart"; reg = <0x800000 0x200>; }; };
        smmu: iommu@6600000 { compatible = "arm,smmu-v3"; reg = <0x6600000 0x100000>; #iommu-cells = <1>;
            interrupts = <0 772 4>, <0 768 4>; interrupt-names = "eventq", "gerror"; };
        dma@3000000 { reg = <0x3000000 0x1000>; iommus = <&smmu 0x9>; };
        pcie@8000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
            #address-cells = <3>; #size-cells = <2>; reg = <0x8000000 0x1000000>; bus-range = <0x0 0xf>;
            ranges = <0x2000000 0x0 0x20000000 0x20000000 0x0 0x1000000>;
            iommu-map = <0x0 &smmu 0x10000 0x10000>; };
    };
};
"#;

#[test]
fn reg_is_translated_through_every_parent_bus() {
    let m = machine(NESTED);
    // Bus 0x0.. → 0x1000_0000..; the inner bus adds 0x200_0000.
    assert_eq!(m.smmus[0].regs, r(0x1660_0000, 0x10_0000));
    assert_eq!(m.console, Some(Uart { base: PhysAddr(0x1280_0000), kind: UartKind::Ns16550 { shift: 2, width: 1 } }));
    let gic = m.devices.gic.as_ref().expect("the GIC under the bus");
    assert_eq!(gic.distributor, r(0x1180_0000, 0x1_0000));
    let host = &m.devices.pci_hosts[0];
    assert_eq!(host.ecam, r(0x1800_0000, 0x100_0000));
    let master = m.devices.masters.iter().find(|x| x.path.ends_with("dma@3000000")).expect("the DMA master");
    assert_eq!((master.iommus[0].smmu, master.iommus[0].sid), (Some(0), 0x9));
    // The identity map holds what the kernel touches, at CPU addresses.
    for want in [r(0x1660_0000, 0x10_0000), r(0x1280_0000, 0x200), r(0x1800_0000, 0x100_0000)] {
        assert!(m.mmio.iter().any(|x| x.covers(&want)), "{want} not mapped: {:?}", m.mmio);
    }
}

#[test]
fn a_bus_that_does_not_reach_the_cpu_is_named() {
    // No `ranges`: the bus's children are not in the CPU's space.
    let dts = NESTED.replace("ranges = <0x0 0x0 0x10000000 0x40000000>;", "");
    let blob = dtb(&dts);
    let e = DeviceTree::parse(&blob).unwrap().smmus().unwrap_err().to_string();
    assert_eq!(e, "node bus@100000: property ranges: missing: the addresses of its children do not reach the CPU");
    // A window that does not cover the child.
    let dts = NESTED.replace("ranges = <0x0 0x0 0x10000000 0x40000000>;", "ranges = <0x0 0x0 0x10000000 0x100000>;");
    let blob = dtb(&dts);
    let e = DeviceTree::parse(&blob).unwrap().smmus().unwrap_err().to_string();
    assert_eq!(e, "node bus@100000: property ranges: does not cover a child's address");
}

#[test]
fn property_names_longer_than_31_characters_are_read() {
    // libfdt and dtc take any length; Linux's trees have 32-40 character
    // names (DWC3 quirks, simple-audio-card, __symbols__ labels).
    let long = "snps,dis-u2-freeclk-exists-quirk";
    let longer = "x".repeat(200);
    let dts = format!(
        r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
        memory@0 {{ device_type = "memory"; reg = <0x0 0x0 0x0 0x10000000>; }};
        usb@1000 {{ reg = <0x0 0x1000 0x0 0x100>; {long}; {longer} = "v"; }};
        cpus {{ #address-cells = <1>; #size-cells = <0>; cpu@0 {{ device_type = "cpu"; reg = <0>; }}; }};
        __symbols__ {{ simple_audio_card_bitclock_inversion_codec_dai = "/usb@1000"; }}; }};"#
    );
    let blob = dtb(&dts);
    let dt = DeviceTree::parse(&blob).unwrap_or_else(|e| panic!("{e}"));
    let usb = dt.find("/usb@1000").unwrap().unwrap();
    assert!(usb.has(long));
    assert_eq!(usb.prop(&longer), Some(&b"v\0"[..]));
    assert_eq!(dt.memory().unwrap().as_slice(), &[r(0, 0x1000_0000)]);
}

/// A tree with one SMMU whose `interrupts` go through `parent`.
fn smmu_irqs(controllers: &str, smmu_irq: &str) -> Result<SmmuNode, String> {
    let dts = format!(
        r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
        {controllers}
        iommu@d0040000 {{ compatible = "arm,smmu-v3"; reg = <0x0 0xd0040000 0x0 0x20000>; {smmu_irq} }}; }};"#
    );
    let blob = dtb(&dts);
    let dt = DeviceTree::parse(&blob).unwrap();
    dt.smmus().map(|s| s[0].clone()).map_err(|e| e.to_string())
}

const GIC3: &str = r#"gic: interrupt-controller@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
    reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };"#;
const GIC4: &str = r#"gic: interrupt-controller@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <4>; interrupt-controller;
    reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };"#;

#[test]
fn smmu_interrupts_follow_the_interrupt_parent() {
    let spi = |n: u32| Some(Irq { intid: 32 + n, edge: true });
    // 3 cells, four names in another order than the binding's.
    let s = smmu_irqs(
        GIC3,
        r#"interrupt-parent = <&gic>; interrupts = <0 2 1>, <0 1 1>, <0 4 1>, <0 3 1>; interrupt-names = "gerror", "eventq", "cmdq-sync", "priq";"#,
    )
    .unwrap();
    assert_eq!((s.eventq, s.gerror, s.cmdq_sync, s.priq, s.irqs.clone()), (spi(1), spi(2), spi(4), spi(3), SmmuIrqs::Wired));
    // 4 cells (the fourth a PPI partition phandle, 0 for SPIs), two names.
    let s = smmu_irqs(GIC4, r#"interrupt-parent = <&gic>; interrupts = <0 1 1 0>, <0 2 1 0>; interrupt-names = "eventq", "gerror";"#).unwrap();
    assert_eq!((s.eventq, s.gerror, s.priq), (spi(1), spi(2), None));
    // One combined interrupt, through interrupts-extended.
    let s = smmu_irqs(GIC3, r#"interrupts-extended = <&gic 0 5 4>; interrupt-names = "combined";"#).unwrap();
    assert_eq!((s.combined, s.eventq), (Some(Irq { intid: 37, edge: false }), None));
    // The parent inherited from the root.
    let s = smmu_irqs(&format!("interrupt-parent = <&gic>; {GIC3}"), r#"interrupts = <0 1 1>; interrupt-names = "eventq";"#).unwrap();
    assert_eq!(s.eventq, spi(1));
    // hip07: the SMMU's interrupts go to an mbigen, not the GIC: read,
    // not refused, with where they go.
    let mbigen = r#"mbigen: intc_smmu_alg { compatible = "hisilicon,mbigen-v2"; interrupt-controller; #interrupt-cells = <2>; };"#;
    let s = smmu_irqs(mbigen, r#"interrupt-parent = <&mbigen>; interrupts = <733 1>; msi-parent = <&mbigen 0x40b1c>;"#).unwrap();
    assert_eq!((s.irqs.clone(), s.eventq, s.msi), (SmmuIrqs::NotWired(text("intc_smmu_alg")), None, true));
    let s = smmu_irqs(mbigen, r#"interrupts-extended = <&mbigen 733 1>;"#).unwrap();
    assert_eq!(s.irqs, SmmuIrqs::NotWired(text("intc_smmu_alg")));
    // No interrupts at all.
    assert_eq!(smmu_irqs(GIC3, "").unwrap().irqs, SmmuIrqs::None);
    // What is malformed is still refused, by node and property.
    let e = smmu_irqs(GIC3, r#"interrupt-parent = <&gic>; interrupts = <0 1>;"#).unwrap_err();
    assert!(e.starts_with("node iommu@d0040000: property interrupts: "), "{e}");
    let e = smmu_irqs(GIC3, r#"interrupts-extended = <&gic 0 5>;"#).unwrap_err();
    assert!(e.starts_with("node iommu@d0040000: property interrupts-extended: "), "{e}");
}

/// RK3588-like: two SMMUs the tree disables, one of them under a disabled
/// bus, and a master behind one of them.
const DISABLED: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    memory@0 { device_type = "memory"; reg = <0x0 0x0 0x0 0x40000000>; };
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
    mmu600_pcie: iommu@fc900000 { compatible = "arm,smmu-v3"; reg = <0x0 0xfc900000 0x0 0x200000>; #iommu-cells = <1>; status = "disabled"; };
    bus@fcb00000 { compatible = "simple-bus"; #address-cells = <2>; #size-cells = <2>; ranges; status = "disabled";
        mmu600_php: iommu@fcb00000 { compatible = "arm,smmu-v3"; reg = <0x0 0xfcb00000 0x0 0x200000>; #iommu-cells = <1>; }; };
    dma@fe000000 { reg = <0x0 0xfe000000 0x0 0x1000>; iommus = <&mmu600_pcie 0x3>; };
};
"#;

#[test]
fn disabled_smmus_are_listed_apart_and_an_overlay_enables_one() {
    let m = machine(DISABLED);
    assert!(m.smmus.is_empty());
    let why: Vec<(&str, &str, Option<PhysRange>)> = m.disabled_smmus.iter().map(|s| (s.name.as_str(), s.why, s.regs)).collect();
    assert_eq!(
        why,
        [
            ("iommu@fc900000", "status is not \"okay\"", Some(r(0xfc90_0000, 0x20_0000))),
            ("iommu@fcb00000", "a parent node is disabled", Some(r(0xfcb0_0000, 0x20_0000))),
        ]
    );
    // Its master names a node that is not an enabled SMMU.
    let dma = m.devices.masters.iter().find(|x| x.path == "/dma@fe000000").expect("the master");
    assert_eq!(dma.iommus[0].smmu, None);
    // A disabled SMMU's registers are still mapped: an overlay the kernel
    // merges may enable it.
    assert!(m.mmio.iter().any(|x| x.covers(&r(0xfc90_0000, 0x20_0000))));

    let base = dtb(DISABLED);
    let overlay = dtc(&["-@"], "/dts-v1/; /plugin/; &{/iommu@fc900000} { status = \"okay\"; };");
    let merged = crate::overlay::apply(&base, &[&overlay]).unwrap();
    let dt = DeviceTree::parse(&merged).unwrap();
    let m = Machine::read(&dt).unwrap();
    assert_eq!(m.smmus.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["iommu@fc900000"]);
    assert_eq!(m.disabled_smmus.len(), 1);
    let dma = m.devices.masters.iter().find(|x| x.path == "/dma@fe000000").unwrap();
    assert_eq!((dma.iommus[0].smmu, dma.iommus[0].sid), (Some(0), 3));
}

#[test]
fn memory_the_bootloader_fills_in_is_no_ram() {
    let tree = |memory: &str| {
        machine(&format!(
            r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>; {memory}
            cpus {{ #address-cells = <1>; #size-cells = <0>; cpu@0 {{ device_type = "cpu"; reg = <0>; }}; }}; }};"#
        ))
        .ram
    };
    assert!(tree("").is_empty(), "no /memory");
    assert!(tree(r#"memory { device_type = "memory"; reg = <0x0 0x0 0x0 0x0>; };"#).is_empty(), "size 0 (RK3588's dtsi)");
    assert_eq!(
        tree(r#"memory@0 { device_type = "memory"; reg = <0x0 0x0 0x0 0x0  0x0 0x40000000 0x0 0x1000>; };"#).as_slice(),
        &[r(0x4000_0000, 0x1000)],
        "an empty bank beside a real one"
    );
}

#[test]
fn reserved_memory_holds_what_real_boards_reserve() {
    let tree = |n: usize| {
        let regions: String =
            (0..n).map(|i| format!("r@{:x} {{ reg = <0x0 {:#x} 0x0 0x1000>; no-map; }};\n", 0x9000_0000 + i * 0x1000, 0x9000_0000 + i * 0x1000)).collect();
        let dts = format!(
            r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
            reserved-memory {{ #address-cells = <2>; #size-cells = <2>; ranges; {regions}
                dynamic {{ size = <0x0 0x100000>; alloc-ranges = <0x0 0x80000000 0x0 0x10000000>; }}; }}; }};"#
        );
        let blob = dtb(&dts);
        DeviceTree::parse(&blob).unwrap().reserved_memory().map(|r| r.len()).map_err(|e| e.to_string())
    };
    // TI's BeagleBone AI-64 has 20 and more; the kernel holds 64.
    assert_eq!(tree(MAX_RESERVED), Ok(MAX_RESERVED));
    assert_eq!(tree(MAX_RESERVED + 1), Err("device tree has too many reserved-memory regions".to_string()));
}

/// The console `stdout-path` names, in a tree with aliases and a bus.
fn console(stdout_path: &str, uart: &str) -> Result<Option<Uart>, String> {
    let dts = format!(
        r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
        aliases {{ serial0 = &uart0; serial2 = "/soc/bus@44000000/serial@380000"; }};
        chosen {{ stdout-path = "{stdout_path}"; }};
        soc {{ compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>; ranges = <0x0 0x0 0x0 0x80000000>;
            bus@44000000 {{ compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>; ranges = <0x0 0x44000000 0x1000000>;
                serial@380000 {{ reg = <0x380000 0x1000>; {uart} }}; }};
            uart0: serial@9000000 {{ compatible = "arm,pl011", "arm,primecell"; reg = <0x9000000 0x1000>; }}; }}; }};"#
    );
    let blob = dtb(&dts);
    DeviceTree::parse(&blob).unwrap().stdout_uart().map_err(|e| e.to_string())
}

#[test]
fn the_console_is_found_by_path_or_alias_and_translated() {
    let lpuart = r#"compatible = "fsl,imx95-lpuart", "fsl,imx8ulp-lpuart", "fsl,imx7ulp-lpuart";"#;
    let at = PhysAddr(0x4438_0000);
    let want = Ok(Some(Uart { base: at, kind: UartKind::Lpuart { offset: 0x10 } }));
    // The alias form with the firmware's options, a path with options, a
    // path without, and the unit address left out where it is unique.
    for path in ["serial2:115200n8", "serial2", "/soc/bus@44000000/serial@380000:115200", "/soc/bus@44000000/serial@380000", "/soc/bus@44000000/serial"] {
        assert_eq!(console(path, lpuart), want, "{path}");
    }
    // An alias that is a phandle's path (dtc writes `&label` as the path).
    assert_eq!(console("serial0:115200n8", ""), Ok(Some(Uart::pl011(PhysAddr(0x900_0000)))));
    // Nothing, or an alias nobody defined: no console from the tree.
    assert_eq!(console("serial7", lpuart), Ok(None));
    assert_eq!(console("/soc/nothing@0", lpuart), Ok(None));
}

#[test]
fn the_consoles_real_boards_use() {
    let at = PhysAddr(0x4438_0000);
    let kind = |uart: &str| console("serial2:1500000n8", uart).map(|u| u.map(|u| (u.base, u.kind)));
    // NXP LPUART: the 32-bit block after VERID/PARAM/GLOBAL/PINCFG from
    // i.MX7ULP on, at 0 on LS1028A.
    assert_eq!(kind(r#"compatible = "fsl,imx8ulp-lpuart", "fsl,imx7ulp-lpuart";"#), Ok(Some((at, UartKind::Lpuart { offset: 0x10 }))));
    assert_eq!(kind(r#"compatible = "fsl,ls1028a-lpuart";"#), Ok(Some((at, UartKind::Lpuart { offset: 0 }))));
    // TI's 8250 variants: registers 4 bytes apart unless the node says.
    assert_eq!(kind(r#"compatible = "ti,j721e-uart", "ti,am654-uart";"#), Ok(Some((at, UartKind::Ns16550 { shift: 2, width: 1 }))));
    assert_eq!(kind(r#"compatible = "ti,am654-uart"; reg-shift = <2>; reg-io-width = <4>;"#), Ok(Some((at, UartKind::Ns16550 { shift: 2, width: 4 }))));
    // RK3588's DesignWare 16550.
    assert_eq!(
        kind(r#"compatible = "rockchip,rk3588-uart", "snps,dw-apb-uart"; reg-shift = <2>; reg-io-width = <4>;"#),
        Ok(Some((at, UartKind::Ns16550 { shift: 2, width: 4 })))
    );
    // hip07's SBSA generic UART.
    assert_eq!(kind(r#"compatible = "arm,sbsa-uart";"#), Ok(Some((at, UartKind::SbsaUart))));
    // Widths the console cannot drive are refused by node and property.
    let e = kind(r#"compatible = "snps,dw-apb-uart"; reg-shift = <0>; reg-io-width = <4>;"#).unwrap_err();
    assert!(e.starts_with("node serial@380000: property reg-io-width: "), "{e}");
    let e = kind(r#"compatible = "snps,dw-apb-uart"; reg-shift = <9>;"#).unwrap_err();
    assert!(e.starts_with("node serial@380000: property reg-shift: "), "{e}");
}

#[test]
fn nodes_of_a_functions_own_buses_are_not_pci_functions() {
    // NXP LS1028A: the ENETC's MDIO bus and its PHY below a PCI function.
    let m = machine(
        r#"/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;
        cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
        pcie@1f0000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
            #address-cells = <3>; #size-cells = <2>; reg = <0x1 0xf0000000 0x0 0x100000>; bus-range = <0x0 0x0>;
            ranges = <0x82000000 0x1 0xf8000000 0x1 0xf8000000 0x0 0x160000>;
            ethernet@0,0 { reg = <0x0 0x0 0x0 0x0 0x0>;
                mdio { #address-cells = <1>; #size-cells = <0>; ethernet-phy@2 { reg = <0x2>; }; }; };
            ethernet@0,1 { reg = <0x100 0x0 0x0 0x0 0x0>; }; }; };"#,
    );
    let host = &m.devices.pci_hosts[0];
    let paths: Vec<&str> = host.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["/pcie@1f0000000/ethernet@0,0", "/pcie@1f0000000/ethernet@0,1"]);
    // Its window: a 32-bit space code with addresses above 4 GiB, read as
    // a 64-bit window as Linux reads it.
    assert!(host.windows[0].mem64 && host.windows[0].cpu == PhysAddr(0x1_f800_0000), "{:?}", host.windows);
}
