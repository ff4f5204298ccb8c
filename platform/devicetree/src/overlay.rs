//! Device-tree overlays applied by the kernel itself.
//!
//! The partition configuration is an overlay (`dtc -@`). When the bootloader
//! cannot apply it (Debian's U-Boot has no `fdt apply`, a loader that only
//! passes files along), it loads the overlay blobs into RAM and names them
//! in `/chosen`; the kernel merges them into a copy of the tree before it
//! reads anything else from it:
//!
//! ```dts
//! chosen {
//!     /* (address, size) of each overlay blob in RAM, 64-bit each: four
//!      * cells per blob whatever the root's #address-cells/#size-cells;
//!      * applied in this order */
//!     bulkhead,overlays = <0x0 0x44000000 0x0 0x1000
//!                          0x0 0x44001000 0x0 0x800>;
//! };
//! ```
//!
//! A region may be larger than its blob (the header's `totalsize` counts);
//! U-Boot can add the property with
//! `fdt set /chosen bulkhead,overlays <0x0 ADDR 0x0 SIZE>`.
//!
//! [`apply`] gives the result `fdtoverlay` gives (libfdt's
//! `fdt_overlay_apply`, also used by U-Boot's `fdt apply`), including the
//! order of properties and nodes in the output, so partition numbering and
//! everything else read from the tree does not depend on who applied the
//! overlay: fragments targeted by path (`target-path`, aliases and
//! unit-address-less names resolved as libfdt does) or by phandle
//! (`target`), the overlay's own phandles renumbered above the base's
//! (`__local_fixups__`), references to base labels resolved through the
//! base's `__symbols__` (`__fixups__`), and the overlay's labels added to the
//! base's `__symbols__`. Every step is checked; a malformed overlay gives an
//! [`OverlayError`] naming the overlay and what is wrong, never a panic, and
//! the base is unchanged unless every overlay applied.
//!
//! # Why not `dtoolkit::model::overlay::OverlayApplier`
//!
//! dtoolkit 0.4.1's applier was evaluated first (against the same corpus as
//! the tests below) and differs from libfdt where it matters here:
//! properties and nodes an overlay adds are appended where libfdt prepends
//! them (node order decides partition numbering); all fragment targets are
//! resolved before any is merged (a fragment cannot target a node an earlier
//! fragment added); only root children named `fragment` are applied; a base
//! node without a phandle that a `__fixups__` label names gets a new phandle
//! instead of an error; `target-path` needs the exact node name; overlay
//! symbols that do not point into a fragment are copied; a node an overlay
//! re-opens loses its phandle to the overlay's. So this module uses
//! dtoolkit for what it does well (validating and parsing blobs, the
//! in-memory tree, writing the result) and implements the merge itself.
//!
//! # Differences from `fdtoverlay` (dtc 1.6.1, the Debian bookworm tool)
//!
//! - An overlay node with a phandle that lands on a base node which already
//!   has one keeps the base's phandle, and the overlay's references to it
//!   follow (libfdt ≥ 1.7.0, "ensure that existing phandles are not
//!   overwritten"); 1.6.1 replaces the base's phandle and breaks the base's
//!   references to that node.
//! - Offsets in `__fixups__`/`__local_fixups__` past the end of their
//!   property are errors (libfdt ≥ 1.7 writes past the property); fixup
//!   offsets must be plain decimal digits (libfdt's `strtoul` also takes a
//!   sign or leading blanks).
//! - An alias used in a path must name an absolute path (libfdt would
//!   follow a chain of aliases, and loop forever on a cycle).
//! - Blobs whose node or property names are not UTF-8 text (libfdt takes
//!   any bytes), or that nest deeper than [`MAX_DEPTH`], are refused.
//!   Names longer than the Devicetree Specification's 31 characters, which
//!   real boards' trees have and libfdt takes, are merged like any other.
//! - Two sibling nodes with the same name (which dtc never produces) are
//!   merged into one.

use crate::addr::PhysRange;
use crate::fdt::{align4, header, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_HEADER_SIZE, FDT_MAGIC, FDT_NOP, FDT_PROP, FDT_PROP_HEADER, FDT_TOKEN};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use arrayvec::ArrayVec;
use core::fmt;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};

/// The `/chosen` property that lists overlay blobs in RAM.
pub const CHOSEN_PROPERTY: &str = "bulkhead,overlays";
/// Most overlays `/chosen` may name.
pub const MAX_OVERLAYS: usize = 8;
/// Largest region one overlay may occupy.
pub const MAX_OVERLAY_SIZE: u64 = 1 << 20;
/// Deepest node nesting accepted in a blob (the merge recurses per level).
pub const MAX_DEPTH: usize = 32;

const SYMBOLS: &str = "__symbols__";
const FIXUPS: &str = "__fixups__";
const LOCAL_FIXUPS: &str = "__local_fixups__";
const OVERLAY: &str = "__overlay__";
/// A phandle nobody may use (`target = <&missing>` before fixing up).
const PHANDLE_INVALID: u32 = u32::MAX;

/// Which blob an [`OverlayError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blob {
    /// The base device tree (or its `/chosen/bulkhead,overlays`).
    Base,
    /// `overlays[i]` (the i-th region of `/chosen/bulkhead,overlays`).
    Overlay(usize),
}

/// What is wrong with a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No FDT header, or one whose size does not fit the blob.
    Header(String),
    /// The structure does not parse (the text is dtoolkit's).
    Malformed(String),
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A fragment with an `__overlay__` node but neither `target` nor `target-path`.
    NoTarget {
        /// The fragment's node name.
        fragment: String,
    },
    /// A `target` or `target-path` that cannot be used.
    BadTarget {
        /// The fragment's node name.
        fragment: String,
        /// Why.
        why: String,
    },
    /// The target is not in the base tree.
    TargetNotFound {
        /// The fragment's node name.
        fragment: String,
        /// The path or phandle it names.
        target: String,
    },
    /// A `phandle` or `linux,phandle` property that cannot be renumbered.
    BadPhandle {
        /// The node's path in the overlay.
        node: String,
        /// Why.
        why: &'static str,
    },
    /// A `__local_fixups__` entry that does not match the overlay.
    BadLocalFixup {
        /// The node's path in the overlay.
        node: String,
        /// The property (empty when the node itself is missing).
        property: String,
        /// Why.
        why: String,
    },
    /// The overlay refers to base labels but the base has no `__symbols__`
    /// (it was compiled without `dtc -@`; QEMU's own DTB has none).
    NoBaseSymbols,
    /// A `__fixups__` entry that cannot be resolved.
    BadFixup {
        /// The label.
        label: String,
        /// Why.
        why: String,
    },
    /// A `__symbols__` entry of the overlay that cannot be carried over.
    BadSymbol {
        /// The label.
        label: String,
        /// Why.
        why: String,
    },
    /// `/chosen/bulkhead,overlays` is unusable.
    BadChosen(String),
}

