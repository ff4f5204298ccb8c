//! Boot step 7 (README "Boot path"): discovery and isolation groups.
//!
//! The machine description (read once from the device tree) gives the GIC,
//! the PCI host bridges and the platform DMA masters; every host bridge is
//! enumerated through its ECAM with bus mastering left off on every
//! function; the result is paired into the policy's model by
//! `partitions::machine` (the code `cargo xtask check` runs on the host
//! too) and grouped. The boot table printed here is what the QEMU
//! scenarios check, and what `cargo xtask check --topology` reads back.

use alloc::vec::Vec;
use devicetree::discovery::{self, DEFAULT_SID_BITS};
use devicetree::{Machine, SmmuNode};
use partitions::groups::{self, GroupReason, Groups, NotIsolatableReason};
use partitions::topology::{self as model, DeviceRef};
use platform::pci::{self, ecam::EcamConfigSpace, HostTopology};
use platform::ExitCode;
use smmu::StreamId;

/// What discovery found, enumerated and decided.
#[allow(dead_code)] // read by the configuration and ownership steps as they are wired in
pub struct Discovered {
    /// The machine description (RAM, CPUs, SMMUs, GIC, ITSs, timer, host
    /// bridges, platform masters).
    pub machine: Machine,
    /// Enumeration results, one per `machine.devices.pci_hosts` entry.
    pub pci: Vec<HostTopology>,
    /// The policy's model of the machine (SMMU indices as in the SMMU list).
    pub topology: model::Topology,
    /// Isolation groups and the masters that cannot be isolated.
    pub groups: Groups,
}

#[allow(dead_code)] // used by the self-tests and the ownership work as they are wired in
impl Discovered {
    /// Configuration space of host bridge `host`.
    pub fn config_space(&self, host: usize) -> Option<EcamConfigSpace> {
        let h = self.machine.devices.pci_hosts.get(host)?;
        // SAFETY: `run` enumerated this host only after checking that its
        // ECAM window (from `reg`, sized for `bus_start..=bus_end`) lies in
        // the machine's MMIO regions, which boot identity-maps as Device memory.
        Some(unsafe { EcamConfigSpace::new(h.ecam.start, h.bus_start, h.bus_end) })
    }

    /// The first PCI function with this vendor:device, as (host, function).
    pub fn find_pci(&self, vendor: u16, device: u16) -> Option<(usize, &pci::Function)> {
        self.pci.iter().enumerate().find_map(|(h, t)| t.functions.iter().find(|f| f.vendor == vendor && f.device == device).map(|f| (h, f)))
    }

    /// The SMMU (index in the SMMU list) and StreamID a requester ID of
    /// host bridge `host` reaches.
    pub fn stream_id(&self, host: usize, rid: u16) -> Option<(usize, StreamId)> {
        let (smmu, sid) = self.machine.devices.pci_hosts.get(host)?.rid_to_sid(rid, DEFAULT_SID_BITS).ok()?;
        Some((smmu, StreamId(sid)))
    }
}

/// The device tree's devices cannot be read (boot.rs, as the machine
/// description is completed).
pub fn dt_err(e: devicetree::DtError) -> ExitCode {
    defmt::error!("cannot boot: discovery: {}", e);
    ExitCode::BadDeviceTree
}

/// Enumerates the machine's PCI host bridges, groups, and prints the boot
/// table.
pub fn run(machine: Machine) -> Result<Discovered, ExitCode> {
    let d = &machine.devices;
    if let Some(g) = &d.gic {
        defmt::info!("GICv3 {=str}: distributor {}, {=usize} redistributor region(s)", g.path.as_str(), g.distributor, g.redistributors.len());
    }
    for its in &d.its {
        defmt::info!("  ITS {=str} at {}", its.path.as_str(), its.regs);
    }

    let mut topologies = Vec::new();
    for h in &d.pci_hosts {
        if !machine.mmio.iter().any(|r| r.covers(&h.ecam)) {
            // Only windows the identity map holds may be touched.
            defmt::error!("cannot boot: PCI host {=str}: ECAM {} is not in the kernel's MMIO map", h.path.as_str(), h.ecam);
            return Err(ExitCode::PlatformError);
        }
        if h.bus_range_clamped {
            defmt::warn!("PCI host {=str}: bus-range reduced to the buses its ECAM window holds", h.path.as_str());
        }
        // SAFETY: `h.ecam` is the host bridge's ECAM window from its `reg`,
        // inside the machine's MMIO regions that boot identity-maps as
        // Device memory (checked above), and holds buses bus_start..=bus_end
        // (discovery reduced bus-range to the window's size).
        let mut cs = unsafe { EcamConfigSpace::new(h.ecam.start, h.bus_start, h.bus_end) };
        let t = pci::enumerate(&mut cs, h.bus_start, h.bus_end, &h.windows).map_err(|e| {
            defmt::error!("cannot boot: PCI host {=str}: {}", h.path.as_str(), e);
            ExitCode::PlatformError
        })?;
        print_host(h, &t);
        topologies.push(t);
    }

    let topology = partitions::machine::topology(&machine, &topologies);
    let groups = groups::compute(&topology);
    print_groups(&topology, &groups, &machine.smmus);
    Ok(Discovered { machine, pci: topologies, topology, groups })
}

