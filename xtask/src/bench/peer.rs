//! `cargo xtask bench --peer linux`: bulkhead beside Linux's own
//! arm-smmu-v3 driver (issue 17). The same Debian kernel boots bare on the
//! same QEMU machine with an NVMe at 00:02.0
//! ([`bulkhead_tests::scenarios::linux_peer::peer_bare`]), and QEMU's trace
//! of that one run gives Linux's figures:
//!
//! - entry to SMMUEN: the first CR0 write with SMMUEN set, placed among the
//!   console lines (QEMU's `pl011_write` trace point in the same ordered
//!   log); the printk timestamps of the lines either side bound it, and a
//!   `/dev/kmsg` line carrying the counter ties printk's clock to the
//!   counter (under `-icount shift=0` one tick is one instruction). Until
//!   then streams bypass: GBPA is never written, QEMU's reset value
//!   (bypass) holds, while the same trace shows Linux's other register
//!   writes.
//! - attach of the NVMe's first domain (nvme bind), DMA domain → blocking
//!   domain (vfio-pci bound and a VFIO user claiming the group: binding
//!   vfio-pci alone changes no domain) and back (the user lets go), the
//!   nvme rebind: commands and CMD_SYNCs between the init script's marks,
//!   configuration (STE/CD invalidations, TLBI by ASID, prefetch) apart
//!   from the TLBI_NH_VA + CMD_SYNC of DMA unmaps;
//! - per MiB of NVMe I/O (4 MiB written, synced, 4 MiB read back):
//!   commands and CMD_SYNCs of the write and read window over 8 MiB.
//!
//! Bulkhead's side comes from its own bench runs, counted by the existing
//! sections: boot to abort from the demo boot ([`super::boot`]), release
//! and assignment from a one-StreamID reassignment ([`super::reassign`]);
//! per MiB of NVMe I/O from `linux-nvme`'s machine (Debian's Linux in
//! partition `storage` with the NVMe at 00:02.0,
//! [`bulkhead_tests::scenarios::linux_passthrough::bench_nvme`]): the same
//! [`window`] between the guest's `disk-write` and `disk-read` marks,
//! placed among the commands by decoding the kernel's log from the same
//! `pl011_write` trace ([`Trace::log_lines`]). The boot's attach of the
//! NVMe's StreamID, counted in the same trace ([`attach_commands`]), shows
//! that the run would have seen commands had there been any.

use super::reassign::Cost;
use super::{thousands, Figure, Report, Table};
use bulkhead_tests::linux::console::MARK;
use bulkhead_tests::linux::disk::{self, phase, IO_BYTES};
use bulkhead_tests::qemu::Outcome;
use bulkhead_tests::scenarios::linux_passthrough::NVME_SID as PARTITION_NVME_SID;
use bulkhead_tests::scenarios::linux_peer::{nvme_body_marks, peer_mark, NVME_SID};
use bulkhead_tests::trace::{kind, Trace};

const S: &str = "peer linux";
/// SMMU_CR0 and SMMU_GBPA offsets (SMMUv3 spec 6.3.9, 6.3.14), CR0.SMMUEN.
const CR0: u64 = 0x20;
const GBPA: u64 = 0x44;
const CR0_SMMUEN: u64 = 1;

/// A console line's printk timestamp in ns (`[    1.273705] ...`).
pub fn printk_ns(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (t, _) = rest.split_once(']')?;
    let (s, us) = t.trim().split_once('.')?;
    if us.len() != 6 {
        return None;
    }
    Some(s.parse::<u64>().ok()? * 1_000_000_000 + us.parse::<u64>().ok()? * 1000)
}

/// Where in the trace's events the first console line containing
/// `bulkhead-init: NAME ` (or `text` itself when `mark` is false) ended.
pub fn line_end(lines: &[(usize, String)], name: &str, mark: bool) -> Option<usize> {
    let needle = if mark { format!("{MARK}{name} ") } else { name.to_string() };
    lines.iter().find(|(_, l)| l.contains(&needle)).map(|(i, _)| *i)
}

