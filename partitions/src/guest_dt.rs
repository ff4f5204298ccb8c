//! The device tree a partition boots with: its memory, its CPUs (started
//! through PSCI), its virtual board ([`crate::vm::board`]: a GICv3 with one
//! redistributor per vCPU, the architected timer, PSCI on the `hvc`
//! conduit, an SBSA UART as its console), its devices, its bootargs and
//! initrd, and how to reach the kernel. Built from the [`PartitionPlan`]
//! alone, so a partition learns nothing about the rest of the machine.

use crate::validate::PartitionPlan;
use alloc::format;
use alloc::vec::Vec;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

fn prop<T: dtoolkit::ToPropertyValue>(name: &str, v: T) -> DeviceTreeProperty {
    DeviceTreeProperty::new_unchecked(name, v)
}

fn u64_cells(values: &[u64]) -> Vec<u32> {
    values.iter().flat_map(|v| [(v >> 32) as u32, *v as u32]).collect()
}

/// A device as the partition sees it: MMIO it may touch (IPA == PA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDevice {
    /// Node name (with unit address).
    pub name: alloc::string::String,
    /// `compatible` strings.
    pub compatible: Vec<alloc::string::String>,
    /// MMIO regions (address, size).
    pub reg: Vec<(u64, u64)>,
    /// For a PCI function: where it sits on the host's buses.
    pub pci: Option<(u8, u8, u8)>,
    /// Its interrupts (GIC SPIs, the partition's own: the virtual GIC
    /// shows physical SPI n as virtual SPI n), as `interrupts` when any.
    pub irqs: Vec<devicetree::dt::Irq>,
}

/// One of the partition's virtual PCI host bridges ([`crate::vm::vpci`])
/// as its DT describes it: generic ECAM (the k-th at
/// [`crate::vm::board::ECAM_BASE`] + k × [`crate::vm::board::ECAM_HOST_SIZE`],
/// PCI domain k), bus 0,
/// the physical host's memory windows (BARs stay where the kernel put
/// them, mapped at IPA = PA), INTx through the GIC, and no `msi-parent` or
/// `iommu-map`: the partition sees neither the ITS nor the SMMU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestPci {
    /// The physical host's memory windows.
    pub windows: Vec<devicetree::pci::Window>,
    /// The physical host is `dma-coherent`.
    pub coherent: bool,
    /// Each shown function's (virtual device number, Interrupt Pin 1..=4,
    /// the GIC SPI its line is: INTID and edge).
    pub intx: Vec<(u8, u8, devicetree::dt::Irq)>,
}

/// PCI bus binding's phys.hi space codes (IEEE 1275 PCI binding §2.2.1.1).
const PCI_SPACE_MEM32: u32 = 0x0200_0000;
const PCI_SPACE_MEM64: u32 = 0x0300_0000;
const PCI_PREFETCHABLE: u32 = 0x4000_0000;

/// Virtual host `k`'s node.
fn pci_node(k: usize, pci: &GuestPci) -> DeviceTreeNode {
    use crate::vm::board::{ECAM_BASE, ECAM_HOST_SIZE};
    let ecam = ECAM_BASE + k as u64 * ECAM_HOST_SIZE;
    let mut n = DeviceTreeNode::new_unchecked(format!("pcie@{ecam:x}"));
    n.add_property(prop("compatible", "pci-host-ecam-generic"));
    n.add_property(prop("device_type", "pci"));
    n.add_property(prop("reg", u64_cells(&[ecam, ECAM_HOST_SIZE])));
    n.add_property(prop("bus-range", [0u32, 0]));
    n.add_property(prop("linux,pci-domain", k as u32));
    n.add_property(prop("#address-cells", 3u32));
    n.add_property(prop("#size-cells", 2u32));
    let mut ranges: Vec<u32> = Vec::new();
    for w in &pci.windows {
        let space = if w.mem64 { PCI_SPACE_MEM64 } else { PCI_SPACE_MEM32 } | if w.prefetchable { PCI_PREFETCHABLE } else { 0 };
        ranges.push(space);
        ranges.extend(u64_cells(&[w.pci, w.cpu.0, w.size]));
    }
    n.add_property(prop("ranges", ranges));
    if pci.coherent {
        n.add_property(prop("dma-coherent", Vec::<u8>::new()));
    }
    n.add_property(prop("#interrupt-cells", 1u32));
    // Device number and pin select an entry; the parent unit address is
    // the GIC's two address cells (0).
    n.add_property(prop("interrupt-map-mask", [0xf800u32, 0, 0, 7]));
    let mut map: Vec<u32> = Vec::new();
    for &(dev, pin, irq) in &pci.intx {
        let kind = if irq.edge { EDGE_RISING } else { LEVEL_HIGH };
        map.extend([u32::from(dev) << 11, 0, 0, u32::from(pin), GIC_PHANDLE, 0, 0, GIC_SPI, irq.intid - 32, kind]);
    }
    n.add_property(prop("interrupt-map", map));
    n
}

