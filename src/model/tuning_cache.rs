//! max-autotune's choice remembered on disk, so that the second start of a
//! service costs what `none` costs: keyed by a BLAKE3 hash of the model
//! file's whole content, the device, the warm-up arguments' shapes, the error
//! tolerance, and perfopt's and libtorch's versions; any change is a new key
//! (a retrained model with the same size and modification time included).
//! The chosen form is saved beside the choice when the engine can save itself
//! (a frozen TorchScript module loads as fast as the original), so nothing is
//! frozen again either.
//!
//! Safe to share the way ccache's and pip's caches are:
//! - the folder must be owned by this user and writable by nobody else; a
//!   folder perfopt creates is made so (0700). Otherwise nothing is read from
//!   it or written to it, and the report says why (an entry's name can be
//!   computed by anyone who can read the model, so a folder others can write
//!   would let them choose what runs);
//! - files are written under random names created with O_EXCL|O_NOFOLLOW
//!   (`tempfile`), then renamed into place, so a planted symlink is never
//!   written through and a half-written file never has an entry's name;
//! - the module is saved into memory and written from Rust: a full disk is a
//!   failed write ("measured; not remembered"), never libtorch's zip writer
//!   throwing from a destructor (std::terminate);
//! - an entry records the model's hash and the saved module's; both are
//!   checked before anything the entry holds is loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache_folder::{trusted_folder, write_atomically};
use super::forms::FileIdentity;
use super::{hash_memo, load_hint, Compiled, Model};
use crate::autotune::Candidate;
use crate::engine::{Engine, Variant};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::graphs::GraphCache;
use crate::json::Json;
use crate::numerics::NumericFlags;
use crate::value::Value;

/// Bumped when an entry's fields change: entries of another format are misses.
const ENTRY_FORMAT: f64 = 2.0;

pub struct CacheKey {
    dir: PathBuf,
    hex: String,
    what: String,
    /// BLAKE3 of the model file's content, recorded in the entry.
    model_hash: String,
    device: crate::device::Device,
    /// Whether the choice is one a fresh load may build (load_hint.rs): not
    /// when it was made at the model's own thread count, which a fresh load
    /// does not have.
    loads_as_chosen: bool,
}

impl CacheKey {
    pub fn describe(&self) -> String {
        format!(
            "{} ({})",
            self.dir.join(format!("{}.json", self.hex)).display(),
            self.what
        )
    }

    fn choice_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.hex))
    }

    /// The saved module's file, named by the key and the module's own hash:
    /// two processes storing the same choice at once (whose saved bytes
    /// differ) each write their own file, and the entry that wins names the
    /// module it was written with.
    fn module_file(&self, module_hash: &str) -> String {
        format!(
            "{}-{}.pt",
            self.hex,
            &module_hash[..16.min(module_hash.len())]
        )
    }
}

fn cache_error(message: String) -> Error {
    Error::new(ErrorKind::Internal, message)
}

