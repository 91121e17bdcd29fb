//! The model-format seam: the model core runs an [`Engine`] (call a method,
//! build its optimised forms where the format has them, save and restore its
//! state) without knowing which format it came from. TorchScript files are
//! one engine, AOTInductor packages another; CUDA graphs, batching,
//! measurement and tuning sit on top of either.

pub(crate) mod aoti;
mod aoti_inputs;
pub(crate) mod torchscript;
mod unpacked;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::value::Value;

pub use crate::archive::Format;

/// One argument of a method's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    pub name: String,
    /// The schema's type: "Tensor", "int", "Optional[Tensor]", "List[int]"...
    pub type_name: String,
    /// The default, as TorchScript prints it; `None` when required.
    pub default: Option<String>,
}

/// A method a model offers, with its schema.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodSchema {
    pub name: String,
    /// "forward(__torch__.M self, Tensor x, int sr) -> Tensor"
    pub schema: String,
    pub arguments: Vec<Argument>,
    pub returns: Vec<String>,
    pub vararg: bool,
}

impl MethodSchema {
    /// (required, total) arguments; total `None` for varargs.
    pub fn arity(&self) -> (usize, Option<usize>) {
        let required = self
            .arguments
            .iter()
            .filter(|a| a.default.is_none())
            .count();
        (required, (!self.vararg).then_some(self.arguments.len()))
    }

    /// Outputs a tensor-only call hands out, when the schema says: one for a
    /// Tensor, n for a Tuple of n Tensors; `None` for lists and others.
    pub fn tensor_outputs(&self) -> Option<usize> {
        match self.returns.as_slice() {
            [single] => tensor_count(single),
            _ => None,
        }
    }

    /// Whether the schema says the method returns something besides tensors
    /// (an int, a string, a dict...), so that a tensor-only run can refuse
    /// before it runs (and changes a model's state). Optional, Any and
    /// classes may hold tensors: only a run shows.
    pub fn returns_non_tensors(&self) -> bool {
        const NON_TENSORS: [&str; 11] = [
            "int",
            "float",
            "bool",
            "str",
            "complex",
            "NoneType",
            "Dict",
            "Device",
            "ScalarType",
            "Layout",
            "MemoryFormat",
        ];
        self.returns.iter().any(|r| {
            r.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|token| NON_TENSORS.contains(&token))
        })
    }

    pub fn to_json(&self) -> Json {
        Json::object()
            .with("name", self.name.as_str())
            .with("schema", self.schema.as_str())
            .with(
                "arguments",
                Json::Array(
                    self.arguments
                        .iter()
                        .map(|a| {
                            Json::object()
                                .with("name", a.name.as_str())
                                .with("type", a.type_name.as_str())
                                .with("default", a.default.clone())
                        })
                        .collect(),
                ),
            )
            .with(
                "returns",
                Json::Array(
                    self.returns
                        .iter()
                        .map(|r| Json::from(r.as_str()))
                        .collect(),
                ),
            )
    }

    /// Parses the shim's JSON method list.
    pub fn parse_list(text: &str) -> Result<Vec<MethodSchema>> {
        let json = Json::parse(text)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("method list: {e}")))?;
        Ok(json
            .as_array()
            .iter()
            .map(|m| MethodSchema {
                name: m
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                schema: m
                    .get("schema")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                arguments: m
                    .get("arguments")
                    .map(Json::as_array)
                    .unwrap_or(&[])
                    .iter()
                    .map(|a| Argument {
                        name: a
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_string(),
                        type_name: a
                            .get("type")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_string(),
                        default: a.get("default").and_then(Json::as_str).map(str::to_string),
                    })
                    .collect(),
                returns: m
                    .get("returns")
                    .map(Json::as_array)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect(),
                vararg: m.get("vararg") == Some(&Json::Bool(true)),
            })
            .collect())
    }
}

/// Tensors in a type like "Tensor" or "Tuple[Tensor, Tensor]".
fn tensor_count(type_name: &str) -> Option<usize> {
    if type_name == "Tensor" {
        return Some(1);
    }
    let inner = type_name.strip_prefix("Tuple[")?.strip_suffix(']')?;
    let parts: Vec<&str> = inner.split(", ").collect();
    parts.iter().all(|p| *p == "Tensor").then_some(parts.len())
}

