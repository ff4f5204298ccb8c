//! The SMMU driver on each QEMU flavour: bring-up order seen in QEMU's own
//! trace, and the features the kernel read.

use crate::qemu::{Flavour, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Scenario, GBPA, GBPA_ABORT};
use crate::trace::{kind, TraceEvent};
use crate::Image;

/// Register offsets (SMMUv3 spec, chapter 6).
const CR0: u64 = 0x20;
const STRTAB_BASE: u64 = 0x80;
const CMDQ_BASE: u64 = 0x90;
const EVENTQ_BASE: u64 = 0xa0;
const CR0_SMMUEN: u64 = 1 << 0;
const CR0_EVENTQEN: u64 = 1 << 2;
const CR0_CMDQEN: u64 = 1 << 3;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "smmu-bringup-virt", setup: |_| Ok(cfg(Flavour::Virt)), check: |o, c| check_bringup(o, c, "stages 1+2,") },
        Scenario { name: "smmu-bringup-stage1", setup: |_| Ok(cfg(Flavour::Stage1)), check: |o, c| check_bringup(o, c, "stages 1,") },
        Scenario { name: "smmu-bringup-stage2", setup: |_| Ok(cfg(Flavour::Stage2)), check: |o, c| check_bringup(o, c, "stages 2,") },
        Scenario { name: "smmu-dma-virt", setup: |_| Ok(dma(Flavour::Virt)), check: |o, c| check_dma(o, c, "Stage2", 2) },
        Scenario { name: "smmu-dma-stage1", setup: |_| Ok(dma(Flavour::Stage1)), check: |o, c| check_dma(o, c, "Stage1", 1) },
        Scenario { name: "smmu-dma-stage2", setup: |_| Ok(dma(Flavour::Stage2)), check: |o, c| check_dma(o, c, "Stage2", 2) },
        Scenario {
            // An event queue of 2^12 entries (128 KiB) does not fit the early
            // arena: the SMMU is brought up later, from the frame allocator.
            name: "smmu-bringup-deferred",
            setup: |_| Ok(QemuConfig { append: Some("bulkhead.evtq-log2=12".into()), ..cfg(Flavour::Virt) }),
            check: check_deferred,
        },
        Scenario {
            name: "smmu-cmdq-error",
            setup: |_| Ok(QemuConfig { append: Some("bulkhead.selftest=cmdq-error".into()), image: Image::Selftest, ..cfg(Flavour::Virt) }),
            check: check_cmdq_error,
        },
    ]
}

fn cfg(flavour: Flavour) -> QemuConfig {
    QemuConfig { flavour, extra: vec!["-device".into(), "edu,dma_mask=0xffffffffff".into()], ..QemuConfig::default() }
}

/// Position of the first event matching `f`.
fn first(ev: &[TraceEvent], f: impl Fn(&TraceEvent) -> bool) -> Option<usize> {
    ev.iter().position(f)
}

fn write_to(e: &TraceEvent, off: u64) -> Option<u64> {
    (e.name == "smmuv3_write_mmio" && e.field("addr") == Some(off)).then(|| e.field("val")).flatten()
}

/// The counter at boot milestone `name`, from the kernel's debug log.
fn milestone(o: &Outcome, name: &str) -> Option<u64> {
    let prefix = format!("milestone {name}: ");
    let line = o.log.iter().find_map(|l| l.message.strip_prefix(prefix.as_str()))?;
    line.split(' ').next()?.parse().ok()
}

/// Whether the SMMUs were enabled before the MMU was (`Some(true)`: from
/// the early arena), from the boot milestones.
fn isolated_before_mmu(o: &Outcome) -> Option<bool> {
    Some(milestone(o, "isolation")? < milestone(o, "mmu-on")?)
}

