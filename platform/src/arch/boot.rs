//! The image entry point, the Linux arm64 image header, self-relocation and
//! the exception vector table.
//!
//! The image starts with the 64-byte header of the Linux arm64 boot protocol
//! (Documentation/arm64/booting.rst), so U-Boot `booti`, other loaders and
//! QEMU's `-kernel Image` accept the raw image. `_start` follows that
//! protocol: entered at EL2 with the MMU off, x0 holds the DTB address (QEMU's
//! ELF path leaves x0 = 0 and puts the DTB at the bottom of RAM; the board
//! resolves that). Only the primary CPU enters here; secondaries stay with the
//! PSCI firmware until CPU_ON. Nothing here assumes an exception level: the
//! board's entry checks it and refuses anything but EL2.
//!
//! The kernel is a position-independent executable linked at the board's
//! link address (QEMU's ELF loader puts it there). A loader may place the
//! `Image` at any other 2 MiB-aligned address (header flag "anywhere"):
//! before any Rust code runs, `_start` applies the image's own
//! `R_AARCH64_RELATIVE` relocations for the distance between where it runs
//! and where it was linked. Everything else the kernel derives from its own
//! location comes from PC-relative linker symbols ([`image_layout`]).

use core::sync::atomic::{AtomicU64, Ordering};

/// `r_info` of an `R_AARCH64_RELATIVE` relocation (symbol 0, type 1027;
/// ELF for the Arm 64-bit Architecture, "Dynamic relocations").
const R_AARCH64_RELATIVE: u64 = 1027;
/// Alignment the load address must keep relative to the link address.
///
/// The header promises 2 MiB ("anywhere" placement of a 2 MiB-aligned base,
/// text_offset 0). Two things depend on it: the W^X identity map (page
/// granular), and defmt, whose interned-string indices are symbol addresses
/// in the non-loaded `.defmt` section truncated to 16 bits and computed
/// PC-relatively: they stay right only when the load bias is a multiple of
/// 64 KiB. `_start` refuses a bias that is not.
pub const LOAD_ALIGN: u64 = 64 << 10;

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // Linux arm64 image header, 64 bytes, little-endian
    // (Documentation/arm64/booting.rst, "Call the kernel image").
    b       __bulkhead_entry            // code0: over the header
    .long   0                           // code1
    .quad   0                           // text_offset: at the 2 MiB-aligned base
    .quad   __image_size                // image_size: text through bss and stack (link.ld)
    .quad   0xa                         // flags: bit 0 = 0 little-endian, bits 1-2 = 1 4K
                                        // pages, bit 3 = 1 base anywhere in RAM
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic
    .long   0                           // res5: no PE/COFF header

__bulkhead_entry:
    mrs     x26, cntpct_el0             // boot benchmark: the counter at entry
    msr     daifset, #0xf               // no interrupts until the kernel asks
    mov     x19, x0                     // DTB address from the loader (may be 0)
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2

    // Close the DMA window before anything else: GBPA.ABORT on every SMMU
    // the board lists (BULKHEAD_EARLY_SMMUS: register bases, zero-
    // terminated; plain data read PC-relatively, so this runs before the
    // relocations, the stack and the DT). Only at EL2: entered anywhere
    // else the kernel is not the machine's owner and touches nothing.
    //
    // For each base, as the DT-driven pass does (smmu::gbpa_abort): wait,
    // bounded, for GBPA.UPDATE=0 (writes are ignored while an update is in
    // flight), write UPDATE|ABORT, wait, bounded, for UPDATE=0 again. A
    // base with no SMMU behind it (a configurable machine, e.g. QEMU virt
    // with iommu=none) faults on the first read: the early vectors below
    // are in place for this loop only, and resume at the next base with
    // the SMMU marked absent in x7, never written. An UPDATE that does not
    // clear marks it in x8 (unconfirmed; not written when it never cleared
    // before the write). Both masks reach Rust (early_smmu_states), and the
    // kernel aborts every SMMU of the DT again once it has read it. This
    // only sets GBPA, which has no effect while SMMUEN=1: an SMMU firmware
    // left enabled keeps translating through its old tables until the
    // DT-driven bring-up disables it (CR0.SMMUEN=0, GBPA aborting).
    mov     x7, xzr                     // listed SMMUs that are absent
    mov     x8, xzr                     // listed SMMUs whose UPDATE did not clear
    cmp     x20, #2
    b.ne    13f
    adrp    x1, BULKHEAD_EARLY_SMMUS
    add     x1, x1, :lo12:BULKHEAD_EARLY_SMMUS
    mov     x6, xzr                     // index in the list
    mrs     x9, vbar_el2                // the loader's vectors, put back after
    adrp    x3, __bulkhead_early_vectors
    add     x3, x3, :lo12:__bulkhead_early_vectors
    msr     vbar_el2, x3
    isb
