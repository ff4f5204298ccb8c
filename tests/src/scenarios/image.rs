//! The raw `Image` with the Linux arm64 header, booted the way a Linux
//! loader boots it. QEMU's `-kernel Image` path (hw/arm/boot.c) loads the
//! image at RAM base + text_offset (+2 MiB when text_offset is below its
//! 4 KiB boot stub), takes the header's image_size as the kernel's extent,
//! puts the DTB at the first 2 MiB boundary at or above both RAM base +
//! min(RAM / 2, 128 MiB) and the end of the image (not at the bottom of RAM
//! as on the ELF path), and enters at EL2 with x0 = the DTB.
//!
//! `image-boot` runs at the link address; `image-relocated*` patch the
//! header's text_offset so QEMU puts the image at 0x4a00_0000, where `_start`
//! must apply its own relocations and everything the kernel derives from its
//! location (identity map, stack guard, memory reservations) must follow;
//! `image-misplaced` is placed where the kernel must refuse to run.
//! `image-overlay-*` boot the way U-Boot without `fdt apply` does: the
//! partition overlay is loaded into RAM unapplied and named in
//! `/chosen/bulkhead,overlays`, and the kernel merges it.

use crate::image::linux_image;
use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, GBPA, GBPA_ABORT, GBPA_UPDATE};
use crate::Image;
use std::process::Command;

/// Where QEMU's `virt` RAM starts.
const RAM_BASE: u64 = 0x4000_0000;
/// Where the kernel is linked (boards/qemu-virt/link.ld): QEMU's Image path
/// puts an image with text_offset 0 at RAM base + 2 MiB, the same place.
const LINK_BASE: u64 = 0x4020_0000;
/// text_offset for the relocated runs: QEMU loads the image at
/// RAM base + text_offset, 2 MiB-aligned and clear of the DTB.
const RELOCATED_OFFSET: u64 = 0x0a00_0000;
/// Where QEMU's Image path puts the DTB with 2 GiB of RAM, no initrd and
/// an image ending below it: RAM base + min(RAM / 2, 128 MiB).
const IMAGE_PATH_DTB: u64 = RAM_BASE + (128 << 20);
/// The DTB's alignment on QEMU's Image path.
const DTB_ALIGN: u64 = 2 << 20;
/// Size of QEMU's generated DTB (its totalsize).
const QEMU_DTB_SIZE: u64 = 1 << 20;
/// Byte offset of text_offset in the arm64 image header.
const TEXT_OFFSET_AT: usize = 8;
/// Exit status when the platform cannot be set up (`platform::ExitCode::PlatformError`).
const PLATFORM_ERROR: i32 = 5;
/// Where the overlay scenarios load the unapplied overlay blob: RAM clear of
/// the image, its heap, the DTB and the partitions' memory.
const OVERLAY_AT: u64 = 0x4400_0000;
/// Where the payload goes for each partition of [`TWO_PARTITIONS`].
const PAYLOAD_AT: [u64; 2] = [0x6000_0000, 0x6010_0000];
/// The hello configuration with partition memory above the DTB that QEMU's
/// Image path puts at 0x4800_0000.
const TWO_PARTITIONS: &str = r#"
/dts-v1/;
/plugin/;

&{/} {
    partitions {
        compatible = "bulkhead,partitions";
        #address-cells = <2>;
        #size-cells = <2>;

        net: net {
            compatible = "bulkhead,partition";
            memory = <0x0 0x50000000 0x0 0x04000000>;
            bulkhead,image = <0x0 0x60000000 0x0 0x00100000>;
            bulkhead,entry = <0x0 0x50000000>;
            bulkhead,bootargs = "hello";
        };

        storage: storage {
            compatible = "bulkhead,partition";
            memory = <0x0 0x54000000 0x0 0x02000000>;
            bulkhead,image = <0x0 0x60100000 0x0 0x00100000>;
            bulkhead,entry = <0x0 0x54000000>;
            bulkhead,bootargs = "hello";
        };
    };
};

&{/cpus/cpu@1} { bulkhead,partition = <&net>; };
&{/cpus/cpu@2} { bulkhead,partition = <&storage>; };
"#;

