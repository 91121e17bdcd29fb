//! Models through the Rust API: every fixture in every compile mode matches
//! PyTorch's own output; bad inputs fail with the model's message and leave
//! the model usable; reports say what was chosen.

mod common;

use common::*;
use perfopt::json::Json;
use perfopt::relative_error;
use perfopt::{CompileMode, ErrorKind, Model};

const MODES: [CompileMode; 4] = [
    CompileMode::None,
    CompileMode::Default,
    CompileMode::ReduceOverhead,
    CompileMode::MaxAutotune,
];

#[test]
fn every_fixture_matches_pytorch_in_every_mode() {
    let optimizer = cpu_optimizer();
    for name in NAMES {
        let fx = fixture(name);
        for mode in MODES {
            let model = Model::load(optimizer.clone(), &fx.path, Some(name)).unwrap();
            model.compile(Some(mode), Some(args(&fx.inputs))).unwrap();
            let outputs = model.run(clone_all(&fx.inputs)).unwrap();
            let error = relative_error(&outputs, &fx.outputs).unwrap();
            assert!(error <= 1e-3, "{name} in {mode}: relative error {error}");
            let report = model.report();
            assert_eq!(
                field(&report, &["compile", "requested_mode"]),
                &Json::from(mode.as_str())
            );
            assert_eq!(field(&report, &["calls"]), &Json::Int(1));
            assert_eq!(
                outputs[0].device(),
                tch::Device::Cpu,
                "outputs land on the host"
            );
        }
    }
}

#[test]
fn max_autotune_reports_every_candidate() {
    let fx = fixture("encoder");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model
        .compile(Some(CompileMode::MaxAutotune), Some(args(&fx.inputs)))
        .unwrap();
    let report = model.report();
    let Json::Array(candidates) = field(&report, &["compile", "candidates"]) else {
        panic!("no candidates in {report}")
    };
    // Each form at each thread count worth measuring (all, half, a quarter
    // and 1 of the optimizer's threads, those that differ).
    let all = tch::get_num_threads().max(1);
    let mut counts = vec![all, all / 2, all / 4, 1];
    counts.retain(|&n| n >= 1);
    counts.sort_unstable();
    counts.dedup();
    assert_eq!(
        candidates.len(),
        3 * counts.len(),
        "as loaded, frozen, frozen + optimize_for_inference on CPU, at {counts:?} threads"
    );
    for form in ["as loaded", "frozen", "frozen + optimize_for_inference"] {
        for n in &counts {
            let name = format!("{form} at {n} thread{}", if *n == 1 { "" } else { "s" });
            assert!(
                candidates
                    .iter()
                    .any(|c| c.get("name") == Some(&Json::Str(name.clone()))),
                "{name} in {candidates:?}"
            );
        }
    }
    let most_runs = candidates
        .iter()
        .filter_map(|c| c.get("runs"))
        .max_by_key(|r| match r {
            Json::Int(n) => *n,
            _ => 0,
        });
    for candidate in candidates {
        assert!(
            matches!(candidate.get("p50_ms"), Some(Json::Float(ms)) if *ms > 0.0),
            "{candidate}"
        );
        assert!(
            matches!(candidate.get("relative_error"), Some(Json::Float(_))),
            "{candidate}"
        );
        // Timed in interleaved rounds: every candidate gets the same number
        // of runs, at least three, unless it fell clearly behind.
        let stopped =
            matches!(candidate.get("note"), Some(Json::Str(n)) if n.starts_with("stopped"));
        assert!(stopped || candidate.get("runs") == most_runs, "{candidate}");
        assert!(
            matches!(candidate.get("runs"), Some(Json::Int(n)) if *n >= 3),
            "{candidate}"
        );
    }
    let Json::Str(why) = field(&report, &["compile", "why"]) else {
        panic!()
    };
    let measured = format!("fastest of {} measured candidates", 3 * counts.len());
    assert!(why.contains(&measured), "{why}");
    assert!(why.contains("of a 2000 ms budget"), "{why}");
    assert_eq!(field(&report, &["name"]), &Json::from("encoder"));
}

#[test]
fn max_autotune_short_of_budget_says_which_budget_would_do() {
    let fx = fixture("encoder");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model
        .set_options(perfopt::ModelOptions {
            tuning_budget_ms: 1,
            ..model.options()
        })
        .unwrap();
    model
        .compile(Some(CompileMode::MaxAutotune), Some(args(&fx.inputs)))
        .unwrap();
    let report = model.report();
    let Json::Str(why) = field(&report, &["compile", "why"]) else {
        panic!("{report}")
    };
    assert!(
        why.contains("the budget of 1 ms could not cover measuring two candidates")
            && why.contains("a budget of about")
            && why.contains("ms would (tuning_budget_ms; --tuning-budget)"),
        "{why}"
    );
    // The summary and the candidates' notes never disagree: a candidate
    // within tolerance was either compared or says why not.
    let Json::Array(candidates) = field(&report, &["compile", "candidates"]) else {
        panic!("{report}")
    };
    for candidate in candidates {
        let compared = matches!(candidate.get("runs"), Some(Json::Int(n)) if *n >= 3);
        let explained = matches!(candidate.get("note"), Some(Json::Str(_)));
        assert!(compared || explained, "{candidate}");
    }
    let outputs = model.run(clone_all(&fx.inputs)).unwrap();
    assert!(relative_error(&outputs, &fx.outputs).unwrap() <= 1e-5);
}

