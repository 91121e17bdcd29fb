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
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            outputs_on_device: false,
            error_tolerance: 1e-3,
            graph_cache_size: 8,
            graph_warmup_runs: 3,
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
    module: Arc<Module>,
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

    /// Captures a graph for these shapes now (compile-time warm-up).
    pub fn prepare(&self, inputs: &[tch::Tensor]) -> Result<()> {
        self.graph_for(inputs).map(|_| ())
    }

    /// The graph for these shapes, capturing it on first sight; `Ok(None)`
    /// when these shapes cannot be captured (they run plainly).
    fn graph_for(&self, inputs: &[tch::Tensor]) -> Result<Option<Arc<Mutex<Graph>>>> {
        let key = ShapeKey::of(inputs);
        // Captures happen under the lock: two threads seeing a new shape at
        // once must not capture it twice.
        let mut state = self.state.lock();
        if state.failed.iter().any(|(k, _)| *k == key) {
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
}

/// Recent calls kept for percentiles.
const LATENCY_WINDOW: usize = 4096;

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
