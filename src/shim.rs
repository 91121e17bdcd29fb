//! Safe Rust over the C++ shim (src/cxx/shim.h). Each wrapper turns the
//! shim's status and thread-local message into an [`Error`].

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use crate::error::{Error, ErrorKind, Result};

const PSHIM_OK: c_int = 0;
const PSHIM_OUT_OF_MEMORY: c_int = 2;
const PSHIM_UNSUPPORTED: c_int = 4;

extern "C" {
    fn pshim_last_error() -> *const c_char;
    fn pshim_torch_version() -> *const c_char;
    fn pshim_cuda_runtime_version(out: *mut i64) -> c_int;
    fn pshim_cudnn_version(out: *mut i64) -> c_int;
    fn pshim_set_cudnn_benchmark(enabled: c_int) -> c_int;
    fn pshim_get_cudnn_benchmark(out: *mut c_int) -> c_int;
    fn pshim_set_fp32_precision(
        backend: *const c_char,
        op: *const c_char,
        precision: *const c_char,
    ) -> c_int;
    fn pshim_get_fp32_precision(
        backend: *const c_char,
        op: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn pshim_set_num_threads(n: i32) -> c_int;
    fn pshim_get_num_threads(out: *mut i32) -> c_int;
    fn pshim_set_num_interop_threads(n: i32) -> c_int;
    fn pshim_get_num_interop_threads(out: *mut i32) -> c_int;
    fn pshim_inference_mode_enter(guard: *mut *mut c_void) -> c_int;
    fn pshim_inference_mode_exit(guard: *mut c_void) -> c_int;
    fn pshim_inference_mode_is_enabled(out: *mut c_int) -> c_int;
    fn pshim_accelerator_memory_info(index: i32, free: *mut u64, total: *mut u64) -> c_int;
    fn pshim_cuda_device_properties(
        index: i32,
        name: *mut c_char,
        name_len: usize,
        major: *mut i32,
        minor: *mut i32,
        total: *mut u64,
        multiprocessors: *mut i32,
    ) -> c_int;
}

/// Converts a shim status into a Result, reading the message while it is
/// still valid (the next shim call on this thread replaces it).
fn check(status: c_int, what: &str) -> Result<()> {
    if status == PSHIM_OK {
        return Ok(());
    }
    // SAFETY: pshim_last_error returns a pointer to a thread-local std::string
    // that lives until the next shim call on this thread; we copy it at once.
    let message = unsafe { CStr::from_ptr(pshim_last_error()) }
        .to_string_lossy()
        .into_owned();
    let kind = match status {
        PSHIM_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
        PSHIM_UNSUPPORTED => ErrorKind::UnsupportedDevice,
        _ => ErrorKind::Torch,
    };
    Err(Error::new(kind, message).context(what.to_string()))
}

fn cstring(value: &str) -> CString {
    CString::new(value).expect("shim arguments are literals without NUL")
}

pub fn torch_version() -> &'static str {
    // SAFETY: returns a pointer to a string literal.
    unsafe { CStr::from_ptr(pshim_torch_version()) }
        .to_str()
        .unwrap_or("unknown")
}

pub fn cuda_runtime_version() -> Result<i64> {
    let mut out = 0i64;
    // SAFETY: `out` is a valid pointer for the duration of the call.
    check(
        unsafe { pshim_cuda_runtime_version(&mut out) },
        "querying the CUDA runtime version",
    )?;
    Ok(out)
}

pub fn cudnn_version() -> Result<i64> {
    let mut out = 0i64;
    // SAFETY: as above.
    check(
        unsafe { pshim_cudnn_version(&mut out) },
        "querying the cuDNN version",
    )?;
    Ok(out)
}

pub fn set_cudnn_benchmark(enabled: bool) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_cudnn_benchmark(enabled as c_int) },
        "setting cuDNN benchmark mode",
    )
}

pub fn cudnn_benchmark() -> Result<bool> {
    let mut out: c_int = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_cudnn_benchmark(&mut out) },
        "reading cuDNN benchmark mode",
    )?;
    Ok(out != 0)
}

