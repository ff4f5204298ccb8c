//! Event queue: decoding of every architected record type, fault records
//! from translations, overflow, bounded draining.

mod model;
use model::*;

use smmu::{Config, DomainConfig, Event, EventType, FaultClass, Iova, Ipa, PhysAddr, Prot, StreamId, SubstreamId};

fn drain_all(s: &mut TestSmmu<'_>) -> (Vec<Event>, smmu::DrainReport) {
    let mut v = Vec::new();
    let r = s.drain_events(u32::MAX, |e| v.push(*e)).unwrap();
    (v, r)
}

#[test]
fn every_event_type_decodes() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    // (code, name) from IHI 0070.
    let types = [
        (0x01, EventType::F_UUT),
        (0x02, EventType::C_BAD_STREAMID),
        (0x03, EventType::F_STE_FETCH),
        (0x04, EventType::C_BAD_STE),
        (0x05, EventType::F_BAD_ATS_TREQ),
        (0x06, EventType::F_STREAM_DISABLED),
        (0x07, EventType::F_TRANSL_FORBIDDEN),
        (0x08, EventType::C_BAD_SUBSTREAMID),
        (0x09, EventType::F_CD_FETCH),
        (0x0a, EventType::C_BAD_CD),
        (0x0b, EventType::F_WALK_EABT),
        (0x10, EventType::F_TRANSLATION),
        (0x11, EventType::F_ADDR_SIZE),
        (0x12, EventType::F_ACCESS),
        (0x13, EventType::F_PERMISSION),
        (0x20, EventType::F_TLB_CONFLICT),
        (0x21, EventType::F_CFG_CONFLICT),
        (0x24, EventType::E_PAGE_REQUEST),
        (0x25, EventType::F_VMS_FETCH),
        (0xe3, EventType::IMPDEF(0xe3)),
        (0x7f, EventType::Reserved(0x7f)),
    ];
    for (i, (code, _)) in types.iter().enumerate() {
        // SSV (11), SSID=0x55 [31:12], SID=i [63:32]; word 1: write, PnU,
        // S2, CLASS=TT; word 2: input address; word 3: IPA / fetch address.
        let w0 = code | (1 << 11) | (0x55 << 12) | ((i as u64) << 32);
        let w1 = (1 << 33) | (1 << 39) | (0b01 << 40);
        m.inject_event([w0, w1, 0xdead_b000 + i as u64, 0x1234_5678]);
    }
    let (events, report) = drain_all(&mut s);
    assert_eq!(report.events as usize, types.len());
    assert!(!report.lost_events && !report.more);
    for (i, ((_, ty), e)) in types.iter().zip(&events).enumerate() {
        assert_eq!(e.event_type, *ty);
        assert_eq!(e.stream_id, StreamId(i as u32));
        use EventType::*;
        match ty {
            F_TRANSLATION | F_ADDR_SIZE | F_ACCESS | F_PERMISSION => {
                assert_eq!(e.substream_id, Some(SubstreamId(0x55)));
                assert_eq!(e.read, Some(false));
                assert_eq!(e.privileged, Some(true));
                assert_eq!(e.instruction, Some(false));
                assert_eq!(e.stage2, Some(true));
                assert_eq!(e.class, Some(FaultClass::TT));
                assert_eq!(e.input_addr, Some(Iova(0xdead_b000 + i as u64)));
                assert_eq!(e.ipa, Some(Ipa(0x1234_5000)));
            }
            F_WALK_EABT => {
                assert_eq!(e.fetch_addr, Some(PhysAddr(0x1234_5678)));
                assert_eq!(e.class, Some(FaultClass::TT));
            }
            F_STE_FETCH | F_CD_FETCH | F_VMS_FETCH => {
                assert_eq!(e.fetch_addr, Some(PhysAddr(0x1234_5678)))
            }
            C_BAD_STE | C_BAD_STREAMID | C_BAD_CD | C_BAD_SUBSTREAMID | F_CFG_CONFLICT | F_STREAM_DISABLED => {
                assert_eq!(e.substream_id, Some(SubstreamId(0x55)));
                assert_eq!(e.input_addr, None);
            }
            F_UUT | F_BAD_ATS_TREQ | E_PAGE_REQUEST | F_TRANSL_FORBIDDEN | F_TLB_CONFLICT => {
                assert_eq!(e.input_addr, Some(Iova(0xdead_b000 + i as u64)));
                assert_eq!(e.read, Some(false));
            }
            IMPDEF(_) | Reserved(_) => assert_eq!(e.input_addr, None),
        }
    }
}

