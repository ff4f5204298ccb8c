//! Building QEMU command lines and running the kernel under them.

use crate::log::{Decoder, LineStream, LogLine};
use crate::trace::Trace;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";

/// A QEMU to run: the machine's own, or one inside a private root (run
/// through a wrapper command that enters the root). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// Program and the arguments that come before QEMU's own.
    pub command: Vec<String>,
    /// `(major, minor, micro)` from `--version`.
    pub version: (u32, u32, u32),
    /// The first line `--version` printed.
    pub banner: String,
    /// Every trace point this build has (`-trace help`).
    pub trace_points: std::sync::Arc<std::collections::BTreeSet<String>>,
}

impl Qemu {
    /// The QEMU that `command` (program and leading arguments) starts:
    /// asks it for its version and its trace points.
    pub fn probe(command: Vec<String>) -> Result<Qemu, String> {
        let (program, lead) = command.split_first().ok_or("no QEMU command")?;
        let run = |arg: &str| -> Result<String, String> {
            let o = Command::new(program).args(lead).arg(arg).stdin(Stdio::null()).output().map_err(|e| format!("cannot run {}: {e}", command.join(" ")))?;
            if !o.status.success() {
                return Err(format!("{} {arg} failed: {}", command.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
            }
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let text = run("--version")?;
        let banner = text.lines().next().unwrap_or("").trim().to_string();
        let version = parse_version(&banner).ok_or(format!("cannot read a version from {banner:?}"))?;
        // `-trace help` lists every trace point, one a line (on stdout or
        // stderr depending on the version).
        let o = Command::new(program)
            .args(lead)
            .args(["-trace", "help"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", command.join(" ")))?;
        let listing = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        let points =
            listing.lines().map(str::trim).filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).map(String::from).collect();
        Ok(Qemu { command, version, banner, trace_points: std::sync::Arc::new(points) })
    }

    /// The machine's `qemu-system-aarch64` (probed once per process).
    pub fn system() -> Result<Qemu, String> {
        static SYSTEM: std::sync::OnceLock<Result<Qemu, String>> = std::sync::OnceLock::new();
        SYSTEM.get_or_init(|| Qemu::probe(vec![QEMU.to_string()])).clone()
    }

    /// `"QEMU 10.0.2"`.
    pub fn label(&self) -> String {
        let (a, b, c) = self.version;
        format!("QEMU {a}.{b}.{c}")
    }

    /// Whether this QEMU is `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    /// A command that runs this QEMU (arguments still to add).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.command[0]);
        c.args(&self.command[1..]);
        c
    }
}

/// `(major, minor, micro)` from `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn parse_version(banner: &str) -> Option<(u32, u32, u32)> {
    let v = banner.split("version ").nth(1)?;
    let mut it = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// The QEMU that [`QemuConfig::default`] uses: set by the runner for a
/// pass of the scenarios (one pass at a time), else the machine's.
static CURRENT: std::sync::RwLock<Option<Qemu>> = std::sync::RwLock::new(None);

/// Makes `q` the QEMU of every [`QemuConfig`] made from now on (`None`:
/// the machine's).
pub fn use_qemu(q: Option<Qemu>) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = q;
}

/// The QEMU configurations are made for now (see [`use_qemu`]).
pub fn current() -> Result<Qemu, String> {
    match CURRENT.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(q) => Ok(q.clone()),
        None => Qemu::system(),
    }
}

/// Which `virt` machine and SMMU model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `virt` (QEMU 10): SMMU with stage 1 and stage 2.
    Virt,
    /// `virt-9.1` with `arm-smmuv3.stage=1`: stage 1 only.
    Stage1,
    /// `virt-9.1` with `arm-smmuv3.stage=2`: stage 2 only.
    Stage2,
    /// `virt` without `virtualization=on`: the kernel is entered at EL1.
    NoVirtualization,
    /// `virt` with `iommu=none` and two user-created `arm-smmuv3` (stage
    /// 1+2), one on `pcie.0` and one on a `pxb-pcie` root complex (`pcie.1`,
    /// buses from [`PXB_BUS`]): QEMU ≥ 10.2. QEMU's own DTB describes only
    /// the first SMMU; [`crate::dtb::describe_two_smmus`] adds the second.
    /// Devices for `pcie.0` need `bus=pcie.0`.
    TwoSmmus,
}

/// The first bus of the `pxb-pcie` root complex of [`Flavour::TwoSmmus`].
pub const PXB_BUS: u8 = 0x80;
/// Its slot on `pcie.0`.
pub const PXB_SLOT: u8 = 4;

