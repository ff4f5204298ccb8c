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
//! - `linux-hostile`: from Linux (busybox `devmem` with `iomem=relaxed`,
//!   and the probe module's HVC/SMC), writes to distributor registers of
//!   SPIs it does not own, to a redistributor of a vCPU it does not have,
//!   PSCI CPU_ON and AFFINITY_INFO of CPUs that are not its own (the
//!   payload's, the kernel's), SMCCC calls with random function IDs on both
//!   conduits: each ignored or refused, Linux carries on to its power-off,
//!   the payload partition verifies its DMA, the kernel logs no fault.
//! - `linux-reset`: Linux's `reboot` (PSCI SYSTEM_RESET) restarts the
//!   partition from its image with its memory scrubbed: Linux boots again
//!   (its DTB's `/chosen/bulkhead,restarts` says 1), brings up its second
//!   vCPU again and powers off; the payload partition is unaffected.

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

/// The virtual board's GIC (partitions::vm::board): distributor, first
/// redistributor, and the SGI_base frame offset in a redistributor.
const GICD: u64 = 0x0800_0000;
const GICR: u64 = 0x080a_0000;
const GICR_STRIDE: u64 = 0x2_0000;
const SGI_BASE: u64 = 0x1_0000;
/// GICD_ISENABLER1 (SPIs 32..63), GICD_IROUTER<n> (IHI 0069 §12.9).
const ISENABLER1: u64 = GICD + 0x104;
const fn irouter(intid: u64) -> u64 {
    GICD + 0x6000 + intid * 8
}
/// The console UART's SPI (the partition's own) and one it does not own.
const UART_SPI: u64 = 33;
const FOREIGN_SPI: u64 = 40;
/// The partition's vCPUs (MPIDRs), the payload's CPU and the kernel's.
const OWN_CPU: u64 = 0x3;
const PAYLOAD_CPU: u64 = 0x1;
const KERNEL_CPU: u64 = 0x0;
/// Random SMCCC calls the probe makes on each conduit.
const RANDOM_CALLS: usize = 12;

