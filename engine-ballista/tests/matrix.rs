//! The engine matrix on the standalone Ballista cluster: the scenarios the
//! other engines are held to (results, execution counts, caching, nesting,
//! zip and product maps, fixed inputs, error policies), each checked
//! against `SeqEngine`. The nodes run inside this process (the standalone
//! executor), so counters in them count what ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod support;

use hypernodes_ballista::BallistaEngine;
use hypernodes_core::node::NodeRegistry;
use hypernodes_core::{
    DiskCache, Error, Inputs, MapOptions, Node, Pipeline, SeqEngine, inputs, node, outs,
};
use support::deadline;

/// Calls of a, b and c (one test at a time counts them).
static CALLS: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counted(i: usize, name: &'static str, input: &'static str, version: &str, add: i64) -> Node {
    Node::builder(name)
        .input::<i64>(input)
        .output::<i64>(name)
        .version(version)
        .func(move |args| {
            CALLS[i].fetch_add(1, Ordering::SeqCst);
            Ok(outs![args.get::<i64>(0)? + add])
        })
}

fn chain(c_version: &str) -> Pipeline {
    Pipeline::new([
        counted(0, "a", "x", "1", 1),
        counted(1, "b", "a", "1", 10),
        counted(
            2,
            "c",
            "b",
            c_version,
            if c_version == "1" { 100 } else { 200 },
        ),
    ])
    .unwrap()
}

/// Calls of a, b and c since the last look.
fn calls() -> (usize, usize, usize) {
    let take = |i: usize| CALLS[i].swap(0, Ordering::SeqCst);
    (take(0), take(1), take(2))
}

fn standalone(pipelines: &[&Pipeline]) -> Arc<BallistaEngine> {
    let registry = pipelines
        .iter()
        .fold(NodeRegistry::new(), |r, p| r.with_pipeline(p));
    Arc::new(BallistaEngine::standalone(registry))
}

#[test]
fn caching_scenarios_compute_only_what_is_new_or_edited() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "the caching scenarios", || {
        let dir = tempfile::tempdir().unwrap();
        let engine = standalone(&[&chain("1"), &chain("2")]);
        let on = |c_version: &str| {
            chain(c_version)
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
        };
        let map = |p: &Pipeline, xs: &[i64]| {
            p.map(Inputs::new().with("x", xs.to_vec()), ["x"])
                .unwrap()
                .values::<i64>("c")
                .unwrap()
        };
        let seq = |c_version: &str, xs: &[i64]| {
            let r = map(&chain(c_version).with_engine(SeqEngine), xs);
            calls();
            r
        };
        let ten: Vec<i64> = (0..10).collect();
        let fifteen: Vec<i64> = (0..15).collect();
        let mut edited = fifteen.clone();
        edited[3] = 1_000;
        calls();
        let got = map(&on("1"), &ten);
        assert_eq!(calls(), (10, 10, 10), "cold: every node once per item");
        assert_eq!(got, seq("1", &ten));
        let got = map(&on("1"), &ten);
        assert_eq!(calls(), (0, 0, 0), "again: nothing");
        assert_eq!(got, seq("1", &ten));
        let got = map(&on("1"), &fifteen);
        assert_eq!(calls(), (5, 5, 5), "5 new items");
        assert_eq!(got, seq("1", &fifteen));
        let got = map(&on("1"), &edited);
        assert_eq!(calls(), (1, 1, 1), "one edited item");
        assert_eq!(got, seq("1", &edited));
        let got = map(&on("2"), &edited);
        assert_eq!(calls(), (0, 0, 15), "the last node edited");
        assert_eq!(got, seq("2", &edited));
    });
}

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[node(output = "total")]
fn total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

#[node(output = "report")]
fn report(cleaned: &str, word_count: i64) -> String {
    format!("{cleaned}: {word_count} words")
}

fn text_processor() -> Pipeline {
    Pipeline::new([clean::node(), count::node()]).unwrap()
}

