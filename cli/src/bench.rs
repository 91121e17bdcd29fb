//! `perfopt bench`: loads each model file once per compile mode and measures
//! cold start, compile time, latency, throughput, error against fp32 eager,
//! as trtexec's summary does. Latencies are taken in interleaved rounds
//! (every model and mode once per round, in turn), so that a machine's
//! drifting speed does not rank them; each p50 comes with its noise (the
//! spread across rounds), and a speed-up is printed only where the paired
//! per-round ratios leave no doubt (otherwise: "same within noise").

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::inputs::{self, ArgSpec, Fill};
use perfopt::json::Json;
use perfopt::stats::{millis, Summary};
use perfopt::{
    relative_error, Candidate, CompileMode, Error, InferenceScope, Model, ModelOptions, Optimizer,
    Precision, ReducedTolerance, Result, Value,
};

pub struct BenchOptions {
    pub models: Vec<String>,
    pub args: Vec<ArgSpec>,
    /// Reference outputs (.npy, one per output) to measure errors against,
    /// instead of the first model as loaded in fp32.
    pub references: Vec<String>,
    pub modes: Vec<CompileMode>,
    /// Timed runs per model and mode (interleaved rounds).
    pub iterations: usize,
    /// Stop timing after this long, whatever the iterations (at least 5 rounds).
    pub seconds: f64,
    pub fill: Fill,
    pub tuning_cache: Option<String>,
    pub tuning_budget_ms: u32,
    /// Whether max-autotune may choose a bundle's reduced-precision form,
    /// and within what.
    pub precision: Precision,
    pub reduced_tolerance: ReducedTolerance,
}

/// Rounds timed whatever the time limit.
const MIN_ROUNDS: usize = 5;

/// One model file in one compile mode.
pub struct Contender {
    pub model_path: String,
    pub mode: CompileMode,
    model: Option<Model>,
    pub load_ms: f64,
    pub compile_ms: f64,
    pub first_run_ms: f64,
    pub cold_start_ms: f64,
    pub relative_error: f64,
    pub chosen: String,
    /// Why compilation chose it (max-autotune's verdict, a warning included).
    pub why: String,
    pub candidates: Vec<Candidate>,
    pub first_result_unix_s: f64,
    pub peak_memory: Option<u64>,
    pub times: Vec<Duration>,
    pub failed: Option<String>,
}

/// How a contender compares with the first one (the baseline), from the
/// per-round ratios baseline / contender.
#[derive(Clone, Copy, Debug)]
pub struct Speedup {
    pub q25: f64,
    pub median: f64,
    pub q75: f64,
}

impl Speedup {
    pub fn of(baseline: &[Duration], times: &[Duration]) -> Option<Speedup> {
        let mut ratios: Vec<f64> = baseline
            .iter()
            .zip(times)
            .map(|(b, t)| b.as_secs_f64() / t.as_secs_f64().max(1e-12))
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| {
            ratios[((q * (ratios.len() - 1) as f64).round() as usize).min(ratios.len() - 1)]
        };
        Some(Speedup {
            q25: at(0.25),
            median: at(0.5),
            q75: at(0.75),
        })
    }

    /// "1.31x faster", "0.80x (slower)", or "same within noise".
    pub fn verdict(&self) -> String {
        if self.q25 > 1.0 {
            format!("{:.2}x faster", self.median)
        } else if self.q75 < 1.0 {
            format!("{:.2}x (slower)", self.median)
        } else {
            "same within noise".to_string()
        }
    }
}

impl Contender {
    pub fn label(&self, several_models: bool) -> String {
        if several_models {
            let file = std::path::Path::new(&self.model_path)
                .file_name()
                .map_or_else(
                    || self.model_path.clone(),
                    |f| f.to_string_lossy().into_owned(),
                );
            format!("{file} {}", self.mode)
        } else {
            self.mode.to_string()
        }
    }

    pub fn latency(&self) -> Option<Summary> {
        Summary::of(&self.times)
    }

