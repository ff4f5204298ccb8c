//! bulkhead for QEMU `virt` (`virtualization=on,iommu=smmuv3,gic-version=3`).
//!
//! Thin wiring of `platform`, `smmu` and `partitions`, in the boot order of
//! DESIGN.md: abort every SMMU first, then the MMU, console and memory, then
//! discovery.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod discover;
mod dma;
mod dmatest;
mod iommu;
mod irqtest;
mod ownership;
mod partition;

pub use boot::bulkhead_board_entry;
