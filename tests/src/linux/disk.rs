//! A disk for a Linux guest to drive: a raw image file the harness makes,
//! the QEMU arguments that attach it as an NVMe controller or a
//! `virtio-blk-pci` (with `iommu_platform=on,disable-legacy=on`, without
//! which QEMU's virtio DMA bypasses the IOMMU), and an init-script
//! fragment that writes a known pattern to it with `dd`, reads it back and
//! prints both checksums.
//!
//! The pattern goes into the initramfs as a file ([`PATTERN_PATH`]): a
//! shell loop that generated 4 MiB under TCG would take longer than the
//! I/O it feeds. Debian's busybox 1.35 `dd` has no `oflag=direct` /
//! `iflag=direct`, so the fragment writes through the page cache, `sync`s,
//! and drops the caches (`/proc/sys/vm/drop_caches`) before reading: the
//! read then comes from the device. The checksums are SHA-256 (busybox's
//! `sha256sum`; its busybox has no `cksum`).
//!
//! The fragment marks each phase (`mark NAME`, [`super::initramfs::PROLOGUE`])
//! so that a run can split the console, and QEMU's trace beside it, into
//! device discovery, write and read ([`phase`]).

use super::console::MARK;
use super::initramfs::Initramfs;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How much the fragment writes and reads back by default.
pub const IO_BYTES: u64 = 4 << 20;
/// Where the pattern is in the guest.
pub const PATTERN_PATH: &str = "/lib/pattern.bin";
/// `dd`'s block size: 64 KiB requests, the page cache's writeback and the
/// block layer split or merge them as they do for any writer.
const DD_BLOCK: u64 = 64 << 10;
/// How long the fragment waits for the block device to appear after the
/// driver loads: tries, 50 ms apart (the driver probes asynchronously).
const WAIT_TRIES: u32 = 200;

/// The init marks of the fragment's phases, in order.
pub mod phase {
    /// The device node exists.
    pub const FOUND: &str = "disk-found";
    /// Before the write's `dd`.
    pub const WRITE: &str = "disk-write";
    /// After the write, `sync` and the cache drop.
    pub const WRITTEN: &str = "disk-written";
    /// After the read's `dd`.
    pub const READ: &str = "disk-read";
}
/// The mark lines with the checksums (`bulkhead-init: disk-sum-written HEX`).
const SUM_WRITTEN: &str = "disk-sum-written";
const SUM_READ: &str = "disk-sum-read";
/// The mark of a device that never appeared.
pub const MISSING: &str = "disk-missing";

/// How the disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// `-device nvme` (DMA through the IOMMU always): `/dev/nvme0n1`.
    Nvme,
    /// `-device virtio-blk-pci,iommu_platform=on,disable-legacy=on`: `/dev/vda`.
    VirtioBlk,
}

impl Bus {
    /// The block device Linux makes for the first such disk.
    pub fn device(self) -> &'static str {
        match self {
            Bus::Nvme => "/dev/nvme0n1",
            Bus::VirtioBlk => "/dev/vda",
        }
    }
    /// The modules its driver needs (Debian 6.12: virtio-pci is built in).
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Bus::Nvme => &["nvme"],
            Bus::VirtioBlk => &["virtio_blk"],
        }
    }
}

/// A raw disk image and how it is attached.
#[derive(Clone, Debug)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// The `-drive` id (and the NVMe serial).
    pub id: String,
    /// Its controller.
    pub bus: Bus,
    /// The PCI address on the root bus (`addr=` of `-device`, e.g. `"2.0"`),
    /// or QEMU's choice.
    pub addr: Option<String>,
    /// The QEMU bus it is plugged into (`bus=` of `-device`: `pcie.0`, a
    /// root port's id), or QEMU's choice.
    pub parent: Option<String>,
}

impl Disk {
    /// Makes (or truncates) a `mib` MiB image of zeroes (sparse) at `path`.
    pub fn create(path: &Path, id: &str, bus: Bus, mib: u64) -> Result<Disk, String> {
        if mib == 0 || id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("disk {id:?} of {mib} MiB: need a size and a plain id"));
        }
        let f = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.set_len(mib << 20).map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        Ok(Disk { path: path.to_path_buf(), id: id.to_string(), bus, addr: None, parent: None })
    }

    /// The same disk at PCI address `addr` of the root bus.
    pub fn at(mut self, addr: &str) -> Disk {
        self.addr = Some(addr.to_string());
        self
    }

    /// The same disk on QEMU bus `parent`.
    pub fn on(mut self, parent: &str) -> Disk {
        self.parent = Some(parent.to_string());
        self
    }

    /// The QEMU arguments that attach it.
    pub fn qemu_args(&self) -> Vec<String> {
        let parent = self.parent.as_ref().map(|b| format!(",bus={b}")).unwrap_or_default();
        let addr = format!("{parent}{}", self.addr.as_ref().map(|a| format!(",addr={a}")).unwrap_or_default());
        let device = match self.bus {
            Bus::Nvme => format!("nvme,serial={},drive={}{addr}", self.id, self.id),
            Bus::VirtioBlk => format!("virtio-blk-pci,drive={},iommu_platform=on,disable-legacy=on{addr}", self.id),
        };
        vec!["-drive".into(), format!("file={},format=raw,if=none,id={}", self.path.display(), self.id), "-device".into(), device]
    }
}

