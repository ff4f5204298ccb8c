//! Debian's kernel modules for an initramfs: the named ones and everything
//! they depend on, decompressed, in the order busybox `insmod` must load
//! them (it resolves nothing itself, unlike `modprobe`).
//!
//! The dependencies come from each module's own `.modinfo` `depends=`
//! (what modpost records from the symbols a module imports, and what
//! `depmod` turns into `modules.dep`): Debian's `linux-image` package ships
//! no `modules.dep` (its postinst runs `depmod` on the installed system),
//! and the unpacked tree in the cache has never been installed.
//!
//! Debian ships the modules as `.ko.xz`. They are decompressed with
//! `lzma-rs`, a pure-Rust decoder: no `xz` tool on the machine and no
//! liblzma headers to build `xz2` against, so the harness needs nothing
//! more from Debian than the kernel packages themselves.

use super::initramfs::Initramfs;
use super::Guest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the modules go in the guest.
pub const DIR: &str = "/lib/modules";

/// A kernel module's name as the kernel compares them (`-` and `_` alike).
pub fn key(name: &str) -> String {
    name.replace('-', "_")
}

/// One kernel module, decompressed, ready for busybox `insmod`.
#[derive(Clone, Debug)]
pub struct Module {
    /// Its name (`nvme-core`, the file's name without `.ko.xz`).
    pub name: String,
    /// The `.ko` bytes.
    pub bytes: Vec<u8>,
}

impl Module {
    /// Its path in the guest ([`DIR`]`/<name>.ko`).
    pub fn guest_path(&self) -> String {
        format!("{DIR}/{}.ko", self.name)
    }
}

