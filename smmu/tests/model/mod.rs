//! An independent software model of an SMMUv3 (IHI 0070), for host tests.
//!
//! It implements the driver's `Mmio` trait with the register semantics the
//! driver relies on, processes the command queue when CMDQ_PROD is written,
//! keeps a configuration cache that only CFGI_* clears and a TLB that only
//! TLBI_* clears, records events (with overflow), and translates with its own
//! decoder of STEs, CDs and VMSAv8-64 tables.
//!
//! Independence: nothing here uses the driver's encoders or bit constants.
//! Every shift and mask below is written from the architecture's tables
//! (IHI 0070 §5.2 STE, §5.4 CD, §4 commands, §7.3 events, §6.3 registers;
//! Arm ARM D8 descriptors).
//!
//! Instrumentation: the test `DmaMemory` reports every 64-bit write; the
//! model snapshots every STE touched (with the address it was read from)
//! and, when the STE is next invalidated, plays the adversarial fetch: the
//! SMMU may read an STE's eight dwords in any order, each single-copy
//! atomic, spread over the whole window since the previous invalidation, so
//! every combination of a dword per position from the versions at one
//! address is a possible fetch. Each one must terminate, or decode to the
//! complete old or the complete new configuration ("no torn STE fetch");
//! none may ever be bypass.
//!
//! Caches, each cleared only by what the architecture says clears it: STE
//! configuration (CFGI_STE*), level-1 stream table descriptors (CFGI_STE
//! with Leaf = 0, CFGI_STE_RANGE, CFGI_ALL; invalid ones are cached too),
//! context descriptors by StreamID (CFGI_CD, CFGI_CD_ALL only), and a TLB
//! whose nested entries combine both stages under the stage-2 VMID (TLBI by
//! IPA leaves them; TLBI_NH_* of that VMID or TLBI_S12_VMALL clears them).
#![allow(dead_code)]

mod arena;
mod checks;
mod cmdq;
mod dma;
mod events;
mod fetch;
mod flavour;
mod regs;
mod strtab;
mod translate;
mod walk;

pub use arena::*;
pub use dma::*;
pub use flavour::*;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::rc::Rc;

use embedded_hal::delay::DelayNs;
use smmu::hal::{DmaMemory, DmaRegion, Mmio};
use smmu::{Error, PhysAddr};

// ---------------------------------------------------------------------------
// Register offsets (IHI 0070 §6.3), written independently.
// ---------------------------------------------------------------------------
pub mod reg {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR2: usize = 0x08;
    pub const IDR3: usize = 0x0c;
    pub const IDR4: usize = 0x10;
    pub const IDR5: usize = 0x14;
    pub const IIDR: usize = 0x18;
    pub const AIDR: usize = 0x1c;
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const CR1: usize = 0x28;
    pub const CR2: usize = 0x2c;
    pub const STATUSR: usize = 0x40;
    pub const GBPA: usize = 0x44;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const GERROR_IRQ_CFG0: usize = 0x68;
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9c;
    pub const EVENTQ_BASE: usize = 0xa0;
    pub const EVENTQ_IRQ_CFG0: usize = 0xb0;
    pub const EVENTQ_PROD: usize = 0x100a8;
    pub const EVENTQ_CONS: usize = 0x100ac;
}

