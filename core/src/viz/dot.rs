//! [`GraphView`] as Graphviz DOT text.

use std::fmt::Write;

use super::{GraphView, Orientation, ViewKind, ViewNode, Visit, cluster_title};

/// Escapes `text` for a double-quoted DOT string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A node's statement (coloured by `outcome`, after a run).
fn node_line(node: &ViewNode, outcome: Option<&super::NodeOutcome>) -> String {
    let mut label = if node.map_over {
        format!("{} (map_over)", node.label)
    } else {
        node.label.clone()
    };
    let mut fill = String::new();
    if let Some(outcome) = outcome {
        let summary = outcome.summary();
        if !summary.is_empty() {
            label = format!("{label}\\n{summary}");
        }
        if let Some(colour) = outcome.colour() {
            fill = format!(", style=filled, fillcolor={}", quoted(colour));
        }
    }
    let style = match node.kind {
        ViewKind::Function if node.map_over => "shape=box, peripheries=2",
        ViewKind::Function => "shape=box",
        ViewKind::Pipeline => "shape=box3d",
        ViewKind::Input => "shape=ellipse",
        ViewKind::Bound => "shape=ellipse, style=dashed",
        ViewKind::Mapped => "shape=ellipse, penwidth=2",
        ViewKind::Output => "shape=parallelogram",
    };
    format!(
        "{} [label={}, {style}{fill}];",
        quoted(&node.id),
        quoted(&label).replace("\\\\n", "\\n")
    )
}

impl GraphView {
    /// The graph as DOT text: nested pipelines as clusters, inputs as
    /// ellipses (bound ones dashed, mapped ones bold), collapsed pipelines
    /// as 3-D boxes, output values (when drawn apart) as parallelograms,
    /// `map_over` nodes marked.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quoted(&self.name));
        let rank = match self.orientation {
            Orientation::TopDown => "TB",
            Orientation::LeftRight => "LR",
        };
        let _ = writeln!(out, "  rankdir={rank};");
        self.walk(None, 1, &mut |visit| {
            let _ = match visit {
                Visit::Node(node, depth) => writeln!(
                    out,
                    "{}{}",
                    "  ".repeat(depth),
                    node_line(node, self.outcomes.get(&node.id))
                ),
                Visit::Open(c, depth) => {
                    let pad = "  ".repeat(depth);
                    writeln!(
                        out,
                        "{pad}subgraph {} {{\n{pad}  label={};",
                        quoted(&format!("cluster_{}", c.id)),
                        quoted(&cluster_title(c))
                    )
                }
                Visit::Close(depth) => writeln!(out, "{}}}", "  ".repeat(depth)),
            };
        });
        for edge in &self.edges {
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                quoted(&edge.from),
                quoted(&edge.to),
                quoted(&edge.label)
            );
        }
        out.push_str("}\n");
        out
    }
}
