//! `perfopt bench`: loads a model once per compile mode and measures cold
//! start, compile time, latency, throughput, peak memory and error against
//! fp32 eager, as trtexec's summary does.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::autotune::Candidate;
use crate::config::CompileMode;
use crate::device::DeviceKind;
use crate::error::{Error, Result};
use crate::json::Json;
use crate::model::Model;
use crate::numerics::{self, NumericFlags};
use crate::optimizer::Optimizer;
use crate::shim::{self, InferenceModeGuard};
use crate::stats::{millis, round3, Summary};

/// One input: "4x80x100" (float32) or "4x12:int64".
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub shape: Vec<i64>,
    pub kind: tch::Kind,
}

impl FromStr for InputSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (dims, dtype) = s.split_once(':').unwrap_or((s, "float32"));
        let kind = match dtype {
            "float32" | "f32" | "float" => tch::Kind::Float,
            "float16" | "f16" | "half" => tch::Kind::Half,
            "float64" | "f64" | "double" => tch::Kind::Double,
            "int64" | "i64" | "long" => tch::Kind::Int64,
            "int32" | "i32" | "int" => tch::Kind::Int,
            other => {
                return Err(Error::invalid_argument(format!(
                    "input {s:?}: unknown dtype {other:?}; accepted: float32, float16, float64, int64, int32"
                )))
            }
        };
        let shape = dims
            .split('x')
            .map(|d| d.trim().parse::<i64>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "input {s:?}: expected sizes like 4x80x100 (each > 0), optionally :int64"
                ))
            })?;
        Ok(InputSpec { shape, kind })
    }
}

impl InputSpec {
    /// Random data of this shape: normal floats, or integers in [0, 100).
    pub fn make(&self) -> tch::Tensor {
        match self.kind {
            tch::Kind::Int64 | tch::Kind::Int => {
                tch::Tensor::randint(100, self.shape.as_slice(), (self.kind, tch::Device::Cpu))
            }
            kind => tch::Tensor::randn(self.shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu))
                .to_kind(kind),
        }
    }

    pub fn label(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(i64::to_string).collect();
        format!("{}:{:?}", dims.join("x"), self.kind).to_lowercase()
    }
}

pub struct BenchOptions {
    pub model_path: String,
    pub inputs: Vec<InputSpec>,
    /// Inputs read from .npy files instead of random ones (overrides `inputs`).
    pub input_files: Vec<String>,
    /// Reference outputs (.npy, one per output) to measure errors against,
    /// instead of the model as loaded in fp32.
    pub references: Vec<String>,
    pub modes: Vec<CompileMode>,
    pub iterations: usize,
}

#[derive(Clone, Debug)]
pub struct BenchRow {
    pub mode: CompileMode,
    pub load_ms: f64,
    pub compile_ms: f64,
    pub first_run_ms: f64,
    /// Load + compile + first result.
    pub cold_start_ms: f64,
    pub latency: Summary,
    pub throughput: f64,
    pub peak_memory: Option<u64>,
    pub relative_error: f64,
    pub speedup: f64,
    pub chosen: String,
    /// max-autotune's measured candidates: what each optimization does alone.
    pub candidates: Vec<Candidate>,
    /// Wall-clock time of the first result (seconds since the Unix epoch), so
    /// that a driver can measure from process start.
    pub first_result_unix_s: f64,
}

impl BenchRow {
    pub fn to_json(&self) -> Json {
        Json::object()
            .with("mode", self.mode.as_str())
            .with("cold_start_ms", self.cold_start_ms)
            .with("load_ms", self.load_ms)
            .with("compile_ms", self.compile_ms)
            .with("first_run_ms", self.first_run_ms)
            .with("latency", self.latency.to_json())
            .with(
                "throughput_samples_per_s",
                (self.throughput * 10.0).round() / 10.0,
            )
            .with("peak_memory_bytes", self.peak_memory)
            .with("relative_error", self.relative_error)
            .with(
                "speedup_vs_as_loaded",
                (self.speedup * 100.0).round() / 100.0,
            )
            .with("chosen", self.chosen.as_str())
            .with(
                "candidates",
                Json::Array(self.candidates.iter().map(Candidate::to_json).collect()),
            )
            .with("first_result_unix_s", self.first_result_unix_s)
    }
}

