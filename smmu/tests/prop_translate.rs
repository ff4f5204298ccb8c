//! Property: for random domains and mappings, every access the model
//! translates lands inside what was mapped, with the mapped permission and
//! memory type; everything else faults (or aborts for unattached streams).
//! Also random map/unmap sequences against a reference interval map.

mod model;
use model::*;

use proptest::prelude::*;
use smmu::{DomainConfig, DomainStage, Error, Iova, MemType, Perm, PhysAddr, Prot, StagePreference, StreamId};

const PAGE: u64 = 4096;
const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;

#[derive(Clone, Debug)]
struct MapReq {
    iova: u64,
    pa: u64,
    size: u64,
    prot: Prot,
}

fn prot() -> impl Strategy<Value = Prot> {
    (any::<bool>(), any::<bool>())
        .prop_map(|(rw, dev)| Prot { perm: if rw { Perm::ReadWrite } else { Perm::ReadOnly }, mem: if dev { MemType::Device } else { MemType::Normal } })
}

/// Mappings that like to be block aligned, sometimes overlap, sometimes
/// leave the input range.
fn map_req(input_bits: u8) -> impl Strategy<Value = MapReq> {
    let top = 1u64 << input_bits;
    (0u32..3, 0u32..3, 1u64..5, 0u64..64, 0u64..64, prot(), 0u8..20).prop_map(move |(ia, pa_al, n, islot, pslot, prot, edge)| {
        let align = [PAGE, MB2, GB1][ia as usize];
        let pa_align = [PAGE, MB2, GB1][pa_al as usize];
        let size = n * [PAGE, MB2, PAGE][ia as usize] + if ia == 2 { MB2 } else { 0 };
        let iova = if edge == 0 { top - size / 2 / PAGE * PAGE } else { (islot * align * 3) % (top / 2) };
        let pa = (pslot * pa_align * 5) % (1 << 43);
        MapReq { iova, pa, size, prot }
    })
}

fn overlaps(a: &MapReq, b: &MapReq) -> bool {
    a.iova < b.iova + b.size && b.iova < a.iova + a.size
}

fn expect(maps: &[MapReq], addr: u64, access: Access) -> Result<(u64, bool, bool), FaultKind> {
    match maps.iter().find(|m| addr >= m.iova && addr < m.iova + m.size) {
        None => Err(FaultKind::Translation),
        Some(m) => {
            let writable = m.prot.perm == Perm::ReadWrite;
            if access.write && !writable {
                Err(FaultKind::Permission)
            } else {
                Ok((m.pa + (addr - m.iova), writable, m.prot.mem == MemType::Device))
            }
        }
    }
}