/// The GIC's phandle (the root's `interrupt-parent`).
const GIC_PHANDLE: u32 = 1;
/// `#interrupt-cells` = 3 (GIC binding): type, number, flags.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// IRQ_TYPE_EDGE_RISING, IRQ_TYPE_LEVEL_HIGH, IRQ_TYPE_LEVEL_LOW.
const EDGE_RISING: u32 = 1;
const LEVEL_HIGH: u32 = 4;
const LEVEL_LOW: u32 = 8;

fn board_nodes(p: &PartitionPlan, root: &mut DeviceTreeNode) {
    use crate::vm::board::*;
    use crate::vm::vgic::{GICD_SIZE, GICR_STRIDE};
    let mut gic = DeviceTreeNode::new_unchecked(format!("interrupt-controller@{GICD_BASE:x}"));
    gic.add_property(prop("compatible", "arm,gic-v3"));
    gic.add_property(prop("#interrupt-cells", 3u32));
    gic.add_property(prop("#address-cells", 2u32));
    gic.add_property(prop("#size-cells", 2u32));
    gic.add_property(prop("interrupt-controller", Vec::<u8>::new()));
    let gicr = GICR_STRIDE * p.cpus.len().min(MAX_VCPUS) as u64;
    gic.add_property(prop("reg", u64_cells(&[GICD_BASE, GICD_SIZE, GICR_BASE, gicr])));
    gic.add_property(prop("interrupts", [GIC_PPI, MAINTENANCE_INTID - 16, LEVEL_HIGH]));
    gic.add_property(prop("phandle", GIC_PHANDLE));
    root.add_child(gic);
    let mut timer = DeviceTreeNode::new_unchecked("timer");
    timer.add_property(prop("compatible", "arm,armv8-timer"));
    let ppis: Vec<u32> = TIMER_PPIS.iter().flat_map(|&i| [GIC_PPI, i - 16, LEVEL_LOW]).collect();
    timer.add_property(prop("interrupts", ppis));
    timer.add_property(prop("always-on", Vec::<u8>::new()));
    root.add_child(timer);
    let mut psci = DeviceTreeNode::new_unchecked("psci");
    psci.add_property(prop("compatible", ["arm,psci-1.0", "arm,psci-0.2"].as_slice()));
    psci.add_property(prop("method", "hvc"));
    root.add_child(psci);
    let mut uart = DeviceTreeNode::new_unchecked(format!("uart@{UART_BASE:x}"));
    uart.add_property(prop("compatible", "arm,sbsa-uart"));
    uart.add_property(prop("reg", u64_cells(&[UART_BASE, crate::vm::vuart::WINDOW])));
    uart.add_property(prop("interrupts", [GIC_SPI, p.uart_intid.saturating_sub(32), LEVEL_HIGH]));
    uart.add_property(prop("current-speed", 115_200u32));
    root.add_child(uart);
}

/// GIC binding specifiers (SPI, number, trigger) of `irqs`, which are SPIs.
fn spi_specifiers(irqs: &[devicetree::dt::Irq]) -> Vec<u32> {
    irqs.iter().flat_map(|i| [GIC_SPI, i.intid.saturating_sub(32), if i.edge { EDGE_RISING } else { LEVEL_HIGH }]).collect()
}

