//! A partition's devices as the hardware sees them: what its DTB says of
//! each, their MMIO, and the PCI command-register steps of an ownership
//! change (DESIGN.md I4: no device masters before its StreamIDs are
//! attached, none after they abort). Reads the discovery results only.

use crate::discover::Discovered;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use partitions::groups::Group;
use partitions::guest_dt::{GuestDevice, GuestPci};
use partitions::topology::DeviceRef;
use partitions::vm::vpci::VirtualHost;
use platform::pci;
use platform::PhysRange;

/// A device of a partition: what its DTB says, and its MMIO.
pub struct OwnedDevice {
    /// Its node in the partition's DTB.
    pub guest: GuestDevice,
    /// Its MMIO (BARs).
    pub mmio: Vec<PhysRange>,
}

/// A device the discovery results do not hold (they never change, so only
/// a plan that does not match them names one).
#[derive(Debug)]
pub struct Vanished;

/// The devices `list` names, with their MMIO. `name` is the partition's,
/// for the warning about platform devices.
pub fn describe(name: &str, list: &[DeviceRef], d: &Discovered) -> Result<Vec<OwnedDevice>, Vanished> {
    let mut out = Vec::new();
    for &dev in list {
        match dev {
            DeviceRef::Pci { host, function } => {
                let f = d.pci.get(host).and_then(|t| t.functions.get(function)).ok_or(Vanished)?;
                let mmio: Vec<PhysRange> = f.bars.iter().map(|b| b.range()).collect();
                let at = mmio.first().map(|r| r.start.0).unwrap_or(u64::from(f.bdf.rid()));
                out.push(OwnedDevice {
                    guest: GuestDevice {
                        name: format!("pci{:04x},{:04x}@{:x}", f.vendor, f.device, at),
                        compatible: vec![format!("pci{:04x},{:04x}", f.vendor, f.device)],
                        reg: mmio.iter().map(|r| (r.start.0, r.size())).collect(),
                        pci: Some((f.bdf.bus, f.bdf.dev, f.bdf.func)),
                        // Its INTx line is the PCI host's (interrupt-map), not the node's.
                        irqs: Vec::new(),
                    },
                    mmio,
                });
            }
            DeviceRef::Platform(i) => {
                let path = d.topology.platform.get(i).map(|x| x.path.as_str()).unwrap_or("?");
                if !name.is_empty() {
                    defmt::warn!("partition {=str}: platform device {=str}: its MMIO is not passed through yet", name, path);
                }
            }
        }
    }
    Ok(out)
}

/// The PCI functions of `list` by host bridge, as (host, function
/// indices): one virtual PCI host per physical one, in the order `list`
/// first names them, its functions in list order.
fn by_host(list: &[DeviceRef]) -> Vec<(usize, Vec<usize>)> {
    let mut hosts: Vec<(usize, Vec<usize>)> = Vec::new();
    for d in list {
        let DeviceRef::Pci { host, function } = *d else { continue };
        match hosts.iter_mut().find(|(h, _)| *h == host) {
            Some((_, fs)) => fs.push(function),
            None => hosts.push((host, vec![function])),
        }
    }
    hosts
}

/// The virtual PCI hosts of a partition owning `list`
/// (`partitions::vm::vpci`), one per physical host bridge its functions
/// sit behind (at most `ECAM_HOSTS`; the rest are not shown, logged), read
/// from the functions as the kernel left them, with their DT nodes: the
/// physical host's windows and coherency, each shown function's INTx line.
/// Empty: it owns no PCI function.
pub fn virtual_pci(name: &str, list: &[DeviceRef], d: &Discovered) -> Vec<(usize, VirtualHost, GuestPci)> {
    let mut hosts = by_host(list);
    let max = partitions::vm::board::ECAM_HOSTS;
    if hosts.len() > max {
        let unshown: usize = hosts[max..].iter().map(|(_, fs)| fs.len()).sum();
        defmt::warn!("partition {=str}: {=usize} PCI functions behind more than {=usize} host bridges are not shown to it", name, unshown, max);
        hosts.truncate(max);
    }
    hosts.into_iter().filter_map(|(host, shown)| virtual_host(host, &shown, d)).collect()
}

/// The virtual host showing functions `shown` of physical host `host`.
fn virtual_host(host: usize, shown: &[usize], d: &Discovered) -> Option<(usize, VirtualHost, GuestPci)> {
    let t = d.pci.get(host)?;
    let topo = d.topology.hosts.get(host)?;
    let bridge = d.machine.devices.pci_hosts.get(host)?;
    let cs = d.config_space(host)?;
    let functions: Vec<&pci::Function> = shown.iter().filter_map(|&i| t.functions.get(i)).collect();
    let vh = VirtualHost::new(&cs, functions.iter().copied());
    let intx = shown
        .iter()
        .enumerate()
        .filter_map(|(n, &i)| {
            let pin = t.functions.get(i)?.interrupt_pin;
            let irq = topo.bus.intx(i, &topo.bridge.intx)?;
            Some((n as u8, pin, irq))
        })
        .collect();
    Some((host, vh, GuestPci { windows: bridge.windows.clone(), coherent: bridge.coherent, intx }))
}

