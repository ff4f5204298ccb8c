//! The SMMU driver: bring-up, domains, attach/detach, events, global errors.
//!
//! Bring-up order (IHI 0070 §6.3: SMMU_GBPA, SMMU_CR0..2, SMMU_IRQ_CTRL):
//! GBPA.ABORT=1 → CR0 = 0 (acknowledged) → stream table, command and event
//! queues, CR1, CR2 → CMDQEN|EVENTQEN → CFGI_ALL, TLBI_EL2_ALL (if HYP),
//! TLBI_NSNH_ALL, CMD_SYNC → IRQ_CTRL → SMMUEN. Every CR0, GBPA and IRQ_CTRL
//! change waits, bounded, for its acknowledgement.
//!
//! STE updates follow the structure update rules of IHI 0070 ch. 3 (64-bit
//! single-copy atomic writes, invalidation + CMD_SYNC before relying on a
//! change), so the SMMU only ever observes the old entry, an abort entry, or
//! the new one: a live translating entry is first made
//! abort, invalidated and synchronised (and its old TLB tag invalidated);
//! then the new entry is written word 0 last, invalidated, synchronised.

use embedded_hal::delay::DelayNs;
use tock_registers::LocalRegisterCopy;

use crate::cd::CD_SIZE;
use crate::cmdq::{tlbi_ranges, Command, CommandQueue, Hw};
use crate::domain::{
    write_cd, Domain, DomainConfig, DomainStage, IdAllocator, Kind, StagePreference, Tag,
};
use crate::error::{Error, Unsupported, WaitFor};
use crate::evtq::{Event, EventQueue};
use crate::features::Features;
use crate::gerror::{GerrorReport, GlobalErrors};
use crate::hal::{DmaMemory, Mmio};
use crate::pgtable::{PageTable, Prot, Stage, GRANULE};
use crate::regs::{offset, CR0, CR1, CR2, GBPA, GERROR, IRQ_CTRL};
use crate::ste::{SteConfig, SteInfo, STE_WORDS};
use crate::hal::DmaRegion;
use crate::strtab::{alloc_checked, span_of, Format, StreamTable, L2_STES};
use crate::types::{Iova, Ipa, PhysAddr, StreamId};
use crate::wait::poll;

use crate::evtq::DrainReport;

/// Default bound of one hardware wait, in microseconds.
pub const DEFAULT_TIMEOUT_US: u32 = 100_000;

/// Per-page TLBIs are used up to this many pages when range invalidation
/// is not implemented; beyond, the whole ASID/VMID is invalidated.
const MAX_PAGE_TLBIS: u64 = 32;

/// Bring-up parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Bound of each hardware wait in microseconds.
    pub timeout_us: u32,
    /// Upper bound on log2(command queue entries); the SMMU's `IDR1.CMDQS`
    /// also bounds it.
    pub cmdq_log2_max: u8,
    /// Upper bound on log2(event queue entries) (`IDR1.EVENTQS` also
    /// bounds it). QEMU writes 16 records for one faulting 64-byte DMA.
    pub evtq_log2_max: u8,
    /// Upper bound on the StreamID bits the stream table covers.
    pub max_sid_bits: u8,
    /// The SMMU's accesses are cache coherent (device tree `dma-coherent`);
    /// effective only when `IDR0.COHACC` is also set.
    pub dma_coherent: bool,
    /// Enable the wired event-queue and global-error interrupts.
    pub wired_irqs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout_us: DEFAULT_TIMEOUT_US,
            cmdq_log2_max: 8,
            evtq_log2_max: 10,
            max_sid_bits: 16,
            dma_coherent: false,
            wired_irqs: true,
        }
    }
}

/// Counters of the work done on the command queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Commands issued, `CMD_SYNC` included.
    pub commands: u64,
    /// `CMD_SYNC`s waited for.
    pub syncs: u64,
    /// Command errors recovered.
    pub command_errors: u64,
    /// STEs written (abort or translating).
    pub ste_writes: u64,
}

