//! max-autotune: measure the ways perfopt can run a model on the warm-up
//! inputs and keep the fastest whose output stays within the error tolerance
//! of the fp32 eager output, all within a time budget.
//!
//! The tuner knows candidates only as builders of [`Executor`]s and a way to
//! run one; the model supplies both and applies the result, so tuning never
//! reaches back into the model.
//!
//! Timing: every candidate runs once per round, in turn (interleaved rounds),
//! so that a machine's drifting speed does not rank them. The budget covers
//! everything compile does from the first (reference) run on: before a
//! candidate is built, the runs it needs (admission, warm-up, the minimum
//! rounds) are estimated from the reference run's time, and a candidate the
//! budget cannot cover is not measured. The reference run's time is a warm
//! run's (src/model/compile.rs), never a first run's alone. A candidate
//! clearly behind after the minimum rounds stops being timed, when the
//! budget could not time every candidate in all the rounds left. Within a round
//! the candidates run grouped by thread pool (libtorch's OpenMP, ONNX
//! Runtime's, ExecuTorch's), and the first of a group after another pool's
//! runs once untimed before its timed run (rounds.rs: a pool's threads spin
//! for a while after a call, which made a call on another pool's threads up
//! to 2x slower here and would be billed to whichever candidate came
//! next); the budget plans for those runs. When fewer than
//! two candidates could be measured, there is nothing to choose between: the
//! model runs as loaded, the cheapest safe choice, and the report says why,
//! with the budget that would have covered two when the budget was short.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::json::Json;
use crate::numerics::{self, ReducedTolerance};
use crate::stats::round3;
use crate::value::Value;

mod rounds;
use rounds::{
    active_runs, budget_for_two, cost, p50, restore, round_cost, settles, settling_runs,
    timing_order, Measured,
};

/// Timed rounds before candidates are compared at all.
pub const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 100;
/// Runs after the first before timing: TorchScript's profiling executor
/// profiles the first run and optimises the graph on the next.
const WARMUP_RUNS: usize = 1;
/// After MIN_ROUNDS, a candidate whose fastest run is slower than the
/// leader's median by this factor stops being timed.
const CLEARLY_BEHIND: f64 = 1.25;

/// One measured way of running the model, as the report shows it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub p50_ms: Option<f64>,
    /// Timed runs behind p50_ms.
    pub runs: usize,
    pub relative_error: Option<f64>,
    /// A reduced-precision candidate's precision ("bf16"), and its lowest
    /// cosine similarity to the reference over the outputs.
    pub precision: Option<String>,
    pub cosine: Option<f64>,
    pub within_tolerance: bool,
    pub note: Option<String>,
}

impl Candidate {
    fn new(name: String, precision: Option<String>) -> Candidate {
        Candidate {
            name,
            p50_ms: None,
            runs: 0,
            relative_error: None,
            precision,
            cosine: None,
            within_tolerance: false,
            note: None,
        }
    }

    pub fn to_json(&self) -> Json {
        Json::object()
            .with("name", self.name.as_str())
            .with("p50_ms", self.p50_ms)
            .with("runs", self.runs)
            .with("relative_error", self.relative_error)
            .with("precision", self.precision.as_deref().unwrap_or("fp32"))
            .with("cosine", self.cosine)
            .with("within_tolerance", self.within_tolerance)
            .with("note", self.note.clone())
    }
}

/// A candidate before it is built.
pub struct Trial<'a> {
    pub name: String,
    /// Which form of the model it runs ("as loaded", "frozen", ...).
    pub label: String,
    /// A reduced precision ("bf16"): judged by the reduced tolerance.
    pub precision: Option<String>,
    pub build: Box<dyn FnOnce() -> Result<Executor> + 'a>,
}

/// What the tuner needs besides the candidates.
pub struct Settings<'a> {
    pub budget: Duration,
    /// When compile started: the budget counts from here.
    pub started: Instant,
    pub tolerance: f64,
    /// What a reduced-precision candidate must stay within.
    pub reduced_tolerance: ReducedTolerance,
    /// The fp32 eager result, and what one run of it takes.
    pub reference: &'a Value,
    pub reference_time: Duration,
    /// Whether `reference_time` is a warm run's (else the first run's: the
    /// budget held no second run).
    pub reference_warm: bool,
    /// What runs when nothing can be chosen: the reference's form as it
    /// came ("as loaded", "as compiled"; for a bundle's form loaded alone,
    /// the form it stands in for, "onnx: as loaded (...)").
    pub as_loaded: &'a str,
    /// Runs one executor on the tuning inputs, finished (synchronised).
    pub run: &'a dyn Fn(&Executor) -> Result<Value>,
    /// How many thread pools the candidates run on (a bundle's forms on
    /// different engines): the untimed runs between them are planned for.
    pub pools: usize,
}

