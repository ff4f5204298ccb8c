//! The traits through which the driver touches hardware. The kernel implements
//! them for real (volatile MMIO, frame allocator, `dsb`/cache maintenance);
//! tests implement them with a software model.
//!
//! This module and [`VolatileMmio`] hold the crate's only `unsafe` code: MMIO
//! access at a caller-given base, and volatile access to DMA memory whose
//! validity the [`DmaMemory`] implementer vouches for.

use core::ptr::NonNull;

use crate::error::Error;
use crate::types::PhysAddr;

/// Size of the SMMU register window the driver uses: page 0 and page 1
/// (IHI 0070 §6.1, 64 KiB each).
pub const MMIO_WINDOW_SIZE: usize = 0x2_0000;

/// Access to the SMMU's 128 KiB register window (page 0 at offset 0, page 1
/// at offset `0x1_0000`). Offsets are byte offsets, naturally aligned.
///
/// Implementers must perform exactly one access of the given width per call
/// (the SMMU requires 32-bit accesses to 32-bit registers and single-copy
/// atomic 64-bit accesses to 64-bit ones, IHI 0070 ch. 6) and must order each
/// access after all earlier ones to the same device (Device-nGnRE memory
/// gives this on Arm).
pub trait Mmio {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Reads the 64-bit register at `offset`.
    fn read64(&self, offset: usize) -> u64;
    /// Writes the 64-bit register at `offset`.
    fn write64(&self, offset: usize, value: u64);
}

impl<T: Mmio + ?Sized> Mmio for &T {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

/// [`Mmio`] by volatile loads and stores at a base pointer.
///
/// Accesses outside the 128 KiB window or not naturally aligned are dropped
/// (reads return 0) instead of touching memory the caller did not hand over.
#[derive(Debug)]
pub struct VolatileMmio {
    base: *mut u8,
}

// SAFETY: the register window is device memory shared with the SMMU, not
// thread-local data; moving the handle to another CPU is sound. Concurrent use
// is the caller's to serialise (the driver takes `&mut self` for every
// operation that writes registers).
unsafe impl Send for VolatileMmio {}

impl VolatileMmio {
    /// Wraps the SMMU register window at `base` (the only place the crate
    /// is told where hardware is).
    ///
    /// # Safety
    ///
    /// `base` must be the virtual address of the SMMU's page 0, with pages 0
    /// and 1 (`MMIO_WINDOW_SIZE` bytes) mapped as Device memory (nGnRE or
    /// stricter) for as long as the returned value is used, and no Rust
    /// reference may alias that window. (A null `base` is tolerated: every
    /// access is then dropped.)
    pub const unsafe fn new(base: *mut u8) -> Self {
        Self { base }
    }

