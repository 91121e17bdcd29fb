//! The model-format seam: the model core runs an [`Engine`] (call a method,
//! build its optimised forms where the format has them, run at a thread
//! count, save and restore its state) without knowing which format it came
//! from. Each format is one engine, found by a probe of the file's first
//! bytes ([`load`]); CUDA graphs, batching, measurement and tuning sit on top
//! of any. No file outside this folder names a format
//! (tests/architecture.py checks it); docs/adding-an-engine.md says how to
//! add one.

#[cfg(feature = "torch")]
pub(crate) mod aoti;
#[cfg(feature = "torch")]
mod aoti_inputs;
#[cfg(feature = "torch")]
mod archive;
pub(crate) mod bundle;
mod executorch;
pub(crate) mod inputs;
mod loading;
mod manifest;
pub(crate) mod onnx;
#[cfg(feature = "torch")]
mod package;
mod same_model;
mod schema;
mod threaded;
#[cfg(feature = "torch")]
pub(crate) mod torchscript;
#[cfg(feature = "torch")]
mod unpacked;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::value::Value;

pub use inputs::Inputs;
pub use loading::{LoadContext, LoadHint, Loaded, SavedForm};
pub use schema::{Argument, MethodSchema, TypeKind};

/// A model file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// torch.jit.save: a zip with `<name>/data.pkl` and `<name>/code/`.
    TorchScript,
    /// torch._inductor.aoti_compile_and_package: a zip with compiled kernels.
    Aoti,
    /// An ONNX model (torch.onnx.export), run by ONNX Runtime.
    Onnx,
    /// An ExecuTorch program (.pte), run by ExecuTorch's runtime.
    ExecuTorch,
}

impl Format {
    const ALL: [Format; 4] = [
        Format::TorchScript,
        Format::Aoti,
        Format::Onnx,
        Format::ExecuTorch,
    ];

    /// The format [`Format::as_str`] names.
    pub fn named(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::TorchScript => "torchscript",
            Format::Aoti => "aotinductor",
            Format::Onnx => "onnx",
            Format::ExecuTorch => "executorch",
        }
    }

    /// Whether this perfopt runs the format on the host's CPU whatever the
    /// device (its runtime's GPU providers are not used here).
    pub fn cpu_only(self) -> bool {
        matches!(self, Format::Onnx | Format::ExecuTorch)
    }

    /// Whose threads the format's calls run on. A pool's threads spin for a
    /// while after a call, which slows a call on another pool's threads
    /// (max-autotune's rounds, src/autotune/rounds.rs); TorchScript and
    /// packages share libtorch's OpenMP threads, and ONNX Runtime's
    /// sessions, each with a pool of its own, did not slow each other
    /// (a text encoder at 2 threads: 7.30 ms after another session, 7.19
    /// after itself).
    pub fn thread_pool(self) -> ThreadPool {
        match self {
            Format::TorchScript | Format::Aoti => ThreadPool::OpenMp,
            Format::Onnx => ThreadPool::OnnxRuntime,
            Format::ExecuTorch => ThreadPool::ExecuTorch,
        }
    }
}

/// The threads a format's calls run on ([`Format::thread_pool`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadPool {
    OpenMp,
    OnnxRuntime,
    ExecuTorch,
}

/// An optimised form an engine can build of itself, named by the engine
/// ("frozen", "graph optimisation all, parallel"): the core compares forms
/// by name, reports them, and the tuning cache remembers the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    label: String,
}

