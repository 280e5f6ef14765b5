//! `th-worker` as a worker pod runs it, against the real S3-compatible server on 127.0.0.1: a
//! plan made by the operator's planner, written to the bucket; every task reporting to the
//! operator's progress service (`truthound_operator::progress`) with its job's token; a wrong
//! token or an unreachable operator never failing a task; reports over TLS verified with the
//! operator's CA, and a worker without that CA refused by its own TLS check; and a worker
//! killed midway and run again producing the same partial as an uninterrupted run.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use truthound_e2e::*;
use truthound_operator::progress::pb::{ReportKind, ReportRequest};
use truthound_operator::progress::{ProgressHub, serve_tls_on, tls_config};
use truthound_profile::dataset::StorageOptions;
use truthound_profile::{PartialProfile, Plan, PlanRequest, Strategy};

/// The operator's progress service on 127.0.0.1, with every accepted report recorded.
struct Operator {
    hub: ProgressHub,
    endpoint: String,
    reports: Arc<Mutex<Vec<(Instant, ReportRequest)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Runs the service; kept for as long as the test.
    _rt: tokio::runtime::Runtime,
}

/// The test certificates of the progress service (tests/fixtures/progress-tls: a CA, and a
/// certificate it signed for 127.0.0.1 and localhost).
fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/progress-tls")
        .join(name)
}

impl Operator {
    fn start() -> Operator {
        Operator::start_with(false)
    }

    /// The service over TLS, with the fixture's certificate.
    fn start_tls() -> Operator {
        Operator::start_with(true)
    }

