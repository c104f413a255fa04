//! Pipelines: nodes wired by name into a validated DAG.
//!
//! [`Pipeline::new`] checks everything that can be checked before running:
//! cycles, duplicate producers, producer/consumer type mismatches, invalid
//! renamings. A pipeline's inputs are the names no node produces; its outputs
//! are every node output. [`Pipeline::run`] executes once,
//! [`Pipeline::map`] over collections, both on the pipeline's engine
//! ([`SeqEngine`] unless set with [`Pipeline::with_engine`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::cache::{Cache, CacheDecision};
use crate::engine::{self as exec, Exec};
use crate::engine::{Engine, SeqEngine};
use crate::error::Error;
use crate::io::{Inputs, Outputs};
use crate::map::{MapOptions, MapResult, RunOptions};
use crate::node::{Node, NodeKind, Port};
use crate::observe::callback::Callback;
use crate::value::{Value, ValueType};

mod graph;
mod plan;

pub(crate) use graph::{Graph, build_graph, check_type};
pub(crate) use plan::{Plan, Step};

/// An input of a pipeline: a name no node produces.
#[derive(Clone, Debug)]
pub struct InputInfo {
    /// The input's name.
    pub name: String,
    /// Its type.
    pub ty: ValueType,
    /// Names of the nodes that take it.
    pub consumers: Vec<String>,
}

/// A validated DAG of nodes wired by name.
#[derive(Clone)]
pub struct Pipeline {
    name: String,
    /// Whether `name` was given (`with_name`) rather than the default.
    named: bool,
    pub(crate) graph: Arc<Graph>,
    pub(crate) bound: Arc<BTreeMap<String, Value>>,
    pub(crate) engine: Option<Arc<dyn Engine>>,
    pub(crate) callbacks: Vec<Arc<dyn Callback>>,
    pub(crate) cache: Option<Arc<dyn Cache>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field(
                "nodes",
                &self.graph.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
            )
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Pipeline {
    /// Builds and validates a pipeline; the order of nodes does not matter.
    /// Nodes are wired by name: a node's parameter takes the output of the
    /// same name. A cycle, two producers of one name, a type mismatch
    /// between producer and consumer, or an invalid node is an error naming
    /// them.
    ///
    /// ```
    /// use hypernodes_core::{Error, Node, Pipeline, node};
    ///
    /// #[node(output = "cleaned")]
    /// fn clean(text: &str) -> String { text.trim().to_lowercase() }
    /// #[node(output = "word_count")]
    /// fn count(cleaned: &str) -> i64 { cleaned.split_whitespace().count() as i64 }
    ///
    /// // Any order: `count` takes `cleaned` from `clean`.
    /// let p = Pipeline::new([count::node(), clean::node()]).unwrap();
    /// assert_eq!(p.outputs(), ["cleaned", "word_count"]);
    /// assert_eq!(p.unfulfilled_inputs(), ["text"]);
    ///
    /// // Two producers of one name are refused, naming both.
    /// let err = Pipeline::new([clean::node(), clean::node().with_name("again")]).unwrap_err();
    /// assert!(matches!(err, Error::DuplicateOutput { .. }));
    /// ```
    pub fn new<I>(nodes: I) -> Result<Pipeline, Error>
    where
        I: IntoIterator,
        I::Item: Into<Node>,
    {
        let nodes: Vec<Node> = nodes
            .into_iter()
            .map(|n| n.into().finish())
            .collect::<Result<_, _>>()?;
        let graph = build_graph(nodes)?;
        Ok(Pipeline {
            name: "pipeline".to_string(),
            named: false,
            graph: Arc::new(graph),
            bound: Arc::new(BTreeMap::new()),
            engine: None,
            callbacks: Vec::new(),
            cache: None,
        })
    }

    /// Names the pipeline (used in errors, events and as a nested node's name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.named = true;
        self
    }

    /// The name this pipeline has as a node ([`Pipeline::as_node`]): its
    /// name if it was given one, else one derived from its nodes,
    /// `pipeline(a+b+c)` (in topological order), so that unnamed pipelines
    /// used side by side in one parent have distinct, stable names.
    pub fn node_name(&self) -> String {
        if self.named {
            return self.name.clone();
        }
        let nodes: Vec<&str> = self
            .graph
            .order
            .iter()
            .map(|&n| self.graph.nodes[n].name.as_str())
            .collect();
        format!("{}({})", self.name, nodes.join("+"))
    }

    /// Sets the engine that runs this pipeline (and nested pipelines that
    /// have none of their own).
    pub fn with_engine(mut self, engine: impl Engine + 'static) -> Self {
        self.engine = Some(Arc::new(engine));
        self
    }

