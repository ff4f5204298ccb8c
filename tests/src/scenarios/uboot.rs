//! U-Boot boots bulkhead the way a vendor board's U-Boot does: Debian's
//! `u-boot-qemu` runs as `-bios` at EL2, has `booti` and `fdt
//! addr/resize/set` but no `fdt apply` and no semihosting file loading. So
//! the raw `Image`, the partition payloads and the compiled (unapplied)
//! overlay reach RAM through `-device loader`; a script typed at U-Boot's
//! prompt names the overlay in `/chosen/bulkhead,overlays` of the DTB QEMU
//! gave U-Boot (`${fdtcontroladdr}`) and `booti`s the image with that DTB;
//! the kernel merges the overlay itself.
//!
//! Where things are (2 GiB of RAM from 0x4000_0000):
//!
//! | what | where |
//! |---|---|
//! | QEMU's DTB for `-bios` | 0x4000_0000 (U-Boot copies it to `${fdtcontroladdr}`) |
//! | `Image` | [`IMAGE_AT`]; `booti` leaves a 2 MiB-aligned image with text_offset 0 in place |
//! | kernel heap | right after the image: up to about 0x4140_0000 |
//! | overlay blob | [`OVERLAY_AT`] (U-Boot's `ramdisk_addr_r`, unused without an initrd) |
//! | partitions (demo) | 0x4800_0000..0x4e00_0000; payloads at 0x6000_0000 and 0x6010_0000 |
//! | U-Boot after relocation | code at 0xbfef_7000, its stack, heap and FDT copy from 0xbddb_2000 |
//! | the DTB `booti` passes | copied just below U-Boot (`fdt_high=0xffffffff`; 0xbdda_8000): "Loading Device Tree to ..." |
//!
//! `uboot-demo` runs the shipped demo and asserts what the `-kernel` runs
//! assert, plus that the kernel ran from U-Boot's hand-over;
//! `uboot-overlay-truncated` gives it half an overlay blob, which the
//! kernel must refuse before it starts anything.

use crate::qemu::{Expect, Firmware, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness, GBPA, GBPA_ABORT};
use crate::trace::{kind, TraceEvent};
use std::time::Duration;

/// Debian's `u-boot-qemu` build for `qemu_arm64` (`cargo xtask` installs it).
pub const U_BOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The shipped demo overlay (its `qemu-args:` lines add the edu devices).
const DEMO: &str = include_str!("../../../boards/qemu-virt/overlays/demo.dts");

/// Where the `Image` is loaded and run: 2 MiB-aligned (the header's
/// text_offset is 0), the kernel's link address, below everything else.
const IMAGE_AT: u64 = 0x4020_0000;
/// Where the unapplied overlay blob is loaded: clear of the kernel's image
/// and heap, the partitions and U-Boot.
const OVERLAY_AT: u64 = 0x4400_0000;
/// A floor under what U-Boot occupies after relocating itself to the top
/// of RAM (its reservation starts at 0xbddb_2000 with 2 GiB) and under the
/// DTB `booti` copies just below that: nothing the scenario loads may reach
/// above it.
const UBOOT_LOW: u64 = 0xbd00_0000;
/// The demo partitions' memory (net, storage), from demo.dts.
const NET_MEM: (u64, u64) = (0x4800_0000, 0x4c00_0000);
const STORAGE_MEM: (u64, u64) = (0x4c00_0000, 0x4e00_0000);
/// The edu devices' StreamIDs (00:01.0 and 00:02.0: StreamID = requester ID).
const NET_SID: u64 = 0x8;
const STORAGE_SID: u64 = 0x10;

/// U-Boot's last line before it jumps to the kernel (`announce_and_cleanup`);
/// its serial driver turns `\n` into `\r\n`.
const HANDOVER: &str = "Starting kernel ...\r\n\r\n";
/// U-Boot's prompt.
const PROMPT: &str = "=> ";
/// Bound on each wait for U-Boot's text (it reaches its prompt in about a
/// second; the machine is shared).
const STEP: Duration = Duration::from_secs(30);
/// Where `booti` says it copied the DTB to.
const LOADING_DTB: &str = "Loading Device Tree to ";

/// net's one deliberate fault, after its DMA: an address its domain does
/// not map (the control that shows QEMU traces SMMU events at all).
const CONTROL_FAULT: &str = "unmapped-ipa:0x70000000";

const CR0: u64 = 0x20;
const CR0_SMMUEN: u64 = 1 << 0;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "uboot-demo", setup: |ctx| uboot(ctx, false), check: check_demo },
        Scenario { name: "uboot-overlay-truncated", setup: |ctx| uboot(ctx, true), check: check_truncated },
    ]
}