    fn start_with(tls: bool) -> Operator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hub = ProgressHub::new(ProgressHub::generate_key()).unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = reports.clone();
        hub.on_report(move |report| r.lock().unwrap().push((Instant::now(), report.clone())));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", listener.local_addr().unwrap());
        let tls = tls.then(|| {
            let read = |n: &str| std::fs::read(tls_fixture(n)).unwrap();
            tls_config(&read("tls.crt"), &read("tls.key")).expect("the fixture's pair")
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(serve_tls_on(hub.clone(), listener, tls, async {
            let _ = stopped.await;
        }));
        Operator {
            hub,
            endpoint,
            reports,
            stop: Some(stop),
            _rt: rt,
        }
    }

    /// Kinds of the reports of (job, task), in the order they arrived.
    fn kinds(&self, job: &str, task: u32) -> Vec<ReportKind> {
        self.reports_of(job, task)
            .iter()
            .map(|(_, r)| r.kind())
            .collect()
    }

    fn reports_of(&self, job: &str, task: u32) -> Vec<(Instant, ReportRequest)> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.job_uid == job && r.task == task)
            .cloned()
            .collect()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Storage options for planning in this process (the plan keeps them without the secrets;
/// workers take credentials from their environment, as pods do).
fn storage() -> StorageOptions {
    let mut o = StorageOptions {
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        ..StorageOptions::default()
    };
    o.extra.insert("aws_access_key_id".into(), "test".into());
    o.extra
        .insert("aws_secret_access_key".into(), "test".into());
    o
}

/// Plans `s3://bucket/prefix/` as the operator does and writes the plan to the bucket.
fn plan(bucket: &str, prefix: &str, request: &PlanRequest) -> (Plan, String) {
    let uri = format!("s3://{bucket}/{prefix}/");
    let plan = rt().block_on(async {
        let ds = truthound_profile::dataset::discover(&uri, None, &storage())
            .await
            .unwrap();
        truthound_profile::plan::plan(&ds, request).unwrap()
    });
    assert!(
        !plan
            .dataset
            .storage
            .extra
            .contains_key("aws_secret_access_key"),
        "secrets stay out of plans"
    );
    let key = format!("run/{prefix}-plan.json");
    put(bucket, &key, plan.to_json());
    (plan, format!("s3://{bucket}/{key}"))
}

/// `th-worker run-task` with the S3 test credentials, as a pod of job `job` would run it.
fn worker(plan_uri: &str, task: u32, out: &str, pod: &str, progress: &[&str]) -> Command {
    let mut c = Command::new(bin("th-worker"));
    c.args(["run-task", "--plan", plan_uri, "--out", out])
        .args(["--endpoint", &s3_endpoint()])
        .args(progress)
        .env("JOB_COMPLETION_INDEX", task.to_string())
        .env("POD_NAME", pod)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("TH_PROGRESS_ENDPOINT")
        .env_remove("TH_PROGRESS_TOKEN")
        .env_remove("TH_JOB_UID")
        .env_remove("TH_PROGRESS_CA")
        .env_remove("TH_TERMINATION_LOG");
    c
}

fn reporting<'a>(op: &'a Operator, token: &'a str, job: &'a str) -> [&'a str; 8] {
    [
        "--progress-endpoint",
        &op.endpoint,
        "--progress-token",
        token,
        "--job-uid",
        job,
        "--heartbeat-seconds",
        "1",
    ]
}

fn exists(bucket: &str, key: &str) -> bool {
    use object_store::ObjectStoreExt;
    let s = store(bucket);
    match rt().block_on(s.head(&object_store::path::Path::from(key))) {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("HEAD {key}: {e}"),
    }
}

fn partial(bucket: &str, key: &str) -> PartialProfile {
    PartialProfile::from_bytes(&get(bucket, key), key).unwrap()
}

/// Two runs of one task wrote the same partial: the same tasks, rows and exact figures, and
/// estimates within their stated bounds. Not the same bytes: KLL sketches compact with random
/// bits, and a distinct-count sketch's (HIP) estimate depends on the order values reach it, so
/// two runs of a task agree on the estimates' bounds, not on their last digits.
fn assert_same_partial(a: &PartialProfile, b: &PartialProfile) {
    assert_eq!(a.plans, b.plans);
    assert_eq!(a.tasks, b.tasks);
    assert_eq!(a.row_slices, b.row_slices);
    assert_eq!(a.bytes_read, b.bytes_read);
    let (ja, jb) = (profile_json(a), profile_json(b));
    assert_eq!(ja["row_count"], b.row_count());
    let mut diff = Vec::new();
    differences(&ja, &jb, "", &mut diff);
    for path in diff {
        let estimated = ["quantiles", "histogram", "median", "q1", "q3"]
            .iter()
            .any(|f| path.contains(&format!(".{f}")));
        let name = path
            .strip_prefix(".columns[")
            .and_then(|p| p.split(']').next());
        let distinct = ["distinct_count", "unique_ratio"]
            .iter()
            .any(|f| path.contains(f))
            && name.is_some_and(|c| {
                let (ca, cb) = (column(&ja, c), column(&jb, c));
                let bound = &cb["accuracy"]["distinct_count"];
                let estimate = ca["distinct_count"].as_f64().unwrap();
                bound["exact"] == false
                    && bound["lower_bound"].as_f64().unwrap() <= estimate
                    && estimate <= bound["upper_bound"].as_f64().unwrap()
            });
        assert!(
            estimated || distinct || path == ".profiled_at",
            "the partials differ in {path}: {} vs {}",
            pointer(&ja, &path),
            pointer(&jb, &path)
        );
    }
}

/// The value at a path of [`differences`], for messages.
fn pointer(v: &serde_json::Value, path: &str) -> String {
    let mut v = v;
    for part in path.split('.').skip(1) {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']'))),
            None => (part, None),
        };
        v = &v[key];
        if let Some(i) = index {
            v = match i.parse::<usize>() {
                Ok(n) => &v[n],
                Err(_) => v
                    .as_array()
                    .and_then(|a| a.iter().find(|c| c["name"] == i))
                    .unwrap_or(&serde_json::Value::Null),
            };
        }
    }
    v.to_string()
}

/// The profile of a partial, without timings.
fn profile_json(p: &PartialProfile) -> serde_json::Value {
    let mut p = p.clone();
    p.task_millis = 0;
    let json = truthound_profile::TableProfile::from_partial(&p, 0, false, 20).to_json();
    serde_json::from_slice(&json).unwrap()
}

