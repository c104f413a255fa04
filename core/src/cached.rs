//! Cached execution: a batch of items runs node by node. For each node the
//! items' signatures are computed from the value hashes of their inputs, looked
//! up in the cache at once, only the misses are called, and their results are
//! stored at once. Every value's hash is kept beside it, so a node whose code
//! changed but whose outputs did not leaves its dependents cached.
//!
//! A node is cached when all its outputs have an Arrow form and all its
//! inputs have a value hash (values without an Arrow form, such as
//! resources, have none yet); other nodes simply run.

use crate::cache::{Cache, CacheDecision, CacheKey, CacheOutcome};
use crate::error::Error;
use crate::exec::Exec;
use crate::node::NodeKind;
use crate::signature::{Signature, hash_values, node_signature};
use crate::value::{Value, ValueType};

/// One item of a batch: where it is, its slot table, the value hash of each
/// slot, and its failure, if any.
pub(crate) struct ItemState {
    pub path: Vec<usize>,
    pub slots: Vec<Option<Value>>,
    pub hashes: Vec<Option<Signature>>,
    pub error: Option<Error>,
}

impl ItemState {
    pub fn new(path: Vec<usize>, slots: Vec<Option<Value>>) -> Self {
        let hashes = vec![None; slots.len()];
        ItemState {
            path,
            slots,
            hashes,
            error: None,
        }
    }
}

/// Explains cache decisions for one node over a batch: to callbacks
/// ([`Callback::on_cache_decision`](crate::Callback::on_cache_decision)) and,
/// with `LOG_HYPERNODES_CACHE=1`, one line per node and item on stderr.
struct CacheLog {
    /// Whether anyone listens (log or callbacks); nothing is computed otherwise.
    on: bool,
    print: bool,
    why_miss: String,
    why_not_cached: &'static str,
}

impl CacheLog {
    fn new(cache: &dyn Cache, node: &crate::node::Node, callbacks: bool) -> Self {
        if node.cache_enabled && !node.outputs.iter().all(|p| p.ty.is_arrow()) {
            warn_not_storable_once(node);
        }
        let print = std::env::var("LOG_HYPERNODES_CACHE").is_ok_and(|v| v == "1");
        if !print && !callbacks {
            return CacheLog {
                on: false,
                print,
                why_miss: String::new(),
                why_not_cached: "",
            };
        }
        let versions = cache.versions(&node.name);
        let why_miss = match versions.last() {
            Some(last) if !versions.contains(&node.code_hash) => {
                let changed = cache
                    .version_parts(&node.name, last)
                    .map(|old| changed_parts(&old, &node.code_parts))
                    .filter(|c| !c.is_empty());
                match changed {
                    Some(c) => format!("code changed since the last cached version of this node: {}", c.join(", ")),
                    None => "code changed since the last cached version of this node".to_string(),
                }
            }
            _ => "no result for this signature: new input values, changed upstream values or a changed declared environment variable".to_string(),
        };
        let why_not_cached = if !node.cache_enabled {
            "the node has cache = false"
        } else if !node.outputs.iter().all(|p| p.ty.is_arrow()) {
            "an output has no Arrow form"
        } else {
            "an input is a resource without a cache key (implement ResourceKey or Serialize)"
        };
        CacheLog {
            on: true,
            print,
            why_miss,
            why_not_cached,
        }
    }

    fn report(
        &self,
        exec: &Exec<'_>,
        node: &str,
        item: &[usize],
        sig: Option<Signature>,
        hit: bool,
    ) {
        if !self.on {
            return;
        }
        let outcome = match sig {
            None => CacheOutcome::NotCached {
                reason: self.why_not_cached.to_string(),
            },
            Some(_) if hit => CacheOutcome::Hit,
            Some(_) => CacheOutcome::Miss {
                reason: self.why_miss.clone(),
            },
        };
        let decision = CacheDecision {
            node: node.to_string(),
            items: item.to_vec(),
            signature: sig,
            outcome,
        };
        exec.emit(item, |cb, ctx| cb.on_cache_decision(ctx, &decision));
        if self.print {
            eprintln!("{decision}");
        }
    }
}

/// Names of the parts whose hash differs between two versions (or that only
/// one has).
fn changed_parts(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| !old.iter().any(|(ok, ov)| ok == k && ov == v))
        .map(|(k, _)| k.clone())
        .collect();
    for (k, _) in old {
        if !new.iter().any(|(nk, _)| nk == k) {
            changed.push(format!("{k} (removed)"));
        }
    }
    changed
}

/// Says once per process and node that a node's results cannot be cached.
fn warn_not_storable_once(node: &crate::node::Node) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .map(|mut w| w.insert(node.name.clone()))
        .unwrap_or(false);
    if first {
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .filter(|p| !p.ty.is_arrow())
            .map(|p| format!("`{}` ({})", p.name, p.ty.name()))
            .collect();
        eprintln!(
            "hypernodes cache: node `{}` is not cached: output {} has no Arrow form",
            node.name,
            outputs.join(", ")
        );
    }
}

