//! A partition payload for tests: runs at EL1 under bulkhead, reads the DTB
//! the kernel generated for it, reports over the console hypercall and
//! exits with a status. Its bootargs say what to do:
//!
//! - `hello`: report name, memory and bootargs, exit 0;
//! - `touch=ADDR`: read ADDR (outside its memory: the kernel must stop this
//!   partition with a stage-2 fault report, and nothing else);
//! - `exit=N`: exit with status N;
//! - `dma-own`: round-trip 64 bytes through its own `edu` inside its own
//!   memory and verify them;
//! - `attack=NAME:ADDR`: make its `edu` write to and read from ADDR (not its
//!   memory: the SMMU must abort both) and report what came back;
//! - `canary=ADDR`: write a canary in its own memory; `check=ADDR` (after
//!   `wait=MS`) verifies nothing changed it;
//! - `watch=ADDR:MS`: keep checking that canary for MS milliseconds;
//! - `wait=MS`: sleep;
//! - `sysreg`: read PMCR_EL0 (trapped by MDCR_EL2.TPM: the kernel emulates
//!   the PMU as RAZ/WI) and report the value;
//! - `badcalls`: make hypercalls with bad arguments and report the codes;
//! - `move=GROUP:A:B:N` (a manager): move GROUP from partition A to B and
//!   back, N times, and report the statuses;
//! - `try-move=GROUP:A:B`: one release and assign attempt, statuses reported;
//! - `release=GROUP:OWNER`, `assign=GROUP:P`: one release or assignment, status reported;
//! - `info=GROUP`: GROUP_INFO, reported;
//! - `fault-storm=ADDR:N`: up to N DMAs of its device to ADDR (outside its
//!   memory), stopping when the device is taken away;
//! - `fault-every=ADDR:MS:N`: N DMAs of its device to ADDR, one every MS
//!   milliseconds, each announced first (`fault N: DMA to ADDR`), for the
//!   kernel's fault-report latency;
//! - `storm=MS`: for MS milliseconds, as fast as it can, what a hostile
//!   partition makes the kernel do without being stopped: refused
//!   hypercalls with random arguments, maximal console writes, and reads
//!   and writes of its device's window once it lost the device; then the
//!   counts;
//! - `dma-loop=MS`: for MS milliseconds, whenever it owns a device, round-trip
//!   DMA through its own memory and verify it;
//! - `ticks`: report the counter value at its first instruction (the boot
//!   benchmark's "partition running" milestone). `move=` also reports the
//!   counter ticks each release and assignment hypercall took;
//! - `dma-at=BAR`: `dma-own` through an edu given after it started, at BAR.
//!
//! Any other word, or one whose numbers do not read, is refused before
//! anything is done: the payload says which and exits with status
//! [`bootargs::REFUSED`].
#![no_std]
#![no_main]

mod bootargs;
mod edu;
mod hvc;

use bootargs::Word;
use dtoolkit::fdt::Fdt;
use dtoolkit::{Node, Property};

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mrs     x21, cntpct_el0         // the counter at entry, for `ticks`
    mov     x19, x0                 // DTB from the kernel
    adr     x20, _start             // load bias: linked at 0
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
0:  cmp     x1, x2
    b.hs    1f
    ldp     x3, x4, [x1]            // r_offset, r_info
    ldr     x5, [x1, #16]           // r_addend
    add     x1, x1, #24
    cmp     w4, #1027               // R_AARCH64_RELATIVE
    b.ne    0b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       0b
1:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:  adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    mov     x0, x19
    mov     x1, x21
    bl      payload_main
4:  b       4b
"#
);

/// A fixed buffer for formatting console lines without an allocator.
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { buf: [0; 200], len: 0 }
    }
    fn push(&mut self, s: &str) -> &mut Line {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    fn hex(&mut self, v: u64) -> &mut Line {
        self.push("0x");
        let mut started = false;
        for i in (0..16).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            if d != 0 || started || i == 0 {
                started = true;
                let c = [if d < 10 { b'0' + d } else { b'a' + d - 10 }];
                self.push(core::str::from_utf8(&c).unwrap_or("?"));
            }
        }
        self
    }
    fn send(&mut self) {
        hvc::console(&self.buf[..self.len]);
        self.len = 0;
    }
}

fn cells(v: &[u8]) -> impl Iterator<Item = u64> + '_ {
    v.chunks_exact(8).map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
}

