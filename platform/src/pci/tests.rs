//! Enumeration and function controls against the synthetic ECAM.

use super::regs::*;
use super::synthetic::{BarKind, FlrBehaviour, Model, SynthFn, ACS_AT};
use super::*;
use crate::PhysAddr;
extern crate std;
use std::vec;
use std::vec::Vec;

/// QEMU virt's windows: 32-bit non-prefetchable at 0x1000_0000 and a 64-bit
/// non-prefetchable window at 0x80_0000_0000, CPU address = PCI address.
fn virt_windows() -> Vec<Window> {
    vec![
        Window { cpu: PhysAddr(0x1000_0000), pci: 0x1000_0000, size: 0x2eff_0000, prefetchable: false, mem64: false },
        Window { cpu: PhysAddr(0x80_0000_0000), pci: 0x80_0000_0000, size: 0x80_0000_0000, prefetchable: false, mem64: true },
    ]
}

#[derive(Default)]
struct FakeDelay {
    ns: u64,
}

impl embedded_hal::delay::DelayNs for FakeDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.ns += u64::from(ns);
    }
}

const ACS_ALL: u16 = AcsFlags::SV | AcsFlags::TB | AcsFlags::RR | AcsFlags::CR | AcsFlags::UF | AcsFlags::EC;

fn bridge_of(t: &HostTopology, bdf: Bdf) -> BridgeInfo {
    t.find(bdf).and_then(|f| f.bridge).unwrap_or_else(|| panic!("{bdf:?} is not a bridge"))
}

