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
    vec![Scenario { name: "linux-bare-nvme", setup: |ctx| nvme_bare(&ctx.dir, &[], ""), check: check_nvme }]
}

/// The marks [`nvme_body`] prints around the NVMe driver's load: before
/// its `insmod`s, after them, and once its disk is there (the driver
/// probes asynchronously).
pub fn nvme_body_marks() -> [&'static str; 3] {
    ["nvme-insmod", "nvme-loaded", disk::phase::FOUND]
}

/// The init body: load the modules `more` (marks `modules` and
/// `modules-loaded` around it), then the NVMe driver (`nvme-insmod`,
/// `nvme-loaded`), then the I/O, then `extra`.
pub fn nvme_body(g: &Guest, r: &mut crate::linux::initramfs::Initramfs, more: &[&str], extra: &str) -> Result<String, String> {
    let pre = if more.is_empty() { String::new() } else { format!("mark modules\n{}\nmark modules-loaded\n", g.add_modules(r, more)?.join("\n")) };
    let insmod = g.add_modules(r, Bus::Nvme.modules())?;
    disk::add_pattern(r, IO_BYTES)?;
    Ok(format!("{pre}mark nvme-insmod\n{}\nmark nvme-loaded\n{}\n{extra}", insmod.join("\n"), disk::io_script(Bus::Nvme.device(), IO_BYTES)))
}

/// Debian's kernel bare on `virt` (EL1, no hypervisor: the SMMU is
/// Linux's), 2 CPUs, an NVMe at [`NVME_ADDR`], init running [`nvme_body`]
/// with the modules `more` and then `extra`; deterministic, under `-icount`.
pub fn nvme_bare(dir: &Path, more: &[&str], extra: &str) -> Result<QemuConfig, String> {
    bare(dir, "", more, extra, false)
}

/// [`nvme_bare`] with `pre` in front of the body and, with `vfio_helper`,
/// the VFIO helper at `/bin/vfio_claim`.
fn bare(dir: &Path, pre: &str, more: &[&str], extra: &str, vfio_helper: bool) -> Result<QemuConfig, String> {
    let g = crate::linux::guest()?;
    let initrd = dir.join("initramfs.cpio");
    // The body names the modules, so they go into an archive of their own
    // first, merged into the one built around the body.
    let mut files = crate::linux::initramfs::Initramfs::new();
    let body = format!("{pre}{}", nvme_body(g, &mut files, more, extra)?);
    if vfio_helper {
        files.copy("bin/vfio_claim", &g.vfio_claim, 0o755)?;
    }
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

/// Marks of the peer run's phases (after [`nvme_body`]'s).
pub mod peer_mark {
    /// Written to `/dev/kmsg` with the counter: its printk timestamp ties
    /// printk's clock to the counter.
    pub const KMSG: &str = "kmsg";
    /// Before unbinding nvme.
    pub const REBIND: &str = "rebind";
    /// vfio-pci bound (nvme unbound).
    pub const VFIO_BOUND: &str = "vfio-bound";
    /// Before the VFIO user claims the group.
    pub const CLAIM: &str = "vfio-claim";
    /// The helper's own line once the container is set (not a `mark`).
    pub const CLAIMED: &str = "claimed";
    /// The helper exited: the group is released.
    pub const RELEASED: &str = "vfio-released";
    /// nvme bound again and its disk back.
    pub const REBOUND: &str = "nvme-rebound";
}

/// The peer's init after the I/O: unbind nvme, bind vfio-pci (driver
/// override), claim the group as a VFIO user and let it go (blocking
/// domain and back: binding vfio-pci alone changes no domain), unbind
/// vfio-pci, bind nvme again and wait for its disk.
fn peer_extra() -> String {
    let dev = format!("/sys/bus/pci/devices/{NVME_BDF}");
    format!(
        r#"mark {rebind}
echo {NVME_BDF} > /sys/bus/pci/drivers/nvme/unbind
echo vfio-pci > {dev}/driver_override
echo {NVME_BDF} > /sys/bus/pci/drivers/vfio-pci/bind || echo "bulkhead-init: vfio-bind-failed"
mark {bound}
g=$(ls -l {dev}/iommu_group | sed 's|.*/||')
mark {claim}
/bin/vfio_claim $g || echo "bulkhead-init: vfio-claim-failed $?"
mark {released}
echo {NVME_BDF} > /sys/bus/pci/drivers/vfio-pci/unbind
echo > {dev}/driver_override
echo {NVME_BDF} > /sys/bus/pci/drivers/nvme/bind
i=0; while [ ! -b {disk} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mark {rebound}"#,
        rebind = peer_mark::REBIND,
        bound = peer_mark::VFIO_BOUND,
        claim = peer_mark::CLAIM,
        released = peer_mark::RELEASED,
        rebound = peer_mark::REBOUND,
        disk = Bus::Nvme.device(),
    )
}

/// The bench's peer run (`cargo xtask bench --peer linux`): [`nvme_bare`]
/// with vfio-pci and the VFIO helper, a `/dev/kmsg` line with the counter
/// first, [`peer_extra`] after the I/O, and QEMU's `pl011_write` trace
/// point beside the SMMU's, so that console lines and SMMU events share
/// one ordered log.
pub fn peer_bare(dir: &Path) -> Result<QemuConfig, String> {
    let kmsg = format!("echo \"{}{} ticks=$(/bin/ticks)\" > /dev/kmsg\n", crate::linux::console::MARK, peer_mark::KMSG);
    let mut cfg = bare(dir, &kmsg, &["vfio-pci"], &peer_extra(), true)?;
    cfg.extra.extend(["-trace".to_string(), crate::trace::kind::UART_WRITE.names[0].to_string()]);
    Ok(cfg)
}
