//! Inference scopes: `c10::InferenceMode` guards owned by a handle, bound to
//! the thread that entered them and exited last-in-first-out.
//!
//! libtorch's guard is a thread-local RAII object; C callers hold it across
//! calls, so perfopt checks what RAII would have guaranteed: the exit happens
//! on the entering thread, and only the innermost open scope may exit. A
//! refused exit leaves the scope open and valid. A scope whose thread has
//! ended may exit from any thread: nothing is left to restore. A scope
//! released from another thread (perfopt_scope_free) no longer counts on its
//! thread: the scopes around it exit as if it had.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::optimizer::Optimizer;
use crate::runtime::settings::InferenceModeGuard;

static NEXT_SCOPE_ID: AtomicU64 = AtomicU64::new(1);
/// Scopes released from another thread while their thread runs: their
/// thread skips them when it next looks for its innermost scope.
static RELEASED_ELSEWHERE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

thread_local! {
    /// Ids of the scopes open on this thread, innermost last.
    static OPEN_SCOPES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// Cleared when this thread ends (its thread-local destructor runs).
    static ALIVE: ThreadAlive = ThreadAlive(Arc::new(AtomicBool::new(true)));
}

struct ThreadAlive(Arc<AtomicBool>);

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
        // This thread's released scopes will never be looked for again.
        let _ = OPEN_SCOPES.try_with(|open| {
            let open = open.borrow();
            RELEASED_ELSEWHERE.lock().retain(|id| !open.contains(id));
        });
    }
}

/// This thread's innermost open scope, past those released elsewhere (none
/// once the thread's locals are gone: it is ending).
fn innermost_open() -> Option<u64> {
    OPEN_SCOPES
        .try_with(|open| {
            let mut open = open.borrow_mut();
            let mut released = RELEASED_ELSEWHERE.lock();
            while let Some(&top) = open.last() {
                match released.iter().position(|&id| id == top) {
                    Some(at) => {
                        released.swap_remove(at);
                        open.pop();
                    }
                    None => break,
                }
            }
            open.last().copied()
        })
        .ok()
        .flatten()
}

/// Whether libtorch's inference mode is on for the calling thread.
pub fn inference_mode_enabled() -> Result<bool> {
    crate::runtime::settings::inference_mode_enabled()
}

pub struct InferenceScope {
    id: u64,
    thread: ThreadId,
    depth: usize,
    guard: Option<InferenceModeGuard>,
    /// Whether the entering thread is still running.
    thread_alive: Arc<AtomicBool>,
    // Keeps the optimizer (and what it configured) alive while the scope is open.
    _optimizer: Arc<Optimizer>,
}

// SAFETY: the guard inside is only created and dropped on `thread`: `exit`
// checks the calling thread before dropping it, and `Drop` refuses to touch it
// elsewhere. Moving the handle between threads is what C callers do with
// pointers anyway; the checks make that safe.
unsafe impl Send for InferenceScope {}

impl InferenceScope {
    pub fn enter(optimizer: Arc<Optimizer>) -> Result<Self> {
        // A host may call perfopt from its thread-exit destructors, after this
        // thread's locals are gone: no scope can be tracked (or exited) there.
        let ending = || {
            Error::new(
                ErrorKind::WrongThread,
                "this thread is ending (its thread-local storage is gone): an inference scope \
                 cannot be entered from a thread-exit destructor",
            )
        };
        let thread_alive = ALIVE
            .try_with(|alive| alive.0.clone())
            .map_err(|_| ending())?;
        let guard = InferenceModeGuard::enter()?;
        let id = NEXT_SCOPE_ID.fetch_add(1, Ordering::Relaxed);
        let depth = OPEN_SCOPES
            .try_with(|open| {
                let mut open = open.borrow_mut();
                open.push(id);
                open.len()
            })
            .map_err(|_| ending())?;
        Ok(InferenceScope {
            id,
            thread: thread::current().id(),
            depth,
            guard: Some(guard),
            thread_alive,
            _optimizer: optimizer,
        })
    }

    /// Nesting depth when entered: 1 for the outermost scope on its thread.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn thread_ended(&self) -> bool {
        !self.thread_alive.load(Ordering::Acquire)
    }

    /// Whether this scope may exit now: on its own thread, innermost first,
    /// or from anywhere once its thread has ended.
    pub fn check_exit(&self) -> Result<()> {
        if self.thread_ended() {
            return Ok(());
        }
        if thread::current().id() != self.thread {
            return Err(Error::new(
                ErrorKind::WrongThread,
                format!(
                    "inference scope {} was entered on thread {:?} and cannot exit on thread {:?}: \
                     libtorch's inference mode is thread-local (a scope whose thread has ended may \
                     exit anywhere; perfopt_scope_free releases one without exiting it)",
                    self.id,
                    self.thread,
                    thread::current().id()
                ),
            ));
        }
        if innermost_open() != Some(self.id) {
            return Err(Error::new(
                ErrorKind::ScopeOrder,
                format!(
                    "inference scope {} (depth {}) is not the innermost open scope on this thread: \
                     exit nested scopes first (last in, first out)",
                    self.id, self.depth
                ),
            ));
        }
        Ok(())
    }

    /// Exits the scope. On error the scope is returned untouched so that the
    /// caller can exit it properly later.
    pub fn exit(mut self) -> std::result::Result<(), (Self, Error)> {
        if let Err(err) = self.check_exit() {
            return Err((self, err));
        }
        match self.guard.take() {
            Some(guard) if self.thread_ended() => guard.abandon(),
            guard => {
                let _ = OPEN_SCOPES.try_with(|open| open.borrow_mut().pop());
                drop(guard);
            }
        }
        Ok(())
    }

    /// Releases the scope without exiting it, from any thread: on its own
    /// thread as the innermost scope it exits; otherwise the guard is
    /// abandoned and the entering thread, if it still runs, stays in
    /// inference mode (for scopes that will never be exited properly).
    pub fn abandon(mut self) {
        if self.check_exit().is_ok() {
            let _ = self.exit();
            return;
        }
        if let Some(guard) = self.guard.take() {
            guard.abandon();
            if !self.thread_ended() {
                RELEASED_ELSEWHERE.lock().push(self.id);
            }
        }
    }
}

impl Drop for InferenceScope {
    fn drop(&mut self) {
        // Reached only when a Rust owner drops an open scope. On its own
        // thread that is an exit (in whatever order); elsewhere the guard is
        // leaked, since dropping it would corrupt another thread's state.
        if let Some(guard) = self.guard.take() {
            if self.thread_ended() {
                guard.abandon();
            } else if thread::current().id() == self.thread {
                let _ = OPEN_SCOPES.try_with(|open| open.borrow_mut().retain(|&id| id != self.id));
                drop(guard);
            } else {
                // Dropping it would corrupt another thread's state; a Rust
                // owner doing this is a bug, and logging here could run a
                // host callback from a destructor: abandon quietly.
                guard.abandon();
            }
        }
    }
}
