//! One call at a time on a model whose methods write its attributes (a
//! stream's state, a call counter). TorchScript runs a module from several
//! threads at once, but attribute writes then race inside libtorch: lost
//! updates, tensors freed under a reader, a crashed host. So every call that
//! runs such a model (run, call, warm-up, batching, compile) holds its lock
//! for the whole call, and a save-run-restore (warm-up) is one step to the
//! other threads. Models that write nothing keep running concurrently.
//!
//! The lock is held across libtorch calls; no host code runs under it: the
//! thread's log records wait until it is released (logging::hold_back), and
//! a call that would take it twice on one thread fails instead of waiting.

use std::cell::RefCell;

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::logging::{self, HoldBack};

thread_local! {
    /// The locks this thread holds (their addresses).
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

pub(super) struct Exclusive {
    lock: Mutex<()>,
}

/// Fields drop in order: the lock is released before the held-back records
/// are written.
pub(super) struct ExclusiveGuard<'a> {
    _lock: MutexGuard<'a, ()>,
    _records: HoldBack,
    id: usize,
}

impl Exclusive {
    pub(super) fn new() -> Exclusive {
        Exclusive {
            lock: Mutex::new(()),
        }
    }

    /// Waits for the model's other calls; fails when this thread holds the
    /// lock already (a wait for itself).
    pub(super) fn enter(&self, model: &str) -> Result<ExclusiveGuard<'_>> {
        let id = self as *const Exclusive as usize;
        // `try_with`: on a thread whose locals are gone (a host's thread-exit
        // destructor) nothing is recorded, and nothing can be held there.
        let again = HELD
            .try_with(|held| held.borrow().contains(&id))
            .unwrap_or(false);
        if again {
            return Err(Error::invalid_argument(format!(
                "model {model} keeps state and runs one call at a time, and this thread is inside \
                 a call on it already"
            )));
        }
        let records = logging::hold_back();
        let lock = self.lock.lock();
        let _ = HELD.try_with(|held| held.borrow_mut().push(id));
        Ok(ExclusiveGuard {
            _lock: lock,
            _records: records,
            id,
        })
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        let _ = HELD.try_with(|held| held.borrow_mut().retain(|&id| id != self.id));
    }
}
