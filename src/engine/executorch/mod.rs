//! ExecuTorch programs (.pte: torch.export, lowered with the XNNPACK
//! partitioner) as an engine, run by ExecuTorch's C++ runtime through
//! perfopt's ExecuTorch part (shim.cpp, loaded by shim.rs). The program is
//! compiled already: `default` and max-autotune run it as it is.
//!
//! - One call at a time per program (one ExecuTorch Module, whose methods'
//!   memory is planned once); outputs are copied out of that memory before
//!   the next call.
//! - Threads: ExecuTorch's thread pool (XNNPACK's) is one per process, sized
//!   to the cores; perfopt sets no count per model and measures none.
//! - Shapes: a program exported with a dynamic batch takes any batch
//!   (dimension 0, one size for every such input) up to its bound, its
//!   other dimensions as exported (ExecuTorch marks a whole tensor dynamic,
//!   not a dimension, and checks only the element count against its plan:
//!   perfopt checks the rest); batching stays within the bound. A static
//!   program takes its own shapes.
//!   A program exported elsewhere with a static batch and a dynamic later
//!   dimension ([8, <=T]) is taken as batch-dynamic too: ExecuTorch's
//!   metadata does not say which dimension varies.
//! - Memory: a program whose inputs or outputs are not planned by itself
//!   (it would keep the caller's memory, or hand back none), or are laid
//!   out in another dimension order than row-major, is refused at load.

mod shim;

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Engine, Format, LoadContext, MethodSchema};
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::runtime::{Device, Tensor};
use crate::scalar_type;
use crate::value::Value;
use shim::{Program, RawTensor, Slot, MAX_DIMS, TAG_TENSOR};

/// An ExecuTorch program starts with a flatbuffer offset, then its file
/// identifier "ET" and two digits of the schema's version ("ET12").
pub fn probe(head: &[u8]) -> bool {
    head.len() >= 8 && &head[4..6] == b"ET" && head[6..8].iter().all(u8::is_ascii_digit)
}

/// For the optimizer's report: whether programs can run here, and on what.
pub fn availability() -> Json {
    match shim::part() {
        Ok(path) => Json::object()
            .with("available", true)
            .with("runtime", path.to_string_lossy().as_ref()),
        Err(why) => Json::object()
            .with("available", false)
            .with("runtime", why.as_str()),
    }
}

/// One method: its inputs and outputs as the program declares them.
struct Method {
    name: String,
    inputs: Vec<Slot>,
    outputs: usize,
}

pub struct ExecuTorch {
    program: Mutex<Program>,
    shown: String,
    methods: Vec<Method>,
    schemas: Vec<MethodSchema>,
    /// Held open while the program loads from it by name (/proc/self/fd).
    _file: std::fs::File,
}

/// Loads a program (the open, regular file [`super::load`] probed).
pub fn load(file: std::fs::File, _size: u64, context: &LoadContext) -> Result<Arc<dyn Engine>> {
    use std::os::unix::io::AsRawFd;
    let shown = context.path.to_string();
    // ExecuTorch opens the file by name: the descriptor's name is the file
    // perfopt checked, wherever the path points now.
    let by_descriptor = format!("/proc/self/fd/{}", file.as_raw_fd());
    let source = match std::path::Path::new(&by_descriptor).exists() {
        true => by_descriptor,
        false => shown.clone(),
    };
    let mut program = Program::load(&source, &shown)?;
    if !matches!(context.device, Device::Cpu) {
        log::info!("{shown}: ExecuTorch programs run on the CPU in this perfopt");
    }
    let mut methods = Vec::new();
    for name in program.method_names()? {
        let (inputs, outputs) = program.method_slots(&name)?;
        let not_tensor = |slots: &[Slot]| slots.iter().position(|s| s.tag != TAG_TENSOR);
        if let Some(i) = not_tensor(&inputs) {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "{shown}: method `{name}` takes a value that is not a tensor at input {i}; \
                     perfopt passes tensors to ExecuTorch programs"
                ),
            ));
        }
        if let Some(i) = not_tensor(&outputs) {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "{shown}: method `{name}` returns a value that is not a tensor at output \
                     {i}; perfopt passes on tensors from ExecuTorch programs"
                ),
            ));
        }
        let slots = || inputs.iter().chain(&outputs);
        if let Some(slot) = slots().find(|s| scalar_type::kind_of(s.dtype).is_none()) {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "{shown}: method `{name}` has tensors of ScalarType {}, which perfopt does \
                     not pass",
                    slot.dtype
                ),
            ));
        }
        if slots().any(|s| s.planned == 0 || s.row_major == 0) {
            return Err(Error::new(
                ErrorKind::UnsupportedModel,
                format!(
                    "{shown}: method `{name}` has inputs or outputs whose memory the program \
                     does not plan, or laid out in another order than row-major; perfopt runs \
                     programs exported with planned, row-major inputs and outputs (ExecuTorch's \
                     defaults)"
                ),
            ));
        }
        methods.push(Method {
            name,
            inputs,
            outputs: outputs.len(),
        });
    }
    let schemas = methods
        .iter()
        .map(|m| {
            let names = (0..m.inputs.len()).map(|i| format!("input_{i}")).collect();
            let mut schema = MethodSchema::tensors_forward(names, Some(m.outputs));
            schema.schema = schema.schema.replacen("forward", &m.name, 1);
            schema.name = m.name.clone();
            schema
        })
        .collect();
    Ok(Arc::new(ExecuTorch {
        program: Mutex::new(program),
        shown,
        methods,
        schemas,
        _file: file,
    }))
}

