//! A model that loaded as the module the tuning cache saved (a frozen
//! TorchScript module), in the stead of its file (load_hint.rs): the file's
//! form is what max-autotune measures from when the cache does not answer
//! (its candidates, and its output as the reference, so that choices never
//! drift from the file's output however often the model is tuned again),
//! and what a remembered choice of another of its forms is built from. It is
//! loaded then, and let go after, like a bundle's other forms.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Model;
use crate::engine::{Engine, LoadContext};
use crate::error::Result;

pub(super) struct InStead {
    /// The model's file, or its bundle form's.
    file: PathBuf,
    /// Its form, while loaded.
    engine: Mutex<Option<Arc<dyn Engine>>>,
}

impl InStead {
    pub fn new(file: PathBuf) -> InStead {
        InStead {
            file,
            engine: Mutex::new(None),
        }
    }
}

impl Model {
    /// The model's form as its file holds it: the model as loaded, or where
    /// that is the module the tuning cache saved, the file's, loaded now (no
    /// hint: as `none` would load it) and kept until the other forms are let
    /// go.
    pub(super) fn as_in_file(&self) -> Result<Arc<dyn Engine>> {
        let Some(in_stead) = &self.in_stead else {
            return Ok(self.original.clone());
        };
        if let Some(engine) = in_stead.engine.lock().clone() {
            return Ok(engine);
        }
        // Loaded with no lock held (a log callback may call back in).
        let path = in_stead.file.to_string_lossy();
        let engine = crate::engine::load(&LoadContext {
            path: &path,
            ..super::forms::load_context(&self.optimizer, &self.path)
        })?
        .engine;
        log::info!(
            "model {}: loaded its file {path}, in whose stead the tuning cache's saved module \
             loaded",
            self.name
        );
        Ok(in_stead.engine.lock().get_or_insert(engine).clone())
    }

    /// Whether the model's file is loaded now (held for a max-autotune).
    pub(super) fn file_form_held(&self) -> bool {
        self.in_stead
            .as_ref()
            .is_some_and(|s| s.engine.lock().is_some())
    }

    /// Lets go of the file's form (what runs holds it if it was chosen).
    pub(super) fn release_file_form(&self) {
        if let Some(in_stead) = &self.in_stead {
            let released = in_stead.engine.lock().take();
            drop(released); // outside the lock
        }
    }

    /// The model as its file holds it, for [`Model::reference`]: loaded for
    /// it where the model loaded as the tuning cache's saved module, and
    /// let go after unless a max-autotune holds it (the model as loaded when
    /// the file does not load, logged).
    pub(super) fn reference_in_file(&self) -> Arc<dyn Engine> {
        let held = self.file_form_held();
        let engine = self.as_in_file();
        if !held {
            self.release_file_form();
        }
        engine.unwrap_or_else(|err| {
            log::warn!(
                "model {}: the reference runs on the module the tuning cache saved, not on the \
                 model's file: {err}",
                self.name
            );
            self.original.clone()
        })
    }

    /// What a remembered `label` of the model's own form is built from: the
    /// model as loaded, or the model's file where the model loaded as the
    /// tuning cache's saved module and `label` is not that module's (held by
    /// what runs, not kept for later).
    pub(super) fn own_form_of(&self, label: &str) -> Result<Arc<dyn Engine>> {
        if self.in_stead.is_none() || self.original.is_form(label) {
            return Ok(self.original.clone());
        }
        let engine = self.as_in_file()?;
        self.release_file_form();
        Ok(engine)
    }
}
