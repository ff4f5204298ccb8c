//! Debian's arm64 Linux booted bare on QEMU, without bulkhead: the harness's
//! Linux pieces proved end to end (kernel, initramfs, init marks, the probe
//! module), and the baseline the bench compares a partition's Linux with.
//!
//! - `linux-bare`: entered at EL2 (`virtualization=on`), Linux stays there
//!   (VHE); PSCI goes by SMC to QEMU's firmware PSCI. The probe's SMCs
//!   reach it (QEMU's own log names the CPUs they asked for); its HVCs are
//!   not issued (they would trap to this kernel itself). `/dev/mem` refuses
//!   the GIC's registers (`CONFIG_IO_STRICT_DEVMEM`: the GIC driver claims
//!   them).
//! - `linux-bare-el1`: no EL2 (as in a partition, Linux at EL1), PSCI by
//!   HVC to QEMU's firmware; the probe's HVCs reach it. With `iomem=relaxed`
//!   `/dev/mem` reaches the distributor and reads what the probe reads.
//!
//! Both: 2 CPUs online, the arch timer ticking on each across `sleep 1`,
//! Linux's own arm-smmu-v3 driver enabling the SMMU in QEMU's trace (and
//! disabling it at power-off), SYSTEM_OFF ending QEMU with status 0.

use crate::linux::console::{self, fid, ret, ProbeCall};
use crate::linux::initramfs::PROBE_PATH;
use crate::qemu::{Console, Flavour, Outcome, QemuConfig};
use crate::scenario::{Checks, Ctx, Scenario, Witness, GBPA};
use crate::trace::{kind, TraceEvent};
use std::time::Duration;

/// QEMU `virt`'s GIC distributor (hw/arm/virt.c's memory map) and its
/// GICD_TYPER (GICv3 spec 12.9.38).
const GICD: u64 = 0x0800_0000;
const GICD_TYPER: u64 = GICD + 0x4;
/// SMMU register offsets (SMMUv3 spec, chapter 6) and CR0.SMMUEN.
const CR0: u64 = 0x20;
const STRTAB_BASE: u64 = 0x80;
const CMDQ_BASE: u64 = 0x90;
const EVENTQ_BASE: u64 = 0xa0;
const CR0_SMMUEN: u64 = 1;
/// An MPIDR no CPU of a 2-CPU `virt` has.
const NO_SUCH_CPU: u64 = 0x5;
/// How many random-ID calls each scenario's probe makes.
const RANDOM_CALLS: usize = 8;
/// The timer PPIs on QEMU `virt` (INTIDs): EL2's physical timer, which
/// Linux at EL2 with VHE uses, and the EL1 virtual timer.
const PPI_HYP_TIMER: u64 = 26;
const PPI_VIRT_TIMER: u64 = 27;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "linux-bare", setup: |ctx| bare(ctx, Flavour::Virt, "", "smc"), check: |o, c| check(o, c, &EL2) },
        Scenario { name: "linux-bare-el1", setup: |ctx| bare(ctx, Flavour::NoVirtualization, " iomem=relaxed", "hvc"), check: |o, c| check(o, c, &EL1) },
    ]
}

/// What differs between the two boots.
struct Expect {
    /// The probe's "loaded at" line.
    el: u32,
    /// The conduit QEMU's firmware PSCI answers on.
    conduit: &'static str,
    /// The timer PPI Linux uses there.
    timer_ppi: u64,
    /// Whether `/dev/mem` may reach the GIC (`iomem=relaxed`).
    devmem_reaches_gic: bool,
}

const EL2: Expect = Expect { el: 2, conduit: "smc", timer_ppi: PPI_HYP_TIMER, devmem_reaches_gic: false };
const EL1: Expect = Expect { el: 1, conduit: "hvc", timer_ppi: PPI_VIRT_TIMER, devmem_reaches_gic: true };

