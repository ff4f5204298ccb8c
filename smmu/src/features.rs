//! What an SMMU implements, decoded from SMMU_IDR0–5, SMMU_IIDR and
//! SMMU_AIDR (IHI 0070 §6.3), and whether this driver can use it.

use tock_registers::LocalRegisterCopy;

use crate::error::Unsupported;
use crate::hal::Mmio;
use crate::regs::{offset, AIDR, IDR0, IDR1, IDR3, IDR5, IIDR};

/// Translation table formats (`IDR0.TTF`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TableFormats {
    /// AArch32 (LPAE) only.
    AArch32,
    /// AArch64 only.
    AArch64,
    /// Both.
    Both,
    /// Reserved encoding 0b00.
    Reserved,
}

/// Stall model (`IDR0.STALL_MODEL`, ch. 3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StallModel {
    /// Stall and terminate models both supported.
    StallAndTerminate,
    /// Terminate model only (QEMU).
    TerminateOnly,
    /// Stall forced: faulting transactions always stall.
    StallForced,
    /// Reserved encoding.
    Reserved,
}

/// Translation table endianness (`IDR0.TTENDIAN`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TtEndian {
    /// Both endiannesses.
    Mixed,
    /// Little endian only.
    Little,
    /// Big endian only.
    Big,
    /// Reserved encoding.
    Reserved,
}

/// `SMMU_IIDR` fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Iidr {
    /// JEP106 implementer code.
    pub implementer: u16,
    /// Minor revision.
    pub revision: u8,
    /// Major revision.
    pub variant: u8,
    /// Product identifier.
    pub product_id: u16,
}

/// The decoded capabilities of one SMMU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Features {
    /// Stage 1 translation (`IDR0.S1P`).
    pub stage1: bool,
    /// Stage 2 translation (`IDR0.S2P`).
    pub stage2: bool,
    /// Table formats (`IDR0.TTF`).
    pub table_formats: TableFormats,
    /// The SMMU can access tables/queues/memory coherently (`IDR0.COHACC`).
    /// Whether it *is* coherent also depends on the system (device tree
    /// `dma-coherent`).
    pub coherent_access: bool,
    /// Broadcast TLB maintenance (`IDR0.BTM`).
    pub btm: bool,
    /// Hardware access/dirty flag update (`IDR0.HTTU`).
    pub httu: u8,
    /// EL2 stage-1 contexts and `TLBI_EL2_*` (`IDR0.HYP`).
    pub hyp: bool,
    /// PCIe ATS (`IDR0.ATS`).
    pub ats: bool,
    /// PCIe PRI (`IDR0.PRI`).
    pub pri: bool,
    /// MSIs (`IDR0.MSI`).
    pub msi: bool,
    /// SEV on queue activity (`IDR0.SEV`).
    pub sev: bool,
    /// ASID width in bits: 8 or 16 (`IDR0.ASID16`).
    pub asid_bits: u8,
    /// VMID width in bits: 8 or 16 (`IDR0.VMID16`).
    pub vmid_bits: u8,
    /// Two-level CD tables (`IDR0.CD2L`).
    pub cd_two_level: bool,
    /// Table endianness (`IDR0.TTENDIAN`).
    pub endianness: TtEndian,
    /// Stall model (`IDR0.STALL_MODEL`).
    pub stall_model: StallModel,
    /// Terminated transactions always abort (`IDR0.TERM_MODEL`).
    pub term_model_abort: bool,
    /// Two-level stream tables (`IDR0.ST_LEVEL`).
    pub two_level_strtab: bool,
    /// StreamID width (`IDR1.SIDSIZE`).
    pub sid_bits: u8,
    /// SubstreamID width (`IDR1.SSIDSIZE`).
    pub ssid_bits: u8,
    /// log2 of the largest command queue (`IDR1.CMDQS`).
    pub cmdq_log2_max: u8,
    /// log2 of the largest event queue (`IDR1.EVENTQS`).
    pub evtq_log2_max: u8,
    /// log2 of the largest PRI queue (`IDR1.PRIQS`).
    pub priq_log2_max: u8,
    /// The stream table base is fixed by the implementation
    /// (`IDR1.TABLES_PRESET`): SMMU_STRTAB_BASE(_CFG) ignore writes.
    pub tables_preset: bool,
    /// The queue bases are fixed by the implementation
    /// (`IDR1.QUEUES_PRESET`).
    pub queues_preset: bool,
    /// Preset base addresses are relative to the register page
    /// (`IDR1.REL`; meaningful only with a preset).
    pub rel: bool,
    /// Range invalidation (`IDR3.RIL`).
    pub ril: bool,
    /// Output address size in bits (`IDR5.OAS`), 0 if reserved.
    pub oas_bits: u8,
    /// Raw `IDR5.OAS` encoding.
    pub oas_field: u8,
    /// 4 KiB granule (`IDR5.GRAN4K`).
    pub gran4k: bool,
    /// 16 KiB granule (`IDR5.GRAN16K`).
    pub gran16k: bool,
    /// 64 KiB granule (`IDR5.GRAN64K`).
    pub gran64k: bool,
    /// Implementation identification.
    pub iidr: Iidr,
    /// Architecture major revision (`AIDR.ArchMajorRev`, 0 = SMMUv3).
    pub arch_major: u8,
    /// Architecture minor revision (`AIDR.ArchMinorRev`: 0 = v3.0, 1 = v3.1…).
    pub arch_minor: u8,
    /// The raw IDR0–IDR5 values.
    pub idr: [u32; 6],
}

