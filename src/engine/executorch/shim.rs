//! The Rust twin of shim.cpp: libperfopt_executorch.so.0 (built by build.rs
//! against the executorch wheel's runtime) loaded the first time a program
//! is, and a program handle over it. libperfopt itself needs no ExecuTorch
//! library; a build without the wheel has no such part and says so.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::error::{Error, ErrorKind, Result};

const LIBRARY_NAME: &str = "libperfopt_executorch.so.0";
const PET_OK: c_int = 0;
pub const MAX_DIMS: usize = 16;
/// ExecuTorch's EValue tag of a tensor.
pub const TAG_TENSOR: i32 = 1;

/// shim.h's pet_slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    pub tag: i32,
    pub dtype: i32,
    pub ndim: i32,
    /// 0: static; 1: bounded dynamic (sizes are upper bounds); 2: unbounded.
    pub dynamic: i32,
    /// 1: the program plans its memory (0: it would use the caller's).
    pub planned: i32,
    /// 1: the default (row-major) dimension order.
    pub row_major: i32,
    pub sizes: [i64; MAX_DIMS],
}

impl Slot {
    pub fn shape(&self) -> &[i64] {
        &self.sizes[..self.ndim.clamp(0, MAX_DIMS as i32) as usize]
    }
}

/// shim.h's pet_tensor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawTensor {
    pub data: *mut c_void,
    pub dtype: i32,
    pub ndim: i32,
    pub sizes: [i64; MAX_DIMS],
}

impl Default for RawTensor {
    fn default() -> Self {
        RawTensor {
            data: std::ptr::null_mut(),
            dtype: 0,
            ndim: 0,
            sizes: [0; MAX_DIMS],
        }
    }
}

#[repr(C)]
struct RawProgram {
    _private: [u8; 0],
}

struct Functions {
    last_error: unsafe extern "C" fn() -> *const c_char,
    last_code: unsafe extern "C" fn() -> i32,
    load: unsafe extern "C" fn(*const c_char, *mut *mut RawProgram) -> c_int,
    free: unsafe extern "C" fn(*mut RawProgram),
    method_names: unsafe extern "C" fn(*mut RawProgram, *mut c_char, usize, *mut usize) -> c_int,
    method_io:
        unsafe extern "C" fn(*mut RawProgram, *const c_char, *mut usize, *mut usize) -> c_int,
    method_slot:
        unsafe extern "C" fn(*mut RawProgram, *const c_char, i32, usize, *mut Slot) -> c_int,
    execute: unsafe extern "C" fn(
        *mut RawProgram,
        *const c_char,
        *const RawTensor,
        usize,
        *mut RawTensor,
        usize,
        *mut usize,
    ) -> c_int,
    // Never unloaded: programs and the functions above point into it.
    _library: libloading::Library,
}

static FUNCTIONS: OnceLock<std::result::Result<Functions, String>> = OnceLock::new();

fn functions() -> Result<&'static Functions> {
    FUNCTIONS
        .get_or_init(load_library)
        .as_ref()
        .map_err(|message| Error::new(ErrorKind::LoadFailed, message.clone()))
}

/// Whether this library has its ExecuTorch part, and where (or why not),
/// without loading it.
pub fn part() -> std::result::Result<std::path::PathBuf, String> {
    if !cfg!(perfopt_executorch) {
        return Err("this perfopt was built without ExecuTorch".to_string());
    }
    crate::library_folder::part_candidates(LIBRARY_NAME)
        .into_iter()
        .find(|path| path.exists())
        .ok_or_else(|| format!("{LIBRARY_NAME} is not beside libperfopt"))
}

