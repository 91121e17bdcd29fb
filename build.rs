//! Build script: in the full build (the `torch` feature) finds libtorch
//! through torch-sys, compiles the C++ shim against the same headers, builds
//! the CUDA part as its own library (libperfopt_cuda.so.0, loaded at run
//! time) and sets rpaths; in both builds builds the ExecuTorch part where
//! the executorch wheel is found, sets the SONAME, and
//! generates the C header with cbindgen into OUT_DIR (the checked-in copy in
//! include/ is compared with it by tests/header.rs).

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The shim's files; each .cpp has a Rust twin of the same name in src/torch/,
/// except script_writes.cpp, which script.cpp and script_state.cpp use.
const SHIM_HEADERS: &[&str] = &[
    "src/cxx/shim.h",
    "src/cxx/common.h",
    "src/cxx/last_error.h",
    "src/cxx/values.h",
    "src/cxx/script.h",
    "src/cxx/script_writes.h",
];
const SHIM_CPU: &[&str] = &[
    "src/cxx/settings.cpp",
    "src/cxx/tensor.cpp",
    "src/cxx/values.cpp",
    "src/cxx/script.cpp",
    "src/cxx/script_state.cpp",
    "src/cxx/script_writes.cpp",
    "src/cxx/aoti.cpp",
    "src/cxx/memory.cpp",
    "src/cxx/threads.cpp",
];
/// The CUDA part, built as its own library where the CUDA headers are
/// present: libperfopt needs no CUDA library, so it loads beside a CPU-only
/// torch, and src/torch/cuda.rs loads this one the first time CUDA is used.
const SHIM_CUDA: &str = "src/cxx/cuda.cpp";
const CUDA_LIBRARY: &str = "libperfopt_cuda.so.0";
/// perfopt's ExecuTorch part, against the executorch wheel's runtime beside
/// torch; src/engine/executorch/shim.rs loads it at the first .pte program.
const SHIM_EXECUTORCH: &[&str] = &[
    "src/engine/executorch/shim.cpp",
    "src/engine/executorch/shim.h",
];
const EXECUTORCH_LIBRARY: &str = "libperfopt_executorch.so.0";

fn main() {
    for path in shim_sources() {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=PERFOPT_NO_CUDA");
    println!("cargo:rerun-if-env-changed=PERFOPT_NO_EXECUTORCH");

    println!("cargo:rerun-if-env-changed=PERFOPT_SITE_PACKAGES");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    // The Python packages folder the executorch wheel is looked for in:
    // torch's (the full build), or the one named (the lite build has no
    // torch to find it by).
    let site_packages = match env::var_os("CARGO_FEATURE_TORCH") {
        Some(_) => Some(link_libtorch(&out_dir, linux)),
        None => env::var_os("PERFOPT_SITE_PACKAGES").map(PathBuf::from),
    };

    println!("cargo::rustc-check-cfg=cfg(perfopt_executorch)");
    // The part's link flags are GNU ld's (Linux); elsewhere (macOS) perfopt
    // is built without it for now.
    match site_packages
        .filter(|_| linux)
        .and_then(|s| find_executorch(&s))
    {
        Some(executorch) => {
            build_executorch_library(&out_dir, &executorch);
            println!("cargo:rustc-cfg=perfopt_executorch");
        }
        None => {
            if let Some(profile_dir) = profile_dir(&out_dir) {
                let _ = fs::remove_file(profile_dir.join(EXECUTORCH_LIBRARY));
            }
        }
    }
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libperfopt.so.0");
    }

    generate_status_table(&out_dir);
    generate_header(&out_dir);
}

/// The full build: compiles the C++ shim against libtorch's headers, builds
/// the CUDA part where the CUDA headers are, links libtorch and sets the
/// rpaths that find it. Returns the Python packages folder torch is in.
fn link_libtorch(out_dir: &Path, linux: bool) -> PathBuf {
    let torch_lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"),
    );
    let torch_root = torch_lib.parent().expect("libtorch lib dir has a parent");
    let includes = vec![
        torch_root.join("include"),
        torch_root.join("include/torch/csrc/api/include"),
    ];

    println!("cargo::rustc-check-cfg=cfg(perfopt_cuda)");
    compile_shim(out_dir, &includes);
    match find_cuda(&torch_lib) {
        Some(cuda) => {
            build_cuda_library(out_dir, &includes, &cuda, &torch_lib);
            println!("cargo:rustc-cfg=perfopt_cuda");
        }
        // An earlier build's CUDA part must not be shipped by this one.
        None => {
            if let Some(profile_dir) = profile_dir(out_dir) {
                let _ = fs::remove_file(profile_dir.join(CUDA_LIBRARY));
            }
        }
    }

    // libtorch.so is kept linked: it brings libtorch_cuda.so where the torch
    // in use has CUDA (and nothing more where it is a CPU-only torch), and an
    // AOTInductor package's library names libtorch.so without a path to it,
    // found only when the process has it loaded already. The linker would
    // drop it under --as-needed, since no symbol of ours names it.
    if linux && torch_lib.join("libtorch.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
    }
    // An rpath so that the library, the CLI and the test binaries run without
    // LD_LIBRARY_PATH on the machine that built them. Copies made for others
    // (the wheel, `make install`) have it replaced with patchelf.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch_lib.display());
    // A wheel puts the library in site-packages/perfopt/, beside the torch
    // package whose libraries it needs: found there wherever the wheel is
    // installed.
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    }
    torch_root
        .parent()
        .expect("torch's folder has a parent")
        .to_path_buf()
}

