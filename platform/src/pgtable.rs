//! Identity maps (VMSAv8-64, 4 KiB granule, 48-bit input): the EL2 stage-1
//! map of the kernel, and the stage-2 maps of partitions' CPUs (a
//! partition's IPA equals the PA of its memory).
//!
//! The kernel's map is built once at boot from the device tree: RAM as
//! Normal write-back, device windows as Device-nGnRE, the image's sections
//! with W^X. Tables come from a pool because the map exists before the heap
//! does. Pure code: the CPU registers that switch it on live in `arch`.
//!
//! Descriptor layout: Arm ARM D8.3 (translation table descriptor formats);
//! AP/XN for a one-privilege-level regime: D8.4 (EL2 with HCR_EL2.E2H=0).

use crate::{PhysAddr, PhysRange};

/// Translation granule.
pub const PAGE_SIZE: u64 = 4096;
/// Entries per table.
const ENTRIES: usize = 512;
/// Input address bits (TCR_EL2.T0SZ = 64 - 48).
pub const VA_BITS: u32 = 48;

const DESC_VALID: u64 = 1 << 0;
/// Levels 0–2: table descriptor; level 3: page descriptor.
const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_INDX_SHIFT: u32 = 2;
/// AP[1] is RES1 in a one-privilege-level regime.
const AP_RES1: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_RO: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN for a one-privilege-level regime (bit 54).
const XN: u64 = 1 << 54;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Stage 2 MemAttr[3:0] (bits 5:2): Normal outer/inner write-back.
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// Stage 2 MemAttr: Device-nGnRE.
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
/// Stage 2 S2AP (bits 7:6): read.
const S2AP_READ: u64 = 1 << 6;
/// Stage 2 S2AP: write.
const S2AP_WRITE: u64 = 1 << 7;
/// Stage 2 XN[1] (bit 54): not executable at EL1 or EL0.
const S2_XN: u64 = 1 << 54;

/// MAIR index of Device-nGnRE.
pub const MAIR_IDX_DEVICE: u64 = 0;
/// MAIR index of Normal inner/outer write-back, read/write-allocate.
pub const MAIR_IDX_NORMAL: u64 = 1;
/// MAIR_EL2 value matching the two indices above.
pub const MAIR_VALUE: u64 = 0x04 | (0xff << 8);

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal, write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

/// Access rights of a mapping. Writable and executable together is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only data.
    ReadOnly,
    /// Read-write data (never executable).
    ReadWrite,
    /// Read-only, executable code.
    Execute,
}

/// What can go wrong building the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Range not 4 KiB aligned.
    Unaligned(PhysRange),
    /// Range beyond the input space (48 bits, or a stage 2's IPA size).
    OutOfRange(PhysRange),
    /// Part of the range is already mapped.
    Overlap(PhysRange),
    /// The fixed table pool is exhausted.
    OutOfTables,
}

impl defmt::Format for MapError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            MapError::Unaligned(r) => defmt::write!(f, "range {} is not page aligned", r),
            MapError::OutOfRange(r) => defmt::write!(f, "range {} is beyond the map's input address space", r),
            MapError::Overlap(r) => defmt::write!(f, "range {} overlaps an existing mapping", r),
            MapError::OutOfTables => defmt::write!(f, "page-table pool exhausted"),
        }
    }
}

/// One 4 KiB translation table.
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

impl Table {
    /// An all-invalid table.
    pub const EMPTY: Table = Table([0; ENTRIES]);
}

/// Which translation regime the descriptors are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// EL2 stage 1 (one privilege level), attributes through MAIR_EL2.
    El2Stage1,
    /// Stage 2 of the EL1&0 regime, attributes in the descriptor.
    Stage2,
}

/// An identity map under construction over a pool of tables whose first
/// table is the level-0 root.
pub struct IdentityMap<'p> {
    format: Format,
    pool: &'p mut [Table],
    /// Physical address of `pool[0]` (the kernel runs identity-mapped; tests
    /// use any base).
    pool_pa: u64,
    used: usize,
    /// Addresses mapped stay below `1 << input_bits`.
    input_bits: u32,
}

fn level_shift(level: usize) -> u32 {
    39 - 9 * level as u32
}

