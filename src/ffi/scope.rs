//! perfopt_inference_enter / perfopt_inference_exit / perfopt_scope_free.
#![allow(non_camel_case_types)]

use parking_lot::Mutex;

use super::args::require_out;
use super::handles::{self, Handle};
use super::optimizer::perfopt_optimizer;
use super::status::perfopt_status;
use super::{boundary, boundary_void};
use crate::error::{Error, ErrorKind};
use crate::scope::InferenceScope;

/// An open inference scope (`c10::InferenceMode`), bound to the thread that
/// entered it.
pub struct perfopt_scope {
    _private: [u8; 0],
}

/// The scope behind a handle; `None` once it has exited.
pub struct ScopeSlot(Mutex<Option<InferenceScope>>);

impl Handle for perfopt_scope {
    type Object = ScopeSlot;
    const KIND: &'static str = "perfopt_scope";
}

/// Enters inference mode on the calling thread until the scope exits.
/// Scopes nest; they must exit on the same thread, innermost first.
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_inference_enter(
    optimizer: *const perfopt_optimizer,
    out: *mut *mut perfopt_scope,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        let optimizer = handles::get(optimizer, "optimizer")?;
        let scope = InferenceScope::enter(optimizer)?;
        let handle = handles::register::<perfopt_scope>(std::sync::Arc::new(ScopeSlot(
            Mutex::new(Some(scope)),
        )));
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Exits and frees the scope. On another thread (PERFOPT_ERR_WRONG_THREAD)
/// or out of order (PERFOPT_ERR_SCOPE_ORDER) it returns an error and the scope
/// stays open and valid; a scope already exited is PERFOPT_ERR_INVALID_HANDLE.
/// A scope whose thread has ended exits from any thread (nothing is left to
/// restore).
#[must_use]
#[no_mangle]
pub extern "C" fn perfopt_inference_exit(scope: *mut perfopt_scope) -> perfopt_status {
    boundary(|| {
        let slot = handles::get(scope, "scope")?;
        let mut open = slot.0.lock();
        let current = open.take().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidHandle,
                "argument `scope` has exited already",
            )
        })?;
        match current.exit() {
            Ok(()) => {
                drop(open);
                let _ = handles::release(scope, "scope");
                Ok(())
            }
            Err((current, err)) => {
                *open = Some(current);
                Err(err)
            }
        }
    })
}

/// Releases a scope without the thread rule, from any thread; NULL is a
/// no-op. On its own thread as the innermost open scope it exits as
/// perfopt_inference_exit does; otherwise (a scope whose thread is gone, or
/// that will never be exited properly) it is released without restoring
/// anything, and its thread, if it still runs, stays in inference mode.
#[no_mangle]
pub extern "C" fn perfopt_scope_free(scope: *mut perfopt_scope) {
    if scope.is_null() {
        return;
    }
    boundary_void(|| {
        if let Ok(slot) = handles::release(scope, "scope") {
            if let Some(open) = slot.0.lock().take() {
                open.abandon();
            }
        }
    });
}
