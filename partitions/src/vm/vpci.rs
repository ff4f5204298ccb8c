//! A partition's virtual PCI host bridge: an emulated ECAM window that
//! shows only the functions the partition owns behind one physical host
//! bridge, so Linux's own PCI code enumerates them and its drivers use
//! them. A partition has one per physical host its functions sit behind
//! (the k-th in ECAM window k, [`super::board::ECAM_BASE`], PCI domain k):
//! each physical host has its own bus addresses and windows, which one
//! virtual host could not hold together.
//!
//! Decisions, each for a reason:
//! - **Renumbered**: the n-th owned function is `00:n.0` on the virtual
//!   host's one bus. Physical numbers would put functions behind bridges
//!   the partition does not see (Linux finds nothing past bus 0 without a
//!   bridge to scan), and a function 1 without its function 0 would not be
//!   scanned at all. Each function shows as single-function.
//! - **BARs stay where the kernel put them**: a BAR reads its physical bus
//!   address (the virtual host's `ranges` are the physical host's, so the
//!   CPU address is the one mapped in the partition's stage 2); sizing (all
//!   ones written) reads the true size; any other write is dropped, so a
//!   guest cannot move a BAR over another partition's memory. The
//!   expansion ROM reads 0.
//! - **Command**: the guest's Memory, Bus Master and INTx Disable bits are
//!   kept here (starting as the kernel set them when it assigned the
//!   function) and reported to the kernel ([`Effect::Command`]), which
//!   applies them to the device only while the partition owns it (I4).
//! - **Capabilities** are shown as the device has them, with MSI and MSI-X
//!   left out of the list (not supported yet: INTx only); a shown
//!   capability's registers pass through, its header is read-only. The PCI
//!   Express capability's Initiate FLR is not passed on but reported
//!   ([`Effect::Flr`]): the kernel resets the function with the waits the
//!   specification asks. Extended capabilities are not shown (the first
//!   header reads 0) and nothing outside a shown capability is.
//! - **A function released** (by a manager or a quarantine) disappears:
//!   its space reads all ones and writes are dropped, as for a removed
//!   device. So does every address that is not an owned function.
//!
//! Register layout: PCI Local Bus 3.0 §6.1 (type 0 header), PCI Express
//! Base §7.5.3, through [`devicetree::pci::config::regs`].

use alloc::vec::Vec;
use devicetree::pci::config::{capabilities, regs::*, ConfigSpace};
use devicetree::pci::{Bar, Bdf, Function};

/// Capability ID: Message Signalled Interrupts (PCI 3.0 §6.8.1).
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID: MSI-X (PCI 3.0 §6.8.2).
pub const CAP_ID_MSIX: u8 = 0x11;
/// Expansion ROM base address.
const ROM: u16 = 0x30;
/// The Command bits a guest may set.
const GUEST_COMMAND: u16 = CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE;
/// One ECAM function's window.
const FUNCTION_WINDOW: u32 = 4096;

/// What a guest's configuration write asks of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the emulation.
    None,
    /// The guest's Command bits changed: apply them to `phys` while the
    /// partition owns it.
    Command {
        /// The physical function.
        phys: Bdf,
        /// Memory Space Enable.
        memory: bool,
        /// Bus Master Enable.
        bus_master: bool,
        /// INTx Emulation Disable.
        intx_disable: bool,
    },
    /// The guest initiated a Function Level Reset of `phys`.
    Flr {
        /// The physical function.
        phys: Bdf,
    },
}

/// One standard capability of a function, as found in its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cap {
    at: u8,
    id: u8,
}

/// One owned function as the partition sees it.
#[derive(Clone, Debug)]
struct VirtualFunction {
    phys: Bdf,
    bars: Vec<Bar>,
    pcie_cap: Option<u8>,
    /// Every capability in the device's list, in list order.
    caps: Vec<Cap>,
    /// BAR registers (bit i: register i) the guest wrote all ones to.
    sizing: u8,
    command: u16,
    interrupt_line: u8,
    present: bool,
}

impl VirtualFunction {
    fn shown(&self, c: &Cap) -> bool {
        c.id != CAP_ID_MSI && c.id != CAP_ID_MSIX
    }

    /// The first shown capability at or after list position `from`.
    fn next_shown(&self, from: usize) -> u8 {
        self.caps.iter().skip(from).find(|c| self.shown(c)).map_or(0, |c| c.at)
    }

