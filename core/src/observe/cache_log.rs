//! `LOG_HYPERNODES_CACHE`: what the cache did, on stderr, for people asking
//! "why did this run again?". A [`Callback`] the entry points
//! (`Pipeline::run`, `Pipeline::map`) attach when the variable is set:
//!
//! - `LOG_HYPERNODES_CACHE=1` (or `summary`): one line per node at the end
//!   of each top-level `run` or `map`: hits, misses by reason, and items
//!   not cached (with why);
//! - `LOG_HYPERNODES_CACHE=items`: one line per node and item, as the
//!   decisions happen.
//!
//! It is built on the cache decisions every engine reports
//! ([`Callback::on_cache_decision`]), so it says what a callback would see.
//! It writes its lines to the sink it was made with: the entry points give
//! it stderr, which is what the variable asks for.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::{CacheDecision, CacheOutcome};
use crate::observe::callback::{Callback, CallbackContext};

/// How much the cache log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One line per node per top-level run or map.
    Summary,
    /// One line per node and item.
    Items,
}

impl Mode {
    /// The mode `LOG_HYPERNODES_CACHE` asks for, if it is set to one.
    pub fn from_env() -> Option<Mode> {
        match std::env::var("LOG_HYPERNODES_CACHE").ok()?.as_str() {
            "1" | "summary" => Some(Mode::Summary),
            "items" => Some(Mode::Items),
            _ => None,
        }
    }
}

/// What the cache did for one node over one run or map.
#[derive(Default)]
struct Tally {
    hits: usize,
    /// Misses, by reason.
    misses: BTreeMap<String, usize>,
    /// Items not cached, by reason.
    not_cached: BTreeMap<String, usize>,
}

/// Where the cache log's lines go.
type Sink = Box<dyn Write + Send>;

/// The cache log (see the module docs).
pub(crate) struct CacheLogger {
    mode: Mode,
    /// Per node (by its pipeline path and name, in first-seen order).
    tallies: Mutex<Vec<(String, Tally)>>,
    out: Mutex<Sink>,
}

impl CacheLogger {
    /// A cache log in `mode` writing its lines to `out`.
    pub fn new(mode: Mode, out: Sink) -> Self {
        CacheLogger {
            mode,
            tallies: Mutex::new(Vec::new()),
            out: Mutex::new(out),
        }
    }

    /// Writes `lines`, one per line. A sink that fails loses them: the log
    /// only explains, and the run goes on.
    fn write(&self, lines: &[String]) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// The summary lines so far, emptied.
    fn take_summary(&self) -> Vec<String> {
        let tallies = std::mem::take(&mut *self.tallies.lock().unwrap_or_else(|e| e.into_inner()));
        tallies
            .into_iter()
            .map(|(node, t)| {
                let mut line = format!("hypernodes cache: summary node={node} hits={}", t.hits);
                let misses: usize = t.misses.values().sum();
                line.push_str(&format!(" misses={misses}"));
                for (reason, n) in &t.misses {
                    line.push_str(&format!(" [{n}: {reason}]"));
                }
                let not_cached: usize = t.not_cached.values().sum();
                if not_cached > 0 {
                    line.push_str(&format!(" not_cached={not_cached}"));
                    for (reason, n) in &t.not_cached {
                        line.push_str(&format!(" [{n}: {reason}]"));
                    }
                }
                line
            })
            .collect()
    }

    fn write_summary(&self) {
        self.write(&self.take_summary());
    }
}

impl Callback for CacheLogger {
    fn on_cache_decision(&self, ctx: &CallbackContext<'_>, decision: &CacheDecision) {
        if self.mode == Mode::Items {
            self.write(&[decision.to_string()]);
            return;
        }
        let node = if ctx.path.len() > 1 {
            format!("{}/{}", ctx.path[1..].join("/"), decision.node)
        } else {
            decision.node.clone()
        };
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let at = match tallies.iter().position(|(n, _)| *n == node) {
            Some(at) => at,
            None => {
                tallies.push((node, Tally::default()));
                tallies.len() - 1
            }
        };
        let tally = &mut tallies[at].1;
        match &decision.outcome {
            CacheOutcome::Hit => tally.hits += 1,
            CacheOutcome::Miss { reason } => *tally.misses.entry(reason.clone()).or_default() += 1,
            CacheOutcome::NotCached { reason } => {
                *tally.not_cached.entry(reason.clone()).or_default() += 1
            }
        }
    }

    fn on_pipeline_end(&self, ctx: &CallbackContext<'_>, _elapsed: Duration) {
        // The end of the top-level run or map.
        if ctx.path.len() == 1 && ctx.items.is_empty() {
            self.write_summary();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Signature;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn decision(item: usize, outcome: CacheOutcome) -> CacheDecision {
        CacheDecision {
            node: "clean".into(),
            items: vec![item],
            signature: Some(Signature([item as u8; 32])),
            outcome,
        }
    }

    #[test]
    fn the_summary_counts_each_node_and_goes_to_the_sink_at_the_end() {
        let buffer = Buffer::default();
        let log = CacheLogger::new(Mode::Summary, Box::new(buffer.clone()));
        let path = vec!["text".to_string()];
        let ctx = CallbackContext {
            path: &path,
            items: &[0],
        };
        log.on_cache_decision(&ctx, &decision(0, CacheOutcome::Hit));
        let miss = CacheOutcome::Miss {
            reason: "new input values".into(),
        };
        log.on_cache_decision(&ctx, &decision(1, miss.clone()));
        log.on_cache_decision(&ctx, &decision(2, miss));
        assert!(
            buffer.0.lock().unwrap().is_empty(),
            "nothing before the end"
        );
        let end = CallbackContext {
            path: &path,
            items: &[],
        };
        log.on_pipeline_end(&end, Duration::ZERO);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "hypernodes cache: summary node=clean hits=1 misses=2 [2: new input values]\n"
        );
    }
}
