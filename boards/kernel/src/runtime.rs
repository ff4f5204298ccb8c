//! The kernel at run time: one table of partitions and one of the SMMUs'
//! ownership state, made once by `launch` before any partition CPU starts
//! and never replaced.
//!
//! Each [`Partition`] is its validated plan, which never changes, its life
//! (atomics: any CPU reads them without a lock) and its resources (stage 2,
//! DMA domains, the devices it owns now) under its own lock. What a group
//! move touches across partitions — the SMMUs, who owns which group, the
//! fault ledger — is [`Isolation`], under the kernel's one other lock.
//!
//! Lock order: [`Kernel::isolation`] before any [`Partition::resources`];
//! a partition's resources are never held while taking the isolation lock,
//! and never two partitions' at once.

use crate::discover::Discovered;
use crate::smmus::SmmuInstance;
use crate::stage2::Stage2Tables;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use partitions::budget::Budget;
use partitions::faults::FaultLedger;
use partitions::groups::GroupId;
use partitions::ownership::Ownership;
use partitions::topology::DeviceRef;
use partitions::validate::{PartitionId, PartitionPlan};
use platform::sync::SpinLock;
use platform::PhysRange;

/// Where a partition is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Life {
    /// Its CPUs run.
    Running = 0,
    /// It stopped itself cleanly (status 0, PSCI power-off).
    Exited = 1,
    /// It was stopped: a fault, a non-zero exit status, a refused call.
    Failed = 2,
}

/// What a partition holds that changes while it runs.
pub struct Resources {
    /// Its CPUs' stage 2.
    pub stage2: Stage2Tables,
    /// Its DMA domains, by SMMU index.
    pub domains: Vec<(usize, smmu::Domain)>,
    /// The devices it owns now.
    pub devices: Vec<DeviceRef>,
    /// Bumped whenever `devices` changes.
    pub generation: u64,
    /// MMIO of devices taken away from it, which it may still touch while it
    /// notices: reads there return all ones and writes are dropped, as for a
    /// PCI device that was removed.
    pub revoked: Vec<PhysRange>,
}

/// One partition.
pub struct Partition {
    /// What validation planned for it.
    pub plan: PartitionPlan,
    life: AtomicU8,
    status: AtomicU64,
    /// What changes while it runs.
    pub resources: SpinLock<Resources>,
    /// What it may still make the kernel print (`bulkhead,log-limit`).
    /// Held for one bucket step at a time, by its own CPUs and by the boot
    /// CPU's report; never with another lock.
    pub budget: SpinLock<Budget>,
    /// Its emulated devices (virtual GIC, console UART): a leaf lock.
    pub vm: SpinLock<crate::vm::Vm>,
    /// Its vCPUs, one per CPU of the plan, in plan order.
    pub vcpus: Vec<crate::vm::VcpuSlot>,
    /// A PSCI SYSTEM_RESET is under way: its other vCPUs park.
    pub resetting: core::sync::atomic::AtomicBool,
    /// How often it restarted itself.
    pub restarts: core::sync::atomic::AtomicU32,
}

