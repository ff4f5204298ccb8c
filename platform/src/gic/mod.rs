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

mod regs;
#[cfg(test)]
mod tests;

pub use regs::*;

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
        let (rd, sgi) = unsafe { (&*(rd_base.0 as *const GicrRdRegisters), &*((rd_base.0 + FRAME_SIZE) as *const GicrSgiRegisters)) };
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

    /// Routes SPI `intid` to this CPU (IROUTER, affinity routing mode 0),
    /// disabled around the change (§12.9.22: changing the route of an
    /// enabled interrupt is UNPREDICTABLE) and enabled again if it was.
    /// Writes only that SPI's own registers, so CPUs may route different
    /// SPIs at once.
    pub fn route(&mut self, intid: u32) -> Result<(), GicError> {
        if self.check(intid)? != IntidKind::Spi {
            return Err(GicError::BadIntid { intid });
        }
        let was = self.is_enabled(intid)?;
        self.disable(intid)?;
        self.gicd.IROUTER[(intid - FIRST_SPI) as usize].set(self.mpidr);
        if was {
            self.enable(intid)?;
        }
        Ok(())
    }

    /// Takes SPI `intid` out of use: disabled, then its pending and
    /// active states cleared (an interrupt forwarded to a partition that
    /// will never deactivate it).
    pub fn retire(&mut self, intid: u32) -> Result<(), GicError> {
        if self.check(intid)? != IntidKind::Spi {
            return Err(GicError::BadIntid { intid });
        }
        self.disable(intid)?;
        let (i, m) = bit_position(intid);
        self.gicd.ICPENDR[i].set(m);
        self.gicd.ICACTIVER[i].set(m);
        Ok(())
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
