//! PCI legacy interrupts: a host bridge's `interrupt-map` read as QEMU
//! `virt` and real hosts write it, and the swizzle through bridges.

use super::*;
use crate::pci::{Bdf, Function, FunctionKind, HostTopology};
use crate::testutil::dtb;
extern crate std;
use std::format;
use std::string::String;

/// QEMU `virt`'s map: slot (device & 3) and pin → SPI 3 + (slot + pin - 1) % 4,
/// the GIC with two address cells (it has ITS children).
fn virt_like(map_extra: &str) -> String {
    let mut entries = String::new();
    for slot in 0..4u32 {
        for pin in 1..=4u32 {
            let spi = 3 + (slot + pin - 1) % 4;
            entries += &format!(" {:#x} 0 0 {pin} &gic 0 0 0 {spi} 4", slot << 11);
        }
    }
    format!(
        r#"/dts-v1/;
/ {{ #address-cells = <2>; #size-cells = <2>;
    gic: intc@8000000 {{ compatible = "arm,gic-v3"; #interrupt-cells = <3>; #address-cells = <2>; #size-cells = <2>;
        interrupt-controller; reg = <0 0x8000000 0 0x10000 0 0x80a0000 0 0xf60000>; }};
    pcie@10000000 {{ compatible = "pci-host-ecam-generic"; device_type = "pci";
        #address-cells = <3>; #size-cells = <2>; #interrupt-cells = <1>;
        reg = <0x40 0x10000000 0 0x10000000>;
        interrupt-map-mask = <0x1800 0 0 7>;
        interrupt-map = <{entries}{map_extra}>; }};
}};"#
    )
}

fn map_of(dts: &str) -> Result<IntxMap, DtError> {
    let blob = dtb(dts);
    let dt = DeviceTree::parse(&blob).unwrap();
    let host = dt.find("/pcie@10000000").unwrap().unwrap();
    dt.intx_map(&host)
}

#[test]
fn reads_qemu_virts_map() {
    let m = map_of(&virt_like("")).unwrap();
    assert_eq!(m.mask, [0x1800, 0, 0, 7]);
    assert_eq!(m.entries.len(), 16);
    let spi = |bus, dev, pin| m.lookup(Bdf::new(bus, dev, 0), pin).map(|i| i.intid - 32);
    assert_eq!(spi(0, 0, 1), Some(3));
    assert_eq!(spi(0, 1, 1), Some(4));
    assert_eq!(spi(0, 2, 1), Some(5));
    assert_eq!(spi(0, 3, 2), Some(3));
    // The mask keeps two bits of the device number, none of the bus or function.
    assert_eq!(spi(0, 5, 1), Some(4));
    assert_eq!(m.lookup(Bdf::new(0, 1, 3), 1), m.lookup(Bdf::new(0, 1, 0), 1));
    assert!(!m.lookup(Bdf::new(0, 1, 0), 1).unwrap().edge, "level-sensitive");
    assert_eq!(spi(0, 1, 0), None, "no pin");
}

#[test]
fn swizzles_through_bridges_to_the_root_bus() {
    let m = map_of(&virt_like("")).unwrap();
    // 00:02.0 a root port; behind it 01:00.0 (pin A) and 01:01.0 (pin B).
    let port = Function::new(Bdf::new(0, 2, 0), FunctionKind::RootPort).bridging(1);
    let a = Function { parent: Some(0), interrupt_pin: 1, ..Function::new(Bdf::new(1, 0, 0), FunctionKind::Endpoint) };
    let b = Function { parent: Some(0), interrupt_pin: 2, ..Function::new(Bdf::new(1, 1, 0), FunctionKind::Endpoint) };
    let none = Function { parent: Some(0), ..Function::new(Bdf::new(1, 2, 0), FunctionKind::Endpoint) };
    let t = HostTopology { functions: std::vec![port, a, b, none], ..HostTopology::default() };
    // 01:00.0 INTA → port's INTA (slot 2) → SPI 5; 01:01.0 INTB → swizzled by
    // device 1 to INTC at the port → SPI 3 + (2 + 3 - 1) % 4 = 3.
    assert_eq!(t.intx(1, &m).map(|i| i.intid - 32), Some(5));
    assert_eq!(t.intx(2, &m).map(|i| i.intid - 32), Some(3));
    assert_eq!(t.intx(3, &m), None, "no pin, no line");
    assert_eq!(t.intx(9, &m), None);
    assert_eq!([swizzle(1, 0), swizzle(1, 1), swizzle(4, 1), swizzle(3, 6)], [1, 2, 1, 1]);
    // A parent cycle (indices no enumeration writes) ends.
    let looped = Function { parent: Some(0), interrupt_pin: 1, ..Function::new(Bdf::new(1, 0, 0), FunctionKind::Endpoint) };
    let t = HostTopology { functions: std::vec![looped], ..HostTopology::default() };
    assert_eq!(t.intx(0, &m), None);
}

#[test]
fn refuses_maps_it_cannot_read_and_names_them() {
    // Cut short, a phandle no node has, no #interrupt-cells on the host.
    for (dts, prop) in [
        (virt_like(" 0 0 0 1 &gic 0 0 0"), "interrupt-map"),
        (virt_like(" 0 0 0 1 0x4242 0 0 0 3 4"), "interrupt-map"),
        (virt_like("").replace("#interrupt-cells = <1>;", ""), "#interrupt-cells"),
        (virt_like("").replace("<0x1800 0 0 7>", "<0x1800 0 0>"), "interrupt-map-mask"),
    ] {
        match map_of(&dts) {
            Err(DtError::BadProperty { prop: p, .. }) => assert_eq!(p, prop),
            other => panic!("{prop}: {other:?}"),
        }
    }
    // No map: no INTx, not an error.
    let full = virt_like("");
    let start = full.find("interrupt-map-mask").unwrap();
    let end = start + full[start..].find("};").unwrap();
    let none = format!("{}{}", &full[..start], &full[end..]);
    assert!(!none.contains("interrupt-map"));
    assert_eq!(map_of(&none).unwrap().entries.len(), 0);
}

#[test]
fn entries_to_another_controller_are_not_the_gics() {
    let dts = virt_like("").replace(
        "gic: intc@8000000",
        "gpio: gpio@9000000 { compatible = \"vendor,gpio\"; #interrupt-cells = <2>; interrupt-controller; reg = <0 0x9000000 0 0x1000>; };\n    gic: intc@8000000",
    );
    let dts = dts.replacen("0x0 0 0 1 &gic 0 0 0 3 4", "0x0 0 0 1 &gpio 5 8", 1);
    let m = map_of(&dts).unwrap();
    assert_eq!(m.entries.len(), 16);
    assert_eq!(m.lookup(Bdf::new(0, 0, 0), 1), None);
    assert_eq!(m.lookup(Bdf::new(0, 0, 0), 2).map(|i| i.intid), Some(32 + 4));
}
