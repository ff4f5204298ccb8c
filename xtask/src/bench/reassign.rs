//! The cost of moving a group: a manager partition releases and assigns one
//! group back and forth (`move=G:A:B:N`, boards/qemu-virt/overlays/manager.dts)
//! while the other partitions have exited, so the counter ticks the payload
//! measures around each hypercall are the kernel's work for it. Commands and
//! CMD_SYNCs are counted from QEMU's trace.
//!
//! The least count is the kernel's cost. Under `-icount` the counter counts
//! every vCPU's instructions, and TCG runs the vCPUs in turn: when the boot
//! CPU's 10 ms tick lands while the manager's CPU holds the ownership lock,
//! the boot CPU spins on that lock for the rest of its time slice, and those
//! instructions land in the manager's window (median and max show it).
//!
//! Groups of 1, 2 and 8 StreamIDs are real QEMU devices: `edu` functions of
//! one multi-function device at 00:01 (conventional PCI functions without
//! ACS form one group), so the group is StreamIDs 0x8 .. 0x8+N.
//!
//! Each runs with both stream-table formats: QEMU's SMMU gets a two-level
//! table (16-bit StreamIDs), where an assignment swaps in a fresh level-2
//! table behind one CMD_SYNC; `bulkhead.sid-bits=8` makes it linear, where
//! the entry is written in place in two steps (dwords 1..7, then dword 0),
//! each behind its own CMD_SYNC.

use super::{line, thousands, Figure, Goal, Report, Table};
use bulkhead_tests::qemu::{Outcome, QemuConfig};
use bulkhead_tests::trace::Trace;
use bulkhead_tests::Artifacts;
use std::path::Path;
use std::time::Duration;

const MANAGER: &str = include_str!("../../../boards/qemu-virt/overlays/manager.dts");
/// The group under test (net's device), and the partitions it moves between.
const GROUP: u64 = 1;
const NET: u64 = 1;
const STORAGE: u64 = 2;

/// manager.dts with net's device replaced by `size` functions of one
/// multi-function `edu` at 00:01, the manager moving it `round_trips` times,
/// and net and storage exiting at once.
pub fn overlay(size: usize, round_trips: u64) -> Result<String, String> {
    if !(1..=8).contains(&size) {
        return Err(format!("a multi-function device has 1 to 8 functions, not {size}"));
    }
    let mut dts = MANAGER.to_string();
    let args = [("mgmt", format!("wait=20 move={GROUP}:{NET}:{STORAGE}:{round_trips}")), ("net", "exit=0".into()), ("storage", "exit=0".into())];
    for (p, a) in args {
        dts = bulkhead_tests::dtb::set_bootargs(&dts, p, &a)?;
    }
    // Devices: QEMU arguments and overlay nodes.
    let old_args = " * qemu-args: -device edu,dma_mask=0xffffffffffffffff,addr=1.0\n";
    if !dts.contains(old_args) {
        return Err("manager.dts no longer names net's edu at 1.0".into());
    }
    let mut args = String::new();
    for f in 0..size {
        let mf = if size > 1 && f == 0 { ",multifunction=on" } else { "" };
        args.push_str(&format!(" * qemu-args: -device edu,dma_mask=0xffffffffffffffff,addr=1.{f}{mf}\n"));
    }
    dts = dts.replace(old_args, &args);
    let node_start = dts.find("    edu@1,0 {").ok_or("manager.dts has no edu@1,0 node")?;
    let node_end = node_start + dts[node_start..].find("};\n").ok_or("edu@1,0 is not closed")? + 3;
    let mut nodes = String::new();
    for f in 0..size {
        nodes.push_str(&format!(
            "    edu@1,{f} {{\n        reg = <{:#06x} 0x0 0x0 0x0 0x0>;\n        bulkhead,partition = <&net>;\n    }};\n",
            0x800 + 0x100 * f
        ));
    }
    dts.replace_range(node_start..node_end, &nodes);
    Ok(dts)
}

