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
// Arena: host memory the model reads by physical address.
// ---------------------------------------------------------------------------

/// Physical address of the first arena's first byte (deliberately not the
/// host virtual address, to catch VA/PA confusion). Each arena gets its own
/// 4 GiB window above it, so two models never share physical addresses.
pub const ARENA_BASE: u64 = 0x8_0000_0000;

static NEXT_ARENA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Arena {
    mem: NonNull<u8>,
    size: usize,
    pub base: u64,
    st: RefCell<ArenaState>,
}

#[derive(Default)]
struct ArenaState {
    bump: usize,
    free: BTreeMap<u32, Vec<usize>>,
    live: BTreeMap<u64, usize>,
    errors: Vec<String>,
    /// Extra alignment offset added to the next allocation (fault injection).
    misalign_next: bool,
    /// Remaining allocations before `alloc` fails (fault injection).
    fail_after: Option<usize>,
}

impl Arena {
    pub fn new(size: usize) -> Self {
        let n = NEXT_ARENA.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
        Self::at(size, ARENA_BASE + n * 0x1_0000_0000)
    }

    /// An arena whose first byte is at physical address `base` (for SMMUs
    /// whose output size cannot reach the default windows).
    pub fn at(size: usize, base: u64) -> Self {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero size, valid layout.
        let p = unsafe { alloc_zeroed(layout) };
        Arena {
            mem: NonNull::new(p).expect("arena allocation"),
            size,
            base,
            st: RefCell::default(),
        }
    }

    fn off(&self, pa: u64, len: usize) -> Option<usize> {
        let off = pa.checked_sub(self.base)? as usize;
        (off.checked_add(len)? <= self.size).then_some(off)
    }

    pub fn alloc(&self, size: usize, align: usize) -> Option<(u64, usize)> {
        let mut st = self.st.borrow_mut();
        if let Some(n) = st.fail_after.as_mut() {
            if *n == 0 {
                return None;
            }
            *n -= 1;
        }
        let n = size.max(align).max(64).next_power_of_two();
        let order = n.trailing_zeros();
        let off = match st.free.get_mut(&order).and_then(|v| v.pop()) {
            Some(o) => o,
            None => {
                let o = (st.bump + n - 1) & !(n - 1);
                if o + n > self.size {
                    return None;
                }
                st.bump = o + n;
                o
            }
        };
        // SAFETY: `off + n <= size`, inside our allocation.
        unsafe { std::ptr::write_bytes(self.mem.as_ptr().add(off), 0, n) };
        let mut pa = self.base + off as u64;
        if std::mem::take(&mut st.misalign_next) {
            pa += 64;
        }
        st.live.insert(pa, n);
        Some((pa, n))
    }

    pub fn free(&self, pa: u64, len: usize) {
        let mut st = self.st.borrow_mut();
        match st.live.remove(&pa) {
            Some(n) if n == len || len <= n => {
                let order = n.trailing_zeros();
                st.free
                    .entry(order)
                    .or_default()
                    .push((pa - self.base) as usize & !(n - 1));
            }
            _ => st.errors.push(format!("free of non-live {pa:#x}+{len:#x}")),
        }
    }

    /// `true` when `[pa, pa+len)` lies inside one live allocation.
    pub fn inside_live(&self, pa: u64, len: usize) -> bool {
        let st = self.st.borrow();
        st.live
            .range(..=pa)
            .next_back()
            .is_some_and(|(&start, &n)| pa + len as u64 <= start + n as u64)
    }

    pub fn live_allocations(&self) -> usize {
        self.st.borrow().live.len()
    }

    pub fn errors(&self) -> Vec<String> {
        self.st.borrow().errors.clone()
    }

    pub fn set_fail_after(&self, n: Option<usize>) {
        self.st.borrow_mut().fail_after = n;
    }

    pub fn misalign_next(&self) {
        self.st.borrow_mut().misalign_next = true;
    }

    pub fn virt(&self, pa: u64) -> Option<NonNull<u8>> {
        let off = self.off(pa, 1)?;
        // SAFETY: `off < size`.
        NonNull::new(unsafe { self.mem.as_ptr().add(off) })
    }

    pub fn read64(&self, pa: u64) -> Option<u64> {
        if !pa.is_multiple_of(8) {
            return None;
        }
        let off = self.off(pa, 8)?;
        // SAFETY: in bounds, 8-aligned (base is 2 MiB aligned).
        Some(unsafe { self.mem.as_ptr().add(off).cast::<u64>().read_volatile() })
    }

    pub fn write64(&self, pa: u64, v: u64) -> bool {
        if !pa.is_multiple_of(8) {
            return false;
        }
        let Some(off) = self.off(pa, 8) else {
            return false;
        };
        // SAFETY: in bounds, aligned.
        unsafe { self.mem.as_ptr().add(off).cast::<u64>().write_volatile(v) };
        true
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.size, 16).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.mem.as_ptr(), layout) };
    }
}

