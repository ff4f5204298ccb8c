//! bulkhead for the Arm FVP Base RevC (`FVP_Base_RevC-2xAEMvA`).
//!
//! The kernel is `bulkhead-kernel` and every hardware fact comes from the
//! device tree (fvp-base-revc.dts in this directory); this crate holds only
//! the early console. The load address is in link.ld. TF-A starts the
//! kernel at EL2 with the DTB in x0 (Linux boot protocol), so there is no
//! x0 = 0 path.
#![no_std]
#![no_main]

use bulkhead_kernel::Board;
use platform::arch::boot::EarlySmmus;
use platform::console::Uart;
use platform::PhysAddr;

static BOARD: Board = Board {
    name: "fvp-base",
    // The motherboard's UART0 (PL011, chip select 3 + 0x9_0000), the
    // console TF-A also uses.
    early_uart: Some(Uart::pl011(PhysAddr(0x1c09_0000))),
    dtb_when_x0_is_zero: None,
};

/// The FVP Base RevC's SMMUv3 in front of the PCIe root complex: aborted by
/// `_start`'s first instructions.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMUS: EarlySmmus = EarlySmmus::new(&[0x2b40_0000]);

/// Entered from `_start` with the loader's x0 and the current EL.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_board_entry(x0: u64, el: u64) -> ! {
    bulkhead_kernel::entry(&BOARD, x0, el)
}