/// The physical counter (EL1 may read it: CNTHCTL_EL2.EL1PCTEN).
fn counter() -> (u64, u64) {
    let (t, f): (u64, u64);
    // SAFETY: reading the counter and its frequency has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntpct_el0", "mrs {}, cntfrq_el0", out(reg) t, out(reg) f, options(nostack)) };
    (t, f.max(1))
}

/// Busy-waits `us` microseconds.
pub fn delay_us(us: u64) {
    let (start, f) = counter();
    let ticks = us * f / 1_000_000;
    while counter().0.wrapping_sub(start) < ticks {}
}

/// Counter ticks of repeated hypercalls: min, max and (of the first 256) the median.
struct Ticks {
    samples: [u64; 256],
    n: usize,
    min: u64,
    max: u64,
}

impl Ticks {
    fn new() -> Ticks {
        Ticks { samples: [0; 256], n: 0, min: u64::MAX, max: 0 }
    }
    fn add(&mut self, t: u64) {
        if let Some(s) = self.samples.get_mut(self.n) {
            *s = t;
        }
        self.n += 1;
        self.min = self.min.min(t);
        self.max = self.max.max(t);
    }
    fn median(&mut self) -> u64 {
        let k = self.n.min(self.samples.len());
        let s = &mut self.samples[..k];
        s.sort_unstable();
        s.get(k / 2).copied().unwrap_or(0)
    }
}

const CANARY: u64 = 0xc0ff_ee00_dead_beef;
const PATTERN: u8 = 0xa5;