/// The stream table a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strtab {
    /// Two-level (QEMU's 16-bit StreamIDs): one CMD_SYNC per assignment.
    TwoLevel,
    /// Linear (`bulkhead.sid-bits=8`): two CMD_SYNCs per assignment.
    Linear,
}

impl Strtab {
    /// The run's name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Strtab::TwoLevel => "",
            Strtab::Linear => "-linear",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Strtab::TwoLevel => "2-level",
            Strtab::Linear => "linear",
        }
    }

    /// CMD_SYNCs an operation may take (release, assign).
    fn goals(self) -> [u64; 2] {
        match self {
            Strtab::TwoLevel => [1, 1],
            Strtab::Linear => [1, 2],
        }
    }
}

/// The QEMU configuration of one group size and stream-table format.
pub fn setup(dir: &Path, a: &Artifacts, size: usize, format: Strtab, round_trips: u64) -> Result<QemuConfig, String> {
    let dts = overlay(size, round_trips)?;
    let append = (format == Strtab::Linear).then(|| "bulkhead.sid-bits=8".to_string());
    bulkhead_tests::dtb::with_overlay(QemuConfig { timeout: Duration::from_secs(240), append, ..QemuConfig::default() }, &dts, dir, &a.payload)
}

/// The StreamIDs of group `g` from the kernel's group table.
fn group_sids(o: &Outcome, g: u64) -> Option<Vec<u32>> {
    let l = o.log.iter().map(|l| l.message.trim_start()).find(|m| m.starts_with(&format!("group {g}: SMMU ")))?;
    let sids = l.split("StreamIDs ").nth(1)?.split(", devices").next()?;
    Some(sids.split_whitespace().filter_map(|s| super::num(s).map(|v| v as u32)).collect())
}

/// Commands and CMD_SYNCs of one release or assignment, from the trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Commands, CMD_SYNC included.
    pub commands: u64,
    /// CMD_SYNCs.
    pub syncs: u64,
}

/// Splits QEMU's command stream into batches (commands up to a CMD_SYNC)
/// and attributes them to the group's operations. A batch that invalidates
/// a StreamID of the group and a TLB tag is a release; the batches that
/// invalidate its StreamIDs without a TLBI are an assignment (one with a
/// two-level table, two with a linear one), up to the next release. The
/// first assignment is the boot attach. Batches that invalidate no StreamID
/// at all belong to the operation they follow; batches about other
/// StreamIDs (other partitions' boot attach) are not the group's.
pub fn operations(t: &Trace, sids: &[u32]) -> Vec<Cost> {
    let ours = |e: &bulkhead_tests::trace::TraceEvent| -> Option<bool> {
        match e.name.as_str() {
            "smmuv3_cmdq_cfgi_ste" => Some(e.field("streamid").is_some_and(|s| sids.contains(&(s as u32)))),
            "smmuv3_cmdq_cfgi_ste_range" => {
                let (a, b) = (e.field("start")?, e.field("end")?);
                // CFGI_ALL (bring-up) is the whole range: no stream's own.
                if a == 0 && b >= u64::from(u32::MAX) {
                    return None;
                }
                Some(sids.iter().any(|&s| (a..=b).contains(&u64::from(s))))
            }
            _ => None,
        }
    };
    #[derive(PartialEq)]
    enum Op {
        None,
        Boot,
        Release,
        Assign,
    }
    let mut ops: Vec<Cost> = Vec::new();
    let mut current = Op::None;
    let (mut cmds, mut tlbi, mut touches_ours, mut touches_other) = (0u64, false, false, false);
    for e in &t.events {
        if let Some(mine) = ours(e) {
            touches_ours |= mine;
            touches_other |= !mine;
            continue;
        }
        if e.name != "smmuv3_cmdq_opcode" {
            continue;
        }
        cmds += 1;
        tlbi |= e.args.contains("TLBI");
        if !e.args.contains("CMD_SYNC") {
            continue;
        }
        let batch = Cost { commands: cmds, syncs: 1 };
        let next = match (touches_ours, tlbi, &current) {
            (true, true, _) => Some(Op::Release),
            (true, false, Op::None) => Some(Op::Boot),
            (true, false, Op::Release) => Some(Op::Assign),
            _ => None,
        };
        match next {
            Some(op) => {
                if matches!(op, Op::Release | Op::Assign) {
                    ops.push(batch);
                }
                current = op;
            }
            // A further batch of the same operation, or one about no
            // StreamID at all.
            None if (touches_ours || !touches_other) && matches!(current, Op::Release | Op::Assign) => {
                if let Some(last) = ops.last_mut() {
                    last.commands += batch.commands;
                    last.syncs += batch.syncs;
                }
            }
            None => {}
        }
        (cmds, tlbi, touches_ours, touches_other) = (0, false, false, false);
    }
    ops
}

