//! The C types of the ABI: the config struct and constants (the status
//! codes are in status.rs, values in value.rs). cbindgen turns this file's
//! public items into include/perfopt.h.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};
use std::mem::offset_of;

/// perfopt's version, as macros. perfopt_version() says the same at run time.
pub const PERFOPT_VERSION_MAJOR: u32 = 0;
pub const PERFOPT_VERSION_MINOR: u32 = 1;
pub const PERFOPT_VERSION_PATCH: u32 = 0;

/// The ABI this header describes. perfopt_abi_version() at least this means
/// every function and struct of this header is in the loaded library (option
/// structs of earlier ABIs are accepted by their struct_size); the bindings,
/// shipped with their library, require it equal. ABI 3 made concurrent calls
/// take const handles and added values, methods, batch dimensions,
/// AOTInductor packages, kept reports and the options' tuning fields; ABI 4
/// added ONNX models, a thread count per model (perfopt_model_options.threads)
/// and perfopt_config.onnxruntime_library; ABI 5 added the options'
/// precision fields (a bundle's reduced-precision forms); ABI 6 added
/// perfopt_config.tuning_cache_dir (a model loads as its tuning last chose).
pub const PERFOPT_ABI_VERSION: u32 = 6;

/// A host's log function: level (PERFOPT_LOG_ERROR .. PERFOPT_LOG_TRACE), a
/// NUL-terminated message valid only during the call, and the pointer the host
/// registered. May be called from any thread.
pub type perfopt_log_callback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

/// A tri-state setting left to the environment, then the default.
pub const PERFOPT_AUTO: i32 = -1;

/// perfopt_model_options.precision: max-autotune measures the model's own
/// precision only (the default).
pub const PERFOPT_PRECISION_FP32: i32 = 0;
/// perfopt_model_options.precision: max-autotune also measures a bundle's
/// reduced-precision forms (bf16, fp16, int8), kept only within
/// reduced_tolerance (or min_cosine).
pub const PERFOPT_PRECISION_ALLOW_REDUCED: i32 = 1;

/// Log levels for perfopt_set_log_callback, as in Rust's `log` crate.
pub const PERFOPT_LOG_OFF: i32 = 0;
pub const PERFOPT_LOG_ERROR: i32 = 1;
pub const PERFOPT_LOG_WARN: i32 = 2;
pub const PERFOPT_LOG_INFO: i32 = 3;
pub const PERFOPT_LOG_DEBUG: i32 = 4;
pub const PERFOPT_LOG_TRACE: i32 = 5;

/// A batch dimension meaning "not batched" (perfopt_model_set_batch_dims):
/// the input is passed whole to every chunk.
pub const PERFOPT_NOT_BATCHED: i32 = -1;

/// Which kept report perfopt_model_last_report reads.
pub const PERFOPT_REPORT_WARMUP: i32 = 1;
pub const PERFOPT_REPORT_RECOMMEND_BATCH: i32 = 2;