impl Flavour {
    /// The `-machine` value.
    pub fn machine(self) -> &'static str {
        match self {
            Flavour::Virt => "virt,virtualization=on,iommu=smmuv3,gic-version=3",
            Flavour::Stage1 | Flavour::Stage2 => "virt-9.1,virtualization=on,iommu=smmuv3,gic-version=3",
            Flavour::NoVirtualization => "virt,iommu=smmuv3,gic-version=3",
            Flavour::TwoSmmus => "virt,virtualization=on,iommu=none,gic-version=3",
        }
    }
    /// The QEMU this flavour needs, as (major, minor).
    pub fn min_qemu(self) -> (u32, u32) {
        match self {
            Flavour::TwoSmmus => (10, 2),
            _ => (10, 0),
        }
    }
    /// Devices that make the machine (before any other `-device`).
    pub fn devices(self) -> Vec<String> {
        match self {
            Flavour::TwoSmmus => [
                "arm-smmuv3,primary-bus=pcie.0,id=smmuv3.0,stage=nested".to_string(),
                format!("pxb-pcie,id=pcie.1,bus_nr={PXB_BUS:#x},bus=pcie.0,addr={PXB_SLOT}.0"),
                "arm-smmuv3,primary-bus=pcie.1,id=smmuv3.1,stage=nested".to_string(),
            ]
            .into_iter()
            .flat_map(|d| ["-device".to_string(), d])
            .collect(),
            _ => Vec::new(),
        }
    }
    /// Extra `-global` for the SMMU model.
    pub fn globals(self) -> &'static [&'static str] {
        match self {
            Flavour::Stage1 => &["-global", "arm-smmuv3.stage=1"],
            Flavour::Stage2 => &["-global", "arm-smmuv3.stage=2"],
            _ => &[],
        }
    }
    /// Parses `virt`, `stage1`, `stage2`.
    pub fn parse(s: &str) -> Option<Flavour> {
        match s {
            "virt" | "nested" => Some(Flavour::Virt),
            "stage1" | "virt-9.1-stage1" => Some(Flavour::Stage1),
            "stage2" | "virt-9.1-stage2" => Some(Flavour::Stage2),
            "two-smmus" => Some(Flavour::TwoSmmus),
            _ => None,
        }
    }
}

/// Everything that describes one QEMU run.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// Machine flavour.
    pub flavour: Flavour,
    /// CPUs.
    pub smp: u32,
    /// RAM size as QEMU spells it.
    pub memory: String,
    /// Extra arguments (devices, loaders, ...).
    pub extra: Vec<String>,
    /// `-append` text: becomes `/chosen/bootargs`.
    pub append: Option<String>,
    /// Boot with this DTB instead of QEMU's generated one.
    pub dtb: Option<PathBuf>,
    /// Deterministic guest time (`-icount shift=0,sleep=off`).
    pub icount: bool,
    /// Write QEMU's SMMU trace (and guest errors) to this file.
    pub trace: Option<PathBuf>,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Boot this file instead of the build's kernel ELF (e.g. the raw `Image`).
    pub kernel: Option<PathBuf>,
    /// Boot a firmware (U-Boot) instead of `-kernel`, typing at its prompt.
    pub firmware: Option<Firmware>,
    /// The QEMU to run (`None`: [`current`] when it runs).
    pub qemu: Option<Qemu>,
    /// `-initrd`: an initramfs for a Linux `kernel`.
    pub initrd: Option<PathBuf>,
    /// What the serial port carries: the kernel's defmt stream, or text.
    pub console: Console,
    /// Take every other source of variation out, so the same guest boots
    /// the same way twice (what Linux needs on top of `icount`): `-seed 1`
    /// (FEAT_RNG, which feeds KASLR), no random seeds in the generated DTB
    /// (`dtb-randomness=off`), a fixed RTC on the virtual clock.
    pub deterministic: bool,
    /// Which kernel image boots (the harness picks the ELF and its log
    /// decoder; [`kernel`](Self::kernel) overrides the file booted).
    pub image: crate::Image,
}

/// What the guest writes on the serial port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Console {
    /// bulkhead's defmt frames (after a [`Firmware`]'s text, if any).
    #[default]
    Defmt,
    /// Plain text (a Linux booted bare): each line becomes a [`LogLine`] of
    /// level `TEXT`, with a printk timestamp when it starts with one; all
    /// of it is also kept in [`Outcome::console`].
    Text,
}

