//! The binding read from trees with the configuration each must give,
//! stated in `tests/binding/NAME.expected` beside `NAME.dts`.
//!
//! A case is a DTS file (compiled with `dtc`), or directives in its leading
//! comments: `// base: PATH` (a blob, from the workspace root) with
//! `// overlay: PATH` (a DTS overlay merged into it with
//! `devicetree::overlay::apply`, as the kernel merges the ones `/chosen`
//! names); `// from: NAME.dts` (another case's tree) with `// replace: A
//! ==> B` (a text edit of it); and `// edit: ...` blob edits the DTS
//! language cannot write: `nop-property NODE PROP` and `nop-node NODE`
//! (tokens turned into FDT_NOP), `rename NODE PROP AS` (two properties of
//! one name). `BULKHEAD_BLESS=1` rewrites the `.expected` files from what
//! the code reads (review the diff).
//!
//! These replace the frozen copy of the old binding walk the one-pass walk
//! used to be compared with: the expected configurations were checked
//! against it, case by case, before it was removed.

use devicetree::fdt::{align4, header, FDT_BEGIN_NODE, FDT_END_NODE, FDT_NOP, FDT_PROP, FDT_PROP_HEADER, FDT_TOKEN};
use devicetree::testutil::dtc;
use partitions::binding::{parse, Config, ConfigError, Target};
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/binding")
}

