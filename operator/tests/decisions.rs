//! The reconciler's decisions, transition by transition. `decide` is a pure function of what
//! was observed, so every state (including "the operator restarted here") is one call.

use std::collections::BTreeSet;
use std::time::Duration;
use time::OffsetDateTime;
use truthound_operator::crd::*;
use truthound_operator::decide::*;
use truthound_operator::status::{self, parse_time};

const UID: &str = "7d3c9a52-0000-4000-8000-000000000001";

fn t(s: &str) -> OffsetDateTime {
    parse_time(s).expect("time")
}

fn now() -> OffsetDateTime {
    t("2026-11-21T10:00:00Z")
}

fn job(yaml: &str) -> ProfileJob {
    let mut pj: ProfileJob = serde_yaml::from_str(yaml).expect("ProfileJob YAML");
    pj.metadata.name = Some("events".into());
    pj.metadata.namespace = Some("data".into());
    pj.metadata.uid = Some(UID.into());
    pj.metadata.generation = Some(1);
    pj
}

fn basic() -> ProfileJob {
    job(r#"
apiVersion: truthound.io/v1alpha1
kind: ProfileJob
metadata: {name: events}
spec:
  dataset: {uri: "s3://lake/events/", options: {endpoint: "http://minio:9000"}}
  output: {uri: "s3://lake/profiles/events.json"}
  partitioning: {strategy: row_based, partitions: 4}
"#)
}

/// What was observed of the job alone, its work-data finalizer as it is in the steady state
/// (there while the work data is to be deleted).
fn obs(pj: &ProfileJob) -> Observed<'_> {
    Observed {
        has_work_data_finalizer: pj.status.as_ref().is_some_and(|s| work_data_pending(pj, s)),
        ..Observed::job(now(), pj)
    }
}

fn plan(tasks: u32) -> PlanSummary {
    PlanSummary {
        id: "plan-abc".into(),
        uri: format!("s3://lake/profiles/.truthound/{UID}/plan"),
        task_rows: vec![1000; tasks as usize],
        bytes: 4_000_000,
        columns: 4,
        exact_limit: 10_000,
        reused: Default::default(),
    }
}

fn set(ids: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    ids.into_iter().collect()
}

/// Applies a decision's status to the job, as the API server would after the status patch.
fn advance(pj: &mut ProfileJob, d: &Decision) {
    pj.status = Some(d.status.clone());
}

fn cond<'a>(s: &'a ProfileJobStatus, t: &str) -> &'a Condition {
    status::condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t} condition: {s:#?}"))
}

fn workers(completed: impl IntoIterator<Item = u32>, active: u32) -> WorkersObserved {
    WorkersObserved {
        name: "events-w1".into(),
        active,
        completed: set(completed),
        ..WorkersObserved::default()
    }
}

/// A job in the Running phase, as after the first two reconciles.
fn running_job() -> ProfileJob {
    let mut pj = basic();
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d = decide(&o, &Settings::default());
    advance(&mut pj, &d);
    assert_eq!(
        pj.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Running)
    );
    pj
}

#[test]
fn first_visit_accepts_records_the_submission_and_plans() {
    let pj = basic();
    let d = decide(&obs(&pj), &Settings::default());
    // The work-data finalizer goes on before the plan is written, so that a deletion from now
    // on deletes what the job wrote.
    assert_eq!(d.actions, vec![Action::AddWorkDataFinalizer, Action::Plan]);
    let s = &d.status;
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(s.attempt, Some(1));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.start_time.as_deref(), Some("2026-11-21T10:00:00Z"));
    let sub = s
        .submission
        .as_ref()
        .expect("submission written before acting");
    assert_eq!(
        sub.plan_uri.as_deref(),
        Some(format!("s3://lake/profiles/.truthound/{UID}/plan").as_str())
    );
    assert_eq!(sub.id.as_deref(), Some("events-w1"));
    assert_eq!(cond(s, "Accepted").status, "True");
    assert_eq!(cond(s, "Ready").status, "False");
    assert_eq!(s.backend.as_ref().map(|b| b.kind.as_str()), Some("local"));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == "Accepted" && !e.warning)
    );
}

#[test]
fn invalid_specs_fail_at_once_with_the_field_named() {
    let cases = [
        ("ftp://x/y", "s3://b/p.json", "local", "spec.dataset.uri"),
        ("s3://b/d/", "s3://b/out/*.json", "local", "spec.output.uri"),
        ("s3://b/d/", "s3://b/out/", "local", "must name a file"),
    ];
    for (data, out, backend, needle) in cases {
        let pj = job(&format!(
            "apiVersion: truthound.io/v1alpha1\nkind: ProfileJob\nmetadata: {{name: x}}\nspec:\n  dataset: {{uri: '{data}'}}\n  output: {{uri: '{out}'}}\n  backend: {{type: {backend}, spark: {{connectUrl: 'sc://s:15002'}}}}\n"
        ));
        let d = decide(&obs(&pj), &Settings::default());
        assert!(d.actions.is_empty(), "{data} {out}: {:?}", d.actions);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        let failed = cond(&d.status, "Failed");
        assert_eq!(failed.reason, "InvalidSpec");
        assert!(
            failed.message.contains(needle),
            "{needle}: {}",
            failed.message
        );
        assert_eq!(cond(&d.status, "Accepted").status, "False");
        assert!(
            d.events
                .iter()
                .any(|e| e.warning && e.reason == "InvalidSpec")
        );
    }
    let mut pj = basic();
    pj.spec
        .dataset
        .options
        .extra
        .insert("aws_secret_access_key".into(), "x".into());
    let d = decide(&obs(&pj), &Settings::default());
    assert!(
        cond(&d.status, "Failed")
            .message
            .contains("credentialsSecretRef")
    );
    // A cluster without CEL admission lets a bad fraction in: the operator still says no.
    let mut pj = basic();
    pj.spec.profile.sampling = Some(truthound_operator::crd::SamplingSpec {
        fraction: 0.0,
        seed: None,
    });
    let d = decide(&obs(&pj), &Settings::default());
    assert!(
        cond(&d.status, "Failed")
            .message
            .contains("spec.profile.sampling.fraction")
    );
}

