//! A Ballista executor linking the demo's `clean` and ANOTHER version of
//! its `count` (characters instead of words): what a stale deployment looks
//! like. Clients must refuse to send it maps that use `count`.

#[path = "nodes.rs"]
#[allow(dead_code)]
mod nodes;

/// Not the demo's `count`: it counts characters.
#[hypernodes_core::node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.chars().count() as i64
}

fn main() -> Result<(), hypernodes_core::Error> {
    let registry = hypernodes_core::node::NodeRegistry::new()
        .with_node(nodes::clean::node())
        .with_node(count::node());
    hypernodes_ballista::executor_main(registry)
}
