//! The machine: aarch64 boot and EL2 set-up, exceptions, the EL2 MMU, the
//! PL011 and 16550 console, the defmt logger, time, PSCI and semihosting
//! exits, the frame allocator and heap, the GICv3, PCI configuration space
//! (ECAM) and enumeration, and the DTB the loader left in memory.
//!
//! What the device tree says — the checked blob reader, overlays,
//! discovery, the PCI topology types and the boot memory map — is the pure
//! `devicetree` crate's; this crate keeps what touches the hardware. Pure
//! logic here (page-table building, enumeration against a synthetic ECAM,
//! the GIC against a model) compiles and tests on the host; everything that
//! touches the CPU or MMIO is built only for the bare-metal target.
#![no_std]

extern crate alloc;

pub mod dtb;
pub mod gic;
pub mod pci;
pub mod pgtable;
pub mod status;
pub mod sync;

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

/// The machine's physical addresses: one type, the device tree's.
pub use devicetree::{PhysAddr, PhysRange};
pub use status::ExitCode;
