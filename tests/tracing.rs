//! `tracing` spans (feature `tracing`): a map's pipeline, map, node and
//! cache spans arrive at a subscriber with their fields and parents, on
//! every engine, worker threads included.

#![cfg(feature = "tracing")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use hypernodes::{DiskCache, Inputs, Pipeline, node};
use tracing::Subscriber;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the test saw it: its name, its fields, its parent's index.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
}

/// Every span seen, and where each span id is in that list.
type SeenAll = (Vec<Seen>, BTreeMap<u64, usize>);

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SeenAll>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent_id = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut all = self.0.lock().unwrap();
        let parent = parent_id.and_then(|p| all.1.get(&p).copied());
        let index = all.0.len();
        all.0.push(Seen {
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        all.1.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut all = self.0.lock().unwrap();
        if let Some(&i) = all.1.get(&id.into_u64()) {
            values.record(&mut Fields(&mut all.0[i].fields));
        }
    }
}

/// The process-wide subscriber (worker threads see the global one only).
fn spans() -> &'static Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS.get_or_init(|| {
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        spans
    })
}

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[test]
fn spans_of_maps_nodes_and_the_cache_reach_the_subscriber_with_their_parents() {
    let spans = spans();
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline_name = format!("traced_{name}");
        let p = Pipeline::new([clean::node(), count::node()])
            .unwrap()
            .with_name(&pipeline_name)
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()));
        let texts: Vec<String> = (0..300).map(|i| format!(" Text {i} ")).collect();
        spans.0.lock().unwrap().0.clear();
        p.map(Inputs::new().with("text", texts[..200].to_vec()), ["text"])
            .unwrap();
        p.map(Inputs::new().with("text", texts), ["text"]).unwrap();
        let seen = spans.0.lock().unwrap().0.clone();
        let ours = |s: &Seen| {
            // Each span's chain up to a `map` of this pipeline.
            let mut at = Some(s);
            while let Some(span) = at {
                if span.name == "map" {
                    return span.fields.get("pipeline") == Some(&pipeline_name);
                }
                at = span.parent.map(|p| &seen[p]);
            }
            false
        };
        let maps: Vec<&Seen> = seen.iter().filter(|s| s.name == "map" && ours(s)).collect();
        let items: Vec<&str> = maps.iter().map(|m| m.fields["items"].as_str()).collect();
        assert_eq!(items, ["200", "300"], "{name}");
        for m in &maps {
            let parent = &seen[m.parent.expect("a map has a parent")];
            assert_eq!(parent.name, "pipeline", "{name}");
            assert_eq!(parent.fields["pipeline"], pipeline_name, "{name}");
        }
        // Node spans, under their map whatever thread ran them: every
        // node's results are accounted for as hits or misses (columnar)
        // or one span per item (row engines).
        let nodes: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.name == "node" && ours(s))
            .collect();
        assert!(!nodes.is_empty(), "{name}");
        for node in ["clean", "count"] {
            let of: Vec<&&Seen> = nodes.iter().filter(|s| s.fields["node"] == node).collect();
            let batched = of.iter().all(|s| s.fields.contains_key("rows"));
            if batched {
                let sum = |f: &str| -> usize {
                    of.iter()
                        .map(|s| s.fields[f].parse::<usize>().unwrap())
                        .sum()
                };
                assert_eq!(sum("rows"), 500, "{name} {node}");
                assert_eq!(sum("misses"), 300, "{name} {node}");
                assert_eq!(sum("hits"), 200, "{name} {node}");
            } else {
                assert_eq!(of.len(), 300, "{name} {node}: one span per computed item");
            }
        }
        // The cache: lookups with hits, stores of the 300 new results per
        // node, and flushes, all under this pipeline's maps.
        let cache = |span: &str| -> Vec<&Seen> {
            seen.iter().filter(|s| s.name == span && ours(s)).collect()
        };
        let looked: usize = cache("cache.lookup")
            .iter()
            .filter(|s| s.fields["node"] == "count")
            .map(|s| s.fields.get("hits").map_or(0, |h| h.parse().unwrap()))
            .sum();
        assert_eq!(looked, 200, "{name}: the second map's hits");
        let stored: usize = cache("cache.store")
            .iter()
            .filter(|s| s.fields["node"] == "count")
            .map(|s| s.fields["rows"].parse::<usize>().unwrap())
            .sum();
        assert_eq!(stored, 300, "{name}");
        assert!(
            cache("cache.store")
                .iter()
                .all(|s| s.fields["bytes"] != "0")
        );
        assert!(!cache("cache.flush").is_empty(), "{name}");
    }

    // Without a cache a row engine calls each node per item: one span
    // each, under the map's span (on the worker threads too).
    for (name, engine) in common::engines().into_iter().take(2) {
        let pipeline_name = format!("untraced_cache_{name}");
        let p = Pipeline::new([clean::node(), count::node()])
            .unwrap()
            .with_name(&pipeline_name)
            .with_shared_engine(engine);
        spans.0.lock().unwrap().0.clear();
        let texts: Vec<String> = (0..50).map(|i| format!(" Text {i} ")).collect();
        p.map(Inputs::new().with("text", texts), ["text"]).unwrap();
        let seen = spans.0.lock().unwrap().0.clone();
        let under_map = |s: &Seen| {
            let mut at = s.parent.map(|p| &seen[p]);
            while let Some(span) = at {
                if span.name == "map" {
                    return span.fields.get("pipeline") == Some(&pipeline_name);
                }
                at = span.parent.map(|p| &seen[p]);
            }
            false
        };
        let per_item = seen
            .iter()
            .filter(|s| s.name == "node" && s.fields.contains_key("item") && under_map(s))
            .count();
        assert_eq!(per_item, 100, "{name}: 50 items, two nodes");
    }
}
