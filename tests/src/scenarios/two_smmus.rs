//! Two SMMUs end to end (QEMU ≥ 10.2, [`Flavour::TwoSmmus`]): one
//! `arm-smmuv3` for `pcie.0`, one for the `pxb-pcie` root complex (buses
//! from 0x80), the DT fixed up by the harness to describe both
//! ([`crate::dtb::describe_two_smmus`]).
//!
//! QEMU's trace does not name the SMMU instance. Its events are attributed
//! by StreamID — the DT's `iommu-map` sends buses below 0x80 to the first
//! SMMU and the rest to the second, and StreamID = requester ID on both, so
//! a StreamID's bus names its SMMU — and, for register writes, by the
//! order of bring-up and each SMMU's own stream-table base. SMMU and host
//! names come from the DTB the run booted ([`Machine`]).
//!
//! | partition | device | SMMU | StreamID | group |
//! |---|---|---|---|---|
//! | net | edu 00:01.0 | first | 0x8 | 1 |
//! | storage | edu 81:00.0 (behind root port 80:00.0) | second | 0x8100 | 4 |
//! | net, in `two-smmus-release-both` | edu 82:00.0 (root port 80:01.0) | second | 0x8200 | 6 |

use crate::dtb::{add_property, set_bootargs};
use crate::machine::Machine;
use crate::qemu::{Flavour, Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Ctx, Scenario, Witness, GBPA, GBPA_ABORT};
use crate::trace::{kind, TraceEvent};
use crate::Image;
use std::time::Duration;

/// The shipped two-SMMU demo (its `qemu-args:` add both edus).
const DEMO: &str = include_str!("../../../boards/qemu-virt/overlays/two-smmus.dts");
/// net's edu on pcie.0 and storage's behind the pxb's root port.
const NET_SID: u64 = 0x8;
const STORAGE_SID: u64 = 0x8100;
/// A second edu of net's behind the pxb (`two-smmus-release-both`).
const NET2_SID: u64 = 0x8200;
const NET_MEM: (u64, u64) = (0x4800_0000, 0x4c00_0000);
const STORAGE_MEM: (u64, u64) = (0x4c00_0000, 0x4e00_0000);
const NET_CANARY: u64 = 0x4800_0100;
const STORAGE_CANARY: u64 = 0x4c00_0100;
/// net's edu BAR (first in pcie.0's half of the window) and storage's
/// (host 1's half starts at 0x2770_0000; its root port's 4 KiB BAR comes
/// first, the edu's 1 MiB BAR at the next 1 MiB boundary).
const NET_BAR: u64 = 0x1000_0000;
/// net's second edu (82:00.0, `two-smmus-release-both`): after both root
/// ports' and storage's edu's BARs in host 1's half.
const NET2_BAR: u64 = 0x27a0_0000;
const STORAGE_BAR: u64 = 0x2780_0000;
/// Fault limit for the attack matrix: above its faults (see partitions.rs).
const MATRIX_FAULT_LIMIT: u32 = 4096;
/// SMMU register offsets (SMMUv3 spec, chapter 6).
const CR0: u64 = 0x20;
const STRTAB_BASE: u64 = 0x80;
const CMDQ_BASE: u64 = 0x90;
const EVENTQ_BASE: u64 = 0xa0;
const CR0_SMMUEN: u64 = 1 << 0;
/// The board's early list (qemu-virt): an SMMU this machine does not have.
const EARLY_SMMU: u64 = 0x0905_0000;
/// Round trips of the group behind the second SMMU.
const ROUND_TRIPS: u64 = 100;

fn base(timeout: u64) -> QemuConfig {
    QemuConfig { flavour: Flavour::TwoSmmus, timeout: Duration::from_secs(timeout), ..QemuConfig::default() }
}

fn demo_with(net: &str, storage: &str) -> Result<String, String> {
    set_bootargs(&set_bootargs(DEMO, "net", net)?, "storage", storage)
}

