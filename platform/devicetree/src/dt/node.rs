//! A node as a walk sees it, and the standard properties (Devicetree
//! Specification v0.4, §2.3): `compatible`, `status`, `#address-cells` and
//! `#size-cells`, `reg`, `phandle`, plus plain property access.

use super::blob::{be_cells, Blob, Children, Place, Props};
use super::{text, DtError};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// A node together with its parent's cell sizes, as a walk sees it.
#[derive(Clone, Copy)]
pub struct DtNode<'a> {
    pub(super) blob: Blob<'a>,
    pub(super) place: Place,
    /// Parent's `#address-cells`.
    pub addr_cells: u32,
    /// Parent's `#size-cells`.
    pub size_cells: u32,
    /// Nesting depth (root = 0).
    pub depth: usize,
}

impl<'a> DtNode<'a> {
    /// Node name with unit address (`smmuv3@9050000`).
    pub fn name(&self) -> &'a str {
        // The check let only ASCII names through.
        core::str::from_utf8(self.blob.name(self.place)).unwrap_or("")
    }
    /// The node's properties, in blob order.
    pub(super) fn props(&self) -> Props<'a> {
        Props { blob: self.blob, at: self.place.props }
    }
    /// Raw property bytes (of the first property of that name).
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.as_bytes();
        // No property name holds a NUL: such a `name` finds nothing.
        self.props().find(|&(n, _)| self.blob.name_is(n, name)).filter(|_| !name.contains(&0)).map(|(_, v)| v)
    }
    /// [`prop`] of a name known to hold no NUL (the readers' literals),
    /// without looking for one.
    ///
    /// [`prop`]: DtNode::prop
    fn literal(&self, name: &'static str) -> Option<&'a [u8]> {
        self.props().find(|&(n, _)| self.blob.name_is(n, name.as_bytes())).map(|(_, v)| v)
    }
    /// [`prop`] of each of `names` (literals, without NULs), from one pass
    /// over the properties.
    ///
    /// [`prop`]: DtNode::prop
    pub(super) fn first_of<const N: usize>(&self, names: [&str; N]) -> [Option<&'a [u8]>; N] {
        let mut out = [None; N];
        let mut missing = N;
        for (nameoff, value) in self.props() {
            for (slot, name) in out.iter_mut().zip(&names) {
                if slot.is_none() && self.blob.name_is(nameoff, name.as_bytes()) {
                    *slot = Some(value);
                    missing -= 1;
                }
            }
            if missing == 0 {
                break;
            }
        }
        out
    }
    /// The node's properties in blob order, as (name, value): for a reader
    /// that needs many of them, one pass instead of a [`prop`] each. Names
    /// are bytes (ASCII: the check refuses any other name); a name may
    /// come twice, and [`prop`] gives the first.
    ///
    /// [`prop`]: DtNode::prop
    pub fn properties(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let strings = self.blob.strings;
        self.props().map(move |(nameoff, value)| {
            let s = strings.get(nameoff..).unwrap_or(&[]);
            (s.split(|&b| b == 0).next().unwrap_or(&[]), value)
        })
    }
    /// Whether the property exists (boolean properties).
    pub fn has(&self, name: &str) -> bool {
        self.prop(name).is_some()
    }
    /// A string property (first string of a list).
    pub fn str_prop(&self, name: &'static str) -> Result<Option<&'a str>, DtError> {
        self.str_value(name, self.prop(name))
    }
    /// `v`, the value of this node's property `name` (from [`properties`]),
    /// read as [`str_prop`] reads it.
    ///
    /// [`properties`]: DtNode::properties
    /// [`str_prop`]: DtNode::str_prop
    pub fn str_value(&self, name: &'static str, v: Option<&'a [u8]>) -> Result<Option<&'a str>, DtError> {
        let Some(v) = v else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).ok_or_else(|| self.bad(name, "not a NUL-terminated string"))?;
        core::str::from_utf8(&v[..end]).map(Some).map_err(|_| self.bad(name, "not UTF-8"))
    }
    /// Iterates the strings of a string-list property.
    pub fn strings(&self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let v = self.prop(name).unwrap_or(&[]);
        v.split(|&b| b == 0).filter(|s| !s.is_empty()).filter_map(|s| core::str::from_utf8(s).ok())
    }
    /// Whether `compatible` lists `c`.
    pub fn is_compatible(&self, c: &str) -> bool {
        DtNode::lists(self.literal("compatible"), c)
    }
    /// Whether a `compatible` value (from [`properties`]) lists `c`.
    ///
    /// [`properties`]: DtNode::properties
    pub fn lists(compatible: Option<&[u8]>, c: &str) -> bool {
        // Byte-wise: a string equal to `c` is UTF-8 like `c`.
        let c = c.as_bytes();
        compatible.is_some_and(|v| v.split(|&b| b == 0).any(|s| !s.is_empty() && s == c))
    }
    /// `status` is absent, "okay" or "ok".
    pub fn is_enabled(&self) -> bool {
        DtNode::enabled(self.literal("status"))
    }
    /// Whether a `status` value (from [`properties`]) leaves the node enabled.
    ///
    /// [`properties`]: DtNode::properties
    pub fn enabled(status: Option<&[u8]>) -> bool {
        match status {
            None => true,
            Some(v) => matches!(v, b"okay\0" | b"ok\0" | b"okay" | b"ok"),
        }
    }
    /// A one-cell property.
    pub fn u32_prop(&self, name: &'static str) -> Result<Option<u32>, DtError> {
        self.one_cell(name, self.prop(name))
    }
    /// `v`, the value of this node's property `name` (from [`properties`]),
    /// read as [`u32_prop`] reads it.
    ///
    /// [`properties`]: DtNode::properties
    /// [`u32_prop`]: DtNode::u32_prop
    pub fn one_cell(&self, name: &'static str, v: Option<&[u8]>) -> Result<Option<u32>, DtError> {
        match v {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))),
            Some(_) => Err(self.bad(name, "expected exactly one cell")),
        }
    }
    /// This node's own `#address-cells` (for its children), default 2.
    pub fn own_addr_cells(&self) -> Result<u32, DtError> {
        self.addr_cells_of(self.prop("#address-cells"))
    }
    /// This node's own `#size-cells` (for its children), default 1.
    pub fn own_size_cells(&self) -> Result<u32, DtError> {
        self.size_cells_of(self.prop("#size-cells"))
    }
    /// `#address-cells` from its value `v`.
    pub(super) fn addr_cells_of(&self, v: Option<&[u8]>) -> Result<u32, DtError> {
        if v.is_none() {
            return Ok(2); // the common case, without moving an error around
        }
        let v = self.one_cell("#address-cells", v)?.unwrap_or(2);
        if v > 3 {
            return Err(self.bad("#address-cells", "more than 3 cells"));
        }
        Ok(v)
    }
    /// `#size-cells` from its value `v`.
    pub(super) fn size_cells_of(&self, v: Option<&[u8]>) -> Result<u32, DtError> {
        if v.is_none() {
            return Ok(1);
        }
        let v = self.one_cell("#size-cells", v)?.unwrap_or(1);
        if v > 2 {
            return Err(self.bad("#size-cells", "more than 2 cells"));
        }
        Ok(v)
    }
    /// The first `#address-cells` and `#size-cells` values and where the
    /// children begin, from one pass over the properties.
    pub(super) fn scan(&self) -> (Option<&'a [u8]>, Option<&'a [u8]>, usize) {
        let mut props = self.props();
        let (mut ac, mut sc) = (None, None);
        for (name, v) in &mut props {
            if ac.is_none() && self.blob.name_is(name, b"#address-cells") {
                ac = Some(v);
            } else if sc.is_none() && self.blob.name_is(name, b"#size-cells") {
                sc = Some(v);
            }
        }
        (ac, sc, props.at)
    }
    /// [`own_addr_cells`] and [`own_size_cells`] (with their errors, in
    /// that order) and where the children begin.
    ///
    /// [`own_addr_cells`]: DtNode::own_addr_cells
    /// [`own_size_cells`]: DtNode::own_size_cells
    pub(super) fn layout(&self) -> Result<(u32, u32, usize), DtError> {
        let (ac, sc, first) = self.scan();
        Ok((self.addr_cells_of(ac)?, self.size_cells_of(sc)?, first))
    }
    /// The children, which begin at `first`.
    pub(super) fn child_places(&self, first: usize) -> Children<'a> {
        Children { blob: self.blob, at: Some(first) }
    }
    /// The children, given this node's own cells and where they begin
    /// ([`DtNode::layout`]).
    pub(super) fn children_from(&self, (ac, sc, first): (u32, u32, usize)) -> impl Iterator<Item = DtNode<'a>> + 'a {
        let (blob, depth) = (self.blob, self.depth + 1);
        self.child_places(first).map(move |place| DtNode { blob, place, addr_cells: ac, size_cells: sc, depth })
    }
    /// The `reg` entries decoded with the parent's cells: addresses in the
    /// parent bus's space (the CPU's for root children and buses with an
    /// empty `ranges`; `ranges::translate` takes them further). At most 16
    /// entries: [`regs_of`] reads any number.
    ///
    /// [`regs_of`]: DtNode::regs_of
    pub fn reg(&self) -> Result<ArrayVec<PhysRange, 16>, DtError> {
        self.reg_of(self.prop("reg"))
    }
    /// [`reg`] from its value `v`.
    ///
    /// [`reg`]: DtNode::reg
    pub(super) fn reg_of(&self, v: Option<&[u8]>) -> Result<ArrayVec<PhysRange, 16>, DtError> {
        let mut out = ArrayVec::new();
        for r in self.regs_of(v) {
            out.try_push(r?).map_err(|_| self.bad("reg", "more than 16 entries"))?;
        }
        Ok(out)
    }
    /// Every `reg` entry of the value `v` (of this node's `reg`), decoded
    /// with the parent's cells; a malformed value gives one error.
    pub fn regs_of(&self, v: Option<&'a [u8]>) -> impl Iterator<Item = Result<PhysRange, DtError>> + '_ {
        let (ac, sc) = (self.addr_cells as usize, self.size_cells as usize);
        let entry = (ac + sc) * 4;
        let shape = match v {
            None => Ok(&[][..]),
            Some(_) if ac > 2 || sc > 2 || ac == 0 => Err(self.bad("reg", "parent's #address-cells/#size-cells are not 1 or 2")),
            Some(v) if v.is_empty() || v.len() % entry != 0 => Err(self.bad("reg", "length is not a multiple of the parent's (#address-cells + #size-cells)")),
            Some(v) => Ok(v),
        };
        let (entries, err) = match shape {
            Ok(v) => (v, None),
            Err(e) => (&[][..], Some(e)),
        };
        let decode = move |e: &[u8]| {
            let base = be_cells(e, ac).ok_or_else(|| self.bad("reg", "bad address cells"))?;
            let size = be_cells(&e[ac * 4..], sc).ok_or_else(|| self.bad("reg", "bad size cells"))?;
            PhysRange::new(base, size).ok_or_else(|| self.bad("reg", "base + size overflows"))
        };
        err.map(Err).into_iter().chain(entries.chunks_exact(entry.max(1)).map(decode))
    }
    /// The node's `phandle`, if any.
    pub fn phandle(&self) -> Result<Option<u32>, DtError> {
        self.u32_prop("phandle")
    }
    /// An error about property `prop` of this node.
    pub fn bad(&self, prop: &'static str, why: &'static str) -> DtError {
        DtError::BadProperty { node: text(self.name()), prop, why }
    }
}
