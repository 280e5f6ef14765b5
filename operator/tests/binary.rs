//! `th-operator` as a Deployment starts it. Against an API server it cannot reach: a clear error
//! and a non-zero exit, never a panic (a panic is a crash loop with nothing useful in the logs).
//! Against a small fake API server over HTTP (a Lease, the operator's pod, and the ProfileJob and
//! its Jobs as the reconciler tests' fake keeps them, with a ProfileJob watch):
//! - ready once its ProfileJob cache has synced;
//! - with `--leader-elect`, a standby that is ready but neither acts nor carries the leader
//!   label, and that, when the lease lapses, takes it over, labels its pod (what the progress
//!   Service selects) and starts the controller; on SIGTERM it removes the label and releases the
//!   lease, so a successor need not wait for it to expire;
//! - a ProfileJob run from the watch to the written profile through the process's own wiring;
//! - workers' progress reports over gRPC, authenticated by the token the operator put in the
//!   worker Job's Secret, bringing the status and the metrics up to date without a resync.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

#[test]
fn an_unreachable_api_server_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    // TLS, so that the client's crypto provider is chosen (with two compiled in, rustls
    // panics unless the binary picks one).
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\n  name: c\ncontexts:\n- context: {cluster: c, user: u, namespace: default}\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user: {token: abc}\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_th-operator"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--progress-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_BACKTRACE", "0")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("th-operator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("cannot list ProfileJobs"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_bad_pod_defaults_file_stops_the_start_naming_the_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = dir.path().join("pod-defaults.yaml");
    std::fs::write(&defaults, "priorityClass: batch-low\n").expect("pod defaults");
    let out = Command::new(env!("CARGO_BIN_EXE_th-operator"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--progress-addr",
            "127.0.0.1:0",
        ])
        .arg("--pod-defaults")
        .arg(&defaults)
        // No API server is needed: the file is read before anything connects.
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("th-operator runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        all.contains("pod-defaults.yaml") && all.contains("priorityClass"),
        "{all}"
    );
}

const NS: &str = "ops";
const POD: &str = "op-a";
const LEASE: &str = "th-lease";
const LABEL: &str = "truthound.io/leader";

/// What the fake API server holds and has been asked.
#[derive(Default)]
struct Api {
    lease: Option<Value>,
    version: u64,
    pod_labels: serde_json::Map<String, Value>,
    /// Method and path of every request.
    requests: Vec<String>,
    /// The reasons of the events recorded.
    event_reasons: Vec<String>,
    /// Another replica that holds the lease and keeps renewing it.
    renewing: Option<String>,
    /// The Secrets created (each worker Job's progress token).
    secrets: Vec<Value>,
    /// The ProfileJob and its children, answered as the reconciler tests' fake API server
    /// answers them (`support::answer`).
    cluster: support::Shared,
}

type Shared = Arc<Mutex<Api>>;

fn lease_path() -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE}")
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("response")
}

/// A lease held by `holder`, renewed `ago` seconds ago, valid for 15 s.
fn lease(holder: &str, ago: i64) -> Value {
    let renewed =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(ago);
    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(renewed);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": at,
                 "renewTime": at, "leaseTransitions": 3},
    })
}

