//! Domains: create, map, unmap (with the TLB invalidation under every tag
//! their entries may carry), destroy.

use embedded_hal::delay::DelayNs;

use super::Smmu;
use crate::cd::CD_SIZE;
use crate::cmdq::{tlbi_ranges, Command};
use crate::domain::{write_cd, Domain, DomainConfig, DomainStage, Kind, StagePreference, Tag};
use crate::error::{Error, Unsupported};
use crate::hal::{DmaMemory, Mmio};
use crate::pgtable::{PageTable, Prot, Stage, GRANULE};
use crate::ste::SteInfo;
use crate::strtab::alloc_checked;
use crate::types::{Iova, Ipa, PhysAddr};

/// Per-page TLBIs are used up to this many pages when range invalidation
/// is not implemented; beyond, the whole ASID/VMID is invalidated.
const MAX_PAGE_TLBIS: u64 = 32;

impl<M: Mmio, D: DmaMemory, T: DelayNs> Smmu<M, D, T> {
    /// Creates an empty domain (see [`DomainConfig`]).
    pub fn create_domain(&mut self, cfg: DomainConfig) -> Result<Domain, Error> {
        let f = self.features;
        let stage = match cfg.stage {
            StagePreference::Auto if f.stage2 => DomainStage::Stage2,
            StagePreference::Auto => DomainStage::Stage1,
            StagePreference::Stage1 if f.stage1 => DomainStage::Stage1,
            StagePreference::Stage2 if f.stage2 => DomainStage::Stage2,
            _ => return Err(Error::Unsupported(Unsupported::StageNotImplemented)),
        };
        let oas = f.effective_oas_bits();
        let max = match stage {
            // IAS = OAS for AArch64-only stage 2 (§3.4).
            DomainStage::Stage2 => oas.min(48),
            DomainStage::Stage1 => 48,
        };
        let input_bits = cfg.input_bits.unwrap_or(oas.min(48));
        if !(25..=max).contains(&input_bits) {
            return Err(Error::BadInputSize(input_bits));
        }
        match stage {
            DomainStage::Stage2 => {
                let vmid = crate::types::Vmid(self.vmids.take_or_alloc(cfg.tag).ok_or(Error::IdsExhausted)?);
                let pgtable = match PageTable::new(&mut self.dma, &f, Stage::Stage2, input_bits, self.coherent) {
                    Ok(p) => p,
                    Err(e) => {
                        self.vmids.free(vmid.0);
                        return Err(e);
                    }
                };
                Ok(Domain { owner: self.strtab.base(), kind: Kind::Stage2 { vmid }, pgtable, nested_in: None, nest_parent: false })
            }
            DomainStage::Stage1 => {
                let asid = crate::types::Asid(self.asids.take_or_alloc(cfg.tag).ok_or(Error::IdsExhausted)?);
                let made = (|| {
                    let pgtable = PageTable::new(&mut self.dma, &f, Stage::Stage1, input_bits, self.coherent)?;
                    let cd = match alloc_checked(&mut self.dma, CD_SIZE, CD_SIZE, &f) {
                        Ok(cd) => cd,
                        Err(e) => {
                            pgtable.destroy(&mut self.dma);
                            return Err(e);
                        }
                    };
                    if let Err(e) = write_cd(&mut self.dma, &cd, asid, &pgtable, &f, self.coherent) {
                        pgtable.destroy(&mut self.dma);
                        self.dma.free(cd);
                        return Err(e);
                    }
                    Ok((pgtable, cd))
                })();
                match made {
                    Ok((pgtable, cd)) => {
                        Ok(Domain { owner: self.strtab.base(), kind: Kind::Stage1 { asid, cd }, pgtable, nested_in: None, nest_parent: false })
                    }
                    Err(e) => {
                        self.asids.free(asid.0);
                        Err(e)
                    }
                }
            }
        }
    }

    pub(super) fn check_owner(&self, domain: &Domain) -> Result<(), Error> {
        if domain.owner == self.strtab.base() {
            Ok(())
        } else {
            Err(Error::ForeignDomain)
        }
    }

