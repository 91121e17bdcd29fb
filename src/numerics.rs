//! Process-global numeric flags (TF32, cuDNN benchmark) set around a piece of
//! work and restored after, and the relative error between two outputs.

use parking_lot::{Mutex, MutexGuard};

use crate::error::Result;
use crate::runtime::settings as shim;
use crate::runtime::{Device, Kind, Tensor};
use crate::value::Value;

/// The libtorch flags a candidate may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumericFlags {
    pub tf32: bool,
    pub cudnn_benchmark: bool,
}

impl NumericFlags {
    /// Full fp32 precision: the reference every error is measured against.
    pub const IEEE: NumericFlags = NumericFlags {
        tf32: false,
        cudnn_benchmark: false,
    };

    pub fn label(self) -> String {
        format!(
            "tf32 {}, cudnn.benchmark {}",
            if self.tf32 { "on" } else { "off" },
            if self.cudnn_benchmark { "on" } else { "off" }
        )
    }
}

const TF32_OPS: [&str; 3] = ["matmul", "conv", "rnn"];

/// Serialises flag changes: two compilations must not interleave theirs.
static FLAGS_LOCK: Mutex<()> = Mutex::new(());

fn read() -> Result<(Vec<String>, bool)> {
    let precisions = TF32_OPS
        .iter()
        .map(|op| shim::fp32_precision("cuda", op))
        .collect::<Result<Vec<_>>>()?;
    Ok((precisions, shim::cudnn_benchmark()?))
}

fn write(precisions: &[String], benchmark: bool) -> Result<()> {
    for (op, precision) in TF32_OPS.iter().zip(precisions) {
        shim::set_fp32_precision("cuda", op, precision)?;
    }
    shim::set_cudnn_benchmark(benchmark)
}

/// `flags` set until the guard drops, which restores what was there, also
/// when the work in between fails or panics. These flags are process-wide in
/// libtorch: other threads running meanwhile see them, which is why perfopt
/// only does this while compiling and bakes the choice into a CUDA graph
/// rather than switching flags per call.
pub struct FlagsGuard {
    saved: (Vec<String>, bool),
    _lock: MutexGuard<'static, ()>,
}

impl FlagsGuard {
    pub fn set(flags: NumericFlags) -> Result<FlagsGuard> {
        let lock = FLAGS_LOCK.lock();
        let saved = read()?;
        let guard = FlagsGuard { saved, _lock: lock };
        let precision = if flags.tf32 { "tf32" } else { "ieee" };
        write(
            &[
                precision.to_string(),
                precision.to_string(),
                precision.to_string(),
            ],
            flags.cudnn_benchmark,
        )?;
        Ok(guard)
    }
}

impl Drop for FlagsGuard {
    fn drop(&mut self) {
        // Writing back values read a moment ago does not fail in practice; if
        // it did, there is nothing better to do here than keep going.
        let _ = write(&self.saved.0, self.saved.1);
    }
}

/// Runs `work` with `flags` set, then restores what was there.
pub fn with_flags<T>(flags: NumericFlags, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let _guard = FlagsGuard::set(flags)?;
    work()
}

/// The flags libtorch has now.
#[cfg(all(test, feature = "torch"))]
pub fn current() -> Result<NumericFlags> {
    Ok(NumericFlags {
        tf32: shim::fp32_precision("cuda", "matmul")? == "tf32",
        cudnn_benchmark: shim::cudnn_benchmark()?,
    })
}

/// How far a reduced-precision candidate may be from the fp32 reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReducedTolerance {
    /// Largest relative error (max |a - b| / max |b|).
    pub relative: f64,
    /// When above 0, judged by cosine similarity instead (embeddings): the
    /// lowest over the outputs' rows must be at least this, and the relative
    /// error at most COSINE_MODE_RELATIVE times `relative` (cosine alone
    /// would accept any change of scale).
    pub min_cosine: f64,
}

/// How much looser the relative bound is when cosine similarity judges.
pub const COSINE_MODE_RELATIVE: f64 = 10.0;

impl ReducedTolerance {
    pub fn accepts(&self, relative_error: f64, cosine: f64) -> bool {
        if self.min_cosine > 0.0 {
            cosine >= self.min_cosine && relative_error <= self.relative * COSINE_MODE_RELATIVE
        } else {
            relative_error <= self.relative
        }
    }

    /// What it asks, as a report or a cache key says it.
    pub fn describe(&self) -> String {
        if self.min_cosine > 0.0 {
            format!(
                "cosine similarity at least {} per row, relative error at most {:e}",
                self.min_cosine,
                self.relative * COSINE_MODE_RELATIVE
            )
        } else {
            format!("relative error at most {:e}", self.relative)
        }
    }
}

