//! The columnar rows that go into and come out of a cache: stored rows
//! ([`CacheRows`]), lookups' hits ([`Hits`]) and lent batches ([`Located`]).

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, new_empty_array};
use arrow_schema::DataType;

use crate::signature::{Signature, hash_column, signature_array};
use crate::value::Value;

use super::{CacheError, CacheKey, encode_error, signature_at};

/// Rows of one node version's results, column by column: what
/// [`Cache::store`](super::Cache::store) takes and what [`Cache::lookup`](super::Cache::lookup) returns.
#[derive(Clone, Debug)]
pub struct CacheRows {
    /// One node signature per row.
    pub signatures: Vec<Signature>,
    /// One array per output (in the key's output order), one row per signature.
    pub columns: Vec<ArrayRef>,
    /// Per output, the value hash of each row (as [`hash_array`](crate::signature::hash_array)
    /// computes it), as a `FixedSizeBinary(32)` array.
    pub hashes: Vec<ArrayRef>,
}

impl CacheRows {
    /// No rows, with the key's output types (`Null` for outputs with no
    /// Arrow form).
    pub fn empty(key: &CacheKey) -> Self {
        let columns = key
            .outputs
            .iter()
            .map(|(_, ty)| new_empty_array(&ty.data_type().unwrap_or(DataType::Null)))
            .collect();
        CacheRows {
            signatures: Vec::new(),
            columns,
            hashes: (0..key.outputs.len())
                .map(|_| signature_array(&[]))
                .collect(),
        }
    }

    /// The value hash of output `output` in row `row`.
    pub fn hash(&self, output: usize, row: usize) -> Signature {
        signature_at(self.hashes[output].as_fixed_size_binary(), row)
    }

    /// Rows from per-output arrays; the value hashes are computed here.
    pub fn from_columns(
        key: &CacheKey,
        signatures: Vec<Signature>,
        columns: Vec<ArrayRef>,
    ) -> Result<Self, CacheError> {
        let hashes = columns
            .iter()
            .zip(&key.outputs)
            .map(|(c, (name, _))| hash_column(c).map_err(|e| encode_error(key, name, e)))
            .collect::<Result<_, _>>()?;
        let rows = CacheRows {
            signatures,
            columns,
            hashes,
        };
        rows.check(key)?;
        Ok(rows)
    }

    /// Rows from values: each entry is a signature and the outputs in order.
    pub fn from_values(
        key: &CacheKey,
        entries: &[(Signature, Vec<Value>)],
    ) -> Result<Self, CacheError> {
        let columns = key
            .outputs
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let values = entries
                    .iter()
                    .map(|(_, v)| {
                        v.get(i)
                            .ok_or_else(|| encode_error(key, name, "missing from an entry"))
                    })
                    .collect::<Result<Vec<&Value>, _>>()?;
                ty.to_array(&values).map_err(|e| encode_error(key, name, e))
            })
            .collect::<Result<_, _>>()?;
        Self::from_columns(key, entries.iter().map(|(s, _)| *s).collect(), columns)
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Decodes output `output` of every row into values.
    pub fn values(&self, key: &CacheKey, output: usize) -> Result<Vec<Value>, CacheError> {
        let (name, ty) = key
            .outputs
            .get(output)
            .ok_or_else(|| encode_error(key, "?", format!("no output number {output}")))?;
        let column = self
            .columns
            .get(output)
            .ok_or_else(|| encode_error(key, name, "no such column"))?;
        ty.from_array(column.as_ref())
            .map_err(|e| encode_error(key, name, e))
    }

    /// Checks the shape against the key: one column and one hash array per
    /// output, of the output's data type and of the right length.
    pub(crate) fn check(&self, key: &CacheKey) -> Result<(), CacheError> {
        if self.columns.len() != key.outputs.len() || self.hashes.len() != key.outputs.len() {
            return Err(encode_error(
                key,
                "*",
                format!(
                    "{} columns and {} hash arrays for {} outputs",
                    self.columns.len(),
                    self.hashes.len(),
                    key.outputs.len()
                ),
            ));
        }
        for ((column, hashes), (name, ty)) in
            self.columns.iter().zip(&self.hashes).zip(&key.outputs)
        {
            if Some(column.data_type().clone()) != ty.data_type() {
                return Err(encode_error(
                    key,
                    name,
                    format!(
                        "column of type {} for an output of type {}",
                        column.data_type(),
                        ty.name()
                    ),
                ));
            }
            if hashes.data_type() != &DataType::FixedSizeBinary(32) {
                return Err(encode_error(
                    key,
                    name,
                    format!("hashes of type {}", hashes.data_type()),
                ));
            }
            if column.len() != self.len() || hashes.len() != self.len() {
                return Err(encode_error(
                    key,
                    name,
                    format!(
                        "{} values and {} hashes for {} signatures",
                        column.len(),
                        hashes.len(),
                        self.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Stored rows lent in place by [`Cache::locate`](super::Cache::locate).
#[derive(Clone, Debug, Default)]
pub struct Located {
    /// Per lent batch, one array per output (in the key's output order),
    /// whole, as stored.
    pub columns: Vec<Vec<ArrayRef>>,
    /// Per lent batch, each output's value hashes (`FixedSizeBinary(32)`).
    pub hashes: Vec<Vec<ArrayRef>>,
    /// Per requested signature, its lent batch and row there, if stored.
    pub rows: Vec<Option<(usize, usize)>>,
}

/// What [`Cache::lookup`](super::Cache::lookup) found.
#[derive(Clone, Debug)]
pub struct Hits {
    /// For each requested signature, its row in `found`, if cached.
    pub rows: Vec<Option<usize>>,
    /// The cached rows, in the order they were requested.
    pub found: CacheRows,
}

impl Hits {
    /// Nothing found for `n` signatures.
    pub fn none(key: &CacheKey, n: usize) -> Self {
        Hits {
            rows: vec![None; n],
            found: CacheRows::empty(key),
        }
    }

    /// For each requested signature, its outputs decoded into values, if
    /// cached (convenient for inspection; engines use the columns).
    pub fn values(&self, key: &CacheKey) -> Result<Vec<Option<Vec<Value>>>, CacheError> {
        let columns = (0..key.outputs.len())
            .map(|o| self.found.values(key, o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .rows
            .iter()
            .map(|r| r.map(|r| columns.iter().map(|c| c[r].clone()).collect()))
            .collect())
    }
}
