//! TorchScript modules (src/cxx/script.cpp); their state:
//! src/torch/script_state.rs.

use std::ffi::{c_char, c_int, c_void};

use super::values::{self, Node, NodeSink};
use super::{c_string, check, device_code, read_text};
use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

#[repr(C)]
pub(super) struct RawScript {
    _private: [u8; 0],
}

extern "C" {
    fn pshim_script_load(
        path: *const c_char,
        device_type: c_int,
        device_index: c_int,
        out: *mut *mut RawScript,
    ) -> c_int;
    fn pshim_script_free(module: *mut RawScript);
    fn pshim_script_freeze(
        module: *const RawScript,
        optimize: c_int,
        out: *mut *mut RawScript,
    ) -> c_int;
    fn pshim_script_methods(
        module: *const RawScript,
        buf: *mut c_char,
        len: usize,
        needed: *mut usize,
    ) -> c_int;
    fn pshim_script_call(
        module: *const RawScript,
        method: *const c_char,
        nodes: *const Node,
        n_nodes: usize,
        n_args: usize,
        sink: NodeSink,
        ctx: *mut c_void,
    ) -> c_int;
    fn pshim_script_save(module: *const RawScript, path: *const c_char) -> c_int;
}

/// A `torch::jit::Module` on a device.
pub struct ScriptModule {
    pub(super) raw: *mut RawScript,
}

// SAFETY: TorchScript modules may run methods from several threads at once;
// the shim never changes the module object after creating it (methods may
// change attributes, which is the model's own state: see the header).
unsafe impl Send for ScriptModule {}
unsafe impl Sync for ScriptModule {}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_script_free(self.raw) }
    }
}

impl ScriptModule {
    pub fn load(path: &str, device: tch::Device) -> Result<ScriptModule> {
        let c_path = c_string(path, "path")?;
        let (kind, index) = device_code(device);
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid string and out pointer.
        check(
            unsafe { pshim_script_load(c_path.as_ptr(), kind, index, &mut raw) },
            &format!("loading TorchScript from {path}"),
        )?;
        Ok(ScriptModule { raw })
    }

    /// A frozen copy keeping every method; with `optimize`, also
    /// optimize_for_inference.
    pub fn freeze(&self, optimize: bool) -> Result<ScriptModule> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: self.raw is live; valid out pointer.
        check(
            unsafe { pshim_script_freeze(self.raw, optimize as c_int, &mut raw) },
            if optimize {
                "freezing and optimizing for inference"
            } else {
                "freezing"
            },
        )?;
        Ok(ScriptModule { raw })
    }

    /// The methods and their schemas, as the shim's JSON text.
    pub fn methods_json(&self) -> Result<String> {
        read_text("listing the model's methods", |buf, len, needed| {
            // SAFETY: the buffer, its length and the out pointer come from read_text.
            unsafe { pshim_script_methods(self.raw, buf, len, needed) }
        })
    }

    /// Calls `method` with `args`, converted to the types its schema wants.
    pub fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        let c_method = c_string(method, "method")?;
        let nodes = values::encode(args);
        let mut results = values::collect(&format!("running {method}()"), |sink, ctx| {
            // SAFETY: the nodes borrow `args`, which outlive the call; the sink
            // and its context come from values::collect.
            unsafe {
                pshim_script_call(
                    self.raw,
                    c_method.as_ptr(),
                    nodes.as_ptr(),
                    nodes.len(),
                    args.len(),
                    sink,
                    ctx,
                )
            }
        })?;
        match results.len() {
            1 => Ok(results.remove(0)),
            n => Err(Error::new(
                ErrorKind::Internal,
                format!("{method}() sent {n} results"),
            )),
        }
    }

    pub fn save(&self, path: &str) -> Result<()> {
        let c_path = c_string(path, "path")?;
        // SAFETY: live module; NUL-terminated path.
        check(
            unsafe { pshim_script_save(self.raw, c_path.as_ptr()) },
            &format!("saving TorchScript to {path}"),
        )
    }
}
