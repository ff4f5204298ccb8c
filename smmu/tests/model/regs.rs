//! The register interface (§6.3), written independently of the driver.

use super::*;

impl Mmio for Model {
    fn read32(&self, offset: usize) -> u32 {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::IDR0..=reg::IDR5 => st.idr[(offset - reg::IDR0) / 4],
            reg::IIDR => st.iidr,
            reg::AIDR => st.aidr,
            reg::CR0 => st.regs.cr0,
            reg::CR0ACK => st.regs.cr0ack,
            reg::CR1 => st.regs.cr1,
            reg::CR2 => st.regs.cr2,
            reg::STATUSR => 0,
            reg::GBPA => st.regs.gbpa,
            reg::IRQ_CTRL => st.regs.irq_ctrl,
            reg::IRQ_CTRLACK => st.regs.irq_ctrlack,
            reg::GERROR => st.regs.gerror,
            reg::GERRORN => st.regs.gerrorn,
            reg::STRTAB_BASE_CFG => st.regs.strtab_base_cfg,
            reg::CMDQ_PROD => st.regs.cmdq_prod,
            reg::CMDQ_CONS => {
                if let CmdqMode::PerConsRead(n) = st.knobs.cmdq_mode {
                    self.process_cmdq(&mut st, n);
                }
                st.regs.cmdq_cons
            }
            reg::EVENTQ_PROD => st.regs.evtq_prod,
            reg::EVENTQ_CONS => st.regs.evtq_cons,
            0xa8 | 0xac => {
                st.violations.push("EVENTQ_PROD/CONS accessed through page 0".into());
                0
            }
            _ => {
                st.violations.push(format!("read32 of unmodelled offset {offset:#x}"));
                0
            }
        }
    }

    fn write32(&self, offset: usize, v: u32) {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::CR0 => {
                let was = st.regs.cr0;
                if v & 0b1000 != 0 && was & 0b1000 == 0 && st.regs.cmdq_base == 0 {
                    st.violations.push("CMDQEN set without CMDQ_BASE".into());
                }
                if v & 1 != 0 && was & 1 == 0 {
                    if st.regs.gbpa & (1 << 20) == 0 {
                        st.violations.push("SMMUEN set while GBPA does not abort".into());
                    }
                    self.check_all_abort(&mut st);
                }
                if v & 1 == 0 && was & 1 != 0 && st.regs.gbpa & (1 << 20) == 0 {
                    st.violations.push("SMMUEN cleared while GBPA bypasses".into());
                }
                st.regs.cr0 = v;
                if st.knobs.ack_cr0 {
                    st.regs.cr0ack = v & 0x1df;
                }
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::CR1 | reg::CR2 => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations.push(format!("CR{} written while SMMUEN=1", if offset == reg::CR1 { 1 } else { 2 }));
                }
                if offset == reg::CR1 {
                    st.regs.cr1 = v;
                } else {
                    st.regs.cr2 = v;
                }
            }
            reg::GBPA => {
                if v & (1 << 31) == 0 {
                    return; // Writes without UPDATE are ignored (v3.2+).
                }
                if v & (1 << 20) != 0 {
                    st.driver_started = true;
                } else if st.driver_started {
                    st.violations.push("GBPA.ABORT cleared".into());
                }
                if st.knobs.ack_gbpa {
                    st.regs.gbpa = v & !(1 << 31);
                } else {
                    st.regs.gbpa = v;
                }
            }
            reg::IRQ_CTRL => {
                st.regs.irq_ctrl = v;
                if st.knobs.ack_irq {
                    st.regs.irq_ctrlack = v;
                }
            }
            reg::GERRORN => {
                st.regs.gerrorn = v;
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::STRTAB_BASE_CFG => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations.push("STRTAB_BASE_CFG written while SMMUEN=1".into());
                }
                if Self::tables_preset(&st) {
                    return;
                }
                st.regs.strtab_base_cfg = v;
                st.history.clear();
                st.l2_tables.clear();
            }
            reg::CMDQ_PROD => {
                st.regs.cmdq_prod = v;
                if st.knobs.cmdq_mode == CmdqMode::Immediate {
                    self.process_cmdq(&mut st, u32::MAX);
                }
            }
            reg::CMDQ_CONS => {
                if st.regs.cr0 & 0b1000 != 0 {
                    st.violations.push("CMDQ_CONS written while CMDQEN=1".into());
                }
                st.regs.cmdq_cons = v;
            }
            reg::EVENTQ_PROD => {
                if st.regs.cr0 & 0b100 != 0 {
                    st.violations.push("EVENTQ_PROD written while EVENTQEN=1".into());
                }
                st.regs.evtq_prod = v;
            }
            reg::EVENTQ_CONS => st.regs.evtq_cons = v,
            0xa8 | 0xac => st.violations.push("EVENTQ_PROD/CONS accessed through page 0".into()),
            _ => st.violations.push(format!("write32 of unmodelled offset {offset:#x}")),
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::STRTAB_BASE => st.regs.strtab_base,
            reg::CMDQ_BASE => st.regs.cmdq_base,
            reg::EVENTQ_BASE => st.regs.evtq_base,
            reg::GERROR_IRQ_CFG0 => st.regs.gerror_irq_cfg0,
            reg::EVENTQ_IRQ_CFG0 => st.regs.eventq_irq_cfg0,
            _ => {
                st.violations.push(format!("read64 of unmodelled offset {offset:#x}"));
                0
            }
        }
    }

    fn write64(&self, offset: usize, v: u64) {
        let mut st = self.st.borrow_mut();
        match offset {
            reg::STRTAB_BASE => {
                if st.regs.cr0 & 1 != 0 {
                    st.violations.push("STRTAB_BASE written while SMMUEN=1".into());
                }
                if Self::tables_preset(&st) {
                    return;
                }
                st.regs.strtab_base = v;
                st.history.clear();
                st.l2_tables.clear();
            }
            reg::CMDQ_BASE => {
                if st.regs.cr0 & 0b1000 != 0 {
                    st.violations.push("CMDQ_BASE written while CMDQEN=1".into());
                }
                if Self::queues_preset(&st) {
                    return;
                }
                st.regs.cmdq_base = v;
            }
            reg::EVENTQ_BASE => {
                if st.regs.cr0 & 0b100 != 0 {
                    st.violations.push("EVENTQ_BASE written while EVENTQEN=1".into());
                }
                if Self::queues_preset(&st) {
                    return;
                }
                st.regs.evtq_base = v;
            }
            reg::GERROR_IRQ_CFG0 => st.regs.gerror_irq_cfg0 = v,
            reg::EVENTQ_IRQ_CFG0 => st.regs.eventq_irq_cfg0 = v,
            _ => st.violations.push(format!("write64 of unmodelled offset {offset:#x}")),
        }
    }
}
