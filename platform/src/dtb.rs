//! The device tree blob where the loader left it: the one read of raw
//! memory before [`devicetree::DeviceTree::parse`] checks it.

use crate::PhysAddr;
use devicetree::{DeviceTree, DtError};

/// Validates the blob the loader left at `at`.
///
/// # Safety
/// `at` must be readable for 8 bytes, and for the header's `totalsize`
/// bytes when the magic matches; the memory must stay unchanged for `'static`.
pub unsafe fn at(at: PhysAddr) -> Result<DeviceTree<'static>, DtError> {
    let ptr = at.0 as *const u8;
    let mut head = [0u8; 8];
    for (i, b) in head.iter_mut().enumerate() {
        // SAFETY: the caller guarantees 8 readable bytes; byte reads need
        // no alignment (the MMU may still be off).
        *b = unsafe { ptr.add(i).read_volatile() };
    }
    let size = DeviceTree::blob_size(at, &head)?;
    // SAFETY: the caller guarantees `totalsize` readable, unchanging bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, size) };
    DeviceTree::parse(bytes)
}
