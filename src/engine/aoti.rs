//! AOTInductor packages (.pt2) as an engine: torch.compile's kernels, ahead
//! of time, run by libtorch's package loader. A package is compiled already:
//! it has no frozen forms; it takes tensors only (torch.export specialised the
//! rest), and its inputs are checked here, since the package's own checks
//! either are off or print to stderr and fail with a generic message.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Once;

use super::{Argument, Engine, Format, MethodSchema};
use crate::archive::{Inspected, PackageModel};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::torch::aoti::AotiPackage;
use crate::value::Value;

/// The metadata key perfopt.export writes: the example inputs' specs.
const INPUTS_KEY: &str = "perfopt_inputs";
/// The folder libtorch's loader unpacks into (mkdtemp("/tmp/XXXXXX"), TMPDIR ignored).
const LOADER_TEMP: &str = "/tmp";

/// What one input must be, from perfopt.export's metadata.
#[derive(Clone, Debug)]
struct InputSpec {
    name: String,
    dtype: String,
    /// -1 for a dynamic dimension.
    shape: Vec<i64>,
}

pub struct Aoti {
    package: AotiPackage,
    model: String,
    device_key: String,
    inputs: usize,
    outputs: Option<usize>,
    specs: Option<Vec<InputSpec>>,
    /// Per input and dimension, the sizes the compiled checks accept.
    bounds: Vec<Vec<(Option<i64>, Option<i64>)>>,
    methods: Vec<MethodSchema>,
    description: Json,
}

fn device_key(device: tch::Device) -> &'static str {
    match device {
        tch::Device::Cuda(_) => "cuda",
        tch::Device::Mps => "mps",
        _ => "cpu",
    }
}

