//! Job progress while a map runs on a remote cluster: each map's job gets
//! a name of its own (`ballista.job.name`), and a thread asks the
//! scheduler's handshake port how far that job is, a few times a second,
//! reporting each change to the map's callbacks
//! ([`Callback::on_job_progress`](hypernodes_core::Callback::on_job_progress)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use hypernodes_core::MapJob;

/// How often the scheduler is asked.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(200);

/// A job name no other map of any process uses.
pub(crate) fn job_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "hypernodes-map-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls one job's progress until dropped.
pub(crate) struct Poller {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    /// Starts polling the job named `name` at the handshake port
    /// `address`, for `job`'s callbacks (nothing when it has none).
    pub(crate) fn start(address: &str, name: &str, job: &Arc<MapJob>) -> Poller {
        if !(job.observed() || job.counted()) {
            return Poller {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let (address, name, job) = (address.to_string(), name.to_string(), job.clone());
        let thread = std::thread::Builder::new()
            .name("hypernodes-job-progress".into())
            .spawn(move || {
                let mut last = None;
                loop {
                    match crate::handshake::progress(&address, &name) {
                        Ok(Some(now)) if last != Some(now) => {
                            job.report_job_progress(now);
                            last = Some(now);
                        }
                        Ok(_) => {}
                        Err(e) => log::debug!("job progress of {name}: {e}"),
                    }
                    match stopped.recv_timeout(POLL_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            })
            .ok();
        Poller {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
