//! A synthetic ECAM for host tests: functions with real configuration-space
//! layouts (header, BARs with writable masks, capability lists, ACS), placed
//! in a tree of bridges that route configuration cycles by the bus numbers
//! software programs — so a wrong bus number makes devices disappear, as on
//! hardware.

use super::regs::*;
use super::{Bdf, ConfigSpace};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;

/// Offset of the PCIe capability in synthetic functions (after a PM capability).
pub const PCIE_AT: u16 = 0x50;
/// Offset of the PM capability, the first in the list.
const PM_AT: u16 = 0x40;
/// Offset of the ACS extended capability.
pub const ACS_AT: u16 = 0x100;

/// What kind of BAR a synthetic function has.
#[derive(Clone, Copy, Debug)]
pub enum BarKind {
    /// 32-bit non-prefetchable memory.
    Mem32,
    /// 64-bit non-prefetchable memory.
    Mem64,
    /// 32-bit prefetchable memory.
    Pref32,
    /// 64-bit prefetchable memory.
    Pref64,
    /// I/O space.
    Io,
}

/// How a function behaves after an FLR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlrBehaviour {
    /// Answers "no device" for this many vendor-ID reads, then comes back.
    Returns(u32),
    /// Never answers again.
    Dead,
}

/// One synthetic function.
pub struct SynthFn {
    /// Index of the bridge it sits behind; `None` on the root bus.
    pub parent: Option<usize>,
    /// Device number.
    pub dev: u8,
    /// Function number.
    pub func: u8,
    /// Configuration space.
    pub cfg: Box<[u8; 4096]>,
    wmask: Box<[u8; 4096]>,
    defaults: Box<[u8; 4096]>,
    flr: FlrBehaviour,
    busy: Cell<u32>,
    /// How many FLRs were initiated.
    pub flrs: Cell<u32>,
}

impl SynthFn {
    fn raw(vendor: u16, device: u16, class: u32, header: u8) -> SynthFn {
        let mut f = SynthFn {
            parent: None,
            dev: 0,
            func: 0,
            cfg: Box::new([0; 4096]),
            wmask: Box::new([0; 4096]),
            defaults: Box::new([0; 4096]),
            flr: FlrBehaviour::Returns(3),
            busy: Cell::new(0),
            flrs: Cell::new(0),
        };
        f.set16(VENDOR_ID, vendor);
        f.set16(DEVICE_ID, device);
        f.set32(REVISION, class << 8 | 1);
        f.cfg[HEADER_TYPE as usize] = header;
        // Command: I/O, memory, bus master, INTx disable are writable.
        f.mask16(COMMAND, CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | (1 << 10));
        if header == HEADER_TYPE_BRIDGE {
            for off in [PRIMARY_BUS, SECONDARY_BUS, SUBORDINATE_BUS] {
                f.wmask[off as usize] = 0xff;
            }
            f.wmask[IO_BASE as usize] = 0xf0;
            f.wmask[IO_LIMIT as usize] = 0xf0;
            f.mask16(MEMORY_BASE, 0xfff0);
            f.mask16(MEMORY_LIMIT, 0xfff0);
            f.mask16(IO_BASE_UPPER16, 0xffff);
            f.mask16(IO_LIMIT_UPPER16, 0xffff);
            // A 64-bit prefetchable window (type nibble 1, read-only).
            f.set16(PREF_MEMORY_BASE, 1);
            f.set16(PREF_MEMORY_LIMIT, 1);
            f.mask16(PREF_MEMORY_BASE, 0xfff0);
            f.mask16(PREF_MEMORY_LIMIT, 0xfff0);
            f.mask32(PREF_BASE_UPPER32, u32::MAX);
            f.mask32(PREF_LIMIT_UPPER32, u32::MAX);
        }
        f
    }

    /// A conventional PCI device (no PCIe capability).
    pub fn pci(vendor: u16, device: u16) -> SynthFn {
        SynthFn::raw(vendor, device, 0x00ff00, HEADER_TYPE_NORMAL)
    }
    /// A conventional PCI-to-PCI bridge.
    pub fn pci_bridge() -> SynthFn {
        SynthFn::raw(0x1b36, 0x0001, 0x060400, HEADER_TYPE_BRIDGE)
    }
    /// A PCIe endpoint.
    pub fn endpoint(vendor: u16, device: u16) -> SynthFn {
        SynthFn::raw(vendor, device, 0x020000, HEADER_TYPE_NORMAL).pcie(0x0)
    }
    /// A PCIe bridge-type function: `port_type` 4 root port, 5 upstream,
    /// 6 downstream, 7 PCIe-to-PCI bridge, 8 PCI-to-PCIe bridge.
    pub fn port(port_type: u8) -> SynthFn {
        SynthFn::raw(0x1b36, 0x000c, 0x060400, HEADER_TYPE_BRIDGE).pcie(port_type)
    }

