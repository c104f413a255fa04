//! What a new user trips over: nested pipelines that expose what they are
//! asked to (and run only that), unnamed nested pipelines side by side,
//! every missing input named at once, bound lists mapped over, columns with
//! failed items, readable type names, and a clear message when a batch
//! implementation breaks its contract.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{Error, Inputs, MapOptions, Node, Pipeline, inputs, node, outs};

/// A closure node `name` reading `x` and counting its calls.
fn counted(name: &str, calls: &Arc<AtomicUsize>) -> Node {
    let calls = calls.clone();
    Node::builder(name)
        .input::<i64>("x")
        .output::<i64>(format!("{name}_out"))
        .version("1")
        .func(move |args| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(outs![args.get::<i64>(0)? + 1])
        })
}

#[test]
fn a_pipeline_node_exposes_its_mapped_outputs_and_runs_only_what_they_need() {
    for (name, engine) in common::engines() {
        let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        let inner = Pipeline::new([
            counted("a", &calls[0]),
            counted("b", &calls[1]),
            counted("c", &calls[2]),
        ])
        .unwrap();
        let node = inner.as_node().output_mapping([("b_out", "b")]);
        let outer = Pipeline::new([node])
            .unwrap()
            .with_shared_engine(engine.clone());
        assert_eq!(outer.outputs(), ["b"], "{name}");
        let r = outer
            .map(Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
            .unwrap();
        assert_eq!(r.values::<i64>("b").unwrap(), [2, 3, 4], "{name}");
        let ran: Vec<usize> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(ran, [0, 3, 0], "{name}: only `b` runs");
    }
    // Siblings no longer collide on outputs they keep inside.
    let calls = Arc::default();
    let left = Pipeline::new([counted("a", &calls)])
        .unwrap()
        .with_name("left")
        .as_node()
        .output_mapping([("a_out", "left")]);
    let right = Pipeline::new([counted("a", &calls)])
        .unwrap()
        .with_name("right")
        .as_node()
        .output_mapping([("a_out", "right")]);
    let both = Pipeline::new([left, right]).unwrap();
    let out = both.run(inputs! {"x" => 1i64}).unwrap();
    assert_eq!(
        (
            *out.get::<i64>("left").unwrap(),
            *out.get::<i64>("right").unwrap()
        ),
        (2, 2)
    );
}

#[node(output = "doubled")]
fn double(x: i64) -> i64 {
    x * 2
}

#[node(output = "tripled")]
fn triple(x: i64) -> Result<i64, String> {
    if x == 7 {
        return Err("seven".into());
    }
    Ok(x * 3)
}

#[test]
fn unnamed_pipelines_used_side_by_side_get_distinct_stable_names() {
    let first = Pipeline::new([double::node()]).unwrap();
    let second = Pipeline::new([triple::node()]).unwrap();
    assert_eq!(first.node_name(), "pipeline(double)");
    assert_eq!(
        first.node_name(),
        Pipeline::new([double::node()]).unwrap().node_name()
    );
    for (name, engine) in common::engines() {
        let p = Pipeline::new([first.as_node(), second.as_node()])
            .unwrap()
            .with_shared_engine(engine);
        let r = p
            .map(
                Inputs::new().with("x", vec![1i64, 7]),
                MapOptions::over(["x"]).continue_on_error(),
            )
            .unwrap();
        // Item 1 failed (in `triple`): none of its outputs is kept.
        assert_eq!(common::optional_i64s(&r, "doubled"), [Some(2), None]);
        // Errors name the nested pipeline by its derived name.
        let failure = &r.failures()[0];
        let location = failure.error.location().unwrap();
        assert_eq!(location.path, ["pipeline", "pipeline(triple)"], "{name}");
    }
}

#[node(output = "sum")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[node(output = "scaled")]
fn scale(sum: i64, factor: i64) -> i64 {
    sum * factor
}

#[test]
fn every_missing_input_is_named_with_the_nodes_that_need_it() {
    let p = Pipeline::new([add::node(), scale::node()]).unwrap();
    let err = p.run(inputs! {"x" => 1i64}).unwrap_err();
    match &err {
        Error::MissingInputs { inputs } => {
            assert_eq!(
                inputs,
                &[
                    ("y".to_string(), vec!["add".to_string()]),
                    ("factor".to_string(), vec!["scale".to_string()])
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "missing inputs: `y` (needed by `add`), `factor` (needed by `scale`)"
    );
    // One missing input keeps its own message.
    let err = p.run(inputs! {"x" => 1i64, "y" => 2i64}).unwrap_err();
    assert_eq!(err.to_string(), "missing input `factor`, needed by `scale`");
}

#[test]
fn a_bound_list_can_be_mapped_over_and_read_back() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([add::node()])
            .unwrap()
            .with_shared_engine(engine)
            .bind(inputs! {"x" => vec![1i64, 2, 3], "y" => 10i64})
            .unwrap();
        assert_eq!(p.bound::<Vec<i64>>("x"), Some(&vec![1, 2, 3]));
        assert_eq!(p.bound::<i64>("y"), Some(&10));
        assert!(p.bound_value("x").is_some() && p.bound_value("sum").is_none());
        let r = p.map(Inputs::new(), ["x"]).unwrap();
        assert_eq!(r.values::<i64>("sum").unwrap(), [11, 12, 13], "{name}");
        // Inputs given to `map` still win over bound ones.
        let r = p.map(inputs! {"x" => vec![5i64]}, ["x"]).unwrap();
        assert_eq!(r.values::<i64>("sum").unwrap(), [15], "{name}");
    }
    // A value that is neither the input's type nor a list of it is refused.
    let err = Pipeline::new([add::node()])
        .unwrap()
        .bind(inputs! {"x" => "text"})
        .unwrap_err();
    assert!(err.to_string().contains("input `x`"), "{err}");
}

#[test]
fn columns_with_failed_items_read_as_options() {
    for (name, engine) in common::engines() {
        let r = Pipeline::new([triple::node()])
            .unwrap()
            .with_shared_engine(engine)
            .map(
                Inputs::new().with("x", vec![1i64, 7, 3]),
                MapOptions::over(["x"]).continue_on_error(),
            )
            .unwrap();
        assert_eq!(
            r.values_opt::<i64>("tripled").unwrap(),
            [Some(3), None, Some(9)],
            "{name}"
        );
        let err = r.values::<i64>("tripled").unwrap_err().to_string();
        assert!(
            err.contains("item 1") && err.contains("values_opt"),
            "{err}"
        );
    }
}

#[test]
fn type_names_read_as_people_write_them() {
    assert_eq!(
        hypernodes::readable_type_name::<Vec<Option<String>>>(),
        "Vec<Option<String>>"
    );
    assert_eq!(
        hypernodes::readable_type_name::<std::collections::HashMap<String, Vec<i64>>>(),
        "HashMap<String, Vec<i64>>"
    );
    let err = Pipeline::new([add::node()])
        .unwrap()
        .run(inputs! {"x" => "one", "y" => 2i64})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `x` has type `String` but `i64` is expected"
    );
}

#[cfg(feature = "datafusion")]
#[test]
fn a_batch_implementation_that_breaks_its_contract_is_described_plainly() {
    use arrow_array::{ArrayRef, Int64Array};
    let node = double::node()
        .with_batch(|_arrays| Ok(vec![Arc::new(Int64Array::from(vec![1i64])) as ArrayRef]));
    let err = Pipeline::new([node])
        .unwrap()
        .with_engine(hypernodes::engines::DataFusionEngine::new().with_small_map(0))
        .map(Inputs::new().with("x", vec![1i64, 2]), ["x"])
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(
            "its batch implementation broke its contract for a whole batch of 2 rows (items 0 to 1"
        ),
        "{message}"
    );
    assert!(
        message.contains("each of 2 rows (Int64), but it returned 1 array: 1 row of Int64"),
        "{message}"
    );
}
