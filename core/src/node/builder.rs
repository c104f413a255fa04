//! Nodes built at run time from closures ([`NodeBuilder`]): ports,
//! retries, the version and captured state that identify a closure for
//! caching, async bounds, and the body (type-erased, typed, or async).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Args, Node, NodeFn, NodeKind, Outs, Port};
use crate::error::{Error, NodeError};
use crate::signature::Signature;
use crate::value::{ArrowValue, ValueType};

/// Builds a [`Node`] from a closure at run time (for generated pipelines).
///
/// ```
/// use hypernodes_core::{Node, Pipeline, Inputs, outs};
/// let factor = 3i64;
/// let scale = Node::builder("scale")
///     .input::<i64>("x")
///     .output::<i64>("y")
///     .func(move |args| Ok(outs![args.get::<i64>(0)? * factor]));
/// let p = Pipeline::new([scale]).unwrap();
/// let out = p.run(Inputs::new().with("x", 2i64)).unwrap();
/// assert_eq!(*out.get::<i64>("y").unwrap(), 6);
/// ```
pub struct NodeBuilder {
    pub(super) name: String,
    pub(super) inputs: Vec<Port>,
    pub(super) outputs: Vec<Port>,
    pub(super) retries: u32,
    pub(super) version: Option<String>,
    /// Declared captured state, each in canonical serde form.
    pub(super) states: Vec<Vec<u8>>,
    pub(super) problems: Vec<String>,
    pub(super) concurrency: Option<usize>,
    pub(super) max_per_second: Option<f64>,
}

impl NodeBuilder {
    /// Adds an Arrow-capable input.
    pub fn input<T: ArrowValue>(self, name: impl Into<String>) -> Self {
        self.input_of(name, ValueType::arrow::<T>())
    }

    /// Adds an input of any described type (for resources: see
    /// [`value_type!`](crate::value_type)).
    pub fn input_of(mut self, name: impl Into<String>, ty: ValueType) -> Self {
        self.inputs.push(Port::new(name, ty));
        self
    }

    /// Adds an Arrow-capable output.
    pub fn output<T: ArrowValue>(self, name: impl Into<String>) -> Self {
        self.output_of(name, ValueType::arrow::<T>())
    }

    /// Adds an output of any described type.
    pub fn output_of(mut self, name: impl Into<String>, ty: ValueType) -> Self {
        self.outputs.push(Port::new(name, ty));
        self
    }

    /// Sets how many times a failing call is retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Declares the version of the closure's code and captured state: part
    /// of the node's fingerprint, so changing it invalidates cached results.
    ///
    /// The fingerprint of a closure cannot see its code or what it
    /// captures, so a closure node declares what identifies it: a
    /// `version`, its captured [`state`](NodeBuilder::state), or both. A
    /// closure node that declares neither is never cached (it runs every
    /// time; cache decisions say why), so a rebuilt closure never gets the
    /// results of another one.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Declares state the closure captures (a factor, a threshold, a
    /// configuration): its canonical serde form (map keys sorted) enters
    /// the node's code fingerprint, so results cached with one value are
    /// never returned for another. Call it once per captured value. A value
    /// that has no JSON form makes the node invalid (`Pipeline::new` says
    /// so). See [`NodeBuilder::version`] for what happens without it.
    ///
    /// ```
    /// use hypernodes_core::{Node, Pipeline, Inputs};
    /// let factor = 3i64;
    /// let scale = Node::builder("scale")
    ///     .input::<i64>("x")
    ///     .output::<i64>("y")
    ///     .state(&factor)
    ///     .typed(move |x: i64| x * factor)
    ///     .unwrap();
    /// assert!(scale.cache_enabled());
    /// ```
    pub fn state<S: serde::Serialize + ?Sized>(mut self, state: &S) -> Self {
        match crate::signature::canonical_json(state) {
            Some(bytes) => self.states.push(bytes),
            None => self
                .problems
                .push("a declared state has no JSON form (serde_json cannot write it)".into()),
        }
        self
    }

    /// For an async body: the most calls in flight at once (see
    /// [`Node::concurrency`]).
    pub fn concurrency(mut self, calls: usize) -> Self {
        self.concurrency = Some(calls);
        self
    }

    /// For an async body: the most calls started per second (see
    /// [`Node::max_per_second`]).
    pub fn max_per_second(mut self, calls: f64) -> Self {
        self.max_per_second = Some(calls);
        self
    }