// ---------------------------------------------------------------------------
// Flavours (QEMU-FACTS.md)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `virt` 10.0: stage 1 + stage 2.
    Nested,
    /// `virt-9.1`, stage=1.
    S1Only,
    /// `virt-9.1`, stage=2.
    S2Only,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Nested, Flavour::S1Only, Flavour::S2Only];

    pub fn idr0(self) -> u32 {
        match self {
            Flavour::Nested => 0x0d44_101b,
            Flavour::S1Only => 0x0d44_101a,
            Flavour::S2Only => 0x0d44_1019,
        }
    }

    /// The IDR values QEMU 10 shows for this flavour.
    pub fn idr(self) -> [u32; 6] {
        let s2 = self.idr0() & 1 != 0;
        // IDR1: SIDSIZE=16 [5:0], EVENTQS=19 [20:16], CMDQS=19 [25:21].
        let idr1 = 16 | (19 << 16) | (19 << 21);
        // IDR3: HAD (2), XNX (4, stage 2 only), RIL (10), BBML=2 [12:11].
        let idr3 = (1 << 2) | if s2 { 1 << 4 } else { 0 } | (1 << 10) | (2 << 11);
        // IDR5: OAS=44 bits (0b100) [2:0], GRAN4K/16K/64K (4,5,6).
        let idr5 = 0b100 | (1 << 4) | (1 << 5) | (1 << 6);
        [self.idr0(), idr1, 0, idr3, 0, idr5]
    }
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
    pub const READ: Access = Access {
        write: false,
        privileged: false,
    };
    pub const WRITE: Access = Access {
        write: true,
        privileged: false,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Translated: output address, whether writes are allowed, memory type.
    Ok {
        pa: u64,
        writable: bool,
        device: bool,
    },
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
        Knobs {
            ack_cr0: true,
            ack_gbpa: true,
            ack_irq: true,
            cmdq_mode: CmdqMode::Immediate,
            abort_fetches: 0,
        }
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
                regs: Regs {
                    gbpa: 0x1000,
                    ..Regs::default()
                },
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
        self.dirty
            .borrow()
            .get((w / 64) as usize)
            .is_some_and(|x| x & (1 << (w % 64)) != 0)
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

    // ---------------- stream table access ----------------

    fn strtab_geometry(st: &State) -> (u64, bool, u32, u32) {
        let cfg = u64::from(st.regs.strtab_base_cfg);
        let log2size = bits(cfg, 0, 6) as u32;
        let split = bits(cfg, 6, 5) as u32;
        let two_level = bits(cfg, 16, 2) == 1;
        let base = st.regs.strtab_base & ((1u64 << 52) - 1) & !0x3f;
        (base, two_level, log2size, split)
    }

    /// Where the STE of `sid` lives, locating it through the level-1
    /// descriptor `l1` when given (a cached one) or else the one in memory;
    /// `None` when the level-1 descriptor is invalid.
    fn ste_addr(&self, st: &State, sid: u32, l1: Option<u64>) -> Result<Option<u64>, FaultKind> {
        let (base, two_level, log2size, split) = Self::strtab_geometry(st);
        let sidsize = st.idr[1] & 0x3f;
        if u64::from(sid) >= 1u64 << log2size.min(sidsize) {
            return Err(FaultKind::BadStreamId);
        }
        if !two_level {
            return Ok(Some(base + u64::from(sid) * 64));
        }
        let desc = match l1 {
            Some(d) => d,
            None => self.read_l1(st, sid)?,
        };
        let span = bits(desc, 0, 5) as u32;
        if span == 0 {
            return Ok(None);
        }
        let l2 = desc & ((1u64 << 52) - 1) & !0x3f;
        let idx = sid & ((1 << split) - 1);
        if span > 12 || idx >= 1 << (span - 1) {
            return Err(FaultKind::BadSte);
        }
        Ok(Some(l2 + u64::from(idx) * 64))
    }

    /// The level-1 descriptor of `sid`'s span, from memory.
    fn read_l1(&self, st: &State, sid: u32) -> Result<u64, FaultKind> {
        let (base, _, _, split) = Self::strtab_geometry(st);
        self.dev_read64(base + u64::from(sid >> split) * 8)
            .ok_or(FaultKind::SteFetch)
    }

    fn read_ste_at(&self, addr: u64) -> Result<[u64; 8], FaultKind> {
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self
                .dev_read64(addr + i as u64 * 8)
                .ok_or(FaultKind::SteFetch)?;
        }
        Ok(w)
    }

    /// Reads the STE of `sid` from memory as an uncached fetch would.
    fn fetch_ste(&self, st: &State, sid: u32) -> Result<Option<[u64; 8]>, FaultKind> {
        Ok(self.snap(st, sid)?.map(|(_, w)| w))
    }

    /// The STE of `sid` in memory, with its address.
    fn snap(&self, st: &State, sid: u32) -> Result<Snap, FaultKind> {
        match self.ste_addr(st, sid, None)? {
            Some(a) => Ok(Some((a, self.read_ste_at(a)?))),
            None => Ok(None),
        }
    }

    /// A fetch through the caches: the level-1 descriptor comes from the
    /// L1STD cache (filled on a miss, invalid descriptors included). An STE
    /// read through a stale descriptor from freed memory is a violation.
    fn fetch_ste_cached(&self, st: &mut State, sid: u32) -> Result<Option<[u64; 8]>, FaultKind> {
        let (_, two_level, _, split) = Self::strtab_geometry(st);
        let l1 = if two_level {
            let span = sid >> split;
            let desc = match st.l1_cache.get(&span) {
                Some(d) => *d,
                None => {
                    let d = self.read_l1(st, sid)?;
                    st.l1_cache.insert(span, d);
                    d
                }
            };
            Some(desc)
        } else {
            None
        };
        let Some(addr) = self.ste_addr(st, sid, l1)? else {
            return Ok(None);
        };
        if !self.arena.inside_live(addr, 64) {
            st.violations.push(format!(
                "STE of sid {sid} fetched from freed memory at {addr:#x} (stale level-1 descriptor)"
            ));
        }
        self.read_ste_at(addr).map(Some)
    }

    fn decode_cd(&self, st: &State, ptr: u64) -> Result<S1Cfg, FaultKind> {
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self
                .dev_read64(ptr + i as u64 * 8)
                .ok_or(FaultKind::CdFetch)?;
        }
        let w0 = w[0];
        // §5.4: V (31), AA64 (41), A (46), S (44), HA/HD (43/42), ENDI (15).
        if bits(w0, 31, 1) == 0 || bits(w0, 41, 1) == 0 {
            return Err(FaultKind::BadCd);
        }
        if bits(w0, 46, 1) == 0
            || bits(w0, 44, 1) == 1
            || bits(w0, 42, 2) != 0
            || bits(w0, 15, 1) == 1
        {
            return Err(FaultKind::BadCd);
        }
        let t0sz = bits(w0, 0, 6) as u8;
        let tg0 = bits(w0, 6, 2);
        let epd0 = bits(w0, 14, 1) == 1;
        let epd1 = bits(w0, 30, 1) == 1;
        if !epd0 && (!(16..=39).contains(&t0sz) || tg0 != 0) {
            // The model implements the 4 KiB granule only.
            return Err(FaultKind::BadCd);
        }
        if !epd1 {
            // TTB1 walks are not modelled (and never wanted here).
            return Err(FaultKind::BadCd);
        }
        let ips = pa_bits(bits(w0, 32, 3)).ok_or(FaultKind::BadCd)?;
        let out_bits = ips.min(Self::oas(st));
        let ttb0 = w[1] & ((1u64 << 52) - 1) & !0xf;
        if ttb0 >> out_bits != 0 {
            return Err(FaultKind::BadCd);
        }
        Ok(S1Cfg {
            asid: bits(w0, 48, 16) as u16,
            ttb0,
            t0sz,
            out_bits,
            record: bits(w0, 45, 1) == 1,
            affd: bits(w0, 35, 1) == 1,
            mair: w[3],
            epd0,
        })
    }

    /// Decodes an STE from the tables of §5.2. `Err` = C_BAD_STE etc.
    fn decode_ste(&self, st: &State, w: &[u64; 8]) -> Result<Cfg, FaultKind> {
        if w[0] & 1 == 0 {
            return Err(FaultKind::BadSte);
        }
        let config = bits(w[0], 1, 3);
        if config & 0b100 == 0 {
            return Ok(Cfg::Abort);
        }
        if config == 0b100 {
            return Ok(Cfg::Bypass);
        }
        let s1 = config & 1 != 0;
        let s2 = config & 2 != 0;
        if (s1 && !Self::s1p(st)) || (s2 && !Self::s2p(st)) {
            return Err(FaultKind::BadSte);
        }
        let vmid = bits(w[2], 0, 16) as u16;
        let s2cfg = if s2 {
            let t0sz = bits(w[2], 32, 6) as u8;
            let sl0 = bits(w[2], 38, 2) as u8;
            let sh0 = bits(w[2], 44, 2);
            let tg = bits(w[2], 46, 2);
            let ps = bits(w[2], 48, 3);
            let aa64 = bits(w[2], 51, 1);
            let endi = bits(w[2], 52, 1);
            let affd = bits(w[2], 53, 1) == 1;
            let hd_ha = bits(w[2], 55, 2);
            let s2s = bits(w[2], 57, 1);
            let s2r = bits(w[2], 58, 1) == 1;
            let ttb = w[3] & ((1u64 << 52) - 1) & !0xf;
            if aa64 == 0 || tg != 0 || sl0 == 3 || endi == 1 || s2s == 1 || hd_ha != 0 || sh0 == 1 {
                return Err(FaultKind::BadSte);
            }
            let out_bits = pa_bits(ps).ok_or(FaultKind::BadSte)?.min(Self::oas(st));
            if ttb >> out_bits != 0 {
                return Err(FaultKind::BadSte);
            }
            // S2T0SZ: at most 39, at least max(16, 64 - effective PS).
            if t0sz > 39 || u32::from(t0sz) < (64 - u32::from(out_bits)).max(16) {
                return Err(FaultKind::BadSte);
            }
            let start_level = 2 - sl0;
            // Arm ARM D8.2 (stage 2 starting level, 4 KiB granule): a walk
            // may start at level 0 only with an output size above 42 bits.
            if start_level == 0 && out_bits <= 42 {
                return Err(FaultKind::BadSte);
            }
            let input_bits = 64 - u32::from(t0sz);
            let shift = 12 + 9 * (3 - u32::from(start_level));
            // At least one entry and at most 16 concatenated tables.
            if input_bits <= shift || input_bits - shift > 9 + 4 {
                return Err(FaultKind::BadSte);
            }
            // The top-level (possibly concatenated) table is aligned to its size.
            let top_bytes = 8u64 << (input_bits - shift);
            if !ttb.is_multiple_of(top_bytes) {
                return Err(FaultKind::BadSte);
            }
            Some(S2Cfg {
                vmid,
                ttb,
                t0sz,
                start_level,
                out_bits,
                record: s2r,
                affd,
            })
        } else {
            None
        };
        let s1cfg = if s1 {
            let s1fmt = bits(w[0], 4, 2);
            let cdmax = bits(w[0], 59, 5);
            let s1dss = bits(w[1], 0, 2);
            let eats = bits(w[1], 28, 2);
            let strw = bits(w[1], 30, 2);
            let ssidsize = bits(u64::from(st.idr[1]), 6, 5);
            if cdmax != 0 && ssidsize == 0 {
                return Err(FaultKind::BadSte);
            }
            if s1fmt != 0 || eats != 0 || strw != 0 {
                return Err(FaultKind::BadSte);
            }
            // QEMU applies S1DSS even with S1CDMax = 0: terminate = abort,
            // bypass = bypass. Model the same so the driver's choice is tested.
            match s1dss {
                0 => return Ok(Cfg::Abort),
                1 => return Ok(Cfg::Bypass),
                3 => return Err(FaultKind::BadSte),
                _ => {}
            }
            let ptr = w[0] & ((1u64 << 52) - 1) & !0x3f;
            // In a nested configuration the CD pointer is an IPA.
            let cd_pa = match s2cfg {
                Some(s2) => match self.walk_s2(&s2, ptr, Access::READ) {
                    Ok(l) => l.oa | (ptr & (l.size - 1)),
                    Err(_) => return Err(FaultKind::CdFetch),
                },
                None => ptr,
            };
            Some(self.decode_cd(st, cd_pa)?)
        } else {
            None
        };
        Ok(match (s1cfg, s2cfg) {
            (Some(s1), None) => Cfg::S1 {
                vmid: Self::s2p(st).then_some(vmid),
                s1,
            },
            (None, Some(s2)) => Cfg::S2(s2),
            (Some(s1), Some(s2)) => Cfg::Nested { s1, s2 },
            (None, None) => Cfg::Abort,
        })
    }

    // ---------------- table walks (Arm ARM D8, 4 KiB granule) ----------------

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        root: u64,
        start_level: u8,
        input_bits: u32,
        out_bits: u8,
        va: u64,
        stage2: bool,
        affd: bool,
        mair: u64,
        table_ipa: Option<&S2Cfg>,
    ) -> Result<Leaf, FaultKind> {
        if va >> input_bits != 0 {
            return Err(FaultKind::Translation);
        }
        let mut table = root;
        let mut level = start_level;
        loop {
            let shift = 12 + 9 * (3 - u32::from(level));
            let idx_bits = if level == start_level {
                input_bits - shift
            } else {
                9
            };
            let idx = (va >> shift) & ((1u64 << idx_bits) - 1);
            let mut desc_addr = table + idx * 8;
            if let Some(s2) = table_ipa {
                // Nested: stage-1 table addresses are IPAs.
                let l = self
                    .walk_s2(s2, desc_addr, Access::READ)
                    .map_err(|_| FaultKind::Translation)?;
                desc_addr = l.oa | (desc_addr & (l.size - 1));
            }
            let desc = self.dev_read64(desc_addr).ok_or(FaultKind::WalkEabt)?;
            if desc & 1 == 0 {
                return Err(FaultKind::Translation);
            }
            let is_table_or_page = desc & 2 != 0;
            if level < 3 && is_table_or_page {
                let next = desc & ADDR_47_12;
                if next >> out_bits != 0 {
                    return Err(FaultKind::AddrSize);
                }
                table = next;
                level += 1;
                continue;
            }
            if level == 3 && !is_table_or_page {
                return Err(FaultKind::Translation);
            }
            if level == 0 {
                // No level-0 blocks with 4 KiB granule (without LPA2).
                return Err(FaultKind::Translation);
            }
            let size = 1u64 << shift;
            let oa = desc & ADDR_47_12 & !(size - 1);
            if oa >> out_bits != 0 {
                return Err(FaultKind::AddrSize);
            }
            if desc & (1 << 10) == 0 && !affd {
                return Err(FaultKind::Access);
            }
            return Ok(if stage2 {
                // S2AP [7:6]: bit 6 read, bit 7 write. MemAttr [5:2]:
                // 0b00xx = Device.
                let s2ap = bits(desc, 6, 2);
                Leaf {
                    va: va & !(size - 1),
                    size,
                    oa,
                    read: s2ap & 1 != 0,
                    write: s2ap & 2 != 0,
                    unpriv: true,
                    device: bits(desc, 4, 2) == 0,
                    global: true,
                }
            } else {
                // AP[2:1] [7:6]: AP[2] read-only, AP[1] EL0 (unprivileged).
                let ap = bits(desc, 6, 2);
                let attr = bits(desc, 2, 3);
                let mair_byte = (mair >> (8 * attr)) & 0xff;
                Leaf {
                    va: va & !(size - 1),
                    size,
                    oa,
                    read: true,
                    write: ap & 2 == 0,
                    unpriv: ap & 1 != 0,
                    device: mair_byte & 0xf0 == 0,
                    global: desc & (1 << 11) == 0,
                }
            });
        }
    }

    fn walk_s2(&self, s2: &S2Cfg, ipa: u64, _access: Access) -> Result<Leaf, FaultKind> {
        self.walk(
            s2.ttb,
            s2.start_level,
            64 - u32::from(s2.t0sz),
            s2.out_bits,
            ipa,
            true,
            s2.affd,
            0,
            None,
        )
    }

    fn s1_start(t0sz: u8) -> (u8, u32) {
        let input_bits = 64 - u32::from(t0sz);
        let level = if input_bits > 39 {
            0
        } else if input_bits > 30 {
            1
        } else {
            2
        };
        (level, input_bits)
    }

    fn check_perm(leaf: &Leaf, access: Access) -> bool {
        (!access.write || leaf.write)
            && (access.write || leaf.read)
            && (access.privileged || leaf.unpriv)
    }

    // ---------------- translation ----------------

    /// Translates one access of `sid` to `iova`, using (and filling) the
    /// configuration cache and TLB, recording events like the SMMU.
    pub fn translate(&self, sid: u32, iova: u64, access: Access) -> Outcome {
        self.translate_inner(sid, iova, access, true)
    }

    /// Same walk, but from memory only (no caches, no events): what a
    /// freshly reset SMMU would do.
    pub fn translate_uncached(&self, sid: u32, iova: u64, access: Access) -> Outcome {
        self.translate_inner(sid, iova, access, false)
    }

    fn translate_inner(&self, sid: u32, iova: u64, access: Access, cached: bool) -> Outcome {
        let mut st = self.st.borrow_mut();
        if st.regs.cr0 & 1 == 0 {
            if st.regs.gbpa & (1 << 20) != 0 {
                return Outcome::Abort;
            }
            if st.driver_started {
                st.violations
                    .push(format!("bypass: SMMUEN=0 with GBPA.ABORT=0 (sid {sid})"));
            }
            return Outcome::Bypass;
        }
        let cfg = match (cached, st.cfg_cache.get(&sid).copied()) {
            (true, Some(c)) => Ok(c),
            (true, None) => {
                st.cfg_fetches += 1;
                let r = match self.fetch_ste_cached(&mut st, sid) {
                    Ok(Some(w)) => self.decode_ste(&st, &w),
                    Ok(None) => Err(FaultKind::BadStreamId),
                    Err(e) => Err(e),
                };
                // The CD comes from the CD cache when it holds one for this
                // StreamID, whatever the STE now points at: only CFGI_CD*
                // drops it (§4.3).
                let r = r.map(|c| Self::with_cached_cd(&mut st, sid, c));
                if let Ok(c) = r {
                    st.cfg_cache.insert(sid, c);
                }
                r
            }
            (false, _) => {
                st.cfg_fetches += 1;
                match self.fetch_ste(&st, sid) {
                    Ok(Some(w)) => self.decode_ste(&st, &w),
                    Ok(None) => Err(FaultKind::BadStreamId),
                    Err(e) => Err(e),
                }
            }
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(kind) => {
                if cached {
                    self.record(&mut st, kind, sid, iova, access, false);
                }
                return Outcome::Fault {
                    kind,
                    stage2: false,
                };
            }
        };
        let r = match cfg {
            Cfg::Abort => return Outcome::Abort,
            Cfg::Bypass => {
                st.violations
                    .push(format!("bypass STE in use for sid {sid}"));
                return Outcome::Bypass;
            }
            Cfg::S2(s2) => self
                .translate_s2(&mut st, &s2, iova, access, cached)
                .map_err(|k| (k, true, s2.record)),
            Cfg::S1 { vmid, s1 } => self
                .translate_s1(&mut st, vmid, &s1, None, iova, access, cached)
                .map_err(|k| (k, false, s1.record)),
            Cfg::Nested { s1, s2 } => self.translate_nested(&mut st, &s1, &s2, iova, access, cached),
        };
        match r {
            Ok(leaf) => Outcome::Ok {
                pa: leaf.oa | (iova & (leaf.size - 1)),
                writable: leaf.write,
                device: leaf.device,
            },
            Err((kind, stage2, record)) => {
                if cached && record {
                    self.record(&mut st, kind, sid, iova, access, stage2);
                }
                Outcome::Fault { kind, stage2 }
            }
        }
    }

    fn translate_s2(
        &self,
        st: &mut State,
        s2: &S2Cfg,
        ipa: u64,
        access: Access,
        cached: bool,
    ) -> Result<Leaf, FaultKind> {
        let tag = TlbTag::S2 { vmid: s2.vmid };
        let leaf = match cached
            .then(|| {
                st.tlb
                    .iter()
                    .find(|e| e.tag == tag && ipa.wrapping_sub(e.leaf.va) < e.leaf.size)
            })
            .flatten()
        {
            Some(e) => e.leaf,
            None => {
                st.walks += 1;
                let leaf = self.walk_s2(s2, ipa, access)?;
                if cached {
                    st.tlb.push(TlbEntry {
                        tag,
                        leaf,
                        root: s2.ttb,
                        stage2: true,
                        start_level: s2.start_level,
                        input_bits: 64 - s2.t0sz,
                        out_bits: s2.out_bits,
                        affd: s2.affd,
                        mair: 0,
                        nested: None,
                    });
                }
                leaf
            }
        };
        if !Self::check_perm(&leaf, access) {
            return Err(FaultKind::Permission);
        }
        Ok(leaf)
    }

    #[allow(clippy::too_many_arguments)]
    fn translate_s1(
        &self,
        st: &mut State,
        vmid: Option<u16>,
        s1: &S1Cfg,
        nested: Option<&S2Cfg>,
        va: u64,
        access: Access,
        cached: bool,
    ) -> Result<Leaf, FaultKind> {
        if s1.epd0 {
            return Err(FaultKind::Translation);
        }
        let hit = cached
            .then(|| {
                st.tlb.iter().find(|e| match e.tag {
                    TlbTag::S1 { vmid: v, asid } => {
                        v == vmid
                            && (e.leaf.global || asid == s1.asid)
                            && va.wrapping_sub(e.leaf.va) < e.leaf.size
                    }
                    TlbTag::S2 { .. } => false,
                })
            })
            .flatten();
        let leaf = match hit {
            Some(e) => e.leaf,
            None => {
                st.walks += 1;
                let (start, input_bits) = Self::s1_start(s1.t0sz);
                // Nested: `walk` translates each table address through stage 2.
                let leaf = self.walk(
                    s1.ttb0,
                    start,
                    input_bits,
                    s1.out_bits,
                    va,
                    false,
                    s1.affd,
                    s1.mair,
                    nested,
                )?;
                if cached {
                    st.tlb.push(TlbEntry {
                        tag: TlbTag::S1 {
                            vmid,
                            asid: s1.asid,
                        },
                        leaf,
                        root: s1.ttb0,
                        stage2: false,
                        start_level: start,
                        input_bits: input_bits as u8,
                        out_bits: s1.out_bits,
                        affd: s1.affd,
                        mair: s1.mair,
                        nested: None,
                    });
                }
                leaf
            }
        };
        if !Self::check_perm(&leaf, access) {
            return Err(FaultKind::Permission);
        }
        Ok(leaf)
    }

    /// The CD part of `c` as the CD cache has it for `sid` (inserting the
    /// one just decoded on a miss).
    fn with_cached_cd(st: &mut State, sid: u32, c: Cfg) -> Cfg {
        let pick = |st: &mut State, s1: S1Cfg| *st.cd_cache.entry(sid).or_insert(s1);
        match c {
            Cfg::S1 { vmid, s1 } => Cfg::S1 { vmid, s1: pick(st, s1) },
            Cfg::Nested { s1, s2 } => Cfg::Nested { s1: pick(st, s1), s2 },
            other => other,
        }
    }

    /// Nested translation. The TLB keeps one combined entry (VA → PA, the
    /// smaller of the two leaves, both stages' permissions) tagged with the
    /// ASID and the stage-2 VMID: invalidating the stage-2 mapping by IPA
    /// does not remove it.
    fn translate_nested(
        &self,
        st: &mut State,
        s1: &S1Cfg,
        s2: &S2Cfg,
        va: u64,
        access: Access,
        cached: bool,
    ) -> Result<Leaf, (FaultKind, bool, bool)> {
        let tag = TlbTag::S1 { vmid: Some(s2.vmid), asid: s1.asid };
        if cached {
            let hit = st.tlb.iter().find(|e| {
                e.nested.is_some()
                    && matches!(e.tag, TlbTag::S1 { vmid, asid } if vmid == Some(s2.vmid) && (e.leaf.global || asid == s1.asid))
                    && va.wrapping_sub(e.leaf.va) < e.leaf.size
            });
            if let Some(e) = hit {
                let leaf = e.leaf;
                return if Self::check_perm(&leaf, access) {
                    Ok(leaf)
                } else {
                    Err((FaultKind::Permission, false, s1.record))
                };
            }
        }
        st.walks += 1;
        let leaf = self.walk_nested(s1, s2, va).map_err(|(k, stage2)| (k, stage2, if stage2 { s2.record } else { s1.record }))?;
        if cached {
            let (start, input_bits) = Self::s1_start(s1.t0sz);
            st.tlb.push(TlbEntry {
                tag,
                leaf,
                root: s1.ttb0,
                stage2: false,
                start_level: start,
                input_bits: input_bits as u8,
                out_bits: s1.out_bits,
                affd: s1.affd,
                mair: s1.mair,
                nested: Some(*s2),
            });
        }
        if !Self::check_perm(&leaf, access) {
            return Err((FaultKind::Permission, true, s2.record));
        }
        Ok(leaf)
    }

    /// Walks stage 1 (its table addresses translated by stage 2), then the
    /// output IPA through stage 2: the combined leaf. `Err((kind, stage2))`.
    fn walk_nested(&self, s1: &S1Cfg, s2: &S2Cfg, va: u64) -> Result<Leaf, (FaultKind, bool)> {
        if s1.epd0 {
            return Err((FaultKind::Translation, false));
        }
        let (start, input_bits) = Self::s1_start(s1.t0sz);
        let l1 = self
            .walk(s1.ttb0, start, input_bits, s1.out_bits, va, false, s1.affd, s1.mair, Some(s2))
            .map_err(|k| (k, false))?;
        let ipa = l1.oa | (va & (l1.size - 1));
        let l2 = self.walk_s2(s2, ipa, Access::READ).map_err(|k| (k, true))?;
        let size = l1.size.min(l2.size);
        let pa = l2.oa | (ipa & (l2.size - 1));
        Ok(Leaf {
            va: va & !(size - 1),
            size,
            oa: pa & !(size - 1),
            read: l1.read && l2.read,
            write: l1.write && l2.write,
            unpriv: l1.unpriv,
            device: l1.device || l2.device,
            global: l1.global,
        })
    }

    // ---------------- events (§7.3) ----------------

    fn record(
        &self,
        st: &mut State,
        kind: FaultKind,
        sid: u32,
        iova: u64,
        access: Access,
        stage2: bool,
    ) {
        if st.regs.cr0 & 0b100 == 0 {
            return;
        }
        let mut w = [0u64; 4];
        w[0] = kind.event_code() | (u64::from(sid) << 32);
        let translation = matches!(
            kind,
            FaultKind::Translation
                | FaultKind::AddrSize
                | FaultKind::Access
                | FaultKind::Permission
                | FaultKind::WalkEabt
        );
        if translation {
            // RnW (35), PnU (33), S2 (39), CLASS=IN (0b10 at [41:40]).
            w[1] = (u64::from(!access.write) << 35)
                | (u64::from(access.privileged) << 33)
                | (u64::from(stage2) << 39)
                | (0b10 << 40);
            w[2] = iova;
            if stage2 {
                w[3] = iova & ADDR_51_12;
            }
        }
        self.push_event(st, w);
    }

    /// Writes a raw event record (tests use it to exercise decoding and
    /// overflow).
    pub fn inject_event(&self, w: [u64; 4]) {
        let mut st = self.st.borrow_mut();
        self.push_event(&mut st, w);
    }

    fn push_event(&self, st: &mut State, w: [u64; 4]) {
        if st.regs.cr0 & 0b100 == 0 {
            return;
        }
        let log2 = bits(st.regs.evtq_base, 0, 5) as u32;
        let base = st.regs.evtq_base & ((1u64 << 52) - 1) & !0x1f;
        let mask = (1u32 << (log2 + 1)) - 1;
        let prod = st.regs.evtq_prod & mask;
        let cons = st.regs.evtq_cons & mask;
        if (prod ^ cons) == 1 << log2 {
            // Full: the record is lost; flag overflow unless already flagged
            // and not yet acknowledged (ch. 7).
            let ovflg = st.regs.evtq_prod >> 31;
            let ovack = st.regs.evtq_cons >> 31;
            if ovflg == ovack {
                st.regs.evtq_prod ^= 1 << 31;
            }
            st.events_dropped += 1;
            return;
        }
        let idx = u64::from(prod & ((1 << log2) - 1));
        if (0..4).any(|i| self.is_dirty(base + idx * 32 + i * 8)) {
            self.unpublished_reads.borrow_mut().push(format!(
                "SMMU wrote an event over unpublished CPU data at {:#x}",
                base + idx * 32
            ));
        }
        for (i, v) in w.iter().enumerate() {
            if !self.arena.write64(base + idx * 32 + i as u64 * 8, *v) {
                st.regs.gerror ^= 1 << 2; // EVENTQ_ABT_ERR
                return;
            }
        }
        st.regs.evtq_prod = (st.regs.evtq_prod & (1 << 31)) | ((prod + 1) & mask);
        st.events_recorded += 1;
    }

    // ---------------- command queue (§4) ----------------

    fn cmdq_halted(st: &State) -> bool {
        (st.regs.gerror ^ st.regs.gerrorn) & 1 != 0
    }

    fn process_cmdq(&self, st: &mut State, max: u32) {
        if st.regs.cr0 & 0b1000 == 0 {
            return;
        }
        let log2 = bits(st.regs.cmdq_base, 0, 5) as u32;
        let base = st.regs.cmdq_base & ((1u64 << 52) - 1) & !0x1f;
        let mask = (1u32 << (log2 + 1)) - 1;
        let mut done = 0;
        while done < max {
            if Self::cmdq_halted(st) {
                return;
            }
            let prod = st.regs.cmdq_prod & mask;
            let cons = st.regs.cmdq_cons & mask;
            if prod == cons {
                return;
            }
            let idx = u64::from(cons & ((1 << log2) - 1));
            if st.knobs.abort_fetches > 0 {
                // CERROR_ABT: the fetch of this (valid) command aborted; it
                // did not run, CONS stays on it.
                st.knobs.abort_fetches -= 1;
                self.cmd_error(st, 2);
                return;
            }
            let (Some(w0), Some(w1)) = (
                self.dev_read64(base + idx * 16),
                self.dev_read64(base + idx * 16 + 8),
            ) else {
                self.cmd_error(st, 2);
                return;
            };
            match self.execute(st, w0, w1) {
                Ok(()) => {
                    st.regs.cmdq_cons = (st.regs.cmdq_cons & !mask) | ((cons + 1) & mask);
                    // ERR is cleared once the queue moves on.
                    st.regs.cmdq_cons &= !(0x7f << 24);
                }
                Err(code) => {
                    self.cmd_error(st, code);
                    return;
                }
            }
            done += 1;
        }
    }

    fn cmd_error(&self, st: &mut State, code: u32) {
        st.regs.cmdq_cons = (st.regs.cmdq_cons & !(0x7f << 24)) | (code << 24);
        if !Self::cmdq_halted(st) {
            st.regs.gerror ^= 1;
        }
    }

    fn execute(&self, st: &mut State, w0: u64, w1: u64) -> Result<(), u32> {
        const ILL: u32 = 1;
        let op = bits(w0, 0, 8) as u8;
        st.opcodes.push(op);
        let s1p = Self::s1p(st);
        let s2p = Self::s2p(st);
        let sid = bits(w0, 32, 32) as u32;
        let vmid = bits(w0, 32, 16) as u16;
        let asid = bits(w0, 48, 16) as u16;
        let ril = bits(u64::from(st.idr[3]), 10, 1) == 1;
        let range_of = |addr: u64| -> (u64, u64) {
            // NUM [16:12], SCALE [24:20], TG [11:10] of word 1 (ch. 4).
            // Without IDR3.RIL these fields are RES0: one address only.
            let tg = bits(w1, 10, 2);
            if tg == 0 || !ril {
                (addr, 1)
            } else {
                let gran = match tg {
                    1 => 12,
                    2 => 14,
                    _ => 16,
                };
                let n = (bits(w0, 12, 5) + 1) << bits(w0, 20, 5);
                (addr, n << gran)
            }
        };
        match op {
            0x01 | 0x02 => {}
            0x03 => {
                if bits(w0, 10, 1) == 1 {
                    return Err(ILL);
                }
                // Leaf = 0 also drops the level-1 descriptor that locates
                // the STE; Leaf = 1 only the STE (§4.3.2).
                let leaf = bits(w1, 0, 1) == 1;
                self.cfgi(st, sid, sid, !leaf);
            }
            0x04 => {
                if bits(w0, 10, 1) == 1 {
                    return Err(ILL);
                }
                // CFGI_STE_RANGE (and CFGI_ALL) act as Leaf = 0 (§4.3.3).
                let range = bits(w1, 0, 5);
                let n = 1u64 << (range + 1);
                let start = u64::from(sid) & !(n - 1);
                self.cfgi(
                    st,
                    start as u32,
                    (start + n - 1).min(u64::from(u32::MAX)) as u32,
                    true,
                );
            }
            0x05 | 0x06 => {
                // CFGI_CD / CFGI_CD_ALL: the cached CDs of the stream (only
                // SubstreamID 0 is modelled), and the STE-level cache entry
                // that embeds them.
                st.cd_cache.remove(&sid);
                st.cfg_cache.remove(&sid);
            }
            0x10 => {
                if !s1p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| matches!(t, TlbTag::S1 { vmid: v, .. } if !s2p || v == Some(vmid)));
                st.tlb.retain(
                    |e| !matches!(e.tag, TlbTag::S1 { vmid: v, .. } if !s2p || v == Some(vmid)),
                );
            }
            0x11 => {
                if !s1p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| matches!(t, TlbTag::S1 { vmid: v, asid: a } if (!s2p || v == Some(vmid)) && a == asid));
                // Global entries are not affected by TLBI by ASID.
                st.tlb.retain(|e| {
                    !matches!(e.tag, TlbTag::S1 { vmid: v, asid: a } if (!s2p || v == Some(vmid)) && a == asid && !e.leaf.global)
                });
            }
            0x12 | 0x13 => {
                if !s1p {
                    return Err(ILL);
                }
                let all_asids = op == 0x13;
                let (addr, len) = range_of(w1 & !0xfff);
                st.tlb.retain(|e| {
                    let hit = matches!(e.tag, TlbTag::S1 { vmid: v, asid: a }
                        if (!s2p || v == Some(vmid)) && (all_asids || a == asid || e.leaf.global));
                    !(hit && overlaps(e.leaf.va, e.leaf.size, addr, len))
                });
            }
            0x20..=0x23 => {
                if !Self::hyp(st) {
                    return Err(ILL);
                }
            }
            0x28 => {
                if !s2p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| match t {
                    TlbTag::S2 { vmid: v } => v == vmid,
                    TlbTag::S1 { vmid: v, .. } => v == Some(vmid),
                });
                st.tlb.retain(|e| match e.tag {
                    TlbTag::S2 { vmid: v } => v != vmid,
                    TlbTag::S1 { vmid: v, .. } => v != Some(vmid),
                });
            }
            0x2a => {
                if !s2p {
                    return Err(ILL);
                }
                let (addr, len) = range_of(w1 & ADDR_51_12);
                st.tlb.retain(|e| {
                    !(e.tag == TlbTag::S2 { vmid } && overlaps(e.leaf.va, e.leaf.size, addr, len))
                });
            }
            0x30 => st.tlb.clear(),
            0x46 => {
                // CMD_SYNC: CS [13:12]; 0b11 is reserved.
                if bits(w0, 12, 2) == 3 {
                    return Err(ILL);
                }
            }
            _ => return Err(ILL),
        }
        Ok(())
    }

    /// CFGI for StreamIDs `lo..=hi`: drop cached configuration (and, with
    /// `l1`, the level-1 descriptors of their spans) and commit the STE
    /// history (playing the adversarial fetch over every version).
    fn cfgi(&self, st: &mut State, lo: u32, hi: u32, l1: bool) {
        st.cfg_cache.retain(|sid, _| *sid < lo || *sid > hi);
        if l1 {
            let (_, _, _, split) = Self::strtab_geometry(st);
            let (a, b) = (lo >> split, hi >> split);
            st.l1_cache.retain(|span, _| *span < a || *span > b);
            self.retire_tables(st, a, b, split);
        }
        let sids: Vec<u32> = st
            .history
            .keys()
            .copied()
            .filter(|s| (lo..=hi).contains(s))
            .collect();
        for sid in sids {
            self.commit(st, sid);
        }
    }

    /// Once the level-1 descriptors of spans `a..=b` are invalidated, no
    /// fetch can still be reading a level-2 table they no longer point at:
    /// versions found there leave every stream's mixing window (the old
    /// committed one still counts as the configuration being replaced).
    fn retire_tables(&self, st: &mut State, a: u32, b: u32, split: u32) {
        let sids: Vec<u32> = st.history.keys().copied().filter(|s| (a..=b).contains(&(s >> split))).collect();
        for sid in sids {
            let here = self.snap(st, sid).ok().flatten().map(|(addr, _)| addr);
            let h = st.history.get_mut(&sid).expect("listed");
            h.snapshots.retain(|v| v.is_none_or(|(addr, _)| Some(addr) == here));
            if h.committed.is_some_and(|c| c.is_some_and(|(addr, _)| Some(addr) != here)) {
                h.old_retired = true;
            }
        }
    }

    fn terminates(s: &Snap) -> bool {
        match s {
            None => true,
            Some((_, w)) => Self::words_terminate(w),
        }
    }

    fn words_terminate(w: &[u64; 8]) -> bool {
        w[0] & 1 == 0 || bits(w[0], 1, 3) & 0b100 == 0
    }

    /// What a fetch of these words configures: `None` when it terminates
    /// (abort, invalid, or an ILLEGAL entry that the SMMU rejects with
    /// C_BAD_STE).
    fn fetched_cfg(&self, st: &State, w: &[u64; 8]) -> Option<Cfg> {
        if Self::words_terminate(w) {
            return None;
        }
        self.decode_ste(st, w).ok()
    }

    fn commit(&self, st: &mut State, sid: u32) {
        let now = self.snap(st, sid).unwrap_or(None);
        let h = st.history.entry(sid).or_default();
        let old = h.committed.unwrap_or(None);
        let mut versions = std::mem::take(&mut h.snapshots);
        h.committed = Some(now);
        if !std::mem::take(&mut h.old_retired) {
            versions.push(old);
        }
        versions.push(now);
        let cfg_of = |s: &Snap| s.as_ref().and_then(|(_, w)| self.fetched_cfg(st, w));
        let (old_cfg, new_cfg) = (cfg_of(&old), cfg_of(&now));
        // Versions found at the same address can be mixed dword by dword;
        // a fetch reads its level-1 descriptor once, so versions at
        // different addresses (a level-2 table swapped in) never mix.
        let mut addrs: Vec<u64> = versions.iter().flatten().map(|(a, _)| *a).collect();
        addrs.sort_unstable();
        addrs.dedup();
        for addr in addrs {
            let mut choices: [Vec<u64>; 8] = Default::default();
            for (_, w) in versions.iter().flatten().filter(|(a, _)| *a == addr) {
                for (i, c) in choices.iter_mut().enumerate() {
                    if !c.contains(&w[i]) {
                        c.push(w[i]);
                    }
                }
            }
            if let Some(torn) = Self::first_torn(&choices, |w| {
                let c = self.fetched_cfg(st, w);
                c.is_none() || c == old_cfg || c == new_cfg
            }) {
                st.violations.push(format!(
                    "torn STE fetch for sid {sid} at {addr:#x}: {torn:x?} configures {:x?}; old {old_cfg:x?}, new {new_cfg:x?}",
                    self.fetched_cfg(st, &torn)
                ));
                return;
            }
        }
    }

    /// The first combination of one value per dword (from `choices`) that
    /// `ok` rejects: exhaustively up to 4096 combinations, else 4096 drawn
    /// by a fixed-seed generator.
    fn first_torn(choices: &[Vec<u64>; 8], ok: impl Fn(&[u64; 8]) -> bool) -> Option<[u64; 8]> {
        let total: u64 = choices.iter().map(|c| c.len() as u64).product();
        let pick = |mut n: u64| {
            let mut w = [0u64; 8];
            for (i, c) in choices.iter().enumerate() {
                w[i] = c[(n % c.len() as u64) as usize];
                n /= c.len() as u64;
            }
            w
        };
        if total <= 4096 {
            return (0..total).map(pick).find(|w| !ok(w));
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                pick(x % total)
            })
            .find(|w| !ok(w))
    }

    /// A TLBI for the tags `matches` selects must come after the
    /// configuration invalidation of every stream that used them: a stream
    /// whose STE changed in memory but is still cached with such a tag could
    /// refill the TLB after the TLBI.
    fn check_tlbi_after_cfgi(&self, st: &mut State, matches: impl Fn(TlbTag) -> bool) {
        let stale: Vec<u32> = st
            .cfg_cache
            .iter()
            .filter(|(sid, c)| {
                let tag = match **c {
                    Cfg::S2(s2) => Some(TlbTag::S2 { vmid: s2.vmid }),
                    Cfg::S1 { vmid, s1 } => Some(TlbTag::S1 { vmid, asid: s1.asid }),
                    Cfg::Nested { s1, s2 } => Some(TlbTag::S1 { vmid: Some(s2.vmid), asid: s1.asid }),
                    _ => None,
                };
                tag.is_some_and(&matches)
                    && st.history.get(sid).is_some_and(|h| {
                        // Content, not address: the same entry in a level-2
                        // table swapped in for a neighbour did not change.
                        let words = |v: &Snap| v.map(|(_, w)| w);
                        let old = words(&h.committed.unwrap_or(None));
                        h.snapshots.iter().any(|v| words(v) != old)
                    })
            })
            .map(|(sid, _)| *sid)
            .collect();
        for sid in stale {
            st.violations.push(format!(
                "TLBI issued while sid {sid}'s changed STE was still cached with that tag (TLBI before its CFGI)"
            ));
        }
    }

    /// Called by the test DMA after every 64-bit write by the driver.
    pub fn observe_write(&self, pa: u64) {
        self.dma_writes.set(self.dma_writes.get() + 1);
        self.snapshotting.set(true);
        self.observe_write_inner(pa);
        self.snapshotting.set(false);
    }

    fn observe_write_inner(&self, pa: u64) {
        let mut st = self.st.borrow_mut();
        if st.regs.strtab_base_cfg == 0 && st.regs.strtab_base == 0 {
            return;
        }
        let (base, two_level, log2size, split) = Self::strtab_geometry(&st);
        let mut touched: Vec<u32> = Vec::new();
        if two_level {
            let l1_len = 8u64 << log2size.saturating_sub(split);
            if (base..base + l1_len).contains(&pa) {
                let span = ((pa - base) / 8) as u32;
                // Track where this level-2 table lives.
                if let Some(desc) = self.arena.read64(pa & !7) {
                    st.l2_tables.retain(|_, s| *s != span);
                    if bits(desc, 0, 5) != 0 {
                        st.l2_tables.insert(desc & ((1u64 << 52) - 1) & !0x3f, span);
                    }
                }
                let first = span << split;
                touched.extend(first..first + (1 << split));
            } else if let Some((&l2, &span)) = st.l2_tables.range(..=pa).next_back() {
                let len = 64u64 << split;
                if pa < l2 + len {
                    touched.push((span << split) | ((pa - l2) / 64) as u32);
                    self.check_ste_word0_order(&mut st, pa, pa - l2);
                }
            }
        } else {
            let len = 64u64 << log2size;
            if (base..base + len).contains(&pa) {
                touched.push(((pa - base) / 64) as u32);
                self.check_ste_word0_order(&mut st, pa, pa - base);
            }
        }
        if two_level {
            // A level-1 descriptor may only point at a published level-2 table.
            let l1_len = 8u64 << log2size.saturating_sub(split);
            if (base..base + l1_len).contains(&pa) {
                if let Some(desc) = self.arena.read64(pa & !7) {
                    let l2 = desc & ((1u64 << 52) - 1) & !0x3f;
                    if bits(desc, 0, 5) != 0
                        && (0..(64u64 << split))
                            .step_by(8)
                            .any(|o| self.is_dirty(l2 + o))
                    {
                        st.violations.push(format!(
                            "L1 descriptor at {pa:#x} links an unpublished level-2 table"
                        ));
                    }
                }
            }
        }
        for sid in touched {
            let snap = self.snap(&st, sid).unwrap_or(None);
            if let Some((_, w)) = snap {
                let cfg = bits(w[0], 1, 3);
                if w[0] & 1 == 1 && (cfg == 0b100 || (cfg & 1 == 1 && bits(w[1], 0, 2) == 1)) {
                    st.violations
                        .push(format!("bypass STE written for sid {sid}: {w:x?}"));
                }
            }
            let h = st.history.entry(sid).or_default();
            if h.committed.is_none() {
                // First sight: before any write, the memory was what the
                // previous snapshot would have shown; treat as terminating.
                h.committed = Some(None);
            }
            h.snapshots.push(snap);
        }
    }

    /// Word 0 of an STE (V, Config) may only be written once words 1..7 are
    /// published, or the SMMU could see the new V/Config with old fields.
    fn check_ste_word0_order(&self, st: &mut State, pa: u64, offset_in_table: u64) {
        if !offset_in_table.is_multiple_of(64) {
            return;
        }
        if let Some(w0) = self.arena.read64(pa) {
            let translating = w0 & 1 == 1 && bits(w0, 1, 3) & 0b100 != 0;
            if translating && (1..8).any(|i| self.is_dirty(pa + 8 * i)) {
                st.violations.push(format!(
                    "STE word 0 at {pa:#x} written before words 1..7 were published"
                ));
            }
        }
    }

    // ---------------- checks after a driver operation ----------------

    /// Checks the state the driver promises once an operation returned:
    /// every changed STE was invalidated, the configuration cache and the
    /// TLB agree with memory.
    pub fn check_quiescent(&self) {
        let mut st = self.st.borrow_mut();
        let sids: Vec<u32> = st
            .history
            .iter()
            .filter(|(_, h)| !h.snapshots.is_empty())
            .map(|(s, _)| *s)
            .collect();
        for sid in sids {
            let now = self.snap(&st, sid).unwrap_or(None);
            let h = &st.history[&sid];
            let old = h.committed.unwrap_or(None);
            // Terminating → terminating needs no invalidation (nothing
            // translating can have been cached); nor does the same entry
            // found at another address (a level-2 table swapped in for a
            // neighbour's sake): a cached copy is still right.
            let words = |v: &Snap| v.map(|(_, w)| w);
            if words(&old) != words(&now) && !(Self::terminates(&old) && Self::terminates(&now)) {
                st.violations
                    .push(format!("STE of sid {sid} changed but never invalidated"));
            }
        }
        let cached: Vec<(u32, Cfg)> = st.cfg_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (sid, c) in cached {
            let fresh = match self.fetch_ste(&st, sid) {
                Ok(Some(w)) => self.decode_ste(&st, &w).ok(),
                _ => None,
            };
            if fresh != Some(c) {
                st.violations.push(format!(
                    "stale configuration cached for sid {sid}: {c:x?} vs {fresh:x?}"
                ));
            }
        }
        let l1s: Vec<(u32, u64)> = st.l1_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (span, desc) in l1s {
            let (_, _, _, split) = Self::strtab_geometry(&st);
            let now = self.read_l1(&st, span << split).ok();
            if now != Some(desc) {
                st.violations.push(format!(
                    "stale level-1 descriptor cached for span {span}: {desc:#x} vs {now:x?} in memory"
                ));
            }
        }
        let cds: Vec<(u32, S1Cfg)> = st.cd_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (sid, cd) in cds {
            let fresh = match self.fetch_ste(&st, sid) {
                Ok(Some(w)) => self.decode_ste(&st, &w).ok(),
                _ => None,
            };
            // A CD cached for a stream whose STE no longer uses one is
            // harmless until the STE does again; then it must be the one
            // the STE points at.
            let wanted = match fresh {
                Some(Cfg::S1 { s1, .. }) | Some(Cfg::Nested { s1, .. }) => Some(s1),
                _ => None,
            };
            if wanted.is_some_and(|w| w != cd) {
                st.violations.push(format!(
                    "stale CD cached for sid {sid}: {cd:x?} vs {wanted:x?} (no CFGI_CD after the STE changed)"
                ));
            }
        }
        let entries = st.tlb.clone();
        for e in entries {
            let fresh = match e.nested {
                Some(s2) => self
                    .walk(e.root, e.start_level, u32::from(e.input_bits), e.out_bits, e.leaf.va, false, e.affd, e.mair, Some(&s2))
                    .and_then(|l1| {
                        let ipa = l1.oa | (e.leaf.va & (l1.size - 1));
                        let l2 = self.walk_s2(&s2, ipa, Access::READ)?;
                        let size = l1.size.min(l2.size);
                        let pa = l2.oa | (ipa & (l2.size - 1));
                        Ok(Leaf {
                            size,
                            oa: pa & !(size - 1),
                            read: l1.read && l2.read,
                            write: l1.write && l2.write,
                            device: l1.device || l2.device,
                            ..l1
                        })
                    }),
                None => self.walk(
                    e.root,
                    e.start_level,
                    u32::from(e.input_bits),
                    e.out_bits,
                    e.leaf.va,
                    e.stage2,
                    e.affd,
                    e.mair,
                    None,
                ),
            };
            let same = matches!(fresh, Ok(l) if l.oa == e.leaf.oa && l.size == e.leaf.size
                && l.write == e.leaf.write && l.read == e.leaf.read && l.device == e.leaf.device);
            if !same {
                st.violations
                    .push(format!("stale TLB entry {e:x?} (fresh walk {fresh:x?})"));
            }
        }
    }

    /// Lets the SMMU consume its command queue now.
    pub fn run_cmdq(&self) {
        let mut st = self.st.borrow_mut();
        self.process_cmdq(&mut st, u32::MAX);
    }

    /// Toggles GERROR bits as the SMMU would on a global error.
    pub fn raise_gerror(&self, bits: u32) {
        self.st.borrow_mut().regs.gerror ^= bits;
    }

    pub fn gerror_active(&self) -> u32 {
        let st = self.st.borrow();
        st.regs.gerror ^ st.regs.gerrorn
    }

    pub fn cmdq_cons(&self) -> u32 {
        self.st.borrow().regs.cmdq_cons
    }

    pub fn tlb_len(&self) -> usize {
        self.st.borrow().tlb.len()
    }

    pub fn cfg_cache_len(&self) -> usize {
        self.st.borrow().cfg_cache.len()
    }

    pub fn opcodes(&self) -> Vec<u8> {
        self.st.borrow().opcodes.clone()
    }

    pub fn clear_opcodes(&self) {
        self.st.borrow_mut().opcodes.clear();
    }

    /// Checks, at SMMUEN 0→1, that every reachable STE terminates.
    fn check_all_abort(&self, st: &mut State) {
        let (_, two_level, log2size, split) = Self::strtab_geometry(st);
        let n: u64 = if two_level {
            1u64 << log2size.min(16)
        } else {
            1u64 << log2size
        };
        let step = if two_level { 1u64 << split } else { 1 };
        let mut sid = 0u64;
        while sid < n {
            match self.fetch_ste(st, sid as u32) {
                Ok(None) if two_level => {
                    sid += step;
                    continue;
                }
                Ok(Some(w)) if w[0] & 1 == 1 && bits(w[0], 1, 3) & 0b100 == 0 => {}
                other => {
                    st.violations.push(format!(
                        "SMMUEN set while sid {sid} does not abort: {other:x?}"
                    ));
                    return;
                }
            }
            sid += 1;
        }
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

impl Mmio for Model {
    fn read32(&self, offset: usize) -> u32 {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::IDR0..=reg::IDR5 => st.idr[(offset - reg::IDR0) / 4],
            reg::IIDR => st.iidr,
            reg::AIDR => st.aidr,
            reg::CR0 => st.regs.cr0,
            reg::CR0ACK => st.regs.cr0ack,
            reg::CR1 => st.regs.cr1,
            reg::CR2 => st.regs.cr2,
            reg::STATUSR => 0,
            reg::GBPA => st.regs.gbpa,
            reg::IRQ_CTRL => st.regs.irq_ctrl,
            reg::IRQ_CTRLACK => st.regs.irq_ctrlack,
            reg::GERROR => st.regs.gerror,
            reg::GERRORN => st.regs.gerrorn,
            reg::STRTAB_BASE_CFG => st.regs.strtab_base_cfg,
            reg::CMDQ_PROD => st.regs.cmdq_prod,
            reg::CMDQ_CONS => {
                if let CmdqMode::PerConsRead(n) = st.knobs.cmdq_mode {
                    self.process_cmdq(&mut st, n);
                }
                st.regs.cmdq_cons
            }
            reg::EVENTQ_PROD => st.regs.evtq_prod,
            reg::EVENTQ_CONS => st.regs.evtq_cons,
            0xa8 | 0xac => {
                st.violations
                    .push("EVENTQ_PROD/CONS accessed through page 0".into());
                0
            }
            _ => {
                st.violations
                    .push(format!("read32 of unmodelled offset {offset:#x}"));
                0
            }
        }
    }

    fn write32(&self, offset: usize, v: u32) {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::CR0 => {
                let was = st.regs.cr0;
                if v & 0b1000 != 0 && was & 0b1000 == 0 && st.regs.cmdq_base == 0 {
                    st.violations.push("CMDQEN set without CMDQ_BASE".into());
                }
                if v & 1 != 0 && was & 1 == 0 {
                    if st.regs.gbpa & (1 << 20) == 0 {
                        st.violations
                            .push("SMMUEN set while GBPA does not abort".into());
                    }
                    self.check_all_abort(&mut st);
                }
                if v & 1 == 0 && was & 1 != 0 && st.regs.gbpa & (1 << 20) == 0 {
                    st.violations
                        .push("SMMUEN cleared while GBPA bypasses".into());
                }
                st.regs.cr0 = v;
                if st.knobs.ack_cr0 {
                    st.regs.cr0ack = v & 0x1df;
                }
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::CR1 | reg::CR2 => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations.push(format!(
                        "CR{} written while SMMUEN=1",
                        if offset == reg::CR1 { 1 } else { 2 }
                    ));
                }
                if offset == reg::CR1 {
                    st.regs.cr1 = v;
                } else {
                    st.regs.cr2 = v;
                }
            }
            reg::GBPA => {
                if v & (1 << 31) == 0 {
                    return; // Writes without UPDATE are ignored (v3.2+).
                }
                if v & (1 << 20) != 0 {
                    st.driver_started = true;
                } else if st.driver_started {
                    st.violations.push("GBPA.ABORT cleared".into());
                }
                if st.knobs.ack_gbpa {
                    st.regs.gbpa = v & !(1 << 31);
                } else {
                    st.regs.gbpa = v;
                }
            }
            reg::IRQ_CTRL => {
                st.regs.irq_ctrl = v;
                if st.knobs.ack_irq {
                    st.regs.irq_ctrlack = v;
                }
            }
            reg::GERRORN => {
                st.regs.gerrorn = v;
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::STRTAB_BASE_CFG => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations
                        .push("STRTAB_BASE_CFG written while SMMUEN=1".into());
                }
                if Self::tables_preset(&st) {
                    return;
                }
                st.regs.strtab_base_cfg = v;
                st.history.clear();
                st.l2_tables.clear();
            }
            reg::CMDQ_PROD => {
                st.regs.cmdq_prod = v;
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::CMDQ_CONS => {
                if st.regs.cr0 & 0b1000 != 0 {
                    st.violations
                        .push("CMDQ_CONS written while CMDQEN=1".into());
                }
                st.regs.cmdq_cons = v;
            }
            reg::EVENTQ_PROD => {
                if st.regs.cr0 & 0b100 != 0 {
                    st.violations
                        .push("EVENTQ_PROD written while EVENTQEN=1".into());
                }
                st.regs.evtq_prod = v;
            }
            reg::EVENTQ_CONS => st.regs.evtq_cons = v,
            0xa8 | 0xac => st
                .violations
                .push("EVENTQ_PROD/CONS accessed through page 0".into()),
            _ => st
                .violations
                .push(format!("write32 of unmodelled offset {offset:#x}")),
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::STRTAB_BASE => st.regs.strtab_base,
            reg::CMDQ_BASE => st.regs.cmdq_base,
            reg::EVENTQ_BASE => st.regs.evtq_base,
            reg::GERROR_IRQ_CFG0 => st.regs.gerror_irq_cfg0,
            reg::EVENTQ_IRQ_CFG0 => st.regs.eventq_irq_cfg0,
            _ => {
                st.violations
                    .push(format!("read64 of unmodelled offset {offset:#x}"));
                0
            }
        }
    }

    fn write64(&self, offset: usize, v: u64) {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::STRTAB_BASE => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations
                        .push("STRTAB_BASE written while SMMUEN=1".into());
                }
                if Self::tables_preset(&st) {
                    return;
                }
                st.regs.strtab_base = v;
                st.history.clear();
                st.l2_tables.clear();
            }
            reg::CMDQ_BASE => {
                if st.regs.cr0 & 0b1000 != 0 {
                    st.violations
                        .push("CMDQ_BASE written while CMDQEN=1".into());
                }
                if Self::queues_preset(&st) {
                    return;
                }
                st.regs.cmdq_base = v;
            }
            reg::EVENTQ_BASE => {
                if st.regs.cr0 & 0b100 != 0 {
                    st.violations
                        .push("EVENTQ_BASE written while EVENTQEN=1".into());
                }
                if Self::queues_preset(&st) {
                    return;
                }
                st.regs.evtq_base = v;
            }
            reg::GERROR_IRQ_CFG0 => st.regs.gerror_irq_cfg0 = v,
            reg::EVENTQ_IRQ_CFG0 => st.regs.eventq_irq_cfg0 = v,
            _ => st
                .violations
                .push(format!("write64 of unmodelled offset {offset:#x}")),
        }
    }
}

