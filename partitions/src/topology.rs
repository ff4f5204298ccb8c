//! The machine as the isolation-group policy sees it: SMMUs, PCI host
//! bridges with the functions enumeration found, and platform DMA masters.
//!
//! Plain data in the device tree's own types (`devicetree::discovery`,
//! `devicetree::pci`): discovery and enumeration fill them in,
//! [`machine::topology`](crate::machine::topology) pairs them up, and host
//! tests build them by hand. Only what the policy adds is defined here: the
//! SMMUs' StreamID width and the index newtypes.

use alloc::string::String;
use alloc::vec::Vec;
use devicetree::discovery::{self, PlatformMaster};
use devicetree::pci::{Bdf, Function, HostTopology};

/// Index of an SMMU in [`Topology::smmus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SmmuIndex(pub usize);

/// An SMMU, as far as grouping cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smmu {
    /// Node name, for logs.
    pub name: String,
    /// SIDSIZE: StreamIDs are `0 .. 2^sid_bits` (SMMU_IDR1.SIDSIZE).
    pub sid_bits: u8,
}

/// A PCI host bridge and what enumeration found below it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciHost {
    /// The host bridge as discovery read it: path, `iommu-map`, the
    /// function nodes below it (with their `bulkhead,isolation-group`).
    pub bridge: discovery::PciHost,
    /// Its buses: functions in enumeration order (parents before children).
    pub bus: HostTopology,
}

/// A device of the [`Topology`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceRef {
    /// `Topology::hosts[host].bus.functions[function]`.
    Pci {
        /// Host bridge index.
        host: usize,
        /// Function index.
        function: usize,
    },
    /// `Topology::platform[i]`.
    Platform(usize),
}

/// The whole input of the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// SMMUs.
    pub smmus: Vec<Smmu>,
    /// PCI host bridges.
    pub hosts: Vec<PciHost>,
    /// Platform DMA masters.
    pub platform: Vec<PlatformMaster>,
}

impl Topology {
    /// The PCI function `d` names, if it is one.
    pub fn pci(&self, d: DeviceRef) -> Option<&Function> {
        match d {
            DeviceRef::Pci { host, function } => self.hosts.get(host)?.bus.functions.get(function),
            DeviceRef::Platform(_) => None,
        }
    }

    /// The platform device `d` names, if it is one.
    pub fn platform_device(&self, d: DeviceRef) -> Option<&PlatformMaster> {
        match d {
            DeviceRef::Platform(i) => self.platform.get(i),
            DeviceRef::Pci { .. } => None,
        }
    }

    /// The function a PCI node of the overlay names (boards/bindings/bulkhead,partitions.yaml): the first
    /// step is matched by its bus, device and function (a node directly
    /// under the host bridge may name any bus, as bulkhead numbered them);
    /// each further step by device and function on the secondary bus of the
    /// bridge the previous step matched, as Linux matches nodes.
    pub fn resolve_pci(&self, host: usize, chain: &[Bdf]) -> Option<usize> {
        let f = &self.hosts.get(host)?.bus.functions;
        let (first, rest) = chain.split_first()?;
        let mut cur = f.iter().position(|x| x.bdf == *first)?;
        for s in rest {
            let sec = f.get(cur)?.secondary_bus()?;
            cur = f.iter().position(|x| x.parent == Some(cur) && x.bdf == Bdf::new(sec, s.dev, s.func))?;
        }
        Some(cur)
    }
}
