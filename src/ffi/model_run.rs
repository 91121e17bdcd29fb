//! perfopt_model_run, _run_batched, _take_outputs, _output_count and
//! _call: running a model and handing its outputs out.

use std::cell::RefCell;
use std::ffi::c_char;

use super::args::{optional_str, require_out, write_out};
use super::boundary;
use super::dlpack::{
    release_all, tensor_from_dl_named, tensor_to_managed, DLManagedTensor, DLTensor,
};
use super::handles;
use super::model::perfopt_model;
use super::status::perfopt_status;
use super::value::{perfopt_value, result_tree, values_from};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::runtime::Tensor;
use crate::value::{self, Value};

/// Most inputs one call accepts; far above any model's.
pub(crate) const MAX_INPUTS: usize = 1024;

/// Converts the caller's DLTensors (views, no copies).
///
/// # Safety
/// `inputs` is NULL or points to `n` DLTensors valid for the call.
pub(crate) unsafe fn tensors_from(
    inputs: *const DLTensor,
    n: usize,
    what: &str,
) -> Result<Vec<Tensor>> {
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
    // SAFETY: the caller passes `n` DLTensors.
    unsafe { std::slice::from_raw_parts(inputs, n) }
        .iter()
        .enumerate()
        // SAFETY: each DLTensor is valid for the call.
        .map(|(i, t)| unsafe { tensor_from_dl_named(t, &|| format!("{what}[{i}]")) })
        .collect()
}

/// DLTensor arguments as values.
///
/// # Safety
/// As [`tensors_from`].
pub(crate) unsafe fn tensor_values(
    inputs: *const DLTensor,
    n: usize,
    what: &str,
) -> Result<Vec<Value>> {
    // SAFETY: the caller's contract.
    Ok(value::tensor_args(unsafe {
        tensors_from(inputs, n, what)
    }?))
}

/// Models whose outputs may wait on one thread at once; beyond, the oldest
/// waiting outputs are dropped (a caller that never takes them).
const MAX_WAITING_MODELS: usize = 16;

thread_local! {
    /// Per model (its token), the outputs of this thread's last call on it
    /// that had too few slots, for perfopt_model_take_outputs.
    static WAITING: RefCell<Vec<(usize, Vec<Tensor>)>> = const { RefCell::new(Vec::new()) };
}

/// Takes the outputs waiting for `model` on this thread.
fn take_waiting(model: usize) -> Option<Vec<Tensor>> {
    // `try_with`: a thread whose locals are gone (a host's thread-exit
    // destructor) has no outputs waiting, and keeps none.
    WAITING
        .try_with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            let at = waiting.iter().position(|(owner, _)| *owner == model)?;
            Some(waiting.remove(at).1)
        })
        .ok()
        .flatten()
}

/// Keeps outputs waiting for `model` on this thread, in place of older ones.
fn keep_waiting(model: usize, results: Vec<Tensor>) {
    let _ = WAITING.try_with(|waiting| {
        let mut waiting = waiting.borrow_mut();
        waiting.retain(|(owner, _)| *owner != model);
        if waiting.len() >= MAX_WAITING_MODELS {
            waiting.remove(0);
        }
        waiting.push((model, results));
    });
}

/// Runs, then hands the outputs out; with too few slots they wait for
/// perfopt_model_take_outputs instead of being run again.
fn run_into(
    model: *const perfopt_model,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
    run: impl FnOnce(&Model) -> Result<Vec<Tensor>>,
) -> perfopt_status {
    boundary(|| {
        require_out(n_outputs, "n_outputs")?;
        if outputs.is_null() && outputs_capacity > 0 {
            return Err(Error::null_argument("outputs"));
        }
        let handle = model;
        let model = handles::get(model, "model")?;
        let results = run(&model)?;
        // A later call supersedes outputs still waiting for this model here.
        drop(take_waiting(handle as usize));
        // SAFETY: outputs has outputs_capacity slots; n_outputs is non-NULL.
        unsafe {
            hand_out(
                handle as usize,
                results,
                outputs,
                outputs_capacity,
                n_outputs,
            )
        }
    })
}

/// Writes output tensors into the caller's slots as DLManagedTensors; too few
/// slots is PERFOPT_ERR_BUFFER_TOO_SMALL with *n_outputs set to the count,
/// and the outputs wait for perfopt_model_take_outputs on this thread.
///
/// # Safety
/// `outputs` has `capacity` writable slots (or is NULL with capacity 0);
/// `n_outputs` is valid for a write.
unsafe fn hand_out(
    model: usize,
    results: Vec<Tensor>,
    outputs: *mut *mut DLManagedTensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> Result<()> {
    if results.len() > capacity {
        let count = results.len();
        // SAFETY: the caller's contract.
        unsafe { n_outputs.write(count) };
        keep_waiting(model, results);
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!(
                "the model returned {count} outputs and outputs_capacity is {capacity}: they are \
                 kept, take them with perfopt_model_take_outputs (no second run needed)"
            ),
        ));
    }
    let mut managed = Vec::with_capacity(results.len());
    for tensor in &results {
        match tensor_to_managed(tensor) {
            Ok(m) => managed.push(m),
            Err(err) => {
                // SAFETY: made just now, released once.
                unsafe { release_all(&managed) };
                return Err(err);
            }
        }
    }
    if !managed.is_empty() {
        // SAFETY: the caller's slots hold at least managed.len() pointers.
        unsafe { std::ptr::copy_nonoverlapping(managed.as_ptr(), outputs, managed.len()) };
    }
    // SAFETY: the caller's contract.
    unsafe { n_outputs.write(managed.len()) };
    Ok(())
}

