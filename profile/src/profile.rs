//! The profile format: what a finished profile says, as strict JSON.
//!
//! Field names follow truthound's `TableProfile`/`ColumnProfile` where one exists. Numbers that
//! are not finite are written as `null`, with their counts alongside (`nan_count`,
//! `pos_inf_count`, `neg_inf_count`). Every figure that is an estimate is listed under the
//! column's `accuracy` with its error bound.

use crate::kernel::column::{TemporalUnit, Unit};
use crate::kernel::{ColumnState, ColumnStats, FloatState, IntState, NestedKind};
use crate::partial::PartialProfile;
use crate::patterns::Pattern;
use crate::stats::{ExactQuantiles, Quantiles, TopValue, ValueSummary};
use crate::{Error, Result};
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the profile format: the major part changes on incompatible changes.
pub const SCHEMA_VERSION: &str = "1.0";

/// The quantiles every numeric and temporal column reports, as (name, rank).
pub const QUANTILES: [(&str, f64); 9] = [
    ("p1", 0.01),
    ("p5", 0.05),
    ("p10", 0.10),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
];

/// A profile of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableProfile {
    /// Version of this format (`major.minor`).
    pub schema_version: String,
    /// The program that wrote the profile.
    pub generator: Generator,
    /// The datasets profiled (one, unless profiles of several were merged).
    pub sources: Vec<Source>,
    /// Rows in the table; when `sampling` is present, rows in the sample (every figure of the
    /// profile then describes the sampled rows).
    pub row_count: u64,
    /// Columns profiled, the derived columns of nested ones (`s.a`, `l[]`, ...) included.
    pub column_count: u64,
    /// Rows that repeat an earlier row exactly (all profiled columns equal); `null` when not
    /// computed. An estimate past `exact_row_hash_limit` rows: see `accuracy`.
    pub duplicate_row_count: Option<u64>,
    /// `duplicate_row_count / row_count`.
    pub duplicate_row_ratio: Option<f64>,
    /// Present when the profile is of a sample of the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SampleInfo>,
    /// Wall time of the profile run, in milliseconds.
    pub profile_duration_ms: u64,
    /// When the profile was finished (RFC 3339, UTC).
    pub profiled_at: String,
    /// How the work was split and whether every part arrived.
    pub partitioning: Partitioning,
    /// Error bounds of the table-level estimates.
    pub accuracy: TableAccuracy,
    pub columns: Vec<ColumnProfile>,
    /// Table-level figures that were not computed for every row (`duplicate_row_count` when a
    /// backend cannot hash whole rows as the engine does), with the reason: such a figure is
    /// `null`, never a guess. Absent when every figure was computed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableStatistic>,
    /// The mergeable state this profile was made from, when asked for (`--keep-state`): two
    /// profiles with state merge into the profile of both datasets (`th merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EmbeddedState>,
}

/// How the profiled rows were sampled: each row was kept, independently, with probability
/// `fraction`, by a hash of the seed, the row's file and its position in that file (so the same
/// seed keeps the same rows whatever the partitioning). Counts (`row_count`, `null_count`,
/// `distinct_count`, duplicates, ...) are those of the sample, not scaled to the scanned rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SampleInfo {
    /// Probability with which each row was kept, in (0, 1).
    pub fraction: f64,
    /// Seed of the sample; `null` when merged profiles were sampled with different seeds.
    pub seed: Option<u64>,
    /// Rows read before sampling (`row_count` rows of them were kept).
    pub rows_scanned: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Generator {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    pub uri: String,
    /// Id of the plan that profiled it.
    pub plan_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Partitioning {
    /// `row_based`, `column_based`, `hybrid` or `hash` (one per source).
    pub strategies: Vec<String>,
    pub tasks_total: u64,
    pub tasks_merged: u64,
    /// Tasks whose partial profiles are missing, as `plan_id:ranges` (e.g. `ab12:3-5,9`). A
    /// profile with missing tasks covers only part of the data.
    pub missing_tasks: Vec<String>,
    /// Time the tasks took, summed (milliseconds).
    pub task_time_ms: u64,
    /// Bytes the tasks read from storage.
    pub bytes_read: u64,
    /// Incremental runs: tasks whose partial profile came from the cache of an earlier run
    /// (their files unchanged) instead of being computed; absent without a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_reused: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableAccuracy {
    pub duplicate_row_count: Option<Estimate>,
}

/// How exact a figure is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Estimate {
    /// `true` when the figure is exact.
    pub exact: bool,
    /// How it was computed: `exact`, `hll` (Apache DataSketches HyperLogLog), `kll` (KLL
    /// quantiles sketch), `frequent_items` (DataSketches frequent items).
    pub method: String,
    /// The true value lies in `[lower_bound, upper_bound]` with probability `confidence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_bound: Option<f64>,
    /// For quantiles: the reported value's rank is within this much (a fraction of the rows)
    /// of the asked rank. For histograms: each bin's count is within this fraction of the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_rank_error: Option<f64>,
    /// For top values: each reported count is at most this far from the true count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count_error: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl Estimate {
    fn exact() -> Estimate {
        Estimate {
            exact: true,
            method: "exact".into(),
            lower_bound: None,
            upper_bound: None,
            normalized_rank_error: None,
            max_count_error: None,
            confidence: None,
        }
    }

    fn method(method: &str) -> Estimate {
        Estimate {
            exact: false,
            method: method.into(),
            ..Estimate::exact()
        }
    }
}

