//! The partition binding (BINDING.md): `/partitions` and the
//! `bulkhead,partition` assignments, read from the merged device tree into a
//! typed [`Config`]. Only the *shape* is checked here (properties present,
//! cell counts, phandles resolving); whether the configuration is safe on
//! this machine is `validate`'s job.
//!
//! Every error names the node (full path) and the property.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};
use smmu::PhysAddr;

/// Compatible of the container node.
pub const PARTITIONS_COMPATIBLE: &str = "bulkhead,partitions";
/// Compatible of each partition node.
pub const PARTITION_COMPATIBLE: &str = "bulkhead,partition";
/// The assignment property on CPUs and DMA masters.
pub const PROP_PARTITION: &str = "bulkhead,partition";
/// The optional group-merging property.
pub const PROP_ISOLATION_GROUP: &str = "bulkhead,isolation-group";

/// Deepest nesting the binding walk follows.
const MAX_DEPTH: usize = 16;

/// A physical range `[base, base + size)` from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Region {
    /// First byte.
    pub base: PhysAddr,
    /// Size in bytes (never 0).
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base.0 + self.size
    }
    /// Whether `other` lies inside.
    pub fn covers(&self, other: &Region) -> bool {
        other.base.0 >= self.base.0 && other.end() <= self.end()
    }
    /// Whether the two share a byte.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.base.0 < other.end() && other.base.0 < self.end()
    }
    /// Whether `a` lies inside.
    pub fn contains(&self, a: PhysAddr) -> bool {
        a.0 >= self.base.0 && a.0 < self.end()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..{:#x})", self.base.0, self.end())
    }
}

/// A partition as the overlay describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Node name = partition name.
    pub name: String,
    /// Full path of the node.
    pub path: String,
    /// Its phandle, when something refers to it.
    pub phandle: Option<u32>,
    /// RAM regions (IPA == PA).
    pub memory: Vec<Region>,
    /// Where the loader put the image.
    pub image: Option<Region>,
    /// Where the image is copied and entered.
    pub entry: Option<PhysAddr>,
    /// Becomes `/chosen/bootargs` of the partition.
    pub bootargs: String,
    /// May move groups at run time.
    pub manager: bool,
    /// Faults per window (count, window in ms) before quarantine.
    pub fault_limit: Option<(u32, u32)>,
    /// Own devices' BARs mapped in the partition's DMA space.
    pub dma_p2p: bool,
}

/// Where an assigned node sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A CPU, by MPIDR.
    Cpu {
        /// MPIDR affinity from `reg`.
        mpidr: u64,
    },
    /// A PCI function node under a host bridge.
    Pci {
        /// Path of the host bridge node.
        host: String,
        /// Device/function steps from the host bridge down (bus number from
        /// phys.hi, device, function), outermost first.
        chain: Vec<PciStep>,
    },
    /// Any other node: a platform DMA master.
    Platform,
}

/// One `dev,fn` level of a PCI path (BINDING.md: `reg` phys.hi =
/// bus<<16 | dev<<11 | fn<<8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciStep {
    /// Bus number field of phys.hi.
    pub bus: u8,
    /// Device number.
    pub dev: u8,
    /// Function number.
    pub func: u8,
}

/// A node carrying `bulkhead,partition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Full path of the assigned node.
    pub path: String,
    /// Index into [`Config::partitions`].
    pub partition: usize,
    /// What the node is.
    pub target: Target,
    /// `bulkhead,isolation-group`, when present.
    pub isolation_group: Option<u32>,
}

/// A device that only carries `bulkhead,isolation-group` (merging without
/// assigning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupHint {
    /// Full path of the node.
    pub path: String,
    /// What the node is.
    pub target: Target,
    /// The group number.
    pub group: u32,
}

/// The typed configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Partitions in node order.
    pub partitions: Vec<PartitionConfig>,
    /// Every `bulkhead,partition` outside `/partitions`.
    pub assignments: Vec<Assignment>,
    /// Nodes with `bulkhead,isolation-group` but no assignment.
    pub group_hints: Vec<GroupHint>,
}

/// A configuration error: which node, which property, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Full node path.
    pub node: String,
    /// Property (empty when the node itself is wrong).
    pub property: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `property` of `node`.
    pub fn new(node: &str, property: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError { node: node.to_string(), property, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.property.is_empty() {
            write!(f, "{}: {}", self.node, self.message)
        } else {
            write!(f, "{}: property {}: {}", self.node, self.property, self.message)
        }
    }
}