/// The pattern: `bytes` bytes, each 8-byte word a mix of its index
/// (splitmix64), so that no two 512-byte sectors are alike and a sector
/// read from the wrong place changes the checksum.
pub fn pattern(bytes: u64) -> Vec<u8> {
    (0..bytes.div_ceil(8))
        .flat_map(|i| {
            let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .take(bytes as usize)
        .collect()
}

/// The SHA-256 of [`pattern`]`(bytes)`, in hex as `sha256sum` prints it.
pub fn expected(bytes: u64) -> String {
    hex(&Sha256::digest(pattern(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Puts the pattern of `bytes` bytes at [`PATTERN_PATH`] in `r`.
pub fn add_pattern(r: &mut Initramfs, bytes: u64) -> Result<(), String> {
    r.file(PATTERN_PATH, pattern(bytes), 0o644).map(|_| ())
}

/// The init fragment (after the driver's `insmod` lines): waits for
/// `device` (bounded), writes the first `bytes` of it from the pattern,
/// syncs, drops the caches, reads them back, and prints the checksums of
/// what it wrote and what it read. `bytes` must be a multiple of 64 KiB.
pub fn io_script(device: &str, bytes: u64) -> String {
    let blocks = bytes / DD_BLOCK;
    format!(
        r#"i=0
while [ ! -b {device} ] && [ $i -lt {WAIT_TRIES} ]; do sleep 0.05; i=$((i+1)); done
if [ -b {device} ]; then
mark {found}
mark {write}
dd if={PATTERN_PATH} of={device} bs={DD_BLOCK} count={blocks} 2>/dev/null || echo "{MARK}disk-dd-write-failed $?"
sync
echo 3 > /proc/sys/vm/drop_caches
mark {written}
echo "{MARK}{SUM_WRITTEN} $(dd if={PATTERN_PATH} bs={DD_BLOCK} count={blocks} 2>/dev/null | sha256sum)"
dd if={device} bs={DD_BLOCK} count={blocks} 2>/dev/null > /tmp/read.bin || echo "{MARK}disk-dd-read-failed $?"
mark {read}
echo "{MARK}{SUM_READ} $(sha256sum < /tmp/read.bin)"
rm -f /tmp/read.bin
else
mark {MISSING}
fi"#,
        found = phase::FOUND,
        write = phase::WRITE,
        written = phase::WRITTEN,
        read = phase::READ,
    )
}

/// The checksums the fragment printed: (written, read), each `None` when
/// its line is missing.
pub fn sums<'a>(lines: impl IntoIterator<Item = &'a str>) -> (Option<String>, Option<String>) {
    let (mut w, mut r) = (None, None);
    for l in lines {
        let sum = |name: &str| {
            let (_, rest) = l.split_once(&format!("{MARK}{name} "))?;
            let h = rest.split_whitespace().next()?;
            (h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
        };
        w = w.or_else(|| sum(SUM_WRITTEN));
        r = r.or_else(|| sum(SUM_READ));
    }
    (w, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_deterministic_and_no_two_sectors_match() {
        let p = pattern(64 << 10);
        assert_eq!(p.len(), 64 << 10);
        assert_eq!(p, pattern(64 << 10));
        let sectors: std::collections::BTreeSet<&[u8]> = p.chunks(512).collect();
        assert_eq!(sectors.len(), 128);
        assert_eq!(pattern(12).len(), 12);
        assert_eq!(&pattern(16)[..8], &pattern(8)[..]);
        // SHA-256 of nothing, as `sha256sum` prints it.
        assert_eq!(expected(0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_ne!(expected(IO_BYTES), expected(IO_BYTES - 8));
    }

    #[test]
    fn qemu_arguments_attach_the_image() {
        let d = Disk { path: "/tmp/d.img".into(), id: "nvme0".into(), bus: Bus::Nvme, addr: None, parent: None };
        assert_eq!(d.qemu_args(), ["-drive", "file=/tmp/d.img,format=raw,if=none,id=nvme0", "-device", "nvme,serial=nvme0,drive=nvme0"]);
        let v = Disk { bus: Bus::VirtioBlk, id: "vd".into(), ..d }.at("3.0");
        assert_eq!(v.qemu_args()[3], "virtio-blk-pci,drive=vd,iommu_platform=on,disable-legacy=on,addr=3.0");
        assert_eq!(v.on("pcie.0").qemu_args()[3], "virtio-blk-pci,drive=vd,iommu_platform=on,disable-legacy=on,bus=pcie.0,addr=3.0");
        assert_eq!((Bus::Nvme.device(), Bus::VirtioBlk.device()), ("/dev/nvme0n1", "/dev/vda"));
    }

    #[test]
    fn images_are_made_at_their_size() {
        let path = std::env::temp_dir().join(format!("bulkhead-disk-test-{}.img", std::process::id()));
        let d = Disk::create(&path, "nvme0", Bus::Nvme, 8).unwrap();
        assert_eq!(std::fs::metadata(&d.path).unwrap().len(), 8 << 20);
        let _ = std::fs::remove_file(&path);
        assert!(Disk::create(&path, "bad id", Bus::Nvme, 8).is_err());
        assert!(Disk::create(&path, "x", Bus::Nvme, 0).is_err());
    }

    #[test]
    fn checksums_are_read_from_the_console() {
        let good = expected(0);
        let lines = [
            "[    3.1] bulkhead-init: disk-found ticks=5".to_string(),
            format!("bulkhead-init: {SUM_WRITTEN} {good}  -"),
            format!("[linux] bulkhead-init: {SUM_READ} {}  -", good.to_uppercase()),
        ];
        assert_eq!(sums(lines.iter().map(String::as_str)), (Some(good.clone()), Some(good.clone())));
        let short = [format!("bulkhead-init: {SUM_WRITTEN} abc  -"), format!("bulkhead-init: {SUM_READ}")];
        assert_eq!(sums(short.iter().map(String::as_str)), (None, None));
        let s = io_script("/dev/nvme0n1", IO_BYTES);
        assert!(s.contains("bs=65536 count=64") && s.contains("drop_caches") && s.contains("[ -b /dev/nvme0n1 ]"), "{s}");
    }
}
