//! CUDA graphs over an engine's forward pass, captured lazily per input
//! shape and kept in a bounded least-recently-used cache: what
//! `torch.compile(mode="reduce-overhead")` does for Python users.
//!
//! Concurrency: the cache's lock is held only to look up and record, never
//! across a capture or a replay, so runs of shapes already captured never
//! wait for a capture. A thread that meets a shape being captured by another
//! runs it without a graph meanwhile. Captures are in thread-local mode, and
//! the device gate keeps other perfopt work off the device while one is
//! recorded. A capture that fails is retried a few times (it may have failed
//! for a passing reason) before the shape runs without a graph for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::numerics::{FlagsGuard, NumericFlags};
use crate::runtime::cuda::{Capture, Graph};
use crate::runtime::{Device, Tensor};
use crate::stats::millis;
use crate::value::Value;

/// Held shared by every perfopt run on a CUDA device and exclusively by a
/// capture: work from other threads must not land between a capture's
/// begin and end. The one lock perfopt holds across libtorch calls; nothing
/// logs or calls back while holding it.
static DEVICE_GATE: RwLock<()> = RwLock::new(());

/// Shared access for a run on a CUDA device.
pub fn device_run_gate() -> RwLockReadGuard<'static, ()> {
    DEVICE_GATE.read()
}

/// Captures tried per shape before it runs without a graph for good.
const MAX_CAPTURE_ATTEMPTS: u32 = 3;
const MAX_FAILED_SHAPES: usize = 32;

/// What identifies a graph: each argument's shape, dtype and device, and the
/// value of each non-tensor argument (baked into the graph).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeKey(Vec<String>);

impl ShapeKey {
    pub fn of(args: &[Value]) -> ShapeKey {
        ShapeKey(
            args.iter()
                .map(|value| match value {
                    Value::Tensor(t) => format!("{}@{:?}", value.label(), t.device()),
                    other => other.label(),
                })
                .collect(),
        )
    }

    pub fn label(&self) -> String {
        self.0.join(", ")
    }
}

/// A bounded least-recently-used map (most recent last). Small: a linear scan
/// over a handful of shapes costs less than hashing.
#[derive(Debug)]
pub struct LruCache<V> {
    entries: Vec<(ShapeKey, V)>,
    capacity: usize,
    evictions: u64,
}

impl<V: Clone> LruCache<V> {
    pub fn new(capacity: usize) -> Self {
        LruCache {
            entries: Vec::new(),
            capacity: capacity.max(1),
            evictions: 0,
        }
    }

    pub fn get(&mut self, key: &ShapeKey) -> Option<V> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(index);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    pub fn insert(&mut self, key: ShapeKey, value: V) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() == self.capacity {
            self.entries.remove(0);
            self.evictions += 1;
        }
        self.entries.push((key, value));
    }

    pub fn keys(&self) -> impl Iterator<Item = &ShapeKey> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

struct Failure {
    key: ShapeKey,
    reason: String,
    attempts: u32,
    /// A reason no retry can change (a model that changes its state).
    permanent: bool,
}

struct GraphState {
    graphs: LruCache<Arc<Mutex<Graph>>>,
    capturing: Vec<ShapeKey>,
    failed: Vec<Failure>,
    captures: u64,
    capture_time: Duration,
    replays: u64,
}

/// What run() found for a shape under the lock.
enum Plan {
    Replay(Arc<Mutex<Graph>>),
    Plain,
    Capture,
}

/// CUDA graphs over one engine.
pub struct GraphCache {
    engine: Arc<dyn Engine>,
    device_index: i32,
    /// Flags set while capturing (baked into the graphs); `None` = the process's.
    flags: Option<NumericFlags>,
    warmup_runs: u32,
    state: Mutex<GraphState>,
}

