//! The one-pass check and the token reader against `dtoolkit`, on a real
//! QEMU `virt` DTB and a tree compiled here, and on every corruption the
//! crate's fuzz tests feed plus corruptions aimed at each part of the blob:
//! [`Layout::check`] accepts every blob `Fdt::new` accepts, refuses every
//! blob it refuses for anything but a name (`DeviceTree::parse` then gives
//! `dtoolkit`'s words), and takes the names `dtoolkit` refuses that libfdt
//! takes (longer than 31 characters, outside the specification's character
//! set) as long as they are text; on every accepted blob the reader sees
//! the nodes, properties, reservations, walk order and cells that
//! `dtoolkit`'s reader sees (`Fdt::new_unchecked` where its own check
//! refused a name: its reader panics on anything malformed).

use super::*;
use crate::addr::PhysRange;
use crate::fdt::*;
extern crate std;
use dtoolkit::error::FdtErrorKind;
use dtoolkit::fdt::FdtNode;
use dtoolkit::{Node, Property};
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use crate::testutil::{dtb, next};

/// QEMU 10 `virt` with an SMMUv3, a GICv3 ITS and an `edu` device.
const QEMU_VIRT: &[u8] = include_bytes!("../../tests/data/qemu-virt.dtb");

/// A tree with what QEMU's lacks: reservations (a (0, 0) entry ends the
/// list early), nested buses, boolean and empty properties, a unit address
/// with a comma. (NOPs come from the corruptions.)
const EXTRA: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/memreserve/ 0x0 0x0;
/ {
    #address-cells = <2>; #size-cells = <2>; model = "x";
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    soc { compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>; ranges = <0x0 0x0 0x0 0x40000000>;
        bus@1000 { #address-cells = <1>; #size-cells = <1>; ranges;
            dev@1,2 { reg = <0x1000 0x100>; status = "okay"; empty; }; }; };
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
    chosen { bootargs = ""; };
};
"#;

