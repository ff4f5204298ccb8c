//! The checker against the corpus under `tests/checker/`: every refusal
//! with the kernel's exact message, the shipped overlays accepted with
//! their plans, the diagram's structure, and malformed input refused
//! without a panic.
//!
//! `tests/checker/qemu-virt.dtb` is QEMU 10.0.2's DTB for the command line
//! `cargo xtask run` boots (see tests/checker/README.md);
//! `demo-boot.log` is `cargo xtask run`'s log of the demo and
//! `split-group-boot.log` the kernel log of the scenario
//! partitions-refuse-split-group: their PCI tables are the topologies.

use super::{check, Report, Request, Verdict};
use crate::cli::{Cli, Cmd};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The command line after `cargo xtask check`, read as `main` reads it.
fn parse_args(args: &[String]) -> Result<Request, String> {
    let words = ["cargo xtask", "check"].into_iter().map(String::from).chain(args.iter().cloned());
    match Cli::try_parse_from(words).map_err(|e| e.to_string())?.command {
        Cmd::Check(r) => Ok(r),
        other => Err(format!("parsed as {other:?}")),
    }
}

/// Placement, boot CPU and topology every corpus case gets unless it says
/// otherwise: QEMU's ELF path with the kernel image and boot CPU of
/// `demo-boot.log` (`reserved [0x40200000..0x402ee000) kernel`, `boot CPU
/// MPIDR 0x0`).
const DEFAULT_ARGS: &str = "--board qemu-virt --kernel 0x40200000,0xee000 --boot-cpu 0 --topology demo-boot.log";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus() -> PathBuf {
    root().join("tests/checker")
}

/// A request from command-line words, paths relative to `tests/checker/`.
fn request(words: &str) -> Request {
    let dir = corpus();
    let mut args: Vec<String> = Vec::new();
    let mut path_next = false;
    for w in words.split_whitespace() {
        if path_next && !Path::new(w).is_absolute() {
            args.push(dir.join(w).display().to_string());
        } else {
            args.push(w.to_string());
        }
        path_next = matches!(w, "--dtb" | "--overlay" | "--topology");
    }
    parse_args(&args).unwrap_or_else(|e| panic!("{words}: {e}"))
}

/// One corpus case: its header fields.
struct Case {
    path: PathBuf,
    what: String,
    expect: String,
    exit: u8,
    args: String,
    scenario: Option<String>,
}

fn cases() -> Vec<Case> {
    let dir = corpus().join("refuse");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dts"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable case");
            let header = text.split("*/").next().unwrap_or("");
            let field = |k: &str| header.lines().find_map(|l| l.trim_start().strip_prefix(&format!("* {k}: ")).map(str::to_string));
            let name = path.display().to_string();
            Case {
                what: field("case").unwrap_or_else(|| panic!("{name}: no `case:`")),
                expect: field("expect").unwrap_or_else(|| panic!("{name}: no `expect:`")),
                exit: field("exit").map(|e| e.parse().expect("exit: a number")).unwrap_or(1),
                args: field("args").unwrap_or_else(|| DEFAULT_ARGS.to_string()),
                scenario: field("scenario"),
                path,
            }
        })
        .collect()
}

fn run_case(c: &Case) -> Report {
    let words = format!("--dtb qemu-virt.dtb --overlay {} {}", c.path.display(), c.args);
    check(&request(&words))
}

