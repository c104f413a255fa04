//! Arrow helpers the engines and the cache share, with no other part of
//! the crate beneath them: picking rows out of several arrays into one.

use arrow_array::ArrayRef;

/// A run of rows: the first row's pick and the run's length.
type Run = (Option<(usize, usize)>, usize);

/// Which row of which source each row of a combined array takes: row `r`
/// is row `i` of source `s` for `Some((s, i))`, or null for `None`. Built
/// once and applied to every column of the same sources.
///
/// Rows that come mostly in runs (cache hits in stored order with a few
/// fresh rows between them) are copied a run at a time; scattered rows are
/// interleaved row by row.
#[derive(Clone, Debug)]
pub struct RowPicks {
    len: usize,
    /// `(first pick, run length)` per run of consecutive rows, when runs
    /// are long enough to copy whole.
    runs: Option<Vec<Run>>,
    /// Every row's pick, for scattered rows.
    rows: Vec<Option<(usize, usize)>>,
    nulls: bool,
}

impl RowPicks {
    /// The picks, row by row.
    pub fn new(picks: Vec<Option<(usize, usize)>>) -> RowPicks {
        let mut runs: Vec<Run> = Vec::new();
        for &p in &picks {
            if let Some((first, len)) = runs.last_mut() {
                let next = match (*first, p) {
                    (Some((s0, i0)), Some((s1, i1))) => s0 == s1 && i1 == i0 + *len,
                    (None, None) => true,
                    _ => false,
                };
                if next {
                    *len += 1;
                    continue;
                }
            }
            runs.push((p, 1));
        }
        let nulls = runs.iter().any(|(p, _)| p.is_none());
        let long = runs.len() * 4 <= picks.len();
        RowPicks {
            len: picks.len(),
            runs: long.then_some(runs),
            rows: if long { Vec::new() } else { picks },
            nulls,
        }
    }

    /// Whether the rows come in runs long enough to be copied run by run.
    pub fn in_runs(&self) -> bool {
        self.runs.is_some()
    }

    /// The combined array of `sources` (all of one data type).
    pub fn apply(
        &self,
        sources: &[&dyn arrow_array::Array],
    ) -> Result<ArrayRef, arrow_schema::ArrowError> {
        let invalid = |m: String| arrow_schema::ArrowError::InvalidArgumentError(m);
        let Some(first) = sources.first() else {
            return Err(invalid("picking rows needs at least one source".into()));
        };
        let check = |s: usize, i: usize, len: usize| match sources.get(s) {
            Some(a) if i + len <= a.len() => Ok(()),
            _ => Err(invalid(format!(
                "no rows {i}..{} in source {s} of {}",
                i + len,
                sources.len()
            ))),
        };
        if self.len == 0 {
            return Ok(first.slice(0, 0));
        }
        let Some(runs) = &self.runs else {
            for &(s, i) in self.rows.iter().flatten() {
                check(s, i, 1)?;
            }
            let null = arrow_array::new_null_array(first.data_type(), 1);
            let mut all: Vec<&dyn arrow_array::Array> = sources.to_vec();
            all.push(null.as_ref());
            let null_source = sources.len();
            let indices: Vec<(usize, usize)> = self
                .rows
                .iter()
                .map(|p| p.unwrap_or((null_source, 0)))
                .collect();
            return arrow_select::interleave::interleave(&all, &indices);
        };
        for &(p, len) in runs {
            if let Some((s, i)) = p {
                check(s, i, len)?;
            }
        }
        let data: Vec<arrow_data::ArrayData> = sources.iter().map(|a| a.to_data()).collect();
        let nulls = self.nulls || data.iter().any(|d| d.nulls().is_some());
        let mut out =
            arrow_data::transform::MutableArrayData::new(data.iter().collect(), nulls, self.len);
        for &(p, len) in runs {
            match p {
                Some((s, i)) => out.try_extend(s, i, i + len)?,
                None => out.try_extend_nulls(len)?,
            }
        }
        Ok(arrow_array::make_array(out.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, StringArray};

    fn texts(prefix: &str, n: usize) -> StringArray {
        (0..n).map(|i| Some(format!("{prefix}{i}"))).collect()
    }

    fn expected(picks: &[Option<(usize, usize)>]) -> StringArray {
        picks
            .iter()
            .map(|p| p.map(|(s, i)| format!("{}{i}", ["a", "b"][s])))
            .collect()
    }

    #[test]
    fn pick_rows_copies_runs_and_scattered_rows_alike() {
        let (a, b) = (texts("a", 100), texts("b", 10));
        let sources: [&dyn Array; 2] = [&a, &b];
        // Long runs with a few picks from the other source and nulls between.
        let mut runs: Vec<Option<(usize, usize)>> = (0..90).map(|i| Some((0, i))).collect();
        runs.insert(30, Some((1, 4)));
        runs.insert(60, None);
        runs.insert(61, None);
        runs.push(Some((1, 9)));
        // Scattered: every row from elsewhere.
        let scattered: Vec<Option<(usize, usize)>> = (0..40)
            .map(|i| match i % 3 {
                0 => Some((0, (i * 7) % 100)),
                1 => Some((1, i % 10)),
                _ => None,
            })
            .collect();
        for picks in [runs, scattered, vec![]] {
            let out = RowPicks::new(picks.clone()).apply(&sources).unwrap();
            assert_eq!(
                arrow_array::cast::AsArray::as_string::<i32>(out.as_ref()),
                &expected(&picks)
            );
        }
        let pick = |p: Vec<Option<(usize, usize)>>| RowPicks::new(p).apply(&sources);
        let err = pick(vec![Some((1, 10))]).unwrap_err();
        assert!(
            err.to_string().contains("no rows 10..11 in source 1"),
            "{err}"
        );
        let mut long: Vec<_> = (0..8).map(|i| Some((1, 5 + i))).collect();
        long.extend([None, None]);
        let err = pick(long).unwrap_err();
        assert!(
            err.to_string().contains("no rows 5..13 in source 1"),
            "{err}"
        );
        assert!(pick(vec![Some((2, 0))]).is_err());
    }
}
