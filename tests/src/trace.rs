//! QEMU's own trace of its SMMU model (`-trace smmuv3_* -trace smmu_* -D file`):
//! ground truth that no bug in the kernel can fake.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// A kind of trace event, under every name QEMU has given its trace point
/// (QEMU 11 renamed `smmuv3_record_event` to `smmuv3_propagate_event`).
/// Checks ask for kinds, not names, so that a rename shows up as a trace
/// point this QEMU lacks instead of as "zero events".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// What the event means, for messages.
    pub what: &'static str,
    /// Its trace point's names, oldest first.
    pub names: &'static [&'static str],
}

/// The kinds the scenarios and the bench read.
pub mod kind {
    use super::Kind;
    /// An event (fault) the SMMU recorded for its event queue: `F_TRANSLATION sid=8`.
    pub const EVENT: Kind = Kind { what: "SMMU event recorded", names: &["smmuv3_record_event", "smmuv3_propagate_event"] };
    /// A DMA translated: `sid=8 iova=0x.. translated=0x.. perm=0x..`.
    pub const TRANSLATE_SUCCESS: Kind = Kind { what: "DMA translated", names: &["smmuv3_translate_success"] };
    /// A DMA the SMMU aborted (an abort STE, or GBPA.ABORT with SMMUEN=0).
    pub const TRANSLATE_ABORT: Kind = Kind { what: "DMA aborted", names: &["smmuv3_translate_abort"] };
    /// A DMA passed by a bypass STE.
    pub const TRANSLATE_BYPASS: Kind = Kind { what: "DMA translated in bypass", names: &["smmuv3_translate_bypass"] };
    /// A DMA passed untranslated by a disabled SMMU whose GBPA does not abort.
    pub const TRANSLATE_DISABLE: Kind = Kind { what: "DMA reaching a disabled SMMU", names: &["smmuv3_translate_disable"] };
    /// CFGI_STE of one StreamID: `streamid =8`.
    pub const CFGI_STE: Kind = Kind { what: "STE invalidation", names: &["smmuv3_cmdq_cfgi_ste"] };
    /// A command consumed: `<--- CMD_SYNC`.
    pub const CMDQ_OPCODE: Kind = Kind { what: "command consumed", names: &["smmuv3_cmdq_opcode"] };
    /// A write to the PL011's registers (`addr 0x000 value 0x00000041 reg
    /// DR`: a character sent). Not traced unless a run asks for it; in the
    /// same log as the SMMU's events, it places console lines among them.
    pub const UART_WRITE: Kind = Kind { what: "PL011 register write", names: &["pl011_write"] };
    /// An SMMU register write: `addr: 0x44 val:0x80100000 size: 0x4(0)`.
    pub const WRITE_MMIO: Kind = Kind { what: "SMMU register write", names: &["smmuv3_write_mmio"] };
}

impl Kind {
    /// Whether `e` is of this kind.
    pub fn matches(&self, e: &TraceEvent) -> bool {
        self.names.contains(&e.name.as_str())
    }
}

/// One trace event: `name` and the rest of the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Trace point, e.g. `smmuv3_cmdq_opcode`.
    pub name: String,
    /// Its formatted arguments.
    pub args: String,
}

impl TraceEvent {
    /// The value after `key` in the arguments (`"addr: 0x44"` → `0x44`),
    /// parsed as hex when it starts with 0x, else decimal.
    pub fn field(&self, key: &str) -> Option<u64> {
        let at = self.args.find(key)? + key.len();
        let rest = self.args[at..].trim_start_matches([':', '=', ' ']);
        let tok: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        match tok.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => tok.parse().ok(),
        }
    }
}

/// The parsed trace file.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Events in order.
    pub events: Vec<TraceEvent>,
    /// Lines that are not trace events (`-d guest_errors` messages share the file).
    pub other: Vec<String>,
    /// Every trace point the QEMU that wrote the trace has (`-trace
    /// help`); `None` when not known.
    pub catalogue: Option<Arc<BTreeSet<String>>>,
}

impl Trace {
    /// Parses a trace file; a missing file is an empty trace.
    pub fn read(path: &Path) -> Trace {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Trace::parse(&text)
    }

