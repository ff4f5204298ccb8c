//! Starting secondary CPUs with PSCI CPU_ON.
//!
//! A started CPU enters `__bulkhead_secondary` with the MMU off and x0 = the
//! address of its [`CpuStart`] block; it takes its stack, vectors and the
//! EL2 translation regime from the block, turns the MMU on with the same
//! identity map as the boot CPU, and calls the block's Rust entry. A CPU
//! the kernel is done with parks with [`halt_this_cpu`] (PSCI CPU_OFF).

use super::psci;
use crate::{PhysAddr, PhysRange};
use aarch64_cpu::registers::*;

/// What a starting CPU needs before it can run Rust (read with the MMU off).
#[repr(C)]
pub struct CpuStart {
    /// Initial SP (top of this CPU's stack).
    pub stack_top: u64,
    /// VBAR_EL2.
    pub vbar: u64,
    /// MAIR_EL2 of the boot CPU.
    pub mair: u64,
    /// TCR_EL2 of the boot CPU.
    pub tcr: u64,
    /// TTBR0_EL2 of the boot CPU.
    pub ttbr: u64,
    /// SCTLR_EL2 of the boot CPU.
    pub sctlr: u64,
    /// HCR_EL2 of the boot CPU.
    pub hcr: u64,
    /// Rust entry, called with x0 = `arg`.
    pub entry: extern "C" fn(u64) -> !,
    /// Argument for `entry`.
    pub arg: u64,
}

core::arch::global_asm!(
    r#"
    .section .text.secondary, "ax"
    .global __bulkhead_secondary
__bulkhead_secondary:
    msr     daifset, #0xf
    mov     x19, x0
    ldr     x1, [x19, #0]
    mov     sp, x1
    ldr     x1, [x19, #8]
    msr     vbar_el2, x1
    ldr     x1, [x19, #48]
    msr     hcr_el2, x1
    ldr     x1, [x19, #16]
    msr     mair_el2, x1
    ldr     x1, [x19, #24]
    msr     tcr_el2, x1
    ldr     x1, [x19, #32]
    msr     ttbr0_el2, x1
    isb
    tlbi    alle2
    dsb     ish
    ic      iallu
    dsb     ish
    isb
    ldr     x1, [x19, #40]
    msr     sctlr_el2, x1
    isb
    ldr     x2, [x19, #56]
    ldr     x0, [x19, #64]
    blr     x2
0:  wfe
    b       0b
"#
);

unsafe extern "C" {
    fn __bulkhead_secondary();
}

/// Why a CPU did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum StartError {
    /// PSCI returned this status (DEN0022 error codes).
    Psci(i64),
}

/// Fills `block` from this CPU's EL2 state, so the started CPU runs in the
/// same translation regime.
pub fn prepare(block: &mut CpuStart, stack: PhysRange, entry: extern "C" fn(u64) -> !, arg: u64) {
    block.stack_top = stack.end.0;
    block.vbar = VBAR_EL2.get();
    block.mair = MAIR_EL2.get();
    block.tcr = TCR_EL2.get();
    block.ttbr = TTBR0_EL2.get();
    block.sctlr = SCTLR_EL2.get();
    block.hcr = HCR_EL2.get();
    block.entry = entry;
    block.arg = arg;
}

/// Starts CPU `mpidr` on `block` (which must stay valid until the CPU runs).
pub fn start(mpidr: u64, block: &CpuStart) -> Result<(), StartError> {
    let addr = block as *const CpuStart as u64;
    // The CPU reads the block with its MMU and caches off.
    super::cache::clean(PhysRange::from_bounds(addr, addr + core::mem::size_of::<CpuStart>() as u64));
    let entry = __bulkhead_secondary as *const () as u64;
    psci::cpu_on(mpidr, entry, addr).map_err(|e| StartError::Psci(e.into()))
}

/// Parks this CPU for good: PSCI CPU_OFF, or a masked `wfe` loop if the
/// firmware refuses.
pub fn halt_this_cpu() -> ! {
    psci::cpu_off();
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// The entry address PSCI is given (for logs).
pub fn entry_address() -> PhysAddr {
    PhysAddr(__bulkhead_secondary as *const () as u64)
}

/// Abandons the current stack: continues in `f(arg)` on the stack whose
/// top is `stack_top` (a CPU's own EL2 stack, everything on it given up:
/// a partition CPU going back to its start after its partition reset).
///
/// # Safety
/// `stack_top` must be the top of this CPU's own stack, nothing on which
/// is used again; `f` must not return.
pub unsafe fn run_on_stack(stack_top: u64, f: extern "C" fn(u64) -> !, arg: u64) -> ! {
    // SAFETY: the caller gives up the current stack; SP moves to the top
    // of this CPU's own one and `f` runs there with x0 = `arg`.
    unsafe { core::arch::asm!("mov sp, x2", "br x1", in("x0") arg, in("x1") f, in("x2") stack_top, options(noreturn)) }
}
