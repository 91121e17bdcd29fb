//! perfopt_model_warmup, _recommend_batch, _report, _methods and
//! _last_report: reports, and calls whose reports are kept so that a second
//! read never does the work again.

use std::ffi::c_char;

use super::args::{require_out, write_text};
use super::boundary;
use super::dlpack::DLTensor;
use super::handles;
use super::model::perfopt_model;
use super::model_run::tensor_values;
use super::status::perfopt_status;
use super::types::{PERFOPT_REPORT_RECOMMEND_BATCH, PERFOPT_REPORT_WARMUP};
use super::value::{perfopt_value, values_from};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::model::ReportKind;
use crate::value::Value;

fn warmup_with(
    model: *const perfopt_model,
    iterations: u32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
    args: impl FnOnce() -> Result<Vec<Value>>,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model, "model")?;
        check_report_buffer(report, report_len)?;
        let json = model.warmup(args()?, iterations)?;
        deliver(&json, report, report_len, needed)
    })
}

/// Refuses a NULL report buffer with a length before any work is done.
fn check_report_buffer(report: *mut c_char, report_len: usize) -> Result<()> {
    if report.is_null() && report_len > 0 {
        return Err(Error::null_argument("report"));
    }
    Ok(())
}

/// Hands a report of work already done to the caller: NULL with length 0
/// only sets *needed; a buffer too small is PERFOPT_ERR_BUFFER_TOO_SMALL (the
/// work happened: read the kept report with perfopt_model_last_report).
fn deliver(json: &str, report: *mut c_char, report_len: usize, needed: *mut usize) -> Result<()> {
    if report.is_null() && report_len == 0 {
        if !needed.is_null() {
            // SAFETY: non-NULL out pointer.
            unsafe { needed.write(json.len() + 1) };
        }
        return Ok(());
    }
    // SAFETY: the caller's buffer of report_len bytes.
    unsafe { write_text(json, report, report_len, needed) }.map_err(|err| {
        if err.kind() == ErrorKind::BufferTooSmall {
            err.context(
                "the work was done and its report kept: read it with perfopt_model_last_report",
            )
        } else {
            err
        }
    })
}

/// Runs `iterations` passes (1 to 100000) under inference mode and writes a
/// JSON report: first-call latency and the steady state (median, p90, p99).
/// A stateful model's state is left as it was found. `report` may be NULL
/// (with report_len 0): *needed then receives the report's size. The report
/// is kept: perfopt_model_last_report(PERFOPT_REPORT_WARMUP) reads it without
/// running again (so a size query never runs the passes twice).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_warmup(
    model: *const perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    iterations: u32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    warmup_with(model, iterations, report, report_len, needed, || {
        // SAFETY: the caller passes n_inputs DLTensors.
        unsafe { tensor_values(inputs, n_inputs, "inputs") }
    })
}

/// perfopt_model_warmup with arguments of any kind (see perfopt_value).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_warmup_args(
    model: *const perfopt_model,
    args: *const perfopt_value,
    n_args: usize,
    iterations: u32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    warmup_with(model, iterations, report, report_len, needed, || {
        // SAFETY: the caller passes n_args values.
        unsafe { values_from(args, n_args, "args") }
    })
}

/// The model's methods as JSON: [{"name", "schema", "arguments": [{"name",
/// "type", "default"}], "returns": [...]}].
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_methods(
    model: *const perfopt_model,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model, "model")?;
        let json = Json::Array(model.methods().iter().map(|m| m.to_json()).collect()).to_string();
        // SAFETY: the caller's buffer of len bytes.
        unsafe { write_text(&json, buf, len, needed) }
    })
}

/// JSON: format, methods, calls, latency percentiles, peak memory, the
/// compile mode, what it chose and why (max-autotune's candidates with their
/// times and errors, its budget and cache, CUDA-graph captures, replays and
/// fall-backs), batching.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_report(
    model: *const perfopt_model,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model, "model")?;
        let json = model.report().to_string();
        // SAFETY: the caller's buffer of len bytes.
        unsafe { write_text(&json, buf, len, needed) }
    })
}

/// The report of the last perfopt_model_warmup (PERFOPT_REPORT_WARMUP) or
/// perfopt_model_recommend_batch (PERFOPT_REPORT_RECOMMEND_BATCH) on this
/// model, from any thread, without doing the work again.
/// PERFOPT_ERR_INVALID_ARGUMENT when there is none yet.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_last_report(
    model: *const perfopt_model,
    kind: i32,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> perfopt_status {
    boundary(|| {
        let model = handles::get(model, "model")?;
        let kind = match kind {
            PERFOPT_REPORT_WARMUP => ReportKind::Warmup,
            PERFOPT_REPORT_RECOMMEND_BATCH => ReportKind::RecommendBatch,
            other => {
                return Err(Error::invalid_argument(format!(
                    "kind is {other}; accepted: PERFOPT_REPORT_WARMUP (1), \
                     PERFOPT_REPORT_RECOMMEND_BATCH (2)"
                )))
            }
        };
        let text = model.last_report(kind).ok_or_else(|| {
            Error::invalid_argument("no such report yet: the call that makes it has not run")
        })?;
        // SAFETY: the caller's buffer of len bytes.
        unsafe { write_text(&text, buf, len, needed) }
    })
}

fn recommend_with(
    model: *const perfopt_model,
    batch: *mut i32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
    args: impl FnOnce() -> Result<Vec<Value>>,
) -> perfopt_status {
    boundary(|| {
        require_out(batch, "batch")?;
        let model = handles::get(model, "model")?;
        check_report_buffer(report, report_len)?;
        let recommendation = model.recommend_batch(args()?)?;
        let value = i32::try_from(recommendation.batch).unwrap_or(i32::MAX);
        deliver(
            &recommendation.to_json().to_string(),
            report,
            report_len,
            needed,
        )?;
        // SAFETY: checked non-NULL; written on success only.
        unsafe { batch.write(value) };
        Ok(())
    })
}

/// Measures the model on one sample (every batched input with size 1 along
/// its batch dimension, see perfopt_model_set_batch_dims): peak memory at a
/// few batch sizes, fitted to fixed + per-sample bytes, gives the largest
/// batch that fits in free memory under the safety margin; throughput at
/// doubling batches gives the knee where larger batches stop paying (less
/// than 5% more samples per second). `*batch` is the smaller of the two (at
/// least 1); the JSON report says why the trials stopped and has every
/// measured point. run_batched remembers it. The report is kept (see
/// perfopt_model_last_report), so a size query never measures twice.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_recommend_batch(
    model: *const perfopt_model,
    sample_inputs: *const DLTensor,
    n_inputs: usize,
    batch: *mut i32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    recommend_with(model, batch, report, report_len, needed, || {
        // SAFETY: the caller passes n_inputs DLTensors.
        unsafe { tensor_values(sample_inputs, n_inputs, "sample_inputs") }
    })
}

/// perfopt_model_recommend_batch with arguments of any kind (non-tensor
/// arguments are not batched).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_recommend_batch_args(
    model: *const perfopt_model,
    sample_args: *const perfopt_value,
    n_args: usize,
    batch: *mut i32,
    report: *mut c_char,
    report_len: usize,
    needed: *mut usize,
) -> perfopt_status {
    recommend_with(model, batch, report, report_len, needed, || {
        // SAFETY: the caller passes n_args values.
        unsafe { values_from(sample_args, n_args, "sample_args") }
    })
}
