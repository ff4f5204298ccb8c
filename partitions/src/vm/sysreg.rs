//! What a partition's trapped system-register accesses mean (the traps the
//! kernel sets: HCR_EL2.TID3 for the ID registers, MDCR_EL2.{TDA, TDOSA,
//! TDRA, TPM, TPMCR} for debug and PMU, CNTHCTL_EL2.EL1PCEN = 0 for the EL1
//! physical timer, HCR_EL2.IMO for SGI generation; Arm ARM D24.2).
//!
//! A partition runs alone on its CPUs, so it may use everything its CPUs
//! implement that needs no help from EL2 and cannot reach beyond them. What
//! it may not use is hidden consistently: the ID registers say it is not
//! there (SVE and SME, whose state EL2 would have to enable; MTE, whose tags
//! stage 2 does not grant; the PMU, statistical profiling, trace, AMU and
//! MPAM, which observe or steer shared hardware; EL2-only extensions), and
//! the registers that trap read as zero and ignore writes.

use super::trap::SysReg;

/// What a trapped register is, for the kernel to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// An ID register (op0 3, op1 0, CRn 0, CRm 1..=7): the kernel reads
    /// the CPU's own value at EL2 and returns [`sanitize_id`] of it; writes
    /// are ignored (they are read-only).
    Id(SysReg),
    /// Reads as zero, writes ignored: a debug, trace, PMU or EL1 physical
    /// timer register (named for the log).
    RazWi(&'static str),
    /// A write to ICC_SGI1R_EL1 or ICC_ASGI1R_EL1: raise Group 1 SGIs
    /// ([`sgi_targets`]); reads are not defined (RAZ).
    Sgi1,
    /// ICC_SGI0R_EL1: Group 0 SGIs, which the partition's virtual GIC does
    /// not deliver (Group 1 only): ignored.
    Sgi0,
    /// Not one the kernel emulates: the partition is stopped with the
    /// decoded syndrome.
    Unknown,
}

/// Classifies a trapped register.
pub fn classify(r: SysReg) -> Class {
    match (r.op0, r.op1, r.crn, r.crm, r.op2) {
        (3, 0, 0, 1..=7, _) => Class::Id(r),
        // Debug, OS lock, DCC and trace registers (op0 = 2).
        (2, 0, 0, 2, 2) => Class::RazWi("MDSCR_EL1"),
        (2, 0, 1, 0, 4) => Class::RazWi("OSLAR_EL1"),
        (2, 0, 1, 1, 4) => Class::RazWi("OSLSR_EL1"),
        (2, 0, 1, 3, 4) => Class::RazWi("OSDLR_EL1"),
        (2, 0, 1, 4, 4) => Class::RazWi("DBGPRCR_EL1"),
        (2, 0, 0, _, 4) => Class::RazWi("DBGBVR<n>_EL1"),
        (2, 0, 0, _, 5) => Class::RazWi("DBGBCR<n>_EL1"),
        (2, 0, 0, _, 6) => Class::RazWi("DBGWVR<n>_EL1"),
        (2, 0, 0, _, 7) => Class::RazWi("DBGWCR<n>_EL1"),
        (2, _, _, _, _) => Class::RazWi("debug or trace register"),
        // PMU (PMCR_EL0 .. PMEVTYPER<n>_EL0, PMINTEN*, PMMIR).
        (3, 3, 9, 12..=14, _) => Class::RazWi("PMU register"),
        (3, 3, 14, 8..=15, _) => Class::RazWi("PMU event register"),
        (3, 0, 9, 14, 1 | 2 | 6) => Class::RazWi("PMU interrupt/identification register"),
        // The EL1 physical timer (the partition has the virtual one).
        (3, 3, 14, 2, 0) => Class::RazWi("CNTP_TVAL_EL0"),
        (3, 3, 14, 2, 1) => Class::RazWi("CNTP_CTL_EL0"),
        (3, 3, 14, 2, 2) => Class::RazWi("CNTP_CVAL_EL0"),
        // GIC SGI generation (IHI 0069 §12.2.21, .22, .23).
        (3, 0, 12, 11, 5 | 6) => Class::Sgi1,
        (3, 0, 12, 11, 7) => Class::Sgi0,
        _ => Class::Unknown,
    }
}

