//! Whether another form of a bundle is the same model to a caller as the
//! form loaded first: the model's checks, methods, state and batching follow
//! the first form, so another form must take every call, batch and input
//! size it takes (engine/inputs.rs).

use super::{Engine, Inputs, TypeKind};

/// Why `other` is not the same model as `first` to a caller, if it is
/// not: the model's checks, methods, state and batching follow the form
/// loaded first, so another form must take every call and batch it takes,
/// and every input the model takes (`model_inputs`: the first form's, or
/// those it is held to when it stands in for another).
pub fn differs(
    first: &dyn Engine,
    model_inputs: &Inputs,
    other: &dyn Engine,
) -> Option<&'static str> {
    if other.writes_state() != first.writes_state() {
        Some("keeps state where the first form does not, or the other way round")
    } else if !takes_every_call(first, other) {
        Some("lacks a method of the first form, or takes fewer arguments")
    } else if !takes_every_batch(first, other) {
        Some("accepts fewer batch sizes than the first form")
    } else if super::inputs::narrower(&other.inputs(), model_inputs) {
        Some("takes fewer input sizes or element types than the first form (its export fixed them)")
    } else {
        None
    }
}

/// The calls and batches a form takes, and what it answers, as text: each
/// method's arity, argument kinds and return kinds (which decide the
/// output count and whether a tensor-only run is refused), its batch bounds
/// and whether it keeps state. A form whose contract is the first form's,
/// and whose inputs are as wide (inputs.rs), may stand in for it as the
/// model loaded (bundle::StandIn, checked again at load); names and schema
/// spellings may differ.
pub fn contract(engine: &dyn Engine) -> String {
    let mut methods: Vec<String> = engine
        .methods()
        .iter()
        .map(|m| {
            let (required, most) = m.arity();
            let most = most.map_or_else(String::new, |n| n.to_string());
            let kinds: Vec<&TypeKind> = m.arguments.iter().map(|a| &a.kind).collect();
            format!(
                "{}({required}..{most}: {kinds:?}) -> {:?}",
                m.name, m.returns
            )
        })
        .collect();
    methods.sort();
    format!(
        "methods {}; fixed batch {:?}; batch limit {:?}; keeps state {}",
        methods.join(" "),
        engine.fixed_batch(),
        engine.batch_limit(),
        engine.writes_state()
    )
}

/// Whether `other` takes every call `first` takes: each of its methods,
/// with at least as many arguments left optional.
fn takes_every_call(first: &dyn Engine, other: &dyn Engine) -> bool {
    first.methods().iter().all(|method| {
        let (required, most) = method.arity();
        other.methods().iter().any(|m| {
            let (other_required, other_most) = m.arity();
            m.name == method.name && other_required <= required && reaches(other_most, most)
        })
    })
}

/// Whether `other` accepts every batch `first` accepts (a form bounded
/// below the first's, or fixed at another batch, would refuse calls the
/// model took before tuning).
fn takes_every_batch(first: &dyn Engine, other: &dyn Engine) -> bool {
    let limit = |e: &dyn Engine| e.batch_limit().or(e.fixed_batch());
    match first.fixed_batch() {
        Some(batch) => {
            other.fixed_batch().is_none_or(|b| b == batch)
                && limit(other).is_none_or(|l| l >= batch)
        }
        None => reaches(limit(other), limit(first)),
    }
}

/// Whether an upper bound (`None`: none) reaches at least as far as another.
fn reaches<T: PartialOrd>(bound: Option<T>, than: Option<T>) -> bool {
    match (bound, than) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(b), Some(t)) => b >= t,
    }
}

#[cfg(test)]
mod interchangeable {
    use super::*;
    use crate::engine::{Argument, Format, MethodSchema};
    use crate::error::Result;
    use crate::value::Value;

    struct Form {
        methods: Vec<MethodSchema>,
        fixed: Option<i64>,
        limit: Option<i64>,
        state: bool,
    }

