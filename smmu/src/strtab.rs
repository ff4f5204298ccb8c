//! The stream table (IHI 0070 §3.3, ch. 5): linear, or two-level with
//! level-1 descriptors pointing to level-2 arrays of STEs.
//!
//! Two-level tables use an 8-bit split (one level-2 table of 256 STEs per
//! PCI bus). Level-1 descriptors start invalid (`Span = 0`: the SMMU
//! terminates the stream with C_BAD_STREAMID).
//!
//! The SMMU may fetch an STE's eight dwords in any order, each only
//! single-copy atomic on its own (§3.21.3, structure access rules), and a
//! fetch may straddle the driver's writes. So an entry is never rewritten
//! in place while a fetch could combine its old and new dwords into a
//! translating configuration:
//! - making an entry abort rewrites dword 0 alone (`V = 1, Config = abort`:
//!   every combination with it terminates); once that is invalidated and
//!   synchronised, dwords 1..7 are cleared ([`StreamTable::scrub`]) so no
//!   aborting entry keeps a former owner's table pointers;
//! - on a two-level table, an assignment builds the changed level-2 table
//!   afresh ([`StreamTable::stage_span`]), publishes it, and switches the
//!   level-1 descriptor with one 64-bit write ([`StreamTable::swap_in`]): a
//!   fetch reads the descriptor once, so it sees the whole old table or the
//!   whole new one. The old table is freed after the invalidation completed;
//! - in place (a linear table, or no memory for a fresh level-2 table):
//!   dwords 1..7 first ([`StreamTable::write_tail`]), invalidated and
//!   synchronised while dword 0 still aborts, then dword 0
//!   ([`StreamTable::write_head`]): two CMD_SYNCs.

use tock_registers::LocalRegisterCopy;

use crate::error::Error;
use crate::features::Features;
use crate::hal::{DmaMemory, DmaRegion};
use crate::regs::{STRTAB_BASE, STRTAB_BASE_CFG};
use crate::ste::{Ste, SteConfig, SteInfo, STE_SIZE, STE_WORDS};
use crate::types::StreamId;

/// StreamID bits resolved by a level-2 table (STRTAB_BASE_CFG.SPLIT).
pub const SPLIT: u8 = 8;
/// STEs per level-2 table.
pub const L2_STES: usize = 1 << SPLIT;
/// Size of a level-1 stream table descriptor.
pub const L1_DESC_SIZE: usize = 8;

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// Level-1 stream table descriptor (ch. 5).
        pub L1STD [
            /// log2(number of STEs in the level-2 table) + 1; 0 = invalid.
            Span OFFSET(0) NUMBITS(5) [],
            /// Level-2 table address bits [51:6].
            L2Ptr OFFSET(6) NUMBITS(46) []
        ]
    ];
}
pub use layout::L1STD;

/// Layout of a stream table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Format {
    /// One array of STEs.
    Linear,
    /// Level-1 descriptors pointing to level-2 STE arrays of [`L2_STES`].
    TwoLevel,
}

/// A stream table in DMA memory.
#[derive(Debug)]
pub struct StreamTable {
    format: Format,
    table: DmaRegion,
    sid_bits: u8,
    coherent: bool,
}

fn l2_size() -> usize {
    L2_STES * STE_SIZE
}

impl StreamTable {
    /// Allocates a stream table covering `min(SIDSIZE, max_sid_bits)`
    /// StreamID bits, every entry aborting: linear when that is at most
    /// [`SPLIT`] bits or the SMMU has no two-level support, two-level
    /// otherwise.
    pub fn new<D: DmaMemory>(dma: &mut D, features: &Features, max_sid_bits: u8, coherent: bool) -> Result<Self, Error> {
        let sid_bits = features.sid_bits.min(max_sid_bits).min(32);
        let format = if features.two_level_strtab && sid_bits > SPLIT { Format::TwoLevel } else { Format::Linear };
        let size = match format {
            Format::Linear => STE_SIZE << sid_bits,
            Format::TwoLevel => (L1_DESC_SIZE << (sid_bits - SPLIT)).max(64),
        };
        let table = alloc_checked(dma, size, size, features)?;
        if format == Format::Linear {
            // Zeroed memory would be V = 0 (C_BAD_STE); make every entry a
            // proper abort before the SMMU is enabled.
            for i in 0..(1usize << sid_bits) {
                dma.write64(&table, i * STE_SIZE, Ste::abort().words()[0])?;
            }
        }
        // Linear: the abort entries; two-level: the zeroed (invalid) level-1
        // descriptors. Either way the SMMU must not see stale memory.
        dma.publish(&table, 0, size, coherent);
        Ok(StreamTable { format, table, sid_bits, coherent })
    }

