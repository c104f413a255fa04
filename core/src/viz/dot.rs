//! [`GraphView`] as Graphviz DOT text.

use std::fmt::Write;

use super::{GraphView, Orientation, ViewKind, ViewNode};

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
    };
    format!(
        "{} [label={}, {style}{fill}];",
        quoted(&node.id),
        quoted(&label).replace("\\\\n", "\\n")
    )
}

impl GraphView {
    /// The graph as DOT text: nested pipelines as clusters, inputs as
    /// ellipses (bound ones dashed), collapsed pipelines as 3-D boxes,
    /// `map_over` nodes marked.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quoted(&self.name));
        let rank = match self.orientation {
            Orientation::TopDown => "TB",
            Orientation::LeftRight => "LR",
        };
        let _ = writeln!(out, "  rankdir={rank};");
        self.dot_scope(None, 1, &mut out);
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

    /// The nodes and clusters directly inside `cluster` (the top level for
    /// `None`), indented `depth` levels.
    fn dot_scope(&self, cluster: Option<usize>, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        for node in self.nodes.iter().filter(|n| n.cluster == cluster) {
            let _ = writeln!(out, "{pad}{}", node_line(node, self.outcomes.get(&node.id)));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.parent != cluster {
                continue;
            }
            let label = if c.map_over {
                format!("{} (map_over)", c.label)
            } else {
                c.label.clone()
            };
            let _ = writeln!(
                out,
                "{pad}subgraph {} {{",
                quoted(&format!("cluster_{}", c.id))
            );
            let _ = writeln!(out, "{pad}  label={};", quoted(&label));
            self.dot_scope(Some(i), depth + 1, out);
            let _ = writeln!(out, "{pad}}}");
        }
    }
}
