//! Tensors between perfopt and ONNX Runtime without copies: an input is an
//! ORT value over the caller's (contiguous, host) memory
//! (CreateTensorWithDataAsOrtValue), an output a tensor over the memory ORT
//! allocated, which keeps ORT's value alive until the tensor goes.

use ort::memory::MemoryInfo;
use ort::session::SessionInputValue;
use ort::value::{DynTensorValueType, DynValue, Shape, TensorElementType, TensorRefMut, ValueType};

use crate::engine::inputs::{InputSpec, Inputs};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{Kind, Tensor};

/// One element type in both vocabularies: perfopt's kind and ONNX's
/// element type.
struct Element {
    kind: Kind,
    onnx: TensorElementType,
    name: &'static str,
}

const ELEMENTS: [Element; 10] = [
    Element {
        kind: Kind::Float,
        onnx: TensorElementType::Float32,
        name: "float32",
    },
    Element {
        kind: Kind::Double,
        onnx: TensorElementType::Float64,
        name: "float64",
    },
    Element {
        kind: Kind::Half,
        onnx: TensorElementType::Float16,
        name: "float16",
    },
    Element {
        kind: Kind::BFloat16,
        onnx: TensorElementType::Bfloat16,
        name: "bfloat16",
    },
    Element {
        kind: Kind::Int64,
        onnx: TensorElementType::Int64,
        name: "int64",
    },
    Element {
        kind: Kind::Int,
        onnx: TensorElementType::Int32,
        name: "int32",
    },
    Element {
        kind: Kind::Int16,
        onnx: TensorElementType::Int16,
        name: "int16",
    },
    Element {
        kind: Kind::Int8,
        onnx: TensorElementType::Int8,
        name: "int8",
    },
    Element {
        kind: Kind::Uint8,
        onnx: TensorElementType::Uint8,
        name: "uint8",
    },
    Element {
        kind: Kind::Bool,
        onnx: TensorElementType::Bool,
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

pub fn kind_name(kind: Kind) -> String {
    ELEMENTS.iter().find(|e| e.kind == kind).map_or_else(
        || format!("{kind:?}").to_lowercase(),
        |e| e.name.to_string(),
    )
}

/// An ORT input over `tensor`'s memory: host, contiguous, of the element
/// type the graph wants (checked by the caller). The tensor must outlive the
/// value.
pub fn input(tensor: &Tensor) -> Result<SessionInputValue<'static>> {
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
        Kind::Float => view!(f32),
        Kind::Double => view!(f64),
        Kind::Half => view!(half::f16),
        Kind::BFloat16 => view!(half::bf16),
        Kind::Int64 => view!(i64),
        Kind::Int => view!(i32),
        Kind::Int16 => view!(i16),
        Kind::Int8 => view!(i8),
        Kind::Uint8 => view!(u8),
        Kind::Bool => view!(bool),
        // libtorch's kinds include more (complex, float8); the lite build's do not.
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::invalid_argument(format!(
                "{} tensors cannot be passed to ONNX Runtime",
                kind_name(other)
            )))
        }
    };
    value.map_err(|e| Error::new(ErrorKind::Internal, format!("an ONNX Runtime input: {e}")))
}

/// A tensor over an output ORT allocated (no copy): the tensor keeps ORT's
/// value alive.
pub fn output(value: DynValue, index: usize) -> Result<Tensor> {
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
    // SAFETY: `data` is ORT's memory for this value, `shape` its dims, kept
    // while the value (the owner) lives.
    unsafe { crate::runtime::tensor::from_owned(data, &shape, element.kind, Box::new(value)) }
        .map_err(|err| err.context(format!("output {index} of the ONNX model")))
}

/// What a graph's inputs take (engine/inputs.rs), from each one's element
/// type and shape (-1: symbolic); `Unknown` when a type has no perfopt kind.
pub fn inputs<'a>(graph: impl Iterator<Item = (TensorElementType, &'a [i64])>) -> Inputs {
    let spec = |(ty, shape): (TensorElementType, &[i64])| {
        let element = ELEMENTS.iter().find(|e| e.onnx == ty)?;
        let dims = shape.iter().map(|&n| (n >= 0).then_some(n)).collect();
        Some(InputSpec {
            dtype: crate::scalar_type::code_of(element.kind)?.1.to_string(),
            dims,
        })
    };
    graph
        .map(spec)
        .collect::<Option<Vec<_>>>()
        .map_or(Inputs::Unknown, Inputs::Fixed)
}

/// Whether a tensor of `kind` is what an input of element type `ty` takes.
pub fn fits(kind: Kind, ty: TensorElementType) -> bool {
    ELEMENTS.iter().any(|e| e.kind == kind && e.onnx == ty)
}

/// The bytes a (contiguous) tensor's elements occupy, as addresses.
pub fn byte_range(tensor: &Tensor) -> (usize, usize) {
    let start = tensor.data_ptr() as usize;
    let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
    (start, start.saturating_add(bytes))
}
