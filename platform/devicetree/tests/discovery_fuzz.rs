//! Discovery on a real QEMU `virt` DTB and on thousands of corruptions of
//! it: always a result or an error, never a panic.
//!
//! The fixture `data/qemu-virt.dtb` was dumped (and packed with `dtc`) from
//! `qemu-system-aarch64 -machine virt,virtualization=on,iommu=smmuv3,gic-version=3,dumpdtb=x.dtb
//!  -cpu max -smp 4 -m 2G -nic none -device edu,dma_mask=0xffffffffff` (QEMU 10.0.2).

use devicetree::discovery::{discover, DEFAULT_SID_BITS};
use devicetree::DeviceTree;
use devicetree::{PhysAddr, PhysRange};
use std::time::{Duration, Instant};

const VIRT: &[u8] = include_bytes!("data/qemu-virt.dtb");

/// Everything discovery offers, exercised on one blob.
fn exercise(blob: &[u8]) {
    let Ok(dt) = DeviceTree::parse(blob) else { return };
    let Ok(smmus) = dt.smmus() else { return };
    let Ok(d) = discover(&dt, &smmus) else { return };
    for h in &d.pci_hosts {
        for rid in [0u16, 1, 0x8, 0x100, 0x208, 0xffff] {
            let _ = h.rid_to_sid(rid, DEFAULT_SID_BITS);
            let _ = h.rid_to_sid(rid, 0);
            let _ = h.rid_to_msi(rid);
        }
    }
}

#[test]
fn the_qemu_virt_dtb_is_read() {
    let dt = DeviceTree::parse(VIRT).unwrap();
    let smmus = dt.smmus().unwrap();
    assert_eq!(smmus.len(), 1);
    let d = discover(&dt, &smmus).unwrap();
    let gic = d.gic.unwrap();
    assert_eq!(gic.distributor, PhysRange::new(0x800_0000, 0x1_0000).unwrap());
    assert_eq!(gic.redistributors, [PhysRange::new(0x80a_0000, 0xf6_0000).unwrap()]);
    assert_eq!(d.its.len(), 1);
    assert_eq!(d.its[0].regs.start, PhysAddr(0x808_0000));
    assert_eq!(d.pci_hosts.len(), 1);
    let h = &d.pci_hosts[0];
    assert_eq!(h.path, "/pcie@10000000");
    assert_eq!(h.ecam, PhysRange::new(0x40_1000_0000, 0x1000_0000).unwrap());
    assert_eq!((h.bus_start, h.bus_end), (0, 0xff));
    assert_eq!(h.windows.len(), 2, "32-bit and 64-bit memory; I/O dropped");
    assert_eq!(h.rid_to_sid(0x0010, DEFAULT_SID_BITS), Ok((0, 0x10)), "StreamID = requester ID on virt");
    assert_eq!(h.rid_to_msi(0x0010), Some((0, 0x10)));
    // virtio-mmio transports and fw-cfg do DMA without an SMMU.
    assert!(d.masters.iter().any(|m| m.path == "/fw-cfg@9020000" && m.iommus.is_empty()));
    assert_eq!(d.masters.iter().filter(|m| m.path.starts_with("/virtio_mmio@")).count(), 32);
    assert!(d.masters.iter().all(|m| m.iommus.is_empty()));
}

/// xorshift64: deterministic, no dependency.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// (offset, length) of every property value in the structure block, so
/// most corruptions hit values — which the structure check cannot catch —
/// rather than tokens, which it rejects before discovery runs.
fn property_values(b: &[u8]) -> Vec<(usize, usize)> {
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let (mut off, end) = (be(8), be(8) + be(36));
    while off + 4 <= end {
        let tag = be(off);
        off += 4;
        match tag {
            1 => {
                let n = b[off..].iter().position(|&c| c == 0).unwrap();
                off = (off + n + 1 + 3) & !3;
            }
            3 => {
                let len = be(off);
                if len > 0 {
                    out.push((off + 8, len));
                }
                off = (off + 8 + len + 3) & !3;
            }
            9 => break,
            _ => {}
        }
    }
    out
}

#[test]
fn corrupted_qemu_dtbs_never_panic() {
    let start = Instant::now();
    // Every truncation.
    for len in 0..VIRT.len() {
        exercise(&VIRT[..len]);
    }
    // Random byte, bit and cell corruptions, mostly inside property values.
    let values = property_values(VIRT);
    assert!(values.len() > 100);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut cases = 0;
    for i in 0..12_000u32 {
        let mut b = VIRT.to_vec();
        for _ in 0..1 + next(&mut seed) % 4 {
            let r = next(&mut seed);
            let at = if !r.is_multiple_of(8) {
                let (o, len) = values[(r >> 8) as usize % values.len()];
                o + (r >> 24) as usize % len
            } else {
                (r >> 8) as usize % b.len()
            };
            let at = at.min(b.len() - 4);
            match (r >> 4) % 4 {
                0 => b[at] = (r >> 32) as u8,
                1 => b[at] ^= 1 << ((r >> 40) % 8),
                // Cell-sized values that stress arithmetic: 0, all-ones, high bit.
                2 => b[at & !3..(at & !3) + 4].copy_from_slice(&[0u32, u32::MAX, 0x8000_0000, 0xffff][(r >> 48) as usize % 4].to_be_bytes()),
                _ => b[at & !3..(at & !3) + 4].copy_from_slice(&((r >> 32) as u32).to_be_bytes()),
            }
        }
        exercise(&b);
        cases += 1;
        if i % 1000 == 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "fuzzing is too slow: {cases} cases");
        }
    }
    assert_eq!(cases, 12_000);
}
