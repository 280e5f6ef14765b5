//! Column accumulators.

use super::kind::ValueKind;
use crate::limits::MAX_KEPT_STRING_CHARS;
use crate::options::ProfileOptions;
use crate::patterns::PatternCounts;
use crate::stats::values::{ValueParams, bounded_key, is_shortened_key, string_prefix};
use crate::stats::{Moments, NeumaierSum, Quantiles, ValueSummary, Values};
use crate::{Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, PrimitiveArray,
};
use arrow::compute::cast;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Int32Type, Int64Type, TimeUnit};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// How a temporal column's integers are to be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemporalUnit {
    /// Days since 1970-01-01.
    Date,
    /// Milliseconds since 1970-01-01 (Date64).
    DateMillis,
    /// Time since 1970-01-01 UTC, in the given unit; `tz` as the column declares it.
    Timestamp {
        unit: Unit,
        tz: Option<String>,
    },
    /// Time of day in the unit.
    Time(Unit),
    Duration(Unit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    Second,
    Millisecond,
    Microsecond,
    Nanosecond,
}

impl From<&TimeUnit> for Unit {
    fn from(u: &TimeUnit) -> Self {
        match u {
            TimeUnit::Second => Unit::Second,
            TimeUnit::Millisecond => Unit::Millisecond,
            TimeUnit::Microsecond => Unit::Microsecond,
            TimeUnit::Nanosecond => Unit::Nanosecond,
        }
    }
}

impl Unit {
    pub fn per_second(self) -> i64 {
        match self {
            Unit::Second => 1,
            Unit::Millisecond => 1_000,
            Unit::Microsecond => 1_000_000,
            Unit::Nanosecond => 1_000_000_000,
        }
    }
}

/// Integers (and the integer form of temporal values).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntState {
    pub zeros: u64,
    pub negatives: u64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// Exact sum.
    pub sum: i128,
    pub moments: Moments,
    pub quantiles: Quantiles,
    pub values: Values<i64>,
}

/// Floating-point numbers (and decimals and 64-bit unsigned integers, read as floats).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloatState {
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub zeros: u64,
    pub negatives: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: NeumaierSum,
    pub moments: Moments,
    pub quantiles: Quantiles,
    /// Keyed by the bit pattern of the value (−0.0 folded into 0.0).
    pub values: Values<u64>,
}

/// UTF-8 strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StringState {
    pub empty: u64,
    pub min: Option<String>,
    pub max: Option<String>,
    /// Lengths in characters (Unicode scalar values).
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub total_length: u64,
    pub values: Values<String>,
    /// Pattern matches of the non-empty values that are not in `values`' exact map (those are
    /// classified once per distinct value when the profile is finished).
    pub patterns: Option<PatternCounts>,
}

/// The statistics a column's type allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ColumnStats {
    Boolean {
        true_count: u64,
        false_count: u64,
    },
    Integer(IntState),
    Float(FloatState),
    Temporal {
        unit: TemporalUnit,
        state: IntState,
    },
    String(StringState),
    /// Binary values: lengths in bytes.
    Binary {
        empty: u64,
        min_length: Option<u64>,
        max_length: Option<u64>,
        total_length: u64,
    },
    /// Nested and other types: counts only.
    Other,
    /// Binary values (from this release on; `Binary` is what earlier partials hold).
    Bytes(Box<BinaryState>),
    /// A struct, list or map column, whose fields, elements, keys and values are profiled as
    /// derived columns of their own (see [`super::nested`]).
    Nested(Box<NestedState>),
}

/// Binary values: their lengths in bytes, and the values counted by [`binary_key`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinaryState {
    pub empty: u64,
    /// The lengths, as an integer column (min, max, sum, moments, quantiles).
    pub lengths: IntState,
    pub values: Values<String>,
}

/// Which nested type a [`NestedState`] is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NestedKind {
    Struct,
    List,
    Map,
}

