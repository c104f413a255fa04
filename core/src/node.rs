//! Nodes: a typed function (or a whole pipeline) with named inputs and outputs.
//!
//! `#[node]` turns an ordinary `fn` into a [`Node`] factory (`my_fn::node()`),
//! and [`Node::builder`] builds one at run time from a closure. Any node can
//! be renamed ([`Node::input_mapping`], [`Node::output_mapping`]) and mapped
//! over lists ([`Node::map_over`]); a pipeline becomes a node with
//! [`Pipeline::as_node`](crate::Pipeline::as_node).

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::{Error, NodeError};
use crate::map::MapMode;
use crate::pipeline::Pipeline;
use crate::signature::Signature;
use crate::value::ValueType;

pub(crate) mod args;
mod builder;
mod registry;
pub mod rows;
pub mod typed;
pub use args::{Args, Outs, Port};
pub use builder::NodeBuilder;
pub use registry::{NodeRegistry, RegistryError};

/// A synchronous node body.
pub type SyncFn = dyn Fn(Args<'_>) -> Result<Outs, NodeError> + Send + Sync;

/// An asynchronous node body: checks its arguments, then returns a future.
pub type AsyncFn = dyn Fn(Args<'_>) -> Result<BoxFuture<'static, Result<Outs, NodeError>>, NodeError>
    + Send
    + Sync;

/// The body of a function node.
#[derive(Clone)]
pub enum NodeFn {
    /// A plain function.
    Sync(Arc<SyncFn>),
    /// An `async fn`.
    Async(Arc<AsyncFn>),
}

/// What a node runs.
#[derive(Clone)]
pub(crate) enum NodeKind {
    Func(NodeFn),
    Nested(Arc<Pipeline>),
}

/// How a node maps over lists, once resolved.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    /// Per input port: whether it is mapped over.
    pub mapped: Vec<bool>,
    /// Per input port: the element (inner) type.
    pub inner_inputs: Vec<ValueType>,
    pub mode: MapMode,
}

/// A step of a pipeline: a typed function or a nested pipeline, with named
/// inputs and outputs.
#[derive(Clone)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) inputs: Vec<Port>,
    pub(crate) outputs: Vec<Port>,
    pub(crate) kind: NodeKind,
    pub(crate) retries: u32,
    pub(crate) mapping: Option<Mapping>,
    pub(crate) code_hash: Signature,
    helpers: Arc<[String]>,
    pub(crate) env: Arc<[String]>,
    pub(crate) cache_enabled: bool,
    /// Why the node is not cached when that was not asked for with
    /// `cache = false` (a closure without declared version or state).
    pub(crate) not_cached_because: Option<&'static str>,
    pub(crate) code_parts: Arc<[(String, String)]>,
    pending_map: Option<(Vec<String>, MapMode)>,
    /// For a pipeline node given an `output_mapping`: the inner names of
    /// the outputs it exposes.
    exposed: Option<Vec<String>>,
    problems: Vec<String>,
    batch: Option<BatchFn>,
    rows: Option<crate::node::rows::RowsFn>,
    /// Bounds on in-flight and per-second calls (async nodes), shared by clones.
    limits: Arc<crate::engine::runtime::AsyncLimits>,
}

/// A node's batch implementation (the "dual node"): given one Arrow array
/// per input (all of the same length, fixed inputs repeated), it returns one
/// array per output with a row per input row. It must give exactly what the
/// row function gives row by row; columnar engines use it instead of calling
/// the row function per row.
pub type BatchFn = Arc<
    dyn Fn(&[arrow_array::ArrayRef]) -> Result<Vec<arrow_array::ArrayRef>, crate::error::BoxError>
        + Send
        + Sync,
>;

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("nested", &matches!(self.kind, NodeKind::Nested(_)))
            .finish()
    }
}