#[test]
fn auto_picks_local_for_a_small_dataset_once_it_is_listed_and_says_why() {
    let mut pj = basic();
    pj.spec.backend.kind = BackendType::Auto;
    let d = decide(&obs(&pj), &Settings::default());
    assert_eq!(d.actions, vec![Action::AddWorkDataFinalizer, Action::Plan]);
    assert!(
        d.status.backend.is_none(),
        "chosen only once the size is known"
    );
    assert!(cond(&d.status, "Accepted").message.contains("(auto)"));
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d = decide(&o, &Settings::default());
    let b = d.status.backend.clone().expect("backend choice");
    assert_eq!(b.kind, "local");
    assert!(b.reason.unwrap_or_default().contains("4.0 MB, under 10 GB"));
    assert!(matches!(d.actions[0], Action::CreateWorkers { .. }));
    assert!(d.events.iter().any(|e| e.reason == "BackendChosen"));
}

#[test]
fn pending_plans_until_the_plan_exists_then_creates_workers_once() {
    let mut pj = basic();
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    // Restart before the plan was written: plan again (same URI, recorded in the status).
    let d = decide(&obs(&pj), &Settings::default());
    assert_eq!(d.actions, vec![Action::Plan]);
    assert_eq!(
        d.status,
        pj.status.clone().expect("status"),
        "nothing new to record"
    );
    // The plan is written: create the workers.
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::CreateWorkers {
            name: "events-w1".into(),
            tasks: 4,
            only: None,
        }]
    );
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(
        d.status
            .submission
            .as_ref()
            .and_then(|s| s.plan_id.as_deref()),
        Some("plan-abc")
    );
    let counts = d.status.tasks.as_ref().expect("counts");
    assert_eq!(
        (counts.total, counts.pending, counts.summary.as_str()),
        (4, 4, "0/4")
    );
    // Nothing else will happen until progress is reported or a pod changes (each triggers a
    // reconcile), so the timer is the resync period.
    assert_eq!(d.requeue, Some(Settings::default().resync));
}

#[test]
fn a_deadline_sooner_than_the_resync_is_when_to_look_again() {
    let mut pj = running_job();
    pj.spec.active_deadline_seconds = Some(605);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([0], 0));
    let start = pj
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .expect("started");
    o.now = t(&start) + time::Duration::seconds(600);
    let d = decide(&o, &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(d.requeue, Some(std::time::Duration::from_secs(5)));
}

#[test]
fn suspended_at_creation_creates_a_suspended_job() {
    let mut pj = basic();
    pj.spec.suspend = true;
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(2));
    let d = decide(&o, &Settings::default());
    assert!(matches!(d.actions[0], Action::CreateWorkers { .. }));
    assert_eq!(d.status.phase, Some(Phase::Suspended));
    assert_eq!(cond(&d.status, "Suspended").status, "True");
}

#[test]
fn running_tasks_are_counted_with_progress_and_nothing_is_recreated() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([0, 2], 2));
    o.progress = ProgressObserved {
        running_rows: 500,
        rows_per_second: 250.0,
        stalled: vec![],
        memory: None,
    };
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let s = &d.status;
    assert_eq!(s.phase, Some(Phase::Running));
    let c = s.tasks.as_ref().expect("counts");
    assert_eq!(
        (c.total, c.pending, c.running, c.succeeded, c.failed),
        (4, 0, 2, 2, 0)
    );
    assert_eq!(s.completed_tasks.as_deref(), Some("0,2"));
    let p = s.progress.as_ref().expect("progress");
    assert_eq!((p.rows_processed, p.rows_total), (2500, 4000));
    assert_eq!(p.percent, 62.5);
    assert_eq!(p.eta_seconds, Some(6));
    assert_eq!(p.display, "62%");
    assert_eq!(cond(s, "Running").reason, "TasksRunning");
    // The same observation again is a fixed point: same status, so no status write.
    let mut pj2 = pj.clone();
    advance(&mut pj2, &d);
    let mut o2 = obs(&pj2);
    o2.plan = o.plan.clone();
    o2.workers = o.workers.clone();
    o2.progress = o.progress.clone();
    assert_eq!(decide(&o2, &Settings::default()).status, d.status);
}

#[test]
fn a_failed_task_retried_by_the_job_is_recorded_but_not_fatal() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let mut w = workers([0], 1);
    w.failed_pods = 2;
    w.failures = vec![TaskFailure {
        task: 1,
        reason: "Transient".into(),
        message: "exit_code=75 reason=Transient: s3 timeout".into(),
        time: "2026-11-21T09:59:00Z".into(),
    }];
    o.workers = Some(w);
    let d = decide(&o, &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Running));
    let c = d.status.tasks.as_ref().expect("counts");
    assert_eq!((c.retried, c.failed), (2, 0));
    assert_eq!(d.status.last_failures.len(), 1);
    assert_eq!(d.status.last_failures[0].task, 1);
}

#[test]
fn too_many_failed_tasks_fail_the_job_and_stop_the_workers() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let mut w = workers([0], 1);
    w.failed = set([3]);
    w.failed_pods = 1;
    w.failures = vec![TaskFailure {
        task: 3,
        reason: "BadData".into(),
        message: "corrupt Parquet footer in s3://lake/events/part-3.parquet".into(),
        time: "2026-11-21T09:59:00Z".into(),
    }];
    o.workers = Some(w);
    let d = decide(&o, &Settings::default());
    assert_eq!(d.actions, vec![Action::DeleteWorkers]);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let f = cond(&d.status, "Failed");
    assert_eq!(f.reason, "TooManyFailedTasks");
    assert!(f.message.contains("part-3.parquet"), "{}", f.message);
    assert_eq!(d.status.failed_tasks.as_deref(), Some("3"));
    assert!(d.status.completion_time.is_some());
    assert_eq!(cond(&d.status, "Ready").status, "False");
}

#[test]
fn tolerated_failures_merge_without_the_failed_tasks() {
    let mut pj = running_job();
    pj.spec.max_failed_tasks = Some(1);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let mut w = workers([0, 1, 2], 0);
    w.failed = set([3]);
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1, 2]));
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::Merge {
            missing: vec![3],
            in_pod: false
        }]
    );
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert!(cond(&d.status, "Merging").message.contains("missing"));
}

