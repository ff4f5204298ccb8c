//! A partition's virtual GICv3 (IHI 0069): an emulated distributor and one
//! emulated redistributor per vCPU, in front of the hardware's virtual CPU
//! interface, whose list registers this module fills.
//!
//! The partition sees only its own interrupts: every vCPU's 16 SGIs and 16
//! PPIs, and the SPIs it owns — its devices' (forwarded physical
//! interrupts: the physical one is completed by the partition's own
//! deactivation, through the list register's HW bit) and its emulated
//! devices' (virtual ones). Every other INTID reads as zero and ignores
//! writes. SGIs reach only its own vCPUs. The GIC looks like one with a
//! single security state (GICD_CTLR.DS = 1), affinity routing always on,
//! Group 1 only, no LPIs.
//!
//! Registers are declared once, as a table of ranges with one kind of
//! field each (as KVM's vgic-mmio-v3.c does); an access is decoded against
//! it and the INTIDs it covers are resolved to the interrupt state.

use alloc::vec;
use alloc::vec::Vec;

/// Size of the distributor's register window.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Size of one redistributor (RD_base and SGI_base frames, GICv3).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// First SPI.
pub const FIRST_SPI: u32 = 32;
/// One past the largest INTID (special INTIDs start at 1020).
pub const MAX_INTID: u32 = 1020;
/// The virtual timer's PPI (INTID 27, the architected one).
pub const VTIMER_PPI: u32 = 27;

/// An SPI the partition owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spi {
    /// Its INTID (32..1020).
    pub intid: u32,
    /// A physical interrupt forwarded to the partition (the list register
    /// links it, and the partition's deactivation completes it), rather
    /// than a virtual one an emulated device raises.
    pub hw: bool,
}

/// What the virtual GIC is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VgicConfig {
    /// Each vCPU's MPIDR affinity (Aff3..Aff0 as MPIDR_EL1 holds them), by
    /// vCPU index; the last one's redistributor says GICR_TYPER.Last.
    pub vcpus: Vec<u64>,
    /// The SPIs it owns.
    pub spis: Vec<Spi>,
}

/// State of an interrupt in a list register, as the hardware shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Pending.
    Pending,
    /// Active (acknowledged, not yet deactivated).
    Active,
    /// Active and pending again.
    PendingActive,
}

/// A list register's content (ICH_LR<n>_EL2, IHI 0069 §12.4.5), in the
/// hardware-independent form this module reasons in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lr {
    /// The virtual INTID.
    pub intid: u32,
    /// Group 1 priority.
    pub priority: u8,
    /// The physical INTID the virtual one is linked to (HW = 1).
    pub hw: Option<u32>,
    /// State.
    pub state: LrState,
    /// Ask for a maintenance interrupt when the partition ends it (only
    /// without `hw`): a level-sensitive virtual interrupt is looked at again.
    pub eoi_notify: bool,
}

/// Most list registers a CPU has (ICH_VTR_EL2.ListRegs is 4 bits).
pub const MAX_LRS: usize = 16;

/// What the kernel writes into the list registers before entering a vCPU
/// (built on every return to a partition: no allocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flush {
    regs: [Option<Lr>; MAX_LRS],
    count: usize,
    /// More interrupts wait than fit: ask for the underflow maintenance
    /// interrupt (ICH_HCR_EL2.UIE), to refill when the registers drain.
    pub underflow: bool,
}

/// The result of an emulated register access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The value a read returns.
    pub value: u64,
    /// vCPUs (a bit each) that may have something new to take: the kernel
    /// refills their list registers (kicking the CPUs they run on).
    pub kick: u64,
    /// A forwarded SPI whose routing changed: send the physical one to the
    /// CPU of this vCPU.
    pub route: Option<(u32, usize)>,
}

#[derive(Clone, Copy, Debug)]
struct Irq {
    enabled: bool,
    /// Pending by an edge, a forwarded physical interrupt, or a write.
    latch: bool,
    /// The line of a level-sensitive virtual interrupt.
    level: bool,
    active: bool,
    edge: bool,
    group1: bool,
    priority: u8,
    /// Where it sits in its vCPU's list registers (as of the last sync).
    in_lr: Option<(usize, LrState)>,
}

