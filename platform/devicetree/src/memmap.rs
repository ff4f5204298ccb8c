//! The physical memory map: RAM from the device tree minus everything that
//! is already spoken for (the kernel image, the DTB, `/memreserve/`,
//! `/reserved-memory`, overlay blobs). Pure arithmetic, tested on the host;
//! [`boot_map`] is the boot's map, made from the [`Machine`] the same way
//! by the kernel and by the offline checker.

use crate::addr::PhysRange;
use crate::machine::Machine;
use arrayvec::ArrayVec;
use core::fmt;

/// The kernel heap's size.
pub const HEAP_SIZE: u64 = 16 << 20;
/// The heap's alignment (a 2 MiB block of the identity map).
pub const HEAP_ALIGN: u64 = 2 << 20;
/// The heap reservation's last bytes, given to the frame allocator before
/// the rest of free memory is known (see [`split_heap`]).
pub const EARLY_FRAMES: u64 = 1 << 20;
/// Reservations are whole pages.
pub const PAGE: u64 = 4096;

/// Most RAM banks / reservations / free ranges the map tracks.
pub const MAX_REGIONS: usize = 128;

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

#[cfg(feature = "defmt")]
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

/// Why the boot's memory map cannot be made; the kernel stops with
/// `cannot boot: {this}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootMapError {
    /// `/memory` describes no usable RAM.
    NoRam,
    /// More reservations than the map holds.
    TooManyReservations,
    /// Neither after the image nor anywhere else is there room for the heap.
    NoHeap,
    /// An overlay the kernel applied reserves memory the kernel already
    /// uses (image, heap).
    ReservedInUse(PhysRange),
}

impl fmt::Display for BootMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootMapError::NoRam => f.write_str("no usable RAM in /memory"),
            BootMapError::TooManyReservations => f.write_str("too many memory reservations"),
            BootMapError::NoHeap => f.write_str("no room for the kernel heap"),
            BootMapError::ReservedInUse(r) => write!(f, "an overlay reserves {r}, which the kernel already uses"),
        }
    }
}

/// The boot's memory map and where it put the heap.
#[derive(Clone, Debug)]
pub struct BootMap {
    /// RAM with every reservation below, and the heap, taken out.
    pub map: MemoryMap,
    /// The heap: [`HEAP_SIZE`] at the first [`HEAP_ALIGN`] boundary after the
    /// kernel image when free, else the largest free range's end; `None`
    /// when the image's place is not known (offline).
    pub heap: Option<PhysRange>,
}

/// The memory map boot makes before the heap exists: the machine's RAM
/// minus the kernel image and the DTB (where known), `/memreserve/`,
/// `/reserved-memory` and the overlay blobs `/chosen` names (all
/// page-rounded), then the heap placed after the image, so a configuration
/// knows where the kernel's memory ends.
pub fn boot_map(m: &Machine, kernel: Option<PhysRange>, dtb: Option<PhysRange>) -> Result<BootMap, BootMapError> {
    let mut map = MemoryMap::new(m.ram.iter().copied()).map_err(|_| BootMapError::NoRam)?;
    let too_many = |_| BootMapError::TooManyReservations;
    for (r, why) in kernel.map(|k| (k, Reservation::Kernel)).into_iter().chain(dtb.map(|d| (d.grow_to(PAGE), Reservation::Dtb))) {
        map.reserve(r, why).map_err(too_many)?;
    }
    for r in &m.memreserve {
        map.reserve(r.grow_to(PAGE), Reservation::MemReserve).map_err(too_many)?;
    }
    for r in &m.reserved {
        map.reserve(r.grow_to(PAGE), Reservation::ReservedMemory).map_err(too_many)?;
    }
    // Overlays the bootloader left for the kernel to apply: reserved before
    // the heap is placed, so nothing the kernel allocates overwrites them.
    for r in &m.overlays {
        map.reserve(r.grow_to(PAGE), Reservation::Dtb).map_err(too_many)?;
    }
    let heap = match kernel {
        Some(image) => {
            let after = PhysRange::new(image.end.0.next_multiple_of(HEAP_ALIGN), HEAP_SIZE);
            let heap = after
                .and_then(|h| map.take_at(h, Reservation::Heap))
                .or_else(|| map.take(HEAP_SIZE, HEAP_ALIGN, Reservation::Heap))
                .ok_or(BootMapError::NoHeap)?;
            Some(heap)
        }
        None => None,
    };
    Ok(BootMap { map, heap })
}

/// Splits the heap's reservation into the kernel heap proper and its last
/// [`EARLY_FRAMES`] bytes: frames for the SMMUs' stream tables and queues,
/// so they can be brought up (every stream aborting, SMMUEN=1) before
/// discovery and configuration decide what else is free. Both stay inside
/// the reservation validation checks partitions against.
pub fn split_heap(heap: PhysRange) -> (PhysRange, PhysRange) {
    let split = heap.end.0 - EARLY_FRAMES.min(heap.size() / 2);
    (PhysRange::from_bounds(heap.start.0, split), PhysRange::from_bounds(split, heap.end.0))
}

