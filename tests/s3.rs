//! Against a real S3-compatible server on 127.0.0.1: a multi-file Parquet dataset read from a
//! bucket and its profile written back; the distributed path (plan → th-worker per task →
//! merge) through the bucket; and the errors of a missing bucket and an unreachable endpoint.

use serde_json::Value;
use truthound_e2e::*;

const FILES: i64 = 3;
const ROWS: i64 = 2_000;

/// Uploads the dataset to `bucket/data/` and writes the same files to a local directory.
fn dataset(bucket: &str) -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    for f in 0..FILES {
        let bytes = parquet_bytes(&table(f * ROWS..(f + 1) * ROWS), 300);
        std::fs::write(local.path().join(format!("part-{f}.parquet")), &bytes).unwrap();
        put(bucket, &format!("data/part-{f}.parquet"), bytes);
    }
    put(bucket, "data/_SUCCESS", Vec::new());
    local
}

fn local_profile(dir: &std::path::Path) -> Value {
    let out = run("th", &["profile", dir.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn profiles_a_bucket_and_writes_the_profile_back() {
    let bucket = new_bucket("profile");
    let local = dataset(&bucket);
    let endpoint = s3_endpoint();
    let uri = format!("s3://{bucket}/data/");
    let out_uri = format!("s3://{bucket}/profiles/data.json");
    let out = run(
        "th",
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--output",
            &out_uri,
            "--partitions",
            "4",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Value = serde_json::from_slice(&get(&bucket, "profiles/data.json")).unwrap();
    assert_eq!(written["row_count"], FILES * ROWS);
    assert_eq!(written["sources"][0]["uri"], uri);
    assert_eq!(written["partitioning"]["tasks_merged"], 4);
    assert_same_exact(&written, &local_profile(local.path()));

    // Endpoint and region from the environment alone, as the AWS tools read them.
    let out = std::process::Command::new(bin("th"))
        .args(["profile", &uri, "--json"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_env["row_count"], FILES * ROWS);

    // A glob over the bucket selects files.
    let out = run(
        "th",
        &[
            "profile",
            &format!("s3://{bucket}/data/part-[01].parquet"),
            "--endpoint",
            &endpoint,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let two: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(two["row_count"], 2 * ROWS);
}

#[test]
fn workers_run_a_plan_through_the_bucket_and_the_merge_equals_the_profile() {
    let bucket = new_bucket("workers");
    let local = dataset(&bucket);
    let endpoint = s3_endpoint();
    let plan_uri = format!("s3://{bucket}/run/plan.json");
    for strategy in [
        &[
            "--strategy",
            "hybrid",
            "--row-partitions",
            "3",
            "--column-partitions",
            "2",
        ][..],
        &[
            "--strategy",
            "hash",
            "--hash-column",
            "email",
            "--partitions",
            "3",
        ],
    ] {
        let data_uri = format!("s3://{bucket}/data/");
        let mut args = vec!["plan", &data_uri, "--endpoint", &endpoint, "-o", &plan_uri];
        args.extend_from_slice(strategy);
        let out = run("th", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: Value = serde_json::from_slice(&get(&bucket, "run/plan.json")).unwrap();
        let tasks = plan["tasks"].as_array().unwrap().len();
        assert_eq!(tasks, if strategy[1] == "hybrid" { 6 } else { 3 });
        let mut partials = Vec::new();
        for t in 0..tasks {
            let part = format!("s3://{bucket}/run/partials/{t}");
            let out = run(
                "th-worker",
                &[
                    "run-task",
                    "--plan",
                    &plan_uri,
                    "--task",
                    &t.to_string(),
                    "--out",
                    &part,
                    "--endpoint",
                    &endpoint,
                ],
            );
            assert!(out.status.success(), "task {t}: {}", stderr(&out));
            // Structured logs on stderr say what was done.
            assert!(
                stderr(&out).contains("\"task finished\""),
                "{}",
                stderr(&out)
            );
            partials.push(part);
        }
        // Missing a task: reported, and refused with --require-complete.
        let out = run(
            "th",
            &[
                "merge",
                &partials[0],
                &partials[1],
                "--endpoint",
                &endpoint,
                "--require-complete",
            ],
        );
        assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
        assert!(stderr(&out).contains("task(s) missing"), "{}", stderr(&out));
        let merged_uri = format!("s3://{bucket}/run/profile.json");
        let mut args = vec!["merge"];
        args.extend(partials.iter().rev().map(String::as_str));
        args.extend([
            "--endpoint",
            &endpoint,
            "-o",
            &merged_uri,
            "--require-complete",
        ]);
        let out = run("th", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let merged: Value = serde_json::from_slice(&get(&bucket, "run/profile.json")).unwrap();
        assert_same_exact(&merged, &local_profile(local.path()));
        if strategy[1] == "hash" {
            let email = column(&merged, "email");
            assert_eq!(email["accuracy"]["distinct_count"]["exact"], true);
            assert_eq!(email["distinct_count"], 777);
        }
    }
}

#[test]
fn worker_exit_codes_tell_bad_data_from_transient_failures() {
    let bucket = new_bucket("exits");
    let _local = dataset(&bucket);
    let endpoint = s3_endpoint();
    let plan_uri = format!("s3://{bucket}/run/plan.json");
    let out = run(
        "th",
        &[
            "plan",
            &format!("s3://{bucket}/data/"),
            "--endpoint",
            &endpoint,
            "--partitions",
            "3",
            "-o",
            &plan_uri,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The data changed under the plan: a file is corrupt now. Bad data: 65, do not retry.
    put(
        &bucket,
        "data/part-1.parquet",
        b"PAR1 this is not parquet PAR1".to_vec(),
    );
    let statuses: Vec<Option<i32>> = (0..3)
        .map(|t| {
            run(
                "th-worker",
                &[
                    "run-task",
                    "--plan",
                    &plan_uri,
                    "--task",
                    &t.to_string(),
                    "--out",
                    &format!("s3://{bucket}/p/{t}"),
                    "--endpoint",
                    &endpoint,
                ],
            )
            .status
            .code()
        })
        .collect();
    assert!(statuses.contains(&Some(65)), "{statuses:?}");
    // The storage endpoint is down: transient, 75, retry later.
    let out = run(
        "th-worker",
        &[
            "run-task",
            "--plan",
            &plan_uri,
            "--task",
            "0",
            "--out",
            "/tmp/x",
            "--endpoint",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("plan"), "{}", stderr(&out));
    // A task the plan does not have: invalid request, 64.
    let out = run(
        "th-worker",
        &[
            "run-task",
            "--plan",
            &plan_uri,
            "--task",
            "99",
            "--out",
            "/tmp/x",
            "--endpoint",
            &endpoint,
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

#[test]
fn a_missing_bucket_and_an_unreachable_endpoint_are_clear_errors() {
    let endpoint = s3_endpoint();
    let out = run(
        "th",
        &[
            "profile",
            "s3://no-such-bucket-th/data/",
            "--endpoint",
            &endpoint,
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("s3://no-such-bucket-th/data/") && err.contains("bucket does not exist"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let started = std::time::Instant::now();
    let out = run(
        "th",
        &[
            "profile",
            "s3://bucket/data/",
            "--endpoint",
            "http://127.0.0.1:9",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("s3://bucket/data/"), "{err}");
    assert!(
        err.contains("hint: the storage endpoint did not answer"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "gave up only after {:?}",
        started.elapsed()
    );
}

#[test]
fn diffs_and_compares_two_profiles_in_a_bucket() {
    let bucket = new_bucket("diff");
    let endpoint = s3_endpoint();
    // Two tables alike but for their ids, which do not overlap.
    let mut uris = Vec::new();
    for (name, ids) in [("old", 0..2_000), ("new", 100_000..102_000)] {
        put(
            &bucket,
            &format!("{name}/part-0.parquet"),
            parquet_bytes(&table(ids), 300),
        );
        let profile = format!("s3://{bucket}/profiles/{name}.json");
        let out = run(
            "th",
            &[
                "profile",
                &format!("s3://{bucket}/{name}/"),
                "--endpoint",
                &endpoint,
                "--keep-state",
                "-q",
                "--output",
                &profile,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        uris.push(profile);
    }
    let (old, new) = (&uris[0], &uris[1]);
    let out = run("th", &["diff", old, new, "--endpoint", &endpoint, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"id"), "{d}");
    assert!(!names.contains(&"kind") && !names.contains(&"value"), "{d}");
    // The report of the new profile, the old one beside it, all from the bucket.
    let out = run(
        "th",
        &[
            "report",
            new,
            "--previous",
            old,
            "--endpoint",
            &endpoint,
            "-o",
            "-",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.contains("<li data-drifted=\"id\">"), "{html}");
    // A profile the bucket does not have: not found (65), never the drift code 1.
    let missing = format!("s3://{bucket}/profiles/none.json");
    let out = run("th", &["diff", old, &missing, "--endpoint", &endpoint]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
}

/// A Delta Lake table in a bucket is read as the table: the live files of its current version,
/// as on a local disk (the same table, written once by the Python `deltalake` package, then
/// uploaded; TH_TEST_PYTHON from scripts/py-tools.sh).
#[test]
fn a_delta_table_in_a_bucket_is_read_at_its_live_files() {
    let python = std::env::var("TH_TEST_PYTHON").expect(
        "TH_TEST_PYTHON is not set: run the tests with scripts/test.sh, or set it to the python \
         that scripts/py-tools.sh prints",
    );
    let local = tempfile::tempdir().unwrap();
    let table = local.path().join("events");
    let script = r#"
import sys, json, pyarrow as pa
from deltalake import write_deltalake, DeltaTable
d = sys.argv[1]
write_deltalake(d, pa.table({"id": pa.array(range(0, 50), pa.int64())}))
write_deltalake(d, pa.table({"id": pa.array(range(50, 80), pa.int64())}), mode="append")
DeltaTable(d).delete("id < 20")
t = DeltaTable(d)
print(json.dumps({"version": t.version(), "rows": t.to_pyarrow_table().num_rows}))
# Past the interpreter's teardown, where deltalake's native threads sometimes abort it.
import os
sys.stdout.flush()
os._exit(0)
"#;
    // It writes to a local directory: without the test's AWS_* variables, with which pyarrow's
    // S3 support aborts the interpreter at exit.
    let mut python = std::process::Command::new(&python);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        python.env_remove(k);
    }
    let out = python
        .args(["-c", script, table.to_str().unwrap()])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let bucket = new_bucket("delta");
    let mut stack = vec![table.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let key = path.strip_prefix(local.path()).unwrap().to_str().unwrap();
                put(&bucket, key, std::fs::read(&path).unwrap());
            }
        }
    }
    let uri = format!("s3://{bucket}/events");
    let out = run(
        "th",
        &["profile", &uri, "--endpoint", &s3_endpoint(), "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["row_count"], want["rows"]);
    assert_eq!(p["row_count"], 60, "80 written, 20 deleted");
    assert_eq!(p["sources"][0]["table"]["format"], "delta");
    assert_eq!(p["sources"][0]["table"]["version"], want["version"]);
    assert_same_exact(&p, &local_profile(&table));
}
