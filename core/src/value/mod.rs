//! Values: how typed Rust data moves through pipelines.
//!
//! Row engines move type-erased [`Value`]s (a shared pointer to any
//! `Send + Sync` Rust value). Columnar engines move Arrow arrays. The bridge
//! between the two is one trait, [`ArrowValue`]: a Rust type that knows its
//! Arrow [`DataType`] and converts a slice of values to an [`ArrayRef`] and
//! back. It is implemented here for integers, floats, `bool`, `String`,
//! `Vec<T>` and `Option<T>`, and for user structs by
//! `#[derive(ArrowValue)]` (field by field when every field has an Arrow
//! form, else through `serde_arrow`).
//!
//! Types with no Arrow form (a model, a client, a connection) still flow
//! through pipelines as *resources*: they are typically passed as fixed
//! inputs and borrowed by nodes (`model: &Model`).
//!
//! Every port of a node carries a [`ValueType`]: the runtime description of
//! its Rust type (identity and name for type checks, Arrow conversion when the
//! type has one, and list operations used by `map` and nested `map_over`).

mod arrow;
mod resource;

pub(crate) use arrow::spread_with_nulls;
pub use arrow::{ArrowValue, serde_support, struct_support};
pub use resource::{Resource, ResourceKey};

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field};

/// An error converting between Rust values and Arrow arrays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot convert `{type_name}` to or from Arrow: {message}")]
pub struct ValueError {
    /// The Rust type being converted.
    pub type_name: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ValueError {
    /// A conversion error for type `T`.
    pub fn new<T: ?Sized>(message: impl Into<String>) -> Self {
        ValueError {
            type_name: readable_type_name::<T>(),
            message: message.into(),
        }
    }
}

/// The name of `T` as people write it: every path cut to its last segment
/// (`alloc::vec::Vec<alloc::string::String>` is `Vec<String>`). Computed
/// once per type.
pub fn readable_type_name<T: ?Sized>() -> &'static str {
    readable(std::any::type_name::<T>())
}

/// [`readable_type_name`] of a full type name.
pub(crate) fn readable(full: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(short) = names.get(full) {
        return short;
    }
    let mut out = String::with_capacity(full.len());
    // Where the current path began in `out`.
    let mut segment = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment);
        } else if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push(c);
            segment = out.len();
        }
    }
    // One leaked string per distinct type, for the life of the process.
    let short: &'static str = Box::leak(out.into_boxed_str());
    names.insert(full, short);
    short
}

/// A type-erased, cheaply clonable value flowing between nodes.
#[derive(Clone)]
pub struct Value {
    inner: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl Value {
    /// Wraps a Rust value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Value {
            inner: Arc::new(value),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// Wraps a Rust value, turning `&'static str` (and `Vec<&'static str>`)
    /// into `String` (and `Vec<String>`), so that string literals can be
    /// passed where nodes take `String`.
    pub fn from_user<T: Any + Send + Sync>(value: T) -> Self {
        let any: &dyn Any = &value;
        if let Some(s) = any.downcast_ref::<&'static str>() {
            return Value::new(s.to_string());
        }
        if let Some(v) = any.downcast_ref::<Vec<&'static str>>() {
            return Value::new(v.iter().map(|s| s.to_string()).collect::<Vec<String>>());
        }
        Value::new(value)
    }

    /// Borrows the value as `T`, if it is one.
    #[inline]
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }

    /// The value a node sees: for a lazily created [`Resource`], the
    /// resource (created now if this is its first use); for any other value,
    /// itself. `Err` says why a resource could not be created.
    #[inline]
    pub fn resolved(&self) -> Result<&Value, String> {
        match self.inner.downcast_ref::<Resource>() {
            Some(resource) => resource.get(),
            None => Ok(self),
        }
    }

    /// The [`TypeId`] of the wrapped value.
    #[inline]
    pub fn type_id_of(&self) -> TypeId {
        (*self.inner).type_id()
    }

    /// Whether both handles share one value (not a comparison of contents).
    pub fn same(&self, other: &Value) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The Rust type name of the wrapped value.
    pub fn type_name(&self) -> &'static str {
        readable(self.type_name)
    }

    /// Takes the value out as `T`, cloning only if it is shared.
    pub fn into_inner<T: Any + Send + Sync + Clone>(self) -> Option<T> {
        let arc = self.inner.downcast::<T>().ok()?;
        Some(Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone()))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value<{}>", self.type_name)
    }
}