10: ldr     x2, [x1], #8
    cbz     x2, 12f
    mov     x4, #{gbpa_polls}
11: ldr     w3, [x2, #{gbpa}]           // faults if nothing is there: 14f
    tbz     w3, #31, 15f                // UPDATE clear: no update in flight
    subs    x4, x4, #1
    b.ne    11b
    b       17f                         // never cleared: not written
15: movz    w3, #{gbpa_set_hi}, lsl #16 // UPDATE | ABORT
    str     w3, [x2, #{gbpa}]
    mov     x4, #{gbpa_polls}
16: ldr     w3, [x2, #{gbpa}]
    tbz     w3, #31, 18f                // UPDATE clear: the abort is in force
    subs    x4, x4, #1
    b.ne    16b
17: mov     x3, #1
    lsl     x3, x3, x6
    orr     x8, x8, x3
    b       18f
    .global __bulkhead_early_absent
__bulkhead_early_absent:                // from the early vectors: x6's access faulted
14: mov     x3, #1
    lsl     x3, x3, x6
    orr     x7, x7, x3
18: add     x6, x6, #1
    cmp     x6, #{early_smmus}
    b.lo    10b
12: msr     vbar_el2, x9
    isb
13: mrs     x29, cntpct_el0             // boot benchmark: the board's SMMUs abort

    // Load bias = where the image runs - where it was linked. The link
    // address is an absolute linker-script symbol, so it is a link-time
    // constant (no relocation of its own); __image_start is PC-relative.
    adrp    x21, __image_start
    add     x21, x21, :lo12:__image_start
    movz    x24, #:abs_g3:__link_base
    movk    x24, #:abs_g2_nc:__link_base
    movk    x24, #:abs_g1_nc:__link_base
    movk    x24, #:abs_g0_nc:__link_base
    sub     x22, x21, x24
    movz    x25, #:abs_g3:__image_size
    movk    x25, #:abs_g2_nc:__image_size
    movk    x25, #:abs_g1_nc:__image_size
    movk    x25, #:abs_g0_nc:__image_size
    sub     x25, x25, #8                // last offset an 8-byte target may start at

    // Apply every R_AARCH64_RELATIVE: *(r_offset + bias) = r_addend + bias.
    // Always, even at bias 0: the linker leaves RELA targets unwritten.
    // Targets outside the image are skipped: defmt keeps a pointer in its
    // `.defmt` section, which is never loaded (it sits at address 0). The
    // MMU is off, so every access is Device memory and must be aligned: the
    // table is 8-byte aligned (link.ld) and a target that is not (never
    // seen, but legal) is written a byte at a time.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
    mov     x23, xzr                    // first unsupported r_info, 0 = none
0:  cmp     x1, x2
    b.hs    3f
    ldp     x3, x4, [x1]                // r_offset, r_info
    ldr     x5, [x1, #16]               // r_addend
    add     x1, x1, #24
    cbz     x4, 0b                      // R_AARCH64_NONE: padding
    cmp     x4, #{relative}
    b.eq    1f
    cbnz    x23, 0b
    mov     x23, x4                     // remember it, report after the stack is up
    b       0b
1:  sub     x6, x3, x24                 // offset in the image (link addresses)
    cmp     x6, x25
    b.hi    0b                          // not in the image
    add     x3, x3, x22
    add     x5, x5, x22
    tst     x3, #7
    b.ne    2f
    str     x5, [x3]
    b       0b
2:  mov     x6, #8
21: strb    w5, [x3], #1
    lsr     x5, x5, #8
    subs    x6, x6, #1
    b.ne    21b
    b       0b

3:  mrs     x27, cntpct_el0             // boot benchmark: relocations applied
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
4:  cmp     x1, x2
    b.hs    5f
    stp     xzr, xzr, [x1], #16
    b       4b
5:  mrs     x28, cntpct_el0             // boot benchmark: bss cleared
    adrp    x1, BULKHEAD_LOAD_BIAS      // after the bss clear, which would erase it
    str     x22, [x1, :lo12:BULKHEAD_LOAD_BIAS]
    adrp    x1, BULKHEAD_BOOT_TICKS
    add     x1, x1, :lo12:BULKHEAD_BOOT_TICKS
    stp     x26, x27, [x1]
    stp     x28, x29, [x1, #16]
    adrp    x1, BULKHEAD_EARLY_SMMU_MASKS
    add     x1, x1, :lo12:BULKHEAD_EARLY_SMMU_MASKS
    stp     x7, x8, [x1]
    adrp    x1, __bulkhead_vectors
    add     x1, x1, :lo12:__bulkhead_vectors
    cmp     x20, #2
    b.eq    6f
    cmp     x20, #1
    b.ne    7f
    msr     vbar_el1, x1                // wrong EL: still report faults
    b       7f
6:  msr     vbar_el2, x1
7:  isb
    // A misplaced image or a relocation we cannot apply: stop before any
    // code that relies on them runs.
    tst     x22, #({load_align} - 1)
    b.ne    8f
    cbnz    x23, 8f
    mov     x0, x19
    mov     x1, x20
    bl      bulkhead_board_entry
    b       9f
8:  mov     x0, x22
    mov     x1, x23
    bl      bulkhead_bad_image
9:  wfe
    b       9b

    // Exception vectors: 16 entries of 0x80 bytes, 2 KiB aligned.
    // Each saves x0..x30 into a frame on the current stack and calls
    // `bulkhead_exception(frame, kind)`; a handler that returns resumes the
    // interrupted context with the (possibly edited) frame.
    .macro BULKHEAD_VECTOR kind
    .balign 0x80
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x0, sp
    mov     x1, #\kind
    b       __bulkhead_exception_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global __bulkhead_vectors
__bulkhead_vectors:
    BULKHEAD_VECTOR 0
    BULKHEAD_VECTOR 1
    BULKHEAD_VECTOR 2
    BULKHEAD_VECTOR 3
    BULKHEAD_VECTOR 4
    BULKHEAD_VECTOR 5
    BULKHEAD_VECTOR 6
    BULKHEAD_VECTOR 7
    BULKHEAD_VECTOR 8
    BULKHEAD_VECTOR 9
    BULKHEAD_VECTOR 10
    BULKHEAD_VECTOR 11
    BULKHEAD_VECTOR 12
    BULKHEAD_VECTOR 13
    BULKHEAD_VECTOR 14
    BULKHEAD_VECTOR 15

    // The early vectors, in place only while `_start` aborts the board's
    // SMMUs (no stack yet): any synchronous exception there is an access
    // to a listed SMMU that is not there (a data abort on a base no device
    // decodes). It resumes at __bulkhead_early_absent, which marks the SMMU
    // absent and goes on with the next. IRQ, FIQ and SError are masked.
    .macro BULKHEAD_EARLY_VECTOR
    .balign 0x80
    adrp    x10, __bulkhead_early_absent
    add     x10, x10, :lo12:__bulkhead_early_absent
    msr     elr_el2, x10
    eret
    .endm

    .balign 0x800
__bulkhead_early_vectors:
    .rept 16
    BULKHEAD_EARLY_VECTOR
    .endr

__bulkhead_exception_common:
    bl      bulkhead_exception
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #256
    eret
"#,
    load_align = const LOAD_ALIGN,
    relative = const R_AARCH64_RELATIVE,
    early_smmus = const MAX_EARLY_SMMUS,
    gbpa = const GBPA,
    gbpa_set_hi = const GBPA_UPDATE_ABORT >> 16,
    gbpa_polls = const GBPA_POLLS,
);

/// Load bias (runtime address - link address), stored by `_start` once the
/// relocations are applied. Only `_start` writes it, before any Rust runs.
#[unsafe(no_mangle)]
static BULKHEAD_LOAD_BIAS: AtomicU64 = AtomicU64::new(0);

/// Counter values (CNTPCT_EL0) `_start` took for the boot benchmark, in
/// x26..x29 until the bss clear is done: at its first instruction after the
/// image header's branch, once the relocations were applied, once the bss
/// was cleared, and once the board's SMMUs were aborting. Only `_start`
/// writes them, before any Rust runs.
#[unsafe(no_mangle)]
static BULKHEAD_BOOT_TICKS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// What `_start` found at the board's early SMMUs, two bit masks over the
/// list's positions: [0] absent (reading GBPA faulted; never written), [1]
/// GBPA.UPDATE did not clear within the bound. Only `_start` writes them,
/// before any Rust runs.
#[unsafe(no_mangle)]
static BULKHEAD_EARLY_SMMU_MASKS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// What `_start`'s early abort did to one SMMU of the board's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum EarlyAbort {
    /// GBPA.ABORT is set and the SMMU confirmed it (UPDATE cleared).
    Aborted,
    /// Nothing answers at the base: reading GBPA faulted; nothing was written.
    Absent,
    /// GBPA.UPDATE did not clear within the bound (before the write, which
    /// was then not made, or after it).
    Unconfirmed,
}

/// What `_start` did to the SMMU at `base`: `None` when the board does not
/// list it (or the kernel was entered at another EL and touched nothing).
pub fn early_abort(base: u64) -> Option<EarlyAbort> {
    let at = early_smmus().position(base)?;
    let mask = |i: usize| BULKHEAD_EARLY_SMMU_MASKS[i].load(Ordering::Relaxed) >> at & 1 != 0;
    Some(if mask(0) {
        EarlyAbort::Absent
    } else if mask(1) {
        EarlyAbort::Unconfirmed
    } else {
        EarlyAbort::Aborted
    })
}

/// Most SMMUs a board may list in [`EarlySmmus`].
pub const MAX_EARLY_SMMUS: usize = 8;
/// SMMU_GBPA's offset, and UPDATE | ABORT (SMMUv3 spec 6.3.14).
const GBPA: usize = 0x44;
const GBPA_UPDATE_ABORT: u32 = (1 << 31) | (1 << 20);
/// Reads of GBPA before `_start` gives up waiting for UPDATE to clear
/// (QEMU clears it on the write; hardware within microseconds).
const GBPA_POLLS: u32 = 1000;

/// The register bases of the SMMUs a board always has, which `_start`
/// aborts (GBPA.ABORT) before any other work — relocation, stack, DT —
/// so the DMA window a boot leaves open is a few dozen instructions.
/// Every board crate defines one, named `BULKHEAD_EARLY_SMMUS` and
/// `#[unsafe(no_mangle)]` (empty when its SMMUs move between variants: the
/// kernel then aborts them once it has read the DT). A base that is not an
/// SMMU is written anyway: list only what the board certainly has.
#[repr(C)]
pub struct EarlySmmus([u64; MAX_EARLY_SMMUS]);

impl EarlySmmus {
    /// `bases`, at most [`MAX_EARLY_SMMUS`] (a longer list fails to
    /// compile in a `static`); a zero base ends the list.
    pub const fn new(bases: &[u64]) -> EarlySmmus {
        assert!(bases.len() <= MAX_EARLY_SMMUS, "too many early SMMUs");
        let mut a = [0; MAX_EARLY_SMMUS];
        let mut i = 0;
        while i < bases.len() {
            a[i] = bases[i];
            i += 1;
        }
        EarlySmmus(a)
    }

    /// Whether `base` is listed.
    pub fn contains(&self, base: u64) -> bool {
        self.position(base).is_some()
    }

    /// Where `base` is in the list.
    pub fn position(&self, base: u64) -> Option<usize> {
        if base == 0 {
            return None;
        }
        self.0.iter().take_while(|&&b| b != 0).position(|&b| b == base)
    }

    /// The listed bases, in order.
    pub fn bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied().take_while(|&b| b != 0)
    }
}

unsafe extern "C" {
    /// The board crate's list (see [`EarlySmmus`]).
    static BULKHEAD_EARLY_SMMUS: EarlySmmus;
}

/// The SMMUs `_start` aborted before anything else.
pub fn early_smmus() -> &'static EarlySmmus {
    // SAFETY: every board crate defines the symbol as an immutable static
    // of this type (a link error otherwise); nothing writes it.
    unsafe { &*core::ptr::addr_of!(BULKHEAD_EARLY_SMMUS) }
}

/// The counter at the first steps of `_start` (see [`boot_ticks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootTicks {
    /// At entry (the second instruction the image executes).
    pub entry: u64,
    /// After the image's relocations were applied.
    pub relocated: u64,
    /// After the bss was cleared, just before the first Rust code.
    pub bss_cleared: u64,
    /// After the board's early SMMUs were set to abort (`EarlySmmus`).
    pub early_abort: u64,
}