/// The RTC a deterministic run starts from.
const RTC_BASE: &str = "2025-01-01T00:00:00";

/// A firmware that runs first and talks on the same serial port as the
/// kernel (U-Boot): booted with `-bios`, driven through its prompt, and its
/// text kept apart from the kernel's defmt log. The kernel is not passed
/// with `-kernel`: load it with `-device loader` and have the script boot it.
#[derive(Clone, Debug)]
pub struct Firmware {
    /// The firmware image (`-bios`).
    pub bios: PathBuf,
    /// What to type at its prompt, in order.
    pub script: Vec<Expect>,
    /// The firmware's last words before the kernel runs (U-Boot:
    /// `"Starting kernel ...\r\n\r\n"`): serial bytes up to and including
    /// them are the firmware's text ([`Outcome::console`]), the defmt log
    /// starts right after.
    pub handover: String,
    /// Give up when `handover` has not come this long after the script's
    /// last input.
    pub handover_within: Duration,
    /// Where to keep the firmware's text (written after the run).
    pub transcript: Option<PathBuf>,
}

/// One step of a [`Firmware`] script.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Wait until the firmware prints this (after the previous step's input).
    pub wait_for: String,
    /// Then type this.
    pub send: String,
    /// Give up (stop QEMU, [`Outcome::console_error`]) after this long.
    pub within: Duration,
}

impl Expect {
    /// Waits for `wait_for` (at most `within`), then types `send`.
    pub fn new(wait_for: &str, send: &str, within: Duration) -> Expect {
        Expect { wait_for: wait_for.into(), send: send.into(), within }
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            flavour: Flavour::Virt,
            smp: 4,
            memory: "2G".into(),
            extra: Vec::new(),
            append: None,
            dtb: None,
            icount: false,
            trace: None,
            timeout: Duration::from_secs(60),
            kernel: None,
            firmware: None,
            qemu: current().ok(),
            initrd: None,
            console: Console::Defmt,
            deterministic: false,
            image: crate::Image::Production,
        }
    }
}

impl QemuConfig {
    /// The QEMU this configuration runs.
    pub fn qemu(&self) -> Result<Qemu, String> {
        match &self.qemu {
            Some(q) => Ok(q.clone()),
            None => current(),
        }
    }

    /// The machine-describing arguments, shared by boots and DTB dumps.
    fn machine_args(&self, machine_suffix: &str) -> Vec<String> {
        let randomness = if self.deterministic { ",dtb-randomness=off" } else { "" };
        let mut a: Vec<String> = vec![
            "-machine".into(),
            format!("{}{randomness}{}", self.flavour.machine(), machine_suffix),
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            self.smp.to_string(),
            "-m".into(),
            self.memory.clone(),
            "-nic".into(),
            "none".into(),
            "-display".into(),
            "none".into(),
        ];
        a.extend(self.flavour.globals().iter().map(|s| s.to_string()));
        a.extend(self.flavour.devices());
        a.extend(self.extra.iter().cloned());
        if let Some(ap) = &self.append {
            a.push("-append".into());
            a.push(ap.clone());
        }
        a
    }