/// What is typed at U-Boot's prompt: stop autoboot, add the overlay's
/// region to `/chosen` of U-Boot's own copy of QEMU's DTB (grown first:
/// QEMU's blob is packed), show it for the transcript, and boot the image
/// with that DTB.
fn script(overlay_size: u64) -> Vec<Expect> {
    let commands = [
        "fdt addr ${fdtcontroladdr}".to_string(),
        "fdt resize 4096".to_string(),
        format!("fdt set /chosen bulkhead,overlays <0x0 {OVERLAY_AT:#x} 0x0 {overlay_size:#x}>"),
        "fdt print /chosen".to_string(),
        format!("booti {IMAGE_AT:#x} - ${{fdtcontroladdr}}"),
    ];
    let mut steps = vec![Expect::new("Hit any key to stop autoboot", " ", STEP)];
    steps.extend(commands.iter().map(|c| Expect::new(PROMPT, &format!("{c}\n"), STEP)));
    steps
}

/// The demo booted by U-Boot; with `truncated`, only the first half of the
/// overlay blob is loaded (and named in `/chosen`).
fn uboot(ctx: &Ctx, truncated: bool) -> Result<QemuConfig, String> {
    if !std::path::Path::new(U_BOOT).exists() {
        return Err(format!("{U_BOOT} is missing: install Debian's u-boot-qemu (cargo xtask test does as root)"));
    }
    // The -kernel path's helper works out where the payloads go (from the
    // overlay applied with fdtoverlay, read by the kernel's binding code)
    // and adds the overlay's devices; U-Boot then boots with QEMU's own DTB
    // instead of that merged one.
    let base = QemuConfig { timeout: Duration::from_secs(90), ..QemuConfig::default() };
    let dts = crate::dtb::set_bootargs(DEMO, "net", &format!("hello dma-own attack={CONTROL_FAULT}"))?;
    let mut cfg = ctx.with_overlay(base, &dts)?;
    cfg.dtb = None;

    let src = ctx.file("uboot-overlay.dts");
    std::fs::write(&src, &dts).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let dtbo = ctx.file("uboot-overlay.dtbo");
    crate::dtb::compile_overlay(&src, &dtbo)?;
    let mut blob = std::fs::read(&dtbo).map_err(|e| format!("cannot read {}: {e}", dtbo.display()))?;
    if truncated {
        blob.truncate((blob.len() / 2) & !3);
    }
    let loaded = ctx.file("overlay-in-ram.dtbo");
    std::fs::write(&loaded, &blob).map_err(|e| format!("cannot write {}: {e}", loaded.display()))?;

    let elf_path = &ctx.artifacts.kernel;
    let elf = std::fs::read(elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let image = crate::image::linux_image(&elf)?;
    let image_path = ctx.file("Image");
    std::fs::write(&image_path, &image).map_err(|e| format!("cannot write {}: {e}", image_path.display()))?;

    for (file, at) in [(&image_path, IMAGE_AT), (&loaded, OVERLAY_AT)] {
        cfg.extra.push("-device".into());
        cfg.extra.push(format!("loader,file={},addr={at:#x},force-raw=on", file.display()));
    }
    cfg.firmware = Some(Firmware {
        bios: U_BOOT.into(),
        script: script(blob.len() as u64),
        handover: HANDOVER.into(),
        handover_within: STEP,
        transcript: Some(ctx.file("u-boot.txt")),
    });
    Ok(cfg)
}

/// U-Boot ran the script and handed over; on failure, says where it stopped
/// with the end of its transcript (all of it is in the scenario's
/// `u-boot.txt`).
fn check_uboot(o: &Outcome, c: &mut Checks) -> bool {
    if let Some(e) = &o.console_error {
        let lines: Vec<&str> = o.console.lines().map(|l| l.trim_end_matches('\r')).collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n    ");
        c.that(false, format!("U-Boot: {e}; its transcript ends:\n    {tail}"));
        return false;
    }
    c.that(o.console.contains("U-Boot 20"), "U-Boot's banner is not in its transcript");
    c.that(!o.console.contains("FDT_ERR"), "a U-Boot fdt command failed (FDT_ERR in u-boot.txt)");
    c.that(
        o.console.contains(&format!("bulkhead,overlays = <0x00000000 {OVERLAY_AT:#010x} 0x00000000")),
        "U-Boot's `fdt print /chosen` does not show bulkhead,overlays",
    );
    true
}

/// The address `booti` copied the DTB to, from its "Loading Device Tree
/// to 00000000bdda8000, end ..." line.
fn dtb_from_uboot(console: &str) -> Option<u64> {
    let rest = &console[console.find(LOADING_DTB)? + LOADING_DTB.len()..];
    u64::from_str_radix(rest.split(',').next()?.trim(), 16).ok()
}

/// The size typed into `fdt set /chosen bulkhead,overlays <0x0 ADDR 0x0 SIZE>`.
fn typed_overlay_size(console: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains("fdt set /chosen bulkhead,overlays <"))?;
    let size = line.rsplit(' ').next()?.trim_end_matches('>');
    u64::from_str_radix(size.trim_start_matches("0x"), 16).ok()
}