fn check_deferred(o: &Outcome, c: &mut Checks) {
    check_bringup(o, c, "stages 1+2,");
    let smmu = c.machine(o).first_smmu().to_string();
    c.log(o, &format!("SMMU {smmu}: no room in the early arena for its stream table and queues; it aborts through GBPA"));
    c.log(o, &format!("SMMU {smmu}: enabled, every stream aborts; cmdq 2^8, evtq 2^12 entries"));
    c.that(isolated_before_mmu(o) == Some(false), format!("the deferred SMMU was not enabled after the MMU: {:?}", isolated_before_mmu(o)));
    // The first try stopped before any base register: exactly one of each.
    let writes = |off: u64| o.trace.events.iter().filter(|e| write_to(e, off).is_some()).count();
    c.that(writes(STRTAB_BASE) == 1 && writes(EVENTQ_BASE) == 1, "the SMMU's tables were programmed more than once");
}

fn check_bringup(o: &Outcome, c: &mut Checks, stages: &str) {
    c.exit(o, exit::SUCCESS);
    let smmu = c.machine(o).first_smmu().to_string();
    c.log(o, &format!("SMMU {smmu}: SMMUv3.1, {stages} SIDSIZE 16, 2-level stream table, OAS 44 bits"));
    c.log(o, &format!("SMMU {smmu}: enabled, every stream aborts"));
    if o.log.iter().all(|l| !l.message.contains("no room in the early arena")) {
        c.that(isolated_before_mmu(o) == Some(true), format!("the SMMU was not enabled before the MMU: {:?}", isolated_before_mmu(o)));
    }
    let ev = &o.trace.events;
    let gbpa = first(ev, |e| write_to(e, GBPA).is_some_and(|v| v & GBPA_ABORT != 0));
    let disable = first(ev, |e| write_to(e, CR0) == Some(0));
    let strtab = first(ev, |e| write_to(e, STRTAB_BASE).is_some());
    let cmdq = first(ev, |e| write_to(e, CMDQ_BASE).is_some());
    let evtq = first(ev, |e| write_to(e, EVENTQ_BASE).is_some());
    let queues_on = first(ev, |e| write_to(e, CR0).is_some_and(|v| v & (CR0_CMDQEN | CR0_EVENTQEN) == CR0_CMDQEN | CR0_EVENTQEN));
    let opcode = |name: &str| first(ev, |e| e.name == "smmuv3_cmdq_opcode" && e.args.contains(name));
    let cfgi = opcode("CFGI_ALL").or(opcode("CFGI_STE_RANGE"));
    let tlbi = opcode("TLBI_NSNH_ALL");
    let sync = opcode("CMD_SYNC");
    let enable = first(ev, |e| write_to(e, CR0).is_some_and(|v| v & CR0_SMMUEN != 0));
    let order = [
        ("GBPA.ABORT", gbpa),
        ("CR0=0", disable),
        ("STRTAB_BASE", strtab),
        ("CMDQ_BASE", cmdq),
        ("EVENTQ_BASE", evtq),
        ("CMDQEN|EVENTQEN", queues_on),
        ("CFGI_ALL", cfgi),
        ("TLBI_NSNH_ALL", tlbi),
        ("CMD_SYNC", sync),
        ("SMMUEN", enable),
    ];
    for (name, at) in order {
        c.that(at.is_some(), format!("QEMU's trace has no {name}"));
    }
    let positions: Vec<usize> = order.iter().filter_map(|(_, at)| *at).collect();
    c.that(positions.windows(2).all(|w| w[0] < w[1]), format!("bring-up out of order in QEMU's trace: {order:?}"));
    c.no_bypass(o);
    c.that(!o.trace.other.iter().any(|l| l.contains("C_BAD") || l.contains("smmuv3")), "QEMU reported an SMMU error");
}

