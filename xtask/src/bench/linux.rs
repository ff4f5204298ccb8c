//! Debian's Linux in a partition (issue 16): guest time from power-on to
//! the partition's first instruction, to Linux's init and to its power-off,
//! under bulkhead (tests/src/scenarios/linux_partition.rs, the payload
//! partition only saying hello) and the same kernel and initramfs booted
//! bare at EL1 on the same QEMU; the partitioning overhead as ratios.
//! Under `-icount shift=0` guest time is instructions (1 ns each at the
//! 1 GHz counter), so the figures do not depend on the host's load.

use super::{Figure, Goal, Report};
use bulkhead_tests::qemu::Outcome;
use bulkhead_tests::scenarios::linux_partition::mark;

const S: &str = "linux";

fn ms(ticks: u64, freq: u64) -> f64 {
    ticks as f64 * 1000.0 / freq.max(1) as f64
}

/// The figures of the two runs.
pub fn report(part: &Result<Outcome, String>, bare: &Result<Outcome, String>, r: &mut Report) {
    let part = match part {
        Ok(o) if o.status == Some(0) => Ok(o),
        Ok(o) => Err(format!("the partition run exited with {:?}", o.status)),
        Err(e) => Err(e.clone()),
    };
    let bare = match bare {
        Ok(o) if o.status == Some(0) => Ok(o),
        Ok(o) => Err(format!("the bare run exited with {:?}", o.status)),
        Err(e) => Err(e.clone()),
    };
    let freq = part.as_ref().ok().and_then(|o| super::boot::milestones(o).2).unwrap_or(1_000_000_000);
    let first = part.as_ref().map_err(Clone::clone).and_then(|o| {
        let (m, entry, _) = super::boot::milestones(o);
        m.get("partitions-started").map(|t| t + entry.unwrap_or(0)).ok_or_else(|| "no partitions-started milestone".to_string())
    });
    match &first {
        Ok(t) => r.figures.push(Figure::new(
            S,
            "Power-on to the Linux partition's first instruction",
            ms(*t, freq),
            format!("{:.1} ms ({t} ticks; guest time)", ms(*t, freq)),
        )),
        Err(e) => r.figures.push(Figure::missing(S, "Power-on to the Linux partition's first instruction", e)),
    }
    // Linux's own boot, from its first instruction: what the traps and the
    // emulated GIC and UART cost it, without the kernel's scrub and copy.
    let own = |o: &Outcome| mark(o, "init");
    let label = "Linux's own boot to init, partition (from its first instruction) / bare";
    match (&first, part.as_ref().ok().and_then(|o| own(o)), bare.as_ref().ok().and_then(|o| own(o))) {
        (Ok(f), Some(p), Some(b)) if p > *f && b > 0 => {
            let ratio = (p - f) as f64 / b as f64;
            r.figures.push(Figure::new(S, label, ratio, format!("{ratio:.3}× ({:.1} ms in the partition, {:.1} ms bare)", ms(p - f, freq), ms(b, freq))));
        }
        _ => r.figures.push(Figure::missing(S, label, "a run did not report it")),
    }
    for (what, name) in [("init", "init"), ("power-off", "poweroff")] {
        let p = part.as_ref().ok().and_then(|o| mark(o, name));
        let b = bare.as_ref().ok().and_then(|o| mark(o, name));
        let label = format!("Power-on to Linux's {what}, in a partition");
        match p {
            Some(t) => r.figures.push(Figure::new(S, &label, ms(t, freq), format!("{:.1} ms ({t} ticks)", ms(t, freq)))),
            None => r.figures.push(Figure::missing(S, &label, part.as_ref().err().cloned().unwrap_or_else(|| format!("no {name} mark")))),
        }
        let label = format!("Power-on to Linux's {what}, bare on QEMU (EL1)");
        match b {
            Some(t) => r.figures.push(Figure::new(S, &label, ms(t, freq), format!("{:.1} ms ({t} ticks)", ms(t, freq)))),
            None => r.figures.push(Figure::missing(S, &label, bare.as_ref().err().cloned().unwrap_or_else(|| format!("no {name} mark")))),
        }
        let label = format!("Partitioning overhead to Linux's {what} (partition / bare)");
        match (p, b) {
            (Some(p), Some(b)) if b > 0 => {
                let ratio = p as f64 / b as f64;
                r.figures.push(
                    Figure::new(S, &label, ratio, format!("{ratio:.3}×"))
                        .with("partition_ticks", p as f64)
                        .with("bare_ticks", b as f64)
                        .goal("≤ 2×", Goal::AtMost(2.0)),
                );
            }
            _ => r.figures.push(Figure::missing(S, &label, "a run did not report it")),
        }
    }
}
