//! Validation: configuration + discovered hardware → a [`Plan`], or the
//! first rule the configuration breaks. Nothing runs until this succeeds,
//! and the same code runs on the host (tests, the offline checker).

use crate::binding::{Config, ConfigError, Region, Target};
use crate::groups::{GroupId, Groups};
use crate::topology::{DeviceRef, PciHost, Topology};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use devicetree::pci::Bdf;
use devicetree::PhysAddr;

/// Stage-2 mappings are made of 4 KiB pages at least.
pub const PAGE: u64 = 4096;

/// A partition handle: the owner type of DESIGN.md I7 (not an integer that
/// happens to be free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u16);

/// What the kernel discovered that validation checks against.
#[derive(Clone, Debug, Default)]
pub struct Hardware {
    /// RAM banks from `/memory`.
    pub ram: Vec<Region>,
    /// The kernel image (text through stack).
    pub kernel: Option<Region>,
    /// The DTB the kernel booted with.
    pub dtb: Option<Region>,
    /// The kernel's heap.
    pub heap: Option<Region>,
    /// `/memreserve/` and `/reserved-memory` regions.
    pub reserved: Vec<Region>,
    /// MPIDRs of the CPUs in `/cpus`.
    pub cpus: Vec<u64>,
    /// MPIDR of the CPU the kernel runs on.
    pub boot_cpu: u64,
    /// DMA masters discovered (PCI functions, platform devices).
    pub topology: Topology,
    /// Their isolation groups.
    pub groups: Groups,
    /// The GIC SPIs the kernel's own devices raise (its SMMUs' queue and
    /// error interrupts, its console's): no partition is given them.
    pub kernel_irqs: Vec<KernelIrq>,
}

/// An interrupt line the kernel keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelIrq {
    /// Its INTID (an SPI).
    pub intid: u32,
    /// Whose it is, for messages ("the eventq interrupt of SMMU smmu@9050000").
    pub user: String,
}

/// One partition as it will be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Its handle.
    pub id: PartitionId,
    /// Name (node name).
    pub name: String,
    /// RAM, sorted.
    pub memory: Vec<Region>,
    /// Image to copy, and where.
    pub image: Option<(Region, PhysAddr)>,
    /// Initial ramdisk to copy in (where the loader put it).
    pub initrd: Option<Region>,
    /// `/chosen/bootargs` for the partition.
    pub bootargs: String,
    /// May manage groups.
    pub manager: bool,
    /// Fault policy (count, window ms).
    pub fault_limit: (u32, u32),
    /// What it may make the kernel print.
    pub log_limit: crate::budget::LogLimit,
    /// Own BARs in own DMA space.
    pub dma_p2p: bool,
    /// CPUs by MPIDR.
    pub cpus: Vec<u64>,
    /// Isolation groups it owns (every StreamID of each).
    pub groups: Vec<GroupId>,
    /// The devices the configuration named (endpoints; bridges of its groups
    /// stay with the kernel).
    pub devices: Vec<DeviceRef>,
    /// The physical interrupt lines its devices raise (sorted by INTID,
    /// each once): forwarded to it, never to anyone else. The virtual GIC
    /// shows physical SPI n as virtual SPI n.
    pub irqs: Vec<OwnedIrq>,
    /// The INTID of its virtual console UART's interrupt
    /// ([`crate::vm::board::UART_INTID`] unless one of `irqs` is that
    /// line; then the lowest SPI none of them is): the virtual GIC raises
    /// it, its DT names it.
    pub uart_intid: u32,
}

/// A physical interrupt line a partition owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnedIrq {
    /// The GIC interrupt (an SPI) and its trigger.
    pub irq: devicetree::dt::Irq,
    /// The first of its devices that raises it.
    pub device: DeviceRef,
}

/// Default fault policy: this many faults per window (ms) before quarantine.
pub const DEFAULT_FAULT_LIMIT: (u32, u32) = (64, 1000);

/// The validated plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions in configuration order; `id` = index.
    pub partitions: Vec<PartitionPlan>,
    /// Groups no partition owns: they stay Blocked (abort).
    pub blocked: Vec<GroupId>,
}

fn refuse(node: &str, property: &'static str, message: String) -> ConfigError {
    ConfigError::new(node, property, message)
}