#[test]
fn nested_pipelines_and_map_over_give_seq_results() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "nesting", || {
        // A pipeline as a node, and a pipeline mapped over a list per item.
        let analysis = Pipeline::new([text_processor().as_node(), report::node()]).unwrap();
        let batch = Pipeline::new([
            text_processor()
                .as_node()
                .with_name("batch_text_processor")
                .input_mapping([("texts", "text")])
                .output_mapping([("word_count", "word_counts"), ("cleaned", "cleaned_texts")])
                .map_over(["texts"]),
            total::node(),
        ])
        .unwrap();
        let engine = standalone(&[&analysis, &batch]);
        let texts = vec!["A", "b c d", "  E f  "];
        let want = analysis
            .clone()
            .with_engine(SeqEngine)
            .map(inputs! {"text" => texts.clone()}, ["text"])
            .unwrap();
        let got = analysis
            .clone()
            .with_shared_engine(engine.clone())
            .map(inputs! {"text" => texts}, ["text"])
            .unwrap();
        assert_eq!(
            got.values::<String>("report").unwrap(),
            want.values::<String>("report").unwrap()
        );
        let lists: Vec<Vec<String>> = (0..200)
            .map(|i| (0..i % 9).map(|j| format!(" W{j} x{i} ")).collect())
            .collect();
        let want = batch
            .clone()
            .with_engine(SeqEngine)
            .map(inputs! {"texts" => lists.clone()}, ["texts"])
            .unwrap();
        let got = batch
            .clone()
            .with_shared_engine(engine)
            .map(inputs! {"texts" => lists}, ["texts"])
            .unwrap();
        assert_eq!(
            got.values::<i64>("total").unwrap(),
            want.values::<i64>("total").unwrap()
        );
        assert_eq!(
            got.values::<Vec<i64>>("word_counts").unwrap(),
            want.values::<Vec<i64>>("word_counts").unwrap()
        );
    });
}

#[node(output = "sum")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[node(output = "label")]
fn label(prefix: &str, sum: i64) -> String {
    format!("{prefix}{sum}")
}

#[test]
fn zip_and_product_maps_with_fixed_inputs_give_seq_results() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "zip and product", || {
        let p = Pipeline::new([add::node(), label::node()]).unwrap();
        let engine = standalone(&[&p]);
        let on = p.clone().with_shared_engine(engine);
        let product = on
            .map(
                inputs! {"a" => vec![1i64, 2], "b" => vec![10i64, 20, 30], "prefix" => "n"},
                MapOptions::over(["a", "b"]).product(),
            )
            .unwrap();
        assert_eq!(
            product.values::<i64>("sum").unwrap(),
            [11, 21, 31, 12, 22, 32]
        );
        assert_eq!(
            product.values::<String>("label").unwrap(),
            ["n11", "n21", "n31", "n12", "n22", "n32"]
        );
        let a: Vec<i64> = (0..1_000).collect();
        let zip = on
            .map(
                inputs! {"a" => a.clone(), "b" => 7i64, "prefix" => "z"},
                ["a"],
            )
            .unwrap();
        let seq = p
            .clone()
            .with_engine(SeqEngine)
            .map(inputs! {"a" => a, "b" => 7i64, "prefix" => "z"}, ["a"])
            .unwrap();
        assert_eq!(
            zip.values::<String>("label").unwrap(),
            seq.values::<String>("label").unwrap()
        );
        let empty = on
            .map(
                inputs! {"a" => Vec::<i64>::new(), "b" => 1i64, "prefix" => ""},
                ["a"],
            )
            .unwrap();
        assert!(empty.is_empty());
    });
}

#[node(output = "checked")]
fn check(x: i64) -> Result<i64, String> {
    if x % 100 == 7 {
        return Err(format!("{x} is unlucky"));
    }
    Ok(x)
}

#[test]
fn the_stop_policy_returns_a_failure_naming_node_and_item() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "the stop policy", || {
        let p = Pipeline::new([check::node()]).unwrap();
        let engine = standalone(&[&p]);
        let xs: Vec<i64> = (0..1_000).collect();
        let err = p
            .clone()
            .with_shared_engine(engine.clone())
            .map(Inputs::new().with("x", xs.clone()), ["x"])
            .unwrap_err();
        match &err {
            Error::NodeFailed { node, .. } => assert_eq!(node, "check"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("is unlucky"), "{err}");
        let kept = p
            .with_shared_engine(engine)
            .map(
                Inputs::new().with("x", xs),
                MapOptions::over(["x"]).continue_on_error(),
            )
            .unwrap();
        let failed: Vec<usize> = kept.failures().iter().map(|f| f.index).collect();
        assert_eq!(failed, (0..10).map(|i| i * 100 + 7).collect::<Vec<_>>());
    });
}