impl Partition {
    /// A running partition of `plan` holding `resources`, with its virtual
    /// PCI hosts `pci`.
    pub fn new(plan: PartitionPlan, resources: Resources, pci: crate::vm::VirtualHosts) -> Partition {
        let budget = SpinLock::new(Budget::new(plan.log_limit, platform::time::uptime_us()));
        let vm = SpinLock::new(crate::vm::Vm::new(&plan, platform::arch::vgic::list_registers(), pci));
        let vcpus = plan.cpus.iter().map(|&m| crate::vm::VcpuSlot::new(m)).collect();
        Partition {
            plan,
            life: AtomicU8::new(Life::Running as u8),
            status: AtomicU64::new(0),
            resources: SpinLock::new(resources),
            budget,
            vm,
            vcpus,
            resetting: core::sync::atomic::AtomicBool::new(false),
            restarts: core::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Charges `kind` to its budget now: may the line be printed?
    pub fn may_print(&self, kind: Charge) -> bool {
        let now = platform::time::uptime_us();
        let mut b = self.budget.lock();
        match kind {
            Charge::ConsoleBytes(n) => b.console(n, now),
            Charge::RefusedCall => b.refused_call(now),
        }
    }

    /// Counts an emulated access to a device window it lost.
    pub fn count_lost_device_access(&self) {
        self.budget.lock().lost_device_access();
    }

    /// Reports what its budget dropped, at most once a period (`flush`:
    /// whatever is left, when it stopped).
    pub fn report_drops(&self, flush: bool) {
        let now = platform::time::uptime_us();
        let d = {
            let mut b = self.budget.lock();
            if flush {
                b.flush(now)
            } else {
                b.report(now)
            }
        };
        if let Some(d) = d {
            defmt::warn!(
                "partition {=str}: over its log budget in the last {=u64} ms: {=u64} console bytes and {=u64} refused-call lines dropped; {=u64} accesses to lost device windows emulated",
                self.name(),
                d.over_us / 1000,
                d.console_bytes,
                d.refused_calls,
                d.lost_device_accesses
            );
        }
    }

    /// Its name, for messages.
    pub fn name(&self) -> &str {
        self.plan.name.as_str()
    }

    /// Where it is in its life.
    pub fn life(&self) -> Life {
        match self.life.load(Ordering::Acquire) {
            0 => Life::Running,
            1 => Life::Exited,
            _ => Life::Failed,
        }
    }

    /// Marks it stopped with `status` (its CPUs halt).
    pub fn stop(&self, life: Life, status: u64) {
        self.status.store(status, Ordering::Relaxed);
        self.life.store(life as u8, Ordering::Release);
        // Its lines are nobody's to take now.
        crate::vgic::set_lines(self, |_| true, false);
    }
}

/// What a partition asks the kernel to print, charged to its budget.
#[derive(Clone, Copy)]
pub enum Charge {
    /// The text of a console write.
    ConsoleBytes(u64),
    /// The line about a refused hypercall.
    RefusedCall,
}

/// What every group move touches, under [`Kernel::isolation`].
pub struct Isolation {
    /// The SMMUs, in DT order.
    pub smmus: Vec<SmmuInstance>,
    /// Who owns which group.
    pub ownership: Ownership,
    /// SMMU events counted against each group's owners.
    pub faults: FaultLedger,
    /// Groups found over their owner's fault limit by a drain that ran
    /// inside another change (a release's): quarantined by the next
    /// periodic drain.
    pub pending_quarantine: Vec<(GroupId, PartitionId, u32)>,
}

/// The kernel's state once partitions run.
pub struct Kernel {
    /// Every partition, by id.
    pub partitions: Vec<Partition>,
    /// (MPIDR, partition id) of every partition CPU.
    cpus: Vec<(u64, PartitionId)>,
    /// Topology and groups (never change).
    pub discovered: &'static Discovered,
    /// The SMMUs and who owns what.
    pub isolation: SpinLock<Isolation>,
}

static KERNEL: spin::Once<Kernel> = spin::Once::new();

impl Kernel {
    /// Makes the kernel's state; `install` publishes it.
    pub fn new(partitions: Vec<Partition>, cpus: Vec<(u64, PartitionId)>, discovered: &'static Discovered, isolation: Isolation) -> Kernel {
        Kernel { partitions, cpus, discovered, isolation: SpinLock::new(isolation) }
    }

    /// Publishes `k` (once, on the boot CPU, before any partition CPU
    /// starts); later calls keep the first.
    pub fn install(k: Kernel) -> &'static Kernel {
        KERNEL.call_once(|| k)
    }

    /// The partition `p`.
    pub fn partition(&self, p: PartitionId) -> Option<&Partition> {
        self.partitions.get(usize::from(p.0))
    }

    /// The name of partition `p`, for messages.
    pub fn name(&self, p: PartitionId) -> &str {
        self.partition(p).map(Partition::name).unwrap_or("?")
    }

    /// The partition whose CPU this is.
    pub fn this_cpu(&self) -> Option<&Partition> {
        let me = platform::arch::mpidr();
        self.cpus.iter().find(|(m, _)| *m == me).and_then(|&(_, p)| self.partition(p))
    }
}

/// The kernel's state, once partitions were launched.
pub fn kernel() -> Option<&'static Kernel> {
    KERNEL.get()
}