/// Checks every memory and CPU rule of boards/bindings/bulkhead,partitions.yaml and builds the plan.
pub fn validate(cfg: &Config, hw: &Hardware) -> Result<Plan, ConfigError> {
    let mut plan = Plan::default();
    // Regions no partition memory may overlap, with the partition whose
    // image it is (an image may not overlap another image either).
    let mut fixed: Vec<(Region, String, Option<usize>)> = Vec::new();
    if let Some(k) = hw.kernel {
        fixed.push((k, "the kernel image".into(), None));
    }
    if let Some(d) = hw.dtb {
        fixed.push((d, "the device tree blob".into(), None));
    }
    if let Some(h) = hw.heap {
        fixed.push((h, "the kernel heap".into(), None));
    }
    for r in &hw.reserved {
        fixed.push((*r, format!("reserved memory {r}"), None));
    }
    for (i, p) in cfg.partitions.iter().enumerate() {
        if let Some(img) = p.image {
            fixed.push((img, format!("the image of partition {}", p.name), Some(i)));
        }
        if let Some(rd) = p.initrd {
            fixed.push((rd, format!("the initrd of partition {}", p.name), Some(i)));
        }
    }
    // Memory: inside RAM, page aligned, clear of everything fixed and of
    // every other partition.
    let mut owned: Vec<(Region, &str)> = Vec::new();
    for p in &cfg.partitions {
        for m in &p.memory {
            if !m.base.is_aligned(PAGE) || m.size % PAGE != 0 {
                return Err(refuse(&p.path, "memory", format!("region {m} is not 4 KiB aligned")));
            }
            if !hw.ram.iter().any(|r| r.covers(m)) {
                return Err(refuse(&p.path, "memory", format!("region {m} is not inside /memory")));
            }
            if let Some((_, what, _)) = fixed.iter().find(|(f, _, _)| f.overlaps(m)) {
                return Err(refuse(&p.path, "memory", format!("region {m} overlaps {what}")));
            }
            if let Some(what) = crate::vm::board::overlapped(m.base.0, m.size) {
                return Err(refuse(&p.path, "memory", format!("region {m} overlaps {what}")));
            }
            if let Some((o, who)) = owned.iter().find(|(o, _)| o.overlaps(m)) {
                let whose = if *who == p.name.as_str() { "another region of the same partition".into() } else { format!("partition {who}'s memory {o}") };
                return Err(refuse(&p.path, "memory", format!("region {m} overlaps {whose}")));
            }
            owned.push((*m, p.name.as_str()));
        }
    }
    for (i, p) in cfg.partitions.iter().enumerate() {
        if let (Some(img), Some(entry)) = (p.image, p.entry) {
            if !hw.ram.iter().any(|r| r.covers(&img)) {
                return Err(refuse(&p.path, "bulkhead,image", format!("image {img} is not inside /memory")));
            }
            if let Some((_, what, _)) = fixed.iter().find(|(f, _, owner)| f.overlaps(&img) && *owner != Some(i)) {
                return Err(refuse(&p.path, "bulkhead,image", format!("image {img} overlaps {what}")));
            }
            let Some(home) = p.memory.iter().find(|m| m.contains(entry)) else {
                return Err(refuse(&p.path, "bulkhead,entry", format!("entry {:#x} is outside the partition's memory", entry.0)));
            };
            if entry.0 + img.size > home.end() {
                return Err(refuse(
                    &p.path,
                    "bulkhead,image",
                    format!("image of {:#x} bytes does not fit between entry {:#x} and the end of {home}", img.size, entry.0),
                ));
            }
        }
    }
    for (i, p) in cfg.partitions.iter().enumerate() {
        let Some(rd) = p.initrd else { continue };
        if !hw.ram.iter().any(|r| r.covers(&rd)) {
            return Err(refuse(&p.path, "bulkhead,initrd", format!("initrd {rd} is not inside /memory")));
        }
        let clash = fixed.iter().find(|(f, what, owner)| f.overlaps(&rd) && !(*owner == Some(i) && what.starts_with("the initrd")));
        if let Some((_, what, _)) = clash {
            return Err(refuse(&p.path, "bulkhead,initrd", format!("initrd {rd} overlaps {what}")));
        }
    }
    // CPUs: present, not the boot CPU, one partition each; every partition has one.
    let mut cpus: Vec<Vec<u64>> = alloc::vec![Vec::new(); cfg.partitions.len()];
    let mut seen: Vec<(u64, &str)> = Vec::new();
    for a in &cfg.assignments {
        let Target::Cpu { mpidr } = a.target else { continue };
        if mpidr == hw.boot_cpu {
            return Err(refuse(&a.path, "bulkhead,partition", format!("CPU {mpidr:#x} is the boot CPU, which stays with the kernel")));
        }
        if !hw.cpus.contains(&mpidr) {
            return Err(refuse(&a.path, "bulkhead,partition", format!("no CPU with MPIDR {mpidr:#x} in /cpus")));
        }
        if let Some((_, other)) = seen.iter().find(|(m, _)| *m == mpidr) {
            return Err(refuse(&a.path, "bulkhead,partition", format!("CPU {mpidr:#x} is already assigned by {other}")));
        }
        seen.push((mpidr, a.path.as_str()));
        cpus[a.partition].push(mpidr);
    }
    let (groups, devices) = assign_devices(cfg, hw)?;
    let mut groups = groups;
    let mut devices = devices;
    for (i, p) in cfg.partitions.iter().enumerate() {
        if cpus[i].is_empty() {
            return Err(refuse(&p.path, "", "no CPU is assigned to this partition (give one a bulkhead,partition)".into()));
        }
        let mut memory = p.memory.clone();
        memory.sort();
        plan.partitions.push(PartitionPlan {
            id: PartitionId(i as u16),
            name: p.name.clone(),
            memory,
            image: p.image.zip(p.entry),
            initrd: p.initrd,
            bootargs: p.bootargs.clone(),
            manager: p.manager,
            fault_limit: p.fault_limit.unwrap_or(DEFAULT_FAULT_LIMIT),
            log_limit: p.log_limit.unwrap_or(crate::budget::DEFAULT_LOG_LIMIT),
            dma_p2p: p.dma_p2p,
            cpus: core::mem::take(&mut cpus[i]),
            groups: core::mem::take(&mut groups[i]),
            irqs: owned_irqs(&hw.topology, &devices[i]),
            uart_intid: 0,
            devices: core::mem::take(&mut devices[i]),
        });
        if let Some(p) = plan.partitions.last_mut() {
            p.uart_intid = uart_intid(&p.irqs);
        }
    }
    let owned: BTreeSet<GroupId> = plan.partitions.iter().flat_map(|p| p.groups.iter().copied()).collect();
    plan.blocked = hw.groups.groups.iter().map(|g| g.id).filter(|id| !owned.contains(id)).collect();
    Ok(plan)
}

/// The interrupt lines `devices` raise ([`lines_of`]), by INTID, each
/// once (with the first device that raises it).
pub fn owned_irqs(topo: &Topology, devices: &[DeviceRef]) -> Vec<OwnedIrq> {
    let mut out: Vec<OwnedIrq> = Vec::new();
    for &d in devices {
        for (irq, _) in lines_of(topo, d) {
            if !out.iter().any(|o| o.irq.intid == irq.intid) {
                out.push(OwnedIrq { irq, device: d });
            }
        }
    }
    out.sort_by_key(|o| o.irq.intid);
    out
}

