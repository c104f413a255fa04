//! A pipeline's picture as one self-contained HTML page: an SVG per depth
//! of nesting (laid out in Rust, see [`GraphView::to_svg`]), buttons to
//! switch between them, and a short script of our own: clicking a
//! collapsed pipeline expands it (the next depth), clicking a nested
//! pipeline's title collapses it, and clicking a node highlights what it
//! depends on and what depends on it; `#depth=2&node=clean` at the end of
//! its address opens it that way. The page loads nothing from the
//! network.

use std::fmt::Write;

use super::svg::{MARKER, escape};
use super::{Depth, GraphView, VisualizeOptions};
use crate::observe::Event;
use crate::pipeline::Pipeline;

impl Pipeline {
    /// This pipeline's picture as a self-contained HTML page (see the
    /// module docs): one view per depth of nesting, starting at
    /// `options.depth`, coloured by what happened in `events` (a
    /// [`Recorder`](crate::observe::Recorder)'s events of a run or map of
    /// this pipeline; empty for none).
    ///
    /// ```
    /// use hypernodes_core::{Pipeline, node};
    /// use hypernodes_core::viz::VisualizeOptions;
    ///
    /// #[node(output = "cleaned")]
    /// fn clean(text: &str) -> String { text.trim().to_lowercase() }
    ///
    /// let p = Pipeline::new([clean::node()]).unwrap().with_name("text");
    /// let page = p.visualize_html(VisualizeOptions::default(), &[]);
    /// assert!(page.starts_with("<!DOCTYPE html>"));
    /// assert!(page.contains(r#"data-label="clean""#));
    /// ```
    pub fn visualize_html(&self, options: VisualizeOptions, events: &[Event]) -> String {
        let full = self.visualize(VisualizeOptions {
            depth: Depth::Full,
            ..options.clone()
        });
        let deepest = full.nesting_depth() + 1;
        let start = match options.depth {
            Depth::Full => deepest,
            Depth::Levels(n) => n.clamp(1, deepest),
        };
        let mut views = String::new();
        let mut buttons = String::new();
        for depth in 1..=deepest {
            let view = self
                .visualize(VisualizeOptions {
                    depth: Depth::Levels(depth),
                    ..options.clone()
                })
                .with_events(events);
            let _ = writeln!(
                views,
                "<div class=\"view\" data-depth=\"{depth}\"{}>\n{}</div>",
                if depth == start { "" } else { " hidden" },
                view.to_svg()
            );
            let name = if depth == deepest && depth > 1 {
                "all expanded".to_string()
            } else if depth == 1 && deepest > 1 {
                "collapsed".to_string()
            } else {
                format!("depth {depth}")
            };
            let _ = write!(
                buttons,
                "<button data-depth=\"{depth}\"{}>{name}</button>",
                if depth == start {
                    " class=\"active\""
                } else {
                    ""
                }
            );
        }
        let title = escape(&full.name);
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<svg width=\"0\" height=\"0\" style=\"position:absolute\">{MARKER}</svg>\n<header><h1>{title}</h1><nav>{buttons}</nav>\n<p class=\"help\">Click a collapsed pipeline to expand it, a pipeline's title to collapse it, a node to see what it depends on and what depends on it; click the background to clear.</p></header>\n<main>\n{views}</main>\n<script>{PAGE_SCRIPT}</script>\n</body>\n</html>\n"
        )
    }
}

impl GraphView {
    /// How deeply the drawn clusters nest (0: none).
    pub(crate) fn nesting_depth(&self) -> usize {
        (0..self.clusters.len())
            .map(|mut c| {
                let mut depth = 1;
                while let Some(p) = self.clusters[c].parent {
                    depth += 1;
                    c = p;
                }
                depth
            })
            .max()
            .unwrap_or(0)
    }
}