    /// Half the interquartile range of the round times, relative to the median.
    pub fn noise(&self) -> Option<f64> {
        let mut ms: Vec<f64> = self.times.iter().map(|d| d.as_secs_f64()).collect();
        if ms.len() < 4 {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[(q * (ms.len() - 1) as f64).round() as usize];
        Some((at(0.75) - at(0.25)) / 2.0 / at(0.5).max(1e-12))
    }
}

fn now_unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn model_options(options: &BenchOptions) -> ModelOptions {
    ModelOptions {
        tuning_cache_dir: options.tuning_cache.clone(),
        tuning_budget_ms: options.tuning_budget_ms,
        precision: options.precision,
        reduced_tolerance: options.reduced_tolerance,
        ..ModelOptions::default()
    }
}

/// Loads, compiles and runs once: the cold start.
fn cold_start(
    optimizer: &Arc<Optimizer>,
    options: &BenchOptions,
    path: &str,
    mode: CompileMode,
    args: &[Value],
    reference: &[tch::Tensor],
) -> Contender {
    let mut c = Contender {
        model_path: path.to_string(),
        mode,
        model: None,
        load_ms: 0.0,
        compile_ms: 0.0,
        first_run_ms: 0.0,
        cold_start_ms: 0.0,
        relative_error: f64::NAN,
        chosen: String::new(),
        why: String::new(),
        candidates: Vec::new(),
        first_result_unix_s: 0.0,
        peak_memory: None,
        times: Vec::new(),
        failed: None,
    };
    let started = Instant::now();
    let result = (|| -> Result<()> {
        let model = Model::load(optimizer.clone(), path, None)?;
        c.load_ms = millis(started.elapsed());
        model.set_options(model_options(options))?;
        let compile_started = Instant::now();
        match model.compile(Some(mode), Some(perfopt::value::shallow_clone_all(args))) {
            Ok(()) => {}
            Err(err) if err.kind() == perfopt::ErrorKind::CompileSkipped => {}
            Err(err) => return Err(err.context(format!("compiling in mode {mode}"))),
        }
        c.compile_ms = millis(compile_started.elapsed());
        let first_started = Instant::now();
        let first = model.run_args(perfopt::value::shallow_clone_all(args))?;
        c.first_run_ms = millis(first_started.elapsed());
        c.first_result_unix_s = now_unix_s();
        c.cold_start_ms = millis(started.elapsed());
        c.relative_error = relative_error(&first, reference)?;
        let compile = model.compile_report();
        let text = |key: &str| match compile.get(key) {
            Some(Json::Str(s)) => s.clone(),
            _ => String::new(),
        };
        c.chosen = text("chosen");
        c.why = text("why");
        c.candidates = model.autotune_candidates();
        c.model = Some(model);
        Ok(())
    })();
    if let Err(err) = result {
        c.failed = Some(err.to_string());
    }
    c
}

/// Runs every model in every mode on the same arguments.
pub fn run(optimizer: Arc<Optimizer>, options: &BenchOptions) -> Result<Vec<Contender>> {
    tch::manual_seed(0);
    let first = Model::load(optimizer.clone(), &options.models[0], None)?;
    let forward = first.methods().into_iter().find(|m| m.name == "forward");
    let args = inputs::values(&options.args, forward.as_ref(), options.fill)?;
    let reference: Vec<tch::Tensor> = if options.references.is_empty() {
        first
            .reference(perfopt::value::shallow_clone_all(&args))?
            .into_tensors()?
    } else {
        options
            .references
            .iter()
            .map(|path| {
                tch::Tensor::read_npy(path)
                    .map_err(|e| Error::from(e).context(format!("reading {path}")))
            })
            .collect::<Result<_>>()?
    };
    drop(first);
    let mut contenders: Vec<Contender> = Vec::new();
    let total = options.models.len() * options.modes.len();
    for path in &options.models {
        for &mode in &options.modes {
            let tuning = match mode {
                CompileMode::MaxAutotune => match options.tuning_budget_ms {
                    0 => ", max-autotune measuring within its default budget".to_string(),
                    ms => format!(", max-autotune measuring within {ms} ms"),
                },
                _ => String::new(),
            };
            progress(&format!(
                "loading {path} in mode {mode} ({} of {total}){tuning}",
                contenders.len() + 1
            ));
            contenders.push(cold_start(
                &optimizer, options, path, mode, &args, &reference,
            ));
        }
    }
    // Timed runs: inputs already on the device, outputs kept where they are.
    let _inference = InferenceScope::enter(optimizer.clone())?;
    let warm = options.iterations.div_ceil(10).clamp(1, 10);
    for c in contenders.iter_mut() {
        if let Some(model) = &c.model {
            for _ in 0..warm {
                if let Err(err) = model.run_args(perfopt::value::shallow_clone_all(&args)) {
                    c.failed = Some(err.to_string());
                    break;
                }
            }
        }
    }
    progress(&format!(
        "timing {} rows in up to {} interleaved rounds ({:.0} s at most past {MIN_ROUNDS} rounds)",
        contenders.iter().filter(|c| c.failed.is_none()).count(),
        options.iterations,
        options.seconds
    ));
    let started = Instant::now();
    for round in 0..options.iterations {
        if round >= MIN_ROUNDS && started.elapsed().as_secs_f64() > options.seconds {
            break;
        }
        for c in contenders.iter_mut().filter(|c| c.failed.is_none()) {
            let Some(model) = &c.model else { continue };
            let call = perfopt::value::shallow_clone_all(&args);
            let t = Instant::now();
            match model.run_args(call) {
                Ok(_) => c.times.push(t.elapsed()),
                Err(err) => c.failed = Some(err.to_string()),
            }
        }
    }
    for c in contenders.iter_mut() {
        if let Some(model) = c.model.take() {
            c.peak_memory = model.peak_memory().0;
        }
    }
    Ok(contenders)
}

/// A line a person reads while a long bench runs (loading, tuning, the
/// timed rounds); quiet when stderr is not a terminal (logs, pipes, CI).
fn progress(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("perfopt bench: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn speedups_are_called_only_when_the_rounds_agree() {
        let base = ms(&[10, 10, 10, 10, 10, 10, 10, 10]);
        let faster = ms(&[5, 5, 5, 5, 5, 5, 5, 12]);
        assert_eq!(
            Speedup::of(&base, &faster).unwrap().verdict(),
            "2.00x faster"
        );
        let mixed = ms(&[8, 12, 9, 11, 10, 13, 7, 10]);
        assert_eq!(
            Speedup::of(&base, &mixed).unwrap().verdict(),
            "same within noise"
        );
        let slower = ms(&[20, 20, 20, 20, 20, 20, 20, 20]);
        assert_eq!(
            Speedup::of(&base, &slower).unwrap().verdict(),
            "0.50x (slower)"
        );
    }
}
