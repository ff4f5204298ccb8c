//! Decoding the kernel's defmt stream (rzcobs frames on the UART) into lines.

use defmt_decoder::{DecodeError, StreamDecoder, Table};
use std::fmt;

/// One decoded log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Microseconds since reset, from the kernel's defmt timestamp.
    pub micros: Option<u64>,
    /// "ERROR", "WARN", "INFO", "DEBUG", "TRACE" or "PRINT".
    pub level: String,
    /// The formatted message.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.micros {
            Some(us) => write!(f, "[{:>5}.{:06}] {:<5} {}", us / 1_000_000, us % 1_000_000, self.level, self.message),
            None => write!(f, "[      ?     ] {:<5} {}", self.level, self.message),
        }
    }
}

/// The kernel ELF's defmt table.
pub struct Decoder {
    table: Table,
}

impl Decoder {
    /// Reads the table from the kernel ELF.
    pub fn from_elf(elf: &[u8]) -> Result<Decoder, String> {
        match Table::parse(elf) {
            Ok(Some(table)) => Ok(Decoder { table }),
            Ok(None) => Err("the kernel ELF has no .defmt section".into()),
            Err(e) => Err(format!("cannot read the kernel's defmt table: {e}")),
        }
    }

    /// A stream decoder: feed bytes as they arrive, take lines out.
    pub fn stream(&self) -> LineStream<'_> {
        LineStream { inner: self.table.new_stream_decoder(), malformed: 0 }
    }
}

/// Incremental decoder of the UART byte stream.
pub struct LineStream<'t> {
    inner: Box<dyn StreamDecoder + Send + Sync + 't>,
    /// Frames that could not be decoded (corruption on the line).
    pub malformed: usize,
}

impl LineStream<'_> {
    /// Adds received bytes and returns every complete line.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        self.inner.received(bytes);
        let mut out = Vec::new();
        loop {
            match self.inner.decode() {
                Ok(frame) => {
                    let micros = frame.display_timestamp().and_then(|t| parse_micros(&t.to_string()));
                    let level = frame.level().map(|l| l.as_str().to_uppercase()).unwrap_or_else(|| "PRINT".into());
                    out.push(LogLine { micros, level, message: frame.display_message().to_string() });
                }
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => self.malformed += 1,
            }
        }
        out
    }
}

/// The kernel's timestamp (`{=u64:us}`) as defmt-decoder displays it:
/// seconds with a fraction, or plain microseconds.
fn parse_micros(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.split_once('.') {
        Some((secs, frac)) => {
            let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            Some(secs.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?)
        }
        None => s.parse().ok(),
    }
}

/// Parses `0x…` hex or decimal (with `,` separators dropped), as the
/// kernel and the payload print numbers.
pub fn num(s: &str) -> Option<u64> {
    let s: String = s.trim().trim_end_matches([',', ')', ']', ';', ':']).chars().filter(|&c| c != ',').collect();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The number after `key` in `text` (`key` included, e.g. `"min "`).
pub fn after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    num(text[at..].split_whitespace().next()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_parse() {
        assert_eq!(super::parse_micros("1.000250"), Some(1_000_250));
        assert_eq!(super::parse_micros("0.5"), Some(500_000));
        assert_eq!(super::parse_micros("42"), Some(42));
        assert_eq!(super::parse_micros("x"), None);
    }
}
