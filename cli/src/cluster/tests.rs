//! The cluster commands against kube-rs's mocked API server (tower-test, as
//! operator/tests/run.rs drives the reconciler): each test's fake server answers the requests a
//! command makes, records them, and the test checks the paths, the bodies and what was printed.

use super::args::{ClusterCommand, OutputFormat, SubmitArgs};
use super::client::Cluster;
use super::jobs::{self, Display, Follow, LogsRequest};
use super::{spec, submit_to};
use crate::args::{Cli, Command};
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use truthound_operator::ProfileJob;

const NS: &str = "data";
const PJ_PATH: &str = "/apis/truthound.io/v1alpha1/namespaces/data/profilejobs";
/// 2024-05-01T10:05:00Z: five minutes after the fixtures' creationTimestamp.
const NOW: i64 = 1_714_557_900;

/// One recorded request; the query is percent-decoded.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn decode(q: &str) -> String {
    let bytes = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mocked API server: `handler` answers each request; every request is recorded.
fn fake(mut handler: impl FnMut(&Seen) -> Reply + Send + 'static) -> (Cluster, Log) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let s = Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: decode(parts.uri.query().unwrap_or("")),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let reply = handler(&s);
            seen.lock().unwrap().push(s);
            let (code, content_type, bytes) = match reply {
                Reply::Json(code, v) => (code, "application/json", serde_json::to_vec(&v).unwrap()),
                Reply::Text(code, t) => (code, "text/plain", t.as_bytes().to_vec()),
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", content_type)
                .body(Body::from(bytes))
                .unwrap();
            send.send_response(response);
        }
    });
    let cluster = Cluster {
        client: Client::new(service, NS),
        namespace: NS.into(),
        server: "https://k8s.test:6443".into(),
    };
    (cluster, log)
}

fn requests(log: &Log) -> Vec<(Method, String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone(), s.query.clone()))
        .collect()
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

fn not_found(name: &str) -> Reply {
    Reply::Json(
        404,
        status(
            404,
            "NotFound",
            &format!("profilejobs.truthound.io \"{name}\" not found"),
            json!({"name": name, "group": "truthound.io", "kind": "profilejobs"}),
        ),
    )
}

/// A ProfileJob as the server returns it.
fn stored(name: &str, status: Value) -> Value {
    json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileJob",
        "metadata": {
            "name": name, "namespace": NS, "uid": "0a1b2c3d-0000-4000-8000-00000000abcd",
            "creationTimestamp": "2024-05-01T10:00:00Z", "generation": 1,
            "managedFields": [{"manager": "th", "operation": "Update", "apiVersion": "truthound.io/v1alpha1"}],
        },
        "spec": {
            "dataset": {"uri": "s3://lake/events/", "credentialsSecretRef": {"name": "lake"}},
            "partitioning": {"strategy": "row_based", "partitions": 16},
            "output": {"uri": "s3://lake/profiles/events.json"},
        },
        "status": status,
    })
}

fn running() -> Value {
    json!({
        "phase": "Running", "attempt": 1,
        "backend": {"type": "local"},
        "submission": {"attempt": 1, "planId": "p1", "planUri": "s3://lake/profiles/.truthound/u/plan", "id": "events-w1"},
        "tasks": {"total": 16, "pending": 9, "running": 4, "succeeded": 3, "failed": 0, "retried": 1, "summary": "3/16"},
        "completedTasks": "0-2",
        "progress": {"percent": 42.0, "rowsProcessed": 518_518, "rowsTotal": 1_234_567,
                     "rowsPerSecond": 50_000.0, "etaSeconds": 14, "display": "42%"},
        "startTime": "2024-05-01T10:01:00Z",
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Planned", "message": "16 tasks planned",
             "lastTransitionTime": "2024-05-01T10:00:30Z"},
            {"type": "Running", "status": "True", "reason": "WorkersRunning", "message": "4 workers running",
             "lastTransitionTime": "2024-05-01T10:01:00Z"},
        ],
    })
}

fn succeeded() -> Value {
    json!({
        "phase": "Succeeded", "attempt": 1,
        "backend": {"type": "local"},
        "submission": {"attempt": 1, "id": "events-w1"},
        "tasks": {"total": 16, "pending": 0, "running": 0, "succeeded": 16, "failed": 0, "retried": 2, "summary": "16/16"},
        "result": {"profileUri": "s3://lake/profiles/events.json", "rows": 1_234_567, "columns": 15,
                   "durationSeconds": 72.4},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "ProfileWritten",
                        "message": "profile written", "lastTransitionTime": "2024-05-01T10:04:00Z"}],
    })
}