/// Options for perfopt_optimizer_new. Fill with perfopt_config_init(&c,
/// sizeof c), then change fields. Fields are only ever appended; struct_size
/// tells the library which layout the caller was compiled against, and an
/// older (smaller) layout gets the defaults for the fields it lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct perfopt_config {
    /// sizeof(perfopt_config); perfopt_config_default() sets it.
    pub struct_size: u32,
    /// 1: read the TRANSLATOR_* variables for settings left PERFOPT_AUTO (default); 0: ignore them.
    pub read_environment: i32,
    /// "auto" (or NULL), "cpu", "cuda", "cuda:N" or "mps". Copied during the call.
    pub device: *const c_char,
    /// PERFOPT_AUTO, 0 or 1. Default 1; TRANSLATOR_CUDNN_BENCHMARK. CUDA only.
    pub cudnn_benchmark: i32,
    /// PERFOPT_AUTO, 0 or 1: TF32 for cuBLAS matmul and cuDNN conv/rnn. Default 1. CUDA only.
    pub tf32: i32,
    /// PERFOPT_AUTO, 0 or 1: thread tuning and the OMP/MKL variables on CPU. Default 1;
    /// TRANSLATOR_CPU_OPTIMIZATION.
    pub cpu_optimization: i32,
    /// PERFOPT_AUTO, 0 or 1: whether a NULL compile mode compiles. Default 1; TRANSLATOR_TORCH_COMPILE.
    pub torch_compile: i32,
    /// NULL (auto), "none", "default", "reduce-overhead" or "max-autotune". Default
    /// "reduce-overhead"; TRANSLATOR_COMPILE_MODE. Copied during the call.
    pub compile_mode: *const c_char,
    /// Intra-op threads; 0 = automatic (all cores when CPU optimization applies).
    pub intra_op_threads: i32,
    /// Inter-op threads; 0 = automatic. libtorch accepts this once per process.
    pub inter_op_threads: i32,
    /// PERFOPT_AUTO, 0 or 1: glibc malloc's mmap and trim thresholds raised so that
    /// each forward pass reuses the heap instead of faulting fresh pages in. Default:
    /// on when CPU optimization applies (CPU device); never over the user's own
    /// MALLOC_*_ / GLIBC_TUNABLES settings. Linux with glibc only. (ABI 2)
    pub malloc_tuning: i32,
    /// The ONNX Runtime library (libonnxruntime) that ONNX models run on;
    /// NULL (default): PERFOPT_ONNXRUNTIME, ORT_DYLIB_PATH, beside perfopt's
    /// library, the onnxruntime Python package beside torch, then the
    /// loader's search path. Loaded once per process, at the first ONNX
    /// model. Copied during the call. (ABI 4)
    pub onnxruntime_library: *const c_char,
    /// A folder where max-autotune remembers its choices for every model of
    /// this optimizer whose own tuning_cache_dir option is NULL; NULL
    /// (default): none. A model loaded under it is built the way its tuning
    /// last chose where that is the form it loads anyway (ONNX Runtime's
    /// session with the chosen settings and thread count, which the model
    /// then runs at until compiled otherwise; a frozen TorchScript module
    /// the cache saved, loaded in the stead of the model's file), so that
    /// the next start builds nothing twice. A model cannot opt out but by its own folder.
    /// Only this user may write it (see
    /// perfopt_model_options.tuning_cache_dir). Copied during the call.
    /// (ABI 6)
    pub tuning_cache_dir: *const c_char,
}

impl Default for perfopt_config {
    fn default() -> Self {
        perfopt_config {
            struct_size: std::mem::size_of::<perfopt_config>() as u32,
            read_environment: 1,
            device: std::ptr::null(),
            cudnn_benchmark: PERFOPT_AUTO,
            tf32: PERFOPT_AUTO,
            cpu_optimization: PERFOPT_AUTO,
            torch_compile: PERFOPT_AUTO,
            compile_mode: std::ptr::null(),
            intra_op_threads: 0,
            inter_op_threads: 0,
            malloc_tuning: PERFOPT_AUTO,
            onnxruntime_library: std::ptr::null(),
            tuning_cache_dir: std::ptr::null(),
        }
    }
}

/// Every struct_size of perfopt_config this library accepts: ABI 1 (before
/// malloc_tuning), ABI 2-3 (before onnxruntime_library), ABI 4-5 (before
/// tuning_cache_dir) and the current layout.
pub(crate) fn config_sizes() -> [usize; 4] {
    [
        offset_of!(perfopt_config, malloc_tuning),
        offset_of!(perfopt_config, onnxruntime_library),
        offset_of!(perfopt_config, tuning_cache_dir),
        std::mem::size_of::<perfopt_config>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version;

    #[test]
    fn header_constants_match_the_crate() {
        assert_eq!(PERFOPT_ABI_VERSION, version::ABI_VERSION);
        let expected =
            format!("{PERFOPT_VERSION_MAJOR}.{PERFOPT_VERSION_MINOR}.{PERFOPT_VERSION_PATCH}");
        assert_eq!(expected, version::PERFOPT_VERSION);
        assert_eq!(
            config_sizes(),
            [48, 56, 64, 72],
            "64-bit layouts of ABI 1, 2-3, 4-5 and 6"
        );
    }
}
