//! Per-model options (perfopt_model_options in C) and the bounds perfopt
//! puts on every number a caller gives it.

use crate::error::{Error, Result};

/// The most warm-up passes one perfopt_model_warmup call runs.
pub const MAX_WARMUP_ITERATIONS: u32 = 100_000;
/// The longest tuning budget a caller may set (milliseconds).
pub const MAX_TUNING_BUDGET_MS: u32 = 600_000;
/// Default tuning budgets: candidates are slow on a CPU, fast on CUDA.
pub const DEFAULT_TUNING_BUDGET_CPU_MS: u32 = 2_000;
pub const DEFAULT_TUNING_BUDGET_CUDA_MS: u32 = 1_000;
/// The relative error a reduced-precision form may have by default: bf16
/// keeps 8 bits of mantissa (about 4e-3 per value).
pub const DEFAULT_REDUCED_TOLERANCE: f64 = 1e-2;

/// Which precisions max-autotune may choose from a bundle's forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// The model's own precision only: reduced forms are not measured.
    #[default]
    Fp32,
    /// A bundle's reduced-precision forms (bf16, fp16, int8) are measured
    /// too, and kept only within the reduced tolerance.
    AllowReduced,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::AllowReduced => "allow-reduced",
        }
    }
}

pub use crate::numerics::ReducedTolerance;

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
    /// Everything max-autotune's compile does, in milliseconds; 0 = the
    /// device's default (2000 on the CPU, 1000 on CUDA).
    pub tuning_budget_ms: u32,
    /// A folder where max-autotune remembers its choice per model file,
    /// device, input shapes and perfopt version; `None`: the optimizer's,
    /// if it has one.
    pub tuning_cache_dir: Option<String>,
    /// Threads per call, from the next compile on; 0: the optimizer's count
    /// (max-autotune measures it on the CPU).
    pub threads: u32,
    /// Everything recommend_batch measures, in milliseconds; 0: 5000.
    pub batch_budget_ms: u32,
    /// Whether max-autotune may choose a reduced-precision form.
    pub precision: Precision,
    /// What a reduced-precision form must stay within.
    pub reduced_tolerance: ReducedTolerance,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            outputs_on_device: false,
            error_tolerance: 1e-3,
            graph_cache_size: 8,
            graph_warmup_runs: 3,
            memory_margin: 0.1,
            tuning_budget_ms: 0,
            tuning_cache_dir: None,
            threads: 0,
            batch_budget_ms: 0,
            precision: Precision::Fp32,
            reduced_tolerance: ReducedTolerance {
                relative: DEFAULT_REDUCED_TOLERANCE,
                min_cosine: 0.0,
            },
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
        let reduced = self.reduced_tolerance;
        if !(reduced.relative.is_finite() && reduced.relative >= 0.0) {
            return Err(Error::invalid_argument(format!(
                "reduced_tolerance is {}; it must be a finite number >= 0",
                reduced.relative
            )));
        }
        if !(0.0..=1.0).contains(&reduced.min_cosine) {
            return Err(Error::invalid_argument(format!(
                "min_cosine is {}; it must be 0 (judge by reduced_tolerance) to 1",
                reduced.min_cosine
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
        if self.tuning_budget_ms > MAX_TUNING_BUDGET_MS {
            return Err(Error::invalid_argument(format!(
                "tuning_budget_ms is {}; it must be 0 (the device's default) to {MAX_TUNING_BUDGET_MS}",
                self.tuning_budget_ms
            )));
        }
        if self.batch_budget_ms > MAX_TUNING_BUDGET_MS {
            return Err(Error::invalid_argument(format!(
                "batch_budget_ms is {}; it must be 0 (5000) to {MAX_TUNING_BUDGET_MS}",
                self.batch_budget_ms
            )));
        }
        let limit = crate::config::max_threads();
        if self.threads > limit {
            return Err(Error::invalid_argument(format!(
                "threads is {}; it must be 0 (the optimizer's count) to {limit} (4 per core)",
                self.threads
            )));
        }
        if self.tuning_cache_dir.as_deref() == Some("") {
            return Err(Error::invalid_argument(
                "tuning_cache_dir is an empty string; pass NULL for the optimizer's folder (if any)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
                reduced_tolerance: ReducedTolerance {
                    relative: f64::INFINITY,
                    min_cosine: 0.0,
                },
                ..Default::default()
            },
            ModelOptions {
                reduced_tolerance: ReducedTolerance {
                    relative: 0.1,
                    min_cosine: 1.5,
                },
                ..Default::default()
            },
            ModelOptions {
                graph_warmup_runs: 1000,
                ..Default::default()
            },
            ModelOptions {
                tuning_budget_ms: u32::MAX,
                ..Default::default()
            },
            ModelOptions {
                tuning_cache_dir: Some(String::new()),
                ..Default::default()
            },
            ModelOptions {
                threads: u32::MAX,
                ..Default::default()
            },
            ModelOptions {
                batch_budget_ms: u32::MAX,
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