/// Commands in `t.events[from..to]`: all of them, and the configuration
/// ones. Commands are counted with their CMD_SYNC, as the reassignment
/// section does; a batch (commands up to a CMD_SYNC) of nothing but
/// TLBI_NH_VA is a DMA unmap's, any other batch is configuration (its
/// TLBI_NH_VA, when it has some, left out of the configuration count).
pub fn window(t: &Trace, from: usize, to: usize) -> Split {
    let (mut all, mut config) = (Cost::default(), Cost::default());
    let mut batch_config = 0u64;
    for e in t.events.get(from..to.min(t.events.len())).unwrap_or(&[]) {
        if !kind::CMDQ_OPCODE.matches(e) {
            continue;
        }
        all.commands += 1;
        if e.args.contains("CMD_SYNC") {
            all.syncs += 1;
            if batch_config > 0 {
                config.commands += batch_config + 1;
                config.syncs += 1;
            }
            batch_config = 0;
        } else if !e.args.contains("TLBI_NH_VA") {
            batch_config += 1;
        }
    }
    // Commands after the window's last CMD_SYNC (a prefetch) still count.
    config.commands += batch_config;
    (all, config)
}

/// The boot's attach of StreamID `sid` in `t.events[..to]`: the batches
/// (commands up to a CMD_SYNC) that invalidate its STE (CFGI_STE of it, or
/// a CFGI_STE_RANGE that covers it short of CFGI_ALL), commands counted
/// with their CMD_SYNC as in [`window`].
pub fn attach_commands(t: &Trace, sid: u64, to: usize) -> Cost {
    let mut total = Cost::default();
    let (mut cmds, mut ours) = (0u64, false);
    for e in t.events.get(..to.min(t.events.len())).unwrap_or(&[]) {
        if kind::CFGI_STE.matches(e) {
            ours |= e.field("streamid") == Some(sid);
            continue;
        }
        if e.name == "smmuv3_cmdq_cfgi_ste_range" {
            if let (Some(a), Some(b)) = (e.field("start"), e.field("end")) {
                ours |= !(a == 0 && b >= u64::from(u32::MAX)) && (a..=b).contains(&sid);
            }
            continue;
        }
        if !kind::CMDQ_OPCODE.matches(e) {
            continue;
        }
        cmds += 1;
        if e.args.contains("CMD_SYNC") {
            if ours {
                total.commands += cmds;
                total.syncs += 1;
            }
            (cmds, ours) = (0, false);
        }
    }
    total
}

/// Linux's SMMUEN: the index of the first CR0 write that sets it.
pub fn smmuen_at(t: &Trace) -> Option<usize> {
    t.events.iter().position(|e| kind::WRITE_MMIO.matches(e) && e.field("addr") == Some(CR0) && e.field("val").is_some_and(|v| v & CR0_SMMUEN != 0))
}

/// Bounds on the counter at trace position `at`: the printk times of the
/// timestamped console lines that ended before and after it, moved onto
/// the counter by `offset` (counter − printk ns at the kmsg line).
pub fn bounds(lines: &[(usize, String)], at: usize, offset: i64) -> Option<(u64, u64)> {
    let before = lines.iter().rev().filter(|(i, _)| *i < at).find_map(|(_, l)| printk_ns(l))?;
    let after = lines.iter().filter(|(i, _)| *i > at).find_map(|(_, l)| printk_ns(l))?;
    let shift = |v: u64| u64::try_from(v as i64 + offset).ok();
    Some((shift(before)?, shift(after)?))
}

