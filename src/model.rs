//! Models: a TorchScript file loaded onto the optimizer's device, compiled in
//! one of the service's modes, run from any number of threads, and measured.
//!
//! Compile modes:
//! - `none`: the module as loaded.
//! - `default`: `torch::jit::freeze` + `optimize_for_inference` (falling back
//!   to freeze alone, then to the module as loaded, with the reason kept).
//! - `reduce-overhead`: `default` plus CUDA graphs, one per input shape in a
//!   bounded LRU cache; a capture that fails falls back to plain execution for
//!   that shape, with the reason logged and reported. On the CPU it is `default`.
//! - `max-autotune`: measures the candidates and keeps the fastest whose output
//!   stays within the error tolerance of the fp32 eager output (see autotune.rs).
//!
//! On MPS compilation is skipped (status PERFOPT_COMPILE_SKIPPED), as the service does.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::archive;
use crate::autotune;
use crate::batching::{self, Recommendation};
use crate::config::CompileMode;
use crate::device::{Device, DeviceKind};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::numerics::NumericFlags;
use crate::optimizer::Optimizer;
use crate::shim::{self, Graph, InferenceModeGuard, Module};
use crate::stats::{millis, LatencyWindow, Summary};

/// Per-model options (perfopt_model_options in C).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Leave outputs on the model's device instead of copying them to the host.
    pub outputs_on_device: bool,
    /// Largest relative error against fp32 eager that max-autotune accepts.
    pub error_tolerance: f64,
    /// CUDA graphs kept per model (one per input shape), least recently used out.
    pub graph_cache_size: usize,
    /// Runs before a CUDA-graph capture (lazy initialisation, cuDNN autotuning).
    pub graph_warmup_runs: u32,
    /// Share of free memory recommend_batch leaves unused.
    pub memory_margin: f64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            outputs_on_device: false,
            error_tolerance: 1e-3,
            graph_cache_size: 8,
            graph_warmup_runs: 3,
            memory_margin: 0.1,
        }
    }
}

impl ModelOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.error_tolerance.is_finite() && self.error_tolerance >= 0.0) {
            return Err(Error::invalid_argument(format!(
                "error_tolerance is {}; it must be a finite number >= 0",
                self.error_tolerance
            )));
        }
        if self.graph_cache_size == 0 || self.graph_cache_size > 1024 {
            return Err(Error::invalid_argument(format!(
                "graph_cache_size is {}; it must be 1 to 1024",
                self.graph_cache_size
            )));
        }
        if !(0.0..1.0).contains(&self.memory_margin) {
            return Err(Error::invalid_argument(format!(
                "memory_margin is {}; it must be at least 0 and below 1",
                self.memory_margin
            )));
        }
        if self.graph_warmup_runs > 100 {
            return Err(Error::invalid_argument(format!(
                "graph_warmup_runs is {}; it must be 0 to 100",
                self.graph_warmup_runs
            )));
        }
        Ok(())
    }
}

/// The shapes, dtypes and devices of a set of inputs: one CUDA graph each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeKey(Vec<(Vec<i64>, tch::Kind, tch::Device)>);

impl ShapeKey {
    pub fn of(inputs: &[tch::Tensor]) -> ShapeKey {
        ShapeKey(
            inputs
                .iter()
                .map(|t| (t.size(), t.kind(), t.device()))
                .collect(),
        )
    }

