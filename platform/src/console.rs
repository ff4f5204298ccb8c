//! The PL011 console the defmt logger writes to.
//!
//! Register map: Arm PrimeCell UART (PL011) TRM, section 3.2. Every wait on
//! the FIFO is bounded: a wedged UART loses log bytes, it never stops the
//! kernel.

use core::sync::atomic::{AtomicUsize, Ordering};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

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

static BASE: AtomicUsize = AtomicUsize::new(0);

fn regs() -> Option<&'static Pl011Regs> {
    let b = BASE.load(Ordering::Relaxed);
    // SAFETY: `BASE` is only ever set by `init` to the address of a PL011
    // register block that stays mapped (identity, Device) for the kernel's life.
    (b != 0).then(|| unsafe { &*(b as *const Pl011Regs) })
}

/// Starts using the PL011 at `base` (8N1, FIFOs on, TX and RX enabled).
///
/// # Safety
/// `base` must be the address of a PL011's registers, accessible now and
/// for as long as the kernel logs.
pub unsafe fn init(base: crate::PhysAddr) {
    flush();
    BASE.store(base.0 as usize, Ordering::Relaxed);
    if let Some(r) = regs() {
        r.lcr_h.write(UARTLCR_H::WLEN.val(0b11) + UARTLCR_H::FEN::SET);
        r.cr.write(UARTCR::UARTEN::SET + UARTCR::TXE::SET + UARTCR::RXE::SET);
    }
}

/// Writes bytes, dropping any the UART will not take in bounded time.
pub fn write(bytes: &[u8]) {
    let Some(r) = regs() else { return };
    for &b in bytes {
        let mut spins = 0;
        while r.fr.is_set(UARTFR::TXFF) {
            spins += 1;
            if spins == TX_SPIN_LIMIT {
                return;
            }
            core::hint::spin_loop();
        }
        r.dr.set(u32::from(b));
    }
}

/// Waits (bounded) until everything written has left the UART.
pub fn flush() {
    let Some(r) = regs() else { return };
    let mut spins = 0;
    while r.fr.is_set(UARTFR::BUSY) && spins < TX_SPIN_LIMIT {
        spins += 1;
        core::hint::spin_loop();
    }
}
