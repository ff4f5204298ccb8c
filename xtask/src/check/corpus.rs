//! The real-board corpus (`bulkhead_tests::corpus`: every DTB of Debian's
//! arm64 Linux image packages of the machine's release and its backports,
//! downloaded once into the project's cache through a private APT state)
//! read by the kernel's own device-tree code, the SMMUv3 boards checked
//! by the offline checker with a generated one-partition overlay, and the
//! SMMUv3 boards' blobs truncated and corrupted for the reader.
//!
//! Nobody here wrote these inputs: each test first proves it sees what it
//! counts (the corpus is as big as a Linux package's, the SMMUv3 boards
//! are found, a broken tree is refused by the same path), then expects
//! every real tree read and every SMMUv3 board accepted.

use super::{check, Request, Verdict};
use bulkhead_tests::corpus::{self, Corpus};
use devicetree::memmap;
use devicetree::{DeviceTree, Machine, PhysRange};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn the_corpus() -> &'static Corpus {
    static C: OnceLock<Result<Corpus, String>> = OnceLock::new();
    match C.get_or_init(corpus::obtain) {
        Ok(c) => c,
        Err(e) => panic!("the board-DTB corpus could not be obtained: {e}"),
    }
}

/// Whether a blob has an SMMUv3 node (the compatible string is in it:
/// every match is then read as a node by the tests).
fn names_smmu_v3(blob: &[u8]) -> bool {
    let c = devicetree::dt::SMMU_V3.as_bytes();
    blob.windows(c.len() + 1).any(|w| &w[..c.len()] == c && w[c.len()] == 0)
}

/// The kernel's reading of a loader's tree, in boot's order (the SMMUs
/// first, PSCI, the boot part of the machine, the rest, the memory map
/// when the tree has RAM), as data or the kernel's message.
fn read_as_boot(blob: &[u8]) -> Result<Machine, String> {
    let dt = DeviceTree::parse(blob).map_err(|e| format!("malformed device tree: {e}"))?;
    let smmus = dt.smmus().map_err(|e| e.to_string())?;
    dt.psci().map_err(|e| e.to_string())?;
    let _ = dt.bootargs().map_err(|e| e.to_string())?;
    let mut m = Machine::boot(&dt, smmus).map_err(|e| e.to_string())?;
    m.complete(&dt, false).map_err(|e| format!("{e:?}"))?;
    if !m.ram.is_empty() {
        memmap::boot_map(&m, None, None).map_err(|e| e.to_string())?;
    }
    Ok(m)
}

/// [`read_as_boot`] with a panic caught and reported as one.
fn read_guarded(blob: &[u8]) -> Result<Result<Machine, String>, String> {
    catch_unwind(AssertUnwindSafe(|| read_as_boot(blob)))
        .map_err(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into()))
}

/// Compiles DTS text with dtc (as the checker compiles `.dts`).
fn dtc(dts: &str, to: &Path) -> Vec<u8> {
    std::fs::write(to, dts).expect("write DTS");
    super::input::blob(to).unwrap_or_else(|e| panic!("{e}"))
}

/// The DTS text of a blob (dtc's decompiler).
fn dts_of(blob: &Path) -> String {
    let out = std::process::Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dts"]).arg(blob).output().expect("dtc runs");
    assert!(out.status.success(), "dtc cannot decompile {}", blob.display());
    String::from_utf8(out.stdout).expect("DTS is text")
}

