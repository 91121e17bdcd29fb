//! ONNX models (torch.onnx.export) as an engine, run by ONNX Runtime through
//! the `ort` crate, loaded at run time (src/engine/onnx/runtime.rs). A
//! session is built per form: its graph optimisation level, execution mode
//! and intra-op threads are fixed when it is made, so `with_threads` and
//! the tuning candidates are new sessions over the same model bytes.
//!
//! ONNX Runtime's Run is not safe to call concurrently on one session (the
//! `ort` crate says so and takes `&mut`): calls to one form queue on a lock,
//! each using the session's own intra-op threads. ONNX models have no
//! attributes perfopt tracks (a recurrent state is an input and an output),
//! and inference scopes change nothing for them.

mod proto;
pub(crate) mod runtime;
mod source;
mod tensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::ValueType;
use parking_lot::Mutex;

use super::{Engine, Format, Inputs, LoadContext, MethodSchema, Variant};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::runtime::{Device, Tensor};
use crate::value::Value;
use source::{identity, read_all, Source};

pub use proto::probe;

/// A protobuf message is at most 2 GiB; larger models keep their weights in
/// external data files, which ONNX Runtime reads from the model's folder.
const MAX_MODEL_BYTES: u64 = (2 << 30) - 1;

/// ONNX Runtime's graph optimisation levels perfopt measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    Basic,
    Extended,
    All,
}

/// What a session is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Settings {
    pub level: Level,
    /// Parallel execution: independent nodes run at once (inter-op).
    pub parallel: bool,
    pub threads: usize,
}

impl Settings {
    fn label(&self) -> String {
        let level = match self.level {
            Level::Basic => "basic",
            Level::Extended => "extended",
            Level::All => "all",
        };
        let mode = if self.parallel { ", parallel" } else { "" };
        format!("graph optimisation {level}{mode}")
    }

    /// The settings a candidate's label names ("graph optimisation
    /// extended"), or a model's as-loaded label ("as loaded (graph
    /// optimisation all)").
    fn from_label(label: &str, threads: usize) -> Option<Settings> {
        let label = label
            .strip_prefix("as loaded (")
            .and_then(|l| l.strip_suffix(')'))
            .unwrap_or(label);
        [Level::All, Level::Extended, Level::Basic]
            .into_iter()
            .flat_map(|level| {
                [false, true].map(|parallel| Settings {
                    level,
                    parallel,
                    threads,
                })
            })
            .find(|s| s.label() == label)
    }
}

/// One graph input, as the session declares it.
struct Input {
    name: String,
    ty: ort::value::TensorElementType,
    /// -1 for a symbolic dimension.
    shape: Vec<i64>,
    symbols: Vec<String>,
}

pub struct Onnx {
    session: Mutex<Session>,
    source: Arc<Source>,
    settings: Settings,
    inputs: Vec<Input>,
    methods: Vec<MethodSchema>,
}

/// Loads an ONNX model (the open, regular file [`super::load`] probed).
pub fn load(file: std::fs::File, size: u64, context: &LoadContext) -> Result<Arc<dyn Engine>> {
    let shown = context.path.to_string();
    if size > MAX_MODEL_BYTES {
        return Err(Error::new(
            ErrorKind::UnsupportedModel,
            format!(
                "{shown} is {size} bytes, over protobuf's 2 GiB: export it with its weights in \
                 external data files (torch.onnx.export(..., external_data=True))"
            ),
        ));
    }
    // The file is checked before ONNX Runtime is looked for: a damaged file
    // is MODEL_CORRUPT on a host without the library too.
    let bytes = read_all(&file, size, &shown)?;
    proto::walk(&bytes, &shown)?;
    let runtime = runtime::runtime(context.onnxruntime)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::new(ErrorKind::LoadFailed, format!("{shown}: {e}")))?;
    let folder = std::fs::canonicalize(context.path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let source = Arc::new(Source {
        identity: identity(&meta),
        file,
        shown,
        folder,
        runtime,
    });
    if !matches!(context.device, Device::Cpu) {
        log::info!(
            "{}: ONNX models run on the CPU in this perfopt (ONNX Runtime's providers here: {})",
            source.shown,
            source.runtime.providers.join(", ")
        );
    }
    // Built as the tuning cache last chose, when it remembers a choice.
    let remembered = context.hint.and_then(|hint| {
        Settings::from_label(hint.label, hint.threads.unwrap_or(context.threads).max(1))
    });
    let settings = remembered.unwrap_or(Settings {
        level: Level::All,
        parallel: false,
        threads: context.threads.max(1),
    });
    let session = source.session(&bytes, settings)?;
    Ok(Arc::new(Onnx::wrap(session, source, settings)?))
}