#[test]
fn every_corpus_case_gets_the_kernels_message() {
    let cases = cases();
    assert!(cases.len() >= 58, "the corpus shrank to {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let r = run_case(c);
        let got = r.error.clone().unwrap_or_default();
        if r.verdict.code() != c.exit || got != c.expect {
            failures.push(format!(
                "{} ({}):\n    exit {} (expected {})\n    got      {got}\n    expected {}",
                c.path.file_name().unwrap_or_default().to_string_lossy(),
                c.what,
                r.verdict.code(),
                c.exit,
                c.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The strings a QEMU scenario asserts on the kernel's log
/// (`c.log(o, "...")` in its `Scenario { name: ... }` block).
fn scenario_asserts(name: &str) -> Vec<String> {
    let src = std::fs::read_to_string(root().join("tests/src/scenarios/partitions.rs")).expect("scenario source");
    let start = src.find(&format!("name: \"{name}\"")).unwrap_or_else(|| panic!("no scenario {name}"));
    let block = &src[start..];
    let end = ["\n        Scenario {", "\n    ]"].iter().filter_map(|m| block.find(m)).min().unwrap_or(block.len());
    let block = &block[..end];
    let mut out = Vec::new();
    let mut rest = block;
    while let Some(i) = rest.find("c.log(o, \"") {
        let s = &rest[i + "c.log(o, \"".len()..];
        let end = s.find("\")").expect("a closed c.log string");
        out.push(s[..end].replace("\\\"", "\""));
        rest = &s[end..];
    }
    out
}

#[test]
fn the_qemu_refusal_scenarios_and_the_checker_agree() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.scenario.is_some()).collect();
    let names: Vec<&str> = cases.iter().filter_map(|c| c.scenario.as_deref()).collect();
    assert_eq!(names, ["partitions-refuse-boot-cpu", "partitions-refuse-kernel-overlap", "partitions-refuse-split-group"]);
    for c in &cases {
        let name = c.scenario.as_deref().unwrap_or_default();
        let r = run_case(c);
        let msg = r.error.unwrap_or_default();
        // `expect:` is the line the kernel printed in the scenario's boot.
        assert_eq!(msg, c.expect, "{name}");
        let asserted = scenario_asserts(name);
        assert!(!asserted.is_empty(), "{name} asserts nothing on the log");
        for a in asserted {
            assert!(msg.contains(&a), "{name} asserts {a:?} on the kernel's log; the checker says {msg:?}");
        }
    }
}

/// The partition `name`'s block of the plan.
fn partition_block<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(&format!("  partition {name} (id ")).unwrap_or_else(|| panic!("no partition {name} in\n{text}"));
    let block = &text[start..];
    let end = ["\n  partition ", "\n  blocked", "\nassumed", "\nnot checked", "\nresult"].iter().filter_map(|m| block.find(m)).min();
    &block[..end.map(|e| e + 1).unwrap_or(block.len())]
}

fn accepted(words: &str) -> Report {
    let r = check(&request(words));
    assert_eq!(r.verdict, Verdict::Accepted, "{words}: {:?}\n{}", r.error, r.text);
    r
}

#[test]
fn the_shipped_qemu_overlays_pass_and_name_their_streamids() {
    let full = "--board qemu-virt --kernel 0x40200000,0xee000 --topology demo-boot.log --boot-cpu 0";
    let demo = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts {full}"));
    let net = partition_block(&demo.text, "net");
    assert!(net.contains("    device    00:01.0 1234:11e8 /pcie@10000000/edu@1,0, group 1\n"), "{net}");
    assert!(net.contains("    group     1: SMMU smmuv3@9050000, StreamIDs 0x8\n"), "{net}");
    assert!(net.contains("    CPUs      0x1\n") && net.contains("    memory    [0x48000000..0x4c000000) 64 MiB\n"), "{net}");
    let storage = partition_block(&demo.text, "storage");
    assert!(storage.contains("    device    00:02.0 1234:11e8 /pcie@10000000/edu@2,0, group 2\n"), "{storage}");
    assert!(storage.contains("    group     2: SMMU smmuv3@9050000, StreamIDs 0x10\n"), "{storage}");
    assert!(demo.text.contains("  blocked groups (no partition; their StreamIDs abort): 0 (SMMU smmuv3@9050000, StreamIDs 0x0)\n"), "{}", demo.text);
    assert!(demo.text.contains("  heap      [0x40400000..0x41400000)\n"), "{}", demo.text);
    assert!(!demo.text.contains("not checked:"), "{}", demo.text);
    assert!(demo
        .text
        .ends_with("result: accepted: the kernel would start 2 partition(s); every check it makes before starting them was made, on the facts above\n"));

    let hello = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/hello.dts {full}"));
    assert!(partition_block(&hello.text, "net").contains("    StreamIDs none (no device)\n"), "{}", hello.text);
    assert!(hello.text.contains("blocked groups (no partition; their StreamIDs abort): 0 (SMMU smmuv3@9050000, StreamIDs 0x0), 1 (SMMU smmuv3@9050000, StreamIDs 0x8), 2 (SMMU smmuv3@9050000, StreamIDs 0x10)"));

    let manager = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/manager.dts {full}"));
    assert!(manager.text.contains("plan: 3 partition(s)\n"));
    let mgmt = partition_block(&manager.text, "mgmt");
    assert!(mgmt.contains("(id 0)") && mgmt.contains("    policy    fault limit 64 per 1000 ms, manager\n"), "{mgmt}");
    assert!(partition_block(&manager.text, "net").contains("StreamIDs 0x8"));
    assert!(partition_block(&manager.text, "storage").contains("StreamIDs 0x10"));
}

/// The two-SMMU machine (`--flavour two-smmus`): QEMU 11.1's DTB as the
/// harness fixes it up, the demo split across both SMMUs.
#[test]
fn the_two_smmu_machine_shows_each_smmus_groups() {
    let r = accepted(
        "--dtb two-smmus.dtb --overlay ../../boards/qemu-virt/overlays/two-smmus.dts --topology two-smmus-boot.log \
         --board qemu-virt --kernel 0x40200000,0x107000 --boot-cpu 0",
    );
    for (name, at) in [("smmuv3@c000000", "0xc000000"), ("smmuv3@c020000", "0xc020000")] {
        let line = format!("  SMMU      {name} at {at}: enabled, brought up with every stream aborting; event queue interrupt wired to the GIC\n");
        assert!(r.text.contains(&line), "{}", r.text);
    }
    assert!(r.text.contains("  PCI host  /pcie@4018000000: 2 functions"), "{}", r.text);
    assert!(r.text.contains("  group 1: SMMU smmuv3@c000000, StreamIDs 0x8, devices 00:01.0 1234:11e8; reasons: alone\n"), "{}", r.text);
    assert!(r.text.contains("  group 4: SMMU smmuv3@c020000, StreamIDs 0x8100, devices 81:00.0 1234:11e8; reasons: alone\n"), "{}", r.text);
    let net = partition_block(&r.text, "net");
    assert!(net.contains("    group     1: SMMU smmuv3@c000000, StreamIDs 0x8\n"), "{net}");
    let storage = partition_block(&r.text, "storage");
    assert!(storage.contains("    device    81:00.0 1234:11e8 /pcie@4018000000/port@0,0/edu@0,0, group 4\n"), "{storage}");
    assert!(storage.contains("    group     4: SMMU smmuv3@c020000, StreamIDs 0x8100\n"), "{storage}");
    assert!(r.text.contains("3 (SMMU smmuv3@c020000, StreamIDs 0x8000)"), "{}", r.text);
    assert!(!r.text.contains("not checked:"), "{}", r.text);
}

#[test]
fn overlays_apply_in_order_and_blobs_work_as_sources() {
    let full = "--kernel 0x40200000,0xee000 --boot-cpu 0 --topology demo-boot.log";
    let r = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/hello.dts --overlay add-net-edu.dts {full}"));
    let net = partition_block(&r.text, "net");
    assert!(net.contains("    device    00:01.0 1234:11e8 /pcie@10000000/edu@1,0, group 1\n"), "{net}");
    assert!(net.contains("    bootargs  \"second overlay\"\n"), "{net}");
    // The same overlay as a `dtc -@` blob, and the board as a blob or source.
    let dir = scratch("blobs");
    let dtbo = dir.join("demo.dtbo");
    std::fs::write(&dtbo, compile(&root().join("boards/qemu-virt/overlays/demo.dts"))).expect("write");
    let from_source = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts {full}"));
    let from_blob = accepted(&format!("--dtb qemu-virt.dtb --overlay {} {full}", dtbo.display()));
    assert_eq!(from_source.text, from_blob.text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_fvp_example_passes() {
    let r = accepted(
        "--dtb ../../boards/fvp-base/fvp-base-revc.dts --overlay ../../boards/fvp-base/overlays/example.dts --board fvp-base --kernel 0x80200000,0x100000",
    );
    let control = partition_block(&r.text, "control");
    assert!(control.contains("    CPUs      0x100\n") && control.contains("    memory    [0x90000000..0x98000000) 128 MiB\n"), "{control}");
    assert!(partition_block(&r.text, "telemetry").contains("    CPUs      0x10000\n"), "{}", r.text);
    assert!(r.text.contains("  DTB       [0x82000000..0x82"), "{}", r.text);
    assert!(r.text.contains("no PCI device is assigned"), "{}", r.text);
    assert!(!r.text.contains("not checked:"), "{}", r.text);
}

#[test]
fn without_boot_facts_the_checks_that_need_them_are_not_made() {
    let r = accepted("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts");
    let not = &r.text[r.text.find("not checked:\n").expect("a not-checked list")..];
    assert!(not.contains("PCI devices /pcie@10000000/edu@2,0, /pcie@10000000/edu@1,0: the PCI topology is only known at boot"), "{not}");
    assert!(not.contains("pass --topology BOOT.LOG"), "{not}");
    assert!(not.contains("against the kernel image and its heap"), "{not}");
    assert!(not.contains("against the DTB"), "{not}");
    assert!(r.text.contains("boot CPU MPIDR 0x0: the first CPU in /cpus"), "{}", r.text);
    assert!(r.text.contains("    device    /pcie@10000000/edu@1,0 (PCI: NOT checked, no --topology)\n"), "{}", r.text);
    assert!(r.text.contains("result: accepted by every check made; 3 check(s) NOT made (above): no pass is claimed for them\n"), "{}", r.text);
    assert!(!r.text.contains("StreamIDs 0x8"), "no StreamID is known without a topology");
    // Without a placement, memory over the kernel is not refused (nor
    // claimed to be fine)…
    let dir = scratch("placement");
    let over_kernel = dir.join("over-kernel.dts");
    let hello = std::fs::read_to_string(root().join("boards/qemu-virt/overlays/hello.dts")).expect("hello");
    let src = hello.replace("0x0 0x4c000000 0x0 0x02000000", "0x0 0x40200000 0x0 0x02000000").replace("<0x0 0x4c000000>", "<0x0 0x40200000>");
    std::fs::write(&over_kernel, src).expect("write");
    let r = check(&request(&format!("--dtb qemu-virt.dtb --overlay {}", over_kernel.display())));
    assert_eq!(r.verdict, Verdict::Accepted, "{:?}", r.error);
    assert!(r.text.contains("against the kernel image and its heap"));
    let r = check(&request(&format!("--dtb qemu-virt.dtb --overlay {} --kernel 0x40200000,0xee000", over_kernel.display())));
    assert_eq!(
        r.error.as_deref(),
        Some("configuration refused: /partitions/storage: property memory: region [0x40200000..0x42200000) overlaps the kernel image")
    );
    // …and the checks that need no boot fact are still made.
    let cpu = corpus().join("refuse/cpu-unknown.dts");
    let r = check(&request(&format!("--dtb qemu-virt.dtb --overlay {}", cpu.display())));
    assert_eq!(r.error.as_deref(), Some("configuration refused: /cpus/cpu@3: property bulkhead,partition: no CPU with MPIDR 0x3 in /cpus"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_diagram_has_partitions_groups_devices_and_streamids() {
    let out = std::env::temp_dir().join(format!("bulkhead-check-{}.dot", std::process::id()));
    let words = format!(
        "--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts --topology demo-boot.log --kernel 0x40200000,0xee000 --dot {}",
        out.display()
    );
    let dot = accepted(&words).dot.expect("a diagram");
    assert!(dot.starts_with("digraph bulkhead {\n") && dot.ends_with("}\n"));
    assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "balanced braces");
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix('"') else { continue };
        let (id, rest) = rest.split_once('"').expect("a quoted id");
        match rest.trim_start().strip_prefix("-> \"") {
            Some(to) => edges.push((id.to_string(), to.split_once('"').expect("quoted target").0.to_string())),
            None => {
                assert!(rest.trim_start().starts_with('[') && line.ends_with("];"), "{line}");
                nodes.push(id.to_string());
            }
        }
    }
    let mut unique = nodes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), nodes.len(), "a node is declared twice");
    for (a, b) in &edges {
        assert!(nodes.contains(a) && nodes.contains(b), "edge {a} -> {b} names an undeclared node");
    }
    let has = |a: &str, b: &str| edges.iter().any(|(x, y)| x == a && y == b);
    assert!(has("partition:net", "group:1") && has("partition:storage", "group:2") && has("blocked", "group:0"));
    assert!(has("group:1", "device:0:1") && has("group:2", "device:0:2") && has("group:0", "device:0:0"));
    assert!(has("group:1", "sid:0:0x8") && has("group:2", "sid:0:0x10") && has("group:0", "sid:0:0x0"));
    assert!(dot.contains("subgraph \"cluster_smmu0\" {\n    label=\"SMMU smmuv3@9050000\";"), "StreamIDs boxed per SMMU");
    assert!(dot.contains("label=\"00:01.0 1234:11e8\\n/pcie@10000000/edu@1,0\""), "devices named by BDF and node");
    assert_eq!(edges.iter().filter(|(a, _)| a.starts_with("partition:")).count(), 2);
}

#[test]
fn the_diagram_renders_as_svg_or_says_why_not() {
    let dir = scratch("svg");
    let path = dir.join("demo.dot");
    let words = format!(
        "--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts --topology demo-boot.log --kernel 0x40200000,0xee000 --dot {}",
        path.display()
    );
    std::fs::write(&path, accepted(&words).dot.expect("a diagram")).expect("write the diagram");
    // `cargo xtask test` installs Graphviz before the host tests where it can.
    let graphviz = Command::new("dot").arg("-V").output().is_ok_and(|o| o.status.success());
    match super::render_svg(&path) {
        Ok(svg) => {
            assert_eq!(svg, dir.join("demo.svg"));
            let text = std::fs::read_to_string(&svg).expect("the SVG");
            assert!(text.contains("<svg") && text.contains("partition net") && text.contains("StreamID 0x10"), "{text}");
        }
        Err(e) => assert!(!graphviz && e.contains("cannot run Graphviz `dot` (apt-get install graphviz)"), "{e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulkhead-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn compile(dts: &Path) -> Vec<u8> {
    super::input::blob(dts).expect("compiles")
}

#[test]
fn malformed_input_is_refused_with_status_2() {
    let dir = scratch("malformed");
    let base = std::fs::read(corpus().join("qemu-virt.dtb")).expect("base");
    let demo = root().join("boards/qemu-virt/overlays/demo.dts");
    let run = |base: &[u8], overlay: &Path| {
        let b = dir.join("base.dtb");
        std::fs::write(&b, base).expect("write");
        check(&Request { dtb: b, overlays: vec![overlay.to_path_buf()], ..Request::default() })
    };
    let r = run(&base[..100], &demo);
    assert_eq!(r.verdict, Verdict::Unusable);
    let msg = r.error.unwrap_or_default();
    assert!(msg.starts_with("cannot boot: device tree ") && msg.contains("base.dtb"), "{msg}");
    let mut bad = base.clone();
    bad[0] = 0;
    let r = run(&bad, &demo);
    let want = format!("cannot boot: device tree {}: no FDT header: magic is 0x000dfeed, expected 0xd00dfeed", dir.join("base.dtb").display());
    assert_eq!(r.error, Some(want));
    // With a placement, the kernel's own words and address.
    let b = dir.join("bad.dtb");
    std::fs::write(&b, &bad).expect("write");
    let r = check(&Request { dtb: b, overlays: vec![demo.clone()], board: Some("qemu-virt".into()), ..Request::default() });
    let want = "cannot boot: device tree at 0x40000000: no device tree at 0x40000000: magic is 0x000dfeed, expected 0xd00dfeed";
    assert_eq!(r.error.as_deref(), Some(want));

    let garbage = dir.join("garbage.dtbo");
    std::fs::write(&garbage, b"not a device tree at all, just text that is long enough to have a header").expect("write");
    let r = run(&base, &garbage);
    assert_eq!((r.verdict, r.error.as_deref()), (Verdict::Unusable, Some("cannot boot: overlays[0]: no FDT header: magic is 0x6e6f7420, expected 0xd00dfeed")));

    let syntax = dir.join("syntax.dts");
    std::fs::write(&syntax, "/dts-v1/;\n/plugin/;\n&{/} { partitions { ").expect("write");
    let r = run(&base, &syntax);
    assert_eq!(r.verdict, Verdict::Unusable);
    assert!(r.error.as_deref().unwrap_or_default().starts_with("dtc cannot compile"), "{:?}", r.error);

    let r = run(&base, &dir.join("missing.dts"));
    assert_eq!(r.verdict, Verdict::Unusable);
    let r = check(&Request { dtb: dir.join("missing.dtb"), overlays: vec![demo], ..Request::default() });
    assert!(r.error.as_deref().unwrap_or_default().starts_with("cannot read "), "{:?}", r.error);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupted_blobs_never_panic() {
    let dir = scratch("fuzz");
    let base = std::fs::read(corpus().join("qemu-virt.dtb")).expect("base");
    let overlay = compile(&root().join("boards/qemu-virt/overlays/demo.dts"));
    let (b, o) = (dir.join("base.dtb"), dir.join("overlay.dtbo"));
    let topology = corpus().join("demo-boot.log");
    // A fixed xorshift: the same corruptions every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut seen = [0usize; 3];
    for i in 0..300 {
        let (mut bb, mut ob) = (base.clone(), overlay.clone());
        let target = if i % 2 == 0 { &mut bb } else { &mut ob };
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % target.len();
            target[at] ^= 1 << (next() % 8);
        }
        if i % 7 == 0 {
            let keep = (next() as usize) % target.len();
            target.truncate(keep);
        }
        std::fs::write(&b, &bb).expect("write");
        std::fs::write(&o, &ob).expect("write");
        let r = check(&Request { dtb: b.clone(), overlays: vec![o.clone()], topology: Some(topology.clone()), ..Request::default() });
        seen[r.verdict.code() as usize] += 1;
        if r.verdict != Verdict::Accepted {
            assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()), "a refusal without a message");
        }
    }
    assert!(seen[2] > 0, "no corruption was caught: {seen:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_topology_of_another_machine_is_refused() {
    let dir = scratch("topology");
    let demo = root().join("boards/qemu-virt/overlays/demo.dts");
    let moved = std::fs::read_to_string(corpus().join("demo-boot.log")).expect("log").replace("ECAM [0x4010000000", "ECAM [0x3010000000");
    let log = dir.join("moved.log");
    std::fs::write(&log, moved).expect("write");
    let r = check(&Request { dtb: corpus().join("qemu-virt.dtb"), overlays: vec![demo.clone()], topology: Some(log), ..Request::default() });
    assert_eq!(r.verdict, Verdict::Unusable);
    assert!(r.error.as_deref().unwrap_or_default().contains("not a boot of this machine"), "{:?}", r.error);
    let none = dir.join("none.log");
    std::fs::write(&none, "[    0.000000] INFO  bulkhead\n").expect("write");
    let r = check(&Request { dtb: corpus().join("qemu-virt.dtb"), overlays: vec![demo], topology: Some(none), ..Request::default() });
    assert!(r.error.as_deref().unwrap_or_default().contains("no PCI table of host bridge /pcie@10000000"), "{:?}", r.error);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_command_line() {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(parse_args(&words("--overlay a.dts")).unwrap_err().contains("--dtb"));
    assert!(parse_args(&words("--dtb a.dtb")).unwrap_err().contains("--overlay"));
    assert!(parse_args(&words("--dtb a.dtb --overlay b.dts --board rpi")).unwrap_err().contains("unknown board rpi"));
    assert!(parse_args(&words("--dtb a.dtb --overlay b.dts --kernel 0x40200000")).is_err());
    assert!(parse_args(&words("--dtb a.dtb --overlay b.dts --frobnicate")).unwrap_err().contains("unexpected argument '--frobnicate'"));
    let r = parse_args(&words("--dtb a.dtb --overlay b.dts --overlay c.dtbo --boot-cpu 0x100 --dtb-at 0x82000000 --kernel 0x80200000,0x100000")).unwrap();
    assert_eq!((r.overlays.len(), r.boot_cpu, r.dtb_at, r.kernel), (2, Some(0x100), Some((0x8200_0000, None)), Some((0x8020_0000, 0x10_0000))));
}

/// Each partition's interrupt lines are in its plan: the demo with its
/// functions raising INTA (QEMU virt maps slot 1 INTA to SPI 4, slot 2 to
/// SPI 5), read back from a boot log that says so.
#[test]
fn the_plan_lists_each_partitions_interrupt_lines() {
    let log = std::fs::read_to_string(corpus().join("demo-boot.log")).expect("the demo's boot log");
    let with_pins = log.replace("1234:11e8 class 00ff00 PCI device\n", "1234:11e8 class 00ff00 PCI device, INTA\n");
    assert_ne!(with_pins, log, "the edit applied");
    let topology = scratch("intx").join("demo-intx-boot.log");
    std::fs::write(&topology, with_pins).expect("write the log");
    let full = format!("--board qemu-virt --kernel 0x40200000,0xee000 --topology {} --boot-cpu 0", topology.display());
    let demo = accepted(&format!("--dtb qemu-virt.dtb --overlay ../../boards/qemu-virt/overlays/demo.dts {full}"));
    let net = partition_block(&demo.text, "net");
    assert!(net.contains("    irq       SPI 4 (INTID 36, level) of 00:01.0 1234:11e8: forwarded to it only\n"), "{net}");
    let storage = partition_block(&demo.text, "storage");
    assert!(storage.contains("    irq       SPI 5 (INTID 37, level) of 00:02.0 1234:11e8: forwarded to it only\n"), "{storage}");
    assert!(!demo.text.contains("    console   "), "the virtual UART stays on SPI 1:\n{}", demo.text);
}
