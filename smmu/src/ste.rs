//! Stream table entries (IHI 0070 §5.2): 64 bytes per StreamID telling the
//! SMMU what to do with a device's transactions.
//!
//! The only STEs this module can build are *abort*, *stage 1*, *stage 2* and
//! *nested*: there is deliberately no way to express `Config = bypass`
//! (DESIGN.md I1), and [`SteConfig::Bypass`] exists only to report one found
//! in memory.

use tock_registers::fields::FieldValue;
use tock_registers::LocalRegisterCopy;

use crate::error::Error;
use crate::types::{PhysAddr, Vmid};

/// Size of one STE in bytes.
pub const STE_SIZE: usize = 64;
/// Number of 64-bit words in an STE.
pub const STE_WORDS: usize = 8;

/// Field layouts (generated items carry no docs of their own).
#[allow(missing_docs)]
mod layout {
    use tock_registers::register_bitfields;

    register_bitfields![u64,
        /// STE word 0 (§5.2).
        pub STE0 [
            /// Valid.
            V OFFSET(0) NUMBITS(1) [],
            /// Stream configuration. `0b0xx` aborts; `0b100` (bypass) is not
            /// named here on purpose.
            Config OFFSET(1) NUMBITS(3) [Abort = 0, S1Trans = 5, S2Trans = 6, Nested = 7],
            /// Format of the CD table (0 = linear).
            S1Fmt OFFSET(4) NUMBITS(2) [Linear = 0],
            /// Physical address of the CD table, bits [51:6].
            S1ContextPtr OFFSET(6) NUMBITS(46) [],
            /// log2 of the number of CDs (0 = one CD, no substreams).
            S1CDMax OFFSET(59) NUMBITS(5) []
        ],
        /// STE word 1 (§5.2).
        pub STE1 [
            /// Default substream behaviour; only used when S1CDMax != 0, but QEMU
            /// treats Terminate as abort regardless, so translating STEs use
            /// `Substream0`.
            S1DSS OFFSET(0) NUMBITS(2) [Terminate = 0, Substream0 = 2],
            /// CD fetch inner cacheability (0 NC, 1 WB-RA, 2 WT, 3 WB).
            S1CIR OFFSET(2) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            /// CD fetch outer cacheability.
            S1COR OFFSET(4) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            /// CD fetch shareability.
            S1CSH OFFSET(6) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
            DCP OFFSET(16) NUMBITS(1) [],
            PPAR OFFSET(18) NUMBITS(1) [],
            MEV OFFSET(19) NUMBITS(1) [],
            S2FWB OFFSET(25) NUMBITS(1) [],
            S1STALLD OFFSET(27) NUMBITS(1) [],
            /// ATS behaviour (0 = ATS translation requests abort).
            EATS OFFSET(28) NUMBITS(2) [Abort = 0],
            /// Stream world (0 = NS-EL1, the regime of our stage-1 ASIDs).
            STRW OFFSET(30) NUMBITS(2) [NsEl1 = 0],
            MemAttr OFFSET(32) NUMBITS(4) [],
            MTCFG OFFSET(36) NUMBITS(1) [],
            ALLOCCFG OFFSET(37) NUMBITS(4) [],
            /// Shareability override (1 = use incoming).
            SHCFG OFFSET(44) NUMBITS(2) [Incoming = 1],
            NSCFG OFFSET(46) NUMBITS(2) [],
            PRIVCFG OFFSET(48) NUMBITS(2) [],
            INSTCFG OFFSET(50) NUMBITS(2) []
        ],
        /// STE word 2 (§5.2): stage-2 VMID and VTCR-like fields.
        pub STE2 [
            S2VMID OFFSET(0) NUMBITS(16) [],
            S2T0SZ OFFSET(32) NUMBITS(6) [],
            /// Starting level; for 4 KiB: 0 = level 2, 1 = level 1, 2 = level 0.
            S2SL0 OFFSET(38) NUMBITS(2) [],
            S2IR0 OFFSET(40) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            S2OR0 OFFSET(42) NUMBITS(2) [NonCacheable = 0, WriteBack = 1],
            S2SH0 OFFSET(44) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
            S2TG OFFSET(46) NUMBITS(2) [Gran4K = 0, Gran64K = 1, Gran16K = 2],
            S2PS OFFSET(48) NUMBITS(3) [],
            S2AA64 OFFSET(51) NUMBITS(1) [],
            S2ENDI OFFSET(52) NUMBITS(1) [],
            S2AFFD OFFSET(53) NUMBITS(1) [],
            /// Protected table walk: stage-1 walks that hit Device memory fault.
            S2PTW OFFSET(54) NUMBITS(1) [],
            S2HD OFFSET(55) NUMBITS(1) [],
            S2HA OFFSET(56) NUMBITS(1) [],
            S2S OFFSET(57) NUMBITS(1) [],
            /// Record stage-2 faults in the event queue.
            S2R OFFSET(58) NUMBITS(1) []
        ],
        /// STE word 3 (§5.2).
        pub STE3 [
            /// Stage-2 translation table base, bits [51:4].
            S2TTB OFFSET(4) NUMBITS(48) []
        ]
    ];
}
pub use layout::{STE0, STE1, STE2, STE3};

