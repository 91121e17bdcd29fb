//! What compile chose and why, the model's report, and the reports of calls
//! that do work (kept so that a second read does not redo it).

use std::sync::Arc;
use std::time::Duration;

use super::Model;
use crate::autotune::Candidate;
use crate::config::CompileMode;
use crate::engine::Engine;
use crate::executor::Executor;
use crate::json::Json;
use crate::stats::{millis, Summary};

/// Which kept report perfopt_model_last_report reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Warmup,
    RecommendBatch,
}

#[derive(Default)]
pub(crate) struct LastReports {
    pub warmup: Option<String>,
    pub recommend_batch: Option<String>,
}

/// The outcome of compilation, as the report shows it.
pub struct Compiled {
    pub requested: CompileMode,
    pub requested_source: &'static str,
    pub executor: Executor,
    /// Which form of the model runs: "as loaded", "frozen", ...
    pub module_label: String,
    pub chosen: String,
    pub why: String,
    pub notes: Vec<String>,
    pub compile_time: Duration,
    pub candidates: Vec<Candidate>,
    /// max-autotune's budget and cache, when it ran.
    pub tuning: Option<Json>,
    /// For a bundle whose chosen form may load alone next time: what the
    /// tuning cache remembers for it (load_hint.rs).
    pub stand_in: Option<crate::engine::bundle::StandIn>,
}

impl Compiled {
    pub fn as_loaded(engine: Arc<dyn Engine>) -> Self {
        let label = as_loaded_label(engine.as_ref());
        Compiled {
            requested: CompileMode::None,
            requested_source: "not compiled",
            executor: Executor::Plain(engine),
            module_label: label.to_string(),
            chosen: label.to_string(),
            why: "not compiled yet".to_string(),
            notes: Vec::new(),
            compile_time: Duration::ZERO,
            candidates: Vec::new(),
            tuning: None,
            stand_in: None,
        }
    }

    fn to_json(&self, tolerance: f64) -> Json {
        let mut json = Json::object()
            .with("requested_mode", self.requested.as_str())
            .with("requested_source", self.requested_source)
            .with("executor", self.executor.label())
            .with("module", self.module_label.as_str())
            .with("chosen", self.chosen.as_str())
            .with("why", self.why.as_str())
            .with("compile_ms", millis(self.compile_time))
            .with(
                "notes",
                Json::Array(self.notes.iter().map(|n| Json::from(n.as_str())).collect()),
            );
        if self.requested == CompileMode::MaxAutotune {
            json = json
                .with("error_tolerance", tolerance)
                .with(
                    "candidates",
                    Json::Array(self.candidates.iter().map(Candidate::to_json).collect()),
                )
                .with("tuning", self.tuning.clone());
        }
        if let Executor::Graphs(graphs) = &self.executor {
            json = json.with("cuda_graphs", graphs.report());
        }
        json
    }
}

/// What the model as it came is called: a format without optimised forms
/// (a package) is compiled already.
pub(crate) fn as_loaded_label(engine: &dyn Engine) -> String {
    engine.as_loaded_label()
}

pub(crate) fn warmup_json(name: &str, latencies: &[Duration], executor: &str) -> Json {
    let steady = latencies.get(1..).and_then(Summary::of);
    let first = latencies.first().copied().unwrap_or_default();
    Json::object()
        .with("model", name)
        .with("iterations", latencies.len())
        .with("first_call_ms", millis(first))
        .with("steady", steady.map_or(Json::Null, |s| s.to_json()))
        .with(
            "speedup_after_first",
            steady.map(|s| (millis(first) / s.p50_ms.max(1e-6) * 100.0).round() / 100.0),
        )
        .with("executor", executor)
        .with("success", true)
}

impl Model {
    /// What max-autotune measured (empty for the other modes).
    pub fn autotune_candidates(&self) -> Vec<Candidate> {
        self.current().candidates.clone()
    }

    /// The compile section of the report: mode, choice, reason.
    pub fn compile_report(&self) -> Json {
        self.current().to_json(self.options().error_tolerance)
    }

    pub fn report(&self) -> Json {
        let options = self.options();
        let (calls, failures, latency) = {
            let stats = self.stats.lock();
            (stats.calls(), stats.failures(), stats.summary())
        };
        let (peak, peak_source) = self.peak_memory();
        let compiled = self.current();
        let methods = self.original.methods();
        let forward = methods.iter().find(|m| m.name == "forward");
        let (required, max) = forward.map_or((0, None), |m| m.arity());
        let batching = self
            .batching
            .lock()
            .to_json(self.optimizer.optimal_batch_size());
        Json::object()
            .with("name", self.name.as_str())
            .with("path", self.path.as_str())
            // The format of the form that runs now (a bundle's choice).
            .with("format", self.live_engine(&compiled).format().as_str())
            .with("bundle", self.forms.as_ref().map(|f| f.to_json()))
            .with("file_bytes", self.file_size)
            .with("device", self.device.to_string())
            .with("load_ms", millis(self.load_time))
            .with("load_note", self.load_note.as_deref())
            // The form that runs now (its threads, its session), not the one loaded.
            .with("engine", self.live_engine(&compiled).describe())
            .with(
                "inputs",
                Json::object().with("required", required).with("max", max),
            )
            .with("outputs", self.output_count())
            // A model whose methods write its attributes runs one call at a time.
            .with("keeps_state", self.keeps_state())
            .with(
                "methods",
                Json::Array(methods.iter().map(|m| m.to_json()).collect()),
            )
            .with("calls", calls)
            .with("failed_calls", failures)
            .with("latency", latency.map_or(Json::Null, |s| s.to_json()))
            .with("peak_memory_bytes", peak)
            .with("peak_memory_source", peak_source)
            .with("outputs_on_device", options.outputs_on_device)
            .with("compile", compiled.to_json(options.error_tolerance))
            .with("batching", batching)
    }
}