#[test]
fn a_partial_in_storage_outranks_a_failed_index() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(2));
    let mut w = workers([0], 0);
    w.failed = set([1]); // its pod failed after the partial was written
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1]));
    let d = decide(&o, &Settings::default());
    assert!(matches!(&d.actions[..], [Action::Merge { missing, .. }] if missing.is_empty()));
}

#[test]
fn a_finished_job_with_lost_partials_fails_those_tasks_instead_of_hanging() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(3));
    let mut w = workers([0, 1, 2], 0);
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1]));
    let d = decide(&o, &Settings::default());
    // Completed indexes count as done unless storage says otherwise: the Job said 2 completed,
    // storage lists 0 and 1, and the union is trusted (a partial may be listed late).
    assert!(matches!(&d.actions[..], [Action::Merge { .. }]));
    // With the Job's record lost too, task 2 is failed, and with maxFailedTasks 0 the job fails.
    let mut o = obs(&pj);
    o.plan = Some(plan(3));
    let mut w = workers([0, 1], 0);
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1]));
    let d = decide(&o, &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(
        d.status
            .last_failures
            .iter()
            .any(|f| f.task == 2 && f.reason == "PartialMissing")
    );
}

#[test]
fn all_partials_present_starts_the_merge() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let mut w = workers([0, 1, 2, 3], 0);
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1, 2, 3]));
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::Merge {
            missing: vec![],
            in_pod: false
        }]
    );
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert_eq!(cond(&d.status, "Running").status, "False");
    assert_eq!(cond(&d.status, "Merging").status, "True");
    // Without a listing of storage, the Job's word alone does not start a merge.
    o.partials = None;
    let d = decide(&o, &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Running));
}

/// Wide exact-value maps merge in a pod, whatever the task and row counts: the budget is on
/// columns × min(rows, exact limit), and the edge is exact.
#[test]
fn wide_exact_maps_merge_in_a_pod() {
    let pj = running_job();
    let in_pod = |columns: u32, exact_limit: u64, rows: u64, budget: u64| {
        let mut o = obs(&pj);
        let mut p = plan(2);
        p.columns = columns;
        p.exact_limit = exact_limit;
        p.task_rows = vec![rows / 2, rows - rows / 2];
        o.plan = Some(p);
        o.workers = Some(workers(0..2, 0));
        o.partials = Some(set(0..2));
        let settings = Settings {
            merge_in_pod_cells: budget,
            ..Settings::default()
        };
        let d = decide(&o, &settings);
        match &d.actions[..] {
            [Action::Merge { in_pod, .. }] => *in_pod,
            other => panic!("no merge: {other:?}"),
        }
    };
    // 400 columns × 10,000 exact values = the budget: in the operator; one more column: a pod.
    assert!(!in_pod(400, 10_000, 1_000_000, 4_000_000));
    assert!(in_pod(401, 10_000, 1_000_000, 4_000_000));
    // Fewer rows than the exact limit: the rows bound the maps.
    assert!(!in_pod(4_000, 10_000, 1_000, 4_000_000));
    assert!(in_pod(4_001, 10_000, 1_000, 4_000_000));
    // A high exact limit on a narrow table.
    assert!(in_pod(3, 2_000_000, 10_000_000, 4_000_000));
    // The default budget takes a default plan of a few columns in the operator.
    assert!(Settings::default().merge_in_pod_cells >= 4 * 10_000);
}

#[test]
fn many_or_large_partials_merge_in_a_pod() {
    let pj = running_job();
    let mut o = obs(&pj);
    let settings = Settings {
        merge_in_pod_tasks: 3,
        ..Settings::default()
    };
    o.plan = Some(plan(4));
    o.workers = Some(workers(0..4, 0));
    o.partials = Some(set(0..4));
    let d = decide(&o, &settings);
    assert!(matches!(
        &d.actions[..],
        [Action::Merge { in_pod: true, .. }]
    ));
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert_eq!(d.requeue, Some(settings.progress_interval));

    // The merge Job runs: wait, and do not merge a second time.
    let mut pj = pj;
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.merge = Some(MergeObserved::Running);
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.requeue, Some(settings.progress_interval));
    assert_eq!(d.status, pj.status.clone().expect("status"));

    // It succeeded: read what it wrote, and do not merge in the operator.
    o.merge = Some(MergeObserved::Succeeded);
    let d = decide(&o, &settings);
    assert_eq!(d.actions, vec![Action::CollectMerge]);

    // An operator restart that finds no merge Job (deleted by hand) creates it again.
    o.merge = None;
    let d = decide(&o, &settings);
    assert!(matches!(
        &d.actions[..],
        [Action::Merge { in_pod: true, .. }]
    ));

    // It failed: the job fails with the merge pod's words.
    o.merge = Some(MergeObserved::Failed(
        "the merge Job pj-m1 failed: exit_code=65 reason=BadData: s3://b/partials/3: not found"
            .into(),
    ));
    let d = decide(&o, &settings);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d.actions.is_empty());
    let failed = cond(&d.status, "Failed");
    assert_eq!(failed.reason, "MergeFailed");
    assert!(
        failed.message.contains("partials/3: not found"),
        "{}",
        failed.message
    );
}

#[test]
fn merge_done_means_succeeded_and_ready() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers(0..4, 0));
    o.partials = Some(set(0..4));
    let d = decide(&o, &Settings::default());
    let result = ResultStatus {
        profile_uri: "s3://lake/profiles/events.json".into(),
        rows: 4000,
        columns: 15,
        duration_seconds: 12.5,
        missing_tasks: None,
    };
    let (s, event) = merged(&pj, d.status, result, t("2026-11-21T10:00:12Z"));
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(cond(&s, "Succeeded").status, "True");
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "Merging").status, "False");
    assert_eq!(s.completion_time.as_deref(), Some("2026-11-21T10:00:12Z"));
    assert_eq!(
        s.progress.as_ref().map(|p| p.display.as_str()),
        Some("100%")
    );
    assert_eq!(event.reason, "Succeeded");
    assert!(event.message.contains("4000 rows"));
}

