//! perfopt_config_default, perfopt_optimizer_*: the optimizer handle.
#![allow(non_camel_case_types)]

use std::ffi::c_char;
use std::sync::Arc;

use super::args::{
    init_size, optional_str, read_prefix, require_out, struct_size, tri_state, write_out,
    write_prefix, write_text, zero_tail,
};
use super::handles::{self, Handle};
use super::status::perfopt_status;
use super::types::{config_sizes, perfopt_config};
use super::{boundary, boundary_plain, boundary_void};
use crate::config::{CompileMode, Config};
use crate::device::DeviceRequest;
use crate::error::{Error, Result};
use crate::optimizer::Optimizer;

/// An optimizer: the device and the settings applied to it. Models and
/// scopes keep it alive.
pub struct perfopt_optimizer {
    _private: [u8; 0],
}

impl Handle for perfopt_optimizer {
    type Object = Optimizer;
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
/// caller's struct is read; an older layout gets defaults for what it lacks.
///
/// # Safety
/// `config` is NULL or points to at least `struct_size` readable bytes.
unsafe fn config_from_c(config: *const perfopt_config) -> Result<Config> {
    if config.is_null() {
        return Ok(Config::default());
    }
    // SAFETY: non-NULL; the size is checked against the known layouts before
    // more than its first field is read.
    let c = unsafe {
        let size = struct_size(config, &config_sizes(), "perfopt_config")?;
        read_prefix(config, size, perfopt_config::default())
    };
    let c = &c;
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
        // SAFETY: NULL or NUL-terminated strings (the caller's contract).
        device: unsafe { optional_str(c.device, "config.device") }?
            .map(str::parse::<DeviceRequest>)
            .transpose()?,
        cudnn_benchmark: tri_state(c.cudnn_benchmark, "config.cudnn_benchmark")?,
        tf32: tri_state(c.tf32, "config.tf32")?,
        cpu_optimization: tri_state(c.cpu_optimization, "config.cpu_optimization")?,
        torch_compile: tri_state(c.torch_compile, "config.torch_compile")?,
        // SAFETY: as above.
        compile_mode: unsafe { optional_str(c.compile_mode, "config.compile_mode") }?
            .map(str::parse::<CompileMode>)
            .transpose()?,
        intra_op_threads: threads(c.intra_op_threads, "config.intra_op_threads")?,
        inter_op_threads: threads(c.inter_op_threads, "config.inter_op_threads")?,
        malloc_tuning: tri_state(c.malloc_tuning, "config.malloc_tuning")?,
        // SAFETY: as above.
        onnxruntime_library: unsafe {
            optional_str(c.onnxruntime_library, "config.onnxruntime_library")
        }?
        .map(str::to_string),
        // SAFETY: as above.
        tuning_cache_dir: match unsafe {
            optional_str(c.tuning_cache_dir, "config.tuning_cache_dir")
        }? {
            Some("") => {
                return Err(Error::invalid_argument(
                    "config.tuning_cache_dir is an empty string; pass NULL to remember nothing",
                ))
            }
            dir => dir.map(str::to_string),
        },
        read_environment,
    })
}

/// Fills `config` with the defaults: every setting PERFOPT_AUTO, the device
/// "auto", the environment read, struct_size set. Writes this header's
/// struct; a program that may load a newer library uses perfopt_config_init.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_config_default(config: *mut perfopt_config) -> perfopt_status {
    // SAFETY: write_out checks for NULL; otherwise the caller provides a
    // writable perfopt_config.
    boundary_plain(|| unsafe { write_out(config, "config", perfopt_config::default()) })
}

/// Fills the first `struct_size` bytes of `config` with the defaults: pass
/// sizeof(perfopt_config) of the header the program was built with (this
/// library's size or an earlier ABI's; a newer header's larger size, up to
/// 4096 bytes, has its bytes past this library's struct zeroed).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_config_init(
    config: *mut perfopt_config,
    struct_size: usize,
) -> perfopt_status {
    boundary_plain(|| {
        require_out(config, "config")?;
        let (size, zero) =
            init_size::<perfopt_config>(struct_size, &config_sizes(), "perfopt_config")?;
        if zero {
            // SAFETY: a newer header's struct: struct_size bytes (the caller's contract).
            unsafe { zero_tail(config, size, struct_size) };
        }
        let defaults = perfopt_config {
            struct_size: struct_size as u32,
            ..perfopt_config::default()
        };
        // SAFETY: the caller's struct has at least `size` bytes, a known layout.
        unsafe { write_prefix(config, size, defaults) };
        Ok(())
    })
}

/// Detects the device and applies its settings. `config` NULL means the
/// defaults, then the TRANSLATOR_* variables. `*out` is written on success only.
#[must_use]
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
        let handle = handles::register::<perfopt_optimizer>(Arc::new(optimizer));
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees an optimizer; NULL is a no-op. Models and scopes still open keep
/// what they need alive. Settings applied to libtorch stay applied.
#[no_mangle]
pub extern "C" fn perfopt_optimizer_free(optimizer: *mut perfopt_optimizer) {
    if optimizer.is_null() {
        return;
    }
    boundary_void(|| match handles::release(optimizer, "optimizer") {
        Ok(optimizer) => drop(optimizer),
        Err(err) => log::error!("perfopt_optimizer_free: {err}"),
    });
}

/// The optimizer's report as JSON (see the README for the fields): device,
/// memory, threads, each setting as libtorch reads it back now with its
/// source, the environment variables set, and what was skipped and why.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_optimizer_report(
    optimizer: *const perfopt_optimizer,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        let optimizer = handles::get(optimizer, "optimizer")?;
        let report = optimizer.report().to_string();
        // SAFETY: the caller passes a buffer of `len` bytes (or NULL) and a
        // `needed` pointer (or NULL).
        unsafe { write_text(&report, buf, len, needed) }
    })
}

/// The service's batch-size rule for the optimizer's device: CUDA > 16 GiB
/// -> 4, > 8 GiB -> 2, else 1; MPS 2; CPU 1.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_optimal_batch_size(
    optimizer: *const perfopt_optimizer,
    out: *mut i32,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        let optimizer = handles::get(optimizer, "optimizer")?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, "out", optimizer.optimal_batch_size()) }
    })
}
