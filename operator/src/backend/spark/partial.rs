//! A task's partial profile from Spark's answers: the same [`ColumnState`]s the engine would have
//! made from the same rows, so that the partial merges with the engine's own.
//!
//! Moments: Spark gives `var_pop`, `skewness` and `kurtosis` (computed from the same central
//! moments, by the same update formulas); with n values, M2 = var_pop·n, M3 = g1·M2^1.5/√n and
//! M4 = (g2 + 3)·M2²/n, where g1 = √n·M3/M2^1.5 and g2 = n·M4/M2² − 3 are Spark's definitions.
//! A constant column has no skewness or kurtosis in Spark (null): its M3 and M4 are 0.
//!
//! What Spark cannot compute is recorded in [`PartialProfile::unavailable`], never filled in:
//! pattern matches of strings (the engine's own matchers) and duplicate rows (the engine's
//! whole-row hashes).

use super::SparkError;
use super::query::{ColumnQuery, Kind, TaskQuery};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use datasketches::frequencies::{FrequentItemValue, FrequentItemsSketch};
use datasketches::hll::{HllSketch, HllType};
use datasketches::kll::KllSketch;
use std::collections::BTreeSet;
use truthound_profile::PartialProfile;
use truthound_profile::kernel::column::float_key;
use truthound_profile::kernel::{ColumnState, ColumnStats};
use truthound_profile::partial::Unavailable;
use truthound_profile::plan::{Plan, Task};
use truthound_profile::stats::values::ValueParams;
use truthound_profile::stats::{Moments, NeumaierSum, Quantiles, ValueKey, Values};

/// Why a statistic is missing from a Spark partial.
pub const REASON: &str = "not computed by the spark backend";

/// The exact value counts of a column, as Spark's group-by returned them.
#[derive(Debug, Clone)]
pub enum Counts {
    Int(Vec<(i64, u64)>),
    Float(Vec<(f64, u64)>),
    String(Vec<(String, u64)>),
}

/// The one row of a task's aggregation.
pub struct Row<'a> {
    batch: &'a RecordBatch,
    url: &'a str,
}

