//! perfopt: makes PyTorch models fast to start and fast to run, behind a
//! small C ABI (see include/perfopt.h) for Swift, Python and C++ hosts.
//!
//! The crate is a safe Rust core (one module per concern) with a thin C skin
//! in [`ffi`]; the libtorch features tch lacks live in a C++ shim (src/cxx,
//! wrapped file for file by src/torch). Model formats sit behind the engine
//! seam (src/engine): TorchScript files and AOTInductor packages (libtorch),
//! ONNX models (ONNX Runtime), ExecuTorch programs. Without the `torch`
//! feature the core runs on host tensors (src/host) with the ONNX and
//! ExecuTorch engines only: the lite library, no libtorch linked.
//!
//! The Rust API: [`Optimizer`], [`Model`] and their options and reports.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod allocator;
pub mod config;
pub mod device;
pub mod error;
pub mod ffi;
pub mod json;
pub mod model;
pub mod optimizer;
pub mod scope;
pub mod stats;
pub mod value;
pub mod version;

pub(crate) mod autotune;
pub(crate) mod batch;
pub(crate) mod batching;
#[cfg(feature = "torch")]
pub(crate) mod elf;
pub(crate) mod engine;
pub(crate) mod environment;
pub(crate) mod executor;
pub(crate) mod fork;
pub(crate) mod graphs;
#[cfg(not(feature = "torch"))]
pub(crate) mod host;
pub(crate) mod last_error;
pub(crate) mod library_folder;
pub(crate) mod logging;
pub(crate) mod model_file;
pub(crate) mod numerics;
pub(crate) mod scalar_type;
pub(crate) mod throughput;
#[cfg(feature = "torch")]
pub(crate) mod torch;
// The tensors and settings the core runs on: libtorch's (src/torch) in the
// full build, host ones (src/host) in the build without libtorch.
#[cfg(not(feature = "torch"))]
pub(crate) use host as runtime;
#[cfg(feature = "torch")]
pub(crate) use torch as runtime;
// Read by the libtorch engines' archive checks; the lite build only tells a
// zip archive by its first bytes, to say it cannot run it.
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub(crate) mod zip;

pub use autotune::Candidate;
pub use batching::{Recommendation, Stop};
pub use config::{CompileMode, Config};
pub use device::{DeviceKind, DeviceRequest};
pub use engine::{Argument, Format, MethodSchema, TypeKind};
pub use error::{Error, ErrorKind, Result};
pub use model::{BatchDims, Model, ModelOptions, Precision, ReducedTolerance, ReportKind};
pub use numerics::{relative_error, value_error};
pub use optimizer::Optimizer;
pub use scope::InferenceScope;
pub use value::Value;
