//! The virtual board every partition runs on: where its emulated GICv3
//! distributor, redistributors and console UART sit in its IPA space, and
//! the INTIDs they use. The addresses are QEMU `virt`'s (hw/arm/virt.c),
//! so a Linux built for that machine finds familiar values, but nothing of
//! the host is behind them: stage 2 leaves them unmapped and every access
//! traps to the kernel, which emulates the device (DESIGN.md I8).

use super::vgic::{GICD_SIZE, GICR_STRIDE};

/// The emulated GIC distributor (64 KiB).
pub const GICD_BASE: u64 = 0x0800_0000;
/// The first emulated redistributor; one [`GICR_STRIDE`] per vCPU.
pub const GICR_BASE: u64 = 0x080a_0000;
/// Most vCPUs the redistributor window has room for below the UART.
pub const MAX_VCPUS: usize = ((UART_BASE - GICR_BASE) / GICR_STRIDE) as usize;
const _: () = assert!(MAX_VCPUS >= 8, "room for at least 8 redistributors");
/// The emulated SBSA UART (the partition's console).
pub const UART_BASE: u64 = 0x0900_0000;
/// The console UART's interrupt: SPI 1 (INTID 33), level-sensitive. A
/// virtual interrupt: no physical line is behind it.
pub const UART_INTID: u32 = 33;
/// The ECAM windows of the partition's virtual PCI host bridges, where
/// QEMU `virt` has its low ECAM: one per physical host bridge its
/// functions sit behind, the k-th at `ECAM_BASE + k * ECAM_HOST_SIZE`;
/// [`super::vpci`] answers them.
pub const ECAM_BASE: u64 = 0x3f00_0000;
/// One virtual host's ECAM window: bus 0 only (32 devices × 8 functions
/// × 4 KiB).
pub const ECAM_HOST_SIZE: u64 = 0x10_0000;
/// Most virtual PCI hosts a partition has.
pub const ECAM_HOSTS: usize = 16;
/// Size of the whole virtual ECAM region.
pub const ECAM_SIZE: u64 = ECAM_HOST_SIZE * ECAM_HOSTS as u64;
/// The architected timer PPIs (INTIDs) as the DT names them: secure and
/// non-secure physical, virtual, hypervisor.
pub const TIMER_PPIS: [u32; 4] = [29, 30, 27, 26];
/// The GIC maintenance interrupt (PPI 9 = INTID 25).
pub const MAINTENANCE_INTID: u32 = 25;

/// Which emulated device an IPA falls in, and the offset inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// The distributor, at this offset.
    Gicd(u64),
    /// The redistributor region, at this offset from its start.
    Gicr(u64),
    /// The console UART.
    Uart(u64),
    /// The ECAM window of virtual PCI host `.0`, at offset `.1` in it.
    Ecam(usize, u64),
}

/// The windows of the virtual board (what, start, size): nothing of a
/// partition's own (its memory, its BARs) may be mapped over them, or the
/// partition would reach that instead of the emulated device (the
/// validation refuses it).
pub fn windows() -> [(&'static str, u64, u64); 4] {
    [
        ("GIC distributor", GICD_BASE, GICD_SIZE),
        ("GIC redistributors", GICR_BASE, GICR_STRIDE * MAX_VCPUS as u64),
        ("console UART", UART_BASE, super::vuart::WINDOW),
        ("PCI ECAM", ECAM_BASE, ECAM_SIZE),
    ]
}

/// The first window of the virtual board that `[start, start + size)`
/// overlaps, as "the virtual board's NAME at [a, b)".
pub fn overlapped(start: u64, size: u64) -> Option<alloc::string::String> {
    let end = start.saturating_add(size);
    windows()
        .into_iter()
        .find(|&(_, b, s)| start < b + s && b < end)
        .map(|(what, b, s)| alloc::format!("the virtual board's {what} at [{b:#x}, {:#x}) (every partition's, at fixed addresses)", b + s))
}

/// The emulated device `ipa` addresses. The whole redistributor window
/// (room for [`MAX_VCPUS`]) is emulated whatever the partition's vCPU
/// count: frames of vCPUs it does not have read as zero and ignore writes,
/// rather than stopping it.
pub fn decode(ipa: u64) -> Option<Emulated> {
    let gicr_size = GICR_STRIDE * MAX_VCPUS as u64;
    if (GICD_BASE..GICD_BASE + GICD_SIZE).contains(&ipa) {
        Some(Emulated::Gicd(ipa - GICD_BASE))
    } else if (GICR_BASE..GICR_BASE + gicr_size).contains(&ipa) {
        Some(Emulated::Gicr(ipa - GICR_BASE))
    } else if (UART_BASE..UART_BASE + super::vuart::WINDOW).contains(&ipa) {
        Some(Emulated::Uart(ipa - UART_BASE))
    } else if (ECAM_BASE..ECAM_BASE + ECAM_SIZE).contains(&ipa) {
        let off = ipa - ECAM_BASE;
        Some(Emulated::Ecam((off / ECAM_HOST_SIZE) as usize, off % ECAM_HOST_SIZE))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(decode(0x0800_0004), Some(Emulated::Gicd(4)));
        assert_eq!(decode(0x080a_0000 + 0x2_0008), Some(Emulated::Gicr(0x2_0008)));
        assert_eq!(decode(0x080a_0000 + 0x4_0008), Some(Emulated::Gicr(0x4_0008)), "a frame of no vCPU: RAZ/WI");
        assert_eq!(decode(0x0900_0018), Some(Emulated::Uart(0x18)));
        assert_eq!(decode(0x0901_0000), None);
        assert_eq!(decode(0x3f00_8004), Some(Emulated::Ecam(0, 0x8004)));
        assert_eq!(decode(0x3f10_8004), Some(Emulated::Ecam(1, 0x8004)), "the second virtual host");
        assert_eq!(decode(0x3fff_fffc), Some(Emulated::Ecam(15, 0xf_fffc)));
        assert_eq!(decode(0x4000_0000), None);
        assert_eq!(decode(0x0801_0000), None, "between the distributor and the redistributors");
    }

    #[test]
    fn overlaps_name_the_window() {
        assert!(overlapped(0x0800_f000, 0x1000).unwrap().contains("GIC distributor at [0x8000000, 0x8010000)"));
        assert!(overlapped(0x3000_0000, 0x1000_0000).unwrap().contains("PCI ECAM"));
        assert_eq!(overlapped(0x0801_0000, 0x1000), None, "between the distributor and the redistributors");
        assert_eq!(overlapped(0x4000_0000, 0x1000), None);
        assert_eq!(overlapped(0x4000_1000, u64::MAX), None, "no overflow");
    }
}
