//! PCI configuration space as the specifications name it: register
//! offsets and bits (PCI Local Bus 3.0 §6.1, PCI-to-PCI Bridge 1.2 §3.2,
//! PCI Express Base §7.5.3, §7.7.8) and [`ConfigSpace`], access to one
//! function's space at a time. The kernel implements the trait over ECAM
//! (`platform::pci::ecam`); enumeration, capability walks and the
//! partitions' virtual PCI host (`partitions::vm::vpci`) use it.

use super::Bdf;

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
    /// Interrupt Line (8 bits): software's scratch register.
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt Pin (8 bits): 0 none, 1..=4 INTA..INTD.
    pub const INTERRUPT_PIN: u16 = 0x3d;

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
    /// Command: INTx Emulation Disable.
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    /// Status: Capabilities List present.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    /// Header Type: multi-function device.
    pub const HEADER_MULTIFUNCTION: u8 = 0x80;
    /// Header Type layouts (general device, PCI-to-PCI bridge): the
    /// topology's own values.
    pub use crate::pci::{HEADER_TYPE_BRIDGE, HEADER_TYPE_NORMAL};

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

/// The standard capability list of `bdf`: (offset, ID) in list order. The
/// device supplies the pointers, so the walk is bounded: it ends at a
/// pointer into the header (below 0x40, as 0 does) or at one it has
/// followed before, and after the 48 positions there are.
pub fn capabilities<'c>(cs: &'c impl ConfigSpace, bdf: Bdf) -> impl Iterator<Item = (u8, u8)> + 'c {
    use regs::{CAP_PTR, STATUS, STATUS_CAP_LIST};
    let mut ptr = if cs.read16(bdf, STATUS) & STATUS_CAP_LIST != 0 { cs.read8(bdf, CAP_PTR) & 0xfc } else { 0 };
    // Bit i: position 0x40 + 4 i was visited.
    let mut seen = 0u64;
    core::iter::from_fn(move || {
        if ptr < 0x40 {
            return None;
        }
        let bit = 1u64 << ((ptr - 0x40) / 4);
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        let at = ptr;
        ptr = cs.read8(bdf, u16::from(at) + 1) & 0xfc;
        Some((at, cs.read8(bdf, u16::from(at))))
    })
}
