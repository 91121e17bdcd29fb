//! Bundles: a folder (`NAME.perfopt`, written by `perfopt.export`) holding
//! one model in several formats, and `manifest.json` naming each form's
//! file, best guess first. The first form that loads is the model as loaded
//! (or the tuning cache's last choice in its stead, where that form takes
//! the same calls and batches: `chosen_first`); the others are loaded when
//! max-autotune measures them or a remembered choice names one
//! (src/model/forms.rs).
//!
//! The manifest is read as untrusted input (manifest.rs), and a form is
//! refused when its file turns out to be another format than it claims.

use std::path::{Path, PathBuf};

use super::inputs::{self, InputSpec, Inputs};
pub use super::manifest::{forms, is_folder, FormFile, MANIFEST};
pub use super::same_model::{contract, differs};
use super::{Engine, Format, LoadContext, LoadHint, Loaded};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Device;

/// A candidate's label naming its form ("onnx: frozen"): how a remembered
/// choice finds its form again.
pub fn form_label(form: &str, label: &str) -> String {
    format!("{form}: {label}")
}

/// The label within `form` that a form's label names ("onnx: frozen" in the
/// ONNX form: "frozen"); `None` for another form's ("onnx (int8): ...").
pub fn label_in_form<'a>(label: &'a str, form: &str) -> Option<&'a str> {
    label.strip_prefix(form)?.strip_prefix(": ")
}

/// Loads one form's file, refused when it is another format than claimed.
pub fn load_form(form: &FormFile, context: &LoadContext) -> Result<Loaded> {
    let path = form.path.to_string_lossy();
    let loaded = super::load_file(&LoadContext {
        path: &path,
        ..*context
    })?;
    let actual = loaded.engine.format().as_str();
    if actual != form.format {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{path} is listed as the bundle's {} form but holds a model of the {actual} format",
                form.name()
            ),
        ));
    }
    Ok(loaded)
}

/// What lets a bundle's chosen form load alone in the stead of the form the
/// model was (the tuning cache remembers it with the choice): the calls and
/// batches that form took, which the chosen form takes too
/// (same_model::contract), that form's name, and the inputs the model then
/// holds each call to (inputs.rs: the sizes the form stood in for fixed;
/// `None`: nothing beyond the chosen form's own checks).
#[derive(Clone, Debug, PartialEq)]
pub struct StandIn {
    pub contract: String,
    pub stands_in_for: String,
    pub held_inputs: Option<Vec<InputSpec>>,
}

impl StandIn {
    /// Whether the form `chosen` may stand in, for `stands_in_for`, for a
    /// model whose contract and inputs are `model_contract` and
    /// `model_inputs`: what to remember when it may.
    pub fn of(
        chosen: &dyn Engine,
        model_contract: String,
        model_inputs: &Inputs,
        stands_in_for: &str,
    ) -> Option<StandIn> {
        if contract(chosen) != model_contract {
            return None;
        }
        Some(StandIn {
            held_inputs: inputs::stand_in(&chosen.inputs(), model_inputs)?,
            contract: model_contract,
            stands_in_for: stands_in_for.to_string(),
        })
    }

    /// What the model took, as [`Inputs`].
    fn model_inputs(&self) -> Inputs {
        match &self.held_inputs {
            Some(specs) => Inputs::Fixed(specs.clone()),
            None => Inputs::Any,
        }
    }
}

/// A loaded bundle's forms: the one loaded, the others (not loaded yet),
/// and notes on the forms left out or that failed to load.
pub struct Bundle {
    pub loaded: FormFile,
    pub others: Vec<FormFile>,
    pub notes: Vec<String>,
    /// The form the model was when the tuning cache's last choice was made,
    /// when that choice loaded alone in its stead (it takes the same calls
    /// and batches): its output stays what max-autotune measures errors
    /// against.
    pub stands_in_for: Option<String>,
    /// What the model then holds each call to (StandIn::held_inputs).
    pub held_inputs: Option<Vec<InputSpec>>,
    /// Whether the hint's stand-in was refused (its form failed to load, or
    /// no longer takes what was remembered): the cache should forget it.
    pub stand_in_refused: bool,
}