/// The demo's two partitions plus `mgmt`, a manager without devices
/// (ids: mgmt 0, net 1, storage 2).
fn with_manager(dts: &str, mgmt: &str) -> String {
    dts.replace(
        "        net: net {",
        &format!(
            "        mgmt: mgmt {{\n            compatible = \"bulkhead,partition\";\n            memory = <0x0 0x50000000 0x0 0x02000000>;\n            bulkhead,image = <0x0 0x60200000 0x0 0x00100000>;\n            bulkhead,entry = <0x0 0x50000000>;\n            bulkhead,bootargs = \"{mgmt}\";\n            bulkhead,manager;\n        }};\n\n        net: net {{"
        ),
    ) + "\n&{/cpus/cpu@3} { bulkhead,partition = <&mgmt>; };\n"
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            // QEMU's own DT: one SMMU described, none at the board's early
            // address. The kernel survives the early list and boots.
            name: "two-smmus-qemu-dtb",
            setup: |_| Ok(QemuConfig { dtb: None, ..base(60) }),
            check: check_qemu_dtb,
        },
        Scenario {
            name: "two-smmus-bringup",
            setup: |ctx| {
                let cfg = base(60);
                let dtb = ctx.file("two-smmus.dtb");
                cfg.dump_dtb(&dtb)?;
                Ok(QemuConfig { dtb: Some(dtb), ..cfg })
            },
            check: check_bringup,
        },
        Scenario { name: "two-smmus-attack", setup: attack, check: check_attack },
        Scenario { name: "two-smmus-moves", setup: moves, check: check_moves },
        Scenario { name: "two-smmus-release-both", setup: release_both, check: check_release_both },
        Scenario { name: "two-smmus-fault-storm", setup: storm, check: check_storm },
        Scenario { name: "two-smmus-fail-closed", setup: fail_closed, check: check_fail_closed },
    ]
}

/// The machine of the run; a failure when it cannot be read.
fn machine(o: &Outcome, c: &mut Checks) -> Option<Machine> {
    match Machine::of(o) {
        Ok(m) => Some(m),
        Err(e) => {
            c.that(false, format!("cannot read the run's DTB: {e}"));
            None
        }
    }
}

fn write_to(e: &TraceEvent, off: u64) -> Option<u64> {
    (kind::WRITE_MMIO.matches(e) && e.field("addr") == Some(off)).then(|| e.field("val")).flatten()
}

/// The kernel survived the early list on a machine without the SMMU it
/// names, reached its banner and aborted the one SMMU QEMU's DT describes.
fn check_qemu_dtb(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    c.log(o, "bulkhead 0.1.0");
    c.log(o, "SMMUs: 1");
    c.log(o, &format!("board's early SMMU at {EARLY_SMMU:#x}: not on this machine (reading GBPA faulted in _start; nothing written)"));
    let Some(m) = machine(o, c) else { return };
    c.that(m.smmus.len() == 1, format!("QEMU's own DT describes {} SMMUs, expected 1 (has QEMU started describing both?)", m.smmus.len()));
    c.that(m.smmus.iter().all(|s| s.base != EARLY_SMMU), "QEMU's DT has an SMMU at the early list's address");
    for s in &m.smmus {
        c.log(o, &format!("SMMUv3 {} at {:#x}", s.name, s.base));
        c.log(o, &format!("SMMU {}: enabled, every stream aborts", s.name));
    }
    c.log(o, "DMA aborted (GBPA.ABORT) since the device tree was read (not in the board's early list)");
    c.gbpa_abort_first(o);
}