/// What `_start` read from the generic counter on its way to Rust: under
/// QEMU's `-icount shift=0` with a 1 GHz counter, one tick is one guest
/// instruction.
pub fn boot_ticks() -> BootTicks {
    let t = |i: usize| BULKHEAD_BOOT_TICKS[i].load(Ordering::Relaxed);
    BootTicks { entry: t(0), relocated: t(1), bss_cleared: t(2), early_abort: t(3) }
}

/// Where the image runs and where it was linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The address the loader placed the image at (start of the header).
    pub runtime: crate::PhysAddr,
    /// The address the image was linked at (the ELF's load address).
    pub link: crate::PhysAddr,
    /// Image size including bss and stack (the header's `image_size`).
    pub size: u64,
}

impl Placement {
    /// Runtime minus link address (wrapping: a loader may place the image
    /// below its link address).
    pub fn bias(&self) -> u64 {
        self.runtime.0.wrapping_sub(self.link.0)
    }
}

/// Where the image runs, where it was linked, and how large it is.
pub fn placement() -> Placement {
    let image = image_layout().image;
    let bias = BULKHEAD_LOAD_BIAS.load(Ordering::Relaxed);
    Placement { runtime: image.start, link: crate::PhysAddr(image.start.0.wrapping_sub(bias)), size: image.size() }
}

