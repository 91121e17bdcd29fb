//! Versions and process-wide settings without libtorch: no CUDA, cuDNN or
//! MPS to set; the thread counts are what the engines start from.

use std::sync::atomic::{AtomicI32, Ordering};

use super::WITHOUT_LIBTORCH;
use crate::error::{Error, ErrorKind, Result};

/// Why a CUDA or MPS device cannot be had, for messages.
pub const NO_CUDA: &str =
    "this perfopt is the build without libtorch, which has no CUDA (its engines run on the CPU)";
pub const NO_MPS: &str =
    "this perfopt is the build without libtorch, which has no MPS (its engines run on the CPU)";

/// No libtorch: reports and the tuning cache say so.
pub fn torch_version() -> &'static str {
    "none (lite build)"
}

fn not_here<T>(what: &str) -> Result<T> {
    Err(Error::new(
        ErrorKind::UnsupportedDevice,
        format!("{what}: {WITHOUT_LIBTORCH}"),
    ))
}

pub fn cuda_runtime_version() -> Result<i64> {
    not_here("the CUDA runtime version")
}

pub fn cudnn_version() -> Result<i64> {
    not_here("the cuDNN version")
}

/// cuDNN's flag: always off, and setting it off is what is already there
/// (numerics' flag guards write back what they read).
pub fn set_cudnn_benchmark(enabled: bool) -> Result<()> {
    match enabled {
        false => Ok(()),
        true => not_here("cudnn.benchmark"),
    }
}

pub fn cudnn_benchmark() -> Result<bool> {
    Ok(false)
}

pub fn set_fp32_precision(_backend: &str, _op: &str, precision: &str) -> Result<()> {
    match precision {
        "ieee" => Ok(()),
        _ => not_here("TF32"),
    }
}

pub fn fp32_precision(_backend: &str, _op: &str) -> Result<String> {
    Ok("ieee".to_string())
}

/// The intra-op count engines start a model at (ONNX Runtime's per session;
/// ExecuTorch's pool is its own): the optimizer's setting, the cores until set.
static THREADS: AtomicI32 = AtomicI32::new(0);
static INTEROP_THREADS: AtomicI32 = AtomicI32::new(0);

/// A count as set (at least 1), or the cores until it is.
fn configured(count: &AtomicI32) -> i32 {
    match count.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
        n => n,
    }
}

pub fn set_num_threads(n: i32) -> Result<()> {
    THREADS.store(n.max(1), Ordering::Relaxed);
    Ok(())
}

pub fn num_threads() -> Result<i32> {
    Ok(configured(&THREADS))
}

pub fn set_num_interop_threads(n: i32) -> Result<()> {
    INTEROP_THREADS.store(n.max(1), Ordering::Relaxed);
    Ok(())
}

pub fn num_interop_threads() -> Result<i32> {
    Ok(configured(&INTEROP_THREADS))
}

/// libtorch's inference mode has nothing to switch here (ONNX Runtime and
/// ExecuTorch record no autograd); the guard keeps the core's code the same.
pub struct InferenceModeGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl InferenceModeGuard {
    pub fn enter() -> Result<Self> {
        Ok(InferenceModeGuard {
            _not_send: std::marker::PhantomData,
        })
    }

    pub fn for_call() -> Result<Self> {
        Self::enter()
    }

    pub fn abandon(self) {}
}

impl Drop for InferenceModeGuard {
    /// Nothing to restore; a guard's end is still where the full build's is.
    fn drop(&mut self) {}
}

pub fn inference_mode_enabled() -> Result<bool> {
    Ok(false)
}

pub fn accelerator_memory_info(index: i32) -> Result<(u64, u64)> {
    not_here(&format!("the memory of device {index}"))
}

pub fn cuda_device_count() -> usize {
    0
}

pub fn mps_available() -> bool {
    false
}
