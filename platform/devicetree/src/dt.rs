//! Device-tree access: a validated blob and the facts the kernel reads from it.
//!
//! The blob comes from outside (a bootloader, a user's overlay), so nothing
//! here trusts it: [`DeviceTree::parse`] checks the whole structure block
//! (tokens, lengths, string offsets, nesting) before anything walks it, cell
//! values are decoded with the *parent's* `#address-cells`/`#size-cells`, and
//! every malformed property becomes a [`DtError`] naming the node and the
//! property. No function here panics on input.
//!
//! The check is the one `dtoolkit`'s `Fdt::new` makes, done in one pass
//! over the blob (a refused blob is handed to `Fdt::new` for the words of
//! the refusal). The readers then walk the structure block's tokens
//! directly: property names are compared as bytes in the strings block, a
//! node's properties are read in one pass for what a walk needs, and
//! [`DeviceTree::walk`] is a single pass in blob order. `dtoolkit`'s node
//! API re-decodes and re-validates every property name on each lookup,
//! which cost the boot about a million instructions.

use crate::addr::{PhysAddr, PhysRange};
use arrayvec::{ArrayString, ArrayVec};
use core::fmt::{self, Write};
use dtoolkit::fdt::Fdt;

/// Largest DTB the kernel accepts (QEMU's is 1 MiB).
pub const MAX_DTB_SIZE: u32 = 8 << 20;
/// Deepest node nesting the walkers follow.
const MAX_DEPTH: usize = 16;

// The flattened format: Devicetree Specification v0.4, chapter 5.
/// FDT header magic (§5.2).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// The header: ten big-endian words (§5.2).
const FDT_HEADER_SIZE: usize = 40;
/// The version the check requires `last_comp_version..=version` to hold (§5.2).
const FDT_VERSION: u32 = 17;
/// Structure-block tokens (§5.4.1), each a big-endian word at a 4-byte
/// aligned offset.
const FDT_BEGIN_NODE: u32 = 0x1;
/// End of a node (§5.4.1).
const FDT_END_NODE: u32 = 0x2;
/// A property: token, `len`, `nameoff`, then `len` bytes of value (§5.4.1).
const FDT_PROP: u32 = 0x3;
/// Ignored token (§5.4.1).
const FDT_NOP: u32 = 0x4;
/// End of the structure block (§5.4.1).
const FDT_END: u32 = 0x9;
/// Token, `len` and `nameoff` of a property (§5.4.1).
const FDT_PROP_HEADER: usize = 12;
/// Size of a token (§5.4.1).
const FDT_TOKEN: usize = 4;
/// A memory reservation entry: 64-bit address and size (§5.3.2).
const FDT_RESERVE_ENTRY: usize = 16;
/// Longest node name (before the `@`) and property name (§2.2.1, §2.2.4).
const MAX_NAME: usize = 31;

/// Which UART, and how its registers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011.
    Pl011,
    /// 16550-compatible: registers `1 << shift` bytes apart, accessed
    /// `width` bytes wide (1 or 4).
    Ns16550 {
        /// The DT's `reg-shift` (default 0).
        shift: u8,
        /// The DT's `reg-io-width` (default 1).
        width: u8,
    },
}

/// A console UART: where and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Its register block.
    pub base: PhysAddr,
    /// Its register interface.
    pub kind: UartKind,
}

impl Uart {
    /// A PL011 at `base`.
    pub const fn pl011(base: PhysAddr) -> Uart {
        Uart { base, kind: UartKind::Pl011 }
    }
}

/// 16550-compatible UARTs the console drives (Linux's of_serial names).
const NS16550_COMPATIBLES: [&str; 4] = ["ns16550a", "ns16550", "ns16450", "snps,dw-apb-uart"];
/// Most SMMUs the kernel handles.
pub const MAX_SMMUS: usize = 8;
/// Most CPUs the kernel handles.
pub const MAX_CPUS: usize = 64;
/// Most MMIO regions collected for the identity map.
pub const MAX_MMIO: usize = 128;

/// A short copy of a node name or message, for errors that outlive the blob.
pub type Text = ArrayString<64>;

fn text(s: &str) -> Text {
    let mut t = Text::new();
    for c in s.chars() {
        if t.try_push(c).is_err() {
            break;
        }
    }
    t
}

/// What is wrong with a device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// No FDT header (bad magic) at the address the loader gave.
    NoHeader {
        /// Where the header was looked for.
        at: PhysAddr,
        /// The first word found there.
        found: u32,
    },
    /// The header's `totalsize` is implausible.
    BadSize {
        /// `totalsize` from the header.
        size: u32,
    },
    /// The structure does not parse; the text says where and why.
    Malformed(Text),
    /// A property is missing, has the wrong length, or a bad value.
    BadProperty {
        /// The node's name (with unit address).
        node: Text,
        /// The property.
        prop: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A required node is absent.
    MissingNode(&'static str),
    /// More entries than the kernel's fixed tables hold.
    TooMany(&'static str),
}

// One text for the log and the host tools (the offline checker prints what
// the kernel would): errors are rare, so the log formats it on the target.
#[cfg(feature = "defmt")]
impl defmt::Format for DtError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NoHeader { at, found } => write!(f, "no device tree at {at}: magic is {found:#010x}, expected 0xd00dfeed"),
            DtError::BadSize { size } => write!(f, "device tree header says totalsize {size} bytes (allowed 40..={MAX_DTB_SIZE})"),
            DtError::Malformed(t) => write!(f, "malformed device tree (structure check failed: {})", t.as_str()),
            DtError::BadProperty { node, prop, why } => write!(f, "node {}: property {prop}: {why}", node.as_str()),
            DtError::MissingNode(n) => write!(f, "device tree has no {n} node"),
            DtError::TooMany(what) => write!(f, "device tree has too many {what}"),
        }
    }
}

