//! The arguments a model command runs the model on: shapes to fill with
//! realistic data (by dtype and by the argument's name in the model's
//! schema), saved .npy files, and scalar arguments (`--arg sr=16000:int`).

use std::str::FromStr;

use perfopt::json::Json;
use perfopt::{Error, MethodSchema, Result, TypeKind, Value};

/// One argument as given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgSpec {
    /// "4x80x100" (float32) or "4x12:int64": data made to fit the name.
    Shape { shape: Vec<i64>, kind: tch::Kind },
    /// A saved array (.npy).
    File(String),
    /// "sr=16000:int", "scale=0.5:float", "flag=true:bool", "lang=en:str".
    Scalar { name: String, value: ScalarValue },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScalarValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

fn bad(s: &str, why: &str) -> Error {
    Error::invalid_argument(format!("{s:?}: {why}"))
}

/// A dtype's name as `--input` and NAME.inputs.json spell it.
fn kind_of(dtype: &str) -> Result<tch::Kind> {
    Ok(match dtype {
        "float32" | "f32" | "float" => tch::Kind::Float,
        "float16" | "f16" | "half" => tch::Kind::Half,
        "float64" | "f64" | "double" => tch::Kind::Double,
        "int64" | "i64" | "long" => tch::Kind::Int64,
        "int32" | "i32" | "int" => tch::Kind::Int,
        "bfloat16" | "bf16" => tch::Kind::BFloat16,
        "int16" | "i16" => tch::Kind::Int16,
        "int8" | "i8" => tch::Kind::Int8,
        "uint8" | "u8" => tch::Kind::Uint8,
        "bool" => tch::Kind::Bool,
        other => {
            return Err(Error::invalid_argument(format!(
                "unknown dtype {other:?}; accepted: float32, float16, bfloat16, float64, int64, \
                 int32, int16, int8, uint8, bool"
            )))
        }
    })
}

pub fn parse_shape(s: &str) -> Result<ArgSpec> {
    let (dims, dtype) = s.split_once(':').unwrap_or((s, "float32"));
    let kind = kind_of(dtype).map_err(|e| bad(s, &e.to_string()))?;
    let shape = dims
        .split('x')
        .map(|d| d.trim().parse::<i64>().ok().filter(|&n| n >= 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            bad(
                s,
                "expected sizes like 4x80x100 (each >= 0), optionally :int64",
            )
        })?;
    Ok(ArgSpec::Shape { shape, kind })
}

impl FromStr for ScalarValue {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (value, kind) = s
            .rsplit_once(':')
            .ok_or_else(|| bad(s, "expected VALUE:int, :float, :bool or :str"))?;
        let invalid = |what: &str| bad(s, &format!("not a {what}"));
        Ok(match kind {
            "int" => ScalarValue::Int(value.parse().map_err(|_| invalid("int"))?),
            "float" => ScalarValue::Float(value.parse().map_err(|_| invalid("float"))?),
            "bool" => ScalarValue::Bool(value.parse().map_err(|_| invalid("bool (true/false)"))?),
            "str" => ScalarValue::Str(value.to_string()),
            other => {
                return Err(bad(
                    s,
                    &format!("unknown kind {other:?}: int, float, bool or str"),
                ))
            }
        })
    }
}

pub fn parse_scalar(s: &str) -> Result<ArgSpec> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| bad(s, "expected NAME=VALUE:KIND, e.g. sr=16000:int"))?;
    Ok(ArgSpec::Scalar {
        name: name.to_string(),
        value: value.parse()?,
    })
}

/// How inputs are filled.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    /// Integer inputs (token ids) are drawn from [0, int_max).
    pub int_max: i64,
}

