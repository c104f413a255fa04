//! The handshake before any work: which nodes, in which version of their
//! code, every executor of a cluster links.
//!
//! Ballista resolves a UDF only when an executor decodes a task, and a
//! missing one surfaces as a task that "could not be prepared". So each
//! executor started by [`run_executor`](crate::run_executor) tells the
//! scheduler its node registry (a manifest) before it registers with
//! Ballista, and the scheduler started by
//! [`run_scheduler`](crate::run_scheduler) answers, for every executor
//! Ballista knows, the manifest it was told. A client checks every node of a
//! map against every executor before it submits the map: a node missing
//! from an executor, or linked there in another version, is an
//! [`Error::Executor`] naming the node, the executor and both code hashes.
//!
//! The manifests travel over a plain TCP port of the scheduler's (its gRPC
//! port + 1 unless told otherwise), one JSON line each way: `PUT <manifest>`
//! from an executor (answered `OK`), `GET` from a client (answered with the
//! executors). The same port answers `PROGRESS <job name>` with how far
//! that running job is (tasks and stages done and planned, or `null`): a
//! client names each map's job and polls it while the map runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballista_scheduler::cluster::ClusterState;
use ballista_scheduler::state::SchedulerState;
use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use hypernodes_core::node::{NodeRegistry, RegistryError};
use hypernodes_core::signature::Signature;
use hypernodes_core::{Error, JobProgress};
use serde::{Deserialize, Serialize};

/// What an executor links: its id and, per node, its name and code hash
/// (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The executor's id (as Ballista knows it).
    pub executor: String,
    /// Every node version it links: name and code hash (hex).
    pub nodes: Vec<(String, String)>,
}

impl Manifest {
    /// The manifest of an executor `executor` linking `registry`.
    pub fn of(executor: &str, registry: &NodeRegistry) -> Manifest {
        Manifest {
            executor: executor.to_string(),
            nodes: registry
                .versions()
                .into_iter()
                .map(|(name, code)| (name, code.to_hex()))
                .collect(),
        }
    }

    /// Whether node `name` in the version `code` is linked here: the
    /// refusal naming both hashes if not.
    pub fn check(&self, name: &str, code: &Signature) -> Result<(), RegistryError> {
        let hex = code.to_hex();
        let versions: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c)
            .collect();
        match versions.as_slice() {
            [] => Err(RegistryError::UnknownNode {
                node: name.to_string(),
                wanted: *code,
            }),
            found if found.contains(&&hex) => Ok(()),
            [linked, ..] => Err(RegistryError::CodeMismatch {
                node: name.to_string(),
                wanted: *code,
                linked: Signature::from_hex(linked).unwrap_or(Signature([0; 32])),
            }),
        }
    }
}

/// An executor the scheduler knows, with the manifest it was told (`None`:
/// it told none, so it was not started by `run_executor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorNodes {
    /// The executor's id.
    pub executor: String,
    /// Its manifest.
    pub manifest: Option<Manifest>,
}

/// The handshake address of a scheduler on `host` whose gRPC port is
/// `port`: `host:port+1`, unless `explicit` names the handshake's port.
pub(crate) fn address(host: &str, port: u16, explicit: Option<u16>) -> String {
    format!("{host}:{}", explicit.unwrap_or(port.saturating_add(1)))
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::external(what, e)
}

/// One request line to `address`, one answer line back, within `timeout`.
fn ask(address: &str, line: &str, timeout: Duration) -> Result<String, Error> {
    let what = || format!("ballista: the scheduler's node handshake at {address}");
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|e| io_error(what(), e))?
        .next()
        .ok_or_else(|| Error::Engine {
            message: format!("{}: no such address", what()),
        })?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| io_error(what(), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io_error(what(), e))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| io_error(what(), e))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| io_error(what(), e))?;
    Ok(answer.trim_end().to_string())
}