    pub fn label(&self) -> String {
        self.0
            .iter()
            .map(|(size, kind, _)| {
                let dims: Vec<String> = size.iter().map(i64::to_string).collect();
                format!("{}:{kind:?}", dims.join("x"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A bounded least-recently-used map (most recent last). Small: a linear scan
/// over a handful of shapes costs less than hashing tensor metadata.
#[derive(Debug)]
pub struct LruCache<V> {
    entries: Vec<(ShapeKey, V)>,
    capacity: usize,
    evictions: u64,
}

impl<V: Clone> LruCache<V> {
    pub fn new(capacity: usize) -> Self {
        LruCache {
            entries: Vec::new(),
            capacity: capacity.max(1),
            evictions: 0,
        }
    }

    pub fn get(&mut self, key: &ShapeKey) -> Option<V> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(index);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    pub fn insert(&mut self, key: ShapeKey, value: V) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() == self.capacity {
            self.entries.remove(0);
            self.evictions += 1;
        }
        self.entries.push((key, value));
    }

    pub fn keys(&self) -> impl Iterator<Item = &ShapeKey> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// CUDA graphs over one module, captured lazily per input shape.
pub struct GraphExecutor {
    pub(crate) module: Arc<Module>,
    /// Flags set while capturing (baked into the graphs); `None` = the process's.
    flags: Option<NumericFlags>,
    warmup_runs: u32,
    state: Mutex<GraphState>,
}

struct GraphState {
    graphs: LruCache<Arc<Mutex<Graph>>>,
    /// Shapes whose capture failed, with the reason: they run plainly.
    failed: Vec<(ShapeKey, String)>,
    captures: u64,
    capture_time: Duration,
    replays: u64,
}

const MAX_FAILED_SHAPES: usize = 32;

impl GraphState {
    /// Why capturing these shapes failed, if it did.
    fn failure(&self, key: &ShapeKey) -> Option<&str> {
        self.failed
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, reason)| reason.as_str())
    }
}

impl GraphExecutor {
    pub fn new(module: Arc<Module>, flags: Option<NumericFlags>, options: &ModelOptions) -> Self {
        GraphExecutor {
            module,
            flags,
            warmup_runs: options.graph_warmup_runs,
            state: Mutex::new(GraphState {
                graphs: LruCache::new(options.graph_cache_size),
                failed: Vec::new(),
                captures: 0,
                capture_time: Duration::ZERO,
                replays: 0,
            }),
        }
    }

    fn capture(&self, inputs: &[tch::Tensor]) -> Result<Graph> {
        let capture = || Graph::capture(&self.module, inputs, self.warmup_runs);
        match self.flags {
            Some(flags) => crate::numerics::with_flags(flags, capture),
            None => capture(),
        }
    }

    /// Captures a graph for these shapes now (compile-time warm-up). `Ok(false)`:
    /// the capture failed and these shapes will run plainly (the reason is
    /// logged and in the report).
    pub fn prepare(&self, inputs: &[tch::Tensor]) -> Result<bool> {
        self.graph_for(inputs).map(|graph| graph.is_some())
    }

    /// Why the capture for these shapes failed, if it did.
    pub fn fallback_reason(&self, inputs: &[tch::Tensor]) -> Option<String> {
        self.state
            .lock()
            .failure(&ShapeKey::of(inputs))
            .map(str::to_string)
    }

    /// The graph for these shapes, capturing it on first sight; `Ok(None)`
    /// when these shapes cannot be captured (they run plainly).
    fn graph_for(&self, inputs: &[tch::Tensor]) -> Result<Option<Arc<Mutex<Graph>>>> {
        let key = ShapeKey::of(inputs);
        // Captures happen under the lock: two threads seeing a new shape at
        // once must not capture it twice.
        let mut state = self.state.lock();
        if state.failure(&key).is_some() {
            return Ok(None);
        }
        if let Some(graph) = state.graphs.get(&key) {
            return Ok(Some(graph));
        }
        let started = Instant::now();
        match self.capture(inputs) {
            Ok(graph) => {
                state.captures += 1;
                state.capture_time += started.elapsed();
                let graph = Arc::new(Mutex::new(graph));
                state.graphs.insert(key, graph.clone());
                log::info!(
                    "captured a CUDA graph in {:.1} ms",
                    millis(started.elapsed())
                );
                Ok(Some(graph))
            }
            Err(err) => {
                log::warn!(
                    "CUDA graph capture failed for inputs [{}], running them without a graph: {err}",
                    key.label()
                );
                if state.failed.len() == MAX_FAILED_SHAPES {
                    state.failed.remove(0);
                }
                state.failed.push((key, err.to_string()));
                Ok(None)
            }
        }
    }

    pub fn run(&self, inputs: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        match self.graph_for(inputs)? {
            Some(graph) => {
                // One replay at a time per graph: its static buffers are shared.
                let outputs = graph.lock().replay(inputs)?;
                self.state.lock().replays += 1;
                Ok(outputs)
            }
            None => self.module.forward(inputs),
        }
    }

    pub fn report(&self) -> Json {
        let state = self.state.lock();
        Json::object()
            .with("captured", state.captures)
            .with("capture_ms", millis(state.capture_time))
            .with("replays", state.replays)
            .with(
                "cached_shapes",
                Json::Array(state.graphs.keys().map(|k| Json::from(k.label())).collect()),
            )
            .with("cache_capacity", state.graphs.capacity)
            .with("evictions", state.graphs.evictions())
            .with("baked_flags", self.flags.map(|f| f.label()))
            .with(
                "fallbacks",
                Json::Array(
                    state
                        .failed
                        .iter()
                        .map(|(k, reason)| {
                            Json::object()
                                .with("inputs", k.label())
                                .with("reason", reason.as_str())
                        })
                        .collect(),
                ),
            )
    }
}

/// What runs a model's forward pass now.
pub enum Executor {
    Eager(Arc<Module>),
    Graphs(Arc<GraphExecutor>),
    /// max-autotune without warm-up inputs: tuned on the first run's inputs.
    PendingAutotune,
}

impl Executor {
    pub fn run(&self, inputs: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        match self {
            Executor::Eager(module) => module.forward(inputs),
            Executor::Graphs(graphs) => graphs.run(inputs),
            Executor::PendingAutotune => Err(Error::new(
                ErrorKind::Internal,
                "max-autotune has not run yet",
            )),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Executor::Eager(_) => "eager",
            Executor::Graphs(_) => "cuda-graphs",
            Executor::PendingAutotune => "pending max-autotune (tunes on the first run)",
        }
    }
}

/// The outcome of compilation, as the report shows it.
pub struct Compiled {
    pub requested: CompileMode,
    pub requested_source: &'static str,
    pub executor: Executor,
    /// Which module runs: "as loaded", "frozen", "frozen + optimize_for_inference".
    pub module_label: String,
    pub chosen: String,
    pub why: String,
    pub notes: Vec<String>,
    pub compile_time: Duration,
    pub candidates: Vec<autotune::Candidate>,
}

impl Compiled {
    /// The base the compile steps fill in.
    pub(crate) fn placeholder(module: Arc<Module>) -> Self {
        Compiled::as_loaded(module)
    }

    fn as_loaded(module: Arc<Module>) -> Self {
        Compiled {
            requested: CompileMode::None,
            requested_source: "not compiled",
            executor: Executor::Eager(module),
            module_label: "as loaded".to_string(),
            chosen: "as loaded".to_string(),
            why: "not compiled yet".to_string(),
            notes: Vec::new(),
            compile_time: Duration::ZERO,
            candidates: Vec::new(),
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
            json = json.with("error_tolerance", tolerance).with(
                "candidates",
                Json::Array(
                    self.candidates
                        .iter()
                        .map(autotune::Candidate::to_json)
                        .collect(),
                ),
            );
        }
        if let Executor::Graphs(graphs) = &self.executor {
            json = json.with("cuda_graphs", graphs.report());
        }
        json
    }
}

pub struct Model {
    name: String,
    path: String,
    optimizer: Arc<Optimizer>,
    device: Device,
    original: Arc<Module>,
    arity: (usize, Option<usize>),
    file_size: u64,
    load_time: Duration,
    options: RwLock<ModelOptions>,
    compiled: RwLock<Compiled>,
    stats: Mutex<LatencyWindow>,
    batching: Mutex<BatchState>,
}

/// What batching learnt about this model.
#[derive(Default)]
struct BatchState {
    /// From recommend_batch.
    recommended: Option<i64>,
    /// A smaller size that out-of-memory retries forced.
    remembered: Option<i64>,
    oom_retries: u64,
    batched_calls: u64,
    last: Option<Recommendation>,
}

/// Recent calls kept for percentiles.
const LATENCY_WINDOW: usize = 4096;
/// recommend_batch's throughput trials stop at this batch or this time.
const MAX_TRIAL_BATCH: i64 = 512;
const TRIAL_BUDGET: Duration = Duration::from_secs(5);
const WARMUP_PER_TRIAL: usize = 3;
const TIMED_PER_TRIAL: usize = 5;

/// A size field of /proc/self/status ("VmHWM:   1692 kB"), in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

impl Model {
    /// Loads a TorchScript file onto the optimizer's device, in eval mode.
    pub fn load(optimizer: Arc<Optimizer>, path: &str, name: Option<&str>) -> Result<Model> {
        let started = Instant::now();
        let file_size = archive::check_torchscript_archive(Path::new(path))?;
        let device = optimizer.device();
        let module = Module::load(path, device.to_tch()).map_err(|err| {
            let kind = if err.kind() == ErrorKind::OutOfMemory {
                ErrorKind::OutOfMemory
            } else {
                ErrorKind::LoadFailed
            };
            Error::new(kind, format!("cannot load TorchScript model {path}")).with_cause(err)
        })?;
        let arity = module.arity()?;
        let name = name.map(str::to_string).unwrap_or_else(|| {
            Path::new(path)
                .file_stem()
                .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned())
        });
        let original = Arc::new(module);
        let load_time = started.elapsed();
        log::info!(
            "loaded {name} from {path} onto {device} in {:.1} ms",
            millis(load_time)
        );
        Ok(Model {
            name,
            path: path.to_string(),
            optimizer,
            device,
            original: original.clone(),
            arity,
            file_size,
            load_time,
            options: RwLock::new(ModelOptions::default()),
            compiled: RwLock::new(Compiled::as_loaded(original)),
            stats: Mutex::new(LatencyWindow::new(LATENCY_WINDOW)),
            batching: Mutex::new(BatchState::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn options(&self) -> ModelOptions {
        self.options.read().clone()
    }

    pub fn set_options(&self, options: ModelOptions) -> Result<()> {
        options.validate()?;
        *self.options.write() = options;
        Ok(())
    }

    fn check_inputs(&self, inputs: &[tch::Tensor]) -> Result<()> {
        let (required, total) = self.arity;
        let ok = inputs.len() >= required && total.is_none_or(|t| inputs.len() <= t);
        if !ok {
            let expected = match total {
                Some(t) if t == required => format!("{t}"),
                Some(t) => format!("{required} to {t}"),
                None => format!("at least {required}"),
            };
            return Err(Error::invalid_argument(format!(
                "model {} takes {expected} input(s), got {}",
                self.name,
                inputs.len()
            )));
        }
        Ok(())
    }

    /// Moves inputs to the model's device; no copy for those already there.
    fn to_device(&self, inputs: Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>> {
        let device = self.device.to_tch();
        inputs
            .into_iter()
            .map(|t| {
                if t.device() == device {
                    Ok(t)
                } else {
                    Ok(t.f_to_device(device)?)
                }
            })
            .collect()
    }

    fn synchronize(&self) {
        if let (DeviceKind::Cuda, Some(index)) = (self.device.kind, self.device.index) {
            tch::Cuda::synchronize(index as i64);
        }
    }

    /// One forward pass through whatever compilation chose, timed, under
    /// inference mode. Runs max-autotune first if it is still pending.
    fn forward_timed(&self, inputs: &[tch::Tensor]) -> Result<(Vec<tch::Tensor>, Duration)> {
        {
            let compiled = self.compiled.read();
            if !matches!(compiled.executor, Executor::PendingAutotune) {
                let _inference = InferenceModeGuard::enter()?;
                let started = Instant::now();
                let outputs = compiled.executor.run(inputs);
                self.synchronize();
                return Ok((outputs?, started.elapsed()));
            }
        }
        self.autotune_pending(inputs)?;
        self.forward_timed(inputs)
    }

    fn finish_outputs(&self, outputs: Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>> {
        let on_device = self.options.read().outputs_on_device;
        outputs
            .into_iter()
            .map(|t| {
                let t = if on_device {
                    t
                } else {
                    t.f_to_device(tch::Device::Cpu)?
                };
                Ok(t.f_contiguous()?)
            })
            .collect()
    }

    /// Runs the model. Inputs may be on the host or on the model's device;
    /// outputs land on the host unless `outputs_on_device` is set.
    pub fn run(&self, inputs: Vec<tch::Tensor>) -> Result<Vec<tch::Tensor>> {
        let result = self
            .check_inputs(&inputs)
            .and_then(|()| self.to_device(inputs))
            .and_then(|inputs| self.forward_timed(&inputs));
        match result {
            Ok((outputs, latency)) => {
                self.stats.lock().record(latency);
                self.finish_outputs(outputs)
            }
            Err(err) => {
                self.stats.lock().record_failure();
                Err(match err.kind() {
                    ErrorKind::InvalidArgument => err,
                    _ => err.context(format!("model {} rejected its inputs", self.name)),
                })
            }
        }
    }

    /// Compiles in `mode` (`None`: the optimizer's configured mode).
    pub fn compile(
        &self,
        mode: Option<CompileMode>,
        warmup_inputs: Option<Vec<tch::Tensor>>,
    ) -> Result<()> {
        let (mode, source) = match mode {
            Some(mode) => (mode, "call"),
            None => (self.optimizer.compile_mode(), "optimizer configuration"),
        };
        if self.device.kind == DeviceKind::Mps && mode != CompileMode::None {
            let mut compiled = self.compiled.write();
            *compiled = Compiled::as_loaded(self.original.clone());
            compiled.requested = mode;
            compiled.requested_source = source;
            compiled.why = "compilation is skipped on MPS, as the service does".to_string();
            return Err(Error::new(
                ErrorKind::CompileSkipped,
                format!(
                    "compile mode {mode} skipped on MPS (TorchScript freezing and CUDA graphs do not \
                     apply there); model {} runs as loaded",
                    self.name
                ),
            ));
        }
        let warmup_inputs = match warmup_inputs {
            Some(inputs) => {
                self.check_inputs(&inputs)?;
                Some(self.to_device(inputs)?)
            }
            None => None,
        };
        let started = Instant::now();
        let mut compiled = match mode {
            CompileMode::None => Compiled::as_loaded(self.original.clone()),
            CompileMode::Default => self.compile_default(warmup_inputs.as_deref())?,
            CompileMode::ReduceOverhead => {
                self.compile_reduce_overhead(warmup_inputs.as_deref())?
            }
            CompileMode::MaxAutotune => match &warmup_inputs {
                Some(inputs) => autotune::tune(self, inputs)?,
                None => Compiled {
                    executor: Executor::PendingAutotune,
                    why: "no warm-up inputs: max-autotune measures on the first run's inputs"
                        .to_string(),
                    ..Compiled::as_loaded(self.original.clone())
                },
            },
        };
        compiled.requested = mode;
        compiled.requested_source = source;
        compiled.compile_time = started.elapsed();
        if mode == CompileMode::None {
            compiled.chosen = "as loaded".to_string();
            compiled.why = "compile mode none".to_string();
        }
        log::info!(
            "compiled {} in {:.1} ms: {} ({})",
            self.name,
            millis(compiled.compile_time),
            compiled.chosen,
            compiled.why
        );
        *self.compiled.write() = compiled;
        Ok(())
    }

    /// Freezes with optimize_for_inference, falling back to freeze alone and
    /// then to the module as loaded; returns the module, its label and notes.
    pub(crate) fn frozen_module(&self) -> (Arc<Module>, String, Vec<String>) {
        let mut notes = Vec::new();
        match self.original.freeze(true) {
            Ok(module) => {
                return (
                    Arc::new(module),
                    "frozen + optimize_for_inference".to_string(),
                    notes,
                )
            }
            Err(err) => notes.push(format!(
                "optimize_for_inference failed, kept freeze only: {err}"
            )),
        }
        match self.original.freeze(false) {
            Ok(module) => (Arc::new(module), "frozen".to_string(), notes),
            Err(err) => {
                notes.push(format!("freeze failed, kept the module as loaded: {err}"));
                (self.original.clone(), "as loaded".to_string(), notes)
            }
        }
    }

    /// Runs a few passes so that TorchScript's profiling executor specialises
    /// for these shapes at compile time rather than on the first request.
    fn warm(&self, executor: &Executor, inputs: &[tch::Tensor]) -> Result<()> {
        let _inference = InferenceModeGuard::enter()?;
        for _ in 0..3 {
            executor.run(inputs)?;
        }
        self.synchronize();
        Ok(())
    }

    fn compile_default(&self, warmup_inputs: Option<&[tch::Tensor]>) -> Result<Compiled> {
        let (module, label, notes) = self.frozen_module();
        let executor = Executor::Eager(module);
        if let Some(inputs) = warmup_inputs {
            self.warm(&executor, inputs)?;
        }
        Ok(Compiled {
            executor,
            chosen: label.clone(),
            why: "default: freeze + optimize_for_inference".to_string(),
            module_label: label,
            notes,
            ..Compiled::as_loaded(self.original.clone())
        })
    }

    fn compile_reduce_overhead(&self, warmup_inputs: Option<&[tch::Tensor]>) -> Result<Compiled> {
        let mut compiled = self.compile_default(warmup_inputs)?;
        if self.device.kind != DeviceKind::Cuda {
            compiled.why = format!(
                "reduce-overhead uses CUDA graphs, which need CUDA; on {} it is default",
                self.device.kind.as_str()
            );
            return Ok(compiled);
        }
        let Executor::Eager(module) = &compiled.executor else {
            unreachable!("compile_default returns an eager executor")
        };
        let graphs = Arc::new(GraphExecutor::new(module.clone(), None, &self.options()));
        if let Some(inputs) = warmup_inputs {
            let _inference = InferenceModeGuard::enter()?;
            graphs.prepare(inputs)?;
        }
        compiled.chosen = format!("{} + CUDA graphs", compiled.module_label);
        compiled.why =
            "reduce-overhead: CUDA graphs over the frozen module, one per input shape".to_string();
        compiled.executor = Executor::Graphs(graphs);
        Ok(compiled)
    }

    fn autotune_pending(&self, inputs: &[tch::Tensor]) -> Result<()> {
        let mut compiled = self.compiled.write();
        if !matches!(compiled.executor, Executor::PendingAutotune) {
            return Ok(()); // another thread tuned it meanwhile
        }
        let started = Instant::now();
        let mut tuned = autotune::tune(self, inputs)?;
        tuned.requested = compiled.requested;
        tuned.requested_source = compiled.requested_source;
        tuned.compile_time = compiled.compile_time + started.elapsed();
        tuned
            .notes
            .push("tuned on the first run's inputs".to_string());
        *compiled = tuned;
        Ok(())
    }

    /// What max-autotune measured (empty for the other modes).
    pub fn autotune_candidates(&self) -> Vec<autotune::Candidate> {
        self.compiled.read().candidates.clone()
    }

    pub(crate) fn original(&self) -> &Arc<Module> {
        &self.original
    }

    pub(crate) fn synchronize_device(&self) {
        self.synchronize();
    }

    /// Runs `iterations` passes (not counted in the model's statistics) and
    /// reports the first call and the steady state.
    pub fn warmup(&self, inputs: Vec<tch::Tensor>, iterations: u32) -> Result<Json> {
        if iterations == 0 {
            return Err(Error::invalid_argument("iterations must be at least 1"));
        }
        self.check_inputs(&inputs)?;
        let inputs = self.to_device(inputs)?;
        let mut latencies = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let (_, latency) = self
                .forward_timed(&inputs)
                .map_err(|e| e.context(format!("warming up model {}", self.name)))?;
            latencies.push(latency);
        }
        let steady = Summary::of(&latencies[1..]);
        Ok(Json::object()
            .with("model", self.name.as_str())
            .with("iterations", iterations)
            .with("first_call_ms", millis(latencies[0]))
            .with("steady", steady.map_or(Json::Null, |s| s.to_json()))
            .with(
                "speedup_after_first",
                steady.map(|s| (millis(latencies[0]) / s.p50_ms.max(1e-6) * 100.0).round() / 100.0),
            )
            .with("executor", self.compiled.read().executor.label())
            .with("success", true))
    }

    /// Peak memory as the report gives it: the CUDA allocator's peak on CUDA,
    /// the process's peak resident size elsewhere.
    pub fn peak_memory(&self) -> (Option<u64>, &'static str) {
        match (self.device.kind, self.device.index) {
            (DeviceKind::Cuda, Some(index)) => (
                shim::device_memory_stats(index as i32)
                    .ok()
                    .map(|(_, peak, _)| peak),
                "CUDA caching allocator, peak allocated bytes on the device (all models)",
            ),
            _ => (peak_rss(), "process peak resident set size"),
        }
    }

    pub fn report(&self) -> Json {
        let options = self.options();
        let stats = self.stats.lock();
        let (peak, peak_source) = self.peak_memory();
        Json::object()
            .with("name", self.name.as_str())
            .with("path", self.path.as_str())
            .with("file_bytes", self.file_size)
            .with("device", self.device.to_string())
            .with("load_ms", millis(self.load_time))
            .with(
                "inputs",
                Json::object()
                    .with("required", self.arity.0)
                    .with("max", self.arity.1),
            )
            .with("calls", stats.calls())
            .with("failed_calls", stats.failures())
            .with(
                "latency",
                stats.summary().map_or(Json::Null, |s| s.to_json()),
            )
            .with("peak_memory_bytes", peak)
            .with("peak_memory_source", peak_source)
            .with("outputs_on_device", options.outputs_on_device)
            .with(
                "compile",
                self.compiled.read().to_json(options.error_tolerance),
            )
            .with("batching", {
                let b = self.batching.lock();
                Json::object()
                    .with("recommended", b.recommended)
                    .with("remembered_after_oom", b.remembered)
                    .with("batched_calls", b.batched_calls)
                    .with("oom_retries", b.oom_retries)
                    .with("service_rule", self.optimizer.optimal_batch_size())
                    .with(
                        "last_recommendation",
                        b.last.as_ref().map_or(Json::Null, Recommendation::to_json),
                    )
            })
    }

    /// The module plain runs go through: the compiled one, or as loaded.
    /// Batch measurements use it directly, so that they do not fill the
    /// CUDA-graph cache with one graph per trial size.
    fn plain_module(&self) -> Arc<Module> {
        match &self.compiled.read().executor {
            Executor::Eager(module) => module.clone(),
            Executor::Graphs(graphs) => graphs.module.clone(),
            Executor::PendingAutotune => self.original.clone(),
        }
    }

    /// Bytes in use beyond what was in use before, at the peak of `work`: the
    /// CUDA allocator's peak on CUDA; the resident set's high-water mark on
    /// Linux (reset through /proc/self/clear_refs) elsewhere.
    fn peak_during(&self, work: impl FnOnce() -> Result<()>) -> Result<Option<u64>> {
        match (self.device.kind, self.device.index) {
            (DeviceKind::Cuda, Some(index)) => {
                let index = index as i32;
                shim::device_empty_cache()?;
                shim::device_reset_peak(index)?;
                let (before, _, _) = shim::device_memory_stats(index)?;
                work()?;
                let (_, peak, _) = shim::device_memory_stats(index)?;
                Ok(Some(peak.saturating_sub(before)))
            }
            _ => {
                let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
                let before = proc_status_bytes("VmRSS:");
                work()?;
                let peak = proc_status_bytes("VmHWM:");
                Ok(match (reset, before, peak) {
                    (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
                    _ => None,
                })
            }
        }
    }

    fn free_memory(&self) -> (Option<u64>, &'static str) {
        match (self.device.kind, self.device.index) {
            (DeviceKind::Cuda, Some(index)) => (
                shim::accelerator_memory_info(index as i32)
                    .ok()
                    .map(|(free, _)| free),
                "CUDA caching allocator peak per batch; free device memory",
            ),
            // MPS shares the host's memory.
            _ => (
                crate::device::host::available_memory(),
                "resident-set high-water mark per batch; available host memory",
            ),
        }
    }

    /// Measures peak memory at batch 1, 2, 4 and 8 and throughput at doubling
    /// batches from one sample (dimension 0 of size 1), and recommends the
    /// smaller of the memory limit and the throughput knee. Remembered for
    /// run_batched.
    pub fn recommend_batch(&self, sample: Vec<tch::Tensor>) -> Result<Recommendation> {
        self.check_inputs(&sample)?;
        if let Some(i) = sample.iter().position(|t| t.dim() == 0 || t.size()[0] != 1) {
            return Err(Error::invalid_argument(format!(
                "sample_inputs[{i}] has shape {:?}; a sample has dimension 0 of size 1",
                sample[i].size()
            )));
        }
        let sample = self.to_device(sample)?;
        let module = self.plain_module();
        let margin = self.options().memory_margin;
        let batch_of = |b: i64| -> Result<Vec<tch::Tensor>> {
            sample
                .iter()
                .map(|t| {
                    let mut repeats = vec![1i64; t.dim()];
                    repeats[0] = b;
                    Ok(t.f_repeat(&repeats)?)
                })
                .collect()
        };
        let _inference = InferenceModeGuard::enter()?;
        let run = |inputs: &[tch::Tensor]| -> Result<()> {
            module.forward(inputs)?;
            self.synchronize();
            Ok(())
        };
        run(&sample)?; // lazy initialisation must not count as memory per sample

        let mut rec = Recommendation {
            margin,
            ..Default::default()
        };
        let (free, source) = self.free_memory();
        rec.free_bytes = free;
        rec.memory_source = source.to_string();
        for b in [1i64, 2, 4, 8] {
            let inputs = batch_of(b)?;
            match self.peak_during(|| run(&inputs)) {
                Ok(Some(bytes)) => rec.memory_points.push((b, bytes)),
                Ok(None) => break,
                Err(err) if err.kind() == ErrorKind::OutOfMemory => break,
                Err(err) => return Err(err),
            }
        }
        if let Some((per_sample, fixed)) = batching::fit_memory(&rec.memory_points) {
            rec.per_sample_bytes = Some(per_sample);
            rec.fixed_bytes = Some(fixed);
            if let Some(free) = free {
                rec.memory_limit = batching::max_batch_for_memory(free, margin, per_sample, fixed);
            }
        }

        // Throughput at doubling batches, within the memory limit and a time budget.
        let started = Instant::now();
        let mut b = 1i64;
        while b <= MAX_TRIAL_BATCH && rec.memory_limit.is_none_or(|limit| b <= limit.max(1)) {
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
                    let _ = shim::device_empty_cache();
                    rec.memory_limit = Some(rec.memory_limit.map_or(b / 2, |l| l.min(b / 2)));
                    break;
                }
                Some(err) => return Err(err),
                None => {}
            }
            let median = Summary::of(&times).map_or(f64::INFINITY, |s| s.p50_ms);
            rec.throughput_points
                .push((b, b as f64 * 1e3 / median.max(1e-6)));
            rec.throughput_knee = batching::throughput_knee(&rec.throughput_points);
            if rec.throughput_knee.is_some() || started.elapsed() > TRIAL_BUDGET {
                break;
            }
            b *= 2;
        }
        rec.decide();
        log::info!(
            "recommended batch for {}: {} ({})",
            self.name,
            rec.batch,
            rec.reason
        );
        let mut state = self.batching.lock();
        state.recommended = Some(rec.batch);
        state.remembered = None;
        state.last = Some(rec.clone());
        Ok(rec)
    }

    /// Runs inputs of any size along dimension 0 in chunks of at most
    /// `max_batch` (0: the remembered, recommended or service size), halving
    /// the chunk on out-of-memory; outputs are concatenated along dimension 0.
    pub fn run_batched(
        &self,
        inputs: Vec<tch::Tensor>,
        max_batch: i64,
    ) -> Result<Vec<tch::Tensor>> {
        self.check_inputs(&inputs)?;
        if max_batch < 0 {
            return Err(Error::invalid_argument(format!(
                "max_batch is {max_batch}; 0 means automatic"
            )));
        }
        let total = match inputs.first() {
            Some(t) if t.dim() > 0 => t.size()[0],
            _ => {
                return Err(Error::invalid_argument(
                    "run_batched needs inputs with a batch dimension 0",
                ))
            }
        };
        if let Some(i) = inputs
            .iter()
            .position(|t| t.dim() == 0 || t.size()[0] != total)
        {
            return Err(Error::invalid_argument(format!(
                "inputs[{i}] has shape {:?}; every input needs dimension 0 of size {total}",
                inputs[i].size()
            )));
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
        let device = self.device;
        let (chunks, retries, final_chunk) = batching::run_in_chunks(
            total,
            chunk,
            |start, len| {
                let part = inputs
                    .iter()
                    .map(|t| Ok(t.f_narrow(0, start, len)?))
                    .collect::<Result<Vec<_>>>()?;
                self.run(part)
            },
            || {
                if device.kind == DeviceKind::Cuda {
                    let _ = shim::device_empty_cache();
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
        (0..outputs_per_chunk)
            .map(|k| {
                let parts: Vec<&tch::Tensor> = chunks.iter().map(|c| &c[k]).collect();
                if parts.len() == 1 {
                    return Ok(parts[0].shallow_clone());
                }
                tch::Tensor::f_cat(&parts, 0).map_err(|e| {
                    Error::from(e).context(format!("concatenating output {k} along dimension 0"))
                })
            })
            .collect()
    }
}

impl Error {
    /// Keeps `cause`'s kind-independent message chain under this error.
    pub fn with_cause(self, cause: Error) -> Error {
        let mut err = cause.context(self.message().to_string());
        err.set_kind(self.kind());
        err
    }
}

/// The process's peak resident set size in bytes (getrusage).
pub fn peak_rss() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    // SAFETY: initialised by a successful getrusage (zeroed otherwise).
    let usage = unsafe { usage.assume_init() };
    // Linux reports kilobytes; macOS bytes.
    let scale = if cfg!(target_os = "macos") { 1 } else { 1024 };
    (ok && usage.ru_maxrss > 0).then(|| usage.ru_maxrss as u64 * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: i64) -> ShapeKey {
        ShapeKey(vec![(vec![n, 3], tch::Kind::Float, tch::Device::Cpu)])
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut cache = LruCache::new(2);
        cache.insert(key(1), 1);
        cache.insert(key(2), 2);
        assert_eq!(cache.get(&key(1)), Some(1)); // 1 is now the most recent
        cache.insert(key(3), 3);
        assert_eq!(cache.get(&key(2)), None);
        assert_eq!(cache.get(&key(1)), Some(1));
        assert_eq!(cache.get(&key(3)), Some(3));
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.len(), 2);
        assert_eq!(key(4).label(), "4x3:Float");
    }

    #[test]
    fn options_are_validated() {
        assert!(ModelOptions::default().validate().is_ok());
        for bad in [
            ModelOptions {
                error_tolerance: -1.0,
                ..Default::default()
            },
            ModelOptions {
                error_tolerance: f64::NAN,
                ..Default::default()
            },
            ModelOptions {
                graph_cache_size: 0,
                ..Default::default()
            },
            ModelOptions {
                graph_warmup_runs: 1000,
                ..Default::default()
            },
        ] {
            assert_eq!(
                bad.validate().unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }
}