/// The status enum in src/ffi/status.rs is the one table of codes: from it
/// come the names, the messages (each variant's doc comment), the list of
/// every code, and the core's ErrorKind with its mapping to codes.
fn generate_status_table(out_dir: &Path) {
    println!("cargo:rerun-if-changed=src/ffi/status.rs");
    let source = fs::read_to_string("src/ffi/status.rs").expect("read src/ffi/status.rs");
    let body = source
        .split("pub enum perfopt_status {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("status.rs declares `pub enum perfopt_status { ... }`");
    let mut doc = String::new();
    let mut codes: Vec<(String, i32, String)> = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push_str(if doc.is_empty() { "" } else { " " });
            doc.push_str(text.trim());
        } else if let Some((name, value)) = line.trim_end_matches(',').split_once(" = ") {
            let value: i32 = value.parse().expect("status values are integers");
            assert_eq!(
                value as usize,
                codes.len(),
                "status values are dense and in order"
            );
            assert!(
                !doc.is_empty(),
                "status {name} needs a doc comment: its message"
            );
            codes.push((name.to_string(), value, std::mem::take(&mut doc)));
        }
    }
    let kind = |name: &str| -> String {
        let bare = name
            .strip_prefix("PERFOPT_ERR_")
            .or_else(|| name.strip_prefix("PERFOPT_"))
            .expect("codes start with PERFOPT_");
        bare.split('_')
            .map(|word| {
                let lower = word.to_ascii_lowercase();
                let mut chars = lower.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    let n = codes.len();
    let mut table = format!(
        "// Generated by build.rs from src/ffi/status.rs: do not edit.\n\
         static ALL_STATUSES: [perfopt_status; {n}] = [\n"
    );
    for (name, _, _) in &codes {
        table += &format!("    perfopt_status::{name},\n");
    }
    table += &format!("];\nstatic STATUS_NAMES: [&std::ffi::CStr; {n}] = [\n");
    for (name, _, _) in &codes {
        table += &format!("    c{name:?},\n");
    }
    table += &format!("];\nstatic STATUS_MESSAGES: [&std::ffi::CStr; {n}] = [\n");
    for (_, _, message) in &codes {
        table += &format!("    c{message:?},\n");
    }
    table += "];\nimpl From<crate::error::ErrorKind> for perfopt_status {\n    \
              fn from(kind: crate::error::ErrorKind) -> Self {\n        match kind {\n";
    for (name, _, _) in codes.iter().filter(|(name, _, _)| name != "PERFOPT_OK") {
        table += &format!(
            "            crate::error::ErrorKind::{} => perfopt_status::{name},\n",
            kind(name)
        );
    }
    table += "        }\n    }\n}\n";
    fs::write(out_dir.join("status_table.rs"), table).expect("write status_table.rs");

    let mut kinds = String::from(
        "// Generated by build.rs from src/ffi/status.rs: do not edit.\n\
         /// What went wrong, one variant per perfopt_status code (but OK).\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq)]\npub enum ErrorKind {\n",
    );
    for (name, _, message) in codes.iter().filter(|(name, _, _)| name != "PERFOPT_OK") {
        kinds += &format!("    /// {message}\n    {},\n", kind(name));
    }
    kinds += "}\n";
    fs::write(out_dir.join("error_kind.rs"), kinds).expect("write error_kind.rs");
}

fn shim_sources() -> impl Iterator<Item = &'static str> {
    SHIM_HEADERS
        .iter()
        .chain(SHIM_CPU)
        .copied()
        .chain([SHIM_CUDA])
        .chain(SHIM_EXECUTORCH.iter().copied())
}

/// The version of the executorch wheel the ExecuTorch part is built
/// against: its C++ `Module` is compiled into the part, so another
/// version's runtime must not be linked to it.
const EXECUTORCH_VERSION: &str = "1.5.1";
/// The wheel's libraries the part links.
const EXECUTORCH_LIBRARIES: [&str; 4] = [
    "executorch",
    "executorch_kernels_optimized",
    "executorch_backend_xnnpack",
    "executorch_threadpool",
];

/// The executorch wheel in `site_packages` (beside torch) at
/// EXECUTORCH_VERSION, with its headers and libraries. None without it (or
/// with another version, or PERFOPT_NO_EXECUTORCH set): perfopt is built
/// without its ExecuTorch part and says so at a .pte.
fn find_executorch(site_packages: &Path) -> Option<PathBuf> {
    if env::var_os("PERFOPT_NO_EXECUTORCH").is_some_and(|v| v != "0") {
        return None;
    }
    let root = site_packages.join("executorch");
    let version = root.join("version.py");
    // Installing, upgrading or removing the wheel builds the part again (a
    // path that does not exist would rerun this script at every build).
    let watched = if version.exists() {
        &version
    } else {
        site_packages
    };
    println!("cargo:rerun-if-changed={}", watched.display());
    let found = fs::read_to_string(&version).unwrap_or_default();
    // "1.5.1" or a local build of it ("1.5.1+cpu"), not "1.5.10".
    let wanted = [
        format!("__version__ = \"{EXECUTORCH_VERSION}\""),
        format!("__version__ = \"{EXECUTORCH_VERSION}+"),
    ];
    let complete = root
        .join("include/executorch/extension/module/module.h")
        .exists()
        && EXECUTORCH_LIBRARIES
            .iter()
            .all(|l| root.join(format!("lib/lib{l}.so")).exists());
    if !wanted.iter().any(|w| found.contains(w.as_str())) || !complete {
        println!(
            "cargo:warning=the executorch wheel {EXECUTORCH_VERSION} was not found complete at {}: \
             building without ExecuTorch (`make setup` installs it)",
            root.display()
        );
        return None;
    }
    Some(root)
}

/// Builds src/engine/executorch/shim.cpp as libperfopt_executorch.so.0,
/// linked to the wheel's runtime, kernels and XNNPACK backend (kept linked:
/// they register themselves when loaded), found through its rpath (the
/// wheel's folder, and executorch/lib beside a wheel's perfopt package).
fn build_executorch_library(out_dir: &Path, root: &Path) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(root.join("include"))
        .include(root.join("include/executorch/runtime/core/portable_type/c10"))
        .define("C10_USING_CUSTOM_GENERATED_MACROS", None)
        .define("ET_EVENT_TRACER_ENABLED", None)
        .define("ET_USE_THREADPOOL", None)
        // In the compiler's arguments, so in the stamp: another version of
        // the wheel builds the part again.
        .define("PERFOPT_EXECUTORCH_VERSION", EXECUTORCH_VERSION)
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-unused-parameter")
        .file(SHIM_EXECUTORCH[0]);
    let lib = root.join("lib");
    let mut link_args: Vec<String> =
        vec![format!("-L{}", lib.display()), "-Wl,--no-as-needed".into()];
    link_args.extend(EXECUTORCH_LIBRARIES.iter().map(|l| format!("-l{l}")));
    link_args.extend([
        "-Wl,--as-needed".into(),
        format!("-Wl,-rpath,{}:$ORIGIN/../executorch/lib", lib.display()),
    ]);
    build_part(out_dir, EXECUTORCH_LIBRARY, &build, link_args, "pet_*");
}

