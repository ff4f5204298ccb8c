//! Discovery: PCI enumeration and isolation groups on real QEMU topologies.
//!
//! Each scenario boots with a PCI topology, reads the group table from the
//! kernel's log, and checks QEMU's own trace: no DMA was ever translated in
//! bypass, and the last Command register write to every function left Bus
//! Master Enable off (memory decode too, except on bridges).

use crate::qemu::{Outcome, QemuConfig};
use crate::scenario::{exit, Checks, Scenario};

/// Every `edu` gets a 40-bit DMA mask (the default clamps RAM addresses into low MMIO).
const EDU: &str = "edu,dma_mask=0xffffffffff";
/// `edu` vendor:device as the boot table prints it.
const EDU_ID: &str = edu::PCI_ID;

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "discovery-root-bus", setup: |_| Ok(config(&[&format!("{EDU},addr=2.0")])), check: check_root_bus },
        Scenario {
            name: "discovery-root-port",
            setup: |_| Ok(config(&["pcie-root-port,id=rp1,chassis=1,addr=2.0", &format!("{EDU},bus=rp1,addr=0.0")])),
            check: check_root_port,
        },
        Scenario {
            name: "discovery-pcie-pci-bridge",
            setup: |_| {
                Ok(config(&[
                    "pcie-root-port,id=rp1,chassis=1,addr=2.0",
                    "pcie-pci-bridge,id=br1,bus=rp1,addr=0.0",
                    &format!("{EDU},bus=br1,addr=1.0"),
                    &format!("{EDU},bus=br1,addr=2.0"),
                ]))
            },
            check: check_pcie_pci_bridge,
        },
        Scenario {
            name: "discovery-pci-bridge",
            setup: |_| Ok(config(&["pci-bridge,id=pb1,chassis_nr=1,addr=2.0", &format!("{EDU},bus=pb1,addr=1.0")])),
            check: check_pci_bridge,
        },
        Scenario {
            name: "discovery-multifunction",
            setup: |_| Ok(config(&[&format!("{EDU},addr=3.0,multifunction=on"), &format!("{EDU},addr=3.1")])),
            check: check_multifunction,
        },
        Scenario {
            name: "discovery-root-ports",
            setup: |_| {
                Ok(config(&[
                    "pcie-root-port,id=rp1,chassis=1,addr=2.0",
                    "pcie-root-port,id=rp2,chassis=2,addr=3.0",
                    "pcie-root-port,id=rp3,chassis=3,addr=4.0",
                    &format!("{EDU},bus=rp1"),
                    &format!("{EDU},bus=rp2"),
                    &format!("{EDU},bus=rp3"),
                ]))
            },
            check: check_root_ports,
        },
        Scenario {
            name: "discovery-root-port-no-acs",
            setup: |_| Ok(config(&["ioh3420,id=rp1,chassis=1,addr=2.0", &format!("{EDU},bus=rp1")])),
            check: check_root_port_no_acs,
        },
    ]
}

/// The default machine plus `-device` arguments, with QEMU tracing config
/// writes next to its SMMU trace.
fn config(devices: &[&str]) -> QemuConfig {
    let mut extra: Vec<String> = vec!["-trace".into(), "pci_cfg_write".into()];
    for d in devices {
        extra.push("-device".into());
        extra.push((*d).to_string());
    }
    QemuConfig { extra, ..QemuConfig::default() }
}

/// One line of the group table:
/// `group N: SMMU name, StreamIDs 0x.. 0x.., devices BDF VID:DID, ...; reasons: ...`.
#[derive(Debug)]
struct GroupLine {
    sids: Vec<u32>,
    /// BDFs (or DT paths) of the devices.
    devices: Vec<String>,
    reasons: String,
}

