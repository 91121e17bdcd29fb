//! Library-wide functions: versions, the last error, status names, logging.

use std::ffi::{c_char, c_void};

use super::status::perfopt_status;
use super::types::perfopt_log_callback;
use super::{boundary_plain, last_error_ptr};
use crate::error::Error;
use crate::logging;
use crate::version;

/// "perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)". Static storage; never NULL.
#[no_mangle]
pub extern "C" fn perfopt_version() -> *const c_char {
    // Building the string reads libtorch's CUDA version; nothing here can
    // panic, and a static is valid for the life of the process.
    version::full_version().as_ptr()
}

/// The ABI version of the loaded library; compare with PERFOPT_ABI_VERSION.
#[no_mangle]
pub extern "C" fn perfopt_abi_version() -> u32 {
    version::ABI_VERSION
}

/// The message of the last failed perfopt call on this thread, with its
/// cause chain; NULL after a call that succeeded. After
/// PERFOPT_COMPILE_SKIPPED (not a failure) it says why compilation was
/// skipped. Valid until the next perfopt call on the same thread; a log
/// callback's own calls into perfopt do not change it.
#[no_mangle]
pub extern "C" fn perfopt_last_error() -> *const c_char {
    last_error_ptr()
}

/// The status's name ("PERFOPT_ERR_NULL_ARGUMENT"), or "PERFOPT_UNKNOWN_STATUS"
/// for a value this library does not know. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn perfopt_status_name(status: i32) -> *const c_char {
    usize::try_from(status)
        .ok()
        .and_then(|i| perfopt_status::all().get(i))
        .map_or(c"PERFOPT_UNKNOWN_STATUS", |s| s.name())
        .as_ptr()
}

/// What a status means, in a sentence ("A required pointer argument was
/// NULL."), or "unknown status" for a value this library does not know.
/// Static storage; never NULL.
#[no_mangle]
pub extern "C" fn perfopt_status_message(status: i32) -> *const c_char {
    usize::try_from(status)
        .ok()
        .and_then(|i| perfopt_status::all().get(i))
        .map_or(c"unknown status", |s| s.message())
        .as_ptr()
}

/// Routes perfopt's log records to `callback` for levels up to `max_level`
/// (PERFOPT_LOG_OFF .. PERFOPT_LOG_TRACE). The callback may be called from
/// any thread, with a message valid only during the call, and may call
/// perfopt (records its own calls make are dropped, and the thread's last
/// error is kept across it); perfopt never calls it while holding a lock.
/// Replacing it is a barrier: once this returns, the old callback is never
/// entered again, so its user_data may be freed. Calling this from inside the
/// callback is refused. NULL restores the default: stderr, warnings and errors
/// (max_level is then ignored).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_set_log_callback(
    callback: perfopt_log_callback,
    user_data: *mut c_void,
    max_level: i32,
) -> perfopt_status {
    boundary_plain(|| {
        let level = logging::level_filter(max_level).ok_or_else(|| {
            Error::invalid_argument(format!(
                "max_level is {max_level}; accepted: PERFOPT_LOG_OFF (0) to PERFOPT_LOG_TRACE (5)"
            ))
        })?;
        logging::set_callback(callback.map(|cb| (cb, user_data)), level)
    })
}