/// Reserves the `/reserved-memory` regions `reserved` (of the tree with
/// the `/chosen` overlays applied: [`Machine::reserved`] once complete)
/// that the map does not hold yet, so validation sees what an overlay
/// reserved; refuses one that overlaps `placed` (what the kernel already
/// occupies: image, heap).
pub fn reserve_merged(map: &mut MemoryMap, reserved: &[PhysRange], placed: &[PhysRange]) -> Result<(), BootMapError> {
    for &r in reserved {
        if placed.iter().any(|p| p.overlaps(&r)) {
            return Err(BootMapError::ReservedInUse(r));
        }
        let r = r.grow_to(PAGE);
        if !map.reserved().contains(&(r, Reservation::ReservedMemory)) {
            map.reserve(r, Reservation::ReservedMemory).map_err(|_| BootMapError::TooManyReservations)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PhysAddr;
    extern crate std;

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
        assert_eq!(m.free(), &[r(0x4010_0000, 0x4020_0000), r(0x4030_0000, 0xbff0_0000)]);
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
        let v: ArrayVec<PhysRange, 8> = coalesce(&[r(0xa000200, 0xa000400), r(0xa000000, 0xa000200), r(0x900_0000, 0x900_1000), r(5, 5)], 0x1000);
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

    const BOOT_DTS: &str = r#"/dts-v1/;
/memreserve/ 0x40000000 0x800;
/ { #address-cells = <2>; #size-cells = <2>;
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x20000000>; };
    reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
        fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000>; no-map; }; };
    chosen { bulkhead,overlays = <0x0 0x44000000 0x0 0x1000>; };
};"#;

    /// The boot's part of the machine `dts` describes.
    fn machine(dts: &str) -> Machine {
        let blob = crate::testutil::dtb(dts);
        Machine::boot(&crate::DeviceTree::parse(&blob).unwrap(), ArrayVec::new()).unwrap()
    }

    #[test]
    fn boot_map_reserves_in_boot_order_and_places_the_heap_after_the_image() {
        let m = machine(BOOT_DTS);
        let kernel = PhysRange::new(0x4020_0000, 0x12_3000).unwrap();
        let dtb = PhysRange::new(0x4000_1000, 0x80).unwrap();
        let b = boot_map(&m, Some(kernel), Some(dtb)).unwrap();
        let why: std::vec::Vec<Reservation> = b.map.reserved().iter().map(|(_, w)| *w).collect();
        use Reservation::*;
        assert_eq!(why, [Kernel, Dtb, MemReserve, ReservedMemory, Dtb, Heap]);
        assert_eq!(b.map.reserved()[1].0, PhysRange::new(0x4000_1000, 0x1000).unwrap(), "DTB page-rounded");
        assert_eq!(m.overlays.as_slice(), [PhysRange::new(0x4400_0000, 0x1000).unwrap()]);
        assert_eq!(b.heap, PhysRange::new(0x4040_0000, HEAP_SIZE), "first 2 MiB boundary after the image");
        // Offline, without the image's place: no heap.
        assert_eq!(boot_map(&m, None, None).unwrap().heap, None);
        // The heap goes elsewhere when the place after the image is taken.
        let late = PhysRange::new(0x5f00_0000, 0x10_0000).unwrap();
        let b = boot_map(&m, Some(late), None).unwrap();
        assert!(b.heap.is_some_and(|h| !h.overlaps(&late) && h.start.is_aligned(HEAP_ALIGN)));
    }

    #[test]
    fn the_heap_keeps_its_last_mib_for_early_frames() {
        let heap = PhysRange::new(0x4040_0000, HEAP_SIZE).unwrap();
        let (h, f) = split_heap(heap);
        assert_eq!((h.start, f.end), (heap.start, heap.end));
        assert_eq!((h.end, f.size()), (f.start, EARLY_FRAMES));
        assert!(f.start.is_aligned(EARLY_FRAMES), "naturally aligned for the frame allocator");
    }

    #[test]
    fn overlay_reservations_are_added_or_refused() {
        let kernel = PhysRange::new(0x4020_0000, 0x10_0000).unwrap();
        let mut b = boot_map(&machine(BOOT_DTS), Some(kernel), None).unwrap();
        let heap = b.heap.unwrap();
        let merged = machine(&BOOT_DTS.replace("no-map; };", "no-map; }; more@58000000 { reg = <0x0 0x58000000 0x0 0x1000>; };"));
        let before = b.map.reserved().len();
        reserve_merged(&mut b.map, &merged.reserved, &[kernel, heap]).unwrap();
        assert_eq!(b.map.reserved().len(), before + 1, "only the new region: {:?}", b.map.reserved());
        assert!(!b.map.free().iter().any(|f| f.contains(PhysAddr(0x5800_0000))));
        let clash = machine(&BOOT_DTS.replace("0x0 0x50000000 0x0 0x100000", "0x0 0x40400000 0x0 0x1000"));
        let e = reserve_merged(&mut b.map, &clash.reserved, &[kernel, heap]).unwrap_err();
        assert_eq!(std::format!("{e}"), "an overlay reserves [0x40400000..0x40401000), which the kernel already uses");
    }
}
