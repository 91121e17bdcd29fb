//! Bundles: a folder (`NAME.perfopt`, written by `perfopt.export`) holding
//! one model in several formats, and `manifest.json` naming each form's
//! file, best guess first. The first form that loads is the model as loaded;
//! the others are loaded when max-autotune measures them or a remembered
//! choice names one (src/model/forms.rs).
//!
//! The manifest is read as untrusted input: its size is bounded, every form
//! file is a plain name inside the folder (no path, no `..`), and a form is
//! refused when its file turns out to be another format than it claims.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Engine, Format, LoadContext, Loaded};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::runtime::Device;

pub const MANIFEST: &str = "manifest.json";
/// What `format` says in a bundle's manifest.
const BUNDLE_FORMAT: &str = "perfopt-bundle";
/// The manifest version this perfopt reads.
const VERSION: f64 = 1.0;
/// No manifest perfopt writes comes near this.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A form the manifest names: its format's name and its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormFile {
    pub format: String,
    pub path: PathBuf,
}

/// A manifest's forms, and notes on those left out.
pub type Found = (Vec<FormFile>, Vec<String>);

/// Whether `path` is a folder (bundles are the only folders perfopt loads).
pub fn is_folder(path: &Path) -> bool {
    path.is_dir()
}

fn bad(dir: &Path, what: String) -> Error {
    Error::new(
        ErrorKind::LoadFailed,
        format!("{} is not a perfopt bundle: {what}", dir.display()),
    )
}

/// The forms `dir`'s manifest names, in its order; forms of a format this
/// perfopt does not know are left out, each with a note.
pub fn forms(dir: &Path) -> Result<Found> {
    let manifest = dir.join(MANIFEST);
    // A folder is a bundle when its manifest says so; any other folder is a
    // folder given where a model file was wanted.
    let not_a_bundle = |why: &str| {
        Error::new(
            ErrorKind::NotAFile,
            format!(
                "model path {} is a directory {why}: perfopt loads a model file or a bundle (a \
                 folder perfopt.export wrote)",
                dir.display()
            ),
        )
    };
    if !manifest.exists() {
        return Err(not_a_bundle(&format!("without {MANIFEST}")));
    }
    // Opened as model files are (a pipe or a device refused, never read
    // from), and read no further than the bound.
    let (file, size) = crate::model_file::open_regular(&manifest)
        .map_err(|_| not_a_bundle(&format!("whose {MANIFEST} is not a regular file")))?;
    let mut bytes = Vec::new();
    if size > MAX_MANIFEST_BYTES
        || file
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .is_err()
        || bytes.len() as u64 > MAX_MANIFEST_BYTES
    {
        return Err(not_a_bundle(&format!(
            "whose {MANIFEST} is not a bundle's (a file of at most 1 MiB)"
        )));
    }
    let json = String::from_utf8(bytes)
        .ok()
        .and_then(|text| Json::parse(&text).ok())
        .filter(|json| json.get("format").and_then(Json::as_str) == Some(BUNDLE_FORMAT))
        .ok_or_else(|| {
            not_a_bundle(&format!(
                "whose {MANIFEST} is not a bundle's (it does not say \"format\": \"{BUNDLE_FORMAT}\")"
            ))
        })?;
    match json.get("version").and_then(Json::as_f64) {
        Some(v) if v == VERSION => {}
        other => {
            return Err(bad(
                dir,
                format!(
                    "its manifest is version {other:?}; this perfopt reads version {VERSION} \
                     (export it again with this perfopt)"
                ),
            ))
        }
    }
    let entries = json.get("forms").map(Json::as_array).unwrap_or(&[]);
    let mut forms = Vec::new();
    let mut notes = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let format = entry.get("format").and_then(Json::as_str);
        let file = entry.get("file").and_then(Json::as_str);
        let (Some(format), Some(file)) = (format, file) else {
            return Err(bad(
                dir,
                format!("form {i} of its manifest lacks \"format\" or \"file\""),
            ));
        };
        // A format this perfopt lacks (a newer export) is left out first:
        // what its entry says is a newer perfopt's business.
        if Format::named(format).is_none() {
            notes.push(format!(
                "the {format} form ({file}) was left out: this perfopt has no {format} engine"
            ));
            continue;
        }
        if !is_plain_name(file) || !inside(dir, file) {
            return Err(bad(
                dir,
                format!(
                    "form {i} names the file {file:?}: a form's file is a plain name inside the \
                     bundle (a link out of it included)"
                ),
            ));
        }
        if forms
            .iter()
            .any(|f: &FormFile| f.format == format || f.path == dir.join(file))
        {
            return Err(bad(
                dir,
                format!("form {i} repeats the {format} form or the file {file}: one of each"),
            ));
        }
        forms.push(FormFile {
            format: format.to_string(),
            path: dir.join(file),
        });
    }
    if forms.is_empty() {
        return Err(bad(
            dir,
            format!(
                "its manifest names no form this perfopt runs{}",
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join("; "))
                }
            ),
        ));
    }
    Ok((forms, notes))
}

