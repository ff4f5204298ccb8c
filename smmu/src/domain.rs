//! Translation domains: one address space (a tree of translation tables plus
//! its TLB tag) that streams are attached to.
//!
//! The stage follows the SMMU's features: stage 2 with a VMID when stage 2
//! is implemented, otherwise stage 1 with a per-domain ASID and a CD table
//! holding one CD (IHI 0070 §3.3, §5.4).

use crate::cd::{Cd, Stage1Cd, CD_SIZE};
use crate::error::Error;
use crate::features::Features;
use crate::hal::{DmaMemory, DmaRegion};
use crate::pgtable::{sl0_for_level, PageTable};
use crate::ste::{Stage1Fields, Stage2Fields, Ste};
use crate::types::{Asid, PhysAddr, Vmid};

/// Which stage a domain translates with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DomainStage {
    /// Stage 1: CD + ASID.
    Stage1,
    /// Stage 2: VMID.
    Stage2,
}

/// Stage requested for a new domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StagePreference {
    /// Stage 2 when implemented, else stage 1.
    #[default]
    Auto,
    /// Stage 1 (error if not implemented).
    Stage1,
    /// Stage 2 (error if not implemented).
    Stage2,
}

/// Parameters of a new domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DomainConfig {
    /// Stage.
    pub stage: StagePreference,
    /// Input address size in bits (25..=48; at most the output size for
    /// stage 2). `None`: `min(48, OAS)`.
    pub input_bits: Option<u8>,
    /// The VMID (stage 2) or ASID (stage 1) to tag it with, e.g. the VMID
    /// the owner's CPUs use; `None`: the lowest free one.
    pub tag: Option<u16>,
}

/// The TLB tag of a domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tag {
    /// Stage-1 entries of `asid` under `vmid`.
    S1 { asid: Asid, vmid: Vmid },
    /// Stage-2 (and stage-1) entries of `vmid`.
    S2 { vmid: Vmid },
}

#[derive(Debug)]
pub(crate) enum Kind {
    Stage1 { asid: Asid, cd: DmaRegion },
    Stage2 { vmid: Vmid },
}

/// A translation domain. Created by [`Smmu::create_domain`](crate::Smmu::create_domain),
/// mapped with [`Smmu::map`](crate::Smmu::map), freed with
/// [`Smmu::destroy_domain`](crate::Smmu::destroy_domain) (dropping it leaks
/// its tables, which is safe: the SMMU may still walk them).
#[derive(Debug)]
pub struct Domain {
    /// Stream table base of the SMMU that made it (instance identity).
    pub(crate) owner: PhysAddr,
    pub(crate) kind: Kind,
    pub(crate) pgtable: PageTable,
    /// A stage-1 domain nested inside a stage-2 domain: its TLB entries are
    /// (also) tagged with that domain's VMID and combine both stages.
    pub(crate) nested_in: Option<Vmid>,
    /// A stage-2 domain some stage-1 domain is nested inside: changing it
    /// must also drop the combined stage-1 entries of its VMID.
    pub(crate) nest_parent: bool,
}

/// The VMID written into stage-1 STEs (`S2VMID`) when the SMMU implements
/// stage 2; stage-2 domains never use it.
pub(crate) const STAGE1_VMID: Vmid = Vmid(0);

impl Domain {
    /// Stage the domain translates with.
    pub fn stage(&self) -> DomainStage {
        match self.kind {
            Kind::Stage1 { .. } => DomainStage::Stage1,
            Kind::Stage2 { .. } => DomainStage::Stage2,
        }
    }

    /// ASID of a stage-1 domain.
    pub fn asid(&self) -> Option<Asid> {
        match self.kind {
            Kind::Stage1 { asid, .. } => Some(asid),
            Kind::Stage2 { .. } => None,
        }
    }

    /// VMID of a stage-2 domain.
    pub fn vmid(&self) -> Option<Vmid> {
        match self.kind {
            Kind::Stage2 { vmid } => Some(vmid),
            Kind::Stage1 { .. } => None,
        }
    }

    /// Input address size in bits.
    pub fn input_bits(&self) -> u8 {
        self.pgtable.input_bits()
    }

    /// Physical address of the top-level translation table.
    pub fn root(&self) -> PhysAddr {
        self.pgtable.root()
    }

    /// Physical address of the CD table (stage 1).
    pub fn cd_table(&self) -> Option<PhysAddr> {
        match &self.kind {
            Kind::Stage1 { cd, .. } => Some(cd.phys()),
            Kind::Stage2 { .. } => None,
        }
    }

    /// The VMID a nested stage-1 domain's entries are tagged with.
    pub fn nested_vmid(&self) -> Option<Vmid> {
        self.nested_in
    }

    pub(crate) fn set_nested_in(&mut self, vmid: Vmid) {
        self.nested_in = Some(vmid);
    }

    pub(crate) fn set_nest_parent(&mut self) {
        self.nest_parent = true;
    }

    /// Every TLB tag the domain's entries may carry: its own, and for a
    /// nested stage-1 domain the same ASID under the stage-2 VMID.
    pub(crate) fn tags(&self) -> [Option<Tag>; 2] {
        let nested = match (self.kind_tag(), self.nested_in) {
            (Tag::S1 { asid, .. }, Some(vmid)) => Some(Tag::S1 { asid, vmid }),
            _ => None,
        };
        [Some(self.kind_tag()), nested]
    }

    pub(crate) fn tag(&self) -> Tag {
        self.kind_tag()
    }

    fn kind_tag(&self) -> Tag {
        match self.kind {
            Kind::Stage1 { asid, .. } => Tag::S1 { asid, vmid: STAGE1_VMID },
            Kind::Stage2 { vmid } => Tag::S2 { vmid },
        }
    }

