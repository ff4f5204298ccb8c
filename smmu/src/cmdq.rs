//! The command queue (IHI 0070 §3.5, §4): a circular buffer of 16-byte
//! commands the driver produces and the SMMU consumes.
//!
//! Queue pointers carry an index plus a wrap bit (§3.5); [`Ring`] does that
//! arithmetic. Commands are written behind the producer index and handed to
//! the SMMU in batches; `CMD_SYNC` completion is detected by polling
//! `SMMU_CMDQ_CONS` past it (CS = SIG_NONE; no MSI needed). A command error
//! (`GERROR.CMDQ_ERR`) is recovered as ch. 7 suggests: an aborted fetch
//! (CERROR_ABT) is retried, a bounded number of times; an illegal command
//! (or one whose fetch keeps aborting) is replaced by `CMD_SYNC` and the
//! error returned to the caller of the batch. Either way the error is
//! acknowledged through `SMMU_GERRORN` and the queue resumes.

use embedded_hal::delay::DelayNs;
use tock_registers::LocalRegisterCopy;

use crate::error::{Error, WaitFor};
use crate::features::Features;
use crate::gerror::{CommandError, CommandErrorKind};
use crate::hal::{DmaMemory, DmaRegion, Mmio};
use crate::regs::{offset, CMDQ_CONS, GERROR, Q_BASE};
use crate::strtab::alloc_checked;
use crate::types::{Asid, Iova, Ipa, StreamId, SubstreamId, Vmid};
use crate::wait::poll;

/// Size of one command in bytes.
pub const CMD_SIZE: usize = 16;

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// Command word 0 (ch. 4); fields overlap by command type.
        pub CMD0 [
            OPCODE OFFSET(0) NUMBITS(8) [],
            SSEC OFFSET(10) NUMBITS(1) [],
            SSV OFFSET(11) NUMBITS(1) [],
            SSID OFFSET(12) NUMBITS(20) [],
            SID OFFSET(32) NUMBITS(32) [],
            /// TLBI range: number of blocks − 1.
            NUM OFFSET(12) NUMBITS(5) [],
            /// TLBI range: log2 of the block size in granules.
            SCALE OFFSET(20) NUMBITS(5) [],
            VMID OFFSET(32) NUMBITS(16) [],
            ASID OFFSET(48) NUMBITS(16) [],
            /// CMD_SYNC completion signal.
            CS OFFSET(12) NUMBITS(2) [SigNone = 0, SigIrq = 1, SigSev = 2],
            MSH OFFSET(22) NUMBITS(2) [],
            MSIATTR OFFSET(24) NUMBITS(4) [],
            MSIDATA OFFSET(32) NUMBITS(32) []
        ],
        /// Command word 1.
        pub CMD1 [
            LEAF OFFSET(0) NUMBITS(1) [],
            /// CFGI_STE_RANGE: invalidate 2^(Range+1) StreamIDs.
            Range OFFSET(0) NUMBITS(5) [],
            TTL OFFSET(8) NUMBITS(2) [],
            /// TLBI range granule: 0 = not a range, 1 = 4 KiB, 2 = 16 KiB, 3 = 64 KiB.
            TG OFFSET(10) NUMBITS(2) [None = 0, Gran4K = 1],
            /// VA / IPA bits [63:12].
            Address OFFSET(12) NUMBITS(52) [],
            MSIAddress OFFSET(2) NUMBITS(50) []
        ]
    ];
}
pub use layout::{CMD0, CMD1};

