//! Stream table entries: attach and detach, so that the SMMU only ever
//! fetches abort, the complete old entry or the complete new one (see
//! [`crate::strtab`] for the update protocol), with the invalidations in the
//! order the architecture needs (ch. 4: configuration before TLB tags).

use embedded_hal::delay::DelayNs;

use super::Smmu;
use crate::cd::CD_SIZE;
use crate::cmdq::Command;
use crate::domain::{Domain, Tag};
use crate::error::{Error, Unsupported};
use crate::hal::{DmaMemory, DmaRegion, Mmio};
use crate::ste::{Ste, SteConfig, SteInfo};
use crate::strtab::{span_of, Format, L2_STES};
use crate::types::StreamId;

/// A small set of TLB tags to invalidate after a batch of STE changes.
struct TagSet {
    tags: [Option<Tag>; 8],
    /// More distinct tags than fit: invalidate everything instead.
    overflowed: bool,
}

impl TagSet {
    fn new() -> Self {
        TagSet { tags: [None; 8], overflowed: false }
    }

    fn insert(&mut self, t: Tag) {
        if self.tags.contains(&Some(t)) {
            return;
        }
        match self.tags.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(t),
            None => self.overflowed = true,
        }
    }
}

/// Level-2 spans swapped per `CMD_SYNC` by an assignment.
const SWAP_BATCH: usize = 8;

/// StreamIDs collected while walking a request (at most one span's worth
/// per batch; a request is a group's StreamIDs).
struct SidBatch {
    sids: [StreamId; L2_STES],
    len: usize,
}

impl SidBatch {
    fn new() -> Self {
        SidBatch { sids: [StreamId(0); L2_STES], len: 0 }
    }

