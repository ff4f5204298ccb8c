//! A partition's virtual machine at run time: its vCPUs (which PSCI starts
//! and stops), its emulated GICv3 and console UART, and the traps that
//! reach them — PSCI and SMCCC calls, trapped system registers, MMIO to the
//! virtual board ([`partitions::vm::board`]). What each access means is
//! decided by `partitions::vm`; this module applies it to the partition's
//! state and to the CPU it runs on.
//!
//! Locks: [`Vm`] sits under the partition's own `vm` lock, a leaf: nothing
//! else is taken while it is held.

use crate::runtime::{Charge, Life, Partition};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use partitions::validate::PartitionPlan;
use partitions::vm::board::{self, Emulated};
use partitions::vm::psci::{self, Action, VcpuState};
use partitions::vm::sysreg::{self, Class};
use partitions::vm::trap::{MmioAccess, SysregAccess};
use partitions::vm::vgic::{Spi, Vgic, VgicConfig};
use partitions::vm::vpci::{Effect, VirtualHost};
use partitions::vm::vuart::{self, Vuart};

/// Console bytes a UART line is counted as against the log limit.
pub const LINE_BYTES: u32 = 32;
use platform::arch::exception::{Frame, TrapAction};

/// A partition's virtual PCI hosts: the physical host bridge behind each,
/// and what it shows; the k-th answers ECAM window k.
pub type VirtualHosts = Vec<(usize, VirtualHost)>;

/// The emulated devices of one partition.
pub struct Vm {
    /// Its virtual GICv3.
    pub vgic: Vgic,
    /// Its console.
    pub uart: Vuart,
    /// Its virtual PCI hosts, one per physical host bridge its PCI
    /// functions sit behind (the k-th answers ECAM window k): the physical
    /// host, and what the partition sees.
    pub pci: VirtualHosts,
    /// The RAZ/WI registers it touched so far (each logged once).
    raz_wi_seen: Vec<&'static str>,
}

impl Vm {
    /// The devices at reset for partition `plan`, each CPU having `lrs`
    /// list registers: its virtual GIC with the UART's SPI and the physical
    /// lines it owns (`plan.irqs`, forwarded), its virtual PCI hosts
    /// (`pci`, from [`crate::devices::virtual_pci`]), its console logging
    /// lines within `bulkhead,log-limit` (a line counted as [`LINE_BYTES`],
    /// a second's worth allowed at once, never less than the UART's
    /// default).
    pub fn new(plan: &PartitionPlan, lrs: usize, pci: VirtualHosts) -> Vm {
        let mut spis = alloc::vec![Spi { intid: plan.uart_intid, hw: false }];
        spis.extend(plan.irqs.iter().map(|o| Spi { intid: o.irq.intid, hw: true }));
        let cfg = VgicConfig { vcpus: plan.cpus.clone(), spis };
        let limit = plan.log_limit;
        let lines = (limit.console_bytes / LINE_BYTES).max(vuart::LINES_PER_SECOND);
        Vm { vgic: Vgic::new(&cfg, lrs), uart: Vuart::with_limit(lines.max(vuart::BURST_LINES), lines), pci, raz_wi_seen: Vec::new() }
    }
}

/// One vCPU's power state, shared between the CPU it runs on (parked
/// until started) and the vCPU that starts it.
pub struct VcpuSlot {
    /// Its MPIDR (the physical CPU's: VMPIDR_EL2 = MPIDR_EL1).
    pub mpidr: u64,
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
    /// Its CPU's `launch::CpuLaunch` (0 until the CPU runs).
    launch: AtomicU64,
}

const OFF: u8 = 0;
const ON_PENDING: u8 = 1;
const ON: u8 = 2;

impl VcpuSlot {
    /// A vCPU powered off.
    pub fn new(mpidr: u64) -> VcpuSlot {
        VcpuSlot { mpidr, state: AtomicU8::new(OFF), entry: AtomicU64::new(0), context: AtomicU64::new(0), launch: AtomicU64::new(0) }
    }

    /// Its state as PSCI reports it.
    pub fn state(&self) -> VcpuState {
        match self.state.load(Ordering::Acquire) {
            ON_PENDING => VcpuState::OnPending,
            ON => VcpuState::On,
            _ => VcpuState::Off,
        }
    }

