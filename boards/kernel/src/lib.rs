//! The board-independent kernel: every hardware fact comes from the device
//! tree, so a board crate supplies only a [`Board`] (its name, an early
//! console, where its loader leaves the DTB when x0 is 0) and a linker
//! script with its load address, and calls [`entry`] from
//! `bulkhead_board_entry`.
//!
//! Boot order (DESIGN.md): abort every SMMU first, then the MMU, console and
//! memory, then discovery, configuration, SMMU bring-up and partitions.
#![no_std]

extern crate alloc;

mod boot;
mod devices;
mod discover;
mod dma;
mod events;
mod launch;
mod ownership;
mod runtime;
#[cfg(feature = "selftest")]
mod selftest;
mod smmus;
mod stage2;
mod trap;
mod vgic;
mod vm;

pub use boot::entry;
use platform::console::Uart;
use platform::PhysAddr;

/// What a board crate tells the kernel; everything else comes from the DT.
pub struct Board {
    /// Name in the banner.
    pub name: &'static str,
    /// A UART (any [`platform::console::UartKind`]) the kernel may write to before it has read
    /// the DT's `/chosen/stdout-path` (and to report a DT it cannot read at
    /// all); `None` when the board has no UART at a fixed address, so
    /// nothing is printed until the DT names one.
    pub early_uart: Option<Uart>,
    /// Where the DTB is when the loader enters with x0 = 0 (QEMU's ELF path
    /// leaves it at the bottom of RAM); `None` when the board's loaders
    /// always follow the Linux boot protocol.
    pub dtb_when_x0_is_zero: Option<PhysAddr>,
}
