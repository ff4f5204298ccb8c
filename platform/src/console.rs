//! The console the defmt logger writes to: an Arm PL011 or a 16550-style
//! UART (`ns16550a` and its relatives), whichever the DT's stdout-path names.
//!
//! Register maps: Arm PrimeCell UART (PL011) TRM, section 3.2; for the 16550,
//! THR at 0, IER at 1, FCR at 2, LCR at 3 and LSR at 5, each register
//! `1 << reg-shift` bytes apart and `reg-io-width` bytes wide. The baud rate
//! is left as the firmware set it. Every wait on the FIFO is bounded: a
//! wedged UART loses log bytes, it never stops the kernel.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

/// Which UART the console drives and where: what the DT's stdout-path (or
/// a board's early console) names.
pub use devicetree::{Uart, UartKind};

register_bitfields![u32,
    /// Flag register.
    pub UARTFR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Control register.
    pub UARTCR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    /// Line control register.
    pub UARTLCR_H [
        /// Word length: 0b11 = 8 bits.
        WLEN OFFSET(5) NUMBITS(2) [],
        /// FIFOs enabled.
        FEN OFFSET(4) NUMBITS(1) []
    ]
];

register_structs! {
    /// PL011 registers.
    pub Pl011Regs {
        (0x000 => dr: WriteOnly<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, UARTFR::Register>),
        (0x01c => _reserved1),
        (0x02c => lcr_h: ReadWrite<u32, UARTLCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, UARTCR::Register>),
        (0x034 => @END),
    }
}

/// Polls of the flag register before a byte is dropped (~ms at any clock).
const TX_SPIN_LIMIT: u32 = 100_000;

/// 16550 line status: transmit holding register empty, transmitter empty.
const LSR_THRE: u32 = 1 << 5;
const LSR_TEMT: u32 = 1 << 6;
/// 16550 register indices.
const NS_THR: usize = 0;
const NS_IER: usize = 1;
const NS_FCR: usize = 2;
const NS_LCR: usize = 3;
const NS_LSR: usize = 5;

static BASE: AtomicUsize = AtomicUsize::new(0);
/// 0: PL011; otherwise 16550 with `(shift << 4) | width`.
static KIND: AtomicU8 = AtomicU8::new(0);

enum Regs {
    Pl011(&'static Pl011Regs),
    Ns16550 { base: usize, shift: u8, width: u8 },
}

fn regs() -> Option<Regs> {
    let b = BASE.load(Ordering::Relaxed);
    if b == 0 {
        return None;
    }
    match KIND.load(Ordering::Relaxed) {
        // SAFETY: `BASE` is only ever set by `init` to the address of a PL011
        // register block that stays mapped (identity, Device) for the kernel's life.
        0 => Some(Regs::Pl011(unsafe { &*(b as *const Pl011Regs) })),
        k => Some(Regs::Ns16550 { base: b, shift: k >> 4, width: k & 0xf }),
    }
}

impl Regs {
    fn ns_addr(base: usize, shift: u8, reg: usize) -> usize {
        base + (reg << shift)
    }
    fn ns_read(&self, reg: usize) -> u32 {
        let Regs::Ns16550 { base, shift, width } = *self else { return 0 };
        let a = Self::ns_addr(base, shift, reg);
        // SAFETY: `init` was given a 16550 whose registers at `1 << shift`
        // strides are mapped for the kernel's life; `width` is 1 or 4 and
        // the address is aligned to it (shift ≥ 2 when width is 4).
        unsafe {
            if width == 4 {
                (a as *const u32).read_volatile()
            } else {
                u32::from((a as *const u8).read_volatile())
            }
        }
    }
    fn ns_write(&self, reg: usize, v: u8) {
        let Regs::Ns16550 { base, shift, width } = *self else { return };
        let a = Self::ns_addr(base, shift, reg);
        // SAFETY: as in `ns_read`.
        unsafe {
            if width == 4 {
                (a as *mut u32).write_volatile(u32::from(v));
            } else {
                (a as *mut u8).write_volatile(v);
            }
        }
    }
    /// Room for one more byte.
    fn tx_ready(&self) -> bool {
        match self {
            Regs::Pl011(r) => !r.fr.is_set(UARTFR::TXFF),
            Regs::Ns16550 { .. } => self.ns_read(NS_LSR) & LSR_THRE != 0,
        }
    }
    /// Everything written has left.
    fn idle(&self) -> bool {
        match self {
            Regs::Pl011(r) => !r.fr.is_set(UARTFR::BUSY),
            Regs::Ns16550 { .. } => self.ns_read(NS_LSR) & LSR_TEMT != 0,
        }
    }
    fn put(&self, b: u8) {
        match self {
            Regs::Pl011(r) => r.dr.set(u32::from(b)),
            Regs::Ns16550 { .. } => self.ns_write(NS_THR, b),
        }
    }
}

/// Starts using `uart` (8N1, FIFOs on; the PL011 with TX and RX enabled,
/// the 16550 with its interrupts off). A 16550 with an unsupported
/// `width` (not 1 or 4) or a `shift` that misaligns it is not used.
///
/// # Safety
/// `uart.base` must be the address of such a UART's registers, accessible
/// now and for as long as the kernel logs.
pub unsafe fn init(uart: Uart) {
    flush();
    let kind = match uart.kind {
        UartKind::Pl011 => 0,
        UartKind::Ns16550 { shift, width } => {
            let usable = shift < 8 && (width == 1 || (width == 4 && shift >= 2)) && uart.base.0.is_multiple_of(u64::from(width));
            if !usable {
                BASE.store(0, Ordering::Relaxed);
                return;
            }
            (shift << 4) | width
        }
    };
    KIND.store(kind, Ordering::Relaxed);
    BASE.store(uart.base.0 as usize, Ordering::Relaxed);
    match regs() {
        Some(Regs::Pl011(r)) => {
            r.lcr_h.write(UARTLCR_H::WLEN.val(0b11) + UARTLCR_H::FEN::SET);
            r.cr.write(UARTCR::UARTEN::SET + UARTCR::TXE::SET + UARTCR::RXE::SET);
        }
        Some(r @ Regs::Ns16550 { .. }) => {
            r.ns_write(NS_IER, 0);
            r.ns_write(NS_LCR, 0x03); // 8 data bits, no parity, 1 stop, DLAB off
            r.ns_write(NS_FCR, 0x07); // FIFOs on and cleared
        }
        None => {}
    }
}

/// Writes bytes, dropping any the UART will not take in bounded time.
pub fn write(bytes: &[u8]) {
    let Some(r) = regs() else { return };
    for &b in bytes {
        let mut spins = 0;
        while !r.tx_ready() {
            spins += 1;
            if spins == TX_SPIN_LIMIT {
                return;
            }
            core::hint::spin_loop();
        }
        r.put(b);
    }
}

/// Waits (bounded) until everything written has left the UART.
pub fn flush() {
    let Some(r) = regs() else { return };
    let mut spins = 0;
    while !r.idle() && spins < TX_SPIN_LIMIT {
        spins += 1;
        core::hint::spin_loop();
    }
}
