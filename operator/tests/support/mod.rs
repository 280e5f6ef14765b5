//! What the whole-run tests share: kube-rs's mocked API server (tower-test) with a small fake
//! API server behind it that keeps the ProfileJob and its children and records every request,
//! the sample dataset, and the single-pass profile runs are compared with.
#![allow(dead_code)] // each test file uses its own part

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use truthound_operator::access::AccessPolicy;
use truthound_operator::crd::ProfileJob;
use truthound_operator::decide::Settings;
use truthound_operator::reconcile::{Config, Context};
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::{PartialProfile, Plan, TableProfile};

pub const NS: &str = "data";
pub const NAME: &str = "events";
pub const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
pub struct ApiState {
    pub pj: Option<Value>,
    pub jobs: BTreeMap<String, Value>,
    pub requests: Vec<Seen>,
    pub phases: Vec<String>,
    /// Pods the Job controller has left (failed ones, with their termination messages).
    pub pods: Vec<Value>,
    /// Tasks whose worker fails: (exit code, termination message).
    pub failing: BTreeMap<u32, (i32, String)>,
    /// The merge pod fails with this termination message.
    pub merge_fails: Option<String>,
    /// Pod logs, by pod name.
    pub logs: BTreeMap<String, String>,
    /// Tasks the worker pods ran (not those found done), in order.
    pub tasks_run: Vec<u32>,
}

pub type Shared = Arc<Mutex<ApiState>>;

pub fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