impl Node {
    /// Starts building a node from a closure at run time.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            retries: 0,
            version: None,
            states: Vec::new(),
            problems: Vec::new(),
            concurrency: None,
            max_per_second: None,
        }
    }

    /// Used by `#[node]`: a function node with the given ports and body,
    /// its code fingerprint (hex) and the helpers the fingerprint covers.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: &str,
        inputs: Vec<Port>,
        outputs: Vec<Port>,
        func: NodeFn,
        retries: u32,
        code_hash: &str,
        helpers: &[&str],
    ) -> Node {
        let mut node = Node::new(
            name.to_string(),
            inputs,
            outputs,
            NodeKind::Func(func),
            retries,
        );
        if let Some(sig) = Signature::from_hex(code_hash) {
            node.code_hash = sig;
        }
        node.helpers = helpers.iter().map(|h| h.to_string()).collect();
        node
    }

    pub(crate) fn new(
        name: String,
        inputs: Vec<Port>,
        outputs: Vec<Port>,
        kind: NodeKind,
        retries: u32,
    ) -> Node {
        let code_hash = structural_hash(&name, &inputs, &outputs, &kind);
        Node {
            code_hash,
            helpers: Arc::from(Vec::new()),
            env: Arc::from(Vec::new()),
            cache_enabled: true,
            not_cached_because: None,
            code_parts: Arc::from(Vec::new()),
            name,
            inputs,
            outputs,
            kind,
            retries,
            mapping: None,
            pending_map: None,
            exposed: None,
            problems: Vec::new(),
            batch: None,
            rows: None,
            limits: Arc::new(crate::engine::runtime::AsyncLimits::new(
                Node::DEFAULT_CONCURRENCY,
                None,
            )),
        }
    }

    /// Gives the node a batch implementation over Arrow arrays (see
    /// [`BatchFn`]), used by columnar engines for the rows they compute; the
    /// row function stays the reference (row engines, debugging). It is not
    /// part of the code hash: both must give the same results, so they share
    /// cache entries. Nodes with an input that has no Arrow form (a
    /// resource) keep using the row function.
    pub fn with_batch<F>(mut self, f: F) -> Self
    where
        F: Fn(
                &[arrow_array::ArrayRef],
            ) -> Result<Vec<arrow_array::ArrayRef>, crate::error::BoxError>
            + Send
            + Sync
            + 'static,
    {
        self.batch = Some(Arc::new(f));
        self
    }

    /// The node's batch implementation, if it has one.
    pub fn batch(&self) -> Option<&BatchFn> {
        self.batch.as_ref()
    }

    /// Gives the node a typed row loop over Arrow columns (see
    /// [`crate::rows`]). `#[node]` generates one for every synchronous
    /// function; it must call the same function as the row function.
    pub fn with_rows(mut self, f: crate::node::rows::RowsFn) -> Self {
        self.rows = Some(f);
        self
    }

    /// The node's typed row loop, if it has one.
    pub fn rows(&self) -> Option<&crate::node::rows::RowsFn> {
        self.rows.as_ref()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's inputs, in call order.
    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    /// The node's outputs, in declared order.
    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// How many times a failing call is retried.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The node's code fingerprint. For `#[node]` functions it covers the
    /// function's tokens (doc comments excluded), its name and output names,
    /// and the same-crate helpers it calls, transitively. For closure nodes
    /// it covers the name and ports only; for pipeline nodes, the inner
    /// nodes' fingerprints and wiring.
    pub fn code_hash(&self) -> Signature {
        self.code_hash
    }

    /// Declares environment variables the node reads: their values at run
    /// time are part of its signature (`#[node(env = ["VAR"])]`).
    pub fn with_env(mut self, vars: &[&str]) -> Self {
        self.env = vars.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Whether results of this node are cached (`#[node(cache = false)]`
    /// turns it off for nodes with side effects or randomness; their
    /// dependents still cache on the values they produce).
    pub fn with_cache_enabled(mut self, enabled: bool) -> Self {
        self.cache_enabled = enabled;
        self.not_cached_because = None;
        self
    }

    /// Used by `#[node]`: named hashes of the parts of the code fingerprint
    /// (body, each helper, version, declared env vars), to explain misses.
    #[doc(hidden)]
    pub fn with_code_parts(mut self, parts: &[(&str, &str)]) -> Self {
        self.code_parts = parts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Named hashes of the parts of the code fingerprint.
    pub fn code_parts(&self) -> &[(String, String)] {
        &self.code_parts
    }

    /// What identifies this node version's results in a
    /// [`Cache`](crate::Cache): name, code hash, outputs (inner names) and
    /// code parts. Use it with [`DiskCache`](crate::DiskCache)'s inspection
    /// methods (`is_cached`, `compact`, ...).
    pub fn cache_key(&self) -> crate::cache::CacheKey {
        crate::cache::CacheKey {
            node: self.name.clone(),
            code: self.code_hash,
            outputs: self
                .outputs
                .iter()
                .map(|p| (p.inner.clone(), p.ty))
                .collect(),
            parts: self.code_parts.to_vec(),
        }
    }

    /// The environment variables in the node's signature.
    pub fn env(&self) -> &[String] {
        &self.env
    }

    /// Whether the node's results are cached (the `cache` setting; see
    /// [`Node::caching`] for whether they can be).
    pub fn cache_enabled(&self) -> bool {
        self.cache_enabled
    }

    /// Whether a cache stores this node's results: a function node (not a
    /// pipeline) whose caching is enabled and whose outputs all have an
    /// Arrow form. The one answer every engine uses; a row whose inputs
    /// have no hash (an unkeyed resource) is still computed, not stored.
    pub fn caching(&self) -> bool {
        self.cache_enabled && !self.is_pipeline() && self.outputs.iter().all(|p| p.ty.is_arrow())
    }

    /// Whether the node's function is `async` (I/O-bound work that every
    /// engine runs for many items at once, up to [`Node::concurrency`]).
    pub fn is_async(&self) -> bool {
        matches!(self.kind, NodeKind::Func(NodeFn::Async(_)))
    }

    /// How many calls of an async node may be in flight at once when no
    /// bound is declared.
    pub const DEFAULT_CONCURRENCY: usize = 32;

    /// The most calls of this (async) node in flight at once: declared with
    /// `#[node(concurrency = N)]`, [`NodeBuilder::concurrency`] or
    /// [`Node::with_concurrency`], [`Node::DEFAULT_CONCURRENCY`] otherwise.
    ///
    /// The bound holds for the node and its clones together, across every
    /// map, engine and thread that runs them: a pipeline's node is one
    /// client of one service. Engines keep up to this many calls waiting at
    /// once; with a bound of 1, calls run one at a time in item order.
    pub fn concurrency(&self) -> usize {
        self.limits.concurrency()
    }

    /// Sets the most calls of this async node in flight at once (see
    /// [`Node::concurrency`]); 0 is an invalid node, reported by
    /// `Pipeline::new`. It does not change the node's signature. Ignored for
    /// nodes that are not async.
    pub fn with_concurrency(mut self, calls: usize) -> Self {
        if calls == 0 {
            self.problems
                .push("concurrency must be at least 1 call in flight".into());
        }
        self.limits = Arc::new(crate::engine::runtime::AsyncLimits::new(
            calls,
            self.limits.per_second(),
        ));
        self
    }

    /// The most calls of this (async) node started per second, if limited
    /// (`#[node(max_per_second = N)]`, [`NodeBuilder::max_per_second`] or
    /// [`Node::with_max_per_second`]).
    ///
    /// Like [`Node::concurrency`], the limit holds for the node and its
    /// clones together. Calls start at least `1 / N` seconds apart (no
    /// bursts), retries included; a call waiting for its turn holds its
    /// place among the calls in flight.
    pub fn max_per_second(&self) -> Option<f64> {
        self.limits.per_second()
    }

    /// Limits this async node to `calls` started per second (see
    /// [`Node::max_per_second`]); a rate that is not a positive number is an
    /// invalid node, reported by `Pipeline::new`. It does not change the
    /// node's signature. Ignored for nodes that are not async.
    pub fn with_max_per_second(mut self, calls: f64) -> Self {
        if !(calls.is_finite() && calls > 0.0) {
            self.problems.push(format!(
                "max_per_second must be a positive number of calls, not {calls}"
            ));
            return self;
        }
        self.limits = Arc::new(crate::engine::runtime::AsyncLimits::new(
            self.limits.concurrency(),
            Some(calls),
        ));
        self
    }

    /// The node's async limits (engines admit each call through them).
    pub(crate) fn limits(&self) -> &crate::engine::runtime::AsyncLimits {
        &self.limits
    }

    /// Whether the node is a pipeline (made by `as_node`), not a function.
    pub fn is_pipeline(&self) -> bool {
        matches!(self.kind, NodeKind::Nested(_))
    }

    /// The salt of the node's signature now: each declared environment
    /// variable's name and value (see `docs/cache-format.md`).
    pub fn salt(&self) -> Vec<u8> {
        let mut salt = Vec::new();
        for var in self.env.iter() {
            salt.extend_from_slice(var.as_bytes());
            match std::env::var_os(var) {
                Some(v) => {
                    salt.push(b'=');
                    salt.extend_from_slice(v.as_encoded_bytes());
                }
                None => salt.extend_from_slice(b"\0unset"),
            }
            salt.push(0);
        }
        salt
    }

    /// Names of the helper functions covered by [`Node::code_hash`].
    pub fn helpers(&self) -> &[String] {
        &self.helpers
    }

    /// The nested pipeline, for a pipeline node.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match &self.kind {
            NodeKind::Nested(p) => Some(p),
            NodeKind::Func(_) => None,
        }
    }

    /// Renames the node.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets how many times a failing call is retried.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Renames inputs: each pair is `(outer name, inner name)`, where the
    /// inner name is the parameter (or inner pipeline input) name.
    pub fn input_mapping<I, A, B>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        for (outer, inner) in pairs {
            if let Err(problem) = rename(&mut self.inputs, inner.into(), outer.into(), "input") {
                self.problems.push(problem);
            }
        }
        self
    }

    /// Renames outputs: each pair is `(inner name, outer name)`. On a
    /// pipeline node it also chooses what the node exposes: only the
    /// outputs named here (see [`Pipeline::as_node`]).
    pub fn output_mapping<I, A, B>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        let nested = self.is_pipeline();
        for (inner, outer) in pairs {
            let inner = inner.into();
            if nested {
                self.exposed
                    .get_or_insert_with(Vec::new)
                    .push(inner.clone());
            }
            if let Err(problem) = rename(&mut self.outputs, inner, outer.into(), "output") {
                self.problems.push(problem);
            }
        }
        self
    }

    /// Makes the node take lists for the named (outer) inputs and run once
    /// per element (zip mode), returning lists for every output.
    pub fn map_over<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.map_over_with(names, MapMode::Zip)
    }

    /// Like [`Node::map_over`], with an explicit [`MapMode`].
    pub fn map_over_with<I, S>(mut self, names: I, mode: MapMode) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pending_map = Some((names.into_iter().map(Into::into).collect(), mode));
        self
    }

    /// Checks the renamings and resolves `map_over`; called by `Pipeline::new`.
    pub(crate) fn finish(mut self) -> Result<Node, Error> {
        if let Some(reason) = self.problems.first() {
            return Err(Error::InvalidNode {
                node: self.name.clone(),
                reason: reason.clone(),
            });
        }
        // A pipeline node exposes what its output mapping names.
        if let Some(exposed) = self.exposed.take() {
            self.outputs.retain(|p| exposed.contains(&p.inner));
        }
        let Some((names, mode)) = self.pending_map.take() else {
            return Ok(self);
        };
        let invalid = |reason: String| Error::InvalidNode {
            node: self.name.clone(),
            reason,
        };
        if names.is_empty() {
            return Err(invalid("map_over needs at least one input".into()));
        }
        if self.mapping.is_some() {
            return Err(invalid("map_over was applied twice".into()));
        }
        let mut mapped = vec![false; self.inputs.len()];
        for n in &names {
            match self.inputs.iter().position(|p| &p.name == n) {
                Some(i) => mapped[i] = true,
                None => {
                    let have: Vec<&str> = self.inputs.iter().map(|p| p.name.as_str()).collect();
                    return Err(invalid(format!(
                        "map_over names unknown input `{n}`; inputs are {have:?}"
                    )));
                }
            }
        }
        // A function node mapped over lists runs as a one-node pipeline.
        if let NodeKind::Func(_) = &self.kind {
            let mut inner = self.clone();
            for p in inner.inputs.iter_mut().chain(inner.outputs.iter_mut()) {
                p.name = p.inner.clone();
            }
            let pipeline = Pipeline::new([inner])?.with_name(self.name.clone());
            self.kind = NodeKind::Nested(Arc::new(pipeline));
            self.retries = 0;
        }
        let list_of = |p: &Port| {
            p.ty.list_type().ok_or_else(|| Error::InvalidNode {
                node: self.name.clone(),
                reason: format!(
                    "cannot map over `{}`: lists of `{}` are not supported (the type must be Clone, and lists nest at most three levels)",
                    p.name,
                    p.ty.name()
                ),
            })
        };
        let inner_inputs: Vec<ValueType> = self.inputs.iter().map(|p| p.ty).collect();
        let mut inputs = self.inputs.clone();
        for (p, m) in inputs.iter_mut().zip(&mapped) {
            if *m {
                p.ty = list_of(p)?;
            }
        }
        let mut outputs = self.outputs.clone();
        for p in outputs.iter_mut() {
            p.ty = list_of(p)?;
        }
        self.inputs = inputs;
        self.outputs = outputs;
        self.mapping = Some(Mapping {
            mapped,
            inner_inputs,
            mode,
        });
        Ok(self)
    }
}

