//! The image entry point and the exception vector table.
//!
//! `_start` follows the Linux arm64 boot protocol: x0 holds the DTB address
//! (QEMU's ELF path leaves x0 = 0 and puts the DTB at the bottom of RAM; the
//! board resolves that). Only the primary CPU enters here; secondaries stay
//! with the PSCI firmware until CPU_ON. Nothing here assumes an exception
//! level: the board's entry checks it and refuses anything but EL2.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    msr     daifset, #0xf               // no interrupts until the kernel asks
    mov     x19, x0                     // DTB address from the loader (may be 0)
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
0:  cmp     x1, x2
    b.hs    1f
    stp     xzr, xzr, [x1], #16
    b       0b
1:  adrp    x1, __bulkhead_vectors
    add     x1, x1, :lo12:__bulkhead_vectors
    cmp     x20, #2
    b.eq    2f
    cmp     x20, #1
    b.ne    3f
    msr     vbar_el1, x1                // wrong EL: still report faults
    b       3f
2:  msr     vbar_el2, x1
3:  isb
    mov     x0, x19
    mov     x1, x20
    bl      bulkhead_board_entry
4:  wfe
    b       4b

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
"#
);

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
    let (start, text_end, ro_end, guard, sbot, stop, end) = unsafe {
        (
            a(&__image_start),
            a(&__text_end),
            a(&__rodata_end),
            a(&__stack_guard),
            a(&__stack_bottom),
            a(&__stack_top),
            a(&__image_end),
        )
    };
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