/// Both SMMUs abort before anything else is written to either, then each
/// is brought up in turn with its own stream table and queues and
/// reaches SMMUEN with every stream aborting.
fn check_bringup(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    let Some(m) = machine(o, c) else { return };
    c.that(m.smmus.len() == 2, format!("the DT describes {} SMMUs, expected 2", m.smmus.len()));
    c.log(o, &format!("SMMUs: {}", m.smmus.len()));
    c.log(o, &format!("board's early SMMU at {EARLY_SMMU:#x}: not on this machine"));
    for s in &m.smmus {
        c.log(o, &format!("SMMUv3 {} at {:#x} size 0x20000, coherent", s.name, s.base));
        c.log(o, &format!("SMMU {}: SMMUv3.1, stages 1+2, SIDSIZE 16, 2-level stream table", s.name));
        c.log(o, &format!("SMMU {}: enabled, every stream aborts", s.name));
    }
    for h in &m.hosts {
        c.log(o, &format!("PCI host {}: ECAM", h.path));
    }
    let writes = o.trace.mmio_writes();
    let n = m.smmus.len();
    // The first writes are one GBPA.ABORT per SMMU.
    let aborts = writes.iter().take_while(|&&(off, v)| off == GBPA && v & GBPA_ABORT != 0).count();
    c.that(aborts >= n, format!("QEMU's trace starts with {aborts} GBPA.ABORT writes before any other SMMU write, expected one per SMMU ({n})"));
    // Then each SMMU in turn: its base registers, then SMMUEN.
    let bases = |off: u64| writes.iter().filter(|w| w.0 == off).map(|w| w.1).collect::<Vec<u64>>();
    for (what, off) in [("stream table", STRTAB_BASE), ("command queue", CMDQ_BASE), ("event queue", EVENTQ_BASE)] {
        let mut v = bases(off);
        c.that(v.len() == n, format!("{} {what} base writes, expected one per SMMU ({n}): {v:x?}", v.len()));
        v.dedup();
        c.that(v.len() == n, format!("the SMMUs share a {what}: {v:x?}"));
    }
    let ev = &o.trace.events;
    let enables: Vec<usize> = ev.iter().enumerate().filter(|(_, e)| write_to(e, CR0).is_some_and(|v| v & CR0_SMMUEN != 0)).map(|(i, _)| i).collect();
    let strtabs: Vec<usize> = ev.iter().enumerate().filter(|(_, e)| write_to(e, STRTAB_BASE).is_some()).map(|(i, _)| i).collect();
    c.that(enables.len() == n, format!("{} SMMUEN writes, expected {n}", enables.len()));
    if enables.len() == n && strtabs.len() == n {
        // Bring-up is one SMMU after the other: SMMU k's stream table is
        // programmed after SMMU k-1 is enabled and before SMMU k is.
        for k in 0..n {
            c.that(strtabs[k] < enables[k], format!("SMMU {k}: SMMUEN before its stream table"));
            if k > 0 {
                c.that(enables[k - 1] < strtabs[k], format!("SMMU {k}: its tables were programmed before SMMU {} was enabled", k - 1));
            }
        }
    }
    c.no_bypass(o);
    c.that(!o.trace.other.iter().any(|l| l.contains("C_BAD")), "QEMU reported a bad STE or CD");
}

fn attack(ctx: &Ctx) -> Result<QemuConfig, String> {
    // Both directions: net's device (first SMMU) aims at storage and the
    // kernel, storage's (second SMMU) at net and the kernel.
    let targets = |peer_ram: u64, peer_bar: u64| {
        [
            ("peer-ram", peer_ram),
            ("peer-bar", peer_bar),
            ("kernel-image", 0x4020_0000),
            ("kernel-heap", 0x4040_0000),
            ("gic-distributor", 0x0800_0000),
            ("its-doorbell", 0x0809_0040),
            ("unmapped-ipa", 0x7000_0000),
        ]
        .iter()
        .map(|(n, a)| format!("attack={n}:{a:#x}"))
        .collect::<Vec<_>>()
        .join(" ")
    };
    let net = format!("canary={NET_CANARY:#x} dma-own {} wait=500 check={NET_CANARY:#x} exit=0", targets(STORAGE_CANARY, STORAGE_BAR));
    let storage = format!("canary={STORAGE_CANARY:#x} dma-own {} wait=500 check={STORAGE_CANARY:#x} exit=0", targets(NET_CANARY, NET_BAR));
    let mut dts = demo_with(&net, &storage)?;
    for p in ["net", "storage"] {
        dts = add_property(&dts, p, &format!("bulkhead,fault-limit = <{MATRIX_FAULT_LIMIT} 1000>;"))?;
    }
    ctx.with_overlay(base(120), &dts)
}