// ---------------------------------------------------------------------------
// DmaMemory over the arena, reporting writes to the model
// ---------------------------------------------------------------------------

pub struct TestDma {
    pub model: Rc<Model>,
    pub publishes: u64,
    pub acquires: u64,
    pub releases: u64,
}

impl TestDma {
    pub fn new(model: &Rc<Model>) -> Self {
        TestDma {
            model: model.clone(),
            publishes: 0,
            acquires: 0,
            releases: 0,
        }
    }

    fn region_at(&self, pa: u64, len: usize) -> Option<DmaRegion> {
        let virt = self.model.arena.virt(pa)?;
        // SAFETY: the arena outlives this handle (the model is kept alive by
        // `self.model`), the range is inside a live allocation, the memory is
        // only accessed through volatile raw-pointer operations.
        Some(unsafe { DmaRegion::new(PhysAddr(pa), virt, len) })
    }
}

impl DmaMemory for TestDma {
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion> {
        let (pa, n) = self.model.arena.alloc(size, align)?;
        // Zeroed by the CPU: like any CPU write, invisible to a
        // non-coherent SMMU until published.
        self.model.mark_dirty(pa, size as u64);
        self.region_at(pa, n.min(size.max(align).max(size)))
    }

    fn free(&mut self, region: DmaRegion) {
        self.model.arena.free(region.phys().as_u64(), region.len());
    }