/// The tuner's decision.
pub struct Outcome {
    /// `None`: run as loaded (the cheapest safe choice).
    pub executor: Option<Executor>,
    pub label: String,
    pub chosen: String,
    pub why: String,
    pub candidates: Vec<Candidate>,
    /// A result the host should hear about (through the log, after locks).
    pub warning: Option<String>,
}

/// What one run costs, as the notes say it.
fn run_cost(settings: &Settings<'_>, per_run: Duration) -> String {
    let ms = per_run.as_secs_f64() * 1e3;
    if settings.reference_warm {
        format!("one warm run takes about {ms:.1} ms")
    } else {
        format!("its first run took {ms:.1} ms and no second run fit the budget")
    }
}

pub fn tune(trials: Vec<Trial<'_>>, settings: &Settings<'_>) -> Outcome {
    // The work after the measurements (the report, the tuning cache's copy
    // of the chosen form) comes out of the same budget: on 2 cores up to 3%
    // of it, so measuring stops at 95%.
    let measuring = settings.budget * 19 / 20;
    let elapsed = || settings.started.elapsed();
    let before = elapsed();
    // The most the budget fell short by: what a refused candidate or the
    // cut rounds would have needed, from compile's start.
    let mut wanted = Duration::ZERO;
    let per_run = settings.reference_time.max(Duration::from_micros(1));
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut measured: Vec<Measured> = Vec::new();
    // The pool whose threads ran last: each built candidate's admission
    // runs, refused or not.
    let mut last = None;

    for trial in trials {
        let index = candidates.len();
        candidates.push(Candidate::new(trial.name, trial.precision));
        labels.push(trial.label);
        let candidate = &mut candidates[index];
        // What this candidate needs, and what the ones admitted still need.
        let admitted = measured.len() as u32;
        let per_round = admitted + 1 + settling_runs(settings.pools.min(admitted as usize + 1));
        let need = per_run * (1 + WARMUP_RUNS as u32) + per_run * (MIN_ROUNDS as u32) * per_round;
        if elapsed() + need > measuring {
            wanted = wanted.max(elapsed() + need);
            candidate.note = Some(format!(
                "not measured: the budget of {} ms cannot cover it ({})",
                settings.budget.as_millis(),
                run_cost(settings, per_run)
            ));
            continue;
        }
        let admitted = (trial.build)().and_then(|executor| {
            let pool = executor.engine().map(|e| e.format().thread_pool());
            last = pool;
            let state = executor
                .engine()
                .map(|e| e.save_state())
                .transpose()?
                .flatten();
            let reduced = candidate.precision.is_some();
            let checked = (|| -> Result<(f64, Option<f64>)> {
                let output = (settings.run)(&executor)?;
                if !numerics::same_kinds(&output, settings.reference) {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!(
                            "not measured: it returns {}, where the model returns {}",
                            output.label(),
                            settings.reference.label()
                        ),
                    ));
                }
                let error = numerics::value_error(&output, settings.reference)?;
                let cosine = reduced
                    .then(|| numerics::value_cosine(&output, settings.reference))
                    .transpose()?;
                for _ in 0..WARMUP_RUNS {
                    (settings.run)(&executor)?;
                }
                Ok((error, cosine))
            })();
            // Tuning runs leave the model's state as they found it.
            restore(&executor, &state)?;
            Ok((executor, checked?, state, pool))
        });
        match admitted {
            Ok((executor, (error, cosine), state, pool)) => {
                candidate.relative_error = Some(error);
                candidate.cosine = cosine;
                let reduced = &settings.reduced_tolerance;
                candidate.within_tolerance = match cosine {
                    Some(cosine) => reduced.accepts(error, cosine),
                    None => error <= settings.tolerance,
                };
                if !candidate.within_tolerance {
                    candidate.note = Some(match cosine {
                        Some(_) => format!(
                            "outside the reduced-precision tolerance ({})",
                            reduced.describe()
                        ),
                        None => format!("over the error tolerance {:e}", settings.tolerance),
                    });
                    continue;
                }
                measured.push(Measured {
                    index,
                    executor,
                    times: Vec::new(),
                    active: true,
                    state,
                    pool,
                });
            }
            Err(err) => candidate.note = Some(err.to_string()),
        }
    }

    // Interleaved rounds within the budget.
    let mut rounds = 0;
    let mut budget_ended_rounds = false;
    let order = timing_order(&measured.iter().map(|m| m.pool).collect::<Vec<_>>());
    while measured.len() >= 2 && rounds < MAX_ROUNDS {
        // Too many candidates for the rounds a comparison needs (a slow
        // model, many forms): the slowest so far stop being timed, so that
        // at least the two fastest are compared rather than none.
        let rounds_left = MIN_ROUNDS.saturating_sub(rounds).max(1) as u32;
        if (1..MIN_ROUNDS).contains(&rounds) {
            loop {
                let active: Vec<usize> = (0..measured.len())
                    .filter(|&i| measured[i].active)
                    .collect();
                let this_round = round_cost(active_runs(&measured, &order, per_run), last);
                if active.len() <= 2 || elapsed() + this_round * rounds_left <= measuring {
                    break;
                }
                let slowest = *active
                    .iter()
                    .max_by_key(|&&i| cost(&measured[i], per_run))
                    .expect("active");
                measured[slowest].active = false;
                candidates[measured[slowest].index].note = Some(format!(
                    "stopped after {rounds} round(s): the budget could not time every candidate \
                     {MIN_ROUNDS} times, and its fastest run was the slowest left"
                ));
            }
        }
        let this_round = round_cost(active_runs(&measured, &order, per_run), last);
        if elapsed() + this_round > measuring {
            budget_ended_rounds = true;
            wanted = wanted.max(elapsed() + this_round * rounds_left);
            break;
        }
        for &i in &order {
            let m = &mut measured[i];
            if !m.active {
                continue;
            }
            let settled = if settles(m.pool, last) {
                (settings.run)(&m.executor).map(drop)
            } else {
                Ok(())
            };
            last = m.pool;
            let started = Instant::now();
            match settled.and_then(|()| (settings.run)(&m.executor)) {
                Ok(_) => m.times.push(started.elapsed()),
                Err(err) => {
                    m.active = false;
                    candidates[m.index].note = Some(err.to_string());
                    m.times.clear();
                }
            }
        }
        rounds += 1;
        // Stopping a candidate saves budget, and three rounds can mislead
        // (a 0.04 ms VAD step's candidates, just built, all but one looked
        // 1.25x behind after three and were stopped): while the budget can
        // time every candidate in every round left, none stops.
        let rounds_to_go = (MAX_ROUNDS - rounds) as u32;
        let all_fit = elapsed()
            + round_cost(active_runs(&measured, &order, per_run), last) * rounds_to_go
            <= measuring;
        if rounds >= MIN_ROUNDS && !all_fit {
            let leader = measured
                .iter()
                .filter(|m| m.active)
                .filter_map(|m| p50(&m.times))
                .fold(f64::INFINITY, f64::min);
            for m in measured.iter_mut().filter(|m| m.active) {
                let fastest = m
                    .times
                    .iter()
                    .min()
                    .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3);
                if fastest > leader * CLEARLY_BEHIND {
                    m.active = false;
                    candidates[m.index].note = Some(format!(
                        "stopped after {rounds} rounds: its fastest run was over {CLEARLY_BEHIND}x \
                         the leader's median"
                    ));
                }
            }
            if measured.iter().filter(|m| m.active).count() < 2 {
                break;
            }
        }
    }
    for m in &measured {
        let c = &mut candidates[m.index];
        c.runs = m.times.len();
        if m.active && m.times.len() < MIN_ROUNDS && c.note.is_none() {
            c.note = Some(if budget_ended_rounds {
                format!(
                    "timed in {} of the {MIN_ROUNDS} rounds a comparison needs before the budget \
                     ran out",
                    m.times.len()
                )
            } else {
                "not compared: no other candidate was admitted (see their notes)".to_string()
            });
        }
        c.p50_ms = p50(&m.times).map(round3);
        // The rounds ran it: leave its state as it was found.
        if let Err(err) = restore(&m.executor, &m.state) {
            c.note = Some(format!("its state could not be restored: {err}"));
        }
    }
    let comparable: Vec<&Measured> = measured
        .iter()
        .filter(|m| m.times.len() >= MIN_ROUNDS)
        .collect();
    if comparable.len() < 2 {
        let any_within = candidates.iter().any(|c| c.within_tolerance);
        let budget_short = budget_ended_rounds
            || candidates.iter().any(|c| {
                c.note
                    .as_deref()
                    .is_some_and(|n| n.starts_with("not measured"))
            });
        let (why, warning) = if !any_within && !candidates.is_empty() && !budget_short {
            let message = format!(
                "max-autotune: no candidate stayed within the error tolerance {:e} of the fp32 \
                 output; the model runs {}",
                settings.tolerance, settings.as_loaded
            );
            (message.clone(), Some(message))
        } else if budget_short {
            (
                format!(
                    "the budget of {} ms could not cover measuring two candidates ({}): kept the \
                     model {}, the cheapest safe choice; a budget of about {} ms would \
                     (tuning_budget_ms; --tuning-budget)",
                    settings.budget.as_millis(),
                    run_cost(settings, per_run),
                    settings.as_loaded,
                    budget_for_two(before, per_run, settings.pools)
                        .max(wanted * 20 / 19)
                        .max(settings.budget + Duration::from_millis(1))
                        .as_millis()
                ),
                None,
            )
        } else if candidates.len() == 1 {
            (
                format!(
                    "one candidate: the model {} is the only form to run here (nothing to \
                     choose from)",
                    settings.as_loaded
                ),
                None,
            )
        } else {
            (
                format!(
                    "fewer than two candidates could be compared (see each one's note): kept the \
                     model {}, the cheapest safe choice",
                    settings.as_loaded
                ),
                None,
            )
        };
        return Outcome {
            executor: None,
            label: settings.as_loaded.to_string(),
            chosen: settings.as_loaded.to_string(),
            why,
            candidates,
            warning,
        };
    }
    // A candidate stopped as clearly behind keeps the times of its early
    // rounds; on a machine whose speed drifts they can look faster than the
    // survivors' later ones, so the choice is among the survivors.
    let survivors: Vec<&Measured> = comparable.iter().copied().filter(|m| m.active).collect();
    let pool = if survivors.is_empty() {
        &comparable
    } else {
        &survivors
    };
    let best = pool
        .iter()
        .min_by(|a, b| {
            p50(&a.times)
                .unwrap_or(f64::INFINITY)
                .total_cmp(&p50(&b.times).unwrap_or(f64::INFINITY))
        })
        .map(|m| m.index)
        .expect("two comparable candidates");
    let chosen = candidates[best].clone();
    // A reduced precision chosen says so, with what it was measured at.
    let precision = match (&chosen.precision, chosen.cosine) {
        (Some(precision), Some(cosine)) => format!(
            " in {precision} (cosine similarity {cosine:.6}, judged by the reduced-precision \
             tolerance)"
        ),
        _ => String::new(),
    };
    let tolerance = if candidates.iter().any(|c| c.precision.is_some()) {
        format!(
            "their tolerances (error {:e}; reduced precision: {})",
            settings.tolerance,
            settings.reduced_tolerance.describe()
        )
    } else {
        format!("error tolerance {:e}", settings.tolerance)
    };
    let why = format!(
        "fastest of {} measured candidates within {tolerance}: {:.3} ms, error \
         {:.2e}{precision} ({rounds} interleaved rounds, {:.0} ms spent of a {} ms budget)",
        comparable.len(),
        chosen.p50_ms.unwrap_or(f64::NAN),
        chosen.relative_error.unwrap_or(f64::NAN),
        elapsed().as_secs_f64() * 1e3,
        settings.budget.as_millis()
    );
    let position = measured
        .iter()
        .position(|m| m.index == best)
        .expect("the best was measured");
    let executor = measured.swap_remove(position).executor;
    Outcome {
        executor: Some(executor),
        label: labels[best].clone(),
        chosen: chosen.name,
        why,
        candidates,
        warning: None,
    }
}
