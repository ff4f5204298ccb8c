//! Interrupts (Devicetree Specification v0.4, §2.4): a node's
//! `interrupts` are specifiers of its interrupt parent — `interrupt-parent`
//! on the node or its nearest ancestor that has one, else the parent node —
//! in that controller's `#interrupt-cells`; `interrupts-extended` names
//! the controller per entry. The GICv3 binding's specifiers are three
//! cells (type, number, flags) or four (the fourth a PPI partition's
//! phandle, 0 for none). Interrupts routed to any other controller (a
//! message-based converter such as HiSilicon's mbigen, a GPIO block) are
//! not the kernel's to take: they are read as not wired to the GIC, and
//! said so, rather than refused.

use super::{text, DeviceTree, DtError, DtNode, Text};

/// A GIC interrupt decoded from a three- or four-cell specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// GIC INTID (SPI n → 32 + n, PPI n → 16 + n).
    pub intid: u32,
    /// Edge-triggered (else level).
    pub edge: bool,
}

#[cfg(feature = "defmt")]
impl defmt::Format for Irq {
    fn format(&self, f: defmt::Formatter) {
        let (kind, n) = if self.intid >= 32 { ("SPI", self.intid - 32) } else { ("PPI", self.intid.saturating_sub(16)) };
        defmt::write!(f, "{=str} {=u32} (INTID {=u32}, {=str})", kind, n, self.intid, if self.edge { "edge" } else { "level" })
    }
}

/// Most interrupt controllers a reader indexes by phandle on its walk
/// (more are found by walking the tree again).
pub const MAX_CONTROLLERS: usize = 32;

/// Arm GIC compatibles whose specifiers are the GIC binding's (type,
/// number, flags[, partition]): the GICv3 the kernel drives, and the GICv2
/// family (GIC-400 and the Cortex-A GICs), whose trees are read the same
/// way though the kernel drives no GICv2.
const GICS: [&str; 7] = ["arm,gic-v3", "arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic", "arm,cortex-a7-gic", "arm,gic-v2", "qcom,msm-qgic2"];

impl Irq {
    /// Decodes one GIC specifier (type, number, flags[, partition]): type
    /// 0 = SPI (INTID 32 + number, below 1020), 1 = PPI (16 + number,
    /// below 32); flags \[3:0\] 1 or 2 = edge. `None` for another type
    /// (the GICv3 binding's extended SPI and PPI ranges, 2 and 3, are not
    /// used by the kernel).
    pub fn from_gic_cells(kind: u32, number: u32, flags: u32) -> Option<Irq> {
        let intid = match kind {
            0 => number.checked_add(32).filter(|&i| i < 1020),
            1 => number.checked_add(16).filter(|&i| i < 32),
            _ => None,
        }?;
        Some(Irq { intid, edge: flags & 0x3 != 0 })
    }
}

/// Where a node's interrupts go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To an Arm GIC, in specifiers of `cells` cells (3 or 4).
    Gic {
        /// `#interrupt-cells` of the GIC.
        cells: u32,
    },
    /// To another interrupt controller (the name of its node): not wired
    /// to the GIC.
    Other(Text),
    /// The node has no interrupts, or no interrupt parent can be found.
    None,
}

/// A node's interrupt parent.
enum Parent<'a> {
    /// This controller.
    Node(DtNode<'a>),
    /// None named: the GIC binding's three cells are assumed.
    Assumed,
    /// `interrupt-parent` names a phandle no node has.
    Missing,
}

/// Finds a node by phandle from an index the caller keeps: `None` from
/// the function means "not in the index" (then the tree is walked).
pub type Lookup<'l, 'a> = Option<&'l dyn Fn(u32) -> Option<DtNode<'a>>>;

