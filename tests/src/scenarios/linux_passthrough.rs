//! Debian's Linux drives a PCI device passed through to its partition
//! (issue 17): its virtual PCI host (`partitions::vm::vpci`) shows only
//! that function, Linux's own driver binds it, its BARs are mapped in the
//! partition's stage 2, its INTx line is forwarded through the virtual GIC,
//! and all of its DMA goes through the SMMU into the partition's memory —
//! while the payload partition `net` aims its `edu` at that memory.
//!
//! - `linux-nvme`: partition `storage` (Linux, 2 vCPUs, 256 MiB) loads
//!   Debian's `nvme` module for the NVMe at 00:02.0, writes 4 MiB of the
//!   pattern ([`crate::linux::disk`]) and reads it back: both checksums are
//!   the pattern's, computed on the host; the NVMe's interrupts were
//!   counted by Linux; `net` verifies its own DMA and its attacks on
//!   storage's memory are blocked. QEMU's trace: every translation of the
//!   NVMe's StreamID lands in storage's memory, some happened, none in
//!   bypass; `net`'s attacks are recorded as SMMU events.
//! - `linux-virtio`: the same with a `virtio-blk-pci` created with
//!   `iommu_platform=on,disable-legacy=on` (without them QEMU's virtio DMA
//!   bypasses the IOMMU) driven by Linux's virtio driver.
//! - `linux-nvme-release`: `net`, a manager, releases storage's NVMe group
//!   while Linux writes to it: after the release's CMD_SYNC QEMU translates
//!   nothing more for the NVMe's StreamID (its DMA aborts), Linux's driver
//!   reads the function as all ones (its BAR and configuration space gone
//!   from the partition) and gives up on it, and the kernel and `net` carry
//!   on. Linux's power-off would wait for ever in its NVMe driver's
//!   shutdown of the vanished controller, so storage restarts with SysRq-b
//!   (an emergency restart: PSCI SYSTEM_RESET without the drivers'
//!   shutdown) and its second boot, without the disk, finds no PCI device
//!   and powers off.
//! - `linux-nvme-reset`: Linux writes the pattern to its NVMe and reboots
//!   (PSCI SYSTEM_RESET): the kernel stops and resets the NVMe, scrubs and
//!   reloads storage, starts the NVMe again and gives it a new virtual PCI
//!   host; the second boot finds it at 00:00.0 again and reads the pattern
//!   back.

use crate::dtb::Boot;
use crate::linux::disk::{self, Bus, Disk, IO_BYTES};
use crate::linux::initramfs::Initramfs;
use crate::linux::Guest;
use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{Checks, Ctx, Scenario, Witness};
use crate::trace::{kind, TraceEvent};
use std::path::PathBuf;
use std::time::Duration;

/// Where the loader puts Debian's Image and the initramfs, and storage's RAM.
const IMAGE_AT: u64 = 0x7000_0000;
const IMAGE_ROOM: u64 = 0x0300_0000;
const INITRD_AT: u64 = 0x7400_0000;
const STORAGE_MEM: (u64, u64) = (0x5000_0000, 0x6000_0000);
const NET_MEM: (u64, u64) = (0x4c00_0000, 0x4e00_0000);
/// The disk at 00:02.0 (StreamID 0x10), net's edu at 00:01.0 (0x8).
const DISK_ADDR: &str = "2.0";
const DISK_SID: u64 = 0x10;
const NET_SID: u64 = 0x8;
/// The disk's INTx line: slot 2, INTA on QEMU virt's map = SPI 3 + (2 + 1 - 1) % 4 = SPI 5.
const DISK_INTX: &str = "physical SPI 5 (INTID 37, level) forwarded to it";
/// Where net's edu attacks storage's memory.
const ATTACK: u64 = 0x5800_0000;
/// The isolation group of the disk (QEMU virt: 00:00.0 is group 0, the
/// edu 1, the disk 2).
const DISK_GROUP: u32 = 2;

