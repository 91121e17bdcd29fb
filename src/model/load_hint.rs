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
//!   Where the choice is a frozen TorchScript module the cache saved, that
//!   module loads in the stead of the model's file (a SavedModule);
//! - the content hash of the model's files by their identity (hash_memo.rs),
//!   so that neither that load nor the compile after it reads every byte of
//!   a large bundle again (270 MB for a text encoder's three forms).
//!
//! Both records live in the tuning cache's folder, which only this user may
//! write, and a hint only ever picks among the model's own forms and
//! settings (or the module saved for the model's own content): a damaged
//! one is ignored and the model loads as usual.

use std::path::{Path, PathBuf};

use super::hash_memo::{is_hash, read_record, record_path, remembered_hash, RECORD_FORMAT};
use crate::device::Device;
use crate::engine::bundle::StandIn;
use crate::engine::inputs;
use crate::engine::{LoadContext, LoadHint, Loaded, SavedForm};
use crate::error::Result;
use crate::json::Json;
use crate::optimizer::Optimizer;

/// The last choice remembered for a model: its label ("onnx: graph
/// optimisation extended" for a bundle's form) and thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct LastChoice {
    pub label: String,
    pub threads: Option<usize>,
    /// For a bundle whose chosen form may load alone.
    pub stand_in: Option<StandIn>,
    /// The chosen form as the tuning cache saved it, when it did.
    pub saved: Option<SavedModule>,
}

/// The tuning cache's saved module of the chosen form (a frozen TorchScript
/// module: tuning_cache.rs), which the next load loads in the stead of the
/// model's file (or its bundle form's) where its bytes are still the ones
/// recorded and it takes the calls and batches the model took: a 90 MB
/// text encoder then loads once, not as its file and then as its frozen
/// module.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModule {
    /// Its file's name in the tuning cache's folder.
    pub file: String,
    pub blake3: String,
    /// The model's contract when it was chosen (same_model::contract).
    pub contract: String,
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
        .with("stand_in", choice.stand_in.as_ref().map(stand_in_json))
        .with("saved", choice.saved.as_ref().map(saved_json));
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

fn saved_json(saved: &SavedModule) -> Json {
    Json::object()
        .with("file", saved.file.as_str())
        .with("blake3", saved.blake3.as_str())
        .with("contract", saved.contract.as_str())
}

/// A saved module's record: a file name of the folder's own (never a path
/// elsewhere) and a hash.
fn read_saved(json: &Json) -> Option<SavedModule> {
    let text = |key: &str| json.get(key).and_then(Json::as_str);
    let file = text("file")?;
    let blake3 = text("blake3").filter(|h| is_hash(h))?;
    // Named as the cache names it (tuning_cache.rs CacheKey::module_file):
    // an entry's key, then its own hash.
    let key = file.strip_suffix(&format!("-{}.pt", &blake3[..16]))?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(SavedModule {
        file: file.to_string(),
        blake3: blake3.to_string(),
        contract: text("contract")?.to_string(),
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
        // A damaged stand-in or saved module costs only what it saves.
        stand_in: json.get("stand_in").and_then(read_stand_in),
        saved: json.get("saved").and_then(read_saved),
    })
}

/// Remembers `without` (the last choice less what was refused) in the
/// stead of `last`, where it differs (best effort).
fn forget(dir: &Path, path: &Path, device: Device, last: &LastChoice, without: &LastChoice) {
    if without == last {
        return;
    }
    if let Some(hash) = remembered_hash(dir, path) {
        remember_choice(dir, &hash, device, without);
    }
}

/// The saved module's file, when its bytes are the ones recorded (its hash
/// remembered by identity like a model's).
fn checked_saved(dir: &Path, saved: &SavedModule) -> Option<std::path::PathBuf> {
    let path = dir.join(&saved.file);
    match super::tuning_cache::saved_module_hash(dir, &path) {
        Ok(hash) if hash == saved.blake3 => Some(path),
        Ok(_) => {
            log::info!(
                "{} is not the module the tuning cache recorded: damaged or replaced; not loaded",
                path.display()
            );
            None
        }
        Err(err) => {
            log::info!("the tuning cache's saved module is not loaded: {err}");
            None
        }
    }
}

/// What [`load`] did.
pub(super) struct Started {
    pub loaded: Loaded,
    /// For the report: what the tuning cache's last choice changed.
    pub note: Option<String>,
    /// Where the module the cache saved was loaded in a file's stead.
    pub in_stead_of: Option<super::in_stead::InStead>,
}

impl Started {
    fn as_usual(loaded: Loaded) -> Started {
        Started {
            loaded,
            note: None,
            in_stead_of: None,
        }
    }
}

