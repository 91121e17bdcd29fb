//! The optimizer: detects the device and applies the service's settings
//! (cuDNN benchmark, TF32, threads, the OpenMP/MKL/MPS variables), then
//! reports what libtorch reads back.

use crate::allocator;
use crate::batch;
use crate::config::{self, CompileMode, Config, ResolvedConfig, Setting, Source};
use crate::device::{self, host, Availability, Device, DeviceKind};
use crate::environment::{self, EnvVarRecord};
use crate::error::Result;
use crate::json::Json;
use crate::runtime::settings as shim;
use crate::version;

/// One setting the optimizer decided on: what it asked libtorch for and why,
/// or why it left it alone.
#[derive(Clone, Debug)]
struct SettingRecord {
    name: &'static str,
    /// What perfopt asked libtorch for; `None` when skipped.
    requested: Option<Json>,
    source: Source,
    variable: Option<&'static str>,
    skipped: Option<String>,
}

impl SettingRecord {
    fn from_setting<T>(name: &'static str, setting: &Setting<T>) -> Self {
        SettingRecord {
            name,
            requested: None,
            source: setting.source,
            variable: setting.variable,
            skipped: None,
        }
    }

    fn applied(mut self, requested: impl Into<Json>) -> Self {
        self.requested = Some(requested.into());
        self
    }

    fn skipped(mut self, reason: impl Into<String>) -> Self {
        self.skipped = Some(reason.into());
        self
    }
}

pub struct Optimizer {
    config: ResolvedConfig,
    device: Device,
    availability: Availability,
    settings: Vec<SettingRecord>,
    environment: Vec<EnvVarRecord>,
}

/// The TF32 knobs of libtorch 2.11 that the service's two legacy flags
/// (`cuda.matmul.allow_tf32`, `cudnn.allow_tf32`) map onto.
const TF32_KNOBS: [(&str, &str, &str); 3] = [
    ("tf32_matmul", "cuda", "matmul"),
    ("tf32_cudnn_conv", "cuda", "conv"),
    ("tf32_cudnn_rnn", "cuda", "rnn"),
];

/// Inter-op threads only help models with parallel branches (TorchScript
/// `fork`); a pool as large as the intra-op one oversubscribes the cores.
fn automatic_interop_threads(cores: usize) -> u32 {
    (cores / 2).clamp(1, 4) as u32
}