fn failed() -> Value {
    json!({
        "phase": "Failed", "attempt": 1,
        "tasks": {"total": 16, "pending": 0, "running": 0, "succeeded": 15, "failed": 1, "retried": 0, "summary": "15/16"},
        "failedTasks": "3",
        "lastFailures": [{"task": 3, "reason": "BadData",
                          "message": "s3://lake/events/part-3.parquet: not a readable parquet file",
                          "time": "2024-05-01T10:03:00Z"}],
        "conditions": [
            {"type": "Failed", "status": "True", "reason": "TooManyFailedTasks",
             "message": "1 task failed, 0 tolerated (maxFailedTasks)", "lastTransitionTime": "2024-05-01T10:03:10Z"},
            {"type": "Ready", "status": "False", "reason": "TooManyFailedTasks",
             "message": "failed", "lastTransitionTime": "2024-05-01T10:03:10Z"},
        ],
    })
}

/// ProfileJob has no PartialEq (kube's derive adds none): its parts have.
fn assert_same(a: &ProfileJob, b: &ProfileJob) {
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.spec, b.spec);
    assert_eq!(a.status, b.status);
}

fn submit_args(args: &[&str]) -> SubmitArgs {
    let mut all = vec!["th", "submit"];
    all.extend_from_slice(args);
    match Cli::try_parse_from(all).expect("arguments parse").command {
        Command::Cluster(ClusterCommand::Submit(a)) => *a,
        other => panic!("not a submit: {other:?}"),
    }
}

fn text(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf).into_owned()
}

fn lines_display(buf: &mut Vec<u8>) -> Display<'_> {
    Display::Lines {
        out: Box::new(buf),
        last: String::new(),
    }
}

fn fast(timeout: Option<Duration>) -> Follow {
    Follow {
        interval: Duration::from_millis(1),
        timeout,
    }
}

/// Answers a create with the object (and a uid), then each GET with the next status of
/// `statuses`, the last one for ever.
fn create_then(statuses: Vec<Value>) -> impl FnMut(&Seen) -> Reply + Send + 'static {
    let mut statuses: VecDeque<Value> = statuses.into();
    let mut name = String::new();
    move |s| match (&s.method, s.path.as_str()) {
        (&Method::POST, PJ_PATH) => {
            let mut pj = s.body.clone();
            name = pj["metadata"]["name"].as_str().unwrap_or("").to_string();
            pj["metadata"]["uid"] = json!("0a1b2c3d-0000-4000-8000-00000000abcd");
            pj["metadata"]["creationTimestamp"] = json!("2024-05-01T10:00:00Z");
            Reply::Json(201, pj)
        }
        (&Method::GET, p) if p == format!("{PJ_PATH}/{name}") => {
            let st = if statuses.len() > 1 {
                statuses.pop_front().unwrap()
            } else {
                statuses.front().cloned().unwrap_or(Value::Null)
            };
            let mut pj = stored(&name, st);
            if pj["status"].is_null() {
                pj.as_object_mut().unwrap().remove("status");
            }
            Reply::Json(200, pj)
        }
        _ => Reply::Json(
            500,
            status(
                500,
                "Unexpected",
                &format!("{} {}", s.method, s.path),
                json!({}),
            ),
        ),
    }
}

