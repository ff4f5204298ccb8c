//! Debian's unmodified arm64 Linux in a partition (issue 16), beside the
//! payload partition doing DMA: its own device tree (virtual GICv3, timer,
//! PSCI on `hvc`, an SBSA UART console), the Image header checked, an
//! initramfs copied in from `bulkhead,initrd`.
//!
//! - `linux-boot`: Linux reaches its init on 2 vCPUs, the virtual timer
//!   ticks, the console lines appear tagged `[linux]` in the kernel log,
//!   init powers off (PSCI SYSTEM_OFF) and the kernel logs the partition
//!   stopped, while the payload partition verified its DMA and QEMU's trace
//!   shows its translations through the SMMU.

use crate::dtb::Boot;
use crate::linux::console;
use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{Checks, Ctx, Scenario};
use crate::trace::kind;
use std::time::Duration;

/// Where the loader puts Debian's Image and the initramfs (outside every
/// partition's memory), and the Linux partition's RAM.
const IMAGE_AT: u64 = 0x7000_0000;
const IMAGE_ROOM: u64 = 0x0300_0000;
const INITRD_AT: u64 = 0x7400_0000;

fn overlay(initrd_size: u64) -> String {
    let rd = initrd_size.div_ceil(0x1000) * 0x1000;
    format!(
        r#"/*
 * qemu-args: -device edu,dma_mask=0xffffffffffffffff,addr=1.0
 */
/dts-v1/;
/plugin/;

&{{/}} {{
    partitions {{
        compatible = "bulkhead,partitions";
        #address-cells = <2>;
        #size-cells = <2>;

        linux: linux {{
            compatible = "bulkhead,partition";
            memory = <0x0 0x50000000 0x0 0x10000000>;
            bulkhead,image = <0x0 {IMAGE_AT:#x} 0x0 {IMAGE_ROOM:#x}>;
            bulkhead,entry = <0x0 0x50000000>;
            bulkhead,initrd = <0x0 {INITRD_AT:#x} 0x0 {rd:#x}>;
            bulkhead,bootargs = "console=ttyAMA0 earlycon printk.devkmsg=on";
            bulkhead,log-limit = <1000000 10>;
        }};

        storage: storage {{
            compatible = "bulkhead,partition";
            memory = <0x0 0x4c000000 0x0 0x02000000>;
            bulkhead,image = <0x0 0x60100000 0x0 0x00100000>;
            bulkhead,entry = <0x0 0x4c000000>;
            bulkhead,bootargs = "hello dma-loop=9000 dma-own";
        }};
    }};
}};

&{{/cpus/cpu@1}} {{ bulkhead,partition = <&storage>; }};
&{{/cpus/cpu@2}} {{ bulkhead,partition = <&linux>; }};
&{{/cpus/cpu@3}} {{ bulkhead,partition = <&linux>; }};

&{{/pcie@10000000}} {{
    #address-cells = <3>;
    #size-cells = <2>;

    edu@1,0 {{
        reg = <0x0800 0x0 0x0 0x0 0x0>;
        bulkhead,partition = <&storage>;
    }};
}};
"#
    )
}

/// init: the CPU count, the timer across a sleep, then power off.
const BOOT_BODY: &str = r#"echo "bulkhead-init: cpus $(nproc)"
echo "bulkhead-init: timer-before $(grep arch_timer /proc/interrupts)"
sleep 1
echo "bulkhead-init: timer-after $(grep arch_timer /proc/interrupts)""#;

fn setup(ctx: &Ctx, body: &str) -> Result<QemuConfig, String> {
    let guest = crate::linux::guest()?;
    let initrd = ctx.file("initramfs.cpio");
    guest.initramfs(body)?.write(&initrd)?;
    let size = std::fs::metadata(&initrd).map_err(|e| format!("{}: {e}", initrd.display()))?.len();
    let boot = Boot { partition: "linux".into(), image: guest.image.clone(), initrd: Some(initrd) };
    let cfg = QemuConfig { smp: 4, memory: "2G".into(), timeout: Duration::from_secs(400), ..QemuConfig::default() };
    crate::dtb::with_overlay_files(cfg, &overlay(size), &ctx.dir, &ctx.artifacts.payload, &[boot])
}

/// Scenarios that pass; the lead's CI runs these.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario { name: "linux-boot", setup: |ctx| setup(ctx, BOOT_BODY), check: check_boot }]
}

/// Scenarios written but not passing yet (see the issue-16 note): run by
/// name with `BULKHEAD_UNFINISHED=1`.
pub fn unfinished() -> Vec<Scenario> {
    Vec::new()
}

fn lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    o.log.iter().map(|l| l.message.as_str())
}

/// The guest console lines, with the `[linux] ` tag taken off.
fn guest_lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    lines(o).filter_map(|l| l.strip_prefix("[linux] "))
}

fn check_boot(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    c.log(o, "partition linux: arm64 Linux Image");
    if let Ok(g) = crate::linux::guest() {
        c.that(guest_lines(o).any(|l| l.contains(&format!("Linux version {} ", g.release))), "no tagged Linux banner on the console");
    }
    c.that(guest_lines(o).any(|l| l.contains("Run /init as init process")), "Linux did not reach init");
    let cpus = console::init_line(guest_lines(o), "cpus");
    c.that(cpus == Some("2"), format!("init counted {cpus:?} CPUs, expected 2"));
    let before = console::interrupt_counts(console::init_line(guest_lines(o), "timer-before").unwrap_or(""));
    let after = console::interrupt_counts(console::init_line(guest_lines(o), "timer-after").unwrap_or(""));
    c.that(before.len() == 2 && before.iter().zip(&after).all(|(b, a)| a > b), format!("the timer did not tick on both vCPUs: {before:?} -> {after:?}"));
    c.log(o, "partition linux: PSCI SYSTEM_OFF, stopping it");
    // The payload partition kept doing DMA while Linux booted: its loop
    // ends after Linux's banner, with nothing bad, then its own check.
    let banner = lines(o).position(|l| l.starts_with("[linux]") && l.contains("Linux version"));
    let looped = lines(o).position(|l| l.starts_with("[storage] dma-loop: verified"));
    c.that(banner.is_some() && looped.is_some() && banner < looped, format!("the payload's DMA loop did not run across Linux's boot (banner at {banner:?}, loop end at {looped:?})"));
    if let Some(l) = c.log(o, "[storage] dma-loop: verified") {
        c.that(l.contains("bad 0x0"), format!("the payload's DMA loop saw bad transfers: {l}"));
    }
    c.log(o, "[storage] dma own 0x4c100000: ok");
    c.log(o, "partition storage: exited with status 0");
    c.no_log(o, "dropped (rate limit)");
    c.no_log(o, "hypercall 0x8600ff01 refused");
    c.log(o, "all 2 partitions stopped, 0 failed");
    c.no_log(o, "EXCEPTION");
    // The payload's DMA went through the SMMU while Linux ran.
    c.that(o.trace.events.iter().any(|e| kind::TRANSLATE_SUCCESS.matches(e)), "QEMU's trace has no successful SMMU translation of the payload's DMA");
}
