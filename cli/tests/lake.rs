//! Lake tables through `th profile`: a Delta Lake table written, appended to and deleted from
//! with the Python `deltalake` package, and an Iceberg table with `pyiceberg`, are profiled to
//! the live rows of the version read, checked against what those packages read of the same
//! version; what the reader does not implement is refused with an error naming the table and
//! the feature, never read as a plain folder.
//!
//! The Python tools come from `scripts/py-tools.sh` (TH_TEST_PYTHON, which scripts/test.sh
//! sets).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn th(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th"))
        .args(args)
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .output()
        .expect("th runs")
}

fn profile_json(args: &[&str]) -> Value {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = th(&all);
    assert!(
        out.status.success(),
        "th {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// `th profile` expecting a bad-data failure; its stderr.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    let out = th(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(65), "th {all:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn python() -> String {
    std::env::var("TH_TEST_PYTHON").expect(
        "TH_TEST_PYTHON is not set: run the tests with scripts/test.sh, or set it to the python \
         that scripts/py-tools.sh prints (it has deltalake and pyiceberg)",
    )
}

/// Ends a fixture script once its output is written, skipping the interpreter's teardown: the
/// native threads of deltalake and pyarrow sometimes abort it there ("terminate called without
/// an active exception", seen in CI) after the script did all its work.
const EXIT_NOW: &str = "import os, sys\nsys.stdout.flush()\nsys.stderr.flush()\nos._exit(0)";

/// Runs a Python script with the tools' python; its stdout parsed as JSON.
fn run_python(script: &str, args: &[&str]) -> Value {
    let mut command = Command::new(python());
    // The tables are local: without AWS_* variables, with which pyarrow's S3 support aborts
    // the interpreter at exit.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        command.env_remove(k);
    }
    let out = command
        .arg("-c")
        .arg(format!("{script}\n{EXIT_NOW}"))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .expect("python printed its reference values");
    serde_json::from_str(last).expect("reference values are JSON")
}

/// Reference statistics of a pyarrow table, computed by pyarrow: the figures the profile must
/// have for the same rows.
const REFERENCE: &str = r#"
import json, pyarrow as pa, pyarrow.compute as pc
def reference(t):
    out = {"rows": t.num_rows}
    for name in ["id", "name", "x"]:
        c = t.column(name)
        mm = pc.min_max(c).as_py()
        out[name] = {
            "nulls": c.null_count,
            "distinct": len(pc.unique(c.drop_null())),
            "min": mm["min"], "max": mm["max"],
        }
    out["id"]["sum"] = pc.sum(t.column("id")).as_py()
    return out
def batch(ids, prefix):
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": [f"{prefix}{i % 4}" for i in ids],
        "x": pa.array([None if i % 3 == 0 else i / 4 for i in ids], pa.float64()),
    })
"#;

const DELTA: &str = r#"
import sys
from deltalake import write_deltalake, DeltaTable
d = sys.argv[1]
write_deltalake(d, batch(list(range(0, 10)), "a"))                  # version 0
write_deltalake(d, batch(list(range(10, 20)), "b"), mode="append")  # version 1
DeltaTable(d).delete("id < 5")                                      # version 2: a file removed
DeltaTable(d).create_checkpoint()                                   # checkpoint at 2
write_deltalake(d, batch(list(range(100, 103)), "c"), mode="append")  # version 3
DeltaTable(d).delete("id = 101")                                    # version 4: another removed
write_deltalake(d + "_parted", batch(list(range(0, 6)), "p").append_column("day", pa.array(["d1", "d2"] * 3)), partition_by=["day"])
print(json.dumps({
    "version": DeltaTable(d).version(),
    "current": reference(DeltaTable(d).to_pyarrow_table()),
    "v1": reference(DeltaTable(d, version=1).to_pyarrow_table()),
}))
"#;

