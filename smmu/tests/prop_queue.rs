//! Properties of the queue arithmetic, range invalidation splitting and
//! event decoding, against straightforward reference implementations.

use std::collections::VecDeque;

use proptest::prelude::*;
use smmu::cmdq::{tlbi_ranges, Ring};
use smmu::{Event, EventType, FaultClass, Iova, Ipa, StreamId, SubstreamId};

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Producer/consumer pointers driven through a random sequence agree
    /// with a plain FIFO of bounded capacity.
    #[test]
    fn ring_matches_fifo(log2 in 0u8..6, steps in proptest::collection::vec(any::<bool>(), 1..200)) {
        let r = Ring::new(log2);
        let cap = 1usize << log2;
        let (mut prod, mut cons) = (0u32, 0u32);
        let mut fifo = VecDeque::new();
        let mut next = 0u32;
        let mut slots = vec![u32::MAX; cap];
        for push in steps {
            prop_assert_eq!(r.is_empty(prod, cons), fifo.is_empty());
            prop_assert_eq!(r.is_full(prod, cons), fifo.len() == cap);
            prop_assert_eq!(r.used(prod, cons) as usize, fifo.len());
            prop_assert_eq!(r.free(prod, cons) as usize, cap - fifo.len());
            if push && !r.is_full(prod, cons) {
                slots[r.index(prod) as usize] = next;
                fifo.push_back(next);
                next += 1;
                prod = r.next(prod);
            } else if !push && !r.is_empty(prod, cons) {
                prop_assert_eq!(Some(slots[r.index(cons) as usize]), fifo.pop_front());
                cons = r.next(cons);
            }
            prop_assert!(prod <= r.mask() && cons <= r.mask());
        }
    }

    /// Range TLBIs cover exactly the requested pages, contiguously, with
    /// encodable NUM/SCALE and few commands.
    #[test]
    fn tlbi_ranges_exact(start in 0u64..(1 << 36), pages in 1u64..(1 << 30)) {
        let addr = start << 12;
        let mut next = addr;
        let mut n = 0;
        for (a, r) in tlbi_ranges(addr, pages) {
            prop_assert_eq!(a, next);
            prop_assert!(r.num <= 31 && r.scale <= 31);
            next += ((u64::from(r.num) + 1) << r.scale) << 12;
            n += 1;
        }
        prop_assert_eq!(next, addr + (pages << 12));
        prop_assert!(n <= 7, "{} commands", n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Translation-fault records built from the spec's layout (§7.3.12)
    /// decode to the same fields.
    #[test]
    fn fault_records_roundtrip(
        code in prop_oneof![Just(0x10u64), Just(0x11), Just(0x12), Just(0x13)],
        sid in any::<u32>(),
        ssid in proptest::option::of(0u32..(1 << 20)),
        read in any::<bool>(), instr in any::<bool>(), priv_ in any::<bool>(), s2 in any::<bool>(),
        class in 0u64..3,
        addr in any::<u64>(),
        ipa in 0u64..(1 << 40),
        stag in proptest::option::of(any::<u16>()),
    ) {
        let w0 = code | (u64::from(ssid.is_some()) << 11) | (u64::from(ssid.unwrap_or(0)) << 12) | (u64::from(sid) << 32);
        let w1 = u64::from(stag.unwrap_or(0)) | (u64::from(stag.is_some()) << 31) | (u64::from(priv_) << 33)
            | (u64::from(instr) << 34) | (u64::from(read) << 35) | (u64::from(s2) << 39) | (class << 40);
        let e = Event::decode([w0, w1, addr, ipa << 12]);
        prop_assert_eq!(e.event_type, EventType::from_code(code as u8));
        prop_assert_eq!(e.stream_id, StreamId(sid));
        prop_assert_eq!(e.substream_id, ssid.map(SubstreamId));
        prop_assert_eq!(e.read, Some(read));
        prop_assert_eq!(e.instruction, Some(instr));
        prop_assert_eq!(e.privileged, Some(priv_));
        prop_assert_eq!(e.stage2, Some(s2));
        prop_assert_eq!(e.class, Some([FaultClass::CD, FaultClass::TT, FaultClass::IN][class as usize]));
        prop_assert_eq!(e.input_addr, Some(Iova(addr)));
        prop_assert_eq!(e.ipa, s2.then_some(Ipa(ipa << 12)));
        prop_assert_eq!(e.stall_tag, stag);
        prop_assert_eq!(e.raw, [w0, w1, addr, ipa << 12]);
    }
}
