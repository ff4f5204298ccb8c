//! Discovery: everything in the device tree that can do DMA or route it —
//! the GICv3 and its ITSs, PCI host bridges (ECAM, bus range, memory
//! windows, `iommu-map`, `msi-map`), and platform DMA masters with their
//! `iommus` — as plain typed data.
//!
//! The SMMUs themselves come from [`DeviceTree::smmus`]; discovery names
//! them by index into that list. Disabled nodes (and everything below one)
//! are skipped. A malformed property is a [`DtError`] naming the node and
//! the property; nothing here panics on input.
//!
//! Which masters can be isolated is decided from this data: a PCI requester
//! ID that no `iommu-map` entry covers would, on Linux, pass untranslated —
//! bulkhead refuses it instead ([`PciHost::rid_to_sid`]).

// `DtError` carries the node's name inline so errors need no heap and
// outlive the blob; discovery runs once at boot, so its size costs nothing.
#![allow(clippy::result_large_err)]

use crate::addr::{PhysAddr, PhysRange};
use crate::dt::{ranges, DeviceTree, DtError, DtNode, Irq, Route, SmmuNode};
use crate::pci::{Bdf, Window};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The StreamID width of the SMMU on QEMU's `virt` (IDR1.SIDSIZE = 16); the
/// driver's probe gives the real value.
pub const DEFAULT_SID_BITS: u8 = 16;
/// Most StreamID / specifier cells an `iommus` entry may carry.
const MAX_IOMMU_CELLS: u32 = 4;
/// Compatible of a generic ECAM host bridge.
pub const ECAM_COMPATIBLE: &str = "pci-host-ecam-generic";
/// ECAM: one bus of configuration space is 1 MiB (32 devices × 8 functions × 4 KiB).
const ECAM_BUS_SIZE: u64 = 1 << 20;

/// The GICv3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gic {
    /// Node path.
    pub path: String,
    /// Distributor (GICD) registers.
    pub distributor: PhysRange,
    /// Redistributor regions (`#redistributor-regions`, default 1).
    pub redistributors: Vec<PhysRange>,
}

/// A GICv3 ITS (`msi-controller`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Its {
    /// Node path.
    pub path: String,
    /// Its registers.
    pub regs: PhysRange,
    /// Its phandle, which `msi-map` / `msi-parent` name.
    pub phandle: Option<u32>,
}

/// The architected timer (`arm,armv8-timer`): the PPIs of its timers, from
/// `interrupts` in the binding's order (secure physical, non-secure
/// physical, virtual, hypervisor physical, hypervisor virtual).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchTimer {
    /// Node path.
    pub path: String,
    /// EL1 physical timer (CNTP), entry 1.
    pub el1_physical: Option<Irq>,
    /// EL1 virtual timer (CNTV), entry 2.
    pub el1_virtual: Option<Irq>,
    /// EL2 physical timer (CNTHP), entry 3: the kernel's own.
    pub el2_physical: Option<Irq>,
}

/// One entry of an `iommu-map` or `msi-map` (PCI IOMMU / MSI bindings):
/// requester IDs `rid_base .. rid_base + length` map to output IDs from
/// `out_base` at the node `phandle` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapEntry {
    /// First requester ID covered (after the map mask).
    pub rid_base: u32,
    /// The IOMMU / MSI controller node.
    pub phandle: u32,
    /// The StreamID / device ID `rid_base` maps to.
    pub out_base: u32,
    /// How many IDs the entry covers.
    pub length: u32,
    /// For `iommu-map`: index of that SMMU in the enabled-SMMU list; for
    /// `msi-map`: index in [`Discovery::its`]. `None` when the node is not
    /// one (another IOMMU type, or disabled).
    pub target: Option<usize>,
}

/// An `iommu-map` or `msi-map` with its mask (`iommu-map-mask`,
/// `msi-map-mask`; absent = all bits): the PCI IOMMU and MSI bindings'
/// requester ID → output ID table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// The entries, in the property's order: the first that covers an ID wins.
    pub entries: Vec<IdMapEntry>,
    /// The map mask, if present.
    pub mask: Option<u32>,
}

impl IdMap {
    /// `id` after the map mask.
    pub fn masked(&self, id: u32) -> u32 {
        id & self.mask.unwrap_or(u32::MAX)
    }

    /// The entry that covers `id` (after the mask) and the output ID it
    /// maps to, as Linux's `of_map_id` finds them.
    pub fn lookup(&self, id: u32) -> Option<(&IdMapEntry, u64)> {
        let id = self.masked(id);
        self.entries.iter().find_map(|e| {
            let off = id.checked_sub(e.rid_base)?;
            (off < e.length).then(|| (e, u64::from(e.out_base) + u64::from(off)))
        })
    }
}

