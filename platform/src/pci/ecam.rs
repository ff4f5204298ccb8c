//! ECAM: PCI Express Enhanced Configuration Access Mechanism (PCIe §7.2.2).
//! Each function's 4 KiB configuration space sits at
//! `base + (bus - bus_start) << 20 | dev << 15 | func << 12`.

use super::{Bdf, ConfigSpace, CONFIG_SPACE_SIZE};
use crate::PhysAddr;

/// Configuration space through an identity-mapped ECAM window.
pub struct EcamConfigSpace {
    base: PhysAddr,
    bus_start: u8,
    bus_end: u8,
}

impl EcamConfigSpace {
    /// An ECAM window at `base` for buses `bus_start..=bus_end`.
    ///
    /// # Safety
    /// `base` must be the ECAM window of a host bridge (from its `reg`),
    /// mapped as Device memory at the same virtual address, and large enough
    /// for `(bus_end - bus_start + 1) << 20` bytes; nothing else may treat
    /// that memory as ordinary RAM.
    pub const unsafe fn new(base: PhysAddr, bus_start: u8, bus_end: u8) -> Self {
        EcamConfigSpace { base, bus_start, bus_end }
    }

    /// The address of `off` in `bdf`'s space, or `None` outside the window
    /// or for an offset not aligned to `width`.
    fn addr(&self, bdf: Bdf, off: u16, width: u16) -> Option<usize> {
        if bdf.bus < self.bus_start || bdf.bus > self.bus_end || off >= CONFIG_SPACE_SIZE || !off.is_multiple_of(width) {
            return None;
        }
        let rel = (u64::from(bdf.bus - self.bus_start) << 20) | (u64::from(bdf.dev & 0x1f) << 15) | (u64::from(bdf.func & 0x7) << 12) | u64::from(off);
        usize::try_from(self.base.0.checked_add(rel)?).ok()
    }

    /// Orders a configuration write before whatever follows: the ECAM
    /// window may be mapped Device-nGnRE, whose early write acknowledgement
    /// would let a later access (for example a config read on a bus number
    /// just programmed) overtake it. DSB waits for the write to complete.
    fn after_write() {
        #[cfg(target_arch = "aarch64")]
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    }
}

impl ConfigSpace for EcamConfigSpace {
    fn read8(&self, bdf: Bdf, off: u16) -> u8 {
        match self.addr(bdf, off, 1) {
            // SAFETY: inside the ECAM window `new`'s caller vouched for.
            Some(a) => unsafe { (a as *const u8).read_volatile() },
            None => u8::MAX,
        }
    }
    fn read16(&self, bdf: Bdf, off: u16) -> u16 {
        match self.addr(bdf, off, 2) {
            // SAFETY: inside the ECAM window, 2-byte aligned.
            Some(a) => unsafe { (a as *const u16).read_volatile() },
            None => u16::MAX,
        }
    }
    fn read32(&self, bdf: Bdf, off: u16) -> u32 {
        match self.addr(bdf, off, 4) {
            // SAFETY: inside the ECAM window, 4-byte aligned.
            Some(a) => unsafe { (a as *const u32).read_volatile() },
            None => u32::MAX,
        }
    }
    fn write8(&mut self, bdf: Bdf, off: u16, v: u8) {
        if let Some(a) = self.addr(bdf, off, 1) {
            // SAFETY: inside the ECAM window `new`'s caller vouched for.
            unsafe { (a as *mut u8).write_volatile(v) };
            Self::after_write();
        }
    }
    fn write16(&mut self, bdf: Bdf, off: u16, v: u16) {
        if let Some(a) = self.addr(bdf, off, 2) {
            // SAFETY: inside the ECAM window, 2-byte aligned.
            unsafe { (a as *mut u16).write_volatile(v) };
            Self::after_write();
        }
    }
    fn write32(&mut self, bdf: Bdf, off: u16, v: u32) {
        if let Some(a) = self.addr(bdf, off, 4) {
            // SAFETY: inside the ECAM window, 4-byte aligned.
            unsafe { (a as *mut u32).write_volatile(v) };
            Self::after_write();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;

    #[test]
    fn addresses_follow_the_ecam_layout() {
        // Two buses (2 MiB) of ordinary memory stand in for the window.
        let mut mem = vec![0u32; (2 << 20) / 4];
        let base = PhysAddr(mem.as_mut_ptr() as u64);
        // SAFETY: `mem` is 2 MiB of plain memory that outlives `cs`.
        let mut cs = unsafe { EcamConfigSpace::new(base, 4, 5) };
        let bdf = Bdf::new(5, 3, 2);
        cs.write32(bdf, 0x10, 0xdead_beef);
        cs.write16(bdf, 0x04, 0x1234);
        cs.write8(bdf, 0x0e, 0x80);
        let word = ((1 << 20) | (3 << 15) | (2 << 12) | 0x10) / 4;
        assert_eq!(mem[word], 0xdead_beef);
        assert_eq!(cs.read32(bdf, 0x10), 0xdead_beef);
        assert_eq!(cs.read16(bdf, 0x04), 0x1234);
        assert_eq!(cs.read8(bdf, 0x0e), 0x80);
        // Outside the bus range, misaligned or past 4 KiB: all-ones, no write.
        assert_eq!(cs.read32(Bdf::new(3, 0, 0), 0), u32::MAX);
        assert_eq!(cs.read32(Bdf::new(6, 0, 0), 0), u32::MAX);
        assert_eq!(cs.read32(bdf, 0x12), u32::MAX);
        assert_eq!(cs.read16(bdf, 0x1001), u16::MAX);
        cs.write32(Bdf::new(6, 0, 0), 0, 1);
        assert_eq!(cs.read8(bdf, 0xfff), 0);
    }
}
