//! Batches: run_batched (inputs of any size in chunks that fit, halving on
//! out-of-memory; recommend_batch is in src/model/recommend.rs), over batch
//! dimensions per input and output: an LSTM's
//! (h, c) carries its batch in dimension 1, a padding mask or a shared
//! context in none.

use super::Model;
use crate::batching::{self, Recommendation};
use crate::error::{Error, Result};
use crate::json::Json;
use crate::runtime::Tensor;
use crate::value::Value;

/// Ranks perfopt accepts (as DLPack inputs).
const MAX_DIM: usize = 63;
const MAX_DIMS_LISTED: usize = 1024;

/// Where each input and output carries its batch. Inputs: `Some(d)`, or
/// `None` for "not batched" (passed whole to every chunk); inputs past the
/// list, and non-tensor arguments, follow the default (dimension 0 for
/// tensors). Outputs: their batch dimension (default 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchDims {
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
}

impl BatchDims {
    fn input(&self, index: usize, arg: &Value) -> Option<usize> {
        match arg {
            Value::Tensor(_) => self.inputs.get(index).copied().unwrap_or(Some(0)),
            _ => None,
        }
    }

    fn output(&self, index: usize) -> usize {
        self.outputs.get(index).copied().unwrap_or(0)
    }

    pub fn validate(&self) -> Result<()> {
        if self.inputs.len() > MAX_DIMS_LISTED || self.outputs.len() > MAX_DIMS_LISTED {
            return Err(Error::invalid_argument(format!(
                "at most {MAX_DIMS_LISTED} batch dimensions may be listed"
            )));
        }
        let too_large = |d: usize| d > MAX_DIM;
        if let Some(i) = self.inputs.iter().position(|d| d.is_some_and(too_large)) {
            return Err(Error::invalid_argument(format!(
                "input_dims[{i}] is {}; a batch dimension is 0 to {MAX_DIM}, or not batched",
                self.inputs[i].unwrap_or(0)
            )));
        }
        if let Some(i) = self.outputs.iter().position(|&d| too_large(d)) {
            return Err(Error::invalid_argument(format!(
                "output_dims[{i}] is {}; a batch dimension is 0 to {MAX_DIM}",
                self.outputs[i]
            )));
        }
        Ok(())
    }
}

/// What batching learnt about a model.
#[derive(Default)]
pub(crate) struct BatchState {
    dims: BatchDims,
    /// From recommend_batch.
    pub(super) recommended: Option<i64>,
    /// A smaller size that out-of-memory retries forced.
    pub(super) remembered: Option<i64>,
    oom_retries: u64,
    batched_calls: u64,
    pub(super) last: Option<Recommendation>,
}

impl BatchState {
    pub fn to_json(&self, service_rule: i32) -> Json {
        Json::object()
            .with("recommended", self.recommended)
            .with("remembered_after_oom", self.remembered)
            .with("batched_calls", self.batched_calls)
            .with("oom_retries", self.oom_retries)
            .with("service_rule", service_rule)
            .with(
                "input_batch_dims",
                Json::Array(
                    self.dims
                        .inputs
                        .iter()
                        .map(|d| Json::from(d.map(|d| d as i64)))
                        .collect(),
                ),
            )
            .with(
                "output_batch_dims",
                Json::Array(self.dims.outputs.iter().map(|&d| Json::from(d)).collect()),
            )
            .with(
                "last_recommendation",
                self.last
                    .as_ref()
                    .map_or(Json::Null, Recommendation::to_json),
            )
    }
}