pub fn merge_json(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// Applies a JSON patch (RFC 6902's test, add, remove and replace) as the API server does: all
/// or nothing, a failed `test` refusing the whole patch.
pub fn apply_json_patch(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    let mut out = doc.clone();
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        let (parent, last) = path.rsplit_once('/').ok_or(format!("bad path {path}"))?;
        let value = op["value"].clone();
        match op["op"].as_str().unwrap_or("") {
            "test" => {
                let found = out.pointer(path).cloned().unwrap_or(Value::Null);
                if found != value {
                    return Err(format!("test of {path} failed: {found} is not {value}"));
                }
            }
            "add" | "remove" | "replace" => {
                let kind = op["op"].as_str().unwrap_or("");
                let target = out
                    .pointer_mut(parent)
                    .ok_or(format!("no {parent} to {kind} under"))?;
                match (target, kind) {
                    (Value::Array(a), "add") if last == "-" => a.push(value),
                    (Value::Array(a), k) => {
                        let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
                        if i > a.len() || (k != "add" && i == a.len()) {
                            return Err(format!("index {i} out of range"));
                        }
                        match k {
                            "add" => a.insert(i, value),
                            "remove" => {
                                a.remove(i);
                            }
                            _ => a[i] = value,
                        }
                    }
                    (Value::Object(m), "remove") => {
                        m.remove(last).ok_or(format!("no {path} to remove"))?;
                    }
                    (Value::Object(m), _) => {
                        m.insert(last.to_string(), value);
                    }
                    _ => return Err(format!("{parent} is not a container")),
                }
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    *doc = out;
    Ok(())
}

/// Answers one request the way the API server would, for the few resources the reconciler uses.
pub fn answer(
    state: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
) -> (u16, Value) {
    let mut s = state.lock().expect("state");
    let pj_path = format!("/apis/truthound.io/v1alpha1/namespaces/{NS}/profilejobs/{NAME}");
    let jobs_path = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    match (method, path) {
        (&Method::GET, p) if p == pj_path => match &s.pj {
            Some(pj) => (200, pj.clone()),
            None => (404, status_body(404, "NotFound")),
        },
        (&Method::PATCH, p) if p == format!("{pj_path}/status") => {
            let Some(pj) = s.pj.as_mut() else {
                return (404, status_body(404, "NotFound"));
            };
            // Server-side apply of the whole status under our field manager: it replaces.
            pj["status"] = body["status"].clone();
            let phase = body["status"]["phase"].as_str().unwrap_or("").to_string();
            let out = pj.clone();
            if s.phases.last() != Some(&phase) {
                s.phases.push(phase);
            }
            (200, out)
        }
        (&Method::PATCH, p) if p == pj_path => {
            // A JSON patch (the finalizers) or a merge patch of the metadata; like the API
            // server, an object being deleted goes once its last finalizer is removed.
            let Some(pj) = s.pj.as_mut() else {
                return (404, status_body(404, "NotFound"));
            };
            match body {
                Value::Array(ops) => {
                    if let Err(e) = apply_json_patch(pj, ops) {
                        return (422, status_body(422, &e));
                    }
                    // An empty list is not kept (omitempty), as the API server stores it.
                    if pj["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.is_empty())
                        && let Some(m) = pj["metadata"].as_object_mut()
                    {
                        m.remove("finalizers");
                    }
                }
                _ => merge_json(pj, body),
            }
            let out = pj.clone();
            let gone = out["metadata"]["deletionTimestamp"].is_string()
                && out["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
            if gone {
                s.pj = None;
            }
            (200, out)
        }
        (&Method::GET, p)
            if p.starts_with(&format!("/api/v1/namespaces/{NS}/pods/")) && p.ends_with("/log") =>
        {
            let name = p.trim_end_matches("/log").rsplit('/').next().unwrap_or("");
            match s.logs.get(name) {
                Some(log) => (200, Value::String(log.clone())),
                None => (404, status_body(404, "NotFound")),
            }
        }
        (&Method::DELETE, p) if p == pj_path => {
            let pj = s.pj.take();
            (200, pj.unwrap_or(Value::Null))
        }
        // No Secrets here (a test that needs one serves it before this).
        (&Method::GET, p) if p.starts_with(&format!("/api/v1/namespaces/{NS}/secrets/")) => {
            (404, status_body(404, "NotFound"))
        }
        (&Method::POST, p) if p.ends_with("/events") => (201, body.clone()),
        (&Method::PATCH, p) if p.contains("/events/") => (200, body.clone()),
        (&Method::POST, p) if p == jobs_path => {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            if s.jobs.contains_key(&name) {
                return (409, status_body(409, "AlreadyExists"));
            }
            let mut job = body.clone();
            job["metadata"]["uid"] = json!(format!("job-{name}"));
            s.jobs.insert(name, job.clone());
            (201, job)
        }
        (m, p) if p.starts_with(&format!("{jobs_path}/")) => {
            let name = p.rsplit('/').next().unwrap_or("").to_string();
            match *m {
                Method::GET => match s.jobs.get(&name) {
                    Some(j) => (200, j.clone()),
                    None => (404, status_body(404, "NotFound")),
                },
                Method::PATCH => match s.jobs.get_mut(&name) {
                    Some(j) => {
                        merge_json(j, body);
                        (200, j.clone())
                    }
                    None => (404, status_body(404, "NotFound")),
                },
                Method::DELETE => match s.jobs.remove(&name) {
                    Some(j) => (200, j),
                    None => (404, status_body(404, "NotFound")),
                },
                _ => (405, status_body(405, "MethodNotAllowed")),
            }
        }
        (&Method::DELETE, p) if p.starts_with(&format!("/api/v1/namespaces/{NS}/pods/")) => {
            let name = p.rsplit('/').next().unwrap_or("");
            match s
                .pods
                .iter()
                .position(|pod| pod["metadata"]["name"] == name)
            {
                Some(i) => (200, s.pods.remove(i)),
                None => (404, status_body(404, "NotFound")),
            }
        }
        (&Method::GET, p) if p == format!("/api/v1/namespaces/{NS}/pods") => {
            // The only selector the reconciler uses: the pods of one Job.
            let query = query.replace("%3D", "=").replace("%2F", "/");
            let items: Vec<Value> = s
                .pods
                .iter()
                .filter(|pod| {
                    // By the Job's name, or by its uid as the Job controller labels pods (this
                    // fake's Job uids are `job-<name>`).
                    let job = pod["metadata"]["labels"]["batch.kubernetes.io/job-name"]
                        .as_str()
                        .unwrap_or("");
                    query.contains(&format!("batch.kubernetes.io/job-name={job}"))
                        || query.ends_with(&format!("batch.kubernetes.io/controller-uid=job-{job}"))
                })
                .cloned()
                .collect();
            (
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        _ => (
            500,
            status_body(500, &format!("unexpected {method} {path}")),
        ),
    }
}

/// The mocked API server: answers every request until the client is dropped.
pub fn fake_api(state: Shared) -> Client {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            let (code, out) = answer(&state, &parts.method, &path, &query, &body);
            state.lock().expect("state").requests.push(Seen {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body,
            });
            // A pod log is plain text; everything else JSON.
            let bytes = match &out {
                Value::String(text) if path.ends_with("/log") => text.clone().into_bytes(),
                _ => serde_json::to_vec(&out).unwrap_or_default(),
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .expect("response");
            send.send_response(response);
        }
    });
    Client::new(service, NS)
}

pub fn context(client: Client) -> Arc<Context> {
    context_with(client, test_settings())
}

/// The default settings, with the temporary directory (where the tests' datasets are) as the
/// operator's one file root.
pub fn test_settings() -> Settings {
    Settings {
        access: AccessPolicy {
            file_roots: vec![std::env::temp_dir()],
            allow_http: false,
            ..Default::default()
        },
        ..Settings::default()
    }
}

pub fn context_with(client: Client, settings: Settings) -> Arc<Context> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "truthound-operator".into(),
            instance: Some("test".into()),
        },
    );
    Arc::new(Context::new(client, settings, Config::default(), recorder))
}

pub fn sample_dataset(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    let dst = dir.join("lake/events");
    std::fs::create_dir_all(&dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("sample dataset").flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
    }
    dst
}

pub fn profilejob(dataset: &Path, out: &Path, extra: Value) -> Value {
    let mut spec = json!({
        "dataset": {"uri": format!("file://{}/", dataset.display())},
        "output": {"uri": format!("file://{}", out.display())},
        "partitioning": {"strategy": "row_based", "partitions": 3},
    });
    merge_json(&mut spec, &extra);
    json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileJob",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1,
                     "resourceVersion": "1", "creationTimestamp": "2026-11-21T10:00:00Z"},
        "spec": spec,
    })
}

