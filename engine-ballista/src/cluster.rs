//! The processes of a cluster, for binaries of the user's own crate that
//! link their nodes: a scheduler ([`scheduler_main`], [`run_scheduler`])
//! and executors ([`executor_main`], [`run_executor`]). Both decode plans
//! with the node registry they are given (the scheduler plans from the
//! client's logical plan, so it needs the node UDFs too; the stock Ballista
//! scheduler cannot decode them). Both bind to 127.0.0.1 unless told
//! otherwise: Ballista has no authentication of its own.
//!
//! An executor writes what each task stored to the cache before the task
//! reports success, so a map that ends has its results in the cache for
//! every other process and engine.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::JobId;
use ballista_core::serde::protobuf::{ShuffleWritePartition, TaskColumnStats};
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use hypernodes_core::Error;
use hypernodes_core::node::NodeRegistry;
use hypernodes_datafusion::NodeCodec;

use crate::codec::ClusterCodec;

/// Where a scheduler listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// The address to bind (`127.0.0.1` unless given).
    pub bind: String,
    /// The gRPC port clients and executors connect to.
    pub port: u16,
    /// The node handshake's port (`port + 1` unless given; see the
    /// `handshake` module).
    pub handshake_port: Option<u16>,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// and its tasks run elsewhere (executors beat every 2 s); also how
    /// long a job waits when no executor is left before it fails.
    pub executor_timeout_secs: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            bind: "127.0.0.1".into(),
            port: 50050,
            handshake_port: None,
            executor_timeout_secs: 20,
        }
    }
}

/// Where an executor listens and which scheduler it joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The address to bind (`127.0.0.1` unless given), also the one it
    /// tells others to reach it at.
    pub bind: String,
    /// The Arrow Flight port (results and shuffles are fetched from it).
    pub port: u16,
    /// The executor's gRPC port.
    pub grpc_port: u16,
    /// Where shuffle files go (a temporary directory unless given).
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once (all cores unless given).
    pub concurrency: Option<usize>,
    /// Its identifier (a new one unless given).
    pub id: Option<String>,
    /// The scheduler's node handshake port (its gRPC port + 1 unless given).
    pub handshake_port: Option<u16>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: 50050,
            bind: "127.0.0.1".into(),
            port: 50051,
            grpc_port: 50052,
            work_dir: None,
            concurrency: None,
            id: None,
            handshake_port: None,
        }
    }
}

fn usage(message: String) -> Error {
    Error::Engine {
        message: format!("ballista: {message}"),
    }
}

/// `--name value` pairs from the command line.
fn flags(
    args: impl Iterator<Item = String>,
    mut set: impl FnMut(&str, String) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| usage(format!("`{flag}` needs a value")))?;
        set(&flag, value)?;
    }
    Ok(())
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|_| usage(format!("`{flag}` takes a number, not `{value}`")))
}

impl SchedulerOptions {
    /// Options from command-line flags: `--bind HOST`, `--port N`,
    /// `--handshake-port N`, `--executor-timeout SECS`.
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut o = SchedulerOptions::default();
        flags(args, |flag, value| {
            match flag {
                "--bind" => o.bind = value,
                "--port" => o.port = number(flag, &value)?,
                "--handshake-port" => o.handshake_port = Some(number(flag, &value)?),
                "--executor-timeout" => o.executor_timeout_secs = number(flag, &value)?,
                _ => return Err(usage(format!("unknown scheduler flag `{flag}`"))),
            }
            Ok(())
        })?;
        Ok(o)
    }
}

