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
//! A failed load's folder is found by evidence: made during the load, this
//! user's, holding the model's files; when two fit (another process loading
//! the same package at once), neither is removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Once;

use parking_lot::Mutex;

use super::package::PackageModel;

/// Folders still in use, removed at exit if their models were never freed.
static LIVE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static AT_EXIT: Once = Once::new();

extern "C" fn remove_live_folders() {
    let pid = std::process::id();
    if let Some(live) = LIVE.try_lock().and_then(|mut live| live.take()) {
        for folder in live {
            let _ = remove(&folder, pid);
        }
    }
}

/// Removes `folder` if this process made it; whether it is gone. A failure
/// (no file descriptor left, a file in use) is logged, never silent.
fn remove(folder: &Path, pid: u32) -> bool {
    if std::process::id() != pid {
        return true;
    }
    match std::fs::remove_dir_all(folder) {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
        Err(err) => {
            log::warn!(
                "could not remove the folder {} libtorch unpacked a package into: {err} \
                 (tried again when the model is freed and at exit)",
                folder.display()
            );
            false
        }
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
        // A folder that could not go now (no file descriptor free) is kept
        // like CUDA's, and removed again when the model is freed or at exit.
        if !needed_after_load && remove(&folder.path, folder.pid) {
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
        let _ = remove(&self.path, self.pid);
    }
}

/// The folders in /tmp named as the loader names its own (six characters).
pub fn loader_folders() -> HashSet<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().len() == 6)
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// This user's uid, when `folder` is a folder (not a link) this user owns.
fn our_folder(folder: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(folder)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid)
        .then_some(uid)
}

/// Whether `folder` is one this process could have unpacked `model` into:
/// ours (this user's), and holding each of the model's files at its size.
fn holds_model(folder: &Path, model: &PackageModel) -> bool {
    our_folder(folder).is_some()
        && !model.entries.is_empty()
        && model.entries.iter().all(|entry| {
            std::fs::symlink_metadata(folder.join(&entry.name))
                .is_ok_and(|m| m.is_file() && m.len() == entry.uncompressed)
        })
}

/// Whether `folder` holds only what a load of `model` cut short would
/// leave: ours, and every file in it one of the model's, no larger than
/// declared (a load that failed part way, /tmp full, left partial files that
/// `holds_model` did not recognise, so they stayed).
fn holds_part_of_model(folder: &Path, model: &PackageModel) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(uid) = our_folder(folder) else {
        return false;
    };
    if model.entries.is_empty() {
        return false;
    }
    let declared: std::collections::HashMap<&str, u64> = model
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.uncompressed))
        .collect();
    let mut pending = vec![folder.to_path_buf()];
    let mut files = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            return false;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                return false;
            };
            if metadata.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path.strip_prefix(folder).ok().and_then(Path::to_str);
            let fits = metadata.is_file()
                && metadata.uid() == uid
                && name
                    .and_then(|n| declared.get(n))
                    .is_some_and(|&size| metadata.len() <= size);
            if !fits {
                return false;
            }
            files += 1;
        }
    }
    files > 0
}

/// Removes the folder a failed load left, known by evidence, never by its
/// message alone (a message can name any path): a folder made since
/// `before`, this user's, holding the model's files (or only files of the
/// model, some cut short). When the message names
/// one such folder, that one; else the only one; when several fit (another
/// process loading the same package), none.
pub fn remove_failed(message: &str, before: &HashSet<PathBuf>, model: &PackageModel) {
    let candidates: Vec<PathBuf> = loader_folders()
        .difference(before)
        .filter(|folder| holds_model(folder, model) || holds_part_of_model(folder, model))
        .cloned()
        .collect();
    let named = candidates
        .iter()
        .find(|folder| message.contains(&format!("{}/", folder.display())));
    let chosen = match (named, candidates.as_slice()) {
        (Some(folder), _) => Some(folder),
        (None, [only]) => Some(only),
        _ => None,
    };
    match chosen {
        Some(folder) => {
            let _ = std::fs::remove_dir_all(folder);
        }
        None if !candidates.is_empty() => log::debug!(
            "a failed package load left one of {} folders; none is removed, since another \
             process may be using it",
            candidates.len()
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zip::Entry;

    #[test]
    fn removes_only_a_new_folder_that_holds_the_model() {
        let model = PackageModel {
            name: "model".into(),
            entries: vec![Entry {
                name: "pkg/data/aotinductor/model/lib.so".into(),
                method: 0,
                compressed: 3,
                uncompressed: 3,
                crc: 0,
                local_header: 0,
            }],
            ..Default::default()
        };
        let name =
            |tag: u32| PathBuf::from(format!("/tmp/u{:05}", (std::process::id() + tag) % 100_000));
        let (victim, ours) = (name(0), name(1));
        for folder in [&victim, &ours] {
            let _ = std::fs::remove_dir_all(folder);
        }
        // An older folder the message names stays.
        std::fs::create_dir_all(victim.join("pkg/data/aotinductor/model")).unwrap();
        std::fs::write(victim.join("pkg/data/aotinductor/model/lib.so"), b"abc").unwrap();
        let before = loader_folders();
        std::fs::create_dir_all(ours.join("pkg/data/aotinductor/model")).unwrap();
        std::fs::write(ours.join("pkg/data/aotinductor/model/lib.so"), b"abc").unwrap();
        remove_failed(
            &format!("cannot open {}/x.so", victim.display()),
            &before,
            &model,
        );
        assert!(victim.is_dir(), "a folder older than the load stays");
        assert!(!ours.exists(), "the load's own folder goes");
        // A load cut short (/tmp full): the file is shorter than declared.
        let before = loader_folders();
        std::fs::create_dir_all(ours.join("pkg/data/aotinductor/model")).unwrap();
        std::fs::write(ours.join("pkg/data/aotinductor/model/lib.so"), b"a").unwrap();
        remove_failed("no space left on device", &before, &model);
        assert!(!ours.exists(), "before, a partial folder stayed");
        // A new folder holding anything else is not the load's: it stays.
        let before = loader_folders();
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::write(ours.join("unrelated.txt"), b"keep me").unwrap();
        remove_failed("no space left on device", &before, &model);
        assert!(ours.join("unrelated.txt").exists());
        let _ = std::fs::remove_dir_all(ours);
        let _ = std::fs::remove_dir_all(victim);
    }
}
