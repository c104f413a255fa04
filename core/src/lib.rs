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
//!
//! ## `#[node]` settings
//!
//! Every setting in one place (each is optional):
//!
//! ```
//! use std::sync::Arc;
//! use hypernodes_core::{Inputs, Pipeline, node};
//! use hypernodes_core::deps::arrow_array::{ArrayRef, Int64Array, cast::AsArray, types::Int64Type};
//!
//! // The output's name (default: the function's name); a Result fails the node.
//! #[node(output = "ratio")]
//! fn divide(x: i64, y: i64) -> Result<i64, String> {
//!     if y == 0 { Err("division by zero".into()) } else { Ok(x / y) }
//! }
//!
//! // Several outputs from a tuple; the node's own name; a retry on failure.
//! #[node(output = ("quotient", "remainder"), name = "split", retries = 2)]
//! fn divmod(x: i64) -> (i64, i64) { (x / 3, x % 3) }
//!
//! // A new version of the results (part of the signature), and an
//! // environment variable whose value is part of it too.
//! #[node(output = "scaled", version = "2", env = ["SCALE_HINT"])]
//! fn scale(quotient: i64) -> i64 { quotient * 10 }
//!
//! // Never cached (randomness, side effects); its dependents still are.
//! #[node(output = "stamp", cache = false)]
//! fn stamp(x: i64) -> i64 { x }
//!
//! // A batch implementation over Arrow arrays, called by columnar engines.
//! fn twice_batch(arrays: &[ArrayRef]) -> Result<Vec<ArrayRef>, hypernodes_core::BoxError> {
//!     let x = arrays[0].as_primitive::<Int64Type>();
//!     Ok(vec![Arc::new(x.iter().map(|v| v.map(|v| v * 2)).collect::<Int64Array>()) as ArrayRef])
//! }
//! #[node(output = "twice", batch = twice_batch)]
//! fn twice(x: i64) -> i64 { x * 2 }
//!
//! // An I/O-bound node: at most 8 calls in flight, at most 100 started a second.
//! #[node(output = "reply", concurrency = 8, max_per_second = 100)]
//! async fn ask(x: i64) -> i64 { x + 1 }
//!
//! let p = Pipeline::new([
//!     divide::node(), divmod::node(), scale::node(), stamp::node(), twice::node(), ask::node(),
//! ]).unwrap();
//! let out = p.run(Inputs::new().with("x", 7i64).with("y", 2i64)).unwrap();
//! assert_eq!(*out.get::<i64>("ratio").unwrap(), 3);
//! assert_eq!(*out.get::<i64>("scaled").unwrap(), 20);
//! assert_eq!(*out.get::<i64>("reply").unwrap(), 8);
//! assert_eq!(divmod::node().name(), "split");
//! assert_eq!(ask::node().concurrency(), 8);
//! ```

#![warn(missing_docs)]

extern crate self as hypernodes_core;

pub mod cache;
pub mod engine;
pub mod error;
pub mod io;
pub mod kernels;
pub mod map;
pub mod node;
pub mod observe;
pub mod pipeline;
pub mod signature;
pub mod table;
pub mod value;
pub mod viz;

pub use engine::columnar;
pub use node::{rows, typed};
pub use observe::callback;

pub use cache::{
    Cache, CacheDecision, CacheError, CacheKey, CacheOutcome, CacheRows, DatasetStats, DiskCache,
    Hits, Located, PendingWrite,
};
pub use callback::{Callback, CallbackContext, ItemBatch, ItemCounts, JobProgress, NodeCounts};
pub use engine::{Chunk, ItemOutput, MapJob, MapState, RunJob};
pub use engine::{Engine, ParallelEngine, SeqEngine};
pub use error::{BoxError, Error, Location, NodeError, Result};
pub use hypernodes_macros::{ArrowValue, node};
pub use io::{Inputs, Outputs};
pub use map::{
    Column, ErrorPolicy, ItemFailure, MapMode, MapOptions, MapResult, Row, RunOptions, TypedColumn,
};
pub use node::{Args, BatchFn, Node, NodeBuilder, NodeFn, Outs, Port};
pub use pipeline::{InputInfo, Pipeline};
pub use signature::Signature;
pub use value::{
    ArrowValue, Resource, ResourceKey, Value, ValueError, ValueType, readable_type_name,
};

/// Re-exports of dependencies, for code that works with values directly.
pub mod deps {
    pub use arrow_array;
    pub use arrow_schema;
    pub use parquet;
}

/// Items used by the code that `#[node]` and `#[derive(ArrowValue)]` generate.
/// Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::value::probe;
    pub use crate::value::serde_support;
    pub use crate::value::struct_support;
    pub use arrow_array::{Array, ArrayRef};
    pub use arrow_schema::Fields;
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
