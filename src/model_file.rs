//! Opening a model file: a regular file, opened without ever blocking (a
//! named pipe or a device is refused by its type, never opened for a read
//! that would wait), with errors that name the path.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

fn io_error(kind: ErrorKind, shown: &str, what: &str, err: std::io::Error) -> Error {
    Error::new(kind, format!("{what} model file {shown}: {err}"))
}

/// Opens a regular file for reading; its size.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let shown = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|err| {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::FileNotFound
        } else {
            ErrorKind::LoadFailed
        };
        io_error(kind, &shown, "cannot open", err)
    })?;
    let not_regular = |what: &str| {
        Error::new(
            ErrorKind::NotAFile,
            format!("model path {shown} is {what}, not a regular file"),
        )
    };
    if metadata.is_dir() {
        return Err(not_regular("a directory"));
    }
    if !metadata.is_file() {
        return Err(not_regular("a named pipe, socket or device"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| io_error(ErrorKind::LoadFailed, &shown, "cannot open", err))?;
    // The path may have been replaced between the two looks.
    let metadata = file
        .metadata()
        .map_err(|err| io_error(ErrorKind::LoadFailed, &shown, "cannot read", err))?;
    if !metadata.is_file() {
        return Err(not_regular("not a regular file"));
    }
    Ok((file, metadata.len()))
}

/// Bytes free to this user on the file system holding `path` (statvfs);
/// `None` when it cannot be read.
#[cfg(feature = "torch")]
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is a valid out value; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}