#[test]
fn a_dry_run_manifest_round_trips_as_the_type() {
    let a = submit_args(&[
        "s3://lake/events/",
        "-o",
        "s3://lake/profiles/events.json",
        "--sample",
        "10%",
        "--sample-seed",
        "7",
        "--partitions",
        "16",
    ]);
    let pj = spec::build(&a, Some(NS)).unwrap();
    let yaml = serde_yaml::to_string(&pj).unwrap();
    let back: ProfileJob = serde_yaml::from_str(&yaml).unwrap();
    assert_same(&back, &pj);
    assert!(
        yaml.starts_with("apiVersion: truthound.io/v1alpha1\nkind: ProfileJob\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("status:"), "{yaml}");
}

#[tokio::test]
async fn submit_posts_the_job_to_the_namespace() {
    let a = submit_args(&[
        "s3://lake/events/",
        "--output",
        "s3://lake/profiles/events.json",
        "--partitions",
        "16",
        "--name",
        "events",
    ]);
    let pj = spec::build(&a, Some(NS)).unwrap();
    let (c, log) = fake(create_then(vec![Value::Null]));
    let mut out = Vec::new();
    submit_to(&c, &pj, &a, &mut Display::Quiet, &mut out)
        .await
        .unwrap();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, PJ_PATH);
    assert!(seen[0].content_type.starts_with("application/json"));
    assert_eq!(seen[0].body, serde_json::to_value(&pj).unwrap());
    assert_eq!(seen[0].body["metadata"]["namespace"], NS);
    assert_eq!(seen[0].body["spec"]["partitioning"]["partitions"], 16);
    let printed = text(&out);
    assert!(
        printed.starts_with("profilejob.truthound.io/events created in namespace data\n"),
        "{printed}"
    );
    assert!(printed.contains("th wait events -n data"), "{printed}");
}

#[tokio::test]
async fn submit_wait_follows_the_status_until_it_succeeds() {
    let a = submit_args(&[
        "s3://lake/events/",
        "-o",
        "s3://lake/profiles/events.json",
        "--name",
        "events",
        "--wait",
    ]);
    let pj = spec::build(&a, Some(NS)).unwrap();
    let pending = json!({"phase": "Pending"});
    let mut merging = running();
    merging["phase"] = json!("Merging");
    merging["tasks"] = json!({"total": 16, "pending": 0, "running": 0, "succeeded": 16, "failed": 0, "retried": 2, "summary": "16/16"});
    let (c, log) = fake(create_then(vec![
        Value::Null,
        pending,
        running(),
        running(),
        merging,
        succeeded(),
    ]));
    let (mut out, mut lines) = (Vec::new(), Vec::new());
    let mut a = a;
    a.poll.poll_interval = Duration::from_millis(1);
    submit_to(&c, &pj, &a, &mut lines_display(&mut lines), &mut out)
        .await
        .unwrap();
    let lines = text(&lines);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "events: Pending",
            "events: Running · 3/16 tasks · 42% · 518,518/1,234,567 rows · 50,000 rows/s · ETA 14s",
            "events: Merging · 16/16 tasks · 42% · 518,518/1,234,567 rows · 50,000 rows/s · ETA 14s",
            "events: Succeeded · 16/16 tasks",
        ],
        "{lines}"
    );
    let printed = text(&out);
    assert_eq!(
        printed,
        "profilejob.truthound.io/events created in namespace data\n\
         profilejob.truthound.io/events succeeded in 1m12s\n  \
         profile  s3://lake/profiles/events.json\n  \
         rows     1,234,567 × 15 columns\n  \
         tasks    16/16 succeeded, 2 retried\n"
    );
    let gets = requests(&log)
        .into_iter()
        .filter(|(m, p, _)| m == Method::GET && p == &format!("{PJ_PATH}/events"))
        .count();
    assert_eq!(gets, 6);
}

#[tokio::test]
async fn a_failed_job_is_an_error_with_its_reason_and_message() {
    let (c, _) = fake(create_then(vec![running(), failed()]));
    let a = submit_args(&[
        "s3://lake/events/",
        "-o",
        "s3://lake/p.json",
        "--name",
        "events",
        "--wait",
    ]);
    let pj = spec::build(&a, Some(NS)).unwrap();
    let mut a = a;
    a.poll.poll_interval = Duration::from_millis(1);
    let mut out = Vec::new();
    let err = submit_to(&c, &pj, &a, &mut Display::Quiet, &mut out)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(
        msg,
        "ProfileJob `events` in namespace data failed: TooManyFailedTasks: 1 task failed, 0 tolerated (maxFailedTasks)"
    );
    assert_eq!(crate::exit::code(&err), 1);
    let printed = text(&out);
    assert!(
        printed.contains("profilejob.truthound.io/events failed: TooManyFailedTasks"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "task 3: BadData: s3://lake/events/part-3.parquet: not a readable parquet file"
        ),
        "{printed}"
    );
}

