//! Real servers for the HyperNodes tests, started on 127.0.0.1 by the test
//! that needs them: [`S3Server`], an S3-compatible object store (the
//! `s3s-fs` crate's service over a temporary directory, served over HTTP).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "hypernodes-test";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "hypernodes-test-secret";
/// The region clients sign for.
pub const REGION: &str = "us-east-1";

/// An S3-compatible server on 127.0.0.1 (a free port), its buckets the
/// directories of a temporary directory; stopped and removed on drop.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why a server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start the S3 test server: {}", self.0)
    }
}

impl std::error::Error for StartError {}

impl S3Server {
    /// Starts a server with the buckets `buckets` (empty) and the
    /// credentials [`ACCESS_KEY`] / [`SECRET_KEY`].
    pub fn start(buckets: &[&str]) -> Result<S3Server, StartError> {
        S3Server::start_on(0, buckets)
    }

    /// [`S3Server::start`] on a given port of 127.0.0.1 (0: any free one).
    pub fn start_on(port: u16, buckets: &[&str]) -> Result<S3Server, StartError> {
        let fail = |e: &dyn std::fmt::Display| StartError(e.to_string());
        let root = tempfile::tempdir().map_err(|e| fail(&e))?;
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).map_err(|e| fail(&e))?;
        }
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| StartError(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| fail(&e))?;
        listener.set_nonblocking(true).map_err(|e| fail(&e))?;
        let addr = listener.local_addr().map_err(|e| fail(&e))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail(&e))?;
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                            _ = &mut stopped => break,
                        };
                        let conn = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                runtime.shutdown_background();
            })
            .map_err(|e| fail(&e))?;
        Ok(S3Server {
            addr,
            root,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding the buckets (bucket `b`'s objects are files
    /// under `root/b`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The files stored under `bucket/prefix`, relative to the bucket,
    /// sorted.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<PathBuf> {
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        let mut stack = vec![base.join(prefix)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&base) {
                    out.push(rel.to_path_buf());
                }
            }
        }
        out.sort();
        out
    }

    /// The settings of [`S3Server::env`] as option keys (`aws_endpoint`, ...).
    pub fn options(&self) -> Vec<(String, String)> {
        options(&self.env())
    }

    /// The `AWS_*` environment variables a client (this process or a child
    /// process) needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint())
    }
}

/// The `AWS_*` environment variables of a client of a test server at
/// `endpoint` (one running, or one to be started there).
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// Environment settings as `object_store` option keys (lower case).
pub fn options(env: &[(&'static str, String)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Owned pairs as borrowed ones, as `DiskCache::object_store_at` and
/// `Command::envs` take them.
pub fn borrowed<K: AsRef<str>>(pairs: &[(K, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
