//! Shared pieces of the end-to-end tests: the binaries under test, the S3 server the test
//! command starts (`scripts/test.sh` → `TH_TEST_S3_ENDPOINT`), fresh buckets, test data.

pub mod kube_support;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::io::{Read, Write};
use std::process::{Command, Output};
use std::sync::Arc;

/// A binary of this workspace, built by `cargo test --workspace` next to the test executables.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test.sh)",
        path.display()
    );
    path
}

/// The address a cluster script printed for this test run (`VAR=VALUE`, exported by
/// scripts/test.sh), e.g. `cluster_address("TH_TEST_RAY_ADDRESS", "ray-cluster.sh")`.
pub fn cluster_address(var: &str, script: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the cluster with `scripts/{script} start` (scripts/test.sh \
             does) and export the line it prints"
        )
    })
}

/// `th` with the test credentials and extra environment.
pub fn th(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_with("th", args, env)
}

/// The S3-compatible server of this test run.
pub fn s3_endpoint() -> String {
    std::env::var("TH_TEST_S3_ENDPOINT").expect(
        "TH_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts a local S3 server",
    )
}

/// Runs a binary with test credentials for the S3 server.
pub fn run(binary: &str, args: &[&str]) -> Output {
    run_with(binary, args, &[])
}

/// [`run`] with extra environment. The caller's backend choice and cluster addresses are
/// removed first, so only what a test sets reaches the binary.
pub fn run_with(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin(binary));
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .env_remove("DASK_SCHEDULER_ADDRESS")
        .env_remove("RAY_ADDRESS")
        .env_remove("SPARK_CONNECT_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

/// Writes `files` Parquet files of `rows` rows each (row groups of 300) to `data/part-N.parquet`
/// in `bucket`: one multi-file dataset, `s3://<bucket>/data/`.
pub fn put_parquet_dataset(bucket: &str, files: i64, rows: i64) {
    for f in 0..files {
        let bytes = parquet_bytes(&table(f * rows..(f + 1) * rows), 300);
        put(bucket, &format!("data/part-{f}.parquet"), bytes);
    }
}

/// Writes an executable shell script (a stand-in `th-worker`, say) and returns its path.
pub fn executable_script(path: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::write(path, text).expect("write script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
    }
    path.to_path_buf()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Creates a bucket with a fresh name (one per test, so tests run in parallel).
pub fn new_bucket(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000);
    let endpoint = s3_endpoint();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).expect("S3 server reachable");
    write!(
        conn,
        "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating bucket {name}: {answer}"
    );
    name
}

pub fn store(bucket: &str) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(s3_endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap(),
    )
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime whose spawned tasks run beside the test's own (2 worker threads).
pub fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn put(bucket: &str, key: &str, bytes: Vec<u8>) {
    let s = store(bucket);
    rt().block_on(s.put(&Path::from(key), PutPayload::from(bytes)))
        .unwrap();
}

pub fn get(bucket: &str, key: &str) -> Vec<u8> {
    let s = store(bucket);
    rt().block_on(async {
        s.get(&Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    })
    .to_vec()
}

/// Rows `range` of a deterministic table.
pub fn table(range: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        (
            "kind",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| ["a", "b", "c", "d"][(i % 4) as usize])
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "email",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (i % 10 != 0).then(|| format!("u{}@example.com", i % 777)))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "value",
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| ((i * 7919) % 1000) as f64 / 7.0)
                    .collect::<Vec<_>>(),
            )),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

pub fn parquet_bytes(b: &RecordBatch, row_group: usize) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, b.schema(), Some(props)).unwrap();
    w.write(b).unwrap();
    w.close().unwrap();
    out
}

pub fn column<'a>(p: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    p["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// The exact figures of two profiles agree.
/// `remote`, a profile of `uri` (a dataset on the test S3 server) made by a remote backend,
/// agrees with the in-process profile: exact figures equal, quantiles within their bounds.
pub fn assert_like_local(remote: &serde_json::Value, uri: &str) {
    let endpoint = s3_endpoint();
    let args = [
        "profile",
        uri,
        "--endpoint",
        &endpoint,
        "--backend",
        "local",
        "--json",
    ];
    let out = th(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).expect("profile JSON");
    assert_same_exact(remote, &local);
    quantiles_close(remote, &local);
}

pub fn assert_same_exact(a: &serde_json::Value, b: &serde_json::Value) {
    assert_eq!(a["row_count"], b["row_count"]);
    assert_eq!(a["duplicate_row_count"], b["duplicate_row_count"]);
    for c in b["columns"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        for f in [
            "null_count",
            "distinct_count",
            "min",
            "max",
            "sum",
            "top_values",
            "bottom_values",
            "detected_patterns",
            "empty_string_count",
        ] {
            assert_eq!(column(a, name)[f], c[f], "{name}.{f}");
        }
        for f in ["mean", "std"] {
            let (x, y) = (&column(a, name)["distribution"][f], &c["distribution"][f]);
            if let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) {
                assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                    "{name}.{f}: {x} vs {y}"
                );
            } else {
                assert_eq!(x, y, "{name}.{f}");
            }
        }
    }
}

/// The quantiles of two profiles agree within KLL's error (3% of each column's range).
pub fn quantiles_close(a: &serde_json::Value, b: &serde_json::Value) {
    for c in b["columns"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (qa, qb) = (&column(a, name)["quantiles"], &c["quantiles"]);
        let (Some(qa), Some(qb)) = (qa.as_object(), qb.as_object()) else {
            assert_eq!(qa, qb, "{name}.quantiles");
            continue;
        };
        let (min, max) = (c["min"].as_f64(), c["max"].as_f64());
        let range = match (min, max) {
            (Some(lo), Some(hi)) => hi - lo,
            _ => 0.0,
        };
        for (k, vb) in qb {
            let (Some(x), Some(y)) = (qa[k].as_f64(), vb.as_f64()) else {
                assert_eq!(&qa[k], vb, "{name}.quantiles.{k}");
                continue;
            };
            // KLL's rank error is 1.33% at 99%: compare within 3% of the range.
            assert!(
                (x - y).abs() <= 0.03 * range + 1e-9,
                "{name}.quantiles.{k}: {x} vs {y}"
            );
        }
    }
}
