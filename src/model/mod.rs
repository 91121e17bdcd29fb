//! Models: a model file (TorchScript or an AOTInductor package) loaded onto
//! the optimizer's device, compiled in one of the service's modes, run from
//! any number of threads, and measured. The format is behind the engine seam
//! (src/engine); this module is what every format shares.
//!
//! One file per concern: `options` (the caller's knobs and their bounds),
//! `compile` (the modes, and max-autotune's cache), `batched` (run_batched,
//! and batch dimensions), `recommend` (recommend_batch), `memory` (memory
//! figures), `exclusive` (one call at a time for a model that keeps state),
//! `outputs` (outputs that own their memory), `report` (what compile chose,
//! reports kept for a second read).

mod arguments;
mod batched;
mod cache_folder;
mod candidates;
mod compile;
mod exclusive;
mod forms;
mod hash_memo;
mod in_stead;
mod load_hint;
mod memory;
mod options;
mod outputs;
mod recommend;
mod reference;
mod report;
mod tuning;
mod tuning_cache;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::device::{Device, DeviceKind};
use crate::engine::{Engine, Format, MethodSchema, Variant};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::graphs;
use crate::optimizer::Optimizer;
use crate::runtime::settings::InferenceModeGuard;
use crate::runtime::Tensor;
use crate::stats::{millis, LatencyWindow};
use crate::value::{self, Value};

pub use batched::BatchDims;
pub use options::{
    ModelOptions, Precision, ReducedTolerance, DEFAULT_REDUCED_TOLERANCE,
    DEFAULT_TUNING_BUDGET_CPU_MS, DEFAULT_TUNING_BUDGET_CUDA_MS, MAX_TUNING_BUDGET_MS,
    MAX_WARMUP_ITERATIONS,
};
pub(crate) use report::Compiled;
pub use report::ReportKind;

/// Recent calls kept for percentiles.
const LATENCY_WINDOW: usize = 4096;

const NO_OUTPUT_COUNT: usize = usize::MAX;

/// A form a `default` compile built: (form, thread count, the form built at
/// that count).
type BuiltForm = (Variant, Option<usize>, Arc<dyn Engine>);

pub struct Model {
    name: String,
    path: String,
    optimizer: Arc<Optimizer>,
    device: Device,
    original: Arc<dyn Engine>,
    file_size: u64,
    /// The model file as it was when loaded (device, inode, size, times).
    file_identity: Option<forms::FileIdentity>,
    load_time: Duration,
    options: RwLock<ModelOptions>,
    /// Swapped whole by compile; a run works on the clone it took.
    compiled: RwLock<Arc<Compiled>>,
    /// Held by the one thread tuning a pending max-autotune (others run the
    /// model as loaded meanwhile rather than wait).
    tuning: Mutex<()>,
    stats: Mutex<LatencyWindow>,
    batching: Mutex<batched::BatchState>,
    /// Outputs of the last tensor-only run (for perfopt_model_output_count);
    /// NO_OUTPUT_COUNT before any. An atomic: a lock per run only to store it
    /// was on the hot path.
    last_output_count: AtomicUsize,
    last_reports: Mutex<report::LastReports>,
    /// Optimised forms built by `default` compiles, reused by the next.
    built_forms: Mutex<Vec<BuiltForm>>,
    /// For a model whose methods write its attributes: one call at a time.
    exclusive: Option<exclusive::Exclusive>,
    /// forward()'s return type, when it holds more than tensors (run refuses).
    non_tensor_returns: Option<String>,
    /// A bundle's forms; `None` for a model file.
    forms: Option<forms::Forms>,
    /// What the tuning cache's last choice changed in the load.
    load_note: Option<String>,
    /// Where the model loaded as the module the tuning cache saved, in the
    /// stead of its file: that file, loaded when max-autotune measures.
    in_stead: Option<in_stead::InStead>,
}

