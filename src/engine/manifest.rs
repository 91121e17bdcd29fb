//! A bundle's manifest (`manifest.json`, written by `perfopt.export`): the
//! forms it names, in order, best guess first, each with its format,
//! precision and file.
//!
//! The manifest is read as untrusted input: its size is bounded, every form
//! file is a plain name inside the folder (no path, no `..`), and a form
//! whose format this perfopt lacks is left out with a note.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Format;
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;

pub const MANIFEST: &str = "manifest.json";
/// What `format` says in a bundle's manifest.
const BUNDLE_FORMAT: &str = "perfopt-bundle";
/// The manifest version this perfopt reads.
const VERSION: f64 = 1.0;
/// No manifest perfopt writes comes near this.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The reduced precisions a form may be in (perfopt.export's `precisions`).
const REDUCED_PRECISIONS: [&str; 3] = ["bf16", "fp16", "int8"];

/// A form the manifest names: its format's name, its precision and its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormFile {
    pub format: String,
    /// `None`: the model's own precision; else a reduced one ("bf16",
    /// "fp16", "int8"), taking and returning what the fp32 form does.
    pub precision: Option<String>,
    pub path: PathBuf,
}

impl FormFile {
    /// How reports and remembered choices name the form: "onnx",
    /// "onnx (int8)".
    pub fn name(&self) -> String {
        match &self.precision {
            Some(precision) => format!("{} ({precision})", self.format),
            None => self.format.clone(),
        }
    }

    pub fn is_reduced(&self) -> bool {
        self.precision.is_some()
    }
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
    // Reduced-precision forms are listed apart ("reduced_forms"), so that a
    // perfopt from before them, which reads "forms" only, loads the bundle.
    let listed = |key: &str| json.get(key).map(Json::as_array).unwrap_or(&[]);
    let entries: Vec<&Json> = listed("forms")
        .iter()
        .chain(listed("reduced_forms"))
        .collect();
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
        let precision = match entry.get("precision") {
            None => None,
            Some(p) => match p.as_str() {
                Some("fp32") => None,
                Some(p) if REDUCED_PRECISIONS.contains(&p) => Some(p.to_string()),
                Some(p) => {
                    notes.push(format!(
                        "the {format} form in {p} ({file}) was left out: this perfopt runs \
                         reduced precisions {}",
                        REDUCED_PRECISIONS.join(", ")
                    ));
                    continue;
                }
                None => {
                    return Err(bad(
                        dir,
                        format!("form {i}'s \"precision\" is not a string"),
                    ))
                }
            },
        };
        if !is_plain_name(file) || !inside(dir, file) {
            return Err(bad(
                dir,
                format!(
                    "form {i} names the file {file:?}: a form's file is a plain name inside the \
                     bundle (a link out of it included)"
                ),
            ));
        }
        let form = FormFile {
            format: format.to_string(),
            precision,
            path: dir.join(file),
        };
        if forms
            .iter()
            .any(|f: &FormFile| f.name() == form.name() || f.path == form.path)
        {
            return Err(bad(
                dir,
                format!(
                    "form {i} repeats the {} form or the file {file}: one of each",
                    form.name()
                ),
            ));
        }
        forms.push(form);
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
    fn reads_each_forms_precision() {
        let (_dir, found) = bundle(
            r#"{"format": "perfopt-bundle", "version": 1, "forms": [
                {"format": "onnx", "file": "model.onnx", "precision": "fp32"}], "reduced_forms": [
                {"format": "onnx", "file": "model.int8.onnx", "precision": "int8"},
                {"format": "onnx", "file": "model.int4.onnx", "precision": "int4"}]}"#,
        );
        let (forms, notes) = found.unwrap();
        let names: Vec<String> = forms.iter().map(FormFile::name).collect();
        assert_eq!(names, ["onnx", "onnx (int8)"]);
        assert!(!forms[0].is_reduced() && forms[1].is_reduced());
        assert!(notes[0].contains("in int4"), "{notes:?}");
        for (manifest, says) in [
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "a.onnx", "precision": 8}]}"#,
                "not a string",
            ),
            (
                r#"{"format": "perfopt-bundle", "version": 1, "forms": [{"format": "onnx", "file": "a.onnx", "precision": "int8"}, {"format": "onnx", "file": "b.onnx", "precision": "int8"}]}"#,
                "repeats the onnx (int8) form",
            ),
        ] {
            let (_dir, found) = bundle(manifest);
            let err = found.unwrap_err().to_string();
            assert!(err.contains(says), "{manifest}: {err}");
        }
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
