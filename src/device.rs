//! Which device to run on: parsing the request ("auto", "cpu", "cuda",
//! "cuda:N", "mps"), choosing against what libtorch can see, and describing
//! the chosen device (name, memory, compute capability).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::settings as shim;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Mps,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Mps => "mps",
        }
    }
}

/// What the caller asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    /// `None` is plain "cuda": the first device.
    Cuda(Option<usize>),
    Mps,
}

impl DeviceRequest {
    pub const ACCEPTED: &'static str = "auto, cpu, cuda, cuda:N, mps";
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(i)) => write!(f, "cuda:{i}"),
            DeviceRequest::Mps => f.write_str("mps"),
        }
    }
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let unknown = || {
            Error::invalid_argument(format!(
                "unknown device {s:?}; accepted: {}",
                DeviceRequest::ACCEPTED
            ))
        };
        match lower.as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(None)),
            "mps" => Ok(DeviceRequest::Mps),
            other => match other.strip_prefix("cuda:") {
                Some(index) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
                    index
                        .parse::<usize>()
                        .map(|i| DeviceRequest::Cuda(Some(i)))
                        .map_err(|_| unknown())
                }
                _ => Err(unknown()),
            },
        }
    }
}

/// What libtorch can see in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Availability {
    pub cuda_devices: usize,
    pub mps: bool,
}

impl Availability {
    pub fn probe() -> Self {
        Availability {
            cuda_devices: shim::cuda_device_count(),
            mps: shim::mps_available(),
        }
    }
}

/// The device chosen for an optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub kind: DeviceKind,
    /// The CUDA ordinal; `None` for CPU and MPS.
    pub index: Option<usize>,
}

impl Device {
    pub const CPU: Device = Device {
        kind: DeviceKind::Cpu,
        index: None,
    };

    /// The device as the runtime's tensors name it.
    pub fn to_runtime(self) -> crate::runtime::Device {
        match self.kind {
            DeviceKind::Cpu => crate::runtime::Device::Cpu,
            DeviceKind::Cuda => crate::runtime::Device::Cuda(self.index.unwrap_or(0)),
            DeviceKind::Mps => crate::runtime::Device::Mps,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.kind.as_str()),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

/// Chooses the device: "auto" prefers CUDA, then MPS, then the CPU, as the
/// service's `_detect_device` does; an explicit request that cannot be met is
/// an error rather than a silent fall-back to the CPU.
pub fn select(request: &DeviceRequest, available: Availability) -> Result<Device> {
    let cuda = |index: usize| Device {
        kind: DeviceKind::Cuda,
        index: Some(index),
    };
    let mps = Device {
        kind: DeviceKind::Mps,
        index: None,
    };
    match request {
        DeviceRequest::Auto if available.cuda_devices > 0 => Ok(cuda(0)),
        DeviceRequest::Auto if available.mps => Ok(mps),
        DeviceRequest::Auto | DeviceRequest::Cpu => Ok(Device::CPU),
        DeviceRequest::Cuda(index) => {
            if available.cuda_devices == 0 {
                return Err(Error::new(
                    ErrorKind::UnsupportedDevice,
                    format!("device {request} requested but {}", shim::NO_CUDA),
                ));
            }
            let index = index.unwrap_or(0);
            if index >= available.cuda_devices {
                return Err(Error::new(
                    ErrorKind::DeviceNotFound,
                    format!(
                        "device cuda:{index} does not exist: {} CUDA device(s), cuda:0 to cuda:{}",
                        available.cuda_devices,
                        available.cuda_devices - 1
                    ),
                ));
            }
            Ok(cuda(index))
        }
        DeviceRequest::Mps if available.mps => Ok(mps),
        DeviceRequest::Mps => Err(Error::new(
            ErrorKind::UnsupportedDevice,
            format!("device mps requested but {}", shim::NO_MPS),
        )),
    }
}

/// The chosen device as the report describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub device: Device,
    pub name: String,
    pub total_memory: Option<u64>,
    pub free_memory: Option<u64>,
    pub compute_capability: Option<(i32, i32)>,
    pub multiprocessors: Option<i32>,
}

/// Describes a device; what cannot be read is left `None` and logged, never
/// an error, since the optimizer works without it.
pub fn describe(device: Device) -> DeviceInfo {
    let mut info = DeviceInfo {
        device,
        name: String::new(),
        total_memory: None,
        free_memory: None,
        compute_capability: None,
        multiprocessors: None,
    };
    match device.kind {
        DeviceKind::Cpu => {
            info.name = host::cpu_name();
            info.total_memory = host::total_memory();
            info.free_memory = host::available_memory();
        }
        DeviceKind::Mps => {
            // Apple silicon shares memory between CPU and GPU.
            info.name = "Apple GPU (MPS)".to_string();
            info.total_memory = host::total_memory();
            info.free_memory = host::available_memory();
        }
        DeviceKind::Cuda => {
            let index = device.index.unwrap_or(0) as i32;
            match crate::runtime::cuda::device_properties(index) {
                Ok(props) => {
                    info.name = props.name;
                    info.total_memory = Some(props.total_memory);
                    info.compute_capability = Some((props.major, props.minor));
                    info.multiprocessors = Some(props.multiprocessors);
                }
                Err(err) => {
                    log::warn!("{err}");
                    info.name = format!("CUDA device {index}");
                }
            }
            match shim::accelerator_memory_info(index) {
                Ok((free, total)) => {
                    info.free_memory = Some(free);
                    info.total_memory.get_or_insert(total);
                }
                Err(err) => log::warn!("{err}"),
            }
        }
    }
    info
}

/// The host's CPU and memory, read from the OS.
pub mod host {
    pub fn cpu_name() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }

