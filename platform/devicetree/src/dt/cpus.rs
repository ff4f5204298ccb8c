//! `/cpus` and its `cpu` nodes (Devicetree Specification v0.4, §3.7,
//! §3.8): each enabled CPU's MPIDR (`reg`) and `enable-method`.

use super::blob::be_cells;
use super::{DeviceTree, DtError, DtNode};
use arrayvec::ArrayVec;

/// Most CPUs the kernel handles.
pub const MAX_CPUS: usize = 64;

/// A CPU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuNode {
    /// MPIDR affinity from `reg`.
    pub mpidr: u64,
    /// `enable-method` is "psci".
    pub psci: bool,
}

impl<'a> DeviceTree<'a> {
    /// Enabled CPUs under `/cpus`.
    pub fn cpus(&self) -> Result<ArrayVec<CpuNode, MAX_CPUS>, DtError> {
        let cpus = self.find("/cpus")?.ok_or(DtError::MissingNode("/cpus"))?;
        // Only `#address-cells` matters (a CPU's `reg` has no size).
        let (ac, _, first) = cpus.scan();
        let ac = cpus.addr_cells_of(ac)? as usize;
        let mut out = ArrayVec::new();
        for place in cpus.child_places(first) {
            let c = DtNode { blob: self.blob, place, addr_cells: ac as u32, size_cells: 0, depth: 2 };
            let [device_type, status, reg, method] = c.first_of(["device_type", "status", "reg", "enable-method"]);
            if c.str_value("device_type", device_type)? != Some("cpu") || !DtNode::enabled(status) {
                continue;
            }
            let reg = reg.ok_or_else(|| c.bad("reg", "missing (the CPU's MPIDR)"))?;
            if reg.len() != ac * 4 {
                return Err(c.bad("reg", "length is not the parent's #address-cells"));
            }
            let mpidr = be_cells(reg, ac).ok_or_else(|| c.bad("reg", "more than 2 cells"))?;
            let psci = c.str_value("enable-method", method)? == Some("psci");
            out.try_push(CpuNode { mpidr, psci }).map_err(|_| DtError::TooMany("CPUs"))?;
        }
        if out.is_empty() {
            return Err(DtError::MissingNode("/cpus/cpu"));
        }
        Ok(out)
    }
}
