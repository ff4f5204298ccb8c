//! `cargo xtask`: the one door to building, running and testing bulkhead.
//!
//! ```text
//! cargo xtask run  [--log-level L] [--flavour virt|stage1|stage2|two-smmus] [--qemu system|11.1] [--append TEXT]
//!                  [--overlay FILE.dts | --no-overlay] [--qemu-args "ARGS"] [--timeout SECS] [--debug]
//!                  [-- EXTRA-QEMU-ARGS...]
//! cargo xtask test [--host-only] [--jobs N] [--qemu system|11.1] [FILTER]
//! cargo xtask build [--log-level L] [--debug]
//! cargo xtask image [--board qemu-virt|fvp-base] [--log-level L] [--debug]
//! cargo xtask bench [--smoke] [--json PATH] [--markdown] [--from PATH] [--jobs N]
//! cargo xtask linux-guest    (fetch Debian's arm64 Linux into the cache, build its helpers, print the paths)
//! cargo xtask check --dtb BOARD.dtb|.dts --overlay A.dts|A.dtbo [--overlay ...] [--topology BOOT.LOG]
//!                   [--boot-cpu MPIDR] [--board qemu-virt|fvp-base] [--kernel ADDR,SIZE] [--dtb-at ADDR[,SIZE]] [--dot FILE.dot]
//! ```

mod bench;
mod check;
mod prereq;
mod qemu_root;

use bulkhead_tests::log::Decoder;
use bulkhead_tests::qemu::{self, Flavour, QemuConfig};
use bulkhead_tests::Artifacts;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The boards (`--board`) and the crate that builds each; the first is the
/// one `run`, `test` and `build` boot under QEMU.
const BOARDS: &[(&str, &str)] = &[("qemu-virt", "bulkhead-qemu-virt"), ("fvp-base", "bulkhead-fvp-base")];
const PAYLOAD_CRATE: &str = "bulkhead-payload";
/// The overlay `cargo xtask run` boots unless told otherwise.
const DEFAULT_OVERLAY: &str = "boards/qemu-virt/overlays/demo.dts";
/// The overlay `cargo xtask run --flavour two-smmus` boots.
const TWO_SMMUS_OVERLAY: &str = "boards/qemu-virt/overlays/two-smmus.dts";
/// Host-side crates whose tests `cargo xtask test` runs.
const HOST_CRATES: &[&str] = &["smmu", "partitions", "platform", "bulkhead-tests", "xtask"];

#[derive(Clone)]
struct Opts {
    log_level: String,
    release: bool,
    flavour: Flavour,
    append: Option<String>,
    timeout: u64,
    jobs: usize,
    host_only: bool,
    filter: Option<String>,
    overlay: Option<PathBuf>,
    no_overlay: bool,
    qemu_args: Vec<String>,
    board: String,
    /// `--qemu`: which QEMU `run` boots (`None`: the machine's, unless the
    /// flavour needs a newer one).
    qemu: Option<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        log_level: "info".into(),
        release: true,
        flavour: Flavour::Virt,
        append: None,
        timeout: 120,
        jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        host_only: false,
        filter: None,
        overlay: None,
        no_overlay: false,
        qemu_args: Vec::new(),
        board: "qemu-virt".into(),
        qemu: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--log-level" => o.log_level = val("--log-level")?,
            "--debug" => o.release = false,
            "--flavour" => {
                let v = val("--flavour")?;
                o.flavour = Flavour::parse(&v).ok_or(format!("unknown flavour {v} (virt, stage1, stage2, two-smmus)"))?;
            }
            "--append" => o.append = Some(val("--append")?),
            "--timeout" => o.timeout = val("--timeout")?.parse().map_err(|_| "--timeout takes seconds")?,
            "--jobs" => o.jobs = val("--jobs")?.parse().map_err(|_| "--jobs takes a number")?,
            "--host-only" => o.host_only = true,
            "--overlay" => o.overlay = Some(PathBuf::from(val("--overlay")?)),
            "--no-overlay" => o.no_overlay = true,
            "--qemu-args" => o.qemu_args.extend(val("--qemu-args")?.split_whitespace().map(String::from)),
            "--board" => o.board = val("--board")?,
            "--qemu" => {
                let v = val("--qemu")?;
                if !["system", "11.1"].contains(&v.as_str()) {
                    return Err(format!("unknown QEMU {v} (system: the machine's; 11.1: the trixie root xtask sets up)"));
                }
                o.qemu = Some(v);
            }
            "--" => {
                o.qemu_args.extend(it.by_ref().cloned());
            }
            f if !f.starts_with('-') && o.filter.is_none() => o.filter = Some(f.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !["trace", "debug", "info", "warn", "error", "off"].contains(&o.log_level.as_str()) {
        return Err(format!("unknown log level {} (trace, debug, info, warn, error, off)", o.log_level));
    }
    Ok(o)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(bulkhead_tests::workspace_root());
    c
}

fn git_version() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .current_dir(bulkhead_tests::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The crate that builds `board`.
fn board_crate(board: &str) -> Result<&'static str, String> {
    BOARDS.iter().find(|(b, _)| *b == board).map(|(_, c)| *c).ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|(b, _)| *b).collect();
        format!("unknown board {board} ({})", names.join(", "))
    })
}