const ICEBERG: &str = r#"
import sys, os
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import LessThan, EqualTo
d = sys.argv[1]
cat = SqlCatalog("t", uri=f"sqlite:///{d}/catalog.db", warehouse=f"file://{d}/warehouse")
cat.create_namespace("ns")
first = batch(list(range(0, 10)), "a")
tbl = cat.create_table("ns.events", schema=first.schema)
tbl.append(first)
first_snapshot = tbl.current_snapshot()
tbl.append(batch(list(range(10, 20)), "b"))
tbl.delete(LessThan("id", 5))       # rewrites a file: its manifest entry becomes DELETED
tbl.append(batch(list(range(100, 103)), "c"))
tbl.delete(EqualTo("id", 101))
tbl = cat.load_table("ns.events")
snap = tbl.current_snapshot()
print(json.dumps({
    "metadata": tbl.metadata_location,
    "snapshot_id": snap.snapshot_id,
    "sequence_number": snap.sequence_number,
    "current": reference(tbl.scan().to_arrow()),
    "first_snapshot_id": first_snapshot.snapshot_id,
    "first": reference(tbl.scan(snapshot_id=first_snapshot.snapshot_id).to_arrow()),
}))
"#;

fn col<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// The profile's figures equal pyarrow's for the same rows.
fn assert_matches(profile: &Value, want: &Value, what: &str) {
    assert_eq!(profile["row_count"], want["rows"], "{what}: row_count");
    for name in ["id", "name", "x"] {
        let (c, w) = (col(profile, name), &want[name]);
        assert_eq!(c["null_count"], w["nulls"], "{what}: {name} null_count");
        assert_eq!(
            c["distinct_count"], w["distinct"],
            "{what}: {name} distinct_count"
        );
        for stat in ["min", "max"] {
            match (c[stat].as_f64(), w[stat].as_f64()) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{what}: {name} {stat}"),
                _ => assert_eq!(c[stat], w[stat], "{what}: {name} {stat}"),
            }
        }
    }
    assert_eq!(
        col(profile, "id")["sum"].as_f64(),
        want["id"]["sum"].as_f64(),
        "{what}: id sum"
    );
}

