//! A thread count per call: the lite build's engines keep their own pools
//! (ONNX Runtime's per session, ExecuTorch's per process), so there is no
//! calling thread's count to set.

use crate::error::Result;

pub struct CallThreads(());

impl CallThreads {
    pub fn enter(_threads: usize) -> Result<CallThreads> {
        Ok(CallThreads(()))
    }
}
