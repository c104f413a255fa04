//! Caches across processes: a map killed with SIGKILL loses at most its
//! unflushed batch (the rerun computes only the items whose results never
//! reached the cache, with the same results as a clean run), and two
//! processes mapping overlapping items into one cache at once lose and
//! corrupt nothing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hypernodes::{DiskCache, Inputs, MapOptions, Node, Pipeline, outs};

const ITEMS: i64 = 60;
const BATCH: usize = 5;
const CHILD_DIR: &str = "HYPERNODES_CRASH_CHILD_DIR";

fn slow() -> Node {
    Node::builder("slow")
        .input::<i64>("x")
        .output::<i64>("y")
        .version("1")
        .func(|args| {
            std::thread::sleep(Duration::from_millis(20));
            Ok(outs![args.get::<i64>(0)? * 10])
        })
}

fn pipeline(dir: &Path) -> Pipeline {
    Pipeline::new([slow()])
        .unwrap()
        .with_cache(DiskCache::new(dir))
}

fn options() -> MapOptions {
    MapOptions::over(["x"]).flush_every(BATCH)
}

fn segments(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-"))
            {
                n += 1;
            }
        }
    }
    n
}

const CHILD_RANGE: &str = "HYPERNODES_CHILD_RANGE";

/// Not a test on its own: the child process of the tests below, which run
/// it with `HYPERNODES_CRASH_CHILD_DIR` (and optionally
/// `HYPERNODES_CHILD_RANGE=start..end`) set. Without them, it returns.
#[test]
fn crash_child_helper() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (start, end) = std::env::var(CHILD_RANGE)
        .ok()
        .and_then(|r| {
            let (a, b) = r.split_once("..")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((0, ITEMS));
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    if let Some(engine) = mode.strip_prefix("paced-") {
        paced_child(Path::new(&dir), engine);
        return;
    }
    if mode.starts_with("time") {
        // Default batch size: only flushing by time stores anything early.
        let xs: Vec<i64> = (0..LONG_ITEMS).collect();
        let mut p = pipeline(Path::new(&dir));
        if mode == "time-parallel" {
            p = p.with_engine(hypernodes::ParallelEngine::with_threads(2).unwrap());
        }
        p.map(Inputs::new().with("x", xs), ["x"]).unwrap();
        return;
    }
    let xs: Vec<i64> = (start..end).collect();
    pipeline(Path::new(&dir))
        .map(Inputs::new().with("x", xs), options())
        .unwrap();
}

const CHILD_MODE: &str = "HYPERNODES_CHILD_MODE";
const LONG_ITEMS: i64 = 300;

fn cached_rows(dir: &Path) -> usize {
    DiskCache::new(dir)
        .stats()
        .unwrap()
        .iter()
        .map(|s| s.rows)
        .sum()
}

#[test]
fn results_reach_the_cache_by_time_not_only_by_count() {
    flushes_by_time("time");
}

#[test]
fn parallel_results_reach_the_cache_by_time_too() {
    flushes_by_time("time-parallel");
}

fn flushes_by_time(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(dir.path(), None, Some(mode));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cached_rows(dir.path()) == 0 {
        assert!(Instant::now() < deadline, "nothing was flushed in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before any batch was flushed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let flushed = cached_rows(dir.path());
    assert!(
        flushed < LONG_ITEMS as usize,
        "killed before the end (batch sizes stay far below the count bound)"
    );

    assert_eq!(
        resume(dir.path(), LONG_ITEMS, MapOptions::over(["x"])),
        LONG_ITEMS as usize - flushed
    );
}

/// Maps `0..items` again over the cache in `dir`, checks the values, and
/// returns how many times `slow` ran.
fn resume(dir: &Path, items: i64, options: MapOptions) -> usize {
    let rec = common::Recorder::new();
    let xs: Vec<i64> = (0..items).collect();
    let r = pipeline(dir)
        .with_callback(rec.clone())
        .map(Inputs::new().with("x", xs), options)
        .unwrap();
    assert_eq!(
        r.values::<i64>("y").unwrap(),
        (0..items).map(|x| x * 10).collect::<Vec<_>>()
    );
    rec.take()
        .iter()
        .filter(|e| e.ends_with("node_end slow"))
        .count()
}

/// Starts `crash_child_helper` in a child process on the cache in `dir`,
/// optionally over a range of items or in a mode.
fn spawn_child(dir: &Path, range: Option<&str>, mode: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "crash_child_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir);
    if let Some(r) = range {
        cmd.env(CHILD_RANGE, r);
    }
    if let Some(m) = mode {
        cmd.env(CHILD_MODE, m);
    }
    cmd.spawn().unwrap()
}

#[test]
fn two_processes_share_one_cache_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = spawn_child(dir.path(), Some("0..40"), None);
    let mut b = spawn_child(dir.path(), Some("20..60"), None);
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(
        resume(dir.path(), ITEMS, options()),
        0,
        "every item is in the cache, readable"
    );
}

#[test]
fn killed_map_resumes_with_only_unflushed_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(dir.path(), None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while segments(dir.path()) < 3 {
        assert!(
            Instant::now() < deadline,
            "the child flushed nothing in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let flushed = segments(dir.path()) * BATCH;
    assert!(flushed < ITEMS as usize, "killed before the end");

    assert_eq!(
        resume(dir.path(), ITEMS, options()),
        ITEMS as usize - flushed
    );
}

/// Items of the paced map: far more than the child computes before it is
/// killed.
const PACED_ITEMS: i64 = 200_000;

/// Each item takes about a millisecond and says so on stdout once done.
fn paced() -> Node {
    Node::builder("paced")
        .input::<i64>("x")
        .output::<i64>("y")
        .version("1")
        .func(|args| {
            std::thread::sleep(Duration::from_millis(1));
            let x = *args.get::<i64>(0)?;
            println!("computed {x}");
            Ok(outs![x + 1])
        })
}

/// The child of `a_crash_loses_about_a_second_of_work_on_every_engine`.
fn paced_child(dir: &Path, engine: &str) {
    let engine = common::engines()
        .into_iter()
        .find(|(name, _)| *name == engine)
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no engine `{engine}`"));
    let xs: Vec<i64> = (0..PACED_ITEMS).collect();
    Pipeline::new([paced()])
        .unwrap()
        .with_shared_engine(engine)
        .with_cache(DiskCache::new(dir))
        .map(Inputs::new().with("x", xs), ["x"])
        .unwrap();
}

/// Kills (SIGKILL) a child mapping millisecond items on each engine after a
/// few seconds, and checks that what it computed but never stored is at
/// most about two seconds of its work: results are stored as chunks (row
/// engines) or pieces of batches (DataFusion) end, and written at least
/// every `FLUSH_INTERVAL`.
#[test]
fn a_crash_loses_about_a_second_of_work_on_every_engine() {
    const RUN: Duration = Duration::from_secs(6);
    for (name, _) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "crash_child_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_MODE, format!("paced-{name}"))
        .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("computed "))
                .count()
        });
        let started = Instant::now();
        std::thread::sleep(RUN);
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: the child ended before it was killed"
        );
        child.kill().unwrap(); // SIGKILL
        let elapsed = started.elapsed();
        child.wait().unwrap();
        let computed = reader.join().unwrap();
        let stored = cached_rows(dir.path());
        assert!(
            computed > 0 && computed < PACED_ITEMS as usize,
            "{name}: {computed}"
        );
        assert!(stored <= computed, "{name}: {stored} stored of {computed}");
        let per_second = computed as f64 / elapsed.as_secs_f64();
        let lost_seconds = (computed - stored) as f64 / per_second;
        eprintln!(
            "{name}: killed after {elapsed:?}: {computed} computed, {stored} stored, {:.2} s of work lost",
            lost_seconds
        );
        assert!(
            lost_seconds <= 2.0,
            "{name}: {} of {computed} computed items were lost ({lost_seconds:.2} s of work)",
            computed - stored
        );
    }
}