    /// The stage-2 STE fields of a stage-2 domain.
    fn stage2_fields(&self, vmid: Vmid, features: &Features, coherent: bool) -> Stage2Fields {
        Stage2Fields {
            vmid,
            ttb: self.pgtable.root(),
            t0sz: 64 - self.pgtable.input_bits(),
            sl0: sl0_for_level(self.pgtable.start_level()),
            ps: features.effective_oas_field(),
            coherent,
        }
    }

    /// The STE that makes a stream translate through this domain.
    pub(crate) fn ste(&self, features: &Features, coherent: bool) -> Result<Ste, Error> {
        match &self.kind {
            Kind::Stage2 { vmid } => Ste::stage2(&self.stage2_fields(*vmid, features, coherent)),
            Kind::Stage1 { cd, .. } => Ste::stage1(&Stage1Fields { cd_table: cd.phys(), vmid: STAGE1_VMID, coherent }),
        }
    }

    /// The STE that makes a stream translate through stage-1 domain `s1`
    /// nested inside stage-2 domain `s2` (§5.2, `Config = 0b111`): the CD
    /// pointer and `s1`'s table addresses are IPAs that `s2` translates, and
    /// `s1`'s TLB entries are tagged with `s2`'s VMID. `None` when `s1` is
    /// not a stage-1 domain or `s2` not a stage-2 one.
    pub(crate) fn nested_ste(s1: &Domain, s2: &Domain, features: &Features, coherent: bool) -> Option<Result<Ste, Error>> {
        let (Kind::Stage1 { cd, .. }, Kind::Stage2 { vmid }) = (&s1.kind, &s2.kind) else {
            return None;
        };
        let s1f = Stage1Fields { cd_table: cd.phys(), vmid: *vmid, coherent };
        Some(Ste::nested(&s1f, &s2.stage2_fields(*vmid, features, coherent)))
    }

    /// `true` when an STE with these fields points at this domain.
    pub(crate) fn is_target_of(&self, info: &crate::ste::SteInfo) -> bool {
        use crate::ste::SteConfig;
        match (&self.kind, info.config) {
            (Kind::Stage2 { .. }, SteConfig::Stage2 | SteConfig::Nested) => info.s2ttb == self.pgtable.root(),
            (Kind::Stage1 { cd, .. }, SteConfig::Stage1 | SteConfig::Nested) => info.cd_table == cd.phys(),
            _ => false,
        }
    }
}

/// Writes the single CD of a stage-1 domain: words 1..7, barrier, word 0
/// (which holds `V`) last, so the SMMU never sees a half-written valid CD.
pub(crate) fn write_cd<D: DmaMemory>(
    dma: &mut D,
    region: &DmaRegion,
    asid: Asid,
    pgtable: &PageTable,
    features: &Features,
    coherent: bool,
) -> Result<(), Error> {
    let cd = Cd::stage1(&Stage1Cd { asid, ttb0: pgtable.root(), t0sz: 64 - pgtable.input_bits(), ips: features.effective_oas_field(), coherent })?;
    for (i, w) in cd.words().iter().enumerate().skip(1) {
        dma.write64(region, i * 8, *w)?;
    }
    dma.publish(region, 8, CD_SIZE - 8, coherent);
    dma.write64(region, 0, cd.words()[0])?;
    dma.publish(region, 0, 8, coherent);
    Ok(())
}

/// A fixed-size allocator of ASIDs or VMIDs (up to 4096, id 0 reserved).
#[derive(Debug)]
pub(crate) struct IdAllocator {
    bits: [u64; 64],
    limit: u32,
}

impl IdAllocator {
    /// Ids `1..min(2^width, 4096)`.
    pub fn new(width: u8) -> Self {
        let limit = (1u32 << width.min(12)).min(4096);
        IdAllocator { bits: [0; 64], limit }
    }

    pub fn alloc(&mut self) -> Option<u16> {
        (1..self.limit)
            .find(|&id| {
                let (w, b) = ((id / 64) as usize, id % 64);
                if self.bits[w] & (1 << b) == 0 {
                    self.bits[w] |= 1 << b;
                    true
                } else {
                    false
                }
            })
            .map(|id| id as u16)
    }

    /// Takes exactly `id`, or returns `None` when it is out of range or in use.
    pub fn take(&mut self, id: u16) -> Option<u16> {
        let i = u32::from(id);
        let (w, b) = ((i / 64) as usize, i % 64);
        if i == 0 || i >= self.limit || self.bits[w] & (1 << b) != 0 {
            return None;
        }
        self.bits[w] |= 1 << b;
        Some(id)
    }

    /// Takes `id` when given, else the lowest free one.
    pub fn take_or_alloc(&mut self, id: Option<u16>) -> Option<u16> {
        match id {
            Some(id) => self.take(id),
            None => self.alloc(),
        }
    }

    pub fn free(&mut self, id: u16) {
        let id = u32::from(id);
        if id < self.limit {
            self.bits[(id / 64) as usize] &= !(1 << (id % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_allocator() {
        let mut ids = IdAllocator::new(8);
        let first: [u16; 3] = [ids.alloc().unwrap(), ids.alloc().unwrap(), ids.alloc().unwrap()];
        assert_eq!(first, [1, 2, 3], "0 is reserved");
        ids.free(2);
        assert_eq!(ids.alloc(), Some(2));
        for _ in 4..256 {
            assert!(ids.alloc().is_some());
        }
        assert_eq!(ids.alloc(), None, "8-bit ids exhausted");
        let mut wide = IdAllocator::new(16);
        assert_eq!((1..4096).filter(|_| wide.alloc().is_some()).count(), 4095);
        assert_eq!(wide.alloc(), None);
    }
}
