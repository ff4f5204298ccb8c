//! Reading what a Linux guest printed: the init script's marks, interrupt
//! counts from `/proc/interrupts`, and the probe module's results. Each
//! reader takes log messages and finds its text anywhere in a line, so it
//! works on a bare Linux's console and on a partition's tagged lines.

/// What the init script's `mark` prints before the name.
pub const MARK: &str = "bulkhead-init: ";
/// What every line of the probe module starts with.
pub const PROBE: &str = "bulkhead-probe: ";

/// PSCI and SMCCC function IDs (Arm DEN 0022, DEN 0028) the scenarios issue.
pub mod fid {
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u64 = 0x8000_0000;
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u64 = 0x8400_0000;
    /// PSCI_FEATURES.
    pub const PSCI_FEATURES: u64 = 0x8400_000a;
    /// CPU_ON, SMC64.
    pub const CPU_ON: u64 = 0xc400_0003;
}

/// PSCI return codes (Arm DEN 0022, table 5.2.2).
pub mod ret {
    /// NOT_SUPPORTED.
    pub const NOT_SUPPORTED: i64 = -1;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// DENIED.
    pub const DENIED: i64 = -3;
    /// ALREADY_ON.
    pub const ALREADY_ON: i64 = -4;
}

/// The counter at the init script's `mark NAME` (first such line).
pub fn mark<'a>(lines: impl IntoIterator<Item = &'a str>, name: &str) -> Option<u64> {
    let prefix = format!("{MARK}{name} ticks=");
    lines.into_iter().find_map(|l| l.split_once(prefix.as_str()).and_then(|(_, t)| t.trim().parse().ok()))
}

/// The text after `bulkhead-init: NAME ` on the first line that has it.
pub fn init_line<'a>(lines: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    let prefix = format!("{MARK}{name} ");
    lines.into_iter().find_map(|l| l.split_once(prefix.as_str()).map(|(_, rest)| rest.trim()))
}

/// The per-CPU counts of a `/proc/interrupts` line (`13: 283 275 GICv3 26
/// Level arch_timer` → [283, 275]).
pub fn interrupt_counts(line: &str) -> Vec<u64> {
    let Some((_, rest)) = line.split_once(':') else { return Vec::new() };
    rest.split_whitespace().map_while(|w| w.parse().ok()).collect()
}

/// One SMCCC call the probe module made, and what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeCall {
    /// `smc` or `hvc`.
    pub conduit: String,
    /// x0 to x3 as issued.
    pub args: [u64; 4],
    /// x0 to x3 on return.
    pub ret: [u64; 4],
}

impl ProbeCall {
    /// x0 on return as a signed value (PSCI's error codes are negative).
    pub fn status(&self) -> i64 {
        self.ret[0] as i64
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// Every completed call of the probe module
/// (`bulkhead-probe: smc 0x84000000 0x0 0x0 0x0 -> 0x10001 0x0 0x0 0x0 (65537)`).
pub fn probe_calls<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<ProbeCall> {
    lines
        .into_iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(PROBE)?;
            let (issued, returned) = rest.split_once(" -> ")?;
            let mut a = issued.split_whitespace();
            let conduit = a.next()?.to_string();
            let args: Vec<u64> = a.map(hex).collect::<Option<_>>()?;
            let ret: Vec<u64> = returned.split_whitespace().take(4).map(hex).collect::<Option<_>>()?;
            Some(ProbeCall { conduit, args: args.try_into().ok()?, ret: ret.try_into().ok()? })
        })
        .collect()
}

/// The first completed call of `conduit` with function ID `fid` and, when
/// given, x1.
pub fn probe_call<'c>(calls: &'c [ProbeCall], conduit: &str, fid: u64, x1: Option<u64>) -> Option<&'c ProbeCall> {
    calls.iter().find(|c| c.conduit == conduit && c.args[0] == fid && x1.is_none_or(|x| c.args[1] == x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_interrupts_are_read() {
        let lines = [
            "bulkhead-init: init ticks=1093217310",
            "linux: bulkhead-init: poweroff ticks=2201",
            "bulkhead-init: timer-before  13:        283        275     GICv3  26 Level     arch_timer",
        ];
        assert_eq!(mark(lines, "init"), Some(1_093_217_310));
        assert_eq!(mark(lines, "poweroff"), Some(2201));
        assert_eq!(mark(lines, "start"), None);
        let t = init_line(lines, "timer-before").unwrap();
        assert_eq!(interrupt_counts(t), vec![283, 275]);
        assert_eq!(interrupt_counts("IPI2:         0          0       CPU stop interrupts"), vec![0, 0]);
        assert_eq!(interrupt_counts("no colon"), Vec::<u64>::new());
    }

    #[test]
    fn probe_results_are_read_and_unfinished_calls_are_not() {
        let lines = [
            "[    2.197502] bulkhead-probe: smc 0x84000000 0x0 0x0 0x0 ...",
            "[    2.197513] bulkhead-probe: smc 0x84000000 0x0 0x0 0x0 -> 0x10001 0x0 0x0 0x0 (65537)",
            "[    2.197566] bulkhead-probe: smc 0xc4000003 0x1 0x0 0x0 -> 0xfffffffffffffffc 0x1 0x0 0x0 (-4)",
            "[    2.197633] bulkhead-probe: hvc 0x84000000 0x0 0x0 0x0: not issued, this kernel runs at EL2",
            "bulkhead-probe: smc 0x1 0x2 -> 0x0",
        ];
        let calls = probe_calls(lines);
        assert_eq!(calls.len(), 2);
        assert_eq!(probe_call(&calls, "smc", fid::PSCI_VERSION, None).map(|c| c.ret[0]), Some(0x10001));
        assert_eq!(probe_call(&calls, "smc", fid::CPU_ON, Some(1)).map(ProbeCall::status), Some(ret::ALREADY_ON));
        assert!(probe_call(&calls, "hvc", fid::PSCI_VERSION, None).is_none());
    }
}
