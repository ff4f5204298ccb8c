//! The partition binding (boards/bindings/bulkhead,partitions.yaml): `/partitions` and the
//! `bulkhead,partition` assignments, read from the merged device tree into a
//! typed [`Config`]. Only the *shape* is checked here (properties present,
//! cell counts, phandles resolving); whether the configuration is safe on
//! this machine is `validate`'s job.
//!
//! Every error names the node (full path) and the property.
//!
//! The reading ([`parse`], [`parse_tree`]) goes through `devicetree`, the
//! kernel's own device-tree reader (pure: the partition payload links it
//! with this crate, and never `platform`).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use devicetree::pci::Bdf;
use devicetree::PhysAddr;

mod read;
pub use read::{parse, parse_tree};

/// Compatible of the container node.
pub const PARTITIONS_COMPATIBLE: &str = "bulkhead,partitions";
/// Compatible of each partition node.
pub const PARTITION_COMPATIBLE: &str = "bulkhead,partition";
/// The assignment property on CPUs and DMA masters.
pub const PROP_PARTITION: &str = "bulkhead,partition";
/// The optional group-merging property.
pub const PROP_ISOLATION_GROUP: &str = "bulkhead,isolation-group";

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
    /// Where the loader put an initial ramdisk (`bulkhead,initrd`): copied
    /// into the partition's memory and named in its `/chosen`.
    pub initrd: Option<Region>,
    /// Becomes `/chosen/bootargs` of the partition.
    pub bootargs: String,
    /// May move groups at run time.
    pub manager: bool,
    /// Faults per window (count, window in ms) before quarantine.
    pub fault_limit: Option<(u32, u32)>,
    /// What it may make the kernel print, per second.
    pub log_limit: Option<crate::budget::LogLimit>,
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
        /// phys.hi, device, function; boards/bindings/bulkhead,partitions.yaml: `reg` phys.hi =
        /// bus<<16 | dev<<11 | fn<<8), outermost first.
        chain: Vec<Bdf>,
    },
    /// Any other node: a platform DMA master.
    Platform,
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
