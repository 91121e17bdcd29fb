//! perfopt_model_*: loading, compiling, warming up, running and reporting.
#![allow(non_camel_case_types)]

use std::ffi::c_char;
use std::mem::size_of;
use std::sync::Arc;

use super::args::{optional_str, require_out, required_str, write_out, write_text};
use super::dlpack::{release_all, tensor_from_dl, tensor_to_managed, DLManagedTensor, DLTensor};
use super::handles::{self, Handle};
use super::optimizer::perfopt_optimizer;
use super::types::perfopt_status;
use super::{boundary, boundary_void};
use crate::config::CompileMode;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Model, ModelOptions};

/// A loaded model. One model may be run from several threads at once.
pub struct perfopt_model {
    pub(crate) inner: Arc<Model>,
}

impl Handle for perfopt_model {
    const KIND: &'static str = "perfopt_model";
}

/// Per-model options. Fill with perfopt_model_options_default(), change
/// fields, apply with perfopt_model_set_options(). Fields are only appended.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct perfopt_model_options {
    /// sizeof(perfopt_model_options); perfopt_model_options_default() sets it.
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
}

impl From<&ModelOptions> for perfopt_model_options {
    fn from(options: &ModelOptions) -> Self {
        perfopt_model_options {
            struct_size: size_of::<perfopt_model_options>() as u32,
            outputs_on_device: options.outputs_on_device as i32,
            error_tolerance: options.error_tolerance,
            graph_cache_size: options.graph_cache_size as u32,
            graph_warmup_runs: options.graph_warmup_runs,
            memory_margin: options.memory_margin,
        }
    }
}

/// Most inputs one call accepts; far above any model's.
const MAX_INPUTS: usize = 1024;

/// Converts the caller's DLTensors (views, no copies).
///
/// # Safety
/// `inputs` is NULL or points to `n` DLTensors valid for the call.
unsafe fn tensors_from(inputs: *const DLTensor, n: usize, what: &str) -> Result<Vec<tch::Tensor>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if inputs.is_null() {
        return Err(Error::null_argument(what));
    }
    if n > MAX_INPUTS {
        return Err(Error::invalid_argument(format!(
            "n_inputs is {n}; perfopt accepts at most {MAX_INPUTS}"
        )));
    }
    std::slice::from_raw_parts(inputs, n)
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_from_dl(t, &format!("{what}[{i}]")))
        .collect()
}

/// Fills `options` with the defaults.
#[no_mangle]
pub extern "C" fn perfopt_model_options_default(
    options: *mut perfopt_model_options,
) -> perfopt_status {
    // SAFETY: write_out checks for NULL.
    boundary(|| unsafe { write_out(options, "options", (&ModelOptions::default()).into()) })
}

