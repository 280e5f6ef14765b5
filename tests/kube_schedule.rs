//! ProfileSchedules on a real Kubernetes control plane (scripts/kube-cluster.sh), with the node
//! agent running the runs' worker pods, a real S3 server and `th-operator` as a process with the
//! chart's ServiceAccount and RBAC: a schedule of seconds runs again and again, never two runs at
//! once with `Forbid`, keeps its history limits, and says its last and next times; and a run over
//! changed data is drift, naming the changed column.

// The shared harness of the control-plane tests; this binary uses only part of it.
#[allow(dead_code)]
mod control_plane;

use control_plane::*;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use truthound_e2e::*;
use truthound_operator::ProfileJob;
use truthound_operator::schedule::ProfileSchedule;

fn rt() -> tokio::runtime::Runtime {
    multi_thread_rt()
}

/// A ProfileSchedule whose runs profile `s3://bucket/data/`; `extra` is merged into its spec and
/// `job` into the template's ProfileJob spec.
fn schedule(name: &str, bucket: &str, extra: Value, job: Value) -> Value {
    let mut template = profilejob("unused", bucket, job)["spec"].clone();
    template["output"]["uri"] = json!(format!("s3://{bucket}/profiles/{name}-{{unix}}.json"));
    let mut s = json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileSchedule",
        "metadata": {"name": name},
        "spec": {"jobTemplate": {"spec": template}},
    });
    merge(&mut s["spec"], extra);
    s
}

async fn runs_of(client: &kube::Client, ns: &str, schedule: &str) -> Vec<ProfileJob> {
    let api: Api<ProfileJob> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("truthound.io/schedule={schedule}")))
        .await
        .expect("list ProfileJobs")
        .items
}

fn phase(pj: &ProfileJob) -> &'static str {
    pj.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.name())
        .unwrap_or("")
}

fn finished(pj: &ProfileJob) -> bool {
    matches!(phase(pj), "Succeeded" | "Failed")
}

