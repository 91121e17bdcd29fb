//! An ONNX model's bytes and the sessions built from them.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::{runtime, Level, Settings};
use crate::error::{Error, ErrorKind, Result};

/// The model's bytes, read again from the file checked at load for each new
/// session (kept open, so that a path pointed elsewhere since does not
/// matter; a file changed in place is refused).
pub(super) struct Source {
    pub file: std::fs::File,
    /// Size, modification and change times at load.
    pub identity: (u64, i64, i64, i64, i64),
    pub shown: String,
    pub folder: PathBuf,
    pub runtime: Arc<runtime::Runtime>,
}

pub(super) fn identity(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

impl Source {
    pub fn read(&self) -> Result<Vec<u8>> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::new(ErrorKind::LoadFailed, format!("{}: {e}", self.shown)))?;
        if identity(&meta) != self.identity {
            return Err(Error::new(
                ErrorKind::LoadFailed,
                format!(
                    "{} changed since it was loaded: another form of it is not built from other \
                     bytes (load it again)",
                    self.shown
                ),
            ));
        }
        read_all(&self.file, self.identity.0, &self.shown)
    }

    pub fn session(&self, bytes: &[u8], settings: Settings) -> Result<Session> {
        let failed = |e: ort::Error| {
            Error::new(
                ErrorKind::LoadFailed,
                format!("ONNX Runtime cannot load {}: {e}", self.shown),
            )
        };
        let level = match settings.level {
            Level::Basic => GraphOptimizationLevel::Level1,
            Level::Extended => GraphOptimizationLevel::Level2,
            Level::All => GraphOptimizationLevel::All,
        };
        // Each step hands the builder back inside its error: only the
        // message is kept.
        let step = |e: ort::Error<ort::session::builder::SessionBuilder>| failed(e.into());
        // A session starts its thread pools when it is made: a child forked
        // after this would inherit none of them.
        crate::fork::mark_used();
        let mut builder = Session::builder(&self.runtime.environment)
            .map_err(failed)?
            .with_optimization_level(level)
            .map_err(step)?
            .with_intra_threads(settings.threads)
            .map_err(step)?
            .with_parallel_execution(settings.parallel)
            .map_err(step)?
            // The parallel form's inter-op pool at the form's count too (ONNX
            // Runtime's default is every core).
            .with_inter_threads(if settings.parallel {
                settings.threads
            } else {
                1
            })
            .map_err(step)?
            // Weights kept in external data files live beside the model.
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                self.folder.to_string_lossy(),
            )
            .map_err(step)?;
        builder.commit_from_memory(bytes).map_err(failed)
    }
}

pub(super) fn read_all(file: &std::fs::File, size: u64, shown: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size as usize).map_err(|_| {
        Error::new(
            ErrorKind::OutOfMemory,
            format!("no memory to read {shown} ({size} bytes)"),
        )
    })?;
    bytes.resize(size as usize, 0);
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::new(ErrorKind::LoadFailed, format!("cannot read {shown}: {e}")))?;
    Ok(bytes)
}