/// One row of the reassignment table: size, stream table, operation, trace
/// cost, kernel log cost, ticks (min, median, max, samples).
pub type Row = (usize, &'static str, &'static str, Option<Cost>, Option<(u64, u64)>, Option<[u64; 4]>);

fn ticks(o: &Outcome, what: &str) -> Option<[u64; 4]> {
    let l = line(o, &format!("[mgmt] move ticks: {what} "))?;
    Some([super::after(l, "min ")?, super::after(l, "median ")?, super::after(l, "max ")?, super::after(l, " of ")?])
}

/// Kernel-side counts: the debug line of a release's abort STEs, the info
/// line of an assignment's attach (every one after the boot attach).
fn kernel_cost(o: &Outcome, release: bool) -> Option<(u64, u64)> {
    let lines: Vec<&str> = if release {
        o.log.iter().map(|l| l.message.as_str()).filter(|m| m.starts_with(&format!("group {GROUP}: abort STEs: "))).collect()
    } else {
        o.log
            .iter()
            .map(|l| l.message.as_str())
            .filter(|m| m.contains(&format!(": group {GROUP} (StreamIDs ")) && m.contains(" attached to its "))
            .skip(1)
            .collect()
    };
    let worst = lines.iter().filter_map(|m| {
        let tail = m.rsplit(": ").next()?;
        Some((super::num(tail.split_whitespace().next()?)?, super::after(tail, "commands, ")?))
    });
    worst.max()
}

/// Figures and table rows of one group size.
pub fn report(o: &Result<Outcome, String>, size: usize, format: Strtab, round_trips: u64, r: &mut Report, rows: &mut Vec<Row>) {
    let plural = if size == 1 { "" } else { "s" };
    let table = format.name();
    let names = [format!("Release, group of {size} StreamID{plural}, {table} table"), format!("Assign, group of {size} StreamID{plural}, {table} table")];
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            for n in names {
                r.figures.push(Figure::missing("reassignment", n, e));
            }
            return;
        }
    };
    let check = || -> Result<Vec<u32>, String> {
        if o.status != Some(0) {
            return Err(format!("the manager run exited with {:?}", o.status));
        }
        let want = if format == Strtab::Linear { "linear stream table" } else { "2-level stream table" };
        if !o.log.iter().any(|l| l.message.contains(want)) {
            return Err(format!("the kernel did not report a {want}"));
        }
        let sids = group_sids(o, GROUP).ok_or("no group 1 in the kernel's group table")?;
        if sids.len() != size {
            return Err(format!("QEMU's devices made a group of {} StreamIDs, not {size}", sids.len()));
        }
        let moves = line(o, "[mgmt] moves: ").ok_or("the manager reported no moves")?;
        if !moves.ends_with("failures 0x0") {
            return Err(format!("moves failed: {moves}"));
        }
        Ok(sids)
    };
    let sids = match check() {
        Ok(s) => s,
        Err(e) => {
            for n in names {
                r.figures.push(Figure::missing("reassignment", n, &e));
            }
            return;
        }
    };
    let ops = operations(&o.trace, &sids);
    let expected = 4 * round_trips as usize;
    for (k, (name, what)) in names.into_iter().zip(["release", "assign"]).enumerate() {
        let mine: Vec<Cost> = ops.iter().skip(k).step_by(2).copied().collect();
        let worst = mine.iter().max_by_key(|c| (c.syncs, c.commands)).copied();
        let t = ticks(o, what);
        let kc = kernel_cost(o, what == "release");
        let goal = format.goals()[k];
        rows.push((size, table, what, worst, kc, t));
        match (worst, t) {
            (Some(c), Some([min, med, max, n])) if ops.len() == expected => r.figures.push(
                Figure::new(
                    "reassignment",
                    name,
                    c.syncs as f64,
                    format!(
                        "{} CMD_SYNC, {} commands; {} instructions (least of {n}; median {}, max {})",
                        c.syncs,
                        c.commands,
                        thousands(min),
                        thousands(med),
                        thousands(max)
                    ),
                )
                .goal(if goal == 1 { "1 CMD_SYNC" } else { "2 CMD_SYNC" }, Goal::AtMost(goal as f64))
                .with("commands", c.commands as f64)
                .with("instructions_median", med as f64)
                .with("instructions_min", min as f64)
                .with("instructions_max", max as f64)
                .with("stream_ids", sids.len() as f64),
            ),
            _ => r.figures.push(Figure::missing(
                "reassignment",
                name,
                format!("QEMU's trace shows {} group operations (expected {expected}), ticks {t:?}", ops.len()),
            )),
        }
    }
}

