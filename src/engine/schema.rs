//! Method schemas: what each method of a model takes and returns, as typed
//! kinds ([`TypeKind`]) that no engine owns. Reports spell them as Python's
//! typing does ("Optional[Tensor]", "Tuple[Tensor, Tensor]"), which is also
//! TorchScript's spelling: the TorchScript engine parses its schemas from
//! it, the others build their kinds directly.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;

/// The type of an argument or a result, engine-neutral.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    Tensor,
    Int,
    Float,
    Bool,
    Str,
    Complex,
    NoneType,
    Optional(Box<TypeKind>),
    List(Box<TypeKind>),
    Tuple(Vec<TypeKind>),
    Dict(Box<TypeKind>, Box<TypeKind>),
    /// Anything else, by its name and parameters: Device, ScalarType, Any,
    /// a Union, a class (`__torch__.Config`).
    Other {
        name: String,
        args: Vec<TypeKind>,
    },
}

/// Names of [`TypeKind::Other`] that are never tensors.
const OTHER_NON_TENSORS: [&str; 5] = ["Device", "ScalarType", "Layout", "MemoryFormat", "number"];

impl TypeKind {
    /// A tuple of `n` tensors, or one tensor when `n` is 1.
    pub fn tensors(n: usize) -> TypeKind {
        match n {
            1 => TypeKind::Tensor,
            n => TypeKind::Tuple(vec![TypeKind::Tensor; n]),
        }
    }

    /// Parses Python typing's spelling ("Optional[List[Tensor]]"); what it
    /// does not know stays [`TypeKind::Other`] by its spelling.
    pub fn parse(spelling: &str) -> TypeKind {
        let mut parser = Parser {
            text: spelling.as_bytes(),
            at: 0,
        };
        match parser.kind() {
            Some(kind) if parser.at == parser.text.len() => kind,
            _ => TypeKind::Other {
                name: spelling.to_string(),
                args: Vec::new(),
            },
        }
    }

    fn from_parts(name: &str, mut args: Vec<TypeKind>) -> TypeKind {
        let boxed = |args: &mut Vec<TypeKind>| Box::new(args.remove(0));
        match (name, args.len()) {
            ("Tensor", 0) => TypeKind::Tensor,
            ("int", 0) => TypeKind::Int,
            ("float", 0) => TypeKind::Float,
            ("bool", 0) => TypeKind::Bool,
            ("str", 0) => TypeKind::Str,
            ("complex", 0) => TypeKind::Complex,
            ("NoneType", 0) => TypeKind::NoneType,
            ("Optional", 1) => TypeKind::Optional(boxed(&mut args)),
            ("List", 1) => TypeKind::List(boxed(&mut args)),
            ("Tuple", _) => TypeKind::Tuple(args),
            ("Dict", 2) => {
                let key = boxed(&mut args);
                TypeKind::Dict(key, boxed(&mut args))
            }
            _ => TypeKind::Other {
                name: name.to_string(),
                args,
            },
        }
    }

    /// Tensors in a Tensor (1) or a Tuple of Tensors (n); `None` otherwise.
    pub fn tensor_count(&self) -> Option<usize> {
        match self {
            TypeKind::Tensor => Some(1),
            TypeKind::Tuple(items) if items.iter().all(|i| *i == TypeKind::Tensor) => {
                Some(items.len())
            }
            _ => None,
        }
    }

    /// Whether a value of this type holds something besides tensors (an
    /// int, a string, a dict...). Optional, Any and classes may hold
    /// tensors: only a run shows.
    pub fn holds_non_tensors(&self) -> bool {
        match self {
            TypeKind::Tensor => false,
            TypeKind::Int
            | TypeKind::Float
            | TypeKind::Bool
            | TypeKind::Str
            | TypeKind::Complex
            | TypeKind::NoneType
            | TypeKind::Dict(..) => true,
            TypeKind::Optional(inner) | TypeKind::List(inner) => inner.holds_non_tensors(),
            TypeKind::Tuple(items) => items.iter().any(TypeKind::holds_non_tensors),
            TypeKind::Other { name, args } => {
                OTHER_NON_TENSORS.contains(&name.as_str())
                    || args.iter().any(TypeKind::holds_non_tensors)
            }
        }
    }
}

impl fmt::Display for TypeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, args: &[&TypeKind]| {
            write!(f, "{name}[")?;
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{arg}")?;
            }
            f.write_str("]")
        };
        match self {
            TypeKind::Tensor => f.write_str("Tensor"),
            TypeKind::Int => f.write_str("int"),
            TypeKind::Float => f.write_str("float"),
            TypeKind::Bool => f.write_str("bool"),
            TypeKind::Str => f.write_str("str"),
            TypeKind::Complex => f.write_str("complex"),
            TypeKind::NoneType => f.write_str("NoneType"),
            TypeKind::Optional(inner) => list(f, "Optional", &[inner]),
            TypeKind::List(inner) => list(f, "List", &[inner]),
            TypeKind::Tuple(items) if items.is_empty() => f.write_str("Tuple[()]"),
            TypeKind::Tuple(items) => list(f, "Tuple", &items.iter().collect::<Vec<_>>()),
            TypeKind::Dict(key, value) => list(f, "Dict", &[key, value]),
            TypeKind::Other { name, args } if args.is_empty() => f.write_str(name),
            TypeKind::Other { name, args } => list(f, name, &args.iter().collect::<Vec<_>>()),
        }
    }
}

