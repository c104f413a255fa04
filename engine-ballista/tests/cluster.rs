//! A real cluster: a scheduler and two executor processes on 127.0.0.1,
//! started from the demo binaries (which link the same nodes as this test),
//! sharing one cache directory with the test process. Every wait has a
//! deadline; each process keeps a log, printed when a test fails.

// The fault tests say what happened (which outcome, what was cached).
#![allow(clippy::print_stderr)]

#[allow(dead_code)]
#[path = "../demo/nodes.rs"]
mod nodes;
mod support;

use support::deadline;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hypernodes_ballista::BallistaEngine;
use hypernodes_core::node::RegistryError;
use hypernodes_core::{
    Callback, CallbackContext, DiskCache, Error, ErrorPolicy, Inputs, MapOptions, Pipeline,
    SeqEngine, node,
};
use hypernodes_testkit::borrowed;

/// A free TCP port on 127.0.0.1 (the OS picks it; free when returned).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A free port whose next port is free too: the scheduler serves its node
/// handshake on its port + 1, which no other pick may take.
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The scheduler and executors, killed when dropped.
struct Cluster {
    children: Vec<(String, Child)>,
    logs: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// Starts a scheduler and `executors` demo executors counting `clean`'s
    /// calls in `calls`; returns when the scheduler accepts connections.
    fn start(executors: usize, calls: &Path) -> Cluster {
        let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
        Cluster::start_with(&vec![demo; executors], calls)
    }

    /// Starts a scheduler and one executor per binary of `executors`.
    fn start_with(executors: &[&str], calls: &Path) -> Cluster {
        Cluster::start_opts(executors, calls, &[], &[], 2)
    }