/// What an STE in memory does (decoded from `V` and `Config`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SteConfig {
    /// `V = 0`: the SMMU reports C_BAD_STE and terminates.
    Invalid,
    /// `Config = 0b0xx`: transactions abort silently.
    Abort,
    /// Bypass. Never written by this crate; reported if found.
    Bypass,
    /// Stage 1 only.
    Stage1,
    /// Stage 2 only.
    Stage2,
    /// Stage 1 then stage 2.
    Nested,
}

/// Fields of a stage-2 STE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stage2Fields {
    /// VMID tagging the TLB entries.
    pub vmid: Vmid,
    /// Root of the stage-2 tables (4 KiB aligned).
    pub ttb: PhysAddr,
    /// `S2T0SZ` = 64 − input size; 16..=39.
    pub t0sz: u8,
    /// `S2SL0` starting level encoding for 4 KiB (0..=2).
    pub sl0: u8,
    /// `S2PS` output size encoding (≤ 5).
    pub ps: u8,
    /// Walks are cacheable/inner-shareable (coherent SMMU) or non-cacheable.
    pub coherent: bool,
}

/// Fields of a stage-1 STE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stage1Fields {
    /// Physical address of the CD table (64-byte aligned); one CD.
    pub cd_table: PhysAddr,
    /// VMID written to `S2VMID`: tags stage-1 TLB entries when the SMMU
    /// implements stage 2 (§5.2, S2VMID).
    pub vmid: Vmid,
    /// CD fetches are cacheable/inner-shareable.
    pub coherent: bool,
}

/// A stream table entry as 8 little-endian 64-bit words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ste {
    words: [u64; STE_WORDS],
}

fn word<R: tock_registers::RegisterLongName>(v: FieldValue<u64, R>) -> u64 {
    let mut r = LocalRegisterCopy::<u64, R>::new(0);
    r.write(v);
    r.get()
}

const MAX_PA: u64 = 1 << 52;

fn check_addr(addr: PhysAddr, align: u64) -> Result<(), Error> {
    if !addr.is_aligned(align) || addr.as_u64() >= MAX_PA {
        return Err(Error::BadDmaMemory(addr));
    }
    Ok(())
}

impl Stage2Fields {
    fn validate(&self) -> Result<(), Error> {
        check_addr(self.ttb, 4096)?;
        if !(16..=39).contains(&self.t0sz) || self.sl0 > 2 || self.ps > 5 {
            return Err(Error::BadInputSize(64u8.saturating_sub(self.t0sz)));
        }
        Ok(())
    }

    fn word2(&self) -> u64 {
        let cache = if self.coherent {
            STE2::S2IR0::WriteBack + STE2::S2OR0::WriteBack + STE2::S2SH0::Inner
        } else {
            STE2::S2IR0::NonCacheable + STE2::S2OR0::NonCacheable + STE2::S2SH0::Outer
        };
        word(
            STE2::S2VMID.val(u64::from(self.vmid.0))
                + STE2::S2T0SZ.val(u64::from(self.t0sz))
                + STE2::S2SL0.val(u64::from(self.sl0))
                + cache
                + STE2::S2TG::Gran4K
                + STE2::S2PS.val(u64::from(self.ps))
                + STE2::S2AA64::SET
                + STE2::S2PTW::SET
                + STE2::S2R::SET,
        )
    }

    fn word3(&self) -> u64 {
        word(STE3::S2TTB.val(self.ttb.as_u64() >> 4))
    }
}

