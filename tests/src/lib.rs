//! The QEMU side of bulkhead's tests: boots the kernel image under QEMU,
//! decodes its defmt log, parses QEMU's own SMMU trace, and runs scenarios
//! that assert on both.
//!
//! `cargo xtask run` uses the same runner to boot the demo.

pub mod corpus;
pub mod debian;
pub mod dtb;
pub mod image;
pub mod linux;
pub mod log;
pub mod machine;
/// The payload's bootargs words (`tests/payload/src/bootargs.rs`): the
/// same file, built here so its tests run on the host and the scenarios
/// know the payload's refusal.
#[path = "../payload/src/bootargs.rs"]
pub mod payload_bootargs;
pub mod production;
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

/// Which kernel image a run boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Image {
    /// What ships: no `bulkhead.selftest=` checks, no raw SMMU commands.
    #[default]
    Production,
    /// Built with the cargo feature `selftest` (`boards/kernel/src/selftest/`),
    /// for the scenarios that drive those checks.
    Selftest,
}

/// What the scenarios boot: the kernel ELFs and the partition payload image.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The production kernel ELF (`-kernel`).
    pub kernel: PathBuf,
    /// The same board's kernel built with selftests.
    pub selftest_kernel: PathBuf,
    /// The flat partition payload (loaded at each partition's `bulkhead,image`).
    pub payload: PathBuf,
}

impl Artifacts {
    /// The ELF of `image`.
    pub fn kernel(&self, image: Image) -> &Path {
        match image {
            Image::Production => &self.kernel,
            Image::Selftest => &self.selftest_kernel,
        }
    }
}

/// The log decoders of both kernel images, read once per pass.
pub struct Decoders {
    production: log::Decoder,
    selftest: log::Decoder,
}

impl Decoders {
    /// Reads both ELFs' defmt tables.
    pub fn load(a: &Artifacts) -> Result<Decoders, String> {
        let read = |p: &Path| {
            let elf = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            log::Decoder::from_elf(&elf)
        };
        Ok(Decoders { production: read(&a.kernel)?, selftest: read(&a.selftest_kernel)? })
    }

    /// The decoder of `image`.
    pub fn get(&self, image: Image) -> &log::Decoder {
        match image {
            Image::Production => &self.production,
            Image::Selftest => &self.selftest,
        }
    }
}
