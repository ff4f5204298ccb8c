//! Property: random sequences of attach / detach / map / unmap / destroy, on
//! two-level and linear stream tables, never let the model observe a
//! bypass, a torn STE fetch (every mix of dwords a fetch could read across
//! the driver's writes, played at each invalidation), or a stale
//! configuration or translation once the driver reported completion; and
//! every stream translates exactly as its current owner's mappings say.

mod model;
use model::*;

use proptest::prelude::*;
use smmu::{Domain, DomainConfig, Error, Iova, PhysAddr, Prot, StagePreference, StreamId};

const PAGE: u64 = 4096;
const MB2: u64 = 2 << 20;

/// StreamIDs spread over three level-2 spans, including an aligned pair and
/// an aligned quad (to exercise CFGI_STE_RANGE).
const SIDS: [u32; 8] = [0x10, 0x11, 0x14, 0x15, 0x16, 0x17, 0x1_23, 0x2_00];

#[derive(Clone, Debug)]
enum Op {
    Attach { dom: usize, mask: u8 },
    Detach { mask: u8 },
    Map { dom: usize, slot: u64, block: bool, rw: bool },
    Unmap { dom: usize, pick: usize },
    Recreate { dom: usize },
    Probe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 1u8..=255).prop_map(|(dom, mask)| Op::Attach { dom, mask }),
        3 => (1u8..=255).prop_map(|mask| Op::Detach { mask }),
        3 => (0usize..3, 0u64..16, any::<bool>(), any::<bool>()).prop_map(|(dom, slot, block, rw)| Op::Map { dom, slot, block, rw }),
        2 => (0usize..3, any::<usize>()).prop_map(|(dom, pick)| Op::Unmap { dom, pick }),
        1 => (0usize..3).prop_map(|dom| Op::Recreate { dom }),
        1 => Just(Op::Probe),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    iova: u64,
    pa: u64,
    size: u64,
    rw: bool,
}

struct World {
    domains: Vec<Option<Domain>>,
    maps: Vec<Vec<Mapping>>,
    owner: [Option<usize>; SIDS.len()],
    /// A level-2 table exists for the span of this StreamID.
    span_live: [bool; SIDS.len()],
}

fn mask_sids(mask: u8) -> Vec<usize> {
    (0..SIDS.len()).filter(|i| mask & (1 << i) != 0).collect()
}

/// Checks every stream against the reference, warming the caches on the way.
fn probe_all(m: &Model, w: &World) -> Result<(), TestCaseError> {
    // Addresses mapped in any domain: a stream must reach only its owner's.
    let mut addrs: Vec<u64> = w.maps.iter().flatten().map(|mp| mp.iova + mp.size / 2).collect();
    addrs.push(0x7_0000_0000);
    for (i, sid) in SIDS.iter().enumerate() {
        for &a in &addrs {
            for access in [Access::READ, Access::WRITE] {
                let got = m.translate(*sid, a, access);
                let want = match w.owner[i] {
                    None if w.span_live[i] => Some(Outcome::Abort),
                    None => None, // C_BAD_STREAMID: level-1 descriptor invalid
                    Some(d) => Some(match w.maps[d].iter().find(|mp| a >= mp.iova && a < mp.iova + mp.size) {
                        Some(mp) if access.write && !mp.rw => Outcome::Fault { kind: FaultKind::Permission, stage2: false },
                        Some(mp) => Outcome::Ok { pa: mp.pa + (a - mp.iova), writable: mp.rw, device: false },
                        None => Outcome::Fault { kind: FaultKind::Translation, stage2: false },
                    }),
                };
                let got_norm = match got {
                    Outcome::Fault { kind, .. } => Outcome::Fault { kind, stage2: false },
                    o => o,
                };
                match want {
                    Some(want) => {
                        prop_assert_eq!(got_norm, want, "sid {:#x} addr {:#x} {:?}", sid, a, access)
                    }
                    None => {
                        let closed = matches!(got, Outcome::Fault { kind: FaultKind::BadStreamId, .. });
                        prop_assert!(closed, "sid {:#x}: {:?}", sid, got);
                    }
                }
            }
        }
    }
    Ok(())
}