    fn region(&self, phys: PhysAddr, len: usize) -> Option<DmaRegion> {
        if !self.model.arena.inside_live(phys.as_u64(), len) {
            return None;
        }
        self.region_at(phys.as_u64(), len)
    }

    fn publish(&mut self, region: &DmaRegion, offset: usize, len: usize, _coherent: bool) {
        self.publishes += 1;
        self.model
            .publish(region.phys().as_u64() + offset as u64, len as u64);
    }

    fn acquire(&mut self, _region: &DmaRegion, _offset: usize, _len: usize, _coherent: bool) {
        self.acquires += 1;
    }

    fn release(&mut self) {
        self.releases += 1;
    }

    fn write64(&mut self, region: &DmaRegion, offset: usize, value: u64) -> Result<(), Error> {
        region.write64(offset, value)?;
        let pa = region.phys().as_u64() + offset as u64;
        self.model.mark_dirty(pa, 8);
        self.model.observe_write(pa);
        Ok(())
    }
}

/// A delay that only counts (the model needs no real time).
#[derive(Default)]
pub struct FakeDelay {
    pub ns: u64,
    pub calls: u64,
}

impl DelayNs for FakeDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.ns += u64::from(ns);
        self.calls += 1;
    }
}

pub type TestSmmu<'a> = smmu::Smmu<&'a Model, TestDma, FakeDelay>;

/// A brought-up driver on a fresh model of `flavour`.
pub fn bring_up(model: &Rc<Model>) -> TestSmmu<'_> {
    bring_up_with(
        model,
        smmu::Config {
            dma_coherent: true,
            ..smmu::Config::default()
        },
    )
}

pub fn bring_up_with(model: &Rc<Model>, config: smmu::Config) -> TestSmmu<'_> {
    let s = smmu::Smmu::new(&**model, TestDma::new(model), FakeDelay::default(), config)
        .expect("bring-up");
    model.assert_clean();
    s
}
