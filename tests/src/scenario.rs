//! Scenarios: a QEMU configuration plus assertions on the kernel log and
//! QEMU's trace, run in parallel, with a closing `N passed, N failed` line.

use crate::qemu::{self, Outcome, QemuConfig};
use crate::trace::{kind, Kind, TraceEvent};
use crate::Artifacts;
use std::path::PathBuf;
use std::sync::Mutex;

/// Exit statuses of the kernel (mirror of `platform::ExitCode`).
pub mod exit {
    /// Ran to completion.
    pub const SUCCESS: i32 = 0;
    /// Entered at an EL other than EL2.
    pub const WRONG_EL: i32 = 2;
    /// Device tree missing or malformed.
    pub const BAD_DEVICE_TREE: i32 = 3;
    /// Unexpected exception at EL2.
    pub const EXCEPTION: i32 = 4;
    /// The partition configuration was refused.
    pub const CONFIG_REFUSED: i32 = 7;
    /// A partition failed.
    pub const PARTITION_FAILED: i32 = 8;
}

/// Where a scenario keeps its files, and what it boots.
pub struct Ctx<'a> {
    /// Scratch directory of this scenario.
    pub dir: PathBuf,
    /// Kernel and payload.
    pub artifacts: &'a Artifacts,
}

impl Ctx<'_> {
    /// A path in the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// `cfg` booting with the overlay source `dts` applied to QEMU's DTB and
    /// the payload loaded at every partition's image address.
    pub fn with_overlay(&self, cfg: QemuConfig, dts: &str) -> Result<QemuConfig, String> {
        crate::dtb::with_overlay(cfg, dts, &self.dir, &self.artifacts.payload)
    }
}

/// One QEMU scenario.
pub struct Scenario {
    /// Unique name (used for filtering and scratch files).
    pub name: &'static str,
    /// Builds the QEMU configuration (may dump and edit DTBs).
    pub setup: fn(&Ctx) -> Result<QemuConfig, String>,
    /// Asserts on the outcome.
    pub check: fn(&Outcome, &mut Checks),
}

/// SMMU_GBPA's offset and its UPDATE and ABORT bits (SMMUv3 spec 6.3.14).
pub const GBPA: u64 = 0x44;
pub const GBPA_ABORT: u64 = 1 << 20;
pub const GBPA_UPDATE: u64 = 1 << 31;

/// Collected assertion failures of one scenario.
#[derive(Default)]
pub struct Checks {
    /// What failed.
    pub failures: Vec<String>,
}

