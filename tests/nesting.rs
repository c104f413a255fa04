//! Pipelines as nodes: renaming, `map_over`, three levels of nesting, errors
//! from inside, engine inheritance, events; every engine.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{Engine, Error, MapJob, MapResult, Pipeline, SeqEngine, inputs, node};

#[node(output = "cleaned")]
fn clean(text: String) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> Result<i64, String> {
    if cleaned.is_empty() {
        return Err("empty text".into());
    }
    Ok(cleaned.split_whitespace().count() as i64)
}

#[node(output = "report")]
fn summarize(word_count: i64, cleaned: &str) -> String {
    format!("{cleaned}: {word_count} words")
}

#[node(output = "total")]
fn total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

#[node(output = "grand_total")]
fn grand_total(totals: &[i64]) -> i64 {
    totals.iter().sum()
}

/// How many times `node` completed, from the recorded events.
fn runs_of(rec: &common::Recorder, node: &str) -> usize {
    let end = format!(" node_end {node}");
    rec.take().iter().filter(|e| e.ends_with(&end)).count()
}

fn text_processor() -> Pipeline {
    Pipeline::new([clean::node(), count::node()])
        .unwrap()
        .with_name("text_processor")
}

#[test]
fn a_pipeline_is_a_node() {
    for (name, engine) in common::engines() {
        let analysis = Pipeline::new([text_processor().as_node(), summarize::node()])
            .unwrap()
            .with_name("analysis")
            .with_shared_engine(engine);
        assert_eq!(analysis.unfulfilled_inputs(), ["text"]);
        let out = analysis.run(inputs! {"text" => "  Hello World "}).unwrap();
        assert_eq!(
            out.get::<String>("report").unwrap(),
            "hello world: 2 words",
            "{name}"
        );
        let r = analysis
            .map(inputs! {"text" => vec!["A", "b c d"]}, ["text"])
            .unwrap();
        assert_eq!(
            r.values::<String>("report").unwrap(),
            ["a: 1 words", "b c d: 3 words"]
        );
    }
}

fn batch_processor() -> hypernodes::Node {
    text_processor()
        .as_node()
        .with_name("batch_text_processor")
        .input_mapping([("texts", "text")])
        .output_mapping([("word_count", "word_counts"), ("cleaned", "cleaned_texts")])
        .map_over(["texts"])
}

#[test]
fn map_over_runs_the_inner_pipeline_per_element() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([batch_processor(), total::node()])
            .unwrap()
            .with_shared_engine(engine);
        assert_eq!(p.unfulfilled_inputs(), ["texts"]);
        assert_eq!(p.value_type("word_counts").unwrap().name(), "Vec<i64>");
        let out = p
            .run(inputs! {"texts" => vec!["a b", " C ", "d e f"]})
            .unwrap();
        assert_eq!(
            out.get::<Vec<i64>>("word_counts").unwrap(),
            &vec![2, 1, 3],
            "{name}"
        );
        assert_eq!(
            out.get::<Vec<String>>("cleaned_texts").unwrap(),
            &vec!["a b", "c", "d e f"]
        );
        assert_eq!(*out.get::<i64>("total").unwrap(), 6);
        let empty = p.run(inputs! {"texts" => Vec::<String>::new()}).unwrap();
        assert_eq!(*empty.get::<i64>("total").unwrap(), 0, "{name}");
    }
}

