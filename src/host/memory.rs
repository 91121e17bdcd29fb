//! Memory figures without libtorch: no device allocator; on the host, the
//! bytes of perfopt's own tensors (inputs joined or padded, outputs copied
//! out of ExecuTorch's planned memory), counted while a measurement runs.
//! ONNX Runtime's and ExecuTorch's own arenas are not seen (nor are they
//! by the full build's count of libtorch's allocator).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::WITHOUT_LIBTORCH;
use crate::error::{Error, ErrorKind, Result};

pub fn device_stats(index: i32) -> Result<(u64, u64, u64)> {
    Err(Error::new(
        ErrorKind::UnsupportedDevice,
        format!("the memory of device {index}: {WITHOUT_LIBTORCH}"),
    ))
}

pub fn device_reset_peak(_index: i32) -> Result<()> {
    Ok(())
}

pub fn device_empty_cache() -> Result<()> {
    Ok(())
}

/// Where the host figures come from, for reports.
pub const HOST_PEAK_SOURCE: &str =
    "perfopt's host tensors peak per batch (the engines' own arenas unseen); available host memory";

static USERS: AtomicUsize = AtomicUsize::new(0);
static CURRENT: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// A host tensor's memory, allocated: counted while a measurement runs
/// (the answer says whether it was, so that only its release is subtracted).
pub(crate) fn counted_allocation(bytes: usize) -> bool {
    if USERS.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let now = CURRENT.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    PEAK.fetch_max(now, Ordering::Relaxed);
    true
}

/// A counted allocation's release.
pub(crate) fn counted_release(bytes: usize) {
    let _ = CURRENT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(bytes as u64))
    });
}

/// Host tensors counted while this guard lives.
pub struct HostCounting(());

impl HostCounting {
    pub fn install() -> Result<HostCounting> {
        if USERS.fetch_add(1, Ordering::Relaxed) == 0 {
            CURRENT.store(0, Ordering::Relaxed);
            PEAK.store(0, Ordering::Relaxed);
        }
        Ok(HostCounting(()))
    }

    /// (bytes in use now, peak since the last reset) of counted allocations.
    pub fn read(&self) -> (u64, u64) {
        (
            CURRENT.load(Ordering::Relaxed),
            PEAK.load(Ordering::Relaxed),
        )
    }

    pub fn reset_peak(&self) {
        PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Drop for HostCounting {
    fn drop(&mut self) {
        USERS.fetch_sub(1, Ordering::Relaxed);
    }
}
