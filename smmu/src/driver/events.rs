//! Events and global errors: draining the event queue, repairing and
//! acknowledging GERROR, failing closed.

use embedded_hal::delay::DelayNs;

use super::{write_cr0, Smmu};
use crate::cmdq::Io;
use crate::driver::gbpa_abort_with_timeout;
use crate::error::Error;
use crate::evtq::{DrainReport, Event};
use crate::gerror::{GerrorReport, GlobalErrors};
use crate::hal::{DmaMemory, Mmio};
use crate::regs::{offset, GERROR};

impl<M: Mmio, D: DmaMemory, T: DelayNs> Smmu<M, D, T> {
    /// Fails closed after an error the SMMU cannot be trusted past
    /// (GERROR.SFM_ERR, EVENTQ_ABT_ERR): GBPA.ABORT again, then SMMUEN and
    /// the queues off, so every transaction of every stream aborts. The
    /// instance must not be used for translation afterwards.
    pub fn fail_closed(&mut self) -> Result<(), Error> {
        gbpa_abort_with_timeout(&self.mmio, &mut self.delay, self.config.timeout_us)?;
        write_cr0(&self.mmio, &mut self.delay, self.config.timeout_us, 0)
    }

    /// Hands up to `limit` event records to `f` (from an interrupt handler
    /// or by polling), returns the slots to the SMMU and reports (and
    /// acknowledges) an overflow: `lost_events` means records were dropped.
    pub fn drain_events(&mut self, limit: u32, f: impl FnMut(&Event)) -> Result<DrainReport, Error> {
        let mut hw = Io { mmio: &self.mmio, dma: &mut self.dma, delay: &mut self.delay, timeout_us: self.config.timeout_us };
        self.evtq.drain(&mut hw, limit, f)
    }

    /// Reads SMMU_GERROR, repairs a command-queue error (the faulty command
    /// becomes CMD_SYNC and the queue resumes), acknowledges every active
    /// error through SMMU_GERRORN, and reports what was found. SFM_ERR means
    /// the SMMU stopped translating and needs a reset.
    pub fn handle_gerror(&mut self) -> Result<GerrorReport, Error> {
        let g = self.mmio.read32(offset::GERROR);
        let gn = self.mmio.read32(offset::GERRORN);
        let active = GlobalErrors::active(g, gn);
        let mut report = GerrorReport { errors: active, command: None };
        if active.cmdq_err() {
            let (mut hw, q) = self.hw();
            q.recover_now(&mut hw)?;
            report.command = q.take_error();
        }
        let cmdq_bit = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        let others = active.0 & !cmdq_bit;
        if others != 0 {
            let gn = self.mmio.read32(offset::GERRORN);
            self.mmio.write32(offset::GERRORN, gn ^ others);
        }
        Ok(report)
    }
}
