//! Property tests of the merge: for random tables (every type, nulls, NaN, infinities, empty
//! strings, unicode, constant and all-null columns), random partition counts and every strategy,
//! merged in random orders and groupings, the merged profile's exact statistics equal the
//! single-pass ones (floats to 1e-9 relative) and the ground truth, and its estimates lie within
//! their stated bounds of the ground truth. With row sampling, the same holds of the sampled
//! rows, whose ground truth is computed from each row's file and position.

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use truthound_profile::dataset::{StorageOptions, discover};
use truthound_profile::kernel::column::{TemporalUnit, Unit};
use truthound_profile::profile::{ColumnProfile, QUANTILES, render_temporal};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::sample::FileSampler;
use truthound_profile::{
    PartialProfile, PlanRequest, ProfileOptions, Sampling, Strategy, TableProfile, plan,
};

/// A column of the generated table, as plain Rust values (the ground truth).
#[derive(Debug, Clone)]
enum Col {
    Int(Vec<Option<i64>>),
    Int32(Vec<Option<i32>>),
    Float(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Date(Vec<Option<i32>>),
    Ts(Vec<Option<i64>>),
}

impl Col {
    fn array(&self, range: std::ops::Range<usize>) -> ArrayRef {
        match self {
            Col::Int(v) => Arc::new(Int64Array::from(v[range].to_vec())),
            Col::Int32(v) => Arc::new(Int32Array::from(v[range].to_vec())),
            Col::Float(v) => Arc::new(Float64Array::from(v[range].to_vec())),
            Col::Str(v) => Arc::new(StringArray::from(v[range].to_vec())),
            Col::Bool(v) => Arc::new(BooleanArray::from(v[range].to_vec())),
            Col::Date(v) => Arc::new(Date32Array::from(v[range].to_vec())),
            Col::Ts(v) => Arc::new(TimestampMicrosecondArray::from(v[range].to_vec())),
        }
    }
}

const WORDS: [&str; 12] = [
    "",
    "alpha",
    "naïve",
    "東京",
    "😀 emoji",
    "user1@example.com",
    "42",
    "-3.5",
    "2024-02-29",
    "https://example.org/a",
    "Zürich",
    "alpha ",
];

fn table(seed: u64, rows: usize) -> Vec<(&'static str, Col)> {
    let mut r = StdRng::seed_from_u64(seed);
    let with_inf = r.random_bool(0.2);
    let opt = |p_null: f64, r: &mut StdRng| !r.random_bool(p_null);
    let ints = (0..rows)
        .map(|_| opt(0.1, &mut r).then(|| r.random_range(-20..20)))
        .collect();
    let big = (0..rows)
        .map(|_| opt(0.02, &mut r).then(|| r.random_range(-1_000_000_000i64..1_000_000_000)))
        .collect();
    let i32s = (0..rows)
        .map(|_| opt(0.3, &mut r).then(|| r.random_range(0..5)))
        .collect();
    let floats = (0..rows)
        .map(|_| {
            opt(0.1, &mut r).then(|| match r.random_range(0..100) {
                0..=3 => f64::NAN,
                4 if with_inf => f64::INFINITY,
                5 if with_inf => f64::NEG_INFINITY,
                6 => -0.0,
                7 => 0.0,
                _ => (r.random::<f64>() - 0.3) * 1000.0,
            })
        })
        .collect();
    let strs = (0..rows)
        .map(|_| {
            opt(0.1, &mut r).then(|| {
                if r.random_bool(0.7) {
                    WORDS[r.random_range(0..WORDS.len())].to_string()
                } else {
                    format!(
                        "w{}-{}",
                        r.random_range(0..50),
                        "é".repeat(r.random_range(0..3))
                    )
                }
            })
        })
        .collect();
    let bools = (0..rows)
        .map(|_| opt(0.2, &mut r).then(|| r.random_bool(0.6)))
        .collect();
    let dates = (0..rows)
        .map(|_| opt(0.1, &mut r).then(|| r.random_range(18_000..18_100)))
        .collect();
    let ts = (0..rows)
        .map(|_| {
            opt(0.1, &mut r)
                .then(|| 1_700_000_000_000_000 + r.random_range(0..1_000_000i64) * 1_000_000)
        })
        .collect();
    vec![
        ("i", Col::Int(ints)),
        ("big", Col::Int(big)),
        ("i32", Col::Int32(i32s)),
        ("f", Col::Float(floats)),
        ("s", Col::Str(strs)),
        ("b", Col::Bool(bools)),
        ("d", Col::Date(dates)),
        ("t", Col::Ts(ts)),
        ("constant", Col::Str(vec![Some("k".to_string()); rows])),
        ("all_null", Col::Int(vec![None; rows])),
    ]
}

/// Writes the table as `files` Parquet files with row groups of `rg` rows.
fn write(dir: &std::path::Path, cols: &[(&str, Col)], rows: usize, files: usize, rg: usize) {
    let per = rows.div_ceil(files).max(1);
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rg.max(1)))
        .build();
    for f in 0..files {
        let (a, b) = ((f * per).min(rows), ((f + 1) * per).min(rows));
        let batch =
            RecordBatch::try_from_iter(cols.iter().map(|(n, c)| (*n, c.array(a..b)))).unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{f:02}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// The rows of a table written by [`write`] that `sampling` keeps.
fn sampled(
    cols: &[(&'static str, Col)],
    rows: usize,
    files: usize,
    sampling: &Sampling,
) -> (Vec<(&'static str, Col)>, usize) {
    let per = rows.div_ceil(files).max(1);
    let keep: Vec<bool> = (0..rows)
        .map(|r| {
            let file = format!("part-{:02}.parquet", r / per);
            FileSampler::new(sampling, &file).keeps((r % per) as u64)
        })
        .collect();
    fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
        v.iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| x.clone())
            .collect()
    }
    let cols = cols
        .iter()
        .map(|(n, c)| {
            let c = match c {
                Col::Int(v) => Col::Int(pick(v, &keep)),
                Col::Int32(v) => Col::Int32(pick(v, &keep)),
                Col::Float(v) => Col::Float(pick(v, &keep)),
                Col::Str(v) => Col::Str(pick(v, &keep)),
                Col::Bool(v) => Col::Bool(pick(v, &keep)),
                Col::Date(v) => Col::Date(pick(v, &keep)),
                Col::Ts(v) => Col::Ts(pick(v, &keep)),
            };
            (*n, c)
        })
        .collect();
    (cols, keep.iter().filter(|k| **k).count())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs every task of a plan and returns the partials (not merged).
fn partials(dir: &std::path::Path, request: &PlanRequest) -> Vec<PartialProfile> {
    rt().block_on(async {
        let ds = discover(dir.to_str().unwrap(), None, &StorageOptions::default())
            .await
            .unwrap();
        let plan = plan::plan(&ds, request).unwrap();
        let store = plan_store(&plan).unwrap();
        let mut out = Vec::new();
        for t in &plan.tasks {
            out.push(
                run_task(&plan, t.id, store.clone(), &no_progress())
                    .await
                    .unwrap(),
            );
        }
        out
    })
}

/// Merges in a random grouping: repeatedly two random partials become one.
fn merge_randomly(mut parts: Vec<PartialProfile>, rng: &mut StdRng) -> PartialProfile {
    parts.shuffle(rng);
    while parts.len() > 1 {
        let i = rng.random_range(0..parts.len());
        let a = parts.swap_remove(i);
        let j = rng.random_range(0..parts.len());
        let mut b = parts.swap_remove(j);
        if rng.random_bool(0.5) {
            b.merge(&a).unwrap();
            parts.push(b);
        } else {
            let mut a = a;
            a.merge(&b).unwrap();
            parts.push(a);
        }
    }
    parts.pop().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn assert_close(what: &str, a: Option<f64>, b: Option<f64>) {
    match (a, b) {
        (Some(x), Some(y)) => assert!(close(x, y), "{what}: {x} vs {y}"),
        (x, y) => assert_eq!(x.is_some(), y.is_some(), "{what}: {x:?} vs {y:?}"),
    }
}

/// Merged vs single pass: exact statistics equal, floats to 1e-9 relative.
fn assert_same_exact(m: &ColumnProfile, s: &ColumnProfile) {
    let n = &m.name;
    assert_eq!(m.physical_type, s.physical_type, "{n}");
    for (what, a, b) in [
        ("rows", Some(m.row_count), Some(s.row_count)),
        ("nulls", Some(m.null_count), Some(s.null_count)),
        ("nan", m.nan_count, s.nan_count),
        ("+inf", m.pos_inf_count, s.pos_inf_count),
        ("-inf", m.neg_inf_count, s.neg_inf_count),
        ("zeros", m.zero_count, s.zero_count),
        ("negatives", m.negative_count, s.negative_count),
        ("true", m.true_count, s.true_count),
        ("false", m.false_count, s.false_count),
        ("empty", m.empty_string_count, s.empty_string_count),
        ("min_length", m.min_length, s.min_length),
        ("max_length", m.max_length, s.max_length),
    ] {
        assert_eq!(a, b, "{n}.{what}");
    }
    assert_eq!(m.min, s.min, "{n}.min");
    assert_eq!(m.max, s.max, "{n}.max");
    match (&m.sum, &s.sum) {
        (Some(Value::Number(a)), Some(Value::Number(b))) if a.is_i64() => {
            assert_eq!(a, b, "{n}.sum")
        }
        (Some(a), Some(b)) => assert_close(&format!("{n}.sum"), a.as_f64(), b.as_f64()),
        (a, b) => assert_eq!(a, b, "{n}.sum"),
    }
    assert_close(&format!("{n}.avg_length"), m.avg_length, s.avg_length);
    match (&m.distribution, &s.distribution) {
        (Some(a), Some(b)) => {
            for (what, x, y) in [
                ("mean", a.mean, b.mean),
                ("std", a.std, b.std),
                ("variance", a.variance, b.variance),
                ("skewness", a.skewness, b.skewness),
                ("kurtosis", a.kurtosis, b.kurtosis),
                ("min", a.min, b.min),
                ("max", a.max, b.max),
            ] {
                match (what, x, y) {
                    // Dimensionless, and near 0 for symmetric data: rounding of the central
                    // moments leaves noise of about 1e-17 with either sign there, so an absolute
                    // tolerance as well.
                    ("skewness" | "kurtosis", Some(a), Some(b)) if (a - b).abs() <= 1e-9 => {}
                    _ => assert_close(&format!("{n}.{what}"), x, y),
                }
            }
        }
        (a, b) => assert_eq!(a.is_some(), b.is_some(), "{n}.distribution"),
    }
    assert_eq!(m.detected_patterns, s.detected_patterns, "{n}.patterns");
    let exact = |p: &ColumnProfile| p.accuracy.distinct_count.as_ref().is_some_and(|e| e.exact);
    if exact(m) && exact(s) {
        assert_eq!(m.distinct_count, s.distinct_count, "{n}.distinct");
        assert_eq!(m.top_values, s.top_values, "{n}.top");
        assert_eq!(m.bottom_values, s.bottom_values, "{n}.bottom");
        assert_eq!(m.inferred_type, s.inferred_type, "{n}.inferred_type");
    }
    let q_exact = |p: &ColumnProfile| p.accuracy.quantiles.as_ref().is_some_and(|e| e.exact);
    if q_exact(m) && q_exact(s) {
        assert_eq!(m.quantiles, s.quantiles, "{n}.quantiles");
        assert_eq!(m.histogram, s.histogram, "{n}.histogram");
    }
}

/// The ground truth of a column's value counts: (key as JSON, count), in the profile's order
/// for ties (the engine's key order).
fn truth_counts(col: &Col) -> Vec<(Value, u64, Vec<u8>)> {
    let mut counts: HashMap<Vec<u8>, (Value, u64)> = HashMap::new();
    let mut add = |key: Vec<u8>, v: Value| counts.entry(key).or_insert((v, 0)).1 += 1;
    match col {
        // Keys order like the engine's: i64 numerically (sign-flipped big-endian bytes), floats
        // by bit pattern, strings by bytes.
        Col::Int(v) => v
            .iter()
            .flatten()
            .for_each(|x| add(int_key(*x), Value::from(*x))),
        Col::Int32(v) => v
            .iter()
            .flatten()
            .for_each(|x| add(int_key(i64::from(*x)), Value::from(*x))),
        Col::Date(v) => v.iter().flatten().for_each(|x| {
            add(
                int_key(i64::from(*x)),
                render_temporal(&TemporalUnit::Date, i64::from(*x)),
            )
        }),
        Col::Ts(v) => v.iter().flatten().for_each(|x| {
            let unit = TemporalUnit::Timestamp {
                unit: Unit::Microsecond,
                tz: None,
            };
            add(int_key(*x), render_temporal(&unit, *x))
        }),
        Col::Float(v) => v.iter().flatten().filter(|x| !x.is_nan()).for_each(|x| {
            let bits = if *x == 0.0 { 0 } else { x.to_bits() };
            add(
                bits.to_be_bytes().to_vec(),
                if x.is_finite() {
                    Value::from(f64::from_bits(bits))
                } else {
                    Value::Null
                },
            )
        }),
        Col::Str(v) => v
            .iter()
            .flatten()
            .for_each(|x| add(x.as_bytes().to_vec(), Value::from(x.clone()))),
        Col::Bool(_) => {}
    }
    let mut out: Vec<(Value, u64, Vec<u8>)> =
        counts.into_iter().map(|(k, (v, c))| (v, c, k)).collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// i64 keys order numerically as sign-flipped big-endian bytes.
fn int_key(x: i64) -> Vec<u8> {
    ((x as u64) ^ (1 << 63)).to_be_bytes().to_vec()
}

fn sorted_numbers(col: &Col) -> Vec<f64> {
    let mut v: Vec<f64> = match col {
        Col::Int(v) | Col::Ts(v) => v.iter().flatten().map(|x| *x as f64).collect(),
        Col::Int32(v) | Col::Date(v) => v.iter().flatten().map(|x| *x as f64).collect(),
        Col::Float(v) => v
            .iter()
            .flatten()
            .copied()
            .filter(|x| !x.is_nan())
            .collect(),
        _ => Vec::new(),
    };
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A profile against the ground truth: exact figures equal it, estimates within their bounds.
fn assert_truthful(p: &ColumnProfile, col: &Col, rows: usize) {
    let n = &p.name;
    assert_eq!(p.row_count as usize, rows, "{n}.rows");
    if matches!(col, Col::Bool(_)) {
        return;
    }
    let counts = truth_counts(col);
    let distinct = counts.len() as u64;
    let acc = p.accuracy.distinct_count.as_ref();
    match acc {
        Some(e) if e.exact => assert_eq!(p.distinct_count, Some(distinct), "{n}.distinct"),
        Some(e) => {
            let (lo, hi) = (e.lower_bound.unwrap(), e.upper_bound.unwrap());
            assert!(
                lo <= distinct as f64 && distinct as f64 <= hi,
                "{n}.distinct {distinct} not in [{lo}, {hi}]"
            );
        }
        None => assert_eq!(distinct, 0, "{n}: no distinct accuracy"),
    }
    let truth: HashMap<String, u64> = counts.iter().map(|(v, c, _)| (v.to_string(), *c)).collect();
    let top_exact = p.accuracy.top_values.as_ref().is_none_or(|e| e.exact);
    if top_exact {
        let mut expect = counts.clone();
        expect.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.2.cmp(&b.2)));
        let got: Vec<(String, u64)> = p
            .top_values
            .iter()
            .map(|t| (t.value.to_string(), t.count))
            .collect();
        let want: Vec<(String, u64)> = expect
            .iter()
            .take(got.len().max(1).min(expect.len()))
            .map(|(v, c, _)| (v.to_string(), *c))
            .collect();
        assert_eq!(got, want, "{n}.top_values");
    } else if !top_exact {
        let err = p
            .accuracy
            .top_values
            .as_ref()
            .unwrap()
            .max_count_error
            .unwrap();
        for t in &p.top_values {
            let real = truth.get(&t.value.to_string()).copied().unwrap_or(0);
            assert!(
                t.count.abs_diff(real) <= err,
                "{n}.top {} count {} vs true {real} (±{err})",
                t.value,
                t.count
            );
        }
    }
    let sorted = sorted_numbers(col);
    if let (Some(q), false) = (&p.quantiles, sorted.is_empty()) {
        let e = p.accuracy.quantiles.as_ref().unwrap();
        let eps = e.normalized_rank_error.unwrap_or(0.0);
        let len = sorted.len() as f64;
        for (name, rank) in QUANTILES {
            let v = match (&q[name], col) {
                (Value::Number(x), _) => x.as_f64().unwrap(),
                (Value::Null, Col::Float(_)) => continue, // an infinite quantile
                (other, _) => {
                    // Temporal quantiles are ISO strings: check they are among the values' range.
                    assert!(other.is_string(), "{n}.{name}: {other}");
                    continue;
                }
            };
            let below = sorted.partition_point(|x| *x < v) as f64 / len;
            let upto = sorted.partition_point(|x| *x <= v) as f64 / len;
            assert!(upto > 0.0, "{n}.{name} = {v} is not a value of the column");
            // The value's rank interval must come within eps (+ one item) of the asked rank.
            let slack = eps + 1.0 / len;
            assert!(
                below <= rank + slack && upto >= rank - slack,
                "{n}.{name} = {v}: ranks [{below}, {upto}] vs {rank} ± {eps}"
            );
        }
    }
}

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x7472_7574_686f),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn merged_profiles_equal_single_pass(
        seed in any::<u64>(),
        rows in 0usize..400,
        files in 1usize..4,
        row_group in 1usize..80,
        strategy in prop_oneof![Just(Strategy::RowBased), Just(Strategy::ColumnBased), Just(Strategy::Hybrid), Just(Strategy::Hash)],
        partitions in 1u32..7,
        column_partitions in 1u32..5,
        hash_column in prop_oneof![Just("i"), Just("s"), Just("big"), Just("d"), Just("f")],
        exact_limit in prop_oneof![Just(4usize), Just(40), Just(10_000)],
        kll_k in prop_oneof![Just(20u16), Just(200)],
        row_hash_limit in prop_oneof![Just(16usize), Just(1 << 20)],
        (top_k, sample) in (1usize..6, prop_oneof![Just(None), Just(Some(0.6)), Just(Some(0.15))]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cols = table(seed, rows);
        write(dir.path(), &cols, rows, files, row_group);
        let sampling = sample.map(|f| Sampling::new(f, seed));
        let options = ProfileOptions {
            top_k,
            exact_distinct_limit: exact_limit,
            kll_k,
            exact_row_hash_limit: row_hash_limit,
            frequent_items_map_size: 64,
            sampling,
            ..ProfileOptions::default()
        };
        // The ground truth of a sample: the rows the sampler keeps at their file positions.
        let (cols, rows) = match &sampling {
            Some(s) => sampled(&cols, rows, files, s),
            None => (cols, rows),
        };
        let mut request = PlanRequest::new(strategy, partitions);
        request.options = options.clone();
        if strategy == Strategy::Hybrid {
            request.column_partitions = Some(column_partitions);
        }
        if strategy == Strategy::Hash {
            request.hash_column = Some(hash_column.to_string());
        }
        let mut single_request = PlanRequest::new(Strategy::RowBased, 1);
        single_request.options = options;

        let single = partials(dir.path(), &single_request).pop().unwrap();
        let parts = partials(dir.path(), &request);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x55);
        let merged = merge_randomly(parts, &mut rng);
        prop_assert!(merged.missing_tasks().is_empty());

        let s = TableProfile::from_partial(&single, 0, false, 20);
        let m = TableProfile::from_partial(&merged, 0, false, 20);
        prop_assert_eq!(m.row_count as usize, rows);
        prop_assert_eq!(&m.sampling, &s.sampling);
        prop_assert_eq!(m.sampling.is_some(), sample.is_some());
        let names: Vec<&str> = m.columns.iter().map(|c| c.name.as_str()).collect();
        prop_assert_eq!(names, cols.iter().map(|c| c.0).collect::<Vec<_>>(), "column order");
        for ((mc, sc), (_, col)) in m.columns.iter().zip(&s.columns).zip(&cols) {
            assert_same_exact(mc, sc);
            assert_truthful(mc, col, rows);
            assert_truthful(sc, col, rows);
        }
        // Duplicate rows: truth from whole rows.
        let mut seen = std::collections::HashSet::new();
        for r in 0..rows {
            let key: Vec<String> = cols.iter().map(|(_, c)| format!("{:?}", c.array(r..r + 1))).collect();
            seen.insert(key);
        }
        let dups = (rows - seen.len()) as u64;
        for p in [&m, &s] {
            let e = p.accuracy.duplicate_row_count.as_ref().unwrap();
            if e.exact {
                prop_assert_eq!(p.duplicate_row_count, Some(dups));
            } else {
                let (lo, hi) = (e.lower_bound.unwrap(), e.upper_bound.unwrap());
                prop_assert!(lo <= dups as f64 && dups as f64 <= hi, "duplicates {} not in [{}, {}]", dups, lo, hi);
            }
        }
    }
}

#[test]
fn a_task_merged_twice_is_rejected_and_missing_tasks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cols = table(7, 100);
    write(dir.path(), &cols, 100, 2, 10);
    let parts = partials(dir.path(), &PlanRequest::new(Strategy::RowBased, 4));
    assert_eq!(parts.len(), 4);
    let mut a = parts[0].clone();
    a.merge(&parts[1]).unwrap();
    let err = a.merge(&parts[1]).unwrap_err().to_string();
    assert!(err.contains("task 1") && err.contains("twice"), "{err}");
    let missing = a.missing_tasks();
    assert_eq!(missing.values().next().unwrap(), &vec![2, 3]);
    let profile = TableProfile::from_partial(&a, 0, false, 20);
    assert_eq!(profile.partitioning.missing_tasks.len(), 1);
    assert!(profile.partitioning.missing_tasks[0].ends_with(":2-3"));
}

#[test]
fn partials_round_trip_through_bytes_and_embedded_state() {
    let dir = tempfile::tempdir().unwrap();
    let cols = table(11, 300);
    write(dir.path(), &cols, 300, 3, 25);
    let parts = partials(dir.path(), &PlanRequest::new(Strategy::Hybrid, 3));
    let mut merged = parts[0].clone();
    for p in &parts[1..] {
        let back = PartialProfile::from_bytes(&p.to_bytes(), "test").unwrap();
        merged.merge(&back).unwrap();
    }
    let profile = TableProfile::from_partial(&merged, 0, true, 20);
    let json = profile.to_json();
    let parsed: TableProfile = serde_json::from_slice(&json).unwrap();
    let state = parsed.state().unwrap().unwrap();
    let again = TableProfile::from_partial(&state, 0, false, 20);
    assert_eq!(
        again.columns,
        TableProfile::from_partial(&merged, 0, false, 20).columns
    );
    // Strict JSON: no NaN or Infinity tokens anywhere (outside the state, whose base64 text may
    // spell anything).
    let text = String::from_utf8(json).unwrap();
    let text = text.replace(&parsed.state.as_ref().unwrap().data, "");
    assert!(
        !text.contains("NaN") && !text.contains("Infinity"),
        "{text}"
    );
}
