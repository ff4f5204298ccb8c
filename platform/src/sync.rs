//! The lock for kernel state shared between CPUs (the boot CPU and the
//! CPUs that trap in from partitions): a ticket lock (`spin`'s
//! `TicketMutex`), so CPUs get it in the order they asked. A partition
//! whose CPUs trap in a loop cannot keep the boot CPU's event handling
//! from the lock: the boot CPU waits for at most one critical section of
//! each CPU ahead of it, and holders never wait on hardware unbounded.

/// Mutual exclusion by spinning, first come first served.
pub type SpinLock<T> = spin::mutex::TicketMutex<T>;

/// Holds a [`SpinLock`].
pub type SpinGuard<'a, T> = spin::mutex::TicketMutexGuard<'a, T>;

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn excludes_across_threads() {
        let l = std::sync::Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 4_000);
    }

    #[test]
    fn waiters_are_served_in_order() {
        // A thread that takes the lock over and over cannot overtake one
        // that is already waiting: the waiter is served next.
        let l = std::sync::Arc::new(SpinLock::new(std::vec::Vec::new()));
        let g = l.lock();
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.lock().push("waiter"))
        };
        // Time for the waiter to take its ticket.
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(g);
        for _ in 0..1000 {
            l.lock().push("storm");
        }
        waiter.join().unwrap();
        assert_eq!(l.lock()[0], "waiter");
    }
}