/// The batched arguments: (index, dimension) of each, and the batch size.
pub(super) fn batch_layout(dims: &BatchDims, args: &[Value]) -> Result<(Vec<(usize, usize)>, i64)> {
    let mut batched = Vec::new();
    let mut total: Option<(usize, usize, i64)> = None;
    for (i, arg) in args.iter().enumerate() {
        let (Some(d), Value::Tensor(t)) = (dims.input(i, arg), arg) else {
            continue;
        };
        let size = t.size();
        if d >= size.len() {
            return Err(Error::invalid_argument(format!(
                "inputs[{i}] has shape {size:?} and no batch dimension {d} to batch along (set it \
                 with perfopt_model_set_batch_dims, or mark it not batched)"
            )));
        }
        match total {
            None => total = Some((i, d, size[d])),
            Some((first, first_dim, n)) if n != size[d] => {
                return Err(Error::invalid_argument(format!(
                    "inputs[{i}] has shape {size:?}; every batched input needs the same batch size \
                     (inputs[{first}] has dimension {first_dim} of size {n}, so inputs[{i}] needs \
                     dimension {d} of size {n})"
                )))
            }
            Some(_) => {}
        }
        batched.push((i, d));
    }
    let (_, _, n) = total.ok_or_else(|| {
        Error::invalid_argument(
            "no input is batched: run_batched needs at least one tensor with a batch dimension",
        )
    })?;
    Ok((batched, n))
}

fn narrowed(
    args: &[Value],
    batched: &[(usize, usize)],
    start: i64,
    len: i64,
) -> Result<Vec<Value>> {
    args.iter()
        .enumerate()
        .map(
            |(i, arg)| match (arg, batched.iter().find(|(j, _)| *j == i)) {
                (Value::Tensor(t), Some(&(_, d))) => {
                    Ok(Value::Tensor(t.f_narrow(d as i64, start, len)?))
                }
                _ => Ok(arg.shallow_clone()),
            },
        )
        .collect()
}

/// `args` with `extra` zero samples appended along each batched input's
/// batch dimension (a static package's last chunk; their outputs are dropped).
fn padded(args: Vec<Value>, batched: &[(usize, usize)], extra: i64) -> Result<Vec<Value>> {
    args.into_iter()
        .enumerate()
        .map(
            |(i, arg)| match (arg, batched.iter().find(|(j, _)| *j == i)) {
                (Value::Tensor(t), Some(&(_, d))) => {
                    let mut shape = t.size();
                    shape[d] = extra;
                    let zeros = Tensor::f_zeros(&shape, (t.kind(), t.device()))?;
                    Ok(Value::Tensor(Tensor::f_cat(&[&t, &zeros], d as i64)?))
                }
                (arg, _) => Ok(arg),
            },
        )
        .collect()
}

impl Model {
    pub fn set_batch_dims(&self, dims: BatchDims) -> Result<()> {
        dims.validate()?;
        self.batching.lock().dims = dims;
        Ok(())
    }

    pub fn batch_dims(&self) -> BatchDims {
        self.batching.lock().dims.clone()
    }

