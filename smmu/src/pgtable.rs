//! VMSAv8-64 translation tables with the 4 KiB granule (Arm ARM D8; IHI 0070
//! §3.4, §5.2 S2* fields, §5.4 CD TCR fields), stage 1 and stage 2.
//!
//! Mappings use the largest blocks that fit (1 GiB at level 1, 2 MiB at
//! level 2, 4 KiB pages at level 3). Unmapping unlinks tables that became
//! empty; they are handed back as a [`FreeList`] that the driver releases
//! only after the TLB invalidation that stops the SMMU from walking them has
//! completed. Requests that would overlap, split a block, or leave the input
//! or output range are refused before anything is written.

use tock_registers::LocalRegisterCopy;

use crate::cd::{ATTR_IDX_DEVICE, ATTR_IDX_NORMAL};
use crate::error::Error;
use crate::features::Features;
use crate::hal::{DmaMemory, DmaRegion};
use crate::strtab::alloc_checked;
use crate::types::{Iova, PhysAddr};

/// Translation granule (4 KiB).
pub const GRANULE: u64 = 4096;
/// Descriptors per table.
pub const ENTRIES: usize = 512;
/// Size of a table in bytes.
pub const TABLE_SIZE: usize = 4096;

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// Stage-1 block/page descriptor (Arm ARM D8.3).
        pub S1_DESC [
            VALID OFFSET(0) NUMBITS(1) [],
            /// 0 = block (levels 1–2), 1 = page (level 3).
            TYPE OFFSET(1) NUMBITS(1) [Block = 0, Page = 1],
            /// Index into the CD's MAIR.
            AttrIndx OFFSET(2) NUMBITS(3) [],
            NS OFFSET(5) NUMBITS(1) [],
            /// AP[2:1]: 0b01 read/write at any privilege, 0b11 read-only.
            AP OFFSET(6) NUMBITS(2) [ReadWrite = 1, ReadOnly = 3],
            SH OFFSET(8) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
            AF OFFSET(10) NUMBITS(1) [],
            /// Not global: the entry is tagged with the ASID.
            nG OFFSET(11) NUMBITS(1) [],
            OA OFFSET(12) NUMBITS(36) [],
            DBM OFFSET(51) NUMBITS(1) [],
            Contiguous OFFSET(52) NUMBITS(1) [],
            PXN OFFSET(53) NUMBITS(1) [],
            UXN OFFSET(54) NUMBITS(1) []
        ],
        /// Stage-2 block/page descriptor (Arm ARM D8.3).
        pub S2_DESC [
            VALID OFFSET(0) NUMBITS(1) [],
            TYPE OFFSET(1) NUMBITS(1) [Block = 0, Page = 1],
            /// Stage-2 memory attributes: 0b1111 Normal WB, 0b0001 Device-nGnRE.
            MemAttr OFFSET(2) NUMBITS(4) [DeviceNGnRE = 1, NormalWriteBack = 15],
            /// S2AP: bit 0 read, bit 1 write.
            S2AP OFFSET(6) NUMBITS(2) [ReadOnly = 1, ReadWrite = 3],
            SH OFFSET(8) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
            AF OFFSET(10) NUMBITS(1) [],
            OA OFFSET(12) NUMBITS(36) [],
            Contiguous OFFSET(52) NUMBITS(1) [],
            /// XN[1:0]; 0b10 = never executable.
            XN OFFSET(53) NUMBITS(2) [Never = 2]
        ],
        /// Table descriptor (levels 0–2, Arm ARM D8.3).
        pub TABLE_DESC [
            VALID OFFSET(0) NUMBITS(1) [],
            TYPE OFFSET(1) NUMBITS(1) [Table = 1],
            NextLevel OFFSET(12) NUMBITS(36) []
        ]
    ];
}
pub use layout::{S1_DESC, S2_DESC, TABLE_DESC};

