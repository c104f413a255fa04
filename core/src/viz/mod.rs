//! A picture of a pipeline: [`Pipeline::visualize`] describes its graph
//! ([`GraphView`]: nodes, the values on the edges, the pipeline's inputs,
//! nested pipelines as clusters expanded to a chosen depth or collapsed to
//! one node), which renders as SVG laid out in Rust ([`GraphView::to_svg`]),
//! DOT ([`GraphView::to_dot`]) or Mermaid ([`GraphView::to_mermaid`])
//! text; [`Pipeline::visualize_html`] makes a self-contained page to
//! expand, collapse and explore it. After a run, [`GraphView::with_events`]
//! colours each node by what happened to it.

use std::collections::HashMap;

use crate::node::{Node, NodeKind};
use crate::pipeline::Pipeline;

mod dot;
mod html;
mod mermaid;
mod outcome;
mod svg;

pub use outcome::NodeOutcome;
pub use svg::{Layout, Placed, Route};

/// How deep nested pipelines are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Depth {
    /// Every nested pipeline expanded, at any depth.
    #[default]
    Full,
    /// Nested pipelines expanded down to this many levels (1: only the
    /// pipeline's own nodes, nested ones collapsed to one node each).
    Levels(usize),
}

/// Which way the graph flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Orientation {
    /// Top to bottom.
    #[default]
    TopDown,
    /// Left to right.
    LeftRight,
}

/// Options of [`Pipeline::visualize`].
#[derive(Clone, Debug)]
pub struct VisualizeOptions {
    /// How deep nested pipelines are drawn.
    pub depth: Depth,
    /// Which way the graph flows.
    pub orientation: Orientation,
    /// Inputs drawn as mapped (one value per item of a `map`), apart from
    /// the inputs given once and the bound ones.
    pub mapped: Vec<String>,
    /// Each output value drawn as a node of its own between its producer
    /// and its consumers.
    pub separate_outputs: bool,
    /// Whether the SVG and HTML pictures carry a legend (on by default).
    pub legend: bool,
}

impl Default for VisualizeOptions {
    fn default() -> Self {
        Self {
            depth: Depth::Full,
            orientation: Orientation::TopDown,
            mapped: Vec::new(),
            separate_outputs: false,
            legend: true,
        }
    }
}

impl VisualizeOptions {
    /// Nested pipelines expanded down to `levels` levels.
    pub fn depth(mut self, levels: usize) -> Self {
        self.depth = Depth::Levels(levels.max(1));
        self
    }

    /// Left to right instead of top to bottom.
    pub fn left_right(mut self) -> Self {
        self.orientation = Orientation::LeftRight;
        self
    }

    /// Draws these inputs as mapped ones (what a `map` iterates over).
    pub fn mapped<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.mapped = names.into_iter().map(Into::into).collect();
        self
    }

    /// Draws each output value as a node of its own.
    pub fn separate_outputs(mut self) -> Self {
        self.separate_outputs = true;
        self
    }

    /// Leaves the legend out of the SVG and HTML pictures.
    pub fn without_legend(mut self) -> Self {
        self.legend = false;
        self
    }
}

/// What a drawn node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// A function node.
    Function,
    /// A nested pipeline drawn as one node (collapsed).
    Pipeline,
    /// An input the caller gives.
    Input,
    /// An input bound to its pipeline (`bind`).
    Bound,
    /// An input a `map` iterates over (see [`VisualizeOptions::mapped`]).
    Mapped,
    /// An output value drawn as a node (see
    /// [`VisualizeOptions::separate_outputs`]).
    Output,
}

/// A drawn node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewNode {
    /// A unique identifier (safe in DOT and Mermaid).
    pub id: String,
    /// What is written on it.
    pub label: String,
    /// What it stands for.
    pub kind: ViewKind,
    /// Whether it runs once per element of lists (`map_over`).
    pub map_over: bool,
    /// The cluster it is drawn in (an index into [`GraphView::clusters`]).
    pub cluster: Option<usize>,
}

/// An edge: the value named `label` flows from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewEdge {
    /// The producing node's id.
    pub from: String,
    /// The consuming node's id.
    pub to: String,
    /// The value's name as the consumer takes it.
    pub label: String,
}

