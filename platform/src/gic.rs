//! The GICv3 distributor and redistributors: register blocks, the encodings
//! of routing, trigger and priority fields, and the driver the kernel uses
//! at EL2 to take the SMMU's wired interrupts (and the EL2 timer's PPI) on
//! the boot CPU.
//!
//! Spec: Arm IHI 0069 ("GIC architecture specification, GICv3 and GICv4");
//! section numbers below are of issue H. Register and field names are the
//! spec's. The CPU interface is reached through system registers and lives
//! with the other instructions in `arch::irq`; everything here is MMIO and
//! compiles (and is tested against fake register memory) on the host.
//!
//! What the kernel relies on:
//! - affinity routing (ARE) is on, every interrupt it uses is Group 1
//!   Non-secure, SPIs are routed to one CPU by `GICD_IROUTER<n>`;
//! - bits 1 and 4 of `GICD_CTLR` mean "enable Group 1 (Non-secure)" and
//!   "affinity routing" both in the single-Security-state view (DS=1, QEMU
//!   `virt` without `secure=on`) and in the Non-secure view of a GIC with two
//!   Security states (EnableGrp1A, ARE_NS) — §12.9.4 — so one value works
//!   under either firmware arrangement;
//! - every wait on the hardware (RWP, ChildrenAsleep) is bounded and ends
//!   in a [`GicError`].

use crate::{PhysAddr, PhysRange};
use embedded_hal::delay::DelayNs;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

/// Size of one register frame (distributor, RD_base, SGI_base): 64 KiB (§12.1).
pub const FRAME_SIZE: u64 = 0x1_0000;
/// Redistributor stride of a GICv3 redistributor: RD_base + SGI_base (§12.10).
pub const GICV3_RD_STRIDE: u64 = 2 * FRAME_SIZE;
/// Redistributor stride when GICR_TYPER.VLPIS=1 (GICv4): two more frames,
/// VLPI_base and a reserved one (§12.10).
pub const GICV4_RD_STRIDE: u64 = 4 * FRAME_SIZE;
/// First INTID of the PPIs, SPIs and the special INTIDs (§2.2.1).
pub const FIRST_PPI: u32 = 16;
/// First SPI INTID.
pub const FIRST_SPI: u32 = 32;
/// INTIDs 1020..=1023 are special (1023: spurious, nothing pending) (§2.2.1).
pub const FIRST_SPECIAL: u32 = 1020;
/// The priority the kernel gives every interrupt it uses: mid-range, so it
/// survives however many priority bits are implemented (at least 4 with
/// one Security state, §4.8) and stays below the mask `arch::irq` sets.
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// How long a register-write-pending or wake-up wait may take.
pub const DEFAULT_TIMEOUT_US: u32 = 10_000;
/// `GICD_PIDR2.ArchRev` / `GICR_PIDR2.ArchRev` values the driver accepts:
/// GICv3 and GICv4 (§12.1.3, table 12-4).
const ARCH_REV_GICV3: u32 = 0x3;
const ARCH_REV_GICV4: u32 = 0x4;

