//! Memory for SMMU structures: the kernel's frame allocator (identity
//! mapped) behind `smmu::hal::DmaMemory`, with the platform's barriers —
//! and, before the frame allocator exists, a fixed arena in the image.
//!
//! The arena serves the SMMUs brought up right after the abort, with the
//! MMU still off and no heap: each SMMU's stream table (level 1) and
//! queues, which it keeps for good. It is bump-allocated by the boot CPU
//! alone, with plain loads and stores (no lock: exclusive accesses to
//! Device memory, which is all memory with the MMU off, need not work).

use alloc::collections::BTreeMap;
use arrayvec::ArrayVec;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use platform::arch::cache;
use platform::{PhysAddr, PhysRange};
use smmu::hal::{DmaMemory, DmaRegion};

/// Size of the early arena: two SMMUs at the default sizes (a 2 KiB level-1
/// stream table for 16-bit StreamIDs, a 4 KiB command queue and a 32 KiB
/// event queue each, naturally aligned). An SMMU that does not fit is
/// brought up once the frame allocator exists, aborting until then.
const ARENA_SIZE: usize = 128 << 10;

/// Allocations one SMMU makes from the arena (stream table, two queues).
const ARENA_ALLOCS: usize = 4;

/// The early arena. Not cleared by `_start` (kernel.ld's `.noinit`): each
/// allocation is zeroed as it is handed out. Page-aligned; each allocation
/// is aligned within it (two SMMUs' worth of padding included in the size).
#[repr(C, align(4096))]
struct Arena(UnsafeCell<MaybeUninit<[u8; ARENA_SIZE]>>);

// SAFETY: only `arena_alloc` hands out parts of it, each part once, and it
// runs on the boot CPU before any other CPU starts.
unsafe impl Sync for Arena {}

#[unsafe(link_section = ".bss.noinit.smmu_arena")]
static ARENA: Arena = Arena(UnsafeCell::new(MaybeUninit::uninit()));

/// Bytes of the arena handed out.
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// `size` zeroed bytes of the arena aligned to `align`, or `None` when it
/// has no room left.
fn arena_alloc(size: usize, align: usize) -> Option<u64> {
    let base = ARENA.0.get() as u64;
    let used = ARENA_USED.load(Ordering::Relaxed);
    let start = (base + used as u64).checked_next_multiple_of(align.max(1) as u64)?;
    let end = start.checked_add(size as u64)?;
    if end > base + ARENA_SIZE as u64 {
        return None;
    }
    ARENA_USED.store((end - base) as usize, Ordering::Relaxed);
    let r = PhysRange::from_bounds(start, end);
    // A loader may have left (clean) lines of this memory in the caches;
    // with the MMU off the zeroing below goes around them, and a cacheable
    // read after the MMU is on must not find the old data there.
    cache::clean_invalidate(r);
    // SAFETY: `start..end` lies in the arena, was never handed out before,
    // and is identity-mapped (or the MMU is off); u64 stores stay aligned.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, size) };
    Some(start)
}

/// Frames handed to the SMMU drivers, by physical address.
#[derive(Default)]
pub struct KernelDma {
    /// Live allocations from the frame allocator: start → (length,
    /// alignment used).
    live: BTreeMap<u64, (usize, usize)>,
    /// Allocations from the early arena (start, length); never freed.
    early: ArrayVec<(u64, usize), ARENA_ALLOCS>,
    /// Bytes currently allocated (for the memory benchmark).
    pub bytes: usize,
}

fn range(r: &DmaRegion, offset: usize, len: usize) -> PhysRange {
    PhysRange::from_bounds(r.phys().0 + offset as u64, r.phys().0 + (offset + len) as u64)
}

fn region(phys: u64, len: usize) -> Option<DmaRegion> {
    let virt = NonNull::new(phys as *mut u8)?;
    // SAFETY: `phys` lies in a live allocation of the frame allocator or of
    // the early arena, which the kernel identity-maps as normal memory;
    // only the SMMU driver (and the SMMU) use it.
    Some(unsafe { DmaRegion::new(smmu::PhysAddr(phys), virt, len) })
}

impl DmaMemory for KernelDma {
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion> {
        if !platform::memory::has_frames() {
            if self.early.is_full() {
                return None;
            }
            let pa = arena_alloc(size, align)?;
            self.early.push((pa, size));
            self.bytes += size;
            return region(pa, size);
        }
        let pa = platform::memory::alloc_zeroed(size as u64, align as u64)?;
        self.live.insert(pa.0, (size, align));
        self.bytes += size;
        region(pa.0, size)
    }

    fn free(&mut self, region: DmaRegion) {
        let pa = region.phys().0;
        if let Some((size, align)) = self.live.remove(&pa) {
            self.bytes -= size;
            // SAFETY: allocated by `alloc` with this size/alignment; the
            // driver frees only memory the SMMU can no longer reach.
            unsafe { platform::memory::free(PhysAddr(pa), size as u64, align as u64) };
        }
        // Arena memory is the SMMU's for good (stream table, queues).
    }

    fn region(&self, phys: smmu::PhysAddr, len: usize) -> Option<DmaRegion> {
        let end = phys.0.checked_add(len as u64)?;
        let inside = |start: u64, size: usize| phys.0 >= start && end <= start + size as u64;
        let in_frames = self.live.range(..=phys.0).next_back().is_some_and(|(&start, &(size, _))| inside(start, size));
        let in_arena = self.early.iter().any(|&(start, size)| inside(start, size));
        (in_frames || in_arena).then(|| region(phys.0, len)).flatten()
    }

    fn publish(&mut self, region: &DmaRegion, offset: usize, len: usize, coherent: bool) {
        if !coherent {
            cache::clean(range(region, offset, len));
        }
        cache::dsb_st();
    }

    fn acquire(&mut self, region: &DmaRegion, offset: usize, len: usize, coherent: bool) {
        cache::dmb_oshld();
        if !coherent {
            cache::clean_invalidate(range(region, offset, len));
        }
    }

    fn release(&mut self) {
        cache::dsb_sy();
    }
}
