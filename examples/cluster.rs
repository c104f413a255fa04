//! A Ballista cluster on this machine: a scheduler and two executors on
//! 127.0.0.1, each a process of this very program (started again with
//! `--role scheduler` or `--role executor`: a user's own binaries are a
//! one-line `main` each, see the README's "Run on a cluster"). It maps the
//! W1 pipeline (`shared/bench/workload.md`) over `--items N` items (default
//! 100,000) with a fresh `DiskCache`, cold then warm, checks every result
//! against plain Rust, and prints
//!
//! ```text
//! cluster: executors=2 items=<N> cold_items_per_s=<x> warm_items_per_s=<y>
//! datafusion: items=<N> cold_items_per_s=<x> warm_items_per_s=<y>
//! cluster-latency: items=1000 jobs=5 median_ms=<z>
//! ```
//!
//! The second line is `DataFusionEngine` on the same items in this process
//! (the same work, no cluster), the third the median time of five maps of
//! 1,000 new items each: what a small job costs on the cluster. Then it
//! stops every process it started.
//!
//! With `--store s3` the cache lives in an S3-compatible server this
//! program starts on 127.0.0.1 (`hypernodes-testkit`), each executor and
//! this process mirroring it in a directory of its own, and the lines end
//! with `store=s3`.
//!
//! ```sh
//! cargo run --release --all-features --example cluster -- --items 1000000
//! cargo run --release --all-features --example cluster -- --items 1000000 --store s3
//! ```

#[path = "shared/workload.rs"]
mod workload;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypernodes::engines::{BallistaEngine, DataFusionEngine};
use hypernodes::node::NodeRegistry;
use hypernodes::{DiskCache, Engine, Inputs, Pipeline};

fn pipeline() -> Pipeline {
    Pipeline::new([workload::clean::node(), workload::count::node()]).expect("W1 is valid")
}

/// The processes this program started, stopped when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where the caches live: directories, or an S3-compatible server (with
/// the settings its clients need).
enum Store {
    Directory(std::path::PathBuf),
    S3 {
        server: hypernodes_testkit::S3Server,
        mirrors: std::path::PathBuf,
    },
}

impl Store {
    /// A new handle on the cache named `name` (opened afresh, as another
    /// process would).
    fn cache(&self, name: &str) -> Result<DiskCache, Box<dyn std::error::Error>> {
        match self {
            Store::Directory(dir) => Ok(DiskCache::new(dir.join(name))),
            Store::S3 { server, mirrors } => {
                let options = server.options();
                Ok(DiskCache::object_store_at(
                    &format!("s3://cache/{name}"),
                    mirrors.join(format!("client-{name}")),
                    &hypernodes_testkit::borrowed(&options),
                )?)
            }
        }
    }

    /// What an executor process needs to reach the store.
    fn env(&self, executor: usize) -> Vec<(String, String)> {
        match self {
            Store::Directory(_) => Vec::new(),
            Store::S3 { server, mirrors } => {
                let mut env: Vec<(String, String)> = server
                    .env()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                let mirror = mirrors.join(format!("executor-{executor}"));
                env.push((
                    "HYPERNODES_CACHE_MIRROR".into(),
                    mirror.to_string_lossy().into_owned(),
                ));
                env
            }
        }
    }

    fn suffix(&self) -> &'static str {
        match self {
            Store::Directory(_) => "",
            Store::S3 { .. } => " store=s3",
        }
    }
}

/// One map of `items` on `engine` with `cache`: items per second, after
/// checking every result.
fn timed(
    engine: Arc<dyn Engine>,
    cache: DiskCache,
    items: &[String],
) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let r = pipeline()
        .with_shared_engine(engine)
        .with_cache(cache)
        .map(Inputs::new().with("text", items.to_vec()), ["text"])?;
    let secs = start.elapsed().as_secs_f64();
    if r.values::<i64>("word_count")? != workload::expected_counts(items) {
        return Err("wrong results".into());
    }
    Ok(items.len() as f64 / secs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A process of the cluster: the rest of the arguments are its options.
    if args.first().map(String::as_str) == Some("--role") {
        let registry = NodeRegistry::new().with_pipeline(&pipeline());
        let rest = args.iter().skip(2).cloned();
        match args.get(1).map(String::as_str) {
            Some("scheduler") => hypernodes::engines::run_scheduler(
                registry,
                &hypernodes::engines::SchedulerOptions::from_args(rest)?,
            )?,
            Some("executor") => hypernodes::engines::run_executor(
                registry,
                &hypernodes::engines::ExecutorOptions::from_args(rest)?,
            )?,
            other => return Err(format!("unknown role {other:?}").into()),
        }
        return Ok(());
    }
    let mut n = 100_000usize;
    let mut s3 = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--items" => n = it.next().ok_or("--items needs a number")?.parse()?,
            "--store" => match it.next().map(String::as_str) {
                Some("s3") => s3 = true,
                Some("dir") => s3 = false,
                _ => return Err("--store takes `dir` or `s3`".into()),
            },
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }

    let me = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let store = if s3 {
        Store::S3 {
            server: hypernodes_testkit::S3Server::start(&["cache"])?,
            mirrors: dir.path().join("mirrors"),
        }
    } else {
        Store::Directory(dir.path().to_path_buf())
    };
    let port = free_port()?;
    let quiet = || Stdio::null();
    let mut processes = Processes(Vec::new());
    processes.0.push(
        Command::new(&me)
            .args(["--role", "scheduler", "--port", &port.to_string()])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()?,
    );
    for i in 0..2 {
        let work = dir.path().join(format!("work-{i}"));
        std::fs::create_dir_all(&work)?;
        processes.0.push(
            Command::new(&me)
                .args(["--role", "executor", "--scheduler"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--port", &free_port()?.to_string()])
                .args(["--grpc-port", &free_port()?.to_string()])
                .arg("--work-dir")
                .arg(&work)
                .args(["--concurrency", "1", "--id", &format!("executor-{i}")])
                .envs(store.env(i))
                .stdout(quiet())
                .stderr(quiet())
                .spawn()?,
        );
    }
    let engine = Arc::new(
        BallistaEngine::remote(format!("df://127.0.0.1:{port}"))
            .with_staging(dir.path().join("staging")),
    );
    // Both executors registered, and told which nodes they link.
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine.executors().map_or(0, |e| e.len()) < 2 {
        if Instant::now() > deadline {
            return Err("the executors did not register within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let items = workload::items(n);
    let suffix = store.suffix();
    let cold = timed(engine.clone(), store.cache("cache")?, &items)?;
    let warm = timed(engine.clone(), store.cache("cache")?, &items)?;
    println!(
        "cluster: executors=2 items={n} cold_items_per_s={cold:.0} warm_items_per_s={warm:.0}{suffix}"
    );

    let df: Arc<dyn Engine> = Arc::new(DataFusionEngine::new());
    let cold = timed(df.clone(), store.cache("cache-datafusion")?, &items)?;
    let warm = timed(df, store.cache("cache-datafusion")?, &items)?;
    println!("datafusion: items={n} cold_items_per_s={cold:.0} warm_items_per_s={warm:.0}{suffix}");

    let mut ms: Vec<f64> = Vec::new();
    for job in 0..5 {
        let small: Vec<String> = (0..1000)
            .map(|i| workload::item(n + job * 1000 + i))
            .collect();
        let start = Instant::now();
        timed(engine.clone(), store.cache("cache")?, &small)?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "cluster-latency: items=1000 jobs=5 median_ms={:.1}{suffix}",
        ms[2]
    );
    Ok(())
}
