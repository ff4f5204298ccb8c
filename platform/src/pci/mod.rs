//! PCI Express host-side support: configuration-space access, enumeration of
//! a host bridge into a plain [`HostTopology`], and the per-function controls
//! the ownership work needs (bus master, memory decode, function-level reset).
//!
//! Everything goes through the small [`ConfigSpace`] trait, so enumeration is
//! tested on the host against a synthetic ECAM; the kernel implements the
//! trait with [`ecam::EcamConfigSpace`] (volatile MMIO, the one `unsafe`
//! constructor of this module).
//!
//! Register offsets and bits are named as in the PCI Local Bus Specification
//! 3.0 (type 0/1 headers, §6.1 and PCI-to-PCI Bridge Spec 1.2 §3.2) and the
//! PCI Express Base Specification (§7.5.3 PCI Express Capability, §7.7.8 ACS
//! Extended Capability).

pub mod caps;
pub mod control;
pub mod ecam;
pub mod enumerate;
#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;

pub use control::{function_level_reset, set_bus_master, set_command, set_memory_decode};
/// What enumeration finds, as plain data: the topology types live in the
/// pure `devicetree` crate, which discovery, the policy and the offline
/// checker share.
pub use devicetree::pci::{Acs, AcsFlags, Bar, Bdf, BridgeInfo, Function, FunctionKind, HostTopology, Window};
pub use enumerate::enumerate;

/// Configuration-space registers, the access trait and its constants: the
/// pure `devicetree` crate's, shared with the policy's virtual PCI host.
pub use devicetree::pci::config::{regs, ConfigSpace, CONFIG_SPACE_SIZE, NO_DEVICE};

/// Why enumeration or a function control failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// A bridge needs a bus number beyond the host bridge's `bus-range`.
    BusesExhausted {
        /// The bridge.
        bridge: Bdf,
    },
    /// Bridges nested deeper than the kernel follows.
    TooDeep {
        /// The bridge that would go one level too deep.
        bridge: Bdf,
    },
    /// No `ranges` window of the right kind has room for a BAR.
    WindowExhausted {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        bar: u8,
        /// BAR size.
        size: u64,
    },
    /// A 64-bit BAR in the last BAR slot (its upper half does not exist).
    BadBar {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        bar: u8,
    },
    /// No function answers at this address.
    NotPresent(Bdf),
    /// The function does not support Function Level Reset.
    FlrUnsupported(Bdf),
    /// After an FLR the function did not answer within the time allowed.
    FlrTimeout(Bdf),
}

impl defmt::Format for PciError {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            PciError::BusesExhausted { bridge } => {
                defmt::write!(f, "bridge {}: no bus number left in the host bridge's bus-range", bridge)
            }
            PciError::TooDeep { bridge } => defmt::write!(f, "bridge {}: bridges nested too deeply", bridge),
            PciError::WindowExhausted { bdf, bar, size } => {
                defmt::write!(f, "{} BAR{=u8} ({=u64:#x} bytes): no room left in the host bridge's memory windows", bdf, bar, size)
            }
            PciError::BadBar { bdf, bar } => defmt::write!(f, "{} BAR{=u8}: 64-bit BAR in the last slot", bdf, bar),
            PciError::NotPresent(bdf) => defmt::write!(f, "{}: no function answers", bdf),
            PciError::FlrUnsupported(bdf) => defmt::write!(f, "{}: no Function Level Reset capability", bdf),
            PciError::FlrTimeout(bdf) => defmt::write!(f, "{}: did not come back after Function Level Reset", bdf),
        }
    }
}
