//! Checks the tools bulkhead needs and installs what is missing when it can
//! (as root on Debian), otherwise says exactly what to install.

use bulkhead_tests::debian::{debian_archive, os_release};
use std::process::Command;

/// Lowest QEMU with the SMMU flavours the tests use (stage 2, virt-9.1).
const QEMU_MIN: (u32, u32) = (10, 0);
/// The kernel's target.
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

fn have(cmd: &str, arg: &str) -> Option<String> {
    let o = Command::new(cmd).arg(arg).output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

/// `(major, minor)` from `qemu-system-aarch64 --version`.
fn qemu_version() -> Option<(u32, u32)> {
    let out = have("qemu-system-aarch64", "--version")?;
    let v = out.split("version ").nth(1)?;
    let mut it = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn apt(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: apt-get {}", args.join(" "));
    // Its progress goes to stderr: stdout is the command's own report
    // (`check` prints the plan there).
    let st = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({st})", args.join(" ")))
    }
}

/// Installs QEMU >= 10.0. On bookworm it comes from bookworm-backports:
/// when the machine's APT sources lack that suite, APT is pointed at a
/// private source list and package lists under the project's cache for
/// this one install (`-o Dir::Etc::SourceList=... -o Dir::State::Lists=...`),
/// so the machine's APT configuration is left as it was.
fn install_qemu() -> Result<(), String> {
    let codename = os_release("VERSION_CODENAME").unwrap_or_default();
    if codename == "bookworm" {
        if debian_archive("bookworm-backports").is_some() {
            apt(&["update", "-q"])?;
            return apt(&["install", "-y", "-q", "-t", "bookworm-backports", "qemu-system-arm"]);
        }
        let (uri, key) = debian_archive("bookworm").ok_or("no APT source for bookworm found to derive bookworm-backports from")?;
        let dir = bulkhead_tests::work_dir().join("cache").join("apt");
        let lists = dir.join("lists");
        std::fs::create_dir_all(lists.join("partial")).map_err(|e| format!("cannot create {}: {e}", lists.display()))?;
        let list = dir.join("sources.list");
        let opts = key.map(|k| format!("[signed-by={k}] ")).unwrap_or_default();
        std::fs::write(&list, format!("deb {opts}{uri} bookworm main\ndeb {opts}{uri} bookworm-backports main\n"))
            .map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        let private = [
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
        ];
        let with = |args: &[&str]| {
            let mut v: Vec<&str> = Vec::new();
            for o in &private {
                v.extend(["-o", o.as_str()]);
            }
            v.extend_from_slice(args);
            apt(&v)
        };
        with(&["update", "-q"])?;
        with(&["install", "-y", "-q", "-t", "bookworm-backports", "qemu-system-arm"])
    } else {
        apt(&["update", "-q"])?;
        apt(&["install", "-y", "-q", "qemu-system-arm"])
    }
}

fn can_install() -> bool {
    is_root() && os_release("ID").as_deref() == Some("debian") && have("apt-get", "--version").is_some()
}

/// Debian's package with the U-Boot the `uboot-*` scenarios boot.
const U_BOOT_PACKAGE: &str = "u-boot-qemu";

/// Makes sure QEMU ≥ 10.0, dtc and fdtoverlay, and Debian's U-Boot for
/// `qemu_arm64` are present.
pub fn ensure_host_tools() -> Result<(), String> {
    let qemu_ok = qemu_version().is_some_and(|v| v >= QEMU_MIN);
    let dtc_ok = have("dtc", "--version").is_some() && have("fdtoverlay", "--help").is_some();
    let u_boot = bulkhead_tests::scenarios::U_BOOT;
    let u_boot_ok = std::path::Path::new(u_boot).exists();
    if qemu_ok && dtc_ok && u_boot_ok {
        return Ok(());
    }
    let want = format!(
        "QEMU >= 10.0 (Debian bookworm: `apt-get install -t bookworm-backports qemu-system-arm` after adding \
         the bookworm-backports suite; trixie or later: `apt-get install qemu-system-arm`), dtc/fdtoverlay \
         (`apt-get install device-tree-compiler`) and {u_boot} (`apt-get install {U_BOOT_PACKAGE}`)"
    );
    if !can_install() {
        return Err(format!("missing prerequisites and cannot install them here (need root on Debian): install {want}"));
    }
    if !dtc_ok {
        apt(&["update", "-q"])?;
        apt(&["install", "-y", "-q", "device-tree-compiler"])?;
    }
    if !u_boot_ok {
        apt(&["update", "-q"])
            .and_then(|()| apt(&["install", "-y", "-q", U_BOOT_PACKAGE]))
            .map_err(|e| format!("cannot install Debian's {U_BOOT_PACKAGE} (for {u_boot}): {e}"))?;
        if !std::path::Path::new(u_boot).exists() {
            return Err(format!("{u_boot} is still missing after installing {U_BOOT_PACKAGE}"));
        }
    }
    if !qemu_ok {
        install_qemu()?;
    }
    match qemu_version() {
        Some(v) if v >= QEMU_MIN => Ok(()),
        Some((a, b)) => Err(format!("qemu-system-aarch64 is {a}.{b} after installing; need {want}")),
        None => Err(format!("qemu-system-aarch64 still missing; install {want}")),
    }
}

/// Debian's package with Graphviz's `dot`, which draws `check --dot`'s SVG.
pub const GRAPHVIZ_PACKAGE: &str = "graphviz";

/// Makes sure Graphviz's `dot` is present: installed when missing if it
/// can be (as root on Debian); otherwise the error says what to install.
pub fn ensure_graphviz() -> Result<(), String> {
    if have("dot", "-V").is_some() {
        return Ok(());
    }
    if !can_install() {
        return Err(format!(
            "Graphviz `dot` is not installed and cannot be installed here (need root on Debian): install Graphviz \
             (`apt-get install {GRAPHVIZ_PACKAGE}`)"
        ));
    }
    apt(&["update", "-q"])
        .and_then(|()| apt(&["install", "-y", "-q", GRAPHVIZ_PACKAGE]))
        .map_err(|e| format!("cannot install Debian's {GRAPHVIZ_PACKAGE} (for `dot`): {e}"))?;
    match have("dot", "-V") {
        Some(_) => Ok(()),
        None => Err(format!("`dot` is still missing after installing {GRAPHVIZ_PACKAGE}")),
    }
}

/// Makes sure the kernel target's standard library is installed.
pub fn ensure_target() -> Result<(), String> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if std::path::Path::new(&sysroot).join("lib/rustlib").join(TARGET).exists() {
        return Ok(());
    }
    eprintln!("xtask: rustup target add {TARGET}");
    let st = Command::new("rustup").args(["target", "add", TARGET]).status();
    match st {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("the Rust target {TARGET} is missing: run `rustup target add {TARGET}`")),
    }
}
