//! QEMU's own trace of its SMMU model (`-trace smmuv3_* -trace smmu_* -D file`):
//! ground truth that no bug in the kernel can fake.

use std::path::Path;

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
            if name.starts_with("smmu") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                t.events.push(TraceEvent { name: name.to_string(), args: args.trim().to_string() });
            } else if !line.trim().is_empty() {
                t.other.push(line.to_string());
            }
        }
        t
    }

    /// Events named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TraceEvent> + 'a {
        self.events.iter().filter(move |e| e.name == name)
    }

    /// How many events are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.named(name).count()
    }

    /// MMIO writes to the SMMU's registers: (offset, value).
    pub fn mmio_writes(&self) -> Vec<(u64, u64)> {
        self.named("smmuv3_write_mmio").filter_map(|e| Some((e.field("addr")?, e.field("val")?))).collect()
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
}
