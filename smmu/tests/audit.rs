//! The findings of the architecture audit (issue 12), one test each. Every
//! test here failed on the driver before its fix; the model
//! (`tests/model`) is what sees each problem.

mod model;
use model::*;

use smmu::cmdq::Command;
use smmu::{Config, DomainConfig, Error, Iova, PhysAddr, Prot, StagePreference, StreamId, Unsupported};

const MB2: u64 = 2 << 20;
const GB1: u64 = 1 << 30;

fn sids(list: &[u32]) -> Vec<StreamId> {
    list.iter().copied().map(StreamId).collect()
}

/// An SMMU whose StreamIDs fit a linear table (8 bits: no level 2).
fn linear(f: Flavour) -> (std::rc::Rc<Model>, Config) {
    let mut idr = f.idr();
    idr[1] = (idr[1] & !0x3f) | 8;
    (Model::with_idr(idr, 8 << 20), Config { dma_coherent: true, ..Config::default() })
}

/// 1. Installing an entry over an aborting one never lets a fetch combine
///    the new dword 0 with older dwords (the model plays every such fetch),
///    on either stream-table format and every stage; an aborted entry holds
///    no table pointer once its abort is confirmed; and the cost is one
///    CMD_SYNC per assignment with a two-level table, two with a linear one.
#[test]
fn no_torn_ste_fetch_on_install() {
    for f in Flavour::ALL {
        for two_level in [true, false] {
            let (m, cfg) = if two_level { (Model::new(f), Config { dma_coherent: true, ..Config::default() }) } else { linear(f) };
            let mut s = bring_up_with(&m, cfg);
            let mut a = s.create_domain(DomainConfig::default()).unwrap();
            let mut b = s.create_domain(DomainConfig::default()).unwrap();
            s.map(&mut a, Iova(0), PhysAddr(GB1), MB2, Prot::RAM_RW).unwrap();
            s.map(&mut b, Iova(0), PhysAddr(2 * GB1), MB2, Prot::RAM_RW).unwrap();
            let group = sids(&[0x12, 0x13]);
            for round in 0..3 {
                let (d, pa) = if round % 2 == 0 { (&a, GB1) } else { (&b, 2 * GB1) };
                let before = s.stats();
                s.attach(d, &group).unwrap();
                let cost = s.stats() - before;
                assert_eq!(cost.syncs, if two_level { 1 } else { 2 }, "{f:?} two-level {two_level}: syncs per assignment");
                assert!(matches!(m.translate(0x12, 0x40, Access::WRITE), Outcome::Ok { pa: p, .. } if p == pa + 0x40));
                let before = s.stats();
                s.detach(&group).unwrap();
                assert_eq!((s.stats() - before).syncs, 1, "one CMD_SYNC per release");
                for sid in &group {
                    let w = s.read_ste(*sid).unwrap().unwrap();
                    assert_eq!(w[1..], [0; 7], "{f:?}: the aborting STE of {sid:?} keeps no old fields: {w:x?}");
                }
                assert_eq!(m.translate(0x12, 0x40, Access::READ), Outcome::Abort);
                m.check_quiescent();
                m.assert_clean();
            }
        }
    }
}

/// 2. IDR1.TABLES_PRESET / QUEUES_PRESET: the driver cannot place its
///    all-abort stream table (or its queues), so it refuses the SMMU, which
///    stays disabled with GBPA aborting.
#[test]
fn preset_tables_and_queues_are_refused() {
    for (bit, why) in [(30, Unsupported::TablesPreset), (29, Unsupported::QueuesPreset)] {
        let mut idr = Flavour::Nested.idr();
        idr[1] |= 1 << bit;
        let m = Model::with_idr(idr, 8 << 20);
        let r = smmu::Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
        assert!(matches!(r, Err(Error::Unsupported(u)) if u == why), "IDR1 bit {bit}");
        assert!(!m.smmuen());
        assert_ne!(m.gbpa() & (1 << 20), 0, "GBPA aborts");
        assert_eq!(m.translate(0, 0, Access::READ), Outcome::Abort);
        m.assert_clean();
    }
}

