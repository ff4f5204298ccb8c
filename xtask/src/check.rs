//! `cargo xtask check`: a partition configuration checked offline by the
//! kernel's own code.
//!
//! ```text
//! cargo xtask check --dtb BOARD.dtb|BOARD.dts --overlay A.dts|A.dtbo [--overlay B ...]
//!                   [--topology BOOT.LOG] [--boot-cpu MPIDR]
//!                   [--board BOARD] [--kernel ADDR,SIZE] [--dtb-at ADDR[,SIZE]]
//!                   [--memory ADDR,SIZE ...] [--dot FILE.dot]
//! ```
//!
//! The overlays are merged by `devicetree::overlay::apply` (what the kernel
//! does with overlays a loader leaves in `/chosen`); the merged tree is read
//! into the same `devicetree::Machine`, by the same calls in the same order,
//! as boot; `partitions::machine` turns it into the policy's model and
//! `Hardware` exactly as the kernel does; `partitions::binding::parse` and
//! `partitions::validate::validate` decide. A refusal prints the
//! kernel's own message and exits 1; input the kernel would not boot with
//! (a malformed tree, an overlay that does not apply) exits 2 with the
//! kernel's message; unusable files or options exit 2 too.
//!
//! Some facts exist only at boot: the PCI topology (ECAM enumeration), where
//! the loader put the kernel and the DTB, which CPU boots. `--topology`
//! reads the PCI table a boot printed, `--board`/`--kernel`/`--dtb-at` give
//! the placement and `--boot-cpu` the CPU; without them the checks that
//! need them are listed as not made, and every other check is still made.

mod bootlog;
mod dot;
mod input;
mod kernel_text;
mod plan;
#[cfg(test)]
mod tests;

use devicetree::machine::Incomplete;
use devicetree::memmap::{self, BootMap};
use devicetree::pci::HostTopology;
use devicetree::{DeviceTree, DtError, Machine};
use devicetree::{PhysAddr, PhysRange};
use partitions::binding::{Config, Target};
use partitions::groups::{self, Groups};
use partitions::machine::{self, Placement};
use partitions::topology::Topology;
use partitions::validate::{Hardware, Plan};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What to check: the options of `cargo xtask check`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Request {
    /// The board's device tree (`.dtb`, or `.dts` to compile)
    #[arg(long, value_name = "BOARD.dtb|.dts")]
    pub dtb: PathBuf,
    /// An overlay (`.dts` to compile, or a blob); several are applied in the order given
    #[arg(long = "overlay", value_name = "A.dts|A.dtbo", required = true)]
    pub overlays: Vec<PathBuf>,
    /// A boot log of the same machine, with the kernel's PCI table
    #[arg(long, value_name = "BOOT.LOG")]
    pub topology: Option<PathBuf>,
    /// The boot CPU's MPIDR [default: the first CPU in /cpus]
    #[arg(long, value_name = "MPIDR", value_parser = input::number)]
    pub boot_cpu: Option<u64>,
    /// A board whose loader's placement of the kernel and DTB to assume: qemu-virt, fvp-base, rock-5b, imx95-evk or j721e-sk
    #[arg(long, value_name = "BOARD", value_parser = board_name)]
    pub board: Option<String>,
    /// The kernel image: address and size
    #[arg(long, value_name = "ADDR,SIZE", value_parser = kernel_range)]
    pub kernel: Option<(u64, u64)>,
    /// The DTB's address and, optionally, its size at boot
    #[arg(long, value_name = "ADDR[,SIZE]", value_parser = |s: &str| input::addr_size(s, true))]
    pub dtb_at: Option<(u64, Option<u64>)>,
    /// Where to write the Graphviz diagram (and, next to it, its SVG)
    #[arg(long, value_name = "FILE.dot")]
    pub dot: Option<PathBuf>,
    /// RAM the bootloader puts in /memory (a tree that ships /memory absent or of size 0 needs it; replaces the tree's banks); repeatable
    #[arg(long = "memory", value_name = "ADDR,SIZE", value_parser = kernel_range)]
    pub memory: Vec<(u64, u64)>,
}

