//! The optimizer through the Rust API: device selection, settings applied
//! and read back, environment precedence, the batch rule, inference scopes.

use std::collections::HashMap;

use perfopt::config::{ENV_COMPILE_MODE, ENV_CPU_OPTIMIZATION, ENV_CUDNN_BENCHMARK};
use perfopt::device::Availability;
use perfopt::json::Json;
use perfopt::{
    CompileMode, Config, DeviceKind, DeviceRequest, ErrorKind, InferenceScope, Optimizer,
};

const CPU_ONLY: Availability = Availability {
    cuda_devices: 0,
    mps: false,
};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn setting<'a>(report: &'a Json, name: &str) -> &'a Json {
    report
        .get("settings")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("report has no setting {name}"))
}

#[test]
fn cpu_optimizer_applies_threads_and_skips_cuda_settings() {
    let config = Config {
        device: Some(DeviceRequest::Cpu),
        intra_op_threads: Some(2),
        ..Config::default()
    };
    let optimizer = Optimizer::with_environment(&config, &env_of(&[]), CPU_ONLY).unwrap();
    assert_eq!(optimizer.device().kind, DeviceKind::Cpu);
    assert_eq!(optimizer.optimal_batch_size(), 1);

    let report = optimizer.report();
    let intra = setting(&report, "intra_op_threads");
    assert_eq!(
        intra.get("value"),
        Some(&Json::Int(2)),
        "read back from libtorch"
    );
    assert_eq!(intra.get("source"), Some(&Json::from("config")));
    let benchmark = setting(&report, "cudnn_benchmark");
    assert_eq!(benchmark.get("applied"), Some(&Json::Bool(false)));
    let Some(Json::Array(skipped)) = report.get("skipped") else {
        panic!("no skipped list")
    };
    assert!(skipped
        .iter()
        .any(|s| s.get("setting") == Some(&Json::from("tf32_matmul"))
            && matches!(s.get("reason"), Some(Json::Str(r)) if r.contains("CUDA only"))));
    assert_eq!(
        report.get("device").and_then(|d| d.get("kind")),
        Some(&Json::from("cpu"))
    );
    assert_eq!(
        report.get("batch_size").and_then(|b| b.get("service_rule")),
        Some(&Json::Int(1))
    );
}

#[test]
fn malloc_thresholds_follow_cpu_optimization_and_respect_the_user() {
    let cpu = |malloc_tuning: Option<bool>, cpu_optimization: Option<bool>| Config {
        device: Some(DeviceRequest::Cpu),
        malloc_tuning,
        cpu_optimization,
        ..Config::default()
    };
    let decided = |config: &Config, env: &[(&str, &str)]| {
        let optimizer = Optimizer::with_environment(config, &env_of(env), CPU_ONLY).unwrap();
        setting(&optimizer.report(), "malloc_thresholds").clone()
    };
    // Automatic: on with CPU optimization on the CPU, where glibc allows it.
    let auto = decided(&cpu(None, None), &[]);
    assert_eq!(
        auto.get("applied"),
        Some(&Json::Bool(perfopt::allocator::supported())),
        "{auto}"
    );
    if perfopt::allocator::supported() {
        assert_eq!(
            auto.get("value")
                .and_then(|v| v.get("trim_threshold_bytes")),
            Some(&Json::Int(perfopt::allocator::TRIM_THRESHOLD as i64))
        );
    }
    // Off with CPU optimization, or when the config says so.
    for config in [cpu(None, Some(false)), cpu(Some(false), None)] {
        let entry = decided(&config, &[]);
        assert_eq!(entry.get("applied"), Some(&Json::Bool(false)), "{entry}");
    }
    assert_eq!(
        decided(&cpu(Some(false), None), &[]).get("source"),
        Some(&Json::from("config"))
    );
    // The user's own malloc settings win, even over the config, and are named.
    let optimizer = Optimizer::with_environment(
        &cpu(Some(true), None),
        &env_of(&[("MALLOC_TRIM_THRESHOLD_", "131072")]),
        CPU_ONLY,
    )
    .unwrap();
    let report = optimizer.report();
    assert_eq!(
        setting(&report, "malloc_thresholds").get("applied"),
        Some(&Json::Bool(false))
    );
    let Some(Json::Array(skipped)) = report.get("skipped") else {
        panic!("no skipped list")
    };
    assert!(
        skipped.iter().any(|s| s.get("setting") == Some(&Json::from("malloc_thresholds"))
            && matches!(s.get("reason"), Some(Json::Str(r)) if r.contains("MALLOC_TRIM_THRESHOLD_"))),
        "{report}"
    );
}