#[test]
fn restart_while_merging_merges_again() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers(0..4, 0));
    o.partials = Some(set(0..4));
    let d = decide(&o, &Settings::default());
    let mut pj = pj;
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d2 = decide(&o, &Settings::default());
    assert!(matches!(&d2.actions[..], [Action::Merge { .. }]));
    assert_eq!(d2.status, pj.status.clone().expect("status"));
    // A merge pod that failed fails the job with its message.
    o.merge = Some(MergeObserved::Failed("merge pod OOMKilled".into()));
    let d3 = decide(&o, &Settings::default());
    assert_eq!(d3.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d3.status, "Failed").reason, "MergeFailed");
}

#[test]
fn the_deadline_fails_the_job_in_every_active_phase() {
    let mut pj = running_job();
    pj.spec.active_deadline_seconds = Some(60);
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:01:00Z");
    o.plan = Some(plan(4));
    o.workers = Some(workers([0], 3));
    let d = decide(&o, &Settings::default());
    assert_eq!(d.actions, vec![Action::DeleteWorkers]);
    assert_eq!(cond(&d.status, "Failed").reason, "DeadlineExceeded");
    assert!(cond(&d.status, "Failed").message.contains("1 of 4 tasks"));
    // One second earlier: still running.
    o.now = t("2026-11-21T10:00:59Z");
    assert_eq!(
        decide(&o, &Settings::default()).status.phase,
        Some(Phase::Running)
    );
    // While planning.
    let mut pj = basic();
    pj.spec.active_deadline_seconds = Some(60);
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:05:00Z");
    assert_eq!(
        decide(&o, &Settings::default()).status.phase,
        Some(Phase::Failed)
    );
}

#[test]
fn suspend_and_resume_keep_completed_tasks() {
    let mut pj = running_job();
    pj.spec.suspend = true;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([0, 1], 2));
    let d = decide(&o, &Settings::default());
    assert_eq!(d.actions, vec![Action::SuspendWorkers(true)]);
    assert_eq!(d.status.phase, Some(Phase::Suspended));
    assert_eq!(cond(&d.status, "Suspended").status, "True");
    assert_eq!(d.status.completed_tasks.as_deref(), Some("0-1"));
    assert!(d.events.iter().any(|e| e.reason == "Suspended"));
    advance(&mut pj, &d);
    // The Job is suspended now: no further action while suspended.
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let mut w = workers([0, 1], 0);
    w.suspended = true;
    o.workers = Some(w.clone());
    assert!(decide(&o, &Settings::default()).actions.is_empty());
    // Resume.
    pj.spec.suspend = false;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(w);
    let d = decide(&o, &Settings::default());
    assert_eq!(d.actions, vec![Action::SuspendWorkers(false)]);
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(cond(&d.status, "Suspended").status, "False");
    assert!(d.events.iter().any(|e| e.reason == "Resumed"));
    assert_eq!(d.status.completed_tasks.as_deref(), Some("0-1"));
}

/// A job whose Jobs a Kueue queue manages: the worker Job's `suspend` is Kueue's. The operator
/// waits for admission (phase Queued), never un-suspends the Job, and stops by deleting it.
#[test]
fn a_queue_managed_job_waits_for_admission_and_never_unsuspends_its_workers() {
    let mut pj = basic();
    pj.metadata.labels = Some(
        [(
            "kueue.x-k8s.io/queue-name".to_string(),
            "data-team".to_string(),
        )]
        .into(),
    );
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d = decide(&o, &Settings::default());
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::CreateWorkers { .. })),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert_eq!(cond(&d.status, "Running").reason, "WaitingForAdmission");
    assert!(d.events.iter().any(|e| e.reason == "WaitingForAdmission"));
    advance(&mut pj, &d);

    // The Job exists, suspended, not yet admitted: nothing to do but wait.
    let mut w = workers([], 0);
    w.suspended = true;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(w.clone());
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert!(cond(&d.status, "Running").message.contains("data-team"));
    assert!(d.events.is_empty(), "said once: {:?}", d.events);
    advance(&mut pj, &d);

    // Kueue admitted it (suspend false): the job runs.
    w.suspended = false;
    w.active = 2;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(w.clone());
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert!(d.events.iter().any(|e| e.reason == "Admitted"));
    advance(&mut pj, &d);

    // Kueue suspends it again (preemption): the operator waits, never patches it back.
    w.suspended = true;
    w.active = 0;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(w.clone());
    let d = decide(&o, &Settings::default());
    assert!(!d.actions.contains(&Action::SuspendWorkers(false)));
    assert_eq!(d.status.phase, Some(Phase::Queued));
    advance(&mut pj, &d);

    // spec.suspend: the queue's Job is deleted (partials stay), not suspended by us.
    pj.spec.suspend = true;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(w);
    let d = decide(&o, &Settings::default());
    assert_eq!(d.actions, vec![Action::DeleteWorkers]);
    assert_eq!(d.status.phase, Some(Phase::Suspended));
    advance(&mut pj, &d);

    // Resume: the Job is re-created (suspended, for the queue) and the job waits again.
    pj.spec.suspend = false;
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    let d = decide(&o, &Settings::default());
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::CreateWorkers { .. })),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert!(d.events.iter().any(|e| e.reason == "Resumed"));
}

#[test]
fn restart_after_status_but_before_the_job_was_created_creates_it_with_the_same_name() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = None;
    o.partials = Some(set([]));
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::CreateWorkers {
            name: "events-w1".into(),
            tasks: 4,
            only: None,
        }]
    );
    assert_eq!(d.status.phase, Some(Phase::Running));
}

#[test]
fn restart_with_the_job_running_submits_nothing() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([1], 3));
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn stalled_tasks_get_their_pods_replaced() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([0], 3));
    o.progress.stalled = vec![0, 2];
    let d = decide(&o, &Settings::default());
    // Task 0 is done: only task 2 is replaced.
    assert_eq!(d.actions, vec![Action::ReplacePods(vec![2])]);
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == "TaskStalled")
    );
}