/// `--board`: a board [`input::board`] knows.
fn board_name(s: &str) -> Result<String, String> {
    input::board(s).map(|b| b.name.to_string())
}

/// `--kernel ADDR,SIZE`.
fn kernel_range(s: &str) -> Result<(u64, u64), String> {
    let (a, size) = input::addr_size(s, false)?;
    Ok((a, size.unwrap_or(0)))
}

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check made passed (some may not have been made: see the notes).
    Accepted,
    /// The kernel would refuse the configuration.
    Refused,
    /// The input cannot be used: the kernel would not boot with it, or a
    /// file or option is wrong.
    Unusable,
}

impl Verdict {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Accepted => 0,
            Verdict::Refused => 1,
            Verdict::Unusable => 2,
        }
    }
}

/// What a check found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// What the checker prints on stdout: the machine, the plan, the checks
    /// it could not make.
    pub text: String,
    /// The kernel's message when it would stop (or the checker's when a
    /// file or option is unusable), for stderr.
    pub error: Option<String>,
    /// The Graphviz diagram of an accepted plan.
    pub dot: Option<String>,
}

/// Something that ends the check early.
struct Stop(Verdict, String);

fn unusable(msg: String) -> Stop {
    Stop(Verdict::Unusable, msg)
}

/// Facts the checker assumed or checks it could not make.
#[derive(Default)]
struct Notes {
    assumed: Vec<String>,
    not_made: Vec<String>,
}

/// What the kernel would know at the moment it configures: its machine
/// description and what it knows only at boot.
struct Known {
    machine: Machine,
    /// RAM as the memory map holds it (banks sorted and merged).
    ram: Vec<PhysRange>,
    boot_cpu: u64,
    placed: Placement,
    topology_from: Option<PathBuf>,
}

/// Everything an accepted check shows.
struct Checked {
    cfg: Config,
    hw: Hardware,
    plan: Plan,
    /// PCI assignments that could not be checked (no topology).
    unchecked_pci: Vec<(usize, String)>,
}

/// Runs the check.
pub fn check(req: &Request) -> Report {
    let mut text = String::new();
    let mut notes = Notes::default();
    let mut dot = None;
    let (verdict, error) = match run(req, &mut notes) {
        Ok((m, c)) => {
            plan::write(&mut text, &m, &c, &notes);
            if req.dot.is_some() {
                dot = Some(dot::render(&c.cfg, &c.hw, &c.plan, &c.unchecked_pci));
            }
            (Verdict::Accepted, None)
        }
        Err(Stop(v, msg)) => {
            plan::write_notes(&mut text, &notes);
            text.push_str(match v {
                Verdict::Refused => "result: refused: the kernel would stop before starting any partition, with the message below\n",
                _ => "result: not checked: the kernel would not boot with this input, or a file or option cannot be used (below)\n",
            });
            (v, Some(msg))
        }
    };
    Report { verdict, text, error, dot }
}

