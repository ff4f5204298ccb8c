//! The binding walk as it was before it read tokens itself (over
//! `dtoolkit`'s nodes, a property lookup each), kept as the oracle the
//! tests compare the one-pass walk with.

use super::{cells, child_path, number, regions, MAX_DEPTH};
use crate::binding::{Assignment, Config, ConfigError, GroupHint, PartitionConfig, Target};
use crate::binding::{PARTITIONS_COMPATIBLE, PARTITION_COMPATIBLE, PROP_ISOLATION_GROUP, PROP_PARTITION};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};
use devicetree::pci::Bdf;
use devicetree::PhysAddr;

fn prop<'a>(n: &FdtNode<'a>, name: &str) -> Option<&'a [u8]> {
    n.property(name).and_then(|p| p.value_as::<&'a [u8]>().ok())
}

fn string_prop(n: &FdtNode<'_>, path: &str, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(v) = prop(n, name) else { return Ok(None) };
    let end = v.iter().position(|&b| b == 0).ok_or_else(|| ConfigError::new(path, name, "not a NUL-terminated string"))?;
    core::str::from_utf8(&v[..end]).map(|s| Some(s.to_string())).map_err(|_| ConfigError::new(path, name, "not valid UTF-8"))
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
        Some(v) => return Err(ConfigError::new(path, "bulkhead,entry", format!("expected {ac} address cell(s), found {} bytes", v.len()))),
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
    chain: Vec<Bdf>,
    /// This node's `#address-cells` (for its children's `reg`).
    addr_cells: u32,
}

/// Reads the binding from a parsed tree.
pub(super) fn parse_fdt(fdt: &Fdt<'_>) -> Result<Config, ConfigError> {
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
                cc.chain.push(Bdf::new((hi >> 16) as u8, (hi >> 11) as u8, (hi >> 8) as u8));
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
    let partition = cfg
        .partitions
        .iter()
        .position(|p| p.phandle == Some(ph))
        .ok_or_else(|| ConfigError::new(&ctx.path, PROP_PARTITION, format!("phandle {ph:#x} is not a child of /partitions")))?;
    if let Target::Cpu { .. } = target {
        if group.is_some() {
            return Err(ConfigError::new(&ctx.path, PROP_ISOLATION_GROUP, "only DMA masters have isolation groups"));
        }
    }
    cfg.assignments.push(Assignment { path: ctx.path.clone(), partition, target, isolation_group: group });
    Ok(())
}
