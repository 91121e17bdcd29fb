//! perfopt_inference_enter / perfopt_inference_exit.
#![allow(non_camel_case_types)]

use super::handles::{self, Handle};
use super::optimizer::perfopt_optimizer;
use super::types::perfopt_status;
use super::{args::require_out, boundary};
use crate::scope::InferenceScope;

/// An open inference scope (`c10::InferenceMode`), bound to the thread that
/// entered it.
pub struct perfopt_scope {
    inner: InferenceScope,
}

impl Handle for perfopt_scope {
    const KIND: &'static str = "perfopt_scope";
}

/// Enters inference mode on the calling thread until the scope exits.
/// Scopes nest; they must exit on the same thread, innermost first.
#[no_mangle]
pub extern "C" fn perfopt_inference_enter(
    optimizer: *mut perfopt_optimizer,
    out: *mut *mut perfopt_scope,
) -> perfopt_status {
    boundary(|| {
        require_out(out, "out")?;
        // SAFETY: borrow() checks the handle is live.
        let optimizer = unsafe { handles::borrow(optimizer.cast_const(), "optimizer") }?;
        let scope = InferenceScope::enter(optimizer.inner.clone())?;
        let handle = handles::register(perfopt_scope { inner: scope });
        // SAFETY: checked non-NULL above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Exits and frees the scope. On another thread (PERFOPT_ERR_WRONG_THREAD)
/// or out of order (PERFOPT_ERR_SCOPE_ORDER) it returns an error and the scope
/// stays open and valid; a scope already exited is PERFOPT_ERR_INVALID_HANDLE.
#[no_mangle]
pub extern "C" fn perfopt_inference_exit(scope: *mut perfopt_scope) -> perfopt_status {
    boundary(|| {
        // Check first, through a borrow, so that a refused exit leaves the
        // handle exactly as it was.
        // SAFETY: borrow() checks the handle is live.
        unsafe { handles::borrow(scope.cast_const(), "scope") }?
            .inner
            .check_exit()?;
        // SAFETY: live and checked; take() unregisters it.
        let boxed = unsafe { handles::take(scope, "scope") }?;
        boxed.inner.exit().map_err(|(_, err)| err)
    })
}
