//! A partition's CPU stage 2: an identity map of its RAM (Normal) and its
//! devices' MMIO (Device), in frames of its own, edited when a group moves
//! (DESIGN.md I2: a device's MMIO is mapped only for its owner).

use partitions::validate::{PartitionId, PartitionPlan};
use platform::arch::guest::{self, Stage2};
use platform::pgtable::{Access, Format, IdentityMap, MemType, Table, PAGE_SIZE};
use platform::{PhysAddr, PhysRange};

/// Tables available to one partition's CPU stage 2.
const TABLES: usize = 32;

/// The VMID of partition `p`, shared by its CPUs' stage 2 and its SMMU
/// domains (0 is never used).
pub fn vmid(p: PartitionId) -> u16 {
    p.0 + 1
}

/// Why a stage 2 could not be built or edited.
#[derive(Debug, defmt::Format)]
pub enum Stage2Error {
    /// No frames left for the tables.
    OutOfFrames,
    /// A region overflows the address space.
    Overflow,
    /// The page-table code refused a region (outside the IPA space, or the
    /// pool is full).
    Map(platform::pgtable::MapError),
}

/// A partition's stage 2 and the frames its tables live in.
pub struct Stage2Tables {
    /// What its CPUs load into VTTBR/VTCR.
    pub s2: Stage2,
    /// First table (the root).
    pool: PhysAddr,
    /// Tables in use.
    used: usize,
}

impl Stage2Tables {
    /// Builds the identity stage 2 of `p`: its RAM, and `mmio` as Device
    /// memory.
    pub fn build(p: &PartitionPlan, mmio: &[PhysRange]) -> Result<Stage2Tables, Stage2Error> {
        let bytes = TABLES as u64 * PAGE_SIZE;
        let pa = platform::memory::alloc_zeroed(bytes, PAGE_SIZE).ok_or(Stage2Error::OutOfFrames)?;
        // SAFETY: fresh, zeroed, identity-mapped frames owned by this table.
        let pool = unsafe { core::slice::from_raw_parts_mut(pa.0 as *mut Table, TABLES) };
        let (input_bits, start_level) = geometry();
        let mut m = IdentityMap::stage2(pool, pa, u32::from(input_bits)).map_err(Stage2Error::Map)?;
        for r in &p.memory {
            let range = PhysRange::new(r.base.0, r.size).ok_or(Stage2Error::Overflow)?;
            m.map(range, MemType::Normal, Access::ReadWrite).map_err(Stage2Error::Map)?;
        }
        for r in mmio {
            m.map(r.grow_to(PAGE_SIZE), MemType::Device, Access::ReadWrite).map_err(Stage2Error::Map)?;
        }
        let root = m.root_at(start_level).ok_or(Stage2Error::Map(platform::pgtable::MapError::OutOfTables))?;
        let used = m.tables_used();
        let t = Stage2Tables { s2: Stage2 { root, vmid: vmid(p.id), input_bits, start_level }, pool: pa, used };
        t.clean();
        Ok(t)
    }

    /// Maps `mmio` as Device memory.
    pub fn map_mmio(&mut self, mmio: &[PhysRange]) -> Result<(), Stage2Error> {
        self.edit(mmio, true)
    }

    /// Unmaps `mmio`, then invalidates the partition's TLB entries on every
    /// CPU (broadcast).
    pub fn unmap_mmio(&mut self, mmio: &[PhysRange]) -> Result<(), Stage2Error> {
        self.edit(mmio, false)
    }

    fn edit(&mut self, mmio: &[PhysRange], map: bool) -> Result<(), Stage2Error> {
        // SAFETY: the pool was allocated for this partition's stage 2 only;
        // the partition's resource lock serialises every edit.
        let pool = unsafe { core::slice::from_raw_parts_mut(self.pool.0 as *mut Table, TABLES) };
        let mut m = IdentityMap::resume(Format::Stage2, pool, self.pool, self.used, u32::from(self.s2.input_bits)).map_err(Stage2Error::Map)?;
        let mut result = Ok(());
        for r in mmio {
            let r = r.grow_to(PAGE_SIZE);
            let step = if map { m.map(r, MemType::Device, Access::ReadWrite) } else { m.unmap(r) };
            if let Err(e) = step {
                result = Err(Stage2Error::Map(e));
                break;
            }
        }
        // What was unmapped before a failure stays unmapped: clean and
        // invalidate it either way.
        self.used = m.tables_used();
        self.clean();
        if !map {
            guest::flush_stage2(&self.s2);
        }
        result
    }

    /// The tables are read by the CPUs' walkers with caches that may be off.
    fn clean(&self) {
        platform::arch::cache::clean(PhysRange::new(self.pool.0, TABLES as u64 * PAGE_SIZE).unwrap_or_default());
    }
}

/// The IPA size and starting level of partitions' CPU stage 2 on this CPU,
/// by the rule the SMMU's stage 2 follows too
/// ([`smmu::pgtable::stage2_start`]): the whole physical address space,
/// from level 0, where that is legal (PA above 42 bits); the identity map
/// concatenates no tables, so on a CPU with 40 or 42 physical address bits
/// the IPA space is 39 bits, walked from level 1 (the partition's memory and
/// devices must lie below 512 GiB there, or the stage 2 refuses them).
fn geometry() -> (u8, u8) {
    let pa = guest::pa_bits();
    match smmu::pgtable::stage2_start(pa, pa) {
        Some((level, 1)) => (pa, level),
        _ => (39, 1),
    }
}