fn copies(tensors: &[tch::Tensor]) -> Vec<tch::Tensor> {
    tensors.iter().map(|t| t.copy()).collect()
}

fn reset_peak(optimizer: &Optimizer) {
    let device = optimizer.device();
    if let (DeviceKind::Cuda, Some(index)) = (device.kind, device.index) {
        let _ = shim::device_empty_cache();
        let _ = shim::device_reset_peak(index as i32);
    }
}

/// Runs every mode on the same random inputs; the as-loaded model in full
/// fp32 precision is the reference for errors, `none` for speed-ups.
pub fn run(optimizer: Arc<Optimizer>, options: &BenchOptions) -> Result<Vec<BenchRow>> {
    tch::manual_seed(0);
    let read = |path: &String| {
        tch::Tensor::read_npy(path).map_err(|e| Error::from(e).context(format!("reading {path}")))
    };
    let inputs: Vec<tch::Tensor> = if options.input_files.is_empty() {
        options.inputs.iter().map(InputSpec::make).collect()
    } else {
        options
            .input_files
            .iter()
            .map(read)
            .collect::<Result<_>>()?
    };
    let batch = inputs
        .first()
        .and_then(|t| t.size().first().copied())
        .unwrap_or(1) as f64;
    let reference = if !options.references.is_empty() {
        options
            .references
            .iter()
            .map(read)
            .collect::<Result<Vec<_>>>()?
    } else {
        let model = Model::load(optimizer.clone(), &options.model_path, None)?;
        let run = || model.run(copies(&inputs));
        if optimizer.device().kind == DeviceKind::Cuda {
            numerics::with_flags(NumericFlags::IEEE, run)?
        } else {
            run()?
        }
    };
    let mut rows: Vec<BenchRow> = Vec::new();
    for &mode in &options.modes {
        reset_peak(&optimizer);
        let started = Instant::now();
        let model = Model::load(optimizer.clone(), &options.model_path, None)?;
        let load = started.elapsed();
        let compile_started = Instant::now();
        model
            .compile(Some(mode), Some(copies(&inputs)))
            .map_err(|e| e.context(format!("compiling in mode {mode}")))?;
        let compile = compile_started.elapsed();
        let first_started = Instant::now();
        let first = model.run(copies(&inputs))?;
        let first_run = first_started.elapsed();
        let first_result_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let cold_start = started.elapsed();
        let error = numerics::relative_error(&first, &reference)?;

        // Timed runs: inputs already on the device, one synchronisation per
        // call (inside run), outputs kept where they are.
        let mut latencies = Vec::with_capacity(options.iterations);
        {
            let _inference = InferenceModeGuard::enter()?;
            for _ in 0..options.iterations.div_ceil(10).min(10) {
                model.run(copies(&inputs))?;
            }
            for _ in 0..options.iterations {
                let batch_inputs = copies(&inputs);
                let t = Instant::now();
                model.run(batch_inputs)?;
                latencies.push(t.elapsed());
            }
        }
        let latency = Summary::of(&latencies).unwrap_or(Summary {
            count: 0,
            mean_ms: 0.0,
            min_ms: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        });
        let chosen = match model.report().get("compile").and_then(|c| c.get("chosen")) {
            Some(Json::Str(s)) => s.clone(),
            _ => String::new(),
        };
        let baseline = rows.first().map_or(latency.p50_ms, |r| r.latency.p50_ms);
        rows.push(BenchRow {
            mode,
            load_ms: millis(load),
            compile_ms: millis(compile),
            first_run_ms: millis(first_run),
            cold_start_ms: millis(cold_start),
            throughput: batch * 1e3 / latency.mean_ms.max(1e-9),
            peak_memory: model.peak_memory().0,
            relative_error: error,
            speedup: baseline / latency.p50_ms.max(1e-9),
            latency,
            chosen,
            candidates: model.autotune_candidates(),
            first_result_unix_s,
        });
    }
    Ok(rows)
}