/// Which translation stage a table serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stage {
    /// Stage 1 (VA → IPA/PA), pointed to by a CD.
    Stage1,
    /// Stage 2 (IPA → PA), pointed to by an STE.
    Stage2,
}

/// Access permission of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Perm {
    /// Device reads only.
    ReadOnly,
    /// Device reads and writes.
    ReadWrite,
}

/// Memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MemType {
    /// RAM: Normal, inner/outer write-back, inner shareable.
    Normal,
    /// MMIO (e.g. a peer device's BAR): Device-nGnRE.
    Device,
}

/// Permission and memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Prot {
    /// Access permission.
    pub perm: Perm,
    /// Memory type.
    pub mem: MemType,
}

impl Prot {
    /// Read/write RAM.
    pub const RAM_RW: Prot = Prot { perm: Perm::ReadWrite, mem: MemType::Normal };
    /// Read-only RAM.
    pub const RAM_RO: Prot = Prot { perm: Perm::ReadOnly, mem: MemType::Normal };
    /// Read/write MMIO.
    pub const MMIO_RW: Prot = Prot { perm: Perm::ReadWrite, mem: MemType::Device };
}

/// Bit position of the lowest address bit a level resolves
/// (39, 30, 21, 12 for levels 0–3).
pub const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Starting level for an input size, chosen so the top table never needs
/// concatenation: > 39 bits → level 0, > 30 → level 1, otherwise level 2.
pub const fn start_level(input_bits: u8) -> u8 {
    if input_bits > 39 {
        0
    } else if input_bits > 30 {
        1
    } else {
        2
    }
}

/// The starting level and number of concatenated top-level tables of a
/// stage-2 walk of `input_bits` with the 4 KiB granule, when the output
/// (`VTCR_EL2.PS`, `STE.S2PS` capped by the SMMU's OAS) is `output_bits`
/// wide — the rule both the CPU's VTCR_EL2 and the SMMU's STE obey (Arm ARM
/// D8.2, stage 2 initial lookup level; IHI 0070 §5.2, S2SL0): a walk may
/// start at level 0 only with an output above 42 bits, at most 16 tables
/// are concatenated at the starting level, and the input is no wider than
/// the output. The fewest levels that obey it win (no concatenation when a
/// legal level needs none). `None` when nothing is legal.
pub const fn stage2_start(input_bits: u8, output_bits: u8) -> Option<(u8, usize)> {
    if input_bits > output_bits || input_bits < 25 || input_bits > 48 {
        return None;
    }
    let mut level = 0u8;
    while level <= 2 {
        let shift = level_shift(level);
        let legal = !(level == 0 && output_bits <= 42);
        if legal && input_bits as u32 > shift {
            let index_bits = input_bits as u32 - shift;
            if index_bits <= 9 + 4 {
                return Some((level, 1 << index_bits.saturating_sub(9)));
            }
        }
        level += 1;
    }
    None
}

/// `S2SL0` encoding of a starting level with the 4 KiB granule
/// (§5.2: 0 = level 2, 1 = level 1, 2 = level 0).
pub const fn sl0_for_level(level: u8) -> u8 {
    2 - level
}

/// A table descriptor pointing at the next-level table `next`.
pub fn table_descriptor(next: PhysAddr) -> u64 {
    let mut r = LocalRegisterCopy::<u64, TABLE_DESC::Register>::new(0);
    r.write(TABLE_DESC::VALID::SET + TABLE_DESC::TYPE::Table + TABLE_DESC::NextLevel.val(next.as_u64() >> 12));
    r.get()
}

