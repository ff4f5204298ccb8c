//! The SMMUs of the board: abort first, then bring-up with every stream
//! aborting, then events and global errors.

use crate::dma::KernelDma;
use arrayvec::ArrayVec;
use devicetree::dt::{SmmuNode, MAX_SMMUS};
use platform::time::Delay;
use platform::ExitCode;
use smmu::hal::VolatileMmio;

/// One SMMU brought up by the kernel.
pub type SmmuDriver = smmu::Smmu<VolatileMmio, KernelDma, Delay>;

/// An SMMU of the DT, in DT order (groups name SMMUs by that index).
pub struct SmmuInstance {
    /// DT facts (name, base, interrupts).
    pub node: SmmuNode,
    /// The driver. `None` while deferred (aborting through GBPA until the
    /// frame allocator can hold its tables) or when bring-up failed (then
    /// `failed`, and the SMMU blocks every stream).
    pub smmu: Option<SmmuDriver>,
    /// It failed closed, or was never brought up: every stream aborts and
    /// nothing is attached through it again.
    pub failed: bool,
    /// The counter (CNTPCT_EL0) when bring-up returned: SMMUEN=1 with
    /// every stream aborting (the boot benchmark's isolation milestone).
    pub enabled_at: u64,
}

impl SmmuInstance {
    /// The driver, when the SMMU translates (brought up, not failed).
    pub fn usable(&mut self) -> Option<&mut SmmuDriver> {
        if self.failed {
            return None;
        }
        self.smmu.as_mut()
    }

    /// Fails the SMMU closed (GBPA abort, SMMUEN off): every stream of it
    /// aborts from now on. `true` when the SMMU confirmed it.
    pub fn fail_closed(&mut self) -> bool {
        self.failed = true;
        let name = self.node.name.as_str();
        match self.smmu.as_mut().map(|s| s.fail_closed()) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                defmt::error!("SMMU {=str}: could not fail closed: {}", name, e);
                false
            }
            None => mmio(&self.node).is_ok_and(|m| smmu::is_blocking(&m)),
        }
    }
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
/// A failure is logged; bring-up tries again and decides.
pub fn abort(s: &SmmuNode) {
    let Ok(m) = mmio(s) else { return };
    if let Err(e) = smmu::gbpa_abort(&m, &mut Delay) {
        defmt::error!("SMMU {=str} at {}: cannot set GBPA.ABORT: {}", s.name.as_str(), s.regs.start, e);
    }
}

/// The SMMUs of the DT, one slot per node (held without the heap: the first
/// bring-up runs before it exists).
pub type SmmuSlots = ArrayVec<SmmuInstance, MAX_SMMUS>;

/// Sizes of the SMMUs' structures the loader's `/chosen/bootargs` may cap
/// (tests and benchmarks use them; the defaults are the driver's).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// `bulkhead.evtq-log2=N`: at most 2^N event queue entries.
    pub evtq_log2: Option<u8>,
    /// `bulkhead.sid-bits=N`: the stream table covers at most N StreamID
    /// bits (8 or fewer: a linear table, whose assignments take two
    /// CMD_SYNCs instead of one).
    pub sid_bits: Option<u8>,
}

impl Sizes {
    /// Reads the two arguments from the boot arguments.
    pub fn from_bootargs(bootargs: &str) -> Sizes {
        let arg = |key: &str| bootargs.split_ascii_whitespace().find_map(|a| a.strip_prefix(key)?.parse().ok());
        Sizes { evtq_log2: arg("bulkhead.evtq-log2="), sid_bits: arg("bulkhead.sid-bits=") }
    }
}

/// Brings each SMMU up with all streams aborting and SMMUEN=1; `sizes`
/// caps its structures (tests use a small event queue). Each call makes a
/// slot for each node of `nodes` past the slots `out` has, in DT order
/// (the first call one per node, a later one for SMMUs an overlay enabled); it runs right
/// after the abort with the MMU off and no heap, from the early arena: an
/// SMMU whose stream table and queues do not fit stays deferred, aborting
/// through GBPA, and a later call (with frames) brings it up.
///
/// Every SMMU is tried, whatever happened to the others. One whose
/// bring-up fails but that blocks every stream (SMMUEN = 0, GBPA aborting)
/// is kept out of use; one that cannot be made to block at all fails the
/// boot — after every other SMMU was made safe. Logs only failures:
/// [`report`] says what was brought up, once the banner is out.
pub fn bring_up(nodes: &[SmmuNode], sizes: Sizes, out: &mut SmmuSlots) -> Result<(), ExitCode> {
    // Nodes past the slots made so far (the first call's, then any an
    // overlay enabled) get theirs, in order.
    for s in nodes.iter().skip(out.len()) {
        let slot = SmmuInstance { node: s.clone(), smmu: None, failed: false, enabled_at: 0 };
        out.try_push(slot).map_err(|_| ExitCode::SmmuError)?;
    }
    let mut unsafe_smmus = 0usize;
    for slot in out.iter_mut().filter(|i| i.smmu.is_none() && !i.failed) {
        let s = &slot.node;
        let mut config = smmu::Config { dma_coherent: s.coherent, wired_irqs: s.eventq.is_some(), ..smmu::Config::default() };
        if let Some(n) = sizes.evtq_log2 {
            config.evtq_log2_max = n;
        }
        if let Some(n) = sizes.sid_bits {
            config.max_sid_bits = n;
        }
        let Ok(regs) = mmio(s) else {
            slot.failed = true;
            unsafe_smmus += 1;
            continue;
        };
        match smmu::Smmu::new(regs, KernelDma::default(), Delay, config) {
            Ok(smmu) => {
                slot.enabled_at = platform::time::ticks();
                slot.smmu = Some(smmu);
            }
            Err(smmu::Error::OutOfMemory) if !platform::memory::has_frames() => {
                defmt::info!(
                    "SMMU {=str}: no room in the early arena for its stream table and queues; it aborts through GBPA until the frame allocator can hold them",
                    s.name.as_str()
                );
            }
            Err(e) => {
                slot.failed = true;
                if mmio(s).is_ok_and(|m| smmu::is_blocking(&m)) {
                    defmt::error!(
                        "SMMU {=str}: bring-up failed ({}); it stays disabled with GBPA aborting, every stream of it aborts and its devices cannot be assigned",
                        s.name.as_str(),
                        e
                    );
                } else {
                    defmt::error!(
                        "SMMU {=str}: bring-up failed ({}) and the SMMU cannot be made to block DMA (SMMUEN or GBPA did not take the abort)",
                        s.name.as_str(),
                        e
                    );
                    unsafe_smmus += 1;
                }
            }
        }
    }
    if unsafe_smmus > 0 {
        defmt::error!("cannot boot: {=usize} SMMU(s) could not be made safe; every other SMMU aborts all DMA", unsafe_smmus);
        return Err(ExitCode::SmmuError);
    }
    Ok(())
}

/// Logs what bring-up made of each SMMU: features, stream table, queues,
/// the commands it took, and its DMA memory.
pub fn report(smmus: &[SmmuInstance]) {
    for i in smmus {
        let Some(smmu) = &i.smmu else {
            defmt::info!("SMMU {=str}: not brought up; it blocks every stream", i.node.name.as_str());
            continue;
        };
        let s = &i.node;
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
        defmt::debug!("memory: SMMU {=str}: {=usize} bytes of DMA memory after bring-up (stream table and queues)", s.name.as_str(), smmu.dma().bytes);
    }
}