impl Variant {
    pub fn new(label: impl Into<String>) -> Variant {
        Variant {
            label: label.into(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A saved state, opaque to the core (each engine knows its own).
// Read back by engines with state (TorchScript's); the lite build has none.
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub struct State(pub(crate) Box<dyn Any + Send + Sync>);

/// What the model core needs of a format.
pub trait Engine: Send + Sync {
    fn format(&self) -> Format;

    /// Every method, with its schema.
    fn methods(&self) -> &[MethodSchema];

    /// Calls a method with arguments of any kind the format takes.
    fn call(&self, method: &str, args: &[Value]) -> Result<Value>;

    /// The optimised forms `default` tries, best first, each failure falling
    /// back to the next (none for a format that is compiled already).
    fn variants(&self) -> Vec<Variant> {
        Vec::new()
    }

    /// What the model as loaded is called in reports and the tuning cache.
    fn as_loaded_label(&self) -> String {
        match self.variants().is_empty() {
            true => "as compiled".to_string(),
            false => "as loaded".to_string(),
        }
    }

    /// What `default` does on this engine, as its report says it.
    fn default_why(&self) -> String {
        match self.variants().first() {
            None => format!(
                "default: the {} model is compiled already; it runs as it is",
                self.format().as_str()
            ),
            Some(best) => format!("default: {}", best.label()),
        }
    }

    /// The forms max-autotune measures besides the model as loaded: by
    /// default those `default` tries.
    fn tuning_variants(&self) -> Vec<Variant> {
        self.variants()
    }

    /// Whether this engine as it is runs the form `label` names (its own
    /// as-loaded label; an engine that builds a tuning candidate at load says
    /// so for the candidate's label): a remembered choice naming it runs this
    /// engine, not a second one built the same way.
    fn is_form(&self, label: &str) -> bool {
        label == self.as_loaded_label()
    }

    /// Whether [`Engine::build_variant`] builds the form `label` names: a
    /// remembered choice naming anything else is damaged.
    fn builds_form(&self, label: &str) -> bool {
        self.tuning_variants().contains(&Variant::new(label))
    }

    fn build_variant(&self, variant: &Variant) -> Result<Arc<dyn Engine>> {
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "{} models have no {} form",
                self.format().as_str(),
                variant.label()
            ),
        ))
    }

    /// The state methods may change between calls (`None`: nothing to save,
    /// or a format whose state perfopt does not track).
    fn save_state(&self) -> Result<Option<State>> {
        Ok(None)
    }

    fn restore_state(&self, _state: &State) -> Result<()> {
        Ok(())
    }

    /// Whether calls change the engine's state (a TorchScript method that
    /// writes an attribute): such an engine runs one call at a time.
    fn writes_state(&self) -> bool {
        false
    }

    /// Takes over `from`'s current state (another form of the same model),
    /// so that a recompiled model carries on where the last form stopped.
    fn adopt_state(&self, _from: &dyn Engine) -> Result<()> {
        Ok(())
    }

    /// Whether the engine's state still equals `state`.
    fn state_equals(&self, _state: &State) -> Result<bool> {
        Ok(true)
    }

    /// This form as bytes that load as fast as the original (the tuning
    /// cache writes them); `None` where the format cannot save itself.
    fn save(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// A form [`Engine::save`] wrote, loaded from `path` (checked by the
    /// tuning cache) as `variant`; `None`: the format saves nothing, and the
    /// form is built again.
    fn load_saved(&self, _path: &str, _variant: &Variant) -> Result<Option<Arc<dyn Engine>>> {
        Ok(None)
    }

    /// This form at `threads` threads per call, for an engine that keeps its
    /// own thread pools (an ONNX Runtime session); `None`: the engine's
    /// threads are the calling thread's OpenMP count (libtorch's), which
    /// [`at_threads`] sets around each call.
    fn with_threads(&self, _threads: usize) -> Result<Option<Arc<dyn Engine>>> {
        Ok(None)
    }

    /// The threads a call uses, when this form was given a count.
    fn threads(&self) -> Option<usize> {
        None
    }

    /// Why a call's thread count is not the model's to set (a runtime whose
    /// pool is one per process); `None`: it is, and max-autotune measures it.
    fn threads_fixed(&self) -> Option<&'static str> {
        None
    }

    /// What `forward` takes, input by input, where the form fixes it
    /// (inputs.rs): a form that says nothing never stands in for another.
    fn inputs(&self) -> Inputs {
        Inputs::Unknown
    }

    /// The largest batch (dimension 0) the model accepts, when it has one
    /// (a package compiled with bounds); batching stays within it.
    fn batch_limit(&self) -> Option<i64> {
        None
    }

    /// The one batch size the model runs (a package exported with a static
    /// batch); run_batched pads its last chunk to it.
    fn fixed_batch(&self) -> Option<i64> {
        None
    }

    /// Where the engine's working memory comes from, when libtorch's
    /// allocator (which recommend_batch counts) does not see it: ONNX
    /// Runtime's own arena.
    fn own_allocator(&self) -> Option<&'static str> {
        None
    }

    /// Format-specific facts for the model report.
    fn describe(&self) -> Json {
        Json::object().with("format", self.format().as_str())
    }
}

/// The engines this library has, for the optimizer's report: each format,
/// whether it can run here, and its runtime (a runtime loaded at the first
/// model of its format is not loaded to tell).
pub fn engines() -> Json {
    Json::Array(
        Format::ALL
            .iter()
            .map(|&format| {
                let described = match format {
                    Format::TorchScript | Format::Aoti => libtorch_engines(),
                    Format::Onnx => Json::object().with("available", Json::Null).with(
                        "runtime",
                        "libonnxruntime, looked for at the first ONNX model",
                    ),
                    Format::ExecuTorch => executorch::availability(),
                };
                described.with("format", format.as_str())
            })
            .collect(),
    )
}

/// TorchScript's and AOTInductor's runtime, in this build.
fn libtorch_engines() -> Json {
    match cfg!(feature = "torch") {
        true => Json::object()
            .with("available", true)
            .with("runtime", "libtorch (linked)"),
        false => Json::object()
            .with("available", false)
            .with("runtime", "none: the build without libtorch"),
    }
}