/// Each side's attacks are blocked and attributed to its own device; QEMU
/// translated each device's DMA into its own partition's memory only, and
/// recorded each device's faults.
fn check_attack(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.no_log(o, "LEAKED");
    c.no_log(o, "CHANGED");
    c.no_log(o, "quarantined");
    let Some(m) = machine(o, c) else { return };
    for (p, sid, mem, bdf) in [("net", NET_SID, NET_MEM, "00:01.0"), ("storage", STORAGE_SID, STORAGE_MEM, "81:00.0")] {
        c.log(o, &format!("[{p}] dma own 0x{:x}: ok, 64 bytes verified", mem.0 + 0x10_0000));
        for n in ["peer-ram", "peer-bar", "kernel-image", "kernel-heap", "gic-distributor", "its-doorbell", "unmapped-ipa"] {
            if let Some(line) = c.log(o, &format!("[{p}] attack {n} ")) {
                c.that(line.contains(": read blocked (device got 0x"), format!("{p}'s attack {n}: {line}"));
            }
        }
        c.log(o, &format!("[{p}] canary at 0x{:x} intact", mem.0 + 0x100));
        c.log(o, &format!("StreamID {sid:#x}, group {}, partition {p}, device {bdf}, write at", if p == "net" { 1 } else { 4 }));
        let smmu = m.smmu_of_bus((sid >> 8) as u32).map(|s| s.name.clone()).unwrap_or_default();
        c.that(!smmu.is_empty(), format!("the DT sends StreamID {sid:#x} to no SMMU"));
        let mine = |e: &TraceEvent| e.field("sid") == Some(sid);
        let outside = |e: &TraceEvent| mine(e) && !(mem.0..mem.1).contains(&e.field("translated").unwrap_or(0));
        c.none_of(
            o,
            kind::TRANSLATE_SUCCESS,
            &format!("translation of {p}'s DMA (through {smmu}) outside its memory"),
            outside,
            Witness::InRun(&format!("of {p}'s DMA"), &mine),
        );
        let faults = o.trace.of(kind::EVENT).filter(|e| mine(e)).count();
        c.that(faults >= 7, format!("QEMU recorded only {faults} events for {p}'s device (through {smmu})"));
    }
    c.no_bypass(o);
}

fn moves(ctx: &Ctx) -> Result<QemuConfig, String> {
    // storage's group (behind the second SMMU) goes storage → net → storage,
    // ROUND_TRIPS times, while both partitions DMA with whatever they own.
    let dts = demo_with(
        &format!("canary={NET_CANARY:#x} dma-loop=14000 check={NET_CANARY:#x}"),
        &format!("canary={STORAGE_CANARY:#x} dma-loop=14000 check={STORAGE_CANARY:#x}"),
    )?;
    let dts = with_manager(&dts, &format!("move=4:2:1:{ROUND_TRIPS}"));
    ctx.with_overlay(base(150), &dts)
}

/// The STE epochs of `sid` as QEMU completed them: the trace position of
/// the CMD_SYNC that ended each (every CMD_SYNC after a CFGI_STE of `sid`).
fn epochs(o: &Outcome, sid: u64) -> Vec<usize> {
    let mut pending = false;
    let mut out = Vec::new();
    for (i, e) in o.trace.events.iter().enumerate() {
        if kind::CFGI_STE.matches(e) && e.field("streamid") == Some(sid) {
            pending = true;
        } else if pending && kind::CMDQ_OPCODE.matches(e) && e.args.contains("CMD_SYNC") {
            out.push(i);
            pending = false;
        }
    }
    out
}