/// A recursive-descent reader of typing's spelling: NAME or NAME[ARG, ...],
/// with `()` as the empty tuple's parameter list.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_spaces();
        let found = self.text.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn kind(&mut self) -> Option<TypeKind> {
        self.skip_spaces();
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|b| !matches!(b, b'[' | b']' | b',' | b' '))
        {
            self.at += 1;
        }
        let name = std::str::from_utf8(&self.text[start..self.at]).ok()?;
        if name.is_empty() {
            return None;
        }
        let mut args = Vec::new();
        if self.eat(b'[') {
            if self.text[self.at..].starts_with(b"()") {
                self.at += 2;
            } else {
                loop {
                    args.push(self.kind()?);
                    if !self.eat(b',') {
                        break;
                    }
                }
            }
            if !self.eat(b']') {
                return None;
            }
        }
        Some(TypeKind::from_parts(name, args))
    }
}

/// One argument of a method's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    pub name: String,
    pub kind: TypeKind,
    /// The default, as the engine prints it; `None` when required.
    pub default: Option<String>,
}

/// A method a model offers, with its schema.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodSchema {
    pub name: String,
    /// "forward(__torch__.M self, Tensor x, int sr) -> Tensor"
    pub schema: String,
    pub arguments: Vec<Argument>,
    pub returns: Vec<TypeKind>,
    pub vararg: bool,
}

impl MethodSchema {
    /// `forward(Tensor a, Tensor b) -> Tuple[Tensor, Tensor]`: a method that
    /// takes the named tensors and returns `outputs` tensors (`None`: a
    /// list of them), as the compiled formats have.
    pub fn tensors_forward(inputs: Vec<String>, outputs: Option<usize>) -> MethodSchema {
        let returns = outputs.map_or(
            TypeKind::List(Box::new(TypeKind::Tensor)),
            TypeKind::tensors,
        );
        let listed: Vec<String> = inputs.iter().map(|n| format!("Tensor {n}")).collect();
        MethodSchema {
            name: "forward".to_string(),
            schema: format!("forward({}) -> {returns}", listed.join(", ")),
            arguments: inputs
                .into_iter()
                .map(|name| Argument {
                    name,
                    kind: TypeKind::Tensor,
                    default: None,
                })
                .collect(),
            returns: vec![returns],
            vararg: false,
        }
    }

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
            [single] => single.tensor_count(),
            _ => None,
        }
    }

    /// Whether the schema says the method returns something besides tensors,
    /// so that a tensor-only run can refuse before it runs (and changes a
    /// model's state).
    pub fn returns_non_tensors(&self) -> bool {
        self.returns.iter().any(TypeKind::holds_non_tensors)
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
                                .with("type", a.kind.to_string())
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
                        .map(|r| Json::from(r.to_string()))
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
                        kind: TypeKind::parse(a.get("type").and_then(Json::as_str).unwrap_or("")),
                        default: a.get("default").and_then(Json::as_str).map(str::to_string),
                    })
                    .collect(),
                returns: m
                    .get("returns")
                    .map(Json::as_array)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|r| r.as_str().map(TypeKind::parse))
                    .collect(),
                vararg: m.get("vararg") == Some(&Json::Bool(true)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_spellings_parse_and_print_back() {
        for spelling in [
            "Tensor",
            "int",
            "Optional[Tensor]",
            "List[Optional[Tensor]]",
            "Tuple[Tensor, int]",
            "Tuple[()]",
            "Dict[str, List[Tensor]]",
            "Union[Tensor, NoneType]",
            "__torch__.Config",
            "Any",
        ] {
            assert_eq!(TypeKind::parse(spelling).to_string(), spelling);
        }
        assert_eq!(
            TypeKind::parse("Dict[str, Tensor]"),
            TypeKind::Dict(Box::new(TypeKind::Str), Box::new(TypeKind::Tensor))
        );
        // Unbalanced: kept by its spelling.
        assert_eq!(TypeKind::parse("List[Tensor").to_string(), "List[Tensor");
        assert_eq!(TypeKind::parse("").to_string(), "");
    }

    #[test]
    fn counts_tensor_outputs_from_the_schema() {
        let count = |s: &str| TypeKind::parse(s).tensor_count();
        assert_eq!(count("Tensor"), Some(1));
        assert_eq!(count("Tuple[Tensor, Tensor]"), Some(2));
        assert_eq!(count("Tuple[Tensor, int]"), None);
        assert_eq!(count("List[Tensor]"), None);
        assert_eq!(TypeKind::tensors(3).tensor_count(), Some(3));
    }

    #[test]
    fn tells_non_tensor_returns_from_the_schema() {
        let schema = |returns: &str| MethodSchema {
            name: "forward".into(),
            schema: String::new(),
            arguments: Vec::new(),
            returns: vec![TypeKind::parse(returns)],
            vararg: false,
        };
        assert!(schema("Tuple[Tensor, int]").returns_non_tensors());
        assert!(schema("Dict[str, Tensor]").returns_non_tensors());
        assert!(schema("Optional[int]").returns_non_tensors());
        assert!(schema("Union[Tensor, str]").returns_non_tensors());
        assert!(schema("Device").returns_non_tensors());
        assert!(!schema("Tuple[Tensor, Tensor]").returns_non_tensors());
        assert!(!schema("Optional[Tensor]").returns_non_tensors());
        assert!(!schema("List[Tensor]").returns_non_tensors());
        assert!(!schema("__torch__.Output").returns_non_tensors());
    }

    #[test]
    fn tensor_methods_are_built_typed() {
        let method = MethodSchema::tensors_forward(vec!["x".into(), "state".into()], Some(2));
        assert_eq!(
            method.schema,
            "forward(Tensor x, Tensor state) -> Tuple[Tensor, Tensor]"
        );
        assert_eq!(method.tensor_outputs(), Some(2));
        assert_eq!(method.arity(), (2, Some(2)));
    }
}
