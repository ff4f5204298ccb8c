//! How validation and planning scale: `partitions::groups::compute` and
//! `partitions::validate::validate` on synthetic machines from 16 to 65,536
//! StreamIDs and 2 to 256 partitions, timed on the host, with every heap
//! allocation they make counted by this process's global allocator.
//!
//! The synthetic machine is one PCI host bridge (`iommu-map` identity onto
//! one SMMU with 16-bit StreamIDs): the host bridge function 00:00.0, then
//! root ports with ACS, each with a secondary bus of up to 32 multi-function
//! devices of 8 functions. Even-numbered devices have ACS on every function
//! (8 groups of one StreamID), odd-numbered ones have none (one group of 8):
//! both the ACS and the multi-function rules run. Every endpoint group is
//! given to a partition, round robin; ports and the host bridge stay
//! Blocked. 65,536 StreamIDs = 1 + 255 ports + 255 × 256 endpoints.

use devicetree::discovery::{self, IdMap, IdMapEntry};
use devicetree::pci::{Acs, AcsFlags, Bdf, Function, FunctionKind, HostTopology};
use devicetree::PhysAddr;
use partitions::binding::{Assignment, Config, PartitionConfig, Region, Target};
use partitions::groups;
use partitions::topology::{PciHost, Smmu, Topology};
use partitions::validate::{self, Hardware};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Counting allocator: per thread, so parallel host tests do not mix counts.
// ---------------------------------------------------------------------------

/// Allocation counters of the current thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Allocations (a `realloc` counts as one).
    pub allocs: u64,
    /// Bytes requested, summed over every allocation.
    pub bytes: u64,
    /// Bytes live now.
    pub live: u64,
    /// Highest `live` since the last [`reset_peak`].
    pub peak: u64,
}

thread_local! {
    static COUNTS: Cell<Counts> = const { Cell::new(Counts { allocs: 0, bytes: 0, live: 0, peak: 0 }) };
}

fn note(alloc: u64, free: u64, counted: bool) {
    // `try_with`: the thread's counters may already be gone while it exits.
    let _ = COUNTS.try_with(|c| {
        let mut v = c.get();
        if counted {
            v.allocs += 1;
            v.bytes += alloc;
        }
        v.live = (v.live + alloc).saturating_sub(free);
        v.peak = v.peak.max(v.live);
        c.set(v);
    });
}

/// The system allocator, counting.
pub struct Counting;

// SAFETY: every call is forwarded to the system allocator with the caller's
// arguments; the counters do not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as u64, 0, true);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as u64, 0, true);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size() as u64, false);
        // SAFETY: forwarded unchanged (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged (the caller's contract).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as u64, layout.size() as u64, true);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's counters.
pub fn counts() -> Counts {
    COUNTS.with(|c| c.get())
}

fn reset_peak() {
    COUNTS.with(|c| {
        let mut v = c.get();
        v.peak = v.live;
        c.set(v);
    });
}

// ---------------------------------------------------------------------------
// Synthetic machines.
// ---------------------------------------------------------------------------

const HOST: &str = "/pcie@0";
/// Endpoint functions per secondary bus (32 devices × 8 functions).
const PER_BUS: usize = 256;
/// ACS with the isolation controls implemented and enabled.
const ACS_ON: Acs = Acs { offset: 0x100, cap: AcsFlags(AcsFlags::ISOLATION), ctrl: AcsFlags(AcsFlags::ISOLATION) };

/// Endpoints and root ports for `sids` StreamIDs (host bridge included).
fn shape(sids: usize) -> (usize, usize) {
    let sids = sids.max(3);
    // sids = 1 + ports + endpoints, ports = ceil(endpoints / PER_BUS).
    let mut endpoints = sids - 2;
    while 1 + endpoints.div_ceil(PER_BUS) + endpoints > sids {
        endpoints -= 1;
    }
    (endpoints, endpoints.div_ceil(PER_BUS))
}

fn function(bdf: Bdf, kind: FunctionKind, parent: Option<usize>) -> Function {
    Function { vendor: 0x1234, device: 0x11e8, class: 0x00ff00, parent, ..Function::new(bdf, kind) }
}