/// "[<=64, 4]": a shape with its batch's bound.
fn shape_label(slot: &Slot) -> String {
    let dims: Vec<String> = slot
        .shape()
        .iter()
        .enumerate()
        .map(|(d, n)| match (d, slot.dynamic) {
            (0, 1..) => format!("<={n}"),
            _ => n.to_string(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

impl ExecuTorch {
    fn method(&self, name: &str) -> Result<&Method> {
        self.methods.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.methods.iter().map(|m| m.name.as_str()).collect();
            Error::invalid_argument(format!(
                "the ExecuTorch program has no method `{name}`; it has {}",
                names.join(", ")
            ))
        })
    }

    /// The arguments as contiguous host tensors of the program's element
    /// types and shapes: dimension 0 of a dynamic input within its bound and
    /// one size across them, every other dimension as exported (ExecuTorch
    /// checks only a tensor's element count against its plan, and its own
    /// message would say only NotSupported or InvalidArgument).
    fn check(&self, method: &Method, args: &[Value]) -> Result<Vec<Tensor>> {
        if args.len() != method.inputs.len() {
            return Err(Error::invalid_argument(format!(
                "method `{}` of the ExecuTorch program takes {} input(s), got {}",
                method.name,
                method.inputs.len(),
                args.len()
            )));
        }
        let mut batch: Option<(i64, usize)> = None;
        let mut host = Vec::with_capacity(args.len());
        for (i, (value, slot)) in args.iter().zip(&method.inputs).enumerate() {
            let Value::Tensor(t) = value else {
                return Err(Error::invalid_argument(format!(
                    "input {i}: an ExecuTorch program takes tensors, got {}",
                    value.describe()
                )));
            };
            let size = t.size();
            let dynamic = slot.dynamic != 0;
            let fits = size.len() == slot.shape().len()
                && size
                    .iter()
                    .zip(slot.shape())
                    .enumerate()
                    .all(|(d, (&n, &bound))| match (d, dynamic) {
                        (0, true) => (1..=bound).contains(&n),
                        _ => n == bound,
                    });
            if scalar_type::code_of(t.kind()).map(|(code, _)| code) != Some(slot.dtype) || !fits {
                return Err(Error::invalid_argument(format!(
                    "input {i} of `{}`: the ExecuTorch program takes {} of shape {} and got {} \
                     of shape {size:?}",
                    method.name,
                    scalar_type::kind_of(slot.dtype).map_or("?", |(_, name)| name),
                    shape_label(slot),
                    scalar_type::code_of(t.kind())
                        .map_or_else(|| format!("{:?}", t.kind()), |(_, n)| n.into())
                )));
            }
            if let (true, Some(&n)) = (dynamic, size.first()) {
                match batch {
                    Some((first, at)) if first != n => {
                        return Err(Error::invalid_argument(format!(
                            "input {i} of `{}` has a batch of {n} and input {at} of {first}: the \
                             ExecuTorch program takes one batch for all",
                            method.name
                        )))
                    }
                    Some(_) => {}
                    None => batch = Some((n, i)),
                }
            }
            let on_host = match t.device() {
                Device::Cpu => t.shallow_clone(),
                _ => t.f_to_device(Device::Cpu)?,
            };
            host.push(on_host.f_contiguous()?);
        }
        Ok(host)
    }
}

/// A libtorch tensor holding a copy of an output (the program's memory is
/// reused by its next call).
fn copy_out(raw: &RawTensor, index: usize) -> Result<Tensor> {
    let (kind, _) = scalar_type::kind_of(raw.dtype).ok_or_else(|| {
        Error::new(
            ErrorKind::UnsupportedModel,
            format!(
                "output {index} is of ScalarType {}, which perfopt does not pass",
                raw.dtype
            ),
        )
    })?;
    let ndim = usize::try_from(raw.ndim).unwrap_or(MAX_DIMS + 1);
    if ndim > MAX_DIMS || raw.sizes[..ndim].iter().any(|&n| n < 0) {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("output {index} has a shape perfopt cannot read"),
        ));
    }
    let out = Tensor::f_empty(&raw.sizes[..ndim], (kind, Device::Cpu))?;
    let bytes = out.numel() * kind.elt_size_in_bytes();
    if bytes > 0 && raw.data.is_null() {
        return Err(Error::new(
            ErrorKind::UnsupportedModel,
            format!("output {index} of the ExecuTorch program has no memory"),
        ));
    }
    if bytes > 0 {
        // SAFETY: the program's output holds `bytes` bytes of this shape and
        // type (ExecuTorch's tensors are contiguous), valid until its next
        // call, which the engine's lock holds off; `out` was just allocated
        // with that size.
        unsafe {
            std::ptr::copy_nonoverlapping(raw.data as *const u8, out.data_ptr() as *mut u8, bytes)
        };
    }
    Ok(out)
}

