//! `--topology BOOT.LOG`: the PCI boot table a kernel printed
//! (boards/kernel/src/discover.rs `print_host`), read back into the
//! `platform::pci::HostTopology` values enumeration produced, so the checker
//! groups exactly what that boot grouped.
//!
//! ```text
//! [    0.058967] INFO  PCI host /pcie@10000000: ECAM [0x4010000000..0x4020000000), buses 0x00..=0x02, 4 functions (bus master off on all)
//! [    0.060033] INFO    pci 00:00.0 1b36:0008 class 060000 PCI device
//! [    0.070488] INFO    pci 00:03.0 1b36:000c class 060400 root port, multifunction
//! [    0.070552] INFO      buses 01..=02
//! [    0.070598] INFO      window [0x10200000..0x10500000)
//! [    0.070654] INFO      ACS capability SV|TB|RR|CR|UF|DT control SV|TB|RR|CR|UF
//! [    0.070892] INFO      BAR0 [0x10100000..0x10101000) 32-bit
//! ```
//!
//! The timestamp and level the host decoder adds are optional. Everything
//! grouping reads is in the table: BDF, IDs, class, kind, multi-function,
//! FLR, bus numbers of bridges (from which, as enumeration does, each
//! function's parent follows: the bridge whose secondary bus it sits on) and
//! ACS capability and control. What the table does not show — capability
//! offsets, a reserved PCIe type's number, bus addresses of BARs (the CPU
//! address is used) — grouping does not use.

use devicetree::pci::{Acs, AcsFlags, Bar, Bdf, BridgeInfo, Function, FunctionKind, HostTopology};
use devicetree::PhysRange;

/// One host bridge's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedHost {
    /// The host bridge's DT path.
    pub path: String,
    /// Its ECAM window as printed.
    pub ecam: PhysRange,
    /// What enumeration found.
    pub topology: HostTopology,
}

/// Every kind enumeration names (a reserved PCIe type's number is not
/// printed; any reserved one groups the same).
const KINDS: [FunctionKind; 12] = [
    FunctionKind::PciDevice,
    FunctionKind::PciBridge,
    FunctionKind::Endpoint,
    FunctionKind::LegacyEndpoint,
    FunctionKind::RcIntegratedEndpoint,
    FunctionKind::RcEventCollector,
    FunctionKind::RootPort,
    FunctionKind::UpstreamPort,
    FunctionKind::DownstreamPort,
    FunctionKind::PcieToPciBridge,
    FunctionKind::PciToPcieBridge,
    FunctionKind::Reserved(0xf),
];

/// ACS bits by the names the kernel prints them with (pci/mod.rs, `AcsFlags`).
const ACS_NAMES: [(&str, u16); 7] =
    [("SV", AcsFlags::SV), ("TB", AcsFlags::TB), ("RR", AcsFlags::RR), ("CR", AcsFlags::CR), ("UF", AcsFlags::UF), ("EC", AcsFlags::EC), ("DT", AcsFlags::DT)];

/// The log message of `line`, without the host decoder's `[ seconds ]`
/// timestamp and level.
fn message(line: &str) -> &str {
    let mut s = line.trim_end();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            if rest[..end].chars().all(|c| c.is_ascii_digit() || c == '.' || c == ' ' || c == '?') {
                s = &rest[end + 1..];
            }
        }
    }
    let t = s.trim_start();
    for level in ["ERROR ", "WARN ", "INFO ", "DEBUG ", "TRACE ", "PRINT "] {
        if let Some(rest) = t.strip_prefix(level) {
            return rest.trim_start();
        }
    }
    t
}

fn hex<T: TryFrom<u64>>(s: &str, what: &str) -> Result<T, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let v = u64::from_str_radix(digits, 16).map_err(|_| format!("{what} {s:?} is not a hex number"))?;
    T::try_from(v).map_err(|_| format!("{what} {s} is out of range"))
}

/// `[0x10000000..0x10100000)`.
fn range(s: &str) -> Result<PhysRange, String> {
    let inner = s.strip_prefix('[').and_then(|s| s.strip_suffix(')')).ok_or(format!("{s:?} is not a [start..end) range"))?;
    let (a, b) = inner.split_once("..").ok_or(format!("{s:?} is not a [start..end) range"))?;
    let (a, b) = (hex::<u64>(a, "range start")?, hex::<u64>(b, "range end")?);
    if b < a {
        return Err(format!("{s} ends before it starts"));
    }
    Ok(PhysRange::from_bounds(a, b))
}