fn scratch() -> PathBuf {
    let d = bulkhead_tests::work_dir().join("corpus-check");
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

/// Every DTB of both packages, read as the kernel reads its loader's tree:
/// no panic and no refusal (each is a tree the Linux it ships with boots
/// from, so everything in it is a construct the spec and libfdt allow).
#[test]
fn every_board_dtb_is_read_by_the_kernels_reader() {
    let c = the_corpus();
    // It sees what it counts: both packages, each of a Linux package's size.
    for p in &c.packages {
        assert!(p.dtbs.len() >= 500, "{} ({}): only {} DTBs", p.suite, p.package, p.dtbs.len());
    }
    let (mut read, mut smmu_v3, mut panics, mut refused) = (0usize, 0usize, Vec::new(), Vec::new());
    for (suite, name, path) in c.dtbs() {
        let blob = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        smmu_v3 += usize::from(names_smmu_v3(&blob));
        match read_guarded(&blob) {
            Ok(Ok(_)) => read += 1,
            Ok(Err(e)) => refused.push(format!("{suite}/{name}: {e}")),
            Err(p) => panics.push(format!("{suite}/{name}: panicked: {p}")),
        }
    }
    let total: usize = c.packages.iter().map(|p| p.dtbs.len()).sum();
    println!("corpus: {total} DTBs ({}), {read} read, {} refused, {} panics; {smmu_v3} with an arm,smmu-v3 node", packages(c), refused.len(), panics.len());
    assert!(panics.is_empty(), "{} DTBs panic the reader:\n{}", panics.len(), panics.join("\n"));
    assert!(refused.is_empty(), "{} real DTBs refused:\n{}", refused.len(), refused.join("\n"));
    assert!(smmu_v3 >= 30, "only {smmu_v3} SMMUv3 boards found: the search for them is broken");
}

fn packages(c: &Corpus) -> String {
    c.packages.iter().map(|p| format!("{}: {}, {} DTBs", p.suite, p.package, p.dtbs.len())).collect::<Vec<_>>().join("; ")
}

/// The same path refuses a broken real tree, naming node and property
/// (so the test above would have seen a refusal).
#[test]
fn the_corpus_reader_would_see_a_refusal() {
    let c = the_corpus();
    let (_, _, path) = c.dtbs().find(|(_, n, _)| n.ends_with("rk3588-rock-5b.dtb")).expect("the Rock 5B's DTB is in the corpus");
    let dts = dts_of(path);
    // The PCIe SMMU enabled and its register window cut to one page.
    let at = dts.find("iommu@fc900000 {").expect("the Rock 5B's PCIe SMMU");
    let end = at + dts[at..].find("};").expect("its end");
    let node = dts[at..end].replacen("0x00 0x200000>;", "0x00 0x1000>;", 1).replacen("status = \"disabled\";", "status = \"okay\";", 1);
    assert!(node.contains("0x1000>;") && node.contains("\"okay\""), "the Rock 5B's SMMU node is not as the test expects:\n{node}");
    let broken = format!("{}{node}{}", &dts[..at], &dts[end..]);
    let blob = dtc(&broken, &scratch().join("rock-5b-broken.dts"));
    let got = read_guarded(&blob).expect("no panic").expect_err("refused");
    assert!(got.contains("iommu@fc900000") && got.contains("reg"), "{got}");
    println!("the broken Rock 5B tree: {got}");
}

/// A DMA master's node path and StreamIDs.
type Master = (String, Vec<u32>);

/// A path below `/cpus` for each enabled CPU, in tree order.
fn cpu_paths(blob: &[u8]) -> Vec<String> {
    let dt = DeviceTree::parse(blob).expect("parsed before");
    let cpus = dt.find("/cpus").expect("readable").expect("/cpus");
    dt.children(&cpus)
        .expect("readable")
        .filter(|n| n.str_prop("device_type").ok().flatten() == Some("cpu") && n.is_enabled())
        .map(|n| format!("/cpus/{}", n.name()))
        .collect()
}

/// The path of every `arm,smmu-v3` node whose own `status` disables it.
fn disabled_smmu_paths(blob: &[u8]) -> Vec<String> {
    let dt = DeviceTree::parse(blob).expect("parsed before");
    let mut out = Vec::new();
    dt.walk_with_ancestors::<devicetree::DtError>(&mut |n, ancestors| {
        if n.is_compatible(devicetree::dt::SMMU_V3) && !n.is_enabled() && ancestors.iter().all(|a| a.is_enabled()) {
            let mut path: String = ancestors.iter().skip(1).map(|a| format!("/{}", a.name())).collect();
            path.push('/');
            path.push_str(n.name());
            out.push(path);
        }
        Ok(())
    })
    .expect("walked before");
    out
}

/// RAM to give the checker for a tree that leaves `/memory` to its
/// bootloader: what the bootloader of the SoC's boards puts there.
fn bootloader_memory(name: &str) -> Option<&'static str> {
    // RK3588: DRAM from 0; U-Boot's first bank starts after TF-A's 2 MiB
    // at the bottom and ends below the 0xf000_0000 peripheral hole.
    name.starts_with("rockchip/rk3588").then_some("0x200000,0xefe00000")
}