/// An expanded nested pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewCluster {
    /// A unique identifier.
    pub id: String,
    /// The nested pipeline node's name.
    pub label: String,
    /// Whether its node runs once per element of lists (`map_over`).
    pub map_over: bool,
    /// The cluster it is nested in.
    pub parent: Option<usize>,
}

/// A pipeline's graph, ready to render (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphView {
    /// The pipeline's name.
    pub name: String,
    /// Which way it flows.
    pub orientation: Orientation,
    /// Nodes, inputs first within each pipeline, then in topological order.
    pub nodes: Vec<ViewNode>,
    /// Edges, in the order their consumers were drawn.
    pub edges: Vec<ViewEdge>,
    /// Expanded nested pipelines, outermost first.
    pub clusters: Vec<ViewCluster>,
    /// After a run: what happened to each node, by node id (see
    /// [`GraphView::with_events`]).
    pub outcomes: std::collections::BTreeMap<String, NodeOutcome>,
    /// Whether SVG and HTML pictures carry a legend.
    pub legend: bool,
}

/// One step of a walk through a [`GraphView`]'s nesting (see
/// [`GraphView::walk`]), with how deep it is (1: the top level).
pub(crate) enum Visit<'a> {
    /// A node drawn at this depth.
    Node(&'a ViewNode, usize),
    /// A cluster opens.
    Open(&'a ViewCluster, usize),
    /// The cluster opened last at this depth closes.
    Close(usize),
}

impl GraphView {
    /// Walks the nodes and clusters inside `cluster` (the top level for
    /// `None`) at `depth`: its own nodes first, then each nested cluster,
    /// opened, walked and closed. Both text renderers draw from this walk.
    pub(crate) fn walk<'a>(
        &'a self,
        cluster: Option<usize>,
        depth: usize,
        visit: &mut impl FnMut(Visit<'a>),
    ) {
        for node in self.nodes.iter().filter(|n| n.cluster == cluster) {
            visit(Visit::Node(node, depth));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.parent == cluster {
                visit(Visit::Open(c, depth));
                self.walk(Some(i), depth + 1, visit);
                visit(Visit::Close(depth));
            }
        }
    }
}

/// A cluster's title: its node's name, `map_over` marked.
pub(crate) fn cluster_title(c: &ViewCluster) -> String {
    if c.map_over {
        format!("{} (map_over)", c.label)
    } else {
        c.label.clone()
    }
}

/// Makes `text` safe as (part of) an identifier.
pub(crate) fn ident(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Pipeline {
    /// Describes this pipeline's graph for drawing (see [`GraphView`]).
    ///
    /// ```
    /// use hypernodes_core::{Pipeline, node};
    /// use hypernodes_core::viz::VisualizeOptions;
    ///
    /// #[node(output = "cleaned")]
    /// fn clean(text: &str) -> String { text.trim().to_lowercase() }
    /// #[node(output = "word_count")]
    /// fn count(cleaned: &str) -> i64 { cleaned.split_whitespace().count() as i64 }
    ///
    /// let p = Pipeline::new([clean::node(), count::node()]).unwrap().with_name("text");
    /// let dot = p.visualize(VisualizeOptions::default()).to_dot();
    /// assert!(dot.contains("\"n_text__clean\" -> \"n_text__count\" [label=\"cleaned\"]"));
    /// ```
    pub fn visualize(&self, options: VisualizeOptions) -> GraphView {
        let levels = match options.depth {
            Depth::Full => usize::MAX,
            Depth::Levels(n) => n.max(1),
        };
        let mut view = GraphView {
            name: self.name().to_string(),
            orientation: options.orientation,
            nodes: Vec::new(),
            edges: Vec::new(),
            clusters: Vec::new(),
            outcomes: Default::default(),
            legend: options.legend,
        };
        let prefix = ident(self.name());
        let mut drawing = Drawing {
            view: &mut view,
            options: &options,
        };
        drawing.draw(self, &prefix, None, levels - 1, &HashMap::new());
        view
    }
}

/// Drawing a pipeline into a view, with the options it is drawn with.
struct Drawing<'a> {
    view: &'a mut GraphView,
    options: &'a VisualizeOptions,
}

impl Drawing<'_> {
    /// Draws `pipeline`'s nodes into the view (inside `cluster`), expanding nested
    /// pipelines `levels` more levels. `sources` names, for each value the
    /// pipeline takes from outside, the node that provides it. Returns, for
    /// each value the pipeline produces, the node that produces it.
    fn draw(
        &mut self,
        pipeline: &Pipeline,
        prefix: &str,
        cluster: Option<usize>,
        levels: usize,
        sources: &HashMap<String, String>,
    ) -> HashMap<String, String> {
        let top = cluster.is_none();
        let mut produced: HashMap<String, String> = HashMap::new();
        // Inputs nobody outside provides: drawn as inputs of this pipeline.
        for input in pipeline.inputs() {
            if sources.contains_key(&input.name) {
                continue;
            }
            let id = format!("i_{prefix}__{}", ident(&input.name));
            let kind = if pipeline.bound_value(&input.name).is_some() {
                ViewKind::Bound
            } else if top && self.options.mapped.contains(&input.name) {
                ViewKind::Mapped
            } else {
                ViewKind::Input
            };
            self.view.nodes.push(ViewNode {
                id: id.clone(),
                label: input.name.clone(),
                kind,
                map_over: false,
                cluster,
            });
            produced.insert(input.name.clone(), id);
        }
        let source_of = |name: &str, produced: &HashMap<String, String>| {
            produced.get(name).or_else(|| sources.get(name)).cloned()
        };
        for node in pipeline.nodes() {
            let id = format!("n_{prefix}__{}", ident(node.name()));
            match (&node.kind, levels) {
                (NodeKind::Nested(inner), levels) if levels > 0 => {
                    let index = self.view.clusters.len();
                    self.view.clusters.push(ViewCluster {
                        id: format!("c_{prefix}__{}", ident(node.name())),
                        label: node.name().to_string(),
                        map_over: node.mapping.is_some(),
                        parent: cluster,
                    });
                    // Inside, each inner input comes from the outer source of
                    // the port that feeds it.
                    let mut inner_sources = HashMap::new();
                    for port in node.inputs() {
                        if let Some(from) = source_of(&port.name, &produced) {
                            inner_sources.insert(port.inner.clone(), from);
                        }
                    }
                    let inner_prefix = format!("{prefix}__{}", ident(node.name()));
                    let outputs = self.draw(
                        inner,
                        &inner_prefix,
                        Some(index),
                        levels - 1,
                        &inner_sources,
                    );
                    for port in node.outputs() {
                        if let Some(from) = outputs.get(&port.inner) {
                            produced.insert(port.name.clone(), from.clone());
                        }
                    }
                }
                _ => {
                    draw_node(node, &id, cluster, self.view);
                    for port in node.inputs() {
                        if let Some(from) = source_of(&port.name, &produced) {
                            self.view.edges.push(ViewEdge {
                                from,
                                to: id.clone(),
                                label: port.name.clone(),
                            });
                        }
                    }
                    for port in node.outputs() {
                        let source = if self.options.separate_outputs {
                            let out = format!("o_{prefix}__{}", ident(&port.name));
                            self.view.nodes.push(ViewNode {
                                id: out.clone(),
                                label: port.name.clone(),
                                kind: ViewKind::Output,
                                map_over: false,
                                cluster,
                            });
                            self.view.edges.push(ViewEdge {
                                from: id.clone(),
                                to: out.clone(),
                                label: String::new(),
                            });
                            out
                        } else {
                            id.clone()
                        };
                        produced.insert(port.name.clone(), source);
                    }
                }
            }
        }
        produced
    }
}

/// Draws one node (a function, or a collapsed pipeline).
fn draw_node(node: &Node, id: &str, cluster: Option<usize>, view: &mut GraphView) {
    view.nodes.push(ViewNode {
        id: id.to_string(),
        label: node.name().to_string(),
        kind: if node.is_pipeline() {
            ViewKind::Pipeline
        } else {
            ViewKind::Function
        },
        map_over: node.mapping.is_some(),
        cluster,
    });
}
