//! # HyperNodes
//!
//! Hierarchical, modular, cached data pipelines: write typed functions for
//! one item, wire them into pipelines by name, run them once or over
//! millions of items, and nest pipelines as nodes.
//!
//! This facade re-exports [`hypernodes_core`]; the README follows.
#![doc = include_str!("../README.md")]

pub use hypernodes_core::*;

/// Every engine, the opt-in ones behind their features: [`SeqEngine`] and
/// [`ParallelEngine`] always, `DataFusionEngine` with the `datafusion`
/// feature (with `NodeCodec`, which decodes its plans in another process,
/// `failures`, which reads the failed items such a plan gives back,
/// `dataframe_table`, which maps over a query's results, and the
/// `datafusion` crate it is built on), and `BallistaEngine` with the
/// `ballista` feature (with what the scheduler and executor binaries of a
/// cluster call: `scheduler_main`, `executor_main`).
pub mod engines {
    #[cfg(feature = "ballista")]
    pub use hypernodes_ballista::{
        BallistaEngine, ExecutorOptions, SchedulerOptions, executor_main, handshake, run_executor,
        run_scheduler, scheduler_main,
    };
    pub use hypernodes_core::{ParallelEngine, SeqEngine};
    #[cfg(feature = "datafusion")]
    pub use hypernodes_datafusion::{
        DataFusionEngine, DecodedOutcome, NodeCodec, dataframe_table, datafusion, failures,
    };
}