/// Leaves of a pytree spec (nodes whose "type" is null): the flat count.
fn leaves(spec: &Json) -> usize {
    match spec {
        Json::Object(_) if spec.get("type") == Some(&Json::Null) => 1,
        Json::Object(_) => spec
            .get("children_spec")
            .map_or(0, |c| c.as_array().iter().map(leaves).sum()),
        Json::Array(items) => items.iter().map(leaves).sum(),
        _ => 0,
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

/// The temporary folders libtorch's loader may have left (it removes its
/// folder in its destructor, which a failed constructor never reaches).
fn loader_folders() -> HashSet<PathBuf> {
    std::fs::read_dir(LOADER_TEMP)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().len() == 6 && e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl Aoti {
    pub fn load(
        path: &str,
        inspected: &Inspected,
        device: tch::Device,
        runners: usize,
    ) -> Result<Aoti> {
        let model = inspected
            .models
            .iter()
            .find(|m| m.name == "model")
            .or_else(|| (inspected.models.len() == 1).then(|| &inspected.models[0]))
            .ok_or_else(|| {
                let names: Vec<&str> = inspected.models.iter().map(|m| m.name.as_str()).collect();
                Error::new(
                    ErrorKind::UnsupportedModel,
                    format!(
                        "the AOTInductor package {path} holds models [{}] and none is named \
                         \"model\": perfopt loads one model per package",
                        names.join(", ")
                    ),
                )
            })?;
        if !model.has_library {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "the AOTInductor package {path} has no compiled library (a cpp-only package, \
                     made with aot_inductor.package_cpp_only): libtorch would run the compiler \
                     the package names, which perfopt does not do; package it compiled"
                ),
            ));
        }
        let wanted = device_key(device);
        let device_key = model
            .metadata
            .as_ref()
            .and_then(|m| m.get("AOTI_DEVICE_KEY"))
            .and_then(Json::as_str)
            .map(str::to_string);
        if let Some(key) = &device_key {
            if key != wanted {
                return Err(Error::new(
                    ErrorKind::UnsupportedDevice,
                    format!(
                        "the AOTInductor package {path} was compiled for {key}, and this \
                         optimizer's device is {wanted}: export it again for {wanted} (perfopt.export \
                         --device {wanted})"
                    ),
                ));
            }
        }
        enable_input_checks();
        let package = Self::load_cleanly(path, model, device, runners)?;
        let description = Json::parse(&package.describe()?)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("package description: {e}")))?;
        let metadata = description.get("metadata").cloned().unwrap_or(Json::Null);
        let spec = |i: usize| {
            description
                .get("call_spec")
                .map(Json::as_array)
                .and_then(|specs| specs.get(i))
                .and_then(Json::as_str)
                .and_then(|text| Json::parse(text).ok())
        };
        let specs = metadata
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
                    })
                    .collect::<Vec<_>>()
            });
        let inputs = match (&specs, spec(0)) {
            (Some(specs), _) => specs.len(),
            (None, Some(in_spec)) => leaves(&in_spec),
            (None, None) => 0,
        };
        let outputs = spec(1).map(|out_spec| leaves(&out_spec));
        let arguments = (0..inputs)
            .map(|i| Argument {
                name: specs
                    .as_ref()
                    .and_then(|s| s.get(i))
                    .map(|s| s.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("input{i}")),
                type_name: "Tensor".to_string(),
                default: None,
            })
            .collect::<Vec<_>>();
        let returns = match outputs {
            Some(1) => "Tensor".to_string(),
            Some(n) => format!("Tuple[{}]", vec!["Tensor"; n].join(", ")),
            None => "List[Tensor]".to_string(),
        };
        let schema = format!(
            "forward({}) -> {returns}",
            arguments
                .iter()
                .map(|a| format!("Tensor {}", a.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let methods = vec![MethodSchema {
            name: "forward".to_string(),
            schema,
            arguments,
            returns: vec![returns],
            vararg: false,
        }];
        let description = Json::object()
            .with("format", Format::Aoti.as_str())
            .with("form", "as compiled (AOTInductor)")
            .with("package_model", model.name.as_str())
            .with("device_key", device_key.clone())
            .with("runners", runners)
            .with("input_specs_from_export", specs.is_some())
            .with("batch_limit", batch_limit(&model.size_bounds))
            .with("metadata", metadata);
        Ok(Aoti {
            package,
            model: model.name.clone(),
            device_key: device_key.unwrap_or_else(|| wanted.to_string()),
            inputs,
            outputs,
            specs,
            bounds: model.size_bounds.clone(),
            methods,
            description,
        })
    }

    /// Loads the package; on failure, removes the folder libtorch unpacked
    /// it into (recognised by the package's own folder inside it).
    fn load_cleanly(
        path: &str,
        model: &PackageModel,
        device: tch::Device,
        runners: usize,
    ) -> Result<AotiPackage> {
        let before = loader_folders();
        AotiPackage::load(path, &model.name, device, runners).map_err(|err| {
            for folder in loader_folders().difference(&before) {
                if folder.join(&model.folder).is_dir() {
                    let _ = std::fs::remove_dir_all(folder);
                }
            }
            let kind = match err.kind() {
                ErrorKind::OutOfMemory => ErrorKind::OutOfMemory,
                _ => ErrorKind::LoadFailed,
            };
            let hint = if err.to_string().contains("undefined symbol") {
                ": the package was probably compiled by another PyTorch version than the \
                 libtorch perfopt runs on (export it again with this one)"
            } else {
                ""
            };
            Error::new(
                kind,
                format!("cannot load the AOTInductor package {path}{hint}"),
            )
            .with_cause(err)
        })
    }

    fn check_inputs(&self, args: &[Value]) -> Result<Vec<tch::Tensor>> {
        if self.inputs > 0 && args.len() != self.inputs {
            return Err(Error::invalid_argument(format!(
                "the package takes {} tensor input(s), got {}",
                self.inputs,
                args.len()
            )));
        }
        let wanted = match device_key(tch::Device::Cpu) == self.device_key {
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
                if let Some(dims) = self.bounds.get(i) {
                    for (d, (low, high)) in dims.iter().enumerate() {
                        let n = t.size().get(d).copied().unwrap_or(0);
                        if low.is_some_and(|l| n < l) || high.is_some_and(|h| n > h) {
                            let range = |b: Option<i64>, other: &str| {
                                b.map_or(other.to_string(), |b| b.to_string())
                            };
                            return Err(Error::invalid_argument(format!(
                                "input {i}: dimension {d} is {n}; the package's compiled code accepts \
                                 {} to {} there",
                                range(*low, "0"),
                                range(*high, "any size")
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
            .collect()
    }
}

/// The largest dimension 0 every input accepts, from the compiled bounds.
fn batch_limit(bounds: &[Vec<(Option<i64>, Option<i64>)>]) -> Option<i64> {
    bounds
        .iter()
        .filter_map(|dims| dims.first().and_then(|(_, high)| *high))
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

/// Turns on the input checks that Inductor compiles into every package
/// (read once per package library at its first run), unless the user chose:
/// without them a wrong shape reads out of bounds.
fn enable_input_checks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("AOTI_RUNTIME_CHECK_INPUTS").is_none() {
            std::env::set_var("AOTI_RUNTIME_CHECK_INPUTS", "1");
        }
    });
}

impl Engine for Aoti {
    fn format(&self) -> Format {
        Format::Aoti
    }

    fn methods(&self) -> &[MethodSchema] {
        &self.methods
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        if method != "forward" {
            return Err(Error::invalid_argument(format!(
                "the AOTInductor package (model \"{}\") has no method `{method}`: a package has \
                 forward only",
                self.model
            )));
        }
        crate::fork::mark_used();
        let tensors = self.check_inputs(args)?;
        let refs: Vec<&tch::Tensor> = tensors.iter().collect();
        let outputs = self.package.run(&refs).map_err(|err| {
            if err.to_string().contains("API call failed") {
                err.context(
                    "the package's compiled code refused the call (its own checks print the reason \
                     on standard error)",
                )
            } else {
                err
            }
        })?;
        if let Some(n) = self.outputs {
            if n != outputs.len() {
                log::debug!(
                    "the package returned {} outputs, its spec says {n}",
                    outputs.len()
                );
            }
        }
        let mut values: Vec<Value> = outputs.into_iter().map(Value::Tensor).collect();
        Ok(if values.len() == 1 && self.outputs == Some(1) {
            values.remove(0)
        } else {
            Value::Tuple(values)
        })
    }

    fn batch_limit(&self) -> Option<i64> {
        batch_limit(&self.bounds).or_else(|| self.fixed_batch())
    }

    fn fixed_batch(&self) -> Option<i64> {
        // Every input exported with the same static dimension 0.
        let specs = self.specs.as_ref()?;
        let first = specs.first()?.shape.first().copied()?;
        (first >= 0 && specs.iter().all(|s| s.shape.first() == Some(&first))).then_some(first)
    }

    fn describe(&self) -> Json {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pytree_leaves() {
        let spec = Json::parse(
            r#"[1, {"type": "builtins.tuple", "context": "null", "children_spec": [
                {"type": "builtins.tuple", "context": "null", "children_spec": [
                    {"type": null, "context": null, "children_spec": []},
                    {"type": null, "context": null, "children_spec": []}]},
                {"type": "builtins.dict", "context": "[]", "children_spec": []}]}]"#,
        )
        .unwrap();
        assert_eq!(leaves(&spec), 2);
        assert_eq!(shape_label(&[-1, 80]), "[*, 80]");
    }
}