/// A 64 MiB partition and 1 MiB image inside RAM and clear of every
/// reservation: the first 2 MiB-aligned place from 256 MiB into a bank.
fn partition_memory(ram: &[PhysRange], reserved: &[PhysRange]) -> Option<(u64, u64)> {
    const MEM: u64 = 64 << 20;
    const IMAGE: u64 = 1 << 20;
    for bank in ram {
        let mut at = (bank.start.0 + (256 << 20)) & !((2 << 20) - 1);
        while at + MEM + IMAGE <= bank.end.0 {
            let want = PhysRange::new(at, MEM + IMAGE)?;
            match reserved.iter().filter(|r| r.overlaps(&want)).map(|r| r.end.0).max() {
                None => return Some((at, at + MEM)),
                Some(end) => at = (end + (2 << 20) - 1) & !((2 << 20) - 1),
            }
        }
    }
    None
}

/// The generated overlay for one board: one partition with one CPU (not
/// the boot CPU), its memory and image, and one DMA master of an enabled
/// SMMU where the tree has one. Returns the overlay and the master's path
/// and StreamIDs.
fn overlay_for(m: &Machine, blob: &[u8], ram: &[PhysRange]) -> Result<(String, Option<Master>), String> {
    let cpus = cpu_paths(blob);
    let cpu = cpus.get(1).ok_or("fewer than 2 CPUs")?;
    let mut reserved: Vec<PhysRange> = m.reserved.iter().chain(&m.memreserve).copied().collect();
    reserved.sort_by_key(|r| r.start.0);
    let (mem, image) = partition_memory(ram, &reserved).ok_or("no 65 MiB of RAM clear of reservations")?;
    // The first master behind enabled SMMUs a partition may own with its
    // interrupts (GIC SPIs none of the kernel's devices raises, or lines
    // to another controller, which are not forwarded).
    let kept = partitions::machine::kernel_irqs(m);
    let givable = |x: &&devicetree::discovery::PlatformMaster| {
        x.unforwardable.is_none_or(|u| !u.refused()) && !x.interrupts.iter().any(|i| kept.iter().any(|k| k.intid == i.intid))
    };
    let master = m
        .devices
        .masters
        .iter()
        .filter(|x| !x.iommus.is_empty() && x.iommus.iter().all(|i| i.smmu.is_some()))
        .find(givable)
        .map(|x| (x.path.clone(), x.iommus.iter().map(|i| i.sid).collect::<Vec<u32>>()));
    let mut dts = String::from("/dts-v1/;\n/plugin/;\n\n&{/} {\n    partitions {\n        compatible = \"bulkhead,partitions\";\n        #address-cells = <2>;\n        #size-cells = <2>;\n");
    let cells = |v: u64| format!("{:#x} {:#x}", v >> 32, v & 0xffff_ffff);
    let _ = write!(
        dts,
        "        p: p {{\n            compatible = \"bulkhead,partition\";\n            memory = <{} 0x0 0x04000000>;\n            bulkhead,image = <{} 0x0 0x00100000>;\n            bulkhead,entry = <{}>;\n            bulkhead,bootargs = \"hello\";\n        }};\n    }};\n}};\n\n",
        cells(mem),
        cells(image),
        cells(mem)
    );
    let _ = writeln!(dts, "&{{{cpu}}} {{ bulkhead,partition = <&p>; }};");
    if let Some((path, _)) = &master {
        let _ = writeln!(dts, "&{{{path}}} {{ bulkhead,partition = <&p>; }};");
    }
    Ok((dts, master))
}

/// The plan's line for one SMMU of the tree, as `plan::smmus` writes it.
fn smmu_listed(text: &str, name: &str, enabled: bool) -> bool {
    let start = format!("  SMMU      {name}");
    let how = if enabled { ": enabled, brought up with every stream aborting; " } else { ": disabled in the tree (" };
    text.lines().any(|l| l.starts_with(&start) && l.contains(how))
}

