//! `arm,smmu-v3` nodes (Linux binding `iommu/arm,smmu-v3.yaml`): the
//! register window (translated through every parent bus's `ranges`), the
//! interrupts by `interrupt-names` (`eventq`, `gerror`, `priq`,
//! `cmdq-sync` in any order and number, or one `combined`), coherency, and
//! whether the SMMU's interrupts reach the GIC at all. An SMMU whose
//! interrupts go elsewhere (HiSilicon hip06/hip07 signal through the
//! mbigen message converter) is still an SMMU: it is read without
//! interrupts and the kernel drains its queues by polling. SMMUs the tree
//! disables (`status`, or a disabled parent bus) are listed apart: the
//! kernel does not touch them, and says so.

use super::irq::{Route, MAX_CONTROLLERS};
use super::{text, DeviceTree, DtError, DtNode, Irq, Text};
use crate::addr::PhysRange;
use arrayvec::ArrayVec;

/// Most SMMUs the kernel handles (enabled ones; the corpus of real boards
/// has at most 5 in one tree, hip07's).
pub const MAX_SMMUS: usize = 8;

/// The compatible of an SMMUv3.
pub const SMMU_V3: &str = "arm,smmu-v3";

/// How an SMMU's interrupts reach the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmmuIrqs {
    /// Wired to the GIC (those `interrupt-names` names are in the fields).
    Wired,
    /// Its interrupts go to another controller (its node's name): none of
    /// them can be taken; the event queue is drained by polling.
    NotWired(Text),
    /// The node has no interrupts.
    None,
}

/// An enabled `arm,smmu-v3` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuNode {
    /// Node name.
    pub name: Text,
    /// Register window (page 0 and page 1), a CPU physical address.
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
    /// Where its interrupts go.
    pub irqs: SmmuIrqs,
    /// `dma-coherent`: the SMMU's table walks snoop CPU caches.
    pub coherent: bool,
    /// Has an `msi-parent`.
    pub msi: bool,
}

/// An `arm,smmu-v3` node the tree disables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisabledSmmu {
    /// Node name.
    pub name: Text,
    /// Its phandle, which masters' `iommus`/`iommu-map` may name.
    pub phandle: Option<u32>,
    /// Its register window, when it reads.
    pub regs: Option<PhysRange>,
    /// Why it is disabled: its own `status`, or a disabled ancestor.
    pub why: &'static str,
}

/// Why a node is disabled, if it is: its own `status` or an ancestor's.
pub(super) fn disabled(n: &DtNode<'_>, ancestors: &[DtNode<'_>]) -> Option<&'static str> {
    if !n.is_enabled() {
        Some("status is not \"okay\"")
    } else if ancestors.iter().any(|a| !a.is_enabled()) {
        Some("a parent node is disabled")
    } else {
        None
    }
}

impl<'a> DeviceTree<'a> {
    /// Every enabled `arm,smmu-v3` node, in tree order.
    pub fn smmus(&self) -> Result<ArrayVec<SmmuNode, MAX_SMMUS>, DtError> {
        let mut out = ArrayVec::new();
        // Interrupt controllers seen so far, by phandle: the SMMUs' parent
        // is found without another walk where it came first.
        let mut controllers: ArrayVec<(u32, DtNode<'a>), MAX_CONTROLLERS> = ArrayVec::new();
        self.walk_with_ancestors::<DtError>(&mut |n, ancestors| {
            if n.has("interrupt-controller") {
                if let Some(ph) = n.phandle()? {
                    let _ = controllers.try_push((ph, *n));
                }
            }
            if !n.is_compatible(SMMU_V3) || disabled(n, ancestors).is_some() {
                return Ok(());
            }
            let regs = *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing"))?;
            let regs = super::ranges::translate_range(ancestors.iter(), regs)?;
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
                irqs: SmmuIrqs::None,
                coherent: n.has("dma-coherent"),
                msi: n.has("msi-parent"),
            };
            let lookup = |ph: u32| controllers.iter().find(|(p, _)| *p == ph).map(|(_, c)| *c);
            match self.irqs::<8>(n, ancestors, Some(&lookup))? {
                Ok(irqs) if irqs.is_empty() => {}
                Ok(irqs) => {
                    s.irqs = SmmuIrqs::Wired;
                    for (name, irq) in n.strings("interrupt-names").zip(irqs) {
                        match name {
                            "eventq" => s.eventq = irq,
                            "priq" => s.priq = irq,
                            "cmdq-sync" => s.cmdq_sync = irq,
                            "gerror" => s.gerror = irq,
                            "combined" => s.combined = irq,
                            _ => {}
                        }
                    }
                }
                Err(Route::Other(via)) => s.irqs = SmmuIrqs::NotWired(via),
                Err(_) => {}
            }
            out.try_push(s).map_err(|_| DtError::TooMany("SMMUs"))
        })?;
        Ok(out)
    }

    /// Every `arm,smmu-v3` node the tree disables, in tree order (at most
    /// `MAX_SMMUS`; more are left out of the list, which only reports).
    pub fn disabled_smmus(&self) -> Result<ArrayVec<DisabledSmmu, MAX_SMMUS>, DtError> {
        let mut out = ArrayVec::new();
        self.walk_with_ancestors::<DtError>(&mut |n, ancestors| {
            if !n.is_compatible(SMMU_V3) {
                return Ok(());
            }
            let Some(why) = disabled(n, ancestors) else { return Ok(()) };
            let regs = n.reg().ok().and_then(|r| r.first().copied()).and_then(|r| super::ranges::translate_range(ancestors.iter(), r).ok());
            let _ = out.try_push(DisabledSmmu { name: text(n.name()), phandle: n.phandle()?, regs, why });
            Ok(())
        })?;
        Ok(out)
    }
}