impl Checks {
    /// Records a failure unless `ok`.
    pub fn that(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
    /// The kernel exited with `code` (not a timeout).
    pub fn exit(&mut self, o: &Outcome, code: i32) {
        if o.timed_out {
            self.failures.push(format!("timed out (expected exit status {code})"));
        } else {
            self.that(o.status == Some(code), format!("exit status {:?}, expected {code}", o.status));
        }
    }
    /// Some log line contains `needle`; returns that line.
    pub fn log<'o>(&mut self, o: &'o Outcome, needle: &str) -> Option<&'o str> {
        let hit = o.log.iter().find(|l| l.message.contains(needle)).map(|l| l.message.as_str());
        self.that(hit.is_some(), format!("log has no line containing {needle:?}"));
        hit
    }
    /// No log line contains `needle`.
    pub fn no_log(&mut self, o: &Outcome, needle: &str) {
        if let Some(l) = o.log.iter().find(|l| l.message.contains(needle)) {
            self.failures.push(format!("log unexpectedly has {needle:?}: {}", l.message));
        }
    }
    /// The machine the run booted (SMMUs and host bridges from its DTB);
    /// an empty one, and a failure, when the DTB cannot be read.
    pub fn machine(&mut self, o: &Outcome) -> crate::machine::Machine {
        crate::machine::Machine::of(o).unwrap_or_else(|e| {
            self.failures.push(format!("cannot read the run's DTB: {e}"));
            crate::machine::Machine::default()
        })
    }

    /// Every log frame decoded.
    pub fn clean_log(&mut self, o: &Outcome) {
        self.that(o.malformed_frames == 0, format!("{} log frames did not decode", o.malformed_frames));
    }
    /// QEMU's trace has no event of `kind` that is `unwanted` (`what` says
    /// which, for the message). Zero proves something only if the tracer
    /// would have recorded such an event: the check fails unless this
    /// QEMU has the trace point and, for [`Witness::InRun`], events of the
    /// same kind appear in the same trace where they must.
    pub fn none_of(&mut self, o: &Outcome, kind: Kind, what: &str, unwanted: impl Fn(&TraceEvent) -> bool, witness: Witness<'_>) {
        if let Err(e) = o.trace.traced_as(kind) {
            self.failures.push(format!("cannot show that QEMU recorded no {what}: {e}"));
            return;
        }
        if let Witness::InRun(place, seen) = witness {
            if !o.trace.of(kind).any(seen) {
                self.failures.push(format!("cannot show that QEMU recorded no {what}: the trace has no {} {place} either, where it must", kind.what));
                return;
            }
        }
        let bad: Vec<&TraceEvent> = o.trace.of(kind).filter(|e| unwanted(e)).collect();
        if let Some(first) = bad.first() {
            self.failures.push(format!("QEMU's trace has {} {what} ({}: {} {})", bad.len(), kind.what, bad.len(), first.args));
        }
    }

    /// QEMU translated no DMA in bypass and saw none reach a disabled
    /// SMMU (no correct run shows either: the witness is this QEMU's list
    /// of trace points, and the translations the run did make).
    pub fn no_bypass(&mut self, o: &Outcome) {
        self.none_of(o, kind::TRANSLATE_BYPASS, "DMA translated in bypass", |_| true, Witness::Catalogue);
        self.none_of(o, kind::TRANSLATE_DISABLE, "DMA that reached a disabled SMMU", |_| true, Witness::Catalogue);
    }

    /// QEMU's trace: the first SMMU register write is GBPA with
    /// ABORT|UPDATE, and no DMA was translated in bypass or reached a
    /// disabled SMMU.
    pub fn gbpa_abort_first(&mut self, o: &Outcome) {
        match o.trace.mmio_writes().first() {
            Some(&(GBPA, v)) => self.that(v & GBPA_ABORT != 0 && v & GBPA_UPDATE != 0, format!("first SMMU write is GBPA={v:#x}, expected ABORT|UPDATE")),
            Some(&(off, v)) => self.that(false, format!("first SMMU write is {off:#x}={v:#x}, not GBPA")),
            None => self.that(false, "QEMU's trace shows no SMMU register write (GBPA.ABORT never set)"),
        }
        self.no_bypass(o);
    }
}

/// What shows that a "no event of kind X" check could have failed.
pub enum Witness<'a> {
    /// Events of the same kind matching the predicate appear in the same
    /// trace (`&str` says where, for the message): the positive control.
    InRun(&'a str, &'a dyn Fn(&TraceEvent) -> bool),
    /// Only this QEMU's list of trace points: for events no correct run
    /// may show at all (a bypass, a translation with nothing assigned).
    Catalogue,
}

/// Scenarios whose name has this word boot Debian's Linux
/// ([`crate::linux::guest`]): the runner's caller fetches it before they
/// start.
pub const LINUX_WORD: &str = "linux";

/// Scenarios named so need [`crate::qemu::Flavour::TwoSmmus`], so QEMU ≥ 10.2.
pub const TWO_SMMUS_PREFIX: &str = "two-smmus-";

impl Scenario {
    /// Whether it boots Debian's Linux (its name has the word [`LINUX_WORD`]).
    pub fn boots_linux(&self) -> bool {
        self.name.split('-').any(|w| w == LINUX_WORD)
    }

    /// The oldest QEMU (major, minor) this scenario runs on.
    pub fn min_qemu(&self) -> (u32, u32) {
        if self.name.starts_with(TWO_SMMUS_PREFIX) {
            crate::qemu::Flavour::TwoSmmus.min_qemu()
        } else {
            (10, 0)
        }
    }
}

/// What one pass of the scenarios came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassResult {
    /// Scenarios whose checks all held.
    pub passed: usize,
    /// Scenarios with a failed check or setup.
    pub failed: usize,
    /// Scenarios this QEMU is too old for.
    pub skipped: usize,
}