fn cell(v: &[u8], i: usize) -> Option<u32> {
    let b = v.get(i * 4..i * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> DeviceTree<'a> {
    /// The node whose phandle is `ph`, from `lookup` or by a walk.
    fn node_of(&self, ph: u32, lookup: Lookup<'_, 'a>) -> Result<Option<DtNode<'a>>, DtError> {
        match lookup.and_then(|l| l(ph)) {
            Some(n) => Ok(Some(n)),
            None => self.by_phandle(ph),
        }
    }

    /// The interrupt controller `n`'s `interrupts` refer to, found as
    /// Linux's `of_irq_find_parent` finds it: `n`'s `interrupt-parent`, else
    /// its parent node if that takes specifiers (`#interrupt-cells`: a
    /// controller, or an `interrupt-map` nexus such as Arm's motherboard
    /// bus), else that node's `interrupt-parent`, and so on up (`ancestors`
    /// root first).
    fn interrupt_parent(&self, n: &DtNode<'a>, ancestors: &[DtNode<'a>], lookup: Lookup<'_, 'a>) -> Result<Parent<'a>, DtError> {
        for (k, m) in core::iter::once(n).chain(ancestors.iter().rev()).enumerate() {
            if k > 0 && m.has("#interrupt-cells") {
                return Ok(Parent::Node(*m));
            }
            if let Some(ph) = m.u32_prop("interrupt-parent")? {
                return Ok(match self.node_of(ph, lookup)? {
                    Some(c) => Parent::Node(c),
                    None => Parent::Missing,
                });
            }
        }
        // No interrupt parent on the way up: the GIC binding the kernel
        // has always assumed (trees written for it, such as partial test
        // trees, name no controller).
        Ok(Parent::Assumed)
    }

    /// How a controller node takes specifiers: the GIC's cells, or another.
    fn route_to(c: &DtNode<'a>) -> Result<Route, DtError> {
        if !GICS.iter().any(|g| c.is_compatible(g)) {
            return Ok(Route::Other(text(c.name())));
        }
        match c.u32_prop("#interrupt-cells")? {
            Some(cells @ (3 | 4)) => Ok(Route::Gic { cells }),
            _ => Err(c.bad("#interrupt-cells", "a GIC takes specifiers of 3 or 4 cells")),
        }
    }

    /// Where `n`'s `interrupts` go (`ancestors` root first), and the raw
    /// property; `interrupts-extended` is read per entry by [`irqs`].
    ///
    /// [`irqs`]: DeviceTree::irqs
    pub fn interrupt_route(&self, n: &DtNode<'a>, ancestors: &[DtNode<'a>], lookup: Lookup<'_, 'a>) -> Result<Route, DtError> {
        if n.prop("interrupts").is_none() {
            return Ok(Route::None);
        }
        match self.interrupt_parent(n, ancestors, lookup)? {
            Parent::Node(c) => Self::route_to(&c),
            Parent::Assumed => Ok(Route::Gic { cells: 3 }),
            Parent::Missing => Ok(Route::None),
        }
    }

    /// `n`'s interrupts decoded against the GIC, in order (at most `N`):
    /// `Ok(Err(route))` when they do not go to the GIC (the route says
    /// where); an entry the kernel does not decode is `None`. A list that
    /// is not whole specifiers is an error naming the node. `lookup`
    /// finds a node by phandle faster than a walk where the caller has an
    /// index (`None`: a walk of the tree).
    #[allow(clippy::type_complexity)]
    pub fn irqs<const N: usize>(
        &self,
        n: &DtNode<'a>,
        ancestors: &[DtNode<'a>],
        lookup: Lookup<'_, 'a>,
    ) -> Result<Result<arrayvec::ArrayVec<Option<Irq>, N>, Route>, DtError> {
        let mut out = arrayvec::ArrayVec::new();
        let route = self.each_irq(n, ancestors, lookup, &mut |irq| out.try_push(irq).is_ok())?;
        Ok(route.map(|()| out))
    }

    /// Every one of `n`'s interrupts, as [`irqs`] reads them but with no
    /// bound on their number (a device's lines are owned whole: one left
    /// out would be a line nobody is refused).
    ///
    /// [`irqs`]: DeviceTree::irqs
    #[allow(clippy::type_complexity)]
    pub fn all_irqs(&self, n: &DtNode<'a>, ancestors: &[DtNode<'a>], lookup: Lookup<'_, 'a>) -> Result<Result<alloc::vec::Vec<Option<Irq>>, Route>, DtError> {
        let mut out = alloc::vec::Vec::new();
        let route = self.each_irq(n, ancestors, lookup, &mut |irq| {
            out.push(irq);
            true
        })?;
        Ok(route.map(|()| out))
    }

    /// The one reader behind [`irqs`] and [`all_irqs`]: hands each entry
    /// to `sink` in order, until it answers `false` (full); the whole
    /// property is still checked.
    ///
    /// [`irqs`]: DeviceTree::irqs
    /// [`all_irqs`]: DeviceTree::all_irqs
    fn each_irq(
        &self,
        n: &DtNode<'a>,
        ancestors: &[DtNode<'a>],
        lookup: Lookup<'_, 'a>,
        sink: &mut dyn FnMut(Option<Irq>) -> bool,
    ) -> Result<Result<(), Route>, DtError> {
        if let Some(v) = n.prop("interrupts-extended") {
            // <phandle specifier...> per entry, each in its controller's cells.
            let mut i = 0;
            let total = v.len() / 4;
            if v.len() % 4 != 0 {
                return Err(n.bad("interrupts-extended", "not a list of cells"));
            }
            let mut open = true;
            while i < total {
                let ph = cell(v, i).unwrap_or(0);
                let c = self.node_of(ph, lookup)?.ok_or_else(|| n.bad("interrupts-extended", "names a phandle no node has"))?;
                let cells = c.u32_prop("#interrupt-cells")?.ok_or_else(|| n.bad("interrupts-extended", "names a node without #interrupt-cells"))? as usize;
                if i + 1 + cells > total {
                    return Err(n.bad("interrupts-extended", "the last specifier is cut short"));
                }
                match Self::route_to(&c)? {
                    Route::Gic { .. } if cells >= 3 => {
                        let at = |k| cell(v, i + 1 + k).unwrap_or(0);
                        open = open && sink(Irq::from_gic_cells(at(0), at(1), at(2)));
                    }
                    route => return Ok(Err(route)),
                }
                i += 1 + cells;
            }
            return Ok(Ok(()));
        }
        let Some(v) = n.prop("interrupts") else { return Ok(Ok(())) };
        let cells = match self.interrupt_route(n, ancestors, lookup)? {
            Route::Gic { cells } => cells as usize,
            route => return Ok(Err(route)),
        };
        if v.len() % (cells * 4) != 0 {
            return Err(n.bad("interrupts", "not a list of whole GIC specifiers (#interrupt-cells of its GIC)"));
        }
        for spec in v.chunks_exact(cells * 4) {
            let at = |k| cell(spec, k).unwrap_or(0);
            if !sink(Irq::from_gic_cells(at(0), at(1), at(2))) {
                break;
            }
        }
        Ok(Ok(()))
    }
}

