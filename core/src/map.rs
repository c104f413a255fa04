//! `map`: options (zip or product, error policy, selected outputs) and the
//! columnar [`MapResult`].

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{Field, Schema};

use crate::error::Error;
use crate::value::{Value, ValueType, spread_with_nulls};

/// How several mapped inputs combine into items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapMode {
    /// Item `i` takes element `i` of every mapped list (lists must have one length).
    #[default]
    Zip,
    /// Every combination of elements; the last mapped input varies fastest.
    Product,
}

impl MapMode {
    /// How many items lists of these lengths (named) give: zip needs one
    /// length (else [`Error::LengthMismatch`] naming every list), product
    /// multiplies them. The one place both modes are expanded.
    pub fn items(self, lists: &[(String, usize)]) -> Result<usize, Error> {
        match self {
            MapMode::Zip => {
                let first = lists.first().map_or(0, |l| l.1);
                if lists.iter().any(|l| l.1 != first) {
                    return Err(Error::LengthMismatch {
                        lengths: lists.to_vec(),
                    });
                }
                Ok(first)
            }
            MapMode::Product => Ok(lists.iter().map(|l| l.1).product()),
        }
    }

    /// Which element of each list (of lengths `lens`) item `index` takes.
    pub fn elements(self, lens: &[usize], index: usize) -> smallvec::SmallVec<[usize; 4]> {
        let mut out: smallvec::SmallVec<[usize; 4]> =
            smallvec::SmallVec::from_elem(index, lens.len());
        if self == MapMode::Product {
            let mut rem = index;
            for (len, e) in lens.iter().zip(out.iter_mut()).rev() {
                *e = rem % len;
                rem /= len;
            }
        }
        out
    }
}

/// What `map` does when an item fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Return the first failure (by item index) as the error.
    #[default]
    Stop,
    /// Finish every other item; failed items are listed in the result.
    Continue,
}

/// Options of one `map` call: what to map over and how (zip or product),
/// what a failure does, which outputs to compute, and the cache's flush
/// size and strictness. A list of names converts into options.
///
/// ```
/// use hypernodes_core::{Inputs, MapOptions, Pipeline, node};
///
/// #[node(output = "ratio")]
/// fn divide(x: i64, y: i64) -> Result<i64, String> {
///     if y == 0 { Err("division by zero".into()) } else { Ok(x / y) }
/// }
/// #[node(output = "label")]
/// fn label(ratio: i64) -> String { format!("ratio {ratio}") }
///
/// let p = Pipeline::new([divide::node(), label::node()]).unwrap();
/// let inputs = Inputs::new().with("x", vec![6i64, 8]).with("y", vec![3i64, 0]);
/// let options = MapOptions::over(["x", "y"])   // zip: item i takes x[i] and y[i]
///     .continue_on_error()                      // the other items still run
///     .outputs(["ratio"]);                      // `label` does not run
/// let r = p.map(inputs, options).unwrap();
/// assert_eq!(r.names(), ["ratio"]);
/// assert_eq!(r.values_opt::<i64>("ratio").unwrap(), [Some(2), None]);
/// assert_eq!(r.failures()[0].node(), "divide");
/// ```
#[derive(Clone, Debug, Default)]
pub struct MapOptions {
    pub(crate) over: Vec<String>,
    pub(crate) mode: MapMode,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) outputs: Option<Vec<String>>,
    pub(crate) flush_every: Option<usize>,
    pub(crate) strict_cache: bool,
}