/// The init script's body: CPUs, the timer across a sleep, `/dev/mem` on
/// the distributor, then the probe: PSCI_VERSION, PSCI_FEATURES of
/// SMCCC_VERSION, CPU_ON of a CPU that is on and of one that does not
/// exist, SMCCC_VERSION, the other conduit's PSCI_VERSION, random IDs, and
/// a read of GICD_TYPER.
fn body(conduit: &str) -> String {
    let other = if conduit == "smc" { "hvc" } else { "smc" };
    // At EL1 with no EL2 an SMC is undefined: only the EL2 boot tries the
    // other conduit (an HVC there is reported, not issued).
    let other_call = if conduit == "smc" { format!(",{other}:{:#x}", fid::PSCI_VERSION) } else { String::new() };
    let calls = format!(
        "{c}:{v:#x},{c}:{f:#x}:{s:#x},{c}:{on:#x}:0x1:0x0:0x0,{c}:{on:#x}:{none:#x}:0x0:0x0,{c}:{s:#x}{other_call}",
        c = conduit,
        v = fid::PSCI_VERSION,
        f = fid::PSCI_FEATURES,
        s = fid::SMCCC_VERSION,
        on = fid::CPU_ON,
        none = NO_SUCH_CPU,
    );
    format!(
        r#"echo "bulkhead-init: cpus $(nproc)"
echo "bulkhead-init: timer-before $(grep arch_timer /proc/interrupts)"
sleep 1
echo "bulkhead-init: timer-after $(grep arch_timer /proc/interrupts)"
echo "bulkhead-init: devmem-gicd-typer $(devmem {GICD_TYPER:#x} 32 2>&1)"
insmod {PROBE_PATH} call={calls} random={RANDOM_CALLS} conduit={conduit} seed=1 mmio=r32:{GICD_TYPER:#x}
echo "bulkhead-init: insmod $?""#
    )
}

/// Debian's kernel booted directly on `flavour` with 2 CPUs and an
/// initramfs running [`body`], deterministic, console on the PL011.
fn bare(ctx: &Ctx, flavour: Flavour, append: &str, conduit: &str) -> Result<QemuConfig, String> {
    let guest = crate::linux::guest()?;
    let initrd = ctx.file("initramfs.cpio");
    guest.initramfs(&body(conduit))?.write(&initrd)?;
    Ok(QemuConfig {
        flavour,
        smp: 2,
        memory: "1G".into(),
        kernel: Some(guest.image.clone()),
        initrd: Some(initrd),
        console: Console::Text,
        append: Some(format!("console=ttyAMA0 printk.devkmsg=on{append}")),
        icount: true,
        deterministic: true,
        timeout: Duration::from_secs(150),
        ..QemuConfig::default()
    })
}

fn lines(o: &Outcome) -> impl Iterator<Item = &str> + Clone {
    o.log.iter().map(|l| l.message.as_str())
}

fn check(o: &Outcome, c: &mut Checks, want: &Expect) {
    // SYSTEM_OFF ends QEMU with status 0.
    c.exit(o, 0);
    match crate::linux::guest() {
        Ok(g) => {
            c.log(o, &format!("Linux version {} ", g.release));
        }
        Err(e) => c.that(false, format!("the guest is gone: {e}")),
    }
    c.log(o, "Run /init as init process");
    let init = console::mark(lines(o), "init");
    let off = console::mark(lines(o), "poweroff");
    c.that(init.is_some() && off.is_some(), format!("init's marks missing: init {init:?}, poweroff {off:?}"));
    c.that(init < off, format!("the counter went back between init ({init:?}) and poweroff ({off:?})"));
    c.log(o, "reboot: Power down");
    c.that(console::init_line(lines(o), "cpus") == Some("2"), format!("init counted {:?} CPUs, expected 2", console::init_line(lines(o), "cpus")));
    check_timer(o, c, want.timer_ppi);
    check_probe(o, c, want);
    check_smmu(o, c);
}

/// The arch timer's interrupt counts grew on both CPUs across `sleep 1`,
/// on the PPI Linux uses at that exception level.
fn check_timer(o: &Outcome, c: &mut Checks, ppi: u64) {
    let before = console::init_line(lines(o), "timer-before").unwrap_or("");
    let after = console::init_line(lines(o), "timer-after").unwrap_or("");
    let (b, a) = (console::interrupt_counts(before), console::interrupt_counts(after));
    c.that(b.len() == 2 && a.len() == 2, format!("/proc/interrupts' arch_timer line has {} and {} CPUs: {before:?}, {after:?}", b.len(), a.len()));
    c.that(b.iter().zip(&a).all(|(b, a)| a > b), format!("the timer did not tick on every CPU across sleep 1: {b:?} -> {a:?}"));
    let hwirq = after.split_whitespace().skip_while(|w| *w != "GICv3").nth(1).and_then(|w| w.parse::<u64>().ok());
    c.that(hwirq == Some(ppi), format!("the arch timer is on INTID {hwirq:?}, expected PPI {ppi}: {after:?}"));
}

/// The probe's calls reached QEMU's firmware PSCI, by the expected conduit,
/// with PSCI's answers; QEMU's own log shows the CPU_ON targets.
fn check_probe(o: &Outcome, c: &mut Checks, want: &Expect) {
    let cd = want.conduit;
    c.log(o, &format!("bulkhead-probe: loaded at EL{}", want.el));
    c.that(console::init_line(lines(o), "insmod") == Some("0"), format!("insmod of the probe: {:?}", console::init_line(lines(o), "insmod")));
    let calls = console::probe_calls(lines(o));
    let status = |f: u64, x1: Option<u64>| console::probe_call(&calls, cd, f, x1).map(ProbeCall::status);
    let version = status(fid::PSCI_VERSION, None);
    c.that(version.is_some_and(|v| v >> 16 == 1), format!("{cd} PSCI_VERSION returned {version:?}, expected 1.x"));
    c.that(
        status(fid::CPU_ON, Some(1)) == Some(ret::ALREADY_ON),
        format!("{cd} CPU_ON of CPU 1 (on) returned {:?}, expected ALREADY_ON", status(fid::CPU_ON, Some(1))),
    );
    c.that(
        status(fid::CPU_ON, Some(NO_SUCH_CPU)) == Some(ret::INVALID_PARAMETERS),
        format!("{cd} CPU_ON of MPIDR {NO_SUCH_CPU:#x} returned {:?}, expected INVALID_PARAMETERS", status(fid::CPU_ON, Some(NO_SUCH_CPU))),
    );
    // QEMU's firmware implements no SMCCC_VERSION (Linux then assumes SMCCC 1.0).
    c.that(status(fid::SMCCC_VERSION, None) == Some(ret::NOT_SUPPORTED), format!("{cd} SMCCC_VERSION returned {:?}", status(fid::SMCCC_VERSION, None)));
    let known = [fid::PSCI_VERSION, fid::PSCI_FEATURES, fid::CPU_ON, fid::SMCCC_VERSION];
    let random: Vec<&ProbeCall> = calls.iter().filter(|k| k.conduit == cd && !known.contains(&k.args[0])).collect();
    c.that(random.len() == RANDOM_CALLS, format!("{} random-ID {cd} calls returned, expected {RANDOM_CALLS}", random.len()));
    if let Some(bad) = random.iter().find(|k| k.status() != ret::NOT_SUPPORTED) {
        c.that(false, format!("a random ID was not NOT_SUPPORTED: {bad:?}"));
    }
    if want.el == 2 {
        c.log(o, "bulkhead-probe: hvc 0x84000000 0x0 0x0 0x0: not issued, this kernel runs at EL2");
    }
    c.that(calls.iter().all(|k| k.conduit == cd), format!("a call went by the other conduit than {cd}"));
    // QEMU's own record (its guest-error log, in the trace file) of the
    // two CPU_ONs, from its power-control code.
    for (what, needle) in [("CPU_ON of a CPU that is on", "CPU 1 is already on"), ("CPU_ON of a CPU that does not exist", "unknown CPU 5")] {
        c.that(o.trace.other.iter().any(|l| l.contains(needle)), format!("QEMU's log does not show the probe's {what} ({needle:?})"));
    }
    // GICD_TYPER through the probe's ioremap, and through /dev/mem.
    let typer = lines(o).find_map(|l| l.split_once(&format!("r32 {GICD_TYPER:#x}: reads "))).map(|(_, v)| v.trim().to_string());
    c.that(typer.is_some(), "the probe did not read GICD_TYPER");
    let devmem = console::init_line(lines(o), "devmem-gicd-typer").unwrap_or("");
    if want.devmem_reaches_gic {
        let read = u64::from_str_radix(devmem.trim_start_matches("0x"), 16).ok();
        let probe = typer.as_deref().and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
        c.that(read.is_some() && read == probe, format!("/dev/mem read GICD_TYPER as {devmem:?}, the probe as {typer:?}"));
    } else {
        c.that(devmem.contains("Operation not permitted"), format!("/dev/mem reached the GIC the driver claimed: {devmem:?}"));
    }
}

/// Linux's arm-smmu-v3 driver enabled the SMMU in QEMU's trace: tables and
/// queues programmed, STE and TLB invalidation with a CMD_SYNC, then
/// SMMUEN; GBPA never written; SMMUEN cleared again at power-off.
fn check_smmu(o: &Outcome, c: &mut Checks) {
    c.log(o, "arm-smmu-v3");
    let ev = &o.trace.events;
    let write = |e: &TraceEvent, off: u64| kind::WRITE_MMIO.matches(e) && e.field("addr") == Some(off);
    let at = |f: &dyn Fn(&TraceEvent) -> bool| ev.iter().position(f);
    let opcode = |name: &'static str| move |e: &TraceEvent| kind::CMDQ_OPCODE.matches(e) && e.args.contains(name);
    let order = [
        ("STRTAB_BASE", at(&|e| write(e, STRTAB_BASE))),
        ("CMDQ_BASE", at(&|e| write(e, CMDQ_BASE))),
        ("CFGI_STE_RANGE or CFGI_ALL", at(&|e| opcode("CFGI_STE_RANGE")(e) || opcode("CFGI_ALL")(e))),
        ("TLBI_NSNH_ALL", at(&opcode("TLBI_NSNH_ALL"))),
        ("EVENTQ_BASE", at(&|e| write(e, EVENTQ_BASE))),
        ("SMMUEN", at(&|e| write(e, CR0) && e.field("val").is_some_and(|v| v & CR0_SMMUEN != 0))),
    ];
    for (name, pos) in &order {
        c.that(pos.is_some(), format!("QEMU's trace has no {name} from Linux's SMMU driver"));
    }
    let positions: Vec<usize> = order.iter().filter_map(|(_, p)| *p).collect();
    c.that(positions.windows(2).all(|w| w[0] < w[1]), format!("Linux's SMMU bring-up out of the expected order: {order:?}"));
    if let (Some(tlbi), Some(on)) = (order[3].1, order[order.len() - 1].1) {
        let synced = ev.get(tlbi..on).is_some_and(|between| between.iter().any(opcode("CMD_SYNC")));
        c.that(synced, "no CMD_SYNC between Linux's TLBI_NSNH_ALL and SMMUEN");
    }
    if let Some(on) = order[order.len() - 1].1 {
        let off = ev[on..].iter().any(|e| write(e, CR0) && e.field("val") == Some(0));
        c.that(off, "Linux did not disable the SMMU at power-off (no CR0=0 after SMMUEN)");
    }
    // Linux leaves GBPA at its reset value (bypass) until SMMUEN: the
    // same trace shows the register writes it did make.
    c.none_of(
        o,
        kind::WRITE_MMIO,
        "GBPA write by Linux",
        |e| e.field("addr") == Some(GBPA),
        Witness::InRun("of Linux's SMMU bring-up", &|e| e.field("addr") == Some(CR0)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_asks_each_conduit_for_what_the_check_reads() {
        let smc = body("smc");
        assert!(
            smc.contains("call=smc:0x84000000,smc:0x8400000a:0x80000000,smc:0xc4000003:0x1:0x0:0x0,smc:0xc4000003:0x5:0x0:0x0,smc:0x80000000,hvc:0x84000000 "),
            "{smc}"
        );
        assert!(smc.contains("random=8 conduit=smc"), "{smc}");
        let hvc = body("hvc");
        assert!(hvc.contains("call=hvc:0x84000000,") && !hvc.contains("smc:"), "{hvc}");
        assert!(hvc.contains("mmio=r32:0x8000004"), "{hvc}");
    }
}