/// Command opcodes (§4).
pub mod opcode {
    /// CMD_PREFETCH_CONFIG.
    pub const PREFETCH_CONFIG: u8 = 0x01;
    /// CMD_PREFETCH_ADDR.
    pub const PREFETCH_ADDR: u8 = 0x02;
    /// CMD_CFGI_STE.
    pub const CFGI_STE: u8 = 0x03;
    /// CMD_CFGI_STE_RANGE (and CMD_CFGI_ALL with Range = 31).
    pub const CFGI_STE_RANGE: u8 = 0x04;
    /// CMD_CFGI_CD.
    pub const CFGI_CD: u8 = 0x05;
    /// CMD_CFGI_CD_ALL.
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// CMD_TLBI_NH_ALL.
    pub const TLBI_NH_ALL: u8 = 0x10;
    /// CMD_TLBI_NH_ASID.
    pub const TLBI_NH_ASID: u8 = 0x11;
    /// CMD_TLBI_NH_VA.
    pub const TLBI_NH_VA: u8 = 0x12;
    /// CMD_TLBI_NH_VAA.
    pub const TLBI_NH_VAA: u8 = 0x13;
    /// CMD_TLBI_EL3_ALL.
    pub const TLBI_EL3_ALL: u8 = 0x18;
    /// CMD_TLBI_EL3_VA.
    pub const TLBI_EL3_VA: u8 = 0x1A;
    /// CMD_TLBI_EL2_ALL.
    pub const TLBI_EL2_ALL: u8 = 0x20;
    /// CMD_TLBI_EL2_ASID.
    pub const TLBI_EL2_ASID: u8 = 0x21;
    /// CMD_TLBI_EL2_VA.
    pub const TLBI_EL2_VA: u8 = 0x22;
    /// CMD_TLBI_EL2_VAA.
    pub const TLBI_EL2_VAA: u8 = 0x23;
    /// CMD_TLBI_S12_VMALL.
    pub const TLBI_S12_VMALL: u8 = 0x28;
    /// CMD_TLBI_S2_IPA.
    pub const TLBI_S2_IPA: u8 = 0x2A;
    /// CMD_TLBI_NSNH_ALL.
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    /// CMD_ATC_INV.
    pub const ATC_INV: u8 = 0x40;
    /// CMD_PRI_RESP.
    pub const PRI_RESP: u8 = 0x41;
    /// CMD_RESUME.
    pub const RESUME: u8 = 0x44;
    /// CMD_STALL_TERM.
    pub const STALL_TERM: u8 = 0x45;
    /// CMD_SYNC.
    pub const CMD_SYNC: u8 = 0x46;
}

/// Range fields of a range TLBI (ch. 4, needs `IDR3.RIL`): the command
/// covers `(num + 1) << scale` granules from its address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TlbiRange {
    /// `NUM` (0..=31).
    pub num: u8,
    /// `SCALE` (0..=31).
    pub scale: u8,
}

/// A command the driver issues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Command {
    /// CMD_PREFETCH_CONFIG (ch. 4).
    PrefetchConfig {
        /// StreamID.
        sid: StreamId,
    },
    /// CMD_CFGI_STE (ch. 4): invalidate cached configuration of one stream.
    CfgiSte {
        /// StreamID.
        sid: StreamId,
        /// Only the STE, not CDs reached through it.
        leaf: bool,
    },
    /// CMD_CFGI_STE_RANGE (ch. 4): the aligned block of `2^(range+1)`
    /// StreamIDs containing `sid`.
    CfgiSteRange {
        /// Any StreamID in the block.
        sid: StreamId,
        /// Block size code (0..=31).
        range: u8,
    },
    /// CMD_CFGI_ALL (ch. 4) = CFGI_STE_RANGE with Range = 31.
    CfgiAll,
    /// CMD_CFGI_CD (ch. 4).
    CfgiCd {
        /// StreamID.
        sid: StreamId,
        /// SubstreamID.
        ssid: SubstreamId,
        /// Leaf only.
        leaf: bool,
    },
    /// CMD_CFGI_CD_ALL (ch. 4).
    CfgiCdAll {
        /// StreamID.
        sid: StreamId,
    },
    /// CMD_TLBI_NH_ALL (ch. 4): all stage-1 entries of a VMID.
    TlbiNhAll {
        /// VMID (ignored without stage 2).
        vmid: Vmid,
    },
    /// CMD_TLBI_NH_ASID (ch. 4).
    TlbiNhAsid {
        /// ASID.
        asid: Asid,
        /// VMID (ignored without stage 2).
        vmid: Vmid,
    },
    /// CMD_TLBI_NH_VA (ch. 4), optionally a range.
    TlbiNhVa {
        /// ASID.
        asid: Asid,
        /// VMID (ignored without stage 2).
        vmid: Vmid,
        /// Address (4 KiB aligned).
        addr: Iova,
        /// Last-level entries only.
        leaf: bool,
        /// Range (4 KiB granule); `None` = the entries for `addr`.
        range: Option<TlbiRange>,
    },
    /// CMD_TLBI_EL2_ALL (ch. 4; needs `IDR0.HYP`).
    TlbiEl2All,
    /// CMD_TLBI_S12_VMALL (ch. 4): all stage-1 and stage-2 entries of a VMID.
    TlbiS12Vmall {
        /// VMID.
        vmid: Vmid,
    },
    /// CMD_TLBI_S2_IPA (ch. 4), optionally a range.
    TlbiS2Ipa {
        /// VMID.
        vmid: Vmid,
        /// IPA (4 KiB aligned).
        ipa: Ipa,
        /// Last-level entries only.
        leaf: bool,
        /// Range (4 KiB granule); `None` = the entries for `ipa`.
        range: Option<TlbiRange>,
    },
    /// CMD_TLBI_NSNH_ALL (ch. 4): every non-secure, non-hyp entry.
    TlbiNsnhAll,
    /// CMD_SYNC (ch. 4) with CS = SIG_NONE: completion seen by polling CONS.
    Sync,
}

