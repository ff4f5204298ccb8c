//! What a scenario's machine is, read from the DTB it booted with: its
//! SMMUs and PCI host bridges by name, so that checks say
//! `smmuv3@c020000` or `/pcie@4018000000` because the DT does, not
//! because a scenario wrote the name in.

use std::path::Path;
use std::process::Command;

/// An `arm,smmu-v3` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtSmmu {
    /// Node name with unit address (`smmuv3@9050000`), as the kernel logs it.
    pub name: String,
    /// Register base.
    pub base: u64,
    /// Its phandle (what `iommu-map` names).
    pub phandle: Option<u32>,
}

/// A `pci-host-ecam-generic` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtHost {
    /// Node path (`/pcie@10000000`), as the kernel logs it.
    pub path: String,
    /// `bus-range`.
    pub buses: (u32, u32),
    /// ECAM base (from `reg`).
    pub ecam: u64,
    /// Index in [`Machine::smmus`] of the SMMU its first `iommu-map` entry names.
    pub smmu: Option<usize>,
}

/// The SMMUs and host bridges of a DTB, in DT order (the kernel's order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// Every `arm,smmu-v3` root child.
    pub smmus: Vec<DtSmmu>,
    /// Every PCI host bridge root child.
    pub hosts: Vec<DtHost>,
}

fn fdtget(dtb: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("fdtget").arg(dtb).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn cells(dtb: &Path, node: &str, prop: &str) -> Vec<u64> {
    let out = Command::new("fdtget").args(["-t", "x"]).arg(dtb).args([node, prop]).output();
    let Ok(o) = out else { return Vec::new() };
    String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|w| u64::from_str_radix(w, 16).ok()).collect()
}

impl Machine {
    /// Reads `dtb` (with `fdtget`).
    pub fn read(dtb: &Path) -> Result<Machine, String> {
        let roots = fdtget(dtb, &["-l", "/"]).ok_or_else(|| format!("fdtget cannot list the root of {}", dtb.display()))?;
        let mut m = Machine::default();
        let mut phandles = Vec::new();
        let mut host_maps = Vec::new();
        for name in roots.lines().map(str::trim) {
            let path = format!("/{name}");
            let compatible = fdtget(dtb, &[&path, "compatible"]).unwrap_or_default();
            let reg = cells(dtb, &path, "reg");
            let base = match reg[..] {
                [hi, lo, ..] => (hi << 32) | lo,
                _ => 0,
            };
            if compatible.split_whitespace().any(|c| c == "arm,smmu-v3") {
                let phandle = cells(dtb, &path, "phandle").first().map(|&p| p as u32);
                phandles.push(phandle);
                m.smmus.push(DtSmmu { name: name.to_string(), base, phandle });
            } else if compatible.split_whitespace().any(|c| c == "pci-host-ecam-generic") {
                let b = cells(dtb, &path, "bus-range");
                let buses = (b.first().copied().unwrap_or(0) as u32, b.get(1).copied().unwrap_or(0xff) as u32);
                let map = cells(dtb, &path, "iommu-map");
                host_maps.push(map.get(1).map(|&p| p as u32));
                m.hosts.push(DtHost { path, buses, ecam: base, smmu: None });
            }
        }
        // iommu-map phandles to SMMU indices (once every SMMU is read).
        for (h, map) in m.hosts.iter_mut().zip(host_maps) {
            h.smmu = map.and_then(|p| phandles.iter().position(|&x| x == Some(p)));
        }
        Ok(m)
    }

    /// The machine of a run ([`crate::qemu::Outcome::dtb`]).
    pub fn of(o: &crate::qemu::Outcome) -> Result<Machine, String> {
        let dtb = o.dtb.as_deref().ok_or("the run kept no DTB to read the machine from")?;
        Machine::read(dtb)
    }

    /// The host bridge whose bus range holds `bus`.
    pub fn host_of_bus(&self, bus: u32) -> Option<&DtHost> {
        self.hosts.iter().find(|h| (h.buses.0..=h.buses.1).contains(&bus))
    }

    /// The SMMU a requester ID on `bus` reaches (through its host's `iommu-map`).
    pub fn smmu_of_bus(&self, bus: u32) -> Option<&DtSmmu> {
        self.smmus.get(self.host_of_bus(bus)?.smmu?)
    }

    /// The first SMMU's name (`"?"` when there is none, which the checks
    /// that use it then fail on).
    pub fn first_smmu(&self) -> &str {
        self.smmus.first().map_or("?", |s| s.name.as_str())
    }

    /// The first host bridge's path (`"?"` when there is none).
    pub fn first_host(&self) -> &str {
        self.hosts.first().map_or("?", |h| h.path.as_str())
    }
}
