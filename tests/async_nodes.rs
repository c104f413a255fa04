//! Async nodes at the sizes users run: every engine, 1 to 10,000 items,
//! futures that really wait (tokio timers, and a socket to a server on
//! 127.0.0.1 that answers after a delay), errors, retries and panics inside
//! some of them, a bounded number of calls in flight, rate limits, and `map`
//! called from inside a caller's tokio runtime. Every map runs under a
//! deadline that fails the test instead of hanging CI.

mod common;

#[path = "../examples/shared/workload.rs"]
mod workload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypernodes::{
    DiskCache, Engine, ErrorPolicy, Inputs, MapOptions, MapResult, Node, NodeError, Pipeline,
    SeqEngine, node, outs,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use common::deadline;

/// Generous for a slow CI machine: a fixed map finishes in a few seconds.
const DEADLINE_S: u64 = 120;

/// Every engine of the matrix, and `DataFusionEngine` as users create it
/// (default batch size and partitions), which hung at 128 items.
fn engines() -> Vec<(&'static str, Arc<dyn Engine>)> {
    #[allow(unused_mut)]
    let mut engines = common::engines();
    #[cfg(feature = "datafusion")]
    engines.push((
        "datafusion-default",
        Arc::new(hypernodes::engines::DataFusionEngine::new().with_small_map(0)),
    ));
    engines
}

/// Waits 5 ms on a tokio timer, then answers.
#[node(output = "reply", concurrency = 64)]
async fn fetch(text: String) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    text.to_uppercase()
}

#[test]
fn timer_nodes_finish_at_every_size_on_every_engine() {
    for (name, engine) in engines() {
        for n in [1usize, 2, 127, 128, 129, 400, 10_000] {
            let texts = workload::items(n);
            let expected: Vec<String> = texts.iter().map(|t| t.to_uppercase()).collect();
            let p = Pipeline::new([fetch::node()])
                .unwrap()
                .with_shared_engine(engine.clone());
            let r = deadline(DEADLINE_S, &format!("{name}: {n} items"), move || {
                p.map(Inputs::new().with("text", texts), ["text"])
            })
            .unwrap_or_else(|e| panic!("{name}, {n} items: {e}"));
            assert_eq!(
                r.values::<String>("reply").unwrap(),
                expected,
                "{name}, {n}"
            );
        }
    }
}

