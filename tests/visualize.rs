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

#[test]
fn mapped_inputs_and_separate_outputs_are_drawn_apart() {
    let options = VisualizeOptions::default()
        .depth(2)
        .mapped(["raw"])
        .separate_outputs();
    let view = docs().visualize(options);
    let outputs: Vec<&str> = view
        .nodes
        .iter()
        .filter(|n| n.kind == ViewKind::Output)
        .map(|n| n.label.as_str())
        .collect();
    assert_eq!(outputs, ["text", "words", "labels", "summary", "shouted"]);
    assert!(
        view.nodes
            .iter()
            .any(|n| n.kind == ViewKind::Mapped && n.label == "raw")
    );
    insta::assert_snapshot!("docs_separate_outputs_dot", view.to_dot());
    insta::assert_snapshot!("docs_separate_outputs_mermaid", view.to_mermaid());
}

/// The SVG's nodes (`data-id` of `g.node` outside the legend), edges
/// (`data-from`, `data-to`) and clusters (`data-id` of `g.cluster`).
type Parsed = (Vec<String>, Vec<(String, String)>, Vec<String>);

fn parse_svg(svg: &str) -> Parsed {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let has_class = |n: &roxmltree::Node<'_, '_>, class: &str| {
        n.attribute("class")
            .is_some_and(|c| c.split(' ').any(|x| x == class))
    };
    let groups: Vec<roxmltree::Node<'_, '_>> =
        root.descendants().filter(|n| n.has_tag_name("g")).collect();
    let in_legend = |n: &roxmltree::Node<'_, '_>| n.ancestors().any(|a| has_class(&a, "legend"));
    let nodes = groups
        .iter()
        .filter(|g| has_class(g, "node") && !in_legend(g))
        .map(|g| g.attribute("data-id").unwrap().to_string())
        .collect();
    let edges = groups
        .iter()
        .filter(|g| has_class(g, "edge"))
        .map(|g| {
            // Every edge is drawn: a path of at least two points.
            let path = g.children().find(|c| c.has_tag_name("path")).unwrap();
            assert!(path.attribute("d").unwrap().contains('L'));
            (
                g.attribute("data-from").unwrap().to_string(),
                g.attribute("data-to").unwrap().to_string(),
            )
        })
        .collect();
    let clusters = groups
        .iter()
        .filter(|g| has_class(g, "cluster"))
        .map(|g| g.attribute("data-id").unwrap().to_string())
        .collect();
    (nodes, edges, clusters)
}

#[test]
fn the_svg_holds_every_node_edge_and_cluster_laid_out_inside_its_clusters() {
    for options in [
        VisualizeOptions::default().depth(1),
        VisualizeOptions::default().depth(2),
        VisualizeOptions::default(),
        VisualizeOptions::default().left_right().separate_outputs(),
    ] {
        let view = docs().visualize(options);
        let (nodes, edges, clusters) = parse_svg(&view.to_svg());
        let want: Vec<String> = view.nodes.iter().map(|n| n.id.clone()).collect();
        assert_eq!(nodes, want);
        let want: Vec<(String, String)> = view
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        assert_eq!(edges, want);
        let want: Vec<String> = view.clusters.iter().map(|c| c.id.clone()).collect();
        assert_eq!(clusters, want);

        // Each node's box lies inside its cluster's box, and no two nodes
        // overlap.
        let layout = view.layout();
        for node in &view.nodes {
            let b = layout.nodes[&node.id];
            let mut at = node.cluster;
            while let Some(c) = at {
                let k = layout.clusters[c];
                assert!(
                    b.x - b.width / 2.0 >= k.x - k.width / 2.0
                        && b.x + b.width / 2.0 <= k.x + k.width / 2.0
                        && b.y - b.height / 2.0 >= k.y - k.height / 2.0
                        && b.y + b.height / 2.0 <= k.y + k.height / 2.0,
                    "{} inside {}",
                    node.id,
                    view.clusters[c].id
                );
                at = view.clusters[c].parent;
            }
        }
        for (i, a) in view.nodes.iter().enumerate() {
            for b in &view.nodes[i + 1..] {
                let (p, q) = (layout.nodes[&a.id], layout.nodes[&b.id]);
                let apart = (p.x - q.x).abs() * 2.0 >= p.width + q.width
                    || (p.y - q.y).abs() * 2.0 >= p.height + q.height;
                assert!(apart, "{} and {} overlap", a.id, b.id);
            }
        }
    }
}