/// A profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnProfile {
    pub name: String,
    /// The Arrow type the column was read as (e.g. `Int64`, `Utf8`, `Timestamp(µs, None)`).
    pub physical_type: String,
    /// A derived column's nested column: the struct `s` of a field `s.a`, the list `l` of its
    /// elements `l[]`, the map `m` of its keys `m{key}` and values `m{value}`. A field of a null
    /// struct is null; `l[]` has a row per element of the non-null lists (a null element is a
    /// null); `m{key}` and `m{value}` a row per entry. Absent for a column of the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What the values look like: `integer`, `float`, `boolean`, `string`, `categorical`,
    /// `identifier`, `email`, `url`, `uuid`, `ip_address`, `phone`, `date`, `datetime`,
    /// `numeric_string`, `time`, `duration`, `binary`, `struct`, `list`, `map`, `empty` (all
    /// null) or `other`.
    pub inferred_type: String,
    pub row_count: u64,
    pub null_count: u64,
    /// `null_count / row_count`.
    pub null_ratio: f64,
    /// NaN values (floats; never counted as null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nan_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_inf_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neg_inf_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_string_count: Option<u64>,
    /// Distinct non-null values (NaN counts as no value). See `accuracy.distinct_count`.
    pub distinct_count: Option<u64>,
    /// `distinct_count / (row_count − null_count)`.
    pub unique_ratio: Option<f64>,
    /// Every non-null value occurs once; `null` when the distinct count is an estimate that
    /// cannot tell.
    pub is_unique: Option<bool>,
    /// At most one distinct non-null value.
    pub is_constant: Option<bool>,
    /// Smallest and largest value: numbers as numbers, strings as strings, temporal values as
    /// ISO 8601 strings.
    pub min: Option<Value>,
    pub max: Option<Value>,
    /// Sum of the non-null, non-NaN values (exact for integers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<Value>,
    /// Moments and main quantiles of numeric columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// p1 … p99 (numbers, or ISO strings for temporal columns). See `accuracy.quantiles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<BTreeMap<String, Value>>,
    /// Equal-width bins from min to max. See `accuracy.histogram`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<HistogramBin>>,
    /// Most frequent values, most frequent first (ties: smaller value first).
    pub top_values: Vec<ValueCount>,
    /// Least frequent values, least frequent first; `null` once values are sketched.
    pub bottom_values: Option<Vec<ValueCount>>,
    /// String lengths in characters, binary lengths in bytes, list and map lengths in elements
    /// (entries), of the non-null values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_length: Option<f64>,
    /// Binary, list and map columns: p1 … p99 of the lengths. See `accuracy.length_quantiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_quantiles: Option<BTreeMap<String, Value>>,
    /// Lists and maps: non-null values with no element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_list_count: Option<u64>,
    /// Patterns found in non-empty strings, most matches first.
    pub detected_patterns: Vec<PatternMatch>,
    /// Strings: some value was too long to keep whole (1024 characters or more). `min` and
    /// `max` are then the first 1024 characters of the smallest and largest value (so `min` is
    /// still a lower bound, and `max` is where the largest value starts, not an upper bound),
    /// and a listed value longer than that is its first 1024 characters, `…` and a hash of the
    /// whole value. Absent when every kept string is whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated_strings: bool,
    /// Which figures are estimates, and their bounds.
    pub accuracy: ColumnAccuracy,
    /// Figures of this column that were not computed for every row (e.g. `detected_patterns`
    /// when the Spark backend profiled some of the rows), with the reason: such a figure is
    /// `null` or empty, never a guess. Absent when every figure was computed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableStatistic>,
}

