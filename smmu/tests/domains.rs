//! Domains, mapping, attach/detach, and what each costs in commands.

mod model;
use model::*;

use smmu::{DomainConfig, DomainStage, Error, Iova, MemType, Perm, PhysAddr, Prot, StagePreference, StreamId};

const KB4: u64 = 4 << 10;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;

fn sids(list: &[u32]) -> Vec<StreamId> {
    list.iter().map(|s| StreamId(*s)).collect()
}

#[test]
fn stage_follows_features() {
    for (f, want) in [(Flavour::Nested, DomainStage::Stage2), (Flavour::S2Only, DomainStage::Stage2), (Flavour::S1Only, DomainStage::Stage1)] {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let d = s.create_domain(DomainConfig::default()).unwrap();
        assert_eq!(d.stage(), want);
        assert_eq!(d.input_bits(), 44, "min(48, OAS)");
        match want {
            DomainStage::Stage2 => {
                assert!(d.vmid().is_some_and(|v| v.0 != 0) && d.asid().is_none())
            }
            DomainStage::Stage1 => assert!(d.asid().is_some() && d.cd_table().is_some()),
        }
    }
    // Asking for a stage the SMMU lacks is refused.
    let m = Model::new(Flavour::S1Only);
    let mut s = bring_up(&m);
    let r = s.create_domain(DomainConfig { stage: StagePreference::Stage2, input_bits: None, tag: None });
    assert!(matches!(r, Err(Error::Unsupported(_))));
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let d = s.create_domain(DomainConfig { stage: StagePreference::Stage1, input_bits: Some(39), tag: None }).unwrap();
    assert_eq!((d.stage(), d.input_bits()), (DomainStage::Stage1, 39));
    // Input sizes: stage 2 limited by OAS, both by T0SZ range.
    assert_eq!(s.create_domain(DomainConfig { stage: StagePreference::Stage2, input_bits: Some(48), tag: None }).err(), Some(Error::BadInputSize(48)));
    assert_eq!(s.create_domain(DomainConfig { input_bits: Some(24), ..Default::default() }).err(), Some(Error::BadInputSize(24)));
}

fn setup(f: Flavour) -> (std::rc::Rc<Model>, ()) {
    (Model::new(f), ())
}

#[test]
fn largest_blocks_and_translation() {
    for f in Flavour::ALL {
        let (m, _) = setup(f);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, all aligned to allow each block size.
        let iova = Iova(GB1);
        let pa = PhysAddr(4 * GB1);
        let size = GB1 + MB2 + KB4;
        s.map(&mut d, iova, pa, size, Prot::RAM_RW).unwrap();
        assert_eq!(s.lookup(&d, Iova(GB1 + 5)).map(|l| l.2), Some(GB1));
        assert_eq!(s.lookup(&d, Iova(2 * GB1 + 7)).map(|l| l.2), Some(MB2));
        assert_eq!(s.lookup(&d, Iova(2 * GB1 + MB2)).map(|l| l.2), Some(KB4));
        assert_eq!(s.lookup(&d, Iova(2 * GB1 + MB2 + KB4)), None);
        // Misaligned pa forces smaller blocks.
        s.map(&mut d, Iova(8 * GB1), PhysAddr(5 * GB1 + KB4), MB2, Prot::RAM_RO).unwrap();
        assert_eq!(s.lookup(&d, Iova(8 * GB1)).map(|l| l.2), Some(KB4));

        s.attach(&d, &sids(&[0x18])).unwrap();
        let ok = |pa: u64, writable| Outcome::Ok { pa, writable, device: false };
        assert_eq!(m.translate(0x18, GB1 + 0x1234, Access::WRITE), ok(4 * GB1 + 0x1234, true));
        assert_eq!(m.translate(0x18, 2 * GB1 + MB2 + 8, Access::READ), ok(5 * GB1 + MB2 + 8, true));
        assert_eq!(m.translate(0x18, 8 * GB1 + 0x10, Access::READ), ok(5 * GB1 + KB4 + 0x10, false));
        let stage2 = f != Flavour::S1Only;
        assert_eq!(m.translate(0x18, 8 * GB1 + 0x10, Access::WRITE), Outcome::Fault { kind: FaultKind::Permission, stage2 });
        assert_eq!(m.translate(0x18, 0x1000, Access::READ), Outcome::Fault { kind: FaultKind::Translation, stage2 });
        // Other streams still fail closed.
        assert_eq!(m.translate(0x19, GB1, Access::READ), Outcome::Abort);
        assert_eq!(m.translate(0x118, GB1, Access::READ), Outcome::Fault { kind: FaultKind::BadStreamId, stage2: false });
        m.check_quiescent();
        m.assert_clean();
    }
}

