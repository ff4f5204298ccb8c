//! Debian's Linux bare on QEMU with its own arm-smmu-v3 driver owning the
//! SMMU and an NVMe controller attached: the peer `cargo xtask bench --peer
//! linux` compares bulkhead with, and the scenario that proves the shared
//! disk pieces ([`crate::linux::modules`], [`crate::linux::disk`]) end to
//! end without bulkhead.
//!
//! - `linux-bare-nvme`: loads `nvme` (and `nvme-core`, `nvme-auth`), writes
//!   4 MiB of the pattern to `/dev/nvme0n1`, reads it back: both checksums
//!   are the pattern's as computed on the host, and QEMU's trace shows the
//!   NVMe's DMA translated by Linux's domain (StreamID = requester ID).

use crate::linux::disk::{self, Bus, Disk, IO_BYTES};
use crate::linux::Guest;
use crate::qemu::{Console, Flavour, Outcome, QemuConfig};
use crate::scenario::{Checks, Scenario};
use crate::trace::kind;
use std::path::Path;
use std::time::Duration;

/// Where the NVMe sits: 00:02.0 (slot 1 is the first free one; 2 leaves
/// room for a second device in front), so its StreamID is 0x10.
pub const NVME_ADDR: &str = "2.0";
/// Its StreamID (bus 0, device 2, function 0).
pub const NVME_SID: u64 = 2 << 3;
/// Its PCI name in sysfs.
pub const NVME_BDF: &str = "0000:00:02.0";
/// The disk image's size.
const DISK_MIB: u64 = 16;

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario { name: "linux-bare-nvme", setup: |ctx| nvme_bare(&ctx.dir, ""), check: check_nvme }]
}

/// The init body: load the NVMe driver, then the I/O, then `extra`.
pub fn nvme_body(g: &Guest, r: &mut crate::linux::initramfs::Initramfs, extra: &str) -> Result<String, String> {
    let insmod = g.add_modules(r, Bus::Nvme.modules())?;
    disk::add_pattern(r, IO_BYTES)?;
    Ok(format!("mark nvme-insmod\n{}\nmark nvme-loaded\n{}\n{extra}", insmod.join("\n"), disk::io_script(Bus::Nvme.device(), IO_BYTES)))
}

/// Debian's kernel bare on `virt` (EL1, no hypervisor: the SMMU is
/// Linux's), 2 CPUs, an NVMe at [`NVME_ADDR`], init running [`nvme_body`]
/// and then `extra`; deterministic, under `-icount`.
pub fn nvme_bare(dir: &Path, extra: &str) -> Result<QemuConfig, String> {
    let g = crate::linux::guest()?;
    let initrd = dir.join("initramfs.cpio");
    // The body is written after the modules and pattern are in: the
    // archive is built around it.
    let mut files = crate::linux::initramfs::Initramfs::new();
    let body = nvme_body(g, &mut files, extra)?;
    let mut r = g.initramfs(&body)?;
    r.merge(files)?;
    r.write(&initrd)?;
    let d = Disk::create(&dir.join("nvme.img"), "nvme0", Bus::Nvme, DISK_MIB)?.at(NVME_ADDR);
    Ok(QemuConfig {
        flavour: Flavour::NoVirtualization,
        smp: 2,
        memory: "1G".into(),
        kernel: Some(g.image.clone()),
        initrd: Some(initrd),
        console: Console::Text,
        append: Some("console=ttyAMA0 printk.devkmsg=on".into()),
        extra: d.qemu_args(),
        icount: true,
        deterministic: true,
        trace: Some(dir.join("trace.txt")),
        timeout: Duration::from_secs(300),
        ..QemuConfig::default()
    })
}

fn lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    o.log.iter().map(|l| l.message.as_str())
}

fn check_nvme(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    c.log(o, "Run /init as init process");
    c.no_log(o, "insmod-failed");
    c.no_log(o, disk::MISSING);
    c.no_log(o, "disk-dd-");
    c.that(crate::linux::console::mark(lines(o), disk::phase::FOUND).is_some(), "the guest never saw /dev/nvme0n1");
    let (w, r) = disk::sums(lines(o));
    let want = disk::expected(IO_BYTES);
    c.that(w.as_deref() == Some(want.as_str()), format!("the guest wrote {w:?}, the pattern's checksum is {want}"));
    c.that(r.as_deref() == Some(want.as_str()), format!("the guest read back {r:?}, the pattern's checksum is {want}"));
    // The NVMe's DMA went through Linux's SMMU domain.
    let ok = o.trace.of(kind::TRANSLATE_SUCCESS).filter(|e| e.field("sid") == Some(NVME_SID)).count();
    c.that(ok > 0, format!("QEMU's trace has no translated DMA of StreamID {NVME_SID:#x}"));
    c.log(o, "reboot: Power down");
}
