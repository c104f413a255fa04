//! Progress of a `map` as it runs: one bar per pipeline and per node
//! (nested pipelines indented under their parent) on a terminal, plain
//! milestone lines everywhere else (feature `progress`).
//!
//! [`Progress`] is a [`Callback`]: events only bump counters (a few atomic
//! additions per event, no formatting, no drawing). On a terminal a ticker
//! thread redraws the bars ten times a second from those counters, so the
//! cost of a bar does not grow with the number of items. Off a terminal
//! (CI, logs, notebooks, `TERM` unset) nothing is drawn: the outermost
//! mapped pipeline writes one line as it passes 10, 25, 50, 75 and 100% of
//! its items, and each pipeline writes a summary line when the run ends.
//!
//! What the counters mean: a pipeline's *items* are the items of its maps
//! (for a nested pipeline that is not mapped itself, its runs, one per
//! item of the map around it); a node's *cached*, *computed* and *failed*
//! count its results per item; a pipeline's cached and computed totals add
//! up its own nodes' results.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Error;
use crate::observe::callback::{Callback, CallbackContext, ItemCounts, NodeCounts};
use crate::observe::thousands;

/// How often the terminal bars are redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The milestones (in percent) at which plain output writes a line.
const MILESTONES: [u64; 5] = [10, 25, 50, 75, 100];

/// A [`Callback`] that shows how far a `map` has come. Attach it with
/// [`Pipeline::with_progress`](crate::Pipeline::with_progress) or
/// [`Pipeline::with_callback`](crate::Pipeline::with_callback).
///
/// [`Progress::new`] draws bars when stderr is a terminal and writes
/// plain lines to stderr otherwise; [`Progress::plain`] writes plain lines
/// to any writer.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use hypernodes_core::{Inputs, Pipeline, node};
/// use hypernodes_core::observe::Progress;
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// #[derive(Clone, Default)]
/// struct Lines(Arc<Mutex<Vec<u8>>>);
/// impl std::io::Write for Lines {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().write(b)
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
///
/// let lines = Lines::default();
/// Pipeline::new([double::node()]).unwrap()
///     .with_name("doubling")
///     .with_callback(Arc::new(Progress::plain(lines.clone())))
///     .map(Inputs::new().with("x", (0..20i64).collect::<Vec<_>>()), ["x"])
///     .unwrap();
/// let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
/// // 20 quick items: their counts arrive at once, so one milestone.
/// assert!(text.starts_with("[progress] doubling: 100% (20/20 items)"));
/// assert!(text.contains("[progress] doubling: done, 20/20 items"));
/// ```
pub struct Progress {
    inner: Arc<Inner>,
}

/// What a [`Progress`] shares with its ticker thread.
struct Inner {
    out: Output,
    board: RwLock<Vec<Arc<Tally>>>,
    /// Depth of the outermost pipeline seen while idle, and how many runs
    /// of it are under way.
    roots: Mutex<Roots>,
}

#[derive(Default)]
struct Roots {
    depth: usize,
    active: usize,
    ticker: Option<Ticker>,
}

enum Output {
    Bars(MultiProgress),
    Plain(Mutex<Box<dyn Write + Send>>),
}

/// Counters of one pipeline (its path) and of its nodes.
struct Tally {
    path: Vec<String>,
    map_total: AtomicU64,
    map_done: AtomicU64,
    run_total: AtomicU64,
    run_done: AtomicU64,
    failed: AtomicU64,
    nodes: RwLock<Vec<Arc<NodeTally>>>,
    bar: Mutex<Option<ProgressBar>>,
    started: Instant,
}

struct NodeTally {
    name: String,
    computed: AtomicU64,
    cached: AtomicU64,
    failed: AtomicU64,
    bar: Mutex<Option<ProgressBar>>,
}