#[tokio::test]
async fn wait_gives_up_at_its_timeout_and_says_the_job_goes_on() {
    let (c, _) = fake(|s| match s.method {
        Method::GET => Reply::Json(200, stored("events", running())),
        _ => Reply::Json(500, json!({})),
    });
    let err = jobs::follow(
        &c,
        "events",
        &fast(Some(Duration::from_millis(30))),
        &mut Display::Quiet,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.starts_with("timed out after 1s waiting for ProfileJob `events` in namespace data (Running · 3/16 tasks"), "{msg}");
    assert!(msg.ends_with("it goes on: th wait events -n data"), "{msg}");
}

#[tokio::test]
async fn wait_for_a_job_that_does_not_exist_names_it_and_the_namespace() {
    let (c, _) = fake(|_| not_found("nope"));
    let err = jobs::follow(
        &c,
        "nope",
        &fast(None),
        &mut Display::Quiet,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("ProfileJob `nope` not found in namespace data"),
        "{err:#}"
    );
}

#[tokio::test]
async fn get_prints_a_row_json_or_yaml() {
    let (c, log) = fake(|s| match s.path.as_str() {
        p if p == format!("{PJ_PATH}/events") => Reply::Json(200, stored("events", running())),
        _ => Reply::Json(500, json!({})),
    });
    let mut out = Vec::new();
    jobs::get(&c, "events", OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    assert_eq!(
        text(&out),
        "NAME     BACKEND   STATE     TASKS   PROGRESS   AGE\n\
         events   local     Running   3/16    42%        5m\n"
    );
    let mut out = Vec::new();
    jobs::get(&c, "events", OutputFormat::Json, NOW, &mut out)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["metadata"]["name"], "events");
    assert_eq!(v["status"]["tasks"]["summary"], "3/16");
    assert!(v["metadata"].get("managedFields").is_none(), "{v}");
    let mut out = Vec::new();
    jobs::get(&c, "events", OutputFormat::Yaml, NOW, &mut out)
        .await
        .unwrap();
    let back: ProfileJob = serde_yaml::from_slice(&out).unwrap();
    let mut want: ProfileJob = serde_json::from_value(stored("events", running())).unwrap();
    want.metadata.managed_fields = None;
    assert_same(&back, &want);
    for (m, p, _) in requests(&log) {
        assert_eq!((m, p), (Method::GET, format!("{PJ_PATH}/events")));
    }
}

#[tokio::test]
async fn list_reads_one_namespace_or_all() {
    let (c, log) = fake(|s| {
        let item = |ns: &str, name: &str, st: Value| {
            let mut v = stored(name, st);
            v["metadata"]["namespace"] = json!(ns);
            v
        };
        match s.path.as_str() {
            PJ_PATH => Reply::Json(
                200,
                json!({"apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJobList", "metadata": {},
                       "items": [item("data", "users", succeeded()), item("data", "events", running())]}),
            ),
            "/apis/truthound.io/v1alpha1/profilejobs" => Reply::Json(
                200,
                json!({"apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJobList", "metadata": {},
                       "items": [item("lake", "orders", json!(null)), item("data", "events", running())]}),
            ),
            "/apis/truthound.io/v1alpha1/namespaces/empty/profilejobs" => Reply::Json(
                200,
                json!({"apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJobList", "metadata": {}, "items": []}),
            ),
            _ => Reply::Json(500, json!({})),
        }
    });
    let mut out = Vec::new();
    jobs::list(&c, false, OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    assert_eq!(
        text(&out),
        "NAME     BACKEND   STATE       TASKS   PROGRESS   AGE\n\
         events   local     Running     3/16    42%        5m\n\
         users    local     Succeeded   16/16   -          5m\n"
    );
    let mut out = Vec::new();
    jobs::list(&c, true, OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    assert_eq!(
        text(&out),
        "NAMESPACE   NAME     BACKEND   STATE     TASKS   PROGRESS   AGE\n\
         data        events   local     Running   3/16    42%        5m\n\
         lake        orders   local     Pending   -       -          5m\n"
    );
    let mut out = Vec::new();
    jobs::list(&c, true, OutputFormat::Json, NOW, &mut out)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let mut out = Vec::new();
    jobs::list(&c, false, OutputFormat::Yaml, NOW, &mut out)
        .await
        .unwrap();
    let v: Value = serde_yaml::from_slice(&out).unwrap();
    assert_eq!(v["items"][1]["metadata"]["name"], "users");

    let mut empty = c.clone();
    empty.namespace = "empty".into();
    let mut out = Vec::new();
    jobs::list(&empty, false, OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    assert_eq!(text(&out), "No ProfileJobs in namespace empty.\n");

    let paths: Vec<String> = requests(&log).into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        paths,
        [
            PJ_PATH,
            "/apis/truthound.io/v1alpha1/profilejobs",
            "/apis/truthound.io/v1alpha1/profilejobs",
            PJ_PATH,
            "/apis/truthound.io/v1alpha1/namespaces/empty/profilejobs",
        ]
    );
}

fn event(reason: &str, note: &str, time: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("events.{reason}"), "namespace": NS},
        "eventTime": time, "reason": reason, "note": note, "type": "Normal",
        "reportingController": "truthound.io/operator", "reportingInstance": "op-0", "action": reason,
        "regarding": {"kind": "ProfileJob", "name": "events", "namespace": NS, "apiVersion": "truthound.io/v1alpha1"},
    })
}