/// Serialises the partition's DTB; `pci` its virtual PCI host, if it owns
/// PCI functions; `initrd` is where its initial ramdisk was copied (start,
/// end); `restarts` how often it was restarted by its own PSCI
/// SYSTEM_RESET (`/chosen/bulkhead,restarts`).
pub fn build(p: &PartitionPlan, devices: &[GuestDevice], pci: &[GuestPci], initrd: Option<(u64, u64)>, restarts: u32) -> Vec<u8> {
    let mut t = DeviceTree::new();
    let root = &mut t.root;
    root.add_property(prop("#address-cells", 2u32));
    root.add_property(prop("#size-cells", 2u32));
    root.add_property(prop("compatible", "bulkhead,partition-vm"));
    root.add_property(prop("model", "bulkhead partition"));
    root.add_property(prop("bulkhead,partition-name", p.name.as_str()));
    root.add_property(prop("interrupt-parent", GIC_PHANDLE));
    for m in &p.memory {
        let mut n = DeviceTreeNode::new_unchecked(format!("memory@{:x}", m.base.0));
        n.add_property(prop("device_type", "memory"));
        n.add_property(prop("reg", u64_cells(&[m.base.0, m.size])));
        root.add_child(n);
    }
    let mut cpus = DeviceTreeNode::new_unchecked("cpus");
    cpus.add_property(prop("#address-cells", 2u32));
    cpus.add_property(prop("#size-cells", 0u32));
    for c in &p.cpus {
        let mut n = DeviceTreeNode::new_unchecked(format!("cpu@{c:x}"));
        n.add_property(prop("device_type", "cpu"));
        n.add_property(prop("compatible", "arm,armv8"));
        n.add_property(prop("reg", u64_cells(&[*c])));
        n.add_property(prop("enable-method", "psci"));
        cpus.add_child(n);
    }
    root.add_child(cpus);
    board_nodes(p, root);
    let mut hv = DeviceTreeNode::new_unchecked("hypervisor");
    hv.add_property(prop("compatible", "bulkhead,hypercalls"));
    hv.add_property(prop("bulkhead,abi-version", crate::hypercall::ABI_VERSION as u32));
    hv.add_property(prop("bulkhead,partition-id", u32::from(p.id.0)));
    root.add_child(hv);
    let mut bus = DeviceTreeNode::new_unchecked("devices");
    bus.add_property(prop("compatible", "simple-bus"));
    bus.add_property(prop("#address-cells", 2u32));
    bus.add_property(prop("#size-cells", 2u32));
    bus.add_property(prop("ranges", Vec::<u8>::new()));
    for d in devices {
        let mut n = DeviceTreeNode::new_unchecked(d.name.clone());
        let compat: Vec<&str> = d.compatible.iter().map(|c| c.as_str()).collect();
        n.add_property(prop("compatible", compat));
        let cells: Vec<u64> = d.reg.iter().flat_map(|&(a, s)| [a, s]).collect();
        n.add_property(prop("reg", u64_cells(&cells)));
        if let Some((b, dv, f)) = d.pci {
            n.add_property(prop("bulkhead,pci-bdf", [u32::from(b), u32::from(dv), u32::from(f)]));
        }
        if !d.irqs.is_empty() {
            n.add_property(prop("interrupts", spi_specifiers(&d.irqs)));
        }
        bus.add_child(n);
    }
    root.add_child(bus);
    for (k, host) in pci.iter().take(crate::vm::board::ECAM_HOSTS).enumerate() {
        root.add_child(pci_node(k, host));
    }
    let mut chosen = DeviceTreeNode::new_unchecked("chosen");
    if !pci.is_empty() {
        // The BARs cannot move: Linux takes them as they are rather than
        // assigning its own (drivers/pci/of.c, of_pci_check_probe_only).
        chosen.add_property(prop("linux,pci-probe-only", 1u32));
    }
    chosen.add_property(prop("bootargs", p.bootargs.as_str()));
    chosen.add_property(prop("bulkhead,restarts", restarts));
    chosen.add_property(prop("stdout-path", format!("/uart@{:x}", crate::vm::board::UART_BASE).as_str()));
    if let Some((start, end)) = initrd {
        chosen.add_property(prop("linux,initrd-start", u64_cells(&[start])));
        chosen.add_property(prop("linux,initrd-end", u64_cells(&[end])));
    }
    root.add_child(chosen);
    t.to_dtb()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::Region;
    use crate::validate::{PartitionId, DEFAULT_FAULT_LIMIT};
    use alloc::string::String;
    use alloc::vec;
    use devicetree::PhysAddr;
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};

    #[test]
    fn partition_dtb_has_memory_cpus_and_bootargs() {
        let p = PartitionPlan {
            id: PartitionId(1),
            name: "net".into(),
            memory: vec![Region { base: PhysAddr(0x4800_0000), size: 0x400_0000 }],
            image: None,
            initrd: None,
            bootargs: String::from("hello exit=0"),
            manager: false,
            fault_limit: DEFAULT_FAULT_LIMIT,
            log_limit: crate::budget::DEFAULT_LOG_LIMIT,
            dma_p2p: false,
            cpus: vec![1],
            groups: vec![],
            devices: vec![],
            irqs: vec![],
            uart_intid: crate::vm::board::UART_INTID,
        };
        let edu = GuestDevice {
            name: "edu@10000000".into(),
            compatible: vec!["pci1234,11e8".into()],
            reg: vec![(0x1000_0000, 0x10_0000)],
            pci: Some((0, 1, 0)),
            irqs: vec![],
        };
        let pci = GuestPci {
            windows: vec![devicetree::pci::Window { cpu: PhysAddr(0x1000_0000), pci: 0x1000_0000, size: 0x2eff_0000, prefetchable: false, mem64: false }],
            coherent: true,
            intx: vec![(0, 1, devicetree::dt::Irq { intid: 36, edge: false })],
        };
        // A second physical host: a second virtual one, in its own domain.
        let pci2 = GuestPci {
            windows: vec![devicetree::pci::Window { cpu: PhysAddr(0x80_0000_0000), pci: 0x80_0000_0000, size: 0x1000_0000, prefetchable: true, mem64: true }],
            coherent: false,
            intx: vec![(0, 2, devicetree::dt::Irq { intid: 40, edge: false })],
        };
        let blob = build(&p, &[edu], &[pci.clone(), pci2], Some((0x4900_0000, 0x4910_0000)), 1);
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let mem = root.child("memory@48000000").unwrap();
        assert_eq!(mem.property("reg").unwrap().value(), &[0, 0, 0, 0, 0x48, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
        let chosen = root.child("chosen").unwrap();
        assert_eq!(chosen.property("bootargs").unwrap().value_as::<&str>().unwrap(), "hello exit=0");
        assert_eq!(chosen.property("bulkhead,restarts").unwrap().value(), &[0, 0, 0, 1]);
        assert_eq!(chosen.property("stdout-path").unwrap().value_as::<&str>().unwrap(), "/uart@9000000");
        assert_eq!(chosen.property("linux,initrd-start").unwrap().value(), &[0, 0, 0, 0, 0x49, 0, 0, 0]);
        assert_eq!(chosen.property("linux,initrd-end").unwrap().value(), &[0, 0, 0, 0, 0x49, 0x10, 0, 0]);
        let gic = root.child("interrupt-controller@8000000").unwrap();
        // One redistributor (one vCPU): 0x20000 bytes at 0x80a0000.
        assert_eq!(&gic.property("reg").unwrap().value()[16..], &[0, 0, 0, 0, 0x08, 0x0a, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(root.child("psci").unwrap().property("method").unwrap().value_as::<&str>().unwrap(), "hvc");
        let timer = root.child("timer").unwrap().property("interrupts").unwrap().value().to_vec();
        assert_eq!(timer[28..32], [0, 0, 0, 11], "the virtual timer: PPI 11 (INTID 27)");
        assert!(root.child("cpus").unwrap().child("cpu@1").unwrap().property("enable-method").is_some());
        assert!(root.child("cpus").unwrap().child("cpu@1").is_some());
        assert_eq!(root.property("bulkhead,partition-name").unwrap().value_as::<&str>().unwrap(), "net");
        let edu = root.child("devices").unwrap().child("edu@10000000").unwrap();
        assert_eq!(edu.property("reg").unwrap().value(), &[0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(edu.property("compatible").unwrap().value_as::<&str>().unwrap(), "pci1234,11e8");
        let host = root.child("pcie@3f000000").unwrap();
        let cells = |name: &str| -> Vec<u32> { host.property(name).unwrap().value().chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect() };
        assert_eq!(cells("reg"), [0, 0x3f00_0000, 0, 0x10_0000]);
        assert_eq!(cells("bus-range"), [0, 0]);
        assert_eq!(cells("ranges"), [0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2eff_0000]);
        assert_eq!(cells("interrupt-map"), [0, 0, 0, 1, 1, 0, 0, 0, 4, 4], "00:00.0 INTA: SPI 4, level");
        assert!(host.property("dma-coherent").is_some());
        assert!(host.property("msi-parent").is_none() && host.property("iommu-map").is_none());
        assert_eq!(cells("linux,pci-domain"), [0]);
        let host = root.child("pcie@3f100000").unwrap();
        let cells = |name: &str| -> Vec<u32> { host.property(name).unwrap().value().chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect() };
        assert_eq!(cells("reg"), [0, 0x3f10_0000, 0, 0x10_0000]);
        assert_eq!(cells("linux,pci-domain"), [1]);
        assert_eq!(cells("ranges"), [0x4300_0000, 0x80, 0, 0x80, 0, 0, 0x1000_0000]);
        assert_eq!(cells("interrupt-map"), [0, 0, 0, 2, 1, 0, 0, 0, 8, 4], "00:00.0 INTB: SPI 8, level");
        assert!(host.property("dma-coherent").is_none());
        assert_eq!(chosen.property("linux,pci-probe-only").unwrap().value(), &[0, 0, 0, 1]);
        assert!(edu.property("interrupts").is_none(), "no interrupts, no property");
        let uart = root.child("uart@9000000").unwrap();
        assert_eq!(uart.property("interrupts").unwrap().value(), &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4], "SPI 1 (INTID 33), level");
    }

    /// A device's SPIs as 3-cell GIC specifiers (the physical numbers,
    /// edge rising or level high), and the console moved off an owned line.
    #[test]
    fn devices_carry_their_interrupts() {
        use devicetree::dt::Irq;
        let p = PartitionPlan {
            id: PartitionId(0),
            name: "io".into(),
            memory: vec![Region { base: PhysAddr(0x4800_0000), size: 0x400_0000 }],
            image: None,
            initrd: None,
            bootargs: String::new(),
            manager: false,
            fault_limit: DEFAULT_FAULT_LIMIT,
            log_limit: crate::budget::DEFAULT_LOG_LIMIT,
            dma_p2p: false,
            cpus: vec![1],
            groups: vec![],
            devices: vec![],
            irqs: vec![],
            uart_intid: 35,
        };
        let dma = GuestDevice {
            name: "dma@9100000".into(),
            compatible: vec!["vendor,dma".into()],
            reg: vec![(0x910_0000, 0x1000)],
            pci: None,
            irqs: vec![Irq { intid: 33, edge: false }, Irq { intid: 34, edge: true }],
        };
        let blob = build(&p, &[dma], &[], None, 0);
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let dma = root.child("devices").unwrap().child("dma@9100000").unwrap();
        let cells: Vec<u32> = dma.property("interrupts").unwrap().value().chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(cells, [0, 1, 4, 0, 2, 1], "SPI 1 level high, SPI 2 edge rising");
        let uart = root.child("uart@9000000").unwrap();
        assert_eq!(uart.property("interrupts").unwrap().value()[4..8], [0, 0, 0, 3], "the console on SPI 3 (INTID 35)");
    }
}
