//! `#[node]` and closure-built nodes: naming, outputs, errors, async,
//! resources, user structs; every engine.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{ArrowValue, Error, Inputs, Node, NodeError, Pipeline, inputs, node, outs};
use serde::{Deserialize, Serialize};

#[node]
fn double(x: i64) -> i64 {
    x * 2
}

#[node(output = ("quotient", "remainder"))]
fn divmod(a: i64, b: i64) -> (i64, i64) {
    (a / b, a % b)
}

#[node(output = "parsed")]
fn parse(text: &str) -> Result<i64, std::num::ParseIntError> {
    text.trim().parse()
}

#[node(output = "doubled")]
async fn double_later(parsed: i64) -> i64 {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    parsed * 2
}

#[node(output = "doubled")]
fn double_now(parsed: i64) -> i64 {
    parsed * 2
}

#[test]
fn output_named_after_function_by_default() {
    let n = double::node();
    assert_eq!(n.name(), "double");
    assert_eq!(n.outputs()[0].name, "double");
    assert_eq!(n.inputs()[0].name, "x");
    for (name, engine) in common::engines() {
        let p = Pipeline::new([double::node()])
            .unwrap()
            .with_shared_engine(engine);
        let out = p.run(inputs! {"x" => 21i64}).unwrap();
        assert_eq!(*out.get::<i64>("double").unwrap(), 42, "{name}");
    }
}

#[test]
fn plain_functions_stay_callable() {
    assert_eq!(double(4), 8);
    assert_eq!(divmod(7, 2), (3, 1));
    assert_eq!(parse(" 5 ").unwrap(), 5);
}

#[test]
fn several_outputs_from_a_tuple() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([divmod::node()])
            .unwrap()
            .with_shared_engine(engine);
        let out = p.run(inputs! {"a" => 17i64, "b" => 5i64}).unwrap();
        assert_eq!(*out.get::<i64>("quotient").unwrap(), 3, "{name}");
        assert_eq!(*out.get::<i64>("remainder").unwrap(), 2, "{name}");
        assert_eq!(out.names(), ["quotient", "remainder"]);
    }
}

#[test]
fn result_errors_fail_the_node_with_its_message() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([parse::node()])
            .unwrap()
            .with_shared_engine(engine);
        assert_eq!(
            *p.run(inputs! {"text" => "12"})
                .unwrap()
                .get::<i64>("parsed")
                .unwrap(),
            12
        );
        let err = p.run(inputs! {"text" => "x1"}).unwrap_err();
        match &err {
            Error::NodeFailed {
                node,
                location,
                source: NodeError::User(e),
                attempts,
            } => {
                assert_eq!(node, "parse", "{name}");
                assert_eq!(location.path, ["pipeline"]);
                assert!(location.items.is_empty());
                assert_eq!(*attempts, 1);
                assert_eq!(e.to_string(), "invalid digit found in string");
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "node `parse` failed in pipeline `pipeline`: invalid digit found in string"
        );
    }
}

