//! Looks inside a model file before libtorch does, so that the common
//! mistakes get their own status and a message naming the path (no file, not
//! a regular file, not a model, an archive cut short), and so that the format
//! is known from the contents, not the name: TorchScript (torch.jit.save) and
//! AOTInductor packages (.pt2) are both zip archives.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::zip::{Entry, Zip, ZIP_LOCAL_HEADER};

/// A model file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// torch.jit.save: a zip with `<name>/data.pkl` and `<name>/code/`.
    TorchScript,
    /// torch._inductor.aoti_compile_and_package: a zip with compiled kernels.
    Aoti,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::TorchScript => "torchscript",
            Format::Aoti => "aotinductor",
        }
    }
}
/// What an AOTInductor package holds for one model.
#[derive(Clone, Debug, Default)]
pub struct PackageModel {
    pub name: String,
    /// Where the loader unpacks it: `<top>data/aotinductor/<name>/`.
    pub folder: String,
    pub files: Vec<String>,
    pub has_library: bool,
    /// The `*_metadata.json` the compiler wrote, when perfopt could read it.
    pub metadata: Option<Json>,
    /// Per input, per dimension, the (lowest, highest) sizes the compiled
    /// code accepts, read from its input checks; empty when unknown.
    pub size_bounds: Vec<Vec<(Option<i64>, Option<i64>)>>,
}

/// The result of [`inspect`].
#[derive(Clone, Debug)]
pub struct Inspected {
    pub format: Format,
    pub size: u64,
    /// For packages: each model inside.
    pub models: Vec<PackageModel>,
}

fn io_error(kind: ErrorKind, shown: &str, what: &str, err: std::io::Error) -> Error {
    Error::new(kind, format!("{what} model file {shown}: {err}"))
}

/// Opens a regular file for reading without ever blocking: a named pipe or a
/// device is refused by its type, never opened for a read that would wait.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let shown = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|err| {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::FileNotFound
        } else {
            ErrorKind::LoadFailed
        };
        io_error(kind, &shown, "cannot open", err)
    })?;
    let not_regular = |what: &str| {
        Error::new(
            ErrorKind::NotAFile,
            format!("model path {shown} is {what}, not a regular file"),
        )
    };
    if metadata.is_dir() {
        return Err(not_regular("a directory"));
    }
    if !metadata.is_file() {
        return Err(not_regular("a named pipe, socket or device"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| io_error(ErrorKind::LoadFailed, &shown, "cannot open", err))?;
    // The path may have been replaced between the two looks.
    let metadata = file
        .metadata()
        .map_err(|err| io_error(ErrorKind::LoadFailed, &shown, "cannot read", err))?;
    if !metadata.is_file() {
        return Err(not_regular("not a regular file"));
    }
    Ok((file, metadata.len()))
}
/// Checks a model file and tells its format from its contents.
pub fn inspect(path: &Path) -> Result<Inspected> {
    let shown = path.display().to_string();
    let (mut file, size) = open_regular(path)?;
    let mut magic = [0u8; 4];
    if size < 4 || file.read_exact(&mut magic).is_err() || magic != ZIP_LOCAL_HEADER {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{shown} is not a model file: TorchScript files (torch.jit.save) and AOTInductor \
                 packages (.pt2) are zip archives, and this one ({size} bytes) does not start like one"
            ),
        ));
    }
    let mut zip = Zip {
        file: &mut file,
        size,
        shown: shown.clone(),
    };
    let entries = zip.entries()?;
    let is_package = entries.iter().any(|e| e.name.contains("data/aotinductor/"));
    if is_package {
        let models = package_models(&mut zip, &entries)?;
        return Ok(Inspected {
            format: Format::Aoti,
            size,
            models,
        });
    }
    let names = || entries.iter().map(|e| e.name.as_str());
    if names().any(|n| n.ends_with("archive_format")) && names().any(|n| n.contains("models/")) {
        return Err(Error::new(
            ErrorKind::UnsupportedModel,
            format!(
                "{shown} is a torch.export program (torch.export.save) without compiled code: \
                 compile it into an AOTInductor package first (perfopt.export, or \
                 torch._inductor.aoti_compile_and_package)"
            ),
        ));
    }
    if !names().any(|n| n == "data.pkl" || n.ends_with("/data.pkl")) {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{shown} is a zip archive but not a model: it has neither TorchScript's data.pkl \
                 nor an AOTInductor package's data/aotinductor/ folder"
            ),
        ));
    }
    Ok(Inspected {
        format: Format::TorchScript,
        size,
        models: Vec::new(),
    })
}

