//! perfopt_value: arguments and results of any TorchScript kind, as a small
//! tagged struct (one struct for every kind, struct_size-versioned), and the
//! owned result trees perfopt_model_call hands out.
#![allow(non_camel_case_types)]

use parking_lot::Mutex;
use std::ffi::c_char;
use std::mem::size_of;

use super::boundary_void;
use super::dlpack::{release_all, tensor_from_dl, tensor_to_managed, DLManagedTensor, DLTensor};
use crate::error::{Error, Result};
use crate::value::Value;

pub const PERFOPT_VALUE_NONE: i32 = 0;
pub const PERFOPT_VALUE_TENSOR: i32 = 1;
pub const PERFOPT_VALUE_INT: i32 = 2;
pub const PERFOPT_VALUE_DOUBLE: i32 = 3;
pub const PERFOPT_VALUE_BOOL: i32 = 4;
pub const PERFOPT_VALUE_STRING: i32 = 5;
pub const PERFOPT_VALUE_LIST: i32 = 6;
pub const PERFOPT_VALUE_TUPLE: i32 = 7;

/// One argument or result. Set struct_size = sizeof(perfopt_value) and kind,
/// then the field the kind uses:
/// - PERFOPT_VALUE_NONE: nothing;
/// - PERFOPT_VALUE_TENSOR: `tensor` (borrowed for the call, as in perfopt_model_run);
/// - PERFOPT_VALUE_INT: `int_value`; PERFOPT_VALUE_BOOL: `int_value` 0 or 1;
/// - PERFOPT_VALUE_DOUBLE: `double_value`;
/// - PERFOPT_VALUE_STRING: `string` (UTF-8) and `length` in bytes (no NUL needed);
/// - PERFOPT_VALUE_LIST, PERFOPT_VALUE_TUPLE: `items`, `length` values.
///
/// Bounds: at most 1048576 (2^20) values inside one call's arguments in all,
/// nested at most 32 levels deep.
///
/// In a result from perfopt_model_call, a tensor's `managed` is the output
/// (owned by the result until taken: copy the pointer and set the field to
/// NULL, then release it with its deleter), and `tensor` points at its
/// dl_tensor. Each argument is converted to the type the method's schema
/// wants (an int where a float is wanted, a list where a tuple is).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct perfopt_value {
    /// sizeof(perfopt_value).
    pub struct_size: u32,
    /// PERFOPT_VALUE_*.
    pub kind: i32,
    pub int_value: i64,
    pub double_value: f64,
    pub string: *const c_char,
    pub length: usize,
    pub items: *mut perfopt_value,
    pub tensor: *const DLTensor,
    pub managed: *mut DLManagedTensor,
}

/// Roots of the results perfopt_model_call handed out and not yet freed, so
/// that a double or foreign free is refused (while the address is not reused).
static LIVE_RESULTS: Mutex<Vec<(usize, Made)>> = Mutex::new(Vec::new());

/// Deepest nesting and most values perfopt reads from one call.
const MAX_DEPTH: usize = 32;
const MAX_VALUES: usize = 1 << 20;
const MAX_STRING: usize = 1 << 30;

struct Reader {
    seen: usize,
}

