//! Host memory for CPU inference: glibc malloc's thresholds.
//!
//! libtorch's CPU allocator takes every tensor from malloc and frees it when
//! the tensor dies, so a forward pass allocates and frees its intermediate
//! activations on every call. glibc serves blocks above its mmap threshold
//! (128 KiB, raised dynamically up to 32 MiB as blocks are freed) with fresh
//! mmap'd pages and trims the heap when 128 KiB are free at its top: either
//! way the next call faults the same pages in again and the kernel zeroes
//! them. Measured with `perfopt bench` on the 2-core CPU machine, the
//! HiFi-GAN-shaped vocoder at batch 4 took 137-155 ms per call with glibc's
//! defaults and 108-115 ms with the thresholds below (minor page faults down
//! from about 328,000 to 60,000 per run), the gap seen between a PyTorch
//! process and perfopt's, whose malloc histories differ.
//!
//! Setting the thresholds keeps up to TRIM_THRESHOLD of freed memory in the
//! process instead of returning it: the working set of the largest forward
//! pass stays resident, which is what an inference process wants and what
//! jemalloc or tcmalloc (PyTorch's own CPU tuning advice) do too.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::EnvLookup;
use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;

/// glibc's largest mmap threshold on 64-bit targets
/// (DEFAULT_MMAP_THRESHOLD_MAX): blocks up to this size come from the heap.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory kept at the top of the heap before glibc returns it.
pub const TRIM_THRESHOLD: usize = 1 << 30;

// mallopt takes a C int; glibc trims only above the blocks it keeps.
const _: () = assert!(MMAP_THRESHOLD <= TRIM_THRESHOLD && TRIM_THRESHOLD <= i32::MAX as usize);

/// The user's own malloc configuration, which perfopt never overrides.
const USER_VARIABLES: [&str; 2] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];
const USER_TUNABLES: [&str; 2] = ["glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"];

static TUNED: AtomicBool = AtomicBool::new(false);

/// The variable by which the user configured malloc's thresholds, if any.
pub fn user_configuration(env: EnvLookup) -> Option<String> {
    if let Some(name) = USER_VARIABLES.iter().find(|name| env(name).is_some()) {
        return Some(name.to_string());
    }
    let tunables = env("GLIBC_TUNABLES")?;
    USER_TUNABLES
        .iter()
        .find(|tunable| tunables.contains(*tunable))
        .map(|tunable| format!("GLIBC_TUNABLES ({tunable})"))
}

/// Sets glibc's mmap and trim thresholds for this process.
pub fn tune_malloc() -> Result<()> {
    set_thresholds()?;
    TUNED.store(true, Ordering::Relaxed);
    log::info!(
        "malloc: mmap threshold {} MiB, trim threshold {} MiB",
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20
    );
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Result<()> {
    for (option, value, name) in [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD, "M_MMAP_THRESHOLD"),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD, "M_TRIM_THRESHOLD"),
    ] {
        // SAFETY: mallopt only changes malloc's parameters; glibc serialises it
        // with allocation. The values fit a c_int.
        if unsafe { libc::mallopt(option, value as libc::c_int) } != 1 {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("glibc refused mallopt({name}, {value})"),
            ));
        }
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Result<()> {
    Err(Error::new(
        ErrorKind::UnsupportedDevice,
        "malloc tuning applies to glibc (Linux) only; this allocator keeps its defaults",
    ))
}

/// Whether this platform's malloc can be tuned here.
pub fn supported() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

/// The thresholds as this process has them, for the report (glibc has no
/// getter: perfopt reports what it set, or glibc's dynamic defaults).
pub fn read_back() -> Json {
    if TUNED.load(Ordering::Relaxed) {
        requested()
    } else {
        Json::from("allocator defaults")
    }
}

/// What perfopt asks for, as the report's `requested`.
pub fn requested() -> Json {
    Json::object()
        .with("mmap_threshold_bytes", MMAP_THRESHOLD)
        .with("trim_threshold_bytes", TRIM_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_users_own_malloc_settings_are_found() {
        assert_eq!(user_configuration(&lookup(&[])), None);
        assert_eq!(
            user_configuration(&lookup(&[("MALLOC_TRIM_THRESHOLD_", "131072")])).as_deref(),
            Some("MALLOC_TRIM_THRESHOLD_")
        );
        assert_eq!(
            user_configuration(&lookup(&[(
                "GLIBC_TUNABLES",
                "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"
            )]))
            .as_deref(),
            Some("GLIBC_TUNABLES (glibc.malloc.mmap_threshold)")
        );
        // Tunables that leave the thresholds alone are no reason to skip.
        assert_eq!(
            user_configuration(&lookup(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")])),
            None
        );
    }

    #[test]
    fn thresholds_are_set_where_glibc_allows() {
        if supported() {
            tune_malloc().unwrap();
            assert!(matches!(read_back(), Json::Object(_)));
        }
    }
}