fn flavour() -> impl Strategy<Value = Flavour> {
    prop_oneof![Just(Flavour::Nested), Just(Flavour::S1Only), Just(Flavour::S2Only)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ownership_changes_are_clean(
        f in flavour(),
        s1_domains in any::<bool>(),
        linear in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..20),
    ) {
        let m = if linear {
            // No two-level support (IDR0.ST_LEVEL = 0) and 10-bit
            // StreamIDs: a linear table, where installs take two CMD_SYNCs.
            let mut idr = f.idr();
            idr[0] &= !(0b11 << 27);
            idr[1] = (idr[1] & !0x3f) | 10;
            Model::with_idr(idr, 4 << 20)
        } else {
            Model::new(f)
        };
        let mut s = bring_up(&m);
        let cfg = DomainConfig {
            stage: if s1_domains && f == Flavour::Nested { StagePreference::Stage1 } else { StagePreference::Auto },
            input_bits: Some(36),
            tag: None,
        };
        let mut w = World {
            domains: (0..3).map(|_| Some(s.create_domain(cfg).unwrap())).collect(),
            maps: vec![Vec::new(); 3],
            owner: [None; SIDS.len()],
            // A linear table holds every STE from the start.
            span_live: [linear; SIDS.len()],
        };
        for op in ops {
            // Warm caches so that a missing invalidation would be visible.
            probe_all(&m, &w)?;
            match op {
                Op::Attach { dom, mask } => {
                    let idx = mask_sids(mask);
                    let list: Vec<StreamId> = idx.iter().map(|i| StreamId(SIDS[*i])).collect();
                    let d = w.domains[dom].as_ref().unwrap();
                    s.attach(d, &list).unwrap();
                    for i in idx {
                        w.owner[i] = Some(dom);
                        for (j, sid) in SIDS.iter().enumerate() {
                            if sid >> 8 == SIDS[i] >> 8 {
                                w.span_live[j] = true;
                            }
                        }
                    }
                }
                Op::Detach { mask } => {
                    let idx = mask_sids(mask);
                    let list: Vec<StreamId> = idx.iter().map(|i| StreamId(SIDS[*i])).collect();
                    s.detach(&list).unwrap();
                    for i in idx {
                        w.owner[i] = None;
                    }
                }
                Op::Map { dom, slot, block, rw } => {
                    let size = if block { MB2 } else { 3 * PAGE };
                    let iova = slot * MB2 + if block { 0 } else { 5 * PAGE };
                    let pa = 0x1_0000_0000 * (dom as u64 + 1) + slot * MB2;
                    let overlap = w.maps[dom].iter().any(|mp| iova < mp.iova + mp.size && mp.iova < iova + size);
                    let d = w.domains[dom].as_mut().unwrap();
                    let prot = if rw { Prot::RAM_RW } else { Prot::RAM_RO };
                    match s.map(d, Iova(iova), PhysAddr(pa), size, prot) {
                        Ok(()) => {
                            prop_assert!(!overlap);
                            w.maps[dom].push(Mapping { iova, pa, size, rw });
                        }
                        Err(Error::Overlap(_)) => prop_assert!(overlap),
                        Err(e) => prop_assert!(false, "{:?}", e),
                    }
                }
                Op::Unmap { dom, pick } => {
                    if !w.maps[dom].is_empty() {
                        let n = w.maps[dom].len();
                        let mp = w.maps[dom].remove(pick % n);
                        let d = w.domains[dom].as_mut().unwrap();
                        s.unmap(d, Iova(mp.iova), mp.size).unwrap();
                    }
                }
                Op::Recreate { dom } => {
                    let d = w.domains[dom].take().unwrap();
                    let attached = w.owner.contains(&Some(dom));
                    match s.destroy_domain(d) {
                        Ok(()) => {
                            prop_assert!(!attached);
                            w.domains[dom] = Some(s.create_domain(cfg).unwrap());
                            w.maps[dom].clear();
                        }
                        Err((d, Error::DomainInUse(_))) => {
                            prop_assert!(attached);
                            w.domains[dom] = Some(d);
                        }
                        Err((_, e)) => prop_assert!(false, "{:?}", e),
                    }
                }
                Op::Probe => {}
            }
            m.check_quiescent();
            let v = m.violations();
            prop_assert!(v.is_empty(), "after {:?}: {:?}", op, v);
        }
        probe_all(&m, &w)?;
        m.check_quiescent();
        let v = m.violations();
        prop_assert!(v.is_empty(), "{:?}", v);
    }
}
