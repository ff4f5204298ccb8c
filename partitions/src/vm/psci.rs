//! A partition's PSCI (Arm DEN0022, version 1.1) and SMCCC (DEN0028,
//! version 1.1) calls, on whichever conduit it uses (its DT names `hvc`;
//! `smc` traps the same way). Function IDs and return codes are the
//! `smccc` crate's. What a call does is decided here; the kernel starts or
//! stops the physical CPUs behind the vCPUs.
//!
//! A partition controls only its own vCPUs: CPU_ON or AFFINITY_INFO of any
//! other MPIDR is an invalid parameter, as for a CPU that does not exist.
//! Anything not implemented answers NOT_SUPPORTED; no call stops the
//! partition but SYSTEM_OFF, SYSTEM_RESET and the last CPU_OFF.

use smccc::psci::error::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED, ON_PENDING};
use smccc::psci::*;

/// SMCCC_VERSION (DEN0028 §7.2).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES (DEN0028 §7.3).
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// PSCI version answered: 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC version answered: 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: no Trusted OS that would need migrating.
pub const MIGRATE_NOT_REQUIRED: u64 = 2;

/// Whether `function` is a PSCI or SMCCC architecture call (the ranges
/// the kernel answers whatever the ID).
pub fn is_standard(function: u32) -> bool {
    // Owning entity 0 (Arm architecture) and 4 (standard secure service),
    // fast calls, SMC32 or SMC64 (DEN0028 §2.5).
    matches!(function & 0xbf00_0000, 0x8000_0000 | 0x8400_0000)
}

/// Whether `function` is an SMCCC fast call (bit 31 of W0, DEN0028 §2.5):
/// answered by [`decide`] (NOT_SUPPORTED unless it is one of the calls
/// implemented), never passed to the bulkhead hypercall ABI, whose
/// function numbers are small.
pub fn is_fast_call(function: u32) -> bool {
    function & 0x8000_0000 != 0
}

/// State of one of the partition's vCPUs, as PSCI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Powered off (never started, or CPU_OFF).
    Off,
    /// CPU_ON accepted, not running yet.
    OnPending,
    /// Running.
    On,
}

/// What the kernel does for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return `x0` to the caller.
    Return(u64),
    /// Start vCPU `vcpu` at `entry` (EL1h, MMU off) with x0 = `context`;
    /// the caller gets SUCCESS.
    Start {
        /// Index of the vCPU.
        vcpu: usize,
        /// Entry point (inside the partition's memory).
        entry: u64,
        /// Its x0.
        context: u64,
    },
    /// Power the calling vCPU off (the partition stops when it was the
    /// last one on).
    CpuOff,
    /// The partition powers off.
    SystemOff,
    /// The partition restarts from its image.
    SystemReset,
}

fn ret(code: i32) -> Action {
    Action::Return(i64::from(code) as u64)
}

