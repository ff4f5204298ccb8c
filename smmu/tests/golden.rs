//! Golden tests: encodings against bit patterns worked out by hand from the
//! architecture's tables (IHI 0070 §5.2 STE, §5.4 CD, §4 commands; Arm ARM
//! D8.3 descriptors). The expected values are literals, not re-derived with
//! the driver's constants.

use smmu::cd::{Cd, Stage1Cd};
use smmu::cmdq::{Command, TlbiRange};
use smmu::pgtable::{leaf_descriptor, table_descriptor, Stage};
use smmu::ste::{Stage1Fields, Stage2Fields, Ste};
use smmu::{Asid, Iova, Ipa, PhysAddr, Prot, StreamId, Vmid};

#[test]
fn abort_ste_is_valid_config_zero() {
    // V = 1 (bit 0), Config = 0b000 (bits 3:1); nothing else.
    assert_eq!(Ste::abort().words(), &[0x1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn stage2_ste_fields() {
    let ste = Ste::stage2(&Stage2Fields { vmid: Vmid(5), ttb: PhysAddr(0x8_0004_0000), t0sz: 20, sl0: 2, ps: 4, coherent: true }).unwrap();
    let w = ste.words();
    // V=1, Config=0b110 (S2 translate).
    assert_eq!(w[0], 0xd);
    // SHCFG=0b01 (incoming) at [45:44]; EATS=0; STRW=0.
    assert_eq!(w[1], 0x0000_1000_0000_0000);
    // S2VMID=5; S2T0SZ=20 [37:32]; S2SL0=2 [39:38]; S2IR0=S2OR0=WB [41:40],[43:42];
    // S2SH0=ISH [45:44]; S2TG=4K [47:46]; S2PS=44-bit (4) [50:48]; S2AA64 [51];
    // S2PTW [54]; S2R [58].
    assert_eq!(w[2], 0x044c_3594_0000_0005);
    // S2TTB [51:4].
    assert_eq!(w[3], 0x8_0004_0000);
    assert_eq!(&w[4..], &[0, 0, 0, 0]);
}

#[test]
fn stage1_ste_fields() {
    let ste = Ste::stage1(&Stage1Fields { cd_table: PhysAddr(0x8_0000_1040), vmid: Vmid(0), coherent: true }).unwrap();
    let w = ste.words();
    // V=1, Config=0b101, S1Fmt=0, S1ContextPtr [51:6], S1CDMax=0.
    assert_eq!(w[0], 0x8_0000_1040 | 0b1011);
    // S1DSS=0b10 (substream 0), S1CIR=S1COR=WB-RA (1) [3:2],[5:4], S1CSH=ISH (3) [7:6],
    // SHCFG=incoming [45:44].
    assert_eq!(w[1], 0x0000_1000_0000_00d6);
    assert_eq!(&w[2..], &[0, 0, 0, 0, 0, 0]);
}

#[test]
fn nested_ste_config() {
    let s1 = Stage1Fields { cd_table: PhysAddr(0x1000), vmid: Vmid(3), coherent: false };
    let s2 = Stage2Fields { vmid: Vmid(3), ttb: PhysAddr(0x2000), t0sz: 24, sl0: 2, ps: 5, coherent: false };
    let w = *Ste::nested(&s1, &s2).unwrap().words();
    assert_eq!(w[0] & 0xf, 0b1111); // V + Config=0b111
    assert_eq!(w[0] >> 6 << 6, 0x1000);
    assert_eq!(w[2] & 0xffff, 3);
    assert_eq!(w[3], 0x2000);
}

#[test]
fn ste_builders_refuse_bad_fields() {
    let ok = Stage2Fields { vmid: Vmid(1), ttb: PhysAddr(0x1000), t0sz: 20, sl0: 2, ps: 4, coherent: true };
    assert!(Ste::stage2(&Stage2Fields { ttb: PhysAddr(0x1008), ..ok }).is_err());
    assert!(Ste::stage2(&Stage2Fields { t0sz: 15, ..ok }).is_err());
    assert!(Ste::stage2(&Stage2Fields { sl0: 3, ..ok }).is_err());
    assert!(Ste::stage1(&Stage1Fields { cd_table: PhysAddr(0x1020), vmid: Vmid(0), coherent: true }).is_err());
}

#[test]
fn stage1_cd_fields() {
    let cd = Cd::stage1(&Stage1Cd { asid: Asid(7), ttb0: PhysAddr(0x8_0010_0000), t0sz: 20, ips: 4, coherent: true }).unwrap();
    let w = cd.words();
    // T0SZ=20, TG0=4K, IR0/OR0=WB, SH0=ISH, EPD1 [30], V [31], IPS=4 [34:32],
    // AA64 [41], R [45], A [46], ASET [47], ASID=7 [63:48].
    assert_eq!(w[0], 0x0007_e204_c000_3514);
    assert_eq!(w[1], 0x8_0010_0000);
    assert_eq!(w[2], 0);
    // MAIR: Attr0=0xFF normal WB, Attr1=0x04 Device-nGnRE, Attr2=0x44 normal NC.
    assert_eq!(w[3], 0x0044_04ff);
}

#[test]
fn commands() {
    assert_eq!(Command::Sync.encode(), [0x46, 0]);
    assert_eq!(Command::CfgiSte { sid: StreamId(0x1234), leaf: true }.encode(), [0x0000_1234_0000_0003, 1]);
    assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
    assert_eq!(Command::CfgiSteRange { sid: StreamId(0x100), range: 7 }.encode(), [0x0000_0100_0000_0004, 7]);
    assert_eq!(Command::TlbiS12Vmall { vmid: Vmid(9) }.encode(), [0x0000_0009_0000_0028, 0]);
    assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
    assert_eq!(Command::TlbiEl2All.encode(), [0x20, 0]);
    assert_eq!(Command::TlbiNhAsid { asid: Asid(3), vmid: Vmid(0) }.encode(), [0x0003_0000_0000_0011, 0]);
    // TLBI_S2_IPA, range 2<<9 pages of 4 KiB: NUM=1 [16:12], SCALE=9 [24:20],
    // VMID [47:32]; TG=1 [11:10], IPA [51:12].
    assert_eq!(
        Command::TlbiS2Ipa { vmid: Vmid(2), ipa: Ipa(0x4020_0000), leaf: false, range: Some(TlbiRange { num: 1, scale: 9 }) }.encode(),
        [0x2_0090_102a, 0x4020_0400]
    );
    assert_eq!(Command::TlbiNhVa { asid: Asid(3), vmid: Vmid(0), addr: Iova(0x1000), leaf: true, range: None }.encode(), [0x0003_0000_0000_0012, 0x1001]);
}

#[test]
fn descriptors() {
    // Stage-1 page: 0b11, AttrIndx=0, AP=0b01 (RW any EL), SH=ISH, AF, nG,
    // OA, PXN, UXN.
    assert_eq!(leaf_descriptor(Stage::Stage1, 3, PhysAddr(0x4_5678_9000), Prot::RAM_RW), 0x0060_0004_5678_9f43);
    // Stage-1 level-2 block, device, read-only: 0b01, AttrIndx=1, AP=0b11,
    // SH=OSH, AF, nG, OA, PXN, UXN.
    let dev_ro = Prot { perm: smmu::Perm::ReadOnly, mem: smmu::MemType::Device };
    assert_eq!(leaf_descriptor(Stage::Stage1, 2, PhysAddr(0x4000_0000), dev_ro), 0x0060_0000_4000_0ec5);
    // Stage-2 page: 0b11, MemAttr=0b1111, S2AP=RW, SH=ISH, AF, OA, XN=0b10.
    assert_eq!(leaf_descriptor(Stage::Stage2, 3, PhysAddr(0x4_5678_9000), Prot::RAM_RW), 0x0040_0004_5678_97ff);
    // Stage-2 1 GiB block, Device-nGnRE, read-only.
    assert_eq!(leaf_descriptor(Stage::Stage2, 1, PhysAddr(0x8000_0000), dev_ro), 0x0040_0000_8000_0645);
    assert_eq!(table_descriptor(PhysAddr(0x8_0000_3000)), 0x8_0000_3003);
}

#[test]
fn event_decode_translation_fault() {
    use smmu::{Event, EventType, FaultClass};
    // F_TRANSLATION (0x10), SID 0x18, read, stage 2, CLASS=IN, input 0x1234_5000,
    // IPA 0x1234_5000.
    let raw = [0x10 | (0x18u64 << 32), (1 << 35) | (1 << 39) | (0b10 << 40), 0x1234_5678, 0x1234_5000];
    let e = Event::decode(raw);
    assert_eq!(e.event_type, EventType::F_TRANSLATION);
    assert_eq!(e.stream_id, StreamId(0x18));
    assert_eq!(e.read, Some(true));
    assert_eq!(e.stage2, Some(true));
    assert_eq!(e.class, Some(FaultClass::IN));
    assert_eq!(e.input_addr, Some(Iova(0x1234_5678)));
    assert_eq!(e.ipa, Some(Ipa(0x1234_5000)));
    assert_eq!(e.substream_id, None);
}