fn run(req: &Request, notes: &mut Notes) -> Result<(Known, Checked), Stop> {
    let board = req.board.as_deref().map(input::board).transpose().map_err(unusable)?;
    let base = input::blob(&req.dtb).map_err(unusable)?;
    let mut overlays = Vec::new();
    for o in &req.overlays {
        overlays.push(input::blob(o).map_err(unusable)?);
    }
    let dtb_at = req.dtb_at.map(|(a, _)| a).or(board.map(|b| b.dtb_at));

    // The blob the loader passes, then the overlays merged as the kernel
    // merges those named in /chosen.
    if let Err(e) = DeviceTree::parse(&base) {
        return Err(unusable(match (dtb_at, e) {
            // The kernel reads the header where the loader put the blob.
            (Some(at), DtError::NoHeader { found, .. }) => kernel_text::dt_at(PhysAddr(at), &DtError::NoHeader { at: PhysAddr(at), found }),
            (Some(at), e) => kernel_text::dt_at(PhysAddr(at), &e),
            (None, DtError::NoHeader { found, .. }) => {
                format!("cannot boot: device tree {}: no FDT header: magic is {found:#010x}, expected 0xd00dfeed", req.dtb.display())
            }
            (None, e) => format!("cannot boot: device tree {}: {}", req.dtb.display(), e),
        }));
    }
    let refs: Vec<&[u8]> = overlays.iter().map(Vec::as_slice).collect();
    let merged = devicetree::overlay::apply(&base, &refs).map_err(|e| unusable(kernel_text::overlay(&e)))?;
    let dt = DeviceTree::parse(&merged).map_err(|e| unusable(kernel_text::dt(&e)))?;
    let dt_err = |e: DtError| unusable(kernel_text::dt(&e));

    // boot.rs `boot`, steps 2-4, in its order: the SMMUs, PSCI, then the
    // machine description's boot part.
    let smmus = dt.smmus().map_err(dt_err)?;
    dt.psci().map_err(dt_err)?;
    let mut machine = Machine::boot(&dt, smmus).map_err(|e| unusable(kernel_text::platform(&e.to_string())))?;
    // RAM the bootloader fills in: many boards' trees ship /memory absent
    // or of size 0.
    if !req.memory.is_empty() {
        let what = if machine.ram.is_empty() {
            "the tree has none: the bootloader fills /memory in"
        } else {
            "in place of the tree's /memory, as the bootloader would"
        };
        machine.ram.clear();
        for &(at, size) in &req.memory {
            let r = PhysRange::new(at, size)
                .filter(|r| !r.is_empty())
                .ok_or("--memory: the size must be > 0 and the range must not wrap".to_string())
                .map_err(unusable)?;
            machine.ram.try_push(r).map_err(|_| unusable("--memory: too many banks".into()))?;
            notes.assumed.push(format!("RAM {r} (--memory; {what})"));
        }
    } else if machine.ram.is_empty() {
        return Err(unusable(
            "cannot boot: the device tree describes no RAM: /memory is absent or of size 0 (its bootloader fills it in); \
             pass the board's RAM as --memory ADDR,SIZE"
                .into(),
        ));
    }
    let placed_kernel = kernel_placement(req, board, notes).map_err(unusable)?;
    if placed_kernel.is_none() {
        notes.not_made.push(
            "partition memory and images against the kernel image and its heap: where the kernel runs is only known at boot; \
             pass --board BOARD (with the kernel built) or --kernel ADDR,SIZE"
                .into(),
        );
    }
    let placed_dtb = match (req.dtb_at, board) {
        (Some((at, size)), _) => Some((at, size.unwrap_or(merged.len() as u64), "--dtb-at".to_string())),
        (None, Some(b)) => Some((b.dtb_at, (b.dtb_size)(merged.len() as u64), format!("--board {}", b.name))),
        (None, None) => None,
    };
    let dtb = placed_dtb.as_ref().and_then(|(at, size, _)| PhysRange::new(*at, *size)).map(|r| r.grow_to(memmap::PAGE));
    // The same memory map boot makes (devicetree::memmap::boot_map).
    let BootMap { map, heap } = memmap::boot_map(&machine, placed_kernel, dtb).map_err(|e| unusable(kernel_text::platform(&e.to_string())))?;
    if !machine.overlays.is_empty() {
        notes.not_made.push(format!(
            "the {} overlay(s) /chosen/{} names are in RAM only at boot: not applied here (give them as --overlay)",
            machine.overlays.len(),
            devicetree::overlay::CHOSEN_PROPERTY
        ));
    }
    if let Some(heap) = heap {
        notes.assumed.push(format!("kernel heap {heap} (placed as boot places it: {} MiB after the image)", memmap::HEAP_SIZE >> 20));
    }
    match &placed_dtb {
        Some((_, _, how)) => notes.assumed.push(format!("DTB {} ({how})", dtb.unwrap_or_default())),
        None => notes.not_made.push(
            "partition memory and images against the DTB: where the loader puts it is only known at boot; \
             pass --board BOARD or --dtb-at ADDR[,SIZE]"
                .into(),
        ),
    }

    // The rest of the machine description (the tree is the merged one
    // already), then discovery's check of each host bridge (boot steps 4-5).
    machine.complete(&dt, false).map_err(|e| match e {
        Incomplete::Tree(e) => dt_err(e),
        Incomplete::Discovery(e) => unusable(kernel_text::discovery(&e)),
    })?;
    let boot_cpu = match req.boot_cpu {
        Some(c) => c,
        None => {
            let first = machine.cpus.first().map(|c| c.mpidr).unwrap_or(0);
            notes.assumed.push(format!("boot CPU MPIDR {first:#x}: the first CPU in /cpus (pass --boot-cpu if the loader starts another)"));
            first
        }
    };
    for h in &machine.devices.pci_hosts {
        if !machine.mmio.iter().any(|r| r.covers(&h.ecam)) {
            return Err(unusable(kernel_text::ecam_unmapped(&h.path, h.ecam)));
        }
    }
    let pci = pci_topology(req, &machine).map_err(unusable)?;
    let topology: Topology = machine::topology(&machine, &pci);
    let groups: Groups = groups::compute(&topology);

    // boot.rs `configure`.
    let mut cfg = partitions::binding::parse(&merged).map_err(|e| Stop(Verdict::Refused, kernel_text::refused(&e)))?;
    let placed = Placement { kernel: placed_kernel, dtb, heap };
    let hw = machine::hardware(&machine, &map, placed, boot_cpu, topology, groups);
    let mut unchecked_pci = Vec::new();
    if req.topology.is_none() {
        // Functions exist only once enumerated: set aside every assignment
        // under a host bridge the kernel would enumerate, check the rest.
        let hosts: Vec<&str> = machine.devices.pci_hosts.iter().map(|h| h.path.as_str()).collect();
        cfg.assignments.retain(|a| match &a.target {
            Target::Pci { host, .. } if hosts.contains(&host.as_str()) => {
                unchecked_pci.push((a.partition, a.path.clone()));
                false
            }
            _ => true,
        });
        if !unchecked_pci.is_empty() {
            let paths: Vec<&str> = unchecked_pci.iter().map(|(_, p)| p.as_str()).collect();
            notes.not_made.push(format!(
                "PCI devices {}: the PCI topology is only known at boot (whether each exists, its isolation group, \
                 its StreamIDs, and that its group is given whole); pass --topology BOOT.LOG (the PCI table of a boot of this machine)",
                paths.join(", ")
            ));
        } else if !machine.devices.pci_hosts.is_empty() {
            notes.assumed.push("no PCI device is assigned; PCI functions and their groups are not shown (pass --topology BOOT.LOG)".into());
        }
    }
    let plan = partitions::validate::validate(&cfg, &hw).map_err(|e| Stop(Verdict::Refused, kernel_text::refused(&e)))?;
    let known = Known { machine, ram: map.ram().to_vec(), boot_cpu, placed, topology_from: req.topology.clone() };
    Ok((known, Checked { cfg, hw, plan, unchecked_pci }))
}

