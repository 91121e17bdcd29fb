//! What the caller asks for, and how it is resolved against the service's
//! `TRANSLATOR_*` environment variables and the defaults. Pure: the
//! environment is passed in as a lookup function, so precedence is testable.

use std::fmt;
use std::str::FromStr;

use crate::device::DeviceRequest;
use crate::error::{Error, ErrorKind, Result};

pub const ENV_TORCH_COMPILE: &str = "TRANSLATOR_TORCH_COMPILE";
pub const ENV_COMPILE_MODE: &str = "TRANSLATOR_COMPILE_MODE";
pub const ENV_CUDNN_BENCHMARK: &str = "TRANSLATOR_CUDNN_BENCHMARK";
pub const ENV_CPU_OPTIMIZATION: &str = "TRANSLATOR_CPU_OPTIMIZATION";

/// The variables the optimizer reads, in the order it reads them.
pub const TRANSLATOR_VARIABLES: [&str; 4] = [
    ENV_TORCH_COMPILE,
    ENV_COMPILE_MODE,
    ENV_CUDNN_BENCHMARK,
    ENV_CPU_OPTIMIZATION,
];

/// Looks up an environment variable (the process environment, or a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How a model is compiled, as in `torch.compile(mode=...)`, plus `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileMode {
    None,
    Default,
    ReduceOverhead,
    MaxAutotune,
}

impl CompileMode {
    pub const ACCEPTED: &'static str = "none, default, reduce-overhead, max-autotune";

    pub fn as_str(self) -> &'static str {
        match self {
            CompileMode::None => "none",
            CompileMode::Default => "default",
            CompileMode::ReduceOverhead => "reduce-overhead",
            CompileMode::MaxAutotune => "max-autotune",
        }
    }
}

impl fmt::Display for CompileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompileMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(CompileMode::None),
            "default" => Ok(CompileMode::Default),
            "reduce-overhead" | "reduce_overhead" => Ok(CompileMode::ReduceOverhead),
            "max-autotune" | "max_autotune" => Ok(CompileMode::MaxAutotune),
            _ => Err(Error::invalid_argument(format!(
                "unknown compile mode {s:?}; accepted: {}",
                CompileMode::ACCEPTED
            ))),
        }
    }
}

/// Where a resolved setting came from, as the report says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    Environment,
    Config,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Environment => "environment",
            Source::Config => "config",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
    /// The environment variable it came from, when it did.
    pub variable: Option<&'static str>,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Setting {
            value,
            source,
            variable: None,
        }
    }
}

/// What the caller asked for. `None` means "not said": the environment (when
/// read) and then the default decide.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub device: Option<DeviceRequest>,
    pub cudnn_benchmark: Option<bool>,
    pub tf32: Option<bool>,
    pub cpu_optimization: Option<bool>,
    pub torch_compile: Option<bool>,
    pub compile_mode: Option<CompileMode>,
    /// Intra-op threads; `None` or 0 = automatic.
    pub intra_op_threads: Option<u32>,
    /// Inter-op threads; `None` or 0 = automatic.
    pub inter_op_threads: Option<u32>,
    /// glibc malloc thresholds for inference (allocator.rs); `None`: when CPU
    /// optimization applies.
    pub malloc_tuning: Option<bool>,
    /// The ONNX Runtime library ONNX models run on; `None`: found
    /// (src/engine/onnx/runtime.rs).
    pub onnxruntime_library: Option<String>,
    /// The tuning cache of every model whose own option names none.
    pub tuning_cache_dir: Option<String>,
    pub read_environment: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device: None,
            cudnn_benchmark: None,
            tf32: None,
            cpu_optimization: None,
            torch_compile: None,
            compile_mode: None,
            intra_op_threads: None,
            inter_op_threads: None,
            malloc_tuning: None,
            onnxruntime_library: None,
            tuning_cache_dir: None,
            read_environment: true,
        }
    }
}

/// Every setting with its value and its source.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    pub device: Setting<DeviceRequest>,
    pub cudnn_benchmark: Setting<bool>,
    pub tf32: Setting<bool>,
    pub cpu_optimization: Setting<bool>,
    pub torch_compile: Setting<bool>,
    pub compile_mode: Setting<CompileMode>,
    pub intra_op_threads: Setting<Option<u32>>,
    pub inter_op_threads: Setting<Option<u32>>,
    /// `None`: automatic (with CPU optimization on the CPU device).
    pub malloc_tuning: Setting<Option<bool>>,
    /// The ONNX Runtime library the caller named, if any.
    pub onnxruntime_library: Option<String>,
    /// The tuning cache of every model whose own option names none.
    pub tuning_cache_dir: Option<String>,
}