fn cells(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// A number of `n` (1 or 2) cells.
fn number(c: &[u32]) -> u64 {
    c.iter().fold(0u64, |acc, &x| (acc << 32) | u64::from(x))
}

fn prop<'a>(n: &FdtNode<'a>, name: &str) -> Option<&'a [u8]> {
    n.property(name).and_then(|p| p.value_as::<&'a [u8]>().ok())
}

fn string_prop(n: &FdtNode<'_>, path: &str, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(v) = prop(n, name) else { return Ok(None) };
    let end = v.iter().position(|&b| b == 0).ok_or_else(|| ConfigError::new(path, name, "not a NUL-terminated string"))?;
    core::str::from_utf8(&v[..end])
        .map(|s| Some(s.to_string()))
        .map_err(|_| ConfigError::new(path, name, "not valid UTF-8"))
}

fn one_cell(n: &FdtNode<'_>, path: &str, name: &'static str) -> Result<Option<u32>, ConfigError> {
    match prop(n, name) {
        None => Ok(None),
        Some(v) if v.len() == 4 => Ok(cells(v).next()),
        Some(v) => Err(ConfigError::new(path, name, format!("expected one cell, found {} bytes", v.len()))),
    }
}

fn cell_count(n: &FdtNode<'_>, path: &str, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    let v = one_cell(n, path, name)?.unwrap_or(default);
    if v == 0 || v > 2 {
        return Err(ConfigError::new(path, name, format!("must be 1 or 2, is {v}")));
    }
    Ok(v)
}

fn is_compatible(n: &FdtNode<'_>, c: &str) -> bool {
    prop(n, "compatible").is_some_and(|v| v.split(|&b| b == 0).any(|s| s == c.as_bytes()))
}

