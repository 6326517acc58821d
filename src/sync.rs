//! Locks shared by worker threads, handled one way everywhere: a lock whose holder panicked is
//! taken over as it is. A panic in a worker already fails the run (the thread scope re-raises
//! it), so the data behind a poisoned lock is never committed; taking it over only lets the
//! other threads finish their reports instead of panicking a second time.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it over if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The value behind `mutex`, once no thread holds it any more.
pub(crate) fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
}
