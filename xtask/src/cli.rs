//! The command line of `cargo xtask`, declared with clap: `cargo xtask
//! --help` lists the commands, `cargo xtask <command> --help` each option
//! with its default. `check` and `bench` declare their options beside their
//! code ([`crate::check::Request`], [`crate::bench::Args`]).

use bulkhead_tests::qemu::Flavour;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// bulkhead's one door: build, run, test, check and measure the kernel.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Build the qemu-virt image and boot it under QEMU, log decoded on the host
    Run(RunArgs),
    /// Host tests of every crate, then the QEMU scenarios; one summary at the end
    Test(TestArgs),
    /// Build the kernel for QEMU and the partition payload; print their paths
    Build(KernelOpts),
    /// Build a board's kernel and its raw Image (Linux arm64 boot header); print both paths
    Image(ImageArgs),
    /// Check a partition configuration offline with the kernel's own code
    Check(crate::check::Request),
    /// Measure abort and isolation time, reassignment, memory and scaling
    Bench(crate::bench::Args),
    /// Set up QEMU 11.1 in a trixie root under target/ (`test` does this itself when needed)
    QemuRoot,
    /// Fetch Debian's arm64 Linux into the cache, build its guest helpers, print the paths
    LinuxGuest,
}

/// How the kernel is built (`run`, `build`, `image`).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KernelOpts {
    /// Compile-time log level (DEFMT_LOG)
    #[arg(long, value_name = "LEVEL", default_value = "info",
          value_parser = ["trace", "debug", "info", "warn", "error", "off"])]
    pub log_level: String,
    /// Unoptimised kernel
    #[arg(long)]
    pub debug: bool,
}

/// Which QEMU boots (`--qemu`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuPick {
    /// The machine's
    System,
    /// QEMU 11.1 from the trixie root xtask sets up
    #[value(name = "11.1")]
    Trixie,
}

/// `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub kernel: KernelOpts,
    /// SMMU model: virt (stage 1+2), virt-9.1 with stage 1 or stage 2 only, or two
    /// user-created SMMUs (QEMU >= 10.2, overlay boards/qemu-virt/overlays/two-smmus.dts by default)
    #[arg(long, value_name = "FLAVOUR", default_value = "virt", value_parser = flavour())]
    pub flavour: Flavour,
    /// Which QEMU boots [default: the machine's, unless the flavour needs a newer one]
    #[arg(long, value_name = "QEMU")]
    pub qemu: Option<QemuPick>,
    /// Boot arguments (/chosen/bootargs), e.g. bulkhead.selftest=data-abort (with --selftest)
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Boot the kernel built with selftests (cargo feature `selftest`), which obeys
    /// bulkhead.selftest= boot arguments; without it the production image boots
    #[arg(long)]
    pub selftest: bool,
    /// Stop QEMU after this long
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
    /// Partition configuration to boot (`qemu-args:` lines in its comments add the devices it
    /// assigns) [default: boards/qemu-virt/overlays/demo.dts]
    #[arg(long, value_name = "FILE.dts", conflicts_with = "no_overlay")]
    pub overlay: Option<PathBuf>,
    /// Boot QEMU's own DTB, no partitions
    #[arg(long)]
    pub no_overlay: bool,
    /// Extra QEMU arguments, split at white space, e.g. "-device edu,dma_mask=0xffffffffff"
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Extra QEMU arguments, as they are
    #[arg(last = true, value_name = "QEMU-ARGS")]
    pub extra: Vec<String>,
}

impl RunArgs {
    /// Every extra QEMU argument: `--qemu-args` split into words, then
    /// those after `--`.
    pub fn qemu_extra(&self) -> Vec<String> {
        self.qemu_args.iter().flat_map(|a| a.split_whitespace().map(String::from)).chain(self.extra.iter().cloned()).collect()
    }
}