impl Stage1Fields {
    fn validate(&self) -> Result<(), Error> {
        check_addr(self.cd_table, 64)
    }

    fn word0(&self, config: FieldValue<u64, STE0::Register>) -> u64 {
        word(STE0::V::SET + config + STE0::S1Fmt::Linear + STE0::S1ContextPtr.val(self.cd_table.as_u64() >> 6) + STE0::S1CDMax.val(0))
    }

    fn word1(&self) -> u64 {
        let cache = if self.coherent {
            STE1::S1CIR::WriteBack + STE1::S1COR::WriteBack + STE1::S1CSH::Inner
        } else {
            STE1::S1CIR::NonCacheable + STE1::S1COR::NonCacheable + STE1::S1CSH::Outer
        };
        word(STE1::S1DSS::Substream0 + cache + STE1::EATS::Abort + STE1::STRW::NsEl1 + STE1::SHCFG::Incoming)
    }
}

impl Ste {
    /// `V = 1, Config = abort`: every transaction is terminated, no event is
    /// recorded (§5.2, Config).
    pub const fn abort() -> Ste {
        // V (bit 0) = 1, Config (bits 3:1) = 0b000.
        Ste { words: [1, 0, 0, 0, 0, 0, 0, 0] }
    }

    /// Stage-2-only translation (`Config = 0b110`).
    pub fn stage2(s2: &Stage2Fields) -> Result<Ste, Error> {
        s2.validate()?;
        let mut words = [0; STE_WORDS];
        words[0] = word(STE0::V::SET + STE0::Config::S2Trans);
        words[1] = word(STE1::EATS::Abort + STE1::SHCFG::Incoming);
        words[2] = s2.word2();
        words[3] = s2.word3();
        Ok(Ste { words })
    }

    /// Stage-1-only translation (`Config = 0b101`) with a single CD.
    pub fn stage1(s1: &Stage1Fields) -> Result<Ste, Error> {
        s1.validate()?;
        let mut words = [0; STE_WORDS];
        words[0] = s1.word0(STE0::Config::S1Trans);
        words[1] = s1.word1();
        // S2VMID tags stage-1 entries when stage 2 is implemented.
        words[2] = word(STE2::S2VMID.val(u64::from(s1.vmid.0)));
        Ok(Ste { words })
    }

    /// Stage 1 followed by stage 2 (`Config = 0b111`): the CD pointer and the
    /// stage-1 table addresses are IPAs translated by `s2`.
    pub fn nested(s1: &Stage1Fields, s2: &Stage2Fields) -> Result<Ste, Error> {
        s1.validate()?;
        s2.validate()?;
        let mut words = [0; STE_WORDS];
        words[0] = s1.word0(STE0::Config::Nested);
        words[1] = s1.word1();
        words[2] = s2.word2();
        words[3] = s2.word3();
        Ok(Ste { words })
    }

    /// The eight words in memory order.
    pub fn words(&self) -> &[u64; STE_WORDS] {
        &self.words
    }
}

/// What the driver needs to know about an STE it finds in memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SteInfo {
    /// Decoded `V`/`Config`.
    pub config: SteConfig,
    /// `S2VMID`.
    pub vmid: Vmid,
    /// `S2TTB`.
    pub s2ttb: PhysAddr,
    /// `S1ContextPtr`.
    pub cd_table: PhysAddr,
}

impl SteInfo {
    /// Decodes the fields of `words` this driver writes.
    pub fn decode(words: &[u64; STE_WORDS]) -> SteInfo {
        let w0 = LocalRegisterCopy::<u64, STE0::Register>::new(words[0]);
        let w2 = LocalRegisterCopy::<u64, STE2::Register>::new(words[2]);
        let w3 = LocalRegisterCopy::<u64, STE3::Register>::new(words[3]);
        let config = if !w0.is_set(STE0::V) {
            SteConfig::Invalid
        } else {
            match w0.read(STE0::Config) {
                0..=3 => SteConfig::Abort,
                4 => SteConfig::Bypass,
                5 => SteConfig::Stage1,
                6 => SteConfig::Stage2,
                _ => SteConfig::Nested,
            }
        };
        SteInfo {
            config,
            vmid: Vmid(w2.read(STE2::S2VMID) as u16),
            s2ttb: PhysAddr(w3.read(STE3::S2TTB) << 4),
            cd_table: PhysAddr(w0.read(STE0::S1ContextPtr) << 6),
        }
    }
}