    /// Records the address of its CPU's `launch::CpuLaunch`.
    pub fn set_launch(&self, arg: u64) {
        self.launch.store(arg, Ordering::Release);
    }

    /// Marks it running (the boot vCPU, or a started one entering).
    pub fn set_on(&self) {
        self.state.store(ON, Ordering::Release);
    }

    /// Asks its CPU to enter at `entry` with x0 = `context`.
    fn request(&self, entry: u64, context: u64) {
        self.entry.store(entry, Ordering::Relaxed);
        self.context.store(context, Ordering::Relaxed);
        self.state.store(ON_PENDING, Ordering::Release);
        platform::arch::send_event();
    }

    /// Waits (parked in WFE; a CPU_ON wakes it with SEV) until it is asked
    /// to start or its partition stops: the entry and x0, or `None`.
    pub fn wait_for_start(&self, p: &Partition) -> Option<(u64, u64)> {
        loop {
            if p.life() != Life::Running {
                return None;
            }
            if self.state.load(Ordering::Acquire) == ON_PENDING {
                let start = (self.entry.load(Ordering::Relaxed), self.context.load(Ordering::Relaxed));
                self.set_on();
                return Some(start);
            }
            platform::arch::wait_for_event();
        }
    }
}

/// The index of this CPU's vCPU in `p`.
pub fn this_vcpu(p: &Partition) -> usize {
    let me = platform::arch::mpidr();
    p.vcpus.iter().position(|s| s.mpidr == me).unwrap_or(0)
}

/// A PSCI or SMCCC call (DEN0022, DEN0028) from `p` on either conduit:
/// answered in x0, or a vCPU started, or the partition (or this vCPU)
/// stopped. `done` is how the call returns (HVC: Resume, SMC: Skip).
pub fn psci_call(p: &Partition, frame: &mut Frame, done: TrapAction) -> TrapAction {
    let mpidrs: Vec<u64> = p.vcpus.iter().map(|s| s.mpidr).collect();
    let states: Vec<VcpuState> = p.vcpus.iter().map(VcpuSlot::state).collect();
    let x = [frame.x[0], frame.x[1], frame.x[2], frame.x[3]];
    let inside = |a: u64| p.plan.memory.iter().any(|m| a >= m.base.0 && a < m.end());
    match psci::decide(x, &mpidrs, &states, inside) {
        Action::Return(v) => {
            frame.x[0] = v;
            done
        }
        Action::Start { vcpu, entry, context } => {
            defmt::info!("partition {=str}: PSCI CPU_ON of vCPU {=usize} (MPIDR {=u64:#x}) at {=u64:#x}", p.name(), vcpu, mpidrs[vcpu], entry);
            p.vcpus[vcpu].request(entry, context);
            frame.x[0] = 0;
            done
        }
        Action::CpuOff => {
            let me = this_vcpu(p);
            let others_on = p.vcpus.iter().enumerate().any(|(i, s)| i != me && s.state() != VcpuState::Off);
            if others_on {
                defmt::info!("partition {=str}: PSCI CPU_OFF of vCPU {=usize}", p.name(), me);
                // Parked, not powered off: a later CPU_ON starts it again.
                park_this_cpu(p, me);
            }
            defmt::info!("partition {=str}: PSCI CPU_OFF of its last vCPU, stopping it", p.name());
            p.stop(Life::Exited, 0);
            TrapAction::Halt
        }
        Action::SystemOff => {
            defmt::info!("partition {=str}: PSCI SYSTEM_OFF, stopping it", p.name());
            p.stop(Life::Exited, 0);
            TrapAction::Halt
        }
        Action::SystemReset => system_reset(p),
    }
}

/// How long a SYSTEM_RESET waits for the partition's other vCPUs to come
/// back to EL2 (each is kicked; one that does not come stops the
/// partition).
const RESET_WAIT_US: u64 = 500_000;