/// The modules `names` and their dependencies, each after the modules it
/// depends on, each once (names compared by [`key`]); `depends(m)` gives
/// the modules `m` needs directly. A loop is an error.
pub fn load_order(names: &[&str], depends: &mut dyn FnMut(&str) -> Result<Vec<String>, String>) -> Result<Vec<String>, String> {
    fn visit(name: &str, depends: &mut dyn FnMut(&str) -> Result<Vec<String>, String>, out: &mut Vec<String>, path: &mut Vec<String>) -> Result<(), String> {
        let k = key(name);
        if out.iter().any(|m| key(m) == k) {
            return Ok(());
        }
        if path.contains(&k) {
            return Err(format!("module dependencies loop: {} -> {name}", path.join(" -> ")));
        }
        path.push(k);
        for d in depends(name)? {
            visit(&d, depends, out, path)?;
        }
        path.pop();
        out.push(name.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    for n in names {
        visit(n, depends, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

/// The `depends=` of a module's `.modinfo` as names (`nvme-core,nvme-auth`
/// → both; empty → none).
pub fn split_depends(values: &[String]) -> Vec<String> {
    values.iter().flat_map(|d| d.split(',')).map(str::trim).filter(|d| !d.is_empty()).map(String::from).collect()
}

/// Every `*.ko.xz` under `dir`, by [`key`].
fn index(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            index(&p, out)?;
        } else if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko.xz")) {
            out.insert(key(stem), p);
        }
    }
    Ok(())
}

impl Guest {
    /// The modules `names` (as `modprobe` spells them: `nvme`, `vfio-pci`)
    /// and their dependencies, decompressed, in load order.
    pub fn modules(&self, names: &[&str]) -> Result<Vec<Module>, String> {
        let mut files = BTreeMap::new();
        index(&self.modules.join("kernel"), &mut files)?;
        let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
        let order = load_order(names, &mut |name| {
            let path = files.get(&key(name)).ok_or_else(|| format!("the kernel has no module {name} (built in, or not built)"))?;
            let packed = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut bytes = Vec::new();
            lzma_rs::xz_decompress(&mut std::io::Cursor::new(&packed), &mut bytes).map_err(|e| format!("{}: not xz: {e:?}", path.display()))?;
            let depends = split_depends(&super::modinfo(&bytes, "depends").map_err(|e| format!("{}: {e}", path.display()))?);
            let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko.xz")).unwrap_or(name);
            loaded.insert(key(name), Module { name: stem.to_string(), bytes });
            Ok(depends)
        })?;
        order.iter().map(|n| loaded.remove(&key(n)).ok_or_else(|| format!("module {n} was not read"))).collect()
    }

    /// Puts the modules `names` and their dependencies into `r` under
    /// [`DIR`]; returns the init script's lines that load them, in order
    /// (`insmod /lib/modules/nvme-core.ko $(modparams nvme_core) || mark
    /// insmod-failed nvme-core`: the module's parameters from the kernel's
    /// command line, `nvme_core.io_timeout=2`, as modprobe would pass them).
    pub fn add_modules(&self, r: &mut Initramfs, names: &[&str]) -> Result<Vec<String>, String> {
        let mods = self.modules(names)?;
        let mut lines = Vec::new();
        for m in mods {
            let path = m.guest_path();
            lines.push(insmod_line(&path, &m.name));
            r.file(&path, m.bytes, 0o644)?;
        }
        Ok(lines)
    }
}

/// One module's load line with its command-line parameters; a failure is
/// marked (`modparams` and `mark` are the prologue's).
fn insmod_line(path: &str, name: &str) -> String {
    format!("insmod {path} $(modparams {}) || mark insmod-failed {name}", name.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 6.12's NVMe, VFIO and virtio-blk modules as their `.modinfo`
    /// says (`nvme` needs `nvme-core`, which needs `nvme-auth`; `vfio-pci`
    /// needs `vfio-pci-core` and `vfio`, `vfio-pci-core` needs `vfio` and
    /// `irqbypass`), plus a loop.
    fn table(name: &str) -> Result<Vec<String>, String> {
        let deps: &[&str] = match key(name).as_str() {
            "nvme" => &["nvme-core"],
            "nvme_core" => &["nvme-auth"],
            "nvme_auth" | "vfio" | "irqbypass" | "virtio_blk" => &[],
            "vfio_pci" => &["vfio-pci-core", "vfio"],
            "vfio_pci_core" => &["vfio", "irqbypass"],
            "a" => &["b"],
            "b" => &["a"],
            _ => return Err(format!("no module {name}")),
        };
        Ok(deps.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let order = load_order(&["nvme", "vfio-pci", "virtio_blk"], &mut table).unwrap();
        assert_eq!(order, ["nvme-auth", "nvme-core", "nvme", "vfio", "irqbypass", "vfio-pci-core", "vfio-pci", "virtio_blk"]);
        // Asked twice under both spellings: once.
        assert_eq!(load_order(&["vfio_pci", "vfio-pci", "vfio"], &mut table).unwrap(), ["vfio", "irqbypass", "vfio-pci-core", "vfio_pci"]);
    }

    #[test]
    fn loops_and_unknown_modules_are_errors() {
        assert!(load_order(&["a"], &mut table).unwrap_err().contains("loop: a -> b -> a"));
        assert!(load_order(&["nvme", "nope"], &mut table).unwrap_err().contains("no module nope"));
    }

    #[test]
    fn depends_fields_split_and_lines_name_the_file() {
        assert_eq!(split_depends(&["nvme-core,nvme-auth".into()]), ["nvme-core", "nvme-auth"]);
        assert!(split_depends(&["".into()]).is_empty());
        assert!(split_depends(&[]).is_empty());
        let m = Module { name: "nvme-core".into(), bytes: Vec::new() };
        assert_eq!(m.guest_path(), "/lib/modules/nvme-core.ko");
        assert_eq!(insmod_line(&m.guest_path(), &m.name), "insmod /lib/modules/nvme-core.ko $(modparams nvme_core) || mark insmod-failed nvme-core");
        assert_eq!(key("nvme-core"), key("nvme_core"));
        assert_ne!(key("nvme"), key("nvme-core"));
    }
}