#[test]
fn deletion_needs_no_action_and_clears_an_old_finalizer() {
    let mut pj = running_job();
    pj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-21T10:00:00Z".parse().expect("timestamp"),
    ));
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.has_work_data_finalizer = false;
    assert!(decide(&o, &Settings::default()).actions.is_empty());
    o.has_finalizer = true;
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::DeleteWorkers, Action::RemoveFinalizer]
    );
}

#[test]
fn finished_jobs_are_deleted_after_their_ttl() {
    let mut pj = running_job();
    pj.spec.ttl_seconds_after_finished = Some(300);
    let mut s = pj.status.clone().expect("status");
    s.phase = Some(Phase::Succeeded);
    s.completion_time = Some("2026-11-21T10:00:00Z".into());
    s.work_data = Some(WorkDataStatus {
        state: Some(WORK_DATA_DELETED.into()),
        ..WorkDataStatus::default()
    });
    pj.status = Some(s);
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:04:00Z");
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty());
    assert_eq!(d.requeue, Some(Duration::from_secs(60)));
    o.now = t("2026-11-21T10:05:00Z");
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::DeleteJob]
    );
    // Without a TTL, a finished job is left alone.
    pj.spec.ttl_seconds_after_finished = None;
    let o = obs(&pj);
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty() && d.requeue.is_none());
}

#[test]
fn transient_action_failures_retry_then_fail() {
    let pj = basic();
    let settings = Settings {
        max_consecutive_errors: 3,
        ..Settings::default()
    };
    let mut status = decide(&obs(&pj), &settings).status;
    for attempt in 1..=2 {
        let (s, event, retry) = action_failed(
            &pj,
            status,
            "planning",
            FailureKind::Transient,
            "s3://lake/events/: connection refused",
            &settings,
            now(),
        );
        assert!(retry, "attempt {attempt}");
        assert_eq!(s.consecutive_errors, Some(attempt));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert!(cond(&s, "Ready").message.contains("connection refused"));
        assert!(event.warning);
        status = s;
    }
    let (s, _, retry) = action_failed(
        &pj,
        status,
        "planning",
        FailureKind::Transient,
        "connection refused",
        &settings,
        now(),
    );
    assert!(!retry);
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Failed").reason, "StorageUnavailable");
}

#[test]
fn bad_data_while_planning_fails_at_once_naming_the_file() {
    let pj = basic();
    let status = decide(&obs(&pj), &Settings::default()).status;
    let (s, event, retry) = action_failed(
        &pj,
        status,
        "planning",
        FailureKind::BadData,
        "s3://lake/events/part-1.parquet: corrupt Parquet footer",
        &Settings::default(),
        now(),
    );
    assert!(!retry);
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Failed").reason, "BadData");
    assert!(cond(&s, "Failed").message.contains("part-1.parquet"));
    assert!(event.warning);
}

#[test]
fn the_status_of_a_100000_task_job_stays_under_64_kib() {
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(100_000));
    // The worst case for ranges: every other task done, many failures recorded.
    let mut w = workers((0..100_000).step_by(2), 2000);
    w.failed_pods = 5000;
    w.failures = (0..500)
        .map(|i| TaskFailure {
            task: 2 * i + 1,
            reason: "Transient".into(),
            message: "x".repeat(3000),
            time: "2026-11-21T09:59:00Z".into(),
        })
        .collect();
    w.failed = (1..20_000).step_by(2).collect();
    o.workers = Some(w);
    let mut pj2 = pj.clone();
    pj2.spec.max_failed_tasks = Some(100_000);
    o.job = &pj2;
    let d = decide(&o, &Settings::default());
    let bytes = serde_json::to_vec(&d.status).expect("json").len();
    assert!(bytes < 64 * 1024, "status is {bytes} bytes");
    let c = d.status.tasks.as_ref().expect("counts");
    assert_eq!((c.total, c.succeeded, c.failed), (100_000, 50_000, 10_000));
    assert!(
        d.status
            .completed_tasks
            .as_deref()
            .is_some_and(|s| s.ends_with("(50000 tasks)"))
    );
}

#[test]
fn child_names_are_deterministic_and_fit_a_label() {
    assert_eq!(workers_name("events", UID, 1), "events-w1");
    let long = "a".repeat(80);
    let n1 = workers_name(&long, UID, 1);
    assert!(n1.len() <= 63, "{n1}");
    assert_eq!(n1, workers_name(&long, UID, 1));
    assert_ne!(n1, workers_name(&long, "other-uid", 1));
    assert_ne!(n1, merge_name(&long, UID, 1));
    assert_eq!(
        work_prefix("s3://lake/profiles/events.json", UID),
        format!("s3://lake/profiles/.truthound/{UID}")
    );
}

/// The operator plans in its own process: a local path or a URL in a spec would be read with
/// the operator's file system and network. Refused at the first visit, naming the field,
/// unless the operator's access policy allows it.
#[test]
fn local_paths_and_urls_are_refused_unless_the_operator_allows_them() {
    let spec = |data: &str, out: &str| {
        job(&format!(
            "apiVersion: truthound.io/v1alpha1\nkind: ProfileJob\nmetadata: {{name: x}}\nspec:\n  dataset: {{uri: '{data}', format: csv}}\n  output: {{uri: '{out}'}}\n"
        ))
    };
    let token = "file:///var/run/secrets/kubernetes.io/serviceaccount/token";
    let cases = [
        (token, "s3://tenant/x.json", "spec.dataset.uri"),
        (
            "/etc/truthound/progress-key/key",
            "s3://tenant/x.json",
            "spec.dataset.uri",
        ),
        (
            "http://169.254.169.254/latest/",
            "s3://tenant/x.json",
            "spec.dataset.uri",
        ),
        (
            "s3://lake/events/",
            "file:///etc/truthound/x.json",
            "spec.output.uri",
        ),
        (
            "s3://lake/events/",
            "https://tenant.example/x.json",
            "spec.output.uri",
        ),
    ];
    let shared = Settings {
        access: truthound_operator::access::AccessPolicy {
            file_roots: vec!["/data/shared".into()],
            allow_http: false,
            ..Default::default()
        },
        ..Settings::default()
    };
    for settings in [Settings::default(), shared.clone()] {
        for (data, out, field) in cases {
            let pj = spec(data, out);
            let d = decide(&obs(&pj), &settings);
            assert!(d.actions.is_empty(), "{data} {out}: {:?}", d.actions);
            let failed = cond(&d.status, "Failed");
            assert_eq!(failed.reason, "InvalidSpec", "{data} {out}");
            assert!(failed.message.starts_with(field), "{}", failed.message);
            assert!(
                d.events
                    .iter()
                    .any(|e| e.warning && e.reason == "InvalidSpec" && e.message.contains(field)),
                "{:?}",
                d.events
            );
        }
    }
    // Under the operator's root, and a URL once allowed, the job is accepted and planned.
    let pj = spec(
        "file:///data/shared/events/",
        "file:///data/shared/out/p.json",
    );
    assert_eq!(
        decide(&obs(&pj), &shared).actions,
        vec![Action::AddWorkDataFinalizer, Action::Plan]
    );
    let pj = spec("https://host/events.csv", "s3://lake/p.json");
    let open = Settings {
        access: truthound_operator::access::AccessPolicy {
            file_roots: vec![],
            allow_http: true,
            ..Default::default()
        },
        ..Settings::default()
    };
    assert_eq!(
        decide(&obs(&pj), &open).actions,
        vec![Action::AddWorkDataFinalizer, Action::Plan]
    );
}

