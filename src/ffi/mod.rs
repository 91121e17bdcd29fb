//! The C ABI: a thin skin over the safe core. Each exported function checks
//! and converts its arguments, calls safe Rust, and converts the result, all
//! inside [`boundary`], which catches panics and records the error message.

// Exported functions take raw pointers because C hands them over; they are
// `extern "C" fn`, not `unsafe fn`, since the contract lives in the header and
// every pointer is checked here (NULL, live handle) before it is used.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod args;
pub mod dlpack;
pub mod handles;
pub mod library;
pub mod model;
pub mod optimizer;
pub mod scope;
pub mod types;

use std::any::Any;
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind, Result};
use types::perfopt_status;

thread_local! {
    /// The message of the last failed call on this thread, NULL after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

pub(crate) fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|slot| {
        slot.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |message| message.as_ptr())
    })
}

fn set_last_error(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(message));
}

fn clear_last_error() {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = None);
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

/// The one boundary every exported function goes through: clears the last
/// error, runs `body`, and turns an error or a panic into a status code and
/// a message. A Rust panic never unwinds into C.
pub(crate) fn boundary(body: impl FnOnce() -> Result<()>) -> perfopt_status {
    clear_last_error();
    crate::logging::install();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => perfopt_status::PERFOPT_OK,
        Ok(Err(err)) => {
            log::debug!("call failed: {err}");
            set_last_error(err.to_string());
            err.kind().into()
        }
        Err(payload) => {
            let err = Error::new(
                ErrorKind::Panic,
                format!(
                    "internal error (a bug in perfopt, please report it): {}",
                    panic_message(payload.as_ref())
                ),
            );
            log::error!("{err}");
            set_last_error(err.to_string());
            perfopt_status::PERFOPT_ERR_PANIC
        }
    }
}

/// For functions that cannot report a status (`*_free`): a panic is logged
/// and swallowed.
pub(crate) fn boundary_void(body: impl FnOnce()) {
    let _ = boundary(|| {
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
