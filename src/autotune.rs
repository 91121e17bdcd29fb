//! max-autotune: measure every way perfopt can run a model on the warm-up
//! inputs and keep the fastest whose output stays within the error tolerance
//! of the fp32 eager output.
//!
//! Candidates: the module as loaded, frozen, and frozen + optimize_for_inference
//! (with the process's TF32 and cuDNN-benchmark settings), and on CUDA a CUDA
//! graph over the best frozen module for each combination of TF32 and cuDNN
//! benchmark. Those flags are process-global in libtorch, so only graphs may
//! differ from the process's: the flags are set while capturing and baked into
//! the graph, and nothing leaks to other models.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::DeviceKind;
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::model::{Compiled, Executor, GraphExecutor, Model};
use crate::numerics::{self, NumericFlags};
use crate::shim::InferenceModeGuard;
use crate::stats::{round3, Summary};

/// One measured way of running the model.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub p50_ms: Option<f64>,
    /// Timed runs behind p50_ms.
    pub runs: usize,
    pub relative_error: Option<f64>,
    pub within_tolerance: bool,
    pub note: Option<String>,
}

impl Candidate {
    pub fn to_json(&self) -> Json {
        Json::object()
            .with("name", self.name.as_str())
            .with("p50_ms", self.p50_ms)
            .with("runs", self.runs)
            .with("relative_error", self.relative_error)
            .with("within_tolerance", self.within_tolerance)
            .with("note", self.note.clone())
    }
}

/// Timing: every candidate runs once per round, in turn, until each has
/// MIN_RUNS and BUDGET is spent (for all of them together), or MAX_RUNS.
/// Timing candidates one after another would rank them partly by when they
/// ran: on a shared machine the clock speed and the neighbours' load drift
/// over seconds, and the same configuration then differs by 20% or more. The
/// budget is shared, not per candidate, so that the seven candidates on CUDA
/// keep a cold start well under torch.compile's seconds.
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 200;
const BUDGET: Duration = Duration::from_millis(400);
/// Runs after the first before timing: TorchScript's profiling executor
/// profiles the first run and optimises the graph on the next.
const WARMUP_RUNS: usize = 3;

struct Trial {
    candidate: Candidate,
    executor: Option<Executor>,
    module_label: String,
    times: Vec<Duration>,
}

impl Trial {
    fn failed(&mut self, err: &Error) {
        self.executor = None;
        self.candidate.p50_ms = None;
        self.candidate.within_tolerance = false;
        self.candidate.note = Some(err.to_string());
    }
}

/// Builds a trial: the first run's outputs give its error against the
/// reference, then WARMUP_RUNS so that timing does not rank a candidate by
/// its warm-up.
fn admit(
    model: &Model,
    name: String,
    module_label: String,
    executor: Result<Executor>,
    inputs: &[tch::Tensor],
    reference: &[tch::Tensor],
    tolerance: f64,
) -> Trial {
    let mut trial = Trial {
        candidate: Candidate {
            name,
            p50_ms: None,
            runs: 0,
            relative_error: None,
            within_tolerance: false,
            note: None,
        },
        executor: None,
        module_label,
        times: Vec::new(),
    };
    let checked = executor.and_then(|executor| {
        let _inference = InferenceModeGuard::enter()?;
        let outputs = executor.run(inputs)?;
        let error = numerics::relative_error(&outputs, reference)?;
        for _ in 0..WARMUP_RUNS {
            executor.run(inputs)?;
        }
        model.synchronize_device();
        Ok((executor, error))
    });
    match checked {
        Ok((executor, error)) => {
            trial.candidate.relative_error = Some(error);
            trial.candidate.within_tolerance = error <= tolerance;
            trial.executor = Some(executor);
        }
        Err(err) => trial.failed(&err),
    }
    trial
}

/// Times the runnable trials in interleaved rounds and fills in their p50.
fn time_interleaved(model: &Model, trials: &mut [Trial], inputs: &[tch::Tensor]) -> Result<()> {
    let _inference = InferenceModeGuard::enter()?;
    let started = Instant::now();
    for round in 0..MAX_RUNS {
        if round >= MIN_RUNS && started.elapsed() >= BUDGET {
            break;
        }
        for trial in trials.iter_mut() {
            let Some(executor) = &trial.executor else {
                continue;
            };
            let t = Instant::now();
            match executor.run(inputs) {
                Ok(_) => {
                    model.synchronize_device();
                    trial.times.push(t.elapsed());
                }
                Err(err) => trial.failed(&err),
            }
        }
    }
    for trial in trials.iter_mut().filter(|t| t.executor.is_some()) {
        trial.candidate.p50_ms = Summary::of(&trial.times).map(|s| round3(s.p50_ms));
        trial.candidate.runs = trial.times.len();
        log::debug!("max-autotune candidate {:?}", trial.candidate);
    }
    Ok(())
}

