//! Inputs given to `run` and `map`, and the outputs `run` returns.

use std::any::Any;
use std::collections::BTreeMap;

use crate::error::Error;
use crate::value::Value;

/// Named input values for `run`, `map` or `bind`.
///
/// String literals are accepted where nodes take `String` (and `Vec<&str>`
/// where they take `Vec<String>`).
#[derive(Clone, Default, Debug)]
pub struct Inputs {
    values: BTreeMap<String, Value>,
}

impl Inputs {
    /// No inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an input, builder style.
    pub fn with<T: Any + Send + Sync>(mut self, name: impl Into<String>, value: T) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds (or replaces) an input.
    pub fn insert<T: Any + Send + Sync>(&mut self, name: impl Into<String>, value: T) {
        self.values.insert(name.into(), Value::from_user(value));
    }

    /// Adds (or replaces) an already type-erased input.
    pub fn insert_value(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    /// The value of an input.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Removes an input.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.values.remove(name)
    }

    /// Input names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Name/value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds all of `other`'s inputs, replacing same-named ones.
    pub fn extend(&mut self, other: Inputs) {
        self.values.extend(other.values);
    }
}

/// Builds [`Inputs`]: `inputs! { "text" => "hello", "n" => 3i64 }`.
#[macro_export]
macro_rules! inputs {
    () => { $crate::Inputs::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {{
        let mut i = $crate::Inputs::new();
        $( i.insert($name, $value); )+
        i
    }};
}

/// The outputs of one `run`, in the pipeline's output order.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    names: Vec<String>,
    pub(crate) values: Vec<Value>,
}

impl Outputs {
    pub(crate) fn new(names: Vec<String>, values: Vec<Value>) -> Self {
        Outputs { names, values }
    }

    /// An output as `T`; an error names the output and both types.
    pub fn get<T: Any>(&self, name: &str) -> Result<&T, Error> {
        let v = self.value(name).ok_or_else(|| Error::UnknownOutput {
            name: name.to_string(),
            available: self.names.clone(),
        })?;
        v.downcast_ref::<T>().ok_or_else(|| Error::OutputType {
            name: name.to_string(),
            requested: crate::value::readable_type_name::<T>(),
            actual: v.type_name(),
        })
    }

    /// An output, type-erased.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
    }

    /// Output names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name/value pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter())
    }
}