fn check_moves(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, &format!("[mgmt] moves: {ROUND_TRIPS:#x} round trips of group 0x4, failures 0x0"));
    for p in ["net", "storage"] {
        if let Some(line) = c.log(o, &format!("[{p}] dma-loop: verified 0x")) {
            c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("{p}: {line}"));
        }
        c.log(o, &format!("[{p}] canary at 0x{:x} intact", if p == "net" { NET_CANARY } else { STORAGE_CANARY }));
    }
    // Epoch k of StreamID 0x8100 (behind the second SMMU): 0 before boot
    // attached it, 1 storage, then blocked, net, blocked, storage, ...
    let ends = epochs(o, STORAGE_SID);
    let want = 1 + 4 * ROUND_TRIPS as usize;
    c.that(ends.len() == want, format!("QEMU completed {} STE changes of StreamID 0x8100, expected {want}", ends.len()));
    let owner = |at: usize| -> Option<(u64, u64)> {
        let k = ends.iter().filter(|&&e| e < at).count();
        match k {
            0 => None,
            k if k % 2 == 0 => None,
            k if ((k - 1) / 2) % 2 == 0 => Some(STORAGE_MEM),
            _ => Some(NET_MEM),
        }
    };
    let mine = |e: &TraceEvent| e.field("sid") == Some(STORAGE_SID);
    let owned = |e: &TraceEvent| mine(e) && o.trace.index_of(e).and_then(owner).is_some();
    let blocked = |e: &TraceEvent| mine(e) && o.trace.index_of(e).is_some_and(|i| owner(i).is_none());
    let misplaced =
        |e: &TraceEvent| mine(e) && o.trace.index_of(e).and_then(owner).is_some_and(|(lo, hi)| !(lo..hi).contains(&e.field("translated").unwrap_or(0)));
    c.none_of(
        o,
        kind::TRANSLATE_SUCCESS,
        "translation of StreamID 0x8100 while its group was Blocked",
        blocked,
        Witness::InRun("of StreamID 0x8100 while owned", &owned),
    );
    c.none_of(
        o,
        kind::TRANSLATE_SUCCESS,
        "translation of StreamID 0x8100 outside its owner's memory",
        misplaced,
        Witness::InRun("of StreamID 0x8100 while owned", &owned),
    );
    // net's own device, behind the first SMMU, never moved.
    let net = |e: &TraceEvent| e.field("sid") == Some(NET_SID);
    let net_out = |e: &TraceEvent| net(e) && !(NET_MEM.0..NET_MEM.1).contains(&e.field("translated").unwrap_or(0));
    c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of net's own device outside net's memory", net_out, Witness::InRun("of net's own device", &net));
    c.no_bypass(o);
}

fn release_both(ctx: &Ctx) -> Result<QemuConfig, String> {
    // net owns a group on each SMMU (00:01.0 and 82:00.0); mgmt takes both
    // away and only then gives both to storage, which then DMAs through
    // each; net keeps polling for devices meanwhile.
    let dts =
        demo_with(&format!("dma-own dma-at={NET2_BAR:#x} wait=3000 exit=0"), &format!("wait=1500 dma-own dma-at={NET_BAR:#x} dma-at={NET2_BAR:#x} exit=0"))?;
    let dts = dts
        .replace(
            " * qemu-args: -device edu,dma_mask=0xffffffffffffffff,bus=rp80\n",
            " * qemu-args: -device edu,dma_mask=0xffffffffffffffff,bus=rp80\n * qemu-args: -device pcie-root-port,id=rp81,bus=pcie.1,chassis=81,addr=1.0\n * qemu-args: -device edu,dma_mask=0xffffffffffffffff,bus=rp81\n",
        )
        .replace(
            "            bulkhead,partition = <&storage>;\n        };\n    };\n};",
            "            bulkhead,partition = <&storage>;\n        };\n    };\n\n    port@1,0 {                          /* 80:01.0 */\n        reg = <0x800800 0x0 0x0 0x0 0x0>;\n        #address-cells = <3>;\n        #size-cells = <2>;\n\n        edu@0,0 {                       /* 82:00.0 */\n            reg = <0x820000 0x0 0x0 0x0 0x0>;\n            bulkhead,partition = <&net>;\n        };\n    };\n};",
        );
    let dts = with_manager(&dts, "wait=700 release=1:1 release=6:1 assign=1:2 assign=6:2 info=1 info=6 exit=0");
    ctx.with_overlay(base(90), &dts)
}