async fn answer(State(api): State<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut s = api.lock().expect("state");
    s.requests.push(format!("{method} {path}"));
    if method == Method::POST && path.ends_with("/events") {
        let reason = body["reason"].as_str().unwrap_or("").to_owned();
        s.event_reasons.push(reason);
    }
    let lists = [
        ("/apis/truthound.io/v1alpha1/profilejobs", "ProfileJobList"),
        ("/apis/batch/v1/jobs", "JobList"),
        // No ProfileSchedules: the schedule controller starts, watches and finds nothing to do.
        (
            "/apis/truthound.io/v1alpha1/profileschedules",
            "ProfileScheduleList",
        ),
    ];
    if let Some((_, kind)) = lists.iter().find(|(p, _)| *p == path) {
        if query.contains("watch=true") {
            let cluster = s.cluster.clone();
            drop(s);
            if *kind == "ProfileJobList" {
                return Response::new(Body::from_stream(profilejob_events(cluster)));
            }
            // No Job events: the operator reads its Jobs by name when it requeues.
            let quiet = futures::stream::pending::<Result<Bytes, std::io::Error>>();
            return Response::new(Body::from_stream(quiet));
        }
        let cluster = s.cluster.lock().expect("cluster");
        let items: Vec<Value> = match *kind {
            "ProfileJobList" => cluster.pj.iter().cloned().collect(),
            "JobList" => cluster.jobs.values().cloned().collect(),
            _ => Vec::new(),
        };
        return json_response(
            200,
            &json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
        );
    }
    if path == lease_path() && method == Method::GET {
        if let Some(other) = s.renewing.clone() {
            // The other replica renews its lease as often as anyone looks: it stays valid
            // however slowly the test machine runs.
            s.put_lease(lease(&other, 0));
        }
        return match &s.lease {
            Some(l) => json_response(200, l),
            None => json_response(404, &support::status_body(404, "NotFound")),
        };
    }
    if path == lease_path() && method == Method::PUT {
        // Conditional on the resourceVersion, as the apiserver's update is.
        let current = s
            .lease
            .as_ref()
            .map(|l| l["metadata"]["resourceVersion"].clone());
        if current != Some(body["metadata"]["resourceVersion"].clone()) {
            return json_response(409, &support::status_body(409, "Conflict"));
        }
        s.version += 1;
        let mut written = body;
        written["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.lease = Some(written.clone());
        return json_response(200, &written);
    }
    if path == format!("/api/v1/namespaces/{NS}/pods/{POD}") && method == Method::PATCH {
        for (k, v) in body["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            if v.is_null() {
                s.pod_labels.remove(&k);
            } else {
                s.pod_labels.insert(k, v);
            }
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": POD, "namespace": NS, "labels": s.pod_labels}});
        return json_response(200, &pod);
    }
    if path == format!("/api/v1/namespaces/{}/secrets", support::NS) && method == Method::POST {
        s.secrets.push(body.clone());
        return json_response(201, &body);
    }
    if let Some(name) = path.strip_prefix(&format!("/api/v1/namespaces/{}/secrets/", support::NS))
        && method == Method::GET
    {
        return match s.secrets.iter().find(|x| x["metadata"]["name"] == name) {
            Some(x) => json_response(200, x),
            None => json_response(404, &support::status_body(404, "NotFound")),
        };
    }
    let cluster = s.cluster.clone();
    drop(s);
    let (code, out) = support::answer(&cluster, &method, &path, &query, &body);
    json_response(code, &out)
}

/// A ProfileJob watch: a `MODIFIED` event (or `DELETED`) each time the ProfileJob changes, as
/// the apiserver sends one for each write (the status included).
fn profilejob_events(
    cluster: support::Shared,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let first = cluster.lock().expect("cluster").pj.clone();
    futures::stream::unfold((cluster, first), |(cluster, mut last)| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = cluster.lock().expect("cluster").pj.clone();
            if now == last {
                continue;
            }
            let event = match &now {
                Some(pj) => json!({"type": "MODIFIED", "object": pj}),
                None => json!({"type": "DELETED", "object": last}),
            };
            last = now;
            let mut line = serde_json::to_vec(&event).expect("JSON");
            line.push(b'\n');
            return Some((Ok(Bytes::from(line)), (cluster, last)));
        }
    })
}

impl Api {
    /// Stores `lease` as the apiserver would, with a new resourceVersion.
    fn put_lease(&mut self, mut lease: Value) {
        self.version += 1;
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.lease = Some(lease);
    }

    fn holder(&self) -> Option<String> {
        self.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }

    fn count(&self, request: &str) -> usize {
        self.requests.iter().filter(|r| *r == request).count()
    }
}