/// What one pipeline's counters read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    done: u64,
    total: u64,
    mapped: bool,
    cached: u64,
    computed: u64,
    failed: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Bars on stderr when it is a terminal (and `TERM` is set), plain
    /// milestone lines on stderr otherwise.
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        if terminal {
            Self::with_output(Output::Bars(bars().clone()))
        } else {
            Self::plain(std::io::stderr())
        }
    }

    /// Plain milestone and summary lines (no escape codes) written to
    /// `out`.
    pub fn plain(out: impl Write + Send + 'static) -> Self {
        Self::with_output(Output::Plain(Mutex::new(Box::new(out))))
    }

    fn with_output(out: Output) -> Self {
        Self {
            inner: Arc::new(Inner {
                out,
                board: RwLock::new(Vec::new()),
                roots: Mutex::new(Roots::default()),
            }),
        }
    }
}

impl Inner {
    /// The counters of the pipeline at `path`, created on first use.
    fn tally(&self, path: &[String]) -> Arc<Tally> {
        find_or_add(
            &self.board,
            |t| t.path == path,
            || Tally {
                path: path.to_vec(),
                map_total: AtomicU64::new(0),
                map_done: AtomicU64::new(0),
                run_total: AtomicU64::new(0),
                run_done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                nodes: RwLock::new(Vec::new()),
                bar: Mutex::new(None),
                started: Instant::now(),
            },
        )
    }

    /// The counters of node `name` of the pipeline at `path`, created on
    /// first use.
    fn node(&self, path: &[String], name: &str) -> Arc<NodeTally> {
        find_or_add(
            &self.tally(path).nodes,
            |n| n.name == name,
            || NodeTally {
                name: name.to_string(),
                computed: AtomicU64::new(0),
                cached: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                bar: Mutex::new(None),
            },
        )
    }

    /// Writes one plain line (plain output only).
    fn line(&self, text: &str) {
        if let Output::Plain(out) = &self.out {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            // Progress output is best effort: a closed stderr must not
            // fail the map.
            let _ = writeln!(out, "[progress] {text}");
            let _ = out.flush();
        }
    }

    /// Redraws every bar from the counters (terminal output only).
    fn draw(&self, finished: bool) {
        let Output::Bars(multi) = &self.out else {
            return;
        };
        let board: Vec<Arc<Tally>> = self.board.read().unwrap_or_else(|e| e.into_inner()).clone();
        let root_depth = self.roots.lock().unwrap_or_else(|e| e.into_inner()).depth;
        // Depth first: each pipeline, then its nodes, then the pipelines
        // nested in it, in the order they were first seen.
        let mut order: Vec<(Arc<Tally>, Option<Arc<NodeTally>>)> = Vec::new();
        fn visit(
            board: &[Arc<Tally>],
            t: &Arc<Tally>,
            order: &mut Vec<(Arc<Tally>, Option<Arc<NodeTally>>)>,
        ) {
            order.push((t.clone(), None));
            for n in t.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
                order.push((t.clone(), Some(n.clone())));
            }
            for child in board
                .iter()
                .filter(|c| c.path.len() == t.path.len() + 1 && c.path.starts_with(&t.path))
            {
                visit(board, child, order);
            }
        }
        for root in board.iter().filter(|t| t.path.len() == root_depth + 1) {
            visit(&board, root, &mut order);
        }
        if !board.iter().any(|t| t.snapshot().mapped) {
            return;
        }
        let mut previous: Option<ProgressBar> = None;
        for (tally, node) in order {
            let snap = tally.snapshot();
            let indent = "  ".repeat(tally.path.len().saturating_sub(root_depth + 1));
            let slot = match &node {
                Some(n) => &n.bar,
                None => &tally.bar,
            };
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let bar = slot.get_or_insert_with(|| {
                let bar = ProgressBar::new(snap.total);
                let bar = match &previous {
                    Some(p) => multi.insert_after(p, bar),
                    None => multi.insert(0, bar),
                };
                let (prefix, template) = match &node {
                    Some(n) => (
                        format!("{indent}  {}", n.name),
                        "{prefix:28!} [{bar:24}] {human_pos}/{human_len} {msg}",
                    ),
                    None => (
                        format!("{indent}{}", tally.path.last().map_or("", |s| s)),
                        "{prefix:28!} [{bar:24}] {human_pos}/{human_len} {msg} · ETA {eta}",
                    ),
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(prefix);
                bar
            });
            bar.set_length(snap.total);
            match &node {
                Some(n) => {
                    let (cached, computed, failed) = n.counts();
                    bar.set_position(cached + computed + failed);
                    bar.set_message(counts_text(cached, computed, failed));
                }
                None => {
                    bar.set_position(snap.done);
                    let all_cached = snap.total > 0 && snap.computed == 0 && snap.cached > 0;
                    if all_cached && snap.done == snap.total {
                        bar.set_message(format!("all {} from the cache", thousands(snap.total)));
                    } else {
                        let unit = if snap.mapped { "items" } else { "runs" };
                        bar.set_message(format!(
                            "{} · {}",
                            counts_text(snap.cached, snap.computed, snap.failed),
                            rate(snap.done, tally.started.elapsed(), unit)
                        ));
                    }
                }
            }
            if finished {
                bar.tick();
            }
            previous = Some(bar.clone());
        }
    }

