//! Mutation fuzzing on stable Rust: configuration and environment parsing,
//! JSON from files others made (package metadata, tuning-cache entries), and
//! model loading from mutated TorchScript archives and AOTInductor packages
//! seeded with the fixtures. Deterministic (seeded), bounded by PERFOPT_FUZZ_SECONDS per
//! target (default 5; CI sets 60; `make fuzz` longer). A crash fails the
//! process, and so the test; every case must come back as Ok or a perfopt error.
//!
//! Not coverage-guided: cargo-fuzz needs a nightly toolchain, which these
//! machines cannot fetch. Mutations are chosen to hit the archive's
//! structure (headers, the central directory, pickled data) rather than
//! uniformly.

mod common;

use std::ffi::CString;
use std::time::{Duration, Instant};

use common::*;
use perfopt::config::{parse_bool, CompileMode, Config};
use perfopt::device::DeviceRequest;
use perfopt::ffi::optimizer::{perfopt_optimizer_free, perfopt_optimizer_new};
use perfopt::ffi::status::perfopt_status;
use perfopt::ffi::types::perfopt_config;
use perfopt::Model;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn budget() -> Duration {
    let seconds = std::env::var("PERFOPT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
}

const WORDS: &[&str] = &[
    "auto",
    "cpu",
    "cuda",
    "cuda:0",
    "cuda:1",
    "mps",
    "true",
    "false",
    "1",
    "0",
    "yes",
    "no",
    "on",
    "off",
    "default",
    "none",
    "reduce-overhead",
    "max-autotune",
    ":",
    "-",
    "x",
    " ",
    "\t",
    "é",
    "\u{0}",
    "99999999999999999999",
];

fn random_text(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(4) {
        match rng.below(3) {
            0 => text.push_str(WORDS[rng.below(WORDS.len())]),
            1 => text.push(char::from_u32(rng.below(0x250) as u32).unwrap_or('?')),
            _ => text.push((b' ' + rng.below(95) as u8) as char),
        }
    }
    text
}

#[test]
fn fuzz_config_and_environment_parsing() {
    let mut rng = Rng(0x5eed_cafe);
    let started = Instant::now();
    let (mut cases, mut accepted) = (0u64, 0u64);
    while started.elapsed() < budget() {
        cases += 1;
        let text = random_text(&mut rng);
        let _ = text.parse::<DeviceRequest>();
        let _ = text.parse::<CompileMode>();
        let _ = parse_bool("TRANSLATOR_TORCH_COMPILE", &text);
        // The whole resolution, with every variable set to fuzz.
        // Each variable unset, a known word, or noise, so that accepted and
        // rejected paths are both exercised.
        let values: Vec<Option<String>> = (0..4)
            .map(|_| match rng.below(3) {
                0 => None,
                1 => Some(WORDS[rng.below(WORDS.len())].to_string()),
                _ => Some(random_text(&mut rng)),
            })
            .collect();
        let env = move |name: &str| {
            perfopt::config::TRANSLATOR_VARIABLES
                .iter()
                .position(|v| *v == name)
                .and_then(|i| values[i].clone())
        };
        if Config::default().resolve(&env).is_ok() {
            accepted += 1;
        }
        // And the C struct, with random fields, every few cases (creating an
        // optimizer applies settings: slower).
        if cases % 16 == 0 {
            let device = CString::new(random_text(&mut rng).replace('\0', "")).unwrap();
            let mut config = perfopt_config {
                device: if rng.below(4) == 0 {
                    std::ptr::null()
                } else {
                    device.as_ptr()
                },
                cudnn_benchmark: rng.below(5) as i32 - 2,
                tf32: rng.below(5) as i32 - 2,
                cpu_optimization: rng.below(5) as i32 - 2,
                malloc_tuning: rng.below(5) as i32 - 2,
                intra_op_threads: rng.below(6) as i32 - 2,
                read_environment: rng.below(3) as i32,
                ..perfopt_config::default()
            };
            if rng.below(8) == 0 {
                config.struct_size = rng.next() as u32;
            }
            let mut out = std::ptr::null_mut();
            let status = perfopt_optimizer_new(&config, &mut out);
            assert!(status == perfopt_status::PERFOPT_OK || out.is_null());
            perfopt_optimizer_free(out);
        }
    }
    println!("config fuzz: {cases} cases, {accepted} accepted, 0 crashes");
    assert!(cases > 100);
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len().max(1);
        match rng.below(7) {
            // Flip bits anywhere.
            0 => {
                let i = rng.below(len);
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Overwrite a run with random bytes.
            1 => {
                let i = rng.below(len);
                for j in i..(i + 1 + rng.below(16)).min(bytes.len()) {
                    bytes[j] = rng.next() as u8;
                }
            }
            // Truncate, keeping the end-of-directory record search honest sometimes.
            2 => bytes.truncate(rng.below(len)),
            // Corrupt a zip structure: near a "PK" signature.
            3 => {
                let sigs: Vec<usize> = bytes
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"PK")
                    .map(|(i, _)| i)
                    .collect();
                if !sigs.is_empty() {
                    let at = sigs[rng.below(sigs.len())] + 2 + rng.below(40);
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
            }
            // Insert bytes.
            4 => {
                let i = rng.below(len);
                let insert: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                bytes.splice(i.min(bytes.len())..i.min(bytes.len()), insert);
            }
            // Duplicate a chunk.
            5 => {
                let i = rng.below(len);
                let end = (i + rng.below(256)).min(bytes.len());
                let chunk = bytes[i.min(end)..end].to_vec();
                bytes.splice(end..end, chunk);
            }
            // Corrupt the pickled data or the code section.
            _ => {
                let needle: &[u8] = if rng.below(2) == 0 {
                    b"data.pkl"
                } else {
                    b"code/"
                };
                if let Some(pos) = bytes.windows(needle.len()).position(|w| w == needle) {
                    let at = pos + needle.len() + rng.below(200);
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
            }
        }
    }
    bytes
}

#[test]
fn fuzz_model_load_with_mutated_archives() {
    let optimizer = cpu_optimizer();
    let mut seeds: Vec<(Vec<u8>, Vec<tch::Tensor>)> = NAMES
        .iter()
        .map(|name| {
            let fx = fixture(name);
            (std::fs::read(&fx.path).unwrap(), fx.inputs)
        })
        .collect();
    // AOTInductor packages too: their metadata, wrapper text and library are
    // read by perfopt before libtorch sees them.
    for name in ["two_inputs", "vocoder"] {
        let dir = packages_dir();
        let inputs = (0..)
            .map(|i| dir.join(format!("{name}.input{i}.npy")))
            .take_while(|p| p.exists())
            .map(|p| tch::Tensor::read_npy(p).unwrap())
            .collect();
        seeds.push((
            std::fs::read(dir.join(format!("{name}.pt2"))).unwrap(),
            inputs,
        ));
    }
    let path = fixtures_dir().join(format!("fuzz-{}.pt", std::process::id()));
    let mut rng = Rng(0xfeed_beef);
    let started = Instant::now();
    let (mut cases, mut loaded, mut ran) = (0u64, 0u64, 0u64);
    let mut kinds = std::collections::BTreeMap::new();
    while started.elapsed() < budget() {
        cases += 1;
        let (seed, inputs) = &seeds[rng.below(seeds.len())];
        std::fs::write(&path, mutate(&mut rng, seed)).unwrap();
        match Model::load(optimizer.clone(), path.to_str().unwrap(), None) {
            Ok(model) => {
                loaded += 1;
                if model.run(clone_all(inputs)).is_ok() {
                    ran += 1;
                }
            }
            Err(err) => *kinds.entry(format!("{:?}", err.kind())).or_insert(0u64) += 1,
        }
    }
    let _ = std::fs::remove_file(&path);
    println!("load fuzz: {cases} mutated archives, {loaded} loaded, {ran} ran, errors {kinds:?}, 0 crashes");
    assert!(cases > 10);
}

#[test]
fn fuzz_json_from_files() {
    // What perfopt reads as JSON: package metadata, tuning-cache entries,
    // the shim's method schemas; mutated, each must parse or fail, never crash.
    let seeds: Vec<Vec<u8>> = vec![
        br#"{"AOTI_DEVICE_KEY": "cpu", "inputs": [{"name": "mel", "dtype": "float32", "shape": [-1, 80, 32]}]}"#
            .to_vec(),
        br#"{"chosen":"frozen","label":"frozen","why":"fastest","graph_tf32":null,"candidates":[{"name":"as loaded","p50_ms":0.5,"runs":10,"relative_error":0.0,"within_tolerance":true}],"format":2,"model_blake3":"ab","module_blake3":null}"#
            .to_vec(),
        "[1e308, -0.0, \"\\ud83d\\ude00\", {\"a\": {\"a\": [true, false, null]}}, 18446744073709551615]"
            .as_bytes()
            .to_vec(),
    ];
    let mut rng = Rng(0x5eed_0f15);
    let started = Instant::now();
    let (mut cases, mut parsed) = (0u64, 0u64);
    while started.elapsed() < budget() {
        cases += 1;
        let seed = &seeds[rng.below(seeds.len())];
        let bytes = mutate(&mut rng, seed);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(value) = perfopt::json::Json::parse(&text) {
            parsed += 1;
            // What it read writes back as JSON it reads again.
            assert!(
                perfopt::json::Json::parse(&value.to_string()).is_ok(),
                "{text}"
            );
        }
    }
    println!("json fuzz: {cases} mutated texts, {parsed} parsed, 0 crashes");
    assert!(cases > 100);
}