const PAGE_STYLE: &str = r#"
body { font-family: sans-serif; margin: 16px; color: #24292f; background: #fff; }
header h1 { font-size: 18px; margin: 0 0 8px 0; }
nav button { margin-right: 6px; padding: 3px 10px; border: 1px solid #8c959f; border-radius: 4px; background: #f6f8fa; cursor: pointer; }
nav button.active { background: #24292f; color: #fff; }
.help { font-size: 12px; color: #57606a; }
.view svg .node, .view svg .cluster .title { cursor: pointer; }
.view svg.focused .node, .view svg.focused .edge { opacity: 0.25; }
.view svg.focused .node.hl, .view svg.focused .edge.hl { opacity: 1; }
.view svg .node.picked rect, .view svg .node.picked ellipse, .view svg .node.picked polygon { stroke: #0969da; stroke-width: 3; }
"#;

/// The page's script: switching depth, expanding and collapsing, and
/// highlighting a node's upstream and downstream. Written for this page.
const PAGE_SCRIPT: &str = r#"
(function () {
  var views = Array.prototype.slice.call(document.querySelectorAll('.view'));
  var buttons = Array.prototype.slice.call(document.querySelectorAll('nav button'));
  var deepest = views.length;
  // Where the shown picture's nodes are drawn, as JSON in the page's
  // `data-nodes` attribute ([label, x, y, width, height] in CSS pixels):
  // for tools that check the picture, such as our browser test.
  function measure() {
    var shown = views.filter(function (v) { return !v.hidden; })[0];
    if (!shown) { return; }
    var nodes = Array.prototype.slice.call(shown.querySelectorAll('svg > .node'));
    document.documentElement.setAttribute('data-nodes', JSON.stringify(nodes.map(function (n) {
      var r = n.getBoundingClientRect();
      return [n.dataset.label, r.x, r.y, r.width, r.height];
    })));
  }
  function show(depth) {
    depth = Math.max(1, Math.min(deepest, depth));
    views.forEach(function (v) { v.hidden = Number(v.dataset.depth) !== depth; });
    buttons.forEach(function (b) { b.classList.toggle('active', Number(b.dataset.depth) === depth); });
    measure();
  }
  buttons.forEach(function (b) {
    b.addEventListener('click', function () { show(Number(b.dataset.depth)); });
  });
  function clear(svg) {
    svg.classList.remove('focused');
    svg.querySelectorAll('.hl, .picked').forEach(function (e) { e.classList.remove('hl', 'picked'); });
  }
  function reach(edges, start, forward) {
    var seen = {}; seen[start] = true;
    var todo = [start];
    while (todo.length) {
      var at = todo.pop();
      edges.forEach(function (e) {
        var from = e.dataset.from, to = e.dataset.to;
        var next = forward ? (from === at ? to : null) : (to === at ? from : null);
        if (next !== null) {
          e.classList.add('hl');
          if (!seen[next]) { seen[next] = true; todo.push(next); }
        }
      });
    }
    return seen;
  }
  // Highlights `node` of `svg`, what it depends on and what depends on it.
  function pick(svg, node) {
    clear(svg);
    var edges = Array.prototype.slice.call(svg.querySelectorAll('.edge'));
    var id = node.dataset.id;
    var up = reach(edges, id, false), down = reach(edges, id, true);
    svg.querySelectorAll('.node').forEach(function (n) {
      if (up[n.dataset.id] || down[n.dataset.id]) { n.classList.add('hl'); }
    });
    node.classList.add('picked');
    svg.classList.add('focused');
  }
  views.forEach(function (view) {
    var svg = view.querySelector('svg');
    var depth = Number(view.dataset.depth);
    svg.addEventListener('click', function (event) {
      var title = event.target.closest('.cluster .title');
      if (title) { show(depth - 1); return; }
      var node = event.target.closest('.node');
      if (!node || node.closest('.legend')) { clear(svg); return; }
      if (node.classList.contains('pipeline') && depth < deepest) { show(depth + 1); return; }
      pick(svg, node);
    });
  });
  // A link can open the page at a depth and with a node picked:
  // `page.html#depth=2&node=clean`.
  var wanted = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (part) {
    var kv = part.split('=');
    if (kv.length === 2) { wanted[kv[0]] = decodeURIComponent(kv[1]); }
  });
  if (wanted.depth) { show(Number(wanted.depth)); }
  if (wanted.node) {
    views.forEach(function (view) {
      if (view.hidden) { return; }
      var svg = view.querySelector('svg');
      svg.querySelectorAll('svg > .node').forEach(function (n) {
        if (n.dataset.label === wanted.node) { pick(svg, n); }
      });
    });
  }
  measure();
})();
"#;