    /// Runs arguments of any batch size in chunks of at most `max_batch` (0:
    /// the remembered, recommended or service size), halving the chunk on
    /// out-of-memory; outputs are concatenated along their batch dimensions.
    pub fn run_batched(&self, args: Vec<Value>, max_batch: i64) -> Result<Vec<Tensor>> {
        if max_batch < 0 {
            return Err(Error::invalid_argument(format!(
                "max_batch is {max_batch}; 0 means automatic"
            )));
        }
        self.check_args("forward", &args)?;
        let dims = self.batch_dims();
        let (batched, total) = batch_layout(&dims, &args)?;
        // A model that keeps state runs its chunks in order, undisturbed.
        let _one = self.one_at_a_time()?;
        if total == 0 {
            // An empty batch runs once, as perfopt_model_run would.
            return self.run_args_held(args);
        }
        let chunk = if max_batch > 0 {
            max_batch
        } else {
            let state = self.batching.lock();
            state
                .remembered
                .or(state.recommended)
                .unwrap_or_else(|| self.optimizer.optimal_batch_size() as i64)
        };
        // A package accepts batches up to the bound it was compiled with; one
        // exported with a static batch runs exactly that (the last chunk padded).
        let fixed = self.original.fixed_batch();
        let chunk = match (fixed, self.original.batch_limit()) {
            (Some(n), _) => n.max(1),
            (None, Some(limit)) => chunk.min(limit.max(1)),
            (None, None) => chunk,
        };
        let cuda = self.device.kind == crate::device::DeviceKind::Cuda;
        // An automatic size of one starts with a chunk of two: chunks of one
        // sample cannot show an output that carries its batch elsewhere.
        let first_chunk = match (max_batch, fixed) {
            (0, None) if chunk == 1 && total > 1 => 2,
            _ => chunk,
        };
        let (chunks, retries, final_chunk) = batching::run_in_chunks(
            total,
            chunk,
            first_chunk,
            |start, len| {
                let part = narrowed(&args, &batched, start, len)?;
                let outputs = match fixed {
                    Some(n) if len < n => {
                        let padded = padded(part, &batched, n - len)?;
                        self.run_args_held(padded)?
                            .into_iter()
                            .enumerate()
                            .map(|(k, t)| Ok(t.f_narrow(dims.output(k) as i64, 0, len)?))
                            .collect::<Result<Vec<_>>>()?
                    }
                    _ => self.run_args_held(part)?,
                };
                for (k, output) in outputs.iter().enumerate() {
                    let d = dims.output(k);
                    let size = output.size();
                    if size.get(d) != Some(&len) {
                        return Err(Error::invalid_argument(format!(
                            "output {k} has shape {size:?} for a chunk of {len} samples: it does \
                             not carry the batch in dimension {d}, so chunks cannot be joined \
                             (set its batch dimension with perfopt_model_set_batch_dims)"
                        )));
                    }
                }
                Ok(outputs)
            },
            |outputs, len| {
                // Another dimension the chunk's size too: only chunks of
                // different sizes show which one carries the batch.
                outputs.iter().enumerate().any(|(k, output)| {
                    let d = dims.output(k);
                    output
                        .size()
                        .iter()
                        .enumerate()
                        .any(|(j, &n)| j != d && n == len)
                })
            },
            || {
                if cuda {
                    let _ = crate::runtime::memory::device_empty_cache();
                }
            },
        )?;
        {
            let mut state = self.batching.lock();
            state.batched_calls += 1;
            state.oom_retries += u64::from(retries);
            if retries > 0 {
                state.remembered =
                    Some(state.remembered.map_or(final_chunk, |r| r.min(final_chunk)));
            }
        }
        let outputs_per_chunk = chunks.first().map_or(0, Vec::len);
        if chunks.iter().any(|c| c.len() != outputs_per_chunk) {
            return Err(Error::invalid_argument(
                "the model returned a different number of outputs for different chunks",
            ));
        }
        let mut chunks = chunks;
        if chunks.len() == 1 {
            return Ok(chunks.remove(0));
        }
        (0..outputs_per_chunk)
            .map(|k| {
                let parts: Vec<&Tensor> = chunks.iter().map(|c| &c[k]).collect();
                let d = dims.output(k) as i64;
                Tensor::f_cat(&parts, d).map_err(|e| {
                    Error::from(e).context(format!("joining output {k} along dimension {d}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Device, Kind};

    fn t(shape: &[i64]) -> Value {
        Value::Tensor(Tensor::zeros(shape, (Kind::Float, Device::Cpu)))
    }

    #[test]
    fn layouts_follow_the_batch_dims() {
        let default = BatchDims::default();
        let (batched, n) = batch_layout(&default, &[t(&[3, 2]), Value::Int(5)]).unwrap();
        assert_eq!((batched, n), (vec![(0, 0)], 3));
        let lstm = BatchDims {
            inputs: vec![Some(0), Some(1), None],
            outputs: vec![0, 1],
        };
        let args = [t(&[4, 10, 8]), t(&[3, 4, 16]), t(&[7])];
        let (batched, n) = batch_layout(&lstm, &args).unwrap();
        assert_eq!((batched.clone(), n), (vec![(0, 0), (1, 1)], 4));
        let part = narrowed(&args, &batched, 1, 2).unwrap();
        assert_eq!(part[1].as_tensor().unwrap().size(), vec![3, 2, 16]);
        assert_eq!(part[2].as_tensor().unwrap().size(), vec![7]);
        let err = batch_layout(&default, &[t(&[3]), t(&[4])]).unwrap_err();
        assert!(err.to_string().contains("same batch size"), "{err}");
        assert!(batch_layout(
            &BatchDims {
                inputs: vec![None],
                outputs: vec![]
            },
            &[t(&[3])]
        )
        .is_err());
        assert!(BatchDims {
            inputs: vec![Some(64)],
            outputs: vec![]
        }
        .validate()
        .is_err());
    }
}
