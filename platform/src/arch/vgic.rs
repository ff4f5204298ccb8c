//! The GICv3 virtual CPU interface at EL2 (IHI 0069 §12.4: ICH_*_EL2): the
//! list registers through which a partition's virtual interrupts reach its
//! vCPU, the hypervisor control register and the maintenance status. What
//! goes into the list registers is decided by `partitions::vm::vgic`; this
//! module only reads and writes the registers of the CPU it runs on.
//!
//! With HCR_EL2.IMO set (a running partition), EL1's ICC_* accesses are
//! served by this virtual interface (ICV_*), except SGI generation, which
//! traps to EL2.

use aarch64_cpu::registers::*;
use tock_registers::LocalRegisterCopy;

/// The layout of every ICH_LR<n>_EL2 (aarch64-cpu names it on LR0).
type LrLayout = ICH_LR0_EL2::Register;

/// State of a list register (ICH_LR<n>_EL2.State).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Empty.
    Invalid,
    /// Pending.
    Pending,
    /// Active.
    Active,
    /// Pending and active.
    PendingActive,
}

/// One list register's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRegister {
    /// Virtual INTID.
    pub vintid: u32,
    /// Linked physical INTID (HW = 1).
    pub pintid: Option<u32>,
    /// Priority.
    pub priority: u8,
    /// State.
    pub state: LrState,
    /// Maintenance interrupt when the virtual interrupt is deactivated
    /// (only without `pintid`).
    pub eoi: bool,
}

impl ListRegister {
    /// The register value (Group 1 always).
    pub fn value(&self) -> u64 {
        let mut r = LocalRegisterCopy::<u64, LrLayout>::new(0);
        let state = match self.state {
            LrState::Invalid => ICH_LR0_EL2::State::Invalid,
            LrState::Pending => ICH_LR0_EL2::State::Pending,
            LrState::Active => ICH_LR0_EL2::State::Active,
            LrState::PendingActive => ICH_LR0_EL2::State::PendingAndActive,
        };
        r.write(state + ICH_LR0_EL2::Group::SET + ICH_LR0_EL2::Priority.val(u64::from(self.priority)) + ICH_LR0_EL2::vINTID.val(u64::from(self.vintid)));
        match self.pintid {
            Some(p) => r.modify(ICH_LR0_EL2::HW::SET + ICH_LR0_EL2::pINTID.val(u64::from(p))),
            None if self.eoi => r.modify(ICH_LR0_EL2::EOI::SET),
            None => {}
        }
        r.get()
    }

    /// Decodes a register value; `None` when it is empty.
    pub fn decode(value: u64) -> Option<ListRegister> {
        let r = LocalRegisterCopy::<u64, LrLayout>::new(value);
        let state = match r.read(ICH_LR0_EL2::State) {
            0b01 => LrState::Pending,
            0b10 => LrState::Active,
            0b11 => LrState::PendingActive,
            _ => return None,
        };
        let hw = r.is_set(ICH_LR0_EL2::HW);
        Some(ListRegister {
            vintid: r.read(ICH_LR0_EL2::vINTID) as u32,
            pintid: hw.then(|| r.read(ICH_LR0_EL2::pINTID) as u32),
            priority: r.read(ICH_LR0_EL2::Priority) as u8,
            state,
            eoi: !hw && r.is_set(ICH_LR0_EL2::EOI),
        })
    }
}

/// How many list registers this CPU has (ICH_VTR_EL2.ListRegs + 1).
pub fn list_registers() -> usize {
    ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1
}

macro_rules! lr_access {
    ($($n:literal => $reg:ident),* $(,)?) => {
        /// Reads list register `n` (0 when there is none).
        pub fn read_lr(n: usize) -> u64 {
            match n {
                $($n => $reg.get(),)*
                _ => 0,
            }
        }
        /// Writes list register `n` (nothing when there is none).
        pub fn write_lr(n: usize, value: u64) {
            match n {
                $($n => $reg.set(value),)*
                _ => {}
            }
        }
    };
}

lr_access!(
    0 => ICH_LR0_EL2, 1 => ICH_LR1_EL2, 2 => ICH_LR2_EL2, 3 => ICH_LR3_EL2,
    4 => ICH_LR4_EL2, 5 => ICH_LR5_EL2, 6 => ICH_LR6_EL2, 7 => ICH_LR7_EL2,
    8 => ICH_LR8_EL2, 9 => ICH_LR9_EL2, 10 => ICH_LR10_EL2, 11 => ICH_LR11_EL2,
    12 => ICH_LR12_EL2, 13 => ICH_LR13_EL2, 14 => ICH_LR14_EL2, 15 => ICH_LR15_EL2,
);

/// Resets this CPU's virtual interface for a vCPU about to start: list
/// registers empty, the virtual machine control (priority mask, groups
/// off) and active priorities cleared, the interface enabled.
pub fn reset() {
    for n in 0..list_registers() {
        write_lr(n, 0);
    }
    ICH_VMCR_EL2.set(0);
    ICH_AP1R0_EL2.set(0);
    ICH_AP0R0_EL2.set(0);
    ICH_HCR_EL2.write(ICH_HCR_EL2::En::SET);
}

/// Enables the interface, with the underflow maintenance interrupt when
/// `underflow` (more virtual interrupts wait than the registers hold).
pub fn set_control(underflow: bool) {
    let uie = if underflow { ICH_HCR_EL2::UIE::SET } else { ICH_HCR_EL2::UIE::CLEAR };
    ICH_HCR_EL2.write(ICH_HCR_EL2::En::SET + uie);
}