impl ResolvedConfig {
    /// The mode a model gets when the caller names none: the configured mode,
    /// or `none` when compilation is switched off (TRANSLATOR_TORCH_COMPILE=false).
    pub fn effective_compile_mode(&self) -> CompileMode {
        if self.torch_compile.value {
            self.compile_mode.value
        } else {
            CompileMode::None
        }
    }
}

/// Parses the service's booleans. Anything else is an error naming the
/// variable: a typo in a deployment must not silently fall back to a default.
pub fn parse_bool(variable: &str, raw: &str) -> Result<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::new(
            ErrorKind::Environment,
            format!(
                "{variable}={raw:?} is not a boolean; accepted: true, false, 1, 0, yes, no, on, off"
            ),
        )),
    }
}

fn env_bool(
    configured: Option<bool>,
    variable: &'static str,
    default: bool,
    env: Option<EnvLookup>,
) -> Result<Setting<bool>> {
    if let Some(value) = configured {
        return Ok(Setting::new(value, Source::Config));
    }
    if let Some(raw) = env.and_then(|lookup| lookup(variable)) {
        return Ok(Setting {
            value: parse_bool(variable, &raw)?,
            source: Source::Environment,
            variable: Some(variable),
        });
    }
    Ok(Setting::new(default, Source::Default))
}

fn threads(configured: Option<u32>) -> Setting<Option<u32>> {
    match configured {
        Some(n) if n > 0 => Setting::new(Some(n), Source::Config),
        _ => Setting::new(None, Source::Default),
    }
}

impl Config {
    /// Resolves every setting: explicit config first, then (when
    /// `read_environment`) the `TRANSLATOR_*` variables, then the defaults.
    pub fn resolve(&self, env: EnvLookup) -> Result<ResolvedConfig> {
        let limit = max_threads();
        for (name, value) in [
            ("intra_op_threads", self.intra_op_threads),
            ("inter_op_threads", self.inter_op_threads),
        ] {
            if value.is_some_and(|n| n > limit) {
                return Err(Error::invalid_argument(format!(
                    "{name} is {}; at most {limit} (4 per core on this machine's {} cores): more \
                     threads only wait for the cores, and thousands exhaust the process",
                    value.unwrap_or(0),
                    crate::device::host::cores()
                )));
            }
        }
        let env = self.read_environment.then_some(env);
        let compile_mode = match (self.compile_mode, env.and_then(|e| e(ENV_COMPILE_MODE))) {
            (Some(mode), _) => Setting::new(mode, Source::Config),
            (None, Some(raw)) => {
                let mode = raw.parse::<CompileMode>().map_err(|_| {
                    Error::new(
                        ErrorKind::Environment,
                        format!(
                            "{ENV_COMPILE_MODE}={raw:?} is not a compile mode; accepted: {}",
                            CompileMode::ACCEPTED
                        ),
                    )
                })?;
                Setting {
                    value: mode,
                    source: Source::Environment,
                    variable: Some(ENV_COMPILE_MODE),
                }
            }
            // torch.compile's own default is "default"; the service's is
            // reduce-overhead, which is where the measured speed-ups come from.
            (None, None) => Setting::new(CompileMode::ReduceOverhead, Source::Default),
        };
        Ok(ResolvedConfig {
            device: match &self.device {
                Some(request) => Setting::new(request.clone(), Source::Config),
                None => Setting::new(DeviceRequest::Auto, Source::Default),
            },
            cudnn_benchmark: env_bool(self.cudnn_benchmark, ENV_CUDNN_BENCHMARK, true, env)?,
            tf32: match self.tf32 {
                Some(value) => Setting::new(value, Source::Config),
                None => Setting::new(true, Source::Default),
            },
            cpu_optimization: env_bool(self.cpu_optimization, ENV_CPU_OPTIMIZATION, true, env)?,
            torch_compile: env_bool(self.torch_compile, ENV_TORCH_COMPILE, true, env)?,
            compile_mode,
            intra_op_threads: threads(self.intra_op_threads),
            inter_op_threads: threads(self.inter_op_threads),
            malloc_tuning: match self.malloc_tuning {
                Some(on) => Setting::new(Some(on), Source::Config),
                None => Setting::new(None, Source::Default),
            },
            onnxruntime_library: self.onnxruntime_library.clone(),
            tuning_cache_dir: self.tuning_cache_dir.clone(),
        })
    }
}

