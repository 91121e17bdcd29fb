//! DLPack 0.8's ABI (DLTensor in, DLManagedTensor out) and the checks that
//! turn a caller's DLTensor into a tensor without undefined behaviour.
//!
//! The header defines these types itself (see cbindgen.toml's after_includes),
//! unless dlpack.h was included first; this file must match that text.
#![allow(non_camel_case_types, non_upper_case_globals)]

use std::ffi::c_void;

use crate::error::{Error, Result};
use crate::runtime::{settings, tensor, Tensor};

pub const kDLCPU: i32 = 1;
pub const kDLCUDA: i32 = 2;
pub const kDLCUDAHost: i32 = 3;
pub const kDLCUDAManaged: i32 = 13;

pub const kDLInt: u8 = 0;
pub const kDLUInt: u8 = 1;
pub const kDLFloat: u8 = 2;
pub const kDLBfloat: u8 = 4;
pub const kDLBool: u8 = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
pub struct DLManagedTensor {
    pub dl_tensor: DLTensor,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// The ranks perfopt accepts; libtorch's own limit is far above any model input.
const MAX_NDIM: i32 = 64;
/// Refuse descriptions of more than 2^48 bytes: no real input is that large,
/// and the arithmetic below stays far from overflow.
const MAX_BYTES: u128 = 1 << 48;

fn dtype_name(dtype: DLDataType) -> Option<&'static str> {
    Some(match (dtype.code, dtype.bits) {
        (kDLFloat, 16) => "float16",
        (kDLFloat, 32) => "float32",
        (kDLFloat, 64) => "float64",
        (kDLBfloat, 16) => "bfloat16",
        (kDLInt, 8) => "int8",
        (kDLInt, 16) => "int16",
        (kDLInt, 32) => "int32",
        (kDLInt, 64) => "int64",
        (kDLUInt, 8) => "uint8",
        (kDLBool, 8) => "bool",
        _ => return None,
    })
}

/// Checks every field of a caller's DLTensor and wraps its memory without a
/// copy. `name` says which input, for messages.
///
/// # Safety
/// `tensor` points to a DLTensor whose `shape` and `strides` (when not NULL)
/// hold `ndim` values and whose data is valid as described until the call
/// that uses the result returns.
pub unsafe fn tensor_from_dl(tensor: &DLTensor, name: &str) -> Result<Tensor> {
    // SAFETY: the caller's contract, passed on.
    unsafe { tensor_from_dl_named(tensor, &|| name.to_string()) }
}

