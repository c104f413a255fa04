//! [`GraphView`] as SVG, laid out in pure Rust by the `dagre` crate (a port
//! of dagre.js: layered layout with nested clusters), with no system
//! program involved.
//!
//! Every drawn element carries data attributes (`data-id` on nodes and
//! clusters, `data-from`/`data-to` on edges) so a page can find the graph's
//! structure in the picture; the HTML view's script uses them.

use std::collections::HashMap;
use std::fmt::Write;

use dagre::graph::{Graph, GraphOptions};
use dagre::{EdgeLabel, GraphLabel, LayoutOptions, NodeLabel, RankDir};

use super::{GraphView, NodeOutcome, Orientation, ViewKind, ViewNode, cluster_title};

/// Width of one character of label text, in pixels (12 px sans-serif).
const CHAR_WIDTH: f64 = 7.0;
/// Height of one line of label text.
const LINE_HEIGHT: f64 = 16.0;
/// Room above a cluster's first row for its title.
const TITLE_ROOM: f64 = 22.0;

/// A laid-out box: its centre and size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    /// Centre, x.
    pub x: f64,
    /// Centre, y.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// Where everything of a [`GraphView`] goes (see [`GraphView::layout`]).
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Width of the drawing.
    pub width: f64,
    /// Height of the drawing (the legend not included).
    pub height: f64,
    /// Each node's box, by node id.
    pub nodes: HashMap<String, Placed>,
    /// Each cluster's box, by cluster index.
    pub clusters: Vec<Placed>,
    /// Each edge's route, in the order of [`GraphView::edges`].
    pub edges: Vec<Route>,
}

/// Where an edge goes: its points, from its producer to its consumer, and
/// where its label is drawn (if it has one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    /// The points of the line, in order.
    pub points: Vec<(f64, f64)>,
    /// The centre of the label.
    pub label: Option<(f64, f64)>,
}