#[tokio::test]
async fn describe_shows_spec_conditions_tasks_failures_and_events() {
    let mut st = running();
    st["lastFailures"] = failed()["lastFailures"].clone();
    let (c, log) = fake(move |s| match s.path.as_str() {
        p if p == format!("{PJ_PATH}/events") => Reply::Json(200, stored("events", st.clone())),
        "/apis/events.k8s.io/v1/namespaces/data/events" => Reply::Json(
            200,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "EventList", "metadata": {}, "items": [
                event("WorkersStarted", "started 4 workers", "2024-05-01T10:01:00.000000Z"),
                event("Planned", "16 tasks", "2024-05-01T10:00:30.000000Z"),
            ]}),
        ),
        _ => Reply::Json(500, json!({})),
    });
    let mut out = Vec::new();
    jobs::describe(&c, "events", OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    let d = text(&out);
    for want in [
        "Name:          events\n",
        "Namespace:     data\n",
        "Created:       2024-05-01T10:00:00Z (5m ago)\n",
        "Dataset:       s3://lake/events/\n",
        "  credentials: Secret lake\n",
        "Output:        s3://lake/profiles/events.json\n",
        "Backend:       local; running on local\n",
        "Partitioning:  row_based, 16 partitions\n",
        "Profile:       defaults\n",
        "State:         Running (attempt 1)\n",
        "Started:       2024-05-01T10:01:00Z (4m ago)\n",
        "Progress:      42% · 518,518/1,234,567 rows · 50,000 rows/s · ETA 14s\n",
        "Tasks:         16 total: 9 pending, 4 running, 3 succeeded, 0 failed; 1 retried\n",
        "  completed:   0-2\n",
        "Workers:       events-w1 (plan s3://lake/profiles/.truthound/u/plan)\n",
        "Conditions:\n  TYPE       STATUS   REASON           AGE     MESSAGE\n  \
         Accepted   True     Planned          4m30s   16 tasks planned\n  \
         Running    True     WorkersRunning   4m      4 workers running\n",
        "Last failures:\n  TASK   REASON    AGE   MESSAGE\n  \
         3      BadData   2m    s3://lake/events/part-3.parquet: not a readable parquet file\n",
        "Events:\n  TYPE     REASON           AGE     FROM                    MESSAGE\n  \
         Normal   Planned          4m30s   truthound.io/operator   16 tasks\n  \
         Normal   WorkersStarted   4m      truthound.io/operator   started 4 workers\n",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }
    let seen = requests(&log);
    assert_eq!(
        seen[0],
        (Method::GET, format!("{PJ_PATH}/events"), String::new())
    );
    assert_eq!(seen[1].1, "/apis/events.k8s.io/v1/namespaces/data/events");
    assert!(
        seen[1].2.contains("fieldSelector=regarding.name=events"),
        "{:?}",
        seen[1]
    );

    let mut out = Vec::new();
    jobs::describe(&c, "events", OutputFormat::Json, NOW, &mut out)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["profileJob"]["metadata"]["name"], "events");
    assert_eq!(v["events"][0]["reason"], "Planned");
}

