//! An AOTInductor package's inputs, checked before its compiled kernels see
//! them (the kernels trust what they are given: a wrong shape, or inputs
//! that disagree on a size they share, is a read out of bounds). The checks
//! come from the specs perfopt.export recorded, else from the checks
//! Inductor compiled into the package's source (src/package.rs).

use super::package::PackageModel;
use crate::error::{Error, Result};
use crate::json::Json;
use crate::value::Value;

/// The metadata key perfopt.export writes: the example inputs' specs.
const INPUTS_KEY: &str = "perfopt_inputs";

/// What one input must be, from perfopt.export's metadata.
#[derive(Clone, Debug)]
pub(super) struct InputSpec {
    name: String,
    dtype: String,
    /// -1 for a dynamic dimension.
    shape: Vec<i64>,
    /// Per dimension, the symbol its size is ("s17"), when the export
    /// recorded them; dimensions with one symbol share one size.
    symbols: Option<Vec<Option<String>>>,
}

/// The specs perfopt.export wrote into the package's metadata, if any.
pub(super) fn export_specs(metadata: &Json) -> Option<Vec<InputSpec>> {
    metadata
        .get(INPUTS_KEY)
        .and_then(Json::as_str)
        .and_then(|text| Json::parse(text).ok())
        .map(|list| {
            list.as_array()
                .iter()
                .map(|s| InputSpec {
                    name: s
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    dtype: s
                        .get("dtype")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    shape: s
                        .get("shape")
                        .map(Json::as_array)
                        .unwrap_or(&[])
                        .iter()
                        .map(|d| d.as_f64().unwrap_or(-1.0) as i64)
                        .collect(),
                    symbols: s.get("symbols").map(|dims| {
                        dims.as_array()
                            .iter()
                            .map(|d| d.as_str().map(str::to_string))
                            .collect()
                    }),
                })
                .collect::<Vec<_>>()
        })
}

/// Everything known about what a package's inputs must be.
pub(super) struct InputChecks {
    specs: Option<Vec<InputSpec>>,
    /// Per input and dimension, the sizes the compiled checks accept.
    bounds: Vec<Vec<(Option<i64>, Option<i64>)>>,
    /// Per input, the dtype the compiled checks want.
    dtypes: Vec<Option<String>>,
    /// Per input, the rank the compiled checks read.
    ranks: Vec<Option<usize>>,
    /// "cpu", "cuda"...: where the inputs must be.
    device_key: String,
    inputs: usize,
}

impl InputChecks {
    pub(super) fn new(
        specs: Option<Vec<InputSpec>>,
        model: &PackageModel,
        device_key: String,
        inputs: usize,
    ) -> InputChecks {
        InputChecks {
            specs,
            bounds: model.size_bounds.clone(),
            dtypes: model.input_dtypes.clone(),
            ranks: model.input_ranks.clone(),
            device_key,
            inputs,
        }
    }

    /// Whether perfopt knows every input's dtype and shape rules (from the
    /// export, or read from the compiled checks).
    pub(super) fn understood(&self) -> bool {
        self.specs.is_some()
            || (self.inputs > 0
                && self.dtypes.len() == self.inputs
                && self.dtypes.iter().all(Option::is_some))
    }

    /// Input `i`'s name: the export's, else `input{i}`.
    pub(super) fn name(&self, i: usize) -> String {
        self.specs
            .as_ref()
            .and_then(|s| s.get(i))
            .map(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("input{i}"))
    }

    /// The largest batch the compiled bounds accept.
    pub(super) fn batch_limit(&self) -> Option<i64> {
        batch_limit(&self.bounds)
    }

    /// The one batch every input was exported with, when static.
    pub(super) fn fixed_batch(&self) -> Option<i64> {
        let specs = self.specs.as_ref()?;
        let first = specs.first()?.shape.first().copied()?;
        (first >= 0 && specs.iter().all(|s| s.shape.first() == Some(&first))).then_some(first)
    }

