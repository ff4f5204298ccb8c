//! The demo boot (boards/qemu-virt/overlays/demo.dts): milestones from
//! `_start` to partitions running, and the memory figures of that boot.

use super::{bytes, line, memory, thousands, Figure, Goal, Report, Table};
use bulkhead_tests::qemu::{Flavour, Outcome, QemuConfig};
use bulkhead_tests::Artifacts;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const DEMO: &str = include_str!("../../../boards/qemu-virt/overlays/demo.dts");
/// The demo's partitions (their bootargs get `ticks` in front).
const PARTITIONS: [&str; 2] = ["net", "storage"];
/// Goals of issue 8.
const GOAL_ABORT: f64 = 2_000.0;
const GOAL_ISOLATION: f64 = 200_000.0;
/// IPA size of the kernel's partition domains on QEMU (min(48, OAS 44)).
const DOMAIN_INPUT_BITS: u8 = 44;

/// The demo, with each partition reporting the counter at its first instruction.
pub fn setup(dir: &Path, a: &Artifacts) -> Result<QemuConfig, String> {
    let mut dts = DEMO.to_string();
    for p in PARTITIONS {
        let at = dts.find(&format!("{p}: {p} {{")).ok_or(format!("demo.dts has no partition {p}"))?;
        let key = "bulkhead,bootargs = \"";
        let start = at + dts[at..].find(key).ok_or("no bootargs")? + key.len();
        dts.insert_str(start, "ticks ");
    }
    bulkhead_tests::dtb::with_overlay(QemuConfig { timeout: Duration::from_secs(180), ..QemuConfig::default() }, &dts, dir, &a.payload)
}

/// A boot of the qemu-virt kernel with QEMU's `virt,iommu=none` and two
/// user-created SMMUs ([`Flavour::TwoSmmus`], QEMU ≥ 10.2: the machine's
/// QEMU when it is new enough, else the trixie root's), no partitions: the
/// board's early list names an SMMU this machine does not have.
pub fn setup_two_smmus(dir: &Path) -> Result<QemuConfig, String> {
    let (a, b) = Flavour::TwoSmmus.min_qemu();
    let system = bulkhead_tests::qemu::Qemu::system()?;
    let qemu = if system.at_least(a, b) { system } else { crate::qemu_root::ensure()? };
    let cfg = QemuConfig { flavour: Flavour::TwoSmmus, timeout: Duration::from_secs(60), qemu: Some(qemu), ..QemuConfig::default() };
    let dtb = dir.join("two-smmus.dtb");
    cfg.dump_dtb(&dtb)?;
    Ok(QemuConfig { dtb: Some(dtb), ..cfg })
}

/// Marks a figure of a machine this workplace cannot run (the smoke pass
/// does not count it as missing).
pub const NOT_HERE: &str = "does not run here";

/// Boot to abort for each board, on each machine it boots here: qemu-virt
/// on `virt,iommu=smmuv3` (its SMMU in the board's early list) and on
/// `virt,iommu=none` with two user-created SMMUs (the early list's SMMU
/// absent: the abort comes once the DT is read); fvp-base is not booted.
pub fn report_boards(demo: &Result<Outcome, String>, two: &Result<Outcome, String>, r: &mut Report) {
    const S: &str = "boot";
    let goal = |f: Figure| f.goal(&format!("< {} instructions", thousands(GOAL_ABORT as u64)), Goal::AtMost(GOAL_ABORT));
    let name_virt = "Boot to abort, qemu-virt on virt,iommu=smmuv3";
    match demo {
        Ok(o) if o.status == Some(0) => match milestones(o).0.get("abort") {
            Some(&v) => {
                r.figures.push(goal(Figure::new(S, name_virt, v as f64, format!("{} instructions (its SMMU is in the board's early list)", thousands(v)))))
            }
            None => r.figures.push(Figure::missing(S, name_virt, "no abort milestone")),
        },
        Ok(o) => r.figures.push(Figure::missing(S, name_virt, format!("the demo boot exited with {:?}", o.status))),
        Err(e) => r.figures.push(Figure::missing(S, name_virt, e)),
    }
    let name_two = "Boot to abort, qemu-virt on virt,iommu=none + 2 arm-smmuv3";
    match two {
        Ok(o) if o.status == Some(0) => {
            let (m, _, _) = milestones(o);
            let absent = o.log.iter().any(|l| l.message.contains("board's early SMMU at 0x9050000: not on this machine"));
            match (m.get("abort"), m.get("early-abort")) {
                (Some(&v), Some(&early)) => r.figures.push(goal(Figure::new(
                    S,
                    name_two,
                    v as f64,
                    format!(
                        "{} instructions (the early list's 0x9050000 {} at {}; both SMMUs aborted once the DT was read)",
                        thousands(v),
                        if absent { "found absent by `_start`" } else { "NOT reported absent" },
                        thousands(early)
                    ),
                ))),
                _ => r.figures.push(Figure::missing(S, name_two, "no abort milestone")),
            }
        }
        Ok(o) => r.figures.push(Figure::missing(S, name_two, format!("the boot exited with {:?}", o.status))),
        Err(e) => r.figures.push(Figure::missing(S, name_two, e)),
    }
    r.figures.push(Figure::missing(
        S,
        "Boot to abort, fvp-base",
        format!("the FVP is not freely redistributable and {NOT_HERE}; `_start` aborts its SMMU at 0x2b400000 from the board's early list"),
    ));
}

