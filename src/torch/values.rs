//! Value trees to and from the shim's prefix-order nodes (src/cxx/values.cpp).

use std::ffi::{c_char, c_void};

use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

pub(crate) const PSHIM_NONE: i32 = 0;
pub(crate) const PSHIM_TENSOR: i32 = 1;
pub(crate) const PSHIM_INT: i32 = 2;
pub(crate) const PSHIM_DOUBLE: i32 = 3;
pub(crate) const PSHIM_BOOL: i32 = 4;
pub(crate) const PSHIM_STRING: i32 = 5;
pub(crate) const PSHIM_LIST: i32 = 6;
pub(crate) const PSHIM_TUPLE: i32 = 7;

/// `pshim_node`, as shim.h declares it.
#[repr(C)]
pub(crate) struct Node {
    pub kind: i32,
    pub int_value: i64,
    pub double_value: f64,
    pub string: *const c_char,
    pub length: usize,
    pub tensor: *mut c_void,
}

pub(crate) type NodeSink = unsafe extern "C" fn(ctx: *mut c_void, node: *const Node);

/// The nodes of `values` in prefix order. They borrow the values' strings
/// and tensors: keep `values` alive while the nodes are used.
pub(crate) fn encode(values: &[Value]) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(values.len());
    for value in values {
        push(value, &mut nodes);
    }
    nodes
}

fn push(value: &Value, nodes: &mut Vec<Node>) {
    let mut node = Node {
        kind: PSHIM_NONE,
        int_value: 0,
        double_value: 0.0,
        string: std::ptr::null(),
        length: 0,
        tensor: std::ptr::null_mut(),
    };
    match value {
        Value::None => {}
        Value::Bool(b) => {
            node.kind = PSHIM_BOOL;
            node.int_value = i64::from(*b);
        }
        Value::Int(i) => {
            node.kind = PSHIM_INT;
            node.int_value = *i;
        }
        Value::Double(d) => {
            node.kind = PSHIM_DOUBLE;
            node.double_value = *d;
        }
        Value::Str(s) => {
            node.kind = PSHIM_STRING;
            node.string = s.as_ptr().cast();
            node.length = s.len();
        }
        Value::Tensor(t) => {
            node.kind = PSHIM_TENSOR;
            node.tensor = t.as_ptr() as *mut c_void;
        }
        Value::List(items) | Value::Tuple(items) => {
            node.kind = if matches!(value, Value::List(_)) {
                PSHIM_LIST
            } else {
                PSHIM_TUPLE
            };
            node.length = items.len();
            nodes.push(node);
            for item in items {
                push(item, nodes);
            }
            return;
        }
    }
    nodes.push(node);
}

/// A node received from the shim, owning its copy of the data.
enum Received {
    Leaf(Value),
    Open { tuple: bool, items: usize },
}

/// Collects result nodes; `decode` rebuilds the tree.
#[derive(Default)]
pub(crate) struct Collector {
    nodes: Vec<Received>,
    bad: Option<String>,
}

/// The sink the shim calls for every result node.
pub(crate) unsafe extern "C" fn collect_node(ctx: *mut c_void, node: *const Node) {
    // SAFETY: ctx is the &mut Collector passed with this sink, and node is
    // valid for the duration of the call.
    let collector = unsafe { &mut *(ctx as *mut Collector) };
    let node = unsafe { &*node };
    let received = match node.kind {
        PSHIM_NONE => Received::Leaf(Value::None),
        // SAFETY: a result tensor is a heap at::Tensor the receiver owns,
        // which is what tch::Tensor owns.
        PSHIM_TENSOR => Received::Leaf(Value::Tensor(unsafe {
            tch::Tensor::from_ptr(node.tensor.cast())
        })),
        PSHIM_INT => Received::Leaf(Value::Int(node.int_value)),
        PSHIM_DOUBLE => Received::Leaf(Value::Double(node.double_value)),
        PSHIM_BOOL => Received::Leaf(Value::Bool(node.int_value != 0)),
        PSHIM_STRING => {
            // SAFETY: the string's bytes are valid during the call.
            let bytes =
                unsafe { std::slice::from_raw_parts(node.string.cast::<u8>(), node.length) };
            Received::Leaf(Value::Str(String::from_utf8_lossy(bytes).into_owned()))
        }
        PSHIM_LIST | PSHIM_TUPLE => Received::Open {
            tuple: node.kind == PSHIM_TUPLE,
            items: node.length,
        },
        other => {
            collector.bad = Some(format!("the shim sent a node of unknown kind {other}"));
            return;
        }
    };
    collector.nodes.push(received);
}

impl Collector {
    /// The received nodes as values (usually one tree).
    pub(crate) fn decode(self) -> Result<Vec<Value>> {
        if let Some(bad) = self.bad {
            return Err(Error::new(ErrorKind::Internal, bad));
        }
        let mut iter = self.nodes.into_iter();
        let mut values = Vec::new();
        while let Some(value) = build(&mut iter)? {
            values.push(value);
        }
        Ok(values)
    }
}

fn build(iter: &mut impl Iterator<Item = Received>) -> Result<Option<Value>> {
    Ok(match iter.next() {
        None => None,
        Some(Received::Leaf(value)) => Some(value),
        Some(Received::Open { tuple, items }) => {
            let mut children = Vec::with_capacity(items.min(1 << 16));
            for _ in 0..items {
                children.push(
                    build(iter)?.ok_or_else(|| {
                        Error::new(ErrorKind::Internal, "a result list ended early")
                    })?,
                );
            }
            Some(if tuple {
                Value::Tuple(children)
            } else {
                Value::List(children)
            })
        }
    })
}

/// Runs a shim call that sends its result to a node sink, and decodes it.
/// `what` names the call in an error's context; made only on failure (a
/// message formatted per successful run was on the hot path).
pub(crate) fn collect(
    what: impl FnOnce() -> String,
    call: impl FnOnce(NodeSink, *mut c_void) -> std::ffi::c_int,
) -> Result<Vec<Value>> {
    collect_with(what, super::pshim_last_error, call)
}

/// [`collect`] for a library with its own last error (libperfopt_cuda.so.0).
pub(crate) fn collect_with(
    what: impl FnOnce() -> String,
    last_error: unsafe extern "C" fn() -> *const std::ffi::c_char,
    call: impl FnOnce(NodeSink, *mut c_void) -> std::ffi::c_int,
) -> Result<Vec<Value>> {
    let mut collector = Collector::default();
    let status = call(collect_node, (&mut collector as *mut Collector).cast());
    // Decode even on failure, so that tensors already received are dropped.
    let values = collector.decode();
    if status != super::PSHIM_OK {
        super::check_with(status, last_error, &what())?;
    }
    values
}