/// Loads the model at `path` for `optimizer`: as its tuning last chose
/// when the optimizer's tuning cache remembers a choice for it (a note for
/// the report says what that changed), as usual otherwise.
pub(super) fn load(optimizer: &Optimizer, path: &str) -> Result<Started> {
    let context = super::forms::load_context(optimizer, path);
    let device = optimizer.device();
    // A choice at more threads than the optimizer's (made under a model's
    // own count) is not what a load at the optimizer's count may build.
    let dir_and_last = optimizer
        .config()
        .tuning_cache_dir
        .as_deref()
        .map(Path::new)
        .and_then(|dir| Some((dir, last_choice(dir, Path::new(path), device)?)))
        .filter(|(_, last)| last.threads.is_none_or(|t| t <= context.threads));
    let Some((dir, last)) = dir_and_last else {
        return Ok(Started::as_usual(crate::engine::load(&context)?));
    };
    let saved = last
        .saved
        .as_ref()
        .and_then(|saved| Some((checked_saved(dir, saved)?, saved)));
    let hint = LoadHint {
        label: &last.label,
        threads: last.threads,
        stand_in: last.stand_in.as_ref(),
        saved: saved.as_ref().map(|(file, saved)| SavedForm {
            path: file,
            contract: &saved.contract,
        }),
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
            let loaded = crate::engine::load(&context)?;
            if saved.is_some() {
                // The saved module (torchscript.rs load_saved_in_stead) is
                // what failed where one was given: not to be loaded for
                // nothing again.
                let without = LastChoice {
                    saved: None,
                    ..last.clone()
                };
                forget(dir, Path::new(path), device, &last, &without);
            }
            return Ok(Started::as_usual(loaded));
        }
    };
    let mut without = last.clone();
    if loaded.bundle.as_ref().is_some_and(|b| b.stand_in_refused) {
        // Else each start would load that form and let it go again (and
        // check the module saved for it, which no longer loads first).
        without.stand_in = None;
        without.saved = None;
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
    let as_chosen = label.is_some_and(|label| loaded.engine.is_form(label));
    if as_chosen && threads_as_chosen {
        notes.push(format!(
            "built as the tuning cache last chose: {}{}",
            last.describe(),
            match saved.is_some() {
                true => " (the module it saved, loaded in the stead of the model's file)",
                false => "",
            }
        ));
    }
    if saved.is_some() && label.is_some() && !as_chosen {
        // Its form loaded, not from the module: refused (see torchscript.rs
        // load_saved_in_stead), and not to be loaded for nothing again.
        without.saved = None;
    }
    forget(dir, Path::new(path), device, &last, &without);
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    if let Some(note) = &note {
        log::info!("{path}: {note}");
    }
    let in_stead_of = match (&saved, label) {
        (Some((module, saved)), Some(label)) if as_chosen => Some(super::in_stead::InStead::new(
            match &loaded.bundle {
                Some(bundle) => bundle.loaded.path.clone(),
                None => PathBuf::from(path),
            },
            module.clone(),
            saved.blake3.clone(),
            label.to_string(),
        )),
        _ => None,
    };
    Ok(Started {
        loaded,
        note,
        in_stead_of,
    })
}

#[cfg(test)]
mod tests {
    use super::super::hash_memo::remember_hash;
    use super::super::hash_memo::tests::{aged, written_model};
    use super::*;

    const CPU: Device = Device {
        kind: crate::device::DeviceKind::Cpu,
        index: None,
    };

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
            saved: Some(SavedModule {
                file: format!("{}-{}.pt", "e".repeat(32), "d".repeat(16)),
                blake3: "d".repeat(64),
                contract: "methods forward(1..1: [Tensor]) -> [Tensor]".to_string(),
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
        // A damaged stand-in, or a saved module named by a path elsewhere,
        // without its hash, or named for another hash: the choice without
        // it.
        let stand_in = stand_in_json(choice.stand_in.as_ref().unwrap());
        let saved = saved_json(choice.saved.as_ref().unwrap());
        for (field, damaged) in [
            (
                "stand_in",
                stand_in.clone().with("held_inputs", "float32[1"),
            ),
            ("stand_in", stand_in.clone().with("contract", 5.0)),
            ("saved", saved.clone().with("file", "../../elsewhere.pt")),
            ("saved", saved.clone().with("file", "/etc/passwd")),
            ("saved", saved.clone().with("blake3", "d")),
            (
                "saved",
                saved.clone().with("blake3", "c".repeat(64).as_str()),
            ),
        ] {
            planted(
                Json::object()
                    .with("format", RECORD_FORMAT)
                    .with("model_blake3", hash.as_str())
                    .with("label", "x")
                    .with(field, damaged),
            );
            let last = last_choice(dir.path(), &model, CPU).unwrap();
            assert_eq!(
                (last.label.as_str(), last.stand_in, last.saved),
                ("x", None, None),
                "{field}"
            );
        }
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(last_choice(dir.path(), &model, CPU), None);
    }
}
