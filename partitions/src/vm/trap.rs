//! The syndromes of a partition's traps to EL2, decoded once (Arm ARM
//! D24.2.50 ESR_EL2; the ISS encodings of data aborts, D24.2.50.12, and of
//! trapped MSR/MRS, D24.2.50.9).

/// A data abort the kernel may emulate: an access of 1, 2, 4 or 8 bytes
/// by a single load or store whose syndrome names its register (ISS.ISV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The IPA accessed.
    pub ipa: u64,
    /// Access size in bytes.
    pub size: u8,
    /// A write (`Some(value)`, already cut to `size`) or a read.
    pub write: Option<u64>,
    /// The general register (0..=30; 31 is the zero register) read from or
    /// written to.
    pub reg: u8,
    /// A read sign-extends to the register width (ISS.SSE).
    pub sign_extend: bool,
    /// The register is 64 bits wide (ISS.SF); else 32.
    pub wide: bool,
}

/// Why an abort cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotEmulable {
    /// ISS.ISV = 0: a load/store pair, a cache maintenance or an access
    /// whose register the syndrome does not name.
    NoSyndrome,
}

impl MmioAccess {
    /// Decodes a data abort's ISS (`iss` = ESR_EL2[24:0]) at `ipa`; for a
    /// write, `regs` gives the value of the source register.
    pub fn decode(iss: u32, ipa: u64, regs: &[u64; 31]) -> Result<MmioAccess, NotEmulable> {
        if iss & (1 << 24) == 0 {
            return Err(NotEmulable::NoSyndrome);
        }
        let size = 1u8 << ((iss >> 22) & 3);
        let reg = ((iss >> 16) & 0x1f) as u8;
        let write = iss & (1 << 6) != 0;
        let value = regs.get(usize::from(reg)).copied().unwrap_or(0) & mask(size);
        Ok(MmioAccess { ipa, size, write: write.then_some(value), reg, sign_extend: iss & (1 << 21) != 0, wide: iss & (1 << 15) != 0 })
    }

    /// The value to put in the destination register for a read that
    /// returned `value`: cut to the access size, sign-extended when the
    /// load did, then cut to the register width.
    pub fn load_result(&self, value: u64) -> u64 {
        let v = value & mask(self.size);
        let bits = 8 * u32::from(self.size);
        let v = if self.sign_extend && bits < 64 && v >> (bits - 1) & 1 == 1 { v | !mask(self.size) } else { v };
        if self.wide {
            v
        } else {
            v & 0xffff_ffff
        }
    }
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// A trapped MSR/MRS (EC 0x18): the register's encoding and the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregAccess {
    /// The register, as (op0, op1, CRn, CRm, op2).
    pub reg: SysReg,
    /// The general register (31: XZR).
    pub rt: u8,
    /// MRS (read) rather than MSR (write).
    pub read: bool,
}

/// A system register's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysReg {
    /// op0.
    pub op0: u8,
    /// op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// op2.
    pub op2: u8,
}

impl SysReg {
    /// The register `(op0, op1, CRn, CRm, op2)`.
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysReg {
        SysReg { op0, op1, crn, crm, op2 }
    }
}

impl SysregAccess {
    /// Decodes the ISS of a trapped MSR/MRS.
    pub fn decode(iss: u32) -> SysregAccess {
        let f = |shift: u32, bits: u32| ((iss >> shift) & ((1 << bits) - 1)) as u8;
        SysregAccess { reg: SysReg::new(f(20, 2), f(14, 3), f(10, 4), f(1, 4), f(17, 3)), rt: f(5, 5), read: iss & 1 == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> [u64; 31] {
        let mut r = [0u64; 31];
        for (i, v) in r.iter_mut().enumerate() {
            *v = 0x1111_1111_1111_1111 * (i as u64 % 15 + 1);
        }
        r
    }

    #[test]
    fn data_abort_syndromes() {
        // str w3, [x0]: ISV, SAS = 2 (4 bytes), SRT = 3, WnR.
        let iss = (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6);
        let a = MmioAccess::decode(iss, 0x0800_0000, &regs()).unwrap();
        assert_eq!(a, MmioAccess { ipa: 0x0800_0000, size: 4, write: Some(0x4444_4444), reg: 3, sign_extend: false, wide: false });
        // ldrsb x5, [x1]: 1 byte, sign-extended into a 64-bit register.
        let iss = (1 << 24) | (5 << 16) | (1 << 21) | (1 << 15);
        let a = MmioAccess::decode(iss, 0x1000, &regs()).unwrap();
        assert_eq!(a.write, None);
        assert_eq!(a.load_result(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(a.load_result(0x17f), 0x7f);
        // ldrh w2: zero-extended, 32-bit register.
        let a = MmioAccess::decode((1 << 24) | (1 << 22) | (2 << 16), 0, &regs()).unwrap();
        assert_eq!(a.load_result(0x1234_5678), 0x5678);
        // ldr x7 (8 bytes).
        let a = MmioAccess::decode((1 << 24) | (3 << 22) | (7 << 16) | (1 << 15), 0, &regs()).unwrap();
        assert_eq!(a.load_result(u64::MAX), u64::MAX);
        // No ISV (ldp): not emulable.
        assert_eq!(MmioAccess::decode(3 << 22, 0, &regs()), Err(NotEmulable::NoSyndrome));
        // A write from xzr (register 31) writes zero.
        let a = MmioAccess::decode((1 << 24) | (2 << 22) | (31 << 16) | (1 << 6), 0, &regs()).unwrap();
        assert_eq!(a.write, Some(0));
    }

    #[test]
    fn sysreg_syndromes() {
        // msr icc_sgi1r_el1, x1: op0 3, op1 0, CRn 12, CRm 11, op2 5, write.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (1 << 5) | (11 << 1);
        let a = SysregAccess::decode(iss);
        assert_eq!(a, SysregAccess { reg: SysReg::new(3, 0, 12, 11, 5), rt: 1, read: false });
        // mrs x9, id_aa64pfr0_el1: 3, 0, 0, 4, 0, read.
        let a = SysregAccess::decode((3 << 20) | (9 << 5) | (4 << 1) | 1);
        assert_eq!(a, SysregAccess { reg: SysReg::new(3, 0, 0, 4, 0), rt: 9, read: true });
    }
}
