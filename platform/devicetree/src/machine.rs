//! The machine as its device tree describes it, read once into typed data:
//! RAM and what is reserved of it, the MMIO regions the kernel maps, the
//! console, the SMMUs, the CPUs, the GIC, the timer, the PCI host bridges
//! and the platform DMA masters. The MMU set-up, the memory map
//! ([`memmap::boot_map`](crate::memmap::boot_map)), discovery, the banner,
//! validation and the offline checker all take a [`Machine`]; none of them
//! goes back to the tree (configuration as data, made once).
//!
//! The boot makes it in two steps because of what it must do in between:
//!
//! 1. [`Machine::boot`], with the MMU off and no heap, from the tree the
//!    loader passed: what the identity map, the console and the heap's
//!    placement need (RAM, `/memreserve/`, `/reserved-memory`, the overlay
//!    blobs `/chosen` names, the MMIO regions, the console). The SMMUs come
//!    in as the boot read them first, before anything else, to stop their
//!    DMA. Fixed capacity: nothing here allocates.
//! 2. [`Machine::complete`], once the heap exists and the `/chosen`
//!    overlays are merged, from the merged tree: the CPUs, the
//!    `/reserved-memory` the overlays may have added, and discovery's
//!    devices (GIC, ITSs, timer, PCI host bridges, DMA masters), which the
//!    overlay's `bulkhead,*` properties annotate.
//!
//! [`Machine::read`] does both from one tree, as the offline checker does.
//!
//! Addresses are CPU physical addresses: every reader (the boot's and
//! discovery's) translates `reg` through every parent bus's `ranges`
//! (`dt::ranges`), so SMMUs, the GIC, PCI hosts, the console and DMA
//! masters may sit below `simple-bus`es as real SoCs put them.

use crate::addr::PhysRange;
use crate::discovery::{self, Discovery};
use crate::dt::{CpuNode, DeviceTree, DisabledSmmu, DtError, SmmuNode, Uart, MAX_CPUS, MAX_MMIO, MAX_SMMUS};
use crate::memmap::MAX_REGIONS;
use crate::overlay::{self, OverlayError, MAX_OVERLAYS};
use arrayvec::ArrayVec;
use core::fmt;

pub use crate::dt::{MAX_BANKS, MAX_RESERVED};

/// Why the machine cannot be read: the tree's fault either way (the kernel
/// stops with `cannot boot: {this}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A node or property the machine is made of is malformed or missing.
    Dt(DtError),
    /// `/chosen/bulkhead,overlays` is malformed.
    Overlay(OverlayError),
}

impl From<DtError> for ReadError {
    fn from(e: DtError) -> ReadError {
        ReadError::Dt(e)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Dt(e) => e.fmt(f),
            ReadError::Overlay(e) => e.fmt(f),
        }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for ReadError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The machine, as typed data.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// RAM banks: `reg` of the enabled `device_type = "memory"` nodes
    /// (empty when the tree leaves `/memory` to the bootloader).
    pub ram: ArrayVec<PhysRange, MAX_BANKS>,
    /// The header's memory reservations (`/memreserve/`). One more than
    /// the memory map holds is kept, so a list too long for it is refused
    /// there, as the map refuses any reservation too many.
    pub memreserve: ArrayVec<PhysRange, { MAX_REGIONS + 1 }>,
    /// Static `/reserved-memory` regions (after [`complete`], of the
    /// merged tree, where an overlay may have added some).
    ///
    /// [`complete`]: Machine::complete
    pub reserved: ArrayVec<PhysRange, MAX_RESERVED>,
    /// The overlay blobs `/chosen/bulkhead,overlays` names, in order, each
    /// inside one RAM bank.
    pub overlays: ArrayVec<PhysRange, MAX_OVERLAYS>,
    /// MMIO regions the identity map holds as Device memory.
    pub mmio: ArrayVec<PhysRange, MAX_MMIO>,
    /// The console `/chosen/stdout-path` names, if it is one the kernel
    /// drives (PL011, SBSA UART, 16550, LPUART).
    pub console: Option<Uart>,
    /// The enabled `arm,smmu-v3` nodes; discovery's SMMU indices are
    /// positions here.
    pub smmus: ArrayVec<SmmuNode, MAX_SMMUS>,
    /// The `arm,smmu-v3` nodes the tree disables (known after
    /// [`complete`]): never touched; masters behind them cannot be
    /// isolated.
    ///
    /// [`complete`]: Machine::complete
    pub disabled_smmus: ArrayVec<DisabledSmmu, MAX_SMMUS>,
    /// The enabled CPUs under `/cpus` (known after [`complete`]).
    ///
    /// [`complete`]: Machine::complete
    pub cpus: ArrayVec<CpuNode, MAX_CPUS>,
    /// GIC, ITSs, timer, PCI host bridges and DMA masters (known after
    /// [`complete`]).
    ///
    /// [`complete`]: Machine::complete
    pub devices: Discovery,
    /// The GIC SPIs of [`console`](Machine::console)'s node (known after
    /// [`complete`]): the kernel polls its console, but the lines are its
    /// device's, so no partition is given them.
    ///
    /// [`complete`]: Machine::complete
    pub console_spis: alloc::vec::Vec<crate::dt::Irq>,
}

