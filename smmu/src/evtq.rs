//! The event queue (IHI 0070 §3.5, ch. 7, §7.3): 32-byte records the SMMU
//! writes about faults and configuration errors, decoded here into a typed
//! [`Event`]. Overflow (ch. 7) is detected from `EVENTQ_PROD.OVFLG` versus
//! `EVENTQ_CONS.OVACKFLG`, reported as lost events and acknowledged.

use tock_registers::LocalRegisterCopy;

use crate::cmdq::{Io, Ring};
use crate::error::Error;
use crate::features::Features;
use crate::hal::{DmaMemory, DmaRegion, Mmio};
use crate::regs::{offset, EVENTQ_CONS, EVENTQ_PROD};
use crate::strtab::alloc_checked;
use crate::types::{Iova, Ipa, PhysAddr, StreamId, SubstreamId};

/// Size of one event record in bytes.
pub const EVT_SIZE: usize = 32;

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// Event record word 0 (§7.3).
        pub EVT0 [
            EVENT_TYPE OFFSET(0) NUMBITS(8) [],
            SSV OFFSET(11) NUMBITS(1) [],
            SubstreamID OFFSET(12) NUMBITS(20) [],
            StreamID OFFSET(32) NUMBITS(32) []
        ],
        /// Event record word 1 (§7.3).
        pub EVT1 [
            STAG OFFSET(0) NUMBITS(16) [],
            Stall OFFSET(31) NUMBITS(1) [],
            PnU OFFSET(33) NUMBITS(1) [],
            InD OFFSET(34) NUMBITS(1) [],
            RnW OFFSET(35) NUMBITS(1) [],
            S2 OFFSET(39) NUMBITS(1) [],
            CLASS OFFSET(40) NUMBITS(2) [CD = 0, TT = 1, IN = 2]
        ],
        /// Event record word 3 (§7.3): IPA of a stage-2 fault, or fetch address.
        pub EVT3 [
            IPA OFFSET(12) NUMBITS(40) [],
            FetchAddr OFFSET(3) NUMBITS(49) []
        ]
    ];
}
pub use layout::{EVT0, EVT1, EVT3};

/// Event type (§7.3). Names are the spec's.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EventType {
    /// 0x01 Unsupported upstream transaction.
    F_UUT,
    /// 0x02 StreamID out of range or level-1 descriptor invalid.
    C_BAD_STREAMID,
    /// 0x03 Abort fetching an STE.
    F_STE_FETCH,
    /// 0x04 Invalid or illegal STE.
    C_BAD_STE,
    /// 0x05 ATS translation request not allowed.
    F_BAD_ATS_TREQ,
    /// 0x06 Non-substream transaction to a stream with S1DSS = terminate.
    F_STREAM_DISABLED,
    /// 0x07 Translated ATS transaction forbidden.
    F_TRANSL_FORBIDDEN,
    /// 0x08 SubstreamID out of range.
    C_BAD_SUBSTREAMID,
    /// 0x09 Abort fetching a CD.
    F_CD_FETCH,
    /// 0x0A Invalid or illegal CD.
    C_BAD_CD,
    /// 0x0B External abort during a table walk.
    F_WALK_EABT,
    /// 0x10 Translation fault.
    F_TRANSLATION,
    /// 0x11 Address size fault.
    F_ADDR_SIZE,
    /// 0x12 Access flag fault.
    F_ACCESS,
    /// 0x13 Permission fault.
    F_PERMISSION,
    /// 0x20 TLB conflict.
    F_TLB_CONFLICT,
    /// 0x21 Configuration cache conflict.
    F_CFG_CONFLICT,
    /// 0x24 Page request (stall / PRI).
    E_PAGE_REQUEST,
    /// 0x25 Abort fetching a VMS.
    F_VMS_FETCH,
    /// 0xE0–0xEF implementation defined.
    IMPDEF(u8),
    /// Reserved code.
    Reserved(u8),
}