#[test]
fn explain_shows_the_distributed_plan_without_running_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "explain", || {
        let p = chain("1");
        let engine = standalone(&[&p]);
        calls();
        let text = engine
            .explain(
                &p,
                Inputs::new().with("x", (0..100i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap();
        assert_eq!(calls(), (0, 0, 0), "nothing ran");
        for part in [
            "logical plan:",
            "TableScan",
            "stage 1:",
            "ShuffleWriterExec",
            "DataSourceExec",
            "file_type=parquet",
        ] {
            assert!(text.contains(part), "no {part} in:\n{text}");
        }
        for udf in ["node_a", "node_b", "node_c"] {
            assert!(text.contains(udf), "no {udf} in:\n{text}");
        }
    });
}

/// A model: no Arrow form, made by the registry's factory.
struct Model {
    scale: i64,
}

#[node(output = "scored")]
fn score(x: i64, model: &Model) -> i64 {
    x * model.scale
}

static MODELS_MADE: AtomicUsize = AtomicUsize::new(0);

#[test]
fn resources_come_from_the_clusters_registry_made_once() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "resources", || {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new([score::node()]).unwrap();
        let registry = NodeRegistry::new().with_pipeline(&p).with_resource(
            "model",
            hypernodes_core::Resource::lazy("model-v1", || {
                MODELS_MADE.fetch_add(1, Ordering::SeqCst);
                Ok(Model { scale: 3 })
            }),
        );
        let engine = Arc::new(BallistaEngine::standalone(registry));
        let xs: Vec<i64> = (0..2_000).collect();
        let client_model =
            || hypernodes_core::Resource::lazy("model-v1", || Ok(Model { scale: 3 }));
        let on = p
            .clone()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()));
        let r = on
            .map(
                Inputs::new()
                    .with("x", xs.clone())
                    .with("model", client_model()),
                ["x"],
            )
            .unwrap();
        assert_eq!(
            r.values::<i64>("scored").unwrap(),
            xs.iter().map(|x| x * 3).collect::<Vec<_>>()
        );
        assert_eq!(
            MODELS_MADE.load(Ordering::SeqCst),
            1,
            "made once on the cluster"
        );
        // Cached now: the same map needs no model, and SeqEngine finds it all.
        let rec = Arc::new(Ran::default());
        let seq = p
            .with_engine(SeqEngine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(rec.clone())
            .map(
                Inputs::new().with("x", xs).with("model", client_model()),
                ["x"],
            )
            .unwrap();
        assert_eq!(seq.len(), 2_000);
        assert_eq!(
            rec.0.load(Ordering::SeqCst),
            0,
            "SeqEngine computed nothing"
        );
    });
}

/// Counts node calls that ran in this process's maps.
#[derive(Default)]
struct Ran(AtomicUsize);

impl hypernodes_core::Callback for Ran {
    fn on_node_end(
        &self,
        _: &hypernodes_core::CallbackContext<'_>,
        _: &str,
        _: std::time::Duration,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[node(output = "reply", concurrency = 64)]
async fn fetch(text: String) -> String {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    text.to_uppercase()
}

#[test]
fn async_nodes_finish_at_every_size() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "async nodes", || {
        let p = Pipeline::new([fetch::node()]).unwrap();
        let engine = standalone(&[&p]);
        for n in [1usize, 127, 128, 129, 2_000] {
            let texts: Vec<String> = (0..n).map(|i| format!("item {i}")).collect();
            let want: Vec<String> = texts.iter().map(|t| t.to_uppercase()).collect();
            let r = p
                .clone()
                .with_shared_engine(engine.clone())
                .map(Inputs::new().with("text", texts), ["text"])
                .unwrap();
            assert_eq!(r.values::<String>("reply").unwrap(), want, "{n} items");
        }
    });
}

/// A user's struct with list and optional fields.
#[derive(
    Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, hypernodes_core::ArrowValue,
)]
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
fn user_structs_flow_between_nodes_as_on_seq() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    deadline(300, "structs", || {
        let p = Pipeline::new([make_doc::node(), doc_words::node()]).unwrap();
        let engine = standalone(&[&p]);
        let texts: Vec<String> = (0..500)
            .map(|i| format!("word{i} {}", "long ".repeat(i % 4)))
            .collect();
        let got = p
            .clone()
            .with_shared_engine(engine)
            .map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap();
        let want = p
            .with_engine(SeqEngine)
            .map(Inputs::new().with("text", texts), ["text"])
            .unwrap();
        assert_eq!(
            got.values::<i64>("words").unwrap(),
            want.values::<i64>("words").unwrap()
        );
        assert_eq!(
            got.values::<Doc>("doc").unwrap(),
            want.values::<Doc>("doc").unwrap()
        );
    });
}