/// Position of the first event matching `f`.
fn first(ev: &[TraceEvent], f: impl Fn(&TraceEvent) -> bool) -> Option<usize> {
    ev.iter().position(f)
}

fn write_to(e: &TraceEvent, off: u64) -> Option<u64> {
    (e.name == "smmuv3_write_mmio" && e.field("addr") == Some(off)).then(|| e.field("val")).flatten()
}

fn check_demo(o: &Outcome, c: &mut Checks) {
    if !check_uboot(o, c) {
        return;
    }
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    // Entered at EL2, where booti put it, with the DTB booti passed in x0
    // (reserved where U-Boot says it copied it) and the overlay merged.
    c.log(o, "CurrentEL: EL2");
    c.log(o, &format!("image: running at {IMAGE_AT:#x} (its link address)"));
    match dtb_from_uboot(&o.console) {
        Some(at) => {
            c.that(at >= UBOOT_LOW, format!("booti put the DTB at {at:#x}, below U-Boot's region {UBOOT_LOW:#x}"));
            if let Some(line) = c.log(o, &format!("reserved [{at:#010x}..")) {
                c.that(line.ends_with(" dtb"), format!("the reservation at {at:#x} is not the DTB's: {line}"));
            }
        }
        None => c.that(false, format!("U-Boot's transcript has no {LOADING_DTB:?} line")),
    }
    c.no_log(o, "reserved [0x40000000..0x40100000) dtb");
    c.log(o, "overlays: 1 applied from /chosen/bulkhead,overlays");
    if let Some(line) = c.log(o, &format!("reserved [{OVERLAY_AT:#010x}..")) {
        c.that(line.ends_with(" dtb"), format!("the overlay's region is not reserved as DTB: {line}"));
    }
    // The demo, as with -kernel: both partitions start, say hello, DMA
    // through their own device into their own memory, and exit cleanly.
    c.log(o, "configuration: 2 partitions");
    c.log(o, "partition net: group 1 (StreamIDs [0x8]) attached to its Stage2 domain");
    c.log(o, "partition storage: group 2 (StreamIDs [0x10]) attached to its Stage2 domain");
    c.log(o, "entry 0x48000000, DTB at 0x4bff0000");
    c.log(o, "entry 0x4c000000, DTB at 0x4dff0000");
    c.log(o, "[net] hello from net at EL1, dtb 0x4bff0000");
    c.log(o, "[storage] hello from storage at EL1, dtb 0x4dff0000");
    c.log(o, "[net] dma own 0x48100000: ok, 64 bytes verified");
    c.log(o, "[storage] dma own 0x4c100000: ok, 64 bytes verified");
    c.log(o, "partition net: exited with status 0");
    c.log(o, "partition storage: exited with status 0");
    c.log(o, "all 2 partitions stopped, 0 failed");
    // QEMU's own record of the bring-up and of every DMA.
    c.gbpa_abort_first(o);
    let ev = &o.trace.events;
    let gbpa = first(ev, |e| write_to(e, GBPA).is_some_and(|v| v & GBPA_ABORT != 0));
    let enable = first(ev, |e| write_to(e, CR0).is_some_and(|v| v & CR0_SMMUEN != 0));
    c.that(enable.is_some(), "QEMU's trace has no SMMUEN");
    c.that(gbpa < enable, format!("GBPA.ABORT (event {gbpa:?}) not written before SMMUEN (event {enable:?})"));
    for (name, sid, (lo, hi)) in [("net", NET_SID, NET_MEM), ("storage", STORAGE_SID, STORAGE_MEM)] {
        let cfgi = first(ev, |e| e.name == "smmuv3_cmdq_cfgi_ste" && e.field("streamid") == Some(sid));
        c.that(cfgi.is_some(), format!("QEMU saw no STE invalidation for {name}'s StreamID {sid:#x}"));
        c.that(cfgi > enable, format!("{name}'s STE was configured before SMMUEN"));
        let ok: Vec<&TraceEvent> = o.trace.of(kind::TRANSLATE_SUCCESS).filter(|e| e.field("sid") == Some(sid)).collect();
        c.that(!ok.is_empty(), format!("QEMU translated none of {name}'s DMA"));
        for e in ok {
            let pa = e.field("translated").unwrap_or(u64::MAX);
            c.that((lo..hi).contains(&pa), format!("QEMU translated {name}'s DMA outside its memory: {}", e.args));
        }
    }
    // net's one deliberate fault (its last DMA, at an address outside its
    // memory) shows QEMU traces events; there must be no other.
    let net_fault = |e: &TraceEvent| e.field("sid") == Some(NET_SID);
    c.none_of(o, kind::EVENT, "SMMU event other than net's deliberate fault", |e| !net_fault(e), Witness::InRun("for net's deliberate fault", &net_fault));
    c.log(o, &format!("[net] attack {} ", CONTROL_FAULT.split(':').next().unwrap_or("")));
    c.that(!o.trace.other.iter().any(|l| l.contains("C_BAD")), "QEMU reported a bad STE or CD");
}

