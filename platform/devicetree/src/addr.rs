//! Typed physical addresses and ranges.
//!
//! The kernel identity-maps everything it touches, so a physical address is
//! also the address the kernel dereferences; the type still says which one a
//! value *means*.

use core::fmt;

/// A physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
    /// `self + off`, or `None` on overflow.
    pub const fn checked_add(self, off: u64) -> Option<PhysAddr> {
        match self.0.checked_add(off) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }
    /// Whether `self` is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// Rounds down to `align` (a power of two).
    pub const fn align_down(self, align: u64) -> PhysAddr {
        PhysAddr(self.0 & !(align - 1))
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

// The log (defmt) and the host tools (Display) print addresses alike; the
// test at the end holds the two texts together.
#[cfg(feature = "defmt")]
impl defmt::Format for PhysAddr {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u64:#x}", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysRange {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
}

impl PhysRange {
    /// `[base, base + size)`, or `None` if it wraps.
    pub const fn new(base: u64, size: u64) -> Option<PhysRange> {
        match base.checked_add(size) {
            Some(end) => Some(PhysRange { start: PhysAddr(base), end: PhysAddr(end) }),
            None => None,
        }
    }
    /// `[start, end)`; empty when `end <= start`.
    pub const fn from_bounds(start: u64, end: u64) -> PhysRange {
        PhysRange { start: PhysAddr(start), end: PhysAddr(if end < start { start } else { end }) }
    }
    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }
    /// True when the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }
    /// Whether `a` lies inside.
    pub const fn contains(&self, a: PhysAddr) -> bool {
        a.0 >= self.start.0 && a.0 < self.end.0
    }
    /// Whether `other` lies entirely inside.
    pub const fn covers(&self, other: &PhysRange) -> bool {
        other.start.0 >= self.start.0 && other.end.0 <= self.end.0
    }
    /// Whether the two share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }
    /// The widest range with both ends aligned to `align` that fits inside (possibly empty).
    pub const fn shrink_to(&self, align: u64) -> PhysRange {
        let s = (self.start.0 + align - 1) & !(align - 1);
        let e = self.end.0 & !(align - 1);
        PhysRange::from_bounds(s, e)
    }
    /// The narrowest range with both ends aligned to `align` that covers this one.
    pub const fn grow_to(&self, align: u64) -> PhysRange {
        let s = self.start.0 & !(align - 1);
        let e = self.end.0.saturating_add(align - 1) & !(align - 1);
        PhysRange::from_bounds(s, e)
    }
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..{:#x})", self.start.0, self.end.0)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for PhysRange {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "[{=u64:#010x}..{=u64:#010x})", self.start.0, self.end.0)
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#010x}..{:#010x})", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    /// The first string literal of the `impl` block that starts with `head`.
    fn format_of(head: &str) -> String {
        let src = include_str!("addr.rs");
        let at = src.find(head).unwrap_or_else(|| panic!("no {head}"));
        let lit = &src[at..][src[at..].find('"').unwrap() + 1..];
        String::from(&lit[..lit.find('"').unwrap()])
    }

    /// defmt's `{=type:spec}` is Rust's `{:spec}`.
    fn as_rust(defmt: &str) -> String {
        defmt.replace("{=u64:", "{:")
    }

    #[test]
    fn log_and_display_print_alike() {
        for t in ["PhysAddr", "PhysRange"] {
            let log = format_of(&std::format!("impl defmt::Format for {t}"));
            let display = format_of(&std::format!("impl fmt::Display for {t}"));
            assert_eq!(as_rust(&log), display, "{t}");
        }
        let r = super::PhysRange::new(0x4000_0000, 0x1000).unwrap();
        assert_eq!(std::format!("{r} {}", r.start), "[0x40000000..0x40001000) 0x40000000");
    }
}