/// A PCI host bridge's legacy interrupts (INTx): its `interrupt-map` and
/// `interrupt-map-mask` (Devicetree Specification v0.4 §2.4.3; PCI Bus
/// Binding to IEEE 1275 §4.1.1, and the `pci-host-ecam-generic` binding).
/// Each entry maps a function on the host's root bus (phys.hi phys.mid
/// phys.lo: bus, device, function) and a pin (1 = INTA … 4 = INTD), both
/// masked, to its interrupt parent's specifier. A function behind bridges
/// reaches the map through the standard swizzle ([`swizzle`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntxMap {
    /// `interrupt-map-mask` over (phys.hi, phys.mid, phys.lo, pin); all
    /// ones when absent.
    pub mask: [u32; 4],
    /// Child (masked unit address and pin) → the GIC interrupt, `None`
    /// where the entry's parent is another controller.
    pub entries: alloc::vec::Vec<([u32; 4], Option<Irq>)>,
}

/// Most `interrupt-map` entries read (QEMU's `virt` has 16; real hosts 4).
pub const MAX_INTX_ENTRIES: usize = 256;

impl IntxMap {
    /// The GIC interrupt of `pin` (1..=4) of the function at `bdf` on the
    /// host's root bus: the first entry matching under the mask.
    pub fn lookup(&self, bdf: crate::pci::Bdf, pin: u8) -> Option<Irq> {
        let hi = u32::from(bdf.bus) << 16 | u32::from(bdf.dev) << 11 | u32::from(bdf.func) << 8;
        let key = [hi & self.mask[0], 0, 0, u32::from(pin) & self.mask[3]];
        self.entries.iter().find(|(child, _)| *child == key).and_then(|(_, irq)| *irq)
    }
}