/// A 4-bit ID field at `shift` set to `value`.
fn with_field(v: u64, shift: u32, value: u64) -> u64 {
    (v & !(0xf << shift)) | (value << shift)
}

/// What the partition reads in ID register `r` when its CPU holds `real`.
pub fn sanitize_id(r: SysReg, real: u64) -> u64 {
    match (r.crm, r.op2) {
        // ID_AA64PFR0_EL1: SVE (35:32), MPAM (43:40), AMU (47:44), RME
        // (55:52), SEL2 (39:36) hidden.
        (4, 0) => [32, 36, 40, 44, 52].iter().fold(real, |v, &s| with_field(v, s, 0)),
        // ID_AA64PFR1_EL1: MTE (11:8), SME (27:24), NMI (39:36), MTE_frac
        // (43:40), GCS (47:44), MTEX (55:52) hidden.
        (4, 1) => [8, 24, 36, 40, 44, 52].iter().fold(real, |v, &s| with_field(v, s, 0)),
        // ID_AA64PFR2_EL1 (MTE variants, FPMR), ID_AA64ZFR0_EL1 (SVE),
        // ID_AA64SMFR0_EL1 (SME): nothing of them.
        (4, 2) | (4, 4) | (4, 5) => 0,
        // ID_AA64DFR0_EL1: TraceVer (7:4), PMUVer (11:8), PMSVer (35:32),
        // TraceFilt (43:40), TraceBuffer (47:44), MTPMU (51:48), BRBE
        // (55:52), ExtTrcBuff (59:56), HPMN0 (63:60) hidden; the breakpoint
        // and watchpoint counts stay (their registers are RAZ/WI).
        (5, 0) => [4, 8, 32, 40, 44, 48, 52, 56, 60].iter().fold(real, |v, &s| with_field(v, s, 0)),
        // ID_AA64DFR1_EL1, ID_AA64AFR0/1_EL1: nothing.
        (5, 1) | (5, 4) | (5, 5) => 0,
        // ID_AA64ISAR2_EL1: MOPS (19:16), SYSREG_128 (35:32), SYSINSTR_128
        // (39:36), PRFMSLC (43:40), ATS1A (63:60) hidden (each needs EL2 to
        // enable it for EL1).
        (6, 2) => [16, 32, 36, 40, 60].iter().fold(real, |v, &s| with_field(v, s, 0)),
        // ID_AA64ISAR3_EL1: nothing.
        (6, 3) => 0,
        // ID_AA64MMFR2_EL1: NV (27:24) hidden.
        (7, 2) => with_field(real, 24, 0),
        // ID_AA64MMFR3_EL1, ID_AA64MMFR4_EL1: TCR2, SCTLR2, permission
        // indirection and overlays need EL2 to enable them: nothing.
        (7, 3) | (7, 4) => 0,
        _ => real,
    }
}

