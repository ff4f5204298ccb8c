//! PCI topology as data: where a function is ([`Bdf`]), what it is
//! ([`FunctionKind`]), and what enumeration of a host bridge found below it
//! ([`HostTopology`]), plus the host bridge's memory [`Window`]s from its
//! `ranges`. The kernel's enumeration (in `platform`, over ECAM) fills these
//! in; discovery, the policy (`partitions`) and the offline checker read
//! them. Plain values: nothing here touches configuration space.
//!
//! Terms as in the PCI Local Bus Specification 3.0, the PCI-to-PCI Bridge
//! Architecture Specification 1.2 and the PCI Express Base Specification
//! (§7.5.3 PCI Express Capability, §7.7.8 ACS Extended Capability).

pub mod config;

use crate::addr::{PhysAddr, PhysRange};
use alloc::vec::Vec;
use arrayvec::ArrayVec;

/// Header Type layout (bits 6:0 of Header Type, PCI 3.0 §6.2.1): a general device.
pub const HEADER_TYPE_NORMAL: u8 = 0;
/// Header Type layout: a PCI-to-PCI bridge (type 1 header).
pub const HEADER_TYPE_BRIDGE: u8 = 1;

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
    /// The PCI requester ID: bus << 8 | dev << 3 | func.
    pub const fn rid(self) -> u16 {
        ((self.bus as u16) << 8) | ((self.dev as u16) << 3) | self.func as u16
    }
    /// The BDF a requester ID names.
    pub const fn from_rid(rid: u16) -> Bdf {
        Bdf { bus: (rid >> 8) as u8, dev: ((rid >> 3) & 0x1f) as u8, func: (rid & 0x7) as u8 }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Bdf {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u8:02x}:{=u8:02x}.{=u8}", self.bus, self.dev, self.func)
    }
}

/// What a function is, from its header type and PCIe Device/Port Type
/// (PCIe §7.5.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionKind {
    /// Conventional PCI device (no PCIe capability, type 0 header).
    PciDevice,
    /// Conventional PCI-to-PCI bridge (no PCIe capability, type 1 header).
    PciBridge,
    /// PCI Express Endpoint.
    Endpoint,
    /// Legacy PCI Express Endpoint.
    LegacyEndpoint,
    /// Root Complex Integrated Endpoint.
    RcIntegratedEndpoint,
    /// Root Complex Event Collector.
    RcEventCollector,
    /// Root Port of a PCI Express Root Complex.
    RootPort,
    /// Upstream Port of a PCI Express Switch.
    UpstreamPort,
    /// Downstream Port of a PCI Express Switch.
    DownstreamPort,
    /// PCI Express to PCI/PCI-X Bridge.
    PcieToPciBridge,
    /// PCI/PCI-X to PCI Express Bridge.
    PciToPcieBridge,
    /// A PCIe Device/Port Type the specification reserves.
    Reserved(u8),
}

impl FunctionKind {
    /// From a PCIe Device/Port Type field, or `None` for a conventional function.
    pub fn from_parts(pcie_type: Option<u8>, header_type: u8) -> FunctionKind {
        match pcie_type {
            None if header_type == HEADER_TYPE_BRIDGE => FunctionKind::PciBridge,
            None => FunctionKind::PciDevice,
            Some(0x0) => FunctionKind::Endpoint,
            Some(0x1) => FunctionKind::LegacyEndpoint,
            Some(0x4) => FunctionKind::RootPort,
            Some(0x5) => FunctionKind::UpstreamPort,
            Some(0x6) => FunctionKind::DownstreamPort,
            Some(0x7) => FunctionKind::PcieToPciBridge,
            Some(0x8) => FunctionKind::PciToPcieBridge,
            Some(0x9) => FunctionKind::RcIntegratedEndpoint,
            Some(0xa) => FunctionKind::RcEventCollector,
            Some(t) => FunctionKind::Reserved(t),
        }
    }
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            FunctionKind::PciDevice => "PCI device",
            FunctionKind::PciBridge => "PCI-PCI bridge",
            FunctionKind::Endpoint => "PCIe endpoint",
            FunctionKind::LegacyEndpoint => "legacy PCIe endpoint",
            FunctionKind::RcIntegratedEndpoint => "RC integrated endpoint",
            FunctionKind::RcEventCollector => "RC event collector",
            FunctionKind::RootPort => "root port",
            FunctionKind::UpstreamPort => "switch upstream port",
            FunctionKind::DownstreamPort => "switch downstream port",
            FunctionKind::PcieToPciBridge => "PCIe-to-PCI bridge",
            FunctionKind::PciToPcieBridge => "PCI-to-PCIe bridge",
            FunctionKind::Reserved(_) => "reserved PCIe type",
        }
    }
    /// Whether the function has a PCI Express capability.
    pub const fn is_pcie(self) -> bool {
        !matches!(self, FunctionKind::PciDevice | FunctionKind::PciBridge)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for FunctionKind {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=str}", self.name())
    }
}