    /// The shown capability whose registers hold `off`, and its position:
    /// a capability spans from its offset to the next one's (any, shown or
    /// not) or the end of the standard space.
    fn cap_at(&self, off: u16) -> Option<(usize, Cap)> {
        let end = |c: &Cap| self.caps.iter().map(|d| u16::from(d.at)).filter(|&a| a > u16::from(c.at)).min().unwrap_or(0x100);
        self.caps.iter().enumerate().find(|(_, c)| u16::from(c.at) <= off && off < end(c)).filter(|(_, c)| self.shown(c)).map(|(i, c)| (i, *c))
    }

    /// The BAR register `i` (0..6) as the guest reads it.
    fn bar_register(&self, i: u8) -> u32 {
        let sizing = self.sizing & (1 << i) != 0;
        for b in &self.bars {
            let flags = if b.is_64 { BAR_TYPE_64 } else { 0 } | if b.prefetchable { BAR_PREFETCH } else { 0 };
            let mask = !(b.size.max(16) - 1);
            if b.index == i {
                return if sizing { mask as u32 | flags } else { (b.pci as u32 & !0xf) | flags };
            }
            if b.is_64 && b.index + 1 == i {
                return if sizing { (mask >> 32) as u32 } else { (b.pci >> 32) as u32 };
            }
        }
        0
    }

    /// The dword at `at` (4-aligned) as the guest reads it.
    fn dword(&self, cs: &impl ConfigSpace, at: u16) -> u32 {
        let phys = |off| cs.read32(self.phys, off);
        match at {
            0x00 | 0x08 | 0x2c => phys(at),
            0x04 => {
                let mut status = (phys(at) >> 16) as u16 & !STATUS_CAP_LIST;
                if self.next_shown(0) != 0 {
                    status |= STATUS_CAP_LIST;
                }
                u32::from(self.command) | u32::from(status) << 16
            }
            // Cache line, latency, header (single function, type 0), no BIST.
            0x0c => phys(at) & 0x0000_ffff | u32::from(HEADER_TYPE_NORMAL) << 16,
            0x10..=0x27 => self.bar_register(((at - BAR0) / 4) as u8),
            CAP_PTR => u32::from(self.next_shown(0)),
            INTERRUPT_LINE => phys(at) & 0xffff_ff00 | u32::from(self.interrupt_line),
            0x40..=0xff => match self.cap_at(at) {
                Some((i, c)) => {
                    let mut v = phys(at);
                    if at == u16::from(c.at) {
                        // The header: its ID, and the next shown capability.
                        v = v & 0xffff_0000 | u32::from(self.next_shown(i + 1)) << 8 | u32::from(c.id);
                    }
                    v
                }
                None => 0,
            },
            // ROM, CardBus CIS, reserved, extended capabilities.
            _ => 0,
        }
    }
}

/// The virtual host bridge of one partition.
#[derive(Clone, Debug, Default)]
pub struct VirtualHost {
    functions: Vec<VirtualFunction>,
}

