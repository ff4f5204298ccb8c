//! bulkhead for the TI J721E SK (TDA4VM).
//!
//! The kernel is `bulkhead-kernel` and every hardware fact comes from the
//! device tree U-Boot passes (Linux's `k3-j721e-sk.dtb` with this board's
//! overlay applied); this crate holds only the early console. The load
//! address is in link.ld. U-Boot's `booti` enters at EL2 with the DTB in
//! x0 (TI's TF-A starts U-Boot at EL2).
#![no_std]
#![no_main]

use bulkhead_kernel::Board;
use platform::arch::boot::EarlySmmus;
use platform::console::{Uart, UartKind};
use platform::PhysAddr;

static BOARD: Board = Board {
    name: "j721e-sk",
    // MAIN UART0, the SK's console (TI 8250: registers 4 bytes apart, byte
    // accesses), at 115200 8N1 as the firmware set it.
    early_uart: Some(Uart { base: PhysAddr(0x0280_0000), kind: UartKind::Ns16550 { shift: 2, width: 1 } }),
    dtb_when_x0_is_zero: None,
};

/// J721E's SMMUv3 (`/bus@100000/iommu@36600000`), enabled in the tree:
/// aborted by `_start`'s first instructions.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMUS: EarlySmmus = EarlySmmus::new(&[0x3660_0000]);

/// Entered from `_start` with the loader's x0 and the current EL.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_board_entry(x0: u64, el: u64) -> ! {
    bulkhead_kernel::entry(&BOARD, x0, el)
}