/// Every DTB with an `arm,smmu-v3` node, checked with a generated
/// one-partition overlay: accepted, with every SMMU listed (enabled or
/// disabled, and how) and the assigned master's StreamIDs in the plan.
#[test]
fn every_smmu_v3_board_is_accepted_by_the_checker() {
    let c = the_corpus();
    let dir = scratch();
    let (mut boards, mut accepted, mut with_master, mut enabled_by_overlay, mut failures) = (0usize, 0usize, 0usize, 0usize, Vec::new());
    // Masters behind enabled SMMUs, and those whose interrupts no
    // partition may own (by reason).
    let (mut isolatable, mut not_givable) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    let mut table = String::new();
    for (suite, name, path) in c.dtbs() {
        let blob = std::fs::read(path).expect("readable");
        if !names_smmu_v3(&blob) {
            continue;
        }
        boards += 1;
        let m = read_as_boot(&blob).unwrap_or_else(|e| panic!("{suite}/{name}: {e}"));
        assert!(m.smmus.len() + m.disabled_smmus.len() > 0, "{suite}/{name}: names arm,smmu-v3 but no SMMU node was read");
        let kept = partitions::machine::kernel_irqs(&m);
        for x in m.devices.masters.iter().filter(|x| !x.iommus.is_empty() && x.iommus.iter().all(|i| i.smmu.is_some())) {
            isolatable += 1;
            let why = match x.unforwardable.map(|u| u.reason) {
                Some(devicetree::discovery::Unforwardable::Controller(c)) => Some(format!("given, interrupts to {} not forwarded", c.as_str())),
                Some(other) => Some(format!("refused, {other:?}")),
                None if x.interrupts.iter().any(|i| kept.iter().any(|k| k.intid == i.intid)) => Some("refused, a line the kernel keeps".into()),
                None => None,
            };
            if let Some(w) = why {
                *not_givable.entry(w).or_default() += 1;
            }
        }
        let memory = if m.ram.is_empty() { bootloader_memory(name) } else { None };
        let ram: Vec<PhysRange> = match memory {
            Some(arg) => {
                let (a, s) = super::kernel_range(arg).expect("a range");
                vec![PhysRange::new(a, s).expect("a range")]
            }
            None => m.ram.to_vec(),
        };
        let (dts, master) = match overlay_for(&m, &blob, &ram) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{suite}/{name}: no overlay could be generated: {e}"));
                continue;
            }
        };
        let file = dir.join(format!("{suite}-{}.dts", name.replace('/', "-")));
        std::fs::write(&file, &dts).expect("write the overlay");
        let req = Request {
            dtb: path.to_path_buf(),
            overlays: vec![file.clone()],
            memory: memory.map(|a| super::kernel_range(a).expect("a range")).into_iter().collect(),
            ..Request::default()
        };
        let r = check(&req);
        let mut wrong = Vec::new();
        if r.verdict != Verdict::Accepted {
            wrong.push(format!("{:?}: {}", r.verdict, r.error.clone().unwrap_or_default()));
        }
        for s in &m.smmus {
            if !smmu_listed(&r.text, &s.name, true) {
                wrong.push(format!("SMMU {} not listed as enabled", s.name));
            }
        }
        for s in &m.disabled_smmus {
            if !smmu_listed(&r.text, &s.name, false) {
                wrong.push(format!("SMMU {} not listed as disabled", s.name));
            }
        }
        if let Some((p, sids)) = &master {
            with_master += 1;
            let want = format!("StreamIDs {}", super::plan::sids(sids));
            let in_plan = r.text.lines().any(|l| l.starts_with("    device    ") && l.contains(p.as_str()))
                && r.text.lines().any(|l| l.starts_with("    group     ") && l.ends_with(&want));
            if !in_plan {
                wrong.push(format!("master {p} with {want} not in the plan"));
            }
            // Its interrupts: each SPI forwarded, or none and why.
            let x = m.devices.masters.iter().find(|x| &x.path == p).expect("the master");
            let said = match x.unforwardable {
                Some(_) => r.text.lines().any(|l| l.starts_with("    irq       none forwarded of ") && l.contains(p.as_str())),
                None => x.interrupts.iter().all(|i| r.text.contains(&format!("    irq       SPI {} (INTID {}", i.intid - 32, i.intid))),
            };
            if !said {
                wrong.push(format!("master {p}: its interrupts are not in the plan"));
            }
        }
        let off = disabled_smmu_paths(&blob);
        if !off.is_empty() {
            // An overlay that sets status = "okay" enables them.
            let on: String = off.iter().map(|p| format!("&{{{p}}} {{ status = \"okay\"; }};\n")).collect();
            let enabling = file.with_extension("enabled.dts");
            std::fs::write(&enabling, format!("{dts}{on}")).expect("write the overlay");
            let e = check(&Request { overlays: vec![enabling.clone()], ..req.clone() });
            let names: Vec<&str> = off.iter().map(|p| p.rsplit('/').next().unwrap_or(p)).collect();
            if e.verdict != Verdict::Accepted || !names.iter().all(|n| smmu_listed(&e.text, n, true)) {
                wrong.push(format!("with {} enabled ({}): {:?} {:?}\n{}", names.join(", "), enabling.display(), e.verdict, e.error, e.text));
            } else {
                enabled_by_overlay += names.len();
            }
        }
        if m.ram.is_empty() {
            // Without --memory the checker says the bootloader fills it in.
            let bare = check(&Request { memory: Vec::new(), ..req.clone() });
            if bare.verdict != Verdict::Unusable || !bare.error.as_deref().unwrap_or("").contains("pass the board's RAM as --memory") {
                wrong.push(format!("without --memory: {:?} {:?}", bare.verdict, bare.error));
            }
        }
        let _ = writeln!(
            table,
            "  {suite}/{name}: {}; SMMUs {} enabled, {} disabled; master {}{}",
            if wrong.is_empty() { "accepted" } else { "NOT accepted" },
            m.smmus.len(),
            m.disabled_smmus.len(),
            master.as_ref().map(|(p, s)| format!("{p} (StreamIDs {})", super::plan::sids(s))).unwrap_or_else(|| "none in the tree".into()),
            memory.map(|a| format!("; --memory {a}")).unwrap_or_default()
        );
        if wrong.is_empty() {
            accepted += 1;
        } else {
            failures.push(format!("{suite}/{name} ({}):\n    {}\n{}", file.display(), wrong.join("\n    "), r.text));
        }
    }
    println!("SMMUv3 boards: {accepted} of {boards} accepted, {with_master} with a DMA master assigned, {enabled_by_overlay} disabled SMMUs enabled by an overlay\n{table}");
    println!("masters behind enabled SMMUs: {isolatable}; whose interrupts are not all forwarded: {not_givable:?}");
    assert!(boards >= 30, "only {boards} SMMUv3 boards found");
    assert!(with_master >= 2, "only {with_master} boards had a master assigned: the master search is broken");
    assert!(enabled_by_overlay >= 30, "only {enabled_by_overlay} disabled SMMUs were enabled by an overlay");
    assert!(failures.is_empty(), "{} of {boards} SMMUv3 boards not accepted:\n{}", failures.len(), failures.join("\n"));
}

