//! The kernel heap and the frame allocator for DMA structures and tables.
//!
//! Both come out of the free RAM of the [`MemoryMap`]: the heap first (the
//! frame allocator's bookkeeping lives on it), then every remaining free
//! page goes to a buddy frame allocator, whose blocks are naturally aligned
//! to their size.

use crate::{PhysAddr, PhysRange};
use buddy_system_allocator::{LockedFrameAllocator, LockedHeap};
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use devicetree::memmap::MemoryMap;

/// Frame size.
pub const FRAME_SIZE: u64 = 4096;

/// The heap with a high-water mark (reported by `cargo xtask bench`).
pub struct TrackingHeap {
    heap: LockedHeap<32>,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

// SAFETY: delegates to the buddy heap, which upholds GlobalAlloc's contract;
// the counters do not affect allocation.
unsafe impl GlobalAlloc for TrackingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let now = self.in_use.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout (caller's contract).
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: TrackingHeap = TrackingHeap { heap: LockedHeap::empty(), in_use: AtomicUsize::new(0), peak: AtomicUsize::new(0) };

static FRAMES: LockedFrameAllocator<32> = LockedFrameAllocator::new();
/// Set once the frame allocator was given frames.
static HAS_FRAMES: AtomicBool = AtomicBool::new(false);

/// Gives `heap` (already reserved in the map) to the kernel heap. Call once,
/// with the MMU on.
pub fn init_heap(heap: PhysRange) {
    // SAFETY: `heap` is free RAM, identity-mapped read-write and reserved in
    // the memory map, so nothing else will use it.
    unsafe { HEAP.heap.lock().init(heap.start.0 as usize, heap.size() as usize) };
}

/// Gives every page still free in `map` to the frame allocator; returns the
/// bytes added. Call once, after everything else has been reserved.
pub fn init_frames(map: &MemoryMap) -> u64 {
    map.free().iter().map(|f| add_frames(*f)).sum()
}

/// Gives the whole pages of `r` (free RAM, reserved in the memory map for
/// this use) to the frame allocator; returns the bytes added.
pub fn add_frames(r: PhysRange) -> u64 {
    let f = r.shrink_to(FRAME_SIZE);
    if f.is_empty() {
        return 0;
    }
    FRAMES.lock().add_frame((f.start.0 / FRAME_SIZE) as usize, (f.end.0 / FRAME_SIZE) as usize);
    HAS_FRAMES.store(true, Ordering::Release);
    f.size()
}

/// Whether the frame allocator has been given frames. Before, nothing may
/// call [`alloc_zeroed`] (the boot's early code runs with the MMU off, where
/// the allocator's lock would need exclusive accesses to Device memory);
/// this is a plain load.
pub fn has_frames() -> bool {
    HAS_FRAMES.load(Ordering::Acquire)
}

/// Allocates `size` bytes of zeroed, physically contiguous memory aligned
/// to at least `align` and to its own size rounded up to a power of two.
pub fn alloc_zeroed(size: u64, align: u64) -> Option<PhysAddr> {
    let count = size.div_ceil(FRAME_SIZE).max(1) as usize;
    let align_frames = (align.div_ceil(FRAME_SIZE).max(1) as usize).next_power_of_two();
    let layout = Layout::from_size_align(count, align_frames).ok()?;
    let frame = FRAMES.lock().alloc_aligned(layout)?;
    let pa = PhysAddr(frame as u64 * FRAME_SIZE);
    let bytes = count.next_power_of_two().max(align_frames) as u64 * FRAME_SIZE;
    // SAFETY: the frames were free RAM, identity-mapped read-write, and are
    // now owned by the caller.
    unsafe { core::ptr::write_bytes(pa.0 as *mut u8, 0, bytes as usize) };
    Some(pa)
}

/// Returns memory from [`alloc_zeroed`] with the same `size` and `align`.
///
/// # Safety
/// `pa` must come from `alloc_zeroed(size, align)` and no longer be used by
/// anyone, hardware included.
pub unsafe fn free(pa: PhysAddr, size: u64, align: u64) {
    let count = size.div_ceil(FRAME_SIZE).max(1) as usize;
    let align_frames = (align.div_ceil(FRAME_SIZE).max(1) as usize).next_power_of_two();
    if let Ok(layout) = Layout::from_size_align(count, align_frames) {
        FRAMES.lock().dealloc_aligned((pa.0 / FRAME_SIZE) as usize, layout);
    }
}

/// Highest heap use so far, in bytes.
pub fn heap_peak() -> usize {
    HEAP.peak.load(Ordering::Relaxed)
}