pub fn tune(model: &Model, inputs: &[tch::Tensor]) -> Result<Compiled> {
    let tolerance = model.options().error_tolerance;
    let cuda = model.device().kind == DeviceKind::Cuda;
    let original = model.original().clone();

    // The reference: the model as loaded, in full fp32 precision.
    let reference = {
        let run = || {
            let _inference = InferenceModeGuard::enter()?;
            let outputs = original.forward(inputs)?;
            model.synchronize_device();
            Ok(outputs)
        };
        if cuda {
            numerics::with_flags(NumericFlags::IEEE, run)?
        } else {
            run()?
        }
    };

    let mut trials: Vec<Trial> = Vec::new();
    let mut try_executor = |name: String, label: String, executor: Result<Executor>| {
        trials.push(admit(
            model, name, label, executor, inputs, &reference, tolerance,
        ));
    };

    try_executor(
        "as loaded".into(),
        "as loaded".into(),
        Ok(Executor::Eager(original.clone())),
    );
    let mut best_frozen = original.clone();
    let mut best_label = "as loaded".to_string();
    for (optimize, label) in [(false, "frozen"), (true, "frozen + optimize_for_inference")] {
        let module = original.freeze(optimize).map(Arc::new);
        if let Ok(module) = &module {
            best_frozen = module.clone();
            best_label = label.to_string();
        }
        try_executor(label.into(), label.into(), module.map(Executor::Eager));
    }
    if cuda {
        let options = model.options();
        for tf32 in [false, true] {
            for cudnn_benchmark in [false, true] {
                let flags = NumericFlags {
                    tf32,
                    cudnn_benchmark,
                };
                let graphs = Arc::new(GraphExecutor::new(
                    best_frozen.clone(),
                    Some(flags),
                    &options,
                ));
                let prepared = {
                    let _inference = InferenceModeGuard::enter()?;
                    graphs.prepare(inputs)
                };
                // A shape whose capture failed would run plainly: that is the
                // frozen candidate again, so it is no graph candidate.
                let executor = prepared.and_then(|captured| {
                    if captured {
                        Ok(Executor::Graphs(graphs.clone()))
                    } else {
                        Err(Error::new(
                            ErrorKind::Device,
                            format!(
                                "CUDA graph capture failed: {}",
                                graphs.fallback_reason(inputs).unwrap_or_default()
                            ),
                        ))
                    }
                });
                let name = format!("{best_label} + CUDA graph ({})", flags.label());
                try_executor(name, best_label.clone(), executor);
            }
        }
    }
    time_interleaved(model, &mut trials, inputs)?;

    // The fastest within tolerance; if none is (the model itself is unstable),
    // the most accurate, said as such.
    let pick = trials
        .iter()
        .enumerate()
        .filter(|(_, t)| t.executor.is_some() && t.candidate.within_tolerance)
        .min_by(|a, b| {
            a.1.candidate
                .p50_ms
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.1.candidate.p50_ms.unwrap_or(f64::INFINITY))
        })
        .map(|(i, _)| (i, false))
        .or_else(|| {
            trials
                .iter()
                .enumerate()
                .filter(|(_, t)| t.executor.is_some())
                .min_by(|a, b| {
                    a.1.candidate
                        .relative_error
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.1.candidate.relative_error.unwrap_or(f64::INFINITY))
                })
                .map(|(i, _)| (i, true))
        });
    let Some((index, none_within)) = pick else {
        let reasons: Vec<String> = trials
            .iter()
            .filter_map(|t| t.candidate.note.clone())
            .collect();
        return Err(Error::new(
            ErrorKind::Torch,
            format!("max-autotune: no candidate ran: {}", reasons.join("; ")),
        ));
    };
    let candidates: Vec<Candidate> = trials.iter().map(|t| t.candidate.clone()).collect();
    let trial = trials.swap_remove(index);
    let chosen = trial.candidate;
    let why = if none_within {
        format!(
            "no candidate stayed within the error tolerance {tolerance:e}; kept the most accurate \
             (error {:.2e})",
            chosen.relative_error.unwrap_or(f64::NAN)
        )
    } else {
        format!(
            "fastest of {} candidates within error tolerance {tolerance:e}: {:.3} ms, error {:.2e}",
            candidates.len(),
            chosen.p50_ms.unwrap_or(f64::NAN),
            chosen.relative_error.unwrap_or(f64::NAN)
        )
    };
    Ok(Compiled {
        executor: trial.executor.expect("picked trials have an executor"),
        module_label: trial.module_label,
        chosen: chosen.name.clone(),
        why,
        candidates,
        ..Compiled::placeholder(original)
    })
}
