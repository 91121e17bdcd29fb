//! max-autotune on a model: the tuning cache's answer when it has one,
//! else every form's candidates measured within the budget against the
//! reference (src/autotune/ decides), and remembered; a tuning left
//! pending until the first run's arguments when compiled without warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tuning_cache::{self, CacheEntry};
use super::{Compiled, Model};
use crate::autotune::{self, Settings};
use crate::device::DeviceKind;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::json::Json;
use crate::runtime::settings::InferenceModeGuard;
use crate::stats::millis;
use crate::value::{self, Value};

impl Model {
    fn tuning_budget(&self) -> Duration {
        let ms = match self.options().tuning_budget_ms {
            0 if self.device.kind == DeviceKind::Cuda => super::DEFAULT_TUNING_BUDGET_CUDA_MS,
            0 => super::DEFAULT_TUNING_BUDGET_CPU_MS,
            ms => ms,
        };
        Duration::from_millis(u64::from(ms))
    }

    /// max-autotune on these arguments: from the tuning cache when it knows
    /// them, else measured within the budget (and remembered).
    pub(super) fn autotune(
        &self,
        args: &[Value],
        started: Instant,
    ) -> Result<(Compiled, Option<String>)> {
        let options = self.options();
        // A key that cannot be made (the model file changed or went since
        // the load) means no cache for this compile, said in the report; the
        // compile itself goes on.
        let mut unkeyed = None;
        let dir = tuning_cache::folder(self, &options);
        let key = dir.as_deref().and_then(|dir| {
            tuning_cache::key(dir, self, args)
                .map_err(|err| unkeyed = Some(format!("measured; not remembered: {err}")))
                .ok()
        });
        let mut unreadable = None;
        if let Some(key) = &key {
            match tuning_cache::load(key, self) {
                Ok(Some(compiled)) => return Ok((compiled, None)),
                Ok(None) => {}
                Err(err) => unreadable = Some(format!("the remembered choice was not used: {err}")),
            }
        }
        let (mut compiled, warning) = self.measure_candidates(args, started)?;
        let budget = self.tuning_budget();
        let mut tuning = Json::object()
            .with("budget_ms", budget.as_millis() as u64)
            .with("spent_ms", millis(started.elapsed()));
        if let Some(key) = &key {
            // A choice made without measuring (the budget covered fewer than
            // two of several candidates on a busy machine) is not remembered:
            // it would stand for every later start.
            let measured = compiled.candidates.iter().filter(|c| c.runs > 0).count();
            let stored = if compiled.candidates.len() >= 2 && measured < 2 {
                Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "{measured} of {} candidates measured within the budget: a choice made \
                         without comparing them is not kept for later starts",
                        compiled.candidates.len()
                    ),
                ))
            } else {
                let stand_in = compiled.stand_in.as_ref();
                let contract = self
                    .loads_at_start(&compiled.module_label, stand_in)
                    .then(|| crate::engine::bundle::contract(self.original.as_ref()));
                tuning_cache::store(
                    key,
                    &CacheEntry::of(&compiled),
                    compiled.executor.engine().map(|e| e.as_ref()),
                    stand_in,
                    contract.as_deref(),
                )
            };
            let result = match &stored {
                Ok(()) => "measured and remembered".to_string(),
                Err(err) => format!("measured; not remembered: {err}"),
            };
            tuning = tuning
                .with("cache", key.describe())
                .with("cache_result", result)
                .with("cache_unreadable", unreadable);
        } else if let Some(reason) = unkeyed {
            tuning = tuning.with("cache_result", reason);
        }
        compiled.tuning = Some(tuning);
        Ok((compiled, warning))
    }

    fn measure_candidates(
        &self,
        args: &[Value],
        started: Instant,
    ) -> Result<(Compiled, Option<String>)> {
        let options = self.options();
        // A bundle's other forms, loaded outside inference mode (a
        // TorchScript form's attributes stay ordinary tensors) and before
        // the budget's clock starts (loading is not measuring).
        let (forms, mut unmeasured) = self.forms_to_measure(&options);
        let _release = super::forms::ReleaseOtherForms(self);
        let started = match self.forms {
            Some(_) => {
                unmeasured.push(format!(
                    "the bundle's forms were loaded in {:.0} ms, outside the tuning budget",
                    millis(started.elapsed())
                ));
                Instant::now()
            }
            None => started,
        };
        let _inference = InferenceModeGuard::enter()?;
        crate::fork::mark_used();

        let budget = self.tuning_budget();
        let (reference_engine, reference_form, reference_note) = self.reference_engine(&forms);
        unmeasured.extend(reference_note);
        let (reference, reference_time, reference_warm) =
            self.timed_reference(&reference_engine, args, started, budget)?;

        let as_loaded = super::forms::form_label(
            forms[0].name.as_deref(),
            &super::report::as_loaded_label(forms[0].engine.as_ref()),
        );
        // What runs when nothing can be chosen: the reference's form as
        // loaded, whose output is the reference (a form loaded alone has its
        // own error, within another tolerance perhaps).
        let fallback = super::forms::form_label(
            reference_form.as_deref(),
            &super::report::as_loaded_label(reference_engine.as_ref()),
        );
        let trials = self.trials(&forms, &as_loaded, args);
        // The threads the forms run on (a bundle's engines).
        let pools = forms
            .iter()
            .map(|f| f.engine.format().thread_pool())
            .collect::<std::collections::HashSet<_>>()
            .len();
        let run = |executor: &Executor| -> Result<Value> {
            let value = executor.forward(args)?;
            self.synchronize()?;
            Ok(value)
        };
        let outcome = autotune::tune(
            trials,
            &Settings {
                budget,
                started,
                tolerance: options.error_tolerance,
                reduced_tolerance: options.reduced_tolerance,
                reference: &reference,
                reference_time,
                reference_warm,
                as_loaded: &fallback,
                run: &run,
                pools,
            },
        );
        let executor = outcome
            .executor
            .unwrap_or_else(|| Executor::Plain(reference_engine.clone()));
        let stand_in = self.stand_in_of_choice(&forms, &outcome.label, reference_form.as_deref());
        Ok((
            Compiled {
                executor,
                stand_in,
                module_label: outcome.label,
                chosen: outcome.chosen,
                why: outcome.why,
                candidates: outcome.candidates,
                notes: unmeasured,
                ..Compiled::as_loaded(self.original.clone())
            },
            outcome.warning,
        ))
    }

    /// Tunes a pending max-autotune on the first run's arguments. `None`:
    /// another thread is tuning it now (the caller runs the model as loaded
    /// rather than wait).
    pub(super) fn tune_pending(&self, args: &[Value]) -> Result<Option<Arc<Compiled>>> {
        let Some(tuning) = self.tuning.try_lock() else {
            return Ok(None);
        };
        let current = self.current();
        if !matches!(current.executor, Executor::PendingAutotune) {
            return Ok(Some(current)); // tuned meanwhile
        }
        let started = Instant::now();
        let args = value::shallow_clone_all(args);
        let (mut tuned, warning) = self.autotune(&args, started)?;
        tuned.requested = current.requested;
        tuned.requested_source = current.requested_source;
        tuned.compile_time = current.compile_time + started.elapsed();
        tuned
            .notes
            .push("tuned on the first run's inputs".to_string());
        tuned.notes.extend(self.other_methods_note(&tuned));
        let tuned = Arc::new(tuned);
        self.install(tuned.clone())?;
        drop(tuning);
        log::info!(
            "tuned {} on its first run in {:.1} ms: {} ({})",
            self.name,
            millis(started.elapsed()),
            tuned.chosen,
            tuned.why
        );
        if let Some(warning) = warning {
            log::warn!("model {}: {warning}", self.name);
        }
        Ok(Some(tuned))
    }
}
