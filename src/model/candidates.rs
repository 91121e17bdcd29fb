//! max-autotune's candidates: every form the engine offers (the model as
//! loaded first) at each thread count worth measuring, and on CUDA the graph
//! candidates over the best form.

use std::sync::Arc;

use super::Model;
use crate::autotune::Trial;
use crate::device::DeviceKind;
use crate::engine::{Engine, Variant};
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::numerics::NumericFlags;
use crate::value::Value;

impl Model {
    /// The candidates, the first being the model as loaded.
    pub(super) fn trials<'a>(
        &'a self,
        original: &Arc<dyn Engine>,
        as_loaded: &str,
        args: &'a [Value],
    ) -> Vec<Trial<'a>> {
        let mut forms: Vec<(String, Option<Variant>)> = vec![(as_loaded.to_string(), None)];
        forms.extend(
            original
                .tuning_variants()
                .into_iter()
                .map(|v| (v.label().to_string(), Some(v))),
        );
        let cuda = self.device.kind == DeviceKind::Cuda;
        let mut trials: Vec<Trial<'a>> = Vec::new();
        let thread_counts = self.thread_candidates();
        for (label, variant) in &forms {
            for &threads in &thread_counts {
                let source = original.clone();
                let variant = variant.clone();
                let name = match threads {
                    Some(n) => format!("{label} at {n} thread{}", if n == 1 { "" } else { "s" }),
                    None => label.clone(),
                };
                trials.push(Trial {
                    name,
                    label: label.clone(),
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
                    let label = best
                        .as_ref()
                        .map_or_else(|| as_loaded.to_string(), |v| v.label().to_string());
                    let source = original.clone();
                    let best = best.clone();
                    trials.push(Trial {
                        name: format!("{label} + CUDA graph ({})", flags.label()),
                        label,
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
                let all = crate::torch::settings::num_threads().unwrap_or(1).max(1) as usize;
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
