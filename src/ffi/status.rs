//! The status codes: this enum is the one table. build.rs reads it and
//! generates the status names, their messages, the list of all codes and the
//! core's `ErrorKind` (one kind per code but OK) with its mapping, so a code
//! is added here and nowhere else. Each variant's doc comment is its message
//! (perfopt_status_message). Values are part of the ABI: new codes are
//! appended, never renumbered.
#![allow(non_camel_case_types)]

/// Every call that can fail returns one of these; 0 is success.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum perfopt_status {
    /// Success.
    PERFOPT_OK = 0,
    /// A required pointer argument was NULL.
    PERFOPT_ERR_NULL_ARGUMENT = 1,
    /// An argument is out of range or names something unknown.
    PERFOPT_ERR_INVALID_ARGUMENT = 2,
    /// A string argument is not valid UTF-8.
    PERFOPT_ERR_INVALID_UTF8 = 3,
    /// An options struct's struct_size is not one this library knows.
    PERFOPT_ERR_STRUCT_SIZE = 4,
    /// A handle that is not live: freed, exited already, or never made by perfopt.
    PERFOPT_ERR_INVALID_HANDLE = 5,
    /// A TRANSLATOR_* environment variable does not parse.
    PERFOPT_ERR_ENVIRONMENT = 6,
    /// The model file does not exist.
    PERFOPT_ERR_FILE_NOT_FOUND = 7,
    /// The model file exists but cannot be loaded.
    PERFOPT_ERR_LOAD_FAILED = 8,
    /// The requested device (or feature) is not available in this process.
    PERFOPT_ERR_UNSUPPORTED_DEVICE = 9,
    /// A device index that does not exist.
    PERFOPT_ERR_DEVICE_NOT_FOUND = 10,
    /// The device failed (a CUDA error).
    PERFOPT_ERR_DEVICE = 11,
    /// Host or device memory ran out.
    PERFOPT_ERR_OUT_OF_MEMORY = 12,
    /// A thread-bound object was used on another thread.
    PERFOPT_ERR_WRONG_THREAD = 13,
    /// Inference scopes exited out of last-in-first-out order.
    PERFOPT_ERR_SCOPE_ORDER = 14,
    /// The output buffer is too small; *needed (or *n_outputs) says how large it must be.
    PERFOPT_ERR_BUFFER_TOO_SMALL = 15,
    /// The engine running the model (libtorch, ONNX Runtime) raised an error.
    PERFOPT_ERR_TORCH = 16,
    /// A bug in perfopt was caught at the boundary (a Rust panic).
    PERFOPT_ERR_PANIC = 17,
    /// An internal error in perfopt.
    PERFOPT_ERR_INTERNAL = 18,
    /// The model file is a damaged or truncated archive.
    PERFOPT_ERR_MODEL_CORRUPT = 19,
    /// Not a failure: compilation was skipped on this device (MPS, as the
    /// service does) and the model stays usable as loaded; perfopt_last_error() says why.
    PERFOPT_COMPILE_SKIPPED = 20,
    /// The model path is a named pipe, a socket, a device, or a directory that is not a bundle (a folder perfopt.export wrote), not a regular file.
    PERFOPT_ERR_NOT_A_FILE = 21,
    /// The model is valid but perfopt cannot run it as it is (a cpp-only AOTInductor package, a torch.export program without compiled code, a result perfopt cannot pass on such as a dict).
    PERFOPT_ERR_UNSUPPORTED_MODEL = 22,
    /// This process was forked after perfopt ran a model: libtorch's OpenMP pool would hang here; create perfopt objects after the fork, or spawn instead.
    PERFOPT_ERR_FORKED_CHILD = 23,
}

include!(concat!(env!("OUT_DIR"), "/status_table.rs"));

impl perfopt_status {
    /// Every code, in value order.
    pub fn all() -> &'static [perfopt_status] {
        &ALL_STATUSES
    }

    /// The code's C name, NUL-terminated for perfopt_status_name().
    pub fn name(self) -> &'static std::ffi::CStr {
        STATUS_NAMES[self as usize]
    }

    /// What the code means, NUL-terminated for perfopt_status_message().
    pub fn message(self) -> &'static std::ffi::CStr {
        STATUS_MESSAGES[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_are_dense_named_and_explained() {
        for (i, status) in perfopt_status::all().iter().enumerate() {
            assert_eq!(*status as i32, i as i32);
            assert!(status.name().to_str().unwrap().starts_with("PERFOPT_"));
            assert!(!status.message().to_bytes().is_empty());
        }
        assert_eq!(
            perfopt_status::PERFOPT_ERR_FORKED_CHILD.name(),
            c"PERFOPT_ERR_FORKED_CHILD"
        );
    }
}