    /// Layout in use.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of StreamID bits covered (`STRTAB_BASE_CFG.LOG2SIZE`).
    pub fn sid_bits(&self) -> u8 {
        self.sid_bits
    }

    /// `true` when `sid` is covered by the table.
    pub fn covers(&self, sid: StreamId) -> bool {
        u64::from(sid.0) < 1u64 << self.sid_bits
    }

    /// Value for SMMU_STRTAB_BASE.
    pub fn base_register(&self) -> u64 {
        let mut r = LocalRegisterCopy::<u64, STRTAB_BASE::Register>::new(0);
        r.write(STRTAB_BASE::ADDR.val(self.table.phys().as_u64() >> 6));
        if self.coherent {
            r.modify(STRTAB_BASE::RA::SET);
        }
        r.get()
    }

    /// Value for SMMU_STRTAB_BASE_CFG.
    pub fn base_cfg_register(&self) -> u32 {
        let mut r = LocalRegisterCopy::<u32, STRTAB_BASE_CFG::Register>::new(0);
        r.write(STRTAB_BASE_CFG::LOG2SIZE.val(u32::from(self.sid_bits)));
        if self.format == Format::TwoLevel {
            r.modify(STRTAB_BASE_CFG::FMT::TwoLevel + STRTAB_BASE_CFG::SPLIT.val(u32::from(SPLIT)));
        }
        r.get()
    }

    /// Physical address of the table (linear) or level-1 table.
    pub fn base(&self) -> crate::types::PhysAddr {
        self.table.phys()
    }

    /// Where the STE for `sid` lives, or `None` when its level-2 table has
    /// not been allocated (the stream is then terminated by the SMMU).
    fn locate<D: DmaMemory>(&self, dma: &D, sid: StreamId) -> Result<Option<(DmaRegion, usize)>, Error> {
        if !self.covers(sid) {
            return Err(Error::StreamIdOutOfRange(sid));
        }
        let sid = sid.0 as usize;
        match self.format {
            Format::Linear => {
                let r = dma.region(self.table.phys(), self.table.len()).ok_or(Error::DmaOutOfBounds)?;
                Ok(Some((r, sid * STE_SIZE)))
            }
            Format::TwoLevel => {
                let desc = LocalRegisterCopy::<u64, L1STD::Register>::new(dma.read64(&self.table, (sid >> SPLIT) * L1_DESC_SIZE)?);
                if desc.read(L1STD::Span) == 0 {
                    return Ok(None);
                }
                let l2 = crate::types::PhysAddr(desc.read(L1STD::L2Ptr) << 6);
                let r = dma.region(l2, l2_size()).ok_or(Error::DmaOutOfBounds)?;
                Ok(Some((r, (sid & (L2_STES - 1)) * STE_SIZE)))
            }
        }
    }

    /// `true` when the STE of `sid` exists in memory (always for linear
    /// tables; for two-level, once its level-2 table was allocated).
    pub fn is_present<D: DmaMemory>(&self, dma: &D, sid: StreamId) -> bool {
        matches!(self.locate(dma, sid), Ok(Some(_)))
    }

    /// Makes sure the STE of `sid` exists, allocating its level-2 table
    /// (all abort) and publishing it before the level-1 descriptor that makes
    /// it reachable. Returns `true` when it wrote a level-1 descriptor: the
    /// caller must then invalidate it (CFGI with Leaf = 0, or a range).
    pub(crate) fn ensure<D: DmaMemory>(&mut self, dma: &mut D, features: &Features, sid: StreamId) -> Result<bool, Error> {
        if self.locate(dma, sid)?.is_some() {
            return Ok(false);
        }
        let staged = self.stage_span(dma, features, span_of(sid))?;
        self.swap_in(dma, staged)?;
        Ok(true)
    }

    /// A fresh level-2 table for `span` holding a copy of the current one
    /// (all abort when the span has none yet), not yet reachable by the
    /// SMMU: edit it with [`StagedSpan::write`], then [`swap_in`](Self::swap_in).
    pub(crate) fn stage_span<D: DmaMemory>(&self, dma: &mut D, features: &Features, span: u32) -> Result<StagedSpan, Error> {
        let first = StreamId(span << SPLIT);
        if self.format != Format::TwoLevel || !self.covers(first) {
            return Err(Error::StreamIdOutOfRange(first));
        }
        let current = self.locate(dma, first)?.map(|(r, _)| r);
        let table = alloc_checked(dma, l2_size(), l2_size(), features)?;
        for off in (0..l2_size()).step_by(8) {
            let w = match &current {
                Some(cur) => dma.read64(cur, off)?,
                None if off % STE_SIZE == 0 => Ste::abort().words()[0],
                None => 0,
            };
            if w != 0 {
                dma.write64(&table, off, w)?;
            }
        }
        Ok(StagedSpan { span, table })
    }