    /// Sets a shared engine.
    pub fn with_shared_engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Caches every node result in `cache` (nested pipelines without a cache
    /// of their own use it too): a re-run computes only new items, changed
    /// items and nodes whose code changed.
    pub fn with_cache(mut self, cache: impl Cache + 'static) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// Uses a shared cache (see [`Pipeline::with_cache`]).
    pub fn with_shared_cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The cache set on this pipeline, if any.
    pub fn cache(&self) -> Option<&Arc<dyn Cache>> {
        self.cache.as_ref()
    }

    /// Adds a callback that receives this pipeline's events.
    pub fn with_callback(mut self, callback: Arc<dyn Callback>) -> Self {
        self.callbacks.push(callback);
        self
    }

    /// Shows the progress of every `map` of this pipeline: bars per
    /// pipeline and node on a terminal, milestone lines on stderr
    /// otherwise (see [`Progress`](crate::observe::Progress)).
    #[cfg(feature = "progress")]
    pub fn with_progress(self) -> Self {
        self.with_callback(Arc::new(crate::observe::Progress::new()))
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine set on this pipeline, if any.
    pub fn engine(&self) -> Option<&Arc<dyn Engine>> {
        self.engine.as_ref()
    }

    /// The nodes, in topological order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.graph.order.iter().map(|&i| &self.graph.nodes[i])
    }

    /// Every input (names no node produces), bound or not.
    pub fn inputs(&self) -> &[InputInfo] {
        &self.graph.inputs
    }

    /// Names of inputs that are not bound: what `run` and `map` must be given.
    pub fn unfulfilled_inputs(&self) -> Vec<&str> {
        self.graph
            .inputs
            .iter()
            .filter(|i| !self.bound.contains_key(&i.name))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Names of bound inputs.
    pub fn bound_inputs(&self) -> Vec<&str> {
        self.bound.keys().map(String::as_str).collect()
    }

    /// Every output name, in topological order of the producing nodes.
    pub fn outputs(&self) -> Vec<&str> {
        self.nodes()
            .flat_map(|n| n.outputs.iter().map(|p| p.name.as_str()))
            .collect()
    }

    /// The type of a named value (input or output) of the pipeline.
    pub fn value_type(&self, name: &str) -> Option<ValueType> {
        if let Some(&(n, o)) = self.graph.producers.get(name) {
            return Some(self.graph.nodes[n].outputs[o].ty);
        }
        self.input(name).map(|i| i.ty)
    }

    fn input(&self, name: &str) -> Option<&InputInfo> {
        self.graph.inputs.iter().find(|i| i.name == name)
    }

    /// Input `name`, or the error naming it and the inputs there are.
    pub(crate) fn known_input(&self, name: &str) -> Result<&InputInfo, Error> {
        self.input(name).ok_or_else(|| Error::UnknownInput {
            name: name.to_string(),
            available: self.input_names(),
        })
    }

    fn input_names(&self) -> Vec<String> {
        self.graph.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// Fixes some inputs; values given to `run`/`map` override bound ones.
    /// Each name must be an input, and each value of its type or a list of
    /// it (a `Vec<T>` bound to an input of type `T` is for `map` to map
    /// over: `map(.., ["name"])` takes the bound list when the inputs do not
    /// give one).
    ///
    /// ```
    /// use hypernodes_core::{Inputs, Pipeline, inputs, node};
    ///
    /// #[node(output = "sum")]
    /// fn add(x: i64, y: i64) -> i64 { x + y }
    ///
    /// let p = Pipeline::new([add::node()]).unwrap()
    ///     .bind(inputs! { "y" => 10i64, "x" => vec![1i64, 2] })
    ///     .unwrap();
    /// assert_eq!(p.bound::<i64>("y"), Some(&10));
    /// assert_eq!(p.run(inputs! { "x" => 5i64 }).unwrap().get::<i64>("sum").unwrap(), &15);
    /// // The bound list is what `map` maps over when no other is given.
    /// assert_eq!(p.map(Inputs::new(), ["x"]).unwrap().values::<i64>("sum").unwrap(), [11, 12]);
    /// ```
    pub fn bind(mut self, inputs: Inputs) -> Result<Self, Error> {
        let mut bound = (*self.bound).clone();
        for (name, value) in inputs.iter() {
            let info = self.known_input(name)?;
            if info.ty.list_len(value).is_none() {
                check_type(name, info.ty, value)?;
            }
            bound.insert(name.to_string(), value.clone());
        }
        self.bound = Arc::new(bound);
        Ok(self)
    }

    /// The value bound to input `name`, if any (see [`Pipeline::bind`]).
    pub fn bound_value(&self, name: &str) -> Option<&Value> {
        self.bound.get(name)
    }

    /// The value bound to input `name` as a `T`, if one of that type is.
    pub fn bound<T: std::any::Any>(&self, name: &str) -> Option<&T> {
        self.bound_value(name)?.downcast_ref::<T>()
    }

    /// Removes bound values.
    pub fn unbind<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut bound = (*self.bound).clone();
        for n in names {
            bound.remove(n.as_ref());
        }
        self.bound = Arc::new(bound);
        self
    }

    /// Turns the pipeline into a node named [`Pipeline::node_name`]. Its
    /// inputs are the pipeline's unfulfilled inputs, its outputs every
    /// pipeline output; rename them with [`Node::input_mapping`] /
    /// [`Node::output_mapping`], run it per element of lists with
    /// [`Node::map_over`].
    ///
    /// **Exposing outputs:** once a pipeline node has an `output_mapping`,
    /// it exposes only the outputs the mapping names (map an output to its
    /// own name to keep it as it is), and only the inner nodes those outputs
    /// need run. Without one, every inner output is exposed.
    ///
    /// ```
    /// use hypernodes_core::{Inputs, Pipeline, node};
    ///
    /// #[node(output = "cleaned")]
    /// fn clean(text: &str) -> String { text.trim().to_lowercase() }
    /// #[node(output = "word_count")]
    /// fn count(cleaned: &str) -> i64 { cleaned.split_whitespace().count() as i64 }
    /// #[node(output = "length")]
    /// fn measure(text: &str) -> i64 { text.len() as i64 }
    ///
    /// let inner = Pipeline::new([clean::node(), count::node(), measure::node()]).unwrap();
    /// let words = inner.as_node().output_mapping([("word_count", "words")]);
    /// let outer = Pipeline::new([words]).unwrap();
    /// assert_eq!(outer.outputs(), ["words"]); // `cleaned` and `length` stay inside
    /// let out = outer.run(Inputs::new().with("text", " A b ")).unwrap();
    /// assert_eq!(*out.get::<i64>("words").unwrap(), 2); // `measure` did not run
    /// ```
    pub fn as_node(&self) -> Node {
        let inputs = self
            .graph
            .inputs
            .iter()
            .filter(|i| !self.bound.contains_key(&i.name))
            .map(|i| Port::new(i.name.clone(), i.ty))
            .collect();
        let outputs = self
            .nodes()
            .flat_map(|n| n.outputs.iter().map(|p| Port::new(p.name.clone(), p.ty)))
            .collect();
        Node::new(
            self.node_name(),
            inputs,
            outputs,
            NodeKind::Nested(Arc::new(self.clone())),
            0,
        )
    }

    /// The engine that runs this pipeline.
    /// The pipeline's engine, or [`SeqEngine`].
    fn default_engine(&self) -> Arc<dyn Engine> {
        self.engine.clone().unwrap_or_else(|| Arc::new(SeqEngine))
    }

    /// The root scope of a `run` or `map` of this pipeline with `plan`.
    pub(crate) fn root_scope(&self, plan: Plan) -> Exec {
        Exec::root(
            Arc::new(self.clone()),
            Arc::new(plan),
            self.default_engine(),
        )
    }

    /// Runs the pipeline once and returns every output.
    ///
    /// ```
    /// use hypernodes_core::{Pipeline, inputs, node};
    ///
    /// #[node(output = "sum")]
    /// fn add(x: i64, y: i64) -> i64 { x + y }
    ///
    /// let p = Pipeline::new([add::node()]).unwrap();
    /// let out = p.run(inputs! { "x" => 1i64, "y" => 2i64 }).unwrap();
    /// assert_eq!(*out.get::<i64>("sum").unwrap(), 3);
    /// // Every missing input is named, with the nodes that need it.
    /// let err = p.run(inputs! {}).unwrap_err();
    /// assert_eq!(err.to_string(), "missing inputs: `x` (needed by `add`), `y` (needed by `add`)");
    /// ```
    pub fn run(&self, inputs: Inputs) -> Result<Outputs, Error> {
        self.run_with(inputs, RunOptions::default())
    }

    /// Runs the pipeline once with options (selected outputs).
    pub fn run_with(&self, inputs: Inputs, options: RunOptions) -> Result<Outputs, Error> {
        let plan = self.compile(options.outputs.as_deref())?;
        let slots = self.resolve_inputs(&plan, &inputs, &[])?;
        let exec = self.root_scope(plan);
        let out = exec.pipeline_scope(|| exec.engine.run(exec::RunJob::new(&exec, slots)));
        exec.flush_cache()?;
        out
    }

    /// Runs the pipeline once (with its cache) and returns, for each node,
    /// what the cache did and why: hit, miss (code changed — which parts —
    /// or new inputs) or not cached. Nested pipelines' nodes are included.
    pub fn explain_cache(&self, inputs: Inputs) -> Result<Vec<CacheDecision>, Error> {
        struct Collect(std::sync::Mutex<Vec<CacheDecision>>);
        impl Callback for Collect {
            fn on_cache_decision(
                &self,
                _ctx: &crate::observe::callback::CallbackContext<'_>,
                d: &CacheDecision,
            ) {
                if let Ok(mut all) = self.0.lock() {
                    all.push(d.clone());
                }
            }
        }
        let collect = Arc::new(Collect(std::sync::Mutex::new(Vec::new())));
        self.clone().with_callback(collect.clone()).run(inputs)?;
        let decisions = collect.0.lock().map(|d| d.clone()).unwrap_or_default();
        Ok(decisions)
    }

    /// Runs the pipeline once per item of the mapped inputs (the others are
    /// fixed for every item), on the pipeline's engine, with its cache:
    ///
    /// ```
    /// use hypernodes_core::{Inputs, MapOptions, Pipeline, node};
    ///
    /// #[node(output = "sum")]
    /// fn add(x: i64, y: i64) -> i64 { x + y }
    ///
    /// let p = Pipeline::new([add::node()]).unwrap();
    /// let inputs = Inputs::new().with("x", vec![1i64, 2, 3]).with("y", 10i64);
    /// let r = p.map(inputs, ["x"]).unwrap();
    /// assert_eq!(r.values::<i64>("sum").unwrap(), [11, 12, 13]);
    ///
    /// // Every combination of two lists.
    /// let inputs = Inputs::new().with("x", vec![1i64, 2]).with("y", vec![10i64, 20]);
    /// let r = p.map(inputs, MapOptions::over(["x", "y"]).product()).unwrap();
    /// assert_eq!(r.values::<i64>("sum").unwrap(), [11, 21, 12, 22]);
    /// ```
    ///
    /// `pipeline.map(inputs, ["text"])`.
    pub fn map(&self, inputs: Inputs, options: impl Into<MapOptions>) -> Result<MapResult, Error> {
        let options = options.into();
        let plan = self.compile(options.outputs.as_deref())?;
        let job = exec::MapJob::from_inputs(Arc::new(self.root_scope(plan)), &inputs, &options)?;
        let out = job.exec().pipeline_scope(|| job.execute());
        job.exec().flush_cache()?;
        out
    }

    /// Builds the `map` job for `inputs` without running it and hands it to
    /// `f`: for engines that describe what they would run (an explain).
    pub fn inspect_map<T>(
        &self,
        inputs: Inputs,
        options: impl Into<MapOptions>,
        f: impl FnOnce(&Arc<exec::MapJob>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let options = options.into();
        let plan = self.compile(options.outputs.as_deref())?;
        let job = exec::MapJob::from_inputs(Arc::new(self.root_scope(plan)), &inputs, &options)?;
        f(&job)
    }

    /// Checks the given inputs against the plan and fills the slot table.
    /// Names in `skip` (mapped inputs) are left empty.
    pub(crate) fn resolve_inputs(
        &self,
        plan: &Plan,
        inputs: &Inputs,
        skip: &[String],
    ) -> Result<Vec<Option<Value>>, Error> {
        for name in inputs.names() {
            if self.input(name).is_none() {
                return Err(Error::UnknownInput {
                    name: name.to_string(),
                    available: self.input_names(),
                });
            }
        }
        let mut slots = vec![None; plan.slot_count];
        let mut missing: Vec<(String, Vec<String>)> = Vec::new();
        for pi in &plan.inputs {
            if skip.contains(&pi.name) {
                continue;
            }
            let Some(value) = inputs.get(&pi.name).or_else(|| self.bound.get(&pi.name)) else {
                missing.push((pi.name.clone(), pi.needed_by.clone()));
                continue;
            };
            check_type(&pi.name, pi.ty, value)?;
            slots[pi.slot] = Some(value.clone());
        }
        // Every missing input at once.
        match missing.len() {
            0 => Ok(slots),
            1 => {
                let (name, needed_by) = missing.remove(0);
                Err(Error::MissingInput { name, needed_by })
            }
            _ => Err(Error::MissingInputs { inputs: missing }),
        }
    }
}