pub fn current(state: &Shared) -> Option<ProfileJob> {
    let pj = state.lock().expect("state").pj.clone()?;
    Some(serde_json::from_value(pj).expect("ProfileJob"))
}

/// A pod of Job `job` that failed with `code`, its termination message saying `message`; with
/// the message `OOMKilled`, killed by the kubelet for exceeding its 256Mi memory limit.
pub fn failed_pod(job: &str, index: u32, code: i32, message: &str) -> Value {
    if message == "OOMKilled" {
        let mut pod = failed_pod(job, index, code, "");
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = json!("OOMKilled");
        pod["spec"] = json!({"containers": [{
            "name": "worker", "image": "th-worker",
            "resources": {"limits": {"memory": "256Mi"}},
        }]});
        return pod;
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{job}-{index}-x"), "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": job},
            "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()},
        },
        "status": {"phase": "Failed", "containerStatuses": [{
            "name": "worker", "image": "th-worker", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "message": message}},
        }]},
    })
}

pub fn requests(state: &Shared) -> Vec<Seen> {
    state.lock().expect("state").requests.clone()
}

pub async fn single_pass(data: &Path) -> Value {
    single_pass_with(data, None).await
}

pub async fn single_pass_with(
    data: &Path,
    sampling: Option<truthound_profile::options::Sampling>,
) -> Value {
    let uri = format!("file://{}/", data.display());
    let opts = StorageOptions::default();
    let ds = dataset::discover(&uri, None, &opts)
        .await
        .expect("discover");
    let mut req = truthound_profile::PlanRequest::new(truthound_profile::Strategy::RowBased, 1);
    req.options.sampling = sampling;
    let plan = truthound_profile::plan::plan(&ds, &req).expect("plan");
    let store = truthound_profile::run::plan_store(&plan).expect("store");
    let p: PartialProfile =
        truthound_profile::run::run_task(&plan, 0, store, &truthound_profile::run::no_progress())
            .await
            .expect("single pass");
    let profile = TableProfile::from_partial(&p, 0, false, plan.options.histogram_bins);
    serde_json::from_slice(&profile.to_json()).expect("json")
}

/// A condition of the status, which must be there.
pub fn condition<'a>(
    s: &'a truthound_operator::crd::ProfileJobStatus,
    t: &str,
) -> &'a truthound_operator::crd::Condition {
    truthound_operator::status::condition(&s.conditions, t)
        .unwrap_or_else(|| panic!("no {t} condition: {s:#?}"))
}

