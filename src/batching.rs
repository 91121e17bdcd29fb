//! Batch sizes from measurements, and running inputs in chunks that fit.
//!
//! The service picks a batch size from total GPU memory alone (4, 2 or 1).
//! perfopt measures instead: peak memory at a few batch sizes, fitted to
//! `fixed + per_sample * batch`, gives the largest batch that fits in free
//! memory under a safety margin; throughput at doubling batch sizes, then
//! the batches worth it compared in interleaved rounds, gives the largest
//! batch within noise of the fastest. The recommendation is the smaller.
//! Everything here is pure arithmetic, tested with injected figures.

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
pub use crate::throughput::{choose, Compared, KNEE_GAIN};

/// A least-squares line through (batch, bytes): (per_sample, fixed).
pub fn fit_memory(points: &[(i64, u64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 as f64 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points
        .iter()
        .map(|p| (p.0 as f64 - mean_x) * (p.1 as f64 - mean_y))
        .sum();
    let slope = (sxy / sxx).max(0.0);
    Some((slope, (mean_y - slope * mean_x).max(0.0)))
}

/// The largest batch whose fitted memory stays under `free * (1 - margin)`.
/// `None` when memory does not grow with the batch (no memory limit).
pub fn max_batch_for_memory(free: u64, margin: f64, per_sample: f64, fixed: f64) -> Option<i64> {
    if per_sample <= 0.0 {
        return None;
    }
    let usable = free as f64 * (1.0 - margin) - fixed;
    Some(((usable / per_sample).floor() as i64).max(0))
}

/// Splits `total` samples into chunks of at most `chunk`, running each with
/// `run(start, len)`. On out-of-memory the chunk halves and the same range is
/// retried (`on_oom` runs first, to free the cache); only a chunk of one
/// that does not fit is an error. When `ambiguous(result, len)` says a
/// chunk's result cannot show which dimension carries the batch (another
/// dimension has the chunk's size too), the last chunk is split so that not
/// every chunk has the same size, and a wrong guess shows. The first chunk
/// may be larger than the others (`first_chunk`): chunks of one sample alone
/// never show it. Returns the chunks' outputs, the retries and the chunk
/// size that worked.
pub fn run_in_chunks<T>(
    total: i64,
    chunk: i64,
    first_chunk: i64,
    mut run: impl FnMut(i64, i64) -> Result<T>,
    ambiguous: impl Fn(&T, i64) -> bool,
    mut on_oom: impl FnMut(),
) -> Result<(Vec<T>, u32, i64)> {
    if chunk < 1 {
        return Err(Error::invalid_argument(format!(
            "chunk size {chunk} must be at least 1"
        )));
    }
    let mut chunk = chunk;
    let mut retries = 0u32;
    let mut results = Vec::new();
    let mut start = 0;
    let mut sizes_must_differ = false;
    while start < total {
        let size = if start == 0 && retries == 0 {
            first_chunk.max(chunk)
        } else {
            chunk
        };
        let mut len = size.min(total - start);
        let last = start + len == total;
        if last && sizes_must_differ && len > 1 && start > 0 {
            len -= 1;
        }
        match run(start, len) {
            Ok(result) => {
                sizes_must_differ |= len > 1 && ambiguous(&result, len);
                results.push(result);
                start += len;
            }
            Err(err) if err.kind() == ErrorKind::OutOfMemory => {
                on_oom();
                if len == 1 {
                    return Err(err.context("a batch of one sample does not fit in memory"));
                }
                chunk = len / 2;
                retries += 1;
                log::warn!("out of memory at a batch of {len}; retrying with {chunk}");
            }
            Err(err) => return Err(err),
        }
    }
    Ok((results, retries, chunk))
}

/// Why recommend_batch's throughput trials stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stop {
    /// Doubling the batch stopped paying.
    Knee,
    /// The next trial would not fit the measuring budget.
    Budget,
    /// The next batch would not fit the memory limit.
    MemoryLimit,
    /// The next batch ran out of memory.
    OutOfMemory,
    /// The next batch is larger than the model accepts (a package's bound).
    ModelLimit,
    /// The largest batch perfopt tries.
    #[default]
    LargestTrial,
}

/// What recommend_batch measured, for its report.
#[derive(Clone, Debug, Default)]
pub struct Recommendation {
    pub stopped: Stop,
    pub batch: i64,
    pub memory_limit: Option<i64>,
    pub throughput_knee: Option<i64>,
    pub memory_points: Vec<(i64, u64)>,
    pub throughput_points: Vec<(i64, f64)>,
    pub per_sample_bytes: Option<f64>,
    pub fixed_bytes: Option<f64>,
    pub free_bytes: Option<u64>,
    pub margin: f64,
    pub memory_source: String,
    pub reason: String,
    /// The batches compared in interleaved rounds, and how many rounds.
    pub compared: Vec<Compared>,
    pub rounds: usize,
    pub budget_ms: u64,
    /// How sure the choice is, in words.
    pub confidence: String,
}

impl Recommendation {
    /// The smaller of the memory limit and the knee, at least 1; the largest
    /// measured batch when neither limit was found.
    pub fn decide(&mut self) {
        let largest = self.throughput_points.last().map_or(1, |p| p.0);
        let choice = choose(&self.compared);
        if let Some(choice) = &choice {
            self.throughput_knee = Some(choice.batch);
            let how = match choice.paired {
                true => format!("{} interleaved rounds", self.rounds),
                false => "their median times (too few interleaved rounds to pair)".to_string(),
            };
            self.confidence = match choice.within_noise.as_slice() {
                _ if self.compared.len() == 1 => format!(
                    "only batch {} was measured again: the budget left no time to compare \
                     others",
                    choice.batch
                ),
                [_] => format!("sure: every other batch measured was slower per sample, by {how}"),
                many => format!(
                    "batches {} run within noise of each other by {how}: the largest is chosen",
                    many.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
        let knee = self.throughput_knee.unwrap_or(largest);
        self.batch = match self.memory_limit {
            Some(limit) => knee.min(limit).max(1),
            None => knee.max(1),
        };
        self.reason = match (self.memory_limit, self.throughput_knee) {
            (Some(limit), _) if limit < knee => {
                format!("memory: {limit} samples fit in free memory under the margin")
            }
            (_, Some(knee)) if knee < largest || choice.is_none() => match &choice {
                Some(choice) if choice.fastest == knee => {
                    format!("throughput: batch {knee} is the fastest measured")
                }
                Some(choice) => format!(
                    "throughput: batch {knee} is within noise of the fastest (batch {}), and the \
                     larger is preferred",
                    choice.fastest
                ),
                None => format!(
                    "throughput: doubling past {knee} adds less than {:.0}%",
                    (KNEE_GAIN - 1.0) * 100.0
                ),
            },
            _ => match self.stopped {
                Stop::Budget => format!(
                    "the measuring budget ran out after batch {largest}, while throughput was \
                     still growing: {largest} is the largest batch measured (larger ones may be \
                     faster)"
                ),
                Stop::MemoryLimit => format!(
                    "{largest} is the largest batch measured under the memory limit, and \
                     throughput was still growing there"
                ),
                Stop::OutOfMemory => format!(
                    "batch {} ran out of memory; throughput was still growing at {largest}",
                    largest * 2
                ),
                Stop::ModelLimit => format!(
                    "{largest} is the largest batch measured within the model's own limit, and \
                     throughput was still growing there"
                ),
                Stop::Knee => format!(
                    "throughput: {largest}, the largest batch measured, is as fast as any (larger \
                     batches stopped paying)"
                ),
                Stop::LargestTrial => {
                    format!("throughput still grew at {largest}, the largest batch perfopt tries")
                }
            },
        };
    }

    pub fn to_json(&self) -> Json {
        Json::object()
            .with("recommended_batch", self.batch)
            .with("reason", self.reason.as_str())
            .with(
                "trials_stopped",
                match self.stopped {
                    Stop::Knee => "throughput knee",
                    Stop::Budget => "measuring budget",
                    Stop::MemoryLimit => "memory limit",
                    Stop::OutOfMemory => "out of memory",
                    Stop::ModelLimit => "the model's batch limit",
                    Stop::LargestTrial => "largest batch tried",
                },
            )
            .with("confidence", self.confidence.as_str())
            .with("rounds", self.rounds)
            .with("budget_ms", self.budget_ms)
            .with(
                "compared",
                Json::Array(
                    self.compared
                        .iter()
                        .map(|c| {
                            Json::object()
                                .with("batch", c.batch)
                                .with("samples_per_s", (c.samples_per_s * 10.0).round() / 10.0)
                                .with("noise", (c.noise * 1000.0).round() / 1000.0)
                                .with("runs", c.runs)
                        })
                        .collect(),
                ),
            )
            .with("memory_limit_batch", self.memory_limit)
            .with("throughput_knee_batch", self.throughput_knee)
            .with("per_sample_bytes", self.per_sample_bytes.map(|b| b.round()))
            .with("fixed_bytes", self.fixed_bytes.map(|b| b.round()))
            .with("free_bytes", self.free_bytes)
            .with("safety_margin", self.margin)
            .with("memory_source", self.memory_source.as_str())
            .with(
                "memory_points",
                Json::Array(
                    self.memory_points
                        .iter()
                        .map(|(b, bytes)| {
                            Json::object().with("batch", *b).with("peak_bytes", *bytes)
                        })
                        .collect(),
                ),
            )
            .with(
                "throughput_points",
                Json::Array(
                    self.throughput_points
                        .iter()
                        .map(|(b, s)| {
                            Json::object()
                                .with("batch", *b)
                                .with("samples_per_s", (s * 10.0).round() / 10.0)
                        })
                        .collect(),
                ),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throughput::tests::compared;

    const MIB: u64 = 1 << 20;

    #[test]
    fn fits_fixed_and_per_sample_memory() {
        let points: Vec<(i64, u64)> = [1, 2, 4, 8]
            .iter()
            .map(|&b| (b, 100 * MIB + b as u64 * 30 * MIB))
            .collect();
        let (per_sample, fixed) = fit_memory(&points).unwrap();
        assert!((per_sample - (30 * MIB) as f64).abs() < 1.0);
        assert!((fixed - (100 * MIB) as f64).abs() < 1.0);
        assert!(fit_memory(&points[..1]).is_none());
        assert!(fit_memory(&[(2, 5), (2, 6)]).is_none());
    }

    #[test]
    fn memory_limit_respects_the_margin() {
        // 1000 MiB free, 10% margin: 900 MiB usable, 100 fixed, 30 per sample -> 26.
        let limit = max_batch_for_memory(1000 * MIB, 0.1, (30 * MIB) as f64, (100 * MIB) as f64);
        assert_eq!(limit, Some(26));
        assert_eq!(
            max_batch_for_memory(10 * MIB, 0.1, (30 * MIB) as f64, (100 * MIB) as f64),
            Some(0)
        );
        assert_eq!(max_batch_for_memory(MIB, 0.1, 0.0, 0.0), None);
    }

    #[test]
    fn the_report_says_how_sure_it_is() {
        let mut r = Recommendation {
            throughput_points: vec![(1, 100.0), (2, 190.0), (4, 200.0), (8, 199.0)],
            compared: compared(&[(2, 190.0, 0.08), (4, 200.0, 0.08), (8, 199.0, 0.08)]),
            rounds: 1,
            stopped: Stop::Knee,
            ..Default::default()
        };
        r.decide();
        assert_eq!(r.batch, 8);
        assert!(r.confidence.contains("2, 4, 8"), "{}", r.confidence);
        r.compared = compared(&[(2, 100.0, 0.01), (4, 200.0, 0.01), (8, 150.0, 0.01)]);
        r.decide();
        assert_eq!(r.batch, 4);
        assert!(r.confidence.starts_with("sure"), "{}", r.confidence);
        assert!(r.reason.contains("fastest"), "{}", r.reason);
    }

    #[test]
    fn recommendation_takes_the_smaller_limit() {
        let mut r = Recommendation {
            memory_limit: Some(3),
            throughput_knee: Some(8),
            throughput_points: vec![(1, 1.0), (16, 2.0)],
            ..Default::default()
        };
        r.decide();
        assert_eq!(r.batch, 3);
        assert!(r.reason.starts_with("memory"));
        r.memory_limit = Some(64);
        r.decide();
        assert_eq!(r.batch, 8);
        assert!(r.reason.starts_with("throughput"));
        r.memory_limit = Some(0);
        r.decide();
        assert_eq!(r.batch, 1, "never below one");
    }

    #[test]
    fn chunks_halve_on_out_of_memory_and_remember() {
        // Anything above 3 samples "does not fit".
        let mut ooms = 0;
        let (chunks, retries, chunk) = run_in_chunks(
            10,
            8,
            8,
            |start, len| {
                if len > 3 {
                    Err(Error::new(ErrorKind::OutOfMemory, "CUDA out of memory"))
                } else {
                    Ok((start, len))
                }
            },
            |_, _| false,
            || ooms += 1,
        )
        .unwrap();
        assert_eq!(chunks, vec![(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]);
        assert_eq!((retries, chunk, ooms), (2, 2, 2));
    }

    #[test]
    fn a_batch_of_one_that_does_not_fit_is_an_error() {
        let err = run_in_chunks(
            4,
            4,
            4,
            |_, _| -> Result<()> { Err(Error::new(ErrorKind::OutOfMemory, "out of memory")) },
            |_, _| false,
            || {},
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfMemory);
        assert!(err.to_string().contains("batch of one"));
        // Other errors stop at once.
        let err = run_in_chunks(
            4,
            2,
            2,
            |_, _| -> Result<()> { Err(Error::invalid_argument("bad")) },
            |_, _| false,
            || {},
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            run_in_chunks(0, 2, 2, |_, _| Ok(()), |_, _| false, || {})
                .unwrap()
                .0
                .len(),
            0
        );
    }

    #[test]
    fn ambiguous_chunks_end_with_a_different_size() {
        let run = |start, len| Ok((start, len));
        let (chunks, _, _) = run_in_chunks(6, 2, 2, run, |_, _| true, || {}).unwrap();
        assert_eq!(chunks, vec![(0, 2), (2, 2), (4, 1), (5, 1)]);
        let (chunks, _, _) = run_in_chunks(6, 2, 2, run, |_, _| false, || {}).unwrap();
        assert_eq!(chunks, vec![(0, 2), (2, 2), (4, 2)]);
        // One chunk is never joined: nothing to tell apart.
        let (chunks, _, _) = run_in_chunks(2, 2, 2, run, |_, _| true, || {}).unwrap();
        assert_eq!(chunks, vec![(0, 2)]);
        // Chunks of one start with two, so that sizes differ.
        let (chunks, _, _) = run_in_chunks(3, 1, 2, run, |_, _| true, || {}).unwrap();
        assert_eq!(chunks, vec![(0, 2), (2, 1)]);
    }
}