#[test]
fn bus_numbers_depth_first_in_device_order() {
    let mut m = Model::new(0);
    m.add(None, 0, 0, SynthFn::pci(0x1b36, 0x0008));
    let rp_a = m.add(None, 1, 0, SynthFn::port(4).acs(ACS_ALL));
    let usp = m.add(Some(rp_a), 0, 0, SynthFn::port(5));
    let dsp0 = m.add(Some(usp), 0, 0, SynthFn::port(6).acs(ACS_ALL));
    let dsp1 = m.add(Some(usp), 1, 0, SynthFn::port(6).acs(ACS_ALL));
    m.add(Some(dsp0), 0, 0, SynthFn::endpoint(0x8086, 0x1).bar(0, 0x4000, BarKind::Mem32));
    m.add(Some(dsp1), 0, 0, SynthFn::endpoint(0x8086, 0x2).bar(0, 0x4000, BarKind::Mem32));
    let rp_b = m.add(None, 2, 0, SynthFn::port(4).acs(ACS_ALL));
    m.add(Some(rp_b), 0, 0, SynthFn::endpoint(0x8086, 0x3));

    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    let bdfs: Vec<(u8, u8, u8)> = t.functions.iter().map(|f| (f.bdf.bus, f.bdf.dev, f.bdf.func)).collect();
    assert_eq!(bdfs, [(0, 0, 0), (0, 1, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (2, 1, 0), (4, 0, 0), (0, 2, 0), (5, 0, 0)]);
    let buses = |b: Bdf| {
        let i = bridge_of(&t, b);
        (i.primary, i.secondary, i.subordinate)
    };
    assert_eq!(buses(Bdf::new(0, 1, 0)), (0, 1, 4));
    assert_eq!(buses(Bdf::new(1, 0, 0)), (1, 2, 4));
    assert_eq!(buses(Bdf::new(2, 0, 0)), (2, 3, 3));
    assert_eq!(buses(Bdf::new(2, 1, 0)), (2, 4, 4));
    assert_eq!(buses(Bdf::new(0, 2, 0)), (0, 5, 5));
    assert_eq!(t.last_bus, 5);
    // The registers say the same.
    assert_eq!((m.fns[usp].get8(PRIMARY_BUS), m.fns[usp].get8(SECONDARY_BUS), m.fns[usp].get8(SUBORDINATE_BUS)), (1, 2, 4));
    // Parents and kinds.
    let f = |b| t.find(b).unwrap();
    assert_eq!(f(Bdf::new(3, 0, 0)).parent, t.functions.iter().position(|x| x.bdf == Bdf::new(2, 0, 0)));
    assert_eq!(f(Bdf::new(0, 1, 0)).parent, None);
    assert_eq!(f(Bdf::new(0, 0, 0)).kind, FunctionKind::PciDevice);
    assert_eq!(f(Bdf::new(0, 1, 0)).kind, FunctionKind::RootPort);
    assert_eq!(f(Bdf::new(1, 0, 0)).kind, FunctionKind::UpstreamPort);
    assert_eq!(f(Bdf::new(2, 1, 0)).kind, FunctionKind::DownstreamPort);
    assert_eq!(f(Bdf::new(5, 0, 0)).kind, FunctionKind::Endpoint);
    assert_eq!(f(Bdf::new(5, 0, 0)).rid(), 0x500);
}

#[test]
fn stale_firmware_bus_numbers_are_replaced() {
    let mut m = Model::new(0);
    let rp_a = m.add(None, 1, 0, SynthFn::port(4));
    let rp_b = m.add(None, 2, 0, SynthFn::port(4));
    m.add(Some(rp_a), 0, 0, SynthFn::endpoint(0x1af4, 1));
    m.add(Some(rp_b), 0, 0, SynthFn::endpoint(0x1af4, 2));
    // Firmware numbered them the other way round and overlapping.
    m.fns[rp_b].cfg[SECONDARY_BUS as usize] = 1;
    m.fns[rp_b].cfg[SUBORDINATE_BUS as usize] = 9;
    m.fns[rp_a].cfg[SECONDARY_BUS as usize] = 2;
    m.fns[rp_a].cfg[SUBORDINATE_BUS as usize] = 2;
    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    assert_eq!(t.find(Bdf::new(1, 0, 0)).map(|f| f.device), Some(1));
    assert_eq!(t.find(Bdf::new(2, 0, 0)).map(|f| f.device), Some(2));
}

#[test]
fn bus_range_exhaustion_is_an_error() {
    let mut m = Model::new(4);
    let a = m.add(None, 1, 0, SynthFn::port(4));
    m.add(Some(a), 0, 0, SynthFn::port(5));
    m.add(None, 2, 0, SynthFn::port(4));
    // Buses 4..=6: the root bus and two more — three bridges need three.
    assert_eq!(enumerate(&mut m, 4, 6, &virt_windows()), Err(PciError::BusesExhausted { bridge: Bdf::new(4, 2, 0) }));
}

#[test]
fn bars_are_sized_and_naturally_aligned_in_the_right_windows() {
    let mut m = Model::new(0);
    m.add(
        None,
        1,
        0,
        SynthFn::endpoint(0x1234, 0x11e8).bar(0, 0x10_0000, BarKind::Mem32).bar(1, 0x100, BarKind::Io).bar(2, 0x4000, BarKind::Mem64).bar(
            4,
            0x1000_0000,
            BarKind::Pref64,
        ),
    );
    m.add(None, 2, 0, SynthFn::pci(0x1234, 0x1).bar(0, 0x10, BarKind::Mem32).bar(1, 0x2000, BarKind::Pref32));
    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    let a = t.find(Bdf::new(0, 1, 0)).unwrap();
    assert_eq!(a.io_bars, 1 << 1, "the I/O BAR is seen, not assigned");
    let bars: Vec<(u8, u64, u64, bool, bool)> = a.bars.iter().map(|b| (b.index, b.cpu.0, b.size, b.is_64, b.prefetchable)).collect();
    assert_eq!(bars, [(0, 0x1000_0000, 0x10_0000, false, false), (2, 0x1010_0000, 0x4000, true, false), (4, 0x80_0000_0000, 0x1000_0000, true, true),]);
    // The registers hold the PCI addresses (here equal to the CPU ones).
    assert_eq!(m.fns[0].get32(BAR0), 0x1000_0000);
    assert_eq!(m.fns[0].get32(BAR0 + 8), 0x1010_0004);
    assert_eq!(m.fns[0].get32(BAR0 + 12), 0);
    assert_eq!(m.fns[0].get32(BAR0 + 16), 0x0000_000c);
    assert_eq!(m.fns[0].get32(BAR0 + 20), 0x80);
    let b = t.find(Bdf::new(0, 2, 0)).unwrap();
    // 16 bytes still get a page of their own; a 32-bit prefetchable BAR
    // cannot go to the 64-bit window, so it lands in the 32-bit one.
    let bars: Vec<(u64, u64)> = b.bars.iter().map(|b| (b.cpu.0, b.size)).collect();
    assert_eq!(bars, [(0x1010_4000, 0x10), (0x1010_6000, 0x2000)]);
    for f in &t.functions {
        for bar in &f.bars {
            assert_eq!(bar.pci % bar.size.max(4096), 0, "{bar:?} naturally aligned");
        }
    }
}

#[test]
fn translated_windows_give_pci_addresses_to_bars_and_cpu_addresses_to_the_table() {
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1).bar(0, 0x1000, BarKind::Mem32));
    let w = [Window { cpu: PhysAddr(0x40_0000_0000), pci: 0x2000_0000, size: 0x1000_0000, prefetchable: false, mem64: false }];
    let t = enumerate(&mut m, 0, 0, &w).unwrap();
    let bar = t.functions[0].bars[0];
    assert_eq!((bar.pci, bar.cpu), (0x2000_0000, PhysAddr(0x40_0000_0000)));
    assert_eq!(m.fns[0].get32(BAR0), 0x2000_0000);
}

