//! Version strings and numbers, of perfopt and of what it was built on.

use std::ffi::CString;
use std::sync::OnceLock;

use crate::runtime::settings as shim;

pub const PERFOPT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bumped whenever the C ABI changes incompatibly (a signature, a struct
/// layout, an enum value). Bindings refuse a library whose number differs.
pub const ABI_VERSION: u32 = 6;

/// "13.0" from libtorch's CUDA runtime, or `None` without its CUDA library.
pub fn cuda_runtime() -> Option<String> {
    shim::cuda_runtime_version()
        .ok()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// "9.19.0", or `None` without cuDNN.
pub fn cudnn() -> Option<String> {
    shim::cudnn_version()
        .ok()
        .map(|v| format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
}

/// "perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)", or in the build without
/// libtorch "perfopt 0.1.0 (lite: ONNX Runtime and ExecuTorch, no
/// libtorch)", built once.
pub fn full_version() -> &'static CString {
    static FULL: OnceLock<CString> = OnceLock::new();
    FULL.get_or_init(|| {
        let built_on = match cfg!(feature = "torch") {
            true => format!(
                "libtorch {}, cuda {}",
                shim::torch_version(),
                cuda_runtime().unwrap_or_else(|| "none".to_string())
            ),
            false => "lite: ONNX Runtime and ExecuTorch, no libtorch".to_string(),
        };
        CString::new(format!("perfopt {PERFOPT_VERSION} ({built_on})"))
            .expect("version text has no NUL")
    })
}

/// The libtorch version perfopt was built against ("2.11.0").
pub fn torch_version() -> &'static str {
    shim::torch_version()
}