impl GraphCache {
    pub fn new(
        engine: Arc<dyn Engine>,
        device_index: i32,
        flags: Option<NumericFlags>,
        warmup_runs: u32,
        capacity: usize,
    ) -> Self {
        GraphCache {
            engine,
            device_index,
            flags,
            warmup_runs,
            state: Mutex::new(GraphState {
                graphs: LruCache::new(capacity),
                capturing: Vec::new(),
                failed: Vec::new(),
                captures: 0,
                capture_time: Duration::ZERO,
                replays: 0,
            }),
        }
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The flags baked into this cache's graphs (`None`: the process's).
    pub fn flags(&self) -> Option<NumericFlags> {
        self.flags
    }

    fn plan(&self, key: &ShapeKey) -> Plan {
        let mut state = self.state.lock();
        if let Some(graph) = state.graphs.get(key) {
            return Plan::Replay(graph);
        }
        if state.capturing.contains(key) {
            return Plan::Plain;
        }
        if let Some(failure) = state.failed.iter().find(|f| f.key == *key) {
            if failure.permanent || failure.attempts >= MAX_CAPTURE_ATTEMPTS {
                return Plan::Plain;
            }
        }
        state.capturing.push(key.clone());
        Plan::Capture
    }

    /// Captures a graph for these arguments now (compile-time warm-up).
    /// `Ok(Some(reason))`: the capture failed and these shapes run without a
    /// graph for now (the reason is logged and in the report).
    pub fn prepare(&self, args: &[Value]) -> Result<Option<String>> {
        let key = ShapeKey::of(args);
        match self.plan(&key) {
            Plan::Replay(_) => Ok(None),
            Plan::Plain => Ok(Some(self.failure(&key).unwrap_or_default())),
            Plan::Capture => Ok(self.capture_and_record(&key, args).err()),
        }
    }

    /// Why capturing these arguments' shapes failed, if it did.
    pub fn failure(&self, key: &ShapeKey) -> Option<String> {
        self.state
            .lock()
            .failed
            .iter()
            .find(|f| f.key == *key)
            .map(|f| f.reason.clone())
    }

    /// Captures and records the outcome; the error is the failure's reason.
    fn capture_and_record(
        &self,
        key: &ShapeKey,
        args: &[Value],
    ) -> std::result::Result<Arc<Mutex<Graph>>, String> {
        let started = Instant::now();
        let outcome = self.capture(args);
        let elapsed = started.elapsed();
        let mut state = self.state.lock();
        state.capturing.retain(|k| k != key);
        let result = match outcome {
            Ok(graph) => {
                state.captures += 1;
                state.capture_time += elapsed;
                state.failed.retain(|f| f.key != *key);
                let graph = Arc::new(Mutex::new(graph));
                state.graphs.insert(key.clone(), graph.clone());
                Ok(graph)
            }
            Err(err) => {
                let permanent = err.kind() == ErrorKind::InvalidArgument;
                let reason = err.to_string();
                match state.failed.iter_mut().find(|f| f.key == *key) {
                    Some(failure) => {
                        failure.attempts += 1;
                        failure.reason = reason.clone();
                        failure.permanent |= permanent;
                    }
                    None => {
                        if state.failed.len() == MAX_FAILED_SHAPES {
                            state.failed.remove(0);
                        }
                        state.failed.push(Failure {
                            key: key.clone(),
                            reason: reason.clone(),
                            attempts: 1,
                            permanent,
                        });
                    }
                }
                Err(reason)
            }
        };
        drop(state);
        // Logged after the lock is released: a host callback may call back in.
        match &result {
            Ok(_) => log::info!(
                "captured a CUDA graph for [{}] in {:.1} ms",
                key.label(),
                millis(elapsed)
            ),
            Err(reason) => log::warn!(
                "CUDA graph capture failed for [{}], running without a graph: {reason}",
                key.label()
            ),
        }
        result
    }