/// Reads a big-endian number of `cells` 32-bit cells (0..=2).
fn be_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    if cells > 2 || bytes.len() < cells * 4 {
        return None;
    }
    let mut v = 0u64;
    for c in bytes[..cells * 4].chunks_exact(4) {
        v = (v << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    Some(v)
}

/// Rounds a structure-block offset up to the next token boundary.
fn align4(at: usize) -> usize {
    at.saturating_add(3) & !3
}

/// `NAME_CHARS[b]`: `b` may appear in a node name or unit address (§2.2.1).
const NODE_CHAR: u8 = 1;
/// `NAME_CHARS[b]`: `b` may appear in a property name (§2.2.4).
const PROP_CHAR: u8 = 2;
/// The characters of names, by byte: a table makes the check one load per
/// byte.
static NAME_CHARS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b',' | b'.' | b'_' | b'+' | b'-') {
            t[b] = NODE_CHAR | PROP_CHAR;
        } else if matches!(c, b'?' | b'#') {
            t[b] = PROP_CHAR;
        }
        b += 1;
    }
    t
};

/// A valid non-root node name: `name[@unit]`, 1..=31 characters before the
/// `@`, a non-empty unit address, no second `@` (§2.2.1).
fn is_node_name(name: &[u8]) -> bool {
    let mut base = name.len();
    for (i, &b) in name.iter().enumerate() {
        if b == b'@' {
            if base != name.len() {
                return false; // a second '@'
            }
            base = i;
        } else if NAME_CHARS[b as usize] & NODE_CHAR == 0 {
            return false;
        }
    }
    (1..=MAX_NAME).contains(&base) && (base == name.len() || base + 1 < name.len())
}

/// Whether the strings block from a property's `nameoff` on starts with a
/// valid property name (§2.2.4): 1..=31 characters, then a NUL.
fn is_prop_name(from: &[u8]) -> bool {
    for (i, &b) in from[..from.len().min(MAX_NAME + 1)].iter().enumerate() {
        if b == 0 {
            return i > 0;
        }
        if NAME_CHARS[b as usize] & PROP_CHAR == 0 {
            return false;
        }
    }
    false
}

