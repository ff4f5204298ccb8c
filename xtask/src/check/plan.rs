//! The report: the machine as the kernel would see it, the isolation
//! groups, the plan partition by partition, what was assumed and which
//! checks could not be made.

use super::{Checked, Known, Notes};
use partitions::binding::{Config, Target};
use partitions::groups::{GroupReason, Groups};
use partitions::topology::{DeviceRef, Topology};
use partitions::validate::Hardware;
use std::fmt::Write;

/// A device as the kernel's boot table names it: `BB:DD.F VVVV:DDDD`, or
/// its DT path.
pub fn device(t: &Topology, d: DeviceRef) -> String {
    if let Some(p) = t.pci(d) {
        format!("{:02x}:{:02x}.{} {:04x}:{:04x}", p.bdf.bus, p.bdf.dev, p.bdf.func, p.vendor, p.device)
    } else if let Some(p) = t.platform_device(d) {
        p.path.clone()
    } else {
        "?".into()
    }
}

/// The node of the configuration that names `d`.
pub fn node_of<'c>(cfg: &'c Config, t: &Topology, d: DeviceRef) -> Option<&'c str> {
    cfg.assignments
        .iter()
        .find(|a| {
            let found = match &a.target {
                Target::Pci { host, chain } => {
                    t.hosts.iter().position(|h| &h.bridge.path == host).and_then(|h| Some(DeviceRef::Pci { host: h, function: t.resolve_pci(h, chain)? }))
                }
                Target::Platform => t.platform.iter().position(|p| p.path == a.path).map(DeviceRef::Platform),
                Target::Cpu { .. } => None,
            };
            found == Some(d)
        })
        .map(|a| a.path.as_str())
}

/// StreamIDs as the boot table prints them.
pub fn sids<'a>(s: impl IntoIterator<Item = &'a u32>) -> String {
    s.into_iter().map(|s| format!("{s:#x}")).collect::<Vec<_>>().join(" ")
}

/// The SMMU's name.
pub fn smmu_name(t: &Topology, i: usize) -> &str {
    t.smmus.get(i).map(|s| s.name.as_str()).unwrap_or("?")
}

