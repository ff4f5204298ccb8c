//! `cargo xtask bench`: how fast bulkhead closes the DMA window, what a
//! reassignment costs, how much memory it takes, and how its policy code
//! scales — measured deterministically and reported, never pass/fail.
//!
//! Options: [`Args`] (`cargo xtask bench --help`).
//!
//! Guest figures come from QEMU under `-icount shift=0,sleep=off`: virtual
//! time advances one nanosecond per guest instruction, and with `-cpu max`
//! the generic counter runs at 1 GHz, so one counter tick is one guest
//! instruction (summed over every vCPU that runs: TCG runs them in turn).
//! The kernel reads CNTPCT_EL0 at `_start`'s first instruction and at each
//! milestone and logs `milestone NAME: N ticks since entry` afterwards;
//! partitions report the counter at their first instruction. Command and
//! CMD_SYNC counts, table walks and IOTLB results come from QEMU's own SMMU
//! trace (the per-DMA runs, which count only trace events, go without
//! `-icount`: an edu transfer waits 100 ms of guest time). Memory figures come from the kernel's log (DMA memory, heap
//! high-water mark), the ELF's sections, and the `smmu` crate's own table
//! code run on the host. Scaling runs `partitions` on the host with a
//! counting allocator.
//!
//! The report is printed as a table, and written as JSON to
//! `target/bulkhead/bench.json` (`bench-smoke/bench.json` for `--smoke`, or
//! `--json PATH`); `--markdown` prints the
//! table as Markdown (for README.md), `--from PATH` re-renders a JSON report
//! without running anything. `--smoke` is the quick pass `cargo xtask test`
//! runs: fewer sizes and repetitions, every kind of figure.

mod boot;
mod dma;
mod linux;
mod memory;
mod peer;
mod reassign;
mod scale;
mod storm;

use crate::cli::KernelOpts;
use bulkhead_tests::qemu::{self, Outcome, QemuConfig};
use bulkhead_tests::Artifacts;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The kernel's compile-time log level for benchmarks: milestone and memory
/// lines are logged at debug level (the scenarios' build, too).
pub const LOG_LEVEL: &str = "debug";

/// A goal a figure is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// At most this many.
    AtMost(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtMost(g) => v <= g,
        }
    }
}

/// One reported figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Which part of the report.
    pub section: &'static str,
    /// What it is.
    pub name: String,
    /// The number (`None`: it could not be produced; `display` says why).
    pub value: Option<f64>,
    /// The value as shown (number with unit and detail).
    pub display: String,
    /// The goal, as shown, and as a number.
    pub goal: Option<(String, Goal)>,
    /// Further numbers for the JSON.
    pub extra: Vec<(String, f64)>,
}

impl Figure {
    /// A figure with a value.
    pub fn new(section: &'static str, name: impl Into<String>, value: f64, display: impl Into<String>) -> Figure {
        Figure { section, name: name.into(), value: Some(value), display: display.into(), goal: None, extra: Vec::new() }
    }
    /// A figure that could not be produced, and why.
    pub fn missing(section: &'static str, name: impl Into<String>, why: impl std::fmt::Display) -> Figure {
        Figure { section, name: name.into(), value: None, display: format!("not measured: {why}"), goal: None, extra: Vec::new() }
    }
    /// With a goal.
    pub fn goal(mut self, shown: &str, g: Goal) -> Figure {
        self.goal = Some((shown.into(), g));
        self
    }
    /// With an extra number for the JSON.
    pub fn with(mut self, key: &str, v: f64) -> Figure {
        self.extra.push((key.into(), v));
        self
    }
    fn met(&self) -> Option<bool> {
        Some(self.goal.as_ref()?.1.met(self.value?))
    }
    fn to_json(&self) -> Value {
        let mut extra = serde_json::Map::new();
        for (k, v) in &self.extra {
            extra.insert(k.clone(), json!(v));
        }
        json!({
            "section": self.section,
            "name": self.name,
            "value": self.value,
            "display": self.display,
            "goal": self.goal.as_ref().map(|g| g.0.clone()),
            "met": self.met(),
            "extra": extra,
        })
    }
}

/// A table of details (per-DMA costs, scaling sweeps, milestones).
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Its title.
    pub title: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &str, columns: &[&str]) -> Table {
        Table { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }
}