/// libtorch's float32 precision for a backend ("cuda", "mkldnn", "generic")
/// and op ("matmul", "conv", "rnn", "all"): "ieee", "tf32", "bf16" or "none".
pub fn set_fp32_precision(backend: &str, op: &str, precision: &str) -> Result<()> {
    let (b, o, p) = (cstring(backend), cstring(op), cstring(precision));
    // SAFETY: NUL-terminated strings that outlive the call.
    check(
        unsafe { pshim_set_fp32_precision(b.as_ptr(), o.as_ptr(), p.as_ptr()) },
        &format!("setting the float32 precision of {backend}/{op} to {precision}"),
    )
}

pub fn fp32_precision(backend: &str, op: &str) -> Result<String> {
    let (b, o) = (cstring(backend), cstring(op));
    let mut buf = [0 as c_char; 32];
    // SAFETY: the buffer and its length match; the shim NUL-terminates.
    check(
        unsafe { pshim_get_fp32_precision(b.as_ptr(), o.as_ptr(), buf.as_mut_ptr(), buf.len()) },
        &format!("reading the float32 precision of {backend}/{op}"),
    )?;
    // SAFETY: NUL-terminated by the shim.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

pub fn set_num_threads(n: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_num_threads(n) },
        "setting intra-op threads",
    )
}

pub fn num_threads() -> Result<i32> {
    let mut out = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_num_threads(&mut out) },
        "reading intra-op threads",
    )?;
    Ok(out)
}

pub fn set_num_interop_threads(n: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_set_num_interop_threads(n) },
        "setting inter-op threads",
    )
}

pub fn num_interop_threads() -> Result<i32> {
    let mut out = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_get_num_interop_threads(&mut out) },
        "reading inter-op threads",
    )?;
    Ok(out)
}

/// An owned `c10::InferenceMode` guard. It is `!Send`: libtorch's inference
/// mode is thread-local, so the guard must be dropped on the thread that made it.
pub struct InferenceModeGuard {
    raw: *mut c_void,
}

impl InferenceModeGuard {
    pub fn enter() -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out pointer; the shim allocates the guard.
        check(
            unsafe { pshim_inference_mode_enter(&mut raw) },
            "entering inference mode",
        )?;
        Ok(InferenceModeGuard { raw })
    }
}

impl Drop for InferenceModeGuard {
    fn drop(&mut self) {
        // SAFETY: `raw` came from pshim_inference_mode_enter and is freed once.
        // A guard's destructor only restores thread-local flags and cannot fail.
        let _ = unsafe { pshim_inference_mode_exit(self.raw) };
    }
}

pub fn inference_mode_enabled() -> Result<bool> {
    let mut out: c_int = 0;
    // SAFETY: valid out pointer.
    check(
        unsafe { pshim_inference_mode_is_enabled(&mut out) },
        "reading inference mode",
    )?;
    Ok(out != 0)
}

/// (free, total) bytes of an accelerator device, from libtorch's allocator.
pub fn accelerator_memory_info(index: i32) -> Result<(u64, u64)> {
    let (mut free, mut total) = (0u64, 0u64);
    // SAFETY: valid out pointers.
    check(
        unsafe { pshim_accelerator_memory_info(index, &mut free, &mut total) },
        &format!("reading the memory of device {index}"),
    )?;
    Ok((free, total))
}

pub struct CudaProperties {
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub total_memory: u64,
    pub multiprocessors: i32,
}