/// A nested column: its own rows and nulls, and for lists and maps the lengths of its values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NestedState {
    pub kind: NestedKind,
    /// The derived columns one level down, in schema order: a struct's fields (`s.a`), a list's
    /// elements (`l[]`), a map's keys then values (`m{key}`, `m{value}`).
    pub children: Vec<String>,
    /// Lists and maps: the number of elements (entries) of each non-null value.
    pub lengths: Option<IntState>,
    /// Lists and maps: non-null values with no element.
    pub empty: u64,
}

/// The key a binary value is counted under: the hex of its first [`BINARY_KEY_BYTES`] bytes,
/// and for a longer value `…` and the xxh3 hash of the whole value, so that the key of a short
/// value is the value and two long values share a key only if their hashes collide.
pub fn binary_key(v: &[u8]) -> String {
    use std::fmt::Write;
    let head = &v[..v.len().min(BINARY_KEY_BYTES)];
    let mut k = String::with_capacity(2 * head.len() + 20);
    for b in head {
        let _ = write!(k, "{b:02x}");
    }
    if v.len() > BINARY_KEY_BYTES {
        let _ = write!(
            k,
            "…{:016x}",
            xxhash_rust::xxh3::xxh3_64_with_seed(v, BINARY_KEY_SEED)
        );
    }
    k
}

/// Bytes of a binary value shown in its key.
pub const BINARY_KEY_BYTES: usize = 16;
const BINARY_KEY_SEED: u64 = 0x6269_6e61_7279_6b79;

/// Everything known about one column of one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnState {
    pub name: String,
    /// The Arrow type as read, e.g. `Int64`, `Utf8`, `Timestamp(µs, None)`.
    pub physical_type: String,
    pub rows: u64,
    pub nulls: u64,
    pub stats: ColumnStats,
}

/// Scratch space reused across batches.
#[derive(Default)]
pub struct Scratch {
    floats: Vec<f64>,
}

impl ColumnState {
    /// A fresh accumulator for a column of type `data_type`. `exact_values` lifts the limit on
    /// exact value counting (the key column of a hash-partitioned plan).
    pub fn new(
        name: &str,
        data_type: &DataType,
        options: &ProfileOptions,
        exact_values: bool,
    ) -> Self {
        let params = ValueParams {
            limit: (!exact_values).then_some(options.exact_distinct_limit),
            hll_lg_k: options.hll_lg_k,
            freq_map_size: options.frequent_items_map_size,
            top_k: options.top_k,
        };
        let int_state = || IntState {
            zeros: 0,
            negatives: 0,
            min: None,
            max: None,
            sum: 0,
            moments: Moments::default(),
            quantiles: Quantiles::new_int(options.kll_k),
            values: Values::new(params),
        };
        let stats = match ValueKind::of(data_type) {
            ValueKind::Boolean => ColumnStats::Boolean {
                true_count: 0,
                false_count: 0,
            },
            ValueKind::Integer => ColumnStats::Integer(int_state()),
            ValueKind::Float => ColumnStats::Float(FloatState {
                nan: 0,
                pos_inf: 0,
                neg_inf: 0,
                zeros: 0,
                negatives: 0,
                min: None,
                max: None,
                sum: NeumaierSum::default(),
                moments: Moments::default(),
                quantiles: Quantiles::new_float(options.kll_k),
                values: Values::new(params),
            }),
            ValueKind::Temporal => ColumnStats::Temporal {
                unit: temporal_unit(data_type),
                state: int_state(),
            },
            ValueKind::String => ColumnStats::String(StringState {
                empty: 0,
                min: None,
                max: None,
                min_length: None,
                max_length: None,
                total_length: 0,
                values: Values::new(params),
                patterns: options.patterns.then(PatternCounts::default),
            }),
            ValueKind::Binary => ColumnStats::Bytes(Box::new(BinaryState {
                empty: 0,
                lengths: int_state(),
                values: Values::new(params),
            })),
            ValueKind::Other => ColumnStats::Other,
        };
        ColumnState {
            name: name.to_string(),
            physical_type: data_type.to_string(),
            rows: 0,
            nulls: 0,
            stats,
        }
    }

