//! Code fingerprints of nodes: what they cover (the function's tokens, its
//! name and outputs, same-crate helpers followed transitively) and what they
//! ignore (doc comments). Edits across real recompiles are tested with the
//! cache, which builds a small crate twice.

use hypernodes::{Node, Pipeline, node, outs};

fn squash_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn normalize_text(s: &str) -> String {
    squash_spaces(&s.to_lowercase())
}

fn unrelated_helper() -> u8 {
    7
}

#[node(output = "normalized")]
fn normalize_node(text: &str) -> String {
    normalize_text(text)
}

#[node(output = "mapped")]
fn passes_helper_as_value(words: Vec<String>) -> Vec<String> {
    words.iter().map(|w| squash_spaces(w)).collect()
}

#[node(output = "formatted")]
fn helper_in_macro(text: &str) -> String {
    format!("[{}]", normalize_text(text))
}

mod plain {
    use hypernodes::node;

    #[node(output = "same")]
    pub fn same(x: i64) -> i64 {
        x + 1
    }
}

mod documented {
    use hypernodes::node;

    /// Documentation does not change what the node computes.
    #[node(output = "same")]
    pub fn same(x: i64) -> i64 {
        x + 1
    }
}

mod edited {
    use hypernodes::node;

    #[node(output = "same")]
    pub fn same(x: i64) -> i64 {
        x + 2
    }
}

#[test]
fn helpers_are_followed_transitively() {
    let n = normalize_node::node();
    assert_eq!(n.helpers(), ["normalize_text", "squash_spaces"]);
    assert!(!n.helpers().iter().any(|h| h == "unrelated_helper"));
    assert_eq!(unrelated_helper(), 7);
    // `map` is a method name defined in another target of this package (an
    // engine in tests/nesting.rs): another crate target's functions are
    // never helpers, so only the helper passed as a value is covered.
    assert_eq!(passes_helper_as_value::node().helpers(), ["squash_spaces"]);
    assert_eq!(
        helper_in_macro::node().helpers(),
        ["normalize_text", "squash_spaces"]
    );
}

#[test]
fn doc_comments_do_not_count_but_edits_do() {
    let a = plain::same::node().code_hash();
    assert_eq!(a, documented::same::node().code_hash());
    assert_ne!(a, edited::same::node().code_hash());
}

#[test]
fn name_and_outputs_count() {
    let renamed = plain::same::node().with_name("other");
    // Renaming a node after the fact keeps its code; the fingerprint is of the code.
    assert_eq!(renamed.code_hash(), plain::same::node().code_hash());
    assert_ne!(
        normalize_node::node().code_hash(),
        helper_in_macro::node().code_hash()
    );
}

#[test]
fn closure_and_pipeline_nodes_have_structural_fingerprints() {
    let make = |name: &str| {
        Node::builder(name)
            .input::<i64>("x")
            .output::<i64>("y")
            .func(|args| Ok(outs![*args.get::<i64>(0)?]))
    };
    assert_eq!(make("a").code_hash(), make("a").code_hash());
    assert_ne!(make("a").code_hash(), make("b").code_hash());
    let p1 = Pipeline::new([plain::same::node()]).unwrap().as_node();
    let p2 = Pipeline::new([edited::same::node()]).unwrap().as_node();
    assert_ne!(
        p1.code_hash(),
        p2.code_hash(),
        "a pipeline node changes with its inner code"
    );
}

#[test]
fn a_registry_refuses_another_version_of_a_node_naming_both_hashes() {
    use hypernodes::node::{NodeRegistry, RegistryError};
    let registry =
        NodeRegistry::new().with_pipeline(&Pipeline::new([plain::same::node()]).unwrap());
    let linked = plain::same::node().code_hash();
    let wanted = edited::same::node().code_hash();
    assert_eq!(
        registry.resolve("same", &linked).unwrap().code_hash(),
        linked
    );
    let err = registry.resolve("same", &wanted).unwrap_err();
    assert_eq!(
        err,
        RegistryError::CodeMismatch {
            node: "same".into(),
            wanted,
            linked
        }
    );
    let message = err.to_string();
    assert!(message.contains(&wanted.to_hex()) && message.contains(&linked.to_hex()));
    assert_eq!(registry.versions(), [("same".to_string(), linked)]);
    // Nested pipelines' nodes are registered too.
    let nested =
        Pipeline::new([Pipeline::new([normalize_node::node()]).unwrap().as_node()]).unwrap();
    let registry = NodeRegistry::new().with_pipeline(&nested);
    assert!(
        registry
            .resolve("normalize_node", &normalize_node::node().code_hash())
            .is_ok()
    );
}
