//! The nodes a process has linked, by name and code version: what a
//! process that receives a plan (an executor of a cluster) uses to find the
//! node a step names, and to refuse, before any row runs, a step whose
//! code differs from what this process would run.

use std::collections::HashMap;

use super::Node;
use crate::pipeline::Pipeline;
use crate::signature::Signature;

pub use crate::error::RegistryError;

/// Nodes by name, each with its code hash ([`Node::code_hash`]).
///
/// ```
/// use hypernodes_core::{Pipeline, node};
/// use hypernodes_core::node::{NodeRegistry, RegistryError};
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let registry = NodeRegistry::new().with_pipeline(&Pipeline::new([double::node()]).unwrap());
/// let hash = double::node().code_hash();
/// assert_eq!(registry.resolve("double", &hash).unwrap().name(), "double");
/// assert!(matches!(registry.resolve("triple", &hash), Err(RegistryError::UnknownNode { .. })));
/// ```
#[derive(Clone, Default)]
pub struct NodeRegistry {
    /// Per name, every registered version (a `map_over` function node and
    /// the function inside it share a name).
    nodes: HashMap<String, Vec<Node>>,
    resources: HashMap<String, crate::value::Resource>,
}

impl NodeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `node` under its name and code hash (registering the same
    /// version again changes nothing).
    pub fn with_node(mut self, node: Node) -> Self {
        let versions = self.nodes.entry(node.name.clone()).or_default();
        if !versions.iter().any(|n| n.code_hash == node.code_hash) {
            versions.push(node);
        }
        self
    }

    /// Registers every node of `pipeline`: its function nodes, its pipeline
    /// nodes (a plan may run a `map_over` node as one step), and the nodes
    /// of nested pipelines at any depth.
    pub fn with_pipeline(mut self, pipeline: &Pipeline) -> Self {
        for node in pipeline.nodes() {
            if let Some(inner) = node.pipeline() {
                self = self.with_pipeline(inner);
            }
            self = self.with_node(node.clone());
        }
        self
    }

    /// The node named `name`, if its code hash is `code_hash`: a typed
    /// error names the node and both hashes otherwise.
    pub fn resolve(&self, name: &str, code_hash: &Signature) -> Result<&Node, RegistryError> {
        let versions = self
            .nodes
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RegistryError::UnknownNode {
                node: name.to_string(),
                wanted: *code_hash,
            })?;
        versions
            .iter()
            .find(|n| n.code_hash == *code_hash)
            .ok_or_else(|| RegistryError::CodeMismatch {
                node: name.to_string(),
                wanted: *code_hash,
                linked: versions[0].code_hash,
            })
    }

    /// Registers a resource (a model, a client) under the input name nodes
    /// take it by, made on first use ([`Resource::lazy`]): once per
    /// process, by whichever node needs it first.
    ///
    /// [`Resource::lazy`]: crate::Resource::lazy
    pub fn with_resource(
        mut self,
        name: impl Into<String>,
        resource: crate::value::Resource,
    ) -> Self {
        self.resources.insert(name.into(), resource);
        self
    }

    /// The resource registered under `name`, if any.
    pub fn resource(&self, name: &str) -> Option<&crate::value::Resource> {
        self.resources.get(name)
    }

    /// Every registered node's name and code hash, sorted by name (what a
    /// process tells a client before it accepts work).
    pub fn versions(&self) -> Vec<(String, Signature)> {
        let mut out: Vec<(String, Signature)> = self
            .nodes
            .values()
            .flatten()
            .map(|n| (n.name.clone(), n.code_hash))
            .collect();
        out.sort();
        out
    }
}