/// A block (levels 1–2) or page (level 3) descriptor mapping `pa` with `prot`,
/// access flag set (no hardware AF update is relied upon).
pub fn leaf_descriptor(stage: Stage, level: u8, pa: PhysAddr, prot: Prot) -> u64 {
    let page = level == 3;
    match stage {
        Stage::Stage1 => {
            let mut r = LocalRegisterCopy::<u64, S1_DESC::Register>::new(0);
            r.write(
                S1_DESC::VALID::SET
                    + if page { S1_DESC::TYPE::Page } else { S1_DESC::TYPE::Block }
                    + match prot.mem {
                        MemType::Normal => S1_DESC::AttrIndx.val(u64::from(ATTR_IDX_NORMAL)) + S1_DESC::SH::Inner,
                        MemType::Device => S1_DESC::AttrIndx.val(u64::from(ATTR_IDX_DEVICE)) + S1_DESC::SH::Outer,
                    }
                    + match prot.perm {
                        Perm::ReadOnly => S1_DESC::AP::ReadOnly,
                        Perm::ReadWrite => S1_DESC::AP::ReadWrite,
                    }
                    + S1_DESC::AF::SET
                    + S1_DESC::nG::SET
                    + S1_DESC::OA.val(pa.as_u64() >> 12)
                    + S1_DESC::PXN::SET
                    + S1_DESC::UXN::SET,
            );
            r.get()
        }
        Stage::Stage2 => {
            let mut r = LocalRegisterCopy::<u64, S2_DESC::Register>::new(0);
            r.write(
                S2_DESC::VALID::SET
                    + if page { S2_DESC::TYPE::Page } else { S2_DESC::TYPE::Block }
                    + match prot.mem {
                        MemType::Normal => S2_DESC::MemAttr::NormalWriteBack + S2_DESC::SH::Inner,
                        MemType::Device => S2_DESC::MemAttr::DeviceNGnRE + S2_DESC::SH::Outer,
                    }
                    + match prot.perm {
                        Perm::ReadOnly => S2_DESC::S2AP::ReadOnly,
                        Perm::ReadWrite => S2_DESC::S2AP::ReadWrite,
                    }
                    + S2_DESC::AF::SET
                    + S2_DESC::OA.val(pa.as_u64() >> 12)
                    + S2_DESC::XN::Never,
            );
            r.get()
        }
    }
}

/// How the driver reads a descriptor it wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Desc {
    Invalid,
    Table(PhysAddr),
    Leaf,
}

fn decode(desc: u64, level: u8) -> Desc {
    let oa = PhysAddr(desc & 0x0000_FFFF_FFFF_F000);
    match (desc & 0b11, level) {
        (0b11, 3) => Desc::Leaf,
        (0b11, _) => Desc::Table(oa),
        (0b01, 1 | 2) => Desc::Leaf,
        // Invalid, or an encoding we never write (level-0 block, reserved):
        // treat as empty.
        _ => Desc::Invalid,
    }
}

fn prot_of(stage: Stage, desc: u64) -> Prot {
    match stage {
        Stage::Stage1 => {
            let r = LocalRegisterCopy::<u64, S1_DESC::Register>::new(desc);
            Prot {
                perm: if r.read(S1_DESC::AP) & 0b10 != 0 { Perm::ReadOnly } else { Perm::ReadWrite },
                mem: if r.read(S1_DESC::AttrIndx) == u64::from(ATTR_IDX_DEVICE) { MemType::Device } else { MemType::Normal },
            }
        }
        Stage::Stage2 => {
            let r = LocalRegisterCopy::<u64, S2_DESC::Register>::new(desc);
            Prot {
                perm: if r.read(S2_DESC::S2AP) & 0b10 != 0 { Perm::ReadWrite } else { Perm::ReadOnly },
                mem: if r.read(S2_DESC::MemAttr) & 0b1100 == 0 { MemType::Device } else { MemType::Normal },
            }
        }
    }
}

/// Tables unlinked by an unmap, chained through their first word, waiting
/// for the TLB invalidation after which the SMMU can no longer walk them.
#[derive(Debug, Default)]
#[must_use = "tables on a free list leak unless released"]
pub struct FreeList {
    head: Option<PhysAddr>,
    count: usize,
}

impl FreeList {
    /// Number of tables on the list.
    pub fn len(&self) -> usize {
        self.count
    }

