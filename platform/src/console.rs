//! The console the defmt logger writes to: an Arm PL011 (or the SBSA
//! generic UART, its firmware-configured subset), a 16550-style
//! UART (`ns16550a` and its relatives: Synopsys DesignWare, TI's 8250
//! variants) or an NXP LPUART, whichever the DT's stdout-path names.
//!
//! Register maps: Arm PrimeCell UART (PL011) TRM, section 3.2; for the 16550,
//! THR at 0, IER at 1, FCR at 2, LCR at 3 and LSR at 5, each register
//! `1 << reg-shift` bytes apart and `reg-io-width` bytes wide; for the
//! LPUART (i.MX reference manuals, "LPUART memory map"), 32-bit BAUD, STAT,
//! CTRL and DATA from the block's offset (0x10 from i.MX7ULP on). The baud
//! rate and line settings are left as the firmware set them. Every wait on
//! the FIFO is bounded: a wedged UART loses log bytes, it never stops the
//! kernel.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
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

register_bitfields![u32,
    /// LPUART status register.
    pub LPUART_STAT [
        /// Transmit data register empty.
        TDRE OFFSET(23) NUMBITS(1) [],
        /// Transmission complete.
        TC OFFSET(22) NUMBITS(1) []
    ],
    /// LPUART control register.
    pub LPUART_CTRL [
        /// Transmitter enable.
        TE OFFSET(19) NUMBITS(1) []
    ]
];

register_structs! {
    /// LPUART registers from BAUD on (32-bit, little-endian).
    pub LpuartRegs {
        (0x000 => baud: ReadWrite<u32>),
        (0x004 => stat: ReadOnly<u32, LPUART_STAT::Register>),
        (0x008 => ctrl: ReadWrite<u32, LPUART_CTRL::Register>),
        (0x00c => data: WriteOnly<u32>),
        (0x010 => @END),
    }
}

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
/// 0: PL011; [`LPUART`]: LPUART (BASE is then its BAUD register);
/// otherwise 16550 with `(shift << 4) | width`.
static KIND: AtomicU8 = AtomicU8::new(0);
/// [`KIND`] of an LPUART (no 16550 has width 0).
const LPUART: u8 = 0xf0;
/// [`KIND`] of an SBSA generic UART: a PL011 whose UARTDR and UARTFR are
/// used, and nothing the firmware configured is written (Arm SBSA, "Generic
/// UART": no UARTLCR_H or UARTCR).
const SBSA: u8 = 0xf1;

enum Regs {
    Pl011(&'static Pl011Regs),
    Ns16550 { base: usize, shift: u8, width: u8 },
    Lpuart(&'static LpuartRegs),
}

fn regs() -> Option<Regs> {
    let b = BASE.load(Ordering::Relaxed);
    if b == 0 {
        return None;
    }
    match KIND.load(Ordering::Relaxed) {
        // SAFETY: `BASE` is only ever set by `init` to the address of a PL011
        // (or SBSA UART, whose registers are a subset at the same offsets) register block that stays mapped (identity, Device) for the kernel's life.
        0 | SBSA => Some(Regs::Pl011(unsafe { &*(b as *const Pl011Regs) })),
        // SAFETY: `BASE` is set by `init` to an LPUART's BAUD register
        // (block + offset), mapped as Device memory for the kernel's life.
        LPUART => Some(Regs::Lpuart(unsafe { &*(b as *const LpuartRegs) })),
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
            Regs::Lpuart(r) => r.stat.is_set(LPUART_STAT::TDRE),
        }
    }
    /// Everything written has left.
    fn idle(&self) -> bool {
        match self {
            Regs::Pl011(r) => !r.fr.is_set(UARTFR::BUSY),
            Regs::Ns16550 { .. } => self.ns_read(NS_LSR) & LSR_TEMT != 0,
            Regs::Lpuart(r) => r.stat.is_set(LPUART_STAT::TC),
        }
    }
    fn put(&self, b: u8) {
        match self {
            Regs::Pl011(r) => r.dr.set(u32::from(b)),
            Regs::Ns16550 { .. } => self.ns_write(NS_THR, b),
            Regs::Lpuart(r) => r.data.set(u32::from(b)),
        }
    }
}

/// Starts using `uart` (8N1, FIFOs on; the PL011 with TX and RX enabled,
/// the 16550 with its interrupts off, the LPUART's transmitter on as the
/// firmware configured it otherwise). A 16550 with an unsupported
/// `width` (not 1 or 4) or a `shift` that misaligns it is not used.
///
/// # Safety
/// `uart.base` must be the address of such a UART's registers, accessible
/// now and for as long as the kernel logs.
pub unsafe fn init(uart: Uart) {
    flush();
    let mut base = uart.base.0;
    let kind = match uart.kind {
        UartKind::Pl011 => 0,
        UartKind::SbsaUart => SBSA,
        UartKind::Lpuart { offset } => {
            base += u64::from(offset);
            LPUART
        }
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
    BASE.store(base as usize, Ordering::Relaxed);
    match regs() {
        Some(Regs::Pl011(_)) if kind == SBSA => {}
        Some(Regs::Pl011(r)) => {
            r.lcr_h.write(UARTLCR_H::WLEN.val(0b11) + UARTLCR_H::FEN::SET);
            r.cr.write(UARTCR::UARTEN::SET + UARTCR::TXE::SET + UARTCR::RXE::SET);
        }
        Some(r @ Regs::Ns16550 { .. }) => {
            r.ns_write(NS_IER, 0);
            r.ns_write(NS_LCR, 0x03); // 8 data bits, no parity, 1 stop, DLAB off
            r.ns_write(NS_FCR, 0x07); // FIFOs on and cleared
        }
        Some(Regs::Lpuart(r)) => r.ctrl.modify(LPUART_CTRL::TE::SET),
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