    /// Which (input, dimension) pairs must have one size, by the symbol
    /// they share: the export's record, else its rule (every dynamic
    /// dimension 0 is the batch), else, for a package perfopt.export did not
    /// make, the same rule over the dimensions 0 its compiled checks leave
    /// open. The compiled kernels read a shared size from one input and
    /// index the others by it.
    fn shared_dims(&self, shapes: &[Vec<i64>]) -> Vec<(String, Vec<(usize, usize)>)> {
        let mut groups: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
        let mut add =
            |symbol: &str, at: (usize, usize)| match groups.iter_mut().find(|(s, _)| s == symbol) {
                Some((_, members)) => members.push(at),
                None => groups.push((symbol.to_string(), vec![at])),
            };
        match &self.specs {
            Some(specs) => {
                for (i, spec) in specs.iter().enumerate() {
                    match &spec.symbols {
                        Some(symbols) => {
                            for (d, symbol) in symbols.iter().enumerate() {
                                // A plain symbol; an expression ("2*s17") is not compared.
                                if let Some(symbol) = symbol.as_deref().filter(|s| {
                                    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                                }) {
                                    add(symbol, (i, d));
                                }
                            }
                        }
                        None if spec.shape.first() == Some(&-1) => add("batch", (i, 0)),
                        None => {}
                    }
                }
            }
            None => {
                // Without the export's record, the dimensions the compiled
                // checks leave open are taken to share a size with those at
                // the same position in the other inputs (dimension 0 the
                // batch, dimension 1 a sequence's length...).
                for (i, shape) in shapes.iter().enumerate() {
                    for d in 0..shape.len() {
                        let fixed = self
                            .bounds
                            .get(i)
                            .and_then(|dims| dims.get(d))
                            .is_some_and(|(low, high)| low.is_some() && low == high);
                        if !fixed {
                            add(&format!("dimension {d}"), (i, d));
                        }
                    }
                }
            }
        }
        groups
    }

    fn check_shared_dims(&self, shapes: &[Vec<i64>]) -> Result<()> {
        for (symbol, members) in self.shared_dims(shapes) {
            let size = |&(i, d): &(usize, usize)| shapes.get(i).and_then(|s| s.get(d)).copied();
            let Some(&first) = members.first() else {
                continue;
            };
            if let Some(other) = members.iter().find(|m| size(m) != size(&first)) {
                let name = |i: usize| format!("input {i} `{}`", self.name(i));
                let from_export = self.specs.is_some();
                return Err(Error::invalid_argument(format!(
                    "{} has {} in dimension {} and {} has {} in dimension {}: the package was \
                     compiled with one size there ({}), and its kernels would read past the \
                     smaller input{}",
                    name(first.0),
                    size(&first).unwrap_or(0),
                    first.1,
                    name(other.0),
                    size(other).unwrap_or(0),
                    other.1,
                    match symbol.as_str() {
                        "batch" => "the batch".to_string(),
                        s if s.starts_with("dimension ") => format!("{s} of every input"),
                        s => format!("symbol {s}"),
                    },
                    if from_export {
                        ""
                    } else {
                        " (a package perfopt.export did not make is taken to share the sizes its \
                         compiled checks leave open, position by position: export it with \
                         perfopt.export to record which it shares)"
                    }
                )));
            }
        }
        Ok(())
    }