fn flavour() -> impl Strategy<Value = Flavour> {
    prop_oneof![Just(Flavour::Nested), Just(Flavour::S1Only), Just(Flavour::S2Only)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn translations_land_inside_mappings(
        f in flavour(),
        want_s1 in any::<bool>(),
        bits_sel in 0usize..3,
        reqs in proptest::collection::vec(map_req(44), 1..8),
        sids in proptest::collection::vec(0u32..0x300, 1..4),
        probes in proptest::collection::vec((0usize..8, any::<u64>(), any::<bool>(), 0usize..4), 16..48),
    ) {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let input_bits = [32u8, 39, 44][bits_sel];
        let stage = if want_s1 && f != Flavour::S2Only { StagePreference::Stage1 } else { StagePreference::Auto };
        let mut d = s.create_domain(DomainConfig { stage, input_bits: Some(input_bits), ..Default::default() }).unwrap();
        let stage2 = d.stage() == DomainStage::Stage2;
        let mut maps: Vec<MapReq> = Vec::new();
        for r in reqs {
            let mut r = r;
            r.iova %= 1u64 << input_bits;
            r.iova &= !(PAGE - 1);
            let res = s.map(&mut d, Iova(r.iova), PhysAddr(r.pa), r.size, r.prot);
            let beyond = r.iova + r.size > 1u64 << input_bits;
            let overlap = maps.iter().any(|m| overlaps(m, &r));
            match res {
                Ok(()) => {
                    prop_assert!(!beyond && !overlap, "map accepted {r:?}");
                    maps.push(r);
                }
                Err(Error::OutOfRange(_)) => prop_assert!(beyond),
                Err(Error::Overlap(_)) => prop_assert!(overlap && !beyond),
                Err(e) => prop_assert!(false, "unexpected {e:?} for {r:?}"),
            }
        }
        s.attach(&d, &sids.iter().map(|x| StreamId(*x)).collect::<Vec<_>>()).unwrap();
        m.check_quiescent();
        for (which, off, write, sid_sel) in probes {
            let access = if write { Access::WRITE } else { Access::READ };
            let addr = match maps.get(which) {
                Some(mp) if off % 4 != 0 => mp.iova + (off >> 8) % mp.size,
                _ => off % (1u64 << input_bits),
            };
            let (sid, attached) = match sids.get(sid_sel) {
                Some(x) => (*x, true),
                None => (0x2ff, sids.contains(&0x2ff)),
            };
            let got = m.translate(sid, addr, access);
            prop_assert_eq!(got, m.translate_uncached(sid, addr, access), "cached vs fresh");
            if !attached {
                let closed = matches!(got, Outcome::Abort | Outcome::Fault { kind: FaultKind::BadStreamId, .. });
                prop_assert!(closed, "unattached stream: {:?}", got);
                continue;
            }
            match expect(&maps, addr, access) {
                Ok((pa, writable, device)) => prop_assert_eq!(got, Outcome::Ok { pa, writable, device }),
                Err(kind) => prop_assert_eq!(got, Outcome::Fault { kind, stage2 }),
            }
        }
        m.check_quiescent();
        let v = m.violations();
        prop_assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn map_unmap_sequences_match_reference(
        f in flavour(),
        ops in proptest::collection::vec((any::<bool>(), map_req(39), 0usize..8), 1..24),
    ) {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig { input_bits: Some(39), ..Default::default() }).unwrap();
        s.attach(&d, &[StreamId(9)]).unwrap();
        let baseline = m.arena.live_allocations();
        let mut maps: Vec<MapReq> = Vec::new();
        for (is_map, mut r, pick) in ops {
            r.iova %= 1 << 39;
            if is_map || maps.is_empty() {
                let ok = r.iova + r.size <= 1 << 39 && !maps.iter().any(|x| overlaps(x, &r));
                let res = s.map(&mut d, Iova(r.iova), PhysAddr(r.pa), r.size, r.prot);
                prop_assert_eq!(res.is_ok(), ok, "{:?} {:?}", r, res);
                if ok { maps.push(r); }
            } else {
                let victim = maps.remove(pick % maps.len());
                s.unmap(&mut d, Iova(victim.iova), victim.size).unwrap();
            }
            // Warm the caches with a few accesses, then check coherence.
            for mp in &maps {
                let got = m.translate(9, mp.iova, Access::READ);
                prop_assert_eq!(got, Outcome::Ok { pa: mp.pa, writable: mp.prot.perm == Perm::ReadWrite, device: mp.prot.mem == MemType::Device });
            }
            m.check_quiescent();
        }
        for mp in maps.drain(..) {
            s.unmap(&mut d, Iova(mp.iova), mp.size).unwrap();
            let gone = matches!(m.translate(9, mp.iova, Access::READ), Outcome::Fault { kind: FaultKind::Translation, .. });
            prop_assert!(gone, "still translates after unmap: {:?}", mp);
        }
        prop_assert_eq!(m.arena.live_allocations(), baseline, "every table freed once empty");
        m.check_quiescent();
        let v = m.violations();
        prop_assert!(v.is_empty(), "{v:?}");
    }
}
