//! What a partition CPU traps to EL2 for: hypercalls (HVC, the bulkhead
//! ABI of `partitions::hypercall`), PSCI over SMC, stage-2 aborts (an MMIO
//! access racing with a group move, or a real fault) and anything else,
//! which stops the partition alone.

use crate::ownership;
use crate::runtime::{kernel, Charge, Kernel, Life, Partition};
use partitions::hypercall::{self, Call, Status};
use partitions::vm::trap::MmioAccess;
use platform::arch::exception::{ec_name, fsc_name, Frame, Syndrome, TrapAction, EC};
use platform::pgtable::PAGE_SIZE;
use platform::PhysAddr;

/// Stops `p` with `life` and `status`; its CPU halts.
fn stop(p: &Partition, life: Life, status: u64) -> TrapAction {
    p.stop(life, status);
    TrapAction::Halt
}

/// The trap handler of partition CPUs.
pub fn handle(frame: &mut Frame, s: &Syndrome) -> TrapAction {
    let Some(k) = kernel() else { return TrapAction::Halt };
    let Some(p) = k.this_cpu() else { return TrapAction::Halt };
    let name = p.name();
    match s.class() {
        // HVC: SMCCC fast calls (DEN0028 §2.5: bit 31 of W0; PSCI, the
        // architecture calls, any other service answered NOT_SUPPORTED) on
        // the conduit the partition's DT names; the bulkhead ABI's IDs are
        // small numbers. ELR already points past an HVC.
        Some(EC::Value::HVC64) if partitions::vm::psci::is_fast_call(frame.x[0] as u32) => crate::vm::psci_call(p, frame, TrapAction::Resume),
        Some(EC::Value::HVC64) => hypercall(k, p, frame),
        // SMC (trapped by HCR_EL2.TSC; ELR points at it): the same calls;
        // no secure service is reachable.
        Some(EC::Value::SMC64) => crate::vm::psci_call(p, frame, TrapAction::Skip),
        Some(EC::Value::TrappedMsrMrs) => crate::vm::sysreg_access(p, frame, s.iss()),
        Some(class @ (EC::Value::InstrAbortLowerEL | EC::Value::DataAbortLowerEL)) => {
            let data = class == EC::Value::DataAbortLowerEL;
            if data {
                if let Some(action) = crate::vm::mmio(p, frame, s.iss(), s.fault_ipa()) {
                    return action;
                }
                if let Some(action) = mmio_race(p, s, frame) {
                    return action;
                }
            }
            let fsc = (s.iss() & 0x3f) as u8;
            let write = data && s.iss() & (1 << 6) != 0;
            defmt::error!(
                "partition {=str}: stage-2 {=str} on {=str} of IPA {=u64:#x} at ELR {=u64:#x} (ESR {=u64:#x}): stopping this partition",
                name,
                fsc_name(fsc),
                if !data {
                    "instruction fetch"
                } else if write {
                    "write"
                } else {
                    "read"
                },
                s.fault_ipa(),
                s.elr,
                s.esr
            );
            stop(p, Life::Failed, u64::MAX)
        }
        _ => {
            let ec = s.ec();
            defmt::error!(
                "partition {=str}: {=str} (EC {=u8:#x}, ESR {=u64:#x}) at ELR {=u64:#x}: stopping this partition",
                name,
                ec_name(ec),
                ec,
                s.esr,
                s.elr
            );
            stop(p, Life::Failed, u64::MAX)
        }
    }
}

fn hypercall(k: &Kernel, p: &Partition, frame: &mut Frame) -> TrapAction {
    let regs = [frame.x[0], frame.x[1], frame.x[2], frame.x[3], frame.x[4]];
    let name = p.name();
    let call = match hypercall::decode(regs, &p.plan.memory) {
        Ok(c) => c,
        Err(e) => {
            if p.may_print(Charge::RefusedCall) {
                defmt::warn!("partition {=str}: hypercall {=u64:#x} refused: {=i64}", name, regs[0], e as i64);
            }
            frame.x[0] = e.code();
            return TrapAction::Resume;
        }
    };
    match call {
        Call::Version => {
            frame.x[1] = hypercall::ABI_VERSION;
        }
        Call::ConsoleWrite { at, len } => {
            if p.may_print(Charge::ConsoleBytes(len)) {
                // SAFETY: `decode` checked the buffer lies in the caller's
                // own memory, which the kernel identity-maps.
                let bytes = unsafe { core::slice::from_raw_parts(at.0 as *const u8, len as usize) };
                let text = core::str::from_utf8(bytes).unwrap_or("<not UTF-8>");
                defmt::info!("[{=str}] {=str}", name, text.trim_end());
            }
        }
        Call::Exit { status } => {
            if status == 0 {
                defmt::info!("partition {=str}: exited with status 0", name);
                return stop(p, Life::Exited, 0);
            }
            defmt::warn!("partition {=str}: exited with status {=u64}", name, status);
            return stop(p, Life::Failed, status);
        }
        Call::WhoAmI => {
            frame.x[1] = u64::from(p.plan.id.0);
            frame.x[2] = p.plan.cpus.len() as u64;
            frame.x[3] = p.plan.devices.len() as u64;
        }
        call => match ownership::hypercall(k, p.plan.id, call) {
            Ok(out) => frame.x[1..4].copy_from_slice(&out),
            Err(e) => {
                frame.x[0] = e.code();
                return TrapAction::Resume;
            }
        },
    }
    frame.x[0] = Status::Ok.code();
    TrapAction::Resume
}

/// What to do with a stage-2 data abort of `p` that may come from a group
/// move racing with its MMIO access: if the device was given to it
/// meanwhile, run the access again; if the device was taken away, emulate
/// the access as to a removed PCI device (reads all ones, writes dropped).
/// `None`: a real fault.
fn mmio_race(p: &Partition, s: &Syndrome, frame: &mut Frame) -> Option<TrapAction> {
    let k = kernel()?;
    let ipa = PhysAddr(s.fault_ipa());
    let hit = |r: &platform::PhysRange| r.grow_to(PAGE_SIZE).contains(ipa);
    let (owned, revoked) = {
        let res = p.resources.lock();
        let owned = crate::devices::mmio(&res.devices, k.discovered).is_ok_and(|m| m.iter().any(hit));
        (owned, res.revoked.iter().any(hit))
    };
    if owned {
        return Some(TrapAction::Resume);
    }
    if !revoked {
        return None;
    }
    // Emulating needs the syndrome to name the register (ISV).
    let access = MmioAccess::decode(s.iss(), ipa.0, &frame.x).ok()?;
    p.count_lost_device_access();
    if access.write.is_none() {
        if let Some(x) = frame.x.get_mut(usize::from(access.reg)) {
            *x = access.load_result(u64::MAX);
        }
    }
    Some(TrapAction::Skip)
}
