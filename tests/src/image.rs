//! Flat images from ELF files: what a loader places in memory.

use object::elf::{PT_LOAD, R_AARCH64_NONE, R_AARCH64_RELATIVE, SHF_ALLOC};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader};
use object::LittleEndian;

/// A little-endian ELF64 file, read by the `object` crate.
pub type Elf<'a> = ElfFile64<'a, LittleEndian>;

/// The largest flat image [`flat_binary`] lays out: far above any kernel or
/// payload, and low enough that a corrupt segment address is refused
/// rather than allocated.
const MAX_IMAGE: u64 = 1 << 30;

/// Parses `elf` as a little-endian ELF64 file.
pub fn parse_elf(elf: &[u8]) -> Result<Elf<'_>, String> {
    Elf::parse(elf).map_err(|e| format!("not a little-endian ELF64 file: {e}"))
}

/// The bytes of every PT_LOAD segment of a little-endian ELF64, laid out
/// from the lowest segment address; returns (lowest address, image).
pub fn flat_binary(elf: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let file = parse_elf(elf)?;
    let e = file.endian();
    let mut segs = Vec::new();
    for ph in file.elf_program_headers().iter().filter(|ph| ph.p_type(e) == PT_LOAD) {
        let data = ph.data(e, elf).map_err(|()| "segment outside the file")?;
        let paddr = ph.p_paddr(e);
        paddr.checked_add(data.len() as u64).ok_or(format!("segment at {paddr:#x} wraps around"))?;
        segs.push((paddr, data));
    }
    let base = segs.iter().map(|s| s.0).min().ok_or("no loadable segment")?;
    let end = segs.iter().map(|s| s.0 + s.1.len() as u64).max().unwrap_or(base);
    if end - base > MAX_IMAGE {
        return Err(format!("loadable segments span {:#x} bytes from {base:#x}: not an image", end - base));
    }
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
    let file = parse_elf(elf)?;
    let entry = file.elf_header().e_entry(file.endian());
    if entry != base {
        return Err(format!("entry point {entry:#x} is not the image start {base:#x} (the header must come first)"));
    }
    Arm64Header::parse(&image)?;
    check_relocations(&file)?;
    Ok(image)
}