/// A node's lines of text: its name (`map_over` marked), then what
/// happened to it, after a run.
fn node_lines(node: &ViewNode, outcome: Option<&NodeOutcome>) -> Vec<String> {
    let mut lines = vec![if node.map_over {
        format!("{} (map_over)", node.label)
    } else {
        node.label.clone()
    }];
    if let Some(summary) = outcome.map(|o| o.summary()).filter(|s| !s.is_empty()) {
        lines.push(summary);
    }
    lines
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

impl GraphView {
    /// Lays the graph out: a box per node and cluster, points per edge.
    pub fn layout(&self) -> Layout {
        let mut g: Graph<NodeLabel, EdgeLabel> = Graph::with_options(GraphOptions {
            directed: true,
            multigraph: true,
            compound: true,
        });
        for c in &self.clusters {
            g.set_node(c.id.clone(), Some(NodeLabel::default()));
        }
        for c in &self.clusters {
            if let Some(parent) = c.parent {
                g.set_parent(&c.id, Some(&self.clusters[parent].id));
            }
        }
        // Clusters get a row of room for their title: an invisible spacer
        // above their nodes.
        for (i, c) in self.clusters.iter().enumerate() {
            let spacer = format!("{}__title", c.id);
            let label = NodeLabel {
                width: text_width(&cluster_title(c)) + 16.0,
                height: TITLE_ROOM - 10.0,
                ..NodeLabel::default()
            };
            g.set_node(spacer.clone(), Some(label));
            g.set_parent(&spacer, Some(&self.clusters[i].id));
        }
        for node in &self.nodes {
            let lines = node_lines(node, self.outcomes.get(&node.id));
            let widest = lines.iter().map(|l| text_width(l)).fold(0.0, f64::max);
            let label = NodeLabel {
                width: (widest + 40.0).max(80.0),
                height: 28.0 + LINE_HEIGHT * lines.len() as f64,
                ..NodeLabel::default()
            };
            g.set_node(node.id.clone(), Some(label));
            if let Some(c) = node.cluster {
                g.set_parent(&node.id, Some(&self.clusters[c].id));
            }
        }
        // Each cluster's title spacer sits above the cluster's first nodes.
        for (i, c) in self.clusters.iter().enumerate() {
            let spacer = format!("{}__title", c.id);
            for node in self.nodes.iter().filter(|n| n.cluster == Some(i)) {
                let led = self
                    .edges
                    .iter()
                    .any(|e| e.to == node.id && self.in_cluster(&e.from, i));
                if !led {
                    let edge = EdgeLabel {
                        weight: 0,
                        ..EdgeLabel::default()
                    };
                    g.set_edge(&spacer, &node.id, Some(edge), Some("title"));
                }
            }
        }
        for (i, e) in self.edges.iter().enumerate() {
            let label = EdgeLabel {
                width: if e.label.is_empty() {
                    0.0
                } else {
                    text_width(&e.label) + 6.0
                },
                height: if e.label.is_empty() { 0.0 } else { 14.0 },
                ..EdgeLabel::default()
            };
            g.set_edge(&e.from, &e.to, Some(label), Some(&format!("e{i}")));
        }
        let options = LayoutOptions {
            rankdir: match self.orientation {
                Orientation::TopDown => RankDir::TB,
                Orientation::LeftRight => RankDir::LR,
            },
            nodesep: 30.0,
            ranksep: 40.0,
            edgesep: 12.0,
            marginx: 16.0,
            marginy: 16.0,
            ..LayoutOptions::default()
        };
        dagre::layout(&mut g, Some(options));

        let placed = |label: &NodeLabel| Placed {
            x: label.x.unwrap_or(0.0),
            y: label.y.unwrap_or(0.0),
            width: label.width,
            height: label.height,
        };
        let mut layout = Layout::default();
        if let Some(gl) = g.graph_label::<GraphLabel>() {
            layout.width = gl.width;
            layout.height = gl.height;
        }
        for node in &self.nodes {
            if let Some(label) = g.node(&node.id) {
                layout.nodes.insert(node.id.clone(), placed(label));
            }
        }
        for c in &self.clusters {
            layout
                .clusters
                .push(g.node(&c.id).map(placed).unwrap_or(Placed {
                    x: 0.0,
                    y: 0.0,
                    width: 0.0,
                    height: 0.0,
                }));
        }
        for (i, e) in self.edges.iter().enumerate() {
            let label = g.edge(&e.from, &e.to, Some(&format!("e{i}")));
            let points = label
                .map(|l| l.points.iter().map(|p| (p.x, p.y)).collect())
                .unwrap_or_default();
            let at = label
                .filter(|_| !e.label.is_empty())
                .and_then(|l| Some((l.x?, l.y?)));
            layout.edges.push(Route { points, label: at });
        }
        layout
    }

    /// Whether node `id` is drawn inside cluster `cluster` (at any depth).
    fn in_cluster(&self, id: &str, cluster: usize) -> bool {
        let mut at = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.cluster);
        while let Some(c) = at {
            if c == cluster {
                return true;
            }
            at = self.clusters[c].parent;
        }
        false
    }

    /// The graph as a self-contained SVG picture: nested pipelines as
    /// boxes around their nodes, inputs as ellipses (mapped ones bold,
    /// bound ones dashed), collapsed pipelines as double boxes, output
    /// values (when drawn apart) as slanted boxes, `map_over` nodes marked,
    /// and, after a run, each node coloured and labelled by what happened
    /// to it; a legend below (see [`VisualizeOptions::legend`]).
    ///
    /// [`VisualizeOptions::legend`]: super::VisualizeOptions::legend
    pub fn to_svg(&self) -> String {
        let layout = self.layout();
        let legend = if self.legend {
            self.legend()
        } else {
            Vec::new()
        };
        let legend_height = if legend.is_empty() { 0.0 } else { 34.0 };
        let legend_width: f64 = legend
            .iter()
            .map(|(_, text)| text_width(text) + 44.0)
            .sum::<f64>()
            + 16.0;
        let width = layout
            .width
            .max(if legend.is_empty() { 0.0 } else { legend_width });
        let height = layout.height + legend_height;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="hypernodes-graph" data-pipeline="{}" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">"#,
            escape(&self.name),
            w = width.ceil(),
            h = height.ceil(),
        );
        out.push_str(MARKER);
        out.push_str(STYLE);
        let _ = writeln!(out, "<title>{}</title>", escape(&self.name));
        // Clusters, outermost first, so inner ones are drawn on top.
        for (i, c) in self.clusters.iter().enumerate() {
            let b = layout.clusters[i];
            let (x0, y0) = (b.x - b.width / 2.0, b.y - b.height / 2.0);
            let _ = writeln!(
                out,
                r#"<g class="cluster{}" data-id="{}"><rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="6"/><text class="title" x="{:.1}" y="{:.1}">{}</text></g>"#,
                if c.map_over { " map-over" } else { "" },
                escape(&c.id),
                b.width,
                b.height,
                x0 + 8.0,
                y0 + 15.0,
                escape(&cluster_title(c)),
            );
        }
        for (e, route) in self.edges.iter().zip(&layout.edges) {
            let path: Vec<String> = route
                .points
                .iter()
                .enumerate()
                .map(|(k, (x, y))| format!("{}{x:.1},{y:.1}", if k == 0 { "M" } else { "L" }))
                .collect();
            let _ = write!(
                out,
                r#"<g class="edge" data-from="{}" data-to="{}"><path d="{}" marker-end="url(#hn-arrow)"/>"#,
                escape(&e.from),
                escape(&e.to),
                path.join(" ")
            );
            if let Some((x, y)) = route.label {
                let _ = write!(
                    out,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    y + 4.0,
                    escape(&e.label)
                );
            }
            out.push_str("</g>\n");
        }
        for node in &self.nodes {
            let Some(b) = layout.nodes.get(&node.id) else {
                continue;
            };
            let outcome = self.outcomes.get(&node.id);
            out.push_str(&node_svg(node, b, outcome));
        }
        if !legend.is_empty() {
            let mut x = 12.0;
            let y = layout.height + 8.0;
            let _ = write!(out, r#"<g class="legend">"#);
            for (class, text) in &legend {
                let _ = write!(
                    out,
                    r#"<g class="{class}"><rect x="{x:.1}" y="{y:.1}" width="26" height="16" rx="3"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
                    x + 32.0,
                    y + 12.5,
                    escape(text)
                );
                x += text_width(text) + 44.0;
            }
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        out
    }

    /// The legend's entries (a CSS class, a text) for what this view
    /// shows: its kinds of node, then the outcomes of a run.
    fn legend(&self) -> Vec<(&'static str, String)> {
        let mut entries = Vec::new();
        let has = |kind: ViewKind| self.nodes.iter().any(|n| n.kind == kind);
        let kinds = [
            (ViewKind::Function, "node function", "function"),
            (
                ViewKind::Pipeline,
                "node pipeline",
                "nested pipeline (collapsed)",
            ),
            (ViewKind::Mapped, "node mapped", "mapped input"),
            (ViewKind::Input, "node input", "input"),
            (ViewKind::Bound, "node bound", "bound input"),
            (ViewKind::Output, "node output", "output value"),
        ];
        for (kind, class, text) in kinds {
            if has(kind) {
                entries.push((class, text.to_string()));
            }
        }
        if self.nodes.iter().any(|n| n.map_over) || self.clusters.iter().any(|c| c.map_over) {
            entries.push(("node function map-over", "map_over".to_string()));
        }
        let outcomes: Vec<&NodeOutcome> = self.outcomes.values().collect();
        let mut seen = |class: &'static str, text: &str, test: fn(&NodeOutcome) -> bool| {
            if outcomes.iter().any(|o| test(o)) {
                entries.push((class, text.to_string()));
            }
        };
        seen("node outcome-computed", "computed", |o| {
            o.computed > 0 && o.cached == 0 && o.failed == 0
        });
        seen("node outcome-cached", "cached", |o| {
            o.cached > 0 && o.computed == 0 && o.failed == 0
        });
        seen("node outcome-partial", "partly cached", |o| {
            o.cached > 0 && o.computed > 0 && o.failed == 0
        });
        seen("node outcome-failed", "failed", |o| o.failed > 0);
        entries
    }
}

