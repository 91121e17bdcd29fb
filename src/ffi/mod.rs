//! The C ABI: a thin skin over the safe core. Each exported function checks
//! and converts its arguments, calls safe Rust, and converts the result, all
//! inside [`boundary`], which catches panics and records the error message.
//!
//! Handles: a `const` handle may be shared across threads (run, call,
//! reports, warm-up, batching); a call always finishes on its own reference
//! to the object, so a free racing it cannot pull the object away.

// Exported functions take raw pointers because C hands them over; they are
// `extern "C" fn`, not `unsafe fn`, since the contract lives in the header and
// every pointer is checked here (NULL, live handle) before it is used.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod args;
pub mod dlpack;
pub mod handles;
pub mod library;
pub mod model;
pub mod model_report;
pub mod model_run;
pub mod optimizer;
pub mod scope;
pub mod status;
pub mod types;
pub mod value;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind, Result};
use crate::last_error;
use status::perfopt_status;

pub(crate) fn last_error_ptr() -> *const std::ffi::c_char {
    last_error::pointer()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

fn run_boundary(check_fork: bool, body: impl FnOnce() -> Result<()>) -> perfopt_status {
    last_error::clear();
    crate::logging::install();
    let guarded = || {
        if check_fork {
            crate::fork::check()?;
        }
        body()
    };
    let outcome = catch_unwind(AssertUnwindSafe(guarded));
    let (status, message) = match outcome {
        Ok(Ok(())) => return perfopt_status::PERFOPT_OK,
        Ok(Err(err)) => (err.kind().into(), err.to_string()),
        Err(payload) => (
            perfopt_status::PERFOPT_ERR_PANIC,
            Error::new(
                ErrorKind::Panic,
                format!(
                    "internal error (a bug in perfopt, please report it): {}",
                    panic_message(payload.as_ref())
                ),
            )
            .to_string(),
        ),
    };
    // Logged before the message is set: a log callback's own calls would
    // otherwise clear it (the bridge keeps it across the callback too).
    if status == perfopt_status::PERFOPT_ERR_PANIC {
        log::error!("{message}");
    } else {
        log::debug!("call failed: {message}");
    }
    last_error::set(message);
    status
}

/// The one boundary every exported function that touches libtorch goes
/// through: clears the last error, refuses a forked child (see fork.rs), runs
/// `body`, and turns an error or a panic into a status code and a message. A
/// Rust panic never unwinds into C.
pub(crate) fn boundary(body: impl FnOnce() -> Result<()>) -> perfopt_status {
    run_boundary(true, body)
}

/// As [`boundary`], for calls that never touch libtorch (filling option
/// structs, logging): they work in a forked child too.
pub(crate) fn boundary_plain(body: impl FnOnce() -> Result<()>) -> perfopt_status {
    run_boundary(false, body)
}

/// For functions that cannot report a status (`*_free`): a panic is logged
/// and swallowed. Frees work in a forked child (they run no model).
pub(crate) fn boundary_void(body: impl FnOnce()) {
    let _ = run_boundary(false, || {
        body();
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn boundary_turns_panics_and_errors_into_statuses() {
        let status = boundary(|| panic!("boom"));
        assert_eq!(status, perfopt_status::PERFOPT_ERR_PANIC);
        // SAFETY: set by the failed call above, valid until the next call.
        let message = unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap();
        assert!(message.contains("boom"), "{message}");

        let status = boundary(|| Err(Error::null_argument("out")));
        assert_eq!(status, perfopt_status::PERFOPT_ERR_NULL_ARGUMENT);

        assert_eq!(boundary(|| Ok(())), perfopt_status::PERFOPT_OK);
        assert!(last_error_ptr().is_null());
    }
}