    fn pcie(mut self, port_type: u8) -> SynthFn {
        self.set16(STATUS, STATUS_CAP_LIST);
        self.cfg[CAP_PTR as usize] = PM_AT as u8;
        self.cfg[PM_AT as usize] = 0x01;
        self.cfg[PM_AT as usize + 1] = PCIE_AT as u8;
        self.cfg[PCIE_AT as usize] = CAP_ID_PCIE;
        self.cfg[PCIE_AT as usize + 1] = 0;
        self.set16(PCIE_AT + PCIE_FLAGS, u16::from(port_type) << 4 | 2);
        self.mask16(PCIE_AT + PCIE_DEVCTL, 0xffff);
        self
    }
    /// Sets the multi-function bit of the header type.
    pub fn multifunction(mut self) -> SynthFn {
        self.cfg[HEADER_TYPE as usize] |= HEADER_MULTIFUNCTION;
        self
    }
    /// Advertises Function Level Reset.
    pub fn flr(mut self, behaviour: FlrBehaviour) -> SynthFn {
        let v = self.get32(PCIE_AT + PCIE_DEVCAP) | DEVCAP_FLR;
        self.set32(PCIE_AT + PCIE_DEVCAP, v);
        self.flr = behaviour;
        self
    }
    /// Adds an ACS extended capability implementing `cap` (controls for
    /// implemented features are writable, the rest read-only zero).
    pub fn acs(mut self, cap: u16) -> SynthFn {
        self.set32(ACS_AT, u32::from(EXT_CAP_ID_ACS) | 1 << 16);
        self.set16(ACS_AT + ACS_CAP, cap);
        self.mask16(ACS_AT + ACS_CTRL, cap);
        self
    }
    /// Adds BAR `i` of `size` bytes.
    pub fn bar(mut self, i: u16, size: u64, kind: BarKind) -> SynthFn {
        let off = BAR0 + 4 * i;
        let mask = !(size - 1);
        let (bits, is64) = match kind {
            BarKind::Mem32 => (0, false),
            BarKind::Mem64 => (BAR_TYPE_64, true),
            BarKind::Pref32 => (BAR_PREFETCH, false),
            BarKind::Pref64 => (BAR_PREFETCH | BAR_TYPE_64, true),
            BarKind::Io => (BAR_IO, false),
        };
        self.set32(off, bits);
        self.mask32(off, mask as u32 & if bits & BAR_IO != 0 { !0x3 } else { !0xf });
        if is64 {
            self.mask32(off + 4, (mask >> 32) as u32);
        }
        self
    }
    /// Starts with these command bits set (firmware left them on).
    pub fn command(mut self, v: u16) -> SynthFn {
        self.set16(COMMAND, v);
        self
    }
    /// A bridge without a prefetchable window.
    pub fn no_pref_window(mut self) -> SynthFn {
        for off in [PREF_MEMORY_BASE, PREF_MEMORY_LIMIT] {
            self.set16(off, 0);
            self.mask16(off, 0);
        }
        self.mask32(PREF_BASE_UPPER32, 0);
        self.mask32(PREF_LIMIT_UPPER32, 0);
        self
    }