/// counter − printk ns, from the kmsg line (`[    1.273705] bulkhead-init: kmsg ticks=1354915553`).
pub fn kmsg_offset(lines: &[(usize, String)]) -> Option<i64> {
    let needle = format!("{MARK}{} ticks=", peer_mark::KMSG);
    lines.iter().find_map(|(_, l)| {
        let ticks: u64 = l.split_once(&needle)?.1.trim().parse().ok()?;
        Some(ticks as i64 - printk_ns(l)? as i64)
    })
}

/// All commands of a window, and its configuration commands ([`window`]).
pub type Split = (Cost, Cost);

/// Linux's figures from the peer run.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Entry → SMMUEN, bounds in instructions.
    pub smmuen: Option<(u64, u64)>,
    /// GBPA writes before SMMUEN, other SMMU register writes before it,
    /// and DMA seen by the disabled SMMU (passed in bypass).
    pub gbpa_writes: usize,
    pub other_writes: usize,
    pub disabled_dma: usize,
    /// (all, configuration) commands of each operation.
    pub attach: Option<Split>,
    pub unbind: Option<Split>,
    pub blocking: Option<Split>,
    pub back: Option<Split>,
    pub rebind: Option<Split>,
    /// All commands of the I/O window, and the NVMe's translations in it.
    pub io: Option<Cost>,
    pub io_translations: usize,
}

/// Bulkhead's figures from `linux-nvme`'s machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ours {
    /// All commands between the `disk-write` and `disk-read` marks.
    pub io: Cost,
    /// The boot's attach of the NVMe's StreamID, before `disk-write`.
    pub attach: Cost,
    /// The NVMe's translations in the I/O window.
    pub io_translations: usize,
}

/// Reads the `linux-nvme` bench run: its log, and its trace with the
/// kernel's log decoded from it by `decoder`.
pub fn measure_ours(o: &Outcome, decoder: &bulkhead_tests::log::Decoder) -> Result<Ours, String> {
    if o.status != Some(0) {
        return Err(format!("the linux-nvme run exited with {:?}", o.status));
    }
    let want = disk::expected(IO_BYTES);
    let (w, r) = disk::sums(o.log.iter().map(|l| l.message.as_str()));
    if w.as_deref() != Some(&want) || r.as_deref() != Some(&want) {
        return Err(format!("storage's NVMe I/O did not read back its pattern: wrote {w:?}, read {r:?}, expected {want}"));
    }
    let t = &o.trace;
    t.traced_as(kind::UART_WRITE)?;
    t.traced_as(kind::CMDQ_OPCODE)?;
    let lines = t.log_lines(decoder);
    if lines.is_empty() {
        return Err("no kernel log line decoded from QEMU's trace (pl011_write)".into());
    }
    let at = |name: &str| line_end(&lines, name, true).ok_or_else(|| format!("storage's `{name}` mark is not among the log lines decoded from QEMU's trace"));
    let (from, to) = (at(phase::WRITE)?, at(phase::READ)?);
    let io_translations = t.events[from..to].iter().filter(|e| kind::TRANSLATE_SUCCESS.matches(e) && e.field("sid") == Some(PARTITION_NVME_SID)).count();
    Ok(Ours { io: window(t, from, to).0, attach: attach_commands(t, PARTITION_NVME_SID, from), io_translations })
}

/// Linux / bulkhead of (commands, CMD_SYNCs) per MiB, honest when
/// bulkhead's are 0.
fn io_ratio((lc, ls): (f64, f64), (oc, os): (f64, f64)) -> String {
    match (lc > 0.0 || ls > 0.0, oc > 0.0 || os > 0.0) {
        (_, true) => format!("{} commands, {} CMD_SYNC", ratio(lc, oc), ratio(ls, os)),
        (true, false) => "∞ (bulkhead issues none)".into(),
        (false, false) => "- (neither issues any)".into(),
    }
}

