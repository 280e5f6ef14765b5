//! The real reconciler through whole runs, against kube-rs's mocked API server (tower-test, as
//! kube-rs's controller-rs tests its reconciler) and real object storage (the local file system
//! through object_store). A small fake API server keeps the ProfileJob and its children and
//! records every request; between reconciles the test plays the Job controller and the worker
//! pods by running each task with the engine and writing its partial where `th-worker` would.

mod support;

use http::Method;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use support::*;
use truthound_operator::crd::Phase;
use truthound_operator::decide::Settings;
use truthound_operator::reconcile::{self, Config, Context};
use truthound_profile::Plan;

/// Reconciles until the job finishes, running the workers in between. Returns the reconciles.
async fn drive(state: &Shared, ctx: &Arc<Context>, max: usize) -> usize {
    for i in 1..=max {
        let Some(pj) = current(state) else { return i };
        if pj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_finished)
        {
            return i;
        }
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
        run_workers(state).await;
    }
    max
}

#[tokio::test]
async fn a_whole_run_writes_the_profile_that_a_single_pass_computes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("lake/profiles/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    let ctx = context(fake_api(state.clone()));

    let n = drive(&state, &ctx, 10).await;
    assert!(n <= 6, "took {n} reconciles");
    let pj = current(&state).expect("job");
    let status = pj.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        state.lock().expect("state").phases,
        ["Pending", "Running", "Merging", "Succeeded"]
    );

    // The worker Job: one index per task, the retry and failure policies, owned by the job.
    let seen = requests(&state);
    let posts: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.starts_with("/apis/batch/v1/"))
        .collect();
    assert_eq!(posts.len(), 1, "exactly one worker Job is created");
    let job: Job = serde_json::from_value(posts[0].body.clone()).expect("Job");
    let spec = job.spec.expect("spec");
    assert_eq!(job.metadata.name.as_deref(), Some("events-w1"));
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.completions, Some(3));
    assert_eq!(spec.backoff_limit_per_index, Some(3));
    let rules = spec.pod_failure_policy.expect("podFailurePolicy").rules;
    assert_eq!(rules[0].action, "Ignore");
    assert_eq!(rules[1].action, "FailIndex");
    assert_eq!(
        rules[1].on_exit_codes.as_ref().map(|r| r.values.clone()),
        Some(vec![64, 65])
    );
    let owner = &job.metadata.owner_references.expect("owner")[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let args = pod.containers[0].args.clone().expect("args");
    assert!(args.contains(&format!(
        "file://{}/.truthound/{UID}/plan",
        out.parent().expect("dir").display()
    )));

    // Status writes: server-side apply under one field manager, forced, only when changed.
    let status_writes: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/profilejobs/events/status"))
        .collect();
    assert!(!status_writes.is_empty());
    for w in &status_writes {
        assert_eq!(w.method, Method::PATCH);
        assert_eq!(w.content_type, "application/apply-patch+yaml");
        assert!(
            w.uri.contains("fieldManager=truthound-operator"),
            "{}",
            w.uri
        );
        assert!(w.uri.contains("force=true"), "{}", w.uri);
    }
    for pair in status_writes.windows(2) {
        assert_ne!(
            pair[0].body, pair[1].body,
            "an unchanged status was written again"
        );
    }

    // Events for each transition.
    let reasons: Vec<String> = seen
        .iter()
        .filter(|r| r.uri.contains("/events"))
        .filter_map(|r| r.body["reason"].as_str().map(String::from))
        .collect();
    for r in ["Accepted", "WorkersCreated", "Merging", "Succeeded"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "no {r} event in {reasons:?}"
        );
    }

    // The status record.
    let tasks = status.tasks.expect("counts");
    assert_eq!((tasks.total, tasks.succeeded, tasks.failed), (3, 3, 0));
    assert_eq!(status.completed_tasks.as_deref(), Some("0-2"));
    let result = status.result.expect("result");
    assert_eq!(result.rows, 3000);
    assert_eq!(result.columns, 15);
    assert!(status.completion_time.is_some());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");

    // The merged profile equals the single-pass profile on every exact statistic.
    let merged: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("profile written")).expect("json");
    let single = single_pass(&data).await;
    assert_eq!(merged["row_count"], single["row_count"]);
    assert_eq!(merged["duplicate_row_count"], single["duplicate_row_count"]);
    let cols = |v: &Value| v["columns"].as_array().cloned().unwrap_or_default();
    assert_eq!(cols(&merged).len(), 15);
    for (m, s) in cols(&merged).iter().zip(cols(&single).iter()) {
        for field in [
            "name",
            "null_count",
            "distinct_count",
            "empty_string_count",
            "min_length",
            "max_length",
            "top_values",
        ] {
            assert_eq!(m[field], s[field], "{} {field}", s["name"]);
        }
        for field in ["min", "max"] {
            assert_eq!(
                m["distribution"][field], s["distribution"][field],
                "{} {field}",
                s["name"]
            );
        }
    }
    // The task table is beside the plan.
    let table = dir
        .path()
        .join(format!("lake/profiles/.truthound/{UID}/tasks.json"));
    let table: Value =
        serde_json::from_slice(&std::fs::read(table).expect("tasks.json")).expect("json");
    assert_eq!(table["tasks"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn an_operator_restart_mid_run_submits_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    let client = fake_api(state.clone());

    // First operator: accept, plan, create the workers; then it dies before the tasks finish.
    let first = context(client.clone());
    for _ in 0..3 {
        let pj = current(&state).expect("job");
        reconcile::reconcile(Arc::new(pj), first.clone())
            .await
            .expect("reconcile");
    }
    drop(first);
    assert_eq!(
        current(&state).and_then(|p| p.status).and_then(|s| s.phase),
        Some(Phase::Running)
    );
    // A new operator (empty caches) takes over; the workers finish meanwhile.
    let second = context(client);
    drive(&state, &second, 10).await;
    assert_eq!(
        current(&state).and_then(|p| p.status).and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    let seen = requests(&state);
    let job_posts = seen
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.starts_with("/apis/batch/v1/"))
        .count();
    assert_eq!(
        job_posts, 1,
        "the worker Job was submitted again after the restart"
    );
    // The plan was written once: its file's id is the one recorded in the status.
    let plan_id = current(&state)
        .and_then(|p| p.status)
        .and_then(|s| s.submission)
        .and_then(|s| s.plan_id)
        .expect("plan id");
    let plan = std::fs::read(dir.path().join(format!("out/.truthound/{UID}/plan"))).expect("plan");
    assert_eq!(Plan::from_json(&plan, "plan").expect("plan").id, plan_id);
}

#[tokio::test]
async fn a_corrupt_file_fails_the_job_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    std::fs::write(data.join("part-9.parquet"), b"PAR1 this is not parquet").expect("write");
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 5).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed));
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(failed.reason, "BadData");
    assert!(
        failed.message.contains("part-9.parquet"),
        "{}",
        failed.message
    );
    let warnings: Vec<Value> = requests(&state)
        .iter()
        .filter(|r| r.uri.contains("/events") && r.body["type"] == "Warning")
        .map(|r| r.body.clone())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|e| e["note"].as_str().unwrap_or("").contains("part-9.parquet")),
        "{warnings:#?}"
    );
    // No worker Job was created for a dataset that cannot be read.
    assert!(state.lock().expect("state").jobs.is_empty());
}

