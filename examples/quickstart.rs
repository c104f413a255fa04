//! Quick start: the three steps (think singular, compose, scale) on the
//! README's text pipeline.
//!
//! `cargo run --release --example quickstart`

#[path = "shared/workload.rs"]
mod workload;

use std::time::Instant;

use hypernodes::{Inputs, ParallelEngine, Pipeline, inputs, node};
use workload::{clean, count};

/// A report built from outputs of the nested text processor.
#[node(output = "report")]
fn summarize(word_count: i64, cleaned: &str) -> String {
    format!("{cleaned:?}: {word_count} words")
}

/// Adds up a list of word counts.
#[node(output = "total_words")]
fn total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

fn main() -> Result<(), hypernodes::Error> {
    // 1. Think singular: functions for one item, wired by name.
    let text_processor = Pipeline::new([clean::node(), count::node()])?.with_name("text_processor");
    let out = text_processor.run(inputs! { "text" => "  Hello World  " })?;
    println!(
        "run:     cleaned={:?} word_count={}",
        out.get::<String>("cleaned")?,
        out.get::<i64>("word_count")?
    );

    // 2. Compose: a pipeline is a node of a larger pipeline.
    let analysis =
        Pipeline::new([text_processor.as_node(), summarize::node()])?.with_name("analysis");
    let out = analysis.run(inputs! { "text" => "Think  Singular " })?;
    println!("compose: {}", out.get::<String>("report")?);

    // 3. Scale: map over a collection, or map inside a larger pipeline.
    let texts = vec!["Hello", "World", "Foo Bar"];
    let r = text_processor.map(Inputs::new().with("text", texts), ["text"])?;
    println!("map:     word_count={:?}", r.values::<i64>("word_count")?);

    let batch = text_processor
        .as_node()
        .with_name("batch_text_processor")
        .input_mapping([("texts", "text")])
        .output_mapping([("word_count", "word_counts")])
        .map_over(["texts"]);
    let corpus = Pipeline::new([batch, total::node()])?.with_name("corpus");
    let out = corpus.run(inputs! { "texts" => vec!["one two", "three", "four five six"] })?;
    println!(
        "nested:  word_counts={:?} total_words={}",
        out.get::<Vec<i64>>("word_counts")?,
        out.get::<i64>("total_words")?
    );

    // The same pipeline on all cores, over the W1 benchmark items.
    let items = workload::items(100_000);
    let expected = workload::expected_counts(&items);
    let parallel = text_processor.clone().with_engine(ParallelEngine::new());
    for p in [&text_processor, &parallel] {
        let start = Instant::now();
        let r = p.map(Inputs::new().with("text", items.clone()), ["text"])?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(
            r.values::<i64>("word_count")?,
            expected,
            "results match plain Rust"
        );
        let engine = p
            .engine()
            .map(|e| e.name().to_string())
            .unwrap_or("seq".into());
        println!(
            "scale:   engine={engine} items={} items_per_s={:.0}",
            r.len(),
            r.len() as f64 / secs
        );
    }

    // 4. See it: progress of a cached map, half of whose items are cached
    // (bars on a terminal, milestone lines otherwise; feature `progress`).
    #[cfg(feature = "progress")]
    {
        let dir =
            std::env::temp_dir().join(format!("hypernodes-quickstart-{}", std::process::id()));
        let watched = analysis
            .clone()
            .with_cache(hypernodes::DiskCache::new(&dir))
            .with_engine(ParallelEngine::new())
            .with_progress();
        watched.map(
            Inputs::new().with("text", items[..items.len() / 2].to_vec()),
            ["text"],
        )?;
        let r = watched.map(Inputs::new().with("text", items), ["text"])?;
        println!("progress: mapped {} items, half of them cached", r.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
