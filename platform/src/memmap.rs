//! The physical memory map: RAM from the device tree minus everything that
//! is already spoken for (the kernel image, the DTB, `/memreserve/`,
//! `/reserved-memory`). Pure arithmetic, tested on the host.

use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// Most RAM banks / reservations / free ranges the map tracks.
pub const MAX_REGIONS: usize = 32;

/// Why a range of RAM is not free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The bulkhead image (text, data, bss, stack).
    Kernel,
    /// The flattened device tree the loader passed.
    Dtb,
    /// A `/memreserve/` entry of the DTB header.
    MemReserve,
    /// A `/reserved-memory` child node.
    ReservedMemory,
    /// Taken by the kernel heap.
    Heap,
    /// Anything a later stage reserves (partition memory, images).
    Other,
}

impl defmt::Format for Reservation {
    fn format(&self, f: defmt::Formatter) {
        let s = match self {
            Reservation::Kernel => "kernel",
            Reservation::Dtb => "dtb",
            Reservation::MemReserve => "memreserve",
            Reservation::ReservedMemory => "reserved-memory",
            Reservation::Heap => "heap",
            Reservation::Other => "other",
        };
        defmt::write!(f, "{=str}", s)
    }
}

/// Errors building the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// More RAM banks or reservations than [`MAX_REGIONS`].
    TooManyRegions,
    /// The device tree describes no RAM at all.
    NoMemory,
}

/// RAM banks, reservations and the free ranges left.
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    ram: ArrayVec<PhysRange, MAX_REGIONS>,
    reserved: ArrayVec<(PhysRange, Reservation), MAX_REGIONS>,
    free: ArrayVec<PhysRange, MAX_REGIONS>,
}

impl MemoryMap {
    /// A map of the given RAM banks with nothing reserved yet. Banks are
    /// sorted and overlapping or touching banks merged.
    pub fn new(banks: impl IntoIterator<Item = PhysRange>) -> Result<Self, MemMapError> {
        let mut ram: ArrayVec<PhysRange, MAX_REGIONS> = ArrayVec::new();
        for b in banks.into_iter().filter(|b| !b.is_empty()) {
            ram.try_push(b).map_err(|_| MemMapError::TooManyRegions)?;
        }
        if ram.is_empty() {
            return Err(MemMapError::NoMemory);
        }
        ram.sort_unstable();
        let mut merged: ArrayVec<PhysRange, MAX_REGIONS> = ArrayVec::new();
        for b in ram {
            match merged.last_mut() {
                Some(last) if b.start <= last.end => {
                    if b.end > last.end {
                        last.end = b.end;
                    }
                }
                _ => merged.push(b),
            }
        }
        Ok(MemoryMap { free: merged.clone(), ram: merged, reserved: ArrayVec::new() })
    }

    /// Marks `range` as used for `why`. Parts outside RAM are recorded but
    /// change nothing free.
    pub fn reserve(&mut self, range: PhysRange, why: Reservation) -> Result<(), MemMapError> {
        if range.is_empty() {
            return Ok(());
        }
        self.reserved.try_push((range, why)).map_err(|_| MemMapError::TooManyRegions)?;
        let mut next: ArrayVec<PhysRange, MAX_REGIONS> = ArrayVec::new();
        for f in &self.free {
            if !f.overlaps(&range) {
                next.try_push(*f).map_err(|_| MemMapError::TooManyRegions)?;
                continue;
            }
            let below = PhysRange::from_bounds(f.start.0, range.start.0);
            let above = PhysRange::from_bounds(range.end.0, f.end.0);
            for part in [below, above] {
                if !part.is_empty() {
                    next.try_push(part).map_err(|_| MemMapError::TooManyRegions)?;
                }
            }
        }
        self.free = next;
        Ok(())
    }

    /// Takes `size` bytes aligned to `align` from the end of the largest free
    /// range and reserves them for `why`.
    pub fn take(&mut self, size: u64, align: u64, why: Reservation) -> Option<PhysRange> {
        let best = self.free.iter().copied().max_by_key(|r| r.shrink_to(align).size())?;
        let usable = best.shrink_to(align);
        if usable.size() < size {
            return None;
        }
        let start = (usable.end.0 - size) & !(align - 1);
        let r = PhysRange::new(start, size)?;
        self.reserve(r, why).ok()?;
        Some(r)
    }

