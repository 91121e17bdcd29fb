//! Looks inside a model file before libtorch does, so that the common
//! mistakes get their own status and a message naming the path (no file, not
//! a regular file, not a model, an archive cut short), and so that the format
//! is known from the contents, not the name: TorchScript (torch.jit.save) and
//! AOTInductor packages (.pt2) are both zip archives.

use std::io::Read;
use std::path::Path;

use super::package::{package_models, PackageModel};
use super::Format;
use crate::error::{Error, ErrorKind, Result};
#[cfg(test)]
use crate::model_file::open_regular;
use crate::zip::{Zip, ZIP_LOCAL_HEADER};

/// The result of [`inspect`].
#[derive(Clone, Debug)]
pub struct Inspected {
    pub format: Format,
    /// For packages: each model inside.
    pub models: Vec<PackageModel>,
}

/// A model file checked and kept open, so that libtorch reads the file that
/// was checked: the path handed to its loaders names the open descriptor
/// (`/proc/self/fd/N`, `/dev/fd/N` on macOS), not the path again, which
/// another process could point at other bytes between the check and the load.
pub struct Opened {
    pub inspected: Inspected,
    /// Open until the load is done: the descriptor path names it.
    _file: std::fs::File,
    for_loaders: String,
}

impl Opened {
    /// What libtorch's loaders open: the checked file, by its descriptor
    /// where the system names descriptors as files, else its path.
    pub fn path_for_loaders(&self) -> &str {
        &self.for_loaders
    }
}

/// Checks an open model file, tells its format, and keeps it open for the load.
pub fn open_checked(mut file: std::fs::File, size: u64, path: &Path) -> Result<Opened> {
    use std::os::unix::io::AsRawFd;
    let inspected = inspect_file(&mut file, size, path.display().to_string())?;
    let fd = file.as_raw_fd();
    let for_loaders = ["/proc/self/fd", "/dev/fd"]
        .iter()
        .map(|dir| format!("{dir}/{fd}"))
        .find(|named| Path::new(named).exists())
        .unwrap_or_else(|| path.display().to_string());
    Ok(Opened {
        inspected,
        _file: file,
        for_loaders,
    })
}

/// Checks a model file and tells its format from its contents (the tests'
/// way in; loads use [`open_checked`]).
#[cfg(test)]
pub fn inspect(path: &Path) -> Result<Inspected> {
    let (mut file, size) = open_regular(path)?;
    inspect_file(&mut file, size, path.display().to_string())
}

fn inspect_file(file: &mut std::fs::File, size: u64, shown: String) -> Result<Inspected> {
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
        file,
        size,
        shown: shown.clone(),
    };
    let entries = zip.entries()?;
    let is_package = entries.iter().any(|e| e.name.contains("data/aotinductor/"));
    if is_package {
        let models = package_models(&mut zip, &entries)?;
        return Ok(Inspected {
            format: Format::Aoti,
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
    // libtorch's TorchScript reader does not check the CRCs: a bit flip in a
    // weight record loads and runs with the changed weight. Every stored
    // record is checked here, as a package's are (compressed ones are left to
    // the inflater, which checks its own stream).
    for entry in entries.iter().filter(|e| e.method == 0) {
        zip.check_stored(entry)?;
    }
    Ok(Inspected {
        format: Format::TorchScript,
        models: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Json;
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
            let crc = crate::zip::crc32(data).to_le_bytes();
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&ZIP_CENTRAL_ENTRY);
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&crc);
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
    fn loaders_read_the_file_that_was_checked() {
        let bytes = zip(&[("m/data.pkl", b"checked"), ("m/code/__torch__.py", b"y")]);
        let path = write("checked.pt", &bytes);
        let (file, size) = open_regular(&path).unwrap();
        let opened = open_checked(file, size, &path).unwrap();
        assert_eq!(opened.inspected.format, Format::TorchScript);
        // Another file put at the path after the check: the loaders' path
        // still names the checked one (before, libtorch opened the path again).
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"other bytes").unwrap();
        assert_ne!(opened.path_for_loaders(), path.to_str().unwrap());
        assert_eq!(std::fs::read(opened.path_for_loaders()).unwrap(), bytes);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn damaged_records_and_lying_headers_are_corrupt() {
        let good = zip(&[("m/data.pkl", b"weights!"), ("m/code/__torch__.py", b"y")]);
        // A bit flip in a record: before, TorchScript files loaded with it.
        let mut flipped = good.clone();
        let at = flipped.windows(8).position(|w| w == b"weights!").unwrap();
        flipped[at + 3] ^= 0x10;
        let flipped_path = write("flipped.pt", &flipped);
        let err = inspect(&flipped_path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCorrupt, "{err}");
        assert!(err.to_string().contains("m/data.pkl"), "{err}");
        // A local header naming another file than the directory does.
        let mut renamed = good.clone();
        let at = renamed
            .windows(10)
            .position(|w| w == b"m/data.pkl")
            .unwrap();
        renamed[at] = b'n';
        let renamed_path = write("renamed.pt", &renamed);
        let err = inspect(&renamed_path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCorrupt, "{err}");
        assert!(err.to_string().contains("disagrees"), "{err}");
        // A directory that claims more entries than the file could hold.
        let mut counted = good.clone();
        let end = counted.len() - 22;
        counted[end + 8..end + 12].copy_from_slice(&[0xFE, 0xFF, 0xFE, 0xFF]);
        let counted_path = write("counted.pt", &counted);
        assert_eq!(
            inspect(&counted_path).unwrap_err().kind(),
            ErrorKind::ModelCorrupt
        );
        for path in [flipped_path, renamed_path, counted_path] {
            let _ = std::fs::remove_file(path);
        }
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