    /// Publishes `staged` and makes it the span's level-2 table with one
    /// 64-bit write of its level-1 descriptor. Returns the table it
    /// replaced, which the SMMU may still be reading: free it only once the
    /// descriptor's invalidation (Leaf = 0) has completed.
    pub(crate) fn swap_in<D: DmaMemory>(&mut self, dma: &mut D, staged: StagedSpan) -> Result<Option<DmaRegion>, Error> {
        let StagedSpan { span, table } = staged;
        let old = self.locate(dma, StreamId(span << SPLIT))?.map(|(r, _)| r);
        dma.publish(&table, 0, l2_size(), self.coherent);
        let mut desc = LocalRegisterCopy::<u64, L1STD::Register>::new(0);
        desc.write(L1STD::L2Ptr.val(table.phys().as_u64() >> 6) + L1STD::Span.val(u64::from(SPLIT) + 1));
        let off = span as usize * L1_DESC_SIZE;
        dma.write64(&self.table, off, desc.get())?;
        dma.publish(&self.table, off, L1_DESC_SIZE, self.coherent);
        // The new table is found again through the descriptor; the handle
        // is not kept.
        Ok(old)
    }

    /// Reads the STE of `sid`; `None` when it does not exist in memory.
    pub fn read<D: DmaMemory>(&self, dma: &D, sid: StreamId) -> Result<Option<[u64; STE_WORDS]>, Error> {
        match self.locate(dma, sid)? {
            Some((r, off)) => read_words(dma, &r, off).map(Some),
            None => Ok(None),
        }
    }

    fn locate_existing<D: DmaMemory>(&self, dma: &D, sid: StreamId) -> Result<(DmaRegion, usize), Error> {
        self.locate(dma, sid)?.ok_or(Error::StreamIdOutOfRange(sid))
    }

    fn terminates(words: &[u64; STE_WORDS]) -> bool {
        matches!(SteInfo::decode(words).config, SteConfig::Abort | SteConfig::Invalid)
    }

    /// Makes the STE of `sid` abort by rewriting word 0 only (`V = 1,
    /// Config = abort`): whatever mix of dwords a fetch reads, it
    /// terminates.
    pub(crate) fn write_abort<D: DmaMemory>(&mut self, dma: &mut D, sid: StreamId) -> Result<(), Error> {
        let (r, off) = self.locate_existing(dma, sid)?;
        dma.write64(&r, off, Ste::abort().words()[0])?;
        dma.publish(&r, off, 8, self.coherent);
        Ok(())
    }

    /// Clears words 1..7 of the aborting STE of `sid`, so that it keeps no
    /// former owner's VMID or table pointers. Call once the abort has been
    /// invalidated and synchronised. Refused on an entry that translates.
    pub(crate) fn scrub<D: DmaMemory>(&mut self, dma: &mut D, sid: StreamId) -> Result<(), Error> {
        let (r, off) = self.locate_existing(dma, sid)?;
        let cur = read_words(dma, &r, off)?;
        if !Self::terminates(&cur) {
            return Err(Error::UnexpectedSte(sid));
        }
        if cur[1..].iter().all(|w| *w == 0) {
            return Ok(());
        }
        for i in 1..STE_WORDS {
            dma.write64(&r, off + i * 8, 0)?;
        }
        dma.publish(&r, off + 8, STE_SIZE - 8, self.coherent);
        Ok(())
    }

    /// Writes words 1..7 of `ste` for `sid`, whose entry must terminate
    /// (dword 0 keeps aborting): step one of an in-place install. Returns
    /// whether anything changed (then invalidate and synchronise before
    /// [`write_head`](Self::write_head)).
    pub(crate) fn write_tail<D: DmaMemory>(&mut self, dma: &mut D, sid: StreamId, ste: &Ste) -> Result<bool, Error> {
        let (r, off) = self.locate_existing(dma, sid)?;
        let cur = read_words(dma, &r, off)?;
        if cur == *ste.words() {
            return Ok(false);
        }
        if !Self::terminates(&cur) {
            // Overwriting a live translating entry in place could expose a
            // torn mix of old and new: the caller must abort it first.
            return Err(Error::UnexpectedSte(sid));
        }
        if cur[1..] == ste.words()[1..] {
            return Ok(false);
        }
        for (i, w) in ste.words().iter().enumerate().skip(1) {
            dma.write64(&r, off + i * 8, *w)?;
        }
        dma.publish(&r, off + 8, STE_SIZE - 8, self.coherent);
        Ok(true)
    }

