//! TorchScript files as an engine: methods called through the shim, frozen
//! and optimised forms, and state saved and restored for stateful models.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    Engine, Format, Inputs, LoadContext, LoadHint, MethodSchema, SavedForm, State, Variant,
};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::torch::script::ScriptModule;
use crate::torch::script_state::ScriptState;
use crate::value::Value;

/// torch::jit::freeze: parameters folded into the graph.
const FROZEN: &str = "frozen";
/// freeze + torch::jit::optimize_for_inference.
const FROZEN_FOR_INFERENCE: &str = "frozen + optimize_for_inference";
/// The module as its file holds it.
const AS_LOADED: &str = "as loaded";

pub struct TorchScript {
    module: ScriptModule,
    device: tch::Device,
    methods: Vec<MethodSchema>,
    /// What made this form ("as loaded", "frozen", ...).
    form: &'static str,
    writes_state: bool,
    /// Methods that may write an argument's memory: called on copies, since
    /// the caller's inputs are borrowed read-only (a model doing
    /// `x.mul_(2)` wrote through a `const DLTensor`, and on a read-only page
    /// took the host down).
    writes_inputs: HashSet<String>,
}

impl TorchScript {
    /// Loads from `source` (the checked file's descriptor path), naming
    /// `path` in messages.
    pub fn load(source: &str, path: &str, device: tch::Device) -> Result<TorchScript> {
        let module = ScriptModule::load(source, device).map_err(|err| {
            let kind = match err.kind() {
                ErrorKind::OutOfMemory => ErrorKind::OutOfMemory,
                _ => ErrorKind::LoadFailed,
            };
            Error::new(kind, format!("cannot load TorchScript model {path}")).with_cause(err)
        })?;
        Self::wrap(module, device, AS_LOADED)
    }

    /// A saved form of a model (the tuning cache's frozen module), labelled
    /// with what made it.
    pub fn load_form(path: &str, device: tch::Device, form: &str) -> Result<TorchScript> {
        let module = ScriptModule::load(path, device)?;
        let form = match form {
            FROZEN => FROZEN,
            FROZEN_FOR_INFERENCE => FROZEN_FOR_INFERENCE,
            _ => "saved",
        };
        Self::wrap(module, device, form)
    }

    /// The tuning cache's saved module loaded as the model, in the stead of
    /// its file, as the form `label` names: only a form this engine saves.
    pub fn load_saved_form(path: &str, device: tch::Device, label: &str) -> Result<TorchScript> {
        if ![FROZEN, FROZEN_FOR_INFERENCE].contains(&label) {
            return Err(Error::new(
                ErrorKind::LoadFailed,
                format!("TorchScript saves no {label:?} form"),
            ));
        }
        Self::load_form(path, device, label)
    }

    /// Whether this is the module as its file holds it, not a frozen form.
    fn is_as_loaded(&self) -> bool {
        self.form == AS_LOADED
    }

    fn wrap(module: ScriptModule, device: tch::Device, form: &'static str) -> Result<TorchScript> {
        let methods = MethodSchema::parse_list(&module.methods_json()?)?;
        if !methods.iter().any(|m| m.name == "forward") {
            return Err(Error::new(
                ErrorKind::LoadFailed,
                "the TorchScript module has no forward() method",
            ));
        }
        // An analysis that fails counts as writing: one call at a time is
        // slower, never wrong.
        let writes_state = module.writes_state().unwrap_or(true);
        let writes_inputs = methods
            .iter()
            .filter(|m| module.writes_inputs(&m.name).unwrap_or(true))
            .map(|m| m.name.clone())
            .collect();
        Ok(TorchScript {
            module,
            device,
            methods,
            form,
            writes_state,
            writes_inputs,
        })
    }
}

fn script_state(state: &State) -> Result<&ScriptState> {
    state
        .0
        .downcast_ref::<ScriptState>()
        .ok_or_else(|| Error::new(ErrorKind::Internal, "a state saved by another engine"))
}

impl Engine for TorchScript {
    fn format(&self) -> Format {
        Format::TorchScript
    }

    fn methods(&self) -> &[MethodSchema] {
        &self.methods
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        if self.writes_inputs.contains(method) {
            let copies = args
                .iter()
                .map(|arg| {
                    arg.shallow_clone()
                        .map_tensors(&mut |t| Ok(t.f_detach_copy()?))
                })
                .collect::<Result<Vec<Value>>>()?;
            return self.module.call(method, &copies);
        }
        self.module.call(method, args)
    }