/// A second fragment for [`TWO_PARTITIONS`]: firmware memory inside
/// storage's RAM.
const RESERVES_STORAGE: &str = r#"
&{/} {
    reserved-memory {
        #address-cells = <2>;
        #size-cells = <2>;
        ranges;

        fw@55000000 {
            reg = <0x0 0x55000000 0x0 0x100000>;
            no-map;
        };
    };
};
"#;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "image-boot", setup: |ctx| image_config(ctx, None, Image::Production), check: check_image_boot },
        Scenario { name: "image-relocated", setup: |ctx| image_config(ctx, Some(RELOCATED_OFFSET), Image::Production), check: check_relocated },
        Scenario {
            name: "image-relocated-data-abort",
            setup: |ctx| {
                let cfg = image_config(ctx, Some(RELOCATED_OFFSET), Image::Selftest)?;
                Ok(QemuConfig { append: Some("bulkhead.selftest=data-abort".into()), ..cfg })
            },
            check: check_relocated_data_abort,
        },
        Scenario {
            // 4 KiB off a 64 KiB boundary: the identity map would still
            // work, defmt's string indices would not; `_start` must stop.
            name: "image-misplaced",
            setup: |ctx| image_config(ctx, Some(RELOCATED_OFFSET + 0x1000), Image::Production),
            check: |o, c| {
                c.exit(o, PLATFORM_ERROR);
                c.that(o.log.is_empty(), format!("a misplaced image logged {} lines", o.log.len()));
                // `_start` aborts the board's SMMUs before it looks at
                // where it runs, and does nothing else to them.
                let writes = o.trace.mmio_writes();
                c.that(
                    !writes.is_empty() && writes.iter().all(|&(off, v)| off == GBPA && v == GBPA_ABORT | GBPA_UPDATE),
                    format!("a misplaced image wrote {writes:x?} to the SMMU, expected GBPA=ABORT|UPDATE only"),
                );
            },
        },
        Scenario { name: "image-overlay-by-kernel", setup: |ctx| overlay_for_the_kernel(ctx, TWO_PARTITIONS), check: check_overlay_by_kernel },
        Scenario {
            // What an overlay the kernel applies reserves is reserved: a
            // partition over it is refused like one over the firmware's.
            name: "image-overlay-reserves",
            setup: |ctx| overlay_for_the_kernel(ctx, &format!("{TWO_PARTITIONS}\n{RESERVES_STORAGE}")),
            check: check_overlay_reserves,
        },
        Scenario {
            name: "image-overlay-refused",
            setup: |ctx| overlay_for_the_kernel(ctx, &TWO_PARTITIONS.replace("&{/cpus/cpu@2}", "&{/cpus/cpu@9}")),
            check: check_overlay_refused,
        },
    ]
}

