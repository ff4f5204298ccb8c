//! Checks the QEMU scenarios drive through `bulkhead.selftest=` boot
//! arguments. Built only with the cargo feature `selftest` (the scenarios'
//! image): a production image's loader must not be able to give a device a
//! DMA window onto a kernel buffer or inject illegal SMMU commands by
//! editing `/chosen/bootargs`.
//!
//! - `data-abort`: reads the unmapped stack guard page (the exception
//!   report and stop are checked).
//! - `dma`, `cmdq-error`: [`dma`].
//! - `irq`: [`irq`].
//! - `fail-closed:N:MS`: [`after_partitions_started`].

mod dma;
mod irq;

use crate::discover::Discovered;
use crate::smmus::SmmuInstance;
use platform::arch::boot::ImageLayout;
use platform::{ExitCode, PhysAddr, PhysRange};

/// The `edu` whose BAR0 is at `bar`.
fn edu_at(bar: PhysAddr) -> &'static edu::Registers {
    // SAFETY: `bar` is BAR0 of an edu function from the discovered PCI
    // tree: the kernel's identity map covers the host bridge's memory
    // window, and the BAR holds `edu::BAR0_SIZE` bytes of device registers
    // that nothing else in the kernel refers to while a selftest runs.
    unsafe { &*(bar.0 as *const edu::Registers) }
}

fn missing(what: &'static str) -> ExitCode {
    defmt::error!("selftest: {=str}", what);
    ExitCode::SelfTestFailed
}

/// The checks that run once the SMMUs are up, before any partition starts.
pub fn before_partitions(
    bootargs: &str,
    layout: &ImageLayout,
    ram: &[PhysRange],
    instances: &mut [SmmuInstance],
    discovered: &Discovered,
) -> Result<(), ExitCode> {
    for arg in bootargs.split_ascii_whitespace() {
        let Some(test) = arg.strip_prefix("bulkhead.selftest=") else { continue };
        match test {
            "data-abort" => {
                let at = layout.stack_guard.start;
                defmt::warn!("selftest: reading the unmapped stack guard page at {}", at);
                // SAFETY: deliberately faults (the guard page is unmapped);
                // the exception handler reports and stops the machine.
                let v = unsafe { (at.0 as *const u64).read_volatile() };
                defmt::error!("selftest: read of the guard page returned {=u64:#x}", v);
                return Err(ExitCode::SelfTestFailed);
            }
            "dma" => {
                let (h, f) = discovered.find_pci(edu::VENDOR_ID, edu::DEVICE_ID).ok_or_else(|| missing("no edu device"))?;
                let mut cs = discovered.config_space(h).ok_or_else(|| missing("no config space for edu's host"))?;
                let (smmu_index, sid) = discovered.stream_id(h, f.rid()).ok_or_else(|| missing("edu has no StreamID"))?;
                let bar = f.bars.first().ok_or_else(|| missing("edu has no BAR0"))?.cpu;
                let smmu = instances.get_mut(smmu_index).and_then(SmmuInstance::usable).ok_or_else(|| missing("edu's SMMU was not brought up"))?;
                dma::dma_window(smmu, &mut cs, f.bdf, bar, sid, dma::DmaOptions::from_bootargs(bootargs), ram)?;
            }
            "irq" => irq::run(instances, discovered)?,
            "cmdq-error" => {
                let first = instances.first_mut().and_then(SmmuInstance::usable).ok_or_else(|| missing("no SMMU to test"))?;
                dma::cmdq_error(first)?;
            }
            // Runs once the partitions are (`after_partitions_started`).
            t if t.starts_with("fail-closed:") => {}
            other => {
                defmt::error!("unknown selftest {=str}", other);
                return Err(ExitCode::SelfTestFailed);
            }
        }
    }
    Ok(())
}

/// `bulkhead.selftest=fail-closed:N:MS`: MS milliseconds after the
/// partitions started, SMMU N (in DT order) fails closed as after an error
/// it cannot be trusted past — what the event loop does on SFM_ERR, which
/// QEMU's SMMU never raises (the same `ownership::fail_smmu`: its groups go
/// to Blocked for good). Partitions keep running; every stream of that SMMU
/// aborts from then on.
pub fn after_partitions_started(bootargs: &str) {
    let Some(spec) = bootargs.split_ascii_whitespace().find_map(|a| a.strip_prefix("bulkhead.selftest=fail-closed:")) else { return };
    let mut it = spec.split(':').map(|v| v.parse::<u64>().ok());
    let (Some(Some(n)), Some(Some(ms))) = (it.next(), it.next()) else {
        defmt::error!("selftest fail-closed: expected fail-closed:SMMU:MS, got {=str}", spec);
        return;
    };
    let until = platform::time::ticks() + ms.saturating_mul(platform::time::frequency()) / 1000;
    while platform::time::ticks() < until {
        core::hint::spin_loop();
    }
    defmt::warn!("selftest: SMMU {=u64} fails closed; every stream it serves aborts from now on", n);
    if let Some(k) = crate::runtime::kernel() {
        crate::ownership::fail_smmu(k, &mut k.isolation.lock(), n as usize, "selftest fail-closed");
    }
}
