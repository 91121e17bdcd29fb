//! Outputs that own their memory. A model may return its input (`return x`),
//! a view of it, one of its parameters, or a tensor of its state; handed out
//! as they are, such outputs would dangle once the caller frees its input, or
//! change under the caller as the model changes (and a caller writing into
//! one would change the model). An output whose storage is an input's, or
//! whose storage or tensor has holders besides the outputs themselves, is
//! copied: one lookup per tensor, nothing else on the common path.

use std::collections::HashMap;

use crate::error::Result;
use crate::runtime::tensor::{self, Holders};
use crate::runtime::Device;
use crate::value::Value;

/// The storage identities of the tensors among `args`.
pub fn storages(args: &[Value]) -> Result<Vec<usize>> {
    let mut ids = Vec::new();
    for arg in args {
        for t in arg.tensors() {
            if let Some((id, _)) = tensor::holders(t)?.storage {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// Copies outputs to the host (unless `on_device`), makes them contiguous,
/// and copies any that share memory with an input or with anything but the
/// outputs themselves.
pub fn finish(value: Value, inputs: &[usize], on_device: bool) -> Result<Value> {
    let placed = value.map_tensors(&mut |t| {
        let t = if on_device || t.device() == Device::Cpu {
            t
        } else {
            t.f_to_device(Device::Cpu)?
        };
        if t.is_contiguous() {
            Ok(t)
        } else {
            Ok(t.f_contiguous()?)
        }
    })?;
    // Who holds each output: an output returned twice, or two views of one
    // result, share among themselves, which is fine.
    let holders: Vec<Holders> = placed
        .tensors()
        .into_iter()
        .map(tensor::holders)
        .collect::<Result<_>>()?;
    // Counted once for all outputs (a scan per output was quadratic: 200k
    // outputs took 252 s): how many outputs hold each tensor or storage.
    let mut among_outputs: HashMap<usize, usize> = HashMap::with_capacity(holders.len() * 2);
    for h in &holders {
        *among_outputs.entry(h.tensor.0).or_default() += 1;
        if let Some((storage, _)) = h.storage.filter(|&(s, _)| s != h.tensor.0) {
            *among_outputs.entry(storage).or_default() += 1;
        }
    }
    let shared = |(id, count): (usize, usize)| count > among_outputs.get(&id).copied().unwrap_or(0);
    let mut next = holders.iter();
    placed.map_tensors(&mut |t| {
        let Some(h) = next.next() else {
            return Ok(t);
        };
        let from_input = h.storage.is_some_and(|(id, _)| inputs.contains(&id));
        if from_input || h.storage.is_some_and(shared) || shared(h.tensor) {
            Ok(t.f_detach_copy()?)
        } else {
            Ok(t)
        }
    })
}
