//! What the Ballista tests share.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// Runs `f` on a thread; fails the test if it takes longer than `secs`
/// (or names the panic that ended it early).
pub fn deadline<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no answer in {secs} s"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see above)"),
    }
}
