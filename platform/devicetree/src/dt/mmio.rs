//! The MMIO regions the kernel identity-maps as Device memory: the `reg`
//! (Devicetree Specification v0.4, §2.3.6) of what it touches — the SMMUs,
//! the GICv3 and its ITSs, the PCI host bridges (and the memory windows of
//! their `ranges`, §2.3.8 and PCI Bus Binding §2.2.1.1), the console, and
//! the DMA masters (`iommus`) — wherever they sit in the tree (SMMUs even
//! when disabled, which an overlay may enable), each
//! translated through its parents' `ranges`. Nothing else is mapped: a
//! real SoC has hundreds of devices the kernel never touches.

use super::blob::be_cells;
use super::ranges::translate_range;
use super::smmu::{disabled, SMMU_V3};
use super::{DeviceTree, DtError, DtNode};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// Most MMIO regions collected for the identity map. The SMMUs, GIC, PCI
/// hosts and console of the real boards of the corpus take at most a few
/// dozen (the corpus tests check every one fits); DMA masters are added
/// while there is room, since the kernel does not touch their registers.
pub const MAX_MMIO: usize = 128;

impl<'a> DeviceTree<'a> {
    /// MMIO regions the kernel may touch, for the identity map (see the
    /// module's text), CPU physical addresses.
    pub fn mmio_regions(&self) -> Result<ArrayVec<PhysRange, MAX_MMIO>, DtError> {
        let mut out: ArrayVec<PhysRange, MAX_MMIO> = ArrayVec::new();
        let console = self.stdout_node()?.map(|(n, _)| n.place.name);
        self.walk_with_ancestors::<DtError>(&mut |n, ancestors| {
            // Disabled SMMUs are mapped too (and never touched unless an
            // overlay the kernel merges enables them).
            if n.depth == 0 || (disabled(n, ancestors).is_some() && !n.is_compatible(SMMU_V3)) {
                return Ok(());
            }
            // Below a PCI host are PCI functions (3-cell addresses): not
            // MMIO of their own in the tree's sense.
            if ancestors.iter().any(|a| a.str_prop("device_type").ok().flatten() == Some("pci")) {
                return Ok(());
            }
            let [compatible, device_type, reg, ranges, iommus, msi_controller] =
                n.first_of(["compatible", "device_type", "reg", "ranges", "iommus", "msi-controller"]);
            let is = |c: &str| DtNode::lists(compatible, c);
            let pci = n.str_value("device_type", device_type)? == Some("pci");
            let gic_child = msi_controller.is_some() && ancestors.last().is_some_and(|p| p.is_compatible("arm,gic-v3"));
            let needed = is(SMMU_V3) || is("arm,gic-v3") || is("arm,gic-v3-its") || gic_child || pci || console == Some(n.place.name);
            if needed {
                for r in n.regs_of(reg) {
                    let r = translate_range(ancestors.iter(), r?)?;
                    out.try_push(r).map_err(|_| DtError::TooMany("MMIO regions"))?;
                }
                if pci {
                    let bridge = Self::windows_of(n, ranges)?;
                    for r in bridge {
                        out.try_push(translate_range(ancestors.iter(), r)?).map_err(|_| DtError::TooMany("MMIO regions"))?;
                    }
                }
            } else if iommus.is_some() {
                // A DMA master: mapped when its registers translate and
                // there is room (the kernel does not touch them yet).
                for r in n.regs_of(reg) {
                    let Ok(r) = r.and_then(|r| translate_range(ancestors.iter(), r)) else { break };
                    if out.try_push(r).is_err() {
                        break;
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The CPU-side ranges of a PCI host bridge's `ranges` (3 child cells,
    /// the parent's address cells, 2 size cells), memory spaces only, in
    /// the address space of the host's parent.
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
            if space < 2 || size == 0 {
                continue; // configuration space is in `reg`; I/O space is never used
            }
            let r = PhysRange::new(cpu, size).ok_or_else(|| host.bad("ranges", "window overflows"))?;
            out.try_push(r).map_err(|_| host.bad("ranges", "more than 8 windows"))?;
        }
        Ok(out)
    }
}