/// A blob as the readers walk it. Offsets are into the whole blob (as the
/// check computed them), property names index the strings block. Every read
/// is bounds-checked, and a token a checked blob cannot hold there ends the
/// walk instead of panicking.
#[derive(Clone, Copy)]
struct Blob<'a> {
    data: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Blob<'a> {
    /// The big-endian word at `at`.
    #[inline(always)]
    fn word(self, at: usize) -> Option<u32> {
        self.data.get(at..)?.first_chunk().map(|w| u32::from_be_bytes(*w))
    }

    /// The name after the `FDT_BEGIN_NODE` at `node` (without its NUL), and
    /// the offset of the token after it.
    fn node_name(self, node: usize) -> Option<(&'a [u8], usize)> {
        let start = node.checked_add(FDT_TOKEN)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some((&rest[..len], align4(start + len + 1)))
    }

    /// Where the node whose `FDT_BEGIN_NODE` is at `node` keeps its name
    /// and properties.
    fn place(self, node: usize) -> Option<Place> {
        let (name, props) = self.node_name(node)?;
        Some(Place { name: node + FDT_TOKEN, len: name.len(), props })
    }

    /// The name of a placed node.
    fn name(self, p: Place) -> &'a [u8] {
        self.data.get(p.name..p.name.saturating_add(p.len)).unwrap_or(&[])
    }

    /// The `FDT_PROP` at `at`: its name's offset in the strings block, its
    /// value, and the offset of the token after it.
    #[inline(always)]
    fn prop(self, at: usize) -> Option<(usize, &'a [u8], usize)> {
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
    fn name_is(self, nameoff: usize, name: &[u8]) -> bool {
        // The NUL where `name` ends rules most names out before comparing.
        match self.strings.get(nameoff..) {
            Some(s) => s.len() > name.len() && s[name.len()] == 0 && s[..name.len()] == *name,
            None => false,
        }
    }

    /// The offset after the `FDT_END_NODE` that closes the node whose
    /// properties begin at `props`.
    fn skip_node(self, props: usize) -> Option<usize> {
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
struct Place {
    /// Offset of the name.
    name: usize,
    /// Length of the name (without its NUL).
    len: usize,
    /// Offset of the token after the name: the first property, if any.
    props: usize,
}

/// A node's properties in blob order, as (name offset, value); `at` ends on
/// the token after the last one (where the node's children begin).
#[derive(Clone)]
struct Props<'a> {
    blob: Blob<'a>,
    at: usize,
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
struct Children<'a> {
    blob: Blob<'a>,
    at: Option<usize>,
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

/// Header word `field` (0-based, §5.2), or 0 past the blob's end.
fn header(data: &[u8], field: usize) -> u32 {
    Blob { data, strings: &[] }.word(field * 4).unwrap_or(0)
}

/// Most children of the root [`TopIndex`] keeps (QEMU `virt` has about 50).
const MAX_TOP: usize = 128;

/// Where the root's children begin (their `FDT_BEGIN_NODE`s), noted by the
/// check: reading a top-level node (`/chosen`, `/memory`, `/cpus`, ...)
/// then skips no subtree token by token. Incomplete (not used) when the
/// root has more children than it holds.
#[derive(Clone, Copy)]
struct TopIndex {
    at: [u32; MAX_TOP],
    len: u8,
    complete: bool,
}

impl TopIndex {
    /// No index: the readers walk the root's children.
    const NONE: TopIndex = TopIndex { at: [0; MAX_TOP], len: 0, complete: false };

    /// Notes a child of the root at `at`.
    fn note(&mut self, at: usize) {
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
struct Layout {
    /// `off_dt_struct`: the root's `FDT_BEGIN_NODE`.
    structure: usize,
    /// `off_dt_strings ..+ size_dt_strings`.
    strings: (usize, usize),
    /// `off_mem_rsvmap`.
    rsvmap: usize,
}

impl Layout {
    /// The header's offsets as they are (reads through them stay
    /// bounds-checked).
    fn of(data: &[u8]) -> Layout {
        let h = |field: usize| header(data, field) as usize;
        Layout { structure: h(2), strings: (h(3), h(3).saturating_add(h(8))), rsvmap: h(4) }
    }

    /// The blob's strings block.
    fn blob(self, data: &[u8]) -> Blob<'_> {
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
    fn check(data: &[u8]) -> Option<(Layout, TopIndex)> {
        if data.len() < FDT_HEADER_SIZE {
            return None;
        }
        let l = Layout::of(data);
        let h = |field: usize| header(data, field);
        let (magic, version, last_comp) = (h(0), h(5), h(6));
        let (size_strings, size_struct) = (h(8) as usize, h(9) as usize);
        let off_strings = l.strings.0;
        let struct_end = l.structure.saturating_add(size_struct);
        let header_ok = magic == FDT_MAGIC
            && (last_comp..=version).contains(&FDT_VERSION)
            && h(1) as usize == data.len()
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
                    if !(if depth == 1 { name.is_empty() } else { is_node_name(name) }) {
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

/// A node together with its parent's cell sizes, as a walk sees it.
#[derive(Clone, Copy)]
pub struct DtNode<'a> {
    blob: Blob<'a>,
    place: Place,
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
    fn props(&self) -> Props<'a> {
        Props { blob: self.blob, at: self.place.props }
    }
    /// Raw property bytes (of the first property of that name).
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.as_bytes();
        // No property name holds a NUL: such a `name` finds nothing.
        self.props().find(|&(n, _)| self.blob.name_is(n, name)).filter(|_| !name.contains(&0)).map(|(_, v)| v)
    }
    /// [`prop`] of each of `names` (literals, without NULs), from one pass
    /// over the properties.
    ///
    /// [`prop`]: DtNode::prop
    fn first_of<const N: usize>(&self, names: [&str; N]) -> [Option<&'a [u8]>; N] {
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
        DtNode::lists(self.prop("compatible"), c)
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
        DtNode::enabled(self.prop("status"))
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
    fn addr_cells_of(&self, v: Option<&[u8]>) -> Result<u32, DtError> {
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
    fn size_cells_of(&self, v: Option<&[u8]>) -> Result<u32, DtError> {
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
    fn scan(&self) -> (Option<&'a [u8]>, Option<&'a [u8]>, usize) {
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
    fn layout(&self) -> Result<(u32, u32, usize), DtError> {
        let (ac, sc, first) = self.scan();
        Ok((self.addr_cells_of(ac)?, self.size_cells_of(sc)?, first))
    }
    /// The children, which begin at `first`.
    fn child_places(&self, first: usize) -> Children<'a> {
        Children { blob: self.blob, at: Some(first) }
    }
    /// The children, given this node's own cells and where they begin
    /// ([`DtNode::layout`]).
    fn children_from(&self, (ac, sc, first): (u32, u32, usize)) -> impl Iterator<Item = DtNode<'a>> + 'a {
        let (blob, depth) = (self.blob, self.depth + 1);
        self.child_places(first).map(move |place| DtNode { blob, place, addr_cells: ac, size_cells: sc, depth })
    }
    /// The `reg` entries decoded with the parent's cells, as CPU physical
    /// ranges. Only meaningful for nodes whose parent bus maps 1:1 to the
    /// CPU's address space (root children and simple buses with empty `ranges`).
    pub fn reg(&self) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        self.reg_of(self.prop("reg"))
    }
    /// [`reg`] from its value `v`.
    ///
    /// [`reg`]: DtNode::reg
    fn reg_of(&self, v: Option<&[u8]>) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        let mut out = ArrayVec::new();
        let Some(v) = v else { return Ok(out) };
        let (ac, sc) = (self.addr_cells as usize, self.size_cells as usize);
        if ac > 2 || sc > 2 || ac == 0 {
            return Err(self.bad("reg", "parent's #address-cells/#size-cells are not 1 or 2"));
        }
        let entry = (ac + sc) * 4;
        if v.is_empty() || v.len() % entry != 0 {
            return Err(self.bad("reg", "length is not a multiple of the parent's (#address-cells + #size-cells)"));
        }
        for e in v.chunks_exact(entry) {
            let base = be_cells(e, ac).ok_or_else(|| self.bad("reg", "bad address cells"))?;
            let size = be_cells(&e[ac * 4..], sc).ok_or_else(|| self.bad("reg", "bad size cells"))?;
            let r = PhysRange::new(base, size).ok_or_else(|| self.bad("reg", "base + size overflows"))?;
            out.try_push(r).map_err(|_| self.bad("reg", "more than 8 entries"))?;
        }
        Ok(out)
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

/// A GIC interrupt decoded from a three-cell specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// GIC INTID (SPI n → 32 + n, PPI n → 16 + n).
    pub intid: u32,
    /// Edge-triggered (else level).
    pub edge: bool,
}

#[cfg(feature = "defmt")]
impl defmt::Format for Irq {
    fn format(&self, f: defmt::Formatter) {
        let (kind, n) = if self.intid >= 32 { ("SPI", self.intid - 32) } else { ("PPI", self.intid.saturating_sub(16)) };
        defmt::write!(f, "{=str} {=u32} (INTID {=u32}, {=str})", kind, n, self.intid, if self.edge { "edge" } else { "level" })
    }
}

/// An `arm,smmu-v3` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuNode {
    /// Node name.
    pub name: Text,
    /// Register window (page 0 and page 1).
    pub regs: PhysRange,
    /// Its phandle, which `iommus`/`iommu-map` refer to.
    pub phandle: Option<u32>,
    /// Interrupt for the event queue.
    pub eventq: Option<Irq>,
    /// Interrupt for the PRI queue.
    pub priq: Option<Irq>,
    /// Interrupt for CMD_SYNC completion.
    pub cmdq_sync: Option<Irq>,
    /// Interrupt for global errors.
    pub gerror: Option<Irq>,
    /// Wired `combined` interrupt, when the SMMU has only one.
    pub combined: Option<Irq>,
    /// `dma-coherent`: the SMMU's table walks snoop CPU caches.
    pub coherent: bool,
    /// Has an `msi-parent`.
    pub msi: bool,
}

/// A CPU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuNode {
    /// MPIDR affinity from `reg`.
    pub mpidr: u64,
    /// `enable-method` is "psci".
    pub psci: bool,
}

/// How PSCI is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc` (firmware at EL3).
    Smc,
    /// `hvc` (firmware at EL2).
    Hvc,
}

/// A validated flattened device tree.
#[derive(Clone, Copy)]
pub struct DeviceTree<'a> {
    bytes: &'a [u8],
    blob: Blob<'a>,
    layout: Layout,
    top: TopIndex,
}

impl<'a> DeviceTree<'a> {
    /// Validates `bytes` as a whole FDT (header, memory reservations,
    /// every token of the structure block and every name).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DtError> {
        if bytes.len() >= 4 {
            let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if magic != FDT_MAGIC {
                return Err(DtError::NoHeader { at: PhysAddr(bytes.as_ptr() as u64), found: magic });
            }
        }
        let (layout, top) = match Layout::check(bytes) {
            Some(checked) => checked,
            // Refused: `dtoolkit` says why, in the words the log and the
            // checker have always shown. (It refuses every blob `check`
            // refuses; should it not, the blob is read as it accepts it.)
            None => match Fdt::new(bytes) {
                Err(e) => {
                    let mut t = Text::new();
                    let _ = write!(t, "{e}");
                    return Err(DtError::Malformed(t));
                }
                Ok(_) => (Layout::of(bytes), TopIndex::NONE),
            },
        };
        Ok(DeviceTree { bytes, blob: layout.blob(bytes), layout, top })
    }

    /// The header's `totalsize` of a blob starting with `head` (≥ 8 bytes),
    /// checked for magic and plausibility: how many bytes to hand to [`parse`].
    ///
    /// [`parse`]: DeviceTree::parse
    pub fn blob_size(at: PhysAddr, head: &[u8; 8]) -> Result<usize, DtError> {
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if magic != FDT_MAGIC {
            return Err(DtError::NoHeader { at, found: magic });
        }
        let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if !(40..=MAX_DTB_SIZE).contains(&size) {
            return Err(DtError::BadSize { size });
        }
        Ok(size as usize)
    }

    /// The blob.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The root node.
    pub fn root(&self) -> DtNode<'a> {
        // The check saw the root's FDT_BEGIN_NODE there.
        let place = self.blob.place(self.layout.structure).unwrap_or(Place { name: 0, len: 0, props: usize::MAX });
        DtNode { blob: self.blob, place, addr_cells: 2, size_cells: 1, depth: 0 }
    }

    /// The node at an absolute `path`, with its parent's cells.
    pub fn find(&self, path: &str) -> Result<Option<DtNode<'a>>, DtError> {
        let mut cur = self.root();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let (want, any_unit) = (comp.as_bytes(), !comp.contains('@'));
            let is = |c: &DtNode<'a>| {
                let n = c.blob.name(c.place);
                n == want || (any_unit && n.split(|&b| b == b'@').next() == Some(want))
            };
            let next = if cur.depth == 0 { self.top_level()?.find(is) } else { cur.children_from(cur.layout()?).find(is) };
            match next {
                Some(n) => cur = n,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Where the root's children are, in blob order: from the index the
    /// check made, or by walking them.
    fn top_places(&self) -> impl Iterator<Item = Place> + '_ {
        let (indexed, walked) = if self.top.complete {
            let at = &self.top.at[..usize::from(self.top.len)];
            (Some(at.iter().filter_map(|&at| self.blob.place(at as usize))), None)
        } else {
            let root = self.root();
            (None, Some(root.child_places(root.scan().2)))
        };
        indexed.into_iter().flatten().chain(walked.into_iter().flatten())
    }

    /// The root's children (what [`children`] of the root gives).
    ///
    /// [`children`]: DeviceTree::children
    fn top_level(&self) -> Result<impl Iterator<Item = DtNode<'a>> + '_, DtError> {
        let (addr_cells, size_cells, _) = self.root().layout()?;
        Ok(self.top_places().map(move |place| DtNode { blob: self.blob, place, addr_cells, size_cells, depth: 1 }))
    }

    /// The children of `n`, each with `n`'s cells as its parent cells.
    pub fn children(&self, n: &DtNode<'a>) -> Result<impl Iterator<Item = DtNode<'a>> + 'a, DtError> {
        Ok(n.children_from(n.layout()?))
    }

    /// Calls `f` for every node, depth first, parents before children.
    /// Stops at the first error `f` returns.
    pub fn walk<E: From<DtError>>(&self, f: &mut dyn FnMut(&DtNode<'a>) -> Result<(), E>) -> Result<(), E> {
        // Depth first, parents first is the blob's own order: one pass over
        // the tokens, with the open nodes' cells on a stack.
        let mut cells = [(0u32, 0u32); MAX_DEPTH];
        let mut at = self.layout.structure;
        let mut depth = 0usize;
        loop {
            match self.blob.word(at) {
                Some(FDT_BEGIN_NODE) => {
                    let Some(place) = self.blob.place(at) else { return Ok(()) };
                    let (addr_cells, size_cells) = match depth.checked_sub(1) {
                        None => (2, 1),
                        Some(parent) => cells.get(parent).copied().unwrap_or_default(),
                    };
                    let n = DtNode { blob: self.blob, place, addr_cells, size_cells, depth };
                    f(&n)?;
                    let slot = cells.get_mut(depth).ok_or(DtError::TooMany("levels of node nesting"))?;
                    let (ac, sc, first) = n.layout()?;
                    *slot = (ac, sc);
                    depth += 1;
                    at = first;
                }
                Some(FDT_NOP) => at += FDT_TOKEN,
                Some(FDT_END_NODE) if depth > 1 => {
                    depth -= 1;
                    at += FDT_TOKEN;
                }
                // The root's FDT_END_NODE (or, never in a checked blob, a
                // token out of place).
                _ => return Ok(()),
            }
        }
    }

    /// The node whose `phandle` is `ph`.
    pub fn by_phandle(&self, ph: u32) -> Result<Option<DtNode<'a>>, DtError> {
        let mut found = None;
        self.walk::<DtError>(&mut |n| {
            if found.is_none() && n.phandle()? == Some(ph) {
                found = Some(*n);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// RAM banks: `reg` of every enabled `device_type = "memory"` node.
    pub fn memory(&self) -> Result<ArrayVec<PhysRange, 16>, DtError> {
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
                for r in n.reg_of(reg)? {
                    out.try_push(r).map_err(|_| DtError::TooMany("memory banks"))?;
                }
            }
        }
        if out.is_empty() {
            return Err(DtError::MissingNode("/memory"));
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

    /// Static `/reserved-memory` regions (children with `reg`).
    pub fn reserved_memory(&self) -> Result<ArrayVec<PhysRange, 16>, DtError> {
        let mut out = ArrayVec::new();
        if let Some(rm) = self.find("/reserved-memory")? {
            for c in rm.children_from(rm.layout()?) {
                let [status, reg] = c.first_of(["status", "reg"]);
                if !DtNode::enabled(status) {
                    continue;
                }
                for r in c.reg_of(reg)? {
                    out.try_push(r).map_err(|_| DtError::TooMany("reserved-memory regions"))?;
                }
            }
        }
        Ok(out)
    }

    /// Enabled CPUs under `/cpus`.
    pub fn cpus(&self) -> Result<ArrayVec<CpuNode, MAX_CPUS>, DtError> {
        let cpus = self.find("/cpus")?.ok_or(DtError::MissingNode("/cpus"))?;
        // Only `#address-cells` matters (a CPU's `reg` has no size).
        let (ac, _, first) = cpus.scan();
        let ac = cpus.addr_cells_of(ac)? as usize;
        let mut out = ArrayVec::new();
        for place in cpus.child_places(first) {
            let c = DtNode { blob: self.blob, place, addr_cells: ac as u32, size_cells: 0, depth: 2 };
            let [device_type, status, reg, method] = c.first_of(["device_type", "status", "reg", "enable-method"]);
            if c.str_value("device_type", device_type)? != Some("cpu") || !DtNode::enabled(status) {
                continue;
            }
            let reg = reg.ok_or_else(|| c.bad("reg", "missing (the CPU's MPIDR)"))?;
            if reg.len() != ac * 4 {
                return Err(c.bad("reg", "length is not the parent's #address-cells"));
            }
            let mpidr = be_cells(reg, ac).ok_or_else(|| c.bad("reg", "more than 2 cells"))?;
            let psci = c.str_value("enable-method", method)? == Some("psci");
            out.try_push(CpuNode { mpidr, psci }).map_err(|_| DtError::TooMany("CPUs"))?;
        }
        if out.is_empty() {
            return Err(DtError::MissingNode("/cpus/cpu"));
        }
        Ok(out)
    }

    /// `/chosen/bootargs`, or "".
    pub fn bootargs(&self) -> Result<&'a str, DtError> {
        match self.find("/chosen")? {
            Some(c) => Ok(c.str_prop("bootargs")?.unwrap_or("")),
            None => Ok(""),
        }
    }

    /// The console UART `/chosen/stdout-path` names (a path or an alias,
    /// options after ':' ignored): a PL011 or a 16550 (with its `reg-shift`
    /// and `reg-io-width`); `None` for any other UART.
    pub fn stdout_uart(&self) -> Result<Option<Uart>, DtError> {
        let Some(chosen) = self.find("/chosen")? else { return Ok(None) };
        let Some(path) = chosen.str_prop("stdout-path")? else { return Ok(None) };
        let path = path.split(':').next().unwrap_or("");
        let path = if path.starts_with('/') {
            path
        } else {
            match self.find("/aliases")? {
                Some(a) => match a.str_prop_dyn(path)? {
                    Some(p) => p,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        };
        let Some(uart) = self.find(path)? else { return Ok(None) };
        let kind = if uart.is_compatible("arm,pl011") {
            UartKind::Pl011
        } else if NS16550_COMPATIBLES.iter().any(|c| uart.is_compatible(c)) {
            let shift = uart.u32_prop("reg-shift")?.unwrap_or(0);
            let width = uart.u32_prop("reg-io-width")?.unwrap_or(1);
            if shift > 4 {
                return Err(uart.bad("reg-shift", "more than 4"));
            }
            if width != 1 && !(width == 4 && shift >= 2) {
                return Err(uart.bad("reg-io-width", "only 1, or 4 with reg-shift of at least 2, is supported"));
            }
            UartKind::Ns16550 { shift: shift as u8, width: width as u8 }
        } else {
            return Ok(None);
        };
        Ok(uart.reg()?.first().map(|r| Uart { base: r.start, kind }))
    }

    /// The PSCI conduit from `/psci/method`.
    pub fn psci(&self) -> Result<Option<PsciConduit>, DtError> {
        let Some(p) = self.find("/psci")? else { return Ok(None) };
        match p.str_prop("method")? {
            Some("smc") => Ok(Some(PsciConduit::Smc)),
            Some("hvc") => Ok(Some(PsciConduit::Hvc)),
            Some(_) => Err(p.bad("method", "neither \"smc\" nor \"hvc\"")),
            None => Ok(None),
        }
    }

    /// Decodes the `index`-th interrupt of `n` against its GIC parent
    /// (three-cell specifiers: type, number, flags).
    fn irq(&self, n: &DtNode<'a>, index: usize) -> Result<Option<Irq>, DtError> {
        let Some(v) = n.prop("interrupts") else { return Ok(None) };
        if v.len() % 12 != 0 {
            return Err(n.bad("interrupts", "not a list of 3-cell GIC specifiers"));
        }
        let Some(spec) = v.chunks_exact(12).nth(index) else { return Ok(None) };
        let cell = |i: usize| u32::from_be_bytes([spec[i * 4], spec[i * 4 + 1], spec[i * 4 + 2], spec[i * 4 + 3]]);
        let intid = match cell(0) {
            0 => cell(1).checked_add(32).filter(|&i| i < 1020),
            1 => cell(1).checked_add(16).filter(|&i| i < 32),
            _ => None,
        }
        .ok_or_else(|| n.bad("interrupts", "not a GIC SPI or PPI"))?;
        let edge = cell(2) & 0x3 != 0;
        Ok(Some(Irq { intid, edge }))
    }

    /// Every enabled `arm,smmu-v3` node.
    pub fn smmus(&self) -> Result<ArrayVec<SmmuNode, MAX_SMMUS>, DtError> {
        let mut out = ArrayVec::new();
        self.walk::<DtError>(&mut |n| {
            if !n.is_compatible("arm,smmu-v3") || !n.is_enabled() {
                return Ok(());
            }
            let regs = *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing"))?;
            if regs.size() < 0x20000 {
                return Err(n.bad("reg", "smaller than the 128 KiB of register pages 0 and 1"));
            }
            let mut s = SmmuNode {
                name: text(n.name()),
                regs,
                phandle: n.phandle()?,
                eventq: None,
                priq: None,
                cmdq_sync: None,
                gerror: None,
                combined: None,
                coherent: n.has("dma-coherent"),
                msi: n.has("msi-parent"),
            };
            for (i, name) in n.strings("interrupt-names").enumerate() {
                let irq = self.irq(n, i)?;
                match name {
                    "eventq" => s.eventq = irq,
                    "priq" => s.priq = irq,
                    "cmdq-sync" => s.cmdq_sync = irq,
                    "gerror" => s.gerror = irq,
                    "combined" => s.combined = irq,
                    _ => {}
                }
            }
            out.try_push(s).map_err(|_| DtError::TooMany("SMMUs"))
        })?;
        Ok(out)
    }

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

impl<'a> DtNode<'a> {
    fn str_prop_dyn(&self, name: &str) -> Result<Option<&'a str>, DtError> {
        let Some(v) = self.prop(name) else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        Ok(core::str::from_utf8(&v[..end]).ok())
    }
}

#[cfg(test)]
mod equivalence;

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    use crate::testutil::dtb;

    /// The byte-corruption fuzz below: its seed and number of cases.
    pub(super) const DT_FUZZ_SEED: u64 = 0x2545_f491_4f6c_dd1d;
    pub(super) const DT_FUZZ_CASES: usize = 20_000;

    pub(super) const VIRT: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/ {
    #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    psci { compatible = "arm,psci-1.0"; method = "smc"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
        fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000>; no-map; }; };
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>;
        interrupts = <0 0x4a 1 0 0x4b 1 0 0x4c 1 0 0x4d 1>;
        interrupt-names = "eventq", "priq", "cmdq-sync", "gerror"; dma-coherent; #iommu-cells = <1>; };
    smmu2: smmuv3@9070000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9070000 0x0 0x20000>; status = "disabled"; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; };
    pcie@10000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
        #address-cells = <3>; #size-cells = <2>; reg = <0x40 0x10000000 0x0 0x10000000>;
        ranges = <0x1000000 0x0 0x0 0x0 0x3eff0000 0x0 0x10000
                  0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
                  0x3000000 0x80 0x0 0x80 0x0 0x80 0x0>; };
    chosen { stdout-path = "/pl011@9000000"; bootargs = "bulkhead.selftest=none"; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; reg = <1>; enable-method = "psci"; };
        cpu@2 { device_type = "cpu"; reg = <2>; status = "disabled"; }; };
};
"#;

    #[test]
    fn stdout_path_names_a_16550() {
        let uart = |props: &str| {
            let src = std::format!(
                r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
                    aliases {{ serial0 = "/serial@fe660000"; }};
                    chosen {{ stdout-path = "serial0:1500000n8"; }};
                    serial@fe660000 {{ reg = <0x0 0xfe660000 0x0 0x100>; {props} }}; }};"#
            );
            DeviceTree::parse(&dtb(&src)).unwrap().stdout_uart().map_err(|e| std::format!("{e}"))
        };
        let base = PhysAddr(0xfe66_0000);
        assert_eq!(
            uart(r#"compatible = "rockchip,rk3568-uart", "snps,dw-apb-uart"; reg-shift = <2>; reg-io-width = <4>;"#),
            Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 2, width: 4 } }))
        );
        assert_eq!(uart(r#"compatible = "ns16550a";"#), Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 0, width: 1 } })));
        assert_eq!(uart(r#"compatible = "arm,pl011", "arm,primecell";"#), Ok(Some(Uart::pl011(base))));
        assert_eq!(uart(r#"compatible = "vendor,other-uart";"#), Ok(None), "an unknown UART is not used");
        let e = uart(r#"compatible = "ns16550a"; reg-io-width = <4>;"#).unwrap_err();
        assert!(e.contains("serial@fe660000") && e.contains("reg-io-width"), "{e}");
    }

    #[test]
    fn reads_the_virt_facts() {
        let blob = dtb(VIRT);
        let dt = DeviceTree::parse(&blob).unwrap();
        assert_eq!(dt.memory().unwrap().as_slice(), &[PhysRange::new(0x4000_0000, 0x8000_0000).unwrap()]);
        assert_eq!(dt.memreserve().collect::<Vec<_>>(), [PhysRange::new(0x4800_0000, 0x1000).unwrap()]);
        assert_eq!(dt.reserved_memory().unwrap().as_slice(), &[PhysRange::new(0x5000_0000, 0x10_0000).unwrap()]);
        let cpus = dt.cpus().unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1], CpuNode { mpidr: 1, psci: true });
        assert_eq!(dt.stdout_uart().unwrap(), Some(Uart::pl011(PhysAddr(0x900_0000))));
        assert_eq!(dt.bootargs().unwrap(), "bulkhead.selftest=none");
        assert_eq!(dt.psci().unwrap(), Some(PsciConduit::Smc));
        let smmus = dt.smmus().unwrap();
        assert_eq!(smmus.len(), 1, "disabled SMMU skipped");
        let s = &smmus[0];
        assert_eq!(s.regs, PhysRange::new(0x905_0000, 0x2_0000).unwrap());
        assert_eq!(s.eventq, Some(Irq { intid: 32 + 0x4a, edge: true }));
        assert_eq!(s.gerror, Some(Irq { intid: 32 + 0x4d, edge: true }));
        assert!(s.coherent && !s.msi);
        let mmio = dt.mmio_regions().unwrap();
        assert!(mmio.contains(&PhysRange::new(0x40_1000_0000, 0x1000_0000).unwrap()), "ECAM from reg with parent cells");
        assert!(mmio.contains(&PhysRange::new(0x80_0000_0000, 0x80_0000_0000).unwrap()), "64-bit window");
        assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x3eff_0000)), "I/O space is not MMIO");
        assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x4000_0000)), "memory is not MMIO");
    }

    /// The top-level readers give the same from the check's index as from
    /// walking the root's children, and a root with more children than the
    /// index holds is walked (with the same answers).
    #[test]
    fn top_level_index_and_walk_agree() {
        let mut many = std::string::String::from(VIRT);
        let extra: std::string::String = (0..MAX_TOP).map(|i| std::format!("    extra@{i:x} {{ reg = <0x0 {:#x} 0x0 0x1000>; }};\n", 0x2000_0000 + i * 0x1000)).collect();
        many = many.replacen("    chosen", &std::format!("{extra}    chosen"), 1);
        for (src, indexed) in [(VIRT, true), (many.as_str(), false)] {
            let blob = dtb(src);
            let dt = DeviceTree::parse(&blob).unwrap();
            assert_eq!(dt.top.complete, indexed);
            let walked = DeviceTree { top: TopIndex::NONE, ..dt };
            let names = |t: &DeviceTree<'_>| t.top_places().map(|p| t.blob.name(p).to_vec()).collect::<Vec<_>>();
            let root = dt.root();
            let children: Vec<_> = root.child_places(root.scan().2).map(|p| dt.blob.name(p).to_vec()).collect();
            assert_eq!(names(&dt), children);
            assert_eq!(names(&walked), children);
            for t in [&dt, &walked] {
                assert_eq!(t.memory().unwrap().as_slice(), dt.memory().unwrap().as_slice());
                // (Too many regions with the extra nodes: the same error.)
                assert_eq!(std::format!("{:?}", t.mmio_regions()), std::format!("{:?}", dt.mmio_regions()));
                assert_eq!(t.bootargs().unwrap(), "bulkhead.selftest=none");
                assert_eq!(t.psci().unwrap(), Some(PsciConduit::Smc));
                assert_eq!(t.cpus().unwrap().len(), 2);
                assert!(t.find("/chosen").unwrap().is_some() && t.find("/nowhere").unwrap().is_none());
            }
            assert_eq!(dt.mmio_regions().is_err(), !indexed);
        }
    }

    #[test]
    fn bad_reg_names_node_and_property() {
        let blob = dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;
            memory@0 { device_type = \"memory\"; reg = <0x0 0x40000000 0x0>; }; cpus { }; };");
        let dt = DeviceTree::parse(&blob).unwrap();
        match dt.memory().unwrap_err() {
            DtError::BadProperty { node, prop, .. } => {
                assert_eq!(node.as_str(), "memory@0");
                assert_eq!(prop, "reg");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn header_checks() {
        let blob = dtb(VIRT);
        let head: [u8; 8] = blob[..8].try_into().unwrap();
        assert_eq!(DeviceTree::blob_size(PhysAddr(0), &head).unwrap(), blob.len());
        let mut bad = head;
        bad[0] = 0;
        assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &bad), Err(DtError::NoHeader { .. })));
        let mut huge = head;
        huge[4] = 0x7f;
        assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &huge), Err(DtError::BadSize { .. })));
    }

    /// Every truncation and many byte corruptions of a real blob give a
    /// result or an error, never a panic.
    #[test]
    fn corrupted_blobs_never_panic() {
        let blob = dtb(VIRT);
        let check = |b: &[u8]| {
            if let Ok(dt) = DeviceTree::parse(b) {
                let _ = dt.memory();
                let _ = dt.cpus();
                let _ = dt.smmus();
                let _ = dt.mmio_regions();
                let _ = dt.stdout_uart();
                let _ = dt.reserved_memory();
                let _ = dt.memreserve().count();
                let _ = dt.bootargs();
            }
        };
        for len in 0..blob.len() {
            check(&blob[..len]);
        }
        for b in crate::testutil::byte_corruptions(&blob, DT_FUZZ_SEED, DT_FUZZ_CASES) {
            check(&b);
        }
    }
}