impl MapOptions {
    /// Maps over the named inputs (zip mode, stop at the first failure).
    pub fn over<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MapOptions {
            over: names.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets the [`MapMode`].
    pub fn mode(mut self, mode: MapMode) -> Self {
        self.mode = mode;
        self
    }

    /// Uses [`MapMode::Product`].
    pub fn product(self) -> Self {
        self.mode(MapMode::Product)
    }

    /// Sets the [`ErrorPolicy`].
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// Uses [`ErrorPolicy::Continue`].
    pub fn continue_on_error(self) -> Self {
        self.on_error(ErrorPolicy::Continue)
    }

    /// Computes only these outputs (and what they need).
    pub fn outputs<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.outputs = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// With a cache: run items in batches of at most `items`, and write new
    /// results to the cache whenever `items` of them have accumulated or
    /// [`MapOptions::FLUSH_INTERVAL`] has passed since the last write (checked
    /// after each batch), and at the end. An interrupted run loses at most
    /// the results since the last write and the batches still running
    /// (default [`MapOptions::DEFAULT_FLUSH_EVERY`]).
    pub fn flush_every(mut self, items: usize) -> Self {
        self.flush_every = Some(items.max(1));
        self
    }

    /// Fails the map when the cache fails (a write to a full disk or a
    /// read-only directory, an unreadable store). By default a cache is an
    /// accelerator: the map completes without it, returns its results, and
    /// lists what failed in [`MapResult::cache_errors`] (and fires
    /// [`Callback::on_cache_error`](crate::Callback::on_cache_error) once).
    pub fn strict_cache(mut self) -> Self {
        self.strict_cache = true;
        self
    }

    /// The default batch size of cached runs.
    pub const DEFAULT_FLUSH_EVERY: usize = 65_536;

    /// New results wait at most about this long (plus one batch) before they
    /// are written to the cache.
    pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
}

impl<S: Into<String>, const N: usize> From<[S; N]> for MapOptions {
    fn from(names: [S; N]) -> Self {
        MapOptions::over(names)
    }
}

impl From<&str> for MapOptions {
    fn from(name: &str) -> Self {
        MapOptions::over([name])
    }
}

impl From<Vec<String>> for MapOptions {
    fn from(names: Vec<String>) -> Self {
        MapOptions::over(names)
    }
}

/// Options of one `run` call.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub(crate) outputs: Option<Vec<String>>,
}

impl RunOptions {
    /// Default options: every output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes only these outputs (and what they need).
    pub fn outputs<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.outputs = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

/// An item that failed in a `map` run with [`ErrorPolicy::Continue`].
#[derive(Debug)]
pub struct ItemFailure {
    /// The item's index.
    pub index: usize,
    /// The failure (names the node, pipeline path and item).
    pub error: Error,
}

impl ItemFailure {
    /// The failing node.
    pub fn node(&self) -> &str {
        self.error.node().unwrap_or("")
    }

    /// The failure as text.
    pub fn message(&self) -> String {
        self.error.to_string()
    }
}

/// One output column of a [`MapResult`]: a value per item (`None` for
/// failed items). A columnar engine hands over an Arrow array; values are
/// then decoded only when first asked for.
#[derive(Clone, Debug)]
pub struct Column {
    pub(crate) name: String,
    pub(crate) ty: ValueType,
    values: std::sync::OnceLock<Vec<Option<Value>>>,
    /// The column as Arrow (one row per item, failed items null) and the
    /// failed items, when an engine produced it that way.
    arrow: Option<(ArrayRef, Arc<Vec<bool>>)>,
}

impl Column {
    /// A column of values.
    pub(crate) fn from_values(name: String, ty: ValueType, values: Vec<Option<Value>>) -> Self {
        Column {
            name,
            ty,
            values: std::sync::OnceLock::from(values),
            arrow: None,
        }
    }

    /// A column held as Arrow: row `i` is item `i`; `failed[i]` marks items
    /// without a value.
    pub(crate) fn from_arrow(
        name: String,
        ty: ValueType,
        array: ArrayRef,
        failed: Arc<Vec<bool>>,
    ) -> Self {
        Column {
            name,
            ty,
            values: std::sync::OnceLock::new(),
            arrow: Some((array, failed)),
        }
    }

    /// Decodes the Arrow form (items that did not fail) into values.
    fn decode(&self) -> Vec<Option<Value>> {
        let Some((array, failed)) = &self.arrow else {
            return Vec::new();
        };
        let ok: Vec<u32> = (0..array.len())
            .filter(|&i| !failed.get(i).copied().unwrap_or(false))
            .map(|i| i as u32)
            .collect();
        let mut out: Vec<Option<Value>> = vec![None; array.len()];
        let decoded = if ok.len() == array.len() {
            self.ty.from_array(array.as_ref())
        } else {
            arrow_select::take::take(
                array.as_ref(),
                &arrow_array::UInt32Array::from(ok.clone()),
                None,
            )
            .map_err(|e| crate::value::ValueError {
                type_name: self.ty.name(),
                message: e.to_string(),
            })
            .and_then(|a| self.ty.from_array(a.as_ref()))
        };
        // The engine built the array from this type's values: decoding
        // cannot fail short of a bug, which shows as missing values.
        if let Ok(values) = decoded {
            for (i, v) in ok.into_iter().zip(values) {
                out[i as usize] = Some(v);
            }
        }
        out
    }