#[tokio::test]
async fn describe_without_the_right_to_list_events_still_describes() {
    let (c, _) = fake(|s| match s.path.as_str() {
        p if p.starts_with(PJ_PATH) => Reply::Json(200, stored("events", running())),
        _ => Reply::Json(
            403,
            status(
                403,
                "Forbidden",
                "events.events.k8s.io is forbidden",
                json!({}),
            ),
        ),
    });
    let mut out = Vec::new();
    jobs::describe(&c, "events", OutputFormat::Table, NOW, &mut out)
        .await
        .unwrap();
    let d = text(&out);
    assert!(
        d.contains("Events:\n  <cannot list: forbidden: your account may not list events.events.k8s.io in namespace data"),
        "{d}"
    );
}

fn pod(name: &str, index: u32, created: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                        "labels": {"batch.kubernetes.io/job-name": "events-w1"},
                        "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()}}})
}

fn logs_server() -> (Cluster, Log) {
    fake(|s| match s.path.as_str() {
        p if p == format!("{PJ_PATH}/events") => Reply::Json(200, stored("events", running())),
        p if p == format!("{PJ_PATH}/planning") => {
            Reply::Json(200, stored("planning", json!({"phase": "Pending"})))
        }
        "/api/v1/namespaces/data/pods" => Reply::Json(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                pod("events-w1-1-old", 1, "2024-05-01T10:01:00Z"),
                pod("events-w1-0-abc", 0, "2024-05-01T10:01:00Z"),
                pod("events-w1-1-new", 1, "2024-05-01T10:02:00Z"),
            ]}),
        ),
        "/api/v1/namespaces/data/pods/events-w1-0-abc/log" => {
            Reply::Text(200, "task 0 starts\ntask 0 done\n")
        }
        "/api/v1/namespaces/data/pods/events-w1-1-new/log" => Reply::Text(200, "task 1 retried\n"),
        _ => Reply::Json(500, json!({})),
    })
}

#[tokio::test]
async fn logs_of_one_task_come_from_its_newest_pod() {
    let (c, log) = logs_server();
    let mut out = Vec::new();
    let req = LogsRequest {
        task: Some(1),
        tail: Some(100),
        ..LogsRequest::default()
    };
    jobs::logs(&c, "events", &req, &mut out).await.unwrap();
    assert_eq!(text(&out), "task 1 retried\n");
    let seen = requests(&log);
    assert_eq!(seen[1].1, "/api/v1/namespaces/data/pods");
    assert_eq!(
        seen[1].2,
        "&labelSelector=batch.kubernetes.io/job-name=events-w1"
    );
    assert_eq!(
        seen[2].1,
        "/api/v1/namespaces/data/pods/events-w1-1-new/log"
    );
    assert_eq!(seen[2].2, "&container=worker&tailLines=100");
}

#[tokio::test]
async fn logs_of_every_task_are_headed_or_prefixed() {
    let (c, log) = logs_server();
    let mut out = Vec::new();
    jobs::logs(&c, "events", &LogsRequest::default(), &mut out)
        .await
        .unwrap();
    assert_eq!(
        text(&out),
        "==> task 0 (pod events-w1-0-abc) <==\ntask 0 starts\ntask 0 done\n\
         ==> task 1 (pod events-w1-1-new) <==\ntask 1 retried\n"
    );

    let mut out = Vec::new();
    let req = LogsRequest {
        follow: true,
        ..LogsRequest::default()
    };
    jobs::logs(&c, "events", &req, &mut out).await.unwrap();
    let mut lines: Vec<String> = text(&out).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "[task 0] task 0 done",
            "[task 0] task 0 starts",
            "[task 1] task 1 retried"
        ]
    );
    let follows = requests(&log)
        .into_iter()
        .filter(|(_, p, q)| p.ends_with("/log") && q.contains("follow=true"))
        .count();
    assert_eq!(follows, 2);
}