    /// Adds one batch of this column.
    pub fn update(&mut self, array: &ArrayRef, scratch: &mut Scratch) -> Result<()> {
        self.rows += array.len() as u64;
        self.nulls += array.logical_null_count() as u64;
        let convert = |to: &DataType| {
            cast(array, to).map_err(|e| Error::invalid("column", format!("{}: {e}", self.name)))
        };
        match &mut self.stats {
            ColumnStats::Boolean {
                true_count,
                false_count,
            } => {
                let a: &BooleanArray = array.as_boolean();
                let t = a.true_count() as u64;
                *true_count += t;
                *false_count += (a.len() - a.null_count()) as u64 - t;
            }
            ColumnStats::Integer(state) => {
                let a = if array.data_type() == &DataType::Int64 {
                    array.clone()
                } else {
                    convert(&DataType::Int64)?
                };
                state.update(a.as_primitive::<Int64Type>(), &mut scratch.floats, true);
            }
            ColumnStats::Temporal { state, .. } => {
                let a = temporal_as_i64(array);
                state.update(&a, &mut scratch.floats, false);
            }
            ColumnStats::Float(state) => {
                let a = if array.data_type() == &DataType::Float64 {
                    array.clone()
                } else {
                    convert(&DataType::Float64)?
                };
                state.update(a.as_primitive(), &mut scratch.floats);
            }
            ColumnStats::String(state) => match array.data_type() {
                // One SIMD pass tells whether every byte is ASCII: then a length in
                // characters is a length in bytes.
                DataType::Utf8 => {
                    let a = array.as_string::<i32>();
                    state.update(a.iter(), a.value_data().is_ascii())
                }
                DataType::LargeUtf8 => {
                    let a = array.as_string::<i64>();
                    state.update(a.iter(), a.value_data().is_ascii())
                }
                DataType::Utf8View => state.update(array.as_string_view().iter(), false),
                _ => {
                    let a = convert(&DataType::Utf8)?;
                    let a = a.as_string::<i32>();
                    state.update(a.iter(), a.value_data().is_ascii());
                }
            },
            ColumnStats::Binary {
                empty,
                min_length,
                max_length,
                total_length,
            } => {
                let a = convert(&DataType::LargeBinary)?;
                for v in a.as_binary::<i64>().iter().flatten() {
                    let len = v.len() as u64;
                    *empty += u64::from(len == 0);
                    *total_length += len;
                    *min_length = Some(min_length.map_or(len, |m| m.min(len)));
                    *max_length = Some(max_length.map_or(len, |m| m.max(len)));
                }
            }
            ColumnStats::Bytes(s) => {
                let a = convert(&DataType::LargeBinary)?;
                let b = a.as_binary::<i64>();
                let lengths = Int64Array::new(
                    b.offsets()
                        .windows(2)
                        .map(|w| w[1] - w[0])
                        .collect::<Vec<i64>>()
                        .into(),
                    b.nulls().cloned(),
                );
                s.lengths.update(&lengths, &mut scratch.floats, true);
                for v in b.iter().flatten() {
                    s.empty += u64::from(v.is_empty());
                    s.values.observe(binary_key(v).as_str());
                }
                // Nothing else is counted from the values: what leaves the exact map is dropped.
                s.values.take_evicted();
            }
            // The lengths of lists and maps come from their offsets: see `observe_lengths`.
            ColumnStats::Other | ColumnStats::Nested(_) => {}
        }
        Ok(())
    }

    /// A list or map column: adds the lengths of one batch's values (null where the value is).
    pub fn observe_lengths(&mut self, lengths: &Int64Array, scratch: &mut Scratch) {
        if let ColumnStats::Nested(n) = &mut self.stats
            && let Some(state) = &mut n.lengths
        {
            state.update(lengths, &mut scratch.floats, true);
            n.empty += lengths.iter().filter(|l| *l == Some(0)).count() as u64;
        }
    }

