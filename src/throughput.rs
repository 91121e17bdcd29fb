//! Which batch runs fastest per sample: the doubling trials' stop rule, and
//! batches compared round by round (interleaved, so that a machine's
//! drifting speed does not rank them), the largest not clearly slower than
//! the fastest chosen. Pure arithmetic, tested with injected figures.

/// Throughput must grow by at least this factor when the batch doubles for
/// the larger batch to be worth it.
pub const KNEE_GAIN: f64 = 1.05;

/// Whether the doubling trials have seen enough: the last two doublings
/// each added less than [`KNEE_GAIN`], or the last batch is clearly (a
/// fifth) slower than the best so far. One noisy trial does not end them.
pub fn exploration_done(points: &[(i64, f64)]) -> bool {
    let best = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let dropped = points.last().is_some_and(|p| p.1 < best * 0.8);
    let flat = points.len() >= 3
        && points[points.len() - 3..]
            .windows(2)
            .all(|w| w[1].1 < w[0].1 * KNEE_GAIN);
    dropped || flat
}

/// Differences in throughput under this share are never told apart.
const MIN_TOLERANCE: f64 = 0.03;
/// Without interleaved rounds to pair, noise above this share does not
/// widen the tolerance further.
const MAX_TOLERANCE: f64 = 0.15;
/// A batch is slower than another when it is, per sample, in at least this
/// share of the rounds (as perfopt bench calls a row faster or slower).
const SLOWER_IN_ROUNDS: f64 = 0.75;
/// Rounds needed to pair batches round by round.
const MIN_PAIRED_ROUNDS: usize = 3;

/// One batch's throughput over the interleaved rounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    pub batch: i64,
    pub samples_per_s: f64,
    /// The interquartile range of its per-sample times over their median.
    pub noise: f64,
    pub runs: usize,
    /// Seconds per sample in each interleaved round, in round order (the
    /// same rounds for every batch compared).
    pub per_round: Vec<f64>,
}

/// What the comparison says: the batch chosen (the largest within noise of
/// the fastest), the batches within noise, and the fastest.
pub struct Choice {
    pub batch: i64,
    pub within_noise: Vec<i64>,
    pub fastest: i64,
    /// Whether batches were paired round by round (else by their medians).
    pub paired: bool,
}

/// The largest batch not clearly slower than the fastest: a batch is
/// clearly slower when it is slower per sample (by more than 3%) in three
/// quarters of the interleaved rounds, which a machine's drifting speed
/// does not fake; without rounds to pair, when its median is behind by more
/// than its noise. A larger batch that is as fast saves calls when
/// run_batched splits work, and picking the larger among equals keeps
/// identical calls answering alike on a busy machine.
pub fn choose(compared: &[Compared]) -> Option<Choice> {
    let fastest = compared
        .iter()
        .max_by(|a, b| a.samples_per_s.total_cmp(&b.samples_per_s))?;
    let paired = compared.iter().all(|c| {
        c.per_round.len() >= MIN_PAIRED_ROUNDS && c.per_round.len() == fastest.per_round.len()
    });
    let clearly_slower = |c: &Compared| {
        if paired {
            let slower = c
                .per_round
                .iter()
                .zip(&fastest.per_round)
                .filter(|(t, best)| **t > **best * (1.0 + MIN_TOLERANCE))
                .count();
            slower as f64 >= c.per_round.len() as f64 * SLOWER_IN_ROUNDS
        } else {
            let tolerance = c
                .noise
                .max(fastest.noise)
                .clamp(MIN_TOLERANCE, MAX_TOLERANCE);
            c.samples_per_s < fastest.samples_per_s * (1.0 - tolerance)
        }
    };
    let within_noise: Vec<i64> = compared
        .iter()
        .filter(|c| !clearly_slower(c))
        .map(|c| c.batch)
        .collect();
    Some(Choice {
        batch: within_noise.iter().copied().max()?,
        within_noise,
        fastest: fastest.batch,
        paired,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn exploration_needs_two_flat_doublings_or_a_clear_drop() {
        assert!(
            !exploration_done(&[(1, 100.0), (2, 101.0)]),
            "one noisy step"
        );
        assert!(!exploration_done(&[(1, 100.0), (2, 101.0), (4, 150.0)]));
        assert!(exploration_done(&[(1, 100.0), (2, 101.0), (4, 102.0)]));
        assert!(exploration_done(&[(1, 100.0), (2, 200.0), (4, 150.0)]));
    }

    /// Batches with (samples/s, noise) and no interleaved rounds (also the
    /// batching tests' figures).
    pub(crate) fn compared(points: &[(i64, f64, f64)]) -> Vec<Compared> {
        points
            .iter()
            .map(|&(batch, samples_per_s, noise)| Compared {
                batch,
                samples_per_s,
                noise,
                runs: 10,
                per_round: Vec::new(),
            })
            .collect()
    }

    /// Batches with per-sample seconds per round.
    fn rounds(batches: &[(i64, &[f64])]) -> Vec<Compared> {
        batches
            .iter()
            .map(|&(batch, per_round)| {
                let mut sorted = per_round.to_vec();
                sorted.sort_by(f64::total_cmp);
                Compared {
                    batch,
                    samples_per_s: 1.0 / sorted[sorted.len() / 2],
                    noise: 0.5,
                    runs: per_round.len(),
                    per_round: per_round.to_vec(),
                }
            })
            .collect()
    }

    #[test]
    fn rounds_pair_batches_whatever_the_machine_does() {
        // The machine slows down and speeds up (rounds 3-4 twice as slow);
        // 8 beats 4 in every round, 16 loses to 8 in one round of five.
        let four: &[f64] = &[1.10, 1.10, 2.20, 2.20, 1.10];
        let eight: &[f64] = &[1.00, 1.00, 2.00, 2.00, 1.00];
        let sixteen: &[f64] = &[1.01, 0.99, 2.10, 1.98, 1.00];
        let choice = choose(&rounds(&[(4, four), (8, eight), (16, sixteen)])).unwrap();
        assert!(choice.paired);
        assert_eq!(choice.within_noise, vec![8, 16]);
        assert_eq!(choice.batch, 16, "the larger among equals");
        let choice = choose(&rounds(&[(4, four), (8, eight)])).unwrap();
        assert_eq!((choice.batch, choice.within_noise.len()), (8, 1));
    }

    #[test]
    fn without_rounds_medians_decide_within_their_noise() {
        let choice = choose(&compared(&[
            (1, 100.0, 0.02),
            (4, 380.0, 0.02),
            (8, 400.0, 0.05),
            (16, 384.0, 0.05),
        ]))
        .unwrap();
        assert!(!choice.paired);
        assert_eq!((choice.batch, choice.fastest), (16, 8));
        assert_eq!(choice.within_noise, vec![4, 8, 16]);
        // Noise never widens the tolerance past 15%.
        let choice = choose(&compared(&[(1, 100.0, 0.9), (2, 50.0, 0.9)])).unwrap();
        assert_eq!(choice.batch, 1);
        assert!(choose(&[]).is_none());
    }
}
