//! Flat images from ELF files: what a loader places in memory.

/// The bytes of every PT_LOAD segment of a little-endian ELF64, laid out
/// from the lowest segment address; returns (lowest address, image).
pub fn flat_binary(elf: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    let phoff = u64_at(0x20).ok_or("truncated header")? as usize;
    let phentsize = u16_at(0x36).ok_or("truncated header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated header")? as usize;
    let mut segs = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph).ok_or("truncated program header")? != 1 {
            continue; // not PT_LOAD
        }
        let off = u64_at(ph + 8).ok_or("truncated program header")? as usize;
        let paddr = u64_at(ph + 24).ok_or("truncated program header")?;
        let filesz = u64_at(ph + 32).ok_or("truncated program header")? as usize;
        let data = elf.get(off..off + filesz).ok_or("segment outside the file")?;
        segs.push((paddr, data));
    }
    let base = segs.iter().map(|s| s.0).min().ok_or("no loadable segment")?;
    let end = segs.iter().map(|s| s.0 + s.1.len() as u64).max().unwrap_or(base);
    let mut out = vec![0u8; (end - base) as usize];
    for (addr, data) in segs {
        let at = (addr - base) as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    Ok((base, out))
}

/// Offset of the magic in the Linux arm64 image header.
const ARM64_MAGIC_OFFSET: usize = 56;
/// `ARM\x64`, the header's magic.
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
/// Size of the Linux arm64 image header.
const ARM64_HEADER_SIZE: usize = 64;
/// ELF section type of relocations with addends.
const SHT_RELA: u32 = 4;
/// ELF section flag: occupies memory at run time.
const SHF_ALLOC: u64 = 2;
/// `r_info` the kernel's `_start` applies (`R_AARCH64_RELATIVE`) or skips (`R_AARCH64_NONE`).
const R_AARCH64_RELATIVE: u64 = 1027;
const R_AARCH64_NONE: u64 = 0;

/// The fields of a Linux arm64 image header (Documentation/arm64/booting.rst)
/// that a loader acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64Header {
    /// Offset from a 2 MiB-aligned base at which the image must be placed.
    pub text_offset: u64,
    /// Bytes the loader must reserve from the load address (bss and stack
    /// included), at least the file's size.
    pub image_size: u64,
    /// Bit 0: big-endian; bits 1-2: page size (1 = 4K); bit 3: the base may
    /// be anywhere in RAM.
    pub flags: u64,
}

impl Arm64Header {
    /// Reads and checks the header at the start of `image`.
    pub fn parse(image: &[u8]) -> Result<Arm64Header, String> {
        let head = image.get(..ARM64_HEADER_SIZE).ok_or("shorter than the 64-byte arm64 image header")?;
        if &head[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4] != ARM64_MAGIC {
            return Err("no arm64 image header (magic \"ARM\\x64\" missing at offset 56)".into());
        }
        let le = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or([0; 8]));
        let h = Arm64Header { text_offset: le(8), image_size: le(16), flags: le(24) };
        if h.flags & 1 != 0 {
            return Err("header says big-endian".into());
        }
        if (h.flags >> 1) & 3 != 1 {
            return Err(format!("header page size field is {}, expected 1 (4K)", (h.flags >> 1) & 3));
        }
        if h.image_size < image.len() as u64 {
            return Err(format!("header image_size {:#x} is smaller than the file ({:#x} bytes)", h.image_size, image.len()));
        }
        Ok(h)
    }

    /// The image may be placed at any 2 MiB-aligned base (flags bit 3).
    pub fn anywhere(&self) -> bool {
        self.flags & 8 != 0
    }
}

/// The raw `Image` a Linux-protocol loader (U-Boot `booti`, QEMU
/// `-kernel Image`) boots: the flat binary of the kernel ELF, which must
/// start with the arm64 image header at its entry point and carry no
/// relocation that the kernel's `_start` does not apply.
pub fn linux_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    let (base, image) = flat_binary(elf)?;
    let entry = elf.get(0x18..0x20).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).ok_or("truncated header")?;
    if entry != base {
        return Err(format!("entry point {entry:#x} is not the image start {base:#x} (the header must come first)"));
    }
    Arm64Header::parse(&image)?;
    check_relocations(elf)?;
    Ok(image)
}

/// Every allocated RELA section holds only relocations `_start` applies.
/// (Relocations of data outside the image, like the pointer defmt keeps in
/// its never-loaded `.defmt` section, are skipped by `_start` and only need
/// the right type here.)
fn check_relocations(elf: &[u8]) -> Result<(), String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let shoff = u64_at(0x28).ok_or("truncated header")? as usize;
    let shentsize = u16_at(0x3a).ok_or("truncated header")? as usize;
    let shnum = u16_at(0x3c).ok_or("truncated header")? as usize;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let kind = u32_at(sh + 4).ok_or("truncated section header")?;
        let flags = u64_at(sh + 8).ok_or("truncated section header")?;
        if kind != SHT_RELA || flags & SHF_ALLOC == 0 {
            continue;
        }
        let off = u64_at(sh + 24).ok_or("truncated section header")? as usize;
        let size = u64_at(sh + 32).ok_or("truncated section header")? as usize;
        let table = elf.get(off..off + size).ok_or("relocation table outside the file")?;
        for rela in table.chunks_exact(24) {
            let r_offset = u64::from_le_bytes(rela[0..8].try_into().unwrap_or([0; 8]));
            let r_info = u64::from_le_bytes(rela[8..16].try_into().unwrap_or([0; 8]));
            if r_info != R_AARCH64_RELATIVE && r_info != R_AARCH64_NONE {
                return Err(format!(
                    "relocation with r_info {r_info:#x} at {r_offset:#x}: the kernel applies only R_AARCH64_RELATIVE"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn reads_a_header() {
        let h = Arm64Header::parse(&header(0, 0x1000, 0xa)).unwrap();
        assert_eq!(h, Arm64Header { text_offset: 0, image_size: 0x1000, flags: 0xa });
        assert!(h.anywhere());
    }

    #[test]
    fn refuses_bad_headers() {
        assert!(Arm64Header::parse(&[0u8; 63]).is_err());
        let mut no_magic = header(0, 0x1000, 0xa);
        no_magic[56] = b'X';
        assert!(Arm64Header::parse(&no_magic).unwrap_err().contains("magic"));
        assert!(Arm64Header::parse(&header(0, 0x1000, 0xb)).unwrap_err().contains("big-endian"));
        assert!(Arm64Header::parse(&header(0, 0x1000, 0x4)).unwrap_err().contains("page size"));
        // image_size must cover at least the file (bss and stack come on top).
        assert!(Arm64Header::parse(&header(0, 32, 0xa)).unwrap_err().contains("image_size"));
    }
}