/// ACS Capability / Control bits (PCIe §7.7.8.2, §7.7.8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcsFlags(pub u16);

impl AcsFlags {
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
    /// Direct Translated P2P.
    pub const DT: u16 = 1 << 6;
    /// The controls that keep a function's requests from reaching a peer
    /// without passing the SMMU (Linux's `REQ_ACS_FLAGS`, which it requires
    /// for separate IOMMU groups).
    pub const ISOLATION: u16 = Self::SV | Self::RR | Self::CR | Self::UF;
    /// The flags the kernel turns on wherever a function implements them:
    /// the isolation set plus Translation Blocking, because bulkhead never
    /// enables ATS, so a translated request can only be an attack.
    pub const ENABLE: u16 = Self::ISOLATION | Self::TB;
    /// Whether every bit of `bits` is set.
    pub const fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for AcsFlags {
    fn format(&self, f: defmt::Formatter) {
        const NAMES: [&str; 7] = ["SV", "TB", "RR", "CR", "UF", "EC", "DT"];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    defmt::write!(f, "|");
                }
                defmt::write!(f, "{=str}", n);
                first = false;
            }
        }
        if first {
            defmt::write!(f, "none");
        }
    }
}

/// A function's ACS Extended Capability: what it implements and what is
/// enabled after enumeration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acs {
    /// Offset of the extended capability.
    pub offset: u16,
    /// ACS Capability register.
    pub cap: AcsFlags,
    /// ACS Control register as read back after enumeration enabled it.
    pub ctrl: AcsFlags,
}

impl Acs {
    /// Whether every control of `flags` is in effect. A feature the function
    /// does not implement cannot be turned off, so it counts as in effect —
    /// except egress control, which is only ever in effect when enabled.
    pub const fn enabled(self, flags: u16) -> bool {
        let need = flags & (self.cap.0 | AcsFlags::EC);
        self.ctrl.0 & need == need
    }
}

/// A memory BAR with the address enumeration gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (0..6; a 64-bit BAR uses `index` and `index + 1`).
    pub index: u8,
    /// Where the CPU reaches it.
    pub cpu: PhysAddr,
    /// The address on the PCI bus (what the BAR register holds).
    pub pci: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// 64-bit BAR.
    pub is_64: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

impl Bar {
    /// The CPU range.
    pub fn range(&self) -> PhysRange {
        PhysRange::new(self.cpu.0, self.size).unwrap_or_default()
    }
}

/// A bridge's bus numbers and forwarding windows, as enumeration programmed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeInfo {
    /// Primary bus number.
    pub primary: u8,
    /// Secondary bus number.
    pub secondary: u8,
    /// Subordinate bus number (highest bus below).
    pub subordinate: u8,
    /// Non-prefetchable memory window (CPU addresses), if any.
    pub mem: Option<PhysRange>,
    /// Prefetchable memory window (CPU addresses), if any.
    pub pref: Option<PhysRange>,
}

/// One function found by enumeration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class, sub-class, programming interface).
    pub class: u32,
    /// Header type layout (0 normal, 1 bridge, 2 CardBus), without the multi-function bit.
    pub header_type: u8,
    /// What it is.
    pub kind: FunctionKind,
    /// Index (in [`HostTopology::functions`]) of the bridge whose secondary
    /// bus it sits on; `None` on the root bus.
    pub parent: Option<usize>,
    /// Memory BARs with their assigned addresses.
    pub bars: ArrayVec<Bar, 6>,
    /// I/O BARs found but not assigned (bit i = BAR i): bulkhead gives out
    /// memory space only.
    pub io_bars: u8,
    /// ACS Extended Capability, if implemented.
    pub acs: Option<Acs>,
    /// The device's Header Type says multi-function.
    pub multifunction: bool,
    /// Function Level Reset supported (Device Capabilities).
    pub flr: bool,
    /// Offset of the PCI Express capability, if any.
    pub pcie_cap: Option<u8>,
    /// Interrupt Pin: 0 none, 1..=4 INTA..INTD.
    pub interrupt_pin: u8,
    /// For bridges: bus numbers and windows.
    pub bridge: Option<BridgeInfo>,
}