/// How a value of a [`ValueType`] converts to and from Arrow.
#[derive(Clone, Copy)]
pub struct ArrowOps {
    data_type: fn() -> DataType,
    nullable: fn() -> bool,
    to_array: fn(&[&Value]) -> Result<ArrayRef, ValueError>,
    from_array: fn(&dyn Array) -> Result<Vec<Value>, ValueError>,
    list_from_array: fn(&dyn Array) -> Result<Value, ValueError>,
}

/// The runtime description of a port's Rust type: identity and name for type
/// checks, Arrow conversion when the type has one, and the list operations
/// that `map` and nested `map_over` use.
#[derive(Clone, Copy)]
pub struct ValueType {
    id: TypeId,
    name: &'static str,
    arrow: Option<ArrowOps>,
    list: Option<ListOps>,
    list_type: Option<fn() -> ValueType>,
    key: Option<fn(&Value) -> Option<crate::signature::digest::Signature>>,
}

impl fmt::Debug for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for ValueType {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl ValueType {
    /// The description of an Arrow-capable type.
    pub fn arrow<T: ArrowValue>() -> ValueType {
        arrow_type::<T, L0>()
    }

    /// The description of a clonable resource type (no Arrow form).
    pub fn resource<T: Any + Send + Sync + Clone>() -> ValueType {
        clone_type::<T, L0>()
    }

    /// The description of a resource type that can only be borrowed.
    pub fn opaque<T: Any + Send + Sync>() -> ValueType {
        ValueType {
            id: TypeId::of::<T>(),
            name: readable_type_name::<T>(),
            arrow: None,
            list: None,
            list_type: None,
            key: None,
        }
    }

    /// The same type, with a way to key resource values for caching.
    pub fn with_key(
        mut self,
        key: Option<fn(&Value) -> Option<crate::signature::digest::Signature>>,
    ) -> Self {
        if !self.is_arrow() {
            self.key = key;
        }
        self
    }

    /// The cache key hash of a resource value (`None` for Arrow values,
    /// which are hashed by their Arrow encoding, and for unkeyed resources).
    pub fn resource_hash(&self, value: &Value) -> Option<crate::signature::digest::Signature> {
        if let Some(resource) = value.downcast_ref::<Resource>() {
            return Some(resource.signature());
        }
        self.key.and_then(|f| f(value))
    }

    /// The Rust type name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Rust [`TypeId`].
    pub fn type_id(&self) -> TypeId {
        self.id
    }

    /// Whether values of this type have an Arrow form.
    pub fn is_arrow(&self) -> bool {
        self.arrow.is_some()
    }

    /// The Arrow data type, for Arrow-capable types.
    pub fn data_type(&self) -> Option<DataType> {
        self.arrow.map(|a| (a.data_type)())
    }

    /// The Arrow field for a column of this type, for Arrow-capable types.
    pub fn field(&self, name: &str) -> Option<Field> {
        self.arrow
            .map(|a| Field::new(name, (a.data_type)(), (a.nullable)()))
    }

    /// Encodes values of this type into one Arrow array.
    pub fn to_array(&self, values: &[&Value]) -> Result<ArrayRef, ValueError> {
        match self.arrow {
            Some(a) => (a.to_array)(values),
            None => Err(ValueError {
                type_name: self.name,
                message: "the type has no Arrow form".into(),
            }),
        }
    }

    /// Decodes an Arrow array into values of this type.
    pub fn from_array(&self, array: &dyn Array) -> Result<Vec<Value>, ValueError> {
        match self.arrow {
            Some(a) => (a.from_array)(array),
            None => Err(ValueError {
                type_name: self.name,
                message: "the type has no Arrow form".into(),
            }),
        }
    }

    /// Decodes an Arrow array into one `Vec<Self>` value (what
    /// [`make_list`](Self::make_list) makes of [`from_array`](Self::from_array)'s
    /// values, without a value per element on the way).
    pub fn list_from_array(&self, array: &dyn Array) -> Result<Value, ValueError> {
        match self.arrow {
            Some(a) => (a.list_from_array)(array),
            None => Err(ValueError {
                type_name: self.name,
                message: "the type has no Arrow form".into(),
            }),
        }
    }