/// A job finished as `phase` at 10:00:00, its work data still there.
fn finished_job(phase: Phase) -> ProfileJob {
    let mut pj = running_job();
    let mut s = pj.status.clone().expect("status");
    s.phase = Some(phase);
    s.completion_time = Some("2026-11-21T10:00:00Z".into());
    pj.status = Some(s);
    pj
}

#[test]
fn a_successful_jobs_work_data_is_deleted_unless_kept() {
    let pj = finished_job(Phase::Succeeded);
    let o = obs(&pj);
    assert!(o.has_work_data_finalizer);
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::DeleteWorkData, Action::RemoveWorkDataFinalizer]
    );
    // Once deleted (recorded by the reconciler), the finalizer has nothing left to guard.
    let mut done = pj.clone();
    done.status.as_mut().unwrap().work_data = Some(WorkDataStatus {
        state: Some(WORK_DATA_DELETED.into()),
        ..WorkDataStatus::default()
    });
    let mut o = obs(&done);
    o.has_work_data_finalizer = true;
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::RemoveWorkDataFinalizer]
    );

    let mut kept = pj.clone();
    kept.spec.output.keep_work_data = true;
    let o = obs(&kept);
    let d = decide(&o, &Settings::default());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let w = d.status.work_data.expect("recorded");
    assert_eq!(w.state.as_deref(), Some(WORK_DATA_KEPT));
    assert!(
        w.message.unwrap().contains(&format!(".truthound/{UID}")),
        "says where it is"
    );
    // A job that kept its data and still has the finalizer (keepWorkData set later) drops it.
    let mut o = obs(&kept);
    o.has_work_data_finalizer = true;
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::RemoveWorkDataFinalizer]
    );
}

#[test]
fn a_failed_jobs_work_data_is_deleted_after_its_ttl() {
    let mut pj = finished_job(Phase::Failed);
    let settings = Settings {
        failed_work_data_ttl: Duration::from_secs(3600),
        ..Settings::default()
    };
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:59:00Z");
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(
        d.requeue,
        Some(Duration::from_secs(60)),
        "looked at when it expires"
    );
    o.now = t("2026-11-21T11:00:00Z");
    assert_eq!(
        decide(&o, &settings).actions,
        vec![Action::DeleteWorkData, Action::RemoveWorkDataFinalizer]
    );

    // The job's own TTL outranks the operator's.
    pj.spec.output.work_data_ttl_seconds_after_failure = Some(60);
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:00:59Z");
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty());
    assert_eq!(d.requeue, Some(Duration::from_secs(1)));
    o.now = t("2026-11-21T10:01:00Z");
    assert_eq!(
        decide(&o, &settings).actions,
        vec![Action::DeleteWorkData, Action::RemoveWorkDataFinalizer]
    );

    // With the job's TTL too, the sooner of the two is when to look again, and the work data
    // goes before the job does.
    pj.spec.ttl_seconds_after_finished = Some(30);
    let mut o = obs(&pj);
    o.now = t("2026-11-21T10:00:10Z");
    assert_eq!(decide(&o, &settings).requeue, Some(Duration::from_secs(20)));
    o.now = t("2026-11-21T10:02:00Z");
    assert_eq!(
        decide(&o, &settings).actions,
        vec![
            Action::DeleteWorkData,
            Action::RemoveWorkDataFinalizer,
            Action::DeleteJob
        ]
    );
}

#[test]
fn deleting_a_job_deletes_its_work_data_first_and_stops_its_workers_before() {
    let mut pj = running_job();
    pj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-21T10:00:00Z".parse().expect("timestamp"),
    ));
    let mut o = obs(&pj);
    assert!(o.has_work_data_finalizer);
    o.workers = Some(workers([0], 1));
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::DeleteWorkers],
        "the workers go first"
    );
    assert_eq!(
        d.requeue,
        Some(Duration::from_secs(2)),
        "and are waited for"
    );
    o.workers = None;
    assert_eq!(
        decide(&o, &Settings::default()).actions,
        vec![Action::DeleteWorkData, Action::RemoveWorkDataFinalizer],
        "then the work data, then the finalizer"
    );
    // Given up (storage gone) or kept: the finalizer goes, the deletion is not held.
    for state in [WORK_DATA_GIVEN_UP, WORK_DATA_DELETED] {
        let mut p = pj.clone();
        p.status.as_mut().unwrap().work_data = Some(WorkDataStatus {
            state: Some(state.into()),
            ..WorkDataStatus::default()
        });
        let mut o = obs(&p);
        o.has_work_data_finalizer = true;
        assert_eq!(
            decide(&o, &Settings::default()).actions,
            vec![Action::RemoveWorkDataFinalizer],
            "{state}"
        );
    }
    // A finished job's workers are gone already.
    let mut done = finished_job(Phase::Succeeded);
    done.metadata.deletion_timestamp = pj.metadata.deletion_timestamp.clone();
    assert_eq!(
        decide(&obs(&done), &Settings::default()).actions,
        vec![Action::DeleteWorkData, Action::RemoveWorkDataFinalizer]
    );
}

