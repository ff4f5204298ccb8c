//! bulkhead for the NXP i.MX95 19x19 EVK.
//!
//! The kernel is `bulkhead-kernel` and every hardware fact comes from the
//! device tree U-Boot passes (Linux's `imx95-19x19-evk.dtb` with this
//! board's overlay applied); this crate holds only the early console. The
//! load address is in link.ld. U-Boot's `booti` enters at EL2 with the DTB
//! in x0.
#![no_std]
#![no_main]

use bulkhead_kernel::Board;
use platform::arch::boot::EarlySmmus;
use platform::console::{Uart, UartKind};
use platform::PhysAddr;

static BOARD: Board = Board {
    name: "imx95-evk",
    // LPUART1, the EVK's debug console (U-Boot's ttyLP0): 32-bit registers
    // from BAUD at 0x10, after VERID/PARAM/GLOBAL/PINCFG.
    early_uart: Some(Uart { base: PhysAddr(0x4438_0000), kind: UartKind::Lpuart { offset: 0x10 } }),
    dtb_when_x0_is_zero: None,
};

/// The SoC's SMMUv3 (`/soc/bus@49000000/iommu@490d0000`), in front of the
/// network block, USB, PCIe and the other DMA masters: aborted by
/// `_start`'s first instructions whether or not the tree enables it.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMUS: EarlySmmus = EarlySmmus::new(&[0x490d_0000]);

/// Entered from `_start` with the loader's x0 and the current EL.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_board_entry(x0: u64, el: u64) -> ! {
    bulkhead_kernel::entry(&BOARD, x0, el)
}
