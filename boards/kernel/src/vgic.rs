//! The virtual GIC of partitions on the CPUs they run on: each partition
//! CPU's redistributor woken and its physical interface in EOImode 1, the
//! EL1 virtual timer's PPI forwarded (linked through a list register, so
//! the partition's deactivation completes the physical interrupt), the list
//! registers loaded from `partitions::vm::vgic` before every return to the
//! partition, and a kick SGI that makes another vCPU's CPU look again.

use crate::runtime::{kernel, Partition};
use crate::vm::this_vcpu;
use alloc::vec::Vec;
use partitions::vm::board::MAINTENANCE_INTID;
use partitions::vm::vgic::{Lr, LrState as ModelState, VTIMER_PPI};
use platform::arch::irq;
use platform::arch::vgic::{self as hw, ListRegister, LrState};
use platform::gic::{Gic, GicError, Trigger, DEFAULT_PRIORITY};

/// The physical SGI one partition CPU sends another to make it reload its
/// list registers (Linux on the host would use it for nothing: the kernel
/// owns the physical GIC).
pub const KICK_SGI: u32 = 8;

/// Sets up this partition CPU's physical GIC side (before it enters the
/// partition): its redistributor awake with the virtual timer and
/// maintenance PPIs and the kick SGI enabled, its CPU interface in EOImode
/// 1, the virtual interface reset.
pub fn cpu_init() -> Result<(), GicError> {
    let Some(k) = kernel() else { return Ok(()) };
    let Some(g) = k.discovered.machine.devices.gic.as_ref() else { return Ok(()) };
    // SAFETY: the GIC's windows are identity-mapped Device memory (boot
    // checked it); this CPU programs only its own redistributor (PPIs,
    // SGIs), never the distributor.
    let mut gic = unsafe { Gic::new(g.distributor, &g.redistributors, platform::arch::mpidr(), platform::time::Delay) }?;
    gic.init_redistributor()?;
    for ppi in [VTIMER_PPI, MAINTENANCE_INTID] {
        gic.configure(ppi, Trigger::Level, DEFAULT_PRIORITY)?;
        gic.enable(ppi)?;
    }
    gic.enable_sgi(KICK_SGI)?;
    irq::init_partition_cpu_interface()?;
    hw::reset();
    Ok(())
}

/// An interrupt taken while this CPU ran its partition: the virtual timer
/// becomes pending in the vCPU's virtual GIC (forwarded: `true`); the
/// maintenance interrupt and the kick only bring the CPU here, so that the
/// list registers are reloaded on the way back.
pub fn guest_irq(intid: u32) -> bool {
    if intid != VTIMER_PPI {
        return false;
    }
    let Some(p) = kernel().and_then(|k| k.this_cpu()) else { return false };
    let v = this_vcpu(p);
    p.vm.lock().vgic.forwarded(v, VTIMER_PPI);
    true
}

fn to_model(r: ListRegister) -> Lr {
    Lr {
        intid: r.vintid,
        priority: r.priority,
        hw: r.pintid,
        state: match r.state {
            LrState::Active => ModelState::Active,
            LrState::PendingActive => ModelState::PendingActive,
            _ => ModelState::Pending,
        },
        eoi_notify: r.eoi,
    }
}

fn to_hw(l: Lr) -> ListRegister {
    ListRegister {
        vintid: l.intid,
        pintid: l.hw,
        priority: l.priority,
        state: match l.state {
            ModelState::Pending => LrState::Pending,
            ModelState::Active => LrState::Active,
            ModelState::PendingActive => LrState::PendingActive,
        },
        eoi: l.eoi_notify,
    }
}

/// Before every return to a partition: what the list registers hold now
/// goes back into the virtual GIC, and the registers are loaded with what
/// the vCPU should see.
pub fn before_resume() {
    let Some(p) = kernel().and_then(|k| k.this_cpu()) else { return };
    let v = this_vcpu(p);
    if p.resetting.load(core::sync::atomic::Ordering::Acquire) {
        // Another vCPU resets the partition: this one waits at EL2.
        crate::vm::park_this_cpu(p, v);
    }
    let n = hw::list_registers().min(16);
    let now: Vec<Option<Lr>> = (0..n).map(|i| ListRegister::decode(hw::read_lr(i)).map(to_model)).collect();
    let flush = {
        let mut vm = p.vm.lock();
        vm.vgic.sync(v, &now);
        vm.vgic.flush(v)
    };
    for i in 0..n {
        let value = flush.lrs.get(i).copied().flatten().map_or(0, |l| to_hw(l).value());
        hw::write_lr(i, value);
    }
    hw::set_control(flush.underflow);
}

/// Makes the vCPUs in `mask` (a bit per vCPU index of `p`) look at their
/// virtual GIC again: another CPU gets the kick SGI; this CPU reloads on
/// its way back to the partition anyway.
pub fn kick(p: &Partition, mask: u64) {
    if mask == 0 {
        return;
    }
    let me = platform::arch::mpidr();
    for (i, s) in p.vcpus.iter().enumerate().take(64) {
        if mask & (1 << i) != 0 && s.mpidr != me {
            irq::send_sgi(KICK_SGI, s.mpidr);
        }
    }
}
