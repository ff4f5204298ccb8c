//! Capability lists: the PCI Express capability (port type, FLR) and the
//! ACS extended capability.
//!
//! Both lists are linked by pointers the device supplies, so every walk is
//! bounded and ignores pointers that leave the list's region: a broken or
//! hostile device gives "no capability", never a loop.

use super::regs::*;
use super::{AcsFlags, Bdf, ConfigSpace};

/// Most extended capabilities followed: (4096 - 256) / 4 possible positions.
const MAX_EXT_CAPS: usize = 960;

/// What the capability lists of one function say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Offset of the PCI Express capability.
    pub pcie: Option<u8>,
    /// PCIe Device/Port Type (bits 7:4 of the PCI Express Capabilities register).
    pub port_type: Option<u8>,
    /// Device Capabilities says Function Level Reset is supported.
    pub flr: bool,
    /// Offset of the ACS extended capability.
    pub acs: Option<u16>,
}

/// Finds the standard capability `id`.
pub fn find_cap(cs: &impl ConfigSpace, bdf: Bdf, id: u8) -> Option<u8> {
    devicetree::pci::config::capabilities(cs, bdf).find(|&(_, c)| c == id).map(|(at, _)| at)
}

/// Finds the extended capability `id` (PCIe functions only).
pub fn find_ext_cap(cs: &impl ConfigSpace, bdf: Bdf, id: u16) -> Option<u16> {
    let mut ptr = EXT_CAP_START;
    for _ in 0..MAX_EXT_CAPS {
        let hdr = cs.read32(bdf, ptr);
        // An all-zero header means "no extended capabilities"; all-ones
        // means the function (or the config access) is gone.
        if hdr == 0 || hdr == u32::MAX {
            return None;
        }
        if hdr & 0xffff == u32::from(id) {
            return Some(ptr);
        }
        let next = ((hdr >> 20) & 0xffc) as u16;
        if next < EXT_CAP_START {
            return None;
        }
        ptr = next;
    }
    None
}

/// Reads the capabilities enumeration reports.
pub fn read_caps(cs: &impl ConfigSpace, bdf: Bdf) -> Caps {
    let mut c = Caps::default();
    if let Some(p) = find_cap(cs, bdf, CAP_ID_PCIE) {
        let base = u16::from(p);
        c.pcie = Some(p);
        c.port_type = Some(((cs.read16(bdf, base + PCIE_FLAGS) >> 4) & 0xf) as u8);
        c.flr = cs.read32(bdf, base + PCIE_DEVCAP) & DEVCAP_FLR != 0;
        // Extended configuration space exists only for PCI Express functions.
        c.acs = find_ext_cap(cs, bdf, EXT_CAP_ID_ACS);
    }
    c
}

/// Turns on the ACS controls in [`AcsFlags::ENABLE`] that the function
/// implements, and returns (capability, control as read back).
pub fn enable_acs(cs: &mut impl ConfigSpace, bdf: Bdf, at: u16) -> (AcsFlags, AcsFlags) {
    let cap = cs.read16(bdf, at + ACS_CAP);
    let ctrl = cs.read16(bdf, at + ACS_CTRL);
    cs.write16(bdf, at + ACS_CTRL, ctrl | (cap & AcsFlags::ENABLE));
    (AcsFlags(cap), AcsFlags(cs.read16(bdf, at + ACS_CTRL)))
}
