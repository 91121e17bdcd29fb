//! The reference result: the model as loaded (for a bundle's form loaded
//! alone, the form it stands in for; for a model loaded as the tuning
//! cache's saved module, its file: forms.rs reference_engine), in full fp32
//! precision (TF32 off on
//! CUDA), its state left as found. Errors in reports are measured against
//! it; max-autotune estimates one run's cost from the model as loaded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Model;
use crate::device::DeviceKind;
use crate::engine::Engine;
use crate::error::Result;
use crate::numerics::{self, NumericFlags};
use crate::runtime::settings::InferenceModeGuard;
use crate::value::Value;

/// Runs of the reference after the first, timed for max-autotune's estimate
/// of one run.
const WARM_REFERENCE_RUNS: usize = 2;

impl Model {
    /// The reference result for `args` (checked and moved to the device).
    pub fn reference(&self, args: Vec<Value>) -> Result<Value> {
        self.check_args("forward", &args)?;
        let args = self.to_device(args)?;
        // Loaded (where it is another form) with no lock held and outside
        // inference mode, as max-autotune loads forms.
        let engine = self.reference_form();
        let _one = self.one_at_a_time()?;
        let _inference = InferenceModeGuard::enter()?;
        crate::fork::mark_used();
        let (value, _) = self.run_reference(&engine, &args)?;
        super::outputs::finish(value, &[], false)
    }

    /// One run of `engine` (the model as loaded, or the form a form loaded
    /// alone stands in for) and what it took. The caller holds the
    /// inference mode and the model.
    fn run_reference(&self, engine: &Arc<dyn Engine>, args: &[Value]) -> Result<(Value, Duration)> {
        let started = Instant::now();
        let value = self.keeping_state(engine, || {
            let run = || {
                let value = engine.call("forward", args)?;
                self.synchronize()?;
                Ok(value)
            };
            if self.device.kind == DeviceKind::Cuda {
                numerics::with_flags(NumericFlags::IEEE, run)
            } else {
                run()
            }
        })?;
        Ok((value, started.elapsed()))
    }

    /// The reference result for max-autotune (run on `engine`), what one run
    /// of the model as loaded costs (the budget is planned from the form
    /// that runs), and whether that cost is a warm run's. A first run
    /// carries one-time work (a VAD chunk's took 413 ms where its warm runs
    /// take 0.5 ms), and TorchScript's profiling executor optimises its
    /// graph during the second, so the cost is the fastest of the next
    /// WARM_REFERENCE_RUNS: the first of them while any of `budget` (counted
    /// from `started`) is left, the next while the budget holds it; the
    /// first run's time when none fits.
    pub(super) fn timed_reference(
        &self,
        engine: &Arc<dyn Engine>,
        args: &[Value],
        started: Instant,
        budget: Duration,
    ) -> Result<(Value, Duration, bool)> {
        let (reference, first) = self.run_reference(engine, args)?;
        let loaded = &self.original;
        let mut cost = if Arc::ptr_eq(engine, loaded) {
            first
        } else {
            self.run_reference(loaded, args)?.1
        };
        let mut warm = false;
        for _ in 0..WARM_REFERENCE_RUNS {
            // The first warm run is let in while any budget is left: judged
            // by the first run's inflated time, it would rarely be.
            let expected = if warm { cost } else { Duration::ZERO };
            if started.elapsed() + expected > budget * 19 / 20 {
                break;
            }
            let again = self.run_reference(loaded, args)?.1;
            cost = if warm { cost.min(again) } else { again };
            warm = true;
        }
        Ok((reference, cost, warm))
    }
}