register_bitfields! {u32,
    /// GICD_CTLR (§12.9.4). Named as in the one-Security-state view (DS=1);
    /// bits 1 and 4 are EnableGrp1A and ARE_NS in the Non-secure view of a
    /// GIC with two Security states — the same meaning for the kernel.
    pub GICD_CTLR [
        /// Enable Group 0 interrupts (DS=1 view; unused by the kernel).
        EnableGrp0 OFFSET(0) NUMBITS(1) [],
        /// Enable Group 1 interrupts (EnableGrp1A in the Non-secure view).
        EnableGrp1 OFFSET(1) NUMBITS(1) [],
        /// Affinity routing enable (ARE_NS in the Non-secure view).
        ARE OFFSET(4) NUMBITS(1) [],
        /// Disable Security: 1 = one Security state.
        DS OFFSET(6) NUMBITS(1) [],
        /// Register Write Pending: a CTLR or ICENABLER write still propagates.
        RWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICD_TYPER (§12.9.38).
    pub GICD_TYPER [
        /// SPIs: the largest SPI INTID is 32 × (ITLinesNumber + 1) − 1.
        ITLinesNumber OFFSET(0) NUMBITS(5) [],
        /// Extended SPI range implemented.
        ESPI OFFSET(8) NUMBITS(1) [],
        /// Two Security states are supported.
        SecurityExtn OFFSET(10) NUMBITS(1) [],
        /// LPIs supported.
        LPIS OFFSET(17) NUMBITS(1) [],
        /// INTID bits supported, minus one.
        IDbits OFFSET(19) NUMBITS(5) []
    ],
    /// GICD_PIDR2 / GICR_PIDR2 (§12.1.3): which architecture version.
    pub PIDR2 [
        /// 0x3 = GICv3, 0x4 = GICv4.
        ArchRev OFFSET(4) NUMBITS(4) []
    ],
    /// GICR_CTLR (§12.11.2).
    pub GICR_CTLR [
        /// LPIs enabled (the kernel uses none).
        EnableLPIs OFFSET(0) NUMBITS(1) [],
        /// Register Write Pending for GICR_ICENABLER0 writes.
        RWP OFFSET(3) NUMBITS(1) [],
        /// Upstream Write Pending.
        UWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICR_WAKER (§12.11.39): power management of the redistributor's CPU
    /// interface.
    pub GICR_WAKER [
        /// 1 = the CPU is asleep: the redistributor does not forward.
        ProcessorSleep OFFSET(1) NUMBITS(1) [],
        /// 1 = the interface to the CPU is quiescent (asleep).
        ChildrenAsleep OFFSET(2) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// `GICD_IROUTER<n>` (§12.9.22): where SPI n goes with affinity routing.
    pub GICD_IROUTER [
        /// Affinity level 0 of the target PE.
        Aff0 OFFSET(0) NUMBITS(8) [],
        /// Affinity level 1.
        Aff1 OFFSET(8) NUMBITS(8) [],
        /// Affinity level 2.
        Aff2 OFFSET(16) NUMBITS(8) [],
        /// 0 = to the PE named by the affinity; 1 = to any participating PE.
        Interrupt_Routing_Mode OFFSET(31) NUMBITS(1) [],
        /// Affinity level 3.
        Aff3 OFFSET(32) NUMBITS(8) []
    ],
    /// GICR_TYPER (§12.11.37).
    pub GICR_TYPER [
        /// Physical LPIs supported.
        PLPIS OFFSET(0) NUMBITS(1) [],
        /// Virtual LPIs supported: the redistributor has four frames.
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// The last redistributor of a contiguous region.
        Last OFFSET(4) NUMBITS(1) [],
        /// A unique number for the PE (ITS target, not the MPIDR).
        Processor_Number OFFSET(8) NUMBITS(16) [],
        /// Aff3.Aff2.Aff1.Aff0 of the PE this redistributor serves.
        Affinity_Value OFFSET(32) NUMBITS(32) []
    ]
}

register_structs! {
    #[allow(non_snake_case)] // field names are the spec's register names
    /// The distributor's frame (GICD_*, §12.9, table 12-25), SPIs only:
    /// with affinity routing the SGI/PPI copies of these registers are in
    /// each redistributor's SGI_base frame.
    pub GicdRegisters {
        (0x0000 => pub CTLR: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => pub TYPER: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => pub IIDR: ReadOnly<u32>),
        (0x000c => _reserved0),
        /// `GICD_IGROUPR<n>`: 1 = Group 1 (with IGRPMODR 0: Non-secure).
        (0x0080 => pub IGROUPR: [ReadWrite<u32>; 32]),
        /// `GICD_ISENABLER<n>`: write 1 to enable forwarding.
        (0x0100 => pub ISENABLER: [ReadWrite<u32>; 32]),
        /// `GICD_ICENABLER<n>`: write 1 to disable forwarding.
        (0x0180 => pub ICENABLER: [ReadWrite<u32>; 32]),
        /// `GICD_ISPENDR<n>`: write 1 to make pending.
        (0x0200 => pub ISPENDR: [ReadWrite<u32>; 32]),
        /// `GICD_ICPENDR<n>`: write 1 to clear pending.
        (0x0280 => pub ICPENDR: [ReadWrite<u32>; 32]),
        /// `GICD_ISACTIVER<n>`.
        (0x0300 => pub ISACTIVER: [ReadWrite<u32>; 32]),
        /// `GICD_ICACTIVER<n>`: write 1 to deactivate.
        (0x0380 => pub ICACTIVER: [ReadWrite<u32>; 32]),
        /// `GICD_IPRIORITYR<n>`: one priority byte per INTID (0..=1019).
        (0x0400 => pub IPRIORITYR: [ReadWrite<u32>; 255]),
        (0x07fc => _reserved1),
        /// `GICD_ICFGR<n>`: two bits per INTID, Int_config\[1\] = edge.
        (0x0c00 => pub ICFGR: [ReadWrite<u32>; 64]),
        /// `GICD_IGRPMODR<n>` (with two Security states: Secure Group 1).
        (0x0d00 => pub IGRPMODR: [ReadWrite<u32>; 32]),
        (0x0d80 => _reserved2),
        /// `GICD_IROUTER<n>` for n = 32..=1019 (index n − 32).
        (0x6100 => pub IROUTER: [ReadWrite<u64, GICD_IROUTER::Register>; 988]),
        (0x7fe0 => _reserved3),
        (0xffe8 => pub PIDR2: ReadOnly<u32, PIDR2::Register>),
        (0xffec => _reserved4),
        (0x10000 => @END),
    }
}

register_structs! {
    #[allow(non_snake_case)]
    /// A redistributor's RD_base frame (§12.10, table 12-27).
    pub GicrRdRegisters {
        (0x0000 => pub CTLR: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0004 => pub IIDR: ReadOnly<u32>),
        (0x0008 => pub TYPER: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => pub STATUSR: ReadWrite<u32>),
        (0x0014 => pub WAKER: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved0),
        (0xffe8 => pub PIDR2: ReadOnly<u32, PIDR2::Register>),
        (0xffec => _reserved1),
        (0x10000 => @END),
    }
}

register_structs! {
    #[allow(non_snake_case)]
    /// A redistributor's SGI_base frame (§12.10, table 12-29): the SGI and
    /// PPI (INTIDs 0..=31) copies of the distributor's per-INTID registers.
    pub GicrSgiRegisters {
        (0x0000 => _reserved0),
        (0x0080 => pub IGROUPR0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => pub ISENABLER0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => pub ICENABLER0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0200 => pub ISPENDR0: ReadWrite<u32>),
        (0x0204 => _reserved4),
        (0x0280 => pub ICPENDR0: ReadWrite<u32>),
        (0x0284 => _reserved5),
        (0x0300 => pub ISACTIVER0: ReadWrite<u32>),
        (0x0304 => _reserved6),
        (0x0380 => pub ICACTIVER0: ReadWrite<u32>),
        (0x0384 => _reserved7),
        /// `GICR_IPRIORITYR<n>`, n = 0..=7.
        (0x0400 => pub IPRIORITYR: [ReadWrite<u32>; 8]),
        (0x0420 => _reserved8),
        /// GICR_ICFGR0 (SGIs, read-only edge) and GICR_ICFGR1 (PPIs).
        (0x0c00 => pub ICFGR: [ReadWrite<u32>; 2]),
        (0x0c08 => _reserved9),
        (0x0d00 => pub IGRPMODR0: ReadWrite<u32>),
        (0x0d04 => _reserved10),
        (0x10000 => @END),
    }
}

/// Why the GIC could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum GicError {
    /// A register window is smaller than the frames it must hold.
    WindowTooSmall {
        /// The window's base.
        at: PhysAddr,
    },
    /// `PIDR2.ArchRev` says this is no GICv3/v4 distributor or redistributor.
    NotGicv3 {
        /// Where the frame was read.
        at: PhysAddr,
        /// The ArchRev found.
        arch_rev: u8,
    },
    /// No redistributor serves the CPU with this MPIDR affinity.
    NoRedistributor {
        /// Aff3..Aff0 of the CPU.
        mpidr: u64,
    },
    /// GICD_CTLR.RWP stayed set.
    DistributorTimeout,
    /// GICR_CTLR.RWP stayed set.
    RedistributorTimeout,
    /// GICR_WAKER.ChildrenAsleep stayed set after ProcessorSleep was cleared.
    WakeTimeout,
    /// The INTID is not one the driver configures (an SGI, beyond the
    /// implemented SPIs, or special).
    BadIntid {
        /// The INTID.
        intid: u32,
    },
    /// ICC_SRE_EL2.SRE reads 0: no system-register access to the CPU
    /// interface (a GICv2-style memory-mapped interface only).
    SystemRegistersDisabled,
}

/// How an interrupt signals (GICD_ICFGR Int_config\[1\], §12.9.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Trigger {
    /// Level-sensitive: pending while the line is asserted.
    Level,
    /// Edge-triggered: a rising edge latches the pending state.
    Edge,
}

impl Trigger {
    /// From a DT interrupt specifier's decoded trigger.
    pub const fn from_edge(edge: bool) -> Trigger {
        if edge {
            Trigger::Edge
        } else {
            Trigger::Level
        }
    }
}

/// The INTID ranges the driver distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntidKind {
    /// Software-generated, 0..=15.
    Sgi,
    /// Private peripheral, 16..=31: configured in the CPU's redistributor.
    Ppi,
    /// Shared peripheral, 32..=1019: configured in the distributor.
    Spi,
    /// 1020..=1023 and beyond.
    Special,
}

