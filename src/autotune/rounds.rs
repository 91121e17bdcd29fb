//! max-autotune's rounds: the order candidates are timed in, and what a
//! round costs.

use std::time::Duration;

use crate::engine::{Format, State};
use crate::error::Result;
use crate::executor::Executor;
use crate::stats::Summary;

/// A candidate admitted to the timed rounds.
pub(super) struct Measured {
    pub index: usize,
    pub executor: Executor,
    pub times: Vec<Duration>,
    pub active: bool,
    /// The candidate's state before tuning ran it.
    pub state: Option<State>,
    /// Whose threads run it: candidates are timed grouped by it.
    pub format: Option<Format>,
}

/// What timing a candidate once costs, as far as its runs tell.
pub(super) fn cost(m: &Measured, per_run: Duration) -> Duration {
    m.times.iter().min().copied().unwrap_or(per_run)
}

/// The order the rounds run the candidates in: grouped by engine (`keys`,
/// one per candidate), each group where its first candidate was admitted.
pub(super) fn timing_order<K: PartialEq + Copy>(keys: &[K]) -> Vec<usize> {
    let mut groups: Vec<K> = Vec::new();
    for key in keys {
        if !groups.contains(key) {
            groups.push(*key);
        }
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| groups.iter().position(|g| *g == keys[i]));
    order
}

/// Whether a candidate runs once untimed before its timed run: when another
/// engine ran last, whose threads may still spin (GNU OpenMP's, libtorch's,
/// for milliseconds after a call: an ONNX model's call right after an
/// AOTInductor package's ran 2x slower here, and the package's after ONNX
/// Runtime's 1.8x).
pub(super) fn settles<K: PartialEq>(key: K, last: K) -> bool {
    key != last
}

/// One round's cost from its runs in order (engine, one run's cost): each
/// run, and the untimed run of the first one on an engine after another's
/// (`last`: the engine that ran last).
pub(super) fn round_cost<K: PartialEq + Copy>(
    runs: impl Iterator<Item = (K, Duration)>,
    mut last: K,
) -> Duration {
    let mut total = Duration::ZERO;
    for (key, once) in runs {
        total += if settles(key, last) { once * 2 } else { once };
        last = key;
    }
    total
}

/// The active candidates in timing order, as round_cost takes them.
pub(super) fn active_runs<'m>(
    measured: &'m [Measured],
    order: &'m [usize],
    per_run: Duration,
) -> impl Iterator<Item = (Option<Format>, Duration)> + 'm {
    order
        .iter()
        .map(|&i| &measured[i])
        .filter(|m| m.active)
        .map(move |m| (m.format, cost(m, per_run)))
}

pub(super) fn restore(executor: &Executor, state: &Option<State>) -> Result<()> {
    match (executor.engine(), state) {
        (Some(engine), Some(state)) => engine.restore_state(state),
        _ => Ok(()),
    }
}

pub(super) fn p50(times: &[Duration]) -> Option<f64> {
    Summary::of(times).map(|s| s.p50_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rounds_time_each_engines_candidates_together_after_one_untimed_run() {
        // Admitted alternating between engines, as a bundle's forms are.
        assert_eq!(timing_order(&[1, 2, 1, 3, 2, 1]), vec![0, 2, 5, 1, 4, 3]);
        assert_eq!(timing_order::<u8>(&[]), Vec::<usize>::new());
        let ms = Duration::from_millis;
        // After engine 3 ran: one untimed run before engine 1's and 2's.
        let runs = [(1, ms(10)), (1, ms(20)), (2, ms(5)), (2, ms(5))];
        assert_eq!(
            round_cost(runs.into_iter(), 3),
            ms(10 + 10 + 20 + 5 + 5 + 5)
        );
        // A round on one engine alone costs its runs.
        assert_eq!(round_cost(runs[..2].iter().copied(), 1), ms(30));
        assert!(settles(1, 2) && !settles(1, 1));
    }
}
