//! Inputs given to `run` and `map`, and the outputs `run` returns.

use std::any::Any;
use std::collections::BTreeMap;

use crate::error::Error;
use crate::value::Value;

/// A mapped input's elements given as one Arrow array ([`Inputs::with_array`]).
#[derive(Debug)]
pub(crate) struct ArrowList(pub(crate) arrow_array::ArrayRef);

/// The error for a column of type `column_type` given for `input`: its
/// type cannot read it (names the column, the input, a node taking it, and
/// both types).
pub(crate) fn column_type_error(
    column: &str,
    input: &crate::pipeline::InputInfo,
    column_type: &arrow_schema::DataType,
) -> Error {
    Error::ColumnType {
        column: column.to_string(),
        input: input.name.clone(),
        node: input.consumers.first().cloned().unwrap_or_default(),
        column_type: column_type.to_string(),
        input_type: match input.ty.field(&input.name) {
            Some(w) => format!("{}, read as {}", input.ty.name(), w.data_type()),
            None => format!("{}, which has no Arrow form", input.ty.name()),
        },
    }
}

/// The elements `array` gives mapped input `info`, checked: the data type
/// its type reads as, and nulls only for an `Option`.
pub(crate) fn elements_as(
    info: &crate::pipeline::InputInfo,
    array: &arrow_array::ArrayRef,
) -> Result<arrow_array::ArrayRef, Error> {
    let Some(wanted) = info
        .ty
        .field(&info.name)
        .filter(|w| w.data_type() == array.data_type())
    else {
        return Err(column_type_error(&info.name, info, array.data_type()));
    };
    if !wanted.is_nullable() && array.null_count() > 0 {
        let row = (0..array.len()).find(|&r| array.is_null(r)).unwrap_or(0);
        return Err(Error::NullValue {
            column: info.name.clone(),
            input: info.name.clone(),
            node: info.consumers.first().cloned().unwrap_or_default(),
            row,
        });
    }
    Ok(array.clone())
}

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

    /// Adds (or replaces) a mapped input whose elements are the rows of an
    /// Arrow array, builder style: the same map as a `Vec` of those
    /// values (same results and cache entries), but columnar engines take
    /// the array as it is instead of building one from values. The array's
    /// data type must be the one the input's type reads as, and it may
    /// hold nulls only if that type is an `Option`; both are checked when
    /// the map starts.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hypernodes_core::{Inputs, Pipeline, node};
    ///
    /// #[node(output = "doubled")]
    /// fn double(x: i64) -> i64 { x * 2 }
    ///
    /// let p = Pipeline::new([double::node()]).unwrap();
    /// let xs = Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3]));
    /// let r = p.map(Inputs::new().with_array("x", xs), ["x"]).unwrap();
    /// assert_eq!(r.values::<i64>("doubled").unwrap(), [2, 4, 6]);
    /// ```
    pub fn with_array(mut self, name: impl Into<String>, elements: arrow_array::ArrayRef) -> Self {
        self.insert_value(name, Value::new(ArrowList(elements)));
        self
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