impl<'p> IdentityMap<'p> {
    /// Starts an empty EL2 stage-1 map; `pool_pa` is where `pool` sits physically.
    pub fn new(pool: &'p mut [Table], pool_pa: PhysAddr) -> Result<Self, MapError> {
        Self::with_format(Format::El2Stage1, pool, pool_pa)
    }

    /// Starts an empty map of the given format.
    pub fn with_format(format: Format, pool: &'p mut [Table], pool_pa: PhysAddr) -> Result<Self, MapError> {
        let root = pool.first_mut().ok_or(MapError::OutOfTables)?;
        root.0 = [0; ENTRIES];
        Ok(IdentityMap { format, pool, pool_pa: pool_pa.0, used: 1, input_bits: VA_BITS })
    }

    /// Starts an empty stage-2 map of an IPA space of `input_bits` (at most
    /// 48); with 39 bits or fewer the walk can start at level 1, at
    /// [`root_at`](Self::root_at)`(1)`.
    pub fn stage2(pool: &'p mut [Table], pool_pa: PhysAddr, input_bits: u32) -> Result<Self, MapError> {
        let mut m = Self::with_format(Format::Stage2, pool, pool_pa)?;
        m.input_bits = input_bits.min(VA_BITS);
        Ok(m)
    }

    /// Continues editing a map built earlier over the same pool, of which
    /// `used` tables are taken, for an input space of `input_bits`.
    pub fn resume(format: Format, pool: &'p mut [Table], pool_pa: PhysAddr, used: usize, input_bits: u32) -> Result<Self, MapError> {
        if used == 0 || used > pool.len() {
            return Err(MapError::OutOfTables);
        }
        Ok(IdentityMap { format, pool, pool_pa: pool_pa.0, used, input_bits: input_bits.min(VA_BITS) })
    }

    /// The table a walk starting at `level` (0 or 1) uses as its root: the
    /// level-0 table, or the level-1 table covering the first 512 GiB
    /// (taken from the pool, empty, if nothing is mapped yet). Level 1 needs
    /// an input space of at most 39 bits; `None` otherwise, or when the
    /// pool is exhausted.
    pub fn root_at(&mut self, level: u8) -> Option<PhysAddr> {
        match level {
            0 => Some(self.root()),
            1 if self.input_bits <= level_shift(0) => {
                let desc = self.pool[0].0[0];
                if desc & DESC_VALID == 0 {
                    let n = self.used;
                    self.pool.get_mut(n)?.0 = [0; ENTRIES];
                    self.used += 1;
                    self.pool[0].0[0] = (self.pool_pa + n as u64 * PAGE_SIZE) | DESC_TABLE_OR_PAGE | DESC_VALID;
                }
                Some(PhysAddr(self.pool[0].0[0] & OA_MASK))
            }
            _ => None,
        }
    }

    /// Removes the mapping of `range`, which must consist of whole leaf
    /// entries (pages or blocks entirely inside it); tables stay in the pool.
    /// Unmapped parts are skipped. The caller invalidates the TLBs.
    pub fn unmap(&mut self, range: PhysRange) -> Result<(), MapError> {
        if !range.start.is_aligned(PAGE_SIZE) || !range.end.is_aligned(PAGE_SIZE) {
            return Err(MapError::Unaligned(range));
        }
        let mut va = range.start.0;
        while va < range.end.0 {
            let mut table = 0usize;
            let mut level = 0;
            loop {
                let shift = level_shift(level);
                let idx = ((va >> shift) & 511) as usize;
                let desc = self.pool[table].0[idx];
                let span = 1u64 << shift;
                if desc & DESC_VALID == 0 {
                    va = (va & !(span - 1)) + span;
                    break;
                }
                if level == 3 || desc & DESC_TABLE_OR_PAGE == 0 {
                    let start = va & !(span - 1);
                    if start < range.start.0 || start + span > range.end.0 {
                        return Err(MapError::Overlap(PhysRange::from_bounds(start, start + span)));
                    }
                    self.pool[table].0[idx] = 0;
                    va = start + span;
                    break;
                }
                table = (((desc & OA_MASK) - self.pool_pa) / PAGE_SIZE) as usize;
                level += 1;
            }
        }
        Ok(())
    }