/// Which range `intid` is in.
pub const fn intid_kind(intid: u32) -> IntidKind {
    if intid < FIRST_PPI {
        IntidKind::Sgi
    } else if intid < FIRST_SPI {
        IntidKind::Ppi
    } else if intid < FIRST_SPECIAL {
        IntidKind::Spi
    } else {
        IntidKind::Special
    }
}

/// `GICD_IROUTER<n>` routing an SPI to the PE with affinity `mpidr`
/// (MPIDR_EL1 layout: Aff0 \[7:0\], Aff1 \[15:8\], Aff2 \[23:16\], Aff3 \[39:32\]),
/// Interrupt_Routing_Mode 0 (that PE only). IROUTER keeps the MPIDR layout
/// (§12.9.22), so the bits are copied, everything else cleared.
pub const fn irouter(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// The MPIDR-layout affinity of the PE a redistributor serves, from
/// GICR_TYPER.Affinity_Value (Aff3 \[63:56\], Aff2 \[55:48\], Aff1 \[47:40\],
/// Aff0 \[39:32\], §12.11.37).
pub const fn typer_affinity(typer: u64) -> u64 {
    let v = typer >> 32;
    let (aff0, aff1, aff2, aff3) = (v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >> 24) & 0xff);
    aff0 | (aff1 << 8) | (aff2 << 16) | (aff3 << 32)
}

/// (register index, bit mask) of `intid` in a one-bit-per-INTID register
/// array (IGROUPR, ISENABLER, ICENABLER, ISPENDR, ICPENDR, ISACTIVER, ICACTIVER).
pub const fn bit_position(intid: u32) -> (usize, u32) {
    ((intid / 32) as usize, 1 << (intid % 32))
}

/// (register index, mask of Int_config\[1\]) of `intid` in `GICD_ICFGR<n>` /
/// `GICR_ICFGR<n>`: 16 INTIDs per register, two bits each, the upper bit
/// selects edge (§12.9.10).
pub const fn icfgr_position(intid: u32) -> (usize, u32) {
    ((intid / 16) as usize, 1 << (2 * (intid % 16) + 1))
}

/// (register index, bit shift) of `intid`'s priority byte in
/// `GICD_IPRIORITYR<n>` / `GICR_IPRIORITYR<n>`: four INTIDs per register,
/// INTID 4n in bits \[7:0\] (§12.9.19).
pub const fn priority_position(intid: u32) -> (usize, u32) {
    ((intid / 4) as usize, 8 * (intid % 4))
}

/// The value of a 32-bit priority register after setting the byte at `shift`.
const fn with_priority(word: u32, shift: u32, priority: u8) -> u32 {
    (word & !(0xff << shift)) | ((priority as u32) << shift)
}

/// The value of an ICFGR register after setting `mask`'s Int_config\[1\].
const fn with_trigger(word: u32, mask: u32, trigger: Trigger) -> u32 {
    match trigger {
        Trigger::Edge => word | mask,
        Trigger::Level => word & !mask,
    }
}

/// One past the largest SPI INTID the distributor implements
/// (32 × (ITLinesNumber + 1), at most 1020; §12.9.38).
pub const fn spi_end(typer: u32) -> u32 {
    let lines = 32 * ((typer & 0x1f) + 1);
    if lines > FIRST_SPECIAL {
        FIRST_SPECIAL
    } else {
        lines
    }
}

/// Polls `done` every microsecond for up to `timeout_us`.
fn wait(delay: &mut impl DelayNs, timeout_us: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..=timeout_us {
        if done() {
            return true;
        }
        delay.delay_us(1);
    }
    done()
}

fn arch_rev_ok(rev: u32) -> bool {
    rev == ARCH_REV_GICV3 || rev == ARCH_REV_GICV4
}

