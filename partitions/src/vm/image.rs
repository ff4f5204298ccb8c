//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst,
//! "Call the kernel image"): 64 bytes at the start of the image, magic
//! "ARM\x64" at offset 0x38.

/// What the header says about where and how the image runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset from a 2 MiB-aligned base at which the image must be placed.
    pub text_offset: u64,
    /// Bytes the image needs from its start, including its bss.
    pub image_size: u64,
    /// The kernel is big-endian (flags bit 0).
    pub big_endian: bool,
    /// Page size the kernel uses (flags bits 2:1; 0 = unspecified).
    pub page_size: Option<u64>,
    /// The image may be placed anywhere in RAM (flags bit 3), not only
    /// near the start of it.
    pub anywhere: bool,
}

/// The magic number at offset 0x38.
pub const MAGIC: [u8; 4] = *b"ARMd";
/// Size of the header.
pub const HEADER_SIZE: usize = 64;
/// Alignment of the base `text_offset` is counted from.
pub const BASE_ALIGN: u64 = 2 << 20;

/// Why a header is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the header.
    Truncated,
    /// No "ARM\x64" magic: not an arm64 Linux image.
    NotAnImage,
    /// `image_size` is 0 and the image predates v3.17 (its size is not
    /// known).
    UnknownSize,
    /// A big-endian kernel: partitions run little-endian.
    BigEndian,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ImageError::Truncated => "shorter than the 64-byte arm64 Image header",
            ImageError::NotAnImage => "no arm64 Image magic (\"ARM\\x64\" at offset 0x38)",
            ImageError::UnknownSize => "an arm64 Image with image_size 0 (older than Linux 3.17)",
            ImageError::BigEndian => "a big-endian arm64 Image (partitions run little-endian)",
        })
    }
}

impl Header {
    /// Reads the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, ImageError> {
        let head = bytes.get(..HEADER_SIZE).ok_or(ImageError::Truncated)?;
        if head[0x38..0x3c] != MAGIC {
            return Err(ImageError::NotAnImage);
        }
        let le = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let (text_offset, image_size, flags) = (le(8), le(16), le(24));
        if image_size == 0 {
            return Err(ImageError::UnknownSize);
        }
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        Ok(Header {
            text_offset,
            image_size,
            big_endian: false,
            page_size: match (flags >> 1) & 3 {
                1 => Some(4 << 10),
                2 => Some(16 << 10),
                3 => Some(64 << 10),
                _ => None,
            },
            anywhere: flags & (1 << 3) != 0,
        })
    }

    /// Whether `entry` is a place the image may run from: a 2 MiB-aligned
    /// base plus `text_offset`.
    pub fn fits_at(&self, entry: u64) -> bool {
        entry.checked_sub(self.text_offset).is_some_and(|b| b % BASE_ALIGN == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(&MAGIC);
        h
    }

    #[test]
    fn debian_like_header() {
        // text_offset 0, 4 KiB pages, anywhere (flags 0b1010).
        let h = Header::parse(&header(0, 0x2f3_0000, 0b1010)).unwrap();
        assert_eq!(h, Header { text_offset: 0, image_size: 0x2f3_0000, big_endian: false, page_size: Some(4096), anywhere: true });
        assert!(h.fits_at(0x4820_0000) && h.fits_at(0x4800_0000));
        assert!(!h.fits_at(0x4801_0000));
        let old = Header::parse(&header(0x8_0000, 0x100_0000, 0)).unwrap();
        assert!(old.fits_at(0x4808_0000) && !old.fits_at(0x4800_0000));
    }

    #[test]
    fn refusals() {
        assert_eq!(Header::parse(&[0; 10]), Err(ImageError::Truncated));
        assert_eq!(Header::parse(&[0; 64]), Err(ImageError::NotAnImage));
        assert_eq!(Header::parse(&header(0, 0, 0)), Err(ImageError::UnknownSize));
        assert_eq!(Header::parse(&header(0, 1 << 20, 1)), Err(ImageError::BigEndian));
    }
}
