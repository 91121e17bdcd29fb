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
use perfopt::stats::{millis, round3, Summary};
use perfopt::{
    relative_error, Candidate, CompileMode, Error, InferenceScope, Model, ModelOptions, Optimizer,
    Result, Value,
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
    fn of(baseline: &[Duration], times: &[Duration]) -> Option<Speedup> {
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
    for path in &options.models {
        for &mode in &options.modes {
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

/// The table, one row per model and mode.
pub fn table(options: &BenchOptions, device: &str, contenders: &[Contender]) -> String {
    let several = options.models.len() > 1;
    let labels: Vec<String> = options.args.iter().map(inputs::label).collect();
    let rounds = contenders.iter().map(|c| c.times.len()).max().unwrap_or(0);
    let mut out = format!(
        "perfopt bench {}\n  device {device}, inputs [{}], {rounds} interleaved rounds (every row once per round)\n\n",
        options.models.join(" "),
        labels.join(", ")
    );
    let width = contenders
        .iter()
        .map(|c| c.label(several).len())
        .max()
        .unwrap_or(4)
        .max(16);
    out += &format!(
        "{:<width$} {:>11} {:>10} {:>10} {:>7} {:>10} {:>18} {:>10} {:>20}  {}\n",
        "mode",
        "cold start",
        "compile",
        "p50",
        "noise",
        "p99",
        "throughput",
        "rel error",
        "vs first row",
        "chosen"
    );
    let baseline = contenders
        .first()
        .map(|c| c.times.clone())
        .unwrap_or_default();
    let batch = inputs::samples_per_call(&options.args);
    for (i, c) in contenders.iter().enumerate() {
        if let Some(failed) = &c.failed {
            out += &format!("{:<width$} failed: {failed}\n", c.label(several));
            continue;
        }
        let latency = c.latency();
        let p = |f: fn(&Summary) -> f64| {
            latency
                .as_ref()
                .map_or("-".into(), |s| format!("{:.3} ms", f(s)))
        };
        let throughput = latency.as_ref().map_or("-".into(), |s| {
            let calls = 1e3 / s.mean_ms.max(1e-9);
            match batch {
                Some(samples) => format!("{:.1} samples/s", samples * calls),
                None => format!("{calls:.1} calls/s"),
            }
        });
        let noise = c
            .noise()
            .map_or("-".into(), |n| format!("±{:.0}%", n * 100.0));
        let versus = if i == 0 {
            "(baseline)".to_string()
        } else {
            Speedup::of(&baseline, &c.times).map_or("-".into(), |s| s.verdict())
        };
        out += &format!(
            "{:<width$} {:>8.1} ms {:>7.1} ms {:>10} {:>7} {:>10} {:>18} {:>10.1e} {:>20}  {}\n",
            c.label(several),
            c.cold_start_ms,
            c.compile_ms,
            p(|s| s.p50_ms),
            noise,
            p(|s| s.p99_ms),
            throughput,
            c.relative_error,
            versus,
            c.chosen
        );
    }
    for c in contenders.iter().filter(|c| !c.candidates.is_empty()) {
        out += &format!(
            "\n{} measured each candidate on these inputs (interleaved rounds):\n",
            c.label(several)
        );
        // As wide as the longest name (a bundle's name their form too).
        let width = c.candidates.iter().fold(52, |w, c| w.max(c.name.len()));
        out += &format!(
            "  {:<width$} {:>10} {:>5} {:>10}  {}\n",
            "candidate", "p50", "runs", "rel error", "kept"
        );
        for cand in &c.candidates {
            let p50 = cand
                .p50_ms
                .map_or("-".to_string(), |ms| format!("{ms:.3} ms"));
            let error = cand
                .relative_error
                .map_or("-".to_string(), |e| format!("{e:.1e}"));
            let kept = if cand.name == c.chosen {
                "chosen".to_string()
            } else if let Some(note) = &cand.note {
                note.clone()
            } else if cand.within_tolerance {
                "within tolerance".to_string()
            } else {
                "over tolerance".to_string()
            };
            out += &format!(
                "  {:<width$} {:>10} {:>5} {:>10}  {}\n",
                cand.name, p50, cand.runs, error, kept
            );
        }
        let warning = if c.why.contains("no candidate stayed within") {
            "WARNING: "
        } else {
            ""
        };
        out += &format!("  {warning}{}\n", c.why);
    }
    out += "\ncold start = load + compile + first result (rows measured one after another in this \
            process; the first also pays libtorch's lazy start-up); noise = half the interquartile \
            range of a row's round times; vs first row = the median of the per-round ratios, printed \
            as faster or slower only when three quarters of the rounds agree; rel error = \
            max|y - y_ref| / max|y_ref| against the first model as loaded in fp32.\n";
    out
}

pub fn to_json(options: &BenchOptions, device: &str, contenders: &[Contender]) -> Json {
    let baseline = contenders
        .first()
        .map(|c| c.times.clone())
        .unwrap_or_default();
    let batch = inputs::samples_per_call(&options.args);
    let rows = contenders
        .iter()
        .map(|c| {
            let latency = c.latency();
            let speedup = Speedup::of(&baseline, &c.times);
            Json::object()
                .with("model", c.model_path.as_str())
                .with("mode", c.mode.as_str())
                .with("failed", c.failed.clone())
                .with("cold_start_ms", c.cold_start_ms)
                .with("load_ms", c.load_ms)
                .with("compile_ms", c.compile_ms)
                .with("first_run_ms", c.first_run_ms)
                .with("latency", latency.map_or(Json::Null, |s| s.to_json()))
                .with("noise", c.noise().map(round3))
                .with(
                    "throughput_samples_per_s",
                    latency.and_then(|s| {
                        batch.map(|samples| (samples * 1e4 / s.mean_ms.max(1e-9)).round() / 10.0)
                    }),
                )
                .with(
                    "throughput_calls_per_s",
                    latency.map(|s| (1e4 / s.mean_ms.max(1e-9)).round() / 10.0),
                )
                .with("peak_memory_bytes", c.peak_memory)
                .with("relative_error", c.relative_error)
                .with("speedup_vs_first_row", speedup.map(|s| round3(s.median)))
                .with("speedup_q25", speedup.map(|s| round3(s.q25)))
                .with("speedup_q75", speedup.map(|s| round3(s.q75)))
                .with("verdict", speedup.map(|s| s.verdict()))
                .with("chosen", c.chosen.as_str())
                .with("why", c.why.as_str())
                .with(
                    "candidates",
                    Json::Array(c.candidates.iter().map(Candidate::to_json).collect()),
                )
                .with("first_result_unix_s", c.first_result_unix_s)
        })
        .collect();
    Json::object()
        .with(
            "models",
            Json::Array(
                options
                    .models
                    .iter()
                    .map(|m| Json::from(m.as_str()))
                    .collect(),
            ),
        )
        .with("model", options.models[0].as_str())
        .with("device", device)
        .with(
            "inputs",
            Json::Array(
                options
                    .args
                    .iter()
                    .map(|a| Json::from(inputs::label(a)))
                    .collect(),
            ),
        )
        .with("iterations", options.iterations)
        .with("perfopt_version", perfopt::version::PERFOPT_VERSION)
        .with("libtorch_version", perfopt::version::torch_version())
        .with("rows", Json::Array(rows))
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
