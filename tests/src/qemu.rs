//! Building QEMU command lines and running the kernel under them.

use crate::log::{Decoder, LogLine};
use crate::trace::Trace;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";

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
}

impl Flavour {
    /// The `-machine` value.
    pub fn machine(self) -> &'static str {
        match self {
            Flavour::Virt => "virt,virtualization=on,iommu=smmuv3,gic-version=3",
            Flavour::Stage1 | Flavour::Stage2 => "virt-9.1,virtualization=on,iommu=smmuv3,gic-version=3",
            Flavour::NoVirtualization => "virt,iommu=smmuv3,gic-version=3",
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
        }
    }
}

impl QemuConfig {
    /// The machine-describing arguments, shared by boots and DTB dumps.
    fn machine_args(&self, machine_suffix: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-machine".into(),
            format!("{}{}", self.flavour.machine(), machine_suffix),
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
        let kernel = self.kernel.as_deref().unwrap_or(kernel);
        a.extend(["-kernel".into(), kernel.display().to_string()]);
        if let Some(dtb) = &self.dtb {
            a.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        a.extend(
            ["-serial", "stdio", "-monitor", "none", "-semihosting-config", "enable=on,target=native", "-no-reboot"]
                .map(String::from),
        );
        if self.icount {
            a.extend(["-icount".into(), "shift=0,sleep=off".into()]);
        }
        if let Some(t) = &self.trace {
            a.extend(
                ["-trace", "smmuv3_*", "-trace", "smmu_*", "-d", "guest_errors", "-D"].map(String::from),
            );
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
        let raw = out.with_extension("raw.dtb");
        // QEMU refuses -append without -kernel; the boot's own -append puts
        // the bootargs into whatever DTB it boots with anyway.
        let args = QemuConfig { append: None, ..self.clone() }.machine_args(&format!(",dumpdtb={}", raw.display()));
        let o = Command::new(QEMU).args(&args).output().map_err(|e| format!("cannot run {QEMU}: {e}"))?;
        if !o.status.success() || !raw.exists() {
            return Err(format!("{QEMU} could not dump the DTB: {}", String::from_utf8_lossy(&o.stderr).trim()));
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
}

impl Outcome {
    /// The whole log as text, one line per message.
    pub fn log_text(&self) -> String {
        self.log.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Boots `kernel` under `cfg`, calling `on_line` for each log line as it
/// arrives.
pub fn run(kernel: &Path, decoder: &Decoder, cfg: &QemuConfig, on_line: &mut dyn FnMut(&LogLine)) -> Result<Outcome, String> {
    if let Some(t) = &cfg.trace {
        let _ = std::fs::remove_file(t);
    }
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(cfg.args(kernel))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
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
    let mut stream = decoder.stream();
    let mut out = Outcome::default();
    let deadline = start + cfg.timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => {
                for line in stream.feed(&bytes) {
                    on_line(&line);
                    out.log.push(line);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            out.timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    let _ = reader.join();
    while let Ok(bytes) = rx.try_recv() {
        for line in stream.feed(&bytes) {
            on_line(&line);
            out.log.push(line);
        }
    }
    out.status = if out.timed_out { None } else { status.code() };
    out.malformed_frames = stream.malformed;
    out.stderr = err_reader.join().unwrap_or_default();
    if let Some(t) = &cfg.trace {
        out.trace = Trace::read(t);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}