/// 3. An SMMU firmware left enabled on a bypassing stream table is turned
///    off right after GBPA aborts, even when the driver then refuses it.
#[test]
fn firmware_enabled_smmu_is_disabled_even_when_refused() {
    let mut idr = Flavour::Nested.idr();
    idr[5] &= !(1 << 4); // no 4 KiB granule: refused
    let m = Model::with_idr(idr, 8 << 20);
    m.firmware_left_enabled();
    assert_eq!(m.translate(3, 0x1000, Access::READ), Outcome::Bypass, "firmware's table");
    let r = smmu::Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
    assert!(matches!(r, Err(Error::Unsupported(Unsupported::No4KGranule))));
    assert!(!m.smmuen(), "SMMUEN cleared before the refusal");
    assert_eq!(m.translate(3, 0x1000, Access::READ), Outcome::Abort);
    assert!(smmu::is_blocking(&*m), "what the kernel checks to go on with the other SMMUs");
    // When GBPA cannot be made to abort, SMMUEN stays as firmware left it
    // (clearing it would hand every stream to a bypassing GBPA), and the
    // SMMU is reported as not blocking.
    let m = Model::new(Flavour::Nested);
    m.firmware_left_enabled();
    m.state().knobs.ack_gbpa = false;
    let r = smmu::Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
    assert!(matches!(r, Err(Error::Timeout(smmu::WaitFor::GbpaUpdate))));
    assert!(m.smmuen());
    assert!(!smmu::is_blocking(&*m));
}

/// 5. Stage 2 with an output size of 32..=48 bits: a legal starting level
///    (level 1 with concatenated tables where level 0 is not allowed), so DMA
///    translates instead of every access failing with C_BAD_STE.
#[test]
fn stage2_start_level_is_legal_for_every_output_size() {
    for (oas_field, bits) in [(0u32, 32u8), (1, 36), (2, 40), (3, 42), (4, 44), (5, 48)] {
        let mut idr = Flavour::S2Only.idr();
        idr[5] = (idr[5] & !7) | oas_field;
        // Below 4 GiB, so that even a 32-bit SMMU reaches its tables.
        let m = Model::with_idr_at(idr, 8 << 20, 0x1000_0000);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        assert_eq!(d.input_bits(), bits);
        let top = (1u64 << bits) - MB2;
        s.map(&mut d, Iova(top), PhysAddr(MB2), MB2, Prot::RAM_RW).unwrap();
        s.map(&mut d, Iova(0), PhysAddr(0), MB2, Prot::RAM_RW).unwrap();
        s.attach(&d, &sids(&[0x40])).unwrap();
        assert_eq!(m.translate(0x40, top + 8, Access::WRITE), Outcome::Ok { pa: MB2 + 8, writable: true, device: false }, "OAS {bits}");
        assert_eq!(m.translate(0x40, 8, Access::READ), Outcome::Ok { pa: 8, writable: true, device: false });
        s.detach(&sids(&[0x40])).unwrap();
        s.destroy_domain(d).unwrap();
        m.check_quiescent();
        m.assert_clean();
    }
    // The rule itself (Arm ARM D8.2; the CPU's VTCR_EL2 obeys the same).
    use smmu::pgtable::stage2_start;
    assert_eq!(stage2_start(48, 48), Some((0, 1)));
    assert_eq!(stage2_start(44, 44), Some((0, 1)));
    assert_eq!(stage2_start(42, 42), Some((1, 8)), "no level 0 below 44-bit output");
    assert_eq!(stage2_start(40, 40), Some((1, 2)));
    assert_eq!(stage2_start(39, 40), Some((1, 1)));
    assert_eq!(stage2_start(36, 36), Some((1, 1)));
    assert_eq!(stage2_start(30, 32), Some((2, 1)));
    assert_eq!(stage2_start(44, 42), None, "input wider than output");
}