    /// Parses trace text.
    pub fn parse(text: &str) -> Trace {
        let mut t = Trace::default();
        for line in text.lines() {
            // Lines may carry a "pid@time:" prefix depending on QEMU's options.
            let body = match line.split_once(':') {
                Some((pre, rest)) if pre.contains('@') && !pre.contains(' ') => rest,
                _ => line,
            };
            let (name, args) = body.split_once(' ').unwrap_or((body, ""));
            if (name.starts_with("smmu") || kind::UART_WRITE.names.contains(&name)) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                t.events.push(TraceEvent { name: name.to_string(), args: args.trim().to_string() });
            } else if !line.trim().is_empty() {
                t.other.push(line.to_string());
            }
        }
        t
    }

    /// The same trace, known to come from a QEMU with these trace points.
    pub fn with_catalogue(mut self, points: Arc<BTreeSet<String>>) -> Trace {
        self.catalogue = Some(points);
        self
    }

    /// Events of `kind`, under any of its names.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &TraceEvent> + '_ {
        self.events.iter().filter(move |e| kind.matches(e))
    }

    /// The name this QEMU gives `kind`'s trace point: `Err` says why the
    /// tracer would not have recorded any (no catalogue, or none of the
    /// names in it).
    pub fn traced_as(&self, kind: Kind) -> Result<&'static str, String> {
        let points = self.catalogue.as_ref().ok_or("the QEMU's list of trace points is unknown")?;
        kind.names
            .iter()
            .copied()
            .find(|n| points.contains(*n))
            .ok_or_else(|| format!("this QEMU has no trace point for {} (none of {})", kind.what, kind.names.join(", ")))
    }

    /// Where `e` (an event of this trace) is in [`Trace::events`].
    pub fn index_of(&self, e: &TraceEvent) -> Option<usize> {
        let base = self.events.as_ptr() as usize;
        let at = (e as *const TraceEvent as usize).checked_sub(base)? / std::mem::size_of::<TraceEvent>();
        (at < self.events.len() && std::ptr::eq(&self.events[at], e)).then_some(at)
    }

    /// Events named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TraceEvent> + 'a {
        self.events.iter().filter(move |e| e.name == name)
    }

    /// How many events are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.named(name).count()
    }

    /// The bytes written to the PL011's data register (UARTDR at offset
    /// 0), each with its index in [`Trace::events`]. Empty unless the run
    /// traced [`kind::UART_WRITE`].
    pub fn uart_bytes(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.events.iter().enumerate().filter_map(|(i, e)| {
            if !kind::UART_WRITE.matches(e) || e.field("addr") != Some(0) {
                return None;
            }
            Some((i, (e.field("value")? & 0xff) as u8))
        })
    }

    /// The console lines the PL011 sent ([`Trace::uart_bytes`]), each with
    /// the index in [`Trace::events`] of the write that ended it (its
    /// `\n`); `\r` dropped.
    pub fn uart_lines(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        for (i, c) in self.uart_bytes() {
            match c {
                b'\n' => out.push((i, String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned())),
                b'\r' => {}
                c => line.push(c),
            }
        }
        out
    }

    /// bulkhead's log lines (its defmt stream on the PL011,
    /// [`Trace::uart_bytes`]) decoded with `decoder`, each message with
    /// the index in [`Trace::events`] of the write that ended its frame:
    /// where in QEMU's ordered record the kernel printed it (a partition's
    /// console line is printed when the guest ends it).
    pub fn log_lines(&self, decoder: &crate::log::Decoder) -> Vec<(usize, String)> {
        let mut stream = decoder.stream();
        let mut out = Vec::new();
        for (i, c) in self.uart_bytes() {
            out.extend(stream.feed(&[c]).into_iter().map(|l| (i, l.message)));
        }
        out
    }

    /// MMIO writes to the SMMU's registers: (offset, value).
    pub fn mmio_writes(&self) -> Vec<(u64, u64)> {
        self.of(kind::WRITE_MMIO).filter_map(|e| Some((e.field("addr")?, e.field("val")?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_prefixed_lines() {
        let t = Trace::parse(
            "smmuv3_write_mmio addr: 0x44 val:0x80100000 size: 0x4(0)\n\
             123@1700000000.5:smmuv3_cmdq_opcode <CMD_SYNC>\n\
             guest error: something\n",
        );
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.mmio_writes(), vec![(0x44, 0x8010_0000)]);
        assert_eq!(t.count("smmuv3_cmdq_opcode"), 1);
        assert_eq!(t.other.len(), 1);
    }

    #[test]
    fn console_lines_are_placed_among_the_events() {
        let mut text = String::from("pl011_write addr 0x030 value 0x00000301 reg CR\n");
        for c in "hi\r\n".bytes() {
            text.push_str(&format!("pl011_write addr 0x000 value 0x{c:08x} reg DR\n"));
        }
        text.push_str("smmuv3_write_mmio addr: 0x20 val:0x1 size: 0x4(0)\n");
        for c in "ok\n".bytes() {
            text.push_str(&format!("pl011_write addr 0x000 value 0x{c:08x} reg DR\n"));
        }
        let t = Trace::parse(&text);
        assert_eq!(t.uart_lines(), vec![(4, "hi".to_string()), (8, "ok".to_string())]);
        // The control register write is no byte; each DR write is one.
        let bytes: Vec<(usize, u8)> = t.uart_bytes().collect();
        assert_eq!(bytes.first(), Some(&(1, b'h')));
        assert_eq!(bytes.iter().map(|&(_, c)| c).collect::<Vec<u8>>(), b"hi\r\nok\n".to_vec());
        assert_eq!(t.mmio_writes(), vec![(0x20, 1)]);
    }
}
