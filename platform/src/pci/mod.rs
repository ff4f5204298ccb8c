//! PCI Express host-side support: configuration-space access, enumeration of
//! a host bridge into a plain [`HostTopology`], and the per-function controls
//! the ownership work needs (bus master, memory decode, function-level reset).
//!
//! Everything goes through the small [`ConfigSpace`] trait, so enumeration is
//! tested on the host against a synthetic ECAM; the kernel implements the
//! trait with [`ecam::EcamConfigSpace`] (volatile MMIO, the one `unsafe`
//! constructor of this module).
//!
//! Register offsets and bits are named as in the PCI Local Bus Specification
//! 3.0 (type 0/1 headers, §6.1 and PCI-to-PCI Bridge Spec 1.2 §3.2) and the
//! PCI Express Base Specification (§7.5.3 PCI Express Capability, §7.7.8 ACS
//! Extended Capability).

pub mod caps;
pub mod control;
pub mod ecam;
pub mod enumerate;
#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;

use crate::addr::{PhysAddr, PhysRange};
use alloc::vec::Vec;
use arrayvec::ArrayVec;

pub use control::{function_level_reset, set_bus_master, set_memory_decode};
pub use enumerate::{enumerate, Window};

/// Configuration-space registers (PCI 3.0 §6.1, PCI-to-PCI Bridge 1.2 §3.2).
pub mod regs {
    /// Vendor ID (16 bits); 0xffff when no function answers.
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bits), then the 24-bit class code.
    pub const REVISION: u16 = 0x08;
    /// Header Type (8 bits); bit 7 = multi-function device.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// First Base Address Register.
    pub const BAR0: u16 = 0x10;
    /// Capabilities Pointer (8 bits).
    pub const CAP_PTR: u16 = 0x34;

    /// Type 1: Primary Bus Number (8 bits).
    pub const PRIMARY_BUS: u16 = 0x18;
    /// Type 1: Secondary Bus Number (8 bits).
    pub const SECONDARY_BUS: u16 = 0x19;
    /// Type 1: Subordinate Bus Number (8 bits).
    pub const SUBORDINATE_BUS: u16 = 0x1a;
    /// Type 1: I/O Base (8 bits).
    pub const IO_BASE: u16 = 0x1c;
    /// Type 1: I/O Limit (8 bits).
    pub const IO_LIMIT: u16 = 0x1d;
    /// Type 1: Memory Base (16 bits, address bits 31:20 in bits 15:4).
    pub const MEMORY_BASE: u16 = 0x20;
    /// Type 1: Memory Limit (16 bits).
    pub const MEMORY_LIMIT: u16 = 0x22;
    /// Type 1: Prefetchable Memory Base (16 bits; bits 3:0 = 1 when 64-bit).
    pub const PREF_MEMORY_BASE: u16 = 0x24;
    /// Type 1: Prefetchable Memory Limit (16 bits).
    pub const PREF_MEMORY_LIMIT: u16 = 0x26;
    /// Type 1: Prefetchable Base Upper 32 Bits.
    pub const PREF_BASE_UPPER32: u16 = 0x28;
    /// Type 1: Prefetchable Limit Upper 32 Bits.
    pub const PREF_LIMIT_UPPER32: u16 = 0x2c;
    /// Type 1: I/O Base Upper 16 Bits.
    pub const IO_BASE_UPPER16: u16 = 0x30;
    /// Type 1: I/O Limit Upper 16 Bits.
    pub const IO_LIMIT_UPPER16: u16 = 0x32;

    /// Command: I/O Space Enable.
    pub const CMD_IO: u16 = 1 << 0;
    /// Command: Memory Space Enable.
    pub const CMD_MEMORY: u16 = 1 << 1;
    /// Command: Bus Master Enable.
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
    /// Status: Capabilities List present.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    /// Header Type: multi-function device.
    pub const HEADER_MULTIFUNCTION: u8 = 0x80;
    /// Header Type layout: general device.
    pub const HEADER_TYPE_NORMAL: u8 = 0;
    /// Header Type layout: PCI-to-PCI bridge.
    pub const HEADER_TYPE_BRIDGE: u8 = 1;

    /// BAR bit 0: I/O space indicator.
    pub const BAR_IO: u32 = 1 << 0;
    /// BAR bits 2:1: memory type (00 = 32-bit, 10 = 64-bit).
    pub const BAR_TYPE_MASK: u32 = 0b110;
    /// BAR memory type 64-bit.
    pub const BAR_TYPE_64: u32 = 0b100;
    /// BAR bit 3: prefetchable.
    pub const BAR_PREFETCH: u32 = 1 << 3;

    /// Capability ID: PCI Express (PCIe §7.5.3).
    pub const CAP_ID_PCIE: u8 = 0x10;
    /// PCIe capability: PCI Express Capabilities register (16 bits), +2.
    pub const PCIE_FLAGS: u16 = 0x02;
    /// PCIe capability: Device Capabilities (32 bits), +4.
    pub const PCIE_DEVCAP: u16 = 0x04;
    /// PCIe capability: Device Control (16 bits), +8.
    pub const PCIE_DEVCTL: u16 = 0x08;
    /// PCIe capability: Device Status (16 bits), +0xa.
    pub const PCIE_DEVSTA: u16 = 0x0a;
    /// Device Capabilities: Function Level Reset Capability.
    pub const DEVCAP_FLR: u32 = 1 << 28;
    /// Device Control: Initiate Function Level Reset.
    pub const DEVCTL_BCR_FLR: u16 = 1 << 15;
    /// Device Status: Transactions Pending.
    pub const DEVSTA_TRPND: u16 = 1 << 5;

    /// First extended capability (PCIe §7.6.3).
    pub const EXT_CAP_START: u16 = 0x100;
    /// Extended capability ID: Access Control Services (PCIe §7.7.8).
    pub const EXT_CAP_ID_ACS: u16 = 0x000d;
    /// ACS Capability register (16 bits), +4.
    pub const ACS_CAP: u16 = 0x04;
    /// ACS Control register (16 bits), +6.
    pub const ACS_CTRL: u16 = 0x06;
}