#[test]
fn a_job_refused_as_invalid_wrote_no_work_data_and_gets_no_finalizer() {
    let mut pj = basic();
    pj.spec.dataset.columns = Some(vec![]);
    let d = decide(&obs(&pj), &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(!work_data_pending(&pj, &d.status));
}

#[test]
fn a_worker_near_its_memory_limit_is_warned_of_once_per_level() {
    let mut pj = running_job();
    // 79%: nothing said; 80%: a warning, in the status and an Event.
    let d = decide(&with_memory(&pj, 790), &Settings::default());
    let m = d
        .status
        .progress
        .as_ref()
        .unwrap()
        .worker_memory
        .clone()
        .unwrap();
    assert_eq!((m.task, m.level.as_deref()), (3, None));
    assert!(d.events.iter().all(|e| e.reason != "WorkerMemoryHigh"));
    let d = decide(&with_memory(&pj, 800), &Settings::default());
    let m = d
        .status
        .progress
        .as_ref()
        .unwrap()
        .worker_memory
        .clone()
        .unwrap();
    assert_eq!(m.level.as_deref(), Some("Warning"));
    assert_eq!(m.percent, 80.0);
    let e: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.reason == "WorkerMemoryHigh")
        .collect();
    assert_eq!(e.len(), 1);
    assert!(e[0].warning && e[0].message.contains("task 3") && e[0].message.contains("80%"));
    assert!(
        e[0].message.contains("spec.backend.local.resources"),
        "{}",
        e[0].message
    );
    advance(&mut pj, &d);
    // Around the threshold again: no second warning.
    let d = decide(&with_memory(&pj, 790), &Settings::default());
    advance(&mut pj, &d);
    let d = decide(&with_memory(&pj, 810), &Settings::default());
    assert!(d.events.iter().all(|e| e.reason != "WorkerMemoryHigh"));
    advance(&mut pj, &d);
    // 95%: critical, said once.
    let d = decide(&with_memory(&pj, 950), &Settings::default());
    let m = d
        .status
        .progress
        .as_ref()
        .unwrap()
        .worker_memory
        .clone()
        .unwrap();
    assert_eq!(
        (m.level.as_deref(), m.peak_level.as_deref()),
        (Some("Critical"), Some("Critical"))
    );
    let e: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.reason == "WorkerMemoryHigh")
        .collect();
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("critical"), "{}", e[0].message);
}

/// A running job's observation with task 3's worker at `rss` of a 1000-byte limit.
fn with_memory(pj: &ProfileJob, rss: u64) -> Observed<'_> {
    let mut o = obs(pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers([], 4));
    o.progress.memory = Some(WorkerMemory {
        task: 3,
        rss_bytes: rss,
        limit_bytes: 1000,
    });
    o
}

/// A child of the job's name held by another owner (a ProfileJob deleted and created again
/// before garbage collection removed its Job): the job creates, reads and changes nothing under
/// that name, says it waits (once as an event), looks again soon, and goes on once it is gone.
#[test]
fn a_predecessors_child_of_the_same_name_is_waited_for_and_never_read() {
    let settings = Settings::default();
    let waiting = |d: &Decision, what: &str| {
        let ready = cond(&d.status, "Ready");
        assert_eq!(ready.reason, WAITING_FOR_PREVIOUS, "{ready:?}");
        assert!(
            ready
                .message
                .contains(&format!("waiting for the previous {what} to be deleted")),
            "{}",
            ready.message
        );
        assert!(d.requeue.is_some_and(|r| r <= settings.progress_interval));
    };

    // Pending, the plan written: no worker Job is created over the predecessor's.
    let mut pj = basic();
    let d = decide(&obs(&pj), &settings);
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.foreign = Some("Job events-w1".into());
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    waiting(&d, "Job events-w1");
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == WAITING_FOR_PREVIOUS)
    );
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.foreign = Some("Job events-w1".into());
    let again = decide(&o, &settings);
    assert!(again.events.is_empty(), "one event: {:?}", again.events);
    // Gone: the worker Job is created.
    o.foreign = None;
    let d = decide(&o, &settings);
    assert!(matches!(&d.actions[..], [Action::CreateWorkers { .. }]));
    assert_eq!(cond(&d.status, "Ready").reason, "Running");

    // Running: the predecessor's finished, failed Job is not this job's result.
    let pj = running_job();
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.foreign = Some("Job events-w1".into());
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Running));
    waiting(&d, "Job events-w1");
    // ... past the deadline the job fails, and the other owner's Job is left alone.
    let mut late = pj.clone();
    late.spec.active_deadline_seconds = Some(60);
    if let Some(s) = late.status.as_mut() {
        s.start_time = Some("2026-11-21T09:00:00Z".into());
    }
    let mut o = obs(&late);
    o.plan = Some(plan(4));
    o.foreign = Some("Job events-w1".into());
    let d = decide(&o, &settings);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d.status, "Failed").reason, "DeadlineExceeded");
    assert!(d.actions.is_empty(), "{:?}", d.actions);

    // Merging: the merge is not (re)started over a predecessor's merge Job.
    let mut o = obs(&pj);
    o.plan = Some(plan(4));
    o.workers = Some(workers(0..4, 0));
    o.partials = Some(set(0..4));
    let d = decide(&o, &settings);
    let mut merging = pj.clone();
    advance(&mut merging, &d);
    let mut o = obs(&merging);
    o.plan = Some(plan(4));
    o.foreign = Some("Job events-m1".into());
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Merging));
    waiting(&d, "Job events-m1");
}

