//! The one-pass check of a blob (Devicetree Specification v0.4, chapter
//! 5): the header (§5.2), the memory reservation block (§5.3), the
//! structure block (§5.4) and the strings block it names (§5.5), with the
//! node and property name rules of §2.2.1 and §2.2.4.

use super::blob::Blob;
use crate::fdt::{
    header as field, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_HEADER_SIZE, FDT_MAGIC, FDT_NOP, FDT_PROP, FDT_RESERVE_ENTRY, FDT_TOKEN, FDT_VERSION,
};

/// Whether `name` (a node's, without its NUL) is one the reader takes:
/// any UTF-8 text. libfdt (`fdt_check_full`) takes any bytes up to the
/// NUL, dtc writes names longer than the Devicetree Specification's 31
/// characters (§2.2.1, §2.2.4) and Linux reads them: real boards ship such
/// names (`snps,dis-u2-freeclk-exists-quirk`, long `__symbols__` labels), so
/// neither the length nor the specification's character set is enforced.
/// Names stay text because the readers, the overlay merge and the messages
/// hand them out as `&str`.
pub(super) fn is_name(name: &[u8]) -> bool {
    // ASCII is the case on every real tree: one pass, no decoding.
    name.is_ascii() || core::str::from_utf8(name).is_ok()
}

/// Whether the strings block from a property's `nameoff` on holds a name
/// the reader takes: UTF-8 text ended by a NUL inside the block.
pub(super) fn is_prop_name(from: &[u8]) -> bool {
    from.iter().position(|&b| b == 0).is_some_and(|end| is_name(&from[..end]))
}

/// Header word `field` (0-based, §5.2), or 0 past the blob's end.
#[inline]
pub(super) fn header(data: &[u8], field: usize) -> u32 {
    Blob { data, strings: &[] }.word(field * 4).unwrap_or(0)
}

/// Most children of the root [`TopIndex`] keeps (QEMU `virt` has about 50).
pub(super) const MAX_TOP: usize = 128;

/// Where the root's children begin (their `FDT_BEGIN_NODE`s), noted by the
/// check: reading a top-level node (`/chosen`, `/memory`, `/cpus`, ...)
/// then skips no subtree token by token. Incomplete (not used) when the
/// root has more children than it holds.
#[derive(Clone, Copy)]
pub(super) struct TopIndex {
    pub(super) at: [u32; MAX_TOP],
    pub(super) len: u8,
    pub(super) complete: bool,
}

impl TopIndex {
    /// No index: the readers walk the root's children.
    pub(super) const NONE: TopIndex = TopIndex { at: [0; MAX_TOP], len: 0, complete: false };

    /// Notes a child of the root at `at`.
    pub(super) fn note(&mut self, at: usize) {
        match (self.at.get_mut(usize::from(self.len)), u32::try_from(at)) {
            (Some(slot), Ok(at)) => {
                *slot = at;
                self.len += 1;
            }
            _ => self.complete = false,
        }
    }
}

/// Where the parts of a blob are, from its header (§5.2).
#[derive(Clone, Copy)]
pub(super) struct Layout {
    /// `off_dt_struct`: the root's `FDT_BEGIN_NODE`.
    pub(super) structure: usize,
    /// `off_dt_strings ..+ size_dt_strings`.
    pub(super) strings: (usize, usize),
    /// `off_mem_rsvmap`.
    pub(super) rsvmap: usize,
}

impl Layout {
    /// The header's offsets as they are (reads through them stay
    /// bounds-checked).
    #[inline]
    pub(super) fn of(data: &[u8]) -> Layout {
        let h = |field: usize| header(data, field) as usize;
        let strings = h(field::OFF_DT_STRINGS);
        Layout { structure: h(field::OFF_DT_STRUCT), strings: (strings, strings.saturating_add(h(field::SIZE_DT_STRINGS))), rsvmap: h(field::OFF_MEM_RSVMAP) }
    }

