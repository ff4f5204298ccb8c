//! The crate's error type. Nothing the hardware or a caller supplies makes the
//! driver panic; it returns one of these instead (STYLE.md "fail closed, wait
//! bounded").

use crate::gerror::CommandError;
use crate::types::{Iova, PhysAddr, StreamId};

/// Which bounded hardware wait ran out of time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WaitFor {
    /// `SMMU_GBPA.UPDATE` did not clear (IHI 0070 §6.3).
    GbpaUpdate,
    /// `SMMU_CR0ACK` did not match the value written to `SMMU_CR0` (§6.3).
    Cr0Ack,
    /// `SMMU_IRQ_CTRLACK` did not match `SMMU_IRQ_CTRL` (§6.3).
    IrqCtrlAck,
    /// The command queue stayed full (CONS did not move, §3.5).
    CmdqSpace,
    /// A `CMD_SYNC` was not consumed (ch. 4).
    CmdqSync,
}

/// Why an SMMU cannot be used by this driver (from its ID registers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Unsupported {
    /// Neither stage 1 nor stage 2 translation (`IDR0.S1P = IDR0.S2P = 0`).
    NoTranslationStage,
    /// No AArch64 translation table format (`IDR0.TTF`).
    NoAArch64Tables,
    /// No 4 KiB translation granule (`IDR5.GRAN4K = 0`).
    No4KGranule,
    /// Only big-endian table walks (`IDR0.TTENDIAN = 0b11`).
    NoLittleEndian,
    /// Reserved `IDR5.OAS` encoding.
    ReservedOas(u8),
    /// A queue size field of zero entries (`IDR1.CMDQS`/`EVENTQS`).
    NoQueues,
    /// The SMMU only supports the stall fault model (`IDR0.STALL_MODEL = 0b10`);
    /// this driver uses the terminate model.
    StallForced,
    /// A stage the caller asked for is not implemented.
    StageNotImplemented,
    /// The stream table base is fixed by the implementation
    /// (`IDR1.TABLES_PRESET`).
    TablesPreset,
    /// The command and event queue bases are fixed by the implementation
    /// (`IDR1.QUEUES_PRESET`).
    QueuesPreset,
}

/// Errors returned by the driver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A bounded wait on the hardware expired.
    Timeout(WaitFor),
    /// The SMMU cannot be served (see [`Unsupported`]).
    Unsupported(Unsupported),
    /// The [`DmaMemory`](crate::hal::DmaMemory) allocator returned nothing.
    OutOfMemory,
    /// The allocator returned memory that breaks its contract (misaligned,
    /// too small, or beyond the SMMU's output address size).
    BadDmaMemory(PhysAddr),
    /// An access to DMA memory fell outside its region (a driver bug caught
    /// instead of corrupting memory).
    DmaOutOfBounds,
    /// The SMMU reported a command error (`GERROR.CMDQ_ERR`); the faulty
    /// command was replaced by `CMD_SYNC`, the error acknowledged and the queue
    /// resumed.
    Command(CommandError),
    /// A global error stopped a queue (`GERROR.EVENTQ_ABT_ERR` etc.).
    QueueAbort,
    /// The StreamID is beyond what the stream table covers.
    StreamIdOutOfRange(StreamId),
    /// An address or size is not a multiple of the 4 KiB granule.
    Misaligned(Iova),
    /// A size of zero was given.
    EmptyRange,
    /// The range exceeds the domain's input size or the SMMU's output size.
    OutOfRange(Iova),
    /// The output range exceeds the SMMU's output address size.
    OutputOutOfRange(PhysAddr),
    /// Part of the range is already mapped.
    Overlap(Iova),
    /// Part of the range to unmap is not mapped.
    NotMapped(Iova),
    /// The unmap would split a block mapping that extends outside the range.
    SplitsBlock(Iova),
    /// The requested input address size is not supported (25..=48 bits and
    /// at most the output size for stage 2).
    BadInputSize(u8),
    /// No free ASID or VMID.
    IdsExhausted,
    /// The domain was created by another SMMU instance.
    ForeignDomain,
    /// The domain still translates for a stream; detach it first.
    DomainInUse(StreamId),
    /// A stream table entry holds something this driver never writes.
    UnexpectedSte(StreamId),
    /// The stage-1 domain is already nested inside another stage-2 domain.
    NestedElsewhere,
}

impl Error {
    /// `true` when the error leaves the SMMU in a state the driver cannot
    /// vouch for: an invalidation or `CMD_SYNC` that did not complete, a
    /// command the SMMU failed, a queue that stopped, or a structure found
    /// or left half-written. The old configuration may still be cached, or
    /// a new entry may already be in memory; the caller must not use the
    /// SMMU for translation again and should fail it closed
    /// ([`Smmu::fail_closed`](crate::Smmu::fail_closed)). Every other error
    /// is a refusal made before the hardware was touched, or a clean
    /// failure (out of memory) that left every entry aborting or as it was.
    pub fn leaves_smmu_untrusted(&self) -> bool {
        matches!(
            self,
            Error::Timeout(WaitFor::CmdqSync | WaitFor::CmdqSpace) | Error::Command(_) | Error::QueueAbort | Error::DmaOutOfBounds | Error::UnexpectedSte(_)
        )
    }
}

impl From<Unsupported> for Error {
    fn from(u: Unsupported) -> Self {
        Error::Unsupported(u)
    }
}
