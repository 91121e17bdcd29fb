//! The command links libperfopt's code statically; what the library's
//! build.rs gives its own binaries by link arguments (which do not pass on to
//! other crates) is given here: an rpath to libtorch's folder on the machine
//! that built it (`make install` replaces it), and libtorch.so kept linked
//! (an AOTInductor package's library names it without a path, and it brings
//! libtorch's CUDA library where the torch has one).

fn main() {
    let torch_lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{torch_lib}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
    }
}