fn be(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The NUL-terminated string at `at`.
fn c_str(b: &[u8], at: usize) -> &str {
    let end = b[at..].iter().position(|&c| c == 0).unwrap();
    std::str::from_utf8(&b[at..at + end]).unwrap()
}

/// A token of a valid blob: a node (path, begin, end) or a property
/// (node path, name, offset, value length).
enum Token {
    Node(String, usize, usize),
    Prop(String, String, usize, usize),
}

/// Every node and property of a valid blob, with full paths.
fn tokens(b: &[u8]) -> Vec<Token> {
    let strings = be(b, header::OFF_DT_STRINGS * 4);
    let (mut out, mut open) = (Vec::new(), Vec::<(String, usize, usize)>::new());
    let mut at = be(b, header::OFF_DT_STRUCT * 4);
    loop {
        match be(b, at) as u32 {
            FDT_BEGIN_NODE => {
                let name = c_str(b, at + FDT_TOKEN);
                let path = match open.last() {
                    None => String::new(),
                    Some((p, _, _)) => format!("{p}/{name}"),
                };
                open.push((path, at, out.len()));
                out.push(Token::Node(String::new(), 0, 0));
                at = align4(at + FDT_TOKEN + name.len() + 1);
            }
            FDT_PROP => {
                let len = be(b, at + FDT_TOKEN);
                let name = c_str(b, strings + be(b, at + 2 * FDT_TOKEN)).to_string();
                out.push(Token::Prop(open.last().unwrap().0.clone(), name, at, len));
                at = align4(at + FDT_PROP_HEADER + len);
            }
            FDT_END_NODE => {
                let (path, begin, slot) = open.pop().unwrap();
                at += FDT_TOKEN;
                out[slot] = Token::Node(if path.is_empty() { "/".into() } else { path }, begin, at);
                if open.is_empty() {
                    return out;
                }
            }
            FDT_NOP => at += FDT_TOKEN,
            t => panic!("token {t:#x} at {at}"),
        }
    }
}

fn nop(b: &mut [u8], from: usize, to: usize) {
    (from..to).step_by(4).for_each(|w| b[w..w + 4].copy_from_slice(&FDT_NOP.to_be_bytes()));
}

/// Applies one `edit:` directive to a blob.
fn edit(b: &mut [u8], how: &str) {
    let w: Vec<&str> = how.split_whitespace().collect();
    let toks = tokens(b);
    let prop = |node: &str, name: &str| {
        toks.iter()
            .find_map(|t| match t {
                Token::Prop(n, p, at, len) if n == node && p == name => Some((*at, *len)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no property {node} {name}"))
    };
    match w.as_slice() {
        ["nop-property", node, name] => {
            let (at, len) = prop(node, name);
            nop(b, at, align4(at + FDT_PROP_HEADER + len));
        }
        ["nop-node", node] => {
            let (begin, end) = toks
                .iter()
                .find_map(|t| match t {
                    Token::Node(p, begin, end) if p == node => Some((*begin, *end)),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no node {node}"));
            nop(b, begin, end);
        }
        ["rename", node, name, to] => {
            let (at, _) = prop(node, name);
            let nameoff = toks
                .iter()
                .find_map(|t| match t {
                    Token::Prop(_, p, at, _) if p == to => Some(be(b, at + 2 * FDT_TOKEN)),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no property named {to} in the blob"));
            b[at + 2 * FDT_TOKEN..at + 3 * FDT_TOKEN].copy_from_slice(&(nameoff as u32).to_be_bytes());
        }
        _ => panic!("unknown edit {how:?}"),
    }
}

/// The tree a case describes.
fn tree(name: &str) -> Vec<u8> {
    let src = std::fs::read_to_string(cases_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let directive = |key: &str| -> Vec<String> {
        src.lines().filter_map(|l| l.trim().strip_prefix("//")?.trim().strip_prefix(key)).map(|v| v.trim().to_string()).collect()
    };
    let mut blob = if let Some(base) = directive("base:").first() {
        let base = std::fs::read(workspace().join(base)).expect("base blob");
        let overlays: Vec<Vec<u8>> =
            directive("overlay:").iter().map(|o| dtc(&["-@"], &std::fs::read_to_string(workspace().join(o)).expect("overlay"))).collect();
        let refs: Vec<&[u8]> = overlays.iter().map(Vec::as_slice).collect();
        devicetree::overlay::apply(&base, &refs).expect("the overlays apply")
    } else if let Some(from) = directive("from:").first() {
        let mut dts = std::fs::read_to_string(cases_dir().join(from)).expect("from");
        for r in directive("replace:") {
            let (a, b) = r.split_once("==>").expect("replace: A ==> B");
            let (a, b) = (a.trim(), b.trim());
            assert!(dts.contains(a), "{name}: {a:?} is not in {from}");
            dts = dts.replacen(a, b, 1);
        }
        dtc(&[], &dts)
    } else {
        dtc(&[], &src)
    };
    for e in directive("edit:") {
        edit(&mut blob, &e);
    }
    blob
}

/// A configuration, or the refusal, as the `.expected` files spell it.
fn render(r: &Result<Config, ConfigError>) -> String {
    let mut o = String::new();
    let cfg = match r {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(o, "refused: node {:?}, property {:?}: {}", e.node, e.property, e.message);
            return o;
        }
    };
    for p in &cfg.partitions {
        let _ = writeln!(o, "partition {} at {}{}", p.name, p.path, p.phandle.map(|h| format!(", phandle {h:#x}")).unwrap_or_default());
        for m in &p.memory {
            let _ = writeln!(o, "  memory {m}");
        }
        if let (Some(img), Some(entry)) = (p.image, p.entry) {
            let _ = writeln!(o, "  image {img}, entered at {entry}");
        }
        let _ = writeln!(o, "  bootargs {:?}", p.bootargs);
        if let Some((count, ms)) = p.fault_limit {
            let _ = writeln!(o, "  fault-limit {count} per {ms} ms");
        }
        for (on, what) in [(p.manager, "manager"), (p.dma_p2p, "dma-p2p")] {
            if on {
                let _ = writeln!(o, "  {what}");
            }
        }
    }
    let target = |t: &Target| match t {
        Target::Cpu { mpidr } => format!("CPU MPIDR {mpidr:#x}"),
        Target::Pci { host, chain } => {
            let steps: Vec<String> = chain.iter().map(|b| format!("{:02x}:{:02x}.{}", b.bus, b.dev, b.func)).collect();
            format!("PCI under {host}: {}", steps.join(" > "))
        }
        Target::Platform => "platform device".into(),
    };
    for a in &cfg.assignments {
        let group = a.isolation_group.map(|g| format!(", isolation-group {g}")).unwrap_or_default();
        let _ = writeln!(o, "assign {} to partition {} ({}){group}", a.path, a.partition, target(&a.target));
    }
    for h in &cfg.group_hints {
        let _ = writeln!(o, "isolation-group {} on {} ({})", h.group, h.path, target(&h.target));
    }
    if o.is_empty() {
        o.push_str("nothing configured\n");
    }
    o
}

#[test]
fn every_case_reads_as_expected() {
    let bless = std::env::var_os("BULKHEAD_BLESS").is_some();
    let mut names: Vec<String> =
        std::fs::read_dir(cases_dir()).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".dts")).collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut failed = Vec::new();
    for name in &names {
        let got = render(&parse(&tree(name)));
        let path = cases_dir().join(name.replace(".dts", ".expected"));
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (BULKHEAD_BLESS=1 writes it)", path.display()));
        if got != want {
            failed.push(format!("{name}:\n--- expected\n{want}--- read\n{got}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
