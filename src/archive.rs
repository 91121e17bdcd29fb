//! Checks a TorchScript file before libtorch sees it, so that the common
//! mistakes get their own status and a message naming the path: no file, a
//! file that is not a TorchScript archive, an archive cut short.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

const ZIP_LOCAL_HEADER: [u8; 4] = *b"PK\x03\x04";
const ZIP_END_OF_DIRECTORY: [u8; 4] = *b"PK\x05\x06";
/// The end-of-central-directory record is 22 bytes plus a comment of at most 64 KiB.
const END_RECORD_SEARCH: u64 = 22 + 65_535;

/// TorchScript files are zip archives (torch.jit.save). Returns the file's size.
pub fn check_torchscript_archive(path: &Path) -> Result<u64> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|err| {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::FileNotFound
        } else {
            ErrorKind::LoadFailed
        };
        Error::new(kind, format!("cannot open model file {shown}: {err}"))
    })?;
    if metadata.is_dir() {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!("model path {shown} is a directory, not a TorchScript file"),
        ));
    }
    let size = metadata.len();
    let mut file = File::open(path).map_err(|err| {
        Error::new(
            ErrorKind::LoadFailed,
            format!("cannot open model file {shown}: {err}"),
        )
    })?;
    let mut magic = [0u8; 4];
    if size < 4 || file.read_exact(&mut magic).is_err() || magic != ZIP_LOCAL_HEADER {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{shown} is not a TorchScript file: TorchScript files are zip archives made by \
                 torch.jit.save, and this one ({size} bytes) does not start like one"
            ),
        ));
    }
    let tail_len = size.min(END_RECORD_SEARCH);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(size - tail_len))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|err| {
            Error::new(
                ErrorKind::LoadFailed,
                format!("cannot read model file {shown}: {err}"),
            )
        })?;
    if !tail.windows(4).any(|w| w == ZIP_END_OF_DIRECTORY) {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{shown} is a truncated or damaged TorchScript archive: it starts like a zip \
                 archive ({size} bytes) but has no end-of-directory record; copy it again"
            ),
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("perfopt-archive-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn classifies_bad_files() {
        let missing = Path::new("/nonexistent/perfopt/model.pt");
        assert_eq!(
            check_torchscript_archive(missing).unwrap_err().kind(),
            ErrorKind::FileNotFound
        );
        let text = write("text.pt", b"not a model at all");
        let err = check_torchscript_archive(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LoadFailed);
        assert!(err.to_string().contains("text.pt"), "{err}");
        let empty = write("empty.pt", b"");
        assert_eq!(
            check_torchscript_archive(&empty).unwrap_err().kind(),
            ErrorKind::LoadFailed
        );
        let truncated = write("cut.pt", b"PK\x03\x04 the rest is gone");
        assert_eq!(
            check_torchscript_archive(&truncated).unwrap_err().kind(),
            ErrorKind::ModelCorrupt
        );
        let mut whole = b"PK\x03\x04 payload ".to_vec();
        whole.extend_from_slice(b"PK\x05\x06");
        whole.extend_from_slice(&[0u8; 18]);
        let ok = write("ok.pt", &whole);
        assert_eq!(check_torchscript_archive(&ok).unwrap(), whole.len() as u64);
        assert_eq!(
            check_torchscript_archive(&std::env::temp_dir())
                .unwrap_err()
                .kind(),
            ErrorKind::LoadFailed
        );
        for path in [text, empty, truncated, ok] {
            let _ = std::fs::remove_file(path);
        }
    }
}
