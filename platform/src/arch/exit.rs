//! Stopping the machine: semihosting SYS_EXIT (QEMU test mode, carries a
//! status) and PSCI SYSTEM_OFF (everything else).
//!
//! Semihosting: Arm "Semihosting for AArch32 and AArch64" — `hlt #0xf000`,
//! SYS_EXIT (0x18) with a parameter block {ADP_Stopped_ApplicationExit
//! (0x20026), status}. PSCI: [`super::psci`].

use super::psci;
use core::sync::atomic::{AtomicBool, Ordering};
use devicetree::PsciConduit;

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

static SEMIHOSTING: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    r#"
    .section .text.semihosting, "ax"
    .global __bulkhead_semihosting_call
__bulkhead_semihosting_call:
    .global __bulkhead_semihosting_hlt
__bulkhead_semihosting_hlt:
    hlt     #0xf000
    ret
"#
);

unsafe extern "C" {
    fn __bulkhead_semihosting_call(op: u64, param: u64) -> u64;
    static __bulkhead_semihosting_hlt: u8;
}

/// Address of the semihosting `hlt`, so the exception handler can recognise
/// the "no semihosting here" undefined-instruction trap.
pub fn semihosting_hlt_address() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &__bulkhead_semihosting_hlt as *const u8 as u64 }
}

/// Called by the exception handler when the `hlt` trapped.
pub fn semihosting_unavailable() {
    SEMIHOSTING.store(false, Ordering::Relaxed);
}

/// Chooses how to exit: semihosting first when `semihosting` (it falls back
/// by itself when QEMU runs without `-semihosting`), PSCI through `conduit`.
pub fn configure(semihosting: bool, conduit: PsciConduit) {
    SEMIHOSTING.store(semihosting, Ordering::Relaxed);
    psci::set_conduit(conduit);
}

/// Logs the status and stops the machine.
pub fn exit(code: crate::ExitCode) -> ! {
    if code == crate::ExitCode::Success {
        defmt::info!("bulkhead: exit {}", code);
    } else {
        defmt::error!("bulkhead: exit {}", code);
    }
    exit_quiet(code)
}

/// Stops the machine without logging (used when logging itself failed).
pub fn exit_quiet(code: crate::ExitCode) -> ! {
    crate::console::flush();
    if SEMIHOSTING.load(Ordering::Relaxed) {
        let block = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
        // SAFETY: SYS_EXIT reads the two-word block; if semihosting is
        // absent the `hlt` traps and the handler skips it.
        unsafe { __bulkhead_semihosting_call(SYS_EXIT, block.as_ptr() as u64) };
    }
    psci::system_off();
    // SYSTEM_OFF returned (no PSCI firmware): reset is the last resort; after
    // that only a halted CPU remains, with interrupts masked.
    psci::system_reset();
    loop {
        aarch64_cpu::asm::wfi();
    }
}
