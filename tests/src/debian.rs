//! Debian's archive, used without changing the machine's APT configuration:
//! the machine's release and mirrors, and APT runs with a state of their
//! own (source list, package lists, downloads) under the project's cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A value of `/etc/os-release` (`VERSION_CODENAME`, `ID`, ...).
pub fn os_release(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_string()))
}

/// The archive URI and keyring this machine already uses for `suite`, from
/// its APT sources (one-line `.list` or deb822 `.sources`).
pub fn debian_archive(suite: &str) -> Option<(String, Option<String>)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(d) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = d.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        if f.extension().is_some_and(|e| e == "sources") {
            archive_in_deb822(&text, suite)
        } else if f.extension().is_some_and(|e| e == "list") || f.ends_with("sources.list") {
            archive_in_one_line(&text, suite)
        } else {
            None
        }
    })
}

/// `suite`'s URI and `Signed-By` in a deb822 `.sources` file.
fn archive_in_deb822(text: &str, suite: &str) -> Option<(String, Option<String>)> {
    text.split("\n\n").find_map(|stanza| {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(&format!("{k}:")).map(|v| v.trim().to_string()));
        let types = field("Types").unwrap_or_else(|| "deb".into());
        if !types.split_whitespace().any(|t| t == "deb") || !field("Suites")?.split_whitespace().any(|s| s == suite) {
            return None;
        }
        let uri = field("URIs")?.split_whitespace().next()?.to_string();
        Some((uri, field("Signed-By")))
    })
}

/// `suite`'s URI and `signed-by` option in a one-line `.list` file.
fn archive_in_one_line(text: &str, suite: &str) -> Option<(String, Option<String>)> {
    text.lines().map(str::trim).filter_map(|l| l.strip_prefix("deb ")).find_map(|rest| {
        let (options, rest) = match rest.trim_start().strip_prefix('[') {
            Some(r) => r.split_once(']')?,
            None => ("", rest),
        };
        let mut parts = rest.split_whitespace();
        let (uri, s) = (parts.next()?, parts.next()?);
        let key = options.split_whitespace().find_map(|o| o.strip_prefix("signed-by=")).map(String::from);
        (s == suite).then(|| (uri.to_string(), key))
    })
}

/// Runs `c` with its output appended to `log`; an error names `what` and
/// shows the end of the log.
pub fn run_logged(what: &str, c: &mut Command, log: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let st = c
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", c.get_program()))?;
    if st.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{what} failed ({st}); the end of {}:\n  {}", log.display(), tail.join("\n  ")))
}

/// The suites of the machine's Debian release APT may take packages from:
/// the release, its updates, security and backports suites.
pub fn release_suites(codename: &str) -> [String; 4] {
    [codename.to_string(), format!("{codename}-updates"), format!("{codename}-security"), format!("{codename}-backports")]
}

/// The machine's dpkg database: [`PrivateApt::download_missing`] resolves
/// against it (read only) so that only what the machine lacks is fetched.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// APT with a state of its own in one directory: its source list (derived
/// from the machine's mirrors), package lists and downloaded packages. The
/// machine's APT configuration, lists and dpkg database are not changed.
pub struct PrivateApt {
    dir: PathBuf,
    log: PathBuf,
    /// Architectures APT considers (`APT::Architectures`).
    architectures: Vec<String>,
}

