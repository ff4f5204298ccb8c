//! Command queue: wrap arithmetic, waiting on a full queue, timeouts,
//! command-error recovery.

mod model;
use model::*;

use smmu::cmdq::{tlbi_ranges, Ring};
use smmu::gerror::{CommandError, CommandErrorKind};
use smmu::{Config, DomainConfig, Error, StreamId, WaitFor};

#[test]
fn ring_wrap_arithmetic() {
    let r = Ring::new(2); // 4 entries, pointers 0..8
    assert_eq!((r.entries(), r.mask()), (4, 7));
    assert!(r.is_empty(0, 0) && !r.is_full(0, 0));
    assert!(r.is_full(4, 0), "same index, other wrap");
    assert!(r.is_full(0, 4));
    assert!(!r.is_full(3, 0));
    assert_eq!(r.used(3, 0), 3);
    assert_eq!(r.used(1, 6), 3, "prod wrapped past cons");
    assert_eq!(r.free(1, 6), 1);
    assert_eq!(r.next(3), 4);
    assert_eq!(r.next(7), 0, "wrap bit flips back");
    assert_eq!((r.index(6), r.wrap(6)), (2, true));
}

#[test]
fn tlbi_ranges_cover_exactly() {
    // 0x2345 pages: pieces of (num+1) << scale pages, 5 bits at a time.
    let pieces: Vec<_> = tlbi_ranges(0x1000, 0x2345).collect();
    let total: u64 = pieces.iter().map(|(_, r)| (u64::from(r.num) + 1) << r.scale).sum();
    assert_eq!(total, 0x2345);
    let mut next = 0x1000;
    for (addr, r) in &pieces {
        assert_eq!(*addr, next);
        next += ((u64::from(r.num) + 1) << r.scale) << 12;
        assert!(r.num <= 31 && r.scale <= 31);
    }
    assert_eq!(tlbi_ranges(0, 1).count(), 1);
    assert_eq!(tlbi_ranges(0, 1 << 36).count(), 1, "whole 48-bit space in one piece");
}

fn small_queue() -> Config {
    Config { cmdq_log2_max: 2, dma_coherent: true, ..Config::default() }
}

#[test]
fn full_queue_waits_for_space() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up_with(&m, small_queue());
    assert_eq!(s.queue_log2().0, 2);
    // The SMMU now consumes one command per CONS read: the driver must wait
    // for space several times and keep the wrap arithmetic right.
    m.state().knobs.cmdq_mode = CmdqMode::PerConsRead(1);
    let d = s.create_domain(DomainConfig::default()).unwrap();
    let list: Vec<_> = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19].map(StreamId).to_vec();
    for _ in 0..5 {
        s.attach(&d, &list).unwrap();
        s.detach(&list).unwrap();
    }
    m.check_quiescent();
    m.assert_clean();
    // Many wraps of a 4-entry queue later, everything was consumed in order.
    let ops = m.opcodes();
    assert_eq!(ops.iter().filter(|o| **o == 0x46).count() as u64, s.stats().syncs);
}

#[test]
fn stuck_queue_times_out() {
    let m = Model::new(Flavour::S2Only);
    let mut s = bring_up_with(&m, Config { timeout_us: 2000, ..small_queue() });
    let d = s.create_domain(DomainConfig::default()).unwrap();
    m.state().knobs.cmdq_mode = CmdqMode::Never;
    let list: Vec<_> = (0..8).map(|i| StreamId(2 * i + 1)).collect();
    assert_eq!(s.attach(&d, &list), Err(Error::Timeout(WaitFor::CmdqSpace)));
    let m2 = Model::new(Flavour::S2Only);
    let mut s2 = bring_up_with(&m2, Config { timeout_us: 2000, ..Config::default() });
    let d2 = s2.create_domain(DomainConfig::default()).unwrap();
    m2.state().knobs.cmdq_mode = CmdqMode::Never;
    assert_eq!(s2.attach(&d2, &[StreamId(1)]), Err(Error::Timeout(WaitFor::CmdqSync)));
}