#[test]
fn device_memory_type() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        s.map(&mut d, Iova(0x1000_0000), PhysAddr(0x10_0000_0000), 0x4000, Prot::MMIO_RW).unwrap();
        s.attach(&d, &sids(&[7])).unwrap();
        assert_eq!(m.translate(7, 0x1000_0008, Access::WRITE), Outcome::Ok { pa: 0x10_0000_0008, writable: true, device: true });
        assert_eq!(s.lookup(&d, Iova(0x1000_0000)).unwrap().1, Prot { perm: Perm::ReadWrite, mem: MemType::Device });
    }
}

#[test]
fn map_refusals_change_nothing() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let mut d = s.create_domain(DomainConfig::default()).unwrap();
    s.map(&mut d, Iova(MB2), PhysAddr(GB1), MB2, Prot::RAM_RW).unwrap();
    let tables = m.arena.live_allocations();
    let rw = Prot::RAM_RW;
    assert_eq!(s.map(&mut d, Iova(0x1001), PhysAddr(0), KB4, rw), Err(Error::Misaligned(Iova(0x1001))));
    assert_eq!(s.map(&mut d, Iova(0x1000), PhysAddr(0x10), KB4, rw), Err(Error::Misaligned(Iova(0x1000))));
    assert_eq!(s.map(&mut d, Iova(0x1000), PhysAddr(0), 100, rw), Err(Error::Misaligned(Iova(0x1000))));
    assert_eq!(s.map(&mut d, Iova(0x1000), PhysAddr(0), 0, rw), Err(Error::EmptyRange));
    assert_eq!(s.map(&mut d, Iova(MB2 - KB4), PhysAddr(0), 2 * KB4, rw), Err(Error::Overlap(Iova(MB2))));
    assert_eq!(s.map(&mut d, Iova(1 << 44), PhysAddr(0), KB4, rw), Err(Error::OutOfRange(Iova(1 << 44))));
    assert_eq!(s.map(&mut d, Iova((1 << 44) - KB4), PhysAddr(0), 2 * KB4, rw), Err(Error::OutOfRange(Iova((1 << 44) - KB4))));
    assert_eq!(s.map(&mut d, Iova(0), PhysAddr((1 << 44) - KB4), 2 * KB4, rw), Err(Error::OutputOutOfRange(PhysAddr((1 << 44) - KB4))));
    assert_eq!(m.arena.live_allocations(), tables, "no table allocated by a refused map");
    // Unmap refusals.
    assert_eq!(s.unmap(&mut d, Iova(0), KB4), Err(Error::NotMapped(Iova(0))));
    assert_eq!(s.unmap(&mut d, Iova(MB2), KB4), Err(Error::SplitsBlock(Iova(MB2))));
    assert_eq!(s.unmap(&mut d, Iova(MB2), MB2 + KB4), Err(Error::NotMapped(Iova(2 * MB2))));
    assert!(s.lookup(&d, Iova(MB2)).is_some());
    m.assert_clean();
}

#[test]
fn unmap_frees_empty_tables_and_invalidates() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        s.attach(&d, &sids(&[1])).unwrap();
        let before = m.arena.live_allocations();
        s.map(&mut d, Iova(0x40_0000_0000), PhysAddr(0x8000_0000), 3 * KB4, Prot::RAM_RW).unwrap();
        // Level 1, 2 and 3 tables under a level-0 root.
        assert_eq!(m.arena.live_allocations(), before + 3);
        assert!(matches!(m.translate(1, 0x40_0000_1000, Access::READ), Outcome::Ok { .. }));
        assert!(m.tlb_len() > 0);
        let st0 = s.stats();
        s.unmap(&mut d, Iova(0x40_0000_1000), KB4).unwrap();
        let st1 = s.stats() - st0;
        // RIL: one range TLBI + CMD_SYNC.
        assert_eq!((st1.commands, st1.syncs), (2, 1));
        m.check_quiescent();
        assert!(matches!(m.translate(1, 0x40_0000_1000, Access::READ), Outcome::Fault { kind: FaultKind::Translation, .. }));
        assert!(matches!(m.translate(1, 0x40_0000_2000, Access::READ), Outcome::Ok { .. }));
        s.unmap(&mut d, Iova(0x40_0000_0000), KB4).unwrap();
        s.unmap(&mut d, Iova(0x40_0000_2000), KB4).unwrap();
        assert_eq!(m.arena.live_allocations(), before, "tables that became empty were freed");
        m.check_quiescent();
        m.assert_clean();
    }
}

