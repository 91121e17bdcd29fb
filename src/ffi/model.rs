//! perfopt_model_*: the model handle, its options, loading, compiling and
//! batch dimensions (running: model_run.rs; reports: model_report.rs).
#![allow(non_camel_case_types)]

use std::ffi::c_char;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

use super::args::{
    init_size, optional_str, read_prefix, require_out, required_str, struct_size, write_out,
    write_prefix, zero_tail,
};
use super::dlpack::DLTensor;
use super::handles::{self, Handle};
use super::model_run::{tensor_values, MAX_INPUTS};
use super::optimizer::perfopt_optimizer;
use super::status::perfopt_status;
use super::types::{PERFOPT_NOT_BATCHED, PERFOPT_PRECISION_ALLOW_REDUCED, PERFOPT_PRECISION_FP32};
use super::value::{perfopt_value, values_from};
use super::{boundary, boundary_plain, boundary_void};
use crate::config::CompileMode;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{BatchDims, Model, ModelOptions, Precision, ReducedTolerance};
use crate::value::Value;

/// A loaded model (a TorchScript file or an AOTInductor package).
pub struct perfopt_model {
    _private: [u8; 0],
}

impl Handle for perfopt_model {
    type Object = Model;
    const KIND: &'static str = "perfopt_model";
}

/// Per-model options. Fill with perfopt_model_options_init(&o, sizeof o),
/// change fields, apply with perfopt_model_set_options(). Fields are only
/// appended; an older (smaller) layout gets defaults for the fields it lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct perfopt_model_options {
    /// sizeof(perfopt_model_options); the _init and _default functions set it.
    pub struct_size: u32,
    /// 0: outputs are copied to host memory (default); 1: they stay on the model's device.
    pub outputs_on_device: i32,
    /// max-autotune keeps only candidates whose relative error against fp32
    /// eager is at most this. Default 1e-3.
    pub error_tolerance: f64,
    /// CUDA graphs kept per model, one per input shape, least recently used
    /// out (1 to 1024). Default 8.
    pub graph_cache_size: u32,
    /// Runs before each CUDA-graph capture (0 to 100). Default 3.
    pub graph_warmup_runs: u32,
    /// Share of free memory perfopt_model_recommend_batch leaves unused
    /// (0 to below 1). Default 0.1.
    pub memory_margin: f64,
    /// Everything max-autotune's compile does, in milliseconds (0 to
    /// 600000); 0 = the device's default: 2000 on the CPU, 1000 on CUDA. (ABI 3)
    pub tuning_budget_ms: u32,
    /// A folder where max-autotune remembers its choice per model file,
    /// device, input shapes and perfopt version, so that the next start
    /// measures nothing; NULL (default): the optimizer's
    /// perfopt_config.tuning_cache_dir (ABI 6), else nothing is remembered.
    /// Copied by perfopt_model_set_options. (ABI 3)
    pub tuning_cache_dir: *const c_char,
    /// Threads each call of this model uses (1 to 4 per core), from its next
    /// compile on (any mode, `none` included); 0 (default): the count the
    /// model was loaded at (the optimizer's, or under the optimizer's
    /// tuning_cache_dir the count its tuning last chose), and max-autotune
    /// measures the count on the CPU. Per model: two models run
    /// concurrently each at its own count. (ABI 4)
    pub threads: u32,
    /// What perfopt_model_recommend_batch spends on throughput, in
    /// milliseconds (0 to 600000): doubling batches, then the batches worth
    /// it compared in interleaved rounds (the memory probes come first; the
    /// last round may run past it); 0 (default): 5000. (ABI 4)
    pub batch_budget_ms: u32,
    /// PERFOPT_PRECISION_FP32 (default): max-autotune measures the model's
    /// own precision only; PERFOPT_PRECISION_ALLOW_REDUCED: also a bundle's
    /// reduced-precision forms (perfopt.export's `precisions`), each kept
    /// only within reduced_tolerance of the fp32 result. (ABI 5)
    pub precision: i32,
    /// The largest relative error (max |a - b| / max |b| over each output)
    /// a reduced-precision form may have against fp32; default 1e-2. (ABI 5)
    pub reduced_tolerance: f64,
    /// When above 0 (at most 1), reduced-precision forms are judged by
    /// cosine similarity instead (embeddings): the lowest over the outputs
    /// must be at least this; default 0. (ABI 5)
    pub min_cosine: f64,
}

