//! Enumeration of one host bridge: bus numbers, BARs, bridge windows,
//! capabilities — and every function left unable to master the bus.
//!
//! The walk is depth first in device order, as Linux numbers buses, so the
//! bus numbers match what the overlay binding (boards/bindings/bulkhead,partitions.yaml) and the boot
//! table name. On each bus, every function is found and quiesced (bus
//! master, memory and I/O decode off — firmware may have left them on) and
//! every bridge's stale bus numbers are cleared *before* any bridge on that
//! bus is given new ones, so no stale bridge can claim a bus number being
//! handed out. Because the root bus is quiesced first, every root port has
//! Bus Master Enable off before anything below it is touched: even if
//! enumeration stops on an error, nothing below can reach memory.

use super::caps::{enable_acs, read_caps};
use super::regs::*;
use super::{Acs, Bar, Bdf, BridgeInfo, ConfigSpace, Function, FunctionKind, HostTopology, PciError, Window};
use crate::PhysAddr;
use alloc::vec::Vec;
use arrayvec::ArrayVec;

/// Smallest alignment and spacing of a BAR: one 4 KiB page. PCI allows
/// BARs as small as 16 bytes, but a partition's stage-2 and SMMU mappings
/// have page granularity, so two devices' registers must never share a
/// page or one partition could reach another's device.
pub const BAR_MIN_ALIGN: u64 = 4096;
/// Granularity of bridge memory windows (PCI-to-PCI Bridge 1.2 §3.2.5.8).
pub const BRIDGE_WINDOW_ALIGN: u64 = 1 << 20;
/// Deepest bridge nesting followed; bounds the recursion (and kernel stack).
pub const MAX_BRIDGE_DEPTH: usize = 32;
const FOUR_GIB: u64 = 1 << 32;

fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// A bump allocator over one window. Depth-first allocation keeps each
/// bridge's subtree contiguous, which is what a bridge window needs.
#[derive(Clone, Copy)]
struct Cursor {
    win: Window,
    next: u64,
}

impl Cursor {
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let a = align_up(self.next, align)?;
        let end = a.checked_add(size)?;
        if end > self.win.pci_end() {
            return None;
        }
        self.next = end;
        Some(a)
    }
    fn align(&mut self, align: u64) {
        self.next = align_up(self.next, align).unwrap_or(u64::MAX);
    }
}

/// Enumerates the buses `bus_start..=bus_end` of one host bridge, giving
/// BARs addresses from `windows`.
///
/// Non-prefetchable BARs go to the first non-prefetchable window below
/// 4 GiB (a bridge's non-prefetchable window is 32-bit). Prefetchable BARs
/// go to a prefetchable window (64-bit preferred) or, when the host has
/// none, to another memory window — a prefetchable BAR may always live in
/// non-prefetchable space; never the other way round. Every BAR is
/// naturally aligned and at least [`BAR_MIN_ALIGN`].
///
/// On return every function has Bus Master Enable, Memory Space Enable and
/// I/O Space Enable off, except that bridges with a non-empty memory window
/// have memory decode on so they forward to their secondary side.
pub fn enumerate(cs: &mut impl ConfigSpace, bus_start: u8, bus_end: u8, windows: &[Window]) -> Result<HostTopology, PciError> {
    let usable: Vec<Window> = windows.iter().filter(|w| w.size > 0 && w.pci.checked_add(w.size).is_some()).copied().collect();
    let np = usable.iter().position(|w| !w.prefetchable && w.pci_end() <= FOUR_GIB);
    let pf = usable
        .iter()
        .position(|w| w.prefetchable && w.mem64)
        .or_else(|| usable.iter().position(|w| w.prefetchable))
        .or_else(|| usable.iter().enumerate().position(|(i, w)| !w.prefetchable && Some(i) != np));
    let cursor = |i: Option<usize>| i.and_then(|i| usable.get(i)).map(|w| Cursor { win: *w, next: w.pci });
    let mut e = Enumerator { cs, bus_end: bus_end.max(bus_start), last_bus: bus_start, np: cursor(np), pf: cursor(pf), out: Vec::new() };
    let pf_ok = e.pf.is_some();
    e.scan_bus(bus_start, None, 0, pf_ok)?;
    Ok(HostTopology { root_bus: bus_start, last_bus: e.last_bus, functions: e.out })
}