/// The virtual console's INTID for a partition owning `irqs`: the virtual
/// board's [`UART_INTID`](crate::vm::board::UART_INTID) where it is free,
/// else the lowest SPI it does not own. A physical line keeps its number
/// in the virtual GIC (so the partition's DT, the kernel's forwarding and
/// the device's own documentation agree), so the one virtual line moves
/// instead; refusing SPI 1 would refuse real boards' devices for a
/// choice of our own.
fn uart_intid(irqs: &[OwnedIrq]) -> u32 {
    let owned = |i: u32| irqs.iter().any(|o| o.irq.intid == i);
    let wanted = crate::vm::board::UART_INTID;
    // At most `irqs.len()` of the SPIs from `wanted` on are taken.
    (wanted..1020).find(|&i| !owned(i)).unwrap_or(wanted)
}

/// The GIC SPIs device `d` raises, each with how, for messages: a PCI
/// function its INTx line (through its host's `interrupt-map` and the
/// swizzle), a platform device the SPIs of its `interrupts`.
fn lines_of(topo: &Topology, d: DeviceRef) -> Vec<(devicetree::dt::Irq, String)> {
    match d {
        DeviceRef::Pci { host, function } => {
            let Some(h) = topo.hosts.get(host) else { return Vec::new() };
            let pin = h.bus.functions.get(function).map_or(0, |f| f.interrupt_pin);
            let irq = h.bus.intx(function, &h.bridge.intx).filter(|i| i.intid >= 32);
            irq.map(|i| (i, format!("INT{} on SPI {}", char::from(b'A' + pin.saturating_sub(1)), i.intid - 32))).into_iter().collect()
        }
        DeviceRef::Platform(i) => {
            let Some(m) = topo.platform.get(i) else { return Vec::new() };
            m.interrupts.iter().map(|&irq| (irq, format!("SPI {} (interrupts)", irq.intid - 32))).collect()
        }
    }
}

/// A short description of a device for messages.
fn describe(topo: &Topology, d: DeviceRef) -> String {
    match (topo.pci(d), topo.platform_device(d)) {
        (Some(f), _) => format!("PCI {:02x}:{:02x}.{} ({:04x}:{:04x})", f.bdf.bus, f.bdf.dev, f.bdf.func, f.vendor, f.device),
        (_, Some(p)) => p.path.clone(),
        _ => "unknown device".into(),
    }
}

/// Whether `d` is an endpoint (not a bridge or port): only endpoints are
/// given to partitions; the bridges of a group stay with the kernel.
fn is_endpoint(topo: &Topology, d: DeviceRef) -> bool {
    topo.pci(d).is_none_or(|f| f.secondary_bus().is_none())
}

