//! The [`Machine`] the device tree describes and what PCI enumeration
//! found, turned into what the policy decides on: the isolation-group
//! [`Topology`] and the [`Hardware`] a configuration is validated against.
//!
//! The kernel calls these at boot with its machine description, its
//! enumeration and its own placement; `cargo xtask check` calls the same
//! functions on the host with the machine of a device tree and a PCI
//! topology read back from a boot log, so the offline verdict is the
//! kernel's verdict. The topology is the machine's own types paired up,
//! not a copy in other types.

use crate::binding::Region;
use crate::groups::Groups;
use crate::topology::{self as model, Topology};
use crate::validate::{Hardware, KernelIrq};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use devicetree::discovery::DEFAULT_SID_BITS;
use devicetree::memmap::{MemoryMap, Reservation};
use devicetree::pci::HostTopology;
use devicetree::{Machine, PhysRange};

/// A physical range as the configuration's [`Region`].
pub fn region(r: &PhysRange) -> Region {
    Region { base: r.start, size: r.size() }
}

/// The machine's SMMUs and DMA masters and one enumeration result per host
/// bridge (`m.devices.pci_hosts`, same order) → the policy's model. SMMU
/// indices are positions in `m.smmus`.
pub fn topology(m: &Machine, pci: &[HostTopology]) -> Topology {
    // SIDSIZE from the DT-less default until the SMMU driver's probe
    // (IDR1.SIDSIZE) is passed in.
    let smmus = m.smmus.iter().map(|s| model::Smmu { name: String::from(s.name.as_str()), sid_bits: DEFAULT_SID_BITS }).collect();
    let hosts = m.devices.pci_hosts.iter().zip(pci).map(|(h, t)| model::PciHost { bridge: h.clone(), bus: t.clone() }).collect();
    Topology { smmus, hosts, platform: m.devices.masters.clone() }
}

/// Where the kernel put itself; `None` where it is not known (offline,
/// without a placement to assume), and validation then skips that check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The kernel image, text through stack.
    pub kernel: Option<PhysRange>,
    /// The DTB as the loader left it (page-rounded).
    pub dtb: Option<PhysRange>,
    /// The kernel heap.
    pub heap: Option<PhysRange>,
}

/// What validation checks a configuration against: RAM and the firmware's
/// reservations (`/memreserve/`, `/reserved-memory`) from `map`, the
/// machine's CPUs, where the kernel sits, the boot CPU, and the grouped
/// topology.
pub fn hardware(m: &Machine, map: &MemoryMap, placed: Placement, boot_cpu: u64, topology: Topology, groups: Groups) -> Hardware {
    let reserved =
        map.reserved().iter().filter(|(_, why)| matches!(why, Reservation::MemReserve | Reservation::ReservedMemory)).map(|(r, _)| region(r)).collect();
    Hardware {
        ram: map.ram().iter().map(region).collect(),
        kernel: placed.kernel.as_ref().map(region),
        dtb: placed.dtb.as_ref().map(region),
        heap: placed.heap.as_ref().map(region),
        reserved,
        cpus: m.cpus.iter().map(|c| c.mpidr).collect(),
        boot_cpu,
        topology,
        groups,
        kernel_irqs: kernel_irqs(m),
    }
}

