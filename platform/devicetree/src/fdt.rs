//! The flattened devicetree (DTB) format, by the names of the Devicetree
//! Specification v0.4, chapter 5: the header (§5.2), the memory
//! reservation block (§5.3) and the structure block's tokens (§5.4). The
//! one list of these numbers: the reader ([`crate::dt`]) and the overlay
//! merge ([`crate::overlay`]) both use it.

/// FDT header magic, `magic` (§5.2).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The header: ten big-endian words (§5.2).
pub const FDT_HEADER_SIZE: usize = 40;
/// The version the check requires `last_comp_version..=version` to hold (§5.2).
pub const FDT_VERSION: u32 = 17;

/// Header word indices (§5.2), each a big-endian `u32`.
pub mod header {
    /// `magic`.
    pub const MAGIC: usize = 0;
    /// `totalsize`: the whole blob, in bytes.
    pub const TOTALSIZE: usize = 1;
    /// `off_dt_struct`: where the structure block begins.
    pub const OFF_DT_STRUCT: usize = 2;
    /// `off_dt_strings`: where the strings block begins.
    pub const OFF_DT_STRINGS: usize = 3;
    /// `off_mem_rsvmap`: where the memory reservation block begins.
    pub const OFF_MEM_RSVMAP: usize = 4;
    /// `version`.
    pub const VERSION: usize = 5;
    /// `last_comp_version`.
    pub const LAST_COMP_VERSION: usize = 6;
    /// `boot_cpuid_phys`.
    pub const BOOT_CPUID_PHYS: usize = 7;
    /// `size_dt_strings`.
    pub const SIZE_DT_STRINGS: usize = 8;
    /// `size_dt_struct`.
    pub const SIZE_DT_STRUCT: usize = 9;
}

/// A memory reservation entry (`struct fdt_reserve_entry`): 64-bit address
/// and size, the list ended by an entry of zeros (§5.3.2).
pub const FDT_RESERVE_ENTRY: usize = 16;

/// Structure-block token: the start of a node, followed by its
/// NUL-terminated name padded to 4 bytes (§5.4.1). Every token is a
/// big-endian word at a 4-byte aligned offset.
pub const FDT_BEGIN_NODE: u32 = 0x1;
/// Structure-block token: the end of a node (§5.4.1).
pub const FDT_END_NODE: u32 = 0x2;
/// Structure-block token: a property — token, `len`, `nameoff`, then
/// `len` bytes of value padded to 4 bytes (§5.4.1).
pub const FDT_PROP: u32 = 0x3;
/// Structure-block token to be ignored (§5.4.1).
pub const FDT_NOP: u32 = 0x4;
/// Structure-block token: the end of the structure block (§5.4.1).
pub const FDT_END: u32 = 0x9;
/// Size of a token (§5.4.1).
pub const FDT_TOKEN: usize = 4;
/// Token, `len` and `nameoff` of an `FDT_PROP` (§5.4.1).
pub const FDT_PROP_HEADER: usize = 12;

/// Rounds a structure-block offset up to the next token boundary (§5.4.1:
/// names and values are padded to 4 bytes).
pub const fn align4(at: usize) -> usize {
    at.saturating_add(3) & !3
}