impl core::ops::Sub for Stats {
    type Output = Stats;
    fn sub(self, o: Stats) -> Stats {
        Stats {
            commands: self.commands.wrapping_sub(o.commands),
            syncs: self.syncs.wrapping_sub(o.syncs),
            command_errors: self.command_errors.wrapping_sub(o.command_errors),
            ste_writes: self.ste_writes.wrapping_sub(o.ste_writes),
        }
    }
}

fn gbpa_bit(f: tock_registers::fields::Field<u32, GBPA::Register>) -> u32 {
    f.mask << f.shift
}

/// Sets `SMMU_GBPA.ABORT` with the UPDATE handshake, so that every
/// transaction aborts whenever SMMUEN is 0 (§6.3). Call it for every SMMU
/// before anything else; [`Smmu::new`] calls it again first. Uses
/// [`DEFAULT_TIMEOUT_US`].
pub fn gbpa_abort(mmio: &impl Mmio, delay: &mut impl DelayNs) -> Result<(), Error> {
    gbpa_abort_with_timeout(mmio, delay, DEFAULT_TIMEOUT_US)
}

/// [`gbpa_abort`] with an explicit bound in microseconds for each wait.
pub fn gbpa_abort_with_timeout(
    mmio: &impl Mmio,
    delay: &mut impl DelayNs,
    timeout_us: u32,
) -> Result<(), Error> {
    let update = gbpa_bit(GBPA::UPDATE);
    let abort = gbpa_bit(GBPA::ABORT);
    // A previous update may still be in flight: writes are ignored until it
    // completes.
    if !poll(delay, timeout_us, || {
        mmio.read32(offset::GBPA) & update == 0
    }) {
        return Err(Error::Timeout(WaitFor::GbpaUpdate));
    }
    let value = (mmio.read32(offset::GBPA) & !update) | abort;
    mmio.write32(offset::GBPA, value | update);
    if !poll(delay, timeout_us, || {
        mmio.read32(offset::GBPA) & update == 0
    }) {
        return Err(Error::Timeout(WaitFor::GbpaUpdate));
    }
    if mmio.read32(offset::GBPA) & abort == 0 {
        // The update "completed" without taking effect.
        return Err(Error::Timeout(WaitFor::GbpaUpdate));
    }
    Ok(())
}

/// `true` when the SMMU blocks every transaction whatever its tables hold:
/// disabled (`SMMU_CR0ACK.SMMUEN = 0`) with GBPA aborting (`ABORT = 1`, no
/// update pending; §6.3). A caller checks this after a failed bring-up to
/// know whether the SMMU is still safe to leave as it is.
pub fn is_blocking(mmio: &impl Mmio) -> bool {
    let gbpa = mmio.read32(offset::GBPA);
    let smmuen = cr0_bits(&[CR0::SMMUEN]);
    mmio.read32(offset::CR0ACK) & smmuen == 0
        && gbpa & gbpa_bit(GBPA::ABORT) != 0
        && gbpa & gbpa_bit(GBPA::UPDATE) == 0
}

/// Reads the ID registers and checks this driver can serve the SMMU.
pub fn probe(mmio: &impl Mmio) -> Result<Features, Error> {
    let f = Features::read(mmio);
    f.check_usable()?;
    Ok(f)
}

/// One SMMUv3 instance. Independent of any other instance: no global state.
///
/// Dropping it leaves the SMMU running with its tables (their memory is
/// deliberately not returned).
pub struct Smmu<M, D, T> {
    mmio: M,
    dma: D,
    delay: T,
    features: Features,
    config: Config,
    coherent: bool,
    strtab: StreamTable,
    cmdq: CommandQueue,
    evtq: EventQueue,
    asids: IdAllocator,
    vmids: IdAllocator,
    ste_writes: u64,
}

