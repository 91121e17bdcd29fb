//! Fixture models for the integration tests, made on first use by
//! tests/fixtures/make_fixtures.py with the venv's PyTorch.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use perfopt::json::Json;
use perfopt::{Config, DeviceRequest, Optimizer, Value};

pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        if !dir.join(".version-6").exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let python = std::env::var("PERFOPT_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join(".venv/bin/python"));
            let status = Command::new(&python)
                .arg(root.join("tests/fixtures/make_fixtures.py"))
                .arg(&dir)
                .status()
                .unwrap_or_else(|e| {
                    panic!(
                        "running {} (set PERFOPT_PYTHON, or run `make setup`): {e}",
                        python.display()
                    )
                });
            assert!(status.success(), "make_fixtures.py failed");
        }
        dir
    })
}

pub struct Fixture {
    pub name: String,
    pub path: String,
    pub inputs: Vec<tch::Tensor>,
    pub outputs: Vec<tch::Tensor>,
}

pub const NAMES: [&str; 5] = ["vocoder", "encoder", "speaker", "two_inputs", "tokens"];

pub fn fixture(name: &str) -> Fixture {
    let dir = fixtures_dir();
    let count = |kind: &str| {
        (0..)
            .take_while(|i| dir.join(format!("{name}.{kind}{i}.npy")).exists())
            .count()
    };
    let read = |kind: &str| {
        (0..count(kind))
            .map(|i| tch::Tensor::read_npy(dir.join(format!("{name}.{kind}{i}.npy"))).unwrap())
            .collect()
    };
    Fixture {
        name: name.to_string(),
        path: dir
            .join(format!("{name}.pt"))
            .to_string_lossy()
            .into_owned(),
        inputs: read("input"),
        outputs: read("output"),
    }
}

pub fn clone_all(tensors: &[tch::Tensor]) -> Vec<tch::Tensor> {
    tensors.iter().map(|t| t.copy()).collect()
}

pub fn cpu_optimizer() -> Arc<Optimizer> {
    let config = Config {
        device: Some(DeviceRequest::Cpu),
        read_environment: false,
        ..Config::default()
    };
    Arc::new(Optimizer::new(&config).unwrap())
}

pub fn field<'a>(json: &'a Json, path: &[&str]) -> &'a Json {
    path.iter().fold(json, |j, key| {
        j.get(key).unwrap_or_else(|| panic!("no {key} in {j}"))
    })
}

/// Tensors as arguments (copies sharing nothing with the fixture).
pub fn args(tensors: &[tch::Tensor]) -> Vec<Value> {
    perfopt::value::tensor_args(clone_all(tensors))
}

/// The AOTInductor package fixtures (tests/fixtures/make_packages.py), made
/// once and kept by content hash under build/packages.
pub fn packages_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var("PERFOPT_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let output = Command::new(&python)
            .arg(root.join("tests/fixtures/make_packages.py"))
            .arg(root.join("build/packages"))
            .output()
            .unwrap_or_else(|e| panic!("running make_packages.py with {}: {e}", python.display()));
        assert!(
            output.status.success(),
            "make_packages.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// A package fixture: the .pt2 path, its example inputs and eager outputs.
pub fn package(name: &str) -> Fixture {
    let dir = packages_dir();
    let read = |kind: &str| -> Vec<tch::Tensor> {
        (0..)
            .map(|i| dir.join(format!("{name}.{kind}{i}.npy")))
            .take_while(|p| p.exists())
            .map(|p| tch::Tensor::read_npy(p).unwrap())
            .collect()
    };
    Fixture {
        name: name.to_string(),
        path: dir
            .join(format!("{name}.pt2"))
            .to_string_lossy()
            .into_owned(),
        inputs: read("input"),
        outputs: read("output"),
    }
}
