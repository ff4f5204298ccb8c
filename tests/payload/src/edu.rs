//! The `edu` PCI device's DMA engine, driven from inside a partition
//! (register map: the shared `edu` crate).

/// Bytes per transfer.
pub const LEN: usize = 64;

/// An edu at a BAR address the partition's DTB gave.
pub struct Edu {
    regs: &'static ::edu::Registers,
}

impl Edu {
    /// The edu whose BAR0 is at `bar`; `None` unless its ident register reads right.
    pub fn new(bar: u64) -> Option<Edu> {
        // SAFETY: `bar` is this partition's device MMIO (from its DTB),
        // mapped Device in its stage 2 and `edu::BAR0_SIZE` long; nothing
        // else in the payload refers to it.
        let regs = unsafe { &*(bar as usize as *const ::edu::Registers) };
        regs.is_edu().then_some(Edu { regs })
    }

    /// [`LEN`] bytes from RAM at `addr` into the device's buffer; true when
    /// the device finished in time.
    pub fn copy_in(&self, addr: u64) -> bool {
        self.transfer(addr, false)
    }

    /// [`LEN`] bytes from the device's buffer to RAM at `addr`.
    pub fn copy_out(&self, addr: u64) -> bool {
        self.transfer(addr, true)
    }

    fn transfer(&self, ram: u64, to_ram: bool) -> bool {
        self.regs.start_dma(ram, ::edu::BUFFER, LEN as u64, to_ram);
        // ~100 ms of guest time per transfer; poll with a back-off.
        for _ in 0..4000 {
            if !self.regs.dma_busy() {
                return true;
            }
            crate::delay_us(500);
        }
        false
    }
}
