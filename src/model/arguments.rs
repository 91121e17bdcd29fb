//! A call's arguments against the model: its methods' schemas (how many
//! inputs each takes) and its device (tensors moved there).

use super::Model;
use crate::engine::MethodSchema;
use crate::error::{Error, Result};
use crate::value::Value;

impl Model {
    pub(super) fn schema(&self, method: &str) -> Result<MethodSchema> {
        self.original
            .methods()
            .iter()
            .find(|m| m.name == method)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .original
                    .methods()
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                Error::invalid_argument(format!(
                    "model {} has no method `{method}` (it has: {})",
                    self.name,
                    names.join(", ")
                ))
            })
    }

    pub(super) fn check_args(&self, method: &str, args: &[Value]) -> Result<()> {
        let (required, total) = match self.original.methods().iter().find(|m| m.name == method) {
            Some(schema) => schema.arity(),
            None => return self.schema(method).map(|_| ()),
        };
        let ok = args.len() >= required && total.is_none_or(|t| args.len() <= t);
        if ok && method == "forward" {
            self.check_held_inputs(args)?;
        }
        if !ok {
            let expected = match total {
                Some(t) if t == required => format!("{t}"),
                Some(t) => format!("{required} to {t}"),
                None => format!("at least {required}"),
            };
            let what = match method {
                "forward" => format!("model {}", self.name),
                _ => format!("{method}() of model {}", self.name),
            };
            return Err(Error::invalid_argument(format!(
                "{what} takes {expected} input(s), got {}",
                args.len()
            )));
        }
        Ok(())
    }

    /// A bundle takes what its first form took, whichever form runs: the
    /// sizes and element types an ONNX graph fixed (engine/inputs.rs), or
    /// those of the form a form loaded alone stands in for.
    fn check_held_inputs(&self, args: &[Value]) -> Result<()> {
        let Some((specs, form)) = self.forms.as_ref().and_then(|f| f.held_inputs()) else {
            return Ok(());
        };
        for (i, (arg, spec)) in args.iter().zip(specs).enumerate() {
            match arg {
                Value::Tensor(t) => spec.check(i, t, form)?,
                other => {
                    return Err(Error::invalid_argument(format!(
                        "input {i}: the model takes a tensor (as its {form} form did), got {}",
                        other.describe()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Moves the tensors in `args` to the model's device; no copy for those
    /// already there.
    pub(super) fn to_device(&self, args: Vec<Value>) -> Result<Vec<Value>> {
        let device = self.device.to_runtime();
        args.into_iter()
            .map(|arg| {
                arg.map_tensors(&mut |t| {
                    if t.device() == device {
                        Ok(t)
                    } else {
                        Ok(t.f_to_device(device)?)
                    }
                })
            })
            .collect()
    }
}
