//! Walking a checked blob's structure block (Devicetree Specification
//! v0.4, §5.4): nodes, their properties and their children, token by
//! token, every read bounds-checked.

use crate::fdt::{align4, FDT_BEGIN_NODE, FDT_END_NODE, FDT_NOP, FDT_PROP, FDT_PROP_HEADER, FDT_TOKEN};

/// Reads a big-endian number of `cells` 32-bit cells (0..=2).
pub(super) fn be_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    if cells > 2 || bytes.len() < cells * 4 {
        return None;
    }
    let mut v = 0u64;
    for c in bytes[..cells * 4].chunks_exact(4) {
        v = (v << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    Some(v)
}

/// A blob as the readers walk it. Offsets are into the whole blob (as the
/// check computed them), property names index the strings block. Every read
/// is bounds-checked, and a token a checked blob cannot hold there ends the
/// walk instead of panicking.
#[derive(Clone, Copy)]
pub(super) struct Blob<'a> {
    pub(super) data: &'a [u8],
    pub(super) strings: &'a [u8],
}

impl<'a> Blob<'a> {
    /// The big-endian word at `at`.
    #[inline(always)]
    pub(super) fn word(self, at: usize) -> Option<u32> {
        self.data.get(at..)?.first_chunk().map(|w| u32::from_be_bytes(*w))
    }

    /// The name after the `FDT_BEGIN_NODE` at `node` (without its NUL), and
    /// the offset of the token after it.
    pub(super) fn node_name(self, node: usize) -> Option<(&'a [u8], usize)> {
        let start = node.checked_add(FDT_TOKEN)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some((&rest[..len], align4(start + len + 1)))
    }

    /// Where the node whose `FDT_BEGIN_NODE` is at `node` keeps its name
    /// and properties.
    pub(super) fn place(self, node: usize) -> Option<Place> {
        let (name, props) = self.node_name(node)?;
        Some(Place { name: node + FDT_TOKEN, len: name.len(), props })
    }

    /// The name of a placed node.
    pub(super) fn name(self, p: Place) -> &'a [u8] {
        self.data.get(p.name..p.name.saturating_add(p.len)).unwrap_or(&[])
    }

    /// The `FDT_PROP` at `at`: its name's offset in the strings block, its
    /// value, and the offset of the token after it.
    #[inline(always)]
    pub(super) fn prop(self, at: usize) -> Option<(usize, &'a [u8], usize)> {
        let rest = self.data.get(at..)?;
        let h: &[u8; FDT_PROP_HEADER] = rest.first_chunk()?;
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let nameoff = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let value = rest.get(FDT_PROP_HEADER..)?.get(..len)?;
        // Inside the blob, so no overflow.
        Some((nameoff, value, align4(at + FDT_PROP_HEADER + len)))
    }

    /// Whether the property name at `nameoff` is `name` (which holds no NUL).
    #[inline]
    pub(super) fn name_is(self, nameoff: usize, name: &[u8]) -> bool {
        // The NUL where `name` ends rules most names out before comparing.
        match self.strings.get(nameoff..) {
            Some(s) => s.len() > name.len() && s[name.len()] == 0 && s[..name.len()] == *name,
            None => false,
        }
    }

    /// The offset after the `FDT_END_NODE` that closes the node whose
    /// properties begin at `props`.
    pub(super) fn skip_node(self, props: usize) -> Option<usize> {
        let (mut at, mut depth) = (props, 1usize);
        loop {
            match self.word(at)? {
                FDT_BEGIN_NODE => {
                    depth += 1;
                    at = self.node_name(at)?.1;
                }
                FDT_PROP => at = self.prop(at)?.2,
                FDT_NOP => at += FDT_TOKEN,
                FDT_END_NODE => {
                    depth = depth.checked_sub(1)?;
                    at += FDT_TOKEN;
                    if depth == 0 {
                        return Some(at);
                    }
                }
                _ => return None,
            }
        }
    }
}

/// Where a node's name and properties are in the blob.
#[derive(Clone, Copy)]
pub(super) struct Place {
    /// Offset of the name.
    pub(super) name: usize,
    /// Length of the name (without its NUL).
    pub(super) len: usize,
    /// Offset of the token after the name: the first property, if any.
    pub(super) props: usize,
}

/// A node's properties in blob order, as (name offset, value); `at` ends on
/// the token after the last one (where the node's children begin).
#[derive(Clone)]
pub(super) struct Props<'a> {
    pub(super) blob: Blob<'a>,
    pub(super) at: usize,
}

impl<'a> Iterator for Props<'a> {
    type Item = (usize, &'a [u8]);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.blob.word(self.at)? {
                FDT_PROP => {
                    let (name, value, next) = self.blob.prop(self.at)?;
                    self.at = next;
                    return Some((name, value));
                }
                FDT_NOP => self.at += FDT_TOKEN,
                _ => return None,
            }
        }
    }
}

/// A node's children, from where its properties end; each step skips the
/// previous child's subtree.
pub(super) struct Children<'a> {
    pub(super) blob: Blob<'a>,
    pub(super) at: Option<usize>,
}

impl Iterator for Children<'_> {
    type Item = Place;
    fn next(&mut self) -> Option<Place> {
        // Taken: anything but a child ends the iteration for good.
        let mut at = self.at.take()?;
        while self.blob.word(at)? == FDT_NOP {
            at += FDT_TOKEN;
        }
        if self.blob.word(at)? != FDT_BEGIN_NODE {
            return None;
        }
        let p = self.blob.place(at)?;
        self.at = self.blob.skip_node(p.props);
        Some(p)
    }
}