    /// Logical CPUs this process may use (cgroup and affinity limits included).
    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn meminfo(field: &str) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    fn sysconf_bytes(pages: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf has no preconditions.
        let (count, size) = unsafe { (libc::sysconf(pages), libc::sysconf(libc::_SC_PAGESIZE)) };
        (count > 0 && size > 0).then(|| count as u64 * size as u64)
    }

    pub fn total_memory() -> Option<u64> {
        meminfo("MemTotal:").or_else(|| sysconf_bytes(libc::_SC_PHYS_PAGES))
    }

    pub fn available_memory() -> Option<u64> {
        meminfo("MemAvailable:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Availability = Availability {
        cuda_devices: 0,
        mps: false,
    };
    const TWO_GPUS: Availability = Availability {
        cuda_devices: 2,
        mps: false,
    };
    const APPLE: Availability = Availability {
        cuda_devices: 0,
        mps: true,
    };

    #[test]
    fn parses_requests() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(None)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(Some(1))
        );
        assert_eq!("mps".parse::<DeviceRequest>().unwrap(), DeviceRequest::Mps);
        for bad in [
            "", " ", "tpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1:2", "cuda:+1",
        ] {
            let err = bad.parse::<DeviceRequest>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("accepted"), "{err}");
        }
    }

    #[test]
    fn auto_prefers_cuda_then_mps_then_cpu() {
        let auto = DeviceRequest::Auto;
        assert_eq!(select(&auto, TWO_GPUS).unwrap().to_string(), "cuda:0");
        assert_eq!(select(&auto, APPLE).unwrap().kind, DeviceKind::Mps);
        assert_eq!(select(&auto, NONE).unwrap(), Device::CPU);
    }

    #[test]
    fn explicit_requests_that_cannot_be_met_are_errors() {
        let err = select(&DeviceRequest::Cuda(None), NONE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedDevice);
        let err = select(&DeviceRequest::Cuda(Some(2)), TWO_GPUS).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeviceNotFound);
        assert!(err.to_string().contains("cuda:2"), "{err}");
        assert_eq!(
            select(&DeviceRequest::Cuda(Some(1)), TWO_GPUS)
                .unwrap()
                .to_string(),
            "cuda:1"
        );
        let err = select(&DeviceRequest::Mps, NONE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedDevice);
        assert_eq!(select(&DeviceRequest::Cpu, TWO_GPUS).unwrap(), Device::CPU);
    }

    #[test]
    fn host_memory_is_readable() {
        assert!(host::total_memory().unwrap_or(0) > 0);
        assert!(host::cores() >= 1);
    }
}