/// `milestone NAME: N ticks since entry (freq F Hz)` lines, and the entry
/// counter and frequency.
pub fn milestones(o: &Outcome) -> (BTreeMap<String, u64>, Option<u64>, Option<u64>) {
    let mut m = BTreeMap::new();
    let (mut entry, mut freq) = (None, None);
    for l in &o.log {
        let Some(rest) = l.message.strip_prefix("milestone ") else { continue };
        let Some((name, tail)) = rest.split_once(": ") else { continue };
        freq = super::after(tail, "(freq ").or(freq);
        if name == "entry" {
            entry = super::after(tail, "counter ");
        } else if let Some(n) = tail.split_whitespace().next().and_then(super::num) {
            m.insert(name.to_string(), n);
        }
    }
    (m, entry, freq)
}

/// The boot figures and the memory figures of the demo boot.
pub fn report(o: &Result<Outcome, String>, dir: &Path, elf: &[u8], r: &mut Report) {
    let names = [
        "Boot to abort (GBPA.ABORT on every SMMU)",
        "Boot to isolation (SMMUEN=1, every stream aborting)",
        "Boot to first partition instruction (demo)",
        "Boot to all partitions entered (demo)",
    ];
    let o = match o {
        Ok(o) if o.status == Some(0) => o,
        Ok(o) => {
            let why = format!("the demo boot exited with {:?}", o.status);
            for n in names {
                r.figures.push(Figure::missing("boot", n, &why));
            }
            memory_figures(None, dir, elf, r);
            return;
        }
        Err(e) => {
            for n in names {
                r.figures.push(Figure::missing("boot", n, e));
            }
            memory_figures(None, dir, elf, r);
            return;
        }
    };
    let (m, entry, freq) = milestones(o);
    let unit = match freq {
        Some(1_000_000_000) => "instructions",
        _ => "ticks",
    };
    let fig = |name: &str, v: Option<u64>, goal: Option<f64>, note: &str| match v {
        Some(v) => {
            let f = Figure::new("boot", name, v as f64, format!("{} {unit}{note}", thousands(v)));
            match goal {
                Some(g) => f.goal(&format!("< {} instructions", thousands(g as u64)), Goal::AtMost(g)),
                None => f,
            }
        }
        None => Figure::missing("boot", name, "no milestone in the kernel log"),
    };
    let abort_note = match (m.get("early-abort"), m.get("abort"), m.get("dt-abort")) {
        (Some(&early), Some(&ab), Some(&dt)) if ab == early => format!(
            " (every SMMU in the DT is in the board's early list, aborted by `_start` before relocation; \
             the kernel confirms it from the DT at {})",
            thousands(dt)
        ),
        (_, Some(_), Some(&dt)) => format!(" (an SMMU outside the board's early list: aborted once the DT was read, at {})", thousands(dt)),
        _ => String::new(),
    };
    r.figures.push(fig(names[0], m.get("abort").copied(), Some(GOAL_ABORT), &abort_note));
    r.figures.push(fig(names[1], m.get("isolation").copied(), Some(GOAL_ISOLATION), " (virt, SIDSIZE 16)"));
    // Partition entries: their counter at the first instruction.
    let entered: Vec<(String, u64)> = PARTITIONS
        .iter()
        .filter_map(|p| {
            let l = line(o, &format!("[{p}] entered at counter "))?;
            Some((p.to_string(), super::after(l, "counter ")?))
        })
        .collect();
    let rel = |t: u64| entry.map(|e| t.saturating_sub(e));
    let first = entered.iter().map(|x| x.1).min().and_then(rel);
    let all = if entered.len() == PARTITIONS.len() { entered.iter().map(|x| x.1).max().and_then(rel) } else { None };
    let started = m.get("partitions-started").map(|t| format!(" (kernel issued the last CPU_ON at {})", thousands(*t))).unwrap_or_default();
    r.figures.push(fig(names[2], first, None, ""));
    r.figures.push(fig(names[3], all, None, &started));
    let mut t = Table::new("Boot milestones (demo, counter ticks since `_start`)", &["milestone", "ticks since entry"]);
    let mut ms: Vec<(&String, &u64)> = m.iter().collect();
    ms.sort_by_key(|x| *x.1);
    for (n, v) in ms {
        t.rows.push(vec![n.clone(), thousands(*v)]);
    }
    for (p, at) in &entered {
        if let Some(v) = rel(*at) {
            t.rows.push(vec![format!("partition {p} first instruction"), thousands(v)]);
        }
    }
    r.tables.push(t);
    memory_figures(Some(o), dir, elf, r);
}

