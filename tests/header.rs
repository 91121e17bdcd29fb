//! The checked-in header must be exactly what cbindgen generates from the
//! current source (build.rs writes the fresh copy into OUT_DIR).

#[test]
fn checked_in_header_matches_cbindgen() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/perfopt.h"));
    let checked_in = include_str!("../include/perfopt.h");
    assert!(
        generated == checked_in,
        "include/perfopt.h is stale: run `make header` and commit the result"
    );
}
