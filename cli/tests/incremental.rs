//! `th profile --cache`: incremental runs reuse the partials of unchanged files, run the tasks of
//! new and changed ones, and give the profile of a full run.

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

fn th(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th"))
        .args(args)
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .output()
        .expect("th runs")
}

/// `th profile ARGS --json`: the profile and what was said on stderr.
fn profile(args: &[&str]) -> (Value, String) {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = th(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "th {all:?}: {err}");
    (serde_json::from_slice(&out.stdout).expect("JSON"), err)
}

/// File `n`: rows `n*100 .. n*100 + rows`, with a few values that repeat across files (the
/// name) and every row of file 0 again in file 19 (whole-row duplicates across files).
fn write_file(dir: &Path, n: i64, rows: i64, shift: i64) {
    let base = if n == 19 { 0 } else { n * 100 };
    let ids: Vec<i64> = (base..base + rows).map(|i| i + shift).collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        (
            "name",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (i % 7 != 0).then(|| format!("n{}", i % 5)))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "x",
            Arc::new(Float64Array::from(
                ids.iter().map(|i| *i as f64 / 4.0).collect::<Vec<_>>(),
            )),
        ),
    ];
    let b = RecordBatch::try_from_iter(cols).unwrap();
    let path = dir.join(format!("part-{n:02}.parquet"));
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
}

fn col<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// The exact figures of two profiles are equal; moments agree to rounding (they are merged in
/// another grouping); KLL quantiles are randomized and not compared.
fn assert_same_exact_figures(a: &Value, b: &Value) {
    for k in ["row_count", "column_count", "duplicate_row_count"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    for c in ["id", "name", "x"] {
        for k in [
            "null_count",
            "distinct_count",
            "min",
            "max",
            "top_values",
            "bottom_values",
            "detected_patterns",
            "empty_string_count",
        ] {
            assert_eq!(col(a, c)[k], col(b, c)[k], "{c}.{k}");
        }
        for k in ["mean", "std"] {
            let (x, y) = (
                col(a, c)["distribution"][k].as_f64(),
                col(b, c)["distribution"][k].as_f64(),
            );
            match (x, y) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{c}.{k}"),
                (x, y) => assert_eq!(x, y, "{c}.{k}"),
            }
        }
    }
    assert_eq!(col(a, "id")["sum"], col(b, "id")["sum"], "id.sum");
}

#[test]
fn a_second_run_runs_only_the_tasks_of_new_and_changed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for n in 0..20 {
        write_file(&data, n, 100, 0);
    }
    let cache = tmp.path().join("cache");
    let (d, c) = (data.to_str().unwrap(), cache.to_str().unwrap());

    let (first, err) = profile(&[d, "--cache", c, "-w", "2"]);
    assert!(err.contains("reused 0 of 20 tasks, ran 20"), "{err}");
    assert_eq!(first["partitioning"]["tasks_total"], 20);
    assert_eq!(first["partitioning"]["tasks_reused"], 0);
    assert_eq!(first["row_count"], 2000);
    // File 19 repeats file 0.
    assert_eq!(first["duplicate_row_count"], 100);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 20);

    // Unchanged: everything is reused, and nothing is read.
    let (again, err) = profile(&[d, "--cache", c, "-w", "2"]);
    assert!(err.contains("reused 20 of 20 tasks, ran 0"), "{err}");
    assert_eq!(again["partitioning"]["bytes_read"], 0);
    assert_same_exact_figures(&again, &first);

    // Two files changed (one of them the duplicate of file 0), one added, one deleted.
    write_file(&data, 3, 150, 10_000);
    write_file(&data, 19, 60, 0);
    write_file(&data, 20, 100, 0);
    std::fs::remove_file(data.join("part-05.parquet")).unwrap();

    let (incremental, err) = profile(&[d, "--cache", c, "-w", "2"]);
    assert!(err.contains("reused 17 of 20 tasks, ran 3"), "{err}");
    assert_eq!(incremental["partitioning"]["tasks_reused"], 17);
    assert_eq!(incremental["partitioning"]["tasks_merged"], 20);
    assert!(
        incremental["partitioning"]["missing_tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (full, _) = profile(&[d, "-w", "2"]);
    assert!(
        full["partitioning"].get("tasks_reused").is_none(),
        "no cache, no count"
    );
    assert_eq!(full["row_count"], 2000 - 100 + 50 - 40 + 100);
    assert_eq!(full["duplicate_row_count"], 60);
    assert_same_exact_figures(&incremental, &full);
    // ... and not the old profile's.
    assert_ne!(incremental["row_count"], first["row_count"]);

    // Another option, another key: nothing is reused.
    let (other, err) = profile(&[d, "--cache", c, "-w", "2", "--top-k", "3"]);
    assert!(err.contains("reused 0 of 20 tasks, ran 20"), "{err}");
    assert_eq!(other["row_count"], full["row_count"]);
    // Other columns, other keys too.
    let (_, err) = profile(&[d, "--cache", c, "-w", "2", "--columns", "id,x"]);
    assert!(err.contains("reused 0 of 20 tasks"), "{err}");

    // A corrupt entry is a miss, not an error.
    for e in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(e.unwrap().path(), b"THPART\0\x01garbage").unwrap();
    }
    let (healed, err) = profile(&[d, "--cache", c, "-w", "2"]);
    assert!(err.contains("reused 0 of 20 tasks, ran 20"), "{err}");
    assert!(err.contains("unusable cache entry"), "{err}");
    assert_same_exact_figures(&healed, &full);
}

#[test]
fn the_cache_refuses_the_hash_strategy_and_remote_backends() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(tmp.path(), 0, 10, 0);
    let d = tmp.path().to_str().unwrap();
    let c = tmp.path().join("c");
    let c = c.to_str().unwrap();
    let out = th(&[
        "profile",
        d,
        "--cache",
        c,
        "--strategy",
        "hash",
        "--hash-column",
        "id",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("the hash strategy cannot be cached"), "{err}");
    let out = th(&["profile", d, "--cache", c, "--backend", "dask"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("local backend"), "{err}");
}