fn w0(v: tock_registers::fields::FieldValue<u64, CMD0::Register>) -> u64 {
    let mut r = LocalRegisterCopy::<u64, CMD0::Register>::new(0);
    r.write(v);
    r.get()
}

fn w1(v: tock_registers::fields::FieldValue<u64, CMD1::Register>) -> u64 {
    let mut r = LocalRegisterCopy::<u64, CMD1::Register>::new(0);
    r.write(v);
    r.get()
}

fn op(code: u8) -> tock_registers::fields::FieldValue<u64, CMD0::Register> {
    CMD0::OPCODE.val(u64::from(code))
}

fn range_fields(
    range: Option<TlbiRange>,
) -> (tock_registers::fields::FieldValue<u64, CMD0::Register>, tock_registers::fields::FieldValue<u64, CMD1::Register>) {
    match range {
        Some(r) => (CMD0::NUM.val(u64::from(r.num)) + CMD0::SCALE.val(u64::from(r.scale)), CMD1::TG::Gran4K),
        None => (CMD0::NUM.val(0), CMD1::TG::None),
    }
}

impl Command {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Command::PrefetchConfig { .. } => opcode::PREFETCH_CONFIG,
            Command::CfgiSte { .. } => opcode::CFGI_STE,
            Command::CfgiSteRange { .. } | Command::CfgiAll => opcode::CFGI_STE_RANGE,
            Command::CfgiCd { .. } => opcode::CFGI_CD,
            Command::CfgiCdAll { .. } => opcode::CFGI_CD_ALL,
            Command::TlbiNhAll { .. } => opcode::TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => opcode::TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => opcode::TLBI_NH_VA,
            Command::TlbiEl2All => opcode::TLBI_EL2_ALL,
            Command::TlbiS12Vmall { .. } => opcode::TLBI_S12_VMALL,
            Command::TlbiS2Ipa { .. } => opcode::TLBI_S2_IPA,
            Command::TlbiNsnhAll => opcode::TLBI_NSNH_ALL,
            Command::Sync => opcode::CMD_SYNC,
        }
    }

    /// The two 64-bit words of the command as written to the queue.
    pub fn encode(&self) -> [u64; 2] {
        let code = op(self.opcode());
        match *self {
            Command::PrefetchConfig { sid } => [w0(code + CMD0::SID.val(u64::from(sid.0))), 0],
            Command::CfgiSte { sid, leaf } => [w0(code + CMD0::SID.val(u64::from(sid.0))), w1(CMD1::LEAF.val(u64::from(leaf)))],
            Command::CfgiSteRange { sid, range } => [w0(code + CMD0::SID.val(u64::from(sid.0))), w1(CMD1::Range.val(u64::from(range.min(31))))],
            Command::CfgiAll => [w0(code), w1(CMD1::Range.val(31))],
            Command::CfgiCd { sid, ssid, leaf } => {
                [w0(code + CMD0::SSID.val(u64::from(ssid.0)) + CMD0::SID.val(u64::from(sid.0))), w1(CMD1::LEAF.val(u64::from(leaf)))]
            }
            Command::CfgiCdAll { sid } => [w0(code + CMD0::SID.val(u64::from(sid.0))), 0],
            Command::TlbiNhAll { vmid } => [w0(code + CMD0::VMID.val(u64::from(vmid.0))), 0],
            Command::TlbiNhAsid { asid, vmid } => [w0(code + CMD0::VMID.val(u64::from(vmid.0)) + CMD0::ASID.val(u64::from(asid.0))), 0],
            Command::TlbiNhVa { asid, vmid, addr, leaf, range } => {
                let (r0, r1) = range_fields(range);
                [
                    w0(code + r0 + CMD0::VMID.val(u64::from(vmid.0)) + CMD0::ASID.val(u64::from(asid.0))),
                    w1(r1 + CMD1::LEAF.val(u64::from(leaf)) + CMD1::Address.val(addr.0 >> 12)),
                ]
            }
            Command::TlbiEl2All | Command::TlbiNsnhAll | Command::Sync => {
                // CMD_SYNC: CS = SIG_NONE, no MSI.
                [w0(code), 0]
            }
            Command::TlbiS12Vmall { vmid } => [w0(code + CMD0::VMID.val(u64::from(vmid.0))), 0],
            Command::TlbiS2Ipa { vmid, ipa, leaf, range } => {
                let (r0, r1) = range_fields(range);
                [
                    w0(code + r0 + CMD0::VMID.val(u64::from(vmid.0))),
                    // IPA is bits [51:12].
                    w1(r1 + CMD1::LEAF.val(u64::from(leaf)) + CMD1::Address.val((ipa.0 & ((1 << 52) - 1)) >> 12)),
                ]
            }
        }
    }
}

