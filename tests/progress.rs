//! Progress off a terminal: milestone lines for the outermost map and one
//! summary line per pipeline, exactly, on every engine (feature
//! `progress`).

#![cfg(feature = "progress")]

mod common;

use std::sync::{Arc, Mutex};

use hypernodes::observe::Progress;
use hypernodes::{DiskCache, MapOptions, Pipeline, inputs, node};

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// The text written so far, with the timings (which differ from run
    /// to run) replaced by `T`.
    fn text(&self) -> String {
        let raw = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
        raw.lines()
            .map(|line| {
                line.split(" · ")
                    .map(|part| {
                        if part.ends_with(" items/s") {
                            "T items/s".to_string()
                        } else if let Some((head, _)) = part.split_once(" in ")
                            && part.ends_with(" s")
                        {
                            format!("{head} in T s")
                        } else {
                            part.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" · ")
            })
            .map(|l| l + "\n")
            .collect()
    }
}

#[node(output = "words")]
fn split(text: &str) -> Vec<String> {
    // Slower than the interval at which a row engine reports counts, so
    // every item's counts arrive on their own (the milestones below).
    if text.starts_with("slow") {
        std::thread::sleep(std::time::Duration::from_millis(12));
    }
    text.split_whitespace().map(str::to_string).collect()
}

#[node(output = "label")]
fn label(word: &str) -> String {
    format!("<{word}>")
}

#[node(output = "n")]
fn count(labels: Vec<String>) -> Result<i64, String> {
    if labels.len() == 3 {
        Err("three words".into())
    } else {
        Ok(labels.len() as i64)
    }
}

/// `docs` splits each text, maps `per_word` over its words, then counts.
fn docs() -> Pipeline {
    let per_word = Pipeline::new([label::node()])
        .unwrap()
        .with_name("per_word")
        .as_node()
        .input_mapping([("words", "word")])
        .output_mapping([("label", "labels")])
        .map_over(["words"]);
    Pipeline::new([split::node(), per_word, count::node()])
        .unwrap()
        .with_name("docs")
}

/// Text `i` has `i % 4 + 1` words: items 2, 6, 10, ... have three and fail
/// in `count`.
fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..i % 4 + 1)
                .map(|w| format!("w{i}x{w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn plain_output_is_milestones_then_one_summary_per_pipeline() {
    let lines = Lines::default();
    let p = docs()
        .with_callback(Arc::new(Progress::plain(lines.clone())))
        .with_engine(hypernodes::SeqEngine);
    let slow: Vec<String> = texts(40).iter().map(|t| format!("slow{t}")).collect();
    p.map(
        inputs! {"text" => slow},
        MapOptions::over(["text"]).continue_on_error(),
    )
    .unwrap();
    assert_eq!(
        lines.text(),
        "\
[progress] docs: 10% (4/40 items) · 0 cached / 7 computed / 1 failed · T items/s
[progress] docs: 25% (10/40 items) · 0 cached / 18 computed / 2 failed · T items/s
[progress] docs: 50% (20/40 items) · 0 cached / 35 computed / 5 failed · T items/s
[progress] docs: 75% (30/40 items) · 0 cached / 53 computed / 7 failed · T items/s
[progress] docs: 100% (40/40 items) · 0 cached / 70 computed / 10 failed · T items/s
[progress] docs: done, 40/40 items in T s · T items/s · 10 failed · split: 0 cached / 40 computed · count: 0 cached / 30 computed / 10 failed
[progress] per_word: done, 100/100 items in T s · T items/s · 0 failed · label: 0 cached / 100 computed
"
    );
}

#[test]
fn every_engine_counts_cached_and_computed_results_alike() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let lines = Lines::default();
        let p = docs()
            .with_cache(DiskCache::new(dir.path()))
            .with_shared_engine(engine)
            .with_callback(Arc::new(Progress::plain(lines.clone())));
        let options = || MapOptions::over(["text"]).continue_on_error();
        p.map(inputs! {"text" => texts(200)[..100].to_vec()}, options())
            .unwrap();
        let first = lines.text();
        assert!(
            first.contains("docs: done, 100/100 items in T s · T items/s · 25 failed · split: 0 cached / 100 computed · count: 0 cached / 75 computed / 25 failed"),
            "{name}: {first}"
        );
        p.map(inputs! {"text" => texts(200)}, options()).unwrap();
        let second = lines.text();
        let summary: Vec<&str> = second.lines().filter(|l| l.contains(": done,")).collect();
        // The first half is cached: its successes count as cached, its
        // failures (cached as failures) fail again, as the new ones do.
        assert_eq!(
            summary,
            [
                "[progress] docs: done, 200/200 items in T s · T items/s · 50 failed · split: 100 cached / 100 computed · count: 75 cached / 75 computed / 50 failed",
                "[progress] per_word: done, 500/500 items in T s · T items/s · 0 failed · label: 250 cached / 250 computed",
            ],
            "{name}"
        );
        // Milestones come as batches of rows end: at most one line each,
        // the last at 100%.
        let milestones: Vec<&str> = second.lines().filter(|l| l.contains("% (")).collect();
        assert!(milestones.len() <= 5, "{name}: {second}");
        assert!(
            milestones
                .last()
                .is_some_and(|l| l.starts_with("[progress] docs: 100% (200/200 items)")),
            "{name}: {second}"
        );
    }
}