/// A node below a host bridge naming a PCI function (boards/bindings/bulkhead,partitions.yaml: `reg`
/// phys.hi = bus<<16 | dev<<11 | fn<<8), as an overlay adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDtNode {
    /// Node path.
    pub path: String,
    /// Bus/device/function of each level from the host bridge down
    /// (the node's own last), as phys.hi spells them.
    pub chain: Vec<Bdf>,
    /// `bulkhead,isolation-group`, if present.
    pub isolation_group: Option<u32>,
}

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciHost {
    /// Node path.
    pub path: String,
    /// `linux,pci-domain`, if present.
    pub domain: Option<u32>,
    /// The ECAM window (CPU addresses).
    pub ecam: PhysRange,
    /// First bus number (`bus-range`).
    pub bus_start: u8,
    /// Last bus number the ECAM window can reach.
    pub bus_end: u8,
    /// `bus-range` named more buses than the ECAM window holds and was
    /// reduced (as Linux does).
    pub bus_range_clamped: bool,
    /// Memory windows from `ranges` (I/O space is not used).
    pub windows: Vec<Window>,
    /// `iommu-map` and `iommu-map-mask`.
    pub iommu_map: IdMap,
    /// `msi-map` and `msi-map-mask`.
    pub msi_map: IdMap,
    /// `dma-coherent`.
    pub coherent: bool,
    /// Its legacy interrupts (`interrupt-map`).
    pub intx: crate::dt::IntxMap,
    /// PCI function nodes below it (from an overlay).
    pub nodes: Vec<PciDtNode>,
}

/// Why a requester ID has no StreamID bulkhead can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// The host bridge has no `iommu-map`: its DMA does not pass an SMMU.
    NoIommuMap,
    /// No `iommu-map` entry covers the (masked) requester ID.
    NotCovered {
        /// The requester ID after `iommu-map-mask`.
        rid: u32,
    },
    /// The entry names a node that is not an enabled `arm,smmu-v3`.
    NotAnSmmu {
        /// The phandle the entry names.
        phandle: u32,
    },
    /// The StreamID is beyond what the SMMU decodes (≥ 2^SIDSIZE).
    SidTooLarge {
        /// The StreamID.
        sid: u64,
        /// SIDSIZE.
        sid_bits: u8,
    },
}

#[cfg(feature = "defmt")]
impl defmt::Format for Unmapped {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            Unmapped::NoIommuMap => defmt::write!(f, "host bridge has no iommu-map"),
            Unmapped::NotCovered { rid } => defmt::write!(f, "RID {=u32:#06x} is not covered by iommu-map", rid),
            Unmapped::NotAnSmmu { phandle } => {
                defmt::write!(f, "iommu-map names phandle {=u32:#x}, not an enabled arm,smmu-v3", phandle)
            }
            Unmapped::SidTooLarge { sid, sid_bits } => {
                defmt::write!(f, "StreamID {=u64:#x} does not fit SIDSIZE {=u8}", sid, sid_bits)
            }
        }
    }
}

impl PciHost {
    /// The SMMU (index in the enabled-SMMU list) and StreamID that requester
    /// ID `rid` reaches, for an SMMU decoding `sid_bits`-bit StreamIDs.
    pub fn rid_to_sid(&self, rid: u16, sid_bits: u8) -> Result<(usize, u32), Unmapped> {
        if self.iommu_map.entries.is_empty() {
            return Err(Unmapped::NoIommuMap);
        }
        let masked = self.iommu_map.masked(u32::from(rid));
        let (e, sid) = self.iommu_map.lookup(u32::from(rid)).ok_or(Unmapped::NotCovered { rid: masked })?;
        let smmu = e.target.ok_or(Unmapped::NotAnSmmu { phandle: e.phandle })?;
        if sid_bits < 64 && sid >> sid_bits != 0 || sid > u64::from(u32::MAX) {
            return Err(Unmapped::SidTooLarge { sid, sid_bits });
        }
        Ok((smmu, sid as u32))
    }

    /// The MSI controller (index in [`Discovery::its`]) and device ID of `rid`.
    pub fn rid_to_msi(&self, rid: u16) -> Option<(usize, u32)> {
        let (e, id) = self.msi_map.lookup(u32::from(rid))?;
        Some((e.target?, u32::try_from(id).ok()?))
    }
}

/// One `iommus` specifier of a platform master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuRef {
    /// The IOMMU node.
    pub phandle: u32,
    /// Index in the enabled-SMMU list, if the node is one.
    pub smmu: Option<usize>,
    /// The first specifier cell: the StreamID for `arm,smmu-v3`.
    pub sid: u32,
}