impl EventType {
    /// Decodes an event type code.
    pub fn from_code(code: u8) -> Self {
        use EventType::*;
        match code {
            0x01 => F_UUT,
            0x02 => C_BAD_STREAMID,
            0x03 => F_STE_FETCH,
            0x04 => C_BAD_STE,
            0x05 => F_BAD_ATS_TREQ,
            0x06 => F_STREAM_DISABLED,
            0x07 => F_TRANSL_FORBIDDEN,
            0x08 => C_BAD_SUBSTREAMID,
            0x09 => F_CD_FETCH,
            0x0A => C_BAD_CD,
            0x0B => F_WALK_EABT,
            0x10 => F_TRANSLATION,
            0x11 => F_ADDR_SIZE,
            0x12 => F_ACCESS,
            0x13 => F_PERMISSION,
            0x20 => F_TLB_CONFLICT,
            0x21 => F_CFG_CONFLICT,
            0x24 => E_PAGE_REQUEST,
            0x25 => F_VMS_FETCH,
            0xE0..=0xEF => IMPDEF(code),
            c => Reserved(c),
        }
    }
}

/// Which access of a walk faulted (`CLASS`, §7.3.12).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FaultClass {
    /// Fetching the CD.
    CD,
    /// Fetching a translation table entry.
    TT,
    /// Translating the input address.
    IN,
    /// Reserved encoding.
    Reserved,
}

/// A decoded event record. Fields the record type does not carry are `None`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Event {
    /// Event type.
    pub event_type: EventType,
    /// StreamID of the transaction or configuration.
    pub stream_id: StreamId,
    /// SubstreamID when valid (`SSV`), always for C_BAD_SUBSTREAMID.
    pub substream_id: Option<SubstreamId>,
    /// Read (`true`) or write (`RnW`).
    pub read: Option<bool>,
    /// Instruction (`true`) or data (`InD`).
    pub instruction: Option<bool>,
    /// Privileged (`true`) or unprivileged (`PnU`).
    pub privileged: Option<bool>,
    /// The fault was at stage 2 (`S2`).
    pub stage2: Option<bool>,
    /// `CLASS` of the faulting access.
    pub class: Option<FaultClass>,
    /// Stall tag when the transaction stalled.
    pub stall_tag: Option<u16>,
    /// Input address of the transaction.
    pub input_addr: Option<Iova>,
    /// IPA of a stage-2 fault.
    pub ipa: Option<Ipa>,
    /// Address of the failed fetch (STE, CD, table, VMS).
    pub fetch_addr: Option<PhysAddr>,
    /// The raw record.
    pub raw: [u64; 4],
}

impl Event {
    /// Decodes a 32-byte record.
    pub fn decode(raw: [u64; 4]) -> Event {
        use EventType::*;
        let w0 = LocalRegisterCopy::<u64, EVT0::Register>::new(raw[0]);
        let w1 = LocalRegisterCopy::<u64, EVT1::Register>::new(raw[1]);
        let w3 = LocalRegisterCopy::<u64, EVT3::Register>::new(raw[3]);
        let event_type = EventType::from_code(w0.read(EVT0::EVENT_TYPE) as u8);
        let ssid = SubstreamId(w0.read(EVT0::SubstreamID) as u32);
        let ssv = w0.is_set(EVT0::SSV);

        // What each record type carries (§7.3).
        let (has_ssid, access, addr, s2_class, fetch, ipa) = match event_type {
            F_UUT | F_BAD_ATS_TREQ | E_PAGE_REQUEST => (true, true, true, false, false, false),
            C_BAD_STREAMID | C_BAD_STE | F_STREAM_DISABLED | C_BAD_CD | F_CFG_CONFLICT => (true, false, false, false, false, false),
            F_STE_FETCH | F_CD_FETCH => (true, false, false, false, true, false),
            F_TRANSL_FORBIDDEN => (false, true, true, false, false, false),
            C_BAD_SUBSTREAMID => (true, false, false, false, false, false),
            F_WALK_EABT => (true, true, true, true, true, false),
            F_TRANSLATION | F_ADDR_SIZE | F_ACCESS | F_PERMISSION => (true, true, true, true, false, true),
            F_TLB_CONFLICT => (true, true, true, true, false, false),
            F_VMS_FETCH => (false, false, false, false, true, false),
            IMPDEF(_) | Reserved(_) => (false, false, false, false, false, false),
        };
        let stage2 = s2_class.then(|| w1.is_set(EVT1::S2));
        let stalled = s2_class && w1.is_set(EVT1::Stall);
        Event {
            event_type,
            stream_id: StreamId(w0.read(EVT0::StreamID) as u32),
            substream_id: if has_ssid && (ssv || event_type == C_BAD_SUBSTREAMID) { Some(ssid) } else { None },
            read: access.then(|| w1.is_set(EVT1::RnW)),
            instruction: access.then(|| w1.is_set(EVT1::InD)),
            privileged: access.then(|| w1.is_set(EVT1::PnU)),
            stage2,
            class: s2_class.then(|| match w1.read(EVT1::CLASS) {
                0 => FaultClass::CD,
                1 => FaultClass::TT,
                2 => FaultClass::IN,
                _ => FaultClass::Reserved,
            }),
            stall_tag: stalled.then(|| w1.read(EVT1::STAG) as u16),
            input_addr: addr.then_some(Iova(raw[2])),
            ipa: (ipa && stage2 == Some(true)).then(|| Ipa(w3.read(EVT3::IPA) << 12)),
            fetch_addr: fetch.then(|| PhysAddr(w3.read(EVT3::FetchAddr) << 3)),
            raw,
        }
    }
}

