//! The runtime for `async fn` nodes: a shared multi-threaded tokio runtime,
//! so async nodes can use tokio's timers and I/O whatever thread calls them.

use std::sync::OnceLock;

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
    match runtime()?.spawn(fut).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => Err(NodeError::from_panic(e.into_panic())),
        Err(e) => Err(NodeError::Panic(e.to_string())),
    }
}
