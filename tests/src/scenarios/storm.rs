//! Availability: a partition that storms the kernel (refused hypercalls,
//! console writes, its lost device's window) slows neither the kernel's
//! reporting of another partition's faults nor a third partition's DMA;
//! its excess is dropped, counted and reported
//! (boards/bindings/bulkhead,partitions.yaml, `bulkhead,log-limit`).

use crate::dtb::set_bootargs;
use crate::log::after;
use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness};
use crate::trace::{kind, TraceEvent};
use std::time::Duration;

const OVERLAY: &str = include_str!("storm.dts");
/// How long net storms, and how many faults probe makes (one a second).
pub const STORM_MS: u64 = 6000;
pub const FAULTS: usize = 7;
/// The bound on the kernel's fault report: from probe's announcement to the
/// kernel's event line, in guest time. The edu starts a DMA 100 ms after
/// it is told to (QEMU's `edu` timer); the kernel drains on the eventq
/// interrupt, or its 10 ms tick at the latest.
pub const REPORT_BOUND_US: u64 = 300_000;
const PROBE_SID: u64 = 0x18;
const STORAGE_SID: u64 = 0x10;
const STORAGE_MEM: (u64, u64) = (0x4c00_0000, 0x4e00_0000);

/// The overlay: net storms (or, with `storm` false, sits out the same
/// time) after giving its device back.
pub fn overlay(storm: bool) -> Result<String, String> {
    let net = if storm { format!("release=1:0 storm={STORM_MS} exit=0") } else { format!("release=1:0 wait={STORM_MS} exit=0") };
    let storage = format!("canary=0x4c000100 dma-loop={} check=0x4c000100 exit=0", STORM_MS + 2000);
    let probe = format!("wait=500 fault-every=0x70000000:1000:{FAULTS} exit=0");
    set_bootargs(&set_bootargs(&set_bootargs(OVERLAY, "net", &net)?, "storage", &storage)?, "probe", &probe)
}

fn setup(ctx: &Ctx, storm: bool) -> Result<QemuConfig, String> {
    ctx.with_overlay(QemuConfig { timeout: Duration::from_secs(120), ..QemuConfig::default() }, &overlay(storm)?)
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "partitions-storm", setup: |ctx| setup(ctx, true), check: |o, c| check(o, c, true) },
        Scenario { name: "partitions-storm-off", setup: |ctx| setup(ctx, false), check: |o, c| check(o, c, false) },
    ]
}

/// What a run shows of the storm and of probe's faults.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Per probe fault: µs from its announcement to the kernel's report.
    pub report_latency_us: Vec<u64>,
    /// Announcements with no kernel report after them.
    pub unreported: usize,
    /// net's own counts: refused calls, console writes, lost-device accesses.
    pub storm: Option<(u64, u64, u64)>,
    /// net's console writes that were printed.
    pub printed_writes: u64,
    /// net's refused calls that were printed.
    pub printed_refusals: u64,
    /// The kernel's drop reports for net, summed: console bytes, refused
    /// lines, lost-device accesses; and how many reports.
    pub dropped: (u64, u64, u64),
    pub reports: usize,
    /// storage's DMA round trips, µs of guest time: min, median, max.
    pub storage_round_trip_us: Option<(u64, u64, u64)>,
}

/// Reads `o`'s log.
pub fn analyse(o: &Outcome) -> Analysis {
    let mut a = Analysis::default();
    let log = &o.log;
    for (i, l) in log.iter().enumerate() {
        let m = l.message.as_str();
        if m.starts_with("[probe] fault 0x") {
            let reported = log[i + 1..].iter().find(|r| r.message.starts_with(&format!("SMMU event F_TRANSLATION: StreamID {PROBE_SID:#x},")));
            match (l.micros, reported.and_then(|r| r.micros)) {
                (Some(t0), Some(t1)) => a.report_latency_us.push(t1.saturating_sub(t0)),
                _ => a.unreported += 1,
            }
        } else if m.starts_with("[storage] dma-loop: round trip us ") {
            a.storage_round_trip_us = Some((after(m, "min ").unwrap_or(0), after(m, "median ").unwrap_or(0), after(m, "max ").unwrap_or(0)));
        } else if m.starts_with("[net] storm: ") {
            a.storm = Some((after(m, "storm: ").unwrap_or(0), after(m, "calls, ").unwrap_or(0), after(m, "256 bytes, ").unwrap_or(0)));
        } else if m.starts_with("[net] ###") {
            a.printed_writes += 1;
        } else if m.starts_with("partition net: hypercall ") && m.contains(" refused: ") {
            a.printed_refusals += 1;
        } else if m.starts_with("partition net: over its log budget") {
            a.reports += 1;
            a.dropped.0 += after(m, "ms: ").unwrap_or(0);
            a.dropped.1 += after(m, "console bytes and ").unwrap_or(0);
            a.dropped.2 += after(m, "dropped; ").unwrap_or(0);
        }
    }
    a
}