    /// The column as one Arrow array, failed items null (as the engine
    /// made it, or encoded from the values).
    pub(crate) fn to_array(&self) -> Result<ArrayRef, crate::value::ValueError> {
        if let Some((array, _)) = &self.arrow {
            return Ok(array.clone());
        }
        let values = self.values();
        let present: Vec<&Value> = values.iter().flatten().collect();
        let array = self.ty.to_array(&present)?;
        if present.len() == values.len() {
            return Ok(array);
        }
        let mut next = 0u32;
        let at: arrow_array::UInt32Array = values
            .iter()
            .map(|v| {
                v.as_ref().map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        arrow_select::take::take(array.as_ref(), &at, None).map_err(|e| crate::value::ValueError {
            type_name: self.ty.name(),
            message: e.to_string(),
        })
    }

    /// The values, taken out (decoded if held as Arrow).
    pub(crate) fn into_values(mut self) -> Vec<Option<Value>> {
        self.values();
        self.values.take().unwrap_or_default()
    }

    /// The output's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The output's type.
    pub fn value_type(&self) -> ValueType {
        self.ty
    }

    /// The values, type-erased (decoded on first use if the engine
    /// produced Arrow).
    pub fn values(&self) -> &[Option<Value>] {
        self.values.get_or_init(|| self.decode())
    }
}

/// The result of `map`: one column per output, items in input order, with
/// typed access ([`MapResult::values`], [`MapResult::values_opt`],
/// [`MapResult::column`]), rows, the failed items, the cache's failures,
/// and conversion to an Arrow `RecordBatch`.
///
/// ```
/// use hypernodes_core::{Inputs, Pipeline, node};
///
/// #[node(output = ("quotient", "remainder"))]
/// fn divmod(x: i64) -> (i64, i64) { (x / 3, x % 3) }
///
/// let r = Pipeline::new([divmod::node()]).unwrap()
///     .map(Inputs::new().with("x", vec![7i64, 9]), ["x"])
///     .unwrap();
/// assert_eq!(r.len(), 2);
/// assert_eq!(r.values::<i64>("quotient").unwrap(), [2, 3]);
/// let batch = r.to_record_batch().unwrap();
/// assert_eq!(batch.num_columns(), 2);
/// assert!(r.failures().is_empty() && r.cache_errors().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct MapResult {
    pub(crate) len: usize,
    pub(crate) columns: Vec<Column>,
    pub(crate) failures: Vec<ItemFailure>,
    pub(crate) cache_errors: Vec<Error>,
}

impl MapResult {
    /// What went wrong with the cache during the map, if anything
    /// ([`Error::Cache`] values, first failure first, at most
    /// [`MapResult::MAX_CACHE_ERRORS`]): the results are complete and
    /// right, but some may not have been stored. Empty when the cache
    /// worked (or with [`MapOptions::strict_cache`], where a failure fails
    /// the map).
    pub fn cache_errors(&self) -> &[Error] {
        &self.cache_errors
    }

    /// The most cache errors a result keeps.
    pub const MAX_CACHE_ERRORS: usize = 16;

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Output names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Items that failed (only with [`ErrorPolicy::Continue`]), by index.
    pub fn failures(&self) -> &[ItemFailure] {
        &self.failures
    }

    /// Whether item `index` completed.
    pub fn is_ok(&self, index: usize) -> bool {
        !self.failures.iter().any(|f| f.index == index)
    }

    fn find(&self, name: &str) -> Result<&Column, Error> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::UnknownOutput {
                name: name.to_string(),
                available: self.columns.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// A typed view of one output column.
    pub fn column<T: Any>(&self, name: &str) -> Result<TypedColumn<'_, T>, Error> {
        let c = self.find(name)?;
        if c.ty.type_id() != std::any::TypeId::of::<T>() {
            return Err(Error::OutputType {
                name: name.to_string(),
                requested: crate::value::readable_type_name::<T>(),
                actual: c.ty.name(),
            });
        }
        Ok(TypedColumn {
            values: c.values(),
            _t: PhantomData,
        })
    }

    /// One output column as owned values; an error if an item failed.
    pub fn values<T: Any + Clone>(&self, name: &str) -> Result<Vec<T>, Error> {
        let col = self.column::<T>(name)?;
        col.iter()
            .enumerate()
            .map(|(i, v)| {
                v.cloned().ok_or_else(|| Error::MissingValue {
                    column: name.to_string(),
                    index: i,
                })
            })
            .collect()
    }

