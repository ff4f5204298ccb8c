//! Per-function controls for ownership changes (DESIGN.md I3, I4): bus
//! mastering and memory decode are granted only after the owner's STE is
//! live and taken away first; a Function Level Reset wipes the device's
//! state between owners.

use super::caps::find_cap;
use super::regs::*;
use super::{Bdf, ConfigSpace, PciError, NO_DEVICE};
use embedded_hal::delay::DelayNs;

/// Time a function may take after an FLR before software touches it
/// (PCIe §6.6.2: "100 ms after initiating the FLR").
pub const FLR_WAIT_MS: u32 = 100;
/// How long after that wait the function may still answer with
/// "not ready" before it is given up (PCIe §6.6.1 allows 1.0 s for a
/// device to become Configuration-Ready).
pub const FLR_READY_TIMEOUT_MS: u32 = 1000;
/// Polling step while waiting for the function to come back.
const FLR_POLL_MS: u32 = 10;
/// How long to wait for Transactions Pending to clear before the FLR.
const PENDING_TIMEOUT_MS: u32 = 100;
/// A Configuration Request Retry Status completion, seen by software as
/// this vendor ID (PCIe §2.3.2) when CRS Software Visibility is on.
const CRS_VENDOR_ID: u16 = 0x0001;

fn present(cs: &impl ConfigSpace, bdf: Bdf) -> bool {
    !matches!(cs.read16(bdf, VENDOR_ID), NO_DEVICE | 0 | CRS_VENDOR_ID)
}

/// Sets the Command bits in `mask` to `value` (the others kept), with one
/// write, none when nothing changes.
pub fn set_command(cs: &mut impl ConfigSpace, bdf: Bdf, mask: u16, value: u16) -> Result<(), PciError> {
    if !present(cs, bdf) {
        return Err(PciError::NotPresent(bdf));
    }
    let cmd = cs.read16(bdf, COMMAND);
    let new = cmd & !mask | value & mask;
    if new != cmd {
        cs.write16(bdf, COMMAND, new);
    }
    Ok(())
}

fn set_command_bit(cs: &mut impl ConfigSpace, bdf: Bdf, bit: u16, on: bool) -> Result<(), PciError> {
    set_command(cs, bdf, bit, if on { bit } else { 0 })
}

/// Turns Bus Master Enable on or off: whether the function may issue
/// memory requests (DMA, MSIs). For a bridge, whether it forwards them
/// upstream.
pub fn set_bus_master(cs: &mut impl ConfigSpace, bdf: Bdf, on: bool) -> Result<(), PciError> {
    set_command_bit(cs, bdf, CMD_BUS_MASTER, on)
}

/// Turns Memory Space Enable on or off: whether the function answers at its
/// memory BARs (for a bridge, whether it forwards its memory windows).
pub fn set_memory_decode(cs: &mut impl ConfigSpace, bdf: Bdf, on: bool) -> Result<(), PciError> {
    set_command_bit(cs, bdf, CMD_MEMORY, on)
}

/// Function Level Reset (PCIe §6.6.2) of a type 0 function.
///
/// Waits (bounded) for outstanding transactions, saves what enumeration
/// programmed (BARs, ACS controls), initiates the FLR, waits the required
/// 100 ms, then polls until the function answers again (at most
/// [`FLR_READY_TIMEOUT_MS`] more) and restores the saved registers. The
/// function comes back with bus mastering, memory and I/O decode **off**:
/// the caller grants them when the new owner's STE is live.
pub fn function_level_reset(cs: &mut impl ConfigSpace, bdf: Bdf, delay: &mut impl DelayNs) -> Result<(), PciError> {
    if !present(cs, bdf) {
        return Err(PciError::NotPresent(bdf));
    }
    let Some(pcie) = find_cap(cs, bdf, CAP_ID_PCIE).map(u16::from) else {
        return Err(PciError::FlrUnsupported(bdf));
    };
    if cs.read32(bdf, pcie + PCIE_DEVCAP) & DEVCAP_FLR == 0 {
        return Err(PciError::FlrUnsupported(bdf));
    }
    // Quiesce first: no new requests while the reset is pending.
    let cmd = cs.read16(bdf, COMMAND);
    cs.write16(bdf, COMMAND, cmd & !(CMD_BUS_MASTER | CMD_MEMORY | CMD_IO));
    // Outstanding non-posted requests are discarded by the FLR; give them
    // a bounded chance to finish, then reset anyway (as Linux does).
    let mut waited = 0;
    while cs.read16(bdf, pcie + PCIE_DEVSTA) & DEVSTA_TRPND != 0 && waited < PENDING_TIMEOUT_MS {
        delay.delay_ms(FLR_POLL_MS);
        waited += FLR_POLL_MS;
    }

    // The FLR returns the function's registers to their defaults, BARs and
    // ACS controls included; keep what enumeration set.
    let is_bridge = cs.read8(bdf, HEADER_TYPE) & !HEADER_MULTIFUNCTION == HEADER_TYPE_BRIDGE;
    let nbars: u16 = if is_bridge { 2 } else { 6 };
    let mut bars = [0u32; 6];
    for (i, b) in bars.iter_mut().enumerate().take(nbars as usize) {
        *b = cs.read32(bdf, BAR0 + 4 * i as u16);
    }
    let acs = super::caps::find_ext_cap(cs, bdf, EXT_CAP_ID_ACS).map(|at| (at, cs.read16(bdf, at + ACS_CTRL)));

    let ctl = cs.read16(bdf, pcie + PCIE_DEVCTL);
    cs.write16(bdf, pcie + PCIE_DEVCTL, ctl | DEVCTL_BCR_FLR);
    delay.delay_ms(FLR_WAIT_MS);
    let mut waited = 0;
    while !present(cs, bdf) {
        if waited >= FLR_READY_TIMEOUT_MS {
            return Err(PciError::FlrTimeout(bdf));
        }
        delay.delay_ms(FLR_POLL_MS);
        waited += FLR_POLL_MS;
    }

    for (i, b) in bars.iter().enumerate().take(nbars as usize) {
        cs.write32(bdf, BAR0 + 4 * i as u16, *b);
    }
    if let Some((at, ctrl)) = acs {
        cs.write16(bdf, at + ACS_CTRL, ctrl);
    }
    let cmd = cs.read16(bdf, COMMAND);
    cs.write16(bdf, COMMAND, cmd & !(CMD_BUS_MASTER | CMD_MEMORY | CMD_IO));
    Ok(())
}
