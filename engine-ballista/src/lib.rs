//! HyperNodes on Apache Ballista: a `map` lowered to the same plan as on
//! [`DataFusionEngine`], sent to a Ballista scheduler and run by its
//! executors.
//!
//! Every process decodes the plan's node UDFs with a [`NodeCodec`] over
//! the user's [`NodeRegistry`]: a node missing there, or linked in another
//! version of its code, is an error naming it before any row runs. The
//! UDFs store and look up results in the cache the map was given, opened
//! again from its [`CacheLocation`](hypernodes_core::cache::CacheLocation)
//! in each process, so results are shared with every other engine.
//!
//! This first step runs the scheduler and one executor inside the calling
//! process ([`BallistaEngine::standalone`]); the map's input rows travel
//! inside the plan. What the engine reports: the map's result, its failed
//! items (named as on every engine) and, because the node steps run in the
//! executor rather than in the caller's map, no per-item callback events.

mod codec;

use std::sync::{Arc, OnceLock};

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use hypernodes_core::engine::Engine;
use hypernodes_core::node::NodeRegistry;
use hypernodes_core::{Error, MapJob, MapResult};
use hypernodes_datafusion::{DataFusionEngine, NodeCodec};

/// Runs maps on a Ballista cluster (see the crate docs).
pub struct BallistaEngine {
    lowering: DataFusionEngine,
    codec: Arc<NodeCodec>,
    cluster: OnceLock<Result<SessionContext, String>>,
    /// One map at a time: the codec gathers the failures of the map it runs.
    running: std::sync::Mutex<()>,
}

/// The runtime Ballista's scheduler, executor and client run on (one per
/// process).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("hypernodes-ballista")
            .enable_all()
            .build()
            .expect("a tokio runtime for Ballista")
    })
}

impl BallistaEngine {
    /// An engine with its own in-process scheduler and executor, started
    /// on first use, that know the nodes of `registry`.
    pub fn standalone(registry: NodeRegistry) -> Self {
        BallistaEngine {
            lowering: DataFusionEngine::new(),
            codec: Arc::new(NodeCodec::new(registry)),
            cluster: OnceLock::new(),
            running: std::sync::Mutex::new(()),
        }
    }

    /// The client context of the cluster, started on first use.
    fn cluster(&self) -> Result<&SessionContext, Error> {
        self.cluster
            .get_or_init(|| {
                let codec = Arc::new(codec::ClusterCodec::new(self.codec.clone()));
                let config = SessionConfig::new_with_ballista()
                    .with_ballista_logical_extension_codec(codec.clone())
                    .with_ballista_physical_extension_codec(codec);
                let state = SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features()
                    .build();
                runtime()
                    .block_on(SessionContext::standalone_with_state(state))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| Error::Engine {
                message: format!("engine `ballista`: the cluster did not start: {reason}"),
            })
    }
}

impl Engine for BallistaEngine {
    fn name(&self) -> &str {
        "ballista"
    }

    fn map(&self, job: &Arc<MapJob>) -> Result<MapResult, Error> {
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Before anything is sent: every node of the plan is known to the
        // cluster in this very version of its code.
        for step in job.columnar()?.steps {
            self.codec
                .registry()
                .resolve(step.node.name(), &step.node.code_hash())?;
        }
        let ctx = self.cluster()?;
        self.lowering.map_on(job, |df| {
            let plan = df.into_unoptimized_plan();
            let df = datafusion::dataframe::DataFrame::new(ctx.state(), plan);
            let batches = runtime().block_on(df.collect());
            // The steps ran in the executor: their failed items come back
            // through the codec that decoded them.
            let outcome = self.codec.close()?;
            for (item, error) in outcome.failures {
                job.state().fail(item, error);
            }
            batches.map_err(|e| Error::external("ballista", e))
        })
    }
}