fn reasons(r: &[GroupReason]) -> String {
    if r.is_empty() {
        return "alone".into();
    }
    r.iter()
        .map(|r| match r {
            GroupReason::IsolationGroup(n) => format!("isolation-group {n}"),
            r => r.name().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn groups(out: &mut String, t: &Topology, g: &Groups) {
    let _ = writeln!(out, "isolation groups: {}", g.groups.len());
    for grp in &g.groups {
        let devs: Vec<String> = grp.devices.iter().map(|d| device(t, *d)).collect();
        let _ = writeln!(
            out,
            "  group {}: SMMU {}, StreamIDs {}, devices {}; reasons: {}",
            grp.id.0,
            smmu_name(t, grp.smmu.0),
            sids(grp.stream_ids.iter().map(|s| &s.0)),
            devs.join(", "),
            reasons(&grp.reasons)
        );
    }
    if let Some(first) = g.not_isolatable.first() {
        let _ = writeln!(
            out,
            "not isolatable: {} (e.g. {}: {}); none of them can be assigned",
            g.not_isolatable.len(),
            device(t, first.device),
            first.reason.name()
        );
    }
    for (path, n) in &g.unmatched_hints {
        let _ = writeln!(out, "warning: {path}: bulkhead,isolation-group = <{n}> names no PCI function found");
    }
}

/// Every SMMU of the tree: enabled ones with how the kernel learns of
/// their events, disabled ones with why and what that means.
fn smmus(out: &mut String, m: &devicetree::Machine) {
    use devicetree::dt::SmmuIrqs;
    if m.smmus.is_empty() && m.disabled_smmus.is_empty() {
        let _ = writeln!(out, "  SMMUs     none");
    }
    for s in &m.smmus {
        let irqs = match &s.irqs {
            SmmuIrqs::Wired if s.eventq.is_some() => "event queue interrupt wired to the GIC".to_string(),
            SmmuIrqs::Wired if s.combined.is_some() => "one combined interrupt wired to the GIC".to_string(),
            SmmuIrqs::Wired => "no wired eventq interrupt: the event queue is polled".to_string(),
            SmmuIrqs::NotWired(via) => format!("interrupts go to {via}, not the GIC: the event queue is polled"),
            SmmuIrqs::None => "no interrupts in the tree: the event queue is polled".to_string(),
        };
        let msi = if s.msi { " (msi-parent: MSIs not used)" } else { "" };
        let _ = writeln!(out, "  SMMU      {} at {}: enabled, brought up with every stream aborting; {irqs}{msi}", s.name, s.regs.start);
    }
    for s in &m.disabled_smmus {
        let at = s.regs.map(|r| format!(" at {}", r.start)).unwrap_or_default();
        let _ = writeln!(
            out,
            "  SMMU      {}{at}: disabled in the tree ({}): not brought up; its masters cannot be isolated (an overlay setting status = \"okay\" enables it)",
            s.name, s.why
        );
    }
}

/// The whole report of an accepted configuration.
pub fn write(out: &mut String, m: &Known, c: &Checked, notes: &Notes) {
    let hw: &Hardware = &c.hw;
    let t = &hw.topology;
    let _ = writeln!(out, "machine (as the kernel reads the merged device tree)");
    for r in &m.ram {
        let _ = writeln!(out, "  RAM       {} {}", r, mib(r.size()));
    }
    for r in &hw.reserved {
        let _ = writeln!(out, "  reserved  {r} (/memreserve/, /reserved-memory)");
    }
    let cpus: Vec<String> = m.machine.cpus.iter().map(|c| format!("{:#x}", c.mpidr)).collect();
    let _ = writeln!(out, "  CPUs      {} (boot CPU {:#x})", cpus.join(" "), m.boot_cpu);
    for (what, r) in [("kernel", m.placed.kernel), ("heap", m.placed.heap), ("DTB", m.placed.dtb)] {
        match r {
            Some(r) => writeln!(out, "  {what:<9} {}", r),
            None => writeln!(out, "  {what:<9} not known (only at boot)"),
        }
        .unwrap_or(());
    }
    smmus(out, &m.machine);
    for (h, host) in m.machine.devices.pci_hosts.iter().zip(&t.hosts) {
        match &m.topology_from {
            Some(from) => writeln!(out, "  PCI host  {}: {} functions (from {})", h.path, host.bus.functions.len(), from.display()),
            None => writeln!(out, "  PCI host  {}: not enumerated (only at boot)", h.path),
        }
        .unwrap_or(());
    }
    groups(out, t, &hw.groups);

    let _ = writeln!(out, "plan: {} partition(s)", c.plan.partitions.len());
    for p in &c.plan.partitions {
        let _ = writeln!(out, "  partition {} (id {})", p.name, p.id.0);
        for r in &p.memory {
            let _ = writeln!(out, "    memory    {r} {}", mib(r.size));
        }
        match p.image {
            Some((img, entry)) => writeln!(out, "    image     {img} copied to entry {:#x}", entry.0),
            None => writeln!(out, "    image     none (bulkhead,image not set)"),
        }
        .unwrap_or(());
        if let Some(rd) = p.initrd {
            // Where it lands (the top of the entry's region, below the DTB)
            // and whether a Linux Image's image_size fits are decided at
            // launch, from the image's header.
            let _ = writeln!(out, "    initrd    {rd} copied below the partition's DTB at launch");
        }
        let cpus: Vec<String> = p.cpus.iter().map(|c| format!("{c:#x}")).collect();
        let _ = writeln!(out, "    CPUs      {}", cpus.join(" "));
        for d in &p.devices {
            let grp = hw.groups.group_of(*d).map(|g| format!(", group {}", g.id.0)).unwrap_or_default();
            let node = node_of(&c.cfg, t, *d).map(|n| format!(" {n}")).unwrap_or_default();
            let _ = writeln!(out, "    device    {}{node}{grp}", device(t, *d));
        }
        for (_, path) in c.unchecked_pci.iter().filter(|(i, _)| *i == p.id.0 as usize) {
            let _ = writeln!(out, "    device    {path} (PCI: NOT checked, no --topology)");
        }
        for g in p.groups.iter().filter_map(|g| hw.groups.get(*g)) {
            let _ = writeln!(out, "    group     {}: SMMU {}, StreamIDs {}", g.id.0, smmu_name(t, g.smmu.0), sids(g.stream_ids.iter().map(|s| &s.0)));
        }
        if p.groups.is_empty() {
            let _ = writeln!(out, "    StreamIDs none (no device)");
        }
        for o in &p.irqs {
            let trigger = if o.irq.edge { "edge" } else { "level" };
            let _ = writeln!(out, "    irq       SPI {} (INTID {}, {trigger}) of {}: forwarded to it only", o.irq.intid - 32, o.irq.intid, device(t, o.device));
        }
        for d in &p.devices {
            if let Some(why) = t.platform_device(*d).and_then(|m| m.unforwardable) {
                let _ = writeln!(out, "    irq       none forwarded of {}: {why}", device(t, *d));
            }
        }
        if p.uart_intid != partitions::vm::board::UART_INTID {
            let _ = writeln!(out, "    console   its virtual UART on SPI {} (INTID {}): SPI 1 is its device's line", p.uart_intid - 32, p.uart_intid);
        }
        let mut policy = format!("fault limit {} per {} ms", p.fault_limit.0, p.fault_limit.1);
        if p.manager {
            policy.push_str(", manager");
        }
        if p.dma_p2p {
            policy.push_str(", dma-p2p");
        }
        let _ = writeln!(out, "    bootargs  {:?}", p.bootargs);
        let _ = writeln!(out, "    policy    {policy}");
    }
    let blocked: Vec<String> = c
        .plan
        .blocked
        .iter()
        .filter_map(|g| hw.groups.get(*g))
        .map(|g| format!("{} (SMMU {}, StreamIDs {})", g.id.0, smmu_name(t, g.smmu.0), sids(g.stream_ids.iter().map(|s| &s.0))))
        .collect();
    if !blocked.is_empty() {
        let _ = writeln!(out, "  blocked groups (no partition; their StreamIDs abort): {}", blocked.join(", "));
    }
    write_notes(out, notes);
    let n = c.plan.partitions.len();
    if notes.not_made.is_empty() {
        let _ =
            writeln!(out, "result: accepted: the kernel would start {n} partition(s); every check it makes before starting them was made, on the facts above");
    } else {
        let _ = writeln!(out, "result: accepted by every check made; {} check(s) NOT made (above): no pass is claimed for them", notes.not_made.len());
    }
}

/// What was assumed and what could not be checked.
pub fn write_notes(out: &mut String, notes: &Notes) {
    if !notes.assumed.is_empty() {
        let _ = writeln!(out, "assumed:");
        for a in &notes.assumed {
            let _ = writeln!(out, "  - {a}");
        }
    }
    if !notes.not_made.is_empty() {
        let _ = writeln!(out, "not checked:");
        for a in &notes.not_made {
            let _ = writeln!(out, "  - {a}");
        }
    }
}