impl Engine for ExecuTorch {
    fn format(&self) -> Format {
        Format::ExecuTorch
    }

    fn methods(&self) -> &[MethodSchema] {
        &self.schemas
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        let method = self.method(method)?;
        let tensors = self.check(method, args)?;
        let raw: Vec<RawTensor> = tensors
            .iter()
            .map(|t| {
                let mut raw = RawTensor {
                    data: t.data_ptr(),
                    dtype: scalar_type::code_of(t.kind()).map_or(-1, |(code, _)| code),
                    ndim: t.dim() as i32,
                    ..RawTensor::default()
                };
                raw.sizes[..t.dim()].copy_from_slice(&t.size());
                raw
            })
            .collect();
        let mut results =
            self.program
                .lock()
                .execute(&method.name, &raw, method.outputs, |outs| {
                    outs.iter()
                        .enumerate()
                        .map(|(i, out)| Ok(Value::Tensor(copy_out(out, i)?)))
                        .collect::<Result<Vec<Value>>>()
                })?;
        drop(tensors); // read by the call only
        Ok(if results.len() == 1 {
            results.remove(0)
        } else {
            Value::Tuple(results)
        })
    }

    fn default_why(&self) -> String {
        "default: the ExecuTorch program is compiled already (its XNNPACK parts too); it runs as \
         it is"
            .to_string()
    }

    fn threads_fixed(&self) -> Option<&'static str> {
        Some("ExecuTorch's thread pool is one per process, sized to the cores")
    }

    fn batch_limit(&self) -> Option<i64> {
        let inputs = &self.forward()?.inputs;
        inputs
            .iter()
            .filter(|s| s.dynamic != 0)
            .filter_map(|s| s.shape().first().copied())
            .min()
            .or_else(|| self.fixed_batch())
    }

    fn fixed_batch(&self) -> Option<i64> {
        let inputs = &self.forward()?.inputs;
        let first = *inputs.first()?.shape().first()?;
        inputs
            .iter()
            .all(|s| s.dynamic == 0 && s.shape().first() == Some(&first))
            .then_some(first)
    }

    fn own_allocator(&self) -> Option<&'static str> {
        Some("the ExecuTorch program's planned memory")
    }

    fn describe(&self) -> Json {
        Json::object()
            .with("format", Format::ExecuTorch.as_str())
            .with("program", self.shown.as_str())
            .with("threads", "ExecuTorch's thread pool (one per process)")
            .with(
                "methods",
                self.methods
                    .iter()
                    .map(|m| {
                        Json::object().with("name", m.name.as_str()).with(
                            "inputs",
                            m.inputs
                                .iter()
                                .map(|s| {
                                    Json::object()
                                        .with(
                                            "dtype",
                                            scalar_type::kind_of(s.dtype).map_or("?", |(_, n)| n),
                                        )
                                        .with("shape", shape_label(s))
                                })
                                .collect::<Vec<Json>>(),
                        )
                    })
                    .collect::<Vec<Json>>(),
            )
    }
}

impl ExecuTorch {
    fn forward(&self) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == "forward")
    }
}

#[cfg(test)]
mod tests {
    use super::probe;

    #[test]
    fn programs_are_told_by_their_file_identifier() {
        assert!(probe(b"\x1c\x00\x00\x00ET12\x00\x00"));
        assert!(probe(b"<\x00\x00\x00ET12eh00 \x00\x00\x00"));
        assert!(!probe(b"\x1c\x00\x00\x00ETxx"));
        assert!(!probe(b"PK\x03\x04ET1"));
        assert!(!probe(b"\x08\x08ONNX\x00\x00"));
    }
}
