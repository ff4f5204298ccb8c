//! `cargo xtask`: the one door to building, running and testing bulkhead.
//! `cargo xtask --help` lists the commands, `cargo xtask <command> --help`
//! their options (declared in `cli.rs`, and for `check` and `bench` beside
//! their code).

mod bench;
mod check;
mod cli;
mod lints;
mod prereq;
mod qemu_root;

use bulkhead_tests::log::Decoder;
use bulkhead_tests::qemu::{self, Flavour, QemuConfig};
use bulkhead_tests::{Artifacts, Image};
use clap::Parser;
use cli::{Cli, Cmd, ImageArgs, KernelOpts, QemuPick, RunArgs, TestArgs};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The boards (`--board`) and the crate that builds each; the first is the
/// one `run`, `test` and `build` boot under QEMU.
const BOARDS: &[(&str, &str)] = &[
    ("qemu-virt", "bulkhead-qemu-virt"),
    ("fvp-base", "bulkhead-fvp-base"),
    ("rock-5b", "bulkhead-rock-5b"),
    ("imx95-evk", "bulkhead-imx95-evk"),
    ("j721e-sk", "bulkhead-j721e-sk"),
];
const PAYLOAD_CRATE: &str = "bulkhead-payload";
/// The overlay `cargo xtask run` boots unless told otherwise.
const DEFAULT_OVERLAY: &str = "boards/qemu-virt/overlays/demo.dts";
/// The overlay `cargo xtask run --flavour two-smmus` boots.
const TWO_SMMUS_OVERLAY: &str = "boards/qemu-virt/overlays/two-smmus.dts";
/// Host-side crates whose tests `cargo xtask test` runs.
const HOST_CRATES: &[&str] = &["smmu", "devicetree", "partitions", "platform", "bulkhead-tests", "xtask"];

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

/// Builds the kernel for `board` as `image`; returns the ELF's path. The
/// production ELF stays where cargo puts it; the selftest ELF is copied to
/// `target/bulkhead/<crate>-selftest.elf`, since the next build of the
/// same crate (another feature set) overwrites cargo's file.
fn build_kernel(board: &str, o: &KernelOpts, image: Image) -> Result<PathBuf, String> {
    prereq::ensure_target()?;
    let krate = board_crate(board)?;
    let mut c = cargo();
    c.args(["build", "-p", krate, "--target", prereq::TARGET]).env("DEFMT_LOG", &o.log_level).env("BULKHEAD_GIT", git_version());
    if !o.debug {
        c.arg("--release");
    }
    if image == Image::Selftest {
        c.args(["--features", "selftest"]);
    }
    let st = c.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("building the kernel failed".into());
    }
    let profile = if o.debug { "debug" } else { "release" };
    let built = bulkhead_tests::workspace_root().join("target").join(prereq::TARGET).join(profile).join(krate);
    if image == Image::Production {
        return Ok(built);
    }
    let copy = bulkhead_tests::work_dir().join(format!("{krate}-selftest.elf"));
    std::fs::copy(&built, &copy).map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), copy.display()))?;
    Ok(copy)
}

