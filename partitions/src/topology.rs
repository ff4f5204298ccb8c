//! The machine as the isolation-group policy sees it: SMMUs, PCI host
//! bridges with the functions enumeration found, and platform DMA masters.
//!
//! Plain data, no registers and no device-tree access: `platform` discovers
//! and enumerates, `machine::topology` (the `machine` feature, for
//! the kernel and the offline checker) converts its results into this
//! model, and host tests build it by hand.

use crate::binding::PciStep;
use alloc::string::String;
use alloc::vec::Vec;

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

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub dev: u8,
    /// Function number (0..8).
    pub func: u8,
}

impl Bdf {
    /// A BDF; `dev` and `func` are masked to 5 and 3 bits.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf { bus, dev: dev & 0x1f, func: func & 0x7 }
    }
    /// The requester ID: bus << 8 | dev << 3 | func.
    pub const fn rid(self) -> u16 {
        ((self.bus as u16) << 8) | ((self.dev as u16) << 3) | self.func as u16
    }
}

/// What a PCI function is: its header type and PCIe Device/Port Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciKind {
    /// Conventional PCI device (no PCIe capability).
    PciDevice,
    /// Conventional PCI-to-PCI bridge (no PCIe capability).
    PciBridge,
    /// PCIe Endpoint.
    Endpoint,
    /// Legacy PCIe Endpoint.
    LegacyEndpoint,
    /// Root Complex Integrated Endpoint.
    RcIntegratedEndpoint,
    /// Root Complex Event Collector.
    RcEventCollector,
    /// Root Port.
    RootPort,
    /// Switch Upstream Port.
    UpstreamPort,
    /// Switch Downstream Port.
    DownstreamPort,
    /// PCIe-to-PCI/PCI-X bridge.
    PcieToPciBridge,
    /// PCI/PCI-X-to-PCIe bridge.
    PciToPcieBridge,
    /// A reserved PCIe Device/Port Type.
    Other,
}

impl PciKind {
    /// Whether the function has a PCI Express capability.
    pub const fn is_pcie(self) -> bool {
        !matches!(self, PciKind::PciDevice | PciKind::PciBridge)
    }
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            PciKind::PciDevice => "PCI device",
            PciKind::PciBridge => "PCI-PCI bridge",
            PciKind::Endpoint => "PCIe endpoint",
            PciKind::LegacyEndpoint => "legacy PCIe endpoint",
            PciKind::RcIntegratedEndpoint => "RC integrated endpoint",
            PciKind::RcEventCollector => "RC event collector",
            PciKind::RootPort => "root port",
            PciKind::UpstreamPort => "switch upstream port",
            PciKind::DownstreamPort => "switch downstream port",
            PciKind::PcieToPciBridge => "PCIe-to-PCI bridge",
            PciKind::PciToPcieBridge => "PCI-to-PCIe bridge",
            PciKind::Other => "reserved PCIe type",
        }
    }
}

/// A function's ACS Extended Capability (PCIe §7.7.8): the Capability and
/// Control registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acs {
    /// ACS Capability register.
    pub cap: u16,
    /// ACS Control register.
    pub ctrl: u16,
}

impl Acs {
    /// Source Validation.
    pub const SV: u16 = 1 << 0;
    /// Translation Blocking.
    pub const TB: u16 = 1 << 1;
    /// P2P Request Redirect.
    pub const RR: u16 = 1 << 2;
    /// P2P Completion Redirect.
    pub const CR: u16 = 1 << 3;
    /// Upstream Forwarding.
    pub const UF: u16 = 1 << 4;
    /// P2P Egress Control.
    pub const EC: u16 = 1 << 5;
    /// The controls that keep a function's requests from reaching a peer
    /// without passing the SMMU (Linux's `REQ_ACS_FLAGS`).
    pub const ISOLATION: u16 = Self::SV | Self::RR | Self::CR | Self::UF;

    /// Whether every control of `flags` is in effect. A feature the function
    /// does not implement cannot be turned off, so it counts as in effect —
    /// except egress control, which is only ever in effect when enabled.
    pub const fn enabled(self, flags: u16) -> bool {
        let need = flags & (self.cap | Self::EC);
        self.ctrl & need == need
    }
}

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code.
    pub class: u32,
    /// What it is.
    pub kind: PciKind,
    /// Index (in [`PciHost::functions`]) of the bridge whose secondary bus
    /// it sits on; `None` on the root bus.
    pub parent: Option<usize>,
    /// For bridges: the secondary bus number.
    pub secondary_bus: Option<u8>,
    /// ACS Extended Capability, if implemented.
    pub acs: Option<Acs>,
    /// The device is multi-function.
    pub multifunction: bool,
    /// Function Level Reset supported.
    pub flr: bool,
}

