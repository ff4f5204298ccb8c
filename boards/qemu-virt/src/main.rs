//! bulkhead for QEMU `virt` (`virtualization=on,iommu=smmuv3,gic-version=3`).
//!
//! The kernel is `bulkhead-kernel`; this crate holds only what the device
//! tree cannot say: the early console and where QEMU's ELF loader leaves the
//! DTB. The load address is in link.ld.
#![no_std]
#![no_main]

use bulkhead_kernel::Board;
use platform::arch::boot::EarlySmmus;
use platform::console::Uart;
use platform::PhysAddr;

static BOARD: Board = Board {
    name: "qemu-virt",
    // The PL011 QEMU's virt always has.
    early_uart: Some(Uart::pl011(PhysAddr(0x0900_0000))),
    // QEMU's ELF path (`-kernel ELF`) enters with x0 = 0 and the DTB at the
    // bottom of RAM.
    dtb_when_x0_is_zero: Some(PhysAddr(0x4000_0000)),
};

/// The SMMUv3 of `virt,iommu=smmuv3` (VIRT_SMMU, fixed by QEMU's memory
/// map): aborted by `_start`'s first instructions.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMUS: EarlySmmus = EarlySmmus::new(&[0x0905_0000]);

/// Entered from `_start` with the loader's x0 and the current EL.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_board_entry(x0: u64, el: u64) -> ! {
    bulkhead_kernel::entry(&BOARD, x0, el)
}