    /// `true` when no table is waiting.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Marks a chain link in the first word of a free table: bit 1 set, bit 0
/// clear — still an invalid descriptor should a stale walk read it.
const CHAIN_LINK: u64 = 0b10;

/// The span of input addresses `[start, end)` visited at one level.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
}

/// One descriptor a walk meets: its level, the input range it maps
/// (`first..next`), the part of the walk's span inside it (`start..stop`),
/// and what it holds.
struct Slot {
    level: u8,
    first: u64,
    next: u64,
    start: u64,
    stop: u64,
    desc: Desc,
}

/// What a walk does with a descriptor.
enum Act {
    /// Leave it.
    Skip,
    /// Write this descriptor.
    Set(u64),
    /// Descend into the table it points at.
    Into(PhysAddr),
    /// Point it at this new (published, empty) table, then descend.
    Link(PhysAddr),
}

/// A walk's decision before descending.
type Pre<'a, D> = dyn FnMut(&mut PageTable, &mut D, &Slot) -> Result<Act, Error> + 'a;
/// A walk's decision after a descent: `Some` rewrites the descriptor.
type Post<'a, D> = dyn FnMut(&mut PageTable, &mut D, &Slot, &DmaRegion) -> Result<Option<u64>, Error> + 'a;

/// A translation table tree for one domain.
#[derive(Debug)]
pub struct PageTable {
    stage: Stage,
    root: DmaRegion,
    input_bits: u8,
    start: u8,
    /// Tables concatenated at the starting level (stage 2 only; 1 = none).
    concat: usize,
    oas_bits: u8,
    coherent: bool,
    tables: usize,
    /// Tables taken out by a failed map's rollback, awaiting invalidation.
    rollback: Option<FreeList>,
}

impl PageTable {
    /// Allocates an empty tree translating `input_bits` of input address
    /// (25..=48) to at most the SMMU's output size.
    pub fn new<D: DmaMemory>(dma: &mut D, features: &Features, stage: Stage, input_bits: u8, coherent: bool) -> Result<Self, Error> {
        if !(25..=48).contains(&input_bits) {
            return Err(Error::BadInputSize(input_bits));
        }
        let oas_bits = features.effective_oas_bits();
        let (start, concat) = match stage {
            Stage::Stage1 => (start_level(input_bits), 1),
            Stage::Stage2 => stage2_start(input_bits, oas_bits).ok_or(Error::BadInputSize(input_bits))?,
        };
        // A concatenated root is aligned to its whole size (Arm ARM D8.2).
        let root_len = concat * TABLE_SIZE;
        let root = alloc_checked(dma, root_len, root_len, features)?;
        dma.publish(&root, 0, root_len, coherent);
        Ok(PageTable { stage, root, input_bits, start, concat, oas_bits, coherent, tables: 1, rollback: None })
    }

