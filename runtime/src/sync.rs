//! Locking that survives a panic elsewhere, and polling a future once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;

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

/// Polls `future` once, handing back whether it is done. Most attempts end
/// within their first poll, so the worker and the sandbox poll first and
/// set a timer (a timer-wheel entry and its removal, per call) only for a
/// future that waits.
pub async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
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