#[tokio::test]
async fn logs_say_why_there_are_none() {
    let (c, _) = logs_server();
    let err = jobs::logs(
        &c,
        "events",
        &LogsRequest {
            task: Some(7),
            ..LogsRequest::default()
        },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "no pod for task 7 of ProfileJob `events` in namespace data; the Job events-w1 has pods for tasks 0-1"
    );
    let err = jobs::logs(&c, "planning", &LogsRequest::default(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with(
            "ProfileJob `planning` in namespace data has no worker pods yet (state Pending)"
        ),
        "{err:#}"
    );
}

#[tokio::test]
async fn cancel_deletes_the_job_or_suspends_it() {
    let (c, log) = fake(|s| match s.method {
        Method::DELETE => Reply::Json(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": "events", "group": "truthound.io", "kind": "profilejobs"}}),
        ),
        Method::PATCH => Reply::Json(200, stored("events", running())),
        _ => Reply::Json(500, json!({})),
    });
    let mut out = Vec::new();
    jobs::cancel(&c, "events", false, &mut out).await.unwrap();
    assert!(
        text(&out).starts_with("profilejob.truthound.io/events deleted in namespace data"),
        "{}",
        text(&out)
    );
    let mut out = Vec::new();
    jobs::cancel(&c, "events", true, &mut out).await.unwrap();
    assert!(
        text(&out).starts_with("profilejob.truthound.io/events suspended in namespace data"),
        "{}",
        text(&out)
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].method, Method::DELETE);
    assert_eq!(seen[0].path, format!("{PJ_PATH}/events"));
    assert_eq!(seen[0].body["propagationPolicy"], "Background");
    assert_eq!(seen[1].method, Method::PATCH);
    assert_eq!(seen[1].path, format!("{PJ_PATH}/events"));
    assert_eq!(seen[1].content_type, "application/merge-patch+json");
    assert_eq!(seen[1].body, json!({"spec": {"suspend": true}}));
}

async fn create_error(reply: fn() -> Reply) -> anyhow::Error {
    let (c, _) = fake(move |_| reply());
    let a = submit_args(&[
        "s3://lake/events/",
        "-o",
        "s3://lake/p.json",
        "--name",
        "events",
    ]);
    let pj = spec::build(&a, Some(NS)).unwrap();
    submit_to(&c, &pj, &a, &mut Display::Quiet, &mut Vec::new())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_missing_crd_says_how_to_install_it() {
    // What an API server without the CRD answers: a bare 404 page, or a Status without details.
    for reply in [
        (|| Reply::Text(404, "404 page not found")) as fn() -> Reply,
        || {
            Reply::Json(
                404,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    json!({}),
                ),
            )
        },
    ] {
        let err = create_error(reply).await;
        let msg = format!("{err:#}");
        assert_eq!(
            msg,
            "the ProfileJob resource is not installed in this cluster (https://k8s.test:6443): kubectl apply -f crds/ \
             (or helm install truthound-operator charts/truthound-operator -n truthound-system --create-namespace)"
        );
        assert_eq!(crate::exit::code(&err), 69);
    }
    let (c, _) = fake(|_| Reply::Text(404, "404 page not found"));
    let err = jobs::list(&c, true, OutputFormat::Table, NOW, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("the ProfileJob resource is not installed"),
        "{err:#}"
    );
}

#[tokio::test]
async fn forbidden_names_the_verb_the_namespace_and_the_role() {
    let err = create_error(|| {
        Reply::Json(
            403,
            status(
                403,
                "Forbidden",
                "profilejobs.truthound.io is forbidden: User \"alice\" cannot create resource \"profilejobs\" in API group \"truthound.io\" in the namespace \"data\"",
                json!({"group": "truthound.io", "kind": "profilejobs"}),
            ),
        )
    })
    .await;
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(
            "forbidden: your account may not create profilejobs.truthound.io in namespace data \
             (ask for the role truthound-operator-edit, or the namespace's edit role, which includes it); \
             the server said: profilejobs.truthound.io is forbidden: User \"alice\""
        ),
        "{msg}"
    );
    let (c, _) = fake(|_| Reply::Json(403, status(403, "Forbidden", "no", json!({}))));
    let err = jobs::list(&c, true, OutputFormat::Table, NOW, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with(
            "forbidden: your account may not list profilejobs.truthound.io in every namespace (-A) (ask for the role truthound-operator-view"
        ),
        "{err:#}"
    );
}

#[tokio::test]
async fn not_found_names_the_job_and_the_namespace() {
    let (c, _) = fake(|_| not_found("nope"));
    for result in [
        jobs::get(&c, "nope", OutputFormat::Table, NOW, &mut Vec::new()).await,
        jobs::describe(&c, "nope", OutputFormat::Table, NOW, &mut Vec::new()).await,
        jobs::cancel(&c, "nope", false, &mut Vec::new()).await,
        jobs::logs(&c, "nope", &LogsRequest::default(), &mut Vec::new()).await,
    ] {
        let err = result.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "ProfileJob `nope` not found in namespace data: `th list -n data` lists the jobs there, `th list -A` those of every namespace"
        );
        assert_eq!(crate::exit::code(&err), 1);
    }
}

