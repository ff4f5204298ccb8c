//! The QEMU side of bulkhead's tests: boots the kernel image under QEMU,
//! decodes its defmt log, parses QEMU's own SMMU trace, and runs scenarios
//! that assert on both.
//!
//! `cargo xtask run` uses the same runner to boot the demo.

pub mod debian;
pub mod dtb;
pub mod image;
pub mod linux;
pub mod log;
pub mod machine;
pub mod qemu;
pub mod scenario;
pub mod scenarios;
pub mod trace;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where harness artefacts (dumped DTBs, traces) go.
pub fn work_dir() -> PathBuf {
    let d = workspace_root().join("target").join("bulkhead");
    std::fs::create_dir_all(&d).expect("can create target/bulkhead");
    d
}

/// What the scenarios boot: the kernel ELF and the partition payload image.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The kernel ELF (`-kernel`).
    pub kernel: PathBuf,
    /// The flat partition payload (loaded at each partition's `bulkhead,image`).
    pub payload: PathBuf,
}
