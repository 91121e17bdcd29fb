//! The lite build's tensor: host memory with a shape, strides and an element
//! kind, shared by reference count the way libtorch's tensors are (a
//! tensor's identity and its storage's, each with its holders), and the few
//! operations the core needs (views along a dimension, joins, copies, the
//! conversions a relative error reads: src/host/ops.rs). Its method names
//! are tch's, so the core reads the same in both builds. Memory shared with
//! others (DLPack, ONNX Runtime's outputs) is src/host/exchange.rs.

use std::alloc::Layout;
use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

pub use super::exchange::{from_dlpack, from_owned, holders, to_dlpack, Holders};
pub use super::kind::{Device, Element, Kind};
use super::memory;
use crate::error::{Error, ErrorKind, Result};

/// A tensor operation's failure, as tch's are their own type (so that the
/// core's `?` reads the same in both builds).
#[derive(Debug)]
pub struct TensorError(Error);

impl From<TensorError> for Error {
    fn from(err: TensorError) -> Error {
        err.0
    }
}

impl From<Error> for TensorError {
    fn from(err: Error) -> TensorError {
        TensorError(err)
    }
}

pub(super) type TensorResult<T> = std::result::Result<T, TensorError>;

pub(super) fn invalid(message: impl Into<String>) -> TensorError {
    TensorError(Error::invalid_argument(message))
}

/// Who frees a storage's memory.
pub(super) enum Owner {
    /// perfopt allocated it (zeroed, 64-byte aligned); counted when a
    /// measurement was counting then (its release is subtracted only then).
    Heap(Layout, bool),
    /// Another runtime's value (an ONNX Runtime output), dropped with it.
    Foreign(#[allow(dead_code)] Box<dyn Any + Send>),
    /// The caller's memory for one call (a DLPack input): never freed here.
    Borrowed,
}

pub(super) struct Storage {
    pub(super) data: *mut u8,
    pub(super) owner: Owner,
}

// SAFETY: the memory is plain bytes owned as `owner` says; perfopt writes a
// storage only while it is the storage's one holder (copies, fresh outputs).
unsafe impl Send for Storage {}
unsafe impl Sync for Storage {}

impl Storage {
    fn allocate(bytes: usize) -> Result<Arc<Storage>> {
        if bytes == 0 {
            return Ok(Arc::new(Storage {
                data: std::ptr::null_mut(),
                owner: Owner::Borrowed,
            }));
        }
        let layout = Layout::from_size_align(bytes, 64)
            .map_err(|_| Error::new(ErrorKind::OutOfMemory, format!("{bytes} bytes")))?;
        // SAFETY: a non-zero size.
        let data = unsafe { std::alloc::alloc_zeroed(layout) };
        if data.is_null() {
            return Err(Error::new(
                ErrorKind::OutOfMemory,
                format!("cannot allocate {bytes} bytes for a tensor"),
            ));
        }
        let counted = memory::counted_allocation(bytes);
        Ok(Arc::new(Storage {
            data,
            owner: Owner::Heap(layout, counted),
        }))
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Owner::Heap(layout, counted) = self.owner {
            if counted {
                memory::counted_release(layout.size());
            }
            // SAFETY: allocated in `allocate` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.data, layout) };
        }
    }
}

pub(super) struct TensorImpl {
    pub(super) storage: Arc<Storage>,
    pub(super) sizes: Vec<i64>,
    /// In elements.
    pub(super) strides: Vec<i64>,
    /// In bytes, from the storage's start.
    pub(super) offset: usize,
    pub(super) kind: Kind,
}

/// A host tensor; [`Tensor::shallow_clone`] shares it as libtorch's do.
pub struct Tensor {
    pub(super) inner: Arc<TensorImpl>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {:?}]", self.inner.sizes, self.inner.kind)
    }
}

pub(super) fn contiguous_strides(sizes: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; sizes.len()];
    for d in (0..sizes.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * sizes[d + 1].max(1);
    }
    strides
}

pub(super) fn element_count(sizes: &[i64]) -> TensorResult<usize> {
    sizes.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| Error::invalid_argument(format!("a tensor of shape {sizes:?}")).into())
    })
}

pub(super) fn dim_index(dim: i64, ndim: usize) -> TensorResult<usize> {
    let wrapped = if dim < 0 { dim + ndim as i64 } else { dim };
    usize::try_from(wrapped)
        .ok()
        .filter(|&d| d < ndim)
        .ok_or_else(|| {
            Error::invalid_argument(format!("dimension {dim} of a tensor of {ndim} dimensions"))
                .into()
        })
}

