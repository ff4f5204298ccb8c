//! Interrupts at EL2 (`bulkhead.selftest=irq`): the kernel brings up the
//! GICv3 and takes the EL2 timer's PPI and the SMMU's `gerror` and `eventq`
//! SPIs on the boot CPU. Checked in the kernel's log and in QEMU's own GIC
//! trace (the line levels, every acknowledge and end of interrupt) and SMMU
//! trace (the interrupts the SMMU raised, the events it recorded).

use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Scenario};
use crate::trace::{kind, TraceEvent};
use crate::Image;

/// QEMU `virt`: the EL2 physical timer is PPI 10, the SMMU's eventq and
/// gerror are SPIs 74 and 77.
const TIMER_INTID: u64 = 26;
const EVENTQ_INTID: u64 = 106;
const GERROR_INTID: u64 = 109;
/// QEMU's SMMU interrupt numbers in `smmuv3_trigger_irq` (hw/arm/smmuv3-internal.h).
const SMMU_IRQ_EVTQ: u64 = 0;
const SMMU_IRQ_GERROR: u64 = 3;
/// The edu's StreamID at 00:01.0.
const EDU_SID: u64 = 0x8;
/// INTIDs 1020..=1023 are "nothing to acknowledge".
const FIRST_SPECIAL: u64 = 1020;

/// QEMU's GIC trace points the scenario reads (they share the trace file).
const GIC_TRACE: &[&str] =
    &["gicv3_icc_iar1_read", "gicv3_icc_eoir_write", "gicv3_dist_set_irq", "gicv3_redist_set_irq", "gicv3_dist_bad*", "gicv3_redist_bad*"];

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario { name: "irq-el2-timer-gerror-eventq", setup: |_| Ok(cfg()), check: check_irq }]
}

fn cfg() -> QemuConfig {
    let mut extra: Vec<String> = vec!["-device".into(), "edu,dma_mask=0xffffffffff".into()];
    for t in GIC_TRACE {
        extra.extend(["-trace".into(), (*t).into()]);
    }
    QemuConfig { append: Some("bulkhead.selftest=irq".into()), extra, image: Image::Selftest, ..QemuConfig::default() }
}

/// The GIC's trace events, in order. `Trace` keeps only the SMMU's as
/// events; the rest of the shared file is in `other`.
fn gic_events(o: &Outcome) -> Vec<TraceEvent> {
    o.trace
        .other
        .iter()
        .filter_map(|line| {
            let body = match line.split_once(':') {
                Some((pre, rest)) if pre.contains('@') && !pre.contains(' ') => rest,
                _ => line.as_str(),
            };
            let (name, args) = body.split_once(' ').unwrap_or((body, ""));
            name.starts_with("gicv3_").then(|| TraceEvent { name: name.to_string(), args: args.trim().to_string() })
        })
        .collect()
}

/// The number right before `word` in `line` ("16 events drained" → 16).
fn number_before(line: &str, word: &str) -> Option<u64> {
    let head = &line[..line.find(word)?];
    head.split_whitespace().last()?.trim_start_matches('(').parse().ok()
}