/// `cargo xtask test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Host tests only, no QEMU scenarios
    #[arg(long)]
    pub host_only: bool,
    /// QEMU scenarios only: no lints, host tests or production images
    /// (while working on a scenario; CI runs everything)
    #[arg(long, conflicts_with = "host_only")]
    pub scenarios_only: bool,
    /// QEMU scenarios run at a time (by default one per CPU of this machine)
    #[arg(long, value_name = "N", default_value_t = cpus())]
    pub jobs: usize,
    /// Run the scenarios on this QEMU only [default: the machine's, then 11.1]
    #[arg(long, value_name = "QEMU")]
    pub qemu: Option<QemuPick>,
    /// Only the scenarios whose name contains FILTER
    pub filter: Option<String>,
}

/// `cargo xtask image`.
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The board to build for
    #[arg(long, value_name = "BOARD", default_value = crate::BOARDS[0].0,
          value_parser = PossibleValuesParser::new(crate::BOARDS.iter().map(|b| b.0)))]
    pub board: String,
    #[command(flatten)]
    pub kernel: KernelOpts,
}

/// The CPUs of this machine (the default of `test --jobs`).
fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `--flavour`: the names (and older aliases) [`Flavour::parse`] takes.
fn flavour() -> impl TypedValueParser<Value = Flavour> {
    PossibleValuesParser::new([
        PossibleValue::new("virt").alias("nested"),
        PossibleValue::new("stage1").alias("virt-9.1-stage1"),
        PossibleValue::new("stage2").alias("virt-9.1-stage2"),
        PossibleValue::new("two-smmus"),
    ])
    .try_map(|s| Flavour::parse(&s).ok_or(format!("unknown flavour {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `line` (starting `cargo xtask`) parsed as `main` parses it.
    fn parse(line: &str) -> Result<Cmd, String> {
        let rest = line.strip_prefix("cargo xtask").ok_or("not a cargo xtask line")?;
        let words = std::iter::once("cargo xtask".to_string()).chain(shell_words(rest));
        Cli::try_parse_from(words).map(|c| c.command).map_err(|e| e.to_string())
    }

    /// Words of a command line: white space separates, double quotes group.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        for (i, part) in line.split('"').enumerate() {
            if i % 2 == 1 {
                words.push(part.to_string());
            } else {
                words.extend(part.split_whitespace().map(String::from));
            }
        }
        words
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_command() {
        let help = Cli::command().render_long_help().to_string();
        for c in ["run", "test", "build", "image", "check", "bench", "qemu-root"] {
            assert!(help.lines().any(|l| l.trim_start().starts_with(&format!("{c} "))), "{c} missing from:\n{help}");
        }
    }

    #[test]
    fn the_readme_invocations() {
        let Cmd::Run(r) = parse("cargo xtask run").unwrap() else { panic!() };
        assert_eq!(r.kernel, KernelOpts { log_level: "info".into(), debug: false });
        assert_eq!((r.flavour, r.qemu, r.timeout, r.no_overlay, r.selftest), (Flavour::Virt, None, 120, false, false));

        let Cmd::Run(r) = parse(
            "cargo xtask run --log-level debug --flavour two-smmus --qemu 11.1 --selftest --append bulkhead.selftest=data-abort \
             --timeout 30 --overlay a.dts --debug --qemu-args \"-device edu,dma_mask=0xffffffffff\" -- -d guest_errors",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(r.kernel, KernelOpts { log_level: "debug".into(), debug: true });
        assert_eq!((r.flavour, r.qemu, r.timeout), (Flavour::TwoSmmus, Some(QemuPick::Trixie), 30));
        assert_eq!((r.append.as_deref(), r.selftest), (Some("bulkhead.selftest=data-abort"), true));
        assert_eq!(r.overlay, Some(PathBuf::from("a.dts")));
        assert_eq!(r.qemu_extra(), ["-device", "edu,dma_mask=0xffffffffff", "-d", "guest_errors"]);
        let Cmd::Run(r) = parse("cargo xtask run --no-overlay --flavour nested").unwrap() else { panic!() };
        assert!(r.no_overlay && r.flavour == Flavour::Virt);

        let Cmd::Test(t) = parse("cargo xtask test").unwrap() else { panic!() };
        assert_eq!((t.host_only, t.jobs, t.qemu, t.filter), (false, cpus(), None, None));
        let Cmd::Test(t) = parse("cargo xtask test --host-only --jobs 3 --qemu system uboot").unwrap() else { panic!() };
        assert_eq!((t.host_only, t.jobs, t.qemu, t.filter.as_deref()), (true, 3, Some(QemuPick::System), Some("uboot")));

        assert!(matches!(parse("cargo xtask build --log-level warn --debug").unwrap(), Cmd::Build(k) if k.log_level == "warn" && k.debug));
        let Cmd::Image(i) = parse("cargo xtask image --board fvp-base --log-level error").unwrap() else { panic!() };
        assert_eq!((i.board.as_str(), i.kernel.log_level.as_str()), ("fvp-base", "error"));
        assert!(matches!(parse("cargo xtask image").unwrap(), Cmd::Image(i) if i.board == "qemu-virt"));

        let Cmd::Bench(b) = parse("cargo xtask bench --from target/bulkhead/bench.json --markdown").unwrap() else { panic!() };
        assert_eq!((b.from, b.markdown, b.smoke, b.jobs), (Some(PathBuf::from("target/bulkhead/bench.json")), true, false, 1));
        let Cmd::Bench(b) = parse("cargo xtask bench --peer linux").unwrap() else { panic!() };
        assert_eq!(b.peer, Some(crate::bench::PeerSystem::Linux));
        assert!(parse("cargo xtask bench --peer windows").is_err());
        let Cmd::Bench(b) = parse("cargo xtask bench --smoke --json x.json --jobs 2").unwrap() else { panic!() };
        assert_eq!((b.smoke, b.json, b.jobs), (true, Some(PathBuf::from("x.json")), 2));

        let Cmd::Check(c) = parse(
            "cargo xtask check --dtb tests/checker/qemu-virt.dtb --overlay tests/checker/refuse/scenario-split-group.dts \
             --topology tests/checker/split-group-boot.log --board qemu-virt --dot plan.dot",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((c.overlays.len(), c.board.as_deref(), c.dot), (1, Some("qemu-virt"), Some(PathBuf::from("plan.dot"))));
        assert!(matches!(parse("cargo xtask qemu-root").unwrap(), Cmd::QemuRoot));
    }

    #[test]
    fn wrong_input_is_named() {
        let err = parse("cargo xtask run --frobnicate").unwrap_err();
        assert!(err.contains("--frobnicate"), "{err}");
        let err = parse("cargo xtask run --flavour stage3").unwrap_err();
        assert!(err.contains("stage3") && err.contains("two-smmus"), "{err}");
        let err = parse("cargo xtask run --log-level loud").unwrap_err();
        assert!(err.contains("loud") && err.contains("trace"), "{err}");
        let err = parse("cargo xtask test --jobs many").unwrap_err();
        assert!(err.contains("many") && err.contains("--jobs"), "{err}");
        let err = parse("cargo xtask test --qemu 9.2").unwrap_err();
        assert!(err.contains("9.2") && err.contains("11.1"), "{err}");
        let err = parse("cargo xtask test a b").unwrap_err();
        assert!(err.contains("'b'"), "{err}");
        let err = parse("cargo xtask image --board rpi").unwrap_err();
        assert!(err.contains("rpi") && err.contains("fvp-base"), "{err}");
        let err = parse("cargo xtask run --overlay a.dts --no-overlay").unwrap_err();
        assert!(err.contains("--no-overlay"), "{err}");
        let err = parse("cargo xtask frobnicate").unwrap_err();
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn help_shows_defaults() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run").render_long_help().to_string();
        for d in ["[default: info]", "[default: virt]", "[default: 120]", "[default: boards/qemu-virt/overlays/demo.dts]"] {
            assert!(run.contains(d), "{d} missing from:\n{run}");
        }
        let test = cmd.find_subcommand_mut("test").expect("test").render_long_help().to_string();
        assert!(test.contains(&format!("[default: {}]", cpus())), "{test}");
    }
}