fn be(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Where the tokens of a valid blob are.
#[derive(Default)]
struct Tokens {
    /// `FDT_PROP`s: (offset, value length).
    props: Vec<(usize, usize)>,
    /// `FDT_BEGIN_NODE`s (the root excluded) with the offset after their
    /// `FDT_END_NODE`.
    nodes: Vec<(usize, usize)>,
    /// Node names: (offset, length).
    names: Vec<(usize, usize)>,
    /// Every token.
    all: Vec<usize>,
    /// The reservation block: (start, end).
    rsvmap: (usize, usize),
    /// The strings block: (start, size).
    strings: (usize, usize),
}

fn tokens(b: &[u8]) -> Tokens {
    let mut t = Tokens { rsvmap: (be(b, 16), be(b, 8)), strings: (be(b, 12), be(b, 32)), ..Tokens::default() };
    let mut open = Vec::new();
    let mut at = be(b, 8);
    loop {
        t.all.push(at);
        match be(b, at) as u32 {
            FDT_BEGIN_NODE => {
                let len = b[at + 4..].iter().position(|&c| c == 0).unwrap();
                t.names.push((at + 4, len));
                open.push(at);
                at = (at + 4 + len + 1 + 3) & !3;
            }
            FDT_PROP => {
                let len = be(b, at + 4);
                t.props.push((at, len));
                at = (at + 12 + len + 3) & !3;
            }
            FDT_END_NODE => {
                let begin = open.pop().unwrap();
                at += 4;
                if !open.is_empty() {
                    t.nodes.push((begin, at));
                }
            }
            FDT_NOP => at += 4,
            _ => break,
        }
    }
    t
}

fn put(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A corruption of `base` aimed at part `kind` of the blob (0..=11).
fn mutant(base: &[u8], t: &Tokens, kind: u64, seed: &mut u64) -> Vec<u8> {
    if kind >= 11 {
        // Several of the others.
        let mut b = base.to_vec();
        for _ in 0..2 + next(seed) % 3 {
            let k = next(seed) % 11;
            b = mutant(&b, t, k, seed);
        }
        return b;
    }
    let mut b = base.to_vec();
    let mut r = || next(seed);
    let pick = |r: u64, n: usize| (r % n.max(1) as u64) as usize;
    let odd: [u32; 10] = [0, 1, 2, 3, 4, 9, 0x20, 0xffff_ffff, b.len() as u32, (b.len() as u32).wrapping_sub(1)];
    let chars = [0u8, b'@', b'A', b'z', b'0', b',', b'#', b'?', b' ', b'/', 0x80, 0xff, b'-'];
    match kind {
        // Any byte.
        0 => {
            let i = pick(r(), b.len());
            b[i] = r() as u8;
        }
        // A header field: odd values, or off by a little.
        1 => {
            let f = pick(r(), 10) * 4;
            let v = if r() % 2 == 0 { odd[pick(r(), odd.len())] } else { (be(base, f) as u32).wrapping_add((r() % 9) as u32).wrapping_sub(4) };
            put(&mut b, f, v);
        }
        // The memory reservation block.
        2 => {
            let (start, end) = t.rsvmap;
            let i = start + pick(r(), end - start);
            b[i] = if r() % 2 == 0 { 0 } else { r() as u8 };
        }
        // A token replaced.
        3 => {
            let at = t.all[pick(r(), t.all.len())];
            put(&mut b, at, odd[pick(r(), odd.len())]);
        }
        // A node name character.
        4 => {
            let (at, len) = t.names[pick(r(), t.names.len())];
            let i = at + pick(r(), len + 1);
            b[i] = chars[pick(r(), chars.len())];
        }
        // A property's length.
        5 => {
            let (at, len) = t.props[pick(r(), t.props.len())];
            let v = match r() % 3 {
                0 => odd[pick(r(), odd.len())],
                _ => (len as u32).wrapping_add((r() % 9) as u32).wrapping_sub(4),
            };
            put(&mut b, at + 4, v);
        }
        // A property's name offset: another property's (duplicate names),
        // the middle of a name, or out of the block.
        6 => {
            let (at, _) = t.props[pick(r(), t.props.len())];
            let v = match r() % 3 {
                0 => be(base, t.props[pick(r(), t.props.len())].0 + 8) as u32,
                1 => (be(base, at + 8) as u32).wrapping_add((r() % 5) as u32).wrapping_sub(2),
                _ => odd[pick(r(), odd.len())].wrapping_add(t.strings.1 as u32),
            };
            put(&mut b, at + 8, v);
        }
        // A strings block character.
        7 => {
            let (start, size) = t.strings;
            let i = start + pick(r(), size);
            b[i] = chars[pick(r(), chars.len())];
        }
        // A property turned into NOPs (still a valid blob).
        8 => {
            let (at, len) = t.props[pick(r(), t.props.len())];
            for w in (at..(at + 12 + len + 3) & !3).step_by(4) {
                put(&mut b, w, FDT_NOP);
            }
        }
        // A whole node turned into NOPs (still a valid blob).
        9 => {
            let (begin, end) = t.nodes[pick(r(), t.nodes.len())];
            for w in (begin..end).step_by(4) {
                put(&mut b, w, FDT_NOP);
            }
        }
        // A NOP in place of one token, or of one node's end.
        _ => {
            let at = t.all[pick(r(), t.all.len())];
            put(&mut b, at, FDT_NOP);
        }
    }
    b
}

/// What `dtoolkit` sees, depth first: (depth, name, properties).
type View = Vec<(usize, String, Vec<(String, Vec<u8>)>)>;

fn theirs(n: &FdtNode<'_>, depth: usize, out: &mut View) {
    let props = n.properties().map(|p| (p.name().into(), p.value().to_vec())).collect();
    out.push((depth, n.name().into(), props));
    for c in n.children() {
        theirs(&c, depth + 1, out);
    }
}

fn ours(n: &DtNode<'_>, out: &mut View) {
    let props = n.properties().map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_vec())).collect();
    out.push((n.depth, n.name().into(), props));
    let (_, _, first) = n.scan();
    for c in n.children_from((0, 0, first)) {
        ours(&c, out);
    }
}

/// The old recursive walk over `dtoolkit`'s nodes: (depth, name, parent's
/// cells) of each node, and whether it got through (cells as
/// `own_addr_cells`/`own_size_cells` read them, at most 16 levels).
fn their_walk(n: &FdtNode<'_>, depth: usize, cells: (u32, u32), out: &mut Vec<(usize, String, u32, u32)>) -> bool {
    out.push((depth, n.name().into(), cells.0, cells.1));
    if depth >= MAX_DEPTH {
        return false;
    }
    let cell = |name: &str, default: u32, max: u32| match n.property(name).map(|p| p.value().to_vec()) {
        None => Some(default),
        Some(v) if v.len() == 4 => Some(u32::from_be_bytes(v[..].try_into().unwrap())).filter(|&c| c <= max),
        Some(_) => None,
    };
    let (Some(ac), Some(sc)) = (cell("#address-cells", 2, 3), cell("#size-cells", 1, 2)) else { return false };
    n.children().all(|c| their_walk(&c, depth + 1, (ac, sc), out))
}

