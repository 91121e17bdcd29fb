//! Compile modes, as the service names them:
//! - `none`: the model as loaded (under the optimizer's tuning cache, as
//!   its tuning last chose: load_hint.rs).
//! - `default`: the engine's best optimised form (TorchScript: freeze +
//!   optimize_for_inference, falling back to freeze alone, then to the module
//!   as loaded, with the reason kept; a package runs as compiled).
//! - `reduce-overhead`: `default` plus CUDA graphs, one per input shape. On
//!   the CPU it is `default`.
//! - `max-autotune`: measures the candidates within a budget and keeps the
//!   fastest within the error tolerance (tuning.rs, src/autotune/),
//!   remembered on disk when a tuning cache folder is set.
//!
//! Warm-up, tuning and capture runs leave a model's state as they found it.
//! On MPS compilation is skipped (PERFOPT_COMPILE_SKIPPED), as the service does.

use std::sync::Arc;
use std::time::Instant;

use super::{Compiled, Model};
use crate::config::CompileMode;
use crate::device::DeviceKind;
use crate::engine::{Engine, Variant};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::graphs::GraphCache;
use crate::numerics::NumericFlags;
use crate::runtime::settings::InferenceModeGuard;
use crate::stats::millis;
use crate::value::Value;

/// Runs that let TorchScript's profiling executor specialise for the
/// warm-up shapes at compile time rather than on the first request.
const COMPILE_WARM_RUNS: usize = 3;

