//! The real reconciler driving real remote clusters: a Ray head (`TH_TEST_RAY_ADDRESS`, from
//! `scripts/ray-cluster.sh`), a Dask scheduler with a worker (`TH_TEST_DASK_SCHEDULER`, from
//! `scripts/dask-cluster.sh`) and a Spark Connect server (`TH_TEST_SPARK_CONNECT`, from
//! `scripts/spark-cluster.sh`), with kube-rs's mocked API server standing in for Kubernetes (see
//! `support`). For Dask the test also plays the kubelet: a runner Job the operator creates is
//! run as the pod would run it (the Job's command and environment, with the image's `th-worker`
//! path pointed at the one built here), its stdout becoming the pod's log, and a deleted Job's
//! process gets SIGTERM.
//!
//! `scripts/test.sh` starts the clusters; `th-worker` comes from `cargo test --workspace`.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncReadExt;
use truthound_operator::backend::choice::Clusters;
use truthound_operator::backend::remote::RemoteConfig;
use truthound_operator::crd::{Phase, ProfileJob};
use truthound_operator::decide::Settings;
use truthound_operator::reconcile::{self, Config, Context};

fn ray_address() -> String {
    std::env::var("TH_TEST_RAY_ADDRESS").expect(
        "TH_TEST_RAY_ADDRESS is not set: start a Ray head with `scripts/ray-cluster.sh start` \
         (scripts/test.sh does) and export the line it prints",
    )
}

fn dask_scheduler() -> String {
    std::env::var("TH_TEST_DASK_SCHEDULER").expect(
        "TH_TEST_DASK_SCHEDULER is not set: start a Dask cluster with `scripts/dask-cluster.sh \
         start` (scripts/test.sh does) and export the line it prints",
    )
}

fn spark_connect() -> String {
    std::env::var("TH_TEST_SPARK_CONNECT").expect(
        "TH_TEST_SPARK_CONNECT is not set: start a Spark cluster with `scripts/spark-cluster.sh \
         start` (scripts/test.sh does) and export the line it prints",
    )
}

/// `th-worker`, built by `cargo test --workspace` next to the test executables.
fn th_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .join("th-worker");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test.sh)",
        path.display()
    );
    path
}

/// A uid of its own for each run: the clusters outlive a test, and the run's ids derive from it.
fn fresh_uid(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{:x}-{}", nanos, std::process::id())
}

fn executable(path: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_path_buf()
}

fn operator(client: kube::Client, clusters: Clusters, worker_bin: PathBuf) -> Arc<Context> {
    let settings = Settings {
        clusters,
        progress_interval: Duration::from_millis(300),
        ..test_settings()
    };
    let config = Config {
        remote: RemoteConfig {
            worker_bin: Some(worker_bin),
            dask_image: "th-worker-dask:test".into(),
            pod_defaults: Default::default(),
        },
        ..Config::default()
    };
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "truthound-operator".into(),
            instance: Some("test".into()),
        },
    );
    Arc::new(Context::new(client, settings, config, recorder))
}

/// A ProfileJob of the sample dataset for `backend`, with its own uid.
fn remote_job(dir: &Path, backend: &str, uid: &str, extra: Value) -> (Value, PathBuf, PathBuf) {
    let data = sample_dataset(dir);
    let out = dir.join("lake/profiles/events.json");
    let mut spec = json!({"backend": {"type": backend}, "partitioning": {"partitions": 3}});
    merge_json(&mut spec, &extra);
    let mut pj = profilejob(&data, &out, spec);
    pj["metadata"]["uid"] = json!(uid);
    (pj, data, out)
}

/// A ProfileJob of the sample dataset for `backend` in the fake API server, with a fresh uid:
/// (uid, API state, dataset, output).
fn start(dir: &Path, backend: &str, tag: &str, extra: Value) -> (String, Shared, PathBuf, PathBuf) {
    let uid = fresh_uid(tag);
    let (pj, data, out) = remote_job(dir, backend, &uid, extra);
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(pj);
    (uid, state, data, out)
}

fn phase(pj: &ProfileJob) -> Option<Phase> {
    pj.status.as_ref().and_then(|s| s.phase)
}

