//! The initramfs a Linux scenario boots: a newc cpio archive ("070701",
//! the format `usr/gen_init_cpio` writes and `init/initramfs.c` unpacks),
//! written here because the `cpio` tool is not on a new machine.
//!
//! Left uncompressed: Linux unpacks an uncompressed archive as it is (the
//! magic, not a configuration option, decides), and skipping the gunzip
//! saves the guest about 40 M instructions for 2 MiB (measured with
//! Debian's 6.12: unpacking took 3.6 ms of guest time uncompressed, 44.5 ms
//! gzipped).

use super::Guest;
use std::collections::BTreeMap;
use std::path::Path;

/// newc header magic.
const MAGIC: &str = "070701";
/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
/// The archive's last entry.
const TRAILER: &str = "TRAILER!!!";

/// One entry of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// An initramfs being put together; paths are relative to `/`, parents
/// are added as directories (0755) when not given.
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

/// `path` normalised (no leading `/`), or why it cannot be in an archive.
fn clean(path: &str) -> Result<String, String> {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") || p.contains('\0') {
        return Err(format!("initramfs path {path:?} is not a plain relative path"));
    }
    Ok(p.to_string())
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn add(&mut self, path: &str, e: Entry) -> Result<&mut Initramfs, String> {
        let p = clean(path)?;
        let mut parent = p.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            match self.entries.get(dir) {
                None => {
                    self.entries.insert(dir.to_string(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => return Err(format!("initramfs: {dir} is not a directory, cannot hold {p}")),
            }
            parent = dir;
        }
        if matches!(self.entries.get(&p), Some(Entry::Dir { .. })) && !matches!(e, Entry::Dir { .. }) {
            return Err(format!("initramfs: {p} is already a directory"));
        }
        self.entries.insert(p, e);
        Ok(self)
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Initramfs, String> {
        self.add(path, Entry::Dir { mode: mode & 0o7777 })
    }

    /// A regular file with permission bits `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Result<&mut Initramfs, String> {
        let data = data.into();
        if u32::try_from(data.len()).is_err() {
            return Err(format!("initramfs: {path} is {} bytes, more than newc's 4 GiB", data.len()));
        }
        self.add(path, Entry::File { mode: mode & 0o7777, data })
    }

    /// A file read from the host.
    pub fn copy(&mut self, path: &str, from: &Path, mode: u32) -> Result<&mut Initramfs, String> {
        let data = std::fs::read(from).map_err(|e| format!("initramfs: cannot read {}: {e}", from.display()))?;
        self.file(path, data, mode)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Initramfs, String> {
        if target.is_empty() || target.contains('\0') {
            return Err(format!("initramfs: symlink {path} has no usable target"));
        }
        self.add(path, Entry::Symlink { target: target.to_string() })
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> Result<&mut Initramfs, String> {
        self.add(path, Entry::CharDevice { mode: mode & 0o7777, major, minor })
    }

    /// The archive, parents before children, ending with the trailer;
    /// owners root, times 0, so the same content gives the same bytes.
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, e)) in (1u32..).zip(&self.entries) {
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match e {
                Entry::Dir { mode } => (S_IFDIR | mode, &[], 2, (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, data, 1, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes(), 1, (0, 0)),
                Entry::CharDevice { mode, major, minor } => (S_IFCHR | mode, &[], 1, (*major, *minor)),
            };
            header(&mut out, ino, mode, nlink, data.len(), rdev, path);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, (0, 0), TRAILER);
        out
    }

    /// Writes the archive to `path`; returns its size.
    pub fn write(&self, path: &Path) -> Result<usize, String> {
        let bytes = self.to_newc();
        std::fs::write(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(bytes.len())
    }

    /// Adds every entry of `other` (for files put together before the
    /// script that uses them); a clash is refused as [`Initramfs::file`] does.
    pub fn merge(&mut self, other: Initramfs) -> Result<&mut Initramfs, String> {
        for (path, e) in other.entries {
            self.add(&path, e)?;
        }
        Ok(self)
    }

    /// The paths in the archive, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// One newc header and name, padded to 4 bytes. Sizes fit: [`Initramfs::file`]
/// refuses data over 4 GiB, and names are short paths.
fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, rdev: (u32, u32), name: &str) {
    let namesize = name.len() + 1;
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1, namesize as u32, 0];
    out.extend_from_slice(MAGIC.as_bytes());
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The busybox applets every guest gets as links in `/bin`.
pub const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "cat",
    "echo",
    "grep",
    "sed",
    "awk",
    "head",
    "tail",
    "sleep",
    "ls",
    "mkdir",
    "rm",
    "cp",
    "dd",
    "cmp",
    "md5sum",
    "sha256sum",
    "sync",
    "uname",
    "nproc",
    "dmesg",
    "insmod",
    "rmmod",
    "lsmod",
    "devmem",
    "poweroff",
    "reboot",
    "seq",
    "test",
    "[",
    "tr",
    "wc",
    "xargs",
    "od",
    "printf",
];

/// Where the probe module and the counter helper are in the guest.
pub const PROBE_PATH: &str = "/lib/modules/bulkhead_probe.ko";
pub const TICKS_PATH: &str = "/bin/ticks";

/// Mounts what busybox needs, and defines `mark NAME`, which prints
/// `bulkhead-init: NAME ticks=N` with the counter ([`super::console`] reads
/// it), and `modparams MODULE`, which prints the `MODULE.param=value` words
/// of the kernel's command line as `param=value` (Linux leaves them to
/// modprobe; busybox `insmod` takes them as arguments).
pub const PROLOGUE: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mark() { echo "bulkhead-init: $* ticks=$(/bin/ticks)"; }
modparams() { for w in $(cat /proc/cmdline); do case "$w" in "$1".*) echo "${w#"$1".}";; esac; done; }
"#;

