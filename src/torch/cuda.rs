//! CUDA: device properties, stream synchronisation and CUDA graphs
//! (src/cxx/cuda.cpp; src/cxx/cuda_stub.cpp answers "unsupported" in builds
//! without CUDA headers).

use std::ffi::{c_char, c_int, c_void, CStr};

use super::check;
use super::values::{self, NodeSink};
use crate::error::{Error, ErrorKind, Result};

#[repr(C)]
struct RawCapture {
    _private: [u8; 0],
}
#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

extern "C" {
    fn pshim_cuda_device_properties(
        index: i32,
        name: *mut c_char,
        name_len: usize,
        major: *mut i32,
        minor: *mut i32,
        total: *mut u64,
        multiprocessors: *mut i32,
    ) -> c_int;
    fn pshim_cuda_stream_synchronize(index: i32) -> c_int;
    fn pshim_capture_start(index: i32, out: *mut *mut RawCapture) -> c_int;
    fn pshim_capture_begin(capture: *mut RawCapture) -> c_int;
    fn pshim_capture_end(
        capture: *mut RawCapture,
        static_inputs: *const *mut c_void,
        n_inputs: usize,
        static_outputs: *const *mut c_void,
        n_outputs: usize,
        out: *mut *mut RawGraph,
    ) -> c_int;
    fn pshim_capture_abort(capture: *mut RawCapture);
    fn pshim_graph_replay(
        graph: *mut RawGraph,
        inputs: *const *mut c_void,
        n_inputs: usize,
        sink: NodeSink,
        ctx: *mut c_void,
    ) -> c_int;
    fn pshim_graph_free(graph: *mut RawGraph);
}

pub struct CudaProperties {
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub total_memory: u64,
    pub multiprocessors: i32,
}

pub fn device_properties(index: i32) -> Result<CudaProperties> {
    let mut name = [0 as c_char; 256];
    let (mut major, mut minor, mut total, mut sms) = (0, 0, 0u64, 0);
    // SAFETY: buffer and length match; valid out pointers.
    check(
        unsafe {
            pshim_cuda_device_properties(
                index,
                name.as_mut_ptr(),
                name.len(),
                &mut major,
                &mut minor,
                &mut total,
                &mut sms,
            )
        },
        &format!("reading the properties of CUDA device {index}"),
    )?;
    Ok(CudaProperties {
        // SAFETY: NUL-terminated by the shim.
        name: unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
        major,
        minor,
        total_memory: total,
        multiprocessors: sms,
    })
}

/// Waits for this thread's current stream on one device (not the whole
/// device: other threads' streams go on).
pub fn synchronize_stream(index: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_cuda_stream_synchronize(index) },
        "waiting for the CUDA stream",
    )
}

fn tensor_ptrs(tensors: &[tch::Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// A capture in progress on this thread: a side stream is current until it
/// ends. Dropping it without `end` aborts it (capture_end always runs).
pub struct Capture {
    raw: *mut RawCapture,
}

impl Capture {
    pub fn start(device_index: i32) -> Result<Capture> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        check(
            unsafe { pshim_capture_start(device_index, &mut raw) },
            "starting a CUDA graph capture",
        )?;
        Ok(Capture { raw })
    }

    /// Starts recording (after the warm-up runs on the side stream).
    pub fn begin(&mut self) -> Result<()> {
        // SAFETY: a live capture on this thread.
        check(
            unsafe { pshim_capture_begin(self.raw) },
            "beginning a CUDA graph capture",
        )
    }

    /// Ends the capture; the graph keeps the static buffers.
    pub fn end(
        self,
        static_inputs: &[tch::Tensor],
        static_outputs: &[tch::Tensor],
    ) -> Result<Graph> {
        let raw = self.raw;
        std::mem::forget(self);
        let (inputs, outputs) = (tensor_ptrs(static_inputs), tensor_ptrs(static_outputs));
        let mut graph = std::ptr::null_mut();
        // SAFETY: a live capture, consumed here (end always releases it);
        // live tensors; valid out pointer.
        check(
            unsafe {
                pshim_capture_end(
                    raw,
                    inputs.as_ptr(),
                    inputs.len(),
                    outputs.as_ptr(),
                    outputs.len(),
                    &mut graph,
                )
            },
            "ending a CUDA graph capture",
        )?;
        Ok(Graph {
            raw: graph,
            inputs: static_inputs.len(),
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: a live capture, released once.
        unsafe { pshim_capture_abort(self.raw) }
    }
}

/// A captured CUDA graph with its static buffers. Replays must be serialised
/// (its owner holds it under a lock).
pub struct Graph {
    raw: *mut RawGraph,
    inputs: usize,
}

// SAFETY: a graph is only used under its owner's lock.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_graph_free(self.raw) }
    }
}

impl Graph {
    pub fn replay(&mut self, inputs: &[&tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        if inputs.len() != self.inputs {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "a graph of {} tensor inputs replayed with {}",
                    self.inputs,
                    inputs.len()
                ),
            ));
        }
        let ptrs: Vec<*mut c_void> = inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        let raw = self.raw;
        let results = values::collect(
            || "replaying a CUDA graph".to_string(),
            |sink, ctx| {
                // SAFETY: exclusive access through &mut self; live tensors.
                unsafe { pshim_graph_replay(raw, ptrs.as_ptr(), ptrs.len(), sink, ctx) }
            },
        )?;
        results
            .into_iter()
            .map(|v| match v {
                crate::value::Value::Tensor(t) => Ok(t),
                other => Err(Error::new(
                    ErrorKind::Internal,
                    format!("a graph replay sent {}", other.describe()),
                )),
            })
            .collect()
    }
}
