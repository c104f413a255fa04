//! Resources: values with no Arrow form (models, clients), keyed for
//! caching by what they declare ([`ResourceKey`]), and made on first use
//! ([`Resource`]).

use std::any::{Any, TypeId};
use std::sync::Arc;

use super::{Value, readable_type_name};

/// What identifies a resource's behaviour for caching (a model's name and
/// version, a client's endpoint), leaving secrets out. Nodes taking a
/// resource are cached under this key; `None` means "never cache them".
///
/// Resources that implement serde's `Serialize` and not this trait are keyed
/// by their JSON form (unordered maps inside them may cause extra misses,
/// never stale results); other resources have no key.
pub trait ResourceKey {
    /// The key, or `None` to never cache nodes taking this resource.
    fn cache_key(&self) -> Option<String>;
}

/// A resource (a model, a client, a connection) created on first use: pass
/// it where the resource itself would go (a fixed input, `bind`, a node
/// registry), and the factory runs once, the first time a node that takes
/// it actually runs: never when every item is cached. Clones share the
/// created value. For caching it is keyed by its declared `key` exactly as
/// a resource whose [`ResourceKey::cache_key`] returns that key, so both
/// share cache entries.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use hypernodes_core::{Inputs, Pipeline, Resource, node};
///
/// struct Model { scale: i64 }
///
/// #[node(output = "scored")]
/// fn score(x: i64, model: &Model) -> i64 { x * model.scale }
///
/// let loads = Arc::new(AtomicUsize::new(0));
/// let counter = loads.clone();
/// let model = Resource::lazy("model-v1", move || {
///     counter.fetch_add(1, Ordering::SeqCst);
///     Ok(Model { scale: 3 })
/// });
/// let p = Pipeline::new([score::node()]).unwrap();
/// let r = p
///     .map(Inputs::new().with("x", vec![1i64, 2]).with("model", model.clone()), ["x"])
///     .unwrap();
/// assert_eq!(r.values::<i64>("scored").unwrap(), [3, 6]);
/// assert_eq!(loads.load(Ordering::SeqCst), 1); // once, however many items
/// ```
#[derive(Clone)]
pub struct Resource {
    inner: Arc<ResourceInner>,
}

/// The factory's error type.
type FactoryError = Box<dyn std::error::Error + Send + Sync>;

struct ResourceInner {
    key: String,
    type_id: TypeId,
    type_name: &'static str,
    factory: Box<dyn Fn() -> Result<Value, FactoryError> + Send + Sync>,
    made: std::sync::OnceLock<Result<Value, String>>,
}

impl Resource {
    /// A resource of type `T` made by `factory` on first use, keyed by
    /// `key` for caching (name what changes results, leave secrets out).
    pub fn lazy<T: Any + Send + Sync>(
        key: impl Into<String>,
        factory: impl Fn() -> Result<T, FactoryError> + Send + Sync + 'static,
    ) -> Resource {
        Resource {
            inner: Arc::new(ResourceInner {
                key: key.into(),
                type_id: TypeId::of::<T>(),
                type_name: readable_type_name::<T>(),
                factory: Box::new(move || factory().map(Value::new)),
                made: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The key it is cached under.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The type it makes.
    pub fn type_name(&self) -> &'static str {
        self.inner.type_name
    }

    /// Whether it makes values of the type `id`.
    pub(super) fn makes(&self, id: TypeId) -> bool {
        self.inner.type_id == id
    }

    /// Whether it has been made (by this value or a clone).
    pub fn is_created(&self) -> bool {
        self.inner.made.get().is_some()
    }

    /// The made value, making it now if needed (once, whoever asks first;
    /// a failure is kept and reported to every caller).
    pub(super) fn get(&self) -> Result<&Value, String> {
        self.inner
            .made
            .get_or_init(|| {
                (self.inner.factory)()
                    .map_err(|e| format!("resource `{}` could not be created: {e}", self.inner.key))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Its signature for caching: that of a resource keyed by `key`.
    pub(super) fn signature(&self) -> crate::signature::digest::Signature {
        crate::signature::digest::Signature::of_bytes(
            "hypernodes/resource/v1",
            self.inner.key.as_bytes(),
        )
    }
}
