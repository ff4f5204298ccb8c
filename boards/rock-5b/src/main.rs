//! bulkhead for the Radxa ROCK 5B (Rockchip RK3588).
//!
//! The kernel is `bulkhead-kernel` and every hardware fact comes from the
//! device tree U-Boot passes (Linux's `rk3588-rock-5b.dtb`, which leaves
//! `/memory` for U-Boot to fill in, with this board's overlays applied);
//! this crate holds only the early console. The load address is in
//! link.ld. U-Boot's `booti` enters at EL2 with the DTB in x0.
#![no_std]
#![no_main]

use bulkhead_kernel::Board;
use platform::arch::boot::EarlySmmus;
use platform::console::{Uart, UartKind};
use platform::PhysAddr;

static BOARD: Board = Board {
    name: "rock-5b",
    // UART2 (DesignWare APB 16550: registers 4 bytes apart, 32-bit
    // accesses), the debug console U-Boot and Linux use (1500000 8N1, set
    // by the firmware).
    early_uart: Some(Uart { base: PhysAddr(0xfeb5_0000), kind: UartKind::Ns16550 { shift: 2, width: 4 } }),
    dtb_when_x0_is_zero: None,
};

/// None: RK3588's two MMU-600s (0xfc90_0000 for PCIe, 0xfcb0_0000 for the
/// PHP block) sit in the PHP power domain, which is off unless the
/// firmware used PCIe, and a register access to a block that is powered
/// down stalls the bus. The kernel aborts each SMMU the tree enables as
/// soon as it reads the tree (the board's overlay enables the PCIe one),
/// and touches no disabled one.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMUS: EarlySmmus = EarlySmmus::new(&[]);

/// Entered from `_start` with the loader's x0 and the current EL.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_board_entry(x0: u64, el: u64) -> ! {
    bulkhead_kernel::entry(&BOARD, x0, el)
}
