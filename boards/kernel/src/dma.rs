//! Memory for SMMU structures: the kernel's frame allocator (identity
//! mapped) behind `smmu::hal::DmaMemory`, with the platform's barriers.

use alloc::collections::BTreeMap;
use core::ptr::NonNull;
use platform::arch::cache;
use platform::{PhysAddr, PhysRange};
use smmu::hal::{DmaMemory, DmaRegion};

/// Frames handed to the SMMU drivers, by physical address.
#[derive(Default)]
pub struct KernelDma {
    /// Live allocations: start → (length, alignment used).
    live: BTreeMap<u64, (usize, usize)>,
    /// Bytes currently allocated (for the memory benchmark).
    pub bytes: usize,
}

fn range(r: &DmaRegion, offset: usize, len: usize) -> PhysRange {
    PhysRange::from_bounds(r.phys().0 + offset as u64, r.phys().0 + (offset + len) as u64)
}

fn region(phys: u64, len: usize) -> Option<DmaRegion> {
    let virt = NonNull::new(phys as *mut u8)?;
    // SAFETY: `phys` lies in a live allocation of the frame allocator, which
    // the kernel identity-maps as normal memory; only the SMMU driver (and
    // the SMMU) use it.
    Some(unsafe { DmaRegion::new(smmu::PhysAddr(phys), virt, len) })
}

impl DmaMemory for KernelDma {
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion> {
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
    }

    fn region(&self, phys: smmu::PhysAddr, len: usize) -> Option<DmaRegion> {
        let (&start, &(size, _)) = self.live.range(..=phys.0).next_back()?;
        let end = phys.0.checked_add(len as u64)?;
        (end <= start + size as u64).then(|| region(phys.0, len)).flatten()
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