/// Ends the script: the last mark, then power off (PSCI SYSTEM_OFF).
pub const EPILOGUE: &str = "mark poweroff\npoweroff -f\n";

impl Guest {
    /// An initramfs with busybox (and its [`APPLETS`]), the probe module at
    /// [`PROBE_PATH`], the counter helper at [`TICKS_PATH`], `/dev/console`,
    /// and `/init`: [`PROLOGUE`], `mark init`, `body`, [`EPILOGUE`]. Add
    /// more files (modules with [`Guest::add_modules`](super::Guest::add_modules)) before writing it.
    pub fn initramfs(&self, body: &str) -> Result<Initramfs, String> {
        let mut r = Initramfs::new();
        for d in ["dev", "proc", "sys", "tmp", "lib/modules"] {
            r.dir(d, 0o755)?;
        }
        r.char_device("dev/console", 5, 1, 0o600)?;
        r.copy("bin/busybox", &self.busybox, 0o755)?;
        for a in APPLETS {
            r.symlink(&format!("bin/{a}"), "busybox")?;
        }
        r.copy(TICKS_PATH, &self.ticks, 0o755)?;
        r.copy(PROBE_PATH, &self.probe, 0o644)?;
        let script = format!("{PROLOGUE}mark init\n{}\n{EPILOGUE}", body.trim_end());
        r.file("init", script, 0o755)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// name, mode, (rdevmajor, rdevminor), data.
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    /// The entries of a newc archive, checking magic, padding and the
    /// trailer as Linux's unpacker does.
    fn parse(a: &[u8]) -> Vec<Parsed> {
        let mut v = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&a[at..at + 6], MAGIC.as_bytes(), "magic at {at}");
            let field = |i: usize| u32::from_str_radix(std::str::from_utf8(&a[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, rdev, namesize) = (field(1), field(6) as usize, (field(9), field(10)), field(11) as usize);
            let name = std::str::from_utf8(&a[at + 110..at + 110 + namesize - 1]).unwrap().to_string();
            assert_eq!(a[at + 110 + namesize - 1], 0);
            at = (at + 110 + namesize).div_ceil(4) * 4;
            let data = a[at..at + size].to_vec();
            at = (at + size).div_ceil(4) * 4;
            if name == TRAILER {
                assert_eq!(at, a.len(), "bytes after the trailer");
                return v;
            }
            v.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn parents_come_first_and_every_entry_is_aligned() {
        let mut r = Initramfs::new();
        r.file("init", "#!/bin/sh\n", 0o755).unwrap().file("/lib/modules/x.ko", vec![1, 2, 3], 0o644).unwrap();
        r.symlink("bin/sh", "busybox").unwrap().char_device("dev/console", 5, 1, 0o600).unwrap();
        let e = parse(&r.to_newc());
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/sh", "dev", "dev/console", "init", "lib", "lib/modules", "lib/modules/x.ko"]);
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!((e[1].1, e[1].3.as_slice()), (S_IFLNK | 0o777, b"busybox".as_slice()));
        assert_eq!((e[3].1, e[3].2), (S_IFCHR | 0o600, (5, 1)));
        assert_eq!((e[4].1, e[4].3.as_slice()), (S_IFREG | 0o755, b"#!/bin/sh\n".as_slice()));
        assert_eq!(e[7].3, vec![1, 2, 3]);
        assert_eq!(r.to_newc(), r.to_newc(), "not reproducible");
    }

    #[test]
    fn bad_paths_and_clashes_are_refused() {
        let mut r = Initramfs::new();
        for bad in ["", "/", "a//b", "../etc", "a/./b", "a\0b"] {
            assert!(r.file(bad, "x", 0o644).is_err(), "{bad:?}");
        }
        r.file("a", "x", 0o644).unwrap();
        assert!(r.file("a/b", "y", 0o644).unwrap_err().contains("not a directory"));
        r.dir("d", 0o755).unwrap();
        assert!(r.file("d", "z", 0o644).unwrap_err().contains("already a directory"));
        assert!(r.symlink("l", "").is_err());
    }
}