/// [`tensor_from_dl`] with the input's name made only for a message (a
/// name formatted per input per call was on the hot path).
///
/// # Safety
/// As [`tensor_from_dl`].
pub unsafe fn tensor_from_dl_named(tensor: &DLTensor, name: &dyn Fn() -> String) -> Result<Tensor> {
    let bad = |what: String| Err(Error::invalid_argument(format!("{}: {what}", name())));
    if !(0..=MAX_NDIM).contains(&tensor.ndim) {
        return bad(format!(
            "ndim is {}; it must be 0 to {MAX_NDIM}",
            tensor.ndim
        ));
    }
    if dtype_name(tensor.dtype).is_none() || tensor.dtype.lanes != 1 {
        return bad(format!(
            "dtype (code {}, bits {}, lanes {}) is not supported; supported: float16/32/64, \
             bfloat16, int8/16/32/64, uint8, bool, with lanes 1",
            tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes
        ));
    }
    let mut described = *tensor;
    match tensor.device.device_type {
        kDLCPU => {}
        // Pinned host memory is host memory: libtorch has no DLPack device
        // for it, so it is described as the CPU memory it is.
        kDLCUDAHost => {
            described.device = DLDevice {
                device_type: kDLCPU,
                device_id: 0,
            };
        }
        kDLCUDA | kDLCUDAManaged => {
            // Managed memory is addressable as device memory, which is how
            // libtorch can use it (it has no DLPack device for it either).
            described.device.device_type = kDLCUDA;
            // Counted once: the devices a process sees are fixed when CUDA
            // starts (a query per input was a call into CUDA per run).
            static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
            let count = *COUNT.get_or_init(settings::cuda_device_count);
            if tensor.device.device_id < 0 || tensor.device.device_id as usize >= count {
                return bad(format!(
                    "device is CUDA {} but this process has {count} CUDA device(s)",
                    tensor.device.device_id
                ));
            }
        }
        other => {
            return bad(format!(
                "device type {other} is not supported: host memory (kDLCPU, kDLCUDAHost) or CUDA \
                 (kDLCUDA, kDLCUDAManaged)"
            ))
        }
    }
    let ndim = tensor.ndim as usize;
    if ndim > 0 && tensor.shape.is_null() {
        return bad(format!("shape is NULL but ndim is {ndim}"));
    }
    let shape: &[i64] = if ndim == 0 {
        &[]
    } else {
        // SAFETY: non-NULL, holds ndim values (the caller's contract).
        unsafe { std::slice::from_raw_parts(tensor.shape, ndim) }
    };
    if let Some(d) = shape.iter().position(|&d| d < 0) {
        return bad(format!("dimension {d} is {}; sizes must be >= 0", shape[d]));
    }
    let strides: Option<&[i64]> = (!tensor.strides.is_null() && ndim > 0)
        // SAFETY: non-NULL, holds ndim values (the caller's contract).
        .then(|| unsafe { std::slice::from_raw_parts(tensor.strides, ndim) });
    // Saturating: a product of huge sizes must not wrap past the bound.
    let numel: u128 = if shape.contains(&0) {
        0
    } else {
        shape
            .iter()
            .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
            .unwrap_or(u128::MAX)
    };
    let item = (tensor.dtype.bits as u128).div_ceil(8);
    // The furthest element a strided view reaches, in elements.
    let span: u128 = match strides {
        _ if numel == 0 => 0,
        Some(strides) => {
            if let Some(d) = strides.iter().position(|&s| s < 0) {
                return bad(format!(
                    "stride {d} is {}; negative strides are not supported",
                    strides[d]
                ));
            }
            shape
                .iter()
                .zip(strides)
                .map(|(&n, &s)| (n as u128 - 1).saturating_mul(s as u128))
                .fold(1u128, u128::saturating_add)
        }
        None => numel,
    };
    if numel > MAX_BYTES {
        return bad(format!(
            "has {} elements; perfopt accepts at most 2^48",
            if numel == u128::MAX {
                "more than 2^128".to_string()
            } else {
                numel.to_string()
            }
        ));
    }
    if span.saturating_mul(item) > MAX_BYTES {
        return bad(format!(
            "describes {} bytes; perfopt accepts at most 2^48",
            span.saturating_mul(item)
        ));
    }
    if tensor.data.is_null() && numel > 0 {
        return bad("data is NULL".to_string());
    }
    if numel == 0 {
        // Nothing is read: strides and data do not matter.
        described.strides = std::ptr::null_mut();
    }
    // SAFETY: every field was checked above; the caller keeps the memory alive.
    unsafe { tensor::from_dlpack((&described as *const DLTensor).cast()) }
        .map_err(|err| err.context(format!("{}: cannot use this DLTensor", name())))
}

/// A tensor handed to the caller as a DLManagedTensor it owns.
pub fn tensor_to_managed(tensor: &Tensor) -> Result<*mut DLManagedTensor> {
    Ok(tensor::to_dlpack(tensor)?.cast())
}

/// Gives back tensors made for a call that then failed.
///
/// # Safety
/// Each pointer came from [`tensor_to_managed`] and is released once.
pub unsafe fn release_all(tensors: &[*mut DLManagedTensor]) {
    for &managed in tensors {
        // SAFETY: a live DLManagedTensor perfopt made (the caller's contract);
        // its deleter frees it once.
        unsafe {
            if let Some(deleter) = (*managed).deleter {
                deleter(managed);
            }
        }
    }
}
