//! What a form's `forward` takes, input by input, where the form fixes it:
//! an element type and, per dimension, a size or any. An ONNX graph fixes
//! every dimension its export did not make symbolic, and refuses other
//! sizes; a TorchScript module takes whatever its code takes. A form loaded
//! alone in the stead of another (bundle.rs) is held to what the other
//! took: the model checks each call against it (src/model/arguments.rs), so
//! that a traced module never runs sizes the form it stands in for refused
//! (a trace may have baked them in and answer wrongly).

use crate::error::{Error, Result};
use crate::runtime::Tensor;

/// What a form's `forward` takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Any element type and size its code takes (TorchScript).
    Any,
    /// Each input's element type and sizes, as the form checks them.
    Fixed(Vec<InputSpec>),
    /// Not said: such a form neither stands in for another nor is stood in
    /// for.
    Unknown,
}

/// One input: its element type ("float32", as scalar_type.rs names it) and
/// per dimension a size, or `None` for any.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub dtype: String,
    pub dims: Vec<Option<i64>>,
}

impl InputSpec {
    fn text(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map_or_else(|| "?".to_string(), |n| n.to_string()))
            .collect();
        format!("{}[{}]", self.dtype, dims.join(","))
    }

    fn parse(text: &str) -> Option<InputSpec> {
        let (dtype, dims) = text.strip_suffix(']')?.split_once('[')?;
        let known = |name: &str| crate::scalar_type::kind_named(name).is_some();
        let dims = match dims {
            "" => Vec::new(),
            dims => dims
                .split(',')
                .map(|d| match d {
                    "?" => Some(None),
                    n => n.parse::<i64>().ok().filter(|&n| n >= 0).map(Some),
                })
                .collect::<Option<Vec<_>>>()?,
        };
        known(dtype).then(|| InputSpec {
            dtype: dtype.to_string(),
            dims,
        })
    }

    /// Whether this input takes every tensor `other` takes, the batch
    /// (dimension 0, which the forms' contracts compare) aside.
    fn takes_all_of(&self, other: &InputSpec) -> bool {
        self.dtype == other.dtype
            && self.dims.len() == other.dims.len()
            && self
                .dims
                .iter()
                .zip(&other.dims)
                .skip(1)
                .all(|(mine, theirs)| mine.is_none() || mine == theirs)
    }

    /// The same input at any batch: the batch is the contract's (a model
    /// batched by run_batched is checked whole before it is split).
    fn any_batch(&self) -> InputSpec {
        let mut dims = self.dims.clone();
        if let Some(first) = dims.first_mut() {
            *first = None;
        }
        InputSpec {
            dtype: self.dtype.clone(),
            dims,
        }
    }

    /// Refuses a tensor this input does not take, as the form held to it
    /// would have.
    pub fn check(&self, index: usize, tensor: &Tensor, form: &str) -> Result<()> {
        let size = tensor.size();
        let dtype = crate::scalar_type::code_of(tensor.kind()).map(|(_, name)| name);
        let fits = dtype == Some(self.dtype.as_str())
            && size.len() == self.dims.len()
            && size
                .iter()
                .zip(&self.dims)
                .all(|(&n, want)| want.is_none_or(|want| n == want));
        if fits {
            return Ok(());
        }
        Err(Error::invalid_argument(format!(
            "input {index}: the model takes {} (as its {form} form was exported; `?`: any size) \
             and got {} of shape {size:?}",
            self.text(),
            dtype.unwrap_or("another element type"),
        )))
    }
}

/// As a record keeps them: "float32[?,32]; int64[?,32]".
pub fn to_text(specs: &[InputSpec]) -> String {
    specs
        .iter()
        .map(InputSpec::text)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Read back from [`to_text`]; `None` for anything else.
pub fn parse(text: &str) -> Option<Vec<InputSpec>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split("; ").map(InputSpec::parse).collect()
}

