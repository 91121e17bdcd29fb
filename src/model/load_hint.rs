//! What lets a model's next start build only what its tuning chose. Beside
//! its entries (tuning_cache.rs) the tuning cache remembers:
//! - per model content, device, the optimizer's thread count and versions,
//!   the last choice max-autotune made (a bundle's form, the engine's
//!   settings, the thread count), which a load under the optimizer's
//!   tuning_cache_dir builds directly (ONNX Runtime's session with the
//!   chosen settings, not a default session and then the chosen one); the
//!   model then runs so, at that thread count, until compiled otherwise. A
//!   bundle's chosen form loads alone, in the stead of the form the model
//!   was, where it takes every call that form took (a StandIn: contract and
//!   inputs, remembered with the choice and checked again once loaded);
//! - the content hash of the model's files by their identity, so that
//!   neither that load nor the compile after it reads every byte of a large
//!   bundle again (270 MB for a text encoder's three forms).
//!
//! A remembered hash is trusted only for files whose identity (device,
//! inode, size, modification and change times) is what it was, and whose
//! change times were at least a second before the hash was taken: a write
//! moves the change time, which no caller can set back, and a write within
//! the clock's tick of an earlier one cannot go unseen once the file is a
//! second old. Both records live in the tuning cache's folder, which only
//! this user may write, and a hint only ever picks among the model's own
//! forms and settings: a damaged one is ignored and the model loads as
//! usual.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::forms::FileIdentity;
use crate::device::Device;
use crate::engine::bundle::StandIn;
use crate::engine::inputs;
use crate::engine::{LoadContext, LoadHint, Loaded};
use crate::error::Result;
use crate::json::Json;
use crate::optimizer::Optimizer;

/// Bumped when a record's fields change: records of another format are
/// ignored.
const RECORD_FORMAT: f64 = 1.0;
/// How long before the hash its files must have last changed.
const SETTLED: Duration = Duration::from_secs(1);

/// The last choice remembered for a model: its label ("onnx: graph
/// optimisation extended" for a bundle's form) and thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct LastChoice {
    pub label: String,
    pub threads: Option<usize>,
    /// For a bundle whose chosen form may load alone.
    pub stand_in: Option<StandIn>,
}