/// Paths where two JSON values differ.
fn differences(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (&x.get(k), &y.get(k));
                match (va, vb) {
                    (Some(va), Some(vb)) => differences(va, vb, &format!("{path}.{k}"), out),
                    _ => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Array(x), Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                let name = va["name"].as_str().map_or(i.to_string(), str::to_string);
                differences(va, vb, &format!("{path}[{name}]"), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

fn upload_sample(bucket: &str) {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    let mut files: Vec<_> = std::fs::read_dir(&sample)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 1, "the sample is a multi-file dataset");
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        put(
            bucket,
            &format!("events/{name}"),
            std::fs::read(&f).unwrap(),
        );
    }
}

#[test]
fn workers_report_start_progress_and_end_with_their_job_token() {
    let op = Operator::start();
    let bucket = new_bucket("progress");
    upload_sample(&bucket);
    let (plan, plan_uri) = plan(&bucket, "events", &PlanRequest::new(Strategy::RowBased, 3));
    assert_eq!(plan.tasks.len(), 3);
    let job = "3f0c2a52-job-a";
    let token = op.hub.token_for(job);
    let before = SystemTime::now();
    let mut merged: Option<PartialProfile> = None;
    for task in &plan.tasks {
        let out = format!("s3://{bucket}/run/partials/{}", task.id);
        let pod = format!("events-{}-pod", task.id);
        let o = worker(&plan_uri, task.id, &out, &pod, &reporting(&op, &token, job))
            .output()
            .unwrap();
        assert!(o.status.success(), "task {}: {}", task.id, stderr(&o));
        assert!(!stderr(&o).contains("WARN"), "{}", stderr(&o));

        let kinds = op.kinds(job, task.id);
        assert_eq!(kinds.first(), Some(&ReportKind::Started), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&ReportKind::Finished), "{kinds:?}");
        assert!(!kinds.contains(&ReportKind::Failed), "{kinds:?}");
        let rows = task.rows.expect("Parquet records its rows");
        let reports = op.reports_of(job, task.id);
        for (_, r) in &reports {
            assert_eq!((r.rows_total, r.pod.as_str()), (rows, pod.as_str()));
            assert_eq!(r.plan_id, plan.id);
            assert!(r.rows_done <= rows);
        }
        let p = partial(&bucket, &format!("run/partials/{}", task.id));
        match &mut merged {
            None => merged = Some(p),
            Some(m) => m.merge(&p).unwrap(),
        }
    }
    let seen = op.hub.snapshot(job);
    assert_eq!(seen.tasks.len(), 3);
    assert_eq!(seen.finished(), 3);
    assert_eq!(seen.rows_done(), 3000);
    assert_eq!(seen.rows_done(), seen.rows_total());
    for (id, t) in &seen.tasks {
        assert_eq!(Some(t.rows_done), plan.tasks[*id as usize].rows);
        assert!(t.started >= before && t.last_seen >= t.started);
        assert_eq!(t.plan_id, plan.id);
    }
    assert!(
        op.hub
            .stalled(
                job,
                SystemTime::now() + Duration::from_secs(3600),
                Duration::from_secs(1)
            )
            .is_empty(),
        "finished tasks never stall"
    );
    let merged = merged.unwrap();
    assert!(merged.missing_tasks().is_empty());
    assert_eq!(merged.row_count(), 3000);

    // Run again (a recreated Job): the partial is there, the task is not redone, and the
    // operator hears that it is finished.
    let out = format!("s3://{bucket}/run/partials/1");
    let before = get(&bucket, "run/partials/1");
    let o = worker(
        &plan_uri,
        1,
        &out,
        "events-1-again",
        &reporting(&op, &token, job),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("partial already present"),
        "{}",
        stderr(&o)
    );
    assert_eq!(get(&bucket, "run/partials/1"), before);
    let again = op.reports_of(job, 1);
    let (_, last) = again.last().unwrap();
    assert_eq!(
        (last.kind(), last.pod.as_str(), Some(last.rows_done)),
        (ReportKind::Finished, "events-1-again", plan.tasks[1].rows)
    );
}