impl Flush {
    /// One entry per list register.
    pub fn lrs(&self) -> &[Option<Lr>] {
        &self.regs[..self.count]
    }
}

impl Irq {
    const fn reset(edge: bool) -> Irq {
        Irq { enabled: false, latch: false, level: false, active: false, edge, group1: false, priority: 0, in_lr: None }
    }

    fn pending(&self) -> bool {
        self.latch || (!self.edge && self.level) || matches!(self.in_lr, Some((_, LrState::Pending | LrState::PendingActive)))
    }

    fn is_active(&self) -> bool {
        self.active || matches!(self.in_lr, Some((_, LrState::Active | LrState::PendingActive)))
    }

    /// Pending outside the list registers, so it can be put in one.
    fn waiting(&self) -> bool {
        self.in_lr.is_none() && !self.active && (self.latch || (!self.edge && self.level))
    }
}

#[derive(Clone, Copy, Debug)]
struct SpiState {
    intid: u32,
    hw: bool,
    irq: Irq,
    /// GICD_IROUTER<n>.
    route: u64,
}

/// The virtual GIC of one partition.
#[derive(Clone, Debug)]
pub struct Vgic {
    vcpus: Vec<u64>,
    /// GICD_CTLR.EnableGrp1.
    grp1: bool,
    spis: Vec<SpiState>,
    /// SGIs and PPIs of each vCPU.
    private: Vec<[Irq; 32]>,
    /// GICR_WAKER.ProcessorSleep of each redistributor.
    asleep: Vec<bool>,
    /// Which interrupt each vCPU's list registers hold (by slot; the
    /// first `nlrs` are real).
    lrs: Vec<[Option<u32>; MAX_LRS]>,
    nlrs: usize,
}

