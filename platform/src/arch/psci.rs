//! PSCI (Arm DEN0022) calls the kernel makes itself — CPU_ON for partition
//! CPUs, CPU_OFF to park one, SYSTEM_OFF and SYSTEM_RESET to stop — through
//! the SMC Calling Convention (DEN0028) on the conduit the device tree's
//! `/psci` names. Function IDs, the calls and the error codes are the
//! `smccc` crate's (no_std, both conduits); partitions' own PSCI calls are
//! decoded against the same constants (`smccc::psci::PSCI_*`).

use core::sync::atomic::{AtomicU8, Ordering};
use devicetree::PsciConduit;
use smccc::psci;
use smccc::{Hvc, Smc};

pub use smccc::psci::Error;

/// 0 = smc, 1 = hvc.
static CONDUIT: AtomicU8 = AtomicU8::new(0);

/// Uses `conduit` from now on (smc until the DT says more: at EL2 the
/// firmware is at EL3).
pub fn set_conduit(conduit: PsciConduit) {
    CONDUIT.store(matches!(conduit, PsciConduit::Hvc) as u8, Ordering::Relaxed);
}

fn hvc() -> bool {
    CONDUIT.load(Ordering::Relaxed) == 1
}

/// CPU_ON: starts CPU `mpidr` at `entry` (MMU off) with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), Error> {
    if hvc() {
        psci::cpu_on::<Hvc>(mpidr, entry, context)
    } else {
        psci::cpu_on::<Smc>(mpidr, entry, context)
    }
}

/// CPU_OFF: powers this CPU down; returns only if the firmware refused.
pub fn cpu_off() -> Error {
    let r = if hvc() { psci::cpu_off::<Hvc>() } else { psci::cpu_off::<Smc>() };
    r.err().unwrap_or(Error::InternalFailure)
}

/// SYSTEM_OFF; returns only without PSCI firmware.
pub fn system_off() {
    let _ = if hvc() { psci::system_off::<Hvc>() } else { psci::system_off::<Smc>() };
}

/// SYSTEM_RESET; returns only without PSCI firmware.
pub fn system_reset() {
    let _ = if hvc() { psci::system_reset::<Hvc>() } else { psci::system_reset::<Smc>() };
}
