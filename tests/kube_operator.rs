//! The operator on a real Kubernetes control plane: kube-apiserver and kube-controller-manager
//! v1.36 (scripts/kube-cluster.sh), the test node agent running pods as processes, a real S3
//! server, and `th-operator` as a process with the chart's ServiceAccount and RBAC. What only a
//! real control plane checks: the CRD's schema and CEL rules, server-side apply, the Job
//! controller running and retrying our Indexed Jobs, garbage collection, RBAC, and restarts.

mod control_plane;
mod kube_security;

use control_plane::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use truthound_e2e::*;
use truthound_profile::events::{EventKind, RunEvent};

fn rt() -> tokio::runtime::Runtime {
    multi_thread_rt()
}

async fn jobs_of(client: &kube::Client, ns: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.list(&ListParams::default())
        .await
        .expect("list Jobs")
        .items
}

async fn pods_of(client: &kube::Client, ns: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
}

async fn create_pj(client: &kube::Client, ns: &str, pj: Value) {
    apply_value(client, pj, Some(ns), false)
        .await
        .expect("create ProfileJob");
}

/// The CRD and every chart object were applied with server-side apply by `cluster()`; every
/// example ProfileJob is accepted by the apiserver; the invalid ones the CRD's schema and CEL
/// rules are meant to refuse are refused by the apiserver itself, each with its message.
#[test]
fn the_apiserver_accepts_the_examples_and_enforces_the_crds_rules() {
    cluster();
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "crd").await;
        let examples = repo("deploy/examples");
        let out = kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager",
            MANAGER,
            "-n",
            &ns,
            "-f",
            examples.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let accepted = String::from_utf8_lossy(&out.stdout)
            .matches("(server dry run)")
            .count();
        assert!(
            accepted >= 6,
            "{accepted} examples: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The apiserver knows every format the CRDs' schemas name (it warns on one it does not).
        for file in ["crds/profilejob.yaml", "crds/profileschedule.yaml"] {
            let crd = repo(file);
            let out = kubectl(&[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager",
                MANAGER,
                "-f",
                crd.to_str().expect("path"),
            ]);
            assert!(out.status.success(), "{file}: {}", stderr(&out));
            assert!(
                !stderr(&out).contains("Warning"),
                "{file}: {}",
                stderr(&out)
            );
            // `kubectl apply -f crds/` (client-side, as the README says) keeps the whole object
            // in an annotation, which the apiserver caps at 256 KiB: each CRD must stay under it.
            let out = kubectl(&[
                "apply",
                "--dry-run=server",
                "-f",
                crd.to_str().expect("path"),
            ]);
            assert!(
                out.status.success(),
                "client-side apply of {file}: {}",
                stderr(&out)
            );
        }

        let refused = |spec: Value, expect: &'static str| {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let pj = profilejob("bad", "bucket", spec);
                let err = apply_value(&client, pj, Some(&ns), true)
                    .await
                    .expect_err(&format!("accepted, but should fail with {expect:?}"));
                let msg = err.to_string();
                assert!(msg.contains(expect), "{expect:?} not in: {msg}");
                assert!(msg.contains("Invalid") || msg.contains("422"), "{msg}");
            }
        };
        refused(
            json!({"partitioning": {"strategy": "hash"}}),
            "partitioning.strategy hash needs partitioning.hashColumn",
        )
        .await;
        refused(
            json!({"partitioning": {"partitions": 0}}),
            "partitioning.partitions, rowPartitions and columnPartitions must be at least 1",
        )
        .await;
        refused(
            json!({"profile": {"sampling": {"fraction": 1.5}}}),
            "sampling.fraction must be more than 0 and at most 1",
        )
        .await;
        refused(
            json!({"partitioning": {"strategy": "by_magic"}}),
            "Unsupported value: \"by_magic\"",
        )
        .await;

        // Immutable fields: an update of a stored ProfileJob is refused by the transition rules.
        let pj = profilejob("immutable", "bucket", json!({"suspend": true}));
        create_pj(&client, &ns, pj.clone()).await;
        let mut changed = pj.clone();
        changed["spec"]["dataset"]["uri"] = json!("s3://bucket/other/");
        let err = apply_value(&client, changed, Some(&ns), false)
            .await
            .expect_err("dataset changed");
        assert!(
            err.to_string()
                .contains("dataset is immutable; create a new ProfileJob"),
            "{err}"
        );
        let mut resumed = pj;
        resumed["spec"]["suspend"] = json!(false);
        resumed["spec"]["backoffLimitPerTask"] = json!(1);
        apply_value(&client, resumed, Some(&ns), true)
            .await
            .expect("suspend and retries may change");
        delete_namespace(&client, &ns).await;
    });
}

/// A user's whole run: `kubectl apply -f` a ProfileJob over a multi-file Parquet dataset,
/// `kubectl wait --for=condition=Ready`, the profile in the bucket equal to `th profile` of the
/// same files on every exact figure, the printer columns filled, and the worker Job as the real
/// Job controller ran it.
#[test]
fn kubectl_apply_runs_a_profilejob_to_the_same_profile_as_th_profile() {
    cluster();
    let bucket = new_bucket("kube-run");
    let local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "run").await;
        let mut op = Operator::start(&ns);
        let pj = profilejob(
            "events",
            &bucket,
            json!({"backend": {"type": "local", "local": {"parallelism": 2}}}),
        );
        let file = cluster().dir.join(format!("{ns}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(&pj).expect("YAML")).expect("write");
        let out = kubectl(&["apply", "-n", &ns, "-f", file.to_str().expect("path")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = kubectl(&[
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            "pj/events",
            "--timeout=120s",
        ]);
        assert!(
            out.status.success(),
            "kubectl wait: {}\n{}\noperator log:\n{}",
            stderr(&out),
            String::from_utf8_lossy(
                &kubectl(&["get", "-n", &ns, "pj/events", "-o", "yaml"]).stdout
            ),
            tail(&op.logs(), 80)
        );
        op.assert_running();

        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile JSON");
        assert_eq!(profile["row_count"], 6000);
        assert_eq!(profile["partitioning"]["tasks_merged"], 3);
        assert_same_exact(&profile, &local_profile(local.path()));

        let out = kubectl(&["get", "-n", &ns, "pj"]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        let header: Vec<&str> = table
            .lines()
            .next()
            .expect("header")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["NAME", "BACKEND", "STATE", "TASKS", "PROGRESS", "AGE"],
            "{table}"
        );
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .expect("row")
            .split_whitespace()
            .collect();
        assert_eq!(
            &row[..5],
            ["events", "local", "Succeeded", "3/3", "100%"],
            "{table}"
        );

        // The worker Job as created and as the Job controller left it.
        let jobs = jobs_of(&client, &ns).await;
        assert_eq!(jobs.len(), 1, "one worker Job");
        let job = &jobs[0];
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(spec.completions, Some(3));
        assert_eq!(spec.parallelism, Some(2));
        assert!(spec.backoff_limit_per_index.is_some());
        assert!(spec.pod_failure_policy.is_some());
        let status = job.status.as_ref().expect("status");
        assert_eq!(status.succeeded, Some(3));
        assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
        let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
        let pj = get_pj(&client, &ns, "events").await;
        assert_eq!(owner.uid, pj["metadata"]["uid"].as_str().expect("uid"));
        assert_eq!(owner.controller, Some(true));
        // The operator's events, as `kubectl describe pj` shows them.
        let out = kubectl(&["describe", "-n", &ns, "pj/events"]);
        let described = String::from_utf8_lossy(&out.stdout).to_string();
        for reason in ["WorkersCreated", "Succeeded"] {
            assert!(
                described.contains(reason),
                "no {reason} event:\n{described}"
            );
        }
        delete_namespace(&client, &ns).await;
    });
}

/// Kueue's part played by the test: a ProfileJob naming a queue gets its worker Job created
/// suspended, no pod runs and the ProfileJob says it waits for admission; the operator never
/// un-suspends it. Admitting it (what Kueue does) lets the run finish.
#[test]
fn a_queue_managed_job_waits_for_admission_and_runs_once_admitted() {
    cluster();
    let bucket = new_bucket("kube-kueue");
    put_parquet_dataset(&bucket, 2, 1000);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "kueue").await;
        let op = Operator::start(&ns);
        let mut pj = profilejob("queued", &bucket, json!({}));
        pj["metadata"]["labels"] = json!({"kueue.x-k8s.io/queue-name": "data-team"});
        create_pj(&client, &ns, pj).await;
        let queued = wait_phase(&client, &op, "queued", "Queued", 60).await;
        let running = queued["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Running")
            .expect("Running condition")
            .clone();
        assert_eq!(running["reason"], "WaitingForAdmission", "{running}");
        assert!(
            running["message"]
                .as_str()
                .expect("message")
                .contains("data-team")
        );

        // Several resyncs later (2 s each): still suspended, no pod.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let jobs = jobs_of(&client, &ns).await;
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.spec.as_ref().expect("spec").suspend, Some(true));
        assert_eq!(
            job.metadata.labels.as_ref().expect("labels")["kueue.x-k8s.io/queue-name"],
            "data-team"
        );
        assert!(
            pods_of(&client, &ns).await.is_empty(),
            "no pod before admission"
        );
        assert_eq!(
            get_pj(&client, &ns, "queued").await["status"]["phase"],
            "Queued"
        );

        // Admission: Kueue clears spec.suspend.
        let name = job.metadata.name.clone().expect("name");
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        jobs.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("admit");
        let done = wait_phase(&client, &op, "queued", "Succeeded", 90).await;
        assert_eq!(
            done["status"]["tasks"]["succeeded"], 3,
            "{:#}",
            done["status"]
        );
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/queued.json")).expect("profile");
        assert_eq!(profile["row_count"], 2000);
        delete_namespace(&client, &ns).await;
    });
}

