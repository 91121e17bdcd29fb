//! Real models as they are (issue 12) and outputs that own their memory
//! (issue 11), through the Rust API: arguments of every kind, non-tensor
//! results, named methods, a stateful streaming model in every compile mode,
//! batch dimensions other than 0.

mod common;

use common::*;
use perfopt::json::Json;
use perfopt::{relative_error, BatchDims, CompileMode, ErrorKind, Model, Value};

const MODES: [CompileMode; 4] = [
    CompileMode::None,
    CompileMode::Default,
    CompileMode::ReduceOverhead,
    CompileMode::MaxAutotune,
];

fn read(name: &str) -> tch::Tensor {
    tch::Tensor::read_npy(fixtures_dir().join(name)).unwrap()
}

fn scripted(name: &str) -> String {
    fixtures_dir()
        .join(format!("{name}.pt"))
        .to_string_lossy()
        .into_owned()
}

fn chunk(i: usize) -> Vec<Value> {
    vec![
        Value::Tensor(read(&format!("stateful.chunk{i}.npy"))),
        Value::Int(16000),
    ]
}

/// The streaming model gives PyTorch's sequence of outputs in every compile
/// mode, compiled with warm-up inputs (which must not advance its state),
/// with no reset in between; and again after reset_states().
#[test]
fn a_stateful_model_streams_as_pytorch_in_every_mode() {
    for mode in MODES {
        let model = Model::load(cpu_optimizer(), &scripted("stateful"), None).unwrap();
        model.compile(Some(mode), Some(chunk(0))).unwrap();
        for round in 0..2 {
            for i in 0..20 {
                let output = model.run_args(chunk(i)).unwrap();
                let expected = read(&format!("stateful.expected{i}.npy"));
                let error = relative_error(&output, &[expected]).unwrap();
                assert!(
                    error <= 1e-5,
                    "{mode}, round {round}, chunk {i}: error {error}"
                );
            }
            model.call("reset_states", vec![]).unwrap();
        }
        let notes = model.compile_report();
        assert!(notes.to_string().contains("reset_states"), "{notes}");
    }
}

#[test]
fn warmup_leaves_the_state_as_found() {
    let model = Model::load(cpu_optimizer(), &scripted("stateful"), None).unwrap();
    model.run_args(chunk(0)).unwrap();
    model.warmup(chunk(5), 7).unwrap();
    let second = model.run_args(chunk(1)).unwrap();
    let expected = read("stateful.expected1.npy");
    assert!(relative_error(&second, &[expected]).unwrap() <= 1e-5);
}

#[test]
fn methods_are_listed_and_called_with_mixed_results() {
    let model = Model::load(cpu_optimizer(), &scripted("stateful"), None).unwrap();
    let names: Vec<String> = model.methods().into_iter().map(|m| m.name).collect();
    for name in ["forward", "reset_states", "encode"] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
    }
    let forward = model
        .methods()
        .into_iter()
        .find(|m| m.name == "forward")
        .unwrap();
    assert_eq!(forward.arguments[1].kind, perfopt::TypeKind::Int);
    model.run_args(chunk(0)).unwrap();
    let Value::Tuple(items) = model
        .call("encode", vec![Value::Tensor(read("stateful.chunk0.npy"))])
        .unwrap()
    else {
        panic!("encode returns a tuple")
    };
    assert!(matches!(items[1], Value::Int(1)), "{items:?}");
    let err = model.call("nope", vec![]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("reset_states"), "{err}");
    // The schema names the argument and the type it wants.
    let err = model
        .run_args(vec![
            Value::Tensor(read("stateful.chunk0.npy")),
            Value::Str("16k".into()),
        ])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("`sr`") && err.to_string().contains("int"),
        "{err}"
    );
    // The report lists the methods with their schemas.
    let report = model.report().to_string();
    assert!(report.contains("reset_states"), "{report}");
}

#[test]
fn every_argument_kind_goes_in_and_comes_back() {
    let model = Model::load(cpu_optimizer(), &scripted("kinds"), None).unwrap();
    let x = read("kinds.x.npy");
    let ones = || {
        Value::Tensor(tch::Tensor::ones(
            [2, 3],
            (tch::Kind::Float, tch::Device::Cpu),
        ))
    };
    let args = vec![
        Value::Tensor(x),
        Value::Int(3),
        Value::Int(0), // an int where the schema wants a float: widened, then...
        Value::Bool(true),
        Value::Str("vad".into()),
        Value::Tensor(tch::Tensor::full(
            [2, 3],
            2.0,
            (tch::Kind::Float, tch::Device::Cpu),
        )),
        Value::List(vec![ones(), ones()]),
        Value::List(vec![Value::Int(1), Value::Int(2)]),
        Value::List(vec![Value::Int(2), Value::Double(0.25)]), // a list where a tuple is wanted
    ];
    let mut args = args;
    args[2] = Value::Double(0.5);
    let Value::Tuple(result) = model.call("forward", args).unwrap() else {
        panic!("a tuple")
    };
    let Value::Tensor(y) = &result[0] else {
        panic!()
    };
    assert!(relative_error(&[y.shallow_clone()], &[read("kinds.y.npy")]).unwrap() <= 1e-6);
    assert!(matches!(result[1], Value::Int(5)));
    assert!(matches!(result[2], Value::Bool(false)));
    assert!(matches!(&result[3], Value::Str(s) if s == "vad!"));
    assert!(matches!(&result[4], Value::List(d) if d.len() == 2 && matches!(d[1], Value::Int(4))));
    // None where an Optional is wanted.
    let args = vec![
        Value::Tensor(read("kinds.x.npy")),
        Value::Int(3),
        Value::Int(1),
        Value::Bool(false),
        Value::Str(String::new()),
        Value::None,
        Value::List(vec![]),
        Value::List(vec![]),
        Value::Tuple(vec![Value::Int(0), Value::Double(0.0)]),
    ];
    model.call("forward", args).unwrap();
    // run() refuses a result that is not tensors, saying what it was.
    let err = Model::load(cpu_optimizer(), &scripted("returns_dict"), None)
        .unwrap()
        .run(vec![read("kinds.x.npy")])
        .unwrap_err();
    assert!(err.to_string().contains("Dict[str, Tensor]"), "{err}");
    assert!(!err.to_string().contains("rejected its inputs"), "{err}");
}

