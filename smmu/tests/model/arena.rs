//! Host memory the model reads by physical address.

use super::*;

/// Physical address of the first arena's first byte (deliberately not the
/// host virtual address, to catch VA/PA confusion). Each arena gets its own
/// 4 GiB window above it, so two models never share physical addresses.
pub const ARENA_BASE: u64 = 0x8_0000_0000;

static NEXT_ARENA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Arena {
    mem: NonNull<u8>,
    pub(super) size: usize,
    pub base: u64,
    st: RefCell<ArenaState>,
}

#[derive(Default)]
struct ArenaState {
    bump: usize,
    free: BTreeMap<u32, Vec<usize>>,
    live: BTreeMap<u64, usize>,
    errors: Vec<String>,
    /// Extra alignment offset added to the next allocation (fault injection).
    misalign_next: bool,
    /// Remaining allocations before `alloc` fails (fault injection).
    fail_after: Option<usize>,
}

impl Arena {
    pub fn new(size: usize) -> Self {
        let n = NEXT_ARENA.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
        Self::at(size, ARENA_BASE + n * 0x1_0000_0000)
    }

    /// An arena whose first byte is at physical address `base` (for SMMUs
    /// whose output size cannot reach the default windows).
    pub fn at(size: usize, base: u64) -> Self {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero size, valid layout.
        let p = unsafe { alloc_zeroed(layout) };
        Arena { mem: NonNull::new(p).expect("arena allocation"), size, base, st: RefCell::default() }
    }

    fn off(&self, pa: u64, len: usize) -> Option<usize> {
        let off = pa.checked_sub(self.base)? as usize;
        (off.checked_add(len)? <= self.size).then_some(off)
    }

    pub fn alloc(&self, size: usize, align: usize) -> Option<(u64, usize)> {
        let mut st = self.st.borrow_mut();
        if let Some(n) = st.fail_after.as_mut() {
            if *n == 0 {
                return None;
            }
            *n -= 1;
        }
        let n = size.max(align).max(64).next_power_of_two();
        let order = n.trailing_zeros();
        let off = match st.free.get_mut(&order).and_then(|v| v.pop()) {
            Some(o) => o,
            None => {
                let o = (st.bump + n - 1) & !(n - 1);
                if o + n > self.size {
                    return None;
                }
                st.bump = o + n;
                o
            }
        };
        // SAFETY: `off + n <= size`, inside our allocation.
        unsafe { std::ptr::write_bytes(self.mem.as_ptr().add(off), 0, n) };
        let mut pa = self.base + off as u64;
        if std::mem::take(&mut st.misalign_next) {
            pa += 64;
        }
        st.live.insert(pa, n);
        Some((pa, n))
    }

    pub fn free(&self, pa: u64, len: usize) {
        let mut st = self.st.borrow_mut();
        match st.live.remove(&pa) {
            Some(n) if n == len || len <= n => {
                let order = n.trailing_zeros();
                st.free.entry(order).or_default().push((pa - self.base) as usize & !(n - 1));
            }
            _ => st.errors.push(format!("free of non-live {pa:#x}+{len:#x}")),
        }
    }

    /// `true` when `[pa, pa+len)` lies inside one live allocation.
    pub fn inside_live(&self, pa: u64, len: usize) -> bool {
        let st = self.st.borrow();
        st.live.range(..=pa).next_back().is_some_and(|(&start, &n)| pa + len as u64 <= start + n as u64)
    }

    pub fn live_allocations(&self) -> usize {
        self.st.borrow().live.len()
    }

    pub fn errors(&self) -> Vec<String> {
        self.st.borrow().errors.clone()
    }

    pub fn set_fail_after(&self, n: Option<usize>) {
        self.st.borrow_mut().fail_after = n;
    }

    pub fn misalign_next(&self) {
        self.st.borrow_mut().misalign_next = true;
    }

    pub fn virt(&self, pa: u64) -> Option<NonNull<u8>> {
        let off = self.off(pa, 1)?;
        // SAFETY: `off < size`.
        NonNull::new(unsafe { self.mem.as_ptr().add(off) })
    }

    pub fn read64(&self, pa: u64) -> Option<u64> {
        if !pa.is_multiple_of(8) {
            return None;
        }
        let off = self.off(pa, 8)?;
        // SAFETY: in bounds, 8-aligned (base is 2 MiB aligned).
        Some(unsafe { self.mem.as_ptr().add(off).cast::<u64>().read_volatile() })
    }

    pub fn write64(&self, pa: u64, v: u64) -> bool {
        if !pa.is_multiple_of(8) {
            return false;
        }
        let Some(off) = self.off(pa, 8) else {
            return false;
        };
        // SAFETY: in bounds, aligned.
        unsafe { self.mem.as_ptr().add(off).cast::<u64>().write_volatile(v) };
        true
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.size, 16).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.mem.as_ptr(), layout) };
    }
}
