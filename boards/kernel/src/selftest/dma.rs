//! SMMU self-tests the QEMU scenarios drive through boot arguments:
//!
//! - `bulkhead.selftest=dma`: the first `edu` device gets a translation
//!   domain (stage 2 when the SMMU has it, else stage 1) with a 2 MiB window
//!   onto a kernel buffer; DMA inside the window must land (data checked),
//!   DMA outside must abort with an F_TRANSLATION event naming the device's
//!   StreamID and the address. Attach and detach costs are logged.
//!
//!   For the per-DMA benchmark (`cargo xtask bench`):
//!   `bulkhead.dma-stage=1|2|nested` picks the domain's stage (nested: a
//!   stage-1 domain inside a stage-2 domain that maps RAM identity),
//!   `bulkhead.dma-map=page|block` maps the window as 4 KiB pages or (the
//!   default) the largest blocks, and `bulkhead.dma-transfers=N` adds N
//!   transfers to N distinct pages of the window after the first checks.
//! - `bulkhead.selftest=cmdq-error`: an illegal command is injected; the
//!   command-queue error must be reported and repaired, and later commands
//!   must still complete.

use crate::smmus::SmmuDriver;
use platform::pci::{self, Bdf, ConfigSpace};
use platform::{ExitCode, PhysAddr};
use smmu::{DomainConfig, EventType, Iova, Prot, StagePreference, StreamId};

/// The DMA window the test maps (device address) and its size.
const WINDOW: u64 = 0x8000_0000;
const WINDOW_SIZE: u64 = 2 << 20;
/// Bytes per transfer (QEMU records one event per 4 bytes of a fault).
pub const LEN: u64 = 64;

/// Runs one edu DMA and waits (bounded, with a back-off: a tight MMIO poll
/// is slow under TCG) for the device to finish.
fn dma(bar: PhysAddr, ram: u64, to_ram: bool) -> Result<(), ExitCode> {
    let device = super::edu_at(bar);
    device.start_dma(ram, edu::BUFFER, LEN, to_ram);
    for _ in 0..2000 {
        if !device.dma_busy() {
            return Ok(());
        }
        platform::time::sleep_us(1000);
    }
    defmt::error!("dma-test: edu DMA did not complete within 2 s");
    Err(ExitCode::SelfTestFailed)
}

/// Which translation the DMA test's domain uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DmaStage {
    /// Stage 2 when the SMMU has it, else stage 1.
    Auto,
    /// Stage 1 (CD + ASID).
    Stage1,
    /// Stage 2 (VMID).
    Stage2,
    /// Stage 1 nested inside a stage 2 that maps RAM identity.
    Nested,
}

/// Boot-argument options of the DMA test (see the module documentation).
#[derive(Clone, Copy)]
pub struct DmaOptions {
    /// The domain's stage.
    pub stage: DmaStage,
    /// Map the window page by page instead of with the largest blocks.
    pub pages: bool,
    /// Extra transfers to distinct pages (benchmark), at most [`MAX_TRANSFERS`].
    pub transfers: u64,
}

/// Pages of the window the extra transfers may use (the first two belong
/// to the data check).
pub const MAX_TRANSFERS: u64 = WINDOW_SIZE / 0x1000 - 2;

impl DmaOptions {
    /// Reads `bulkhead.dma-*` from the boot arguments.
    pub fn from_bootargs(bootargs: &str) -> DmaOptions {
        let mut o = DmaOptions { stage: DmaStage::Auto, pages: false, transfers: 0 };
        for a in bootargs.split_ascii_whitespace() {
            match a {
                "bulkhead.dma-stage=1" => o.stage = DmaStage::Stage1,
                "bulkhead.dma-stage=2" => o.stage = DmaStage::Stage2,
                "bulkhead.dma-stage=nested" => o.stage = DmaStage::Nested,
                "bulkhead.dma-map=page" => o.pages = true,
                "bulkhead.dma-map=block" => o.pages = false,
                _ => {
                    if let Some(n) = a.strip_prefix("bulkhead.dma-transfers=").and_then(|n| n.parse::<u64>().ok()) {
                        o.transfers = n.min(MAX_TRANSFERS);
                    }
                }
            }
        }
        o
    }
}

fn fail(what: &'static str, e: smmu::Error) -> ExitCode {
    defmt::error!("dma-test: {=str}: {}", what, e);
    ExitCode::SelfTestFailed
}