/// Kinds of register a range of the map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// One bit per INTID.
    Bit(BitOp),
    /// One byte per INTID (priorities).
    Priority,
    /// Two bits per INTID (ICFGR: bit 1 of a pair = edge).
    Config,
    /// One 64-bit register per INTID (IROUTER).
    Router,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BitOp {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

/// The per-INTID register ranges of the distributor (GICD_*, §12.9) and
/// of the SGI_base frame (GICR_*0, §12.11), by offset from the frame and
/// the INTID their first byte covers.
const PER_INTID: [(u64, u64, Field); 10] = [
    (0x0080, 0x0080, Field::Bit(BitOp::Group)),
    (0x0100, 0x0080, Field::Bit(BitOp::SetEnable)),
    (0x0180, 0x0080, Field::Bit(BitOp::ClearEnable)),
    (0x0200, 0x0080, Field::Bit(BitOp::SetPending)),
    (0x0280, 0x0080, Field::Bit(BitOp::ClearPending)),
    (0x0300, 0x0080, Field::Bit(BitOp::SetActive)),
    (0x0380, 0x0080, Field::Bit(BitOp::ClearActive)),
    (0x0400, 0x0400, Field::Priority),
    (0x0c00, 0x0100, Field::Config),
    (0x6000, 0x2000, Field::Router),
];

impl Field {
    /// Bits per INTID.
    fn bits(self) -> u64 {
        match self {
            Field::Bit(_) => 1,
            Field::Config => 2,
            Field::Priority => 8,
            Field::Router => 64,
        }
    }
}

/// The per-INTID range `offset` falls in: the offset from its start, its
/// kind, and the first INTID the access covers.
fn per_intid(offset: u64) -> Option<(u64, Field, u32)> {
    let (base, _, f) = PER_INTID.iter().copied().find(|&(b, l, _)| (b..b + l).contains(&offset))?;
    let off = offset - base;
    Some((off, f, (off * 8 / f.bits()) as u32))
}

/// Writes one INTID's part `f` of a per-INTID register; `true` when that
/// may make it deliverable (the vCPU it goes to looks again).
fn write_field(irq: &mut Irq, field: Field, f: u64, intid: u32, hw: bool) -> bool {
    match field {
        Field::Bit(op) if f == 1 => match op {
            BitOp::Group => {
                let was = irq.group1;
                irq.group1 = true;
                !was
            }
            BitOp::SetEnable => {
                let was = irq.enabled;
                irq.enabled = true;
                !was
            }
            BitOp::ClearEnable => {
                irq.enabled = false;
                false
            }
            // A forwarded interrupt's pending state is the hardware's: a
            // write cannot make it pending.
            BitOp::SetPending if hw => false,
            BitOp::SetPending => {
                let was = irq.latch;
                irq.latch = true;
                !was
            }
            BitOp::ClearPending => {
                irq.latch = false;
                false
            }
            BitOp::SetActive => {
                irq.active = true;
                false
            }
            BitOp::ClearActive => {
                let was = irq.active;
                irq.active = false;
                was
            }
        },
        Field::Bit(BitOp::Group) => {
            irq.group1 = false;
            false
        }
        Field::Bit(_) => false,
        Field::Priority => {
            irq.priority = f as u8;
            false
        }
        // SGIs stay edge-triggered; PPIs and SPIs follow the write.
        Field::Config if intid >= 16 => {
            irq.edge = f & 0b10 != 0;
            false
        }
        Field::Config | Field::Router => false,
    }
}

/// Peripheral and component IDs (§12.1.3, PIDR2.ArchRev = 3: GICv3).
fn id_register(offset: u64) -> u64 {
    match offset {
        0xffe0 => 0x92, // PIDR0
        0xffe4 => 0xb4, // PIDR1
        0xffe8 => 0x3b, // PIDR2: ArchRev 3
        0xfff0 => 0x0d, // CIDR0..3
        0xfff4 => 0xf0,
        0xfff8 => 0x05,
        0xfffc => 0xb1,
        _ => 0,
    }
}

/// GICD_IIDR / GICR_IIDR: Arm's JEP106 code, product 0.
const IIDR: u64 = 0x0000_043b;

/// The MPIDR affinity an IROUTER value names (Aff3 39:32, Aff2..0 23:0).
fn router_affinity(route: u64) -> u64 {
    ((route >> 32) & 0xff) << 32 | (route & 0xff_ffff)
}

impl Vgic {
    /// A virtual GIC at reset: everything disabled, redistributors asleep,
    /// `lrs` list registers per vCPU.
    pub fn new(cfg: &VgicConfig, lrs: usize) -> Vgic {
        let mut spis: Vec<SpiState> = cfg
            .spis
            .iter()
            .filter(|s| (FIRST_SPI..MAX_INTID).contains(&s.intid))
            .map(|s| SpiState { intid: s.intid, hw: s.hw, irq: Irq::reset(false), route: 0 })
            .collect();
        spis.sort_by_key(|s| s.intid);
        spis.dedup_by_key(|s| s.intid);
        let private = cfg
            .vcpus
            .iter()
            .map(|_| {
                let mut p = [Irq::reset(false); 32];
                // SGIs are edge-triggered (ICFGR0 reads 0xaaaaaaaa).
                for sgi in p.iter_mut().take(16) {
                    sgi.edge = true;
                }
                p
            })
            .collect();
        Vgic {
            vcpus: cfg.vcpus.iter().map(|m| m & 0xff_00ff_ffff).collect(),
            grp1: false,
            spis,
            private,
            asleep: vec![true; cfg.vcpus.len()],
            lrs: vec![[None; MAX_LRS]; cfg.vcpus.len()],
            nlrs: lrs.min(MAX_LRS),
        }
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    fn spi_index(&self, intid: u32) -> Option<usize> {
        self.spis.binary_search_by_key(&intid, |s| s.intid).ok()
    }

    /// The vCPU an SPI is routed to (its IROUTER affinity), if one of ours.
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        let s = &self.spis[self.spi_index(intid)?];
        let aff = router_affinity(s.route);
        self.vcpus.iter().position(|&m| m == aff)
    }

    /// The state of `intid` as vCPU `v` sees it (its own SGIs and PPIs, or
    /// an SPI it owns).
    fn irq_mut(&mut self, v: usize, intid: u32) -> Option<&mut Irq> {
        if intid < FIRST_SPI {
            return self.private.get_mut(v).map(|p| &mut p[intid as usize]);
        }
        let i = self.spi_index(intid)?;
        Some(&mut self.spis[i].irq)
    }

    fn irq(&self, v: usize, intid: u32) -> Option<&Irq> {
        if intid < FIRST_SPI {
            return self.private.get(v).map(|p| &p[intid as usize]);
        }
        Some(&self.spis[self.spi_index(intid)?].irq)
    }

    /// The vCPUs `intid` is delivered to (a bit each): `v` for its own
    /// SGIs/PPIs, the routed one for an SPI.
    fn kick_for(&self, v: usize, intid: u32) -> u64 {
        let target = if intid < FIRST_SPI { Some(v) } else { self.spi_target(intid) };
        target.map_or(0, |t| 1 << t)
    }

    fn all_vcpus(&self) -> u64 {
        if self.vcpus.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.vcpus.len()) - 1
        }
    }

    /// An access to the distributor by vCPU `v`: `offset` in the 64 KiB
    /// frame, `size` bytes, a read (`write` = `None`) or a write.
    pub fn gicd(&mut self, v: usize, offset: u64, size: u8, write: Option<u64>) -> Access {
        let mut a = Access::default();
        match (offset, write) {
            // CTLR: EnableGrp1 (1) RW; ARE (4) and DS (6) RAO/WI;
            // EnableGrp0 is kept off (Group 1 only); RWP never set.
            (0x0000, None) => a.value = (u64::from(self.grp1) << 1) | (1 << 4) | (1 << 6),
            (0x0000, Some(w)) => {
                let on = w & 0b10 != 0;
                if on != self.grp1 {
                    self.grp1 = on;
                    a.kick = self.all_vcpus();
                }
            }
            // TYPER: ITLinesNumber for the SPIs owned, IDbits 9 (INTIDs
            // below 1024), A3V, No1N; no LPIs, no MBIs, no security
            // extension.
            (0x0004, None) => {
                let top = self.spis.last().map_or(FIRST_SPI - 1, |s| s.intid);
                let lines = u64::from(top / 32);
                a.value = lines | (9 << 19) | (1 << 24) | (1 << 25);
            }
            (0x0008, None) => a.value = IIDR,
            (0xffd0..=0xfffc, None) => a.value = id_register(offset),
            _ => {
                // Per-INTID registers: the distributor holds the SPIs; its
                // INTIDs 0..31 are the redistributors' (ARE), RAZ/WI here.
                if let Some((off, field, first)) = per_intid(offset) {
                    if first >= FIRST_SPI {
                        a = self.per_intid_access(v, off, field, first, size, write);
                    }
                }
            }
        }
        a
    }

    /// An access to the redistributors by vCPU `v`: `offset` from the start
    /// of the redistributor region (one [`GICR_STRIDE`] per vCPU).
    pub fn gicr(&mut self, v: usize, offset: u64, size: u8, write: Option<u64>) -> Access {
        let mut a = Access::default();
        let frame = (offset / GICR_STRIDE) as usize;
        let off = offset % GICR_STRIDE;
        if frame >= self.vcpus.len() {
            return a;
        }
        match (off, write) {
            // RD_base: CTLR (no LPIs: RAZ/WI), IIDR, TYPER, WAKER, IDs.
            (0x0004, None) => a.value = IIDR,
            (0x0008 | 0x000c, None) => {
                let m = self.vcpus[frame];
                let aff = ((m >> 32) & 0xff) << 24 | (m & 0xff_ffff);
                let last = u64::from(frame + 1 == self.vcpus.len());
                let typer = (aff << 32) | ((frame as u64) << 8) | (last << 4);
                a.value = if off == 0x000c {
                    typer >> 32
                } else if size == 8 {
                    typer
                } else {
                    typer & 0xffff_ffff
                };
            }
            (0x0014, None) => {
                let s = u64::from(self.asleep[frame]);
                a.value = (s << 1) | (s << 2);
            }
            (0x0014, Some(w)) => self.asleep[frame] = w & 0b10 != 0,
            (0xffd0..=0xfffc, None) => a.value = id_register(off),
            // SGI_base frame.
            (0x1_0000.., _) => {
                let sgi_off = off - 0x1_0000;
                match (sgi_off, write) {
                    // ICFGR0: SGIs are edge-triggered, read-only.
                    (0x0c00, None) => a.value = 0xaaaa_aaaa,
                    (0x0c00, Some(_)) => {}
                    _ => {
                        // GICR_*0: the vCPU's own SGIs and PPIs only.
                        if let Some((off, field, first)) = per_intid(sgi_off) {
                            if first < FIRST_SPI && field != Field::Router {
                                a = self.per_intid_access(frame, off, field, first, size, write);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        let _ = v;
        a
    }

    /// An access to a per-INTID register (`off` from the start of its
    /// range, of kind `field`, covering INTIDs from `first`) as vCPU `v`
    /// sees it.
    fn per_intid_access(&mut self, v: usize, off: u64, field: Field, first: u32, size: u8, write: Option<u64>) -> Access {
        let mut a = Access::default();
        if field == Field::Router {
            return self.router(off, size, write);
        }
        let bits = field.bits();
        let count = ((u64::from(size) * 8) / bits).max(1) as u32;
        let mut value = 0u64;
        for k in 0..count {
            let intid = first + k;
            if intid >= MAX_INTID {
                break;
            }
            let shift = u64::from(k) * bits;
            match write {
                None => {
                    let Some(irq) = self.irq(v, intid) else { continue };
                    let f = match field {
                        Field::Bit(BitOp::Group) => u64::from(irq.group1),
                        Field::Bit(BitOp::SetEnable | BitOp::ClearEnable) => u64::from(irq.enabled),
                        Field::Bit(BitOp::SetPending | BitOp::ClearPending) => u64::from(irq.pending()),
                        Field::Bit(BitOp::SetActive | BitOp::ClearActive) => u64::from(irq.is_active()),
                        Field::Priority => u64::from(irq.priority),
                        Field::Config => u64::from(irq.edge) << 1,
                        Field::Router => 0,
                    };
                    value |= f << shift;
                }
                Some(w) => {
                    let f = (w >> shift) & ((1u64 << bits) - 1);
                    let hw = intid >= FIRST_SPI && self.spi_index(intid).is_some_and(|i| self.spis[i].hw);
                    let kick = self.kick_for(v, intid);
                    let Some(irq) = self.irq_mut(v, intid) else { continue };
                    if write_field(irq, field, f, intid, hw) {
                        a.kick |= kick;
                    }
                }
            }
        }
        a.value = value;
        a
    }

    /// GICD_IROUTER<n>: `off` from the start of the array (8 bytes each).
    fn router(&mut self, off: u64, size: u8, write: Option<u64>) -> Access {
        let mut a = Access::default();
        let intid = (off / 8) as u32;
        let high = off % 8 >= 4;
        let Some(i) = self.spi_index(intid) else { return a };
        let cur = self.spis[i].route;
        match write {
            None => {
                a.value = if size == 8 {
                    cur
                } else if high {
                    cur >> 32
                } else {
                    cur & 0xffff_ffff
                }
            }
            Some(w) => {
                // Aff3 (39:32), IRM (31; 1-of-N is not offered: RAZ/WI),
                // Aff2..0 (23:0).
                let new = match (size, high) {
                    (8, _) => w,
                    (_, true) => (cur & 0xffff_ffff) | (w << 32),
                    (_, false) => (cur & !0xffff_ffff) | (w & 0xffff_ffff),
                } & 0xff_00ff_ffff;
                self.spis[i].route = new;
                if new != cur {
                    a.kick = self.kick_for(0, intid);
                    if self.spis[i].hw {
                        a.route = self.spi_target(intid).map(|t| (intid, t));
                    }
                }
            }
        }
        a
    }

    /// vCPU `v` wrote ICC_SGI1R_EL1: SGI `intid` pending on each vCPU in
    /// `targets` (see [`super::sysreg::sgi_targets`]).
    pub fn raise_sgi(&mut self, intid: u32, targets: u64) -> u64 {
        let mut kick = 0;
        for t in 0..self.vcpus.len().min(64) {
            if targets & (1 << t) != 0 && intid < 16 {
                self.private[t][intid as usize].latch = true;
                kick |= 1 << t;
            }
        }
        kick
    }

    /// The line of a virtual (emulated device's) SPI changed.
    pub fn set_level(&mut self, intid: u32, level: bool) -> u64 {
        let kick = self.kick_for(0, intid);
        let Some(i) = self.spi_index(intid) else { return 0 };
        let irq = &mut self.spis[i].irq;
        let rose = level && !irq.level;
        irq.level = level;
        if irq.edge && rose {
            irq.latch = true;
        }
        if rose {
            kick
        } else {
            0
        }
    }

    /// A forwarded physical interrupt `intid` arrived on vCPU `v`'s CPU (a
    /// PPI of `v`, or an SPI): pending until the partition takes it.
    pub fn forwarded(&mut self, v: usize, intid: u32) -> u64 {
        let kick = self.kick_for(v, intid);
        match self.irq_mut(v, intid) {
            Some(irq) => {
                irq.latch = true;
                kick
            }
            None => 0,
        }
    }

    /// What the list registers of vCPU `v` hold now (read back after an
    /// exit), one entry per register: the partition may have acknowledged
    /// or ended some.
    pub fn sync(&mut self, v: usize, lrs: &[Option<Lr>]) {
        for slot in 0..self.nlrs {
            let Some(intid) = self.lrs.get(v).and_then(|s| s[slot]) else { continue };
            let now = lrs.get(slot).copied().flatten().filter(|l| l.intid == intid).map(|l| l.state);
            if let Some(irq) = self.irq_mut(v, intid) {
                match now {
                    Some(state) => irq.in_lr = Some((slot, state)),
                    None => {
                        // Ended (deactivated) by the partition.
                        irq.in_lr = None;
                        irq.active = false;
                    }
                }
            }
            if now.is_none() {
                self.lrs[v][slot] = None;
            }
        }
    }

    /// The list registers to write before entering vCPU `v` (after
    /// [`sync`](Self::sync)): what they hold, plus the highest-priority
    /// interrupts waiting, while registers are free.
    pub fn flush(&mut self, v: usize) -> Flush {
        let mut out = Flush { regs: [None; MAX_LRS], count: 0, underflow: false };
        let Some(&held) = self.lrs.get(v) else { return out };
        let mut slots = held;
        let n = self.nlrs;
        // An interrupt disabled while it waited in a register goes back to
        // waiting (still pending).
        for slot in slots.iter_mut().take(n) {
            let Some(intid) = *slot else { continue };
            let Some(irq) = self.irq_mut(v, intid) else { continue };
            if !irq.enabled && matches!(irq.in_lr, Some((_, LrState::Pending))) {
                irq.in_lr = None;
                irq.latch = true;
                *slot = None;
            }
        }
        // Each free register takes the highest-priority interrupt waiting
        // (lowest value; then lowest INTID) that is not placed yet.
        for slot in 0..n {
            if slots.get(slot).is_none_or(Option::is_some) {
                continue;
            }
            let Some(intid) = self.best_waiting(v) else { break };
            slots[slot] = Some(intid);
            if let Some(irq) = self.irq_mut(v, intid) {
                irq.latch = false;
                irq.in_lr = Some((slot, LrState::Pending));
            }
        }
        out.underflow = self.best_waiting(v).is_some();
        for (slot, held) in slots.iter().enumerate().take(n) {
            out.regs[slot] = held.and_then(|intid| {
                let hw = intid >= FIRST_SPI && self.spi_index(intid).is_some_and(|i| self.spis[i].hw) || intid == VTIMER_PPI;
                let irq = self.irq(v, intid)?;
                let (_, state) = irq.in_lr?;
                Some(Lr {
                    intid,
                    priority: irq.priority,
                    hw: hw.then_some(intid),
                    state,
                    // A level-sensitive virtual interrupt: look again at its
                    // line when the partition ends it.
                    eoi_notify: !hw && !irq.edge,
                })
            });
        }
        out.count = n;
        self.lrs[v] = slots;
        out
    }

    /// The interrupt vCPU `v` should take next from those waiting outside
    /// its list registers: enabled, Group 1, routed to it, by priority.
    fn best_waiting(&self, v: usize) -> Option<u32> {
        if !self.grp1 {
            return None;
        }
        let own =
            self.private.get(v)?.iter().enumerate().filter(|(_, irq)| irq.enabled && irq.group1 && irq.waiting()).map(|(i, irq)| (irq.priority, i as u32));
        let aff = self.vcpus.get(v).copied();
        let spis = self
            .spis
            .iter()
            .filter(|s| s.irq.enabled && s.irq.group1 && s.irq.waiting() && aff == Some(router_affinity(s.route)))
            .map(|s| (s.irq.priority, s.intid));
        own.chain(spis).min().map(|(_, intid)| intid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UART: u32 = 33;
    const DEV: u32 = 40;

    fn gic() -> Vgic {
        let cfg = VgicConfig { vcpus: vec![0x1, 0x2], spis: vec![Spi { intid: UART, hw: false }, Spi { intid: DEV, hw: true }] };
        Vgic::new(&cfg, 4)
    }

    fn w32(g: &mut Vgic, off: u64, v: u64) -> Access {
        g.gicd(0, off, 4, Some(v))
    }

    fn r32(g: &mut Vgic, off: u64) -> u64 {
        g.gicd(0, off, 4, None).value
    }

    /// What Linux's gic_dist_init and gic_cpu_init do, roughly.
    fn linux_init(g: &mut Vgic) {
        w32(g, 0x0000, 0);
        for reg in 1..2u64 {
            w32(g, 0x0080 + reg * 4, u64::from(u32::MAX)); // all Group 1
            w32(g, 0x0180 + reg * 4, u64::from(u32::MAX)); // disable
        }
        for intid in [UART, DEV] {
            g.gicd(0, 0x6000 + u64::from(intid) * 8, 8, Some(0x1)); // to vCPU 0 (MPIDR 1)
            g.gicd(0, 0x0400 + u64::from(intid), 1, Some(0xa0));
        }
        w32(g, 0x0000, 0b10011);
        for frame in 0..2u64 {
            let base = frame * GICR_STRIDE;
            g.gicr(0, base + 0x14, 4, Some(0));
            g.gicr(0, base + 0x1_0080, 4, Some(u64::from(u32::MAX)));
            g.gicr(0, base + 0x1_0100, 4, Some(0xffff | (1 << 27)));
        }
    }

    #[test]
    fn distributor_identification_and_unowned_intids() {
        let mut g = gic();
        assert_eq!(r32(&mut g, 0xffe8) >> 4 & 0xf, 3, "GICv3");
        let typer = r32(&mut g, 0x4);
        assert_eq!(typer & 0x1f, 1, "SPIs up to 63 (the largest owned is 40)");
        assert_eq!(typer >> 17 & 1, 0, "no LPIs");
        assert_eq!(r32(&mut g, 0x0) & (1 << 6), 1 << 6, "single security state");
        // INTID 34 is not the partition's: nothing sticks.
        w32(&mut g, 0x0104, 1 << 2);
        assert_eq!(r32(&mut g, 0x0104) & (1 << 2), 0);
        assert_eq!(g.gicd(0, 0x6000 + 34 * 8, 8, None).value, 0);
        g.gicd(0, 0x6000 + 34 * 8, 8, Some(0x1));
        assert_eq!(g.gicd(0, 0x6000 + 34 * 8, 8, None).value, 0);
        // The distributor's INTIDs 0..31 are the redistributors'.
        w32(&mut g, 0x0100, u64::from(u32::MAX));
        assert_eq!(r32(&mut g, 0x0100), 0);
    }

    #[test]
    fn redistributors_one_per_vcpu_last_marked() {
        let mut g = gic();
        let t0 = g.gicr(0, 0x8, 8, None).value;
        let t1 = g.gicr(0, GICR_STRIDE + 0x8, 8, None).value;
        assert_eq!((t0 >> 32, t0 >> 8 & 0xffff, t0 >> 4 & 1), (0x1, 0, 0));
        assert_eq!((t1 >> 32, t1 >> 8 & 0xffff, t1 >> 4 & 1), (0x2, 1, 1), "Last");
        assert_eq!(g.gicr(0, GICR_STRIDE + 0xc, 4, None).value, 0x2, "upper half alone");
        assert_eq!(g.gicr(0, 2 * GICR_STRIDE + 0x8, 8, None).value, 0, "no third vCPU");
        assert_eq!(g.gicr(0, 0x14, 4, None).value, 0b110, "asleep at reset");
        g.gicr(0, 0x14, 4, Some(0));
        assert_eq!(g.gicr(0, 0x14, 4, None).value, 0, "awake, children too");
        assert_eq!(g.gicr(0, 0x1_0c00, 4, None).value, 0xaaaa_aaaa);
    }

    #[test]
    fn a_virtual_level_interrupt_is_delivered_and_looked_at_again() {
        let mut g = gic();
        linux_init(&mut g);
        w32(&mut g, 0x0104, 1 << (UART - 32));
        assert_eq!(g.set_level(UART, true), 0b01, "vCPU 0 has something");
        let f = g.flush(0);
        assert_eq!(f.lrs()[0], Some(Lr { intid: UART, priority: 0xa0, hw: None, state: LrState::Pending, eoi_notify: true }));
        assert!(!f.underflow);
        assert!(g.flush(1).lrs().iter().all(Option::is_none), "vCPU 1 has nothing");
        // Acknowledged, then ended while the line is still up: pending again.
        g.sync(0, &[Some(Lr { state: LrState::Active, ..f.lrs()[0].unwrap() }), None, None, None]);
        assert_eq!(r32(&mut g, 0x0304) >> (UART - 32) & 1, 1, "active");
        g.sync(0, &[None, None, None, None]);
        let f = g.flush(0);
        assert_eq!(f.lrs()[0].map(|l| l.intid), Some(UART), "line still up");
        g.sync(0, &[None; 4]);
        g.set_level(UART, false);
        assert!(g.flush(0).lrs().iter().all(Option::is_none), "line down");
    }

    #[test]
    fn forwarded_interrupts_carry_the_physical_intid() {
        let mut g = gic();
        linux_init(&mut g);
        // The guest routes DEV to vCPU 1 (MPIDR 2): the physical follows.
        let a = g.gicd(0, 0x6000 + u64::from(DEV) * 8, 8, Some(0x2));
        assert_eq!(a.route, Some((DEV, 1)));
        w32(&mut g, 0x0104, 1 << (DEV - 32));
        assert_eq!(g.forwarded(1, DEV), 0b10);
        let f = g.flush(1);
        assert_eq!(f.lrs()[0], Some(Lr { intid: DEV, priority: 0xa0, hw: Some(DEV), state: LrState::Pending, eoi_notify: false }));
        // The virtual timer (PPI 27) of each vCPU is forwarded too.
        g.forwarded(0, VTIMER_PPI);
        let f = g.flush(0);
        assert_eq!(f.lrs()[0].and_then(|l| l.hw), Some(VTIMER_PPI));
        // A write cannot make a forwarded interrupt pending.
        g.sync(1, &[None; 4]);
        w32(&mut g, 0x0204, 1 << (DEV - 32));
        assert!(g.flush(1).lrs().iter().all(Option::is_none));
    }

    #[test]
    fn sgis_priorities_and_underflow() {
        let mut g = gic();
        linux_init(&mut g);
        for sgi in 0..6u32 {
            g.gicr(0, GICR_STRIDE + 0x1_0400 + u64::from(sgi), 1, Some(u64::from(0x80 - sgi * 8)));
        }
        let kick = g.raise_sgi(1, 0b10) | g.raise_sgi(2, 0b10) | g.raise_sgi(3, 0b10) | g.raise_sgi(4, 0b10) | g.raise_sgi(5, 0b10);
        assert_eq!(kick, 0b10);
        let f = g.flush(1);
        let got: Vec<u32> = f.lrs().iter().map(|l| l.unwrap().intid).collect();
        assert_eq!(got, vec![5, 4, 3, 2], "highest priority first");
        assert!(f.underflow, "SGI 1 waits: refill when the registers drain");
        g.sync(1, &[None; 4]);
        let f = g.flush(1);
        assert_eq!(f.lrs()[0].map(|l| l.intid), Some(1));
        assert!(!f.underflow);
        // Disabled while waiting in a register: taken out, still pending.
        g.gicr(0, GICR_STRIDE + 0x1_0180, 4, Some(1 << 1));
        let f = g.flush(1);
        assert!(f.lrs().iter().all(Option::is_none));
        assert_eq!(g.gicr(0, GICR_STRIDE + 0x1_0200, 4, None).value & 0b10, 0b10, "pending");
    }

    #[test]
    fn group1_disabled_delivers_nothing() {
        let mut g = gic();
        linux_init(&mut g);
        w32(&mut g, 0x0104, 1 << (UART - 32));
        g.set_level(UART, true);
        w32(&mut g, 0x0000, 0);
        assert!(g.flush(0).lrs().iter().all(Option::is_none));
        assert_eq!(w32(&mut g, 0x0000, 0b10).kick, 0b11, "everyone looks again");
        assert!(g.flush(0).lrs()[0].is_some());
    }
}