fn script(body: &str) -> String {
    format!("{REFERENCE}\n{body}")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_delta_table_is_profiled_to_its_live_rows_at_the_version_read() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("events");
    let table_s = table.to_str().unwrap();
    let want = run_python(&script(DELTA), &[table_s]);
    assert_eq!(want["version"], 4);

    // The current version: the files removed by the two deletes are not read (pyarrow reads
    // 16 live rows; the folder holds the 28 rows of every file ever written).
    let p = profile_json(&[table_s]);
    assert_matches(&p, &want["current"], "current version");
    assert_eq!(
        p["sources"][0]["table"],
        serde_json::json!({"format": "delta", "version": 4})
    );
    let plain = profile_json(&[&format!("{table_s}/*.parquet")]);
    assert!(
        plain["row_count"].as_u64() > want["current"]["rows"].as_u64(),
        "the glob reads the folder as plain files, removed ones too: {} rows",
        plain["row_count"]
    );
    assert!(plain["sources"][0].get("table").is_none());

    // An older version: before the deletes, with the file they removed.
    let p = profile_json(&[table_s, "--table-version", "1"]);
    assert_matches(&p, &want["v1"], "version 1");
    assert_eq!(p["sources"][0]["table"]["version"], 1);
    let err = refused(&[table_s, "--table-version", "9"]);
    assert!(err.contains("version 9 does not exist"), "{err}");

    // The checkpoint at version 2 holds the state the cleaned-up commits made: the current
    // version reads the same without them, version 1 no longer can.
    let cleaned = dir.path().join("cleaned");
    copy_dir(&table, &cleaned);
    for v in [0, 1] {
        std::fs::remove_file(cleaned.join(format!("_delta_log/{v:020}.json"))).unwrap();
    }
    let cleaned_s = cleaned.to_str().unwrap();
    assert_matches(
        &profile_json(&[cleaned_s]),
        &want["current"],
        "from the checkpoint",
    );
    let err = refused(&[cleaned_s, "--table-version", "1"]);
    assert!(
        err.contains("no longer holds what version 1 needs"),
        "{err}"
    );

    // The summary line says the version.
    let out = th(&["profile", table_s]);
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("(delta version 4)"), "{summary}");

    // A partitioned table: its partition values are in the log, not the files.
    let err = refused(&[&format!("{table_s}_parted")]);
    assert!(err.contains("cannot read this Delta table"), "{err}");
    assert!(err.contains("partition columns (day)"), "{err}");

    // A version asked of a folder that is no table.
    let folder = dir.path().join("plain");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        std::fs::read_dir(&table)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap(),
        folder.join("a.parquet"),
    )
    .unwrap();
    let out = th(&["profile", folder.to_str().unwrap(), "--table-version", "1"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a Delta Lake table"), "{err}");
}

#[test]
fn a_delta_table_with_deletion_vectors_is_refused_not_read_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("events");
    let table_s = table.to_str().unwrap();
    run_python(&script(DELTA), &[table_s]);
    // Version 5, as a writer with deletion vectors makes it: the protocol upgraded, and a live
    // file re-added with a deletion vector marking some of its rows deleted.
    let live = profile_json(&[table_s, "--columns", "id"]);
    assert!(live["row_count"].as_u64().unwrap() > 0);
    let log = std::fs::read_to_string(table.join(format!("_delta_log/{:020}.json", 4))).unwrap();
    let add_line = log
        .lines()
        .find(|l| l.contains("\"add\""))
        .expect("version 4 added a file");
    let add: Value = serde_json::from_str(add_line).unwrap();
    let path = add["add"]["path"].as_str().unwrap();
    let commit = [
        serde_json::json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"]}}),
        serde_json::json!({"remove": {"path": path, "dataChange": true, "deletionTimestamp": 1}}),
        serde_json::json!({"add": {"path": path, "partitionValues": {}, "size": add["add"]["size"],
            "modificationTime": 1, "dataChange": true,
            "deletionVector": {"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L",
                "sizeInBytes": 40, "cardinality": 1}}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    std::fs::write(table.join(format!("_delta_log/{:020}.json", 5)), commit).unwrap();
    let err = refused(&[table_s]);
    assert!(err.contains("cannot read this Delta table"), "{err}");
    assert!(err.contains("deletion vectors are not supported"), "{err}");
    assert!(err.contains(path), "the error names the file: {err}");
    // The version before the deletion vector still reads.
    assert_eq!(
        profile_json(&[table_s, "--table-version", "4", "--columns", "id"])["row_count"],
        live["row_count"]
    );
}

#[test]
fn an_iceberg_table_is_profiled_to_its_current_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let want = run_python(&script(ICEBERG), &[dir.path().to_str().unwrap()]);
    let table = dir.path().join("warehouse/ns/events");
    let table_s = table.to_str().unwrap();

    let p = profile_json(&[table_s]);
    assert_matches(&p, &want["current"], "current snapshot");
    let source = &p["sources"][0]["table"];
    assert_eq!(source["format"], "iceberg");
    assert_eq!(source["snapshot_id"], want["snapshot_id"]);
    assert_eq!(source["sequence_number"], want["sequence_number"]);
    let metadata = want["metadata"].as_str().unwrap();
    assert_eq!(
        source["metadata"].as_str(),
        metadata.strip_prefix("file://"),
        "the metadata file read"
    );

    // The metadata file the catalog points at, named directly, reads the same.
    let p = profile_json(&[metadata]);
    assert_matches(&p, &want["current"], "through the metadata file");

    // An older snapshot.
    let first = want["first_snapshot_id"].as_i64().unwrap().to_string();
    let p = profile_json(&[table_s, "--table-version", &first]);
    assert_matches(&p, &want["first"], "first snapshot");
    let err = refused(&[table_s, "--table-version", "12345"]);
    assert!(err.contains("snapshot 12345 is not in"), "{err}");

    // The plain folder holds the rewritten files' rows too.
    let plain = profile_json(&[&format!("{table_s}/data/*.parquet")]);
    assert!(plain["row_count"].as_u64() > want["current"]["rows"].as_u64());
}
