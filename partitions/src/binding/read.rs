//! Reading the binding from a checked tree, through `devicetree`'s reader.

use super::{Assignment, Config, ConfigError, GroupHint, PartitionConfig, Region, Target};
use super::{PARTITIONS_COMPATIBLE, PARTITION_COMPATIBLE, PROP_ISOLATION_GROUP, PROP_PARTITION};
use crate::budget::LogLimit;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use devicetree::pci::Bdf;
use devicetree::PhysAddr;
use devicetree::{DeviceTree, DtError, DtNode};

/// Deepest nesting the binding walk follows.
const MAX_DEPTH: usize = 16;

fn cells(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// A number of `n` (1 or 2) cells.
fn number(c: &[u32]) -> u64 {
    c.iter().fold(0u64, |acc, &x| (acc << 32) | u64::from(x))
}

fn string_prop(n: &DtNode<'_>, path: &str, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(v) = n.prop(name) else { return Ok(None) };
    let end = v.iter().position(|&b| b == 0).ok_or_else(|| ConfigError::new(path, name, "not a NUL-terminated string"))?;
    core::str::from_utf8(&v[..end]).map(|s| Some(s.to_string())).map_err(|_| ConfigError::new(path, name, "not valid UTF-8"))
}

fn one_cell(n: &DtNode<'_>, path: &str, name: &'static str) -> Result<Option<u32>, ConfigError> {
    one_cell_in(n.prop(name), path, name)
}

/// `v`, the value of property `name`, as one cell.
fn one_cell_in(v: Option<&[u8]>, path: &str, name: &'static str) -> Result<Option<u32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(v) if v.len() == 4 => Ok(cells(v).next()),
        Some(v) => Err(ConfigError::new(path, name, format!("expected one cell, found {} bytes", v.len()))),
    }
}

fn cell_count(n: &DtNode<'_>, path: &str, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    let v = one_cell(n, path, name)?.unwrap_or(default);
    if v == 0 || v > 2 {
        return Err(ConfigError::new(path, name, format!("must be 1 or 2, is {v}")));
    }
    Ok(v)
}

fn is_compatible(n: &DtNode<'_>, c: &str) -> bool {
    n.prop("compatible").is_some_and(|v| v.split(|&b| b == 0).any(|s| s == c.as_bytes()))
}