/// The operator SIGKILLed three times during one run (planning, running, merging): exactly one
/// worker Job is ever created, no partial is lost or counted twice, one profile is written.
#[test]
fn an_operator_killed_while_planning_running_and_merging_finishes_the_run_once() {
    cluster();
    let bucket = new_bucket("kube-kill");
    let local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "kill").await;
        // The merge runs in a pod, so that the operator can be killed while it runs.
        let mut op =
            Operator::start_with(&ns, &cluster().operator, &[("TH_MERGE_IN_POD_TASKS", "1")]);
        let pj = profilejob(
            "events",
            &bucket,
            json!({"backend": {"type": "local", "local": {
                "image": SLOW_WORKER_IMAGE, "parallelism": 3,
                "env": [{"name": "TH_TEST_WORKER_DELAY", "value": "4"}]}}}),
        );
        create_pj(&client, &ns, pj).await;
        // Planning: killed as soon as it has seen the job.
        eventually("the job accepted", Duration::from_secs(30), || async {
            let pj = get_pj(&client, &ns, "events").await;
            pj["status"]["phase"].as_str().map(|_| ())
        })
        .await;
        op.kill_and_restart();
        wait_phase(&client, &op, "events", "Running", 60).await;
        // The status says Running before the Job is created (the record first, then the act).
        let first_job = eventually(
            "the worker Job created",
            Duration::from_secs(30),
            || async {
                let jobs = jobs_of(&client, &ns).await;
                (jobs.len() == 1).then_some(jobs)
            },
        )
        .await;
        let first_uid = first_job[0].metadata.uid.clone();
        op.kill_and_restart();
        wait_phase(&client, &op, "events", "Merging", 60).await;
        op.kill_and_restart();
        let done = wait_phase(&client, &op, "events", "Succeeded", 90).await;
        op.assert_running();

        let jobs = jobs_of(&client, &ns).await;
        let workers: Vec<&Job> = jobs
            .iter()
            .filter(|j| {
                j.metadata.labels.as_ref().is_some_and(|l| {
                    l.get("app.kubernetes.io/component").map(String::as_str) == Some("worker")
                })
            })
            .collect();
        assert_eq!(workers.len(), 1, "one worker Job: {jobs:#?}");
        assert_eq!(workers[0].metadata.uid, first_uid, "never re-created");
        assert_eq!(
            workers[0].status.as_ref().and_then(|s| s.succeeded),
            Some(3),
            "each task ran once"
        );
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_eq!(
            profile["partitioning"]["tasks_merged"], 3,
            "{:#}",
            done["status"]
        );
        assert_same_exact(&profile, &local_profile(local.path()));
        delete_namespace(&client, &ns).await;
    });
}

/// Worker processes killed mid-task: the real Job controller retries their indexes
/// (backoffLimitPerIndex) and the run succeeds with every task.
#[test]
fn killed_worker_processes_are_retried_by_the_job_controller() {
    cluster();
    let bucket = new_bucket("kube-retry");
    let local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, agent) = test_namespace(&client, "retry").await;
        let op = Operator::start(&ns);
        let pj = profilejob(
            "events",
            &bucket,
            json!({"backend": {"type": "local", "local": {
                "image": SLOW_WORKER_IMAGE, "parallelism": 3,
                "env": [{"name": "TH_TEST_WORKER_DELAY", "value": "3"}]}},
                "backoffLimitPerTask": 2}),
        );
        create_pj(&client, &ns, pj).await;
        wait_phase(&client, &op, "events", "Running", 60).await;
        // Every worker pod's process is a child of the node agent; kill each pod's process
        // group by its pod's label, as an OOM kill would.
        let killed = eventually("running worker pods", Duration::from_secs(30), || async {
            let pods = pods_of(&client, &ns).await;
            let running: Vec<String> = pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (!running.is_empty()).then_some(running)
        })
        .await;
        for pod in &killed {
            let dir = agent.pod_dir(&ns, pod).expect("the pod's directory");
            assert!(kill_processes_in(&dir) > 0, "no process of {pod} to kill");
        }
        let done = wait_phase(&client, &op, "events", "Succeeded", 120).await;
        let jobs = jobs_of(&client, &ns).await;
        let status = jobs[0].status.as_ref().expect("status");
        assert!(
            status.failed.unwrap_or(0) >= killed.len() as i32,
            "the killed pods count as failures: {status:#?}"
        );
        assert_eq!(status.succeeded, Some(3));
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_eq!(
            profile["partitioning"]["tasks_merged"], 3,
            "{:#}",
            done["status"]
        );
        assert_same_exact(&profile, &local_profile(local.path()));
        // The event log beside the profile: the plan, each attempt the workers recorded, the
        // killed attempts as retries (only the operator saw those), the merge; in time order.
        let log = event_log(&bucket, "profiles/events.json");
        let of = |k: EventKind| log.iter().filter(move |e| e.event == k);
        assert_eq!(of(EventKind::Planned).count(), 1, "{log:#?}");
        assert_eq!(of(EventKind::Planned).next().and_then(|e| e.tasks), Some(3));
        let finished: std::collections::BTreeSet<u32> =
            of(EventKind::TaskFinished).filter_map(|e| e.task).collect();
        assert_eq!(finished, (0..3).collect(), "{log:#?}");
        assert!(
            of(EventKind::TaskFinished).all(|e| e.source == "worker" && e.worker.is_some()),
            "{log:#?}"
        );
        assert!(
            of(EventKind::TaskStarted).count() >= 3,
            "every finished attempt recorded its start: {log:#?}"
        );
        assert!(of(EventKind::TaskRetried).count() >= 1, "{log:#?}");
        assert_eq!(of(EventKind::TaskFailed).count(), 0, "{log:#?}");
        assert_eq!(of(EventKind::MergeFinished).count(), 1, "{log:#?}");
        assert_eq!(log.last().map(|e| e.event), Some(EventKind::MergeFinished));
        assert!(log.windows(2).all(|w| w[0].time <= w[1].time), "{log:#?}");
        delete_namespace(&client, &ns).await;
    });
}

