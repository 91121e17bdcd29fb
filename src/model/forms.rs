//! A bundle's forms (src/engine/bundle.rs) as the model sees them: the form
//! loaded, and the others, loaded the first time max-autotune measures them
//! or a remembered choice names one, then kept. A bundle's candidates are
//! labelled with their form ("onnx: graph optimisation extended"), which is
//! how a remembered choice finds its form again. Here too what a model's
//! content is, a file's or a bundle's: its hash and its identity (the tuning
//! cache's key, and its check that what was hashed is what was loaded).

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::tuning_cache::content_hash;
use super::{Model, ModelOptions, Precision};
use crate::engine::bundle::{self, Bundle, FormFile, StandIn};
use crate::engine::inputs::{self, InputSpec, Inputs};
use crate::engine::{Engine, LoadContext};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::optimizer::Optimizer;

/// A form max-autotune measures, with its engine as loaded.
pub(super) struct FormEngine {
    /// Its name ("onnx", "torchscript (bf16)"); `None`: a model that is not
    /// a bundle.
    pub name: Option<String>,
    /// A reduced precision ("bf16"), judged by the reduced tolerance.
    pub precision: Option<String>,
    pub engine: Arc<dyn Engine>,
}

pub struct Forms {
    loaded: String,
    /// The form the loaded one stands in for (the tuning cache's choice,
    /// loaded alone): the reference max-autotune measures errors against.
    stands_in_for: Option<String>,
    /// What the model holds each call to, whichever form runs: what the
    /// form loaded takes where it fixes that, or what the form it stands in
    /// for took (bundle::StandIn).
    held_inputs: Option<Vec<InputSpec>>,
    others: Vec<FormFile>,
    /// The other forms loaded so far, by format name.
    engines: Mutex<Vec<(String, Arc<dyn Engine>)>>,
    notes: Vec<String>,
}

impl Forms {
    /// `inputs`: what the form loaded takes.
    pub fn new(bundle: Bundle, inputs: &Inputs) -> Forms {
        // A form max-autotune chooses later may take more (a traced module
        // beside an ONNX graph): the model still takes what it took.
        let own = inputs::stand_in(&Inputs::Any, inputs).flatten();
        Forms {
            loaded: bundle.loaded.name(),
            stands_in_for: bundle.stands_in_for,
            held_inputs: bundle.held_inputs.or(own),
            others: bundle.others,
            engines: Mutex::new(Vec::new()),
            notes: bundle.notes,
        }
    }

    /// What the model takes: what it holds calls to, else what the form
    /// loaded (`loaded`) takes.
    fn model_inputs(&self, loaded: &dyn Engine) -> Inputs {
        match &self.held_inputs {
            Some(specs) => Inputs::Fixed(specs.clone()),
            None => loaded.inputs(),
        }
    }

    /// The inputs each call is held to, and the form that took them.
    pub(super) fn held_inputs(&self) -> Option<(&[InputSpec], &str)> {
        let form = self.stands_in_for.as_deref().unwrap_or(&self.loaded);
        Some((self.held_inputs.as_deref()?, form))
    }

    /// For the model report: the forms, the one loaded first, and notes.
    pub fn to_json(&self) -> Json {
        let mut names = vec![Json::from(self.loaded.as_str())];
        names.extend(self.others.iter().map(|f| Json::from(f.name())));
        Json::object()
            .with("forms", Json::Array(names))
            .with("loaded", self.loaded.as_str())
            .with("stands_in_for", self.stands_in_for.as_deref())
            .with(
                "notes",
                Json::Array(self.notes.iter().map(|n| Json::from(n.as_str())).collect()),
            )
    }
}

/// A candidate's label naming its form when the model is a bundle.
pub fn form_label(form: Option<&str>, label: &str) -> String {
    match form {
        Some(form) => bundle::form_label(form, label),
        None => label.to_string(),
    }
}

