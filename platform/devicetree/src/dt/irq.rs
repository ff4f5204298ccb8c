//! Interrupts (Devicetree Specification v0.4, §2.4) as the GICv3 binding
//! specifies them: three-cell specifiers (type, number, flags).

use super::{DeviceTree, DtError, DtNode};

/// A GIC interrupt decoded from a three-cell specifier.
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


impl<'a> DeviceTree<'a> {
    /// Decodes the `index`-th interrupt of `n` against its GIC parent
    /// (three-cell specifiers: type, number, flags).
    pub(super) fn irq(&self, n: &DtNode<'a>, index: usize) -> Result<Option<Irq>, DtError> {
        let Some(v) = n.prop("interrupts") else { return Ok(None) };
        if v.len() % 12 != 0 {
            return Err(n.bad("interrupts", "not a list of 3-cell GIC specifiers"));
        }
        let Some(spec) = v.chunks_exact(12).nth(index) else { return Ok(None) };
        let cell = |i: usize| u32::from_be_bytes([spec[i * 4], spec[i * 4 + 1], spec[i * 4 + 2], spec[i * 4 + 3]]);
        let intid = match cell(0) {
            0 => cell(1).checked_add(32).filter(|&i| i < 1020),
            1 => cell(1).checked_add(16).filter(|&i| i < 32),
            _ => None,
        }
        .ok_or_else(|| n.bad("interrupts", "not a GIC SPI or PPI"))?;
        let edge = cell(2) & 0x3 != 0;
        Ok(Some(Irq { intid, edge }))
    }
}
