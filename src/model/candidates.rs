//! max-autotune's candidates: every form the engine offers (the model as
//! loaded first) at each thread count worth measuring, and on CUDA the graph
//! candidates over the best form.

use std::sync::Arc;

use super::forms::{form_label, FormEngine};
use super::Model;
use crate::autotune::Trial;
use crate::device::DeviceKind;
use crate::engine::Variant;
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::numerics::NumericFlags;
use crate::value::Value;

impl Model {
    /// The candidates, the first being the model as loaded (its file, where
    /// it loaded as the tuning cache's saved module): each form's
    /// (a bundle has several) as loaded and optimised, at each thread count.
    pub(super) fn trials<'a>(
        &'a self,
        forms: &[FormEngine],
        as_loaded: &str,
        args: &'a [Value],
    ) -> Vec<Trial<'a>> {
        // The model as loaded, or its file where it loaded as the tuning
        // cache's saved module (forms_to_measure).
        let original = &forms[0].engine;
        let cuda = self.device.kind == DeviceKind::Cuda;
        let thread_counts = self.thread_candidates();
        // Each form's candidates in turn: its as-loaded ones first, so that
        // a budget too short for all still compares the forms.
        let mut per_form: Vec<Vec<Trial<'a>>> = Vec::new();
        for FormEngine {
            name: form,
            precision,
            engine,
        } in forms
        {
            let mut trials: Vec<Trial<'a>> = Vec::new();
            let mut variants: Vec<(String, Option<Variant>)> =
                vec![(engine.as_loaded_label(), None)];
            variants.extend(
                engine
                    .tuning_variants()
                    .into_iter()
                    .map(|v| (v.label().to_string(), Some(v))),
            );
            for (label, variant) in &variants {
                let label = form_label(form.as_deref(), label);
                // A runtime whose pool is the process's runs at its count.
                let counts = match engine.threads_fixed() {
                    Some(_) => vec![None],
                    None => thread_counts.clone(),
                };
                for &threads in &counts {
                    let source = engine.clone();
                    let variant = variant.clone();
                    let name = match threads {
                        Some(n) => {
                            format!("{label} at {n} thread{}", if n == 1 { "" } else { "s" })
                        }
                        None => label.clone(),
                    };
                    trials.push(Trial {
                        name,
                        label: label.clone(),
                        precision: precision.clone(),
                        // Built at the count it runs at (oneDNN fixes a
                        // primitive's count when it is made).
                        build: Box::new(move || {
                            let source = self.at_threads(source, threads)?;
                            Ok(Executor::Plain(match &variant {
                                Some(variant) => source.build_variant(variant)?,
                                None => source,
                            }))
                        }),
                    });
                }
            }
            per_form.push(trials);
        }
        let mut queues: Vec<_> = per_form.into_iter().map(Vec::into_iter).collect();
        let mut trials: Vec<Trial<'a>> = Vec::new();
        loop {
            let round: Vec<Trial<'a>> = queues.iter_mut().filter_map(Iterator::next).collect();
            if round.is_empty() {
                break;
            }
            trials.extend(round);
        }
        if cuda {
            // Graphs over the best optimised form, with TF32 and cuDNN
            // benchmark on and off (baked into each graph).
            let best = original.variants().first().cloned();
            for tf32 in [false, true] {
                for cudnn_benchmark in [false, true] {
                    let flags = NumericFlags {
                        tf32,
                        cudnn_benchmark,
                    };
                    // `as_loaded` names its form already.
                    let form = forms.first().and_then(|form| form.name.as_deref());
                    let label = best
                        .as_ref()
                        .map_or_else(|| as_loaded.to_string(), |v| form_label(form, v.label()));
                    let source = original.clone();
                    let best = best.clone();
                    trials.push(Trial {
                        name: format!("{label} + CUDA graph ({})", flags.label()),
                        label,
                        precision: None,
                        build: Box::new(move || {
                            let engine = match &best {
                                Some(variant) => source.build_variant(variant)?,
                                None => source,
                            };
                            let graphs = Arc::new(self.graphs_over(engine, Some(flags)));
                            match graphs.prepare(args)? {
                                None => Ok(Executor::Graphs(graphs)),
                                // A shape that runs without a graph is the
                                // plain candidate again: no graph candidate.
                                Some(reason) => Err(Error::new(
                                    ErrorKind::Device,
                                    format!("CUDA graph capture failed: {reason}"),
                                )),
                            }
                        }),
                    });
                }
            }
        }
        trials
    }

    /// The thread counts max-autotune measures each form at: the count the
    /// options ask for, else on the CPU 1, a quarter, half and all of the
    /// optimizer's threads (a model small enough to run in a fraction of a
    /// millisecond loses to its own threads' start and wait, and more so
    /// when other processes share the cores); `None`: threads are not
    /// measured (CUDA), calls run at the optimizer's count.
    fn thread_candidates(&self) -> Vec<Option<usize>> {
        match self.options().threads {
            0 if self.device.kind == DeviceKind::Cpu => {
                let all = crate::runtime::settings::num_threads().unwrap_or(1).max(1) as usize;
                let mut counts = vec![all, all / 2, all / 4, 1];
                counts.retain(|&n| n >= 1);
                counts.sort_unstable();
                counts.dedup();
                counts.into_iter().rev().map(Some).collect()
            }
            0 => vec![None],
            n => vec![Some(n as usize)],
        }
    }
}
