//! Everything that runs CPU instructions the compiler cannot emit by itself:
//! the boot entry, exception vectors, EL2 MMU control, PSCI and semihosting.
//! All inline assembly of the kernel lives under this module.

pub mod boot;
pub mod cache;
pub mod exception;
pub mod exit;
pub mod guest;
pub mod idreg;
pub mod irq;
pub mod mmu;
pub mod psci;
pub mod smp;
pub mod vgic;

use aarch64_cpu::registers::{CurrentEL, Readable, MPIDR_EL1};

/// The exception level the CPU is running at (0–3).
pub fn current_el() -> u8 {
    CurrentEL.read(CurrentEL::EL) as u8
}

/// This CPU's MPIDR affinity fields (Aff3..Aff0), as the DT's `cpu` `reg` uses them.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Sends an event to every CPU (SEV): wakes CPUs waiting in
/// [`wait_for_event`]. Earlier stores are made visible first.
pub fn send_event() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    aarch64_cpu::asm::sev();
}

/// Waits for an event (WFE): another CPU's [`send_event`], an interrupt,
/// or for no reason; callers loop on their condition.
pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}