/// A server on 127.0.0.1 that answers each line `x` after a delay: `2x`,
/// `BUSY` on the first request for an `x` with `x % 5 == 1`, and `ERR x`
/// always for `x % 7 == 3`. It counts requests per `x` and keeps their
/// arrival times; it stops when dropped.
struct LocalServer {
    addr: String,
    requests: Arc<Mutex<HashMap<i64, usize>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalServer {
    fn start(delay: Duration) -> Self {
        let requests: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (req, arr) = (requests.clone(), arrivals.clone());
        let thread = std::thread::spawn(move || {
            let rt = two_workers();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx
                    .send(listener.local_addr().unwrap().to_string())
                    .unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let (req, arr) = (req.clone(), arr.clone());
                            tokio::spawn(async move {
                                let (read, mut write) = socket.into_split();
                                let mut line = String::new();
                                if BufReader::new(read).read_line(&mut line).await.is_err() {
                                    return;
                                }
                                arr.lock().unwrap().push(Instant::now());
                                let x: i64 = line.trim().parse().unwrap_or(-1);
                                let seen = {
                                    let mut req = req.lock().unwrap();
                                    let n = req.entry(x).or_default();
                                    *n += 1;
                                    *n
                                };
                                tokio::time::sleep(delay).await;
                                let reply = if x % 7 == 3 {
                                    format!("ERR {x}\n")
                                } else if x % 5 == 1 && seen == 1 {
                                    "BUSY\n".to_string()
                                } else {
                                    format!("{}\n", x * 2)
                                };
                                let _ = write.write_all(reply.as_bytes()).await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the local server started");
        LocalServer {
            addr,
            requests,
            arrivals,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn requests(&self, x: i64) -> usize {
        self.requests.lock().unwrap().get(&x).copied().unwrap_or(0)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `x` to the server and parses its answer; panics on `x % 11 == 5`
/// (after waiting, so inside the running future).
#[node(output = "doubled", retries = 2)]
async fn ask(x: i64, server: String) -> Result<i64, String> {
    if x % 11 == 5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        panic!("cannot ask about {x}");
    }
    let mut stream = tokio::net::TcpStream::connect(&server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(format!("{x}\n").as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    match line.trim() {
        "BUSY" => Err("busy".into()),
        s if s.starts_with("ERR") => Err(s.to_string()),
        s => s.parse().map_err(|e| format!("bad answer `{s}`: {e}")),
    }
}

fn ask_map(p: &Pipeline, server: &str, n: i64) -> Result<MapResult, hypernodes::Error> {
    p.map(
        Inputs::new()
            .with("x", (0..n).collect::<Vec<i64>>())
            .with("server", server.to_string()),
        MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
    )
}

#[test]
fn socket_nodes_keep_errors_retries_and_panics_per_item_on_every_engine() {
    const N: i64 = 2_000;
    let mut reference: Option<Vec<String>> = None;
    for (name, engine) in engines() {
        let server = LocalServer::start(Duration::from_millis(2));
        let recorder = common::Recorder::new();
        let p = Pipeline::new([ask::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_callback(recorder.clone());
        let addr = server.addr.clone();
        let r = deadline(DEADLINE_S, name, move || ask_map(&p, &addr, N))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let doubled = common::optional_i64s(&r, "doubled");
        let mut failed = Vec::new();
        for x in 0..N {
            let i = x as usize;
            if x % 11 == 5 || x % 7 == 3 {
                failed.push(i);
                assert_eq!(doubled[i], None, "{name}: item {x}");
            } else {
                assert_eq!(doubled[i], Some(x * 2), "{name}: item {x}");
            }
            let expected_requests = if x % 11 == 5 {
                0
            } else if x % 7 == 3 {
                3
            } else if x % 5 == 1 {
                2
            } else {
                1
            };
            assert_eq!(server.requests(x), expected_requests, "{name}: item {x}");
        }
        let failures: Vec<usize> = r.failures().iter().map(|f| f.index).collect();
        assert_eq!(failures, failed, "{name}: the failed items, in order");
        for f in r.failures() {
            assert_eq!(f.node(), "ask", "{name}");
            let message = f.error.to_string();
            let x = f.index as i64;
            assert!(
                message.contains(&format!("on item {x}")),
                "{name}: {message}"
            );
            if x % 11 == 5 {
                assert!(
                    message.contains(&format!("cannot ask about {x}")),
                    "{message}"
                );
                assert!(message.contains("panicked"), "{message}");
            } else {
                assert!(message.contains(&format!("ERR {x}")), "{message}");
            }
        }
        // The same events as every other engine (in another order).
        let mut events = recorder.take();
        events.sort();
        let retries = events.iter().filter(|e| e.contains("node_retry")).count();
        let expected_retries = (0..N)
            .map(|x| match x {
                x if x % 11 == 5 || x % 7 == 3 => 2,
                x if x % 5 == 1 => 1,
                _ => 0,
            })
            .sum::<usize>();
        assert_eq!(retries, expected_retries, "{name}: retry events");
        match &reference {
            None => reference = Some(events),
            Some(expected) => assert!(
                events == *expected,
                "{name}: the events differ from seq's ({} against {})",
                events.len(),
                expected.len()
            ),
        }
    }
}

/// How many calls are in flight now, and the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

/// An async node that waits `ms` and records in `gauge` how many of its
/// calls overlap.
fn gauged(gauge: Arc<Gauge>, ms: u64) -> Node {
    Node::builder("wait")
        .input::<i64>("x")
        .output::<i64>("y")
        .version("1")
        .async_func(move |args| {
            let x = *args.get::<i64>(0)?;
            let gauge = gauge.clone();
            Ok(Box::pin(async move {
                gauge.calls.fetch_add(1, Ordering::SeqCst);
                let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                gauge.now.fetch_sub(1, Ordering::SeqCst);
                Ok(outs![x + 1])
            }))
        })
}

#[test]
fn calls_in_flight_never_exceed_the_node_bound_on_every_engine() {
    for (name, engine) in engines() {
        for bound in [None, Some(1), Some(8)] {
            let gauge = Arc::new(Gauge::default());
            let mut node = gauged(gauge.clone(), 3);
            if let Some(b) = bound {
                node = node.with_concurrency(b);
            }
            let limit = bound.unwrap_or(Node::DEFAULT_CONCURRENCY);
            assert_eq!(node.concurrency(), limit);
            let n = if bound == Some(1) { 60 } else { 400 };
            let p = Pipeline::new([node])
                .unwrap()
                .with_shared_engine(engine.clone());
            let r = deadline(DEADLINE_S, name, move || {
                p.map(Inputs::new().with("x", (0..n).collect::<Vec<i64>>()), ["x"])
            })
            .unwrap();
            assert_eq!(r.values::<i64>("y").unwrap(), (1..=n).collect::<Vec<i64>>());
            let most = gauge.most.load(Ordering::SeqCst);
            assert!(most <= limit, "{name}: {most} calls at once, bound {limit}");
            if limit > 1 {
                assert!(
                    most > 1,
                    "{name}: the calls ran one at a time (bound {limit})"
                );
            }
            assert_eq!(gauge.calls.load(Ordering::SeqCst), n as usize);
        }
    }
}

#[test]
fn concurrent_calls_give_what_one_at_a_time_gives_and_share_the_cache() {
    const N: i64 = 300;
    let one_at_a_time = {
        let server = LocalServer::start(Duration::from_millis(1));
        let recorder = common::Recorder::new();
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new([ask::node().with_concurrency(1)])
            .unwrap()
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(recorder.clone());
        let addr = server.addr.clone();
        let r = deadline(DEADLINE_S, "one at a time", move || ask_map(&p, &addr, N)).unwrap();
        let mut events = recorder.take();
        events.sort();
        (common::optional_i64s(&r, "doubled"), events)
    };
    for (name, engine) in engines() {
        let server = LocalServer::start(Duration::from_millis(1));
        let dir = tempfile::tempdir().unwrap();
        let recorder = common::Recorder::new();
        let p = Pipeline::new([ask::node().with_concurrency(16)])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(recorder.clone());
        let addr = server.addr.clone();
        let r = deadline(DEADLINE_S, name, move || ask_map(&p, &addr, N)).unwrap();
        let mut events = recorder.take();
        events.sort();
        assert_eq!(
            common::optional_i64s(&r, "doubled"),
            one_at_a_time.0,
            "{name}"
        );
        assert!(
            events == one_at_a_time.1,
            "{name}: events differ from one at a time"
        );
        // A re-run on another engine finds every success cached: only the
        // failed items (never cached) ask the server again.
        let asked_before: usize = (0..N).map(|x| server.requests(x)).sum();
        let p = Pipeline::new([ask::node()])
            .unwrap()
            .with_cache(DiskCache::new(dir.path()));
        let addr = server.addr.clone();
        let warm = deadline(DEADLINE_S, name, move || ask_map(&p, &addr, N)).unwrap();
        assert_eq!(common::optional_i64s(&warm, "doubled"), one_at_a_time.0);
        let asked_after: usize = (0..N).map(|x| server.requests(x)).sum();
        let failing_requests = (0..N).filter(|x| x % 7 == 3 && x % 11 != 5).count() * 3;
        assert_eq!(asked_after - asked_before, failing_requests, "{name}");
    }
}

/// Maps `fetch` over `n` W1 items; checks and returns the result.
fn fetch_all(p: &Pipeline, n: usize) -> Result<(), String> {
    let texts = workload::items(n);
    let r = p
        .map(Inputs::new().with("text", texts.clone()), ["text"])
        .map_err(|e| e.to_string())?;
    let expected: Vec<String> = texts.iter().map(|t| t.to_uppercase()).collect();
    if r.values::<String>("reply").map_err(|e| e.to_string())? != expected {
        return Err("wrong replies".into());
    }
    Ok(())
}

/// A caller's multi-threaded runtime of two workers.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn maps_called_from_inside_a_tokio_runtime_finish() {
    for (name, engine) in engines() {
        let pipeline = || {
            Pipeline::new([fetch::node()])
                .unwrap()
                .with_shared_engine(engine.clone())
        };
        // Directly on the thread of a current-thread runtime.
        let p = pipeline();
        deadline(DEADLINE_S, name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move { fetch_all(&p, 300) })
        })
        .unwrap_or_else(|e| panic!("{name}, current thread: {e}"));
        // Directly inside a task of a multi-threaded runtime.
        let p = pipeline();
        deadline(DEADLINE_S, name, move || {
            two_workers()
                .block_on(async move { tokio::spawn(async move { fetch_all(&p, 300) }).await })
                .unwrap()
        })
        .unwrap_or_else(|e| panic!("{name}, runtime task: {e}"));
        // From `spawn_blocking`.
        let p = pipeline();
        deadline(DEADLINE_S, name, move || {
            two_workers().block_on(async move {
                tokio::task::spawn_blocking(move || fetch_all(&p, 300))
                    .await
                    .unwrap()
            })
        })
        .unwrap_or_else(|e| panic!("{name}, spawn_blocking: {e}"));
    }
}

/// Sends `x` to the server at most `max_per_second` times a second.
#[node(output = "doubled", max_per_second = 40)]
async fn ask_politely(x: i64, server: String) -> Result<i64, String> {
    let mut stream = tokio::net::TcpStream::connect(&server)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{x}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    line.trim().parse().map_err(|e| format!("{line}: {e}"))
}

#[test]
fn a_rate_limited_node_never_exceeds_its_rate_at_the_server() {
    // Multiples of 35: never refused by the server.
    let xs: Vec<i64> = (0..30).map(|x| x * 35).collect();
    let rate = 40.0;
    assert_eq!(ask_politely::node().max_per_second(), Some(rate));
    for (name, engine) in engines() {
        let server = LocalServer::start(Duration::from_millis(1));
        let p = Pipeline::new([ask_politely::node()])
            .unwrap()
            .with_shared_engine(engine.clone());
        let (addr, inputs) = (server.addr.clone(), xs.clone());
        let r = deadline(DEADLINE_S, name, move || {
            p.map(Inputs::new().with("x", inputs).with("server", addr), ["x"])
        })
        .unwrap();
        assert_eq!(
            r.values::<i64>("doubled").unwrap(),
            xs.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        let mut arrivals = server.arrivals.lock().unwrap().clone();
        arrivals.sort();
        assert_eq!(arrivals.len(), xs.len());
        // Requests are released 25 ms apart: any half second holds at most
        // 21 of them (two more allowed for arrivals bunched by the network).
        let window = Duration::from_millis(500);
        for (i, start) in arrivals.iter().enumerate() {
            let within = arrivals[i..]
                .iter()
                .take_while(|t| t.duration_since(*start) < window)
                .count();
            assert!(within <= 23, "{name}: {within} requests within {window:?}");
        }
        let span = arrivals[arrivals.len() - 1].duration_since(arrivals[0]);
        assert!(
            span >= Duration::from_millis(29 * 25 - 50),
            "{name}: 30 requests in {span:?}"
        );
    }
}

/// An inner pipeline with an async node, mapped over each row's list.
#[test]
fn async_nodes_inside_nested_map_over_finish_on_every_engine() {
    for (name, engine) in engines() {
        let inner = Pipeline::new([fetch::node()]).unwrap().with_name("inner");
        let nested = inner
            .as_node()
            .input_mapping([("texts", "text")])
            .output_mapping([("reply", "replies")])
            .map_over(["texts"]);
        let rows: Vec<Vec<String>> = (0..300).map(|r| workload::items(r % 6)).collect();
        let expected: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|t| t.to_uppercase()).collect())
            .collect();
        let p = Pipeline::new([nested])
            .unwrap()
            .with_shared_engine(engine.clone());
        let r = deadline(DEADLINE_S, name, move || {
            p.map(Inputs::new().with("texts", rows), ["texts"])
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            r.values::<Vec<String>>("replies").unwrap(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn one_at_a_time_is_still_available_and_runs_in_item_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let node = Node::builder("log")
        .input::<i64>("x")
        .output::<i64>("y")
        .version("1")
        .concurrency(1)
        .async_func(move |args| {
            let x = *args.get::<i64>(0)?;
            let seen = seen.clone();
            Ok(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis((x % 3) as u64)).await;
                seen.lock().unwrap().push(x);
                Ok(outs![x])
            }))
        });
    let p = Pipeline::new([node]).unwrap().with_engine(SeqEngine);
    let r = deadline(DEADLINE_S, "seq", move || {
        p.map(
            Inputs::new().with("x", (0..50).collect::<Vec<i64>>()),
            ["x"],
        )
    })
    .unwrap();
    assert_eq!(r.values::<i64>("y").unwrap(), (0..50).collect::<Vec<_>>());
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<i64>>());
}

#[test]
fn invalid_limits_are_errors_naming_the_node() {
    let waiting = || {
        Node::builder("waiting")
            .input::<i64>("x")
            .output::<i64>("y")
            .version("1")
    };
    type Reply = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<hypernodes::Outs, NodeError>> + Send>,
    >;
    fn body(args: hypernodes::Args<'_>) -> Result<Reply, NodeError> {
        let x = *args.get::<i64>(0)?;
        Ok(Box::pin(async move { Ok(outs![x]) }))
    }
    for (node, reason) in [
        (waiting().concurrency(0).async_func(body), "concurrency"),
        (
            waiting().max_per_second(0.0).async_func(body),
            "max_per_second",
        ),
        (
            waiting().max_per_second(f64::NAN).async_func(body),
            "max_per_second",
        ),
    ] {
        let err = Pipeline::new([node]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("waiting"), "{message}");
        assert!(message.contains(reason), "{message}");
    }
    // Limits do not change what is cached: the signature is the same.
    assert_eq!(
        fetch::node().code_hash(),
        fetch::node()
            .with_concurrency(3)
            .with_max_per_second(9.5)
            .code_hash()
    );
}
