//! What the guest runs that Debian does not ship, built with Debian's own
//! toolchain from the cache: the probe module (`tests/guest/probe`, EL1:
//! SMC/HVC and device accesses chosen by its parameters) against the
//! kernel's `linux-headers`, and the counter helper (`tests/guest/ticks.c`,
//! a static EL0 program without a C library).
//!
//! The cross compiler is the one the kernel was built with
//! ([`super::Guest::gcc`]), unpacked under the cache's root: it runs from
//! there with that root's `usr/bin` first on `PATH` and its host libraries
//! on `LD_LIBRARY_PATH`. Each product is rebuilt only when its sources or
//! the kernel change (the build directory keeps a copy of the sources it
//! was built from).

use super::{cache_dir, Guest};
use crate::debian::run_logged;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cross tools' prefix.
const CROSS: &str = "aarch64-linux-gnu-";
/// The module's sources, in `tests/guest/probe`.
const PROBE_SOURCES: &[&str] = &["Kbuild", "bulkhead_probe.c"];
/// The module it builds.
pub const PROBE_MODULE: &str = "bulkhead_probe.ko";
/// The helper's source, in `tests/guest`.
const TICKS_SOURCE: &str = "ticks.c";
/// The VFIO helper's source, in `tests/guest`.
const VFIO_CLAIM_SOURCE: &str = "vfio_claim.c";
/// Records which kernel a build directory was built for.
const STAMP: &str = "built-for";

/// `g` with its probe module and counter helper built.
pub fn all(mut g: Guest) -> Result<Guest, String> {
    g.probe = probe(&g)?;
    g.ticks = ticks(&g)?;
    g.vfio_claim = vfio_claim(&g)?;
    Ok(g)
}

/// The guest sources' directory (`tests/guest`).
fn sources() -> PathBuf {
    crate::workspace_root().join("tests").join("guest")
}

/// A command that runs `program` (a tool of the cache's root when it has
/// one, else the machine's) with the root's tools and libraries first.
fn tool(g: &Guest, program: &str) -> Command {
    let bin = g.root.join("usr/bin");
    let own = bin.join(program);
    let mut c = Command::new(if own.exists() { own } else { PathBuf::from(program) });
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    if let Ok(p) = std::env::join_paths(dirs) {
        c.env("PATH", p);
    }
    let mut libs = host_library_dirs(&g.root);
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        libs.extend(std::env::split_paths(&old));
    }
    if let Ok(p) = std::env::join_paths(libs) {
        c.env("LD_LIBRARY_PATH", p);
    }
    c
}

/// The root's library directories for the host (`usr/lib/x86_64-linux-gnu`
/// and the like; not the arm64 ones).
fn host_library_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for base in ["usr/lib", "lib"] {
        let Ok(d) = std::fs::read_dir(root.join(base)) else { continue };
        for e in d.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("-linux-gnu") && !name.starts_with("aarch64") && e.path().is_dir() {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// Whether `out` holds `product` built from these `files` of `src` for `g`.
fn up_to_date(g: &Guest, src: &Path, files: &[&str], out: &Path, product: &str) -> bool {
    let same = |a: &Path, b: &Path| matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y);
    out.join(product).exists()
        && std::fs::read_to_string(out.join(STAMP)).is_ok_and(|s| s == g.release)
        && files.iter().all(|f| same(&src.join(f), &out.join(f)))
}

/// Empties `out` and copies `files` of `src` into it.
fn fresh_copy(src: &Path, files: &[&str], out: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for f in files {
        std::fs::copy(src.join(f), out.join(f)).map_err(|e| format!("cannot copy {} into {}: {e}", src.join(f).display(), out.display()))?;
    }
    Ok(())
}

/// The probe module, built out of tree against the kernel's headers
/// (Debian's `linux-headers-<release>` with its `-common` sources and
/// `linux-kbuild` tools), debug information stripped.
pub fn probe(g: &Guest) -> Result<PathBuf, String> {
    let src = sources().join("probe");
    let out = cache_dir().join("build").join("probe");
    if up_to_date(g, &src, PROBE_SOURCES, &out, PROBE_MODULE) {
        return Ok(out.join(PROBE_MODULE));
    }
    fresh_copy(&src, PROBE_SOURCES, &out)?;
    let log = out.join("build.log");
    let started = std::time::Instant::now();
    let headers = g.root.join("usr/src").join(format!("linux-headers-{}", g.release));
    let abi = g.release.strip_suffix(&format!("-{}", super::ARCH)).unwrap_or(&g.release);
    let common = g.root.join("usr/src").join(format!("linux-headers-{abi}-common"));
    // Debian's headers Makefile includes the -common one by its absolute
    // /usr/src path; naming the -common Makefile directly keeps the build
    // inside the cache (kbuild's objtree is the directory make runs in).
    let mut make = tool(g, "make");
    make.arg("-C").arg(&headers).arg("-f").arg(common.join("Makefile")).arg(format!("M={}", out.display())).arg("modules");
    run_logged(&format!("building the probe module for {}", g.release), &mut make, &log)?;
    let built = out.join(PROBE_MODULE);
    let stripped = out.join("stripped.ko");
    run_logged("stripping the probe module", tool(g, &format!("{CROSS}strip")).arg("--strip-debug").arg("-o").arg(&stripped).arg(&built), &log)?;
    std::fs::rename(&stripped, &built).map_err(|e| format!("cannot rename {}: {e}", stripped.display()))?;
    let bytes = std::fs::read(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
    let vermagic = super::modinfo(&bytes, "vermagic").map_err(|e| format!("{}: {e}", built.display()))?;
    if vermagic.first().is_none_or(|v| v.split_whitespace().next() != Some(g.release.as_str())) {
        return Err(format!("{} was built for {vermagic:?}, not {}", built.display(), g.release));
    }
    std::fs::write(out.join(STAMP), &g.release).map_err(|e| e.to_string())?;
    eprintln!("harness: built {} for {} in {:.1} s ({} bytes)", PROBE_MODULE, g.release, started.elapsed().as_secs_f64(), bytes.len());
    Ok(built)
}

/// The counter helper: a static arm64 program, no C library.
pub fn ticks(g: &Guest) -> Result<PathBuf, String> {
    helper(g, TICKS_SOURCE, "ticks")
}

/// The VFIO helper (`tests/guest/vfio_claim.c`): claims a VFIO group for a
/// moment, so Linux moves it to its blocking domain and back.
pub fn vfio_claim(g: &Guest) -> Result<PathBuf, String> {
    helper(g, VFIO_CLAIM_SOURCE, "vfio_claim")
}

/// A static arm64 program without a C library, from one source in `tests/guest`.
fn helper(g: &Guest, source: &str, name: &str) -> Result<PathBuf, String> {
    let src = sources();
    let out = cache_dir().join("build").join(name);
    if up_to_date(g, &src, &[source], &out, name) {
        return Ok(out.join(name));
    }
    fresh_copy(&src, &[source], &out)?;
    let log = out.join("build.log");
    let exe = out.join(name);
    let mut cc = tool(g, &format!("{CROSS}{}", g.gcc));
    cc.args(["-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fno-pie", "-no-pie", "-O2", "-Wall", "-Werror", "-s", "-o"])
        .arg(&exe)
        .arg(out.join(source));
    run_logged(&format!("building the {name} helper"), &mut cc, &log)?;
    std::fs::write(out.join(STAMP), &g.release).map_err(|e| e.to_string())?;
    Ok(exe)
}