fn check_irq(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    c.no_log(o, "EXCEPTION");
    c.log(o, "irq-test: GICv3 distributor 0x8000000 (256 SPIs, one Security state), redistributor 0x80a0000 for MPIDR 0x0, CPU interface on");
    c.log(o, "irq-test: INTID 26 (EL2 physical timer, PPI 10) taken");
    c.log(o, "irq-test: illegal command refused: Command(CommandError { kind: Ill, opcode: 127");
    c.log(o, "irq-test: INTID 109 (gerror) taken; global errors handled");
    let eventq = c.log(o, "irq-test: INTID 106 (eventq) taken").map(str::to_string);
    let passed = c.log(o, "irq-test: passed:").map(str::to_string);

    // The SMMU raised both interrupts, and the kernel drained exactly the
    // F_TRANSLATION records QEMU wrote for the edu.
    let triggered = |irq| o.trace.named("smmuv3_trigger_irq").any(|e| e.field("irq") == Some(irq));
    c.that(triggered(SMMU_IRQ_GERROR), "QEMU's SMMU never raised its gerror interrupt");
    c.that(triggered(SMMU_IRQ_EVTQ), "QEMU's SMMU never raised its eventq interrupt");
    let recorded = o.trace.of(kind::EVENT).filter(|e| e.args.contains("F_TRANSLATION") && e.field("sid") == Some(EDU_SID)).count() as u64;
    c.that(recorded > 0, "QEMU recorded no F_TRANSLATION event for the edu");

    // QEMU's GIC: each line went up, was acknowledged by CPU 0 with its
    // INTID and completed with the same INTID before the next acknowledge.
    let gic = gic_events(o);
    c.that(!gic.iter().any(|e| e.name.contains("bad")), "QEMU's GIC saw a bad register access");
    let acks: Vec<(usize, &TraceEvent)> = gic.iter().enumerate().filter(|(_, e)| e.name == "gicv3_icc_iar1_read").collect();
    let mut taken = 0u64;
    let mut spurious = 0u64;
    for &(i, e) in &acks {
        c.that(e.field("cpu") == Some(0), format!("an interrupt was acknowledged by another CPU: {}", e.args));
        let Some(intid) = e.field("value") else { continue };
        if intid >= FIRST_SPECIAL {
            spurious += 1;
            continue;
        }
        taken += 1;
        let eoi = gic[i + 1..].iter().find(|e| e.name == "gicv3_icc_eoir_write" || e.name == "gicv3_icc_iar1_read");
        c.that(
            eoi.is_some_and(|e| e.name == "gicv3_icc_eoir_write" && e.args.contains("EOIR1") && e.field("value") == Some(intid)),
            format!("INTID {intid} was acknowledged but not completed before the next acknowledge"),
        );
    }
    let raised = |name: &str, intid: u64| gic.iter().position(|e| e.name == name && e.field("interrupt") == Some(intid) && e.field("changed to") == Some(1));
    let acked = |intid: u64| acks.iter().filter(|(_, e)| e.field("value") == Some(intid)).map(|&(i, _)| i).collect::<Vec<_>>();
    for (what, name, intid) in [
        ("timer PPI", "gicv3_redist_set_irq", TIMER_INTID),
        ("gerror SPI", "gicv3_dist_set_irq", GERROR_INTID),
        ("eventq SPI", "gicv3_dist_set_irq", EVENTQ_INTID),
    ] {
        let up = raised(name, intid);
        c.that(up.is_some(), format!("QEMU's GIC never saw the {what} (INTID {intid}) asserted"));
        let acks = acked(intid);
        c.that(!acks.is_empty(), format!("the {what} (INTID {intid}) was never acknowledged"));
        if let (Some(up), Some(first)) = (up, acks.first()) {
            c.that(up < *first, format!("the {what} was acknowledged before it was asserted"));
        }
    }

    // The kernel's counts agree with QEMU's.
    if let Some(l) = &eventq {
        let irqs = number_before(l, "times");
        let drained = number_before(l, "events drained");
        let faults = number_before(l, "F_TRANSLATION");
        c.that(irqs == Some(acked(EVENTQ_INTID).len() as u64), format!("kernel says {irqs:?} eventq interrupts, QEMU shows {}", acked(EVENTQ_INTID).len()));
        c.that(faults == Some(recorded), format!("kernel drained {faults:?} F_TRANSLATION events, QEMU recorded {recorded}"));
        c.that(drained >= faults, format!("kernel drained {drained:?} events in all but counted {faults:?} faults"));
    }
    if let Some(l) = &passed {
        c.that(number_before(l, "interrupts taken") == Some(taken), format!("kernel: {l}; QEMU shows {taken} acknowledged"));
        c.that(number_before(l, "spurious") == Some(spurious), format!("kernel: {l}; QEMU shows {spurious} spurious acknowledges"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_the_kernel_lines() {
        let l = "irq-test: INTID 106 (eventq) taken 1 times, 16 events drained (16 F_TRANSLATION for StreamID 0x8)";
        assert_eq!(number_before(l, "times"), Some(1));
        assert_eq!(number_before(l, "events drained"), Some(16));
        assert_eq!(number_before(l, "F_TRANSLATION"), Some(16));
        assert_eq!(number_before("irq-test: passed: 13 interrupts taken, 0 spurious", "interrupts taken"), Some(13));
    }
}