/// The DMA test on the edu at `bdf` (BAR0 at `bar`, StreamID `sid`);
/// `ram` is what a nested test's stage 2 maps.
pub fn dma_window(
    smmu: &mut SmmuDriver,
    cs: &mut impl ConfigSpace,
    bdf: Bdf,
    bar: PhysAddr,
    sid: StreamId,
    opts: DmaOptions,
    ram: &[platform::PhysRange],
) -> Result<(), ExitCode> {
    let buf = platform::memory::alloc_zeroed(WINDOW_SIZE, WINDOW_SIZE).ok_or(ExitCode::PlatformError)?;
    let stage = match opts.stage {
        DmaStage::Auto => StagePreference::Auto,
        DmaStage::Stage1 | DmaStage::Nested => StagePreference::Stage1,
        DmaStage::Stage2 => StagePreference::Stage2,
    };
    let mut domain = smmu.create_domain(DomainConfig { stage, ..DomainConfig::default() }).map_err(|e| fail("create domain", e))?;
    if opts.pages {
        for off in (0..WINDOW_SIZE).step_by(0x1000) {
            smmu.map(&mut domain, Iova(WINDOW + off), smmu::PhysAddr(buf.0 + off), 0x1000, Prot::RAM_RW).map_err(|e| fail("map", e))?;
        }
    } else {
        smmu.map(&mut domain, Iova(WINDOW), smmu::PhysAddr(buf.0), WINDOW_SIZE, Prot::RAM_RW).map_err(|e| fail("map", e))?;
    }
    // Nested: the stage-1 tables and CD the driver allocated are IPAs, so
    // the outer stage 2 maps all RAM identity (largest blocks).
    let mut outer = if opts.stage == DmaStage::Nested {
        let cfg = DomainConfig { stage: StagePreference::Stage2, ..DomainConfig::default() };
        let mut s2 = smmu.create_domain(cfg).map_err(|e| fail("create stage-2 domain", e))?;
        for r in ram {
            smmu.map(&mut s2, Iova(r.start.0), smmu::PhysAddr(r.start.0), r.size(), Prot::RAM_RW).map_err(|e| fail("map RAM", e))?;
        }
        Some(s2)
    } else {
        None
    };
    defmt::info!("dma-test: edu {} StreamID {=u32:#x}: {} domain, window {=u64:#x}+{=u64:#x} -> {}", bdf, sid.0, domain.stage(), WINDOW, WINDOW_SIZE, buf);
    defmt::info!(
        "dma-test: window mapped as {=str}{=str}",
        if opts.pages { "4 KiB pages" } else { "the largest blocks" },
        if outer.is_some() { ", stage 1 nested in a stage-2 domain mapping RAM identity" } else { "" }
    );
    let before = smmu.stats();
    match &mut outer {
        Some(s2) => smmu.attach_nested(&mut domain, s2, &[sid]).map_err(|e| fail("attach nested", e))?,
        None => smmu.attach(&domain, &[sid]).map_err(|e| fail("attach", e))?,
    }
    let attach = smmu.stats() - before;
    // I4: bus mastering only once the STE is live.
    pci::set_memory_decode(cs, bdf, true).map_err(|_| ExitCode::SelfTestFailed)?;
    pci::set_bus_master(cs, bdf, true).map_err(|_| ExitCode::SelfTestFailed)?;
    if !super::edu_at(bar).is_edu() {
        defmt::error!("dma-test: the device at {} does not identify as an edu", bar);
        return Err(ExitCode::SelfTestFailed);
    }

    let pattern: [u8; LEN as usize] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(0x5a));
    // SAFETY: `buf` is ours (fresh frames, identity-mapped); the device
    // reaches it only through the window.
    unsafe { core::ptr::copy_nonoverlapping(pattern.as_ptr(), buf.0 as *mut u8, pattern.len()) };
    dma(bar, WINDOW, false)?;
    dma(bar, WINDOW + 0x1000, true)?;
    // SAFETY: as above; the device finished writing.
    let landed = unsafe { core::slice::from_raw_parts((buf.0 + 0x1000) as *const u8, LEN as usize) };
    if landed != pattern {
        defmt::error!("dma-test: DMA inside the window did not land: {=[u8]:x}", landed);
        return Err(ExitCode::SelfTestFailed);
    }
    defmt::info!("dma-test: DMA inside the window landed, {=u64} bytes verified", LEN);
    if opts.transfers > 0 {
        // One device-to-RAM transfer per page, pages 2.. of the window: each
        // touches a page no earlier transfer did.
        for i in 0..opts.transfers {
            dma(bar, WINDOW + (2 + i) * 0x1000, true)?;
        }
        defmt::info!("dma-bench: {=u64} transfers of {=u64} bytes to distinct 4 KiB pages done", opts.transfers, LEN);
    }

    let outside = WINDOW + WINDOW_SIZE + 0x1000;
    dma(bar, outside, true)?;
    let mut translation_faults = 0u32;
    smmu.drain_events(256, |e| {
        if e.event_type == EventType::F_TRANSLATION && e.stream_id == sid && e.input_addr.is_some_and(|a| a.0 >= outside && a.0 < outside + LEN) {
            translation_faults += 1;
        }
        if translation_faults <= 1 || e.event_type != EventType::F_TRANSLATION {
            defmt::info!(
                "dma-test: event {} StreamID {=u32:#x} address {=u64:#x} {=str}",
                e.event_type,
                e.stream_id.0,
                e.input_addr.map(|a| a.0).unwrap_or(0),
                match e.read {
                    Some(true) => "read",
                    Some(false) => "write",
                    None => "-",
                }
            );
        }
    })
    .map_err(|e| fail("drain events", e))?;
    if translation_faults == 0 {
        defmt::error!("dma-test: DMA outside the window raised no F_TRANSLATION event");
        return Err(ExitCode::SelfTestFailed);
    }
    defmt::info!("dma-test: DMA outside the window aborted: {=u32} F_TRANSLATION events for StreamID {=u32:#x}", translation_faults, sid.0);

    // I3: bus mastering off, then abort STE with invalidation.
    pci::set_bus_master(cs, bdf, false).map_err(|_| ExitCode::SelfTestFailed)?;
    let before = smmu.stats();
    smmu.detach(&[sid]).map_err(|e| fail("detach", e))?;
    let detach = smmu.stats() - before;
    smmu.destroy_domain(domain).map_err(|(_, e)| fail("destroy domain", e))?;
    if let Some(s2) = outer {
        smmu.destroy_domain(s2).map_err(|(_, e)| fail("destroy stage-2 domain", e))?;
    }
    defmt::info!(
        "dma-test: attach of 1 stream: {=u64} commands, {=u64} CMD_SYNC; detach: {=u64} commands, {=u64} CMD_SYNC",
        attach.commands,
        attach.syncs,
        detach.commands,
        detach.syncs
    );
    Ok(())
}