fn load_library() -> std::result::Result<Functions, String> {
    if !cfg!(perfopt_executorch) {
        return Err(
            "this perfopt was built without ExecuTorch (the executorch wheel was not \
                    found beside torch when it was built): it cannot run .pte programs"
                .to_string(),
        );
    }
    let candidates = crate::library_folder::part_candidates(LIBRARY_NAME);
    let Some(path) = candidates.iter().find(|path| path.exists()) else {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "perfopt's ExecuTorch part ({LIBRARY_NAME}) was not found beside libperfopt \
             (looked for {}): .pte programs need it; install it with libperfopt",
            looked.join(", ")
        ));
    };
    // Bound to itself first (RTLD_DEEPBIND): libtorch, loaded already, has
    // XNNPACK, pthreadpool and cpuinfo of its own under the same names, and
    // ExecuTorch's XNNPACK backend would otherwise call libtorch's XNNPACK
    // (another version: "Failed to create linear node ... invalid
    // parameter"). macOS's two-level namespace binds so already.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_DEEPBIND;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL;
    // SAFETY: perfopt's own library, built with it; its initialiser takes
    // over ExecuTorch's log (shim.cpp), and ExecuTorch's register kernels
    // and backends.
    let library = unsafe { libloading::os::unix::Library::open(Some(path), flags) }
        .map(libloading::Library::from)
        .map_err(|err| {
            format!(
                "loading {}: {err} (its ExecuTorch runtime comes from the executorch wheel: `pip \
             install --no-deps executorch==1.5.1`)",
                path.display()
            )
        })?;
    // SAFETY: each symbol's type is its declaration in shim.h.
    unsafe {
        macro_rules! symbol {
            ($name:literal) => {
                *library
                    .get(concat!($name, "\0").as_bytes())
                    .map_err(|err| format!("{}: {err}", path.display()))?
            };
        }
        Ok(Functions {
            last_error: symbol!("pet_last_error"),
            last_code: symbol!("pet_last_code"),
            load: symbol!("pet_load"),
            free: symbol!("pet_free"),
            method_names: symbol!("pet_method_names"),
            method_io: symbol!("pet_method_io"),
            method_slot: symbol!("pet_method_slot"),
            execute: symbol!("pet_execute"),
            _library: library,
        })
    }
}

/// The status of an ExecuTorch Error code (runtime/core/error.h), `other`
/// for the codes that say nothing more particular.
fn kind_of(code: i32, other: ErrorKind) -> ErrorKind {
    match code {
        // NotSupported, NotImplemented, OperatorMissing, InvalidExternalData,
        // DelegateInvalidCompatibility: what this build cannot run.
        0x10 | 0x11 | 0x14 | 0x24 | 0x30 => ErrorKind::UnsupportedModel,
        // MemoryAllocationFailed, OutOfResources, DelegateMemoryAllocationFailed.
        0x21 | 0x25 | 0x31 => ErrorKind::OutOfMemory,
        // InvalidProgram.
        0x23 => ErrorKind::ModelCorrupt,
        // AccessFailed: the file could not be read.
        0x22 => ErrorKind::LoadFailed,
        _ => other,
    }
}

/// A failed status as an error (of `other` when its ExecuTorch code says
/// nothing more particular), with the shim's message.
fn check(functions: &Functions, status: c_int, other: ErrorKind, what: &str) -> Result<()> {
    if status == PET_OK {
        return Ok(());
    }
    // SAFETY: thread-local values valid until the next shim call on this
    // thread; the message is copied at once.
    let (message, code) = unsafe {
        (
            CStr::from_ptr((functions.last_error)())
                .to_string_lossy()
                .into_owned(),
            (functions.last_code)(),
        )
    };
    Err(Error::new(
        kind_of(code, other),
        format!("{what}: {message}"),
    ))
}

fn c_text(text: &str) -> Result<CString> {
    CString::new(text)
        .map_err(|_| Error::invalid_argument(format!("{text:?} holds a NUL character")))
}

/// A loaded program. Not safe for concurrent calls (one Module): the engine
/// holds it behind a lock.
pub struct Program {
    raw: *mut RawProgram,
    functions: &'static Functions,
}

