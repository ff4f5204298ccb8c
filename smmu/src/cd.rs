//! Context descriptors (IHI 0070 §5.4): the stage-1 translation context
//! (TTB0, TCR-like fields, MAIR, ASID) a stage-1 STE points to.
//!
//! Domains use one CD each (STE.S1CDMax = 0): no substreams.

use tock_registers::fields::FieldValue;
use tock_registers::LocalRegisterCopy;

use crate::error::Error;
use crate::types::{Asid, PhysAddr};

/// Size of one CD in bytes.
pub const CD_SIZE: usize = 64;
/// Number of 64-bit words in a CD.
pub const CD_WORDS: usize = 8;

/// MAIR attribute index of Normal, inner/outer write-back cacheable memory.
pub const ATTR_IDX_NORMAL: u8 = 0;
/// MAIR attribute index of Device-nGnRE memory.
pub const ATTR_IDX_DEVICE: u8 = 1;
/// MAIR attribute index of Normal non-cacheable memory.
pub const ATTR_IDX_NORMAL_NC: u8 = 2;

/// MAIR value of every CD (Arm ARM D19, MAIR_EL1 encoding): index 0 = 0xFF
/// (Normal WB RW-allocate), index 1 = 0x04 (Device-nGnRE), index 2 = 0x44
/// (Normal non-cacheable).
pub const MAIR: u64 = 0xFF | (0x04 << 8) | (0x44 << 16);

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// CD word 0 (§5.4).
        pub CD0 [
            T0SZ OFFSET(0) NUMBITS(6) [],
            TG0 OFFSET(6) NUMBITS(2) [Gran4K = 0, Gran64K = 1, Gran16K = 2],
            IR0 OFFSET(8) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            OR0 OFFSET(10) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            SH0 OFFSET(12) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
            EPD0 OFFSET(14) NUMBITS(1) [],
            ENDI OFFSET(15) NUMBITS(1) [],
            T1SZ OFFSET(16) NUMBITS(6) [],
            TG1 OFFSET(22) NUMBITS(2) [],
            IR1 OFFSET(24) NUMBITS(2) [],
            OR1 OFFSET(26) NUMBITS(2) [],
            SH1 OFFSET(28) NUMBITS(2) [],
            /// Disable walks through TTB1 (we only use TTB0).
            EPD1 OFFSET(30) NUMBITS(1) [],
            V OFFSET(31) NUMBITS(1) [],
            /// Intermediate physical size (same encoding as IDR5.OAS).
            IPS OFFSET(32) NUMBITS(3) [],
            AFFD OFFSET(35) NUMBITS(1) [],
            WXN OFFSET(36) NUMBITS(1) [],
            UWXN OFFSET(37) NUMBITS(1) [],
            TBI OFFSET(38) NUMBITS(2) [],
            PAN OFFSET(40) NUMBITS(1) [],
            /// AArch64 translation tables.
            AA64 OFFSET(41) NUMBITS(1) [],
            HD OFFSET(42) NUMBITS(1) [],
            HA OFFSET(43) NUMBITS(1) [],
            /// Stall on fault (0: terminate).
            S OFFSET(44) NUMBITS(1) [],
            /// Record faults in the event queue.
            R OFFSET(45) NUMBITS(1) [],
            /// Abort (rather than RAZ/WI) terminated transactions.
            A OFFSET(46) NUMBITS(1) [],
            /// Non-shared ASID set: not affected by broadcast TLB maintenance.
            ASET OFFSET(47) NUMBITS(1) [],
            ASID OFFSET(48) NUMBITS(16) []
        ],
        /// CD word 1 (§5.4).
        pub CD1 [
            NSCFG0 OFFSET(0) NUMBITS(1) [],
            HAD0 OFFSET(1) NUMBITS(1) [],
            /// TTB0 bits [51:4].
            TTB0 OFFSET(4) NUMBITS(48) []
        ]
    ];
}
pub use layout::{CD0, CD1};

/// Fields of a stage-1 CD.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stage1Cd {
    /// ASID tagging the TLB entries.
    pub asid: Asid,
    /// Root of the stage-1 tables (4 KiB aligned).
    pub ttb0: PhysAddr,
    /// `T0SZ` = 64 − VA size; 16..=39.
    pub t0sz: u8,
    /// `IPS` output size encoding (≤ 5).
    pub ips: u8,
    /// Walks are cacheable/inner-shareable (coherent SMMU) or non-cacheable.
    pub coherent: bool,
}

/// A context descriptor as 8 little-endian 64-bit words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cd {
    words: [u64; CD_WORDS],
}

fn word<R: tock_registers::RegisterLongName>(v: FieldValue<u64, R>) -> u64 {
    let mut r = LocalRegisterCopy::<u64, R>::new(0);
    r.write(v);
    r.get()
}

impl Cd {
    /// A valid stage-1 CD translating through TTB0 only, 4 KiB granule,
    /// faults recorded (`R`) and aborted (`A`), our [`MAIR`].
    pub fn stage1(c: &Stage1Cd) -> Result<Cd, Error> {
        if !c.ttb0.is_aligned(4096) || c.ttb0.as_u64() >= 1 << 52 {
            return Err(Error::BadDmaMemory(c.ttb0));
        }
        if !(16..=39).contains(&c.t0sz) || c.ips > 5 {
            return Err(Error::BadInputSize(64u8.saturating_sub(c.t0sz)));
        }
        let cache = if c.coherent {
            CD0::IR0::WriteBack + CD0::OR0::WriteBack + CD0::SH0::Inner
        } else {
            CD0::IR0::NonCacheable + CD0::OR0::NonCacheable + CD0::SH0::Outer
        };
        let mut words = [0; CD_WORDS];
        words[0] = word(
            CD0::T0SZ.val(u64::from(c.t0sz))
                + CD0::TG0::Gran4K
                + cache
                + CD0::EPD1::SET
                + CD0::V::SET
                + CD0::IPS.val(u64::from(c.ips))
                + CD0::AA64::SET
                + CD0::R::SET
                + CD0::A::SET
                + CD0::ASET::SET
                + CD0::ASID.val(u64::from(c.asid.0)),
        );
        words[1] = word(CD1::TTB0.val(c.ttb0.as_u64() >> 4));
        words[3] = MAIR;
        Ok(Cd { words })
    }

    /// The eight words in memory order.
    pub fn words(&self) -> &[u64; CD_WORDS] {
        &self.words
    }

    /// The ASID field of a CD in memory.
    pub fn asid_of(word0: u64) -> Asid {
        Asid(LocalRegisterCopy::<u64, CD0::Register>::new(word0).read(CD0::ASID) as u16)
    }
}
