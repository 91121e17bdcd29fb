//! What runs a model's forward pass: an engine as it is, or CUDA graphs over
//! one. Below both the model and the tuner, which build and compare these.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::graphs::GraphCache;
use crate::value::Value;

pub enum Executor {
    Plain(Arc<dyn Engine>),
    Graphs(Arc<GraphCache>),
    /// max-autotune without warm-up inputs: tuned on the first run's inputs.
    PendingAutotune,
}

impl Executor {
    /// The engine whose methods and state this executor uses.
    pub fn engine(&self) -> Option<&Arc<dyn Engine>> {
        match self {
            Executor::Plain(engine) => Some(engine),
            Executor::Graphs(graphs) => Some(graphs.engine()),
            Executor::PendingAutotune => None,
        }
    }

    pub fn forward(&self, args: &[Value]) -> Result<Value> {
        // Every engine's work starts threads a forked child cannot use.
        crate::fork::mark_used();
        match self {
            Executor::Plain(engine) => engine.call("forward", args),
            Executor::Graphs(graphs) => graphs.run(args),
            Executor::PendingAutotune => Err(Error::new(
                ErrorKind::Internal,
                "max-autotune has not run yet",
            )),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Executor::Plain(_) => "eager",
            Executor::Graphs(_) => "cuda-graphs",
            Executor::PendingAutotune => "pending max-autotune (tunes on the first run)",
        }
    }
}