impl Model {
    /// Loads a model file onto the optimizer's device: a TorchScript file or
    /// an AOTInductor package, told apart by their contents.
    pub fn load(optimizer: Arc<Optimizer>, path: &str, name: Option<&str>) -> Result<Model> {
        let started = Instant::now();
        // Before anything reads it: the tuning cache later hashes the file,
        // and must know it is still the one that was loaded.
        let file_identity = forms::FileIdentity::of(Path::new(path));
        let device = optimizer.device();
        let load_hint::Started {
            loaded,
            note: load_note,
            in_stead_of,
        } = load_hint::load(&optimizer, path)?;
        let name = name.map(str::to_string).unwrap_or_else(|| {
            Path::new(path)
                .file_stem()
                .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned())
        });
        let load_time = started.elapsed();
        let writes_state = loaded.engine.writes_state();
        let inputs = loaded.engine.inputs();
        log::info!(
            "loaded {name} ({}) from {path} onto {device} in {:.1} ms{}",
            loaded.engine.format().as_str(),
            millis(load_time),
            if writes_state {
                "; it writes its attributes, so it runs one call at a time"
            } else {
                ""
            }
        );
        let non_tensor_returns = loaded
            .engine
            .methods()
            .iter()
            .find(|m| m.name == "forward" && m.returns_non_tensors())
            .map(|m| {
                m.returns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        Ok(Model {
            name,
            path: path.to_string(),
            optimizer,
            device,
            original: loaded.engine.clone(),
            file_size: loaded.file_size,
            file_identity,
            load_time,
            options: RwLock::new(ModelOptions::default()),
            compiled: RwLock::new(Arc::new(Compiled::as_loaded(loaded.engine))),
            tuning: Mutex::new(()),
            stats: Mutex::new(LatencyWindow::new(LATENCY_WINDOW)),
            batching: Mutex::new(batched::BatchState::default()),
            last_output_count: AtomicUsize::new(NO_OUTPUT_COUNT),
            last_reports: Mutex::new(report::LastReports::default()),
            built_forms: Mutex::new(Vec::new()),
            exclusive: writes_state.then(exclusive::Exclusive::new),
            non_tensor_returns,
            forms: loaded
                .bundle
                .map(|bundle| forms::Forms::new(bundle, &inputs)),
            load_note,
            in_stead: in_stead_of,
        })
    }

    /// Whether the model's methods write its attributes (it then runs one
    /// call at a time).
    pub fn keeps_state(&self) -> bool {
        self.exclusive.is_some()
    }

    /// Held by every call that runs a model which keeps state, for the whole
    /// call; `None` for the others.
    fn one_at_a_time(&self) -> Result<Option<exclusive::ExclusiveGuard<'_>>> {
        self.exclusive
            .as_ref()
            .map(|e| e.enter(&self.name))
            .transpose()
    }

    /// The engine whose state is the model's now: the one `compiled` runs
    /// (the model as loaded while max-autotune waits for its first run).
    fn live_engine(&self, compiled: &Compiled) -> Arc<dyn Engine> {
        compiled
            .executor
            .engine()
            .cloned()
            .unwrap_or_else(|| self.original.clone())
    }