/// An overlay that cannot be applied: which blob and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayError {
    /// The blob.
    pub blob: Blob,
    /// The problem.
    pub problem: Problem,
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blob::Base => write!(f, "base device tree"),
            Blob::Overlay(i) => write!(f, "overlays[{i}]"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Header(why) => write!(f, "{why}"),
            Problem::Malformed(why) => write!(f, "malformed blob: {why}"),
            Problem::TooDeep => write!(f, "nodes nested deeper than {MAX_DEPTH} levels"),
            Problem::NoTarget { fragment } => write!(f, "{fragment}: has __overlay__ but neither target nor target-path"),
            Problem::BadTarget { fragment, why } => write!(f, "{fragment}: {why}"),
            Problem::TargetNotFound { fragment, target } => {
                write!(f, "{fragment}: target {target} is not in the base tree")
            }
            Problem::BadPhandle { node, why } => write!(f, "{node}: {why}"),
            Problem::BadLocalFixup { node, property, why } if property.is_empty() => {
                write!(f, "__local_fixups__ for {node}: {why}")
            }
            Problem::BadLocalFixup { node, property, why } => write!(f, "__local_fixups__ for {node}:{property}: {why}"),
            Problem::NoBaseSymbols => {
                write!(f, "__fixups__ refers to labels of the base tree, but the base has no __symbols__ (target base nodes by path: &{{/path}})")
            }
            Problem::BadFixup { label, why } => write!(f, "__fixups__ label {label}: {why}"),
            Problem::BadSymbol { label, why } => write!(f, "__symbols__ label {label}: {why}"),
            Problem::BadChosen(why) => write!(f, "/chosen/{CHOSEN_PROPERTY}: {why}"),
        }
    }
}

impl fmt::Display for OverlayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.blob, self.problem)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for OverlayError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The overlay regions `/chosen/bulkhead,overlays` names, in order (empty
/// when the property is absent). Each must lie inside one of `ram` (the
/// kernel reads them through its identity map of RAM) and be at most
/// [`MAX_OVERLAY_SIZE`]. Needs no heap: the board reserves these regions
/// before it places its heap.
pub fn chosen_overlays(dt: &crate::dt::DeviceTree<'_>, ram: &[PhysRange]) -> Result<ArrayVec<PhysRange, MAX_OVERLAYS>, OverlayError> {
    let bad = |why: String| OverlayError { blob: Blob::Base, problem: Problem::BadChosen(why) };
    let mut out = ArrayVec::new();
    let chosen = dt.find("/chosen").map_err(|_| bad("cannot read /chosen".into()))?;
    let Some(value) = chosen.and_then(|c| c.prop(CHOSEN_PROPERTY)) else { return Ok(out) };
    if value.is_empty() || value.len() % 16 != 0 {
        return Err(bad(format!("{} bytes; expected (address, size) pairs of two 64-bit cells each", value.len())));
    }
    for pair in value.chunks_exact(16) {
        let base = be64(&pair[..8]);
        let size = be64(&pair[8..]);
        if size == 0 || size > MAX_OVERLAY_SIZE {
            return Err(bad(format!("region at {base:#x} has size {size:#x} (allowed 1..={MAX_OVERLAY_SIZE:#x})")));
        }
        let r = PhysRange::new(base, size).ok_or_else(|| bad(format!("region at {base:#x} wraps around")))?;
        if !ram.iter().any(|bank| bank.covers(&r)) {
            return Err(bad(format!("region [{base:#x}..{:#x}) is not inside RAM", r.end.0)));
        }
        out.try_push(r).map_err(|_| bad(format!("more than {MAX_OVERLAYS} overlays")))?;
    }
    Ok(out)
}

/// Applies `overlays` to `base` in order and returns the merged blob, as
/// `fdtoverlay -i base -o out overlays...` would produce it.
pub fn apply(base: &[u8], overlays: &[&[u8]]) -> Result<Vec<u8>, OverlayError> {
    let mut tree = parse_blob(base).map_err(|problem| OverlayError { blob: Blob::Base, problem })?;
    for (i, blob) in overlays.iter().enumerate() {
        let at = |problem| OverlayError { blob: Blob::Overlay(i), problem };
        let overlay = parse_blob(blob).map_err(at)?;
        apply_one(&mut tree, overlay).map_err(at)?;
    }
    Ok(tree.to_dtb())
}

fn be32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_be_bytes(w)
}

fn be64(b: &[u8]) -> u64 {
    (u64::from(be32(b)) << 32) | u64::from(be32(&b[4..]))
}

/// Checks the header and structure of `bytes` and reads it into a tree.
fn parse_blob(bytes: &[u8]) -> Result<DeviceTree, Problem> {
    if bytes.len() < FDT_HEADER_SIZE {
        return Err(Problem::Header(format!("truncated: {} bytes, an FDT header alone is {FDT_HEADER_SIZE}", bytes.len())));
    }
    let magic = be32(bytes);
    if magic != FDT_MAGIC {
        return Err(Problem::Header(format!("no FDT header: magic is {magic:#010x}, expected {FDT_MAGIC:#010x}")));
    }
    let total = be32(&bytes[header::TOTALSIZE * 4..]) as usize;
    if total < FDT_HEADER_SIZE || total > bytes.len() {
        return Err(Problem::Header(format!("truncated: header says {total} bytes, {} available", bytes.len())));
    }
    let blob = &bytes[..total];
    // The reader's check (which takes every name that is text, as libfdt
    // does; `dtoolkit`'s own refuses names longer than 31 characters) and
    // then `dtoolkit`'s tree of the blob it passed: every token, length,
    // offset and name is known good, which is all `new_unchecked` needs.
    crate::dt::DeviceTree::parse(blob).map_err(|e| match e {
        crate::dt::DtError::Malformed(t) => Problem::Malformed(t.as_str().to_string()),
        e => Problem::Malformed(e.to_string()),
    })?;
    check_depth(blob)?;
    Ok(DeviceTree::from_fdt(&Fdt::new_unchecked(blob)))
}