    fn leaf_attrs(&self, ty: MemType, access: Access) -> u64 {
        match self.format {
            Format::El2Stage1 => {
                let idx = match ty {
                    MemType::Normal => MAIR_IDX_NORMAL,
                    MemType::Device => MAIR_IDX_DEVICE,
                };
                let mut a = AF | (idx << ATTR_INDX_SHIFT) | AP_RES1;
                if ty == MemType::Normal {
                    a |= SH_INNER;
                }
                match access {
                    Access::ReadOnly => a |= AP_RO | XN,
                    Access::ReadWrite => a |= XN,
                    Access::Execute => a |= AP_RO,
                }
                if ty == MemType::Device {
                    a |= XN;
                }
                a
            }
            Format::Stage2 => {
                // A partition's RAM must stay executable for its own code;
                // write and execute are controlled by its own stage 1.
                let mut a = AF | S2AP_READ;
                a |= match ty {
                    MemType::Normal => S2_MEMATTR_NORMAL_WB | SH_INNER,
                    MemType::Device => S2_MEMATTR_DEVICE_NGNRE | S2_XN,
                };
                match access {
                    Access::ReadOnly => a | S2_XN,
                    Access::ReadWrite | Access::Execute => a | S2AP_WRITE,
                }
            }
        }
    }

    /// Physical address of the root table (for TTBR0_EL2).
    pub fn root(&self) -> PhysAddr {
        PhysAddr(self.pool_pa)
    }

    /// Tables taken from the pool so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// Maps `range` to itself with the largest blocks that fit.
    pub fn map(&mut self, range: PhysRange, ty: MemType, access: Access) -> Result<(), MapError> {
        if !range.start.is_aligned(PAGE_SIZE) || !range.end.is_aligned(PAGE_SIZE) {
            return Err(MapError::Unaligned(range));
        }
        if range.end.0 > 1 << self.input_bits {
            return Err(MapError::OutOfRange(range));
        }
        if range.is_empty() {
            return Ok(());
        }
        let attrs = self.leaf_attrs(ty, access);
        self.map_level(0, 0, range.start.0, range.end.0, attrs)
    }

    fn map_level(&mut self, table: usize, level: usize, start: u64, end: u64, attrs: u64) -> Result<(), MapError> {
        let shift = level_shift(level);
        let span = 1u64 << shift;
        let mut va = start;
        while va < end {
            let idx = ((va >> shift) & (ENTRIES as u64 - 1)) as usize;
            let entry_start = va & !(span - 1);
            let entry_end = entry_start + span;
            let chunk_end = end.min(entry_end);
            let desc = self.pool[table].0[idx];
            let whole = va == entry_start && chunk_end == entry_end;
            let is_table = level < 3 && desc & (DESC_VALID | DESC_TABLE_OR_PAGE) == DESC_VALID | DESC_TABLE_OR_PAGE;
            if whole && level >= 1 && !is_table {
                if desc & DESC_VALID != 0 {
                    return Err(MapError::Overlap(PhysRange::from_bounds(va, chunk_end)));
                }
                let kind = if level == 3 { DESC_TABLE_OR_PAGE } else { 0 };
                self.pool[table].0[idx] = (va & OA_MASK) | attrs | kind | DESC_VALID;
            } else {
                let next = if desc & DESC_VALID == 0 {
                    let n = self.used;
                    let t = self.pool.get_mut(n).ok_or(MapError::OutOfTables)?;
                    t.0 = [0; ENTRIES];
                    self.used += 1;
                    self.pool[table].0[idx] = (self.pool_pa + n as u64 * PAGE_SIZE) | DESC_TABLE_OR_PAGE | DESC_VALID;
                    n
                } else if desc & DESC_TABLE_OR_PAGE == 0 {
                    return Err(MapError::Overlap(PhysRange::from_bounds(va, chunk_end)));
                } else {
                    (((desc & OA_MASK) - self.pool_pa) / PAGE_SIZE) as usize
                };
                self.map_level(next, level + 1, va, chunk_end, attrs)?;
            }
            va = chunk_end;
        }
        Ok(())
    }