/// Applies a partition's Command write to physical function `bdf` of host
/// `host`: Memory Space, Bus Master and INTx Disable as the guest set them
/// (the caller holds that the partition owns the function now).
pub fn apply_command(host: usize, bdf: pci::Bdf, memory: bool, bus_master: bool, intx_disable: bool, d: &Discovered) -> Result<(), ConfigFailed> {
    use pci::regs::{CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY};
    let mut cs = d.config_space(host).ok_or(ConfigFailed)?;
    let value = if memory { CMD_MEMORY } else { 0 } | if bus_master { CMD_BUS_MASTER } else { 0 } | if intx_disable { CMD_INTX_DISABLE } else { 0 };
    pci::set_command(&mut cs, bdf, CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE, value).map_err(|_| ConfigFailed)
}

/// A Function Level Reset a partition asked for on its own function `bdf`
/// (host `host`), with the specification's waits; it comes back with
/// decode and mastering off, as the guest expects after an FLR.
pub fn guest_reset(host: usize, bdf: pci::Bdf, d: &Discovered) -> Result<(), ConfigFailed> {
    let mut cs = d.config_space(host).ok_or(ConfigFailed)?;
    pci::function_level_reset(&mut cs, bdf, &mut platform::time::Delay).map_err(|_| ConfigFailed)
}

/// The MMIO of the devices `list` names.
pub fn mmio(list: &[DeviceRef], d: &Discovered) -> Result<Vec<PhysRange>, Vanished> {
    Ok(describe("", list, d)?.into_iter().flat_map(|o| o.mmio).collect())
}

/// The endpoints of `g`: what moves with it (bridges stay with the kernel).
pub fn endpoints(g: &Group, d: &Discovered) -> Vec<DeviceRef> {
    g.devices.iter().copied().filter(|&x| d.topology.pci(x).is_none_or(|f| f.secondary_bus().is_none())).collect()
}

/// A PCI configuration access that failed (the host bridge or the function
/// is not there, or the function did not answer).
#[derive(Debug)]
pub struct ConfigFailed;

/// Runs `f` on the configuration space and the function of every PCI
/// device of `devices`, with the function's host topology.
fn each_pci(
    devices: &[DeviceRef],
    d: &Discovered,
    mut f: impl FnMut(&mut pci::ecam::EcamConfigSpace, &pci::HostTopology, &pci::Function) -> Result<(), ConfigFailed>,
) -> Result<(), ConfigFailed> {
    for &dev in devices {
        let DeviceRef::Pci { host, function } = dev else { continue };
        let t = d.pci.get(host).ok_or(ConfigFailed)?;
        let func = t.functions.get(function).ok_or(ConfigFailed)?;
        let mut cs = d.config_space(host).ok_or(ConfigFailed)?;
        f(&mut cs, t, func)?;
    }
    Ok(())
}

/// Memory decode and bus mastering on for `devices` (and bus mastering on
/// the bridges above them, so they forward).
pub fn start(devices: &[DeviceRef], d: &Discovered) -> Result<(), ConfigFailed> {
    each_pci(devices, d, |cs, t, f| {
        let mut up = f.parent;
        while let Some(b) = up {
            let bridge = t.functions.get(b).ok_or(ConfigFailed)?;
            pci::set_bus_master(cs, bridge.bdf, true).map_err(|_| ConfigFailed)?;
            up = bridge.parent;
        }
        pci::set_memory_decode(cs, f.bdf, true).map_err(|_| ConfigFailed)?;
        pci::set_bus_master(cs, f.bdf, true).map_err(|_| ConfigFailed)
    })
}

/// Bus mastering and memory decode off for `devices`.
pub fn stop(devices: &[DeviceRef], d: &Discovered) -> Result<(), ConfigFailed> {
    each_pci(devices, d, |cs, _, f| {
        pci::set_bus_master(cs, f.bdf, false).map_err(|_| ConfigFailed)?;
        pci::set_memory_decode(cs, f.bdf, false).map_err(|_| ConfigFailed)
    })
}

/// A function-level reset of each of `devices` that has one (its state
/// must not reach the next owner).
pub fn reset(devices: &[DeviceRef], d: &Discovered) -> Result<(), ConfigFailed> {
    each_pci(devices, d, |cs, _, f| {
        if !f.flr {
            return Ok(());
        }
        pci::function_level_reset(cs, f.bdf, &mut platform::time::Delay).map_err(|_| ConfigFailed)
    })
}