#[test]
fn bridge_windows_cover_their_subtree_and_no_sibling() {
    let mut m = Model::new(0);
    let rp = m.add(None, 1, 0, SynthFn::port(4));
    m.add(Some(rp), 0, 0, SynthFn::endpoint(0x1af4, 1).bar(0, 0x1000, BarKind::Mem32).bar(2, 0x20_0000, BarKind::Pref64));
    m.add(Some(rp), 1, 0, SynthFn::endpoint(0x1af4, 2).bar(0, 0x40_0000, BarKind::Mem32));
    let rp2 = m.add(None, 2, 0, SynthFn::port(4).no_pref_window());
    m.add(Some(rp2), 0, 0, SynthFn::endpoint(0x1af4, 3).bar(0, 0x1000, BarKind::Pref64));
    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    let w1 = bridge_of(&t, Bdf::new(0, 1, 0));
    let w2 = bridge_of(&t, Bdf::new(0, 2, 0));
    let mem1 = w1.mem.unwrap();
    let pref1 = w1.pref.unwrap();
    for f in t.functions.iter().filter(|f| f.bdf.bus == 1) {
        for b in &f.bars {
            let win = if b.prefetchable { pref1 } else { mem1 };
            assert!(win.covers(&b.range()), "{:?} BAR{} {:?} outside {:?}", f.bdf, b.index, b.range(), win);
        }
    }
    assert_eq!(pref1.start, PhysAddr(0x80_0000_0000));
    assert_eq!(mem1.start.0 % (1 << 20), 0);
    assert_eq!(mem1.end.0 % (1 << 20), 0);
    // The second port has no prefetchable window: its device's prefetchable
    // BAR lives in the non-prefetchable window, after the first port's.
    assert_eq!(w2.pref, None);
    let mem2 = w2.mem.unwrap();
    assert!(!mem2.overlaps(&mem1));
    let dev3 = t.find(Bdf::new(2, 0, 0)).unwrap();
    assert!(mem2.covers(&dev3.bars[0].range()));
    // Registers: memory base/limit in 1 MiB units, prefetchable upper halves.
    let rp_fn = &m.fns[rp];
    assert_eq!(u64::from(rp_fn.get16(MEMORY_BASE) & 0xfff0) << 16, mem1.start.0);
    assert_eq!((u64::from(rp_fn.get16(MEMORY_LIMIT) & 0xfff0) << 16) | 0xf_ffff, mem1.end.0 - 1);
    assert_eq!(rp_fn.get32(PREF_BASE_UPPER32), 0x80);
    assert_eq!(rp_fn.get32(PREF_LIMIT_UPPER32), 0x80);
    assert_eq!(rp_fn.get8(IO_BASE) & 0xf0, 0xf0, "I/O window disabled (base above limit)");
    assert_eq!(rp_fn.get8(IO_LIMIT), 0);
}

