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
        (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => {
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
        (a, b) if a.label() == b.label() && !matches!(a, Value::Tensor(_)) => 0.0,
        _ => f64::INFINITY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