/// Logs where the image runs (for the boot banner).
pub fn log_placement() {
    let p = placement();
    if p.bias() == 0 {
        defmt::info!("image: running at {} (its link address), {=u64} KiB with bss and stack", p.runtime, p.size >> 10);
    } else {
        defmt::info!("image: running at {} (linked at {}, relocated), {=u64} KiB with bss and stack", p.runtime, p.link, p.size >> 10);
    }
}

/// Entered from `_start` instead of the board when the image cannot run
/// where it is: the load address is not [`LOAD_ALIGN`]-aligned relative to
/// the link address (`bias`), or the image holds a relocation other than
/// `R_AARCH64_RELATIVE` (`r_info`, 0 if none; `cargo xtask image` checks
/// this at build time). Neither the console (the board knows where it is)
/// nor, when misplaced, defmt's string indices can be trusted, so this only
/// stops the machine with [`crate::ExitCode::PlatformError`].
#[unsafe(no_mangle)]
extern "C" fn bulkhead_bad_image(bias: u64, r_info: u64) -> ! {
    let _ = (bias, r_info);
    super::exit::configure(true, devicetree::PsciConduit::Smc);
    super::exit::exit_quiet(crate::ExitCode::PlatformError)
}

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    static __stack_guard: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
}

/// The image's layout, from the linker script's symbols.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Whole image, text through stack.
    pub image: crate::PhysRange,
    /// Executable code.
    pub text: crate::PhysRange,
    /// Read-only data.
    pub rodata: crate::PhysRange,
    /// Data and bss (read-write).
    pub data: crate::PhysRange,
    /// The unmapped page below the stack that catches overflow.
    pub stack_guard: crate::PhysRange,
    /// The boot stack.
    pub stack: crate::PhysRange,
}

/// Reads the linker-provided layout.
pub fn image_layout() -> ImageLayout {
    let a = |s: &u8| s as *const u8 as u64;
    // SAFETY: only the addresses of these linker symbols are taken, never
    // their contents.
    let (start, text_end, ro_end, guard, sbot, stop, end) =
        unsafe { (a(&__image_start), a(&__text_end), a(&__rodata_end), a(&__stack_guard), a(&__stack_bottom), a(&__stack_top), a(&__image_end)) };
    let r = crate::PhysRange::from_bounds;
    ImageLayout {
        image: r(start, end),
        text: r(start, text_end),
        rodata: r(text_end, ro_end),
        data: r(ro_end, guard),
        stack_guard: r(guard, sbot),
        stack: r(sbot, stop),
    }
}
