//! Every QEMU scenario, grouped by what it proves.

mod boot;
mod discovery;
mod image;
mod irq;
mod linux;
pub mod linux_partition;
pub mod linux_passthrough;
pub mod linux_peer;
mod ownership;
mod partitions;
mod smmu;
pub mod storm;
mod two_smmus;
mod uboot;

use crate::scenario::Scenario;

pub use uboot::U_BOOT;

/// All scenarios, in the order they are listed.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(boot::scenarios());
    v.extend(image::scenarios());
    v.extend(discovery::scenarios());
    v.extend(smmu::scenarios());
    v.extend(irq::scenarios());
    v.extend(partitions::scenarios());
    v.extend(ownership::scenarios());
    v.extend(storm::scenarios());
    v.extend(uboot::scenarios());
    v.extend(two_smmus::scenarios());
    v.extend(linux::scenarios());
    v.extend(linux_partition::scenarios());
    v.extend(linux_passthrough::scenarios());
    v.extend(linux_peer::scenarios());
    v
}