/// Finds the redistributor of the PE with affinity `mpidr` in the
/// redistributor regions (the DT's `reg` entries after the distributor):
/// each region holds redistributors back to back, two frames each (four
/// with VLPIS), until one sets GICR_TYPER.Last (§12.10, §12.11.37). Returns
/// its RD_base.
///
/// # Safety
/// Each region must be the address of readable redistributor frames
/// (Device memory in the current translation regime) for its whole size.
pub unsafe fn find_redistributor(regions: &[PhysRange], mpidr: u64) -> Result<PhysAddr, GicError> {
    let mpidr = irouter(mpidr);
    for region in regions {
        let mut off = 0u64;
        // Stop at the region's end even without Last: frames beyond it are
        // not the region's (and on QEMU not even backed).
        while off + GICV3_RD_STRIDE <= region.size() {
            let at = PhysAddr(region.start.0 + off);
            // SAFETY: `at .. at + 128 KiB` lies inside the region, which the
            // caller guarantees is readable redistributor frames.
            let rd = unsafe { &*(at.0 as *const GicrRdRegisters) };
            let rev = rd.PIDR2.read(PIDR2::ArchRev);
            if !arch_rev_ok(rev) {
                return Err(GicError::NotGicv3 { at, arch_rev: rev as u8 });
            }
            let typer = rd.TYPER.extract();
            if typer_affinity(typer.get()) == mpidr {
                return Ok(at);
            }
            if typer.is_set(GICR_TYPER::Last) {
                break;
            }
            off += if typer.is_set(GICR_TYPER::VLPIS) { GICV4_RD_STRIDE } else { GICV3_RD_STRIDE };
        }
    }
    Err(GicError::NoRedistributor { mpidr })
}

/// The distributor and the boot CPU's redistributor.
///
/// Only the CPU whose redistributor this is may configure PPIs through it;
/// SPIs are routed to that CPU. One owner (`&mut self`) makes every
/// read-modify-write of a shared register (priorities, ICFGR) exclusive.
pub struct Gic<'a, D: DelayNs> {
    gicd: &'a GicdRegisters,
    rd: &'a GicrRdRegisters,
    sgi: &'a GicrSgiRegisters,
    distributor: PhysAddr,
    redistributor: PhysAddr,
    mpidr: u64,
    spi_end: u32,
    delay: D,
    timeout_us: u32,
}

impl<'a, D: DelayNs> Gic<'a, D> {
    /// Finds the redistributor of the CPU with affinity `mpidr` and checks
    /// both blocks are GICv3/v4. Touches no writable register.
    ///
    /// # Safety
    /// `distributor` and every `redistributors` region must be the GIC's
    /// register windows from the DT, mapped as Device memory (identity) for
    /// `'a`, and nothing else may program the distributor or this
    /// redistributor while the returned value lives.
    pub unsafe fn new(distributor: PhysRange, redistributors: &[PhysRange], mpidr: u64, delay: D) -> Result<Self, GicError> {
        if distributor.size() < FRAME_SIZE {
            return Err(GicError::WindowTooSmall { at: distributor.start });
        }
        // SAFETY: a 64 KiB distributor frame at `distributor` (checked size),
        // valid for 'a by the caller.
        let gicd = unsafe { &*(distributor.start.0 as *const GicdRegisters) };
        let rev = gicd.PIDR2.read(PIDR2::ArchRev);
        if !arch_rev_ok(rev) {
            return Err(GicError::NotGicv3 { at: distributor.start, arch_rev: rev as u8 });
        }
        // SAFETY: the regions are the redistributor windows (caller).
        let rd_base = unsafe { find_redistributor(redistributors, mpidr)? };
        // SAFETY: `find_redistributor` returned the RD_base of a
        // redistributor lying wholly (both frames) inside a region.
        let (rd, sgi) = unsafe {
            (&*(rd_base.0 as *const GicrRdRegisters), &*((rd_base.0 + FRAME_SIZE) as *const GicrSgiRegisters))
        };
        Ok(Gic {
            gicd,
            rd,
            sgi,
            distributor: distributor.start,
            redistributor: rd_base,
            mpidr: irouter(mpidr),
            spi_end: spi_end(gicd.TYPER.get()),
            delay,
            timeout_us: DEFAULT_TIMEOUT_US,
        })
    }

    /// The distributor's base.
    pub fn distributor(&self) -> PhysAddr {
        self.distributor
    }

    /// RD_base of the redistributor in use.
    pub fn redistributor(&self) -> PhysAddr {
        self.redistributor
    }

    /// One past the largest implemented SPI INTID.
    pub fn spi_end(&self) -> u32 {
        self.spi_end
    }

    /// The distributor has one Security state (GICD_CTLR.DS).
    pub fn single_security_state(&self) -> bool {
        self.gicd.CTLR.is_set(GICD_CTLR::DS)
    }

    fn wait_gicd_rwp(&mut self) -> Result<(), GicError> {
        let gicd = self.gicd;
        if wait(&mut self.delay, self.timeout_us, || !gicd.CTLR.is_set(GICD_CTLR::RWP)) {
            Ok(())
        } else {
            Err(GicError::DistributorTimeout)
        }
    }

    fn wait_gicr_rwp(&mut self) -> Result<(), GicError> {
        let rd = self.rd;
        if wait(&mut self.delay, self.timeout_us, || !rd.CTLR.is_set(GICR_CTLR::RWP)) {
            Ok(())
        } else {
            Err(GicError::RedistributorTimeout)
        }
    }

    /// Distributor and redistributor set-up: every interrupt disabled,
    /// not pending, not active, Group 1, [`DEFAULT_PRIORITY`], SPIs routed
    /// to this CPU; affinity routing and Group 1 on; the redistributor
    /// awake. Nothing is forwarded until [`Gic::enable`].
    pub fn init(&mut self) -> Result<(), GicError> {
        self.init_distributor()?;
        self.init_redistributor()
    }

