//! The tuning cache's folder (tuning_cache.rs, load_hint.rs), safe to share
//! the way ccache's and pip's caches are: read or written only when this
//! user alone can write it, and every file written under a random name
//! created with O_EXCL (never through a planted symlink), then renamed into
//! place.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

fn cache_error(message: String) -> Error {
    Error::new(ErrorKind::Internal, message)
}

/// The folder, created (0700) when missing, if only this user can write it.
#[cfg(unix)]
pub fn trusted_folder(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| cache_error(format!("creating {}: {err}", dir.display())))?;
    }
    let metadata = std::fs::metadata(dir)
        .map_err(|err| cache_error(format!("reading {}: {err}", dir.display())))?;
    if !metadata.is_dir() {
        return Err(cache_error(format!("{} is not a folder", dir.display())));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if metadata.uid() != me {
        return Err(cache_error(format!(
            "the tuning cache {} is owned by uid {}, not by this user (uid {me}): a folder \
             another user controls could choose what runs here; use a folder of your own",
            dir.display(),
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(cache_error(format!(
            "the tuning cache {} is writable by {} (mode {:o}): anyone who can write there \
             could plant an entry that runs instead of the model; `chmod go-w` it",
            dir.display(),
            if metadata.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            metadata.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn trusted_folder(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| cache_error(format!("creating {}: {err}", dir.display())))
}

/// Writes `bytes` to `path` through a file of a random name created with
/// O_EXCL (never through a planted symlink), renamed into place; on any
/// failure (a full disk) nothing stays behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let failed = |err: std::io::Error| cache_error(format!("writing {}: {err}", path.display()));
    let mut temporary = tempfile::Builder::new()
        .prefix(".perfopt-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(failed)?;
    temporary.write_all(bytes).map_err(failed)?;
    temporary.as_file().sync_all().map_err(failed)?;
    temporary
        .persist(path)
        .map(drop)
        .map_err(|err| failed(err.error))
}