/// One node's SVG group.
fn node_svg(node: &ViewNode, b: &Placed, outcome: Option<&NodeOutcome>) -> String {
    let kind = match node.kind {
        ViewKind::Function => "function",
        ViewKind::Pipeline => "pipeline",
        ViewKind::Input => "input",
        ViewKind::Bound => "bound",
        ViewKind::Mapped => "mapped",
        ViewKind::Output => "output",
    };
    let mut class = format!("node {kind}");
    if node.map_over {
        class.push_str(" map-over");
    }
    let fill = outcome.and_then(NodeOutcome::colour);
    if let Some(o) = outcome.filter(|_| fill.is_some()) {
        class.push_str(match (o.failed, o.cached, o.computed) {
            (f, _, _) if f > 0 => " outcome-failed",
            (_, c, n) if c > 0 && n > 0 => " outcome-partial",
            (_, c, _) if c > 0 => " outcome-cached",
            _ => " outcome-computed",
        });
    }
    let (x0, y0) = (b.x - b.width / 2.0, b.y - b.height / 2.0);
    let shape = match node.kind {
        ViewKind::Input | ViewKind::Bound | ViewKind::Mapped => format!(
            r#"<ellipse cx="{:.1}" cy="{:.1}" rx="{:.1}" ry="{:.1}"/>"#,
            b.x,
            b.y,
            b.width / 2.0,
            b.height / 2.0
        ),
        ViewKind::Output => {
            let s = 8.0;
            format!(
                r#"<polygon points="{:.1},{y0:.1} {:.1},{y0:.1} {:.1},{:.1} {x0:.1},{:.1}"/>"#,
                x0 + s,
                x0 + b.width,
                x0 + b.width - s,
                y0 + b.height,
                y0 + b.height,
            )
        }
        ViewKind::Pipeline => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="4"/><rect class="inner" x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="4"/>"#,
            x0 + 4.0,
            y0 + 4.0,
            b.width - 4.0,
            b.height - 4.0,
            b.width - 4.0,
            b.height - 4.0
        ),
        ViewKind::Function => format!(
            r#"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="6"/>"#,
            b.width, b.height
        ),
    };
    let lines = node_lines(node, outcome);
    let first = b.y - (lines.len() as f64 - 1.0) * LINE_HEIGHT / 2.0 + 4.0;
    let mut text = String::new();
    for (k, line) in lines.iter().enumerate() {
        let _ = write!(
            text,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle"{}>{}</text>"#,
            b.x,
            first + k as f64 * LINE_HEIGHT,
            if k > 0 { r#" class="summary""# } else { "" },
            escape(line)
        );
    }
    format!(
        "<g class=\"{class}\" data-id=\"{}\" data-label=\"{}\">{shape}{text}</g>\n",
        escape(&node.id),
        escape(&node.label),
    )
}

