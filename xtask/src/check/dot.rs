//! `--dot FILE.dot`: the plan as a Graphviz graph. Partitions own groups,
//! groups hold devices and StreamIDs; StreamIDs are boxed per SMMU, groups
//! nobody owns hang off "Blocked".
//!
//! Node ids: `partition:NAME`, `blocked`, `group:N`, `device:H:F` (PCI) or
//! `device:platform:I`, `sid:SMMU:0xN`, and `unchecked:PATH` for PCI
//! devices named without a `--topology`.

use super::plan::{device, node_of, smmu_name};
use partitions::binding::Config;
use partitions::topology::DeviceRef;
use partitions::validate::{Hardware, Plan};
use std::fmt::Write;

/// A quoted DOT id or label.
fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn device_id(d: DeviceRef) -> String {
    match d {
        DeviceRef::Pci { host, function } => format!("device:{host}:{function}"),
        DeviceRef::Platform(i) => format!("device:platform:{i}"),
    }
}

fn sid_id(smmu: usize, sid: u32) -> String {
    format!("sid:{smmu}:{sid:#x}")
}

/// The graph.
pub fn render(cfg: &Config, hw: &Hardware, plan: &Plan, unchecked: &[(usize, String)]) -> String {
    let t = &hw.topology;
    let mut o = String::new();
    let _ = writeln!(o, "digraph bulkhead {{");
    let _ = writeln!(o, "  graph [rankdir=LR, fontname=\"sans-serif\", label=\"bulkhead plan\"];");
    let _ = writeln!(o, "  node [fontname=\"sans-serif\"];");
    for p in &plan.partitions {
        let mem: Vec<String> = p.memory.iter().map(|r| r.to_string()).collect();
        let cpus: Vec<String> = p.cpus.iter().map(|c| format!("{c:#x}")).collect();
        let label = format!("partition {} (id {})\nmemory {}\nCPUs {}", p.name, p.id.0, mem.join(" "), cpus.join(" "));
        let _ = writeln!(o, "  {} [shape=box, style=filled, fillcolor=\"#dde8ff\", label={}];", q(&format!("partition:{}", p.name)), q(&label));
    }
    if !plan.blocked.is_empty() {
        let _ = writeln!(o, "  \"blocked\" [shape=box, style=dashed, label=\"Blocked\\n(no owner: StreamIDs abort)\"];");
    }
    for g in &hw.groups.groups {
        let label = format!("group {}\nSMMU {}", g.id.0, smmu_name(t, g.smmu.0));
        let _ = writeln!(o, "  {} [shape=ellipse, label={}];", q(&format!("group:{}", g.id.0)), q(&label));
        for d in &g.devices {
            let label = match node_of(cfg, t, *d) {
                Some(node) => format!("{}\n{node}", device(t, *d)),
                None => device(t, *d),
            };
            let _ = writeln!(o, "  {} [shape=component, label={}];", q(&device_id(*d)), q(&label));
        }
    }
    for (i, s) in t.smmus.iter().enumerate() {
        let sids: Vec<u32> = hw.groups.groups.iter().filter(|g| g.smmu.0 == i).flat_map(|g| g.stream_ids.iter().map(|s| s.0)).collect();
        if sids.is_empty() {
            continue;
        }
        let _ = writeln!(o, "  subgraph {} {{", q(&format!("cluster_smmu{i}")));
        let _ = writeln!(o, "    label={};", q(&format!("SMMU {}", s.name)));
        for sid in sids {
            let _ = writeln!(o, "    {} [shape=diamond, label={}];", q(&sid_id(i, sid)), q(&format!("StreamID {sid:#x}")));
        }
        let _ = writeln!(o, "  }}");
    }
    for (_, path) in unchecked {
        let _ = writeln!(o, "  {} [shape=component, style=dashed, label={}];", q(&format!("unchecked:{path}")), q(&format!("{path}\n(PCI, not checked)")));
    }
    for p in &plan.partitions {
        let from = q(&format!("partition:{}", p.name));
        for g in &p.groups {
            let _ = writeln!(o, "  {from} -> {};", q(&format!("group:{}", g.0)));
        }
        for (_, path) in unchecked.iter().filter(|(i, _)| *i == p.id.0 as usize) {
            let _ = writeln!(o, "  {from} -> {} [style=dashed];", q(&format!("unchecked:{path}")));
        }
    }
    for g in &plan.blocked {
        let _ = writeln!(o, "  \"blocked\" -> {} [style=dashed];", q(&format!("group:{}", g.0)));
    }
    for g in &hw.groups.groups {
        let from = q(&format!("group:{}", g.id.0));
        for d in &g.devices {
            let _ = writeln!(o, "  {from} -> {};", q(&device_id(*d)));
        }
        for s in &g.stream_ids {
            let _ = writeln!(o, "  {from} -> {};", q(&sid_id(g.smmu.0, s.0)));
        }
    }
    let _ = writeln!(o, "}}");
    o
}
