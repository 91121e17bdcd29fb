//! AOTInductor packages (.pt2) as an engine: torch.compile's kernels, ahead
//! of time, run by libtorch's package loader. A package is compiled already:
//! it has no frozen forms; it takes tensors only (torch.export specialised the
//! rest), and its inputs are checked here, since the package's own checks
//! either are off or print to stderr and fail with a generic message.

use std::path::Path;
use std::sync::Once;

use super::aoti_inputs::{self, InputChecks};
use super::archive::Inspected;
use super::package::{self, PackageModel};
use super::unpacked::{self, Unpacked};
use super::{Engine, Format, MethodSchema};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::torch::aoti::AotiPackage;
use crate::value::Value;

pub struct Aoti {
    /// Dropped before `_folder`: the library is unloaded before its folder goes.
    package: AotiPackage,
    _folder: Option<Unpacked>,
    model: String,
    outputs: Option<usize>,
    checks: InputChecks,
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

impl Aoti {
    /// Loads from `source` (the checked file's descriptor path), naming
    /// `path` in messages.
    pub fn load(
        source: &str,
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
        package::check_model_files(Path::new(source), path, model)?;
        let package = Self::load_cleanly(source, path, model, device, runners)?;
        let folder = Unpacked::take(&package.folder()?, matches!(device, tch::Device::Cuda(_)));
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
        let specs = aoti_inputs::export_specs(&metadata);
        let inputs = match (&specs, spec(0)) {
            (Some(specs), _) => specs.len(),
            (None, Some(in_spec)) => leaves(&in_spec),
            (None, None) => 0,
        };
        let outputs = spec(1).map(|out_spec| leaves(&out_spec));
        // perfopt checks dtypes, shapes, devices and shared sizes itself from
        // the export's specs or the compiled checks it read; only for a
        // package whose checks it cannot read are the package's own turned on.
        let from_export = specs.is_some();
        let checks = InputChecks::new(
            specs,
            model,
            device_key.clone().unwrap_or_else(|| wanted.to_string()),
            inputs,
        );
        if !checks.understood() {
            enable_input_checks();
        }
        let methods = vec![MethodSchema::tensors_forward(
            (0..inputs).map(|i| checks.name(i)).collect(),
            outputs,
        )];
        let description = Json::object()
            .with("format", Format::Aoti.as_str())
            .with("form", "as compiled (AOTInductor)")
            .with("package_model", model.name.as_str())
            .with("device_key", device_key.clone())
            .with("runners", runners)
            .with("input_specs_from_export", from_export)
            .with("batch_limit", checks.batch_limit())
            .with("metadata", metadata);
        Ok(Aoti {
            package,
            _folder: folder,
            model: model.name.clone(),
            outputs,
            checks,
            methods,
            description,
        })
    }

    /// Loads the package; on failure, removes the folder libtorch unpacked
    /// it into (src/engine/unpacked.rs says how it is known).
    fn load_cleanly(
        source: &str,
        path: &str,
        model: &PackageModel,
        device: tch::Device,
        runners: usize,
    ) -> Result<AotiPackage> {
        let before = unpacked::loader_folders();
        AotiPackage::load(source, &model.name, device, runners).map_err(|err| {
            unpacked::remove_failed(&err.to_string(), &before, model);
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
}

/// Turns on the input checks that Inductor compiles into every package
/// (read once per package library at its first run), unless the user chose:
/// without them a wrong shape reads out of bounds. Only for packages whose
/// checks perfopt cannot read: setenv changes the whole process, and races
/// other threads' getenv.
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
        let tensors = self.checks.check(args)?;
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
        self.checks.batch_limit().or_else(|| self.fixed_batch())
    }

    fn fixed_batch(&self) -> Option<i64> {
        self.checks.fixed_batch()
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
    }
}