/// BLAKE3 of everything `content` holds (an open file), as hex.
pub(super) fn content_hash(content: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(content)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The cache key of this compile. The model's content is hashed now, so the
/// file must still be the one that was loaded: a model file replaced after
/// the load (a redeploy under a running service) would otherwise store the
/// loaded model's choice and frozen weights under the new file's hash, and a
/// fresh load of the new file would run the old weights.
pub fn key(dir: &str, model: &Model, args: &[Value]) -> Result<CacheKey> {
    let path = Path::new(model.path());
    let now = FileIdentity::of(path);
    if now.is_none() || now != model.file_identity {
        return Err(cache_error(format!(
            "the model file {} {} since the model was loaded, so its content is not known \
             to be what runs",
            model.path(),
            if now.is_none() { "is gone" } else { "changed" }
        )));
    }
    // Remembered by the files' identity (load_hint.rs), else read whole;
    // nothing is read from, or written to, a folder others could write.
    let trusted = trusted_folder(Path::new(dir)).is_ok();
    let hash = || super::forms::model_hash(path);
    let model_hash = match trusted {
        true => hash_memo::hash_remembering(Path::new(dir), path, hash)?,
        false => hash()?,
    };
    if FileIdentity::of(path) != now {
        return Err(cache_error(format!(
            "the model file {} changed while the tuning cache read it",
            model.path()
        )));
    }
    let shapes: Vec<String> = args.iter().map(Value::label).collect();
    // The thread count the options ask for, and the count max-autotune
    // measures up to (the optimizer's): a choice made under one is not the
    // answer under another.
    let threads = match model.options().threads {
        0 => format!(
            "threads measured up to {}",
            crate::runtime::settings::num_threads().unwrap_or(0)
        ),
        n => format!("threads {n}"),
    };
    let options = model.options();
    // What a candidate must stay within, the reduced forms' bound included
    // when they may be chosen.
    let tolerance = match options.precision {
        super::Precision::Fp32 => format!("tolerance {:e}", options.error_tolerance),
        super::Precision::AllowReduced => format!(
            "tolerance {:e}, reduced precision allowed with {}",
            options.error_tolerance,
            options.reduced_tolerance.describe()
        ),
    };
    let what = format!(
        "{} on {}, inputs [{}], {tolerance}, {threads}",
        model.name(),
        device_text(model.device()),
        shapes.join(", ")
    );
    let torch_version = crate::runtime::settings::torch_version();
    let mut hasher = blake3::Hasher::new();
    for part in [
        model_hash.as_str(),
        what.as_str(),
        crate::version::PERFOPT_VERSION,
        torch_version,
    ] {
        // Each part with its length, so that no two sequences of parts meet.
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    Ok(CacheKey {
        dir: PathBuf::from(dir),
        hex: hasher.finalize().to_hex()[..32].to_string(),
        what,
        model_hash,
        device: model.device(),
        loads_as_chosen: options.threads == 0,
    })
}

/// The folder this model's choices are remembered in: its own option's,
/// else the optimizer's.
pub fn folder(model: &Model, options: &super::ModelOptions) -> Option<String> {
    let own = options.tuning_cache_dir.as_ref();
    own.or(model.optimizer.config().tuning_cache_dir.as_ref())
        .cloned()
}

/// The device as a key names it ("cpu AMD EPYC").
pub(super) fn device_text(device: crate::device::Device) -> String {
    format!("{device} {}", crate::device::describe(device).name)
}

/// What is remembered of a choice.
pub struct CacheEntry {
    chosen: String,
    label: String,
    why: String,
    flags: Option<NumericFlags>,
    /// The thread count the choice runs at, when it was given one.
    threads: Option<usize>,
    candidates: Vec<Candidate>,
}

impl CacheEntry {
    pub fn of(compiled: &Compiled) -> CacheEntry {
        let flags = match &compiled.executor {
            Executor::Graphs(graphs) => Some(graphs.flags()),
            _ => None,
        }
        .flatten();
        CacheEntry {
            chosen: compiled.chosen.clone(),
            label: compiled.module_label.clone(),
            why: compiled.why.clone(),
            flags,
            threads: compiled.executor.engine().and_then(|e| e.threads()),
            candidates: compiled.candidates.clone(),
        }
    }

    fn to_json(&self) -> Json {
        Json::object()
            .with("chosen", self.chosen.as_str())
            .with("label", self.label.as_str())
            .with("why", self.why.as_str())
            .with("threads", self.threads.map(|t| t as u64))
            .with("graph_tf32", self.flags.map(|f| f.tf32))
            .with(
                "graph_cudnn_benchmark",
                self.flags.map(|f| f.cudnn_benchmark),
            )
            .with(
                "candidates",
                Json::Array(self.candidates.iter().map(Candidate::to_json).collect()),
            )
    }

    fn from_json(json: &Json) -> Option<CacheEntry> {
        let text = |key: &str| json.get(key).and_then(Json::as_str).map(str::to_string);
        let flag = |key: &str| match json.get(key) {
            Some(Json::Bool(b)) => Some(*b),
            _ => None,
        };
        let flags = match (flag("graph_tf32"), flag("graph_cudnn_benchmark")) {
            (Some(tf32), Some(cudnn_benchmark)) => Some(NumericFlags {
                tf32,
                cudnn_benchmark,
            }),
            _ => None,
        };
        Some(CacheEntry {
            chosen: text("chosen")?,
            label: text("label")?,
            why: text("why")?,
            flags,
            threads: json
                .get("threads")
                .and_then(Json::as_f64)
                .filter(|t| (1.0..=f64::from(crate::config::max_threads())).contains(t))
                .map(|t| t as usize),
            candidates: json
                .get("candidates")
                .map(Json::as_array)
                .unwrap_or(&[])
                .iter()
                .map(|c| Candidate {
                    name: c
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    p50_ms: c.get("p50_ms").and_then(Json::as_f64),
                    runs: c.get("runs").and_then(Json::as_f64).unwrap_or(0.0) as usize,
                    relative_error: c.get("relative_error").and_then(Json::as_f64),
                    precision: c
                        .get("precision")
                        .and_then(Json::as_str)
                        .filter(|p| *p != "fp32")
                        .map(str::to_string),
                    cosine: c.get("cosine").and_then(Json::as_f64),
                    within_tolerance: c.get("within_tolerance") == Some(&Json::Bool(true)),
                    note: c.get("note").and_then(Json::as_str).map(str::to_string),
                })
                .collect(),
        })
    }
}

/// Remembers a choice: its entry, its saved form when the engine saves one,
/// and (load_hint.rs) the model's last choice, which the next load builds,
/// with what lets a bundle's chosen form load alone, and the saved form
/// where it may load in the stead of the model's file: when it takes the
/// calls and batches of the model (`model_contract`; `None` where the
/// chosen form does not load at a start, a bundle's other form that does
/// not stand in).
pub fn store(
    key: &CacheKey,
    entry: &CacheEntry,
    engine: Option<&dyn Engine>,
    stand_in: Option<&crate::engine::bundle::StandIn>,
    model_contract: Option<&str>,
) -> Result<()> {
    trusted_folder(&key.dir)?;
    let mut module = None;
    // The TorchScript model as loaded ("as loaded", or a bundle's
    // "torchscript: as loaded") is the model file itself: nothing to save.
    if !entry.label.ends_with("as loaded") {
        if let Some(engine) = engine {
            // A form that cannot be saved is built again on a hit.
            if let Some(bytes) = engine.save()? {
                let hash = blake3::hash(&bytes).to_hex().to_string();
                let file = key.module_file(&hash);
                write_atomically(&key.dir.join(&file), &bytes)?;
                module = Some((file, hash));
            }
        }
    }
    let saved = match (&module, engine) {
        // Not for a model that keeps state: the module holds the state it
        // was saved with, where a form built from the file takes the live
        // state over (Model::install).
        (Some((file, hash)), Some(engine)) if !engine.writes_state() => {
            let contract = crate::engine::bundle::contract(engine);
            (Some(contract.as_str()) == model_contract).then(|| load_hint::SavedModule {
                file: file.clone(),
                blake3: hash.clone(),
                contract,
            })
        }
        _ => None,
    };
    let (module_file, module_hash) = module.unzip();
    let json = entry
        .to_json()
        .with("format", ENTRY_FORMAT)
        .with("model_blake3", key.model_hash.as_str())
        .with("module_file", module_file)
        .with("module_blake3", module_hash);
    write_atomically(&key.choice_path(), json.to_string().as_bytes())?;
    if key.loads_as_chosen {
        let last = load_hint::LastChoice {
            label: entry.label.clone(),
            threads: entry.threads,
            stand_in: stand_in.cloned(),
            saved,
        };
        load_hint::remember_choice(&key.dir, &key.model_hash, key.device, &last);
    }
    Ok(())
}

/// The saved module, if the entry has one and it is the module the entry
/// recorded (a damaged or replaced file is an error, never loaded).
fn checked_module(key: &CacheKey, json: &Json) -> Result<Option<PathBuf>> {
    let Some(recorded) = json.get("module_blake3").and_then(Json::as_str) else {
        return Ok(None);
    };
    // The file the entry names must be the one its key and hash name: an
    // entry cannot point perfopt at another file.
    let named = json.get("module_file").and_then(Json::as_str);
    if named != Some(key.module_file(recorded).as_str()) {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{} names its saved module {named:?}, not {}: damaged or replaced; nothing was \
                 loaded",
                key.choice_path().display(),
                key.module_file(recorded)
            ),
        ));
    }
    let path = key.dir.join(key.module_file(recorded));
    let actual = saved_module_hash(&key.dir, &path)?;
    if actual != recorded {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{} is not the module its entry recorded (BLAKE3 {actual}, recorded {recorded}): \
                 damaged or replaced; it was not loaded",
                path.display()
            ),
        ));
    }
    Ok(Some(path))
}