    /// Reserves exactly `range` for `why` if all of it is free RAM.
    pub fn take_at(&mut self, range: PhysRange, why: Reservation) -> Option<PhysRange> {
        if !self.free.iter().any(|f| f.covers(&range)) {
            return None;
        }
        self.reserve(range, why).ok()?;
        Some(range)
    }

    /// RAM banks, sorted and merged.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram
    }
    /// Reservations in the order they were made.
    pub fn reserved(&self) -> &[(PhysRange, Reservation)] {
        &self.reserved
    }
    /// What is still free, sorted.
    pub fn free(&self) -> &[PhysRange] {
        &self.free
    }
    /// Total RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(PhysRange::size).sum()
    }
    /// Whether `r` lies entirely inside one RAM bank.
    pub fn is_ram(&self, r: &PhysRange) -> bool {
        self.ram.iter().any(|b| b.covers(r))
    }
}

/// Grows every range to `align`, sorts them and merges the ones that
/// overlap or touch: the page-granular cover the MMU maps.
pub fn coalesce<const N: usize>(ranges: &[PhysRange], align: u64) -> ArrayVec<PhysRange, N> {
    let mut v: ArrayVec<PhysRange, N> = ArrayVec::new();
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        if v.try_push(r.grow_to(align)).is_err() {
            break;
        }
    }
    v.sort_unstable();
    let mut out: ArrayVec<PhysRange, N> = ArrayVec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> PhysRange {
        PhysRange::from_bounds(s, e)
    }

    #[test]
    fn banks_merge_and_sort() {
        let m = MemoryMap::new([r(0x2000, 0x3000), r(0x1000, 0x2000), r(0x8000, 0x9000)]).unwrap();
        assert_eq!(m.ram(), &[r(0x1000, 0x3000), r(0x8000, 0x9000)]);
        assert_eq!(m.ram_bytes(), 0x3000);
    }

    #[test]
    fn no_ram_is_an_error() {
        assert_eq!(MemoryMap::new([]).unwrap_err(), MemMapError::NoMemory);
        assert_eq!(MemoryMap::new([r(5, 5)]).unwrap_err(), MemMapError::NoMemory);
    }

    #[test]
    fn reservations_split_free_ranges() {
        let mut m = MemoryMap::new([r(0x4000_0000, 0xc000_0000)]).unwrap();
        m.reserve(r(0x4000_0000, 0x4010_0000), Reservation::Dtb).unwrap();
        m.reserve(r(0x4020_0000, 0x4030_0000), Reservation::Kernel).unwrap();
        m.reserve(r(0xbff0_0000, 0xc100_0000), Reservation::ReservedMemory).unwrap();
        assert_eq!(
            m.free(),
            &[r(0x4010_0000, 0x4020_0000), r(0x4030_0000, 0xbff0_0000)]
        );
        assert_eq!(m.reserved().len(), 3);
    }

    #[test]
    fn reservation_outside_ram_changes_nothing_free() {
        let mut m = MemoryMap::new([r(0x1000, 0x2000)]).unwrap();
        m.reserve(r(0x9000, 0xa000), Reservation::MemReserve).unwrap();
        assert_eq!(m.free(), &[r(0x1000, 0x2000)]);
    }

    #[test]
    fn coalesce_merges_ranges_sharing_a_page() {
        let v: ArrayVec<PhysRange, 8> =
            coalesce(&[r(0xa000200, 0xa000400), r(0xa000000, 0xa000200), r(0x900_0000, 0x900_1000), r(5, 5)], 0x1000);
        assert_eq!(v.as_slice(), &[r(0x900_0000, 0x900_1000), r(0xa00_0000, 0xa00_1000)]);
    }

    #[test]
    fn take_is_aligned_and_reserved() {
        let mut m = MemoryMap::new([r(0x1000, 0x10_0000), r(0x20_0000, 0x80_0000)]).unwrap();
        let t = m.take(0x10_0000, 0x20_0000, Reservation::Heap).unwrap();
        assert!(t.start.is_aligned(0x20_0000));
        assert_eq!(t.size(), 0x10_0000);
        assert!(m.free().iter().all(|f| !f.overlaps(&t)));
        assert!(m.take(0x100_0000, 0x1000, Reservation::Heap).is_none());
        assert_eq!(m.take_at(r(0x1000, 0x2000), Reservation::Heap), Some(r(0x1000, 0x2000)));
        assert_eq!(m.take_at(r(0x1000, 0x2000), Reservation::Heap), None, "already taken");
        assert_eq!(m.take_at(r(0x90_0000, 0x91_0000), Reservation::Heap), None, "not RAM");
    }
}