impl Model {
    /// Compiles in `mode` (`None`: the optimizer's configured mode).
    pub fn compile(&self, mode: Option<CompileMode>, warmup: Option<Vec<Value>>) -> Result<()> {
        let (mode, source) = match mode {
            Some(mode) => (mode, "call"),
            None => (self.optimizer.compile_mode(), "optimizer configuration"),
        };
        let _one = self.one_at_a_time()?;
        if self.device.kind == DeviceKind::Mps && mode != CompileMode::None {
            let compiled = Compiled {
                requested: mode,
                requested_source: source,
                why: "compilation is skipped on MPS, as the service does".to_string(),
                ..Compiled::as_loaded(self.original.clone())
            };
            self.install(Arc::new(compiled))?;
            return Err(Error::new(
                ErrorKind::CompileSkipped,
                format!(
                    "compile mode {mode} skipped on MPS (freezing and CUDA graphs do not apply \
                     there); model {} runs as loaded",
                    self.name
                ),
            ));
        }
        let warmup = match warmup {
            Some(args) => {
                self.check_args("forward", &args)?;
                Some(self.to_device(args)?)
            }
            None => None,
        };
        let started = Instant::now();
        let mut warning = None;
        let mut compiled = match mode {
            CompileMode::None => Compiled {
                why: "compile mode none".to_string(),
                ..Compiled::as_loaded(self.at_threads(self.original.clone(), self.model_threads())?)
            },
            CompileMode::Default => self.compile_default(warmup.as_deref())?,
            CompileMode::ReduceOverhead => self.compile_reduce_overhead(warmup.as_deref())?,
            CompileMode::MaxAutotune => match &warmup {
                Some(args) => {
                    let (compiled, warn) = self.autotune(args, started)?;
                    warning = warn;
                    compiled
                }
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
        compiled.notes.extend(self.other_methods_note(&compiled));
        compiled.notes.extend(self.threads_not_set_note(&compiled));
        let summary = format!(
            "compiled {} in {:.1} ms: {} ({})",
            self.name,
            millis(compiled.compile_time),
            compiled.chosen,
            compiled.why
        );
        self.install(Arc::new(compiled))?;
        // Logged once no lock is held (a model that keeps state holds its
        // records back until its lock is free): a host callback may call back in.
        log::info!("{summary}");
        if let Some(warning) = warning {
            log::warn!("model {}: {warning}", self.name);
        }
        Ok(())
    }

    /// Under the fp32 precision option a reduced-precision form that
    /// max-autotune chose before stops running at once (a caller who asks
    /// for fp32 gets fp32 answers): the model runs as loaded until its next
    /// compile, and the report says why.
    pub(super) fn leave_reduced_precision(&self) -> Result<()> {
        let current = self.current();
        let chosen = current.candidates.iter().find(|c| c.name == current.chosen);
        let Some(precision) = chosen.and_then(|c| c.precision.clone()) else {
            return Ok(());
        };
        let _one = self.one_at_a_time()?;
        let as_loaded = self.at_threads(self.original.clone(), self.model_threads())?;
        let compiled = Compiled {
            requested: current.requested,
            requested_source: current.requested_source,
            why: format!(
                "the precision option became fp32: the {precision} form max-autotune chose no \
                 longer runs; the model runs as loaded until it is compiled again"
            ),
            ..Compiled::as_loaded(as_loaded)
        };
        self.install(Arc::new(compiled))
    }

    /// Why the model's `threads` option does not apply to the form that runs,
    /// where it does not (a runtime whose pool is the process's).
    fn threads_not_set_note(&self, compiled: &Compiled) -> Option<String> {
        let threads = self.options().threads;
        let why = compiled.executor.engine()?.threads_fixed()?;
        (threads != 0).then(|| format!("the threads option ({threads}) does not apply: {why}"))
    }

    /// What compilation does to the methods other than forward().
    pub(super) fn other_methods_note(&self, compiled: &Compiled) -> Option<String> {
        let others: Vec<&str> = self
            .original
            .methods()
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| *n != "forward")
            .collect();
        if others.is_empty() {
            return None;
        }
        Some(format!(
            "other methods ({}) run on the same form as forward ({}), kept by freezing with the \
             attributes they use; CUDA graphs apply to forward only",
            others.join(", "),
            compiled.module_label
        ))
    }

    /// Runs `work` and puts the engine's state back as it was.
    pub(super) fn keeping_state<T>(
        &self,
        engine: &Arc<dyn Engine>,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let saved = engine.save_state()?;
        let result = work();
        if let Some(state) = &saved {
            engine.restore_state(state)?;
        }
        result
    }

    /// A few forward passes at compile time, leaving the state as found.
    fn warm(&self, engine: &Arc<dyn Engine>, args: &[Value]) -> Result<()> {
        crate::fork::mark_used();
        self.keeping_state(engine, || {
            let _inference = InferenceModeGuard::enter()?;
            for _ in 0..COMPILE_WARM_RUNS {
                engine.call("forward", args)?;
            }
            self.synchronize()
        })
    }

    /// The model's `variant` at `threads` (`None`: the optimizer's count),
    /// built once and kept: each `default` compile of a live model built (and
    /// libtorch's freeze kept) a new form, 734-979 KiB on the fixtures, that
    /// stayed until the model was freed. The kept form takes over the live
    /// state like a new one (compile carries it over). A form is built at the
    /// count it runs at: oneDNN fixes a primitive's thread count when it is
    /// made (a frozen conv's prepacked weights), so a form frozen at 2 threads
    /// kept using 2 when called at 1.
    fn built_form(&self, variant: &Variant, threads: Option<usize>) -> Result<Arc<dyn Engine>> {
        self.kept_form(variant, threads, || {
            self.at_threads(self.original.clone(), threads)?
                .build_variant(variant)
        })
    }

    /// The form kept under `variant` at `threads`, else the one `build`
    /// makes, kept for the next caller.
    pub(super) fn kept_form(
        &self,
        variant: &Variant,
        threads: Option<usize>,
        build: impl FnOnce() -> Result<Arc<dyn Engine>>,
    ) -> Result<Arc<dyn Engine>> {
        let kept = |forms: &[super::BuiltForm]| {
            forms
                .iter()
                .find(|(v, t, _)| v == variant && *t == threads)
                .map(|(_, _, form)| form.clone())
        };
        if let Some(form) = kept(&self.built_forms.lock()) {
            return Ok(form);
        }
        // Built outside the lock: freezing takes long, and two threads that
        // build the same form at once keep the first.
        let form = build()?;
        let mut forms = self.built_forms.lock();
        if let Some(form) = kept(&forms) {
            return Ok(form);
        }
        forms.push((variant.clone(), threads, form.clone()));
        Ok(form)
    }

    /// The engine's best optimised form at the model's thread count; each
    /// failure falls back to the next, with the reason in the notes.
    pub(crate) fn optimised(&self) -> Result<(Arc<dyn Engine>, String, Vec<String>)> {
        let threads = self.model_threads();
        let mut notes = Vec::new();
        for variant in self.original.variants() {
            match self.built_form(&variant, threads) {
                Ok(engine) => return Ok((engine, variant.label().to_string(), notes)),
                Err(err) => notes.push(format!("{} failed: {err}", variant.label())),
            }
        }
        Ok((
            self.at_threads(self.original.clone(), threads)?,
            self.original.as_loaded_label(),
            notes,
        ))
    }

    /// The thread count the model's options ask for; `None`: the
    /// optimizer's count, as loaded.
    fn model_threads(&self) -> Option<usize> {
        match self.options().threads {
            0 => None,
            threads => Some(threads as usize),
        }
    }

    /// `engine` at `threads` (`None`: as it is).
    pub(super) fn at_threads(
        &self,
        engine: Arc<dyn Engine>,
        threads: Option<usize>,
    ) -> Result<Arc<dyn Engine>> {
        match threads {
            None => Ok(engine),
            Some(threads) => match self.in_stead_at(&engine, threads) {
                Some(form) => Ok(form),
                None => crate::engine::at_threads(&engine, threads),
            },
        }
    }

    fn compile_default(&self, warmup: Option<&[Value]>) -> Result<Compiled> {
        let (engine, label, notes) = self.optimised()?;
        if let Some(args) = warmup {
            self.warm(&engine, args)?;
        }
        let why = self.original.default_why();
        Ok(Compiled {
            executor: Executor::Plain(engine),
            chosen: label.clone(),
            why,
            module_label: label,
            notes,
            ..Compiled::as_loaded(self.original.clone())
        })
    }

    pub(super) fn graphs_over(
        &self,
        engine: Arc<dyn Engine>,
        flags: Option<NumericFlags>,
    ) -> GraphCache {
        let options = self.options();
        GraphCache::new(
            engine,
            self.device.index.unwrap_or(0) as i32,
            flags,
            options.graph_warmup_runs,
            options.graph_cache_size,
        )
    }

    fn compile_reduce_overhead(&self, warmup: Option<&[Value]>) -> Result<Compiled> {
        let mut compiled = self.compile_default(warmup)?;
        if self.device.kind != DeviceKind::Cuda {
            compiled.why = format!(
                "reduce-overhead uses CUDA graphs, which need CUDA; on {} it is default",
                self.device.kind.as_str()
            );
            return Ok(compiled);
        }
        let Executor::Plain(engine) = &compiled.executor else {
            unreachable!("compile_default returns a plain executor")
        };
        let graphs = Arc::new(self.graphs_over(engine.clone(), None));
        if let Some(args) = warmup {
            let _inference = InferenceModeGuard::enter()?;
            if let Some(reason) = graphs.prepare(args)? {
                compiled
                    .notes
                    .push(format!("the warm-up shapes run without a graph: {reason}"));
            }
        }
        compiled.chosen = format!("{} + CUDA graphs", compiled.module_label);
        compiled.why =
            "reduce-overhead: CUDA graphs over the default form, one per input shape".to_string();
        compiled.executor = Executor::Graphs(graphs);
        Ok(compiled)
    }
}
