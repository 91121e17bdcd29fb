//! What `perfopt bench` prints: the table (one row per model and mode,
//! max-autotune's candidates under each) and the same results as JSON.

use crate::bench::{BenchOptions, Contender, Speedup};
use crate::inputs;
use perfopt::json::Json;
use perfopt::stats::{round3, Summary};
use perfopt::Candidate;

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
            // A reduced-precision candidate is judged by its cosine too.
            let kept = match cand.cosine {
                Some(cosine) => format!("{kept} (cosine {cosine:.6})"),
                None => kept,
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
