//! A package's compiled library, checked before the dynamic loader maps it:
//! glibc maps every loadable segment from the file, and a segment that runs
//! past the end of a cut file is a SIGBUS in the host (not an error) the
//! first time the loader touches it.

use crate::error::{Error, ErrorKind, Result};
use crate::zip::{u16_at, u32_at, u64_at};

const HEADER: u64 = 64;
const PROGRAM_HEADER: u64 = 56;
/// Far above any real library's segment count.
const MAX_PROGRAM_HEADERS: u64 = 4096;

/// Checks that `read(offset, len)` (over `size` bytes) is a 64-bit
/// little-endian shared library whose headers and segments all lie within
/// the file. `name` names it in errors.
pub fn check_library(
    name: &str,
    size: u64,
    read: &mut dyn FnMut(u64, u64) -> Result<Vec<u8>>,
) -> Result<()> {
    let bad = |what: String| {
        Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "the package's library {name} is damaged or cut short ({what}): export it again"
            ),
        )
    };
    if size < HEADER {
        return Err(bad(format!("{size} bytes")));
    }
    let header = read(0, HEADER)?;
    if header[..4] != *b"\x7fELF" {
        return Err(bad("not an ELF file".to_string()));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(bad("not a 64-bit little-endian library".to_string()));
    }
    if u16_at(&header, 16) != 3 {
        return Err(bad("not a shared library".to_string()));
    }
    let within = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= size);
    let (ph_offset, ph_size, ph_count) = (
        u64_at(&header, 0x20),
        u64::from(u16_at(&header, 0x36)),
        u64::from(u16_at(&header, 0x38)),
    );
    let (sh_offset, sh_size, sh_count) = (
        u64_at(&header, 0x28),
        u64::from(u16_at(&header, 0x3A)),
        u64::from(u16_at(&header, 0x3C)),
    );
    if ph_count == 0 || ph_count > MAX_PROGRAM_HEADERS || ph_size < PROGRAM_HEADER {
        return Err(bad(format!(
            "{ph_count} program headers of {ph_size} bytes"
        )));
    }
    if !within(ph_offset, ph_count * ph_size) {
        return Err(bad("its program headers lie past its end".to_string()));
    }
    if sh_count > 0
        && !sh_size
            .checked_mul(sh_count)
            .is_some_and(|len| within(sh_offset, len))
    {
        return Err(bad("its section headers lie past its end".to_string()));
    }
    let table = read(ph_offset, ph_count * ph_size)?;
    for k in 0..ph_count as usize {
        let entry = &table[k * ph_size as usize..];
        let (kind, offset, file_size) = (u32_at(entry, 0), u64_at(entry, 8), u64_at(entry, 32));
        if file_size > 0 && !within(offset, file_size) {
            return Err(bad(format!(
                "segment {k} (type {kind}) needs bytes {offset} to {} of a {size}-byte file",
                offset.saturating_add(file_size)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library(segment_end: u64, size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[16] = 3;
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3A].copy_from_slice(&1u16.to_le_bytes());
        bytes[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        bytes[64 + 32..64 + 40].copy_from_slice(&segment_end.to_le_bytes());
        bytes
    }

    fn check(bytes: &[u8]) -> Result<()> {
        let mut read =
            |offset: u64, len: u64| Ok(bytes[offset as usize..(offset + len) as usize].to_vec());
        check_library("lib.so", bytes.len() as u64, &mut read)
    }

    #[test]
    fn a_whole_library_passes_and_a_cut_one_does_not() {
        assert!(check(&library(200, 256)).is_ok());
        let err = check(&library(4096, 256)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCorrupt);
        assert!(err.to_string().contains("segment 0"), "{err}");
        assert!(check(&library(200, 256)[..100]).is_err());
        assert!(check(b"not a library at all, but long enough to have a header.........").is_err());
    }
}