/// Truncations and corruptions of every DTB of the corpus (many of each
/// SMMUv3 board's, a few of every other), through the whole reader: a
/// result or an error, never a panic.
#[test]
fn corrupted_real_blobs_never_panic_the_reader() {
    /// Truncation points per blob (evenly spread, plus the header).
    const CUTS: usize = 96;
    /// Corruptions of each kind per blob.
    const CORRUPTIONS: usize = 320;
    /// The same for every other DTB of the corpus, fewer of each.
    const OTHER_CUTS: usize = 8;
    const OTHER_CORRUPTIONS: usize = 8;
    let c = the_corpus();
    let (mut blobs, mut smmu_blobs, mut cases, mut refused, mut panics) = (0usize, 0usize, 0usize, 0usize, Vec::new());
    for (suite, name, path) in c.dtbs() {
        let blob = std::fs::read(path).expect("readable");
        blobs += 1;
        let (cuts, corruptions, head) = if names_smmu_v3(&blob) {
            smmu_blobs += 1;
            (CUTS, CORRUPTIONS, 64)
        } else {
            (OTHER_CUTS, OTHER_CORRUPTIONS, 0)
        };
        let seed = name.bytes().fold(0x2545_f491_4f6c_dd1d_u64, |s, b| s.rotate_left(5) ^ u64::from(b));
        let cut_at = (0..head).chain((1..cuts).map(|i| i * blob.len() / cuts));
        let truncated = cut_at.map(|n| blob[..n.min(blob.len())].to_vec());
        // Value corruptions need a blob of many properties (a few DTBs
        // are small); byte corruptions take any.
        let values = if devicetree::testutil::property_values(&blob).len() > 100 { corruptions } else { 0 };
        let corrupted = devicetree::testutil::byte_corruptions(&blob, seed, 2 * corruptions - values)
            .chain((values > 0).then(|| devicetree::testutil::value_corruptions(&blob, seed, values)).into_iter().flatten());
        for (i, b) in truncated.chain(corrupted).enumerate() {
            cases += 1;
            match read_guarded(&b) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => refused += 1,
                Err(p) => panics.push(format!("{suite}/{name} case {i}: {p}")),
            }
        }
    }
    println!(
        "corpus fuzz: {cases} truncated or corrupted blobs of {blobs} DTBs ({smmu_blobs} SMMUv3 boards, more of theirs), {refused} refused, {} panics",
        panics.len()
    );
    assert!(blobs >= 1000 && smmu_blobs >= 30 && refused > cases / 4, "the fuzz did not reach the reader's checks ({refused} of {cases} refused)");
    assert!(panics.is_empty(), "{} panics:\n{}", panics.len(), panics.join("\n"));
}

