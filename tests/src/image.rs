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
