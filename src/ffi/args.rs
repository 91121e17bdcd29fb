//! Argument conversion for the exported functions: pointers to references,
//! C strings to `&str`, results into caller buffers. Each failure names the
//! argument.

use std::ffi::{c_char, CStr};

use crate::error::{Error, ErrorKind, Result};

/// A required C string. NULL and invalid UTF-8 are errors naming `name`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
pub unsafe fn required_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: the caller's contract.
    unsafe { optional_str(ptr, name) }?.ok_or_else(|| Error::null_argument(name))
}

/// An optional C string: NULL is `None`.
///
/// # Safety
/// As [`required_str`].
pub unsafe fn optional_str<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated (the caller's contract).
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map(Some)
        .map_err(|err| {
            Error::new(
                ErrorKind::InvalidUtf8,
                format!("argument `{name}` is not valid UTF-8 ({err})"),
            )
        })
}

/// Writes `value` through an output pointer (only called on success).
///
/// # Safety
/// `ptr` is NULL or valid for a write of `T`.
pub unsafe fn write_out<T>(ptr: *mut T, name: &str, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::null_argument(name));
    }
    // SAFETY: non-NULL and valid for a write (the caller's contract).
    unsafe { ptr.write(value) };
    Ok(())
}

/// Checks an output pointer before work starts, so that a NULL one fails
/// before anything is created.
pub fn require_out<T>(ptr: *mut T, name: &str) -> Result<()> {
    if ptr.is_null() {
        Err(Error::null_argument(name))
    } else {
        Ok(())
    }
}

/// Copies `text` and its NUL into `(buf, len)`. `*needed` (when not NULL)
/// always receives the size required, terminator included, so that a caller
/// can ask with `len` 0 and allocate.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `needed` is NULL or valid for a write.
pub unsafe fn write_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> Result<()> {
    let size = text.len() + 1;
    if !needed.is_null() {
        // SAFETY: non-NULL and valid for a write (the caller's contract).
        unsafe { needed.write(size) };
    }
    if buf.is_null() && len > 0 {
        return Err(Error::null_argument("buf"));
    }
    if len < size {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("the buffer holds {len} bytes and {size} are needed"),
        ));
    }
    // SAFETY: `buf` holds `len >= size` bytes (the caller's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// The largest struct_size perfopt reads the tail of (a struct from a newer
/// header); beyond it a size is taken for garbage.
const MAX_STRUCT_SIZE: usize = 4096;

/// The struct_size a caller's options struct declares, checked against the
/// sizes this library knows (its own and earlier ABIs'), and the number of
/// bytes perfopt reads: a smaller known size gets defaults for the fields it
/// lacks; a larger one (a program built against a newer header) is accepted
/// when every byte past this library's struct is zero (the Linux
/// extensible-struct rule: the program set nothing this library does not
/// know), and refused otherwise.
///
/// # Safety
/// `ptr` is non-NULL and points to at least 4 readable bytes, and to
/// struct_size bytes when struct_size is larger than `T`.
pub unsafe fn struct_size<T>(ptr: *const T, known: &[usize], name: &str) -> Result<usize> {
    // SAFETY: the caller's contract; struct_size is the first field (u32).
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    if known.contains(&size) {
        return Ok(size);
    }
    let current = std::mem::size_of::<T>();
    if size > current && size <= MAX_STRUCT_SIZE {
        // SAFETY: the caller's struct holds `size` bytes (its struct_size).
        let tail =
            unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(current), size - current) };
        if tail.iter().all(|&byte| byte == 0) {
            return Ok(current);
        }
        return Err(Error::new(
            ErrorKind::StructSize,
            format!(
                "{name}.struct_size is {size}, larger than this library's {current}, and the \
                 program set fields this library does not know (bytes {current} to {size} are not \
                 all zero): it was built against a newer perfopt.h than the library it loaded"
            ),
        ));
    }
    Err(Error::new(
        ErrorKind::StructSize,
        if size > current {
            format!(
                "{name}.struct_size is {size}, larger than this library's {current} and than any \
                 struct it reads ({MAX_STRUCT_SIZE} bytes): not a size sizeof gives"
            )
        } else {
            format!(
                "{name}.struct_size is {size}; this library accepts {known:?}: fill the struct \
                 with the matching _init function (or set struct_size = sizeof)"
            )
        },
    ))
}

