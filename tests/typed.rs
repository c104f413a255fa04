//! Nodes built at run time from typed closures (`NodeBuilder::typed`): the
//! same results and failures on every engine, the typed row loop on
//! columnar engines, and clear errors for closures that do not match the
//! declared ports.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{Error, ErrorPolicy, Inputs, MapOptions, Node, Pipeline};

/// `label = "{prefix}{x * factor}"`, failing on x = 3: a two-input
/// fallible closure after a one-input infallible one that captures
/// `factor`.
fn pipeline(factor: i64) -> Pipeline {
    let scale = Node::builder("scale")
        .input::<i64>("x")
        .output::<i64>("scaled")
        .version(format!("times {factor}"))
        .typed(move |x: i64| x * factor)
        .unwrap();
    let label = Node::builder("label")
        .input::<i64>("scaled")
        .input::<String>("prefix")
        .output::<String>("label")
        .version("1")
        .typed(|scaled: i64, prefix: String| -> Result<String, String> {
            if scaled == 3 * 7 {
                return Err(format!("{scaled} is unlucky"));
            }
            Ok(format!("{prefix}{scaled}"))
        })
        .unwrap();
    Pipeline::new([scale, label]).unwrap()
}

#[test]
fn typed_closures_give_the_same_results_on_every_engine() {
    for (name, engine) in common::engines() {
        let r = pipeline(7)
            .with_shared_engine(engine)
            .map(
                Inputs::new()
                    .with("x", vec![1i64, 2, 3, 4])
                    .with("prefix", "#".to_string()),
                MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
            )
            .unwrap();
        let labels: Vec<Option<String>> = r
            .column::<String>("label")
            .unwrap()
            .iter()
            .map(|v| v.cloned())
            .collect();
        assert_eq!(
            labels,
            [
                Some("#7".into()),
                Some("#14".into()),
                None,
                Some("#28".into())
            ],
            "{name}"
        );
        let failures = r.failures();
        assert_eq!(failures.len(), 1, "{name}");
        assert_eq!(
            failures[0].error.to_string(),
            "node `label` failed in pipeline `pipeline` on item 2: 21 is unlucky",
            "{name}"
        );
    }
}

#[test]
fn typed_closures_have_a_row_loop_that_columnar_engines_call_per_batch() {
    let node = Node::builder("shout")
        .input::<String>("text")
        .output::<String>("loud")
        .version("1")
        .typed(|text: String| text.to_uppercase())
        .unwrap();
    assert!(node.rows().is_some(), "a typed closure has a row loop");
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let node = common::log_row_loop(node, &sizes);
    let texts: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let p = Pipeline::new([node]).unwrap();
    for (name, engine) in common::engines() {
        sizes.lock().unwrap().clear();
        let r = p
            .clone()
            .with_shared_engine(engine)
            .map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap();
        let loud: Vec<String> = r.values::<String>("loud").unwrap();
        assert_eq!(loud[9], "T9", "{name}");
        if name == "datafusion" {
            let sizes = sizes.lock().unwrap();
            assert_eq!(sizes.iter().sum::<usize>(), 10, "each row once");
            assert!(sizes.len() < 10, "batched");
        } else {
            assert!(sizes.lock().unwrap().is_empty(), "{name} calls per item");
        }
    }
}

#[test]
fn typed_closures_retry_and_take_fixed_inputs_in_the_row_loop() {
    let tries = Arc::new(AtomicUsize::new(0));
    let seen = tries.clone();
    let flaky = Node::builder("flaky")
        .input::<i64>("x")
        .input::<i64>("offset")
        .output::<i64>("y")
        .retries(1)
        .version("1")
        .typed(move |x: i64, offset: i64| -> Result<i64, String> {
            // Every other attempt fails: with one retry, every row succeeds.
            if seen.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                return Err("first try".into());
            }
            Ok(x + offset)
        })
        .unwrap();
    let rows = flaky.rows().unwrap();
    let x: arrow_array::ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3]));
    let offset = hypernodes::Value::new(100i64);
    let out = rows(
        &[
            hypernodes::rows::RowsArg::Column(&x),
            hypernodes::rows::RowsArg::Fixed(&offset),
        ],
        3,
        1,
    )
    .unwrap();
    let y = out.columns[0]
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap();
    assert_eq!(y.values().to_vec(), [101, 102, 103]);
    assert!(out.failures.is_empty());
    let retried: Vec<(usize, u32, String)> = out
        .retries
        .iter()
        .map(|r| (r.row, r.attempt, r.error.to_string()))
        .collect();
    assert_eq!(
        retried,
        (0..3)
            .map(|row| (row, 1, "first try".to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(tries.load(Ordering::SeqCst), 6);
    // A fixed value of another type is named.
    let wrong = hypernodes::Value::new("100".to_string());
    let err = rows(
        &[
            hypernodes::rows::RowsArg::Column(&x),
            hypernodes::rows::RowsArg::Fixed(&wrong),
        ],
        3,
        1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("input `offset`"), "{err}");
}

#[test]
fn closures_that_do_not_match_the_declared_ports_are_named() {
    let reason = |r: Result<Node, Error>| match r {
        Err(Error::InvalidNode { node, reason }) => format!("{node}: {reason}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("accepted"),
    };
    let builder = || Node::builder("n").input::<i64>("x");
    assert_eq!(
        reason(builder().output::<i64>("y").typed(|x: i64, z: i64| x + z)),
        "n: 1 inputs are declared but the closure takes 2"
    );
    assert_eq!(
        reason(
            builder()
                .output::<i64>("y")
                .typed(|x: String| x.len() as i64)
        ),
        "n: input `x` is declared `i64` but the closure takes `String`"
    );
    assert_eq!(
        reason(builder().output::<String>("y").typed(|x: i64| x)),
        "n: output `y` is declared `String` but the closure returns `i64`"
    );
    assert_eq!(
        reason(
            builder()
                .output::<i64>("y")
                .output::<i64>("z")
                .typed(|x: i64| x)
        ),
        "n: a typed closure gives one output; 2 are declared"
    );
}