/// Hashes slot `slot` of the live items; values shared by every item (fixed
/// inputs) are hashed once.
fn hash_slot(batch: &mut [ItemState], slot: usize, ty: ValueType) -> Result<(), Error> {
    if !ty.is_arrow() {
        // Resources: hashed by their declared key, if they have one; a
        // resource shared by items (a fixed input) is keyed once.
        let mut last: Option<(Value, Option<Signature>)> = None;
        for item in batch.iter_mut().filter(|i| i.error.is_none()) {
            if let Some(Some(v)) = item.slots.get(slot) {
                let h = match &last {
                    Some((seen, h)) if seen.same(v) => *h,
                    _ => {
                        let h = ty.resource_hash(v);
                        last = Some((v.clone(), h));
                        h
                    }
                };
                item.hashes[slot] = h;
            }
        }
        return Ok(());
    }
    let live: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            batch[i].error.is_none() && batch[i].slots.get(slot).is_some_and(Option::is_some)
        })
        .collect();
    let Some(&first) = live.first() else {
        return Ok(());
    };
    let arrow = |source| Error::Arrow {
        column: String::new(),
        source,
    };
    let first_value = batch[first].slots[slot].clone().expect("live slot");
    if live.iter().all(|&i| {
        batch[i].slots[slot]
            .as_ref()
            .is_some_and(|v| v.same(&first_value))
    }) {
        let h = hash_values(&ty, &[&first_value]).map_err(arrow)?[0];
        for &i in &live {
            batch[i].hashes[slot] = Some(h);
        }
        return Ok(());
    }
    let values: Vec<Value> = live
        .iter()
        .map(|&i| batch[i].slots[slot].clone().expect("live slot"))
        .collect();
    let refs: Vec<&Value> = values.iter().collect();
    let hashes = hash_values(&ty, &refs).map_err(arrow)?;
    for (&i, h) in live.iter().zip(hashes) {
        batch[i].hashes[slot] = Some(h);
    }
    Ok(())
}

/// Runs every step of `exec`'s plan over `batch`. Failures of nodes are
/// recorded per item; with `stop_on_error` the batch stops after the step
/// in which the first failure happened. Errors of the cache itself are
/// returned.
pub(crate) fn run_batch(
    exec: &Exec<'_>,
    cache: &dyn Cache,
    batch: &mut [ItemState],
    stop_on_error: bool,
) -> Result<(), Error> {
    let plan = exec.plan();
    // Only values some node takes need a hash: final outputs do not.
    let consumed: std::collections::HashSet<usize> = plan
        .steps
        .iter()
        .flat_map(|s| s.args.iter().copied())
        .collect();
    for input in &plan.inputs {
        hash_slot(batch, input.slot, input.ty)?;
    }
    for step in &plan.steps {
        let node = exec.node(step);
        let live: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].error.is_none())
            .collect();
        match &node.kind {
            NodeKind::Func(f) => {
                let key = CacheKey {
                    node: node.name.clone(),
                    code: node.code_hash,
                    outputs: node
                        .outputs
                        .iter()
                        .map(|p| (p.inner.clone(), p.ty))
                        .collect(),
                    parts: node.code_parts.to_vec(),
                };
                let salt = node.salt();
                let cached = node.cache_enabled && key.storable();
                let sigs: Vec<Option<Signature>> = live
                    .iter()
                    .map(|&i| {
                        let item = &batch[i];
                        if !cached {
                            return None;
                        }
                        let inputs: Option<Vec<Signature>> =
                            step.args.iter().map(|&s| item.hashes[s]).collect();
                        inputs.map(|inputs| node_signature(&node.code_hash, &inputs, &salt))
                    })
                    .collect();
                let log = CacheLog::new(cache, node, exec.has_callbacks());
                let wanted: Vec<Signature> = sigs.iter().flatten().copied().collect();
                let mut found = cache
                    .lookup(&key, &wanted)
                    .map_err(|e| Error::Engine {
                        message: format!("cache lookup for node `{}`: {e}", node.name),
                    })?
                    .into_iter();
                let mut fresh = Vec::new();
                for (&i, sig) in live.iter().zip(&sigs) {
                    let hit = if sig.is_some() {
                        found.next().flatten()
                    } else {
                        None
                    };
                    let item = &mut batch[i];
                    log.report(exec, &node.name, &item.path, *sig, hit.is_some());
                    let outs: Vec<Value> = match hit {
                        Some(values) => {
                            exec.emit(&item.path, |cb, ctx| cb.on_node_cached(ctx, &node.name));
                            values
                        }
                        None => match exec.call_func(node, f, step, &item.slots, &item.path) {
                            Ok(outs) => {
                                let outs: Vec<Value> = outs.into_iter().collect();
                                if let Some(sig) = sig {
                                    fresh.push((*sig, outs.clone()));
                                }
                                outs
                            }
                            Err(e) => {
                                item.error = Some(e);
                                continue;
                            }
                        },
                    };
                    for (v, slot) in outs.into_iter().zip(&step.outs) {
                        if let Some(slot) = slot {
                            item.slots[*slot] = Some(v);
                        }
                    }
                }
                cache.store(&key, &fresh).map_err(|e| Error::Engine {
                    message: format!("cache store for node `{}`: {e}", node.name),
                })?;
            }
            NodeKind::Nested(inner) => {
                for &i in &live {
                    let item = &mut batch[i];
                    if let Err(e) = exec.call_nested(node, inner, step, &mut item.slots, &item.path)
                    {
                        item.error = Some(e);
                    }
                }
            }
        }
        for (port, slot) in node.outputs.iter().zip(&step.outs) {
            if let Some(slot) = slot.filter(|s| consumed.contains(s)) {
                hash_slot(batch, slot, port.ty)?;
            }
        }
        if stop_on_error && batch.iter().any(|i| i.error.is_some()) {
            break;
        }
    }
    Ok(())
}
