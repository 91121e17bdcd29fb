//! The `log` crate's records, routed to a host callback or to stderr.
//! Quiet by default: warnings and errors only.

use std::ffi::{c_char, c_void, CString};
use std::io::Write;
use std::sync::Once;

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

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

static SINK: RwLock<Sink> = RwLock::new(Sink::Stderr);
static INSTALL: Once = Once::new();

struct Bridge;

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Copy the sink out so that a callback that logs again, or replaces
        // the callback, cannot deadlock on the lock.
        let sink = *SINK.read();
        let text = format!("{}", record.args());
        match sink {
            Sink::Stderr => {
                let _ = writeln!(
                    std::io::stderr(),
                    "perfopt {}: {text}",
                    record.level().as_str().to_ascii_lowercase()
                );
            }
            Sink::Callback {
                callback,
                user_data,
            } => {
                let message = CString::new(text.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the callback and user_data were registered together
                // by the host; the message outlives the call.
                unsafe { callback(level_number(record.level()), message.as_ptr(), user_data) };
            }
        }
    }

    fn flush(&self) {}
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
/// with warnings and errors.
pub fn set_callback(callback: Option<(LogCallback, *mut c_void)>, max_level: LevelFilter) {
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
    *SINK.write() = sink;
    log::set_max_level(level);
}
