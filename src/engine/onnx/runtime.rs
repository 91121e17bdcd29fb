//! Finding ONNX Runtime: perfopt loads `libonnxruntime` when the first ONNX
//! model is loaded (the `ort` crate's load-dynamic: nothing is downloaded or
//! linked at build time), from the first of
//! 1. the path the optimizer's config names (`onnxruntime_library`),
//! 2. `PERFOPT_ONNXRUNTIME`, then `ORT_DYLIB_PATH` (the `ort` crate's name),
//! 3. the folder perfopt's own library is in,
//! 4. the `onnxruntime` Python package in a site-packages folder this
//!    process loaded a library from: torch's (`make setup` installs both
//!    into .venv), or any Python extension's (a Python host of the lite
//!    library, which loads no torch),
//! 5. `libonnxruntime.so` through the dynamic loader's search path,
//!
//! and says every place it looked when none has it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

pub const ENV_LIBRARY: &str = "PERFOPT_ONNXRUNTIME";
const ENV_ORT: &str = "ORT_DYLIB_PATH";

// Apple's systems (macOS, iOS) name shared libraries .dylib.
#[cfg(target_vendor = "apple")]
const LIBRARY_NAME: &str = "libonnxruntime.dylib";
#[cfg(not(target_vendor = "apple"))]
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// ONNX Runtime, loaded once per process.
pub struct Runtime {
    pub environment: ort::environment::Environment,
    pub path: PathBuf,
    pub version: String,
    /// The execution providers this library has ("CPUExecutionProvider"...).
    pub providers: Vec<String>,
}

static LOADED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// The process's ONNX Runtime, loaded on first use from the first place
/// that has it. A library that failed to load is tried again next time (a
/// caller may fix the path).
pub fn runtime(explicit: Option<&str>) -> Result<Arc<Runtime>> {
    // Logged after the lock is released: a host's log callback may load a
    // model itself.
    let mut said = None;
    let found = load_once(explicit, &mut said);
    if let Some((level, line)) = said {
        log::log!(level, "{line}");
    }
    found
}

fn load_once(
    explicit: Option<&str>,
    said: &mut Option<(log::Level, String)>,
) -> Result<Arc<Runtime>> {
    let mut loaded = LOADED.lock();
    if let Some(runtime) = loaded.as_ref() {
        if let Some(wanted) = explicit {
            if absolute(Path::new(wanted)) != runtime.path {
                *said = Some((
                    log::Level::Warn,
                    format!(
                        "ONNX Runtime is loaded from {} already; {wanted} is not loaded as well \
                         (one per process)",
                        runtime.path.display()
                    ),
                ));
            }
        }
        return Ok(runtime.clone());
    }
    let mut tried = Vec::new();
    for (path, source) in candidates(explicit) {
        match ort::init_from(&path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("perfopt")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::LoadFailed,
                            format!("ONNX Runtime from {}: {e}", path.display()),
                        )
                    })?;
                let runtime = Arc::new(Runtime {
                    environment,
                    version: version(&path),
                    path,
                    providers: providers(),
                });
                *said = Some((
                    log::Level::Info,
                    format!(
                        "ONNX Runtime {} loaded from {} ({source})",
                        runtime.version,
                        runtime.path.display()
                    ),
                ));
                *loaded = Some(runtime.clone());
                return Ok(runtime);
            }
            Err(err) => tried.push(format!("{} ({source}): {err}", path.display())),
        }
        // A library the caller named (the config, an environment variable)
        // that fails is the answer: another would not be the one named.
        if !source.is_search() {
            break;
        }
    }
    Err(Error::new(
        ErrorKind::LoadFailed,
        format!(
            "ONNX models need ONNX Runtime (libonnxruntime, 1.31 or newer), and none was found: \
             install it (pip install onnxruntime), or name the library with {ENV_LIBRARY} or the \
             optimizer's onnxruntime_library. Tried: {}",
            tried.join("; ")
        ),
    ))
}

/// Where a candidate library came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Config,
    Variable(&'static str),
    BesidePerfopt,
    InSitePackages,
    LoaderPath,
}

