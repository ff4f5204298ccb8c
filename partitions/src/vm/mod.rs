//! What a partition's virtual machine looks like to the software in it —
//! decided here, on the host-testable side; the kernel reads and writes the
//! registers these decisions name.
//!
//! - [`board`]: where the emulated devices sit in the partition's IPA
//!   space and the INTIDs they use.
//! - [`trap`]: the syndromes of the traps a partition takes to EL2 (data
//!   aborts on emulated MMIO, system-register accesses), decoded once.
//! - [`sysreg`]: what each trapped system register reads as (ID registers
//!   with what the partition may not use hidden, debug and PMU registers
//!   RAZ/WI, the EL1 physical timer RAZ/WI) and which SGIs a write to
//!   ICC_SGI1R_EL1 raises.
//! - [`psci`]: the partition's PSCI and SMCCC calls (DEN0022, DEN0028).
//! - [`vgic`]: the emulated GICv3 distributor and redistributors (IHI 0069),
//!   and which interrupts go into each vCPU's list registers.
//! - [`vuart`]: the emulated SBSA UART (Arm DEN0094 / PL011 register
//!   subset) its console is.
//! - [`vpci`]: the virtual PCI host bridge (an emulated ECAM of its own
//!   functions only).
//! - [`image`]: the arm64 Linux `Image` header (Documentation/arch/arm64/
//!   booting.rst) of a partition's image.
//!
//! Every emulated device shows a partition only what it owns: its own
//! vCPUs' SGIs and PPIs, the SPIs of its own devices and console, nothing of
//! another partition or of the kernel (DESIGN.md I8).

pub mod board;
pub mod image;
pub mod psci;
pub mod sysreg;
pub mod trap;
pub mod vgic;
pub mod vpci;
pub mod vuart;
