//! The defmt global logger: binary frames (rzcobs) on the console UART,
//! decoded on the host by `cargo xtask`. Nothing but defmt frames is ever
//! written to that UART.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

defmt::timestamp!("{=u64:us}", crate::time::uptime_us());

/// Set once secondary CPUs may log: from then on the logger takes a lock.
static SMP: AtomicBool = AtomicBool::new(false);
/// Lock word: 0 = free, otherwise 1 + MPIDR of the holder.
static LOCK: AtomicU64 = AtomicU64::new(0);
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();
static mut SAVED_DAIF: u64 = 0;

/// Called before the first secondary CPU starts: logging becomes locked.
pub fn enable_smp() {
    SMP.store(true, Ordering::Release);
}

#[defmt::global_logger]
struct Logger;

fn mask_interrupts() -> u64 {
    let daif: u64;
    // SAFETY: reading DAIF and masking all four exception classes has no
    // other effect.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #0xf", out(reg) daif, options(nostack)) };
    daif
}

// SAFETY: `acquire`/`release` bracket every frame; with interrupts masked and
// (once SMP) the lock held, exactly one context uses ENCODER at a time.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        let daif = mask_interrupts();
        if SMP.load(Ordering::Acquire) {
            let me = 1 + crate::arch::mpidr();
            let mut spins = 0u64;
            // A holder that is this CPU (a fault while logging) or one that
            // never lets go (bounded spin) is overridden: a log line is worth
            // less than a report getting out.
            while LOCK.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
                spins += 1;
                if LOCK.load(Ordering::Relaxed) == me || spins > 10_000_000 {
                    LOCK.store(me, Ordering::Relaxed);
                    break;
                }
                core::hint::spin_loop();
            }
        }
        // SAFETY: exclusive by the lock/masking above.
        unsafe {
            SAVED_DAIF = daif;
            (*core::ptr::addr_of_mut!(ENCODER)).start_frame(crate::console::write);
        }
    }

    unsafe fn flush() {
        crate::console::flush();
    }

    unsafe fn release() {
        // SAFETY: the caller holds the logger (defmt's contract).
        let daif = unsafe {
            (*core::ptr::addr_of_mut!(ENCODER)).end_frame(crate::console::write);
            SAVED_DAIF
        };
        if SMP.load(Ordering::Relaxed) {
            LOCK.store(0, Ordering::Release);
        }
        // SAFETY: restores the interrupt mask saved by `acquire`.
        unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack)) };
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: the caller holds the logger (defmt's contract).
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, crate::console::write) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("PANIC (kernel bug): {}", defmt::Display2Format(info));
    crate::arch::exit::exit(crate::ExitCode::Panic)
}