fn check_truncated(o: &Outcome, c: &mut Checks) {
    if !check_uboot(o, c) {
        return;
    }
    c.exit(o, exit::BAD_DEVICE_TREE);
    match typed_overlay_size(&o.console) {
        Some(size) => {
            if let Some(line) = c.log(o, "cannot boot: overlays[0]: truncated: header says ") {
                c.that(line.ends_with(&format!(" bytes, {size} available")), format!("the refusal does not name the {size} bytes U-Boot was told: {line}"));
            }
        }
        None => c.that(false, "U-Boot's transcript does not show the fdt set command"),
    }
    c.no_log(o, "overlays: 1 applied");
    c.no_log(o, "configuration:");
    c.no_log(o, "partition net");
    c.no_log(o, "partition storage");
    c.no_log(o, "[net]");
    c.no_log(o, "[storage]");
    c.gbpa_abort_first(o);
    c.none_of(o, kind::TRANSLATE_SUCCESS, "DMA translated although no partition started", |_| true, Witness::Catalogue);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing the scenario loads overlaps: image and heap (16 MiB right
    /// after an image of under 2 MiB), overlay, partitions, payloads, U-Boot.
    #[test]
    fn placements_do_not_overlap() {
        let regions = [
            (IMAGE_AT, IMAGE_AT + (18 << 20)),
            (OVERLAY_AT, OVERLAY_AT + 0x10_0000),
            NET_MEM,
            STORAGE_MEM,
            (0x6000_0000, 0x6020_0000),
            (UBOOT_LOW, 0xc000_0000),
        ];
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:#x?} overlaps {b:#x?}");
            }
        }
        assert_eq!(IMAGE_AT % (2 << 20), 0);
    }

    #[test]
    fn reads_the_transcript() {
        let t = "=> fdt set /chosen bulkhead,overlays <0x0 0x44000000 0x0 0x5ac>\r\n\
                 => booti 0x40200000 - ${fdtcontroladdr}\r\n   Loading Device Tree to 00000000bdda8000, end 00000000bddb124f ... OK\r\n";
        assert_eq!(typed_overlay_size(t), Some(0x5ac));
        assert_eq!(dtb_from_uboot(t), Some(0xbdda_8000));
        assert_eq!(dtb_from_uboot("no"), None);
    }

    #[test]
    fn a_stalled_u_boot_fails_with_its_transcript() {
        let o = Outcome {
            console: "U-Boot 2023.01\r\n=> booti 0x40200000 - ${fdtcontroladdr}\r\nBad Linux ARM64 Image magic!\r\n=> ".into(),
            console_error: Some("the firmware did not hand over".into()),
            ..Outcome::default()
        };
        let mut c = Checks::default();
        check_demo(&o, &mut c);
        assert_eq!(c.failures.len(), 1, "{:?}", c.failures);
        assert!(c.failures[0].contains("the firmware did not hand over"));
        assert!(c.failures[0].contains("\n    Bad Linux ARM64 Image magic!\n"));
    }

    #[test]
    fn the_script_boots_the_overlay_it_names() {
        let s = script(0x5ac);
        assert_eq!(s[0].wait_for, "Hit any key to stop autoboot");
        assert!(s.iter().any(|e| e.send == "fdt set /chosen bulkhead,overlays <0x0 0x44000000 0x0 0x5ac>\n"));
        assert_eq!(s.last().map(|e| e.send.as_str()), Some("booti 0x40200000 - ${fdtcontroladdr}\n"));
    }
}
