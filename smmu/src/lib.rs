//! Arm SMMUv3 driver library for bulkhead.
//!
//! The crate programs an SMMUv3 (Arm IHI 0070) through three small traits the
//! caller implements ([`hal::Mmio`], [`hal::DmaMemory`] and
//! [`embedded_hal::delay::DelayNs`]); it knows nothing of partitions, device
//! trees or boards, contains no inline assembly and no fixed addresses, and so
//! tests on the host against a software model of the SMMU.
//!
//! Order of use:
//! 1. [`gbpa_abort`] for every SMMU, before anything else (DMA blocked while
//!    the SMMU is disabled).
//! 2. [`probe`] → [`Features`]; refuses SMMUs the driver cannot serve.
//! 3. [`Smmu::new`] → bring-up with every stream aborting.
//! 4. [`Smmu::create_domain`], [`Smmu::map`] / [`Smmu::unmap`].
//! 5. [`Smmu::attach`] / [`Smmu::detach`].
//! 6. At run time: [`Smmu::drain_events`], [`Smmu::handle_gerror`],
//!    [`Smmu::stats`].
//!
//! Invariants the crate keeps (DESIGN.md I1): no STE is ever written with
//! `Config = bypass` (there is no API that could express one), GBPA is set to
//! abort before the SMMU is touched, and SMMUEN is only set once every STE
//! aborts.
//!
//! Section numbers cite Arm IHI 0070 (SMMUv3 architecture specification,
//! revision H.a); register, field, command and event names are the spec's.
#![no_std]
#![warn(missing_docs)]

pub mod cd;
pub mod cmdq;
pub mod domain;
mod driver;
pub mod error;
pub mod evtq;
pub mod features;
pub mod gerror;
pub mod hal;
pub mod pgtable;
pub mod regs;
pub mod ste;
pub mod strtab;
pub mod types;
mod wait;

pub use domain::{Domain, DomainConfig, DomainStage, StagePreference};
pub use driver::{gbpa_abort, gbpa_abort_with_timeout, is_blocking, probe, Config, Smmu, Stats, DEFAULT_TIMEOUT_US};
pub use error::{Error, Unsupported, WaitFor};
pub use evtq::DrainReport;
pub use evtq::{Event, EventType, FaultClass};
pub use features::Features;
pub use gerror::{CommandError, CommandErrorKind, GerrorReport, GlobalErrors};
pub use pgtable::{MemType, Perm, Prot};
pub use types::{Asid, Iova, Ipa, PhysAddr, StreamId, SubstreamId, Vmid};