    /// The accumulator of a nested column whose derived columns are `children`.
    pub fn nested(
        name: &str,
        data_type: &DataType,
        kind: NestedKind,
        children: Vec<String>,
        options: &ProfileOptions,
    ) -> Self {
        let mut c = ColumnState::new(name, &DataType::Int64, options, false);
        let lengths = match (kind, c.stats) {
            (NestedKind::Struct, _) => None,
            (_, ColumnStats::Integer(s)) => Some(s),
            _ => None,
        };
        c.physical_type = data_type.to_string();
        c.stats = ColumnStats::Nested(Box::new(NestedState {
            kind,
            children,
            lengths,
            empty: 0,
        }));
        c
    }

    /// Folds `other` (the same column, other rows) into this one.
    pub fn merge(&mut self, other: &ColumnState) -> Result<()> {
        if self.physical_type != other.physical_type {
            return Err(Error::SchemaMismatch {
                column: self.name.clone(),
                detail: format!(
                    "is {} in one partial profile but {} in another",
                    self.physical_type, other.physical_type
                ),
            });
        }
        self.rows += other.rows;
        self.nulls += other.nulls;
        match (&mut self.stats, &other.stats) {
            (
                ColumnStats::Boolean {
                    true_count,
                    false_count,
                },
                ColumnStats::Boolean {
                    true_count: t,
                    false_count: f,
                },
            ) => {
                *true_count += t;
                *false_count += f;
            }
            (ColumnStats::Integer(a), ColumnStats::Integer(b)) => a.merge(b)?,
            (ColumnStats::Temporal { state: a, .. }, ColumnStats::Temporal { state: b, .. }) => {
                a.merge(b)?
            }
            (ColumnStats::Float(a), ColumnStats::Float(b)) => a.merge(b)?,
            (ColumnStats::String(a), ColumnStats::String(b)) => a.merge(b)?,
            (
                ColumnStats::Binary {
                    empty,
                    min_length,
                    max_length,
                    total_length,
                },
                ColumnStats::Binary {
                    empty: e,
                    min_length: mn,
                    max_length: mx,
                    total_length: t,
                },
            ) => {
                *empty += e;
                *total_length += t;
                *min_length = min_opt(*min_length, *mn);
                *max_length = max_opt(*max_length, *mx);
            }
            (ColumnStats::Other, ColumnStats::Other) => {}
            (ColumnStats::Bytes(a), ColumnStats::Bytes(b)) => {
                a.empty += b.empty;
                a.lengths.merge(&b.lengths)?;
                a.values.merge(&b.values)?;
                a.values.take_evicted();
            }
            (ColumnStats::Nested(a), ColumnStats::Nested(b))
                if a.kind == b.kind && a.children == b.children =>
            {
                a.empty += b.empty;
                match (&mut a.lengths, &b.lengths) {
                    (Some(x), Some(y)) => x.merge(y)?,
                    (None, None) => {}
                    _ => {
                        return Err(Error::Merge(format!(
                            "column `{}` has list lengths in one partial but not in another",
                            self.name
                        )));
                    }
                }
            }
            _ => {
                return Err(Error::Merge(format!(
                    "column `{}` has different kinds of statistics in two partials",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// The columns derived from this one (one level down): none unless it is nested.
    pub fn children(&self) -> &[String] {
        match &self.stats {
            ColumnStats::Nested(n) => &n.children,
            _ => &[],
        }
    }

    /// Ends the task in a hash-partitioned plan whose key this column is.
    pub fn summarize_bucket(&mut self, plan: &str, bucket: u32) {
        match &mut self.stats {
            ColumnStats::Integer(s) | ColumnStats::Temporal { state: s, .. } => {
                s.values.summarize_bucket(plan, bucket);
                s.replay_evicted();
            }
            ColumnStats::Float(s) => {
                s.values.summarize_bucket(plan, bucket);
                s.replay_evicted();
            }
            ColumnStats::String(s) => {
                s.values.summarize_bucket(plan, bucket);
                s.absorb_evicted();
            }
            _ => {}
        }
    }
}

fn temporal_unit(t: &DataType) -> TemporalUnit {
    match t {
        DataType::Date32 => TemporalUnit::Date,
        DataType::Date64 => TemporalUnit::DateMillis,
        DataType::Timestamp(u, tz) => TemporalUnit::Timestamp {
            unit: u.into(),
            tz: tz.as_ref().map(|t| t.to_string()),
        },
        DataType::Time32(u) | DataType::Time64(u) => TemporalUnit::Time(u.into()),
        DataType::Duration(u) => TemporalUnit::Duration(u.into()),
        _ => TemporalUnit::Date,
    }
}

/// The integers behind a temporal array, without conversion of units.
fn temporal_as_i64(array: &ArrayRef) -> Int64Array {
    let data = array.to_data();
    match array.data_type() {
        DataType::Date32 | DataType::Time32(_) => {
            let ints: PrimitiveArray<Int32Type> = PrimitiveArray::from(
                data.into_builder()
                    .data_type(DataType::Int32)
                    .build()
                    .expect("same layout"),
            );
            ints.unary(i64::from)
        }
        _ => PrimitiveArray::from(
            data.into_builder()
                .data_type(DataType::Int64)
                .build()
                .expect("same layout"),
        ),
    }
}

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Calls `f` with every non-null value of a primitive array.
#[inline]
fn for_each_valid<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, mut f: impl FnMut(T::Native)) {
    let values = a.values();
    match a.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().for_each(|&v| f(v)),
        Some(nulls) => nulls.valid_indices().for_each(|i| f(values[i])),
    }
}

impl IntState {
    pub(super) fn update(&mut self, a: &Int64Array, floats: &mut Vec<f64>, moments: bool) {
        if a.len() == a.null_count() {
            return;
        }
        floats.clear();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let (mut zeros, mut negatives, mut sum) = (0u64, 0u64, 0i128);
        for_each_valid(a, |v| {
            lo = lo.min(v);
            hi = hi.max(v);
            zeros += u64::from(v == 0);
            negatives += u64::from(v < 0);
            sum += i128::from(v);
            if moments {
                floats.push(v as f64);
            }
            // While counts are exact the map holds the distribution; the sketch takes only
            // what the map does not (see `replay_evicted`).
            if !self.values.observe(&v) {
                self.quantiles.update_int(v);
            }
        });
        self.replay_evicted();
        self.min = min_opt(self.min, Some(lo));
        self.max = max_opt(self.max, Some(hi));
        self.zeros += zeros;
        self.negatives += negatives;
        self.sum += sum;
        if moments {
            self.moments.merge(&Moments::of_slice(floats));
        }
    }

    fn merge(&mut self, o: &IntState) -> Result<()> {
        self.zeros += o.zeros;
        self.negatives += o.negatives;
        self.min = min_opt(self.min, o.min);
        self.max = max_opt(self.max, o.max);
        self.sum += o.sum;
        self.moments.merge(&o.moments);
        self.quantiles.merge(&o.quantiles)?;
        self.values.merge(&o.values)?;
        self.replay_evicted();
        Ok(())
    }

    /// Values that left the exact map now go into the quantile sketch: every value is counted
    /// in exactly one of the two.
    fn replay_evicted(&mut self) {
        for (v, c) in self.values.take_evicted() {
            for _ in 0..c {
                self.quantiles.update_int(v);
            }
        }
    }
}

/// The key a float is counted under: its bits, with −0.0 and 0.0 as one value.
#[inline]
pub fn float_key(v: f64) -> u64 {
    if v == 0.0 { 0 } else { v.to_bits() }
}

impl FloatState {
    fn update(&mut self, a: &Float64Array, floats: &mut Vec<f64>) {
        floats.clear();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut nan, mut pos_inf, mut neg_inf, mut zeros, mut negatives) = (0, 0, 0, 0, 0);
        for_each_valid(a, |v| {
            if v.is_nan() {
                nan += 1;
                return;
            }
            lo = lo.min(v);
            hi = hi.max(v);
            pos_inf += u64::from(v == f64::INFINITY);
            neg_inf += u64::from(v == f64::NEG_INFINITY);
            zeros += u64::from(v == 0.0);
            negatives += u64::from(v < 0.0);
            floats.push(v);
            if !self.values.observe(&float_key(v)) {
                self.quantiles.update_float(v);
            }
        });
        self.replay_evicted();
        if !floats.is_empty() {
            self.min = min_opt(self.min, Some(lo));
            self.max = max_opt(self.max, Some(hi));
            self.sum.add_slice(floats);
            self.moments.merge(&Moments::of_slice(floats));
        }
        self.nan += nan;
        self.pos_inf += pos_inf;
        self.neg_inf += neg_inf;
        self.zeros += zeros;
        self.negatives += negatives;
    }

    fn merge(&mut self, o: &FloatState) -> Result<()> {
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.zeros += o.zeros;
        self.negatives += o.negatives;
        self.min = min_opt(self.min, o.min);
        self.max = max_opt(self.max, o.max);
        self.sum.merge(&o.sum);
        self.moments.merge(&o.moments);
        self.quantiles.merge(&o.quantiles)?;
        self.values.merge(&o.values)?;
        self.replay_evicted();
        Ok(())
    }

    fn replay_evicted(&mut self) {
        for (bits, c) in self.values.take_evicted() {
            for _ in 0..c {
                self.quantiles.update_float(f64::from_bits(bits));
            }
        }
    }
}

/// A string's first eight bytes as one big-endian integer (zero-padded): comparing these
/// decides most string comparisons (byte order) without touching the rest.
#[inline]
fn prefix(s: &[u8]) -> u64 {
    match s.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => s
            .iter()
            .enumerate()
            .fold(0, |w, (i, &b)| w | (u64::from(b) << (56 - 8 * i))),
    }
}

/// The smallest or largest string of a batch so far, with its prefix.
#[derive(Clone, Copy)]
struct Extreme<'a> {
    prefix: u64,
    value: &'a str,
}

impl<'a> Extreme<'a> {
    #[inline]
    fn of(value: &'a str) -> Self {
        Extreme {
            prefix: prefix(value.as_bytes()),
            value,
        }
    }