/// max |a - b| / max |b| over every output (∞ when shapes or counts differ;
/// exact comparison for integer and boolean outputs).
pub fn relative_error(outputs: &[Tensor], reference: &[Tensor]) -> Result<f64> {
    if outputs.len() != reference.len() {
        return Ok(f64::INFINITY);
    }
    let mut worst = 0.0f64;
    for (a, b) in outputs.iter().zip(reference) {
        if a.size() != b.size() {
            return Ok(f64::INFINITY);
        }
        if a.numel() == 0 {
            continue;
        }
        let floating = a.is_floating_point() || b.is_floating_point();
        let a = a.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
        let b = b.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
        let diff = a.f_sub(&b)?.f_abs()?.f_max()?.f_double_value(&[])?;
        let error = if floating {
            let scale = b.f_abs()?.f_max()?.f_double_value(&[])?;
            diff / scale.max(f64::MIN_POSITIVE)
        } else if diff == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        if error.is_nan() {
            return Ok(f64::INFINITY);
        }
        worst = worst.max(error);
    }
    Ok(worst)
}

/// The relative error of a result tree against a reference tree: tensors
/// as [`relative_error`], other values exactly (∞ when they differ).
pub fn value_error(output: &Value, reference: &Value) -> Result<f64> {
    Ok(match (output, reference) {
        (Value::Tensor(a), Value::Tensor(b)) => {
            relative_error(&[a.shallow_clone()], &[b.shallow_clone()])?
        }
        // A list against a tuple (a scripted form against an exported one)
        // compares element by element too.
        (Value::List(a) | Value::Tuple(a), Value::List(b) | Value::Tuple(b)) => {
            if a.len() != b.len() {
                return Ok(f64::INFINITY);
            }
            let mut worst = 0.0f64;
            for (x, y) in a.iter().zip(b) {
                worst = worst.max(value_error(x, y)?);
            }
            worst
        }
        (Value::Double(a), Value::Double(b)) => {
            if a == b {
                0.0
            } else {
                (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
            }
        }
        (a, b) if a.label() == b.label() && !is_container(a) => 0.0,
        _ => f64::INFINITY,
    })
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::Tensor(_) | Value::List(_) | Value::Tuple(_))
}