#[test]
fn window_exhaustion_is_an_error() {
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1).bar(0, 0x10_0000, BarKind::Mem32));
    m.add(None, 2, 0, SynthFn::endpoint(0x1af4, 2).bar(0, 0x10_0000, BarKind::Mem32));
    let w = [Window { cpu: PhysAddr(0x1000_0000), pci: 0x1000_0000, size: 0x18_0000, prefetchable: false, mem64: false }];
    assert_eq!(enumerate(&mut m, 0, 0xff, &w), Err(PciError::WindowExhausted { bdf: Bdf::new(0, 2, 0), bar: 0, size: 0x10_0000 }));
    // No 32-bit window at all: a non-prefetchable BAR has nowhere to go.
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1).bar(0, 0x1000, BarKind::Mem64));
    let w = [Window { cpu: PhysAddr(0x80_0000_0000), pci: 0x80_0000_0000, size: 1 << 30, prefetchable: true, mem64: true }];
    assert!(matches!(enumerate(&mut m, 0, 0xff, &w), Err(PciError::WindowExhausted { .. })));
    // A 64-bit BAR in the last slot.
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1).bar(5, 0x1000, BarKind::Mem64));
    assert_eq!(enumerate(&mut m, 0, 0xff, &virt_windows()), Err(PciError::BadBar { bdf: Bdf::new(0, 1, 0), bar: 5 }));
}

#[test]
fn bus_master_and_memory_decode_are_left_off() {
    let on = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER;
    let mut m = Model::new(0);
    let rp = m.add(None, 1, 0, SynthFn::port(4).command(on));
    let br = m.add(Some(rp), 0, 0, SynthFn::port(7).command(on));
    m.add(Some(br), 1, 0, SynthFn::pci(0x1234, 0x11e8).bar(0, 0x10_0000, BarKind::Mem32).command(on));
    m.add(None, 2, 0, SynthFn::endpoint(0x1af4, 1).bar(0, 0x1000, BarKind::Mem32).command(on));
    let empty = m.add(None, 3, 0, SynthFn::port(4).command(on));
    enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    for (i, f) in m.fns.iter().enumerate() {
        let cmd = f.get16(COMMAND);
        assert_eq!(cmd & (CMD_BUS_MASTER | CMD_IO), 0, "function {i}: bus master / I/O left on");
        let is_bridge = f.get8(HEADER_TYPE) & 0x7f == HEADER_TYPE_BRIDGE;
        let forwards = is_bridge && i != empty;
        assert_eq!(cmd & CMD_MEMORY != 0, forwards, "function {i}: memory decode");
    }
}