#[test]
fn async_nodes_give_the_same_results_as_sync_ones() {
    for (name, engine) in common::engines() {
        let texts = vec!["1", "2", "30", "-4"];
        let a = Pipeline::new([parse::node(), double_later::node()])
            .unwrap()
            .with_shared_engine(engine.clone());
        let s = Pipeline::new([parse::node(), double_now::node()])
            .unwrap()
            .with_shared_engine(engine);
        let ra = a
            .map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap();
        let rs = s.map(Inputs::new().with("text", texts), ["text"]).unwrap();
        assert_eq!(
            ra.values::<i64>("doubled").unwrap(),
            vec![2, 4, 60, -8],
            "{name}"
        );
        assert_eq!(
            ra.values::<i64>("doubled").unwrap(),
            rs.values::<i64>("doubled").unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nodes_run_from_inside_a_tokio_runtime() {
    let p = Pipeline::new([parse::node(), double_later::node()]).unwrap();
    let out = p.run(inputs! {"text" => "8"}).unwrap();
    assert_eq!(*out.get::<i64>("doubled").unwrap(), 16);
}

#[node(output = "boom")]
fn explode(x: i64) -> i64 {
    if x == 3 {
        panic!("cannot handle {x}");
    }
    x
}

#[node(output = "late")]
async fn explode_later(x: i64) -> i64 {
    if x == 3 {
        panic!("async cannot handle {x}");
    }
    x
}

#[test]
fn panics_become_errors_naming_node_and_item() {
    for (name, engine) in common::engines() {
        for (node, msg) in [
            (explode::node(), "cannot handle 3"),
            (explode_later::node(), "async cannot handle 3"),
        ] {
            let node_name = node.name().to_string();
            let p = Pipeline::new([node])
                .unwrap()
                .with_shared_engine(engine.clone());
            let err = p
                .map(Inputs::new().with("x", vec![1i64, 2, 3, 4]), ["x"])
                .unwrap_err();
            assert_eq!(err.node(), Some(node_name.as_str()), "{name}");
            assert_eq!(err.item(), Some(2), "{name}");
            match err {
                Error::NodeFailed {
                    source: NodeError::Panic(m),
                    ..
                } => assert_eq!(m, msg),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn closure_nodes_capture_configuration() {
    for (name, engine) in common::engines() {
        let factor = 10i64;
        let scale = Node::builder("scale")
            .input::<i64>("double")
            .output::<i64>("scaled")
            .func(move |args| Ok(outs![args.get::<i64>(0)? * factor]));
        let p = Pipeline::new([double::node(), scale])
            .unwrap()
            .with_shared_engine(engine);
        let r = p
            .map(Inputs::new().with("x", vec![1i64, 2]), ["x"])
            .unwrap();
        assert_eq!(r.values::<i64>("scaled").unwrap(), vec![20, 40], "{name}");
    }
}

#[test]
fn closure_node_returning_the_wrong_type_is_an_error() {
    let bad = Node::builder("bad")
        .input::<i64>("x")
        .output::<i64>("y")
        .func(|_| Ok(outs!["nope".to_string()]));
    let err = Pipeline::new([bad])
        .unwrap()
        .run(inputs! {"x" => 1i64})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `bad` failed in pipeline `pipeline`: output `y` has type `String`, declared `i64`"
    );
}

/// A resource: no Arrow form, not even Clone.
struct Tokenizer {
    separator: char,
    loads: AtomicUsize,
}

#[node(output = "tokens")]
fn tokenize(text: &str, tokenizer: &Tokenizer) -> Vec<String> {
    tokenizer.loads.fetch_add(1, Ordering::Relaxed);
    text.split(tokenizer.separator)
        .map(str::to_string)
        .collect()
}

#[test]
fn resources_are_passed_as_fixed_inputs() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([tokenize::node()])
            .unwrap()
            .with_shared_engine(engine);
        let ty = p.value_type("tokenizer").unwrap();
        assert!(!ty.is_arrow());
        // Resources are shared, not copied: nodes borrow the one value.
        let tokenizer = Tokenizer {
            separator: ',',
            loads: AtomicUsize::new(0),
        };
        let r = p
            .map(
                Inputs::new()
                    .with("text", vec!["a,b", "c"])
                    .with("tokenizer", tokenizer),
                ["text"],
            )
            .unwrap();
        assert_eq!(
            r.values::<Vec<String>>("tokens").unwrap(),
            vec![vec!["a".to_string(), "b".into()], vec!["c".into()]],
            "{name}"
        );
        assert_eq!(p.bound_inputs(), Vec::<&str>::new());
    }
}

#[test]
fn bound_resources_are_shared_by_every_item() {
    let tokenizer = Tokenizer {
        separator: ' ',
        loads: AtomicUsize::new(0),
    };
    let p = Pipeline::new([tokenize::node()])
        .unwrap()
        .bind(inputs! {"tokenizer" => tokenizer})
        .unwrap();
    let r = p
        .map(
            Inputs::new().with("text", vec!["a b", "c", "d e f"]),
            ["text"],
        )
        .unwrap();
    assert_eq!(r.len(), 3);
    let value = p.run(inputs! {"text" => "x"}).unwrap();
    assert_eq!(value.get::<Vec<String>>("tokens").unwrap().len(), 1);
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
struct Doc {
    text: String,
    words: i64,
    tags: Vec<String>,
    score: Option<f64>,
}

#[node(output = "doc")]
fn make_doc(text: String) -> Doc {
    let words = text.split_whitespace().count() as i64;
    Doc {
        tags: text
            .split_whitespace()
            .filter(|w| w.len() > 3)
            .map(str::to_string)
            .collect(),
        score: (words > 1).then_some(words as f64 / 2.0),
        text,
        words,
    }
}

#[node(output = "words")]
fn doc_words(doc: &Doc) -> i64 {
    doc.words
}

#[test]
fn user_structs_flow_and_convert_to_arrow() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([make_doc::node(), doc_words::node()])
            .unwrap()
            .with_shared_engine(engine);
        let r = p
            .map(
                Inputs::new().with("text", vec!["hello big world", "hi"]),
                ["text"],
            )
            .unwrap();
        assert_eq!(r.values::<i64>("words").unwrap(), vec![3, 1], "{name}");
        let batch = r.to_record_batch().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().field(0).name(), "doc");
        assert!(matches!(
            batch.schema().field(0).data_type(),
            arrow_schema::DataType::Struct(_)
        ));
        let docs = Doc::from_array(batch.column(0).as_ref()).unwrap();
        assert_eq!(docs, r.values::<Doc>("doc").unwrap());
        assert_eq!(docs[0].tags, vec!["hello".to_string(), "world".into()]);
        assert_eq!(docs[1].score, None);
    }
}

#[test]
fn wrong_input_type_at_run_time_names_input_and_types() {
    let p = Pipeline::new([double::node()]).unwrap();
    let err = p.run(inputs! {"x" => "seven"}).unwrap_err();
    match &err {
        Error::InputType {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, "x");
            assert_eq!(*expected, "i64");
            assert_eq!(*actual, "String");
        }
        other => panic!("{other:?}"),
    }
    let err = p
        .map(Inputs::new().with("x", vec![1i32, 2]), ["x"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mapped input `x` must be a `Vec<i64>`, got `Vec<i32>`"
    );
}
