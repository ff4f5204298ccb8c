//! The real-board corpus: every DTB that Debian's arm64 Linux image
//! packages ship, of the machine's Debian release and of its backports
//! (on bookworm: Linux 6.1 and 6.12, about 1,600 DTBs).
//!
//! [`obtain`] resolves `linux-image-arm64` of each suite to the image
//! package it depends on, downloads that with `apt-get download` through a
//! private APT state ([`crate::debian::PrivateApt`], under
//! `target/bulkhead/cache/apt-linux/<suite>/`), unpacks only its `*.dtb`
//! files (`dpkg-deb --fsys-tarfile` into `tar`: the modules would be half
//! a gigabyte) into `target/bulkhead/cache/linux-dtbs/<suite>/`, and drops
//! the package. An unpacked suite is reused without the network; delete
//! its directory to fetch the suite's current kernel. Any failure is an
//! error that says what failed: the corpus tests fail with it, they do not
//! skip.

use crate::debian::{debs_in, os_release, PrivateApt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The metapackage that names each suite's current arm64 image package.
const META: &str = "linux-image-arm64";
/// The architecture of the boards' kernel.
const ARCH: &str = "arm64";
/// Written last into a suite's directory: `package version`, the unpack is complete.
const READY: &str = ".bulkhead-ready";

/// One suite's image package and its DTBs.
#[derive(Clone, Debug)]
pub struct Package {
    /// The Debian suite (`bookworm`, `bookworm-backports`).
    pub suite: String,
    /// The image package and version (`linux-image-6.12.95+deb12-arm64 6.12.95-1~bpo12+1`).
    pub package: String,
    /// Each DTB: its path below the package's DTB directory
    /// (`rockchip/rk3588-rock-5b.dtb`) and where it is.
    pub dtbs: Vec<(String, PathBuf)>,
}

/// The corpus, one [`Package`] per suite.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The packages, release first.
    pub packages: Vec<Package>,
}

impl Corpus {
    /// Every DTB: (suite, name, path).
    pub fn dtbs(&self) -> impl Iterator<Item = (&str, &str, &Path)> {
        self.packages.iter().flat_map(|p| p.dtbs.iter().map(move |(n, f)| (p.suite.as_str(), n.as_str(), f.as_path())))
    }

    /// The DTB `name` of `suite`'s package.
    pub fn find(&self, suite: &str, name: &str) -> Option<&Path> {
        self.dtbs().find(|(s, n, _)| *s == suite && *n == name).map(|(_, _, p)| p)
    }
}

/// Where the corpus is kept.
pub fn cache() -> PathBuf {
    crate::work_dir().join("cache")
}

/// The suites: the machine's Debian release and its backports.
pub fn suites() -> Result<[String; 2], String> {
    if os_release("ID").as_deref() != Some("debian") {
        return Err("the board-DTB corpus comes from Debian's archive: this machine is not Debian (/etc/os-release ID)".into());
    }
    let codename = os_release("VERSION_CODENAME").ok_or("/etc/os-release has no VERSION_CODENAME")?;
    Ok([codename.clone(), format!("{codename}-backports")])
}

/// The corpus, from the cache or fetched into it (see the module's text).
/// Serialised across processes by a lock file.
pub fn obtain() -> Result<Corpus, String> {
    let root = cache().join("linux-dtbs");
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let lock_path = root.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let mut packages = Vec::new();
    for suite in suites()? {
        packages.push(suite_dtbs(&root, &suite)?);
    }
    Ok(Corpus { packages })
}

fn suite_dtbs(root: &Path, suite: &str) -> Result<Package, String> {
    let dir = root.join(suite);
    let ready = dir.join(READY);
    let package = match std::fs::read_to_string(&ready) {
        Ok(p) => p.trim().to_string(),
        Err(_) => fetch(&dir, suite)?,
    };
    let mut dtbs = Vec::new();
    walk(&dir, &mut dtbs).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    // Names below the directory the package keeps them in
    // (usr/lib/linux-image-VERSION/).
    let mut named: Vec<(String, PathBuf)> = dtbs
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&dir).ok()?.to_str()?.to_string();
            let name = rel.split_once("/linux-image-").and_then(|(_, r)| r.split_once('/')).map_or(rel.clone(), |(_, n)| n.to_string());
            Some((name, p))
        })
        .collect();
    named.sort();
    if named.is_empty() {
        return Err(format!("{}: {package} has no DTBs there (delete the directory to fetch it again)", dir.display()));
    }
    Ok(Package { suite: suite.to_string(), package, dtbs: named })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "dtb") {
            out.push(p);
        }
    }
    Ok(())
}

/// Downloads `suite`'s image package and unpacks its DTBs into `dir`;
/// returns `package version`.
fn fetch(dir: &Path, suite: &str) -> Result<String, String> {
    let cache = cache();
    let log = cache.join("linux-dtbs.log");
    // One suite per state: each suite's metapackage names its own image.
    let apt = PrivateApt::new(&cache.join("apt-linux").join(suite), &[suite.to_string()], &[ARCH], &log)?;
    apt.update()?;
    let meta = format!("{META}:{ARCH}");
    let stanza = apt.show(&meta).ok_or_else(|| format!("{META} is not in {suite}'s package lists"))?;
    // linux-image-arm64 depends on exactly the current image package.
    let image =
        stanza.depends().into_iter().find(|d| d.starts_with("linux-image-")).ok_or_else(|| format!("{META} in {suite}: no linux-image-* in its Depends"))?;
    let version =
        apt.show(&format!("{image}:{ARCH}")).and_then(|s| s.field("Version").map(String::from)).ok_or_else(|| format!("{image} in {suite}: no Version"))?;
    let downloads = cache.join("download").join(suite);
    let _ = std::fs::remove_dir_all(&downloads);
    apt.download(&[format!("{image}:{ARCH}={version}")], &downloads)?;
    let deb = debs_in(&downloads)?.into_iter().next().ok_or_else(|| format!("apt-get download {image} left no .deb in {}", downloads.display()))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let unpacked = unpack_dtbs(&deb, dir);
    let _ = std::fs::remove_file(&deb);
    let _ = std::fs::remove_dir(&downloads);
    unpacked?;
    let package = format!("{image} {version}");
    std::fs::write(dir.join(READY), &package).map_err(|e| format!("cannot write {}: {e}", dir.join(READY).display()))?;
    Ok(package)
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x --wildcards '*.dtb'` into `dir`.
fn unpack_dtbs(deb: &Path, dir: &Path) -> Result<(), String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let tar_in = dpkg.stdout.take().ok_or("no pipe from dpkg-deb")?;
    let tar =
        Command::new("tar").arg("-x").arg("-C").arg(dir).args(["--wildcards", "*.dtb"]).stdin(tar_in).output().map_err(|e| format!("cannot run tar: {e}"))?;
    let dpkg = dpkg.wait_with_output().map_err(|e| format!("dpkg-deb: {e}"))?;
    if !dpkg.status.success() || !tar.status.success() {
        return Err(format!(
            "unpacking the DTBs of {} failed: dpkg-deb {}: {}; tar {}: {}",
            deb.display(),
            dpkg.status,
            String::from_utf8_lossy(&dpkg.stderr).trim(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(())
}