fn is_enabled(n: &FdtNode<'_>) -> bool {
    prop(n, "status").is_none_or(|v| matches!(v, b"okay\0" | b"ok\0"))
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `(base, size)` pairs with the given cells.
fn regions(v: &[u8], path: &str, name: &'static str, ac: u32, sc: u32) -> Result<Vec<Region>, ConfigError> {
    let (ac, sc) = (ac as usize, sc as usize);
    let all: Vec<u32> = cells(v).collect();
    if v.is_empty() || !v.len().is_multiple_of(4) || !all.len().is_multiple_of(ac + sc) {
        return Err(ConfigError::new(
            path,
            name,
            format!("length {} bytes is not a multiple of (#address-cells {ac} + #size-cells {sc}) cells", v.len()),
        ));
    }
    let mut out = Vec::new();
    for e in all.chunks_exact(ac + sc) {
        let base = number(&e[..ac]);
        let size = number(&e[ac..]);
        if size == 0 {
            return Err(ConfigError::new(path, name, format!("region at {base:#x} has size 0")));
        }
        if base.checked_add(size).is_none() {
            return Err(ConfigError::new(path, name, format!("region {base:#x} + {size:#x} overflows")));
        }
        out.push(Region { base: PhysAddr(base), size });
    }
    Ok(out)
}

fn parse_partition(n: &FdtNode<'_>, path: &str, ac: u32, sc: u32) -> Result<PartitionConfig, ConfigError> {
    if !is_compatible(n, PARTITION_COMPATIBLE) {
        return Err(ConfigError::new(path, "compatible", format!("a /partitions child must be compatible with \"{PARTITION_COMPATIBLE}\"")));
    }
    let memory = match prop(n, "memory") {
        Some(v) => regions(v, path, "memory", ac, sc)?,
        None => return Err(ConfigError::new(path, "memory", "missing (every partition needs RAM)")),
    };
    let image = match prop(n, "bulkhead,image") {
        Some(v) => {
            let r = regions(v, path, "bulkhead,image", ac, sc)?;
            if r.len() != 1 {
                return Err(ConfigError::new(path, "bulkhead,image", "expected exactly one (address, size)"));
            }
            Some(r[0])
        }
        None => None,
    };
    let entry = match prop(n, "bulkhead,entry") {
        Some(v) if v.len() == ac as usize * 4 => Some(PhysAddr(number(&cells(v).collect::<Vec<_>>()))),
        Some(v) => {
            return Err(ConfigError::new(path, "bulkhead,entry", format!("expected {ac} address cell(s), found {} bytes", v.len())))
        }
        None => None,
    };
    if image.is_some() != entry.is_some() {
        let missing = if image.is_some() { "bulkhead,entry" } else { "bulkhead,image" };
        return Err(ConfigError::new(path, missing, "missing (bulkhead,image and bulkhead,entry go together)"));
    }
    let fault_limit = match prop(n, "bulkhead,fault-limit") {
        Some(v) if v.len() == 8 => {
            let c: Vec<u32> = cells(v).collect();
            if c[0] == 0 || c[1] == 0 {
                return Err(ConfigError::new(path, "bulkhead,fault-limit", "count and window must both be > 0"));
            }
            Some((c[0], c[1]))
        }
        Some(_) => return Err(ConfigError::new(path, "bulkhead,fault-limit", "expected <count window-ms> (two cells)")),
        None => None,
    };
    Ok(PartitionConfig {
        name: n.name().to_string(),
        path: path.to_string(),
        phandle: one_cell(n, path, "phandle")?,
        memory,
        image,
        entry,
        bootargs: string_prop(n, path, "bulkhead,bootargs")?.unwrap_or_default(),
        manager: n.property("bulkhead,manager").is_some(),
        fault_limit,
        dma_p2p: n.property("bulkhead,dma-p2p").is_some(),
    })
}

/// What the walk knows about the ancestors of a node.
#[derive(Clone)]
struct Ctx {
    path: String,
    in_cpus: bool,
    pci_host: Option<String>,
    chain: Vec<PciStep>,
    /// This node's `#address-cells` (for its children's `reg`).
    addr_cells: u32,
}

/// Reads the binding from a (validated) device tree blob.
pub fn parse(blob: &[u8]) -> Result<Config, ConfigError> {
    let fdt = Fdt::new(blob).map_err(|e| ConfigError::new("/", "", format!("malformed device tree: {e}")))?;
    parse_fdt(&fdt)
}

/// Reads the binding from a parsed tree.
pub fn parse_fdt(fdt: &Fdt<'_>) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let root = fdt.root();
    if let Some(parts) = root.children().find(|c| c.name() == "partitions") {
        let path = "/partitions";
        if !is_compatible(&parts, PARTITIONS_COMPATIBLE) {
            return Err(ConfigError::new(path, "compatible", format!("must be \"{PARTITIONS_COMPATIBLE}\"")));
        }
        let ac = cell_count(&parts, path, "#address-cells", 2)?;
        let sc = cell_count(&parts, path, "#size-cells", 1)?;
        for c in parts.children() {
            let cpath = child_path(path, c.name());
            if !is_enabled(&c) {
                continue;
            }
            let p = parse_partition(&c, &cpath, ac, sc)?;
            if cfg.partitions.iter().any(|q| q.name == p.name) {
                return Err(ConfigError::new(&cpath, "", "two partitions with the same name"));
            }
            cfg.partitions.push(p);
        }
        // Partition ids follow the names' order, not the node order (which
        // overlay tools do not preserve): ids are then predictable.
        cfg.partitions.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let ctx = Ctx { path: "/".into(), in_cpus: false, pci_host: None, chain: Vec::new(), addr_cells: 2 };
    walk(&root, &ctx, 0, &mut cfg)?;
    Ok(cfg)
}

fn walk(n: &FdtNode<'_>, ctx: &Ctx, depth: usize, cfg: &mut Config) -> Result<(), ConfigError> {
    if depth > MAX_DEPTH {
        return Err(ConfigError::new(&ctx.path, "", "nested too deeply"));
    }
    if depth > 0 {
        visit(n, ctx, cfg)?;
    }
    let own_ac = one_cell(n, &ctx.path, "#address-cells")?.unwrap_or(2);
    for c in n.children() {
        let name = c.name();
        if depth == 0 && name == "partitions" {
            continue;
        }
        let mut cc = ctx.clone();
        cc.path = child_path(&ctx.path, name);
        cc.addr_cells = one_cell(&c, &cc.path, "#address-cells")?.unwrap_or(2);
        if depth == 0 && name == "cpus" {
            cc.in_cpus = true;
        }
        if ctx.pci_host.is_some() {
            // A node under a PCI bus: its `reg` phys.hi names the function.
            if let Some(v) = prop(&c, "reg") {
                if own_ac != 3 || v.len() < 12 {
                    return Err(ConfigError::new(&cc.path, "reg", "a PCI function's reg needs 3 address cells (phys.hi phys.mid phys.lo)"));
                }
                let hi = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                cc.chain.push(PciStep { bus: (hi >> 16) as u8, dev: ((hi >> 11) & 0x1f) as u8, func: ((hi >> 8) & 0x7) as u8 });
            }
        } else if prop(&c, "device_type") == Some(b"pci\0") {
            cc.pci_host = Some(cc.path.clone());
        }
        walk(&c, &cc, depth + 1, cfg)?;
    }
    Ok(())
}

fn visit(n: &FdtNode<'_>, ctx: &Ctx, cfg: &mut Config) -> Result<(), ConfigError> {
    let assigned = prop(n, PROP_PARTITION);
    let group = one_cell(n, &ctx.path, PROP_ISOLATION_GROUP)?;
    if assigned.is_none() && group.is_none() {
        return Ok(());
    }
    let target = if ctx.in_cpus && prop(n, "device_type") == Some(b"cpu\0") {
        let reg = prop(n, "reg").ok_or_else(|| ConfigError::new(&ctx.path, "reg", "a CPU node needs reg (its MPIDR)"))?;
        if reg.is_empty() || reg.len() > 8 || reg.len() % 4 != 0 {
            return Err(ConfigError::new(&ctx.path, "reg", "a CPU's reg must be 1 or 2 cells"));
        }
        Target::Cpu { mpidr: number(&cells(reg).collect::<Vec<_>>()) }
    } else if let (Some(host), false) = (&ctx.pci_host, ctx.chain.is_empty()) {
        Target::Pci { host: host.clone(), chain: ctx.chain.clone() }
    } else if ctx.pci_host.is_some() {
        return Err(ConfigError::new(&ctx.path, PROP_PARTITION, "a node under a PCI host bridge must have reg naming its device and function"));
    } else {
        Target::Platform
    };
    let Some(v) = assigned else {
        cfg.group_hints.push(GroupHint { path: ctx.path.clone(), target, group: group.unwrap_or(0) });
        return Ok(());
    };
    if v.len() != 4 {
        return Err(ConfigError::new(&ctx.path, PROP_PARTITION, "expected exactly one phandle (<&partition>)"));
    }
    let ph = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let partition = cfg.partitions.iter().position(|p| p.phandle == Some(ph)).ok_or_else(|| {
        ConfigError::new(&ctx.path, PROP_PARTITION, format!("phandle {ph:#x} is not a child of /partitions"))
    })?;
    if let Target::Cpu { .. } = target {
        if group.is_some() {
            return Err(ConfigError::new(&ctx.path, PROP_ISOLATION_GROUP, "only DMA masters have isolation groups"));
        }
    }
    cfg.assignments.push(Assignment { path: ctx.path.clone(), partition, target, isolation_group: group });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    /// Compiles DTS with the system `dtc` (a prerequisite of the project),
    /// through pipes: no temporary files, nothing shared between parallel tests.
    pub(crate) fn dtb(dts: &str) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dtc installed");
        child.stdin.take().expect("stdin").write_all(dts.as_bytes()).expect("write to dtc");
        let out = child.wait_with_output().expect("dtc runs");
        assert!(out.status.success(), "{}", std::string::String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    const BASE: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; };
        cpu@1 { device_type = "cpu"; reg = <1>; bulkhead,partition = <&net>; };
        cpu@2 { device_type = "cpu"; reg = <2>; bulkhead,partition = <&storage>; }; };
    pcie@10000000 { device_type = "pci"; compatible = "pci-host-ecam-generic";
        #address-cells = <3>; #size-cells = <2>;
        edu@1,0 { reg = <0x0800 0 0 0 0>; bulkhead,partition = <&net>; };
        port@2,0 { reg = <0x1000 0 0 0 0>; #address-cells = <3>; #size-cells = <2>;
            edu@0,0 { reg = <0x10000 0 0 0 0>; bulkhead,partition = <&storage>; bulkhead,isolation-group = <7>; }; }; };
    dma@9100000 { reg = <0 0x9100000 0 0x1000>; bulkhead,isolation-group = <3>; };
    partitions { compatible = "bulkhead,partitions"; #address-cells = <2>; #size-cells = <2>;
        net: net { compatible = "bulkhead,partition";
            memory = <0x0 0x48000000 0x0 0x04000000>;
            bulkhead,image = <0x0 0x60000000 0x0 0x00100000>;
            bulkhead,entry = <0x0 0x48000000>;
            bulkhead,bootargs = "probe own";
            bulkhead,manager; bulkhead,fault-limit = <64 1000>; };
        storage: storage { compatible = "bulkhead,partition";
            memory = <0x0 0x4c000000 0x0 0x02000000 0x0 0x50000000 0x0 0x1000000>; bulkhead,dma-p2p; }; };
};
"#;

    #[test]
    fn reads_partitions_and_assignments() {
        let cfg = parse(&dtb(BASE)).unwrap();
        assert_eq!(cfg.partitions.len(), 2);
        let net = &cfg.partitions[0];
        assert_eq!(net.name, "net");
        assert_eq!(net.memory, [Region { base: PhysAddr(0x4800_0000), size: 0x400_0000 }]);
        assert_eq!(net.image, Some(Region { base: PhysAddr(0x6000_0000), size: 0x10_0000 }));
        assert_eq!(net.entry, Some(PhysAddr(0x4800_0000)));
        assert_eq!(net.bootargs, "probe own");
        assert!(net.manager && !net.dma_p2p);
        assert_eq!(net.fault_limit, Some((64, 1000)));
        let st = &cfg.partitions[1];
        assert_eq!(st.memory.len(), 2);
        assert!(st.dma_p2p && st.image.is_none());
        let a: Vec<_> = cfg.assignments.iter().map(|a| (a.path.as_str(), a.partition)).collect();
        assert_eq!(
            a,
            [
                ("/cpus/cpu@1", 0),
                ("/cpus/cpu@2", 1),
                ("/pcie@10000000/edu@1,0", 0),
                ("/pcie@10000000/port@2,0/edu@0,0", 1)
            ]
        );
        assert_eq!(cfg.assignments[0].target, Target::Cpu { mpidr: 1 });
        assert_eq!(
            cfg.assignments[3].target,
            Target::Pci {
                host: "/pcie@10000000".into(),
                chain: [PciStep { bus: 0, dev: 2, func: 0 }, PciStep { bus: 1, dev: 0, func: 0 }].into()
            }
        );
        assert_eq!(cfg.assignments[3].isolation_group, Some(7));
        assert_eq!(cfg.group_hints, [GroupHint { path: "/dma@9100000".into(), target: Target::Platform, group: 3 }]);
    }

    fn err(dts_edit: (&str, &str)) -> ConfigError {
        let src = BASE.replacen(dts_edit.0, dts_edit.1, 1);
        assert_ne!(src, BASE, "edit {:?} did not apply", dts_edit.0);
        parse(&dtb(&src)).unwrap_err()
    }

    #[test]
    fn refusals_name_node_and_property() {
        let cases: &[((&str, &str), &str, &str)] = &[
            (("memory = <0x0 0x48000000 0x0 0x04000000>;", ""), "/partitions/net", "memory"),
            (("memory = <0x0 0x48000000 0x0 0x04000000>;", "memory = <0x0 0x48000000 0x0>;"), "/partitions/net", "memory"),
            (("memory = <0x0 0x48000000 0x0 0x04000000>;", "memory = <0x0 0x48000000 0x0 0x0>;"), "/partitions/net", "memory"),
            (("bulkhead,entry = <0x0 0x48000000>;", ""), "/partitions/net", "bulkhead,entry"),
            (("bulkhead,entry = <0x0 0x48000000>;", "bulkhead,entry = <0x48000000>;"), "/partitions/net", "bulkhead,entry"),
            (("bulkhead,fault-limit = <64 1000>;", "bulkhead,fault-limit = <64>;"), "/partitions/net", "bulkhead,fault-limit"),
            (("bulkhead,fault-limit = <64 1000>;", "bulkhead,fault-limit = <0 1000>;"), "/partitions/net", "bulkhead,fault-limit"),
            (("storage: storage { compatible = \"bulkhead,partition\";", "storage: storage { compatible = \"foo\";"), "/partitions/storage", "compatible"),
            (("reg = <1>; bulkhead,partition = <&net>;", "reg = <1>; bulkhead,partition = <0x4242>;"), "/cpus/cpu@1", "bulkhead,partition"),
            (("reg = <1>; bulkhead,partition = <&net>;", "reg = <1>; bulkhead,partition = <&net &storage>;"), "/cpus/cpu@1", "bulkhead,partition"),
            (("edu@1,0 { reg = <0x0800 0 0 0 0>;", "edu@1,0 {"), "/pcie@10000000/edu@1,0", "bulkhead,partition"),
            (("compatible = \"bulkhead,partitions\"; #address-cells = <2>;", "compatible = \"bulkhead,partitions\"; #address-cells = <3>;"), "/partitions", "#address-cells"),
            (("cpu@2 { device_type = \"cpu\"; reg = <2>;", "cpu@2 { device_type = \"cpu\"; reg = <2>; bulkhead,isolation-group = <1>;"), "/cpus/cpu@2", "bulkhead,isolation-group"),
        ];
        for (edit, node, property) in cases {
            let e = err(*edit);
            assert_eq!((e.node.as_str(), e.property), (*node, *property), "{e}");
        }
    }

    #[test]
    fn no_partitions_node_is_an_empty_config() {
        let cfg = parse(&dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>; };")).unwrap();
        assert_eq!(cfg, Config::default());
    }
}