/// 2,500 failed tasks tolerated: their index ranges outgrow the status's 4 KiB and are cut. The
/// first merge gets the exact list from the Job; a merge started again (an operator restart, a
/// retried storage error) gets it from storage's partials, never from the cut string, whose
/// ~700 tasks would make the merge look for 1,800 partials that do not exist.
#[test]
fn a_merge_started_again_goes_without_exactly_the_failed_tasks_past_the_status_cut() {
    let settings = Settings::default();
    let total = 5000;
    let mut pj = running_job();
    pj.spec.max_failed_tasks = Some(total as i32);
    let failed: BTreeSet<u32> = (1..total).step_by(2).collect();
    let done: BTreeSet<u32> = (0..total).step_by(2).collect();
    let exact: Vec<u32> = failed.iter().copied().collect();
    let mut o = obs(&pj);
    o.plan = Some(plan(total));
    let mut w = workers(done.clone(), 0);
    w.failed = failed.clone();
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(done.clone());
    let d = decide(&o, &settings);
    assert!(
        matches!(&d.actions[..], [Action::Merge { missing, .. }] if *missing == exact),
        "the first merge's list is exact"
    );
    let cut = d.status.failed_tasks.clone().expect("failedTasks");
    assert!(
        status::is_cut(&cut),
        "the status string is cut: {} bytes",
        cut.len()
    );
    assert!(status::parse_ranges(&cut).len() < exact.len());
    let mut merging = pj.clone();
    advance(&mut merging, &d);

    // Started again: storage is listed first (no action until then).
    let mut o = obs(&merging);
    o.plan = Some(plan(total));
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert!(d.requeue.is_some());
    o.partials = Some(done.clone());
    let d = decide(&o, &settings);
    match &d.actions[..] {
        [Action::Merge { missing, .. }] => assert_eq!(*missing, exact),
        other => panic!("{other:?}"),
    }

    // More tasks without a partial than failed: partials vanished; the job says so.
    let mut fewer = done.clone();
    fewer.remove(&0);
    o.partials = Some(fewer);
    let d = decide(&o, &settings);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let failed_cond = cond(&d.status, "Failed");
    assert_eq!(failed_cond.reason, "MergeFailed");
    assert!(
        failed_cond.message.contains("2501 task(s) have no partial"),
        "{}",
        failed_cond.message
    );

    // A list that fits is read as it is (no listing needed).
    let mut small = running_job();
    small.spec.max_failed_tasks = Some(1);
    let mut o = obs(&small);
    o.plan = Some(plan(4));
    let mut w = workers([0, 1, 2], 0);
    w.failed = set([3]);
    w.finished = true;
    o.workers = Some(w);
    o.partials = Some(set([0, 1, 2]));
    let d = decide(&o, &settings);
    advance(&mut small, &d);
    let mut o = obs(&small);
    o.plan = Some(plan(4));
    let d = decide(&o, &settings);
    assert_eq!(
        d.actions,
        vec![Action::Merge {
            missing: vec![3],
            in_pod: false
        }]
    );
}

/// Incremental runs: the worker Job gets one pod per task that was not reused from the cache,
/// each mapped to its task; the reused ones count as succeeded; with every task reused nothing
/// runs and the job goes straight to the merge.
#[test]
fn reused_tasks_get_no_pods_and_a_run_reusing_all_goes_to_the_merge() {
    let mut pj = basic();
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    let mut p = plan(4);
    p.reused = set([0, 2]);
    o.plan = Some(p.clone());
    let d = decide(&o, &Settings::default());
    assert_eq!(
        d.actions,
        vec![Action::CreateWorkers {
            name: "events-w1".into(),
            tasks: 2,
            only: Some(vec![1, 3]),
        }]
    );
    let tasks = d.status.tasks.clone().expect("counts");
    assert_eq!((tasks.total, tasks.reused), (4, 2));
    assert!(
        d.events.iter().any(|e| e
            .message
            .contains("runs 2 tasks (2 of 4 reused from the cache)")),
        "{:?}",
        d.events
    );

    // The worker Job is gone (deleted by someone): it is created again for the same tasks.
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(p.clone());
    o.partials = Some(set([0, 2]));
    let d = decide(&o, &Settings::default());
    assert!(
        d.actions.contains(&Action::CreateWorkers {
            name: "events-w1".into(),
            tasks: 2,
            only: Some(vec![1, 3]),
        }),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.tasks.as_ref().map(|t| t.succeeded), Some(2));

    // Every task reused: no worker Job at all.
    let mut pj = basic();
    let d = decide(&obs(&pj), &Settings::default());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    p.reused = set(0..4);
    o.plan = Some(p);
    let d = decide(&o, &Settings::default());
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::CreateWorkers { .. })),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert_eq!(d.status.tasks.as_ref().map(|t| t.succeeded), Some(4));
}

#[test]
fn target_task_bytes_goes_from_the_spec_into_the_plan_request() {
    use truthound_operator::reconcile::plan_request;
    assert_eq!(
        plan_request(&basic()).target_task_bytes,
        None,
        "unset: the planner's default"
    );
    let sized = |backend: &str, bytes: u64| {
        job(&format!(
            "apiVersion: truthound.io/v1alpha1\nkind: ProfileJob\nmetadata: {{name: x}}\nspec:\n  dataset: {{uri: 's3://b/d/'}}\n  output: {{uri: 's3://b/p.json'}}\n  backend: {{type: {backend}, spark: {{connectUrl: 'sc://s:15002'}}}}\n  partitioning: {{strategy: hybrid, partitions: 3, targetTaskBytes: {bytes}}}\n"
        ))
    };
    let pj = sized("local", 8 << 20);
    assert_eq!(
        pj.spec.partitioning.target_task_bytes,
        Some(8 << 20),
        "camelCase in the spec"
    );
    let req = plan_request(&pj);
    assert_eq!(req.target_task_bytes, Some(8 << 20));
    assert_eq!(req.partitions, 3);
    assert_eq!(req.strategy, truthound_profile::Strategy::Hybrid);
    assert_eq!(plan_request(&sized("local", 0)).target_task_bytes, Some(0));
    assert!(validate(&sized("local", 1 << 20)).is_ok());
    // Spark reads whole files: a target is refused with the field named, and none is planned.
    let spark = sized("spark", 1 << 20);
    let err = validate(&spark).unwrap_err();
    assert!(err.contains("spec.partitioning.targetTaskBytes"), "{err}");
    let d = decide(&obs(&spark), &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(plan_request(&sized("spark", 0)).target_task_bytes, Some(0));
}
