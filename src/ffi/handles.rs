//! Live-handle bookkeeping, as rustls-ffi's `try_clone_arc!`: every handle
//! perfopt gives out is a token in a registry that owns a reference-counted
//! object. A call clones the object's `Arc` under the registry's lock and
//! works on its clone, so a `_free` racing the call only drops the registry's
//! reference: the call finishes on its own, and later calls get
//! PERFOPT_ERR_INVALID_HANDLE. Tokens are never reused, so a freed handle
//! cannot be mistaken for a new one either.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};

/// A C handle type (opaque in the header) and the object behind it.
pub trait Handle {
    type Object: Send + Sync + 'static;
    const KIND: &'static str;
}

struct Entry {
    kind: &'static str,
    object: Arc<dyn Any + Send + Sync>,
}

struct Registry {
    next: usize,
    live: Option<HashMap<usize, Entry>>,
}

/// Read-locked by every call that uses a handle (many threads at once),
/// write-locked only to register or free one: one process-wide mutex here
/// serialised every call of every model.
static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    next: 0x1000,
    live: None,
});

/// Registers `object` and returns its handle.
pub fn register<T: Handle>(object: Arc<T::Object>) -> *mut T {
    let mut registry = REGISTRY.write();
    // Tokens look like aligned addresses and are never reused.
    registry.next += 16;
    let token = registry.next;
    registry.live.get_or_insert_with(HashMap::new).insert(
        token,
        Entry {
            kind: T::KIND,
            object,
        },
    );
    token as *mut T
}

fn invalid<T: Handle>(name: &str, found: Option<&'static str>) -> Error {
    Error::new(
        ErrorKind::InvalidHandle,
        match found {
            Some(kind) => format!("argument `{name}` is a {kind}, not a {}", T::KIND),
            None => format!(
                "argument `{name}` is not a live {}: already freed, or not made by perfopt",
                T::KIND
            ),
        },
    )
}

/// The object behind a live handle, kept alive for the caller's whole call.
pub fn get<T: Handle>(ptr: *const T, name: &str) -> Result<Arc<T::Object>> {
    if ptr.is_null() {
        return Err(Error::null_argument(name));
    }
    let registry = REGISTRY.read();
    let entry = registry
        .live
        .as_ref()
        .and_then(|live| live.get(&(ptr as usize)))
        .ok_or_else(|| invalid::<T>(name, None))?;
    if entry.kind != T::KIND {
        return Err(invalid::<T>(name, Some(entry.kind)));
    }
    entry
        .object
        .clone()
        .downcast::<T::Object>()
        .map_err(|_| invalid::<T>(name, Some(entry.kind)))
}

/// Unregisters a live handle and returns the registry's reference (dropped by
/// the caller, outside the lock: dropping a model frees libtorch objects).
pub fn release<T: Handle>(ptr: *mut T, name: &str) -> Result<Arc<T::Object>> {
    let object = get::<T>(ptr, name)?;
    let mut registry = REGISTRY.write();
    // Between the two locks another free may have won; only one gets Ok.
    match registry
        .live
        .as_mut()
        .and_then(|live| live.remove(&(ptr as usize)))
    {
        Some(_) => Ok(object),
        None => Err(invalid::<T>(name, None)),
    }
}

/// Handles still registered (tests and leak checks).
pub fn live_count() -> usize {
    REGISTRY.read().live.as_ref().map_or(0, HashMap::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Thing;
    struct Other;
    impl Handle for Thing {
        type Object = String;
        const KIND: &'static str = "thing";
    }
    impl Handle for Other {
        type Object = u32;
        const KIND: &'static str = "other";
    }

    #[test]
    fn a_free_drops_only_the_registry_reference() {
        let handle = register::<Thing>(Arc::new("alive".to_string()));
        let in_flight = get::<Thing>(handle, "thing").unwrap();
        let released = release::<Thing>(handle, "thing").unwrap();
        drop(released);
        assert_eq!(
            *in_flight, "alive",
            "the call finishes on its own reference"
        );
        let err = get::<Thing>(handle, "thing").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidHandle);
        assert_eq!(
            release::<Thing>(handle, "thing").unwrap_err().kind(),
            ErrorKind::InvalidHandle
        );
        let other = register::<Other>(Arc::new(7));
        assert_ne!(other as usize, handle as usize, "tokens are never reused");
        let err = get::<Thing>(other.cast(), "thing").unwrap_err();
        assert!(err.to_string().contains("is a other"), "{err}");
        assert_eq!(
            get::<Thing>(std::ptr::null(), "thing").unwrap_err().kind(),
            ErrorKind::NullArgument
        );
        release::<Other>(other, "other").unwrap();
    }
}