/// Everything the reader gives agrees with `dtoolkit` on `blob`, which both
/// checks accept.
fn same_view(blob: &[u8]) {
    let fdt = Fdt::new_unchecked(blob);
    let dt = DeviceTree::parse(blob).unwrap();
    let (mut a, mut b) = (View::new(), View::new());
    theirs(&fdt.root(), 0, &mut a);
    ours(&dt.root(), &mut b);
    assert_eq!(a, b, "nodes and properties");
    // `prop` gives the first property of a name, as `dtoolkit` does.
    let mut nodes = vec![(fdt.root(), dt.root())];
    while let Some((f, d)) = nodes.pop() {
        let mut names: Vec<String> = f.properties().map(|p| p.name().into()).collect();
        names.extend(["compatible", "status", "#address-cells", "reg", "absent", "comp\0atible", ""].map(String::from));
        for name in &names {
            assert_eq!(d.prop(name).map(<[u8]>::to_vec), f.property(name).map(|p| p.value().to_vec()), "property {name:?} of {}", f.name());
        }
        let (_, _, first) = d.scan();
        nodes.extend(f.children().zip(d.children_from((0, 0, first))));
    }
    let mut walked = Vec::new();
    let ok = dt
        .walk::<DtError>(&mut |n| {
            walked.push((n.depth, n.name().into(), n.addr_cells, n.size_cells));
            Ok(())
        })
        .is_ok();
    let mut expected = Vec::new();
    let expected_ok = their_walk(&fdt.root(), 0, (2, 1), &mut expected);
    assert_eq!((walked, ok), (expected, expected_ok), "walk");
    let reservations: Vec<PhysRange> = fdt.memory_reservations().filter_map(|m| PhysRange::new(m.address(), m.size())).collect();
    assert_eq!(dt.memreserve().collect::<Vec<_>>(), reservations);
}

/// The check's verdict is `dtoolkit`'s; the reader agrees where both accept.
fn agree(blob: &[u8], what: &str) -> bool {
    agree_and_view(blob, what, true)
}

/// [`agree`], comparing what the readers see only when `view`.
fn agree_and_view(blob: &[u8], what: &str, view: bool) -> bool {
    let ok = Layout::check(blob).is_some();
    let theirs = Fdt::new(blob);
    let name_refused = matches!(&theirs, Err(e) if matches!(e.kind, FdtErrorKind::InvalidNodeName | FdtErrorKind::InvalidPropertyName));
    if !name_refused {
        assert_eq!(ok, theirs.is_ok(), "{what}: the check and Fdt::new disagree");
    }
    if ok {
        if view || name_refused {
            same_view(blob);
        }
    } else if blob.get(..4) == Some(&FDT_MAGIC.to_be_bytes()[..]) && !name_refused {
        // Refused with dtoolkit's words, as before.
        let e = DeviceTree::parse(blob).err().unwrap();
        let DtError::Malformed(t) = &e else { panic!("{what}: {e:?}") };
        let mut expected = Text::new();
        let _ = write!(expected, "{}", Fdt::new(blob).unwrap_err());
        assert_eq!(t, &expected, "{what}");
    }
    ok
}