/// Gives the port whose inner name is `inner` the outer name `outer`.
fn rename(ports: &mut [Port], inner: String, outer: String, what: &str) -> Result<(), String> {
    match ports.iter_mut().find(|p| p.inner == inner) {
        Some(p) => {
            p.name = outer;
            Ok(())
        }
        None => {
            let have: Vec<&str> = ports.iter().map(|p| p.inner.as_str()).collect();
            Err(format!(
                "{what}_mapping names unknown {what} `{inner}`; {what}s are {have:?}"
            ))
        }
    }
}

/// The fingerprint of a node from what is known at run time: its name,
/// ports and, for a pipeline node, its inner nodes' fingerprints.
fn structural_hash(name: &str, inputs: &[Port], outputs: &[Port], kind: &NodeKind) -> Signature {
    let mut text = format!("{name}\u{1f}");
    for p in inputs.iter().chain(outputs) {
        text.push_str(&format!("{}:{}:{}\u{1f}", p.name, p.inner, p.ty.name()));
    }
    if let NodeKind::Nested(pipeline) = kind {
        for n in pipeline.nodes() {
            text.push_str(&n.code_hash.to_hex());
            for p in n.inputs.iter().chain(&n.outputs) {
                text.push_str(&format!("{}\u{1f}", p.name));
            }
        }
    }
    Signature::of_bytes("hypernodes/structure/v1", text.as_bytes())
}

/// Builds the [`Outs`] of a node call from values: `outs![a, b]`.
#[macro_export]
macro_rules! outs {
    ($($v:expr),* $(,)?) => {{
        let mut o = $crate::Outs::new();
        $( o.push($crate::Value::new($v)); )*
        o
    }};
}
