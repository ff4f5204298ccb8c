//! Exception handling at EL2: traps from partitions go to the kernel's
//! handler; anything unexpected gets a decoded report.
//!
//! ESR layout: Arm ARM D24.2.52 (ESR_EL2); EC values and the ISS encodings of
//! data/instruction aborts: D24.2.52.1–.3; fault status codes: table D24-*.

use super::exit;
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The exception classes (`ESR_ELx.EC`) by their Arm ARM names.
pub use aarch64_cpu::registers::ESR_EL2::EC;

/// General-purpose registers as the vector entry saved them.
#[repr(C)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    _pad: u64,
}

/// Where the exception came from (the vector's position in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorKind(pub u64);

impl VectorKind {
    fn origin(self) -> &'static str {
        match self.0 / 4 {
            0 => "current EL, SP_EL0",
            1 => "current EL, SP_ELx",
            2 => "lower EL, AArch64",
            _ => "lower EL, AArch32",
        }
    }
    fn class(self) -> &'static str {
        match self.0 % 4 {
            0 => "synchronous",
            1 => "IRQ",
            2 => "FIQ",
            _ => "SError",
        }
    }
}

/// Raw syndrome registers of the exception being handled.
#[derive(Clone, Copy, Debug)]
pub struct Syndrome {
    /// Exception level that took it.
    pub el: u8,
    /// ESR_ELx.
    pub esr: u64,
    /// ELR_ELx: the faulting / preferred return address.
    pub elr: u64,
    /// FAR_ELx (valid for aborts).
    pub far: u64,
    /// SPSR_ELx.
    pub spsr: u64,
    /// HPFAR_EL2 (faulting IPA >> 12 in bits [43:4] for stage-2 faults).
    pub hpfar: u64,
}

impl Syndrome {
    /// Exception class ESR[31:26].
    pub fn ec(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }
    /// The exception class, as the Arm ARM names it (`None`: an encoding
    /// aarch64-cpu does not name).
    pub fn class(&self) -> Option<ESR_EL2::EC::Value> {
        tock_registers::LocalRegisterCopy::<u64, ESR_EL2::Register>::new(self.esr).read_as_enum(ESR_EL2::EC)
    }
    /// Instruction-specific syndrome ESR[24:0].
    pub fn iss(&self) -> u32 {
        (self.esr & 0x1ff_ffff) as u32
    }
    /// The faulting IPA of a stage-2 abort (HPFAR page + FAR offset).
    pub fn fault_ipa(&self) -> u64 {
        ((self.hpfar >> 4) & 0xff_ffff_ffff) << 12 | (self.far & 0xfff)
    }
}

fn read_syndrome() -> Syndrome {
    let el = super::current_el();
    match el {
        1 => Syndrome { el, esr: ESR_EL1.get(), elr: ELR_EL1.get(), far: FAR_EL1.get(), spsr: SPSR_EL1.get(), hpfar: 0 },
        3 => Syndrome { el, esr: ESR_EL3.get(), elr: ELR_EL3.get(), far: FAR_EL3.get(), spsr: SPSR_EL3.get(), hpfar: 0 },
        _ => Syndrome { el, esr: ESR_EL2.get(), elr: ELR_EL2.get(), far: FAR_EL2.get(), spsr: SPSR_EL2.get(), hpfar: HPFAR_EL2.get() },
    }
}

fn write_elr(el: u8, v: u64) {
    match el {
        1 => ELR_EL1.set(v),
        3 => ELR_EL3.set(v),
        _ => ELR_EL2.set(v),
    }
}

/// Name of an exception class.
pub fn ec_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SVE/SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC from AArch64",
        0x16 => "HVC from AArch64",
        0x17 => "SMC from AArch64",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort at the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort at the same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