    /// The blob's strings block.
    pub(super) fn blob(self, data: &[u8]) -> Blob<'_> {
        Blob { data, strings: data.get(self.strings.0..self.strings.1).unwrap_or(&[]) }
    }

    /// Checks `data` as `dtoolkit`'s `Fdt::new` does, in one pass, and
    /// accepts exactly the blobs it accepts (the tests compare the two on
    /// every truncation and thousands of corruptions): the header (magic,
    /// version 17 supported, `totalsize` the blob's length, blocks in order,
    /// aligned and inside the blob), a terminated memory reservation block
    /// before the structure block, and the structure block from
    /// `off_dt_struct`: an unnamed root, then only known tokens in a valid
    /// order, every node name and property name valid, every name offset
    /// inside the strings block, every value inside the blob, the root
    /// closed and followed by `FDT_END`.
    pub(super) fn check(data: &[u8]) -> Option<(Layout, TopIndex)> {
        if data.len() < FDT_HEADER_SIZE {
            return None;
        }
        let l = Layout::of(data);
        let h = |field: usize| header(data, field);
        let (magic, version, last_comp) = (h(field::MAGIC), h(field::VERSION), h(field::LAST_COMP_VERSION));
        let (size_strings, size_struct) = (h(field::SIZE_DT_STRINGS) as usize, h(field::SIZE_DT_STRUCT) as usize);
        let off_strings = l.strings.0;
        let struct_end = l.structure.saturating_add(size_struct);
        let header_ok = magic == FDT_MAGIC
            && (last_comp..=version).contains(&FDT_VERSION)
            && h(field::TOTALSIZE) as usize == data.len()
            && l.rsvmap >= FDT_HEADER_SIZE
            && l.rsvmap <= l.structure
            && l.rsvmap.is_multiple_of(8)
            && l.structure <= data.len()
            && l.structure.is_multiple_of(4)
            && off_strings <= data.len()
            && struct_end <= data.len()
            && off_strings.saturating_add(size_strings) <= data.len()
            && struct_end <= off_strings;
        if !header_ok {
            return None;
        }
        // Entries until the (0, 0) terminator, each starting before the
        // structure block.
        let mut at = l.rsvmap;
        loop {
            if at >= l.structure {
                return None;
            }
            let entry = data.get(at..at.checked_add(FDT_RESERVE_ENTRY)?)?;
            at += FDT_RESERVE_ENTRY;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
        }
        let blob = l.blob(data);
        let mut at = l.structure;
        if blob.word(at)? != FDT_BEGIN_NODE {
            return None;
        }
        let mut depth = 0usize;
        let mut top = TopIndex { complete: true, ..TopIndex::NONE };
        // Property names repeat (dtc writes each name once and points every
        // property of that name at it): a name offset checked once is not
        // checked again. Keyed by offset mod 64; u64::MAX is no offset.
        let mut checked = [u64::MAX; 64];
        loop {
            match blob.word(at)? {
                FDT_BEGIN_NODE => {
                    depth += 1;
                    if depth == 2 {
                        top.note(at);
                    }
                    let (name, after) = blob.node_name(at)?;
                    // The root is unnamed (§5.4.1); libfdt does not look, but
                    // `dtoolkit`, whose tree the overlay merge uses, needs it.
                    if !(if depth == 1 { name.is_empty() } else { is_name(name) }) {
                        return None;
                    }
                    at = after;
                    // The node's properties (NOPs may come between them).
                    loop {
                        match blob.word(at)? {
                            FDT_PROP => {
                                let (nameoff, _, next) = blob.prop(at)?;
                                let seen = &mut checked[nameoff % checked.len()];
                                if *seen != nameoff as u64 {
                                    if !is_prop_name(blob.strings.get(nameoff..)?) {
                                        return None;
                                    }
                                    *seen = nameoff as u64;
                                }
                                at = next;
                            }
                            FDT_NOP => at += FDT_TOKEN,
                            FDT_BEGIN_NODE | FDT_END_NODE | FDT_END => break,
                            _ => return None,
                        }
                    }
                }
                FDT_END_NODE => {
                    depth = depth.checked_sub(1)?;
                    at += FDT_TOKEN;
                    if depth == 0 {
                        break;
                    }
                }
                FDT_NOP => at += FDT_TOKEN,
                // A property after a child node, FDT_END inside the root, or
                // an unknown token.
                _ => return None,
            }
        }
        (blob.word(at)? == FDT_END).then_some((l, top))
    }
}
