//! The C types of the ABI: status codes, the config struct, constants.
//! cbindgen turns this file's public items into include/perfopt.h.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void, CStr};

use crate::error::ErrorKind;

/// perfopt's version, as macros. perfopt_version() says the same at run time.
pub const PERFOPT_VERSION_MAJOR: u32 = 0;
pub const PERFOPT_VERSION_MINOR: u32 = 1;
pub const PERFOPT_VERSION_PATCH: u32 = 0;

/// The ABI this header describes. A program compares it with
/// perfopt_abi_version() at start-up; the bindings refuse a mismatch.
pub const PERFOPT_ABI_VERSION: u32 = 2;

/// A host's log function: level (PERFOPT_LOG_ERROR .. PERFOPT_LOG_TRACE), a
/// NUL-terminated message valid only during the call, and the pointer the host
/// registered. May be called from any thread.
pub type perfopt_log_callback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

/// A tri-state setting left to the environment, then the default.
pub const PERFOPT_AUTO: i32 = -1;

/// Log levels for perfopt_set_log_callback, as in Rust's `log` crate.
pub const PERFOPT_LOG_OFF: i32 = 0;
pub const PERFOPT_LOG_ERROR: i32 = 1;
pub const PERFOPT_LOG_WARN: i32 = 2;
pub const PERFOPT_LOG_INFO: i32 = 3;
pub const PERFOPT_LOG_DEBUG: i32 = 4;
pub const PERFOPT_LOG_TRACE: i32 = 5;

/// Every call that can fail returns one of these; 0 is success. Values are
/// part of the ABI: new codes are appended, never renumbered.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum perfopt_status {
    PERFOPT_OK = 0,
    /// A required pointer argument was NULL.
    PERFOPT_ERR_NULL_ARGUMENT = 1,
    /// An argument is out of range or names something unknown.
    PERFOPT_ERR_INVALID_ARGUMENT = 2,
    /// A string argument is not valid UTF-8.
    PERFOPT_ERR_INVALID_UTF8 = 3,
    /// An options struct's struct_size does not match this library.
    PERFOPT_ERR_STRUCT_SIZE = 4,
    /// A handle that is not live: freed, exited already, or never made by perfopt.
    PERFOPT_ERR_INVALID_HANDLE = 5,
    /// A TRANSLATOR_* environment variable does not parse.
    PERFOPT_ERR_ENVIRONMENT = 6,
    PERFOPT_ERR_FILE_NOT_FOUND = 7,
    PERFOPT_ERR_LOAD_FAILED = 8,
    /// The requested device (or feature) is not available in this process.
    PERFOPT_ERR_UNSUPPORTED_DEVICE = 9,
    /// A device index that does not exist.
    PERFOPT_ERR_DEVICE_NOT_FOUND = 10,
    /// The device failed (a CUDA error).
    PERFOPT_ERR_DEVICE = 11,
    PERFOPT_ERR_OUT_OF_MEMORY = 12,
    /// A thread-bound object was used on another thread.
    PERFOPT_ERR_WRONG_THREAD = 13,
    /// Inference scopes exited out of last-in-first-out order.
    PERFOPT_ERR_SCOPE_ORDER = 14,
    /// The output buffer is too small; *needed says how large it must be.
    PERFOPT_ERR_BUFFER_TOO_SMALL = 15,
    /// libtorch raised an error.
    PERFOPT_ERR_TORCH = 16,
    /// A bug in perfopt was caught at the boundary (a Rust panic).
    PERFOPT_ERR_PANIC = 17,
    PERFOPT_ERR_INTERNAL = 18,
    /// The model file is a damaged or truncated archive.
    PERFOPT_ERR_MODEL_CORRUPT = 19,
    /// Not a failure: compilation was skipped on this device (MPS, as the
    /// service does) and the model stays usable as loaded. The message says why.
    PERFOPT_COMPILE_SKIPPED = 20,
}