fn package_models(zip: &mut Zip<'_>, entries: &[Entry]) -> Result<Vec<PackageModel>> {
    let shown = zip.shown.clone();
    // libtorch's loader reads the first two names without checking that
    // there are two (a one-file archive crashes it), and writes each name
    // under its temporary folder as it is (".." would climb out).
    if entries.len() < 2 {
        return Err(zip.corrupt("an AOTInductor package with fewer than two files"));
    }
    if let Some(bad) = entries
        .iter()
        .find(|e| e.name.starts_with('/') || e.name.split(['/', '\\']).any(|part| part == ".."))
    {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{shown} holds a file named {:?}, which would be written outside the folder it is \
                 unpacked into: refused",
                bad.name
            ),
        ));
    }
    let mut models: Vec<PackageModel> = Vec::new();
    for entry in entries {
        let Some(at) = entry.name.find("data/aotinductor/") else {
            continue;
        };
        let rest = &entry.name[at + "data/aotinductor/".len()..];
        let Some((model, file)) = rest.split_once('/') else {
            continue;
        };
        if file.is_empty() {
            continue;
        }
        let folder = format!("{}data/aotinductor/{model}/", &entry.name[..at]);
        let index = match models.iter().position(|m| m.name == model) {
            Some(i) => i,
            None => {
                models.push(PackageModel {
                    name: model.to_string(),
                    folder,
                    ..Default::default()
                });
                models.len() - 1
            }
        };
        let m = &mut models[index];
        m.files.push(file.to_string());
        m.has_library |= file.ends_with(".so");
        if file.ends_with(".wrapper.cpp") && m.size_bounds.is_empty() {
            if let Some(bytes) = zip.stored(entry)? {
                m.size_bounds = size_bounds(&String::from_utf8_lossy(&bytes));
            }
        }
        if file.ends_with("_metadata.json") && m.metadata.is_none() && !file.contains("kernel") {
            if let Some(bytes) = zip.stored(entry)? {
                m.metadata = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| Json::parse(text).ok());
            }
        }
    }
    Ok(models)
}