#[test]
fn a_wrong_token_or_an_absent_operator_never_fails_a_task() {
    let op = Operator::start();
    let bucket = new_bucket("progress-auth");
    upload_sample(&bucket);
    let (plan, plan_uri) = plan(&bucket, "events", &PlanRequest::new(Strategy::RowBased, 2));
    // A pod of job B holding job A's token: refused, and the task still succeeds.
    let job_a_token = op.hub.token_for("job-a");
    let o = worker(
        &plan_uri,
        0,
        &format!("s3://{bucket}/run/b0"),
        "b-0",
        &reporting(&op, &job_a_token, "job-b"),
    )
    .output()
    .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("refused the progress token"), "{err}");
    assert_eq!(err.matches("\"WARN\"").count(), 1, "warned once: {err}");
    assert!(op.hub.snapshot("job-b").tasks.is_empty());
    assert!(op.hub.snapshot("job-a").tasks.is_empty());
    assert!(exists(&bucket, "run/b0"));

    // No operator listening: warned once, the task succeeds without waiting long.
    let started = Instant::now();
    let o = worker(
        &plan_uri,
        1,
        &format!("s3://{bucket}/run/b1"),
        "b-1",
        &[
            "--progress-endpoint",
            "http://127.0.0.1:9",
            "--progress-token",
            &op.hub.token_for("job-b"),
            "--job-uid",
            "job-b",
        ],
    )
    .output()
    .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cannot report progress"), "{err}");
    assert_eq!(err.matches("\"WARN\"").count(), 1, "warned once: {err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        partial(&bucket, "run/b1").row_count(),
        plan.tasks[1].rows.unwrap()
    );
}

#[test]
fn workers_report_over_tls_with_the_operators_ca_and_fail_clearly_without_it() {
    let op = Operator::start_tls();
    assert!(op.endpoint.starts_with("https://127.0.0.1:"));
    let bucket = new_bucket("progress-tls");
    upload_sample(&bucket);
    let (plan, plan_uri) = plan(&bucket, "events", &PlanRequest::new(Strategy::RowBased, 2));
    assert_eq!(plan.tasks.len(), 2);
    let job = "job-tls";
    let token = op.hub.token_for(job);
    let ca_file = tls_fixture("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();
    // The CA as a file (mounted) for task 0, as PEM text (what the operator puts in the
    // worker pods' TH_PROGRESS_CA) for task 1: every report arrives, nothing is warned.
    for (task, ca) in [(0u32, ca_file.display().to_string()), (1, ca_pem)] {
        let o = worker(
            &plan_uri,
            task,
            &format!("s3://{bucket}/run/tls{task}"),
            &format!("tls-{task}"),
            &reporting(&op, &token, job),
        )
        .env("TH_PROGRESS_CA", ca)
        .output()
        .unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(!err.contains("WARN"), "{err}");
        let kinds = op.kinds(job, task);
        assert_eq!(kinds.first(), Some(&ReportKind::Started), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&ReportKind::Finished), "{kinds:?}");
    }
    assert_eq!(op.hub.snapshot(job).finished(), 2);

    // Without the CA the system's roots do not know the certificate: the worker's TLS check
    // refuses it, says so once, reports nothing, and the task still succeeds.
    let other = "job-tls-no-ca";
    let o = worker(
        &plan_uri,
        0,
        &format!("s3://{bucket}/run/no-ca"),
        "no-ca-0",
        &reporting(&op, &op.hub.token_for(other), other),
    )
    .output()
    .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cannot report progress"), "{err}");
    assert!(
        err.to_ascii_lowercase().contains("certificate"),
        "the warning names the certificate problem: {err}"
    );
    assert_eq!(err.matches("\"WARN\"").count(), 1, "warned once: {err}");
    assert!(op.hub.snapshot(other).tasks.is_empty());
    assert!(exists(&bucket, "run/no-ca"));

    // Plain http:// against the TLS port: nothing gets through either.
    let plain = op.endpoint.replace("https://", "http://");
    let o = worker(
        &plan_uri,
        1,
        &format!("s3://{bucket}/run/plain"),
        "plain-1",
        &[
            "--progress-endpoint",
            &plain,
            "--progress-token",
            &op.hub.token_for(other),
            "--job-uid",
            other,
        ],
    )
    .output()
    .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cannot report progress"), "{err}");
    assert!(op.hub.snapshot(other).tasks.is_empty());
}

