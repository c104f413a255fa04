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
//! Two ways to reach a cluster: [`BallistaEngine::standalone`] runs a
//! scheduler and an executor inside the calling process (tests, laptops);
//! [`BallistaEngine::remote`] sends maps to a running scheduler whose
//! executors are processes of their own, started from binaries of the
//! user's crate that link its nodes ([`executor_main`], [`scheduler_main`]).
//! Before a remote map is sent, every executor must link every node of
//! it in this version ([`handshake`]). The map's input rows are staged as
//! Parquet files every process reads (`staging`). Results come back to the
//! caller; items that failed come back as data with them, named as on every
//! engine (node, pipeline path, item), with what each node computed and
//! found cached (to counting callbacks, `on_node_batch`/`on_items_batch`).
//! The node steps run in the executors, not in the caller's map: callbacks
//! see the map start and end, those counts, and on a remote cluster the
//! job's progress as its scheduler counts it (tasks and stages done,
//! `on_job_progress`), not per-item events.

mod cluster;
mod codec;
pub mod handshake;
mod progress;
mod staging;

pub use cluster::{
    ExecutorOptions, SchedulerOptions, executor_main, run_executor, run_scheduler, scheduler_main,
};

use std::sync::{Arc, OnceLock};

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::prelude::{SessionConfig, SessionContext};
use hypernodes_core::engine::Engine;
use hypernodes_core::node::NodeRegistry;
use hypernodes_core::{Error, MapJob, MapResult};
use hypernodes_datafusion::{DataFusionEngine, NodeCodec};

/// Runs maps on a Ballista cluster (see the crate docs).
pub struct BallistaEngine {
    /// The scheduler's URL (`df://host:port`), or `None`: in-process.
    scheduler: Option<String>,
    /// The scheduler's node handshake address (`host:port`).
    handshake: Option<String>,
    /// Where a map's input rows are staged as Parquet (see
    /// [`BallistaEngine::with_staging`]).
    staging: std::path::PathBuf,
    lowering: DataFusionEngine,
    codec: Arc<NodeCodec>,
    cluster: OnceLock<Result<SessionContext, String>>,
    /// One map at a time: the codec gathers the failures of the map it runs.
    running: std::sync::Mutex<()>,
}