fn check_release_both(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, "group 6: SMMU");
    for g in [1, 6] {
        c.log(o, &format!("[mgmt] release group 0x{g:x} from 0x1: 0x0"));
        c.log(o, &format!("[mgmt] assign group 0x{g:x} to 0x2: 0x0"));
        c.log(o, &format!("[mgmt] group 0x{g:x}: status 0x0 owner 0x2"));
    }
    if let Some(m) = machine(o, c) {
        let (a, b) = (m.smmu_of_bus(0).map(|s| s.name.clone()), m.smmu_of_bus(0x82).map(|s| s.name.clone()));
        c.that(a.is_some() && b.is_some() && a != b, format!("net's two devices are not behind two SMMUs in the DT: {a:?}, {b:?}"));
        for (sid, smmu) in [(NET_SID, &a), (NET2_SID, &b)] {
            c.log(o, &format!("SMMU {}, StreamIDs {sid:#x}", smmu.clone().unwrap_or_default()));
        }
    }
    // Each StreamID: boot's attach to net, the release, the assignment to
    // storage. Both releases complete (CMD_SYNC) before either assignment's
    // first STE invalidation.
    let (e1, e2) = (epochs(o, NET_SID), epochs(o, NET2_SID));
    c.that(e1.len() == 3 && e2.len() == 3, format!("STE epochs of 0x8 / 0x8200: {} / {}, expected 3 each", e1.len(), e2.len()));
    if e1.len() == 3 && e2.len() == 3 {
        let released = e1[1].max(e2[1]);
        let cfgi_after = |sid: u64, from: usize| {
            o.trace.events.iter().enumerate().skip(from + 1).find(|(_, e)| kind::CFGI_STE.matches(e) && e.field("streamid") == Some(sid)).map(|(i, _)| i)
        };
        let first_new = cfgi_after(NET_SID, e1[1]).into_iter().chain(cfgi_after(NET2_SID, e2[1])).min();
        c.that(
            first_new.is_some_and(|f| f > released),
            format!("a new STE was invalidated (event {first_new:?}) before both releases completed (event {released})"),
        );
        for (sid, ends) in [(NET_SID, &e1), (NET2_SID, &e2)] {
            let mine = |e: &TraceEvent| e.field("sid") == Some(sid);
            let stage = |lo: usize, hi: usize, mem: (u64, u64)| {
                move |e: &TraceEvent| {
                    mine(e) && o.trace.index_of(e).is_some_and(|i| i > lo && i < hi) && !(mem.0..mem.1).contains(&e.field("translated").unwrap_or(0))
                }
            };
            let after = |e: &TraceEvent| mine(e) && o.trace.index_of(e).is_some_and(|i| i > ends[2]);
            let blocked = |e: &TraceEvent| mine(e) && o.trace.index_of(e).is_some_and(|i| i > ends[1] && i < ends[2]);
            c.none_of(
                o,
                kind::TRANSLATE_SUCCESS,
                &format!("translation of {sid:#x} outside net's memory while net owned it"),
                stage(ends[0], ends[1], NET_MEM),
                Witness::InRun(&format!("of {sid:#x}"), &mine),
            );
            c.none_of(
                o,
                kind::TRANSLATE_SUCCESS,
                &format!("translation of {sid:#x} while Blocked"),
                blocked,
                Witness::InRun(&format!("of {sid:#x} once storage owned it"), &after),
            );
            c.none_of(
                o,
                kind::TRANSLATE_SUCCESS,
                &format!("translation of {sid:#x} outside storage's memory after the move"),
                stage(ends[2], usize::MAX, STORAGE_MEM),
                Witness::InRun(&format!("of {sid:#x} once storage owned it"), &after),
            );
        }
    }
    // net through each of its devices before, storage through each after.
    let n =
        |p: &str| o.log.iter().filter(|l| l.message.contains(&format!("[{p}] dma own 0x"))).filter(|l| l.message.contains(": ok, 64 bytes verified")).count();
    c.that(n("net") == 2, format!("net verified {} DMAs, expected one through each of its two devices", n("net")));
    c.that(n("storage") == 3, format!("storage verified {} DMAs, expected one through its own device and one through each of net's", n("storage")));
    c.no_bypass(o);
}

