//! CUDA without libtorch: none. The lite build's device is the host, so
//! the core never reaches these; each says why if it did.

use super::tensor::Tensor;
use super::WITHOUT_LIBTORCH;
use crate::error::{Error, ErrorKind, Result};

fn no_cuda<T>(what: &str) -> Result<T> {
    Err(Error::new(
        ErrorKind::UnsupportedDevice,
        format!("{what}: {WITHOUT_LIBTORCH}, which has no CUDA"),
    ))
}

pub struct CudaProperties {
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub total_memory: u64,
    pub multiprocessors: i32,
}

pub fn device_properties(_index: i32) -> Result<CudaProperties> {
    no_cuda("CUDA device properties")
}

pub fn synchronize_stream(_index: i32) -> Result<()> {
    no_cuda("waiting for a CUDA stream")
}

pub struct Capture(());

impl Capture {
    pub fn start(_device_index: i32) -> Result<Capture> {
        no_cuda("a CUDA graph capture")
    }

    pub fn begin(&mut self) -> Result<()> {
        no_cuda("a CUDA graph capture")
    }

    pub fn end(self, _static_inputs: &[Tensor], _static_outputs: &[Tensor]) -> Result<Graph> {
        no_cuda("a CUDA graph capture")
    }
}

pub struct Graph(());

impl Graph {
    pub fn replay(&mut self, _inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        no_cuda("replaying a CUDA graph")
    }
}