    /// The run of the outermost pipeline ended: the last redraw, or the
    /// summary lines.
    fn finish(&self) {
        let board: Vec<Arc<Tally>> = self.board.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !board.iter().any(|t| t.snapshot().mapped) {
            return;
        }
        match &self.out {
            Output::Bars(_) => {
                self.draw(true);
                for t in &board {
                    if let Some(bar) = t.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        bar.abandon();
                    }
                    for n in t.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        if let Some(bar) = n.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
                            bar.abandon();
                        }
                    }
                }
            }
            Output::Plain(_) => {
                for t in &board {
                    self.line(&t.summary());
                }
            }
        }
    }
}

impl Tally {
    fn snapshot(&self) -> Snapshot {
        let map_total = self.map_total.load(Ordering::Relaxed);
        let mapped = map_total > 0;
        let (done, total) = if mapped {
            (self.map_done.load(Ordering::Relaxed), map_total)
        } else {
            (
                self.run_done.load(Ordering::Relaxed),
                self.run_total.load(Ordering::Relaxed),
            )
        };
        let (mut cached, mut computed) = (0, 0);
        for n in self.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let (c, p, _) = n.counts();
            cached += c;
            computed += p;
        }
        Snapshot {
            done,
            total,
            mapped,
            cached,
            computed,
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn name(&self) -> &str {
        self.path.last().map_or("", |s| s)
    }

    /// One milestone line: how far the pipeline's map has come.
    fn milestone(&self, percent: u64) -> String {
        let s = self.snapshot();
        format!(
            "{}: {percent}% ({}/{} items) · {} · {}",
            self.name(),
            thousands(s.done),
            thousands(s.total),
            counts_text(s.cached, s.computed, s.failed),
            rate(s.done, self.started.elapsed(), "items"),
        )
    }

    /// The summary line written when the run ends.
    fn summary(&self) -> String {
        let s = self.snapshot();
        let unit = if s.mapped { "items" } else { "runs" };
        let elapsed = self.started.elapsed();
        let mut text = format!(
            "{}: done, {}/{} {unit} in {:.2} s · {} · {} failed",
            self.name(),
            thousands(s.done),
            thousands(s.total),
            elapsed.as_secs_f64(),
            rate(s.done, elapsed, unit),
            thousands(s.failed),
        );
        for n in self.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let (cached, computed, failed) = n.counts();
            let _ = write!(
                text,
                " · {}: {}",
                n.name,
                counts_text(cached, computed, failed)
            );
        }
        text
    }
}

