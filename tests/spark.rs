//! `th profile --backend spark` against a real Spark cluster on 127.0.0.1 (a standalone master,
//! one worker and a Spark Connect server, `scripts/spark-cluster.sh` → `TH_TEST_SPARK_CONNECT`)
//! and the S3 server of the test run: the same exact figures as the in-process backend, with
//! what Spark cannot compute listed as unavailable; Spark's own sketches (KLL, HLL, frequent
//! items) within their bounds and merging with the engine's partials; CSV and NDJSON read with
//! the plan's schema; a malformed CSV row and a corrupt Parquet page named with Spark's error; a
//! connection broken in the middle of a query retried (through a proxy that cuts it); an
//! unreachable server and what Spark cannot run said clearly. And the Spark core
//! (`truthound_operator::backend::spark`) directly: a cancelled run interrupts its queries.
//!
//! Spark reads the dataset itself, from the local file system (this Spark has no S3 connector):
//! the datasets are written to temporary directories; the profiles go to the S3 server.

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use truthound_e2e::*;
use truthound_operator::backend::spark::{
    RemoteTasks, RunEvent, SparkError, SparkRun, SparkSubmit,
};
use truthound_operator::backend::tasks::TaskPhase;

const FILES: i64 = 3;
const ROWS: i64 = 3_000;

/// The Spark Connect server of this test run.
fn spark_connect() -> String {
    cluster_address("TH_TEST_SPARK_CONNECT", "spark-cluster.sh")
}

/// `th profile PATH --backend spark --spark-connect URL EXTRA...`.
fn th_spark(path: &str, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "profile",
        path,
        "--backend",
        "spark",
        "--spark-connect",
        url,
    ];
    args.extend_from_slice(extra);
    th(&args, &[])
}

