//! Content hashes remembered by file identity in the tuning cache's folder,
//! so that neither a load under the cache nor the compile after it reads
//! every byte of a large model again (270 MB for a text encoder's three
//! forms, 90 MB for its frozen module); and the small records the cache
//! keeps beside its entries (load_hint.rs's last choice among them).
//!
//! A remembered hash is trusted only for files whose identity (device,
//! inode, size, modification and change times) is what it was, and whose
//! change times were at least a second before the hash was taken: a write
//! moves the change time, which no caller can set back, and a write within
//! the clock's tick of an earlier one cannot go unseen once the file is a
//! second old.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::forms::FileIdentity;
use crate::error::Result;
use crate::json::Json;

/// Bumped when a record's fields change: records of another format are
/// ignored.
pub(super) const RECORD_FORMAT: f64 = 1.0;
/// How long before the hash its files must have last changed.
const SETTLED: Duration = Duration::from_secs(1);

/// The model's files' identities, one line each after the model's path,
/// and the latest change time among them; `None` when one cannot be read,
/// or where the file system keeps no change time finer than a second
/// (squashfs, FAT: a change time without nanoseconds), where a file
/// rewritten within the second would keep its identity.
fn identity(path: &Path) -> Option<(String, SystemTime)> {
    const SECOND_NS: i128 = 1_000_000_000;
    let mut lines = format!("{:?}\n", std::fs::canonicalize(path).ok()?);
    let mut latest = 0;
    for file in crate::engine::content_files(path).ok()? {
        let name = file.file_name()?.to_string_lossy().into_owned();
        match FileIdentity::of_file(&file) {
            Some(id) if id.changed_ns() % SECOND_NS == 0 => return None,
            Some(id) => {
                latest = latest.max(id.changed_ns());
                lines.push_str(&format!("{name:?} {}\n", id.text()));
            }
            None if file.try_exists().ok()? => return None,
            None => lines.push_str(&format!("{name:?} missing\n")),
        }
    }
    let latest = Duration::from_nanos(u64::try_from(latest).ok()?);
    Some((lines, SystemTime::UNIX_EPOCH.checked_add(latest)?))
}

/// A record's file in `dir`: its kind and a hash of what names it.
pub(super) fn record_path(dir: &Path, kind: &str, parts: &[&str]) -> std::path::PathBuf {
    let mut hasher = blake3::Hasher::new();
    for part in std::iter::once(kind).chain(parts.iter().copied()) {
        // Each part with its length, so that no two sequences of parts meet.
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    // Not `.json`: the cache's entries are the folder's only .json files.
    dir.join(format!("{}.{kind}", &hasher.finalize().to_hex()[..32]))
}

/// A record: a regular file (never through a symlink, never a pipe that
/// would block), at most 64 KiB.
pub(super) fn read_record(path: &Path) -> Option<Json> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MOST: u64 = 64 * 1024;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MOST + 1).read_to_string(&mut text).ok()?;
    if text.len() as u64 > MOST {
        return None;
    }
    let json = Json::parse(&text).ok()?;
    (json.get("format").and_then(Json::as_f64) == Some(RECORD_FORMAT)).then_some(json)
}

pub(super) fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The content hash remembered for the model's files as they are now.
pub fn remembered_hash(dir: &Path, path: &Path) -> Option<String> {
    let (files, _) = identity(path)?;
    let json = read_record(&record_path(dir, "content-hash", &[&files]))?;
    if json.get("files").and_then(Json::as_str) != Some(files.as_str()) {
        return None;
    }
    let hash = json.get("model_blake3").and_then(Json::as_str)?;
    is_hash(hash).then(|| hash.to_string())
}

/// The files' identity before hashing them, for [`remember_hash`].
pub struct BeforeHash {
    files: Option<(String, SystemTime)>,
    started: SystemTime,
}

pub fn before_hash(path: &Path) -> BeforeHash {
    BeforeHash {
        files: identity(path),
        started: SystemTime::now(),
    }
}

/// Remembers `hash` for the files, if they are as they were before the hash
/// and had settled by then; best effort (a failure only means hashing again
/// next time). The folder is trusted by the caller.
pub fn remember_hash(dir: &Path, path: &Path, before: BeforeHash, hash: &str) {
    let Some((files, latest)) = before.files else {
        return;
    };
    let settled = latest
        .checked_add(SETTLED)
        .is_some_and(|t| t <= before.started);
    if !settled || identity(path).map(|(now, _)| now) != Some(files.clone()) {
        return;
    }
    let json = Json::object()
        .with("format", RECORD_FORMAT)
        .with("files", files.as_str())
        .with("model_blake3", hash);
    let path = record_path(dir, "content-hash", &[&files]);
    if let Err(err) = super::cache_folder::write_atomically(&path, json.to_string().as_bytes()) {
        log::debug!("the tuning cache did not remember a model's hash: {err}");
    }
}

/// The content hash of `path`'s files: remembered by their identity in
/// `dir` (a folder the caller trusts), else taken by `hash` and remembered
/// once the files have settled.
pub fn hash_remembering(
    dir: &Path,
    path: &Path,
    hash: impl FnOnce() -> Result<String>,
) -> Result<String> {
    if let Some(remembered) = remembered_hash(dir, path) {
        return Ok(remembered);
    }
    let before = before_hash(path);
    let hash = hash()?;
    remember_hash(dir, path, before, &hash);
    Ok(hash)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// A hash taken `seconds` from now (before the file's last change when
    /// negative).
    fn hashed_at(path: &Path, seconds: i64) -> BeforeHash {
        let now = SystemTime::now();
        let offset = Duration::from_secs(seconds.unsigned_abs());
        BeforeHash {
            started: if seconds < 0 {
                now - offset
            } else {
                now + offset
            },
            ..before_hash(path)
        }
    }

    pub(in crate::model) fn aged(path: &Path) -> BeforeHash {
        hashed_at(path, 5)
    }

    /// A model file in a fresh folder; `None` where the file system keeps
    /// no change times finer than a second (nothing is remembered there:
    /// tested elsewhere, skipped here).
    pub(in crate::model) fn written_model() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
        use std::os::unix::fs::MetadataExt;
        let dir = folder();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"model").unwrap();
        let fine = std::fs::metadata(&model).unwrap().ctime_nsec() != 0;
        fine.then_some((dir, model))
    }

    #[test]
    fn a_hash_is_remembered_for_settled_files_only() {
        let Some((dir, model)) = written_model() else {
            return;
        };
        let hash = "a".repeat(64);
        // Changed after the hash began: not settled, not remembered.
        remember_hash(dir.path(), &model, hashed_at(&model, -10), &hash);
        assert_eq!(remembered_hash(dir.path(), &model), None);
        remember_hash(dir.path(), &model, aged(&model), &hash);
        assert_eq!(remembered_hash(dir.path(), &model), Some(hash.clone()));
        // Rewritten with the same size: its change time moved.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&model, b"MODEL").unwrap();
        assert_eq!(remembered_hash(dir.path(), &model), None);
    }
}