// SAFETY: the program is used by one thread at a time (the engine's lock)
// and ExecuTorch keeps no thread-local state of its own for it.
unsafe impl Send for Program {}

impl Program {
    /// Loads the program at `path`, its structure verified.
    pub fn load(path: &str, shown: &str) -> Result<Program> {
        let functions = functions()?;
        let path = c_text(path)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and a valid out pointer.
        let status = unsafe { (functions.load)(path.as_ptr(), &mut raw) };
        check(functions, status, ErrorKind::ModelCorrupt, shown)?;
        Ok(Program { raw, functions })
    }

    pub fn method_names(&mut self) -> Result<Vec<String>> {
        let mut needed = 0usize;
        let mut buf = vec![0 as c_char; 256];
        loop {
            // SAFETY: the buffer and its length match; valid out pointer.
            let status = unsafe {
                (self.functions.method_names)(self.raw, buf.as_mut_ptr(), buf.len(), &mut needed)
            };
            if status != PET_OK && needed > buf.len() && needed <= 1 << 20 {
                buf = vec![0; needed];
                continue;
            }
            check(
                self.functions,
                status,
                ErrorKind::ModelCorrupt,
                "method names",
            )?;
            // SAFETY: the shim wrote a NUL-terminated string into `buf`.
            let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
            return Ok(text.lines().map(str::to_string).collect());
        }
    }

    /// The method's inputs and outputs, its memory planned.
    pub fn method_slots(&mut self, method: &str) -> Result<(Vec<Slot>, Vec<Slot>)> {
        let name = c_text(method)?;
        let (mut inputs, mut outputs) = (0usize, 0usize);
        // SAFETY: a NUL-terminated name and valid out pointers.
        let status = unsafe {
            (self.functions.method_io)(self.raw, name.as_ptr(), &mut inputs, &mut outputs)
        };
        check(self.functions, status, ErrorKind::ModelCorrupt, method)?;
        let slots = |output: i32, count: usize| -> Result<Vec<Slot>> {
            (0..count)
                .map(|i| {
                    let mut slot = Slot::default();
                    // SAFETY: as above; `i` is below the count the shim gave.
                    let status = unsafe {
                        (self.functions.method_slot)(self.raw, name.as_ptr(), output, i, &mut slot)
                    };
                    check(self.functions, status, ErrorKind::ModelCorrupt, method)?;
                    Ok(slot)
                })
                .collect()
        };
        Ok((slots(0, inputs)?, slots(1, outputs)?))
    }

    /// Runs `method`; `read` sees the outputs while they are valid (they are
    /// the program's memory, reused by its next call).
    pub fn execute<T>(
        &mut self,
        method: &str,
        inputs: &[RawTensor],
        outputs: usize,
        read: impl FnOnce(&[RawTensor]) -> Result<T>,
    ) -> Result<T> {
        let name = c_text(method)?;
        let mut out = vec![RawTensor::default(); outputs];
        let mut n = 0usize;
        // SAFETY: the inputs describe live contiguous host memory the caller
        // holds for the call; `out` has room for `outputs` entries.
        let status = unsafe {
            (self.functions.execute)(
                self.raw,
                name.as_ptr(),
                inputs.as_ptr(),
                inputs.len(),
                out.as_mut_ptr(),
                out.len(),
                &mut n,
            )
        };
        // InvalidArgument and InvalidType: inputs the program refused.
        let kind = match status {
            PET_OK => ErrorKind::Torch,
            // SAFETY: the code of this thread's failed call, read at once.
            _ => match unsafe { (self.functions.last_code)() } {
                0x12 | 0x13 => ErrorKind::InvalidArgument,
                _ => ErrorKind::Torch,
            },
        };
        check(self.functions, status, kind, "ExecuTorch")?;
        read(&out[..n.min(outputs)])
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle pet_load made, freed once.
        unsafe { (self.functions.free)(self.raw) }
    }
}
