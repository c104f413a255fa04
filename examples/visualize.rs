//! Pictures of the README's `analysis` pipeline (a nested `text_processor`
//! and a `summarize` step), written as SVG, a self-contained HTML page,
//! Mermaid and DOT into the directory given by `--out DIR` (default
//! `docs/`): collapsed and expanded before any run, then coloured after a
//! map of which half was already cached.
//!
//! ```text
//! cargo run --release --example visualize -- --out docs
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use hypernodes::observe::Recorder;
use hypernodes::viz::VisualizeOptions;
use hypernodes::{DiskCache, Inputs, Pipeline, node};

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[node(output = "report")]
fn summarize(word_count: i64, cleaned: &str) -> String {
    format!("{cleaned}: {word_count} words")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out: PathBuf = match args.iter().position(|a| a == "--out") {
        Some(i) => args.get(i + 1).ok_or("--out needs a directory")?.into(),
        None => PathBuf::from("docs"),
    };
    std::fs::create_dir_all(&out)?;

    let cache_dir = tempfile::tempdir()?;
    let text_processor = Pipeline::new([clean::node(), count::node()])?.with_name("text_processor");
    let analysis = Pipeline::new([text_processor.as_node(), summarize::node()])?
        .with_name("analysis")
        .with_cache(DiskCache::new(cache_dir.path()));

    let mut written = Vec::new();
    let mut write = |name: &str, text: String| -> std::io::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
        Ok(())
    };
    let collapsed = analysis.visualize(VisualizeOptions::default().depth(1));
    write("analysis-collapsed.mmd", collapsed.to_mermaid())?;
    write("analysis-collapsed.dot", collapsed.to_dot())?;
    write("analysis-collapsed.svg", collapsed.to_svg())?;
    let expanded = analysis.visualize(VisualizeOptions::default());
    write("analysis.mmd", expanded.to_mermaid())?;
    write("analysis.dot", expanded.to_dot())?;
    write("analysis.svg", expanded.to_svg())?;
    write(
        "analysis.html",
        analysis.visualize_html(VisualizeOptions::default().mapped(["text"]), &[]),
    )?;

    // Half the texts first, then all of them: the second map finds half
    // cached, and the picture says so per node.
    let texts: Vec<String> = (0..1000).map(|i| format!(" Text number {i} ")).collect();
    analysis.map(Inputs::new().with("text", texts[..500].to_vec()), ["text"])?;
    let recorder = Arc::new(Recorder::new());
    analysis
        .clone()
        .with_callback(recorder.clone())
        .map(Inputs::new().with("text", texts), ["text"])?;
    let after = analysis
        .visualize(VisualizeOptions::default().mapped(["text"]))
        .with_events(&recorder.events());
    write("analysis-after-run.mmd", after.to_mermaid())?;
    write("analysis-after-run.dot", after.to_dot())?;
    write("analysis-after-run.svg", after.to_svg())?;
    write(
        "analysis-after-run.html",
        analysis.visualize_html(
            VisualizeOptions::default().mapped(["text"]),
            &recorder.events(),
        ),
    )?;

    for path in &written {
        println!("wrote {}", path.display());
    }
    let summary: Vec<String> = after
        .outcomes
        .iter()
        .map(|(id, o)| format!("{id}: {}", o.summary()))
        .collect();
    println!("after the second map: {}", summary.join("; "));
    Ok(())
}
