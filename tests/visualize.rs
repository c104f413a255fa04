//! A picture of a pipeline: its graph as DOT and Mermaid text, with nested
//! pipelines collapsed or expanded to a depth (snapshots of a three-level
//! pipeline at depth 1, 2 and full).

mod common;

use hypernodes::viz::{ViewKind, VisualizeOptions};
use hypernodes::{Inputs, Pipeline, node};

#[node(output = "label")]
fn label(word: &str, suffix: &str) -> String {
    format!("{word}{suffix}")
}

#[node(output = "words")]
fn split(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[node(output = "summary")]
fn summarize(labels: Vec<String>) -> String {
    labels.join(" ")
}

#[node(output = "text")]
fn clean(raw: &str) -> String {
    raw.trim().to_lowercase()
}

#[node(output = "shouted")]
fn shout(summary: &str, excl: &str) -> String {
    format!("{}{excl}", summary.to_uppercase())
}

/// Three levels: `docs` runs `per_doc` per document, which maps
/// `per_word` over the document's words.
fn docs() -> Pipeline {
    let per_word = Pipeline::new([label::node()])
        .unwrap()
        .with_name("per_word")
        .as_node()
        .input_mapping([("words", "word")])
        .output_mapping([("label", "labels")])
        .map_over(["words"]);
    let per_doc = Pipeline::new([split::node(), per_word, summarize::node()])
        .unwrap()
        .with_name("per_doc")
        .as_node()
        .output_mapping([("summary", "summary")]);
    Pipeline::new([clean::node(), per_doc, shout::node()])
        .unwrap()
        .with_name("docs")
        .bind(Inputs::new().with("excl", "!"))
        .unwrap()
}

#[test]
fn the_graph_renders_collapsed_and_expanded() {
    let p = docs();
    // The pipeline works as drawn.
    let out = p
        .run(Inputs::new().with("raw", " A b ").with("suffix", "-s"))
        .unwrap();
    assert_eq!(*out.get::<String>("shouted").unwrap(), "A-S B-S!");

    for (depth, options) in [
        ("depth1", VisualizeOptions::default().depth(1)),
        ("depth2", VisualizeOptions::default().depth(2)),
        ("full", VisualizeOptions::default()),
    ] {
        let view = p.visualize(options);
        insta::assert_snapshot!(format!("docs_{depth}_dot"), view.to_dot());
        insta::assert_snapshot!(format!("docs_{depth}_mermaid"), view.to_mermaid());
    }
}

#[test]
fn nested_pipelines_are_wired_through_their_renamings() {
    let view = docs().visualize(VisualizeOptions::default());
    let kinds = |kind| {
        view.nodes
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| n.label.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(ViewKind::Input), ["raw", "suffix"]);
    assert_eq!(kinds(ViewKind::Bound), ["excl"]);
    assert_eq!(
        kinds(ViewKind::Function),
        ["clean", "split", "label", "summarize", "shout"]
    );
    let edge = |from: &str, to: &str, value: &str| {
        view.edges
            .iter()
            .any(|e| e.from.ends_with(from) && e.to.ends_with(to) && e.label == value)
    };
    // Outer values reach inner nodes, under the names the inner nodes take.
    assert!(edge("__clean", "__split", "text"));
    assert!(edge("__split", "__label", "word"));
    assert!(edge("i_docs__suffix", "__label", "suffix"));
    // Inner outputs leave under their exposed names.
    assert!(edge("__label", "__summarize", "labels"));
    assert!(edge("__summarize", "__shout", "summary"));
    assert!(edge("i_docs__excl", "__shout", "excl"));
    assert_eq!(view.clusters.len(), 2);
    assert!(view.clusters[1].map_over);

    // Collapsed: one node per nested pipeline, wired by its ports.
    let view = docs().visualize(VisualizeOptions::default().depth(1));
    assert!(view.clusters.is_empty());
    assert!(
        view.edges.iter().any(|e| e.from.ends_with("__clean")
            && e.to.ends_with("__per_doc")
            && e.label == "text")
    );
}

#[node(output = "checked")]
fn check(x: i64) -> Result<i64, String> {
    if x % 100 == 7 {
        Err(format!("{x} is unlucky"))
    } else {
        Ok(x)
    }
}

#[node(output = "twice")]
fn twice(checked: i64) -> i64 {
    checked * 2
}

#[test]
fn after_a_map_nodes_show_what_they_computed_found_cached_and_failed_on_every_engine() {
    use std::sync::Arc;
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new([check::node(), twice::node()])
            .unwrap()
            .with_name("lucky")
            .with_shared_engine(engine.clone())
            .with_cache(hypernodes::DiskCache::new(dir.path()));
        let map = |xs: Vec<i64>| {
            let recorder = Arc::new(hypernodes::observe::Recorder::new());
            p.clone()
                .with_callback(recorder.clone())
                .map(
                    Inputs::new().with("x", xs),
                    hypernodes::MapOptions::over(["x"]).continue_on_error(),
                )
                .unwrap();
            p.visualize(VisualizeOptions::default())
                .with_events(&recorder.events())
        };
        let outcome = |view: &hypernodes::viz::GraphView, node: &str| {
            view.outcomes
                .get(&format!("n_lucky__{node}"))
                .copied()
                .unwrap_or_default()
        };
        // Cold: 1,000 items, 10 of them fail in `check`.
        let view = map((0..1000).collect());
        let cold = outcome(&view, "check");
        assert_eq!(
            (cold.computed, cold.cached, cold.failed),
            (990, 0, 10),
            "{name}"
        );
        assert_eq!(outcome(&view, "twice").computed, 990, "{name}");
        // 1,000 more: the first thousand come from the cache (the failed
        // ten run again).
        let view = map((0..2000).collect());
        let warm = outcome(&view, "check");
        assert_eq!(
            (warm.computed, warm.cached, warm.failed),
            (990, 990, 20),
            "{name}"
        );
        assert_eq!(warm.summary(), "990 cached / 990 computed, 20 failed");
        if name == "seq" {
            insta::assert_snapshot!("lucky_after_a_partly_cached_map_dot", view.to_dot());
            insta::assert_snapshot!("lucky_after_a_partly_cached_map_mermaid", view.to_mermaid());
        }
    }
}
