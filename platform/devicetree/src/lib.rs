//! What the device tree says, read without `unsafe` and without trusting
//! the blob: the checked reader ([`DeviceTree`]), overlay application
//! ([`overlay`]), discovery of everything that can do or route DMA
//! ([`discovery`]), the PCI topology as data ([`pci`]), the boot's
//! physical memory map ([`memmap`]), and the typed description of the
//! whole machine the boot reads once ([`Machine`]).
//!
//! The kernel (`platform`, `boards/kernel`), the policy (`partitions`) and
//! the offline checker (`cargo xtask check`) share it, so the device tree
//! is read by one piece of code, with one [`PhysAddr`]. Everything here
//! tests on the host; `defmt` formatting comes with the `defmt` feature.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod discovery;
pub mod dt;
pub mod fdt;
pub mod machine;
pub mod memmap;
pub mod overlay;
pub mod pci;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use addr::{PhysAddr, PhysRange};
pub use dt::{CpuNode, DeviceTree, DtError, DtNode, Irq, PsciConduit, SmmuNode, Uart, UartKind};
pub use machine::Machine;
