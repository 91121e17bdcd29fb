//! c10's ScalarType numbers, which libtorch's shim and ExecuTorch's runtime
//! both take, of the element kinds perfopt passes, with the names messages
//! give them.

use crate::runtime::Kind;

const KINDS: [(i32, Kind, &str); 10] = [
    (0, Kind::Uint8, "uint8"),
    (1, Kind::Int8, "int8"),
    (2, Kind::Int16, "int16"),
    (3, Kind::Int, "int32"),
    (4, Kind::Int64, "int64"),
    (5, Kind::Half, "float16"),
    (6, Kind::Float, "float32"),
    (7, Kind::Double, "float64"),
    (11, Kind::Bool, "bool"),
    (15, Kind::BFloat16, "bfloat16"),
];

/// The kind of a ScalarType number, and its name.
pub fn kind_of(code: i32) -> Option<(Kind, &'static str)> {
    KINDS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(_, kind, name)| (kind, name))
}

/// The kind a name names ("float32").
pub fn kind_named(name: &str) -> Option<Kind> {
    KINDS
        .iter()
        .find(|(_, _, n)| *n == name)
        .map(|&(_, kind, _)| kind)
}

/// The ScalarType number of a kind, and its name.
pub fn code_of(kind: Kind) -> Option<(i32, &'static str)> {
    KINDS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .map(|&(code, _, name)| (code, name))
}
