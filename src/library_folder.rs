//! Where perfopt's own binary lies, for the files that travel beside it
//! (ONNX Runtime's library, perfopt's CUDA and ExecuTorch parts).

use std::path::{Path, PathBuf};

/// The folder of the binary that holds this code (libperfopt, or a program
/// perfopt is linked into), symbolic links resolved.
pub(crate) fn own_folder() -> Option<PathBuf> {
    let address = own_folder as *const () as usize;
    let binary = mapped_file(address).or_else(|| loader_name(address))?;
    std::fs::canonicalize(binary)
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// Where a part of perfopt built as a library of its own (`name`:
/// libperfopt_cuda.so.0, libperfopt_executorch.so.0) may lie: beside the
/// binary holding perfopt (libperfopt.so, or a program linking libperfopt.a),
/// in ../lib from it (the CLI in bin/), and for cargo's test programs in
/// target/<profile>/deps, in target/<profile>/ (where build.rs puts it).
/// Nowhere else: a planted file in a shared folder must not be loaded.
pub(crate) fn part_candidates(name: &str) -> Vec<PathBuf> {
    let Some(folder) = own_folder() else {
        return Vec::new();
    };
    let mut found = vec![folder.join(name), folder.join("../lib").join(name)];
    if folder.file_name().is_some_and(|n| n == "deps") {
        found.push(folder.join("..").join(name));
    }
    found
}

/// The file mapped at `address`, from /proc/self/maps (Linux): an absolute
/// path for a library and for the program itself alike, where dladdr names
/// the program by its argv[0] ("perfopt" when run from PATH).
fn mapped_file(address: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (low, high) = fields.next()?.split_once('-')?;
        let (low, high) = (
            usize::from_str_radix(low, 16).ok()?,
            usize::from_str_radix(high, 16).ok()?,
        );
        if !(low..high).contains(&address) {
            return None;
        }
        // perms, offset, device, inode, then the path (which may hold spaces;
        // a file replaced since it was mapped ends in " (deleted)").
        let path = fields.skip(4).collect::<Vec<_>>().join(" ");
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
        path.starts_with('/').then(|| PathBuf::from(path))
    })
}

/// The name the dynamic loader gives the object holding `address` (where
/// /proc is absent, as on macOS, whose loader gives absolute paths).
fn loader_name(address: usize) -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; all zeros is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads an address of this binary's code and fills
    // `info`; the name it gives is valid while the binary is loaded.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
    );
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_folder_is_this_test_programs() {
        let exe = std::env::current_exe().unwrap();
        let expected = std::fs::canonicalize(exe).unwrap();
        assert_eq!(super::own_folder().as_deref(), expected.parent());
    }
}
