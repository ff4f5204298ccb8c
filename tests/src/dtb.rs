//! Device-tree blobs for scenarios: QEMU's own DTB for a command line,
//! overlays compiled with `dtc -@` and applied with `fdtoverlay`, and
//! deliberately corrupted blobs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Re-serialises a blob without padding (`dtc -I dtb -O dtb`).
pub fn pack(input: &Path, out: &Path) -> Result<(), String> {
    run(Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dtb", "-o"]).arg(out).arg(input))
}

/// Compiles an overlay source (`.dts`) to a blob with symbols (`dtc -@`).
pub fn compile_overlay(dts: &Path, out: &Path) -> Result<(), String> {
    run(Command::new("dtc").args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"]).arg(out).arg(dts))
}

/// Applies overlays to `base` with `fdtoverlay`, writing `out`.
pub fn apply_overlays(base: &Path, overlays: &[PathBuf], out: &Path) -> Result<(), String> {
    let mut c = Command::new("fdtoverlay");
    c.arg("-i").arg(base).arg("-o").arg(out).args(overlays);
    run(&mut c)
}

/// Big-endian u32 at `off`.
fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Points the name of the first property of node `node` (a name with unit
/// address, anywhere in the tree) far outside the strings block. libfdt's
/// path lookups (which QEMU uses on `-dtb`) never read the names of other
/// nodes' properties, so QEMU still boots the blob; a parser that checks
/// every string must refuse it.
pub fn corrupt_property_name(blob: &mut [u8], node: &str) -> Result<(), String> {
    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const NOP: u32 = 4;
    let off_struct = be32(blob, 8).ok_or("short header")? as usize;
    let mut off = off_struct;
    let mut in_target = false;
    loop {
        let tag = be32(blob, off).ok_or("ran off the structure block")?;
        off += 4;
        match tag {
            BEGIN_NODE => {
                let end = blob[off..].iter().position(|&b| b == 0).ok_or("unterminated name")?;
                in_target = &blob[off..off + end] == node.as_bytes();
                off = (off + end + 1 + 3) & !3;
            }
            PROP => {
                let len = be32(blob, off).ok_or("short prop")? as usize;
                if in_target {
                    blob[off + 4..off + 8].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
                    return Ok(());
                }
                off = (off + 8 + len + 3) & !3;
            }
            END_NODE | NOP => {}
            _ => return Err(format!("node {node} not found")),
        }
    }
}

/// The QEMU arguments an overlay says it needs (`qemu-args:` lines in its
/// comments, e.g. the devices it assigns).
pub fn overlay_qemu_args(dts: &str) -> Vec<String> {
    dts.lines()
        .filter_map(|l| l.split_once("qemu-args:").map(|(_, a)| a))
        .flat_map(|a| a.split_whitespace().map(String::from))
        .collect()
}

/// Builds the DTB QEMU boots with for `cfg` plus the overlay source `dts`:
/// dumps QEMU's own DTB for the same command line, compiles the overlay with
/// `dtc -@`, applies it with `fdtoverlay`, and adds a `-device loader` of
/// `payload` at every partition's `bulkhead,image`. Returns the new config.
pub fn with_overlay(
    mut cfg: crate::qemu::QemuConfig,
    dts: &str,
    dir: &Path,
    payload: &Path,
) -> Result<crate::qemu::QemuConfig, String> {
    cfg.extra.extend(overlay_qemu_args(dts));
    let base = dir.join("base.dtb");
    cfg.dump_dtb(&base)?;
    let src = dir.join("overlay.dts");
    std::fs::write(&src, dts).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let dtbo = dir.join("overlay.dtbo");
    compile_overlay(&src, &dtbo)?;
    let merged = dir.join("merged.raw.dtb");
    apply_overlays(&base, &[dtbo], &merged)?;
    let out = dir.join("merged.dtb");
    pack(&merged, &out)?;
    let blob = std::fs::read(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
    // The same binding code as the kernel's says where the images go.
    let config = partitions::binding::parse(&blob).map_err(|e| format!("overlay: {e}"))?;
    for p in &config.partitions {
        if let Some(img) = p.image {
            let size = std::fs::metadata(payload).map_err(|e| format!("{}: {e}", payload.display()))?.len();
            if size > img.size {
                return Err(format!("payload ({size} bytes) does not fit {}'s bulkhead,image", p.name));
            }
            cfg.extra.push("-device".into());
            cfg.extra.push(format!("loader,file={},addr={:#x},force-raw=on", payload.display(), img.base.0));
        }
    }
    cfg.dtb = Some(out);
    Ok(cfg)
}

/// `dts` with partition `name`'s `bulkhead,bootargs` replaced by `args`
/// (the overlays write each partition as `name: name { ... }`).
pub fn set_bootargs(dts: &str, name: &str, args: &str) -> Result<String, String> {
    const KEY: &str = "bulkhead,bootargs = \"";
    let node = dts.find(&format!("{name}: {name} {{")).ok_or(format!("the overlay has no partition {name}"))?;
    let start = node + dts[node..].find(KEY).ok_or(format!("partition {name} has no bulkhead,bootargs"))? + KEY.len();
    let end = start + dts[start..].find('"').ok_or(format!("partition {name}'s bulkhead,bootargs is not closed"))?;
    Ok(format!("{}{args}{}", &dts[..start], &dts[end..]))
}

/// `dts` with property `prop` (a whole assignment, as `"name = <...>;"`)
/// added to partition `name`'s node.
pub fn add_property(dts: &str, name: &str, prop: &str) -> Result<String, String> {
    let head = format!("{name}: {name} {{");
    let at = dts.find(&head).ok_or(format!("the overlay has no partition {name}"))? + head.len();
    Ok(format!("{}\n            {prop}{}", &dts[..at], &dts[at..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_bootargs_edits_one_partition() {
        let dts = "a: a { bulkhead,bootargs = \"x\"; };\nb: b { bulkhead,bootargs = \"y\"; };";
        let out = super::set_bootargs(dts, "b", "hello exit=0").unwrap();
        assert_eq!(out, "a: a { bulkhead,bootargs = \"x\"; };\nb: b { bulkhead,bootargs = \"hello exit=0\"; };");
        assert!(super::set_bootargs(dts, "c", "z").is_err());
    }

    #[test]
    fn add_property_edits_one_partition() {
        let dts = "a: a { x; };\nb: b { y; };";
        let out = super::add_property(dts, "b", "z = <1>;").unwrap();
        assert_eq!(out, "a: a { x; };\nb: b {\n            z = <1>; y; };");
        assert!(super::add_property(dts, "c", "z;").is_err());
    }
}