/// Every struct_size of perfopt_model_options this library accepts: ABI 2
/// (before the tuning fields), ABI 3 (before threads), ABI 4 (before
/// precision) and the current layout.
fn options_sizes() -> [usize; 4] {
    [
        offset_of!(perfopt_model_options, tuning_budget_ms),
        offset_of!(perfopt_model_options, threads),
        // ABI 4's struct ended after batch_budget_ms, padded to the
        // struct's alignment (56 bytes on LP64).
        offset_of!(perfopt_model_options, precision)
            .next_multiple_of(std::mem::align_of::<perfopt_model_options>()),
        size_of::<perfopt_model_options>(),
    ]
}

fn c_options(options: &ModelOptions) -> perfopt_model_options {
    perfopt_model_options {
        struct_size: size_of::<perfopt_model_options>() as u32,
        outputs_on_device: options.outputs_on_device as i32,
        error_tolerance: options.error_tolerance,
        graph_cache_size: options.graph_cache_size as u32,
        graph_warmup_runs: options.graph_warmup_runs,
        memory_margin: options.memory_margin,
        tuning_budget_ms: options.tuning_budget_ms,
        // The default has no folder; a string perfopt owns is never handed out.
        tuning_cache_dir: std::ptr::null(),
        threads: options.threads,
        batch_budget_ms: options.batch_budget_ms,
        precision: match options.precision {
            Precision::Fp32 => PERFOPT_PRECISION_FP32,
            Precision::AllowReduced => PERFOPT_PRECISION_ALLOW_REDUCED,
        },
        reduced_tolerance: options.reduced_tolerance.relative,
        min_cosine: options.reduced_tolerance.min_cosine,
    }
}

/// Fills `options` with the defaults, as this header's struct (programs that
/// may load a newer library use perfopt_model_options_init).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_options_default(
    options: *mut perfopt_model_options,
) -> perfopt_status {
    // SAFETY: write_out checks for NULL.
    boundary_plain(|| unsafe { write_out(options, "options", c_options(&ModelOptions::default())) })
}

/// Fills the first `struct_size` bytes of `options` with the defaults: pass
/// sizeof(perfopt_model_options) of the header the program was built with
/// (this library's size or an earlier ABI's; a newer header's larger size, up to
/// 4096 bytes, has its bytes past this library's struct zeroed).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_options_init(
    options: *mut perfopt_model_options,
    struct_size: usize,
) -> perfopt_status {
    boundary_plain(|| {
        require_out(options, "options")?;
        let (size, zero) = init_size::<perfopt_model_options>(
            struct_size,
            &options_sizes(),
            "perfopt_model_options",
        )?;
        if zero {
            // SAFETY: a newer header's struct: struct_size bytes (the caller's contract).
            unsafe { zero_tail(options, size, struct_size) };
        }
        let mut defaults = c_options(&ModelOptions::default());
        defaults.struct_size = struct_size as u32;
        // SAFETY: the caller's struct has at least `size` bytes, a known layout.
        unsafe { write_prefix(options, size, defaults) };
        Ok(())
    })
}