/// Decides a call `x[0..4]` from the partition whose vCPUs have MPIDR
/// affinities `vcpus` and states `states`, when `inside(addr)` says
/// whether an address is in its memory.
pub fn decide(x: [u64; 4], vcpus: &[u64], states: &[VcpuState], inside: impl Fn(u64) -> bool) -> Action {
    let function = x[0] as u32;
    // SMC32 calls take 32-bit arguments (DEN0028 §2.6).
    let arg = |i: usize| if function & 0x4000_0000 == 0 { x[i] & 0xffff_ffff } else { x[i] };
    let find = |mpidr: u64| vcpus.iter().position(|&m| m == mpidr & 0xff_00ff_ffff);
    match function {
        PSCI_VERSION => Action::Return(PSCI_VERSION_1_1),
        PSCI_FEATURES => {
            let implemented = [
                PSCI_VERSION,
                PSCI_FEATURES,
                PSCI_CPU_ON_32,
                PSCI_CPU_ON_64,
                PSCI_CPU_OFF,
                PSCI_AFFINITY_INFO_32,
                PSCI_AFFINITY_INFO_64,
                PSCI_SYSTEM_OFF,
                PSCI_SYSTEM_RESET,
                PSCI_MIGRATE_INFO_TYPE,
                SMCCC_VERSION,
            ];
            if implemented.contains(&(x[1] as u32)) {
                Action::Return(0)
            } else {
                ret(NOT_SUPPORTED)
            }
        }
        PSCI_CPU_ON_32 | PSCI_CPU_ON_64 => {
            let Some(v) = find(arg(1)) else { return ret(INVALID_PARAMETERS) };
            match states.get(v) {
                Some(VcpuState::On) => ret(ALREADY_ON),
                Some(VcpuState::OnPending) => ret(ON_PENDING),
                Some(VcpuState::Off) if !inside(arg(2)) => ret(INVALID_ADDRESS),
                Some(VcpuState::Off) => Action::Start { vcpu: v, entry: arg(2), context: arg(3) },
                None => ret(INVALID_PARAMETERS),
            }
        }
        PSCI_CPU_OFF => Action::CpuOff,
        PSCI_AFFINITY_INFO_32 | PSCI_AFFINITY_INFO_64 => {
            if arg(2) != 0 {
                // Only level 0 (a single PE) is described.
                return ret(INVALID_PARAMETERS);
            }
            match find(arg(1)).and_then(|v| states.get(v)) {
                Some(VcpuState::On) => Action::Return(0),
                Some(VcpuState::Off) => Action::Return(1),
                Some(VcpuState::OnPending) => Action::Return(2),
                None => ret(INVALID_PARAMETERS),
            }
        }
        PSCI_SYSTEM_OFF => Action::SystemOff,
        PSCI_SYSTEM_RESET => Action::SystemReset,
        PSCI_MIGRATE_INFO_TYPE => Action::Return(MIGRATE_NOT_REQUIRED),
        SMCCC_VERSION => Action::Return(SMCCC_VERSION_1_1),
        SMCCC_ARCH_FEATURES => {
            // SMCCC_VERSION is always there (v1.1 §7.3.2); no workaround or
            // other architecture service is offered.
            if x[1] as u32 == SMCCC_VERSION {
                Action::Return(0)
            } else {
                ret(NOT_SUPPORTED)
            }
        }
        _ => ret(NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = -1i64 as u64;
    const VCPUS: [u64; 2] = [0x1, 0x2];

    fn call(x: [u64; 4], states: &[VcpuState]) -> Action {
        decide(x, &VCPUS, states, |a| (0x4000_0000..0x5000_0000).contains(&a))
    }

    #[test]
    fn versions_and_features() {
        let s = [VcpuState::On, VcpuState::Off];
        assert_eq!(call([u64::from(PSCI_VERSION), 0, 0, 0], &s), Action::Return(0x1_0001));
        assert_eq!(call([u64::from(SMCCC_VERSION), 0, 0, 0], &s), Action::Return(0x1_0001));
        assert_eq!(call([u64::from(PSCI_FEATURES), u64::from(PSCI_CPU_ON_64), 0, 0], &s), Action::Return(0));
        assert_eq!(call([u64::from(PSCI_FEATURES), u64::from(PSCI_CPU_SUSPEND_64), 0, 0], &s), Action::Return(NS));
        // ARCH_WORKAROUND_1 (0x8000_8000): not offered.
        assert_eq!(call([u64::from(SMCCC_ARCH_FEATURES), 0x8000_8000, 0, 0], &s), Action::Return(NS));
        assert_eq!(call([u64::from(PSCI_MIGRATE_INFO_TYPE), 0, 0, 0], &s), Action::Return(2));
    }

    #[test]
    fn cpu_on_reaches_only_own_vcpus() {
        let s = [VcpuState::On, VcpuState::Off];
        let on = |mpidr: u64, entry: u64, st: &[VcpuState]| call([u64::from(PSCI_CPU_ON_64), mpidr, entry, 7], st);
        assert_eq!(on(0x2, 0x4000_1000, &s), Action::Start { vcpu: 1, entry: 0x4000_1000, context: 7 });
        assert_eq!(on(0x1, 0x4000_1000, &s), Action::Return(-4i64 as u64), "ALREADY_ON");
        assert_eq!(on(0x3, 0x4000_1000, &s), Action::Return(-2i64 as u64), "another partition's CPU");
        assert_eq!(on(0x0, 0x4000_1000, &s), Action::Return(-2i64 as u64), "the kernel's boot CPU");
        assert_eq!(on(0x2, 0x9000_0000, &s), Action::Return(-9i64 as u64), "entry outside its memory");
        assert_eq!(on(0x2, 0x4000_1000, &[VcpuState::On, VcpuState::OnPending]), Action::Return(-5i64 as u64));
        // SMC32 CPU_ON: upper halves ignored.
        assert_eq!(
            call([u64::from(PSCI_CPU_ON_32), 0xdead_0000_0000_0002, 0xffff_ffff_4000_2000, 1], &s),
            Action::Start { vcpu: 1, entry: 0x4000_2000, context: 1 }
        );
    }

    #[test]
    fn affinity_info_and_power() {
        let s = [VcpuState::On, VcpuState::Off];
        let info = |mpidr: u64, lvl: u64| call([u64::from(PSCI_AFFINITY_INFO_64), mpidr, lvl, 0], &s);
        assert_eq!(info(0x1, 0), Action::Return(0));
        assert_eq!(info(0x2, 0), Action::Return(1));
        assert_eq!(info(0x9, 0), Action::Return(-2i64 as u64));
        assert_eq!(info(0x1, 1), Action::Return(-2i64 as u64));
        assert_eq!(call([u64::from(PSCI_CPU_OFF), 0, 0, 0], &s), Action::CpuOff);
        assert_eq!(call([u64::from(PSCI_SYSTEM_OFF), 0, 0, 0], &s), Action::SystemOff);
        assert_eq!(call([u64::from(PSCI_SYSTEM_RESET), 0, 0, 0], &s), Action::SystemReset);
    }

    #[test]
    fn anything_else_is_not_supported_never_a_stop() {
        let s = [VcpuState::On];
        for f in [0x8400_0001u64, 0x8400_0050, 0xc400_0012, 0x8200_0000, 0xc300_0001, 0x8000_ffff, 0xdead_beef] {
            assert_eq!(call([f, 0, 0, 0], &s), Action::Return(NS), "{f:#x}");
        }
        assert!(is_standard(PSCI_CPU_ON_64) && is_standard(SMCCC_VERSION) && is_standard(0x8400_0050));
        assert!(!is_standard(0x10) && !is_standard(0xc300_0001));
        // KVM's vendor-hypervisor UID query, as Linux makes it at boot.
        assert!(is_fast_call(0x8600_ff01) && !is_fast_call(0x13));
        assert_eq!(call([0x8600_ff01, 0, 0, 0], &s), Action::Return(NS));
    }
}