/// BLAKE3 over a model's content: the file's, or for a bundle each file's
/// (the manifest's and every form's), named. Each file is opened as a model
/// file is (a pipe or a device listed as a form is refused, never read).
pub fn model_hash(path: &Path) -> Result<String> {
    let files = crate::engine::content_files(path)?;
    let read = |file: &Path| -> Result<String> {
        if !file.exists() {
            return Ok("missing".to_string()); // a form that cannot be chosen
        }
        let (opened, _) = crate::model_file::open_regular(file)?;
        content_hash(opened).map_err(|err| {
            Error::new(
                ErrorKind::Internal,
                format!("reading {} for the tuning cache: {err}", file.display()),
            )
        })
    };
    if let [file] = files.as_slice() {
        return read(file);
    }
    let mut hasher = blake3::Hasher::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        for part in [name.unwrap_or_default(), read(file)?] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// What identifies the file a model was loaded from: a file replaced
/// (renamed over: another inode) or rewritten (its change time moves, which
/// no caller can set back) after the load is another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
    /// A bundle's files, each rewritten in place or replaced (0: a file).
    files: u64,
}

impl FileIdentity {
    pub fn of(path: &Path) -> Option<FileIdentity> {
        let files = files_identity(path)?;
        Some(FileIdentity {
            files,
            ..FileIdentity::of_file(path)?
        })
    }

    /// The identity of `path` itself (a bundle's files not looked into).
    pub fn of_file(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileIdentity {
            device: m.dev(),
            inode: m.ino(),
            size: m.size(),
            modified_ns: ns(m.mtime(), m.mtime_nsec()),
            changed_ns: ns(m.ctime(), m.ctime_nsec()),
            files: 0,
        })
    }

    /// When the file last changed (its change time), in nanoseconds since
    /// the epoch.
    pub fn changed_ns(&self) -> i128 {
        self.changed_ns
    }

    /// As a record on disk spells it (load_hint.rs): stable across
    /// processes, unlike the hash `files` holds.
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.device, self.inode, self.size, self.modified_ns, self.changed_ns
        )
    }
}

/// A bundle's files as they are now (each file's identity, hashed; 0 for a
/// model file): a form rewritten in place leaves the folder's own times as
/// they were. A missing form counts as missing (it cannot be chosen);
/// `None` when the manifest cannot be read.
pub fn files_identity(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if !bundle::is_folder(path) {
        return Some(0);
    }
    // Compared within this process only: the std hasher's fixed keys do.
    let mut hasher = std::hash::DefaultHasher::new();
    for file in crate::engine::content_files(path).ok()? {
        FileIdentity::of_file(&file).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// What loading `path` for `optimizer` needs.
pub(super) fn load_context<'a>(optimizer: &'a Optimizer, path: &'a str) -> LoadContext<'a> {
    LoadContext {
        path,
        device: optimizer.device().to_runtime(),
        cores: crate::device::host::cores(),
        threads: crate::runtime::settings::num_threads().unwrap_or(1).max(1) as usize,
        onnxruntime: optimizer.config().onnxruntime_library.as_deref(),
        hint: None,
    }
}

/// Lets go of the other forms when max-autotune is done, whichever way.
pub(super) struct ReleaseOtherForms<'a>(pub &'a Model);

impl Drop for ReleaseOtherForms<'_> {
    fn drop(&mut self) {
        self.0.release_other_forms();
    }
}