    /// Maps `[iova, iova + size)` to `[pa, pa + size)` with the largest
    /// blocks that fit. Refuses misaligned, empty, overlapping or
    /// out-of-range requests without changing anything.
    pub fn map(&mut self, domain: &mut Domain, iova: Iova, pa: PhysAddr, size: u64, prot: Prot) -> Result<(), Error> {
        self.check_owner(domain)?;
        let f = self.features;
        match domain.pgtable.map(&mut self.dma, &f, iova, pa, size, prot) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(freed) = domain.pgtable.take_rollback() {
                    // The partial mapping was live for a moment: invalidate
                    // before its tables can be reused.
                    match self.invalidate_range(domain, iova, size) {
                        Ok(()) => domain.pgtable.release(&mut self.dma, freed),
                        Err(_) => core::mem::drop(freed), // leak: the SMMU may still walk them
                    }
                }
                Err(e)
            }
        }
    }

    /// Unmaps `[iova, iova + size)`, invalidates the TLBs for it (range TLBI
    /// when `IDR3.RIL`, else per page or the whole ASID/VMID) and waits for
    /// `CMD_SYNC` before returning; tables that became empty are freed after
    /// that. Every page must be mapped and no block may straddle the range.
    pub fn unmap(&mut self, domain: &mut Domain, iova: Iova, size: u64) -> Result<(), Error> {
        self.check_owner(domain)?;
        let freed = domain.pgtable.unmap(&mut self.dma, iova, size)?;
        match self.invalidate_range(domain, iova, size) {
            Ok(()) => {
                domain.pgtable.release(&mut self.dma, freed);
                Ok(())
            }
            Err(e) => {
                // Without a completed invalidation the SMMU may still walk
                // the unlinked tables: leak them rather than reuse them.
                core::mem::drop(freed);
                Err(e)
            }
        }
    }

    /// Software walk of a domain's tables (diagnostic).
    pub fn lookup(&self, domain: &Domain, iova: Iova) -> Option<(PhysAddr, Prot, u64)> {
        domain.pgtable.lookup(&self.dma, iova)
    }

    pub(super) fn push_tlbi_all(&mut self, tag: Tag) -> Result<(), Error> {
        self.push(match tag {
            Tag::S2 { vmid } => Command::TlbiS12Vmall { vmid },
            Tag::S1 { asid, vmid } => Command::TlbiNhAsid { asid, vmid },
        })
    }

    /// Invalidates `[iova, iova + size)` of `domain` under every tag its
    /// entries may carry, and waits. A stage-2 domain that a stage-1 domain
    /// is nested inside also loses every stage-1 entry of its VMID: those
    /// entries combine both stages, and TLBI by IPA does not reach them
    /// (ch. 4, CMD_TLBI_S2_IPA; Linux issues TLBI_NH_ALL the same way).
    fn invalidate_range(&mut self, domain: &Domain, iova: Iova, size: u64) -> Result<(), Error> {
        for tag in domain.tags().into_iter().flatten() {
            self.push_tlbi_range(tag, iova, size)?;
        }
        if let (true, Tag::S2 { vmid }) = (domain.nest_parent, domain.tag()) {
            self.push(Command::TlbiNhAll { vmid })?;
        }
        self.sync()
    }

    fn push_tlbi_range(&mut self, tag: Tag, iova: Iova, size: u64) -> Result<(), Error> {
        let pages = size / GRANULE;
        let make = |addr: u64, range| match tag {
            Tag::S2 { vmid } => Command::TlbiS2Ipa { vmid, ipa: Ipa(addr), leaf: false, range },
            Tag::S1 { asid, vmid } => Command::TlbiNhVa { asid, vmid, addr: Iova(addr), leaf: false, range },
        };
        if self.features.ril {
            for (addr, r) in tlbi_ranges(iova.0, pages) {
                self.push(make(addr, Some(r)))?;
            }
        } else if pages <= MAX_PAGE_TLBIS {
            for p in 0..pages {
                self.push(make(iova.0 + p * GRANULE, None))?;
            }
        } else {
            self.push_tlbi_all(tag)?;
        }
        Ok(())
    }

    /// Frees a domain. Refused (the domain is handed back) while an STE
    /// still points at it. Its TLB entries are invalidated (and the
    /// invalidation synchronised) before its tables and its ASID/VMID are
    /// released.
    #[expect(clippy::result_large_err, reason = "the refused domain comes back by value: the driver has no heap to box it in")]
    pub fn destroy_domain(&mut self, domain: Domain) -> Result<(), (Domain, Error)> {
        if let Err(e) = self.check_owner(&domain) {
            return Err((domain, e));
        }
        match self.strtab.find_map(&self.dma, |sid, w| domain.is_target_of(&SteInfo::decode(w)).then_some(sid)) {
            Ok(Some(sid)) => return Err((domain, Error::DomainInUse(sid))),
            Ok(None) => {}
            Err(e) => return Err((domain, e)),
        }
        let tlbi = domain.tags().into_iter().flatten().try_for_each(|t| self.push_tlbi_all(t)).and_then(|_| self.sync());
        if let Err(e) = tlbi {
            return Err((domain, e));
        }
        let Domain { kind, pgtable, .. } = domain;
        pgtable.destroy(&mut self.dma);
        match kind {
            Kind::Stage1 { asid, cd } => {
                self.dma.free(cd);
                self.asids.free(asid.0);
            }
            Kind::Stage2 { vmid } => self.vmids.free(vmid.0),
        }
        Ok(())
    }
}
