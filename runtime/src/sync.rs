//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it over if a thread panicked while holding it.
///
/// Every mutex in this crate guards state that each critical section
/// leaves whole (counters, maps, a buffer), so a panic inside one (a bug,
/// or a job task torn down mid-attempt) must not turn every later lock into
/// a second panic that takes the worker down with it. The standard mutex
/// rather than a poison-free one: no dependency for a few short critical
/// sections, and the rule is written once, here.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_panic_while_locked_does_not_poison_the_next_lock() {
        let shared = Arc::new(Mutex::new(1));
        let held = shared.clone();
        let panicked = std::thread::spawn(move || {
            let mut n = super::lock(&held);
            *n += 1;
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.is_poisoned());
        assert_eq!(*super::lock(&shared), 2, "taken over, as left");
    }
}
