//! Newtypes that cross module boundaries: addresses and identifiers
//! (IHI 0070 ch. 3: StreamID, SubstreamID, ASID/VMID tagging).
//!
//! No bare `u64` leaves this crate meaning an address.

use core::fmt;

macro_rules! addr_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub struct $name(pub u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(addr: u64) -> Self {
                Self(addr)
            }

            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `true` when the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                align != 0 && self.0 & (align - 1) == 0
            }

            /// `self + bytes`, or `None` on overflow.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

addr_newtype!(
    /// A physical (output) address, as the SMMU emits it on the interconnect.
    PhysAddr
);
addr_newtype!(
    /// An input address of a translation domain: the address a device puts on
    /// the bus. For a stage-2 domain it is an [`Ipa`]; for a stage-1 domain a
    /// virtual address.
    Iova
);
addr_newtype!(
    /// An intermediate physical address (stage-2 input, IHI 0070 §3.4).
    Ipa
);

impl From<Ipa> for Iova {
    fn from(ipa: Ipa) -> Self {
        Iova(ipa.0)
    }
}

/// StreamID: identifies the device (for PCI, the requester ID) — IHI 0070 ch. 3.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StreamId(pub u32);

/// SubstreamID (PASID): selects a context descriptor — IHI 0070 §3.3.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubstreamId(pub u32);

/// Virtual machine identifier tagging stage-2 TLB entries — IHI 0070 ch. 3.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Vmid(pub u16);

/// Address space identifier tagging stage-1 TLB entries — IHI 0070 ch. 3.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Asid(pub u16);