impl Model {
    /// Every form max-autotune measures, each with its engine as loaded
    /// (`None` as the form of a model that is not a bundle), and why any
    /// other form was not measured: it did not load, or it is not the same
    /// model to a caller (its methods, its state, its batch bounds differ
    /// from the form loaded first, which the model's checks and batching
    /// follow).
    pub(super) fn forms_to_measure(
        &self,
        options: &ModelOptions,
    ) -> (Vec<FormEngine>, Vec<String>) {
        // The model's file where the model loaded as its saved module
        // (in_stead.rs).
        let mut left_out = Vec::new();
        let first = &self.as_in_file().unwrap_or_else(|err| {
            left_out.push(format!(
                "the model's file did not load ({err}): the module the tuning cache saved is \
                 measured in its stead, against its own output"
            ));
            self.original.clone()
        });
        let Some(forms) = &self.forms else {
            let only = FormEngine {
                name: None,
                precision: None,
                engine: first.clone(),
            };
            return (vec![only], left_out);
        };
        let mut measured = vec![FormEngine {
            name: Some(forms.loaded.clone()),
            precision: None,
            engine: first.clone(),
        }];
        let model_inputs = forms.model_inputs(first.as_ref());
        let reduced_allowed = options.precision == Precision::AllowReduced;
        for form in &forms.others {
            let name = form.name();
            if form.is_reduced() && !reduced_allowed {
                left_out.push(format!(
                    "the {name} form was not measured: the precision option is fp32 \
                     (allow-reduced measures it)"
                ));
                continue;
            }
            let engine = match self.other_form(forms, form) {
                Ok(engine) => engine,
                Err(err) => {
                    left_out.push(format!("the {name} form was not measured: {err}"));
                    continue;
                }
            };
            match bundle::differs(first.as_ref(), &model_inputs, engine.as_ref()) {
                Some(why) => left_out.push(format!("the {name} form was not measured: it {why}")),
                None => measured.push(FormEngine {
                    name: Some(name),
                    precision: form.precision.clone(),
                    engine,
                }),
            }
        }
        (measured, left_out)
    }

    /// What max-autotune measures errors against, and its form's name: the
    /// model as loaded, or the form it stands in for where the tuning
    /// cache's choice loaded alone (else each start would measure against
    /// the last choice, and choices could drift from that form's output); a
    /// note when that form was not measured.
    pub(super) fn reference_engine(
        &self,
        measured: &[FormEngine],
    ) -> (Arc<dyn Engine>, Option<String>, Option<String>) {
        let loaded = || (measured[0].engine.clone(), measured[0].name.clone());
        let Some(anchor) = self.forms.as_ref().and_then(|f| f.stands_in_for.as_deref()) else {
            let (engine, name) = loaded();
            return (engine, name, None);
        };
        match measured.iter().find(|f| f.name.as_deref() == Some(anchor)) {
            Some(form) => (form.engine.clone(), form.name.clone(), None),
            None => {
                let (engine, name) = loaded();
                let note = format!(
                    "errors are measured against the form loaded: the {anchor} form, which it \
                     stands in for, was not measured"
                );
                (engine, name, Some(note))
            }
        }
    }

    /// The engine [`Model::reference`] runs: the model as loaded (its file,
    /// where it loaded as the tuning cache's saved module), or the form it
    /// stands in for, loaded for it (the model as loaded when that
    /// form does not load, logged).
    pub(super) fn reference_form(&self) -> Arc<dyn Engine> {
        let anchor = self.forms.as_ref().and_then(|forms| {
            let anchor = forms.stands_in_for.as_ref()?;
            Some((forms, forms.others.iter().find(|f| f.name() == *anchor)?))
        });
        let Some((forms, file)) = anchor else {
            return self.reference_in_file();
        };
        // Kept if a max-autotune loaded it; let go after if this loads it.
        let held = forms.engines.lock().iter().any(|(n, _)| *n == file.name());
        let engine = self.other_form(forms, file);
        if !held {
            let released = {
                let mut engines = forms.engines.lock();
                let at = engines.iter().position(|(n, _)| *n == file.name());
                at.map(|at| engines.remove(at))
            };
            drop(released); // outside the lock
        }
        engine.unwrap_or_else(|err| {
            log::warn!(
                "model {}: the reference runs on the form loaded, not the {} form it stands in \
                 for: {err}",
                self.name,
                file.name()
            );
            self.original.clone()
        })
    }

