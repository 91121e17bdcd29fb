//! CUDA: device properties, stream synchronisation and CUDA graphs, from
//! src/cxx/cuda.cpp. That file is a library of its own, libperfopt_cuda.so.0
//! (build.rs), loaded here the first time CUDA is used: libperfopt itself
//! needs no CUDA library, so it loads beside a CPU-only torch, and a build
//! without CUDA headers has no such library and says so.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use super::check_with;
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

const LIBRARY_NAME: &str = "libperfopt_cuda.so.0";

type LastErrorFn = unsafe extern "C" fn() -> *const c_char;

/// libperfopt_cuda.so.0's functions (src/cxx/shim.h's cuda.cpp section).
struct Functions {
    last_error: LastErrorFn,
    device_properties: unsafe extern "C" fn(
        i32,
        *mut c_char,
        usize,
        *mut i32,
        *mut i32,
        *mut u64,
        *mut i32,
    ) -> c_int,
    stream_synchronize: unsafe extern "C" fn(i32) -> c_int,
    capture_start: unsafe extern "C" fn(i32, *mut *mut RawCapture) -> c_int,
    capture_begin: unsafe extern "C" fn(*mut RawCapture) -> c_int,
    capture_end: unsafe extern "C" fn(
        *mut RawCapture,
        *const *mut c_void,
        usize,
        *const *mut c_void,
        usize,
        *mut *mut RawGraph,
    ) -> c_int,
    capture_abort: unsafe extern "C" fn(*mut RawCapture),
    graph_replay: unsafe extern "C" fn(
        *mut RawGraph,
        *const *mut c_void,
        usize,
        NodeSink,
        *mut c_void,
    ) -> c_int,
    graph_free: unsafe extern "C" fn(*mut RawGraph),
    // Never unloaded: graphs and the functions above point into it.
    _library: libloading::Library,
}

static FUNCTIONS: OnceLock<std::result::Result<Functions, String>> = OnceLock::new();

/// The CUDA part, loaded once; its failure is the same answer every time.
fn functions() -> Result<&'static Functions> {
    FUNCTIONS
        .get_or_init(load)
        .as_ref()
        .map_err(|message| Error::new(ErrorKind::UnsupportedDevice, message.clone()))
}

fn load() -> std::result::Result<Functions, String> {
    if !cfg!(perfopt_cuda) {
        return Err(
            "perfopt was built without CUDA headers: no CUDA streams, graphs or device properties"
                .to_string(),
        );
    }
    let candidates = crate::library_folder::part_candidates(LIBRARY_NAME);
    let Some(path) = candidates.iter().find(|path| path.exists()) else {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        let looked = if looked.is_empty() {
            "the folder of perfopt's own binary could not be found".to_string()
        } else {
            format!("looked for {}", looked.join(", "))
        };
        return Err(format!(
            "perfopt's CUDA part ({LIBRARY_NAME}) was not found beside libperfopt ({looked}): \
             CUDA streams, graphs and device properties need it; install it with libperfopt"
        ));
    };
    // SAFETY: perfopt's own library, built with it; its initialisers only
    // register nothing beyond libtorch's CUDA parts, which are loaded already
    // wherever CUDA is in use.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|err| format!("loading {}: {err}", path.display()))?;
    // SAFETY: each symbol's type is its declaration in src/cxx/shim.h.
    unsafe {
        macro_rules! symbol {
            ($name:literal) => {
                *library
                    .get(concat!($name, "\0").as_bytes())
                    .map_err(|err| format!("{}: {err}", path.display()))?
            };
        }
        Ok(Functions {
            last_error: symbol!("pshim_cuda_last_error"),
            device_properties: symbol!("pshim_cuda_device_properties"),
            stream_synchronize: symbol!("pshim_cuda_stream_synchronize"),
            capture_start: symbol!("pshim_capture_start"),
            capture_begin: symbol!("pshim_capture_begin"),
            capture_end: symbol!("pshim_capture_end"),
            capture_abort: symbol!("pshim_capture_abort"),
            graph_replay: symbol!("pshim_graph_replay"),
            graph_free: symbol!("pshim_graph_free"),
            _library: library,
        })
    }
}

/// A status of libperfopt_cuda.so.0 as a Result, with that library's message.
fn check(functions: &Functions, status: c_int, what: &str) -> Result<()> {
    check_with(status, functions.last_error, what)
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
    let cuda = functions()?;
    // SAFETY: buffer and length match; valid out pointers.
    check(
        cuda,
        unsafe {
            (cuda.device_properties)(
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
    let cuda = functions()?;
    // SAFETY: plain value argument.
    check(
        cuda,
        unsafe { (cuda.stream_synchronize)(index) },
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
    cuda: &'static Functions,
}

impl Capture {
    pub fn start(device_index: i32) -> Result<Capture> {
        let cuda = functions()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        check(
            cuda,
            unsafe { (cuda.capture_start)(device_index, &mut raw) },
            "starting a CUDA graph capture",
        )?;
        Ok(Capture { raw, cuda })
    }

    /// Starts recording (after the warm-up runs on the side stream).
    pub fn begin(&mut self) -> Result<()> {
        // SAFETY: a live capture on this thread.
        check(
            self.cuda,
            unsafe { (self.cuda.capture_begin)(self.raw) },
            "beginning a CUDA graph capture",
        )
    }

    /// Ends the capture; the graph keeps the static buffers.
    pub fn end(
        self,
        static_inputs: &[tch::Tensor],
        static_outputs: &[tch::Tensor],
    ) -> Result<Graph> {
        let (raw, cuda) = (self.raw, self.cuda);
        std::mem::forget(self);
        let (inputs, outputs) = (tensor_ptrs(static_inputs), tensor_ptrs(static_outputs));
        let mut graph = std::ptr::null_mut();
        // SAFETY: a live capture, consumed here (end always releases it);
        // live tensors; valid out pointer.
        check(
            cuda,
            unsafe {
                (cuda.capture_end)(
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
            cuda,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: a live capture, released once.
        unsafe { (self.cuda.capture_abort)(self.raw) }
    }
}

/// A captured CUDA graph with its static buffers. Replays must be serialised
/// (its owner holds it under a lock).
pub struct Graph {
    raw: *mut RawGraph,
    inputs: usize,
    cuda: &'static Functions,
}

// SAFETY: a graph is only used under its owner's lock.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { (self.cuda.graph_free)(self.raw) }
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
        let (raw, cuda) = (self.raw, self.cuda);
        let results = values::collect_with(
            || "replaying a CUDA graph".to_string(),
            cuda.last_error,
            |sink, ctx| {
                // SAFETY: exclusive access through &mut self; live tensors.
                unsafe { (cuda.graph_replay)(raw, ptrs.as_ptr(), ptrs.len(), sink, ctx) }
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

#[cfg(all(test, perfopt_cuda))]
mod tests {
    #[test]
    fn the_cuda_part_loads_and_answers_with_its_own_messages() {
        // Without a GPU, libperfopt_cuda.so.0 still loads (libtorch's CUDA
        // libraries are installed) and its failure carries its own message.
        match super::device_properties(0) {
            Ok(properties) => assert!(!properties.name.is_empty()),
            Err(err) => assert!(
                err.to_string()
                    .contains("cudaGetDeviceProperties(0) failed"),
                "{err}"
            ),
        }
    }
}