/// The event log written beside the profile at `key`, every line checked against the format.
fn event_log(bucket: &str, key: &str) -> Vec<RunEvent> {
    let bytes = s3_get(bucket, &format!("{key}.events.jsonl"));
    truthound_profile::events::from_jsonl(&bytes, key).expect("the event log parses")
}

/// Kills (SIGKILL, as the OOM killer would) every process whose working directory is `dir`:
/// the node agent starts a pod's containers there. Returns how many.
fn kill_processes_in(dir: &std::path::Path) -> usize {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            let ok = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            killed += usize::from(ok);
        }
    }
    killed
}

/// A task over a Parquet file whose footer is sound but whose data pages are not (planning
/// reads only footers) fails the job, naming the file, within one task's time: th-worker's exit
/// code says retrying cannot help and the Job's podFailurePolicy fails the index at once.
#[test]
fn bad_data_in_a_task_fails_the_job_naming_the_file() {
    cluster();
    let bucket = new_bucket("kube-bad");
    put_parquet_dataset(&bucket, 2, 1000);
    put(&bucket, "data/part-9.parquet", corrupt_pages_parquet());
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "bad").await;
        let op = Operator::start(&ns);
        let pj = profilejob("events", &bucket, json!({"backoffLimitPerTask": 3}));
        create_pj(&client, &ns, pj).await;
        let started = std::time::Instant::now();
        let failed = wait_phase(&client, &op, "events", "Failed", 90).await;
        let cond = failed["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Failed")
            .expect("Failed condition")
            .clone();
        let msg = cond["message"].as_str().unwrap_or_default();
        assert!(msg.contains("part-9.parquet"), "{cond:#}");
        assert!(msg.contains("BadData"), "{cond:#}");
        // Not retried: one pod of the bad task failed, not backoffLimitPerTask + 1 of them.
        let failures = failed["status"]["lastFailures"]
            .as_array()
            .expect("lastFailures");
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert_eq!(failures[0]["reason"], "BadData");
        assert!(started.elapsed() < Duration::from_secs(30));
        // No merge writes a log for a failed run: the operator does, ending with the failure.
        let log = eventually(
            "the failed run's event log",
            Duration::from_secs(20),
            || async {
                let keys = s3_keys(&bucket, "profiles/").await;
                keys.iter()
                    .any(|k| k == "profiles/events.json.events.jsonl")
                    .then(|| event_log(&bucket, "profiles/events.json"))
            },
        )
        .await;
        let bad: Vec<&RunEvent> = log
            .iter()
            .filter(|e| e.event == EventKind::TaskFailed)
            .collect();
        assert_eq!(bad.len(), 1, "{log:#?}");
        assert_eq!(bad[0].reason.as_deref(), Some("BadData"));
        assert!(
            bad[0]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("part-9.parquet"),
            "{log:#?}"
        );
        let last = log.last().expect("lines");
        assert_eq!(last.event, EventKind::RunFailed, "{log:#?}");
        assert_eq!(
            last.reason.as_deref(),
            Some(cond["reason"].as_str().unwrap_or("?"))
        );
        assert_eq!(
            log.iter().filter(|e| e.event == EventKind::Planned).count(),
            1
        );
        // The worker Job is deleted with the failed run (its completed partials stay).
        eventually(
            "the worker Job deleted",
            Duration::from_secs(30),
            || async { jobs_of(&client, &ns).await.is_empty().then_some(()) },
        )
        .await;
        delete_namespace(&client, &ns).await;
    });
}

/// A Snappy-compressed Parquet file with a valid footer and garbage in its data pages.
fn corrupt_pages_parquet() -> Vec<u8> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let batch = table(0..2000);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let footer_len = u32::from_le_bytes(
        out[out.len() - 8..out.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let data_end = out.len() - 8 - footer_len;
    for b in &mut out[8..data_end - 8] {
        *b = 0xA5;
    }
    out
}

/// Suspend stops the Job (no pod runs); resume runs only the missing tasks; deleting the
/// ProfileJob mid-run garbage-collects its Jobs and pods and releases the finalizer.
#[test]
fn suspend_resume_and_delete_mid_run() {
    cluster();
    let bucket = new_bucket("kube-suspend");
    let local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "suspend").await;
        let op = Operator::start(&ns);
        let pj = profilejob(
            "events",
            &bucket,
            json!({"backend": {"type": "local", "local": {
                "image": SLOW_WORKER_IMAGE, "parallelism": 1,
                "env": [{"name": "TH_TEST_WORKER_DELAY", "value": "2"}]}}}),
        );
        create_pj(&client, &ns, pj.clone()).await;
        // Wait for the first task to finish, then suspend.
        eventually("one task done", Duration::from_secs(60), || async {
            let pj = get_pj(&client, &ns, "events").await;
            (pj["status"]["tasks"]["succeeded"].as_u64().unwrap_or(0) >= 1).then_some(())
        })
        .await;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &pj_resource());
        api.patch(
            "events",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
        let suspended = wait_phase(&client, &op, "events", "Suspended", 30).await;
        eventually(
            "the Job suspended and its pods gone",
            Duration::from_secs(30),
            || async {
                let jobs = jobs_of(&client, &ns).await;
                let suspended = jobs
                    .iter()
                    .all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true));
                let active = pods_of(&client, &ns)
                    .await
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Pending") | Some("Running")
                            )
                    })
                    .count();
                (suspended && active == 0).then_some(())
            },
        )
        .await;
        let done_before = suspended["status"]["tasks"]["succeeded"]
            .as_u64()
            .unwrap_or(0);
        assert!((1..3).contains(&done_before), "{:#}", suspended["status"]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            pods_of(&client, &ns).await.iter().all(|p| matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            ) || p
                .metadata
                .deletion_timestamp
                .is_some()),
            "no pod runs while suspended"
        );
        api.patch(
            "events",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resume");
        wait_phase(&client, &op, "events", "Succeeded", 90).await;
        let jobs = jobs_of(&client, &ns).await;
        let status = jobs[0].status.as_ref().expect("status");
        // Only the missing tasks ran after the resume: each index succeeded once.
        assert_eq!(status.succeeded, Some(3), "{status:#?}");
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_same_exact(&profile, &local_profile(local.path()));

        // Delete mid-run: a second job, deleted while its tasks run.
        let mut second = pj;
        second["metadata"]["name"] = json!("second");
        second["spec"]["output"]["uri"] = json!(format!("s3://{bucket}/profiles/second.json"));
        create_pj(&client, &ns, second).await;
        wait_phase(&client, &op, "second", "Running", 60).await;
        eventually(
            "a running pod of the second job",
            Duration::from_secs(30),
            || async {
                pods_of(&client, &ns)
                    .await
                    .iter()
                    .any(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("truthound.io/profilejob"))
                            .map(String::as_str)
                            == Some("second")
                            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .then_some(())
            },
        )
        .await;
        api.delete("second", &DeleteParams::background())
            .await
            .expect("delete");
        eventually(
            "the ProfileJob gone (finalizer released)",
            Duration::from_secs(60),
            || async {
                api.get_opt("second")
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        eventually(
            "its Jobs and pods garbage-collected",
            Duration::from_secs(60),
            || async {
                let jobs = jobs_of(&client, &ns).await;
                let pods = pods_of(&client, &ns).await;
                let of_second = |l: Option<&std::collections::BTreeMap<String, String>>| {
                    l.and_then(|l| l.get("truthound.io/profilejob"))
                        .map(String::as_str)
                        == Some("second")
                };
                (!jobs.iter().any(|j| of_second(j.metadata.labels.as_ref()))
                    && !pods.iter().any(|p| of_second(p.metadata.labels.as_ref())))
                .then_some(())
            },
        )
        .await;
        delete_namespace(&client, &ns).await;
    });
}