fn print_host(h: &discovery::PciHost, t: &HostTopology) {
    defmt::info!(
        "PCI host {=str}: ECAM {}, buses {=u8:#04x}..={=u8:#04x}, {=usize} functions (bus master off on all)",
        h.path.as_str(),
        h.ecam,
        t.root_bus,
        t.last_bus,
        t.functions.len()
    );
    for f in &t.functions {
        defmt::info!(
            "  pci {} {=u16:04x}:{=u16:04x} class {=u32:06x} {}{=str}{=str}{=str}",
            f.bdf,
            f.vendor,
            f.device,
            f.class,
            f.kind,
            if f.multifunction { ", multifunction" } else { "" },
            if f.flr { ", FLR" } else { "" },
            [", INTA", ", INTB", ", INTC", ", INTD"].get(usize::from(f.interrupt_pin).wrapping_sub(1)).copied().unwrap_or("")
        );
        if let Some(b) = f.bridge {
            defmt::info!("    buses {=u8:02x}..={=u8:02x}", b.secondary, b.subordinate);
            if let Some(w) = b.mem {
                defmt::info!("    window {}", w);
            }
            if let Some(w) = b.pref {
                defmt::info!("    window {} prefetchable", w);
            }
        }
        if let Some(a) = f.acs {
            defmt::info!("    ACS capability {} control {}", a.cap, a.ctrl);
        }
        for b in &f.bars {
            defmt::info!(
                "    BAR{=u8} {} {=str}{=str}",
                b.index,
                b.range(),
                if b.is_64 { "64-bit" } else { "32-bit" },
                if b.prefetchable { " prefetchable" } else { "" }
            );
        }
        if f.io_bars != 0 {
            defmt::info!("    I/O BARs {=u8:#04x} not assigned", f.io_bars);
        }
    }
}

/// A device as the boot table names it: BDF and vendor:device, or DT path.
struct Dev<'a>(&'a model::Topology, DeviceRef);

impl defmt::Format for Dev<'_> {
    fn format(&self, f: defmt::Formatter) {
        if let Some(p) = self.0.pci(self.1) {
            defmt::write!(f, "{=u8:02x}:{=u8:02x}.{=u8} {=u16:04x}:{=u16:04x}", p.bdf.bus, p.bdf.dev, p.bdf.func, p.vendor, p.device);
        } else if let Some(p) = self.0.platform_device(self.1) {
            defmt::write!(f, "{=str}", p.path.as_str());
        } else {
            defmt::write!(f, "?");
        }
    }
}

struct Devs<'a>(&'a model::Topology, &'a [DeviceRef]);

impl defmt::Format for Devs<'_> {
    fn format(&self, f: defmt::Formatter) {
        for (i, d) in self.1.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{}", Dev(self.0, *d));
        }
    }
}

struct Sids<'a>(&'a [StreamId]);

impl defmt::Format for Sids<'_> {
    fn format(&self, f: defmt::Formatter) {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, " ");
            }
            defmt::write!(f, "{=u32:#x}", s.0);
        }
    }
}

struct Reasons<'a>(&'a [GroupReason]);

impl defmt::Format for Reasons<'_> {
    fn format(&self, f: defmt::Formatter) {
        if self.0.is_empty() {
            defmt::write!(f, "alone");
        }
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, ", ");
            }
            match r {
                GroupReason::IsolationGroup(n) => defmt::write!(f, "isolation-group {=u32}", n),
                r => defmt::write!(f, "{=str}", r.name()),
            }
        }
    }
}

/// The details of a non-isolatable reason.
struct Why<'a>(&'a model::Topology, NotIsolatableReason);

impl defmt::Format for Why<'_> {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=str}", self.1.name());
        match self.1 {
            NotIsolatableReason::RidNotCovered { rid } => defmt::write!(f, " (RID {=u32:#06x})", rid),
            NotIsolatableReason::MapTargetNotSmmu { rid, phandle } => {
                defmt::write!(f, " (RID {=u32:#06x}, phandle {=u32:#x})", rid, phandle)
            }
            NotIsolatableReason::IommusNotSmmu { phandle } => defmt::write!(f, " (phandle {=u32:#x})", phandle),
            NotIsolatableReason::SidTooLarge { sid, sid_bits, .. } => {
                defmt::write!(f, " (StreamID {=u64:#x}, SIDSIZE {=u8})", sid, sid_bits)
            }
            NotIsolatableReason::GroupedWith(d) => defmt::write!(f, " ({})", Dev(self.0, d)),
            _ => {}
        }
    }
}

fn print_groups(t: &model::Topology, g: &Groups, smmus: &[SmmuNode]) {
    defmt::info!("isolation groups: {=usize}", g.groups.len());
    for grp in &g.groups {
        let smmu = smmus.get(grp.smmu.0).map(|s| s.name.as_str()).unwrap_or("?");
        defmt::info!(
            "  group {=u32}: SMMU {=str}, StreamIDs {}, devices {}; reasons: {}",
            grp.id.0,
            smmu,
            Sids(&grp.stream_ids),
            Devs(t, &grp.devices),
            Reasons(&grp.reasons)
        );
    }
    defmt::info!("not isolatable: {=usize}", g.not_isolatable.len());
    for n in &g.not_isolatable {
        defmt::info!("  not isolatable: {}: {}", Dev(t, n.device), Why(t, n.reason));
    }
    for (path, n) in &g.unmatched_hints {
        defmt::warn!("{=str}: bulkhead,isolation-group = <{=u32}> names no PCI function found", path.as_str(), n);
    }
}