    /// The type `Vec<Self>`, if lists of this type are supported (values
    /// must be clonable, and lists nest at most three levels beyond a port's
    /// own type).
    pub fn list_type(&self) -> Option<ValueType> {
        self.list_type.map(|f| f())
    }

    /// The length of `list`, if it is a `Vec<Self>`.
    pub fn list_len(&self, list: &Value) -> Option<usize> {
        self.list.and_then(|ops| (ops.len)(list))
    }

    /// Element `index` of `list` (a `Vec<Self>`), as a value of its own.
    #[inline]
    pub fn list_item(&self, list: &Value, index: usize) -> Option<Value> {
        self.list.and_then(|ops| (ops.item)(list, index))
    }

    /// Splits a value of type `Vec<Self>` into its elements.
    pub fn split_list(&self, list: &Value) -> Option<Vec<Value>> {
        let len = self.list_len(list)?;
        (0..len).map(|i| self.list_item(list, i)).collect()
    }

    /// Builds a `Vec<Self>` value from elements of this type.
    pub fn make_list(&self, items: Vec<Value>) -> Option<Value> {
        self.list.and_then(|ops| (ops.make)(items))
    }

    /// Whether `value` holds a value of this type.
    pub fn matches(&self, value: &Value) -> bool {
        value.type_id_of() == self.id
            // A lazily made resource stands for a value with no Arrow form.
            || (self.arrow.is_none()
                && value
                    .downcast_ref::<Resource>()
                    .is_some_and(|r| r.makes(self.id)))
    }
}

/// Element access on `Vec<T>` values, for `T` described by a [`ValueType`].
#[derive(Clone, Copy)]
struct ListOps {
    len: fn(&Value) -> Option<usize>,
    item: fn(&Value, usize) -> Option<Value>,
    make: fn(Vec<Value>) -> Option<Value>,
}

impl ListOps {
    fn of<T: Any + Send + Sync + Clone>() -> Self {
        ListOps {
            len: |list| list.downcast_ref::<Vec<T>>().map(Vec::len),
            item: |list, i| {
                list.downcast_ref::<Vec<T>>()
                    .and_then(|v| v.get(i))
                    .map(|x| Value::new(x.clone()))
            },
            make: make::<T>,
        }
    }
}

fn make<T: Any + Send + Sync + Clone>(items: Vec<Value>) -> Option<Value> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(item.into_inner::<T>()?);
    }
    Some(Value::new(out))
}

fn values_to_array<T: ArrowValue>(values: &[&Value]) -> Result<ArrayRef, ValueError> {
    let typed: Vec<&T> = values
        .iter()
        .map(|v| {
            v.downcast_ref::<T>().ok_or_else(|| {
                ValueError::new::<T>(format!("got a value of type `{}`", v.type_name()))
            })
        })
        .collect::<Result<_, _>>()?;
    T::to_array(&typed)
}

fn array_to_values<T: ArrowValue>(array: &dyn Array) -> Result<Vec<Value>, ValueError> {
    Ok(T::from_array(array)?.into_iter().map(Value::new).collect())
}

fn array_to_list<T: ArrowValue>(array: &dyn Array) -> Result<Value, ValueError> {
    Ok(Value::new(T::from_array(array)?))
}

/// List nesting levels, so that `Vec<Vec<..>>` descriptions are finite.
trait Level: 'static {
    fn arrow_list<T: ArrowValue>() -> Option<fn() -> ValueType>;
    fn clone_list<T: Any + Send + Sync + Clone>() -> Option<fn() -> ValueType>;
}

macro_rules! levels {
    ($($l:ident => $next:ident),*; $last:ident) => {
        $(
            struct $l;
            impl Level for $l {
                fn arrow_list<T: ArrowValue>() -> Option<fn() -> ValueType> {
                    Some(arrow_type::<Vec<T>, $next>)
                }
                fn clone_list<T: Any + Send + Sync + Clone>() -> Option<fn() -> ValueType> {
                    Some(clone_type::<Vec<T>, $next>)
                }
            }
        )*
        struct $last;
        impl Level for $last {
            fn arrow_list<T: ArrowValue>() -> Option<fn() -> ValueType> {
                None
            }
            fn clone_list<T: Any + Send + Sync + Clone>() -> Option<fn() -> ValueType> {
                None
            }
        }
    };
}