    /// The distributor half of [`Gic::init`] (§4.1 "Distributor" set-up,
    /// as in the spec's example initialisation sequence).
    pub fn init_distributor(&mut self) -> Result<(), GicError> {
        let gicd = self.gicd;
        // Group enables off while the groups change; ARE is kept: a 1 → 0
        // change of ARE is UNPREDICTABLE (§12.9.4).
        let are = gicd.CTLR.read(GICD_CTLR::ARE);
        gicd.CTLR.write(GICD_CTLR::ARE.val(are));
        self.wait_gicd_rwp()?;
        // Rounded up: bits of INTIDs 1020..=1023 in the last word are RES0/WI.
        let words = self.spi_end.div_ceil(32) as usize;
        for i in (FIRST_SPI / 32) as usize..words {
            gicd.ICENABLER[i].set(u32::MAX);
            gicd.ICPENDR[i].set(u32::MAX);
            gicd.ICACTIVER[i].set(u32::MAX);
            gicd.IGROUPR[i].set(u32::MAX);
            gicd.IGRPMODR[i].set(0);
        }
        self.wait_gicd_rwp()?;
        let p = u32::from(DEFAULT_PRIORITY) * 0x0101_0101;
        for i in (FIRST_SPI / 4) as usize..(self.spi_end / 4) as usize {
            gicd.IPRIORITYR[i].set(p);
        }
        for intid in FIRST_SPI..self.spi_end {
            gicd.IROUTER[(intid - FIRST_SPI) as usize].set(self.mpidr);
        }
        gicd.CTLR.write(GICD_CTLR::ARE::SET + GICD_CTLR::EnableGrp1::SET);
        self.wait_gicd_rwp()
    }

    /// The redistributor half of [`Gic::init`]: wake it (§12.11.39:
    /// ProcessorSleep = 0, then wait for ChildrenAsleep = 0) and put its
    /// SGIs and PPIs in a known state.
    pub fn init_redistributor(&mut self) -> Result<(), GicError> {
        let rd = self.rd;
        rd.WAKER.modify(GICR_WAKER::ProcessorSleep::CLEAR);
        if !wait(&mut self.delay, self.timeout_us, || !rd.WAKER.is_set(GICR_WAKER::ChildrenAsleep)) {
            return Err(GicError::WakeTimeout);
        }
        let sgi = self.sgi;
        sgi.ICENABLER0.set(u32::MAX);
        sgi.ICPENDR0.set(u32::MAX);
        sgi.ICACTIVER0.set(u32::MAX);
        sgi.IGROUPR0.set(u32::MAX);
        sgi.IGRPMODR0.set(0);
        self.wait_gicr_rwp()?;
        let p = u32::from(DEFAULT_PRIORITY) * 0x0101_0101;
        for r in &sgi.IPRIORITYR {
            r.set(p);
        }
        Ok(())
    }

    fn check(&self, intid: u32) -> Result<IntidKind, GicError> {
        match intid_kind(intid) {
            IntidKind::Ppi => Ok(IntidKind::Ppi),
            IntidKind::Spi if intid < self.spi_end => Ok(IntidKind::Spi),
            _ => Err(GicError::BadIntid { intid }),
        }
    }

    /// Configures a PPI or SPI, leaving it disabled: trigger (ICFGR),
    /// `priority`, Group 1 and, for an SPI, routed to this CPU (IROUTER,
    /// affinity routing mode 0). Changing ICFGR or routing of an enabled
    /// interrupt is UNPREDICTABLE (§12.9.10), so it is disabled first.
    pub fn configure(&mut self, intid: u32, trigger: Trigger, priority: u8) -> Result<(), GicError> {
        let kind = self.check(intid)?;
        self.disable(intid)?;
        let (bi, bm) = bit_position(intid);
        let (ci, cm) = icfgr_position(intid);
        let (pi, ps) = priority_position(intid);
        match kind {
            IntidKind::Ppi => {
                let sgi = self.sgi;
                sgi.IGROUPR0.set(sgi.IGROUPR0.get() | bm);
                sgi.IGRPMODR0.set(sgi.IGRPMODR0.get() & !bm);
                // PPI trigger bits may be read-only (IMPLEMENTATION DEFINED,
                // §12.11.8): the write is harmless then.
                sgi.ICFGR[ci].set(with_trigger(sgi.ICFGR[ci].get(), cm, trigger));
                sgi.IPRIORITYR[pi].set(with_priority(sgi.IPRIORITYR[pi].get(), ps, priority));
            }
            _ => {
                let gicd = self.gicd;
                gicd.IGROUPR[bi].set(gicd.IGROUPR[bi].get() | bm);
                gicd.IGRPMODR[bi].set(gicd.IGRPMODR[bi].get() & !bm);
                gicd.ICFGR[ci].set(with_trigger(gicd.ICFGR[ci].get(), cm, trigger));
                gicd.IPRIORITYR[pi].set(with_priority(gicd.IPRIORITYR[pi].get(), ps, priority));
                gicd.IROUTER[(intid - FIRST_SPI) as usize].set(self.mpidr);
            }
        }
        Ok(())
    }

    /// Lets SGI `intid` (0..16) of this CPU be forwarded (GICR_ISENABLER0;
    /// SGIs are always edge-triggered, Group 1 from `init_redistributor`).
    pub fn enable_sgi(&mut self, intid: u32) -> Result<(), GicError> {
        if intid >= FIRST_PPI {
            return Err(GicError::BadIntid { intid });
        }
        self.sgi.ISENABLER0.set(1 << intid);
        Ok(())
    }

    /// Lets the interrupt be forwarded (ISENABLER).
    pub fn enable(&mut self, intid: u32) -> Result<(), GicError> {
        let (i, m) = bit_position(intid);
        match self.check(intid)? {
            IntidKind::Ppi => self.sgi.ISENABLER0.set(m),
            _ => self.gicd.ISENABLER[i].set(m),
        }
        Ok(())
    }

    /// Stops forwarding the interrupt (ICENABLER) and waits until that has
    /// taken effect (RWP, §12.9.4 / §12.11.2).
    pub fn disable(&mut self, intid: u32) -> Result<(), GicError> {
        let (i, m) = bit_position(intid);
        match self.check(intid)? {
            IntidKind::Ppi => {
                self.sgi.ICENABLER0.set(m);
                self.wait_gicr_rwp()
            }
            _ => {
                self.gicd.ICENABLER[i].set(m);
                self.wait_gicd_rwp()
            }
        }
    }

    /// Whether the interrupt is forwarded.
    pub fn is_enabled(&self, intid: u32) -> Result<bool, GicError> {
        let (i, m) = bit_position(intid);
        Ok(match self.check(intid)? {
            IntidKind::Ppi => self.sgi.ISENABLER0.get() & m != 0,
            _ => self.gicd.ISENABLER[i].get() & m != 0,
        })
    }