/// An optimised form an engine can build of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// torch::jit::freeze: parameters folded into the graph.
    Frozen,
    /// freeze + torch::jit::optimize_for_inference.
    FrozenForInference,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Frozen => "frozen",
            Variant::FrozenForInference => "frozen + optimize_for_inference",
        }
    }
}

/// A saved state, opaque to the core (each engine knows its own).
pub struct State(pub(crate) Box<dyn Any + Send + Sync>);

/// What the model core needs of a format.
pub trait Engine: Send + Sync {
    fn format(&self) -> Format;

    /// Every method, with its schema.
    fn methods(&self) -> &[MethodSchema];

    /// Calls a method with arguments of any kind the format takes.
    fn call(&self, method: &str, args: &[Value]) -> Result<Value>;

    /// The optimised forms this engine can build, best first (none for a
    /// format that is compiled already).
    fn variants(&self) -> &'static [Variant] {
        &[]
    }

    fn build_variant(&self, variant: Variant) -> Result<Arc<dyn Engine>> {
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "{} models have no {} form",
                self.format().as_str(),
                variant.label()
            ),
        ))
    }

    /// The state methods may change between calls (`None`: nothing to save,
    /// or a format whose state perfopt does not track).
    fn save_state(&self) -> Result<Option<State>> {
        Ok(None)
    }

    fn restore_state(&self, _state: &State) -> Result<()> {
        Ok(())
    }

    /// Whether calls change the engine's state (a TorchScript method that
    /// writes an attribute): such an engine runs one call at a time.
    fn writes_state(&self) -> bool {
        false
    }

    /// Takes over `from`'s current state (another form of the same model),
    /// so that a recompiled model carries on where the last form stopped.
    fn adopt_state(&self, _from: &dyn Engine) -> Result<()> {
        Ok(())
    }

    /// Whether the engine's state still equals `state`.
    fn state_equals(&self, _state: &State) -> Result<bool> {
        Ok(true)
    }

    /// This form as bytes that load as fast as the original (the tuning
    /// cache writes them); `None` where the format cannot save itself.
    fn save(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// The largest batch (dimension 0) the model accepts, when it has one
    /// (a package compiled with bounds); batching stays within it.
    fn batch_limit(&self) -> Option<i64> {
        None
    }

    /// The one batch size the model runs (a package exported with a static
    /// batch); run_batched pads its last chunk to it.
    fn fixed_batch(&self) -> Option<i64> {
        None
    }

    /// Format-specific facts for the model report.
    fn describe(&self) -> Json {
        Json::object().with("format", self.format().as_str())
    }
}

/// What [`load`] found.
pub struct Loaded {
    pub engine: Arc<dyn Engine>,
    pub file_size: u64,
}

/// Loads a model file in whichever format its contents say.
pub fn load(path: &str, device: tch::Device, runners: usize) -> Result<Loaded> {
    let opened = crate::archive::open_checked(Path::new(path))?;
    // libtorch reads the file perfopt checked (by its descriptor), not the
    // path again; messages name the path.
    let source = opened.path_for_loaders();
    let checked = &opened.inspected;
    let engine: Arc<dyn Engine> = match checked.format {
        Format::TorchScript => Arc::new(torchscript::TorchScript::load(source, path, device)?),
        Format::Aoti => Arc::new(aoti::Aoti::load(source, path, checked, device, runners)?),
    };
    Ok(Loaded {
        engine,
        file_size: checked.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tensor_outputs_from_the_schema() {
        assert_eq!(tensor_count("Tensor"), Some(1));
        assert_eq!(tensor_count("Tuple[Tensor, Tensor]"), Some(2));
        assert_eq!(tensor_count("Tuple[Tensor, int]"), None);
        assert_eq!(tensor_count("List[Tensor]"), None);
    }

    #[test]
    fn tells_non_tensor_returns_from_the_schema() {
        let schema = |returns: &str| MethodSchema {
            name: "forward".into(),
            schema: String::new(),
            arguments: Vec::new(),
            returns: vec![returns.into()],
            vararg: false,
        };
        assert!(schema("Tuple[Tensor, int]").returns_non_tensors());
        assert!(schema("Dict[str, Tensor]").returns_non_tensors());
        assert!(!schema("Tuple[Tensor, Tensor]").returns_non_tensors());
        assert!(!schema("Optional[Tensor]").returns_non_tensors());
        assert!(!schema("List[Tensor]").returns_non_tensors());
    }
}