    fn ptr<T>(&self, offset: usize) -> Option<*mut T> {
        let size = core::mem::size_of::<T>();
        if self.base.is_null() || !offset.is_multiple_of(size) || offset.checked_add(size)? > MMIO_WINDOW_SIZE {
            return None;
        }
        // `wrapping_add` keeps pointer arithmetic defined; bounds were checked.
        Some(self.base.wrapping_add(offset).cast::<T>())
    }
}

impl Mmio for VolatileMmio {
    fn read32(&self, offset: usize) -> u32 {
        match self.ptr::<u32>(offset) {
            // SAFETY: in-window and aligned (checked by `ptr`); `new`'s caller
            // guaranteed the window is mapped Device memory.
            Some(p) => unsafe { p.read_volatile() },
            None => 0,
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.ptr::<u32>(offset) {
            // SAFETY: as in `read32`.
            unsafe { p.write_volatile(value) }
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        match self.ptr::<u64>(offset) {
            // SAFETY: as in `read32`; an aligned 64-bit volatile load is a
            // single `ldr x` on AArch64 (single-copy atomic, ch. 6).
            Some(p) => unsafe { p.read_volatile() },
            None => 0,
        }
    }

    fn write64(&self, offset: usize, value: u64) {
        if let Some(p) = self.ptr::<u64>(offset) {
            // SAFETY: as in `read64`.
            unsafe { p.write_volatile(value) }
        }
    }
}

/// A block of physically contiguous memory shared with the SMMU (stream
/// table, context descriptors, queues, translation tables).
///
/// All access goes through 64-bit volatile loads and stores so that each
/// update of a 64-bit table word is single-copy atomic as the SMMU observes it
/// (IHI 0070 ch. 3, structure update rules).
#[derive(Debug)]
pub struct DmaRegion {
    phys: PhysAddr,
    virt: NonNull<u8>,
    len: usize,
}

// SAFETY: a region is a handle to memory owned by the driver instance that
// allocated it; it carries no thread-affine state.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// Describes `len` bytes at CPU address `virt` that the SMMU sees at
    /// physical address `phys`.
    ///
    /// # Safety
    ///
    /// `virt` must be 8-byte aligned and valid for volatile reads and writes
    /// of `len` bytes for as long as the region is used; the memory must
    /// be accessed by nobody but the driver and the SMMU (no Rust references
    /// to it may exist); and `phys` must be where the SMMU sees the same bytes.
    pub unsafe fn new(phys: PhysAddr, virt: NonNull<u8>, len: usize) -> Self {
        Self { phys, virt, len }
    }

    /// Physical address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// CPU address of the first byte.
    pub fn virt(&self) -> NonNull<u8> {
        self.virt
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn word(&self, offset: usize) -> Result<*mut u64, Error> {
        let end = offset.checked_add(8).ok_or(Error::DmaOutOfBounds)?;
        if !offset.is_multiple_of(8) || end > self.len || !(self.virt.as_ptr() as usize).is_multiple_of(8) {
            return Err(Error::DmaOutOfBounds);
        }
        Ok(self.virt.as_ptr().wrapping_add(offset).cast::<u64>())
    }

    /// Volatile 64-bit load at byte `offset`.
    pub fn read64(&self, offset: usize) -> Result<u64, Error> {
        let p = self.word(offset)?;
        // SAFETY: `word` checked bounds and alignment; `new`'s caller
        // guaranteed the memory is valid and not aliased by references.
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 64-bit store at byte `offset` (single-copy atomic).
    pub fn write64(&self, offset: usize, value: u64) -> Result<(), Error> {
        let p = self.word(offset)?;
        // SAFETY: as in `read64`.
        unsafe { p.write_volatile(value) };
        Ok(())
    }
}

/// Memory for the SMMU's in-memory structures, and the barriers around it.
///
/// The kernel implements this with its frame allocator (identity mapped) and
/// `dsb`/`dc` instructions; tests with a host arena that a model of the SMMU
/// reads by physical address.
pub trait DmaMemory {
    /// Allocates `size` bytes of zeroed, physically contiguous memory whose
    /// physical address is a multiple of `align`. Both are powers of two and
    /// `align >= size` whenever the driver needs natural alignment. Returns
    /// `None` when out of memory. The driver checks the result and refuses a
    /// misaligned or short region.
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion>;

    /// Returns memory from [`alloc`](Self::alloc). `region` covers exactly
    /// one allocation (it may be a handle rebuilt with
    /// [`region`](Self::region)). The driver only frees memory the SMMU can
    /// no longer reach (after the invalidation that unlinked it completed).
    fn free(&mut self, region: DmaRegion);

    /// A handle on `len` bytes at `phys` inside a live allocation made by
    /// this allocator (the driver uses it to follow table pointers it wrote).
    /// Returns `None` when `phys..phys+len` is not inside one.
    fn region(&self, phys: PhysAddr, len: usize) -> Option<DmaRegion>;

    /// Makes the driver's writes to `region[offset..offset+len]` visible to
    /// the SMMU before any later write (memory or MMIO) that lets the SMMU
    /// look at them: `dsb st` on a coherent SMMU; clean to the point of
    /// coherency first (`dc cvac`) when `coherent` is false.
    fn publish(&mut self, region: &DmaRegion, offset: usize, len: usize, coherent: bool);

    /// Makes the SMMU's writes to `region[offset..offset+len]` (event
    /// records) visible to the CPU, ordered after the MMIO read of the
    /// producer index that announced them: `dmb oshld` on a coherent SMMU;
    /// invalidate (`dc ivac`) as well when `coherent` is false.
    fn acquire(&mut self, region: &DmaRegion, offset: usize, len: usize, coherent: bool);

    /// Orders all earlier CPU accesses to DMA memory before the next MMIO
    /// write (`dsb sy`), used before handing queue slots back to the SMMU.
    fn release(&mut self);

    /// Stores one 64-bit word. Every driver write to shared memory goes
    /// through here; override only to observe writes (tests do, to check
    /// every intermediate state the SMMU could fetch).
    fn write64(&mut self, region: &DmaRegion, offset: usize, value: u64) -> Result<(), Error> {
        region.write64(offset, value)
    }

    /// Loads one 64-bit word.
    fn read64(&self, region: &DmaRegion, offset: usize) -> Result<u64, Error> {
        region.read64(offset)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn volatile_mmio_stays_in_its_window() {
        let mut window = vec![0u64; MMIO_WINDOW_SIZE / 8];
        // SAFETY: the buffer is MMIO_WINDOW_SIZE bytes, outlives `mmio`, and
        // is only accessed through it while `mmio` is used.
        let mmio = unsafe { VolatileMmio::new(window.as_mut_ptr().cast()) };
        mmio.write32(0x44, 0x8010_1000);
        mmio.write64(0x80, 0x1234_5678_9abc_def0);
        mmio.write32(0x100ac, 7);
        assert_eq!(mmio.read32(0x44), 0x8010_1000);
        assert_eq!(mmio.read64(0x80), 0x1234_5678_9abc_def0);
        assert_eq!(mmio.read32(0x84), 0x1234_5678);
        assert_eq!(mmio.read32(0x100ac), 7);
        // Outside the window or misaligned: dropped, reads 0.
        mmio.write32(MMIO_WINDOW_SIZE, 1);
        mmio.write64(0x44, 1);
        assert_eq!(mmio.read32(MMIO_WINDOW_SIZE), 0);
        assert_eq!(mmio.read64(0x84), 0);
        assert_eq!(mmio.read32(0x46), 0);
        let _ = mmio;
        assert_eq!(window[0x44 / 8] >> 32, 0x8010_1000);
        // SAFETY: a null base drops every access.
        let null = unsafe { VolatileMmio::new(core::ptr::null_mut()) };
        null.write32(0, 1);
        assert_eq!(null.read32(0), 0);
    }

    #[test]
    fn dma_region_bounds() {
        let mut buf = vec![0u64; 8];
        let virt = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` is 64 bytes, 8-aligned, outlives the region, and is
        // not otherwise accessed while the region is used.
        let r = unsafe { DmaRegion::new(PhysAddr(0x1000), virt, 64) };
        r.write64(56, 5).unwrap();
        assert_eq!(r.read64(56), Ok(5));
        assert_eq!(r.write64(64, 1), Err(Error::DmaOutOfBounds));
        assert_eq!(r.read64(4), Err(Error::DmaOutOfBounds));
        assert_eq!(r.read64(usize::MAX - 3), Err(Error::DmaOutOfBounds));
        let _ = r;
        assert_eq!(buf[7], 5);
    }
}