#[test]
fn bad_renamings_are_errors_naming_the_node() {
    let err =
        Pipeline::new([text_processor().as_node().input_mapping([("x", "nope")])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `text_processor` is invalid: input_mapping names unknown input `nope`; inputs are [\"text\"]"
    );
    let err = Pipeline::new([text_processor().as_node().map_over(["texts"])]).unwrap_err();
    assert!(
        err.to_string()
            .contains("map_over names unknown input `texts`"),
        "{err}"
    );
}

#[test]
fn function_nodes_can_be_mapped_over_too() {
    for (name, engine) in common::engines() {
        let node = count::node()
            .input_mapping([("many", "cleaned")])
            .output_mapping([("word_count", "counts")]);
        let p = Pipeline::new([node.map_over(["many"])])
            .unwrap()
            .with_shared_engine(engine);
        let out = p.run(inputs! {"many" => vec!["a", "b c"]}).unwrap();
        assert_eq!(
            out.get::<Vec<i64>>("counts").unwrap(),
            &vec![1, 2],
            "{name}"
        );
    }
}

fn doc_pipeline() -> Pipeline {
    Pipeline::new([batch_processor(), total::node()])
        .unwrap()
        .with_name("doc")
}

fn corpus_pipeline() -> Pipeline {
    let doc = doc_pipeline()
        .as_node()
        .input_mapping([("docs", "texts")])
        .output_mapping([("total", "totals"), ("word_counts", "counts")])
        .map_over(["docs"]);
    Pipeline::new([doc, grand_total::node()])
        .unwrap()
        .with_name("corpus")
}

#[test]
fn three_levels_of_nesting() {
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let corpus = corpus_pipeline()
            .with_shared_engine(engine)
            .with_callback(rec.clone());
        let docs = vec![vec!["a b", "c"], vec![], vec!["d e f g"]];
        let docs: Vec<Vec<String>> = docs
            .into_iter()
            .map(|d| d.into_iter().map(String::from).collect())
            .collect();
        let out = corpus.run(inputs! {"docs" => docs.clone()}).unwrap();
        assert_eq!(runs_of(&rec, "clean"), 3, "{name}: one clean per text");
        assert_eq!(
            out.get::<Vec<i64>>("totals").unwrap(),
            &vec![3, 0, 4],
            "{name}"
        );
        assert_eq!(
            out.get::<Vec<Vec<i64>>>("counts").unwrap(),
            &vec![vec![2, 1], vec![], vec![4]]
        );
        assert_eq!(*out.get::<i64>("grand_total").unwrap(), 7);
        // And mapped at the top: a list of corpora.
        let r = corpus
            .map(
                inputs! {"docs" => vec![docs.clone(), docs[..1].to_vec()]},
                ["docs"],
            )
            .unwrap();
        assert_eq!(
            r.values::<i64>("grand_total").unwrap(),
            vec![7, 3],
            "{name}"
        );
        let counts = r.to_record_batch().unwrap();
        assert_eq!(counts.num_rows(), 2);
    }
}

#[test]
fn selected_outputs_prune_inside_nested_pipelines() {
    let rec = common::Recorder::new();
    let p = Pipeline::new([batch_processor()])
        .unwrap()
        .with_callback(rec.clone());
    let out = p
        .run_with(
            inputs! {"texts" => vec!["x", "y"]},
            hypernodes::RunOptions::new().outputs(["cleaned_texts"]),
        )
        .unwrap();
    assert_eq!(out.get::<Vec<String>>("cleaned_texts").unwrap().len(), 2);
    assert_eq!((runs_of(&rec, "clean"), runs_of(&rec, "count")), (2, 0));
    // `count` did not run: it fails on empty text, but only when word
    // counts are asked for.
    let out = p.run_with(
        inputs! {"texts" => vec![""]},
        hypernodes::RunOptions::new().outputs(["cleaned_texts"]),
    );
    assert!(out.is_ok());
    assert!(p.run(inputs! {"texts" => vec![""]}).is_err());
}

#[test]
fn failures_inside_name_the_inner_node_path_and_items() {
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let corpus = corpus_pipeline()
            .with_shared_engine(engine)
            .with_callback(rec.clone());
        let docs = vec![
            vec!["ok".to_string()],
            vec!["fine".to_string(), "  ".to_string()],
        ];
        let err = corpus.run(inputs! {"docs" => docs.clone()}).unwrap_err();
        match &err {
            Error::NodeFailed { node, location, .. } => {
                assert_eq!(node, "count", "{name}");
                assert_eq!(location.path, ["corpus", "doc", "batch_text_processor"]);
                assert_eq!(location.items, [1, 1]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "node `count` failed in pipeline `corpus/doc/batch_text_processor` on item 1/1: empty text"
        );
        let errors: Vec<String> = rec
            .take()
            .into_iter()
            .filter(|e| e.contains(" error "))
            .collect();
        assert_eq!(
            errors,
            ["corpus/doc/batch_text_processor[1,1] error count"],
            "{name}"
        );
        let err = corpus
            .map(
                inputs! {"docs" => vec![docs[..1].to_vec(), docs.clone()]},
                ["docs"],
            )
            .unwrap_err();
        assert_eq!(err.location().unwrap().items, [1, 1, 1], "{name}");
    }
}

/// A real engine that delegates to `SeqEngine` and counts the maps it ran.
struct Counting {
    maps: AtomicUsize,
}

impl Engine for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn map(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error> {
        self.maps.fetch_add(1, Ordering::SeqCst);
        SeqEngine.map(job)
    }
}

#[test]
fn nested_pipelines_use_the_parent_engine_unless_given_their_own() {
    let outer_engine = Arc::new(Counting {
        maps: AtomicUsize::new(0),
    });
    let inner_engine = Arc::new(Counting {
        maps: AtomicUsize::new(0),
    });
    let p = Pipeline::new([batch_processor()])
        .unwrap()
        .with_shared_engine(outer_engine.clone());
    p.run(inputs! {"texts" => vec!["a"]}).unwrap();
    assert_eq!(outer_engine.maps.load(Ordering::SeqCst), 1);

    let own = text_processor()
        .with_shared_engine(inner_engine.clone())
        .as_node()
        .input_mapping([("texts", "text")])
        .map_over(["texts"]);
    let p = Pipeline::new([own])
        .unwrap()
        .with_shared_engine(outer_engine.clone());
    p.run(inputs! {"texts" => vec!["a", "b"]}).unwrap();
    assert_eq!(outer_engine.maps.load(Ordering::SeqCst), 1);
    assert_eq!(inner_engine.maps.load(Ordering::SeqCst), 1);
}
