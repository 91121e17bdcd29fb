//! A thread count per call for libtorch's engines (src/cxx/threads.cpp):
//! OpenMP's count (and MKL's thread-local one) is the calling thread's own
//! setting, so a model's calls run at the model's count while another
//! model's calls, on other threads, run at theirs.

use std::ffi::c_int;

use super::check;
use crate::error::Result;

extern "C" {
    fn pshim_call_threads_enter(threads: i32, previous: *mut i32, previous_mkl: *mut i32) -> c_int;
    fn pshim_call_threads_exit(previous: i32, previous_mkl: i32) -> c_int;
}

/// The calling thread's OpenMP count set for one call; put back on drop (the
/// caller's thread may run other models, or its own libtorch work).
pub struct CallThreads {
    previous: i32,
    previous_mkl: i32,
}

impl CallThreads {
    pub fn enter(threads: usize) -> Result<CallThreads> {
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        let (mut previous, mut previous_mkl) = (0, 0);
        // SAFETY: valid out pointers.
        check(
            unsafe { pshim_call_threads_enter(threads, &mut previous, &mut previous_mkl) },
            "setting the calling thread's thread count",
        )?;
        Ok(CallThreads {
            previous,
            previous_mkl,
        })
    }
}

impl Drop for CallThreads {
    fn drop(&mut self) {
        // SAFETY: plain call; a failure leaves the count as the call had it.
        let _ = unsafe { pshim_call_threads_exit(self.previous, self.previous_mkl) };
    }
}

/// The calling thread's OpenMP count now.
#[cfg(test)]
pub fn current() -> i32 {
    tch::get_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_set_for_a_call_holds_through_atens_first_parallel_region() {
        // On a fresh thread, whose ATen per-thread init has not run (asking
        // ATen for the count would run it): the init runs at the first
        // parallel region and would reset the count to the global one.
        // A global count set (as the optimizer sets it) is what that init
        // applies; the host's cores, which other tests see anyway.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tch::set_num_threads(cores as i32);
        std::thread::spawn(move || {
            let wanted = if cores > 1 { 1 } else { 2 };
            {
                let _threads = CallThreads::enter(wanted as usize).unwrap();
                let big = tch::Tensor::ones([1 << 20], (tch::Kind::Float, tch::Device::Cpu));
                let _ = (&big * 2.0).sum(tch::Kind::Float);
                assert_eq!(current(), wanted);
            }
            assert_ne!(current(), wanted, "the thread's own count is back");
        })
        .join()
        .unwrap();
    }
}
