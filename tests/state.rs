//! Models that keep state (issue 12's streaming model, and the safety of
//! issue 10): which models write their attributes, that such a model runs
//! one call at a time (no lost updates, no crash, warm-up and compile on
//! other threads leave a stream exact), and that recompiling carries the
//! state over to the new form.

mod common;

use std::sync::Arc;

use common::*;
use perfopt::{relative_error, CompileMode, Model, Value};

fn read(name: &str) -> tch::Tensor {
    tch::Tensor::read_npy(fixtures_dir().join(name)).unwrap()
}

fn load(name: &str) -> Model {
    let path = fixtures_dir().join(format!("{name}.pt"));
    Model::load(cpu_optimizer(), &path.to_string_lossy(), None).unwrap()
}

fn chunk(i: usize) -> Vec<Value> {
    vec![
        Value::Tensor(read(&format!("stateful.chunk{i}.npy"))),
        Value::Int(16000),
    ]
}

fn expect_chunk(model: &Model, i: usize) {
    let output = model.run_args(chunk(i)).unwrap();
    let expected = read(&format!("stateful.expected{i}.npy"));
    let error = relative_error(&output, &[expected]).unwrap();
    assert!(error <= 1e-5, "chunk {i}: error {error}");
}

/// forward() calls so far, from the model's own counter.
fn calls(model: &Model) -> i64 {
    let Value::Tuple(items) = model
        .call("encode", vec![Value::Tensor(read("stateful.chunk0.npy"))])
        .unwrap()
    else {
        panic!("encode returns a tuple")
    };
    match items[1] {
        Value::Int(n) => n,
        ref other => panic!("calls is {other:?}"),
    }
}

#[test]
fn models_that_write_attributes_are_found() {
    for (name, writes) in [
        ("stateful", true),
        ("writes_buffer", true),
        ("writes_through_list", true),
        ("writes_running_stats", true),
        ("writes_through_dict_get", true),
        ("writes_shared_views", true),
        ("reads_when_training_and_flag", false),
        ("reads_buffers", false),
        ("reads_batchnorm", false),
        ("reads_transformer", false),
        ("kinds", false),
        ("lstm_state", false),
    ] {
        assert_eq!(load(name).keeps_state(), writes, "{name}");
    }
}

#[test]
fn a_model_that_keeps_state_runs_one_call_at_a_time() {
    let model = Arc::new(load("stateful"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let model = model.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    model.run_args(chunk(0)).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(calls(&model), 800, "no update is lost");
}

#[test]
fn warmup_and_compile_on_other_threads_leave_a_stream_exact() {
    let model = Arc::new(load("stateful"));
    let busy = {
        let model = model.clone();
        std::thread::spawn(move || {
            for round in 0..6 {
                model.warmup(chunk(3), 2).unwrap();
                let mode = [CompileMode::Default, CompileMode::None][round % 2];
                model.compile(Some(mode), Some(chunk(1))).unwrap();
            }
        })
    };
    for i in 0..20 {
        expect_chunk(&model, i);
    }
    busy.join().unwrap();
    assert_eq!(calls(&model), 20);
}

#[test]
fn recompiling_carries_the_state_over() {
    let model = load("stateful");
    model
        .compile(Some(CompileMode::Default), Some(chunk(0)))
        .unwrap();
    for i in 0..7 {
        expect_chunk(&model, i);
    }
    for (i, mode) in [
        CompileMode::None,
        CompileMode::Default,
        CompileMode::MaxAutotune,
        CompileMode::None,
    ]
    .into_iter()
    .enumerate()
    {
        model.compile(Some(mode), Some(chunk(2))).unwrap();
        expect_chunk(&model, 7 + i);
    }
    assert_eq!(calls(&model), 11);
}

/// State tensors that are views of one buffer stay views of it: restored in
/// place after a warm-up, and not frozen apart (a frozen copy would give each
/// view its own memory; that form is refused and the model runs as loaded).
#[test]
fn state_that_shares_memory_is_kept_shared() {
    let x = || {
        vec![Value::Tensor(tch::Tensor::ones(
            [4],
            (tch::Kind::Float, tch::Device::Cpu),
        ))]
    };
    let reference = load("writes_shared_views");
    let expected: Vec<tch::Tensor> = (0..5)
        .map(|_| reference.run_args(x()).unwrap().remove(0))
        .collect();
    let model = load("writes_shared_views");
    let mut got = vec![model.run_args(x()).unwrap().remove(0)];
    model.warmup(x(), 3).unwrap();
    got.push(model.run_args(x()).unwrap().remove(0));
    model
        .compile(Some(CompileMode::Default), Some(x()))
        .unwrap();
    let report = model.compile_report().to_string();
    assert!(report.contains("share memory"), "{report}");
    got.push(model.run_args(x()).unwrap().remove(0));
    model.compile(Some(CompileMode::None), None).unwrap();
    got.push(model.run_args(x()).unwrap().remove(0));
    got.push(model.run_args(x()).unwrap().remove(0));
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            relative_error(&[g.shallow_clone()], &[e.shallow_clone()]).unwrap() <= 1e-6,
            "run {i}"
        );
    }
}