/// What a bench run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The quick pass.
    pub smoke: bool,
    /// Round trips of each reassignment run.
    pub round_trips: u64,
    /// Reassignment runs: group size (StreamIDs) and stream-table format.
    pub reassign: Vec<(usize, reassign::Strtab)>,
    /// Per-DMA runs.
    pub dma: Vec<dma::Case>,
    /// Transfers to distinct pages in each per-DMA run.
    pub transfers: u64,
    /// StreamID sweep (at `scale_parts_fixed` partitions).
    pub scale_sids: Vec<usize>,
    /// Partition sweep (at `scale_sids_fixed` StreamIDs).
    pub scale_parts: Vec<usize>,
    /// Partitions of the StreamID sweep.
    pub scale_parts_fixed: usize,
    /// StreamIDs of the partition sweep.
    pub scale_sids_fixed: usize,
    /// Time budget of each scaling measurement.
    pub scale_budget: Duration,
}

impl Plan {
    /// The full benchmark.
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            round_trips: 8,
            reassign: [1, 2, 8].iter().flat_map(|&k| [(k, reassign::Strtab::TwoLevel), (k, reassign::Strtab::Linear)]).collect(),
            dma: dma::Case::all(),
            transfers: 8,
            scale_sids: (4..=16).map(|k| 1usize << k).collect(),
            scale_parts: (1..=8).map(|k| 1usize << k).collect(),
            scale_parts_fixed: 16,
            scale_sids_fixed: 4096,
            scale_budget: Duration::from_millis(300),
        }
    }
    /// The quick pass of `cargo xtask test`: every kind of figure, fewer sizes.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            round_trips: 2,
            reassign: vec![(1, reassign::Strtab::TwoLevel), (8, reassign::Strtab::TwoLevel), (1, reassign::Strtab::Linear)],
            dma: vec![dma::Case::smoke()],
            transfers: 2,
            scale_sids: vec![16, 64, 256, 1024],
            scale_parts: vec![2, 4, 8],
            scale_parts_fixed: 4,
            scale_sids_fixed: 256,
            scale_budget: Duration::from_millis(20),
        }
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Report {
    /// Figures, in order.
    pub figures: Vec<Figure>,
    /// Detail tables.
    pub tables: Vec<Table>,
}

/// Where a bench keeps its files (`target/bulkhead/bench`, or
/// `bench-smoke` for the quick pass).
fn bench_root(smoke: bool) -> PathBuf {
    bulkhead_tests::work_dir().join(if smoke { "bench-smoke" } else { "bench" })
}

/// A scratch directory for one QEMU run.
fn run_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

/// One QEMU run of the bench: a name, its configuration (or why it could
/// not be set up), and afterwards its outcome.
struct Run {
    name: String,
    cfg: Result<QemuConfig, String>,
    dir: PathBuf,
}

impl Run {
    /// `icount`: deterministic guest time (runs that count instructions);
    /// runs that only count trace events go faster without it.
    fn new(root: &Path, name: &str, icount: bool, setup: impl FnOnce(&Path) -> Result<QemuConfig, String>) -> Run {
        match run_dir(root, name) {
            Ok(dir) => Run {
                name: name.into(),
                cfg: setup(&dir).map(|mut c| {
                    c.icount = icount;
                    c.trace = Some(dir.join("trace.txt"));
                    c
                }),
                dir,
            },
            Err(e) => Run { name: name.into(), cfg: Err(e), dir: PathBuf::new() },
        }
    }
}

/// Runs every configured QEMU, `jobs` at a time; outcomes by run name.
fn run_all(artifacts: &Artifacts, decoders: &bulkhead_tests::Decoders, runs: &[Run], jobs: usize, log: &(dyn Fn(&str) + Sync)) -> Vec<Result<Outcome, String>> {
    let results: Vec<Mutex<Option<Result<Outcome, String>>>> = runs.iter().map(|_| Mutex::new(None)).collect();
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("queue lock");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(run) = runs.get(i) else { break };
                let r = match &run.cfg {
                    Err(e) => Err(format!("setup: {e}")),
                    Ok(cfg) => qemu::run(artifacts.kernel(cfg.image), decoders.get(cfg.image), cfg, &mut |_| {}).and_then(|o| {
                        let _ = std::fs::write(run.dir.join("kernel.log"), o.log_text());
                        if o.timed_out {
                            Err(format!("QEMU did not finish within {} s", cfg.timeout.as_secs()))
                        } else {
                            Ok(o)
                        }
                    }),
                };
                match &r {
                    Ok(o) => log(&format!(
                        "bench: {} ... {:.1} s, {} log lines, {} trace events",
                        run.name,
                        o.elapsed.as_secs_f64(),
                        o.log.len(),
                        o.trace.events.len()
                    )),
                    Err(e) => log(&format!("bench: {} ... FAILED: {e}", run.name)),
                }
                *results[i].lock().expect("result lock") = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("result lock").unwrap_or_else(|| Err("not run".into()))).collect()
}

