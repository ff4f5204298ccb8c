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
    dts.lines().filter_map(|l| l.split_once("qemu-args:").map(|(_, a)| a)).flat_map(|a| a.split_whitespace().map(String::from)).collect()
}

/// Builds the DTB QEMU boots with for `cfg` plus the overlay source `dts`:
/// dumps QEMU's own DTB for the same command line, compiles the overlay with
/// `dtc -@`, applies it with `fdtoverlay`, and adds a `-device loader` of
/// `payload` at every partition's `bulkhead,image`. Returns the new config.
pub fn with_overlay(cfg: crate::qemu::QemuConfig, dts: &str, dir: &Path, payload: &Path) -> Result<crate::qemu::QemuConfig, String> {
    with_overlay_files(cfg, dts, dir, payload, &[])
}

/// What a partition boots instead of the payload: its image file, and an
/// initrd loaded at its `bulkhead,initrd`.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The partition's name.
    pub partition: String,
    /// Loaded at its `bulkhead,image`.
    pub image: PathBuf,
    /// Loaded at its `bulkhead,initrd`.
    pub initrd: Option<PathBuf>,
}

/// The init script of a Linux partition an overlay names with a
/// `linux-guest: NAME` comment line (`cargo xtask run`): what the machine
/// looks like from inside, then power off.
pub const DEMO_INIT: &str = r#"echo "bulkhead-init: $(uname -sr) on $(nproc) CPUs"
cat /proc/cpuinfo | grep -c processor
grep -E "arch_timer|uart|IPI0" /proc/interrupts
cat /proc/iomem
sleep 1
echo "bulkhead-init: timer $(grep arch_timer /proc/interrupts)""#;

/// The Linux partitions an overlay names (`linux-guest: NAME` comment
/// lines): each boots Debian's Linux ([`crate::linux::guest`]) with an
/// initramfs running [`DEMO_INIT`], written into `dir`.
pub fn overlay_linux_boots(dts: &str, dir: &Path) -> Result<(Vec<Boot>, Vec<String>), String> {
    use crate::linux::disk::{self, Bus, Disk, IO_BYTES};
    let guests: Vec<(&str, bool)> = dts
        .lines()
        .filter_map(|l| l.split_once("linux-guest:").map(|(_, n)| n.split_whitespace().collect::<Vec<_>>()))
        .filter_map(|w| w.first().map(|n| (*n, w.get(1) == Some(&"nvme"))))
        .collect();
    let mut boots = Vec::new();
    let mut qemu_args = Vec::new();
    for (name, nvme) in guests {
        let guest = crate::linux::guest()?;
        let initrd = dir.join(format!("initramfs-{name}.cpio"));
        if nvme {
            // `linux-guest: NAME nvme`: an NVMe disk at 00:02.0 (16 MiB),
            // Debian's nvme module, and init writing and reading back 4 MiB.
            let mut files = crate::linux::initramfs::Initramfs::new();
            let insmod = guest.add_modules(&mut files, Bus::Nvme.modules())?;
            disk::add_pattern(&mut files, IO_BYTES)?;
            let body = format!("{DEMO_INIT}\n{}\n{}", insmod.join("\n"), disk::io_script(Bus::Nvme.device(), IO_BYTES));
            let mut r = guest.initramfs(&body)?;
            r.merge(files)?;
            r.write(&initrd)?;
            let d = Disk::create(&dir.join(format!("{name}-nvme.img")), &format!("{name}-nvme"), Bus::Nvme, 16)?.at("2.0");
            qemu_args.extend(d.qemu_args());
        } else {
            guest.initramfs(DEMO_INIT)?.write(&initrd)?;
        }
        boots.push(Boot { partition: name.to_string(), image: guest.image.clone(), initrd: Some(initrd) });
    }
    Ok((boots, qemu_args))
}

