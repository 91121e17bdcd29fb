//! Tensors between perfopt and ONNX Runtime without copies: an input is an
//! ORT value over the caller's (contiguous, host) memory
//! (CreateTensorWithDataAsOrtValue), an output a libtorch tensor over the
//! memory ORT allocated, which keeps ORT's value alive until the tensor goes.

use std::ffi::{c_int, c_void};

use ort::memory::MemoryInfo;
use ort::session::SessionInputValue;
use ort::value::{
    DynTensor, DynTensorValueType, DynValue, Shape, TensorElementType, TensorRefMut, ValueType,
};

use crate::error::{Error, ErrorKind, Result};

extern "C" {
    fn pshim_tensor_from_owned(
        data: *mut c_void,
        sizes: *const i64,
        ndim: usize,
        scalar_type: c_int,
        owner: *mut c_void,
        release: unsafe extern "C" fn(*mut c_void),
        out: *mut *mut c_void,
    ) -> c_int;
}

/// One element type in all three vocabularies: libtorch's kind, ONNX's
/// element type, and c10's ScalarType number (which the shim takes).
struct Element {
    kind: tch::Kind,
    onnx: TensorElementType,
    scalar_type: c_int,
    name: &'static str,
}

const ELEMENTS: [Element; 10] = [
    Element {
        kind: tch::Kind::Float,
        onnx: TensorElementType::Float32,
        scalar_type: 6,
        name: "float32",
    },
    Element {
        kind: tch::Kind::Double,
        onnx: TensorElementType::Float64,
        scalar_type: 7,
        name: "float64",
    },
    Element {
        kind: tch::Kind::Half,
        onnx: TensorElementType::Float16,
        scalar_type: 5,
        name: "float16",
    },
    Element {
        kind: tch::Kind::BFloat16,
        onnx: TensorElementType::Bfloat16,
        scalar_type: 15,
        name: "bfloat16",
    },
    Element {
        kind: tch::Kind::Int64,
        onnx: TensorElementType::Int64,
        scalar_type: 4,
        name: "int64",
    },
    Element {
        kind: tch::Kind::Int,
        onnx: TensorElementType::Int32,
        scalar_type: 3,
        name: "int32",
    },
    Element {
        kind: tch::Kind::Int16,
        onnx: TensorElementType::Int16,
        scalar_type: 2,
        name: "int16",
    },
    Element {
        kind: tch::Kind::Int8,
        onnx: TensorElementType::Int8,
        scalar_type: 1,
        name: "int8",
    },
    Element {
        kind: tch::Kind::Uint8,
        onnx: TensorElementType::Uint8,
        scalar_type: 0,
        name: "uint8",
    },
    Element {
        kind: tch::Kind::Bool,
        onnx: TensorElementType::Bool,
        scalar_type: 11,
        name: "bool",
    },
];

/// The name perfopt gives an ONNX element type ("float32").
pub fn onnx_name(ty: TensorElementType) -> String {
    ELEMENTS
        .iter()
        .find(|e| e.onnx == ty)
        .map_or_else(|| format!("{ty:?}").to_lowercase(), |e| e.name.to_string())
}

pub fn kind_name(kind: tch::Kind) -> String {
    ELEMENTS.iter().find(|e| e.kind == kind).map_or_else(
        || format!("{kind:?}").to_lowercase(),
        |e| e.name.to_string(),
    )
}

/// An ORT input over `tensor`'s memory: host, contiguous, of the element
/// type the graph wants (checked by the caller). The tensor must outlive the
/// value.
pub fn input(tensor: &tch::Tensor) -> Result<SessionInputValue<'static>> {
    let shape = Shape::new(tensor.size());
    let data = tensor.data_ptr();
    // A tensor with no elements may have no memory: ORT wants a pointer.
    let data = if data.is_null() {
        std::ptr::NonNull::<u64>::dangling().as_ptr().cast()
    } else {
        data
    };
    let info = MemoryInfo::default();
    macro_rules! view {
        ($t:ty) => {
            // SAFETY: `data` is the tensor's host memory, contiguous, holding
            // the shape's elements of this type; the caller keeps the tensor
            // alive for the run (ORT reads it, never frees it).
            unsafe { TensorRefMut::<$t>::from_raw(info, data, shape) }.map(SessionInputValue::from)
        };
    }
    let value = match tensor.kind() {
        tch::Kind::Float => view!(f32),
        tch::Kind::Double => view!(f64),
        tch::Kind::Half => view!(half::f16),
        tch::Kind::BFloat16 => view!(half::bf16),
        tch::Kind::Int64 => view!(i64),
        tch::Kind::Int => view!(i32),
        tch::Kind::Int16 => view!(i16),
        tch::Kind::Int8 => view!(i8),
        tch::Kind::Uint8 => view!(u8),
        tch::Kind::Bool => view!(bool),
        other => {
            return Err(Error::invalid_argument(format!(
                "{} tensors cannot be passed to ONNX Runtime",
                kind_name(other)
            )))
        }
    };
    value.map_err(|e| Error::new(ErrorKind::Internal, format!("an ONNX Runtime input: {e}")))
}

unsafe extern "C" fn release_value(owner: *mut c_void) {
    // SAFETY: `owner` is the Box<DynTensor> `output` leaked, released once.
    drop(unsafe { Box::from_raw(owner.cast::<DynTensor>()) });
}

/// A libtorch tensor over an output ORT allocated (no copy).
pub fn output(value: DynValue, index: usize) -> Result<tch::Tensor> {
    let (ty, shape) = match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
        other => {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "output {index} of the ONNX model is {other:?}: perfopt passes tensors on, not \
                     ONNX sequences or maps"
                ),
            ))
        }
    };
    let element = ELEMENTS.iter().find(|e| e.onnx == ty).ok_or_else(|| {
        Error::new(
            ErrorKind::UnsupportedModel,
            format!(
                "output {index} of the ONNX model holds {} elements, which perfopt cannot pass \
                     on",
                onnx_name(ty)
            ),
        )
    })?;
    let value = value
        .downcast::<DynTensorValueType>()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("an ONNX Runtime output: {e}")))?;
    let data = value.data_ptr().cast_mut();
    let owner = Box::into_raw(Box::new(value)).cast::<c_void>();
    let mut out = std::ptr::null_mut();
    // SAFETY: `data` is ORT's memory for this value, `shape` its dims; the
    // shim releases `owner` (the value, which owns the memory) exactly once:
    // with the tensor's storage, or at once when the tensor cannot be made.
    crate::torch::check(
        unsafe {
            pshim_tensor_from_owned(
                data,
                shape.as_ptr(),
                shape.len(),
                element.scalar_type,
                owner,
                release_value,
                &mut out,
            )
        },
        "wrapping an ONNX Runtime output",
    )?;
    // SAFETY: the shim hands over a heap at::Tensor.
    Ok(unsafe { tch::Tensor::from_ptr(out.cast()) })
}

/// Whether a tensor of `kind` is what an input of element type `ty` takes.
pub fn fits(kind: tch::Kind, ty: TensorElementType) -> bool {
    ELEMENTS.iter().any(|e| e.kind == kind && e.onnx == ty)
}

/// The bytes a (contiguous) tensor's elements occupy, as addresses.
pub fn byte_range(tensor: &tch::Tensor) -> (usize, usize) {
    let start = tensor.data_ptr() as usize;
    let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
    (start, start.saturating_add(bytes))
}