/// Outputs never share memory with an input or a parameter.
#[test]
fn outputs_own_their_memory() {
    let optimizer = cpu_optimizer();
    let model = Model::load(optimizer.clone(), &scripted("aliasing"), None).unwrap();
    // Outputs are inference tensors: a Rust caller writes them in inference mode.
    let _scope = perfopt::InferenceScope::enter(optimizer).unwrap();
    for mode in MODES {
        model.compile(Some(mode), None).unwrap();
        for which in 0..3 {
            let input = tch::Tensor::ones([2, 3], (tch::Kind::Float, tch::Device::Cpu));
            let outputs = model
                .run_args(vec![
                    Value::Tensor(input.shallow_clone()),
                    Value::Int(which),
                ])
                .unwrap();
            let output = &outputs[0];
            let before = output.copy();
            // The caller reuses its input; the model's weight is not handed out.
            let _ = input.shallow_clone().fill_(7.0);
            let _ = output.shallow_clone().fill_(-1.0);
            let again = model
                .run_args(vec![
                    Value::Tensor(tch::Tensor::ones(
                        [2, 3],
                        (tch::Kind::Float, tch::Device::Cpu),
                    )),
                    Value::Int(which),
                ])
                .unwrap();
            assert!(
                relative_error(&again, &[before]).unwrap() == 0.0,
                "{mode}, which {which}: the output shared memory"
            );
        }
    }
}

#[test]
fn batches_along_other_dimensions_and_unbatched_inputs() {
    let model = Model::load(cpu_optimizer(), &scripted("lstm_state"), None).unwrap();
    let inputs: Vec<tch::Tensor> = (0..4)
        .map(|i| read(&format!("lstm_state.input{i}.npy")))
        .collect();
    let expected: Vec<tch::Tensor> = (0..3)
        .map(|i| read(&format!("lstm_state.output{i}.npy")))
        .collect();
    // Dimension 0 everywhere cannot work: h and c have 2 there, x has 5.
    let err = model.run_batched(args(&inputs), 2).unwrap_err();
    assert!(err.to_string().contains("same batch size"), "{err}");
    model
        .set_batch_dims(BatchDims {
            inputs: vec![Some(0), Some(1), Some(1), None],
            outputs: vec![0, 1, 1],
        })
        .unwrap();
    for chunk in [1, 2, 5, 0] {
        let outputs = model.run_batched(args(&inputs), chunk).unwrap();
        let error = relative_error(&outputs, &expected).unwrap();
        assert!(error <= 1e-5, "chunks of {chunk}: error {error}");
    }
    let sample: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| match i {
            0 => Value::Tensor(t.narrow(0, 0, 1)),
            1 | 2 => Value::Tensor(t.narrow(1, 0, 1)),
            _ => Value::Tensor(t.copy()),
        })
        .collect();
    let rec = model.recommend_batch(sample).unwrap();
    assert!(rec.batch >= 1, "{}", rec.to_json());
    // Outputs whose batch is not where the model's dims say are refused.
    model
        .set_batch_dims(BatchDims {
            inputs: vec![Some(0), Some(1), Some(1), None],
            outputs: vec![0, 0, 0],
        })
        .unwrap();
    let err = model.run_batched(args(&inputs), 2).unwrap_err();
    assert!(err.to_string().contains("output 1"), "{err}");
    // Even chunks whose size coincides with another dimension (h's 2 layers,
    // chunks of 2) still show it: the last chunk is split.
    let four: Vec<tch::Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| match i {
            0 => t.narrow(0, 0, 4),
            1 | 2 => t.narrow(1, 0, 4),
            _ => t.shallow_clone(),
        })
        .collect();
    let err = model.run_batched(args(&four), 2).unwrap_err();
    assert!(err.to_string().contains("output 1"), "{err}");
    // An empty batch runs once, as run() would.
    let empty = BatchDims::default();
    let two = fixture("two_inputs");
    let model = Model::load(cpu_optimizer(), &two.path, None).unwrap();
    model.set_batch_dims(empty).unwrap();
    let zero: Vec<tch::Tensor> = two.inputs.iter().map(|t| t.narrow(0, 0, 0)).collect();
    let outputs = model.run_batched(args(&zero), 0).unwrap();
    assert_eq!(outputs.len(), model.run(clone_all(&zero)).unwrap().len());
}

#[test]
fn reports_are_kept_for_a_second_read() {
    let fx = fixture("speaker");
    let model = Model::load(cpu_optimizer(), &fx.path, None).unwrap();
    assert!(model.last_report(perfopt::ReportKind::Warmup).is_none());
    let text = model.warmup(args(&fx.inputs), 3).unwrap();
    assert_eq!(
        model.last_report(perfopt::ReportKind::Warmup),
        Some(text.clone())
    );
    assert!(Json::parse(&text).is_ok());
    assert_eq!(
        model.warmup(args(&fx.inputs), u32::MAX).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "iterations are bounded"
    );
    assert_eq!(model.output_count(), Some(1));
}