#[test]
fn unmap_without_ril_uses_page_or_full_tlbi() {
    for f in Flavour::ALL {
        let mut idr = f.idr();
        idr[3] &= !(1 << 10);
        let m = Model::with_idr(idr, 16 << 20);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        s.map(&mut d, Iova(0), PhysAddr(GB1), 4 * MB2, Prot::RAM_RW).unwrap();
        s.map(&mut d, Iova(GB1), PhysAddr(2 * GB1), 16 * KB4, Prot::RAM_RW).unwrap();
        s.attach(&d, &sids(&[2])).unwrap();
        for off in [0, MB2, 2 * MB2, 3 * MB2, GB1, GB1 + 8 * KB4] {
            assert!(matches!(m.translate(2, off, Access::READ), Outcome::Ok { .. }));
        }
        // 8 pages: 8 per-page TLBIs + CMD_SYNC.
        m.clear_opcodes();
        s.unmap(&mut d, Iova(GB1), 8 * KB4).unwrap();
        let per_page = if f == Flavour::S1Only { 0x12 } else { 0x2a };
        assert_eq!(m.opcodes(), [vec![per_page; 8], vec![0x46]].concat());
        // A 2 MiB block is 512 pages: invalidate the whole ASID/VMID instead.
        m.clear_opcodes();
        s.unmap(&mut d, Iova(MB2), MB2).unwrap();
        let all = if f == Flavour::S1Only { 0x11 } else { 0x28 };
        assert_eq!(m.opcodes(), vec![all, 0x46]);
        m.check_quiescent();
        assert!(matches!(m.translate(2, MB2, Access::READ), Outcome::Fault { .. }));
        assert!(matches!(m.translate(2, 0, Access::READ), Outcome::Ok { .. }));
        m.assert_clean();
    }
}

#[test]
fn lazily_allocated_level2_spans() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up(&m);
    let d = s.create_domain(DomainConfig::default()).unwrap();
    let st = s.stream_table();
    assert!(!st.is_present(s.dma(), StreamId(0x0100)));
    let before = m.arena.live_allocations();
    s.attach(&d, &sids(&[0x0100, 0x01ff])).unwrap();
    // One level-2 table (256 STEs) for bus 1, nothing else.
    assert_eq!(m.arena.live_allocations(), before + 1);
    assert!(s.stream_table().is_present(s.dma(), StreamId(0x0180)));
    assert!(!s.stream_table().is_present(s.dma(), StreamId(0x0200)));
    // Its other entries abort; other spans report a bad StreamID.
    assert_eq!(m.translate(0x0180, 0, Access::READ), Outcome::Abort);
    assert_eq!(m.translate(0x0200, 0, Access::READ), Outcome::Fault { kind: FaultKind::BadStreamId, stage2: false });
    s.attach(&d, &sids(&[0xffff])).unwrap();
    assert_eq!(m.arena.live_allocations(), before + 2);
    assert_eq!(s.attach(&d, &sids(&[0x1_0000])), Err(Error::StreamIdOutOfRange(StreamId(0x1_0000))));
    // Detaching a stream whose span was never allocated costs nothing.
    let st0 = s.stats();
    s.detach(&sids(&[0x0300])).unwrap();
    assert_eq!(s.stats() - st0, smmu::Stats::default());
    m.check_quiescent();
    m.assert_clean();
}