/// A file name with no folder in it ("model.onnx", not "../x" or "/x").
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

/// Whether `dir/name`, links followed, stays inside `dir` (a missing file
/// does: its load says it is missing).
fn inside(dir: &Path, name: &str) -> bool {
    match (dir.join(name).canonicalize(), dir.canonicalize()) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => true,
    }
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
                form.format
            ),
        ));
    }
    Ok(loaded)
}

/// A loaded bundle's forms: the one loaded, the others (not loaded yet),
/// and notes on the forms left out or that failed to load.
pub struct Bundle {
    pub loaded: FormFile,
    pub others: Vec<FormFile>,
    pub notes: Vec<String>,
}

/// The bundle's first form that loads, with the others named.
pub fn load(context: &LoadContext) -> Result<Loaded> {
    let dir = Path::new(context.path);
    let (mut forms, mut notes) = forms(dir)?;
    // ONNX Runtime and ExecuTorch run on the CPU here: on a GPU the forms
    // that run on it are loaded first.
    if context.device != Device::Cpu && forms.len() > 1 {
        let cpu_only = |f: &FormFile| Format::named(&f.format).is_some_and(Format::cpu_only);
        let (cpu, gpu): (Vec<FormFile>, Vec<FormFile>) = forms.into_iter().partition(cpu_only);
        for form in &cpu {
            notes.push(format!(
                "the {} form runs on the CPU: on {:?} it comes last",
                form.format, context.device
            ));
        }
        forms = gpu.into_iter().chain(cpu).collect();
    }
    let mut kinds = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        match load_form(form, context) {
            Ok(loaded) => {
                return Ok(Loaded {
                    bundle: Some(Bundle {
                        loaded: form.clone(),
                        others: forms[i + 1..].to_vec(),
                        notes,
                    }),
                    ..loaded
                })
            }
            Err(err) => {
                kinds.push(err.kind());
                notes.push(format!("the {} form did not load: {err}", form.format));
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

/// The files whose content is the bundle: the manifest, then each form's.
pub fn content_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (forms, _) = forms(dir)?;
    let mut files = vec![dir.join(MANIFEST)];
    files.extend(forms.into_iter().map(|f| f.path));
    Ok(files)
}

/// Why `other` is not the same model as `first` to a caller, if it is
/// not: the model's checks, methods, state and batching follow the form
/// loaded first, so another form must take every call and batch it takes.
pub fn differs(first: &dyn Engine, other: &dyn Engine) -> Option<&'static str> {
    if other.writes_state() != first.writes_state() {
        Some("keeps state where the first form does not, or the other way round")
    } else if !takes_every_call(first, other) {
        Some("lacks a method of the first form, or takes fewer arguments")
    } else if !takes_every_batch(first, other) {
        Some("accepts fewer batch sizes than the first form")
    } else {
        None
    }
}

/// Whether `other` takes every call `first` takes: each of its methods,
/// with at least as many arguments left optional.
fn takes_every_call(first: &dyn Engine, other: &dyn Engine) -> bool {
    first.methods().iter().all(|method| {
        let (required, most) = method.arity();
        other.methods().iter().any(|m| {
            let (other_required, other_most) = m.arity();
            m.name == method.name && other_required <= required && reaches(other_most, most)
        })
    })
}

/// Whether `other` accepts every batch `first` accepts (a form bounded
/// below the first's, or fixed at another batch, would refuse calls the
/// model took before tuning).
fn takes_every_batch(first: &dyn Engine, other: &dyn Engine) -> bool {
    let limit = |e: &dyn Engine| e.batch_limit().or(e.fixed_batch());
    match first.fixed_batch() {
        Some(batch) => {
            other.fixed_batch().is_none_or(|b| b == batch)
                && limit(other).is_none_or(|l| l >= batch)
        }
        None => reaches(limit(other), limit(first)),
    }
}

/// Whether an upper bound (`None`: none) reaches at least as far as another.
fn reaches<T: PartialOrd>(bound: Option<T>, than: Option<T>) -> bool {
    match (bound, than) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(b), Some(t)) => b >= t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(manifest: &str) -> (tempfile::TempDir, Result<Found>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), manifest).unwrap();
        let forms = forms(dir.path());
        (dir, forms)
    }

    #[test]
    fn reads_forms_in_order_and_leaves_out_unknown_formats() {
        let (dir, found) = bundle(
            r#"{"format": "perfopt-bundle", "version": 1, "forms": [
                {"format": "onnx", "file": "model.onnx"},
                {"format": "tensorrt", "file": "../model.plan"},
                {"format": "torchscript", "file": "model.pt"}]}"#,
        );
        let (forms, notes) = found.unwrap();
        let names: Vec<&str> = forms.iter().map(|f| f.format.as_str()).collect();
        assert_eq!(names, ["onnx", "torchscript"]);
        assert_eq!(forms[0].path, dir.path().join("model.onnx"));
        assert!(notes[0].contains("no tensorrt engine"), "{notes:?}");
    }

    #[test]
    fn refuses_paths_outside_the_bundle_and_other_manifests() {
        for (manifest, says) in [
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "../x.onnx"}]}"#,
                "plain name",
            ),
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "/etc/passwd"}]}"#,
                "plain name",
            ),
            (
                r#"{"format": "perfopt-bundle", "version": 2, "forms": []}"#,
                "version",
            ),
            (r#"{"format": "zip"}"#, "directory whose manifest.json"),
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "a.onnx"}, {"format": "onnx", "file": "b.onnx"}]}"#,
                "repeats",
            ),
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": []}"#,
                "no form",
            ),
            ("not json", "directory whose manifest.json"),
        ] {
            let (_dir, found) = bundle(manifest);
            let err = found.unwrap_err().to_string();
            assert!(err.contains(says), "{manifest}: {err}");
        }
        // A link out of the bundle is a path out of it.
        let (dir, _) = bundle("{}");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("model.onnx")).unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "model.onnx"}]}"#,
        )
        .unwrap();
        let err = forms(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a link out of it"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = forms(empty.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAFile);
        assert!(err.to_string().contains("directory"), "{err}");
    }
}

