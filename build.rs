//! Build script: finds libtorch through torch-sys, compiles the C++ shim
//! against the same headers, builds the CUDA part as its own library
//! (libperfopt_cuda.so.0, loaded at run time), sets rpaths and the SONAME, and
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

fn main() {
    for path in shim_sources() {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=PERFOPT_NO_CUDA");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let torch_lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"),
    );
    let torch_root = torch_lib.parent().expect("libtorch lib dir has a parent");
    let includes = vec![
        torch_root.join("include"),
        torch_root.join("include/torch/csrc/api/include"),
    ];

    let linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    println!("cargo::rustc-check-cfg=cfg(perfopt_cuda)");
    compile_shim(&out_dir, &includes);
    match find_cuda(&torch_lib) {
        Some(cuda) => {
            build_cuda_library(&out_dir, &includes, &cuda, &torch_lib);
            println!("cargo:rustc-cfg=perfopt_cuda");
        }
        // An earlier build's CUDA part must not be shipped by this one.
        None => {
            if let Some(profile_dir) = profile_dir(&out_dir) {
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
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libperfopt.so.0");
    }

    generate_status_table(&out_dir);
    generate_header(&out_dir);
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
    let library = out_dir.join(CUDA_LIBRARY);
    let mut build = shim_build(includes);
    build.includes(&cuda.include_dirs).file(SHIM_CUDA);
    let version_script = out_dir.join("perfopt_cuda.map");
    let exported = "{ global: pshim_*; local: *; };\n";
    let link_args: Vec<String> = vec![
        format!("-L{}", torch_lib.display()),
        format!("-L{}", cuda.lib_dir.display()),
        "-lc10_cuda".into(),
        "-ltorch_cuda".into(),
        "-ltorch_cpu".into(),
        "-lc10".into(),
        "-l:libcudart.so.13".into(),
        format!("-Wl,-soname,{CUDA_LIBRARY}"),
        format!("-Wl,--version-script={}", version_script.display()),
        "-Wl,--no-undefined".into(),
        format!(
            "-Wl,-rpath,{}:{}:$ORIGIN/../torch/lib:$ORIGIN/../nvidia/cu13/lib",
            torch_lib.display(),
            cuda.lib_dir.display()
        ),
    ];
    let stamp = stamp(&build, &[&link_args.join(" "), exported]);
    let stamp_path = out_dir.join("cuda.stamp");
    if !library.exists() || fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str())
    {
        let objects = build.compile_intermediates();
        fs::write(&version_script, exported).expect("write version script");
        let status = build
            .get_compiler()
            .to_command()
            .arg("-shared")
            .arg("-o")
            .arg(&library)
            .args(&objects)
            .args(&link_args)
            .status()
            .expect("run the C++ compiler to link libperfopt_cuda.so.0");
        assert!(status.success(), "linking {CUDA_LIBRARY} failed");
        fs::write(&stamp_path, stamp).expect("write cuda stamp");
    }
    // Copied beside under a name of this run's own and renamed over: a
    // running process keeps its mapped copy, and two builds do not collide.
    if let Some(profile_dir) = profile_dir(out_dir) {
        let staged = profile_dir.join(format!(".{CUDA_LIBRARY}.{}", std::process::id()));
        fs::copy(&library, &staged).expect("copy libperfopt_cuda.so.0");
        fs::rename(&staged, profile_dir.join(CUDA_LIBRARY)).expect("place libperfopt_cuda.so.0");
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
