//! Arguments and results of any TorchScript kind: tensors, numbers, strings,
//! None, and lists and tuples of them.

use std::fmt;

use crate::error::{Error, Result};
use crate::runtime::Tensor;

/// One argument or result.
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Tensor(Tensor),
    List(Vec<Value>),
    Tuple(Vec<Value>),
}

impl Value {
    /// What the value is, in a method schema's words.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "float",
            Value::Str(_) => "str",
            Value::Tensor(_) => "Tensor",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
        }
    }

    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A copy sharing tensors' storage (tch tensors are not Clone).
    pub fn shallow_clone(&self) -> Value {
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Double(d) => Value::Double(*d),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::List(items) => Value::List(items.iter().map(Value::shallow_clone).collect()),
            Value::Tuple(items) => Value::Tuple(items.iter().map(Value::shallow_clone).collect()),
        }
    }

    /// Every tensor in the tree, in order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        self.collect_tensors(&mut out);
        out
    }

    fn collect_tensors<'a>(&'a self, out: &mut Vec<&'a Tensor>) {
        match self {
            Value::Tensor(t) => out.push(t),
            Value::List(items) | Value::Tuple(items) => {
                items.iter().for_each(|item| item.collect_tensors(out))
            }
            _ => {}
        }
    }

    /// The tensors of a result made only of tensors (a tensor, or tuples and
    /// lists of them, nested), flattened in order; anything else says what
    /// the model returned.
    pub fn into_tensors(self) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        self.flatten_into(&mut out)?;
        Ok(out)
    }

    fn flatten_into(self, out: &mut Vec<Tensor>) -> Result<()> {
        match self {
            Value::Tensor(t) => {
                out.push(t);
                Ok(())
            }
            Value::List(items) | Value::Tuple(items) => items
                .into_iter()
                .try_for_each(|item| item.flatten_into(out)),
            other => Err(Error::invalid_argument(format!(
                "the model returned {} where perfopt_model_run passes tensors only (a tensor, or \
                 tuples and lists of tensors): call the method with perfopt_model_call to get \
                 other results",
                other.describe()
            ))),
        }
    }

    /// Applies `f` to every tensor, keeping the tree's shape.
    pub fn map_tensors(self, f: &mut impl FnMut(Tensor) -> Result<Tensor>) -> Result<Value> {
        Ok(match self {
            Value::Tensor(t) => Value::Tensor(f(t)?),
            Value::List(items) => Value::List(
                items
                    .into_iter()
                    .map(|item| item.map_tensors(f))
                    .collect::<Result<_>>()?,
            ),
            Value::Tuple(items) => Value::Tuple(
                items
                    .into_iter()
                    .map(|item| item.map_tensors(f))
                    .collect::<Result<_>>()?,
            ),
            other => other,
        })
    }

    /// "an int (3)", "a Tensor of shape [2, 3]": for messages.
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".to_string(),
            Value::Bool(b) => format!("a bool ({b})"),
            Value::Int(i) => format!("an int ({i})"),
            Value::Double(d) => format!("a float ({d})"),
            Value::Str(s) => format!("a str ({:?})", truncate(s, 40)),
            Value::Tensor(t) => format!("a Tensor of shape {:?}", t.size()),
            Value::List(items) => format!("a list of {} item(s)", items.len()),
            Value::Tuple(items) => format!("a tuple of {} item(s)", items.len()),
        }
    }

    /// A short, exact label of a non-tensor value (for cache keys).
    pub fn label(&self) -> String {
        match self {
            Value::Tensor(t) => {
                let dims: Vec<String> = t.size().iter().map(i64::to_string).collect();
                format!("{}:{:?}", dims.join("x"), t.kind())
            }
            Value::List(items) | Value::Tuple(items) => {
                let inner: Vec<String> = items.iter().map(Value::label).collect();
                format!("[{}]", inner.join(","))
            }
            Value::Str(s) => format!("{s:?}"),
            Value::None => "None".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => format!("{d:e}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

/// Tensors as arguments.
pub fn tensor_args(tensors: Vec<Tensor>) -> Vec<Value> {
    tensors.into_iter().map(Value::Tensor).collect()
}

/// Copies of a list of values sharing tensors.
pub fn shallow_clone_all(values: &[Value]) -> Vec<Value> {
    values.iter().map(Value::shallow_clone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_tensor_results_and_names_others() {
        let t = || Value::Tensor(Tensor::from_slice(&[1.0f32, 2.0]));
        let nested = Value::Tuple(vec![t(), Value::List(vec![t(), t()])]);
        assert_eq!(nested.tensors().len(), 3);
        assert_eq!(nested.into_tensors().unwrap().len(), 3);
        let err = Value::Tuple(vec![t(), Value::Int(3)])
            .into_tensors()
            .unwrap_err();
        assert!(err.to_string().contains("an int (3)"), "{err}");
        assert_eq!(Value::Str("x".into()).kind_name(), "str");
        assert_eq!(
            Value::List(vec![Value::Int(1), Value::Bool(true)]).label(),
            "[1,true]"
        );
    }
}
