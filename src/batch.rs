//! The service's fixed batch-size rule. Measured batch sizes (from a model's
//! real memory use) build on this and keep it as the fallback.

use crate::device::DeviceKind;

const GIB: u64 = 1 << 30;

/// CUDA with more than 16 GiB: 4; more than 8 GiB: 2; else 1. MPS: 2. CPU: 1.
/// Unknown CUDA memory counts as small: 1 is the size that cannot be wrong.
pub fn service_batch_size(kind: DeviceKind, total_memory: Option<u64>) -> i32 {
    match kind {
        DeviceKind::Cuda => match total_memory.unwrap_or(0) {
            m if m > 16 * GIB => 4,
            m if m > 8 * GIB => 2,
            _ => 1,
        },
        DeviceKind::Mps => 2,
        DeviceKind::Cpu => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_service_rule() {
        let cuda = |gib: f64| service_batch_size(DeviceKind::Cuda, Some((gib * GIB as f64) as u64));
        assert_eq!(cuda(80.0), 4);
        assert_eq!(cuda(16.5), 4);
        assert_eq!(cuda(16.0), 2, "exactly 16 GiB is not more than 16");
        assert_eq!(cuda(12.0), 2);
        assert_eq!(cuda(8.0), 1);
        assert_eq!(cuda(4.0), 1);
        assert_eq!(service_batch_size(DeviceKind::Cuda, None), 1);
        assert_eq!(service_batch_size(DeviceKind::Mps, Some(64 * GIB)), 2);
        assert_eq!(service_batch_size(DeviceKind::Cpu, Some(512 * GIB)), 1);
    }
}