/// Loads a model onto the optimizer's device: a TorchScript file
/// (torch.jit.save), an AOTInductor package (.pt2), an ONNX model or an
/// ExecuTorch program (.pte), told apart by their contents, or a bundle (a folder perfopt.export wrote,
/// NAME.perfopt: its first form that loads, or under the optimizer's
/// tuning_cache_dir the form last chosen where it takes the same calls;
/// max-autotune measures them all).
/// `name` (may be NULL: the file's stem) labels logs and reports.
/// A missing file is PERFOPT_ERR_FILE_NOT_FOUND, a named pipe or a folder
/// that is not a bundle PERFOPT_ERR_NOT_A_FILE, a file that is not a model
/// PERFOPT_ERR_LOAD_FAILED (a bundle none of whose forms loads: the forms'
/// status when they all failed alike, else PERFOPT_ERR_LOAD_FAILED),
/// a truncated archive or program PERFOPT_ERR_MODEL_CORRUPT, a package made for another
/// device PERFOPT_ERR_UNSUPPORTED_DEVICE, a package perfopt cannot run as it
/// is (cpp-only) PERFOPT_ERR_UNSUPPORTED_MODEL.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_load(
    optimizer: *const perfopt_optimizer,
    path: *const c_char,
    name: *const c_char,
    out: *mut *mut perfopt_model,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        let optimizer = handles::get(optimizer, "optimizer")?;
        // SAFETY: strings are checked for NULL and UTF-8.
        let path = unsafe { required_str(path, "path") }?;
        let name = unsafe { optional_str(name, "name") }?;
        if path.is_empty() {
            return Err(Error::new(
                ErrorKind::FileNotFound,
                "path is an empty string",
            ));
        }
        let model = Model::load(optimizer, path, name)?;
        let handle = handles::register::<perfopt_model>(Arc::new(model));
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees a model; NULL is a no-op. Calls running on other threads finish
/// first on their own reference; later calls get PERFOPT_ERR_INVALID_HANDLE.
#[no_mangle]
pub extern "C" fn perfopt_model_free(model: *mut perfopt_model) {
    if model.is_null() {
        return;
    }
    boundary_void(|| match handles::release(model, "model") {
        Ok(model) => drop(model),
        Err(err) => log::error!("perfopt_model_free: {err}"),
    });
}

/// Applies options (see perfopt_model_options): graph settings and the
/// tuning budget take effect at the next compile, outputs_on_device at the
/// next run.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_set_options(
    model: *mut perfopt_model,
    options: *const perfopt_model_options,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model.cast_const(), "model")?;
        if options.is_null() {
            return Err(Error::null_argument("options"));
        }
        // SAFETY: non-NULL; the size is read first and checked against the
        // layouts this library knows, so nothing past the caller's struct is read.
        let c = unsafe {
            let size = struct_size(options, &options_sizes(), "perfopt_model_options")?;
            read_prefix(options, size, c_options(&ModelOptions::default()))
        };
        let outputs_on_device = match c.outputs_on_device {
            0 => false,
            1 => true,
            other => {
                return Err(Error::invalid_argument(format!(
                    "outputs_on_device is {other}; accepted: 0, 1"
                )))
            }
        };
        let precision = match c.precision {
            PERFOPT_PRECISION_FP32 => Precision::Fp32,
            PERFOPT_PRECISION_ALLOW_REDUCED => Precision::AllowReduced,
            other => {
                return Err(Error::invalid_argument(format!(
                    "precision is {other}; accepted: PERFOPT_PRECISION_FP32 (0), \
                     PERFOPT_PRECISION_ALLOW_REDUCED (1)"
                )))
            }
        };
        // SAFETY: NULL or a NUL-terminated string, checked for UTF-8.
        let cache = unsafe { optional_str(c.tuning_cache_dir, "tuning_cache_dir") }?;
        model.set_options(ModelOptions {
            outputs_on_device,
            error_tolerance: c.error_tolerance,
            graph_cache_size: c.graph_cache_size as usize,
            graph_warmup_runs: c.graph_warmup_runs,
            memory_margin: c.memory_margin,
            tuning_budget_ms: c.tuning_budget_ms,
            tuning_cache_dir: cache.map(str::to_string),
            threads: c.threads,
            batch_budget_ms: c.batch_budget_ms,
            precision,
            reduced_tolerance: ReducedTolerance {
                relative: c.reduced_tolerance,
                min_cosine: c.min_cosine,
            },
        })
    })
}