/// `engine` at `threads` threads per call: its own form when it keeps its
/// own pools, else a form that sets the calling thread's OpenMP count
/// around each call.
pub fn at_threads(engine: &Arc<dyn Engine>, threads: usize) -> Result<Arc<dyn Engine>> {
    if engine.threads() == Some(threads) || engine.threads_fixed().is_some() {
        return Ok(engine.clone());
    }
    match engine.with_threads(threads)? {
        Some(form) => Ok(form),
        None => Ok(Arc::new(threaded::Threaded::new(engine.clone(), threads))),
    }
}

/// One format's way in: a probe of the file's first bytes and a loader of
/// the open file.
struct Way {
    probe: fn(&[u8]) -> bool,
    load: fn(std::fs::File, u64, &LoadContext) -> Result<Arc<dyn Engine>>,
    /// How the format's files start, for the message when none matches.
    looks_like: &'static str,
}

const WAYS: [Way; 3] = [
    Way {
        probe: zip_probe,
        load: load_zip_format,
        looks_like: "TorchScript files (torch.jit.save) and AOTInductor packages (.pt2) are zip \
                     archives",
    },
    Way {
        probe: onnx::probe,
        load: onnx::load,
        looks_like: "ONNX models (.onnx) are protobuf ModelProto messages",
    },
    Way {
        probe: executorch::probe,
        load: executorch::load,
        looks_like: "ExecuTorch programs (.pte) start with an ET12 flatbuffer",
    },
];

/// Bytes the probes look at.
const HEAD: usize = 16;

/// Loads a model file in whichever format its contents say, or a bundle's
/// first form that loads (or the form the hint names, where it may stand in
/// for it).
pub fn load(context: &LoadContext) -> Result<Loaded> {
    match bundle::is_folder(Path::new(context.path)) {
        true => bundle::load(context),
        false => load_file(context),
    }
}

/// The files whose content is the model: the file, or a bundle's manifest
/// and forms (the tuning cache hashes them).
pub fn content_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    match bundle::is_folder(path) {
        true => bundle::content_files(path),
        false => Ok(vec![path.to_path_buf()]),
    }
}

/// Loads a model file in whichever format its contents say.
fn load_file(context: &LoadContext) -> Result<Loaded> {
    use std::os::unix::fs::FileExt;
    let (file, size) = crate::model_file::open_regular(Path::new(context.path))?;
    let mut head = [0u8; HEAD];
    let mut read = 0;
    while read < HEAD {
        match file.read_at(&mut head[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(Error::new(
                    ErrorKind::LoadFailed,
                    format!("cannot read {}: {err}", context.path),
                ))
            }
        }
    }
    let Some(way) = WAYS.iter().find(|w| (w.probe)(&head[..read])) else {
        let formats: Vec<&str> = WAYS.iter().map(|w| w.looks_like).collect();
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{} is not a model file: {}, and this one ({size} bytes) starts like neither",
                context.path,
                formats.join("; ")
            ),
        ));
    };
    Ok(Loaded {
        engine: (way.load)(file, size, context)?,
        file_size: size,
        bundle: None,
    })
}

/// TorchScript files and AOTInductor packages are zip archives (the lite
/// build recognises them to say it cannot run them).
fn zip_probe(head: &[u8]) -> bool {
    head.starts_with(&crate::zip::ZIP_LOCAL_HEADER)
}

/// TorchScript files and AOTInductor packages: zip archives told apart by
/// their entries.
#[cfg(feature = "torch")]
fn load_zip_format(
    file: std::fs::File,
    size: u64,
    context: &LoadContext,
) -> Result<Arc<dyn Engine>> {
    if let Some((hint, saved)) = context.hint.and_then(|h| Some((h, h.saved?))) {
        return torchscript::load_saved_in_stead(&hint, saved, context);
    }
    let path = context.path;
    let opened = archive::open_checked(file, size, Path::new(path))?;
    // libtorch reads the file perfopt checked (by its descriptor), not the
    // path again; messages name the path.
    let source = opened.path_for_loaders();
    let checked = &opened.inspected;
    let device = context.device;
    Ok(match checked.format {
        Format::Aoti => {
            let runners = context.cores.clamp(1, 8);
            Arc::new(aoti::Aoti::load(source, path, checked, device, runners)?)
        }
        _ => Arc::new(torchscript::TorchScript::load(source, path, device)?),
    })
}

/// TorchScript files and AOTInductor packages need libtorch.
#[cfg(not(feature = "torch"))]
fn load_zip_format(_: std::fs::File, _: u64, context: &LoadContext) -> Result<Arc<dyn Engine>> {
    Err(Error::new(
        ErrorKind::UnsupportedModel,
        format!(
            "{} is a zip archive (a TorchScript file or an AOTInductor package), which runs on \
             libtorch: {}; load its .onnx or .pte export, or use the full library",
            context.path,
            crate::runtime::WITHOUT_LIBTORCH
        ),
    ))
}
