//! Device-tree access: a validated blob and the facts the kernel reads from it.
//!
//! The blob comes from outside (a bootloader, a user's overlay), so nothing
//! here trusts it: [`DeviceTree::parse`] checks the whole structure block
//! (tokens, lengths, string offsets, nesting) before anything walks it, cell
//! values are decoded with the *parent's* `#address-cells`/`#size-cells`, and
//! every malformed property becomes a [`DtError`] naming the node and the
//! property. No function here panics on input.

use crate::addr::{PhysAddr, PhysRange};
use arrayvec::{ArrayString, ArrayVec};
use core::fmt::{self, Write};
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

/// Largest DTB the kernel accepts (QEMU's is 1 MiB).
pub const MAX_DTB_SIZE: u32 = 8 << 20;
/// FDT header magic.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Deepest node nesting the walkers follow.
const MAX_DEPTH: usize = 16;
/// Which UART, and how its registers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011.
    Pl011,
    /// 16550-compatible: registers `1 << shift` bytes apart, accessed
    /// `width` bytes wide (1 or 4).
    Ns16550 {
        /// The DT's `reg-shift` (default 0).
        shift: u8,
        /// The DT's `reg-io-width` (default 1).
        width: u8,
    },
}

/// A console UART: where and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Its register block.
    pub base: PhysAddr,
    /// Its register interface.
    pub kind: UartKind,
}

impl Uart {
    /// A PL011 at `base`.
    pub const fn pl011(base: PhysAddr) -> Uart {
        Uart { base, kind: UartKind::Pl011 }
    }
}

/// 16550-compatible UARTs the console drives (Linux's of_serial names).
const NS16550_COMPATIBLES: [&str; 4] = ["ns16550a", "ns16550", "ns16450", "snps,dw-apb-uart"];
/// Most SMMUs the kernel handles.
pub const MAX_SMMUS: usize = 8;
/// Most CPUs the kernel handles.
pub const MAX_CPUS: usize = 64;
/// Most MMIO regions collected for the identity map.
pub const MAX_MMIO: usize = 128;

/// A short copy of a node name or message, for errors that outlive the blob.
pub type Text = ArrayString<64>;

fn text(s: &str) -> Text {
    let mut t = Text::new();
    for c in s.chars() {
        if t.try_push(c).is_err() {
            break;
        }
    }
    t
}

/// What is wrong with a device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// No FDT header (bad magic) at the address the loader gave.
    NoHeader {
        /// Where the header was looked for.
        at: PhysAddr,
        /// The first word found there.
        found: u32,
    },
    /// The header's `totalsize` is implausible.
    BadSize {
        /// `totalsize` from the header.
        size: u32,
    },
    /// The structure does not parse; the text says where and why.
    Malformed(Text),
    /// A property is missing, has the wrong length, or a bad value.
    BadProperty {
        /// The node's name (with unit address).
        node: Text,
        /// The property.
        prop: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A required node is absent.
    MissingNode(&'static str),
    /// More entries than the kernel's fixed tables hold.
    TooMany(&'static str),
}

// One text for the log and the host tools (the offline checker prints what
// the kernel would): errors are rare, so the log formats it on the target.
impl defmt::Format for DtError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NoHeader { at, found } => write!(f, "no device tree at {at}: magic is {found:#010x}, expected 0xd00dfeed"),
            DtError::BadSize { size } => write!(f, "device tree header says totalsize {size} bytes (allowed 40..={MAX_DTB_SIZE})"),
            DtError::Malformed(t) => write!(f, "malformed device tree (structure check failed: {})", t.as_str()),
            DtError::BadProperty { node, prop, why } => write!(f, "node {}: property {prop}: {why}", node.as_str()),
            DtError::MissingNode(n) => write!(f, "device tree has no {n} node"),
            DtError::TooMany(what) => write!(f, "device tree has too many {what}"),
        }
    }
}