/// Tells the scheduler's handshake port at `address` this executor's
/// manifest, retrying until `patience` is over (the scheduler may still be
/// starting).
pub(crate) fn tell(address: &str, manifest: &Manifest, patience: Duration) -> Result<(), Error> {
    let line = format!(
        "PUT {}",
        serde_json::to_string(manifest).map_err(|e| Error::external("a manifest", e))?
    );
    let deadline = Instant::now() + patience;
    loop {
        match ask(address, &line, Duration::from_secs(10)) {
            Ok(answer) if answer == "OK" => return Ok(()),
            Ok(answer) => {
                return Err(Error::Engine {
                    message: format!(
                        "ballista: the scheduler at {address} refused the manifest: {answer}"
                    ),
                });
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// How far the running job named `name` is, as the scheduler whose
/// handshake port is at `address` counts it (`None`: no such job is
/// running, not yet or no longer).
pub fn progress(address: &str, name: &str) -> Result<Option<JobProgress>, Error> {
    let answer = ask(address, &format!("PROGRESS {name}"), Duration::from_secs(5))?;
    let wire: Option<ProgressWire> = serde_json::from_str(&answer)
        .map_err(|e| Error::external("the scheduler's job progress", e))?;
    Ok(wire.map(|w| JobProgress {
        tasks_done: w.tasks_done,
        tasks_total: w.tasks_total,
        stages_done: w.stages_done,
        stages_total: w.stages_total,
    }))
}

/// [`JobProgress`] on the wire.
#[derive(Serialize, Deserialize)]
struct ProgressWire {
    tasks_done: usize,
    tasks_total: usize,
    stages_done: usize,
    stages_total: usize,
}

/// The executors the scheduler's handshake port at `address` knows.
pub fn executors(address: &str) -> Result<Vec<ExecutorNodes>, Error> {
    let answer = ask(address, "GET", Duration::from_secs(10))?;
    serde_json::from_str(&answer).map_err(|e| Error::external("the scheduler's executors", e))
}

/// Checks `nodes` (name and code hash) against every executor of
/// `executors` (see the module docs).
pub(crate) fn check(
    executors: &[ExecutorNodes],
    nodes: &[(String, Signature)],
) -> Result<(), Error> {
    for e in executors {
        let Some(manifest) = &e.manifest else {
            return Err(Error::Engine {
                message: format!(
                    "ballista: executor `{}` did not say which nodes it links (start executors with hypernodes_ballista::executor_main)",
                    e.executor
                ),
            });
        };
        for (name, code) in nodes {
            manifest
                .check(name, code)
                .map_err(|source| Error::Executor {
                    executor: e.executor.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The manifests a scheduler was told, by executor id.
pub(crate) type Manifests = Arc<Mutex<HashMap<String, Manifest>>>;

/// What the handshake port answers from: the scheduler's executors, the
/// manifests they told, and its jobs.
#[derive(Clone)]
pub(crate) struct Served {
    /// The executors Ballista knows.
    pub(crate) cluster: Arc<dyn ClusterState>,
    /// The manifests told so far.
    pub(crate) manifests: Manifests,
    /// The scheduler's state (its running jobs).
    pub(crate) jobs: Arc<SchedulerState<LogicalPlanNode, PhysicalPlanNode>>,
}

/// Serves the handshake port, until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, served: Served) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, served).await {
                log::warn!("node handshake: {e}");
            }
        });
    }
}

/// How far the running job named `name` is (the most recently started, if
/// several share the name).
async fn job_progress(
    jobs: &SchedulerState<LogicalPlanNode, PhysicalPlanNode>,
    name: &str,
) -> Option<ProgressWire> {
    let mut found: Option<(u64, ProgressWire)> = None;
    for job in jobs.task_manager.get_running_job_cache().values() {
        let graph = job.execution_graph.read().await;
        if graph.job_name() != name {
            continue;
        }
        let mut wire = ProgressWire {
            tasks_done: 0,
            tasks_total: 0,
            stages_done: graph.completed_stages(),
            stages_total: graph.stage_count(),
        };
        for stage in graph.stages().values() {
            let (done, total) = match stage {
                ExecutionStage::UnResolved(s) => {
                    (0, s.plan.output_partitioning().partition_count())
                }
                ExecutionStage::Resolved(s) => (0, s.partitions),
                ExecutionStage::Running(s) => {
                    (s.successful_tasks().min(s.partitions), s.partitions)
                }
                ExecutionStage::Successful(s) => (s.partitions, s.partitions),
                ExecutionStage::Failed(s) => (0, s.partitions),
            };
            wire.tasks_done += done;
            wire.tasks_total += total;
        }
        if found
            .as_ref()
            .is_none_or(|(at, _)| graph.start_time() >= *at)
        {
            found = Some((graph.start_time(), wire));
        }
    }
    found.map(|(_, wire)| wire)
}

async fn answer(stream: tokio::net::TcpStream, served: Served) -> std::io::Result<()> {
    let Served {
        cluster,
        manifests,
        jobs,
    } = served;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read).read_line(&mut line).await?;
    let line = line.trim_end();
    let reply = if let Some(json) = line.strip_prefix("PUT ") {
        match serde_json::from_str::<Manifest>(json) {
            Ok(m) => {
                manifests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(m.executor.clone(), m);
                "OK".to_string()
            }
            Err(e) => format!("not a manifest: {e}"),
        }
    } else if line == "GET" {
        let mut ids: Vec<String> = cluster.executor_heartbeats().into_keys().collect();
        ids.sort();
        let known = manifests.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let list: Vec<ExecutorNodes> = ids
            .into_iter()
            .map(|id| ExecutorNodes {
                manifest: known.get(&id).cloned(),
                executor: id,
            })
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|e| format!("error: {e}"))
    } else if let Some(name) = line.strip_prefix("PROGRESS ") {
        let progress = job_progress(&jobs, name).await;
        serde_json::to_string(&progress).unwrap_or_else(|e| format!("error: {e}"))
    } else {
        format!("unknown request `{line}`")
    };
    write.write_all(format!("{reply}\n").as_bytes()).await
}