/// Commands and CMD_SYNCs for attaching/detaching 1, 2 and 8 streams, per
/// stream-table format. Two-level: an assignment swaps in a fresh level-2
/// table behind ONE CMD_SYNC; linear: dwords 1..7, CMD_SYNC, dword 0,
/// CMD_SYNC. A release is one CMD_SYNC either way; a stage-1 stream adds
/// CFGI_CD_ALL.
#[test]
fn attach_detach_costs() {
    for f in Flavour::ALL {
        for two_level in [true, false] {
            let m = if two_level {
                Model::new(f)
            } else {
                let mut idr = f.idr();
                idr[1] = (idr[1] & !0x3f) | 8; // 8-bit StreamIDs: linear
                Model::with_idr(idr, 8 << 20)
            };
            let mut s = bring_up(&m);
            let a = s.create_domain(DomainConfig::default()).unwrap();
            let b = s.create_domain(DomainConfig::default()).unwrap();
            let mut rows = Vec::new();
            for (n, list) in [
                (1, sids(&[0x10])),
                (2, sids(&[0x20, 0x21])),                            // aligned pair → CFGI_STE_RANGE
                (2, sids(&[0x31, 0x32])),                            // unaligned → CFGI_STE each
                (8, (0x40..0x48).map(StreamId).collect::<Vec<_>>()), // aligned block
                (8, [0x50, 0x52, 0x54, 0x56, 0x58, 0x5a, 0x5c, 0x5e].map(StreamId).to_vec()),
            ] {
                let st0 = s.stats();
                s.attach(&a, &list).unwrap();
                let attach = s.stats() - st0;
                let st0 = s.stats();
                s.attach(&b, &list).unwrap(); // owner change without detach
                let move_ = s.stats() - st0;
                let st0 = s.stats();
                s.detach(&list).unwrap();
                let detach = s.stats() - st0;
                rows.push((n, attach.commands, attach.syncs, move_.commands, move_.syncs, detach.commands, detach.syncs));
                m.check_quiescent();
                m.assert_clean();
            }
            // n, attach cmds/syncs, re-attach cmds/syncs, detach cmds/syncs
            let expected = match (f, two_level) {
                (Flavour::S1Only, true) => {
                    vec![(1, 2, 1, 6, 2, 4, 1), (2, 2, 1, 7, 2, 5, 1), (2, 3, 1, 9, 2, 6, 1), (8, 2, 1, 13, 2, 11, 1), (8, 9, 1, 27, 2, 18, 1)]
                }
                (Flavour::S1Only, false) => {
                    vec![(1, 4, 2, 8, 3, 4, 1), (2, 4, 2, 9, 3, 5, 1), (2, 6, 2, 12, 3, 6, 1), (8, 4, 2, 15, 3, 11, 1), (8, 18, 2, 36, 3, 18, 1)]
                }
                (_, true) => vec![(1, 2, 1, 5, 2, 3, 1), (2, 2, 1, 5, 2, 3, 1), (2, 3, 1, 7, 2, 4, 1), (8, 2, 1, 5, 2, 3, 1), (8, 9, 1, 19, 2, 10, 1)],
                (_, false) => vec![(1, 4, 2, 7, 3, 3, 1), (2, 4, 2, 7, 3, 3, 1), (2, 6, 2, 10, 3, 4, 1), (8, 4, 2, 7, 3, 3, 1), (8, 18, 2, 28, 3, 10, 1)],
            };
            assert_eq!(rows, expected, "{f:?}, two-level {two_level}");
        }
    }
}

#[test]
fn attach_then_detach_isolates() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut a = s.create_domain(DomainConfig::default()).unwrap();
        let mut b = s.create_domain(DomainConfig::default()).unwrap();
        s.map(&mut a, Iova(0x10_0000), PhysAddr(0x1_0000_0000), MB2, Prot::RAM_RW).unwrap();
        s.map(&mut b, Iova(0x10_0000), PhysAddr(0x2_0000_0000), MB2, Prot::RAM_RW).unwrap();
        s.attach(&a, &sids(&[5])).unwrap();
        assert_eq!(m.translate(5, 0x10_0000, Access::READ), Outcome::Ok { pa: 0x1_0000_0000, writable: true, device: false });
        // Move to b: the TLB entry of a must not be used.
        s.attach(&b, &sids(&[5])).unwrap();
        m.check_quiescent();
        assert_eq!(m.translate(5, 0x10_0000, Access::READ), Outcome::Ok { pa: 0x2_0000_0000, writable: true, device: false });
        s.detach(&sids(&[5])).unwrap();
        m.check_quiescent();
        assert_eq!(m.translate(5, 0x10_0000, Access::READ), Outcome::Abort);
        // Destroy is refused while attached, accepted after.
        s.attach(&a, &sids(&[6])).unwrap();
        let a = match s.destroy_domain(a) {
            Err((a, Error::DomainInUse(StreamId(6)))) => a,
            other => panic!("{:?}", other.err().map(|e| e.1)),
        };
        s.detach(&sids(&[6])).unwrap();
        s.destroy_domain(a).unwrap();
        s.destroy_domain(b).unwrap();
        // The ids come back, and no stale entry survives under them.
        let c = s.create_domain(DomainConfig::default()).unwrap();
        s.attach(&c, &sids(&[5])).unwrap();
        assert!(matches!(m.translate(5, 0x10_0000, Access::READ), Outcome::Fault { kind: FaultKind::Translation, .. }));
        m.check_quiescent();
        m.assert_clean();
    }
}