/// Builds the kernel for `o.board`; returns the ELF's path.
fn build_kernel(o: &Opts) -> Result<PathBuf, String> {
    prereq::ensure_target()?;
    let krate = board_crate(&o.board)?;
    let mut c = cargo();
    c.args(["build", "-p", krate, "--target", prereq::TARGET])
        .env("DEFMT_LOG", &o.log_level)
        .env("BULKHEAD_GIT", git_version());
    if o.release {
        c.arg("--release");
    }
    let st = c.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("building the kernel failed".into());
    }
    let profile = if o.release { "release" } else { "debug" };
    Ok(bulkhead_tests::workspace_root().join("target").join(prereq::TARGET).join(profile).join(krate))
}

/// Builds the partition payload and writes its flat image. Like the kernel
/// it is position-independent (the target's rustflags in
/// `.cargo/config.toml`), so it shares the kernel's target directory.
fn build_payload() -> Result<PathBuf, String> {
    let root = bulkhead_tests::workspace_root();
    let st = cargo()
        .args(["build", "--release", "-p", PAYLOAD_CRATE, "--target", prereq::TARGET])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("building the partition payload failed".into());
    }
    let elf_path = root.join("target").join(prereq::TARGET).join("release").join(PAYLOAD_CRATE);
    let elf = std::fs::read(&elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let (_, image) = bulkhead_tests::image::flat_binary(&elf)?;
    let out = bulkhead_tests::work_dir().join("payload.bin");
    std::fs::write(&out, image).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(out)
}

/// The kernel for QEMU (whatever `--board` says) and the payload.
fn build_all(o: &Opts) -> Result<Artifacts, String> {
    let qemu = Opts { board: BOARDS[0].0.into(), ..o.clone() };
    Ok(Artifacts { kernel: build_kernel(&qemu)?, payload: build_payload()? })
}