pub fn cuda_device_properties(index: i32) -> Result<CudaProperties> {
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

// ---- Models ------------------------------------------------------------------

#[repr(C)]
struct RawModule {
    _private: [u8; 0],
}
#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

type TensorSink = unsafe extern "C" fn(ctx: *mut c_void, tensor: *mut c_void);

extern "C" {
    fn pshim_module_load(
        path: *const c_char,
        device_type: c_int,
        device_index: c_int,
        out: *mut *mut RawModule,
    ) -> c_int;
    fn pshim_module_free(module: *mut RawModule);
    fn pshim_module_freeze(
        module: *const RawModule,
        optimize: c_int,
        out: *mut *mut RawModule,
    ) -> c_int;
    fn pshim_module_arity(module: *const RawModule, required: *mut i64, total: *mut i64) -> c_int;
    fn pshim_module_forward(
        module: *const RawModule,
        inputs: *const *mut c_void,
        n_inputs: usize,
        sink: TensorSink,
        ctx: *mut c_void,
    ) -> c_int;
    fn pshim_tensor_from_dlpack(dl_tensor: *const c_void, out: *mut *mut c_void) -> c_int;
    fn pshim_tensor_to_dlpack(tensor: *const c_void, out_managed: *mut *mut c_void) -> c_int;
    fn pshim_device_memory_stats(
        index: i32,
        allocated: *mut u64,
        peak_allocated: *mut u64,
        reserved: *mut u64,
    ) -> c_int;
    fn pshim_device_reset_peak(index: i32) -> c_int;
    fn pshim_device_empty_cache() -> c_int;
    fn pshim_graph_capture(
        module: *const RawModule,
        example_inputs: *const *mut c_void,
        n_inputs: usize,
        warmup_runs: c_int,
        out: *mut *mut RawGraph,
    ) -> c_int;
    fn pshim_graph_replay(
        graph: *mut RawGraph,
        inputs: *const *mut c_void,
        n_inputs: usize,
        sink: TensorSink,
        ctx: *mut c_void,
    ) -> c_int;
    fn pshim_graph_free(graph: *mut RawGraph);
}

/// Collects the shim's output tensors into a Vec<tch::Tensor>.
unsafe extern "C" fn collect_tensor(ctx: *mut c_void, tensor: *mut c_void) {
    // SAFETY: ctx is the &mut Vec passed by `run_collecting`; the tensor is a
    // heap at::Tensor, which is what tch::Tensor owns.
    let outputs = &mut *(ctx as *mut Vec<tch::Tensor>);
    outputs.push(tch::Tensor::from_ptr(tensor.cast()));
}

fn tensor_ptrs(inputs: &[tch::Tensor]) -> Vec<*mut c_void> {
    inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

fn run_collecting(
    what: &str,
    call: impl FnOnce(TensorSink, *mut c_void) -> c_int,
) -> Result<Vec<tch::Tensor>> {
    let mut outputs: Vec<tch::Tensor> = Vec::new();
    let status = call(
        collect_tensor,
        (&mut outputs as *mut Vec<tch::Tensor>).cast(),
    );
    check(status, what)?;
    Ok(outputs)
}

/// A TorchScript module loaded by the shim (a `torch::jit::Module`).
pub struct Module {
    raw: *mut RawModule,
}

// SAFETY: TorchScript modules may run forward() from several threads at once;
// perfopt never mutates a module after creating it.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_module_free(self.raw) }
    }
}

/// The shim's device code: 0 CPU, 1 CUDA, 2 MPS.
fn device_code(device: tch::Device) -> (c_int, c_int) {
    match device {
        tch::Device::Cuda(i) => (1, i as c_int),
        tch::Device::Mps => (2, 0),
        _ => (0, 0),
    }
}

impl Module {
    pub fn load(path: &str, device: tch::Device) -> Result<Module> {
        let c_path = CString::new(path)
            .map_err(|_| Error::invalid_argument(format!("path {path:?} contains a NUL byte")))?;
        let (kind, index) = device_code(device);
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid string and out pointer.
        check(
            unsafe { pshim_module_load(c_path.as_ptr(), kind, index, &mut raw) },
            &format!("loading TorchScript from {path}"),
        )?;
        Ok(Module { raw })
    }