impl LastChoice {
    /// As a report says it ("onnx: graph optimisation extended at 2 threads").
    pub fn describe(&self) -> String {
        match self.threads {
            Some(n) => format!(
                "{} at {n} thread{}",
                self.label,
                if n == 1 { "" } else { "s" }
            ),
            None => self.label.clone(),
        }
    }
}

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
fn record_path(dir: &Path, kind: &str, parts: &[&str]) -> std::path::PathBuf {
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
fn read_record(path: &Path) -> Option<Json> {
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

fn is_hash(text: &str) -> bool {
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

/// What a choice is remembered under: the model's content, the device, the
/// optimizer's thread count and the versions (the inputs' shapes and the
/// model's options are not known at load).
fn choice_path(dir: &Path, model_hash: &str, device: Device) -> std::path::PathBuf {
    let device = super::tuning_cache::device_text(device);
    let threads = crate::runtime::settings::num_threads()
        .unwrap_or(0)
        .to_string();
    let torch = crate::runtime::settings::torch_version();
    record_path(
        dir,
        "last-choice",
        &[
            model_hash,
            &device,
            &threads,
            crate::version::PERFOPT_VERSION,
            torch,
        ],
    )
}

/// Remembers `choice` as the model's last (best effort, as above).
pub fn remember_choice(dir: &Path, model_hash: &str, device: Device, choice: &LastChoice) {
    let json = Json::object()
        .with("format", RECORD_FORMAT)
        .with("model_blake3", model_hash)
        .with("label", choice.label.as_str())
        .with("threads", choice.threads.map(|t| t as u64))
        .with("stand_in", choice.stand_in.as_ref().map(stand_in_json));
    let path = choice_path(dir, model_hash, device);
    if let Err(err) = super::cache_folder::write_atomically(&path, json.to_string().as_bytes()) {
        log::debug!("the tuning cache did not remember the last choice: {err}");
    }
}

fn stand_in_json(stand_in: &StandIn) -> Json {
    Json::object()
        .with("contract", stand_in.contract.as_str())
        .with("stands_in_for", stand_in.stands_in_for.as_str())
        .with(
            "held_inputs",
            stand_in.held_inputs.as_deref().map(inputs::to_text),
        )
}

fn read_stand_in(json: &Json) -> Option<StandIn> {
    let text = |key: &str| json.get(key).and_then(Json::as_str);
    let held_inputs = match json.get("held_inputs") {
        Some(Json::Null) => None,
        _ => Some(inputs::parse(text("held_inputs")?)?),
    };
    Some(StandIn {
        contract: text("contract")?.to_string(),
        stands_in_for: text("stands_in_for")?.to_string(),
        held_inputs,
    })
}

/// The last choice remembered for the model at `path` on `device`, when
/// its hash is remembered too (a load never reads the model's content for
/// this) and the folder is one only this user can write.
pub fn last_choice(dir: &Path, path: &Path, device: Device) -> Option<LastChoice> {
    if !dir.is_dir() {
        return None;
    }
    if let Err(err) = super::cache_folder::trusted_folder(dir) {
        log::info!("{err}; the model loads as usual");
        return None;
    }
    let hash = remembered_hash(dir, path)?;
    let json = read_record(&choice_path(dir, &hash, device))?;
    if json.get("model_blake3").and_then(Json::as_str) != Some(hash.as_str()) {
        return None;
    }
    let label = json.get("label").and_then(Json::as_str)?;
    let threads = match json.get("threads") {
        Some(Json::Null) | None => None,
        Some(t) => Some(
            t.as_f64()
                .filter(|t| (1.0..=f64::from(crate::config::max_threads())).contains(t))?
                as usize,
        ),
    };
    (!label.is_empty() && label.len() < 1024).then(|| LastChoice {
        label: label.to_string(),
        threads,
        // A damaged stand-in costs only the alone load.
        stand_in: json.get("stand_in").and_then(read_stand_in),
    })
}

/// Remembers `last` again without its stand-in (best effort).
fn forget_stand_in(dir: &Path, path: &Path, device: Device, last: &LastChoice) {
    if let Some(hash) = remembered_hash(dir, path) {
        let without = LastChoice {
            stand_in: None,
            ..last.clone()
        };
        remember_choice(dir, &hash, device, &without);
    }
}

/// Loads the model at `path` for `optimizer`: as its tuning last chose
/// when the optimizer's tuning cache remembers a choice for it (a note for
/// the report says what that changed), as usual otherwise.
pub(super) fn load(optimizer: &Optimizer, path: &str) -> Result<(Loaded, Option<String>)> {
    let context = super::forms::load_context(optimizer, path);
    // A choice at more threads than the optimizer's (made under a model's
    // own count) is not what a load at the optimizer's count may build.
    let last = optimizer
        .config()
        .tuning_cache_dir
        .as_deref()
        .and_then(|dir| last_choice(Path::new(dir), Path::new(path), optimizer.device()))
        .filter(|last| last.threads.is_none_or(|t| t <= context.threads));
    let Some(last) = last else {
        return Ok((crate::engine::load(&context)?, None));
    };
    let hint = LoadHint {
        label: &last.label,
        threads: last.threads,
        stand_in: last.stand_in.as_ref(),
    };
    let loaded = match crate::engine::load(&LoadContext {
        hint: Some(hint),
        ..context
    }) {
        Ok(loaded) => loaded,
        Err(err) => {
            // Whatever failed, the model loads as it would have without it.
            log::info!(
                "{path}: building {} failed ({err}); loading it as usual",
                last.describe()
            );
            return Ok((crate::engine::load(&context)?, None));
        }
    };
    if loaded.bundle.as_ref().is_some_and(|b| b.stand_in_refused) {
        // Else each start would load that form and let it go again.
        if let Some(dir) = optimizer.config().tuning_cache_dir.as_deref() {
            forget_stand_in(Path::new(dir), Path::new(path), optimizer.device(), &last);
        }
    }
    // Whether the load built it so: an engine that builds its forms from
    // the one loaded (TorchScript), or a bundle whose chosen form is not the
    // one loaded, builds the choice when compiled, as before.
    let mut notes = Vec::new();
    let label = match &loaded.bundle {
        Some(bundle) => {
            let form = bundle.loaded.name();
            if let Some(anchor) = &bundle.stands_in_for {
                notes.push(format!(
                    "loaded its {form} form alone, as the tuning cache last chose: it takes \
                     the calls and batches of the {anchor} form, whose output stays the \
                     reference"
                ));
            }
            crate::engine::bundle::label_in_form(&last.label, &form)
        }
        None => Some(last.label.as_str()),
    };
    let threads_as_chosen = last.threads.is_none() || loaded.engine.threads() == last.threads;
    if label.is_some_and(|label| loaded.engine.is_form(label)) && threads_as_chosen {
        notes.push(format!(
            "built as the tuning cache last chose: {}",
            last.describe()
        ));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    if let Some(note) = &note {
        log::info!("{path}: {note}");
    }
    Ok((loaded, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Device = Device {
        kind: crate::device::DeviceKind::Cpu,
        index: None,
    };

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

    fn aged(path: &Path) -> BeforeHash {
        hashed_at(path, 5)
    }

    /// A model file in a fresh folder; `None` where the file system keeps
    /// no change times finer than a second (nothing is remembered there:
    /// tested elsewhere, skipped here).
    fn written_model() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
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

    #[test]
    fn a_choice_needs_the_models_hash_and_a_sane_record() {
        let Some((dir, model)) = written_model() else {
            return;
        };
        let choice = LastChoice {
            label: "graph optimisation extended".to_string(),
            threads: Some(2),
            stand_in: Some(StandIn {
                contract: "methods forward(1..1: [Tensor]) -> [Tensor]".to_string(),
                stands_in_for: "onnx".to_string(),
                held_inputs: inputs::parse("float32[?,32]"),
            }),
        };
        let hash = "b".repeat(64);
        remember_choice(dir.path(), &hash, CPU, &choice);
        // The model's hash is not remembered: nothing is read.
        assert_eq!(last_choice(dir.path(), &model, CPU), None);
        remember_hash(dir.path(), &model, aged(&model), &hash);
        assert_eq!(last_choice(dir.path(), &model, CPU), Some(choice.clone()));
        assert_eq!(
            choice.describe(),
            "graph optimisation extended at 2 threads"
        );
        // A record naming another model, or a thread count out of range.
        let path = choice_path(dir.path(), &hash, CPU);
        let planted = |json: Json| std::fs::write(&path, json.to_string()).unwrap();
        planted(
            Json::object()
                .with("format", RECORD_FORMAT)
                .with("model_blake3", "c".repeat(64).as_str())
                .with("label", "x"),
        );
        assert_eq!(last_choice(dir.path(), &model, CPU), None);
        planted(
            Json::object()
                .with("format", RECORD_FORMAT)
                .with("model_blake3", hash.as_str())
                .with("label", "x")
                .with("threads", 1e9),
        );
        assert_eq!(last_choice(dir.path(), &model, CPU), None);
        // A damaged stand-in: the choice without it.
        let stand_in = stand_in_json(choice.stand_in.as_ref().unwrap());
        for damaged in [
            stand_in.clone().with("held_inputs", "float32[1"),
            stand_in.clone().with("contract", 5.0),
        ] {
            planted(
                Json::object()
                    .with("format", RECORD_FORMAT)
                    .with("model_blake3", hash.as_str())
                    .with("label", "x")
                    .with("stand_in", damaged),
            );
            let last = last_choice(dir.path(), &model, CPU).unwrap();
            assert_eq!((last.label.as_str(), last.stand_in), ("x", None));
        }
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(last_choice(dir.path(), &model, CPU), None);
    }
}