/// The SPIs the kernel's own devices raise: every enabled SMMU's
/// interrupts (the kernel takes eventq and gerror; priq, cmdq-sync and
/// combined are the SMMU's lines all the same) and its console's.
pub fn kernel_irqs(m: &Machine) -> Vec<KernelIrq> {
    let mut out: Vec<KernelIrq> = Vec::new();
    let mut keep = |irq: Option<devicetree::dt::Irq>, user: &dyn Fn() -> String| {
        if let Some(i) = irq.filter(|i| i.intid >= 32 && !out.iter().any(|k| k.intid == i.intid)) {
            out.push(KernelIrq { intid: i.intid, user: user() });
        }
    };
    for s in &m.smmus {
        for (name, irq) in [("eventq", s.eventq), ("priq", s.priq), ("cmdq-sync", s.cmdq_sync), ("gerror", s.gerror), ("combined", s.combined)] {
            keep(irq, &|| format!("the {name} interrupt of SMMU {}", s.name.as_str()));
        }
    }
    for &irq in &m.console_spis {
        keep(Some(irq), &|| String::from("the kernel's console UART"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use devicetree::pci::FunctionKind;
    use devicetree::DeviceTree;
    extern crate std;

    use devicetree::testutil::dtb;

    /// The conversion keeps what grouping needs: the host's `iommu-map`,
    /// functions with their parents, and PCI hints by `dev,fn` chain.
    #[test]
    fn topology_carries_maps_functions_and_hints() {
        let blob = dtb(r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
    smmu: iommu@9050000 { compatible = "arm,smmu-v3"; reg = <0 0x9050000 0 0x20000>; #iommu-cells = <1>; };
    pcie@10000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
        reg = <0x40 0x10000000 0 0x10000000>; bus-range = <0 0xff>;
        #address-cells = <3>; #size-cells = <2>; ranges;
        iommu-map = <0 &smmu 0 0x10000>;
        edu@1,0 { reg = <0x800 0 0 0 0>; bulkhead,isolation-group = <4>; }; };
    dma@9100000 { reg = <0 0x9100000 0 0x1000>; iommus = <&smmu 0x42>; };
};"#);
        let dt = DeviceTree::parse(&blob).unwrap();
        // The parts of the machine the topology takes (the tree has no
        // /memory or /cpus).
        let smmus = dt.smmus().unwrap();
        let devices = devicetree::discovery::discover(&dt, &smmus).unwrap();
        let m = Machine { smmus, devices, ..Machine::default() };
        let f = |bus, dev, kind, parent, bridge| devicetree::pci::Function {
            bdf: devicetree::pci::Bdf::new(bus, dev, 0),
            vendor: 0x1234,
            device: 0x11e8,
            class: 0xff00,
            header_type: 0,
            kind,
            parent,
            bars: Default::default(),
            io_bars: 0,
            acs: None,
            multifunction: false,
            flr: true,
            pcie_cap: None,
            interrupt_pin: 0,
            bridge,
        };
        let bridge = devicetree::pci::BridgeInfo { primary: 0, secondary: 1, subordinate: 1, mem: None, pref: None };
        let pci = [HostTopology {
            root_bus: 0,
            last_bus: 1,
            functions: alloc::vec![
                f(0, 1, FunctionKind::Endpoint, None, None),
                f(0, 2, FunctionKind::PcieToPciBridge, None, Some(bridge)),
                f(1, 0, FunctionKind::PciDevice, Some(1), None)
            ],
        }];
        let t = topology(&m, &pci);
        assert_eq!(t.smmus, [model::Smmu { name: "iommu@9050000".into(), sid_bits: DEFAULT_SID_BITS }]);
        let h = &t.hosts[0];
        assert_eq!(h.bridge.iommu_map.entries[0].target, Some(0));
        assert_eq!(h.bus.functions[1].kind, FunctionKind::PcieToPciBridge);
        assert_eq!(h.bus.functions[1].secondary_bus(), Some(1));
        assert_eq!(h.bus.functions[2].parent, Some(1));
        assert!(h.bus.functions[0].flr);
        assert_eq!(h.bridge.nodes[0].chain, [devicetree::pci::Bdf::new(0, 1, 0)]);
        assert_eq!(t.platform[0].iommus[0].sid, 0x42);
        let g = crate::groups::compute(&t);
        assert_eq!(g.group_of(model::DeviceRef::Pci { host: 0, function: 2 }).map(|g| g.devices.len()), Some(2), "dma alias");
    }

    /// The kernel keeps its SMMUs' SPIs (every named one, each once) and
    /// its console's; a PPI is no line to keep.
    #[test]
    fn the_kernel_keeps_its_smmus_and_consoles_lines() {
        let blob = dtb(r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&gic>;
    chosen { stdout-path = "/pl011@9000000"; };
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0 0x8000000 0 0x10000 0 0x80a0000 0 0xf60000>; };
    pl011@9000000 { compatible = "arm,pl011"; reg = <0 0x9000000 0 0x1000>; interrupts = <0 1 4 1 9 4>; };
    iommu@9050000 { compatible = "arm,smmu-v3"; reg = <0 0x9050000 0 0x20000>; #iommu-cells = <1>;
        interrupts = <0 74 1 0 75 1 0 77 1 0 76 1>; interrupt-names = "eventq", "priq", "cmdq-sync", "gerror"; };
};"#);
        let m = Machine::read(&DeviceTree::parse(&blob).unwrap()).unwrap();
        let kept = kernel_irqs(&m);
        let k: Vec<(u32, &str)> = kept.iter().map(|k| (k.intid, k.user.as_str())).collect();
        assert_eq!(
            k,
            [
                (106, "the eventq interrupt of SMMU iommu@9050000"),
                (107, "the priq interrupt of SMMU iommu@9050000"),
                (109, "the cmdq-sync interrupt of SMMU iommu@9050000"),
                (108, "the gerror interrupt of SMMU iommu@9050000"),
                (33, "the kernel's console UART"),
            ]
        );
    }

    #[test]
    fn hardware_takes_ram_reservations_cpus_and_placement() {
        let blob = dtb(r#"/dts-v1/;
/memreserve/ 0x40000000 0x800;
/ { #address-cells = <2>; #size-cells = <2>;
    memory@40000000 { device_type = "memory"; reg = <0 0x40000000 0 0x10000000>; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; }; cpu@1 { device_type = "cpu"; reg = <1>; }; };
};"#);
        let m = Machine::read(&DeviceTree::parse(&blob).unwrap()).unwrap();
        let mut map = MemoryMap::new(m.ram.iter().copied()).unwrap();
        let kernel = PhysRange::new(0x4020_0000, 0x10_0000).unwrap();
        map.reserve(kernel, Reservation::Kernel).unwrap();
        for r in &m.memreserve {
            map.reserve(r.grow_to(4096), Reservation::MemReserve).unwrap();
        }
        let placed = Placement { kernel: Some(kernel), ..Placement::default() };
        let hw = hardware(&m, &map, placed, 0, Topology::default(), Groups::default());
        assert_eq!(hw.ram, [region(&PhysRange::new(0x4000_0000, 0x1000_0000).unwrap())]);
        assert_eq!(hw.reserved, [region(&PhysRange::new(0x4000_0000, 0x1000).unwrap())], "only firmware reservations, page-rounded");
        assert_eq!(hw.kernel, Some(region(&kernel)));
        assert_eq!((hw.dtb, hw.heap), (None, None));
        assert_eq!(hw.cpus, [0, 1]);
    }
}