/// The synthetic topology with `sids` StreamIDs, and the `dev,fn` chain of
/// every endpoint (for the configuration's assignments).
pub fn topology(sids: usize) -> (Topology, Vec<(usize, Vec<Bdf>)>) {
    let (endpoints, ports) = shape(sids);
    let mut fns = vec![function(Bdf::new(0, 0, 0), FunctionKind::RcIntegratedEndpoint, None)];
    let mut chains = Vec::with_capacity(endpoints);
    let mut left = endpoints;
    for p in 0..ports {
        // Root ports at 00:00.1 .. 00:1f.7 (00:00.0 is the host bridge).
        let slot = p + 1;
        let (dev, func) = ((slot / 8) as u8, (slot % 8) as u8);
        let bus = (p + 1) as u8;
        let mut port = function(Bdf::new(0, dev, func), FunctionKind::RootPort, None).bridging(bus);
        port.acs = Some(ACS_ON);
        fns.push(port);
        let port_index = fns.len() - 1;
        for e in 0..left.min(PER_BUS) {
            let (d, f) = ((e / 8) as u8, (e % 8) as u8);
            let mut ep = function(Bdf::new(bus, d, f), FunctionKind::Endpoint, Some(port_index));
            ep.multifunction = true;
            ep.acs = (d % 2 == 0).then_some(ACS_ON);
            fns.push(ep);
            chains.push((fns.len() - 1, vec![Bdf::new(0, dev, func), Bdf::new(bus, d, f)]));
        }
        left = left.saturating_sub(PER_BUS);
    }
    let host = PciHost {
        bridge: discovery::PciHost {
            path: HOST.into(),
            iommu_map: IdMap { entries: vec![IdMapEntry { rid_base: 0, length: 0x1_0000, target: Some(0), phandle: 1, out_base: 0 }], mask: None },
            ..discovery::PciHost::default()
        },
        bus: HostTopology { root_bus: 0, last_bus: ports as u8, functions: fns },
    };
    let t = Topology { smmus: vec![Smmu { name: "smmu".into(), sid_bits: 16 }], hosts: vec![host], platform: Vec::new() };
    (t, chains)
}

/// Bytes of RAM each synthetic partition gets.
const PART_MEM: u64 = 2 << 20;

/// The hardware and a configuration giving every endpoint group to one of
/// `parts` partitions, round robin.
pub fn machine(sids: usize, parts: usize) -> (Hardware, Config) {
    let (topology, chains) = topology(sids);
    let g = groups::compute(&topology);
    let hw = Hardware {
        ram: vec![Region { base: PhysAddr(0x4000_0000), size: 0x1_0000_0000 }],
        kernel: None,
        dtb: None,
        heap: None,
        reserved: Vec::new(),
        cpus: (0..=parts as u64).collect(),
        boot_cpu: 0,
        topology,
        groups: g,
        kernel_irqs: Vec::new(),
    };
    let mut cfg = Config::default();
    for i in 0..parts {
        let name = format!("p{i}");
        cfg.partitions.push(PartitionConfig {
            path: format!("/partitions/{name}"),
            name,
            phandle: Some(i as u32 + 1),
            memory: vec![Region { base: PhysAddr(0x8000_0000 + i as u64 * PART_MEM), size: PART_MEM }],
            image: None,
            entry: None,
            initrd: None,
            bootargs: String::new(),
            manager: false,
            fault_limit: None,
            log_limit: None,
            dma_p2p: false,
        });
        cfg.assignments.push(Assignment {
            path: format!("/cpus/cpu@{}", i + 1),
            partition: i,
            target: Target::Cpu { mpidr: i as u64 + 1 },
            isolation_group: None,
        });
    }
    // Endpoint function index → its chain.
    let chain_of: std::collections::HashMap<usize, &Vec<Bdf>> = chains.iter().map(|(f, c)| (*f, c)).collect();
    let mut next = 0;
    for grp in &hw.groups.groups {
        let eps: Vec<&Vec<Bdf>> = grp
            .devices
            .iter()
            .filter_map(|d| match d {
                partitions::topology::DeviceRef::Pci { function, .. } => chain_of.get(function).copied(),
                _ => None,
            })
            .collect();
        if eps.is_empty() || grp.devices.len() != eps.len() {
            continue; // the host bridge, ports: Blocked
        }
        for c in eps {
            let last = c.last().copied().unwrap_or(Bdf::new(0, 0, 0));
            cfg.assignments.push(Assignment {
                path: format!("{HOST}/pci@{:x},{:x}/dev@{:x},{:x}", c[0].dev, c[0].func, last.dev, last.func),
                partition: next % parts,
                target: Target::Pci { host: HOST.into(), chain: c.clone() },
                isolation_group: None,
            });
        }
        next += 1;
    }
    (hw, cfg)
}

// ---------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------

/// One measurement of one function at one size.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Best wall time of the repetitions.
    pub time: Duration,
    /// Allocations of one call.
    pub allocs: u64,
    /// Bytes allocated by one call.
    pub bytes: u64,
    /// Peak live bytes during one call (above what was live before).
    pub peak: u64,
}