/// A figure the profile does not give, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnavailableStatistic {
    /// The field of the profile that is left out, e.g. `detected_patterns`,
    /// `duplicate_row_count`, `top_values`, `distinct_count`.
    pub statistic: String,
    /// Why, e.g. "not computed by the spark backend".
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Distribution {
    /// Mean of the non-null, non-NaN values (`null` if infinite values make it undefined).
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1).
    pub std: Option<f64>,
    /// Sample variance (n − 1).
    pub variance: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Quantiles from the KLL sketch (see `accuracy.quantiles`).
    pub median: Option<f64>,
    pub q1: Option<f64>,
    pub q3: Option<f64>,
    /// Population skewness g1.
    pub skewness: Option<f64>,
    /// Excess kurtosis g2 (0 for a normal distribution).
    pub kurtosis: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistogramBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValueCount {
    pub value: Value,
    pub count: u64,
    /// `count / (row_count − null_count)`.
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatternMatch {
    /// `email`, `url`, `uuid`, `ipv4`, `ipv6`, `phone`, `date`, `datetime`, `integer`, `decimal`.
    pub pattern: String,
    pub match_count: u64,
    /// `match_count` / non-empty, non-null values.
    pub match_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ColumnAccuracy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_count: Option<Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_values: Option<Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Estimate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_quantiles: Option<Estimate>,
}

/// A partial profile inside a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddedState {
    /// `truthound-partial+base64`.
    pub encoding: String,
    pub data: String,
}

const STATE_ENCODING: &str = "truthound-partial+base64";