impl Function {
    /// The requester ID the function uses on the bus.
    pub const fn rid(&self) -> u16 {
        self.bdf.rid()
    }
    /// For a bridge, the bus number behind it.
    pub fn secondary_bus(&self) -> Option<u8> {
        self.bridge.map(|b| b.secondary)
    }
    /// A function at `bdf` of `kind` and nothing more (IDs 0, no BARs, no
    /// capabilities, not a bridge): for tests and tools that describe a
    /// topology without enumerating one.
    pub fn new(bdf: Bdf, kind: FunctionKind) -> Function {
        Function {
            bdf,
            vendor: 0,
            device: 0,
            class: 0,
            header_type: HEADER_TYPE_NORMAL,
            kind,
            parent: None,
            bars: ArrayVec::new(),
            io_bars: 0,
            acs: None,
            multifunction: false,
            flr: false,
            pcie_cap: None,
            interrupt_pin: 0,
            bridge: None,
        }
    }
    /// This function as a bridge to `secondary` (and nothing below it).
    pub fn bridging(mut self, secondary: u8) -> Function {
        self.header_type = HEADER_TYPE_BRIDGE;
        self.bridge = Some(BridgeInfo { primary: self.bdf.bus, secondary, subordinate: secondary, mem: None, pref: None });
        self
    }
}

/// Everything enumeration found below one host bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTopology {
    /// The root bus number (first of `bus-range`).
    pub root_bus: u8,
    /// The highest bus number assigned.
    pub last_bus: u8,
    /// Functions in enumeration order (depth first, device order).
    pub functions: Vec<Function>,
}

impl HostTopology {
    /// The function at `bdf`.
    pub fn find(&self, bdf: Bdf) -> Option<&Function> {
        self.functions.iter().find(|f| f.bdf == bdf)
    }

    /// The GIC interrupt function `idx`'s INTx pin arrives on, through
    /// `map` (the host bridge's `interrupt-map`): the pin swizzled through
    /// every bridge above it to the root bus. `None`: it has no pin, or the
    /// map does not reach the GIC for it.
    pub fn intx(&self, idx: usize, map: &crate::dt::IntxMap) -> Option<crate::dt::Irq> {
        let mut f = self.functions.get(idx)?;
        let mut pin = f.interrupt_pin;
        if !(1..=4).contains(&pin) {
            return None;
        }
        // Parents come before their children: the walk ends within as many
        // steps as there are functions, whatever the indices say.
        for _ in 0..self.functions.len() {
            let Some(p) = f.parent else { return map.lookup(f.bdf, pin) };
            pin = crate::dt::swizzle(pin, f.bdf.dev);
            f = self.functions.get(p)?;
        }
        None
    }
}

/// A memory window of the host bridge, from its `ranges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Where the CPU reaches the window's first byte.
    pub cpu: PhysAddr,
    /// The window's first address on the PCI bus.
    pub pci: u64,
    /// Size in bytes.
    pub size: u64,
    /// Marked prefetchable (phys.hi bit 30).
    pub prefetchable: bool,
    /// Declared as 64-bit memory space (phys.hi space code 11).
    pub mem64: bool,
}

impl Window {
    /// One past the last PCI address.
    pub fn pci_end(&self) -> u64 {
        self.pci.saturating_add(self.size)
    }
    /// The CPU address of PCI address `pci` (inside the window).
    pub fn cpu_of(&self, pci: u64) -> PhysAddr {
        PhysAddr(self.cpu.0.wrapping_add(pci.wrapping_sub(self.pci)))
    }
    /// The CPU range of `[start, end)` in PCI addresses.
    pub fn cpu_range(&self, start: u64, end: u64) -> PhysRange {
        PhysRange::from_bounds(self.cpu_of(start).0, self.cpu_of(end).0)
    }
}