    /// Makes `compiled` the model's form, carrying the state of the form it
    /// replaces over (a stream continues where it stopped). Callers of a
    /// model that keeps state hold its one-at-a-time lock.
    fn install(&self, compiled: Arc<Compiled>) -> Result<()> {
        let previous = self.live_engine(&self.current());
        let next = self.live_engine(&compiled);
        if self.keeps_state() && !Arc::ptr_eq(&previous, &next) {
            next.adopt_state(previous.as_ref())
                .map_err(|e| e.context(format!("carrying model {}'s state over", self.name)))?;
        }
        *self.compiled.write() = compiled;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The format of the form that runs now (a bundle's chosen form).
    pub fn format(&self) -> Format {
        self.live_engine(&self.current()).format()
    }

    pub fn options(&self) -> ModelOptions {
        self.options.read().clone()
    }

    pub fn set_options(&self, options: ModelOptions) -> Result<()> {
        options.validate()?;
        let fp32 = options.precision == Precision::Fp32;
        *self.options.write() = options;
        // Unlike the other options, fp32 takes effect now (compile.rs).
        match fp32 {
            true => self.leave_reduced_precision(),
            false => Ok(()),
        }
    }

    /// Every method and its schema.
    pub fn methods(&self) -> Vec<MethodSchema> {
        self.original.methods().to_vec()
    }

    /// How many tensors perfopt_model_run hands out, without running: from
    /// the schema (a Tensor, a Tuple of Tensors), else from the last run.
    pub fn output_count(&self) -> Option<usize> {
        self.schema("forward")
            .ok()
            .and_then(|s| s.tensor_outputs())
            .or_else(|| {
                Some(self.last_output_count.load(Ordering::Relaxed))
                    .filter(|&n| n != NO_OUTPUT_COUNT)
            })
    }

    /// Waits for this thread's work on the model's device (measurements only:
    /// a run's own host copy waits for what it needs).
    pub(crate) fn synchronize(&self) -> Result<()> {
        if let (DeviceKind::Cuda, Some(index)) = (self.device.kind, self.device.index) {
            crate::runtime::cuda::synchronize_stream(index as i32)?;
        }
        Ok(())
    }

    fn current(&self) -> Arc<Compiled> {
        self.compiled.read().clone()
    }

    /// The executor a forward pass uses now, tuning a pending max-autotune
    /// first (or, while another thread tunes it, the model as loaded).
    fn executor_for(&self, args: &[Value]) -> Result<Arc<Compiled>> {
        let compiled = self.current();
        if !matches!(compiled.executor, Executor::PendingAutotune) {
            return Ok(compiled);
        }
        match self.tune_pending(args)? {
            Some(tuned) => Ok(tuned),
            None => Ok(Arc::new(Compiled::as_loaded(self.original.clone()))),
        }
    }

    /// One forward pass through whatever compilation chose, under inference
    /// mode, with other perfopt work kept off a CUDA device while a graph is
    /// captured.
    fn forward_once(&self, compiled: &Compiled, args: &[Value]) -> Result<Value> {
        let _inference = InferenceModeGuard::for_call()?;
        let _gate = (self.device.kind == DeviceKind::Cuda
            && matches!(compiled.executor, Executor::Plain(_)))
        .then(graphs::device_run_gate);
        compiled.executor.forward(args)
    }

    /// check, move, run, hand out: the path of every forward call. Callers
    /// hold the one-at-a-time lock of a model that keeps state.
    fn forward_call_held(&self, args: Vec<Value>) -> Result<Value> {
        let started = Instant::now();
        let result = self
            .check_args("forward", &args)
            .and_then(|()| self.to_device(args))
            .and_then(|args| {
                let inputs = outputs::storages(&args)?;
                let compiled = self.executor_for(&args)?;
                let value = self.forward_once(&compiled, &args)?;
                outputs::finish(value, &inputs, self.options.read().outputs_on_device)
            });
        match result {
            Ok(value) => {
                self.stats.lock().record(started.elapsed());
                Ok(value)
            }
            Err(err) => {
                self.stats.lock().record_failure();
                Err(match err.kind() {
                    ErrorKind::InvalidArgument
                    | ErrorKind::OutOfMemory
                    | ErrorKind::UnsupportedModel => err,
                    _ => err.context(format!("running model {}", self.name)),
                })
            }
        }
    }

    /// Runs forward() on tensors; its result's tensors, flattened. Inputs may
    /// be on the host or on the model's device; outputs land on the host
    /// unless `outputs_on_device` is set, and never share memory with an
    /// input or a parameter.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_args(value::tensor_args(inputs))
    }

    /// As [`Model::run`], with arguments of any kind.
    pub fn run_args(&self, args: Vec<Value>) -> Result<Vec<Tensor>> {
        let _one = self.one_at_a_time()?;
        self.run_args_held(args)
    }

    fn run_args_held(&self, args: Vec<Value>) -> Result<Vec<Tensor>> {
        if let Some(returns) = &self.non_tensor_returns {
            // Refused before it runs: a run would change a model's state.
            // A dict passes through no perfopt call; other results through
            // perfopt_model_call.
            return Err(if returns.contains("Dict[") {
                Error::new(
                    ErrorKind::UnsupportedModel,
                    format!(
                        "forward() of model {} returns {returns}, which perfopt cannot pass on: \
                         it passes tensors, int, float, bool, str, None, lists and tuples (return \
                         a tuple)",
                        self.name
                    ),
                )
            } else {
                Error::invalid_argument(format!(
                    "forward() of model {} returns {returns}, and perfopt_model_run passes \
                     tensors only: call it with perfopt_model_call",
                    self.name
                ))
            });
        }
        let outputs = self.forward_call_held(args)?.into_tensors()?;
        self.last_output_count
            .store(outputs.len(), Ordering::Relaxed);
        Ok(outputs)
    }

    /// Calls any method with arguments of any kind and returns its result as
    /// it is. forward() goes through what compilation chose; the other
    /// methods run on the same compiled module (so they see the state that
    /// forward() changes).
    pub fn call(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        let _one = self.one_at_a_time()?;
        if method == "forward" {
            return self.forward_call_held(args);
        }
        self.check_args(method, &args)?;
        let args = self.to_device(args)?;
        let inputs = outputs::storages(&args)?;
        let engine = self.live_engine(&self.current());
        crate::fork::mark_used();
        let value = {
            let _inference = InferenceModeGuard::for_call()?;
            let _gate = (self.device.kind == DeviceKind::Cuda).then(graphs::device_run_gate);
            engine.call(method, &args)
        }
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidArgument | ErrorKind::OutOfMemory => err,
            _ => err.context(format!("calling {method}() of model {}", self.name)),
        })?;
        outputs::finish(value, &inputs, self.options.read().outputs_on_device)
    }

    /// Runs `iterations` passes (not counted in the model's statistics) and
    /// reports the first call and the steady state. A model's state is left
    /// as it was found. The report is kept for [`Model::last_report`].
    pub fn warmup(&self, args: Vec<Value>, iterations: u32) -> Result<String> {
        if iterations == 0 || iterations > MAX_WARMUP_ITERATIONS {
            return Err(Error::invalid_argument(format!(
                "iterations is {iterations}; it must be 1 to {MAX_WARMUP_ITERATIONS}"
            )));
        }
        self.check_args("forward", &args)?;
        let args = self.to_device(args)?;
        let _one = self.one_at_a_time()?;
        let compiled = self.executor_for(&args)?;
        let engine = compiled.executor.engine().cloned();
        let saved = engine
            .as_ref()
            .map(|e| e.save_state())
            .transpose()?
            .flatten();
        let mut latencies = Vec::new();
        latencies
            .try_reserve_exact(iterations as usize)
            .map_err(|_| Error::new(ErrorKind::OutOfMemory, "no memory for the latencies"))?;
        let result = (|| {
            for _ in 0..iterations {
                let started = Instant::now();
                self.forward_once(&compiled, &args)?;
                self.synchronize()?;
                latencies.push(started.elapsed());
            }
            Ok(())
        })();
        if let (Some(engine), Some(state)) = (&engine, &saved) {
            engine.restore_state(state)?;
        }
        result.map_err(|e: Error| e.context(format!("warming up model {}", self.name)))?;
        let json = report::warmup_json(&self.name, &latencies, compiled.executor.label());
        let text = json.to_string();
        self.last_reports.lock().warmup = Some(text.clone());
        Ok(text)
    }

    /// The last report of a call that does work to make it (warm-up,
    /// recommend_batch), so that a caller whose buffer was too small reads it
    /// without running the work again.
    pub fn last_report(&self, kind: ReportKind) -> Option<String> {
        let reports = self.last_reports.lock();
        match kind {
            ReportKind::Warmup => reports.warmup.clone(),
            ReportKind::RecommendBatch => reports.recommend_batch.clone(),
        }
    }

    /// The process's peak memory, as reports give it.
    pub fn peak_memory(&self) -> (Option<u64>, &'static str) {
        memory::process_peak(self.device)
    }
}