/// PSCI SYSTEM_RESET: the partition restarts from its image with its
/// memory scrubbed — every other vCPU brought back to EL2 and parked, the
/// devices it owns now stopped and reset (function-level reset where they
/// have one) so that no DMA of the old boot reaches the new one, the
/// memory scrubbed, the image and initrd copied in again, the devices
/// started again, a new DTB with them and its virtual PCI hosts
/// (`/chosen/bulkhead,restarts` counts), the virtual GIC and UART reset
/// and its devices' lines enabled, then its first vCPU (every vCPU, for an
/// image that is not a Linux `Image`) entered at the entry again. Without
/// an image it stops instead.
fn system_reset(p: &Partition) -> TrapAction {
    let me = this_vcpu(p);
    let Some(k) = crate::runtime::kernel().filter(|_| p.plan.image.is_some()) else {
        defmt::info!("partition {=str}: PSCI SYSTEM_RESET: a partition without an image cannot restart, stopping it", p.name());
        p.stop(Life::Exited, 0);
        return TrapAction::Halt;
    };
    p.resetting.store(true, Ordering::SeqCst);
    let others_on = |p: &Partition| p.vcpus.iter().enumerate().filter(|&(i, s)| i != me && s.state() != VcpuState::Off).map(|(i, _)| i).next();
    let deadline = platform::time::uptime_us() + RESET_WAIT_US;
    let mut kicked = 0u64;
    while let Some(v) = others_on(p) {
        let now = platform::time::uptime_us();
        if now > deadline {
            defmt::error!(
                "partition {=str}: PSCI SYSTEM_RESET: vCPU {=usize} did not come back within {=u64} ms: stopping this partition",
                p.name(),
                v,
                RESET_WAIT_US / 1000
            );
            p.stop(Life::Failed, u64::MAX);
            return TrapAction::Halt;
        }
        // Kick it again every millisecond (an SGI may find it between
        // traps, already on its way back).
        if now / 1000 != kicked {
            kicked = now / 1000;
            platform::arch::irq::send_sgi(crate::vgic::KICK_SGI, p.vcpus[v].mpidr);
        }
        core::hint::spin_loop();
    }
    let restarts = p.restarts.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    let failed = |what: &str| {
        defmt::error!("partition {=str}: PSCI SYSTEM_RESET: {=str}: stopping this partition", p.name(), what);
        p.stop(Life::Failed, u64::MAX);
        TrapAction::Halt
    };
    let Ok(reset) = quiesce_devices(k, p) else { return failed("its devices could not be stopped and reset") };
    let Ok(l) = crate::launch::fill_memory(&p.plan) else { return failed("its image could not be loaded again") };
    let Ok(dtb) = restart_devices(k, p, &l, restarts) else { return failed("its devices could not be started again") };
    defmt::info!(
        "partition {=str}: PSCI SYSTEM_RESET: restarting from its image, memory scrubbed, {=usize} of its devices reset (restart {=u32})",
        p.name(),
        reset,
        restarts
    );
    for s in &p.vcpus {
        s.state.store(OFF, Ordering::Release);
    }
    p.resetting.store(false, Ordering::SeqCst);
    for (i, s) in p.vcpus.iter().enumerate() {
        if i == 0 || !l.boots_one {
            s.request(l.entry.0, dtb.0);
        }
    }
    park_this_cpu(p, me)
}

/// The devices `p` owns now, bus mastering and decode off and reset where
/// they have a function-level reset, under the isolation lock (no group
/// moves meanwhile); how many.
fn quiesce_devices(k: &crate::runtime::Kernel, p: &Partition) -> Result<usize, crate::devices::ConfigFailed> {
    let _iso = k.isolation.lock();
    let devs = p.resources.lock().devices.clone();
    crate::devices::stop(&devs, k.discovered)?;
    crate::devices::reset(&devs, k.discovered)?;
    Ok(devs.len())
}

/// After the scrub: the devices `p` owns now (a group may have moved since
/// [`quiesce_devices`]) started as at assignment, its new DTB written with
/// them and its virtual PCI hosts, its virtual devices reset, their lines
/// enabled; all under the isolation lock, so that no release hides a
/// function in a virtual host about to be replaced. Where the DTB is.
fn restart_devices(k: &crate::runtime::Kernel, p: &Partition, l: &crate::launch::Loaded, restarts: u32) -> Result<platform::PhysAddr, ()> {
    let d = k.discovered;
    let _iso = k.isolation.lock();
    let devs = p.resources.lock().devices.clone();
    crate::devices::start(&devs, d).map_err(|_| ())?;
    let guests: Vec<partitions::guest_dt::GuestDevice> = crate::devices::describe("", &devs, d).map_err(|_| ())?.into_iter().map(|o| o.guest).collect();
    let ((dtb, _), vpci) = crate::launch::write_dtb_with_pci(&p.plan, l, &guests, &devs, d, restarts).map_err(|_| ())?;
    *p.vm.lock() = Vm::new(&p.plan, platform::arch::vgic::list_registers(), vpci);
    crate::vgic::enable_lines_of(p, &devs);
    Ok(dtb)
}

