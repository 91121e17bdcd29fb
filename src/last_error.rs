//! The thread-local last-error message of the C ABI: set when a call fails,
//! cleared when one starts, kept across a log callback (whose own calls into
//! perfopt must not change what the outer call reports).

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    /// The message of the last failed call on this thread, NULL after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

// Every access is `try_with`: a host may call perfopt from its own thread-exit
// destructors (Swift's Foundation.Thread releases what its closure captured
// from a pthread-key destructor), after this slot is gone. There the call
// still runs; its message is just not kept (NULL is read back).

pub fn pointer() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .map_or(std::ptr::null(), |message| message.as_ptr())
        })
        .unwrap_or(std::ptr::null())
}

pub fn set(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

pub fn clear() {
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = None);
}

/// Runs `f` and puts this thread's last error back as it was before.
pub fn preserved<T>(f: impl FnOnce() -> T) -> T {
    let saved = LAST_ERROR
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten();
    let result = f();
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = saved);
    result
}