fn acs(s: &str) -> Result<AcsFlags, String> {
    if s == "none" {
        return Ok(AcsFlags(0));
    }
    let mut v = 0;
    for name in s.split('|') {
        v |= ACS_NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).ok_or(format!("unknown ACS flag {name}"))?;
    }
    Ok(AcsFlags(v))
}

/// What a `PCI host` line says.
struct HostLine {
    path: String,
    ecam: PhysRange,
    root_bus: u8,
    last_bus: u8,
    functions: usize,
}

/// `PCI host PATH: ECAM RANGE, buses 0xRR..=0xLL, N functions (...)`.
fn host_line(m: &str) -> Result<Option<HostLine>, String> {
    let Some(rest) = m.strip_prefix("PCI host ") else { return Ok(None) };
    let Some((path, rest)) = rest.split_once(": ECAM ") else { return Ok(None) };
    let (ecam, rest) = rest.split_once(", buses ").ok_or("no buses")?;
    let (buses, rest) = rest.split_once(", ").ok_or("no function count")?;
    let (first, last) = buses.split_once("..=").ok_or("buses are not FIRST..=LAST")?;
    let count = rest.split_whitespace().next().ok_or("no function count")?;
    let count = count.parse().map_err(|_| format!("function count {count:?} is not a number"))?;
    Ok(Some(HostLine { path: path.to_string(), ecam: range(ecam)?, root_bus: hex(first, "bus")?, last_bus: hex(last, "bus")?, functions: count }))
}

/// `pci BB:DD.F VVVV:DDDD class CCCCCC KIND[, multifunction][, FLR][, INTx]`.
fn function_line(m: &str) -> Result<Option<Function>, String> {
    let Some(rest) = m.strip_prefix("pci ") else { return Ok(None) };
    let mut it = rest.splitn(5, ' ');
    let (Some(bdf), Some(ids), Some("class"), Some(class), Some(kind)) = (it.next(), it.next(), it.next(), it.next(), it.next()) else {
        return Err(format!("{m:?} is not `pci BB:DD.F VVVV:DDDD class CCCCCC KIND`"));
    };
    let (bus, devfn) = bdf.split_once(':').ok_or(format!("{bdf:?} is not BB:DD.F"))?;
    let (dev, func) = devfn.split_once('.').ok_or(format!("{bdf:?} is not BB:DD.F"))?;
    let (vendor, device) = ids.split_once(':').ok_or(format!("{ids:?} is not VVVV:DDDD"))?;
    let mut kind = kind;
    let interrupt_pin =
        ["INTA", "INTB", "INTC", "INTD"].iter().position(|p| kind.strip_suffix(&format!(", {p}")).inspect(|k| kind = k).is_some()).map_or(0, |i| i as u8 + 1);
    let flr = kind.strip_suffix(", FLR").inspect(|k| kind = k).is_some();
    let multifunction = kind.strip_suffix(", multifunction").inspect(|k| kind = k).is_some();
    let kind = *KINDS.iter().find(|k| k.name() == kind).ok_or(format!("unknown function kind {kind:?}"))?;
    let (dev, func): (u8, u8) = (hex(dev, "device")?, func.parse().map_err(|_| format!("function {func:?}"))?);
    if dev > 31 || func > 7 {
        return Err(format!("{bdf} is not a PCI address"));
    }
    Ok(Some(Function {
        bdf: Bdf::new(hex(bus, "bus")?, dev, func),
        vendor: hex(vendor, "vendor ID")?,
        device: hex(device, "device ID")?,
        class: hex(class, "class")?,
        header_type: 0,
        kind,
        parent: None,
        bars: Default::default(),
        io_bars: 0,
        acs: None,
        multifunction,
        flr,
        pcie_cap: None,
        interrupt_pin,
        bridge: None,
    }))
}