impl Named {
    /// Whether perfopt searched for it (a miss goes on to the next place),
    /// rather than the caller naming it.
    fn is_search(self) -> bool {
        !matches!(self, Named::Config | Named::Variable(_))
    }
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Named::Config => "the optimizer's config",
            Named::Variable(name) => name,
            Named::BesidePerfopt => "beside perfopt's library",
            Named::InSitePackages => {
                "the onnxruntime package in a site-packages folder this process loaded from"
            }
            Named::LoaderPath => "the dynamic loader's search path",
        })
    }
}

/// A path as the caller meant it: relative to the working folder (the
/// `ort` crate would take it relative to the executable's).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The places to look, in order, each with where it came from.
fn candidates(explicit: Option<&str>) -> Vec<(PathBuf, Named)> {
    if let Some(path) = explicit {
        return vec![(absolute(Path::new(path)), Named::Config)];
    }
    let mut out = Vec::new();
    for variable in [ENV_LIBRARY, ENV_ORT] {
        if let Some(value) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
            out.push((absolute(Path::new(&value)), Named::Variable(variable)));
            // The first variable set is the caller's choice.
            return out;
        }
    }
    if let Some(folder) = crate::library_folder::own_folder() {
        let beside = folder.join(LIBRARY_NAME);
        if beside.exists() {
            out.push((beside, Named::BesidePerfopt));
        }
    }
    if let Some(found) = in_loaded_site_packages() {
        out.push((found, Named::InSitePackages));
    }
    // A bare name: the dynamic loader searches its path for it.
    out.push((PathBuf::from(LIBRARY_NAME), Named::LoaderPath));
    out
}

/// `onnxruntime/capi/libonnxruntime.so*` in a site-packages folder this
/// process has a library mapped from (libtorch's first, where it is loaded).
fn in_loaded_site_packages() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut folders: Vec<&str> = Vec::new();
    let mapped = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5));
    for path in mapped {
        let Some(end) = path.find("/site-packages/") else {
            continue;
        };
        let folder = &path[..end + "/site-packages".len()];
        match path.ends_with("/libtorch_cpu.so") {
            true => folders.insert(0, folder),
            false if !folders.contains(&folder) => folders.push(folder),
            false => {}
        }
    }
    folders.into_iter().find_map(|folder| {
        let capi = Path::new(folder).join("onnxruntime").join("capi");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        found.sort();
        found.pop()
    })
}

/// The loaded library's version ("1.31.1"), from its own OrtGetApiBase.
fn version(path: &Path) -> String {
    let unknown = || "(version unknown)".to_string();
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return unknown();
    };
    // SAFETY: RTLD_NOLOAD only looks the library up (ort loaded it); the
    // handle is closed below, and the library stays loaded by ort's own.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return unknown();
    }
    // SAFETY: a symbol lookup in a live handle.
    let symbol = unsafe { libc::dlsym(handle, c"OrtGetApiBase".as_ptr()) };
    let version = (!symbol.is_null())
        .then(|| {
            // SAFETY: OrtGetApiBase's C signature, which ort itself calls;
            // the version string is static in the library.
            unsafe {
                let get: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase =
                    std::mem::transmute(symbol);
                let base = get();
                (!base.is_null()).then(|| {
                    std::ffi::CStr::from_ptr(((*base).GetVersionString)())
                        .to_string_lossy()
                        .into_owned()
                })
            }
        })
        .flatten();
    // SAFETY: the handle opened above, closed once.
    unsafe { libc::dlclose(handle) };
    version.unwrap_or_else(unknown)
}

/// The execution providers the loaded library was built with.
fn providers() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the loaded library's API; valid out pointers. The list is
    // released below with the library's own function.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut count) };
    if !status.0.is_null() {
        // SAFETY: a status the library made, released once.
        unsafe { (api.ReleaseStatus)(status.0) };
        return Vec::new();
    }
    if list.is_null() {
        return Vec::new();
    }
    let names = (0..count.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: `count` NUL-terminated names.
            let name = unsafe { *list.add(i) };
            (!name.is_null()).then(|| {
                unsafe { std::ffi::CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect();
    // SAFETY: the list the library gave, released once; so is a status.
    let status = unsafe { (api.ReleaseAvailableProviders)(list, count) };
    if !status.0.is_null() {
        // SAFETY: a status the library made, released once.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    names
}