fn check_cmdq_error(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, "cmdq-test: injecting illegal command opcode 0x7f");
    c.log(o, "cmdq-test: the SMMU refused it: Command(CommandError { kind: Ill, opcode: 127");
    c.log(o, "cmdq-test: commands after recovery completed:");
    let ev = &o.trace.events;
    // QEMU's own view: the illegal command stops the queue with CERROR_ILL
    // and raises GERROR.CMDQ_ERR; the driver acknowledges it, and commands
    // issued afterwards are consumed and complete.
    let error = first(ev, |e| e.name == "smmuv3_cmdq_consume_error" && e.args.ends_with(": 1"));
    let ack = first(ev, |e| e.name == "smmuv3_write_gerrorn" && e.args.contains("acked=0x1"));
    c.that(error.is_some(), "QEMU's trace shows no CERROR_ILL");
    c.that(ack.is_some(), "QEMU's trace shows no GERRORN acknowledgement of CMDQ_ERR");
    if let (Some(error), Some(ack)) = (error, ack) {
        c.that(error < ack, "GERRORN acknowledged before the error");
        let later = &ev[ack..];
        let cfgi = later.iter().filter(|e| e.name == "smmuv3_cmdq_opcode" && e.args.contains("CFGI_STE")).count();
        let syncs = later.iter().filter(|e| e.name == "smmuv3_cmdq_opcode" && e.args.contains("CMD_SYNC")).count();
        c.that(cfgi >= 2, format!("{cfgi} CFGI_STE after recovery, expected the attach's and the detach's"));
        c.that(syncs >= 3, format!("{syncs} CMD_SYNC after recovery, expected the repaired one and two more"));
        c.that(later.iter().all(|e| e.name != "smmuv3_cmdq_consume_error"), "a command failed after recovery");
    }
}

fn dma(flavour: Flavour) -> QemuConfig {
    QemuConfig { append: Some("bulkhead.selftest=dma".into()), image: Image::Selftest, ..cfg(flavour) }
}

/// The edu's StreamID on the root bus at 00:01.0, and the test's window.
const EDU_SID: u64 = 0x8;
const WINDOW: u64 = 0x8000_0000;
const WINDOW_SIZE: u64 = 0x20_0000;

fn check_dma(o: &Outcome, c: &mut Checks, stage: &str, stage_no: u64) {
    c.exit(o, exit::SUCCESS);
    c.log(o, &format!("dma-test: edu 00:01.0 StreamID 0x8: {stage} domain, window 0x80000000+0x200000"));
    c.log(o, "dma-test: DMA inside the window landed, 64 bytes verified");
    c.log(o, "dma-test: event F_TRANSLATION StreamID 0x8 address 0x80201000 write");
    c.log(o, "dma-test: DMA outside the window aborted:");
    // One CMD_SYNC each way (a two-level stream table: the assignment swaps
    // in a fresh level-2 table); a stage-1 stream's release also drops its
    // cached CD (CFGI_CD_ALL).
    let detach = if stage == "Stage1" { 4 } else { 3 };
    c.log(o, &format!("dma-test: attach of 1 stream: 2 commands, 1 CMD_SYNC; detach: {detach} commands, 1 CMD_SYNC"));
    if stage == "Stage1" {
        let cd_all = o.trace.named("smmuv3_cmdq_opcode").filter(|e| e.args.contains("CFGI_CD_ALL")).count();
        c.that(cd_all > 0, "QEMU saw no CFGI_CD_ALL for the stage-1 stream's release");
    }
    // QEMU's own view of every DMA of the edu.
    let sid = |e: &&TraceEvent| e.field("sid") == Some(EDU_SID);
    let ok: Vec<&TraceEvent> = o.trace.of(kind::TRANSLATE_SUCCESS).filter(sid).collect();
    c.that(!ok.is_empty(), "QEMU translated no DMA of the edu");
    for e in &ok {
        let iova = e.field("iova").unwrap_or(u64::MAX);
        c.that((WINDOW..WINDOW + WINDOW_SIZE).contains(&iova), format!("QEMU translated an edu DMA outside the window: {}", e.args));
        c.that(e.field("stage") == Some(stage_no), format!("translation by the wrong stage: {}", e.args));
    }
    let faults = o.trace.of(kind::EVENT).filter(|e| e.args.contains("F_TRANSLATION") && e.field("sid") == Some(EDU_SID)).count();
    c.that(faults > 0, "QEMU recorded no F_TRANSLATION event for the edu");
    let walked_out = o.trace.named("smmu_ptw_invalid_pte").count();
    c.that(walked_out > 0, "QEMU's table walk never hit an invalid entry");
    c.no_bypass(o);
}
