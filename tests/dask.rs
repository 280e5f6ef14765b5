//! `th profile --backend dask` against a real Dask cluster on 127.0.0.1 (scheduler and one
//! worker, `scripts/dask-cluster.sh` → `TH_TEST_DASK_SCHEDULER`) and the S3 server of the test
//! run: the same figures as the in-process backend; a task with bad data named with its error;
//! a transient failure retried; an unreachable scheduler, a missing scheduler and a missing
//! python said clearly.

use serde_json::Value;
use truthound_e2e::*;

const FILES: i64 = 3;
const ROWS: i64 = 2_000;

/// The Dask scheduler of this test run.
fn scheduler() -> String {
    cluster_address("TH_TEST_DASK_SCHEDULER", "dask-cluster.sh")
}

#[test]
fn dask_profile_equals_the_local_profile() {
    let bucket = new_bucket("dask");
    put_parquet_dataset(&bucket, FILES, ROWS);
    let endpoint = s3_endpoint();
    let uri = format!("s3://{bucket}/data/");
    let out_uri = format!("s3://{bucket}/profiles/data.json");
    let sched = scheduler();
    let out = th(
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--distributed",
            "--backend",
            "dask",
            "--scheduler",
            &sched,
            "--partitions",
            "4",
            "-o",
            &out_uri,
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dask: Value = serde_json::from_slice(&get(&bucket, "profiles/data.json")).unwrap();
    assert_eq!(dask["row_count"], FILES * ROWS);
    assert_eq!(dask["partitioning"]["tasks_merged"], 4);
    assert_eq!(dask["sources"][0]["uri"], uri);

    assert_like_local(&dask, &uri);

    // The scheduler from DASK_SCHEDULER_ADDRESS, the profile on stdout.
    let out = th(
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--backend",
            "dask",
            "--json",
        ],
        &[("DASK_SCHEDULER_ADDRESS", &sched)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_exact(&again, &dask);
}

#[test]
fn a_task_with_bad_data_is_named_with_the_workers_error() {
    let bucket = new_bucket("dask-bad");
    put_parquet_dataset(&bucket, FILES, ROWS);
    // A CSV whose last row does not fit the schema inferred from its first rows: the plan is
    // made, and the task that reads the row fails with bad data.
    let mut csv = String::from("id,v\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},{}\n", i * 2));
    }
    csv.push_str("x,notanumber\n");
    put(&bucket, "csv/a.csv", csv.into_bytes());
    let out = th(
        &[
            "profile",
            &format!("s3://{bucket}/csv/a.csv"),
            "--endpoint",
            &s3_endpoint(),
            "--backend",
            "dask",
            "--scheduler",
            &scheduler(),
            "--work-dir",
            &format!("s3://{bucket}/work"),
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("task 0 of 1 failed on the Dask cluster"),
        "{err}"
    );
    assert!(err.contains("reason=BadData"), "{err}");
    assert!(err.contains("notanumber"), "{err}");
}

#[test]
fn a_transient_failure_is_retried() {
    let bucket = new_bucket("dask-retry");
    put_parquet_dataset(&bucket, FILES, ROWS);
    // th-worker behind a wrapper that fails each task's first attempt as transient (75).
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("th-worker");
    executable_script(
        &wrapper,
        &format!(
            "#!/bin/sh\n\
             task=\"\"; prev=\"\"\n\
             for a in \"$@\"; do [ \"$prev\" = --task ] && task=$a; prev=$a; done\n\
             marker={dir}/attempted-$task\n\
             if [ ! -e \"$marker\" ]; then : > \"$marker\"; echo 'error: flaky storage' >&2; exit 75; fi\n\
             exec {real} \"$@\"\n",
            dir = dir.path().display(),
            real = bin("th-worker").display()
        ),
    );
    let out = th(
        &[
            "profile",
            &format!("s3://{bucket}/data/"),
            "--endpoint",
            &s3_endpoint(),
            "--backend",
            "dask",
            "--scheduler",
            &scheduler(),
            "--partitions",
            "3",
            "--retries",
            "1",
            "--json",
        ],
        &[("TH_WORKER_BIN", wrapper.to_str().unwrap())],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["row_count"], FILES * ROWS);
    assert!(err.contains("attempt 1 failed (exit code 75)"), "{err}");
    assert!(err.contains("retrying"), "{err}");
    for t in 0..3 {
        assert!(dir.path().join(format!("attempted-{t}")).exists());
    }

    // Without retries, the transient failure fails the run with the worker's code.
    let dir2 = tempfile::tempdir().unwrap();
    let wrapper2 = dir2.path().join("th-worker");
    executable_script(
        &wrapper2,
        "#!/bin/sh\necho 'error: storage unreachable' >&2\nexit 75\n",
    );
    let out = th(
        &[
            "profile",
            &format!("s3://{bucket}/data/"),
            "--endpoint",
            &s3_endpoint(),
            "--backend",
            "dask",
            "--scheduler",
            &scheduler(),
            "--partitions",
            "1",
            "--retries",
            "0",
            "-q",
        ],
        &[("TH_WORKER_BIN", wrapper2.to_str().unwrap())],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("storage unreachable"), "{err}");
}

#[test]
fn an_unreachable_or_missing_scheduler_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.parquet");
    std::fs::write(&file, parquet_bytes(&table(0..100), 50)).unwrap();
    let out = th(
        &[
            "profile",
            file.to_str().unwrap(),
            "--backend",
            "dask",
            "--scheduler",
            &addr,
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("cannot reach the Dask scheduler at {addr}")),
        "{err}"
    );

    let out = th(
        &["profile", file.to_str().unwrap(), "--backend", "dask"],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--scheduler"), "{err}");

    // No python for the runner: what to install.
    let out = th(
        &[
            "profile",
            file.to_str().unwrap(),
            "--backend",
            "dask",
            "--scheduler",
            &scheduler(),
        ],
        &[("TH_DASK_PYTHON", "/nonexistent/python3")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("pip install 'dask[distributed]"), "{err}");
}
