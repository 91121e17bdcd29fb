//! Method schemas: what each method of a model takes and returns, in
//! TorchScript's spelling ("Optional[Tensor]"), which every engine writes.

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;

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
