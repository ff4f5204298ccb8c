//! Debian's arm64 Linux for the scenarios that boot an unmodified Linux,
//! bare on QEMU or in a partition.
//!
//! Everything comes from Debian's archive through a private APT state
//! ([`crate::debian::PrivateApt`]) into `target/bulkhead/cache/linux-arm64/`:
//! the newest `linux-image-*-arm64-unsigned` of the machine's Debian release
//! (its updates, security and backports suites included) with its modules
//! tree, `busybox-static:arm64`, the kernel's `linux-headers-*-arm64` and
//! `-common`, and, for the host, Debian's cross compiler of the version the
//! kernel was built with, `linux-kbuild-*` and `make`, as far as the machine
//! lacks them. Each `.deb` is unpacked with `dpkg-deb -x` into `root/`; the
//! machine's APT configuration and dpkg database stay as they were. Fetched
//! once (the manifest `root/.bulkhead-ready` records what), reused after;
//! delete the directory to fetch the newest again.
//!
//! [`build`] compiles the EL1 probe module (`tests/guest/probe`) and the
//! counter helper (`tests/guest/ticks.c`) with that toolchain; [`initramfs`]
//! writes the newc archive a scenario boots, [`modules`] puts Debian's
//! modules into it and [`disk`] a disk's pattern and I/O script; [`console`]
//! reads what the guest printed.

pub mod build;
pub mod console;
pub mod disk;
pub mod initramfs;
pub mod modules;

use crate::debian::{self, PrivateApt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Debian's architecture of the guest.
pub const ARCH: &str = "arm64";
/// Written last into `root/`: the fetch is complete, and what it fetched.
const MANIFEST: &str = ".bulkhead-ready";

/// Where the pieces are kept.
pub fn cache_dir() -> PathBuf {
    crate::work_dir().join("cache").join("linux-arm64")
}

/// Debian's arm64 Linux, its modules, busybox and the helpers built for it.
#[derive(Clone, Debug)]
pub struct Guest {
    /// The kernel release, as `uname -r` prints it (`6.12.118+deb12-arm64`).
    pub release: String,
    /// The kernel's package (`linux-image-6.12.118+deb12-arm64-unsigned`).
    pub package: String,
    /// Its Debian version (`6.12.118-1~deb12u1`).
    pub version: String,
    /// busybox-static's Debian version.
    pub busybox_version: String,
    /// The compiler the kernel was built with (`gcc-12`), cross for the host.
    pub gcc: String,
    /// The kernel: an uncompressed arm64 `Image` (Debian's `vmlinuz` is one).
    pub image: PathBuf,
    /// The kernel's configuration (`/boot/config-*`).
    pub config: PathBuf,
    /// Its modules tree (`lib/modules/<release>`), `.ko.xz` files.
    pub modules: PathBuf,
    /// The static arm64 busybox.
    pub busybox: PathBuf,
    /// Where every package was unpacked.
    pub root: PathBuf,
    /// The probe module built for this kernel ([`build::probe`]).
    pub probe: PathBuf,
    /// The counter helper ([`build::ticks`]).
    pub ticks: PathBuf,
    /// The VFIO helper ([`build::vfio_claim`]).
    pub vfio_claim: PathBuf,
}

/// The guest, fetched and built the first time (in this process: once; on
/// this machine: once, then from the cache).
pub fn guest() -> Result<&'static Guest, String> {
    static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();
    GUEST.get_or_init(|| fetch().and_then(build::all)).as_ref().map_err(Clone::clone)
}

/// What a fetch recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Manifest {
    fields: BTreeMap<String, String>,
}

