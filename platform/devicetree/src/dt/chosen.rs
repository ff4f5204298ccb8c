//! `/chosen` (Devicetree Specification v0.4, §3.6): the boot arguments
//! and the console `stdout-path` names, directly or through `/aliases`
//! (§3.3, `serial2:1500000n8`: the options after `:` are the firmware's),
//! as a PL011 (or the SBSA generic UART, its subset), a 16550 (serial class binding, §4.2: `ns16550a`,
//! `snps,dw-apb-uart`, TI's 8250 variants) or NXP's LPUART, its `reg`
//! translated through its parents' `ranges`.

use super::{DeviceTree, DtError, DtNode};
use crate::addr::PhysAddr;

/// Which UART, and how its registers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011.
    Pl011,
    /// The Arm SBSA generic UART (`arm,sbsa-uart`; HiSilicon hip07): the
    /// PL011's data and flag registers only, configured by the firmware.
    SbsaUart,
    /// 16550-compatible: registers `1 << shift` bytes apart, accessed
    /// `width` bytes wide (1 or 4).
    Ns16550 {
        /// The DT's `reg-shift` (default 0; TI's 8250 variants 2).
        shift: u8,
        /// The DT's `reg-io-width` (default 1).
        width: u8,
    },
    /// NXP LPUART with 32-bit little-endian registers (`fsl,imx7ulp-lpuart`
    /// and its successors on i.MX8ULP/93/95, `fsl,ls1028a-lpuart`): its
    /// BAUD, STAT, CTRL and DATA registers start `offset` bytes into the
    /// block (0x10 from i.MX7ULP on, after VERID/PARAM/GLOBAL/PINCFG; 0 on
    /// LS1028A).
    Lpuart {
        /// Where BAUD is in the block.
        offset: u8,
    },
}

/// A console UART: where and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Its register block.
    pub base: PhysAddr,
    /// Its register interface.
    pub kind: UartKind,
}

impl Uart {
    /// A PL011 at `base`.
    pub const fn pl011(base: PhysAddr) -> Uart {
        Uart { base, kind: UartKind::Pl011 }
    }
}

/// 16550-compatible UARTs the console drives (Linux's of_serial names).
const NS16550_COMPATIBLES: [&str; 4] = ["ns16550a", "ns16550", "ns16450", "snps,dw-apb-uart"];
/// TI's 8250 variants (Linux's 8250_omap): registers 4 bytes apart
/// (`reg-shift` 2) unless the node says otherwise, byte accesses.
const TI_8250_COMPATIBLES: [&str; 5] = ["ti,am654-uart", "ti,j721e-uart", "ti,am64-uart", "ti,omap4-uart", "ti,omap3-uart"];
/// LPUARTs with the 32-bit register block at offset 0x10 (Linux's
/// fsl_lpuart: `imx7ulp`, and `imx8ulp`/`imx93`/`imx95` list it or
/// `imx8ulp` as their fallback; `imx8qxp` lists `imx7ulp`).
const LPUART_AT_0X10: [&str; 2] = ["fsl,imx7ulp-lpuart", "fsl,imx8ulp-lpuart"];
/// LPUARTs with the 32-bit little-endian block at offset 0.
const LPUART_AT_0: [&str; 1] = ["fsl,ls1028a-lpuart"];

impl<'a> DeviceTree<'a> {
    /// `/chosen/bootargs`, or "".
    pub fn bootargs(&self) -> Result<&'a str, DtError> {
        match self.find("/chosen")? {
            Some(c) => Ok(c.str_prop("bootargs")?.unwrap_or("")),
            None => Ok(""),
        }
    }

    /// The node `/chosen/stdout-path` names (a path or an alias; options
    /// after ':' dropped), with its ancestors.
    pub fn stdout_node(&self) -> Result<Option<(DtNode<'a>, super::ranges::Ancestors<'a>)>, DtError> {
        let Some(chosen) = self.find("/chosen")? else { return Ok(None) };
        let Some(path) = chosen.str_prop("stdout-path")?.or(chosen.str_prop("linux,stdout-path")?) else { return Ok(None) };
        let path = path.split(':').next().unwrap_or("");
        let path = if path.starts_with('/') {
            path
        } else {
            match self.find("/aliases")? {
                Some(a) => match a.str_prop_dyn(path)? {
                    Some(p) => p,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        };
        self.find_with_ancestors(path)
    }

    /// The GIC SPIs of the node `/chosen/stdout-path` names (each once):
    /// lines the kernel's console may raise, so no partition is given
    /// them. Empty when there is no such node or its interrupts go to
    /// another controller; a malformed list is an error naming the node.
    pub fn stdout_spis(&self) -> Result<alloc::vec::Vec<super::Irq>, DtError> {
        let Some((uart, ancestors)) = self.stdout_node()? else { return Ok(alloc::vec::Vec::new()) };
        let mut spis: alloc::vec::Vec<super::Irq> = alloc::vec::Vec::new();
        for irq in self.all_irqs(&uart, &ancestors, None)?.unwrap_or_default().into_iter().flatten() {
            if irq.intid >= 32 && !spis.iter().any(|s| s.intid == irq.intid) {
                spis.push(irq);
            }
        }
        Ok(spis)
    }

    /// The console UART `/chosen/stdout-path` names: a PL011 or SBSA UART, a 16550
    /// (with its `reg-shift` and `reg-io-width`) or an LPUART; `None` for
    /// any other UART.
    pub fn stdout_uart(&self) -> Result<Option<Uart>, DtError> {
        let Some((uart, ancestors)) = self.stdout_node()? else { return Ok(None) };
        let kind = if uart.is_compatible("arm,pl011") {
            UartKind::Pl011
        } else if uart.is_compatible("arm,sbsa-uart") {
            UartKind::SbsaUart
        } else if let Some(ti) = NS16550_COMPATIBLES.iter().chain(&TI_8250_COMPATIBLES).find(|c| uart.is_compatible(c)) {
            let default_shift = if TI_8250_COMPATIBLES.contains(ti) { 2 } else { 0 };
            let shift = uart.u32_prop("reg-shift")?.unwrap_or(default_shift);
            let width = uart.u32_prop("reg-io-width")?.unwrap_or(1);
            if shift > 4 {
                return Err(uart.bad("reg-shift", "more than 4"));
            }
            if width != 1 && !(width == 4 && shift >= 2) {
                return Err(uart.bad("reg-io-width", "only 1, or 4 with reg-shift of at least 2, is supported"));
            }
            UartKind::Ns16550 { shift: shift as u8, width: width as u8 }
        } else if LPUART_AT_0X10.iter().any(|c| uart.is_compatible(c)) {
            UartKind::Lpuart { offset: 0x10 }
        } else if LPUART_AT_0.iter().any(|c| uart.is_compatible(c)) {
            UartKind::Lpuart { offset: 0 }
        } else {
            return Ok(None);
        };
        let Some(reg) = uart.reg()?.first().copied() else { return Ok(None) };
        let reg = super::ranges::translate_range(ancestors.iter(), reg)?;
        Ok(Some(Uart { base: reg.start, kind }))
    }
}

impl<'a> DtNode<'a> {
    fn str_prop_dyn(&self, name: &str) -> Result<Option<&'a str>, DtError> {
        let Some(v) = self.prop(name) else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        Ok(core::str::from_utf8(&v[..end]).ok())
    }
}
