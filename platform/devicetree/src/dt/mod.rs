//! The device tree as the kernel reads it: a checked blob ([`DeviceTree`]),
//! its nodes ([`DtNode`]), and the facts the kernel takes from the standard
//! nodes and bindings, one file each by the specification's name.
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
//!
//! | file | what | Devicetree Specification v0.4 |
//! |---|---|---|
//! | `check.rs` | the one-pass check of header, reservations, structure block, names | §5.2–5.5, §2.2 |
//! | `blob.rs` | walking the structure block's tokens | §5.4 |
//! | `node.rs` | a node and its standard properties (`compatible`, `status`, `#address-cells`, `reg`, `phandle`) | §2.3 |
//! | `memory.rs` | `/memory`, `/reserved-memory`, `/memreserve/` | §3.4, §3.5, §5.3 |
//! | `cpus.rs` | `/cpus` and its `cpu` nodes | §3.7, §3.8 |
//! | `chosen.rs` | `/chosen` (`bootargs`, `stdout-path` through `/aliases`) and the console UART | §3.3, §3.6, §4.2 |
//! | `irq.rs` | GIC interrupt specifiers (`interrupts`) | §2.4 |
//! | `psci.rs` | `/psci` (Linux binding `arm/psci.yaml`) | |
//! | `smmu.rs` | `arm,smmu-v3` nodes (Linux binding `iommu/arm,smmu-v3.yaml`) | |
//! | `mmio.rs` | the MMIO regions the identity map holds | §2.3.6, §2.3.8 |
//! | `ranges.rs` | addresses through buses' `ranges`, walks with ancestors | §2.3.8 |

mod blob;
mod check;
mod chosen;
mod cpus;
mod irq;
mod memory;
mod mmio;
mod node;
mod psci;
pub mod ranges;
mod smmu;

pub use chosen::{Uart, UartKind};
pub use cpus::{CpuNode, MAX_CPUS};
pub use irq::{swizzle, IntxMap, Irq, Route, MAX_INTX_ENTRIES};
pub use memory::{MAX_BANKS, MAX_RESERVED};
pub use mmio::MAX_MMIO;
pub use node::DtNode;
pub use psci::PsciConduit;
pub use smmu::{DisabledSmmu, SmmuIrqs, SmmuNode, MAX_SMMUS, SMMU_V3};

use crate::addr::PhysAddr;
use crate::fdt::{FDT_BEGIN_NODE, FDT_END_NODE, FDT_MAGIC, FDT_NOP, FDT_TOKEN};
use arrayvec::ArrayString;
use blob::{Blob, Place};
use check::{Layout, TopIndex};
use core::fmt::{self, Write};
use dtoolkit::error::FdtErrorKind;
use dtoolkit::fdt::Fdt;

/// Largest DTB the kernel accepts (QEMU's is 1 MiB).
pub const MAX_DTB_SIZE: u32 = 8 << 20;
/// Deepest node nesting the walkers follow.
const MAX_DEPTH: usize = 16;

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
            // checker have always shown, unless what it names is a name
            // the check takes (longer than 31 characters, or outside the
            // specification's character set): then the check's own words.
            // (`dtoolkit` refuses every blob `check` refuses; should it
            // not, the blob is read as it accepts it.)
            None => match Fdt::new(bytes) {
                Err(e) => {
                    let mut t = Text::new();
                    match e.kind {
                        FdtErrorKind::InvalidNodeName | FdtErrorKind::InvalidPropertyName => {
                            let _ = write!(t, "a name is not UTF-8 text, or the structure is bad ({e})");
                        }
                        _ => {
                            let _ = write!(t, "{e}");
                        }
                    }
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

    /// The node at an absolute `path`, with its parent's cells. A
    /// component without a unit address matches the first child of that
    /// name with any unit address.
    pub fn find(&self, path: &str) -> Result<Option<DtNode<'a>>, DtError> {
        Ok(self.find_with_ancestors(path)?.map(|(n, _)| n))
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
}

#[cfg(test)]
mod equivalence;

#[cfg(test)]
mod board_tests;
#[cfg(test)]
mod intx_tests;
#[cfg(test)]
mod tests;
