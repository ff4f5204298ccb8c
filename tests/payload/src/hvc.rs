//! bulkhead's hypercalls (partitions::hypercall) from the partition side.

use partitions::hypercall::{CONSOLE_WRITE, DEVICES, EXIT, GROUP_ASSIGN, GROUP_INFO, GROUP_RELEASE, OWNER_BLOCKED, WHOAMI};

fn call(f: u64, a1: u64, a2: u64) -> [u64; 4] {
    call3(f, a1, a2, 0)
}

fn call3(f: u64, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: HVC traps to bulkhead, which reads x0..x4 and writes x0..x3;
    // the buffers passed are this payload's own memory.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") f => r0, inout("x1") a1 => r1, inout("x2") a2 => r2,
            inout("x3") a3 => r3, options(nostack));
    }
    [r0, r1, r2, r3]
}

/// Releases `group` from `expected`; returns the status.
pub fn release(group: u64, expected: u64) -> u64 {
    call(GROUP_RELEASE, group, expected)[0]
}

/// Assigns the Blocked `group` to `to`; returns the status.
pub fn assign(group: u64, to: u64) -> u64 {
    call3(GROUP_ASSIGN, group, to, OWNER_BLOCKED)[0]
}

/// (generation, device count, BAR 0 of the first device).
pub fn devices() -> (u64, u64, u64) {
    let r = call(DEVICES, 0, 0);
    (r[1], r[2], r[3])
}

/// Prints one line through the kernel.
pub fn console(bytes: &[u8]) {
    call(CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64);
}

/// (partition id, CPU count).
pub fn whoami() -> (u64, u64) {
    let r = call(WHOAMI, 0, 0);
    (r[1], r[2])
}

/// Stops the partition with `status`.
pub fn exit(status: u64) -> ! {
    call(EXIT, status, 0);
    loop {
        // SAFETY: waiting for an event has no effect on memory.
        unsafe { core::arch::asm!("wfe", options(nostack)) };
    }
}

/// Any call; returns x0 (the status).
pub fn raw(f: u64, a1: u64, a2: u64) -> u64 {
    call(f, a1, a2)[0]
}

/// GROUP_INFO: (status, owner, devices << 32 | StreamIDs, rid << 32 | first StreamID).
pub fn group_info(group: u64) -> [u64; 4] {
    call(GROUP_INFO, group, 0)
}