/// The most intra- or inter-op threads a config may ask for: 4 per core.
pub fn max_threads() -> u32 {
    (crate::device::host::cores().max(1) as u32).saturating_mul(4)
}

/// The process environment as a lookup function. A variable that is set but
/// not UTF-8 is passed on as its lossy text, so that parsing rejects it by name.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_when_nothing_is_said() {
        let resolved = Config::default().resolve(&env_of(&[])).unwrap();
        assert_eq!(resolved.device.value, DeviceRequest::Auto);
        assert!(resolved.cudnn_benchmark.value);
        assert_eq!(resolved.cudnn_benchmark.source, Source::Default);
        assert!(resolved.tf32.value && resolved.cpu_optimization.value);
        assert_eq!(resolved.compile_mode.value, CompileMode::ReduceOverhead);
        assert_eq!(
            resolved.effective_compile_mode(),
            CompileMode::ReduceOverhead
        );
        assert_eq!(resolved.intra_op_threads.value, None);
    }

    #[test]
    fn environment_overrides_defaults() {
        let env = env_of(&[
            (ENV_CUDNN_BENCHMARK, "false"),
            (ENV_COMPILE_MODE, "max-autotune"),
            (ENV_CPU_OPTIMIZATION, " 0 "),
            (ENV_TORCH_COMPILE, "TRUE"),
        ]);
        let resolved = Config::default().resolve(&env).unwrap();
        assert!(!resolved.cudnn_benchmark.value);
        assert_eq!(resolved.cudnn_benchmark.source, Source::Environment);
        assert_eq!(resolved.cudnn_benchmark.variable, Some(ENV_CUDNN_BENCHMARK));
        assert_eq!(resolved.compile_mode.value, CompileMode::MaxAutotune);
        assert!(!resolved.cpu_optimization.value);
        assert!(resolved.torch_compile.value);
    }

    #[test]
    fn config_overrides_environment() {
        let env = env_of(&[
            (ENV_CUDNN_BENCHMARK, "false"),
            (ENV_COMPILE_MODE, "default"),
        ]);
        let config = Config {
            cudnn_benchmark: Some(true),
            compile_mode: Some(CompileMode::None),
            ..Config::default()
        };
        let resolved = config.resolve(&env).unwrap();
        assert!(resolved.cudnn_benchmark.value);
        assert_eq!(resolved.cudnn_benchmark.source, Source::Config);
        assert_eq!(resolved.compile_mode.value, CompileMode::None);
        assert_eq!(resolved.compile_mode.source, Source::Config);
    }

    #[test]
    fn environment_is_ignored_when_not_asked_for() {
        let env = env_of(&[(ENV_CUDNN_BENCHMARK, "garbage")]);
        let config = Config {
            read_environment: false,
            ..Config::default()
        };
        let resolved = config.resolve(&env).unwrap();
        assert_eq!(resolved.cudnn_benchmark.source, Source::Default);
    }

    #[test]
    fn torch_compile_false_means_no_compilation() {
        let env = env_of(&[(ENV_TORCH_COMPILE, "no"), (ENV_COMPILE_MODE, "default")]);
        let resolved = Config::default().resolve(&env).unwrap();
        assert_eq!(resolved.effective_compile_mode(), CompileMode::None);
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_accepted_values() {
        for (variable, value) in [
            (ENV_CUDNN_BENCHMARK, "maybe"),
            (ENV_TORCH_COMPILE, ""),
            (ENV_CPU_OPTIMIZATION, "2"),
            (ENV_COMPILE_MODE, "turbo"),
        ] {
            let err = Config::default()
                .resolve(&env_of(&[(variable, value)]))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Environment, "{variable}");
            let message = err.to_string();
            assert!(message.contains(variable), "{message}");
            assert!(message.contains("accepted"), "{message}");
        }
    }

    #[test]
    fn zero_threads_mean_automatic() {
        let config = Config {
            intra_op_threads: Some(0),
            inter_op_threads: Some(3),
            ..Config::default()
        };
        let resolved = config.resolve(&env_of(&[])).unwrap();
        assert_eq!(resolved.intra_op_threads.value, None);
        assert_eq!(resolved.inter_op_threads.value, Some(3));
        assert_eq!(resolved.inter_op_threads.source, Source::Config);
    }

    #[test]
    fn compile_modes_round_trip() {
        for mode in [
            CompileMode::None,
            CompileMode::Default,
            CompileMode::ReduceOverhead,
            CompileMode::MaxAutotune,
        ] {
            assert_eq!(mode.as_str().parse::<CompileMode>().unwrap(), mode);
        }
        assert!("".parse::<CompileMode>().is_err());
    }
}