/// Reads a big-endian number of `cells` 32-bit cells (0..=2).
fn be_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    if cells > 2 || bytes.len() < cells * 4 {
        return None;
    }
    let mut v = 0u64;
    for c in bytes[..cells * 4].chunks_exact(4) {
        v = (v << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    Some(v)
}

/// A node together with its parent's cell sizes, as a walk sees it.
#[derive(Clone, Copy)]
pub struct DtNode<'a> {
    node: FdtNode<'a>,
    /// Parent's `#address-cells`.
    pub addr_cells: u32,
    /// Parent's `#size-cells`.
    pub size_cells: u32,
    /// Nesting depth (root = 0).
    pub depth: usize,
}

impl<'a> DtNode<'a> {
    /// Node name with unit address (`smmuv3@9050000`).
    pub fn name(&self) -> &'a str {
        self.node.name()
    }
    /// Raw property bytes.
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.node.property(name).and_then(|p| p.value_as::<&'a [u8]>().ok())
    }
    /// Whether the property exists (boolean properties).
    pub fn has(&self, name: &str) -> bool {
        self.node.property(name).is_some()
    }
    /// A string property (first string of a list).
    pub fn str_prop(&self, name: &'static str) -> Result<Option<&'a str>, DtError> {
        let Some(v) = self.prop(name) else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).ok_or_else(|| self.bad(name, "not a NUL-terminated string"))?;
        core::str::from_utf8(&v[..end]).map(Some).map_err(|_| self.bad(name, "not UTF-8"))
    }
    /// Iterates the strings of a string-list property.
    pub fn strings(&self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let v = self.prop(name).unwrap_or(&[]);
        v.split(|&b| b == 0).filter(|s| !s.is_empty()).filter_map(|s| core::str::from_utf8(s).ok())
    }
    /// Whether `compatible` lists `c`.
    pub fn is_compatible(&self, c: &str) -> bool {
        self.strings("compatible").any(|s| s == c)
    }
    /// `status` is absent, "okay" or "ok".
    pub fn is_enabled(&self) -> bool {
        match self.prop("status") {
            None => true,
            Some(v) => matches!(v, b"okay\0" | b"ok\0" | b"okay" | b"ok"),
        }
    }
    /// A one-cell property.
    pub fn u32_prop(&self, name: &'static str) -> Result<Option<u32>, DtError> {
        match self.prop(name) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))),
            Some(_) => Err(self.bad(name, "expected exactly one cell")),
        }
    }
    /// This node's own `#address-cells` (for its children), default 2.
    pub fn own_addr_cells(&self) -> Result<u32, DtError> {
        let v = self.u32_prop("#address-cells")?.unwrap_or(2);
        if v > 3 {
            return Err(self.bad("#address-cells", "more than 3 cells"));
        }
        Ok(v)
    }
    /// This node's own `#size-cells` (for its children), default 1.
    pub fn own_size_cells(&self) -> Result<u32, DtError> {
        let v = self.u32_prop("#size-cells")?.unwrap_or(1);
        if v > 2 {
            return Err(self.bad("#size-cells", "more than 2 cells"));
        }
        Ok(v)
    }
    /// The `reg` entries decoded with the parent's cells, as CPU physical
    /// ranges. Only meaningful for nodes whose parent bus maps 1:1 to the
    /// CPU's address space (root children and simple buses with empty `ranges`).
    pub fn reg(&self) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        let mut out = ArrayVec::new();
        let Some(v) = self.prop("reg") else { return Ok(out) };
        let (ac, sc) = (self.addr_cells as usize, self.size_cells as usize);
        if ac > 2 || sc > 2 || ac == 0 {
            return Err(self.bad("reg", "parent's #address-cells/#size-cells are not 1 or 2"));
        }
        let entry = (ac + sc) * 4;
        if v.is_empty() || v.len() % entry != 0 {
            return Err(self.bad("reg", "length is not a multiple of the parent's (#address-cells + #size-cells)"));
        }
        for e in v.chunks_exact(entry) {
            let base = be_cells(e, ac).ok_or_else(|| self.bad("reg", "bad address cells"))?;
            let size = be_cells(&e[ac * 4..], sc).ok_or_else(|| self.bad("reg", "bad size cells"))?;
            let r = PhysRange::new(base, size).ok_or_else(|| self.bad("reg", "base + size overflows"))?;
            out.try_push(r).map_err(|_| self.bad("reg", "more than 8 entries"))?;
        }
        Ok(out)
    }
    /// The node's `phandle`, if any.
    pub fn phandle(&self) -> Result<Option<u32>, DtError> {
        self.u32_prop("phandle")
    }
    /// An error about property `prop` of this node.
    pub fn bad(&self, prop: &'static str, why: &'static str) -> DtError {
        DtError::BadProperty { node: text(self.name()), prop, why }
    }
}