/// Injects an illegal command and shows the queue recovering.
pub fn cmdq_error(smmu: &mut SmmuDriver) -> Result<(), ExitCode> {
    // Opcode 0x7f is not an architected command (IHI 0070 §4.1): CERROR_ILL.
    const ILLEGAL: [u64; 2] = [0x7f, 0];
    defmt::warn!("cmdq-test: injecting illegal command opcode 0x7f");
    match smmu.diagnostic_submit_raw(ILLEGAL) {
        Err(e) => defmt::info!("cmdq-test: the SMMU refused it: {}", e),
        Ok(()) => {
            defmt::error!("cmdq-test: the illegal command completed");
            return Err(ExitCode::SelfTestFailed);
        }
    }
    let report = smmu.handle_gerror().map_err(|e| fail("gerror", e))?;
    defmt::info!("cmdq-test: after recovery GERROR {}", report);
    let before = smmu.stats();
    // Real commands after the repair: StreamID 0 (the host bridge, which
    // never masters) is attached to an empty domain — every access would
    // fault — and detached again: CFGI_STE, TLBI and CMD_SYNC each time.
    let domain = smmu.create_domain(DomainConfig::default()).map_err(|e| fail("create domain", e))?;
    smmu.attach(&domain, &[StreamId(0)]).map_err(|e| fail("attach after recovery", e))?;
    smmu.detach(&[StreamId(0)]).map_err(|e| fail("detach after recovery", e))?;
    smmu.destroy_domain(domain).map_err(|(_, e)| fail("destroy domain", e))?;
    let after = smmu.stats() - before;
    if after.syncs < 2 {
        defmt::error!("cmdq-test: commands after recovery did not complete");
        return Err(ExitCode::SelfTestFailed);
    }
    defmt::info!(
        "cmdq-test: commands after recovery completed: {=u64} commands, {=u64} CMD_SYNC; {=u64} command errors recovered in total",
        after.commands,
        after.syncs,
        smmu.stats().command_errors
    );
    Ok(())
}