async fn event_reasons(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| e.data["regarding"]["kind"] == "ProfileSchedule")
        .map(|e| {
            (
                e.data["reason"].as_str().unwrap_or("").to_string(),
                e.data["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Every 10 s, `Forbid`, two successful runs kept. Each run takes longer than the interval (the
/// slow worker image sleeps 12 s per task), so every other due time finds a run active: the test
/// polls the runs throughout and fails on any moment with two active at once. It waits for three
/// successful runs, then checks that only the two newest are kept, each an owned ProfileJob with
/// its own time-templated profile in S3, that the status names the last and next times, and
/// that after `suspend` no run starts.
#[test]
fn a_schedule_runs_three_times_keeps_its_history_and_never_overlaps_with_forbid() {
    cluster();
    let bucket = new_bucket("kube-sched");
    let _local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "sched").await;
        let mut op = Operator::start(&ns);
        let s = schedule(
            "every10s",
            &bucket,
            json!({
                "schedule": "*/10 * * * * *",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 2,
                "failedJobsHistoryLimit": 1,
            }),
            json!({"backend": {"type": "local", "local": {
                "image": SLOW_WORKER_IMAGE, "parallelism": 3,
                "env": [{"name": "TH_TEST_WORKER_DELAY", "value": "12"}]}}}),
        );
        apply_value(&client, s, Some(&ns), false)
            .await
            .expect("create ProfileSchedule");

        let start = Instant::now();
        let mut succeeded: BTreeSet<String> = BTreeSet::new();
        let mut created: BTreeSet<String> = BTreeSet::new();
        while succeeded.len() < 3 {
            let runs = runs_of(&client, &ns, "every10s").await;
            let active: Vec<&str> = runs
                .iter()
                .filter(|r| !finished(r) && r.metadata.deletion_timestamp.is_none())
                .map(|r| r.metadata.name.as_deref().unwrap_or(""))
                .collect();
            assert!(
                active.len() <= 1,
                "two runs active at once with Forbid: {active:?}\noperator log:\n{}",
                tail(&op.logs(), 60)
            );
            for r in &runs {
                let name = r.metadata.name.clone().unwrap_or_default();
                assert_ne!(phase(r), "Failed", "run {name} failed: {:?}", r.status);
                if phase(r) == "Succeeded" {
                    succeeded.insert(name.clone());
                }
                created.insert(name);
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "three successful runs not within 180 s: {succeeded:?}\noperator log:\n{}",
                tail(&op.logs(), 60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        op.assert_running();

        // History: of the (at least) three successful runs, only the two newest are kept.
        let newest: Vec<String> = succeeded.iter().rev().take(2).cloned().collect();
        eventually(
            "only the two newest successful runs kept",
            Duration::from_secs(30),
            || async {
                let kept: BTreeSet<String> = runs_of(&client, &ns, "every10s")
                    .await
                    .iter()
                    .filter(|r| phase(r) == "Succeeded")
                    .filter_map(|r| r.metadata.name.clone())
                    .collect();
                (kept.len() == 2 && newest.iter().all(|n| kept.contains(n))).then_some(())
            },
        )
        .await;

        // Each run: owned by the schedule (garbage-collected with it), named by its time, its
        // profile where the template put it.
        let schedules: Api<ProfileSchedule> = Api::namespaced(client.clone(), &ns);
        let ps = schedules
            .get("every10s")
            .await
            .expect("get ProfileSchedule");
        let uid = ps.metadata.uid.clone().expect("uid");
        for r in runs_of(&client, &ns, "every10s").await {
            let owner = &r.metadata.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("ProfileSchedule", uid.as_str(), Some(true))
            );
            let name = r.metadata.name.clone().unwrap_or_default();
            let secs: i64 = name
                .strip_prefix("every10s-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("run name {name}"));
            assert_eq!(secs % 10, 0, "named by its scheduled second: {name}");
            assert_eq!(
                r.spec.output.uri,
                format!("s3://{bucket}/profiles/every10s-{secs}.json")
            );
            if phase(&r) == "Succeeded" {
                let p: Value = serde_json::from_slice(&s3_get(
                    &bucket,
                    &format!("profiles/every10s-{secs}.json"),
                ))
                .expect("profile JSON");
                assert_eq!(p["row_count"], 6000);
            }
        }

        // The status: last and next times, the last success, Ready.
        let status = ps.status.clone().expect("status");
        let last = status.last_schedule_time.clone().expect("lastScheduleTime");
        let next = status.next_schedule_time.clone().expect("nextScheduleTime");
        assert!(next > last, "next {next} after last {last}");
        assert!(status.last_successful_time.is_some(), "{status:?}");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{status:?}"
        );
        // Forbid held back at least one due time (runs take longer than the interval), and said
        // so; the runs were created and pruned with events.
        let reasons: Vec<String> = event_reasons(&client, &ns)
            .await
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        for want in ["SuccessfulCreate", "JobAlreadyActive", "SuccessfulDelete"] {
            assert!(reasons.iter().any(|r| r == want), "{want} in {reasons:?}");
        }

        // Suspended: no new run, and no next time.
        schedules
            .patch(
                "every10s",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await
            .expect("suspend");
        eventually(
            "no next time while suspended",
            Duration::from_secs(20),
            || async {
                let ps = schedules.get("every10s").await.ok()?;
                let st = ps.status?;
                (st.next_schedule_time.is_none()
                    && st.observed_generation == ps.metadata.generation)
                    .then_some(())
            },
        )
        .await;
        let before: BTreeSet<String> = runs_of(&client, &ns, "every10s")
            .await
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        tokio::time::sleep(Duration::from_secs(12)).await;
        let after: BTreeSet<String> = runs_of(&client, &ns, "every10s")
            .await
            .into_iter()
            .filter_map(|r| r.metadata.name)
            .collect();
        assert!(
            after.is_subset(&before),
            "a run started while suspended: {:?}",
            after.difference(&before).collect::<Vec<_>>()
        );
        op.assert_running();
        delete_namespace(&client, &ns).await;
    });
}

/// Rows `range` of the test table with its `value` column moved (×3 + 500): the one column whose
/// distribution changes.
fn changed_table(range: std::ops::Range<i64>) -> arrow::record_batch::RecordBatch {
    use arrow::array::{Array, ArrayRef, Float64Array};
    let b = table(range);
    let i = b.schema().index_of("value").expect("value column");
    let old = b
        .column(i)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("Float64");
    let moved: Float64Array = old.iter().map(|v| v.map(|x| x * 3.0 + 500.0)).collect();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[i] = std::sync::Arc::new(moved);
    arrow::record_batch::RecordBatch::try_new(b.schema(), cols).expect("batch")
}

/// Drift on the real control plane: a schedule's first successful run is the baseline; then the
/// data's `value` column changes, and the first run over the changed data is compared with the
/// last run over the old: a Warning `DriftDetected` on the schedule names `value` and none of
/// the unchanged columns, and `status.lastDrift` says the same. Runs over unchanged data are
/// `NoDrift`.
#[test]
fn a_run_over_changed_data_is_drift_naming_the_changed_column() {
    cluster();
    let bucket = new_bucket("kube-drift");
    let _local = dataset(&bucket);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "drift").await;
        let mut op = Operator::start(&ns);
        let s = schedule(
            "drift",
            &bucket,
            json!({"schedule": "*/10 * * * * *", "concurrencyPolicy": "Forbid"}),
            json!({"backend": {"type": "local", "local": {"parallelism": 3}}}),
        );
        apply_value(&client, s, Some(&ns), false)
            .await
            .expect("create ProfileSchedule");
        let schedules: Api<ProfileSchedule> = Api::namespaced(client.clone(), &ns);
        // The first success becomes the baseline.
        eventually("a baseline run", Duration::from_secs(120), || async {
            let st = schedules.get("drift").await.ok()?.status?;
            st.last_profile.map(|_| ())
        })
        .await;
        // Then the data changes, file by file (the test S3 client runs a runtime of its own).
        tokio::task::block_in_place(|| {
            for f in 0..3 {
                let bytes = parquet_bytes(&changed_table(f * 2000..(f + 1) * 2000), 300);
                put(&bucket, &format!("data/part-{f}.parquet"), bytes);
            }
        });
        let note = eventually(
            "a DriftDetected event",
            Duration::from_secs(120),
            || async {
                event_reasons(&client, &ns)
                    .await
                    .into_iter()
                    .find(|(r, _)| r == "DriftDetected")
                    .map(|(_, note)| note)
            },
        )
        .await;
        assert!(note.contains("value"), "{note}");
        for unchanged in ["id", "kind", "email"] {
            assert!(
                !note.contains(&format!(" {unchanged} "))
                    && !note.contains(&format!(" {unchanged},")),
                "{unchanged} is not drift: {note}"
            );
        }
        let st = schedules
            .get("drift")
            .await
            .expect("schedule")
            .status
            .expect("status");
        let drift = st.last_drift.expect("lastDrift");
        assert_eq!(drift.drifted_columns, ["value"], "{drift:?}");
        assert_ne!(drift.job, drift.previous_job);
        // Scheduled runs keep their profiles' state, so drift compares the sketches.
        let run = runs_of(&client, &ns, "drift")
            .await
            .into_iter()
            .find(|pj| pj.metadata.name.as_deref() == Some(drift.job.as_str()))
            .expect("the compared run");
        assert_eq!(run.spec.profile.keep_state, Some(true));
        let key = run
            .spec
            .output
            .uri
            .strip_prefix(&format!("s3://{bucket}/"))
            .expect("the run's output in the bucket")
            .to_string();
        let profile: Value = serde_json::from_slice(&s3_get(&bucket, &key)).expect("profile");
        assert!(!profile["state"].is_null(), "the profile embeds its state");
        op.assert_running();
        delete_namespace(&client, &ns).await;
    });
}

/// What the apiserver and the operator say of a schedule's spec: the template's dataset may
/// change (each run is a new ProfileJob; the ProfileJob's immutability rules are not in the
/// template), a plain path is refused by the CRD's rules as in a ProfileJob, and a schedule the
/// operator cannot read (an unknown output placeholder) is `Ready` False, `InvalidSpec`, with a
/// warning Event, and creates no run.
#[test]
fn the_apiserver_and_the_operator_check_a_schedules_spec() {
    cluster();
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "sched-spec").await;
        let mut op = Operator::start(&ns);
        let s = schedule(
            "spec",
            "bucket",
            json!({"schedule": "@daily", "suspend": true}),
            json!({}),
        );
        apply_value(&client, s.clone(), Some(&ns), false)
            .await
            .expect("create ProfileSchedule");
        let mut changed = s.clone();
        changed["spec"]["jobTemplate"]["spec"]["dataset"]["uri"] = json!("s3://bucket/other/");
        apply_value(&client, changed, Some(&ns), false)
            .await
            .expect("the template's dataset may change");
        let mut plain = s.clone();
        plain["spec"]["jobTemplate"]["spec"]["dataset"]["uri"] = json!("/etc/passwd");
        let err = apply_value(&client, plain, Some(&ns), true)
            .await
            .expect_err("a plain path is refused");
        assert!(
            err.to_string().contains("dataset.uri must start with"),
            "{err}"
        );

        let mut bad = schedule(
            "bad",
            "bucket",
            json!({"schedule": "* * * * * *"}),
            json!({}),
        );
        bad["spec"]["jobTemplate"]["spec"]["output"]["uri"] = json!("s3://bucket/{hour}.json");
        apply_value(&client, bad, Some(&ns), false)
            .await
            .expect("accepted by the apiserver: placeholders are the operator's to read");
        let schedules: Api<ProfileSchedule> = Api::namespaced(client.clone(), &ns);
        let cond = eventually("Ready False", Duration::from_secs(30), || async {
            let st = schedules.get("bad").await.ok()?.status?;
            st.conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .await;
        assert_eq!(cond.reason, "InvalidSpec");
        assert!(cond.message.contains("{hour}"), "{}", cond.message);
        eventually("an InvalidSpec event", Duration::from_secs(30), || async {
            event_reasons(&client, &ns)
                .await
                .iter()
                .any(|(r, n)| r == "InvalidSpec" && n.contains("{hour}"))
                .then_some(())
        })
        .await;
        // every second for 3 s, and no run
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(runs_of(&client, &ns, "bad").await.is_empty());
        op.assert_running();
        delete_namespace(&client, &ns).await;
    });
}