/// The detail lines under a function. Returns false when `m` is not one.
fn detail_line(m: &str, f: &mut Function) -> Result<bool, String> {
    if let Some(b) = m.strip_prefix("buses ") {
        let (sec, sub) = b.split_once("..=").ok_or(format!("{m:?}: buses are not SS..=SS"))?;
        f.header_type = 1;
        f.bridge = Some(BridgeInfo { primary: f.bdf.bus, secondary: hex(sec, "bus")?, subordinate: hex(sub, "bus")?, mem: None, pref: None });
    } else if let Some(w) = m.strip_prefix("window ") {
        let b = f.bridge.as_mut().ok_or("a window line before the bridge's buses line")?;
        match w.strip_suffix(" prefetchable") {
            Some(w) => b.pref = Some(range(w)?),
            None => b.mem = Some(range(w)?),
        }
    } else if let Some(a) = m.strip_prefix("ACS capability ") {
        let (cap, ctrl) = a.split_once(" control ").ok_or(format!("{m:?}: no control"))?;
        f.acs = Some(Acs { offset: 0, cap: acs(cap)?, ctrl: acs(ctrl)? });
    } else if let Some(b) = m.strip_prefix("I/O BARs ") {
        f.io_bars = hex(b.split_whitespace().next().unwrap_or(""), "I/O BARs")?;
    } else if let Some(b) = m.strip_prefix("BAR").filter(|b| b.starts_with(|c: char| c.is_ascii_digit())) {
        let mut it = b.split(' ');
        let (Some(index), Some(r), Some(width)) = (it.next(), it.next(), it.next()) else {
            return Err(format!("{m:?} is not `BARn [start..end) 32-bit|64-bit [prefetchable]`"));
        };
        let r = range(r)?;
        let bar = Bar {
            index: index.parse().map_err(|_| format!("BAR index {index:?}"))?,
            cpu: r.start,
            pci: r.start.0,
            size: r.size(),
            is_64: width == "64-bit",
            prefetchable: it.next() == Some("prefetchable"),
        };
        f.bars.try_push(bar).map_err(|_| "more than 6 BARs")?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// Reads every host bridge's table from a boot log.
pub fn parse(text: &str) -> Result<Vec<LoggedHost>, String> {
    let mut hosts: Vec<(LoggedHost, usize, usize)> = Vec::new(); // (host, announced functions, line)
    let mut open = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let m = message(line);
        if let Some(h) = host_line(m).map_err(at)? {
            if hosts.iter().any(|(l, _, _)| l.path == h.path) {
                return Err(at(format!("PCI host {} appears twice (give the log of one boot)", h.path)));
            }
            let topology = HostTopology { root_bus: h.root_bus, last_bus: h.last_bus, functions: Vec::new() };
            hosts.push((LoggedHost { path: h.path, ecam: h.ecam, topology }, h.functions, n + 1));
            open = true;
            continue;
        }
        if !open {
            continue;
        }
        let Some((host, _, _)) = hosts.last_mut() else { continue };
        if let Some(f) = function_line(m).map_err(at)? {
            host.topology.functions.push(f);
        } else if let Some(f) = host.topology.functions.last_mut() {
            // Any other line ends the table.
            open = detail_line(m, f).map_err(at)?;
        } else {
            open = false;
        }
    }
    let mut out = Vec::new();
    for (mut h, count, line) in hosts {
        if h.topology.functions.len() != count {
            return Err(format!("line {line}: PCI host {} announces {count} functions but {} follow (a truncated log?)", h.path, h.topology.functions.len()));
        }
        link_parents(&mut h)?;
        out.push(h);
    }
    Ok(out)
}

/// Each function's parent: the bridge whose secondary bus it sits on (the
/// bus numbers enumeration gave, as the table prints them).
fn link_parents(h: &mut LoggedHost) -> Result<(), String> {
    let t = &mut h.topology;
    for i in 0..t.functions.len() {
        let bus = t.functions[i].bdf.bus;
        if bus == t.root_bus {
            continue;
        }
        let parent = t.functions[..i].iter().position(|b| b.bridge.is_some_and(|b| b.secondary == bus)).ok_or_else(|| {
            let f = &t.functions[i].bdf;
            format!("PCI host {}: {:02x}:{:02x}.{} is on bus {bus:02x}, but no bridge listed before it has that secondary bus", h.path, f.bus, f.dev, f.func)
        })?;
        t.functions[i].parent = Some(parent);
        if let Some(b) = t.functions[i].bridge.as_mut() {
            b.primary = bus;
        }
    }
    if t.functions.iter().any(|f| f.bdf.bus > t.last_bus || f.bdf.bus < t.root_bus) {
        return Err(format!("PCI host {}: a function lies outside buses {:#04x}..={:#04x}", h.path, t.root_bus, t.last_bus));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: &str = "\
[    0.068690] INFO  PCI host /pcie@10000000: ECAM [0x4010000000..0x4020000000), buses 0x00..=0x02, 6 functions (bus master off on all)
[    0.069851] INFO    pci 00:00.0 1b36:0008 class 060000 PCI device
[    0.070260] INFO    pci 00:01.0 1234:11e8 class 00ff00 PCI device, INTA
[    0.070397] INFO      BAR0 [0x10000000..0x10100000) 32-bit
[    0.070488] INFO    pci 00:03.0 1b36:000c class 060400 root port, multifunction, FLR
[    0.070552] INFO      buses 01..=02
[    0.070598] INFO      window [0x10200000..0x10500000)
[    0.070654] INFO      ACS capability SV|TB|RR|CR|UF|DT control SV|TB|RR|CR|UF
[    0.070892] INFO      BAR0 [0x10100000..0x10101000) 32-bit
[    0.070931] INFO    pci 01:00.0 1b36:000e class 060400 PCIe-to-PCI bridge
[    0.070993] INFO      buses 02..=02
[    0.071006] INFO      window [0x10300000..0x10500000)
[    0.071031] INFO      BAR0 [0x10200000..0x10200100) 64-bit prefetchable
[    0.071069] INFO    pci 02:01.0 1234:11e8 class 00ff00 PCI device
[    0.071120] INFO      BAR0 [0x10300000..0x10400000) 32-bit
[    0.071157] INFO    pci 02:02.0 1234:11e8 class 00ff00 PCI device, multifunction, FLR, INTD
[    0.071208] INFO      I/O BARs 0x02 not assigned
[    0.077625] INFO  isolation groups: 4
";

    #[test]
    fn reads_the_boot_table() {
        let hosts = parse(SPLIT).unwrap();
        assert_eq!(hosts.len(), 1);
        let h = &hosts[0];
        assert_eq!(h.path, "/pcie@10000000");
        assert_eq!(h.ecam, PhysRange::from_bounds(0x40_1000_0000, 0x40_2000_0000));
        let t = &h.topology;
        assert_eq!((t.root_bus, t.last_bus, t.functions.len()), (0, 2, 6));
        let port = &t.functions[2];
        assert_eq!(port.kind, FunctionKind::RootPort);
        assert!(port.multifunction && port.flr);
        assert_eq!(port.bridge.map(|b| (b.secondary, b.subordinate)), Some((1, 2)));
        assert_eq!(port.acs.map(|a| (a.cap.0, a.ctrl.0)), Some((0x5f, 0x1f)));
        let bridge = &t.functions[3];
        assert_eq!((bridge.kind, bridge.parent), (FunctionKind::PcieToPciBridge, Some(2)));
        assert!(bridge.bars[0].is_64 && bridge.bars[0].prefetchable);
        assert_eq!((t.functions[4].parent, t.functions[5].parent), (Some(3), Some(3)));
        assert_eq!(t.functions[4].bars[0].range(), PhysRange::from_bounds(0x1030_0000, 0x1040_0000));
        assert_eq!(t.functions[5].io_bars, 2);
        assert!(t.functions[1].parent.is_none());
        assert_eq!(t.functions.iter().map(|f| f.interrupt_pin).collect::<Vec<_>>(), [0, 1, 0, 0, 0, 4]);
        assert!(t.functions[5].multifunction && t.functions[5].flr);
    }

    #[test]
    fn without_timestamps_and_from_xtask_run() {
        let plain: String = SPLIT.lines().map(|l| format!("{}\n", &l[15..])).collect();
        assert_eq!(parse(&plain).unwrap(), parse(SPLIT).unwrap());
        let bare: String = SPLIT.lines().map(|l| format!("{}\n", &l[21..])).collect();
        assert_eq!(parse(&bare).unwrap(), parse(SPLIT).unwrap());
    }

    #[test]
    fn broken_tables_are_errors() {
        let truncated: String = SPLIT.lines().take(10).map(|l| format!("{l}\n")).collect();
        assert!(parse(&truncated).unwrap_err().contains("announces 6 functions but 4 follow"));
        let orphan = SPLIT.replace("      buses 02..=02", "      buses 05..=05");
        assert!(parse(&orphan).unwrap_err().contains("02:01.0 is on bus 02"));
        let twice = format!("{SPLIT}{SPLIT}");
        assert!(parse(&twice).unwrap_err().contains("appears twice"));
        let kind = SPLIT.replace("PCI device\n[    0.070260]", "toaster\n[    0.070260]");
        assert!(parse(&SPLIT.replace(", INTA", ", INTE")).unwrap_err().contains("unknown function kind \"PCI device, INTE\""));
        assert!(parse(&kind).unwrap_err().contains("unknown function kind \"toaster\""));
        assert_eq!(parse("no table here\n").unwrap(), []);
    }
}