/// Runs the model. Inputs: host memory, or device memory on the model's
/// device (no copy then); borrowed for the call only. Outputs: each is a
/// DLManagedTensor the caller owns and releases through its deleter; it owns
/// its memory (never the caller's input or a model parameter). Too few slots:
/// PERFOPT_ERR_BUFFER_TOO_SMALL with *n_outputs set to the count, and the
/// outputs wait for perfopt_model_take_outputs (perfopt_model_output_count
/// tells the count before a run). Several threads may run one model at once;
/// a model whose methods write its attributes (the report's `keeps_state`)
/// runs one call at a time, and a warm-up, recommend_batch or compile on it
/// waits for the call in progress.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_run(
    model: *const perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(model, outputs, outputs_capacity, n_outputs, |model| {
        // SAFETY: the caller passes n_inputs DLTensors.
        model.run(unsafe { tensors_from(inputs, n_inputs, "inputs") }?)
    })
}

/// The outputs of this thread's last run or run_batched on `model` that had
/// too few slots, without running again. PERFOPT_ERR_INVALID_ARGUMENT when
/// none are waiting; too few slots again keeps them waiting. Outputs wait per
/// model, for up to 16 models per thread (beyond, the oldest are dropped).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_take_outputs(
    model: *const perfopt_model,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(model, outputs, outputs_capacity, n_outputs, |_| {
        take_waiting(model as usize).ok_or_else(|| {
            Error::invalid_argument(
                "no outputs are waiting for this model on this thread: \
                 perfopt_model_take_outputs returns the outputs of this thread's last \
                 call on the model that had too few slots",
            )
        })
    })
}

/// How many outputs perfopt_model_run hands out, without running: from the
/// schema (a Tensor, a tuple of Tensors), else from the last run.
/// PERFOPT_ERR_INVALID_ARGUMENT when neither tells (a list, before any run).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_output_count(
    model: *const perfopt_model,
    count: *mut usize,
) -> perfopt_status {
    boundary(|| {
        require_out(count, "count")?;
        let model = handles::get(model, "model")?;
        let n = model.output_count().ok_or_else(|| {
            Error::invalid_argument(
                "forward()'s schema does not fix how many tensors it returns (a list, or \
                 values that are not tensors): the count is known after the first run",
            )
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(count, "count", n) }
    })
}

/// Calls any method (`method` NULL: forward) with arguments of any kind and
/// returns its result as it is: `*result` is a tree of perfopt_values (a
/// tuple for several results) that the caller frees with perfopt_value_free,
/// after taking the tensors it keeps. forward() goes through what compile
/// chose; other methods run on the same compiled form and see the state
/// forward() changes. Errors name the argument and the type the schema wants.
/// perfopt_model_run refuses, before running, a forward() whose schema
/// returns more than tensors: call it here.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_call(
    model: *const perfopt_model,
    method: *const c_char,
    args: *const perfopt_value,
    n_args: usize,
    result: *mut *mut perfopt_value,
) -> perfopt_status {
    boundary(|| {
        require_out(result, "result")?;
        let model = handles::get(model, "model")?;
        // SAFETY: the method string is checked for UTF-8; the caller passes n_args values.
        let method = unsafe { optional_str(method, "method") }?.unwrap_or("forward");
        let args = unsafe { values_from(args, n_args, "args") }?;
        let value = model.call(method, args)?;
        let tree = result_tree(&value)?;
        // SAFETY: checked non-NULL above.
        unsafe { result.write(tree) };
        Ok(())
    })
}

/// Runs inputs of any batch size (all batched inputs the same size along
/// their batch dimensions, see perfopt_model_set_batch_dims; default 0) in
/// chunks of at most `max_batch` (0: the size recommend_batch found, else the
/// service's rule), halving the chunk and retrying on out-of-memory, on the
/// host as on CUDA (remembered for later calls); only a batch of one that does
/// not fit returns PERFOPT_ERR_OUT_OF_MEMORY. Outputs are joined along their
/// batch dimensions; an output that does not carry the chunk's batch there is
/// refused with a message (chunks' sizes are made to differ when another
/// dimension has the chunk's size too, and an automatic size of one starts
/// with a chunk of two; with `max_batch` 1, set the outputs' batch dimensions
/// to be sure). An empty batch runs once, as perfopt_model_run.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_run_batched(
    model: *const perfopt_model,
    inputs: *const DLTensor,
    n_inputs: usize,
    max_batch: i32,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(model, outputs, outputs_capacity, n_outputs, |model| {
        // SAFETY: the caller passes n_inputs DLTensors.
        let args = unsafe { tensor_values(inputs, n_inputs, "inputs") }?;
        model.run_batched(args, i64::from(max_batch))
    })
}

/// perfopt_model_run_batched with arguments of any kind (non-tensor
/// arguments go whole to every chunk).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_model_run_batched_args(
    model: *const perfopt_model,
    args: *const perfopt_value,
    n_args: usize,
    max_batch: i32,
    outputs: *mut *mut DLManagedTensor,
    outputs_capacity: usize,
    n_outputs: *mut usize,
) -> perfopt_status {
    run_into(model, outputs, outputs_capacity, n_outputs, |model| {
        // SAFETY: the caller passes n_args values.
        let args = unsafe { values_from(args, n_args, "args") }?;
        model.run_batched(args, i64::from(max_batch))
    })
}