#[test]
fn the_svg_legend_names_what_the_picture_shows() {
    let svg = docs()
        .visualize(VisualizeOptions::default().mapped(["raw"]))
        .to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let legend: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("legend"))
        .flat_map(|g| g.descendants().filter(|n| n.has_tag_name("text")))
        .filter_map(|t| t.text())
        .collect();
    assert_eq!(
        legend,
        [
            "function",
            "mapped input",
            "input",
            "bound input",
            "map_over"
        ]
    );
    let bare = docs()
        .visualize(VisualizeOptions::default().without_legend())
        .to_svg();
    assert!(!bare.contains("class=\"legend\""));
}

#[test]
fn the_html_page_holds_one_picture_per_depth_and_loads_nothing() {
    let page = docs().visualize_html(VisualizeOptions::default().depth(1), &[]);
    let views: Vec<&str> = page
        .match_indices("<div class=\"view\" data-depth=\"")
        .map(|(i, _)| &page[i..i + 40])
        .collect();
    assert_eq!(views.len(), 3, "depth 1, 2 and 3 (all expanded)");
    // The first view is shown, the others hidden.
    assert!(views[0].starts_with("<div class=\"view\" data-depth=\"1\">"));
    assert!(views[1].contains("hidden") && views[2].contains("hidden"));
    for name in ["clean", "per_doc", "shout"] {
        assert!(page.contains(&format!("data-label=\"{name}\"")), "{name}");
    }
    // Self-contained: no address to load anything from.
    for outside in ["src=", "href=", "http://", "https://"] {
        let found = page
            .match_indices(outside)
            .filter(|(i, _)| !page[*i..].starts_with("http://www.w3.org/2000/svg"))
            .count();
        assert_eq!(found, 0, "{outside}");
    }
}

/// The first of `names` found on the `PATH`.
fn program(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Runs `command`, failing the test if it has not finished within `secs`.
fn run_bounded(mut command: std::process::Command, secs: u64, what: &str) -> std::process::Output {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("{what}: no answer within {secs} s (hung)");
        }
    }
}