impl Machine {
    /// What the boot needs before it has a heap, from `dt`, the tree the
    /// loader passed, with `smmus` as the boot read them (its first read of
    /// the tree). Allocates nothing; the errors come in the order the boot
    /// has always met them: `/memory`, the MMIO regions, the console,
    /// `/reserved-memory`, the `/chosen` overlays.
    pub fn boot(dt: &DeviceTree<'_>, smmus: ArrayVec<SmmuNode, MAX_SMMUS>) -> Result<Machine, ReadError> {
        let ram = dt.memory()?;
        let mmio = dt.mmio_regions()?;
        let console = dt.stdout_uart()?;
        let reserved = dt.reserved_memory()?;
        let overlays = overlay::chosen_overlays(dt, &ram).map_err(ReadError::Overlay)?;
        let mut memreserve = ArrayVec::new();
        for r in dt.memreserve().take(MAX_REGIONS + 1) {
            // Never full (at most its capacity are taken): no panic path.
            let _ = memreserve.try_push(r);
        }
        Ok(Machine {
            memreserve,
            ram,
            reserved,
            overlays,
            mmio,
            console,
            smmus,
            disabled_smmus: ArrayVec::new(),
            cpus: ArrayVec::new(),
            devices: Discovery::default(),
            console_spis: alloc::vec::Vec::new(),
        })
    }

    /// The rest, from `dt`, the tree the kernel configures from: the CPUs
    /// and discovery's devices, the console's SPIs, and `/reserved-memory` again when `merged`
    /// (overlays were merged into the tree [`boot`] read, and may have
    /// reserved more). A discovery error is [`Incomplete::Discovery`].
    ///
    /// [`boot`]: Machine::boot
    pub fn complete(&mut self, dt: &DeviceTree<'_>, merged: bool) -> Result<(), Incomplete> {
        if merged {
            self.reserved = dt.reserved_memory().map_err(Incomplete::Tree)?;
        }
        self.cpus = dt.cpus().map_err(Incomplete::Tree)?;
        self.disabled_smmus = dt.disabled_smmus().map_err(Incomplete::Tree)?;
        self.devices = discovery::discover(dt, &self.smmus).map_err(Incomplete::Discovery)?;
        if self.console.is_some() {
            self.console_spis = dt.stdout_spis().map_err(Incomplete::Tree)?;
        }
        Ok(())
    }

    /// Both steps from one tree, which is both the loader's and the one
    /// configured from (the offline checker's: its overlays are merged
    /// before anything is read).
    pub fn read(dt: &DeviceTree<'_>) -> Result<Machine, MachineError> {
        let smmus = dt.smmus().map_err(|e| MachineError::Read(e.into()))?;
        let mut m = Machine::boot(dt, smmus).map_err(MachineError::Read)?;
        m.complete(dt, false).map_err(MachineError::Incomplete)?;
        Ok(m)
    }
}

/// Why [`Machine::complete`] stopped: the tree (`cannot boot: {e}`) or
/// discovery (`cannot boot: discovery: {e}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// `/reserved-memory` or `/cpus`.
    Tree(DtError),
    /// Discovery of the devices.
    Discovery(DtError),
}