    /// `self < other` in byte order.
    #[inline]
    fn less(&self, other: &Extreme) -> bool {
        if self.prefix != other.prefix {
            self.prefix < other.prefix
        } else {
            self.value < other.value
        }
    }
}

impl StringState {
    fn update<'a>(&mut self, values: impl Iterator<Item = Option<&'a str>>, ascii: bool) {
        let mut batch_min: Option<Extreme> = None;
        let mut batch_max: Option<Extreme> = None;
        let (mut lmin, mut lmax, mut total, mut empty) = (u64::MAX, 0u64, 0u64, 0u64);
        for s in values.flatten() {
            let len = if ascii { s.len() } else { s.chars().count() } as u64;
            lmin = lmin.min(len);
            lmax = lmax.max(len);
            total += len;
            let this = Extreme::of(s);
            match (&mut batch_min, &mut batch_max) {
                (Some(lo), Some(hi)) => {
                    if this.less(lo) {
                        *lo = this;
                    } else if hi.less(&this) {
                        *hi = this;
                    }
                }
                _ => (batch_min, batch_max) = (Some(this), Some(this)),
            }
            // A long value is counted by a shortened key, whose patterns are not the value's:
            // its patterns are counted here, from the value, and never from the key.
            let key = bounded_key(s);
            let in_map = self.values.observe(key.as_ref());
            if s.is_empty() {
                empty += 1;
            } else if (!in_map || matches!(key, Cow::Owned(_)))
                && let Some(p) = &mut self.patterns
            {
                p.observe(s);
            }
        }
        let (Some(batch_min), Some(batch_max)) = (batch_min, batch_max) else {
            return;
        };
        self.empty += empty;
        self.total_length += total;
        self.min_length = min_opt(self.min_length, Some(lmin));
        self.max_length = max_opt(self.max_length, Some(lmax));
        // Kept as prefixes (see `string_prefix`): the prefix of the batch's extreme is the
        // extreme of its values' prefixes, so comparing prefixes gives the same min and max in
        // one pass and in any merge.
        let (lo, hi) = (
            string_prefix(batch_min.value),
            string_prefix(batch_max.value),
        );
        if self.min.as_deref().is_none_or(|cur| lo < cur) {
            self.min = Some(lo.to_string());
        }
        if self.max.as_deref().is_none_or(|cur| hi > cur) {
            self.max = Some(hi.to_string());
        }
        self.absorb_evicted();
    }

