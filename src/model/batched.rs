//! Batches: run_batched (inputs of any size in chunks that fit, halving on
//! out-of-memory) and recommend_batch (a batch size from measured memory and
//! throughput), over batch dimensions per input and output: an LSTM's
//! (h, c) carries its batch in dimension 1, a padding mask or a shared
//! context in none.

use std::time::{Duration, Instant};

use super::{memory, Model};
use crate::batching::{self, Recommendation, Stop};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::torch::settings::InferenceModeGuard;
use crate::value::Value;

/// recommend_batch's throughput trials stop at this batch or this time.
const MAX_TRIAL_BATCH: i64 = 512;
const TRIAL_BUDGET: Duration = Duration::from_secs(5);
const WARMUP_PER_TRIAL: usize = 3;
const TIMED_PER_TRIAL: usize = 5;
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
    recommended: Option<i64>,
    /// A smaller size that out-of-memory retries forced.
    remembered: Option<i64>,
    oom_retries: u64,
    batched_calls: u64,
    last: Option<Recommendation>,
    /// Outputs of the last tensor-only run (for perfopt_model_output_count).
    pub last_output_count: Option<usize>,
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
fn batch_layout(dims: &BatchDims, args: &[Value]) -> Result<(Vec<(usize, usize)>, i64)> {
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
                    let zeros = tch::Tensor::f_zeros(&shape, (t.kind(), t.device()))?;
                    Ok(Value::Tensor(tch::Tensor::f_cat(&[&t, &zeros], d as i64)?))
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
    pub fn run_batched(&self, args: Vec<Value>, max_batch: i64) -> Result<Vec<tch::Tensor>> {
        if max_batch < 0 {
            return Err(Error::invalid_argument(format!(
                "max_batch is {max_batch}; 0 means automatic"
            )));
        }
        self.check_args("forward", &args)?;
        let dims = self.batch_dims();
        let (batched, total) = batch_layout(&dims, &args)?;
        if total == 0 {
            // An empty batch runs once, as perfopt_model_run would.
            return self.run_args(args);
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
        let (chunks, retries, final_chunk) = batching::run_in_chunks(
            total,
            chunk,
            |start, len| {
                let part = narrowed(&args, &batched, start, len)?;
                let outputs = match fixed {
                    Some(n) if len < n => {
                        let padded = padded(part, &batched, n - len)?;
                        self.run_args(padded)?
                            .into_iter()
                            .enumerate()
                            .map(|(k, t)| Ok(t.f_narrow(dims.output(k) as i64, 0, len)?))
                            .collect::<Result<Vec<_>>>()?
                    }
                    _ => self.run_args(part)?,
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
            || {
                if cuda {
                    let _ = crate::torch::memory::device_empty_cache();
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
                let parts: Vec<&tch::Tensor> = chunks.iter().map(|c| &c[k]).collect();
                let d = dims.output(k) as i64;
                tch::Tensor::f_cat(&parts, d).map_err(|e| {
                    Error::from(e).context(format!("joining output {k} along dimension {d}"))
                })
            })
            .collect()
    }

    /// Measures peak memory at batch 1, 2, 4 and 8 and throughput at doubling
    /// batches from one sample (size 1 along each batched input's batch
    /// dimension), and recommends the smaller of the memory limit and the
    /// throughput knee. Remembered for run_batched; the report is kept.
    pub fn recommend_batch(&self, sample: Vec<Value>) -> Result<Recommendation> {
        self.check_args("forward", &sample)?;
        let dims = self.batch_dims();
        let sample = self.to_device(sample)?;
        let (batched, n) = batch_layout(&dims, &sample)?;
        if n != 1 {
            return Err(Error::invalid_argument(format!(
                "the sample has {n} samples: a sample has size 1 along each batched input's \
                 batch dimension (dimension 0 of size 1 unless set otherwise)"
            )));
        }
        let compiled = self.executor_for(&sample)?;
        // Plain runs of the compiled form: trial sizes must not fill the
        // CUDA-graph cache with one graph per size.
        let engine = compiled
            .executor
            .engine()
            .cloned()
            .unwrap_or_else(|| self.original.clone());
        let margin = self.options().memory_margin;
        let batch_of = |b: i64| -> Result<Vec<Value>> {
            sample
                .iter()
                .enumerate()
                .map(
                    |(i, arg)| match (arg, batched.iter().find(|(j, _)| *j == i)) {
                        (Value::Tensor(t), Some(&(_, d))) => {
                            let mut repeats = vec![1i64; t.dim()];
                            repeats[d] = b;
                            Ok(Value::Tensor(t.f_repeat(&repeats)?))
                        }
                        _ => Ok(arg.shallow_clone()),
                    },
                )
                .collect()
        };
        let saved = engine.save_state()?;
        let _inference = InferenceModeGuard::enter()?;
        let run = |args: &[Value]| -> Result<()> {
            let _gate = (self.device.kind == crate::device::DeviceKind::Cuda)
                .then(crate::graphs::device_run_gate);
            engine.call("forward", args)?;
            self.synchronize()
        };
        let measured = (|| {
            run(&sample)?; // lazy initialisation must not count as memory per sample
            let mut rec = Recommendation {
                margin,
                free_bytes: memory::free_memory(self.device),
                memory_source: memory::measurement_source(self.device).to_string(),
                ..Default::default()
            };
            let limit = engine.batch_limit().unwrap_or(i64::MAX);
            for b in [1i64, 2, 4, 8].into_iter().filter(|&b| b <= limit) {
                let inputs = batch_of(b)?;
                match memory::peak_during(self.device, || run(&inputs)) {
                    Ok(bytes) => rec.memory_points.push((b, bytes)),
                    Err(err) if err.kind() == ErrorKind::OutOfMemory => break,
                    Err(err) => return Err(err),
                }
            }
            if let Some((per_sample, fixed)) = batching::fit_memory(&rec.memory_points) {
                rec.per_sample_bytes = Some(per_sample);
                rec.fixed_bytes = Some(fixed);
                if let Some(free) = rec.free_bytes {
                    rec.memory_limit =
                        batching::max_batch_for_memory(free, margin, per_sample, fixed);
                }
            }
            self.throughput_trials(&mut rec, &batch_of, &run, engine.batch_limit())?;
            Ok(rec)
        })();
        if let Some(state) = &saved {
            engine.restore_state(state)?;
        }
        let mut rec = measured?;
        rec.decide();
        let text = rec.to_json().to_string();
        {
            let mut state = self.batching.lock();
            state.recommended = Some(rec.batch);
            state.remembered = None;
            state.last = Some(rec.clone());
        }
        self.last_reports.lock().recommend_batch = Some(text);
        log::info!(
            "recommended batch for {}: {} ({})",
            self.name,
            rec.batch,
            rec.reason
        );
        Ok(rec)
    }

    /// Throughput at doubling batches within the memory limit and a time
    /// budget; says why it stopped.
    fn throughput_trials(
        &self,
        rec: &mut Recommendation,
        batch_of: &dyn Fn(i64) -> Result<Vec<Value>>,
        run: &dyn Fn(&[Value]) -> Result<()>,
        model_limit: Option<i64>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut b = 1i64;
        let mut last_trial = Duration::ZERO;
        loop {
            if b > MAX_TRIAL_BATCH {
                rec.stopped = Stop::LargestTrial;
                break;
            }
            if model_limit.is_some_and(|limit| b > limit) {
                rec.stopped = Stop::ModelLimit;
                break;
            }
            if rec.memory_limit.is_some_and(|limit| b > limit.max(1)) {
                rec.stopped = Stop::MemoryLimit;
                break;
            }
            // A doubled batch takes up to twice as long as the last trial.
            if b > 1 && started.elapsed() + last_trial * 2 > TRIAL_BUDGET {
                rec.stopped = Stop::Budget;
                break;
            }
            let trial_started = Instant::now();
            let inputs = batch_of(b)?;
            let mut times = Vec::new();
            let mut failed = None;
            // TorchScript's profiling executor specialises on each new shape
            // during its first runs: those are warm-up, not throughput.
            for i in 0..WARMUP_PER_TRIAL + TIMED_PER_TRIAL {
                let t = Instant::now();
                if let Err(err) = run(&inputs) {
                    failed = Some(err);
                    break;
                }
                if i >= WARMUP_PER_TRIAL {
                    times.push(t.elapsed());
                }
            }
            match failed {
                Some(err) if err.kind() == ErrorKind::OutOfMemory => {
                    if self.device.kind == crate::device::DeviceKind::Cuda {
                        let _ = crate::torch::memory::device_empty_cache();
                    }
                    rec.memory_limit = Some(rec.memory_limit.map_or(b / 2, |l| l.min(b / 2)));
                    rec.stopped = Stop::OutOfMemory;
                    break;
                }
                Some(err) => return Err(err),
                None => {}
            }
            last_trial = trial_started.elapsed();
            let median = crate::stats::Summary::of(&times).map_or(f64::INFINITY, |s| s.p50_ms);
            rec.throughput_points
                .push((b, b as f64 * 1e3 / median.max(1e-6)));
            rec.throughput_knee = batching::throughput_knee(&rec.throughput_points);
            if rec.throughput_knee.is_some() {
                rec.stopped = Stop::Knee;
                break;
            }
            b *= 2;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[i64]) -> Value {
        Value::Tensor(tch::Tensor::zeros(
            shape,
            (tch::Kind::Float, tch::Device::Cpu),
        ))
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
