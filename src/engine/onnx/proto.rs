//! An ONNX file checked before ONNX Runtime parses it: a ModelProto's
//! top-level fields walked (tags and lengths within the file), so that a
//! file cut short, or one that is not a model, gets its own message naming
//! the path rather than a protobuf parser's.

use crate::error::{Error, ErrorKind, Result};

/// ModelProto's field numbers that perfopt reads.
const IR_VERSION: u64 = 1;
const GRAPH: u64 = 7;

/// The largest IR version perfopt's probe takes for ONNX (ONNX 1.20 writes
/// 11; the room above is for later releases).
const MAX_IR_VERSION: u64 = 64;

/// Whether a file's first bytes are a ModelProto's: its first field, as
/// every ONNX writer orders them, is ir_version (field 1, a varint).
pub fn probe(head: &[u8]) -> bool {
    head.first() == Some(&0x08)
        && matches!(varint(head, 1), Some((v, _)) if (1..=MAX_IR_VERSION).contains(&v))
}

/// What the walk found.
#[derive(Debug, PartialEq, Eq)]
pub struct Walked {
    pub ir_version: u64,
}

/// Walks the top-level fields; every length must stay within the file and a
/// graph must be there.
pub fn walk(bytes: &[u8], shown: &str) -> Result<Walked> {
    let cut = |at: usize| {
        Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{shown} is an ONNX model cut short: a field at byte {at} runs past the end of the \
                 file ({} bytes); copy it again",
                bytes.len()
            ),
        )
    };
    let mut at = 0;
    let mut ir_version = None;
    let mut graph = false;
    while at < bytes.len() {
        let start = at;
        let (tag, next) = varint(bytes, at).ok_or_else(|| cut(start))?;
        at = next;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                let (value, next) = varint(bytes, at).ok_or_else(|| cut(start))?;
                if field == IR_VERSION {
                    ir_version = Some(value);
                }
                at = next;
            }
            1 => {
                at = at
                    .checked_add(8)
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| cut(start))?
            }
            5 => {
                at = at
                    .checked_add(4)
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| cut(start))?
            }
            2 => {
                let (len, next) = varint(bytes, at).ok_or_else(|| cut(start))?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| next.checked_add(len))
                    .filter(|&end| end <= bytes.len())
                    .ok_or_else(|| cut(start))?;
                graph |= field == GRAPH;
                at = end;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::LoadFailed,
                    format!(
                        "{shown} starts like an ONNX model but is not one: byte {start} has wire \
                         type {wire}, which a ModelProto does not use"
                    ),
                ))
            }
        }
    }
    let ir_version = ir_version.ok_or_else(|| {
        Error::new(
            ErrorKind::LoadFailed,
            format!("{shown} is not an ONNX model: it has no ir_version"),
        )
    })?;
    if !graph {
        return Err(Error::new(
            ErrorKind::LoadFailed,
            format!("{shown} is an ONNX ModelProto without a graph: nothing to run"),
        ));
    }
    Ok(Walked { ir_version })
}

/// A protobuf varint at `at`: its value and the index after it.
fn varint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *bytes.get(at + i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, at + i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ir_version 8, a producer name, a graph of 3 bytes.
    fn model() -> Vec<u8> {
        let mut bytes = vec![0x08, 0x08];
        bytes.extend([0x12, 0x05]);
        bytes.extend(b"torch");
        bytes.extend([0x3a, 0x03, 1, 2, 3]);
        bytes
    }

    #[test]
    fn probes_and_walks_a_model() {
        let bytes = model();
        assert!(probe(&bytes));
        assert_eq!(walk(&bytes, "m.onnx").unwrap(), Walked { ir_version: 8 });
        assert!(!probe(b"PK\x03\x04"));
        assert!(!probe(&[0x08, 0x00]));
    }

    #[test]
    fn a_model_cut_short_says_so() {
        let bytes = model();
        for len in [3, 6, bytes.len() - 1] {
            let err = walk(&bytes[..len], "m.onnx").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ModelCorrupt);
            assert!(err.to_string().contains("cut short"), "{err}");
        }
    }

    #[test]
    fn a_model_without_a_graph_is_refused() {
        let err = walk(&[0x08, 0x08], "m.onnx").unwrap_err();
        assert!(err.to_string().contains("without a graph"), "{err}");
        let err = walk(&[0x08, 0x08, 0x0f], "m.onnx").unwrap_err();
        assert!(err.to_string().contains("wire type 7"), "{err}");
    }
}