/// Reads the peer run's trace.
pub fn measure(o: &Outcome) -> Result<Peer, String> {
    if o.status != Some(0) {
        return Err(format!("the bare Linux run exited with {:?}", o.status));
    }
    let t = &o.trace;
    t.traced_as(kind::UART_WRITE)?;
    t.traced_as(kind::CMDQ_OPCODE)?;
    let lines = t.uart_lines();
    if lines.is_empty() {
        return Err("QEMU's trace has no console line (pl011_write)".into());
    }
    let want = disk::expected(IO_BYTES);
    let (w, r) = disk::sums(lines.iter().map(|(_, l)| l.as_str()));
    if w.as_deref() != Some(&want) || r.as_deref() != Some(&want) {
        return Err(format!("the NVMe I/O did not read back its pattern: wrote {w:?}, read {r:?}, expected {want}"));
    }
    let mut p = Peer::default();
    let en = smmuen_at(t).ok_or("Linux never set SMMUEN in QEMU's trace")?;
    p.smmuen = kmsg_offset(&lines).and_then(|off| bounds(&lines, en, off));
    for e in t.events[..en].iter().filter(|e| kind::WRITE_MMIO.matches(e)) {
        if e.field("addr") == Some(GBPA) {
            p.gbpa_writes += 1;
        } else {
            p.other_writes += 1;
        }
    }
    p.disabled_dma = t.events[..en].iter().filter(|e| kind::TRANSLATE_DISABLE.matches(e) || kind::TRANSLATE_BYPASS.matches(e)).count();
    let at = |name: &str| line_end(&lines, name, true);
    let between = |a: Option<usize>, b: Option<usize>| Some(window(t, a?, b?));
    let [insmod, loaded, found] = nvme_body_marks();
    // nvme probes asynchronously: its attach ends when the disk is there.
    p.attach = between(at(insmod).or(at(loaded)), at(found));
    let (rebind, bound, claim, released, rebound) =
        (at(peer_mark::REBIND), at(peer_mark::VFIO_BOUND), at(peer_mark::CLAIM), at(peer_mark::RELEASED), at(peer_mark::REBOUND));
    let claimed = line_end(&lines, &format!("{} 0", peer_mark::CLAIMED), false);
    p.unbind = between(rebind, bound);
    p.blocking = between(claim, claimed);
    p.back = between(claimed, released);
    p.rebind = between(released, rebound);
    let (io_from, io_to) = (at(phase::WRITE), at(phase::READ));
    p.io = between(io_from, io_to).map(|(all, _)| all);
    if let (Some(a), Some(b)) = (io_from, io_to) {
        p.io_translations = t.events[a..b].iter().filter(|e| kind::TRANSLATE_SUCCESS.matches(e) && e.field("sid") == Some(NVME_SID)).count();
    }
    Ok(p)
}

fn cost(c: Cost) -> String {
    format!("{} commands, {} CMD_SYNC", c.commands, c.syncs)
}

fn ratio(linux: f64, ours: f64) -> String {
    if ours > 0.0 && linux / ours >= 1000.0 {
        format!("{}×", thousands((linux / ours).round() as u64))
    } else if ours > 0.0 {
        format!("{:.1}×", linux / ours)
    } else {
        "-".into()
    }
}

