//! The MMIO regions the kernel identity-maps as Device memory: `reg`
//! (Devicetree Specification v0.4, §2.3.6) of the root's enabled device
//! children and the memory windows of PCI host bridges' `ranges` (§2.3.8,
//! PCI Bus Binding §2.2.1.1).

use super::blob::be_cells;
use super::{DeviceTree, DtError, DtNode};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// Most MMIO regions collected for the identity map.
pub const MAX_MMIO: usize = 128;

impl<'a> DeviceTree<'a> {
    /// MMIO regions the kernel may touch, for the identity map: `reg` of
    /// enabled device nodes directly under the root (not memory, CPUs or
    /// reserved memory), and the CPU side of PCI host bridges' `ranges`.
    pub fn mmio_regions(&self) -> Result<ArrayVec<PhysRange, MAX_MMIO>, DtError> {
        let mut out: ArrayVec<PhysRange, MAX_MMIO> = ArrayVec::new();
        for n in self.top_level()? {
            let [status, device_type, reg, ranges] = n.first_of(["status", "device_type", "reg", "ranges"]);
            if !DtNode::enabled(status)
                || n.str_value("device_type", device_type)? == Some("memory")
                || matches!(n.blob.name(n.place), b"cpus" | b"reserved-memory" | b"chosen" | b"aliases" | b"psci" | b"timer")
            {
                continue;
            }
            for r in n.reg_of(reg)? {
                out.try_push(r).map_err(|_| DtError::TooMany("MMIO regions"))?;
            }
            if n.str_value("device_type", device_type)? == Some("pci") {
                for r in Self::windows_of(&n, ranges)? {
                    out.try_push(r).map_err(|_| DtError::TooMany("MMIO regions"))?;
                }
            }
        }
        Ok(out)
    }

    /// The CPU-side ranges of a PCI host bridge's `ranges` (3 child cells,
    /// the parent's address cells, 2 size cells), memory spaces only.
    pub fn pci_windows(&self, host: &DtNode<'a>) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        Self::windows_of(host, host.prop("ranges"))
    }

    /// [`pci_windows`] from the value `v` of `host`'s `ranges`.
    ///
    /// [`pci_windows`]: DeviceTree::pci_windows
    fn windows_of(host: &DtNode<'a>, v: Option<&[u8]>) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        let mut out = ArrayVec::new();
        let Some(v) = v else { return Ok(out) };
        let pac = host.addr_cells as usize;
        let entry = (3 + pac + 2) * 4;
        if pac == 0 || pac > 2 || v.len() % entry != 0 {
            return Err(host.bad("ranges", "length is not a multiple of (3 + parent #address-cells + 2) cells"));
        }
        for e in v.chunks_exact(entry) {
            let space = (u32::from_be_bytes([e[0], e[1], e[2], e[3]]) >> 24) & 0x3;
            let cpu = be_cells(&e[12..], pac).ok_or_else(|| host.bad("ranges", "bad parent address"))?;
            let size = be_cells(&e[12 + pac * 4..], 2).ok_or_else(|| host.bad("ranges", "bad size"))?;
            if space < 2 {
                continue; // configuration space is in `reg`; I/O space is never used
            }
            let r = PhysRange::new(cpu, size).ok_or_else(|| host.bad("ranges", "window overflows"))?;
            out.try_push(r).map_err(|_| host.bad("ranges", "more than 8 windows"))?;
        }
        Ok(out)
    }
}
