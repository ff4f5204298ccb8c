//! Availability (the `partitions-storm` scenarios' machine,
//! tests/src/scenarios/storm.rs): storage's DMA round trip and the
//! kernel's report of probe's faults, with net storming the kernel and
//! without, as ratios. Guest time (the counter; µs), not instructions:
//! four CPUs busy for eight seconds of guest time are minutes of host
//! time under `-icount`'s one thread, and an edu transfer waits 100 ms of
//! guest time for QEMU's timer either way.

use super::{Figure, Goal, Report};
use bulkhead_tests::qemu::{Outcome, QemuConfig};
use bulkhead_tests::scenarios::storm::{analyse, overlay};
use bulkhead_tests::Artifacts;
use std::path::Path;
use std::time::Duration;

const S: &str = "availability";
/// Issue 18's goal: a storm costs the others at most 10 %.
const GOAL_RATIO: f64 = 1.1;

/// The machine with net storming (`storm`) or sitting out the same time.
pub fn setup(dir: &Path, a: &Artifacts, storm: bool) -> Result<QemuConfig, String> {
    bulkhead_tests::dtb::with_overlay(QemuConfig { timeout: Duration::from_secs(180), ..QemuConfig::default() }, &overlay(storm)?, dir, &a.payload)
}

fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The four ratios.
pub fn report(on: &Result<Outcome, String>, off: &Result<Outcome, String>, r: &mut Report) {
    let runs = match (on, off) {
        (Ok(a), Ok(b)) if a.status == Some(0) && b.status == Some(0) => Ok((analyse(a), analyse(b))),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        _ => Err("a run did not exit 0".to_string()),
    };
    let names = [
        "storage DMA round trip, median, storm / no storm",
        "storage DMA round trip, maximum, storm / no storm",
        "probe fault-report latency, median, storm / no storm",
        "probe fault-report latency, maximum, storm / no storm",
    ];
    let (on, off) = match runs {
        Ok(x) => x,
        Err(e) => {
            for n in names {
                r.figures.push(Figure::missing(S, n, &e));
            }
            return;
        }
    };
    let rt = |a: &bulkhead_tests::scenarios::storm::Analysis| a.storage_round_trip_us.map(|(_, m, x)| (m, x));
    let lat = |a: &bulkhead_tests::scenarios::storm::Analysis| Some((median(&a.report_latency_us)?, a.report_latency_us.iter().max().copied()?));
    let pairs = [
        (rt(&on).map(|p| p.0), rt(&off).map(|p| p.0)),
        (rt(&on).map(|p| p.1), rt(&off).map(|p| p.1)),
        (lat(&on).map(|p| p.0), lat(&off).map(|p| p.0)),
        (lat(&on).map(|p| p.1), lat(&off).map(|p| p.1)),
    ];
    for (name, pair) in names.into_iter().zip(pairs) {
        let f = match pair {
            (Some(with), Some(without)) if without > 0 => {
                let ratio = with as f64 / without as f64;
                Figure::new(S, name, ratio, format!("{ratio:.3}× ({with} µs with the storm, {without} µs without; guest time)"))
                    .with("storm_us", with as f64)
                    .with("quiet_us", without as f64)
                    .goal(&format!("≤ {GOAL_RATIO}×"), Goal::AtMost(GOAL_RATIO))
            }
            _ => Figure::missing(S, name, "a run did not report it"),
        };
        r.figures.push(f);
    }
    let dropped = on.dropped;
    r.figures.push(Figure::new(
        S,
        "net's storm: dropped by its log budget",
        dropped.0 as f64,
        format!("{} console bytes, {} refused-call lines dropped; {} lost-device accesses emulated ({} reports)", dropped.0, dropped.1, dropped.2, on.reports),
    ));
}