/// The pin a bridge's upstream side sees for `pin` (1..=4) of the device
/// numbered `dev` on its secondary bus (PCI-to-PCI Bridge 1.2 §9.1).
pub fn swizzle(pin: u8, dev: u8) -> u8 {
    (pin.wrapping_sub(1).wrapping_add(dev) % 4) + 1
}

impl<'a> DeviceTree<'a> {
    /// The INTx map of the PCI host bridge `n` (three address cells); an
    /// empty map when it has no `interrupt-map`.
    pub fn intx_map(&self, n: &DtNode<'a>) -> Result<IntxMap, DtError> {
        let mut map = IntxMap { mask: [u32::MAX; 4], entries: alloc::vec::Vec::new() };
        let Some(v) = n.prop("interrupt-map") else { return Ok(map) };
        if n.u32_prop("#interrupt-cells")? != Some(1) {
            return Err(n.bad("#interrupt-cells", "a PCI host bridge with an interrupt-map has one interrupt cell (the pin)"));
        }
        if let Some(m) = n.prop("interrupt-map-mask") {
            if m.len() != 16 {
                return Err(n.bad("interrupt-map-mask", "expected four cells (unit address and pin)"));
            }
            for (i, c) in map.mask.iter_mut().enumerate() {
                *c = cell(m, i).unwrap_or(0);
            }
        }
        if v.len() % 4 != 0 {
            return Err(n.bad("interrupt-map", "not a list of cells"));
        }
        let total = v.len() / 4;
        let mut i = 0;
        while i < total {
            if i + 5 > total {
                return Err(n.bad("interrupt-map", "the last entry is cut short"));
            }
            let child = [0, 1, 2, 3].map(|k| cell(v, i + k).unwrap_or(0) & map.mask[k]);
            let ph = cell(v, i + 4).unwrap_or(0);
            let parent = self.by_phandle(ph)?.ok_or_else(|| n.bad("interrupt-map", "names a phandle no node has"))?;
            // The parent's unit address is `#address-cells` of the parent (0
            // when absent), its specifier `#interrupt-cells`.
            let addr = parent.u32_prop("#address-cells")?.unwrap_or(0) as usize;
            let cells = parent.u32_prop("#interrupt-cells")?.ok_or_else(|| n.bad("interrupt-map", "names a parent without #interrupt-cells"))? as usize;
            let spec = i + 5 + addr;
            if addr > 3 || cells > 4 || spec + cells > total {
                return Err(n.bad("interrupt-map", "an entry is cut short or its parent's cells are too many"));
            }
            let irq = match Self::route_to(&parent)? {
                Route::Gic { .. } if cells >= 3 => {
                    let at = |k| cell(v, spec + k).unwrap_or(0);
                    Irq::from_gic_cells(at(0), at(1), at(2))
                }
                _ => None,
            };
            if map.entries.len() == MAX_INTX_ENTRIES {
                return Err(n.bad("interrupt-map", "more entries than the kernel reads (256)"));
            }
            map.entries.push((child, irq));
            i = spec + cells;
        }
        Ok(map)
    }
}