#[unsafe(no_mangle)]
extern "C" fn payload_main(dtb: u64, entered: u64) -> ! {
    let mut l = Line::new();
    // SAFETY: the kernel passes the address of a DTB inside this partition's
    // memory; its header says how long it is.
    let fdt = unsafe {
        let head = core::slice::from_raw_parts(dtb as *const u8, 8);
        let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        Fdt::new(core::slice::from_raw_parts(dtb as *const u8, size.min(1 << 20)))
    };
    let Ok(fdt) = fdt else {
        l.push("payload: the DTB from the kernel does not parse").send();
        hvc::exit(1);
    };
    let root = fdt.root();
    let bootargs = root.child("chosen").and_then(|c| c.property("bootargs").and_then(|p| p.value_as::<&str>().ok())).unwrap_or("");
    let name = root.property("bulkhead,partition-name").and_then(|p| p.value_as::<&str>().ok()).unwrap_or("?");
    // Its own memory (the first region) and its first edu, from its DTB.
    let mem = root
        .children()
        .find(|c| c.name().starts_with("memory"))
        .and_then(|n| {
            n.property("reg").map(|r| {
                let mut it = cells(r.value());
                [it.next().unwrap_or(0), it.next().unwrap_or(0)]
            })
        })
        .unwrap_or([0, 0]);
    let edu = root.child("devices").and_then(|d| {
        d.children()
            .filter(|c| c.property("compatible").and_then(|p| p.value_as::<&str>().ok()) == Some("pci1234,11e8"))
            .find_map(|c| c.property("reg").and_then(|r| cells(r.value()).next()))
    });
    // Scratch space for DMA: 1 MiB into its own memory (clear of the image).
    let scratch = mem[0] + 0x10_0000;
    // Every word is read before any is acted on: a word it does not know
    // stops it with nothing done.
    if let Some(word) = bootargs::first_refused(bootargs) {
        l.push("payload: bootargs word \"").push(word).push("\" not understood: refusing to run").send();
        hvc::exit(bootargs::REFUSED);
    }
    for word in bootargs.split_ascii_whitespace().filter_map(bootargs::parse) {
        match word {
            Word::Ticks => {
                l.push("entered at counter ").hex(entered).send();
            }
            Word::Hello => {
                l.push("hello from ").push(name).push(" at EL1, dtb ").hex(dtb).send();
                for n in root.children().filter(|c| c.name().starts_with("memory")) {
                    if let Some(reg) = n.property("reg") {
                        let mut it = cells(reg.value());
                        while let (Some(base), Some(size)) = (it.next(), it.next()) {
                            l.push("memory ").hex(base).push(" size ").hex(size).send();
                        }
                    }
                }
                let (id, cpus) = hvc::whoami();
                l.push("whoami: partition ").hex(id).push(", cpus ").hex(cpus).send();
            }
            Word::Touch(a) => {
                l.push("touching ").hex(a).send();
                // SAFETY: deliberately reads an address this partition does not
                // own; the kernel is expected to stop the partition here.
                let v = unsafe { (a as *const u64).read_volatile() };
                l.push("read returned ").hex(v).push(" (isolation broken)").send();
                hvc::exit(2);
            }
            Word::Exit(n) => hvc::exit(n),
            Word::Sysreg => {
                l.push("reading PMCR_EL0").send();
                let v: u64;
                // SAFETY: a register read; the kernel traps and emulates it.
                unsafe { core::arch::asm!("mrs {}, pmcr_el0", out(reg) v, options(nostack)) };
                l.push("PMCR_EL0 read returned ").hex(v).send();
            }
            Word::Badcalls => {
                let r = hvc::raw(partitions::hypercall::CONSOLE_WRITE, 0x4020_0000, 16);
                l.push("console-write of kernel memory: ").hex(r).send();
                let r = hvc::raw(partitions::hypercall::CONSOLE_WRITE, mem[0], 100_000);
                l.push("console-write of 100000 bytes: ").hex(r).send();
                let r = hvc::raw(partitions::hypercall::CONSOLE_WRITE, mem[0] + mem[1] - 8, 16);
                l.push("console-write across my end: ").hex(r).send();
                let r = hvc::raw(0x77, 0, 0);
                l.push("unknown call 0x77: ").hex(r).send();
            }
            Word::Move { group: g, a, b, round_trips: n } => {
                let mut failures = 0;
                let (mut rel, mut asg) = (Ticks::new(), Ticks::new());
                for i in 0..n {
                    for (from, to) in [(a, b), (b, a)] {
                        let t0 = counter().0;
                        let r = hvc::release(g, from);
                        let t1 = counter().0;
                        let s = hvc::assign(g, to);
                        let t2 = counter().0;
                        rel.add(t1 - t0);
                        asg.add(t2 - t1);
                        if r != 0 || s != 0 {
                            failures += 1;
                            l.push("move ").hex(i).push(": release ").hex(r).push(" assign ").hex(s).send();
                        }
                        delay_us(20_000);
                    }
                }
                l.push("moves: ").hex(n).push(" round trips of group ").hex(g).push(", failures ").hex(failures).send();
                for (what, t) in [("release", &mut rel), ("assign", &mut asg)] {
                    l.push("move ticks: ")
                        .push(what)
                        .push(" min ")
                        .hex(t.min)
                        .push(" median ")
                        .hex(t.median())
                        .push(" max ")
                        .hex(t.max)
                        .push(" of ")
                        .hex(t.n as u64)
                        .send();
                }
            }
            Word::Info(g) => {
                let r = hvc::group_info(g);
                l.push("group ")
                    .hex(g)
                    .push(": status ")
                    .hex(r[0])
                    .push(" owner ")
                    .hex(r[1])
                    .push(" devices|sids ")
                    .hex(r[2])
                    .push(" rid|sid ")
                    .hex(r[3])
                    .send();
            }
            Word::TryMove { group, from, to } => {
                let r = hvc::release(group, from);
                let s = hvc::assign(group, to);
                l.push("try-move group ").hex(group).push(": release ").hex(r).push(" assign ").hex(s).send();
            }
            Word::Release { group, owner } => {
                let r = hvc::release(group, owner);
                l.push("release group ").hex(group).push(" from ").hex(owner).push(": ").hex(r).send();
            }
            Word::Assign { group, to } => {
                let r = hvc::assign(group, to);
                l.push("assign group ").hex(group).push(" to ").hex(to).push(": ").hex(r).send();
            }
            Word::Storm(ms) => storm(ms, edu, &mut l),
            Word::FaultEvery { addr, ms, count } => {
                for i in 1..=count {
                    let (_, devices, bar) = hvc::devices();
                    let Some(e) = (devices > 0).then(|| edu::Edu::new(bar)).flatten() else {
                        l.push("fault-every: no device for fault ").hex(i).send();
                        hvc::exit(4);
                    };
                    let (start, f) = counter();
                    l.push("fault ").hex(i).push(": DMA to ").hex(addr).send();
                    e.copy_out(addr);
                    while counter().0.wrapping_sub(start) < ms * f / 1000 {}
                }
                l.push("fault-every: ").hex(count).push(" faulting DMAs done").send();
            }
            Word::FaultStorm { addr: a, count: n } => {
                let mut done = 0;
                while done < n {
                    let (_, count, bar) = hvc::devices();
                    let Some(e) = (count > 0).then(|| edu::Edu::new(bar)).flatten() else { break };
                    e.copy_out(a);
                    done += 1;
                }
                if done < n {
                    l.push("storm: device taken away after ").hex(done).push(" faulting DMAs").send();
                } else {
                    l.push("storm: ").hex(done).push(" faulting DMAs and the device is still mine").send();
                }
            }
            Word::DmaLoop(ms) => dma_loop(ms, scratch, &mut l),
            Word::Wait(ms) => delay_us(ms * 1000),
            Word::Canary(a) => {
                // SAFETY: the test names an address in this partition's memory.
                unsafe { (a as *mut u64).write_volatile(CANARY) };
                l.push("canary set at ").hex(a).send();
            }
            Word::Check(a) => {
                // SAFETY: as for `canary=`.
                let v = unsafe { (a as *const u64).read_volatile() };
                if v == CANARY {
                    l.push("canary at ").hex(a).push(" intact").send();
                } else {
                    l.push("canary at ").hex(a).push(" CHANGED to ").hex(v).send();
                    hvc::exit(3);
                }
            }
            Word::Watch { addr: a, ms } => {
                // Checks the canary every 50 ms for `ms` milliseconds.
                for _ in 0..ms / 50 {
                    // SAFETY: as for `canary=`.
                    let v = unsafe { (a as *const u64).read_volatile() };
                    if v != CANARY {
                        l.push("canary at ").hex(a).push(" CHANGED to ").hex(v).send();
                        hvc::exit(3);
                    }
                    delay_us(50_000);
                }
                l.push("canary at ").hex(a).push(" intact after ").hex(ms).push(" ms").send();
            }
            Word::DmaAt(bar) => {
                // An edu this partition was given after it started (its DTB
                // lists only those it had then), at its BAR 0 (MMIO IPA == PA).
                match edu::Edu::new(bar) {
                    Some(e) => dma_own(&e, scratch, &mut l),
                    None => l.push("no edu at ").hex(bar).send(),
                }
            }
            Word::DmaOwn | Word::Attack { .. } => {
                let Some(e) = edu.and_then(edu::Edu::new) else {
                    l.push("no edu device in my DTB").send();
                    hvc::exit(4);
                };
                match word {
                    Word::Attack { name, addr } => attack(&e, name, addr, scratch, &mut l),
                    _ => dma_own(&e, scratch, &mut l),
                }
            }
        }
    }
    hvc::exit(0)
}