fn input_labels(options: &BenchOptions) -> Vec<String> {
    if options.input_files.is_empty() {
        options.inputs.iter().map(InputSpec::label).collect()
    } else {
        options.input_files.clone()
    }
}

fn bytes(value: Option<u64>) -> String {
    match value {
        Some(b) if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        None => "-".to_string(),
    }
}

/// The table, one row per mode.
pub fn table(options: &BenchOptions, device: &str, rows: &[BenchRow]) -> String {
    let inputs = input_labels(options);
    let mut out = format!(
        "perfopt bench {}\n  device {device}, inputs [{}], {} timed runs per mode\n\n",
        options.model_path,
        inputs.join(", "),
        options.iterations
    );
    out += &format!(
        "{:<16} {:>11} {:>10} {:>10} {:>10} {:>13} {:>12} {:>10} {:>8}  {}\n",
        "mode",
        "cold start",
        "compile",
        "p50",
        "p99",
        "throughput",
        "peak memory",
        "rel error",
        "speedup",
        "chosen"
    );
    for r in rows {
        out += &format!(
            "{:<16} {:>8.1} ms {:>7.1} ms {:>7.3} ms {:>7.3} ms {:>10.1}/s {:>12} {:>10.1e} {:>7.2}x  {}\n",
            r.mode.as_str(),
            r.cold_start_ms,
            r.compile_ms,
            round3(r.latency.p50_ms),
            round3(r.latency.p99_ms),
            r.throughput,
            bytes(r.peak_memory),
            r.relative_error,
            r.speedup,
            r.chosen
        );
    }
    for r in rows.iter().filter(|r| !r.candidates.is_empty()) {
        out += &format!(
            "\n{} measured each candidate on these inputs (interleaved rounds):\n",
            r.mode.as_str()
        );
        out += &format!(
            "  {:<52} {:>10} {:>5} {:>10}  {}\n",
            "candidate", "p50", "runs", "rel error", "kept"
        );
        for c in &r.candidates {
            let p50 = c.p50_ms.map_or("-".to_string(), |ms| format!("{ms:.3} ms"));
            let error = c
                .relative_error
                .map_or("-".to_string(), |e| format!("{e:.1e}"));
            let kept = if c.name == r.chosen {
                "chosen".to_string()
            } else if let Some(note) = &c.note {
                format!("failed: {note}")
            } else if c.within_tolerance {
                "within tolerance".to_string()
            } else {
                "over tolerance".to_string()
            };
            out += &format!(
                "  {:<52} {:>10} {:>5} {:>10}  {}\n",
                c.name, p50, c.runs, error, kept
            );
        }
    }
    out += "\ncold start = load + compile + first result; throughput = samples per second at the \
            mean latency; rel error = max|y - y_ref| / max|y_ref| against the model as loaded in fp32; \
            speedup = p50 of `none` / p50 of the mode.\n";
    out
}

pub fn to_json(options: &BenchOptions, device: &str, rows: &[BenchRow]) -> Json {
    Json::object()
        .with("model", options.model_path.as_str())
        .with("device", device)
        .with(
            "inputs",
            Json::Array(input_labels(options).into_iter().map(Json::from).collect()),
        )
        .with("iterations", options.iterations)
        .with("perfopt_version", crate::version::PERFOPT_VERSION)
        .with("libtorch_version", shim::torch_version())
        .with(
            "rows",
            Json::Array(rows.iter().map(BenchRow::to_json).collect()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_input_specs() {
        assert_eq!(
            "4x80x100".parse::<InputSpec>().unwrap(),
            InputSpec {
                shape: vec![4, 80, 100],
                kind: tch::Kind::Float
            }
        );
        assert_eq!(
            "2x12:int64".parse::<InputSpec>().unwrap().kind,
            tch::Kind::Int64
        );
        for bad in ["", "4x", "4x0", "ax3", "4x3:complex", "-1x3"] {
            assert!(bad.parse::<InputSpec>().is_err(), "{bad}");
        }
        assert_eq!("2x3".parse::<InputSpec>().unwrap().label(), "2x3:float");
    }
}