impl NodeTally {
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.cached.load(Ordering::Relaxed),
            self.computed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn counts_text(cached: u64, computed: u64, failed: u64) -> String {
    let mut text = format!(
        "{} cached / {} computed",
        thousands(cached),
        thousands(computed)
    );
    if failed > 0 {
        let _ = write!(text, " / {} failed", thousands(failed));
    }
    text
}

fn rate(done: u64, elapsed: Duration, unit: &str) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return format!("- {unit}/s");
    }
    format!("{} {unit}/s", thousands((done as f64 / secs) as u64))
}

/// The process's one set of bars: every [`Progress`] on a terminal draws
/// into it, so two maps at once do not draw over each other.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A writer for logs shown while bars are drawn: each line it is given is
/// written with the bars lifted out of the way, so logs and bars do not
/// tear each other. Give it to your logger, for example
/// `tracing_subscriber::fmt().with_writer(ProgressWriter::stderr)`.
pub struct ProgressWriter<W: Write = std::io::Stderr> {
    inner: W,
    line: Vec<u8>,
}

impl ProgressWriter {
    /// Lines to stderr, around the bars.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr())
    }
}

impl<W: Write> ProgressWriter<W> {
    /// Lines to `inner`, around the bars.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            line: Vec::new(),
        }
    }

    fn write_lines(&mut self, upto: usize) -> std::io::Result<()> {
        let lines: Vec<u8> = self.line.drain(..upto).collect();
        let inner = &mut self.inner;
        bars().suspend(|| inner.write_all(&lines).and_then(|()| inner.flush()))
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        if let Some(end) = self.line.iter().rposition(|&b| b == b'\n') {
            self.write_lines(end + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let all = self.line.len();
        self.write_lines(all)
    }
}

impl<W: Write> Drop for ProgressWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The entry of `list` that `found` picks, or a new one from `make`: looked
/// for under the read lock first (the common case), then again under the
/// write lock before adding, so two threads never add the same entry.
fn find_or_add<T>(
    list: &RwLock<Vec<Arc<T>>>,
    found: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    if let Some(t) = list
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|t| found(t))
    {
        return t.clone();
    }
    let mut list = list.write().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = list.iter().find(|t| found(t)) {
        return t.clone();
    }
    let t = Arc::new(make());
    list.push(t.clone());
    t
}

/// The thread that redraws terminal bars while a run is under way.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Ticker {
    fn start(progress: std::sync::Weak<Inner>) -> Option<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("hypernodes-progress".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    let (guard, _) = wake
                        .wait_timeout(stopped, TICK)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        break;
                    }
                    let Some(progress) = progress.upgrade() else {
                        break;
                    };
                    drop(stopped);
                    progress.draw(false);
                    stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                }
            })
            .ok()?;
        Some(Self { stop, handle })
    }

    fn stop(self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let _ = self.handle.join();
    }
}

/// Adds `add` to `counter` and returns the highest milestone (percent of
/// `total`) the addition crossed, if any.
fn crossed(counter: &AtomicU64, add: u64, total: u64) -> Option<u64> {
    let before = counter.fetch_add(add, Ordering::Relaxed);
    let after = before + add;
    if total == 0 {
        return None;
    }
    MILESTONES.into_iter().rev().find(|&m| {
        let at = (total * m).div_ceil(100).max(1);
        before < at && after >= at
    })
}

impl Callback for Progress {
    /// Progress only counts: it takes counts per batch of rows, not one
    /// event per item.
    fn item_events(&self) -> bool {
        false
    }

    fn on_pipeline_start(&self, ctx: &CallbackContext<'_>) {
        let p = &self.inner;
        let mut roots = p.roots.lock().unwrap_or_else(|e| e.into_inner());
        if roots.active == 0 {
            roots.depth = ctx.depth();
        }
        if ctx.items.is_empty() && ctx.depth() == roots.depth {
            if roots.active == 0 {
                // A new run: forget the last one's counters.
                p.board.write().unwrap_or_else(|e| e.into_inner()).clear();
                if matches!(p.out, Output::Bars(_)) {
                    roots.ticker = Ticker::start(Arc::downgrade(p));
                }
            }
            roots.active += 1;
        }
    }

