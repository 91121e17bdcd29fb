//! Joins, repeats, and the elementwise reads a relative error makes, on the
//! lite build's tensors (the core's batching joins chunks along the batch
//! dimension, recommend_batch repeats a sample, numerics compares outputs).

use std::borrow::Borrow;

use super::tensor::{dim_index, invalid, Device, Kind, Tensor, TensorResult};

impl Tensor {
    /// `tensors` joined along `dim`: the same kind, and the same sizes but
    /// along `dim`.
    pub fn f_cat<T: Borrow<Tensor>>(tensors: &[T], dim: i64) -> TensorResult<Tensor> {
        let Some(first) = tensors.first().map(Borrow::borrow) else {
            return Err(invalid("joining no tensors"));
        };
        let d = dim_index(dim, first.dim())?;
        let mut sizes = first.size();
        sizes[d] = 0;
        for t in tensors.iter().map(Borrow::borrow) {
            let mut other = t.size();
            let along = other.get(d).copied().unwrap_or(0);
            if other.len() != sizes.len() || t.kind() != first.kind() {
                return Err(invalid(format!(
                    "joining a {:?} tensor of shape {:?} to a {:?} one of shape {:?}",
                    t.kind(),
                    t.size(),
                    first.kind(),
                    first.size()
                )));
            }
            other[d] = sizes[d];
            if other != sizes {
                return Err(invalid(format!(
                    "joining tensors of shapes {:?} and {:?} along dimension {d}",
                    first.size(),
                    t.size()
                )));
            }
            sizes[d] += along;
        }
        let out = Tensor::f_empty(&sizes, (first.kind(), Device::Cpu))?;
        let item = first.kind().elt_size_in_bytes();
        let outer: usize = sizes[..d].iter().product::<i64>() as usize;
        let inner: usize = sizes[d + 1..].iter().product::<i64>() as usize;
        let parts: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.borrow().f_contiguous())
            .collect::<TensorResult<_>>()?;
        let target = out.data_ptr().cast::<u8>();
        let row = sizes[d] as usize * inner * item;
        let mut column = 0usize;
        for part in &parts {
            let chunk = part.inner.sizes[d] as usize * inner * item;
            let source = part.data_ptr().cast::<u8>();
            for o in 0..outer {
                // SAFETY: each part is contiguous with `outer` rows of
                // `chunk` bytes; the output has `outer` rows of `row` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        source.add(o * chunk),
                        target.add(o * row + column),
                        chunk,
                    )
                };
            }
            column += chunk;
        }
        Ok(out)
    }

    /// The tensor repeated `repeats[d]` times along each dimension d.
    pub fn f_repeat(&self, repeats: impl AsRef<[i64]>) -> TensorResult<Tensor> {
        let repeats = repeats.as_ref();
        if repeats.len() != self.dim() || repeats.iter().any(|&r| r < 0) {
            return Err(invalid(format!(
                "repeats {repeats:?} for a tensor of shape {:?}",
                self.size()
            )));
        }
        let mut out = self.shallow_clone();
        for (d, &r) in repeats.iter().enumerate() {
            if r != 1 {
                let copies: Vec<&Tensor> = std::iter::repeat_n(&out, r as usize).collect();
                out = match copies.is_empty() {
                    true => out.f_narrow(d as i64, 0, 0)?.f_detach_copy()?,
                    false => Tensor::f_cat(&copies, d as i64)?,
                };
            }
        }
        Ok(out)
    }

    /// Every element as f64, in row-major order, passed to `f` with its
    /// position among them (no copy of the tensor is made).
    pub(super) fn for_each_value(&self, mut f: impl FnMut(usize, f64)) {
        let (kind, source) = (self.inner.kind, self.data_ptr().cast::<u8>().cast_const());
        let mut position = 0usize;
        self.for_each_run(|at, count| {
            for i in 0..count {
                // SAFETY: as in copy_into, element by element.
                f(position + i, unsafe { kind.read(source, at + i) });
            }
            position += count;
        });
    }

    /// A Double tensor of `self`'s shape whose element i is `f(i, x_i)`,
    /// written into memory allocated fallibly (an output too large to
    /// compare is out of memory, not an abort).
    fn map_to_double(&self, mut f: impl FnMut(usize, f64) -> f64) -> TensorResult<Tensor> {
        let out = Tensor::f_empty(&self.inner.sizes, (Kind::Double, Device::Cpu))?;
        let target = out.data_ptr().cast::<f64>();
        // SAFETY: `out` is a fresh contiguous buffer of one f64 per element
        // of `self`, and positions run over exactly those elements.
        self.for_each_value(|i, x| unsafe { target.add(i).write(f(i, x)) });
        Ok(out)
    }

    /// Elementwise difference, in f64 (what a relative error compares).
    pub fn f_sub(&self, other: &Tensor) -> TensorResult<Tensor> {
        self.zip_to_double(other, "subtracting", |a, b| a - b)
    }

    /// Elementwise product, in f64 (what a cosine similarity sums).
    pub fn f_mul(&self, other: &Tensor) -> TensorResult<Tensor> {
        self.zip_to_double(other, "multiplying", |a, b| a * b)
    }

    /// A Double tensor whose element i is `f(self_i, other_i)`, the two of
    /// one shape (`what` names the operation in the error otherwise).
    fn zip_to_double(
        &self,
        other: &Tensor,
        what: &str,
        f: impl Fn(f64, f64) -> f64,
    ) -> TensorResult<Tensor> {
        if self.size() != other.size() {
            return Err(invalid(format!(
                "{what} tensors of shapes {:?} and {:?}",
                self.size(),
                other.size()
            )));
        }
        // Read in row-major order beside `self`: contiguous, so element i
        // is at position i.
        let other = other.f_contiguous()?;
        let (kind, source) = (other.inner.kind, other.data_ptr().cast::<u8>().cast_const());
        // SAFETY: `other` is contiguous with as many elements as `self`.
        self.map_to_double(|i, a| f(a, unsafe { kind.read(source, i) }))
    }

    /// The sum of every element, in f64 (the only sum perfopt takes), as a
    /// 0-dim tensor.
    pub fn f_sum(&self, dtype: impl Into<Option<Kind>>) -> TensorResult<Tensor> {
        if let Some(kind) = dtype.into().filter(|k| *k != Kind::Double) {
            return Err(invalid(format!(
                "a sum in {kind:?}: the host sums in Double"
            )));
        }
        let mut sum = 0.0f64;
        self.for_each_value(|_, v| sum += v);
        let out = Tensor::f_empty([], (Kind::Double, Device::Cpu))?;
        // SAFETY: a fresh buffer of one f64.
        unsafe { out.data_ptr().cast::<f64>().write(sum) };
        Ok(out)
    }

    pub fn f_abs(&self) -> TensorResult<Tensor> {
        self.map_to_double(|_, v| v.abs())
    }

    /// The largest element (NaN when any is), as a 0-dim tensor.
    pub fn f_max(&self) -> TensorResult<Tensor> {
        if self.numel() == 0 {
            return Err(invalid("the maximum of no elements"));
        }
        let mut max = f64::NEG_INFINITY;
        self.for_each_value(|_, v| {
            max = if v.is_nan() || max.is_nan() {
                f64::NAN
            } else {
                max.max(v)
            }
        });
        let out = Tensor::f_empty([], (Kind::Double, Device::Cpu))?;
        // SAFETY: a fresh buffer of one f64.
        unsafe { out.data_ptr().cast::<f64>().write(max) };
        Ok(out)
    }

    /// The element at `index` (all of a 0-dim tensor's one element).
    pub fn f_double_value(&self, index: &[i64]) -> TensorResult<f64> {
        if index.len() != self.dim()
            || index
                .iter()
                .zip(&self.inner.sizes)
                .any(|(&i, &n)| i < 0 || i >= n)
        {
            return Err(invalid(format!(
                "index {index:?} of a tensor of shape {:?}",
                self.size()
            )));
        }
        let at: i64 = index
            .iter()
            .zip(&self.inner.strides)
            .map(|(i, s)| i * s)
            .sum();
        // SAFETY: a checked index inside the tensor.
        Ok(unsafe {
            self.inner
                .kind
                .read(self.data_ptr().cast::<u8>(), at as usize)
        })
    }
}