#[tokio::test]
async fn suspend_stops_the_workers_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({"suspend": true})));
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 4).await;
    let pj = current(&state).expect("job");
    assert_eq!(
        pj.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Suspended)
    );
    {
        let s = state.lock().expect("state");
        let job = s
            .jobs
            .get("events-w1")
            .expect("worker Job created suspended");
        assert_eq!(job["spec"]["suspend"], json!(true));
    }
    // Resume: the operator un-suspends the Job, the workers run, the profile is written.
    {
        let mut s = state.lock().expect("state");
        if let Some(pj) = s.pj.as_mut() {
            pj["spec"]["suspend"] = json!(false);
            pj["metadata"]["generation"] = json!(2);
        }
    }
    drive(&state, &ctx, 8).await;
    let pj = current(&state).expect("job");
    let status = pj.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(status.observed_generation, Some(2));
    assert!(out.exists());
}

#[tokio::test]
async fn ttl_deletes_the_finished_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(
        &data,
        &out,
        json!({"ttlSecondsAfterFinished": 0}),
    ));
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 10).await;
    // One more reconcile of the finished job deletes it.
    let pj = current(&state).expect("job");
    assert_eq!(
        pj.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    reconcile::reconcile(Arc::new(pj), ctx.clone())
        .await
        .expect("reconcile");
    assert!(current(&state).is_none(), "the ProfileJob was not deleted");
    assert!(out.exists(), "the profile stays in storage");
}