/// The first log line containing `needle`.
pub fn line<'o>(o: &'o Outcome, needle: &str) -> Option<&'o str> {
    o.log.iter().map(|l| l.message.as_str()).find(|m| m.contains(needle))
}

/// Numbers in log lines: the harness's, which the scenarios read too.
pub use bulkhead_tests::log::{after, num};

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else if n >= 10 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{} B", thousands(n))
    }
}

fn qemu_version() -> String {
    std::process::Command::new(qemu::QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "unknown".into())
}

/// Copies of the built images in `root`, the kernel ELF's bytes and the
/// log decoders: other builds in the same target directory (another log
/// level, another change) must not swap the kernel between runs or under
/// the log decoder.
fn private_copies(root: &Path, built: &Artifacts) -> Result<(Artifacts, Vec<u8>, bulkhead_tests::Decoders), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let artifacts = Artifacts { kernel: root.join("kernel.elf"), selftest_kernel: root.join("kernel-selftest.elf"), payload: root.join("payload.bin") };
    for (from, to) in [(&built.kernel, &artifacts.kernel), (&built.selftest_kernel, &artifacts.selftest_kernel), (&built.payload, &artifacts.payload)] {
        std::fs::copy(from, to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    let elf = std::fs::read(&artifacts.kernel).map_err(|e| format!("cannot read {}: {e}", artifacts.kernel.display()))?;
    if !elf.windows(16).any(|w| w == b"milestone {=str}") {
        return Err(format!("{} has no debug-level milestone lines: build it with DEFMT_LOG={LOG_LEVEL}", built.kernel.display()));
    }
    let decoders = bulkhead_tests::Decoders::load(&artifacts)?;
    Ok((artifacts, elf, decoders))
}

/// Round trips of the peer section's reassignment run.
const PEER_ROUND_TRIPS: u64 = 2;

/// `--peer linux`: bulkhead's demo boot and a one-StreamID reassignment,
/// and Debian's Linux bare with its own SMMU driver ([`peer`]); only the
/// peer section's figures.
pub fn collect_peer(built: &Artifacts, jobs: usize, log: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
    let root = bulkhead_tests::work_dir().join("bench-peer");
    let (artifacts, _elf, decoders) = private_copies(&root, built)?;
    let artifacts = &artifacts;
    let strtab = reassign::Strtab::TwoLevel;
    let runs = vec![
        Run::new(&root, "boot-demo", true, |d| boot::setup(d, artifacts)),
        Run::new(&root, "reassign-1", true, |d| reassign::setup(d, artifacts, 1, strtab, PEER_ROUND_TRIPS)),
        Run::new(&root, "linux-peer", true, bulkhead_tests::scenarios::linux_peer::peer_bare),
        // Only trace events are counted: no icount.
        Run::new(&root, "linux-nvme", false, |d| bulkhead_tests::scenarios::linux_passthrough::bench_nvme(d, artifacts)),
    ];
    let nvme_image = runs[3].cfg.as_ref().map(|c| c.image).ok();
    let mut it = run_all(artifacts, &decoders, &runs, jobs, log).into_iter();
    let mut next = || it.next().unwrap_or_else(|| Err("not run".into()));
    let (demo, moves, linux, nvme) = (next(), next(), next(), next());
    let nvme = nvme.and_then(|o| peer::measure_ours(&o, decoders.get(nvme_image.ok_or("not set up")?)));
    let milestone = |name: &str| demo.as_ref().ok().filter(|o| o.status == Some(0)).and_then(|o| boot::milestones(o).0.get(name).copied());
    let (abort, isolation) = (milestone("abort"), milestone("isolation"));
    // The reassignment section's own counts, read back from its figures.
    let mut scratch = Report::default();
    reassign::report(&moves, 1, strtab, PEER_ROUND_TRIPS, &mut scratch, &mut Vec::new());
    let cost_of = |prefix: &str| {
        let f = scratch.figures.iter().find(|f| f.name.starts_with(prefix))?;
        let commands = f.extra.iter().find(|(k, _)| k == "commands")?.1;
        Some(reassign::Cost { commands: commands as u64, syncs: f.value? as u64 })
    };
    let ours = (cost_of("Release, group of 1 "), cost_of("Assign, group of 1 "));
    let mut report = Report::default();
    peer::report(&linux, abort, isolation, ours, &nvme, &mut report);
    Ok(report)
}

/// Runs the benchmark of `plan` on `artifacts` (built with [`LOG_LEVEL`]).
pub fn collect(plan: &Plan, built: &Artifacts, jobs: usize, log: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
    // Private copies: other builds in the same target directory (another
    // log level, another change) must not swap the kernel between runs or
    // under the log decoder.
    let root = bench_root(plan.smoke);
    let (artifacts, elf, decoders) = private_copies(&root, built)?;
    let artifacts = &artifacts;
    let mut runs = vec![Run::new(&root, "boot-demo", true, |d| boot::setup(d, artifacts))];
    for &(k, f) in &plan.reassign {
        runs.push(Run::new(&root, &format!("reassign-{k}{}", f.suffix()), true, move |d| reassign::setup(d, artifacts, k, f, plan.round_trips)));
    }
    // Walk and IOTLB counts follow the guest's order of transfers, not its
    // timing: these runs skip -icount (an edu transfer waits 100 ms of guest
    // time, which -icount turns into 100 million polling instructions).
    for c in &plan.dma {
        runs.push(Run::new(&root, &format!("dma-{}", c.slug()), false, |_| Ok(c.config(plan.transfers))));
    }
    // The same board on a machine without the SMMU its early list names.
    runs.push(Run::new(&root, "boot-two-smmus", true, boot::setup_two_smmus));
    // Availability: the same three partitions with net storming and not.
    runs.push(Run::new(&root, "storm-on", false, |d| storm::setup(d, artifacts, true)));
    runs.push(Run::new(&root, "storm-off", false, |d| storm::setup(d, artifacts, false)));
    // Debian's Linux in a partition and bare (guest time under -icount).
    runs.push(Run::new(&root, "linux-partition", true, |d| bulkhead_tests::scenarios::linux_partition::bench_partition(d, artifacts)));
    runs.push(Run::new(&root, "linux-bare", true, bulkhead_tests::scenarios::linux_partition::bench_bare));
    let outcomes = run_all(artifacts, &decoders, &runs, jobs, log);
    let mut it = outcomes.into_iter();
    let mut report = Report::default();

    let demo = it.next().unwrap_or_else(|| Err("not run".into()));
    boot::report(&demo, &runs[0].dir, &elf, &mut report);
    let mut rows = Vec::new();
    for &(k, f) in &plan.reassign {
        let o = it.next().unwrap_or_else(|| Err("not run".into()));
        reassign::report(&o, k, f, plan.round_trips, &mut report, &mut rows);
    }
    reassign::table(rows, &mut report);
    let mut dma_rows = Vec::new();
    for c in &plan.dma {
        let o = it.next().unwrap_or_else(|| Err("not run".into()));
        dma::report(c, &o, plan.transfers, &mut report, &mut dma_rows);
    }
    dma::table(dma_rows, &mut report);
    let two = it.next().unwrap_or_else(|| Err("not run".into()));
    boot::report_boards(&demo, &two, &mut report);
    let (on, off) = (it.next().unwrap_or_else(|| Err("not run".into())), it.next().unwrap_or_else(|| Err("not run".into())));
    storm::report(&on, &off, &mut report);
    let (lp, lb) = (it.next().unwrap_or_else(|| Err("not run".into())), it.next().unwrap_or_else(|| Err("not run".into())));
    linux::report(&lp, &lb, &mut report);
    if plan.dma.iter().all(|c| c.stage != dma::Stage::Nested) {
        report.figures.push(Figure::missing("per-DMA", "Nested (stage 1 inside stage 2)", "left out of the smoke pass (the full bench measures it)"));
    }
    log("bench: scaling (host)");
    scaling(plan, &mut report);
    Ok(report)
}

/// The scaling sweeps.
fn scaling(plan: &Plan, report: &mut Report) {
    let mut t = Table::new(
        "Scaling: `groups::compute` and `validate::validate` on the host (best of repeated runs; allocations of one call)",
        &[
            "StreamIDs",
            "partitions",
            "groups",
            "devices assigned",
            "grouping time",
            "grouping allocs / bytes",
            "validation time",
            "validation allocs / bytes / peak",
        ],
    );
    let fmt_t = |d: Duration| {
        let us = d.as_secs_f64() * 1e6;
        if us >= 1000.0 {
            format!("{:.2} ms", us / 1000.0)
        } else {
            format!("{us:.1} µs")
        }
    };
    let mut sweep = |name: &str, pts: Vec<(usize, usize)>, x_of: fn(&scale::Point) -> usize| {
        let mut got = Vec::new();
        for (s, p) in pts {
            match scale::point(s, p, plan.scale_budget) {
                Ok(pt) => {
                    t.rows.push(vec![
                        thousands(pt.sids as u64),
                        pt.parts.to_string(),
                        thousands(pt.groups as u64),
                        thousands(pt.assigned as u64),
                        fmt_t(pt.grouping.time),
                        format!("{} / {}", thousands(pt.grouping.allocs), bytes(pt.grouping.bytes)),
                        fmt_t(pt.validation.time),
                        format!("{} / {} / {}", thousands(pt.validation.allocs), bytes(pt.validation.bytes), bytes(pt.validation.peak)),
                    ]);
                    got.push(pt);
                }
                Err(e) => report.figures.push(Figure::missing("scaling", format!("{name}: {s} StreamIDs, {p} partitions"), e)),
            }
        }
        let series = |f: Measure| -> Vec<(f64, f64)> { got.iter().map(|p| (x_of(p) as f64, f(p))).collect() };
        type Measure = fn(&scale::Point) -> f64;
        let measures: [(&str, Measure); 4] = [
            ("grouping time", |p| p.grouping.time.as_secs_f64()),
            ("validation time", |p| p.validation.time.as_secs_f64()),
            ("validation allocations", |p| p.validation.allocs as f64),
            ("validation bytes", |p| p.validation.bytes as f64),
        ];
        for (what, f) in measures {
            let fig_name = format!("{what} per doubling of {name}");
            match scale::growth(&series(f)) {
                Some((per, exp)) => {
                    let shape = if exp < 1.3 {
                        "near-linear"
                    } else if exp < 1.7 {
                        "super-linear"
                    } else {
                        "quadratic or worse"
                    };
                    let last = got.last().map(|p| (p.sids, p.parts)).unwrap_or_default();
                    report.figures.push(
                        Figure::new(
                            "scaling",
                            fig_name,
                            per,
                            format!("×{per:.2} per doubling (exponent {exp:.2}, {shape}; up to {} StreamIDs, {} partitions)", thousands(last.0 as u64), last.1),
                        )
                        .goal("near-linear (×≈2)", Goal::AtMost(2.6))
                        .with("exponent", exp),
                    );
                }
                None => report.figures.push(Figure::missing("scaling", fig_name, "too few points")),
            }
        }
    };
    let pf = plan.scale_parts_fixed;
    sweep("StreamIDs", plan.scale_sids.iter().map(|&s| (s, pf)).collect(), |p| p.sids);
    let sf = plan.scale_sids_fixed;
    sweep("partitions", plan.scale_parts.iter().map(|&p| (sf, p)).collect(), |p| p.parts);
    report.tables.push(t);
}

/// The JSON document of a report.
pub fn to_json(plan: &Plan, r: &Report, wall: Duration) -> Value {
    json!({
        "bench": "bulkhead",
        "smoke": plan.smoke,
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "cpu": cpu_model(),
            "qemu": qemu_version(),
        },
        "method": {
            "instructions": "generic counter CNTPCT_EL0 read by the kernel (at _start's first instruction and at each milestone) and by partitions; QEMU -icount shift=0,sleep=off with -cpu max: counter 1 GHz, 1 ns of virtual time per guest instruction, so 1 tick = 1 guest instruction (all vCPUs that run, summed)",
            "resolution": "1 instruction",
            "commands": "QEMU's own trace (smmuv3_cmdq_opcode, smmuv3_cmdq_cfgi_ste*)",
            "walks": "QEMU's own trace (smmu_ptw_level, smmu_iotlb_lookup_hit/miss); these runs go without -icount (the counts follow the order of transfers, not their timing)",
            "kernel_log_level": LOG_LEVEL,
            "host_scaling": "std::time::Instant, best of repeated runs; allocations counted by a counting global allocator in the xtask process",
        },
        "wall_seconds": wall.as_secs_f64(),
        "complete": r.figures.iter().all(|f| f.value.is_some() || f.display.contains("left out of the smoke pass")),
        "figures": r.figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        "tables": r.tables.iter().map(|t| json!({"title": t.title, "columns": t.columns, "rows": t.rows})).collect::<Vec<_>>(),
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn met_cell(v: &Value) -> &'static str {
    match v.get("met") {
        Some(Value::Bool(true)) => "yes",
        Some(Value::Bool(false)) => "NO",
        _ => "",
    }
}

/// The report as text tables (`markdown`: GitHub Markdown).
pub fn render(doc: &Value, markdown: bool) -> String {
    let mut out = String::new();
    let m = &doc["machine"];
    let header = format!(
        "bulkhead benchmarks{} — {} CPUs ({}), {}; kernel log level {}; instructions = CNTPCT_EL0 ticks under -icount shift=0 (1 GHz counter: 1 tick = 1 guest instruction)",
        if doc["smoke"] == json!(true) { " (smoke pass)" } else { "" },
        s(&m["nproc"]),
        s(&m["cpu"]),
        s(&m["qemu"]),
        s(&doc["method"]["kernel_log_level"])
    );
    out.push_str(&header);
    out.push_str("\n\n");
    let empty = Vec::new();
    let figs = doc["figures"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = figs.iter().map(|f| vec![s(&f["section"]), s(&f["name"]), s(&f["display"]), s(&f["goal"]), met_cell(f).to_string()]).collect();
    out.push_str(&grid(&["section", "figure", "value", "goal", "met"], &rows, markdown));
    for t in doc["tables"].as_array().unwrap_or(&empty) {
        out.push('\n');
        out.push_str(&if markdown { format!("**{}**\n\n", s(&t["title"])) } else { format!("{}\n", s(&t["title"])) });
        let cols: Vec<String> = t["columns"].as_array().unwrap_or(&empty).iter().map(s).collect();
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        let rows: Vec<Vec<String>> = t["rows"].as_array().unwrap_or(&empty).iter().map(|r| r.as_array().unwrap_or(&empty).iter().map(s).collect()).collect();
        out.push_str(&grid(&cols, &rows, markdown));
    }
    out
}

fn grid(cols: &[&str], rows: &[Vec<String>], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {} |\n", cols.join(" | ")));
        out.push_str(&format!("|{}\n", cols.iter().map(|_| "---|").collect::<String>()));
        for r in rows {
            out.push_str(&format!("| {} |\n", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")));
        }
        return out;
    }
    let mut w: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w.get(i).copied().unwrap_or(0).saturating_sub(c.chars().count());
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(cols.to_vec()));
    out.push_str(&line(w.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>().iter().map(String::as_str).collect()));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The quick pass `cargo xtask test` runs: fewer sizes and repetitions, every kind of figure
    #[arg(long)]
    pub smoke: bool,
    /// Where to write the JSON report [default: target/bulkhead/bench.json, or
    /// target/bulkhead/bench-smoke/bench.json with --smoke]
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Print the table as Markdown (for README.md)
    #[arg(long)]
    pub markdown: bool,
    /// Re-render this JSON report without running anything
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// QEMUs run at a time
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Only the side-by-side with another system's SMMU driver on the same
    /// machine (`linux`: Debian's kernel bare, its arm-smmu-v3 driver)
    #[arg(long, value_enum, value_name = "SYSTEM")]
    pub peer: Option<PeerSystem>,
}

/// What `--peer` compares bulkhead with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerSystem {
    /// Debian's Linux bare on QEMU, its own arm-smmu-v3 driver owning the SMMU.
    Linux,
}

/// The default JSON path (the smoke pass keeps its own).
fn default_json(smoke: bool) -> PathBuf {
    if smoke {
        bench_root(true).join("bench.json")
    } else {
        bulkhead_tests::work_dir().join("bench.json")
    }
}

/// `cargo xtask bench ...`: prints the report; exits 0 whatever the goals
/// say (a figure that could not be produced shows as "not measured").
pub fn cmd(a: &Args) -> Result<ExitCode, String> {
    if let Some(from) = &a.from {
        let text = std::fs::read_to_string(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", from.display()))?;
        print!("{}", render(&doc, a.markdown));
        return Ok(ExitCode::SUCCESS);
    }
    crate::prereq::ensure_host_tools()?;
    let started = Instant::now();
    let artifacts = crate::build_all(&KernelOpts { log_level: LOG_LEVEL.into(), debug: false })?;
    let plan = if a.smoke { Plan::smoke() } else { Plan::full() };
    let report = match a.peer {
        Some(PeerSystem::Linux) => collect_peer(&artifacts, a.jobs, &|l| eprintln!("{l}"))?,
        None => collect(&plan, &artifacts, a.jobs, &|l| eprintln!("{l}"))?,
    };
    let doc = to_json(&plan, &report, started.elapsed());
    let path = match (&a.json, a.peer) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => bulkhead_tests::work_dir().join("bench-peer.json"),
        (None, None) => default_json(a.smoke),
    };
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    print!("{}", render(&doc, a.markdown));
    eprintln!("xtask: bench report written to {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// The smoke pass `cargo xtask test` runs after the scenarios: passes when
/// every figure could be produced (whatever the goals say). Returns the
/// verdict and a one-line report.
pub fn smoke(artifacts: &Artifacts, jobs: usize) -> (bool, String) {
    let started = Instant::now();
    let plan = Plan::smoke();
    let report = match collect(&plan, artifacts, jobs, &|l| println!("  {l}")) {
        Ok(r) => r,
        Err(e) => return (false, format!("bench smoke ... FAILED: {e}")),
    };
    let doc = to_json(&plan, &report, started.elapsed());
    let path = bench_root(true).join("bench.json");
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default());
    let missing: Vec<&Figure> = report
        .figures
        .iter()
        .filter(|f| f.value.is_none() && !f.display.contains("left out of the smoke pass") && !f.display.contains(boot::NOT_HERE))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    if missing.is_empty() {
        (true, format!("bench smoke ... ok ({secs:.1}s, {} figures; {})", report.figures.len(), path.display()))
    } else {
        let mut r = format!("bench smoke ... FAILED ({secs:.1}s): {} of {} figures not produced\n", missing.len(), report.figures.len());
        for f in missing {
            r.push_str(&format!("  - {}: {}\n", f.name, f.display));
        }
        (false, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_and_print() {
        assert_eq!(num("0x1f,"), Some(31));
        assert_eq!(num("0x8:"), Some(8));
        assert_eq!(num("1,234"), Some(1234));
        assert_eq!(after("release min 0x10 median 0x20", "median "), Some(0x20));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(bytes(4 << 20), "4 MiB");
        assert_eq!(bytes(18 << 10), "18 KiB");
        assert_eq!(bytes(100), "100 B");
    }

    #[test]
    fn report_renders_from_json() {
        let mut r = Report::default();
        r.figures.push(Figure::new("boot", "Boot to abort", 1500.0, "1,500 instructions").goal("< 2,000", Goal::AtMost(2000.0)));
        r.figures.push(Figure::missing("boot", "Boot to isolation", "no log line"));
        r.tables.push(Table { title: "t".into(), columns: vec!["a".into()], rows: vec![vec!["x|y".into()]] });
        let doc = to_json(&Plan::smoke(), &r, Duration::from_secs(1));
        assert_eq!(doc["complete"], json!(false));
        assert_eq!(doc["figures"][0]["met"], json!(true));
        let text: Value = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        let md = render(&text, true);
        assert!(md.contains("| boot | Boot to abort | 1,500 instructions | < 2,000 | yes |"), "{md}");
        assert!(md.contains("x\\|y"));
        let plain = render(&text, false);
        assert!(plain.contains("not measured: no log line"));
    }
}