impl Onnx {
    fn wrap(session: Session, source: Arc<Source>, settings: Settings) -> Result<Onnx> {
        let mut inputs = Vec::new();
        for outlet in session.inputs() {
            match outlet.dtype() {
                ValueType::Tensor {
                    ty,
                    shape,
                    dimension_symbols,
                } => inputs.push(Input {
                    name: outlet.name().to_string(),
                    ty: *ty,
                    shape: shape.to_vec(),
                    symbols: dimension_symbols.to_vec(),
                }),
                other => {
                    return Err(Error::new(
                        ErrorKind::UnsupportedModel,
                        format!(
                            "{}: input `{}` is {other:?}; perfopt passes tensors to ONNX models",
                            source.shown,
                            outlet.name()
                        ),
                    ))
                }
            }
        }
        let outputs = session.outputs().len();
        let methods = vec![MethodSchema::tensors_forward(
            inputs.iter().map(|i| i.name.clone()).collect(),
            Some(outputs),
        )];
        Ok(Onnx {
            session: Mutex::new(session),
            source,
            settings,
            inputs,
            methods,
        })
    }

    fn form(&self, settings: Settings) -> Result<Arc<dyn Engine>> {
        let bytes = self.source.read()?;
        let session = self.source.session(&bytes, settings)?;
        Ok(Arc::new(Onnx::wrap(
            session,
            self.source.clone(),
            settings,
        )?))
    }

    /// The inputs as host tensors the graph takes, checked against its
    /// declared element types and shapes (ONNX Runtime's own messages do
    /// not name the model's file or say what was expected).
    fn check(&self, args: &[Value]) -> Result<Vec<Tensor>> {
        if args.len() != self.inputs.len() {
            return Err(Error::invalid_argument(format!(
                "the ONNX model takes {} input(s) ({}), got {}",
                self.inputs.len(),
                self.inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                args.len()
            )));
        }
        // Symbolic dimensions of one name must agree ("batch" on every
        // input): ONNX Runtime's kernels would fail deep inside, or
        // broadcast, where the caller made a mistake.
        let mut sizes: Vec<(&str, i64, usize)> = Vec::new();
        args.iter()
            .zip(&self.inputs)
            .enumerate()
            .map(|(i, (value, input))| {
                let Value::Tensor(t) = value else {
                    return Err(Error::invalid_argument(format!(
                        "input {i} `{}`: an ONNX model takes tensors, got {}",
                        input.name,
                        value.describe()
                    )));
                };
                let size = t.size();
                let fits = size.len() == input.shape.len()
                    && size
                        .iter()
                        .zip(&input.shape)
                        .all(|(&n, &want)| want < 0 || n == want);
                if !tensors::fits(t.kind(), input.ty) || !fits {
                    return Err(Error::invalid_argument(format!(
                        "input {i} `{}`: the ONNX model takes {} of shape {} and got {} of shape \
                         {size:?}",
                        input.name,
                        tensors::onnx_name(input.ty),
                        shape_label(&input.shape, &input.symbols),
                        tensors::kind_name(t.kind())
                    )));
                }
                for (d, symbol) in input.symbols.iter().enumerate() {
                    if symbol.is_empty() || input.shape.get(d).is_some_and(|&n| n >= 0) {
                        continue;
                    }
                    match sizes.iter().find(|(name, _, _)| name == symbol) {
                        Some(&(_, n, first)) if n != size[d] => {
                            return Err(Error::invalid_argument(format!(
                                "input {i} `{}`: dimension {d} (`{symbol}`) is {}, and input \
                                 {first} `{}` has `{symbol}` = {n}: the ONNX model takes one size \
                                 for it",
                                input.name, size[d], self.inputs[first].name
                            )))
                        }
                        Some(_) => {}
                        None => sizes.push((symbol.as_str(), size[d], i)),
                    }
                }
                let host = match t.device() {
                    Device::Cpu => t.shallow_clone(),
                    _ => t.f_to_device(Device::Cpu)?,
                };
                Ok(host.f_contiguous()?)
            })
            .collect()
    }
}

