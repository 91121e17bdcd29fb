//! Versions, devices and process-wide settings (src/cxx/settings.cpp).

use std::ffi::{c_char, c_int, c_void, CStr};

use super::{c_string, check};
use crate::error::Result;

extern "C" {
    fn pshim_torch_version() -> *const c_char;
    fn pshim_cuda_runtime_version(out: *mut i64) -> c_int;
    fn pshim_cudnn_version(out: *mut i64) -> c_int;
    fn pshim_cuda_device_count(out: *mut i64) -> c_int;
    fn pshim_mps_available(out: *mut c_int) -> c_int;
    fn pshim_set_cudnn_benchmark(enabled: c_int) -> c_int;
    fn pshim_get_cudnn_benchmark(out: *mut c_int) -> c_int;
    fn pshim_set_fp32_precision(
        backend: *const c_char,
        op: *const c_char,
        precision: *const c_char,
    ) -> c_int;
    fn pshim_get_fp32_precision(
        backend: *const c_char,
        op: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn pshim_set_num_threads(n: i32) -> c_int;
    fn pshim_get_num_threads(out: *mut i32) -> c_int;
    fn pshim_set_num_interop_threads(n: i32) -> c_int;
    fn pshim_get_num_interop_threads(out: *mut i32) -> c_int;
    fn pshim_inference_mode_enter(guard: *mut *mut c_void) -> c_int;
    fn pshim_inference_mode_exit(guard: *mut c_void) -> c_int;
    fn pshim_inference_mode_abandon(guard: *mut c_void);
    fn pshim_inference_mode_is_enabled(out: *mut c_int) -> c_int;
    fn pshim_accelerator_memory_info(index: i32, free: *mut u64, total: *mut u64) -> c_int;
}

/// Why a CUDA or MPS device cannot be had, for messages.
pub const NO_CUDA: &str = "libtorch sees no CUDA device";
pub const NO_MPS: &str =
    "MPS is not available (it needs Apple silicon and a libtorch built with MPS)";

pub fn torch_version() -> &'static str {
    // SAFETY: returns a pointer to a string literal.
    unsafe { CStr::from_ptr(pshim_torch_version()) }
        .to_str()
        .unwrap_or("unknown")
}

pub fn cuda_runtime_version() -> Result<i64> {
    let mut out = 0i64;
    // SAFETY: `out` is a valid pointer for the duration of the call.
    check(
        unsafe { pshim_cuda_runtime_version(&mut out) },
        "querying the CUDA runtime version",
    )?;
    Ok(out)
}

pub fn cudnn_version() -> Result<i64> {
    let mut out = 0i64;
    // SAFETY: as above.
    check(
        unsafe { pshim_cudnn_version(&mut out) },
        "querying the cuDNN version",
    )?;
    Ok(out)
}

pub fn set_cudnn_benchmark(enabled: bool) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_cudnn_benchmark(enabled as c_int) },
        "setting cuDNN benchmark mode",
    )
}

pub fn cudnn_benchmark() -> Result<bool> {
    let mut out: c_int = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_cudnn_benchmark(&mut out) },
        "reading cuDNN benchmark mode",
    )?;
    Ok(out != 0)
}

/// libtorch's float32 precision for a backend ("cuda", "mkldnn", "generic")
/// and op ("matmul", "conv", "rnn", "all"): "ieee", "tf32", "bf16" or "none".
pub fn set_fp32_precision(backend: &str, op: &str, precision: &str) -> Result<()> {
    let (b, o, p) = (
        c_string(backend, "backend")?,
        c_string(op, "op")?,
        c_string(precision, "precision")?,
    );
    // SAFETY: NUL-terminated strings that outlive the call.
    check(
        unsafe { pshim_set_fp32_precision(b.as_ptr(), o.as_ptr(), p.as_ptr()) },
        &format!("setting the float32 precision of {backend}/{op} to {precision}"),
    )
}

