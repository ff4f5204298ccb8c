//! The CPU's own ID registers, read at EL2 by encoding, for the ID-register
//! traps of partitions (HCR_EL2.TID3: op0 3, op1 0, CRn 0, CRm 1..=7; Arm
//! ARM D24.2 "Identification registers"). What a partition is shown of
//! them is decided by `partitions::vm::sysreg::sanitize_id`.

macro_rules! id_registers {
    ($($crm:literal : $($op2:literal),+);+ $(;)?) => {
        /// Reads the ID register (3, 0, c0, c`crm`, `op2`); `None` for an
        /// encoding outside the ID space.
        pub fn read(crm: u8, op2: u8) -> Option<u64> {
            match (crm, op2) {
                $($(
                    ($crm, $op2) => {
                        let v: u64;
                        // SAFETY: an MRS of an ID register (op0 3, op1 0,
                        // CRn 0, CRm 1..=7): always readable at EL2,
                        // reserved encodings read as zero (Arm ARM D24.1.3).
                        unsafe {
                            core::arch::asm!(
                                concat!("mrs {}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)),
                                out(reg) v,
                                options(nomem, nostack, preserves_flags)
                            )
                        };
                        Some(v)
                    }
                )+)+
                _ => None,
            }
        }
    };
}

id_registers! {
    1: 0, 1, 2, 3, 4, 5, 6, 7;
    2: 0, 1, 2, 3, 4, 5, 6, 7;
    3: 0, 1, 2, 3, 4, 5, 6, 7;
    4: 0, 1, 2, 3, 4, 5, 6, 7;
    5: 0, 1, 2, 3, 4, 5, 6, 7;
    6: 0, 1, 2, 3, 4, 5, 6, 7;
    7: 0, 1, 2, 3, 4, 5, 6, 7;
}
