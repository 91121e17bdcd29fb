//! max-autotune's rounds: the order candidates are timed in, and what a
//! round costs.

use std::time::Duration;

use crate::engine::{State, ThreadPool};
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
    pub pool: Option<ThreadPool>,
}

/// What timing a candidate once costs, as far as its runs tell.
pub(super) fn cost(m: &Measured, per_run: Duration) -> Duration {
    m.times.iter().min().copied().unwrap_or(per_run)
}

/// The order the rounds run the candidates in: grouped by thread pool
/// (`keys`, one per candidate), each group where its first candidate was
/// admitted.
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
/// pool's threads ran last, which may still spin (GNU OpenMP's, libtorch's,
/// for milliseconds after a call: an ONNX model's call right after an
/// AOTInductor package's ran 2x slower here, and the package's after ONNX
/// Runtime's 1.8x).
pub(super) fn settles<K: PartialEq>(key: K, last: K) -> bool {
    key != last
}

/// One round's cost from its runs in order (pool, one run's cost): each
/// run, and the untimed run of the first one on a pool after another's
/// (`last`: the pool that ran last), priced at two runs: it is the run that
/// takes the other pool's spin.
pub(super) fn round_cost<K: PartialEq + Copy>(
    runs: impl Iterator<Item = (K, Duration)>,
    mut last: K,
) -> Duration {
    let mut total = Duration::ZERO;
    for (key, once) in runs {
        total += if settles(key, last) { once * 3 } else { once };
        last = key;
    }
    total
}

/// The untimed runs a round on `pools` thread pools can add, each priced
/// at two runs (round_cost), in runs: none on one pool, where only a first
/// candidate after what ran before tuning could settle.
pub(super) fn settling_runs(pools: usize) -> u32 {
    if pools >= 2 {
        2 * pools as u32
    } else {
        0
    }
}

/// The budget that covers what compile spent before tuning (`before`) and
/// two candidates' admission, warm-up and minimum rounds at `per_run` each
/// (on `pools` thread pools: the untimed runs between them too), with the
/// 5% kept for the work after measuring.
pub(super) fn budget_for_two(before: Duration, per_run: Duration, pools: usize) -> Duration {
    let rounds = super::MIN_ROUNDS as u32 * (2 + settling_runs(pools.min(2)));
    let runs = 2 * (1 + super::WARMUP_RUNS as u32) + rounds;
    (before + per_run * runs) * 20 / 19
}

/// The active candidates in timing order, as round_cost takes them.
pub(super) fn active_runs<'m>(
    measured: &'m [Measured],
    order: &'m [usize],
    per_run: Duration,
) -> impl Iterator<Item = (Option<ThreadPool>, Duration)> + 'm {
    order
        .iter()
        .map(|&i| &measured[i])
        .filter(|m| m.active)
        .map(move |m| (m.pool, cost(m, per_run)))
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
    fn the_rounds_time_each_pools_candidates_together_after_one_untimed_run() {
        // Admitted alternating between engines, as a bundle's forms are.
        assert_eq!(timing_order(&[1, 2, 1, 3, 2, 1]), vec![0, 2, 5, 1, 4, 3]);
        assert_eq!(timing_order::<u8>(&[]), Vec::<usize>::new());
        let ms = Duration::from_millis;
        // After pool 3 ran: one untimed run, priced at two, before pool 1's
        // and pool 2's.
        let runs = [(1, ms(10)), (1, ms(20)), (2, ms(5)), (2, ms(5))];
        assert_eq!(round_cost(runs.into_iter(), 3), ms(10 * 3 + 20 + 5 * 3 + 5));
        // A round on one pool alone costs its runs.
        assert_eq!(round_cost(runs[..2].iter().copied(), 1), ms(30));
        assert_eq!((settling_runs(1), settling_runs(3)), (0, 6));
        assert!(settles(1, 2) && !settles(1, 1));
    }

    #[test]
    fn the_budget_for_two_covers_their_runs_and_what_came_before() {
        // 2 x (admission + warm-up) + 2 x 3 rounds = 10 runs of 100 ms, after
        // 50 ms spent, plus the 5% kept for the work after measuring.
        let budget = budget_for_two(Duration::from_millis(50), Duration::from_millis(100), 1);
        assert_eq!(budget.as_millis(), 1105);
        // On two pools, 3 rounds of 2 untimed runs priced at two each: 12
        // runs more.
        let budget = budget_for_two(Duration::from_millis(50), Duration::from_millis(100), 2);
        assert_eq!(budget.as_millis(), 2368);
    }
}