/// Why [`Machine::read`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineError {
    /// In [`Machine::boot`]'s part (or the SMMU nodes).
    Read(ReadError),
    /// In [`Machine::complete`]'s part.
    Incomplete(Incomplete),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysAddr;
    use crate::testutil::dtb;
    extern crate std;

    const BOARD: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/ { #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
        fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000>; no-map; }; };
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>; #iommu-cells = <1>; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; };
    dma@9100000 { reg = <0x0 0x9100000 0x0 0x1000>; iommus = <&smmu 0x42>; };
    chosen { stdout-path = "/pl011@9000000"; bulkhead,overlays = <0x0 0x44000000 0x0 0x1000>; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; reg = <1>; enable-method = "psci"; }; };
};"#;

    /// Each part of the machine is what the tree's own reader says of it.
    #[test]
    fn the_machine_is_what_the_tree_says() {
        let blob = dtb(BOARD);
        let dt = DeviceTree::parse(&blob).unwrap();
        let m = Machine::read(&dt).unwrap();
        assert_eq!(m.ram, dt.memory().unwrap());
        assert_eq!(m.memreserve.as_slice(), dt.memreserve().collect::<std::vec::Vec<_>>().as_slice());
        assert_eq!(m.reserved, dt.reserved_memory().unwrap());
        assert_eq!(m.overlays.as_slice(), [PhysRange::new(0x4400_0000, 0x1000).unwrap()]);
        assert_eq!(m.mmio, dt.mmio_regions().unwrap());
        assert_eq!(m.console, Some(Uart::pl011(PhysAddr(0x900_0000))));
        assert_eq!(m.smmus, dt.smmus().unwrap());
        assert_eq!(m.cpus, dt.cpus().unwrap());
        assert_eq!(m.devices, discovery::discover(&dt, &m.smmus).unwrap());
        assert_eq!(m.devices.masters[0].iommus[0].smmu, Some(0));
    }

    /// The boot's part reads nothing the merged tree could change; the
    /// rest comes from the merged tree, `/reserved-memory` only when
    /// overlays were merged.
    #[test]
    fn complete_reads_the_merged_tree() {
        let base = dtb(BOARD);
        let dt = DeviceTree::parse(&base).unwrap();
        let mut m = Machine::boot(&dt, dt.smmus().unwrap()).unwrap();
        assert!(m.cpus.is_empty() && m.devices == Discovery::default());
        let merged = dtb(&BOARD.replace("no-map; }; };", "no-map; }; more@58000000 { reg = <0x0 0x58000000 0x0 0x1000>; }; };"));
        let merged = DeviceTree::parse(&merged).unwrap();
        let mut unmerged = m.clone();
        unmerged.complete(&merged, false).unwrap();
        assert_eq!(unmerged.reserved.len(), 1, "not re-read without overlays");
        m.complete(&merged, true).unwrap();
        assert_eq!(m.reserved.len(), 2);
        assert_eq!(m.cpus.len(), 2);
        assert!(m.devices.gic.is_some());
    }

    /// Refusals keep the words (and the order) the boot has always shown.
    #[test]
    fn refusals_name_what_is_wrong() {
        let e = |edit: (&str, &str)| {
            let src = BOARD.replacen(edit.0, edit.1, 1);
            assert_ne!(src, BOARD, "edit {:?} did not apply", edit.0);
            let blob = dtb(&src);
            std::format!("{}", Machine::boot(&DeviceTree::parse(&blob).unwrap(), ArrayVec::new()).unwrap_err())
        };
        assert_eq!(
            e(("reg = <0x0 0x40000000 0x0 0x80000000>", "reg = <0x0 0x40000000 0x0>")),
            "node memory@40000000: property reg: length is not a multiple of the parent's (#address-cells + #size-cells)"
        );
        let chosen = e(("<0x0 0x44000000 0x0 0x1000>", "<0x0 0x44000000>"));
        assert!(chosen.contains("/chosen/bulkhead,overlays: 8 bytes"), "{chosen}");
        let blob = dtb(&BOARD.replace("reg = <1>; enable-method", "reg = <1 2>; enable-method"));
        let dt = DeviceTree::parse(&blob).unwrap();
        let mut m = Machine::boot(&dt, ArrayVec::new()).unwrap();
        assert!(matches!(m.complete(&dt, false), Err(Incomplete::Tree(DtError::BadProperty { prop: "reg", .. }))));
        let blob = dtb(&BOARD.replace("iommus = <&smmu 0x42>", "iommus = <&smmu>"));
        let dt = DeviceTree::parse(&blob).unwrap();
        let mut m = Machine::boot(&dt, dt.smmus().unwrap()).unwrap();
        assert!(matches!(m.complete(&dt, false), Err(Incomplete::Discovery(DtError::BadProperty { prop: "iommus", .. }))));
    }
}
