//! perfopt: makes PyTorch models fast to start and fast to run, behind a
//! small C ABI (see include/perfopt.h) for Swift, Python and C++ hosts.
//!
//! The crate is a safe Rust core (one module per concern) with a thin C skin
//! in [`ffi`]; the libtorch features tch lacks live in a C++ shim (src/cxx,
//! wrapped file for file by src/torch). Model formats sit behind the engine
//! seam (src/engine): TorchScript files and AOTInductor packages.
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
pub(crate) mod elf;
pub(crate) mod engine;
pub(crate) mod environment;
pub(crate) mod executor;
pub(crate) mod fork;
pub(crate) mod graphs;
pub(crate) mod last_error;
pub(crate) mod library_folder;
pub(crate) mod logging;
pub(crate) mod model_file;
pub(crate) mod numerics;
pub(crate) mod throughput;
pub(crate) mod torch;
pub(crate) mod zip;

pub use autotune::Candidate;
pub use batching::{Recommendation, Stop};
pub use config::{CompileMode, Config};
pub use device::{DeviceKind, DeviceRequest};
pub use engine::{Argument, Format, MethodSchema, TypeKind};
pub use error::{Error, ErrorKind, Result};
pub use model::{BatchDims, Model, ModelOptions, ReportKind};
pub use numerics::{relative_error, value_error};
pub use optimizer::Optimizer;
pub use scope::InferenceScope;
pub use value::Value;