impl Reader {
    /// # Safety
    /// `value` points to a perfopt_value whose pointers are valid as its kind says.
    unsafe fn read(
        &mut self,
        value: *const perfopt_value,
        name: &str,
        depth: usize,
    ) -> Result<Value> {
        // The call's own arguments are bounded by their count: the bound is
        // on the values inside them (a list of exactly MAX_VALUES ints fits).
        if depth > 0 {
            self.seen += 1;
        }
        if depth > MAX_DEPTH {
            return Err(Error::invalid_argument(format!(
                "{name}: values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        if self.seen > MAX_VALUES {
            return Err(Error::invalid_argument(format!(
                "{name}: more than {MAX_VALUES} values in one call"
            )));
        }
        // SAFETY: the caller's contract; struct_size is read first, alone.
        let size = unsafe { value.cast::<u32>().read_unaligned() } as usize;
        if size != size_of::<perfopt_value>() {
            return Err(Error::new(
                crate::error::ErrorKind::StructSize,
                format!(
                    "{name}.struct_size is {size}; this library's perfopt_value is {} bytes",
                    size_of::<perfopt_value>()
                ),
            ));
        }
        // SAFETY: the size matches this library's struct.
        let v = unsafe { &*value };
        Ok(match v.kind {
            PERFOPT_VALUE_NONE => Value::None,
            PERFOPT_VALUE_INT => Value::Int(v.int_value),
            PERFOPT_VALUE_DOUBLE => Value::Double(v.double_value),
            PERFOPT_VALUE_BOOL => match v.int_value {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => {
                    return Err(Error::invalid_argument(format!(
                        "{name}: a bool's int_value is {other}; it must be 0 or 1"
                    )))
                }
            },
            PERFOPT_VALUE_STRING => {
                if v.length > MAX_STRING {
                    return Err(Error::invalid_argument(format!(
                        "{name}: a string of {} bytes; at most {MAX_STRING}",
                        v.length
                    )));
                }
                if v.string.is_null() && v.length > 0 {
                    return Err(Error::null_argument(&format!("{name}.string")));
                }
                let bytes = if v.length == 0 {
                    &[][..]
                } else {
                    // SAFETY: the caller passes `length` readable bytes.
                    unsafe { std::slice::from_raw_parts(v.string.cast::<u8>(), v.length) }
                };
                Value::Str(String::from_utf8(bytes.to_vec()).map_err(|err| {
                    Error::new(
                        crate::error::ErrorKind::InvalidUtf8,
                        format!("{name}: the string is not valid UTF-8 ({err})"),
                    )
                })?)
            }
            PERFOPT_VALUE_TENSOR => {
                if v.tensor.is_null() {
                    return Err(Error::null_argument(&format!("{name}.tensor")));
                }
                // SAFETY: a DLTensor valid for the call (the caller's contract).
                Value::Tensor(unsafe { tensor_from_dl(&*v.tensor, name) }?)
            }
            PERFOPT_VALUE_LIST | PERFOPT_VALUE_TUPLE => {
                if v.length > MAX_VALUES {
                    return Err(Error::invalid_argument(format!(
                        "{name}: {} items; at most {MAX_VALUES}",
                        v.length
                    )));
                }
                if v.items.is_null() && v.length > 0 {
                    return Err(Error::null_argument(&format!("{name}.items")));
                }
                let mut items = Vec::with_capacity(v.length.min(1024));
                for i in 0..v.length {
                    // SAFETY: `items` holds `length` values of this size.
                    let item = unsafe { v.items.add(i) };
                    items.push(unsafe { self.read(item, &format!("{name}[{i}]"), depth + 1) }?);
                }
                if v.kind == PERFOPT_VALUE_LIST {
                    Value::List(items)
                } else {
                    Value::Tuple(items)
                }
            }
            other => {
                return Err(Error::invalid_argument(format!(
                    "{name}: kind {other} is not a PERFOPT_VALUE_* kind"
                )))
            }
        })
    }
}

/// The caller's arguments (views of its tensors, no copies).
///
/// # Safety
/// `args` is NULL or points to `n` perfopt_values valid for the call.
pub unsafe fn values_from(args: *const perfopt_value, n: usize, what: &str) -> Result<Vec<Value>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if args.is_null() {
        return Err(Error::null_argument(what));
    }
    if n > super::model_run::MAX_INPUTS {
        return Err(Error::invalid_argument(format!(
            "{n} arguments; perfopt accepts at most {}",
            super::model_run::MAX_INPUTS
        )));
    }
    let mut reader = Reader { seen: 0 };
    (0..n)
        .map(|i| {
            // SAFETY: `args` holds `n` values.
            unsafe { reader.read(args.add(i), &format!("{what}[{i}]"), 0) }
        })
        .collect()
}

fn empty() -> perfopt_value {
    perfopt_value {
        struct_size: size_of::<perfopt_value>() as u32,
        kind: PERFOPT_VALUE_NONE,
        int_value: 0,
        double_value: 0.0,
        string: std::ptr::null(),
        length: 0,
        items: std::ptr::null_mut(),
        tensor: std::ptr::null(),
        managed: std::ptr::null_mut(),
    }
}

/// What perfopt allocated for a result tree, kept beside it. The tree is the
/// caller's to read and change (it takes a tensor by setting `managed` to
/// NULL), so perfopt frees from this record, never from the tree's own
/// lengths and pointers: a caller that raised a list's `length` before
/// perfopt_value_free made the free read and release past the list.
enum Made {
    Plain,
    Str(*mut [u8]),
    /// A tensor handed out in `slot`; released only if the slot still holds it.
    Tensor {
        slot: *const perfopt_value,
        managed: *mut DLManagedTensor,
    },
    Items(*mut [perfopt_value], Vec<Made>),
}

// SAFETY: the pointers are to memory only perfopt frees, once, and the record
// moves between threads only inside LIVE_RESULTS' lock.
unsafe impl Send for Made {}

/// Fills `slot` with `value`, allocating strings and item arrays; tensors
/// become DLManagedTensors owned by the tree. What was made is returned with
/// the outcome, so that a failure part way is freed too. `slot` must not
/// move until the record is freed.
fn fill(slot: &mut perfopt_value, value: &Value) -> (Made, Result<()>) {
    *slot = empty();
    match value {
        Value::None => {}
        Value::Int(i) => {
            slot.kind = PERFOPT_VALUE_INT;
            slot.int_value = *i;
        }
        Value::Bool(b) => {
            slot.kind = PERFOPT_VALUE_BOOL;
            slot.int_value = i64::from(*b);
        }
        Value::Double(d) => {
            slot.kind = PERFOPT_VALUE_DOUBLE;
            slot.double_value = *d;
        }
        Value::Str(s) => {
            slot.kind = PERFOPT_VALUE_STRING;
            // NUL-terminated too, for C callers that want a C string.
            let mut bytes = s.clone().into_bytes();
            bytes.push(0);
            let bytes = Box::into_raw(bytes.into_boxed_slice());
            slot.length = s.len();
            slot.string = bytes.cast::<c_char>();
            return (Made::Str(bytes), Ok(()));
        }
        Value::Tensor(t) => {
            slot.kind = PERFOPT_VALUE_TENSOR;
            let managed = match tensor_to_managed(t) {
                Ok(managed) => managed,
                Err(err) => return (Made::Plain, Err(err)),
            };
            slot.managed = managed;
            // SAFETY: a live DLManagedTensor just made.
            slot.tensor = unsafe { std::ptr::addr_of!((*managed).dl_tensor) };
            let slot: *const perfopt_value = slot;
            return (Made::Tensor { slot, managed }, Ok(()));
        }
        Value::List(items) | Value::Tuple(items) => {
            slot.kind = if matches!(value, Value::List(_)) {
                PERFOPT_VALUE_LIST
            } else {
                PERFOPT_VALUE_TUPLE
            };
            let mut children: Box<[perfopt_value]> = vec![empty(); items.len()].into_boxed_slice();
            let mut made = Vec::with_capacity(items.len());
            let mut result = Ok(());
            // The children live in the boxed slice's heap memory, which stays
            // put when the box becomes a raw pointer below.
            for (child, item) in children.iter_mut().zip(items) {
                let (child_made, child_result) = fill(child, item);
                made.push(child_made);
                if child_result.is_err() {
                    result = child_result;
                    break;
                }
            }
            let children = Box::into_raw(children);
            slot.length = items.len();
            slot.items = children.cast::<perfopt_value>();
            return (Made::Items(children, made), result);
        }
    }
    (Made::Plain, Ok(()))
}

/// Frees what `fill` allocated, from its record: strings, item arrays, and
/// the tensors the caller did not take. A tensor counts as not taken while
/// any of the tree's tensor slots still holds it (a caller that swapped two
/// slots' `managed` pointers leaked both before); one whose slot the caller
/// set to NULL, or to a pointer of its own, was taken.
///
/// # Safety
/// `made` came from [`fill`], whose slots are still allocated, and is freed once.
unsafe fn free_made(made: Made) {
    let mut held = std::collections::HashSet::new();
    // SAFETY: the caller's contract.
    unsafe {
        still_held(&made, &mut held);
        free_with(made, &held);
    }
}

/// The `managed` pointers the tree's tensor slots hold now.
///
/// # Safety
/// As [`free_made`].
unsafe fn still_held(made: &Made, held: &mut std::collections::HashSet<usize>) {
    match made {
        // SAFETY: the slot lives until its parent is freed (after this).
        Made::Tensor { slot, .. } => {
            held.insert(unsafe { (**slot).managed } as usize);
        }
        Made::Items(_, children) => {
            for child in children {
                // SAFETY: as above.
                unsafe { still_held(child, held) };
            }
        }
        Made::Plain | Made::Str(_) => {}
    }
}

/// # Safety
/// As [`free_made`].
unsafe fn free_with(made: Made, held: &std::collections::HashSet<usize>) {
    match made {
        Made::Plain => {}
        // SAFETY: allocated by fill as this boxed slice.
        Made::Str(bytes) => drop(unsafe { Box::from_raw(bytes) }),
        Made::Tensor { managed, .. } => {
            if held.contains(&(managed as usize)) {
                // SAFETY: a DLManagedTensor perfopt made that nobody took.
                unsafe { release_all(&[managed]) };
            }
        }
        Made::Items(children, made) => {
            for child in made {
                // SAFETY: the children's slots are in `children`, freed after.
                unsafe { free_with(child, held) };
            }
            // SAFETY: allocated by fill as this boxed slice.
            drop(unsafe { Box::from_raw(children) });
        }
    }
}

/// A result tree for the caller, freed by perfopt_value_free.
pub fn result_tree(value: &Value) -> Result<*mut perfopt_value> {
    let root = Box::into_raw(Box::new(empty()));
    // SAFETY: a fresh box, which stays put until perfopt_value_free.
    let (made, result) = fill(unsafe { &mut *root }, value);
    if let Err(err) = result {
        // SAFETY: made by fill just now, freed once; then its root.
        unsafe {
            free_made(made);
            drop(Box::from_raw(root));
        }
        return Err(err);
    }
    LIVE_RESULTS.lock().push((root as usize, made));
    Ok(root)
}

/// Frees a result of perfopt_model_call: its strings, lists and every
/// tensor not taken (taken ones have `managed` set to NULL by the caller).
/// NULL is a no-op; a pointer that is not a live result is refused (logged).
#[no_mangle]
pub extern "C" fn perfopt_value_free(result: *mut perfopt_value) {
    if result.is_null() {
        return;
    }
    boundary_void(|| {
        let made = {
            let mut results = LIVE_RESULTS.lock();
            results
                .iter()
                .position(|(root, _)| *root == result as usize)
                .map(|i| results.swap_remove(i).1)
        };
        let Some(made) = made else {
            log::error!("perfopt_value_free: not a live result of perfopt_model_call");
            return;
        };
        // SAFETY: a root result_tree made, taken out of the live list above,
        // so freed once, from perfopt's own record of it.
        unsafe {
            free_made(made);
            drop(Box::from_raw(result));
        }
    });
}