    fn set16(&mut self, off: u16, v: u16) {
        self.cfg[off as usize..off as usize + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(&mut self, off: u16, v: u32) {
        self.cfg[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn mask16(&mut self, off: u16, v: u16) {
        self.wmask[off as usize..off as usize + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn mask32(&mut self, off: u16, v: u32) {
        self.wmask[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// A byte.
    pub fn get8(&self, off: u16) -> u8 {
        self.cfg[off as usize]
    }
    /// A 16-bit register.
    pub fn get16(&self, off: u16) -> u16 {
        u16::from_le_bytes([self.cfg[off as usize], self.cfg[off as usize + 1]])
    }
    /// A 32-bit register.
    pub fn get32(&self, off: u16) -> u32 {
        let o = off as usize;
        u32::from_le_bytes([self.cfg[o], self.cfg[o + 1], self.cfg[o + 2], self.cfg[o + 3]])
    }
}

/// The synthetic host bridge.
pub struct Model {
    /// The root bus number.
    pub root_bus: u8,
    /// Every function.
    pub fns: Vec<SynthFn>,
}

impl Model {
    /// An empty hierarchy whose root bus is `root_bus`.
    pub fn new(root_bus: u8) -> Model {
        Model { root_bus, fns: Vec::new() }
    }

    /// Places `f` at `dev.func` behind bridge `parent` (or on the root bus).
    pub fn add(&mut self, parent: Option<usize>, dev: u8, func: u8, mut f: SynthFn) -> usize {
        f.parent = parent;
        f.dev = dev;
        f.func = func;
        f.defaults = f.cfg.clone();
        self.fns.push(f);
        self.fns.len() - 1
    }

    /// The bus number function `i` currently appears on.
    fn bus_of(&self, i: usize) -> u8 {
        match self.fns[i].parent {
            None => self.root_bus,
            Some(p) => self.fns[p].cfg[SECONDARY_BUS as usize],
        }
    }

    /// Whether a type 1 configuration cycle for `bus` reaches function `i`
    /// through every bridge above it.
    fn forwarded(&self, i: usize, bus: u8) -> bool {
        let mut p = self.fns[i].parent;
        while let Some(q) = p {
            let (sec, sub) = (self.fns[q].cfg[SECONDARY_BUS as usize], self.fns[q].cfg[SUBORDINATE_BUS as usize]);
            if bus == self.bus_of(q) || bus < sec || bus > sub {
                return false;
            }
            p = self.fns[q].parent;
        }
        true
    }

    /// The function a configuration cycle to `bdf` reaches.
    pub fn route(&self, bdf: Bdf) -> Option<usize> {
        (0..self.fns.len()).find(|&i| {
            let f = &self.fns[i];
            f.dev == bdf.dev && f.func == bdf.func && self.bus_of(i) == bdf.bus && self.forwarded(i, bdf.bus)
        })
    }

    fn read(&self, bdf: Bdf, off: u16, n: usize) -> u32 {
        let Some(i) = self.route(bdf) else { return u32::MAX };
        let f = &self.fns[i];
        if f.busy.get() > 0 {
            if off == VENDOR_ID && f.flr != FlrBehaviour::Dead {
                f.busy.set(f.busy.get() - 1);
            }
            return u32::MAX;
        }
        let mut v = 0u32;
        for k in (0..n).rev() {
            v = v << 8 | u32::from(f.cfg[off as usize + k]);
        }
        v
    }

    fn write(&mut self, bdf: Bdf, off: u16, v: u32, n: usize) {
        let Some(i) = self.route(bdf) else { return };
        let f = &mut self.fns[i];
        if f.busy.get() > 0 {
            return;
        }
        for k in 0..n {
            let o = off as usize + k;
            let b = (v >> (8 * k)) as u8;
            f.cfg[o] = (f.cfg[o] & !f.wmask[o]) | (b & f.wmask[o]);
        }
        let ctl = PCIE_AT + PCIE_DEVCTL;
        if off <= ctl + 1 && off as usize + n > ctl as usize + 1 && f.get16(ctl) & DEVCTL_BCR_FLR != 0 {
            // Function Level Reset: every register back to its default,
            // and the function away for a while.
            f.cfg = f.defaults.clone();
            f.flrs.set(f.flrs.get() + 1);
            f.busy.set(match f.flr {
                FlrBehaviour::Returns(n) => n,
                FlrBehaviour::Dead => 1,
            });
        }
    }
}

impl ConfigSpace for Model {
    fn read8(&self, bdf: Bdf, off: u16) -> u8 {
        self.read(bdf, off, 1) as u8
    }
    fn read16(&self, bdf: Bdf, off: u16) -> u16 {
        self.read(bdf, off, 2) as u16
    }
    fn read32(&self, bdf: Bdf, off: u16) -> u32 {
        self.read(bdf, off, 4)
    }
    fn write8(&mut self, bdf: Bdf, off: u16, v: u8) {
        self.write(bdf, off, u32::from(v), 1)
    }
    fn write16(&mut self, bdf: Bdf, off: u16, v: u16) {
        self.write(bdf, off, u32::from(v), 2)
    }
    fn write32(&mut self, bdf: Bdf, off: u16, v: u32) {
        self.write(bdf, off, v, 4)
    }
}