fn check(o: &Outcome, c: &mut Checks, storm: bool) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    let a = analyse(o);
    // probe: every fault reported, each within the bound.
    c.that(a.report_latency_us.len() == FAULTS, format!("{} of probe's {FAULTS} faults announced and reported", a.report_latency_us.len()));
    c.that(a.unreported == 0, format!("{} of probe's faults were never reported", a.unreported));
    let worst = a.report_latency_us.iter().max().copied().unwrap_or(0);
    c.that(worst <= REPORT_BOUND_US, format!("a fault was reported {worst} µs after it was started (bound {REPORT_BOUND_US} µs): {:?}", a.report_latency_us));
    c.log(o, &format!("[probe] fault-every: {FAULTS:#x} faulting DMAs done"));
    // storage: its DMA verified all along, its lines and the kernel's there.
    if let Some(line) = c.log(o, "[storage] dma-loop: verified 0x") {
        c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("storage: {line}"));
    }
    c.log(o, "[storage] canary at 0x4c000100 intact");
    c.that(a.storage_round_trip_us.is_some(), "storage reported no round-trip times");
    c.log(o, "[net] release group 0x1 from 0x0: 0x0");
    c.log(o, "all 3 partitions stopped, 0 failed");
    if storm {
        // net's storm: its excess dropped, counted and reported, to the call.
        let Some((refused, writes, touches)) = a.storm else {
            c.that(false, "net never reported its storm");
            return;
        };
        c.that(
            writes > 1000 && refused > 1000 && touches > 1000,
            format!("a feeble storm: {refused} refused calls, {writes} writes, {touches} lost-device accesses"),
        );
        c.that(a.reports >= 2, format!("{} drop reports for net (one a second while it storms)", a.reports));
        c.that(
            a.printed_writes * 256 + a.dropped.0 == writes * 256,
            format!("console: {} writes printed + {} bytes dropped != {writes} writes of 256 bytes", a.printed_writes, a.dropped.0),
        );
        c.that(a.printed_refusals + a.dropped.1 == refused, format!("refusals: {} printed + {} dropped != {refused}", a.printed_refusals, a.dropped.1));
        c.that(a.dropped.2 == touches, format!("lost-device accesses: {} reported, net made {touches}", a.dropped.2));
        // The budget: 2 KiB of console a second, 4 s of burst.
        let budget = (STORM_MS / 1000 + 1 + 4) * 2048;
        c.that(a.printed_writes * 256 <= budget, format!("net printed {} console bytes, over its budget of {budget}", a.printed_writes * 256));
    } else {
        c.no_log(o, "over its log budget");
    }
    // QEMU: probe's DMA never translated; storage's always into its memory.
    let sid = |e: &TraceEvent| e.field("sid");
    let storage = |e: &TraceEvent| sid(e) == Some(STORAGE_SID) && e.field("translated").is_some_and(|t| (STORAGE_MEM.0..STORAGE_MEM.1).contains(&t));
    c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of probe's DMA", |e| sid(e) == Some(PROBE_SID), Witness::InRun("of storage's DMA", &storage));
    c.none_of(
        o,
        kind::TRANSLATE_SUCCESS,
        "translation of storage's DMA outside its memory",
        |e| sid(e) == Some(STORAGE_SID) && !storage(e),
        Witness::InRun("of storage's DMA", &storage),
    );
    c.none_of(o, kind::TRANSLATE_BYPASS, "DMA in bypass", |_| true, Witness::Catalogue);
}