/// Splits `pages` 4 KiB pages starting at `addr` into range-TLBI pieces
/// (address, [`TlbiRange`]): each piece is `(num+1) << scale` pages, taking
/// five bits of the page count at a time.
pub fn tlbi_ranges(addr: u64, pages: u64) -> impl Iterator<Item = (u64, TlbiRange)> {
    let mut addr = addr;
    let mut left = pages;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let scale = left.trailing_zeros().min(31);
        let num = if scale < 31 { (left >> scale) & 0x1f } else { (left >> 31).min(32) };
        let pieces = num << scale;
        let here = addr;
        addr = addr.wrapping_add(pieces << 12);
        left -= pieces;
        Some((here, TlbiRange { num: (num - 1) as u8, scale: scale as u8 }))
    })
}

/// Index-plus-wrap arithmetic of a queue of `2^log2` entries (§3.5): a
/// pointer holds the index in its low `log2` bits and the wrap flag above.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ring {
    log2: u8,
}

impl Ring {
    /// SMMU_CMDQ_BASE / SMMU_EVENTQ_BASE for a queue of this geometry in
    /// `region` (§6.3): address, LOG2SIZE, and read-allocate when coherent.
    pub(crate) fn base_register(&self, region: &DmaRegion, coherent: bool) -> u64 {
        let mut r = LocalRegisterCopy::<u64, Q_BASE::Register>::new(0);
        r.write(Q_BASE::ADDR.val(region.phys().as_u64() >> 5) + Q_BASE::LOG2SIZE.val(u64::from(self.log2())));
        if coherent {
            r.modify(Q_BASE::ALLOC::SET);
        }
        r.get()
    }

