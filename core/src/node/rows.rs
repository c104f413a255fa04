//! Typed row loops over Arrow columns: how columnar engines call a node
//! written for one item without a dynamic call per row.
//!
//! For every synchronous function, `#[node]` generates a [`RowsFn`] beside
//! the type-erased row function: it decodes each input column once into its
//! Rust type (a `&str` parameter reads the Arrow string column in place),
//! calls the user's function in a plain loop with the node's retries and a
//! panic guard per row, and encodes each output into one Arrow array. A
//! columnar engine calls it once per batch of rows to compute. Rows that
//! fail are left out of the output arrays and reported as [`RowFailure`]s,
//! so one bad row fails that row only.
//!
//! Inputs without an Arrow form (resources such as a model) can only be
//! fixed inputs: the loop borrows the one shared value for every row.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, StringArray};

use crate::error::NodeError;
use crate::value::{ArrowValue, Value, ValueError};

/// One argument of a [`RowsFn`] call, in the node's input order.
#[derive(Clone, Copy, Debug)]
pub enum RowsArg<'a> {
    /// One value per row.
    Column(&'a ArrayRef),
    /// One value shared by every row (a fixed input).
    Fixed(&'a Value),
}

/// A row of a [`RowsFn`] call that failed.
#[derive(Debug)]
pub struct RowFailure {
    /// The row's index in the call.
    pub row: usize,
    /// How many times the node was tried on it (1 + retries).
    pub attempts: u32,
    /// The last error.
    pub error: NodeError,
}

/// A failed attempt of a [`RowsFn`] call that was tried again (what the
/// row path reports as a retry event).
#[derive(Debug)]
pub struct RowRetry {
    /// The row's index in the call.
    pub row: usize,
    /// The attempt that failed, counting from 1.
    pub attempt: u32,
    /// Its error.
    pub error: NodeError,
}

/// What a [`RowsFn`] call returns.
#[derive(Debug, Default)]
pub struct RowsOut {
    /// One array per output port, holding the rows that succeeded, in order.
    pub columns: Vec<ArrayRef>,
    /// The rows that failed, in order.
    pub failures: Vec<RowFailure>,
    /// The failed attempts that were retried, in row order (empty for a
    /// node without retries).
    pub retries: Vec<RowRetry>,
}

/// A node's typed row loop (see the module docs): `(arguments, rows,
/// retries)`, retries being the node's (each row is tried up to
/// `1 + retries` times). An
/// `Err` means the call as a whole could not run (an argument of the wrong
/// type, an output without an Arrow form); per-row failures are in
/// [`RowsOut::failures`].
pub type RowsFn =
    Arc<dyn Fn(&[RowsArg<'_>], usize, u32) -> Result<RowsOut, NodeError> + Send + Sync>;

fn wrong_input(input: &str, expected: &'static str, actual: &'static str) -> NodeError {
    NodeError::InputType {
        input: input.to_string(),
        expected,
        actual,
    }
}

fn conversion(input: &str, e: ValueError) -> NodeError {
    NodeError::User(format!("input `{input}`: {e}").into())
}

/// The values of one parameter over a call's rows.
#[doc(hidden)]
pub enum Source<'a, S> {
    Column(Vec<S>),
    Fixed(&'a S),
}

impl<'a, S: 'static> Source<'a, S> {
    /// Decodes a column with `decode` or borrows the fixed value.
    pub fn new(
        arg: RowsArg<'a>,
        input: &str,
        decode: impl FnOnce(&dyn Array) -> Result<Vec<S>, ValueError>,
    ) -> Result<Self, NodeError> {
        match arg {
            RowsArg::Column(a) => decode(a.as_ref())
                .map(Source::Column)
                .map_err(|e| conversion(input, e)),
            RowsArg::Fixed(v) => {
                let v = v.resolved().map_err(NodeError::user)?;
                v.downcast_ref::<S>().map(Source::Fixed).ok_or_else(|| {
                    wrong_input(
                        input,
                        crate::value::readable_type_name::<S>(),
                        v.type_name(),
                    )
                })
            }
        }
    }

    /// The value of row `i`.
    #[inline]
    pub fn at(&self, i: usize) -> &S {
        match self {
            Source::Column(v) => &v[i],
            Source::Fixed(v) => v,
        }
    }
}

/// A `&str` parameter: read from the Arrow string column in place.
#[doc(hidden)]
pub enum StrSource<'a> {
    Array(&'a StringArray),
    Owned(Vec<String>),
    Fixed(&'a str),
}

impl<'a> StrSource<'a> {
    /// Borrows the column (or the fixed `String`).
    pub fn new(arg: RowsArg<'a>, input: &str) -> Result<Self, NodeError> {
        match arg {
            RowsArg::Column(a) => match a.as_string_opt::<i32>() {
                Some(s) if s.null_count() == 0 => Ok(StrSource::Array(s)),
                _ => String::from_array(a.as_ref())
                    .map(StrSource::Owned)
                    .map_err(|e| conversion(input, e)),
            },
            RowsArg::Fixed(v) => v
                .downcast_ref::<String>()
                .map(|s| StrSource::Fixed(s.as_str()))
                .ok_or_else(|| wrong_input(input, "String", v.type_name())),
        }
    }

    /// The string of row `i`.
    #[inline]
    pub fn at(&self, i: usize) -> &str {
        match self {
            StrSource::Array(a) => a.value(i),
            StrSource::Owned(v) => &v[i],
            StrSource::Fixed(s) => s,
        }
    }
}

/// Picks a type's Arrow conversion when it has one (autoref
/// specialization, as in `value_type!`).
#[doc(hidden)]
pub struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(PhantomData)
    }
}

#[doc(hidden)]
pub trait ArrowRows {
    type Item;
    /// The Arrow field of the type, named `name`.
    fn field(&self, name: &str) -> Option<arrow_schema::Field>;
    fn decode(&self, array: &dyn Array) -> Result<Vec<Self::Item>, ValueError>;
    fn encode_refs(&self, values: &[&Self::Item]) -> Result<ArrayRef, ValueError>;
    fn encode(&self, values: &[Self::Item]) -> Result<ArrayRef, ValueError> {
        let refs: Vec<&Self::Item> = values.iter().collect();
        self.encode_refs(&refs)
    }
}

impl<T: ArrowValue> ArrowRows for &Probe<T> {
    type Item = T;
    fn field(&self, name: &str) -> Option<arrow_schema::Field> {
        Some(T::field(name))
    }
    fn decode(&self, array: &dyn Array) -> Result<Vec<T>, ValueError> {
        T::from_array(array)
    }
    fn encode_refs(&self, values: &[&T]) -> Result<ArrayRef, ValueError> {
        T::to_array(values)
    }
}

#[doc(hidden)]
pub trait OpaqueRows {
    type Item;
    fn field(&self, _name: &str) -> Option<arrow_schema::Field> {
        None
    }
    fn decode(&self, array: &dyn Array) -> Result<Vec<Self::Item>, ValueError>;
    fn encode_refs(&self, values: &[&Self::Item]) -> Result<ArrayRef, ValueError>;
    fn encode(&self, values: &[Self::Item]) -> Result<ArrayRef, ValueError> {
        let refs: Vec<&Self::Item> = values.iter().collect();
        self.encode_refs(&refs)
    }
}

impl<T> OpaqueRows for Probe<T> {
    type Item = T;
    fn decode(&self, _: &dyn Array) -> Result<Vec<T>, ValueError> {
        Err(ValueError::new::<T>(
            "the type has no Arrow form; pass it as a fixed input",
        ))
    }
    fn encode_refs(&self, _: &[&T]) -> Result<ArrayRef, ValueError> {
        Err(ValueError::new::<T>("the type has no Arrow form"))
    }
}

/// Runs `f` once per attempt (1 + `retries`) until it succeeds, catching
/// panics; each failed attempt that is tried again goes to `retried` (with
/// its number), and the failure of the last attempt is returned with the
/// attempts.
#[doc(hidden)]
#[inline]
pub fn attempt<T>(
    retries: u32,
    mut retried: impl FnMut(u32, NodeError),
    mut f: impl FnMut() -> Result<T, NodeError>,
) -> Result<T, (u32, NodeError)> {
    let mut attempts = 1;
    loop {
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f)) {
            Ok(r) => r,
            Err(payload) => Err(NodeError::from_panic(payload)),
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if attempts <= retries => {
                retried(attempts, e);
                attempts += 1;
            }
            Err(e) => return Err((attempts, e)),
        }
    }
}

/// Encodes one output's values, naming the output on failure.
#[doc(hidden)]
pub fn encoded(output: &str, r: Result<ArrayRef, ValueError>) -> Result<ArrayRef, NodeError> {
    r.map_err(|e| NodeError::User(format!("output `{output}`: {e}").into()))
}
