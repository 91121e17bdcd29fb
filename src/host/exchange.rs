//! The lite build's tensors shared with others without a copy: a caller's
//! DLPack input viewed, a tensor handed out as a DLManagedTensor, another
//! runtime's output (ONNX Runtime's) owned, and who holds a tensor's memory.

use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

use super::tensor::{contiguous_strides, element_count, Kind, Owner, Storage, Tensor};
use crate::error::{Error, ErrorKind, Result};
use crate::ffi::dlpack::{kDLCPU, DLDataType, DLDevice, DLManagedTensor, DLTensor};

/// A tensor over memory another runtime owns: `owner` is dropped when
/// the last tensor sharing it goes.
///
/// # Safety
/// `data` holds the shape's elements of `kind`, contiguous, for as long
/// as `owner` lives.
pub unsafe fn from_owned(
    data: *mut c_void,
    sizes: &[i64],
    kind: Kind,
    owner: Box<dyn Any + Send>,
) -> Result<Tensor> {
    element_count(sizes)?;
    let storage = Arc::new(Storage {
        data: data.cast(),
        owner: Owner::Foreign(owner),
    });
    Ok(Tensor::new(
        storage,
        sizes.to_vec(),
        contiguous_strides(sizes),
        0,
        kind,
    ))
}

/// A non-owning view of the memory a (checked) DLPack tensor describes.
///
/// # Safety
/// `dl_tensor` points to a DLTensor whose fields were validated (host
/// memory, non-negative strides, a supported dtype) and whose memory
/// outlives the returned tensor's use.
pub unsafe fn from_dlpack(dl_tensor: *const c_void) -> Result<Tensor> {
    // SAFETY: the caller's contract.
    let dl = unsafe { &*dl_tensor.cast::<DLTensor>() };
    if dl.device.device_type != kDLCPU {
        return Err(Error::new(
            ErrorKind::UnsupportedDevice,
            "this perfopt is the build without libtorch: inputs are host memory (kDLCPU, \
             kDLCUDAHost)",
        ));
    }
    let kind = Kind::of_dl_type(dl.dtype)
        .ok_or_else(|| Error::invalid_argument("an unsupported DLPack dtype"))?;
    let ndim = dl.ndim as usize;
    let sizes: Vec<i64> = match ndim {
        0 => Vec::new(),
        // SAFETY: checked non-NULL with ndim values by the caller.
        _ => unsafe { std::slice::from_raw_parts(dl.shape, ndim) }.to_vec(),
    };
    let strides = match dl.strides.is_null() {
        true => contiguous_strides(&sizes),
        // SAFETY: as above.
        false => unsafe { std::slice::from_raw_parts(dl.strides, ndim) }.to_vec(),
    };
    let data = dl.data.cast::<u8>().wrapping_add(dl.byte_offset as usize);
    let storage = Arc::new(Storage {
        data: if data.is_null() {
            std::ptr::null_mut()
        } else {
            data
        },
        owner: Owner::Borrowed,
    });
    Ok(Tensor::new(storage, sizes, strides, 0, kind))
}

/// What a DLManagedTensor perfopt hands out keeps alive.
struct Exported {
    managed: DLManagedTensor,
    sizes: Vec<i64>,
    strides: Vec<i64>,
    _tensor: Tensor,
}

unsafe extern "C" fn release_exported(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: `manager_ctx` is the leaked Box<Exported> that holds
    // `managed` (to_dlpack set it), released once by its receiver.
    drop(unsafe { Box::from_raw((*managed).manager_ctx.cast::<Exported>()) });
}

/// A `DLManagedTensor *` sharing the tensor's memory; the receiver owns it.
pub fn to_dlpack(tensor: &Tensor) -> Result<*mut c_void> {
    let (code, bits) = tensor.kind().dl_type();
    let exported = Box::new(Exported {
        managed: DLManagedTensor {
            dl_tensor: DLTensor {
                data: tensor.data_ptr(),
                device: DLDevice {
                    device_type: kDLCPU,
                    device_id: 0,
                },
                ndim: tensor.dim() as i32,
                dtype: DLDataType {
                    code,
                    bits,
                    lanes: 1,
                },
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(release_exported),
        },
        sizes: tensor.size(),
        strides: tensor.stride(),
        _tensor: tensor.shallow_clone(),
    });
    let raw = Box::into_raw(exported);
    // SAFETY: a live box, just made; its vectors do not move with it.
    unsafe {
        (*raw).managed.dl_tensor.shape = (*raw).sizes.as_mut_ptr();
        (*raw).managed.dl_tensor.strides = (*raw).strides.as_mut_ptr();
        (*raw).managed.manager_ctx = raw.cast();
        Ok(std::ptr::addr_of_mut!((*raw).managed).cast())
    }
}

/// Who holds a tensor's memory: its storage and the tensor itself, each as
/// (identity, holders), as src/torch/tensor.rs reports libtorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holders {
    pub storage: Option<(usize, usize)>,
    pub tensor: (usize, usize),
}

pub fn holders(tensor: &Tensor) -> Result<Holders> {
    let storage = &tensor.inner.storage;
    Ok(Holders {
        storage: (!storage.data.is_null())
            .then(|| (Arc::as_ptr(storage) as usize, Arc::strong_count(storage))),
        tensor: (
            Arc::as_ptr(&tensor.inner) as usize,
            Arc::strong_count(&tensor.inner),
        ),
    })
}