    /// A ring of `2^log2` entries (`log2` ≤ 19 for SMMUv3 queues).
    pub const fn new(log2: u8) -> Ring {
        Ring { log2: if log2 > 30 { 30 } else { log2 } }
    }

    /// log2 of the number of entries.
    pub const fn log2(&self) -> u8 {
        self.log2
    }

    /// Number of entries.
    pub const fn entries(&self) -> u32 {
        1 << self.log2
    }

    /// Mask of index + wrap bits.
    pub const fn mask(&self) -> u32 {
        (1 << (self.log2 + 1)) - 1
    }

    /// Index part of a pointer.
    pub const fn index(&self, ptr: u32) -> u32 {
        ptr & (self.entries() - 1)
    }

    /// Wrap flag of a pointer.
    pub const fn wrap(&self, ptr: u32) -> bool {
        ptr & self.entries() != 0
    }

    /// The pointer after `ptr`.
    pub const fn next(&self, ptr: u32) -> u32 {
        ptr.wrapping_add(1) & self.mask()
    }

    /// Entries between consumer and producer.
    pub const fn used(&self, prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons) & self.mask()
    }

    /// `true` when no entry is waiting (same index, same wrap).
    pub const fn is_empty(&self, prod: u32, cons: u32) -> bool {
        (prod ^ cons) & self.mask() == 0
    }

    /// `true` when every slot holds an entry (same index, different wrap).
    pub const fn is_full(&self, prod: u32, cons: u32) -> bool {
        (prod ^ cons) & self.mask() == self.entries()
    }

    /// Free slots.
    pub const fn free(&self, prod: u32, cons: u32) -> u32 {
        self.entries() - self.used(prod, cons)
    }
}

/// Counters of issued commands.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CmdqCounters {
    /// Commands written to the queue, `CMD_SYNC` included.
    pub commands: u64,
    /// `CMD_SYNC` commands waited for.
    pub syncs: u64,
    /// Command errors recovered.
    pub errors: u64,
}

/// What a queue operation touches: the registers, the DMA memory, the delay and the bound on each wait.
pub(crate) struct Io<'a, M, D, T> {
    pub mmio: &'a M,
    pub dma: &'a mut D,
    pub delay: &'a mut T,
    pub timeout_us: u32,
}

/// The command queue in DMA memory plus the driver's shadow producer.
#[derive(Debug)]
pub(crate) struct CommandQueue {
    region: DmaRegion,
    ring: Ring,
    prod: u32,
    /// Producer value last written to SMMU_CMDQ_PROD.
    kicked: u32,
    coherent: bool,
    error: Option<CommandError>,
    /// CERROR_ABT retries since the last completed CMD_SYNC.
    fetch_retries: u32,
    pub counters: CmdqCounters,
}

/// Times an aborted command fetch is retried before the command is given
/// up (and the batch fails).
const MAX_FETCH_RETRIES: u32 = 8;

impl CommandQueue {
    /// Allocates a queue of `2^log2` commands.
    pub fn new<D: DmaMemory>(dma: &mut D, features: &Features, log2: u8, coherent: bool) -> Result<Self, Error> {
        let size = (CMD_SIZE << log2).max(32);
        let region = alloc_checked(dma, size, size, features)?;
        Ok(CommandQueue { region, ring: Ring::new(log2), prod: 0, kicked: 0, coherent, error: None, fetch_retries: 0, counters: CmdqCounters::default() })
    }

    /// Value for SMMU_CMDQ_BASE.
    pub fn base_register(&self) -> u64 {
        self.ring.base_register(&self.region, self.coherent)
    }