/// The detail table of every group size.
pub fn table(rows: Vec<Row>, r: &mut Report) {
    let mut t = Table::new(
        "Reassignment: one release (A → Blocked) and one assignment (Blocked → B) hypercall; commands from QEMU's trace (worst operation), instructions from the manager's counter around each hypercall",
        &["StreamIDs", "stream table", "operation", "commands (QEMU)", "CMD_SYNC (QEMU)", "commands / CMD_SYNC (kernel log)", "instructions (least)", "median", "max", "samples"],
    );
    for (size, table, what, c, k, tk) in rows {
        let dash = || "-".to_string();
        t.rows.push(vec![
            size.to_string(),
            table.to_string(),
            what.to_string(),
            c.map(|c| c.commands.to_string()).unwrap_or_else(dash),
            c.map(|c| c.syncs.to_string()).unwrap_or_else(dash),
            k.map(|(a, b)| format!("{a} / {b}")).unwrap_or_else(dash),
            tk.map(|x| thousands(x[0])).unwrap_or_else(dash),
            tk.map(|x| thousands(x[1])).unwrap_or_else(dash),
            tk.map(|x| thousands(x[2])).unwrap_or_else(dash),
            tk.map(|x| x[3].to_string()).unwrap_or_else(dash),
        ]);
    }
    r.tables.push(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_has_the_asked_functions() {
        let d = overlay(8, 3).unwrap();
        assert!(d.contains("addr=1.0,multifunction=on\n"));
        assert!(d.contains("addr=1.7\n"));
        assert!(d.contains("edu@1,7 {\n        reg = <0x0f00 0x0 0x0 0x0 0x0>;"));
        assert!(d.contains("move=1:1:2:3"));
        assert!(!d.contains("dma-loop"));
        assert!(d.contains("edu@2,0"));
        let one = overlay(1, 1).unwrap();
        assert!(one.contains("addr=1.0\n") && !one.contains("multifunction"));
    }

    #[test]
    fn operations_from_a_trace() {
        let t = Trace::parse(
            "smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE_RANGE\nsmmuv3_cmdq_cfgi_ste_range start=0x0 - end=0xffffffff\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x10\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE_RANGE\nsmmuv3_cmdq_cfgi_ste_range start=0x8 - end=0x9\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_S12_VMALL\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n",
        );
        let ops = operations(&t, &[8, 9]);
        assert_eq!(ops, vec![Cost { commands: 3, syncs: 1 }, Cost { commands: 2, syncs: 1 }]);
        // A linear table's assignment: two batches, one operation.
        let t = Trace::parse(
            "smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_S12_VMALL\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n",
        );
        assert_eq!(operations(&t, &[8]), vec![Cost { commands: 3, syncs: 1 }, Cost { commands: 4, syncs: 2 }]);
    }
}
