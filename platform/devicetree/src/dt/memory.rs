//! RAM and what firmware keeps of it: `/memory` nodes (Devicetree
//! Specification v0.4, §3.4), `/reserved-memory` (§3.5) and the header's
//! memory reservation block, `/memreserve/` in DTS (§5.3).

use super::blob::be_cells;
use super::{DeviceTree, DtError, DtNode};
use crate::addr::PhysRange;
use crate::fdt::FDT_RESERVE_ENTRY;
use arrayvec::ArrayVec;

impl<'a> DeviceTree<'a> {
    /// RAM banks: `reg` of every enabled `device_type = "memory"` node,
    /// banks of size 0 left out. Empty when the tree has none: many boards'
    /// trees leave `/memory` to the bootloader (absent, or `reg` of size
    /// 0), which fills it in before it starts the kernel.
    pub fn memory(&self) -> Result<ArrayVec<PhysRange, MAX_BANKS>, DtError> {
        let mut out = ArrayVec::new();
        let root = self.root();
        let (ac, sc, _) = root.scan();
        let (ac, sc) = (root.addr_cells_of(ac), root.size_cells_of(sc));
        for place in self.top_places() {
            // The root's cells are an error only once there is a child: a
            // root without children has no memory rather than bad cells.
            let n = DtNode { blob: self.blob, place, addr_cells: ac.clone()?, size_cells: sc.clone()?, depth: 1 };
            let [device_type, status, reg] = n.first_of(["device_type", "status", "reg"]);
            if n.str_value("device_type", device_type)? == Some("memory") && DtNode::enabled(status) {
                for r in n.regs_of(reg) {
                    let r = r?;
                    if !r.is_empty() {
                        out.try_push(r).map_err(|_| DtError::TooMany("memory banks"))?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// `/memreserve/` entries of the header.
    pub fn memreserve(&self) -> impl Iterator<Item = PhysRange> + 'a {
        let (data, mut at) = (self.bytes, self.layout.rsvmap);
        // Entries until the (0, 0) terminator the check found.
        core::iter::from_fn(move || {
            let e = data.get(at..at.checked_add(FDT_RESERVE_ENTRY)?)?;
            at += FDT_RESERVE_ENTRY;
            let (base, size) = (be_cells(&e[..8], 2)?, be_cells(&e[8..], 2)?);
            (base != 0 || size != 0).then_some((base, size))
        })
        .filter_map(|(base, size)| PhysRange::new(base, size))
    }

    /// Static `/reserved-memory` regions (children with `reg`), all of
    /// them: real boards reserve dozens (TI's J721E boards 20 and more).
    pub fn reserved_memory(&self) -> Result<ArrayVec<PhysRange, MAX_RESERVED>, DtError> {
        let mut out = ArrayVec::new();
        if let Some(rm) = self.find("/reserved-memory")? {
            for c in rm.children_from(rm.layout()?) {
                let [status, reg] = c.first_of(["status", "reg"]);
                if !DtNode::enabled(status) {
                    continue;
                }
                for r in c.regs_of(reg) {
                    out.try_push(r?).map_err(|_| DtError::TooMany("reserved-memory regions"))?;
                }
            }
        }
        Ok(out)
    }
}

/// Most RAM banks (`/memory` `reg` entries) the machine holds.
pub const MAX_BANKS: usize = 16;
/// Most `/reserved-memory` regions the machine holds: more than any tree of
/// the real-board corpus has (its tests check each fits).
pub const MAX_RESERVED: usize = 64;
