//! A partition's console: an emulated SBSA UART (Arm DEN0094 "Generic
//! UART", the PL011 subset Linux's `amba-pl011` driver drives in its
//! `arm,sbsa-uart` mode and as an `earlycon`: UARTDR, UARTRSR/ECR, UARTFR,
//! UARTIMSC, UARTRIS, UARTMIS, UARTICR; PL011 TRM DDI 0183 §3.3).
//!
//! Transmission only: the FIFO empties at once (UARTFR says empty, never
//! full or busy), and nothing is ever received. The transmit interrupt is
//! raised by each write and cleared through UARTICR, which is what the
//! driver's interrupt-driven transmitter needs. What the partition writes is
//! assembled into lines for the kernel's log, tagged with its name by the
//! kernel; a long line is cut at [`LINE_MAX`] bytes, and lines beyond the
//! rate limit are dropped and counted, so a chatty partition costs the
//! kernel and the others a bounded amount of logging.

use alloc::vec::Vec;

/// Size of the register window.
pub const WINDOW: u64 = 0x1000;
/// Longest line passed to the log in one piece.
pub const LINE_MAX: usize = 160;
/// Lines a partition may log in a burst.
pub const BURST_LINES: u32 = 64;
/// Lines per second a partition may log, sustained.
pub const LINES_PER_SECOND: u32 = 32;

const DR: u64 = 0x000;
const RSR_ECR: u64 = 0x004;
const FR: u64 = 0x018;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
/// UARTFR: TXFE (7) and RXFE (4): transmit FIFO empty, nothing received.
const FR_IDLE: u64 = (1 << 7) | (1 << 4);
/// The transmit interrupt bit of UARTIMSC/RIS/MIS/ICR.
const TX: u16 = 1 << 5;
/// Implemented interrupt bits (RIMIM..OEIM, 10:0).
const IRQ_BITS: u16 = 0x7ff;

/// What the kernel does after a register access.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The value a read returns.
    pub value: u64,
    /// A complete line to log (without its newline).
    pub line: Option<Vec<u8>>,
    /// Lines dropped by the rate limit before this one (logged with it).
    pub dropped: u32,
}

/// The UART's state.
#[derive(Clone, Debug)]
pub struct Vuart {
    imsc: u16,
    /// The transmit interrupt is raised (by a write; cleared by UARTICR).
    tx_raised: bool,
    line: Vec<u8>,
    tokens: u32,
    refilled_us: u64,
    dropped: u32,
    burst: u32,
    per_second: u32,
}

impl Default for Vuart {
    fn default() -> Self {
        Vuart::with_limit(BURST_LINES, LINES_PER_SECOND)
    }
}

impl Vuart {
    /// A reset UART (interrupts masked, nothing buffered).
    pub fn new() -> Self {
        Self::default()
    }

    /// A reset UART logging at most `burst` lines at once and
    /// `per_second` sustained (each at least 1).
    pub fn with_limit(burst: u32, per_second: u32) -> Self {
        let burst = burst.max(1);
        Vuart { imsc: 0, tx_raised: false, line: Vec::new(), tokens: burst, refilled_us: 0, dropped: 0, burst, per_second: per_second.max(1) }
    }

    /// UARTRIS.
    fn ris(&self) -> u16 {
        if self.tx_raised {
            TX
        } else {
            0
        }
    }

    /// The UART's interrupt line: some raised interrupt is unmasked.
    pub fn irq_level(&self) -> bool {
        self.ris() & self.imsc != 0
    }