fn storm(ctx: &Ctx) -> Result<QemuConfig, String> {
    // net's device (first SMMU) faults until quarantined; storage's
    // (second SMMU) keeps verifying DMA throughout.
    let dts = demo_with("fault-storm=0x70000000:40 wait=500 exit=0", &format!("canary={STORAGE_CANARY:#x} dma-loop=5000 check={STORAGE_CANARY:#x}"))?;
    let dts = add_property(&dts, "net", "bulkhead,fault-limit = <32 2000>;")?;
    ctx.with_overlay(base(90), &dts)
}

fn check_storm(o: &Outcome, c: &mut Checks) {
    c.exit(o, exit::SUCCESS);
    c.log(o, "group 1 quarantined: partition net exceeded its fault limit");
    if let Some(line) = c.log(o, "[storage] dma-loop: verified 0x") {
        c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("storage during the storm: {line}"));
    }
    c.log(o, &format!("[storage] canary at 0x{STORAGE_CANARY:x} intact"));
    let Some(at) = o.trace.events.iter().rposition(|e| kind::CFGI_STE.matches(e) && e.field("streamid") == Some(NET_SID)) else {
        c.that(false, "QEMU saw no STE change for net's device");
        return;
    };
    let net = |e: &TraceEvent| e.field("sid") == Some(NET_SID);
    let storage = |e: &TraceEvent| e.field("sid") == Some(STORAGE_SID);
    let net_before = |e: &TraceEvent| net(e) && o.trace.index_of(e).is_some_and(|i| i < at);
    let net_after = |e: &TraceEvent| net(e) && o.trace.index_of(e).is_some_and(|i| i > at);
    c.none_of(o, kind::EVENT, "event for net's device after its quarantine", net_after, Witness::InRun("for net's device before it (the storm)", &net_before));
    c.none_of(o, kind::EVENT, "event for storage's device (the other SMMU)", storage, Witness::InRun("for net's device", &net));
    // The other SMMU kept translating storage's DMA after the quarantine.
    let storage_after = |e: &TraceEvent| storage(e) && o.trace.index_of(e).is_some_and(|i| i > at);
    c.that(o.trace.of(kind::TRANSLATE_SUCCESS).any(storage_after), "QEMU translated none of storage's DMA after net's quarantine");
    let storage_out = |e: &TraceEvent| storage(e) && !(STORAGE_MEM.0..STORAGE_MEM.1).contains(&e.field("translated").unwrap_or(0));
    c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of storage's DMA outside its memory", storage_out, Witness::InRun("of storage's DMA", &storage));
    c.no_bypass(o);
}

/// When the kernel makes the second SMMU fail closed, in ms after the
/// partitions started (storage's device then also loses bus mastering, so
/// its later DMA never reaches the SMMU).
const FAIL_CLOSED_AFTER_MS: u64 = 1000;