/// Escapes text for XML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The picture's styles (outcome colours as [`NodeOutcome::colour`]).
/// The arrowhead every edge ends with. A page holding several pictures
/// defines it once where it is always shown (see the HTML view): a marker
/// inside a hidden picture draws nowhere.
pub(crate) const MARKER: &str = r##"<defs><marker id="hn-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>
"##;

const STYLE: &str = r##"<style>
.hypernodes-graph .cluster rect { fill: #f6f8fa; stroke: #8c959f; stroke-width: 1; }
.hypernodes-graph .cluster.map-over rect { stroke-dasharray: 6 3; stroke-width: 1.5; }
.hypernodes-graph .cluster .title { font-weight: bold; fill: #57606a; }
.hypernodes-graph .edge path { fill: none; stroke: #555; stroke-width: 1.2; }
.hypernodes-graph .edge text { fill: #57606a; font-size: 11px; }
.hypernodes-graph .node rect, .hypernodes-graph .node ellipse, .hypernodes-graph .node polygon { fill: #ffffff; stroke: #24292f; stroke-width: 1.2; }
.hypernodes-graph .node.input ellipse { fill: #eef4ff; }
.hypernodes-graph .node.mapped ellipse { fill: #eef4ff; stroke-width: 2.6; }
.hypernodes-graph .node.bound ellipse { fill: #f6f8fa; stroke-dasharray: 4 3; }
.hypernodes-graph .node.output polygon { fill: #fffbea; }
.hypernodes-graph .node.map-over rect { stroke-width: 2.6; }
.hypernodes-graph .node .summary { font-size: 11px; fill: #24292f; }
.hypernodes-graph .node.outcome-computed rect, .hypernodes-graph .node.outcome-computed polygon { fill: #98fb98; }
.hypernodes-graph .node.outcome-cached rect, .hypernodes-graph .node.outcome-cached polygon { fill: #add8e6; }
.hypernodes-graph .node.outcome-partial rect, .hypernodes-graph .node.outcome-partial polygon { fill: #f0e68c; }
.hypernodes-graph .node.outcome-failed rect, .hypernodes-graph .node.outcome-failed polygon { fill: #fa8072; }
.hypernodes-graph .legend text { fill: #24292f; }
.hypernodes-graph .legend .node.mapped rect { stroke-width: 2.6; fill: #eef4ff; }
.hypernodes-graph .legend .node.input rect { fill: #eef4ff; rx: 8; }
.hypernodes-graph .legend .node.bound rect { stroke-dasharray: 4 3; fill: #f6f8fa; }
.hypernodes-graph .legend .node.output rect { fill: #fffbea; }
.hypernodes-graph .legend .node.pipeline rect { stroke-width: 3; stroke: #24292f; }
</style>
"##;
