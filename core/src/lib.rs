//! # hypernodes-core
//!
//! The core of HyperNodes: typed nodes written for one item, pipelines that
//! wire them by name, and the row engines that run them once (`run`) or over
//! collections (`map`), with nesting to any depth.
//!
//! Most users depend on the `hypernodes` facade, which re-exports this crate.
//!
//! ```
//! use hypernodes_core::{node, Pipeline, inputs};
//!
//! #[node(output = "cleaned")]
//! fn clean(text: String) -> String {
//!     text.trim().to_lowercase()
//! }
//!
//! #[node(output = "word_count")]
//! fn count(cleaned: &str) -> i64 {
//!     cleaned.split_whitespace().count() as i64
//! }
//!
//! let p = Pipeline::new([clean::node(), count::node()]).unwrap();
//! let out = p.run(inputs! { "text" => "  Hello World " }).unwrap();
//! assert_eq!(*out.get::<i64>("word_count").unwrap(), 2);
//! ```

#![warn(missing_docs)]

extern crate self as hypernodes_core;

pub mod cache;
mod cache_log;
mod cached;
pub mod callback;
pub mod columnar;
pub mod engine;
pub mod error;
pub mod exec;
mod flat;
pub mod io;
pub mod map;
pub mod node;
pub mod pipeline;
pub mod rows;
mod runtime;
pub mod signature;
pub mod typed;
pub mod value;

pub use cache::{
    Cache, CacheDecision, CacheError, CacheKey, CacheOutcome, CacheRows, DatasetStats, DiskCache,
    Hits, Located, PendingWrite,
};
pub use callback::{Callback, CallbackContext};
pub use engine::{Engine, ParallelEngine, SeqEngine};
pub use error::{BoxError, Error, Location, NodeError, Result};
pub use exec::{Chunk, ItemOutput, MapJob, RunJob};
pub use hypernodes_macros::{ArrowValue, node};
pub use io::{Inputs, Outputs};
pub use map::{
    Column, ErrorPolicy, ItemFailure, MapMode, MapOptions, MapResult, Row, RunOptions, TypedColumn,
};
pub use node::{Args, BatchFn, Node, NodeBuilder, NodeFn, Outs, Port};
pub use pipeline::{InputInfo, Pipeline};
pub use signature::Signature;
pub use value::{ArrowValue, ResourceKey, Value, ValueError, ValueType};

/// Re-exports of dependencies, for code that works with values directly.
pub mod deps {
    pub use arrow_array;
    pub use arrow_schema;
}

/// Items used by the code that `#[node]` and `#[derive(ArrowValue)]` generate.
/// Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::value::probe;
    pub use crate::value::serde_support;
    pub use arrow_array::{Array, ArrayRef};
    pub use arrow_schema::{DataType, FieldRef};
    pub use futures::future::{BoxFuture, FutureExt};
    pub use std::sync::{Arc, OnceLock};

    /// Boxes a node's future.
    pub fn boxed<F>(f: F) -> BoxFuture<'static, F::Output>
    where
        F: std::future::Future + Send + 'static,
    {
        Box::pin(f)
    }
}
