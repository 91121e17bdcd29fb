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
use crate::error::Result;
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
    pub relative_error: Option<f64>,
    pub within_tolerance: bool,
    pub note: Option<String>,
}

impl Candidate {
    pub fn to_json(&self) -> Json {
        Json::object()
            .with("name", self.name.as_str())
            .with("p50_ms", self.p50_ms)
            .with("relative_error", self.relative_error)
            .with("within_tolerance", self.within_tolerance)
            .with("note", self.note.clone())
    }
}

/// Timing budget per candidate: at least MIN_RUNS, then up to MAX_RUNS while
/// under BUDGET.
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 50;
const BUDGET: Duration = Duration::from_millis(300);
const WARMUP_RUNS: usize = 5;

/// Runs `executor` until timings settle; returns the median and the outputs
/// of the first run.
fn measure(
    model: &Model,
    executor: &Executor,
    inputs: &[tch::Tensor],
) -> Result<(f64, Vec<tch::Tensor>)> {
    let _inference = InferenceModeGuard::enter()?;
    let outputs = executor.run(inputs)?;
    // TorchScript's profiling executor profiles the first runs and optimises
    // after them; timing those would rank a candidate by its warm-up.
    for _ in 0..WARMUP_RUNS {
        executor.run(inputs)?;
    }
    model.synchronize_device();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < MIN_RUNS || (times.len() < MAX_RUNS && started.elapsed() < BUDGET) {
        let t = Instant::now();
        executor.run(inputs)?;
        model.synchronize_device();
        times.push(t.elapsed());
    }
    let p50 = Summary::of(&times).map_or(f64::INFINITY, |s| s.p50_ms);
    Ok((p50, outputs))
}

struct Trial {
    candidate: Candidate,
    executor: Option<Executor>,
    module_label: String,
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
        let trial = match executor.and_then(|ex| {
            let (p50, outputs) = measure(model, &ex, inputs)?;
            Ok((ex, p50, numerics::relative_error(&outputs, &reference)?))
        }) {
            Ok((executor, p50, error)) => Trial {
                candidate: Candidate {
                    name,
                    p50_ms: Some(round3(p50)),
                    relative_error: Some(error),
                    within_tolerance: error <= tolerance,
                    note: None,
                },
                executor: Some(executor),
                module_label: label,
            },
            Err(err) => Trial {
                candidate: Candidate {
                    name,
                    p50_ms: None,
                    relative_error: None,
                    within_tolerance: false,
                    note: Some(err.to_string()),
                },
                executor: None,
                module_label: label,
            },
        };
        log::debug!("max-autotune candidate {:?}", trial.candidate);
        trials.push(trial);
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
                let name = format!("{best_label} + CUDA graph ({})", flags.label());
                try_executor(
                    name,
                    best_label.clone(),
                    prepared.map(|_| Executor::Graphs(graphs)),
                );
            }
        }
    }

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
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Torch,
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