/// The section's figures and its side-by-side table. `abort`, `isolation`:
/// bulkhead's boot to abort and to SMMUEN; `ours`: its (release,
/// assignment) of one StreamID; `nvme`: its `linux-nvme` run ([`measure_ours`]).
pub fn report(
    o: &Result<Outcome, String>,
    abort: Option<u64>,
    isolation: Option<u64>,
    ours: (Option<Cost>, Option<Cost>),
    nvme: &Result<Ours, String>,
    r: &mut Report,
) {
    let p = match o.as_ref().map_err(Clone::clone).and_then(measure) {
        Ok(p) => p,
        Err(e) => {
            r.figures.push(Figure::missing(S, "Linux's arm-smmu-v3 driver, bare on the same machine", e));
            return;
        }
    };
    let mut t = Table::new(
        "Side by side: Linux's own arm-smmu-v3 driver (Debian's kernel bare on the same QEMU virt, NVMe at 00:02.0, one run's trace) and bulkhead; commands counted with their CMD_SYNC",
        &["what", "Linux", "bulkhead", "Linux / bulkhead"],
    );
    // Boot.
    let name = "Linux: entry to SMMUEN (streams bypass until then)";
    match p.smmuen {
        Some((lo, hi)) => {
            let mid = (lo + hi) / 2;
            let bypass = if p.gbpa_writes == 0 {
                format!("GBPA never written ({} other SMMU register writes before SMMUEN): reset value, bypass", p.other_writes)
            } else {
                format!("GBPA written {} times", p.gbpa_writes)
            };
            r.figures.push(
                Figure::new(
                    S,
                    name,
                    mid as f64,
                    format!("{} – {} instructions; {bypass}; {} DMA passed the disabled SMMU", thousands(lo), thousands(hi), p.disabled_dma),
                )
                .with("low", lo as f64)
                .with("high", hi as f64)
                .with("gbpa_writes", p.gbpa_writes as f64),
            );
            let b = abort.map(|a| format!("{} instructions to abort (GBPA.ABORT)", thousands(a))).unwrap_or_else(|| "not measured".into());
            let q = abort.map(|a| ratio(mid as f64, a as f64)).unwrap_or_else(|| "-".into());
            t.rows.push(vec!["entry → DMA closed".into(), format!("{} – {} instructions to SMMUEN (bypass before)", thousands(lo), thousands(hi)), b, q]);
            let b = isolation.map(|a| format!("{} instructions to SMMUEN (every stream aborting)", thousands(a))).unwrap_or_else(|| "not measured".into());
            let q = isolation.map(|a| ratio(mid as f64, a as f64)).unwrap_or_else(|| "-".into());
            t.rows.push(vec!["entry → SMMUEN".into(), format!("{} – {} instructions", thousands(lo), thousands(hi)), b, q]);
            for (what, ours) in [("boot to abort", abort), ("boot to isolation", isolation)] {
                if let Some(a) = ours {
                    r.figures.push(Figure::new(S, format!("Linux's entry to SMMUEN / bulkhead's {what}"), mid as f64 / a as f64, ratio(mid as f64, a as f64)));
                }
            }
        }
        None => r.figures.push(Figure::missing(S, name, "no console line with a printk time either side of SMMUEN, or no kmsg line")),
    }
    // Domains.
    let (release, assign) = ours;
    let rows: [(&str, Option<Split>, Option<Cost>); 5] = [
        ("first domain attach (nvme bind)", p.attach, assign),
        ("nvme unbind + vfio-pci bind (no domain change)", p.unbind, None),
        ("DMA domain → blocking (VFIO user claims the group)", p.blocking, release),
        ("blocking → DMA domain (VFIO user lets go)", p.back, assign),
        ("vfio-pci unbind + nvme bind again", p.rebind, None),
    ];
    for (what, linux, ours) in rows {
        let name = format!("Linux: {what}");
        match linux {
            Some((all, config)) => {
                r.figures.push(
                    Figure::new(
                        S,
                        &name,
                        config.syncs as f64,
                        format!("{} for configuration; {} in all (with DMA unmaps' TLBI_NH_VA)", cost(config), cost(all)),
                    )
                    .with("config_commands", config.commands as f64)
                    .with("all_commands", all.commands as f64)
                    .with("all_syncs", all.syncs as f64),
                );
                let b = ours.map(cost).unwrap_or_else(|| "-".into());
                let q = ours
                    .map(|o| format!("{} commands, {} CMD_SYNC", ratio(config.commands as f64, o.commands as f64), ratio(config.syncs as f64, o.syncs as f64)))
                    .unwrap_or_else(|| "-".into());
                t.rows.push(vec![what.into(), format!("{} (all: {})", cost(config), cost(all)), b, q]);
            }
            None => r.figures.push(Figure::missing(S, name, "a mark is missing from the console lines in QEMU's trace")),
        }
    }
    // I/O.
    let mib = (2 * IO_BYTES) as f64 / f64::from(1 << 20);
    let per = |c: Cost| (c.commands as f64 / mib, c.syncs as f64 / mib);
    let name = "Linux: SMMU commands per MiB of NVMe I/O";
    let linux = p.io.map(per);
    match p.io {
        Some(c) => {
            let (per_c, per_s) = per(c);
            r.figures.push(
                Figure::new(
                    S,
                    name,
                    per_c,
                    format!(
                        "{per_c:.1} commands, {per_s:.1} CMD_SYNC per MiB ({} over {mib:.0} MiB written and read; {} NVMe translations)",
                        cost(c),
                        p.io_translations
                    ),
                )
                .with("syncs_per_mib", per_s),
            );
        }
        None => r.figures.push(Figure::missing(S, name, "the I/O marks are missing from the console lines in QEMU's trace")),
    }
    let name = "bulkhead: SMMU commands per MiB of NVMe I/O (Linux in a partition)";
    let ours = match nvme {
        Ok(n) if n.attach.commands == 0 => {
            r.figures.push(Figure::missing(
                S,
                name,
                format!("no attach command for StreamID {PARTITION_NVME_SID:#x} counted before the I/O: the trace could not show commands"),
            ));
            None
        }
        Ok(n) => {
            let (per_c, per_s) = per(n.io);
            let vs = linux.map(|l| format!("; Linux / bulkhead: {}", io_ratio(l, (per_c, per_s)))).unwrap_or_default();
            r.figures.push(
                Figure::new(
                    S,
                    name,
                    per_c,
                    format!(
                        "{per_c:.1} commands, {per_s:.1} CMD_SYNC per MiB ({} over {mib:.0} MiB written and read; {} NVMe translations); \
                         the same trace counts the boot's attach of StreamID {PARTITION_NVME_SID:#x}: {}{vs}",
                        cost(n.io),
                        n.io_translations,
                        cost(n.attach)
                    ),
                )
                .with("syncs_per_mib", per_s)
                .with("attach_commands", n.attach.commands as f64)
                .with("attach_syncs", n.attach.syncs as f64),
            );
            Some((per_c, per_s, n.attach))
        }
        Err(e) => {
            r.figures.push(Figure::missing(S, name, e));
            None
        }
    };
    if let Some((lc, ls)) = linux {
        let (b, q) = match ours {
            Some((oc, os, attach)) => (
                format!("{oc:.1} commands, {os:.1} CMD_SYNC (boot attach of StreamID {PARTITION_NVME_SID:#x} in the same trace: {})", cost(attach)),
                io_ratio((lc, ls), (oc, os)),
            ),
            None => ("not measured".into(), "-".into()),
        };
        t.rows.push(vec!["per MiB of NVMe I/O".into(), format!("{lc:.1} commands, {ls:.1} CMD_SYNC"), b, q]);
    }
    r.tables.push(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uart(text: &str) -> String {
        text.bytes().map(|c| format!("pl011_write addr 0x000 value 0x{c:08x} reg DR\n")).collect()
    }

    #[test]
    fn printk_times_and_the_kmsg_offset() {
        assert_eq!(printk_ns("[    1.273705] bulkhead-init: kmsg ticks=1354915553"), Some(1_273_705_000));
        assert_eq!(printk_ns("[    0.000000] Booting"), Some(0));
        assert_eq!(printk_ns("bulkhead-init: init ticks=5"), None);
        assert_eq!(printk_ns("[ 1.27] short"), None);
        let lines = vec![(3, "[    1.273705] bulkhead-init: kmsg ticks=1354915553".to_string())];
        assert_eq!(kmsg_offset(&lines), Some(1_354_915_553 - 1_273_705_000));
        assert_eq!(kmsg_offset(&[(1, "bulkhead-init: kmsg ticks=9".into())]), None);
    }

    #[test]
    fn smmuen_is_bounded_by_the_lines_around_it() {
        let text = format!(
            "{}smmuv3_write_mmio addr: 0x20 val:0x0 size: 0x4(0)\n{}smmuv3_write_mmio addr: 0x20 val:0xd size: 0x4(0)\n{}{}",
            uart("[    0.400000] arm-smmu-v3: probing\n"),
            uart("no time\n"),
            uart("cont\n"),
            uart("[    0.400500] next\n")
        );
        let t = Trace::parse(&text);
        let lines = t.uart_lines();
        let en = smmuen_at(&t).unwrap();
        assert_eq!(t.events[en].field("val"), Some(0xd));
        assert_eq!(bounds(&lines, en, 1000), Some((400_001_000, 400_501_000)));
        assert_eq!(bounds(&lines[..2], en, 0), None, "no timestamped line after");
    }

    #[test]
    fn windows_split_configuration_from_unmaps() {
        let text = format!(
            "{}{}{}",
            uart("bulkhead-init: a ticks=1\n"),
            "smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_ASID\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x10\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_PREFETCH_CONFIG\nsmmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_NH_VA\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_PREFETCH_CONFIG\n",
            uart("bulkhead-init: b ticks=2\n")
        );
        let t = Trace::parse(&text);
        let lines = t.uart_lines();
        let (a, b) = (line_end(&lines, "a", true).unwrap(), line_end(&lines, "b", true).unwrap());
        let (all, config) = window(&t, a, b);
        assert_eq!(all, Cost { commands: 10, syncs: 4 });
        // ASID+SYNC, STE+SYNC, PREFETCH+SYNC, the trailing PREFETCH.
        assert_eq!(config, Cost { commands: 7, syncs: 3 });
        assert_eq!(window(&t, b, a), (Cost::default(), Cost::default()));
        assert_eq!(line_end(&lines, "c", true), None);
    }

    #[test]
    fn the_attach_of_one_streamid_is_counted_with_its_sync() {
        let text = "smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE_RANGE\nsmmuv3_cmdq_cfgi_ste_range start=0x0 - end=0xffffffff\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x8\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x10\nsmmuv3_cmdq_opcode <--- SMMU_CMD_TLBI_S12_VMALL\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE_RANGE\nsmmuv3_cmdq_cfgi_ste_range start=0x10 - end=0x11\nsmmuv3_cmdq_opcode <--- SMMU_CMD_SYNC\n\
             smmuv3_cmdq_opcode <--- SMMU_CMD_CFGI_STE\nsmmuv3_cmdq_cfgi_ste streamid= 0x10\n";
        let t = Trace::parse(text);
        // CFGI_ALL and StreamID 0x8's batch are not 0x10's; the trailing
        // command has no CMD_SYNC yet.
        assert_eq!(attach_commands(&t, 0x10, t.events.len()), Cost { commands: 5, syncs: 2 });
        assert_eq!(attach_commands(&t, 0x10, 10), Cost { commands: 3, syncs: 1 });
        assert_eq!(attach_commands(&t, 0x10, 4), Cost::default());
        assert_eq!(attach_commands(&t, 0x20, t.events.len()), Cost::default());
    }

    #[test]
    fn the_io_ratio_does_not_divide_by_zero() {
        assert_eq!(io_ratio((3.0, 1.0), (0.0, 0.0)), "∞ (bulkhead issues none)");
        assert_eq!(io_ratio((0.0, 0.0), (0.0, 0.0)), "- (neither issues any)");
        assert_eq!(io_ratio((3.0, 1.0), (2.0, 1.0)), "1.5× commands, 1.0× CMD_SYNC");
    }
}