/// `ttlSecondsAfterFinished`: the finished ProfileJob is deleted with its children; the
/// profile stays.
#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    cluster();
    let bucket = new_bucket("kube-ttl");
    put_parquet_dataset(&bucket, 1, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "ttl").await;
        let op = Operator::start(&ns);
        create_pj(
            &client,
            &ns,
            profilejob("events", &bucket, json!({"ttlSecondsAfterFinished": 3})),
        )
        .await;
        wait_phase(&client, &op, "events", "Succeeded", 60).await;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &pj_resource());
        eventually(
            "the ProfileJob deleted after its TTL",
            Duration::from_secs(30),
            || async {
                api.get_opt("events")
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        eventually(
            "its Job garbage-collected",
            Duration::from_secs(60),
            || async { jobs_of(&client, &ns).await.is_empty().then_some(()) },
        )
        .await;
        assert!(
            !s3_get(&bucket, "profiles/events.json").is_empty(),
            "the profile stays"
        );
        delete_namespace(&client, &ns).await;
    });
}

/// The chart's ClusterRole for the operator (deploy/operator.yaml, the chart's defaults).
fn chart_operator_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo("deploy/operator.yaml")).expect("operator.yaml");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = <Value as serde::Deserialize>::deserialize(doc).expect("YAML");
        if v["kind"] == "ClusterRole" && v["metadata"]["name"] == OPERATOR_SA {
            return v["rules"].as_array().expect("rules").clone();
        }
    }
    panic!("no ClusterRole {OPERATOR_SA} in deploy/operator.yaml");
}

/// A ServiceAccount `sa` in the operator's namespace bound to a ClusterRole with `rules`, and
/// a kubeconfig with its token.
async fn identity_with_rules(
    client: &kube::Client,
    sa: &str,
    rules: Vec<Value>,
) -> std::path::PathBuf {
    apply_value(
        client,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": sa, "namespace": OPERATOR_NS}}),
        None,
        false,
    )
    .await
    .expect("ServiceAccount");
    apply_value(
        client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": sa}, "rules": rules}),
        None,
        false,
    )
    .await
    .expect("ClusterRole");
    apply_value(
        client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": sa},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": OPERATOR_NS}]}),
        None,
        false,
    )
    .await
    .expect("ClusterRoleBinding");
    let token = service_account_token(client, OPERATOR_NS, sa).await;
    let path = cluster().dir.join(format!("{sa}.kubeconfig"));
    write_token_kubeconfig(&cluster().admin, &token, &path);
    path
}

/// The chart's RBAC is least-privilege: with any one rule of its ClusterRole removed, a run that
/// needs it breaks (the operator reports the apiserver's Forbidden for exactly that resource),
/// so no rule is unused. pods/log serves only the Dask backend (the operator reads the runner
/// pod's log for each task's state): its rule is checked with a Dask run, the log served by the
/// node agent's kubelet endpoint. The ProfileSchedule rules are checked with a schedule: without
/// them it creates no run.
#[test]
fn removing_any_rule_of_the_charts_rbac_breaks_a_run() {
    cluster();
    let rules = chart_operator_rules();
    let bucket = new_bucket("kube-rbac");
    put_parquet_dataset(&bucket, 2, 500);
    put(&bucket, "bad/part-0.parquet", corrupt_pages_parquet());
    rt().block_on(async {
        let client = admin().await;
        let mut checks = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let resources: Vec<String> = rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .map(|r| r.as_str().expect("resource").to_string())
                .collect();
            let mut fewer = rules.clone();
            fewer.remove(i);
            let sa = format!("th-rbac-{i}");
            let kubeconfig = identity_with_rules(&client, &sa, fewer).await;
            let (ns, _agent) = test_namespace(&client, &format!("rbac-{i}")).await;
            let op = Operator::start_with(&ns, &kubeconfig, &[]);
            // The pods rule serves failed tasks (their exit codes and messages): its run fails
            // a task.
            // pods/log serves a Dask run's task states: without it, a failed task's cause is
            // unknown.
            let data = if resources == ["pods"] || resources == ["pods/log"] {
                "bad"
            } else {
                "data"
            };
            let backend = if resources == ["pods/log"] {
                json!({"backend": {"type": "dask", "dask": {"schedulerAddress": dask_scheduler()}}})
            } else {
                json!({})
            };
            let mut pj = profilejob("events", &bucket, backend);
            pj["spec"]["dataset"]["uri"] = json!(format!("s3://{bucket}/{data}/"));
            pj["spec"]["output"]["uri"] = json!(format!("s3://{bucket}/profiles/rbac-{i}.json"));
            if resources[0].starts_with("profileschedules") {
                // The ProfileSchedule rules serve schedules: a schedule of every second, whose
                // first run is what breaks.
                let schedule = json!({
                    "apiVersion": "truthound.io/v1alpha1",
                    "kind": "ProfileSchedule",
                    "metadata": {"name": "events"},
                    "spec": {"schedule": "* * * * * *", "jobTemplate": {"spec": pj["spec"]}},
                });
                apply_value(&client, schedule, Some(&ns), false)
                    .await
                    .expect("create ProfileSchedule");
            } else {
                create_pj(&client, &ns, pj).await;
            }
            checks.push((resources, ns, op, _agent));
        }
        for (resources, ns, op, _) in &checks {
            let resource = resources[0]
                .split('/')
                .next()
                .expect("resource")
                .to_string();
            let sub = resources[0].split('/').nth(1).map(str::to_string);
            // The apiserver names a subresource whole (`cannot get resource "pods/log"`).
            let whole = format!("\"{}\"", resources[0]);
            let want = |line: &str| {
                line.contains("forbidden")
                    && (line.contains(&whole)
                        || (line.contains(&format!("\"{resource}\""))
                            && sub.as_ref().is_none_or(|s| line.contains(s.as_str()))))
            };
            eventually(
                &format!("a Forbidden on {resources:?} in the operator's log ({ns})"),
                Duration::from_secs(60),
                || async { op.logs().lines().any(want).then_some(()) },
            )
            .await;
            if resources[0] == "pods/log" {
                // The run ends (its partials and the runner Job's end are seen without the
                // log), but the failed task's file and cause, which only the runner's log
                // says, are missing from the status (the Dask test shows them with the rule).
                let failed = wait_phase(&client, op, "events", "Failed", 60).await;
                let message = failed_message(&failed);
                assert!(
                    !message.contains("part-0.parquet") && !message.contains("BadData"),
                    "without pods/log the cause is still known: {message}"
                );
                continue;
            }
            if resource == "events" {
                // Events are what breaks: the run goes on (an event is never worth failing a
                // job for), but nobody can see what happened to it with `kubectl describe`.
                wait_phase(&client, op, "events", "Succeeded", 60).await;
                let events: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    ns,
                    &kube::discovery::ApiResource::from_gvk_with_plural(
                        &kube::core::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
                        "events",
                    ),
                );
                let listed = events.list(&ListParams::default()).await.expect("events");
                let about_the_job: Vec<_> = listed
                    .items
                    .iter()
                    .filter(|e| e.data["regarding"]["kind"] == "ProfileJob")
                    .collect();
                assert!(
                    about_the_job.is_empty(),
                    "no event recorded: {about_the_job:?}"
                );
                assert!(
                    listed
                        .items
                        .iter()
                        .any(|e| e.data["reportingController"] == "job-controller"),
                    "the Job controller's events are there (so events themselves work)"
                );
                continue;
            }
            if resource == "profileschedules" {
                // Without them a schedule creates no run (and says nothing in its status).
                tokio::time::sleep(Duration::from_secs(3)).await;
                let runs: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &pj_resource());
                let listed = runs.list(&ListParams::default()).await.expect("runs");
                assert!(
                    listed.items.is_empty(),
                    "without {resources:?} the schedule still ran"
                );
                continue;
            }
            // Everything else stops the run: give it the time a run takes, then check.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let pj = get_pj(&client, ns, "events").await;
            assert_ne!(
                pj["status"]["phase"], "Succeeded",
                "without {resources:?} the run still succeeded"
            );
        }
        for (_, ns, _, _) in &checks {
            delete_namespace(&client, ns).await;
        }
    });
}