/// The size bounds Inductor compiled into a package's input checks
/// (`static void check_input_K(...)` with `if (argN_size[D] > MAX)` and
/// `if (argN_size[D] < MIN)`): Inductor may bound a dynamic dimension more
/// tightly than the export asked (a vocoder's batch at 15), and a run outside
/// them fails with a generic message. Text it does not recognise gives none.
pub fn size_bounds(wrapper: &str) -> Vec<Vec<(Option<i64>, Option<i64>)>> {
    let mut bounds: Vec<Vec<(Option<i64>, Option<i64>)>> = Vec::new();
    for block in wrapper.split("static void check_input_").skip(1) {
        let Some(index) = block
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let body = block.split("\n}\n").next().unwrap_or("");
        if bounds.len() <= index {
            bounds.resize(index + 1, Vec::new());
        }
        for line in body.lines() {
            let Some(rest) = line.trim().strip_prefix("if (") else {
                continue;
            };
            let Some((condition, _)) = rest.split_once(") {") else {
                continue;
            };
            let (sizes, op, limit) = match condition.split_once(" > ") {
                Some((a, b)) => (a, '>', b),
                None => match condition.split_once(" < ") {
                    Some((a, b)) => (a, '<', b),
                    None => continue,
                },
            };
            let Some(dim) = sizes
                .split_once("_size[")
                .and_then(|(_, d)| d.strip_suffix(']'))
                .and_then(|d| d.parse::<usize>().ok())
            else {
                continue;
            };
            let Ok(limit) = limit.trim().parse::<i64>() else {
                continue;
            };
            let dims = &mut bounds[index];
            if dims.len() <= dim {
                dims.resize(dim + 1, (None, None));
            }
            match op {
                '>' => dims[dim].1 = Some(limit),
                _ => dims[dim].0 = Some(limit),
            }
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zip::{ZIP_CENTRAL_ENTRY, ZIP_END_OF_DIRECTORY};

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("perfopt-archive-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A stored zip of (name, bytes) files.
    fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u32;
            out.extend_from_slice(&ZIP_LOCAL_HEADER);
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&ZIP_CENTRAL_ENTRY);
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let directory_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&ZIP_END_OF_DIRECTORY);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&directory_offset.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn classifies_bad_files() {
        let kind = |path: &Path| inspect(path).unwrap_err().kind();
        assert_eq!(
            kind(Path::new("/nonexistent/perfopt/model.pt")),
            ErrorKind::FileNotFound
        );
        let text = write("text.pt", b"not a model at all");
        let err = inspect(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LoadFailed);
        assert!(err.to_string().contains("text.pt"), "{err}");
        assert_eq!(kind(&write("empty.pt", b"")), ErrorKind::LoadFailed);
        assert_eq!(
            kind(&write("cut.pt", b"PK\x03\x04 the rest is gone")),
            ErrorKind::ModelCorrupt
        );
        assert_eq!(kind(&std::env::temp_dir()), ErrorKind::NotAFile);
        let other = write("other.zip", &zip(&[("a.txt", b"x"), ("b.txt", b"y")]));
        assert_eq!(kind(&other), ErrorKind::LoadFailed);
        for name in ["text.pt", "empty.pt", "cut.pt", "other.zip"] {
            let _ = std::fs::remove_file(write(name, b""));
        }
    }

    #[test]
    fn tells_formats_apart_by_contents() {
        let script = write(
            "script.bin",
            &zip(&[("m/data.pkl", b"x"), ("m/code/__torch__.py", b"y")]),
        );
        assert_eq!(inspect(&script).unwrap().format, Format::TorchScript);
        let metadata = br#"{"AOTI_DEVICE_KEY": "cpu"}"#;
        let package = write(
            "package.bin",
            &zip(&[
                ("p/archive_format", b"pt2"),
                ("p/data/aotinductor/model/abc.wrapper.so", b"\x7fELF"),
                (
                    "p/data/aotinductor/model/abc.wrapper_metadata.json",
                    metadata,
                ),
            ]),
        );
        let found = inspect(&package).unwrap();
        assert_eq!(found.format, Format::Aoti);
        assert_eq!(found.models.len(), 1);
        let model = &found.models[0];
        assert_eq!((model.name.as_str(), model.has_library), ("model", true));
        assert_eq!(model.folder, "p/data/aotinductor/model/");
        assert_eq!(
            model
                .metadata
                .as_ref()
                .and_then(|m| m.get("AOTI_DEVICE_KEY"))
                .and_then(Json::as_str),
            Some("cpu")
        );
        let exported = write(
            "exported.bin",
            &zip(&[("p/archive_format", b"pt2"), ("p/models/model.json", b"{}")]),
        );
        assert_eq!(
            inspect(&exported).unwrap_err().kind(),
            ErrorKind::UnsupportedModel
        );
        let one = write("one.bin", &zip(&[("p/data/aotinductor/model/a.so", b"x")]));
        assert_eq!(inspect(&one).unwrap_err().kind(), ErrorKind::ModelCorrupt);
        let climbing = write(
            "climb.bin",
            &zip(&[
                ("p/data/aotinductor/model/a.so", b"x"),
                ("p/data/aotinductor/model/../../../../etc/x", b"y"),
            ]),
        );
        assert_eq!(
            inspect(&climbing).unwrap_err().kind(),
            ErrorKind::ModelCorrupt
        );
        for path in [script, package, exported, one, climbing] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn reads_the_size_bounds_compiled_into_a_package() {
        let wrapper = "AOTI_NOINLINE static void check_input_0(\n    AtenTensorHandle* input_handles\n) {\n    auto arg16_1_size = arg16_1.sizes();\n\n    if (arg16_1_size[0] > 15) {\n        throw;\n    }\n\n    if (arg16_1_size[0] < 2) {\n        throw;\n    }\n    if (80 != arg16_1_size[1]) {\n    }\n}\nstatic void check_input_1(\n) {\n}\n";
        let bounds = size_bounds(wrapper);
        assert_eq!(bounds[0], vec![(Some(2), Some(15))]);
        assert!(size_bounds("nothing to see").is_empty());
    }

    #[test]
    fn refuses_a_named_pipe_without_opening_it() {
        let path = std::env::temp_dir().join(format!("perfopt-fifo-{}", std::process::id()));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = inspect(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAFile);
        assert!(err.to_string().contains("named pipe"), "{err}");
        let _ = std::fs::remove_file(path);
    }
}
