//! `th profile --backend ray` against a real Ray cluster on 127.0.0.1 (one head with 2 CPUs and
//! the dashboard's Jobs API, `scripts/ray-cluster.sh` → `TH_TEST_RAY_ADDRESS`) and the S3 server
//! of the test run: the same figures as the in-process backend; a task with bad data named with
//! its error and not retried; a transient failure retried; an unreachable or missing dashboard
//! said clearly. And the Ray core (`truthound_operator::backend::ray`) directly: a second submit
//! with the same submission id is the same job; a stopped job cancels its tasks.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use truthound_e2e::*;
use truthound_operator::backend::ray::{RayError, RayRun, RaySubmit, RemoteTasks, submission_id};
use truthound_operator::backend::tasks::TaskPhase;

const FILES: i64 = 3;
const ROWS: i64 = 2_000;

/// The Ray dashboard of this test run.
fn ray_address() -> String {
    cluster_address("TH_TEST_RAY_ADDRESS", "ray-cluster.sh")
}

/// GET on the dashboard: the JSON body.
fn dashboard_get(path: &str) -> Value {
    let base = ray_address();
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).expect("Ray dashboard reachable");
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.contains(" 200 "), "GET {path}: {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

#[test]
fn ray_profile_equals_the_local_profile() {
    let bucket = new_bucket("ray");
    put_parquet_dataset(&bucket, FILES, ROWS);
    let endpoint = s3_endpoint();
    let uri = format!("s3://{bucket}/data/");
    let out_uri = format!("s3://{bucket}/profiles/data.json");
    let address = ray_address();
    let out = th(
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--distributed",
            "--backend",
            "ray",
            "--ray-address",
            &address,
            "--partitions",
            "4",
            "-o",
            &out_uri,
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ray: Value = serde_json::from_slice(&get(&bucket, "profiles/data.json")).unwrap();
    assert_eq!(ray["row_count"], FILES * ROWS);
    assert_eq!(ray["partitioning"]["tasks_merged"], 4);
    assert_eq!(ray["sources"][0]["uri"], uri);

    assert_like_local(&ray, &uri);

    // The workers read the bucket with the run's credentials, yet no job shows them to the
    // dashboard's readers: the storage environment is in the job's package, not its env_vars.
    let jobs = dashboard_get("/api/jobs/");
    let ours: Vec<&Value> = jobs
        .as_array()
        .expect("a list of jobs")
        .iter()
        .filter(|j| {
            j["metadata"]["truthound.plan"]
                .as_str()
                .is_some_and(|p| p.contains(&bucket))
        })
        .collect();
    assert!(!ours.is_empty(), "no job of this run: {jobs}");
    for job in ours {
        let env = &job["runtime_env"]["env_vars"];
        assert!(env.get("TH_RAY_CONFIG").is_some(), "{job}");
        for secret in ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"] {
            assert!(
                env.get(secret).is_none(),
                "{secret} in the runtime_env: {job}"
            );
        }
    }

    // The dashboard from RAY_ADDRESS (without the scheme), the profile on stdout.
    let out = th(
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--backend",
            "ray",
            "--json",
        ],
        &[("RAY_ADDRESS", address.trim_start_matches("http://"))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_exact(&again, &ray);
}

/// The ancestor's `ray://HOST:10001` client address: taken for the same head's dashboard at
/// Ray's default port. `scripts/ray-cluster.sh` puts the test head's dashboard there when the
/// port is free (always on a CI machine); elsewhere the error must say what to give instead.
#[test]
fn a_ray_client_address_reaches_the_heads_dashboard() {
    let bucket = new_bucket("rayclient");
    put_parquet_dataset(&bucket, 1, ROWS);
    let uri = format!("s3://{bucket}/data/");
    let endpoint = s3_endpoint();
    let on_default_port = ray_address().trim_end_matches('/').ends_with(":8265");
    assert!(
        on_default_port || std::env::var_os("CI").is_none(),
        "CI: the test head's dashboard is not on port 8265 ({})",
        ray_address()
    );
    let out = th(
        &[
            "profile",
            &uri,
            "--endpoint",
            &endpoint,
            "--backend",
            "ray",
            "--ray-address",
            "ray://127.0.0.1:10001",
            "--json",
        ],
        &[],
    );
    if on_default_port {
        assert!(out.status.success(), "{}", stderr(&out));
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["row_count"], ROWS);
    } else {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert!(
            err.contains("8265") && err.contains("ray://127.0.0.1:10001"),
            "{err}"
        );
    }
}

#[test]
fn a_task_with_bad_data_is_named_with_the_workers_error_and_not_retried() {
    let bucket = new_bucket("ray-bad");
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
            "ray",
            "--ray-address",
            &ray_address(),
            "--work-dir",
            &format!("s3://{bucket}/work"),
            "--retries",
            "3",
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("task 0 of 1 failed on the Ray cluster"),
        "{err}"
    );
    assert!(err.contains("reason=BadData"), "{err}");
    assert!(err.contains("notanumber"), "{err}");
    assert!(!err.contains("retrying"), "bad data is not retried: {err}");
}