impl Optimizer {
    /// Creates an optimizer from the process environment and what libtorch sees.
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_environment(config, &config::process_env, Availability::probe())
    }

    /// As [`Optimizer::new`], with the environment lookup and the device
    /// availability given (tests inject both).
    pub fn with_environment(
        config: &Config,
        env: config::EnvLookup,
        availability: Availability,
    ) -> Result<Self> {
        let resolved = config
            .resolve(env)
            .map_err(|e| e.context("reading the configuration"))?;
        let device = device::select(&resolved.device.value, availability)?;
        let mut optimizer = Optimizer {
            config: resolved,
            device,
            availability,
            settings: Vec::new(),
            environment: Vec::new(),
        };
        optimizer.apply(env);
        log::info!(
            "optimizer ready on {} ({} settings applied, {} skipped)",
            optimizer.device,
            optimizer
                .settings
                .iter()
                .filter(|s| s.skipped.is_none())
                .count(),
            optimizer
                .settings
                .iter()
                .filter(|s| s.skipped.is_some())
                .count()
        );
        Ok(optimizer)
    }

    fn apply(&mut self, env: config::EnvLookup) {
        let kind = self.device.kind;
        // The MPS variables must be in place before anything touches the device.
        if kind == DeviceKind::Mps {
            self.environment.push(environment::set_unless_present(
                "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
                "0.0",
                true,
                Some("lifts the MPS allocator's upper memory limit"),
            ));
            self.environment.push(environment::set_unless_present(
                "PYTORCH_ENABLE_MPS_FALLBACK",
                "1",
                false,
                Some(
                    "libtorch reads it when it loads: perfopt sets it too late, so set it in the \
                     host before loading perfopt (the Python and Swift bindings do)",
                ),
            ));
        }

        let not_cuda =
            |what: &str| format!("device is {}: {what} applies to CUDA only", kind.as_str());
        let record = SettingRecord::from_setting("cudnn_benchmark", &self.config.cudnn_benchmark);
        let benchmark = self.config.cudnn_benchmark.value;
        self.settings.push(if kind != DeviceKind::Cuda {
            record.skipped(not_cuda("cuDNN benchmark"))
        } else {
            match shim::set_cudnn_benchmark(benchmark) {
                Ok(()) => record.applied(benchmark),
                Err(err) => record.skipped(err.to_string()),
            }
        });

        let tf32 = self.config.tf32.value;
        let precision = if tf32 { "tf32" } else { "ieee" };
        for (name, backend, op) in TF32_KNOBS {
            let record = SettingRecord::from_setting(name, &self.config.tf32);
            self.settings.push(if kind != DeviceKind::Cuda {
                record.skipped(not_cuda("TF32"))
            } else {
                match shim::set_fp32_precision(backend, op, precision) {
                    Ok(()) => record.applied(precision),
                    Err(err) => record.skipped(err.to_string()),
                }
            });
        }

        self.apply_threads();
        self.apply_malloc(env);
    }

    /// glibc's malloc thresholds (allocator.rs): with CPU optimization on the
    /// CPU device unless the config says otherwise, never over the user's own.
    fn apply_malloc(&mut self, env: config::EnvLookup) {
        let setting = self.config.malloc_tuning.clone();
        let mut record = SettingRecord::from_setting("malloc_thresholds", &setting);
        let wanted = match setting.value {
            Some(on) => on,
            None => {
                record.source = self.config.cpu_optimization.source;
                record.variable = self.config.cpu_optimization.variable;
                self.config.cpu_optimization.value && self.device.kind == DeviceKind::Cpu
            }
        };
        let skipped = if !wanted {
            Some(match setting.value {
                Some(false) => "switched off in the config".to_string(),
                _ if !self.config.cpu_optimization.value => "CPU optimization is off".to_string(),
                _ => format!(
                    "device is {}: host allocations are not on the hot path (set malloc_tuning \
                     to force it)",
                    self.device.kind.as_str()
                ),
            })
        } else if let Some(variable) = allocator::user_configuration(env) {
            Some(format!("the user configured malloc with {variable}"))
        } else {
            allocator::tune_malloc().err().map(|err| err.to_string())
        };
        self.settings.push(match skipped {
            Some(reason) => record.skipped(reason),
            None => record.applied(allocator::requested()),
        });
    }

    fn apply_threads(&mut self) {
        let cores = host::cores();
        let tune_cpu = self.config.cpu_optimization.value && self.device.kind == DeviceKind::Cpu;
        let why_not = if !self.config.cpu_optimization.value {
            "CPU optimization is off; libtorch's default is kept".to_string()
        } else {
            format!(
                "device is {}: CPU thread tuning applies to CPU inference (set the thread counts \
                 in the config to force it)",
                self.device.kind.as_str()
            )
        };

        let intra_setting = self.config.intra_op_threads.clone();
        let intra = intra_setting
            .value
            .or(tune_cpu.then_some(cores as u32))
            .map(|n| n as i32);
        let mut record = SettingRecord::from_setting("intra_op_threads", &intra_setting);
        if intra_setting.value.is_none() && tune_cpu {
            record.source = self.config.cpu_optimization.source;
            record.variable = self.config.cpu_optimization.variable;
        }
        self.settings.push(match intra {
            None => record.skipped(why_not.clone()),
            Some(n) => match shim::set_num_threads(n) {
                Ok(()) => record.applied(n),
                Err(err) => record.skipped(err.to_string()),
            },
        });

        let inter_setting = self.config.inter_op_threads.clone();
        let inter = inter_setting
            .value
            .or(tune_cpu.then(|| automatic_interop_threads(cores)))
            .map(|n| n as i32);
        let mut record = SettingRecord::from_setting("inter_op_threads", &inter_setting);
        if inter_setting.value.is_none() && tune_cpu {
            record.source = self.config.cpu_optimization.source;
            record.variable = self.config.cpu_optimization.variable;
        }
        self.settings.push(match inter {
            None => record.skipped(why_not),
            Some(n) => match shim::num_interop_threads() {
                Ok(current) if current == n => record.applied(n),
                // libtorch accepts this once per process, before any parallel
                // work; a second optimizer keeps the first one's pool.
                _ => match shim::set_num_interop_threads(n) {
                    Ok(()) => record.applied(n),
                    Err(err) => {
                        let current = shim::num_interop_threads().unwrap_or(-1);
                        log::warn!("inter-op threads stay at {current}: {err}");
                        record.skipped(format!(
                            "kept {current}: libtorch sets inter-op threads once per process, \
                             before parallel work starts ({err})"
                        ))
                    }
                },
            },
        });

        if tune_cpu {
            // libtorch links GNU OpenMP, whose constructor reads OMP_* when the
            // library loads: before any perfopt code runs, since libperfopt
            // itself links libtorch. So in this process these variables only
            // reach processes started from it; the thread counts reach
            // OpenMP and MKL through at::set_num_threads above.
            let threads = intra.unwrap_or(cores as i32).to_string();
            // The build without libtorch loads no OpenMP or MKL: there the
            // service's variables are set for the processes it starts.
            let note = |with_libtorch: &'static str| match cfg!(feature = "torch") {
                true => with_libtorch,
                false => {
                    "this build has no libtorch, OpenMP or MKL: it applies only to \
                          processes started from here"
                }
            };
            let counts = [
                (
                    "OMP_NUM_THREADS",
                    false,
                    note("OpenMP read it when libtorch loaded; perfopt set the count directly (at::set_num_threads)"),
                ),
                (
                    "MKL_NUM_THREADS",
                    false,
                    note("MKL in libtorch follows at::set_num_threads, which perfopt called"),
                ),
                (
                    "NUMEXPR_NUM_THREADS",
                    true,
                    "read by numexpr when it is imported",
                ),
            ];
            for (name, in_time, note) in counts {
                self.environment.push(environment::set_unless_present(
                    name,
                    &threads,
                    in_time,
                    Some(note),
                ));
            }
            // Measured on a 2-core CPU: with PASSIVE in effect (set before
            // libtorch loads) a HiFi-GAN-shaped vocoder ran 1.7 to 2.2 times
            // slower, as OpenMP's threads sleep between the many short
            // parallel regions of one forward pass. The service sets it to
            // leave cores to other work; perfopt keeps the service's
            // variable but reports that it does not apply to this process.
            self.environment.push(environment::set_unless_present(
                "OMP_WAIT_POLICY",
                "PASSIVE",
                false,
                Some(note(
                    "OpenMP read it when libtorch loaded, so it applies only to processes \
                     started from here; set before loading, PASSIVE made a conv vocoder \
                     1.7-2.2x slower on a 2-core CPU",
                )),
            ));
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// The mode a model gets when the caller names none.
    pub fn compile_mode(&self) -> CompileMode {
        self.config.effective_compile_mode()
    }

    /// The service's fixed rule; measured sizes come from the model.
    pub fn optimal_batch_size(&self) -> i32 {
        let total = match self.device.kind {
            DeviceKind::Cuda => device::describe(self.device).total_memory,
            _ => None,
        };
        batch::service_batch_size(self.device.kind, total)
    }

    /// The report: the device as it is now, every setting as libtorch reads
    /// it back now (not as requested), where each came from, and what was
    /// skipped and why.
    pub fn report(&self) -> Json {
        let info = device::describe(self.device);
        let batch = batch::service_batch_size(self.device.kind, info.total_memory);
        let device_json = Json::object()
            .with("kind", self.device.kind.as_str())
            .with("index", self.device.index)
            .with("name", info.name.as_str())
            .with("requested", self.config.device.value.to_string())
            .with("requested_source", self.config.device.source.as_str())
            .with("total_memory_bytes", info.total_memory)
            .with("free_memory_bytes", info.free_memory)
            .with(
                "compute_capability",
                info.compute_capability.map(|(a, b)| format!("{a}.{b}")),
            )
            .with("multiprocessors", info.multiprocessors)
            .with("cuda_device_count", self.availability.cuda_devices)
            .with("mps_available", self.availability.mps);

        let settings = Json::Object(
            self.settings
                .iter()
                .map(|s| {
                    let entry = Json::object()
                        .with("value", read_back(s.name))
                        .with("requested", s.requested.clone().unwrap_or(Json::Null))
                        .with("applied", s.skipped.is_none())
                        .with("source", s.source.as_str())
                        .with("variable", s.variable);
                    (s.name.to_string(), entry)
                })
                .collect(),
        );
        let skipped: Vec<Json> = self
            .settings
            .iter()
            .filter_map(|s| {
                s.skipped.as_ref().map(|reason| {
                    Json::object()
                        .with("setting", s.name)
                        .with("reason", reason.as_str())
                })
            })
            .collect();
        let compile = Json::object()
            .with("enabled", self.config.torch_compile.value)
            .with("enabled_source", self.config.torch_compile.source.as_str())
            .with("mode", self.config.compile_mode.value.as_str())
            .with("mode_source", self.config.compile_mode.source.as_str())
            .with("effective_mode", self.compile_mode().as_str())
            .with("tuning_cache_dir", self.config.tuning_cache_dir.as_deref());
        let threads = Json::object()
            .with("cores", host::cores())
            .with("intra_op", shim::num_threads().ok())
            .with("inter_op", shim::num_interop_threads().ok());

        Json::object()
            .with("perfopt_version", version::PERFOPT_VERSION)
            .with("abi_version", version::ABI_VERSION)
            .with("libtorch_version", shim::torch_version())
            .with("cuda_runtime_version", version::cuda_runtime())
            .with("cudnn_version", version::cudnn())
            .with("device", device_json)
            .with("threads", threads)
            .with("engines", crate::engine::engines())
            .with("settings", settings)
            .with("compile", compile)
            .with(
                "environment",
                Json::Array(self.environment.iter().map(EnvVarRecord::to_json).collect()),
            )
            .with("skipped", Json::Array(skipped))
            .with(
                "batch_size",
                Json::object()
                    .with("service_rule", batch)
                    .with("rule", "CUDA >16 GiB: 4, >8 GiB: 2, else 1; MPS: 2; CPU: 1"),
            )
    }
}

/// The current value of a setting, as libtorch reports it.
fn read_back(name: &str) -> Json {
    let value = match name {
        "cudnn_benchmark" => shim::cudnn_benchmark().map(Json::from),
        "intra_op_threads" => shim::num_threads().map(Json::from),
        "inter_op_threads" => shim::num_interop_threads().map(Json::from),
        "malloc_thresholds" => Ok(allocator::read_back()),
        _ => match TF32_KNOBS.iter().find(|(n, _, _)| *n == name) {
            Some((_, backend, op)) => shim::fp32_precision(backend, op).map(Json::from),
            None => return Json::Null,
        },
    };
    value.unwrap_or_else(|err| Json::from(format!("unreadable: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_interop_threads_stay_small() {
        assert_eq!(automatic_interop_threads(1), 1);
        assert_eq!(automatic_interop_threads(2), 1);
        assert_eq!(automatic_interop_threads(8), 4);
        assert_eq!(automatic_interop_threads(128), 4);
    }
}
