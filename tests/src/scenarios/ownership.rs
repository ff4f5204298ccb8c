//! Groups moving between partitions at run time (issue 6): through Blocked
//! only, checked against QEMU's own trace.

use crate::dtb::{add_property, set_bootargs};
use crate::qemu::{Flavour, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness};
use crate::trace::{kind, TraceEvent};

/// Three partitions: mgmt (manager), net and storage (ids 0, 1, 2).
const MANAGER: &str = include_str!("../../../boards/qemu-virt/overlays/manager.dts");
/// net's edu: group 1, StreamID 0x8; storage's: StreamID 0x10.
const SID: u64 = 0x8;
const STORAGE_SID: u64 = 0x10;
const NET_MEM: (u64, u64) = (0x4800_0000, 0x4c00_0000);
const STORAGE_MEM: (u64, u64) = (0x4c00_0000, 0x4e00_0000);
/// Round trips net → storage → net.
const ROUND_TRIPS: u64 = 100;

fn with_args(mgmt: &str, net: &str, storage: &str) -> Result<String, String> {
    set_bootargs(&set_bootargs(&set_bootargs(MANAGER, "mgmt", mgmt)?, "net", net)?, "storage", storage)
}

fn moves(ctx: &Ctx, flavour: Flavour) -> Result<QemuConfig, String> {
    let dts = with_args(
        &format!("move=1:1:2:{ROUND_TRIPS}"),
        "canary=0x48000100 dma-loop=14000 check=0x48000100",
        "canary=0x4c000100 dma-loop=14000 check=0x4c000100",
    )?;
    ctx.with_overlay(QemuConfig { flavour, timeout: std::time::Duration::from_secs(120), ..QemuConfig::default() }, &dts)
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "ownership-moves-virt", setup: |ctx| moves(ctx, Flavour::Virt), check: check_moves },
        Scenario { name: "ownership-moves-stage2", setup: |ctx| moves(ctx, Flavour::Stage2), check: check_moves },
        Scenario { name: "ownership-fault-storm-stage2", setup: |ctx| storm(ctx, Flavour::Stage2), check: check_storm },
        Scenario { name: "ownership-evtq-overflow-stage2", setup: |ctx| overflow(ctx, Flavour::Stage2), check: check_overflow },
        Scenario { name: "ownership-fault-storm", setup: |ctx| storm(ctx, Flavour::Virt), check: check_storm },
        Scenario { name: "ownership-evtq-overflow", setup: |ctx| overflow(ctx, Flavour::Virt), check: check_overflow },
        Scenario {
            name: "ownership-refusals",
            setup: |ctx| {
                // net (not a manager) tries to take storage's group, then
                // releases its own (allowed) but may not assign it; mgmt names
                // a wrong owner, an unknown group and an unknown partition,
                // then gives net its group back, and both still do DMA.
                // The steps are spaced in time (every CPU starts at once):
                // mgmt reads the groups at once, net moves at 300 ms, mgmt at
                // 700 ms, the DMA checks from 1 s on.
                let dts = with_args(
                    "info=1 info=2 wait=700 try-move=2:1:0 try-move=9:2:1 try-move=1:1:5 assign=1:1 exit=0",
                    "wait=300 try-move=2:2:1 try-move=1:1:2 wait=1000 dma-own exit=0",
                    "wait=1200 dma-own exit=0",
                )?;
                ctx.with_overlay(QemuConfig::default(), &dts)
            },
            check: check_refusals,
        },
    ]
}

