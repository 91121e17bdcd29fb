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
    fn pshim_script_save_to(
        module: *const RawScript,
        sink: extern "C" fn(*mut c_void, *const c_char, usize),
        ctx: *mut c_void,
    ) -> c_int;
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
        let mut results = values::collect(
            || format!("running {method}()"),
            |sink, ctx| {
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
            },
        )?;
        match results.len() {
            1 => Ok(results.remove(0)),
            n => Err(Error::new(
                ErrorKind::Internal,
                format!("{method}() sent {n} results"),
            )),
        }
    }

    /// The module as torch::jit::save writes it, in memory.
    pub fn save_to_memory(&self) -> Result<Vec<u8>> {
        extern "C" fn sink(ctx: *mut c_void, data: *const c_char, len: usize) {
            // SAFETY: ctx is the Vec below, alive for the call; data holds len
            // bytes for the duration of this callback.
            unsafe {
                let bytes = &mut *(ctx as *mut Vec<u8>);
                if !data.is_null() {
                    bytes.extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
                }
            }
        }
        let mut bytes: Vec<u8> = Vec::new();
        // SAFETY: live module; the sink writes only into `bytes`, which
        // outlives the call.
        check(
            unsafe {
                pshim_script_save_to(
                    self.raw,
                    sink,
                    (&mut bytes as *mut Vec<u8>).cast::<c_void>(),
                )
            },
            "saving TorchScript into memory",
        )?;
        Ok(bytes)
    }
}