/// `memory: SMMU NAME: N bytes ... WHEN` from the log, summed over SMMUs.
fn dma_bytes(o: &Outcome, when: &str) -> Option<u64> {
    let v: Vec<u64> = o
        .log
        .iter()
        .filter(|l| l.message.starts_with("memory: SMMU ") && l.message.contains(when))
        .filter_map(|l| super::num(l.message.split(": ").nth(2)?.split_whitespace().next()?))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

fn memory_figures(o: Option<&Outcome>, dir: &Path, elf: &[u8], r: &mut Report) {
    const S: &str = "memory";
    // Kernel image.
    match memory::image_sizes(elf) {
        Ok(s) => {
            for (n, v) in [
                ("text", s.text),
                ("rodata", s.rodata),
                ("data", s.data),
                ("bss", s.bss),
                ("noinit (identity-map tables, early SMMU arena)", s.noinit),
                ("stack + guard page", s.stack),
            ] {
                r.figures.push(Figure::new(S, format!("Kernel image {n}"), v as f64, bytes(v)));
            }
        }
        Err(e) => r.figures.push(Figure::missing(S, "Kernel image sections", e)),
    }
    let Some(o) = o else {
        for n in ["Stream table", "SMMU DMA memory", "Translation tables", "Heap high-water mark"] {
            r.figures.push(Figure::missing(S, n, "the demo boot did not complete"));
        }
        return;
    };
    // Stream table: what the kernel chose, and both layouts computed with
    // the driver's code for the same SIDSIZE and the demo's streams.
    let smmu_line = line(o, ", SIDSIZE ");
    let sid_bits = smmu_line.and_then(|l| super::after(l, "SIDSIZE ")).map(|b| b as u8);
    let chosen = smmu_line.map(|l| if l.contains("2-level stream table") { "2-level" } else { "linear" });
    let attached: Vec<u32> = o
        .log
        .iter()
        .filter(|l| l.message.starts_with("partition ") && l.message.contains(") attached to its "))
        .filter_map(|l| l.message.split("(StreamIDs [").nth(1)?.split(']').next().map(str::to_string))
        .flat_map(|s| s.split(',').filter_map(super::num).map(|x| x as u32).collect::<Vec<_>>())
        .collect();
    match sid_bits.map(|b| (b, memory::stream_tables(b, &attached))) {
        Some((b, Ok(st))) => {
            r.figures.push(Figure::new(S, format!("Stream table, linear (SIDSIZE {b})"), st.linear as f64, bytes(st.linear as u64)));
            r.figures.push(Figure::new(
                S,
                format!("Stream table, 2-level (SIDSIZE {b}, demo's {} streams)", attached.len()),
                st.two_level() as f64,
                format!("{} (level 1 {}, level 2 {})", bytes(st.two_level() as u64), bytes(st.two_level_l1 as u64), bytes(st.two_level_l2 as u64)),
            ));
            let c = chosen.unwrap_or("?");
            r.figures.push(Figure::new(S, "Stream table layout the kernel chose", if c == "2-level" { 2.0 } else { 1.0 }, c));
        }
        Some((_, Err(e))) => r.figures.push(Figure::missing(S, "Stream table", e)),
        None => r.figures.push(Figure::missing(S, "Stream table", "no SIDSIZE in the kernel log")),
    }
    for (name, when) in
        [("SMMU DMA memory after bring-up (kernel)", "after bring-up"), ("SMMU DMA memory, demo partitions attached (kernel)", "with partitions attached")]
    {
        match dma_bytes(o, when) {
            Some(v) => r.figures.push(Figure::new(S, name, v as f64, bytes(v))),
            _ => r.figures.push(Figure::missing(S, name, "no memory line in the kernel log")),
        }
    }
    // Translation tables of each partition's SMMU domain.
    let merged = dir.join("merged.dtb");
    let cfg = std::fs::read(&merged).map_err(|e| e.to_string()).and_then(|b| partitions::binding::parse(&b).map_err(|e| e.to_string()));
    match cfg {
        Ok(cfg) => {
            for p in &cfg.partitions {
                let regions: Vec<(u64, u64)> = p.memory.iter().map(|m| (m.base.0, m.size)).collect();
                let total: u64 = regions.iter().map(|x| x.1).sum();
                let name = format!("Translation tables, partition {} ({} RAM)", p.name, bytes(total));
                match memory::translation_tables(&regions, DOMAIN_INPUT_BITS) {
                    Ok((t, min)) => {
                        let (b, mb) = (t as u64 * 4096, min as u64 * 4096);
                        r.figures.push(
                            Figure::new(S, name, b as f64, format!("{} ({t} tables; minimum with block mappings {min} tables)", bytes(b)))
                                .goal(&format!("≤ minimum {}", bytes(mb)), Goal::AtMost(mb as f64))
                                .with("minimum_bytes", mb as f64),
                        );
                    }
                    Err(e) => r.figures.push(Figure::missing(S, name, e)),
                }
            }
        }
        Err(e) => r.figures.push(Figure::missing(S, "Translation tables", e)),
    }
    let heap = o.log.iter().rev().find(|l| l.message.starts_with("memory: heap peak ")).and_then(|l| super::after(&l.message, "peak "));
    match heap {
        Some(h) => r.figures.push(Figure::new(S, "Heap high-water mark (demo run)", h as f64, format!("{} of 16 MiB", bytes(h)))),
        None => r.figures.push(Figure::missing(S, "Heap high-water mark", "no heap line in the kernel log")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_tests::log::LogLine;

    fn outcome(lines: &[&str]) -> Outcome {
        Outcome {
            log: lines.iter().map(|m| LogLine { micros: None, level: "DEBUG".into(), message: m.to_string() }).collect(),
            status: Some(0),
            ..Outcome::default()
        }
    }

    #[test]
    fn reads_milestones_and_memory_lines() {
        let o = outcome(&[
            "milestone entry: counter 1234 at _start (freq 1000000000 Hz)",
            "milestone abort: 150000 ticks since entry (freq 1000000000 Hz)",
            "memory: SMMU smmuv3@9050000: 12288 bytes of DMA memory after bring-up (stream table and queues)",
            "partition net: group 1 (StreamIDs [0x8]) attached to its Stage2 domain (VMID Some(2), ASID None): 2 commands, 1 CMD_SYNC",
        ]);
        let (m, entry, freq) = milestones(&o);
        assert_eq!(m.get("abort"), Some(&150000));
        assert_eq!((entry, freq), (Some(1234), Some(1_000_000_000)));
        assert_eq!(dma_bytes(&o, "after bring-up"), Some(12288));
    }
}