/// A platform device that does (or is claimed to do) DMA: it has `iommus`,
/// says it does DMA (`dma-coherent`, `dma-noncoherent`), or the overlay
/// names it (`bulkhead,partition`, `bulkhead,isolation-group`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformMaster {
    /// Node path.
    pub path: String,
    /// `iommus` specifiers; empty when the node has none (not isolatable).
    pub iommus: Vec<IommuRef>,
    /// `bulkhead,isolation-group`, if present.
    pub isolation_group: Option<u32>,
    /// Its GIC SPIs (`interrupts` through its interrupt parent, or
    /// `interrupts-extended`), each once, in the order listed: the lines
    /// the partition that owns it owns.
    pub interrupts: Vec<Irq>,
    /// An interrupt of it that cannot be forwarded to a partition (the
    /// first listed), if any; validation decides what follows
    /// ([`NotForwardable::refused`]).
    pub unforwardable: Option<NotForwardable>,
}

/// Why an interrupt of a platform master cannot be forwarded to a
/// partition. Discovery only records it: the tree is the board's and
/// stays readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unforwardable {
    /// A PPI (this INTID): private to each CPU, so never one device's
    /// line to own.
    Ppi(u32),
    /// A GIC specifier the kernel does not decode (the GICv3 binding's
    /// extended SPI or PPI ranges, or a number beyond the architecture's).
    Undecoded,
    /// Routed to an interrupt controller that is not the GIC (this node:
    /// an mbigen, a combiner, a GPIO block), which the kernel neither
    /// drives nor divides between partitions.
    Controller(crate::dt::Text),
    /// `interrupt-parent` names a phandle no node has.
    NoParent,
}

/// An interrupt of a master that cannot be forwarded: the property it is
/// listed in and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotForwardable {
    /// `interrupts` or `interrupts-extended`.
    pub property: &'static str,
    /// Why.
    pub reason: Unforwardable,
}

impl NotForwardable {
    /// Whether assigning the master is refused (boards/bindings/bulkhead,partitions.yaml):
    /// a PPI (a per-CPU line: never one partition's), a GIC line the kernel
    /// does not decode, or a parent the tree does not have — GIC lines,
    /// or possibly ones, whose owner could not be kept to one partition.
    /// A line to another controller is not refused: it never reaches the
    /// GIC as that device's line, so no partition can share it, and a user
    /// who gives the device gets its DMA isolated and is told that none
    /// of its interrupts is forwarded (every isolatable master of HiSilicon's
    /// hip07, whose interrupts go through its mbigen, would otherwise be
    /// refused).
    pub fn refused(&self) -> bool {
        !matches!(self.reason, Unforwardable::Controller(_))
    }
}

impl core::fmt::Display for NotForwardable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.reason {
            Unforwardable::Ppi(intid) => {
                write!(f, "{} lists PPI {} (INTID {intid}), which is private to each CPU, not a device's line", self.property, intid.saturating_sub(16))
            }
            Unforwardable::Undecoded => {
                write!(f, "{} has a GIC specifier the kernel does not decode (an extended SPI or PPI, or a number beyond the GIC's)", self.property)
            }
            Unforwardable::Controller(c) => {
                write!(f, "{} go to {}, an interrupt controller other than the GIC: the kernel forwards only GIC SPIs", self.property, c.as_str())
            }
            Unforwardable::NoParent => write!(f, "{}: its interrupt-parent names a phandle no node has", self.property),
        }
    }
}

/// Everything discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The GICv3, if any.
    pub gic: Option<Gic>,
    /// GICv3 ITSs.
    pub its: Vec<Its>,
    /// The architected timer, if the DT describes it.
    pub timer: Option<ArchTimer>,
    /// ECAM host bridges, in tree order.
    pub pci_hosts: Vec<PciHost>,
    /// Platform DMA masters, in tree order.
    pub masters: Vec<PlatformMaster>,
}

/// A node seen by the walk, with what the walk knows of its place.
#[derive(Clone, Copy)]
struct Seen<'a> {
    node: DtNode<'a>,
    /// The node and every ancestor are enabled.
    enabled: bool,
    /// Inside a subtree whose nodes are not platform devices (`/cpus`,
    /// `/partitions`, a PCI host bridge, ...).
    special: bool,
    /// Compatible with `arm,gic-v3` (its `msi-controller` children are ITSs).
    gic: bool,
}

/// Which of the compatibles the walk tells nodes apart by a node's
/// `compatible` lists: `DtNode::is_compatible` of each, in one pass.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Kinds {
    /// [`ECAM_COMPATIBLE`].
    ecam: bool,
    /// `arm,gic-v3`.
    gic_v3: bool,
    /// `arm,armv8-timer`.
    timer: bool,
    /// `arm,gic-v3-its`.
    its: bool,
    /// `arm,smmu-v3`.
    smmu_v3: bool,
    /// `simple-bus`.
    simple_bus: bool,
}

