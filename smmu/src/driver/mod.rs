//! The SMMU driver: bring-up (here), domains and their translation tables
//! ([`domains`]), stream table entries — attach and detach ([`stes`]) —
//! and events and global errors ([`events`]).
//!
//! Bring-up order (IHI 0070 §6.3: SMMU_GBPA, SMMU_CR0..2, SMMU_IRQ_CTRL):
//! GBPA.ABORT=1 → CR0 = 0 (acknowledged) → ID registers → stream table,
//! command and event queues, CR1, CR2 → CMDQEN|EVENTQEN → CFGI_ALL,
//! TLBI_EL2_ALL (if HYP), TLBI_NSNH_ALL, CMD_SYNC → IRQ_CTRL → SMMUEN.
//! Every CR0, GBPA and IRQ_CTRL change waits, bounded, for its
//! acknowledgement.

mod domains;
mod events;
mod stes;

use embedded_hal::delay::DelayNs;
use tock_registers::LocalRegisterCopy;

use crate::cmdq::{Command, CommandQueue, Io};
use crate::domain::IdAllocator;
use crate::error::{Error, WaitFor};
use crate::evtq::EventQueue;
use crate::features::Features;
use crate::hal::{DmaMemory, Mmio};
use crate::regs::{offset, CR0, CR1, CR2, GBPA, IRQ_CTRL};
use crate::ste::STE_WORDS;
use crate::strtab::StreamTable;
use crate::types::StreamId;
use crate::wait::poll;

/// Default bound of one hardware wait, in microseconds.
pub const DEFAULT_TIMEOUT_US: u32 = 100_000;

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
        Config { timeout_us: DEFAULT_TIMEOUT_US, cmdq_log2_max: 8, evtq_log2_max: 10, max_sid_bits: 16, dma_coherent: false, wired_irqs: true }
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
pub fn gbpa_abort_with_timeout(mmio: &impl Mmio, delay: &mut impl DelayNs, timeout_us: u32) -> Result<(), Error> {
    let update = gbpa_bit(GBPA::UPDATE);
    let abort = gbpa_bit(GBPA::ABORT);
    // A previous update may still be in flight: writes are ignored until it
    // completes.
    if !poll(delay, timeout_us, || mmio.read32(offset::GBPA) & update == 0) {
        return Err(Error::Timeout(WaitFor::GbpaUpdate));
    }
    let value = (mmio.read32(offset::GBPA) & !update) | abort;
    mmio.write32(offset::GBPA, value | update);
    if !poll(delay, timeout_us, || mmio.read32(offset::GBPA) & update == 0) {
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
    mmio.read32(offset::CR0ACK) & smmuen == 0 && gbpa & gbpa_bit(GBPA::ABORT) != 0 && gbpa & gbpa_bit(GBPA::UPDATE) == 0
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
        Stats { commands: self.cmdq.counters.commands, syncs: self.cmdq.counters.syncs, command_errors: self.cmdq.counters.errors, ste_writes: self.ste_writes }
    }

    /// The DMA memory provider.
    pub fn dma(&self) -> &D {
        &self.dma
    }

    fn hw(&mut self) -> (Io<'_, M, D, T>, &mut CommandQueue) {
        (Io { mmio: &self.mmio, dma: &mut self.dma, delay: &mut self.delay, timeout_us: self.config.timeout_us }, &mut self.cmdq)
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
    /// comes back as [`Error::Command`] after the queue was repaired. Built
    /// only with the `diagnostics` feature, never into a production image.
    #[cfg(feature = "diagnostics")]
    pub fn diagnostic_submit_raw(&mut self, words: [u64; 2]) -> Result<(), Error> {
        let (mut hw, q) = self.hw();
        q.push_raw(&mut hw, words)?;
        q.sync(&mut hw)
    }
}

fn cr0_bits(fields: &[tock_registers::fields::Field<u32, CR0::Register>]) -> u32 {
    fields.iter().fold(0, |acc, f| acc | (f.mask << f.shift))
}

fn irq_bits(fields: &[tock_registers::fields::Field<u32, IRQ_CTRL::Register>]) -> u32 {
    fields.iter().fold(0, |acc, f| acc | (f.mask << f.shift))
}

/// Writes SMMU_CR0 and waits for SMMU_CR0ACK to match (§6.3).
fn write_cr0<M: Mmio>(mmio: &M, delay: &mut impl DelayNs, timeout_us: u32, value: u32) -> Result<(), Error> {
    mmio.write32(offset::CR0, value);
    if poll(delay, timeout_us, || mmio.read32(offset::CR0ACK) == value) {
        Ok(())
    } else {
        Err(Error::Timeout(WaitFor::Cr0Ack))
    }
}

/// Writes SMMU_IRQ_CTRL and waits for SMMU_IRQ_CTRLACK to match (§6.3).
fn write_irq_ctrl<M: Mmio>(mmio: &M, delay: &mut impl DelayNs, timeout_us: u32, value: u32) -> Result<(), Error> {
    mmio.write32(offset::IRQ_CTRL, value);
    if poll(delay, timeout_us, || mmio.read32(offset::IRQ_CTRLACK) == value) {
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