/// With every rule, the chart's identity reads Secrets only by name: it cannot list or watch
/// them (so cannot find Secrets no ProfileJob names), nor read anything but its own kinds.
#[test]
fn the_operators_identity_reads_secrets_only_by_name() {
    cluster();
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "secrets").await;
        let op_client = truthound_e2e::kube_support::client(&cluster().operator).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(op_client.clone(), &ns);
        let err = secrets
            .list(&ListParams::default())
            .await
            .expect_err("listing Secrets must be forbidden");
        assert!(err.to_string().contains("forbidden"), "{err}");
        let all: Api<k8s_openapi::api::core::v1::Secret> = Api::all(op_client.clone());
        assert!(all.list(&ListParams::default()).await.is_err());
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(op_client.clone(), &ns);
        assert!(
            cms.list(&ListParams::default()).await.is_err(),
            "no ConfigMaps"
        );
        let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(op_client, &ns);
        assert!(
            deploys.list(&ListParams::default()).await.is_err(),
            "no Deployments"
        );
        delete_namespace(&client, &ns).await;
    });
}

/// `th submit --wait` and `th get|list|describe|wait|cancel` through a kubeconfig, as a user.
#[test]
fn th_submits_follows_and_cancels_profilejobs_through_a_kubeconfig() {
    cluster();
    let bucket = new_bucket("kube-th");
    put_parquet_dataset(&bucket, 2, 1000);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "th").await;
        let op = Operator::start(&ns);
        let admin = cluster().admin.to_str().expect("path").to_string();
        let endpoint = s3_endpoint();
        let th_as_user = |args: &[&str]| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["-n", &ns]);
            th(&all, &[("KUBECONFIG", admin.as_str())])
        };
        let uri = format!("s3://{bucket}/data/");
        let out_uri = format!("s3://{bucket}/profiles/submitted.json");
        let out = th_as_user(&[
            "submit",
            &uri,
            "-o",
            &out_uri,
            "--name",
            "submitted",
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--allow-http",
            "--allow-loopback-endpoint",
            "--credentials-secret",
            "s3-credentials",
            "--partitions",
            "2",
            "--wait",
            "--timeout",
            "120s",
            "-q",
        ]);
        assert!(
            out.status.success(),
            "th submit --wait: {}\n{}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout),
            tail(&op.logs(), 40)
        );
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/submitted.json")).expect("profile");
        assert_eq!(profile["row_count"], 2000);

        let out = th_as_user(&["get", "submitted"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("Succeeded") && text.contains("2/2"), "{text}");
        let out = th_as_user(&["list"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("submitted"),
            "{}",
            stderr(&out)
        );
        let out = th_as_user(&["describe", "submitted"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && text.contains("Succeeded"),
            "{text}{}",
            stderr(&out)
        );
        let out = th_as_user(&["wait", "submitted"]);
        assert!(out.status.success(), "{}", stderr(&out));

        // Cancel a running job: it is deleted with its workers.
        let out = th_as_user(&[
            "submit",
            &uri,
            "-o",
            &format!("s3://{bucket}/profiles/cancelled.json"),
            "--name",
            "cancelled",
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--allow-http",
            "--allow-loopback-endpoint",
            "--credentials-secret",
            "s3-credentials",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = th_as_user(&["cancel", "cancelled"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &pj_resource());
        eventually(
            "the cancelled job gone",
            Duration::from_secs(60),
            || async {
                api.get_opt("cancelled")
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        // A job that does not exist: a clear error naming it, exit code not 0.
        let out = th_as_user(&["get", "no-such-job"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("no-such-job"), "{}", stderr(&out));
        delete_namespace(&client, &ns).await;
    });
}

/// Every scenario of chart values that scripts/check-deploy.sh renders and lints (defaults, HA
/// with leader election, watchNamespace's Role mode, NetworkPolicy, bring-your-own RBAC, ...) is
/// accepted as it stands by the apiserver with server-side apply, kind by kind. The Prometheus
/// operator's kinds (ServiceMonitor, PrometheusRule) need its CRDs, which this cluster does not
/// have: check-deploy.sh validates those against their schemas.
#[test]
fn every_rendered_chart_scenario_applies_on_the_apiserver() {
    cluster();
    let script = repo("scripts/check-deploy.sh");
    let out = std::process::Command::new(&script)
        .args(["--render", "all"])
        .output()
        .expect("check-deploy.sh runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let scenarios: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(scenarios.len() >= 5, "{scenarios:?}");
    rt().block_on(async {
        let client = admin().await;
        for scenario in &scenarios {
            let out = std::process::Command::new(&script)
                .args(["--render", scenario])
                .output()
                .expect("check-deploy.sh runs");
            assert!(out.status.success(), "{scenario}: {}", stderr(&out));
            let mut objects = Vec::new();
            for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
                let v = <Value as serde::Deserialize>::deserialize(doc).expect("YAML");
                let kind = v["kind"].as_str().unwrap_or_default();
                if !v.is_null() && !matches!(kind, "ServiceMonitor" | "PrometheusRule") {
                    objects.push(v);
                }
            }
            assert!(!objects.is_empty(), "{scenario}: nothing rendered");
            // The namespaces they name exist (a dry run does not create them).
            let mut namespaces: Vec<String> = objects
                .iter()
                .filter_map(|o| o["metadata"]["namespace"].as_str().map(str::to_string))
                .collect();
            namespaces.sort();
            namespaces.dedup();
            for ns in namespaces {
                apply_value(
                    &client,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    None,
                    false,
                )
                .await
                .expect("namespace");
            }
            for o in objects {
                let what = format!("{scenario}: {} {}", o["kind"], o["metadata"]["name"]);
                apply_value(&client, o, None, true)
                    .await
                    .unwrap_or_else(|e| panic!("{what} refused: {e}"));
            }
        }
    });
}

/// The message of a ProfileJob's Failed condition.
fn failed_message(pj: &Value) -> String {
    pj["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Failed")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no Failed condition: {:#}", pj["status"]))
        .to_string()
}

/// `th logs` reads each task's worker log through the apiserver's pods/log (served by the node
/// agent's kubelet endpoint): every task under its own header, one task alone with `--task`,
/// the tail of each with `--tail`, and with `--follow` every line prefixed by its task.
#[test]
fn th_logs_shows_each_tasks_worker_log() {
    cluster();
    let bucket = new_bucket("kube-logs");
    put_parquet_dataset(&bucket, 2, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, agent) = test_namespace(&client, "logs").await;
        let op = Operator::start(&ns);
        create_pj(&client, &ns, profilejob("events", &bucket, json!({}))).await;
        wait_phase(&client, &op, "events", "Succeeded", 60).await;

        // Each task's pod and what its worker wrote, as the agent has it on disk.
        let mut tasks: Vec<(u32, String, String)> = pods_of(&client, &ns)
            .await
            .into_iter()
            .filter_map(|p| {
                let labels = p.metadata.labels.as_ref()?;
                let i = labels.get("batch.kubernetes.io/job-completion-index")?;
                let name = p.metadata.name.clone()?;
                let log = agent.container_log(&ns, &name, "worker");
                Some((i.parse().ok()?, name, log))
            })
            .collect();
        tasks.sort();
        assert!(tasks.len() >= 2, "several tasks, one pod each: {tasks:?}");
        for (i, pod, log) in &tasks {
            // The worker's own log names its task: what is shown under a task is that task's.
            assert!(
                log.contains(&format!("\"task\":{i}")),
                "task {i} (pod {pod}) logged: {log}"
            );
        }
        let admin = cluster().admin.to_str().expect("path").to_string();
        let th_logs = |args: &[&str]| {
            let mut all = vec!["logs", "events", "-n", &ns];
            all.extend(args);
            let out = th(&all, &[("KUBECONFIG", admin.as_str())]);
            assert!(out.status.success(), "th {all:?}: {}", stderr(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let with_newline = |s: &str| {
            if s.is_empty() || s.ends_with('\n') {
                s.to_string()
            } else {
                format!("{s}\n")
            }
        };

        let want: String = tasks
            .iter()
            .map(|(i, pod, log)| format!("==> task {i} (pod {pod}) <==\n{}", with_newline(log)))
            .collect();
        assert_eq!(th_logs(&[]), want);
        assert_eq!(th_logs(&["--task", "1"]), with_newline(&tasks[1].2));
        let want: String = tasks
            .iter()
            .map(|(i, pod, log)| {
                let last = log.lines().last().unwrap_or("");
                format!("==> task {i} (pod {pod}) <==\n{last}\n")
            })
            .collect();
        assert_eq!(th_logs(&["--tail", "1"]), want);

        // Following finished pods: every line once, prefixed by its task, and then the end.
        let followed = th_logs(&["--follow"]);
        for (i, _, log) in &tasks {
            let prefix = format!("[task {i}] ");
            let mine: Vec<&str> = followed
                .lines()
                .filter_map(|l| l.strip_prefix(prefix.as_str()))
                .collect();
            assert_eq!(
                mine,
                log.lines().collect::<Vec<_>>(),
                "task {i} in {followed}"
            );
        }
        let total: usize = tasks.iter().map(|(_, _, l)| l.lines().count()).sum();
        assert_eq!(followed.lines().count(), total, "{followed}");
        delete_namespace(&client, &ns).await;
    });
}

/// A Dask ProfileJob on the real control plane: the operator's runner Job runs (its image's
/// python and th-worker, as the agent maps them) against the test Dask cluster, the operator
/// reads the runner pod's log through pods/log for each task's state, and the run succeeds with
/// every task counted; a run over bad data fails naming the file and the cause, which only the
/// runner's log says.
#[test]
fn a_dask_profilejob_runs_through_its_runner_job_and_its_pods_log() {
    cluster();
    let scheduler = dask_scheduler();
    let bucket = new_bucket("kube-dask");
    put_parquet_dataset(&bucket, 2, 500);
    put(&bucket, "bad/part-0.parquet", corrupt_pages_parquet());
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "dask").await;
        let op = Operator::start(&ns);
        let pj = profilejob(
            "events",
            &bucket,
            json!({"backend": {"type": "dask", "dask": {"schedulerAddress": scheduler}}}),
        );
        create_pj(&client, &ns, pj).await;
        let done = wait_phase(&client, &op, "events", "Succeeded", 90).await;
        let tasks = &done["status"]["tasks"];
        let total = tasks["total"].as_u64().expect("tasks.total");
        assert!(total >= 2, "{tasks}");
        assert_eq!(tasks["succeeded"].as_u64(), Some(total), "{tasks}");
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_eq!(profile["row_count"], 1000);

        // The runner ran as a pod of its Job, with the Dask image, and its log is what the
        // operator read: one line per task state.
        let runners: Vec<Pod> = pods_of(&client, &ns).await;
        assert_eq!(runners.len(), 1, "only the runner's pod");
        let runner = &runners[0];
        let image = runner.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(image.as_deref(), Some(DASK_IMAGE));
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let log = pods
            .logs(
                runner.metadata.name.as_deref().unwrap(),
                &kube::api::LogParams::default(),
            )
            .await
            .expect("the runner's log");
        for i in 0..total {
            assert!(
                log.contains(&format!("{{\"task\":{i},\"state\":\"succeeded\"")),
                "task {i} in {log}"
            );
        }
        assert!(
            !op.logs().contains("cannot read the runner's log"),
            "{}",
            tail(&op.logs(), 40)
        );

        // A task with bad data: its failure, with the file and the cause, is known only from the
        // runner's log.
        let mut bad = profilejob(
            "bad",
            &bucket,
            json!({"backend": {"type": "dask", "dask": {"schedulerAddress": scheduler}}}),
        );
        bad["spec"]["dataset"]["uri"] = json!(format!("s3://{bucket}/bad/"));
        bad["spec"]["output"]["uri"] = json!(format!("s3://{bucket}/profiles/bad.json"));
        create_pj(&client, &ns, bad).await;
        let failed = wait_phase(&client, &op, "bad", "Failed", 90).await;
        let message = failed_message(&failed);
        assert!(message.contains("part-0.parquet"), "{message}");
        assert!(message.contains("BadData"), "{message}");
        delete_namespace(&client, &ns).await;
    });
}

/// One request a [`WebhookReceiver`] got.
#[derive(Clone, Debug)]
struct Received {
    status: u16,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1 that is down (nothing listening) for `down`, then answers
/// its first request 503 and the others 200, recording every request.
struct WebhookReceiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl WebhookReceiver {
    fn start(down: Duration) -> WebhookReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let port = free_port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = got.clone();
        std::thread::spawn(move || {
            std::thread::sleep(down);
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut headers = Vec::new();
                let mut line = String::new();
                let _ = reader.read_line(&mut line); // request line
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = if n == 0 { 503 } else { 200 };
                record.lock().unwrap().push(Received {
                    status,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    raw: body,
                });
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        WebhookReceiver { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// `spec.notify`: a webhook receiver that is down for the first 30 s of a run (connection
/// refused), then answers 503 once, still gets the Started and Succeeded notifications, once
/// each and in that order (Succeeded waits for Started's retries), signed with the Secret's
/// HMAC key and carrying its header; the attempts are on record in the status, the events and
/// the metrics, and the job itself is not held up by them.
#[test]
fn a_webhook_down_for_30_s_still_gets_the_start_and_success_notifications() {
    cluster();
    let bucket = new_bucket("kube-notify");
    put_parquet_dataset(&bucket, 2, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "notify").await;
        apply_value(
            &client,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "hook-keys"},
                "stringData": {"hmac": "hmac-k3y", "token": "Bearer t0ken\n"},
            }),
            Some(&ns),
            false,
        )
        .await
        .expect("Secret");
        let hook = WebhookReceiver::start(Duration::from_secs(30));
        let op = Operator::start(&ns);
        let t0 = std::time::Instant::now();
        create_pj(
            &client,
            &ns,
            profilejob(
                "events",
                &bucket,
                json!({"notify": {"webhooks": [{
                    "url": hook.url("/hooks/T000/secret-path"),
                    "hmacSecretRef": {"name": "hook-keys", "key": "hmac"},
                    "headerSecretRef": {"name": "hook-keys", "key": "token"},
                }]}}),
            ),
        )
        .await;
        let done = wait_phase(&client, &op, "events", "Succeeded", 60).await;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the run is not held up by its notifications ({:?})",
            t0.elapsed()
        );
        let pj = eventually(
            "both notifications delivered",
            Duration::from_secs(150),
            || async {
                let pj = get_pj(&client, &ns, "events").await;
                let n = pj["status"]["notifications"].as_array().cloned()?;
                (n.len() == 2 && n.iter().all(|n| n["state"] == "Delivered")).then_some(pj)
            },
        )
        .await;
        let rec = pj["status"]["notifications"].as_array().unwrap();
        let events: Vec<&str> = rec.iter().map(|n| n["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["Started", "Succeeded"], "{rec:?}");
        assert!(
            rec[0]["attempts"].as_u64().unwrap() >= 2,
            "the receiver was down when Started was first sent: {rec:?}"
        );

        let got = hook.received();
        let ok: Vec<&Received> = got.iter().filter(|r| r.status == 200).collect();
        assert_eq!(ok.len(), 2, "each delivered once: {got:?}");
        assert!(got.iter().any(|r| r.status == 503), "the 503 was retried");
        let uid = done["metadata"]["uid"].as_str().unwrap();
        for (r, event) in ok.iter().zip(["Started", "Succeeded"]) {
            assert_eq!(r.header("X-Truthound-Event"), Some(event));
            assert_eq!(
                r.header("X-Truthound-Delivery"),
                Some(format!("{uid}/0/{event}").as_str())
            );
            assert_eq!(r.header("Authorization"), Some("Bearer t0ken"));
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hmac-k3y");
            let sig = r.header("X-Truthound-Signature").expect("signed");
            let hex = sig.strip_prefix("sha256=").expect("sha256=");
            let tag: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            assert!(
                ring::hmac::verify(&key, &r.raw, &tag).is_ok(),
                "the signature is the body's HMAC-SHA256 under the Secret's key"
            );
            assert_eq!(r.body["event"], event);
            assert_eq!(r.body["kind"], "ProfileJobNotification");
            assert_eq!(r.body["job"]["name"], "events");
            assert_eq!(r.body["job"]["namespace"], ns.as_str());
        }
        let success = &ok[1].body;
        assert_eq!(success["phase"], "Succeeded");
        assert_eq!(success["rows"], 1000);
        assert_eq!(
            success["profileUri"],
            format!("s3://{bucket}/profiles/events.json")
        );
        assert!(success["durationSeconds"].as_f64().unwrap() > 0.0);

        // The failed attempts are Events (without the URL's path), and metrics.
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::discovery::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
                "events",
            ),
        );
        let listed = api.list(&ListParams::default()).await.expect("events");
        let reasons: Vec<String> = listed
            .items
            .iter()
            .filter_map(|e| e.data["reason"].as_str().map(str::to_owned))
            .collect();
        assert!(
            reasons.iter().any(|r| r == "NotificationFailed"),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r == "NotificationDelivered"),
            "{reasons:?}"
        );
        let notes = serde_json::to_string(&listed.items).unwrap();
        assert!(
            !notes.contains("secret-path"),
            "the hook's path is not shown"
        );
        let metrics = http_get(op.metrics, "/metrics");
        let failed = metrics
            .lines()
            .find(|l| l.starts_with("truthound_notifications_total{result=\"Failed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(failed >= 2.0, "{metrics}");
        delete_namespace(&client, &ns).await;
    });
}

/// A plain HTTP GET of 127.0.0.1:`port``path`; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(conn, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").expect("request");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("response");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// The keys under `prefix` in the test bucket.
async fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let s = store(bucket);
    let p = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = s
        .list(Some(&p))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// Work data (`.truthound/<uid>/`: plan, partials, task table) holds exact values: it is deleted
/// when a run succeeds, kept with `spec.output.keepWorkData`, and deleted with a ProfileJob
/// deleted mid-run, whose work-data finalizer holds the deletion until it is gone.
#[test]
fn work_data_is_deleted_after_success_kept_when_asked_and_deleted_with_the_job() {
    cluster();
    let bucket = new_bucket("kube-workdata");
    put_parquet_dataset(&bucket, 3, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "workdata").await;
        let op = Operator::start(&ns);
        create_pj(&client, &ns, profilejob("gone", &bucket, json!({}))).await;
        create_pj(
            &client,
            &ns,
            profilejob("kept", &bucket, json!({"output": {"keepWorkData": true}})),
        )
        .await;
        let gone = wait_phase(&client, &op, "gone", "Succeeded", 90).await;
        let kept = wait_phase(&client, &op, "kept", "Succeeded", 90).await;
        let work = |pj: &Value| {
            format!(
                "profiles/.truthound/{}/",
                pj["metadata"]["uid"].as_str().expect("uid")
            )
        };

        let guarded = |pj: &Value| {
            pj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "truthound.io/work-data"))
        };
        let pj = eventually(
            "the successful run's work data deleted, and its finalizer gone",
            Duration::from_secs(30),
            || async {
                let pj = get_pj(&client, &ns, "gone").await;
                (pj["status"]["workData"]["state"] == "Deleted" && !guarded(&pj)).then_some(pj)
            },
        )
        .await;
        assert_eq!(s3_keys(&bucket, &work(&gone)).await, Vec::<String>::new());
        assert!(!s3_get(&bucket, "profiles/gone.json").is_empty(), "the profile stays");
        assert!(
            pj["status"]["workData"]["message"]
                .as_str()
                .unwrap()
                .contains("deleted"),
            "{}",
            pj["status"]["workData"]
        );

        let kept_keys = s3_keys(&bucket, &work(&kept)).await;
        assert!(
            kept_keys.iter().any(|k| k.ends_with("/plan"))
                && kept_keys.iter().filter(|k| k.contains("/partials/")).count() == 3,
            "{kept_keys:?}"
        );
        let pj = get_pj(&client, &ns, "kept").await;
        assert_eq!(pj["status"]["workData"]["state"], "Kept");

        // Deleted mid-run: the finalizer holds the ProfileJob until its work data is gone.
        create_pj(
            &client,
            &ns,
            profilejob(
                "deleted",
                &bucket,
                json!({"partitioning": {"partitions": 3}, "backend": {"local": {"parallelism": 1}}}),
            ),
        )
        .await;
        let running = eventually(
            "a partial written",
            Duration::from_secs(60),
            || async {
                let pj = get_pj(&client, &ns, "deleted").await;
                let uid = pj["metadata"]["uid"].as_str()?.to_owned();
                let keys = s3_keys(&bucket, &format!("profiles/.truthound/{uid}/partials/")).await;
                (!keys.is_empty()).then_some(pj)
            },
        )
        .await;
        assert!(
            running["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "truthound.io/work-data")),
            "{}",
            running["metadata"]
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &pj_resource());
        api.delete("deleted", &DeleteParams::default())
            .await
            .expect("delete");
        eventually("the ProfileJob gone", Duration::from_secs(60), || async {
            api.get_opt("deleted").await.expect("get").is_none().then_some(())
        })
        .await;
        // Workers still shutting down could write a last partial after the deletion: look a
        // little later too.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            s3_keys(&bucket, &work(&running)).await,
            Vec::<String>::new(),
            "the deleted job's work data went with it"
        );
        delete_namespace(&client, &ns).await;
    });
}

/// Worker health: workers report their resident memory with their progress, and one whose
/// container has a memory limit it nearly fills (here 16Mi, which th-worker's own footprint
/// exceeds; the test node does not enforce limits) is named in the status and an Event, with
/// what to change, before the kernel would have killed it.
#[test]
fn a_worker_near_its_memory_limit_is_warned_of_in_the_status_and_an_event() {
    cluster();
    let bucket = new_bucket("kube-memory");
    put_parquet_dataset(&bucket, 2, 5000);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "memory").await;
        let op = Operator::start(&ns);
        create_pj(
            &client,
            &ns,
            profilejob(
                "events",
                &bucket,
                json!({"backend": {"local": {"resources": {"limits": {"memory": "16Mi"}}}}}),
            ),
        )
        .await;
        let pj = wait_phase(&client, &op, "events", "Succeeded", 90).await;
        let m = &pj["status"]["progress"]["workerMemory"];
        assert_eq!(m["limitBytes"], 16 << 20, "{}", pj["status"]);
        assert!(m["rssBytes"].as_u64().unwrap() > 16 << 20, "{m}");
        assert_eq!(m["peakLevel"], "Critical", "{m}");
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::discovery::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
                "events",
            ),
        );
        let listed = api.list(&ListParams::default()).await.expect("events");
        let notes: Vec<String> = listed
            .items
            .iter()
            .filter(|e| e.data["reason"] == "WorkerMemoryHigh")
            .filter_map(|e| e.data["note"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(notes.len(), 1, "one event for the level reached: {notes:?}");
        assert!(notes[0].contains("critical"), "{notes:?}");
        assert!(
            notes[0].contains("spec.backend.local.resources"),
            "{notes:?}"
        );
        delete_namespace(&client, &ns).await;
    });
}