/// The bundle's first form that loads, with the others named: the form the
/// tuning cache last chose first when it may stand in for the form the
/// model was (see [`chosen_first`]). A reduced-precision form is never the one
/// loaded: it runs only where the caller allowed it and max-autotune
/// measured it within tolerance.
pub fn load(context: &LoadContext) -> Result<Loaded> {
    let dir = Path::new(context.path);
    let (forms, mut notes) = forms(dir)?;
    let (reduced, mut forms): (Vec<FormFile>, Vec<FormFile>) =
        forms.into_iter().partition(FormFile::is_reduced);
    if forms.is_empty() {
        notes.push(
            "a reduced-precision form is measured beside an fp32 form, never loaded alone"
                .to_string(),
        );
    }
    // ONNX Runtime and ExecuTorch run on the CPU here: on a GPU the forms
    // that run on it are loaded first.
    if context.device != Device::Cpu && forms.len() > 1 {
        let (cpu, gpu): (Vec<FormFile>, Vec<FormFile>) = forms.into_iter().partition(runs_on_cpu);
        for form in &cpu {
            notes.push(format!(
                "the {} form runs on the CPU: on {:?} it comes last",
                form.format, context.device
            ));
        }
        forms = gpu.into_iter().chain(cpu).collect();
    }
    let stand_in_refused = match chosen_first(&forms, &reduced, &mut notes, context) {
        Alone::Loaded(loaded) => return Ok(loaded),
        Alone::NotAsked => false,
        Alone::Refused => true,
    };
    let mut kinds = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        match load_hinted(form, context) {
            Ok(loaded) => {
                return Ok(Loaded {
                    bundle: Some(Bundle {
                        loaded: form.clone(),
                        others: forms[i + 1..].iter().chain(&reduced).cloned().collect(),
                        notes,
                        stands_in_for: None,
                        held_inputs: None,
                        stand_in_refused,
                    }),
                    ..loaded
                })
            }
            Err(err) => {
                kinds.push(err.kind());
                notes.push(format!("the {} form did not load: {err}", form.name()));
            }
        }
    }
    // Every form failing the same way (all built for another device) keeps
    // that status.
    let kind = match kinds.as_slice() {
        [first, rest @ ..] if rest.iter().all(|k| k == first) => *first,
        _ => ErrorKind::LoadFailed,
    };
    Err(Error::new(
        kind,
        format!(
            "no form of the bundle {} loads: {}",
            dir.display(),
            notes.join("; ")
        ),
    ))
}

fn runs_on_cpu(form: &FormFile) -> bool {
    Format::named(&form.format).is_some_and(Format::cpu_only)
}

/// Loads `form`, built as the tuning cache last chose where the hint names
/// it; a form that fails as chosen loads as it would have without the hint.
fn load_hinted(form: &FormFile, context: &LoadContext) -> Result<Loaded> {
    let hint = context.hint.and_then(|hint| {
        let label = label_in_form(hint.label, &form.name())?;
        Some(LoadHint { label, ..hint })
    });
    load_form(form, &LoadContext { hint, ..*context }).or_else(|err| match hint {
        Some(_) => load_form(
            form,
            &LoadContext {
                hint: None,
                ..*context
            },
        ),
        None => Err(err),
    })
}

/// What came of a hint's stand-in.
enum Alone {
    Loaded(Loaded),
    /// No stand-in, or one that does not apply here (the form it names is
    /// the one stood in for, or runs on the CPU on a GPU).
    NotAsked,
    /// Its form failed to load, or no longer takes what was remembered.
    Refused,
}

/// The form the tuning cache last chose, loaded alone, in the stead of the
/// form the model was when it chose (the form listed first, or the first
/// that loaded): only where the cache remembered that it takes the calls
/// and batches that form took (its contract, same_model.rs) and, loaded, it
/// still does, so that the model is the same to its caller whichever form
/// loaded. Otherwise nothing is kept and the bundle loads in order.
fn chosen_first(
    forms: &[FormFile],
    reduced: &[FormFile],
    notes: &mut Vec<String>,
    context: &LoadContext,
) -> Alone {
    let Some((hint, stand_in)) = context.hint.and_then(|h| Some((h, h.stand_in?))) else {
        return Alone::NotAsked;
    };
    let stands_in_for = stand_in.stands_in_for.as_str();
    let Some(form) = forms
        .iter()
        .find(|form| label_in_form(hint.label, &form.name()).is_some())
    else {
        return Alone::NotAsked;
    };
    // The form it stands in for must be another of this bundle's; on a GPU
    // a form that runs on the CPU stays last.
    if form.name() == stands_in_for
        || !forms.iter().any(|f| f.name() == stands_in_for)
        || (context.device != Device::Cpu && runs_on_cpu(form))
    {
        return Alone::NotAsked;
    }
    let name = form.name();
    let loaded = match load_hinted(form, context) {
        Ok(loaded) => loaded,
        Err(err) => {
            notes.push(format!(
                "the {name} form, which the tuning cache last chose, did not load alone ({err}): \
                 the bundle loaded in order"
            ));
            return Alone::Refused;
        }
    };
    let still = StandIn::of(
        loaded.engine.as_ref(),
        stand_in.contract.clone(),
        &stand_in.model_inputs(),
        stands_in_for,
    );
    if still.as_ref() != Some(stand_in) {
        notes.push(format!(
            "the {name} form, which the tuning cache last chose, takes other calls, batches or \
             inputs than the cache remembered: the bundle loaded in order"
        ));
        return Alone::Refused;
    }
    let others = forms
        .iter()
        .filter(|f| f.path != form.path)
        .chain(reduced)
        .cloned()
        .collect();
    Alone::Loaded(Loaded {
        bundle: Some(Bundle {
            loaded: form.clone(),
            others,
            notes: std::mem::take(notes),
            stands_in_for: Some(stands_in_for.to_string()),
            held_inputs: stand_in.held_inputs.clone(),
            stand_in_refused: false,
        }),
        ..loaded
    })
}

/// The files whose content is the bundle: the manifest, then each form's.
pub fn content_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (forms, _) = forms(dir)?;
    let mut files = vec![dir.join(MANIFEST)];
    files.extend(forms.into_iter().map(|f| f.path));
    Ok(files)
}