impl ExecutorOptions {
    /// Options from command-line flags: `--scheduler HOST:PORT`, `--bind
    /// HOST`, `--port N`, `--grpc-port N`, `--work-dir DIR`,
    /// `--concurrency N`, `--id ID`, `--handshake-port N`.
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut o = ExecutorOptions::default();
        flags(args, |flag, value| {
            match flag {
                "--scheduler" => {
                    let (host, port) = value.rsplit_once(':').ok_or_else(|| {
                        usage(format!("`--scheduler` takes HOST:PORT, not `{value}`"))
                    })?;
                    o.scheduler_host = host.to_string();
                    o.scheduler_port = number(flag, port)?;
                }
                "--bind" => o.bind = value,
                "--port" => o.port = number(flag, &value)?,
                "--grpc-port" => o.grpc_port = number(flag, &value)?,
                "--work-dir" => o.work_dir = Some(value.into()),
                "--concurrency" => o.concurrency = Some(number(flag, &value)?),
                "--id" => o.id = Some(value),
                "--handshake-port" => o.handshake_port = Some(number(flag, &value)?),
                _ => return Err(usage(format!("unknown executor flag `{flag}`"))),
            }
            Ok(())
        })?;
        Ok(o)
    }
}

/// The `main` of a scheduler binary: options from the command line (see
/// [`SchedulerOptions::from_args`]), then [`run_scheduler`].
///
/// ```no_run
/// # fn registry() -> hypernodes_core::node::NodeRegistry { unimplemented!() }
/// fn main() -> Result<(), hypernodes_core::Error> {
///     hypernodes_ballista::scheduler_main(registry())
/// }
/// ```
pub fn scheduler_main(registry: NodeRegistry) -> Result<(), Error> {
    let options = SchedulerOptions::from_args(std::env::args().skip(1))?;
    run_scheduler(registry, &options)
}

/// The `main` of an executor binary: options from the command line (see
/// [`ExecutorOptions::from_args`]), then [`run_executor`].
///
/// ```no_run
/// # fn registry() -> hypernodes_core::node::NodeRegistry { unimplemented!() }
/// fn main() -> Result<(), hypernodes_core::Error> {
///     hypernodes_ballista::executor_main(registry())
/// }
/// ```
pub fn executor_main(registry: NodeRegistry) -> Result<(), Error> {
    let options = ExecutorOptions::from_args(std::env::args().skip(1))?;
    run_executor(registry, &options)
}

fn ballista_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::external(format!("ballista: {what}"), e)
}

/// Runs a scheduler that plans maps with the nodes of `registry`, until
/// the process ends.
pub fn run_scheduler(registry: NodeRegistry, options: &SchedulerOptions) -> Result<(), Error> {
    let nodes = Arc::new(NodeCodec::new(registry));
    let codec = Arc::new(ClusterCodec::new(nodes.clone()));
    let mut config = SchedulerConfig {
        bind_host: options.bind.clone(),
        bind_port: options.port,
        external_host: options.bind.clone(),
        // A lost executor is noticed in seconds, not Ballista's default
        // three minutes; with none left a job fails after as long.
        executor_timeout_seconds: options.executor_timeout_secs.max(1),
        expire_dead_executor_interval_seconds: (options.executor_timeout_secs / 2).clamp(1, 5),
        no_executors_grace_period_seconds: options.executor_timeout_secs.max(1),
        ..SchedulerConfig::default()
    };
    config.override_logical_codec = Some(codec.clone());
    config.override_physical_codec = Some(codec);
    // Plans are optimized as the client's engine would (a node's UDF is
    // never duplicated).
    config.override_session_builder = Some(Arc::new(|session: SessionConfig| {
        Ok(hypernodes_datafusion::session_state(session))
    }));
    let address = format!("{}:{}", options.bind, options.port)
        .parse()
        .map_err(|e| ballista_error("the scheduler's address", e))?;
    let handshake = crate::handshake::address(&options.bind, options.port, options.handshake_port);
    crate::runtime().block_on(async move {
        let cluster = BallistaCluster::new_from_config(&config)
            .await
            .map_err(|e| ballista_error("starting the scheduler", e))?;
        let listener = tokio::net::TcpListener::bind(&handshake)
            .await
            .map_err(|e| ballista_error(&format!("the node handshake's port {handshake}"), e))?;
        let cluster_state = cluster.cluster_state();
        let config = Arc::new(config);
        config
            .validate()
            .map_err(|e| ballista_error("the scheduler's configuration", e))?;
        let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
            .await
            .map_err(|e| ballista_error("starting the scheduler", e))?;
        tokio::spawn(crate::handshake::serve(
            listener,
            crate::handshake::Served {
                cluster: cluster_state,
                manifests: Default::default(),
                jobs: scheduler.state.clone(),
            },
        ));
        // Planning decodes the node steps here too: forget them now and
        // then (nothing runs them in this process).
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                every.tick().await;
                let nodes = nodes.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || nodes.flush()).await {
                    log::warn!("the scheduler's decoded steps: {e}");
                }
            }
        });
        start_grpc_service(address, scheduler)
            .await
            .map_err(|e| ballista_error("running the scheduler", e))
    })
}