/// Reconciles (with a short pause between, as the requeue timer would) until `done` says so or
/// the job is gone; returns the last ProfileJob seen.
async fn drive_until(
    state: &Shared,
    ctx: &Arc<Context>,
    limit: Duration,
    done: impl Fn(&ProfileJob) -> bool,
) -> ProfileJob {
    let started = Instant::now();
    let mut last = current(state).expect("a ProfileJob");
    loop {
        let Some(pj) = current(state) else {
            return last;
        };
        last = pj.clone();
        if done(&pj) || phase(&pj).is_some_and(Phase::is_finished) {
            return pj;
        }
        assert!(
            started.elapsed() < limit,
            "the job did not get there in {limit:?}: {:#?}",
            pj.status
        );
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until a task runs, deletes the ProfileJob as `kubectl delete` would (with a finalizer
/// on it, the API server only marks it) and reconciles until it is gone.
async fn delete_once_running(state: &Shared, ctx: &Arc<Context>) {
    delete_once_running_then(state, ctx, || ()).await;
}

/// As [`delete_once_running`], calling `before_delete` once the job runs: deleting the job also
/// deletes its work data (plan and partials), so what a test needs from them it reads there.
async fn delete_once_running_then<T>(
    state: &Shared,
    ctx: &Arc<Context>,
    before_delete: impl FnOnce() -> T,
) -> T {
    drive_until(state, ctx, Duration::from_secs(120), |pj| {
        pj.status
            .as_ref()
            .and_then(|s| s.tasks.as_ref())
            .is_some_and(|t| t.running > 0)
    })
    .await;
    let seen = before_delete();
    {
        let mut s = state.lock().expect("state");
        let pj = s.pj.as_mut().expect("pj");
        pj["metadata"]["deletionTimestamp"] = json!("2026-11-21T10:05:00Z");
    }
    drive_until(state, ctx, Duration::from_secs(30), |_| false).await;
    assert!(
        current(state).is_none(),
        "the finalizer was removed and the job went"
    );
    seen
}

fn profile_json(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out).expect("profile written")).expect("profile JSON")
}

/// The exact statistics of two profiles agree (the approximate ones have their own tests).
fn assert_same_exact(merged: &Value, single: &Value) {
    assert_eq!(merged["row_count"], single["row_count"]);
    let (a, b) = (
        merged["columns"].as_array().expect("columns"),
        single["columns"].as_array().expect("columns"),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for field in [
            "name",
            "null_count",
            "distinct_count",
            "min_length",
            "max_length",
        ] {
            assert_eq!(x[field], y[field], "{} {field}", x["name"]);
        }
        for field in ["min", "max", "mean"] {
            let (p, q) = (&x["distribution"][field], &y["distribution"][field]);
            match (p.as_f64(), q.as_f64()) {
                (Some(p), Some(q)) => assert!(
                    (p - q).abs() <= 1e-9 * q.abs().max(1.0),
                    "{} {field}: {p} vs {q}",
                    x["name"]
                ),
                _ => assert_eq!(p, q, "{} {field}", x["name"]),
            }
        }
    }
}

async fn dashboard(path: &str) -> Value {
    let url = format!("{}{path}", ray_address().trim_end_matches('/'));
    let body = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .expect("Ray dashboard")
        .bytes()
        .await
        .expect("body");
    serde_json::from_slice(&body).expect("JSON")
}

/// The Ray jobs of a run (by the metadata the operator gives them).
async fn ray_jobs_of(uid: &str) -> Vec<Value> {
    dashboard("/api/jobs/")
        .await
        .as_array()
        .expect("job list")
        .iter()
        .filter(|j| j["metadata"]["truthound.run"] == uid)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ray_job_profiles_like_a_single_pass_and_a_restarted_operator_submits_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, data, out) = start(dir.path(), "ray", "ray-run", json!({}));
    let clusters = Clusters {
        ray_address: Some(ray_address()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters.clone(), th_worker());

    // Up to the submission.
    let pj = drive_until(&state, &ctx, Duration::from_secs(60), |pj| {
        phase(pj) == Some(Phase::Running)
    })
    .await;
    let s = pj.status.clone().expect("status");
    let id = format!("{uid}-1");
    assert_eq!(
        s.submission.as_ref().and_then(|s| s.id.as_deref()),
        Some(id.as_str())
    );
    assert_eq!(
        s.backend.as_ref().and_then(|b| b.address.clone()),
        Some(ray_address())
    );
    assert!(
        pj.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == reconcile::FINALIZER)),
        "the finalizer is on before the run: {:?}",
        pj.metadata.finalizers
    );

    // A new operator (empty caches) takes over mid-run.
    let ctx = operator(fake_api(state.clone()), clusters, th_worker());
    let pj = drive_until(&state, &ctx, Duration::from_secs(180), |_| false).await;
    let s = pj.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Succeeded), "{s:#?}");
    let t = s.tasks.clone().expect("task counts");
    assert_eq!((t.total, t.succeeded, t.failed), (3, 3, 0), "{t:?}");
    assert_eq!(s.completed_tasks.as_deref(), Some("0-2"));
    // The status write of the end is a watch event: that reconcile lets the finalizer go.
    reconcile::reconcile(Arc::new(pj), ctx.clone())
        .await
        .expect("reconcile");
    let pj = current(&state).expect("pj");
    assert!(
        pj.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()),
        "a finished job keeps no finalizer: {:?}",
        pj.metadata.finalizers
    );

    // The merge starts once every partial is in storage; the driver ends on its own.
    let started = Instant::now();
    loop {
        let jobs = ray_jobs_of(&uid).await;
        assert_eq!(jobs.len(), 1, "one Ray job for the run: {jobs:#?}");
        assert_eq!(jobs[0]["submission_id"], id.as_str());
        if jobs[0]["status"] == "SUCCEEDED" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the Ray job did not succeed: {}",
            jobs[0]["status"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert_same_exact(&profile_json(&out), &single_pass(&data).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_on_ray_is_retried_per_backoff_limit_then_fails_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, state, _, out) = start(
        dir.path(),
        "ray",
        "ray-fail",
        json!({"backoffLimitPerTask": 1, "backend": {"ray": {"address": ray_address()}}}),
    );
    // Task 1's th-worker fails transiently every time; the others run for real.
    let worker = executable(
        &dir.path().join("th-worker"),
        &format!(
            "#!/bin/sh\ncase \" $* \" in *' --task 1 '*) echo 'object store timed out' >&2; exit 75;; esac\nexec {} \"$@\"\n",
            th_worker().display()
        ),
    );
    let ctx = operator(fake_api(state.clone()), Clusters::default(), worker);
    let pj = drive_until(&state, &ctx, Duration::from_secs(180), |_| false).await;
    let s = pj.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Failed), "{s:#?}");
    let failed = support::condition(&s, "Failed");
    assert_eq!(failed.reason, "TooManyFailedTasks");
    assert!(failed.message.contains("task 1"), "{}", failed.message);
    assert_eq!(s.failed_tasks.as_deref(), Some("1"));
    let t = s.tasks.clone().expect("counts");
    assert!(t.retried >= 1, "retried per backoffLimitPerTask: {t:?}");
    let last = s
        .last_failures
        .iter()
        .find(|f| f.task == 1)
        .expect("task 1's failure");
    assert_eq!(last.reason, "Transient");
    assert!(!out.exists(), "no profile from a failed job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_ray_job_midway_stops_it_on_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, _, _) = start(dir.path(), "ray", "ray-delete", json!({}));
    let hang = executable(&dir.path().join("th-worker"), "#!/bin/sh\nexec sleep 300\n");
    let clusters = Clusters {
        ray_address: Some(ray_address()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters, hang);
    delete_once_running(&state, &ctx).await;
    let started = Instant::now();
    loop {
        let jobs = ray_jobs_of(&uid).await;
        assert_eq!(jobs.len(), 1, "{jobs:#?}");
        if jobs[0]["status"] == "STOPPED" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the Ray job was not stopped: {}",
            jobs[0]["status"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_retried_with_backoff_then_fails_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pj, _, _) = remote_job(
        dir.path(),
        "ray",
        &fresh_uid("ray-down"),
        json!({"backend": {"ray": {"address": "http://127.0.0.1:1"}}}),
    );
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(pj);
    let client = fake_api(state.clone());
    let ctx = operator(client, Clusters::default(), th_worker());
    let mut seen_errors = Vec::new();
    for _ in 0..20 {
        let pj = current(&state).expect("pj");
        if phase(&pj).is_some_and(Phase::is_finished) {
            break;
        }
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
        if let Some(n) = current(&state)
            .and_then(|p| p.status)
            .and_then(|s| s.consecutive_errors)
        {
            seen_errors.push(n);
        }
    }
    let s = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(s.phase, Some(Phase::Failed), "{s:#?}");
    let failed = support::condition(&s, "Failed");
    assert_eq!(failed.reason, "ClusterUnavailable");
    assert!(
        failed.message.contains("cannot reach the Ray dashboard")
            && failed.message.contains("127.0.0.1:1"),
        "{}",
        failed.message
    );
    let max = Settings::default().max_consecutive_errors;
    seen_errors.dedup();
    assert_eq!(
        seen_errors,
        (1..max).collect::<Vec<_>>(),
        "tried {max} times in all"
    );
    let warnings = requests(&state)
        .iter()
        .filter(|r| r.uri.contains("/events") && r.body.to_string().contains("ClusterUnavailable"))
        .count();
    assert!(
        warnings >= max as usize,
        "a warning event per failed attempt"
    );
}

// ---- Dask: the operator's runner Job, run as its pod would be -----------------------------

/// Plays the kubelet for runner Jobs: starts each new one's pod as a local process (the Job's
/// command and environment; the image's th-worker path pointed at `worker`), keeps its stdout
/// as the pod's log and its end in the pod's and the Job's status, and sends SIGTERM to the
/// process of a Job that was deleted.
fn kubelet(state: Shared, worker: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: std::collections::BTreeMap<String, tokio::process::Child> =
            Default::default();
        let mut logs: std::collections::BTreeMap<String, Arc<std::sync::Mutex<String>>> =
            Default::default();
        loop {
            let jobs: Vec<(String, Value)> = {
                let s = state.lock().expect("state");
                s.jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            for (name, job) in &jobs {
                if running.contains_key(name) || job["status"]["conditions"].is_array() {
                    continue;
                }
                let c = &job["spec"]["template"]["spec"]["containers"][0];
                let command: Vec<String> =
                    serde_json::from_value(c["command"].clone()).expect("runner command");
                assert_eq!(command[0], "python");
                let mut cmd = tokio::process::Command::new(
                    truthound_operator::backend::dask::default_python(),
                );
                cmd.args(&command[1..]);
                for e in c["env"].as_array().expect("env") {
                    let (k, mut v) = (
                        e["name"].as_str().expect("name").to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    );
                    if k == "TH_DASK_RUNNER_CONFIG" {
                        v = v.replace(
                            truthound_operator::backend::remote::DASK_IMAGE_WORKER_BIN,
                            &worker.display().to_string(),
                        );
                    }
                    cmd.env(k, v);
                }
                cmd.stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .stdin(Stdio::null());
                let mut child = cmd.spawn().expect("runner process");
                let log = Arc::new(std::sync::Mutex::new(String::new()));
                let mut stdout = child.stdout.take().expect("stdout");
                let sink = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = stdout.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        sink.lock()
                            .expect("log")
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                });
                let pod = format!("{name}-pod");
                {
                    let mut s = state.lock().expect("state");
                    s.pods.push(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod, "namespace": NS,
                                     "creationTimestamp": "2026-11-21T10:00:00Z",
                                     "labels": {"batch.kubernetes.io/job-name": name}},
                        "status": {"phase": "Running", "containerStatuses": [{
                            "name": "runner", "image": "x", "imageID": "", "ready": true,
                            "restartCount": 0, "state": {"running": {}}}]},
                    }));
                }
                running.insert(name.clone(), child);
                logs.insert(name.clone(), log);
            }
            let mut ended = Vec::new();
            for (name, child) in running.iter_mut() {
                let gone = !jobs.iter().any(|(n, _)| n == name);
                if gone && let Some(pid) = child.id() {
                    // What the kubelet does to a deleted pod's container.
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                let pod = format!("{name}-pod");
                let text = logs[name].lock().expect("log").clone();
                let mut s = state.lock().expect("state");
                s.logs.insert(pod.clone(), text);
                if let Ok(Some(exit)) = child.try_wait() {
                    let code = exit.code().unwrap_or(143);
                    for p in s
                        .pods
                        .iter_mut()
                        .filter(|p| p["metadata"]["name"] == pod.as_str())
                    {
                        p["status"]["phase"] =
                            json!(if code == 0 { "Succeeded" } else { "Failed" });
                        p["status"]["containerStatuses"][0]["state"] =
                            json!({"terminated": {"exitCode": code}});
                    }
                    if let Some(j) = s.jobs.get_mut(name) {
                        j["status"] = json!({"conditions": [{
                            "type": if code == 0 { "Complete" } else { "Failed" },
                            "status": "True"}]});
                    }
                    ended.push(name.clone());
                }
            }
            for name in ended {
                running.remove(&name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dask_runner_job_profiles_like_a_single_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, data, out) = start(dir.path(), "dask", "dask-run", json!({}));
    let clusters = Clusters {
        dask_scheduler: Some(dask_scheduler()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters, th_worker());
    let node = kubelet(state.clone(), th_worker());
    let pj = drive_until(&state, &ctx, Duration::from_secs(180), |_| false).await;
    node.abort();
    let s = pj.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Succeeded), "{s:#?}");
    let t = s.tasks.clone().expect("counts");
    assert_eq!((t.total, t.succeeded), (3, 3));

    // The runner Job as the operator made it.
    let job = state
        .lock()
        .expect("state")
        .jobs
        .get("events-d1")
        .cloned()
        .expect("the runner Job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "ProfileJob");
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "th-worker-dask:test");
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(env.contains(&("DASK_SCHEDULER_ADDRESS".into(), dask_scheduler())));
    let config: Value = serde_json::from_str(
        &env.iter()
            .find(|(k, _)| k == "TH_DASK_RUNNER_CONFIG")
            .expect("runner config")
            .1,
    )
    .expect("JSON");
    assert_eq!(config["tasks"], json!([0, 1, 2]));
    assert_eq!(config["run_id"], uid.as_str());

    assert_same_exact(&profile_json(&out), &single_pass(&data).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_dask_job_midway_stops_the_runner_and_its_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, state, _, _) = start(dir.path(), "dask", "dask-delete", json!({}));
    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).expect("mkdir");
    let hang = executable(
        &dir.path().join("th-worker"),
        &format!(
            "#!/bin/sh\necho $$ > {}/$$\nexec sleep 300\n",
            pids.display()
        ),
    );
    let clusters = Clusters {
        dask_scheduler: Some(dask_scheduler()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters, th_worker());
    let node = kubelet(state.clone(), hang);
    delete_once_running(&state, &ctx).await;
    assert!(
        state.lock().expect("state").jobs.is_empty(),
        "the runner Job was deleted"
    );
    // The runner, told to stop, cancels its tasks: their th-worker processes end.
    let started = Instant::now();
    loop {
        let alive: Vec<String> = std::fs::read_dir(&pids)
            .expect("pids")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "th-worker processes {alive:?} still run after the job was deleted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node.abort();
}

// ---- Spark: the operator is Spark Connect's client ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spark_run_profiles_like_a_single_pass_and_a_second_operator_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, data, out) = start(
        dir.path(),
        "spark",
        "spark-run",
        json!({"partitioning": {"partitions": 9}}),
    );
    let clusters = Clusters {
        spark_connect_url: Some(spark_connect()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters.clone(), th_worker());
    // Until the first task is done; then this operator stops (its runs with it) and a new one,
    // which has no run in its memory, submits the tasks that have no partial yet, under the
    // same id.
    let pj = drive_until(&state, &ctx, Duration::from_secs(300), |pj| {
        pj.status
            .as_ref()
            .and_then(|s| s.tasks.as_ref())
            .is_some_and(|t| t.succeeded > 0)
    })
    .await;
    let s = pj.status.clone().expect("status");
    assert_eq!(
        s.backend.as_ref().and_then(|b| b.address.clone()),
        Some(spark_connect())
    );
    assert_eq!(
        s.submission.as_ref().and_then(|s| s.id.clone()),
        Some(format!("{uid}-1"))
    );
    let total = s.tasks.as_ref().map_or(0, |t| t.total);
    drop(ctx);
    // The stopped operator's run does not finish the job on its own.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let partials = dir
        .path()
        .join(format!("lake/profiles/.truthound/{uid}/partials"));
    let done = std::fs::read_dir(&partials).map_or(0, |d| d.count());
    assert!(
        done < total as usize,
        "{done} of {total} partials after the operator stopped"
    );
    let ctx = operator(fake_api(state.clone()), clusters, th_worker());
    let pj = drive_until(&state, &ctx, Duration::from_secs(300), |_| false).await;
    let s = pj.status.clone().expect("status");
    assert_eq!(s.phase, Some(Phase::Succeeded), "{s:#?}");
    let t = s.tasks.clone().expect("counts");
    assert_eq!((t.total, t.succeeded, t.failed), (total, total, 0), "{t:?}");
    let profile = profile_json(&out);
    assert_same_exact(&profile, &single_pass(&data).await);
    // What Spark cannot compute is said, not invented.
    let unavailable = profile["unavailable"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        unavailable
            .iter()
            .any(|u| u["statistic"] == "duplicate_row_count"
                && u["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("spark backend"))),
        "{unavailable:?}"
    );
    assert!(profile["duplicate_row_count"].is_null());
}

#[tokio::test]
async fn an_unreachable_spark_connect_server_is_retried_then_fails_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pj, _, _) = remote_job(
        dir.path(),
        "spark",
        &fresh_uid("spark-down"),
        json!({"backend": {"spark": {"connectUrl": "sc://127.0.0.1:1"}}}),
    );
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(pj);
    let ctx = operator(fake_api(state.clone()), Clusters::default(), th_worker());
    for _ in 0..20 {
        let pj = current(&state).expect("pj");
        if phase(&pj).is_some_and(Phase::is_finished) {
            break;
        }
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
    }
    let s = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(s.phase, Some(Phase::Failed), "{s:#?}");
    let failed = support::condition(&s, "Failed");
    assert_eq!(failed.reason, "ClusterUnavailable");
    assert!(
        failed.message.contains("sc://127.0.0.1:1"),
        "{}",
        failed.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_spark_job_midway_interrupts_its_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, _, _) = start(
        dir.path(),
        "spark",
        "spark-delete",
        json!({"partitioning": {"partitions": 9}}),
    );
    let clusters = Clusters {
        spark_connect_url: Some(spark_connect()),
        ..Clusters::default()
    };
    let ctx = operator(fake_api(state.clone()), clusters, th_worker());
    let work = dir.path().join(format!("lake/profiles/.truthound/{uid}"));
    // The plan is read while the job runs: deleting the job deletes its work data.
    let plan: Value = delete_once_running_then(&state, &ctx, || {
        serde_json::from_slice(&std::fs::read(work.join("plan")).expect("plan")).expect("plan JSON")
    })
    .await;
    // The run was cancelled: the tasks not started by then never start. Without the cancel
    // every task would have its partial well within this wait (a task still writing when the
    // work data went writes its partial again).
    let partials = work.join("partials");
    let count = || std::fs::read_dir(&partials).map(|d| d.count()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let tasks = plan["tasks"].as_array().map_or(0, Vec::len);
    assert!(tasks > 3, "a plan of several tasks: {tasks}");
    assert!(
        count() < tasks,
        "{} of {tasks} partials written after the job was deleted",
        count()
    );
}

#[tokio::test]
async fn deleting_a_job_whose_cluster_is_gone_still_lets_it_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, state, _, _) = start(
        dir.path(),
        "ray",
        "ray-gone",
        json!({"backend": {"ray": {"address": "http://127.0.0.1:1"}}}),
    );
    // A running job of a Ray cluster that no longer answers, being deleted.
    {
        let mut s = state.lock().expect("state");
        let pj = s.pj.as_mut().expect("pj");
        pj["metadata"]["finalizers"] = json!([reconcile::FINALIZER]);
        pj["metadata"]["deletionTimestamp"] = json!("2026-11-21T10:05:00Z");
        pj["status"] = json!({
            "phase": "Running", "attempt": 1,
            "backend": {"type": "ray", "address": "http://127.0.0.1:1"},
            "submission": {"attempt": 1, "id": format!("{uid}-1")},
        });
    }
    let ctx = operator(fake_api(state.clone()), Clusters::default(), th_worker());
    let pj = current(&state).expect("pj");
    reconcile::reconcile(Arc::new(pj), ctx)
        .await
        .expect("reconcile");
    assert!(
        current(&state).is_none(),
        "the finalizer went and so did the job"
    );
    let said = requests(&state)
        .iter()
        .any(|r| r.uri.contains("/events") && r.body.to_string().contains("CancelFailed"));
    assert!(said, "a warning event says the run could not be stopped");
}
