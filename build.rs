//! Build script: finds libtorch through torch-sys, compiles the C++ shim
//! against the same headers, keeps libtorch_cuda linked, sets rpaths and the
//! SONAME, and generates the C header with cbindgen into OUT_DIR (the checked-in
//! copy in include/ is compared with it by tests/header.rs).

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

const SHIM_SOURCES: &[&str] = &[
    "src/cxx/shim.h",
    "src/cxx/shim_common.h",
    "src/cxx/shim_model.h",
    "src/cxx/shim.cpp",
    "src/cxx/shim_model.cpp",
    "src/cxx/shim_cuda.cpp",
];

fn main() {
    for path in SHIM_SOURCES {
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
    let cuda = find_cuda(&torch_lib);
    compile_shim(&out_dir, &includes, cuda.as_ref());
    // After the shim, so that --as-needed sees the shim's references first.
    if let Some(cuda) = &cuda {
        println!("cargo:rustc-link-search=native={}", cuda.lib_dir.display());
        // CUDA streams and graphs live in c10_cuda, which torch-sys does not link.
        println!("cargo:rustc-link-lib=c10_cuda");
        println!("cargo:rustc-link-arg=-l:libcudart.so.13");
    }

    // The linker drops libtorch_cuda.so under --as-needed because no symbol of
    // ours names it, and libtorch then reports CUDA as unavailable.
    if linux && torch_lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    // rpaths so that the library, the CLI and the test binaries run without
    // LD_LIBRARY_PATH on the machine that built them.
    let mut rpaths = vec![torch_lib.clone()];
    if let Some(cuda) = &cuda {
        rpaths.push(cuda.lib_dir.clone());
    }
    for dir in &rpaths {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libperfopt.so.0");
    }

    generate_header(&out_dir);
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
fn compile_shim(out_dir: &Path, includes: &[PathBuf], cuda: Option<&Cuda>) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .includes(includes)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .file("src/cxx/shim.cpp")
        .file("src/cxx/shim_model.cpp");
    if let Some(cuda) = cuda {
        build
            .define("PERFOPT_WITH_CUDA", None)
            .includes(&cuda.include_dirs)
            .file("src/cxx/shim_cuda.cpp");
    }

    let mut hasher = DefaultHasher::new();
    for path in SHIM_SOURCES {
        fs::read(path).expect("shim source").hash(&mut hasher);
    }
    format!("{includes:?}{:?}", cuda.map(|c| &c.include_dirs)).hash(&mut hasher);
    env::var("PROFILE").ok().hash(&mut hasher);
    let stamp = format!("{:016x}", hasher.finish());
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
