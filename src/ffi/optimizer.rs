//! perfopt_config_default, perfopt_optimizer_*: the optimizer handle.
#![allow(non_camel_case_types)]

use std::ffi::c_char;
use std::mem::size_of;
use std::sync::Arc;

use super::args::{optional_str, require_out, tri_state, write_out, write_text};
use super::handles::{self, Handle};
use super::types::{perfopt_config, perfopt_status};
use super::{boundary, boundary_void};
use crate::config::{CompileMode, Config};
use crate::device::DeviceRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::optimizer::Optimizer;

/// An optimizer: the device and the settings applied to it. Reference-counted
/// so that scopes (and, later, models) keep it alive.
pub struct perfopt_optimizer {
    pub(crate) inner: Arc<Optimizer>,
}

impl Handle for perfopt_optimizer {
    const KIND: &'static str = "perfopt_optimizer";
}

fn threads(value: i32, name: &str) -> Result<Option<u32>> {
    u32::try_from(value)
        .map(|n| (n > 0).then_some(n))
        .map_err(|_| {
            Error::invalid_argument(format!(
                "`{name}` is {value}; it must be 0 (automatic) or positive"
            ))
        })
}

/// Reads a C config, checking its size first so that nothing past the
/// caller's struct is read.
///
/// # Safety
/// `config` is NULL or points to at least `struct_size` readable bytes.
unsafe fn config_from_c(config: *const perfopt_config) -> Result<Config> {
    if config.is_null() {
        return Ok(Config::default());
    }
    let struct_size = std::ptr::addr_of!((*config).struct_size).read_unaligned();
    let expected = size_of::<perfopt_config>();
    if struct_size as usize != expected {
        return Err(Error::new(
            ErrorKind::StructSize,
            format!(
                "perfopt_config.struct_size is {struct_size}, this library expects {expected}: \
                 fill the struct with perfopt_config_default() from the matching header"
            ),
        ));
    }
    let c = &*config;
    let read_environment = match c.read_environment {
        0 => false,
        1 => true,
        other => {
            return Err(Error::invalid_argument(format!(
                "`read_environment` is {other}; accepted: 0, 1"
            )))
        }
    };
    Ok(Config {
        device: optional_str(c.device, "config.device")?
            .map(str::parse::<DeviceRequest>)
            .transpose()?,
        cudnn_benchmark: tri_state(c.cudnn_benchmark, "config.cudnn_benchmark")?,
        tf32: tri_state(c.tf32, "config.tf32")?,
        cpu_optimization: tri_state(c.cpu_optimization, "config.cpu_optimization")?,
        torch_compile: tri_state(c.torch_compile, "config.torch_compile")?,
        compile_mode: optional_str(c.compile_mode, "config.compile_mode")?
            .map(str::parse::<CompileMode>)
            .transpose()?,
        intra_op_threads: threads(c.intra_op_threads, "config.intra_op_threads")?,
        inter_op_threads: threads(c.inter_op_threads, "config.inter_op_threads")?,
        malloc_tuning: tri_state(c.malloc_tuning, "config.malloc_tuning")?,
        read_environment,
    })
}

/// Fills `config` with the defaults: every setting PERFOPT_AUTO, the device
/// "auto", the environment read, struct_size set.
#[no_mangle]
pub extern "C" fn perfopt_config_default(config: *mut perfopt_config) -> perfopt_status {
    // SAFETY: write_out checks for NULL; otherwise the caller provides a
    // writable perfopt_config.
    boundary(|| unsafe { write_out(config, "config", perfopt_config::default()) })
}

/// Detects the device and applies its settings. `config` NULL means the
/// defaults, then the TRANSLATOR_* variables. `*out` is written on success only.
#[no_mangle]
pub extern "C" fn perfopt_optimizer_new(
    config: *const perfopt_config,
    out: *mut *mut perfopt_optimizer,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        // SAFETY: the caller passes NULL or a config of at least struct_size bytes.
        let config = unsafe { config_from_c(config) }?;
        let optimizer = Optimizer::new(&config)?;
        let handle = handles::register(perfopt_optimizer {
            inner: Arc::new(optimizer),
        });
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees an optimizer; NULL is a no-op. Scopes still open keep what they
/// need alive until they exit. Settings applied to libtorch stay applied.
#[no_mangle]
pub extern "C" fn perfopt_optimizer_free(optimizer: *mut perfopt_optimizer) {
    if optimizer.is_null() {
        return;
    }
    boundary_void(|| {
        // SAFETY: take() only returns handles that are live optimizers.
        match unsafe { handles::take(optimizer, "optimizer") } {
            Ok(boxed) => drop(boxed),
            Err(err) => log::error!("perfopt_optimizer_free: {err}"),
        }
    });
}

/// The optimizer's report as JSON (see the README for the fields): device,
/// memory, threads, each setting as libtorch reads it back now with its
/// source, the environment variables set, and what was skipped and why.
#[no_mangle]
pub extern "C" fn perfopt_optimizer_report(
    optimizer: *const perfopt_optimizer,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        // SAFETY: borrow() checks the handle is live.
        let optimizer = unsafe { handles::borrow(optimizer, "optimizer") }?;
        let report = optimizer.inner.report().to_string();
        // SAFETY: the caller passes a buffer of `len` bytes (or NULL) and a
        // `needed` pointer (or NULL).
        unsafe { write_text(&report, buf, len, needed) }
    })
}

/// The service's batch-size rule for the optimizer's device: CUDA > 16 GiB
/// -> 4, > 8 GiB -> 2, else 1; MPS 2; CPU 1.
#[no_mangle]
pub extern "C" fn perfopt_optimal_batch_size(
    optimizer: *const perfopt_optimizer,
    out: *mut i32,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        // SAFETY: borrow() checks the handle is live.
        let optimizer = unsafe { handles::borrow(optimizer, "optimizer") }?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, "out", optimizer.inner.optimal_batch_size()) }
    })
}