impl Smmu<(), (), ()> {
    /// Same as [`probe`]: `Smmu::probe(&mmio)`.
    pub fn probe(mmio: &impl Mmio) -> Result<Features, Error> {
        probe(mmio)
    }
}

/// A small set of TLB tags to invalidate after a batch of STE changes.
struct TagSet {
    tags: [Option<Tag>; 8],
    /// More distinct tags than fit: invalidate everything instead.
    overflowed: bool,
}

impl TagSet {
    fn new() -> Self {
        TagSet {
            tags: [None; 8],
            overflowed: false,
        }
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
        SidBatch {
            sids: [StreamId(0); L2_STES],
            len: 0,
        }
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
    LiveExcept(&'a crate::ste::Ste),
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
    /// Brings the SMMU up (see the module documentation for the order) with
    /// every stream aborting. On any error after the first step the SMMU is
    /// left disabled (SMMUEN = 0, so firmware's tables are out of use) with
    /// GBPA aborting, and the DMA memory handed out so far is leaked on
    /// purpose. When GBPA itself cannot be made to abort, SMMUEN is left as
    /// it was: clearing it could hand every stream to a bypassing GBPA.
    pub fn new(mmio: M, mut dma: D, mut delay: T, config: Config) -> Result<Self, Error> {
        // 1. Block DMA for whenever SMMUEN is 0, before touching anything.
        gbpa_abort_with_timeout(&mmio, &mut delay, config.timeout_us)?;

        // 2. Disable, before anything that can fail. GBPA means nothing
        //    while SMMUEN = 1: an SMMU firmware left enabled keeps using
        //    firmware's (possibly bypassing) stream table until this.
        write_cr0(&mmio, &mut delay, config.timeout_us, 0)?;

        let features = probe(&mmio)?;
        let coherent = config.dma_coherent && features.coherent_access;

        write_irq_ctrl(&mmio, &mut delay, config.timeout_us, 0)?;
        // Acknowledge global errors left from before.
        let g = mmio.read32(offset::GERROR);
        mmio.write32(offset::GERRORN, g);

        // 3. Stream table (all abort) and queues. Failures here leave the
        //    SMMU disabled (CR0 = 0 acknowledged above).
        let strtab = StreamTable::new(&mut dma, &features, config.max_sid_bits, coherent)?;
        let cmdq_log2 = features.cmdq_log2_max.min(config.cmdq_log2_max).max(1);
        let evtq_log2 = features.evtq_log2_max.min(config.evtq_log2_max).max(1);
        let cmdq = CommandQueue::new(&mut dma, &features, cmdq_log2, coherent)?;
        let evtq = EventQueue::new(&mut dma, &features, evtq_log2, coherent)?;
        mmio.write64(offset::STRTAB_BASE, strtab.base_register());
        mmio.write32(offset::STRTAB_BASE_CFG, strtab.base_cfg_register());
        mmio.write64(offset::CMDQ_BASE, cmdq.base_register());
        mmio.write32(offset::CMDQ_PROD, 0);
        mmio.write32(offset::CMDQ_CONS, 0);
        mmio.write64(offset::EVENTQ_BASE, evtq.base_register());
        mmio.write32(offset::EVENTQ_PROD, 0);
        mmio.write32(offset::EVENTQ_CONS, 0);
        mmio.write32(offset::CR1, cr1_value(coherent));
        mmio.write32(offset::CR2, cr2_value());

        let mut smmu = Smmu {
            mmio,
            dma,
            delay,
            features,
            config,
            coherent,
            strtab,
            cmdq,
            evtq,
            asids: IdAllocator::new(features.asid_bits),
            vmids: IdAllocator::new(features.vmid_bits),
            ste_writes: 0,
        };
        match smmu.enable() {
            Ok(()) => Ok(smmu),
            Err(e) => {
                // Best effort back to "disabled, GBPA aborts"; no wait, the
                // hardware already failed us once.
                smmu.mmio.write32(offset::CR0, 0);
                Err(e)
            }
        }
    }

    /// Step 4 of bring-up: queues on, caches clean, interrupts, translation.
    fn enable(&mut self) -> Result<(), Error> {
        let queues = cr0_bits(&[CR0::CMDQEN, CR0::EVENTQEN]);
        self.set_cr0(queues)?;
        self.push(Command::CfgiAll)?;
        if self.features.hyp {
            // TLBI_EL2_* is illegal without IDR0.HYP (ch. 4).
            self.push(Command::TlbiEl2All)?;
        }
        self.push(Command::TlbiNsnhAll)?;
        self.sync()?;
        if self.config.wired_irqs {
            if self.features.msi {
                // MSI address 0 = use the wired interrupt (§6.3).
                self.mmio.write64(offset::GERROR_IRQ_CFG0, 0);
                self.mmio.write64(offset::EVENTQ_IRQ_CFG0, 0);
            }
            let irqs = irq_bits(&[IRQ_CTRL::GERROR_IRQEN, IRQ_CTRL::EVENTQ_IRQEN]);
            write_irq_ctrl(&self.mmio, &mut self.delay, self.config.timeout_us, irqs)?;
        }
        // Every STE aborts (linear: written at allocation; two-level: every
        // level-1 descriptor invalid), so enabling lets nothing through.
        self.set_cr0(queues | cr0_bits(&[CR0::SMMUEN]))
    }

    /// log2 of the command and event queue sizes in use.
    pub fn queue_log2(&self) -> (u8, u8) {
        (self.cmdq.ring().log2(), self.evtq.ring().log2())
    }

    /// The SMMU's features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Whether table and queue accesses are treated as coherent.
    pub fn coherent(&self) -> bool {
        self.coherent
    }

    /// The stream table (layout, coverage).
    pub fn stream_table(&self) -> &StreamTable {
        &self.strtab
    }

    /// The STE of `sid` as it is in memory (`None` when its level-2 table
    /// was never allocated). Diagnostic.
    pub fn read_ste(&self, sid: StreamId) -> Result<Option<[u64; STE_WORDS]>, Error> {
        self.strtab.read(&self.dma, sid)
    }

    /// Counters of commands and syncs issued so far.
    pub fn stats(&self) -> Stats {
        Stats {
            commands: self.cmdq.counters.commands,
            syncs: self.cmdq.counters.syncs,
            command_errors: self.cmdq.counters.errors,
            ste_writes: self.ste_writes,
        }
    }

    /// The DMA memory provider.
    pub fn dma(&self) -> &D {
        &self.dma
    }

    fn hw(&mut self) -> (Hw<'_, M, D, T>, &mut CommandQueue) {
        (
            Hw {
                mmio: &self.mmio,
                dma: &mut self.dma,
                delay: &mut self.delay,
                timeout_us: self.config.timeout_us,
            },
            &mut self.cmdq,
        )
    }

    fn push(&mut self, cmd: Command) -> Result<(), Error> {
        let (mut hw, q) = self.hw();
        q.push(&mut hw, cmd)
    }

    fn sync(&mut self) -> Result<(), Error> {
        let (mut hw, q) = self.hw();
        q.sync(&mut hw)
    }

    fn set_cr0(&mut self, value: u32) -> Result<(), Error> {
        write_cr0(&self.mmio, &mut self.delay, self.config.timeout_us, value)
    }

    /// Issues a raw 16-byte command followed by CMD_SYNC and waits.
    ///
    /// **Diagnostic only** (QEMU scenarios use it to inject an illegal
    /// opcode and show recovery): the words are not checked. A command error
    /// comes back as [`Error::Command`] after the queue was repaired.
    pub fn diagnostic_submit_raw(&mut self, words: [u64; 2]) -> Result<(), Error> {
        let (mut hw, q) = self.hw();
        q.push_raw(&mut hw, words)?;
        q.sync(&mut hw)
    }

    // ----- domains -----

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
                let vmid = crate::types::Vmid(
                    self.vmids
                        .take_or_alloc(cfg.tag)
                        .ok_or(Error::IdsExhausted)?,
                );
                let pgtable = match PageTable::new(
                    &mut self.dma,
                    &f,
                    Stage::Stage2,
                    input_bits,
                    self.coherent,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        self.vmids.free(vmid.0);
                        return Err(e);
                    }
                };
                Ok(Domain {
                    owner: self.strtab.base(),
                    kind: Kind::Stage2 { vmid },
                    pgtable,
                    nested_in: None,
                    nest_parent: false,
                })
            }
            DomainStage::Stage1 => {
                let asid = crate::types::Asid(
                    self.asids
                        .take_or_alloc(cfg.tag)
                        .ok_or(Error::IdsExhausted)?,
                );
                let made = (|| {
                    let pgtable = PageTable::new(
                        &mut self.dma,
                        &f,
                        Stage::Stage1,
                        input_bits,
                        self.coherent,
                    )?;
                    let cd = match alloc_checked(&mut self.dma, CD_SIZE, CD_SIZE, &f) {
                        Ok(cd) => cd,
                        Err(e) => {
                            pgtable.destroy(&mut self.dma);
                            return Err(e);
                        }
                    };
                    if let Err(e) = write_cd(&mut self.dma, &cd, asid, &pgtable, &f, self.coherent)
                    {
                        pgtable.destroy(&mut self.dma);
                        self.dma.free(cd);
                        return Err(e);
                    }
                    Ok((pgtable, cd))
                })();
                match made {
                    Ok((pgtable, cd)) => Ok(Domain {
                        owner: self.strtab.base(),
                        kind: Kind::Stage1 { asid, cd },
                        pgtable,
                        nested_in: None,
                        nest_parent: false,
                    }),
                    Err(e) => {
                        self.asids.free(asid.0);
                        Err(e)
                    }
                }
            }
        }
    }

    fn check_owner(&self, domain: &Domain) -> Result<(), Error> {
        if domain.owner == self.strtab.base() {
            Ok(())
        } else {
            Err(Error::ForeignDomain)
        }
    }

    /// Maps `[iova, iova + size)` to `[pa, pa + size)` with the largest
    /// blocks that fit. Refuses misaligned, empty, overlapping or
    /// out-of-range requests without changing anything.
    pub fn map(
        &mut self,
        domain: &mut Domain,
        iova: Iova,
        pa: PhysAddr,
        size: u64,
        prot: Prot,
    ) -> Result<(), Error> {
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

    fn push_tlbi_all(&mut self, tag: Tag) -> Result<(), Error> {
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
            Tag::S2 { vmid } => Command::TlbiS2Ipa {
                vmid,
                ipa: Ipa(addr),
                leaf: false,
                range,
            },
            Tag::S1 { asid, vmid } => Command::TlbiNhVa {
                asid,
                vmid,
                addr: Iova(addr),
                leaf: false,
                range,
            },
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
    pub fn destroy_domain(&mut self, domain: Domain) -> Result<(), (Domain, Error)> {
        if let Err(e) = self.check_owner(&domain) {
            return Err((domain, e));
        }
        match self.strtab.find_map(&self.dma, |sid, w| {
            domain.is_target_of(&SteInfo::decode(w)).then_some(sid)
        }) {
            Ok(Some(sid)) => return Err((domain, Error::DomainInUse(sid))),
            Ok(None) => {}
            Err(e) => return Err((domain, e)),
        }
        let tlbi = domain
            .tags()
            .into_iter()
            .flatten()
            .try_for_each(|t| self.push_tlbi_all(t))
            .and_then(|_| self.sync());
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

    // ----- attach / detach -----

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
                let asid = self
                    .dma
                    .region(info.cd_table, CD_SIZE)
                    .and_then(|r| self.dma.read64(&r, 0).ok())
                    .map(crate::cd::Cd::asid_of);
                Some(match asid {
                    Some(asid) => Tag::S1 {
                        asid,
                        vmid: info.vmid,
                    },
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
            return self.push(Command::CfgiSteRange {
                sid: sids[0],
                range,
            });
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
        let ste = Domain::nested_ste(s1, s2, &self.features, self.coherent)
            .ok_or(Error::Unsupported(Unsupported::StageNotImplemented))??;
        // Record the tagging before any entry can be cached under it.
        s1.set_nested_in(vmid);
        s2.set_nest_parent();
        self.attach_ste(&ste, sids)
    }

    fn attach_ste(&mut self, ste: &crate::ste::Ste, sids: &[StreamId]) -> Result<(), Error> {
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
    fn install_by_swap(&mut self, ste: &crate::ste::Ste, sids: &[StreamId]) -> Result<(), Error> {
        let f = self.features;
        let mut pending: [Option<(u32, Option<DmaRegion>)>; SWAP_BATCH] = Default::default();
        let mut n = 0usize;
        for (i, first) in sids.iter().enumerate() {
            let span = span_of(*first);
            if sids[..i].iter().any(|s| span_of(*s) == span) {
                continue;
            }
            let in_span = sids.iter().filter(|s| span_of(**s) == span);
            let unchanged = in_span.clone().all(|s| {
                matches!(self.strtab.read(&self.dma, *s), Ok(Some(w)) if w == *ste.words())
            });
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
    fn flush_swaps(
        &mut self,
        sids: &[StreamId],
        pending: &mut [Option<(u32, Option<DmaRegion>)>; SWAP_BATCH],
    ) -> Result<(), Error> {
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
    fn install_in_place(&mut self, ste: &crate::ste::Ste, sids: &[StreamId]) -> Result<(), Error> {
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

    // ----- events and errors -----

    /// Fails closed after an error the SMMU cannot be trusted past
    /// (GERROR.SFM_ERR, EVENTQ_ABT_ERR): GBPA.ABORT again, then SMMUEN and
    /// the queues off, so every transaction of every stream aborts. The
    /// instance must not be used for translation afterwards.
    pub fn fail_closed(&mut self) -> Result<(), Error> {
        gbpa_abort_with_timeout(&self.mmio, &mut self.delay, self.config.timeout_us)?;
        write_cr0(&self.mmio, &mut self.delay, self.config.timeout_us, 0)
    }

    /// Hands up to `limit` event records to `f` (from an interrupt handler
    /// or by polling), returns the slots to the SMMU and reports (and
    /// acknowledges) an overflow: `lost_events` means records were dropped.
    pub fn drain_events(
        &mut self,
        limit: u32,
        f: impl FnMut(&Event),
    ) -> Result<DrainReport, Error> {
        let mut hw = Hw {
            mmio: &self.mmio,
            dma: &mut self.dma,
            delay: &mut self.delay,
            timeout_us: self.config.timeout_us,
        };
        self.evtq.drain(&mut hw, limit, f)
    }

    /// Reads SMMU_GERROR, repairs a command-queue error (the faulty command
    /// becomes CMD_SYNC and the queue resumes), acknowledges every active
    /// error through SMMU_GERRORN, and reports what was found. SFM_ERR means
    /// the SMMU stopped translating and needs a reset.
    pub fn handle_gerror(&mut self) -> Result<GerrorReport, Error> {
        let g = self.mmio.read32(offset::GERROR);
        let gn = self.mmio.read32(offset::GERRORN);
        let active = GlobalErrors::active(g, gn);
        let mut report = GerrorReport {
            errors: active,
            command: None,
        };
        if active.cmdq_err() {
            let (mut hw, q) = self.hw();
            q.recover_now(&mut hw)?;
            report.command = q.take_error();
        }
        let cmdq_bit = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        let others = active.0 & !cmdq_bit;
        if others != 0 {
            let gn = self.mmio.read32(offset::GERRORN);
            self.mmio.write32(offset::GERRORN, gn ^ others);
        }
        Ok(report)
    }
}

fn cr0_bits(fields: &[tock_registers::fields::Field<u32, CR0::Register>]) -> u32 {
    fields.iter().fold(0, |acc, f| acc | (f.mask << f.shift))
}

fn irq_bits(fields: &[tock_registers::fields::Field<u32, IRQ_CTRL::Register>]) -> u32 {
    fields.iter().fold(0, |acc, f| acc | (f.mask << f.shift))
}

/// Writes SMMU_CR0 and waits for SMMU_CR0ACK to match (§6.3).
fn write_cr0<M: Mmio>(
    mmio: &M,
    delay: &mut impl DelayNs,
    timeout_us: u32,
    value: u32,
) -> Result<(), Error> {
    mmio.write32(offset::CR0, value);
    if poll(delay, timeout_us, || mmio.read32(offset::CR0ACK) == value) {
        Ok(())
    } else {
        Err(Error::Timeout(WaitFor::Cr0Ack))
    }
}

/// Writes SMMU_IRQ_CTRL and waits for SMMU_IRQ_CTRLACK to match (§6.3).
fn write_irq_ctrl<M: Mmio>(
    mmio: &M,
    delay: &mut impl DelayNs,
    timeout_us: u32,
    value: u32,
) -> Result<(), Error> {
    mmio.write32(offset::IRQ_CTRL, value);
    if poll(delay, timeout_us, || {
        mmio.read32(offset::IRQ_CTRLACK) == value
    }) {
        Ok(())
    } else {
        Err(Error::Timeout(WaitFor::IrqCtrlAck))
    }
}

/// SMMU_CR1: tables and queues write-back inner-shareable on a coherent
/// SMMU, non-cacheable otherwise (§6.3).
fn cr1_value(coherent: bool) -> u32 {
    let mut r = LocalRegisterCopy::<u32, CR1::Register>::new(0);
    if coherent {
        r.write(
            CR1::QUEUE_IC::WriteBack
                + CR1::QUEUE_OC::WriteBack
                + CR1::QUEUE_SH::Inner
                + CR1::TABLE_IC::WriteBack
                + CR1::TABLE_OC::WriteBack
                + CR1::TABLE_SH::Inner,
        );
    } else {
        r.write(
            CR1::QUEUE_IC::NonCacheable
                + CR1::QUEUE_OC::NonCacheable
                + CR1::QUEUE_SH::Outer
                + CR1::TABLE_IC::NonCacheable
                + CR1::TABLE_OC::NonCacheable
                + CR1::TABLE_SH::Outer,
        );
    }
    r.get()
}

/// SMMU_CR2: record invalid StreamIDs, private TLB maintenance (ignore the
/// CPUs' broadcast TLBIs), E2H = 0 (§6.3).
fn cr2_value() -> u32 {
    let mut r = LocalRegisterCopy::<u32, CR2::Register>::new(0);
    r.write(CR2::RECINVSID::SET + CR2::PTM::SET + CR2::E2H::CLEAR);
    r.get()
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
        assert_eq!(
            aligned_block(&s(&[16, 17, 18, 19, 20, 21, 22, 23])),
            Some(2)
        );
        assert_eq!(aligned_block(&s(&[7])[..1]), None);
        assert_eq!(aligned_block(&s(&[0, 1, 2])[..3]), None);
    }

    #[test]
    fn id_allocator() {
        let mut ids = IdAllocator::new(8);
        let first: [u16; 3] = [
            ids.alloc().unwrap(),
            ids.alloc().unwrap(),
            ids.alloc().unwrap(),
        ];
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