    /// The full command line that boots `kernel`.
    pub fn args(&self, kernel: &Path) -> Vec<String> {
        let mut a = self.machine_args("");
        match &self.firmware {
            Some(fw) => a.extend(["-bios".into(), fw.bios.display().to_string()]),
            None => {
                let kernel = self.kernel.as_deref().unwrap_or(kernel);
                a.extend(["-kernel".into(), kernel.display().to_string()]);
            }
        }
        if let Some(dtb) = &self.dtb {
            a.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        if let Some(initrd) = &self.initrd {
            a.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        if self.deterministic {
            a.extend(["-seed".into(), "1".into(), "-rtc".into(), format!("base={RTC_BASE},clock=vm")]);
        }
        a.extend(["-serial", "stdio", "-monitor", "none", "-semihosting-config", "enable=on,target=native", "-no-reboot"].map(String::from));
        if self.icount {
            a.extend(["-icount".into(), "shift=0,sleep=off".into()]);
        }
        if let Some(t) = &self.trace {
            a.extend(["-trace", "smmuv3_*", "-trace", "smmu_*", "-d", "guest_errors", "-D"].map(String::from));
            a.push(t.display().to_string());
        }
        a
    }

    /// Writes the DTB QEMU would generate for this command line, packed.
    ///
    /// QEMU dumps a blob padded to 1 MiB; given back with `-dtb` on the ELF
    /// path, such a blob is silently not loaded at all (QEMU 10.0.2), so the
    /// dump is re-serialised without padding.
    pub fn dump_dtb(&self, out: &Path) -> Result<(), String> {
        match self.flavour {
            Flavour::TwoSmmus => {
                let own = out.with_extension("qemu.dtb");
                self.dump_qemu_dtb(&own)?;
                crate::dtb::describe_two_smmus(&own, out).map(|_| ())
            }
            _ => self.dump_qemu_dtb(out),
        }
    }

    /// Writes the DTB QEMU itself generates for this command line, packed
    /// ([`QemuConfig::dump_dtb`] is the one that describes the machine:
    /// for [`Flavour::TwoSmmus`] QEMU's own leaves an SMMU out).
    pub fn dump_qemu_dtb(&self, out: &Path) -> Result<(), String> {
        let raw = out.with_extension("raw.dtb");
        // QEMU refuses -append without -kernel; the boot's own -append puts
        // the bootargs into whatever DTB it boots with anyway.
        let args = QemuConfig { append: None, ..self.clone() }.machine_args(&format!(",dumpdtb={}", raw.display()));
        let qemu = self.qemu()?;
        let o = qemu.command().args(&args).stdin(Stdio::null()).output().map_err(|e| format!("cannot run {}: {e}", qemu.label()))?;
        if !o.status.success() || !raw.exists() {
            return Err(format!("{} could not dump the DTB: {}", qemu.label(), String::from_utf8_lossy(&o.stderr).trim()));
        }
        crate::dtb::pack(&raw, out)
    }
}

/// What one run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// QEMU's exit status (the kernel's semihosting status), if it exited.
    pub status: Option<i32>,
    /// Killed after the timeout.
    pub timed_out: bool,
    /// Decoded kernel log.
    pub log: Vec<LogLine>,
    /// Frames that did not decode.
    pub malformed_frames: usize,
    /// QEMU's SMMU trace.
    pub trace: Trace,
    /// QEMU's own stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
    /// The firmware's text before it handed over (see [`Firmware`]), or all
    /// of the serial output when it never did.
    pub console: String,
    /// The DTB the machine booted with (QEMU's own, dumped for the checks,
    /// when the run gave none), for [`crate::machine::Machine::of`].
    pub dtb: Option<PathBuf>,
    /// Why the firmware script did not complete (a step's text never came,
    /// or the firmware never handed over to the kernel).
    pub console_error: Option<String>,
}

impl Outcome {
    /// The whole log as text, one line per message.
    pub fn log_text(&self) -> String {
        self.log.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Splits the serial output into the firmware's text and the kernel's
/// defmt stream, and plays the firmware script against the text.
struct Serial<'d> {
    stream: LineStream<'d>,
    /// The firmware's text so far (empty without a firmware).
    text: Vec<u8>,
    /// The text that ends the firmware's output, while it has not come yet
    /// (`None` once it has, and without a firmware: all bytes are log).
    handover: Option<Vec<u8>>,
    /// Script steps not yet done, and the deadline of the first (or, once
    /// they are done, of the hand-over).
    script: std::collections::VecDeque<Expect>,
    deadline: Instant,
    handover_within: Duration,
    /// The current step's text is searched from here (after the last input).
    search_from: usize,
    /// [`Console::Text`]: every byte is text, cut into lines.
    text_console: bool,
    /// Where in `text` the line not yet complete starts.
    line_start: usize,
}

impl<'d> Serial<'d> {
    fn new(decoder: &'d Decoder, firmware: Option<&Firmware>, console: Console) -> Serial<'d> {
        let script: std::collections::VecDeque<Expect> = firmware.map(|f| f.script.iter().cloned().collect()).unwrap_or_default();
        let handover_within = firmware.map_or(Duration::ZERO, |f| f.handover_within);
        let deadline = Instant::now() + script.front().map_or(handover_within, |e| e.within);
        Serial {
            stream: decoder.stream(),
            text: Vec::new(),
            handover: firmware.map(|f| f.handover.as_bytes().to_vec()),
            script,
            deadline,
            handover_within,
            search_from: 0,
            text_console: console == Console::Text,
            line_start: 0,
        }
    }

    /// [`Console::Text`]: the complete lines received so far and not yet
    /// returned (all of them, the last one too, when `flush`).
    fn text_lines(&mut self, flush: bool) -> Vec<LogLine> {
        split_lines(&self.text, &mut self.line_start, flush)
    }

    /// Takes received bytes; returns complete log lines.
    fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        if self.text_console {
            self.text.extend_from_slice(bytes);
            return self.text_lines(false);
        }
        let Some(marker) = &self.handover else { return self.stream.feed(bytes) };
        let Some(rest) = append_until(&mut self.text, bytes, marker) else { return Vec::new() };
        self.handover = None;
        self.stream.feed(&rest)
    }