impl VirtualHost {
    /// The host showing `functions` (the partition's, in this order: the
    /// n-th is `00:n.0`), their capability lists read from `cs`.
    pub fn new<'f>(cs: &impl ConfigSpace, functions: impl IntoIterator<Item = &'f Function>) -> VirtualHost {
        let functions = functions
            .into_iter()
            .take(32)
            .map(|f| VirtualFunction {
                phys: f.bdf,
                bars: f.bars.iter().copied().collect(),
                pcie_cap: f.pcie_cap,
                caps: capabilities(cs, f.bdf).map(|(at, id)| Cap { at, id }).collect(),
                sizing: 0,
                command: cs.read16(f.bdf, COMMAND) & GUEST_COMMAND,
                interrupt_line: 0xff,
                present: true,
            })
            .collect();
        VirtualHost { functions }
    }

    /// The virtual address of the function at physical `phys`.
    pub fn virtual_bdf(&self, phys: Bdf) -> Option<Bdf> {
        self.functions.iter().position(|f| f.phys == phys).map(|n| Bdf::new(0, n as u8, 0))
    }

    /// The physical functions in virtual order.
    pub fn functions(&self) -> impl Iterator<Item = Bdf> + '_ {
        self.functions.iter().map(|f| f.phys)
    }

    /// Makes `phys` disappear (released) or come back (assigned again: its
    /// Command as the kernel left it on `cs`, no sizing in progress).
    pub fn set_present(&mut self, cs: &impl ConfigSpace, phys: Bdf, present: bool) {
        if let Some(f) = self.functions.iter_mut().find(|f| f.phys == phys) {
            f.present = present;
            f.command = if present { cs.read16(phys, COMMAND) & GUEST_COMMAND } else { 0 };
            f.sizing = 0;
        }
    }

    /// The function and register an ECAM offset names, when it is a shown
    /// function; the register is 4 KiB-local.
    fn decode(&self, off: u64) -> Option<(usize, u16)> {
        let off = u32::try_from(off).ok()?;
        let (bus, dev, func, reg) = (off >> 20, (off >> 15) & 31, (off >> 12) & 7, off % FUNCTION_WINDOW);
        let n = dev as usize;
        (bus == 0 && func == 0 && self.functions.get(n).is_some_and(|f| f.present)).then_some((n, reg as u16))
    }

    /// A guest read of `width` bytes (1, 2 or 4, aligned) at ECAM offset
    /// `off`; all ones where no shown function is.
    pub fn read(&self, cs: &impl ConfigSpace, off: u64, width: u8) -> u32 {
        let ones = if width >= 4 { u32::MAX } else { (1u32 << (8 * u32::from(width))) - 1 };
        let Some((n, reg)) = self.decode(off) else { return ones };
        if !matches!(width, 1 | 2 | 4) || reg % u16::from(width) != 0 {
            return ones;
        }
        let shift = 8 * u32::from(reg % 4);
        (self.functions[n].dword(cs, reg & !3) >> shift) & ones
    }

    /// A guest write of `width` bytes at ECAM offset `off`; what the kernel
    /// must do about it.
    pub fn write(&mut self, cs: &mut impl ConfigSpace, off: u64, width: u8, value: u32) -> Effect {
        let Some((n, reg)) = self.decode(off) else { return Effect::None };
        if !matches!(width, 1 | 2 | 4) || reg % u16::from(width) != 0 {
            return Effect::None;
        }
        let f = &mut self.functions[n];
        // The written bytes, as a mask over the dword at `at`.
        let at = reg & !3;
        let shift = 8 * u32::from(reg % 4);
        let mask = if width == 4 { u32::MAX } else { ((1u32 << (8 * u32::from(width))) - 1) << shift };
        let bytes = (value << shift) & mask;
        let covers = |r: u16, len: u32| -> Option<u32> {
            // The written part of register r..r+len within this dword.
            let rmask = if len == 4 { u32::MAX } else { ((1u32 << (8 * len)) - 1) << (8 * u32::from(r % 4)) };
            (r & !3 == at && mask & rmask != 0).then_some(rmask)
        };
        if let Some(rmask) = covers(COMMAND, 2) {
            let old = f.command;
            let new = ((u32::from(old) & !mask | bytes) & rmask) as u16 & GUEST_COMMAND;
            f.command = new;
            return if new != old {
                Effect::Command {
                    phys: f.phys,
                    memory: new & CMD_MEMORY != 0,
                    bus_master: new & CMD_BUS_MASTER != 0,
                    intx_disable: new & CMD_INTX_DISABLE != 0,
                }
            } else {
                Effect::None
            };
        }
        if (BAR0..BAR0 + 24).contains(&at) {
            let i = ((at - BAR0) / 4) as u8;
            // Sizing is a whole-register write of all ones (the flag bits
            // are read-only, so the guest writes them as it likes).
            if mask == u32::MAX && value | 0xf == u32::MAX {
                f.sizing |= 1 << i;
            } else {
                f.sizing &= !(1 << i);
            }
            return Effect::None;
        }
        if covers(INTERRUPT_LINE, 1).is_some() {
            f.interrupt_line = ((bytes & 0xff) | (u32::from(f.interrupt_line) & !mask & 0xff)) as u8;
            return Effect::None;
        }
        if at == ROM || !(0x40..0x100).contains(&reg) {
            return Effect::None;
        }
        let Some((_, cap)) = f.cap_at(reg) else { return Effect::None };
        if reg < u16::from(cap.at) + 2 {
            // A capability's ID and next pointer are read-only.
            return Effect::None;
        }
        if Some(cap.at) == f.pcie_cap && cap.id == CAP_ID_PCIE {
            let devctl = u16::from(cap.at) + PCIE_DEVCTL;
            if reg <= devctl + 1 && devctl < reg + u16::from(width) {
                // Device Control: FLR is the kernel's to perform.
                let v = (value << (8 * u32::from(reg % 4))) >> (8 * u32::from(devctl % 4));
                if v as u16 & DEVCTL_BCR_FLR != 0 {
                    return Effect::Flr { phys: f.phys };
                }
            }
        }
        let phys = f.phys;
        match width {
            1 => cs.write8(phys, reg, value as u8),
            2 => cs.write16(phys, reg, value as u16),
            _ => cs.write32(phys, reg, value),
        }
        Effect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use devicetree::pci::FunctionKind;
    use devicetree::PhysAddr;

    /// One function's configuration space, bytes.
    struct Space {
        bdf: Bdf,
        cfg: [u8; 4096],
        writes: Vec<(u16, u8, u32)>,
    }

    impl ConfigSpace for Space {
        fn read8(&self, bdf: Bdf, off: u16) -> u8 {
            if bdf == self.bdf {
                self.cfg[usize::from(off)]
            } else {
                0xff
            }
        }
        fn read16(&self, bdf: Bdf, off: u16) -> u16 {
            u16::from_le_bytes([self.read8(bdf, off), self.read8(bdf, off + 1)])
        }
        fn read32(&self, bdf: Bdf, off: u16) -> u32 {
            u32::from(self.read16(bdf, off)) | u32::from(self.read16(bdf, off + 2)) << 16
        }
        fn write8(&mut self, _: Bdf, off: u16, v: u8) {
            self.writes.push((off, 1, u32::from(v)));
        }
        fn write16(&mut self, _: Bdf, off: u16, v: u16) {
            self.writes.push((off, 2, u32::from(v)));
        }
        fn write32(&mut self, _: Bdf, off: u16, v: u32) {
            self.writes.push((off, 4, v));
        }
    }

    const PHYS: Bdf = Bdf { bus: 2, dev: 3, func: 1 };

    /// An NVMe-like function: capabilities PM at 0x40, MSI at 0x50, PCIe
    /// at 0x60, MSI-X at 0x9c (the last); a 64-bit BAR 0 of 16 KiB at
    /// 0x1_0000_4000 and a 32-bit prefetchable BAR 2 of 4 KiB.
    fn device() -> (Space, Function) {
        let mut cfg = [0u8; 4096];
        let mut put = |off: usize, bytes: &[u8]| cfg[off..off + bytes.len()].copy_from_slice(bytes);
        put(0x00, &[0x86, 0x80, 0x0a, 0x0b]); // vendor 8086, device 0b0a
        put(0x04, &[0x06, 0x00, 0x10, 0x00]); // memory + bus master set physically; status: caps
        put(0x08, &[0x02, 0x02, 0x08, 0x01]); // rev 2, class 010802
        put(0x0c, &[0x10, 0x00, 0x80, 0x00]); // header: multifunction bit set
        put(0x2c, &[0xaa, 0xbb, 0xcc, 0xdd]);
        put(0x30, &[0x01, 0x00, 0xf0, 0xff]); // an enabled ROM
        put(0x34, &[0x40]);
        put(0x3c, &[0x0b, 0x01]); // line 11, pin INTA
        put(0x40, &[0x01, 0x50, 0x03, 0x00]); // PM → 0x50
        put(0x50, &[CAP_ID_MSI, 0x60, 0x80, 0x01]); // MSI → 0x60
        put(0x60, &[CAP_ID_PCIE, 0x9c, 0x02, 0x00]); // PCIe → 0x9c
        put(0x64, &[0x00, 0x00, 0x00, 0x10]); // DevCap: FLR
        put(0x68, &[0x10, 0x20]); // DevCtl
        put(0x9c, &[CAP_ID_MSIX, 0x00, 0x3f, 0x00]); // MSI-X, last
        put(0x100, &[0x01, 0x00, 0x01, 0x00]); // AER extended capability
        let bar0 = Bar { index: 0, cpu: PhysAddr(0x1_0000_4000), pci: 0x1_0000_4000, size: 0x4000, is_64: true, prefetchable: false };
        let bar2 = Bar { index: 2, cpu: PhysAddr(0x1020_0000), pci: 0x1020_0000, size: 0x1000, is_64: false, prefetchable: true };
        let f = Function {
            bdf: PHYS,
            vendor: 0x8086,
            device: 0x0b0a,
            class: 0x010802,
            header_type: 0,
            kind: FunctionKind::Endpoint,
            parent: None,
            bars: [bar0, bar2].into_iter().collect(),
            io_bars: 0,
            acs: None,
            multifunction: true,
            flr: true,
            pcie_cap: Some(0x60),
            interrupt_pin: 1,
            bridge: None,
        };
        (Space { bdf: PHYS, cfg, writes: vec![] }, f)
    }

    fn host() -> (Space, VirtualHost) {
        let (cs, f) = device();
        let h = VirtualHost::new(&cs, [&f]);
        (cs, h)
    }

    #[test]
    fn only_owned_functions_answer_at_their_new_address() {
        let (cs, h) = host();
        assert_eq!(h.virtual_bdf(PHYS), Some(Bdf::new(0, 0, 0)));
        assert_eq!(h.read(&cs, 0, 4), 0x0b0a_8086);
        // Its physical address, another slot, another function, another bus.
        for off in [(2 << 20) | (3 << 15) | (1 << 12), 1 << 15, 1 << 12, 1 << 20, u64::MAX] {
            assert_eq!(h.read(&cs, off, 4), u32::MAX, "{off:#x}");
            assert_eq!(h.read(&cs, off, 2), 0xffff);
            assert_eq!(h.read(&cs, off, 1), 0xff);
        }
        // Single function, type 0; no ROM; no extended capability.
        assert_eq!(h.read(&cs, 0x0e, 1), 0);
        assert_eq!(h.read(&cs, 0x0c, 4), 0x0000_0010);
        assert_eq!(h.read(&cs, 0x30, 4), 0);
        assert_eq!(h.read(&cs, 0x100, 4), 0);
        assert_eq!(h.read(&cs, 0x2c, 4), 0xddcc_bbaa);
        // Misaligned or odd widths read as nothing there.
        assert_eq!(h.read(&cs, 0x01, 2), 0xffff);
        assert_eq!(h.read(&cs, 0x00, 3), 0xff_ffff);
    }

    #[test]
    fn bars_report_their_size_and_stay_where_they_are() {
        let (mut cs, mut h) = host();
        assert_eq!(h.read(&cs, 0x10, 4), 0x0000_4004);
        assert_eq!(h.read(&cs, 0x14, 4), 0x1);
        assert_eq!(h.read(&cs, 0x18, 4), 0x1020_0008);
        assert_eq!(h.read(&cs, 0x1c, 4), 0, "BAR 3 is not implemented");
        // Linux's sizing: all ones, read, write back.
        for (reg, size) in [(0x10u64, 0xffff_c004u32), (0x14, 0xffff_ffff), (0x18, 0xffff_f008), (0x1c, 0)] {
            let old = h.read(&cs, reg, 4);
            assert_eq!(h.write(&mut cs, reg, 4, u32::MAX), Effect::None);
            assert_eq!(h.read(&cs, reg, 4), size, "{reg:#x}");
            h.write(&mut cs, reg, 4, old);
            assert_eq!(h.read(&cs, reg, 4), old);
        }
        // Moving a BAR is ignored; nothing reaches the device.
        h.write(&mut cs, 0x10, 4, 0x4000_0000);
        h.write(&mut cs, 0x14, 4, 0);
        h.write(&mut cs, 0x12, 2, 0xffff);
        assert_eq!((h.read(&cs, 0x10, 4), h.read(&cs, 0x14, 4)), (0x0000_4004, 0x1));
        h.write(&mut cs, 0x30, 4, u32::MAX);
        assert_eq!(h.read(&cs, 0x30, 4), 0);
        assert!(cs.writes.is_empty(), "{:?}", cs.writes);
    }

    #[test]
    fn command_is_the_guests_and_the_kernel_applies_it() {
        let (mut cs, mut h) = host();
        assert_eq!(h.read(&cs, 0x04, 2), 0x0006, "the guest sees what the kernel granted at assignment");
        assert_eq!(h.write(&mut cs, 0x04, 2, 0), Effect::Command { phys: PHYS, memory: false, bus_master: false, intx_disable: false });
        assert_eq!(h.read(&cs, 0x06, 2) & u32::from(STATUS_CAP_LIST), u32::from(STATUS_CAP_LIST));
        let e = h.write(&mut cs, 0x04, 2, 0x0407 | 0x0100);
        assert_eq!(e, Effect::Command { phys: PHYS, memory: true, bus_master: true, intx_disable: true });
        assert_eq!(h.read(&cs, 0x04, 2), 0x0406, "I/O and SERR are not the guest's");
        assert_eq!(h.write(&mut cs, 0x04, 2, 0x0406), Effect::None, "no change");
        // A byte write of the low half, a dword write with status.
        assert_eq!(h.write(&mut cs, 0x04, 1, 0x02), Effect::Command { phys: PHYS, memory: true, bus_master: false, intx_disable: true });
        assert_eq!(h.write(&mut cs, 0x04, 4, 0xffff_0000), Effect::Command { phys: PHYS, memory: false, bus_master: false, intx_disable: false });
        assert!(cs.writes.is_empty());
        // The interrupt line is a scratch byte; the pin is the device's.
        h.write(&mut cs, 0x3c, 1, 42);
        assert_eq!(h.read(&cs, 0x3c, 2), 0x012a);
    }

    #[test]
    fn msi_and_msix_are_left_out_of_the_list() {
        let (mut cs, mut h) = host();
        assert_eq!(h.read(&cs, 0x34, 1), 0x40);
        assert_eq!(h.read(&cs, 0x40, 2), 0x6001, "PM now points past MSI to PCIe");
        assert_eq!(h.read(&cs, 0x60, 2), 0x0010, "PCIe ends the list: MSI-X is gone");
        assert_eq!(h.read(&cs, 0x50, 4), 0, "MSI's registers read 0");
        assert_eq!(h.read(&cs, 0x9c, 4), 0);
        assert_eq!(h.read(&cs, 0x64, 4), 0x1000_0000, "PCIe's registers pass through");
        // Writes: MSI's dropped, the header read-only, PCIe's passed on.
        h.write(&mut cs, 0x52, 2, 0x0001);
        h.write(&mut cs, 0x9e, 2, 0x8000);
        h.write(&mut cs, 0x61, 1, 0x00);
        h.write(&mut cs, 0x68, 2, 0x2010);
        h.write(&mut cs, 0xf0, 4, 1);
        assert_eq!(cs.writes, vec![(0x68, 2, 0x2010)]);
    }

    #[test]
    fn a_guest_flr_is_the_kernels_to_do() {
        let (mut cs, mut h) = host();
        assert_eq!(h.write(&mut cs, 0x68, 2, 0x8000 | 0x2010), Effect::Flr { phys: PHYS });
        assert_eq!(h.write(&mut cs, 0x68, 4, 0x8000), Effect::Flr { phys: PHYS });
        assert_eq!(h.write(&mut cs, 0x69, 1, 0x80), Effect::Flr { phys: PHYS });
        assert!(cs.writes.is_empty(), "the FLR bit never reaches the device from the guest");
    }

    #[test]
    fn a_released_function_disappears_and_comes_back_reset() {
        let (mut cs, mut h) = host();
        h.write(&mut cs, 0x04, 2, 0x0406);
        h.write(&mut cs, 0x10, 4, u32::MAX);
        h.set_present(&cs, PHYS, false);
        assert_eq!(h.read(&cs, 0x00, 4), u32::MAX);
        assert_eq!(h.write(&mut cs, 0x04, 2, 0x0006), Effect::None);
        // Assigned again: the kernel stopped it (decode and mastering off).
        cs.cfg[0x04] = 0;
        h.set_present(&cs, PHYS, true);
        assert_eq!(h.read(&cs, 0x04, 2), 0);
        assert_eq!(h.read(&cs, 0x10, 4), 0x0000_4004);
    }

    #[test]
    fn a_looping_or_hostile_capability_list_is_bounded() {
        let (mut cs, f) = device();
        cs.cfg[0x61] = 0x40; // PCIe → PM: a loop
        let h = VirtualHost::new(&cs, [&f]);
        assert_eq!(h.functions[0].caps.len(), 3);
        cs.cfg[0x34] = 0x10; // into the header: no list
        assert!(VirtualHost::new(&cs, [&f]).functions[0].caps.is_empty());
        // Every offset and width reads without a panic.
        let (cs, h) = host();
        for off in 0..4096u64 {
            for w in [1, 2, 3, 4, 8] {
                h.read(&cs, off, w);
            }
        }
    }
}