    /// All values of output `name`, one per item, `None` for the items that
    /// failed (with [`ErrorPolicy::Continue`]; see [`MapResult::failures`]
    /// for why). [`MapResult::values`] is the shorthand for a column without
    /// failures.
    ///
    /// ```
    /// use hypernodes_core::{Inputs, MapOptions, Pipeline, node};
    ///
    /// #[node(output = "half")]
    /// fn halve(x: i64) -> Result<i64, String> {
    ///     if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
    /// }
    ///
    /// let r = Pipeline::new([halve::node()])
    ///     .unwrap()
    ///     .map(Inputs::new().with("x", vec![2i64, 3, 4]), MapOptions::over(["x"]).continue_on_error())
    ///     .unwrap();
    /// assert_eq!(r.values_opt::<i64>("half").unwrap(), [Some(1), None, Some(2)]);
    /// assert_eq!(r.failures()[0].index, 1);
    /// assert!(r.values::<i64>("half").is_err());
    /// ```
    pub fn values_opt<T: Any + Clone>(&self, name: &str) -> Result<Vec<Option<T>>, Error> {
        Ok(self.column::<T>(name)?.iter().map(|v| v.cloned()).collect())
    }

    /// Item `index` as a row.
    pub fn row(&self, index: usize) -> Option<Row<'_>> {
        (index < self.len).then_some(Row {
            result: self,
            index,
        })
    }

    /// Iterates over items as rows.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.len).map(move |index| Row {
            result: self,
            index,
        })
    }

    /// The result as an Arrow record batch (failed items become nulls).
    /// Every output must have an Arrow form.
    pub fn to_record_batch(&self) -> Result<RecordBatch, Error> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let arrow_err = |source| Error::Arrow {
                column: c.name.clone(),
                source,
            };
            if let Some((array, failed)) = &c.arrow {
                let nullable = failed.iter().any(|f| *f) || array.null_count() > 0;
                let field = c.ty.field(&c.name).ok_or_else(|| {
                    arrow_err(crate::value::ValueError {
                        type_name: c.ty.name(),
                        message: "the type has no Arrow form".into(),
                    })
                })?;
                fields.push(Field::new(
                    &c.name,
                    field.data_type().clone(),
                    field.is_nullable() || nullable,
                ));
                arrays.push(array.clone());
                continue;
            }
            let values = c.values();
            let present: Vec<&Value> = values.iter().flatten().collect();
            let mut array = c.ty.to_array(&present).map_err(arrow_err)?;
            let mut field = c.ty.field(&c.name).ok_or_else(|| {
                arrow_err(crate::value::ValueError {
                    type_name: c.ty.name(),
                    message: "the type has no Arrow form".into(),
                })
            })?;
            if present.len() < values.len() {
                array = spread_with_nulls(array.as_ref(), values.iter().map(Option::is_some))
                    .map_err(|e| {
                        arrow_err(crate::value::ValueError {
                            type_name: c.ty.name(),
                            message: e.to_string(),
                        })
                    })?;
                field = Field::new(&c.name, field.data_type().clone(), true);
            }
            fields.push(field);
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(self.len)),
        )
        .map_err(|e| Error::Arrow {
            column: String::new(),
            source: crate::value::ValueError {
                type_name: "RecordBatch",
                message: e.to_string(),
            },
        })
    }
}

/// A typed view of a [`MapResult`] column.
pub struct TypedColumn<'a, T> {
    values: &'a [Option<Value>],
    _t: PhantomData<T>,
}

impl<'a, T: Any> TypedColumn<'a, T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of item `index` (`None` if it failed or is out of range).
    pub fn get(&self, index: usize) -> Option<&'a T> {
        self.values
            .get(index)?
            .as_ref()
            .and_then(|v| v.downcast_ref())
    }

    /// The values in item order (`None` for failed items).
    pub fn iter(&self) -> impl Iterator<Item = Option<&'a T>> + '_ {
        self.values
            .iter()
            .map(|v| v.as_ref().and_then(|v| v.downcast_ref()))
    }
}

/// One item of a [`MapResult`].
#[derive(Clone, Copy)]
pub struct Row<'a> {
    result: &'a MapResult,
    index: usize,
}

impl<'a> Row<'a> {
    /// The item's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the item completed.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok(self.index)
    }

    /// One output of this item as `T`.
    pub fn get<T: Any>(&self, name: &str) -> Result<&'a T, Error> {
        self.result
            .column::<T>(name)?
            .get(self.index)
            .ok_or_else(|| Error::MissingValue {
                column: name.to_string(),
                index: self.index,
            })
    }
}