    /// Geometry of the queue.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    fn slot_offset(&self, ptr: u32) -> usize {
        self.ring.index(ptr) as usize * CMD_SIZE
    }

    fn read_cons<M: Mmio>(&self, mmio: &M) -> u32 {
        mmio.read32(offset::CMDQ_CONS) & self.ring.mask()
    }

    /// Publishes entries written since the last kick and moves
    /// SMMU_CMDQ_PROD so the SMMU starts consuming them.
    fn kick<M: Mmio, D: DmaMemory, T>(&mut self, hw: &mut Io<'_, M, D, T>) {
        let n = self.ring.used(self.prod, self.kicked);
        if n > 0 {
            let start = self.ring.index(self.kicked) as usize;
            let first = (n as usize).min(self.ring.entries() as usize - start);
            hw.dma.publish(&self.region, start * CMD_SIZE, first * CMD_SIZE, self.coherent);
            if first < n as usize {
                hw.dma.publish(&self.region, 0, (n as usize - first) * CMD_SIZE, self.coherent);
            }
        }
        // The publish above is the barrier ordering the entries before this
        // MMIO write (§3.5: PROD must not pass entries the SMMU can't see).
        hw.mmio.write32(offset::CMDQ_PROD, self.prod);
        self.kicked = self.prod;
    }

    /// If a command error is pending, repairs the queue: remembers the error,
    /// overwrites the faulty command with CMD_SYNC, acknowledges
    /// GERROR.CMDQ_ERR and restarts consumption.
    fn recover<M: Mmio, D: DmaMemory, T>(&mut self, hw: &mut Io<'_, M, D, T>) -> Result<bool, Error> {
        let gerror = hw.mmio.read32(offset::GERROR);
        let gerrorn = hw.mmio.read32(offset::GERRORN);
        let bit = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        if (gerror ^ gerrorn) & bit == 0 {
            return Ok(false);
        }
        let cons_raw = hw.mmio.read32(offset::CMDQ_CONS);
        let code = LocalRegisterCopy::<u32, CMDQ_CONS::Register>::new(cons_raw).read(CMDQ_CONS::ERR) as u8;
        let at = self.slot_offset(cons_raw);
        let bad = hw.dma.read64(&self.region, at)?;
        let err = CommandError { kind: CommandErrorKind::from_code(code), opcode: (bad & 0xff) as u8, index: self.ring.index(cons_raw) };
        self.counters.errors += 1;
        let retry = matches!(err.kind, CommandErrorKind::Abt) && self.fetch_retries < MAX_FETCH_RETRIES;
        if retry {
            // CERROR_ABT: the command is valid, only its fetch aborted
            // (ch. 7.1): run it again as it is. Skipping it would drop a
            // CFGI or TLBI the caller relies on.
            self.fetch_retries += 1;
        } else {
            // CERROR_ILL, a fetch that keeps aborting, or a code we do not
            // know: the command cannot run; it becomes CMD_SYNC so the queue
            // moves on, and the batch reports the error.
            let sync = Command::Sync.encode();
            hw.dma.write64(&self.region, at + 8, sync[1])?;
            hw.dma.write64(&self.region, at, sync[0])?;
            hw.dma.publish(&self.region, at, CMD_SIZE, self.coherent);
            // Keep the first error of a batch: it is the one that broke it.
            self.error.get_or_insert(err);
        }
        // Toggle only CMDQ_ERR; other active errors stay for handle_gerror.
        hw.mmio.write32(offset::GERRORN, gerrorn ^ bit);
        // Resume through the doorbell, which publishes whatever was queued
        // since the last one before CMDQ_PROD lets the SMMU read it.
        self.kick(hw);
        Ok(true)
    }

    /// Repairs a pending command error now (from the GERROR handler).
    pub fn recover_now<M: Mmio, D: DmaMemory, T>(&mut self, hw: &mut Io<'_, M, D, T>) -> Result<bool, Error> {
        self.recover(hw)
    }

    /// Takes the command error recorded by the last recovery.
    pub fn take_error(&mut self) -> Option<CommandError> {
        self.error.take()
    }

    /// Polls SMMU_CMDQ_CONS until `pred(ring, prod, cons)` holds, repairing
    /// command errors on the way, within the configured time budget.
    fn wait<M: Mmio, D: DmaMemory, T: DelayNs>(&mut self, hw: &mut Io<'_, M, D, T>, what: WaitFor, pred: fn(&Ring, u32, u32) -> bool) -> Result<(), Error> {
        let mut budget = hw.timeout_us;
        // Each recovery turns one command into CMD_SYNC, so more recoveries
        // than slots means the SMMU is not making progress.
        let mut recoveries = self.ring.entries();
        loop {
            let ring = self.ring;
            let prod = self.prod;
            let mmio = hw.mmio;
            let mut halted = false;
            let mut spent = 0u32;
            let done = poll(&mut CountingDelay { inner: &mut *hw.delay, spent: &mut spent }, budget, || {
                let cons = mmio.read32(offset::CMDQ_CONS) & ring.mask();
                if pred(&ring, prod, cons) {
                    return true;
                }
                halted = cmdq_err_active(mmio);
                halted
            });
            budget = budget.saturating_sub(spent);
            if halted && recoveries > 0 {
                recoveries -= 1;
                self.recover(hw)?;
                continue;
            }
            return if done && !halted { Ok(()) } else { Err(Error::Timeout(what)) };
        }
    }

    /// Writes raw command words behind the producer index, waiting (bounded)
    /// while the queue is full.
    pub(crate) fn push_raw<M: Mmio, D: DmaMemory, T: DelayNs>(&mut self, hw: &mut Io<'_, M, D, T>, words: [u64; 2]) -> Result<(), Error> {
        if self.ring.is_full(self.prod, self.read_cons(hw.mmio)) {
            // Let the SMMU consume what is queued, then wait for a slot.
            self.kick(hw);
            self.wait(hw, WaitFor::CmdqSpace, |ring, prod, cons| !ring.is_full(prod, cons))?;
        }
        let at = self.slot_offset(self.prod);
        hw.dma.write64(&self.region, at, words[0])?;
        hw.dma.write64(&self.region, at + 8, words[1])?;
        self.prod = self.ring.next(self.prod);
        self.counters.commands += 1;
        Ok(())
    }

    /// Queues one command (no completion wait; see [`sync`](Self::sync)).
    pub fn push<M: Mmio, D: DmaMemory, T: DelayNs>(&mut self, hw: &mut Io<'_, M, D, T>, cmd: Command) -> Result<(), Error> {
        self.push_raw(hw, cmd.encode())
    }

    /// Appends CMD_SYNC, hands everything to the SMMU and waits (bounded)
    /// until CONS passed the CMD_SYNC, i.e. every earlier command has
    /// completed (ch. 4). Returns the first command error seen since the
    /// previous sync.
    pub fn sync<M: Mmio, D: DmaMemory, T: DelayNs>(&mut self, hw: &mut Io<'_, M, D, T>) -> Result<(), Error> {
        self.push(hw, Command::Sync)?;
        self.counters.syncs += 1;
        self.kick(hw);
        // We are the only producer and CMD_SYNC is the last entry: it has
        // been consumed exactly when the queue is empty.
        let waited = self.wait(hw, WaitFor::CmdqSync, |ring, prod, cons| ring.is_empty(prod, cons));
        let err = self.error.take();
        self.fetch_retries = 0;
        waited?;
        match err {
            Some(e) => Err(Error::Command(e)),
            None => Ok(()),
        }
    }
}

fn cmdq_err_active<M: Mmio>(mmio: &M) -> bool {
    let bit = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
    (mmio.read32(offset::GERROR) ^ mmio.read32(offset::GERRORN)) & bit != 0
}

/// A delay that also counts the microseconds it was asked to spend, so a
/// wait interrupted by error recovery keeps its overall budget.
struct CountingDelay<'a, T> {
    inner: &'a mut T,
    spent: &'a mut u32,
}

impl<T: DelayNs> DelayNs for CountingDelay<'_, T> {
    fn delay_ns(&mut self, ns: u32) {
        *self.spent = self.spent.saturating_add(ns.div_ceil(1000));
        self.inner.delay_ns(ns);
    }

    fn delay_us(&mut self, us: u32) {
        *self.spent = self.spent.saturating_add(us);
        self.inner.delay_us(us);
    }
}
