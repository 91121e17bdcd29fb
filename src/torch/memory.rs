//! Memory figures (src/cxx/memory.cpp): the CUDA caching allocator's
//! statistics, and libtorch's CPU allocator counted while a measurement runs.

use std::ffi::c_int;

use parking_lot::Mutex;

use super::check;
use crate::error::Result;

extern "C" {
    fn pshim_device_memory_stats(
        index: i32,
        allocated: *mut u64,
        peak_allocated: *mut u64,
        reserved: *mut u64,
    ) -> c_int;
    fn pshim_device_reset_peak(index: i32) -> c_int;
    fn pshim_device_empty_cache() -> c_int;
    fn pshim_host_counting_install(enable: c_int) -> c_int;
    fn pshim_host_counting_read(current: *mut u64, peak: *mut u64);
    fn pshim_host_counting_reset_peak();
}

/// (allocated, peak allocated, reserved) bytes of a CUDA device's caching allocator.
pub fn device_stats(index: i32) -> Result<(u64, u64, u64)> {
    let (mut allocated, mut peak, mut reserved) = (0, 0, 0);
    // SAFETY: valid out pointers.
    check(
        unsafe { pshim_device_memory_stats(index, &mut allocated, &mut peak, &mut reserved) },
        "reading device memory statistics",
    )?;
    Ok((allocated, peak, reserved))
}

pub fn device_reset_peak(index: i32) -> Result<()> {
    // SAFETY: plain value argument.
    check(
        unsafe { pshim_device_reset_peak(index) },
        "resetting peak memory statistics",
    )
}

pub fn device_empty_cache() -> Result<()> {
    // SAFETY: no arguments.
    check(
        unsafe { pshim_device_empty_cache() },
        "emptying the device cache",
    )
}

/// Where the host figures come from, for reports.
pub const HOST_PEAK_SOURCE: &str =
    "libtorch CPU allocator peak per batch (tensors); available host memory";

/// How many measurements hold the counting allocator installed.
static COUNTING_USERS: Mutex<usize> = Mutex::new(0);

/// libtorch's CPU allocator counted while this guard lives (several
/// measurements may overlap; the last one out uninstalls it).
pub struct HostCounting(());

impl HostCounting {
    pub fn install() -> Result<HostCounting> {
        let mut users = COUNTING_USERS.lock();
        if *users == 0 {
            // SAFETY: plain value argument.
            check(
                unsafe { pshim_host_counting_install(1) },
                "counting libtorch's CPU allocations",
            )?;
        }
        *users += 1;
        Ok(HostCounting(()))
    }

    /// (bytes in use now, peak since the last reset) of counted allocations.
    pub fn read(&self) -> (u64, u64) {
        let (mut current, mut peak) = (0, 0);
        // SAFETY: valid out pointers.
        unsafe { pshim_host_counting_read(&mut current, &mut peak) };
        (current, peak)
    }

    pub fn reset_peak(&self) {
        // SAFETY: no arguments.
        unsafe { pshim_host_counting_reset_peak() }
    }
}

impl Drop for HostCounting {
    fn drop(&mut self) {
        let mut users = COUNTING_USERS.lock();
        *users -= 1;
        if *users == 0 {
            // SAFETY: plain value argument; uninstalling cannot fail in a way
            // that matters (tensors allocated meanwhile keep their deleter).
            let _ = unsafe { pshim_host_counting_install(0) };
        }
    }
}