static ALL_STATUSES: [perfopt_status; 21] = [
    perfopt_status::PERFOPT_OK,
    perfopt_status::PERFOPT_ERR_NULL_ARGUMENT,
    perfopt_status::PERFOPT_ERR_INVALID_ARGUMENT,
    perfopt_status::PERFOPT_ERR_INVALID_UTF8,
    perfopt_status::PERFOPT_ERR_STRUCT_SIZE,
    perfopt_status::PERFOPT_ERR_INVALID_HANDLE,
    perfopt_status::PERFOPT_ERR_ENVIRONMENT,
    perfopt_status::PERFOPT_ERR_FILE_NOT_FOUND,
    perfopt_status::PERFOPT_ERR_LOAD_FAILED,
    perfopt_status::PERFOPT_ERR_UNSUPPORTED_DEVICE,
    perfopt_status::PERFOPT_ERR_DEVICE_NOT_FOUND,
    perfopt_status::PERFOPT_ERR_DEVICE,
    perfopt_status::PERFOPT_ERR_OUT_OF_MEMORY,
    perfopt_status::PERFOPT_ERR_WRONG_THREAD,
    perfopt_status::PERFOPT_ERR_SCOPE_ORDER,
    perfopt_status::PERFOPT_ERR_BUFFER_TOO_SMALL,
    perfopt_status::PERFOPT_ERR_TORCH,
    perfopt_status::PERFOPT_ERR_PANIC,
    perfopt_status::PERFOPT_ERR_INTERNAL,
    perfopt_status::PERFOPT_ERR_MODEL_CORRUPT,
    perfopt_status::PERFOPT_COMPILE_SKIPPED,
];

impl perfopt_status {
    /// Every code, in value order.
    pub fn all() -> &'static [perfopt_status] {
        &ALL_STATUSES
    }

    /// The code's C name, NUL-terminated for perfopt_status_name().
    pub fn name(self) -> &'static CStr {
        use perfopt_status::*;
        match self {
            PERFOPT_OK => c"PERFOPT_OK",
            PERFOPT_ERR_NULL_ARGUMENT => c"PERFOPT_ERR_NULL_ARGUMENT",
            PERFOPT_ERR_INVALID_ARGUMENT => c"PERFOPT_ERR_INVALID_ARGUMENT",
            PERFOPT_ERR_INVALID_UTF8 => c"PERFOPT_ERR_INVALID_UTF8",
            PERFOPT_ERR_STRUCT_SIZE => c"PERFOPT_ERR_STRUCT_SIZE",
            PERFOPT_ERR_INVALID_HANDLE => c"PERFOPT_ERR_INVALID_HANDLE",
            PERFOPT_ERR_ENVIRONMENT => c"PERFOPT_ERR_ENVIRONMENT",
            PERFOPT_ERR_FILE_NOT_FOUND => c"PERFOPT_ERR_FILE_NOT_FOUND",
            PERFOPT_ERR_LOAD_FAILED => c"PERFOPT_ERR_LOAD_FAILED",
            PERFOPT_ERR_UNSUPPORTED_DEVICE => c"PERFOPT_ERR_UNSUPPORTED_DEVICE",
            PERFOPT_ERR_DEVICE_NOT_FOUND => c"PERFOPT_ERR_DEVICE_NOT_FOUND",
            PERFOPT_ERR_DEVICE => c"PERFOPT_ERR_DEVICE",
            PERFOPT_ERR_OUT_OF_MEMORY => c"PERFOPT_ERR_OUT_OF_MEMORY",
            PERFOPT_ERR_WRONG_THREAD => c"PERFOPT_ERR_WRONG_THREAD",
            PERFOPT_ERR_SCOPE_ORDER => c"PERFOPT_ERR_SCOPE_ORDER",
            PERFOPT_ERR_BUFFER_TOO_SMALL => c"PERFOPT_ERR_BUFFER_TOO_SMALL",
            PERFOPT_ERR_TORCH => c"PERFOPT_ERR_TORCH",
            PERFOPT_ERR_PANIC => c"PERFOPT_ERR_PANIC",
            PERFOPT_ERR_INTERNAL => c"PERFOPT_ERR_INTERNAL",
            PERFOPT_ERR_MODEL_CORRUPT => c"PERFOPT_ERR_MODEL_CORRUPT",
            PERFOPT_COMPILE_SKIPPED => c"PERFOPT_COMPILE_SKIPPED",
        }
    }
}

