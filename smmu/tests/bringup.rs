//! Bring-up, feature decoding, refusals and bounded waits.

mod model;
use model::*;

use smmu::features::{StallModel, TableFormats};
use smmu::strtab::Format;
use smmu::{Config, Error, Features, Smmu, StreamId, Unsupported, WaitFor};

fn features_of(idr: [u32; 6]) -> Features {
    Features::from_regs(idr, 0, 1)
}

#[test]
fn qemu_flavours_decode() {
    let n = features_of(Flavour::Nested.idr());
    let s1 = features_of(Flavour::S1Only.idr());
    let s2 = features_of(Flavour::S2Only.idr());
    assert!(n.stage1 && n.stage2);
    assert!(s1.stage1 && !s1.stage2);
    assert!(!s2.stage1 && s2.stage2);
    for f in [n, s1, s2] {
        assert_eq!(f.table_formats, TableFormats::AArch64);
        assert!(f.coherent_access);
        assert_eq!((f.asid_bits, f.vmid_bits), (16, 16));
        assert!(f.two_level_strtab);
        assert_eq!(f.sid_bits, 16);
        assert_eq!(f.ssid_bits, 0);
        assert_eq!((f.cmdq_log2_max, f.evtq_log2_max, f.priq_log2_max), (19, 19, 0));
        assert_eq!(f.oas_bits, 44);
        assert!(f.gran4k && f.gran16k && f.gran64k);
        assert!(f.ril);
        assert!(!f.msi && !f.ats && !f.pri && !f.hyp);
        assert_eq!(f.stall_model, StallModel::TerminateOnly);
        assert!(f.term_model_abort);
        assert_eq!((f.arch_major, f.arch_minor), (0, 1));
        f.check_usable().unwrap();
    }
}

#[test]
fn refusals() {
    let base = Flavour::Nested.idr();
    let with = |i: usize, clear: u32, set: u32| {
        let mut idr = base;
        idr[i] = (idr[i] & !clear) | set;
        features_of(idr).check_usable()
    };
    assert_eq!(with(0, 0b11, 0), Err(Unsupported::NoTranslationStage));
    assert_eq!(with(0, 0b1100, 0b0100), Err(Unsupported::NoAArch64Tables));
    assert_eq!(with(5, 1 << 4, 0), Err(Unsupported::No4KGranule));
    assert_eq!(with(5, 0b111, 0b111), Err(Unsupported::ReservedOas(7)));
    assert_eq!(with(0, 0b11 << 21, 0b11 << 21), Err(Unsupported::NoLittleEndian));
    assert_eq!(with(0, 0b11 << 24, 0b10 << 24), Err(Unsupported::StallForced));
    // Through the driver: probe and new refuse too.
    let mut idr = base;
    idr[0] &= !0b11;
    let m = Model::with_idr(idr, 1 << 20);
    assert_eq!(smmu::probe(&*m), Err(Error::Unsupported(Unsupported::NoTranslationStage)));
    assert_eq!(Smmu::probe(&*m), Err(Error::Unsupported(Unsupported::NoTranslationStage)));
    let r = Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
    assert!(matches!(r, Err(Error::Unsupported(Unsupported::NoTranslationStage))));
    // GBPA was still set to abort first.
    assert_ne!(m.gbpa() & (1 << 20), 0);
}

#[test]
fn bring_up_each_flavour() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let s = bring_up(&m);
        assert!(m.smmuen());
        assert_ne!(m.gbpa() & (1 << 20), 0, "GBPA aborts");
        // CFGI_ALL, TLBI_NSNH_ALL, CMD_SYNC; no TLBI_EL2_ALL without IDR0.HYP.
        assert_eq!(m.opcodes(), vec![0x04, 0x30, 0x46]);
        assert_eq!(s.stats().syncs, 1);
        assert_eq!(s.stream_table().format(), Format::TwoLevel);
        // Nothing translates yet: level-1 descriptors invalid.
        assert_eq!(m.translate(0x10, 0x1000, Access::READ), Outcome::Fault { kind: FaultKind::BadStreamId, stage2: false });
        m.check_quiescent();
        m.assert_clean();
    }
}

#[test]
fn hyp_adds_tlbi_el2_all() {
    let mut idr = Flavour::Nested.idr();
    idr[0] |= 1 << 9;
    let m = Model::with_idr(idr, 8 << 20);
    let _s = bring_up(&m);
    assert_eq!(m.opcodes(), vec![0x04, 0x20, 0x30, 0x46]);
}

#[test]
fn linear_table_when_small_or_no_two_level() {
    // SIDSIZE = 8: linear, every entry abort.
    let mut idr = Flavour::S2Only.idr();
    idr[1] = (idr[1] & !0x3f) | 8;
    let m = Model::with_idr(idr, 8 << 20);
    let s = bring_up(&m);
    assert_eq!(s.stream_table().format(), Format::Linear);
    assert_eq!(s.stream_table().sid_bits(), 8);
    assert_eq!(m.translate(3, 0, Access::READ), Outcome::Abort);
    assert_eq!(m.translate(256, 0, Access::READ), Outcome::Fault { kind: FaultKind::BadStreamId, stage2: false });
    // No two-level support and SIDSIZE 12: linear over 12 bits.
    let mut idr = Flavour::S1Only.idr();
    idr[0] &= !(0b11 << 27);
    idr[1] = (idr[1] & !0x3f) | 12;
    let m = Model::with_idr(idr, 8 << 20);
    let s = bring_up(&m);
    assert_eq!(s.stream_table().format(), Format::Linear);
    assert_eq!(s.stream_table().sid_bits(), 12);
    assert_eq!(m.translate(4095, 0, Access::READ), Outcome::Abort);
}