    /// The caller's arguments as the tensors the package runs on, or why not.
    pub(super) fn check(&self, args: &[Value]) -> Result<Vec<tch::Tensor>> {
        if self.inputs > 0 && args.len() != self.inputs {
            return Err(Error::invalid_argument(format!(
                "the package takes {} tensor input(s), got {}",
                self.inputs,
                args.len()
            )));
        }
        let wanted = match self.device_key == "cpu" {
            true => None,
            false => Some(self.device_key.as_str()),
        };
        args.iter()
            .enumerate()
            .map(|(i, value)| {
                let Value::Tensor(t) = value else {
                    return Err(Error::invalid_argument(format!(
                        "input {i}: an AOTInductor package takes tensors only, got {} (export \
                         fixed other arguments into the package)",
                        value.describe()
                    )));
                };
                if let Some(spec) = self.specs.as_ref().and_then(|s| s.get(i)) {
                    let size = t.size();
                    let dims_fit = size.len() == spec.shape.len()
                        && size.iter().zip(&spec.shape).all(|(&n, &s)| s < 0 || n == s);
                    let dtype = dtype_name(t.kind());
                    if !dims_fit || dtype != spec.dtype {
                        return Err(Error::invalid_argument(format!(
                            "input {i} `{}`: the package was exported for {} of shape {} and got \
                             {dtype} of shape {size:?}",
                            spec.name,
                            spec.dtype,
                            shape_label(&spec.shape)
                        )));
                    }
                }
                if let (None, Some(Some(rank))) = (&self.specs, self.ranks.get(i)) {
                    if t.dim() != *rank {
                        return Err(Error::invalid_argument(format!(
                            "input {i} has {} dimensions; the package's compiled code takes {rank}",
                            t.dim()
                        )));
                    }
                }
                if let Some(Some(wanted)) = self.dtypes.get(i) {
                    let dtype = dtype_name(t.kind());
                    if dtype != wanted {
                        return Err(Error::invalid_argument(format!(
                            "input {i}: the package's compiled code takes {wanted} there, got {dtype}"
                        )));
                    }
                }
                if let Some(dims) = self.bounds.get(i) {
                    for (d, (low, high)) in dims.iter().enumerate() {
                        let n = t.size().get(d).copied().unwrap_or(0);
                        if low.is_some_and(|l| n < l) || high.is_some_and(|h| n > h) {
                            let range = |b: Option<i64>, other: &str| {
                                b.map_or(other.to_string(), |b| b.to_string())
                            };
                            let accepted = match (low, high) {
                                (Some(l), Some(h)) if l == h => format!("only {l}"),
                                _ => format!("{} to {}", range(*low, "0"), range(*high, "any size")),
                            };
                            // The bound comes from the export (torch.export's
                            // range for the dimension), so the remedy is there.
                            let remedy = if d == 0 {
                                "re-export with the batch range it must accept \
                                 (perfopt.export.export(..., batch_range=(1, N)))"
                            } else {
                                "re-export from an example as large as the largest input, or \
                                 with that dimension dynamic"
                            };
                            return Err(Error::invalid_argument(format!(
                                "input {i}: dimension {d} is {n}; the package's compiled code accepts \
                                 {accepted} there: {remedy}"
                            )));
                        }
                    }
                }
                let on_device = matches!(
                    (wanted, t.device()),
                    (None, tch::Device::Cpu)
                        | (Some("cuda"), tch::Device::Cuda(_))
                        | (Some("mps"), tch::Device::Mps)
                );
                if !on_device {
                    return Err(Error::invalid_argument(format!(
                        "input {i} is on {:?}; the package runs on {}",
                        t.device(),
                        self.device_key
                    )));
                }
                // Inductor's kernels index by the strides they were compiled for.
                Ok(t.f_contiguous()?)
            })
            .collect::<Result<Vec<_>>>()
            .and_then(|tensors| {
                let shapes: Vec<Vec<i64>> = tensors.iter().map(tch::Tensor::size).collect();
                self.check_shared_dims(&shapes)?;
                Ok(tensors)
            })
    }
}

fn dtype_name(kind: tch::Kind) -> &'static str {
    match kind {
        tch::Kind::Float => "float32",
        tch::Kind::Double => "float64",
        tch::Kind::Half => "float16",
        tch::Kind::BFloat16 => "bfloat16",
        tch::Kind::Int64 => "int64",
        tch::Kind::Int => "int32",
        tch::Kind::Int16 => "int16",
        tch::Kind::Int8 => "int8",
        tch::Kind::Uint8 => "uint8",
        tch::Kind::Bool => "bool",
        _ => "other",
    }
}

/// The largest dimension 0 every input accepts, from the compiled bounds
/// of dynamic dimensions (a static one is an input without a batch, or a
/// static batch: [`InputChecks::fixed_batch`]).
fn batch_limit(bounds: &[Vec<(Option<i64>, Option<i64>)>]) -> Option<i64> {
    bounds
        .iter()
        .filter_map(|dims| dims.first())
        .filter(|(low, high)| !(low.is_some() && low == high))
        .filter_map(|(_, high)| *high)
        .min()
}

fn shape_label(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| {
            if d < 0 {
                "*".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_specs_open_dimensions_share_by_position() {
        // x [B, T] and y [B, T] from a package perfopt.export did not make:
        // T must agree too, or the kernels read past the shorter input.
        let model = PackageModel {
            input_dtypes: vec![Some("float32".into()); 2],
            ..Default::default()
        };
        let checks = InputChecks::new(None, &model, "cpu".into(), 2);
        assert!(checks.check_shared_dims(&[vec![2, 8], vec![2, 8]]).is_ok());
        let err = checks
            .check_shared_dims(&[vec![2, 8], vec![2, 4]])
            .unwrap_err();
        assert!(err.to_string().contains("dimension 1"), "{err}");
        // A size the compiled checks fix is not shared.
        let model = PackageModel {
            size_bounds: vec![
                vec![(None, None), (Some(8), Some(8))],
                vec![(None, None), (Some(4), Some(4))],
            ],
            ..Default::default()
        };
        let checks = InputChecks::new(None, &model, "cpu".into(), 2);
        assert!(checks.check_shared_dims(&[vec![2, 8], vec![2, 4]]).is_ok());
    }

    #[test]
    fn labels_dynamic_dimensions() {
        assert_eq!(shape_label(&[-1, 80]), "[*, 80]");
        let bounds = vec![vec![(Some(1), Some(15))], vec![(Some(4), Some(4))]];
        assert_eq!(batch_limit(&bounds), Some(15), "a static size is no bound");
    }
}