impl From<ErrorKind> for perfopt_status {
    fn from(kind: ErrorKind) -> Self {
        use perfopt_status::*;
        match kind {
            ErrorKind::NullArgument => PERFOPT_ERR_NULL_ARGUMENT,
            ErrorKind::InvalidArgument => PERFOPT_ERR_INVALID_ARGUMENT,
            ErrorKind::InvalidUtf8 => PERFOPT_ERR_INVALID_UTF8,
            ErrorKind::StructSize => PERFOPT_ERR_STRUCT_SIZE,
            ErrorKind::InvalidHandle => PERFOPT_ERR_INVALID_HANDLE,
            ErrorKind::Environment => PERFOPT_ERR_ENVIRONMENT,
            ErrorKind::FileNotFound => PERFOPT_ERR_FILE_NOT_FOUND,
            ErrorKind::LoadFailed => PERFOPT_ERR_LOAD_FAILED,
            ErrorKind::UnsupportedDevice => PERFOPT_ERR_UNSUPPORTED_DEVICE,
            ErrorKind::DeviceNotFound => PERFOPT_ERR_DEVICE_NOT_FOUND,
            ErrorKind::Device => PERFOPT_ERR_DEVICE,
            ErrorKind::OutOfMemory => PERFOPT_ERR_OUT_OF_MEMORY,
            ErrorKind::WrongThread => PERFOPT_ERR_WRONG_THREAD,
            ErrorKind::ScopeOrder => PERFOPT_ERR_SCOPE_ORDER,
            ErrorKind::BufferTooSmall => PERFOPT_ERR_BUFFER_TOO_SMALL,
            ErrorKind::Torch => PERFOPT_ERR_TORCH,
            ErrorKind::Panic => PERFOPT_ERR_PANIC,
            ErrorKind::Internal => PERFOPT_ERR_INTERNAL,
            ErrorKind::ModelCorrupt => PERFOPT_ERR_MODEL_CORRUPT,
            ErrorKind::CompileSkipped => PERFOPT_COMPILE_SKIPPED,
        }
    }
}

/// Options for perfopt_optimizer_new. Fill with perfopt_config_default(),
/// then change fields. Fields are only ever appended; struct_size tells the
/// library which layout the caller was compiled against.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct perfopt_config {
    /// sizeof(perfopt_config); perfopt_config_default() sets it.
    pub struct_size: u32,
    /// 1: read the TRANSLATOR_* variables for settings left PERFOPT_AUTO (default); 0: ignore them.
    pub read_environment: i32,
    /// "auto" (or NULL), "cpu", "cuda", "cuda:N" or "mps". Copied during the call.
    pub device: *const c_char,
    /// PERFOPT_AUTO, 0 or 1. Default 1; TRANSLATOR_CUDNN_BENCHMARK. CUDA only.
    pub cudnn_benchmark: i32,
    /// PERFOPT_AUTO, 0 or 1: TF32 for cuBLAS matmul and cuDNN conv/rnn. Default 1. CUDA only.
    pub tf32: i32,
    /// PERFOPT_AUTO, 0 or 1: thread tuning and the OMP/MKL variables on CPU. Default 1;
    /// TRANSLATOR_CPU_OPTIMIZATION.
    pub cpu_optimization: i32,
    /// PERFOPT_AUTO, 0 or 1: whether a NULL compile mode compiles. Default 1; TRANSLATOR_TORCH_COMPILE.
    pub torch_compile: i32,
    /// NULL (auto), "none", "default", "reduce-overhead" or "max-autotune". Default
    /// "reduce-overhead"; TRANSLATOR_COMPILE_MODE. Copied during the call.
    pub compile_mode: *const c_char,
    /// Intra-op threads; 0 = automatic (all cores when CPU optimization applies).
    pub intra_op_threads: i32,
    /// Inter-op threads; 0 = automatic. libtorch accepts this once per process.
    pub inter_op_threads: i32,
    /// PERFOPT_AUTO, 0 or 1: glibc malloc's mmap and trim thresholds raised so that
    /// each forward pass reuses the heap instead of faulting fresh pages in. Default:
    /// on when CPU optimization applies (CPU device); never over the user's own
    /// MALLOC_*_ / GLIBC_TUNABLES settings. Linux with glibc only. (ABI 2)
    pub malloc_tuning: i32,
}

impl Default for perfopt_config {
    fn default() -> Self {
        perfopt_config {
            struct_size: std::mem::size_of::<perfopt_config>() as u32,
            read_environment: 1,
            device: std::ptr::null(),
            cudnn_benchmark: PERFOPT_AUTO,
            tf32: PERFOPT_AUTO,
            cpu_optimization: PERFOPT_AUTO,
            torch_compile: PERFOPT_AUTO,
            compile_mode: std::ptr::null(),
            intra_op_threads: 0,
            inter_op_threads: 0,
            malloc_tuning: PERFOPT_AUTO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version;

    #[test]
    fn header_constants_match_the_crate() {
        assert_eq!(PERFOPT_ABI_VERSION, version::ABI_VERSION);
        let expected =
            format!("{PERFOPT_VERSION_MAJOR}.{PERFOPT_VERSION_MINOR}.{PERFOPT_VERSION_PATCH}");
        assert_eq!(expected, version::PERFOPT_VERSION);
    }

    #[test]
    fn status_values_are_dense_and_named() {
        for (i, status) in perfopt_status::all().iter().enumerate() {
            assert_eq!(*status as i32, i as i32);
            assert!(status.name().to_str().unwrap().starts_with("PERFOPT_"));
        }
    }
}
