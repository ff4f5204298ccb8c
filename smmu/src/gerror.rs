//! Global errors (IHI 0070 ch. 7): SMMU_GERROR / SMMU_GERRORN. An error is
//! active while its bit differs between the two registers; software
//! acknowledges it by toggling the bit in GERRORN. Also the command-queue
//! error codes of SMMU_CMDQ_CONS.ERR (ch. 7).

use tock_registers::LocalRegisterCopy;

use crate::regs::GERROR;

/// Set of active global errors.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GlobalErrors(pub u32);

impl GlobalErrors {
    /// The bits architected in SMMU_GERROR.
    pub const ARCHITECTED: u32 = 0x1FD;

    /// Active errors from the two registers.
    pub fn active(gerror: u32, gerrorn: u32) -> Self {
        GlobalErrors((gerror ^ gerrorn) & Self::ARCHITECTED)
    }

    fn has(&self, f: tock_registers::fields::Field<u32, GERROR::Register>) -> bool {
        LocalRegisterCopy::<u32, GERROR::Register>::new(self.0).is_set(f)
    }

    /// No error is active.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// CMDQ_ERR: a command could not be processed (see SMMU_CMDQ_CONS.ERR).
    pub fn cmdq_err(&self) -> bool {
        self.has(GERROR::CMDQ_ERR)
    }
    /// EVENTQ_ABT_ERR: an event record could not be written (external abort,
    /// or on QEMU a full queue); events were lost.
    pub fn eventq_abt_err(&self) -> bool {
        self.has(GERROR::EVENTQ_ABT_ERR)
    }
    /// PRIQ_ABT_ERR: a PRI queue write aborted.
    pub fn priq_abt_err(&self) -> bool {
        self.has(GERROR::PRIQ_ABT_ERR)
    }
    /// MSI_CMDQ_ABT_ERR: a CMD_SYNC MSI write aborted.
    pub fn msi_cmdq_abt_err(&self) -> bool {
        self.has(GERROR::MSI_CMDQ_ABT_ERR)
    }
    /// MSI_EVENTQ_ABT_ERR: an event queue MSI write aborted.
    pub fn msi_eventq_abt_err(&self) -> bool {
        self.has(GERROR::MSI_EVENTQ_ABT_ERR)
    }
    /// MSI_PRIQ_ABT_ERR: a PRI queue MSI write aborted.
    pub fn msi_priq_abt_err(&self) -> bool {
        self.has(GERROR::MSI_PRIQ_ABT_ERR)
    }
    /// MSI_GERROR_ABT_ERR: a GERROR MSI write aborted.
    pub fn msi_gerror_abt_err(&self) -> bool {
        self.has(GERROR::MSI_GERROR_ABT_ERR)
    }
    /// SFM_ERR: the SMMU entered Service Failure Mode and stopped
    /// translating; only a reset recovers it.
    pub fn sfm_err(&self) -> bool {
        self.has(GERROR::SFM_ERR)
    }
}

/// SMMU_CMDQ_CONS.ERR codes (ch. 7).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandErrorKind {
    /// CERROR_NONE (reported when CMDQ_ERR was seen without a code).
    None,
    /// CERROR_ILL: illegal command (unknown opcode, bad field, or a command
    /// for a feature the SMMU lacks).
    Ill,
    /// CERROR_ABT: abort reading the command.
    Abt,
    /// CERROR_ATC_INV_SYNC: ATC invalidation timed out before a CMD_SYNC.
    AtcInvSync,
    /// Implementation defined or reserved code.
    Other(u8),
}

impl CommandErrorKind {
    /// Decodes an ERR field value.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => CommandErrorKind::None,
            1 => CommandErrorKind::Ill,
            2 => CommandErrorKind::Abt,
            3 => CommandErrorKind::AtcInvSync,
            c => CommandErrorKind::Other(c),
        }
    }
}

/// A recovered command error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandError {
    /// Error code from SMMU_CMDQ_CONS.ERR.
    pub kind: CommandErrorKind,
    /// Opcode of the command that failed.
    pub opcode: u8,
    /// Queue index of the command that failed.
    pub index: u32,
}

/// What [`Smmu::handle_gerror`](crate::Smmu::handle_gerror) found and
/// acknowledged.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GerrorReport {
    /// Errors that were active (now acknowledged).
    pub errors: GlobalErrors,
    /// The command error repaired, when CMDQ_ERR was active.
    pub command: Option<CommandError>,
}
