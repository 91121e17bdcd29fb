//! perfopt: makes PyTorch models fast to start and fast to run, behind a
//! small C ABI (see include/perfopt.h) for Swift, Python and C++ hosts.
//!
//! The crate is a safe Rust core (one module per concern) with a thin C skin
//! in [`ffi`]; the few libtorch features tch lacks live in a C++ shim
//! (src/cxx, wrapped by [`shim`]).

pub mod allocator;
pub mod archive;
pub mod autotune;
pub mod batch;
pub mod batching;
pub mod bench;
pub mod config;
pub mod device;
pub mod environment;
pub mod error;
pub mod ffi;
pub mod json;
pub mod logging;
pub mod model;
pub mod numerics;
pub mod optimizer;
pub mod scope;
pub mod shim;
pub mod stats;
pub mod version;

pub use config::{CompileMode, Config};
pub use device::{DeviceKind, DeviceRequest};
pub use error::{Error, ErrorKind, Result};
pub use model::{Model, ModelOptions};
pub use optimizer::Optimizer;
pub use scope::InferenceScope;