/// Whether a result has the reference's structure and tensor dtypes: a
/// candidate that hands out another dtype (a reduced form returning bf16, a
/// form returning float where the model returns double) would change what
/// callers receive, whatever its error.
pub fn same_kinds(output: &Value, reference: &Value) -> bool {
    match (output, reference) {
        (Value::Tensor(a), Value::Tensor(b)) => a.kind() == b.kind(),
        (Value::List(a) | Value::Tuple(a), Value::List(b) | Value::Tuple(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_kinds(x, y))
        }
        (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// The lowest cosine similarity between an output and the reference's over
/// a result tree, row by row (each index of a tensor's first dimension, so
/// that one row of a batch cannot hide behind larger ones; a 1-dim tensor is
/// one row): 1 for identical, 0 when shapes, counts or non-floating values
/// differ. How embeddings are judged, where a reduced precision moves every
/// value a little but not the direction. A floating scalar counts as 1 less
/// its relative error.
pub fn value_cosine(output: &Value, reference: &Value) -> Result<f64> {
    Ok(match (output, reference) {
        (Value::Tensor(a), Value::Tensor(b)) => tensor_cosine(a, b)?,
        (Value::List(a) | Value::Tuple(a), Value::List(b) | Value::Tuple(b)) => {
            if a.len() != b.len() {
                return Ok(0.0);
            }
            let mut worst = 1.0f64;
            for (x, y) in a.iter().zip(b) {
                worst = worst.min(value_cosine(x, y)?);
            }
            worst
        }
        (Value::Double(_), Value::Double(_)) => (1.0 - value_error(output, reference)?).max(0.0),
        (a, b) if a.label() == b.label() && !is_container(a) => 1.0,
        _ => 0.0,
    })
}

fn tensor_cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.size() != b.size() {
        return Ok(0.0);
    }
    if a.numel() == 0 {
        return Ok(1.0);
    }
    if !(a.is_floating_point() || b.is_floating_point()) {
        // Indices, masks: equal or not.
        let same = relative_error(&[a.shallow_clone()], &[b.shallow_clone()])? == 0.0;
        return Ok(if same { 1.0 } else { 0.0 });
    }
    let a = a.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let b = b.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    if a.dim() < 2 {
        return row_cosine(&a, &b);
    }
    let mut worst = 1.0f64;
    for row in 0..a.size()[0] {
        let cosine = row_cosine(&a.f_narrow(0, row, 1)?, &b.f_narrow(0, row, 1)?)?;
        worst = worst.min(cosine);
    }
    Ok(worst)
}

/// The cosine similarity of two f64 tensors of one shape, as vectors (f64
/// squares of values from f32 or narrower outputs do not underflow).
fn row_cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    let dot = |x: &Tensor, y: &Tensor| -> Result<f64> {
        Ok(x.f_mul(y)?.f_sum(Kind::Double)?.f_double_value(&[])?)
    };
    let (ab, aa, bb) = (dot(a, b)?, dot(a, a)?, dot(b, b)?);
    let cosine = match (aa == 0.0, bb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => ab / (aa.sqrt() * bb.sqrt()),
    };
    Ok(if cosine.is_nan() {
        0.0
    } else {
        cosine.min(1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_outputs() {
        let t = |v: &[f32]| Value::Tensor(Tensor::from_slice(v));
        let b = [1.0f32, -2.0, 4.0];
        assert!((value_cosine(&t(&[2.0, -4.0, 8.0]), &t(&b)).unwrap() - 1.0).abs() < 1e-12);
        let opposite = [-1.0f32, 2.0, -4.0];
        assert!((value_cosine(&t(&opposite), &t(&b)).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(value_cosine(&t(&[1.0, -2.0]), &t(&b)).unwrap(), 0.0);
        let ids = |v: &[i64]| Value::Tensor(Tensor::from_slice(v));
        assert_eq!(value_cosine(&ids(&[1, 2]), &ids(&[1, 2])).unwrap(), 1.0);
        assert_eq!(value_cosine(&ids(&[1, 3]), &ids(&[1, 2])).unwrap(), 0.0);
        let pair = Value::Tuple(vec![t(&b), t(&opposite)]);
        let reference = Value::Tuple(vec![t(&b), t(&b)]);
        assert!(value_cosine(&pair, &reference).unwrap() < -0.99);
        // Row by row: a small row turned round is not hidden by a large one.
        let rows = |v: [f32; 4]| {
            let t = Tensor::f_empty([2, 2], (Kind::Float, Device::Cpu)).unwrap();
            // SAFETY: a fresh contiguous 2x2 f32 tensor.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), t.data_ptr().cast::<f32>(), 4) };
            Value::Tensor(t)
        };
        let flipped = value_cosine(
            &rows([100.0, 100.0, -0.1, 0.1]),
            &rows([100.0, 100.0, 0.1, -0.1]),
        );
        assert!(flipped.unwrap() < -0.99);
        // A list against a tuple compares the values, not only the shapes.
        let list = Value::List(vec![t(&b)]);
        let other = Value::Tuple(vec![t(&opposite)]);
        assert!(value_error(&list, &other).unwrap() > 1.0);
        assert!(same_kinds(&list, &Value::Tuple(vec![t(&b)])));
        assert!(!same_kinds(&ids(&[1, 2]), &t(&b)));
    }

    #[test]
    fn relative_error_of_outputs() {
        let b = Tensor::from_slice(&[1.0f32, -2.0, 4.0]);
        let a = Tensor::from_slice(&[1.0f32, -2.0, 4.004]);
        let err = relative_error(&[a], &[b.shallow_clone()]).unwrap();
        assert!((err - 0.001).abs() < 1e-6, "{err}");
        assert_eq!(
            relative_error(&[b.shallow_clone()], &[b.shallow_clone()]).unwrap(),
            0.0
        );
        let shorter = Tensor::from_slice(&[1.0f32]);
        assert!(relative_error(&[shorter], &[b.shallow_clone()])
            .unwrap()
            .is_infinite());
        assert!(relative_error(&[], &[b]).unwrap().is_infinite());
        let ints = Tensor::from_slice(&[1i64, 2]);
        let other = Tensor::from_slice(&[1i64, 3]);
        assert_eq!(
            relative_error(&[ints.shallow_clone()], &[ints.shallow_clone()]).unwrap(),
            0.0
        );
        assert!(relative_error(&[other], &[ints]).unwrap().is_infinite());
    }

    // The lite build has no TF32 or cuDNN flags to set.
    #[cfg(feature = "torch")]
    #[test]
    fn flags_are_restored() {
        let before = current().unwrap();
        let inside = with_flags(
            NumericFlags {
                tf32: !before.tf32,
                cudnn_benchmark: !before.cudnn_benchmark,
            },
            current,
        )
        .unwrap();
        assert_eq!(inside.tf32, !before.tf32);
        assert_eq!(inside.cudnn_benchmark, !before.cudnn_benchmark);
        assert_eq!(current().unwrap(), before);
    }
}