#[test]
fn illegal_command_is_recovered() {
    for f in Flavour::ALL {
        let m = Model::new(f);
        let mut s = bring_up(&m);
        let before = s.stats();
        // Opcode 0xff does not exist: CERROR_ILL.
        let r = s.diagnostic_submit_raw([0xff, 0]);
        assert!(matches!(r, Err(Error::Command(CommandError { kind: CommandErrorKind::Ill, opcode: 0xff, .. }))), "{r:?}");
        assert_eq!((s.stats() - before).command_errors, 1);
        assert_eq!(m.gerror_active(), 0, "CMDQ_ERR acknowledged");
        // The queue keeps working.
        let d = s.create_domain(DomainConfig::default()).unwrap();
        s.attach(&d, &[StreamId(4)]).unwrap();
        assert!(matches!(m.translate(4, 0, Access::READ), Outcome::Fault { .. }));
        // A command for a stage the SMMU lacks is illegal too (QEMU: ILL).
        let wrong = if f == Flavour::S1Only {
            [0x28, 0]
        } else if f == Flavour::S2Only {
            [0x11, 0]
        } else {
            [0x20, 0]
        };
        assert!(matches!(s.diagnostic_submit_raw(wrong), Err(Error::Command(CommandError { kind: CommandErrorKind::Ill, .. }))));
        s.detach(&[StreamId(4)]).unwrap();
        m.check_quiescent();
        m.assert_clean();
    }
}

#[test]
fn illegal_command_in_a_batch_with_slow_consumer() {
    let m = Model::new(Flavour::Nested);
    let mut s = bring_up_with(&m, small_queue());
    m.state().knobs.cmdq_mode = CmdqMode::PerConsRead(1);
    for _ in 0..3 {
        assert!(matches!(s.diagnostic_submit_raw([0x77, 0]), Err(Error::Command(_))));
        s.diagnostic_submit_raw(smmu::cmdq::Command::TlbiNsnhAll.encode()).unwrap();
    }
    assert_eq!(s.stats().command_errors, 3);
    m.assert_clean();
}

#[test]
fn gerror_handler_acknowledges() {
    let m = Model::new(Flavour::S1Only);
    let mut s = bring_up(&m);
    assert!(s.handle_gerror().unwrap().errors.is_empty());
    // EVENTQ_ABT_ERR (bit 2) and SFM_ERR (bit 8).
    m.raise_gerror((1 << 2) | (1 << 8));
    let r = s.handle_gerror().unwrap();
    assert!(r.errors.eventq_abt_err() && r.errors.sfm_err() && !r.errors.cmdq_err());
    assert_eq!(r.command, None);
    assert_eq!(m.gerror_active(), 0);
    // A CMDQ_ERR found by the interrupt handler rather than during a sync.
    m.state().knobs.cmdq_mode = CmdqMode::Never;
    assert_eq!(s.diagnostic_submit_raw([0x99, 0]), Err(Error::Timeout(WaitFor::CmdqSync)));
    m.state().knobs.cmdq_mode = CmdqMode::Immediate;
    m.run_cmdq(); // the SMMU stops at the bad command
    assert_eq!(m.gerror_active(), 1);
    assert_eq!(m.cmdq_cons() >> 24, 1, "CONS.ERR = CERROR_ILL");
    let r = s.handle_gerror().unwrap();
    assert!(r.errors.cmdq_err());
    assert!(matches!(r.command, Some(CommandError { kind: CommandErrorKind::Ill, opcode: 0x99, .. })));
    assert_eq!(m.gerror_active(), 0);
    // Resumed: the CMD_SYNC behind it was consumed, and new work goes through.
    s.diagnostic_submit_raw(smmu::cmdq::Command::TlbiNsnhAll.encode()).unwrap();
    m.assert_clean();
}
