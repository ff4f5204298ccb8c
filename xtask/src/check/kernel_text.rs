//! The kernel's words for what stops it, so the checker prints exactly
//! what a boot would.
//!
//! Configuration refusals, overlay and device-tree errors and addresses
//! have a `Display` in the kernel's own crates (`ConfigError`,
//! `OverlayError`, `DtError` — whose log text is that `Display` —,
//! `PhysAddr`, `PhysRange`, whose log and `Display` texts are held together
//! by devicetree's tests). Only the prefixes the kernel's boot code adds are
//! restated here; the test at the end checks they are still in its source.

use devicetree::overlay::OverlayError;
use devicetree::DtError;
use devicetree::{PhysAddr, PhysRange};
use partitions::binding::ConfigError;

/// The kernel's format strings with only `{}` placeholders, by name; each
/// is checked to appear verbatim in the named kernel source.
macro_rules! kernel_format {
    (refused) => {
        "configuration refused: {}"
    };
    (cannot_boot) => {
        "cannot boot: {}"
    };
    (dt_at) => {
        "cannot boot: device tree at {}: {}"
    };
    (discovery) => {
        "cannot boot: discovery: {}"
    };
    (ecam_unmapped) => {
        "cannot boot: PCI host {=str}: ECAM {} is not in the kernel's MMIO map"
    };
}

/// `configuration refused: ...` (boot.rs `refused`).
pub fn refused(e: &ConfigError) -> String {
    format!(kernel_format!(refused), e)
}

/// `cannot boot: overlays[i]: ...` (boot.rs `overlay_err`).
pub fn overlay(e: &OverlayError) -> String {
    format!(kernel_format!(cannot_boot), e)
}

/// `cannot boot: ...` for a device-tree error (boot.rs `dt_err`).
pub fn dt(e: &DtError) -> String {
    format!(kernel_format!(cannot_boot), e)
}

/// A DTB the kernel cannot even parse (boot.rs `entry`).
pub fn dt_at(at: PhysAddr, e: &DtError) -> String {
    format!(kernel_format!(dt_at), at, e)
}

/// A device-tree error found by discovery (discover.rs `dt_err`).
pub fn discovery(e: &DtError) -> String {
    format!(kernel_format!(discovery), e)
}

/// A host bridge whose ECAM window the kernel does not map (discover.rs `run`).
pub fn ecam_unmapped(path: &str, ecam: PhysRange) -> String {
    kernel_format!(ecam_unmapped).replacen("{=str}", path, 1).replacen("{}", &ecam.to_string(), 1)
}

/// `cannot boot: WHAT` of boot.rs `platform_err` and `boot_map_err`.
pub fn platform(what: &str) -> String {
    format!(kernel_format!(cannot_boot), what)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn source(path: &str) -> String {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn boot_messages_are_the_kernels() {
        let boot = source("boards/kernel/src/boot.rs");
        let discover = source("boards/kernel/src/discover.rs");
        for (src, f) in [
            (&boot, kernel_format!(refused)),
            (&boot, kernel_format!(cannot_boot)),
            (&boot, kernel_format!(dt_at)),
            (&discover, kernel_format!(discovery)),
            (&discover, kernel_format!(ecam_unmapped)),
        ] {
            assert!(src.contains(&format!("\"{f}\"")), "the kernel no longer prints {f:?}");
        }
    }
}
