//! The SMMUs of the board: abort first, then bring-up with every stream
//! aborting, then events and global errors.

use crate::dma::KernelDma;
use arrayvec::ArrayVec;
use devicetree::dt::{SmmuNode, MAX_SMMUS};
use platform::time::Delay;
use platform::ExitCode;
use smmu::hal::VolatileMmio;

/// One SMMU brought up by the kernel.
pub type KernelSmmu = smmu::Smmu<VolatileMmio, KernelDma, Delay>;

/// An SMMU and the DT node it came from.
pub struct Iommu {
    /// DT facts (name, base, interrupts).
    pub node: SmmuNode,
    /// The driver.
    pub smmu: KernelSmmu,
    /// It failed closed (every stream aborts); it is not used again.
    pub failed: bool,
    /// The counter (CNTPCT_EL0) when bring-up returned: SMMUEN=1 with
    /// every stream aborting (the boot benchmark's isolation milestone).
    pub enabled_at: u64,
}

fn mmio(s: &SmmuNode) -> Result<VolatileMmio, ExitCode> {
    if s.regs.start.0 == 0 {
        defmt::error!("SMMU {=str}: register window at address 0", s.name.as_str());
        return Err(ExitCode::SmmuError);
    }
    // SAFETY: `regs` is the SMMU's 128 KiB register window from the DT
    // (checked to be that large); it is identity-mapped Device-nGnRE (or the
    // MMU is still off) and only this module touches it.
    Ok(unsafe { VolatileMmio::new(s.regs.start.0 as *mut u8) })
}

/// GBPA.ABORT=1 on one SMMU: until the driver enables it, any DMA aborts.
pub fn abort(s: &SmmuNode) -> Result<(), ExitCode> {
    smmu::gbpa_abort(&mmio(s)?, &mut Delay).map_err(|e| {
        defmt::error!("SMMU {=str} at {}: cannot set GBPA.ABORT: {}", s.name.as_str(), s.regs.start, e);
        ExitCode::SmmuError
    })
}

/// The SMMUs brought up, at most one per DT node (held without the heap:
/// the first bring-up runs before it exists).
pub type Iommus = ArrayVec<Iommu, MAX_SMMUS>;

/// SMMUs whose structures did not fit the memory at hand, still disabled
/// with GBPA aborting.
pub type Deferred = ArrayVec<SmmuNode, MAX_SMMUS>;

/// Brings each SMMU of `nodes` up with all streams aborting and SMMUEN=1,
/// into `out`; `evtq_log2` caps the event queue (tests use a small one).
/// Right after the abort this runs with the MMU off and no heap, from the
/// early arena (`dma`): an SMMU whose stream table and queues do not fit
/// there is returned, still aborting through GBPA, to be brought up from
/// the frame allocator once it exists. Logs only failures: [`report`]
/// says what was brought up, once the console's banner is out.
pub fn bring_up(nodes: &[SmmuNode], evtq_log2: Option<u8>, out: &mut Iommus) -> Result<Deferred, ExitCode> {
    let mut deferred = Deferred::new();
    for s in nodes {
        let mut config = smmu::Config { dma_coherent: s.coherent, wired_irqs: s.eventq.is_some(), ..smmu::Config::default() };
        if let Some(n) = evtq_log2 {
            config.evtq_log2_max = n;
        }
        match smmu::Smmu::new(mmio(s)?, KernelDma::default(), Delay, config) {
            Ok(smmu) => {
                let enabled_at = platform::time::ticks();
                out.try_push(Iommu { node: s.clone(), smmu, failed: false, enabled_at }).map_err(|_| ExitCode::SmmuError)?;
            }
            Err(smmu::Error::OutOfMemory) if !platform::memory::has_frames() => {
                defmt::info!(
                    "SMMU {=str}: no room in the early arena for its stream table and queues; it aborts through GBPA until the frame allocator can hold them",
                    s.name.as_str()
                );
                deferred.try_push(s.clone()).map_err(|_| ExitCode::SmmuError)?;
            }
            Err(e) => {
                defmt::error!("SMMU {=str}: bring-up failed, it stays disabled with GBPA aborting: {}", s.name.as_str(), e);
                return Err(ExitCode::SmmuError);
            }
        }
    }
    Ok(deferred)
}

/// Logs what bring-up made of each SMMU: features, stream table, queues,
/// the commands it took, and its DMA memory.
pub fn report(iommus: &[Iommu]) {
    for i in iommus {
        let (s, smmu) = (&i.node, &i.smmu);
        let f = smmu.features();
        let (cmdq, evtq) = smmu.queue_log2();
        defmt::info!(
            "SMMU {=str}: SMMUv3.{=u8}, stages {=str}, SIDSIZE {=u8}, {=str} stream table, OAS {=u8} bits, ASID {=u8} / VMID {=u8} bits, RIL {=bool}, {=str}",
            s.name.as_str(),
            f.arch_minor,
            match (f.stage1, f.stage2) {
                (true, true) => "1+2",
                (true, false) => "1",
                _ => "2",
            },
            f.sid_bits,
            if matches!(smmu.stream_table().format(), smmu::strtab::Format::TwoLevel) { "2-level" } else { "linear" },
            f.oas_bits,
            f.asid_bits,
            f.vmid_bits,
            f.ril,
            if smmu.coherent() { "coherent" } else { "non-coherent" }
        );
        defmt::info!(
            "SMMU {=str}: enabled, every stream aborts; cmdq 2^{=u8}, evtq 2^{=u8} entries; {=u64} commands, {=u64} CMD_SYNC",
            s.name.as_str(),
            cmdq,
            evtq,
            smmu.stats().commands,
            smmu.stats().syncs
        );
        defmt::debug!(
            "memory: SMMU {=str}: {=usize} bytes of DMA memory after bring-up (stream table and queues)",
            s.name.as_str(),
            smmu.dma().bytes
        );
    }
}