fn check_moves(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, &format!("[mgmt] moves: {ROUND_TRIPS:#x} round trips of group 0x1, failures 0x0"));
    for p in ["net", "storage"] {
        if let Some(line) = c.log(o, &format!("[{p}] dma-loop: verified 0x")) {
            c.that(line.contains(", bad 0x0,"), format!("{p}: {line}"));
            c.that(!line.contains("verified 0x0,"), format!("{p} never verified a transfer: {line}"));
        }
    }
    c.log(o, "[net] canary at 0x48000100 intact");
    c.log(o, "[storage] canary at 0x4c000100 intact");
    // Epochs of StreamID 0x8, as QEMU saw them: every CMD_SYNC that follows a
    // CFGI_STE of it ends one. 0: before boot attached it (blocked); then
    // net, blocked, storage, blocked, net, ... as the manager moves it.
    let (mut epoch, mut pending) = (0usize, false);
    let (mut in_blocked, mut owned, mut outside) = (0usize, 0usize, Vec::new());
    let mut cost = (0usize, 0usize); // commands seen in release / assign epochs' closing batches
    let mut batch = 0usize;
    for e in &o.trace.events {
        match e.name.as_str() {
            _ if kind::CFGI_STE.matches(e) && e.field("streamid") == Some(SID) => pending = true,
            _ if kind::CMDQ_OPCODE.matches(e) => {
                batch += 1;
                if e.args.contains("CMD_SYNC") {
                    if pending {
                        epoch += 1;
                        if epoch % 2 == 0 {
                            cost.0 = cost.0.max(batch)
                        } else {
                            cost.1 = cost.1.max(batch)
                        }
                        pending = false;
                    }
                    batch = 0;
                }
            }
            _ if kind::TRANSLATE_SUCCESS.matches(e) && e.field("sid") == Some(SID) => {
                let pa = e.field("translated").unwrap_or(0);
                let owner = match epoch {
                    0 => None,
                    k if k % 2 == 0 => None,
                    k if ((k - 1) / 2) % 2 == 0 => Some(NET_MEM),
                    _ => Some(STORAGE_MEM),
                };
                match owner {
                    None => in_blocked += 1,
                    Some((lo, hi)) if !(lo..hi).contains(&pa) => outside.push((epoch, pa)),
                    _ => owned += 1,
                }
            }
            _ => {}
        }
    }
    let want = 1 + 4 * ROUND_TRIPS as usize;
    c.that(epoch == want, format!("QEMU saw {epoch} STE changes of StreamID 0x8 completed by CMD_SYNC, expected {want}"));
    // Zero translations while Blocked means something only because QEMU
    // did trace translations of this StreamID while it was owned.
    c.that(owned > 0, "QEMU traced no translation of StreamID 0x8 while it was owned: cannot show none happened while Blocked");
    c.that(in_blocked == 0, format!("{in_blocked} translations of StreamID 0x8 while its group was Blocked"));
    c.that(outside.is_empty(), format!("translations of StreamID 0x8 outside its owner's memory: {:x?}", &outside[..outside.len().min(5)]));
    c.that(cost.0 <= 3 && cost.1 <= 2, format!("release/assign batches of {} / {} commands, expected at most 3 / 2", cost.0, cost.1));
    c.no_bypass(o);
}

fn check_refusals(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    // Status codes: -3 denied, -5 owner mismatch, -2 invalid argument.
    c.log(o, "[net] try-move group 0x2: release 0xfffffffffffffffd assign 0xfffffffffffffffd");
    c.log(o, "[net] try-move group 0x1: release 0x0 assign 0xfffffffffffffffd");
    c.log(o, "[mgmt] try-move group 0x2: release 0xfffffffffffffffb assign 0xfffffffffffffffb");
    c.log(o, "[mgmt] try-move group 0x9: release 0xfffffffffffffffe assign 0xfffffffffffffffe");
    c.log(o, "[mgmt] try-move group 0x1: release 0xfffffffffffffffb assign 0xfffffffffffffffe");
    c.log(o, "[mgmt] assign group 0x1 to 0x1: 0x0");
    // group 1: owned by net (1), one device and one StreamID, 00:01.0 = RID 0x8.
    c.log(o, "[mgmt] group 0x1: status 0x0 owner 0x1 devices|sids 0x100000001 rid|sid 0x800000008");
    c.log(o, "[mgmt] group 0x2: status 0x0 owner 0x2 devices|sids 0x100000001 rid|sid 0x1000000010");
    c.log(o, "[net] dma own 0x48100000: ok, 64 bytes verified");
    c.log(o, "[storage] dma own 0x4c100000: ok, 64 bytes verified");
    c.log(o, "all 3 partitions stopped, 0 failed");
}

