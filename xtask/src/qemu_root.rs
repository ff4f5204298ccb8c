//! QEMU 11.1 for the scenarios' second pass, without touching the
//! machine's QEMU or its APT configuration.
//!
//! Debian ships QEMU 11.1 only in `trixie-backports`, which does not install
//! on bookworm. So xtask keeps a minimal trixie root of its own under
//! `target/bulkhead/cache/trixie-qemu/`: `debootstrap --variant=minbase
//! trixie` from the machine's own Debian mirror (debootstrap itself is
//! unpacked from Debian's package into the cache when the machine has none),
//! then `qemu-system-arm` from `trixie-backports` installed inside that root
//! with its own APT. QEMU runs from it through `unshare --mount` + `chroot`,
//! with only the workspace (kernel, DTBs, traces), `/dev`, `/proc` and
//! Debian's U-Boot bound in: the mounts live in a private mount namespace
//! that ends with QEMU, so nothing stays mounted. Made once (about 30 s and
//! 60 MB of downloads), reused after.

use crate::prereq;
use bulkhead_tests::debian::{debian_archive, run_logged};
use bulkhead_tests::qemu::Qemu;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The suite and the backports suite QEMU comes from.
const SUITE: &str = "trixie";
const BACKPORTS: &str = "trixie-backports";
/// The QEMU the second pass wants.
pub const WANT: (u32, u32) = (11, 1);
/// Written last: the root is complete.
const READY: &str = ".bulkhead-ready";

/// Where the root and the downloads are kept.
fn cache() -> PathBuf {
    bulkhead_tests::work_dir().join("cache")
}

/// The root.
pub fn root() -> PathBuf {
    cache().join("trixie-qemu")
}

/// The shell script that enters `root` in a private mount namespace and
/// runs its `$@` there: the workspace at its own path (every file the
/// harness hands QEMU lives in it), `/dev`, `/proc`, and Debian's U-Boot
/// when the machine has it.
const ENTER: &str = r#"set -e
root=$1; ws=$2; shift 2
mkdir -p "$root$ws" "$root/dev" "$root/proc"
mount --bind "$ws" "$root$ws"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
if [ -d /usr/lib/u-boot ]; then mkdir -p "$root/usr/lib/u-boot"; mount --bind /usr/lib/u-boot "$root/usr/lib/u-boot"; fi
if [ -f /etc/resolv.conf ]; then cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true; fi
exec chroot "$root" "$@"
"#;

/// A command that runs `program` inside the root.
fn inside(program: &[&str]) -> Vec<String> {
    let ws = bulkhead_tests::workspace_root();
    let mut v: Vec<String> =
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", ENTER, "bulkhead-root"].iter().map(|s| s.to_string()).collect();
    v.push(root().display().to_string());
    v.push(ws.display().to_string());
    v.extend(program.iter().map(|s| s.to_string()));
    v
}

fn command(v: &[String]) -> Command {
    let mut c = Command::new(&v[0]);
    c.args(&v[1..]);
    c
}

/// The root's QEMU, set up first when it is not there yet.
pub fn ensure() -> Result<Qemu, String> {
    if !root().join(READY).exists() {
        set_up()?;
    }
    let q = Qemu::probe(inside(&["qemu-system-aarch64"]))?;
    if !q.at_least(WANT.0, WANT.1) {
        return Err(format!("the {SUITE} root at {} has {}, expected {}.{} or later", root().display(), q.label(), WANT.0, WANT.1));
    }
    Ok(q)
}

/// debootstrap: the machine's, or Debian's package unpacked into the cache.
fn debootstrap(log: &Path) -> Result<(PathBuf, Option<PathBuf>), String> {
    if let Ok(o) = Command::new("sh").args(["-c", "command -v debootstrap"]).output() {
        let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !p.is_empty() {
            return Ok((PathBuf::from(p), None));
        }
    }
    let dir = cache().join("debootstrap");
    let script = dir.join("usr/sbin/debootstrap");
    if !script.exists() {
        let dl = cache().join("download");
        std::fs::create_dir_all(&dl).map_err(|e| format!("cannot create {}: {e}", dl.display()))?;
        let download =
            |log: &Path| run_logged("apt-get download debootstrap", Command::new("apt-get").args(["download", "-q", "debootstrap"]).current_dir(&dl), log);
        if download(log).is_err() {
            // The package lists may be missing or stale: refresh them (APT's
            // state, not its configuration) and try once more.
            run_logged("apt-get update", Command::new("apt-get").args(["update", "-q"]), log)?;
            download(log)?;
        }
        let deb = std::fs::read_dir(&dl)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("debootstrap_")))
            .ok_or("apt-get download debootstrap left no .deb")?;
        run_logged("unpacking debootstrap", Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir), log)?;
    }
    Ok((script, Some(dir.join("usr/share/debootstrap"))))
}

/// Makes the root: debootstrap, then QEMU from backports inside it.
fn set_up() -> Result<(), String> {
    if !prereq::is_root() {
        return Err(format!(
            "QEMU {}.{} is not set up and making its {SUITE} root needs root (debootstrap, chroot, unshare --mount): run `cargo xtask test` as root once",
            WANT.0, WANT.1
        ));
    }
    let (mirror, _) =
        debian_archive("bookworm").or_else(|| debian_archive(SUITE)).ok_or("no Debian mirror in this machine's APT sources to debootstrap trixie from")?;
    std::fs::create_dir_all(cache()).map_err(|e| format!("cannot create {}: {e}", cache().display()))?;
    let log = cache().join("trixie-qemu.log");
    let _ = std::fs::remove_file(&log);
    let started = std::time::Instant::now();
    eprintln!("xtask: setting up QEMU {}.{}: a minimal {SUITE} root in {} from {mirror} (log: {})", WANT.0, WANT.1, root().display(), log.display());
    let (script, dir) = debootstrap(&log)?;
    let _ = std::fs::remove_dir_all(root());
    let mut c = Command::new(&script);
    if let Some(d) = &dir {
        c.env("DEBOOTSTRAP_DIR", d);
    }
    c.args(["--variant=minbase", SUITE]).arg(root()).arg(&mirror);
    run_logged("debootstrap", &mut c, &log)?;
    let list = root().join("etc/apt/sources.list.d").join(format!("{BACKPORTS}.list"));
    std::fs::write(&list, format!("deb {mirror} {BACKPORTS} main\n")).map_err(|e| format!("cannot write {}: {e}", list.display()))?;
    run_logged("apt-get update (in the root)", &mut command(&inside(&["apt-get", "update", "-q"])), &log)?;
    run_logged(
        "installing qemu-system-arm from trixie-backports (in the root)",
        &mut command(&inside(&["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", BACKPORTS, "qemu-system-arm"])),
        &log,
    )?;
    run_logged("apt-get clean (in the root)", &mut command(&inside(&["apt-get", "clean"])), &log)?;
    std::fs::write(root().join(READY), "").map_err(|e| format!("cannot mark the root ready: {e}"))?;
    eprintln!("xtask: QEMU root ready in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