/// Data shaped like what a speech or text model gets, by the argument's
/// name: masks are ones, lengths are full, token ids are bounded, audio is a
/// quiet tone with a little noise, mel spectrograms are log-mel-like; other
/// floats are unit normal.
fn make(name: &str, shape: &[i64], kind: tch::Kind, fill: Fill) -> tch::Tensor {
    let name = name.to_ascii_lowercase();
    let cpu = tch::Device::Cpu;
    let is = |words: &[&str]| words.iter().any(|w| name.contains(w));
    if is(&["mask"]) {
        return tch::Tensor::ones(shape, (kind, cpu));
    }
    match kind {
        tch::Kind::Int64 | tch::Kind::Int | tch::Kind::Bool if is(&["len", "length"]) => {
            let full = shape.last().copied().unwrap_or(1).max(1);
            tch::Tensor::full(shape, full, (kind, cpu))
        }
        tch::Kind::Bool => tch::Tensor::ones(shape, (kind, cpu)),
        tch::Kind::Int64
        | tch::Kind::Int
        | tch::Kind::Int16
        | tch::Kind::Int8
        | tch::Kind::Uint8 => {
            // Within the kind's range: 127 for int8, 255 for uint8, 32767 for int16.
            let top = match kind {
                tch::Kind::Int8 => 127,
                tch::Kind::Uint8 => 255,
                tch::Kind::Int16 => 32767,
                _ => i64::MAX,
            };
            tch::Tensor::randint(fill.int_max.clamp(1, top), shape, (kind, cpu))
        }
        _ => {
            let float = (tch::Kind::Float, cpu);
            let data = if is(&["mel", "spec", "fbank", "feat"]) {
                // Log-mel energies: mostly between -10 and 2.
                tch::Tensor::randn(shape, float) * 1.5 - 4.0
            } else if is(&["audio", "wav", "signal", "waveform", "speech", "samples"]) {
                let n = shape.last().copied().unwrap_or(1);
                let t =
                    tch::Tensor::arange(n, float) * (2.0 * std::f64::consts::PI * 220.0 / 16000.0);
                t.sin().expand(shape, false) * 0.1 + tch::Tensor::randn(shape, float) * 0.01
            } else {
                tch::Tensor::randn(shape, float)
            };
            data.to_kind(kind)
        }
    }
}

/// The command line's arguments as values, in order; tensors are named by
/// the schema's argument at their position, scalars must name theirs.
pub fn values(specs: &[ArgSpec], forward: Option<&MethodSchema>, fill: Fill) -> Result<Vec<Value>> {
    if let Some(hint) = forward.and_then(|f| missing_argument(specs.len(), f)) {
        return Err(Error::invalid_argument(hint));
    }
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let argument = forward.and_then(|f| f.arguments.get(i));
            let name = argument.map_or("", |a| a.name.as_str());
            Ok(match spec {
                ArgSpec::Shape { shape, kind } => Value::Tensor(make(name, shape, *kind, fill)),
                ArgSpec::File(path) => Value::Tensor(
                    tch::Tensor::read_npy(path)
                        .map_err(|e| Error::invalid_argument(format!("reading {path}: {e}")))?,
                ),
                ArgSpec::Scalar { name: given, value } => {
                    if !name.is_empty() && given != name {
                        return Err(Error::invalid_argument(format!(
                            "argument {i} is `{name}` in the model's forward(), not `{given}`"
                        )));
                    }
                    match value {
                        ScalarValue::Int(v) => Value::Int(*v),
                        ScalarValue::Float(v) => Value::Double(*v),
                        ScalarValue::Bool(v) => Value::Bool(*v),
                        ScalarValue::Str(v) => Value::Str(v.clone()),
                    }
                }
            })
        })
        .collect()
}

/// The first required argument of forward() past the `given` ones, as the
/// option that gives it.
fn missing_argument(given: usize, forward: &MethodSchema) -> Option<String> {
    let argument = forward
        .arguments
        .iter()
        .skip(given)
        .find(|a| a.default.is_none())?;
    let name = &argument.name;
    let kind = match &argument.kind {
        TypeKind::Optional(inner) => inner.as_ref(),
        kind => kind,
    };
    let option = match kind {
        TypeKind::Tensor => format!("--input SHAPE[:DTYPE] or --input-file {name}.npy"),
        TypeKind::Int => format!("--arg {name}=VALUE:int"),
        TypeKind::Float => format!("--arg {name}=VALUE:float"),
        TypeKind::Bool => format!("--arg {name}=true:bool"),
        TypeKind::Str => format!("--arg {name}=VALUE:str"),
        other => {
            return Some(format!(
                "forward() also needs `{name}` ({other}), which the command line cannot give"
            ))
        }
    };
    Some(format!(
        "forward() also needs `{name}` ({}): add {option}, in forward()'s order",
        argument.kind
    ))
}