/// Plays the Job controller and the pods: every index of every worker Job runs its task with
/// the engine and writes its partial where `th-worker` would (the `--out` argument), except the
/// tasks told to fail, which leave a failed pod with their termination message; a merge Job's
/// pod merges as `th-worker merge` does.
pub async fn run_workers(state: &Shared) {
    let (jobs, failing, merge_fails) = {
        let s = state.lock().expect("state");
        let jobs: Vec<(String, Value)> =
            s.jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        (jobs, s.failing.clone(), s.merge_fails.clone())
    };
    for (name, job) in jobs {
        if job["status"]["conditions"].is_array() || job["spec"]["suspend"] == json!(true) {
            continue;
        }
        let args: Vec<String> = serde_json::from_value(
            job["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
        )
        .expect("worker args");
        let arg = |flag: &str| {
            let i = args.iter().position(|a| a == flag)?;
            args.get(i + 1).cloned()
        };
        let plan_uri = arg("--plan").expect("--plan");
        let out = arg("--out").expect("--out");
        let opts = StorageOptions::default();
        let bytes = dataset::read_object(&plan_uri, &opts).await.expect("plan");
        let plan = Plan::from_json(&bytes, &plan_uri).expect("plan json");
        if args[0] == "merge"
            && let Some(message) = &merge_fails
        {
            let mut s = state.lock().expect("state");
            s.pods.push(failed_pod(&name, 0, 65, message));
            s.jobs.get_mut(&name).expect("job")["status"] = json!({
                "failedIndexes": "0", "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "FailedIndexes"}],
            });
            continue;
        }
        if args[0] == "merge" {
            let missing = arg("--missing")
                .map(|m| m.split(',').map(|t| t.parse().expect("task id")).collect())
                .unwrap_or_default();
            let cache =
                arg("--cache").map(|c| truthound_profile::cache::PartialCache::new(&c, &opts));
            let reused = match &cache {
                Some(_) => truthound_profile::merge::read_reused(&plan_uri, &opts).await,
                None => Default::default(),
            };
            let run = truthound_profile::merge::StoredRun {
                plan: &plan,
                cache,
                reused,
                work_prefix: arg("--work").expect("--work"),
                missing,
                profile_uri: out,
                duration_ms: 1500,
                keep_state: false,
            };
            truthound_profile::merge::merge_stored(&run, &opts)
                .await
                .expect("merge");
            let mut s = state.lock().expect("state");
            s.jobs.get_mut(&name).expect("job")["status"] = json!({
                "completedIndexes": "0", "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}],
            });
            continue;
        }
        let completions = job["spec"]["completions"].as_u64().expect("completions") as u32;
        // `--tasks`: pod index i runs the i-th task of the list (an incremental run).
        let only: Option<Vec<u32>> = arg("--tasks").map(|r| {
            truthound_operator::status::parse_ranges(&r)
                .into_iter()
                .collect()
        });
        let tasks: Vec<u32> = only.unwrap_or_else(|| (0..plan.tasks.len() as u32).collect());
        assert_eq!(completions as usize, tasks.len());
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (index, task) in tasks.into_iter().enumerate() {
            let index = index as u32;
            if let Some((code, message)) = failing.get(&task) {
                failed.push(index.to_string());
                state
                    .lock()
                    .expect("state")
                    .pods
                    .push(failed_pod(&name, index, *code, message));
                continue;
            }
            state.lock().expect("state").tasks_run.push(task);
            let store = truthound_profile::run::plan_store(&plan).expect("store");
            let partial = truthound_profile::run::run_task(
                &plan,
                task,
                store,
                &truthound_profile::run::no_progress(),
            )
            .await
            .expect("task");
            let uri = out
                .replace("$(JOB_COMPLETION_INDEX)", &index.to_string())
                .replace("{task}", &task.to_string());
            dataset::write_object(&uri, &opts, partial.to_bytes())
                .await
                .expect("partial");
            done.push(index.to_string());
        }
        let mut s = state.lock().expect("state");
        let j = s.jobs.get_mut(&name).expect("job");
        let condition = if failed.is_empty() {
            json!({"type": "Complete", "status": "True"})
        } else {
            json!({"type": "Failed", "status": "True", "reason": "FailedIndexes"})
        };
        j["status"] = json!({
            "completedIndexes": done.join(","),
            "failedIndexes": failed.join(","),
            "succeeded": done.len(),
            "failed": failed.len(),
            "conditions": [condition],
        });
    }
}
