//! A TorchScript module's state (src/cxx/script_state.cpp): the attributes
//! its methods change, saved, restored, compared and carried between forms,
//! and whether any method writes one.

use std::ffi::{c_char, c_int};

use super::check;
use super::script::{RawScript, ScriptModule};
use crate::error::Result;

#[repr(C)]
struct RawState {
    _private: [u8; 0],
}

extern "C" {
    fn pshim_script_state_save(
        module: *const RawScript,
        out: *mut *mut RawState,
        attributes: *mut usize,
    ) -> c_int;
    fn pshim_script_state_restore(module: *const RawScript, state: *const RawState) -> c_int;
    fn pshim_script_state_equal(
        module: *const RawScript,
        state: *const RawState,
        equal: *mut c_int,
    ) -> c_int;
    fn pshim_state_free(state: *mut RawState);
    fn pshim_script_state_apply(
        module: *const RawScript,
        state: *const RawState,
        applied: *mut usize,
    ) -> c_int;
    fn pshim_script_writes_state(module: *const RawScript, writes: *mut c_int) -> c_int;
    fn pshim_script_writes_inputs(
        module: *const RawScript,
        method: *const c_char,
        writes: *mut c_int,
    ) -> c_int;
}

impl ScriptModule {
    /// The state methods may change: every attribute that is not a parameter
    /// or a submodule, copied. `None` when there is none.
    pub fn save_state(&self) -> Result<Option<ScriptState>> {
        let (mut raw, mut attributes) = (std::ptr::null_mut(), 0usize);
        // SAFETY: live module; valid out pointers.
        check(
            unsafe { pshim_script_state_save(self.raw, &mut raw, &mut attributes) },
            "saving the model's state",
        )?;
        let state = ScriptState { raw };
        Ok((attributes > 0).then_some(state))
    }

    /// Writes the saved state back (copies, so it can be restored again).
    pub fn restore_state(&self, state: &ScriptState) -> Result<()> {
        // SAFETY: live module and state (the state was saved from this module).
        check(
            unsafe { pshim_script_state_restore(self.raw, state.raw) },
            "restoring the model's state",
        )
    }

    /// Writes a state saved from another form of the same model into this
    /// one, by attribute path; returns how many attributes were written.
    pub fn apply_state(&self, state: &ScriptState) -> Result<usize> {
        let mut applied = 0usize;
        // SAFETY: live module and state; valid out pointer. The state may come
        // from another module: it is matched by attribute names.
        check(
            unsafe { pshim_script_state_apply(self.raw, state.raw, &mut applied) },
            "carrying the model's state over",
        )?;
        Ok(applied)
    }

    /// Whether a method writes an attribute (outside training-only branches).
    pub fn writes_state(&self) -> Result<bool> {
        let mut writes: c_int = 0;
        // SAFETY: live module; valid out pointer.
        check(
            unsafe { pshim_script_writes_state(self.raw, &mut writes) },
            "looking for attribute writes",
        )?;
        Ok(writes != 0)
    }

    /// Whether `method` may write the memory of an argument it is given.
    pub fn writes_inputs(&self, method: &str) -> Result<bool> {
        let c_method = crate::torch::c_string(method, "method")?;
        let mut writes: c_int = 0;
        // SAFETY: live module; NUL-terminated name; valid out pointer.
        check(
            unsafe { pshim_script_writes_inputs(self.raw, c_method.as_ptr(), &mut writes) },
            "looking for writes to a method's arguments",
        )?;
        Ok(writes != 0)
    }

    /// Whether the module's state still equals `state`.
    pub fn state_equals(&self, state: &ScriptState) -> Result<bool> {
        let mut equal: c_int = 0;
        // SAFETY: live module and state; valid out pointer.
        check(
            unsafe { pshim_script_state_equal(self.raw, state.raw, &mut equal) },
            "comparing the model's state",
        )?;
        Ok(equal != 0)
    }
}

/// A copy of a module's state (src/cxx/script.cpp's pshim_state).
pub struct ScriptState {
    raw: *mut RawState,
}

// SAFETY: the state is read (restore, compare) and freed under its owner's
// rules; it holds its own copies of the values.
unsafe impl Send for ScriptState {}
unsafe impl Sync for ScriptState {}

impl Drop for ScriptState {
    fn drop(&mut self) {
        // SAFETY: raw came from the shim and is freed once.
        unsafe { pshim_state_free(self.raw) }
    }
}