impl PciFunction {
    /// The function's own requester ID.
    pub const fn rid(&self) -> u16 {
        self.bdf.rid()
    }
    /// Whether the function sits on the root bus.
    pub const fn on_root_bus(&self) -> bool {
        self.parent.is_none()
    }
}

/// One `iommu-map` entry: requester IDs `rid_base .. rid_base + length`
/// (after the mask) become StreamIDs from `sid_base` on `smmu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapEntry {
    /// First requester ID covered.
    pub rid_base: u32,
    /// How many.
    pub length: u32,
    /// The SMMU; `None` when the phandle names something else.
    pub smmu: Option<SmmuIndex>,
    /// The phandle the entry names (for messages).
    pub phandle: u32,
    /// The StreamID of `rid_base`.
    pub sid_base: u32,
}

/// A host bridge's `iommu-map` and `iommu-map-mask`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Entries; the first that covers a requester ID wins.
    pub entries: Vec<IdMapEntry>,
    /// `iommu-map-mask` (absent = all bits).
    pub mask: Option<u32>,
}

/// A `bulkhead,isolation-group` on a PCI function node of the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHint {
    /// Node path, for messages.
    pub path: String,
    /// The node's `dev,fn` chain from the host bridge down (BINDING.md).
    pub chain: Vec<PciStep>,
    /// The group number.
    pub group: u32,
}

/// A PCI host bridge and what enumeration found below it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciHost {
    /// Node path.
    pub path: String,
    /// Root bus number.
    pub root_bus: u8,
    /// Requester ID → StreamID.
    pub iommu_map: IdMap,
    /// Functions in enumeration order (parents before children).
    pub functions: Vec<PciFunction>,
    /// `bulkhead,isolation-group` on function nodes below the host bridge.
    pub hints: Vec<PciHint>,
}

/// One `iommus` specifier of a platform device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformStream {
    /// The IOMMU phandle (for messages).
    pub phandle: u32,
    /// The SMMU; `None` when the phandle names something else.
    pub smmu: Option<SmmuIndex>,
    /// The StreamID.
    pub sid: u32,
}

/// A platform DMA master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformDevice {
    /// Node path.
    pub path: String,
    /// Its `iommus` (empty: its DMA does not pass an SMMU).
    pub streams: Vec<PlatformStream>,
    /// `bulkhead,isolation-group`, if present.
    pub isolation_group: Option<u32>,
}

/// A device of the [`Topology`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceRef {
    /// `Topology::hosts[host].functions[function]`.
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
    pub platform: Vec<PlatformDevice>,
}

impl Topology {
    /// The PCI function `d` names, if it is one.
    pub fn pci(&self, d: DeviceRef) -> Option<&PciFunction> {
        match d {
            DeviceRef::Pci { host, function } => self.hosts.get(host)?.functions.get(function),
            DeviceRef::Platform(_) => None,
        }
    }

    /// The platform device `d` names, if it is one.
    pub fn platform_device(&self, d: DeviceRef) -> Option<&PlatformDevice> {
        match d {
            DeviceRef::Platform(i) => self.platform.get(i),
            DeviceRef::Pci { .. } => None,
        }
    }

    /// The function a PCI node of the overlay names (BINDING.md): the first
    /// step is matched by its bus, device and function (a node directly
    /// under the host bridge may name any bus, as bulkhead numbered them);
    /// each further step by device and function on the secondary bus of the
    /// bridge the previous step matched, as Linux matches nodes.
    pub fn resolve_pci(&self, host: usize, chain: &[PciStep]) -> Option<usize> {
        let h = self.hosts.get(host)?;
        let (first, rest) = chain.split_first()?;
        let mut cur = h.functions.iter().position(|f| f.bdf == Bdf::new(first.bus, first.dev, first.func))?;
        for s in rest {
            let sec = h.functions.get(cur)?.secondary_bus?;
            cur = h.functions.iter().position(|f| f.parent == Some(cur) && f.bdf == Bdf::new(sec, s.dev, s.func))?;
        }
        Some(cur)
    }
}