fn compile_with(
    model: *mut perfopt_model,
    mode: *const c_char,
    args: impl FnOnce() -> Result<Option<Vec<Value>>>,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model.cast_const(), "model")?;
        // SAFETY: the mode string is checked for UTF-8.
        let mode = unsafe { optional_str(mode, "mode") }?
            .map(str::parse::<CompileMode>)
            .transpose()?;
        model.compile(mode, args()?)
    })
}

/// Compiles the model. `mode`: "none", "default", "reduce-overhead",
/// "max-autotune", or NULL for the optimizer's configured mode
/// (TRANSLATOR_TORCH_COMPILE / TRANSLATOR_COMPILE_MODE). `n_inputs` may be 0
/// (`warmup_inputs` is then not read): shape-dependent work (CUDA-graph capture, autotuning) then happens on
/// the first run. Warm-up runs leave a stateful model's state as they found
/// it. On MPS it returns PERFOPT_COMPILE_SKIPPED, which is not a failure: the
/// model stays usable as loaded and perfopt_last_error() says why. Runs in
/// progress finish on the form they started with; on a model that keeps state
/// compile waits for them, and the new form carries the state on.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_compile(
    model: *mut perfopt_model,
    mode: *const c_char,
    warmup_inputs: *const DLTensor,
    n_inputs: usize,
) -> perfopt_status {
    compile_with(model, mode, || {
        if n_inputs == 0 {
            Ok(None)
        } else {
            // SAFETY: the caller passes n_inputs DLTensors.
            unsafe { tensor_values(warmup_inputs, n_inputs, "warmup_inputs") }.map(Some)
        }
    })
}

/// perfopt_model_compile with warm-up arguments of any kind (see
/// perfopt_value), for models that take more than tensors.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_compile_args(
    model: *mut perfopt_model,
    mode: *const c_char,
    warmup_args: *const perfopt_value,
    n_args: usize,
) -> perfopt_status {
    compile_with(model, mode, || {
        if n_args == 0 {
            Ok(None)
        } else {
            // SAFETY: the caller passes n_args values.
            unsafe { values_from(warmup_args, n_args, "warmup_args") }.map(Some)
        }
    })
}

/// Where inputs and outputs carry their batch, for run_batched and
/// recommend_batch: `input_dims[i]` is input i's batch dimension or
/// PERFOPT_NOT_BATCHED (passed whole to every chunk, like non-tensor
/// arguments); `output_dims[k]` is output k's. Inputs and outputs past the
/// lists use dimension 0 (the default). NULL lists with count 0 reset.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_set_batch_dims(
    model: *mut perfopt_model,
    input_dims: *const i32,
    n_input_dims: usize,
    output_dims: *const i32,
    n_output_dims: usize,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model.cast_const(), "model")?;
        let read = |ptr: *const i32, n: usize, name: &str| -> Result<Vec<i32>> {
            if n == 0 {
                return Ok(Vec::new());
            }
            if ptr.is_null() {
                return Err(Error::null_argument(name));
            }
            if n > MAX_INPUTS {
                return Err(Error::invalid_argument(format!(
                    "{n} {name}; at most {MAX_INPUTS}"
                )));
            }
            // SAFETY: the caller passes n values.
            Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
        };
        let inputs = read(input_dims, n_input_dims, "input_dims")?
            .into_iter()
            .enumerate()
            .map(|(i, d)| match d {
                PERFOPT_NOT_BATCHED => Ok(None),
                d if d >= 0 => Ok(Some(d as usize)),
                d => Err(Error::invalid_argument(format!(
                    "input_dims[{i}] is {d}; a dimension >= 0 or PERFOPT_NOT_BATCHED (-1)"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs = read(output_dims, n_output_dims, "output_dims")?
            .into_iter()
            .enumerate()
            .map(|(k, d)| {
                usize::try_from(d).map_err(|_| {
                    Error::invalid_argument(format!(
                        "output_dims[{k}] is {d}; outputs are batched along a dimension >= 0"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        model.set_batch_dims(BatchDims { inputs, outputs })
    })
}
