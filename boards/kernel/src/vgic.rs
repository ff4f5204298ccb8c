//! The virtual GIC of partitions on the CPUs they run on: each partition
//! CPU's redistributor woken and its physical interface in EOImode 1, the
//! EL1 virtual timer's PPI forwarded (linked through a list register, so
//! the partition's deactivation completes the physical interrupt), the list
//! registers loaded from `partitions::vm::vgic` before every return to the
//! partition, and a kick SGI that makes another vCPU's CPU look again.

use crate::discover::Discovered;
use crate::runtime::{kernel, Partition};
use crate::vm::this_vcpu;
use partitions::validate::PartitionPlan;
use partitions::vm::board::MAINTENANCE_INTID;
use partitions::vm::vgic::{Lr, LrState as ModelState, MAX_LRS, VTIMER_PPI};
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

/// The physical GIC as seen from the CPU with affinity `mpidr` (its
/// redistributor; SPIs it configures or routes go to it).
fn gic_for(d: &Discovered, mpidr: u64) -> Result<Option<Gic<'static, platform::time::Delay>>, GicError> {
    let Some(g) = d.machine.devices.gic.as_ref() else { return Ok(None) };
    // SAFETY: the GIC's windows are identity-mapped Device memory (boot
    // checked it) for the kernel's lifetime.
    unsafe { Gic::new(g.distributor, &g.redistributors, mpidr, platform::time::Delay) }.map(Some)
}

/// Forwards the physical lines partition `p` owns (`plan.irqs`): each
/// configured with its trigger, routed to the partition's first CPU (the
/// virtual GIC's reset routing) and enabled. Run by the boot CPU before
/// any partition CPU starts; the partition's deactivation of the linked
/// virtual interrupt completes each one.
pub fn forward_spis(p: &PartitionPlan, d: &Discovered) -> Result<(), GicError> {
    let Some(&first) = p.cpus.first() else { return Ok(()) };
    let Some(mut gic) = gic_for(d, first)? else { return Ok(()) };
    for o in &p.irqs {
        let trigger = if o.irq.edge { Trigger::Edge } else { Trigger::Level };
        gic.configure(o.irq.intid, trigger, DEFAULT_PRIORITY)?;
        gic.enable(o.irq.intid)?;
        defmt::info!("partition {=str}: physical {} forwarded to it", p.name.as_str(), o.irq);
    }
    Ok(())
}

/// The partition routed its forwarded SPI `intid` to vCPU `v`: the physical
/// one follows, to that vCPU's CPU.
pub fn route_spi(p: &Partition, intid: u32, v: usize) {
    let (Some(slot), Some(k)) = (p.vcpus.get(v), kernel()) else { return };
    if let Err(e) = gic_for(k.discovered, slot.mpidr).and_then(|g| g.map_or(Ok(()), |mut g| g.route(intid))) {
        defmt::warn!("partition {=str}: routing INTID {=u32} to vCPU {=usize}: {}", p.name(), intid, v, e);
    }
}

/// Turns the physical lines of `p` that `which` holds on (enabled again:
/// its devices assigned to it again) or off (retired: disabled, their
/// pending and active states cleared, so none stays active for a partition
/// that will not end it — its devices released, or it stopped).
pub fn set_lines(p: &Partition, which: impl Fn(u32) -> bool, on: bool) {
    let (Some(&first), Some(k)) = (p.plan.cpus.first(), kernel()) else { return };
    let Ok(Some(mut gic)) = gic_for(k.discovered, first) else { return };
    for o in p.plan.irqs.iter().filter(|o| which(o.irq.intid)) {
        let done = if on { gic.enable(o.irq.intid) } else { gic.retire(o.irq.intid) };
        if let Err(e) = done {
            defmt::warn!("partition {=str}: turning INTID {=u32} {=str}: {}", p.name(), o.irq.intid, if on { "on" } else { "off" }, e);
        }
    }
}

/// Enables the physical lines of `p` that its devices `devs` raise (they
/// are its again: assigned back, or started after its restart).
pub fn enable_lines_of(p: &Partition, devs: &[partitions::topology::DeviceRef]) {
    let Some(k) = kernel() else { return };
    let lines = partitions::validate::owned_irqs(&k.discovered.topology, devs);
    set_lines(p, |intid| lines.iter().any(|o| o.irq.intid == intid), true);
}

/// An interrupt taken while this CPU ran its partition: the virtual timer
/// and the partition's own physical lines become pending in its virtual
/// GIC (forwarded: `true`; the vCPU an SPI is routed to is kicked if it
/// runs elsewhere); the maintenance interrupt and the kick only bring the
/// CPU here, so that the list registers are reloaded on the way back. A
/// line that is not the partition's is completed here (`false`).
pub fn guest_irq(intid: u32) -> bool {
    let Some(p) = kernel().and_then(|k| k.this_cpu()) else { return false };
    let owned = intid == VTIMER_PPI || p.plan.irqs.iter().any(|o| o.irq.intid == intid);
    if !owned {
        return false;
    }
    let v = this_vcpu(p);
    let kick = p.vm.lock().vgic.forwarded(v, intid);
    self::kick(p, kick);
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
    // On every return to the partition: nothing here allocates.
    let n = hw::list_registers().min(MAX_LRS);
    let mut now = [None; MAX_LRS];
    for (i, lr) in now.iter_mut().enumerate().take(n) {
        *lr = ListRegister::decode(hw::read_lr(i)).map(to_model);
    }
    let flush = {
        let mut vm = p.vm.lock();
        vm.vgic.sync(v, &now[..n]);
        vm.vgic.flush(v)
    };
    for i in 0..n {
        let value = flush.lrs().get(i).copied().flatten().map_or(0, |l| to_hw(l).value());
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
