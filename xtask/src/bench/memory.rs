//! Memory figures computed on the host: the kernel image's sections (from
//! the ELF), the stream table in both formats for the platform's SIDSIZE,
//! and each partition's SMMU translation tables against the minimum for its
//! regions — the last two with the `smmu` crate's own code over a host
//! [`DmaMemory`].

use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS};
use object::read::elf::SectionHeader;
use smmu::hal::{DmaMemory, DmaRegion};
use smmu::pgtable::{PageTable, Stage};
use smmu::strtab::{Format, StreamTable, L2_STES, SPLIT};
use smmu::{Features, Iova, PhysAddr, Prot};
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

// ---------------------------------------------------------------------------
// ELF sections.
// ---------------------------------------------------------------------------

/// The kernel image's footprint by kind of section, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageSizes {
    /// Executable sections.
    pub text: u64,
    /// Read-only data (rodata, relocated pointers, relocations, unwind tables).
    pub rodata: u64,
    /// Initialised writable data.
    pub data: u64,
    /// Zero-initialised data `_start` clears (`.bss`).
    pub bss: u64,
    /// Memory `_start` does not clear (`.noinit`: the identity map's table
    /// pool and the early SMMU arena, zeroed piece by piece as taken).
    pub noinit: u64,
    /// The boot stack and its guard page (`.stack`).
    pub stack: u64,
}