#[test]
fn stage1_domains_do_not_share_tlb_entries() {
    // Two stage-1 domains, same IOVA, different ASIDs.
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let cfg = DomainConfig { stage: StagePreference::Stage1, input_bits: None, tag: None };
    let mut a = s.create_domain(cfg).unwrap();
    let mut b = s.create_domain(cfg).unwrap();
    assert_ne!(a.asid(), b.asid());
    s.map(&mut a, Iova(0), PhysAddr(0x1000_0000), KB4, Prot::RAM_RW).unwrap();
    s.map(&mut b, Iova(0), PhysAddr(0x2000_0000), KB4, Prot::RAM_RW).unwrap();
    s.attach(&a, &sids(&[1])).unwrap();
    s.attach(&b, &sids(&[2])).unwrap();
    assert!(matches!(m.translate(1, 0, Access::READ), Outcome::Ok { pa: 0x1000_0000, .. }));
    assert!(matches!(m.translate(2, 0, Access::READ), Outcome::Ok { pa: 0x2000_0000, .. }));
    s.unmap(&mut a, Iova(0), KB4).unwrap();
    m.check_quiescent();
    assert!(matches!(m.translate(1, 0, Access::READ), Outcome::Fault { .. }));
    assert!(matches!(m.translate(2, 0, Access::READ), Outcome::Ok { pa: 0x2000_0000, .. }));
    m.assert_clean();
}

#[test]
fn map_failure_rolls_back() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up(&m);
    let mut d = s.create_domain(DomainConfig::default()).unwrap();
    s.attach(&d, &sids(&[3])).unwrap();
    let before = m.arena.live_allocations();
    // Room for two more tables: the 4 KiB pages at the end cannot be mapped.
    m.arena.set_fail_after(Some(2));
    let r = s.map(&mut d, Iova(0), PhysAddr(GB1), MB2 + 3 * KB4, Prot::RAM_RW);
    m.arena.set_fail_after(None);
    assert_eq!(r, Err(Error::OutOfMemory));
    assert_eq!(s.lookup(&d, Iova(0)), None, "partial mapping removed");
    assert_eq!(m.arena.live_allocations(), before, "its tables freed after invalidation");
    m.check_quiescent();
    m.assert_clean();
}

#[test]
fn domains_take_the_requested_tag() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let a = s.create_domain(DomainConfig { tag: Some(7), ..Default::default() }).unwrap();
    assert_eq!(a.vmid(), Some(smmu::Vmid(7)));
    assert_eq!(s.create_domain(DomainConfig { tag: Some(7), ..Default::default() }).err(), Some(Error::IdsExhausted), "VMID 7 is taken");
    s.destroy_domain(a).unwrap();
    let b = s.create_domain(DomainConfig { stage: StagePreference::Stage1, tag: Some(9), ..Default::default() }).unwrap();
    assert_eq!(b.asid(), Some(smmu::Asid(9)));
}

#[test]
fn nested_attach_translates_through_both_stages() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let mut s1 = s.create_domain(DomainConfig { stage: StagePreference::Stage1, ..Default::default() }).unwrap();
    let mut s2 = s.create_domain(DomainConfig { stage: StagePreference::Stage2, ..Default::default() }).unwrap();
    // Stage 1: IOVA 1 GiB -> IPA 2 GiB; stage 2: that IPA -> PA 5 GiB, and
    // the driver's own memory (CD, stage-1 tables) identity-mapped.
    s.map(&mut s1, Iova(GB1), PhysAddr(2 * GB1), MB2, Prot::RAM_RW).unwrap();
    s.map(&mut s2, Iova(2 * GB1), PhysAddr(5 * GB1), MB2, Prot::RAM_RW).unwrap();
    let arena = m.arena.base;
    s.map(&mut s2, Iova(arena), PhysAddr(arena), 4 << 20, Prot::RAM_RW).unwrap();
    let before = s.stats();
    s.attach_nested(&mut s1, &mut s2, &sids(&[0x18])).unwrap();
    assert_eq!((s.stats() - before).syncs, 1);
    assert_eq!(m.translate(0x18, GB1 + 0x10, Access::WRITE), Outcome::Ok { pa: 5 * GB1 + 0x10, writable: true, device: false });
    // Wrong kinds are refused, nothing changes.
    assert!(s.attach_nested(&mut s2, &mut s1, &sids(&[0x19])).is_err());
    assert_eq!(m.translate(0x19, GB1, Access::READ), Outcome::Abort);
    s.detach(&sids(&[0x18])).unwrap();
    assert_eq!(m.translate(0x18, GB1 + 0x10, Access::READ), Outcome::Abort);
    s.destroy_domain(s1).unwrap();
    s.destroy_domain(s2).unwrap();
    m.check_quiescent();
    m.assert_clean();
}