/// Walks the (already validated) structure block without recursion and
/// refuses nesting beyond [`MAX_DEPTH`], so nothing recursive below can
/// exhaust the stack.
fn check_depth(blob: &[u8]) -> Result<(), Problem> {
    let malformed = || Problem::Malformed("structure block ends early".into());
    let word = |off: usize| blob.get(off..off + FDT_TOKEN).map(be32).ok_or_else(malformed);
    let mut off = word(header::OFF_DT_STRUCT * 4)? as usize;
    let mut depth = 0usize;
    loop {
        match word(off)? {
            FDT_BEGIN_NODE => {
                depth += 1;
                if depth > MAX_DEPTH + 1 {
                    return Err(Problem::TooDeep);
                }
                let name = blob.get(off + FDT_TOKEN..).ok_or_else(malformed)?;
                let len = name.iter().position(|&b| b == 0).ok_or_else(malformed)?;
                off = align4(off + FDT_TOKEN + len + 1);
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).ok_or_else(malformed)?;
                off += FDT_TOKEN;
            }
            FDT_PROP => {
                let len = word(off + FDT_TOKEN)? as usize;
                off = align4(off + FDT_PROP_HEADER + len);
            }
            FDT_NOP => off += FDT_TOKEN,
            FDT_END => return Ok(()),
            _ => return Err(malformed()),
        }
    }
}

// ---- The tree as libfdt sees it -------------------------------------------

/// The value of property `name` of `n`.
fn value<'a>(n: &'a DeviceTreeNode, name: &str) -> Option<&'a [u8]> {
    // `value_as` keeps the tree's lifetime (`Property::value` would tie the
    // bytes to a temporary).
    n.properties().find(|p| p.name() == name)?.value_as::<&'a [u8]>().ok()
}

/// The bytes before the first NUL, if there is one and they are UTF-8
/// (libfdt reads such values as C strings).
fn c_str(v: &[u8]) -> Option<&str> {
    let end = v.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&v[..end]).ok()
}

/// libfdt's node-name match: `want` equals the name, or has no unit address
/// and equals the name without its unit address.
fn names_match(have: &str, want: &str) -> bool {
    have == want || (!want.contains('@') && have.strip_prefix(want).is_some_and(|rest| rest.starts_with('@')))
}

/// The first child of `n` that `name` matches.
fn child_named<'a>(n: &'a DeviceTreeNode, name: &str) -> Option<&'a DeviceTreeNode> {
    n.children().find(|c| names_match(c.name(), name))
}

/// The node at the exact child names `path` below `root`.
fn node_at<'a>(root: &'a DeviceTreeNode, path: &[String]) -> Option<&'a DeviceTreeNode> {
    let mut n = root;
    for name in path {
        n = n.children().find(|c| c.name() == name.as_str())?;
    }
    Some(n)
}

fn node_at_mut<'a>(root: &'a mut DeviceTreeNode, path: &[String]) -> Option<&'a mut DeviceTreeNode> {
    let mut n = root;
    for name in path {
        n = n.child_mut(name)?;
    }
    Some(n)
}

/// `/a/b` for the child names `[a, b]`.
fn path_text(path: &[String]) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.iter().fold(String::new(), |mut s, name| {
        s.push('/');
        s.push_str(name);
        s
    })
}

/// libfdt's `fdt_path_offset`: a path from the root, or one starting with
/// an alias from `/aliases`; components match as [`names_match`]. Returns
/// the exact child names.
fn lookup(root: &DeviceTreeNode, path: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut rest = path;
    if !path.starts_with('/') {
        let (alias, tail) = path.split_at(path.find('/').unwrap_or(path.len()));
        let target = c_str(value(child_named(root, "aliases")?, alias)?)?;
        if !target.starts_with('/') {
            return None;
        }
        names = lookup(root, target)?;
        rest = tail;
    }
    let mut n = node_at(root, &names)?;
    for comp in rest.split('/').filter(|c| !c.is_empty()) {
        let c = child_named(n, comp)?;
        names.push(c.name().to_string());
        n = c;
    }
    Some(names)
}

/// libfdt's `fdt_get_phandle`: `phandle`, else `linux,phandle`, if one
/// cell; 0 for none.
fn phandle_of(n: &DeviceTreeNode) -> u32 {
    ["phandle", "linux,phandle"].iter().filter_map(|p| value(n, p)).find(|v| v.len() == 4).map_or(0, be32)
}

fn max_phandle(n: &DeviceTreeNode) -> u32 {
    n.children().map(max_phandle).fold(phandle_of(n), u32::max)
}