/// Sums the allocated sections of a little-endian ELF64 by kind.
pub fn image_sizes(elf: &[u8]) -> Result<ImageSizes, String> {
    let file = bulkhead_tests::image::parse_elf(elf)?;
    let (e, sections) = (file.endian(), file.elf_section_table());
    let mut out = ImageSizes::default();
    for sh in sections.iter() {
        let flags = sh.sh_flags(e);
        if flags & u64::from(SHF_ALLOC) == 0 {
            continue;
        }
        let name = sections.section_name(e, sh).map_err(|err| format!("section name: {err}"))?;
        let slot = match name {
            b".stack" => &mut out.stack,
            b".noinit" => &mut out.noinit,
            _ if sh.sh_type(e) == SHT_NOBITS => &mut out.bss,
            _ if flags & u64::from(SHF_EXECINSTR) != 0 => &mut out.text,
            _ if flags & u64::from(SHF_WRITE) != 0 && !matches!(name, b".data.rel.ro" | b".got") => &mut out.data,
            _ => &mut out.rodata,
        };
        *slot += sh.sh_size(e);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// A host DmaMemory for the smmu crate's table code.
// ---------------------------------------------------------------------------

/// Host memory standing in for the kernel's frame allocator: fake physical
/// addresses (so tables point at plausible addresses below the output
/// size), real host memory behind them.
pub struct HostDma {
    next: u64,
    live: BTreeMap<u64, (NonNull<u8>, Layout)>,
    /// Bytes currently allocated.
    pub bytes: usize,
}

impl HostDma {
    /// An empty allocator handing out physical addresses from 1 GiB up.
    pub fn new() -> HostDma {
        HostDma { next: 0x4000_0000, live: BTreeMap::new(), bytes: 0 }
    }
}

impl Drop for HostDma {
    fn drop(&mut self) {
        for (_, (p, l)) in std::mem::take(&mut self.live) {
            // SAFETY: allocated by `alloc` with this layout, freed once.
            unsafe { std::alloc::dealloc(p.as_ptr(), l) };
        }
    }
}

fn host_region(phys: u64, virt: NonNull<u8>, len: usize) -> DmaRegion {
    // SAFETY: `virt` points at `len` bytes of a live allocation of this
    // allocator (callers check), which nothing else accesses while the
    // driver code uses the region.
    unsafe { DmaRegion::new(PhysAddr(phys), virt, len) }
}

impl DmaMemory for HostDma {
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion> {
        let layout = Layout::from_size_align(size.max(8), align.max(8)).ok()?;
        // SAFETY: non-zero size.
        let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        let phys = self.next.next_multiple_of(align.max(8) as u64);
        self.next = phys + size as u64;
        self.live.insert(phys, (p, layout));
        self.bytes += size;
        Some(host_region(phys, p, size))
    }

    fn free(&mut self, region: DmaRegion) {
        if let Some((p, l)) = self.live.remove(&region.phys().as_u64()) {
            self.bytes -= region.len();
            // SAFETY: allocated by `alloc` with this layout, removed from
            // `live`, so freed once.
            unsafe { std::alloc::dealloc(p.as_ptr(), l) };
        }
    }

    fn region(&self, phys: PhysAddr, len: usize) -> Option<DmaRegion> {
        let (&start, &(p, l)) = self.live.range(..=phys.as_u64()).next_back()?;
        let off = (phys.as_u64() - start) as usize;
        if off.checked_add(len)? > l.size() {
            return None;
        }
        // SAFETY: `off + len` lies inside the allocation (checked above).
        let virt = unsafe { NonNull::new_unchecked(p.as_ptr().add(off)) };
        Some(host_region(phys.as_u64(), virt, len))
    }

    fn publish(&mut self, _: &DmaRegion, _: usize, _: usize, _: bool) {}
    fn acquire(&mut self, _: &DmaRegion, _: usize, _: usize, _: bool) {}
    fn release(&mut self) {}
}

/// The features of QEMU 10's `virt` SMMUv3 (QEMU-FACTS.md: IDR0 0x0d44101b,
/// OAS 44 bits, 4 KiB granule, two-level stream tables), with `sid_bits`.
pub fn qemu_features(sid_bits: u8) -> Features {
    let mut f = Features::from_regs([0x0d44_101b, 0, 0, 0, 0, 0], 0, 1);
    f.sid_bits = sid_bits;
    f.oas_bits = 44;
    f.oas_field = 4;
    f.gran4k = true;
    f
}

/// Stream-table bytes for `sid_bits` in each format, as the driver
/// allocates them: linear (every STE), and two-level (the level-1 table
/// plus one level-2 table per 2^SPLIT StreamIDs that holds an attached
/// stream, `attached` being those StreamIDs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTableBytes {
    /// One array of STEs.
    pub linear: usize,
    /// The level-1 descriptors alone.
    pub two_level_l1: usize,
    /// Level-2 tables for the attached StreamIDs.
    pub two_level_l2: usize,
}

impl StreamTableBytes {
    /// Total of the two-level layout.
    pub fn two_level(&self) -> usize {
        self.two_level_l1 + self.two_level_l2
    }
}

/// Builds both stream tables with the driver's `StreamTable::new`.
pub fn stream_tables(sid_bits: u8, attached: &[u32]) -> Result<StreamTableBytes, String> {
    let size = |two_level: bool| -> Result<(usize, Format), String> {
        let mut f = qemu_features(sid_bits);
        f.two_level_strtab = two_level;
        let mut dma = HostDma::new();
        let t = StreamTable::new(&mut dma, &f, sid_bits, true).map_err(|e| format!("stream table: {e:?}"))?;
        Ok((dma.bytes, t.format()))
    };
    let (linear, lf) = size(false)?;
    let (l1, tf) = size(true)?;
    if lf != Format::Linear || (sid_bits > SPLIT && tf != Format::TwoLevel) {
        return Err(format!("unexpected stream table formats {lf:?} / {tf:?}"));
    }
    let mut spans: Vec<u32> = attached.iter().map(|s| s >> SPLIT).collect();
    spans.sort_unstable();
    spans.dedup();
    let l2 = if tf == Format::TwoLevel { spans.len() * L2_STES * smmu::ste::STE_SIZE } else { 0 };
    Ok(StreamTableBytes { linear, two_level_l1: l1, two_level_l2: l2 })
}

/// Translation tables the driver builds for `regions` (identity, stage 2,
/// `input_bits` of IPA): (tables, the minimum with block mappings).
pub fn translation_tables(regions: &[(u64, u64)], input_bits: u8) -> Result<(usize, usize), String> {
    let f = qemu_features(16);
    let mut dma = HostDma::new();
    let mut pt = PageTable::new(&mut dma, &f, Stage::Stage2, input_bits, true).map_err(|e| format!("page table: {e:?}"))?;
    for &(base, size) in regions {
        pt.map(&mut dma, &f, Iova(base), PhysAddr(base), size, Prot::RAM_RW).map_err(|e| format!("map {base:#x}+{size:#x}: {e:?}"))?;
    }
    Ok((pt.tables(), minimum_tables(regions, input_bits)))
}

/// The fewest 4 KiB-granule tables that can map `regions` identity: each
/// region split greedily into the largest aligned blocks (1 GiB, 2 MiB) and
/// pages, then one table per distinct (level, span) those leaves sit in,
/// plus the root. Independent of the driver's table code.
pub fn minimum_tables(regions: &[(u64, u64)], input_bits: u8) -> usize {
    // Level k's entries map 2^(12 + 9 (3 - k)) bytes; the walk starts at
    // the level whose entries can cover the input size with one table.
    let entry_bits = |k: u32| 12 + 9 * (3 - k);
    let start = (0..=3).rev().find(|&k| u32::from(input_bits) <= entry_bits(k) + 9).unwrap_or(0);
    let mut tables: std::collections::BTreeSet<(u32, u64)> = std::collections::BTreeSet::new();
    for &(base, size) in regions {
        let (mut a, end) = (base, base + size);
        while a < end {
            // The largest block level allowed (level 1 or 2 blocks, level 3 pages).
            let level = (1..=3)
                .filter(|&k| k >= start)
                .find(|&k| {
                    let s = 1u64 << entry_bits(k);
                    a % s == 0 && a + s <= end
                })
                .unwrap_or(3);
            // The tables at levels start+1 ..= level that hold this leaf.
            for k in start + 1..=level {
                tables.insert((k, a >> (entry_bits(k) + 9)));
            }
            a += 1u64 << entry_bits(level);
        }
    }
    1 + tables.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionFlags, SectionKind};

    #[test]
    fn image_sizes_by_kind_of_section() {
        let mut o = Object::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        let (x, w, a) = (u64::from(SHF_EXECINSTR), u64::from(SHF_WRITE), u64::from(SHF_ALLOC));
        for (name, sh_flags, size) in [
            (".text", x | a, 16),
            (".rodata", a, 8),
            (".data", w | a, 32),
            (".data.rel.ro", w | a, 4),
            (".got", w | a, 8),
            (".bss", w | a, 64),
            (".noinit", w | a, 128),
            (".stack", w | a, 4096),
            (".comment", 0, 100),
        ] {
            let bss = matches!(name, ".bss" | ".noinit" | ".stack");
            let id = o.add_section(Vec::new(), name.as_bytes().to_vec(), if bss { SectionKind::UninitializedData } else { SectionKind::Data });
            let section = o.section_mut(id);
            section.flags = SectionFlags::Elf { sh_flags };
            if bss {
                section.append_bss(size, 8);
            } else {
                section.set_data(vec![0u8; size as usize], 8);
            }
        }
        let elf = o.write().unwrap();
        let want = ImageSizes { text: 16, rodata: 8 + 4 + 8, data: 32, bss: 64, noinit: 128, stack: 4096 };
        assert_eq!(image_sizes(&elf), Ok(want));
        assert!(image_sizes(&elf[..40]).unwrap_err().contains("not a little-endian ELF64 file"));
    }

    #[test]
    fn minimum_tables_by_hand() {
        // 64 MiB at 0x4800_0000 (2 MiB aligned), 44-bit input: root (L0),
        // one L1, one L2 table, 32 blocks.
        assert_eq!(minimum_tables(&[(0x4800_0000, 64 << 20)], 44), 3);
        // A 4 KiB page more needs an L3 table.
        assert_eq!(minimum_tables(&[(0x4800_0000, (64 << 20) + 4096)], 44), 4);
        // 1 GiB aligned: an L1 block, no L2 table.
        assert_eq!(minimum_tables(&[(0x4000_0000, 1 << 30)], 44), 2);
        // 39-bit input starts at level 1.
        assert_eq!(minimum_tables(&[(0x4800_0000, 64 << 20)], 39), 2);
    }

    #[test]
    fn driver_uses_blocks_like_the_minimum() {
        let (t, min) = translation_tables(&[(0x4800_0000, 64 << 20), (0x5000_1000, 0x3000)], 44).unwrap();
        assert_eq!(min, 4); // root, L1, L2 (shared by both regions), one L3 for the pages
        assert_eq!(t, min);
    }

    #[test]
    fn stream_tables_of_16_bits() {
        let b = stream_tables(16, &[0x8, 0x10, 0x100]).unwrap();
        assert_eq!(b.linear, 64 << 16);
        assert_eq!(b.two_level_l1, 8 << 8);
        assert_eq!(b.two_level_l2, 2 * 256 * 64);
    }
}