struct Cuda {
    include_dirs: Vec<PathBuf>,
    lib_dir: PathBuf,
}

/// The CUDA headers and runtime that PyPI's torch wheel brings along
/// (site-packages/nvidia/cu13), plus the `crt/` headers that only triton
/// ships. None when libtorch has no CUDA library or the headers are missing.
fn find_cuda(torch_lib: &Path) -> Option<Cuda> {
    if env::var_os("PERFOPT_NO_CUDA").is_some_and(|v| v != "0") {
        return None;
    }
    if !torch_lib.join("libtorch_cuda.so").exists() {
        return None;
    }
    let site_packages = torch_lib.parent()?.parent()?;
    let cu = site_packages.join("nvidia/cu13");
    if !cu.join("include/cuda_runtime_api.h").exists() || !cu.join("lib/libcudart.so.13").exists() {
        println!(
            "cargo:warning=CUDA headers not found under {}: building without the CUDA shim",
            cu.display()
        );
        return None;
    }
    let mut include_dirs = vec![cu.join("include"), cu.join("include/cccl")];
    let triton = site_packages.join("triton/backends/nvidia/include");
    if triton.exists() {
        include_dirs.push(triton);
    }
    Some(Cuda {
        include_dirs,
        lib_dir: cu.join("lib"),
    })
}

