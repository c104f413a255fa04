//! Resources made on first use (`Resource::lazy`): once per process however
//! many items, batches and partitions; never when every item is cached;
//! keyed like a resource with the same declared key; a failing factory is
//! an error for the items that need it, naming the resource.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{DiskCache, Inputs, MapOptions, Pipeline, Resource, ResourceKey, node};

struct Model {
    scale: i64,
}

impl ResourceKey for Model {
    fn cache_key(&self) -> Option<String> {
        Some("model-v1".into())
    }
}

#[node(output = "scored")]
fn score(x: i64, model: &Model) -> i64 {
    x * model.scale
}

/// A lazily made model, counting how many times it is made.
fn lazy_model(made: &Arc<AtomicUsize>) -> Resource {
    let made = made.clone();
    Resource::lazy("model-v1", move || {
        made.fetch_add(1, Ordering::SeqCst);
        Ok(Model { scale: 3 })
    })
}

fn scored(
    engine: &Arc<dyn hypernodes::Engine>,
    dir: &std::path::Path,
    model: Resource,
) -> Vec<i64> {
    Pipeline::new([score::node()])
        .unwrap()
        .with_shared_engine(engine.clone())
        .with_cache(DiskCache::new(dir))
        .map(
            Inputs::new()
                .with("x", (0..200i64).collect::<Vec<_>>())
                .with("model", model),
            ["x"],
        )
        .unwrap()
        .values::<i64>("scored")
        .unwrap()
}

#[test]
fn a_lazy_resource_is_made_once_and_never_when_everything_is_cached() {
    let expected: Vec<i64> = (0..200).map(|x| x * 3).collect();
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        assert_eq!(
            scored(&engine, dir.path(), lazy_model(&made)),
            expected,
            "{name}"
        );
        assert_eq!(made.load(Ordering::SeqCst), 1, "{name}: once for 200 items");
        // A new, not yet made resource: every item is cached, so it is never made.
        let fresh = lazy_model(&made);
        assert_eq!(
            scored(&engine, dir.path(), fresh.clone()),
            expected,
            "{name}"
        );
        assert_eq!(
            made.load(Ordering::SeqCst),
            1,
            "{name}: not made when all is cached"
        );
        assert!(!fresh.is_created());
        // The same key as an eager resource: the same cache entries.
        let eager = Pipeline::new([score::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()))
            .explain_cache(
                Inputs::new()
                    .with("x", 5i64)
                    .with("model", Model { scale: 3 }),
            )
            .unwrap();
        assert_eq!(eager[0].outcome, hypernodes::CacheOutcome::Hit, "{name}");
    }
}

#[test]
fn a_failing_factory_fails_the_items_that_need_it_naming_the_resource() {
    for (name, engine) in common::engines() {
        let tries = Arc::new(AtomicUsize::new(0));
        let counter = tries.clone();
        let broken = Resource::lazy("model-v2", move || -> Result<Model, _> {
            counter.fetch_add(1, Ordering::SeqCst);
            Err("weights not found".into())
        });
        let r = Pipeline::new([score::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .map(
                Inputs::new()
                    .with("x", (0..20i64).collect::<Vec<_>>())
                    .with("model", broken),
                MapOptions::over(["x"]).continue_on_error(),
            )
            .unwrap();
        assert_eq!(r.failures().len(), 20, "{name}");
        let message = r.failures()[0].error.to_string();
        assert!(
            message.contains("resource `model-v2` could not be created: weights not found"),
            "{name}: {message}"
        );
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "{name}: tried once, the failure kept"
        );
    }
}

#[test]
fn a_registry_holds_resources_by_input_name() {
    let made = Arc::new(AtomicUsize::new(0));
    let registry = hypernodes::node::NodeRegistry::new()
        .with_pipeline(&Pipeline::new([score::node()]).unwrap())
        .with_resource("model", lazy_model(&made));
    let model = registry.resource("model").unwrap();
    assert_eq!((model.key(), model.type_name()), ("model-v1", "Model"));
    assert!(!model.is_created() && registry.resource("tokenizer").is_none());
    assert_eq!(made.load(Ordering::SeqCst), 0);
}

#[node(output = "shout")]
fn shout(text: &str) -> String {
    text.to_uppercase()
}

#[test]
fn values_with_an_arrow_form_are_not_lazy_resources() {
    let lazy_text = Resource::lazy("text", || Ok("hi".to_string()));
    let err = Pipeline::new([shout::node()])
        .unwrap()
        .run(Inputs::new().with("text", lazy_text))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `text` has type `Resource` but `String` is expected"
    );
}