fn groups(o: &Outcome) -> Vec<GroupLine> {
    o.log
        .iter()
        .filter_map(|l| {
            let m = l.message.trim_start();
            if !m.starts_with("group ") {
                return None;
            }
            let sids = m.split("StreamIDs ").nth(1)?.split(", devices").next()?;
            let devices = m.split(", devices ").nth(1)?.split("; reasons: ").next()?;
            let reasons = m.split("; reasons: ").nth(1)?;
            Some(GroupLine {
                sids: sids.split_whitespace().filter_map(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()).collect(),
                devices: devices.split(", ").filter_map(|d| d.split_whitespace().next()).map(String::from).collect(),
                reasons: reasons.to_string(),
            })
        })
        .collect()
}

/// The group holding `bdf`; records a failure when there is none.
fn group_of<'g>(c: &mut Checks, g: &'g [GroupLine], bdf: &str) -> Option<&'g GroupLine> {
    let hit = g.iter().find(|x| x.devices.iter().any(|d| d == bdf));
    c.that(hit.is_some(), format!("no isolation group holds {bdf}"));
    hit
}

/// `bdf` is in a group of exactly `devices` with exactly `sids`, and the
/// reasons mention `reason`.
fn expect_group(c: &mut Checks, g: &[GroupLine], bdf: &str, devices: &[&str], sids: &[u32], reason: &str) {
    let Some(x) = group_of(c, g, bdf) else { return };
    let mut have: Vec<&str> = x.devices.iter().map(String::as_str).collect();
    have.sort_unstable();
    let mut want = devices.to_vec();
    want.sort_unstable();
    c.that(have == want, format!("group of {bdf} holds {have:?}, expected {want:?}"));
    c.that(x.sids == sids, format!("group of {bdf} has StreamIDs {:x?}, expected {sids:x?}", x.sids));
    c.that(x.reasons.contains(reason), format!("group of {bdf}: reasons {:?}, expected {reason:?}", x.reasons));
}

/// What every discovery scenario needs: a clean boot, a table, QEMU's word
/// that no DMA bypassed the SMMU, and bus mastering left off.
fn common(o: &Outcome, c: &mut Checks) -> Vec<GroupLine> {
    c.exit(o, exit::SUCCESS);
    c.clean_log(o);
    let m = c.machine(o);
    c.that(!m.hosts.is_empty(), "the DT describes no PCI host bridge");
    for h in &m.hosts {
        c.log(o, &format!("PCI host {}: ECAM [{:#x}..", h.path, h.ecam));
    }
    c.log(o, "isolation groups: ");
    c.log(o, "not isolatable: /fw-cfg@9020000: no iommus property");
    c.no_bypass(o);
    check_command_writes(o, c);
    let g = groups(o);
    c.that(!g.is_empty(), "the log has no group table");
    g
}

/// From QEMU's `pci_cfg_write` trace (`pci_cfg_write edu 01:00.0 @0x4 <- 0x0`):
/// the last Command write to each function has Bus Master Enable clear,
/// and Memory Space Enable clear unless the function is a bridge.
fn check_command_writes(o: &Outcome, c: &mut Checks) {
    let mut last: Vec<(String, String, u32)> = Vec::new();
    for line in &o.trace.other {
        let Some(rest) = line.split("pci_cfg_write ").nth(1) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let [dev, bdf, off, "<-", val] = f.as_slice() else { continue };
        if *off != "@0x4" {
            continue;
        }
        let Ok(v) = u32::from_str_radix(val.trim_start_matches("0x"), 16) else { continue };
        last.retain(|(_, b, _)| b != bdf);
        last.push((dev.to_string(), bdf.to_string(), v));
    }
    c.that(!last.is_empty(), "QEMU's trace shows no Command register write (is -trace pci_cfg_write on?)");
    for (dev, bdf, v) in &last {
        c.that(v & 0x4 == 0, format!("{dev} {bdf}: last Command write {v:#x} leaves bus mastering on"));
        // ioh3420 is Intel's root port model (no ACS).
        let bridge = dev.contains("port") || dev.contains("bridge") || dev == "ioh3420";
        c.that(bridge || v & 0x2 == 0, format!("{dev} {bdf}: last Command write {v:#x} leaves memory decode on"));
    }
}

