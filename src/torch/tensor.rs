//! DLPack in and out, and storage identity (src/cxx/tensor.cpp).

use std::any::Any;
use std::ffi::{c_int, c_void};

use super::check;
use crate::error::Result;

extern "C" {
    fn pshim_tensor_from_dlpack(dl_tensor: *const c_void, out: *mut *mut c_void) -> c_int;
    fn pshim_tensor_to_dlpack(tensor: *const c_void, out_managed: *mut *mut c_void) -> c_int;
    fn pshim_tensor_from_owned(
        data: *mut c_void,
        sizes: *const i64,
        ndim: usize,
        scalar_type: c_int,
        owner: *mut c_void,
        release: unsafe extern "C" fn(*mut c_void),
        out: *mut *mut c_void,
    ) -> c_int;
    fn pshim_tensor_holders(
        tensor: *const c_void,
        storage: *mut *const c_void,
        storage_holders: *mut usize,
        tensor_impl: *mut *const c_void,
        impl_holders: *mut usize,
    ) -> c_int;
}

/// A non-owning view of the memory a DLPack tensor describes.
///
/// # Safety
/// `dl_tensor` points to a DLTensor whose fields were validated and whose
/// memory outlives the returned tensor's use.
pub unsafe fn from_dlpack(dl_tensor: *const c_void) -> Result<tch::Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the caller's contract; `out` is a valid out pointer.
    check(
        unsafe { pshim_tensor_from_dlpack(dl_tensor, &mut out) },
        "wrapping a DLPack tensor",
    )?;
    // SAFETY: the shim hands over a heap at::Tensor.
    Ok(unsafe { tch::Tensor::from_ptr(out.cast()) })
}

unsafe extern "C" fn release_owner(owner: *mut c_void) {
    // SAFETY: `owner` is the Box<Box<dyn Any + Send>> from_owned leaked,
    // released once.
    drop(unsafe { Box::from_raw(owner.cast::<Box<dyn Any + Send>>()) });
}

/// A tensor over memory another runtime owns (no copy): `owner` is dropped
/// with the tensor's storage.
///
/// # Safety
/// `data` holds the shape's elements of `kind`, contiguous, for as long as
/// `owner` lives.
pub unsafe fn from_owned(
    data: *mut c_void,
    sizes: &[i64],
    kind: tch::Kind,
    owner: Box<dyn Any + Send>,
) -> Result<tch::Tensor> {
    let (scalar_type, _) = crate::scalar_type::code_of(kind).ok_or_else(|| {
        crate::error::Error::invalid_argument(format!("{kind:?} tensors over foreign memory"))
    })?;
    let owner = Box::into_raw(Box::new(owner)).cast::<c_void>();
    let mut out = std::ptr::null_mut();
    // SAFETY: the caller's contract for `data`; the shim releases `owner`
    // exactly once: with the tensor's storage, or at once when the tensor
    // cannot be made.
    check(
        unsafe {
            pshim_tensor_from_owned(
                data,
                sizes.as_ptr(),
                sizes.len(),
                scalar_type,
                owner,
                release_owner,
                &mut out,
            )
        },
        "wrapping memory another runtime owns",
    )?;
    // SAFETY: the shim hands over a heap at::Tensor.
    Ok(unsafe { tch::Tensor::from_ptr(out.cast()) })
}

/// A `DLManagedTensor *` sharing the tensor's storage; the receiver owns it.
pub fn to_dlpack(tensor: &tch::Tensor) -> Result<*mut c_void> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live tensor; valid out pointer.
    check(
        unsafe { pshim_tensor_to_dlpack(tensor.as_ptr() as *const c_void, &mut out) },
        "exporting a tensor as DLPack",
    )?;
    Ok(out)
}

/// Who holds a tensor's memory: its storage and the tensor itself, each as
/// (identity, holders). The storage is `None` for a tensor without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holders {
    pub storage: Option<(usize, usize)>,
    pub tensor: (usize, usize),
}

pub fn holders(tensor: &tch::Tensor) -> Result<Holders> {
    let (mut storage, mut storage_holders) = (std::ptr::null(), 0usize);
    let (mut tensor_impl, mut impl_holders) = (std::ptr::null(), 0usize);
    // SAFETY: a live tensor; valid out pointers.
    check(
        unsafe {
            pshim_tensor_holders(
                tensor.as_ptr() as *const c_void,
                &mut storage,
                &mut storage_holders,
                &mut tensor_impl,
                &mut impl_holders,
            )
        },
        "reading a tensor's holders",
    )?;
    Ok(Holders {
        storage: (!storage.is_null()).then_some((storage as usize, storage_holders)),
        tensor: (tensor_impl as usize, impl_holders),
    })
}