fn cmd_build(o: &Opts) -> Result<ExitCode, String> {
    let a = build_all(o)?;
    println!("{}\n{}", a.kernel.display(), a.payload.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the kernel for `--board` and writes the raw `Image` with the Linux
/// arm64 header next to the ELF, for U-Boot `booti`, other Linux-protocol
/// loaders and QEMU `-kernel Image`.
fn cmd_image(o: &Opts) -> Result<ExitCode, String> {
    let (elf, out) = build_image(o)?;
    println!("{}\n{}", elf.display(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds `o.board`'s ELF and its `Image`; returns both paths.
fn build_image(o: &Opts) -> Result<(PathBuf, PathBuf), String> {
    let elf = build_kernel(o)?;
    let bytes = std::fs::read(&elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let image = bulkhead_tests::image::linux_image(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    let header = bulkhead_tests::image::Arm64Header::parse(&image)?;
    let out = elf.with_extension("Image");
    std::fs::write(&out, &image).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!(
        "xtask: Image {} bytes, image_size {:#x} (with bss and stack), text_offset {:#x}, {}",
        image.len(),
        header.image_size,
        header.text_offset,
        if header.anywhere() { "any 2 MiB-aligned base" } else { "fixed base" }
    );
    Ok((elf, out))
}

/// The QEMU `run` boots: `--qemu`, else the machine's when it is new
/// enough for the flavour, else the trixie root's.
fn run_qemu(o: &Opts) -> Result<qemu::Qemu, String> {
    let (major, minor) = o.flavour.min_qemu();
    match o.qemu.as_deref() {
        Some("11.1") => qemu_root::ensure(),
        Some(_) => qemu::Qemu::system(),
        None => {
            let system = qemu::Qemu::system()?;
            if system.at_least(major, minor) { Ok(system) } else { qemu_root::ensure() }
        }
    }
}

fn cmd_run(o: &Opts) -> Result<ExitCode, String> {
    prereq::ensure_host_tools()?;
    let artifacts = build_all(o)?;
    let elf = artifacts.kernel.clone();
    let bytes = std::fs::read(&elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let decoder = Decoder::from_elf(&bytes)?;
    let qemu = run_qemu(o)?;
    let mut cfg = QemuConfig {
        flavour: o.flavour,
        append: o.append.clone(),
        extra: o.qemu_args.clone(),
        timeout: Duration::from_secs(o.timeout),
        qemu: Some(qemu.clone()),
        ..QemuConfig::default()
    };
    let dir = bulkhead_tests::work_dir().join("run");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !o.no_overlay {
        let default = if o.flavour == Flavour::TwoSmmus { TWO_SMMUS_OVERLAY } else { DEFAULT_OVERLAY };
        let path = o.overlay.clone().unwrap_or_else(|| bulkhead_tests::workspace_root().join(default));
        let dts = std::fs::read_to_string(&path).map_err(|e| format!("cannot read overlay {}: {e}", path.display()))?;
        eprintln!("xtask: overlay {}", path.display());
        cfg = bulkhead_tests::dtb::with_overlay(cfg, &dts, &dir, &artifacts.payload)?;
    } else if o.flavour == Flavour::TwoSmmus {
        // QEMU's own DTB leaves the second SMMU out: boot the one that
        // describes the machine.
        let dtb = dir.join("two-smmus.dtb");
        cfg.dump_dtb(&dtb)?;
        cfg.dtb = Some(dtb);
    }
    eprintln!("xtask: {} ({}) {}", qemu.command.last().map(String::as_str).unwrap_or(qemu::QEMU), qemu.label(), cfg.args(&elf).join(" "));
    let out = qemu::run(&elf, &decoder, &cfg, &mut |l| println!("{l}"))?;
    if out.timed_out {
        eprintln!("xtask: QEMU did not exit within {} s; stopped it", o.timeout);
        return Ok(ExitCode::FAILURE);
    }
    if !out.stderr.trim().is_empty() {
        eprintln!("{}", out.stderr.trim());
    }
    let code = out.status.unwrap_or(1);
    eprintln!("xtask: kernel exit status {code}");
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Runs host tests, echoing cargo's output and summing its result lines.
fn host_tests() -> Result<(usize, usize), String> {
    let mut c = cargo();
    c.arg("test");
    for k in HOST_CRATES {
        c.args(["-p", k]);
    }
    c.stdout(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("cannot run cargo test: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';').find_map(|p| p.trim().strip_suffix(key).and_then(|n| n.trim().rsplit(' ').next()?.parse::<usize>().ok()))
            };
            passed += num("passed").unwrap_or(0);
            failed += num("failed").unwrap_or(0);
        }
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if !st.success() && failed == 0 {
        failed += 1; // a build failure counts
    }
    Ok((passed, failed))
}

fn cmd_test(o: &Opts) -> Result<ExitCode, String> {
    prereq::ensure_host_tools()?;
    println!("== host tests ==");
    let (hp, hf) = host_tests()?;
    let (mut qp, mut qf) = (0, 0);
    let mut passes = Vec::new();
    if !o.host_only {
        println!("== QEMU scenarios ==");
        let build = Opts { log_level: "debug".into(), ..o.clone() };
        // Every board must build, though only the first boots here.
        for (board, _) in &BOARDS[1..] {
            let (_, image) = build_image(&Opts { board: board.to_string(), ..build.clone() })?;
            println!("board {board}: {}", image.display());
        }
        let artifacts = build_all(&build)?;
        let scenarios = bulkhead_tests::scenarios::all();
        // Debian's Linux is fetched (the first time) and its helpers built
        // before the passes start; a failure here fails those scenarios'
        // setup with the same message, and the others still run.
        let wants_linux = scenarios
            .iter()
            .any(|s| s.name.starts_with(bulkhead_tests::scenario::LINUX_PREFIX) && o.filter.as_deref().is_none_or(|f| s.name.contains(f)));
        if wants_linux {
            match bulkhead_tests::linux::guest() {
                Ok(g) => println!("linux guest: {} ({} {}), busybox {}", g.release, g.package, g.version, g.busybox_version),
                Err(e) => println!("linux guest: cannot be had: {e}"),
            }
        }
        for (qemu, dir) in test_qemus(o)? {
            println!("== QEMU scenarios on {} ==", qemu.label());
            let started = std::time::Instant::now();
            let r = bulkhead_tests::scenario::run_all(&artifacts, &scenarios, o.filter.as_deref(), o.jobs, &qemu, &dir)?;
            qp += r.passed;
            qf += r.failed;
            passes.push((qemu.label(), r, started.elapsed()));
        }
        // The benchmarks' quick pass, so they cannot rot: it passes when
        // every figure could be produced, whatever the goals say. On the
        // machine's QEMU only (bench figures are that QEMU's).
        if o.filter.as_deref().is_none_or(|f| "bench-smoke".contains(f)) {
            println!("== bench smoke ==");
            let (ok, report) = bench::smoke(&artifacts, o.jobs);
            println!("{report}");
            if ok {
                qp += 1;
            } else {
                qf += 1;
            }
        }
    }
    println!("== summary ==");
    println!("host tests: {hp} passed, {hf} failed");
    for (label, r, took) in &passes {
        println!(
            "qemu scenarios on {label}: {} passed, {} failed, {} skipped ({:.1} min)",
            r.passed,
            r.failed,
            r.skipped,
            took.as_secs_f64() / 60.0
        );
    }
    println!("total: {} passed, {} failed", hp + qp, hf + qf);
    Ok(if hf + qf == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The QEMUs `test` runs the scenarios on, each with the directory its
/// scenarios keep their files in: the machine's, then QEMU 11.1 from the
/// trixie root (set up when missing), unless the machine's is already
/// 11.1 or later; `--qemu` picks one of the two.
fn test_qemus(o: &Opts) -> Result<Vec<(qemu::Qemu, String)>, String> {
    let system = qemu::Qemu::system()?;
    let (a, b) = qemu_root::WANT;
    let mut v = Vec::new();
    if o.qemu.as_deref() != Some("11.1") {
        v.push((system.clone(), "scenarios".to_string()));
    }
    if o.qemu.as_deref() != Some("system") && (!system.at_least(a, b) || o.qemu.is_some()) {
        let q = qemu_root::ensure()?;
        let dir = format!("scenarios-qemu-{}.{}", q.version.0, q.version.1);
        v.push((q, dir));
    }
    Ok(v)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <run|test|build|image|check> [options]   (see xtask/src/main.rs)");
        return ExitCode::FAILURE;
    };
    // `check` reads options of its own (xtask/src/check.rs).
    let common: &[String] = if matches!(cmd.as_str(), "check" | "bench") { &[] } else { rest };
    let result = parse(common).and_then(|o| match cmd.as_str() {
        "run" => cmd_run(&o),
        "test" => cmd_test(&o),
        "build" => cmd_build(&o),
        "image" => cmd_image(&o),
        "check" => check::cmd(rest),
        "bench" => bench::cmd(rest),
        "linux-guest" => bulkhead_tests::linux::guest().map(|g| {
            println!("{} ({} {}), busybox-static {}, {} cross", g.release, g.package, g.version, g.busybox_version, g.gcc);
            for (what, p) in [("image", &g.image), ("modules", &g.modules), ("busybox", &g.busybox), ("probe", &g.probe), ("ticks", &g.ticks)] {
                println!("{what}: {}", p.display());
            }
            ExitCode::SUCCESS
        }),
        "qemu-root" => qemu_root::ensure().map(|q| {
            println!("{}: {}", q.label(), q.command.join(" "));
            ExitCode::SUCCESS
        }),
        other => Err(format!("unknown command {other} (run, test, build, image, check)")),
    });
    match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
