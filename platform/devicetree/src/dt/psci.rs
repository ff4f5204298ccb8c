//! `/psci` (Linux binding `arm/psci.yaml`): how PSCI is called.

use super::{DeviceTree, DtError};

/// How PSCI is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc` (firmware at EL3).
    Smc,
    /// `hvc` (firmware at EL2).
    Hvc,
}

impl<'a> DeviceTree<'a> {
    /// The PSCI conduit from `/psci/method`.
    pub fn psci(&self) -> Result<Option<PsciConduit>, DtError> {
        let Some(p) = self.find("/psci")? else { return Ok(None) };
        match p.str_prop("method")? {
            Some("smc") => Ok(Some(PsciConduit::Smc)),
            Some("hvc") => Ok(Some(PsciConduit::Hvc)),
            Some(_) => Err(p.bad("method", "neither \"smc\" nor \"hvc\"")),
            None => Ok(None),
        }
    }
}
