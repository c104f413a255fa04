//! Nodes from typed closures built at run time.
//!
//! [`NodeBuilder::typed`](crate::node::NodeBuilder::typed) takes an
//! ordinary closure over the node's inputs, `|x: i64, s: String| x + 1` or
//! a fallible `|x: i64| -> Result<i64, String> { .. }`, instead of a body
//! over type-erased [`Args`]. From the one closure it builds both what the
//! row engines call per item and the typed row loop that columnar engines
//! call per batch (as `#[node]` generates for functions): each input column
//! is decoded once into its Rust type, the closure runs in a plain loop with
//! the node's retries and a panic guard per row, and the output is encoded
//! once. Inputs and the output must have an Arrow form.

use crate::error::{BoxError, NodeError};
use crate::node::args::{Args, Outs};
use crate::node::rows::{RowFailure, RowRetry, RowsArg, RowsOut, Source, attempt, encoded};
use crate::value::{ArrowValue, Value, ValueType};

/// The closure returns the output itself (a marker of [`TypedFunc`]).
pub struct ReturnsValue;

/// The closure returns `Result<output, error>` (a marker of [`TypedFunc`]).
pub struct ReturnsResult;

/// A closure a node can be built from with
/// [`NodeBuilder::typed`](crate::node::NodeBuilder::typed): `Fn(A, B, ..)
/// -> R` or `Fn(A, B, ..) -> Result<R, E>` with one to four inputs, where
/// the inputs and `R` implement [`ArrowValue`] and `E` converts into a
/// boxed error. `M` only tells the forms apart; it is inferred.
pub trait TypedFunc<M>: Send + Sync + 'static {
    /// The closure's parameter types, in order.
    fn input_types() -> Vec<ValueType>;

    /// The type of its output.
    fn output_type() -> ValueType;

    /// Calls the closure on one item's arguments.
    fn call(&self, args: &Args<'_>) -> Result<Outs, NodeError>;

    /// Calls the closure on `rows` rows of columns (`inputs` names them in
    /// errors, `output` names the output), each row tried up to
    /// `1 + retries` times.
    fn call_rows(
        &self,
        inputs: &[String],
        output: &str,
        columns: &[RowsArg<'_>],
        rows: usize,
        retries: u32,
    ) -> Result<RowsOut, NodeError>;
}

/// What a closure returned, as the node's result.
trait Returned<R> {
    fn into_result(self) -> Result<R, NodeError>;
}

impl<R> Returned<R> for (ReturnsValue, R) {
    #[inline]
    fn into_result(self) -> Result<R, NodeError> {
        Ok(self.1)
    }
}

impl<R, E: Into<BoxError>> Returned<R> for (ReturnsResult, Result<R, E>) {
    #[inline]
    fn into_result(self) -> Result<R, NodeError> {
        self.1.map_err(|e| NodeError::User(e.into()))
    }
}

/// One node output from a value.
fn one_output<R: ArrowValue>(r: R) -> Outs {
    let mut outs = Outs::new();
    outs.push(Value::new(r));
    outs
}

/// The typed row loop: decodes, calls per row with retries, encodes.
fn row_loop<R: ArrowValue>(
    output: &str,
    rows: usize,
    retries: u32,
    mut call: impl FnMut(usize) -> Result<R, NodeError>,
) -> Result<RowsOut, NodeError> {
    let mut values: Vec<R> = Vec::with_capacity(rows);
    let mut failures = Vec::new();
    let mut retried = Vec::new();
    for row in 0..rows {
        let again = |attempt, error| {
            retried.push(RowRetry {
                row,
                attempt,
                error,
            })
        };
        match attempt(retries, again, || call(row)) {
            Ok(v) => values.push(v),
            Err((attempts, error)) => failures.push(RowFailure {
                row,
                attempts,
                error,
            }),
        }
    }
    let refs: Vec<&R> = values.iter().collect();
    Ok(RowsOut {
        columns: vec![encoded(output, R::to_array(&refs))?],
        failures,
        retries: retried,
    })
}

fn arity_error(got: usize, want: usize) -> NodeError {
    NodeError::user(format!(
        "the row loop got {got} arguments for {want} inputs"
    ))
}

macro_rules! typed_func {
    ($n:literal; $($a:ident $i:tt),+) => {
        impl<F, R, $($a),+> TypedFunc<(ReturnsValue, fn($($a),+) -> R)> for F
        where
            F: Fn($($a),+) -> R + Send + Sync + 'static,
            R: ArrowValue,
            $($a: ArrowValue),+
        {
            typed_func!(@body ReturnsValue; $n; R; $($a $i),+);
        }

        impl<F, R, E, $($a),+> TypedFunc<(ReturnsResult, fn($($a),+) -> Result<R, E>)> for F
        where
            F: Fn($($a),+) -> Result<R, E> + Send + Sync + 'static,
            R: ArrowValue,
            E: Into<BoxError>,
            $($a: ArrowValue),+
        {
            typed_func!(@body ReturnsResult; $n; R; $($a $i),+);
        }
    };
    (@body $form:ident; $n:literal; $r:ident; $($a:ident $i:tt),+) => {
        fn input_types() -> Vec<ValueType> {
            vec![$(ValueType::arrow::<$a>()),+]
        }

        fn output_type() -> ValueType {
            ValueType::arrow::<$r>()
        }

        fn call(&self, args: &Args<'_>) -> Result<Outs, NodeError> {
            let r = ($form, self($(args.get::<$a>($i)?.clone()),+)).into_result()?;
            Ok(one_output(r))
        }

        fn call_rows(
            &self,
            inputs: &[String],
            output: &str,
            columns: &[RowsArg<'_>],
            rows: usize,
            retries: u32,
        ) -> Result<RowsOut, NodeError> {
            if columns.len() != $n || inputs.len() != $n {
                return Err(arity_error(columns.len(), $n));
            }
            let sources = ($(
                Source::<$a>::new(columns[$i], &inputs[$i], |c| $a::from_array(c))?,
            )+);
            row_loop(output, rows, retries, |row| {
                ($form, self($(sources.$i.at(row).clone()),+)).into_result()
            })
        }
    };
}

typed_func!(1; A 0);
typed_func!(2; A 0, B 1);
typed_func!(3; A 0, B 1, C 2);
typed_func!(4; A 0, B 1, C 2, D 3);
