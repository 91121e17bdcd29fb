//! What a load needs and what it finds: the caller's context, the tuning
//! cache's hint (how the model last ran, which the load builds where the
//! engine can), the form an engine saved, and the engine loaded with its
//! bundle's other forms.

use std::path::Path;
use std::sync::Arc;

use super::{bundle, Engine};
use crate::runtime::Device;

/// What [`load`] found.
pub struct Loaded {
    pub engine: Arc<dyn Engine>,
    pub file_size: u64,
    /// For a bundle: which form was loaded, and its other forms.
    pub bundle: Option<bundle::Bundle>,
}

/// What a load needs besides the file.
#[derive(Clone, Copy)]
pub struct LoadContext<'a> {
    /// The path, as messages name it.
    pub path: &'a str,
    pub device: Device,
    /// The host's cores (a package runs concurrent calls on that many
    /// model containers, at most 8).
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub cores: usize,
    /// The optimizer's intra-op thread count (an engine with its own pools
    /// starts at it).
    pub threads: usize,
    /// The ONNX Runtime library the caller named, if any.
    pub onnxruntime: Option<&'a str>,
    /// How the tuning cache last ran this model, which the load builds
    /// instead of the form as loaded where the engine can.
    pub hint: Option<LoadHint<'a>>,
}

/// A remembered choice a load builds directly: a bundle's form by name
/// ("onnx: graph optimisation extended"; applied when that form is the one
/// the bundle loads) or, for a form or a file, the engine's own label, at a
/// thread count. An engine that builds every form from the one loaded
/// ignores it.
#[derive(Clone, Copy, Debug)]
pub struct LoadHint<'a> {
    pub label: &'a str,
    pub threads: Option<usize>,
    /// For a bundle whose chosen form may load alone in the stead of the
    /// form the model was (bundle::StandIn).
    pub stand_in: Option<&'a bundle::StandIn>,
    /// The chosen form as the engine saved it, when it did (only
    /// TorchScript saves one: unread without libtorch).
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub saved: Option<SavedForm<'a>>,
}

/// A form an engine saved for this model ([`Engine::save`]: the tuning
/// cache's frozen TorchScript module), its bytes checked by the cache
/// against the hash it recorded: loaded in the stead of the model's file
/// (or its bundle form's) where the hint names that form, and kept only
/// where it takes the calls and batches the model took (`contract`,
/// same_model.rs), so that the model is the same to its caller.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub struct SavedForm<'a> {
    pub path: &'a Path,
    pub contract: &'a str,
}