    /// Values that left the exact map get their patterns counted now.
    fn absorb_evicted(&mut self) {
        let evicted = self.values.take_evicted();
        if let Some(p) = &mut self.patterns {
            for (v, c) in evicted.iter().filter(|(v, _)| counts_patterns(v)) {
                p.observe_n(v, *c);
            }
        }
    }

    fn merge(&mut self, o: &StringState) -> Result<()> {
        self.empty += o.empty;
        self.total_length += o.total_length;
        self.min_length = min_opt(self.min_length, o.min_length);
        self.max_length = max_opt(self.max_length, o.max_length);
        // A partial of an earlier release may hold whole strings: their prefixes merge alike.
        if let Some(m) = o.min.as_deref().map(string_prefix)
            && self.min.as_deref().is_none_or(|cur| m < cur)
        {
            self.min = Some(m.to_string());
        }
        if let Some(m) = o.max.as_deref().map(string_prefix)
            && self.max.as_deref().is_none_or(|cur| m > cur)
        {
            self.max = Some(m.to_string());
        }
        match (&mut self.patterns, &o.patterns) {
            (Some(a), Some(b)) => a.merge(b),
            (a @ Some(_), None) => *a = None,
            _ => {}
        }
        self.values.merge(&o.values)?;
        self.absorb_evicted();
        Ok(())
    }