pub fn fp32_precision(backend: &str, op: &str) -> Result<String> {
    let (b, o) = (c_string(backend, "backend")?, c_string(op, "op")?);
    let mut buf = [0 as c_char; 32];
    // SAFETY: the buffer and its length match; the shim NUL-terminates.
    check(
        unsafe { pshim_get_fp32_precision(b.as_ptr(), o.as_ptr(), buf.as_mut_ptr(), buf.len()) },
        &format!("reading the float32 precision of {backend}/{op}"),
    )?;
    // SAFETY: NUL-terminated by the shim.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

pub fn set_num_threads(n: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_num_threads(n) },
        "setting intra-op threads",
    )
}

pub fn num_threads() -> Result<i32> {
    let mut out = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_num_threads(&mut out) },
        "reading intra-op threads",
    )?;
    Ok(out)
}

pub fn set_num_interop_threads(n: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_num_interop_threads(n) },
        "setting inter-op threads",
    )
}

pub fn num_interop_threads() -> Result<i32> {
    let mut out = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_num_interop_threads(&mut out) },
        "reading inter-op threads",
    )?;
    Ok(out)
}

/// An owned `c10::InferenceMode` guard. It is `!Send`: libtorch's inference
/// mode is thread-local, so the guard must be dropped on the thread that made it.
pub struct InferenceModeGuard {
    raw: *mut c_void,
}

impl InferenceModeGuard {
    pub fn enter() -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out pointer; the shim allocates the guard.
        check(
            unsafe { pshim_inference_mode_enter(&mut raw) },
            "entering inference mode",
        )?;
        Ok(InferenceModeGuard { raw })
    }
}

impl InferenceModeGuard {
    /// Inference mode for one call: no new guard when the thread is in it
    /// already (a caller's scope, the service's `with opt.inference():`),
    /// where entering it again changes nothing; the shim's guard is a heap
    /// object, made and freed per call otherwise.
    pub fn for_call() -> Result<Self> {
        if inference_mode_enabled()? {
            return Ok(InferenceModeGuard {
                raw: std::ptr::null_mut(),
            });
        }
        Self::enter()
    }

    /// Releases the guard without restoring anything: for a guard whose
    /// thread has ended (its thread-local state is gone with it).
    pub fn abandon(self) {
        let raw = self.raw;
        std::mem::forget(self);
        if raw.is_null() {
            return;
        }
        // SAFETY: raw came from pshim_inference_mode_enter and is released once;
        // abandon runs no destructor, so no thread's state is touched.
        unsafe { pshim_inference_mode_abandon(raw) }
    }
}

impl Drop for InferenceModeGuard {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return; // for_call found the thread in inference mode already
        }
        // SAFETY: `raw` came from pshim_inference_mode_enter and is freed once.
        // A guard's destructor only restores thread-local flags and cannot fail.
        let _ = unsafe { pshim_inference_mode_exit(self.raw) };
    }
}

pub fn inference_mode_enabled() -> Result<bool> {
    let mut out: c_int = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_inference_mode_is_enabled(&mut out) },
        "reading inference mode",
    )?;
    Ok(out != 0)
}

/// (free, total) bytes of an accelerator device, from libtorch's allocator.
pub fn accelerator_memory_info(index: i32) -> Result<(u64, u64)> {
    let (mut free, mut total) = (0u64, 0u64);
    // SAFETY: valid out pointers.
    check(
        unsafe { pshim_accelerator_memory_info(index, &mut free, &mut total) },
        &format!("reading the memory of device {index}"),
    )?;
    Ok((free, total))
}

/// CUDA devices libtorch can see; 0 without CUDA (never panics, unlike
/// tch's device_count on a CUDA error).
pub fn cuda_device_count() -> usize {
    let mut out = 0i64;
    // SAFETY: valid out pointer.
    let status = unsafe { pshim_cuda_device_count(&mut out) };
    if check(status, "counting CUDA devices").is_err() {
        return 0;
    }
    usize::try_from(out).unwrap_or(0)
}

/// Whether MPS (Apple's GPU) is available to libtorch.
pub fn mps_available() -> bool {
    let mut out: c_int = 0;
    // SAFETY: valid out pointer.
    let status = unsafe { pshim_mps_available(&mut out) };
    check(status, "probing MPS").is_ok() && out != 0
}
