//! The runtime of the build without libtorch (the `torch` feature off: the
//! library an iOS app links, with the ONNX Runtime and ExecuTorch engines):
//! host tensors, and the settings and figures the core asks libtorch for in
//! the full build (src/torch/), each answered here for a library whose
//! engines keep their own threads and memory. File for file the twin of the
//! part of src/torch/ the core uses; `crate::runtime` is one or the other.

pub(crate) mod cuda;
mod exchange;
mod kind;
pub(crate) mod memory;
mod ops;
pub(crate) mod settings;
pub(crate) mod tensor;
pub(crate) mod threads;

pub use tensor::{Device, Kind, Tensor};

/// What this build says where the full one would use libtorch.
pub(crate) const WITHOUT_LIBTORCH: &str = "this perfopt is the build without libtorch (the lite \
                                           library: ONNX Runtime and ExecuTorch engines only)";