/// As [`with_overlay`], with the partitions in `boots` loading their own
/// image (and initrd) instead of the payload.
pub fn with_overlay_files(mut cfg: crate::qemu::QemuConfig, dts: &str, dir: &Path, payload: &Path, boots: &[Boot]) -> Result<crate::qemu::QemuConfig, String> {
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
    let mut load = |file: &Path, at: partitions::binding::Region, what: &str, name: &str| -> Result<(), String> {
        let size = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?.len();
        if size > at.size {
            return Err(format!("{} ({size} bytes) does not fit {name}'s {what}", file.display()));
        }
        cfg.extra.push("-device".into());
        cfg.extra.push(format!("loader,file={},addr={:#x},force-raw=on", file.display(), at.base.0));
        Ok(())
    };
    for p in &config.partitions {
        let boot = boots.iter().find(|b| b.partition == p.name);
        if let Some(img) = p.image {
            load(boot.map_or(payload, |b| b.image.as_path()), img, "bulkhead,image", &p.name)?;
        }
        if let (Some(rd), Some(file)) = (p.initrd, boot.and_then(|b| b.initrd.as_ref())) {
            load(file, rd, "bulkhead,initrd", &p.name)?;
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

/// Output of a device-tree tool, or its error.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Property `prop` of `node` as 32-bit cells (`fdtget -t x`); `None` when
/// the node has no such property.
fn cells(dtb: &Path, node: &str, prop: &str) -> Result<Option<Vec<u32>>, String> {
    let out = Command::new("fdtget").args(["-t", "x"]).arg(dtb).args([node, prop]).output().map_err(|e| format!("cannot run fdtget: {e}"))?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).map_err(|_| format!("fdtget {node} {prop}: not a cell: {w}")))
        .collect::<Result<Vec<u32>, String>>()
        .map(Some)
}

/// A 64-bit value as two cells, high first.
fn pair(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

/// `<a b c>` with each cell in hex.
fn dts_cells(v: &[u32]) -> String {
    let c: Vec<String> = v.iter().map(|x| format!("{x:#x}")).collect();
    format!("<{}>", c.join(" "))
}

/// The two SMMUs' host bridges of [`crate::qemu::Flavour::TwoSmmus`], as
/// the fixed-up DT describes them: QEMU's `pcie@10000000` keeps buses
/// below [`crate::qemu::PXB_BUS`] and gains the second's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoSmmus {
    /// The SMMUs' node names, in DT order (pcie.0's first).
    pub smmus: [String; 2],
    /// The host bridges' node paths, in the same order.
    pub hosts: [String; 2],
}

/// Writes to `out` the DTB of `raw` (QEMU's own for a
/// [`crate::qemu::Flavour::TwoSmmus`] machine) fixed up to describe what
/// QEMU emulates. QEMU (11.1) puts only the first `arm-smmuv3` in its DT and
/// maps every requester ID of `pcie@10000000` to it, although it routes the
/// `pxb-pcie` buses (from `PXB_BUS`) through the second. So: a node for the
/// second SMMU (QEMU's platform bus places user-created devices in
/// creation order: its registers 0x20000 after the first's, its four SPIs
/// right after the first's four), and the ECAM split into two host
/// bridges by bus range, each with its own `iommu-map` to its SMMU and
/// its own `msi-map`; each keeps half of every memory window (I/O stays
/// with the first). Returns the names the checks need.
pub fn describe_two_smmus(raw: &Path, out: &Path) -> Result<TwoSmmus, String> {
    let pxb = u32::from(crate::qemu::PXB_BUS);
    let roots = output(Command::new("fdtget").arg("-l").arg(raw).arg("/"))?;
    let find = |prefix: &str| roots.lines().map(str::trim).find(|n| n.starts_with(prefix)).map(String::from);
    let smmu0 = find("smmuv3@").ok_or("QEMU's DTB has no smmuv3 node (is iommu=none with an arm-smmuv3 device on the command line?)")?;
    let pcie = find("pcie@").ok_or("QEMU's DTB has no pcie node")?;
    let (smmu0_path, pcie_path) = (format!("/{smmu0}"), format!("/{pcie}"));
    let need = |node: &str, prop: &str| -> Result<Vec<u32>, String> { cells(raw, node, prop)?.ok_or(format!("QEMU's DTB: {node} has no {prop}")) };
    let reg = need(&smmu0_path, "reg")?;
    let irqs = need(&smmu0_path, "interrupts")?;
    let phandle0 = need(&smmu0_path, "phandle")?;
    let [hi, lo, size_hi, size_lo] = reg[..] else { return Err(format!("{smmu0_path}: reg is not 2+2 cells")) };
    if irqs.len() != 12 {
        return Err(format!("{smmu0_path}: expected 4 interrupts of 3 cells, got {} cells", irqs.len()));
    }
    let base1 = ((u64::from(hi) << 32) | u64::from(lo)) + 0x2_0000;
    let reg1 = [pair(base1)[0], pair(base1)[1], size_hi, size_lo];
    let irqs1: Vec<u32> = irqs.chunks(3).flat_map(|c| [c[0], c[1] + 4, c[2]]).collect();
    // A phandle no node has.
    let dts = output(Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dts"]).arg(raw))?;
    let max_phandle = dts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("phandle = <")?.strip_suffix(">;").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()))
        .max()
        .unwrap_or(0);
    let phandle1 = max_phandle + 1;
    let smmu1 = format!("smmuv3@{base1:x}");

    let ecam = need(&pcie_path, "reg")?;
    let [ehi, elo, eshi, eslo] = ecam[..] else { return Err(format!("{pcie_path}: reg is not 2+2 cells")) };
    let (ecam_base, ecam_size) = ((u64::from(ehi) << 32) | u64::from(elo), (u64::from(eshi) << 32) | u64::from(eslo));
    let per_bus = 1u64 << 20;
    if ecam_size < 0x100 * per_bus {
        return Err(format!("{pcie_path}: ECAM of {ecam_size:#x} bytes does not hold 256 buses"));
    }
    let (low, high) = (u64::from(pxb) * per_bus, (0x100 - u64::from(pxb)) * per_bus);
    let split = ecam_base + low;
    let ecam0 = [pair(ecam_base), pair(low)].concat();
    let ecam1 = [pair(split), pair(high)].concat();
    let ranges = need(&pcie_path, "ranges")?;
    if ranges.len() % 7 != 0 {
        return Err(format!("{pcie_path}: ranges is not 3+2+2 cells per entry"));
    }
    let (mut ranges0, mut ranges1) = (Vec::new(), Vec::new());
    for r in ranges.chunks(7) {
        let space = (r[0] >> 24) & 3;
        if space == 1 {
            ranges0.extend_from_slice(r);
            continue;
        }
        let size = (u64::from(r[5]) << 32) | u64::from(r[6]);
        let half = (size / 2) & !0xf_ffff;
        let pci = (u64::from(r[1]) << 32) | u64::from(r[2]);
        let cpu = (u64::from(r[3]) << 32) | u64::from(r[4]);
        let mk = |pci: u64, cpu: u64, size: u64| [vec![r[0]], pair(pci).to_vec(), pair(cpu).to_vec(), pair(size).to_vec()].concat();
        ranges0.extend(mk(pci, cpu, half));
        ranges1.extend(mk(pci + half, cpu + half, size - half));
    }
    let rids = 0x1_0000 - (pxb << 8);
    let first = pxb << 8;
    let iommu0 = [0, phandle0[0], 0, first];
    let iommu1 = [first, phandle1, first, rids];
    let msi = cells(raw, &pcie_path, "msi-map")?;
    let (msi0, msi1) = match &msi {
        Some(m) if m.len() == 4 => (Some([m[0], m[1], m[2], first]), Some([first, m[1], first, rids])),
        Some(_) => return Err(format!("{pcie_path}: msi-map with more than one entry")),
        None => (None, None),
    };
    let imap = need(&pcie_path, "interrupt-map")?;
    let imask = need(&pcie_path, "interrupt-map-mask")?;
    let host1 = format!("pcie@{split:x}");
    let msi_line = |m: Option<[u32; 4]>| m.map(|m| format!("        msi-map = {};\n", dts_cells(&m))).unwrap_or_default();
    let fix = format!(
        "\n/ {{\n    {smmu1} {{\n        compatible = \"arm,smmu-v3\";\n        reg = {};\n        interrupts = {};\n        interrupt-names = \"eventq\", \"priq\", \"cmdq-sync\", \"gerror\";\n        dma-coherent;\n        #iommu-cells = <1>;\n        phandle = <{phandle1:#x}>;\n    }};\n    {host1} {{\n        compatible = \"pci-host-ecam-generic\";\n        device_type = \"pci\";\n        #address-cells = <3>;\n        #size-cells = <2>;\n        #interrupt-cells = <1>;\n        linux,pci-domain = <1>;\n        bus-range = <{pxb:#x} 0xff>;\n        reg = {};\n        ranges = {};\n        iommu-map = {};\n{}        interrupt-map-mask = {};\n        interrupt-map = {};\n        dma-coherent;\n    }};\n}};\n&{{{pcie_path}}} {{\n    bus-range = <0x0 {:#x}>;\n    reg = {};\n    ranges = {};\n    iommu-map = {};\n{}}};\n",
        dts_cells(&reg1),
        dts_cells(&irqs1),
        dts_cells(&ecam1),
        dts_cells(&ranges1),
        dts_cells(&iommu1),
        msi_line(msi1),
        dts_cells(&imask),
        dts_cells(&imap),
        pxb - 1,
        dts_cells(&ecam0),
        dts_cells(&ranges0),
        dts_cells(&iommu0),
        msi_line(msi0).replace("        ", "    "),
    );
    let src = out.with_extension("dts");
    std::fs::write(&src, format!("{dts}{fix}")).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    run(Command::new("dtc").args(["-q", "-I", "dts", "-O", "dtb", "-o"]).arg(out).arg(&src))?;
    Ok(TwoSmmus { smmus: [smmu0, smmu1], hosts: [pcie_path, format!("/{host1}")] })
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
