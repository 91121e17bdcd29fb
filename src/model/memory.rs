//! Memory figures for reports and batch measurements: the CUDA caching
//! allocator on CUDA; on the host, libtorch's CPU allocator counted during a
//! measurement (the resident set's peak hides what glibc keeps mapped, and
//! resetting it would change what every other report says).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::device::{Device, DeviceKind};
use crate::error::Result;
use crate::runtime::memory::{self, HostCounting};
use crate::runtime::settings;

/// The CUDA allocator's peak before perfopt last reset it for a
/// measurement, so that reports keep the process's true peak.
static CUDA_PEAK_FLOOR: AtomicU64 = AtomicU64::new(0);

/// The process's peak memory, as reports give it.
pub fn process_peak(device: Device) -> (Option<u64>, &'static str) {
    match (device.kind, device.index) {
        (DeviceKind::Cuda, Some(index)) => (
            memory::device_stats(index as i32)
                .ok()
                .map(|(_, peak, _)| peak.max(CUDA_PEAK_FLOOR.load(Ordering::Relaxed))),
            "CUDA caching allocator, peak allocated bytes on the device (all models)",
        ),
        _ => (peak_rss(), "process peak resident set size"),
    }
}

/// Bytes in use beyond what was in use before, at the peak of `work`.
pub fn peak_during(device: Device, work: impl FnOnce() -> Result<()>) -> Result<u64> {
    match (device.kind, device.index) {
        (DeviceKind::Cuda, Some(index)) => {
            let index = index as i32;
            memory::device_empty_cache()?;
            let (before, peak, _) = memory::device_stats(index)?;
            CUDA_PEAK_FLOOR.fetch_max(peak, Ordering::Relaxed);
            memory::device_reset_peak(index)?;
            work()?;
            let (_, peak, _) = memory::device_stats(index)?;
            Ok(peak.saturating_sub(before))
        }
        _ => {
            let counting = HostCounting::install()?;
            counting.reset_peak();
            let (before, _) = counting.read();
            work()?;
            let (_, peak) = counting.read();
            Ok(peak.saturating_sub(before))
        }
    }
}

/// Where [`peak_during`]'s figures come from, for reports.
pub fn measurement_source(device: Device) -> &'static str {
    match device.kind {
        DeviceKind::Cuda => "CUDA caching allocator peak per batch; free device memory",
        _ => memory::HOST_PEAK_SOURCE,
    }
}

/// Free memory on the model's device (the host's for CPU and MPS).
pub fn free_memory(device: Device) -> Option<u64> {
    match (device.kind, device.index) {
        (DeviceKind::Cuda, Some(index)) => settings::accelerator_memory_info(index as i32)
            .ok()
            .map(|(free, _)| free),
        // MPS shares the host's memory.
        _ => crate::device::host::available_memory(),
    }
}

/// The process's peak resident set size in bytes (getrusage).
pub fn peak_rss() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    // SAFETY: initialised by a successful getrusage (zeroed otherwise).
    let usage = unsafe { usage.assume_init() };
    // Linux reports kilobytes; Apple's systems (macOS, iOS) bytes.
    let scale = if cfg!(target_vendor = "apple") {
        1
    } else {
        1024
    };
    (ok && usage.ru_maxrss > 0).then(|| usage.ru_maxrss as u64 * scale)
}