    /// Writes word 0 of `ste` for `sid`, whose words 1..7 must already be
    /// `ste`'s and visible to the SMMU (after [`write_tail`](Self::write_tail)
    /// and its invalidation): step two of an in-place install. Returns
    /// whether anything changed.
    pub(crate) fn write_head<D: DmaMemory>(&mut self, dma: &mut D, sid: StreamId, ste: &Ste) -> Result<bool, Error> {
        let (r, off) = self.locate_existing(dma, sid)?;
        let cur = read_words(dma, &r, off)?;
        if cur == *ste.words() {
            return Ok(false);
        }
        if cur[1..] != ste.words()[1..] || !Self::terminates(&cur) {
            return Err(Error::UnexpectedSte(sid));
        }
        dma.write64(&r, off, ste.words()[0])?;
        dma.publish(&r, off, 8, self.coherent);
        Ok(true)
    }

    /// Calls `f` for every STE present in memory until it returns `Some`.
    pub(crate) fn find_map<D: DmaMemory, T>(&self, dma: &D, mut f: impl FnMut(StreamId, &[u64; STE_WORDS]) -> Option<T>) -> Result<Option<T>, Error> {
        let spans: usize = match self.format {
            Format::Linear => 1,
            Format::TwoLevel => 1 << (self.sid_bits - SPLIT),
        };
        let per_span: usize = match self.format {
            Format::Linear => 1 << self.sid_bits,
            Format::TwoLevel => L2_STES,
        };
        for span in 0..spans {
            let first = span * per_span;
            if !self.is_present(dma, StreamId(first as u32)) {
                continue;
            }
            for i in 0..per_span {
                let sid = StreamId((first + i) as u32);
                if let Some(words) = self.read(dma, sid)? {
                    if let Some(t) = f(sid, &words) {
                        return Ok(Some(t));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// A level-2 table being prepared off to the side (see
/// [`StreamTable::stage_span`]); dropping it leaks its memory, which is
/// safe (the SMMU never saw it).
#[derive(Debug)]
pub(crate) struct StagedSpan {
    span: u32,
    table: DmaRegion,
}

impl StagedSpan {
    /// Writes the whole of `ste` for `sid` (which must be in this span):
    /// the SMMU cannot see this table yet, so the order does not matter.
    pub fn write<D: DmaMemory>(&mut self, dma: &mut D, sid: StreamId, ste: &Ste) -> Result<(), Error> {
        if span_of(sid) != self.span {
            return Err(Error::StreamIdOutOfRange(sid));
        }
        let off = (sid.0 as usize & (L2_STES - 1)) * STE_SIZE;
        for (i, w) in ste.words().iter().enumerate() {
            dma.write64(&self.table, off + i * 8, *w)?;
        }
        Ok(())
    }

    /// Gives the memory back (the table was never made reachable).
    pub fn discard<D: DmaMemory>(self, dma: &mut D) {
        dma.free(self.table);
    }
}

/// The level-2 span of `sid` (its StreamID bits above [`SPLIT`]).
pub fn span_of(sid: StreamId) -> u32 {
    sid.0 >> SPLIT
}

fn read_words<D: DmaMemory>(dma: &D, r: &DmaRegion, off: usize) -> Result<[u64; STE_WORDS], Error> {
    let mut w = [0u64; STE_WORDS];
    for (i, v) in w.iter_mut().enumerate() {
        *v = dma.read64(r, off + i * 8)?;
    }
    Ok(w)
}

/// Allocates DMA memory and checks the allocator kept its promises:
/// alignment, length, and an address the SMMU can emit (below its output
/// address size).
pub(crate) fn alloc_checked<D: DmaMemory>(dma: &mut D, size: usize, align: usize, features: &Features) -> Result<DmaRegion, Error> {
    let r = dma.alloc(size, align).ok_or(Error::OutOfMemory)?;
    let limit = 1u64 << features.effective_oas_bits();
    let end = r.phys().as_u64().checked_add(size as u64);
    if !r.phys().is_aligned(align as u64) || r.len() < size || end.is_none_or(|e| e > limit) {
        let pa = r.phys();
        dma.free(r);
        return Err(Error::BadDmaMemory(pa));
    }
    Ok(r)
}
