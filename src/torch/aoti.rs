//! AOTInductor packages (src/cxx/aoti.cpp).

use std::ffi::{c_char, c_int, c_void};

use super::values::{self, NodeSink};
use super::{c_string, check, device_code, read_text};
use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

#[repr(C)]
struct RawAoti {
    _private: [u8; 0],
}

extern "C" {
    fn pshim_aoti_load(
        path: *const c_char,
        model_name: *const c_char,
        device_type: c_int,
        device_index: c_int,
        runners: usize,
        out: *mut *mut RawAoti,
    ) -> c_int;
    fn pshim_aoti_free(package: *mut RawAoti);
    fn pshim_aoti_describe(
        package: *const RawAoti,
        buf: *mut c_char,
        len: usize,
        needed: *mut usize,
    ) -> c_int;
    fn pshim_aoti_folder(
        package: *const RawAoti,
        buf: *mut c_char,
        len: usize,
        needed: *mut usize,
    ) -> c_int;
    fn pshim_aoti_run(
        package: *const RawAoti,
        inputs: *const *mut c_void,
        n_inputs: usize,
        sink: NodeSink,
        ctx: *mut c_void,
    ) -> c_int;
}

/// A loaded AOTInductor package: model containers ready to run.
pub struct AotiPackage {
    raw: *mut RawAoti,
}

// SAFETY: the loader's run() may be called from several threads at once
// (it hands each call a free model container, `runners` of them).
unsafe impl Send for AotiPackage {}
unsafe impl Sync for AotiPackage {}

impl Drop for AotiPackage {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_aoti_free(self.raw) }
    }
}

impl AotiPackage {
    pub fn load(
        path: &str,
        model_name: &str,
        device: tch::Device,
        runners: usize,
    ) -> Result<AotiPackage> {
        let (c_path, c_name) = (c_string(path, "path")?, c_string(model_name, "model name")?);
        let (kind, index) = device_code(device);
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid strings and out pointer.
        check(
            unsafe {
                pshim_aoti_load(
                    c_path.as_ptr(),
                    c_name.as_ptr(),
                    kind,
                    index,
                    runners,
                    &mut raw,
                )
            },
            &format!("loading the AOTInductor package {path}"),
        )?;
        Ok(AotiPackage { raw })
    }

    /// The package's metadata and call spec, as JSON text.
    pub fn describe(&self) -> Result<String> {
        read_text("describing the package", |buf, len, needed| {
            // SAFETY: the buffer, its length and the out pointer come from read_text.
            unsafe { pshim_aoti_describe(self.raw, buf, len, needed) }
        })
    }

    /// The folder the package was unpacked into, now the caller's to remove.
    pub fn folder(&self) -> Result<String> {
        read_text("reading the package's folder", |buf, len, needed| {
            // SAFETY: the buffer, its length and the out pointer come from read_text.
            unsafe { pshim_aoti_folder(self.raw, buf, len, needed) }
        })
    }

    pub fn run(&self, inputs: &[&tch::Tensor]) -> Result<Vec<tch::Tensor>> {
        let ptrs: Vec<*mut c_void> = inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        values::collect(
            || "running the package".to_string(),
            |sink, ctx| {
                // SAFETY: live tensors for the call; sink and context from collect.
                unsafe { pshim_aoti_run(self.raw, ptrs.as_ptr(), ptrs.len(), sink, ctx) }
            },
        )?
        .into_iter()
        .map(|value| match value {
            Value::Tensor(t) => Ok(t),
            other => Err(Error::new(
                ErrorKind::Internal,
                format!("the package returned {}", other.describe()),
            )),
        })
        .collect()
    }
}
