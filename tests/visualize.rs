//! A picture of a pipeline: its graph as DOT and Mermaid text, with nested
//! pipelines collapsed or expanded to a depth (snapshots of a three-level
//! pipeline at depth 1, 2 and full).

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