/// The vCPUs (by index into `vcpus`, their MPIDR affinities) a write of
/// `value` to ICC_SGI1R_EL1 by vCPU `me` targets, and the SGI's INTID
/// (IHI 0069 §12.2.22: TargetList 15:0, Aff1 23:16, INTID 27:24, Aff2
/// 39:32, IRM 40, RS 47:44, Aff3 55:48). A target that is not one of the
/// partition's vCPUs is not reachable: it is left out.
pub fn sgi_targets(value: u64, vcpus: &[u64], me: usize) -> (u32, u64) {
    let intid = ((value >> 24) & 0xf) as u32;
    let mut targets = 0u64;
    if value & (1 << 40) != 0 {
        // Every PE but the sender.
        for i in 0..vcpus.len().min(64) {
            if i != me {
                targets |= 1 << i;
            }
        }
        return (intid, targets);
    }
    let aff1 = (value >> 16) & 0xff;
    let aff2 = (value >> 32) & 0xff;
    let aff3 = (value >> 48) & 0xff;
    let rs = (value >> 44) & 0xf;
    let list = value & 0xffff;
    for (i, &mpidr) in vcpus.iter().enumerate().take(64) {
        let (a0, a1, a2, a3) = (mpidr & 0xff, (mpidr >> 8) & 0xff, (mpidr >> 16) & 0xff, (mpidr >> 32) & 0xff);
        if (a1, a2, a3) != (aff1, aff2, aff3) || a0 >> 4 != rs {
            continue;
        }
        if list & (1 << (a0 & 0xf)) != 0 {
            targets |= 1 << i;
        }
    }
    (intid, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(SysReg::new(3, 0, 0, 4, 0)), Class::Id(SysReg::new(3, 0, 0, 4, 0)));
        assert_eq!(classify(SysReg::new(2, 0, 0, 2, 2)), Class::RazWi("MDSCR_EL1"));
        assert_eq!(classify(SysReg::new(2, 0, 0, 5, 5)), Class::RazWi("DBGBCR<n>_EL1"));
        assert_eq!(classify(SysReg::new(2, 0, 1, 0, 4)), Class::RazWi("OSLAR_EL1"));
        assert_eq!(classify(SysReg::new(3, 3, 9, 12, 0)), Class::RazWi("PMU register"));
        assert_eq!(classify(SysReg::new(3, 3, 14, 2, 1)), Class::RazWi("CNTP_CTL_EL0"));
        assert_eq!(classify(SysReg::new(3, 0, 12, 11, 5)), Class::Sgi1);
        assert_eq!(classify(SysReg::new(3, 0, 12, 11, 7)), Class::Sgi0);
        // SCTLR_EL1 is not trapped; were it, the kernel would not guess.
        assert_eq!(classify(SysReg::new(3, 0, 1, 0, 0)), Class::Unknown);
    }

    #[test]
    fn hidden_features_read_as_absent() {
        let pfr0 = SysReg::new(3, 0, 0, 4, 0);
        // QEMU max-like: SVE 1, AMU 1, GIC 1, EL1/EL0 AArch64+32.
        let real = (1 << 32) | (1 << 44) | (1 << 24) | 0x22;
        assert_eq!(sanitize_id(pfr0, real), (1 << 24) | 0x22);
        let pfr1 = SysReg::new(3, 0, 0, 4, 1);
        // MTE 2, SME 2, BT 1, SSBS 2.
        assert_eq!(sanitize_id(pfr1, (2 << 8) | (2 << 24) | 0x21), 0x21);
        let dfr0 = SysReg::new(3, 0, 0, 5, 0);
        // DebugVer 9, PMUVer 7, BRPs 5, WRPs 3, PMSVer 1.
        let real = 0x9 | (7 << 8) | (5 << 12) | (3 << 20) | (1 << 32);
        assert_eq!(sanitize_id(dfr0, real), 0x9 | (5 << 12) | (3 << 20));
        assert_eq!(sanitize_id(SysReg::new(3, 0, 0, 4, 4), u64::MAX), 0, "ZFR0");
        let isar0 = SysReg::new(3, 0, 0, 6, 0);
        assert_eq!(sanitize_id(isar0, 0x1234_5678), 0x1234_5678, "instructions the CPU has");
    }

    #[test]
    fn sgis_reach_only_the_partitions_vcpus() {
        let vcpus = [0x1, 0x2, 0x103];
        // SGI 3 to Aff0 1 and 2 of cluster 0.
        let v = (3 << 24) | 0b110;
        assert_eq!(sgi_targets(v, &vcpus, 0), (3, 0b011));
        // Aff0 3 in cluster 1 (Aff1 = 1).
        assert_eq!(sgi_targets((1 << 16) | 0b1000, &vcpus, 0), (0, 0b100));
        // Aff0 0 (the kernel's boot CPU, not the partition's): nobody.
        assert_eq!(sgi_targets(1, &vcpus, 0), (0, 0));
        // IRM: every other vCPU.
        assert_eq!(sgi_targets((1 << 40) | (7 << 24), &vcpus, 1), (7, 0b101));
        // RS selects Aff0 16..31: nobody here.
        assert_eq!(sgi_targets((1 << 44) | 0b10, &vcpus, 0), (0, 0));
    }
}
