//! Safe Rust over the C++ shim (src/cxx/shim.h). One file per concern, each
//! the twin of the C++ file of the same name: `settings` (versions, devices,
//! process-wide settings), `tensor` (DLPack, storage), `values` (argument and
//! result trees), `script` (TorchScript), `aoti` (AOTInductor packages),
//! `memory` (allocator figures), `cuda` (streams and graphs), `threads` (a
//! thread count per call).
//!
//! Every wrapper turns the shim's status and thread-local message into an
//! [`Error`].

pub(crate) mod aoti;
pub(crate) mod cuda;
pub(crate) mod memory;
pub(crate) mod script;
pub(crate) mod script_state;
pub(crate) mod settings;
pub(crate) mod tensor;
pub(crate) mod threads;
pub(crate) mod values;

pub use tch::{Device, Kind, Tensor};

use std::ffi::{c_char, c_int, CStr, CString};

use crate::error::{Error, ErrorKind, Result};

const PSHIM_OK: c_int = 0;
const PSHIM_OUT_OF_MEMORY: c_int = 2;
const PSHIM_UNSUPPORTED: c_int = 4;
const PSHIM_ARGUMENT: c_int = 5;
const PSHIM_UNSUPPORTED_RESULT: c_int = 6;

extern "C" {
    fn pshim_last_error() -> *const c_char;
}

/// Converts a shim status into a Result, reading the message while it is
/// still valid (the next shim call on this thread replaces it).
pub(crate) fn check(status: c_int, what: &str) -> Result<()> {
    check_with(status, pshim_last_error, what)
}

/// [`check`] for a library with its own last error (libperfopt_cuda.so.0).
pub(crate) fn check_with(
    status: c_int,
    last_error: unsafe extern "C" fn() -> *const c_char,
    what: &str,
) -> Result<()> {
    if status == PSHIM_OK {
        return Ok(());
    }
    // SAFETY: last_error returns a pointer to a thread-local std::string that
    // lives until the next call into its library on this thread; copied at once.
    let message = unsafe { CStr::from_ptr(last_error()) }
        .to_string_lossy()
        .into_owned();
    let kind = match status {
        PSHIM_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
        PSHIM_UNSUPPORTED => ErrorKind::UnsupportedDevice,
        PSHIM_ARGUMENT => ErrorKind::InvalidArgument,
        PSHIM_UNSUPPORTED_RESULT => ErrorKind::UnsupportedModel,
        _ => ErrorKind::Torch,
    };
    Err(Error::new(kind, message).context(what.to_string()))
}

/// A path or name for the shim: a NUL inside is the caller's error.
pub(crate) fn c_string(value: &str, what: &str) -> Result<CString> {
    CString::new(value)
        .map_err(|_| Error::invalid_argument(format!("{what} {value:?} contains a NUL byte")))
}

/// Reads a JSON text the shim writes with the (buf, len, needed) convention.
pub(crate) fn read_text(
    what: &str,
    mut call: impl FnMut(*mut c_char, usize, *mut usize) -> c_int,
) -> Result<String> {
    let mut size = 4096usize;
    loop {
        let mut buf = vec![0u8; size];
        let mut needed = 0usize;
        check(call(buf.as_mut_ptr().cast(), size, &mut needed), what)?;
        if needed <= size {
            let end = needed.saturating_sub(1);
            buf.truncate(end);
            return String::from_utf8(buf)
                .map_err(|_| Error::new(ErrorKind::Internal, format!("{what}: not UTF-8")));
        }
        size = needed;
    }
}

/// The shim's device code: 0 CPU, 1 CUDA, 2 MPS.
pub(crate) fn device_code(device: tch::Device) -> (c_int, c_int) {
    match device {
        tch::Device::Cuda(i) => (1, i as c_int),
        tch::Device::Mps => (2, 0),
        _ => (0, 0),
    }
}