#[test]
fn gbpa_abort_standalone() {
    let m = Model::new(Flavour::Nested);
    assert_eq!(m.gbpa(), 0x1000, "QEMU resets GBPA to bypass");
    assert_eq!(m.translate(1, 0x1000, Access::READ), Outcome::Bypass);
    smmu::gbpa_abort(&*m, &mut FakeDelay::default()).unwrap();
    assert_eq!(m.gbpa(), 0x1000 | (1 << 20), "other fields kept, UPDATE clear");
    assert_eq!(m.translate(1, 0x1000, Access::READ), Outcome::Abort);
    m.assert_clean();
}

#[test]
fn firmware_left_smmu_enabled() {
    let m = Model::new(Flavour::Nested);
    m.firmware_left_enabled();
    let s = bring_up(&m);
    assert!(m.smmuen());
    drop(s);
    // The model flags "SMMUEN cleared while GBPA bypasses": clean means the
    // driver set GBPA.ABORT before clearing SMMUEN.
    m.assert_clean();
}

#[test]
fn timeouts_are_typed_errors() {
    type Knob = fn(&mut State);
    let cases: [(Knob, WaitFor); 4] = [
        (|st| st.knobs.ack_gbpa = false, WaitFor::GbpaUpdate),
        (|st| st.knobs.ack_cr0 = false, WaitFor::Cr0Ack),
        (|st| st.knobs.ack_irq = false, WaitFor::IrqCtrlAck),
        (|st| st.knobs.cmdq_mode = CmdqMode::Never, WaitFor::CmdqSync),
    ];
    for (knob, want) in cases {
        let m = Model::new(Flavour::Nested);
        knob(&mut m.state());
        let mut delay = FakeDelay::default();
        let cfg = Config { timeout_us: 1000, ..Config::default() };
        let r = Smmu::new(&*m, TestDma::new(&m), &mut delay, cfg);
        assert!(matches!(r, Err(Error::Timeout(w)) if w == want), "{want:?}: {:?}", r.err());
        // Bounded: about the timeout's worth of delay was spent per wait.
        assert!(delay.ns <= 3 * 1000 * 1000 + 1000, "{} ns", delay.ns);
        assert!(!m.smmuen(), "left disabled after {want:?}");
    }
}

#[test]
fn standalone_gbpa_timeout() {
    let m = Model::new(Flavour::S1Only);
    m.state().knobs.ack_gbpa = false;
    let r = smmu::gbpa_abort_with_timeout(&*m, &mut FakeDelay::default(), 500);
    assert_eq!(r, Err(Error::Timeout(WaitFor::GbpaUpdate)));
}

#[test]
fn bad_allocator_is_refused() {
    let m = Model::new(Flavour::S2Only);
    m.arena.misalign_next();
    let r = Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
    assert!(matches!(r, Err(Error::BadDmaMemory(_))));
    let m = Model::new(Flavour::S2Only);
    m.arena.set_fail_after(Some(1));
    let r = Smmu::new(&*m, TestDma::new(&m), FakeDelay::default(), Config::default());
    assert!(matches!(r, Err(Error::OutOfMemory)));
    assert!(!m.smmuen());
}

#[test]
fn instances_are_independent() {
    let a = Model::new(Flavour::S2Only);
    let b = Model::new(Flavour::S1Only);
    let mut sa = bring_up(&a);
    let mut sb = bring_up(&b);
    let da = sa.create_domain(Default::default()).unwrap();
    let db = sb.create_domain(Default::default()).unwrap();
    sa.attach(&da, &[StreamId(1)]).unwrap();
    sb.attach(&db, &[StreamId(1)]).unwrap();
    // A domain of one SMMU is refused by the other.
    assert_eq!(sa.attach(&db, &[StreamId(2)]), Err(Error::ForeignDomain));
    assert_eq!(a.translate(1, 0, Access::READ), Outcome::Fault { kind: FaultKind::Translation, stage2: true });
    assert_eq!(b.translate(1, 0, Access::READ), Outcome::Fault { kind: FaultKind::Translation, stage2: false });
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn failing_closed_aborts_every_stream() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up(&m);
    let mut d = s.create_domain(smmu::DomainConfig::default()).unwrap();
    s.map(&mut d, smmu::Iova(0x1000), smmu::PhysAddr(0x8010_0000), 0x1000, smmu::Prot::RAM_RW).unwrap();
    s.attach(&d, &[smmu::StreamId(3)]).unwrap();
    assert!(matches!(m.translate(3, 0x1000, Access::READ), Outcome::Ok { .. }));
    s.fail_closed().unwrap();
    assert!(!m.smmuen());
    assert_ne!(m.gbpa() & (1 << 20), 0, "GBPA.ABORT");
    for sid in [0, 3, 0xffff] {
        assert_eq!(m.translate(sid, 0x1000, Access::READ), Outcome::Abort, "StreamID {sid}");
    }
}