fn hostile_body() -> String {
    use crate::linux::console::fid;
    use crate::linux::initramfs::PROBE_PATH;
    let third_gicr = GICR + 2 * GICR_STRIDE;
    let calls = [
        format!("hvc:{:#x}:{PAYLOAD_CPU:#x}:0x50000000:0x0", fid::CPU_ON),
        format!("hvc:{:#x}:{KERNEL_CPU:#x}:0x50000000:0x0", fid::CPU_ON),
        format!("smc:{:#x}:{PAYLOAD_CPU:#x}:0x50000000:0x0", fid::CPU_ON),
        format!("hvc:{:#x}:{OWN_CPU:#x}:0x50000000:0x0", fid::CPU_ON),
        format!("hvc:{AFFINITY_INFO:#x}:{PAYLOAD_CPU:#x}:0x0"),
        format!("hvc:{AFFINITY_INFO:#x}:{OWN_CPU:#x}:0x0"),
    ]
    .join(",");
    format!(
        r#"devmem {ISENABLER1:#x} 32 0xffffffff
echo "bulkhead-init: isenabler1 $(devmem {ISENABLER1:#x} 32)"
devmem {foreign:#x} 64 0x2
echo "bulkhead-init: irouter-foreign $(devmem {foreign:#x} 64)"
echo "bulkhead-init: irouter-own $(devmem {own:#x} 64)"
devmem {gicr2_en:#x} 32 0xffffffff
echo "bulkhead-init: gicr2-isenabler0 $(devmem {gicr2_en:#x} 32)"
echo "bulkhead-init: gicr2-typer $(devmem {gicr2_typer:#x} 32)"
echo "bulkhead-init: gicr0-isenabler0 $(devmem {gicr0_en:#x} 32)"
insmod {PROBE_PATH} call={calls} random={RANDOM_CALLS} conduit=hvc seed=7
echo "bulkhead-init: insmod-hvc $?"
rmmod bulkhead_probe
insmod {PROBE_PATH} random={RANDOM_CALLS} conduit=smc seed=11
echo "bulkhead-init: insmod-smc $?"
echo "bulkhead-init: alive $(nproc)""#,
        foreign = irouter(FOREIGN_SPI),
        own = irouter(UART_SPI),
        gicr2_en = third_gicr + SGI_BASE + 0x100,
        gicr2_typer = third_gicr + 0x8,
        gicr0_en = GICR + SGI_BASE + 0x100,
    )
}

/// PSCI AFFINITY_INFO (SMC64).
const AFFINITY_INFO: u64 = 0xc400_0004;

fn setup(ctx: &Ctx, body: &str, bootargs: &str) -> Result<QemuConfig, String> {
    setup_with(ctx, body, bootargs, "hello dma-loop=9000 dma-own")
}

fn setup_with(ctx: &Ctx, body: &str, bootargs: &str, payload_args: &str) -> Result<QemuConfig, String> {
    let guest = crate::linux::guest()?;
    let initrd = ctx.file("initramfs.cpio");
    guest.initramfs(body)?.write(&initrd)?;
    let size = std::fs::metadata(&initrd).map_err(|e| format!("{}: {e}", initrd.display()))?.len();
    let boot = Boot { partition: "linux".into(), image: guest.image.clone(), initrd: Some(initrd) };
    let cfg = QemuConfig { smp: 4, memory: "2G".into(), timeout: Duration::from_secs(400), ..QemuConfig::default() };
    let dts = overlay(size)
        .replace("console=ttyAMA0 earlycon printk.devkmsg=on", &format!("console=ttyAMA0 earlycon printk.devkmsg=on{bootargs}"))
        .replace("hello dma-loop=9000 dma-own", payload_args);
    crate::dtb::with_overlay_files(cfg, &dts, &ctx.dir, &ctx.artifacts.payload, &[boot])
}

/// The bench's init: marks at init and at power-off only.
const BENCH_BODY: &str = "echo \"bulkhead-init: cpus $(nproc)\"";

/// The bench's machine (`cargo xtask bench`, section linux): the same
/// partitions with the payload only saying hello, so Linux's boot is what
/// the run measures; deterministic (the bench adds `-icount`).
pub fn bench_partition(dir: &std::path::Path, artifacts: &crate::Artifacts) -> Result<QemuConfig, String> {
    let ctx = Ctx { dir: dir.to_path_buf(), artifacts };
    let mut cfg = setup_with(&ctx, BENCH_BODY, "", "hello")?;
    cfg.deterministic = true;
    Ok(cfg)
}

/// The same Linux kernel and initramfs booted on the same QEMU without
/// bulkhead: at EL1 (no EL2, as in a partition), 2 CPUs, 256 MiB.
pub fn bench_bare(dir: &std::path::Path) -> Result<QemuConfig, String> {
    let guest = crate::linux::guest()?;
    let initrd = dir.join("initramfs.cpio");
    guest.initramfs(BENCH_BODY)?.write(&initrd)?;
    Ok(QemuConfig {
        flavour: crate::qemu::Flavour::NoVirtualization,
        smp: 2,
        memory: "256M".into(),
        kernel: Some(guest.image.clone()),
        initrd: Some(initrd),
        console: crate::qemu::Console::Text,
        append: Some("console=ttyAMA0 earlycon printk.devkmsg=on".into()),
        deterministic: true,
        timeout: Duration::from_secs(300),
        ..QemuConfig::default()
    })
}

/// The counter value at the init script's `mark NAME` (guest counter
/// ticks: ns at 1 GHz), in a partition's log (tagged) or a bare boot's.
pub fn mark(o: &Outcome, name: &str) -> Option<u64> {
    console::mark(lines(o).map(|l| l.strip_prefix("[linux] ").unwrap_or(l)), name)
}

/// Scenarios that pass; the lead's CI runs these.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "linux-boot", setup: |ctx| setup(ctx, BOOT_BODY, ""), check: check_boot },
        Scenario { name: "linux-hostile", setup: |ctx| setup(ctx, &hostile_body(), " iomem=relaxed"), check: check_hostile },
        Scenario { name: "linux-reset", setup: |ctx| setup(ctx, RESET_BODY, ""), check: check_reset },
    ]
}

/// init: on the first boot (`/chosen/bulkhead,restarts` = 0) reboot (PSCI
/// SYSTEM_RESET); after the restart, count the CPUs and power off.
const RESET_BODY: &str = r#"r=$(tr -d '\000' < /proc/device-tree/chosen/bulkhead,restarts | wc -c)
echo "bulkhead-init: restarts-seen $r"
if [ "$r" = 0 ]; then echo "bulkhead-init: rebooting"; reboot -f; sleep 10; fi
echo "bulkhead-init: after-reset cpus $(nproc)""#;