    /// [`Cluster::start_with`], the scheduler with `scheduler_args` too,
    /// the executors with `env` set.
    fn start_opts(
        executors: &[&str],
        calls: &Path,
        scheduler_args: &[&str],
        env: &[(&str, &str)],
        concurrency: usize,
    ) -> Cluster {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let mut cluster = Cluster {
            children: Vec::new(),
            logs,
            port,
        };
        let mut args = vec!["--port".to_string(), port.to_string()];
        args.extend(scheduler_args.iter().map(|a| a.to_string()));
        cluster.spawn(
            "scheduler",
            env!("CARGO_BIN_EXE_hypernodes-demo-scheduler"),
            &args,
            calls,
            &[],
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            cluster.check_alive();
            assert!(
                Instant::now() < deadline,
                "the scheduler did not listen in 120 s\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for (i, bin) in executors.iter().enumerate() {
            let work = cluster.logs.path().join(format!("work-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            // Each executor mirrors object-store caches in a directory of
            // its own, as on a machine of its own.
            let mirror = cluster.mirror(i).to_string_lossy().into_owned();
            let mut env = env.to_vec();
            env.push(("HYPERNODES_CACHE_MIRROR", &mirror));
            cluster.spawn(
                &format!("executor-{i}"),
                bin,
                &[
                    "--scheduler".into(),
                    format!("127.0.0.1:{port}"),
                    "--port".into(),
                    free_port().to_string(),
                    "--grpc-port".into(),
                    free_port().to_string(),
                    "--work-dir".into(),
                    work.to_string_lossy().to_string(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                    "--id".into(),
                    format!("executor-{i}"),
                ],
                calls,
                &env,
            );
        }
        cluster
    }

    /// Where executor `i` mirrors object-store caches.
    fn mirror(&self, i: usize) -> PathBuf {
        self.logs.path().join(format!("mirror-{i}"))
    }

    fn spawn(
        &mut self,
        name: &str,
        bin: &str,
        args: &[String],
        calls: &Path,
        env: &[(&str, &str)],
    ) {
        let log = std::fs::File::create(self.logs.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("HYPERNODES_DEMO_CALLS", calls)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({bin}): {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Fails the test if a process ended.
    fn check_alive(&mut self) {
        let mut ended = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                ended.push(format!("{name} ended: {status}"));
            }
        }
        assert!(ended.is_empty(), "{ended:?}\n{}", self.logs());
    }

    /// Every process's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: String = text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            out.push_str(&format!("--- {name} ---\n{tail}\n"));
        }
        out
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls of `clean` counted in `dir` by every process so far.
fn calls_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .map(|t| t.lines().count())
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// What a counting callback hears: items finished, and per node items
/// computed and found cached.
#[derive(Default)]
struct Tally {
    items: AtomicUsize,
    nodes: std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

impl Callback for Tally {
    fn item_events(&self) -> bool {
        false
    }
    fn on_items_batch(&self, _: &CallbackContext<'_>, counts: hypernodes_core::ItemCounts) {
        self.items.fetch_add(counts.ended, Ordering::Relaxed);
    }
    fn on_node_batch(&self, _: &CallbackContext<'_>, node: &str, c: hypernodes_core::NodeCounts) {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes.entry(node.to_string()).or_default();
        e.0 += c.computed;
        e.1 += c.cached;
    }
}

/// Counts `clean`'s computed items in this process.
#[derive(Default)]
struct Computed(AtomicUsize);

impl Callback for Computed {
    fn on_node_end(&self, _: &CallbackContext<'_>, node: &str, _: Duration) {
        if node == "clean" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn texts(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("  Text {i} Has {} WORDS ", i % 7))
        .collect()
}

fn word_counts(r: &hypernodes_core::MapResult) -> Vec<i64> {
    r.values::<i64>("word_count").unwrap()
}

#[test]
fn a_cluster_of_processes_gives_seq_results_and_shares_one_cache_both_ways() {
    let calls = tempfile::tempdir().unwrap();
    let cache: PathBuf = tempfile::tempdir().unwrap().keep();
    let mut cluster = Cluster::start(2, calls.path());
    let url = cluster.url();
    let t = texts(0, 2000);
    let want = word_counts(
        &nodes::pipeline()
            .with_engine(SeqEngine)
            .map(Inputs::new().with("text", t.clone()), ["text"])
            .unwrap(),
    );

    // Half of them computed by SeqEngine in this process.
    let computed = Arc::new(Computed::default());
    nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(&cache))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", t[..1000].to_vec()), ["text"])
        .unwrap();
    assert_eq!(computed.0.swap(0, Ordering::Relaxed), 1000);

    // On the cluster: Seq's results, and only the other half computed there.
    let engine = Arc::new(BallistaEngine::remote(url));
    let on_cluster = nodes::pipeline()
        .with_shared_engine(engine.clone())
        .with_cache(DiskCache::new(&cache));
    let tally = Arc::new(Tally::default());
    let (p, all) = (on_cluster.clone().with_callback(tally.clone()), t.clone());
    let r = deadline(240, "the first map on the cluster", move || {
        p.map(Inputs::new().with("text", all), ["text"])
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(word_counts(&r), want);
    assert_eq!(calls_in(calls.path()), 1000, "{}", cluster.logs());
    // What the executors did comes back as counts for the callbacks.
    assert_eq!(tally.items.load(Ordering::Relaxed), 2000);
    let nodes_seen = tally.nodes.lock().unwrap().clone();
    assert_eq!(
        nodes_seen.get("clean"),
        Some(&(1000, 1000)),
        "{nodes_seen:?}"
    );
    assert_eq!(
        nodes_seen.get("count"),
        Some(&(1000, 1000)),
        "{nodes_seen:?}"
    );
    cluster.check_alive();

    // Again: nothing computed anywhere.
    let (p, all) = (on_cluster.clone(), t.clone());
    let r = deadline(120, "the second map", move || {
        p.map(Inputs::new().with("text", all), ["text"])
    })
    .unwrap();
    assert_eq!(word_counts(&r), want);
    assert_eq!(calls_in(calls.path()), 1000);

    // The reverse: new items computed on the cluster are hits for Seq.
    let fresh = texts(5000, 500);
    let (p, items) = (on_cluster.clone(), fresh.clone());
    deadline(120, "new items on the cluster", move || {
        p.map(Inputs::new().with("text", items), ["text"])
    })
    .unwrap();
    assert_eq!(calls_in(calls.path()), 1500);
    let r = nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(&cache))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", fresh), ["text"])
        .unwrap();
    assert_eq!(r.len(), 500);
    assert_eq!(
        computed.0.load(Ordering::Relaxed),
        0,
        "the cluster's results were in the cache when its map ended"
    );
    cluster.check_alive();
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn items_failing_on_executors_come_back_named_under_each_policy() {
    let calls = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(2, calls.path());
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    let mut t = texts(0, 3000);
    t[17] = "poison pill".into();
    t[2500] = "more poison".into();
    let (p, items) = (
        nodes::pipeline().with_shared_engine(engine.clone()),
        t.clone(),
    );
    let r = deadline(240, "a map with failures", move || {
        p.map(
            Inputs::new().with("text", items),
            MapOptions::over(["text"]).on_error(ErrorPolicy::Continue),
        )
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let failed: Vec<(usize, String, bool)> = r
        .failures()
        .iter()
        .map(|f| {
            (
                f.index,
                f.node().to_string(),
                f.message().contains("cannot clean"),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [(17, "clean".into(), true), (2500, "clean".into(), true)]
    );
    assert_eq!(r.len(), 3000);

    // Under the stop policy the map's error is the first failure.
    let p = nodes::pipeline().with_shared_engine(engine);
    let err = deadline(120, "a map that stops", move || {
        p.map(Inputs::new().with("text", t), ["text"])
    })
    .unwrap_err();
    assert_eq!(err.node(), Some("clean"), "{err}");
    assert_eq!(err.item(), Some(17), "{err}");
    cluster.check_alive();
}

/// Waits until the scheduler knows `n` executors that told their nodes.
fn wait_for_executors(engine: &BallistaEngine, cluster: &mut Cluster, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let known = engine.executors().unwrap_or_default();
        if known.len() >= n && known.iter().all(|e| e.manifest.is_some()) {
            return;
        }
        cluster.check_alive();
        assert!(
            Instant::now() < deadline,
            "{n} executors did not register in 120 s: {known:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node no executor links.
#[node(output = "shouted")]
fn shout(cleaned: &str) -> String {
    cleaned.to_uppercase()
}

#[test]
fn a_map_an_executor_cannot_run_is_refused_before_anything_runs_naming_node_executor_and_hashes() {
    let calls = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(
        &[
            env!("CARGO_BIN_EXE_hypernodes-demo-executor"),
            env!("CARGO_BIN_EXE_hypernodes-demo-executor-other"),
        ],
        calls.path(),
    );
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let t = texts(0, 200);

    // `count` is linked by executor-1 in another version.
    let p = nodes::pipeline().with_shared_engine(engine.clone());
    let items = t.clone();
    let err = deadline(60, "a map executor-1 cannot run", move || {
        p.map(Inputs::new().with("text", items), ["text"])
    })
    .unwrap_err();
    let wanted = nodes::count::node().code_hash();
    match &err {
        Error::Executor {
            executor,
            source:
                RegistryError::CodeMismatch {
                    node,
                    wanted: w,
                    linked,
                },
        } => {
            assert_eq!(executor, "executor-1");
            assert_eq!(node, "count");
            assert_eq!(*w, wanted);
            assert_ne!(*linked, wanted);
            let text = err.to_string();
            assert!(
                text.contains(&wanted.to_hex()) && text.contains(&linked.to_hex()),
                "{text}"
            );
        }
        other => panic!("expected a code mismatch on executor-1, got {other:?}"),
    }

    // A node no executor links.
    let p = Pipeline::new([nodes::clean::node(), shout::node()])
        .unwrap()
        .with_shared_engine(engine.clone());
    let items = t.clone();
    let err = deadline(60, "a map with a node nobody links", move || {
        p.map(Inputs::new().with("text", items), ["text"])
    })
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Executor { source: RegistryError::UnknownNode { node, .. }, .. } if node == "shout"
        ),
        "{err:?}"
    );
    assert_eq!(calls_in(calls.path()), 0, "nothing ran");

    // What every executor links runs.
    let p = Pipeline::new([nodes::clean::node()])
        .unwrap()
        .with_shared_engine(engine);
    let r = deadline(120, "a map both executors can run", move || {
        p.map(Inputs::new().with("text", t), ["text"])
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.len(), 200);
    assert_eq!(calls_in(calls.path()), 200);
    cluster.check_alive();
}

#[test]
fn a_map_too_large_for_a_plan_message_goes_through_staged_parquet() {
    // 300,000 items and their hashes are about 20 MB: more than the 16 MB
    // a gRPC message may hold, had the rows travelled inside the plan.
    const N: usize = 300_000;
    let calls = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(2, calls.path());
    let engine = Arc::new(BallistaEngine::remote(cluster.url()).with_staging(staging.path()));
    let t = texts(0, N);
    let want: Vec<i64> = t
        .iter()
        .map(|s| s.trim().to_lowercase().split_whitespace().count() as i64)
        .collect();
    let p = nodes::pipeline().with_shared_engine(engine);
    let r = deadline(600, "a map of 300,000 items", move || {
        p.map(Inputs::new().with("text", t), ["text"])
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(word_counts(&r), want);
    assert_eq!(calls_in(calls.path()), N);
    // The staged files are gone with the map.
    let left: Vec<_> = std::fs::read_dir(staging.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    cluster.check_alive();
}

/// Rows of `node` in the cache at `dir` (0 if none).
fn cached_rows(dir: &Path, node: &str) -> usize {
    DiskCache::new(dir)
        .stats()
        .unwrap()
        .iter()
        .filter(|s| s.node == node)
        .map(|s| s.rows)
        .sum()
}

#[test]
fn an_executor_killed_mid_map_loses_only_what_it_had_not_written() {
    const N: usize = 4000;
    let calls = tempfile::tempdir().unwrap();
    let cache: PathBuf = tempfile::tempdir().unwrap().keep();
    let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
    let mut cluster = Cluster::start_opts(
        &[demo, demo],
        calls.path(),
        &["--executor-timeout", "6"],
        &[("HYPERNODES_DEMO_SLEEP_MS", "2")],
        1,
    );
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let t = texts(0, N);
    let want: Vec<i64> = t
        .iter()
        .map(|s| s.trim().to_lowercase().split_whitespace().count() as i64)
        .collect();

    // Slow items (2 ms each) over both executors (one task slot each, two
    // tasks); executor-1 is killed (SIGKILL) once it is well into its task.
    let p = nodes::pipeline()
        .with_shared_engine(engine.clone())
        .with_cache(DiskCache::new(&cache));
    let items = t.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.map(Inputs::new().with("text", items), ["text"]));
    });
    let victim_pid = cluster
        .children
        .iter()
        .find(|(name, _)| name == "executor-1")
        .map(|(_, c)| c.id())
        .unwrap();
    let victim_calls = calls.path().join(format!("clean-{victim_pid}"));
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(&victim_calls) < 300 {
        assert!(
            Instant::now() < deadline,
            "executor-1 did not start its task\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, victim) = cluster
        .children
        .iter_mut()
        .find(|(name, _)| name == "executor-1")
        .unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let done_by_victim = lines(&victim_calls);
    assert!(done_by_victim < N / 2, "killed mid-task ({done_by_victim})");

    // The map completes on executor-0 (Ballista runs the lost task again)
    // or fails with an error that says so: never a hang, never wrong rows.
    let outcome = rx
        .recv_timeout(Duration::from_secs(240))
        .unwrap_or_else(|_| panic!("the map hung after the kill\n{}", cluster.logs()));
    match &outcome {
        Ok(r) => assert_eq!(word_counts(r), want),
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // The cache is intact: it reads back, and a re-run computes exactly
    // what it does not hold.
    let cached = cached_rows(&cache, "clean");
    eprintln!(
        "after the kill: {}, {cached} of {N} items cached, {} calls in all",
        match &outcome {
            Ok(_) => "the map completed".to_string(),
            Err(e) => format!("the map failed: {e}"),
        },
        calls_in(calls.path())
    );
    assert!(cached <= N);
    if outcome.is_ok() {
        assert_eq!(cached, N, "a completed map left every result cached");
    }
    let computed = Arc::new(Computed::default());
    let r = nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(&cache))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", t), ["text"])
        .unwrap();
    assert_eq!(word_counts(&r), want);
    assert_eq!(computed.0.load(Ordering::Relaxed), N - cached);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn when_every_executor_dies_the_map_fails_in_bounded_time() {
    let calls = tempfile::tempdir().unwrap();
    let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
    let mut cluster = Cluster::start_opts(
        &[demo],
        calls.path(),
        &["--executor-timeout", "6"],
        &[("HYPERNODES_DEMO_SLEEP_MS", "2")],
        1,
    );
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 1);
    let p = nodes::pipeline().with_shared_engine(engine);
    let t = texts(0, 4000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.map(Inputs::new().with("text", t), ["text"]));
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while calls_in(calls.path()) < 200 {
        assert!(
            Instant::now() < deadline,
            "the map did not start\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Instant::now();
    for (name, child) in &mut cluster.children {
        if name.starts_with("executor") {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let outcome = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| panic!("the map hung with no executor left\n{}", cluster.logs()));
    let err = outcome.expect_err("no executor was left to finish the map");
    eprintln!(
        "with every executor gone the map failed after {:.1} s: {err}",
        killed.elapsed().as_secs_f64()
    );
    assert!(!err.to_string().is_empty());
}

#[test]
fn a_parquet_table_maps_on_the_cluster_read_where_it_is() {
    use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
    use datafusion::parquet::arrow::ArrowWriter;
    use hypernodes_core::table::Table;
    const ROWS: usize = 6000;
    let calls = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let cache: PathBuf = tempfile::tempdir().unwrap().keep();
    // Three files; row 7 has no text.
    let t = texts(0, ROWS);
    for (f, range) in [(0, 0..2500), (1, 2500..4000), (2, 4000..ROWS)] {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            range.clone().map(|i| i as i64),
        ));
        let bodies: ArrayRef = Arc::new(StringArray::from(
            range
                .clone()
                .map(|i| (i != 7).then(|| t[i].clone()))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("body", bodies)]).unwrap();
        let file = std::fs::File::create(data.path().join(format!("part-{f}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let mut cluster = Cluster::start(2, calls.path());
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let table = || {
        Table::parquet(data.path())
            .unwrap()
            .rename([("body", "text")])
            .carry(["id"])
    };
    let p = nodes::pipeline()
        .with_shared_engine(engine)
        .with_cache(DiskCache::new(&cache));
    let (p2, source) = (p.clone(), table());
    let out = deadline(240, "a table map on the cluster", move || {
        p2.map_table(
            source,
            Inputs::new(),
            MapOptions::default().continue_on_error(),
        )
        .and_then(|m| m.collect())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let column = |name: &str| -> Vec<ArrayRef> {
        out.iter()
            .map(|b| b.column_by_name(name).unwrap().clone())
            .collect()
    };
    let ids: Vec<i64> = column("id")
        .iter()
        .flat_map(|a| {
            a.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(
        ids,
        (0..ROWS as i64).collect::<Vec<_>>(),
        "rows in table order"
    );
    let counts: Vec<Option<i64>> = column("word_count")
        .iter()
        .flat_map(|a| {
            let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r)))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, c) in counts.iter().enumerate() {
        let want = (i != 7).then(|| t[i].trim().to_lowercase().split_whitespace().count() as i64);
        assert_eq!(*c, want, "row {i}");
    }
    let errors: Vec<Option<String>> = column("error")
        .iter()
        .flat_map(|a| {
            let a = a.as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        errors[7]
            .as_deref()
            .is_some_and(|e| e.contains("row 7: column `body` is null")),
        "{:?}",
        errors[7]
    );
    assert_eq!(errors.iter().filter(|e| e.is_some()).count(), 1);
    assert_eq!(
        calls_in(calls.path()),
        ROWS - 1,
        "computed on the executors"
    );

    // The same table with SeqEngine in this process: all hits.
    let computed = Arc::new(Computed::default());
    nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(&cache))
        .with_callback(computed.clone())
        .map_table(
            table(),
            Inputs::new(),
            MapOptions::default().continue_on_error(),
        )
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(computed.0.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&cache);
}

/// The segment files under `dir`, recursively.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with("seg-") && name.ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_cache_in_s3_is_shared_by_executors_with_separate_mirrors() {
    let server = hypernodes_testkit::S3Server::start(&["cache"]).unwrap();
    let (env, options) = (server.env(), server.options());
    let (env, options) = (borrowed(&env), borrowed(&options));
    let store = "s3://cache/cluster";
    // This process is a machine of its own too: a new mirror each time.
    let machine = |mirror: &Path| DiskCache::object_store_at(store, mirror, &options).unwrap();
    let calls = tempfile::tempdir().unwrap();
    let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
    let mut cluster = Cluster::start_opts(&[demo, demo], calls.path(), &[], &env, 2);
    let t = texts(0, 2000);
    let want = word_counts(
        &nodes::pipeline()
            .with_engine(SeqEngine)
            .map(Inputs::new().with("text", t.clone()), ["text"])
            .unwrap(),
    );

    // Half computed here with SeqEngine, into the store.
    let laptop = tempfile::tempdir().unwrap();
    let computed = Arc::new(Computed::default());
    nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(machine(laptop.path()))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", t[..1000].to_vec()), ["text"])
        .unwrap();
    assert_eq!(computed.0.swap(0, Ordering::Relaxed), 1000);

    // The cluster computes only the other half, both executors taking part.
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let client = tempfile::tempdir().unwrap();
    let on_cluster = nodes::pipeline()
        .with_shared_engine(engine.clone())
        .with_cache(machine(client.path()));
    let (p, all) = (on_cluster.clone(), t.clone());
    let r = deadline(240, "the map on the cluster", move || {
        p.map(Inputs::new().with("text", all), ["text"])
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(word_counts(&r), want);
    assert!(r.cache_errors().is_empty(), "{:?}", r.cache_errors());
    assert_eq!(calls_in(calls.path()), 1000, "{}", cluster.logs());
    // The executors read and wrote through mirrors of their own.
    let mirrored: usize = (0..2)
        .map(|i| segment_files(&cluster.mirror(i)).len())
        .sum();
    assert!(
        mirrored > 0,
        "no executor mirrored anything\n{}",
        cluster.logs()
    );

    // New items on the cluster are hits for SeqEngine on a machine whose
    // mirror is empty: they reached the store when the map ended.
    let fresh = texts(5000, 500);
    let (p, items) = (on_cluster.clone(), fresh.clone());
    deadline(120, "new items on the cluster", move || {
        p.map(Inputs::new().with("text", items), ["text"])
    })
    .unwrap();
    assert_eq!(calls_in(calls.path()), 1500);
    let elsewhere = tempfile::tempdir().unwrap();
    let r = nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(machine(elsewhere.path()))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", fresh), ["text"])
        .unwrap();
    assert_eq!(r.len(), 500);
    assert_eq!(computed.0.load(Ordering::Relaxed), 0);
    let in_store = server.objects("cache", "cluster");
    assert!(
        in_store.iter().any(|p| p.starts_with("cluster/clean/")),
        "{in_store:?}"
    );
    cluster.check_alive();
}

/// Every job progress report a map's callback received.
#[derive(Default)]
struct Progressed(std::sync::Mutex<Vec<hypernodes_core::JobProgress>>);

impl Callback for Progressed {
    fn on_job_progress(&self, _: &CallbackContext<'_>, progress: hypernodes_core::JobProgress) {
        self.0.lock().unwrap().push(progress);
    }
}

#[test]
fn a_running_map_reports_its_jobs_progress_from_the_scheduler() {
    const N: usize = 4000;
    let calls = tempfile::tempdir().unwrap();
    let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
    // Slow items (2 ms each) on two executors with one task slot each: the
    // map's tasks finish one after another over several seconds.
    let mut cluster = Cluster::start_opts(
        &[demo, demo],
        calls.path(),
        &[],
        &[("HYPERNODES_DEMO_SLEEP_MS", "2")],
        1,
    );
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let seen = Arc::new(Progressed::default());
    let p = nodes::pipeline()
        .with_shared_engine(engine.clone())
        .with_callback(seen.clone());
    let t = texts(0, N);
    let r = deadline(240, "a slow map on the cluster", move || {
        p.map(Inputs::new().with("text", t), ["text"])
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(r.len(), N);
    let seen = seen.0.lock().unwrap().clone();
    eprintln!("job progress reports: {seen:?}");
    assert!(seen.len() >= 2, "{seen:?}");
    let total = seen[0].tasks_total;
    // 4,000 items are staged in files of at least 1,024 rows, a task each.
    assert!(total >= 4, "{seen:?}");
    for pair in seen.windows(2) {
        assert!(
            pair[1].tasks_done >= pair[0].tasks_done,
            "tasks done went back: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|s| s.tasks_done <= s.tasks_total && s.stages_total >= 1)
    );
    assert!(
        seen.iter()
            .any(|s| 0 < s.tasks_done && s.tasks_done < s.tasks_total),
        "no report while tasks were part done: {seen:?}"
    );
    cluster.check_alive();
}

#[test]
fn an_unreachable_cache_store_costs_no_results_and_its_rows_follow_later() {
    // The store's port, with nothing listening yet.
    let port = free_port();
    let env = hypernodes_testkit::env_for(&format!("http://127.0.0.1:{port}"));
    let options = hypernodes_testkit::options(&env);
    let (env, options) = (borrowed(&env), borrowed(&options));
    let store = "s3://cache/outage";
    let machine = |mirror: &Path| DiskCache::object_store_at(store, mirror, &options).unwrap();
    let calls = tempfile::tempdir().unwrap();
    let demo = env!("CARGO_BIN_EXE_hypernodes-demo-executor");
    let mut cluster = Cluster::start_opts(&[demo, demo], calls.path(), &[], &env, 2);
    let engine = Arc::new(BallistaEngine::remote(cluster.url()));
    wait_for_executors(&engine, &mut cluster, 2);
    let client = tempfile::tempdir().unwrap();
    let on_cluster = nodes::pipeline()
        .with_shared_engine(engine.clone())
        .with_cache(machine(client.path()));
    let t = texts(0, 2000);
    let want = word_counts(
        &nodes::pipeline()
            .with_engine(SeqEngine)
            .map(Inputs::new().with("text", t.clone()), ["text"])
            .unwrap(),
    );

    // The store is down: the map still gives every result.
    let (p, all) = (on_cluster.clone(), t.clone());
    let r = deadline(240, "a map while the store is down", move || {
        p.map(Inputs::new().with("text", all), ["text"])
    });
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(word_counts(&r), want);
    assert_eq!(calls_in(calls.path()), 2000, "{}", cluster.logs());

    // The store comes up. The same map computes nothing (the rows waited
    // in the executors' mirrors), and its flushes push them.
    let server = hypernodes_testkit::S3Server::start_on(port, &["cache"]).unwrap();
    let (p, all) = (on_cluster.clone(), t.clone());
    let r = deadline(240, "the map again once the store is up", move || {
        p.map(Inputs::new().with("text", all), ["text"])
    })
    .unwrap();
    assert_eq!(word_counts(&r), want);
    assert_eq!(calls_in(calls.path()), 2000, "{}", cluster.logs());
    let elsewhere = tempfile::tempdir().unwrap();
    let computed = Arc::new(Computed::default());
    let r = nodes::pipeline()
        .with_engine(SeqEngine)
        .with_cache(machine(elsewhere.path()))
        .with_callback(computed.clone())
        .map(Inputs::new().with("text", t), ["text"])
        .unwrap();
    assert_eq!(word_counts(&r), want);
    assert_eq!(
        computed.0.load(Ordering::Relaxed),
        0,
        "every row reached the store: {:?}",
        server.objects("cache", "outage")
    );
    cluster.check_alive();
}
