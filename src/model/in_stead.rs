//! A model that loaded as the module the tuning cache saved (a frozen
//! TorchScript module), in the stead of its file (load_hint.rs):
//! - the file's form is what max-autotune measures from when the cache does
//!   not answer (its candidates, and its output as the reference, so that
//!   choices never drift from the file's output however often the model is
//!   tuned again), and what a remembered choice of another of its forms is
//!   built from: loaded then, and let go after, like a bundle's other forms,
//!   and only while the file is still the one the model was loaded from;
//! - the module is loaded again at another thread count where one is asked
//!   for (oneDNN fixes a prepacked primitive's count when it is made).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::forms::FileIdentity;
use super::Model;
use crate::engine::{Engine, LoadContext, Variant};
use crate::error::{Error, ErrorKind, Result};

pub(super) struct InStead {
    /// The model's file, or its bundle form's.
    file: PathBuf,
    /// The module loaded in its stead, its hash, and its form's label.
    module: PathBuf,
    blake3: String,
    label: String,
    /// The file's form, while loaded.
    engine: Mutex<Option<Arc<dyn Engine>>>,
}

impl InStead {
    pub fn new(file: PathBuf, module: PathBuf, blake3: String, label: String) -> InStead {
        InStead {
            file,
            module,
            blake3,
            label,
            engine: Mutex::new(None),
        }
    }
}

impl Model {
    /// The model's form as its file holds it: the model as loaded, or where
    /// that is the module the tuning cache saved, the file's, loaded now as
    /// it loads without the tuning cache, and kept until the other forms are
    /// let go. An error where the file is no longer the one the model was
    /// loaded from, or no longer takes the calls the model takes.
    pub(super) fn as_in_file(&self) -> Result<Arc<dyn Engine>> {
        let Some(in_stead) = &self.in_stead else {
            return Ok(self.original.clone());
        };
        if let Some(engine) = in_stead.engine.lock().clone() {
            return Ok(engine);
        }
        let changed = || {
            FileIdentity::of(Path::new(&self.path))
                .is_none_or(|now| Some(now) != self.file_identity)
        };
        let path = in_stead.file.to_string_lossy();
        let refused = |why: &str| {
            Error::new(
                ErrorKind::LoadFailed,
                format!("{path}, in whose stead the model loaded, {why}"),
            )
        };
        if changed() {
            return Err(refused("changed since the model was loaded"));
        }
        // Loaded with no lock held (a log callback may call back in).
        let engine = crate::engine::load(&LoadContext {
            path: &path,
            ..super::forms::load_context(&self.optimizer, &self.path)
        })?
        .engine;
        if changed() {
            return Err(refused("changed while it was loaded"));
        }
        let contract = crate::engine::bundle::contract;
        if contract(engine.as_ref()) != contract(self.original.as_ref()) {
            return Err(refused("takes other calls or batches than the model"));
        }
        log::info!("model {}: loaded its file {path}", self.name);
        let (kept, extra) = {
            let mut slot = in_stead.engine.lock();
            match slot.clone() {
                Some(first) => (first, Some(engine)), // loaded meanwhile
                None => (slot.insert(engine).clone(), None),
            }
        };
        drop(extra); // outside the lock
        Ok(kept)
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
                "model {}: the reference runs on the module the tuning cache saved: {err}",
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

    /// `engine` at `threads` where it is the module the model loaded as and
    /// was loaded at another count: that module loaded again at `threads`,
    /// its bytes checked again (`None`: not that module, or at that count;
    /// a module that cannot be loaded again runs at `threads` as it was
    /// made, logged).
    pub(super) fn in_stead_at(
        &self,
        engine: &Arc<dyn Engine>,
        threads: usize,
    ) -> Option<Arc<dyn Engine>> {
        let in_stead = self.in_stead.as_ref()?;
        if !Arc::ptr_eq(engine, &self.original) || engine.threads() == Some(threads) {
            return None;
        }
        // Kept with the forms `default` built (its own key: the module's
        // label at that count), so that each compile does not load it again.
        let variant = Variant::new(&in_stead.label);
        let again = || -> Result<Arc<dyn Engine>> {
            let folder = in_stead.module.parent().unwrap_or(Path::new("."));
            if super::tuning_cache::saved_module_hash(folder, &in_stead.module)? != in_stead.blake3
            {
                return Err(Error::new(
                    ErrorKind::ModelCorrupt,
                    format!("{} changed since it loaded", in_stead.module.display()),
                ));
            }
            let at = crate::engine::at_threads(engine, threads)?;
            let path = in_stead.module.to_string_lossy();
            at.load_saved(&path, &variant)?
                .ok_or_else(|| Error::new(ErrorKind::Internal, "the module saves no form"))
        };
        match self.kept_form(&variant, Some(threads), again) {
            Ok(form) => Some(form),
            Err(err) => {
                log::warn!(
                    "model {}: the module the tuning cache saved runs at {threads} threads as it \
                     was made at {:?}: {err}",
                    self.name,
                    engine.threads()
                );
                None
            }
        }
    }
}
