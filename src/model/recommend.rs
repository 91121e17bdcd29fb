//! recommend_batch: a batch size from measured memory (peak at batch 1, 2, 4
//! and 8, fitted to fixed + per-sample bytes) and throughput (doubling
//! batches until it stops paying, within a time budget), remembered for
//! run_batched, with a report that says why it stopped.

use std::time::{Duration, Instant};

use super::batched::batch_layout;
use super::{memory, Model};
use crate::batching::{self, Recommendation, Stop};
use crate::error::{Error, ErrorKind, Result};
use crate::torch::settings::InferenceModeGuard;
use crate::value::Value;

/// The throughput trials stop at this batch or this time.
const MAX_TRIAL_BATCH: i64 = 512;
const TRIAL_BUDGET: Duration = Duration::from_secs(5);
const WARMUP_PER_TRIAL: usize = 3;
const TIMED_PER_TRIAL: usize = 5;

impl Model {
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
        let _one = self.one_at_a_time()?;
        let compiled = self.executor_for(&sample)?;
        // Plain runs of the compiled form: trial sizes must not fill the
        // CUDA-graph cache with one graph per size.
        let engine = self.live_engine(&compiled);
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
            // Memory perfopt cannot count is not guessed at: the batch then
            // comes from throughput alone, and the report says so.
            let counted: &[i64] = match engine.own_allocator() {
                Some(arena) => {
                    rec.memory_source = format!(
                        "not measured: the model's working memory is {arena}, which perfopt's \
                         counting does not see; the batch comes from throughput alone"
                    );
                    &[]
                }
                None => &[1, 2, 4, 8],
            };
            for b in counted.iter().copied().filter(|&b| b <= limit) {
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