#[test]
fn capabilities_are_read_and_acs_enabled() {
    let mut m = Model::new(0);
    let rp = m.add(None, 1, 0, SynthFn::port(4).acs(ACS_ALL));
    m.add(Some(rp), 0, 0, SynthFn::endpoint(0x1af4, 1).multifunction().acs(AcsFlags::RR | AcsFlags::CR).flr(FlrBehaviour::Returns(2)));
    m.add(Some(rp), 0, 1, SynthFn::endpoint(0x1af4, 2));
    m.add(None, 2, 0, SynthFn::pci(0x1af4, 3).multifunction());
    m.add(None, 2, 3, SynthFn::pci(0x1af4, 4));
    m.add(None, 3, 0, SynthFn::pci(0x1af4, 5));
    m.add(None, 3, 1, SynthFn::pci(0x1af4, 6)); // invisible: function 0 is not multi-function
    m.add(None, 4, 0, SynthFn::pci_bridge());
    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    let rpf = t.find(Bdf::new(0, 1, 0)).unwrap();
    let acs = rpf.acs.unwrap();
    assert_eq!(acs.offset, ACS_AT);
    assert_eq!(acs.cap, AcsFlags(ACS_ALL));
    assert_eq!(acs.ctrl, AcsFlags(AcsFlags::ENABLE), "SV TB RR CR UF enabled, egress control left alone");
    assert_eq!(m.fns[rp].get16(ACS_AT + ACS_CTRL), AcsFlags::ENABLE);
    let e0 = t.find(Bdf::new(1, 0, 0)).unwrap();
    assert!(e0.multifunction && e0.flr);
    assert_eq!(e0.acs.unwrap().ctrl, AcsFlags(AcsFlags::RR | AcsFlags::CR));
    let e1 = t.find(Bdf::new(1, 0, 1)).unwrap();
    assert!(e1.multifunction && !e1.flr && e1.acs.is_none());
    assert!(t.find(Bdf::new(0, 2, 3)).unwrap().multifunction);
    assert!(!t.find(Bdf::new(0, 3, 0)).unwrap().multifunction);
    assert!(t.find(Bdf::new(0, 3, 1)).is_none());
    let pb = t.find(Bdf::new(0, 4, 0)).unwrap();
    assert_eq!(pb.kind, FunctionKind::PciBridge);
    assert_eq!(pb.bridge.map(|b| (b.primary, b.secondary, b.subordinate)), Some((0, 2, 2)));
    assert_eq!(e0.pcie_cap, Some(synthetic::PCIE_AT as u8));
    let kinds: Vec<FunctionKind> = [4u8, 5, 6, 7, 8, 9, 10, 0, 1, 3].iter().map(|&t| FunctionKind::from_parts(Some(t), 1)).collect();
    assert_eq!(
        kinds,
        [
            FunctionKind::RootPort,
            FunctionKind::UpstreamPort,
            FunctionKind::DownstreamPort,
            FunctionKind::PcieToPciBridge,
            FunctionKind::PciToPcieBridge,
            FunctionKind::RcIntegratedEndpoint,
            FunctionKind::RcEventCollector,
            FunctionKind::Endpoint,
            FunctionKind::LegacyEndpoint,
            FunctionKind::Reserved(3),
        ]
    );
    assert_eq!(FunctionKind::from_parts(None, 1), FunctionKind::PciBridge);
}

#[test]
fn hostile_capability_lists_end() {
    let mut m = Model::new(0);
    let i = m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1).acs(AcsFlags::SV));
    // A standard list that loops onto itself and an extended one that does too.
    m.fns[i].cfg[synthetic::PCIE_AT as usize + 1] = 0x40;
    m.fns[i].cfg[synthetic::PCIE_AT as usize] = 0x05;
    m.fns[i].cfg[ACS_AT as usize] = 0x0e;
    m.fns[i].cfg[ACS_AT as usize + 2] = 0x01;
    m.fns[i].cfg[ACS_AT as usize + 3] = 0x10;
    let t = enumerate(&mut m, 0, 0, &virt_windows()).unwrap();
    assert_eq!(t.functions[0].kind, FunctionKind::PciDevice);
    assert_eq!(caps::find_ext_cap(&m, Bdf::new(0, 1, 0), EXT_CAP_ID_ACS), None);
}