/// The kernel image, from `--kernel` or the board's built ELF.
fn kernel_placement(req: &Request, board: Option<input::Board>, notes: &mut Notes) -> Result<Option<PhysRange>, String> {
    if let Some((at, size)) = req.kernel {
        let r = PhysRange::new(at, size).filter(|r| !r.is_empty()).ok_or("--kernel: the size must be > 0 and the range must not wrap")?;
        notes.assumed.push(format!("kernel image {} (--kernel)", r));
        return Ok(Some(r));
    }
    let Some(b) = board else { return Ok(None) };
    let elf = b.elf();
    if !elf.exists() {
        notes.assumed.push(format!(
            "no kernel placement: --board {} takes it from {}, which is not built (cargo xtask image --board {})",
            b.name,
            elf.display(),
            b.name
        ));
        return Ok(None);
    }
    let (at, size) = input::kernel_from_elf(&elf)?;
    let r = PhysRange::new(at, size).ok_or("the kernel ELF's image wraps around")?;
    notes.assumed.push(format!("kernel image {} ({}; {})", r, elf.display(), b.how));
    Ok(Some(r))
}

/// One enumeration result per host bridge discovery found: from the boot
/// log, or nothing found (before enumeration).
fn pci_topology(req: &Request, m: &Machine) -> Result<Vec<HostTopology>, String> {
    let d = &m.devices;
    let Some(path) = &req.topology else {
        return Ok(d.pci_hosts.iter().map(|h| HostTopology { root_bus: h.bus_start, last_bus: h.bus_start, functions: Vec::new() }).collect());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let logged = bootlog::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for h in &d.pci_hosts {
        let l = logged
            .iter()
            .find(|l| l.path == h.path)
            .ok_or_else(|| format!("{}: no PCI table of host bridge {} (a `PCI host {}: ECAM ...` line and what follows)", path.display(), h.path, h.path))?;
        if l.ecam.start != h.ecam.start {
            return Err(format!(
                "{}: PCI host {} has ECAM {} there but {} in the device tree: not a boot of this machine",
                path.display(),
                h.path,
                l.ecam,
                h.ecam
            ));
        }
        out.push(l.topology.clone());
    }
    if let Some(l) = logged.iter().find(|l| !d.pci_hosts.iter().any(|h| h.path == l.path)) {
        return Err(format!("{}: PCI host {} is not in the device tree", path.display(), l.path));
    }
    Ok(out)
}

/// Renders the Graphviz file `dot` as SVG next to it (`FILE.svg`) with
/// Graphviz's `dot`; returns the SVG's path.
fn render_svg(dot: &Path) -> Result<PathBuf, String> {
    let svg = dot.with_extension("svg");
    match Command::new("dot").arg("-Tsvg").arg(dot).arg("-o").arg(&svg).output() {
        Ok(o) if o.status.success() => Ok(svg),
        Ok(o) => Err(format!("dot could not render it: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("cannot run Graphviz `dot` (apt-get install {}): {e}", crate::prereq::GRAPHVIZ_PACKAGE)),
    }
}

/// `cargo xtask check ...`: prints the report, writes the diagram, and
/// exits 0 (accepted), 1 (refused) or 2 (unusable input).
pub fn cmd(req: &Request) -> Result<ExitCode, String> {
    let report = check(req);
    print!("{}", report.text);
    if let Some(e) = &report.error {
        eprintln!("{e}");
    }
    if let (Some(path), Some(dot)) = (&req.dot, &report.dot) {
        if let Err(e) = std::fs::write(path, dot) {
            eprintln!("xtask check: cannot write {}: {e}", path.display());
            return Ok(ExitCode::from(Verdict::Unusable.code()));
        }
        println!("diagram: {}", path.display());
        // The SVG is a convenience: without Graphviz the check still
        // stands, and says why there is no picture.
        match crate::prereq::ensure_graphviz().and_then(|()| render_svg(path)) {
            Ok(svg) => println!("diagram: {}", svg.display()),
            Err(e) => println!("diagram: {} not written: {e}", path.with_extension("svg").display()),
        }
    } else if req.dot.is_some() {
        println!("diagram: not written, there is no plan to draw");
    }
    Ok(ExitCode::from(report.verdict.code()))
}
#[cfg(test)]
mod corpus;