fn fill(at: u64, v: u8) {
    // SAFETY: `at` is this partition's scratch space.
    unsafe { core::ptr::write_bytes(at as *mut u8, v, edu::LEN) };
}

fn bytes(at: u64) -> &'static [u8] {
    // SAFETY: as in `fill`.
    unsafe { core::slice::from_raw_parts(at as *const u8, edu::LEN) }
}

/// Keeps whatever device it owns busy: round trips through its own memory.
/// A transfer during which the device was taken away (the generation
/// changed) may fail; one that completed while it owned the device must
/// verify.
fn dma_loop(ms: u64, scratch: u64, l: &mut Line) {
    let (start, f) = counter();
    let (mut ok, mut interrupted, mut bad, mut idle) = (0u64, 0u64, 0u64, 0u64);
    let mut n = 0u8;
    // Round-trip times of the first verified transfers, in counter ticks.
    let mut took = [0u64; 256];
    while counter().0.wrapping_sub(start) < ms * f / 1000 {
        let (gen, count, bar) = hvc::devices();
        if count == 0 {
            idle += 1;
            delay_us(5_000);
            continue;
        }
        n = n.wrapping_add(1);
        let pattern = 0x40 | (n & 0x3f);
        fill(scratch, pattern);
        fill(scratch + 0x1000, 0);
        let t0 = counter().0;
        let done = edu::Edu::new(bar).is_some_and(|e| e.copy_in(scratch) && e.copy_out(scratch + 0x1000));
        let t1 = counter().0;
        let verified = done && bytes(scratch + 0x1000).iter().all(|&b| b == pattern);
        let (gen_after, _, _) = hvc::devices();
        if gen_after != gen {
            interrupted += 1;
        } else if verified {
            if let Some(slot) = took.get_mut(ok as usize) {
                *slot = t1.wrapping_sub(t0);
            }
            ok += 1;
        } else {
            bad += 1;
        }
    }
    l.push("dma-loop: verified ").hex(ok).push(", interrupted by a move ").hex(interrupted).push(", bad ").hex(bad).push(", idle ").hex(idle).send();
    let samples = &mut took[..(ok as usize).min(256)];
    if !samples.is_empty() {
        samples.sort_unstable();
        let us = |t: u64| t * 1_000_000 / f;
        let (min, median, max) = (us(samples[0]), us(samples[samples.len() / 2]), us(samples[samples.len() - 1]));
        l.push("dma-loop: round trip us min ").hex(min).push(" median ").hex(median).push(" max ").hex(max).send();
    }
    if bad != 0 {
        hvc::exit(6);
    }
}