    fn on_pipeline_end(&self, ctx: &CallbackContext<'_>, _elapsed: Duration) {
        let p = &self.inner;
        let last = {
            let mut roots = p.roots.lock().unwrap_or_else(|e| e.into_inner());
            if roots.active > 0 && ctx.items.is_empty() && ctx.depth() == roots.depth {
                roots.active -= 1;
                (roots.active == 0).then(|| roots.ticker.take())
            } else {
                None
            }
        };
        if let Some(ticker) = last {
            if let Some(t) = ticker {
                t.stop();
            }
            p.finish();
        }
    }

    fn on_node_batch(&self, ctx: &CallbackContext<'_>, node: &str, counts: NodeCounts) {
        let n = self.inner.node(ctx.path, node);
        n.computed
            .fetch_add(counts.computed as u64, Ordering::Relaxed);
        n.cached.fetch_add(counts.cached as u64, Ordering::Relaxed);
    }

    fn on_map_start(&self, ctx: &CallbackContext<'_>, items: usize) {
        let t = self.inner.tally(ctx.path);
        t.map_total.fetch_add(items as u64, Ordering::Relaxed);
    }

    fn on_items_batch(&self, ctx: &CallbackContext<'_>, counts: ItemCounts) {
        if counts.ended == 0 {
            return;
        }
        let p = &self.inner;
        let tally = p.tally(ctx.path);
        let total = tally.map_total.load(Ordering::Relaxed);
        // Milestones are written for the outermost map only: a nested
        // map's total grows as the outer items reach it.
        if let Some(m) = crossed(&tally.map_done, counts.ended as u64, total)
            && ctx.items.is_empty()
            && p.is_root_path(ctx)
        {
            p.line(&tally.milestone(m));
        }
    }

    fn on_runs_batch(&self, ctx: &CallbackContext<'_>, counts: ItemCounts) {
        let tally = self.inner.tally(ctx.path);
        tally
            .run_total
            .fetch_add(counts.started as u64, Ordering::Relaxed);
        tally
            .run_done
            .fetch_add(counts.ended as u64, Ordering::Relaxed);
    }

    fn on_error(&self, ctx: &CallbackContext<'_>, error: &Error) {
        let tally = self.inner.tally(ctx.path);
        tally.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(node) = error.node() {
            let n = self.inner.node(ctx.path, node);
            n.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Inner {
    fn is_root_path(&self, ctx: &CallbackContext<'_>) -> bool {
        let roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        ctx.depth() == roots.depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_milestone_is_crossed_once() {
        let counter = AtomicU64::new(0);
        let hits: Vec<(u64, u64)> = (1..=20)
            .filter_map(|i| crossed(&counter, 1, 20).map(|m| (i, m)))
            .collect();
        assert_eq!(hits, [(2, 10), (5, 25), (10, 50), (15, 75), (20, 100)]);
        let counter = AtomicU64::new(0);
        let hits: Vec<u64> = (1..=3).filter_map(|_| crossed(&counter, 1, 3)).collect();
        // 10% and 25% both fall on the first item: the higher one is told.
        assert_eq!(hits, [25, 50, 100]);
        let counter = AtomicU64::new(0);
        // A batch that passes several milestones tells the highest.
        assert_eq!(crossed(&counter, 0, 100), None);
        assert_eq!(crossed(&counter, 60, 100), Some(50));
        assert_eq!(crossed(&counter, 40, 100), Some(100));
    }

    #[test]
    fn the_progress_writer_passes_whole_lines_through() {
        let mut out = Vec::new();
        {
            let mut w = ProgressWriter::new(&mut out);
            w.write_all(b"first li").unwrap();
            w.write_all(b"ne\nsecond").unwrap();
            w.write_all(b" line\nrest").unwrap();
        }
        assert_eq!(out, b"first line\nsecond line\nrest");
    }
}