#[tokio::test]
async fn a_large_run_is_merged_by_a_merge_pod_not_the_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("lake/profiles/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    let settings = Settings {
        merge_in_pod_tasks: 2,
        ..test_settings()
    };
    let ctx = context_with(fake_api(state.clone()), settings);

    drive(&state, &ctx, 10).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        state.lock().expect("state").phases,
        ["Pending", "Running", "Merging", "Succeeded"]
    );

    // Two Jobs: the workers, then one merge pod running `th-worker merge`.
    let posts: Vec<Job> = requests(&state)
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.starts_with("/apis/batch/v1/"))
        .map(|r| serde_json::from_value(r.body.clone()).expect("Job"))
        .collect();
    let names: Vec<&str> = posts
        .iter()
        .filter_map(|j| j.metadata.name.as_deref())
        .collect();
    assert_eq!(names, ["events-w1", "events-m1"]);
    let merge = posts[1].spec.clone().expect("spec");
    assert_eq!((merge.completions, merge.parallelism), (Some(1), Some(1)));
    assert_eq!(
        posts[1]
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].uid.as_str()),
        Some(UID)
    );
    let pod = merge.template.spec.expect("pod spec");
    let args = pod.containers[0].args.clone().expect("args");
    let work = format!(
        "file://{}/.truthound/{UID}",
        out.parent().expect("dir").display()
    );
    assert_eq!(
        args[..7],
        [
            "merge".to_string(),
            "--plan".into(),
            format!("{work}/plan"),
            "--work".into(),
            work.clone(),
            "--out".into(),
            format!("file://{}", out.display()),
        ]
    );
    assert!(args.contains(&"--started-at".to_string()), "{args:?}");
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );

    // The result is what the merge pod wrote: its summary (1.5 s, as the fake pod says), not an
    // in-operator merge.
    let result = status.result.expect("result");
    assert_eq!((result.rows, result.columns), (3000, 15));
    assert_eq!(result.duration_seconds, 1.5);
    let profile: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("profile written")).expect("json");
    assert_eq!(profile["row_count"], 3000);
}

#[tokio::test]
async fn a_failed_merge_pod_fails_the_job_with_its_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    {
        let mut s = state.lock().expect("state");
        s.pj = Some(profilejob(&data, &out, json!({})));
        s.merge_fails =
            Some("exit_code=75 reason=Transient: s3://lake/out/events.json: access denied".into());
    }
    let settings = Settings {
        merge_in_pod_tasks: 1,
        ..test_settings()
    };
    let ctx = context_with(fake_api(state.clone()), settings);
    drive(&state, &ctx, 8).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(failed.reason, "MergeFailed");
    assert!(
        failed.message.contains("events-m1") && failed.message.contains("access denied"),
        "{}",
        failed.message
    );
    // The partials stay for a retry by hand (a new attempt); no profile was written.
    assert!(!out.exists());
    let partials = dir.path().join(format!("out/.truthound/{UID}/partials"));
    assert_eq!(std::fs::read_dir(partials).expect("partials").count(), 3);
}