impl Tensor {
    pub(super) fn new(
        storage: Arc<Storage>,
        sizes: Vec<i64>,
        strides: Vec<i64>,
        offset: usize,
        kind: Kind,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(TensorImpl {
                storage,
                sizes,
                strides,
                offset,
                kind,
            }),
        }
    }

    pub fn f_empty(size: impl AsRef<[i64]>, options: (Kind, Device)) -> TensorResult<Tensor> {
        let (kind, device) = options;
        host_only(device)?;
        let sizes = size.as_ref().to_vec();
        let bytes = element_count(&sizes)?
            .checked_mul(kind.elt_size_in_bytes())
            .ok_or_else(|| Error::invalid_argument(format!("a tensor of shape {sizes:?}")))?;
        let strides = contiguous_strides(&sizes);
        Ok(Tensor::new(
            Storage::allocate(bytes)?,
            sizes,
            strides,
            0,
            kind,
        ))
    }

    /// Zeros: the memory is allocated zeroed.
    pub fn f_zeros(size: impl AsRef<[i64]>, options: (Kind, Device)) -> TensorResult<Tensor> {
        Tensor::f_empty(size, options)
    }

    pub fn zeros(size: impl AsRef<[i64]>, options: (Kind, Device)) -> Tensor {
        Tensor::f_zeros(size, options).expect("allocating a tensor of zeros")
    }

    pub fn from_slice<T: Element>(data: &[T]) -> Tensor {
        let out = Tensor::zeros([data.len() as i64], (T::KIND, Device::Cpu));
        // SAFETY: a fresh buffer of exactly these elements.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr().cast::<u8>(),
                out.data_ptr().cast::<u8>(),
                std::mem::size_of_val(data),
            )
        };
        out
    }

    pub fn size(&self) -> Vec<i64> {
        self.inner.sizes.clone()
    }

    pub fn stride(&self) -> Vec<i64> {
        self.inner.strides.clone()
    }

    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    pub fn device(&self) -> Device {
        Device::Cpu
    }

    pub fn dim(&self) -> usize {
        self.inner.sizes.len()
    }

    pub fn numel(&self) -> usize {
        element_count(&self.inner.sizes).unwrap_or(0)
    }

    pub fn is_floating_point(&self) -> bool {
        self.inner.kind.is_floating_point()
    }

    pub fn data_ptr(&self) -> *mut c_void {
        if self.inner.storage.data.is_null() {
            return std::ptr::null_mut();
        }
        self.inner
            .storage
            .data
            .wrapping_add(self.inner.offset)
            .cast()
    }

    pub fn shallow_clone(&self) -> Tensor {
        Tensor {
            inner: self.inner.clone(),
        }
    }

    pub fn is_contiguous(&self) -> bool {
        let expected = contiguous_strides(&self.inner.sizes);
        self.inner
            .sizes
            .iter()
            .zip(self.inner.strides.iter().zip(&expected))
            .all(|(&n, (&s, &e))| n <= 1 || s == e)
    }

    pub fn f_to_device(&self, device: Device) -> TensorResult<Tensor> {
        host_only(device)?;
        Ok(self.shallow_clone())
    }

    /// The element offsets (from the data pointer) of every element, in
    /// row-major order, passed on in runs: `f(first, count)` where a run's
    /// elements follow each other in memory (the innermost dimension, when
    /// its stride is 1).
    pub(super) fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        let (sizes, strides) = (&self.inner.sizes, &self.inner.strides);
        if self.numel() == 0 {
            return;
        }
        if sizes.is_empty() {
            return f(0, 1);
        }
        let last = sizes.len() - 1;
        let run = if strides[last] == 1 {
            sizes[last] as usize
        } else {
            1
        };
        let mut index = vec![0i64; sizes.len()];
        loop {
            let at: i64 = index.iter().zip(strides).map(|(i, s)| i * s).sum();
            f(at as usize, run);
            // The next index, the innermost dimension moving by the run.
            let mut d = last;
            index[d] += run as i64;
            while index[d] >= sizes[d] {
                if d == 0 {
                    return;
                }
                index[d] = 0;
                d -= 1;
                index[d] += 1;
            }
        }
    }

    /// A contiguous copy of `self` into `out` (same element count and kind).
    pub(super) fn copy_into(&self, out: *mut u8) {
        let item = self.inner.kind.elt_size_in_bytes();
        let source = self.data_ptr().cast::<u8>();
        let mut written = 0usize;
        self.for_each_run(|at, count| {
            // SAFETY: runs lie inside the tensor's memory (its strides were
            // checked when it was made) and `out` has room for every element.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    source.add(at * item),
                    out.add(written * item),
                    count * item,
                )
            };
            written += count;
        });
    }

    pub fn f_detach_copy(&self) -> TensorResult<Tensor> {
        let out = Tensor::f_empty(&self.inner.sizes, (self.inner.kind, Device::Cpu))?;
        self.copy_into(out.data_ptr().cast());
        Ok(out)
    }

    pub fn f_contiguous(&self) -> TensorResult<Tensor> {
        match self.is_contiguous() {
            true => Ok(self.shallow_clone()),
            false => self.f_detach_copy(),
        }
    }

    /// The tensor as `kind`, each element through f64: exact for what the
    /// core converts (every kind to Double, for a relative error); an int64
    /// beyond 2^53 or a float out of an integer's range would not be cast
    /// as libtorch casts it.
    pub fn f_to_kind(&self, kind: Kind) -> TensorResult<Tensor> {
        if kind == self.inner.kind {
            return Ok(self.shallow_clone());
        }
        let out = Tensor::f_empty(&self.inner.sizes, (kind, Device::Cpu))?;
        let (from, to) = (self.inner.kind, out.data_ptr().cast::<u8>());
        let source = self.data_ptr().cast::<u8>().cast_const();
        let mut written = 0usize;
        self.for_each_run(|at, count| {
            for i in 0..count {
                // SAFETY: as in copy_into, element by element.
                unsafe { kind.write(to, written + i, from.read(source, at + i)) };
            }
            written += count;
        });
        Ok(out)
    }

    /// A view of `length` entries of dimension `dim` from `start`.
    pub fn f_narrow(&self, dim: i64, start: i64, length: i64) -> TensorResult<Tensor> {
        let d = dim_index(dim, self.dim())?;
        let size = self.inner.sizes[d];
        let end = start.checked_add(length);
        if start < 0 || length < 0 || end.is_none_or(|end| end > size) {
            return Err(invalid(format!(
                "{length} entries from {start} of dimension {d}, of size {size}"
            )));
        }
        let mut sizes = self.inner.sizes.clone();
        sizes[d] = length;
        let item = self.inner.kind.elt_size_in_bytes() as i64;
        let offset = match length {
            0 => self.inner.offset,
            _ => self.inner.offset + (start * self.inner.strides[d] * item) as usize,
        };
        Ok(Tensor::new(
            self.inner.storage.clone(),
            sizes,
            self.inner.strides.clone(),
            offset,
            self.inner.kind,
        ))
    }
}