    /// A frozen copy; with `optimize`, also optimize_for_inference.
    pub fn freeze(&self, optimize: bool) -> Result<Module> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: self.raw is live; valid out pointer.
        check(
            unsafe { pshim_module_freeze(self.raw, optimize as c_int, &mut raw) },
            if optimize {
                "freezing and optimizing for inference"
            } else {
                "freezing"
            },
        )?;
        Ok(Module { raw })
    }

    /// forward()'s argument counts: required, and total (`None` for varargs).
    pub fn arity(&self) -> Result<(usize, Option<usize>)> {
        let (mut required, mut total) = (0i64, 0i64);
        // SAFETY: valid pointers.
        check(
            unsafe { pshim_module_arity(self.raw, &mut required, &mut total) },
            "reading forward()'s signature",
        )?;
        Ok((required.max(0) as usize, usize::try_from(total).ok()))
    }

    pub fn forward(&self, inputs: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        let ptrs = tensor_ptrs(inputs);
        run_collecting("running forward()", |sink, ctx| {
            // SAFETY: the input pointers are live tch tensors for the call.
            unsafe { pshim_module_forward(self.raw, ptrs.as_ptr(), ptrs.len(), sink, ctx) }
        })
    }
}

/// A captured CUDA graph with its static buffers. Replays must be serialised.
pub struct Graph {
    raw: *mut RawGraph,
}

// SAFETY: the graph is only used under its owner's lock.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_graph_free(self.raw) }
    }
}

impl Graph {
    pub fn capture(
        module: &Module,
        example_inputs: &[tch::Tensor],
        warmup_runs: u32,
    ) -> Result<Graph> {
        let ptrs = tensor_ptrs(example_inputs);
        let mut raw = std::ptr::null_mut();
        // SAFETY: live module and tensors; valid out pointer.
        check(
            unsafe {
                pshim_graph_capture(
                    module.raw,
                    ptrs.as_ptr(),
                    ptrs.len(),
                    warmup_runs as c_int,
                    &mut raw,
                )
            },
            "capturing a CUDA graph",
        )?;
        Ok(Graph { raw })
    }

    pub fn replay(&mut self, inputs: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        let ptrs = tensor_ptrs(inputs);
        let raw = self.raw;
        run_collecting("replaying a CUDA graph", |sink, ctx| {
            // SAFETY: exclusive access through &mut self; live tensors.
            unsafe { pshim_graph_replay(raw, ptrs.as_ptr(), ptrs.len(), sink, ctx) }
        })
    }
}

/// A non-owning view of the memory a DLPack tensor describes.
///
/// # Safety
/// `dl_tensor` points to a DLTensor whose fields were validated and whose
/// memory outlives the returned tensor's use.
pub unsafe fn tensor_from_dlpack(dl_tensor: *const c_void) -> Result<tch::Tensor> {
    let mut out = std::ptr::null_mut();
    check(
        pshim_tensor_from_dlpack(dl_tensor, &mut out),
        "wrapping a DLPack tensor",
    )?;
    Ok(tch::Tensor::from_ptr(out.cast()))
}

/// A `DLManagedTensor *` sharing the tensor's storage; the receiver owns it.
pub fn tensor_to_dlpack(tensor: &tch::Tensor) -> Result<*mut c_void> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live tensor; valid out pointer.
    check(
        unsafe { pshim_tensor_to_dlpack(tensor.as_ptr() as *const c_void, &mut out) },
        "exporting a tensor as DLPack",
    )?;
    Ok(out)
}

/// (allocated, peak allocated, reserved) bytes of a CUDA device's caching allocator.
pub fn device_memory_stats(index: i32) -> Result<(u64, u64, u64)> {
    let (mut allocated, mut peak, mut reserved) = (0, 0, 0);
    // SAFETY: valid out pointers.
    check(
        unsafe { pshim_device_memory_stats(index, &mut allocated, &mut peak, &mut reserved) },
        "reading device memory statistics",
    )?;
    Ok((allocated, peak, reserved))
}

pub fn device_reset_peak(index: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_device_reset_peak(index) },
        "resetting peak memory statistics",
    )
}

pub fn device_empty_cache() -> Result<()> {
    // SAFETY: no arguments.
    check(
        unsafe { pshim_device_empty_cache() },
        "emptying the device cache",
    )
}