#[test]
fn environment_reaches_the_report_with_its_source() {
    let env = env_of(&[
        (ENV_CUDNN_BENCHMARK, "false"),
        (ENV_COMPILE_MODE, "max-autotune"),
        (ENV_CPU_OPTIMIZATION, "false"),
    ]);
    let optimizer = Optimizer::with_environment(&Config::default(), &env, CPU_ONLY).unwrap();
    assert_eq!(optimizer.compile_mode(), CompileMode::MaxAutotune);
    let report = optimizer.report();
    let benchmark = setting(&report, "cudnn_benchmark");
    assert_eq!(benchmark.get("source"), Some(&Json::from("environment")));
    assert_eq!(
        benchmark.get("variable"),
        Some(&Json::from(ENV_CUDNN_BENCHMARK))
    );
    let intra = setting(&report, "intra_op_threads");
    assert_eq!(intra.get("applied"), Some(&Json::Bool(false)));
    let compile = report.get("compile").unwrap();
    assert_eq!(compile.get("mode_source"), Some(&Json::from("environment")));
}

#[test]
fn malformed_environment_fails_creation_with_the_variable_named() {
    let env = env_of(&[(ENV_CUDNN_BENCHMARK, "sometimes")]);
    let err = Optimizer::with_environment(&Config::default(), &env, CPU_ONLY)
        .err()
        .expect("creation fails");
    assert_eq!(err.kind(), ErrorKind::Environment);
    assert!(err.to_string().contains(ENV_CUDNN_BENCHMARK), "{err}");
}

#[test]
fn unavailable_devices_are_errors() {
    for (request, kind) in [
        ("cuda", ErrorKind::UnsupportedDevice),
        ("cuda:3", ErrorKind::UnsupportedDevice),
        ("mps", ErrorKind::UnsupportedDevice),
    ] {
        let config = Config {
            device: Some(request.parse().unwrap()),
            ..Config::default()
        };
        let err = Optimizer::with_environment(&config, &env_of(&[]), CPU_ONLY)
            .err()
            .expect("creation fails");
        assert_eq!(err.kind(), kind, "{request}");
    }
    let two_gpus = Availability {
        cuda_devices: 2,
        mps: false,
    };
    let config = Config {
        device: Some("cuda:2".parse().unwrap()),
        ..Config::default()
    };
    let err = Optimizer::with_environment(&config, &env_of(&[]), two_gpus)
        .err()
        .expect("creation fails");
    assert_eq!(err.kind(), ErrorKind::DeviceNotFound);
}

#[test]
fn a_second_optimizer_with_other_interop_threads_is_graceful() {
    let make = |inter| {
        let config = Config {
            device: Some(DeviceRequest::Cpu),
            inter_op_threads: Some(inter),
            ..Config::default()
        };
        Optimizer::with_environment(&config, &env_of(&[]), CPU_ONLY).unwrap()
    };
    let first = make(1);
    let second = make(2);
    // Whichever call libtorch accepted first, the other is reported as skipped
    // with the value that stayed, never a crash.
    for optimizer in [&first, &second] {
        let report = optimizer.report();
        let inter = setting(&report, "inter_op_threads");
        let value = inter.get("value").cloned();
        if inter.get("applied") == Some(&Json::Bool(false)) {
            let Some(Json::Array(skipped)) = report.get("skipped") else {
                panic!()
            };
            assert!(skipped
                .iter()
                .any(|s| s.get("setting") == Some(&Json::from("inter_op_threads"))));
        } else {
            assert!(value.is_some());
        }
    }
}

#[test]
fn scopes_enable_inference_mode_and_exit_last_in_first_out() {
    let optimizer = std::sync::Arc::new(
        Optimizer::with_environment(&Config::default(), &env_of(&[]), CPU_ONLY).unwrap(),
    );
    assert!(!perfopt::scope::inference_mode_enabled().unwrap());
    let outer = InferenceScope::enter(optimizer.clone()).unwrap();
    assert!(perfopt::scope::inference_mode_enabled().unwrap());
    let inner = InferenceScope::enter(optimizer.clone()).unwrap();
    assert_eq!(inner.depth(), outer.depth() + 1);

    // Out of order: refused, and the scope stays usable.
    let (outer, err) = outer.exit().expect_err("outer cannot exit first");
    assert_eq!(err.kind(), ErrorKind::ScopeOrder);

    inner.exit().map_err(|(_, e)| e).unwrap();
    assert!(perfopt::scope::inference_mode_enabled().unwrap());
    outer.exit().map_err(|(_, e)| e).unwrap();
    assert!(!perfopt::scope::inference_mode_enabled().unwrap());
}

#[test]
fn a_scope_cannot_exit_on_another_thread() {
    let optimizer = std::sync::Arc::new(
        Optimizer::with_environment(&Config::default(), &env_of(&[]), CPU_ONLY).unwrap(),
    );
    let scope = InferenceScope::enter(optimizer).unwrap();
    let scope = std::thread::spawn(move || {
        let (scope, err) = scope.exit().expect_err("wrong thread");
        assert_eq!(err.kind(), ErrorKind::WrongThread);
        scope
    })
    .join()
    .unwrap();
    assert!(perfopt::scope::inference_mode_enabled().unwrap());
    scope.exit().map_err(|(_, e)| e).unwrap();
    assert!(!perfopt::scope::inference_mode_enabled().unwrap());
}