/// For an `_init` function: how many bytes of defaults to write for a
/// caller's struct of `struct_size` bytes. A known size, or a larger one from
/// a newer header (up to 4096 bytes), whose tail the caller's `_init` zeroes
/// first (`zero_tail`), so that the struct is then accepted as it is.
pub fn init_size<T>(struct_size: usize, known: &[usize], name: &str) -> Result<(usize, bool)> {
    let current = std::mem::size_of::<T>();
    if known.contains(&struct_size) {
        return Ok((struct_size, false));
    }
    if struct_size > current && struct_size <= MAX_STRUCT_SIZE {
        return Ok((current, true));
    }
    Err(Error::new(
        ErrorKind::StructSize,
        format!("struct_size is {struct_size}; this library's {name} layouts are {known:?} bytes"),
    ))
}

/// Zeroes bytes `from..to` of a caller's struct.
///
/// # Safety
/// `ptr` is valid for `to` bytes.
pub unsafe fn zero_tail<T>(ptr: *mut T, from: usize, to: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_bytes(ptr.cast::<u8>().add(from), 0, to - from) };
}

/// `defaults` with the caller's first `size` bytes over them.
///
/// # Safety
/// `ptr` points to at least `size` readable bytes, `size <= size_of::<T>()`,
/// and `T` is a plain C struct whose every field accepts any bit pattern the
/// caller's layout gives it (checked by the caller's conversion).
pub unsafe fn read_prefix<T: Copy>(ptr: *const T, size: usize, defaults: T) -> T {
    let mut value = defaults;
    // SAFETY: the caller's contract; both regions hold at least `size` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), size)
    };
    value
}

/// Writes the first `size` bytes of `value` (an older caller's layout).
///
/// # Safety
/// `ptr` is valid for `size` bytes and `size <= size_of::<T>()`.
pub unsafe fn write_prefix<T: Copy>(ptr: *mut T, size: usize, value: T) {
    // SAFETY: the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), ptr.cast::<u8>(), size)
    };
}

/// A C tri-state (PERFOPT_AUTO, 0, 1) as an `Option<bool>`.
pub fn tri_state(value: i32, name: &str) -> Result<Option<bool>> {
    match value {
        super::types::PERFOPT_AUTO => Ok(None),
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        other => Err(Error::invalid_argument(format!(
            "`{name}` is {other}; accepted: PERFOPT_AUTO (-1), 0, 1"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAFETY (every unsafe block below): buffers and their lengths match,
    // strings are NUL-terminated literals or NULL.
    #[test]
    fn write_text_reports_the_size_needed() {
        let mut needed = 0usize;
        let mut small = [0 as c_char; 4];
        let err = unsafe { write_text("hello", small.as_mut_ptr(), small.len(), &mut needed) }
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BufferTooSmall);
        assert_eq!(needed, 6);
        let err = unsafe { write_text("hello", std::ptr::null_mut(), 0, &mut needed) }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BufferTooSmall);
        let mut exact = [1 as c_char; 6];
        // SAFETY: the buffer and its length match; write_text NUL-terminates.
        unsafe { write_text("hello", exact.as_mut_ptr(), exact.len(), &mut needed) }.unwrap();
        assert_eq!(
            // SAFETY: NUL-terminated by write_text.
            unsafe { CStr::from_ptr(exact.as_ptr()) }.to_str().unwrap(),
            "hello"
        );
    }

    // SAFETY (every unsafe block below): NUL-terminated literals or NULL.
    #[test]
    fn strings_are_checked() {
        let bad = b"\xff\xfe\0";
        let err = unsafe { required_str(bad.as_ptr().cast(), "path") }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUtf8);
        assert!(err.to_string().contains("path"));
        let err = unsafe { required_str(std::ptr::null(), "path") }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NullArgument);
    }

    #[test]
    fn tri_states_reject_other_values() {
        assert_eq!(tri_state(-1, "x").unwrap(), None);
        assert_eq!(tri_state(1, "x").unwrap(), Some(true));
        assert_eq!(
            tri_state(2, "x").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
