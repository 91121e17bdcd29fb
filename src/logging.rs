//! The `log` crate's records, routed to a host callback or to stderr.
//! Quiet by default: warnings and errors only.
//!
//! A host callback may call back into perfopt, so the bridge:
//! - holds its lock only to read the sink and while the callback runs, and
//!   perfopt never logs while it holds a lock of its own;
//! - drops records made on a thread that is already inside the callback (a
//!   failing call from the callback would otherwise log its own failure,
//!   without end);
//! - keeps the thread's last error across the callback;
//! - makes replacing the callback a barrier: once perfopt_set_log_callback
//!   returns, the old callback is never entered again, so its user_data may
//!   be freed; records that waited for it are checked against the new level;
//! - holds back the records a thread makes while it runs a model one call at
//!   a time (src/model/exclusive.rs), and writes them once the model is free,
//!   so that a callback that runs the same model does not wait for itself.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CString};
use std::io::Write;
use std::marker::PhantomData;
use std::sync::Once;

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};

/// A host's log function: level (1 error .. 5 trace), a NUL-terminated
/// message valid only during the call, and the host's pointer.
pub type LogCallback =
    unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void);

#[derive(Clone, Copy)]
enum Sink {
    Stderr,
    Callback {
        callback: LogCallback,
        user_data: *mut c_void,
    },
}

// SAFETY: the host promises, by registering it, that its callback may be
// called from any thread with its user_data (the header says so).
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

/// Held for reading while a record is written; for writing to replace it.
static SINK: RwLock<Sink> = RwLock::new(Sink::Stderr);
static INSTALL: Once = Once::new();

/// Records held back per thread beyond this many are counted, not kept.
const MAX_HELD_BACK: usize = 256;

#[derive(Default)]
struct HeldBack {
    depth: u32,
    records: Vec<(Level, String)>,
    dropped: usize,
}

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    static HELD_BACK: RefCell<HeldBack> = RefCell::new(HeldBack::default());
}

/// While one lives, this thread's records wait; the last one dropped writes
/// them. Tied to its thread.
pub struct HoldBack {
    _thread: PhantomData<*const ()>,
}

/// Holds this thread's records back until the returned guard (and every
/// other one alive on this thread) is dropped.
pub fn hold_back() -> HoldBack {
    let _ = HELD_BACK.try_with(|held| held.borrow_mut().depth += 1);
    HoldBack {
        _thread: PhantomData,
    }
}

impl Drop for HoldBack {
    fn drop(&mut self) {
        let released = HELD_BACK.try_with(|held| {
            let mut held = held.borrow_mut();
            held.depth = held.depth.saturating_sub(1);
            if held.depth > 0 {
                return None;
            }
            Some((
                std::mem::take(&mut held.records),
                std::mem::take(&mut held.dropped),
            ))
        });
        if let Ok(Some((records, dropped))) = released {
            for (level, text) in records {
                write(level, &text);
            }
            if dropped > 0 {
                write(
                    Level::Warn,
                    &format!(
                        "{dropped} log records were dropped (more than {MAX_HELD_BACK} held back)"
                    ),
                );
            }
        }
    }
}

/// Keeps a record for later when this thread holds records back.
fn held_back(level: Level, text: &str) -> bool {
    HELD_BACK
        .try_with(|held| {
            let mut held = held.borrow_mut();
            if held.depth == 0 {
                return false;
            }
            if held.records.len() < MAX_HELD_BACK {
                held.records.push((level, text.to_string()));
            } else {
                held.dropped += 1;
            }
            true
        })
        .unwrap_or(false)
}

/// Resets the thread's flag even if the callback unwinds (it cannot: it is
/// extern "C", but the flag must not stick whatever happens).
struct InCallback;

impl InCallback {
    fn enter() -> Option<InCallback> {
        // `then`, not `then_some`: an InCallback made and dropped would clear the flag.
        IN_CALLBACK
            .try_with(|flag| (!flag.replace(true)).then(|| InCallback))
            .ok()
            .flatten()
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        let _ = IN_CALLBACK.try_with(|flag| flag.set(false));
    }
}

struct Bridge;

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        // try_with: a record made while the thread exits is dropped.
        if !self.enabled(record.metadata()) || IN_CALLBACK.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        let text = format!("{}", record.args());
        if !held_back(record.level(), &text) {
            write(record.level(), &text);
        }
    }

    fn flush(&self) {}
}

/// Writes one record to the sink, if the level (read once the sink is held:
/// it may have changed while the record waited) still admits it.
fn write(level: Level, text: &str) {
    // A record made inside the callback (by a perfopt call it made) is
    // dropped: writing it would re-enter the callback.
    let Some(_inside) = InCallback::enter() else {
        return;
    };
    let sink = SINK.read();
    if level > log::max_level() {
        return;
    }
    match *sink {
        Sink::Stderr => {
            let _ = writeln!(
                std::io::stderr(),
                "perfopt {}: {text}",
                level.as_str().to_ascii_lowercase()
            );
        }
        Sink::Callback {
            callback,
            user_data,
        } => {
            let message = CString::new(text.replace('\0', " ")).unwrap_or_default();
            crate::last_error::preserved(|| {
                // SAFETY: the callback and user_data were registered
                // together by the host; the message outlives the call.
                unsafe { callback(level_number(level), message.as_ptr(), user_data) }
            });
        }
    }
}

fn level_number(level: Level) -> i32 {
    level as i32
}

/// Installs the bridge as the process's logger, once. Another logger
/// installed first by the host (a Rust host) is left alone.
pub fn install() {
    INSTALL.call_once(|| {
        if log::set_logger(&Bridge).is_ok() {
            log::set_max_level(LevelFilter::Warn);
        }
    });
}

/// 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
pub fn level_filter(max_level: i32) -> Option<LevelFilter> {
    Some(match max_level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        _ => return None,
    })
}

/// Routes records to `callback` up to `max_level`; `None` restores stderr
/// with warnings and errors. Returns once no thread is in the old callback.
pub fn set_callback(
    callback: Option<(LogCallback, *mut c_void)>,
    max_level: LevelFilter,
) -> Result<()> {
    if IN_CALLBACK.with(Cell::get) {
        // Waiting for the callbacks in flight to finish would wait for this one.
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "perfopt_set_log_callback was called from inside the log callback: replace the \
             callback from elsewhere",
        ));
    }
    install();
    let (sink, level) = match callback {
        Some((callback, user_data)) => (
            Sink::Callback {
                callback,
                user_data,
            },
            max_level,
        ),
        None => (Sink::Stderr, LevelFilter::Warn),
    };
    // The write lock waits for every callback in flight: the barrier. The
    // level changes under it, so that records waiting for the lock see it.
    let mut current = SINK.write();
    *current = sink;
    log::set_max_level(level);
    drop(current);
    Ok(())
}
