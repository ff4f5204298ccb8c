//! Running a partition at EL1 under stage-2 translation, and what happens
//! when it traps back to EL2.
//!
//! Register fields: Arm ARM D24.2 (HCR_EL2, VTCR_EL2, VTTBR_EL2, CPTR_EL2,
//! CNTHCTL_EL2). The partition starts as a Linux-style kernel would: EL1h,
//! MMU off, interrupts masked, x0 = its DTB.

use crate::PhysAddr;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

/// HCR_EL2 for a running partition: stage 2 on (VM), set/way invalidation
/// as clean+invalidate (SWIO), physical FIQ/IRQ/SError to EL2 (FMO/IMO/AMO),
/// SMC trapped (TSC) so PSCI calls come to the kernel, EL1 is AArch64 (RW),
/// the ID registers trapped (TID3) so the partition sees only the features
/// it may use (`partitions::vm::sysreg`), pointer authentication not
/// trapped (API, APK: its keys are EL1 registers of the partition's own
/// CPU, which no other partition shares).
fn hcr_guest() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::TID3::SET
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
        + HCR_EL2::SWIO::SET
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::AMO::SET
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64)
        .value
}

/// CPTR_EL2 with E2H = 0: its RES1 bits (13:12, 9:0), FP/SIMD not trapped
/// (TFP, bit 10, clear) — the partition owns those registers, the kernel is
/// built soft-float. Written as a value: aarch64-cpu 11 declares only TAM
/// of this register.
const CPTR_GUEST: u64 = 0x33ff & !(1 << 10);

/// MDCR_EL2: debug (TDA, TDOSA, TDRA) and performance-monitor (TPM, TPMCR)
/// registers trap to EL2: they would let a partition observe or disturb the
/// machine beyond its own state; debug exceptions are routed to EL2 (TDE).
/// HPMN = 0 (no counters for EL1).
fn mdcr_guest() -> u64 {
    (MDCR_EL2::TDRA::SET + MDCR_EL2::TDOSA::SET + MDCR_EL2::TDA::SET + MDCR_EL2::TDE::RouteToEL2Or1 + MDCR_EL2::TPM::SET + MDCR_EL2::TPMCR::SET).value
}

/// SCTLR_EL1 reset-like value: its RES1 bits (29:28, 23:22, 20, 11), MMU
/// and caches off.
const SCTLR_EL1_OFF: u64 = 0x30d0_0800;

/// SPSR_EL2 to enter EL1h with D, A, I and F masked.
fn spsr_el1h_masked() -> u64 {
    (SPSR_EL2::D::Masked + SPSR_EL2::A::Masked + SPSR_EL2::I::Masked + SPSR_EL2::F::Masked + SPSR_EL2::M::EL1h).value
}

/// CNTHCTL_EL2: EL1 may read the physical counter; its physical timer
/// traps (EL1PCEN = 0: the partition has the virtual timer, and the
/// physical one reads as zero, `partitions::vm::sysreg`).
fn cnthctl_el1_access() -> u64 {
    (CNTHCTL_EL2::EL1PCEN::CLEAR + CNTHCTL_EL2::EL1PCTEN::SET).value
}

/// A partition CPU's stage-2 translation.
#[derive(Clone, Copy, Debug)]
pub struct Stage2 {
    /// Root table of the stage-2 tables.
    pub root: PhysAddr,
    /// VMID tagging the partition's TLB entries.
    pub vmid: u16,
    /// IPA size in bits (VTCR_EL2.T0SZ = 64 - bits).
    pub input_bits: u8,
    /// Level the walk starts at (0, 1 or 2 for the 4 KiB granule).
    pub start_level: u8,
}

