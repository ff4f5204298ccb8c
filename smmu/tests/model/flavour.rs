//! The SMMU flavours QEMU emulates (QEMU-FACTS.md).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `virt` 10.0: stage 1 + stage 2.
    Nested,
    /// `virt-9.1`, stage=1.
    S1Only,
    /// `virt-9.1`, stage=2.
    S2Only,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Nested, Flavour::S1Only, Flavour::S2Only];

    pub fn idr0(self) -> u32 {
        match self {
            Flavour::Nested => 0x0d44_101b,
            Flavour::S1Only => 0x0d44_101a,
            Flavour::S2Only => 0x0d44_1019,
        }
    }

    /// The IDR values QEMU 10 shows for this flavour.
    pub fn idr(self) -> [u32; 6] {
        let s2 = self.idr0() & 1 != 0;
        // IDR1: SIDSIZE=16 [5:0], EVENTQS=19 [20:16], CMDQS=19 [25:21].
        let idr1 = 16 | (19 << 16) | (19 << 21);
        // IDR3: HAD (2), XNX (4, stage 2 only), RIL (10), BBML=2 [12:11].
        let idr3 = (1 << 2) | if s2 { 1 << 4 } else { 0 } | (1 << 10) | (2 << 11);
        // IDR5: OAS=44 bits (0b100) [2:0], GRAN4K/16K/64K (4,5,6).
        let idr5 = 0b100 | (1 << 4) | (1 << 5) | (1 << 6);
        [self.idr0(), idr1, 0, idr3, 0, idr5]
    }
}
