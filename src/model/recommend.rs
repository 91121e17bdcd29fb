//! recommend_batch: a batch size from measured memory (peak at batch 1, 2, 4
//! and 8, fitted to fixed + per-sample bytes) and throughput (doubling
//! batches until it stops paying, then the batches worth it compared in
//! interleaved rounds, the largest within noise of the fastest chosen),
//! within a time budget (the options' batch_budget_ms), remembered for
//! run_batched, with a report that says why it stopped and how sure it is.

use std::time::{Duration, Instant};

use super::batched::batch_layout;
use super::{memory, Model};
use crate::batching::{self, Recommendation, Stop};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::settings::InferenceModeGuard;
use crate::value::Value;

/// The throughput trials stop at this batch.
const MAX_TRIAL_BATCH: i64 = 512;
/// The measuring budget when the options give none (batch_budget_ms 0).
pub const DEFAULT_BUDGET_MS: u32 = 5000;
const WARMUP_PER_TRIAL: usize = 3;
const TIMED_PER_TRIAL: usize = 3;
/// The doubling trials use up to this share of the budget; the interleaved
/// rounds the rest.
const EXPLORATION_SHARE: f64 = 0.5;
/// Interleaved rounds stop here, budget or not.
const MAX_ROUNDS: usize = 200;

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
            let budget = Duration::from_millis(u64::from(match self.options().batch_budget_ms {
                0 => DEFAULT_BUDGET_MS,
                ms => ms,
            }));
            rec.budget_ms = budget.as_millis() as u64;
            let started = Instant::now();
            let times =
                self.throughput_trials(&mut rec, &batch_of, &run, engine.batch_limit(), budget)?;
            self.interleaved_rounds(&mut rec, &times, &batch_of, &run, budget, started)?;
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

    /// Throughput at doubling batches within the memory limit and a share
    /// of the budget; says why it stopped. Returns each batch's timed runs.
    fn throughput_trials(
        &self,
        rec: &mut Recommendation,
        batch_of: &dyn Fn(i64) -> Result<Vec<Value>>,
        run: &dyn Fn(&[Value]) -> Result<()>,
        model_limit: Option<i64>,
        budget: Duration,
    ) -> Result<Vec<(i64, Vec<Duration>)>> {
        let budget = budget.mul_f64(EXPLORATION_SHARE);
        let mut measured = Vec::new();
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
            if b > 1 && started.elapsed() + last_trial * 2 > budget {
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
                        let _ = crate::runtime::memory::device_empty_cache();
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
            measured.push((b, times));
            if crate::throughput::exploration_done(&rec.throughput_points) {
                rec.stopped = Stop::Knee;
                break;
            }
            b *= 2;
        }
        Ok(measured)
    }

    /// The batches measured, each run once per round in turn until the
    /// budget is spent, so that a machine's drifting speed does not rank
    /// them (the slowest per sample left out when a round of all would not
    /// fit the budget three times); their throughput, noise and per-round
    /// times go to `rec.compared`.
    fn interleaved_rounds(
        &self,
        rec: &mut Recommendation,
        times: &[(i64, Vec<Duration>)],
        batch_of: &dyn Fn(i64) -> Result<Vec<Value>>,
        run: &dyn Fn(&[Value]) -> Result<()>,
        budget: Duration,
        started: Instant,
    ) -> Result<()> {
        let median = |runs: &[Duration]| {
            quartiles(runs.iter().map(Duration::as_secs_f64).collect()).map_or(0.0, |q| q.1)
        };
        // Fastest per sample first, then dropped from the end until three
        // rounds fit what is left of the budget.
        let mut worth: Vec<(i64, f64)> = times.iter().map(|(b, runs)| (*b, median(runs))).collect();
        worth.sort_by(|x, y| (x.1 / x.0 as f64).total_cmp(&(y.1 / y.0 as f64)));
        let left = budget.saturating_sub(started.elapsed()).as_secs_f64();
        while worth.len() > 2 && worth.iter().map(|w| w.1).sum::<f64>() * 3.0 > left {
            worth.pop();
        }
        worth.sort_by_key(|w| w.0);
        let inputs = worth
            .iter()
            .map(|&(b, _)| batch_of(b).map(|args| (b, args)))
            .collect::<Result<Vec<_>>>()?;
        let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); inputs.len()];
        let mut round_time = Duration::ZERO;
        while inputs.len() > 1
            && rec.rounds < MAX_ROUNDS
            && started.elapsed() + round_time <= budget
        {
            let round_started = Instant::now();
            let mut out_of_memory = None;
            for ((b, args), kept) in inputs.iter().zip(per_round.iter_mut()) {
                let t = Instant::now();
                match run(args) {
                    Ok(()) => kept.push(t.elapsed().as_secs_f64() / *b as f64),
                    // Several batches' inputs are alive at once here: a batch
                    // that fitted alone may not; it is past the limit.
                    Err(err) if err.kind() == ErrorKind::OutOfMemory => {
                        out_of_memory = Some(*b);
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            if let Some(b) = out_of_memory {
                if self.device.kind == crate::device::DeviceKind::Cuda {
                    let _ = crate::runtime::memory::device_empty_cache();
                }
                rec.memory_limit = Some(rec.memory_limit.map_or(b / 2, |l| l.min(b / 2)));
                // The rounds so far are kept whole: the last one is cut.
                for kept in per_round.iter_mut() {
                    kept.truncate(rec.rounds);
                }
                break;
            }
            round_time = round_started.elapsed();
            rec.rounds += 1;
        }
        rec.compared = inputs
            .iter()
            .zip(per_round)
            .filter_map(|((b, _), rounds)| {
                // Too few rounds to rank on: the doubling trials' runs too.
                let per_sample: Vec<f64> = if rounds.len() >= 3 {
                    rounds.clone()
                } else {
                    let trials = times.iter().find(|(batch, _)| batch == b)?;
                    trials
                        .1
                        .iter()
                        .map(|d| d.as_secs_f64() / *b as f64)
                        .chain(rounds.iter().copied())
                        .collect()
                };
                let (q25, median, q75) = quartiles(per_sample.clone())?;
                Some(batching::Compared {
                    batch: *b,
                    samples_per_s: 1.0 / median.max(1e-12),
                    noise: (q75 - q25) / median.max(1e-12),
                    runs: per_sample.len(),
                    per_round: rounds,
                })
            })
            .collect();
        Ok(())
    }
}

/// The 25th, 50th and 75th percentiles (nearest rank).
fn quartiles(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Some((at(0.25), at(0.5), at(0.75)))
}