    /// Stage served.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> PhysAddr {
        self.root.phys()
    }

    /// Input address size in bits.
    pub fn input_bits(&self) -> u8 {
        self.input_bits
    }

    /// Starting level of walks.
    pub fn start_level(&self) -> u8 {
        self.start
    }

    /// Number of tables currently allocated (root included).
    pub fn tables(&self) -> usize {
        self.tables
    }

    /// Tables concatenated at the starting level (1: none).
    pub fn concatenated(&self) -> usize {
        self.concat
    }

    fn table_at<D: DmaMemory>(&self, dma: &D, pa: PhysAddr) -> Result<DmaRegion, Error> {
        dma.region(pa, TABLE_SIZE).ok_or(Error::DmaOutOfBounds)
    }

    fn root_table<D: DmaMemory>(&self, dma: &D) -> Result<DmaRegion, Error> {
        dma.region(self.root.phys(), self.concat * TABLE_SIZE).ok_or(Error::DmaOutOfBounds)
    }

    /// Descriptors in a table at `level`: the starting level may hold
    /// fewer (a narrow input) or more (concatenated tables).
    fn entries(&self, level: u8) -> usize {
        if level == self.start {
            1 << (u32::from(self.input_bits) - level_shift(level))
        } else {
            ENTRIES
        }
    }

    /// Index of `va`'s descriptor in its table at `level`.
    fn index(&self, va: u64, level: u8) -> usize {
        ((va >> level_shift(level)) as usize) & (self.entries(level) - 1)
    }

    fn check_input(&self, iova: Iova, size: u64) -> Result<u64, Error> {
        if size == 0 {
            return Err(Error::EmptyRange);
        }
        if !iova.is_aligned(GRANULE) || !size.is_multiple_of(GRANULE) {
            return Err(Error::Misaligned(iova));
        }
        let end = iova.0.checked_add(size).ok_or(Error::OutOfRange(iova))?;
        if end > 1u64 << self.input_bits {
            return Err(Error::OutOfRange(iova));
        }
        Ok(end)
    }

    /// Maps `[iova, iova + size)` to `[pa, pa + size)`. The whole range must
    /// be unmapped; on failure nothing stays mapped.
    pub fn map<D: DmaMemory>(&mut self, dma: &mut D, features: &Features, iova: Iova, pa: PhysAddr, size: u64, prot: Prot) -> Result<(), Error> {
        let end = self.check_input(iova, size)?;
        if !pa.is_aligned(GRANULE) {
            return Err(Error::Misaligned(iova));
        }
        match pa.0.checked_add(size) {
            Some(e) if e <= 1u64 << self.oas_bits => {}
            _ => return Err(Error::OutputOutOfRange(pa)),
        }
        let span = Span { start: iova.0, end };
        // Nothing may be mapped in the range yet.
        self.walk_span(
            dma,
            span,
            &mut |_, _, slot| match slot.desc {
                Desc::Invalid => Ok(Act::Skip),
                Desc::Leaf => Err(Error::Overlap(Iova(slot.start))),
                Desc::Table(t) => Ok(Act::Into(t)),
            },
            &mut |_, _, _, _| Ok(None),
        )?;
        let delta = pa.0.wrapping_sub(iova.0);
        let features = *features;
        let stage = self.stage;
        let mapped = self.walk_span(
            dma,
            span,
            &mut |pt, dma, slot| {
                let block = slot.next - slot.first;
                let out = slot.start.wrapping_add(delta);
                let leaf_ok = slot.level >= 1 && slot.stop - slot.start == block && out.is_multiple_of(block);
                match slot.desc {
                    Desc::Invalid if leaf_ok => Ok(Act::Set(leaf_descriptor(stage, slot.level, PhysAddr(out), prot))),
                    // Unreachable with 4 KiB-aligned inputs: never below level 3.
                    _ if slot.level == 3 => Err(Error::Misaligned(Iova(slot.start))),
                    Desc::Invalid => {
                        let t = alloc_checked(dma, TABLE_SIZE, TABLE_SIZE, &features)?;
                        pt.tables += 1;
                        // The zeroed table must be visible before the link.
                        dma.publish(&t, 0, TABLE_SIZE, pt.coherent);
                        Ok(Act::Link(t.phys()))
                    }
                    Desc::Table(t) => Ok(Act::Into(t)),
                    Desc::Leaf => Err(Error::Overlap(Iova(slot.start))),
                }
            },
            &mut |_, _, _, _| Ok(None),
        );
        match mapped {
            Ok(()) => Ok(()),
            Err(e) => {
                // Everything valid in the range was written by this call:
                // take it out again. The SMMU may have walked it meanwhile, so
                // the unlinked tables wait in `rollback` until the caller
                // invalidated the range (see `take_rollback`).
                let mut freed = self.rollback.take().unwrap_or_default();
                let _ = self.clear(dma, span, &mut freed);
                self.rollback = Some(freed);
                Err(e)
            }
        }
    }

    /// Unmaps `[iova, iova + size)`. Every page of the range must be mapped
    /// and no block may extend outside it; otherwise nothing changes. Tables
    /// that became empty are unlinked and returned: release them with
    /// [`release`](Self::release) after the TLB invalidation completed.
    pub fn unmap<D: DmaMemory>(&mut self, dma: &mut D, iova: Iova, size: u64) -> Result<FreeList, Error> {
        let end = self.check_input(iova, size)?;
        let span = Span { start: iova.0, end };
        // Every page mapped, no block reaching outside the range.
        self.walk_span(
            dma,
            span,
            &mut |_, _, slot| match slot.desc {
                Desc::Invalid => Err(Error::NotMapped(Iova(slot.start))),
                Desc::Leaf if slot.first < span.start || slot.next > span.end => Err(Error::SplitsBlock(Iova(slot.first))),
                Desc::Leaf => Ok(Act::Skip),
                Desc::Table(t) => Ok(Act::Into(t)),
            },
            &mut |_, _, _, _| Ok(None),
        )?;
        let mut freed = FreeList::default();
        self.clear(dma, span, &mut freed)?;
        Ok(freed)
    }

    /// Clears every valid leaf inside `span` (which must not split blocks)
    /// and unlinks tables that became empty onto `freed`.
    fn clear<D: DmaMemory>(&mut self, dma: &mut D, span: Span, freed: &mut FreeList) -> Result<(), Error> {
        self.walk_span(
            dma,
            span,
            &mut |_, _, slot| match slot.desc {
                Desc::Invalid => Ok(Act::Skip),
                Desc::Leaf => Ok(Act::Set(0)),
                Desc::Table(t) => Ok(Act::Into(t)),
            },
            &mut |pt, dma, _, child| {
                if !pt.is_empty_table(dma, child)? {
                    return Ok(None);
                }
                let link = match freed.head {
                    Some(h) => h.as_u64() | CHAIN_LINK,
                    None => 0,
                };
                dma.write64(child, 0, link)?;
                freed.head = Some(child.phys());
                freed.count += 1;
                Ok(Some(0))
            },
        )
    }

    /// Walks `span` from the root (see [`walk`](Self::walk)).
    fn walk_span<D: DmaMemory>(&mut self, dma: &mut D, span: Span, pre: &mut Pre<'_, D>, post: &mut Post<'_, D>) -> Result<(), Error> {
        let root = self.root_table(dma)?;
        let start = self.start;
        self.walk(dma, &root, start, span, pre, post)
    }

    /// The one table walker: for every descriptor of `table` (at `level`)
    /// that covers part of `span`, asks `pre` what to do — leave it, write
    /// it, descend into the table it points at, or link a new table and
    /// descend — and after a descent asks `post` whether to rewrite it (an
    /// emptied table unlinked). Writes are published table by table, in
    /// one range each.
    fn walk<D: DmaMemory>(&mut self, dma: &mut D, table: &DmaRegion, level: u8, span: Span, pre: &mut Pre<'_, D>, post: &mut Post<'_, D>) -> Result<(), Error> {
        let shift = level_shift(level);
        let mut va = span.start;
        let mut dirty: Option<(usize, usize)> = None;
        let mut touch = |idx: usize| dirty = Some(dirty.map_or((idx, idx), |(a, b)| (a.min(idx), b.max(idx))));
        let result = (|| {
            while va < span.end {
                let first = (va >> shift) << shift;
                let next = first + (1 << shift);
                let stop = next.min(span.end);
                let idx = self.index(va, level);
                let desc = decode(dma.read64(table, idx * 8)?, level);
                let slot = Slot { level, first, next, start: va, stop, desc };
                let child = match pre(self, dma, &slot)? {
                    Act::Skip => None,
                    Act::Set(d) => {
                        dma.write64(table, idx * 8, d)?;
                        touch(idx);
                        None
                    }
                    Act::Into(t) => Some(t),
                    Act::Link(t) => {
                        dma.write64(table, idx * 8, table_descriptor(t))?;
                        dma.publish(table, idx * 8, 8, self.coherent);
                        Some(t)
                    }
                };
                if let Some(t) = child {
                    let t = self.table_at(dma, t)?;
                    self.walk(dma, &t, level + 1, Span { start: va, end: stop }, pre, post)?;
                    if let Some(d) = post(self, dma, &slot, &t)? {
                        dma.write64(table, idx * 8, d)?;
                        touch(idx);
                    }
                }
                va = stop;
            }
            Ok(())
        })();
        if let Some((a, b)) = dirty {
            dma.publish(table, a * 8, (b - a + 1) * 8, self.coherent);
        }
        result
    }

    fn is_empty_table<D: DmaMemory>(&self, dma: &D, t: &DmaRegion) -> Result<bool, Error> {
        for i in 0..ENTRIES {
            if dma.read64(t, i * 8)? & 1 != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// After a failed [`map`](Self::map) that had started writing: the
    /// tables its rollback unlinked. The caller invalidates the range (TLBI +
    /// CMD_SYNC), then [`release`](Self::release)s them.
    pub fn take_rollback(&mut self) -> Option<FreeList> {
        self.rollback.take()
    }

    /// Frees the tables of `list`. Call only once the SMMU can no longer
    /// reach them (after TLBI + CMD_SYNC).
    pub fn release<D: DmaMemory>(&mut self, dma: &mut D, list: FreeList) {
        let mut cur = list.head;
        let mut left = list.count;
        while let (Some(pa), true) = (cur, left > 0) {
            let Some(t) = dma.region(pa, TABLE_SIZE) else {
                break;
            };
            let link = dma.read64(&t, 0).unwrap_or(0);
            cur = (link & CHAIN_LINK != 0).then_some(PhysAddr(link & !0xFFF));
            dma.free(t);
            self.tables = self.tables.saturating_sub(1);
            left -= 1;
        }
    }

    /// Frees the whole tree. Call only once no STE points at it and its
    /// TLB entries were invalidated.
    pub fn destroy<D: DmaMemory>(mut self, dma: &mut D) {
        let root = self.root.phys();
        self.free_level(dma, root, self.start);
        dma.free(self.root);
    }

    fn free_level<D: DmaMemory>(&mut self, dma: &mut D, table: PhysAddr, level: u8) {
        let len = if level == self.start { self.concat * TABLE_SIZE } else { TABLE_SIZE };
        let Some(t) = dma.region(table, len) else {
            return;
        };
        for i in 0..self.entries(level) {
            if let Ok(d) = dma.read64(&t, i * 8) {
                if let Desc::Table(next) = decode(d, level) {
                    self.free_level(dma, next, level + 1);
                    if let Some(r) = dma.region(next, TABLE_SIZE) {
                        dma.free(r);
                    }
                }
            }
        }
    }

    /// Software walk: where `iova` maps to, with what protection and in a
    /// leaf of what size; `None` if unmapped.
    pub fn lookup<D: DmaMemory>(&self, dma: &D, iova: Iova) -> Option<(PhysAddr, Prot, u64)> {
        if iova.0 >> self.input_bits != 0 {
            return None;
        }
        let mut table = self.root.phys();
        let mut level = self.start;
        loop {
            let len = if level == self.start { self.concat * TABLE_SIZE } else { TABLE_SIZE };
            let t = dma.region(table, len)?;
            let shift = level_shift(level);
            let idx = self.index(iova.0, level);
            let desc = dma.read64(&t, idx * 8).ok()?;
            match decode(desc, level) {
                Desc::Invalid => return None,
                Desc::Table(next) => {
                    table = next;
                    level += 1;
                }
                Desc::Leaf => {
                    let size = 1u64 << shift;
                    let base = desc & 0x0000_FFFF_FFFF_F000 & !(size - 1);
                    return Some((PhysAddr(base | (iova.0 & (size - 1))), prot_of(self.stage, desc), size));
                }
            }
        }
    }
}