impl Manifest {
    fn parse(text: &str) -> Manifest {
        let fields = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
        Manifest { fields }
    }
    fn get(&self, key: &str) -> Result<&str, String> {
        self.fields.get(key).map(String::as_str).ok_or_else(|| format!("the manifest has no {key}"))
    }
    fn text(&self) -> String {
        self.fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// The guest as the manifest in `root` describes it (helpers not built yet).
fn from_manifest(root: &Path) -> Result<Guest, String> {
    let path = root.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let m = Manifest::parse(&text);
    let release = m.get("release")?.to_string();
    let g = Guest {
        image: root.join("boot").join(format!("vmlinuz-{release}")),
        config: root.join("boot").join(format!("config-{release}")),
        modules: root.join("lib/modules").join(&release),
        busybox: root.join("bin/busybox"),
        package: m.get("package")?.to_string(),
        version: m.get("version")?.to_string(),
        busybox_version: m.get("busybox")?.to_string(),
        gcc: m.get("gcc")?.to_string(),
        root: root.to_path_buf(),
        probe: PathBuf::new(),
        ticks: PathBuf::new(),
        vfio_claim: PathBuf::new(),
        release,
    };
    for p in [&g.image, &g.config, &g.modules, &g.busybox] {
        if !p.exists() {
            return Err(format!("{} is missing (delete {} to fetch again)", p.display(), cache_dir().display()));
        }
    }
    let mut head = [0u8; 64];
    std::io::Read::read_exact(&mut std::fs::File::open(&g.image).map_err(|e| format!("cannot open {}: {e}", g.image.display()))?, &mut head)
        .map_err(|e| format!("cannot read {}: {e}", g.image.display()))?;
    crate::image::Arm64Header::parse(&head).map_err(|e| format!("{} is not an arm64 Image: {e}", g.image.display()))?;
    Ok(g)
}

/// The kernel ABI in a `linux-image-<abi>-arm64-unsigned` name, with the
/// numbers it sorts by: `6.12.118+deb12` → [6, 12, 118, 12]; flavours
/// (`-rt`, `-cloud`, `-16k`) are not this package.
fn kernel_abi(package: &str) -> Option<(String, Vec<u64>)> {
    let abi = package.strip_prefix("linux-image-")?.strip_suffix(&format!("-{ARCH}-unsigned"))?;
    let plain = abi.split_once("+deb").map_or(abi, |(v, d)| if d.chars().all(|c| c.is_ascii_digit()) { v } else { "" });
    if plain.is_empty() || !plain.starts_with(|c: char| c.is_ascii_digit()) || !plain.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-') {
        return None;
    }
    let key = abi.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    Some((abi.to_string(), key))
}

/// What to fetch for the newest kernel that has its headers in the lists.
struct Choice {
    abi: String,
    image: debian::Stanza,
    headers: debian::Stanza,
}

fn choose_kernel(apt: &PrivateApt) -> Result<Choice, String> {
    let mut abis: Vec<(String, Vec<u64>)> = apt.names("linux-image-")?.iter().filter_map(|n| kernel_abi(n)).collect();
    abis.sort_by(|a, b| b.1.cmp(&a.1));
    abis.dedup();
    if abis.is_empty() {
        return Err(format!("Debian's package lists name no linux-image-*-{ARCH}-unsigned"));
    }
    for (abi, _) in &abis {
        let image = apt.show(&format!("linux-image-{abi}-{ARCH}-unsigned:{ARCH}"));
        let headers = apt.show(&format!("linux-headers-{abi}-{ARCH}:{ARCH}"));
        if let (Some(image), Some(headers)) = (image, headers) {
            return Ok(Choice { abi: abi.clone(), image, headers });
        }
    }
    Err(format!("none of the kernels {} has its linux-headers-*-{ARCH} in the lists", abis.iter().map(|a| a.0.as_str()).collect::<Vec<_>>().join(", ")))
}

/// `dpkg --print-architecture`.
fn host_arch() -> Result<String, String> {
    let o = std::process::Command::new("dpkg").arg("--print-architecture").output().map_err(|e| format!("cannot run dpkg: {e}"))?;
    let a = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if a.is_empty() {
        Err("dpkg --print-architecture printed nothing".into())
    } else {
        Ok(a)
    }
}

/// Fetches and unpacks the pieces, or finds them in the cache.
fn fetch() -> Result<Guest, String> {
    let dir = cache_dir();
    let root = dir.join("root");
    if root.join(MANIFEST).exists() {
        return from_manifest(&root);
    }
    for tool in ["apt-get", "apt-cache", "dpkg-deb"] {
        if std::process::Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "Debian's arm64 Linux is not in {} and this machine cannot fetch it: {tool} is missing (a Debian machine's APT fetches it)",
                dir.display()
            ));
        }
    }
    let codename = debian::os_release("VERSION_CODENAME").ok_or("/etc/os-release names no VERSION_CODENAME: not a Debian release")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let log = dir.join("fetch.log");
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    eprintln!("harness: fetching Debian's {ARCH} Linux for {codename} into {} (log: {})", dir.display(), log.display());
    let host = host_arch()?;
    let apt = PrivateApt::new(&dir.join("apt"), &debian::release_suites(&codename), &[host.as_str(), ARCH], &log)?;
    apt.update()?;
    let choice = choose_kernel(&apt)?;
    let deps = choice.headers.depends();
    let find = |what: &str, f: &dyn Fn(&str) -> bool| {
        deps.iter().find(|d| f(d)).cloned().ok_or_else(|| format!("linux-headers-{}-{ARCH} depends on no {what}", choice.abi))
    };
    let common = find("headers -common package", &|d| d.starts_with("linux-headers-") && d.ends_with("-common"))?;
    let kbuild = find("linux-kbuild package", &|d| d.starts_with("linux-kbuild-"))?;
    let gcc = find("gcc-N", &|d| d.strip_prefix("gcc-").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))?;
    let image_package = format!("linux-image-{}-{ARCH}-unsigned", choice.abi);
    let busybox = apt.show(&format!("busybox-static:{ARCH}")).ok_or("the package lists have no busybox-static for arm64")?;
    let version = choice.image.field("Version").unwrap_or("?").to_string();
    eprintln!("harness: {image_package} {version}, {gcc} cross compiler");

    let debs_dir = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs_dir);
    apt.download(
        &[format!("{image_package}:{ARCH}"), format!("linux-headers-{}-{ARCH}:{ARCH}", choice.abi), common, format!("busybox-static:{ARCH}")],
        &debs_dir,
    )?;
    let tools = apt.download_missing(&[format!("{gcc}-aarch64-linux-gnu"), kbuild, "make".into()])?;
    let mut debs = debian::debs_in(&debs_dir)?;
    debs.extend(tools);
    let bytes: u64 = debs.iter().filter_map(|d| std::fs::metadata(d).ok()).map(|m| m.len()).sum();

    let partial = dir.join("root.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    for deb in &debs {
        debian::unpack(deb, &partial, &log)?;
    }
    let release = format!("{}-{ARCH}", choice.abi);
    let manifest = Manifest {
        fields: [
            ("release", release.clone()),
            ("package", image_package),
            ("version", version),
            ("busybox", busybox.field("Version").unwrap_or("?").to_string()),
            ("gcc", gcc),
            ("downloaded-bytes", bytes.to_string()),
            ("packages", debs.iter().filter_map(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")),
            ("fetch-seconds", format!("{:.0}", started.elapsed().as_secs_f64())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).map_err(|e| format!("cannot rename {} to {}: {e}", partial.display(), root.display()))?;
    std::fs::write(root.join(MANIFEST), manifest.text()).map_err(|e| format!("cannot write the manifest: {e}"))?;
    apt.clean();
    let _ = std::fs::remove_dir_all(&debs_dir);
    eprintln!(
        "harness: Debian's {ARCH} Linux {release} ready in {:.0} s ({} packages, {:.0} MB downloaded)",
        started.elapsed().as_secs_f64(),
        debs.len(),
        bytes as f64 / 1e6
    );
    from_manifest(&root)
}

impl Guest {
    /// Whether the kernel's configuration sets `option` (`CONFIG_ARM_SMMU_V3`)
    /// to `value` (`y`, `m`, a string with its quotes).
    pub fn config(&self, option: &str) -> Result<Option<String>, String> {
        let text = std::fs::read_to_string(&self.config).map_err(|e| format!("cannot read {}: {e}", self.config.display()))?;
        Ok(text.lines().find_map(|l| l.strip_prefix(option)?.strip_prefix('=')).map(String::from))
    }
}

/// The values of `key` in a module's `.modinfo` section (`key=value`
/// strings, NUL-separated).
pub fn modinfo(ko: &[u8], key: &str) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(ko).map_err(|e| format!("not an ELF object: {e}"))?;
    let section = file.section_by_name(".modinfo").ok_or("no .modinfo section")?;
    let data = section.data().map_err(|e| format!("cannot read .modinfo: {e}"))?;
    let prefix = format!("{key}=");
    Ok(data.split(|b| *b == 0).filter_map(|s| std::str::from_utf8(s).ok()).filter_map(|s| s.strip_prefix(prefix.as_str())).map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_sort_by_version_and_flavours_are_left_out() {
        assert_eq!(kernel_abi("linux-image-6.12.118+deb12-arm64-unsigned"), Some(("6.12.118+deb12".into(), vec![6, 12, 118, 12])));
        assert_eq!(kernel_abi("linux-image-6.1.0-57-arm64-unsigned"), Some(("6.1.0-57".into(), vec![6, 1, 0, 57])));
        for other in [
            "linux-image-6.12.118+deb12-rt-arm64-unsigned",
            "linux-image-6.12.118+deb12-cloud-arm64-unsigned",
            "linux-image-6.12.118+deb12-arm64-16k-unsigned",
            "linux-image-6.12.118+deb12-arm64",
            "linux-image-arm64",
            "linux-image-6.12.118+deb12-amd64-unsigned",
            "linux-image--arm64-unsigned",
        ] {
            assert_eq!(kernel_abi(other), None, "{other}");
        }
        let mut v = [vec![6, 1, 0, 57], vec![6, 12, 95, 12], vec![6, 12, 118, 12]];
        v.sort_by(|a, b| b.cmp(a));
        assert_eq!(v[0], vec![6, 12, 118, 12]);
    }

    #[test]
    fn the_manifest_round_trips() {
        let m = Manifest::parse("release=6.12.118+deb12-arm64\ngcc=gcc-12\nbroken line\n");
        assert_eq!(m.get("release"), Ok("6.12.118+deb12-arm64"));
        assert!(m.get("version").is_err());
        assert_eq!(Manifest::parse(&m.text()), m);
    }

    #[test]
    fn modinfo_of_a_non_elf_is_an_error() {
        assert!(modinfo(b"not an elf", "depends").is_err());
    }
}