/// Loads a TorchScript file onto the optimizer's device, in eval mode.
/// `name` (may be NULL: the file's stem) labels logs and reports. A missing
/// file is PERFOPT_ERR_FILE_NOT_FOUND, a file that is not TorchScript
/// PERFOPT_ERR_LOAD_FAILED, a truncated archive PERFOPT_ERR_MODEL_CORRUPT.
#[no_mangle]
pub extern "C" fn perfopt_model_load(
    optimizer: *mut perfopt_optimizer,
    path: *const c_char,
    name: *const c_char,
    out: *mut *mut perfopt_model,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        // SAFETY: borrow() checks the handle; strings are checked for UTF-8.
        let optimizer = unsafe { handles::borrow(optimizer.cast_const(), "optimizer") }?;
        let path = unsafe { required_str(path, "path") }?;
        let name = unsafe { optional_str(name, "name") }?;
        if path.is_empty() {
            return Err(Error::new(
                ErrorKind::FileNotFound,
                "path is an empty string",
            ));
        }
        let model = Model::load(optimizer.inner.clone(), path, name)?;
        let handle = handles::register(perfopt_model {
            inner: Arc::new(model),
        });
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees a model; NULL is a no-op. Do not free a model another thread is running.
#[no_mangle]
pub extern "C" fn perfopt_model_free(model: *mut perfopt_model) {
    if model.is_null() {
        return;
    }
    boundary_void(|| {
        // SAFETY: take() only returns live model handles.
        match unsafe { handles::take(model, "model") } {
            Ok(boxed) => drop(boxed),
            Err(err) => log::error!("perfopt_model_free: {err}"),
        }
    });
}

/// Applies options (see perfopt_model_options). Takes effect for the next
/// compile (graph settings) or run (outputs_on_device).
#[no_mangle]
pub extern "C" fn perfopt_model_set_options(
    model: *mut perfopt_model,
    options: *const perfopt_model_options,
) -> perfopt_status {
    boundary(|| {
        // SAFETY: borrow() checks the handle.
        let model = unsafe { handles::borrow(model.cast_const(), "model") }?;
        if options.is_null() {
            return Err(Error::null_argument("options"));
        }
        // SAFETY: non-NULL; the size is read first so nothing past the caller's struct is read.
        let struct_size = unsafe { std::ptr::addr_of!((*options).struct_size).read_unaligned() };
        let expected = size_of::<perfopt_model_options>();
        if struct_size as usize != expected {
            return Err(Error::new(
                ErrorKind::StructSize,
                format!(
                    "perfopt_model_options.struct_size is {struct_size}, this library expects \
                     {expected}: fill it with perfopt_model_options_default()"
                ),
            ));
        }
        // SAFETY: the size matches.
        let c = unsafe { &*options };
        let outputs_on_device = match c.outputs_on_device {
            0 => false,
            1 => true,
            other => {
                return Err(Error::invalid_argument(format!(
                    "outputs_on_device is {other}; accepted: 0, 1"
                )))
            }
        };
        model.inner.set_options(ModelOptions {
            outputs_on_device,
            error_tolerance: c.error_tolerance,
            graph_cache_size: c.graph_cache_size as usize,
            graph_warmup_runs: c.graph_warmup_runs,
            memory_margin: c.memory_margin,
        })
    })
}

/// Compiles the model. `mode`: "none", "default", "reduce-overhead",
/// "max-autotune", or NULL for the optimizer's configured mode
/// (TRANSLATOR_TORCH_COMPILE / TRANSLATOR_COMPILE_MODE). `warmup_inputs` may be
/// NULL: shape-dependent work (CUDA-graph capture, autotuning) then happens on
/// the first run. On MPS it returns PERFOPT_COMPILE_SKIPPED and the model
/// stays usable as loaded. Waits for runs in progress.
#[no_mangle]
pub extern "C" fn perfopt_model_compile(
    model: *mut perfopt_model,
    mode: *const c_char,
    warmup_inputs: *const DLTensor,
    n_inputs: usize,
) -> perfopt_status {
    boundary(|| {
        // SAFETY: borrow() checks the handle; the mode string is checked for UTF-8.
        let model = unsafe { handles::borrow(model.cast_const(), "model") }?;
        let mode = unsafe { optional_str(mode, "mode") }?
            .map(str::parse::<CompileMode>)
            .transpose()?;
        let inputs = if warmup_inputs.is_null() && n_inputs == 0 {
            None
        } else {
            // SAFETY: the caller passes n_inputs DLTensors.
            Some(unsafe { tensors_from(warmup_inputs, n_inputs, "warmup_inputs") }?)
        };
        model.inner.compile(mode, inputs)
    })
}

/// Runs `iterations` passes under inference mode and writes a JSON report:
/// first-call latency and the steady state (median, p90, p99). `report` may
/// be NULL (with report_len 0) to skip the report.
#[no_mangle]
pub extern "C" fn perfopt_model_warmup(
    model: *mut perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    iterations: u32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        // SAFETY: borrow() checks the handle; the caller passes n_inputs DLTensors.
        let model = unsafe { handles::borrow(model.cast_const(), "model") }?;
        let tensors = unsafe { tensors_from(inputs, n_inputs, "inputs") }?;
        let json = model.inner.warmup(tensors, iterations)?.to_string();
        if report.is_null() && report_len == 0 {
            if !needed.is_null() {
                // SAFETY: non-NULL out pointer.
                unsafe { needed.write(json.len() + 1) };
            }
            return Ok(());
        }
        // SAFETY: the caller's buffer of report_len bytes.
        unsafe { write_text(&json, report, report_len, needed) }
    })
}

/// Runs the model. Inputs: host memory, or device memory on the model's
/// device (no copy then). Outputs: `outputs_capacity` slots; each output is a
/// DLManagedTensor the caller owns and releases through its deleter. Too few
/// slots: PERFOPT_ERR_BUFFER_TOO_SMALL with *n_outputs set to the count.
/// Several threads may run one model at once.
#[no_mangle]
pub extern "C" fn perfopt_model_run(
    model: *mut perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(
        model,
        inputs,
        n_inputs,
        outputs,
        outputs_capacity,
        n_outputs,
        |model, tensors| model.run(tensors),
    )
}