/// Issue 15's incremental run on the real control plane and S3: a 20-file dataset profiled
/// with `spec.output.cacheUri`, then 2 files changed, 1 added and 1 deleted: the second
/// ProfileJob's worker Job has exactly 3 completions (3 pods ran), `status.tasks.reused` is 17,
/// and its profile equals `th profile` of the changed files.
#[test]
fn a_second_profilejob_over_changed_files_runs_only_their_tasks() {
    cluster();
    let bucket = new_bucket("kube-incr");
    let local = tempfile::tempdir().expect("temp dir");
    let write = |f: i64, rows: std::ops::Range<i64>| {
        let bytes = parquet_bytes(&table(rows), 300);
        std::fs::write(local.path().join(format!("part-{f:02}.parquet")), &bytes).expect("write");
        put(&bucket, &format!("data/part-{f:02}.parquet"), bytes);
    };
    for f in 0..20 {
        write(f, f * 100..(f + 1) * 100);
    }
    let extra = json!({
        "backend": {"type": "local", "local": {"parallelism": 4}},
        "partitioning": {"strategy": "row_based", "partitions": 4},
        "output": {"cacheUri": format!("s3://{bucket}/cache/")},
    });
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "incr").await;
        let op = Operator::start(&ns);
        let run = |name: &'static str| {
            let (client, ns, extra, bucket) = (client.clone(), ns.clone(), extra.clone(), &bucket);
            let op = &op;
            async move {
                create_pj(&client, &ns, profilejob(name, bucket, extra)).await;
                let pj = wait_phase(&client, op, name, "Succeeded", 180).await;
                let worker: Vec<Job> = jobs_of(&client, &ns)
                    .await
                    .into_iter()
                    .filter(|j| j.metadata.name.as_deref() == Some(&format!("{name}-w1")))
                    .collect();
                let pods = pods_of(&client, &ns)
                    .await
                    .into_iter()
                    .filter(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("batch.kubernetes.io/job-name"))
                            .is_some_and(|j| *j == format!("{name}-w1"))
                    })
                    .count();
                (pj, worker, pods)
            }
        };

        let (pj, worker, pods) = run("day1").await;
        assert_eq!(pj["status"]["tasks"]["total"], 20, "{:#}", pj["status"]);
        assert_eq!(
            worker[0].spec.as_ref().and_then(|s| s.completions),
            Some(20)
        );
        assert_eq!(pods, 20);

        // Two files changed, one added, one deleted (the support's `put` runs a runtime of
        // its own, off this one's worker thread).
        tokio::task::block_in_place(|| {
            write(3, 5000..5150);
            write(11, 6000..6040);
            write(20, 7000..7100);
        });
        std::fs::remove_file(local.path().join("part-05.parquet")).expect("rm");
        {
            use object_store::ObjectStoreExt;
            store(&bucket)
                .delete(&object_store::path::Path::from("data/part-05.parquet"))
                .await
                .expect("delete");
        }

        let (pj, worker, pods) = run("day2").await;
        let status = &pj["status"];
        assert_eq!(status["tasks"]["total"], 20, "{status:#}");
        assert_eq!(status["tasks"]["reused"], 17, "{status:#}");
        assert_eq!(status["tasks"]["succeeded"], 20, "{status:#}");
        let job = &worker[0];
        assert_eq!(job.spec.as_ref().and_then(|s| s.completions), Some(3));
        assert_eq!(
            job.status.as_ref().and_then(|s| s.succeeded),
            Some(3),
            "three task pods ran"
        );
        assert_eq!(pods, 3);
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/day2.json")).expect("profile JSON");
        assert_eq!(profile["partitioning"]["tasks_reused"], 17);
        // The event log says which tasks were reused and which ran.
        let log = event_log(&bucket, "profiles/day2.json");
        let tasks_of = |k: EventKind| -> std::collections::BTreeSet<u32> {
            log.iter()
                .filter(|e| e.event == k)
                .filter_map(|e| e.task)
                .collect()
        };
        let (reused, ran) = (
            tasks_of(EventKind::TaskReused),
            tasks_of(EventKind::TaskFinished),
        );
        assert_eq!((reused.len(), ran.len()), (17, 3), "{log:#?}");
        assert!(reused.is_disjoint(&ran), "{log:#?}");
        assert_eq!(profile["row_count"], 2000 - 100 + 50 - 60 + 100);
        assert_same_exact(&profile, &local_profile(local.path()));
        delete_namespace(&client, &ns).await;
    });
}