impl TableProfile {
    /// The profile of a (merged) partial.
    pub fn from_partial(
        partial: &PartialProfile,
        duration_ms: u64,
        keep_state: bool,
        histogram_bins: usize,
    ) -> TableProfile {
        let row_count = partial.row_count();
        let parents: BTreeMap<&str, &str> = partial
            .columns
            .iter()
            .flat_map(|c| c.children().iter().map(|k| (k.as_str(), c.name.as_str())))
            .collect();
        let mut columns: Vec<ColumnProfile> = partial
            .ordered_columns()
            .into_iter()
            .map(|c| {
                let mut p = column_profile(c, histogram_bins);
                p.parent = parents.get(c.name.as_str()).map(|s| s.to_string());
                p
            })
            .collect();
        let mut table_unavailable = Vec::new();
        for u in &partial.unavailable {
            let entry = UnavailableStatistic {
                statistic: u.statistic.clone(),
                reason: u.reason.clone(),
            };
            match &u.column {
                None => table_unavailable.push(entry),
                Some(name) => {
                    if let Some(p) = columns.iter_mut().find(|p| &p.name == name) {
                        leave_out(p, &entry.statistic);
                        if !p.unavailable.contains(&entry) {
                            p.unavailable.push(entry);
                        }
                    }
                }
            }
        }
        let (duplicate_row_count, dup_accuracy) = match &partial.row_hashes {
            Some(rh) if rh.hashed_rows == row_count => {
                let (d, lo, hi, exact) = rh.duplicates();
                let est = if exact {
                    Estimate::exact()
                } else {
                    Estimate {
                        lower_bound: Some(lo as f64),
                        upper_bound: Some(hi as f64),
                        confidence: Some(0.997),
                        ..Estimate::method("hll")
                    }
                };
                (Some(d), Some(est))
            }
            _ => (None, None),
        };
        let tasks_total: u64 = partial
            .plans
            .values()
            .map(|p| u64::from(p.total_tasks))
            .sum();
        let missing = partial
            .missing_tasks()
            .into_iter()
            .map(|(plan, tasks)| format!("{plan}:{}", index_ranges(&tasks)))
            .collect();
        let leave_out_duplicates = table_unavailable
            .iter()
            .any(|u| u.statistic == "duplicate_row_count");
        let (duplicate_row_count, dup_accuracy) = if leave_out_duplicates {
            (None, None)
        } else {
            (duplicate_row_count, dup_accuracy)
        };
        table_unavailable.dedup();
        TableProfile {
            schema_version: SCHEMA_VERSION.into(),
            generator: Generator {
                name: "truthound-operator".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            sources: partial
                .plans
                .iter()
                .map(|(id, p)| Source {
                    uri: p.dataset.clone(),
                    plan_id: id.clone(),
                })
                .collect(),
            row_count,
            column_count: columns.len() as u64,
            duplicate_row_ratio: duplicate_row_count.map(|d| ratio(d, row_count)),
            duplicate_row_count,
            sampling: partial.sampling().map(|s| SampleInfo {
                fraction: s.fraction,
                seed: partial.sampling_seed(),
                rows_scanned: partial.rows_scanned(),
            }),
            profile_duration_ms: duration_ms,
            profiled_at: now_rfc3339(),
            partitioning: Partitioning {
                strategies: partial
                    .plans
                    .values()
                    .map(|p| p.strategy.to_string())
                    .collect(),
                tasks_total,
                tasks_merged: partial.tasks.len() as u64,
                missing_tasks: missing,
                task_time_ms: partial.task_millis,
                bytes_read: partial.bytes_read,
                tasks_reused: None,
            },
            accuracy: TableAccuracy {
                duplicate_row_count: dup_accuracy,
            },
            unavailable: table_unavailable,
            columns,
            state: keep_state.then(|| EmbeddedState {
                encoding: STATE_ENCODING.into(),
                data: base64::engine::general_purpose::STANDARD.encode(partial.to_bytes()),
            }),
        }
    }

    /// The partial profile kept inside this profile, if it was kept.
    pub fn state(&self) -> Result<Option<PartialProfile>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        if state.encoding != STATE_ENCODING {
            return Err(Error::invalid(
                "profile state",
                format!("unknown encoding `{}`", state.encoding),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&state.data)
            .map_err(|e| Error::invalid("profile state", e.to_string()))?;
        PartialProfile::from_bytes(&bytes, "embedded state").map(Some)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("profiles serialize");
        out.push(b'\n');
        out
    }

    /// The JSON Schema of this format.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(TableProfile);
        let mut out = serde_json::to_string_pretty(&schema).expect("schema serializes");
        out.push('\n');
        out
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `[0,1,2,5,7,8]` → `0-2,5,7-8`.
pub fn index_ranges(ids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn column_profile(c: &ColumnState, bins: usize) -> ColumnProfile {
    let non_null = c.rows - c.nulls;
    let mut p = ColumnProfile {
        name: c.name.clone(),
        physical_type: c.physical_type.clone(),
        parent: None,
        inferred_type: String::new(),
        row_count: c.rows,
        null_count: c.nulls,
        null_ratio: ratio(c.nulls, c.rows),
        nan_count: None,
        pos_inf_count: None,
        neg_inf_count: None,
        zero_count: None,
        negative_count: None,
        true_count: None,
        false_count: None,
        empty_string_count: None,
        distinct_count: None,
        unique_ratio: None,
        is_unique: None,
        is_constant: None,
        min: None,
        max: None,
        sum: None,
        distribution: None,
        quantiles: None,
        histogram: None,
        top_values: Vec::new(),
        bottom_values: None,
        min_length: None,
        max_length: None,
        avg_length: None,
        length_quantiles: None,
        empty_list_count: None,
        detected_patterns: Vec::new(),
        truncated_strings: false,
        accuracy: ColumnAccuracy::default(),
        unavailable: Vec::new(),
    };
    match &c.stats {
        ColumnStats::Boolean {
            true_count,
            false_count,
        } => {
            p.true_count = Some(*true_count);
            p.false_count = Some(*false_count);
            let mut top: Vec<(bool, u64)> = vec![(true, *true_count), (false, *false_count)];
            top.retain(|t| t.1 > 0);
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            p.distinct_count = Some(top.len() as u64);
            p.min = (*false_count > 0)
                .then_some(Value::Bool(false))
                .or((*true_count > 0).then_some(Value::Bool(true)));
            p.max = (*true_count > 0)
                .then_some(Value::Bool(true))
                .or((*false_count > 0).then_some(Value::Bool(false)));
            p.top_values = top
                .iter()
                .map(|(v, n)| ValueCount {
                    value: Value::Bool(*v),
                    count: *n,
                    ratio: ratio(*n, non_null),
                })
                .collect();
            let mut bottom = top.clone();
            bottom.reverse();
            p.bottom_values = Some(
                bottom
                    .iter()
                    .map(|(v, n)| ValueCount {
                        value: Value::Bool(*v),
                        count: *n,
                        ratio: ratio(*n, non_null),
                    })
                    .collect(),
            );
            p.accuracy.distinct_count = Some(Estimate::exact());
            p.accuracy.top_values = Some(Estimate::exact());
        }
        ColumnStats::Integer(s) => {
            p.zero_count = Some(s.zeros);
            p.negative_count = Some(s.negatives);
            p.min = s.min.map(Value::from);
            p.max = s.max.map(Value::from);
            p.sum = (non_null > 0).then(|| int_value(s.sum));
            let dist = Dist::of_ints(s);
            let q = dist.quantiles();
            p.distribution = Some(distribution(
                &s.moments,
                s.min.map(|v| v as f64),
                s.max.map(|v| v as f64),
                q.as_deref(),
            ));
            p.quantiles = q.map(|q| named_quantiles(q.iter().map(|v| Value::from(*v as i64))));
            p.histogram = dist.histogram(s.min.map(|v| v as f64), s.max.map(|v| v as f64), bins);
            values_into(&mut p, &s.values.summary(), non_null, Value::from);
            dist.accuracy(&mut p);
        }
        ColumnStats::Float(s) => {
            p.nan_count = Some(s.nan);
            p.pos_inf_count = Some(s.pos_inf);
            p.neg_inf_count = Some(s.neg_inf);
            p.zero_count = Some(s.zeros);
            p.negative_count = Some(s.negatives);
            p.min = s.min.and_then(finite).map(Value::from);
            p.max = s.max.and_then(finite).map(Value::from);
            p.sum =
                (s.moments.n > 0).then(|| finite(s.sum.value()).map_or(Value::Null, Value::from));
            let dist = Dist::of_floats(s);
            let q = dist.quantiles();
            p.distribution = Some(distribution(&s.moments, s.min, s.max, q.as_deref()));
            p.quantiles = q.map(|q| {
                named_quantiles(
                    q.iter()
                        .map(|v| finite(*v).map_or(Value::Null, Value::from)),
                )
            });
            p.histogram = dist.histogram(s.min, s.max, bins);
            let summary = s.values.summary();
            // Distinct values exclude NaN, which never enters the counts.
            values_into(&mut p, &summary, non_null - s.nan, |bits: u64| {
                finite(f64::from_bits(bits)).map_or(Value::Null, Value::from)
            });
            dist.accuracy(&mut p);
        }
        ColumnStats::Temporal { unit, state } => {
            temporal_into(&mut p, unit, state, non_null, bins);
        }
        ColumnStats::String(s) => {
            p.empty_string_count = Some(s.empty);
            p.min = s.min.clone().map(Value::String);
            p.max = s.max.clone().map(Value::String);
            p.min_length = s.min_length;
            p.max_length = s.max_length;
            p.avg_length = (non_null > 0).then(|| s.total_length as f64 / non_null as f64);
            let summary = s.values.summary();
            p.truncated_strings = s.truncated(&summary);
            values_into(&mut p, &summary, non_null, Value::String);
            if let Some(counts) = s.pattern_counts() {
                p.detected_patterns = counts
                    .detected()
                    .into_iter()
                    .map(|(pat, n, r)| PatternMatch {
                        pattern: pat.name().into(),
                        match_count: n,
                        match_ratio: r,
                    })
                    .collect();
            }
        }
        ColumnStats::Binary {
            empty,
            min_length,
            max_length,
            total_length,
        } => {
            p.empty_string_count = Some(*empty);
            p.min_length = *min_length;
            p.max_length = *max_length;
            p.avg_length = (non_null > 0).then(|| *total_length as f64 / non_null as f64);
        }
        ColumnStats::Bytes(s) => {
            p.empty_string_count = Some(s.empty);
            lengths_into(&mut p, &s.lengths);
            // Values are listed by their keys: see `binary_key`.
            values_into(&mut p, &s.values.summary(), non_null, Value::String);
        }
        ColumnStats::Nested(n) => {
            if let Some(lengths) = &n.lengths {
                p.empty_list_count = Some(n.empty);
                lengths_into(&mut p, lengths);
            }
        }
        ColumnStats::Other => {}
    }
    p.inferred_type = infer_type(c, &p);
    p
}

/// The length figures of a binary, list or map column.
fn lengths_into(p: &mut ColumnProfile, s: &IntState) {
    p.min_length = s.min.map(|v| v.max(0) as u64);
    p.max_length = s.max.map(|v| v.max(0) as u64);
    p.avg_length = (s.moments.n > 0).then(|| s.sum as f64 / s.moments.n as f64);
    let dist = Dist::of_ints(s);
    p.length_quantiles = dist
        .quantiles()
        .map(|q| named_quantiles(q.iter().map(|v| Value::from(*v as i64))));
    p.accuracy.length_quantiles = dist.estimates().map(|(q, _)| q);
}

/// Clears a figure that some rows did not contribute to: no partial answer passes for a whole.
fn leave_out(p: &mut ColumnProfile, statistic: &str) {
    match statistic {
        "detected_patterns" => p.detected_patterns.clear(),
        "top_values" => {
            p.top_values.clear();
            p.bottom_values = None;
            p.accuracy.top_values = None;
        }
        "distinct_count" => {
            p.distinct_count = None;
            p.unique_ratio = None;
            p.is_unique = None;
            p.is_constant = None;
            p.accuracy.distinct_count = None;
        }
        "length_quantiles" => {
            p.length_quantiles = None;
            p.accuracy.length_quantiles = None;
        }
        "quantiles" => {
            p.quantiles = None;
            p.histogram = None;
            p.accuracy.quantiles = None;
            p.accuracy.histogram = None;
        }
        _ => {}
    }
}

fn int_value(v: i128) -> Value {
    i64::try_from(v)
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(v as f64))
}

fn named_quantiles(values: impl Iterator<Item = Value>) -> BTreeMap<String, Value> {
    QUANTILES
        .iter()
        .map(|(n, _)| n.to_string())
        .zip(values)
        .collect()
}

fn distribution(
    m: &crate::stats::Moments,
    min: Option<f64>,
    max: Option<f64>,
    q: Option<&[f64]>,
) -> Distribution {
    let at = |name: &str| {
        let i = QUANTILES.iter().position(|(n, _)| *n == name)?;
        q.and_then(|q| q.get(i).copied()).and_then(finite)
    };
    Distribution {
        mean: m.mean().and_then(finite),
        std: m.std().and_then(finite),
        variance: m.variance().and_then(finite),
        min: min.and_then(finite),
        max: max.and_then(finite),
        median: at("p50"),
        q1: at("p25"),
        q3: at("p75"),
        skewness: m.skewness().and_then(finite),
        kurtosis: m.kurtosis().and_then(finite),
    }
}

/// Where a column's quantiles and histogram come from: its exact value counts while it has
/// them, else its KLL sketch.
enum Dist<'a> {
    Exact(ExactQuantiles),
    Sketch(&'a Quantiles),
}

impl<'a> Dist<'a> {
    fn of_ints(s: &'a IntState) -> Dist<'a> {
        match s.values.exact_counts() {
            Some(map) => Dist::Exact(ExactQuantiles::new(
                map.iter().map(|(v, c)| (*v as f64, *c)).collect(),
                true,
            )),
            None => Dist::Sketch(&s.quantiles),
        }
    }

    fn of_floats(s: &'a FloatState) -> Dist<'a> {
        match s.values.exact_counts() {
            Some(map) => Dist::Exact(ExactQuantiles::new(
                map.iter()
                    .map(|(bits, c)| (f64::from_bits(*bits), *c))
                    .collect(),
                false,
            )),
            None => Dist::Sketch(&s.quantiles),
        }
    }

    fn quantiles(&self) -> Option<Vec<f64>> {
        let ranks: Vec<f64> = QUANTILES.iter().map(|(_, r)| *r).collect();
        match self {
            Dist::Exact(e) => e.quantiles(&ranks),
            Dist::Sketch(q) => q.quantiles(&ranks),
        }
    }

    fn histogram(
        &self,
        min: Option<f64>,
        max: Option<f64>,
        bins: usize,
    ) -> Option<Vec<HistogramBin>> {
        let (lo, hi) = (min.and_then(finite)?, max.and_then(finite)?);
        let bins = match self {
            Dist::Exact(e) => e.histogram(lo, hi, bins)?,
            Dist::Sketch(q) => q.histogram(lo, hi, bins)?,
        };
        Some(
            bins.into_iter()
                .map(|(lower, upper, count)| HistogramBin {
                    lower,
                    upper,
                    count,
                })
                .collect(),
        )
    }

    fn accuracy(&self, p: &mut ColumnProfile) {
        if let Some((q, h)) = self.estimates() {
            p.accuracy.quantiles = Some(q);
            p.accuracy.histogram = Some(h);
        }
    }

    /// How exact the quantiles and the histogram are; `None` without values.
    fn estimates(&self) -> Option<(Estimate, Estimate)> {
        match self {
            Dist::Exact(e) if e.n() > 0 => Some((Estimate::exact(), Estimate::exact())),
            Dist::Sketch(q) if q.n() > 0 && q.is_exact() => {
                Some((Estimate::exact(), Estimate::exact()))
            }
            Dist::Sketch(q) if q.n() > 0 => Some((
                Estimate {
                    normalized_rank_error: Some(q.rank_error()),
                    confidence: Some(0.99),
                    ..Estimate::method("kll")
                },
                Estimate {
                    normalized_rank_error: Some(q.pmf_error()),
                    confidence: Some(0.99),
                    ..Estimate::method("kll")
                },
            )),
            _ => None,
        }
    }
}

fn values_into<K: Clone>(
    p: &mut ColumnProfile,
    s: &ValueSummary<K>,
    non_null: u64,
    render: impl Fn(K) -> Value,
) {
    p.distinct_count = Some(s.distinct);
    p.unique_ratio = Some(ratio(s.distinct, non_null));
    p.is_unique = if s.distinct_exact {
        Some(non_null > 0 && s.distinct == non_null)
    } else if s.distinct_bounds.1 < non_null {
        Some(false)
    } else {
        None
    };
    p.is_constant = if s.distinct_exact || s.distinct_bounds.0 > 1 {
        Some(s.distinct <= 1)
    } else {
        None
    };
    let row = |t: &TopValue<K>| ValueCount {
        value: render(t.value.clone()),
        count: t.count,
        ratio: ratio(t.count, non_null),
    };
    p.top_values = s.top.iter().map(row).collect();
    p.bottom_values = s.bottom.as_ref().map(|b| b.iter().map(row).collect());
    if s.distinct_exact {
        p.accuracy.distinct_count = Some(Estimate::exact());
        p.accuracy.top_values = Some(Estimate::exact());
    } else {
        p.accuracy.distinct_count = Some(Estimate {
            lower_bound: Some(s.distinct_bounds.0 as f64),
            upper_bound: Some(s.distinct_bounds.1 as f64),
            confidence: Some(0.997),
            ..Estimate::method("hll")
        });
        p.accuracy.top_values = Some(Estimate {
            max_count_error: Some(s.top_max_error),
            ..Estimate::method("frequent_items")
        });
    }
}

fn temporal_into(
    p: &mut ColumnProfile,
    unit: &TemporalUnit,
    s: &IntState,
    non_null: u64,
    bins: usize,
) {
    let render = |v: i64| render_temporal(unit, v);
    p.min = s.min.map(render);
    p.max = s.max.map(render);
    let dist = Dist::of_ints(s);
    if let Some(q) = dist.quantiles() {
        p.quantiles = Some(named_quantiles(q.iter().map(|v| render(*v as i64))));
    }
    p.histogram = dist.histogram(s.min.map(|v| v as f64), s.max.map(|v| v as f64), bins);
    values_into(p, &s.values.summary(), non_null, render);
    dist.accuracy(p);
}

/// A temporal value as ISO 8601 text.
pub fn render_temporal(unit: &TemporalUnit, v: i64) -> Value {
    use time::format_description::well_known::Rfc3339;
    let from_nanos = |nanos: i128| {
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
    };
    let nanos = |u: &Unit| i128::from(v) * i128::from(1_000_000_000 / u.per_second());
    let text = match unit {
        TemporalUnit::Date => time::Date::from_julian_day(2_440_588 + v as i32)
            .ok()
            .map(|d| d.to_string()),
        TemporalUnit::DateMillis => from_nanos(i128::from(v) * 1_000_000)
            .map(|s| s.split('T').next().unwrap_or_default().to_string()),
        TemporalUnit::Timestamp { unit, .. } => from_nanos(nanos(unit)),
        TemporalUnit::Time(unit) => {
            let n = nanos(unit);
            let secs = n / 1_000_000_000;
            let frac = n % 1_000_000_000;
            let base = format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            Some(if frac == 0 {
                base
            } else {
                format!("{base}.{:09}", frac)
                    .trim_end_matches('0')
                    .to_string()
            })
        }
        TemporalUnit::Duration(unit) => {
            let n = nanos(unit);
            Some(format!("PT{}S", n as f64 / 1e9))
        }
    };
    text.map_or(Value::Null, Value::String)
}

fn infer_type(c: &ColumnState, p: &ColumnProfile) -> String {
    let non_null = c.rows - c.nulls;
    if non_null == 0 {
        return "empty".into();
    }
    let t = match &c.stats {
        ColumnStats::Boolean { .. } => "boolean",
        ColumnStats::Integer(_) => {
            if p.is_unique == Some(true) && non_null > 1 {
                "identifier"
            } else {
                "integer"
            }
        }
        ColumnStats::Float(_) => "float",
        ColumnStats::Temporal { unit, .. } => match unit {
            TemporalUnit::Date | TemporalUnit::DateMillis => "date",
            TemporalUnit::Timestamp { .. } => "datetime",
            TemporalUnit::Time(_) => "time",
            TemporalUnit::Duration(_) => "duration",
        },
        ColumnStats::String(s) => {
            let checked = non_null - s.empty;
            let best = p.detected_patterns.first();
            match best {
                Some(m) if checked > 0 && m.match_ratio >= 0.9 => Pattern::ALL
                    .iter()
                    .find(|pat| pat.name() == m.pattern)
                    .map_or("string", |pat| pat.semantic_type()),
                _ => {
                    let distinct = p.distinct_count.unwrap_or(0);
                    if p.is_unique == Some(true) && non_null > 1 {
                        "identifier"
                    } else if distinct <= 50 && (distinct as f64) <= 0.5 * non_null as f64 {
                        "categorical"
                    } else {
                        "string"
                    }
                }
            }
        }
        ColumnStats::Binary { .. } | ColumnStats::Bytes(_) => "binary",
        ColumnStats::Nested(n) => match n.kind {
            NestedKind::Struct => "struct",
            NestedKind::List => "list",
            NestedKind::Map => "map",
        },
        ColumnStats::Other => "other",
    };
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ranges_and_temporal_values() {
        assert_eq!(index_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(index_ranges(&[]), "");
        assert_eq!(
            render_temporal(&TemporalUnit::Date, 19723),
            Value::String("2024-01-01".into())
        );
        assert_eq!(
            render_temporal(
                &TemporalUnit::Timestamp {
                    unit: Unit::Microsecond,
                    tz: None
                },
                1_704_067_200_500_000
            ),
            Value::String("2024-01-01T00:00:00.5Z".into())
        );
        assert_eq!(
            render_temporal(&TemporalUnit::Time(Unit::Second), 3661),
            Value::String("01:01:01".into())
        );
    }
}
