//! The GIC driver against fake register memory.

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
    let a = region(
        &[(typer_for(0, 0, 0, 0) | TYPER_VLPIS, GICV4_RD_STRIDE), (typer_for(0, 0, 0, 1) | TYPER_VLPIS | TYPER_LAST, GICV4_RD_STRIDE)],
        2 * GICV4_RD_STRIDE,
    );
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
    // Moved to this CPU while enabled: disabled around it, enabled again;
    // a disabled one stays disabled.
    d.w64(0x6000 + 8 * 107, 0);
    d.w32(0x100 + 4 * 3, 1 << 11);
    gic.route(107).unwrap();
    assert_eq!(d.r64(0x6000 + 8 * 107), 0x1_0000_0203);
    assert_eq!(d.r32(0x180 + 4 * 3) & (1 << 11), 1 << 11, "disabled for the change");
    assert_eq!(d.r32(0x100 + 4 * 3), 1 << 11, "enabled again");
    d.w32(0x100 + 4 * 3, 0);
    gic.route(108).unwrap();
    assert_eq!(d.r32(0x100 + 4 * 3), 0);
    assert_eq!(gic.route(27), Err(GicError::BadIntid { intid: 27 }), "a PPI has no route");
    gic.retire(109).unwrap();
    for reg in [0x180, 0x280, 0x380] {
        assert_eq!(d.r32(reg + 4 * 3) & (1 << 13), 1 << 13, "ICENABLER, ICPENDR, ICACTIVER at {reg:#x}");
    }
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