/// The content hash of a saved module in the cache's folder `dir`,
/// remembered by its identity too: a frozen text encoder is 90 MB to read.
/// A pipe or a device under its name is refused, never read.
pub(super) fn saved_module_hash(dir: &Path, path: &Path) -> Result<String> {
    hash_memo::hash_remembering(dir, path, || {
        let (opened, _) = crate::model_file::open_regular(path)?;
        content_hash(opened)
            .map_err(|err| cache_error(format!("reading {}: {err}", path.display())))
    })
}

/// The remembered choice, built; `None` when nothing is remembered.
pub fn load(key: &CacheKey, model: &Model) -> Result<Option<Compiled>> {
    trusted_folder(&key.dir)?;
    let Ok(text) = std::fs::read_to_string(key.choice_path()) else {
        return Ok(None);
    };
    let json = Json::parse(&text).map_err(|err| {
        cache_error(format!(
            "{} is not a cache entry ({err}): damaged",
            key.choice_path().display()
        ))
    })?;
    if json.get("format").and_then(Json::as_f64) != Some(ENTRY_FORMAT) {
        return Err(cache_error(format!(
            "{} is an entry of another format than this perfopt's ({ENTRY_FORMAT}): measured again",
            key.choice_path().display()
        )));
    }
    if json.get("model_blake3").and_then(Json::as_str) != Some(key.model_hash.as_str()) {
        return Err(cache_error(format!(
            "{} was made for another model file (its recorded hash differs)",
            key.choice_path().display()
        )));
    }
    let entry = CacheEntry::from_json(&json).ok_or_else(|| {
        cache_error(format!(
            "{} lacks a field of a cache entry (chosen, label, why): damaged",
            key.choice_path().display()
        ))
    })?;
    if entry.flags.is_some() && model.device().kind != crate::device::DeviceKind::Cuda {
        return Err(cache_error(format!(
            "{} holds a CUDA graph choice, and this model runs on {}: damaged",
            key.choice_path().display(),
            model.device()
        )));
    }
    // A bundle's choice names its form, loaded now if it is not the one
    // loaded first (nothing else of the bundle is loaded).
    let (original, label) = model.form_of_label(&entry.label)?;
    // The form is made at the count it runs at (see Model::built_form).
    let source = model.at_threads(original.clone(), entry.threads)?;
    // The form as it runs now (as loaded, or built at load as this choice
    // was: load_hint.rs) is not built again.
    let engine: Arc<dyn Engine> = if label == original.as_loaded_label() || source.is_form(label) {
        source
    } else {
        let variant = Variant::new(label);
        let saved = match checked_module(key, &json)? {
            Some(saved) => source.load_saved(saved.to_str().unwrap_or_default(), &variant)?,
            None => None,
        };
        match saved {
            Some(form) => form,
            None => {
                if !original.builds_form(label) {
                    return Err(cache_error(format!(
                        "{} names a form this model does not have ({:?}): damaged",
                        key.choice_path().display(),
                        entry.label
                    )));
                }
                source.build_variant(&variant)?
            }
        }
    };
    let executor = match entry.flags {
        Some(flags) => Executor::Graphs(Arc::new(model.graphs_over_flags(engine, flags))),
        None => Executor::Plain(engine),
    };
    Ok(Some(Compiled {
        executor,
        module_label: entry.label.clone(),
        chosen: entry.chosen.clone(),
        why: format!("remembered from an earlier tuning: {}", entry.why),
        candidates: entry.candidates,
        tuning: Some(
            Json::object()
                .with("cache", key.describe())
                .with("cache_result", "remembered choice used: nothing measured"),
        ),
        ..Compiled::as_loaded(model.original.clone())
    }))
}

impl Model {
    pub(super) fn graphs_over_flags(
        &self,
        engine: Arc<dyn Engine>,
        flags: NumericFlags,
    ) -> GraphCache {
        let options = self.options();
        GraphCache::new(
            engine,
            self.device.index.unwrap_or(0) as i32,
            Some(flags),
            options.graph_warmup_runs,
            options.graph_cache_size,
        )
    }
}