    /// None for a frozen module (the tuning cache's, loaded as the model):
    /// freezing it again builds nothing new.
    fn variants(&self) -> Vec<Variant> {
        match self.is_as_loaded() {
            true => vec![Variant::new(FROZEN_FOR_INFERENCE), Variant::new(FROZEN)],
            false => Vec::new(),
        }
    }

    /// A frozen module is called by its form, as it was chosen: a choice
    /// of it is then its form, saved again, never the model's file.
    fn as_loaded_label(&self) -> String {
        self.form.to_string()
    }

    fn default_why(&self) -> String {
        match self.is_as_loaded() {
            true => format!("default: {FROZEN_FOR_INFERENCE}"),
            false => format!(
                "default: the model loaded as the {} module the tuning cache saved; it runs as it \
                 is",
                self.form
            ),
        }
    }

    fn build_variant(&self, variant: &Variant) -> Result<Arc<dyn Engine>> {
        let (optimize, form) = match variant.label() {
            FROZEN_FOR_INFERENCE => (true, FROZEN_FOR_INFERENCE),
            FROZEN => (false, FROZEN),
            other => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!("TorchScript models have no {other:?} form"),
                ))
            }
        };
        let module = self.module.freeze(optimize)?;
        Ok(Arc::new(Self::wrap(module, self.device, form)?))
    }

    fn load_saved(&self, path: &str, variant: &Variant) -> Result<Option<Arc<dyn Engine>>> {
        Ok(Some(Arc::new(Self::load_form(
            path,
            self.device,
            variant.label(),
        )?)))
    }

    fn save_state(&self) -> Result<Option<State>> {
        Ok(self
            .module
            .save_state()?
            .map(|state| State(Box::new(state))))
    }

    fn restore_state(&self, state: &State) -> Result<()> {
        self.module.restore_state(script_state(state)?)
    }

    fn writes_state(&self) -> bool {
        self.writes_state
    }

    fn inputs(&self) -> Inputs {
        Inputs::Any
    }

    fn adopt_state(&self, from: &dyn Engine) -> Result<()> {
        if let Some(state) = from.save_state()? {
            self.module.apply_state(script_state(&state)?)?;
        }
        Ok(())
    }

    fn state_equals(&self, state: &State) -> Result<bool> {
        self.module.state_equals(script_state(state)?)
    }

    fn save(&self) -> Result<Option<Vec<u8>>> {
        self.module.save_to_memory().map(Some)
    }

    fn describe(&self) -> Json {
        Json::object()
            .with("format", Format::TorchScript.as_str())
            .with("form", self.form)
            .with("methods_given_copies", {
                let mut names: Vec<&str> = self.writes_inputs.iter().map(String::as_str).collect();
                names.sort_unstable();
                names.into_iter().map(Json::from).collect::<Vec<Json>>()
            })
    }
}

/// The form a hint names, from the module TorchScript saved for it (the
/// only engine that saves one), loaded in the stead of the model's file at
/// the hint's thread count: an error when it is not a form TorchScript
/// saves or takes other calls than the model did (the load then goes on
/// without the hint).
pub fn load_saved_in_stead(
    hint: &LoadHint,
    saved: SavedForm,
    context: &LoadContext,
) -> Result<Arc<dyn Engine>> {
    let path = saved.path.to_string_lossy();
    // Loaded at the count it runs at: oneDNN fixes a prepacked primitive's
    // count when it is made (threaded.rs load_saved does the same).
    let loaded = {
        let _threads = hint
            .threads
            .map(crate::runtime::threads::CallThreads::enter)
            .transpose()?;
        TorchScript::load_saved_form(&path, context.device, hint.label)?
    };
    let engine: Arc<dyn Engine> = Arc::new(loaded);
    // A module that keeps state holds the state it was saved with: never
    // loaded in the stead of the file (the cache does not save one so).
    if engine.writes_state() || super::same_model::contract(engine.as_ref()) != saved.contract {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!(
                "{path}, the {} module the tuning cache saved, keeps state or takes other calls or \
                 batches than {} took",
                hint.label, context.path
            ),
        ));
    }
    match hint.threads {
        Some(threads) => super::at_threads(&engine, threads),
        None => Ok(engine),
    }
}
