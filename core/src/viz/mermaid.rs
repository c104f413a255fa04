//! [`GraphView`] as Mermaid flowchart text.

use std::fmt::Write;

use super::{GraphView, Orientation, ViewKind, ViewNode};

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
    }
}

impl GraphView {
    /// The graph as a Mermaid flowchart: nested pipelines as subgraphs,
    /// inputs as stadiums (bound ones as hexagons), collapsed pipelines as
    /// subroutines, `map_over` nodes marked.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::new();
        let dir = match self.orientation {
            Orientation::TopDown => "TB",
            Orientation::LeftRight => "LR",
        };
        let _ = writeln!(out, "flowchart {dir}");
        self.mermaid_scope(None, 1, &mut out);
        for edge in &self.edges {
            let _ = writeln!(
                out,
                "  {} -->|{}| {}",
                edge.from,
                label(&edge.label),
                edge.to
            );
        }
        for (id, outcome) in &self.outcomes {
            if let Some(colour) = outcome.colour() {
                let _ = writeln!(out, "  style {id} fill:{colour}");
            }
        }
        out
    }

    fn mermaid_scope(&self, cluster: Option<usize>, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        for node in self.nodes.iter().filter(|n| n.cluster == cluster) {
            let _ = writeln!(out, "{pad}{}", node_line(node, self.outcomes.get(&node.id)));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.parent != cluster {
                continue;
            }
            let text = if c.map_over {
                format!("{} (map_over)", c.label)
            } else {
                c.label.clone()
            };
            let _ = writeln!(out, "{pad}subgraph {}[{}]", c.id, label(&text));
            self.mermaid_scope(Some(i), depth + 1, out);
            let _ = writeln!(out, "{pad}end");
        }
    }
}