/// The inputs perfopt.export recorded beside `model` (NAME.inputs.json),
/// or inside a bundle (NAME.perfopt/inputs.json), and that file's path, with
/// `batch` for each dynamic size; `None` when there is no such file.
pub fn recorded(model: &str, batch: i64) -> Option<(String, Result<Vec<ArgSpec>>)> {
    let model = std::path::Path::new(model);
    let path = match model.is_dir() {
        true => model.join("inputs.json"),
        false => model.with_extension("inputs.json"),
    };
    if !path.exists() {
        return None;
    }
    let shown = path.display().to_string();
    let bad = |why: String| Error::invalid_argument(format!("{shown}: {why}"));
    let parse = || -> Result<Vec<ArgSpec>> {
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let list = Json::parse(&text).map_err(bad)?;
        if !matches!(list, Json::Array(_)) {
            return Err(bad("expected a list of input specs".to_string()));
        }
        list.as_array()
            .iter()
            .map(|spec| {
                let dtype = spec
                    .get("dtype")
                    .and_then(Json::as_str)
                    .unwrap_or("float32");
                let shape = spec
                    .get("shape")
                    .map(Json::as_array)
                    .unwrap_or_default()
                    .iter()
                    .map(|size| match size.as_f64() {
                        Some(n) if n >= 0.0 => Ok(n as i64),
                        Some(_) => Ok(batch),
                        None => Err(bad(format!("a size that is not a number in {spec}"))),
                    })
                    .collect::<Result<Vec<i64>>>()?;
                let kind = kind_of(dtype).map_err(|e| bad(e.to_string()))?;
                Ok(ArgSpec::Shape { shape, kind })
            })
            .collect()
    };
    Some((shown.clone(), parse()))
}

/// Samples per call: the first shaped input's dimension 0; `None` when no
/// input gives it (saved arrays, scalars), and throughput is then calls/s.
pub fn samples_per_call(specs: &[ArgSpec]) -> Option<f64> {
    specs.iter().find_map(|spec| match spec {
        ArgSpec::Shape { shape, .. } => shape.first().map(|&n| n as f64),
        _ => None,
    })
}

/// "4x80x100:float", "sr=16000", "x.npy": for tables.
pub fn label(spec: &ArgSpec) -> String {
    match spec {
        ArgSpec::Shape { shape, kind } => {
            let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
            format!("{}:{kind:?}", dims.join("x")).to_lowercase()
        }
        ArgSpec::File(path) => path.clone(),
        ArgSpec::Scalar { name, value } => match value {
            ScalarValue::Int(v) => format!("{name}={v}"),
            ScalarValue::Float(v) => format!("{name}={v}"),
            ScalarValue::Bool(v) => format!("{name}={v}"),
            ScalarValue::Str(v) => format!("{name}={v:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes_and_scalars() {
        assert_eq!(
            parse_shape("4x80x100").unwrap(),
            ArgSpec::Shape {
                shape: vec![4, 80, 100],
                kind: tch::Kind::Float
            }
        );
        for bad in ["", "4x", "ax3", "4x3:complex", "-1x3"] {
            assert!(parse_shape(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_scalar("sr=16000:int").unwrap(),
            ArgSpec::Scalar {
                name: "sr".into(),
                value: ScalarValue::Int(16000)
            }
        );
        assert!(parse_scalar("sr=16k:int").is_err());
        assert!(parse_scalar("16000:int").is_err());
        assert_eq!(label(&parse_shape("2x3").unwrap()), "2x3:float");
    }

    #[test]
    fn fills_by_name() {
        let fill = Fill { int_max: 7 };
        let mask = make("attention_mask", &[2, 5], tch::Kind::Int64, fill);
        assert_eq!(mask.sum(tch::Kind::Int64).int64_value(&[]), 10);
        let ids = make("input_ids", &[4, 50], tch::Kind::Int64, fill);
        assert!(ids.max().int64_value(&[]) < 7);
        let audio = make("audio", &[1, 16000], tch::Kind::Float, fill);
        assert!(audio.abs().max().double_value(&[]) < 0.2);
    }
}
