//! The folders libtorch's package loader unpacks packages into
//! (mkdtemp("/tmp/XXXXXX")), owned by perfopt once a load succeeds:
//! - on the CPU nothing reads them after the load (the library is mapped,
//!   its weights loaded), so they go at once: a host that exits without
//!   freeing, or crashes, leaves nothing behind;
//! - on CUDA the kernels' cubin files are read at their first launch, so
//!   the folder stays until the model is freed, or the process exits;
//! - only the process that made a folder removes it: a forked child that
//!   frees its copy of a model leaves its parent's folder alone.
//!
//! A failed load's folder is known only from the loader's message: removed
//! when the message names it, else left (never guessed: a guess could be
//! another load's folder).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Once;

use parking_lot::Mutex;

/// Folders still in use, removed at exit if their models were never freed.
static LIVE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static AT_EXIT: Once = Once::new();

extern "C" fn remove_live_folders() {
    let pid = std::process::id();
    if let Some(live) = LIVE.try_lock().and_then(|mut live| live.take()) {
        for folder in live {
            remove(&folder, pid);
        }
    }
}

fn remove(folder: &Path, pid: u32) {
    if std::process::id() == pid {
        let _ = std::fs::remove_dir_all(folder);
    }
}

/// A loader folder that this process made and removes.
pub struct Unpacked {
    path: PathBuf,
    pid: u32,
}

impl Unpacked {
    /// Takes over `path` (empty: nothing to own); `needed_after_load`: the
    /// runs read it (CUDA's cubins), else it goes now.
    pub fn take(path: &str, needed_after_load: bool) -> Option<Unpacked> {
        if path.is_empty() {
            return None;
        }
        let folder = Unpacked {
            path: PathBuf::from(path),
            pid: std::process::id(),
        };
        if !needed_after_load {
            remove(&folder.path, folder.pid);
            return None;
        }
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain extern "C" function without arguments.
            unsafe { libc::atexit(remove_live_folders) };
        });
        LIVE.lock()
            .get_or_insert_with(HashSet::new)
            .insert(folder.path.clone());
        Some(folder)
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if let Some(live) = LIVE.lock().as_mut() {
            live.remove(&self.path);
        }
        remove(&self.path, self.pid);
    }
}

/// Removes the folder a failed load names in its message ("/tmp/AbC123/
/// <model folder>..."), when it holds that model's folder.
pub fn remove_failed(message: &str, model_folder: &str) {
    let mut rest = message;
    while let Some(at) = rest.find("/tmp/") {
        let candidate = &rest[at..];
        let name = &candidate[5..];
        let is_mkdtemp = name.len() > 7
            && name.as_bytes()[..6].iter().all(u8::is_ascii_alphanumeric)
            && name.as_bytes()[6] == b'/';
        if is_mkdtemp && name[7..].starts_with(model_folder) {
            let folder = Path::new(&candidate[..11]);
            if folder.join(model_folder).is_dir() {
                let _ = std::fs::remove_dir_all(folder);
            }
            return;
        }
        rest = &candidate[5..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_folder_the_message_names() {
        // remove_failed works on /tmp/XXXXXX names only: make one there.
        let folder = PathBuf::from(format!("/tmp/pu{:04}", std::process::id() % 10_000));
        let inner = folder.join("pkg/data/aotinductor/model");
        std::fs::create_dir_all(&inner).unwrap();
        remove_failed(
            &format!(
                "Error in dlopen: {}/x.so: bad",
                folder.join("other").display()
            ),
            "pkg/data/aotinductor/model/",
        );
        assert!(folder.is_dir(), "a folder named for another model stays");
        remove_failed(
            &format!("Error in dlopen: {}/x.so: bad", inner.display()),
            "pkg/data/aotinductor/model/",
        );
        assert!(!folder.exists());
    }
}