/// Runs an executor that knows the nodes of `registry`, until the process
/// ends or the scheduler stops it.
pub fn run_executor(registry: NodeRegistry, options: &ExecutorOptions) -> Result<(), Error> {
    let nodes = Arc::new(NodeCodec::new(registry));
    let codec = Arc::new(ClusterCodec::new(nodes.clone()));
    let mut config = ExecutorProcessConfig {
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        bind_host: options.bind.clone(),
        external_host: Some(options.bind.clone()),
        port: options.port,
        grpc_port: options.grpc_port,
        work_dir: options
            .work_dir
            .as_ref()
            .map(|d| d.to_string_lossy().to_string()),
        // Registration is retried for this long while the scheduler starts.
        scheduler_connect_timeout_seconds: 60,
        executor_heartbeat_interval_seconds: 2,
        ..ExecutorProcessConfig::default()
    };
    if let Some(id) = &options.id {
        config.executor_id = id.clone();
    }
    // Before it registers: the scheduler learns which nodes it links.
    let handshake = crate::handshake::address(
        &options.scheduler_host,
        options.scheduler_port,
        options.handshake_port,
    );
    crate::handshake::tell(
        &handshake,
        &crate::handshake::Manifest::of(&config.executor_id, nodes.registry()),
        std::time::Duration::from_secs(60),
    )?;
    if let Some(n) = options.concurrency {
        config.vcores = n.max(1);
    }
    config.override_logical_codec = Some(codec.clone());
    config.override_physical_codec = Some(codec);
    config.override_execution_engine = Some(Arc::new(FlushingEngine {
        inner: DefaultExecutionEngine::new(),
        nodes,
    }));
    crate::runtime().block_on(async move {
        start_executor_process(Arc::new(config))
            .await
            .map_err(|e| ballista_error("running the executor", e))
    })
}

/// Ballista's execution engine, writing what each task stored to the cache
/// before the task reports back.
struct FlushingEngine {
    inner: DefaultExecutionEngine,
    nodes: Arc<NodeCodec>,
}

impl ExecutionEngine for FlushingEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> DfResult<Arc<dyn QueryStageExecutor>> {
        let inner = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(FlushAfter {
            inner,
            nodes: self.nodes.clone(),
        }))
    }
}

/// A task's stage, then the cache written.
#[derive(Debug)]
struct FlushAfter {
    inner: Arc<dyn QueryStageExecutor>,
    nodes: Arc<NodeCodec>,
}

impl fmt::Display for FlushAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for FlushAfter {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<Vec<ShuffleWritePartition>> {
        let out = self.inner.execute_query_stage(task_id, context).await;
        let nodes = self.nodes.clone();
        let flushed = tokio::task::spawn_blocking(move || nodes.flush())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        match flushed {
            Ok(cache_errors) => {
                for e in cache_errors {
                    log::warn!("a task went on without the cache: {e}");
                }
            }
            // The store of an object-store cache could not be reached: the
            // rows are complete in this executor's mirror and are pushed at
            // a later flush, so the task stands (a cache is an accelerator;
            // failing the job over an outage of the store would lose the
            // work of every task).
            Err(Error::Cache {
                source: source @ hypernodes_core::CacheError::Remote { .. },
                ..
            }) => {
                log::warn!("a task's cache rows wait in the local mirror: {source}");
            }
            // A local write that failed may succeed on a retry: Ballista
            // retries I/O errors.
            Err(e) => {
                return Err(DataFusionError::IoError(std::io::Error::other(
                    e.to_string(),
                )));
            }
        }
        out
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(
        &self,
    ) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(
        &self,
    ) -> DfResult<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}