/// Name of a data/instruction fault status code (DFSC/IFSC).
pub fn fsc_name(fsc: u8) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// Logs a decoded report of an exception.
pub fn report(kind: VectorKind, s: &Syndrome, frame: &Frame) {
    let ec = s.ec();
    defmt::error!(
        "EXCEPTION: {=str} exception at EL{=u8} from {=str}: EC={=u8:#04x} ({=str}), ESR={=u64:#010x}",
        kind.class(),
        s.el,
        kind.origin(),
        ec,
        ec_name(ec),
        s.esr
    );
    let iss = s.iss();
    match ec {
        0x20 | 0x21 | 0x24 | 0x25 => {
            let fsc = (iss & 0x3f) as u8;
            let level = fsc & 3;
            let data = ec >= 0x24;
            defmt::error!(
                "  ISS: {=str}SC={=u8:#04x} ({=str}, level {=u8}), {=str}, FnV={=bool}, EA={=bool}, S1PTW={=bool}, ISV={=bool}",
                if data { "DF" } else { "IF" },
                fsc,
                fsc_name(fsc),
                level,
                if !data {
                    "instruction fetch"
                } else if iss & (1 << 6) != 0 {
                    "WnR=1 (write)"
                } else {
                    "WnR=0 (read)"
                },
                iss & (1 << 10) != 0,
                iss & (1 << 9) != 0,
                iss & (1 << 7) != 0,
                data && iss & (1 << 24) != 0
            );
            if data && iss & (1 << 24) != 0 {
                defmt::error!("  ISS: access size {=u32} bytes, register x{=u32}", 1u32 << ((iss >> 22) & 3), (iss >> 16) & 0x1f);
            }
        }
        0x15..=0x17 => defmt::error!("  ISS: imm16={=u32:#06x}", iss & 0xffff),
        0x18 => defmt::error!(
            "  ISS: op0={=u32} op1={=u32} CRn={=u32} CRm={=u32} op2={=u32} Rt=x{=u32} {=str}",
            (iss >> 20) & 3,
            (iss >> 14) & 7,
            (iss >> 10) & 0xf,
            (iss >> 1) & 0xf,
            (iss >> 17) & 7,
            (iss >> 5) & 0x1f,
            if iss & 1 != 0 { "read" } else { "write" }
        ),
        _ => defmt::error!("  ISS: {=u32:#09x}", iss),
    }
    defmt::error!("  ELR={=u64:#018x} FAR={=u64:#018x} SPSR={=u64:#010x}", s.elr, s.far, s.spsr);
    for i in (0..28).step_by(4) {
        let x = &frame.x;
        defmt::error!("  x{=usize:02}={=u64:#018x} {=u64:#018x} {=u64:#018x} {=u64:#018x}", i, x[i], x[i + 1], x[i + 2], x[i + 3]);
    }
    defmt::error!("  x28={=u64:#018x} fp={=u64:#018x} lr={=u64:#018x}", frame.x[28], frame.x[29], frame.x[30]);
}

/// What the kernel does after a trap from a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapAction {
    /// Return to the partition at ELR (HVC: the next instruction).
    Resume,
    /// Return to the instruction after the one that trapped (SMC, MSR/MRS).
    Skip,
    /// Stop this CPU for good; other CPUs keep running.
    Halt,
}

/// The kernel's handler for traps from partitions.
pub type TrapHandler = fn(&mut Frame, &Syndrome) -> TrapAction;

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler every partition trap goes to.
pub fn set_trap_handler(h: TrapHandler) {
    HANDLER.store(h as usize, Ordering::Release);
}

/// Called by the exception entry for exceptions from a lower EL.
fn dispatch(frame: &mut Frame, s: &Syndrome) -> Option<TrapAction> {
    let h = HANDLER.load(Ordering::Acquire);
    if h == 0 {
        return None;
    }
    // SAFETY: HANDLER only ever holds a `TrapHandler` stored by
    // `set_trap_handler`.
    let h: TrapHandler = unsafe { core::mem::transmute::<usize, TrapHandler>(h) };
    Some(h(frame, s))
}

/// Called before every return to a partition (after a trap or an
/// interrupt it took): the kernel loads the vCPU's list registers.
pub type ResumeHook = fn();

static RESUME: AtomicUsize = AtomicUsize::new(0);

/// Installs the hook run before every return to a partition.
pub fn set_resume_hook(h: ResumeHook) {
    RESUME.store(h as usize, Ordering::Release);
}

fn before_resume() {
    match RESUME.load(Ordering::Acquire) {
        0 => {}
        h => {
            // SAFETY: RESUME only ever holds a `ResumeHook` stored by
            // `set_resume_hook`.
            let h: ResumeHook = unsafe { core::mem::transmute::<usize, ResumeHook>(h) };
            h()
        }
    }
}

/// Set while an exception report is being produced: a second fault
/// inside the report must not recurse.
static IN_REPORT: AtomicBool = AtomicBool::new(false);

/// Called by the vectors with the saved registers.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_exception(frame: &mut Frame, kind: u64) {
    let kind = VectorKind(kind);
    // IRQ (at EL2 inside `irq::wait_for_interrupt`, or from a partition):
    // acknowledge, handle, EOI, resume. Before the syndrome is read: ESR
    // means nothing for an interrupt, and the guest-trap path must not see it.
    if kind.0 % 4 == 1 {
        if kind.0 >= 8 {
            super::irq::dispatch_from_partition();
            before_resume();
        } else {
            super::irq::dispatch();
        }
        return;
    }
    let s = read_syndrome();
    // A semihosting `hlt` without `-semihosting` is an undefined instruction:
    // note that semihosting is absent and carry on past it.
    if s.ec() == 0 && kind.0.is_multiple_of(4) && s.elr == exit::semihosting_hlt_address() {
        exit::semihosting_unavailable();
        frame.x[0] = u64::MAX;
        write_elr(s.el, s.elr + 4);
        return;
    }
    if kind.0 >= 8 && s.el == 2 {
        // From a partition: the kernel's handler decides.
        match dispatch(frame, &s) {
            Some(TrapAction::Resume) => {
                before_resume();
                return;
            }
            Some(TrapAction::Skip) => {
                write_elr(s.el, s.elr + 4);
                before_resume();
                return;
            }
            Some(TrapAction::Halt) => super::smp::halt_this_cpu(),
            None => {}
        }
    }
    if IN_REPORT.swap(true, Ordering::Relaxed) {
        exit::exit_quiet(crate::ExitCode::Exception);
    }
    report(kind, &s, frame);
    exit::exit(crate::ExitCode::Exception);
}