/// Builds the partition payload and writes its flat image. Like the kernel
/// it is position-independent (the target's rustflags in
/// `.cargo/config.toml`), so it shares the kernel's target directory.
fn build_payload() -> Result<PathBuf, String> {
    let root = bulkhead_tests::workspace_root();
    let st = cargo().args(["build", "--release", "-p", PAYLOAD_CRATE, "--target", prereq::TARGET]).status().map_err(|e| format!("cannot run cargo: {e}"))?;
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

/// Both kernels for QEMU (the selftest one first: see [`build_kernel`])
/// and the payload.
fn build_all(o: &KernelOpts) -> Result<Artifacts, String> {
    let selftest_kernel = build_kernel(BOARDS[0].0, o, Image::Selftest)?;
    Ok(Artifacts { kernel: build_kernel(BOARDS[0].0, o, Image::Production)?, selftest_kernel, payload: build_payload()? })
}

fn cmd_build(o: &KernelOpts) -> Result<ExitCode, String> {
    let a = build_all(o)?;
    println!("{}\n{}\n{}", a.kernel.display(), a.selftest_kernel.display(), a.payload.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the kernel for `--board` and writes the raw `Image` with the Linux
/// arm64 header next to the ELF, for U-Boot `booti`, other Linux-protocol
/// loaders and QEMU `-kernel Image`.
fn cmd_image(o: &ImageArgs) -> Result<ExitCode, String> {
    let (elf, out) = build_image(&o.board, &o.kernel)?;
    println!("{}\n{}", elf.display(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds `board`'s ELF and its `Image`; returns both paths.
fn build_image(board: &str, o: &KernelOpts) -> Result<(PathBuf, PathBuf), String> {
    let elf = build_kernel(board, o, Image::Production)?;
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
fn run_qemu(o: &RunArgs) -> Result<qemu::Qemu, String> {
    let (major, minor) = o.flavour.min_qemu();
    match o.qemu {
        Some(QemuPick::Trixie) => qemu_root::ensure(),
        Some(QemuPick::System) => qemu::Qemu::system(),
        None => {
            let system = qemu::Qemu::system()?;
            if system.at_least(major, minor) {
                Ok(system)
            } else {
                qemu_root::ensure()
            }
        }
    }
}

fn cmd_run(o: &RunArgs) -> Result<ExitCode, String> {
    prereq::ensure_host_tools()?;
    let image = if o.selftest { Image::Selftest } else { Image::Production };
    let elf = build_kernel(BOARDS[0].0, &o.kernel, image)?;
    let payload = build_payload()?;
    let bytes = std::fs::read(&elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let decoder = Decoder::from_elf(&bytes)?;
    let qemu = run_qemu(o)?;
    let mut cfg = QemuConfig {
        flavour: o.flavour,
        append: o.append.clone(),
        extra: o.qemu_extra(),
        timeout: Duration::from_secs(o.timeout),
        qemu: Some(qemu.clone()),
        image,
        ..QemuConfig::default()
    };
    let dir = bulkhead_tests::work_dir().join("run");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !o.no_overlay {
        let default = if o.flavour == Flavour::TwoSmmus { TWO_SMMUS_OVERLAY } else { DEFAULT_OVERLAY };
        let path = o.overlay.clone().unwrap_or_else(|| bulkhead_tests::workspace_root().join(default));
        let dts = std::fs::read_to_string(&path).map_err(|e| format!("cannot read overlay {}: {e}", path.display()))?;
        eprintln!("xtask: overlay {}", path.display());
        // Partitions the overlay names with `linux-guest:` boot Debian's Linux.
        let (boots, disks) = bulkhead_tests::dtb::overlay_linux_boots(&dts, &dir)?;
        cfg.extra.extend(disks);
        cfg = bulkhead_tests::dtb::with_overlay_files(cfg, &dts, &dir, &payload, &boots)?;
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
            let num = |key: &str| rest.split(';').find_map(|p| p.trim().strip_suffix(key).and_then(|n| n.trim().rsplit(' ').next()?.parse::<usize>().ok()));
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

fn cmd_test(o: &TestArgs) -> Result<ExitCode, String> {
    prereq::ensure_host_tools()?;
    // For the host test of `check --dot`'s SVG; `check` works without it.
    if let Err(e) = prereq::ensure_graphviz() {
        println!("note: {e}; check's SVG test runs without it");
    }
    let ((lp, lf), (hp, hf)) = if o.scenarios_only {
        ((0, 0), (0, 0))
    } else {
        println!("== lints ==");
        let l = lints::run()?;
        println!("== host tests ==");
        (l, host_tests()?)
    };
    let (mut qp, mut qf) = (0, 0);
    let mut passes = Vec::new();
    let mut images = None;
    if !o.host_only {
        let build = KernelOpts { log_level: "debug".into(), debug: false };
        // Every board builds both ways, though only the first boots here.
        if !o.scenarios_only {
            println!("== production images ==");
            images = Some(production_images(&build)?);
        }
        println!("== QEMU scenarios ==");
        let artifacts = build_all(&build)?;
        let scenarios = bulkhead_tests::scenarios::all();
        // Debian's Linux is fetched (the first time) and its helpers built
        // before the passes start; a failure here fails those scenarios'
        // setup with the same message, and the others still run.
        let wants_linux = scenarios.iter().any(|s| s.boots_linux() && o.filter.as_deref().is_none_or(|f| s.name.contains(f)));
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
    println!("lints: {lp} passed, {lf} failed");
    println!("host tests: {hp} passed, {hf} failed");
    if let Some((p, f)) = images {
        println!("production images: {p} passed, {f} failed");
        (qp, qf) = (qp + p, qf + f);
    }
    for (label, r, took) in &passes {
        println!("qemu scenarios on {label}: {} passed, {} failed, {} skipped ({:.1} min)", r.passed, r.failed, r.skipped, took.as_secs_f64() / 60.0);
    }
    println!("total: {} passed, {} failed", lp + hp + qp, lf + hf + qf);
    Ok(if lf + hf + qf == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Builds every board's production `Image` and selftest ELF and checks
/// the first holds none of the test code the second shows
/// ([`bulkhead_tests::production::check`]); returns (passed, failed).
fn production_images(o: &KernelOpts) -> Result<(usize, usize), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (mut passed, mut failed) = (0, 0);
    for (board, _) in BOARDS {
        let selftest = build_kernel(board, o, Image::Selftest)?;
        let (production, image) = build_image(board, o)?;
        match bulkhead_tests::production::check(&read(&production)?, &read(&selftest)?) {
            Ok(what) => {
                println!("image {board} ... ok: {} has {what}", image.display());
                passed += 1;
            }
            Err(e) => {
                println!("image {board} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    Ok((passed, failed))
}

/// The QEMUs `test` runs the scenarios on, each with the directory its
/// scenarios keep their files in: the machine's, then QEMU 11.1 from the
/// trixie root (set up when missing), unless the machine's is already
/// 11.1 or later; `--qemu` picks one of the two.
fn test_qemus(o: &TestArgs) -> Result<Vec<(qemu::Qemu, String)>, String> {
    let system = qemu::Qemu::system()?;
    let (a, b) = qemu_root::WANT;
    let mut v = Vec::new();
    if o.qemu != Some(QemuPick::Trixie) {
        v.push((system.clone(), "scenarios".to_string()));
    }
    if o.qemu != Some(QemuPick::System) && (!system.at_least(a, b) || o.qemu.is_some()) {
        let q = qemu_root::ensure()?;
        let dir = format!("scenarios-qemu-{}.{}", q.version.0, q.version.1);
        v.push((q, dir));
    }
    Ok(v)
}

fn main() -> ExitCode {
    // A wrong option or command ends here with clap's message naming it
    // (exit status 2); `--help` prints and exits 0.
    let result = match Cli::parse().command {
        Cmd::Run(o) => cmd_run(&o),
        Cmd::Test(o) => cmd_test(&o),
        Cmd::Build(o) => cmd_build(&o),
        Cmd::Image(o) => cmd_image(&o),
        Cmd::Check(r) => check::cmd(&r),
        Cmd::Bench(a) => bench::cmd(&a),
        Cmd::LinuxGuest => bulkhead_tests::linux::guest().map(|g| {
            println!("{} ({} {}), busybox-static {}, {} cross", g.release, g.package, g.version, g.busybox_version, g.gcc);
            for (what, p) in [("image", &g.image), ("modules", &g.modules), ("busybox", &g.busybox), ("probe", &g.probe), ("ticks", &g.ticks)] {
                println!("{what}: {}", p.display());
            }
            ExitCode::SUCCESS
        }),
        Cmd::QemuRoot => qemu_root::ensure().map(|q| {
            println!("{}: {}", q.label(), q.command.join(" "));
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