/// Whether a form taking `other` is known to refuse calls a form taking
/// `first` took (other element types or sizes, the batch aside): such a
/// form is not the same model to a caller (same_model.rs).
pub fn narrower(other: &Inputs, first: &Inputs) -> bool {
    match (other, first) {
        (Inputs::Unknown, _) | (_, Inputs::Unknown) => false,
        _ => stand_in(other, first).is_none(),
    }
}

/// Whether a form taking `chosen` may stand in for one taking `model`: it
/// must take every call the model took. `Some(specs)`: yes, with the
/// specs the model then holds each call to (`None`: none to hold), at any
/// batch (the forms' contracts compare their batch bounds).
pub fn stand_in(chosen: &Inputs, model: &Inputs) -> Option<Option<Vec<InputSpec>>> {
    let held = |specs: &[InputSpec]| Some(specs.iter().map(InputSpec::any_batch).collect());
    match (chosen, model) {
        (Inputs::Any, Inputs::Any) => Some(None),
        (Inputs::Any, Inputs::Fixed(specs)) => Some(held(specs)),
        (Inputs::Fixed(mine), Inputs::Fixed(theirs))
            if mine.len() == theirs.len()
                && mine.iter().zip(theirs).all(|(m, t)| m.takes_all_of(t)) =>
        {
            Some(held(theirs))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dtype: &str, dims: &[Option<i64>]) -> InputSpec {
        InputSpec {
            dtype: dtype.to_string(),
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn specs_read_back_as_written_and_nothing_else() {
        let specs = vec![
            spec("float32", &[None, Some(32)]),
            spec("int64", &[]),
            spec("bool", &[Some(0), None]),
        ];
        assert_eq!(to_text(&specs), "float32[?,32]; int64[]; bool[0,?]");
        assert_eq!(parse(&to_text(&specs)), Some(specs));
        assert_eq!(parse(""), Some(Vec::new()));
        for bad in [
            "float32",
            "float99[1]",
            "float32[-1]",
            "float32[1,x]",
            "float32[1];",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_form_stands_in_only_where_it_takes_every_call_the_model_took() {
        let onnx = Inputs::Fixed(vec![spec("float32", &[None, Some(32)])]);
        // TorchScript for ONNX: held to ONNX's sizes, at any batch.
        assert_eq!(
            stand_in(&Inputs::Any, &onnx),
            Some(Some(vec![spec("float32", &[None, Some(32)])]))
        );
        assert_eq!(
            stand_in(
                &Inputs::Any,
                &Inputs::Fixed(vec![spec("int64", &[Some(2), Some(8)])])
            ),
            Some(Some(vec![spec("int64", &[None, Some(8)])]))
        );
        assert_eq!(stand_in(&Inputs::Any, &Inputs::Any), Some(None));
        assert!(stand_in(&onnx, &onnx).is_some());
        // ONNX for TorchScript would refuse sizes it took; other dtypes,
        // fixed sizes, ranks, or a form that does not say: never.
        for (chosen, model) in [
            (onnx.clone(), Inputs::Any),
            (
                Inputs::Fixed(vec![spec("float32", &[None, Some(16)])]),
                onnx.clone(),
            ),
            (
                Inputs::Fixed(vec![spec("float64", &[None, Some(32)])]),
                onnx.clone(),
            ),
            (Inputs::Fixed(vec![spec("float32", &[None])]), onnx.clone()),
            (Inputs::Unknown, onnx.clone()),
            (Inputs::Any, Inputs::Unknown),
        ] {
            assert_eq!(stand_in(&chosen, &model), None, "{chosen:?} for {model:?}");
        }
        // What max-autotune does not measure beside the form loaded: a form
        // known to refuse what it took (an engine that does not say is not).
        assert!(narrower(&onnx, &Inputs::Any));
        assert!(!narrower(&Inputs::Any, &onnx));
        assert!(!narrower(&Inputs::Unknown, &Inputs::Any));
        assert!(!narrower(&onnx, &Inputs::Unknown));
        // A wider form may stand in for a narrower one.
        assert!(stand_in(&Inputs::Fixed(vec![spec("float32", &[None, None])]), &onnx).is_some());
    }
}