    /// What lets the next start load the chosen form alone (load_hint.rs),
    /// when the form `label` names takes every call the model takes (its
    /// contract, same_model.rs, and its inputs, inputs.rs), in the stead of
    /// `reference_form`, whose output is the reference. `None` for a
    /// reduced-precision form, which never loads alone, and for a model
    /// that is not a bundle.
    pub(super) fn stand_in_of_choice(
        &self,
        measured: &[FormEngine],
        label: &str,
        reference_form: Option<&str>,
    ) -> Option<StandIn> {
        let forms = self.forms.as_ref()?;
        let chosen = measured.iter().find(|f| {
            f.name
                .as_deref()
                .is_some_and(|name| bundle::label_in_form(label, name).is_some())
        })?;
        if chosen.precision.is_some() {
            return None;
        }
        let model_inputs = forms.model_inputs(self.original.as_ref());
        StandIn::of(
            chosen.engine.as_ref(),
            bundle::contract(self.original.as_ref()),
            &model_inputs,
            reference_form?,
        )
    }

    /// Whether the form `label` names loads at the model's next start: the
    /// model's file, the bundle form loaded now, or a form that stands in
    /// for it (`stand_in`).
    pub(super) fn loads_at_start(&self, label: &str, stand_in: Option<&StandIn>) -> bool {
        match &self.forms {
            None => true,
            Some(forms) => {
                stand_in.is_some() || bundle::label_in_form(label, &forms.loaded).is_some()
            }
        }
    }

    /// Lets go of the other forms loaded (the chosen one is held by what
    /// runs), and of the model's file where the model loaded in its stead;
    /// a later max-autotune loads them again.
    pub(super) fn release_other_forms(&self) {
        if let Some(forms) = &self.forms {
            let released = std::mem::take(&mut *forms.engines.lock());
            drop(released);
        }
        self.release_file_form();
    }

    fn other_form(&self, forms: &Forms, form: &FormFile) -> Result<Arc<dyn Engine>> {
        let name = form.name();
        let loaded = |engines: &[(String, Arc<dyn Engine>)]| {
            engines
                .iter()
                .find(|(loaded, _)| *loaded == name)
                .map(|(_, engine)| engine.clone())
        };
        if let Some(engine) = loaded(&forms.engines.lock()) {
            return Ok(engine);
        }
        // Loaded with no lock held (a package takes seconds; a log callback
        // may call back into the model).
        let path = form.path.to_string_lossy();
        let engine = bundle::load_form(
            form,
            &LoadContext {
                path: &path,
                ..load_context(&self.optimizer, &self.path)
            },
        )?
        .engine;
        let engine = {
            let mut engines = forms.engines.lock();
            match loaded(&engines) {
                Some(first) => first, // another thread loaded it meanwhile
                None => {
                    engines.push((name.clone(), engine.clone()));
                    engine
                }
            }
        };
        log::info!("model {}: loaded its {name} form", self.name);
        Ok(engine)
    }

    /// The form a remembered label names, as loaded, and the label within
    /// that form ("onnx: frozen" -> the ONNX form, "frozen").
    pub(super) fn form_of_label<'a>(&self, label: &'a str) -> Result<(Arc<dyn Engine>, &'a str)> {
        let Some(forms) = &self.forms else {
            return Ok((self.own_form_of(label)?, label));
        };
        let damaged = || {
            Error::new(
                ErrorKind::Internal,
                format!("the remembered choice {label:?} names no form of this bundle: damaged"),
            )
        };
        if let Some(rest) = bundle::label_in_form(label, &forms.loaded) {
            return Ok((self.own_form_of(rest)?, rest));
        }
        let (file, rest) = forms
            .others
            .iter()
            .find_map(|f| Some((f, bundle::label_in_form(label, &f.name())?)))
            .ok_or_else(damaged)?;
        if file.is_reduced() && self.options().precision != Precision::AllowReduced {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the remembered choice {label:?} names a reduced-precision form, which the \
                     precision option (fp32) does not allow"
                ),
            ));
        }
        let engine = self.other_form(forms, file)?;
        self.release_other_forms(); // held by what runs, not kept for later
        Ok((engine, rest))
    }
}