struct Enumerator<'c, C: ConfigSpace> {
    cs: &'c mut C,
    bus_end: u8,
    last_bus: u8,
    np: Option<Cursor>,
    pf: Option<Cursor>,
    out: Vec<Function>,
}

impl<C: ConfigSpace> Enumerator<'_, C> {
    /// Whether a function answers: all-ones (no device) and all-zeros
    /// (seen on some hosts for absent functions) are not vendor IDs.
    fn present(&self, bdf: Bdf) -> bool {
        !matches!(self.cs.read16(bdf, VENDOR_ID), NO_DEVICE_ID | 0)
    }

    fn quiesce(&mut self, bdf: Bdf) {
        let cmd = self.cs.read16(bdf, COMMAND);
        self.cs.write16(bdf, COMMAND, cmd & !(CMD_BUS_MASTER | CMD_MEMORY | CMD_IO));
    }

    fn scan_bus(&mut self, bus: u8, parent: Option<usize>, depth: usize, pf_ok: bool) -> Result<(), PciError> {
        // Pass 1: find and quiesce every function; forget stale bus numbers.
        let mut found: Vec<(Bdf, u8, bool)> = Vec::new();
        for dev in 0..32 {
            let f0 = Bdf::new(bus, dev, 0);
            if !self.present(f0) {
                continue;
            }
            let multifunction = self.cs.read8(f0, HEADER_TYPE) & HEADER_MULTIFUNCTION != 0;
            for func in 0..if multifunction { 8 } else { 1 } {
                let bdf = Bdf::new(bus, dev, func);
                if func > 0 && !self.present(bdf) {
                    continue;
                }
                self.quiesce(bdf);
                let hdr = self.cs.read8(bdf, HEADER_TYPE) & !HEADER_MULTIFUNCTION;
                if hdr == HEADER_TYPE_BRIDGE {
                    self.cs.write8(bdf, SUBORDINATE_BUS, 0);
                    self.cs.write8(bdf, SECONDARY_BUS, 0);
                    self.cs.write8(bdf, PRIMARY_BUS, 0);
                }
                found.push((bdf, hdr, multifunction));
            }
        }
        // Pass 2: describe, give BARs addresses, descend into bridges.
        for (bdf, hdr, multifunction) in found {
            let idx = self.out.len();
            let f = self.describe(bdf, hdr, multifunction, parent);
            self.out.push(f);
            self.assign_bars(idx, pf_ok)?;
            if hdr == HEADER_TYPE_BRIDGE {
                self.bridge(idx, depth, pf_ok)?;
            }
        }
        Ok(())
    }

    fn describe(&mut self, bdf: Bdf, hdr: u8, multifunction: bool, parent: Option<usize>) -> Function {
        let id = self.cs.read32(bdf, VENDOR_ID);
        let class = self.cs.read32(bdf, REVISION) >> 8;
        let caps = read_caps(self.cs, bdf);
        let acs = caps.acs.map(|at| {
            let (cap, ctrl) = enable_acs(self.cs, bdf, at);
            Acs { offset: at, cap, ctrl }
        });
        Function {
            bdf,
            vendor: id as u16,
            device: (id >> 16) as u16,
            class,
            header_type: hdr,
            kind: FunctionKind::from_parts(caps.port_type, hdr),
            parent,
            bars: ArrayVec::new(),
            io_bars: 0,
            acs,
            multifunction,
            flr: caps.flr,
            pcie_cap: caps.pcie,
            interrupt_pin: match self.cs.read8(bdf, INTERRUPT_PIN) {
                p @ 1..=4 => p,
                _ => 0,
            },
            bridge: None,
        }
    }

    /// Sizes every BAR (write all-ones, read the writable mask back,
    /// restore) and gives each memory BAR an address.
    fn assign_bars(&mut self, idx: usize, pf_ok: bool) -> Result<(), PciError> {
        let Some(f) = self.out.get(idx) else { return Ok(()) };
        let (bdf, hdr) = (f.bdf, f.header_type);
        let count: u8 = match hdr {
            HEADER_TYPE_NORMAL => 6,
            HEADER_TYPE_BRIDGE => 2,
            _ => 0, // CardBus and reserved layouts: no BARs handed out
        };
        let mut bars: ArrayVec<Bar, 6> = ArrayVec::new();
        let mut io_bars = 0u8;
        let mut i = 0u8;
        while i < count {
            let off = BAR0 + 4 * u16::from(i);
            let orig = self.cs.read32(bdf, off);
            self.cs.write32(bdf, off, u32::MAX);
            let lo = self.cs.read32(bdf, off);
            self.cs.write32(bdf, off, orig);
            if orig & BAR_IO != 0 {
                if lo & !0x3 != 0 {
                    io_bars |= 1 << i;
                }
                i += 1;
                continue;
            }
            let is_64 = orig & BAR_TYPE_MASK == BAR_TYPE_64;
            let prefetchable = orig & BAR_PREFETCH != 0;
            let mask = if is_64 {
                if i + 1 >= count {
                    return Err(PciError::BadBar { bdf, bar: i });
                }
                let orig_hi = self.cs.read32(bdf, off + 4);
                self.cs.write32(bdf, off + 4, u32::MAX);
                let hi = self.cs.read32(bdf, off + 4);
                self.cs.write32(bdf, off + 4, orig_hi);
                (u64::from(hi) << 32) | u64::from(lo & !0xf)
            } else if lo & !0xf == 0 {
                0
            } else {
                0xffff_ffff_0000_0000 | u64::from(lo & !0xf)
            };
            // The size is the lowest writable address bit; a BAR with no
            // writable bit is not implemented.
            let size = mask & mask.wrapping_neg();
            if size != 0 {
                let (pci, cpu) = self.place(bdf, i, size, is_64, prefetchable, pf_ok)?;
                self.cs.write32(bdf, off, pci as u32);
                if is_64 {
                    self.cs.write32(bdf, off + 4, (pci >> 32) as u32);
                }
                // Capacity 6 with at most 6 BARs per function: cannot fail.
                let _ = bars.try_push(Bar { index: i, cpu, pci, size, is_64, prefetchable });
            }
            i += if is_64 { 2 } else { 1 };
        }
        if let Some(f) = self.out.get_mut(idx) {
            f.bars = bars;
            f.io_bars = io_bars;
        }
        Ok(())
    }

    fn place(&mut self, bdf: Bdf, bar: u8, size: u64, is_64: bool, pref: bool, pf_ok: bool) -> Result<(u64, PhysAddr), PciError> {
        let exhausted = PciError::WindowExhausted { bdf, bar, size };
        let span = size.max(BAR_MIN_ALIGN);
        // A 32-bit BAR cannot hold an address above 4 GiB.
        let use_pf = pref && pf_ok && self.pf.is_some_and(|c| is_64 || c.win.pci_end() <= FOUR_GIB);
        let c = if use_pf { self.pf.as_mut() } else { self.np.as_mut() }.ok_or(exhausted)?;
        let a = c.alloc(span, span).ok_or(exhausted)?;
        Ok((a, c.win.cpu_of(a)))
    }

    /// Whether the bridge implements a prefetchable window, and whether it
    /// is 64-bit (PCI-to-PCI Bridge 1.2 §3.2.5.9: the register is read-only
    /// zero when absent).
    fn probe_pref(&mut self, bdf: Bdf) -> Option<bool> {
        self.cs.write16(bdf, PREF_MEMORY_BASE, 0xfff0);
        let v = self.cs.read16(bdf, PREF_MEMORY_BASE);
        self.cs.write16(bdf, PREF_MEMORY_BASE, 0);
        if v == 0 {
            None
        } else {
            Some(v & 0xf == 1)
        }
    }

    fn bridge(&mut self, idx: usize, depth: usize, pf_ok: bool) -> Result<(), PciError> {
        let Some(bdf) = self.out.get(idx).map(|f| f.bdf) else { return Ok(()) };
        if depth >= MAX_BRIDGE_DEPTH {
            return Err(PciError::TooDeep { bridge: bdf });
        }
        let sec = self.last_bus.checked_add(1).filter(|&b| b <= self.bus_end).ok_or(PciError::BusesExhausted { bridge: bdf })?;
        self.last_bus = sec;
        // Subordinate = the host's last bus while the subtree is scanned,
        // so configuration cycles reach every bus number still unassigned.
        self.cs.write8(bdf, PRIMARY_BUS, bdf.bus);
        self.cs.write8(bdf, SECONDARY_BUS, sec);
        self.cs.write8(bdf, SUBORDINATE_BUS, self.bus_end);
        // No I/O window: base above limit disables it.
        self.cs.write8(bdf, IO_BASE, 0xf0);
        self.cs.write8(bdf, IO_LIMIT, 0);
        self.cs.write16(bdf, IO_BASE_UPPER16, 0);
        self.cs.write16(bdf, IO_LIMIT_UPPER16, 0);

        let pref = self.probe_pref(bdf);
        let child_pf_ok = pf_ok
            && match (pref, self.pf) {
                (Some(is64), Some(c)) => is64 || c.win.pci_end() <= FOUR_GIB,
                _ => false,
            };
        let np_start = self.np.as_mut().map(|c| {
            c.align(BRIDGE_WINDOW_ALIGN);
            c.next
        });
        let pf_start = if child_pf_ok {
            self.pf.as_mut().map(|c| {
                c.align(BRIDGE_WINDOW_ALIGN);
                c.next
            })
        } else {
            None
        };

        self.scan_bus(sec, Some(idx), depth + 1, child_pf_ok)?;
        let sub = self.last_bus;
        self.cs.write8(bdf, SUBORDINATE_BUS, sub);

        let close = |c: &mut Option<Cursor>, start: Option<u64>| -> Option<(u64, u64, Window)> {
            let (c, start) = (c.as_mut()?, start?);
            c.align(BRIDGE_WINDOW_ALIGN);
            (c.next > start).then_some((start, c.next, c.win))
        };
        let mem = close(&mut self.np, np_start);
        let pref_win = close(&mut self.pf, pf_start);

        match mem {
            Some((s, e, _)) => {
                self.cs.write16(bdf, MEMORY_BASE, ((s >> 16) & 0xfff0) as u16);
                self.cs.write16(bdf, MEMORY_LIMIT, (((e - 1) >> 16) & 0xfff0) as u16);
            }
            None => {
                self.cs.write16(bdf, MEMORY_BASE, 0xfff0);
                self.cs.write16(bdf, MEMORY_LIMIT, 0);
            }
        }
        if pref.is_some() {
            // Upper limit first, so the window is never briefly enormous.
            self.cs.write32(bdf, PREF_LIMIT_UPPER32, 0);
            match pref_win {
                Some((s, e, _)) => {
                    self.cs.write16(bdf, PREF_MEMORY_BASE, ((s >> 16) & 0xfff0) as u16);
                    self.cs.write16(bdf, PREF_MEMORY_LIMIT, (((e - 1) >> 16) & 0xfff0) as u16);
                    self.cs.write32(bdf, PREF_BASE_UPPER32, (s >> 32) as u32);
                    self.cs.write32(bdf, PREF_LIMIT_UPPER32, ((e - 1) >> 32) as u32);
                }
                None => {
                    self.cs.write16(bdf, PREF_MEMORY_BASE, 0xfff0);
                    self.cs.write16(bdf, PREF_MEMORY_LIMIT, 0);
                    self.cs.write32(bdf, PREF_BASE_UPPER32, 0);
                }
            }
        }
        if mem.is_some() || pref_win.is_some() {
            // Forwarding only: memory decode, never bus mastering.
            let cmd = self.cs.read16(bdf, COMMAND) & !(CMD_BUS_MASTER | CMD_IO);
            self.cs.write16(bdf, COMMAND, cmd | CMD_MEMORY);
        }
        if let Some(f) = self.out.get_mut(idx) {
            f.bridge = Some(BridgeInfo {
                primary: bdf.bus,
                secondary: sec,
                subordinate: sub,
                mem: mem.map(|(s, e, w)| w.cpu_range(s, e)),
                pref: pref_win.map(|(s, e, w)| w.cpu_range(s, e)),
            });
        }
        Ok(())
    }
}

/// The vendor ID of an absent function.
const NO_DEVICE_ID: u16 = super::NO_DEVICE;