    /// Whether the interrupt is pending.
    pub fn is_pending(&self, intid: u32) -> Result<bool, GicError> {
        let (i, m) = bit_position(intid);
        Ok(match self.check(intid)? {
            IntidKind::Ppi => self.sgi.ISPENDR0.get() & m != 0,
            _ => self.gicd.ISPENDR[i].get() & m != 0,
        })
    }

    /// Clears a latched pending state (an edge seen while disabled).
    pub fn clear_pending(&mut self, intid: u32) -> Result<(), GicError> {
        let (i, m) = bit_position(intid);
        match self.check(intid)? {
            IntidKind::Ppi => self.sgi.ICPENDR0.set(m),
            _ => self.gicd.ICPENDR[i].set(m),
        }
        Ok(())
    }
}

#[cfg(target_os = "none")]
pub use crate::arch::irq::{acknowledge, end_of_interrupt};

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use core::cell::Cell;
    use std::vec::Vec;

    /// A delay that only counts: fake registers never change by themselves.
    #[derive(Default)]
    struct Count(u64);
    impl DelayNs for Count {
        fn delay_ns(&mut self, ns: u32) {
            self.0 += u64::from(ns);
        }
    }

    /// 64-bit-aligned fake register memory of `bytes` bytes. Cells: the
    /// test writes it while the driver holds references into it.
    struct Fake(Vec<Cell<u64>>);
    impl Fake {
        fn new(bytes: u64) -> Fake {
            Fake((0..bytes / 8).map(|_| Cell::new(0)).collect())
        }
        fn base(&self) -> u64 {
            self.0.as_ptr() as u64
        }
        fn range(&self) -> PhysRange {
            PhysRange::new(self.base(), self.0.len() as u64 * 8).unwrap()
        }
        fn w32(&self, off: u64, v: u32) {
            let word = &self.0[(off / 8) as usize];
            let shift = 8 * (off % 8);
            word.set((word.get() & !(0xffff_ffff << shift)) | (u64::from(v) << shift));
        }
        fn r32(&self, off: u64) -> u32 {
            (self.0[(off / 8) as usize].get() >> (8 * (off % 8))) as u32
        }
        fn w64(&self, off: u64, v: u64) {
            self.0[(off / 8) as usize].set(v);
        }
        fn r64(&self, off: u64) -> u64 {
            self.0[(off / 8) as usize].get()
        }
    }

    const PIDR2_OFF: u64 = 0xffe8;
    const PIDR2_GICV3: u32 = 0x3b;
    const TYPER_LAST: u64 = 1 << 4;
    const TYPER_VLPIS: u64 = 1 << 1;

    /// Affinity_Value of GICR_TYPER for `mpidr` (written here from the spec's
    /// field list, not with `typer_affinity`).
    fn typer_for(aff3: u64, aff2: u64, aff1: u64, aff0: u64) -> u64 {
        (aff3 << 56) | (aff2 << 48) | (aff1 << 40) | (aff0 << 32)
    }

    /// A redistributor region with one frame pair per `(typer, stride)`.
    fn region(frames: &[(u64, u64)], size: u64) -> Fake {
        let f = Fake::new(size);
        let mut off = 0;
        for &(typer, stride) in frames {
            f.w32(off + PIDR2_OFF, PIDR2_GICV3);
            f.w64(off + 0x8, typer);
            off += stride;
        }
        f
    }

    #[test]
    fn register_offsets_match_the_spec() {
        use core::mem::{offset_of, size_of};
        assert_eq!(offset_of!(GicdRegisters, IGROUPR), 0x80);
        assert_eq!(offset_of!(GicdRegisters, ICENABLER), 0x180);
        assert_eq!(offset_of!(GicdRegisters, IPRIORITYR), 0x400);
        assert_eq!(offset_of!(GicdRegisters, ICFGR), 0xc00);
        assert_eq!(offset_of!(GicdRegisters, IGRPMODR), 0xd00);
        // IROUTER<n> is at 0x6000 + 8n, and n starts at 32.
        assert_eq!(offset_of!(GicdRegisters, IROUTER), 0x6000 + 8 * 32);
        assert_eq!(offset_of!(GicdRegisters, PIDR2), 0xffe8);
        assert_eq!(size_of::<GicdRegisters>() as u64, FRAME_SIZE);
        assert_eq!(offset_of!(GicrRdRegisters, WAKER), 0x14);
        assert_eq!(offset_of!(GicrRdRegisters, TYPER), 0x8);
        assert_eq!(size_of::<GicrRdRegisters>() as u64, FRAME_SIZE);
        assert_eq!(offset_of!(GicrSgiRegisters, ISENABLER0), 0x100);
        assert_eq!(offset_of!(GicrSgiRegisters, ICFGR), 0xc00);
        assert_eq!(size_of::<GicrSgiRegisters>() as u64, FRAME_SIZE);
    }

    #[test]
    fn irouter_takes_the_four_affinity_levels_and_mode_0() {
        // MPIDR_EL1 with U (bit 30), MT (bit 24) and RES1 (bit 31) set: only
        // Aff3..Aff0 may reach IROUTER; bit 31 would be "any PE".
        let mpidr = (0x12 << 32) | (1 << 31) | (1 << 30) | (1 << 24) | (0x34 << 16) | (0x56 << 8) | 0x78;
        let r = irouter(mpidr);
        assert_eq!(r, 0x12_0034_5678);
        let reg = tock_registers::LocalRegisterCopy::<u64, GICD_IROUTER::Register>::new(r);
        assert_eq!(reg.read(GICD_IROUTER::Aff0), 0x78);
        assert_eq!(reg.read(GICD_IROUTER::Aff1), 0x56);
        assert_eq!(reg.read(GICD_IROUTER::Aff2), 0x34);
        assert_eq!(reg.read(GICD_IROUTER::Aff3), 0x12);
        assert_eq!(reg.read(GICD_IROUTER::Interrupt_Routing_Mode), 0);
        assert_eq!(irouter(0), 0);
    }

    #[test]
    fn typer_affinity_is_mpidr_layout() {
        assert_eq!(typer_affinity(typer_for(0x12, 0x34, 0x56, 0x78) | TYPER_LAST | 0xffff_ff00), 0x12_0034_5678);
        assert_eq!(typer_affinity(typer_for(0, 0, 0, 3)), 3);
        assert_eq!(typer_affinity(typer_for(0, 0, 1, 0)), 0x100);
    }

    #[test]
    fn one_bit_per_intid_positions() {
        assert_eq!(bit_position(0), (0, 1));
        assert_eq!(bit_position(26), (0, 1 << 26));
        assert_eq!(bit_position(106), (3, 1 << 10));
        assert_eq!(bit_position(109), (3, 1 << 13));
        assert_eq!(bit_position(1019), (31, 1 << 27));
    }

    #[test]
    fn icfgr_edge_bit_is_the_upper_of_two() {
        // INTID 106 = ICFGR6, field [21:20], Int_config[1] = bit 21.
        assert_eq!(icfgr_position(106), (6, 1 << 21));
        assert_eq!(icfgr_position(109), (6, 1 << 27));
        // PPI 26 = ICFGR1 field [21:20].
        assert_eq!(icfgr_position(26), (1, 1 << 21));
        assert_eq!(icfgr_position(32), (2, 1 << 1));
        assert_eq!(icfgr_position(47), (2, 1 << 31));
        assert_eq!(with_trigger(0, 1 << 21, Trigger::Edge), 1 << 21);
        assert_eq!(with_trigger(u32::MAX, 1 << 21, Trigger::Level), !(1 << 21));
    }

    #[test]
    fn priority_bytes() {
        assert_eq!(priority_position(106), (26, 16));
        assert_eq!(priority_position(26), (6, 16));
        assert_eq!(priority_position(32), (8, 0));
        assert_eq!(priority_position(35), (8, 24));
        assert_eq!(with_priority(0x1122_3344, 16, 0xa0), 0x11a0_3344);
        assert_eq!(with_priority(0, 24, 0xff), 0xff00_0000);
    }

    #[test]
    fn spi_count_from_typer() {
        assert_eq!(spi_end(0), 32); // ITLinesNumber 0: no SPIs at all
        assert_eq!(spi_end(8), 288); // QEMU virt: 256 SPIs
        assert_eq!(spi_end(31), 1020); // capped below the special INTIDs
        assert_eq!(intid_kind(15), IntidKind::Sgi);
        assert_eq!(intid_kind(26), IntidKind::Ppi);
        assert_eq!(intid_kind(106), IntidKind::Spi);
        assert_eq!(intid_kind(1023), IntidKind::Special);
    }

    #[test]
    fn finds_the_redistributor_by_affinity_walking_to_last() {
        let cpus: Vec<(u64, u64)> = (0..4).map(|i| (typer_for(0, 0, 0, i) | if i == 3 { TYPER_LAST } else { 0 }, GICV3_RD_STRIDE)).collect();
        let r = region(&cpus, 8 * GICV3_RD_STRIDE);
        for i in 0..4 {
            // SAFETY: fake memory covering the whole region.
            let at = unsafe { find_redistributor(&[r.range()], i) }.unwrap();
            assert_eq!(at.0, r.base() + i * GICV3_RD_STRIDE);
        }
        // Frames after Last are not read: one there that would match is
        // ignored (the region is larger than the populated part, as on QEMU).
        let r2 = region(&cpus, 8 * GICV3_RD_STRIDE);
        r2.w32(4 * GICV3_RD_STRIDE + PIDR2_OFF, PIDR2_GICV3);
        r2.w64(4 * GICV3_RD_STRIDE + 8, typer_for(0, 0, 0, 4));
        // SAFETY: as above.
        assert_eq!(unsafe { find_redistributor(&[r2.range()], 4) }, Err(GicError::NoRedistributor { mpidr: 4 }));
    }

    #[test]
    fn vlpis_doubles_the_stride_and_regions_are_searched_in_turn() {
        let a = region(&[(typer_for(0, 0, 0, 0) | TYPER_VLPIS, GICV4_RD_STRIDE), (typer_for(0, 0, 0, 1) | TYPER_VLPIS | TYPER_LAST, GICV4_RD_STRIDE)], 2 * GICV4_RD_STRIDE);
        let b = region(&[(typer_for(0, 0, 1, 0), GICV3_RD_STRIDE), (typer_for(0, 0, 1, 1) | TYPER_LAST, GICV3_RD_STRIDE)], 2 * GICV3_RD_STRIDE);
        let regions = [a.range(), b.range()];
        // SAFETY: fake memory covering both regions.
        unsafe {
            assert_eq!(find_redistributor(&regions, 1).unwrap().0, a.base() + GICV4_RD_STRIDE);
            assert_eq!(find_redistributor(&regions, 0x101).unwrap().0, b.base() + GICV3_RD_STRIDE);
            // MPIDR bits outside Aff3..Aff0 (U, MT, RES1) do not matter.
            assert_eq!(find_redistributor(&regions, 0x8000_0100).unwrap().0, b.base());
            assert_eq!(find_redistributor(&regions, 0x2), Err(GicError::NoRedistributor { mpidr: 2 }));
        }
    }

    #[test]
    fn a_region_without_last_ends_at_its_size_and_a_foreign_frame_is_refused() {
        let r = region(&[(typer_for(0, 0, 0, 0), GICV3_RD_STRIDE)], GICV3_RD_STRIDE + FRAME_SIZE);
        // SAFETY: fake memory; the walk must not read past the region.
        assert_eq!(unsafe { find_redistributor(&[r.range()], 1) }, Err(GicError::NoRedistributor { mpidr: 1 }));
        let bad = region(&[(typer_for(0, 0, 0, 0), GICV3_RD_STRIDE)], 2 * GICV3_RD_STRIDE);
        bad.w32(PIDR2_OFF, 0x2b); // GICv2
        // SAFETY: fake memory.
        let found = unsafe { find_redistributor(&[bad.range()], 0) };
        assert_eq!(found, Err(GicError::NotGicv3 { at: PhysAddr(bad.base()), arch_rev: 2 }));
    }

    /// A distributor with 256 SPIs (QEMU virt) and a one-CPU region.
    fn machine() -> (Fake, Fake) {
        let d = Fake::new(FRAME_SIZE);
        d.w32(PIDR2_OFF, PIDR2_GICV3);
        d.w32(0x4, 8); // TYPER.ITLinesNumber
        d.w32(0x0, 1 << 6); // DS
        let r = region(&[(typer_for(0, 0, 0, 0) | TYPER_LAST, GICV3_RD_STRIDE)], GICV3_RD_STRIDE);
        r.w32(0x14, 0b110); // asleep
        (d, r)
    }

    #[test]
    fn init_and_configure_write_the_expected_registers() {
        let (d, r) = machine();
        r.w32(0x14, 0b010); // ProcessorSleep set, children already awake
        // SAFETY: fake memory of the right sizes, alive for the test.
        let mut gic = unsafe { Gic::new(d.range(), &[r.range()], 0, Count::default()) }.unwrap();
        assert_eq!(gic.spi_end(), 288);
        assert!(gic.single_security_state());
        gic.init().unwrap();
        assert_eq!(d.r32(0x0) & 0b1_0011, 0b1_0010, "ARE and EnableGrp1, not Group 0");
        assert_eq!(r.r32(0x14) & 0b10, 0, "ProcessorSleep cleared");
        assert_eq!(d.r32(0x80 + 4 * 3), u32::MAX, "SPIs in Group 1");
        assert_eq!(d.r32(0x400 + 4 * 26), 0xa0a0_a0a0);
        assert_eq!(d.r64(0x6000 + 8 * 287), 0);

        gic.configure(106, Trigger::Edge, 0x80).unwrap();
        gic.configure(26, Trigger::Level, 0x90).unwrap();
        assert_eq!(d.r32(0x180 + 4 * 3), 1 << 10, "disabled before the change");
        assert_eq!(d.r32(0xc00 + 4 * 6), 1 << 21, "INTID 106 edge");
        assert_eq!(d.r32(0x400 + 4 * 26), 0xa080_a0a0, "INTID 106 priority byte 2");
        assert_eq!(r.r32(FRAME_SIZE + 0x400 + 4 * 6), 0xa090_a0a0, "PPI 26 priority");
        assert_eq!(r.r32(FRAME_SIZE + 0xc04) & (1 << 21), 0, "PPI 26 level");
        gic.enable(106).unwrap();
        gic.enable(26).unwrap();
        assert_eq!(d.r32(0x100 + 4 * 3), 1 << 10);
        assert_eq!(r.r32(FRAME_SIZE + 0x100), 1 << 26);
        assert_eq!(gic.configure(5, Trigger::Edge, 0), Err(GicError::BadIntid { intid: 5 }));
        assert_eq!(gic.enable(288), Err(GicError::BadIntid { intid: 288 }));
        assert_eq!(gic.enable(1023), Err(GicError::BadIntid { intid: 1023 }));
    }

    #[test]
    fn routing_goes_to_the_cpu_the_gic_was_made_for() {
        let d = Fake::new(FRAME_SIZE);
        d.w32(PIDR2_OFF, PIDR2_GICV3);
        d.w32(0x4, 8);
        let r = region(&[(typer_for(0, 0, 0, 0), GICV3_RD_STRIDE), (typer_for(1, 0, 2, 3) | TYPER_LAST, GICV3_RD_STRIDE)], 2 * GICV3_RD_STRIDE);
        // SAFETY: fake memory.
        let mut gic = unsafe { Gic::new(d.range(), &[r.range()], 0x1_0000_0203, Count::default()) }.unwrap();
        assert_eq!(gic.redistributor().0, r.base() + GICV3_RD_STRIDE);
        gic.configure(106, Trigger::Edge, DEFAULT_PRIORITY).unwrap();
        assert_eq!(d.r64(0x6000 + 8 * 106), 0x1_0000_0203);
    }

    #[test]
    fn waits_are_bounded() {
        let (d, r) = machine();
        // SAFETY: fake memory.
        let mut gic = unsafe { Gic::new(d.range(), &[r.range()], 0, Count::default()) }.unwrap();
        assert_eq!(gic.init_redistributor(), Err(GicError::WakeTimeout), "ChildrenAsleep never clears");
        assert!(gic.delay.0 >= u64::from(DEFAULT_TIMEOUT_US) * 1000);
        // RWP stuck in both CTLRs (plain memory: nothing clears it).
        d.w32(0x0, 1 << 31);
        r.w32(0x0, 1 << 3);
        // SAFETY: fake memory.
        let mut gic = unsafe { Gic::new(d.range(), &[r.range()], 0, Count::default()) }.unwrap();
        assert_eq!(gic.disable(106), Err(GicError::DistributorTimeout));
        assert_eq!(gic.configure(106, Trigger::Edge, 0), Err(GicError::DistributorTimeout));
        assert_eq!(gic.disable(26), Err(GicError::RedistributorTimeout));
        assert!(gic.delay.0 >= 3 * u64::from(DEFAULT_TIMEOUT_US) * 1000);
    }

    #[test]
    fn refuses_what_is_not_a_gicv3() {
        let (d, r) = machine();
        d.w32(PIDR2_OFF, 0x2b);
        // SAFETY: fake memory.
        let e = unsafe { Gic::new(d.range(), &[r.range()], 0, Count::default()) }.err();
        assert_eq!(e, Some(GicError::NotGicv3 { at: PhysAddr(d.base()), arch_rev: 2 }));
        let small = PhysRange::new(d.base(), 0x1000).unwrap();
        // SAFETY: fake memory (the size check comes first).
        let e = unsafe { Gic::new(small, &[r.range()], 0, Count::default()) }.err();
        assert_eq!(e, Some(GicError::WindowTooSmall { at: PhysAddr(d.base()) }));
    }
}