#[test]
fn faulting_dma_burst() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let mut d = s.create_domain(DomainConfig::default()).unwrap();
        s.map(&mut d, Iova(0x10000), PhysAddr(0x4000_0000), 0x1000, Prot::RAM_RO).unwrap();
        s.attach(&d, &[StreamId(0x08)]).unwrap();
        // A 64-byte device write to an unmapped page: QEMU reports one
        // F_TRANSLATION per 4 bytes.
        for i in 0..16 {
            let _ = m.translate(0x08, 0x2_0000 + 4 * i, Access::WRITE);
        }
        // And a write to the read-only page.
        let _ = m.translate(0x08, 0x10008, Access::WRITE);
        let (events, report) = drain_all(&mut s);
        assert_eq!(report.events, 17);
        assert!(!report.lost_events);
        let s2 = f != Flavour::S1Only;
        for (i, e) in events[..16].iter().enumerate() {
            assert_eq!(e.event_type, EventType::F_TRANSLATION);
            assert_eq!(e.stream_id, StreamId(0x08));
            assert_eq!(e.read, Some(false));
            assert_eq!(e.stage2, Some(s2));
            assert_eq!(e.class, Some(FaultClass::IN));
            assert_eq!(e.input_addr, Some(Iova(0x2_0000 + 4 * i as u64)));
            assert_eq!(e.ipa, s2.then_some(Ipa(0x2_0000)));
        }
        assert_eq!(events[16].event_type, EventType::F_PERMISSION);
        // Abort STEs record nothing; an unallocated span reports C_BAD_STREAMID.
        s.detach(&[StreamId(0x08)]).unwrap();
        let _ = m.translate(0x08, 0, Access::READ);
        let _ = m.translate(0x0800, 0, Access::READ);
        let (events, _) = drain_all(&mut s);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::C_BAD_STREAMID);
        assert_eq!(events[0].stream_id, StreamId(0x0800));
        m.assert_clean();
    }
}

#[test]
fn overflow_is_reported_and_acknowledged() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up_with(&m, Config { evtq_log2_max: 3, dma_coherent: true, ..Config::default() });
    assert_eq!(s.queue_log2().1, 3);
    let d = s.create_domain(DomainConfig::default()).unwrap();
    s.attach(&d, &[StreamId(1)]).unwrap();
    for i in 0..20 {
        let _ = m.translate(1, i * 0x1000, Access::READ);
    }
    assert_eq!(m.state().events_dropped, 12);
    let (events, report) = drain_all(&mut s);
    assert_eq!(events.len(), 8);
    assert!(report.lost_events);
    // Acknowledged: new records flow and no new loss is reported.
    for i in 0..3 {
        let _ = m.translate(1, i * 0x1000, Access::READ);
    }
    let (events, report) = drain_all(&mut s);
    assert_eq!(events.len(), 3);
    assert!(!report.lost_events);
    // Overflow again, twice in a row before draining: one loss report.
    for i in 0..30 {
        let _ = m.translate(1, i * 0x1000, Access::READ);
    }
    let (_, report) = drain_all(&mut s);
    assert!(report.lost_events);
    let (_, report) = drain_all(&mut s);
    assert!(!report.lost_events);
    m.assert_clean();
}

#[test]
fn bounded_drain() {
    let m = Model::new(Flavour::S1Only);
    let mut s = bring_up(&m);
    let d = s.create_domain(DomainConfig::default()).unwrap();
    s.attach(&d, &[StreamId(2)]).unwrap();
    for i in 0..10 {
        let _ = m.translate(2, i * 0x1000, Access::READ);
    }
    let mut n = 0;
    let r = s.drain_events(4, |_| n += 1).unwrap();
    assert_eq!((r.events, r.more, n), (4, true, 4));
    let r = s.drain_events(100, |_| n += 1).unwrap();
    assert_eq!((r.events, r.more, n), (6, false, 10));
    let r = s.drain_events(100, |_| n += 1).unwrap();
    assert_eq!(r.events, 0);
}