/// A GIC interrupt decoded from a three-cell specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// GIC INTID (SPI n → 32 + n, PPI n → 16 + n).
    pub intid: u32,
    /// Edge-triggered (else level).
    pub edge: bool,
}

impl defmt::Format for Irq {
    fn format(&self, f: defmt::Formatter) {
        let (kind, n) = if self.intid >= 32 { ("SPI", self.intid - 32) } else { ("PPI", self.intid.saturating_sub(16)) };
        defmt::write!(f, "{=str} {=u32} (INTID {=u32}, {=str})", kind, n, self.intid, if self.edge { "edge" } else { "level" })
    }
}

/// An `arm,smmu-v3` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuNode {
    /// Node name.
    pub name: Text,
    /// Register window (page 0 and page 1).
    pub regs: PhysRange,
    /// Its phandle, which `iommus`/`iommu-map` refer to.
    pub phandle: Option<u32>,
    /// Interrupt for the event queue.
    pub eventq: Option<Irq>,
    /// Interrupt for the PRI queue.
    pub priq: Option<Irq>,
    /// Interrupt for CMD_SYNC completion.
    pub cmdq_sync: Option<Irq>,
    /// Interrupt for global errors.
    pub gerror: Option<Irq>,
    /// Wired `combined` interrupt, when the SMMU has only one.
    pub combined: Option<Irq>,
    /// `dma-coherent`: the SMMU's table walks snoop CPU caches.
    pub coherent: bool,
    /// Has an `msi-parent`.
    pub msi: bool,
}

/// A CPU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuNode {
    /// MPIDR affinity from `reg`.
    pub mpidr: u64,
    /// `enable-method` is "psci".
    pub psci: bool,
}

/// How PSCI is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc` (firmware at EL3).
    Smc,
    /// `hvc` (firmware at EL2).
    Hvc,
}

/// A validated flattened device tree.
#[derive(Clone, Copy)]
pub struct DeviceTree<'a> {
    fdt: Fdt<'a>,
    bytes: &'a [u8],
}