    /// A read (`write` = `None`) or write of register `offset` at time
    /// `now_us` (for the rate limit).
    pub fn access(&mut self, offset: u64, write: Option<u64>, now_us: u64) -> Outcome {
        let mut out = Outcome::default();
        match (offset, write) {
            (DR, Some(v)) => {
                self.tx_raised = true;
                match v as u8 {
                    b'\n' => self.flush(now_us, &mut out),
                    b'\r' => {}
                    c => {
                        self.line.push(c);
                        if self.line.len() >= LINE_MAX {
                            self.flush(now_us, &mut out);
                        }
                    }
                }
            }
            (FR, None) => out.value = FR_IDLE,
            (IMSC, None) => out.value = u64::from(self.imsc),
            (IMSC, Some(v)) => self.imsc = v as u16 & IRQ_BITS,
            (RIS, None) => out.value = u64::from(self.ris()),
            (MIS, None) => out.value = u64::from(self.ris() & self.imsc),
            (ICR, Some(v)) => {
                if v as u16 & TX != 0 {
                    self.tx_raised = false;
                }
            }
            // UARTDR reads (nothing received), UARTRSR/ECR, and every other
            // offset: zero, writes ignored.
            (DR | RSR_ECR, _) | (_, _) => {}
        }
        out
    }

    fn flush(&mut self, now_us: u64, out: &mut Outcome) {
        let line = core::mem::take(&mut self.line);
        // Token bucket: LINES_PER_SECOND, up to BURST_LINES at once.
        let earned = now_us.saturating_sub(self.refilled_us) * u64::from(self.per_second) / 1_000_000;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(self.burst)) as u32;
            self.refilled_us = now_us;
        }
        if self.tokens == 0 {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.tokens -= 1;
        out.dropped = core::mem::take(&mut self.dropped);
        out.line = Some(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn write(u: &mut Vuart, s: &[u8], now: u64) -> Vec<Vec<u8>> {
        s.iter().filter_map(|&c| u.access(DR, Some(u64::from(c)), now).line).collect()
    }

    #[test]
    fn lines_come_out_whole() {
        let mut u = Vuart::new();
        assert_eq!(u.access(FR, None, 0).value, 0x90, "empty, never full or busy");
        assert_eq!(write(&mut u, b"hello\r\nworld", 0), vec![b"hello".to_vec()]);
        assert_eq!(write(&mut u, b"!\n", 0), vec![b"world!".to_vec()]);
        let long = [b'x'; LINE_MAX + 10];
        let lines = write(&mut u, &long, 0);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_MAX);
    }

    #[test]
    fn transmit_interrupt_follows_writes_and_icr() {
        let mut u = Vuart::new();
        assert!(!u.irq_level());
        u.access(IMSC, Some(u64::from(TX)), 0);
        assert!(!u.irq_level(), "nothing written yet");
        u.access(DR, Some(u64::from(b'a')), 0);
        assert!(u.irq_level());
        assert_eq!(u.access(MIS, None, 0).value, u64::from(TX));
        u.access(ICR, Some(u64::from(TX)), 0);
        assert!(!u.irq_level());
        u.access(DR, Some(u64::from(b'b')), 0);
        u.access(IMSC, Some(0), 0);
        assert!(!u.irq_level(), "masked");
        assert_eq!(u.access(RIS, None, 0).value, u64::from(TX));
        assert_eq!(u.access(0x24, None, 0).value, 0, "other registers read as zero");
    }

    #[test]
    fn a_chatty_partition_is_rate_limited() {
        let mut u = Vuart::new();
        let mut logged = 0;
        for _ in 0..(BURST_LINES + 100) {
            logged += write(&mut u, b"spam\n", 5).len();
        }
        assert_eq!(logged, BURST_LINES as usize, "a burst, then nothing");
        // A second later: LINES_PER_SECOND more, the first saying how many
        // were dropped.
        let o = {
            write(&mut u, b"late", 1_000_005);
            u.access(DR, Some(u64::from(b'\n')), 1_000_005)
        };
        assert_eq!(o.line.as_deref(), Some(&b"late"[..]));
        assert_eq!(o.dropped, 100);
        let mut big = Vuart::with_limit(1000, 1000);
        assert_eq!((0..500).map(|_| write(&mut big, b"boot\n", 5).len()).sum::<usize>(), 500, "a larger limit");
    }
}
