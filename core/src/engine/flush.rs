//! Writing a map's results to its cache while it runs: background
//! writes (a bounded number at once), flushes by count and by time (a
//! ticker), and what a failing cache does to the map.

use std::time::Instant;

use crate::error::Error;
use crate::map::{MapOptions, MapResult};

use super::*;

/// A background cache write, running on the process's cache writers.
pub(crate) type Flusher = crate::cache::writers::Started;

/// How many background cache writes of one `map` may run at once. Two let
/// one write wait for the disk (fsync) while the next one encodes.
pub(crate) const WRITES_IN_FLIGHT: usize = 2;

impl MapJob {
    /// The flush ticker of a map with a cache: until `stop` is set, flushes
    /// what the cache holds unwritten once the last flush is
    /// [`MapOptions::FLUSH_INTERVAL`] old. A strict map's cache failure
    /// ends it with that error.
    pub(crate) fn flush_by_time(
        &self,
        stop: &(std::sync::Mutex<bool>, std::sync::Condvar),
    ) -> Result<(), Error> {
        let mut stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Checked before waiting: a map that ended before this thread
            // first waited must not cost a whole tick.
            if *stopped {
                return Ok(());
            }
            let (guard, _) = stop
                .1
                .wait_timeout(stopped, MapOptions::FLUSH_INTERVAL / 8)
                .unwrap_or_else(|e| e.into_inner());
            stopped = guard;
            if *stopped {
                return Ok(());
            }
            drop(stopped);
            self.flush_if_stale()?;
            stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Counts `stored` new results and flushes the cache when enough of them
    /// or enough time has accumulated (see [`MapOptions::flush_every`]).
    pub(crate) fn maybe_flush(&self, stored: usize) -> Result<(), Error> {
        let Some(cache) = &self.exec.cache else {
            return Ok(());
        };
        let mut state = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += stored;
        let due = state.1 >= self.flush_every
            || (state.1 > 0 && state.0.elapsed() >= MapOptions::FLUSH_INTERVAL);
        if !due {
            return Ok(());
        }
        self.start_flush(cache, &mut state)
    }

    /// Flushes when the last flush is [`MapOptions::FLUSH_INTERVAL`] old and
    /// the cache holds results not yet written (this map's, or those of the
    /// maps nested in it).
    pub(crate) fn flush_if_stale(&self) -> Result<(), Error> {
        let Some(cache) = &self.exec.cache else {
            return Ok(());
        };
        let mut state = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.elapsed() < MapOptions::FLUSH_INTERVAL
            || (state.1 == 0 && cache.unwritten_rows() == 0)
        {
            return Ok(());
        }
        self.start_flush(cache, &mut state)
    }

    /// Starts a background write of what the cache buffered (see
    /// `maybe_flush`); `state` is the job's unflushed count, locked.
    pub(crate) fn start_flush(
        &self,
        cache: &std::sync::Arc<dyn crate::cache::Cache>,
        state: &mut (Instant, usize),
    ) -> Result<(), Error> {
        // What is buffered now is written in the background while the
        // items keep running, at most WRITES_IN_FLIGHT writes at a time: a
        // flush first waits for the oldest write beyond that.
        let mut writers = self.flusher.lock().unwrap_or_else(|e| e.into_inner());
        while writers.len() >= WRITES_IN_FLIGHT {
            if let Some(done) = writers.pop_front()
                && let Err(e) = done.wait()
            {
                self.cache_failed(None, e)?;
            }
        }
        *state = (Instant::now(), 0);
        writers.push_back(crate::cache::writers::start(cache.clone().begin_flush()));
        Ok(())
    }

    /// Waits for the background writes still running. A failed write is a
    /// cache failure (see [`MapJob::cache_failed`]).
    pub(crate) fn wait_for_flush(&self) -> Result<(), Error> {
        let writers: Vec<Flusher> = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        // Every write is waited for, even after one failed.
        let mut first = Ok(());
        for writer in writers {
            if let Err(e) = writer.wait() {
                let reported = self.cache_failed(None, e);
                if first.is_ok() {
                    first = reported;
                }
            }
        }
        first
    }

    /// Reports a failure of the cache (for node `node`, when known): under
    /// [`MapOptions::strict_cache`] it is returned as the map's error;
    /// otherwise it is kept for [`MapResult::cache_errors`] (the first one
    /// also fires [`Callback::on_cache_error`](crate::Callback::on_cache_error)) and the map goes on without
    /// the cache for what failed.
    pub fn cache_failed(
        &self,
        node: Option<&str>,
        source: crate::cache::CacheError,
    ) -> Result<(), Error> {
        let error = Error::cache(node, source);
        if self.strict_cache {
            return Err(error);
        }
        let exec = &self.exec;
        let mut errors = self.cache_errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() && exec.has_callbacks() {
            exec.emit(&exec.items, |cb, ctx| cb.on_cache_error(ctx, &error));
        }
        if errors.len() < MapResult::MAX_CACHE_ERRORS {
            errors.push(error);
        }
        Ok(())
    }

    /// The cache failures kept so far, taken out.
    pub(crate) fn take_cache_errors(&self) -> Vec<Error> {
        std::mem::take(&mut *self.cache_errors.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