impl<'a> DeviceTree<'a> {
    /// Validates `bytes` as a whole FDT (header, memory reservations,
    /// every token of the structure block and every name).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DtError> {
        if bytes.len() >= 4 {
            let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if magic != FDT_MAGIC {
                return Err(DtError::NoHeader { at: PhysAddr(bytes.as_ptr() as u64), found: magic });
            }
        }
        let fdt = Fdt::new(bytes).map_err(|e| {
            let mut t = Text::new();
            let _ = write!(t, "{e}");
            DtError::Malformed(t)
        })?;
        Ok(DeviceTree { fdt, bytes })
    }

    /// The header's `totalsize` of a blob starting with `head` (≥ 8 bytes),
    /// checked for magic and plausibility: how many bytes to hand to [`parse`].
    ///
    /// [`parse`]: DeviceTree::parse
    pub fn blob_size(at: PhysAddr, head: &[u8; 8]) -> Result<usize, DtError> {
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if magic != FDT_MAGIC {
            return Err(DtError::NoHeader { at, found: magic });
        }
        let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if !(40..=MAX_DTB_SIZE).contains(&size) {
            return Err(DtError::BadSize { size });
        }
        Ok(size as usize)
    }

    /// Validates the blob the loader left at `at`.
    ///
    /// # Safety
    /// `at` must be readable for 8 bytes, and for the header's `totalsize`
    /// bytes when the magic matches; the memory must stay unchanged for `'static`.
    pub unsafe fn at(at: PhysAddr) -> Result<DeviceTree<'static>, DtError> {
        let ptr = at.0 as *const u8;
        let mut head = [0u8; 8];
        for (i, b) in head.iter_mut().enumerate() {
            // SAFETY: the caller guarantees 8 readable bytes; byte reads need
            // no alignment (the MMU may still be off).
            *b = unsafe { ptr.add(i).read_volatile() };
        }
        let size = Self::blob_size(at, &head)?;
        // SAFETY: the caller guarantees `totalsize` readable, unchanging bytes.
        let bytes = unsafe { core::slice::from_raw_parts(ptr, size) };
        DeviceTree::parse(bytes)
    }

    /// The blob.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The root node.
    pub fn root(&self) -> DtNode<'a> {
        DtNode { node: self.fdt.root(), addr_cells: 2, size_cells: 1, depth: 0 }
    }

    /// The node at an absolute `path`, with its parent's cells.
    pub fn find(&self, path: &str) -> Result<Option<DtNode<'a>>, DtError> {
        let mut cur = self.root();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let (ac, sc) = (cur.own_addr_cells()?, cur.own_size_cells()?);
            let next = cur.node.children().find(|c| {
                let n = c.name();
                n == comp || (!comp.contains('@') && n.split('@').next() == Some(comp))
            });
            match next {
                Some(n) => cur = DtNode { node: n, addr_cells: ac, size_cells: sc, depth: cur.depth + 1 },
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The children of `n`, each with `n`'s cells as its parent cells.
    pub fn children(&self, n: &DtNode<'a>) -> Result<impl Iterator<Item = DtNode<'a>> + 'a, DtError> {
        let (ac, sc, depth) = (n.own_addr_cells()?, n.own_size_cells()?, n.depth + 1);
        Ok(n.node.children().map(move |c| DtNode { node: c, addr_cells: ac, size_cells: sc, depth }))
    }

    /// Calls `f` for every node, depth first, parents before children.
    /// Stops at the first error `f` returns.
    pub fn walk<E: From<DtError>>(&self, f: &mut dyn FnMut(&DtNode<'a>) -> Result<(), E>) -> Result<(), E> {
        fn rec<'a, E: From<DtError>>(n: &DtNode<'a>, f: &mut dyn FnMut(&DtNode<'a>) -> Result<(), E>) -> Result<(), E> {
            f(n)?;
            if n.depth >= MAX_DEPTH {
                return Err(DtError::TooMany("levels of node nesting").into());
            }
            let (ac, sc) = (n.own_addr_cells()?, n.own_size_cells()?);
            for c in n.node.children() {
                rec(&DtNode { node: c, addr_cells: ac, size_cells: sc, depth: n.depth + 1 }, f)?;
            }
            Ok(())
        }
        rec(&self.root(), f)
    }

    /// The node whose `phandle` is `ph`.
    pub fn by_phandle(&self, ph: u32) -> Result<Option<DtNode<'a>>, DtError> {
        let mut found = None;
        self.walk::<DtError>(&mut |n| {
            if found.is_none() && n.phandle()? == Some(ph) {
                found = Some(*n);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// RAM banks: `reg` of every enabled `device_type = "memory"` node.
    pub fn memory(&self) -> Result<ArrayVec<PhysRange, 16>, DtError> {
        let mut out = ArrayVec::new();
        for n in self.root().node.children() {
            let n = DtNode { node: n, addr_cells: self.root().own_addr_cells()?, size_cells: self.root().own_size_cells()?, depth: 1 };
            if n.str_prop("device_type")? == Some("memory") && n.is_enabled() {
                for r in n.reg()? {
                    out.try_push(r).map_err(|_| DtError::TooMany("memory banks"))?;
                }
            }
        }
        if out.is_empty() {
            return Err(DtError::MissingNode("/memory"));
        }
        Ok(out)
    }

    /// `/memreserve/` entries of the header.
    pub fn memreserve(&self) -> impl Iterator<Item = PhysRange> + 'a {
        self.fdt.memory_reservations().filter_map(|m| PhysRange::new(m.address(), m.size()))
    }

    /// Static `/reserved-memory` regions (children with `reg`).
    pub fn reserved_memory(&self) -> Result<ArrayVec<PhysRange, 16>, DtError> {
        let mut out = ArrayVec::new();
        if let Some(rm) = self.find("/reserved-memory")? {
            let (ac, sc) = (rm.own_addr_cells()?, rm.own_size_cells()?);
            for c in rm.node.children() {
                let c = DtNode { node: c, addr_cells: ac, size_cells: sc, depth: rm.depth + 1 };
                if !c.is_enabled() {
                    continue;
                }
                for r in c.reg()? {
                    out.try_push(r).map_err(|_| DtError::TooMany("reserved-memory regions"))?;
                }
            }
        }
        Ok(out)
    }

    /// Enabled CPUs under `/cpus`.
    pub fn cpus(&self) -> Result<ArrayVec<CpuNode, MAX_CPUS>, DtError> {
        let cpus = self.find("/cpus")?.ok_or(DtError::MissingNode("/cpus"))?;
        let ac = cpus.own_addr_cells()? as usize;
        let mut out = ArrayVec::new();
        for c in cpus.node.children() {
            let c = DtNode { node: c, addr_cells: ac as u32, size_cells: 0, depth: 2 };
            if c.str_prop("device_type")? != Some("cpu") || !c.is_enabled() {
                continue;
            }
            let reg = c.prop("reg").ok_or_else(|| c.bad("reg", "missing (the CPU's MPIDR)"))?;
            if reg.len() != ac * 4 {
                return Err(c.bad("reg", "length is not the parent's #address-cells"));
            }
            let mpidr = be_cells(reg, ac).ok_or_else(|| c.bad("reg", "more than 2 cells"))?;
            let psci = c.str_prop("enable-method")? == Some("psci");
            out.try_push(CpuNode { mpidr, psci }).map_err(|_| DtError::TooMany("CPUs"))?;
        }
        if out.is_empty() {
            return Err(DtError::MissingNode("/cpus/cpu"));
        }
        Ok(out)
    }

    /// `/chosen/bootargs`, or "".
    pub fn bootargs(&self) -> Result<&'a str, DtError> {
        match self.find("/chosen")? {
            Some(c) => Ok(c.str_prop("bootargs")?.unwrap_or("")),
            None => Ok(""),
        }
    }

    /// The console UART `/chosen/stdout-path` names (a path or an alias,
    /// options after ':' ignored): a PL011 or a 16550 (with its `reg-shift`
    /// and `reg-io-width`); `None` for any other UART.
    pub fn stdout_uart(&self) -> Result<Option<Uart>, DtError> {
        let Some(chosen) = self.find("/chosen")? else { return Ok(None) };
        let Some(path) = chosen.str_prop("stdout-path")? else { return Ok(None) };
        let path = path.split(':').next().unwrap_or("");
        let path = if path.starts_with('/') {
            path
        } else {
            match self.find("/aliases")? {
                Some(a) => match a.str_prop_dyn(path)? {
                    Some(p) => p,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        };
        let Some(uart) = self.find(path)? else { return Ok(None) };
        let kind = if uart.is_compatible("arm,pl011") {
            UartKind::Pl011
        } else if NS16550_COMPATIBLES.iter().any(|c| uart.is_compatible(c)) {
            let shift = uart.u32_prop("reg-shift")?.unwrap_or(0);
            let width = uart.u32_prop("reg-io-width")?.unwrap_or(1);
            if shift > 4 {
                return Err(uart.bad("reg-shift", "more than 4"));
            }
            if width != 1 && !(width == 4 && shift >= 2) {
                return Err(uart.bad("reg-io-width", "only 1, or 4 with reg-shift of at least 2, is supported"));
            }
            UartKind::Ns16550 { shift: shift as u8, width: width as u8 }
        } else {
            return Ok(None);
        };
        Ok(uart.reg()?.first().map(|r| Uart { base: r.start, kind }))
    }

    /// The PSCI conduit from `/psci/method`.
    pub fn psci(&self) -> Result<Option<PsciConduit>, DtError> {
        let Some(p) = self.find("/psci")? else { return Ok(None) };
        match p.str_prop("method")? {
            Some("smc") => Ok(Some(PsciConduit::Smc)),
            Some("hvc") => Ok(Some(PsciConduit::Hvc)),
            Some(_) => Err(p.bad("method", "neither \"smc\" nor \"hvc\"")),
            None => Ok(None),
        }
    }

    /// Decodes the `index`-th interrupt of `n` against its GIC parent
    /// (three-cell specifiers: type, number, flags).
    fn irq(&self, n: &DtNode<'a>, index: usize) -> Result<Option<Irq>, DtError> {
        let Some(v) = n.prop("interrupts") else { return Ok(None) };
        if v.len() % 12 != 0 {
            return Err(n.bad("interrupts", "not a list of 3-cell GIC specifiers"));
        }
        let Some(spec) = v.chunks_exact(12).nth(index) else { return Ok(None) };
        let cell = |i: usize| u32::from_be_bytes([spec[i * 4], spec[i * 4 + 1], spec[i * 4 + 2], spec[i * 4 + 3]]);
        let intid = match cell(0) {
            0 => cell(1).checked_add(32).filter(|&i| i < 1020),
            1 => cell(1).checked_add(16).filter(|&i| i < 32),
            _ => None,
        }
        .ok_or_else(|| n.bad("interrupts", "not a GIC SPI or PPI"))?;
        let edge = cell(2) & 0x3 != 0;
        Ok(Some(Irq { intid, edge }))
    }

    /// Every enabled `arm,smmu-v3` node.
    pub fn smmus(&self) -> Result<ArrayVec<SmmuNode, MAX_SMMUS>, DtError> {
        let mut out = ArrayVec::new();
        self.walk::<DtError>(&mut |n| {
            if !n.is_compatible("arm,smmu-v3") || !n.is_enabled() {
                return Ok(());
            }
            let regs = *n.reg()?.first().ok_or_else(|| n.bad("reg", "missing"))?;
            if regs.size() < 0x20000 {
                return Err(n.bad("reg", "smaller than the 128 KiB of register pages 0 and 1"));
            }
            let mut s = SmmuNode {
                name: text(n.name()),
                regs,
                phandle: n.phandle()?,
                eventq: None,
                priq: None,
                cmdq_sync: None,
                gerror: None,
                combined: None,
                coherent: n.has("dma-coherent"),
                msi: n.has("msi-parent"),
            };
            for (i, name) in n.strings("interrupt-names").enumerate() {
                let irq = self.irq(n, i)?;
                match name {
                    "eventq" => s.eventq = irq,
                    "priq" => s.priq = irq,
                    "cmdq-sync" => s.cmdq_sync = irq,
                    "gerror" => s.gerror = irq,
                    "combined" => s.combined = irq,
                    _ => {}
                }
            }
            out.try_push(s).map_err(|_| DtError::TooMany("SMMUs"))
        })?;
        Ok(out)
    }

    /// MMIO regions the kernel may touch, for the identity map: `reg` of
    /// enabled device nodes directly under the root (not memory, CPUs or
    /// reserved memory), and the CPU side of PCI host bridges' `ranges`.
    pub fn mmio_regions(&self) -> Result<ArrayVec<PhysRange, MAX_MMIO>, DtError> {
        let mut out: ArrayVec<PhysRange, MAX_MMIO> = ArrayVec::new();
        let root = self.root();
        let (ac, sc) = (root.own_addr_cells()?, root.own_size_cells()?);
        for c in root.node.children() {
            let n = DtNode { node: c, addr_cells: ac, size_cells: sc, depth: 1 };
            let name = n.name();
            if !n.is_enabled()
                || n.str_prop("device_type")? == Some("memory")
                || matches!(name, "cpus" | "reserved-memory" | "chosen" | "aliases" | "psci" | "timer")
            {
                continue;
            }
            for r in n.reg()? {
                out.try_push(r).map_err(|_| DtError::TooMany("MMIO regions"))?;
            }
            if n.str_prop("device_type")? == Some("pci") {
                for r in self.pci_windows(&n)? {
                    out.try_push(r).map_err(|_| DtError::TooMany("MMIO regions"))?;
                }
            }
        }
        Ok(out)
    }

    /// The CPU-side ranges of a PCI host bridge's `ranges` (3 child cells,
    /// the parent's address cells, 2 size cells), memory spaces only.
    pub fn pci_windows(&self, host: &DtNode<'a>) -> Result<ArrayVec<PhysRange, 8>, DtError> {
        let mut out = ArrayVec::new();
        let Some(v) = host.prop("ranges") else { return Ok(out) };
        let pac = host.addr_cells as usize;
        let entry = (3 + pac + 2) * 4;
        if pac == 0 || pac > 2 || v.len() % entry != 0 {
            return Err(host.bad("ranges", "length is not a multiple of (3 + parent #address-cells + 2) cells"));
        }
        for e in v.chunks_exact(entry) {
            let space = (u32::from_be_bytes([e[0], e[1], e[2], e[3]]) >> 24) & 0x3;
            let cpu = be_cells(&e[12..], pac).ok_or_else(|| host.bad("ranges", "bad parent address"))?;
            let size = be_cells(&e[12 + pac * 4..], 2).ok_or_else(|| host.bad("ranges", "bad size"))?;
            if space < 2 {
                continue; // configuration space is in `reg`; I/O space is never used
            }
            let r = PhysRange::new(cpu, size).ok_or_else(|| host.bad("ranges", "window overflows"))?;
            out.try_push(r).map_err(|_| host.bad("ranges", "more than 8 windows"))?;
        }
        Ok(out)
    }
}

impl<'a> DtNode<'a> {
    fn str_prop_dyn(&self, name: &str) -> Result<Option<&'a str>, DtError> {
        let Some(v) = self.prop(name) else { return Ok(None) };
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        Ok(core::str::from_utf8(&v[..end]).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    use crate::testutil::dtb;

    const VIRT: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x1000;
/ {
    #address-cells = <2>; #size-cells = <2>;
    interrupt-parent = <&gic>;
    psci { compatible = "arm,psci-1.0"; method = "smc"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
        fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000>; no-map; }; };
    gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>; };
    smmu: smmuv3@9050000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9050000 0x0 0x20000>;
        interrupts = <0 0x4a 1 0 0x4b 1 0 0x4c 1 0 0x4d 1>;
        interrupt-names = "eventq", "priq", "cmdq-sync", "gerror"; dma-coherent; #iommu-cells = <1>; };
    smmu2: smmuv3@9070000 { compatible = "arm,smmu-v3"; reg = <0x0 0x9070000 0x0 0x20000>; status = "disabled"; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; };
    pcie@10000000 { compatible = "pci-host-ecam-generic"; device_type = "pci";
        #address-cells = <3>; #size-cells = <2>; reg = <0x40 0x10000000 0x0 0x10000000>;
        ranges = <0x1000000 0x0 0x0 0x0 0x3eff0000 0x0 0x10000
                  0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
                  0x3000000 0x80 0x0 0x80 0x0 0x80 0x0>; };
    chosen { stdout-path = "/pl011@9000000"; bootargs = "bulkhead.selftest=none"; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; reg = <1>; enable-method = "psci"; };
        cpu@2 { device_type = "cpu"; reg = <2>; status = "disabled"; }; };
};
"#;

    #[test]
    fn stdout_path_names_a_16550() {
        let uart = |props: &str| {
            let src = std::format!(
                r#"/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>;
                    aliases {{ serial0 = "/serial@fe660000"; }};
                    chosen {{ stdout-path = "serial0:1500000n8"; }};
                    serial@fe660000 {{ reg = <0x0 0xfe660000 0x0 0x100>; {props} }}; }};"#
            );
            DeviceTree::parse(&dtb(&src)).unwrap().stdout_uart().map_err(|e| std::format!("{e}"))
        };
        let base = PhysAddr(0xfe66_0000);
        assert_eq!(
            uart(r#"compatible = "rockchip,rk3568-uart", "snps,dw-apb-uart"; reg-shift = <2>; reg-io-width = <4>;"#),
            Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 2, width: 4 } }))
        );
        assert_eq!(uart(r#"compatible = "ns16550a";"#), Ok(Some(Uart { base, kind: UartKind::Ns16550 { shift: 0, width: 1 } })));
        assert_eq!(uart(r#"compatible = "arm,pl011", "arm,primecell";"#), Ok(Some(Uart::pl011(base))));
        assert_eq!(uart(r#"compatible = "vendor,other-uart";"#), Ok(None), "an unknown UART is not used");
        let e = uart(r#"compatible = "ns16550a"; reg-io-width = <4>;"#).unwrap_err();
        assert!(e.contains("serial@fe660000") && e.contains("reg-io-width"), "{e}");
    }

    #[test]
    fn reads_the_virt_facts() {
        let blob = dtb(VIRT);
        let dt = DeviceTree::parse(&blob).unwrap();
        assert_eq!(dt.memory().unwrap().as_slice(), &[PhysRange::new(0x4000_0000, 0x8000_0000).unwrap()]);
        assert_eq!(dt.memreserve().collect::<Vec<_>>(), [PhysRange::new(0x4800_0000, 0x1000).unwrap()]);
        assert_eq!(dt.reserved_memory().unwrap().as_slice(), &[PhysRange::new(0x5000_0000, 0x10_0000).unwrap()]);
        let cpus = dt.cpus().unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1], CpuNode { mpidr: 1, psci: true });
        assert_eq!(dt.stdout_uart().unwrap(), Some(Uart::pl011(PhysAddr(0x900_0000))));
        assert_eq!(dt.bootargs().unwrap(), "bulkhead.selftest=none");
        assert_eq!(dt.psci().unwrap(), Some(PsciConduit::Smc));
        let smmus = dt.smmus().unwrap();
        assert_eq!(smmus.len(), 1, "disabled SMMU skipped");
        let s = &smmus[0];
        assert_eq!(s.regs, PhysRange::new(0x905_0000, 0x2_0000).unwrap());
        assert_eq!(s.eventq, Some(Irq { intid: 32 + 0x4a, edge: true }));
        assert_eq!(s.gerror, Some(Irq { intid: 32 + 0x4d, edge: true }));
        assert!(s.coherent && !s.msi);
        let mmio = dt.mmio_regions().unwrap();
        assert!(mmio.contains(&PhysRange::new(0x40_1000_0000, 0x1000_0000).unwrap()), "ECAM from reg with parent cells");
        assert!(mmio.contains(&PhysRange::new(0x80_0000_0000, 0x80_0000_0000).unwrap()), "64-bit window");
        assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x3eff_0000)), "I/O space is not MMIO");
        assert!(!mmio.iter().any(|r| r.start == PhysAddr(0x4000_0000)), "memory is not MMIO");
    }

    #[test]
    fn bad_reg_names_node_and_property() {
        let blob = dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;
            memory@0 { device_type = \"memory\"; reg = <0x0 0x40000000 0x0>; }; cpus { }; };");
        let dt = DeviceTree::parse(&blob).unwrap();
        match dt.memory().unwrap_err() {
            DtError::BadProperty { node, prop, .. } => {
                assert_eq!(node.as_str(), "memory@0");
                assert_eq!(prop, "reg");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn header_checks() {
        let blob = dtb(VIRT);
        let head: [u8; 8] = blob[..8].try_into().unwrap();
        assert_eq!(DeviceTree::blob_size(PhysAddr(0), &head).unwrap(), blob.len());
        let mut bad = head;
        bad[0] = 0;
        assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &bad), Err(DtError::NoHeader { .. })));
        let mut huge = head;
        huge[4] = 0x7f;
        assert!(matches!(DeviceTree::blob_size(PhysAddr(0), &huge), Err(DtError::BadSize { .. })));
    }

    /// Every truncation and many byte corruptions of a real blob give a
    /// result or an error, never a panic.
    #[test]
    fn corrupted_blobs_never_panic() {
        let blob = dtb(VIRT);
        let check = |b: &[u8]| {
            if let Ok(dt) = DeviceTree::parse(b) {
                let _ = dt.memory();
                let _ = dt.cpus();
                let _ = dt.smmus();
                let _ = dt.mmio_regions();
                let _ = dt.stdout_uart();
                let _ = dt.reserved_memory();
                let _ = dt.memreserve().count();
                let _ = dt.bootargs();
            }
        };
        for len in 0..blob.len() {
            check(&blob[..len]);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut b = blob.clone();
            for _ in 0..1 + (seed % 4) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 32) as u8;
            }
            check(&b);
        }
    }
}