/// Every allocated RELA section holds only relocations `_start` applies
/// (`R_AARCH64_RELATIVE`) or skips (`R_AARCH64_NONE`), with no symbol.
/// (Relocations of data outside the image, like the pointer defmt keeps in
/// its never-loaded `.defmt` section, are skipped by `_start` and only need
/// the right type here.)
fn check_relocations(file: &Elf<'_>) -> Result<(), String> {
    let e = file.endian();
    for sh in file.elf_section_table().iter().filter(|sh| sh.sh_flags(e) & u64::from(SHF_ALLOC) != 0) {
        let Some((table, _)) = sh.rela(e, file.data()).map_err(|_| "relocation table outside the file")? else { continue };
        for rela in table {
            let (sym, kind) = (rela.r_sym(e, false), rela.r_type(e, false));
            if sym != 0 || !matches!(kind, R_AARCH64_RELATIVE | R_AARCH64_NONE) {
                return Err(format!(
                    "relocation with r_info {:#x} at {:#x}: the kernel applies only R_AARCH64_RELATIVE",
                    rela.r_info(e, false),
                    rela.r_offset(e)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::elf::{EM_AARCH64, ET_EXEC, PF_R, PF_X, R_AARCH64_ABS64, SHT_RELA};
    use object::write::elf::{FileHeader, ProgramHeader, Rel, SectionHeader, Writer};

    /// A little-endian AArch64 ELF64 executable entered at `entry`: each of
    /// `segments` (physical address, bytes) a PT_LOAD, and one allocated
    /// `.rela.dyn` of `relocs` (offset, symbol, type).
    fn elf(entry: u64, segments: &[(u64, &[u8])], relocs: &[(u64, u32, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(object::Endianness::Little, true, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<usize> = segments.iter().map(|(_, d)| w.reserve(d.len(), 8)).collect();
        let rela_offset = w.reserve_relocations(relocs.len(), true);
        let rela_name = w.add_section_name(b".rela.dyn");
        w.reserve_null_section_index();
        w.reserve_section_index();
        w.reserve_shstrtab_section_index();
        w.reserve_shstrtab();
        w.reserve_section_headers();
        w.write_file_header(&FileHeader { os_abi: 0, abi_version: 0, e_type: ET_EXEC, e_machine: EM_AARCH64, e_entry: entry, e_flags: 0 })
            .expect("file header");
        w.write_align_program_headers();
        for (&(addr, data), &offset) in segments.iter().zip(&offsets) {
            let (p_offset, size) = (offset as u64, data.len() as u64);
            let (p_vaddr, p_paddr, p_filesz, p_memsz) = (addr, addr, size, size);
            w.write_program_header(&ProgramHeader { p_type: PT_LOAD, p_flags: PF_R | PF_X, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align: 8 });
        }
        for (_, data) in segments {
            w.write_align(8);
            w.write(data);
        }
        w.write_align_relocation();
        for &(r_offset, r_sym, r_type) in relocs {
            w.write_relocation(true, &Rel { r_offset, r_sym, r_type, r_addend: 0 });
        }
        w.write_shstrtab();
        w.write_null_section_header();
        w.write_section_header(&SectionHeader {
            name: Some(rela_name),
            sh_type: SHT_RELA,
            sh_flags: SHF_ALLOC.into(),
            sh_addr: 0,
            sh_offset: rela_offset as u64,
            sh_size: (relocs.len() * 24) as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 8,
            sh_entsize: 24,
        });
        w.write_shstrtab_section_header();
        out
    }

    #[test]
    fn lays_out_segments_from_the_lowest() {
        let (base, image) = flat_binary(&elf(0x4020_0000, &[(0x4020_1000, b"cd"), (0x4020_0000, b"ab")], &[])).unwrap();
        assert_eq!(base, 0x4020_0000);
        assert_eq!(image.len(), 0x1002);
        assert_eq!((&image[..2], &image[0x1000..]), (&b"ab"[..], &b"cd"[..]));
        assert!(image[2..0x1000].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_what_is_no_image() {
        assert!(flat_binary(b"\x7fELF").unwrap_err().contains("not a little-endian ELF64 file"));
        assert!(flat_binary(&[0u8; 100]).is_err());
        assert!(flat_binary(&elf(0, &[], &[])).unwrap_err().contains("no loadable segment"));
        let far = elf(0, &[(0, b"a"), (1 << 40, b"b")], &[]);
        assert!(flat_binary(&far).unwrap_err().contains("span"));
        let wraps = elf(0, &[(u64::MAX, b"ab")], &[]);
        assert!(flat_binary(&wraps).unwrap_err().contains("wraps"));
        // Every prefix of a good file is refused or read, never a panic.
        let good = elf(0x4020_0000, &[(0x4020_0000, &[1; 64])], &[(0x4020_0008, 0, R_AARCH64_RELATIVE)]);
        for n in 0..good.len() {
            let _ = linux_image(&good[..n]);
        }
    }

    #[test]
    fn an_image_needs_its_header_first_and_only_relocations_start_applies() {
        let mut text = header(0, 0x1000, 0xa);
        text.resize(0x100, 0);
        let ok = [(0x4020_0010, 0, R_AARCH64_RELATIVE), (0, 0, R_AARCH64_NONE)];
        assert_eq!(linux_image(&elf(0x4020_0000, &[(0x4020_0000, &text)], &ok)).unwrap(), text);
        let abs = [(0x4020_0010, 0, R_AARCH64_RELATIVE), (0x4020_0018, 0, R_AARCH64_ABS64)];
        let err = linux_image(&elf(0x4020_0000, &[(0x4020_0000, &text)], &abs)).unwrap_err();
        assert_eq!(err, "relocation with r_info 0x101 at 0x40200018: the kernel applies only R_AARCH64_RELATIVE");
        let with_symbol = [(0x4020_0010, 1, R_AARCH64_RELATIVE)];
        assert!(linux_image(&elf(0x4020_0000, &[(0x4020_0000, &text)], &with_symbol)).unwrap_err().contains("r_info 0x100000403"));
        let err = linux_image(&elf(0x4020_0040, &[(0x4020_0000, &text)], &[])).unwrap_err();
        assert!(err.contains("entry point 0x40200040 is not the image start 0x40200000"), "{err}");
        assert!(linux_image(&elf(0x4020_0000, &[(0x4020_0000, &[0; 0x100])], &[])).unwrap_err().contains("magic"));
    }

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