fn lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    o.log.iter().map(|l| l.message.as_str())
}

/// The guest console lines, with the `[linux] ` tag taken off.
fn guest_lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    lines(o).filter_map(|l| l.strip_prefix("[linux] "))
}

/// What every Linux scenario shows: the Image taken, Linux's banner and
/// init on the tagged console, the payload's DMA loop across Linux's boot
/// and its own check, QEMU's trace with the payload's translations, no
/// kernel fault, no console line dropped.
fn check_common(o: &Outcome, c: &mut Checks) {
    c.log(o, "partition linux: arm64 Linux Image");
    if let Ok(g) = crate::linux::guest() {
        c.that(guest_lines(o).any(|l| l.contains(&format!("Linux version {} ", g.release))), "no tagged Linux banner on the console");
    }
    c.that(guest_lines(o).any(|l| l.contains("Run /init as init process")), "Linux did not reach init");
    // The payload partition kept doing DMA while Linux booted: its loop
    // ends after Linux's banner, with nothing bad, then its own check.
    let banner = lines(o).position(|l| l.starts_with("[linux]") && l.contains("Linux version"));
    let looped = lines(o).position(|l| l.starts_with("[storage] dma-loop: verified"));
    c.that(
        banner.is_some() && looped.is_some() && banner < looped,
        format!("the payload's DMA loop did not run across Linux's boot (banner at {banner:?}, loop end at {looped:?})"),
    );
    if let Some(l) = c.log(o, "[storage] dma-loop: verified") {
        c.that(l.contains("bad 0x0"), format!("the payload's DMA loop saw bad transfers: {l}"));
    }
    c.log(o, "[storage] dma own 0x4c100000: ok");
    c.log(o, "partition storage: exited with status 0");
    c.no_log(o, "dropped (rate limit)");
    c.no_log(o, "EXCEPTION");
    c.no_log(o, "stopping this partition");
    c.log(o, "all 2 partitions stopped, 0 failed");
    // The payload's DMA went through the SMMU while Linux ran.
    c.that(o.trace.events.iter().any(|e| kind::TRANSLATE_SUCCESS.matches(e)), "QEMU's trace has no successful SMMU translation of the payload's DMA");
}

fn check_boot(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    check_common(o, c);
    c.no_log(o, "hypercall 0x8600ff01 refused");
    let cpus = console::init_line(guest_lines(o), "cpus");
    c.that(cpus == Some("2"), format!("init counted {cpus:?} CPUs, expected 2"));
    let before = console::interrupt_counts(console::init_line(guest_lines(o), "timer-before").unwrap_or(""));
    let after = console::interrupt_counts(console::init_line(guest_lines(o), "timer-after").unwrap_or(""));
    c.that(before.len() == 2 && before.iter().zip(&after).all(|(b, a)| a > b), format!("the timer did not tick on both vCPUs: {before:?} -> {after:?}"));
    c.log(o, "partition linux: PSCI SYSTEM_OFF, stopping it");
}