fn failure_message(data: &Path) -> String {
    format!(
        "exit_code=65 reason=BadData: file://{}/part-1.parquet: not a readable Parquet file: \
         invalid footer",
        data.display()
    )
}

#[tokio::test]
async fn a_failed_task_fails_the_job_with_the_workers_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    {
        let mut s = state.lock().expect("state");
        s.pj = Some(profilejob(&data, &out, json!({})));
        s.failing.insert(1, (65, failure_message(&data)));
    }
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 8).await;

    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert!(
        failed.message.contains("part-1.parquet"),
        "{}",
        failed.message
    );
    let last = status.last_failures;
    assert!(!last.is_empty(), "no lastFailures");
    assert_eq!((last[0].task, last[0].reason.as_str()), (1, "BadData"));
    assert!(last[0].message.contains("invalid footer"));
    assert_eq!(status.failed_tasks.as_deref(), Some("1"));
    let tasks = status.tasks.expect("counts");
    assert_eq!((tasks.succeeded, tasks.failed), (2, 1));
    // Completed work is kept: the other tasks' partials are in storage, and no profile is
    // written from an incomplete run.
    let work = dir.path().join(format!("out/.truthound/{UID}/partials"));
    assert!(work.join("0").exists() && work.join("2").exists());
    assert!(!out.exists());
    let warnings: Vec<String> = requests(&state)
        .iter()
        .filter(|r| r.uri.contains("/events") && r.body["type"] == "Warning")
        .filter_map(|r| r.body["note"].as_str().map(String::from))
        .collect();
    assert!(
        warnings.iter().any(|n| n.contains("part-1.parquet")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn tolerated_failures_are_merged_without_and_said_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    {
        let mut s = state.lock().expect("state");
        s.pj = Some(profilejob(&data, &out, json!({"maxFailedTasks": 1})));
        s.failing.insert(1, (65, failure_message(&data)));
    }
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 8).await;

    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    let result = status.result.expect("result");
    assert_eq!(result.missing_tasks.as_deref(), Some("1"));
    assert!(result.rows < 3000 && result.rows > 0, "{}", result.rows);
    let profile: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("profile written")).expect("json");
    assert_eq!(profile["row_count"], result.rows);
    assert_eq!(profile["partitioning"]["tasks_merged"], 2);
    assert_eq!(
        profile["partitioning"]["missing_tasks"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// Progress as the gRPC hub would report it: task 2 has gone quiet.
struct Stalled(Vec<u32>);

impl reconcile::ProgressSource for Stalled {
    fn token(&self, _job_uid: &str) -> String {
        "token".into()
    }
    fn observe(
        &self,
        _job_uid: &str,
        _stall_timeout: std::time::Duration,
    ) -> truthound_operator::decide::ProgressObserved {
        truthound_operator::decide::ProgressObserved {
            running_rows: 10,
            rows_per_second: 5.0,
            stalled: self.0.clone(),
            memory: None,
        }
    }
    fn forget(&self, _job_uid: &str) {}
}

fn running_pod(job: &str, task: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{job}-{task}-r"), "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": job},
            "annotations": {"batch.kubernetes.io/job-completion-index": task.to_string()},
        },
        "status": {"phase": "Running"},
    })
}