/// Rows of the dataset of the kill test: enough that a task is still reading when the
/// operator has heard its first progress.
const BIG_FILES: i64 = 4;
const BIG_ROWS: i64 = 150_000;

fn spawn(c: &mut Command) -> Child {
    // Nothing reads its output: a full pipe must not block the worker.
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_worker_killed_midway_and_run_again_writes_the_same_partial() {
    let op = Operator::start();
    let bucket = new_bucket("progress-kill");
    for f in 0..BIG_FILES {
        let bytes = parquet_bytes(&table(f * BIG_ROWS..(f + 1) * BIG_ROWS), 10_000);
        put(&bucket, &format!("big/part-{f}.parquet"), bytes);
    }
    let (plan, plan_uri) = plan(&bucket, "big", &PlanRequest::new(Strategy::RowBased, 1));
    let rows = plan.tasks[0].rows.unwrap();
    assert_eq!(rows, (BIG_FILES * BIG_ROWS) as u64);
    let job = "job-kill";
    let token = op.hub.token_for(job);

    // The reference: an uninterrupted run (as another job, so its reports stay apart).
    let ref_job = "job-reference";
    let ref_token = op.hub.token_for(ref_job);
    let t0 = Instant::now();
    let o = worker(
        &plan_uri,
        0,
        &format!("s3://{bucket}/run/reference"),
        "ref-0",
        &reporting(&op, &ref_token, ref_job),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    println!("uninterrupted run: {:?}", t0.elapsed());
    let reference = partial(&bucket, "run/reference");
    assert_eq!(reference.row_count(), rows);
    // While rows flow, the operator hears from the task at least every couple of seconds
    // (progress about once a second, heartbeats otherwise), so it is never taken for stalled.
    let reports = op.reports_of(ref_job, 0);
    let gaps = reports.windows(2).map(|w| w[1].0 - w[0].0);
    let longest = gaps.max().unwrap_or_default();
    assert!(longest < Duration::from_secs(3), "{longest:?}");
    assert!(
        reports
            .iter()
            .any(|(_, r)| r.kind() == ReportKind::Progress),
        "{:?}",
        op.kinds(ref_job, 0)
    );

    // The same task, killed once the operator has heard it is partway.
    let out = format!("s3://{bucket}/run/partials/0");
    let mut child = spawn(&mut worker(
        &plan_uri,
        0,
        &out,
        "kill-0-a",
        &reporting(&op, &token, job),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    let midway = loop {
        if let Some(t) = op.hub.snapshot(job).tasks.get(&0)
            && t.rows_done > 0
        {
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no progress heard from the worker"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker ended before reporting progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    println!("killed after {} of {rows} rows", midway.rows_done);
    assert!(
        !midway.finished && midway.rows_done < rows && !status.success(),
        "the task finished before it could be killed midway ({} of {rows} rows); \
         make the dataset bigger",
        midway.rows_done
    );
    assert!(
        !exists(&bucket, "run/partials/0"),
        "no partial from a killed worker"
    );
    // The operator sees a running task go quiet: stalled after the timeout.
    let quiet = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(op.hub.stalled(job, quiet, Duration::from_secs(30)), [0]);

    // Its replacement runs the task again from the start and writes the same partial.
    let o = worker(&plan_uri, 0, &out, "kill-0-b", &reporting(&op, &token, job))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = partial(&bucket, "run/partials/0");
    assert_same_partial(&again, &reference);
    let t = &op.hub.snapshot(job).tasks[&0];
    assert!(t.finished);
    assert_eq!((t.rows_done, t.pod.as_str()), (rows, "kill-0-b"));
    assert!(
        op.hub
            .stalled(job, quiet, Duration::from_secs(30))
            .is_empty()
    );
}