#[cfg(test)]
mod interchangeable {
    use super::*;
    use crate::engine::{Argument, Engine, MethodSchema, TypeKind};
    use crate::value::Value;

    struct Form {
        methods: Vec<MethodSchema>,
        fixed: Option<i64>,
        limit: Option<i64>,
    }

    impl Engine for Form {
        fn format(&self) -> Format {
            Format::Onnx
        }
        fn methods(&self) -> &[MethodSchema] {
            &self.methods
        }
        fn call(&self, _: &str, _: &[Value]) -> Result<Value> {
            Ok(Value::None)
        }
        fn fixed_batch(&self) -> Option<i64> {
            self.fixed
        }
        fn batch_limit(&self) -> Option<i64> {
            self.limit
        }
    }

    fn form(methods: &[(&str, usize, usize)], fixed: Option<i64>, limit: Option<i64>) -> Form {
        let methods = methods
            .iter()
            .map(|&(name, required, optional)| MethodSchema {
                name: name.to_string(),
                schema: String::new(),
                arguments: (0..required + optional)
                    .map(|i| Argument {
                        name: format!("x{i}"),
                        kind: TypeKind::Tensor,
                        default: (i >= required).then(|| "None".to_string()),
                    })
                    .collect(),
                returns: vec![TypeKind::Tensor],
                vararg: false,
            })
            .collect();
        Form {
            methods,
            fixed,
            limit,
        }
    }

    #[test]
    fn another_form_must_take_every_call_and_batch_the_first_takes() {
        let onnx = form(&[("forward", 2, 0)], None, None);
        // Traced with an extra method, or scripted with a default: takes more.
        let more = form(&[("forward", 2, 1), ("reset", 0, 0)], None, None);
        assert!(takes_every_call(&onnx, &more));
        assert!(!takes_every_call(&more, &onnx));
        assert!(!takes_every_call(
            &onnx,
            &form(&[("encode", 2, 0)], None, None)
        ));
        // Batches: a bound below the first's refuses calls it took.
        assert!(takes_every_batch(&onnx, &more));
        assert!(!takes_every_batch(&onnx, &form(&[], None, Some(8))));
        let static_onnx = form(&[], Some(2), None);
        assert!(takes_every_batch(
            &static_onnx,
            &form(&[], Some(2), Some(2))
        ));
        assert!(takes_every_batch(&static_onnx, &more));
        assert!(!takes_every_batch(
            &static_onnx,
            &form(&[], Some(4), Some(4))
        ));
        assert!(takes_every_batch(
            &form(&[], None, Some(8)),
            &form(&[], None, Some(16))
        ));
    }
}