fn host_only(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        other => Err(Error::new(
            ErrorKind::UnsupportedDevice,
            format!(
                "this perfopt is the build without libtorch, whose tensors live in host memory: \
                 {other:?} is not available"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::dlpack::DLManagedTensor;

    fn values(t: &Tensor) -> Vec<f64> {
        let mut out = Vec::new();
        t.for_each_value(|_, v| out.push(v));
        out
    }

    #[test]
    fn views_joins_and_copies_keep_row_major_order() {
        let t = Tensor::from_slice(&[0f32, 1., 2., 3., 4., 5.]);
        let grid = Tensor::new(
            t.inner.storage.clone(),
            vec![2, 3],
            vec![3, 1],
            0,
            Kind::Float,
        );
        let column = grid.f_narrow(1, 1, 2).unwrap();
        assert!(!column.is_contiguous());
        assert_eq!(values(&column), [1., 2., 4., 5.]);
        let joined = Tensor::f_cat(&[&column, &column], 1).unwrap();
        assert_eq!(joined.size(), [2, 4]);
        assert_eq!(values(&joined), [1., 2., 1., 2., 4., 5., 4., 5.]);
        let rows = Tensor::f_cat(
            &[
                &grid,
                &column.f_narrow(1, 0, 1).unwrap().f_repeat([1, 3]).unwrap(),
            ],
            0,
        )
        .unwrap();
        assert_eq!(
            values(&rows),
            [0., 1., 2., 3., 4., 5., 1., 1., 1., 4., 4., 4.]
        );
        let halves = grid.f_to_kind(Kind::Half).unwrap();
        assert_eq!(
            values(&halves.f_to_kind(Kind::Int64).unwrap()),
            [0., 1., 2., 3., 4., 5.]
        );
        let diff = grid.f_sub(&grid.f_detach_copy().unwrap()).unwrap();
        assert_eq!(
            diff.f_abs()
                .unwrap()
                .f_max()
                .unwrap()
                .f_double_value(&[])
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn holders_count_views_and_shares() {
        let t = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let h = holders(&t).unwrap();
        assert_eq!((h.tensor.1, h.storage.unwrap().1), (1, 1));
        let view = t.f_narrow(0, 1, 2).unwrap();
        let shared = t.shallow_clone();
        assert_eq!(holders(&t).unwrap().tensor.1, 2);
        assert_eq!(holders(&view).unwrap().storage.unwrap().1, 2);
        let exported = to_dlpack(&view).unwrap().cast::<DLManagedTensor>();
        drop((view, shared));
        // SAFETY: released once, by its deleter.
        unsafe { ((*exported).deleter.unwrap())(exported) };
        assert_eq!(holders(&t).unwrap().storage.unwrap().1, 1);
    }
}
