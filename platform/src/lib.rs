//! The machine: aarch64 boot and EL2 set-up, exceptions, the EL2 MMU, the
//! PL011 console, the defmt logger, time, PSCI and semihosting exits, the
//! frame allocator and heap, and device-tree access.
//!
//! Pure logic (device tree, memory map, page-table building) compiles and
//! tests on the host; everything that touches the CPU or MMIO is built only
//! for the bare-metal target.
#![no_std]

extern crate alloc;

pub mod addr;
pub mod discovery;
pub mod dt;
pub mod gic;
pub mod memmap;
pub mod overlay;
pub mod pci;
pub mod pgtable;
pub mod status;
pub mod sync;
#[cfg(test)]
mod testutil;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod log;
#[cfg(target_os = "none")]
pub mod memory;
#[cfg(target_os = "none")]
pub mod time;

pub use addr::{PhysAddr, PhysRange};
pub use status::ExitCode;