/// Takes this CPU out of its partition for now: a physical interrupt still
/// forwarded (active, waiting for the partition's deactivation) is
/// deactivated, the virtual interface emptied, the vCPU marked off, and
/// the CPU starts over on its own stack, parked until the vCPU is started
/// (`launch::restart_cpu`).
pub fn park_this_cpu(p: &Partition, v: usize) -> ! {
    use platform::arch::vgic as hw;
    for i in 0..hw::list_registers().min(16) {
        if let Some(pintid) = hw::ListRegister::decode(hw::read_lr(i)).and_then(|lr| lr.pintid) {
            platform::arch::irq::deactivate(pintid);
        }
    }
    hw::reset();
    if let Some(s) = p.vcpus.get(v) {
        if s.state() != VcpuState::OnPending {
            s.state.store(OFF, Ordering::Release);
        }
    }
    let arg = p.vcpus.get(v).map_or(0, |s| s.launch.load(Ordering::Acquire));
    if arg == 0 {
        platform::arch::smp::halt_this_cpu();
    }
    let top = crate::launch::stack_top(arg);
    // SAFETY: `top` is this CPU's own EL2 stack (its `CpuLaunch`); nothing
    // on the current stack is used again: the CPU starts over.
    unsafe { platform::arch::smp::run_on_stack(top, crate::launch::restart_cpu, arg) }
}

/// A trapped MSR/MRS (EC 0x18) from `p`: an ID register shows what the
/// partition may use, debug/PMU/physical-timer registers read as zero and
/// ignore writes, SGI generation reaches its own vCPUs only; any other
/// register stops the partition with the decoded syndrome.
pub fn sysreg_access(p: &Partition, frame: &mut Frame, iss: u32) -> TrapAction {
    let a = SysregAccess::decode(iss);
    let put = |frame: &mut Frame, v: u64| {
        if let Some(x) = frame.x.get_mut(usize::from(a.rt)) {
            *x = v;
        }
    };
    let written = frame.x.get(usize::from(a.rt)).copied().unwrap_or(0);
    match sysreg::classify(a.reg) {
        Class::Id(r) => {
            if a.read {
                let real = platform::arch::idreg::read(r.crm, r.op2).unwrap_or(0);
                put(frame, sysreg::sanitize_id(r, real));
            }
            TrapAction::Skip
        }
        Class::RazWi(name) => {
            let first = {
                let mut vm = p.vm.lock();
                let first = !vm.raz_wi_seen.contains(&name);
                if first {
                    vm.raz_wi_seen.push(name);
                }
                first
            };
            if first {
                defmt::info!("partition {=str}: {=str} reads as zero, writes ignored (RAZ/WI; logged once)", p.name(), name);
            }
            if a.read {
                put(frame, 0);
            }
            TrapAction::Skip
        }
        Class::Sgi1 => {
            if !a.read {
                let me = this_vcpu(p);
                let mpidrs: Vec<u64> = p.vcpus.iter().map(|s| s.mpidr).collect();
                let (intid, targets) = sysreg::sgi_targets(written, &mpidrs, me);
                let kick = p.vm.lock().vgic.raise_sgi(intid, targets);
                crate::vgic::kick(p, kick);
            } else {
                put(frame, 0);
            }
            TrapAction::Skip
        }
        Class::Sgi0 => TrapAction::Skip,
        Class::Unknown => {
            let r = a.reg;
            defmt::error!(
                "partition {=str}: trapped {=str} of system register op0={=u8} op1={=u8} CRn={=u8} CRm={=u8} op2={=u8} (x{=u8}) that is not emulated: stopping this partition",
                p.name(),
                if a.read { "MRS" } else { "MSR" },
                r.op0,
                r.op1,
                r.crn,
                r.crm,
                r.op2,
                a.rt
            );
            p.stop(Life::Failed, u64::MAX);
            TrapAction::Halt
        }
    }
}