/// `GET path` on 127.0.0.1:`port`: the status code and body, or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running `th-operator` and the fake API server it talks to.
struct Operator {
    api: Shared,
    child: std::process::Child,
    metrics_port: u16,
    /// Where the operator serves the workers' progress service (gRPC).
    progress_port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Operator {
    /// Starts the fake API server holding `api`, then `th-operator EXTRA...` as pod `op-a` of
    /// namespace `ops`, with its metrics on a port of its own.
    fn start(api: Api, extra: &[&str]) -> Operator {
        let api: Shared = Arc::new(Mutex::new(api));
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let api_port = listener.local_addr().expect("addr").port();
        let app = Router::new().fallback(answer).with_state(api.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("config");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: 'http://127.0.0.1:{api_port}'}}\n  name: c\ncontexts:\n- context: {{cluster: c, user: u, namespace: {NS}}}\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user: {{token: abc}}\n"
            ),
        )
        .expect("kubeconfig");
        let log = dir.path().join("operator.log");
        let metrics_port = free_port();
        let progress_port = free_port();
        let progress_addr = format!("127.0.0.1:{progress_port}");
        let progress_endpoint = format!("http://{progress_addr}");
        // A key of the operator's own, kept in a file as the chart's Secret keeps it.
        let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let key_file = dir.path().join("progress.key");
        std::fs::write(&key_file, &key).expect("key file");
        let key_path = key_file.to_str().expect("a UTF-8 path").to_owned();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        // The tests' datasets are in temporary directories: the one place local paths may be.
        let file_root = std::env::temp_dir().to_string_lossy().into_owned();
        let mut args = vec![
            "--file-root",
            &file_root,
            "--metrics-addr",
            &metrics_addr,
            "--progress-addr",
            &progress_addr,
            "--progress-key-file",
            &key_path,
            "--progress-endpoint",
            &progress_endpoint,
            "--log-format",
            "text",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_th-operator"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", POD)
            .env("POD_NAMESPACE", NS)
            .env("TH_LEASE_NAME", LEASE)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            )
            .spawn()
            .expect("th-operator starts");
        Operator {
            api,
            child,
            metrics_port,
            progress_port,
            log,
            _dir: dir,
            runtime,
        }
    }

    fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        self.api.lock().expect("state")
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    fn ready(&self) -> bool {
        self.get("/readyz").is_some_and(|(code, _)| code == 200)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ok` every 50 ms for up to 30 s; the operator's log explains a failure.
    fn eventually(&self, what: &str, mut ok: impl FnMut(&Operator) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not within 30 s: {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as the kubelet stops a pod; returns once the process has exited successfully
    /// without a panic.
    fn stop(&mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let start = Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "th-operator did not stop within 30 s of SIGTERM\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let logs = self.logs();
        assert!(exit.success(), "{exit}: {logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROFILEJOBS: &str = "GET /apis/truthound.io/v1alpha1/profilejobs";

#[test]
fn the_operator_is_ready_once_its_profilejob_cache_has_synced() {
    let mut op = Operator::start(Api::default(), &[]);
    op.eventually("ready", Operator::ready);
    assert!(op.api().count(PROFILEJOBS) >= 2, "{:?}", op.api().requests);
    let (_, metrics) = op.get("/metrics").expect("metrics");
    assert!(metrics.contains("\ntruthound_leader 1\n"), "{metrics}");
    op.stop();
    // Without leader election there is no Lease and no label.
    let api = op.api();
    assert!(
        api.lease.is_none() && api.pod_labels.is_empty(),
        "{:?}",
        api.requests
    );
}

#[test]
fn a_standby_is_ready_and_the_leader_labels_its_pod_until_it_stops() {
    let mut api = Api {
        renewing: Some("op-b".into()),
        ..Api::default()
    };
    // A label left by this pod's previous container, which lost the lease.
    api.pod_labels.insert(LABEL.into(), json!("true"));
    let mut op = Operator::start(api, &["--leader-elect"]);

    // Standing by: ready, unlabelled, and not acting.
    op.eventually("the standby answers /readyz 200", Operator::ready);
    op.eventually("the stale leader label is removed", |op| {
        !op.api().pod_labels.contains_key(LABEL)
    });
    // A few campaign rounds (one per 2 s retry period) in which the lease stays taken.
    op.eventually("the standby campaigns again", |op| {
        op.api().count(&format!("GET {}", lease_path())) >= 3
    });
    {
        let api = op.api();
        assert_eq!(api.holder().as_deref(), Some("op-b"));
        assert!(!api.pod_labels.contains_key(LABEL));
        assert_eq!(
            api.count(PROFILEJOBS),
            0,
            "a standby lists no ProfileJobs: {:?}",
            api.requests
        );
    }
    assert!(op.ready());
    let (_, metrics) = op.get("/metrics").expect("metrics");
    assert!(metrics.contains("\ntruthound_leader 0\n"), "{metrics}");

    // The holder lets the lease lapse: this replica takes it over, labels its pod and acts.
    {
        let mut api = op.api();
        api.renewing = None;
        api.put_lease(lease("op-b", 60));
    }
    op.eventually("the standby takes the lease over", |op| {
        op.api().holder().as_deref() == Some(POD)
    });
    op.eventually("the leader labels its pod", |op| {
        op.api().pod_labels.get(LABEL) == Some(&json!("true"))
    });
    op.eventually("the leader lists ProfileJobs and is ready", |op| {
        op.api().count(PROFILEJOBS) > 0 && op.ready()
    });
    let (_, metrics) = op.get("/metrics").expect("metrics");
    assert!(metrics.contains("\ntruthound_leader 1\n"), "{metrics}");

    // Stopping: the label goes, and the lease is released for a successor to take at once.
    op.stop();
    let api = op.api();
    assert!(
        !api.pod_labels.contains_key(LABEL),
        "the label outlived the leader"
    );
    assert_eq!(api.holder(), None, "the lease was not released");
}

/// An API server holding a ProfileJob of the sample dataset (copied into `dir`); its ProfileJob
/// and children, shared with the server; and where the profile goes.
fn sample_job(dir: &std::path::Path) -> (Api, support::Shared, std::path::PathBuf) {
    let data = support::sample_dataset(dir);
    let out = dir.join("lake/profiles/events.json");
    let api = Api::default();
    api.cluster.lock().expect("cluster").pj = Some(support::profilejob(&data, &out, json!({})));
    let cluster = api.cluster.clone();
    (api, cluster, out)
}

#[test]
fn a_profilejob_runs_to_its_profile_through_the_operator_process() {
    // The reconciler's whole-run test (tests/run.rs), but through th-operator's own wiring: its
    // watch, controller, requeues, status writes and events over HTTP. The test plays the Job
    // controller and the worker pods in between.
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, cluster, out) = sample_job(dir.path());
    // The operator's pod defaults, from the file the chart mounts (podDefaults).
    let defaults = dir.path().join("pod-defaults.yaml");
    std::fs::write(
        &defaults,
        "priorityClassName: batch-low\npodLabels: {team: data}\nimagePullSecrets: [{name: registry}]\n",
    )
    .expect("pod defaults");
    let defaults = defaults.to_string_lossy().into_owned();
    let op = Operator::start(api, &["--resync-seconds", "1", "--pod-defaults", &defaults]);
    let phase = || {
        cluster
            .lock()
            .expect("cluster")
            .pj
            .as_ref()
            .map_or(String::new(), |pj| {
                pj["status"]["phase"].as_str().unwrap_or("").to_owned()
            })
    };
    let start = Instant::now();
    while phase() != "Succeeded" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "phase {:?} after 60 s; phases {:?}\n{}",
            phase(),
            cluster.lock().expect("cluster").phases,
            op.logs()
        );
        op.runtime.block_on(support::run_workers(&cluster));
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = cluster.lock().expect("cluster");
    assert_eq!(c.phases, ["Pending", "Running", "Merging", "Succeeded"]);
    assert_eq!(c.jobs.len(), 1, "one worker Job: {:?}", c.jobs.keys());
    let template = &c.jobs.values().next().expect("the worker Job")["spec"]["template"];
    assert_eq!(
        template["spec"]["priorityClassName"], "batch-low",
        "{template}"
    );
    assert_eq!(template["spec"]["imagePullSecrets"][0]["name"], "registry");
    assert_eq!(template["metadata"]["labels"]["team"], "data");
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "truthound-operator"
    );
    let status = &c.pj.as_ref().expect("job")["status"];
    assert_eq!(status["tasks"]["succeeded"], 3, "{status}");
    drop(c);
    let profile: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the profile")).expect("JSON");
    assert_eq!(profile["row_count"], 3000);
    // The process's metrics saw the run: reconciles, and the job's phase and tasks as levels
    // (the phase as the next reconcile observes it).
    op.eventually("the phase gauge says Succeeded", |op| {
        op.get("/metrics")
            .is_some_and(|(_, m)| m.contains("truthound_profilejobs{phase=\"Succeeded\"} 1\n"))
    });
    let (_, metrics) = op.get("/metrics").expect("metrics");
    let reconciles: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("truthound_reconciles_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(reconciles >= 4.0, "{metrics}");
    assert!(
        metrics.contains("truthound_profilejobs{phase=\"Succeeded\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("truthound_tasks{state=\"succeeded\"} 3\n"),
        "{metrics}"
    );
    // The job's success counted once, and the process metrics of the operator itself.
    assert!(
        metrics.contains("truthound_profilejob_successes_total 1\n"),
        "{metrics}"
    );
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rss > 1e6, "{metrics}");
    // The events of each transition, written by the binary's event recorder.
    let reasons = op.api().event_reasons.clone();
    for r in ["Accepted", "WorkersCreated", "Merging", "Succeeded"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "no {r} event in {reasons:?}"
        );
    }
}

#[test]
fn worker_reports_reach_the_status_through_the_progress_service() {
    // A running job, then what its worker pods would report over gRPC: with no resync for
    // minutes, only the reports can bring the status up to date.
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, cluster, _) = sample_job(dir.path());
    let op = Operator::start(
        api,
        &[
            "--resync-seconds",
            "600",
            "--progress-interval-seconds",
            "1",
        ],
    );
    let status = |field: &str| {
        cluster
            .lock()
            .expect("cluster")
            .pj
            .as_ref()
            .map_or(Value::Null, |pj| {
                pj["status"].pointer(field).cloned().unwrap_or(Value::Null)
            })
    };
    // The status says Running before the reconcile that wrote it creates the Secret and the Job.
    op.eventually("the workers are created", |_| {
        status("/phase") == "Running" && !cluster.lock().expect("cluster").jobs.is_empty()
    });
    assert_eq!(status("/progress/rowsProcessed"), 0);
    // The worker Job's pods get their job's token from the Secret the operator made.
    let token = {
        let api = op.api();
        assert_eq!(api.secrets.len(), 1, "one token Secret: {:?}", api.secrets);
        api.secrets[0]["stringData"]["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let job = cluster
        .lock()
        .expect("cluster")
        .jobs
        .values()
        .next()
        .cloned()
        .expect("a Job");
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(&format!("http://127.0.0.1:{}", op.progress_port)),
        "{env}"
    );

    use truthound_operator::progress::pb::{
        ReportKind, ReportRequest, progress_client::ProgressClient,
    };
    let report = |token: &str, kind: ReportKind, rows: u64| {
        let endpoint = format!("http://127.0.0.1:{}", op.progress_port);
        let mut request = tonic::Request::new(ReportRequest {
            job_uid: support::UID.into(),
            task: 0,
            pod: "events-w1-0-x".into(),
            plan_id: String::new(),
            kind: kind as i32,
            rows_done: rows,
            rows_total: 1000,
            message: String::new(),
            ..ReportRequest::default()
        });
        let bearer = format!("Bearer {token}").parse().expect("metadata");
        request.metadata_mut().insert("authorization", bearer);
        op.runtime.block_on(async move {
            let mut client = ProgressClient::connect(endpoint).await.expect("connect");
            client.report(request).await.map(|_| ())
        })
    };
    // Another job's token is refused.
    let refused = report(&"0".repeat(64), ReportKind::Progress, 1).expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    report(&token, ReportKind::Started, 0).expect("started");
    report(&token, ReportKind::Progress, 400).expect("progress");
    op.eventually("the status counts the running task's rows", |_| {
        status("/progress/rowsProcessed") == 400
    });
    // A finished task's duration and rows reach the metrics.
    report(&token, ReportKind::Finished, 1000).expect("finished");
    op.eventually("the task's duration is observed", |op| {
        op.get("/metrics").is_some_and(|(_, m)| {
            m.contains("truthound_task_duration_seconds_count 1\n")
                && m.contains("truthound_rows_processed_total 1000\n")
        })
    });
}