/// The board ports' overlays on the Debian DTBs their boards boot with:
/// accepted with every check made (placement from `--board`, the kernel
/// image at the board's link address), and what each partition is given.
#[test]
fn the_board_ports_overlays_pass_the_checker() {
    let c = the_corpus();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // (board, DTB, overlay, --memory, link address, lines the plan must have)
    type Port<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, u64, &'a [&'a str]);
    let ports: [Port; 3] = [
        (
            "rock-5b",
            "rockchip/rk3588-rock-5b.dtb",
            "boards/rock-5b/overlays/nvme-net.dts",
            bootloader_memory("rockchip/rk3588-rock-5b.dtb"),
            0x0200_0000,
            &[
                "  SMMU      iommu@fc900000 at 0xfc900000: enabled, brought up with every stream aborting; event queue interrupt wired to the GIC",
                "  SMMU      iommu@fcb00000 at 0xfcb00000: disabled in the tree",
                "  partition storage (id 1)",
                "    CPUs      0x400",
                "  partition net (id 0)",
                "    CPUs      0x600",
            ],
        ),
        (
            "imx95-evk",
            "freescale/imx95-19x19-evk.dtb",
            "boards/imx95-evk/overlays/usb-ctrl.dts",
            None,
            0x9040_0000,
            &[
                "  SMMU      iommu@490d0000 at 0x490d0000: enabled, brought up with every stream aborting; event queue interrupt wired to the GIC",
                "  group 0: SMMU iommu@490d0000, StreamIDs 0xe, devices /soc/usb@4c010010/usb@4c100000; reasons: alone",
                "    device    /soc/usb@4c010010/usb@4c100000 /soc/usb@4c010010/usb@4c100000, group 0",
                "    group     0: SMMU iommu@490d0000, StreamIDs 0xe",
            ],
        ),
        (
            "j721e-sk",
            "ti/k3-j721e-sk.dtb",
            "boards/j721e-sk/overlays/control.dts",
            None,
            0x8200_0000,
            &[
                "  SMMU      iommu@36600000 at 0x36600000: enabled, brought up with every stream aborting; event queue interrupt wired to the GIC",
                "  partition control (id 0)",
                "    CPUs      0x1",
                "    memory    [0xc0000000..0xd0000000) 256 MiB",
            ],
        ),
    ];
    let suite = &c.packages.last().expect("the backports package").suite;
    for (board, dtb, overlay, memory, link, want) in ports {
        let dtb = c.find(suite, dtb).unwrap_or_else(|| panic!("{dtb} is not in {suite}'s package"));
        let req = Request {
            dtb: dtb.to_path_buf(),
            overlays: vec![root.join(overlay)],
            board: Some(board.to_string()),
            kernel: Some((link, 0x20_0000)),
            memory: memory.map(|m| super::kernel_range(m).expect("a range")).into_iter().collect(),
            ..Request::default()
        };
        let r = check(&req);
        assert_eq!(r.verdict, Verdict::Accepted, "{board}: {:?}\n{}", r.error, r.text);
        assert!(r.text.contains("result: accepted: the kernel would start"), "{board}: a check was not made:\n{}", r.text);
        for line in want {
            assert!(r.text.lines().any(|l| l.starts_with(line)), "{board}: no line {line:?} in\n{}", r.text);
        }
        println!("{board}: {}", r.text.lines().filter(|l| l.starts_with("  partition") || l.starts_with("    ")).collect::<Vec<_>>().join(" | "));
    }
}