// ---------------------------------------------------------------------------
// Decoded configuration (from the spec's STE/CD tables)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S1Cfg {
    pub asid: u16,
    pub ttb0: u64,
    pub t0sz: u8,
    pub out_bits: u8,
    pub record: bool,
    pub affd: bool,
    pub mair: u64,
    pub epd0: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Cfg {
    pub vmid: u16,
    pub ttb: u64,
    pub t0sz: u8,
    pub start_level: u8,
    pub out_bits: u8,
    pub record: bool,
    pub affd: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cfg {
    Abort,
    Bypass,
    S1 { vmid: Option<u16>, s1: S1Cfg },
    S2(S2Cfg),
    Nested { s1: S1Cfg, s2: S2Cfg },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    BadStreamId,
    SteFetch,
    BadSte,
    CdFetch,
    BadCd,
    WalkEabt,
    Translation,
    AddrSize,
    Access,
    Permission,
}

impl FaultKind {
    fn event_code(self) -> u64 {
        match self {
            FaultKind::BadStreamId => 0x02,
            FaultKind::SteFetch => 0x03,
            FaultKind::BadSte => 0x04,
            FaultKind::CdFetch => 0x09,
            FaultKind::BadCd => 0x0a,
            FaultKind::WalkEabt => 0x0b,
            FaultKind::Translation => 0x10,
            FaultKind::AddrSize => 0x11,
            FaultKind::Access => 0x12,
            FaultKind::Permission => 0x13,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub privileged: bool,
}

impl Access {
    pub const READ: Access = Access { write: false, privileged: false };
    pub const WRITE: Access = Access { write: true, privileged: false };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Translated: output address, whether writes are allowed, memory type.
    Ok { pa: u64, writable: bool, device: bool },
    /// A fault (recorded as an event when the configuration says so).
    Fault { kind: FaultKind, stage2: bool },
    /// Terminated by an abort STE or GBPA: no event.
    Abort,
    /// Passed through untranslated. Always a violation once the driver ran.
    Bypass,
}

#[derive(Clone, Copy, Debug)]
struct Leaf {
    va: u64,
    size: u64,
    oa: u64,
    read: bool,
    write: bool,
    unpriv: bool,
    device: bool,
    global: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlbTag {
    S1 { vmid: Option<u16>, asid: u16 },
    S2 { vmid: u16 },
}

#[derive(Clone, Copy, Debug)]
struct TlbEntry {
    tag: TlbTag,
    leaf: Leaf,
    /// Table root the entry came from (for the coherence check).
    root: u64,
    stage2: bool,
    start_level: u8,
    input_bits: u8,
    out_bits: u8,
    affd: bool,
    mair: u64,
    /// A combined stage 1 + stage 2 entry (nested): `leaf.oa` is the final
    /// PA, re-walked through this stage 2 by the coherence check.
    nested: Option<S2Cfg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdqMode {
    /// Consume everything when CMDQ_PROD is written (like QEMU).
    Immediate,
    /// Consume at most this many commands per CMDQ_CONS read (asynchronous
    /// progress).
    PerConsRead(u32),
    /// Never consume.
    Never,
}

pub struct Knobs {
    pub ack_cr0: bool,
    pub ack_gbpa: bool,
    pub ack_irq: bool,
    pub cmdq_mode: CmdqMode,
    /// The next this-many command fetches abort (CERROR_ABT) without the
    /// command running; the command is still valid and must be retried.
    pub abort_fetches: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { ack_cr0: true, ack_gbpa: true, ack_irq: true, cmdq_mode: CmdqMode::Immediate, abort_fetches: 0 }
    }
}

#[derive(Default)]
struct Regs {
    cr0: u32,
    cr0ack: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    irq_ctrlack: u32,
    gerror: u32,
    gerrorn: u32,
    gerror_irq_cfg0: u64,
    eventq_irq_cfg0: u64,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    evtq_base: u64,
    evtq_prod: u32,
    evtq_cons: u32,
}

/// One version of an STE as a fetch could find it: where it was read and
/// what it held (`None`: no STE reachable, the level-1 descriptor is
/// invalid).
type Snap = Option<(u64, [u64; 8])>;

/// What the model knows about one StreamID's STE for the torn-fetch check.
#[derive(Default)]
struct SteHistory {
    /// Version at the last CFGI (outer None: never seen).
    committed: Option<Snap>,
    /// Versions observed after each write since then.
    snapshots: Vec<Snap>,
    /// The committed version sits in a level-2 table that was swapped out
    /// and invalidated since: no fetch can read it any more.
    old_retired: bool,
}

pub struct State {
    pub idr: [u32; 6],
    pub iidr: u32,
    pub aidr: u32,
    regs: Regs,
    pub knobs: Knobs,
    cfg_cache: HashMap<u32, Cfg>,
    /// Level-1 stream table descriptors by span (invalid ones too).
    l1_cache: HashMap<u32, u64>,
    /// Context descriptors by StreamID (SubstreamID 0).
    cd_cache: HashMap<u32, S1Cfg>,
    tlb: Vec<TlbEntry>,
    history: HashMap<u32, SteHistory>,
    /// Level-2 tables reachable from the level-1 table: start PA → span.
    l2_tables: BTreeMap<u64, u32>,
    pub violations: Vec<String>,
    pub opcodes: Vec<u8>,
    pub driver_started: bool,
    pub events_recorded: u64,
    pub events_dropped: u64,
    pub cfg_fetches: u64,
    pub walks: u64,
}

pub struct Model {
    pub arena: Arena,
    st: RefCell<State>,
    pub dma_writes: Cell<u64>,
    /// Words the driver wrote (or got zeroed from the allocator) but has not
    /// published yet: the SMMU must never read them.
    /// One bit per 8-byte word of the arena.
    dirty: RefCell<Vec<u64>>,
    /// Set while snapshotting STEs for the torn-entry check (a snapshot is
    /// "what a coherent SMMU could see", not an SMMU access).
    snapshotting: Cell<bool>,
    unpublished_reads: RefCell<Vec<String>>,
}

fn bits(v: u64, lo: u32, n: u32) -> u64 {
    (v >> lo) & ((1u64 << n) - 1)
}

fn pa_bits(code: u64) -> Option<u8> {
    // IDR5.OAS / S2PS / IPS encodings (§6.3).
    Some(match code {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        _ => return None,
    })
}

const ADDR_51_12: u64 = ((1u64 << 52) - 1) & !0xfff;
const ADDR_47_12: u64 = ((1u64 << 48) - 1) & !0xfff;

impl Model {
    pub fn new(flavour: Flavour) -> Rc<Model> {
        Self::with_idr(flavour.idr(), 4 << 20)
    }

    pub fn with_idr(idr: [u32; 6], arena_bytes: usize) -> Rc<Model> {
        let m = Self::bare(idr, arena_bytes);
        m.install_presets();
        m
    }

    /// [`with_idr`](Self::with_idr) with the arena at physical `base`.
    pub fn with_idr_at(idr: [u32; 6], arena_bytes: usize, base: u64) -> Rc<Model> {
        let m = Self::bare_in(idr, Arena::at(arena_bytes, base));
        m.install_presets();
        m
    }

    fn bare(idr: [u32; 6], arena_bytes: usize) -> Rc<Model> {
        Self::bare_in(idr, Arena::new(arena_bytes))
    }

    fn bare_in(idr: [u32; 6], arena: Arena) -> Rc<Model> {
        let arena_bytes = arena.size;
        Rc::new(Model {
            arena,
            st: RefCell::new(State {
                idr,
                iidr: 0,
                aidr: 1, // SMMUv3.1
                regs: Regs { gbpa: 0x1000, ..Regs::default() },
                knobs: Knobs::default(),
                cfg_cache: HashMap::new(),
                l1_cache: HashMap::new(),
                cd_cache: HashMap::new(),
                tlb: Vec::new(),
                history: HashMap::new(),
                l2_tables: BTreeMap::new(),
                violations: Vec::new(),
                opcodes: Vec::new(),
                driver_started: false,
                events_recorded: 0,
                events_dropped: 0,
                cfg_fetches: 0,
                walks: 0,
            }),
            dma_writes: Cell::new(0),
            dirty: RefCell::new(vec![0; arena_bytes / 8 / 64 + 1]),
            snapshotting: Cell::new(false),
            unpublished_reads: RefCell::default(),
        })
    }

    /// Marks `[pa, pa+len)` as written by the CPU and not yet published.
    pub fn mark_dirty(&self, pa: u64, len: u64) {
        self.set_dirty(pa, len, true);
    }

    fn set_dirty(&self, pa: u64, len: u64, dirty: bool) {
        let Some(start) = pa.checked_sub(self.arena.base) else {
            return;
        };
        let mut d = self.dirty.borrow_mut();
        let first = start / 8;
        let last = (start + len).div_ceil(8).min(d.len() as u64 * 64);
        let mut w = first;
        while w < last {
            let (i, b) = ((w / 64) as usize, w % 64);
            if b == 0 && last - w >= 64 {
                d[i] = if dirty { !0 } else { 0 };
                w += 64;
            } else {
                if dirty {
                    d[i] |= 1 << b;
                } else {
                    d[i] &= !(1 << b);
                }
                w += 1;
            }
        }
    }

    /// The driver's publish hook: `[pa, pa+len)` is now visible to the SMMU.
    pub fn publish(&self, pa: u64, len: u64) {
        self.set_dirty(pa, len, false);
    }

    fn is_dirty(&self, pa: u64) -> bool {
        let Some(off) = pa.checked_sub(self.arena.base) else {
            return false;
        };
        let w = off / 8;
        self.dirty.borrow().get((w / 64) as usize).is_some_and(|x| x & (1 << (w % 64)) != 0)
    }

    /// A read by the SMMU itself: it must only see published words.
    fn dev_read64(&self, pa: u64) -> Option<u64> {
        if !self.snapshotting.get() && self.is_dirty(pa) {
            let mut v = self.unpublished_reads.borrow_mut();
            // The first few are enough to diagnose.
            if v.len() < 8 {
                v.push(format!("SMMU read unpublished word at {pa:#x}"));
            }
        }
        self.arena.read64(pa)
    }

    pub fn state(&self) -> std::cell::RefMut<'_, State> {
        self.st.borrow_mut()
    }

    fn s1p(st: &State) -> bool {
        st.idr[0] & 0b10 != 0
    }
    fn s2p(st: &State) -> bool {
        st.idr[0] & 0b01 != 0
    }
    fn hyp(st: &State) -> bool {
        st.idr[0] & (1 << 9) != 0
    }
    fn oas(st: &State) -> u8 {
        pa_bits(u64::from(st.idr[5] & 7)).unwrap_or(48).min(48)
    }

    pub fn violations(&self) -> Vec<String> {
        let mut v = self.st.borrow().violations.clone();
        v.extend(self.arena.errors());
        v.extend(self.unpublished_reads.borrow().iter().cloned());
        v
    }

    pub fn assert_clean(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "model saw violations: {v:#?}");
    }

    pub fn smmuen(&self) -> bool {
        self.st.borrow().regs.cr0 & 1 != 0
    }

    pub fn gbpa(&self) -> u32 {
        self.st.borrow().regs.gbpa
    }

    /// A linear stream table of 64 bypass STEs in the arena, as firmware
    /// might leave it: its base and STRTAB_BASE_CFG values.
    fn firmware_bypass_table(&self) -> (u64, u32) {
        let (pa, _) = self.arena.alloc(64 * 64, 64 * 64).expect("arena");
        for sid in 0..64u64 {
            // V = 1, Config = 0b100 (bypass), §5.2.
            self.arena.write64(pa + sid * 64, 1 | (0b100 << 1));
        }
        (pa, 6)
    }

    /// IDR1.TABLES_PRESET (30) / QUEUES_PRESET (29): the stream table base
    /// or the queue bases are fixed by the implementation (§6.3.2); writes
    /// to those registers are ignored. The preset table is firmware's
    /// bypass table: enabling the SMMU on it would let every stream through.
    fn install_presets(&self) {
        let idr1 = self.st.borrow().idr[1];
        if idr1 & (1 << 30) != 0 {
            let (pa, cfg) = self.firmware_bypass_table();
            let mut st = self.st.borrow_mut();
            st.regs.strtab_base = pa;
            st.regs.strtab_base_cfg = cfg;
        }
        if idr1 & (1 << 29) != 0 {
            let (cq, _) = self.arena.alloc(16 << 4, 16 << 4).expect("arena");
            let (eq, _) = self.arena.alloc(32 << 4, 32 << 4).expect("arena");
            let mut st = self.st.borrow_mut();
            st.regs.cmdq_base = cq | 4;
            st.regs.evtq_base = eq | 4;
        }
    }

    fn tables_preset(st: &State) -> bool {
        st.idr[1] & (1 << 30) != 0
    }

    fn queues_preset(st: &State) -> bool {
        st.idr[1] & (1 << 29) != 0
    }

    /// Pretends firmware left the SMMU enabled (SMMUEN = 1, GBPA still at
    /// its bypass reset value) on a linear stream table of bypass entries
    /// (worst case): the driver must block DMA before touching anything.
    pub fn firmware_left_enabled(&self) {
        let (pa, cfg) = self.firmware_bypass_table();
        let mut st = self.st.borrow_mut();
        if !Self::tables_preset(&st) {
            st.regs.strtab_base = pa;
            st.regs.strtab_base_cfg = cfg;
        }
        st.regs.cr0 = 1;
        st.regs.cr0ack = 1;
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}