    /// Pattern counts over every non-empty value: those counted directly plus the exact map's
    /// entries, each classified once and weighted by its count.
    pub fn pattern_counts(&self) -> Option<PatternCounts> {
        let mut total = self.patterns.clone()?;
        if let Some(map) = self.values.exact_counts() {
            for (v, c) in map.iter().filter(|(v, _)| counts_patterns(v)) {
                total.observe_n(v, *c);
            }
        }
        Some(total)
    }

    /// Whether the min, max or a counted value may be a prefix of a longer string: some kept
    /// string reaches [`MAX_KEPT_STRING_CHARS`] characters.
    /// `summary` is this column's value summary.
    pub fn truncated(&self, summary: &ValueSummary<String>) -> bool {
        let long = |s: &str| {
            s.len() >= MAX_KEPT_STRING_CHARS && s.chars().nth(MAX_KEPT_STRING_CHARS - 1).is_some()
        };
        [&self.min, &self.max]
            .into_iter()
            .flatten()
            .any(|s| long(s))
            || summary.top.iter().any(|t| is_shortened_key(&t.value))
            || summary
                .bottom
                .iter()
                .flatten()
                .any(|t| is_shortened_key(&t.value))
    }
}

/// Whether a counted string's patterns are counted from the exact map: not for the empty string
/// (no pattern) nor for a shortened key (counted from the value as it was read).
fn counts_patterns(v: &str) -> bool {
    !v.is_empty() && !is_shortened_key(v)
}

#[cfg(test)]
mod tests {
    use super::Extreme;

    #[test]
    fn prefix_comparison_agrees_with_string_order() {
        let words = [
            "",
            "a",
            "ab",
            "ab\0",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgg~",
            "b",
            "é",
            "東京",
            "~",
        ];
        for a in words {
            for b in words {
                assert_eq!(Extreme::of(a).less(&Extreme::of(b)), a < b, "{a:?} < {b:?}");
            }
        }
    }
}
