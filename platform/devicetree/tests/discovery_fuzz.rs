//! Discovery on a real QEMU `virt` DTB and on thousands of corruptions of
//! it: always a result or an error, never a panic.
//!
//! The fixture `data/qemu-virt.dtb` was dumped (and packed with `dtc`) from
//! `qemu-system-aarch64 -machine virt,virtualization=on,iommu=smmuv3,gic-version=3,dumpdtb=x.dtb
//!  -cpu max -smp 4 -m 2G -nic none -device edu,dma_mask=0xffffffffff` (QEMU 10.0.2).

use devicetree::discovery::{discover, DEFAULT_SID_BITS};
use devicetree::testutil::{value_corruptions, VALUE_FUZZ_CASES, VALUE_FUZZ_SEED};
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

#[test]
fn corrupted_qemu_dtbs_never_panic() {
    let start = Instant::now();
    // Every truncation.
    for len in 0..VIRT.len() {
        exercise(&VIRT[..len]);
    }
    // Random byte, bit and cell corruptions, mostly inside property values.
    let mut cases = 0;
    for (i, b) in value_corruptions(VIRT, VALUE_FUZZ_SEED, VALUE_FUZZ_CASES).enumerate() {
        exercise(&b);
        cases += 1;
        if i % 1000 == 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "fuzzing is too slow: {cases} cases");
        }
    }
    assert_eq!(cases, VALUE_FUZZ_CASES);
}