impl Kinds {
    fn of(compatible: Option<&[u8]>) -> Kinds {
        let mut k = Kinds::default();
        for c in compatible.unwrap_or(&[]).split(|&b| b == 0) {
            match c {
                c if c == ECAM_COMPATIBLE.as_bytes() => k.ecam = true,
                b"arm,gic-v3" => k.gic_v3 = true,
                b"arm,armv8-timer" => k.timer = true,
                b"arm,gic-v3-its" => k.its = true,
                b"arm,smmu-v3" => k.smmu_v3 = true,
                b"simple-bus" => k.simple_bus = true,
                _ => {}
            }
        }
        k
    }
}

/// The properties the walk reads of every node, found in one pass over
/// the node's properties (a lookup each would pass over them a dozen times).
/// Each is what `DtNode::prop` gives (the first of the name).
struct Facts<'a> {
    status: Option<&'a [u8]>,
    phandle: Option<&'a [u8]>,
    linux_phandle: Option<&'a [u8]>,
    device_type: Option<&'a [u8]>,
    compatible: Kinds,
    msi_controller: bool,
    interrupt_controller: bool,
    dma_coherent: bool,
    dma_noncoherent: bool,
    partition: bool,
    isolation_group: Option<&'a [u8]>,
    iommus: bool,
}