/// Devices and groups per partition: every assigned node resolves to a
/// discovered, isolatable device; a device has one partition; a group is
/// assigned whole (every endpoint of it to the same partition) or not at all.
#[allow(clippy::type_complexity)]
fn assign_devices(cfg: &Config, hw: &Hardware) -> Result<(Vec<Vec<GroupId>>, Vec<Vec<DeviceRef>>), ConfigError> {
    let topo = &hw.topology;
    let n = cfg.partitions.len();
    let (mut groups, mut devices) = (alloc::vec![Vec::new(); n], alloc::vec![Vec::<DeviceRef>::new(); n]);
    // (device, partition, node path), in assignment order, and each
    // device's index in it: lookups stay logarithmic on large machines.
    let mut named: Vec<(DeviceRef, usize, &str)> = Vec::new();
    let mut named_at: BTreeMap<DeviceRef, usize> = BTreeMap::new();
    let not_isolatable: BTreeMap<DeviceRef, _> = hw.groups.not_isolatable.iter().rev().map(|x| (x.device, x.reason)).collect();
    let pci_index: Vec<PciIndex> = topo.hosts.iter().map(PciIndex::new).collect();
    for a in &cfg.assignments {
        let d = match &a.target {
            Target::Cpu { .. } => continue,
            Target::Pci { host, chain } => {
                let hi = topo
                    .hosts
                    .iter()
                    .position(|h| &h.bridge.path == host)
                    .ok_or_else(|| refuse(&a.path, "bulkhead,partition", format!("{host} is not a PCI host bridge bulkhead enumerated")))?;
                let fi = pci_index.get(hi).and_then(|ix| ix.resolve(&topo.hosts[hi], chain)).ok_or_else(|| {
                    let last = chain.last().copied().unwrap_or(Bdf::new(0, 0, 0));
                    refuse(&a.path, "bulkhead,partition", format!("no PCI function {:02x}.{} there on the bus (see the boot table)", last.dev, last.func))
                })?;
                DeviceRef::Pci { host: hi, function: fi }
            }
            Target::Platform => match topo.platform.iter().position(|p| p.path == a.path) {
                Some(i) => DeviceRef::Platform(i),
                None => return Err(refuse(&a.path, "bulkhead,partition", "not a DMA master behind an SMMU (no iommus): it cannot be isolated".into())),
            },
        };
        if let Some(&why) = not_isolatable.get(&d) {
            return Err(refuse(&a.path, "bulkhead,partition", format!("{} cannot be isolated: {}", describe(topo, d), why.name())));
        }
        if let Some((_, other, path)) = named_at.get(&d).and_then(|&i| named.get(i)) {
            let whom = &cfg.partitions[*other].name;
            return Err(refuse(&a.path, "bulkhead,partition", format!("{} is already assigned to {whom} by {path}", describe(topo, d))));
        }
        named_at.insert(d, named.len());
        named.push((d, a.partition, a.path.as_str()));
    }
    let mut members: Vec<usize> = Vec::new();
    for g in &hw.groups.groups {
        // The group's named devices, in assignment order.
        members.clear();
        members.extend(g.devices.iter().filter_map(|d| named_at.get(d).copied()));
        members.sort_unstable();
        let mut owner: Option<(usize, &str)> = None;
        for &(d, part, path) in members.iter().filter_map(|&i| named.get(i)) {
            match owner {
                None => owner = Some((part, path)),
                Some((o, opath)) if o != part => {
                    return Err(refuse(
                        path,
                        "bulkhead,partition",
                        format!(
                            "{} is in isolation group {} with {} (assigned to {} by {opath}): a group goes to one partition",
                            describe(topo, d),
                            g.id.0,
                            named.iter().find(|(_, _, p)| *p == opath).map(|(x, _, _)| describe(topo, *x)).unwrap_or_default(),
                            cfg.partitions[o].name
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let Some((part, path)) = owner else { continue };
        for &d in g.devices.iter().filter(|&&d| is_endpoint(topo, d)) {
            if !named_at.contains_key(&d) {
                return Err(refuse(
                    path,
                    "bulkhead,partition",
                    format!(
                        "isolation group {} also holds {}, which is not assigned: assign every device of the group to {} or none",
                        g.id.0,
                        describe(topo, d),
                        cfg.partitions[part].name
                    ),
                ));
            }
        }
        groups[part].push(g.id);
        devices[part].extend(members.iter().filter_map(|&i| named.get(i)).map(|(d, _, _)| *d));
    }
    interrupt_lines(cfg, hw, &named)?;
    bars_clear_of_the_board(topo, &named)?;
    Ok((groups, devices))
}

/// A partition's PCI functions' BARs are mapped at their own addresses in
/// its stage 2: none may lie over the virtual board's windows
/// ([`crate::vm::board::windows`]).
fn bars_clear_of_the_board(topo: &Topology, named: &[(DeviceRef, usize, &str)]) -> Result<(), ConfigError> {
    for &(d, _, path) in named {
        for b in topo.pci(d).map(|f| f.bars.as_slice()).unwrap_or_default() {
            if let Some(what) = crate::vm::board::overlapped(b.cpu.0, b.size) {
                return Err(refuse(
                    path,
                    "bulkhead,partition",
                    format!("{} has BAR{} at [{:#x}, {:#x}), over {what}", describe(topo, d), b.index, b.cpu.0, b.cpu.0.saturating_add(b.size)),
                ));
            }
        }
    }
    Ok(())
}

/// Interrupt lines are resources like memory: two partitions never share
/// one, and none is given a line the kernel keeps. Refuses the first
/// device (in assignment order) with an interrupt whose owner could not
/// be kept to one partition ([`NotForwardable::refused`]: a PPI, an
/// undecoded GIC specifier, a missing parent), or raising a line of the
/// kernel's or of another partition's device: a PCI function's INTx line
/// or a platform device's SPIs. Interrupts to another controller are not
/// forwarded and not refused.
///
/// [`NotForwardable::refused`]: devicetree::discovery::NotForwardable::refused
fn interrupt_lines(cfg: &Config, hw: &Hardware, named: &[(DeviceRef, usize, &str)]) -> Result<(), ConfigError> {
    let topo = &hw.topology;
    let mut lines: BTreeMap<u32, (usize, DeviceRef, &str)> = BTreeMap::new();
    for &(d, part, path) in named {
        if let Some(why) = topo.platform_device(d).and_then(|m| m.unforwardable).filter(|w| w.refused()) {
            return Err(refuse(path, "bulkhead,partition", format!("{} cannot be given to a partition: {why}", describe(topo, d))));
        }
        for (irq, how) in lines_of(topo, d) {
            if let Some(k) = hw.kernel_irqs.iter().find(|k| k.intid == irq.intid) {
                return Err(refuse(
                    path,
                    "bulkhead,partition",
                    format!("{} raises {how}, the line of {}, which the kernel keeps: an interrupt line goes to one owner", describe(topo, d), k.user),
                ));
            }
            match lines.get(&irq.intid) {
                Some(&(other, od, opath)) if other != part => {
                    return Err(refuse(
                        path,
                        "bulkhead,partition",
                        format!(
                            "{} raises {how}, the line of {} (assigned to {} by {opath}): an interrupt line goes to one partition",
                            describe(topo, d),
                            describe(topo, od),
                            cfg.partitions[other].name
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    lines.insert(irq.intid, (part, d, path));
                }
            }
        }
    }
    Ok(())
}

/// The functions of one host bridge by BDF, to resolve the configuration's
/// PCI nodes as [`Topology::resolve_pci`] does without a scan of every
/// function per node.
struct PciIndex {
    /// (BDF, function index), in order.
    by_bdf: BTreeSet<(Bdf, usize)>,
}

impl PciIndex {
    fn new(h: &PciHost) -> PciIndex {
        PciIndex { by_bdf: h.bus.functions.iter().enumerate().map(|(i, f)| (f.bdf, i)).collect() }
    }

    /// The functions at `bdf`, in enumeration order.
    fn at(&self, bdf: Bdf) -> impl Iterator<Item = usize> + '_ {
        self.by_bdf.range((bdf, 0)..=(bdf, usize::MAX)).map(|&(_, i)| i)
    }

    /// Same answer as `Topology::resolve_pci` for this host.
    fn resolve(&self, h: &PciHost, chain: &[Bdf]) -> Option<usize> {
        let f = &h.bus.functions;
        let (first, rest) = chain.split_first()?;
        let mut cur = self.at(*first).next()?;
        for s in rest {
            let sec = f.get(cur)?.secondary_bus()?;
            let parent = Some(cur);
            cur = self.at(Bdf::new(sec, s.dev, s.func)).find(|&i| f.get(i).is_some_and(|x| x.parent == parent))?;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{Assignment, PartitionConfig};
    use alloc::string::ToString;
    use alloc::vec;

    fn r(base: u64, size: u64) -> Region {
        Region { base: PhysAddr(base), size }
    }

    fn hw() -> Hardware {
        Hardware {
            ram: vec![r(0x4000_0000, 0x8000_0000)],
            kernel: Some(r(0x4020_0000, 0x10_0000)),
            dtb: Some(r(0x4000_0000, 0x10_0000)),
            heap: Some(r(0x4040_0000, 0x100_0000)),
            reserved: vec![r(0x5000_0000, 0x1000)],
            cpus: vec![0, 1, 2, 3],
            boot_cpu: 0,
            topology: Topology::default(),
            groups: Groups::default(),
            kernel_irqs: Vec::new(),
        }
    }

    fn part(name: &str, mem: Region) -> PartitionConfig {
        PartitionConfig {
            name: name.into(),
            path: format!("/partitions/{name}"),
            phandle: None,
            memory: vec![mem],
            image: None,
            entry: None,
            initrd: None,
            bootargs: String::new(),
            manager: false,
            fault_limit: None,
            log_limit: None,
            dma_p2p: false,
        }
    }

    fn cpu(partition: usize, mpidr: u64) -> Assignment {
        Assignment { path: format!("/cpus/cpu@{mpidr}"), partition, target: Target::Cpu { mpidr }, isolation_group: None }
    }

    fn good() -> Config {
        let mut a = part("a", r(0x4800_0000, 0x400_0000));
        a.image = Some(r(0x6000_0000, 0x10_0000));
        a.entry = Some(PhysAddr(0x4800_0000));
        Config { partitions: vec![a, part("b", r(0x4c00_0000, 0x200_0000))], assignments: vec![cpu(0, 1), cpu(1, 2)], group_hints: vec![] }
    }

    #[test]
    fn good_config_plans() {
        let plan = validate(&good(), &hw()).unwrap();
        assert_eq!(plan.partitions.len(), 2);
        assert_eq!(plan.partitions[0].cpus, [1]);
        assert_eq!(plan.partitions[0].image, Some((r(0x6000_0000, 0x10_0000), PhysAddr(0x4800_0000))));
        assert_eq!(plan.partitions[1].fault_limit, DEFAULT_FAULT_LIMIT);
    }

    fn refused(edit: impl FnOnce(&mut Config)) -> ConfigError {
        let mut c = good();
        edit(&mut c);
        validate(&c, &hw()).unwrap_err()
    }

    #[test]
    fn memory_rules() {
        let cases: Vec<(ConfigError, &str)> = vec![
            (refused(|c| c.partitions[1].memory[0] = r(0xc000_0000, 0x1000)), "not inside /memory"),
            (refused(|c| c.partitions[1].memory[0] = r(0x4020_0000, 0x1000)), "overlaps the kernel image"),
            (refused(|c| c.partitions[1].memory[0] = r(0x4000_0000, 0x1000)), "overlaps the device tree blob"),
            (refused(|c| c.partitions[1].memory[0] = r(0x4100_0000, 0x1000)), "overlaps the kernel heap"),
            (refused(|c| c.partitions[1].memory[0] = r(0x5000_0000, 0x1000)), "overlaps reserved memory"),
            (refused(|c| c.partitions[1].memory[0] = r(0x6000_0000, 0x1000)), "overlaps the image of partition a"),
            (refused(|c| c.partitions[1].memory[0] = r(0x4900_0000, 0x1000)), "overlaps partition a's memory"),
            (refused(|c| c.partitions[1].memory.push(r(0x4c00_0000, 0x1000))), "another region of the same partition"),
            (refused(|c| c.partitions[1].memory[0] = r(0x4c00_0800, 0x1000)), "not 4 KiB aligned"),
            (refused(|c| c.partitions[0].entry = Some(PhysAddr(0x4c00_0000))), "outside the partition's memory"),
            (refused(|c| c.partitions[0].entry = Some(PhysAddr(0x4bff_0000))), "does not fit"),
            (refused(|c| c.partitions[0].image = Some(r(0x4020_0000, 0x1000))), "overlaps the kernel image"),
            (refused(|c| c.partitions[0].image = Some(r(0xc000_0000, 0x1000))), "image [0xc0000000..0xc0001000) is not inside /memory"),
            (
                refused(|c| {
                    c.partitions[1].image = Some(r(0x6000_0000, 0x1000));
                    c.partitions[1].entry = Some(PhysAddr(0x4c00_0000));
                }),
                "overlaps the image of partition b",
            ),
        ];
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e} does not say {want:?}");
            assert!(e.node.starts_with("/partitions/"), "{e}");
        }
    }

    /// On a board whose RAM starts at 0 (RK3588), memory may not cover the
    /// virtual board's emulated devices.
    #[test]
    fn memory_stays_clear_of_the_virtual_board() {
        let mut h = hw();
        h.ram.push(r(0, 0x4000_0000));
        let mut c = good();
        c.partitions[1].memory[0] = r(0x0800_0000, 0x100_0000);
        let e = validate(&c, &h).unwrap_err();
        assert_eq!((e.node.as_str(), e.property), ("/partitions/b", "memory"));
        assert!(e.to_string().contains("overlaps the virtual board's GIC distributor at [0x8000000, 0x8010000)"), "{e}");
        c.partitions[1].memory[0] = r(0x3e00_0000, 0x200_0000);
        assert!(validate(&c, &h).unwrap_err().to_string().contains("PCI ECAM"));
        c.partitions[1].memory[0] = r(0x1000_0000, 0x100_0000);
        assert!(validate(&c, &h).is_ok());
    }

    #[test]
    fn initrd_rules() {
        let mut c = good();
        c.partitions[0].initrd = Some(r(0x6200_0000, 0x10_0000));
        assert_eq!(validate(&c, &hw()).unwrap().partitions[0].initrd, Some(r(0x6200_0000, 0x10_0000)));
        let with = |rd: Region| move |c: &mut Config| c.partitions[0].initrd = Some(rd);
        let cases: Vec<(ConfigError, &str)> = vec![
            (refused(with(r(0xc000_0000, 0x1000))), "initrd [0xc0000000..0xc0001000) is not inside /memory"),
            (refused(with(r(0x4020_0000, 0x1000))), "overlaps the kernel image"),
            (refused(with(r(0x6000_0000, 0x1000))), "overlaps the image of partition a"),
        ];
        // Another partition's memory over the initrd: refused on that memory.
        let e = refused(with(r(0x4c00_0000, 0x1000)));
        assert!(e.to_string().contains("overlaps the initrd of partition a") && e.property == "memory", "{e}");
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e} does not say {want:?}");
            assert_eq!((e.node.as_str(), e.property), ("/partitions/a", "bulkhead,initrd"), "{e}");
        }
    }

    #[test]
    fn cpu_rules() {
        let e = refused(|c| c.assignments[0] = cpu(0, 0));
        assert!(e.to_string().contains("boot CPU"), "{e}");
        let e = refused(|c| c.assignments[0] = cpu(0, 9));
        assert!(e.to_string().contains("no CPU with MPIDR 0x9"), "{e}");
        let e = refused(|c| c.assignments.push(cpu(1, 1)));
        assert!(e.to_string().contains("already assigned by /cpus/cpu@1"), "{e}");
        let e = refused(|c| {
            c.assignments.remove(1);
        });
        assert_eq!((e.node.as_str(), e.to_string().contains("no CPU is assigned")), ("/partitions/b", true));
    }

    pub(super) mod devices {
        use super::*;
        use crate::topology::{PciHost, Smmu};
        use devicetree::discovery::{self, IdMap, IdMapEntry, IommuRef, PlatformMaster};
        use devicetree::pci::{Function, FunctionKind, HostTopology};

        fn f(bdf: (u8, u8, u8), kind: FunctionKind, parent: Option<usize>, secondary: Option<u8>) -> Function {
            let f = Function { vendor: 0x1234, device: 0x11e8, parent, ..Function::new(Bdf::new(bdf.0, bdf.1, bdf.2), kind) };
            match secondary {
                Some(bus) => f.bridging(bus),
                None => f,
            }
        }

        /// edu at 00:01.0; a PCIe-to-PCI bridge at 00:02.0 with two edu
        /// behind it (one group by DMA alias); a platform master with
        /// iommus; one without.
        fn machine() -> Hardware {
            let host = PciHost {
                bridge: discovery::PciHost {
                    path: "/pcie@10000000".into(),
                    iommu_map: IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x10000, target: Some(0), phandle: 1, out_base: 0 }], mask: None },
                    ..discovery::PciHost::default()
                },
                bus: HostTopology {
                    root_bus: 0,
                    last_bus: 1,
                    functions: vec![
                        f((0, 1, 0), FunctionKind::Endpoint, None, None),
                        f((0, 2, 0), FunctionKind::PcieToPciBridge, None, Some(1)),
                        f((1, 1, 0), FunctionKind::PciDevice, Some(1), None),
                        f((1, 2, 0), FunctionKind::PciDevice, Some(1), None),
                    ],
                },
            };
            let topology = Topology {
                smmus: vec![Smmu { name: "smmu".into(), sid_bits: 16 }],
                hosts: vec![host],
                platform: vec![
                    PlatformMaster {
                        path: "/dma@9100000".into(),
                        iommus: vec![IommuRef { phandle: 1, smmu: Some(0), sid: 0x9000 }],
                        ..PlatformMaster::default()
                    },
                    PlatformMaster { path: "/virtio_mmio@a000000".into(), ..PlatformMaster::default() },
                ],
            };
            let groups = crate::groups::compute(&topology);
            Hardware { topology, groups, ..hw() }
        }

        pub(super) fn pci_at(partition: usize, path: &str, chain: &[(u8, u8, u8)]) -> Assignment {
            Assignment {
                path: path.into(),
                partition,
                target: Target::Pci { host: "/pcie@10000000".into(), chain: chain.iter().map(|&(bus, dev, func)| Bdf::new(bus, dev, func)).collect() },
                isolation_group: None,
            }
        }

        pub(super) fn platform(partition: usize, path: &str) -> Assignment {
            Assignment { path: path.into(), partition, target: Target::Platform, isolation_group: None }
        }

        fn with(extra: Vec<Assignment>) -> Result<Plan, ConfigError> {
            let mut c = good();
            c.assignments.extend(extra);
            validate(&c, &machine())
        }

        pub(super) const EDU_A: &str = "/pcie@10000000/edu@1,0";
        const EDU_B: &str = "/pcie@10000000/bridge@2,0/edu@1,0";
        const EDU_C: &str = "/pcie@10000000/bridge@2,0/edu@2,0";

        #[test]
        fn whole_groups_are_planned_and_the_rest_blocked() {
            let plan =
                with(vec![pci_at(0, EDU_A, &[(0, 1, 0)]), pci_at(1, EDU_B, &[(0, 2, 0), (0, 1, 0)]), pci_at(1, EDU_C, &[(0, 2, 0), (0, 2, 0)])]).unwrap();
            let m = machine();
            let ga = m.groups.group_of(DeviceRef::Pci { host: 0, function: 0 }).unwrap().id;
            let gb = m.groups.group_of(DeviceRef::Pci { host: 0, function: 2 }).unwrap().id;
            assert_eq!(plan.partitions[0].groups, [ga]);
            assert_eq!(plan.partitions[1].groups, [gb]);
            assert_eq!(plan.partitions[1].devices.len(), 2, "the bridge stays with the kernel");
            assert_eq!(plan.blocked.len(), m.groups.groups.len() - 2, "the platform master's group stays blocked");
        }

        #[test]
        fn device_refusals() {
            let cases: Vec<(Vec<Assignment>, &str, &str)> = vec![
                (vec![pci_at(0, "/pcie@10000000/edu@5,0", &[(0, 5, 0)])], "/pcie@10000000/edu@5,0", "no PCI function 05.0"),
                (vec![platform(0, "/virtio_mmio@a000000")], "/virtio_mmio@a000000", "cannot be isolated: no iommus property"),
                (vec![platform(0, "/uart@9000000")], "/uart@9000000", "not a DMA master behind an SMMU"),
                (
                    vec![pci_at(0, EDU_A, &[(0, 1, 0)]), pci_at(1, "/pcie@10000000/again@1,0", &[(0, 1, 0)])],
                    "/pcie@10000000/again@1,0",
                    "already assigned to a by /pcie@10000000/edu@1,0",
                ),
                (vec![pci_at(0, EDU_B, &[(0, 2, 0), (0, 1, 0)]), pci_at(1, EDU_C, &[(0, 2, 0), (0, 2, 0)])], EDU_C, "a group goes to one partition"),
                (vec![pci_at(1, EDU_B, &[(0, 2, 0), (0, 1, 0)])], EDU_B, "also holds PCI 01:02.0 (1234:11e8), which is not assigned"),
            ];
            for (extra, node, want) in cases {
                let e = with(extra).unwrap_err();
                assert_eq!(e.node, node, "{e}");
                assert!(e.to_string().contains(want), "{e} does not say {want:?}");
            }
        }

        #[test]
        fn bars_stay_clear_of_the_virtual_board() {
            let mut m = machine();
            let bar = |at: u64| devicetree::pci::Bar { index: 2, cpu: PhysAddr(at), pci: at, size: 0x4000, is_64: false, prefetchable: false };
            m.topology.hosts[0].bus.functions[0].bars.push(bar(0x3f0f_f000));
            let mut c = good();
            c.assignments.push(pci_at(0, EDU_A, &[(0, 1, 0)]));
            let e = validate(&c, &m).unwrap_err();
            assert_eq!((e.node.as_str(), e.property), (EDU_A, "bulkhead,partition"));
            assert!(e.to_string().contains("BAR2 at [0x3f0ff000, 0x3f103000), over the virtual board's PCI ECAM at [0x3f000000, 0x40000000)"), "{e}");
            m.topology.hosts[0].bus.functions[0].bars[0] = bar(0x3eff_c000);
            assert!(validate(&c, &m).is_ok(), "just below the window");
        }

        /// The machine with QEMU virt's INTx map (SPI 3 + (slot & 3 + pin - 1) % 4),
        /// every edu on INTA, and one more edu at 00:05.0 (slot 1 again).
        fn with_intx(extra: Vec<Assignment>) -> Result<Plan, ConfigError> {
            let mut c = good();
            c.assignments.extend(extra);
            validate(&c, &intx_machine())
        }

        pub(super) fn intx_machine() -> Hardware {
            let mut m = machine();
            let host = &mut m.topology.hosts[0];
            host.bridge.intx = devicetree::dt::IntxMap {
                mask: [0x1800, 0, 0, 7],
                entries: (0..4u32)
                    .flat_map(|slot| (1..=4u32).map(move |pin| ([slot << 11, 0, 0, pin], devicetree::dt::Irq::from_gic_cells(0, 3 + (slot + pin - 1) % 4, 4))))
                    .collect(),
            };
            host.bus.functions.push(f((0, 5, 0), FunctionKind::Endpoint, None, None));
            for f in &mut host.bus.functions {
                f.interrupt_pin = if f.bridge.is_none() { 1 } else { 0 };
            }
            m.groups = crate::groups::compute(&m.topology);
            m
        }

        #[test]
        fn an_interrupt_line_goes_to_one_partition() {
            const EDU_E: &str = "/pcie@10000000/edu@5,0";
            // 00:01.0 and 00:05.0 share SPI 4.
            let e = with_intx(vec![pci_at(0, EDU_A, &[(0, 1, 0)]), pci_at(1, EDU_E, &[(0, 5, 0)])]).unwrap_err();
            assert_eq!(e.node, EDU_E);
            assert!(
                e.to_string().contains("PCI 00:05.0 (1234:11e8) raises INTA on SPI 4, the line of PCI 00:01.0 (1234:11e8) (assigned to a by /pcie@10000000/edu@1,0): an interrupt line goes to one partition"),
                "{e}"
            );
            // Both to one partition; or 01:01.0 behind the bridge at slot 2
            // (INTA swizzled by device 1 to INTB: SPI 3 + (2 + 1) % 4 = 6).
            let both = with_intx(vec![pci_at(0, EDU_A, &[(0, 1, 0)]), pci_at(0, EDU_E, &[(0, 5, 0)])]).unwrap();
            let lines: Vec<u32> = both.partitions[0].irqs.iter().map(|o| o.irq.intid).collect();
            assert_eq!(lines, [36], "SPI 4 once, for the two functions raising it");
            let plan = with_intx(vec![pci_at(0, EDU_A, &[(0, 1, 0)]), pci_at(1, EDU_B, &[(0, 2, 0), (0, 1, 0)]), pci_at(1, EDU_C, &[(0, 2, 0), (0, 2, 0)])]);
            let plan = plan.unwrap();
            let lines: Vec<u32> = plan.partitions[1].irqs.iter().map(|o| o.irq.intid).collect();
            assert_eq!(lines, [35, 38], "01:02.0 swizzled to INTC at slot 2: SPI 3 + (2 + 3 - 1) % 4 = 3; 01:01.0 on SPI 6");
            assert!(plan.partitions[1].irqs.iter().all(|o| !o.irq.edge), "INTx is level-sensitive");
        }
    }

    /// Platform devices' SPIs: the INTx machine (SPIs 3..=6 on its PCI
    /// host) with platform masters, each its own group, and the SMMU's
    /// eventq on SPI 20, which the kernel keeps.
    mod spis {
        use super::devices::*;
        use super::*;
        use devicetree::discovery::{IommuRef, NotForwardable, PlatformMaster, Unforwardable};
        use devicetree::dt::Irq;

        fn spi(n: u32, edge: bool) -> Irq {
            Irq { intid: 32 + n, edge }
        }

        fn machine() -> Hardware {
            let mut m = intx_machine();
            let master = |path: &str, sid: u32, interrupts: Vec<Irq>, unforwardable: Option<NotForwardable>| PlatformMaster {
                path: path.into(),
                iommus: vec![IommuRef { phandle: 1, smmu: Some(0), sid: 0x9000 + sid }],
                interrupts,
                unforwardable,
                ..PlatformMaster::default()
            };
            let mbigen = NotForwardable { property: "interrupts", reason: Unforwardable::Controller(devicetree::dt::Text::from("mbigen@a0080000").unwrap()) };
            let ppi = NotForwardable { property: "interrupts-extended", reason: Unforwardable::Ppi(23) };
            m.topology.platform = vec![
                master("/dma@1", 1, vec![spi(10, false), spi(11, true)], None),
                master("/dma@2", 2, vec![spi(10, false)], None),
                master("/dma@3", 3, vec![], None),
                master("/dma@4", 4, vec![spi(4, false)], None),
                master("/dma@5", 5, vec![spi(20, true)], None),
                master("/dma@6", 6, vec![], Some(mbigen)),
                master("/dma@7", 7, vec![spi(12, false)], Some(ppi)),
                master("/dma@8", 8, vec![spi(1, false), spi(2, false)], None),
            ];
            m.groups = crate::groups::compute(&m.topology);
            m.kernel_irqs = vec![KernelIrq { intid: 52, user: "the eventq interrupt of SMMU smmu".into() }];
            m
        }

        fn plan(extra: Vec<Assignment>) -> Result<Plan, ConfigError> {
            let mut c = good();
            c.assignments.extend(extra);
            validate(&c, &machine())
        }

        fn lines(p: &PartitionPlan) -> Vec<(u32, bool)> {
            p.irqs.iter().map(|o| (o.irq.intid, o.irq.edge)).collect()
        }

        #[test]
        fn a_partition_owns_its_devices_lines() {
            // Two SPIs of one device; a line two devices of one partition
            // share, once; a device without interrupts; a PCI function's.
            let p = plan(vec![platform(0, "/dma@1"), platform(0, "/dma@2"), platform(1, "/dma@3"), pci_at(1, EDU_A, &[(0, 1, 0)])]).unwrap();
            assert_eq!(lines(&p.partitions[0]), [(42, false), (43, true)]);
            assert_eq!(p.partitions[0].irqs[0].device, DeviceRef::Platform(0), "the first device raising it");
            assert_eq!(lines(&p.partitions[1]), [(36, false)], "dma@3 raises nothing; edu 00:01.0 INTA on SPI 4");
            assert!(p.partitions.iter().all(|p| p.uart_intid == crate::vm::board::UART_INTID));
            // Interrupts to another controller (an mbigen): the device is
            // given, none of its interrupts forwarded.
            let p = plan(vec![platform(0, "/dma@6")]).unwrap();
            assert_eq!((p.partitions[0].devices.as_slice(), lines(&p.partitions[0])), ([DeviceRef::Platform(5)].as_slice(), vec![]));
        }

        #[test]
        fn a_line_goes_to_one_owner() {
            let cases: Vec<(Vec<Assignment>, &str, &str)> = vec![
                (
                    vec![platform(0, "/dma@1"), platform(1, "/dma@2")],
                    "/dma@2",
                    "/dma@2 raises SPI 10 (interrupts), the line of /dma@1 (assigned to a by /dma@1): an interrupt line goes to one partition",
                ),
                (
                    vec![pci_at(0, EDU_A, &[(0, 1, 0)]), platform(1, "/dma@4")],
                    "/dma@4",
                    "/dma@4 raises SPI 4 (interrupts), the line of PCI 00:01.0 (1234:11e8) (assigned to a by /pcie@10000000/edu@1,0)",
                ),
                (
                    vec![platform(1, "/dma@4"), pci_at(0, EDU_A, &[(0, 1, 0)])],
                    EDU_A,
                    "PCI 00:01.0 (1234:11e8) raises INTA on SPI 4, the line of /dma@4 (assigned to b by /dma@4)",
                ),
                (
                    vec![platform(0, "/dma@5")],
                    "/dma@5",
                    "/dma@5 raises SPI 20 (interrupts), the line of the eventq interrupt of SMMU smmu, which the kernel keeps: an interrupt line goes to one owner",
                ),
                (
                    vec![platform(1, "/dma@7")],
                    "/dma@7",
                    "/dma@7 cannot be given to a partition: interrupts-extended lists PPI 7 (INTID 23), which is private to each CPU",
                ),
            ];
            for (extra, node, want) in cases {
                let e = plan(extra).unwrap_err();
                assert_eq!((e.node.as_str(), e.property), (node, "bulkhead,partition"), "{e}");
                assert!(e.to_string().contains(want), "{e} does not say {want:?}");
            }
        }

        #[test]
        fn the_virtual_uart_moves_off_an_owned_line() {
            // dma@8 raises SPIs 1 and 2 (INTIDs 33, 34): the partition's
            // console takes the next free SPI, the other keeps 33.
            let p = plan(vec![platform(0, "/dma@8")]).unwrap();
            assert_eq!(lines(&p.partitions[0]), [(33, false), (34, false)]);
            assert_eq!((p.partitions[0].uart_intid, p.partitions[1].uart_intid), (35, 33));
        }
    }

    #[test]
    fn empty_config_is_an_empty_plan() {
        assert_eq!(validate(&Config::default(), &hw()).unwrap(), Plan::default());
    }

    #[test]
    fn pci_index_resolves_like_the_topology() {
        use devicetree::pci::{Function, FunctionKind, HostTopology};
        let f = |bdf: (u8, u8, u8), parent: Option<usize>, secondary_bus: Option<u8>| {
            let f = Function { parent, ..Function::new(Bdf::new(bdf.0, bdf.1, bdf.2), FunctionKind::Endpoint) };
            match secondary_bus {
                Some(bus) => f.bridging(bus),
                None => f,
            }
        };
        // The same BDF twice (under two bridges that both claim bus 1).
        let functions = vec![f((0, 1, 0), None, Some(1)), f((1, 0, 0), Some(0), None), f((0, 2, 0), None, Some(1)), f((1, 0, 0), Some(2), None)];
        let host = PciHost { bus: HostTopology { functions, ..HostTopology::default() }, ..PciHost::default() };
        let topo = Topology { hosts: vec![host], ..Topology::default() };
        let ix = PciIndex::new(&topo.hosts[0]);
        let steps = [(0, 1, 0), (0, 2, 0), (1, 0, 0), (0, 3, 0)];
        for a in steps {
            for b in steps {
                for chain in [vec![a], vec![a, b], vec![a, b, b]] {
                    let c: Vec<Bdf> = chain.iter().map(|&(bus, dev, func)| Bdf::new(bus, dev, func)).collect();
                    assert_eq!(ix.resolve(&topo.hosts[0], &c), topo.resolve_pci(0, &c), "{chain:?}");
                }
            }
        }
        assert_eq!(ix.resolve(&topo.hosts[0], &[Bdf::new(0, 2, 0), Bdf::new(9, 0, 0)]), Some(3));
    }
}