/// `storm=MS` (see the crate documentation). `bar`: its device's window
/// from its DTB, touched only while the device is not its own.
fn storm(ms: u64, bar: Option<u64>, l: &mut Line) {
    let (start, f) = counter();
    let mut seed = start | 1;
    let mut random = move || {
        // xorshift64: arguments nobody chose.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let text = [b'#'; 256];
    let (mut refused, mut writes, mut touches) = (0u64, 0u64, 0u64);
    while counter().0.wrapping_sub(start) < ms * f / 1000 {
        // A function number no ABI version has, then a console write whose
        // buffer is not its memory: both refused, neither stops it.
        if hvc::raw(0x1000 + (random() & 0xfff), random(), random()) != 0 {
            refused += 1;
        }
        if hvc::raw(1, random() | (1 << 47), 256) != 0 {
            refused += 1;
        }
        hvc::console(&text);
        writes += 1;
        if let (Some(b), (_, 0, _)) = (bar, hvc::devices()) {
            // SAFETY: the window of the device this partition was given (its
            // DTB's); taken away, the kernel emulates it as removed.
            unsafe {
                let v = (b as *const u32).read_volatile();
                (b as *mut u32).write_volatile(v);
            }
            touches += 2;
        }
    }
    // A quiet moment refills its console budget for the summary.
    delay_us(150_000);
    l.push("storm: ")
        .hex(refused)
        .push(" refused calls, ")
        .hex(writes)
        .push(" console writes of 256 bytes, ")
        .hex(touches)
        .push(" lost-device accesses")
        .send();
}

/// Own memory → device → own memory; the bytes must match.
fn dma_own(e: &edu::Edu, scratch: u64, l: &mut Line) {
    fill(scratch, PATTERN);
    fill(scratch + 0x1000, 0);
    let ok = e.copy_in(scratch) && e.copy_out(scratch + 0x1000);
    if ok && bytes(scratch + 0x1000).iter().all(|&b| b == PATTERN) {
        l.push("dma own ").hex(scratch).push(": ok, 64 bytes verified").send();
    } else {
        l.push("dma own ").hex(scratch).push(": FAILED").send();
        hvc::exit(5);
    }
}

/// The device writes a marker to `addr` and reads from it. The read lands in
/// the device's buffer, which is primed with a known pattern first: if the
/// SMMU aborted the read, the device holds either that pattern or the bus's
/// abort value (all zeros or all ones, depending on the device); anything
/// else is data from the target.
fn attack(e: &edu::Edu, what: &str, addr: u64, scratch: u64, l: &mut Line) {
    fill(scratch, 0x3c);
    let write_done = e.copy_in(scratch) && e.copy_out(addr);
    fill(scratch, PATTERN);
    fill(scratch + 0x1000, 0);
    let read_done = e.copy_in(scratch) && e.copy_in(addr) && e.copy_out(scratch + 0x1000);
    let got = bytes(scratch + 0x1000);
    let uniform = got.iter().all(|&b| b == got[0]);
    l.push("attack ").push(what).push(" ").hex(addr).push(": ");
    if !(write_done && read_done) {
        l.push("device did not finish").send();
    } else if uniform && matches!(got[0], PATTERN | 0x00 | 0xff) {
        l.push("read blocked (device got ").hex(u64::from(got[0])).push(" bytes)").send();
    } else {
        let first = u64::from_le_bytes([got[0], got[1], got[2], got[3], got[4], got[5], got[6], got[7]]);
        l.push("READ LEAKED data into the device: ").hex(first).send();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    hvc::console(b"payload: panic");
    hvc::exit(101)
}

/// `partitions` (for the ABI constants) links `alloc`; the payload never
/// allocates, so the allocator refuses everything.
struct NoAlloc;

// SAFETY: returning null is always a valid "allocation failed".
unsafe impl core::alloc::GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;