/// A stage-2 data abort of `p` at `ipa` that falls in its virtual board:
/// the access emulated (`None`: not an emulated device's address).
pub fn mmio(p: &Partition, frame: &mut Frame, iss: u32, ipa: u64) -> Option<TrapAction> {
    let dev = board::decode(ipa)?;
    let Ok(a) = MmioAccess::decode(iss, ipa, &frame.x) else {
        defmt::error!(
            "partition {=str}: access to emulated register {=u64:#x} the syndrome does not describe (a load/store pair?): stopping this partition",
            p.name(),
            ipa
        );
        p.stop(Life::Failed, u64::MAX);
        return Some(TrapAction::Halt);
    };
    let me = this_vcpu(p);
    let mut route = None;
    let (value, kick, line) = {
        let mut vm = p.vm.lock();
        match dev {
            Emulated::Gicd(off) => {
                let r = vm.vgic.gicd(me, off, a.size, a.write);
                route = r.route;
                (r.value, r.kick, None)
            }
            Emulated::Gicr(off) => {
                let r = vm.vgic.gicr(me, off, a.size, a.write);
                (r.value, r.kick, None)
            }
            Emulated::Uart(off) => {
                let out = vm.uart.access(off, a.write, platform::time::uptime_us());
                let level = vm.uart.irq_level();
                let kick = vm.vgic.set_level(p.plan.uart_intid, level);
                (out.value, kick, out.line.map(|l| (l, out.dropped)))
            }
            Emulated::Ecam(host, off) => (ecam(p, &mut vm, host, off, a.size, a.write), 0, None),
        }
    };
    if let Some((intid, v)) = route {
        crate::vgic::route_spi(p, intid, v);
    }
    if let Some((line, dropped)) = line {
        if dropped > 0 {
            defmt::warn!("partition {=str}: {=u32} console lines dropped (rate limit)", p.name(), dropped);
        }
        if p.may_print(Charge::ConsoleBytes(line.len() as u64)) {
            let text = core::str::from_utf8(&line).unwrap_or("<not UTF-8>");
            defmt::info!("[{=str}] {=str}", p.name(), text);
        }
    }
    crate::vgic::kick(p, kick);
    if a.write.is_none() {
        if let Some(x) = frame.x.get_mut(usize::from(a.reg)) {
            *x = a.load_result(value);
        }
    }
    Some(TrapAction::Skip)
}

/// An access of `p` to its virtual PCI host `virt`'s ECAM window at `off`
/// (under its `vm` lock, which a release also takes to hide the function:
/// a Command or FLR reaches the device only while the partition owns it).
/// No such virtual host: all ones, writes ignored.
fn ecam(p: &Partition, vm: &mut Vm, virt: usize, off: u64, size: u8, write: Option<u64>) -> u64 {
    let Some(k) = crate::runtime::kernel() else { return u64::MAX };
    let d = k.discovered;
    let Some((host, vh)) = vm.pci.get_mut(virt) else { return u64::MAX };
    let Some(mut cs) = d.config_space(*host) else { return u64::MAX };
    let Some(w) = write else { return u64::from(vh.read(&cs, off, size)) };
    match vh.write(&mut cs, off, size, w as u32) {
        Effect::None => {}
        Effect::Command { phys, memory, bus_master, intx_disable } => {
            if crate::devices::apply_command(*host, phys, memory, bus_master, intx_disable, d).is_err() {
                defmt::warn!(
                    "partition {=str}: PCI {=u8:02x}:{=u8:02x}.{=u8}: its Command write did not reach the function",
                    p.name(),
                    phys.bus,
                    phys.dev,
                    phys.func
                );
            }
        }
        Effect::Flr { phys } => {
            defmt::info!("partition {=str}: PCI {=u8:02x}:{=u8:02x}.{=u8}: Function Level Reset asked, performed", p.name(), phys.bus, phys.dev, phys.func);
            // Under the lock: a release waits for it (at most the FLR's
            // bounded waits) rather than hand over a function mid-reset.
            if crate::devices::guest_reset(*host, phys, d).is_err() {
                defmt::warn!("partition {=str}: PCI {=u8:02x}:{=u8:02x}.{=u8}: the reset failed", p.name(), phys.bus, phys.dev, phys.func);
            }
            // Its Command as the reset left it (decode and mastering off).
            vh.set_present(&cs, phys, true);
        }
    }
    0
}