#[test]
fn max_autotune_without_inputs_tunes_on_the_first_run() {
    let fx = fixture("two_inputs");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model.compile(Some(CompileMode::MaxAutotune), None).unwrap();
    let Json::Str(executor) = field(&model.report(), &["compile", "executor"]).clone() else {
        panic!()
    };
    assert!(executor.starts_with("pending"), "{executor}");
    let outputs = model.run(clone_all(&fx.inputs)).unwrap();
    assert!(relative_error(&outputs, &fx.outputs).unwrap() <= 1e-3);
    let report = model.report();
    assert_eq!(
        field(&report, &["compile", "executor"]),
        &Json::from("eager")
    );
    let Json::Array(notes) = field(&report, &["compile", "notes"]) else {
        panic!()
    };
    assert!(notes
        .iter()
        .any(|n| n == &Json::from("tuned on the first run's inputs")));
}

#[test]
fn reduce_overhead_on_cpu_is_default_and_says_so() {
    let fx = fixture("vocoder");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model
        .compile(Some(CompileMode::ReduceOverhead), None)
        .unwrap();
    let report = model.report();
    let Json::Str(why) = field(&report, &["compile", "why"]) else {
        panic!()
    };
    assert!(why.contains("need CUDA"), "{why}");
    assert_eq!(
        field(&report, &["compile", "executor"]),
        &Json::from("eager")
    );
}

#[test]
fn the_optimizers_mode_applies_when_none_is_named() {
    let fx = fixture("tokens");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model.compile(None, None).unwrap();
    let report = model.report();
    // The optimizer's default: reduce-overhead, from its configuration.
    assert_eq!(
        field(&report, &["compile", "requested_mode"]),
        &Json::from("reduce-overhead")
    );
    assert_eq!(
        field(&report, &["compile", "requested_source"]),
        &Json::from("optimizer configuration")
    );
}

#[test]
fn bad_inputs_fail_with_the_models_message_and_the_model_stays_usable() {
    let optimizer = cpu_optimizer();
    let two = fixture("two_inputs");
    let model = Model::load(optimizer.clone(), &two.path, None).unwrap();
    model.compile(Some(CompileMode::Default), None).unwrap();
    let err = model.run(vec![two.inputs[0].copy()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("takes 2 input(s), got 1"), "{err}");
    // Wrong feature size: the model's own message comes through.
    let err = model
        .run(vec![
            tch::Tensor::zeros([2, 5], (tch::Kind::Float, tch::Device::Cpu)),
            two.inputs[1].copy(),
        ])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Torch);
    assert!(err.to_string().contains("two_inputs"), "{err}");
    assert!(err.to_string().contains("mat1 and mat2"), "{err}");
    let ok = model.run(clone_all(&two.inputs)).unwrap();
    assert!(relative_error(&ok, &two.outputs).unwrap() <= 1e-3);
    let report = model.report();
    assert_eq!(field(&report, &["failed_calls"]), &Json::Int(2));
    assert_eq!(field(&report, &["calls"]), &Json::Int(1));

    // A float tensor where the embedding wants int64 ids.
    let tokens = fixture("tokens");
    let model = Model::load(optimizer, &tokens.path, None).unwrap();
    let err = model
        .run(vec![tch::Tensor::zeros(
            [2, 12],
            (tch::Kind::Float, tch::Device::Cpu),
        )])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Torch);
    assert!(model.run(clone_all(&tokens.inputs)).is_ok());
}

#[test]
fn load_errors_have_their_own_kinds_and_name_the_path() {
    let optimizer = cpu_optimizer();
    let dir = fixtures_dir();
    let missing = dir.join("missing.pt");
    let err = Model::load(optimizer.clone(), missing.to_str().unwrap(), None)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::FileNotFound);
    assert!(err.to_string().contains("missing.pt"));

    let text = dir.join("manifest.json");
    let err = Model::load(optimizer.clone(), text.to_str().unwrap(), None)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::LoadFailed);
    assert!(err.to_string().contains("manifest.json"));

    let bytes = std::fs::read(fixture("encoder").path).unwrap();
    let truncated = dir.join("truncated.pt");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(optimizer.clone(), truncated.to_str().unwrap(), None)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::ModelCorrupt);
    assert!(err.to_string().contains("truncated.pt"));

    // A zip archive that is not TorchScript: libtorch's reason, our kind.
    let npy_zip = dir.join("not_torchscript.pt");
    let mut fake = b"PK\x03\x04junk".to_vec();
    fake.extend_from_slice(b"PK\x05\x06");
    fake.extend_from_slice(&[0u8; 18]);
    std::fs::write(&npy_zip, fake).unwrap();
    let err = Model::load(optimizer, npy_zip.to_str().unwrap(), None)
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::LoadFailed);
    assert!(err.to_string().contains("not_torchscript.pt"), "{err}");
}

