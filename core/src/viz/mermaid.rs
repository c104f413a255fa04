//! [`GraphView`] as Mermaid flowchart text.

use std::fmt::Write;

use super::{GraphView, Orientation, ViewKind, ViewNode, Visit, cluster_title};

/// Escapes `text` for a quoted Mermaid label.
fn label(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "#quot;"))
}

/// A node's statement (with what happened to it, after a run).
fn node_line(node: &ViewNode, outcome: Option<&super::NodeOutcome>) -> String {
    let mut text = if node.map_over {
        format!("{} (map_over)", node.label)
    } else {
        node.label.clone()
    };
    if let Some(summary) = outcome.map(|o| o.summary()).filter(|s| !s.is_empty()) {
        text = format!("{text}<br/>{summary}");
    }
    let text = label(&text);
    match node.kind {
        ViewKind::Function => format!("{}[{text}]", node.id),
        ViewKind::Pipeline => format!("{}[[{text}]]", node.id),
        ViewKind::Input => format!("{}([{text}])", node.id),
        ViewKind::Bound => format!("{}{{{{{text}}}}}", node.id),
        ViewKind::Mapped => format!("{}>{text}]", node.id),
        ViewKind::Output => format!("{}[/{text}/]", node.id),
    }
}

impl GraphView {
    /// The graph as a Mermaid flowchart: nested pipelines as subgraphs,
    /// inputs as stadiums (bound ones as hexagons, mapped ones as flags),
    /// collapsed pipelines as subroutines, output values (when drawn
    /// apart) as parallelograms, `map_over` nodes marked.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::new();
        let dir = match self.orientation {
            Orientation::TopDown => "TB",
            Orientation::LeftRight => "LR",
        };
        let _ = writeln!(out, "flowchart {dir}");
        self.walk(None, 1, &mut |visit| {
            let _ = match visit {
                Visit::Node(node, depth) => writeln!(
                    out,
                    "{}{}",
                    "  ".repeat(depth),
                    node_line(node, self.outcomes.get(&node.id))
                ),
                Visit::Open(c, depth) => writeln!(
                    out,
                    "{}subgraph {}[{}]",
                    "  ".repeat(depth),
                    c.id,
                    label(&cluster_title(c))
                ),
                Visit::Close(depth) => writeln!(out, "{}end", "  ".repeat(depth)),
            };
        });
        for edge in &self.edges {
            let _ = if edge.label.is_empty() {
                writeln!(out, "  {} --> {}", edge.from, edge.to)
            } else {
                writeln!(
                    out,
                    "  {} -->|{}| {}",
                    edge.from,
                    label(&edge.label),
                    edge.to
                )
            };
        }
        for (id, outcome) in &self.outcomes {
            if let Some(colour) = outcome.colour() {
                let _ = writeln!(out, "  style {id} fill:{colour}");
            }
        }
        out
    }
}