impl Stage2 {
    /// VTCR_EL2 for these tables: 4 KiB granule, write-back inner-shareable
    /// walks, 16-bit VMIDs, output size from the CPU's PARange (≤ 48 bits).
    pub fn vtcr(&self) -> u64 {
        let sl0 = match self.start_level {
            0 => VTCR_EL2::SL0::Granule4KBLevel0,
            1 => VTCR_EL2::SL0::Granule4KBLevel1,
            _ => VTCR_EL2::SL0::Granule4KBLevel2,
        };
        let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
        (VTCR_EL2::T0SZ.val(64 - u64::from(self.input_bits))
            + sl0
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::PS.val(ps)
            + VTCR_EL2::VS::Bits16
            + VTCR_EL2::RES1::SET)
            .value
    }
}

/// The CPU's physical address size in bits (ID_AA64MMFR0_EL1.PARange),
/// capped at 48 (52-bit output needs LPA/LPA2, which the maps do not use).
pub fn pa_bits() -> u8 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    }
}

/// Enters the partition at `entry` (EL1h, MMU off) with x0 = `x0`, under
/// `s2`. Never returns: the CPU comes back to EL2 only through traps.
///
/// # Safety
/// `s2` must map only the partition's own memory and devices; `entry` must
/// be inside that memory.
pub unsafe fn enter(s2: &Stage2, entry: PhysAddr, x0: u64) -> ! {
    VTCR_EL2.set(s2.vtcr());
    VTTBR_EL2.set((u64::from(s2.vmid) << 48) | s2.root.0);
    HCR_EL2.set(hcr_guest());
    CPTR_EL2.set(CPTR_GUEST);
    MDCR_EL2.set(mdcr_guest());
    CNTHCTL_EL2.set(cnthctl_el1_access());
    CNTVOFF_EL2.set(0);
    VMPIDR_EL2.set(MPIDR_EL1.get());
    // VPIDR_EL2 resets to an UNKNOWN value: the partition reads its CPU's
    // own MIDR_EL1 through it.
    // SAFETY: writes the MIDR_EL1 value EL1 reads; affects only EL1.
    unsafe { core::arch::asm!("msr vpidr_el2, {}", in(reg) MIDR_EL1.get(), options(nostack)) };
    CNTV_CTL_EL0.set(0);
    SCTLR_EL1.set(SCTLR_EL1_OFF);
    SPSR_EL2.set(spsr_el1h_masked());
    ELR_EL2.set(entry.0);
    barrier::isb(barrier::SY);
    // SAFETY: invalidates this VMID's stage-1+2 TLB entries (VTTBR now
    // selects it) so the partition starts from its own tables only; then
    // drops to EL1 with every general register cleared but x0.
    unsafe {
        core::arch::asm!(
            "tlbi vmalls12e1",
            "dsb ish",
            "isb",
            "mov x1, xzr", "mov x2, xzr", "mov x3, xzr", "mov x4, xzr", "mov x5, xzr", "mov x6, xzr",
            "mov x7, xzr", "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr", "mov x12, xzr",
            "mov x13, xzr", "mov x14, xzr", "mov x15, xzr", "mov x16, xzr", "mov x17, xzr", "mov x18, xzr",
            "mov x19, xzr", "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr", "mov x24, xzr",
            "mov x25, xzr", "mov x26, xzr", "mov x27, xzr", "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
            "eret",
            in("x0") x0,
            options(noreturn)
        )
    }
}

/// Invalidates every CPU's stage-1 and stage-2 TLB entries of the partition
/// whose stage 2 is `s2` (after its stage 2 changed), from any CPU: VTTBR_EL2
/// selects the VMID the broadcast TLBI applies to, so it is switched to the
/// partition's for the invalidation and restored after (Arm ARM D8.13).
pub fn flush_stage2(s2: &Stage2) {
    let saved = VTTBR_EL2.get();
    VTTBR_EL2.set((u64::from(s2.vmid) << 48) | s2.root.0);
    // SAFETY: barriers and an inner-shareable TLB invalidation of one VMID;
    // the ISB makes the VTTBR write effective first.
    unsafe { core::arch::asm!("dsb ishst", "isb", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
    VTTBR_EL2.set(saved);
    barrier::isb(barrier::SY);
}