#[test]
fn warmup_reports_first_call_and_steady_state() {
    let fx = fixture("speaker");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model.compile(Some(CompileMode::Default), None).unwrap();
    let report = Json::parse(&model.warmup(args(&fx.inputs), 5).unwrap()).unwrap();
    assert!(matches!(report.get("first_call_ms"), Some(Json::Float(ms)) if *ms > 0.0));
    assert_eq!(field(&report, &["steady", "samples"]), &Json::Int(4));
    assert!(field(&report, &["steady", "p99_ms"]) != &Json::Null);
    assert_eq!(field(&report, &["success"]), &Json::Bool(true));
    assert_eq!(
        field(&model.report(), &["calls"]),
        &Json::Int(0),
        "warm-up is not counted"
    );
    assert_eq!(
        model.warmup(args(&fx.inputs), 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn one_model_runs_from_many_threads() {
    let fx = fixture("encoder");
    let model = std::sync::Arc::new(Model::load(cpu_optimizer(), &fx.path, None).unwrap());
    model
        .compile(Some(CompileMode::Default), Some(args(&fx.inputs)))
        .unwrap();
    let serial = model.run(clone_all(&fx.inputs)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let model = model.clone();
            let inputs: Vec<Vec<f32>> = fx
                .inputs
                .iter()
                .map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
                .collect();
            let shapes: Vec<Vec<i64>> = fx.inputs.iter().map(|t| t.size()).collect();
            std::thread::spawn(move || {
                let mut last = Vec::new();
                for _ in 0..25 {
                    let tensors = inputs
                        .iter()
                        .zip(&shapes)
                        .map(|(data, shape)| {
                            tch::Tensor::from_slice(data).reshape(shape.as_slice())
                        })
                        .collect();
                    last = model.run(tensors).unwrap();
                }
                last
            })
        })
        .collect();
    for thread in threads {
        let outputs = thread.join().unwrap();
        assert_eq!(relative_error(&outputs, &serial).unwrap(), 0.0);
    }
    assert_eq!(field(&model.report(), &["calls"]), &Json::Int(101));
}

#[test]
fn recommend_batch_measures_and_run_batched_matches_one_run() {
    let fx = fixture("encoder");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    model.compile(Some(CompileMode::Default), None).unwrap();
    let sample = vec![fx.inputs[0].narrow(0, 0, 1)];
    let rec = model
        .recommend_batch(perfopt::value::tensor_args(sample))
        .unwrap();
    assert!(rec.batch >= 1);
    assert!(!rec.throughput_points.is_empty());
    let json = rec.to_json();
    assert!(matches!(json.get("reason"), Some(Json::Str(r)) if !r.is_empty()));
    assert_eq!(
        field(&model.report(), &["batching", "recommended"]),
        &Json::Int(rec.batch)
    );

    // Ten samples in chunks of three give what one run of ten gives.
    let big = fx.inputs[0].repeat([5, 1, 1]);
    let whole = model.run(vec![big.copy()]).unwrap();
    let chunked = model.run_batched(args(&[big.copy()]), 3).unwrap();
    assert_eq!(chunked[0].size(), whole[0].size());
    assert!(relative_error(&chunked, &whole).unwrap() <= 1e-5);
    let automatic = model.run_batched(args(&[big]), 0).unwrap();
    assert!(relative_error(&automatic, &whole).unwrap() <= 1e-5);
    assert_eq!(
        field(&model.report(), &["batching", "batched_calls"]),
        &Json::Int(2)
    );

    let two = fixture("two_inputs");
    let model = Model::load(cpu_optimizer(), &two.path, None).unwrap();
    let err = model.recommend_batch(args(&two.inputs)).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument,
        "batch 2 is not a sample"
    );
    let mismatched = vec![two.inputs[0].copy(), two.inputs[1].narrow(0, 0, 1)];
    let err = model
        .run_batched(perfopt::value::tensor_args(mismatched), 1)
        .unwrap_err();
    assert!(err.to_string().contains("same batch size"), "{err}");
    assert_eq!(
        model.run_batched(args(&two.inputs), -1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let outputs = model.run_batched(args(&two.inputs), 1).unwrap();
    assert!(
        relative_error(&outputs, &two.outputs).unwrap() <= 1e-3,
        "tuple outputs concatenated"
    );
}