    /// Records one graph: warm-up runs and the capture on a side stream,
    /// with every other perfopt run on the device held off.
    fn capture(&self, args: &[Value]) -> Result<Graph> {
        let _gate = DEVICE_GATE.write();
        let _flags = self.flags.map(FlagsGuard::set).transpose()?;
        // Static inputs: the graph reads its inputs from these buffers.
        let device = Device::Cuda(self.device_index as usize);
        let static_args: Vec<Value> = args
            .iter()
            .map(|value| match value {
                Value::Tensor(t) => Ok(Value::Tensor(t.f_to_device(device)?.f_detach_copy()?)),
                other => Ok(other.shallow_clone()),
            })
            .collect::<Result<_>>()?;
        let static_inputs: Vec<Tensor> = static_args
            .iter()
            .filter_map(|v| v.as_tensor().map(Tensor::shallow_clone))
            .collect();
        let saved = self.engine.save_state()?;
        let mut capture = Capture::start(self.device_index)?;
        let restore = |engine: &Arc<dyn Engine>| -> Result<()> {
            match &saved {
                Some(state) => engine.restore_state(state),
                None => Ok(()),
            }
        };
        for _ in 0..self.warmup_runs.max(1) {
            self.engine.call("forward", &static_args)?;
        }
        if let Some(state) = &saved {
            if !self.engine.state_equals(state)? {
                restore(&self.engine)?;
                // InvalidArgument marks the failure as one no retry changes.
                return Err(Error::invalid_argument(
                    "the model changes its state (module attributes) when it runs: a CUDA graph \
                     would replay the state of its capture, so it runs without a graph",
                ));
            }
        }
        capture.begin()?;
        let outputs = self.engine.call("forward", &static_args)?.into_tensors()?;
        let graph = capture.end(&static_inputs, &outputs)?;
        restore(&self.engine)?;
        Ok(graph)
    }

    pub fn run(&self, args: &[Value]) -> Result<Value> {
        let key = ShapeKey::of(args);
        let graph = match self.plan(&key) {
            Plan::Replay(graph) => Some(graph),
            Plan::Plain => None,
            Plan::Capture => self.capture_and_record(&key, args).ok(),
        };
        let Some(graph) = graph else {
            let _gate = DEVICE_GATE.read();
            return self.engine.call("forward", args);
        };
        let inputs: Vec<&Tensor> = args.iter().filter_map(Value::as_tensor).collect();
        let outputs = {
            let _gate = DEVICE_GATE.read();
            // One replay at a time per graph: its static buffers are shared.
            graph.lock().replay(&inputs)?
        };
        self.state.lock().replays += 1;
        let mut values: Vec<Value> = outputs.into_iter().map(Value::Tensor).collect();
        Ok(if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Tuple(values)
        })
    }

    pub fn report(&self) -> Json {
        let state = self.state.lock();
        Json::object()
            .with("captured", state.captures)
            .with("capture_ms", millis(state.capture_time))
            .with("replays", state.replays)
            .with(
                "cached_shapes",
                Json::Array(state.graphs.keys().map(|k| Json::from(k.label())).collect()),
            )
            .with("cache_capacity", state.graphs.capacity)
            .with("evictions", state.graphs.evictions())
            .with("baked_flags", self.flags.map(|f| f.label()))
            .with(
                "fallbacks",
                Json::Array(
                    state
                        .failed
                        .iter()
                        .map(|f| {
                            Json::object()
                                .with("inputs", f.key.label())
                                .with("reason", f.reason.as_str())
                                .with("attempts", f.attempts)
                                .with("retried", !f.permanent && f.attempts < MAX_CAPTURE_ATTEMPTS)
                        })
                        .collect(),
                ),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Kind;

    fn key(n: i64) -> ShapeKey {
        ShapeKey(vec![format!("{n}x3")])
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut cache = LruCache::new(2);
        cache.insert(key(1), 1);
        cache.insert(key(2), 2);
        assert_eq!(cache.get(&key(1)), Some(1)); // 1 is now the most recent
        cache.insert(key(3), 3);
        assert_eq!(cache.get(&key(2)), None);
        assert_eq!(cache.get(&key(1)), Some(1));
        assert_eq!(cache.get(&key(3)), Some(3));
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.keys().count(), 2);
    }

    #[test]
    fn keys_name_shapes_and_scalar_values() {
        let args = [
            Value::Tensor(Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))),
            Value::Int(16000),
        ];
        assert_eq!(ShapeKey::of(&args).label(), "4x3:Float@Cpu, 16000");
    }
}
