//! The W1 benchmark workload (`shared/bench/workload.md`): item `i` is
//! template `(i * 7919) % 7` with `{i}` replaced by `i`, and the two-node
//! text pipeline `clean` (trim + lowercase) -> `count` (words).

#![allow(dead_code)]

use hypernodes::node;

const TEMPLATES: [&str; 7] = [
    "  Hello World {i} Foo Bar  ",
    "THE Quick Brown Fox {i} jumps",
    "\tlorem ipsum dolor sit amet {i} consectetur  ",
    "{i}",
    "  a b  c d\te f g {i} h i j  ",
    "MiXeD CaSe {i}",
    "   Spaces   between    words {i}   ",
];

/// Items `0..n` of W1.
pub fn items(n: usize) -> Vec<String> {
    (0..n).map(item).collect()
}

/// Item `i` of W1.
pub fn item(i: usize) -> String {
    TEMPLATES[(i * 7919) % 7].replace("{i}", &i.to_string())
}

/// The reference computation in plain Rust, for checking results.
pub fn expected_counts(items: &[String]) -> Vec<i64> {
    items
        .iter()
        .map(|t| t.trim().to_lowercase().split_whitespace().count() as i64)
        .collect()
}

/// Trim surrounding whitespace, then lowercase.
#[node(output = "cleaned")]
pub fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Number of whitespace-separated words.
#[node(output = "word_count")]
pub fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}