impl<'a> Facts<'a> {
    fn of(n: &DtNode<'a>) -> Facts<'a> {
        let mut p = Facts {
            status: None,
            phandle: None,
            linux_phandle: None,
            device_type: None,
            compatible: Kinds::default(),
            msi_controller: false,
            interrupt_controller: false,
            dma_coherent: false,
            dma_noncoherent: false,
            partition: false,
            isolation_group: None,
            iommus: false,
        };
        let mut compatible = None;
        // The first property of each name counts, as with `DtNode::prop`.
        let first = |slot: &mut Option<&'a [u8]>, v: &'a [u8]| {
            slot.get_or_insert(v);
        };
        for (name, v) in n.properties() {
            match name {
                b"status" => first(&mut p.status, v),
                b"phandle" => first(&mut p.phandle, v),
                b"linux,phandle" => first(&mut p.linux_phandle, v),
                b"device_type" => first(&mut p.device_type, v),
                b"compatible" => first(&mut compatible, v),
                b"msi-controller" => p.msi_controller = true,
                b"interrupt-controller" => p.interrupt_controller = true,
                b"dma-coherent" => p.dma_coherent = true,
                b"dma-noncoherent" => p.dma_noncoherent = true,
                b"bulkhead,partition" => p.partition = true,
                b"bulkhead,isolation-group" => first(&mut p.isolation_group, v),
                b"iommus" => p.iommus = true,
                _ => {}
            }
        }
        p.compatible = Kinds::of(compatible);
        p
    }
}

fn cell(v: &[u8], i: usize) -> Option<u32> {
    let b = v.get(i * 4..i * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn cells(v: &[u8], at: usize, n: usize) -> Option<u64> {
    if n > 2 {
        return None;
    }
    (0..n).try_fold(0u64, |acc, i| Some((acc << 32) | u64::from(cell(v, at + i)?)))
}

/// The full path of `n`, whose ancestors are `stack` (root first).
fn path_of(stack: &[Seen<'_>], n: &DtNode<'_>) -> String {
    if n.depth == 0 {
        return String::from("/");
    }
    let names = || stack.iter().skip(1).map(|s| s.node.name()).chain(core::iter::once(n.name()));
    let mut p = String::with_capacity(names().map(|name| name.len() + 1).sum());
    for name in names() {
        p.push('/');
        p.push_str(name);
    }
    p
}

/// Translates an address of the children of `stack.last()` to the CPU's
/// (`dt::ranges::translate`).
fn to_cpu(stack: &[Seen<'_>], addr: u64, size: u64) -> Result<u64, DtError> {
    ranges::translate(stack.iter().map(|s| &s.node), addr, size)
}

fn translate_range(stack: &[Seen<'_>], r: PhysRange) -> Result<PhysRange, DtError> {
    ranges::translate_range(stack.iter().map(|s| &s.node), r)
}

/// A one-cell property that must be present with exactly one cell, or absent.
fn one(n: &DtNode<'_>, name: &'static str) -> Result<Option<u32>, DtError> {
    n.u32_prop(name)
}

/// Reads the discovery facts; `smmus` is [`DeviceTree::smmus`]'s list.
pub fn discover(dt: &DeviceTree<'_>, smmus: &[SmmuNode]) -> Result<Discovery, DtError> {
    let mut out = Discovery::default();
    let mut phandles: BTreeMap<u32, DtNode<'_>> = BTreeMap::new();
    let mut stack: Vec<Seen<'_>> = Vec::with_capacity(16);
    // Raw `iommus` lists and maps, resolved once every phandle is known.
    let mut pending_iommus: Vec<(usize, DtNode<'_>, Vec<DtNode<'_>>)> = Vec::new();
    let mut pending_maps: Vec<(usize, DtNode<'_>)> = Vec::new();

    dt.walk::<DtError>(&mut |n| {
        stack.truncate(n.depth);
        let parent = stack.last().copied();
        let p = Facts::of(n);
        let enabled = DtNode::enabled(p.status) && parent.is_none_or(|p| p.enabled);
        let in_special = parent.is_some_and(|p| p.special);
        for ph in [n.one_cell("phandle", p.phandle)?, n.one_cell("linux,phandle", p.linux_phandle)?].into_iter().flatten() {
            match phandles.get(&ph) {
                Some(other) if other.name() != n.name() || other.depth != n.depth => {
                    return Err(n.bad("phandle", "the same phandle is on another node"));
                }
                Some(_) => {}
                None => {
                    phandles.insert(ph, *n);
                }
            }
        }
        let top = n.depth == 1;
        let mut special = in_special
            || (top && matches!(n.name().split('@').next(), Some("cpus" | "partitions" | "chosen" | "aliases" | "reserved-memory" | "memory")))
            || n.str_value("device_type", p.device_type)? == Some("memory");
        if enabled && !in_special {
            if p.compatible.ecam {
                special = true;
                let host = pci_host(dt, &stack, n)?;
                pending_maps.push((out.pci_hosts.len(), *n));
                out.pci_hosts.push(host);
            } else if p.compatible.gic_v3 {
                if out.gic.is_some() {
                    return Err(DtError::TooMany("arm,gic-v3 interrupt controllers"));
                }
                out.gic = Some(gic(&stack, n)?);
            } else if p.compatible.timer {
                if out.timer.is_some() {
                    return Err(DtError::TooMany("arm,armv8-timer nodes"));
                }
                out.timer = Some(arch_timer(dt, &stack, n)?);
            } else if p.compatible.its || (p.msi_controller && parent.is_some_and(|p| p.gic)) {
                let regs = *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing"))?;
                out.its.push(Its { path: path_of(&stack, n), regs: translate_range(&stack, regs)?, phandle: n.phandle()? });
            } else if n.depth > 0 && is_master_candidate(&p) {
                pending_iommus.push((out.masters.len(), *n, stack.iter().map(|s| s.node).collect()));
                out.masters.push(PlatformMaster {
                    path: path_of(&stack, n),
                    isolation_group: n.one_cell("bulkhead,isolation-group", p.isolation_group)?,
                    ..PlatformMaster::default()
                });
            }
        }
        stack.push(Seen { node: *n, enabled, special, gic: p.compatible.gic_v3 });
        Ok(())
    })?;

    let lookup = |ph: u32| phandles.get(&ph).copied();
    let smmu_index = |ph: u32| smmus.iter().position(|s| s.phandle == Some(ph));
    let its_index = |ph: u32| out.its.iter().position(|i| i.phandle == Some(ph));

    for (i, n) in pending_maps {
        let (iommu, msi) = (
            read_id_map(&n, "iommu-map", "iommu-map-mask", &lookup, &smmu_index, true)?,
            read_id_map(&n, "msi-map", "msi-map-mask", &lookup, &its_index, false)?,
        );
        if let Some(h) = out.pci_hosts.get_mut(i) {
            (h.iommu_map, h.msi_map) = (iommu, msi);
        }
    }
    for (i, n, ancestors) in pending_iommus {
        let refs = read_iommus(&n, &lookup, &smmu_index)?;
        let (interrupts, unforwardable) = master_irqs(dt, &n, &ancestors, &lookup)?;
        if let Some(m) = out.masters.get_mut(i) {
            (m.iommus, m.interrupts, m.unforwardable) = (refs, interrupts, unforwardable);
        }
    }
    Ok(out)
}

/// Whether an enabled node outside the special subtrees is a DMA master.
fn is_master_candidate(p: &Facts<'_>) -> bool {
    // The SMMU and the interrupt controllers do DMA for the kernel only.
    let kernel_owned = p.compatible.smmu_v3 || p.interrupt_controller || p.msi_controller;
    let says_dma = p.dma_coherent || p.dma_noncoherent;
    let is_bus = p.compatible.simple_bus;
    let named = p.partition || p.isolation_group.is_some();
    !kernel_owned && (p.iommus || named || (says_dma && !is_bus))
}

/// A master's GIC SPIs (each once, in order) and the first of its
/// interrupts that cannot be forwarded, if any (`ancestors` root first).
/// Only a malformed list is an error (naming the node and property).
fn master_irqs<'a>(
    dt: &DeviceTree<'a>,
    n: &DtNode<'a>,
    ancestors: &[DtNode<'a>],
    lookup: &dyn Fn(u32) -> Option<DtNode<'a>>,
) -> Result<(Vec<Irq>, Option<NotForwardable>), DtError> {
    // `interrupts-extended` wins over `interrupts` (Devicetree
    // Specification v0.4 §2.4.1.3), as `irqs` reads it.
    let property = if n.prop("interrupts-extended").is_some() { "interrupts-extended" } else { "interrupts" };
    let not = |reason| Some(NotForwardable { property, reason });
    let list = match dt.all_irqs(n, ancestors, Some(lookup))? {
        Ok(list) => list,
        Err(Route::Other(c)) => return Ok((Vec::new(), not(Unforwardable::Controller(c)))),
        Err(_) => return Ok((Vec::new(), not(Unforwardable::NoParent))),
    };
    let (mut spis, mut problem): (Vec<Irq>, _) = (Vec::new(), None);
    for irq in list {
        match irq {
            Some(i) if i.intid >= 32 => {
                if !spis.iter().any(|s| s.intid == i.intid) {
                    spis.push(i);
                }
            }
            Some(i) => problem = problem.or(not(Unforwardable::Ppi(i.intid))),
            None => problem = problem.or(not(Unforwardable::Undecoded)),
        }
    }
    Ok((spis, problem))
}

fn gic(stack: &[Seen<'_>], n: &DtNode<'_>) -> Result<Gic, DtError> {
    let regs = n.reg()?;
    let nr = one(n, "#redistributor-regions")?.unwrap_or(1) as usize;
    let distributor = translate_range(stack, *regs.first().ok_or_else(|| n.bad("reg", "missing the distributor"))?)?;
    if nr == 0 || regs.len() < 1 + nr {
        return Err(n.bad("reg", "fewer entries than the distributor plus #redistributor-regions"));
    }
    let mut redistributors = Vec::new();
    for r in regs.iter().skip(1).take(nr) {
        redistributors.push(translate_range(stack, *r)?);
    }
    Ok(Gic { path: path_of(stack, n), distributor, redistributors })
}

/// The timer's PPIs. Its `interrupts` are GIC specifiers (the GICv3
/// binding's three cells: type, number, flags; or four, with a PPI
/// partition): type 1 = PPI, INTID 16 + number; flags \[3:0\] 1 or 2 = edge,
/// 4 or 8 = level.
fn arch_timer<'a>(dt: &DeviceTree<'a>, stack: &[Seen<'a>], n: &DtNode<'a>) -> Result<ArchTimer, DtError> {
    let ancestors: Vec<DtNode<'a>> = stack.iter().map(|s| s.node).collect();
    // Interrupts that go elsewhere than a GIC name no PPI (the kernel then
    // says the timer has no EL2 PPI, when it needs one).
    let irqs = dt.irqs::<8>(n, &ancestors, None)?.unwrap_or_default();
    let ppi = |i: usize| -> Result<Option<Irq>, DtError> {
        match irqs.get(i) {
            None => Ok(None),
            Some(Some(irq)) if (16..32).contains(&irq.intid) => Ok(Some(*irq)),
            Some(_) => Err(n.bad("interrupts", "a timer interrupt that is not a GIC PPI")),
        }
    };
    Ok(ArchTimer { path: path_of(stack, n), el1_physical: ppi(1)?, el1_virtual: ppi(2)?, el2_physical: ppi(3)? })
}

fn pci_host<'a>(dt: &DeviceTree<'a>, stack: &[Seen<'a>], n: &DtNode<'a>) -> Result<PciHost, DtError> {
    if n.own_addr_cells()? != 3 {
        return Err(n.bad("#address-cells", "a PCI bus has 3 address cells"));
    }
    if n.own_size_cells()? != 2 {
        return Err(n.bad("#size-cells", "a PCI bus has 2 size cells"));
    }
    // `reg` is in the parent's cells (the node's own #address-cells is 3).
    let ecam = translate_range(stack, *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing (the ECAM window)"))?)?;
    let buses = ecam.size() / ECAM_BUS_SIZE;
    if buses == 0 {
        return Err(n.bad("reg", "ECAM window smaller than one bus (1 MiB)"));
    }
    let (bus_start, mut bus_end) = match n.prop("bus-range") {
        None => (0u8, 0xffu8),
        Some(v) if v.len() == 8 => {
            let (s, e) = (cell(v, 0).unwrap_or(u32::MAX), cell(v, 1).unwrap_or(u32::MAX));
            if s > e || e > 0xff {
                return Err(n.bad("bus-range", "not <first last> with first <= last <= 255"));
            }
            (s as u8, e as u8)
        }
        Some(_) => return Err(n.bad("bus-range", "expected two cells <first last>")),
    };
    let reachable = u64::from(bus_start) + buses - 1;
    let clamped = u64::from(bus_end) > reachable;
    if clamped {
        bus_end = reachable as u8;
    }
    Ok(PciHost {
        path: path_of(stack, n),
        domain: one(n, "linux,pci-domain")?,
        ecam,
        bus_start,
        bus_end,
        bus_range_clamped: clamped,
        windows: pci_ranges(stack, n)?,
        iommu_map: IdMap::default(),
        msi_map: IdMap::default(),
        coherent: n.has("dma-coherent"),
        intx: dt.intx_map(n)?,
        nodes: pci_nodes(dt, n, &path_of(stack, n))?,
    })
}

/// `ranges` of a PCI host: (phys.hi phys.mid phys.lo, parent address,
/// size (2 cells)). phys.hi: bit 30 prefetchable, bits 25:24 space code
/// (01 I/O, 10 32-bit memory, 11 64-bit memory) — PCI Bus Binding to
/// IEEE 1275 §2.2.1.1.
fn pci_ranges(stack: &[Seen<'_>], n: &DtNode<'_>) -> Result<Vec<Window>, DtError> {
    let mut out = Vec::new();
    let Some(v) = n.prop("ranges") else { return Ok(out) };
    let pa = n.addr_cells as usize;
    let entry = 3 + pa + 2;
    if pa == 0 || pa > 2 || v.len() % (entry * 4) != 0 {
        return Err(n.bad("ranges", "length is not a multiple of (3 + parent #address-cells + 2) cells"));
    }
    for i in 0..v.len() / (entry * 4) {
        let at = i * entry;
        let bad = || n.bad("ranges", "bad cells");
        let hi = cell(v, at).ok_or_else(bad)?;
        let pci = cells(v, at + 1, 2).ok_or_else(bad)?;
        let parent = cells(v, at + 3, pa).ok_or_else(bad)?;
        let size = cells(v, at + 3 + pa, 2).ok_or_else(bad)?;
        let space = (hi >> 24) & 0x3;
        if space < 2 || size == 0 {
            continue; // configuration space is `reg`; bulkhead gives out no I/O space
        }
        if pci.checked_add(size).is_none() || parent.checked_add(size).is_none() {
            return Err(n.bad("ranges", "window wraps around"));
        }
        let cpu = to_cpu(stack, parent, size)?;
        // A 32-bit space code with PCI addresses above 4 GiB (NXP LS1028A's
        // integrated endpoints, Arm Juno): Linux takes the window as the
        // addresses say, and so does bulkhead — it is a 64-bit window.
        let mem64 = space == 3 || pci + size > 1 << 32;
        out.push(Window { cpu: PhysAddr(cpu), pci, size, prefetchable: hi & (1 << 30) != 0, mem64 });
    }
    Ok(out)
}

/// Nodes below a host bridge that name PCI functions.
fn pci_nodes<'a>(dt: &DeviceTree<'a>, host: &DtNode<'a>, host_path: &str) -> Result<Vec<PciDtNode>, DtError> {
    fn rec<'a>(dt: &DeviceTree<'a>, n: &DtNode<'a>, path: &str, chain: &mut Vec<Bdf>, out: &mut Vec<PciDtNode>) -> Result<(), DtError> {
        for c in dt.children(n)? {
            if !c.is_enabled() || c.depth > 16 {
                continue;
            }
            let Some(reg) = c.prop("reg") else { continue };
            // Below a function, nodes of its own buses (an MDIO bus's PHYs):
            // not PCI functions.
            if c.addr_cells != 3 {
                continue;
            }
            if reg.len() < 12 {
                return Err(c.bad("reg", "a PCI function's reg needs 3 address cells (phys.hi phys.mid phys.lo)"));
            }
            let hi = cell(reg, 0).unwrap_or(0);
            chain.push(Bdf::new((hi >> 16) as u8, ((hi >> 11) & 0x1f) as u8, ((hi >> 8) & 0x7) as u8));
            let mut p = String::from(path);
            p.push('/');
            p.push_str(c.name());
            out.push(PciDtNode { path: p.clone(), chain: chain.clone(), isolation_group: c.u32_prop("bulkhead,isolation-group")? });
            rec(dt, &c, &p, chain, out)?;
            chain.pop();
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(dt, host, host_path, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn read_id_map<'a>(
    n: &DtNode<'a>,
    name: &'static str,
    mask_name: &'static str,
    lookup: &dyn Fn(u32) -> Option<DtNode<'a>>,
    target: &dyn Fn(u32) -> Option<usize>,
    is_iommu: bool,
) -> Result<IdMap, DtError> {
    let mask = one(n, mask_name)?;
    let mut out = Vec::new();
    let Some(v) = n.prop(name) else { return Ok(IdMap { entries: out, mask }) };
    if v.is_empty() || v.len() % 16 != 0 {
        return Err(n.bad(name, "not a list of <rid-base phandle out-base length> (4 cells each)"));
    }
    for i in 0..v.len() / 16 {
        let c = |k| cell(v, i * 4 + k).unwrap_or(0);
        let (rid_base, phandle, out_base, length) = (c(0), c(1), c(2), c(3));
        if rid_base & !mask.unwrap_or(u32::MAX) != 0 {
            return Err(n.bad(name, "an entry's rid-base has bits the map mask clears"));
        }
        let t = lookup(phandle).ok_or_else(|| n.bad(name, "names a phandle no node has"))?;
        if is_iommu && t.is_compatible("arm,smmu-v3") && t.u32_prop("#iommu-cells")?.is_some_and(|c| c != 1) {
            return Err(n.bad(name, "names an arm,smmu-v3 whose #iommu-cells is not 1"));
        }
        out.push(IdMapEntry { rid_base, phandle, out_base, length, target: target(phandle) });
    }
    Ok(IdMap { entries: out, mask })
}

fn read_iommus<'a>(n: &DtNode<'a>, lookup: &dyn Fn(u32) -> Option<DtNode<'a>>, smmu_index: &dyn Fn(u32) -> Option<usize>) -> Result<Vec<IommuRef>, DtError> {
    let mut out = Vec::new();
    let Some(v) = n.prop("iommus") else { return Ok(out) };
    if v.is_empty() || v.len() % 4 != 0 {
        return Err(n.bad("iommus", "not a list of <phandle specifier...> cells"));
    }
    let total = v.len() / 4;
    let mut i = 0;
    while i < total {
        let phandle = cell(v, i).unwrap_or(0);
        let t = lookup(phandle).ok_or_else(|| n.bad("iommus", "names a phandle no node has"))?;
        let nc = t.u32_prop("#iommu-cells")?.ok_or_else(|| n.bad("iommus", "names a node without #iommu-cells"))?;
        if nc > MAX_IOMMU_CELLS {
            return Err(n.bad("iommus", "names a node with more than 4 #iommu-cells"));
        }
        if t.is_compatible("arm,smmu-v3") && nc != 1 {
            return Err(n.bad("iommus", "an arm,smmu-v3 specifier is one StreamID cell"));
        }
        if i + 1 + nc as usize > total {
            return Err(n.bad("iommus", "the last specifier is cut short"));
        }
        let sid = if nc > 0 { cell(v, i + 1).unwrap_or(0) } else { 0 };
        out.push(IommuRef { phandle, smmu: smmu_index(phandle), sid });
        i += 1 + nc as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod timer_tests {
    use super::*;
    use crate::testutil::dtb;

    fn timer(body: &str) -> Result<Option<ArchTimer>, DtError> {
        let blob = dtb(&alloc::format!("/dts-v1/;\n/ {{ #address-cells = <2>; #size-cells = <2>;\n{body}\n}};"));
        let dt = DeviceTree::parse(&blob).unwrap();
        discover(&dt, &[]).map(|d| d.timer)
    }

    #[test]
    fn reads_the_qemu_virt_timer() {
        // QEMU 10 `virt`'s node (five entries: the EL2 virtual timer last).
        let t = timer(
            r#"timer { compatible = "arm,armv8-timer", "arm,armv7-timer"; always-on;
            interrupts = <1 13 4 1 14 4 1 11 4 1 10 4 1 12 4>; };"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.path, "/timer");
        assert_eq!(t.el2_physical, Some(Irq { intid: 26, edge: false }));
        assert_eq!(t.el1_physical, Some(Irq { intid: 30, edge: false }));
        assert_eq!(t.el1_virtual, Some(Irq { intid: 27, edge: false }));
    }

    #[test]
    fn short_lists_and_bad_specifiers() {
        let t = timer(r#"timer { compatible = "arm,armv8-timer"; interrupts = <1 13 4 1 14 4>; };"#).unwrap().unwrap();
        assert_eq!((t.el1_physical.map(|i| i.intid), t.el2_physical), (Some(30), None));
        assert!(timer("").unwrap().is_none());
        assert!(timer(r#"timer { compatible = "arm,armv8-timer"; interrupts = <0 13 4 0 14 4 0 11 4 0 10 4>; };"#).is_err());
        assert!(timer(r#"timer { compatible = "arm,armv8-timer"; interrupts = <1 13>; };"#).is_err());
        assert!(timer(r#"timer { compatible = "arm,armv8-timer"; status = "disabled"; interrupts = <1 13 4>; };"#).unwrap().is_none());
    }
}