fn bases() -> [(&'static str, Vec<u8>); 2] {
    [("qemu-virt.dtb", QEMU_VIRT.to_vec()), ("EXTRA", dtb(EXTRA))]
}

#[test]
fn the_check_accepts_exactly_what_dtoolkit_accepts() {
    for (name, base) in bases() {
        assert!(agree(&base, name));
        for len in 0..base.len() {
            assert!(!agree(&base[..len], name), "{name} cut to {len} bytes");
        }
        let t = tokens(&base);
        let mut seed = 0x5eed_0fd7_c4ec_u64;
        // (accepted, refused) per kind of corruption.
        let mut verdicts = [(0u32, 0u32); 12];
        for i in 0..6_000 {
            let kind = i % 12;
            let b = mutant(&base, &t, kind, &mut seed);
            let v = &mut verdicts[kind as usize];
            if agree(&b, &format!("{name}, corruption kind {kind}, case {i}")) {
                v.0 += 1;
            } else {
                v.1 += 1;
            }
        }
        std::println!("{name}: (accepted, refused) by kind: {verdicts:?}");
        // Each kind aimed at the structure both reaches refusals and leaves
        // blobs that pass.
        for (kind, (accepted, refused)) in verdicts.iter().enumerate() {
            match kind {
                8 | 9 => assert_eq!(*refused, 0, "{name}: NOPs in place of a property or a node are valid"),
                10 => assert!(*refused > 0, "{name}: kind {kind}"),
                1 | 3 | 4 | 6 | 7 | 11 => assert!(*accepted > 0 && *refused > 0, "{name}: kind {kind}: {accepted} accepted, {refused} refused"),
                _ => assert!(*accepted > 0, "{name}: kind {kind}"),
            }
        }
    }
}

/// The corruptions `dt::tests::corrupted_blobs_never_panic` and
/// `tests/discovery_fuzz.rs` feed, replayed with their seeds: every one
/// gets `Fdt::new`'s verdict (and, when refused, its words); what the
/// readers see is compared on one accepted blob in eight.
#[test]
fn every_fuzzed_corruption_gets_dtoolkits_verdict() {
    let mut refused = 0;
    // dt::tests: 1 to 4 random bytes of the VIRT tree.
    let blob = dtb(super::tests::VIRT);
    let corruptions = crate::testutil::byte_corruptions(&blob, super::tests::DT_FUZZ_SEED, super::tests::DT_FUZZ_CASES);
    for (i, b) in corruptions.enumerate() {
        refused += usize::from(!agree_and_view(&b, "dt fuzz", i % 8 == 0));
    }
    // tests/discovery_fuzz.rs: byte, bit and cell corruptions, mostly in
    // property values.
    let corruptions = crate::testutil::value_corruptions(QEMU_VIRT, crate::testutil::VALUE_FUZZ_SEED, crate::testutil::VALUE_FUZZ_CASES);
    for (i, b) in corruptions.enumerate() {
        refused += usize::from(!agree_and_view(&b, "discovery fuzz", i % 8 == 0));
    }
    assert!(refused > 1000, "only {refused} corruptions were refused");
}

/// Property names that repeat: every reader takes the first, as before.
#[test]
fn a_repeated_property_name_reads_the_first() {
    let base = QEMU_VIRT.to_vec();
    let t = tokens(&base);
    let nameoff = |b: &[u8], p: usize| be(b, t.props[p].0 + 8);
    // Name every property of each node after that node's first property.
    let mut b = base.clone();
    let mut by_node: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, &(at, _)) in t.props.iter().enumerate() {
        let node = t.names.iter().rev().find(|(n, _)| *n < at).map_or(0, |n| n.0);
        let first = *by_node.entry(node).or_insert(i);
        put(&mut b, at + 8, nameoff(&base, first) as u32);
    }
    assert!(agree(&b, "repeated names"));
}

/// Names longer than the specification's 31 characters, which dtc writes,
/// libfdt takes and real boards' trees carry: read, found and merged.
#[test]
fn long_names_are_taken() {
    let long_prop = "snps,dis-u2-freeclk-exists-quirk-and-then-some";
    let long_node = "a-node-name-longer-than-thirty-one-characters@1000";
    let blob = dtb(&format!("/dts-v1/;\n/ {{ #address-cells = <1>; #size-cells = <1>; {long_node} {{ reg = <0x1000 0x10>; {long_prop}; }}; }};"));
    assert!(Fdt::new(&blob).is_err(), "dtoolkit's own check refuses these names");
    assert!(agree(&blob, "long names"));
    let dt = DeviceTree::parse(&blob).unwrap();
    let n = dt.find(&format!("/{long_node}")).unwrap().unwrap();
    assert!(n.has(long_prop));
    assert_eq!(n.reg().unwrap()[0], PhysRange::new(0x1000, 0x10).unwrap());
    // Not text: refused, by name.
    let mut bad = blob.clone();
    let at = bad.windows(long_prop.len()).position(|w| w == long_prop.as_bytes()).unwrap();
    bad[at + 3] = 0xff;
    let e = DeviceTree::parse(&bad).err().expect("a name that is not UTF-8 is refused");
    assert!(format!("{e}").contains("not UTF-8"), "{e}");
}