/// Result of one [`Smmu::drain_events`](crate::Smmu::drain_events) call.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DrainReport {
    /// Records handed to the callback.
    pub events: u32,
    /// The queue overflowed since the last drain: records were lost
    /// (acknowledged now).
    pub lost_events: bool,
    /// Records were left in the queue because the limit was reached.
    pub more: bool,
}

/// The event queue in DMA memory and the driver's consumer index.
#[derive(Debug)]
pub(crate) struct EventQueue {
    region: DmaRegion,
    ring: Ring,
    cons: u32,
    ovack: bool,
    coherent: bool,
}

impl EventQueue {
    /// Allocates a queue of `2^log2` records.
    pub fn new<D: DmaMemory>(dma: &mut D, features: &Features, log2: u8, coherent: bool) -> Result<Self, Error> {
        let size = (EVT_SIZE << log2).max(32);
        let region = alloc_checked(dma, size, size, features)?;
        // The SMMU writes here: no dirty CPU line may linger to be evicted
        // over its records later.
        dma.publish(&region, 0, size, coherent);
        Ok(EventQueue { region, ring: Ring::new(log2), cons: 0, ovack: false, coherent })
    }

    /// Value for SMMU_EVENTQ_BASE.
    pub fn base_register(&self) -> u64 {
        self.ring.base_register(&self.region, self.coherent)
    }

    /// Geometry of the queue.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// Hands up to `limit` records to `f`, then returns the slots to the
    /// SMMU and acknowledges an overflow.
    pub fn drain<M: Mmio, D: DmaMemory, T>(&mut self, hw: &mut Io<'_, M, D, T>, limit: u32, mut f: impl FnMut(&Event)) -> Result<DrainReport, Error> {
        let prod_raw = hw.mmio.read32(offset::EVENTQ_PROD);
        let ovflg = LocalRegisterCopy::<u32, EVENTQ_PROD::Register>::new(prod_raw).is_set(EVENTQ_PROD::OVFLG);
        let prod = prod_raw & self.ring.mask();
        let mut report = DrainReport { lost_events: ovflg != self.ovack, ..DrainReport::default() };
        while !self.ring.is_empty(prod, self.cons) && report.events < limit {
            let at = self.ring.index(self.cons) as usize * EVT_SIZE;
            hw.dma.acquire(&self.region, at, EVT_SIZE, self.coherent);
            let mut raw = [0u64; 4];
            for (i, w) in raw.iter_mut().enumerate() {
                *w = hw.dma.read64(&self.region, at + i * 8)?;
            }
            f(&Event::decode(raw));
            self.cons = self.ring.next(self.cons);
            report.events += 1;
        }
        report.more = !self.ring.is_empty(prod, self.cons);
        // Reads of the records must complete before the slots are handed
        // back (§3.5).
        hw.dma.release();
        self.ovack = ovflg;
        let mut cons = LocalRegisterCopy::<u32, EVENTQ_CONS::Register>::new(self.cons);
        if ovflg {
            cons.modify(EVENTQ_CONS::OVACKFLG::SET);
        }
        hw.mmio.write32(offset::EVENTQ_CONS, cons.get());
        Ok(report)
    }
}
