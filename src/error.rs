//! perfopt's error type: a kind (which becomes a C status code), a message,
//! and the chain of causes that led to it.

use std::fmt;

// ErrorKind: one variant per perfopt_status code, generated from the one
// table of codes (src/ffi/status.rs) by build.rs.
include!(concat!(env!("OUT_DIR"), "/error_kind.rs"));

#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    causes: Vec<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn set_kind(&mut self, kind: ErrorKind) {
        self.kind = kind;
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Wraps this error in a higher-level message, keeping the kind: the old
    /// message becomes the first cause, as in anyhow's context chains.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let inner = std::mem::replace(&mut self.message, message.into());
        self.causes.insert(0, inner);
        self
    }

    pub fn null_argument(name: &str) -> Self {
        Error::new(
            ErrorKind::NullArgument,
            format!("argument `{name}` is NULL"),
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// This error's message and kind over `cause`'s message chain (the kind
    /// of the cause is dropped): "cannot load model x: <why>".
    pub fn with_cause(self, cause: Error) -> Error {
        let mut err = cause.context(self.message);
        err.kind = self.kind;
        err
    }
}

/// "message: cause: cause", the whole chain on one line.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(feature = "torch")]
impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Self {
        let text = err.to_string();
        // libtorch's CPU allocator fails with "can't allocate memory" or "not
        // enough memory", CUDA's with "out of memory", oneDNN with "could not
        // create a primitive" (its scratch memory; as the shim's common.h):
        // all are out of memory.
        let kind = if [
            "out of memory",
            "OutOfMemory",
            "can't allocate memory",
            "not enough memory",
            "could not create a primitive",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            ErrorKind::OutOfMemory
        } else {
            ErrorKind::Torch
        };
        Error::new(kind, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_kind_and_chains_messages() {
        let err = Error::new(ErrorKind::Environment, "bad value")
            .context("reading TRANSLATOR_CUDNN_BENCHMARK")
            .context("creating the optimizer");
        assert_eq!(err.kind(), ErrorKind::Environment);
        assert_eq!(
            err.to_string(),
            "creating the optimizer: reading TRANSLATOR_CUDNN_BENCHMARK: bad value"
        );
    }
}
