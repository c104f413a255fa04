//! The runtime for `async fn` nodes: a shared multi-threaded tokio runtime,
//! so async nodes can use tokio's timers and I/O whatever thread calls them,
//! and the limits every engine honours when it calls them: at most
//! [`Node::concurrency`](crate::Node::concurrency) calls of a node in flight
//! at once, and at most [`Node::max_per_second`](crate::Node::max_per_second)
//! calls started per second.
//!
//! Engines wait for node futures from their own threads (a caller's thread,
//! a rayon worker, a DataFusion worker, which may all be threads of some
//! tokio runtime). Every such wait goes through [`block_on`], which runs the
//! future outside tokio's cooperative budget: a tokio worker thread gives a
//! task 128 units of budget per poll, and every poll of a `JoinHandle`
//! spends one; a wait that blocks the worker inside that poll could spend
//! them all, and the next `JoinHandle` would then ask the worker's scheduler
//! to wake it later, which never happens while the worker is blocked. (This
//! hung `DataFusionEngine` maps of async nodes from 128 items on.)

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::error::NodeError;

fn runtime() -> Result<&'static tokio::runtime::Runtime, NodeError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("hypernodes-async")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| NodeError::user(format!("cannot start the async runtime: {e}")))
}

/// Runs a node's future on the shared runtime and waits for it without
/// blocking (many can be awaited at once from one thread); a panic inside
/// it becomes [`NodeError::Panic`].
pub(crate) async fn run<T: Send + 'static>(fut: BoxFuture<'static, T>) -> Result<T, NodeError> {
    let handle = runtime()?.spawn(fut);
    match tokio::task::unconstrained(handle).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => Err(NodeError::from_panic(e.into_panic())),
        Err(e) => Err(NodeError::Panic(e.to_string())),
    }
}

/// Blocks the calling thread until `fut` completes, outside tokio's
/// cooperative budget (see the module docs), so it may be called from any
/// thread, including a worker of a caller's tokio runtime.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    futures::executor::block_on(tokio::task::unconstrained(fut))
}

/// The limits on one node's async calls, shared by the node's clones (so by
/// every map, engine and thread that runs them).
pub(crate) struct AsyncLimits {
    /// The most calls in flight at once.
    concurrency: usize,
    permits: tokio::sync::Semaphore,
    rate: Option<RateLimit>,
}

impl std::fmt::Debug for AsyncLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncLimits")
            .field("concurrency", &self.concurrency)
            .field("max_per_second", &self.rate.as_ref().map(|r| r.per_second))
            .finish()
    }
}

/// A permission to have one call in flight; released when dropped.
pub(crate) struct Admission<'a> {
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl AsyncLimits {
    /// Limits of at most `concurrency` calls at once (at least one) and, if
    /// given, at most `per_second` calls started per second.
    pub fn new(concurrency: usize, per_second: Option<f64>) -> Self {
        let concurrency = concurrency.max(1);
        AsyncLimits {
            concurrency,
            permits: tokio::sync::Semaphore::new(concurrency),
            rate: per_second.map(RateLimit::new),
        }
    }

    /// The most calls in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The most calls started per second, if limited.
    pub fn per_second(&self) -> Option<f64> {
        self.rate.as_ref().map(|r| r.per_second)
    }

    /// Waits until a call may start: a free place among the calls in
    /// flight, then its turn under the rate limit. Hold the admission for
    /// the duration of the call.
    pub async fn admit(&self) -> Admission<'_> {
        // The semaphore is never closed, so acquiring only fails if it were.
        let permit = self.permits.acquire().await.ok();
        if let Some(rate) = &self.rate {
            rate.wait().await;
        }
        Admission { _permit: permit }
    }
}

/// Calls started at most `per_second` times a second: each call's start is
/// at least `1 / per_second` after the previous one's, measured when the
/// previous call was released (so a stalled process does not release a
/// burst of overdue calls at once afterwards).
struct RateLimit {
    per_second: f64,
    interval: Duration,
    /// When the last call was released.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimit {
    fn new(per_second: f64) -> Self {
        RateLimit {
            per_second,
            interval: Duration::from_secs_f64(1.0 / per_second),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits for the next free slot. The lock is held while waiting, so
    /// calls are released one after another.
    async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(at) = *last {
            let due = at + self.interval;
            let now = Instant::now();
            if due > now {
                sleep(due - now).await;
            }
        }
        *last = Some(Instant::now());
    }
}

/// Sleeps on the shared runtime's timer (the calling thread needs no tokio
/// context).
async fn sleep(d: Duration) {
    if let Ok(rt) = runtime() {
        let _ =
            tokio::task::unconstrained(rt.spawn(async move { tokio::time::sleep(d).await })).await;
    } else {
        // No runtime could start: wait without one (blocks this thread).
        std::thread::sleep(d);
    }
}