    impl Engine for Form {
        fn format(&self) -> Format {
            Format::Onnx
        }
        fn methods(&self) -> &[MethodSchema] {
            &self.methods
        }
        fn call(&self, _: &str, _: &[Value]) -> Result<Value> {
            Ok(Value::None)
        }
        fn fixed_batch(&self) -> Option<i64> {
            self.fixed
        }
        fn batch_limit(&self) -> Option<i64> {
            self.limit
        }
        fn writes_state(&self) -> bool {
            self.state
        }
    }

    fn form(methods: &[(&str, usize, usize)], fixed: Option<i64>, limit: Option<i64>) -> Form {
        let methods = methods
            .iter()
            .map(|&(name, required, optional)| MethodSchema {
                name: name.to_string(),
                schema: String::new(),
                arguments: (0..required + optional)
                    .map(|i| Argument {
                        name: format!("x{i}"),
                        kind: TypeKind::Tensor,
                        default: (i >= required).then(|| "None".to_string()),
                    })
                    .collect(),
                returns: vec![TypeKind::Tensor],
                vararg: false,
            })
            .collect();
        Form {
            methods,
            fixed,
            limit,
            state: false,
        }
    }

    #[test]
    fn another_form_must_take_every_call_and_batch_the_first_takes() {
        let onnx = form(&[("forward", 2, 0)], None, None);
        // Traced with an extra method, or scripted with a default: takes more.
        let more = form(&[("forward", 2, 1), ("reset", 0, 0)], None, None);
        assert!(takes_every_call(&onnx, &more));
        assert!(!takes_every_call(&more, &onnx));
        assert!(!takes_every_call(
            &onnx,
            &form(&[("encode", 2, 0)], None, None)
        ));
        // Batches: a bound below the first's refuses calls it took.
        assert!(takes_every_batch(&onnx, &more));
        assert!(!takes_every_batch(&onnx, &form(&[], None, Some(8))));
        let static_onnx = form(&[], Some(2), None);
        assert!(takes_every_batch(
            &static_onnx,
            &form(&[], Some(2), Some(2))
        ));
        assert!(takes_every_batch(&static_onnx, &more));
        assert!(!takes_every_batch(
            &static_onnx,
            &form(&[], Some(4), Some(4))
        ));
        assert!(takes_every_batch(
            &form(&[], None, Some(8)),
            &form(&[], None, Some(16))
        ));
    }

    #[test]
    fn a_contract_names_every_call_and_batch_a_form_takes() {
        let onnx = form(&[("forward", 2, 0)], None, None);
        assert_eq!(
            contract(&onnx),
            contract(&form(&[("forward", 2, 0)], None, None))
        );
        let returning = |returns: Vec<TypeKind>| {
            let mut f = form(&[("forward", 2, 0)], None, None);
            f.methods[0].returns = returns;
            f
        };
        let keeping_state = Form {
            state: true,
            ..form(&[("forward", 2, 0)], None, None)
        };
        let mut taking_an_int = form(&[("forward", 2, 0)], None, None);
        taking_an_int.methods[0].arguments[1].kind = TypeKind::Int;
        for other in [
            form(&[("forward", 2, 1)], None, None),
            form(&[("forward", 2, 0), ("reset", 0, 0)], None, None),
            form(&[("forward", 2, 0)], None, Some(8)),
            form(&[("forward", 2, 0)], Some(2), Some(2)),
            keeping_state,
            taking_an_int,
            // Other outputs: a count, or a dict where a caller sized a buffer.
            returning(vec![TypeKind::tensors(2)]),
            returning(vec![TypeKind::Dict(
                Box::new(TypeKind::Str),
                Box::new(TypeKind::Tensor),
            )]),
        ] {
            assert_ne!(contract(&onnx), contract(&other));
        }
        // Argument names and schema spellings are not the contract.
        let mut renamed = form(&[("forward", 2, 0)], None, None);
        renamed.methods[0].arguments[0].name = "input_ids".to_string();
        renamed.methods[0].schema = "forward(Tensor input_ids, Tensor y) -> Tensor".to_string();
        assert_eq!(contract(&onnx), contract(&renamed));
        // The methods' order is not the contract's.
        assert_eq!(
            contract(&form(&[("a", 0, 0), ("b", 1, 0)], None, None)),
            contract(&form(&[("b", 1, 0), ("a", 0, 0)], None, None))
        );
    }
}