/// The first node in document order with phandle `ph`.
fn find_phandle(n: &DeviceTreeNode, ph: u32, path: &mut Vec<String>) -> bool {
    if phandle_of(n) == ph {
        return true;
    }
    for c in n.children() {
        path.push(c.name().to_string());
        if find_phandle(c, ph, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// Sets property `name` as libfdt's `fdt_setprop` does: in place if it
/// exists, otherwise as the node's first property.
fn set_prop(n: &mut DeviceTreeNode, name: &str, v: &[u8]) {
    if let Some(p) = n.property_mut(name) {
        p.set_value(v);
        return;
    }
    let old: Vec<DeviceTreeProperty> = n.properties().cloned().collect();
    for p in old.iter().rev() {
        n.remove_property(p.name());
    }
    n.add_property(DeviceTreeProperty::new_unchecked(name, v));
    for p in old {
        n.add_property(p);
    }
}

/// Adds an empty child as libfdt's `fdt_add_subnode` does: after the
/// properties, before the other children.
fn prepend_child(n: &mut DeviceTreeNode, name: &str) {
    let names: Vec<String> = n.children().map(|c| c.name().to_string()).collect();
    let mut old = Vec::with_capacity(names.len());
    for name in names.iter().rev() {
        old.extend(n.remove_child(name));
    }
    n.add_child(DeviceTreeNode::new_unchecked(name));
    for c in old.into_iter().rev() {
        n.add_child(c);
    }
}

/// libfdt's `overlay_apply_node`: properties then children, in overlay
/// order; an existing child is re-opened, a new one prepended.
fn merge(target: &mut DeviceTreeNode, overlay: &DeviceTreeNode) {
    for p in overlay.properties() {
        set_prop(target, p.name(), p.value());
    }
    for c in overlay.children() {
        let name = match child_named(target, c.name()) {
            Some(existing) => existing.name().to_string(),
            None => {
                prepend_child(target, c.name());
                c.name().to_string()
            }
        };
        if let Some(t) = target.child_mut(&name) {
            merge(t, c);
        }
    }
}

// ---- One overlay ----------------------------------------------------------

/// Where a fragment points: the exact child names, and its `target-path`
/// text when it used one (the symbols keep that text as written).
struct Target {
    path: Vec<String>,
    target_path: Option<String>,
}

/// libfdt's `fdt_overlay_target_offset`: a non-zero `target` phandle wins,
/// otherwise `target-path`.
fn resolve_target(base: &DeviceTreeNode, fragment: &DeviceTreeNode) -> Result<Target, Problem> {
    let name = || fragment.name().to_string();
    if let Some(t) = value(fragment, "target") {
        if t.len() != 4 {
            return Err(Problem::BadTarget { fragment: name(), why: format!("target is {} bytes, not one cell", t.len()) });
        }
        match be32(t) {
            PHANDLE_INVALID => {
                return Err(Problem::BadTarget {
                    fragment: name(),
                    why: "target is an unresolved reference (0xffffffff): its label is not in __fixups__".into(),
                })
            }
            0 => {}
            ph => {
                let mut path = Vec::new();
                if !find_phandle(base, ph, &mut path) {
                    return Err(Problem::TargetNotFound { fragment: name(), target: format!("phandle {ph:#x}") });
                }
                return Ok(Target { path, target_path: None });
            }
        }
    }
    let Some(tp) = value(fragment, "target-path") else { return Err(Problem::NoTarget { fragment: name() }) };
    let text = c_str(tp).ok_or_else(|| Problem::BadTarget { fragment: name(), why: "target-path is not a string".into() })?;
    let path = lookup(base, text).ok_or_else(|| Problem::TargetNotFound { fragment: name(), target: format!("{text:?}") })?;
    Ok(Target { path, target_path: Some(text.to_string()) })
}

/// Adds `delta` to every `phandle`/`linux,phandle` (libfdt's
/// `overlay_adjust_node_phandles`).
fn renumber(n: &mut DeviceTreeNode, delta: u32, path: &mut Vec<String>) -> Result<(), Problem> {
    for prop in ["phandle", "linux,phandle"] {
        let Some(v) = value(n, prop) else { continue };
        let bad = |why| Problem::BadPhandle { node: path_text(path), why };
        if v.len() != 4 {
            return Err(bad("phandle is not one cell"));
        }
        let new = be32(v).checked_add(delta).filter(|&p| p != PHANDLE_INVALID).ok_or_else(|| bad("phandle overflows when renumbered above the base's"))?;
        set_prop(n, prop, &new.to_be_bytes());
    }
    let names: Vec<String> = n.children().map(|c| c.name().to_string()).collect();
    for name in names {
        path.push(name);
        if let Some(c) = n.child_mut(path.last().map_or("", String::as_str)) {
            renumber(c, delta, path)?;
        }
        path.pop();
    }
    Ok(())
}

/// Walks `__local_fixups__` (`fixups`) against the overlay (`tree`) and
/// rewrites every phandle reference it lists with `f` (libfdt's
/// `overlay_update_local_node_references`).
fn local_refs(tree: &mut DeviceTreeNode, fixups: &DeviceTreeNode, path: &mut Vec<String>, f: &dyn Fn(u32) -> u32) -> Result<(), Problem> {
    for fx in fixups.properties() {
        let bad = |why: String| Problem::BadLocalFixup { node: path_text(path), property: fx.name().to_string(), why };
        let offsets = fx.value();
        if offsets.len() % 4 != 0 {
            return Err(bad(format!("{} bytes of offsets, not whole cells", offsets.len())));
        }
        let mut v = value(tree, fx.name()).ok_or_else(|| bad("no such property in the overlay".into()))?.to_vec();
        let len = v.len();
        for off in offsets.chunks_exact(4).map(|o| be32(o) as usize) {
            let cell = v
                .get_mut(off..off.saturating_add(4))
                .filter(|c| c.len() == 4)
                .ok_or_else(|| bad(format!("offset {off} is outside the {len}-byte property")))?;
            let new = f(be32(cell));
            cell.copy_from_slice(&new.to_be_bytes());
        }
        set_prop(tree, fx.name(), &v);
    }
    for fc in fixups.children() {
        let Some(name) = child_named(tree, fc.name()).map(|c| c.name().to_string()) else {
            path.push(fc.name().to_string());
            let node = path_text(path);
            return Err(Problem::BadLocalFixup { node, property: String::new(), why: "no such node in the overlay".into() });
        };
        path.push(name);
        if let Some(child) = tree.child_mut(path.last().map_or("", String::as_str)) {
            local_refs(child, fc, path, f)?;
        }
        path.pop();
    }
    Ok(())
}

/// One `__fixups__` entry `PATH:PROPERTY:OFFSET`.
fn parse_fixup(entry: &str) -> Option<(&str, &str, usize)> {
    let (path, rest) = entry.split_once(':')?;
    let (prop, offset) = rest.split_once(':')?;
    if prop.is_empty() || offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((path, prop, offset.parse().ok()?))
}

/// Resolves `__fixups__`: every reference to a base label gets the phandle
/// of the node the base's `__symbols__` names (libfdt's
/// `overlay_fixup_phandles`).
fn fixups(base: &DeviceTreeNode, overlay: &mut DeviceTreeNode) -> Result<(), Problem> {
    let Some(fixups) = child_named(overlay, FIXUPS).cloned() else { return Ok(()) };
    let symbols = child_named(base, SYMBOLS).ok_or(Problem::NoBaseSymbols)?;
    for fx in fixups.properties() {
        let label = fx.name();
        let bad = |why: String| Problem::BadFixup { label: label.to_string(), why };
        let sym = value(symbols, label).ok_or_else(|| bad("no such label in the base's __symbols__".into()))?;
        let sym_path = c_str(sym).ok_or_else(|| bad("its __symbols__ entry is not a string".into()))?;
        let node = lookup(base, sym_path).and_then(|p| node_at(base, &p)).ok_or_else(|| bad(format!("its node {sym_path} is not in the base tree")))?;
        let ph = phandle_of(node);
        if ph == 0 {
            return Err(bad(format!("its node {sym_path} has no phandle")));
        }
        let mut entries = fx.value();
        if entries.is_empty() {
            return Err(bad("no locations".into()));
        }
        while !entries.is_empty() {
            let end = entries.iter().position(|&b| b == 0).ok_or_else(|| bad("a location is not NUL-terminated".into()))?;
            let text = core::str::from_utf8(&entries[..end]).map_err(|_| bad("a location is not text".into()))?;
            entries = &entries[end + 1..];
            let (path, prop, off) = parse_fixup(text).ok_or_else(|| bad(format!("location {text:?} is not PATH:PROPERTY:OFFSET")))?;
            let names = lookup(overlay, path).ok_or_else(|| bad(format!("{path} is not in the overlay")))?;
            let target = node_at_mut(overlay, &names).ok_or_else(|| bad(format!("{path} is not in the overlay")))?;
            let mut v = value(target, prop).ok_or_else(|| bad(format!("{path} has no property {prop}")))?.to_vec();
            let cell = v.get_mut(off..off.saturating_add(4)).filter(|c| c.len() == 4).ok_or_else(|| bad(format!("offset {off} is outside {path}:{prop}")))?;
            cell.copy_from_slice(&ph.to_be_bytes());
            set_prop(target, prop, &v);
        }
    }
    Ok(())
}

/// Overlay nodes with a phandle that land on base nodes with one: the
/// overlay node takes the base's phandle and the overlay's references
/// follow (libfdt ≥ 1.7's `overlay_prevent_phandle_overwrite`).
fn keep_base_phandles(base: &DeviceTreeNode, overlay: &mut DeviceTreeNode) -> Result<(), Problem> {
    fn collect(b: &DeviceTreeNode, o: &DeviceTreeNode, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, u32, u32)>) {
        let (bp, op) = (phandle_of(b), phandle_of(o));
        if bp != 0 && op != 0 {
            out.push((path.clone(), bp, op));
        }
        for oc in o.children() {
            if let Some(bc) = child_named(b, oc.name()) {
                path.push(oc.name().to_string());
                collect(bc, oc, path, out);
                path.pop();
            }
        }
    }
    let mut conflicts = Vec::new();
    for fragment in overlay.children() {
        let Some(body) = child_named(fragment, OVERLAY) else { continue };
        let target = match resolve_target(base, fragment) {
            Ok(t) => t,
            // Not in the base yet: nothing there to overwrite (the merge
            // reports it if it stays missing).
            Err(Problem::TargetNotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(b) = node_at(base, &target.path) else { continue };
        let mut path = Vec::from([fragment.name().to_string(), body.name().to_string()]);
        collect(b, body, &mut path, &mut conflicts);
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    let local = child_named(overlay, LOCAL_FIXUPS).cloned();
    for (path, bp, op) in conflicts {
        if let Some(n) = node_at_mut(overlay, &path) {
            for prop in ["phandle", "linux,phandle"] {
                if value(n, prop).is_some_and(|v| v.len() == 4) {
                    set_prop(n, prop, &bp.to_be_bytes());
                }
            }
        }
        if let Some(local) = &local {
            local_refs(overlay, local, &mut Vec::new(), &|v| if v == op { bp } else { v })?;
        }
    }
    Ok(())
}

/// Carries the overlay's `__symbols__` into the base's, pointing into the
/// fragments' targets (libfdt's `overlay_symbol_update`).
fn symbols(base: &mut DeviceTreeNode, overlay: &DeviceTreeNode) -> Result<(), Problem> {
    let Some(ov_symbols) = child_named(overlay, SYMBOLS) else { return Ok(()) };
    let mut updates = Vec::new();
    for sym in ov_symbols.properties() {
        let label = sym.name();
        let bad = |why: String| Problem::BadSymbol { label: label.to_string(), why };
        let v = sym.value();
        if v.iter().position(|&b| b == 0) != Some(v.len().wrapping_sub(1)) {
            return Err(bad("not a single string".into()));
        }
        let text = core::str::from_utf8(&v[..v.len() - 1]).map_err(|_| bad("not text".into()))?;
        let Some(rel) = text.strip_prefix('/') else { return Err(bad(format!("{text:?} is not an absolute path"))) };
        // Only labels inside a fragment's body end up in the base.
        let Some((frag_name, rest)) = rel.split_once('/') else { continue };
        let rel = match rest.strip_prefix("__overlay__/") {
            Some(r) => r,
            None if rest == "__overlay__" => "",
            None => continue,
        };
        let fragment = child_named(overlay, frag_name)
            .filter(|f| child_named(f, OVERLAY).is_some())
            .ok_or_else(|| bad(format!("{text} is not inside a fragment of the overlay")))?;
        let target = resolve_target(base, fragment)?;
        let at = target.target_path.unwrap_or_else(|| path_text(&target.path));
        let mut path = if at.len() > 1 { at } else { String::new() };
        path.push('/');
        path.push_str(rel);
        path.push('\0');
        updates.push((label.to_string(), path));
    }
    let name = match child_named(base, SYMBOLS) {
        Some(s) => s.name().to_string(),
        None => {
            prepend_child(base, SYMBOLS);
            SYMBOLS.to_string()
        }
    };
    if let Some(base_symbols) = base.child_mut(&name) {
        for (label, path) in updates {
            set_prop(base_symbols, &label, path.as_bytes());
        }
    }
    Ok(())
}

/// libfdt's `fdt_overlay_apply`, on trees. `base` changes only if the whole
/// overlay applies (the caller drops it on error).
fn apply_one(base: &mut DeviceTree, mut overlay: DeviceTree) -> Result<(), Problem> {
    let ov = &mut overlay.root;
    // The overlay's own phandles move above every phandle of the base, and
    // its references to them follow.
    let delta = max_phandle(&base.root);
    renumber(ov, delta, &mut Vec::new())?;
    if let Some(local) = child_named(ov, LOCAL_FIXUPS).cloned() {
        local_refs(ov, &local, &mut Vec::new(), &|v| v.wrapping_add(delta))?;
    }
    fixups(&base.root, ov)?;
    keep_base_phandles(&base.root, ov)?;
    // Merge in fragment order; each target is looked up after the previous
    // fragments merged, so one may target a node an earlier one added.
    for fragment in ov.children() {
        let Some(body) = child_named(fragment, OVERLAY) else { continue };
        let target = resolve_target(&base.root, fragment)?;
        if let Some(t) = node_at_mut(&mut base.root, &target.path) {
            merge(t, body);
        }
    }
    symbols(&mut base.root, ov)
}

#[cfg(test)]
mod tests {
    //! The corpus: every case is compiled with `dtc -@`, applied by
    //! `fdtoverlay` and by [`apply`], and the two results decompiled with
    //! `dtc -O dts` must be the same text (properties and nodes in the same
    //! order). Malformed overlays must give errors, never panics.
    extern crate std;

    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use std::string::String;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::{eprintln, println};

    /// QEMU's own DTB for `virt` (no `__symbols__`), shared with discovery's tests.
    const QEMU_VIRT: &[u8] = include_bytes!("../tests/data/qemu-virt.dtb");
    /// The board's partition overlays, as users write them.
    const DEMO: &str = include_str!("../../../boards/qemu-virt/overlays/demo.dts");
    const HELLO: &str = include_str!("../../../boards/qemu-virt/overlays/hello.dts");

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!("bulkhead-overlay-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            std::fs::create_dir_all(&d).expect("temp dir");
            Scratch(d)
        }
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
        let out = cmd.output().map_err(|e| {
            format!("cannot run {:?} ({e}); dtc and fdtoverlay come with device-tree-compiler (cargo xtask test installs it)", cmd.get_program())
        })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `dtc -@` of a source.
    fn compile(dts: &str) -> Vec<u8> {
        let dir = Scratch::new();
        let src = dir.join("in.dts");
        std::fs::write(&src, dts).expect("write dts");
        run(Command::new("dtc").args(["-q", "-@", "-I", "dts", "-O", "dtb", "-o", "-"]).arg(&src)).unwrap_or_else(|e| panic!("dtc failed: {e}\n{dts}"))
    }

    fn decompile(dtb: &[u8]) -> String {
        let dir = Scratch::new();
        let f = dir.join("in.dtb");
        std::fs::write(&f, dtb).expect("write dtb");
        let out = run(Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dts", "-o", "-"]).arg(&f)).unwrap_or_else(|e| panic!("dtc cannot read a blob: {e}"));
        String::from_utf8(out).expect("dts text")
    }

    /// `fdtoverlay -i base -o out overlays...`.
    fn fdtoverlay(base: &[u8], overlays: &[&[u8]]) -> Result<Vec<u8>, String> {
        let dir = Scratch::new();
        let b = dir.join("base.dtb");
        std::fs::write(&b, base).expect("write base");
        let mut cmd = Command::new("fdtoverlay");
        cmd.arg("-i").arg(&b).arg("-o").arg(dir.join("out.dtb"));
        for (i, o) in overlays.iter().enumerate() {
            let f = dir.join(&format!("o{i}.dtbo"));
            std::fs::write(&f, o).expect("write overlay");
            cmd.arg(f);
        }
        run(&mut cmd)?;
        Ok(std::fs::read(dir.join("out.dtb")).expect("fdtoverlay output"))
    }

    /// Both tools on `base` + `overlays`: the same tree, or both refuse.
    fn same_as_fdtoverlay(name: &str, base: &[u8], overlays: &[&[u8]]) -> Result<String, OverlayError> {
        let ours = apply(base, overlays);
        let theirs = fdtoverlay(base, overlays);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                let (o, t) = (decompile(o), decompile(t));
                if o != t {
                    let line = o.lines().zip(t.lines()).position(|(a, b)| a != b).unwrap_or(0);
                    let show = |s: &str| s.lines().skip(line.saturating_sub(3)).take(8).collect::<Vec<_>>().join("\n");
                    panic!("{name}: differs from fdtoverlay at line {line}\n--- ours\n{}\n--- fdtoverlay\n{}", show(&o), show(&t));
                }
                Ok(o)
            }
            (Err(e), Err(t)) => {
                println!("{name}: both refuse: ours: {e}; fdtoverlay: {t}");
                Err(e.clone())
            }
            (Ok(_), Err(t)) => panic!("{name}: fdtoverlay refuses ({t}) but apply succeeded"),
            (Err(e), Ok(_)) => panic!("{name}: fdtoverlay applies it but apply refused: {e}"),
        }
    }

    fn ok(name: &str, base: &[u8], overlays: &[&str]) -> String {
        let blobs: Vec<Vec<u8>> = overlays.iter().map(|s| compile(s)).collect();
        let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        same_as_fdtoverlay(name, base, &refs).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A base with labels, compiled with `-@` so it has `__symbols__`.
    const LABELLED: &str = r#"
/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    model = "base";
    aliases { serial0 = "/soc/serial@1000"; };
    chosen { bootargs = "old"; };
    clk: clock { #clock-cells = <1>; };
    soc {
        #address-cells = <2>;
        #size-cells = <2>;
        uart0: serial@1000 { reg = <0 0x1000 0 0x100>; status = "disabled"; clocks = <&clk 0>; };
        gpio: gpio@2000 { reg = <0 0x2000 0 0x100>; gpio-controller; };
        bus@3000 { leaf { }; };
    };
};
"#;

    #[test]
    fn board_overlays_on_qemus_dtb() {
        let demo = ok("demo", QEMU_VIRT, &[DEMO]);
        assert!(demo.contains("bulkhead,partition = <0x8009>;") || demo.contains("bulkhead,partition = <0x800"), "{demo}");
        let hello = ok("hello", QEMU_VIRT, &[HELLO]);
        assert!(hello.contains("partitions {"));
    }

    #[test]
    fn path_targets_nested_nodes_and_replaced_properties() {
        ok(
            "paths",
            QEMU_VIRT,
            &[r#"
/dts-v1/;
/plugin/;
&{/} { model = "replaced"; new-root-prop = <1 2 3>; };
&{/chosen} { bootargs = "replaced"; bulkhead,extra = "x"; };
&{/pl011@9000000} { status = "okay"; a = <1>; b = <2>; c = "three"; };
&{/} {
    outer {
        p1 = <1>; p2 = <2>; p3 = <3>;
        inner-a { q = <1>; deeper { r = <2>; s = <3>; }; };
        inner-b@10 { reg = <0x10>; };
        inner-c { };
    };
};
"#],
        );
    }

    #[test]
    fn target_path_without_unit_address_and_by_alias() {
        // libfdt matches "pl011" to pl011@9000000, and a path may start
        // with an alias.
        ok(
            "unit-address-less",
            QEMU_VIRT,
            &[r#"
/dts-v1/;
/plugin/;
/ {
    fragment@0 { target-path = "/pl011"; __overlay__ { found = "yes"; }; };
    fragment@1 { target-path = "/pcie"; __overlay__ { marker; }; };
};
"#],
        );
        let base = compile(LABELLED);
        ok(
            "alias",
            &base,
            &[r#"
/dts-v1/;
/plugin/;
/ {
    fragment@0 { target-path = "serial0"; __overlay__ { via-alias; }; };
};
"#],
        );
    }

    #[test]
    fn local_phandles_are_renumbered_above_the_base() {
        let out = ok(
            "local phandles",
            QEMU_VIRT,
            &[r#"
/dts-v1/;
/plugin/;
&{/} {
    a: node-a { self = <&a>; other = <&b 7 &c>; };
    b: node-b { list = <1 &a 2 &b 3>; };
    group { c: node-c { back = <&a>; }; };
};
&{/cpus/cpu@1} { owner = <&b>; };
"#],
        );
        // QEMU's phandles end at 0x8008, so the overlay's start above.
        assert!(out.contains("phandle = <0x8009>"), "{out}");
    }

    #[test]
    fn phandle_targets_base_labels_and_symbols() {
        let base = compile(LABELLED);
        let out = ok(
            "labels",
            &base,
            &[r#"
/dts-v1/;
/plugin/;
&uart0 { status = "okay"; clocks = <&clk 3>; gpios = <&gpio 1 0>; };
&gpio { new: child { x = <&uart0>; y = <&new>; }; };
&{/soc/bus@3000} { bus: sub { }; };
&{/} { top: top-node { }; };
"#],
        );
        // Overlay labels land in the base's symbols: under a phandle target
        // by the target's path, under a path target by the text as written.
        assert!(out.contains("new = \"/soc/gpio@2000/child\";"), "{out}");
        assert!(out.contains("bus = \"/soc/bus@3000/sub\";"), "{out}");
        assert!(out.contains("top = \"/top-node\";"), "{out}");
    }

    #[test]
    fn fragments_may_target_what_earlier_fragments_added() {
        ok(
            "dependent",
            QEMU_VIRT,
            &[r#"
/dts-v1/;
/plugin/;
&{/} { added { }; };
&{/added} { more { x = <1>; }; };
&{/added/more} { y = <2>; };
"#],
        );
    }

    #[test]
    fn overlays_in_sequence_see_each_others_labels() {
        let base = compile(LABELLED);
        ok(
            "sequence",
            &base,
            &[
                r#"
/dts-v1/;
/plugin/;
&{/} { p1: part-one { }; };
"#,
                r#"
/dts-v1/;
/plugin/;
&p1 { filled = "by the second"; ref = <&p1 &uart0>; };
&{/} { q: part-two { to-one = <&p1>; me = <&q>; }; };
"#,
            ],
        );
    }

    #[test]
    fn hand_written_fragments() {
        // Raw phandle targets, a fragment without __overlay__ (skipped), a
        // label on a fragment body, a root-level node that is no fragment.
        let intc = 0x8005; // /intc@8000000 in QEMU's DTB (interrupt-parent)
        ok(
            "hand-written",
            QEMU_VIRT,
            &[&format!(
                r#"
/dts-v1/;
/plugin/;
/ {{
    fragment@0 {{ target = <{intc:#x}>; __overlay__ {{ by-phandle; }}; }};
    fragment@1 {{ target-path = "/nowhere"; }};
    fragment@2 {{ target-path = "/"; body: __overlay__ {{ x = <1>; }}; }};
    other {{ target-path = "/psci"; __overlay__ {{ also-applied; }}; }};
}};
"#
            )],
        );
    }

    #[test]
    fn base_phandles_are_kept_when_an_overlay_reopens_a_node() {
        // Differs from dtc 1.6.1 on purpose (libfdt >= 1.7.0 behaviour): the
        // second overlay re-opens part-one with a label of its own, so its
        // node has a phandle; the base's phandle must survive and the
        // overlay's reference must follow it.
        let base = compile(LABELLED);
        let first = compile("/dts-v1/;\n/plugin/;\n&{/} { p1: part-one { me = <&p1>; }; };\n");
        let second = compile("/dts-v1/;\n/plugin/;\n&{/} { again: part-one { mine = <&again>; }; };\n");
        let merged = apply(&base, &[&first, &second]).expect("applies");
        let tree = DeviceTree::from_fdt(&Fdt::new(&merged).expect("valid"));
        let p1 = tree.find_node("/part-one").expect("part-one");
        let ph = phandle_of(p1);
        assert_eq!(value(p1, "me"), Some(&ph.to_be_bytes()[..]));
        assert_eq!(value(p1, "mine"), Some(&ph.to_be_bytes()[..]));
    }

    fn refused(name: &str, base: &[u8], overlay: &[u8]) -> OverlayError {
        let e = same_as_fdtoverlay(name, base, &[overlay]).expect_err("must be refused");
        assert_eq!(e.blob, Blob::Overlay(0), "{name}: {e}");
        e
    }

    #[test]
    fn malformed_overlays_are_refused_with_a_reason() {
        let good = compile(DEMO);
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 0xff;
        let e = refused("bad magic", QEMU_VIRT, &bad_magic);
        assert!(e.to_string().starts_with("overlays[0]: no FDT header: magic is"), "{e}");

        let truncated = &good[..good.len() - 16];
        let e = apply(QEMU_VIRT, &[truncated]).expect_err("truncated");
        assert!(e.to_string().contains("truncated: header says"), "{e}");

        let e = refused("no target", QEMU_VIRT, &compile("/dts-v1/;\n/plugin/;\n/ { fragment@0 { __overlay__ { x; }; }; };\n"));
        assert_eq!(e.problem, Problem::NoTarget { fragment: "fragment@0".into() });

        let e = refused("missing path", QEMU_VIRT, &compile("/dts-v1/;\n/plugin/;\n&{/nope} { x; };\n"));
        assert!(matches!(&e.problem, Problem::TargetNotFound { target, .. } if target == "\"/nope\""), "{e}");

        let e = refused("missing phandle", QEMU_VIRT, &compile("/dts-v1/;\n/plugin/;\n/ { fragment@0 { target = <0x7777>; __overlay__ { x; }; }; };\n"));
        assert!(e.to_string().contains("target phandle 0x7777 is not in the base tree"), "{e}");

        // A base label with a base that has no __symbols__ (QEMU's).
        let e = refused("no symbols", QEMU_VIRT, &compile("/dts-v1/;\n/plugin/;\n&uart0 { x; };\n"));
        assert_eq!(e.problem, Problem::NoBaseSymbols);

        let base = compile(LABELLED);
        let e = refused("unknown label", &base, &compile("/dts-v1/;\n/plugin/;\n&nosuch { x; };\n"));
        assert!(e.to_string().contains("__fixups__ label nosuch: no such label"), "{e}");
    }

    /// Patches the first occurrence of `from` (a property value) in `blob`.
    fn patch(blob: &mut [u8], from: &[u8], to: &[u8]) {
        let at = blob.windows(from.len()).position(|w| w == from).expect("pattern in blob");
        blob[at..at + to.len()].copy_from_slice(to);
    }

    #[test]
    fn broken_fixup_tables_are_refused() {
        let base = compile(LABELLED);
        // A __fixups__ location pointing past its property.
        let mut o = compile("/dts-v1/;\n/plugin/;\n&{/} { n { r = <&uart0>; }; };\n");
        patch(&mut o, b"/fragment@0/__overlay__/n:r:0\0", b"/fragment@0/__overlay__/n:r:8\0");
        let e = apply(&base, &[&o]).expect_err("offset out of range");
        assert!(e.to_string().contains("offset 8 is outside"), "{e}");
        // A __fixups__ location with no offset.
        let mut o = compile("/dts-v1/;\n/plugin/;\n&{/} { n { r = <&uart0>; }; };\n");
        patch(&mut o, b"/fragment@0/__overlay__/n:r:0\0", b"/fragment@0/__overlay__/n:r:x\0");
        let e = refused("bad location", &base, &o);
        assert!(e.to_string().contains("is not PATH:PROPERTY:OFFSET"), "{e}");
        // A __local_fixups__ offset past its property.
        let mut o = compile("/dts-v1/;\n/plugin/;\n&{/} { a: n { r = <&a>; }; };\n");
        let lf = o.windows(4).rposition(|w| w == [0, 0, 0, 0]).expect("a zero offset");
        o[lf + 3] = 0x40;
        assert!(apply(QEMU_VIRT, &[&o]).is_err());
    }

    /// xorshift64*: a deterministic stream for the mutation test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn mutated_overlays_never_panic() {
        const ROUNDS: usize = 3000;
        let base = compile(LABELLED);
        let seeds = [
            compile(DEMO),
            compile("/dts-v1/;\n/plugin/;\n&uart0 { status = \"okay\"; c = <&clk 1>; };\n&{/} { a: x { r = <&a &gpio>; y { }; }; };\n"),
            compile("/dts-v1/;\n/plugin/;\n&{/soc} { l: n@1 { reg = <1>; s = <&l>; }; };\n&{/soc/n@1} { t; };\n"),
        ];
        let interesting = [0u32, 1, 2, 3, 4, 9, 0x8000, 0xffff_ffff, 0x7fff_ffff, 0xd00d_feed];
        let mut rng = Rng(0x5eed_b01d_face_cafe);
        let (mut applied, mut refused) = (0, 0);
        for round in 0..ROUNDS {
            let mut blob = seeds[round % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                let len = blob.len();
                match rng.below(5) {
                    0 => blob[rng.below(len)] ^= 1 << rng.below(8),
                    1 => blob[rng.below(len)] = rng.next() as u8,
                    2 => {
                        let at = rng.below(len / 4) * 4;
                        let v = interesting[rng.below(interesting.len())];
                        blob[at..at + 4].copy_from_slice(&v.to_be_bytes());
                    }
                    3 => {
                        // A header field (sizes and offsets are the fragile part).
                        let at = rng.below(10.min(len / 4)) * 4;
                        let v = (rng.next() as u32) % (len as u32 + 64);
                        blob[at..at + 4].copy_from_slice(&v.to_be_bytes());
                    }
                    _ => blob.truncate(rng.below(len)),
                }
                if blob.len() < 8 {
                    break;
                }
            }
            match apply(&base, &[&blob]) {
                Ok(out) => {
                    assert!(crate::dt::DeviceTree::parse(&out).is_ok(), "round {round}: the merged blob does not parse");
                    applied += 1;
                }
                Err(e) => {
                    assert_eq!(e.blob, Blob::Overlay(0), "round {round}: {e}");
                    assert!(!e.to_string().is_empty());
                    refused += 1;
                }
            }
        }
        eprintln!("{ROUNDS} mutated overlays: {applied} applied, {refused} refused");
        assert!(refused > 0 && applied > 0);
    }

    #[test]
    fn bad_bases_are_refused() {
        let e = apply(&[0u8; 16], &[]).expect_err("short");
        assert_eq!(e.blob, Blob::Base);
        let e = apply(&[0u8; 64], &[]).expect_err("no magic");
        assert!(e.to_string().starts_with("base device tree: no FDT header"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut dts = String::from("/dts-v1/;\n/plugin/;\n&{/} {\n");
        for i in 0..MAX_DEPTH + 2 {
            dts.push_str(&format!("n{i} {{\n"));
        }
        for _ in 0..MAX_DEPTH + 3 {
            dts.push_str("};\n");
        }
        let e = apply(QEMU_VIRT, &[&compile(&dts)]).expect_err("too deep");
        assert_eq!(e.problem, Problem::TooDeep);
    }

    fn chosen(dts_chosen: &str) -> Result<ArrayVec<PhysRange, MAX_OVERLAYS>, OverlayError> {
        let blob = compile(&format!("/dts-v1/;\n/ {{ #address-cells = <2>; #size-cells = <2>; chosen {{ {dts_chosen} }}; }};\n"));
        let dt = crate::dt::DeviceTree::parse(&blob).expect("valid");
        let ram = [PhysRange::from_bounds(0x4000_0000, 0xc000_0000)];
        chosen_overlays(&dt, &ram)
    }

    #[test]
    fn chosen_names_overlay_regions() {
        assert!(chosen("").expect("no property").is_empty());
        let r = chosen("bulkhead,overlays = <0x0 0x44000000 0x0 0x1000 0x0 0x44001000 0x0 0x800>;").expect("two");
        assert_eq!(&r[..], &[PhysRange::from_bounds(0x4400_0000, 0x4400_1000), PhysRange::from_bounds(0x4400_1000, 0x4400_1800)]);
        for (prop, why) in [
            ("bulkhead,overlays = <0x0 0x44000000 0x0>;", "expected (address, size) pairs"),
            ("bulkhead,overlays = <0x0 0x44000000 0x0 0x0>;", "has size 0x0"),
            ("bulkhead,overlays = <0x0 0x44000000 0x0 0x200000>;", "has size 0x200000"),
            ("bulkhead,overlays = <0x0 0x1000 0x0 0x1000>;", "is not inside RAM"),
            ("bulkhead,overlays = <0x0 0xbffff000 0x0 0x2000>;", "is not inside RAM"),
        ] {
            let e = chosen(prop).expect_err(prop);
            assert!(e.to_string().contains(why), "{prop}: {e}");
        }
        let many = "0x0 0x44000000 0x0 0x1000 ".repeat(MAX_OVERLAYS + 1);
        let e = chosen(&format!("bulkhead,overlays = <{many}>;")).expect_err("too many");
        assert!(e.to_string().contains("more than"), "{e}");
    }
}