/// Runs `scenarios` (those whose name contains `filter`) on `qemu` with
/// `jobs` QEMUs at a time, each in `target/bulkhead/<dir>/<name>/`; prints
/// each result and the pass's closing line. Scenarios that need a newer
/// QEMU are skipped (and counted).
pub fn run_all(
    artifacts: &Artifacts,
    scenarios: &[Scenario],
    filter: Option<&str>,
    jobs: usize,
    qemu: &crate::qemu::Qemu,
    dir: &str,
) -> Result<PassResult, String> {
    let decoders = crate::Decoders::load(artifacts)?;
    let wanted: Vec<&Scenario> = scenarios.iter().filter(|s| filter.is_none_or(|f| s.name.contains(f))).collect();
    let (chosen, too_new): (Vec<&Scenario>, Vec<&Scenario>) = wanted.into_iter().partition(|s| {
        let (a, b) = s.min_qemu();
        qemu.at_least(a, b)
    });
    println!("running {} QEMU scenarios on {}, {} at a time", chosen.len(), qemu.label(), jobs.max(1));
    for s in &too_new {
        let (a, b) = s.min_qemu();
        println!("scenario {} ... skipped (needs QEMU {a}.{b} or later)", s.name);
    }
    crate::qemu::use_qemu(Some(qemu.clone()));
    let next = Mutex::new(chosen.iter());
    let results = Mutex::new((0usize, 0usize));
    let print = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let Some(sc) = next.lock().expect("queue lock").next().copied() else { break };
                let (ok, report) = run_one(artifacts, &decoders, sc, dir);
                let _g = print.lock().expect("print lock");
                println!("{report}");
                let mut r = results.lock().expect("results lock");
                if ok {
                    r.0 += 1;
                } else {
                    r.1 += 1;
                }
            });
        }
    });
    crate::qemu::use_qemu(None);
    let (passed, failed) = *results.lock().expect("results lock");
    let r = PassResult { passed, failed, skipped: too_new.len() };
    println!("{}: {passed} passed, {failed} failed, {} skipped", qemu.label().replace(' ', "-"), r.skipped);
    Ok(r)
}

fn run_one(artifacts: &Artifacts, decoders: &crate::Decoders, sc: &Scenario, pass_dir: &str) -> (bool, String) {
    let dir = crate::work_dir().join(pass_dir).join(sc.name);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return (false, format!("scenario {} ... FAILED\n  cannot create {}: {e}", sc.name, dir.display()));
    }
    let ctx = Ctx { dir: dir.clone(), artifacts };
    let mut cfg = match (sc.setup)(&ctx) {
        Ok(c) => c,
        Err(e) => return (false, format!("scenario {} ... FAILED\n  setup: {e}", sc.name)),
    };
    cfg.trace.get_or_insert_with(|| dir.join("trace.txt"));
    let kernel = artifacts.kernel(cfg.image);
    let outcome = match qemu::run(kernel, decoders.get(cfg.image), &cfg, &mut |_| {}) {
        Ok(o) => o,
        Err(e) => return (false, format!("scenario {} ... FAILED\n  {e}", sc.name)),
    };
    let mut outcome = outcome;
    outcome.dtb = match &cfg.dtb {
        Some(d) => Some(d.clone()),
        // QEMU generated the tree: the same command line dumps it for the
        // checks that name SMMUs and hosts from it.
        None => {
            let d = dir.join("qemu-generated.dtb");
            cfg.dump_qemu_dtb(&d).ok().map(|_| d)
        }
    };
    let _ = std::fs::write(dir.join("kernel.log"), outcome.log_text());
    let mut checks = Checks::default();
    (sc.check)(&outcome, &mut checks);
    let secs = outcome.elapsed.as_secs_f64();
    if checks.failures.is_empty() {
        return (true, format!("scenario {} ... ok ({secs:.1}s, {} log lines, {} trace events)", sc.name, outcome.log.len(), outcome.trace.events.len()));
    }
    let mut r = format!("scenario {} ... FAILED ({secs:.1}s)\n", sc.name);
    for f in &checks.failures {
        r.push_str(&format!("  - {f}\n"));
    }
    r.push_str(&format!("  qemu: {}\n", cfg.args(kernel).join(" ")));
    r.push_str(&format!("  log ({} lines, last 30; all in {}):\n", outcome.log.len(), dir.join("kernel.log").display()));
    for l in outcome.log.iter().rev().take(30).collect::<Vec<_>>().into_iter().rev() {
        r.push_str(&format!("    {l}\n"));
    }
    if !outcome.stderr.trim().is_empty() {
        r.push_str(&format!("  qemu stderr: {}\n", outcome.stderr.trim()));
    }
    (false, r)
}