/// The shared body of perfopt_model_run and perfopt_model_run_batched:
/// checks the arguments, runs, and hands the outputs out.
fn run_into(
    model: *mut perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
    run: impl FnOnce(&Model, Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>>,
) -> perfopt_status {
    boundary(|| {
        require_out(n_outputs, "n_outputs")?;
        if outputs.is_null() && outputs_capacity > 0 {
            return Err(Error::null_argument("outputs"));
        }
        // SAFETY: borrow() checks the handle; the caller passes n_inputs DLTensors.
        let model = unsafe { handles::borrow(model.cast_const(), "model") }?;
        let tensors = unsafe { tensors_from(inputs, n_inputs, "inputs") }?;
        let results = run(&model.inner, tensors)?;
        // SAFETY: outputs has outputs_capacity slots; n_outputs is non-NULL.
        unsafe { hand_out(&results, outputs, outputs_capacity, n_outputs) }
    })
}

/// Writes output tensors into the caller's slots as DLManagedTensors; too few
/// slots is PERFOPT_ERR_BUFFER_TOO_SMALL with *n_outputs set to the count.
///
/// # Safety
/// `outputs` has `capacity` writable slots (or is NULL with capacity 0);
/// `n_outputs` is valid for a write.
unsafe fn hand_out(
    results: &[tch::Tensor],
    outputs: *mut *mut DLManagedTensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> Result<()> {
    if results.len() > capacity {
        n_outputs.write(results.len());
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!(
                "the model returned {} outputs and outputs_capacity is {capacity}",
                results.len()
            ),
        ));
    }
    let mut managed = Vec::with_capacity(results.len());
    for tensor in results {
        match tensor_to_managed(tensor) {
            Ok(m) => managed.push(m),
            Err(err) => {
                release_all(&managed);
                return Err(err);
            }
        }
    }
    if !managed.is_empty() {
        std::ptr::copy_nonoverlapping(managed.as_ptr(), outputs, managed.len());
    }
    n_outputs.write(managed.len());
    Ok(())
}

/// JSON: calls, latency percentiles, peak memory, the compile mode, what it
/// chose and why (max-autotune's candidates with their times and errors,
/// CUDA-graph captures, replays and fall-backs).
#[no_mangle]
pub extern "C" fn perfopt_model_report(
    model: *const perfopt_model,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        // SAFETY: borrow() checks the handle; the caller's buffer of len bytes.
        let model = unsafe { handles::borrow(model, "model") }?;
        let json = model.inner.report().to_string();
        unsafe { write_text(&json, buf, len, needed) }
    })
}

/// Measures the model on one sample (every input with dimension 0 of size 1):
/// peak memory at a few batch sizes, fitted to fixed + per-sample bytes,
/// gives the largest batch that fits in free memory under the safety margin;
/// throughput at doubling batches gives the knee where larger batches stop
/// paying (less than 5% more samples per second). `*batch` is the smaller of
/// the two (at least 1); the JSON report has both and every measured point.
/// run_batched remembers it.
#[no_mangle]
pub extern "C" fn perfopt_model_recommend_batch(
    model: *mut perfopt_model,
    sample_inputs: *const DLTensor,
    n_inputs: usize,
    batch: *mut i32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        require_out(batch, "batch")?;
        // SAFETY: borrow() checks the handle; the caller passes n_inputs DLTensors.
        let model = unsafe { handles::borrow(model.cast_const(), "model") }?;
        let tensors = unsafe { tensors_from(sample_inputs, n_inputs, "sample_inputs") }?;
        let recommendation = model.inner.recommend_batch(tensors)?;
        let value = i32::try_from(recommendation.batch).unwrap_or(i32::MAX);
        if !(report.is_null() && report_len == 0) {
            // SAFETY: the caller's buffer of report_len bytes.
            unsafe {
                write_text(
                    &recommendation.to_json().to_string(),
                    report,
                    report_len,
                    needed,
                )
            }?;
        }
        // SAFETY: checked non-NULL.
        unsafe { batch.write(value) };
        Ok(())
    })
}

/// Runs inputs of any size along dimension 0 (all inputs the same size
/// there) in chunks of at most `max_batch` (0: the size recommend_batch
/// found, else the service's rule), halving the chunk and retrying on
/// out-of-memory (remembered for later calls); only a batch of one that does
/// not fit returns PERFOPT_ERR_OUT_OF_MEMORY. Outputs are concatenated along
/// dimension 0, as perfopt_model_run returns them.
#[no_mangle]
pub extern "C" fn perfopt_model_run_batched(
    model: *mut perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    max_batch: i32,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(
        model,
        inputs,
        n_inputs,
        outputs,
        outputs_capacity,
        n_outputs,
        |model, tensors| model.run_batched(tensors, i64::from(max_batch)),
    )
}
