//! Stopping the machine: semihosting SYS_EXIT (QEMU test mode, carries a
//! status) and PSCI SYSTEM_OFF (everything else).
//!
//! Semihosting: Arm "Semihosting for AArch32 and AArch64" — `hlt #0xf000`,
//! SYS_EXIT (0x18) with a parameter block {ADP_Stopped_ApplicationExit
//! (0x20026), status}. PSCI: DEN0022, SYSTEM_OFF = 0x8400_0008.

use devicetree::PsciConduit;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

static SEMIHOSTING: AtomicBool = AtomicBool::new(false);
/// 0 = smc, 1 = hvc.
static CONDUIT: AtomicU8 = AtomicU8::new(0);

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
    CONDUIT.store(matches!(conduit, PsciConduit::Hvc) as u8, Ordering::Relaxed);
}

/// Calls PSCI `function` with three arguments through the configured
/// conduit; returns x0.
pub fn psci_call(function: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let conduit = CONDUIT.load(Ordering::Relaxed);
    let ret: u64;
    // SAFETY: the SMC calling convention (DEN0028) preserves x18 and above
    // and returns in x0..x3; the firmware touches no memory of ours except
    // what the function defines (none for the calls the kernel makes).
    unsafe {
        if conduit == 1 {
            core::arch::asm!("hvc #0", inout("x0") function => ret, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack));
        } else {
            core::arch::asm!("smc #0", inout("x0") function => ret, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack));
        }
    }
    ret
}

fn psci(function: u64) {
    psci_call(function, 0, 0, 0);
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
    psci(PSCI_SYSTEM_OFF);
    // SYSTEM_OFF returned (no PSCI firmware): reset is the last resort; after
    // that only a halted CPU remains, with interrupts masked.
    psci(PSCI_SYSTEM_RESET);
    loop {
        aarch64_cpu::asm::wfi();
    }
}