#[test]
fn bus_master_and_memory_decode_switch() {
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1));
    let bdf = Bdf::new(0, 1, 0);
    set_bus_master(&mut m, bdf, true).unwrap();
    set_memory_decode(&mut m, bdf, true).unwrap();
    assert_eq!(m.fns[0].get16(COMMAND), CMD_BUS_MASTER | CMD_MEMORY);
    set_bus_master(&mut m, bdf, false).unwrap();
    assert_eq!(m.fns[0].get16(COMMAND), CMD_MEMORY);
    set_memory_decode(&mut m, bdf, false).unwrap();
    assert_eq!(m.fns[0].get16(COMMAND), 0);
    assert_eq!(set_bus_master(&mut m, Bdf::new(0, 9, 0), true), Err(PciError::NotPresent(Bdf::new(0, 9, 0))));
}

#[test]
fn function_level_reset_waits_and_restores() {
    let mut m = Model::new(0);
    let rp = m.add(None, 1, 0, SynthFn::port(4).acs(ACS_ALL));
    let ep = m.add(Some(rp), 0, 0, SynthFn::endpoint(0x1af4, 1).acs(AcsFlags::SV).bar(0, 0x1000, BarKind::Mem32).flr(FlrBehaviour::Returns(5)));
    let t = enumerate(&mut m, 0, 0xff, &virt_windows()).unwrap();
    let bdf = Bdf::new(1, 0, 0);
    let bar = m.fns[ep].get32(BAR0);
    set_bus_master(&mut m, bdf, true).unwrap();
    set_memory_decode(&mut m, bdf, true).unwrap();
    let mut d = FakeDelay::default();
    function_level_reset(&mut m, bdf, &mut d).unwrap();
    assert_eq!(m.fns[ep].flrs.get(), 1);
    assert!(d.ns >= 100_000_000, "waited only {} ns", d.ns);
    assert!(d.ns < 1_200_000_000);
    assert_eq!(m.fns[ep].get32(BAR0), bar, "BAR restored");
    assert_eq!(u64::from(bar), t.find(bdf).unwrap().bars[0].pci);
    assert_eq!(m.fns[ep].get16(ACS_AT + ACS_CTRL), AcsFlags::SV, "ACS control restored");
    assert_eq!(m.fns[ep].get16(COMMAND) & (CMD_BUS_MASTER | CMD_MEMORY), 0, "comes back blocked");
}

#[test]
fn function_level_reset_refuses_and_times_out() {
    let mut m = Model::new(0);
    m.add(None, 1, 0, SynthFn::endpoint(0x1af4, 1));
    m.add(None, 2, 0, SynthFn::endpoint(0x1af4, 2).flr(FlrBehaviour::Dead));
    m.add(None, 3, 0, SynthFn::pci(0x1af4, 3));
    let mut d = FakeDelay::default();
    assert_eq!(function_level_reset(&mut m, Bdf::new(0, 1, 0), &mut d), Err(PciError::FlrUnsupported(Bdf::new(0, 1, 0))));
    assert_eq!(function_level_reset(&mut m, Bdf::new(0, 3, 0), &mut d), Err(PciError::FlrUnsupported(Bdf::new(0, 3, 0))));
    assert_eq!(function_level_reset(&mut m, Bdf::new(0, 4, 0), &mut d), Err(PciError::NotPresent(Bdf::new(0, 4, 0))));
    assert_eq!(d.ns, 0);
    assert_eq!(function_level_reset(&mut m, Bdf::new(0, 2, 0), &mut d), Err(PciError::FlrTimeout(Bdf::new(0, 2, 0))));
    // 100 ms, then at most the ready timeout: bounded.
    assert!(d.ns >= 1_100_000_000 && d.ns <= 1_200_000_000, "{} ns", d.ns);
}

#[test]
fn bdf_and_rid() {
    let b = Bdf::new(0x12, 0x1f, 7);
    assert_eq!(b.rid(), 0x12ff);
    assert_eq!(Bdf::from_rid(0x12ff), b);
    assert_eq!(Bdf::new(2, 1, 0).rid(), 0x208);
}