/// Compiles the shim unless the same sources were already compiled with the
/// same flags: libtorch's headers make each translation unit take tens of
/// seconds, and cargo reruns this script whenever src/ffi changes.
fn compile_shim(out_dir: &Path, includes: &[PathBuf]) {
    let mut build = shim_build(includes);
    build.files(SHIM_CPU);
    let stamp = stamp(&build, &[]);
    let stamp_path = out_dir.join("shim.stamp");
    let archive = out_dir.join("libperfopt_shim.a");
    if archive.exists() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static=perfopt_shim");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    build.compile("perfopt_shim");
    fs::write(stamp_path, stamp).expect("write shim stamp");
}

/// The compiler settings every shim file is built with.
fn shim_build(includes: &[PathBuf]) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .includes(includes)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter");
    build
}

/// A hash of every shim source, the compiler's arguments, `extra` and the
/// profile.
fn stamp(build: &cc::Build, extra: &[&str]) -> String {
    let mut hasher = DefaultHasher::new();
    for path in shim_sources() {
        fs::read(path).expect("shim source").hash(&mut hasher);
    }
    format!("{:?}{extra:?}", build.get_compiler().args()).hash(&mut hasher);
    env::var("PROFILE").ok().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Builds src/cxx/cuda.cpp as libperfopt_cuda.so.0 (exporting only its
/// `pshim_*` functions, with its own rpaths like libperfopt's) and copies it
/// into the profile's folder (target/release/), beside libperfopt.so and the
/// CLI, where src/torch/cuda.rs looks for it.
fn build_cuda_library(out_dir: &Path, includes: &[PathBuf], cuda: &Cuda, torch_lib: &Path) {
    let mut build = shim_build(includes);
    build.includes(&cuda.include_dirs).file(SHIM_CUDA);
    let link_args: Vec<String> = vec![
        format!("-L{}", torch_lib.display()),
        format!("-L{}", cuda.lib_dir.display()),
        "-lc10_cuda".into(),
        "-ltorch_cuda".into(),
        "-ltorch_cpu".into(),
        "-lc10".into(),
        "-l:libcudart.so.13".into(),
        format!(
            "-Wl,-rpath,{}:{}:$ORIGIN/../torch/lib:$ORIGIN/../nvidia/cu13/lib",
            torch_lib.display(),
            cuda.lib_dir.display()
        ),
    ];
    build_part(out_dir, CUDA_LIBRARY, &build, link_args, "pshim_*");
}

/// Links a part of perfopt built as a library of its own (`name`, exporting
/// only the functions `exported` matches, with its own rpaths) unless the
/// same sources were linked already with the same flags, and copies it into
/// the profile's folder (target/release/), beside libperfopt.so and the CLI,
/// where src/library_folder.rs looks for it.
fn build_part(
    out_dir: &Path,
    name: &str,
    build: &cc::Build,
    mut link_args: Vec<String>,
    exported: &str,
) {
    let library = out_dir.join(name);
    let version_script = out_dir.join(format!("{name}.map"));
    let exported = format!("{{ global: {exported}; local: *; }};\n");
    link_args.extend([
        format!("-Wl,-soname,{name}"),
        format!("-Wl,--version-script={}", version_script.display()),
        "-Wl,--no-undefined".into(),
    ]);
    let stamp = stamp(build, &[&link_args.join(" "), &exported]);
    let stamp_path = out_dir.join(format!("{name}.stamp"));
    if !library.exists() || fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str())
    {
        let objects = build.compile_intermediates();
        fs::write(&version_script, &exported).expect("write version script");
        let status = build
            .get_compiler()
            .to_command()
            .arg("-shared")
            .arg("-o")
            .arg(&library)
            .args(&objects)
            .args(&link_args)
            .status()
            .unwrap_or_else(|err| panic!("run the C++ compiler to link {name}: {err}"));
        assert!(status.success(), "linking {name} failed");
        fs::write(&stamp_path, stamp).expect("write the part's stamp");
    }
    // Copied beside under a name of this run's own and renamed over: a
    // running process keeps its mapped copy, and two builds do not collide.
    if let Some(profile_dir) = profile_dir(out_dir) {
        let staged = profile_dir.join(format!(".{name}.{}", std::process::id()));
        fs::copy(&library, &staged).unwrap_or_else(|err| panic!("copy {name}: {err}"));
        fs::rename(&staged, profile_dir.join(name))
            .unwrap_or_else(|err| panic!("place {name}: {err}"));
    }
}

/// target/<profile>/, from OUT_DIR (target/<profile>/build/perfopt-<hash>/out).
fn profile_dir(out_dir: &Path) -> Option<&Path> {
    out_dir.ancestors().nth(3)
}

fn generate_header(out_dir: &Path) {
    let crate_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(&crate_dir).join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    // Only the C skin is parsed (src/ffi/mod.rs and the modules it declares):
    // the core's public Rust items are not ABI.
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(Path::new(&crate_dir).join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write_to_file(out_dir.join("perfopt.h"));
}