/// Rows `range` of a table with every kind of column: integers with nulls, floats with NaN,
/// ±inf and −0.0, strings with empty and non-ASCII values, booleans with nulls, dates and
/// timestamps (without a zone, in µs; with one, in ms).
fn mixed(range: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        (
            "qty",
            Arc::new(Int64Array::from(
                ids.iter()
                    .map(|i| (i % 9 != 0).then_some((i * 37) % 501 - 250))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "price",
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| match i % 97 {
                        0 => Some(f64::NAN),
                        1 if i % 2 == 0 => Some(f64::INFINITY),
                        2 if i % 5 == 0 => Some(f64::NEG_INFINITY),
                        3 => Some(-0.0),
                        4 => None,
                        _ => Some(((i * 7919) % 10007) as f64 / 7.0 - 300.0),
                    })
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "city",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| match i % 11 {
                        0 => None,
                        1 => Some(String::new()),
                        2 => Some(format!("東京-{}", i % 13)),
                        3 => Some(format!("Zürich {}", i % 7)),
                        _ => Some(format!("c{}", (i * 31) % 257)),
                    })
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "active",
            Arc::new(BooleanArray::from(
                ids.iter()
                    .map(|i| (i % 7 != 0).then_some(i % 3 == 0))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "day",
            Arc::new(Date32Array::from(
                ids.iter()
                    .map(|i| (i % 13 != 0).then_some(18_000 + (i % 800) as i32))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "seen",
            Arc::new(TimestampMicrosecondArray::from(
                ids.iter()
                    .map(|i| Some(1_600_000_000_000_000 + i * 3_600_000_123))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "paid_at",
            Arc::new(
                TimestampMillisecondArray::from(
                    ids.iter()
                        .map(|i| {
                            (i % 5 != 0)
                                .then_some(1_650_000_000_000 + (i * 7_777_777) % 90_000_000_000)
                        })
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

/// `files` Parquet files of `rows` rows each (row groups of 1,000) in `dir`, from row `first`.
fn write_dataset(dir: &Path, first: i64, files: i64, rows: i64) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let start = first + f * rows;
        let bytes = parquet_bytes(&mixed(start..start + rows), 1_000);
        std::fs::write(dir.join(format!("part-{f}.parquet")), bytes).unwrap();
    }
}

fn columns(p: &Value) -> &Vec<Value> {
    p["columns"].as_array().unwrap()
}

/// Brings a Spark profile and the in-process one of the same data to what compares as it is:
/// Spark's unavailable figures left out of both, the moments and float sums checked close (and
/// the sums then set equal).
fn comparable(spark: &Value, local: &mut Value) {
    leave_out_what_spark_cannot_compute(spark, local);
    moments_close(spark, local);
    float_sums_close(spark, local);
}

/// What the spark backend leaves out is listed, with the reason; the local profile's same
/// figures are then left out too, so that the rest compares as it is.
fn leave_out_what_spark_cannot_compute(spark: &Value, local: &mut Value) {
    let table = spark["unavailable"]
        .as_array()
        .expect("table-level unavailable");
    assert!(
        table.iter().any(|u| u["statistic"] == "duplicate_row_count"
            && u["reason"]
                .as_str()
                .unwrap()
                .contains("not computed by the spark backend")),
        "{table:?}"
    );
    assert_eq!(spark["duplicate_row_count"], Value::Null);
    local["duplicate_row_count"] = Value::Null;
    for c in columns(spark) {
        let name = c["name"].as_str().unwrap();
        let listed: Vec<&str> = c["unavailable"]
            .as_array()
            .map(|u| u.iter().map(|u| u["statistic"].as_str().unwrap()).collect())
            .unwrap_or_default();
        if c["physical_type"] == "Utf8" {
            assert_eq!(listed, ["detected_patterns"], "{name}");
            assert_eq!(c["detected_patterns"], serde_json::json!([]), "{name}");
            let l = local["columns"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|l| l["name"] == name)
                .unwrap();
            l["detected_patterns"] = serde_json::json!([]);
        } else {
            assert!(listed.is_empty(), "{name}: {listed:?}");
        }
    }
}

/// Spark sums doubles plainly, the engine with compensation: their float sums agree to about
/// n·ε (relative), the other figures exactly. The float sums are checked here and then set
/// equal for `assert_same_exact`.
fn float_sums_close(spark: &Value, local: &mut Value) {
    for c in columns(spark) {
        if c["physical_type"] != "Float64" {
            continue;
        }
        let l = local["columns"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|l| l["name"] == c["name"])
            .unwrap();
        match (c["sum"].as_f64(), l["sum"].as_f64()) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                "{}.sum: {a} vs {b}",
                c["name"]
            ),
            _ => assert_eq!(c["sum"], l["sum"]),
        }
        l["sum"] = c["sum"].clone();
    }
}

/// The moments (Spark's var_pop, skewness and kurtosis made back into M2..M4) agree with the
/// engine's to 1e-9 (relative, or absolute near 0 where both are rounding noise).
fn moments_close(spark: &Value, local: &Value) {
    for c in columns(local) {
        let name = c["name"].as_str().unwrap();
        for f in ["mean", "std", "variance", "skewness", "kurtosis"] {
            let (a, b) = (
                &column(spark, name)["distribution"][f],
                &c["distribution"][f],
            );
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-3),
                    "{name}.{f}: {x} vs {y}"
                ),
                _ => assert_eq!(a, b, "{name}.{f}"),
            }
        }
    }
}

/// A quantile as a number: numbers as they are, temporal values (ISO 8601 text) in ms.
fn quantile_number(v: &Value) -> Option<f64> {
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let text = v.as_str()?;
    // Microseconds: a quantile of a microsecond column may carry all six fractional digits.
    let parsed = arrow::compute::cast(
        &(Arc::new(StringArray::from(vec![text])) as ArrayRef),
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
    )
    .ok()?;
    let us = parsed
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()?;
    us.is_valid(0).then(|| us.value(0) as f64 / 1000.0)
}

/// A column's non-null, non-NaN values as numbers, sorted: what its quantiles rank against
/// (temporal ones in milliseconds, the unit of `quantile_number`). `None` for a column that has
/// no quantiles.
fn ranked_values(data: &RecordBatch, name: &str) -> Option<Vec<f64>> {
    let a = data.column_by_name(name).unwrap().as_any();
    let mut v: Vec<f64> = if let Some(a) = a.downcast_ref::<Int64Array>() {
        a.iter().flatten().map(|x| x as f64).collect()
    } else if let Some(a) = a.downcast_ref::<Float64Array>() {
        a.iter().flatten().filter(|x| !x.is_nan()).collect()
    } else if let Some(a) = a.downcast_ref::<Date32Array>() {
        a.iter()
            .flatten()
            .map(|d| d as f64 * 86_400_000.0)
            .collect()
    } else if let Some(a) = a.downcast_ref::<TimestampMicrosecondArray>() {
        a.iter().flatten().map(|us| us as f64 / 1000.0).collect()
    } else if let Some(a) = a.downcast_ref::<TimestampMillisecondArray>() {
        a.iter().flatten().map(|ms| ms as f64).collect()
    } else {
        return None;
    };
    v.sort_by(f64::total_cmp);
    Some(v)
}

/// Every quantile of `profile` is within its stated normalized rank error of the truth, `data`:
/// the reported value's true rank range, `[#values < v, #values <= v] / n`, comes within the
/// bound (one rank for exact quantiles) of the quantile's rank. Ranks, not values, are what KLL
/// bounds: a column with ±inf may rightly report an infinite p1 or p99. An infinite quantile is
/// written as null; quantiles rise with their rank, so a null before the first finite one is
/// −inf and one after it +inf.
fn quantiles_within_rank_error(profile: &Value, data: &RecordBatch) {
    for c in columns(profile) {
        let name = c["name"].as_str().unwrap();
        let truth = ranked_values(data, name);
        let (Some(q), Some(truth)) = (c["quantiles"].as_object(), truth.as_ref()) else {
            assert!(
                c["quantiles"].is_null() && truth.is_none(),
                "{name}: quantiles {} for a column {} quantiles",
                c["quantiles"],
                if truth.is_some() { "with" } else { "without" }
            );
            continue;
        };
        let n = truth.len() as f64;
        let accuracy = &c["accuracy"]["quantiles"];
        let bound = match accuracy["method"].as_str() {
            Some("exact") => 1.0 / n,
            Some("kll") => accuracy["normalized_rank_error"].as_f64().unwrap(),
            other => panic!("{name}: quantile method {other:?}"),
        };
        let mut reported: Vec<(f64, &str, Option<f64>)> = q
            .iter()
            .map(|(k, v)| {
                let rank = k.strip_prefix('p').unwrap().parse::<f64>().unwrap() / 100.0;
                (rank, k.as_str(), quantile_number(v))
            })
            .collect();
        reported.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut seen_finite = false;
        for (rank, key, v) in reported {
            let v = match v {
                Some(v) => {
                    seen_finite = true;
                    v
                }
                None if seen_finite => f64::INFINITY,
                None => f64::NEG_INFINITY,
            };
            let below = truth.partition_point(|x| *x < v) as f64 / n;
            let at_or_below = truth.partition_point(|x| *x <= v) as f64 / n;
            assert!(
                below - bound <= rank && rank <= at_or_below + bound,
                "{name}.{key} = {v} has a true rank of {below}..{at_or_below}, beyond ±{bound}"
            );
        }
    }
}

/// Each column's estimated distinct count lies within the other profile's 99.7% HLL bounds.
fn distinct_within_bounds(estimated: &Value, reference: &Value) {
    for c in columns(reference) {
        let name = c["name"].as_str().unwrap();
        let e = column(estimated, name);
        let (Some(d), Some(truth)) = (e["distinct_count"].as_f64(), c["distinct_count"].as_f64())
        else {
            assert_eq!(e["distinct_count"], c["distinct_count"], "{name}");
            continue;
        };
        let acc = &e["accuracy"]["distinct_count"];
        if acc["exact"] == true {
            assert_eq!(d, truth, "{name}");
        } else {
            let (lo, hi) = (
                acc["lower_bound"].as_f64().unwrap(),
                acc["upper_bound"].as_f64().unwrap(),
            );
            assert!(
                lo <= truth && truth <= hi,
                "{name}: {truth} outside [{lo}, {hi}] ({d})"
            );
        }
    }
}

#[test]
fn spark_profile_equals_the_local_profile() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("events");
    write_dataset(&data, 0, FILES, ROWS);
    let uri = data.to_str().unwrap();
    let bucket = new_bucket("spark");
    let endpoint = s3_endpoint();
    let out_uri = format!("s3://{bucket}/profiles/events.json");
    // 4 tasks over 3 files: two tasks read some of a file's row groups (a row-index filter).
    let url = spark_connect();
    let out = th_spark(
        uri,
        &url,
        &[
            "--partitions",
            "4",
            "--endpoint",
            &endpoint,
            "-o",
            &out_uri,
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let spark: Value = serde_json::from_slice(&get(&bucket, "profiles/events.json")).unwrap();
    assert_eq!(spark["row_count"], FILES * ROWS);
    assert_eq!(spark["partitioning"]["tasks_merged"], 4);
    assert_eq!(spark["sources"][0]["uri"], uri);

    let out = th(&["profile", uri, "--partitions", "4", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut local: Value = serde_json::from_slice(&out.stdout).unwrap();
    comparable(&spark, &mut local);
    // Every task's values were counted exactly (at most 10,000 distinct per task): distinct
    // counts, top and bottom values and quantiles are exact, as in-process.
    assert_same_exact(&spark, &local);
    for c in columns(&local) {
        let name = c["name"].as_str().unwrap();
        for f in [
            "nan_count",
            "pos_inf_count",
            "neg_inf_count",
            "zero_count",
            "negative_count",
            "true_count",
            "false_count",
            "min_length",
            "max_length",
            "avg_length",
            "quantiles",
            "histogram",
            "is_unique",
            "inferred_type",
        ] {
            if f == "inferred_type" && c["physical_type"] == "Utf8" {
                continue; // the engine infers it from the patterns
            }
            assert_eq!(column(&spark, name)[f], c[f], "{name}.{f}");
        }
    }
    for name in ["price", "city"] {
        assert!(column(&spark, name)["top_values"].as_array().unwrap().len() >= 3);
    }
    assert_eq!(
        column(&spark, "price")["nan_count"],
        column(&local, "price")["nan_count"]
    );
}

#[test]
fn sparks_sketches_agree_and_merge_with_the_engines() {
    // A limit of 500 distinct values makes every high-cardinality column of a task a sketch:
    // KLL, HLL and frequent items from Spark's aggregates.
    let dir = tempfile::tempdir().unwrap();
    let (a, b, all) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("all"),
    );
    write_dataset(&a, 0, 2, ROWS);
    write_dataset(&b, 2 * ROWS, 1, ROWS);
    write_dataset(&all, 0, 3, ROWS);
    let limit = ["--exact-distinct-limit", "500"];
    let spark_partial = dir.path().join("a.partial");
    let url = spark_connect();
    // The URL from SPARK_CONNECT_URL.
    let mut args = vec![
        "profile",
        a.to_str().unwrap(),
        "--backend",
        "spark",
        "--json",
    ];
    args.extend(limit);
    args.extend(["--partial-out", spark_partial.to_str().unwrap()]);
    let out = th(&args, &[("SPARK_CONNECT_URL", &url)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spark: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut args = vec!["profile", a.to_str().unwrap(), "--json"];
    args.extend(limit);
    let out = th(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let local_a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = column(&spark, "id");
    assert_eq!(id["accuracy"]["distinct_count"]["method"], "hll", "{id}");
    assert_eq!(id["accuracy"]["quantiles"]["method"], "kll", "{id}");
    assert_eq!(
        column(&spark, "city")["accuracy"]["top_values"]["method"],
        "exact"
    );
    assert_eq!(
        column(&spark, "price")["accuracy"]["top_values"]["method"],
        "frequent_items"
    );
    distinct_within_bounds(&spark, &local_a);
    quantiles_within_rank_error(&spark, &mixed(0..2 * ROWS));
    quantiles_within_rank_error(&local_a, &mixed(0..2 * ROWS));
    moments_close(&spark, &local_a);

    // A Spark partial merges with an engine partial: the sketches are the same bytes.
    let engine_partial = dir.path().join("b.partial");
    let mut args = vec!["profile", b.to_str().unwrap(), "-q"];
    args.extend(limit);
    args.extend(["--partial-out", engine_partial.to_str().unwrap()]);
    let out = th(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = th(
        &[
            "merge",
            spark_partial.to_str().unwrap(),
            engine_partial.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut args = vec!["profile", all.to_str().unwrap(), "--json"];
    args.extend(limit);
    let out = th(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut whole: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged["row_count"], 3 * ROWS);
    comparable(&merged, &mut whole);
    distinct_within_bounds(&merged, &whole);
    quantiles_within_rank_error(&merged, &mixed(0..3 * ROWS));
    quantiles_within_rank_error(&whole, &mixed(0..3 * ROWS));
    for c in columns(&whole) {
        let name = c["name"].as_str().unwrap();
        for f in [
            "null_count",
            "min",
            "max",
            "sum",
            "nan_count",
            "empty_string_count",
            "true_count",
            "false_count",
            "min_length",
            "max_length",
        ] {
            assert_eq!(column(&merged, name)[f], c[f], "{name}.{f}");
        }
        // Frequent items: each reported count within the sketch's error of the true count.
        if column(&merged, name)["accuracy"]["top_values"]["method"] == "frequent_items" {
            let err = column(&merged, name)["accuracy"]["top_values"]["max_count_error"]
                .as_u64()
                .unwrap();
            let truth: BTreeMap<String, u64> = c["top_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["value"].to_string(), t["count"].as_u64().unwrap()))
                .collect();
            for t in column(&merged, name)["top_values"].as_array().unwrap() {
                if let Some(&n) = truth.get(&t["value"].to_string()) {
                    let got = t["count"].as_u64().unwrap();
                    assert!(got.abs_diff(n) <= err.max(1), "{name}: {t} vs {n} (±{err})");
                }
            }
        }
    }
}

#[test]
fn csv_and_ndjson_are_read_with_the_plans_schema() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let mut text = String::from("id,name,score,ok\n");
    for i in 0..400 {
        let name = match i % 5 {
            0 => String::new(),
            1 => "\"a, quoted\"".to_string(),
            2 => format!("Ünïcode {}", i % 9),
            _ => format!("n{}", i % 37),
        };
        let score = if i % 11 == 0 {
            String::new()
        } else {
            format!("{}", i as f64 / 8.0 - 20.0)
        };
        text.push_str(&format!("{i},{name},{score},{}\n", i % 3 == 0));
    }
    std::fs::write(&csv, text).unwrap();
    let ndjson = dir.path().join("t.ndjson");
    let mut lines = String::new();
    for i in 0..300 {
        let s = if i % 7 == 0 {
            "null".to_string()
        } else {
            format!("\"s{}\"", i % 23)
        };
        lines.push_str(&format!(
            "{{\"id\": {i}, \"s\": {s}, \"x\": {}}}\n",
            i as f64 * 0.5
        ));
    }
    std::fs::write(&ndjson, &lines).unwrap();
    // Compressed copies: Hadoop picks the codec by the extension, as the plan records it.
    let (gz, zst, bz2) = (
        dir.path().join("t.csv.gz"),
        dir.path().join("t.ndjson.zst"),
        dir.path().join("t.csv.bz2"),
    );
    let csv_text = std::fs::read(&csv).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&csv_text).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    std::fs::write(&zst, zstd::encode_all(lines.as_bytes(), 3).unwrap()).unwrap();
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(&csv_text).unwrap();
    std::fs::write(&bz2, e.finish().unwrap()).unwrap();
    for file in [&csv, &ndjson, &gz, &zst, &bz2] {
        let uri = file.to_str().unwrap();
        let out = th_spark(uri, &spark_connect(), &["--json"]);
        assert!(out.status.success(), "{uri}: {}", stderr(&out));
        let spark: Value = serde_json::from_slice(&out.stdout).unwrap();
        let out = th(&["profile", uri, "--json"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut local: Value = serde_json::from_slice(&out.stdout).unwrap();
        comparable(&spark, &mut local);
        assert_same_exact(&spark, &local);
    }
}

#[test]
fn bad_files_are_named_with_sparks_error() {
    // A CSV whose last row does not fit the schema inferred from its first rows: the plan is
    // made, and Spark (FAILFAST) refuses the row.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,v\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},{}\n", i * 2));
    }
    csv.push_str("x,notanumber\n");
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, csv).unwrap();
    let out = th_spark(file.to_str().unwrap(), &spark_connect(), &["-q"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("task 0 of 1 failed on the Spark cluster"),
        "{err}"
    );
    assert!(
        err.contains(&format!("Spark at {}", spark_connect())),
        "{err}"
    );
    assert!(err.contains("MALFORMED_RECORD_IN_PARSING"), "{err}");
    // Bad data is not retried.
    assert!(!err.contains("retrying"), "{err}");

    // A Parquet file whose footer is intact (so it is planned) but whose first page header is
    // garbage: Spark's error names the file, and its cause what is wrong.
    let data = dir.path().join("corrupt");
    std::fs::create_dir_all(&data).unwrap();
    let mut bytes = parquet_bytes(&mixed(0..500), 250);
    bytes[4..200].fill(0xff);
    std::fs::write(data.join("a.parquet"), bytes).unwrap();
    let out = th_spark(data.to_str().unwrap(), &spark_connect(), &["-q"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("FAILED_READ_FILE"), "{err}");
    assert!(err.contains("corrupt/a.parquet"), "{err}");
    assert!(err.contains("PageHeader"), "{err}");
}

#[test]
fn an_unreachable_server_or_what_spark_cannot_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    write_dataset(&data, 0, 1, 100);
    let uri = data.to_str().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("sc://127.0.0.1:{port}");
    let out = th_spark(uri, &url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("cannot reach Spark Connect at {url}")),
        "{err}"
    );

    // The ancestor's --master, when it is a Spark Connect URL.
    let out = th(
        &["profile", uri, "--backend", "spark", "--master", &url],
        &[],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));

    // Sampling and the hash strategy are the engine's hashes: refused before anything runs.
    let connect = spark_connect();
    for (extra, says) in [
        (vec!["--sample", "0.5"], "does not sample rows"),
        (
            vec!["--strategy", "hash", "--hash-column", "id"],
            "does not run the hash strategy",
        ),
    ] {
        let out = th_spark(uri, &connect, &extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

/// A TCP proxy to the Spark Connect server that breaks its first connection once the client
/// has sent `cut_after` bytes (in the middle of the first large request: a task's aggregation),
/// and forwards every later connection as it is. Returns its `sc://` URL.
fn flaky_proxy(upstream: &str, cut_after: usize) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let target = upstream
        .trim_start_matches("sc://")
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let limit = if n == 0 { cut_after } else { usize::MAX };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut sent = 0usize;
                while let Ok(k) = c_in.read(&mut buf) {
                    if k == 0 || s_out.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    sent += k;
                    if sent > limit {
                        break;
                    }
                }
                let _ = c_in.shutdown(Shutdown::Both);
                let _ = s_out.shutdown(Shutdown::Both);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Both);
            });
        }
    });
    format!("sc://127.0.0.1:{port}")
}

#[test]
fn a_broken_connection_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    write_dataset(&data, 0, 2, 500);
    let uri = data.to_str().unwrap();
    // The first request (the session's time zone) is small; the aggregation is several KB.
    let proxy = flaky_proxy(&spark_connect(), 2_000);
    let out = th_spark(uri, &proxy, &["--partitions", "2", "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("failed (exit code 75)"), "{err}");
    assert!(err.contains("retrying"), "{err}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["row_count"], 1_000);

    // Without retries, the broken connection fails the run as transient.
    let proxy = flaky_proxy(&spark_connect(), 2_000);
    let out = th_spark(uri, &proxy, &["--retries", "0", "-q"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
}

#[test]
fn a_cancelled_run_interrupts_its_queries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    write_dataset(&data, 0, FILES, ROWS);
    let plan = dir.path().join("plan.json");
    let out = th(
        &[
            "plan",
            data.to_str().unwrap(),
            "--partitions",
            "9",
            "-o",
            plan.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let partials = dir.path().join("partials");
    let rt = multi_thread_rt();
    let (states, err) = rt.block_on(async {
        let mut run = SparkRun::submit(SparkSubmit {
            connect_url: spark_connect(),
            work: RemoteTasks {
                run_id: "cancel-test".into(),
                plan_uri: plan.display().to_string(),
                partials_prefix: partials.display().to_string(),
                tasks: (0..9).collect(),
                env: BTreeMap::new(),
                worker_args: Vec::new(),
                retries: 0,
                worker_bin: None,
            },
            storage: Default::default(),
            concurrency: 1,
            connect_timeout: Duration::from_secs(15),
        })
        .await
        .expect("submitted");
        // Cancel as soon as the first task's query is running.
        loop {
            match tokio::time::timeout(Duration::from_secs(120), run.next_event()).await {
                Ok(Some(RunEvent::Task(t))) if t.phase == TaskPhase::Running => break,
                Ok(Some(_)) => continue,
                other => panic!("no task started: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        run.cancel().await;
        let drained = tokio::time::timeout(Duration::from_secs(60), async {
            while run.next_event().await.is_some() {}
        })
        .await;
        assert!(drained.is_ok(), "the run ends soon after it is cancelled");
        let states = run.poll();
        let err = run.finish().await.unwrap_err();
        (states, err)
    });
    assert!(matches!(err, SparkError::Cancelled), "{err}");
    assert_eq!(err.exit_code(), 130);
    // Tasks after the first never started.
    let written = std::fs::read_dir(&partials).map(|d| d.count()).unwrap_or(0);
    assert!(written < 9, "{written} partials written after cancel");
    assert!(
        states
            .iter()
            .filter(|t| t.phase == TaskPhase::Pending)
            .count()
            >= 7,
        "{states:?}"
    );
    // The query that was running was interrupted by Spark, not waited for.
    let first = &states[0];
    assert_eq!(first.phase, TaskPhase::Failed, "{states:?}");
    assert_eq!(first.exit_code, Some(130), "{first:?}");
    assert!(
        first
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted"),
        "{first:?}"
    );
}