impl PrivateApt {
    /// A private APT state in `dir` for `suites` of the machine's own
    /// Debian mirror (`-security` suites from its security mirror), with
    /// packages of `architectures`; APT's output goes to `log`.
    pub fn new(dir: &Path, suites: &[String], architectures: &[&str], log: &Path) -> Result<PrivateApt, String> {
        let mut lines = Vec::new();
        for suite in suites {
            // A suite the machine does not list comes from the mirror of
            // its release (updates and backports live beside it); security
            // only from a security mirror the machine lists.
            let release = suite.split('-').next().unwrap_or(suite);
            let found = debian_archive(suite).or_else(|| if suite.ends_with("-security") { None } else { debian_archive(release) });
            if let Some((uri, key)) = found {
                let opts = key.map(|k| format!("[signed-by={k}] ")).unwrap_or_default();
                lines.push(format!("deb {opts}{uri} {suite} main"));
            }
        }
        if lines.is_empty() {
            return Err(format!("no Debian mirror for {} in this machine's APT sources", suites.join(", ")));
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let list = dir.join("sources.list");
        std::fs::write(&list, lines.join("\n") + "\n").map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        Ok(PrivateApt { dir: dir.to_path_buf(), log: log.to_path_buf(), architectures: architectures.iter().map(|a| a.to_string()).collect() })
    }

    /// The options that point APT at this state; `status` is the dpkg
    /// database it resolves against.
    fn options(&self, status: &str) -> Vec<String> {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut o = vec![
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            format!("Dir::State::Status={status}"),
            // The machine's preferences and pins are not this state's.
            "Dir::Etc::Preferences=/nonexistent".to_string(),
            "Dir::Etc::PreferencesParts=/nonexistent".to_string(),
            "Acquire::Languages=none".to_string(),
            "Acquire::Retries=3".to_string(),
            "Acquire::http::Timeout=60".to_string(),
            // Downloads land in the project's directories, which APT's
            // unprivileged download user may not be able to write.
            "APT::Sandbox::User=root".to_string(),
        ];
        o.extend(self.architectures.iter().map(|a| format!("APT::Architectures::={a}")));
        o.into_iter().flat_map(|v| ["-o".to_string(), v]).collect()
    }

    fn command(&self, program: &str, status: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(self.options(status)).args(args);
        c
    }

    /// `apt-get update` of this state's lists.
    pub fn update(&self) -> Result<(), String> {
        run_logged("apt-get update (private lists)", &mut self.command("apt-get", "/dev/null", &["update", "-q"]), &self.log)
    }

    /// `apt-get download` of `packages` (`NAME`, `NAME:ARCH` or
    /// `NAME=VERSION`) into `into`, whatever the machine has installed.
    pub fn download(&self, packages: &[String], into: &Path) -> Result<(), String> {
        std::fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
        let mut args = vec!["download", "-q"];
        args.extend(packages.iter().map(String::as_str));
        run_logged(&format!("apt-get download {}", packages.join(" ")), self.command("apt-get", "/dev/null", &args).current_dir(into), &self.log)
    }

    /// Downloads `packages` and whatever they depend on that this machine
    /// lacks (`apt-get install --download-only` against the machine's dpkg
    /// database, which it reads and does not change); returns the `.deb`
    /// files, in this state's download directory.
    pub fn download_missing(&self, packages: &[String]) -> Result<Vec<PathBuf>, String> {
        let mut args = vec!["install", "-q", "-y", "--download-only", "--no-install-recommends"];
        args.extend(packages.iter().map(String::as_str));
        run_logged(&format!("apt-get install --download-only {}", packages.join(" ")), &mut self.command("apt-get", DPKG_STATUS, &args), &self.log)?;
        debs_in(&self.dir.join("cache/archives"))
    }

    /// Every package name in this state's lists that starts with `prefix`.
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, String> {
        let o =
            self.command("apt-cache", "/dev/null", &["pkgnames", prefix]).stdin(Stdio::null()).output().map_err(|e| format!("cannot run apt-cache: {e}"))?;
        if !o.status.success() {
            return Err(format!("apt-cache pkgnames {prefix} failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
    }

    /// The candidate stanza of `package` (`apt-cache show`, newest version
    /// first); `None` when the lists have no such package.
    pub fn show(&self, package: &str) -> Option<Stanza> {
        let o = self.command("apt-cache", "/dev/null", &["show", "-q", package]).stdin(Stdio::null()).output().ok()?;
        if !o.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let first = text.split("\n\n").next()?.to_string();
        (!first.trim().is_empty()).then_some(Stanza(first))
    }

    /// Empties the download directory (`apt-get clean`'s effect).
    pub fn clean(&self) {
        for deb in debs_in(&self.dir.join("cache/archives")).unwrap_or_default() {
            let _ = std::fs::remove_file(deb);
        }
    }
}

/// The `.deb` files in `dir`.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    v.sort();
    Ok(v)
}

/// Unpacks `deb` into `root` (`dpkg-deb -x`: no maintainer scripts, no
/// dpkg database).
pub fn unpack(deb: &Path, root: &Path, log: &Path) -> Result<(), String> {
    run_logged(&format!("dpkg-deb -x {}", deb.display()), Command::new("dpkg-deb").arg("-x").arg(deb).arg(root), log)
}

/// One package's fields, as `apt-cache show` prints them.
#[derive(Clone, Debug)]
pub struct Stanza(pub String);

impl Stanza {
    /// The value of `field` (first line only).
    pub fn field(&self, field: &str) -> Option<&str> {
        self.0.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(str::trim)
    }

    /// The package names in `Depends` (alternatives flattened, versions and
    /// architecture qualifiers dropped).
    pub fn depends(&self) -> Vec<String> {
        self.field("Depends")
            .unwrap_or("")
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(|d| d.split(':').next().unwrap_or(d).to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_read_from_both_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            archive_in_deb822(deb822, "bookworm-updates"),
            Some(("http://deb.debian.org/debian".into(), Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())))
        );
        assert_eq!(archive_in_deb822(deb822, "bookworm-security"), Some(("http://deb.debian.org/debian-security".into(), None)));
        assert_eq!(archive_in_deb822(deb822, "trixie"), None);
        let list = "# comment\ndeb-src http://x/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm-backports main\ndeb http://n/debian bookworm main\n";
        assert_eq!(archive_in_one_line(list, "bookworm-backports"), Some(("http://m/debian".into(), Some("/k.gpg".into()))));
        assert_eq!(archive_in_one_line(list, "bookworm"), Some(("http://n/debian".into(), None)));
        assert_eq!(archive_in_one_line("deb [broken http://m bookworm main", "bookworm"), None);
    }

    #[test]
    fn depends_lists_every_alternative_by_name() {
        let s = Stanza(
            "Package: linux-headers-6.12.118+deb12-arm64\nVersion: 6.12.118-1~deb12u1\nDepends: linux-base (>= 4.12~), linux-headers-6.12.118+deb12-common (= 6.12.118-1~deb12u1), linux-image-6.12.118+deb12-arm64 (= 6.12.118-1~deb12u1) | linux-image-6.12.118+deb12-arm64-unsigned (= 6.12.118-1~deb12u1), linux-kbuild-6.12.118+deb12, gcc-12:arm64\n"
                .into(),
        );
        assert_eq!(s.field("Version"), Some("6.12.118-1~deb12u1"));
        assert_eq!(s.field("Size"), None);
        let d = s.depends();
        assert!(d.contains(&"linux-kbuild-6.12.118+deb12".to_string()), "{d:?}");
        assert!(d.contains(&"gcc-12".to_string()), "{d:?}");
        assert!(d.contains(&"linux-image-6.12.118+deb12-arm64-unsigned".to_string()), "{d:?}");
    }
}
