//! max-autotune's choice remembered on disk, so that the second start of a
//! service costs what `none` costs: keyed by the model file (path, size,
//! modification time and a sample of its bytes), the device, the warm-up
//! arguments' shapes, the error tolerance, and perfopt's and libtorch's
//! versions; any change is a new key. The chosen form is saved beside the
//! choice when the engine can save itself (a frozen TorchScript module loads
//! as fast as the original), so nothing is frozen again either.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Compiled, Model};
use crate::autotune::Candidate;
use crate::engine::torchscript::TorchScript;
use crate::engine::{Engine, Format, Variant};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::Executor;
use crate::graphs::GraphCache;
use crate::json::Json;
use crate::numerics::NumericFlags;
use crate::value::Value;

/// Bytes read from each end of the model file for the key.
const SAMPLE: u64 = 1 << 20;

pub struct CacheKey {
    dir: PathBuf,
    hex: String,
    what: String,
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

    fn module_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pt", self.hex))
    }
}

fn file_identity(path: &Path, hasher: &mut DefaultHasher) -> Result<()> {
    let failed = |err: std::io::Error| {
        Error::new(
            ErrorKind::LoadFailed,
            format!("reading {} for the tuning cache: {err}", path.display()),
        )
    };
    let canonical = std::fs::canonicalize(path).map_err(failed)?;
    let metadata = std::fs::metadata(&canonical).map_err(failed)?;
    canonical.hash(hasher);
    metadata.len().hash(hasher);
    if let Ok(modified) = metadata.modified() {
        modified.hash(hasher);
    }
    let mut file = std::fs::File::open(&canonical).map_err(failed)?;
    let mut sample = vec![0u8; SAMPLE.min(metadata.len()) as usize];
    file.read_exact(&mut sample).map_err(failed)?;
    sample.hash(hasher);
    if metadata.len() > SAMPLE {
        file.seek(SeekFrom::Start(metadata.len() - SAMPLE.min(metadata.len())))
            .and_then(|_| file.read_exact(&mut sample))
            .map_err(failed)?;
        sample.hash(hasher);
    }
    Ok(())
}

pub fn key(dir: &str, model: &Model, args: &[Value], tolerance: f64) -> Result<CacheKey> {
    let mut hasher = DefaultHasher::new();
    file_identity(Path::new(model.path()), &mut hasher)?;
    let device = crate::device::describe(model.device());
    let shapes: Vec<String> = args.iter().map(Value::label).collect();
    let what = format!(
        "{} on {} {}, inputs [{}], tolerance {tolerance:e}",
        model.name(),
        model.device(),
        device.name,
        shapes.join(", ")
    );
    what.hash(&mut hasher);
    crate::version::PERFOPT_VERSION.hash(&mut hasher);
    crate::torch::settings::torch_version().hash(&mut hasher);
    Ok(CacheKey {
        dir: PathBuf::from(dir),
        hex: format!("{:016x}", hasher.finish()),
        what,
    })
}

/// What is remembered of a choice.
pub struct CacheEntry {
    chosen: String,
    label: String,
    why: String,
    flags: Option<NumericFlags>,
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
            candidates: compiled.candidates.clone(),
        }
    }

    fn to_json(&self) -> Json {
        Json::object()
            .with("chosen", self.chosen.as_str())
            .with("label", self.label.as_str())
            .with("why", self.why.as_str())
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
                    within_tolerance: c.get("within_tolerance") == Some(&Json::Bool(true)),
                    note: c.get("note").and_then(Json::as_str).map(str::to_string),
                })
                .collect(),
        })
    }
}

fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    write(&temporary)?;
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        Error::new(
            ErrorKind::Internal,
            format!("renaming into {}: {err}", path.display()),
        )
    })
}

pub fn store(key: &CacheKey, entry: &CacheEntry, engine: Option<&dyn Engine>) -> Result<()> {
    std::fs::create_dir_all(&key.dir).map_err(|err| {
        Error::new(
            ErrorKind::Internal,
            format!("creating {}: {err}", key.dir.display()),
        )
    })?;
    if entry.label != "as loaded" {
        if let Some(engine) = engine {
            // A form that cannot be saved is built again on a hit.
            let saved = write_atomically(&key.module_path(), |path| match engine.save(path)? {
                true => Ok(()),
                false => Err(Error::new(ErrorKind::Internal, "this form cannot be saved")),
            });
            if saved.is_err() {
                let _ = std::fs::remove_file(key.module_path());
            }
        }
    }
    write_atomically(&key.choice_path(), |path| {
        std::fs::write(path, entry.to_json().to_string()).map_err(|err| {
            Error::new(
                ErrorKind::Internal,
                format!("writing {}: {err}", path.display()),
            )
        })
    })
}

/// The remembered choice, built; `None` when nothing is remembered.
pub fn load(key: &CacheKey, model: &Model) -> Result<Option<Compiled>> {
    let Ok(text) = std::fs::read_to_string(key.choice_path()) else {
        return Ok(None);
    };
    let entry = Json::parse(&text)
        .ok()
        .as_ref()
        .and_then(CacheEntry::from_json)
        .ok_or_else(|| Error::new(ErrorKind::Internal, "a damaged cache entry"))?;
    let original = model.original.clone();
    let engine: Arc<dyn Engine> = if entry.label == "as loaded" || entry.label == "as compiled" {
        original
    } else {
        let saved = key.module_path();
        match (model.format(), saved.exists()) {
            (Format::TorchScript, true) => Arc::new(TorchScript::load_form(
                saved.to_str().unwrap_or_default(),
                model.device().to_tch(),
                &entry.label,
            )?),
            _ => {
                let variant = original
                    .variants()
                    .iter()
                    .copied()
                    .find(|v: &Variant| v.label() == entry.label)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Internal,
                            format!("unknown form {:?}", entry.label),
                        )
                    })?;
                original.build_variant(variant)?
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