/// The machine's first host bridge, and the second of the two-SMMU machine
/// ([`crate::qemu::Flavour::TwoSmmus`]: the `pxb-pcie`, buses from 0x80).
const HOST0: &str = "/pcie@10000000";
const HOST1: &str = "/pcie@4018000000";
/// `two-smmus-linux-two-hosts`: the second disk, a virtio-blk-pci at 81:00.0
/// behind root port 80:00.0 (StreamID 0x8100, second SMMU), its INTx line
/// the root port's INTA through the second host's `interrupt-map`.
const DISK2_SID: u64 = 0x8100;
const DISK2_INTX: &str = "physical SPI 3 (INTID 35, level) forwarded to it";
/// Between the two disks' I/O in storage's init script.
const SECOND_DISK: &str = "second-disk";

/// The partitions; `two_hosts`: on the two-SMMU machine (devices of
/// `pcie.0` named with `bus=pcie.0`), storage also owning a disk behind
/// the second host bridge.
fn overlay(initrd_size: u64, net_args: &str, net_manager: bool, two_hosts: bool) -> String {
    let rd = initrd_size.div_ceil(0x1000) * 0x1000;
    let manager = if net_manager { "bulkhead,manager;" } else { "" };
    let (bus0, second) = if two_hosts {
        (
            "bus=pcie.0,",
            format!(
                r#"
&{{{HOST1}}} {{
    #address-cells = <3>;
    #size-cells = <2>;

    port@0,0 {{
        reg = <0x800000 0x0 0x0 0x0 0x0>;
        #address-cells = <3>;
        #size-cells = <2>;

        disk@0,0 {{
            reg = <0x810000 0x0 0x0 0x0 0x0>;
            bulkhead,partition = <&storage>;
        }};
    }};
}};
"#
            ),
        )
    } else {
        ("", String::new())
    };
    format!(
        r#"/*
 * qemu-args: -device edu,dma_mask=0xffffffffffffffff,{bus0}addr=1.0
 */
/dts-v1/;
/plugin/;

&{{/}} {{
    partitions {{
        compatible = "bulkhead,partitions";
        #address-cells = <2>;
        #size-cells = <2>;

        storage: storage {{
            compatible = "bulkhead,partition";
            memory = <0x0 {mem:#x} 0x0 {size:#x}>;
            bulkhead,image = <0x0 {IMAGE_AT:#x} 0x0 {IMAGE_ROOM:#x}>;
            bulkhead,entry = <0x0 {mem:#x}>;
            bulkhead,initrd = <0x0 {INITRD_AT:#x} 0x0 {rd:#x}>;
            bulkhead,bootargs = "console=ttyAMA0 earlycon printk.devkmsg=on";
            bulkhead,log-limit = <1000000 10>;
        }};

        net: net {{
            compatible = "bulkhead,partition";
            memory = <0x0 {nmem:#x} 0x0 0x02000000>;
            bulkhead,image = <0x0 0x60100000 0x0 0x00100000>;
            bulkhead,entry = <0x0 {nmem:#x}>;
            bulkhead,bootargs = "{net_args}";
            {manager}
        }};
    }};
}};

&{{/cpus/cpu@1}} {{ bulkhead,partition = <&net>; }};
&{{/cpus/cpu@2}} {{ bulkhead,partition = <&storage>; }};
&{{/cpus/cpu@3}} {{ bulkhead,partition = <&storage>; }};

&{{{HOST0}}} {{
    #address-cells = <3>;
    #size-cells = <2>;

    edu@1,0 {{
        reg = <0x0800 0x0 0x0 0x0 0x0>;
        bulkhead,partition = <&net>;
    }};

    disk@2,0 {{
        reg = <0x1000 0x0 0x0 0x0 0x0>;
        bulkhead,partition = <&storage>;
    }};
}};
{second}"#,
        mem = STORAGE_MEM.0,
        size = STORAGE_MEM.1 - STORAGE_MEM.0,
        nmem = NET_MEM.0,
    )
}

/// After the I/O: what Linux sees of PCI and how often the disk
/// interrupted it.
const AFTER_IO: &str = r#"echo "bulkhead-init: pci-devices $(ls /sys/bus/pci/devices | tr '\n' ' ')"
echo "bulkhead-init: disk-irqs $(grep -E 'nvme|virtio' /proc/interrupts | tr -s ' ' | tr '\n' ';')""#;

/// After the I/O, the disk's BAR0 through Linux's own configuration
/// accessors (sysfs): as it reads, after a sizing write (all ones), and
/// after a write that would move it over net's memory (0x4c000000).
const BAR_MOVE: &str = r#"cfg=/sys/bus/pci/devices/0000:00:00.0/config
bar0() { dd if=$cfg bs=4 skip=4 count=1 2>/dev/null | od -An -tx4 | tr -d ' '; }
was=$(bar0)
printf '\377\377\377\377' | dd of=$cfg bs=4 seek=4 conv=notrunc 2>/dev/null
sizing=$(bar0)
printf '\000\000\000\114' | dd of=$cfg bs=4 seek=4 conv=notrunc 2>/dev/null
echo "bulkhead-init: bar0 was=$was sizing=$sizing moved=$(bar0)""#;

/// What storage's init does beyond loading the driver, the first I/O and
/// [`AFTER_IO`].
#[derive(Clone, Copy, Default)]
struct Script<'a> {
    /// After [`AFTER_IO`].
    after_io: &'a str,
    /// Instead of the I/O, when its DTB says it was restarted
    /// (`/chosen/bulkhead,restarts`); then it powers off.
    after_restart: &'a str,
    /// Added to Linux's command line.
    bootargs: &'a str,
}

/// Storage's initramfs, written to the scenario's directory: Debian's
/// modules `modules` (with what they depend on), the pattern, and `/init`
/// running `body` of their `insmod` lines. Where it is, and its size.
fn storage_initramfs(ctx: &Ctx, g: &Guest, modules: &[&str], body: impl FnOnce(&str) -> String) -> Result<(PathBuf, u64), String> {
    let mut files = Initramfs::new();
    let insmod = g.add_modules(&mut files, modules)?;
    disk::add_pattern(&mut files, IO_BYTES)?;
    let mut r = g.initramfs(&body(&insmod.join("\n")))?;
    r.merge(files)?;
    let initrd = ctx.file("initramfs.cpio");
    r.write(&initrd)?;
    let size = std::fs::metadata(&initrd).map_err(|e| format!("{}: {e}", initrd.display()))?.len();
    Ok((initrd, size))
}

fn setup(ctx: &Ctx, bus: Bus, net_args: &str, manager: bool, script: Script) -> Result<QemuConfig, String> {
    let g = crate::linux::guest()?;
    let restarted = if script.after_restart.is_empty() {
        String::new()
    } else {
        format!(
            "r=$(tr -d '\\000' < /proc/device-tree/chosen/bulkhead,restarts | wc -c)\nif [ \"$r\" != 0 ]; then\n{}\nmark poweroff\npoweroff -f\nfi\n",
            script.after_restart
        )
    };
    let (initrd, size) = storage_initramfs(ctx, g, bus.modules(), |insmod| {
        format!("mark disk-insmod\n{insmod}\nmark disk-loaded\n{restarted}{}\n{AFTER_IO}\n{}", disk::io_script(bus.device(), IO_BYTES), script.after_io)
    })?;
    let d = Disk::create(&ctx.file("disk.img"), "disk0", bus, 16)?.at(DISK_ADDR);
    let boot = Boot { partition: "storage".into(), image: g.image.clone(), initrd: Some(initrd) };
    let cfg = QemuConfig { smp: 4, memory: "2G".into(), extra: d.qemu_args(), timeout: Duration::from_secs(400), ..QemuConfig::default() };
    let dts = overlay(size, net_args, manager, false).replace("printk.devkmsg=on", &format!("printk.devkmsg=on{}", script.bootargs));
    crate::dtb::with_overlay_files(cfg, &dts, &ctx.dir, &ctx.artifacts.payload, &[boot])
}

/// `two-smmus-linux-two-hosts`: storage owns the NVMe at 00:02.0 of the
/// first host bridge and a virtio-blk-pci at 81:00.0 of the second, each
/// behind its own SMMU; Linux writes and reads back the pattern on both.
fn setup_two_hosts(ctx: &Ctx) -> Result<QemuConfig, String> {
    let g = crate::linux::guest()?;
    let (initrd, size) = storage_initramfs(ctx, g, &[Bus::Nvme.modules(), Bus::VirtioBlk.modules()].concat(), |insmod| {
        format!(
            "{insmod}\n{}\nmark {SECOND_DISK}\n{}\n{AFTER_IO}",
            disk::io_script(Bus::Nvme.device(), IO_BYTES),
            disk::io_script(Bus::VirtioBlk.device(), IO_BYTES)
        )
    })?;
    let nvme = Disk::create(&ctx.file("disk.img"), "disk0", Bus::Nvme, 16)?.at(DISK_ADDR).on("pcie.0");
    let virtio = Disk::create(&ctx.file("disk2.img"), "disk1", Bus::VirtioBlk, 16)?.on("rp80");
    let mut extra = nvme.qemu_args();
    extra.extend(["-device".to_string(), "pcie-root-port,id=rp80,bus=pcie.1,chassis=80".to_string()]);
    extra.extend(virtio.qemu_args());
    let boot = Boot { partition: "storage".into(), image: g.image.clone(), initrd: Some(initrd) };
    let cfg =
        QemuConfig { flavour: crate::qemu::Flavour::TwoSmmus, smp: 4, memory: "2G".into(), extra, timeout: Duration::from_secs(400), ..QemuConfig::default() };
    crate::dtb::with_overlay_files(cfg, &overlay(size, &net_args(), false, true), &ctx.dir, &ctx.artifacts.payload, &[boot])
}

/// net: its own DMA across Linux's boot and I/O, then its edu at storage's memory.
fn net_args() -> String {
    format!("hello dma-loop=20000 dma-own attack=storage-ram:{ATTACK:#x} exit=0")
}

/// The StreamID of the NVMe at 00:02.0 in `linux-nvme`.
pub const NVME_SID: u64 = DISK_SID;

/// `linux-nvme`'s machine for `cargo xtask bench --peer linux`: the same
/// partitions, disk and init script, with QEMU's `pl011_write` trace point
/// on (as the bare Linux peer run) so that the kernel's log lines, the
/// guest's init marks among them, are placed among the SMMU's commands.
pub fn bench_nvme(dir: &std::path::Path, artifacts: &crate::Artifacts) -> Result<QemuConfig, String> {
    let ctx = Ctx { dir: dir.to_path_buf(), artifacts };
    let mut cfg = setup(&ctx, Bus::Nvme, &net_args(), false, Script::default())?;
    cfg.extra.extend(["-trace".to_string(), kind::UART_WRITE.names[0].to_string()]);
    Ok(cfg)
}

/// How long net (a manager) waits before it takes the disk's group from
/// storage: Linux is in its write loop by then (it starts it 30–40 s after
/// power-on on 2 busy cores), which goes on until the disk fails or Linux
/// has been up for [`WRITE_UNTIL_S`] (its clock starts about 33 s after
/// power-on, when its timer is set up).
const RELEASE_AFTER_MS: u64 = 75_000;
const WRITE_UNTIL_S: u32 = 150;

/// storage, after the first I/O: 4 MiB direct writes to the disk (no page
/// cache, so a failed write returns its error instead of leaving dirty
/// pages nobody can write back), in the background, until one fails or
/// [`WRITE_UNTIL_S`]; the foreground waits for that (or 30 s more), says
/// what Linux saw, and restarts at once (SysRq-b).
fn write_loop() -> String {
    format!(
        r#"( n=0
while [ "$(cut -d. -f1 /proc/uptime)" -lt {WRITE_UNTIL_S} ]; do
dd if=/lib/pattern.bin of=/dev/nvme0n1 bs=65536 count=64 oflag=direct 2>/dev/null || break
n=$((n+1)); echo "bulkhead-init: write-loop $n"
done
echo "bulkhead-init: write-loop-end $n"; touch /tmp/write-loop-end ) &
while [ ! -e /tmp/write-loop-end ] && [ "$(cut -d. -f1 /proc/uptime)" -lt {} ]; do sleep 1; done
echo "bulkhead-init: nvme-log $(dmesg | grep -c 'nvme nvme0')"
mark emergency-restart
echo b > /proc/sysrq-trigger"#,
        WRITE_UNTIL_S + 30
    )
}

/// storage's second boot in `linux-nvme-release` and `linux-nvme-reset`:
/// which PCI functions it has.
const AFTER_RESTART: &str = r#"echo "bulkhead-init: after-restart pci-devices $(ls /sys/bus/pci/devices | tr '\n' ' ')""#;

/// `linux-nvme-reset`'s second boot: waits for the disk (bounded), then
/// [`AFTER_RESTART`] and the checksum of its first [`IO_BYTES`].
fn reread() -> String {
    format!(
        r#"i=0
while [ ! -b {dev} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
{AFTER_RESTART}
echo "bulkhead-init: disk-sum-after-restart $(dd if={dev} bs=65536 count={n} 2>/dev/null | sha256sum)""#,
        dev = Bus::Nvme.device(),
        n = IO_BYTES / 65536
    )
}

/// storage's partition ID (the kernel numbers partitions in the merged
/// tree's node order: net, then storage).
const STORAGE_ID: u32 = 1;

fn release_args() -> String {
    format!("hello wait={RELEASE_AFTER_MS} release={DISK_GROUP}:{STORAGE_ID} dma-own exit=0")
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "linux-nvme",
            setup: |ctx| setup(ctx, Bus::Nvme, &net_args(), false, Script { after_io: BAR_MOVE, ..Script::default() }),
            check: |o, c| {
                check_io(o, c, Bus::Nvme);
                check_bar_stays(o, c);
            },
        },
        Scenario {
            name: "linux-virtio",
            setup: |ctx| setup(ctx, Bus::VirtioBlk, &net_args(), false, Script::default()),
            check: |o, c| check_io(o, c, Bus::VirtioBlk),
        },
        // Linux's NVMe timeouts short, so the I/O the release cuts off
        // fails in seconds rather than after the default 30; no native
        // multipath, which would requeue it for ever once the controller
        // is gone.
        Scenario {
            name: "linux-nvme-release",
            setup: |ctx| {
                let after_io = write_loop();
                let script = Script {
                    after_io: &after_io,
                    after_restart: AFTER_RESTART,
                    bootargs: " nvme_core.io_timeout=2 nvme_core.admin_timeout=2 nvme_core.multipath=N",
                };
                setup(ctx, Bus::Nvme, &release_args(), true, script)
            },
            check: check_release,
        },
        Scenario {
            name: "linux-nvme-reset",
            setup: |ctx| {
                let after_restart = reread();
                let script = Script { after_io: "mark rebooting\nreboot -f\nsleep 10", after_restart: &after_restart, ..Script::default() };
                setup(ctx, Bus::Nvme, &net_args(), false, script)
            },
            check: check_reset,
        },
        Scenario { name: "two-smmus-linux-two-hosts", setup: setup_two_hosts, check: check_two_hosts },
    ]
}

fn lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    o.log.iter().map(|l| l.message.as_str())
}

fn guest_lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    lines(o).filter_map(|l| l.strip_prefix("[storage] "))
}

fn sid(want: u64) -> impl Fn(&&TraceEvent) -> bool {
    move |e| e.field("sid") == Some(want)
}

fn check_io(o: &Outcome, c: &mut Checks, bus: Bus) {
    c.exit(o, 0);
    c.log(o, "partition storage: arm64 Linux Image");
    c.log(o, &format!("partition storage: {DISK_INTX}"));
    c.that(guest_lines(o).any(|l| l.contains("Run /init as init process")), "Linux did not reach init");
    c.no_log(o, "insmod-failed");
    c.no_log(o, disk::MISSING);
    // What Linux sees: one function, at 00:00.0 of its virtual host.
    let seen = crate::linux::console::init_line(guest_lines(o), "pci-devices").unwrap_or("");
    c.that(seen.split_whitespace().eq(["0000:00:00.0"]), format!("Linux sees PCI functions {seen:?}, expected only its disk at 0000:00:00.0"));
    // The data: what it wrote is what it read, and what the host computed.
    let (written, read) = disk::sums(guest_lines(o));
    let want = disk::expected(IO_BYTES);
    c.that(written.as_deref() == Some(want.as_str()), format!("the written checksum {written:?} is not the pattern's {want}"));
    c.that(read.as_deref() == Some(want.as_str()), format!("the read-back checksum {read:?} is not the pattern's {want}"));
    // Its interrupts came through the forwarded INTx line.
    let irqs = crate::linux::console::init_line(guest_lines(o), "disk-irqs").unwrap_or("");
    let counted: u64 = irqs.split(';').flat_map(|l| l.split_whitespace().skip(1).take(2)).filter_map(|n| n.parse::<u64>().ok()).sum();
    c.that(counted > 0, format!("Linux counted no interrupt of its {bus:?} disk: {irqs:?}"));
    // net: its own DMA went on, its attacks were blocked.
    if let Some(l) = c.log(o, "[net] dma-loop: verified") {
        c.that(l.contains("bad 0x0"), format!("net's DMA loop saw bad transfers: {l}"));
    }
    if let Some(l) = c.log(o, "[net] attack storage-ram ") {
        c.that(l.contains(": read blocked (device got 0x"), format!("net's attack on storage's memory: {l}"));
    }
    c.no_log(o, "LEAKED");
    c.no_log(o, "EXCEPTION");
    c.no_log(o, "stopping this partition");
    c.no_log(o, "dropped (rate limit)");
    c.log(o, "all 2 partitions stopped, 0 failed");
    // QEMU's record: the disk's DMA was translated, only into storage's
    // memory; net's only into its own; net's attack faulted; no bypass.
    disk_dma_in_storage(o, c, DISK_SID);
    for e in o.trace.of(kind::TRANSLATE_SUCCESS).filter(sid(NET_SID)) {
        let pa = e.field("translated").unwrap_or(0);
        c.that((NET_MEM.0..NET_MEM.1).contains(&pa), format!("QEMU translated net's DMA outside its memory: {}", e.args));
    }
    c.that(o.trace.of(kind::EVENT).filter(sid(NET_SID)).count() > 0, "QEMU recorded no SMMU event for net's attack on storage's memory");
    c.no_bypass(o);
}

/// QEMU's record of the disk at StreamID `disk`: its DMA was translated
/// (more than 16 accesses: its I/O went through the SMMU), only into
/// storage's memory, and never faulted.
fn disk_dma_in_storage(o: &Outcome, c: &mut Checks, disk: u64) {
    let dma: Vec<&TraceEvent> = o.trace.of(kind::TRANSLATE_SUCCESS).filter(sid(disk)).collect();
    c.that(dma.len() > 16, format!("QEMU translated {} DMA accesses of StreamID {disk:#x}: that disk did not do its I/O through its SMMU", dma.len()));
    for e in &dma {
        let pa = e.field("translated").unwrap_or(0);
        c.that((STORAGE_MEM.0..STORAGE_MEM.1).contains(&pa), format!("QEMU translated StreamID {disk:#x}'s DMA outside storage's memory: {}", e.args));
    }
    c.that(o.trace.of(kind::EVENT).filter(sid(disk)).count() == 0, format!("StreamID {disk:#x}'s DMA faulted"));
}

fn check_release(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    c.log(o, &format!("partition storage: {DISK_INTX}"));
    let at = |needle: &str| lines(o).position(|l| l.contains(needle));
    // The first I/O was whole; then the release came during the write loop
    // and cut it short.
    let want = disk::expected(IO_BYTES);
    c.that(disk::sums(guest_lines(o)).1.as_deref() == Some(want.as_str()), "the first read-back's checksum is not the pattern's");
    let release = at(&format!("[net] release group 0x{DISK_GROUP:x} from 0x{STORAGE_ID:x}: 0x0"));
    let first_write = at("[storage] bulkhead-init: write-loop 1");
    c.that(release.is_some(), "net's release of the disk's group was not reported as done");
    c.that(
        first_write.is_some() && first_write < release,
        format!("Linux was not writing when the release came (first loop write at log line {first_write:?}, release at {release:?})"),
    );
    let end = at("[storage] bulkhead-init: write-loop-end");
    c.that(end.is_some_and(|e| Some(e) > release), "Linux's write loop did not end after the release");
    // Linux found the function gone: its BAR and its configuration space
    // read as all ones.
    c.that(
        guest_lines(o).any(|l| l.contains("nvme nvme0") && l.contains("CSTS=0xffffffff") && l.contains("PCI_STATUS=0xffff")),
        "Linux's nvme driver did not report the controller gone (CSTS and PCI_STATUS all ones)",
    );
    // The kernel and net carried on; storage restarted without the disk
    // and found no PCI function.
    c.log(o, "[net] dma own 0x4c100000: ok, 64 bytes verified");
    c.log(o, "partition net: exited with status 0");
    c.log(o, "partition storage: PSCI SYSTEM_RESET: restarting from its image, memory scrubbed, 0 of its devices reset (restart 1)");
    let after = crate::linux::console::init_line(guest_lines(o), "after-restart");
    c.that(after == Some("pci-devices"), format!("storage's second boot, without the disk, sees PCI functions: {after:?}"));
    c.log(o, "partition storage: PSCI SYSTEM_OFF, stopping it");
    c.no_log(o, "EXCEPTION");
    c.no_log(o, "failing closed");
    c.log(o, "all 2 partitions stopped, 0 failed");
    // QEMU: after the CMD_SYNC that completes the release's STE change,
    // nothing more is translated for the disk (its DMA aborts); before it,
    // it was.
    let ev = &o.trace.events;
    let cfgi = ev.iter().rposition(|e| kind::CFGI_STE.matches(e) && e.field("streamid") == Some(DISK_SID));
    let sync = cfgi.and_then(|i| ev[i..].iter().position(|e| kind::CMDQ_OPCODE.matches(e) && e.args.contains("CMD_SYNC")).map(|n| i + n));
    c.that(sync.is_some(), "QEMU saw no STE change for the disk completed by a CMD_SYNC");
    if let Some(at) = sync {
        let disk = |e: &TraceEvent| e.field("sid") == Some(DISK_SID);
        let before = |e: &TraceEvent| disk(e) && o.trace.index_of(e).is_some_and(|i| i < at);
        let after = |e: &TraceEvent| disk(e) && o.trace.index_of(e).is_some_and(|i| i > at);
        c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of the disk's DMA after its release", after, Witness::InRun("of the disk's DMA before it", &before));
    }
    c.no_bypass(o);
}

/// Both disks did their I/O, each through its own virtual host (domains 0
/// and 1) and its own SMMU, into storage's memory.
fn check_two_hosts(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    c.log(o, &format!("partition storage: {DISK_INTX}"));
    c.log(o, &format!("partition storage: {DISK2_INTX}"));
    c.no_log(o, "insmod-failed");
    c.no_log(o, disk::MISSING);
    c.no_log(o, "are not shown");
    let seen = crate::linux::console::init_line(guest_lines(o), "pci-devices").unwrap_or("");
    c.that(
        seen.split_whitespace().eq(["0000:00:00.0", "0001:00:00.0"]),
        format!("Linux sees PCI functions {seen:?}, expected its NVMe at 0000:00:00.0 and its virtio disk at 0001:00:00.0"),
    );
    let want = disk::expected(IO_BYTES);
    let split = guest_lines(o).position(|l| l.contains(&format!("bulkhead-init: {SECOND_DISK} ")));
    c.that(split.is_some(), "storage's init never reached its second disk");
    if let Some(n) = split {
        for (what, read) in [("NVMe", disk::sums(guest_lines(o).take(n)).1), ("virtio disk", disk::sums(guest_lines(o).skip(n)).1)] {
            c.that(read.as_deref() == Some(want.as_str()), format!("the {what}'s read-back checksum {read:?} is not the pattern's {want}"));
        }
    }
    let irqs = crate::linux::console::init_line(guest_lines(o), "disk-irqs").unwrap_or("");
    c.that(irqs.contains("nvme") && irqs.contains("virtio"), format!("Linux does not list both disks' interrupts: {irqs:?}"));
    if let Some(l) = c.log(o, "[net] attack storage-ram ") {
        c.that(l.contains(": read blocked (device got 0x"), format!("net's attack on storage's memory: {l}"));
    }
    c.no_log(o, "EXCEPTION");
    c.no_log(o, "stopping this partition");
    c.log(o, "all 2 partitions stopped, 0 failed");
    for disk in [DISK_SID, DISK2_SID] {
        disk_dma_in_storage(o, c, disk);
    }
    c.that(o.trace.of(kind::EVENT).filter(sid(NET_SID)).count() > 0, "QEMU recorded no SMMU event for net's attack on storage's memory");
    c.no_bypass(o);
}

/// Linux's write of BAR0 was answered like a BAR (a sizing write reads
/// back the size mask) but moved nothing: afterwards it reads where the
/// kernel placed it.
fn check_bar_stays(o: &Outcome, c: &mut Checks) {
    let line = crate::linux::console::init_line(guest_lines(o), "bar0").unwrap_or("");
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| u32::from_str_radix(v, 16).ok());
    let (was, sizing, moved) = (field("was="), field("sizing="), field("moved="));
    c.that(was.is_some_and(|w| w & !0xf != 0), format!("storage's BAR0 did not read as an address: {line:?}"));
    // A memory BAR's size mask: ones down from bit 31 to the size's bit, the type bits kept.
    let mask_ok = sizing.zip(was).is_some_and(|(s, w)| s & 0xf == w & 0xf && (!(s & !0xf)).wrapping_add(1).is_power_of_two() && s & !0xf != w & !0xf);
    c.that(mask_ok, format!("a sizing write to BAR0 did not read back a size mask: {line:?}"));
    c.that(moved.is_some() && moved == was, format!("Linux's write moved BAR0 (to net's memory at 0x4c000000?): {line:?}"));
}

