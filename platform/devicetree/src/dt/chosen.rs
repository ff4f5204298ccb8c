//! `/chosen` (Devicetree Specification v0.4, §3.6): the boot arguments
//! and the console `stdout-path` names, directly or through `/aliases`
//! (§3.3), as a PL011 or a 16550 (serial class binding, §4.2).

use super::{DeviceTree, DtError, DtNode};
use crate::addr::PhysAddr;

/// Which UART, and how its registers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011.
    Pl011,
    /// 16550-compatible: registers `1 << shift` bytes apart, accessed
    /// `width` bytes wide (1 or 4).
    Ns16550 {
        /// The DT's `reg-shift` (default 0).
        shift: u8,
        /// The DT's `reg-io-width` (default 1).
        width: u8,
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

impl<'a> DeviceTree<'a> {
    /// `/chosen/bootargs`, or "".
    pub fn bootargs(&self) -> Result<&'a str, DtError> {
        match self.find("/chosen")? {
            Some(c) => Ok(c.str_prop("bootargs")?.unwrap_or("")),
            None => Ok(""),
        }
    }

    /// The console UART `/chosen/stdout-path` names (a path or an alias,
    /// options after ':' ignored): a PL011 or a 16550 (with its `reg-shift`
    /// and `reg-io-width`); `None` for any other UART.
    pub fn stdout_uart(&self) -> Result<Option<Uart>, DtError> {
        let Some(chosen) = self.find("/chosen")? else { return Ok(None) };
        let Some(path) = chosen.str_prop("stdout-path")? else { return Ok(None) };
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
        let Some(uart) = self.find(path)? else { return Ok(None) };
        let kind = if uart.is_compatible("arm,pl011") {
            UartKind::Pl011
        } else if NS16550_COMPATIBLES.iter().any(|c| uart.is_compatible(c)) {
            let shift = uart.u32_prop("reg-shift")?.unwrap_or(0);
            let width = uart.u32_prop("reg-io-width")?.unwrap_or(1);
            if shift > 4 {
                return Err(uart.bad("reg-shift", "more than 4"));
            }
            if width != 1 && !(width == 4 && shift >= 2) {
                return Err(uart.bad("reg-io-width", "only 1, or 4 with reg-shift of at least 2, is supported"));
            }
            UartKind::Ns16550 { shift: shift as u8, width: width as u8 }
        } else {
            return Ok(None);
        };
        Ok(uart.reg()?.first().map(|r| Uart { base: r.start, kind }))
    }
}


impl<'a> DtNode<'a> {
    fn str_prop_dyn(&self, name: &str) -> Result<Option<&'a str>, DtError> {
        let Some(v) = self.prop(name) else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        Ok(core::str::from_utf8(&v[..end]).ok())
    }
}