    /// Adds `sid` unless already there. Callers hand at most a span's
    /// worth of distinct StreamIDs to one batch (requests are cut into
    /// chunks of [`L2_STES`]), so nothing is ever left out.
    fn push(&mut self, sid: StreamId) {
        if self.contains(sid) {
            return;
        }
        if let Some(slot) = self.sids.get_mut(self.len) {
            *slot = sid;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[StreamId] {
        &self.sids[..self.len]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn contains(&self, sid: StreamId) -> bool {
        self.as_slice().contains(&sid)
    }
}

/// Which entries [`Smmu::take_down`] makes abort.
#[derive(Clone, Copy)]
enum TakeDown<'a> {
    /// Every translating entry (detach); aborting ones are scrubbed too.
    All,
    /// Translating entries other than this one (before an install).
    LiveExcept(&'a Ste),
}

/// If `sids` are exactly an aligned block of 2^k (k ≥ 1) StreamIDs, the
/// CFGI_STE_RANGE `Range` value covering them.
fn aligned_block(sids: &[StreamId]) -> Option<u8> {
    let n = sids.len();
    if !(2..=256).contains(&n) || !n.is_power_of_two() {
        return None;
    }
    let min = sids.iter().map(|s| s.0).min()?;
    if !(min as usize).is_multiple_of(n) {
        return None;
    }
    let mut seen = [0u64; 4];
    for s in sids {
        let off = s.0.checked_sub(min)? as usize;
        if off >= n || seen[off / 64] & (1 << (off % 64)) != 0 {
            return None;
        }
        seen[off / 64] |= 1 << (off % 64);
    }
    Some(n.trailing_zeros() as u8 - 1)
}

impl<M: Mmio, D: DmaMemory, T: DelayNs> Smmu<M, D, T> {
    fn check_sids(&self, sids: &[StreamId]) -> Result<(), Error> {
        match sids.iter().find(|s| !self.strtab.covers(**s)) {
            Some(s) => Err(Error::StreamIdOutOfRange(*s)),
            None => Ok(()),
        }
    }

    /// The TLB tag an STE in memory translates with, if it translates.
    fn tag_of_ste(&self, info: &SteInfo) -> Option<Tag> {
        match info.config {
            SteConfig::Stage2 | SteConfig::Nested => Some(Tag::S2 { vmid: info.vmid }),
            SteConfig::Stage1 => {
                let asid = self.dma.region(info.cd_table, CD_SIZE).and_then(|r| self.dma.read64(&r, 0).ok()).map(crate::cd::Cd::asid_of);
                Some(match asid {
                    Some(asid) => Tag::S1 { asid, vmid: info.vmid },
                    // CD unreadable: fall back to every stage-1 entry of
                    // the VMID (TLBI_NH_ALL semantics via ASID-less tag).
                    None => Tag::S2 { vmid: info.vmid },
                })
            }
            // Bypass is never written by us; if found, it is aborted like a
            // translating entry, and nothing is cached under a tag for it.
            SteConfig::Bypass | SteConfig::Abort | SteConfig::Invalid => None,
        }
    }

    fn push_tags(&mut self, tags: &TagSet) -> Result<(), Error> {
        if tags.overflowed {
            // More tags than the set holds: every non-secure, non-hyp
            // entry instead (ch. 4, CMD_TLBI_NSNH_ALL).
            return self.push(Command::TlbiNsnhAll);
        }
        for t in tags.tags.iter().flatten() {
            self.push_tlbi_all_for(*t)?;
        }
        Ok(())
    }

    /// Like `push_tlbi_all`, but a stage-2 tag on an SMMU without stage 2
    /// (stage-1 entry whose CD could not be read) becomes TLBI_NH_ALL.
    fn push_tlbi_all_for(&mut self, tag: Tag) -> Result<(), Error> {
        match tag {
            Tag::S2 { vmid } if !self.features.stage2 => self.push(Command::TlbiNhAll { vmid }),
            t => self.push_tlbi_all(t),
        }
    }

    /// Pushes the configuration invalidation of `sids` (IHI 0070 §4.3):
    /// one CFGI_STE_RANGE when they form an aligned power-of-two block (it
    /// also drops the level-1 descriptors locating them, as Leaf = 0 does),
    /// else CFGI_STE each with `leaf` (Leaf = 1: the STE only; Leaf = 0:
    /// the L1STD that locates it as well, needed when a level-1 descriptor
    /// changed).
    fn push_cfgi(&mut self, sids: &[StreamId], leaf: bool) -> Result<(), Error> {
        if let Some(range) = aligned_block(sids) {
            return self.push(Command::CfgiSteRange { sid: sids[0], range });
        }
        for sid in sids {
            self.push(Command::CfgiSte { sid: *sid, leaf })?;
        }
        Ok(())
    }

    /// Makes `sids` translate through `domain`.
    ///
    /// Streams currently translating elsewhere are first made to abort and
    /// their old configuration and TLB tags invalidated behind one
    /// `CMD_SYNC` (as [`detach`](Self::detach) does). The new entries are
    /// then installed so that no fetch can see anything but abort or the
    /// complete new entry (see [`crate::strtab`]): on a two-level table by
    /// swapping in a fresh level-2 table, behind ONE `CMD_SYNC`; in place
    /// (linear table, or no memory for a fresh level-2 table) dwords 1..7
    /// then dword 0, behind two. On return the SMMU uses the new entries.
    /// Nothing changes if a StreamID is out of range. An error from the
    /// hardware part-way leaves entries aborting or installed and the caches
    /// unknown: see [`Error::leaves_smmu_untrusted`].
    pub fn attach(&mut self, domain: &Domain, sids: &[StreamId]) -> Result<(), Error> {
        self.check_owner(domain)?;
        let ste = domain.ste(&self.features, self.coherent)?;
        self.attach_ste(&ste, sids)
    }

    /// Makes `sids` translate through stage-1 domain `s1` nested inside
    /// stage-2 domain `s2` (both stages implemented), as [`attach`](Self::attach)
    /// does for one domain. `s2` must map the IPAs of `s1`'s CD and tables
    /// (this driver allocates them from its DMA memory, so an identity map
    /// of that memory does). `s1`'s TLB entries are then tagged with `s2`'s
    /// VMID, and combine both stages: from now on, unmapping from `s1`
    /// also invalidates its entries under that VMID, and unmapping from
    /// `s2` also invalidates every stage-1 entry of the VMID (TLBI_NH_ALL).
    /// A stage-1 domain is nested inside one stage-2 domain at a time.
    pub fn attach_nested(&mut self, s1: &mut Domain, s2: &mut Domain, sids: &[StreamId]) -> Result<(), Error> {
        self.check_owner(s1)?;
        self.check_owner(s2)?;
        if !(self.features.stage1 && self.features.stage2) {
            return Err(Error::Unsupported(Unsupported::StageNotImplemented));
        }
        let vmid = s2.vmid().ok_or(Error::Unsupported(Unsupported::StageNotImplemented))?;
        if s1.nested_vmid().is_some_and(|v| v != vmid) {
            return Err(Error::NestedElsewhere);
        }
        let ste = Domain::nested_ste(s1, s2, &self.features, self.coherent).ok_or(Error::Unsupported(Unsupported::StageNotImplemented))??;
        // Record the tagging before any entry can be cached under it.
        s1.set_nested_in(vmid);
        s2.set_nest_parent();
        self.attach_ste(&ste, sids)
    }

    fn attach_ste(&mut self, ste: &Ste, sids: &[StreamId]) -> Result<(), Error> {
        self.check_sids(sids)?;
        if sids.is_empty() {
            return Ok(());
        }
        // Phase 1: live entries of other owners to abort (I3: blocked
        // between owners), all of them before any new entry goes live.
        for chunk in sids.chunks(L2_STES) {
            self.take_down(chunk, TakeDown::LiveExcept(ste))?;
        }
        // Phase 2: the new entries.
        if self.strtab.format() == Format::TwoLevel {
            match self.install_by_swap(ste, sids) {
                // No memory for a fresh level-2 table: in place instead.
                Err(Error::OutOfMemory) => {}
                r => return r,
            }
        }
        for chunk in sids.chunks(L2_STES) {
            self.install_in_place(ste, chunk)?;
        }
        Ok(())
    }

    /// Makes `sids` abort (owner change / Blocked state): dword 0 of each
    /// translating STE becomes abort, their configuration is invalidated
    /// (CFGI_STE, and CFGI_CD_ALL where a CD was in use: CFGI_STE does not
    /// drop cached CDs), then the TLB tags of the domains they used — all
    /// behind one `CMD_SYNC`; once that completed, dwords 1..7 are cleared.
    /// On return no transaction of these streams can be translated with the
    /// old configuration, and no aborting entry holds a table pointer.
    /// Streams whose level-2 table was never allocated already terminate and
    /// cost nothing.
    pub fn detach(&mut self, sids: &[StreamId]) -> Result<(), Error> {
        self.check_sids(sids)?;
        for chunk in sids.chunks(L2_STES) {
            self.take_down(chunk, TakeDown::All)?;
        }
        Ok(())
    }

    /// [`detach`](Self::detach) of at most [`L2_STES`] StreamIDs.
    fn take_down(&mut self, sids: &[StreamId], which: TakeDown<'_>) -> Result<(), Error> {
        let mut tags = TagSet::new();
        let mut changed = SidBatch::new();
        let mut cds = SidBatch::new();
        for sid in sids {
            let Some(cur) = self.strtab.read(&self.dma, *sid)? else {
                continue;
            };
            let info = SteInfo::decode(&cur);
            if matches!(info.config, SteConfig::Abort | SteConfig::Invalid) {
                continue;
            }
            if let TakeDown::LiveExcept(keep) = which {
                if cur == *keep.words() {
                    continue;
                }
            }
            if let Some(t) = self.tag_of_ste(&info) {
                tags.insert(t);
            }
            if matches!(info.config, SteConfig::Stage1 | SteConfig::Nested) {
                cds.push(*sid);
            }
            self.strtab.write_abort(&mut self.dma, *sid)?;
            self.ste_writes += 1;
            changed.push(*sid);
        }
        if !changed.is_empty() {
            self.push_cfgi(changed.as_slice(), true)?;
            for sid in cds.as_slice() {
                self.push(Command::CfgiCdAll { sid: *sid })?;
            }
            // After the CFGIs: a configuration still cached could otherwise
            // refill the TLB under the old tag after its TLBI.
            self.push_tags(&tags)?;
            self.sync()?;
        }
        // The aborts are confirmed: clear what they still hold.
        let all = matches!(which, TakeDown::All);
        for sid in sids {
            if (all || changed.contains(*sid)) && self.strtab.is_present(&self.dma, *sid) {
                self.strtab.scrub(&mut self.dma, *sid)?;
            }
        }
        Ok(())
    }

    /// Installs `ste` for `sids` by building each changed level-2 table
    /// afresh and switching its level-1 descriptor: per batch of spans, the
    /// CFGIs (Leaf = 0, for the descriptor) and ONE `CMD_SYNC`; the tables
    /// replaced are freed once it completed.
    fn install_by_swap(&mut self, ste: &Ste, sids: &[StreamId]) -> Result<(), Error> {
        let f = self.features;
        let mut pending: [Option<(u32, Option<DmaRegion>)>; SWAP_BATCH] = Default::default();
        let mut n = 0usize;
        for (i, first) in sids.iter().enumerate() {
            let span = span_of(*first);
            if sids[..i].iter().any(|s| span_of(*s) == span) {
                continue;
            }
            let in_span = sids.iter().filter(|s| span_of(**s) == span);
            let unchanged = in_span.clone().all(|s| matches!(self.strtab.read(&self.dma, *s), Ok(Some(w)) if w == *ste.words()));
            if unchanged {
                continue;
            }
            if n == SWAP_BATCH {
                self.flush_swaps(sids, &mut pending)?;
                n = 0;
            }
            let mut staged = match self.strtab.stage_span(&mut self.dma, &f, span) {
                Ok(st) => st,
                Err(e) => {
                    self.flush_swaps(sids, &mut pending)?;
                    return Err(e);
                }
            };
            for s in in_span {
                if let Err(e) = staged.write(&mut self.dma, *s, ste) {
                    staged.discard(&mut self.dma);
                    self.flush_swaps(sids, &mut pending)?;
                    return Err(e);
                }
                self.ste_writes += 1;
            }
            let old = self.strtab.swap_in(&mut self.dma, staged)?;
            pending[n] = Some((span, old));
            n += 1;
        }
        self.flush_swaps(sids, &mut pending)
    }

    /// Invalidates the spans swapped in (`pending`), waits, then frees the
    /// tables they replaced; after a failed wait they are leaked instead
    /// (the SMMU may still read them).
    fn flush_swaps(&mut self, sids: &[StreamId], pending: &mut [Option<(u32, Option<DmaRegion>)>; SWAP_BATCH]) -> Result<(), Error> {
        if pending.iter().all(Option::is_none) {
            return Ok(());
        }
        for (span, _) in pending.iter().flatten() {
            let mut in_span = SidBatch::new();
            for s in sids.iter().filter(|s| span_of(**s) == *span) {
                in_span.push(*s);
            }
            self.push_cfgi(in_span.as_slice(), false)?;
        }
        let synced = self.sync();
        for slot in pending.iter_mut() {
            if let Some((_, Some(old))) = slot.take() {
                if synced.is_ok() {
                    self.dma.free(old);
                }
            }
        }
        synced
    }

    /// Installs `ste` for `sids` in place: dwords 1..7 (dword 0 still
    /// aborts), CFGI + `CMD_SYNC`, then dword 0, CFGI + `CMD_SYNC`.
    fn install_in_place(&mut self, ste: &Ste, sids: &[StreamId]) -> Result<(), Error> {
        let f = self.features;
        let mut linked = false;
        for sid in sids {
            linked |= self.strtab.ensure(&mut self.dma, &f, *sid)?;
        }
        let mut tails = SidBatch::new();
        for sid in sids {
            if self.strtab.write_tail(&mut self.dma, *sid, ste)? {
                tails.push(*sid);
            }
        }
        if linked {
            // New level-1 descriptors: Leaf = 0 for every stream.
            self.push_cfgi(sids, false)?;
            self.sync()?;
        } else if !tails.is_empty() {
            self.push_cfgi(tails.as_slice(), true)?;
            self.sync()?;
        }
        let mut heads = SidBatch::new();
        for sid in sids {
            if self.strtab.write_head(&mut self.dma, *sid, ste)? {
                heads.push(*sid);
                self.ste_writes += 1;
            }
        }
        if heads.is_empty() {
            return Ok(());
        }
        self.push_cfgi(heads.as_slice(), true)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u32]) -> [StreamId; 8] {
        let mut out = [StreamId(0); 8];
        for (o, x) in out.iter_mut().zip(v) {
            *o = StreamId(*x);
        }
        out
    }

    #[test]
    fn aligned_blocks() {
        assert_eq!(aligned_block(&s(&[4, 5])[..2]), Some(0));
        assert_eq!(aligned_block(&s(&[5, 4])[..2]), Some(0));
        assert_eq!(aligned_block(&s(&[5, 6])[..2]), None);
        assert_eq!(aligned_block(&s(&[8, 9, 10, 11])[..4]), Some(1));
        assert_eq!(aligned_block(&s(&[8, 9, 9, 11])[..4]), None);
        assert_eq!(aligned_block(&s(&[16, 17, 18, 19, 20, 21, 22, 23])), Some(2));
        assert_eq!(aligned_block(&s(&[7])[..1]), None);
        assert_eq!(aligned_block(&s(&[0, 1, 2])[..3]), None);
    }
}
