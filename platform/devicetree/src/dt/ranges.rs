//! Addresses through buses (Devicetree Specification v0.4, §2.3.8): a
//! node's `reg` is in its parent's address space, which reaches the CPU's
//! through every ancestor's `ranges` — empty for an identity mapping, else
//! (child address, parent address, size) triples in the bus's own
//! `#address-cells`, its parent's, and its own `#size-cells`. Real SoCs put
//! their SMMUs, UARTs and PCIe controllers under such buses (i.MX95's
//! `/soc/bus@49000000`, TI K3's `/bus@100000`). No heap: the boot
//! translates before it has one.

use super::blob::be_cells;
use super::{DeviceTree, DtError, DtNode, MAX_DEPTH};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// A node's ancestors, root first (what a walk holds on its way down).
pub type Ancestors<'a> = ArrayVec<DtNode<'a>, MAX_DEPTH>;

/// Translates `[addr, addr + size)` from the address space of the children
/// of `buses.last()` to the CPU's, through each bus's `ranges` (`buses`
/// are ancestors, root first; the root's children's addresses are CPU
/// addresses). A bus without `ranges` does not map its children into its
/// parent's space: an error naming it.
pub fn translate<'a, 'b>(buses: impl DoubleEndedIterator<Item = &'b DtNode<'a>>, addr: u64, size: u64) -> Result<u64, DtError>
where
    'a: 'b,
{
    let mut a = addr;
    for bus in buses.rev().filter(|b| b.depth > 0) {
        let Some(v) = bus.prop("ranges") else {
            return Err(bus.bad("ranges", "missing: the addresses of its children do not reach the CPU"));
        };
        if v.is_empty() {
            continue; // identity
        }
        let (ca, pa, sc) = (bus.own_addr_cells()? as usize, bus.addr_cells as usize, bus.own_size_cells()? as usize);
        let entry = (ca + pa + sc) * 4;
        if ca > 2 || pa > 2 || ca == 0 || v.len() % entry != 0 {
            return Err(bus.bad("ranges", "length is not a multiple of (child + parent address + size) cells"));
        }
        let mut hit = None;
        for e in v.chunks_exact(entry) {
            let bad = || bus.bad("ranges", "bad cells");
            let cb = be_cells(e, ca).ok_or_else(bad)?;
            let pb = be_cells(&e[ca * 4..], pa).ok_or_else(bad)?;
            let sz = be_cells(&e[(ca + pa) * 4..], sc).ok_or_else(bad)?;
            let inside = a >= cb && a.checked_add(size).zip(cb.checked_add(sz)).is_some_and(|(end, bus_end)| end <= bus_end);
            if inside {
                hit = Some((a - cb).checked_add(pb).ok_or_else(|| bus.bad("ranges", "translated address overflows"))?);
                break;
            }
        }
        a = hit.ok_or_else(|| bus.bad("ranges", "does not cover a child's address"))?;
    }
    Ok(a)
}

/// [`translate`] of a whole range.
pub fn translate_range<'a, 'b>(buses: impl DoubleEndedIterator<Item = &'b DtNode<'a>>, r: PhysRange) -> Result<PhysRange, DtError>
where
    'a: 'b,
{
    let start = translate(buses, r.start.0, r.size())?;
    Ok(PhysRange::new(start, r.size()).unwrap_or(PhysRange::from_bounds(start, u64::MAX)))
}

/// What [`DeviceTree::walk_with_ancestors`] calls for each node: the node
/// and its ancestors, root first.
pub type WithAncestors<'f, 'a, E> = dyn FnMut(&DtNode<'a>, &[DtNode<'a>]) -> Result<(), E> + 'f;

impl<'a> DeviceTree<'a> {
    /// Calls `f` for every node, depth first, parents first, with the
    /// node's ancestors (root first). Stops at the first error `f` returns.
    pub fn walk_with_ancestors<E: From<DtError>>(&self, f: &mut WithAncestors<'_, 'a, E>) -> Result<(), E> {
        let mut stack = Ancestors::new();
        self.walk::<E>(&mut |n| {
            stack.truncate(n.depth);
            f(n, &stack)?;
            // The walk follows at most MAX_DEPTH levels: never full.
            stack.try_push(*n).map_err(|_| DtError::TooMany("levels of node nesting"))?;
            Ok(())
        })
    }

    /// The node at `path` (as [`find`] takes it) with its ancestors.
    ///
    /// [`find`]: DeviceTree::find
    pub fn find_with_ancestors(&self, path: &str) -> Result<Option<(DtNode<'a>, Ancestors<'a>)>, DtError> {
        let mut ancestors = Ancestors::new();
        let mut cur = self.root();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let (want, any_unit) = (comp.as_bytes(), !comp.contains('@'));
            let is = |c: &DtNode<'a>| {
                let n = c.blob.name(c.place);
                n == want || (any_unit && n.split(|&b| b == b'@').next() == Some(want))
            };
            let next = if cur.depth == 0 { self.top_level()?.find(is) } else { cur.children_from(cur.layout()?).find(is) };
            match next {
                Some(n) => {
                    ancestors.try_push(cur).map_err(|_| DtError::TooMany("levels of node nesting"))?;
                    cur = n;
                }
                None => return Ok(None),
            }
        }
        Ok(Some((cur, ancestors)))
    }
}
