//! Pipeline construction, validation, inputs, binding and selected outputs;
//! every engine.

mod common;

use hypernodes::{Error, Pipeline, RunOptions, inputs, node};

#[node(output = "y")]
fn make_y(x: i64) -> i64 {
    x + 1
}

#[node(output = "y")]
fn other_y(x: i64) -> i64 {
    x + 2
}

#[node(output = "x")]
fn make_x(y: i64) -> i64 {
    y
}

#[node(output = "label")]
fn label(y: String) -> String {
    y
}

#[test]
fn type_mismatch_names_both_nodes_the_name_and_both_types() {
    let err = Pipeline::new([make_y::node(), label::node()]).unwrap_err();
    match &err {
        Error::TypeMismatch {
            name,
            producer,
            producer_type,
            consumer,
            consumer_type,
        } => {
            assert_eq!(
                (name.as_str(), producer.as_str(), consumer.as_str()),
                ("y", "make_y", "label")
            );
            assert_eq!((*producer_type, *consumer_type), ("i64", "String"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "type mismatch on `y`: node `make_y` produces `i64` but node `label` takes `String`"
    );
}

#[test]
fn cycles_and_duplicate_producers_are_rejected() {
    let err = Pipeline::new([make_y::node(), make_x::node()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the pipeline has a cycle through nodes `make_x`, `make_y`"
    );
    let err = Pipeline::new([make_y::node(), other_y::node()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "output `y` is produced by two nodes: `make_y` and `other_y`"
    );
    let err = Pipeline::new([make_y::node(), make_y::node()]).unwrap_err();
    assert!(matches!(err, Error::DuplicateNode { ref name } if name == "make_y"));
}

#[node(output = "n")]
fn as_int(v: i64) -> i64 {
    v
}

#[node(output = "s")]
fn as_str(v: String) -> String {
    v
}

#[test]
fn one_input_taken_with_two_types_is_rejected() {
    let err = Pipeline::new([as_int::node(), as_str::node()]).unwrap_err();
    assert!(
        matches!(err, Error::InputTypeConflict { ref name, .. } if name == "v"),
        "{err}"
    );
}

#[node(output = "a")]
fn node_a(base: i64) -> i64 {
    base + 1
}

#[node(output = "b")]
fn node_b(a: i64, offset: i64) -> i64 {
    a + offset
}

#[node(output = "c")]
fn node_c(base: i64) -> i64 {
    base * 100
}

fn abc() -> Pipeline {
    Pipeline::new([node_c::node(), node_b::node(), node_a::node()]).unwrap()
}

/// How many times each of `node_a`, `node_b`, `node_c` ran since the last call.
fn runs(rec: &common::Recorder) -> (usize, usize, usize) {
    let events = rec.take();
    let n = |node: &str| {
        let end = format!("node_end {node}");
        events.iter().filter(|e| e.ends_with(&end)).count()
    };
    (n("node_a"), n("node_b"), n("node_c"))
}

#[test]
fn selected_outputs_run_only_what_they_need() {
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let p = abc().with_shared_engine(engine).with_callback(rec.clone());
        assert_eq!(p.outputs(), ["c", "a", "b"]);
        let out = p
            .run_with(
                inputs! {"base" => 1i64, "offset" => 10i64},
                RunOptions::new().outputs(["a"]),
            )
            .unwrap();
        assert_eq!(out.names(), ["a"]);
        assert_eq!(runs(&rec), (1, 0, 0), "{name}");
        // `offset` is not needed for `c`, so it may be missing.
        let out = p
            .run_with(inputs! {"base" => 1i64}, RunOptions::new().outputs(["c"]))
            .unwrap();
        assert_eq!(*out.get::<i64>("c").unwrap(), 100);
        assert_eq!(runs(&rec), (0, 0, 1), "{name}");
        let r = p
            .map(
                inputs! {"base" => vec![1i64, 2, 3], "offset" => 5i64},
                hypernodes::MapOptions::over(["base"]).outputs(["b"]),
            )
            .unwrap();
        assert_eq!(r.names(), ["b"]);
        assert_eq!(r.values::<i64>("b").unwrap(), vec![7, 8, 9]);
        assert_eq!(runs(&rec), (3, 3, 0), "{name}");
        let out = p.run(inputs! {"base" => 1i64, "offset" => 10i64}).unwrap();
        assert_eq!(*out.get::<i64>("b").unwrap(), 12);
        assert_eq!(runs(&rec), (1, 1, 1), "{name}");
    }
}

#[test]
fn unknown_outputs_and_missing_inputs_are_named() {
    let p = abc();
    let err = p
        .run_with(inputs! {"base" => 1i64}, RunOptions::new().outputs(["d"]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown output `d`; available outputs: `c`, `a`, `b`"
    );
    let err = p.run(inputs! {"base" => 1i64}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing input `offset`, needed by `node_b`"
    );
    let err = p.run(inputs! {"offset" => 1i64}).unwrap_err();
    match err {
        Error::MissingInput {
            name,
            mut needed_by,
        } => {
            needed_by.sort();
            assert_eq!(name, "base");
            assert_eq!(needed_by, ["node_a", "node_c"]);
        }
        other => panic!("{other:?}"),
    }
    let err = p
        .run(inputs! {"base" => 1i64, "offset" => 1i64, "ofset" => 2i64})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown input `ofset`; the pipeline's inputs are `base`, `offset`"
    );
}

#[test]
fn bind_unbind_and_unfulfilled_inputs() {
    let p = abc();
    assert_eq!(p.unfulfilled_inputs(), ["base", "offset"]);
    let p = p.bind(inputs! {"offset" => 10i64}).unwrap();
    assert_eq!(p.unfulfilled_inputs(), ["base"]);
    assert_eq!(p.bound_inputs(), ["offset"]);
    for (name, engine) in common::engines() {
        let p = p.clone().with_shared_engine(engine);
        assert_eq!(
            *p.run(inputs! {"base" => 1i64})
                .unwrap()
                .get::<i64>("b")
                .unwrap(),
            12,
            "{name}"
        );
        // A run input overrides the bound value.
        let out = p.run(inputs! {"base" => 1i64, "offset" => 0i64}).unwrap();
        assert_eq!(*out.get::<i64>("b").unwrap(), 2, "{name}");
    }
    let p = p.unbind(["offset"]);
    assert_eq!(p.unfulfilled_inputs(), ["base", "offset"]);
    assert!(p.run(inputs! {"base" => 1i64}).is_err());
    let err = abc().bind(inputs! {"nope" => 1i64}).unwrap_err();
    assert!(matches!(err, Error::UnknownInput { ref name, .. } if name == "nope"));
    let err = abc().bind(inputs! {"offset" => "ten"}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `offset` has type `String` but `i64` is expected"
    );
}

#[test]
fn node_order_does_not_matter() {
    let p1 = Pipeline::new([node_a::node(), node_b::node()]).unwrap();
    let p2 = Pipeline::new([node_b::node(), node_a::node()]).unwrap();
    let names = |p: &Pipeline| p.nodes().map(|n| n.name().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&p1), ["node_a", "node_b"]);
    assert_eq!(names(&p2), ["node_a", "node_b"]);
}