fn check_storm(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, "group 1 quarantined: partition net exceeded its fault limit");
    c.log(o, "limit 32 per 2000 ms); the group is Blocked");
    if let Some(line) = c.log(o, "[net] storm: device taken away after 0x") {
        c.that(!line.contains("after 0x0 "), format!("quarantined before any fault: {line}"));
    }
    if let Some(line) = c.log(o, "[storage] dma-loop: verified 0x") {
        c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("storage during the storm: {line}"));
    }
    c.log(o, "[storage] canary at 0x4c000100 intact");
    // After the quarantine's CMD_SYNC, QEMU translates nothing more for net's
    // device, and the storm's faults stop with it.
    let ev = &o.trace.events;
    let last_cfgi = ev.iter().rposition(|e| kind::CFGI_STE.matches(e) && e.field("streamid") == Some(SID));
    c.that(last_cfgi.is_some(), "QEMU saw no STE change for net's device");
    if let Some(at) = last_cfgi {
        let net = |e: &TraceEvent| e.field("sid") == Some(SID);
        let before = |e: &TraceEvent| net(e) && o.trace.index_of(e).is_some_and(|i| i < at);
        let after = |e: &TraceEvent| net(e) && o.trace.index_of(e).is_some_and(|i| i > at);
        // net's storm never translates; storage's DMA shows QEMU traced translations.
        let storage = |e: &TraceEvent| e.field("sid") == Some(STORAGE_SID);
        c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of net's device after quarantine", after, Witness::InRun("for storage's device", &storage));
        // An abort STE records no event: the storm's faults stop with it.
        c.none_of(o, kind::EVENT, "event for net's device after its STE aborts", after, Witness::InRun("for net's device before it (the storm)", &before));
    }
    c.no_bypass(o);
}

fn check_overflow(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    let smmu = c.machine(o).first_smmu().to_string();
    c.log(o, &format!("SMMU {smmu}: enabled, every stream aborts; cmdq 2^8, evtq 2^3 entries"));
    let overflow = o.log.iter().position(|l| l.message.contains("event queue overflowed (reported as EVENTQ_ABT_ERR): events were lost"));
    c.that(overflow.is_some(), "the overflow was not reported");
    if let Some(at) = overflow {
        let later = o.log[at..].iter().filter(|l| l.message.contains("SMMU event F_TRANSLATION: StreamID 0x8")).count();
        c.that(later > 0, "no event decoded after the overflow");
    }
    c.no_log(o, "failing closed");
    c.log(o, "[net] dma own 0x48100000: ok, 64 bytes verified");
    c.log(o, "[storage] dma own 0x4c100000: ok, 64 bytes verified");
    // QEMU's side: the queue really was full (GERROR.EVENTQ_ABT_ERR raised).
    c.that(o.trace.named("smmuv3_write_gerror").any(|e| e.args.contains("toggled=0x4")), "QEMU never raised EVENTQ_ABT_ERR");
}

fn storm(ctx: &Ctx, flavour: Flavour) -> Result<QemuConfig, String> {
    let dts = with_args("exit=0", "fault-storm=0x70000000:40 wait=500 exit=0", "canary=0x4c000100 dma-loop=5000 check=0x4c000100")?;
    let dts = add_property(&dts, "net", "bulkhead,fault-limit = <32 2000>;")?;
    ctx.with_overlay(QemuConfig { flavour, timeout: std::time::Duration::from_secs(60), ..QemuConfig::default() }, &dts)
}