levels!(L0 => L1, L1 => L2, L2 => L3; L3);

fn arrow_type<T: ArrowValue, L: Level>() -> ValueType {
    ValueType {
        id: TypeId::of::<T>(),
        name: readable_type_name::<T>(),
        arrow: Some(ArrowOps {
            data_type: T::data_type,
            nullable: T::nullable,
            to_array: values_to_array::<T>,
            from_array: array_to_values::<T>,
            list_from_array: array_to_list::<T>,
        }),
        list: Some(ListOps::of::<T>()),
        list_type: L::arrow_list::<T>(),
        key: None,
    }
}

fn clone_type<T: Any + Send + Sync + Clone, L: Level>() -> ValueType {
    ValueType {
        id: TypeId::of::<T>(),
        name: readable_type_name::<T>(),
        arrow: None,
        list: Some(ListOps::of::<T>()),
        list_type: L::clone_list::<T>(),
        key: None,
    }
}

/// Picks the richest [`ValueType`] a concrete type supports (Arrow, then
/// clonable resource, then borrow-only resource) by autoref specialization.
/// Used by the `#[node]` macro through [`value_type!`](crate::value_type).
#[doc(hidden)]
pub mod probe {
    use super::*;
    use std::marker::PhantomData;

    pub struct Probe<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> Probe<T> {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Probe(PhantomData)
        }
    }

    pub trait ArrowProbe {
        fn value_type(&self) -> ValueType;
    }
    impl<T: ArrowValue> ArrowProbe for &&Probe<T> {
        fn value_type(&self) -> ValueType {
            ValueType::arrow::<T>()
        }
    }

    pub trait CloneProbe {
        fn value_type(&self) -> ValueType;
    }
    impl<T: Any + Send + Sync + Clone> CloneProbe for &Probe<T> {
        fn value_type(&self) -> ValueType {
            ValueType::resource::<T>()
        }
    }

    /// Picks how a resource is keyed: [`ResourceKey`], else serde, else none.
    pub struct KeyProbe<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> KeyProbe<T> {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            KeyProbe(PhantomData)
        }
    }

    type KeyFn = Option<fn(&Value) -> Option<crate::signature::digest::Signature>>;

    pub trait KeyByTrait {
        fn key_fn(&self) -> KeyFn;
    }
    impl<T: ResourceKey + Any> KeyByTrait for &&KeyProbe<T> {
        fn key_fn(&self) -> KeyFn {
            Some(|v| {
                let key = v.downcast_ref::<T>()?.cache_key()?;
                Some(crate::signature::digest::Signature::of_bytes(
                    "hypernodes/resource/v1",
                    key.as_bytes(),
                ))
            })
        }
    }

    pub trait KeyBySerde {
        fn key_fn(&self) -> KeyFn;
    }
    impl<T: serde::Serialize + Any> KeyBySerde for &KeyProbe<T> {
        fn key_fn(&self) -> KeyFn {
            Some(|v| {
                let bytes = crate::signature::digest::canonical_json(v.downcast_ref::<T>()?)?;
                Some(crate::signature::digest::Signature::of_bytes(
                    "hypernodes/resource-serde/v2",
                    &bytes,
                ))
            })
        }
    }

    pub trait NoKey {
        fn key_fn(&self) -> KeyFn;
    }
    impl<T: ?Sized> NoKey for KeyProbe<T> {
        fn key_fn(&self) -> KeyFn {
            None
        }
    }

    pub trait OpaqueProbe {
        fn value_type(&self) -> ValueType;
    }
    impl<T: Any + Send + Sync> OpaqueProbe for Probe<T> {
        fn value_type(&self) -> ValueType {
            ValueType::opaque::<T>()
        }
    }
}