/// Runs `f` at least 3 times and for at least `budget` (at most 50 times,
/// and only once when one call takes longer than `budget`); the best time,
/// and the allocations of one call.
fn measure<R>(budget: Duration, mut f: impl FnMut() -> R) -> Sample {
    let mut best = Duration::MAX;
    let mut s = Sample::default();
    let started = Instant::now();
    for rep in 0..50 {
        let before = counts();
        reset_peak();
        let t = Instant::now();
        let r = f();
        let el = t.elapsed();
        let after = counts();
        drop(r);
        if rep == 0 {
            s = Sample { time: el, allocs: after.allocs - before.allocs, bytes: after.bytes - before.bytes, peak: after.peak - before.live };
        }
        best = best.min(el);
        let spent = started.elapsed();
        if (rep >= 2 && spent >= budget) || (rep == 0 && el >= budget) {
            break;
        }
    }
    s.time = best;
    s
}

/// One point of a sweep.
#[derive(Clone, Debug)]
pub struct Point {
    /// StreamIDs of the machine.
    pub sids: usize,
    /// Partitions of the configuration.
    pub parts: usize,
    /// Isolation groups found.
    pub groups: usize,
    /// Devices assigned.
    pub assigned: usize,
    /// `groups::compute`.
    pub grouping: Sample,
    /// `validate::validate` (validation and the plan).
    pub validation: Sample,
}

/// Measures one configuration.
pub fn point(sids: usize, parts: usize, budget: Duration) -> Result<Point, String> {
    let (hw, cfg) = machine(sids, parts);
    let plan = validate::validate(&cfg, &hw).map_err(|e| format!("synthetic configuration ({sids} StreamIDs, {parts} partitions) refused: {e}"))?;
    let real_sids: usize = hw.groups.groups.iter().map(|g| g.stream_ids.len()).sum();
    if real_sids != sids.max(3) {
        return Err(format!("synthetic machine for {sids} StreamIDs has {real_sids}"));
    }
    let assigned = plan.partitions.iter().map(|p| p.devices.len()).sum();
    let grouping = measure(budget, || groups::compute(&hw.topology));
    let validation = measure(budget, || validate::validate(&cfg, &hw));
    Ok(Point { sids, parts, groups: hw.groups.groups.len(), assigned, grouping, validation })
}

/// The average growth factor per doubling of `x` between consecutive
/// points, over the upper half of the sweep (where fixed costs matter least),
/// and its exponent (1 = linear, 2 = quadratic).
pub fn growth(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<&(f64, f64)> = points.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
    if pts.len() < 2 {
        return None;
    }
    let from = pts.len() / 2;
    let (a, b) = (pts[from.min(pts.len() - 2)], pts[pts.len() - 1]);
    let doublings = (b.0 / a.0).log2();
    if doublings <= 0.0 {
        return None;
    }
    let per = (b.1 / a.1).powf(1.0 / doublings);
    Some((per, per.log2()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_machines_have_the_asked_streamids() {
        for sids in [16, 100, 257, 1000] {
            let (hw, cfg) = machine(sids, 4);
            let n: usize = hw.groups.groups.iter().map(|g| g.stream_ids.len()).sum();
            assert_eq!(n, sids);
            assert!(hw.groups.not_isolatable.is_empty());
            let plan = validate::validate(&cfg, &hw).expect("valid");
            assert_eq!(plan.partitions.len(), 4);
            assert!(plan.partitions.iter().all(|p| !p.groups.is_empty()));
        }
        assert_eq!(shape(65536), (255 * 256, 255));
    }

    #[test]
    fn counting_allocator_counts_this_thread() {
        let before = counts();
        let v: Vec<u8> = Vec::with_capacity(1000);
        let after = counts();
        assert_eq!(after.allocs - before.allocs, 1);
        assert_eq!(after.bytes - before.bytes, 1000);
        drop(v);
        assert_eq!(counts().live, before.live);
    }

    #[test]
    fn growth_per_doubling() {
        let lin: Vec<(f64, f64)> = (4..10).map(|k| ((1u64 << k) as f64, (1u64 << k) as f64 * 3.0)).collect();
        let (per, exp) = growth(&lin).unwrap();
        assert!((per - 2.0).abs() < 1e-9 && (exp - 1.0).abs() < 1e-9);
        let quad: Vec<(f64, f64)> = (4..10).map(|k| ((1u64 << k) as f64, ((1u64 << k) as f64).powi(2))).collect();
        assert!((growth(&quad).unwrap().1 - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_point_measures() {
        let p = point(64, 2, Duration::from_millis(1)).unwrap();
        assert!(p.grouping.allocs > 0 && p.validation.allocs > 0);
        assert_eq!(p.groups, 1 + 1 + 8 * 4 + 3 + 1); // host bridge, port, 4 ACS devices × 8, 3+1 non-ACS devices
    }
}
