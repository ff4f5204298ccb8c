//! `arm,smmu-v3` nodes (Linux binding `iommu/arm,smmu-v3.yaml`): the
//! register window, the interrupts by `interrupt-names`, coherency.

use super::{text, DeviceTree, DtError, Irq, Text};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// Most SMMUs the kernel handles.
pub const MAX_SMMUS: usize = 8;

/// An `arm,smmu-v3` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuNode {
    /// Node name.
    pub name: Text,
    /// Register window (page 0 and page 1).
    pub regs: PhysRange,
    /// Its phandle, which `iommus`/`iommu-map` refer to.
    pub phandle: Option<u32>,
    /// Interrupt for the event queue.
    pub eventq: Option<Irq>,
    /// Interrupt for the PRI queue.
    pub priq: Option<Irq>,
    /// Interrupt for CMD_SYNC completion.
    pub cmdq_sync: Option<Irq>,
    /// Interrupt for global errors.
    pub gerror: Option<Irq>,
    /// Wired `combined` interrupt, when the SMMU has only one.
    pub combined: Option<Irq>,
    /// `dma-coherent`: the SMMU's table walks snoop CPU caches.
    pub coherent: bool,
    /// Has an `msi-parent`.
    pub msi: bool,
}

impl<'a> DeviceTree<'a> {
    /// Every enabled `arm,smmu-v3` node.
    pub fn smmus(&self) -> Result<ArrayVec<SmmuNode, MAX_SMMUS>, DtError> {
        let mut out = ArrayVec::new();
        self.walk::<DtError>(&mut |n| {
            if !n.is_compatible("arm,smmu-v3") || !n.is_enabled() {
                return Ok(());
            }
            let regs = *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing"))?;
            if regs.size() < 0x20000 {
                return Err(n.bad("reg", "smaller than the 128 KiB of register pages 0 and 1"));
            }
            let mut s = SmmuNode {
                name: text(n.name()),
                regs,
                phandle: n.phandle()?,
                eventq: None,
                priq: None,
                cmdq_sync: None,
                gerror: None,
                combined: None,
                coherent: n.has("dma-coherent"),
                msi: n.has("msi-parent"),
            };
            for (i, name) in n.strings("interrupt-names").enumerate() {
                let irq = self.irq(n, i)?;
                match name {
                    "eventq" => s.eventq = irq,
                    "priq" => s.priq = irq,
                    "cmdq-sync" => s.cmdq_sync = irq,
                    "gerror" => s.gerror = irq,
                    "combined" => s.combined = irq,
                    _ => {}
                }
            }
            out.try_push(s).map_err(|_| DtError::TooMany("SMMUs"))
        })?;
        Ok(out)
    }
}