impl<'a> Row<'a> {
    pub fn new(batches: &'a [RecordBatch], url: &'a str) -> Result<Row<'a>, SparkError> {
        let batch =
            batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .ok_or_else(|| SparkError::Protocol {
                    url: url.to_string(),
                    detail: "the aggregation returned no row".into(),
                })?;
        Ok(Row { batch, url })
    }

    fn column(&self, name: &str) -> Result<&ArrayRef, SparkError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| self.protocol(format!("the aggregation has no field {name}")))
    }

    fn protocol(&self, detail: String) -> SparkError {
        SparkError::Protocol {
            url: self.url.to_string(),
            detail,
        }
    }

    /// An integer field (counts, min/max, lengths, exact sums); `None` when null.
    pub fn int(&self, name: &str) -> Result<Option<i128>, SparkError> {
        let a = self.column(name)?;
        if a.is_null(0) {
            return Ok(None);
        }
        Ok(Some(match a.data_type() {
            DataType::Int64 => i128::from(a.as_primitive::<Int64Type>().value(0)),
            DataType::Int32 => i128::from(a.as_primitive::<Int32Type>().value(0)),
            DataType::Decimal128(_, 0) => a.as_primitive::<Decimal128Type>().value(0),
            t => return Err(self.protocol(format!("{name} is {t}, not an integer"))),
        }))
    }

    pub fn count(&self, name: &str) -> Result<u64, SparkError> {
        Ok(self.int(name)?.unwrap_or(0).max(0) as u64)
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, SparkError> {
        self.int(name)?
            .map(|v| i64::try_from(v).map_err(|_| self.protocol(format!("{name} = {v} overflows"))))
            .transpose()
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, SparkError> {
        let a = self.column(name)?;
        if a.is_null(0) {
            return Ok(None);
        }
        match a.data_type() {
            DataType::Float64 => Ok(Some(a.as_primitive::<Float64Type>().value(0))),
            t => Err(self.protocol(format!("{name} is {t}, not a double"))),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, SparkError> {
        let a = self.column(name)?;
        if a.is_null(0) {
            return Ok(None);
        }
        match a.data_type() {
            DataType::Utf8 => Ok(Some(a.as_string::<i32>().value(0).to_string())),
            DataType::LargeUtf8 => Ok(Some(a.as_string::<i64>().value(0).to_string())),
            DataType::Utf8View => Ok(Some(a.as_string_view().value(0).to_string())),
            t => Err(self.protocol(format!("{name} is {t}, not a string"))),
        }
    }

    pub fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>, SparkError> {
        let a = self.column(name)?;
        if a.is_null(0) {
            return Ok(None);
        }
        match a.data_type() {
            DataType::Binary => Ok(Some(a.as_binary::<i32>().value(0).to_vec())),
            DataType::LargeBinary => Ok(Some(a.as_binary::<i64>().value(0).to_vec())),
            DataType::BinaryView => Ok(Some(a.as_binary_view().value(0).to_vec())),
            t => Err(self.protocol(format!("{name} is {t}, not binary"))),
        }
    }
}

/// Exact counts from the answer of [`super::query::value_counts_sql`] (fields `k`, `n`).
pub fn counts_of(
    c: &ColumnQuery,
    batches: &[RecordBatch],
    url: &str,
) -> Result<Counts, SparkError> {
    let bad = |detail: String| SparkError::Protocol {
        url: url.to_string(),
        detail: format!("value counts of `{}`: {detail}", c.name),
    };
    let mut ints = Vec::new();
    let mut floats = Vec::new();
    let mut strings = Vec::new();
    for b in batches {
        let (k, n) = match (b.column_by_name("k"), b.column_by_name("n")) {
            (Some(k), Some(n)) => (k, n),
            _ => return Err(bad("no fields k and n".into())),
        };
        let n = n
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad(format!("count is {}", n.data_type())))?;
        for i in 0..b.num_rows() {
            if k.is_null(i) {
                continue;
            }
            let count = n.value(i).max(0) as u64;
            match k.data_type() {
                DataType::Int64 => ints.push((k.as_primitive::<Int64Type>().value(i), count)),
                DataType::Int32 => {
                    ints.push((i64::from(k.as_primitive::<Int32Type>().value(i)), count))
                }
                DataType::Float64 => floats.push((k.as_primitive::<Float64Type>().value(i), count)),
                DataType::Utf8 => strings.push((k.as_string::<i32>().value(i).to_string(), count)),
                DataType::LargeUtf8 => {
                    strings.push((k.as_string::<i64>().value(i).to_string(), count))
                }
                DataType::Utf8View => {
                    strings.push((k.as_string_view().value(i).to_string(), count))
                }
                t => return Err(bad(format!("values are {t}"))),
            }
        }
    }
    Ok(match c.kind {
        Kind::Float => Counts::Float(floats),
        Kind::String => Counts::String(strings),
        _ => Counts::Int(ints),
    })
}

/// Whether the column may have at most `limit` distinct values, by its HLL sketch (a cheap
/// test before asking Spark for the exact counts).
pub fn may_be_exact(row: &Row<'_>, c: &ColumnQuery, limit: usize) -> Result<bool, SparkError> {
    if c.value_expr().is_none() {
        return Ok(false);
    }
    let Some(bytes) = row.bytes(&c.field("hll"))? else {
        return Ok(true);
    };
    let hll = HllSketch::deserialize(&bytes)
        .map_err(|e| row.protocol(format!("HLL of `{}`: {e}", c.name)))?;
    Ok(hll.lower_bound(datasketches::common::NumStdDev::Three) <= limit as f64)
}

/// Moments from Spark's population variance, skewness and kurtosis of `n` values with `mean`.
pub fn moments(
    n: u64,
    mean: Option<f64>,
    var_pop: Option<f64>,
    skew: Option<f64>,
    kurt: Option<f64>,
) -> Moments {
    let (Some(mean), true) = (mean, n > 0) else {
        return Moments::default();
    };
    let nf = n as f64;
    let m2 = var_pop.unwrap_or(0.0) * nf;
    // Spark leaves both null when M2 is 0: every deviation, and so M3 and M4, is 0 too.
    let m3 = skew.map_or(0.0, |g1| g1 * m2.powf(1.5) / nf.sqrt());
    let m4 = kurt.map_or(0.0, |g2| (g2 + 3.0) * m2 * m2 / nf);
    Moments {
        n,
        mean,
        m2,
        m3,
        m4,
    }
}

/// The partial of `task`, from its aggregation `row` and the exact value counts of the columns
/// that have few enough distinct values.
pub fn task_partial(
    plan: &Plan,
    task: &Task,
    q: &TaskQuery,
    row: Option<&Row<'_>>,
    counts: &[Option<Counts>],
    millis: u64,
) -> Result<PartialProfile, SparkError> {
    let rows = match row {
        Some(r) => r.count("th_rows")?,
        None => 0,
    };
    let mut partial = PartialProfile::for_task(plan, task.id, task.row_slice, rows);
    partial.task_millis = millis;
    partial.bytes_read = task.bytes;
    let mut unavailable = BTreeSet::new();
    if task.row_hash && plan.options.duplicates {
        unavailable.insert(Unavailable {
            column: None,
            statistic: "duplicate_row_count".into(),
            reason: format!("{REASON}: Spark cannot hash whole rows as the engine does"),
        });
    }
    let opts = &plan.options;
    let params = ValueParams {
        limit: Some(opts.exact_distinct_limit),
        hll_lg_k: opts.hll_lg_k,
        freq_map_size: opts.frequent_items_map_size,
        top_k: opts.top_k,
    };
    for (i, c) in q.columns.iter().enumerate() {
        let mut state = ColumnState::new(&c.name, &c.data_type, opts, false);
        state.rows = rows;
        let Some(row) = row else {
            partial.columns.push(state);
            continue;
        };
        let n = row.count(&c.field("n"))?;
        state.nulls = rows.saturating_sub(n);
        let exact = counts.get(i).cloned().flatten();
        let sketch_err =
            |what: &str, e: String| row.protocol(format!("{what} of `{}`: {e}", c.name));
        match &mut state.stats {
            ColumnStats::Boolean {
                true_count,
                false_count,
            } => {
                *true_count = row.count(&c.field("true"))?;
                *false_count = row.count(&c.field("false"))?;
            }
            ColumnStats::Integer(s) | ColumnStats::Temporal { state: s, .. } => {
                s.zeros = row.count(&c.field("zero"))?;
                s.negatives = row.count(&c.field("neg"))?;
                s.min = row.i64(&c.field("min"))?;
                s.max = row.i64(&c.field("max"))?;
                s.sum = row.int(&c.field("sum"))?.unwrap_or(0);
                if c.kind == Kind::Integer {
                    let mean = (n > 0).then(|| s.sum as f64 / n as f64);
                    s.moments = moments(
                        n,
                        mean,
                        row.f64(&c.field("var"))?,
                        row.f64(&c.field("skew"))?,
                        row.f64(&c.field("kurt"))?,
                    );
                }
                match exact {
                    Some(Counts::Int(v)) if v.len() <= opts.exact_distinct_limit => {
                        s.values = Values::from_counts(params, v);
                    }
                    _ => {
                        if let Some(b) = row.bytes(&c.field("kll"))? {
                            s.quantiles = Quantiles::from_int_sketch(
                                KllSketch::deserialize(&b)
                                    .map_err(|e| sketch_err("KLL", e.to_string()))?,
                            );
                        }
                        s.values = sketched::<i64>(row, c, params, false)?;
                    }
                }
            }
            ColumnStats::Float(s) => {
                s.nan = row.count(&c.field("nan"))?;
                s.pos_inf = row.count(&c.field("pinf"))?;
                s.neg_inf = row.count(&c.field("ninf"))?;
                s.zeros = row.count(&c.field("zero"))?;
                s.negatives = row.count(&c.field("neg"))?;
                s.min = row.f64(&c.field("min"))?;
                s.max = row.f64(&c.field("max"))?;
                // Spark's sum of doubles is a plain one (not compensated): its last bits may
                // differ from the engine's compensated sum.
                s.sum = NeumaierSum {
                    sum: row.f64(&c.field("sum"))?.unwrap_or(0.0),
                    compensation: 0.0,
                };
                let cnt = row.count(&c.field("cnt"))?;
                s.moments = moments(
                    cnt,
                    row.f64(&c.field("mean"))?,
                    row.f64(&c.field("var"))?,
                    row.f64(&c.field("skew"))?,
                    row.f64(&c.field("kurt"))?,
                );
                match exact {
                    Some(Counts::Float(v)) if v.len() <= opts.exact_distinct_limit => {
                        s.values = Values::from_counts(
                            params,
                            v.into_iter().map(|(x, n)| (float_key(x), n)),
                        );
                    }
                    _ => {
                        if let Some(b) = row.bytes(&c.field("kll"))? {
                            s.quantiles = Quantiles::from_float_sketch(
                                KllSketch::deserialize(&b)
                                    .map_err(|e| sketch_err("KLL", e.to_string()))?,
                            );
                        }
                        s.values = sketched::<u64>(row, c, params, false)?;
                    }
                }
            }
            ColumnStats::String(s) => {
                s.empty = row.count(&c.field("empty"))?;
                s.min = row.string(&c.field("min"))?;
                s.max = row.string(&c.field("max"))?;
                s.min_length = row.i64(&c.field("lmin"))?.map(|v| v.max(0) as u64);
                s.max_length = row.i64(&c.field("lmax"))?.map(|v| v.max(0) as u64);
                s.total_length = row.count(&c.field("lsum"))?;
                s.patterns = None;
                if opts.patterns {
                    unavailable.insert(Unavailable {
                        column: Some(c.name.clone()),
                        statistic: "detected_patterns".into(),
                        reason: format!(
                            "{REASON}: Spark has no equivalent of the engine's pattern matchers"
                        ),
                    });
                }
                match exact {
                    Some(Counts::String(v)) if v.len() <= opts.exact_distinct_limit => {
                        s.values = Values::from_counts(params, v);
                    }
                    _ => s.values = sketched::<String>(row, c, params, s.empty > 0)?,
                }
            }
            ColumnStats::Binary {
                empty,
                min_length,
                max_length,
                total_length,
            } => {
                *empty = row.count(&c.field("empty"))?;
                *min_length = row.i64(&c.field("lmin"))?.map(|v| v.max(0) as u64);
                *max_length = row.i64(&c.field("lmax"))?.map(|v| v.max(0) as u64);
                *total_length = row.count(&c.field("lsum"))?;
            }
            ColumnStats::Bytes(s) => {
                s.empty = row.count(&c.field("empty"))?;
                s.lengths.min = row.i64(&c.field("lmin"))?.map(|v| v.max(0));
                s.lengths.max = row.i64(&c.field("lmax"))?.map(|v| v.max(0));
                let total = row.count(&c.field("lsum"))?;
                s.lengths.sum = i128::from(total);
                // Only the count and the mean of the lengths: their spread is not asked of Spark.
                s.lengths.moments = moments(
                    n,
                    (n > 0).then(|| total as f64 / n as f64),
                    None,
                    None,
                    None,
                );
                // The engine counts binary values by a key of its own (hex prefix and hash) and
                // the lengths' quantiles from exact counts, which Spark does not compute.
                for statistic in ["distinct_count", "top_values", "length_quantiles"] {
                    unavailable.insert(Unavailable {
                        column: Some(c.name.clone()),
                        statistic: statistic.into(),
                        reason: format!("{REASON}: Spark does not count binary values"),
                    });
                }
            }
            ColumnStats::Other | ColumnStats::Nested(_) => {}
        }
        partial.columns.push(state);
    }
    partial.unavailable = unavailable;
    Ok(partial)
}

/// A column's value sketches from Spark: HLL and frequent items. `empty_string`: the column
/// has "" values, which DataSketches Java's `update(String)` skips but the engine counts (as
/// the hash of no bytes): it is added here.
fn sketched<K: ValueKey + FrequentItemValue>(
    row: &Row<'_>,
    c: &ColumnQuery,
    params: ValueParams,
    empty_string: bool,
) -> Result<Values<K>, SparkError> {
    let bad = |what: &str, e: String| row.protocol(format!("{what} of `{}`: {e}", c.name));
    let mut hll = match row.bytes(&c.field("hll"))? {
        Some(b) => HllSketch::deserialize(&b).map_err(|e| bad("HLL", e.to_string()))?,
        None => {
            HllSketch::new(params.hll_lg_k, HllType::Hll8).map_err(|e| bad("HLL", e.to_string()))?
        }
    };
    if empty_string {
        hll.update(datasketches::hash::value::raw_bytes::from_str(""));
    }
    let freq = match row.bytes(&c.field("top"))? {
        Some(b) => FrequentItemsSketch::<K>::deserialize(&b)
            .map_err(|e| bad("frequent items", e.to_string()))?,
        None => FrequentItemsSketch::new(params.freq_map_size)
            .map_err(|e| bad("frequent items", e.to_string()))?,
    };
    Ok(Values::from_sketches(params, hll, freq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_rebuilt_from_sparks_statistics() {
        let data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, 1e3, -3.5];
        let m = Moments::of_slice(&data);
        let n = m.n as f64;
        let var_pop = m.m2 / n;
        let g1 = n.sqrt() * m.m3 / m.m2.powf(1.5);
        let g2 = n * m.m4 / (m.m2 * m.m2) - 3.0;
        let back = moments(m.n, Some(m.mean), Some(var_pop), Some(g1), Some(g2));
        for (a, b) in [(back.m2, m.m2), (back.m3, m.m3), (back.m4, m.m4)] {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
        }
        let constant = moments(3, Some(2.0), Some(0.0), None, None);
        assert_eq!((constant.m2, constant.m3, constant.m4), (0.0, 0.0, 0.0));
        assert_eq!(moments(0, None, None, None, None), Moments::default());
    }
}