/// "[batch, 16]" for a shape with symbolic dimensions.
fn shape_label(shape: &[i64], symbols: &[String]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| match n {
            n if n >= 0 => n.to_string(),
            _ => symbols
                .get(d)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| "?".to_string()),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// ONNX Runtime's failure as a status: out of memory is a std::bad_alloc
/// or its arena's "Failed to allocate memory" (a generic error code).
fn run_error(err: ort::Error) -> Error {
    let text = err.to_string();
    let kind = match err.code() {
        ort::error::ErrorCode::InvalidArgument => ErrorKind::InvalidArgument,
        _ if text.contains("bad_alloc") || text.contains("Failed to allocate memory") => {
            ErrorKind::OutOfMemory
        }
        _ => ErrorKind::Torch,
    };
    Error::new(kind, format!("ONNX Runtime: {err}"))
}

impl Engine for Onnx {
    fn format(&self) -> Format {
        Format::Onnx
    }

    fn methods(&self) -> &[MethodSchema] {
        &self.methods
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        if method != "forward" {
            return Err(Error::invalid_argument(format!(
                "an ONNX model has no method `{method}`: its graph is forward"
            )));
        }
        let tensors = self.check(args)?;
        let inputs = tensors
            .iter()
            .map(tensors::input)
            .collect::<Result<Vec<_>>>()?;
        let values: Vec<ort::value::DynValue> = {
            let mut session = self.session.lock();
            let outputs = session.run(&inputs[..]).map_err(run_error)?;
            outputs.into_iter().map(|(_, value)| value).collect()
        };
        // ONNX Runtime hands a graph input that is also a graph output (the
        // dynamo exporter writes `return y, state` so) back as a value over
        // the input's memory, which it does not own: such an output is
        // copied while the input is alive (it may be a copy made above).
        let held: Vec<(usize, usize)> = tensors.iter().map(tensors::byte_range).collect();
        let mut results = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let out = tensors::output(value, i)?;
                let (start, end) = tensors::byte_range(&out);
                let shared = start < end && held.iter().any(|&(a, b)| start < b && a < end);
                Ok(Value::Tensor(if shared {
                    out.f_detach_copy()?
                } else {
                    out
                }))
            })
            .collect::<Result<Vec<Value>>>()?;
        // The inputs' memory is read by Run only; the views go first.
        drop(inputs);
        drop(tensors);
        Ok(if results.len() == 1 {
            results.remove(0)
        } else {
            Value::Tuple(results)
        })
    }

    /// The settings measured, but for those the session was built with (a
    /// session loaded as the tuning cache last chose is not at level all).
    fn tuning_variants(&self) -> Vec<Variant> {
        [
            (Level::All, false),
            (Level::Extended, false),
            (Level::Basic, false),
            (Level::All, true),
        ]
        .into_iter()
        .map(|(level, parallel)| Settings {
            level,
            parallel,
            threads: self.settings.threads,
        })
        .filter(|settings| *settings != self.settings)
        .map(|settings| Variant::new(settings.label()))
        .collect()
    }

    fn is_form(&self, label: &str) -> bool {
        Settings::from_label(label, self.settings.threads) == Some(self.settings)
    }

    fn builds_form(&self, label: &str) -> bool {
        Settings::from_label(label, self.settings.threads).is_some()
    }

    fn build_variant(&self, variant: &Variant) -> Result<Arc<dyn Engine>> {
        let settings =
            Settings::from_label(variant.label(), self.settings.threads).ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("ONNX models have no {:?} form", variant.label()),
                )
            })?;
        self.form(settings)
    }

    fn with_threads(&self, threads: usize) -> Result<Option<Arc<dyn Engine>>> {
        Ok(Some(self.form(Settings {
            threads: threads.max(1),
            ..self.settings
        })?))
    }

    fn threads(&self) -> Option<usize> {
        Some(self.settings.threads)
    }

    fn default_why(&self) -> String {
        format!(
            "default: the session as loaded ({}), its graph optimised when it was built",
            self.settings.label()
        )
    }

    fn as_loaded_label(&self) -> String {
        format!("as loaded ({})", self.settings.label())
    }

    fn own_allocator(&self) -> Option<&'static str> {
        Some("ONNX Runtime's arena")
    }

    fn inputs(&self) -> Inputs {
        tensors::inputs(self.inputs.iter().map(|i| (i.ty, i.shape.as_slice())))
    }

    fn fixed_batch(&self) -> Option<i64> {
        let first = self.inputs.first()?.shape.first().copied()?;
        (first >= 0 && self.inputs.iter().all(|i| i.shape.first() == Some(&first))).then_some(first)
    }

    fn describe(&self) -> Json {
        let runtime = &self.source.runtime;
        Json::object()
            .with("format", Format::Onnx.as_str())
            .with("form", self.settings.label())
            .with("threads", self.settings.threads as u64)
            .with("onnxruntime", runtime.version.as_str())
            .with(
                "onnxruntime_library",
                runtime.path.to_string_lossy().as_ref(),
            )
            .with(
                "providers",
                runtime
                    .providers
                    .iter()
                    .map(|p| Json::from(p.as_str()))
                    .collect::<Vec<Json>>(),
            )
            .with(
                "inputs",
                self.inputs
                    .iter()
                    .map(|i| {
                        Json::object()
                            .with("name", i.name.as_str())
                            .with("dtype", tensors::onnx_name(i.ty))
                            .with("shape", shape_label(&i.shape, &i.symbols))
                    })
                    .collect::<Vec<Json>>(),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_names_its_settings_with_or_without_as_loaded() {
        let extended = Settings {
            level: Level::Extended,
            parallel: false,
            threads: 2,
        };
        assert_eq!(extended.label(), "graph optimisation extended");
        for label in [
            "graph optimisation extended",
            "as loaded (graph optimisation extended)",
        ] {
            assert_eq!(Settings::from_label(label, 2), Some(extended), "{label}");
        }
        for label in [
            "graph optimisation sideways",
            "as loaded (graph optimisation extended",
            "frozen",
            "",
        ] {
            assert_eq!(Settings::from_label(label, 2), None, "{label}");
        }
    }
}