/// Size of one function's configuration space in ECAM.
pub const CONFIG_SPACE_SIZE: u16 = 4096;
/// Vendor ID read back when no function answers (master abort / UR).
pub const NO_DEVICE: u16 = 0xffff;

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

impl defmt::Format for Bdf {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u8:02x}:{=u8:02x}.{=u8}", self.bus, self.dev, self.func)
    }
}

/// Access to PCI configuration space, one function at a time.
///
/// Offsets are within the function's 4 KiB space and aligned to the access
/// width; an implementation returns all-ones for a function that does not
/// answer (or an offset it cannot serve) and ignores such writes, as PCI does
/// for an Unsupported Request.
pub trait ConfigSpace {
    /// Reads a byte.
    fn read8(&self, bdf: Bdf, off: u16) -> u8;
    /// Reads a 16-bit register.
    fn read16(&self, bdf: Bdf, off: u16) -> u16;
    /// Reads a 32-bit register.
    fn read32(&self, bdf: Bdf, off: u16) -> u32;
    /// Writes a byte.
    fn write8(&mut self, bdf: Bdf, off: u16, v: u8);
    /// Writes a 16-bit register.
    fn write16(&mut self, bdf: Bdf, off: u16, v: u16);
    /// Writes a 32-bit register.
    fn write32(&mut self, bdf: Bdf, off: u16, v: u32);
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
            None if header_type == regs::HEADER_TYPE_BRIDGE => FunctionKind::PciBridge,
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
    /// The flags the kernel turns on wherever a function implements them:
    /// the isolation set (SV, RR, CR, UF, which Linux requires for
    /// separate IOMMU groups) plus Translation Blocking, because bulkhead
    /// never enables ATS, so a translated request can only be an attack.
    pub const ENABLE: u16 = Self::SV | Self::TB | Self::RR | Self::CR | Self::UF;
    /// Whether every bit of `bits` is set.
    pub const fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
}

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
    /// For bridges: bus numbers and windows.
    pub bridge: Option<BridgeInfo>,
}

impl Function {
    /// The requester ID the function uses on the bus.
    pub const fn rid(&self) -> u16 {
        self.bdf.rid()
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
}

/// Why enumeration or a function control failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// A bridge needs a bus number beyond the host bridge's `bus-range`.
    BusesExhausted {
        /// The bridge.
        bridge: Bdf,
    },
    /// Bridges nested deeper than the kernel follows.
    TooDeep {
        /// The bridge that would go one level too deep.
        bridge: Bdf,
    },
    /// No `ranges` window of the right kind has room for a BAR.
    WindowExhausted {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        bar: u8,
        /// BAR size.
        size: u64,
    },
    /// A 64-bit BAR in the last BAR slot (its upper half does not exist).
    BadBar {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        bar: u8,
    },
    /// No function answers at this address.
    NotPresent(Bdf),
    /// The function does not support Function Level Reset.
    FlrUnsupported(Bdf),
    /// After an FLR the function did not answer within the time allowed.
    FlrTimeout(Bdf),
}

impl defmt::Format for PciError {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            PciError::BusesExhausted { bridge } => {
                defmt::write!(f, "bridge {}: no bus number left in the host bridge's bus-range", bridge)
            }
            PciError::TooDeep { bridge } => defmt::write!(f, "bridge {}: bridges nested too deeply", bridge),
            PciError::WindowExhausted { bdf, bar, size } => defmt::write!(
                f,
                "{} BAR{=u8} ({=u64:#x} bytes): no room left in the host bridge's memory windows",
                bdf,
                bar,
                size
            ),
            PciError::BadBar { bdf, bar } => defmt::write!(f, "{} BAR{=u8}: 64-bit BAR in the last slot", bdf, bar),
            PciError::NotPresent(bdf) => defmt::write!(f, "{}: no function answers", bdf),
            PciError::FlrUnsupported(bdf) => defmt::write!(f, "{}: no Function Level Reset capability", bdf),
            PciError::FlrTimeout(bdf) => defmt::write!(f, "{}: did not come back after Function Level Reset", bdf),
        }
    }
}