fn is_enabled(n: &DtNode<'_>) -> bool {
    n.prop("status").is_none_or(|v| matches!(v, b"okay\0" | b"ok\0"))
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
        return Err(ConfigError::new(path, name, format!("length {} bytes is not a multiple of (#address-cells {ac} + #size-cells {sc}) cells", v.len())));
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

fn parse_partition(n: &DtNode<'_>, path: &str, ac: u32, sc: u32) -> Result<PartitionConfig, ConfigError> {
    if !is_compatible(n, PARTITION_COMPATIBLE) {
        return Err(ConfigError::new(path, "compatible", format!("a /partitions child must be compatible with \"{PARTITION_COMPATIBLE}\"")));
    }
    let memory = match n.prop("memory") {
        Some(v) => regions(v, path, "memory", ac, sc)?,
        None => return Err(ConfigError::new(path, "memory", "missing (every partition needs RAM)")),
    };
    let image = match n.prop("bulkhead,image") {
        Some(v) => {
            let r = regions(v, path, "bulkhead,image", ac, sc)?;
            if r.len() != 1 {
                return Err(ConfigError::new(path, "bulkhead,image", "expected exactly one (address, size)"));
            }
            Some(r[0])
        }
        None => None,
    };
    // boards/bindings/bulkhead,partitions.yaml: bulkhead,initrd, where the
    // loader put an initial ramdisk the kernel copies in and describes.
    let initrd = match n.prop("bulkhead,initrd") {
        Some(v) => {
            let r = regions(v, path, "bulkhead,initrd", ac, sc)?;
            if r.len() != 1 || r[0].size == 0 {
                return Err(ConfigError::new(path, "bulkhead,initrd", "expected exactly one non-empty (address, size)"));
            }
            Some(r[0])
        }
        None => None,
    };
    let entry = match n.prop("bulkhead,entry") {
        Some(v) if v.len() == ac as usize * 4 => Some(PhysAddr(number(&cells(v).collect::<Vec<_>>()))),
        Some(v) => return Err(ConfigError::new(path, "bulkhead,entry", format!("expected {ac} address cell(s), found {} bytes", v.len()))),
        None => None,
    };
    if image.is_some() != entry.is_some() {
        let missing = if image.is_some() { "bulkhead,entry" } else { "bulkhead,image" };
        return Err(ConfigError::new(path, missing, "missing (bulkhead,image and bulkhead,entry go together)"));
    }
    if initrd.is_some() && image.is_none() {
        return Err(ConfigError::new(path, "bulkhead,initrd", "an initrd needs a bulkhead,image to boot it"));
    }
    let fault_limit = match n.prop("bulkhead,fault-limit") {
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
    let log_limit = match n.prop("bulkhead,log-limit") {
        Some(v) if v.len() == 8 => {
            let c: Vec<u32> = cells(v).collect();
            Some(LogLimit { console_bytes: c[0], refused_calls: c[1] })
        }
        Some(_) => return Err(ConfigError::new(path, "bulkhead,log-limit", "expected <console-bytes refused-calls> per second (two cells)")),
        None => None,
    };
    Ok(PartitionConfig {
        name: n.name().to_string(),
        path: path.to_string(),
        phandle: one_cell(n, path, "phandle")?,
        memory,
        image,
        entry,
        initrd,
        bootargs: string_prop(n, path, "bulkhead,bootargs")?.unwrap_or_default(),
        manager: n.prop("bulkhead,manager").is_some(),
        fault_limit,
        log_limit,
        dma_p2p: n.prop("bulkhead,dma-p2p").is_some(),
    })
}

/// The properties the walk reads of every node, from one pass over them
/// (the first of each name, as [`DtNode::prop`] gives it).
#[derive(Clone, Copy, Default)]
struct Seen<'a> {
    address_cells: Option<&'a [u8]>,
    reg: Option<&'a [u8]>,
    device_type: Option<&'a [u8]>,
    partition: Option<&'a [u8]>,
    isolation_group: Option<&'a [u8]>,
}

impl<'a> Seen<'a> {
    fn of(n: &DtNode<'a>) -> Seen<'a> {
        let mut s = Seen::default();
        for (name, v) in n.properties() {
            let slot = match name {
                b"#address-cells" => &mut s.address_cells,
                b"reg" => &mut s.reg,
                b"device_type" => &mut s.device_type,
                name if name == PROP_PARTITION.as_bytes() => &mut s.partition,
                name if name == PROP_ISOLATION_GROUP.as_bytes() => &mut s.isolation_group,
                _ => continue,
            };
            slot.get_or_insert(v);
        }
        s
    }
}

/// What the walk knows of a node and its ancestors: where its path and its
/// PCI steps end in the walk's, and what lies above it.
#[derive(Clone, Copy)]
struct Frame {
    path: usize,
    chain: usize,
    /// Under `/cpus`.
    in_cpus: bool,
    /// The host bridge's path, as the length of its prefix of the walk's path.
    pci_host: Option<usize>,
    /// `/partitions` or below it (read by [`parse_tree`] itself).
    skip: bool,
}

/// Why the walk stopped.
enum Stop {
    /// The tree's own structure (which discovery refuses first).
    Tree(DtError),
    /// The binding.
    Binding(ConfigError),
}

impl From<DtError> for Stop {
    fn from(e: DtError) -> Stop {
        Stop::Tree(e)
    }
}

impl From<ConfigError> for Stop {
    fn from(e: ConfigError) -> Stop {
        Stop::Binding(e)
    }
}

/// A tree error as a configuration error (`dtoolkit`'s words for a blob
/// that fails the structure check, as they have always read here).
fn tree_error(e: DtError) -> ConfigError {
    match e {
        DtError::Malformed(why) => ConfigError::new("/", "", format!("malformed device tree: {}", why.as_str())),
        e => ConfigError::new("/", "", e.to_string()),
    }
}

/// Reads the binding from a device tree blob (checked here).
pub fn parse(blob: &[u8]) -> Result<Config, ConfigError> {
    parse_tree(&DeviceTree::parse(blob).map_err(tree_error)?)
}

/// Reads the binding from a checked tree: `/partitions`, then every other
/// node in one pass in blob order.
pub fn parse_tree(dt: &DeviceTree<'_>) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let root = dt.root();
    let parts = dt.children(&root).map_err(tree_error)?.find(|c| c.name() == "partitions");
    if let Some(parts) = parts {
        let path = "/partitions";
        if !is_compatible(&parts, PARTITIONS_COMPATIBLE) {
            return Err(ConfigError::new(path, "compatible", format!("must be \"{PARTITIONS_COMPATIBLE}\"")));
        }
        let ac = cell_count(&parts, path, "#address-cells", 2)?;
        let sc = cell_count(&parts, path, "#size-cells", 1)?;
        for c in dt.children(&parts).map_err(tree_error)? {
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
    let mut path = String::from("/");
    let mut chain: Vec<Bdf> = Vec::new();
    // `frames[d]`: the node the walk last saw at depth `d`.
    let mut frames: Vec<Frame> = Vec::new();
    let walked = dt.walk::<Stop>(&mut |n| {
        let seen = Seen::of(n);
        let Some(parent) = n.depth.checked_sub(1).and_then(|d| frames.get(d)).copied() else {
            // The root.
            frames.clear();
            one_cell_in(seen.address_cells, "/", "#address-cells")?;
            frames.push(Frame { path: 1, chain: 0, in_cpus: false, pci_host: None, skip: false });
            return Ok(());
        };
        frames.truncate(n.depth);
        path.truncate(parent.path);
        chain.truncate(parent.chain);
        if n.depth > 1 {
            path.push('/');
        }
        path.push_str(n.name());
        let mut f = Frame { path: path.len(), ..parent };
        if n.depth == 1 && n.name() == "partitions" {
            f.skip = true;
        }
        if !f.skip {
            f.chain = visit_node(n, &seen, &mut f, &path, &mut chain, &mut cfg)?;
        }
        frames.push(f);
        Ok(())
    });
    match walked {
        Ok(()) => Ok(cfg),
        Err(Stop::Binding(e)) => Err(e),
        Err(Stop::Tree(e)) => Err(tree_error(e)),
    }
}

/// The checks on node `n` (at `path`, in the frame `f` its parent left),
/// its PCI step, then [`visit`]; returns where its PCI steps end.
fn visit_node(n: &DtNode<'_>, seen: &Seen<'_>, f: &mut Frame, path: &str, chain: &mut Vec<Bdf>, cfg: &mut Config) -> Result<usize, ConfigError> {
    if n.depth > MAX_DEPTH {
        return Err(ConfigError::new(path, "", "nested too deeply"));
    }
    one_cell_in(seen.address_cells, path, "#address-cells")?;
    if n.depth == 1 && n.name() == "cpus" {
        f.in_cpus = true;
    }
    if f.pci_host.is_some() {
        // A node under a PCI bus: its `reg` phys.hi names the function.
        if let Some(v) = seen.reg {
            if n.addr_cells != 3 || v.len() < 12 {
                return Err(ConfigError::new(path, "reg", "a PCI function's reg needs 3 address cells (phys.hi phys.mid phys.lo)"));
            }
            let hi = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            chain.push(Bdf::new((hi >> 16) as u8, (hi >> 11) as u8, (hi >> 8) as u8));
        }
    } else if seen.device_type == Some(b"pci\0") {
        f.pci_host = Some(path.len());
    }
    visit(seen, f, path, chain, cfg)?;
    Ok(chain.len())
}

fn visit(n: &Seen<'_>, ctx: &Frame, path: &str, chain: &[Bdf], cfg: &mut Config) -> Result<(), ConfigError> {
    let assigned = n.partition;
    let group = one_cell_in(n.isolation_group, path, PROP_ISOLATION_GROUP)?;
    if assigned.is_none() && group.is_none() {
        return Ok(());
    }
    let target = if ctx.in_cpus && n.device_type == Some(b"cpu\0") {
        let reg = n.reg.ok_or_else(|| ConfigError::new(path, "reg", "a CPU node needs reg (its MPIDR)"))?;
        if reg.is_empty() || reg.len() > 8 || reg.len() % 4 != 0 {
            return Err(ConfigError::new(path, "reg", "a CPU's reg must be 1 or 2 cells"));
        }
        Target::Cpu { mpidr: number(&cells(reg).collect::<Vec<_>>()) }
    } else if let (Some(host), false) = (ctx.pci_host, chain.is_empty()) {
        Target::Pci { host: path.get(..host).unwrap_or(path).to_string(), chain: chain.to_vec() }
    } else if ctx.pci_host.is_some() {
        return Err(ConfigError::new(path, PROP_PARTITION, "a node under a PCI host bridge must have reg naming its device and function"));
    } else {
        Target::Platform
    };
    let Some(v) = assigned else {
        cfg.group_hints.push(GroupHint { path: path.to_string(), target, group: group.unwrap_or(0) });
        return Ok(());
    };
    if v.len() != 4 {
        return Err(ConfigError::new(path, PROP_PARTITION, "expected exactly one phandle (<&partition>)"));
    }
    let ph = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let partition = cfg
        .partitions
        .iter()
        .position(|p| p.phandle == Some(ph))
        .ok_or_else(|| ConfigError::new(path, PROP_PARTITION, format!("phandle {ph:#x} is not a child of /partitions")))?;
    if let Target::Cpu { .. } = target {
        if group.is_some() {
            return Err(ConfigError::new(path, PROP_ISOLATION_GROUP, "only DMA masters have isolation groups"));
        }
    }
    cfg.assignments.push(Assignment { path: path.to_string(), partition, target, isolation_group: group });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    use devicetree::testutil::{dtb, next};

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
            bulkhead,manager; bulkhead,fault-limit = <64 1000>; bulkhead,log-limit = <512 0>; };
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
        assert_eq!(net.log_limit, Some(LogLimit { console_bytes: 512, refused_calls: 0 }));
        let st = &cfg.partitions[1];
        assert_eq!(st.memory.len(), 2);
        assert!(st.dma_p2p && st.image.is_none());
        let a: Vec<_> = cfg.assignments.iter().map(|a| (a.path.as_str(), a.partition)).collect();
        assert_eq!(a, [("/cpus/cpu@1", 0), ("/cpus/cpu@2", 1), ("/pcie@10000000/edu@1,0", 0), ("/pcie@10000000/port@2,0/edu@0,0", 1)]);
        assert_eq!(cfg.assignments[0].target, Target::Cpu { mpidr: 1 });
        assert_eq!(cfg.assignments[3].target, Target::Pci { host: "/pcie@10000000".into(), chain: [Bdf::new(0, 2, 0), Bdf::new(1, 0, 0)].into() });
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
            (
                ("bulkhead,entry = <0x0 0x48000000>;", "bulkhead,entry = <0x0 0x48000000>; bulkhead,initrd = <0x0 0x62000000 0x0>;"),
                "/partitions/net",
                "bulkhead,initrd",
            ),
            (
                ("bulkhead,entry = <0x0 0x48000000>;", "bulkhead,entry = <0x0 0x48000000>; bulkhead,initrd = <0x0 0x62000000 0x0 0x0>;"),
                "/partitions/net",
                "bulkhead,initrd",
            ),
            (
                (
                    "storage: storage { compatible = \"bulkhead,partition\";",
                    "storage: storage { compatible = \"bulkhead,partition\"; bulkhead,initrd = <0x0 0x62000000 0x0 0x1000>;",
                ),
                "/partitions/storage",
                "bulkhead,initrd",
            ),
            (("bulkhead,fault-limit = <64 1000>;", "bulkhead,fault-limit = <64>;"), "/partitions/net", "bulkhead,fault-limit"),
            (("bulkhead,fault-limit = <64 1000>;", "bulkhead,fault-limit = <0 1000>;"), "/partitions/net", "bulkhead,fault-limit"),
            (("bulkhead,log-limit = <512 0>;", "bulkhead,log-limit = <512>;"), "/partitions/net", "bulkhead,log-limit"),
            (("storage: storage { compatible = \"bulkhead,partition\";", "storage: storage { compatible = \"foo\";"), "/partitions/storage", "compatible"),
            (("reg = <1>; bulkhead,partition = <&net>;", "reg = <1>; bulkhead,partition = <0x4242>;"), "/cpus/cpu@1", "bulkhead,partition"),
            (("reg = <1>; bulkhead,partition = <&net>;", "reg = <1>; bulkhead,partition = <&net &storage>;"), "/cpus/cpu@1", "bulkhead,partition"),
            (("edu@1,0 { reg = <0x0800 0 0 0 0>;", "edu@1,0 {"), "/pcie@10000000/edu@1,0", "bulkhead,partition"),
            (
                ("compatible = \"bulkhead,partitions\"; #address-cells = <2>;", "compatible = \"bulkhead,partitions\"; #address-cells = <3>;"),
                "/partitions",
                "#address-cells",
            ),
            (
                ("cpu@2 { device_type = \"cpu\"; reg = <2>;", "cpu@2 { device_type = \"cpu\"; reg = <2>; bulkhead,isolation-group = <1>;"),
                "/cpus/cpu@2",
                "bulkhead,isolation-group",
            ),
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

    /// QEMU `virt`'s DTB with the demo overlay merged, as the kernel reads it.
    fn demo_merged() -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let demo = std::fs::read_to_string(root.join("boards/qemu-virt/overlays/demo.dts")).expect("demo.dts");
        let overlay = devicetree::testutil::dtc(&["-@"], &demo);
        let base = std::fs::read(root.join("tests/checker/qemu-virt.dtb")).expect("qemu-virt.dtb");
        devicetree::overlay::apply(&base, &[&overlay]).expect("the demo overlay applies")
    }

    // Structure-block tokens (Devicetree Specification v0.4, §5.4.1).
    use devicetree::fdt::{FDT_BEGIN_NODE, FDT_END_NODE, FDT_NOP, FDT_PROP};

    fn be(b: &[u8], at: usize) -> usize {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
    }

    /// Spans of a blob: (offset, length) or (begin, end).
    type Spans = Vec<(usize, usize)>;

    /// The `FDT_PROP`s (offset, length) and nodes (begin, end) of a valid blob.
    fn tokens(b: &[u8]) -> (Spans, Spans) {
        let (mut props, mut nodes, mut open) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = be(b, 8);
        loop {
            match be(b, at) as u32 {
                FDT_BEGIN_NODE => {
                    open.push(at);
                    at = (at + 4 + b[at + 4..].iter().position(|&c| c == 0).unwrap() + 1 + 3) & !3;
                }
                FDT_PROP => {
                    props.push((at, be(b, at + 4)));
                    at = (at + 12 + be(b, at + 4) + 3) & !3;
                }
                FDT_END_NODE => {
                    let begin = open.pop().unwrap();
                    at += 4;
                    if !open.is_empty() {
                        nodes.push((begin, at));
                    }
                }
                FDT_NOP => at += 4,
                _ => return (props, nodes),
            }
        }
    }

    /// Thousands of corruptions of the demo as the kernel reads it, of the
    /// unit tests' tree and of its refusals — values, cell counts, names
    /// made to repeat, properties and whole nodes turned into NOPs, any
    /// byte — are each read into a configuration or refused with the node
    /// named, never a panic, and both happen often. What such edits must
    /// give is stated case by case in `tests/binding` (it was checked
    /// against the old walk over `dtoolkit`'s nodes, which these
    /// corruptions were once compared with).
    #[test]
    fn corrupted_trees_are_read_or_refused() {
        let mut bases = std::vec![demo_merged(), dtb(BASE)];
        for (a, b) in [
            ("bulkhead,fault-limit = <64 1000>;", "bulkhead,fault-limit = <64>;"),
            ("reg = <1>; bulkhead,partition = <&net>;", "reg = <1>; bulkhead,partition = <0x4242>;"),
            ("edu@1,0 { reg = <0x0800 0 0 0 0>;", "edu@1,0 {"),
            ("cpu@2 { device_type = \"cpu\"; reg = <2>;", "cpu@2 { device_type = \"cpu\"; reg = <2>; bulkhead,isolation-group = <1>;"),
            ("#address-cells = <3>; #size-cells = <2>;\n        edu", "#address-cells = <2>; #size-cells = <2>;\n        edu"),
        ] {
            bases.push(dtb(&BASE.replacen(a, b, 1)));
        }
        let (mut ok, mut refused) = (0, 0);
        for base in &bases {
            let (props, nodes) = tokens(base);
            let mut seed = 0x0b1d_1a9e_5eed_u64;
            for i in 0..3_000 {
                let mut b = base.clone();
                for _ in 0..1 + next(&mut seed) % 3 {
                    let r = next(&mut seed);
                    let (at, len) = props[(r >> 8) as usize % props.len()];
                    match (r >> 4) % 6 {
                        // A value byte, or a whole cell.
                        0 if len > 0 => b[at + 12 + (r >> 32) as usize % len] = (r >> 24) as u8,
                        1 if len >= 4 => {
                            let c = at + 12 + ((r >> 32) as usize % (len / 4)) * 4;
                            b[c..c + 4].copy_from_slice(&[0u32, 1, 2, 3, 0x800, u32::MAX][(r >> 48) as usize % 6].to_be_bytes());
                        }
                        // Another property's name (so names repeat).
                        2 => {
                            let other = props[(r >> 32) as usize % props.len()].0;
                            let v = be(base, other + 8) as u32;
                            b[at + 8..at + 12].copy_from_slice(&v.to_be_bytes());
                        }
                        // The property, or a whole node, turned into NOPs.
                        3 => (at..(at + 12 + len + 3) & !3).step_by(4).for_each(|w| b[w..w + 4].copy_from_slice(&FDT_NOP.to_be_bytes())),
                        4 => {
                            let (begin, end) = nodes[(r >> 32) as usize % nodes.len()];
                            (begin..end).step_by(4).for_each(|w| b[w..w + 4].copy_from_slice(&FDT_NOP.to_be_bytes()));
                        }
                        // Any byte.
                        _ => {
                            let i = (r >> 32) as usize % b.len();
                            b[i] = (r >> 24) as u8;
                        }
                    }
                }
                match parse(&b) {
                    Ok(cfg) => {
                        let n = cfg.partitions.len();
                        assert!(cfg.assignments.iter().all(|a| a.partition < n && a.path.starts_with('/')), "case {i}: {cfg:?}");
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(e.node.starts_with('/'), "case {i}: {e}");
                        refused += 1;
                    }
                }
            }
        }
        std::println!("{ok} configurations, {refused} refusals");
        assert!(ok > 1000 && refused > 1000, "{ok} configurations, {refused} refusals");
    }
}