#[tokio::test]
async fn a_stalled_tasks_pod_is_replaced_and_the_others_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    let client = fake_api(state.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "truthound-operator".into(),
            instance: Some("test".into()),
        },
    );
    let mut ctx = Context::new(client, test_settings(), Config::default(), recorder);
    ctx.progress = Some(Arc::new(Stalled(vec![2])));
    let ctx = Arc::new(ctx);

    // Until the workers run: accepted, planned, the worker Job created.
    for _ in 0..3 {
        let pj = current(&state).expect("job");
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
    }
    assert!(state.lock().expect("state").jobs.contains_key("events-w1"));
    {
        let mut s = state.lock().expect("state");
        s.jobs.get_mut("events-w1").expect("job")["status"] = json!({"active": 3});
        s.pods = (0..3).map(|t| running_pod("events-w1", t)).collect();
    }
    let pj = current(&state).expect("job");
    reconcile::reconcile(Arc::new(pj), ctx.clone())
        .await
        .expect("reconcile");

    let deleted: Vec<String> = requests(&state)
        .iter()
        .filter(|r| r.method == Method::DELETE && r.uri.contains("/pods/"))
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].contains("/pods/events-w1-2-r"), "{deleted:?}");
    let pods: Vec<String> = state
        .lock()
        .expect("state")
        .pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    assert_eq!(pods, ["events-w1-0-r", "events-w1-1-r"]);
    let stalled_events: Vec<String> = requests(&state)
        .iter()
        .filter(|r| r.uri.contains("/events") && r.body["reason"] == "TaskStalled")
        .filter_map(|r| r.body["note"].as_str().map(String::from))
        .collect();
    assert!(!stalled_events.is_empty());
    assert!(
        stalled_events.iter().all(|n| n.contains("task(s) 2")),
        "{stalled_events:?}"
    );
    // The running rows reported over gRPC are in the status.
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Running));
    assert!(status.progress.is_some_and(|p| p.rows_processed >= 10));
}

#[tokio::test]
async fn a_sampled_job_profiles_the_rows_a_single_sampled_pass_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(
        &data,
        &out,
        json!({"profile": {"sampling": {"fraction": 0.25, "seed": 42}}}),
    ));
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 10).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");

    let merged: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("profile written")).expect("json");
    assert_eq!(merged["sampling"]["fraction"], 0.25);
    assert_eq!(merged["sampling"]["seed"], 42);
    assert_eq!(merged["sampling"]["rows_scanned"], 3000);
    let rows = merged["row_count"].as_u64().expect("rows");
    // Binomial(3000, 0.25): mean 750, sd 23.7; 6 sd either way.
    assert!((608..=892).contains(&rows), "{rows}");
    assert_eq!(status.result.expect("result").rows, rows);

    // Three tasks sampled exactly the rows one pass samples.
    let single = single_pass_with(
        &data,
        Some(truthound_profile::options::Sampling::new(0.25, 42)),
    )
    .await;
    assert_eq!(merged["row_count"], single["row_count"]);
    let cols = |v: &Value| v["columns"].as_array().cloned().unwrap_or_default();
    for (m, s) in cols(&merged).iter().zip(cols(&single).iter()) {
        for field in ["name", "null_count", "distinct_count", "top_values"] {
            assert_eq!(m[field], s[field], "{} {field}", s["name"]);
        }
        assert_eq!(m["distribution"]["min"], s["distribution"]["min"]);
        assert_eq!(m["distribution"]["max"], s["distribution"]["max"]);
    }
}

/// The attack of issue 16: a tenant's job names the operator's service-account token as a CSV
/// dataset (its first line would become the plan's schema) and an output of the tenant's
/// choosing. The operator fails the job at once, naming the field, and reads and writes nothing.
#[tokio::test]
async fn a_dataset_outside_the_file_roots_is_refused_and_nothing_is_read_or_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
    let out = dir.path().join("tenant/profile.json");
    let state: Shared = Arc::default();
    let mut pj = profilejob(dir.path(), &out, json!({}));
    pj["spec"]["dataset"] = json!({"uri": format!("file://{}", secret.display()), "format": "csv"});
    state.lock().expect("state").pj = Some(pj);
    let ctx = context(fake_api(state.clone()));

    drive(&state, &ctx, 3).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failed = condition(&status, "Failed");
    assert_eq!(failed.reason, "InvalidSpec");
    assert!(
        failed.message.contains("spec.dataset.uri"),
        "{}",
        failed.message
    );
    assert!(failed.message.contains("file roots"), "{}", failed.message);
    let events: Vec<Value> = requests(&state)
        .into_iter()
        .filter(|r| r.uri.contains("/events"))
        .map(|r| r.body)
        .collect();
    assert!(
        events.iter().any(|e| e["reason"] == "InvalidSpec"
            && e["type"] == "Warning"
            && e["note"]
                .as_str()
                .is_some_and(|n| n.contains("spec.dataset.uri"))),
        "{events:#?}"
    );
    // Nothing was planned: no plan, no worker Job, nothing under the output's directory.
    assert!(
        !dir.path().join("tenant").exists(),
        "the operator wrote to the output"
    );
    assert!(
        !requests(&state)
            .iter()
            .any(|r| r.method == Method::POST && r.uri.starts_with("/apis/batch/v1/")),
        "a Job was created"
    );
}