    /// Types the next script input once its text has appeared. Returns an
    /// error when a step's wait, or the wait for the hand-over after the
    /// last step, ran out.
    fn play(&mut self, stdin: &mut Option<std::process::ChildStdin>) -> Result<(), String> {
        if self.script.is_empty() {
            return match &self.handover {
                Some(marker) if Instant::now() > self.deadline => Err(format!(
                    "the firmware did not hand over to the kernel (print {:?}) within {} s of the script's last input",
                    String::from_utf8_lossy(marker),
                    self.handover_within.as_secs()
                )),
                _ => Ok(()),
            };
        }
        while let Some(step) = self.script.front() {
            if self.handover.is_none() {
                return Err(format!("the firmware handed over to the kernel before printing {:?} (script step {:?})", step.wait_for, step.send.trim_end()));
            }
            if find(&self.text[self.search_from..], step.wait_for.as_bytes()).is_none() {
                if Instant::now() > self.deadline {
                    return Err(format!(
                        "the firmware did not print {:?} within {} s (script step {:?})",
                        step.wait_for,
                        step.within.as_secs(),
                        step.send.trim_end()
                    ));
                }
                return Ok(());
            }
            let pipe = stdin.as_mut().ok_or("QEMU's stdin is not a pipe")?;
            pipe.write_all(step.send.as_bytes()).and_then(|_| pipe.flush()).map_err(|e| format!("cannot type at the firmware: {e}"))?;
            self.search_from = self.text.len();
            self.script.pop_front();
            self.deadline = Instant::now() + self.script.front().map_or(self.handover_within, |e| e.within);
        }
        Ok(())
    }
}

/// The complete lines of `text` from `*start` on (and the incomplete last
/// one when `flush`); moves `*start` past them.
fn split_lines(text: &[u8], start: &mut usize, flush: bool) -> Vec<LogLine> {
    let mut out = Vec::new();
    while let Some(n) = text[*start..].iter().position(|b| *b == b'\n') {
        out.push(text_line(&text[*start..*start + n]));
        *start += n + 1;
    }
    if flush && *start < text.len() {
        out.push(text_line(&text[*start..]));
        *start = text.len();
    }
    out
}

/// One line of a [`Console::Text`] console: `[    0.196587] message`
/// (Linux's printk time) gets its timestamp.
fn text_line(bytes: &[u8]) -> LogLine {
    let line = String::from_utf8_lossy(bytes).trim_end_matches('\r').to_string();
    let stamped = line.strip_prefix('[').and_then(|r| r.split_once("] ")).and_then(|(t, rest)| {
        let (secs, frac) = t.trim().split_once('.')?;
        let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        Some((secs.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?, rest.to_string()))
    });
    match stamped {
        Some((micros, message)) => LogLine { micros: Some(micros), level: "TEXT".into(), message },
        None => LogLine { micros: None, level: "TEXT".into(), message: line },
    }
}

/// Appends `bytes` to `text`; once `text` holds `marker` (which may arrive
/// split across calls), cuts `text` right after it and returns what follows.
fn append_until(text: &mut Vec<u8>, bytes: &[u8], marker: &[u8]) -> Option<Vec<u8>> {
    let from = text.len().saturating_sub(marker.len());
    text.extend_from_slice(bytes);
    let at = from + find(&text[from..], marker)? + marker.len();
    Some(text.split_off(at))
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Boots `kernel` under `cfg`, calling `on_line` for each log line as it
/// arrives.
pub fn run(kernel: &Path, decoder: &Decoder, cfg: &QemuConfig, on_line: &mut dyn FnMut(&LogLine)) -> Result<Outcome, String> {
    if let Some(t) = &cfg.trace {
        let _ = std::fs::remove_file(t);
    }
    let start = Instant::now();
    let qemu = cfg.qemu()?;
    let mut child = qemu
        .command()
        .args(cfg.args(kernel))
        .stdin(if cfg.firmware.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.label()))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut serial = Serial::new(decoder, cfg.firmware.as_ref(), cfg.console);
    let mut out = Outcome::default();
    let deadline = start + cfg.timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => {
                for line in serial.feed(&bytes) {
                    on_line(&line);
                    out.log.push(line);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Err(e) = serial.play(&mut stdin) {
            out.console_error = Some(e);
            let _ = child.kill();
            break;
        }
        if Instant::now() > deadline {
            out.timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    drop(stdin);
    let _ = reader.join();
    while let Ok(bytes) = rx.try_recv() {
        for line in serial.feed(&bytes) {
            on_line(&line);
            out.log.push(line);
        }
    }
    if serial.text_console {
        for line in serial.text_lines(true) {
            on_line(&line);
            out.log.push(line);
        }
        out.console = String::from_utf8_lossy(&serial.text).into_owned();
    }
    out.status = if out.timed_out || out.console_error.is_some() { None } else { status.code() };
    out.malformed_frames = serial.stream.malformed;
    if let Some(fw) = &cfg.firmware {
        if out.console_error.is_none() && serial.handover.is_some() {
            out.console_error = Some(format!("the firmware never handed over to the kernel (no {:?})", fw.handover));
        }
        out.console = String::from_utf8_lossy(&serial.text).into_owned();
        if let Some(path) = &fw.transcript {
            let _ = std::fs::write(path, &serial.text);
        }
    }
    out.stderr = err_reader.join().unwrap_or_default();
    if let Some(t) = &cfg.trace {
        out.trace = Trace::read(t).with_catalogue(qemu.trace_points.clone());
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firmware_text_ends_at_the_marker_even_when_split() {
        let marker = b"Starting kernel ...\r\n\r\n";
        let mut text = Vec::new();
        assert_eq!(append_until(&mut text, b"=> booti\r\n\r\nStarting ker", marker), None);
        assert_eq!(append_until(&mut text, b"nel ...\r\n\r", marker), None);
        assert_eq!(append_until(&mut text, b"\n\x00\x21frame", marker), Some(b"\x00\x21frame".to_vec()));
        assert_eq!(text, b"=> booti\r\n\r\nStarting kernel ...\r\n\r\n");
    }

    #[test]
    fn a_text_console_becomes_lines_with_printk_times() {
        let mut text = b"[    0.196587] Trying to unpack".to_vec();
        let mut start = 0;
        assert!(split_lines(&text, &mut start, false).is_empty());
        text.extend_from_slice(b" rootfs\r\nbulkhead-init: init ticks=5\npartial");
        let l = split_lines(&text, &mut start, false);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].micros, l[0].message.as_str()), (Some(196_587), "Trying to unpack rootfs"));
        assert_eq!((l[1].micros, l[1].message.as_str(), l[1].level.as_str()), (None, "bulkhead-init: init ticks=5", "TEXT"));
        let rest = split_lines(&text, &mut start, true);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].message, "partial");
        assert!(split_lines(&text, &mut start, true).is_empty());
    }