#[test]
fn a_transient_failure_is_retried() {
    let bucket = new_bucket("ray-retry");
    put_parquet_dataset(&bucket, FILES, ROWS);
    // th-worker behind a wrapper that fails each task's first attempt as transient (75).
    let dir = tempfile::tempdir().unwrap();
    let wrapper = executable_script(
        &dir.path().join("th-worker"),
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
            "ray",
            "--ray-address",
            &ray_address(),
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
    assert!(err.contains("flaky storage"), "{err}");
    for t in 0..3 {
        assert!(dir.path().join(format!("attempted-{t}")).exists());
    }

    // Without retries, the transient failure fails the run with the worker's code.
    let dir2 = tempfile::tempdir().unwrap();
    let wrapper2 = executable_script(
        &dir2.path().join("th-worker"),
        "#!/bin/sh\necho 'error: storage unreachable' >&2\nexit 75\n",
    );
    let out = th(
        &[
            "profile",
            &format!("s3://{bucket}/data/"),
            "--endpoint",
            &s3_endpoint(),
            "--backend",
            "ray",
            "--ray-address",
            &ray_address(),
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
fn an_unreachable_or_missing_dashboard_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.parquet");
    std::fs::write(&file, parquet_bytes(&table(0..100), 50)).unwrap();
    let out = th(
        &[
            "profile",
            file.to_str().unwrap(),
            "--backend",
            "ray",
            "--ray-address",
            &addr,
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the Ray dashboard (Jobs API) at {addr}"
        )),
        "{err}"
    );

    let out = th(
        &["profile", file.to_str().unwrap(), "--backend", "ray"],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--ray-address"), "{err}");
}

/// A plan of the test dataset written to the bucket; its task count.
fn write_plan(bucket: &str, partitions: &str) -> (String, usize) {
    let plan_uri = format!("s3://{bucket}/work/plan.json");
    let out = run(
        "th",
        &[
            "plan",
            &format!("s3://{bucket}/data/"),
            "--endpoint",
            &s3_endpoint(),
            "--partitions",
            partitions,
            "-o",
            &plan_uri,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&get(bucket, "work/plan.json")).unwrap();
    (plan_uri, plan["tasks"].as_array().unwrap().len())
}

fn core_submit(run_id: &str, bucket: &str, plan_uri: &str, tasks: usize) -> RaySubmit {
    RaySubmit {
        address: ray_address(),
        attempt: 1,
        work: RemoteTasks {
            run_id: run_id.into(),
            plan_uri: plan_uri.into(),
            partials_prefix: format!("s3://{bucket}/work/partials"),
            tasks: (0..tasks as u32).collect(),
            env: BTreeMap::from([
                ("TH_S3_ENDPOINT".to_string(), s3_endpoint()),
                ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
                ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
                ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ]),
            worker_args: vec!["--allow-http".into()],
            retries: 1,
            worker_bin: Some(bin("th-worker")),
        },
        python: None,
        poll_interval: Duration::from_millis(300),
    }
}

#[test]
fn a_second_submit_with_the_same_id_is_the_same_job() {
    let bucket = new_bucket("ray-twice");
    put_parquet_dataset(&bucket, FILES, ROWS);
    let (plan_uri, tasks) = write_plan(&bucket, "3");
    let run_id = format!("th-e2e-{bucket}");
    let id = submission_id(&run_id, 1);
    multi_thread_rt().block_on(async {
        let first = RayRun::submit(core_submit(&run_id, &bucket, &plan_uri, tasks))
            .await
            .unwrap();
        assert_eq!(first.submission_id(), id);
        assert!(!first.already_submitted());
        // A restarted submitter: the same run and attempt.
        let second = RayRun::submit(core_submit(&run_id, &bucket, &plan_uri, tasks))
            .await
            .unwrap();
        assert_eq!(second.submission_id(), id);
        assert!(second.already_submitted());

        let states = second.finish().await.unwrap();
        assert_eq!(states.len(), tasks);
        assert!(
            states.iter().all(|t| t.phase == TaskPhase::Succeeded),
            "{states:?}"
        );
        let states = first.finish().await.unwrap();
        let c = truthound_operator::backend::tasks::counts(&states);
        assert_eq!(c.summary, format!("{tasks}/{tasks}"));
        assert_eq!(c.retried, 0);
    });
    // One job with that id on the cluster.
    let jobs = dashboard_get("/api/jobs/");
    let same: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["submission_id"] == id.as_str())
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["status"], "SUCCEEDED");
    assert_eq!(same[0]["metadata"]["truthound.run"], run_id.as_str());
    for t in 0..tasks {
        assert!(!get(&bucket, &format!("work/partials/{t}")).is_empty());
    }
}

#[test]
fn a_stopped_job_cancels_its_tasks() {
    let bucket = new_bucket("ray-cancel");
    put_parquet_dataset(&bucket, FILES, ROWS);
    let (plan_uri, tasks) = write_plan(&bucket, "1");
    let dir = tempfile::tempdir().unwrap();
    // A th-worker that hangs, and says that it started.
    let wrapper = executable_script(
        &dir.path().join("th-worker"),
        &format!(
            "#!/bin/sh\necho $$ > {dir}/pid\nexec sleep 300\n",
            dir = dir.path().display()
        ),
    );
    let run_id = format!("th-e2e-{bucket}");
    let mut s = core_submit(&run_id, &bucket, &plan_uri, tasks);
    s.work.worker_bin = Some(wrapper);
    multi_thread_rt().block_on(async {
        let mut run = RayRun::submit(s).await.unwrap();
        let started = Instant::now();
        while run.states().iter().all(|t| t.phase != TaskPhase::Running) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no task started: {:?}",
                run.states()
            );
            let _ = run.next_event().await;
        }
        run.cancel().await.unwrap();
        let err = run.finish().await.unwrap_err();
        assert!(matches!(err, RayError::Cancelled(_)), "{err}");
        assert_eq!(err.exit_code(), 130);
    });
    // The hanging th-worker is gone.
    let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    let started = Instant::now();
    while proc.exists()
        && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "th-worker {} still runs after the job was stopped",
            pid.trim()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