fn check_hostile(o: &Outcome, c: &mut Checks) {
    use crate::linux::console::{fid, probe_call, probe_calls, ret, ProbeCall};
    c.exit(o, 0);
    check_common(o, c);
    let init = |name: &str| console::init_line(guest_lines(o), name).map(str::to_string);
    let hex = |v: Option<String>| v.and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    // Of SPIs 32..63 only the console's (33) can be enabled; that one
    // reads as set in the same register (the write reached the vGIC).
    let en = hex(init("isenabler1"));
    c.that(en == Some(1 << (UART_SPI - 32)), format!("GICD_ISENABLER1 reads {en:#x?} after writing all ones: only SPI {UART_SPI}'s bit may stick"));
    let foreign = hex(init("irouter-foreign"));
    c.that(foreign == Some(0), format!("GICD_IROUTER{FOREIGN_SPI} (not the partition's) reads {foreign:#x?} after a write"));
    let own = hex(init("irouter-own"));
    c.that(own.is_some_and(|r| r == 0x2 || r == OWN_CPU), format!("GICD_IROUTER{UART_SPI} (its own) reads {own:#x?}, not one of its vCPUs"));
    let gicr2 = hex(init("gicr2-isenabler0"));
    c.that(gicr2 == Some(0), format!("a redistributor of no vCPU reads {gicr2:#x?} after a write"));
    c.that(hex(init("gicr2-typer")) == Some(0), format!("GICR_TYPER of a redistributor of no vCPU reads {:?}", init("gicr2-typer")));
    let gicr0 = hex(init("gicr0-isenabler0"));
    c.that(
        gicr0.is_some_and(|v| v & (1 << 27) != 0),
        format!("its own redistributor's ISENABLER0 reads {gicr0:#x?}: the virtual timer (27) should be enabled"),
    );
    c.that(
        init("insmod-hvc").as_deref() == Some("0") && init("insmod-smc").as_deref() == Some("0"),
        format!("insmod of the probe: {:?} {:?}", init("insmod-hvc"), init("insmod-smc")),
    );
    let calls = probe_calls(guest_lines(o));
    let status = |cd: &str, f: u64, x1: u64| probe_call(&calls, cd, f, Some(x1)).map(ProbeCall::status);
    for (cd, cpu) in [("hvc", PAYLOAD_CPU), ("hvc", KERNEL_CPU), ("smc", PAYLOAD_CPU)] {
        let s = status(cd, fid::CPU_ON, cpu);
        c.that(s == Some(ret::INVALID_PARAMETERS), format!("{cd} CPU_ON of CPU {cpu:#x} (not its own) returned {s:?}, expected INVALID_PARAMETERS"));
    }
    let s = status("hvc", fid::CPU_ON, OWN_CPU);
    c.that(s == Some(ret::ALREADY_ON), format!("CPU_ON of its own running vCPU {OWN_CPU:#x} returned {s:?}, expected ALREADY_ON"));
    let s = status("hvc", AFFINITY_INFO, PAYLOAD_CPU);
    c.that(s == Some(ret::INVALID_PARAMETERS), format!("AFFINITY_INFO of the payload's CPU returned {s:?}"));
    let s = status("hvc", AFFINITY_INFO, OWN_CPU);
    c.that(s == Some(0), format!("AFFINITY_INFO of its own vCPU returned {s:?}, expected ON (0)"));
    // Only the boot-time CPU_ON of its second vCPU started anything.
    let starts = lines(o).filter(|l| l.contains("partition linux: PSCI CPU_ON of vCPU")).count();
    c.that(starts == 1, format!("{starts} vCPU starts logged, expected the one at Linux's SMP boot"));
    for cd in ["hvc", "smc"] {
        let known = [fid::CPU_ON, AFFINITY_INFO];
        let random: Vec<&ProbeCall> = calls.iter().filter(|k| k.conduit == cd && !known.contains(&k.args[0])).collect();
        c.that(random.len() == RANDOM_CALLS, format!("{} random {cd} calls returned, expected {RANDOM_CALLS}", random.len()));
        if let Some(bad) = random.iter().find(|k| k.status() >= 0) {
            c.that(false, format!("a random {cd} call was not refused: {bad:?}"));
        }
    }
    c.that(console::init_line(guest_lines(o), "alive") == Some("2"), "Linux did not carry on with its 2 vCPUs after the probes");
    c.log(o, "partition linux: PSCI SYSTEM_OFF, stopping it");
}

fn check_reset(o: &Outcome, c: &mut Checks) {
    c.exit(o, 0);
    check_common(o, c);
    let at = |needle: &str| lines(o).position(|l| l.contains(needle));
    let seen0 = at("[linux] bulkhead-init: restarts-seen 0");
    let reboot = at("[linux] bulkhead-init: rebooting");
    let reset = at("partition linux: PSCI SYSTEM_RESET: restarting from its image, memory scrubbed, 0 of its devices reset (restart 1)");
    let seen1 = at("[linux] bulkhead-init: restarts-seen 1");
    let after = at("[linux] bulkhead-init: after-reset cpus 2");
    let order = [seen0, reboot, reset, seen1, after];
    c.that(
        order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]),
        format!("first boot, reset, second boot out of order or missing: {order:?}"),
    );
    let banners = guest_lines(o).filter(|l| l.contains("Linux version")).count();
    c.that(banners == 2, format!("{banners} Linux banners, expected 2 (one per boot)"));
    let starts = lines(o).filter(|l| l.contains("partition linux: PSCI CPU_ON of vCPU 1")).count();
    c.that(starts == 2, format!("its second vCPU started {starts} times, expected once per boot"));
    c.log(o, "partition linux: PSCI SYSTEM_OFF, stopping it");
}