/// A job accepted before the operator's file roots were narrowed (its status says Running) is
/// held to them too: the operator does not plan or merge from the refused path.
#[tokio::test]
async fn a_running_job_whose_uri_is_no_longer_allowed_fails_without_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("lake/profiles/events.json");
    let state: Shared = Arc::default();
    state.lock().expect("state").pj = Some(profilejob(&data, &out, json!({})));
    // Accepted and planned under a policy that allowed the temporary directory ...
    let ctx = context(fake_api(state.clone()));
    reconcile::reconcile(Arc::new(current(&state).expect("job")), ctx.clone())
        .await
        .expect("reconcile");
    assert!(
        current(&state)
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            .is_some()
    );
    // ... then looked at by an operator that allows no local path.
    let strict = context_with(fake_api(state.clone()), Settings::default());
    drive(&state, &strict, 3).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failed = condition(&status, "Failed");
    assert_eq!(failed.reason, "InvalidSpec");
    assert!(
        failed.message.contains("spec.dataset.uri"),
        "{}",
        failed.message
    );
}

/// A job naming no credentials Secret is not planned with the operator's own cloud identity
/// (its environment, files, instance metadata): it fails at once saying what to name.
#[tokio::test]
async fn a_job_without_a_credentials_secret_does_not_use_the_operators_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out/profile.json");
    let state: Shared = Arc::default();
    let mut pj = profilejob(dir.path(), &out, json!({}));
    pj["spec"]["dataset"] = json!({"uri": "s3://lake/events/", "options": {"region": "us-east-1"}});
    state.lock().expect("state").pj = Some(pj);
    let ctx = context(fake_api(state.clone()));

    drive(&state, &ctx, 3).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let failed = condition(&status, "Failed");
    assert_eq!(failed.reason, "InvalidSpec", "{}", failed.message);
    assert!(
        failed.message.contains("has no credentials"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("credentialsSecretRef"),
        "{}",
        failed.message
    );
}

/// Plans and merges in the operator's process are bounded by `max_in_process_work`.
#[tokio::test]
async fn in_process_work_is_bounded_by_the_setting() {
    let state: Shared = Arc::default();
    let ctx = context_with(
        fake_api(state.clone()),
        Settings {
            max_in_process_work: 3,
            ..Settings::default()
        },
    );
    assert_eq!(ctx.in_process_permits(), 3);
    let ctx = context_with(
        fake_api(state),
        Settings {
            max_in_process_work: 0,
            ..Settings::default()
        },
    );
    assert_eq!(ctx.in_process_permits(), 1, "0 would block every merge");
    assert_eq!(Settings::default().max_in_process_work, 2);
}

#[tokio::test]
async fn a_worker_killed_for_memory_is_named_with_its_limit_and_what_to_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = sample_dataset(dir.path());
    let out = dir.path().join("out/events.json");
    let state: Shared = Arc::default();
    {
        let mut s = state.lock().expect("state");
        s.pj = Some(profilejob(&data, &out, json!({})));
        s.failing.insert(2, (137, "OOMKilled".into()));
    }
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 8).await;
    let status = current(&state).and_then(|p| p.status).expect("status");
    let f = status
        .last_failures
        .iter()
        .find(|f| f.task == 2)
        .unwrap_or_else(|| panic!("task 2 failed: {status:#?}"));
    assert_eq!(f.reason, "OOMKilled");
    assert!(f.message.contains("256Mi"), "{}", f.message);
    assert!(
        f.message.contains("spec.backend.local.resources"),
        "{}",
        f.message
    );
}