    fn finish(self, func: NodeFn) -> Node {
        let (concurrency, max_per_second) = (self.concurrency, self.max_per_second);
        let declared = self.version.is_some() || !self.states.is_empty();
        let mut parts: Vec<(String, String)> = Vec::new();
        if let Some(v) = &self.version {
            parts.push(("version".into(), v.clone()));
        }
        let states = self.states;
        let problems = self.problems;
        let mut node = Node::new(
            self.name,
            self.inputs,
            self.outputs,
            NodeKind::Func(func),
            self.retries,
        );
        if let Some(v) = self.version {
            let mut bytes = node.code_hash.0.to_vec();
            bytes.extend_from_slice(v.as_bytes());
            node.code_hash = Signature::of_bytes("hypernodes/version/v1", &bytes);
        }
        if !states.is_empty() {
            let mut bytes = node.code_hash.0.to_vec();
            for state in &states {
                bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
                bytes.extend_from_slice(state);
            }
            node.code_hash = Signature::of_bytes("hypernodes/state/v1", &bytes);
            parts.push((
                "declared state".into(),
                Signature::of_bytes("hypernodes/state-part/v1", &bytes[32..]).to_hex(),
            ));
        }
        node.code_parts = parts.into();
        if !declared {
            node.cache_enabled = false;
            node.not_cached_because = Some(
                "a closure node declares neither a version nor its captured state (NodeBuilder::version, NodeBuilder::state), so its signature cannot tell two closures apart",
            );
        }
        node.problems.extend(problems);
        if let Some(calls) = concurrency {
            node = node.with_concurrency(calls);
        }
        if let Some(calls) = max_per_second {
            node = node.with_max_per_second(calls);
        }
        node
    }

    /// Finishes the node with a synchronous body.
    pub fn func<F>(self, f: F) -> Node
    where
        F: Fn(Args<'_>) -> Result<Outs, NodeError> + Send + Sync + 'static,
    {
        self.finish(NodeFn::Sync(Arc::new(f)))
    }

    /// Finishes the node with a typed closure: one parameter per declared
    /// input, in order, returning the one declared output, as the value
    /// itself or as `Result<value, error>` (see [`crate::typed`]). Unlike
    /// [`func`](Self::func), the node also gets a typed row loop, so
    /// columnar engines call it per batch without a dynamic call per row.
    ///
    /// ```
    /// use hypernodes_core::{Node, Pipeline, Inputs};
    /// let factor = 3i64;
    /// let scale = Node::builder("scale")
    ///     .input::<i64>("x")
    ///     .output::<i64>("y")
    ///     .version("times 3")
    ///     .typed(move |x: i64| x * factor)
    ///     .unwrap();
    /// let p = Pipeline::new([scale]).unwrap();
    /// let out = p.run(Inputs::new().with("x", 2i64)).unwrap();
    /// assert_eq!(*out.get::<i64>("y").unwrap(), 6);
    /// ```
    ///
    /// Fails, naming the node, when the closure's parameter or result types
    /// are not the declared ones, or more or fewer than one output is declared.
    pub fn typed<M, F>(self, f: F) -> Result<Node, Error>
    where
        F: crate::node::typed::TypedFunc<M>,
    {
        let invalid = |reason: String| Error::InvalidNode {
            node: self.name.clone(),
            reason,
        };
        let takes = F::input_types();
        if self.inputs.len() != takes.len() {
            return Err(invalid(format!(
                "{} inputs are declared but the closure takes {}",
                self.inputs.len(),
                takes.len()
            )));
        }
        for (port, ty) in self.inputs.iter().zip(&takes) {
            if port.ty != *ty {
                return Err(invalid(format!(
                    "input `{}` is declared `{}` but the closure takes `{}`",
                    port.name,
                    port.ty.name(),
                    ty.name()
                )));
            }
        }
        let [output] = self.outputs.as_slice() else {
            return Err(invalid(format!(
                "a typed closure gives one output; {} are declared",
                self.outputs.len()
            )));
        };
        let returns = F::output_type();
        if output.ty != returns {
            return Err(invalid(format!(
                "output `{}` is declared `{}` but the closure returns `{}`",
                output.name,
                output.ty.name(),
                returns.name()
            )));
        }
        let inputs: Vec<String> = self.inputs.iter().map(|p| p.name.clone()).collect();
        let output = output.name.clone();
        let f = Arc::new(f);
        let per_item = f.clone();
        let node = self.finish(NodeFn::Sync(Arc::new(move |args: Args<'_>| {
            per_item.call(&args)
        })));
        Ok(node.with_rows(Arc::new(move |columns, rows, retries| {
            f.call_rows(&inputs, &output, columns, rows, retries)
        })))
    }

    /// Finishes the node with an asynchronous body.
    pub fn async_func<F>(self, f: F) -> Node
    where
        F: Fn(Args<'_>) -> Result<BoxFuture<'static, Result<Outs, NodeError>>, NodeError>
            + Send
            + Sync
            + 'static,
    {
        self.finish(NodeFn::Async(Arc::new(f)))
    }
}