fn overflow(ctx: &Ctx, flavour: Flavour) -> Result<QemuConfig, String> {
    let dts = with_args("exit=0", "attack=peer-ram:0x4c000100 attack=kernel-image:0x40200000 dma-own exit=0", "wait=1500 dma-own exit=0")?;
    ctx.with_overlay(QemuConfig { flavour, append: Some("bulkhead.evtq-log2=3".into()), ..QemuConfig::default() }, &dts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// The trace of a fault storm: net's faults, the quarantine's STE
    /// change, storage's DMA going on; `event` is the name this QEMU gives
    /// the recorded-event trace point, `after` adds a fault after the
    /// quarantine (the bug the check exists for).
    fn storm_trace(event: &str, after: bool) -> String {
        let mut t = String::new();
        for _ in 0..3 {
            t += &format!("{event} F_TRANSLATION sid=8\n");
        }
        t += "smmuv3_translate_success smmuv3-iommu-memory-region-16-2 sid=16 iova=0x4c100000 translated=0x4c100000 perm=0x3\n";
        t += "smmuv3_cmdq_cfgi_ste streamid =8\nsmmuv3_cmdq_opcode <--- CMD_SYNC\n";
        if after {
            t += &format!("{event} F_TRANSLATION sid=8\n");
        }
        t
    }

    fn catalogue(names: &[&str]) -> Arc<BTreeSet<String>> {
        let mut set: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        set.extend(
            ["smmuv3_translate_success", "smmuv3_translate_bypass", "smmuv3_translate_disable", "smmuv3_cmdq_cfgi_ste", "smmuv3_cmdq_opcode"].map(String::from),
        );
        Arc::new(set)
    }

    /// The storm check's trace failures (its log checks fail on an empty log).
    fn trace_failures(trace: &str, points: &[&str]) -> Vec<String> {
        let o = Outcome { trace: Trace::parse(trace).with_catalogue(catalogue(points)), ..Outcome::default() };
        let mut c = Checks::default();
        check_storm(&o, &mut c);
        c.failures.into_iter().filter(|f| !f.starts_with("log has no line") && !f.starts_with("exit status") && !f.starts_with("timed out")).collect()
    }

    #[test]
    fn the_storm_check_reads_both_names_of_the_event_trace_point() {
        for name in ["smmuv3_record_event", "smmuv3_propagate_event"] {
            assert_eq!(trace_failures(&storm_trace(name, false), &[name]), Vec::<String>::new(), "{name}");
            let f = trace_failures(&storm_trace(name, true), &[name]);
            assert!(f.iter().any(|f| f.contains("event for net's device after its STE aborts")), "{name}: {f:?}");
        }
    }

    #[test]
    fn the_storm_check_fails_when_the_tracer_could_not_have_seen_events() {
        // A QEMU that renamed the trace point again: no name the harness
        // knows is in its catalogue, and the trace has none, so "zero
        // events after the quarantine" proves nothing and must fail.
        let f = trace_failures(&storm_trace("smmuv3_event_renamed_again", true), &["smmuv3_event_renamed_again"]);
        assert!(f.iter().any(|f| f.contains("this QEMU has no trace point for SMMU event recorded")), "{f:?}");
        // The old name in the trace of a QEMU whose catalogue has only the
        // new one (a mixed-up trace): still no vacuous pass.
        let f = trace_failures(&storm_trace("smmuv3_record_event", true), &["smmuv3_propagate_event"]);
        assert!(!f.is_empty(), "{f:?}");
        // The trace point exists but the storm's own faults are missing:
        // the positive control fails.
        let no_storm = "smmuv3_translate_success x sid=16 iova=0x1 translated=0x4c100000 perm=0x3\nsmmuv3_cmdq_cfgi_ste streamid =8\n";
        let f = trace_failures(no_storm, &["smmuv3_propagate_event"]);
        assert!(f.iter().any(|f| f.contains("where it must")), "{f:?}");
    }
}