/// 6. Nested: the combined stage-1 entries are tagged with the stage-2
///    VMID. Unmapping from the stage-2 domain drops them (TLBI_NH_ALL of the
///    VMID: TLBI by IPA does not reach them), and unmapping from the stage-1
///    domain invalidates under that VMID, not the plain stage-1 tag.
#[test]
fn nested_unmaps_drop_combined_entries() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let s1cfg = DomainConfig { stage: StagePreference::Stage1, ..Default::default() };
    let s2cfg = DomainConfig { stage: StagePreference::Stage2, ..Default::default() };
    let mut s1 = s.create_domain(s1cfg).unwrap();
    let mut s2 = s.create_domain(s2cfg).unwrap();
    s.map(&mut s1, Iova(GB1), PhysAddr(2 * GB1), MB2, Prot::RAM_RW).unwrap();
    s.map(&mut s1, Iova(3 * GB1), PhysAddr(4 * GB1), MB2, Prot::RAM_RW).unwrap();
    s.map(&mut s2, Iova(2 * GB1), PhysAddr(5 * GB1), MB2, Prot::RAM_RW).unwrap();
    s.map(&mut s2, Iova(4 * GB1), PhysAddr(6 * GB1), MB2, Prot::RAM_RW).unwrap();
    let arena = m.arena.base;
    s.map(&mut s2, Iova(arena), PhysAddr(arena), 8 << 20, Prot::RAM_RW).unwrap();
    s.attach_nested(&mut s1, &mut s2, &sids(&[0x18])).unwrap();
    let ok = |pa| Outcome::Ok { pa, writable: true, device: false };
    assert_eq!(m.translate(0x18, GB1 + 0x10, Access::WRITE), ok(5 * GB1 + 0x10));
    assert_eq!(m.translate(0x18, 3 * GB1, Access::WRITE), ok(6 * GB1));
    // Stage 2 changes under a cached combined entry.
    s.unmap(&mut s2, Iova(2 * GB1), MB2).unwrap();
    m.check_quiescent();
    m.assert_clean();
    assert!(matches!(m.translate(0x18, GB1 + 0x10, Access::READ), Outcome::Fault { stage2: true, .. }));
    // Stage 1 changes under a cached combined entry.
    s.unmap(&mut s1, Iova(3 * GB1), MB2).unwrap();
    m.check_quiescent();
    m.assert_clean();
    assert!(matches!(m.translate(0x18, 3 * GB1, Access::READ), Outcome::Fault { stage2: false, .. }));
    // One stage-2 parent at a time.
    let mut other = s.create_domain(s2cfg).unwrap();
    assert_eq!(s.attach_nested(&mut s1, &mut other, &sids(&[0x19])), Err(Error::NestedElsewhere));
    s.detach(&sids(&[0x18])).unwrap();
    m.check_quiescent();
    m.assert_clean();
}

/// 8. CERROR_ABT: the command's fetch aborted, the command is valid; it is
///    retried, not replaced by CMD_SYNC (which would drop a CFGI or TLBI).
#[test]
fn aborted_command_fetch_is_retried() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut a = s.create_domain(DomainConfig::default()).unwrap();
        s.map(&mut a, Iova(0), PhysAddr(GB1), MB2, Prot::RAM_RW).unwrap();
        s.attach(&a, &sids(&[0x22])).unwrap();
        assert!(matches!(m.translate(0x22, 0, Access::READ), Outcome::Ok { .. }));
        // The CFGI of the release aborts twice on its fetch.
        m.state().knobs.abort_fetches = 2;
        s.detach(&sids(&[0x22])).unwrap();
        assert!(s.stats().command_errors >= 2);
        assert_eq!(m.translate(0x22, 0, Access::READ), Outcome::Abort, "{f:?}: the release took effect");
        m.check_quiescent();
        m.assert_clean();
        // A fetch that keeps aborting fails the batch (bounded retries).
        m.state().knobs.abort_fetches = 1000;
        let r = s.attach(&a, &sids(&[0x22]));
        assert!(matches!(r, Err(ref e) if e.leaves_smmu_untrusted()), "{r:?}");
        m.state().knobs.abort_fetches = 0;
    }
}