    #[test]
    fn a_linux_boot_gets_its_initrd_and_deterministic_flags() {
        let cfg = QemuConfig { initrd: Some("initramfs.cpio".into()), deterministic: true, ..QemuConfig::default() };
        let a = cfg.args(Path::new("Image"));
        assert!(a.windows(2).any(|w| w[0] == "-initrd" && w[1] == "initramfs.cpio"));
        assert!(a.windows(2).any(|w| w[0] == "-seed" && w[1] == "1"));
        assert!(a.iter().any(|x| x.contains("dtb-randomness=off")));
        assert!(a.iter().any(|x| x.contains("clock=vm")));
        let plain = QemuConfig::default().args(Path::new("Image"));
        assert!(!plain.iter().any(|x| x == "-seed" || x == "-initrd" || x.contains("dtb-randomness")));
    }

    #[test]
    fn a_firmware_boots_instead_of_the_kernel() {
        let fw = Firmware {
            bios: "u-boot.bin".into(),
            script: vec![Expect::new("=> ", "booti\n", Duration::from_secs(1))],
            handover: "Starting kernel ...".into(),
            handover_within: Duration::from_secs(1),
            transcript: None,
        };
        let args = QemuConfig { firmware: Some(fw), ..QemuConfig::default() }.args(Path::new("kernel.elf"));
        assert!(args.windows(2).any(|w| w[0] == "-bios" && w[1] == "u-boot.bin"));
        assert!(!args.iter().any(|a| a == "-kernel"));
        assert!(QemuConfig::default().args(Path::new("kernel.elf")).windows(2).any(|w| w[0] == "-kernel" && w[1] == "kernel.elf"));
    }
}