/// The [`ValueType`] of a concrete type: Arrow-capable if it implements
/// [`ArrowValue`], otherwise a resource (keyed for caching by
/// [`ResourceKey`], else by its serde form, else not at all).
#[macro_export]
macro_rules! value_type {
    ($t:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::probe::{
            ArrowProbe as _, CloneProbe as _, KeyBySerde as _, KeyByTrait as _, NoKey as _,
            OpaqueProbe as _,
        };
        (&&&$crate::__private::probe::Probe::<$t>::new())
            .value_type()
            .with_key((&&$crate::__private::probe::KeyProbe::<$t>::new()).key_fn())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn large_string_columns_roundtrip_unchanged() {
        // Empty, ASCII and multi-byte text, in one pre-sized buffer.
        let texts: Vec<String> = (0..200_003)
            .map(|i| match i % 4 {
                0 => String::new(),
                1 => format!("item {i}"),
                2 => "é漢🦀".repeat(i % 5),
                _ => " ".into(),
            })
            .collect();
        let refs: Vec<&String> = texts.iter().collect();
        let array = String::to_array(&refs).unwrap();
        let expected: arrow_array::StringArray = texts.iter().map(|t| Some(t.as_str())).collect();
        assert_eq!(array.as_string::<i32>(), &expected);
        assert_eq!(String::from_array(array.as_ref()).unwrap(), texts);
    }

    fn roundtrip<T: ArrowValue + PartialEq + fmt::Debug>(values: Vec<T>) {
        let refs: Vec<&T> = values.iter().collect();
        let array = T::to_array(&refs).unwrap();
        assert_eq!(array.data_type(), &T::data_type());
        assert_eq!(T::from_array(array.as_ref()).unwrap(), values);
    }

    #[test]
    fn primitives_roundtrip() {
        roundtrip(vec![1i64, -2, 3]);
        roundtrip(vec![1u8, 2]);
        roundtrip(vec![1.5f64, -0.0]);
        roundtrip(vec![true, false, true]);
        roundtrip(vec!["a".to_string(), String::new(), "ü".into()]);
    }

    #[test]
    fn containers_roundtrip() {
        roundtrip(vec![vec![1i32, 2], vec![], vec![3]]);
        roundtrip(vec![Some(1i64), None, Some(3)]);
        roundtrip(vec![Some(vec!["x".to_string()]), None, Some(vec![])]);
        roundtrip(vec![vec![Some(1.0f32), None], vec![None]]);
        roundtrip(vec![vec![vec![1u16], vec![]], vec![vec![2, 3]]]);
        roundtrip::<Vec<i64>>(vec![]);
    }

    #[test]
    fn sliced_list_array_decodes() {
        let v = [vec![1i64], vec![2, 3], vec![4]];
        let refs: Vec<&Vec<i64>> = v.iter().collect();
        let array = Vec::<i64>::to_array(&refs).unwrap().slice(1, 2);
        assert_eq!(
            Vec::<i64>::from_array(array.as_ref()).unwrap(),
            vec![vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn nulls_need_option() {
        let refs = [&Some(1i64), &None];
        let array = Option::<i64>::to_array(&refs).unwrap();
        let err = i64::from_array(array.as_ref()).unwrap_err();
        assert!(err.message.contains("Option"), "{err}");
    }

    #[derive(Clone)]
    struct Model;

    #[test]
    fn probe_picks_the_richest_type() {
        assert!(value_type!(i64).is_arrow());
        assert!(value_type!(Vec<String>).is_arrow());
        let m = value_type!(Model);
        assert!(!m.is_arrow());
        assert!(m.list_type().is_some());
        struct NoClone;
        let n = value_type!(NoClone);
        assert!(n.list_type().is_none());
    }

    #[test]
    fn lists_split_and_make() {
        let t = ValueType::arrow::<i64>();
        let list = t
            .make_list(vec![Value::new(1i64), Value::new(2i64)])
            .unwrap();
        assert_eq!(list.downcast_ref::<Vec<i64>>(), Some(&vec![1, 2]));
        let items = t.split_list(&list).unwrap();
        assert_eq!(items[1].downcast_ref::<i64>(), Some(&2));
        let lt = t.list_type().unwrap();
        assert_eq!(lt.type_id(), TypeId::of::<Vec<i64>>());
        let llt = lt.list_type().unwrap().list_type().unwrap();
        assert_eq!(llt.type_id(), TypeId::of::<Vec<Vec<Vec<i64>>>>());
        assert!(llt.list_type().is_none());
    }

    #[test]
    fn str_literals_become_strings() {
        let v = Value::from_user("hi");
        assert_eq!(v.downcast_ref::<String>().map(String::as_str), Some("hi"));
        let v = Value::from_user(vec!["a", "b"]);
        assert_eq!(v.downcast_ref::<Vec<String>>().map(Vec::len), Some(2));
    }
}