fn check_root_bus(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.log(o, &format!("pci 00:02.0 {EDU_ID} class 00ff00 PCI device"));
    c.log(o, "BAR0 [0x10000000..0x10100000) 32-bit");
    expect_group(c, &g, "00:02.0", &["00:02.0"], &[0x10], "alone");
    expect_group(c, &g, "00:00.0", &["00:00.0"], &[0x0], "alone");
}

fn check_root_port(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.log(o, "pci 00:02.0 1b36:000c class 060400 root port");
    c.log(o, "buses 01..=01");
    c.log(o, "ACS capability SV|TB|RR|CR|UF");
    c.log(o, &format!("pci 01:00.0 {EDU_ID}"));
    expect_group(c, &g, "01:00.0", &["01:00.0"], &[0x100], "alone");
    expect_group(c, &g, "00:02.0", &["00:02.0"], &[0x10], "alone");
}

fn check_pcie_pci_bridge(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.log(o, "pci 01:00.0 1b36:000e class 060400 PCIe-to-PCI bridge");
    // The alias is the bridge's secondary bus with devfn 0: 02:00.0 = 0x200.
    expect_group(c, &g, "02:01.0", &["01:00.0", "02:01.0", "02:02.0"], &[0x100, 0x200, 0x208, 0x210], "dma-alias");
    expect_group(c, &g, "00:02.0", &["00:02.0"], &[0x10], "alone");
}

fn check_pci_bridge(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.log(o, "pci 00:02.0 1b36:0001 class 060400 PCI-PCI bridge");
    // A conventional bridge: the alias is the bridge's own requester ID.
    expect_group(c, &g, "01:01.0", &["00:02.0", "01:01.0"], &[0x10, 0x108], "dma-alias");
}

fn check_multifunction(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.log(o, &format!("pci 00:03.0 {EDU_ID} class 00ff00 PCI device, multifunction"));
    expect_group(c, &g, "00:03.0", &["00:03.0", "00:03.1"], &[0x18, 0x19], "multifunction");
}

fn check_root_ports(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    for (bus, port, port_rid) in [(1u32, "00:02.0", 0x10), (2, "00:03.0", 0x18), (3, "00:04.0", 0x20)] {
        let edu = format!("{bus:02x}:00.0");
        c.log(o, &format!("pci {edu} {EDU_ID}"));
        expect_group(c, &g, &edu, &[&edu], &[bus << 8], "alone");
        expect_group(c, &g, port, &[port], &[port_rid], "alone");
    }
    c.that(g.len() == 7, format!("{} groups, expected 7 (host bridge, 3 ports, 3 edu)", g.len()));
}

fn check_root_port_no_acs(o: &Outcome, c: &mut Checks) {
    let g = common(o, c);
    c.no_log(o, "ACS capability");
    // Peer-to-peer below a port without ACS: the port and its device are one group.
    expect_group(c, &g, "01:00.0", &["00:02.0", "01:00.0"], &[0x10, 0x100], "no-acs");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogLine;

    #[test]
    fn parses_group_lines() {
        let line = "  group 3: SMMU smmuv3@9050000, StreamIDs 0x100 0x200, devices 01:00.0 1b36:000e, 02:01.0 1234:11e8, /dma@1; reasons: dma-alias";
        let o = Outcome { log: vec![LogLine { micros: Some(1), level: "INFO".into(), message: line.into() }], ..Outcome::default() };
        let g = groups(&o);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].sids, [0x100, 0x200]);
        assert_eq!(g[0].devices, ["01:00.0", "02:01.0", "/dma@1"]);
        assert_eq!(g[0].reasons, "dma-alias");
    }
}