fn fail_closed(ctx: &Ctx) -> Result<QemuConfig, String> {
    // Both keep DMA going; the second SMMU (storage's) fails closed a
    // second in.
    let dts = demo_with(
        &format!("canary={NET_CANARY:#x} dma-loop=3000 check={NET_CANARY:#x}"),
        &format!("canary={STORAGE_CANARY:#x} dma-loop=3000 check={STORAGE_CANARY:#x}"),
    )?;
    let cfg = QemuConfig { append: Some(format!("bulkhead.selftest=fail-closed:1:{FAIL_CLOSED_AFTER_MS}")), image: Image::Selftest, ..base(90) };
    ctx.with_overlay(cfg, &dts)
}

fn check_fail_closed(o: &Outcome, c: &mut Checks) {
    // The failed SMMU's groups go to Blocked for good: storage loses its
    // device (a transfer in flight is "interrupted by a move") and both
    // partitions finish; net's device, behind the other SMMU, never notices.
    c.exit(o, exit::SUCCESS);
    c.log(o, "all 2 partitions stopped, 0 failed");
    if let Some(line) = c.log(o, "[storage] dma-loop: verified 0x") {
        c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("storage before its SMMU failed: {line}"));
        c.that(!(line.contains("interrupted by a move 0x0,") && line.ends_with("idle 0x0")), format!("storage never lost its device: {line}"));
    }
    let Some(m) = machine(o, c) else { return };
    let Some(second) = m.smmus.get(1) else {
        c.that(false, "the DT describes no second SMMU");
        return;
    };
    c.log(o, &format!("SMMU {}: selftest fail-closed: failed closed; every stream of it aborts, its groups are Blocked", second.name));
    c.log(o, "group 4: Blocked, its SMMU failed closed");
    c.that(m.smmu_of_bus(0x81).map(|s| &s.name) == Some(&second.name), "storage's device is not behind the second SMMU in the DT");
    // net, behind the first SMMU, verified every transfer throughout.
    if let Some(line) = c.log(o, "[net] dma-loop: verified 0x") {
        c.that(line.contains(", bad 0x0,") && !line.contains("verified 0x0,"), format!("net: {line}"));
    }
    // QEMU: the fail-closed point is the one CR0 write that clears SMMUEN
    // after bring-up; from there storage's StreamID only aborts and net's
    // keeps translating into net's memory.
    let ev = &o.trace.events;
    let enabled = ev.iter().rposition(|e| write_to(e, CR0).is_some_and(|v| v & CR0_SMMUEN != 0));
    let off = ev.iter().rposition(|e| write_to(e, CR0) == Some(0));
    let Some(at) = off.filter(|&f| enabled.is_some_and(|e| f > e)) else {
        c.that(false, format!("QEMU's trace shows no SMMU disabled after bring-up (last SMMUEN write {enabled:?}, last CR0=0 {off:?})"));
        return;
    };
    let after = |sid: u64| move |e: &TraceEvent| e.field("sid") == Some(sid) && o.trace.index_of(e).is_some_and(|i| i > at);
    let storage_after = after(STORAGE_SID);
    let net_after = after(NET_SID);
    c.none_of(
        o,
        kind::TRANSLATE_SUCCESS,
        "translation of storage's DMA after its SMMU failed closed",
        storage_after,
        Witness::InRun("of net's DMA after that", &net_after),
    );
    c.that(o.trace.of(kind::TRANSLATE_SUCCESS).filter(|e| net_after(e)).count() > 0, "QEMU translated none of net's DMA after the other SMMU failed closed");
    let net_out = |e: &TraceEvent| e.field("sid") == Some(NET_SID) && !(NET_MEM.0..NET_MEM.1).contains(&e.field("translated").unwrap_or(0));
    c.none_of(o, kind::TRANSLATE_SUCCESS, "translation of net's DMA outside its memory", net_out, Witness::InRun("of net's DMA after that", &net_after));
    c.no_bypass(o);
}
