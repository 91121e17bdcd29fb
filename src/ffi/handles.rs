//! Live-handle bookkeeping. Every handle perfopt gives out is registered
//! here until it is freed, so a freed, already-exited or foreign pointer is
//! answered with PERFOPT_ERR_INVALID_HANDLE instead of undefined behaviour
//! (within the limit that a freed address may be reused by a new handle).

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};

static LIVE: RwLock<Registry> = RwLock::new(None);

/// A type handed out as an opaque handle.
pub trait Handle {
    const KIND: &'static str;
}

/// Boxes `value`, registers it, and returns the raw handle.
pub fn register<T: Handle>(value: T) -> *mut T {
    let ptr = Box::into_raw(Box::new(value));
    LIVE.write()
        .get_or_insert_with(HashMap::new)
        .insert(ptr as usize, T::KIND);
    ptr
}

type Registry = Option<HashMap<usize, &'static str>>;

fn check_in<T: Handle>(live: &Registry, ptr: *const T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::null_argument(name));
    }
    match live.as_ref().and_then(|live| live.get(&(ptr as usize))) {
        Some(kind) if *kind == T::KIND => Ok(()),
        Some(kind) => Err(Error::new(
            ErrorKind::InvalidHandle,
            format!("argument `{name}` is a {kind}, not a {}", T::KIND),
        )),
        None => Err(Error::new(
            ErrorKind::InvalidHandle,
            format!(
                "argument `{name}` is not a live {}: already freed, or not made by perfopt",
                T::KIND
            ),
        )),
    }
}

/// Borrows a live handle.
///
/// # Safety
/// A handle must not be freed while another thread uses it; registration
/// guarantees the pointer came from [`register`] for this type.
pub unsafe fn borrow<'a, T: Handle>(ptr: *const T, name: &str) -> Result<&'a T> {
    check_in(&LIVE.read(), ptr, name)?;
    Ok(&*ptr)
}

/// Takes a live handle back for freeing; it is no longer live afterwards.
///
/// # Safety
/// As [`borrow`]; the caller drops the box.
pub unsafe fn take<T: Handle>(ptr: *mut T, name: &str) -> Result<Box<T>> {
    let mut live = LIVE.write();
    check_in(&live, ptr, name)?;
    if let Some(map) = live.as_mut() {
        map.remove(&(ptr as usize));
    }
    Ok(Box::from_raw(ptr))
}