/// Headless Chromium renders the HTML page (its script run) to a
/// screenshot; OCR then reads each node's name back from the pixels where
/// the page says the node is drawn. `.ci/run` installs Debian's `chromium`
/// and `tesseract-ocr`; where they are absent the test says so and passes.
/// `HYPERNODES_SCREENSHOT=FILE` keeps the screenshot, to look at.
#[test]
fn chromium_renders_the_page_with_every_node_name() {
    let (Some(chromium), Some(tesseract)) = (
        program(&["chromium", "chromium-browser", "google-chrome"]),
        program(&["tesseract"]),
    ) else {
        eprintln!(
            "skipped: needs `chromium` and `tesseract` on the PATH (apt-get install chromium tesseract-ocr)"
        );
        return;
    };
    const SCALE: f64 = 2.0;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("docs.html");
    let png = dir.path().join("docs.png");
    std::fs::write(
        &page,
        docs().visualize_html(VisualizeOptions::default().mapped(["raw"]), &[]),
    )
    .unwrap();
    let browse = |extra: &[String]| {
        let mut command = std::process::Command::new(&chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=900,820",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .args(extra)
            .arg(format!("file://{}", page.display()));
        run_bounded(command, 120, "chromium")
    };
    browse(&[
        format!("--force-device-scale-factor={SCALE}"),
        format!("--screenshot={}", png.display()),
    ]);
    assert!(png.is_file(), "chromium wrote no screenshot");
    if let Ok(keep) = std::env::var("HYPERNODES_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    // Where the page drew its nodes, from the DOM after its script ran.
    let dom = String::from_utf8(browse(&["--dump-dom".to_string()]).stdout).unwrap();
    let attr = dom
        .split("data-nodes=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page reports where its nodes are")
        .replace("&quot;", "\"");
    let nodes: Vec<(String, f64, f64, f64, f64)> = serde_json::from_str(&attr).unwrap();
    let mut labels: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [
            "clean",
            "excl",
            "label",
            "raw",
            "shout",
            "split",
            "suffix",
            "summarize"
        ]
    );

    // Each node's inside, cut out of the screenshot, read by OCR.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    for (label, x, y, w, h) in &nodes {
        // Inside the outline: a quarter of the height off the top and
        // bottom, a sixth of the width off each side.
        let x0 = ((x + w / 6.0) * SCALE) as usize;
        let x1 = ((x + w * 5.0 / 6.0) * SCALE) as usize;
        let y0 = ((y + h / 4.0) * SCALE) as usize;
        let y1 = ((y + h * 3.0 / 4.0) * SCALE) as usize;
        assert!(x1 <= info.width as usize && y1 <= info.height as usize);
        let (cw, ch) = (x1 - x0, y1 - y0);
        let mut crop = Vec::with_capacity(cw * ch);
        for row in y0..y1 {
            for col in x0..x1 {
                let at = (row * info.width as usize + col) * channels;
                // Grey from the red, green and blue samples.
                let grey = (pixels[at] as u32 + pixels[at + 1] as u32 + pixels[at + 2] as u32) / 3;
                crop.push(grey as u8);
            }
        }
        let cut = dir.path().join(format!("{label}.png"));
        let mut encoder = png::Encoder::new(
            std::io::BufWriter::new(std::fs::File::create(&cut).unwrap()),
            cw as u32,
            ch as u32,
        );
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&crop)
            .unwrap();
        let mut command = std::process::Command::new(&tesseract);
        command.arg(&cut).arg("stdout").args(["--psm", "7"]);
        let read = run_bounded(command, 60, "tesseract");
        let text = String::from_utf8_lossy(&read.stdout);
        assert_eq!(text.trim(), label, "OCR of node `{label}`");
    }
}

/// The page's script, run by headless Chromium: opened at depth 2 with
/// `split` picked (`#depth=2&node=split`), the depth-2 picture is shown
/// and `split`'s upstream and downstream are highlighted, nothing else.
#[test]
fn chromium_runs_the_page_script_to_expand_and_highlight() {
    let Some(chromium) = program(&["chromium", "chromium-browser", "google-chrome"]) else {
        eprintln!("skipped: needs `chromium` on the PATH (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("docs.html");
    std::fs::write(
        &page,
        docs().visualize_html(VisualizeOptions::default().depth(1), &[]),
    )
    .unwrap();
    let mut command = std::process::Command::new(chromium);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("file://{}#depth=2&node=split", page.display()));
    let dom = String::from_utf8(run_bounded(command, 120, "chromium").stdout).unwrap();
    // Chromium's DOM dump is HTML, not XML: read what is needed by text.
    let view = |depth: usize| {
        let at = dom
            .find(&format!("<div class=\"view\" data-depth=\"{depth}\""))
            .unwrap();
        let end = dom[at..].find("</div>").unwrap();
        &dom[at..at + end]
    };
    assert!(view(1).contains("hidden"));
    assert!(!view(2)[..60].contains("hidden"), "depth 2 is shown");
    assert!(view(3).contains("hidden"));
    let shown = view(2);
    let class_of = |id: &str| {
        let at = shown.find(&format!("data-id=\"{id}\"")).unwrap();
        let start = shown[..at].rfind("class=\"").unwrap();
        shown[start + 7..].split('"').next().unwrap().to_string()
    };
    assert!(class_of("n_docs__per_doc__split").contains("picked"));
    // Upstream: clean and raw; downstream: per_word, summarize, shout.
    for id in [
        "i_docs__raw",
        "n_docs__clean",
        "n_docs__per_doc__per_word",
        "n_docs__per_doc__summarize",
        "n_docs__shout",
    ] {
        assert!(class_of(id).contains("hl"), "{id}: {}", class_of(id));
    }
    // Neither upstream nor downstream of `split`: the bound `excl`.
    assert!(!class_of("i_docs__excl").contains("hl"));
}