/// Output address size in bits for an `IDR5.OAS` / `S2PS` / `IPS` encoding
/// (§6.3), `None` when reserved.
pub fn oas_bits_from_field(field: u8) -> Option<u8> {
    match field {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

impl Features {
    /// Decodes raw register values.
    pub fn from_regs(idr: [u32; 6], iidr: u32, aidr: u32) -> Self {
        let i0 = LocalRegisterCopy::<u32, IDR0::Register>::new(idr[0]);
        let i1 = LocalRegisterCopy::<u32, IDR1::Register>::new(idr[1]);
        let i3 = LocalRegisterCopy::<u32, IDR3::Register>::new(idr[3]);
        let i5 = LocalRegisterCopy::<u32, IDR5::Register>::new(idr[5]);
        let ii = LocalRegisterCopy::<u32, IIDR::Register>::new(iidr);
        let ai = LocalRegisterCopy::<u32, AIDR::Register>::new(aidr);
        let oas_field = i5.read(IDR5::OAS) as u8;
        Features {
            stage1: i0.is_set(IDR0::S1P),
            stage2: i0.is_set(IDR0::S2P),
            table_formats: match i0.read(IDR0::TTF) {
                1 => TableFormats::AArch32,
                2 => TableFormats::AArch64,
                3 => TableFormats::Both,
                _ => TableFormats::Reserved,
            },
            coherent_access: i0.is_set(IDR0::COHACC),
            btm: i0.is_set(IDR0::BTM),
            httu: i0.read(IDR0::HTTU) as u8,
            hyp: i0.is_set(IDR0::HYP),
            ats: i0.is_set(IDR0::ATS),
            pri: i0.is_set(IDR0::PRI),
            msi: i0.is_set(IDR0::MSI),
            sev: i0.is_set(IDR0::SEV),
            asid_bits: if i0.is_set(IDR0::ASID16) { 16 } else { 8 },
            vmid_bits: if i0.is_set(IDR0::VMID16) { 16 } else { 8 },
            cd_two_level: i0.is_set(IDR0::CD2L),
            endianness: match i0.read(IDR0::TTENDIAN) {
                0 => TtEndian::Mixed,
                2 => TtEndian::Little,
                3 => TtEndian::Big,
                _ => TtEndian::Reserved,
            },
            stall_model: match i0.read(IDR0::STALL_MODEL) {
                0 => StallModel::StallAndTerminate,
                1 => StallModel::TerminateOnly,
                2 => StallModel::StallForced,
                _ => StallModel::Reserved,
            },
            term_model_abort: i0.is_set(IDR0::TERM_MODEL),
            two_level_strtab: i0.read(IDR0::ST_LEVEL) == 1,
            sid_bits: i1.read(IDR1::SIDSIZE) as u8,
            ssid_bits: i1.read(IDR1::SSIDSIZE) as u8,
            cmdq_log2_max: i1.read(IDR1::CMDQS) as u8,
            evtq_log2_max: i1.read(IDR1::EVENTQS) as u8,
            priq_log2_max: i1.read(IDR1::PRIQS) as u8,
            tables_preset: i1.is_set(IDR1::TABLES_PRESET),
            queues_preset: i1.is_set(IDR1::QUEUES_PRESET),
            rel: i1.is_set(IDR1::REL),
            ril: i3.is_set(IDR3::RIL),
            oas_bits: oas_bits_from_field(oas_field).unwrap_or(0),
            oas_field,
            gran4k: i5.is_set(IDR5::GRAN4K),
            gran16k: i5.is_set(IDR5::GRAN16K),
            gran64k: i5.is_set(IDR5::GRAN64K),
            iidr: Iidr {
                implementer: ii.read(IIDR::Implementer) as u16,
                revision: ii.read(IIDR::Revision) as u8,
                variant: ii.read(IIDR::Variant) as u8,
                product_id: ii.read(IIDR::ProductID) as u16,
            },
            arch_major: ai.read(AIDR::ArchMajorRev) as u8,
            arch_minor: ai.read(AIDR::ArchMinorRev) as u8,
            idr,
        }
    }

    /// Reads and decodes the ID registers.
    pub fn read(mmio: &impl Mmio) -> Self {
        let idr = [
            mmio.read32(offset::IDR0),
            mmio.read32(offset::IDR1),
            mmio.read32(offset::IDR2),
            mmio.read32(offset::IDR3),
            mmio.read32(offset::IDR4),
            mmio.read32(offset::IDR5),
        ];
        Self::from_regs(idr, mmio.read32(offset::IIDR), mmio.read32(offset::AIDR))
    }

    /// Checks that this driver can serve the SMMU: some translation stage,
    /// AArch64 tables with a 4 KiB granule, little-endian walks, a defined
    /// output size, queues of its own, a terminate fault model, and a stream
    /// table it places itself. With `IDR1.TABLES_PRESET` the SMMU would
    /// enable on a table nobody filled with aborts; with `QUEUES_PRESET` the
    /// queues are not in memory the driver owns (Linux and Xen refuse both).
    pub fn check_usable(&self) -> Result<(), Unsupported> {
        if self.tables_preset {
            return Err(Unsupported::TablesPreset);
        }
        if self.queues_preset {
            return Err(Unsupported::QueuesPreset);
        }
        if !self.stage1 && !self.stage2 {
            return Err(Unsupported::NoTranslationStage);
        }
        if !matches!(self.table_formats, TableFormats::AArch64 | TableFormats::Both) {
            return Err(Unsupported::NoAArch64Tables);
        }
        if !self.gran4k {
            return Err(Unsupported::No4KGranule);
        }
        if !matches!(self.endianness, TtEndian::Mixed | TtEndian::Little) {
            return Err(Unsupported::NoLittleEndian);
        }
        if self.oas_bits == 0 {
            return Err(Unsupported::ReservedOas(self.oas_field));
        }
        if self.cmdq_log2_max == 0 || self.evtq_log2_max == 0 {
            return Err(Unsupported::NoQueues);
        }
        if self.stall_model == StallModel::StallForced {
            return Err(Unsupported::StallForced);
        }
        Ok(())
    }

    /// Output address size the driver uses with 4 KiB tables: `OAS`, capped
    /// at 48 bits (52-bit output needs the 64 KiB granule or LPA2, §3.4).
    pub fn effective_oas_bits(&self) -> u8 {
        self.oas_bits.min(48)
    }

    /// The `IPS`/`S2PS` encoding matching [`effective_oas_bits`](Self::effective_oas_bits).
    pub fn effective_oas_field(&self) -> u8 {
        self.oas_field.min(5)
    }
}