#[tokio::test]
async fn create_conflicts_and_rejections_say_what_to_do() {
    let err = create_error(|| {
        Reply::Json(
            404,
            status(
                404,
                "NotFound",
                "namespaces \"data\" not found",
                json!({"name": "data", "kind": "namespaces"}),
            ),
        )
    })
    .await;
    assert!(
        format!("{err:#}").starts_with("namespace `data` does not exist in this cluster"),
        "{err:#}"
    );
    let err = create_error(|| {
        Reply::Json(
            409,
            status(
                409,
                "AlreadyExists",
                "profilejobs.truthound.io \"events\" already exists",
                json!({"name": "events", "group": "truthound.io", "kind": "profilejobs"}),
            ),
        )
    })
    .await;
    assert_eq!(
        format!("{err:#}"),
        "ProfileJob `events` already exists in namespace data: pick another --name, or `th cancel events -n data` first"
    );
    let err = create_error(|| {
        Reply::Json(
            422,
            status(422, "Invalid", "ProfileJob.truthound.io \"events\" is invalid: spec.partitioning: Invalid value: partitioning is immutable", json!({})),
        )
    })
    .await;
    assert!(
        format!("{err:#}").starts_with(
            "the API server rejected the ProfileJob: ProfileJob.truthound.io \"events\" is invalid"
        ),
        "{err:#}"
    );
}

#[tokio::test]
async fn connection_refused_names_the_server() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    super::client::install_tls_provider();
    let config = kube::Config::new(server.parse().unwrap());
    let c = Cluster {
        client: Client::try_from(config).unwrap(),
        namespace: NS.into(),
        server: server.clone(),
    };
    let err = jobs::get(&c, "events", OutputFormat::Table, NOW, &mut Vec::new())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "cannot reach the Kubernetes API server at {server}: connection refused"
        )),
        "{msg}"
    );
    assert_eq!(crate::exit::code(&err), 69);
}

/// `--partitions` is shared with `th profile`, but its default is not: each command's help says
/// its own (a ProfileJob without partitions is planned with the operator's 4).
#[test]
fn submit_and_profile_help_state_their_own_partitions_default() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    cli.build();
    let help_of = |cli: &clap::Command, sub: &str| {
        let arg = cli
            .find_subcommand(sub)
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "partitions"))
            .unwrap_or_else(|| panic!("th {sub} has no --partitions"));
        arg.get_help().map(|h| h.to_string()).unwrap_or_default()
    };
    let submit = help_of(&cli, "submit");
    assert!(submit.contains("Default: 4"), "{submit}");
    assert!(!submit.contains("twice the workers"), "{submit}");
    assert!(help_of(&cli, "profile").contains("Default: twice the workers"));
    // And the manifest leaves the number to the operator.
    let a = submit_args(&["s3://b/d/", "-o", "s3://b/p.json"]);
    let job = spec::build(&a, Some("ns")).expect("a ProfileJob");
    assert_eq!(job.spec.partitioning.partitions, None);
    assert_eq!(
        truthound_operator::reconcile::plan_request(&job).partitions,
        4
    );
}

#[test]
fn an_incremental_runs_result_and_description_say_how_many_tasks_were_reused() {
    let mut st = succeeded();
    st["tasks"]["reused"] = json!(13);
    let mut pj = stored("events", st);
    pj["spec"]["output"]["cacheUri"] = json!("s3://lake/cache/events/");
    let pj: truthound_operator::crd::ProfileJob = serde_json::from_value(pj).unwrap();
    let done = super::render::result(&pj).unwrap();
    assert!(
        done.contains("16/16 succeeded, 2 retried; 13 reused from the cache"),
        "{done}"
    );
    let mut plain = pj.clone();
    if let Some(t) = plain.status.as_mut().and_then(|s| s.tasks.as_mut()) {
        t.reused = 0;
    }
    let done = super::render::result(&plain).unwrap();
    assert!(!done.contains("reused"), "{done}");
    let d = super::render::describe(&pj, Ok(&[]), NOW);
    assert!(
        d.contains("  cache:       s3://lake/cache/events/\n"),
        "{d}"
    );
    assert!(
        d.contains("0 failed; 2 retried; 13 reused from the cache\n"),
        "{d}"
    );
}