/// 9. More TLB tags than the driver tracks at once: the TLB invalidation
///    still comes after the configuration invalidation of every stream that
///    used them (before it, a still-cached STE could refill the TLB).
#[test]
fn tlbis_follow_cfgis_with_many_tags() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let group: Vec<StreamId> = (0x30..0x3c).map(StreamId).collect();
        let mut domains = Vec::new();
        for (i, sid) in group.iter().enumerate() {
            let mut d = s.create_domain(DomainConfig::default()).unwrap();
            s.map(&mut d, Iova(0), PhysAddr(GB1 + i as u64 * MB2), MB2, Prot::RAM_RW).unwrap();
            s.attach(&d, &[*sid]).unwrap();
            assert!(matches!(m.translate(sid.0, 0, Access::READ), Outcome::Ok { .. }));
            domains.push(d);
        }
        s.detach(&group).unwrap();
        m.check_quiescent();
        m.assert_clean();
        for sid in &group {
            assert_eq!(m.translate(sid.0, 0, Access::READ), Outcome::Abort);
        }
    }
}

/// 10a. A new level-1 descriptor is invalidated with Leaf = 0 (or a range):
///      with Leaf = 1 a cached invalid descriptor would keep the stream
///      terminated with C_BAD_STREAMID.
#[test]
fn new_level1_descriptor_is_invalidated() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up(&m);
    // The SMMU looks at span 3 while it is invalid (and may cache that).
    assert!(matches!(m.translate(0x305, 0, Access::READ), Outcome::Fault { kind: FaultKind::BadStreamId, .. }));
    let mut d = s.create_domain(DomainConfig::default()).unwrap();
    s.map(&mut d, Iova(0), PhysAddr(GB1), MB2, Prot::RAM_RW).unwrap();
    s.attach(&d, &sids(&[0x305])).unwrap();
    m.check_quiescent();
    m.assert_clean();
    assert!(matches!(m.translate(0x305, 0, Access::READ), Outcome::Ok { .. }));
}

/// 10b. Context descriptors: a stream that leaves a stage-1 domain has its
///      cached CDs invalidated (CFGI_CD_ALL; CFGI_STE does not drop them), so
///      the next domain's CD — even in the freed CD's memory — is the one used.
#[test]
fn cached_cds_do_not_outlive_their_stream() {
    let m = Model::new(Flavour::S1Only);
    let mut s = bring_up(&m);
    let mut a = s.create_domain(DomainConfig::default()).unwrap();
    s.map(&mut a, Iova(0), PhysAddr(GB1), MB2, Prot::RAM_RW).unwrap();
    s.attach(&a, &sids(&[0x51])).unwrap();
    assert!(matches!(m.translate(0x51, 0, Access::READ), Outcome::Ok { pa, .. } if pa == GB1));
    m.clear_opcodes();
    s.detach(&sids(&[0x51])).unwrap();
    assert!(m.opcodes().contains(&smmu::cmdq::opcode::CFGI_CD_ALL));
    s.destroy_domain(a).unwrap();
    let mut b = s.create_domain(DomainConfig::default()).unwrap();
    s.map(&mut b, Iova(0), PhysAddr(2 * GB1), MB2, Prot::RAM_RW).unwrap();
    s.attach(&b, &sids(&[0x51])).unwrap();
    assert!(matches!(m.translate(0x51, 0, Access::READ), Outcome::Ok { pa, .. } if pa == 2 * GB1));
    m.check_quiescent();
    m.assert_clean();
    let _ = Command::Sync;
}