/// The runtime Ballista's scheduler, executor and client run on (one per
/// process).
/// Where input rows are staged unless [`BallistaEngine::with_staging`]
/// says otherwise.
fn default_staging() -> std::path::PathBuf {
    std::env::temp_dir().join("hypernodes-staging")
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
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
            scheduler: None,
            handshake: None,
            staging: default_staging(),
            lowering: DataFusionEngine::new(),
            codec: Arc::new(NodeCodec::new(registry)),
            cluster: OnceLock::new(),
            running: std::sync::Mutex::new(()),
        }
    }

    /// An engine sending maps to the scheduler at `url` (`df://host:port`),
    /// connected on first use. The executors must know the pipeline's nodes
    /// (see [`executor_main`]) and reach the map's cache location.
    ///
    /// Before each map it asks the scheduler which nodes every executor
    /// links (see [`handshake`]; on the scheduler's port + 1 unless
    /// [`BallistaEngine::with_handshake_port`] says otherwise), and refuses
    /// to send a map one of them could not run.
    pub fn remote(url: impl Into<String>) -> Self {
        let url = url.into();
        let address = url.trim_start_matches("df://").to_string();
        let handshake = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some(handshake::address(host, port.parse().ok()?, None)));
        BallistaEngine {
            staging: default_staging(),
            handshake: Some(handshake.unwrap_or(address)),
            scheduler: Some(url),
            lowering: DataFusionEngine::new(),
            codec: Arc::new(NodeCodec::new(NodeRegistry::new())),
            cluster: OnceLock::new(),
            running: std::sync::Mutex::new(()),
        }
    }

    /// Stages each map's input rows as Parquet files under `dir` (removed
    /// when the map ends): a directory every process of the cluster can
    /// read — on several machines, a shared file system. Unless set, the
    /// system's temporary directory, which only a cluster on one machine
    /// shares.
    pub fn with_staging(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.staging = dir.into();
        self
    }

    /// Asks for the node handshake on `port` of the scheduler's host.
    pub fn with_handshake_port(mut self, port: u16) -> Self {
        if let Some(url) = &self.scheduler {
            let host = url
                .trim_start_matches("df://")
                .rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h)
                .to_string();
            self.handshake = Some(format!("{host}:{port}"));
        }
        self
    }

    /// The distributed plan of `pipeline.map(inputs, options)`, without
    /// running it: the logical plan, then the stages the scheduler cuts the
    /// physical plan into (Ballista's own planner, over the physical plan
    /// the scheduler's session makes), each ending in a shuffle write. The
    /// inputs are staged as for a map (and removed again), so the plan
    /// reads them as the cluster would; the executors are checked as
    /// before a map.
    pub fn explain(
        &self,
        pipeline: &hypernodes_core::Pipeline,
        inputs: hypernodes_core::Inputs,
        options: impl Into<hypernodes_core::MapOptions>,
    ) -> Result<String, Error> {
        use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
        use datafusion::physical_plan::displayable;
        pipeline.inspect_map(inputs, options, |job| {
            let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let ctx = self.before_sending(job)?;
            let df = self.lowering.lower_map(job)?;
            let (plan, staged) = staging::stage(df.into_unoptimized_plan(), &self.staging)?;
            let state = hypernodes_datafusion::session_state(ctx.copied_config());
            let failed = |e| Error::external("ballista: explain", e);
            let plan = state.optimize(&plan).map_err(failed)?;
            let physical = runtime()
                .block_on(state.create_physical_plan(&plan))
                .map_err(failed)?;
            let stages = DefaultDistributedPlanner::new()
                .plan_query_stages(
                    &ballista_core::JobId::new("explain"),
                    physical,
                    state.config().options(),
                )
                .map_err(|e| Error::external("ballista: explain", e))?;
            drop(staged);
            let mut out = format!("logical plan:\n{}\n", plan.display_indent());
            for stage in &stages {
                out.push_str(&format!(
                    "\nstage {}:\n{}",
                    stage.stage_id(),
                    displayable(stage.as_ref()).indent(false)
                ));
            }
            Ok(out)
        })
    }

    /// The executors the scheduler knows and the nodes each links (empty
    /// for a standalone engine).
    pub fn executors(&self) -> Result<Vec<handshake::ExecutorNodes>, Error> {
        match &self.handshake {
            Some(address) => handshake::executors(address),
            None => Ok(Vec::new()),
        }
    }

    /// Before a map is sent: every node of `job` is linked, in this
    /// version, by every executor (waiting up to a minute for a first
    /// executor to register).
    fn check_executors(&self, job: &MapJob) -> Result<(), Error> {
        let Some(address) = &self.handshake else {
            return Ok(());
        };
        let nodes: Vec<_> = job
            .columnar()?
            .steps
            .iter()
            .map(|s| (s.node.name().to_string(), s.node.code_hash()))
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let executors = handshake::executors(address)?;
            if !executors.is_empty() {
                return handshake::check(&executors, &nodes);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Engine {
                    message: format!(
                        "ballista: no executor registered with the scheduler ({address}) within 60 s"
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Before anything of `job` is sent: every node of its plan is known,
    /// in this very version of its code, to the in-process cluster's
    /// registry, or on a remote cluster to every executor. Then the
    /// cluster's client context.
    fn before_sending(&self, job: &MapJob) -> Result<&SessionContext, Error> {
        if self.scheduler.is_none() {
            for step in job.columnar()?.steps {
                self.codec
                    .registry()
                    .resolve(step.node.name(), &step.node.code_hash())?;
            }
        }
        self.check_executors(job)?;
        self.cluster()
    }

    /// After a plan ran: ends what the in-process cluster decoded (its
    /// steps' writes), and records in `job` any failed item its steps left
    /// behind rather than in the plan's rows.
    fn close_decoded(&self, job: &MapJob) -> Result<(), Error> {
        for (item, error) in self.codec.close()?.failures {
            job.state().fail(item, error);
        }
        Ok(())
    }

    /// The session a map's plan is sent with: the cluster's, its job named
    /// for a remote cluster, with a thread reporting that job's progress
    /// to the map's callbacks until the returned poller is dropped.
    fn session_for(
        &self,
        ctx: &SessionContext,
        job: &Arc<MapJob>,
    ) -> Result<
        (
            datafusion::execution::SessionState,
            Option<progress::Poller>,
        ),
        Error,
    > {
        let mut state = ctx.state();
        let Some(address) = &self.handshake else {
            return Ok((state, None));
        };
        let name = progress::job_name();
        state
            .config_mut()
            .options_mut()
            .set(ballista_core::config::BALLISTA_JOB_NAME, &name)
            .map_err(|e| Error::external("ballista: naming the job", e))?;
        Ok((state, Some(progress::Poller::start(address, &name, job))))
    }

    /// The client context of the cluster, started on first use.
    fn cluster(&self) -> Result<&SessionContext, Error> {
        self.cluster
            .get_or_init(|| {
                let codec = Arc::new(codec::ClusterCodec::new(self.codec.clone()));
                // As many partitions (tasks) as a map's inputs are staged in.
                let config = SessionConfig::new_with_ballista()
                    .with_target_partitions(staging::MAX_FILES)
                    .with_ballista_logical_extension_codec(codec.clone())
                    .with_ballista_physical_extension_codec(codec);
                // Planned as the DataFusion engine plans: no node UDF is
                // ever duplicated (the in-process scheduler plans with it).
                let state = hypernodes_datafusion::session_state(config);
                match &self.scheduler {
                    Some(url) => runtime()
                        .block_on(SessionContext::remote_with_state(url, state))
                        .map_err(|e| e.to_string()),
                    None => runtime()
                        .block_on(SessionContext::standalone_with_state(state))
                        .map_err(|e| e.to_string()),
                }
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

    fn scans_parquet(&self) -> bool {
        true
    }

    /// A table map over Parquet files as one plan on the cluster: its
    /// source reads the files where they are (every process must see
    /// them at the same paths).
    fn map_scan(
        &self,
        job: &Arc<MapJob>,
        scan: &hypernodes_core::columnar::TableScan,
        emit: &mut (dyn FnMut(datafusion::arrow::array::RecordBatch) -> Result<(), Error> + Send),
    ) -> Result<(), Error> {
        use futures::StreamExt;
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = self.before_sending(job)?;
        let plan = self.lowering.lower_scan(job, scan)?.into_unoptimized_plan();
        let (state, poller) = self.session_for(ctx, job)?;
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        let streamed = runtime().block_on(async move {
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| Error::external("ballista", e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| Error::external("ballista", e))?;
                emit(hypernodes_datafusion::scan_batch(job, batch)?)?;
            }
            Ok::<(), Error>(())
        });
        drop(poller);
        self.close_decoded(job)?;
        if let Some(fatal) = job.state().take_map_failure() {
            return Err(fatal);
        }
        streamed
    }

    fn map(&self, job: &Arc<MapJob>) -> Result<MapResult, Error> {
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = self.before_sending(job)?;
        self.lowering.map_on(job, |df| {
            // The input rows go as Parquet files, not inside the plan.
            let (plan, staged) = staging::stage(df.into_unoptimized_plan(), &self.staging)?;
            let (state, poller) = self.session_for(ctx, job)?;
            let df = datafusion::dataframe::DataFrame::new(state, plan);
            let batches = runtime().block_on(df.collect());
            drop(poller);
            drop(staged);
            self.close_decoded(job)?;
            batches.map_err(|e| Error::external("ballista", e))
        })
    }
}
