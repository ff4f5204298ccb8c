//! The checker's inputs: device-tree files (compiled when they are
//! sources), numbers on the command line, and where a board's loader puts
//! the kernel and the DTB.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A device tree from a file: `.dts` is compiled with `dtc -@` (so overlays
/// may use its labels, as `cargo xtask run` compiles overlays), anything
/// else is read as a blob and left to the kernel's own checks.
pub fn blob(path: &Path) -> Result<Vec<u8>, String> {
    if path.extension().is_some_and(|e| e == "dts") {
        let out = Command::new("dtc")
            .args(["-@", "-q", "-I", "dts", "-O", "dtb"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run dtc to compile {} (apt-get install device-tree-compiler): {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!("dtc cannot compile {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim()));
        }
        return Ok(out.stdout);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A number as hex (`0x...`) or decimal.
pub fn number(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    v.map_err(|_| format!("{s:?} is not a number (decimal or 0x hex)"))
}

/// `ADDR,SIZE` (or `ADDR` when `size_optional`).
pub fn addr_size(s: &str, size_optional: bool) -> Result<(u64, Option<u64>), String> {
    match s.split_once(',') {
        Some((a, z)) => Ok((number(a)?, Some(number(z)?))),
        None if size_optional => Ok((number(s)?, None)),
        None => Err(format!("{s:?}: expected ADDR,SIZE")),
    }
}

/// Where a board's loader puts the kernel and the DTB.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// `--board` name.
    pub name: &'static str,
    /// The crate whose ELF is the kernel (its link address and image size
    /// are the placement).
    pub krate: &'static str,
    /// Where the DTB is at boot.
    pub dtb_at: u64,
    /// How the loader's copy of the DTB is sized, for a blob of `len` bytes.
    pub dtb_size: fn(u64) -> u64,
    /// Said in the plan about the two.
    pub how: &'static str,
}

/// QEMU's `-dtb` copy: `load_device_tree` (QEMU's device_tree.c) grows the
/// blob to twice its size plus 10000 bytes, room for the nodes QEMU adds.
fn qemu_dtb_copy(len: u64) -> u64 {
    (len + 10_000) * 2
}

/// The boards `--board` knows.
pub const BOARDS: [Board; 5] = [
    Board {
        name: "qemu-virt",
        krate: "bulkhead-qemu-virt",
        dtb_at: 0x4000_0000,
        dtb_size: qemu_dtb_copy,
        how: "QEMU's ELF path: the kernel at its link address, the DTB at the bottom of RAM (boards/qemu-virt/link.ld)",
    },
    Board {
        name: "fvp-base",
        krate: "bulkhead-fvp-base",
        dtb_at: 0x8200_0000,
        dtb_size: |len| len,
        how: "TF-A's preloaded BL33 at the kernel's link address and its DTB at 0x82000000 (boards/fvp-base/link.ld)",
    },
    Board { name: "rock-5b", krate: "bulkhead-rock-5b", dtb_at: 0x1200_0000, dtb_size: uboot_dtb_copy, how: UBOOT_HOW },
    Board { name: "imx95-evk", krate: "bulkhead-imx95-evk", dtb_at: 0x9300_0000, dtb_size: uboot_dtb_copy, how: UBOOT_HOW },
    Board { name: "j721e-sk", krate: "bulkhead-j721e-sk", dtb_at: 0x8800_0000, dtb_size: uboot_dtb_copy, how: UBOOT_HOW },
];

/// What the U-Boot boards' placement is (README, "Boards and porting").
const UBOOT_HOW: &str = "U-Boot's `booti` at kernel_addr_r (the kernel's link address) with the DTB left at fdt_addr_r (fdt_high = all ones)";

/// U-Boot's copy at fdt_addr_r: the blob grown by the boot commands'
/// `fdt resize 65536` (room for the overlay and booti's fix-ups).
fn uboot_dtb_copy(len: u64) -> u64 {
    len + 65_536
}

/// The board named `name`.
pub fn board(name: &str) -> Result<Board, String> {
    BOARDS.iter().find(|b| b.name == name).copied().ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!("unknown board {name} ({})", names.join(", "))
    })
}

impl Board {
    /// The release ELF `cargo xtask build` / `cargo xtask image` leave.
    pub fn elf(&self) -> PathBuf {
        bulkhead_tests::workspace_root().join("target").join(crate::prereq::TARGET).join("release").join(self.krate)
    }
}

/// The kernel's placement from its ELF: the link address (where the ELF
/// path and a preloading firmware put it) and the image size the arm64
/// header gives, bss and stack included (kernel.ld's `__image_size`).
pub fn kernel_from_elf(elf: &Path) -> Result<(u64, u64), String> {
    let bytes = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let (base, _) = bulkhead_tests::image::flat_binary(&bytes)?;
    let image = bulkhead_tests::image::linux_image(&bytes)?;
    let header = bulkhead_tests::image::Arm64Header::parse(&image)?;
    Ok((base, header.image_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number("0x4020_0000"), Ok(0x4020_0000));
        assert_eq!(number("12"), Ok(12));
        assert!(number("0xg").is_err());
        assert_eq!(addr_size("0x40200000,0xe7000", false), Ok((0x4020_0000, Some(0xe7000))));
        assert_eq!(addr_size("0x40000000", true), Ok((0x4000_0000, None)));
        assert!(addr_size("0x40000000", false).is_err());
    }

    #[test]
    fn qemu_grows_its_dtb_copy() {
        // A 9323-byte blob booted as [0x40000000..0x4000a000) (page-rounded).
        assert_eq!(qemu_dtb_copy(9323), 38646);
        assert!(board("qemu-virt").is_ok() && board("rpi").is_err());
    }
}