/// Boots the Image with the overlay source `dts` compiled (`dtc -@`) but not
/// applied: the blob is loaded at [`OVERLAY_AT`], QEMU's DTB gets
/// `/chosen/bulkhead,overlays` naming it (as U-Boot's `fdt set` would add
/// it), and the payload goes to every partition's image address.
fn overlay_for_the_kernel(ctx: &Ctx, dts: &str) -> Result<QemuConfig, String> {
    let mut cfg = image_config(ctx, None, Image::Production)?;
    let src = ctx.file("overlay.dts");
    std::fs::write(&src, dts).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let dtbo = ctx.file("overlay.dtbo");
    crate::dtb::compile_overlay(&src, &dtbo)?;
    let size = std::fs::metadata(&dtbo).map_err(|e| format!("{}: {e}", dtbo.display()))?.len();
    let dtb = ctx.file("base.dtb");
    cfg.dump_dtb(&dtb)?;
    let out = Command::new("fdtput")
        .args(["-t", "x"])
        .arg(&dtb)
        .args(["/chosen", "bulkhead,overlays", "0", &format!("{OVERLAY_AT:x}"), "0", &format!("{size:x}")])
        .output()
        .map_err(|e| format!("cannot run fdtput: {e}"))?;
    if !out.status.success() {
        return Err(format!("fdtput failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let payload = ctx.artifacts.payload.display();
    cfg.extra.push("-device".into());
    cfg.extra.push(format!("loader,file={},addr={OVERLAY_AT:#x},force-raw=on", dtbo.display()));
    for at in PAYLOAD_AT {
        cfg.extra.push("-device".into());
        cfg.extra.push(format!("loader,file={payload},addr={at:#x},force-raw=on"));
    }
    Ok(QemuConfig { dtb: Some(dtb), ..cfg })
}

/// Writes the `Image` of the kernel under test (with text_offset replaced
/// when given) and boots it with `-kernel`.
fn image_config(ctx: &Ctx, text_offset: Option<u64>, which: Image) -> Result<QemuConfig, String> {
    let elf_path = ctx.artifacts.kernel(which);
    let elf = std::fs::read(elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let mut image = linux_image(&elf)?;
    if let Some(off) = text_offset {
        image[TEXT_OFFSET_AT..TEXT_OFFSET_AT + 8].copy_from_slice(&off.to_le_bytes());
    }
    let path = ctx.file("Image");
    std::fs::write(&path, &image).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(QemuConfig { kernel: Some(path), image: which, ..QemuConfig::default() })
}

/// Reads the end of a banner range line `... [0x..0xEND) ...`.
fn range_end(line: &str) -> Option<u64> {
    let end = line.split("..").nth(1)?.split(')').next()?;
    u64::from_str_radix(end.trim_start_matches("0x"), 16).ok()
}

/// Banner facts every Image boot shows, with the image at `at`.
fn check_banner(o: &Outcome, c: &mut Checks, at: u64) {
    c.clean_log(o);
    c.log(o, "bulkhead 0.1.0");
    c.log(o, "CurrentEL: EL2");
    c.log(o, "CPUs: 4");
    c.log(o, "memory: 2048 MiB");
    c.log(o, "RAM      [0x40000000..0xc0000000) 2048 MiB");
    // The memory map reserves the image (image_size: text through stack)
    // where it runs.
    let Some(kernel) = c.log(o, &format!("reserved [{at:#010x}..")).map(str::to_string) else { return };
    c.that(kernel.ends_with(" kernel"), format!("the reservation at {at:#x} is not the kernel's: {kernel}"));
    // The DTB came in x0, from where QEMU's Image path put it: past the
    // image's image_size, so its bss and stack never cover the DTB.
    let Some(image_end) = range_end(&kernel) else {
        c.that(false, format!("cannot read the kernel reservation {kernel:?}"));
        return;
    };
    let dtb = IMAGE_PATH_DTB.max(image_end).next_multiple_of(DTB_ALIGN);
    if let Some(line) = c.log(o, &format!("reserved [{dtb:#010x}..")) {
        c.that(line.ends_with(" dtb"), format!("the reservation at {dtb:#x} is not the DTB's: {line}"));
    }
    c.no_log(o, "reserved [0x40000000..0x40100000) dtb");
    let m = c.machine(o);
    for s in &m.smmus {
        c.log(o, &format!("SMMUv3 {} at {:#x} size 0x20000, coherent", s.name, s.base));
    }
    c.gbpa_abort_first(o);
}

fn check_image_boot(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    check_banner(o, c, LINK_BASE);
    c.log(o, &format!("reserved [{IMAGE_PATH_DTB:#010x}..{:#010x}) dtb", IMAGE_PATH_DTB + QEMU_DTB_SIZE));
    c.log(o, &format!("image: running at {LINK_BASE:#x} (its link address)"));
}

fn check_relocated(o: &Outcome, c: &mut Checks) {
    let at = RAM_BASE + RELOCATED_OFFSET;
    c.exit(o, exit::SUCCESS);
    check_banner(o, c, at);
    c.log(o, &format!("image: running at {at:#x} (linked at {LINK_BASE:#x}, relocated)"));
    c.no_log(o, &format!("reserved [{LINK_BASE:#010x}.."));
}

/// The stack guard page is unmapped where the image runs, not where it was
/// linked: the identity map followed the load address, and the relocated
/// exception vectors report the fault.
fn check_relocated_data_abort(o: &Outcome, c: &mut Checks) {
    let at = RAM_BASE + RELOCATED_OFFSET;
    c.exit(o, exit::EXCEPTION);
    c.log(o, &format!("image: running at {at:#x}"));
    let announced = c.log(o, "selftest: reading the unmapped stack guard page at").map(str::to_string);
    c.log(o, "DFSC=0x07 (translation fault, level 3), WnR=0 (read)");
    if let Some(line) = announced {
        let hex = line.rsplit(' ').next().unwrap_or("").trim_start_matches("0x");
        match u64::from_str_radix(hex, 16) {
            Ok(guard) => {
                c.that((at..at + (16 << 20)).contains(&guard), format!("guard page {guard:#x} is not inside the relocated image at {at:#x}"));
                c.log(o, &format!("FAR={guard:#018x}"));
            }
            Err(_) => c.that(false, format!("cannot read the guard address in {line:?}")),
        }
    }
}

fn check_overlay_by_kernel(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    check_banner(o, c, LINK_BASE);
    c.log(o, "overlays: 1 applied from /chosen/bulkhead,overlays");
    c.log(o, &format!("reserved [{OVERLAY_AT:#010x}..{:#010x}) dtb", OVERLAY_AT + 0x1000));
    c.log(o, "configuration: 2 partitions");
    c.log(o, "[net] hello from net at EL1");
    c.log(o, "[net] memory 0x50000000 size 0x4000000");
    c.log(o, "[storage] hello from storage at EL1");
    c.log(o, "[storage] memory 0x54000000 size 0x2000000");
    c.log(o, "all 2 partitions stopped, 0 failed");
}

fn check_overlay_reserves(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::CONFIG_REFUSED);
    c.log(o, "overlays: 1 applied from /chosen/bulkhead,overlays");
    c.log(o, "configuration refused: /partitions/storage: property memory: region [0x54000000..0x56000000) overlaps reserved memory [0x55000000..0x55100000)");
    c.no_log(o, "partition net");
    c.gbpa_abort_first(o);
}

fn check_overlay_refused(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::BAD_DEVICE_TREE);
    c.log(o, "cannot boot: overlays[0]: fragment@2: target \"/cpus/cpu@9\" is not in the base tree");
    c.no_log(o, "configuration:");
    c.gbpa_abort_first(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_image_is_2mib_aligned_and_away_from_its_link_address() {
        let at = RAM_BASE + RELOCATED_OFFSET;
        assert_eq!(at % (2 << 20), 0);
        assert!(at >= IMAGE_PATH_DTB + QEMU_DTB_SIZE);
        assert_ne!(at, LINK_BASE);
    }

    #[test]
    fn reads_range_ends() {
        assert_eq!(range_end("  reserved [0x4a000000..0x4a0d1000) kernel"), Some(0x4a0d_1000));
        assert_eq!(range_end("no range"), None);
    }
}
