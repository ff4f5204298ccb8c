//! The stream table (IHI 0070 §3.3, ch. 5): linear, or two-level with
//! level-1 descriptors pointing to level-2 arrays of STEs.
//!
//! Two-level tables use an 8-bit split (one level-2 table of 256 STEs per
//! PCI bus). Level-1 descriptors start invalid (`Span = 0`: the SMMU
//! terminates the stream with C_BAD_STREAMID), and a level-2 table is only
//! allocated — filled with abort STEs — when a stream in its span is
//! attached. Level-2 tables are never freed.
//!
//! Every STE write goes words 1..7 first, then a barrier, then word 0 (which
//! holds `V` and `Config`), so the SMMU can only ever fetch the old entry, an
//! abort entry, or the new entry (ch. 3, structure update rules).

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
    pub fn new<D: DmaMemory>(
        dma: &mut D,
        features: &Features,
        max_sid_bits: u8,
        coherent: bool,
    ) -> Result<Self, Error> {
        let sid_bits = features.sid_bits.min(max_sid_bits).min(32);
        let format = if features.two_level_strtab && sid_bits > SPLIT {
            Format::TwoLevel
        } else {
            Format::Linear
        };
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
        Ok(StreamTable {
            format,
            table,
            sid_bits,
            coherent,
        })
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
    fn locate<D: DmaMemory>(
        &self,
        dma: &D,
        sid: StreamId,
    ) -> Result<Option<(DmaRegion, usize)>, Error> {
        if !self.covers(sid) {
            return Err(Error::StreamIdOutOfRange(sid));
        }
        let sid = sid.0 as usize;
        match self.format {
            Format::Linear => {
                let r = dma
                    .region(self.table.phys(), self.table.len())
                    .ok_or(Error::DmaOutOfBounds)?;
                Ok(Some((r, sid * STE_SIZE)))
            }
            Format::TwoLevel => {
                let desc = LocalRegisterCopy::<u64, L1STD::Register>::new(
                    dma.read64(&self.table, (sid >> SPLIT) * L1_DESC_SIZE)?,
                );
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
    /// it reachable.
    pub(crate) fn ensure<D: DmaMemory>(
        &mut self,
        dma: &mut D,
        features: &Features,
        sid: StreamId,
    ) -> Result<(), Error> {
        if self.locate(dma, sid)?.is_some() {
            return Ok(());
        }
        let l2 = alloc_checked(dma, l2_size(), l2_size(), features)?;
        for i in 0..L2_STES {
            dma.write64(&l2, i * STE_SIZE, Ste::abort().words()[0])?;
        }
        dma.publish(&l2, 0, l2_size(), self.coherent);
        let mut desc = LocalRegisterCopy::<u64, L1STD::Register>::new(0);
        desc.write(
            L1STD::L2Ptr.val(l2.phys().as_u64() >> 6) + L1STD::Span.val(u64::from(SPLIT) + 1),
        );
        let off = (sid.0 as usize >> SPLIT) * L1_DESC_SIZE;
        dma.write64(&self.table, off, desc.get())?;
        dma.publish(&self.table, off, L1_DESC_SIZE, self.coherent);
        // The level-2 table now belongs to the stream table for good; it is
        // found again through the descriptor, so no handle is kept.
        Ok(())
    }

    /// Reads the STE of `sid`; `None` when it does not exist in memory.
    pub fn read<D: DmaMemory>(
        &self,
        dma: &D,
        sid: StreamId,
    ) -> Result<Option<[u64; STE_WORDS]>, Error> {
        let Some((r, off)) = self.locate(dma, sid)? else {
            return Ok(None);
        };
        let mut w = [0u64; STE_WORDS];
        for (i, v) in w.iter_mut().enumerate() {
            *v = dma.read64(&r, off + i * 8)?;
        }
        Ok(Some(w))
    }

    /// Makes the STE of `sid` abort by rewriting word 0 only (`V = 1,
    /// Config = abort`); the other words are ignored by the SMMU.
    pub(crate) fn write_abort<D: DmaMemory>(
        &mut self,
        dma: &mut D,
        sid: StreamId,
    ) -> Result<(), Error> {
        let (r, off) = self
            .locate(dma, sid)?
            .ok_or(Error::StreamIdOutOfRange(sid))?;
        dma.write64(&r, off, Ste::abort().words()[0])?;
        dma.publish(&r, off, 8, self.coherent);
        Ok(())
    }

    /// Installs `ste` for `sid`. The entry in memory must currently abort
    /// (or already be `ste`): words 1..7 are written and published first,
    /// word 0 last, so the SMMU sees abort until the whole new entry is there.
    pub(crate) fn write<D: DmaMemory>(
        &mut self,
        dma: &mut D,
        sid: StreamId,
        ste: &Ste,
    ) -> Result<(), Error> {
        let (r, off) = self
            .locate(dma, sid)?
            .ok_or(Error::StreamIdOutOfRange(sid))?;
        let mut cur = [0u64; STE_WORDS];
        for (i, v) in cur.iter_mut().enumerate() {
            *v = dma.read64(&r, off + i * 8)?;
        }
        let live = SteInfo::decode(&cur).config;
        if !matches!(live, SteConfig::Abort | SteConfig::Invalid) && &cur != ste.words() {
            // Overwriting a live translating entry in place could expose a
            // torn mix of old and new: the caller must abort it first.
            return Err(Error::UnexpectedSte(sid));
        }
        for (i, w) in ste.words().iter().enumerate().skip(1) {
            dma.write64(&r, off + i * 8, *w)?;
        }
        dma.publish(&r, off + 8, STE_SIZE - 8, self.coherent);
        dma.write64(&r, off, ste.words()[0])?;
        dma.publish(&r, off, 8, self.coherent);
        Ok(())
    }

    /// Calls `f` for every STE present in memory until it returns `Some`.
    pub(crate) fn find_map<D: DmaMemory, T>(
        &self,
        dma: &D,
        mut f: impl FnMut(StreamId, &[u64; STE_WORDS]) -> Option<T>,
    ) -> Result<Option<T>, Error> {
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

/// Allocates DMA memory and checks the allocator kept its promises:
/// alignment, length, and an address the SMMU can emit (below its output
/// address size).
pub(crate) fn alloc_checked<D: DmaMemory>(
    dma: &mut D,
    size: usize,
    align: usize,
    features: &Features,
) -> Result<DmaRegion, Error> {
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
