//! The `edu` PCI device's DMA engine, driven from inside a partition.

const IDENT: usize = 0x00;
const DMA_SRC: usize = 0x80;
const DMA_DST: usize = 0x88;
const DMA_COUNT: usize = 0x90;
const DMA_CMD: usize = 0x98;
const CMD_START: u64 = 1 << 0;
/// Set: from the device's buffer to RAM.
const CMD_TO_RAM: u64 = 1 << 1;
/// The device-internal buffer (4 KiB).
pub const BUFFER: u64 = 0x40000;
/// Bytes per transfer.
pub const LEN: usize = 64;

/// An edu at a BAR address the partition's DTB gave.
pub struct Edu {
    bar: u64,
}

impl Edu {
    /// The edu whose BAR0 is at `bar`; `None` unless its ident register reads right.
    pub fn new(bar: u64) -> Option<Edu> {
        // SAFETY: `bar` is this partition's device MMIO (from its DTB), mapped
        // Device in its stage 2.
        let ident = unsafe { ((bar as usize + IDENT) as *const u32).read_volatile() };
        (ident == 0x0100_00ed).then_some(Edu { bar })
    }

    fn write(&self, off: usize, v: u64) {
        // SAFETY: as in `new`; the DMA registers are 64-bit.
        unsafe { ((self.bar as usize + off) as *mut u64).write_volatile(v) }
    }

    fn read(&self, off: usize) -> u64 {
        // SAFETY: as in `write`.
        unsafe { ((self.bar as usize + off) as *const u64).read_volatile() }
    }

    /// One transfer of [`LEN`] bytes; true when the device finished in time.
    pub fn dma(&self, src: u64, dst: u64, to_ram: bool) -> bool {
        self.write(DMA_SRC, src);
        self.write(DMA_DST, dst);
        self.write(DMA_COUNT, LEN as u64);
        self.write(DMA_CMD, CMD_START | if to_ram { CMD_TO_RAM } else { 0 });
        // ~100 ms of guest time per transfer; poll with a back-off.
        for _ in 0..4000 {
            if self.read(DMA_CMD) & CMD_START == 0 {
                return true;
            }
            crate::delay_us(500);
        }
        false
    }
}