/// The NVMe came through storage's restart: reset, started again, shown
/// again, and the pattern the first boot wrote read back by the second.
fn check_reset(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    c.log(o, &format!("partition storage: {DISK_INTX}"));
    let at = |needle: &str| lines(o).position(|l| l.contains(needle));
    let order = [
        at("[storage] bulkhead-init: disk-sum-read "),
        at("[storage] bulkhead-init: rebooting"),
        at("partition storage: PSCI SYSTEM_RESET: restarting from its image, memory scrubbed, 1 of its devices reset (restart 1)"),
        at("[storage] bulkhead-init: after-restart "),
        at("[storage] bulkhead-init: disk-sum-after-restart "),
        at("partition storage: PSCI SYSTEM_OFF, stopping it"),
    ];
    c.that(
        order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]),
        format!("first boot's I/O, reboot, the kernel's reset, second boot's read, power-off: out of order or missing: {order:?}"),
    );
    let banners = guest_lines(o).filter(|l| l.contains("Linux version")).count();
    c.that(banners == 2, format!("{banners} Linux banners, expected 2 (one per boot)"));
    let want = disk::expected(IO_BYTES);
    let read = disk::sums(guest_lines(o)).1;
    c.that(read.as_deref() == Some(want.as_str()), format!("the first boot's read-back checksum {read:?} is not the pattern's {want}"));
    let again = crate::linux::console::init_line(guest_lines(o), "disk-sum-after-restart").and_then(|l| l.split_whitespace().next());
    c.that(again == Some(want.as_str()), format!("the second boot read {again:?} from the disk, not the pattern's {want}"));
    let seen = crate::linux::console::init_line(guest_lines(o), "after-restart").unwrap_or("");
    c.that(seen.split_whitespace().eq(["pci-devices", "0000:00:00.0"]), format!("the second boot sees {seen:?}, expected its disk at 0000:00:00.0"));
    c.no_log(o, "insmod-failed");
    c.no_log(o, "EXCEPTION");
    c.no_log(o, "stopping this partition");
    c.log(o, "all 2 partitions stopped, 0 failed");
    disk_dma_in_storage(o, c, DISK_SID);
    c.no_bypass(o);
}