    /// Walks the map like the MMU would: the output address, memory type
    /// and access for `va`, or `None` for a translation fault.
    pub fn translate(&self, va: u64) -> Option<(PhysAddr, MemType, Access)> {
        let mut table = 0usize;
        for level in 0..4 {
            let shift = level_shift(level);
            let desc = self.pool[table].0[((va >> shift) & 511) as usize];
            if desc & DESC_VALID == 0 {
                return None;
            }
            let leaf = level == 3 || desc & DESC_TABLE_OR_PAGE == 0;
            if leaf {
                let off = va & ((1u64 << shift) - 1);
                let (ty, access) = match self.format {
                    Format::El2Stage1 => (
                        if (desc >> ATTR_INDX_SHIFT) & 7 == MAIR_IDX_NORMAL { MemType::Normal } else { MemType::Device },
                        match (desc & AP_RO != 0, desc & XN != 0) {
                            (true, true) => Access::ReadOnly,
                            (false, _) => Access::ReadWrite,
                            (true, false) => Access::Execute,
                        },
                    ),
                    Format::Stage2 => (
                        if desc & (0b1100 << 2) != 0 { MemType::Normal } else { MemType::Device },
                        if desc & S2AP_WRITE != 0 { Access::ReadWrite } else { Access::ReadOnly },
                    ),
                };
                return Some((PhysAddr((desc & OA_MASK & !((1u64 << shift) - 1)) | off), ty, access));
            }
            table = (((desc & OA_MASK) - self.pool_pa) / PAGE_SIZE) as usize;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::boxed::Box;
    use std::vec::Vec;

    fn pool(n: usize) -> Box<[Table]> {
        (0..n).map(|_| Table::EMPTY).collect::<Vec<_>>().into_boxed_slice()
    }
    fn r(s: u64, e: u64) -> PhysRange {
        PhysRange::from_bounds(s, e)
    }

    #[test]
    fn uses_blocks_and_pages_as_alignment_allows() {
        let mut p = pool(16);
        let mut m = IdentityMap::new(&mut p, PhysAddr(0x1000_0000)).unwrap();
        // 2 GiB of RAM at 1 GiB: two 1 GiB blocks, one L1 table under the root.
        m.map(r(0x4000_0000, 0xc000_0000), MemType::Normal, Access::ReadWrite).unwrap();
        assert_eq!(m.tables_used(), 2);
        // A UART page: L1 -> L2 -> L3 tables.
        m.map(r(0x900_0000, 0x900_1000), MemType::Device, Access::ReadWrite).unwrap();
        assert_eq!(m.tables_used(), 4);
        assert_eq!(m.translate(0x4123_4567), Some((PhysAddr(0x4123_4567), MemType::Normal, Access::ReadWrite)));
        assert_eq!(m.translate(0x900_0ff8), Some((PhysAddr(0x900_0ff8), MemType::Device, Access::ReadWrite)));
        assert_eq!(m.translate(0x900_1000), None);
        assert_eq!(m.translate(0xc000_0000), None);
    }

    #[test]
    fn w_xor_x_and_overlap_refused() {
        let mut p = pool(16);
        let mut m = IdentityMap::new(&mut p, PhysAddr(0x1000_0000)).unwrap();
        m.map(r(0x4020_0000, 0x4021_0000), MemType::Normal, Access::Execute).unwrap();
        m.map(r(0x4021_0000, 0x4022_0000), MemType::Normal, Access::ReadOnly).unwrap();
        assert_eq!(m.translate(0x4020_0004).unwrap().2, Access::Execute);
        assert_eq!(m.translate(0x4021_0004).unwrap().2, Access::ReadOnly);
        assert_eq!(m.map(r(0x4000_0000, 0x8000_0000), MemType::Normal, Access::ReadWrite), Err(MapError::Overlap(r(0x4020_0000, 0x4020_1000))));
        assert!(matches!(m.map(r(0x4020_0800, 0x4021_0000), MemType::Normal, Access::ReadWrite), Err(MapError::Unaligned(_))));
        assert!(matches!(m.map(r(0, 1 << 49), MemType::Device, Access::ReadWrite), Err(MapError::OutOfRange(_))));
    }

    #[test]
    fn stage2_maps_partition_ram_executable_and_devices_not() {
        let mut p = pool(8);
        let mut m = IdentityMap::with_format(Format::Stage2, &mut p, PhysAddr(0x1000_0000)).unwrap();
        m.map(r(0x4800_0000, 0x4c00_0000), MemType::Normal, Access::ReadWrite).unwrap();
        m.map(r(0x1000_0000, 0x1000_1000), MemType::Device, Access::ReadWrite).unwrap();
        assert_eq!(m.translate(0x4800_1234), Some((PhysAddr(0x4800_1234), MemType::Normal, Access::ReadWrite)));
        assert_eq!(m.translate(0x1000_0010).map(|t| t.1), Some(MemType::Device));
        assert_eq!(m.translate(0x4c00_0000), None);
        // Leaf descriptor of the RAM block: S2AP=RW, MemAttr=WB, AF, no XN.
        let l2 = &m.pool[2].0[(0x4800_0000u64 >> 21 & 511) as usize];
        assert_eq!(l2 & (S2_XN | S2AP_READ | S2AP_WRITE | AF | (0xf << 2)), S2AP_READ | S2AP_WRITE | AF | (0xf << 2));
    }

    #[test]
    fn unmap_and_resume() {
        let mut p = pool(8);
        let (used, root) = {
            let mut m = IdentityMap::with_format(Format::Stage2, &mut p, PhysAddr(0x1000_0000)).unwrap();
            m.map(r(0x4800_0000, 0x4c00_0000), MemType::Normal, Access::ReadWrite).unwrap();
            m.map(r(0x1000_0000, 0x1010_0000), MemType::Device, Access::ReadWrite).unwrap();
            (m.tables_used(), m.root())
        };
        let mut m = IdentityMap::resume(Format::Stage2, &mut p, root, used, VA_BITS).unwrap();
        assert!(m.translate(0x1008_0000).is_some());
        m.unmap(r(0x1000_0000, 0x1010_0000)).unwrap();
        assert_eq!(m.translate(0x1008_0000), None);
        assert!(m.translate(0x4800_0000).is_some(), "RAM untouched");
        assert!(matches!(m.unmap(r(0x4800_0000, 0x4800_1000)), Err(MapError::Overlap(_))), "would split a block");
        m.map(r(0x1000_0000, 0x1010_0000), MemType::Device, Access::ReadWrite).unwrap();
        assert_eq!(m.tables_used(), used, "tables reused");
    }

    /// A CPU whose physical addresses are at most 42 bits may not start a
    /// stage-2 walk at level 0 (Arm ARM D8.2): its partitions get a 39-bit
    /// IPA space walked from the level-1 table.
    #[test]
    fn stage2_from_level_1() {
        let mut p = pool(8);
        let mut m = IdentityMap::stage2(&mut p, PhysAddr(0x1000_0000), 39).unwrap();
        assert_eq!(m.map(r(0x80_0000_0000, 0x80_0020_0000), MemType::Normal, Access::ReadWrite), Err(MapError::OutOfRange(r(0x80_0000_0000, 0x80_0020_0000))));
        m.map(r(0x4800_0000, 0x4c00_0000), MemType::Normal, Access::ReadWrite).unwrap();
        let l1 = m.root_at(1).unwrap();
        assert_eq!(l1, PhysAddr(m.pool[0].0[0] & OA_MASK), "the level-1 table under the root's first entry");
        assert_eq!(m.root_at(1), Some(l1), "the same each time");
        assert_eq!(m.root_at(0), Some(m.root()));
        // Nothing mapped yet: an empty level-1 table is taken.
        let mut q = pool(2);
        let mut e = IdentityMap::stage2(&mut q, PhysAddr(0x2000_0000), 36).unwrap();
        assert_eq!(e.root_at(1), Some(PhysAddr(0x2000_1000)));
        // A 48-bit stage 2 has no level-1 root.
        let mut w = pool(2);
        assert_eq!(IdentityMap::stage2(&mut w, PhysAddr(0), 48).unwrap().root_at(1), None);
    }

    #[test]
    fn pool_exhaustion_is_an_error() {
        let mut p = pool(2);
        let mut m = IdentityMap::new(&mut p, PhysAddr(0)).unwrap();
        assert_eq!(m.map(r(0x1000, 0x2000), MemType::Device, Access::ReadWrite), Err(MapError::OutOfTables));
    }

    #[test]
    fn high_pci_window_maps_with_gib_blocks() {
        let mut p = pool(8);
        let mut m = IdentityMap::new(&mut p, PhysAddr(0)).unwrap();
        m.map(r(0x80_0000_0000, 0x100_0000_0000), MemType::Device, Access::ReadWrite).unwrap();
        assert_eq!(m.tables_used(), 2);
        assert_eq!(m.translate(0xff_ffff_fff0).unwrap().1, MemType::Device);
    }
}
