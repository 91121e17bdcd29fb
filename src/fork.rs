//! fork() after libtorch has run: GNU OpenMP's thread pool does not survive
//! a fork, and a child that runs a model then waits forever in an OpenMP
//! barrier. perfopt notes the first model run and, from then on, marks a
//! forked child so that its calls fail at once with a status that says what
//! to do, instead of hanging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::error::{Error, ErrorKind, Result};

static USED: AtomicBool = AtomicBool::new(false);
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

extern "C" fn in_child() {
    // Only an atomic store: this runs in the child right after fork().
    if USED.load(Ordering::Relaxed) {
        FORKED_CHILD.store(true, Ordering::Relaxed);
    }
}

/// Called before perfopt runs libtorch work (a model's method): from here
/// on, a forked child is refused.
pub fn mark_used() {
    if !USED.load(Ordering::Relaxed) {
        REGISTER.call_once(|| {
            // SAFETY: registers a handler that only stores an atomic flag.
            unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        });
        USED.store(true, Ordering::Relaxed);
    }
}

/// Fails in a child forked after perfopt ran a model.
pub fn check() -> Result<()> {
    if FORKED_CHILD.load(Ordering::Relaxed) {
        return Err(Error::new(
            ErrorKind::ForkedChild,
            "this process was forked after perfopt ran a model in its parent: libtorch's OpenMP \
             thread pool does not survive fork() and a model run here would hang. Create perfopt \
             objects in the child only when the parent never ran a model, or start workers with \
             spawn (Python: multiprocessing.set_start_method(\"spawn\")) or a fresh process",
        ));
    }
    Ok(())
}
