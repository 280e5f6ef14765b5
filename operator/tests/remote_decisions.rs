//! The reconciler's decisions for jobs of the remote backends (dask, ray) and `auto`: what is
//! submitted, when, and what the status says, transition by transition (`decide` is pure).

use std::collections::BTreeSet;
use time::OffsetDateTime;
use truthound_operator::backend::choice::Clusters;
use truthound_operator::backend::tasks::{TaskPhase, TaskState};
use truthound_operator::crd::*;
use truthound_operator::decide::*;
use truthound_operator::status::{self, parse_time};

const UID: &str = "7d3c9a52-0000-4000-8000-000000000001";

fn now() -> OffsetDateTime {
    parse_time("2026-11-21T10:00:00Z").expect("time")
}

fn settings() -> Settings {
    Settings {
        clusters: Clusters {
            ray_address: Some("http://ray-head.ray:8265".into()),
            dask_scheduler: Some("tcp://dask-scheduler.dask:8786".into()),
            ..Clusters::default()
        },
        ..Settings::default()
    }
}

fn job(backend: &str) -> ProfileJob {
    let mut pj: ProfileJob = serde_yaml::from_str(&format!(
        r#"
apiVersion: truthound.io/v1alpha1
kind: ProfileJob
metadata: {{name: events}}
spec:
  dataset: {{uri: "s3://lake/events/"}}
  output: {{uri: "s3://lake/profiles/events.json"}}
  backend: {{type: {backend}}}
  partitioning: {{strategy: row_based, partitions: 4}}
"#
    ))
    .expect("ProfileJob YAML");
    pj.metadata.name = Some("events".into());
    pj.metadata.namespace = Some("data".into());
    pj.metadata.uid = Some(UID.into());
    pj.metadata.generation = Some(1);
    pj
}

/// What was observed of the job alone, its work-data finalizer as in the steady state.
fn obs(pj: &ProfileJob) -> Observed<'_> {
    Observed {
        has_work_data_finalizer: pj.status.as_ref().is_some_and(|s| work_data_pending(pj, s)),
        ..Observed::job(now(), pj)
    }
}

fn plan(tasks: u32, bytes: u64) -> PlanSummary {
    PlanSummary {
        id: "plan-abc".into(),
        uri: format!("s3://lake/profiles/.truthound/{UID}/plan"),
        task_rows: vec![1000; tasks as usize],
        bytes,
        columns: 4,
        exact_limit: 10_000,
        reused: Default::default(),
    }
}

fn set(ids: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    ids.into_iter().collect()
}

fn advance(pj: &mut ProfileJob, d: &Decision) {
    pj.status = Some(d.status.clone());
}

fn cond<'a>(s: &'a ProfileJobStatus, t: &str) -> &'a Condition {
    status::condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t} condition: {s:#?}"))
}

fn task(task: u32, phase: TaskPhase, attempts: u32) -> TaskState {
    TaskState {
        phase,
        attempts,
        ..TaskState::pending(task)
    }
}

/// A remote run that is running with these task states.
fn live(tasks: Vec<TaskState>) -> RemoteObserved {
    RemoteObserved {
        found: true,
        tasks,
        ..RemoteObserved::default()
    }
}

/// A ray job after its first two reconciles (accepted, planned and submitted).
fn submitted(kind: &str) -> ProfileJob {
    let mut pj = job(kind);
    let d = decide(&obs(&pj), &settings());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    let d = decide(&o, &settings());
    advance(&mut pj, &d);
    pj
}

#[test]
fn a_ray_job_is_submitted_once_with_a_deterministic_id_after_the_finalizer() {
    let mut pj = job("ray");
    let d = decide(&obs(&pj), &settings());
    assert_eq!(d.actions, vec![Action::AddWorkDataFinalizer, Action::Plan]);
    let b = d.status.backend.clone().expect("backend");
    assert_eq!(b.kind, "ray");
    assert_eq!(b.address.as_deref(), Some("http://ray-head.ray:8265"));
    let id = format!("{UID}-1");
    assert_eq!(
        d.status.submission.as_ref().and_then(|s| s.id.as_deref()),
        Some(id.as_str()),
        "the submission id is on record before anything is submitted"
    );
    advance(&mut pj, &d);

    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    let d = decide(&o, &settings());
    assert_eq!(
        d.actions,
        vec![
            Action::AddFinalizer,
            Action::SubmitRemote {
                id: id.clone(),
                tasks: vec![0, 1, 2, 3]
            }
        ]
    );
    assert_eq!(d.status.phase, Some(Phase::Running));
    let running = cond(&d.status, "Running");
    assert_eq!(running.reason, "Submitted");
    assert!(running.message.contains("http://ray-head.ray:8265"));
    assert!(d.events.iter().any(|e| e.reason == "Submitted"));
    let tasks = d.status.tasks.clone().expect("task counts");
    assert_eq!((tasks.total, tasks.pending), (4, 4));
    assert_eq!(d.requeue, Some(Settings::default().progress_interval));
}

#[test]
fn the_operator_restarting_midway_never_submits_twice() {
    let pj = submitted("ray");
    // The run is there: it is followed, not submitted again.
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([0]));
    o.has_finalizer = true;
    o.remote = Some(live(vec![
        task(0, TaskPhase::Succeeded, 1),
        task(1, TaskPhase::Running, 2),
        task(2, TaskPhase::Running, 1),
        task(3, TaskPhase::Pending, 0),
    ]));
    let d = decide(&o, &settings());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let t = d.status.tasks.clone().expect("counts");
    assert_eq!(
        (
            t.total,
            t.pending,
            t.running,
            t.succeeded,
            t.failed,
            t.retried
        ),
        (4, 1, 2, 1, 0, 1),
        "the run's task states land in the local backend's fields"
    );
    assert_eq!(d.status.completed_tasks.as_deref(), Some("0"));
    assert_eq!(cond(&d.status, "Running").reason, "TasksRunning");

    // The operator stopped after recording the submission but before making it: the cluster
    // has no such run, so the same id is submitted (the cluster dedupes on it anyway).
    o.remote = Some(RemoteObserved::default());
    let d = decide(&o, &settings());
    assert_eq!(
        d.actions,
        vec![Action::SubmitRemote {
            id: format!("{UID}-1"),
            tasks: vec![1, 2, 3]
        }]
    );
}

#[test]
fn an_unreachable_cluster_is_retried_with_backoff_then_fails_the_job() {
    let mut pj = submitted("ray");
    let max = settings().max_consecutive_errors;
    let mut last_requeue = std::time::Duration::ZERO;
    for attempt in 1..max {
        let mut o = obs(&pj);
        o.plan = Some(plan(4, 1000));
        o.partials = Some(set([]));
        o.has_finalizer = true;
        o.remote = Some(RemoteObserved {
            unreachable: Some(
                "cannot reach the Ray dashboard (Jobs API) at http://ray-head.ray:8265: Connection refused".into(),
            ),
            ..RemoteObserved::default()
        });
        let d = decide(&o, &settings());
        assert!(
            d.actions.is_empty(),
            "nothing is submitted to a cluster that is down"
        );
        assert_eq!(d.status.phase, Some(Phase::Running));
        assert_eq!(d.status.consecutive_errors, Some(attempt));
        let ready = cond(&d.status, "Ready");
        assert_eq!(ready.reason, "ClusterUnavailable");
        assert!(
            ready.message.contains("Connection refused"),
            "{}",
            ready.message
        );
        assert!(
            ready
                .message
                .contains(&format!("attempt {attempt} of {max}"))
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.warning && e.reason == "ClusterUnavailable")
        );
        let requeue = d.requeue.expect("retried later");
        assert!(requeue > last_requeue, "the backoff grows");
        last_requeue = requeue;
        advance(&mut pj, &d);
    }
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([]));
    o.remote = Some(RemoteObserved {
        unreachable: Some("cannot reach the Ray dashboard".into()),
        ..RemoteObserved::default()
    });
    let d = decide(&o, &settings());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d.status, "Failed").reason, "ClusterUnavailable");

    // Reachable again before the limit: the count starts over.
    let mut pj = submitted("ray");
    let mut s = pj.status.clone().expect("status");
    s.consecutive_errors = Some(2);
    pj.status = Some(s);
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([]));
    o.remote = Some(live(vec![task(0, TaskPhase::Running, 1)]));
    assert_eq!(decide(&o, &settings()).status.consecutive_errors, None);
}

#[test]
fn a_dask_runner_that_gave_up_on_the_scheduler_is_a_new_attempt_after_backoff() {
    let pj = submitted("dask");
    let first = pj
        .status
        .as_ref()
        .and_then(|s| s.submission.as_ref())
        .and_then(|s| s.id.clone())
        .expect("id");
    assert_eq!(first, "events-d1");
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([2]));
    o.has_finalizer = true;
    o.remote = Some(RemoteObserved {
        unreachable: Some(
            "cannot connect to the Dask scheduler at tcp://dask-scheduler.dask:8786".into(),
        ),
        found: true,
        ended: true,
        ..RemoteObserved::default()
    });
    let d = decide(&o, &settings());
    assert_eq!(
        d.actions,
        vec![Action::SubmitRemote {
            id: "events-d2".into(),
            tasks: vec![0, 1, 3]
        }]
    );
    assert_eq!(d.status.attempt, Some(2));
    assert_eq!(cond(&d.status, "Ready").reason, "ClusterUnavailable");
    assert!(d.requeue.is_some());
}

#[test]
fn a_task_failing_on_the_cluster_after_its_retries_fails_the_job_and_stops_the_run() {
    let pj = submitted("ray");
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([0]));
    o.has_finalizer = true;
    let mut failed = task(1, TaskPhase::Failed, 4);
    failed.exit_code = Some(65);
    failed.message = Some("s3://lake/events/part-1.parquet: corrupt footer".into());
    o.remote = Some(live(vec![
        task(0, TaskPhase::Succeeded, 1),
        failed,
        task(2, TaskPhase::Running, 1),
        task(3, TaskPhase::Pending, 0),
    ]));
    let d = decide(&o, &settings());
    assert_eq!(d.actions, vec![Action::CancelRemote]);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let f = cond(&d.status, "Failed");
    assert_eq!(f.reason, "TooManyFailedTasks");
    assert!(
        f.message.contains("part-1.parquet: corrupt footer"),
        "{}",
        f.message
    );
    assert_eq!(d.status.failed_tasks.as_deref(), Some("1"));
    assert_eq!(d.status.tasks.as_ref().map(|t| t.retried), Some(3));
    let last = d.status.last_failures.last().expect("failure recorded");
    assert_eq!((last.task, last.reason.as_str()), (1, "BadData"));

    // Tolerated by maxFailedTasks: the run goes on.
    let mut pj = pj.clone();
    pj.spec.max_failed_tasks = Some(1);
    let mut o2 = obs(&pj);
    o2.plan = o.plan.clone();
    o2.partials = o.partials.clone();
    o2.remote = o.remote.clone();
    o2.has_finalizer = true;
    let d = decide(&o2, &settings());
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, Some(Phase::Running));
}

#[test]
fn a_run_that_ended_without_its_tasks_fails_them_with_its_words() {
    let pj = submitted("ray");
    let mut o = obs(&pj);
    o.plan = Some(plan(2, 1000));
    o.partials = Some(set([0]));
    o.remote = Some(RemoteObserved {
        found: true,
        ended: true,
        tasks: vec![
            task(0, TaskPhase::Succeeded, 1),
            task(1, TaskPhase::Running, 1),
        ],
        end_message: Some("the Ray job x-1 failed: driver OOM-killed".into()),
        ..RemoteObserved::default()
    });
    let d = decide(&o, &settings());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(
        cond(&d.status, "Failed")
            .message
            .contains("driver OOM-killed")
    );
    assert_eq!(
        d.status.last_failures.last().map(|f| f.reason.as_str()),
        Some("RunEnded")
    );
    assert!(
        !d.actions.contains(&Action::CancelRemote),
        "nothing left to stop"
    );
}

#[test]
fn every_partial_in_storage_starts_the_merge() {
    let pj = submitted("dask");
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([0, 1, 2, 3]));
    o.remote = Some(live(vec![]));
    let d = decide(&o, &settings());
    assert_eq!(d.status.phase, Some(Phase::Merging));
    assert!(matches!(d.actions[..], [Action::Merge { .. }]));
}

#[test]
fn deleting_a_job_midway_stops_the_remote_run_before_the_finalizer_goes() {
    let mut pj = submitted("ray");
    pj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-21T10:00:00Z".parse().expect("timestamp"),
    ));
    let mut o = obs(&pj);
    o.has_finalizer = true;
    // The run is stopped before its work data is deleted (nothing writes after).
    assert_eq!(
        decide(&o, &settings()).actions,
        vec![
            Action::CancelRemote,
            Action::RemoveFinalizer,
            Action::DeleteWorkData,
            Action::RemoveWorkDataFinalizer
        ]
    );
    // A finished job has nothing running: its finalizer just goes.
    let mut s = pj.status.clone().expect("status");
    s.phase = Some(Phase::Succeeded);
    s.work_data = Some(WorkDataStatus {
        state: Some(WORK_DATA_DELETED.into()),
        ..WorkDataStatus::default()
    });
    pj.status = Some(s.clone());
    let mut o = obs(&pj);
    o.has_finalizer = true;
    assert_eq!(
        decide(&o, &settings()).actions,
        vec![Action::RemoveFinalizer]
    );
    pj.metadata.deletion_timestamp = None;
    let mut o = obs(&pj);
    o.has_finalizer = true;
    assert_eq!(
        decide(&o, &settings()).actions,
        vec![Action::RemoveFinalizer]
    );
}

#[test]
fn suspend_stops_the_run_and_resume_submits_the_rest_as_a_new_attempt() {
    let mut pj = submitted("ray");
    pj.spec.suspend = true;
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([0, 1]));
    o.has_finalizer = true;
    o.remote = Some(live(vec![task(2, TaskPhase::Running, 1)]));
    let d = decide(&o, &settings());
    assert_eq!(d.actions, vec![Action::CancelRemote]);
    assert_eq!(d.status.phase, Some(Phase::Suspended));
    advance(&mut pj, &d);

    // The stopped run ended: its unfinished tasks are not failures while suspended.
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    o.partials = Some(set([0, 1]));
    o.has_finalizer = true;
    o.remote = Some(RemoteObserved {
        found: true,
        ended: true,
        end_message: Some("the Ray job was stopped".into()),
        ..RemoteObserved::default()
    });
    let d = decide(&o, &settings());
    let (plan_seen, partials, remote) = (o.plan.clone(), o.partials.clone(), o.remote.clone());
    drop(o);
    assert_eq!(d.status.phase, Some(Phase::Suspended));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.failed_tasks, None);
    advance(&mut pj, &d);

    pj.spec.suspend = false;
    let mut o2 = obs(&pj);
    o2.plan = plan_seen;
    o2.partials = partials;
    o2.remote = remote;
    o2.has_finalizer = true;
    let d = decide(&o2, &settings());
    assert_eq!(
        d.actions,
        vec![Action::SubmitRemote {
            id: format!("{UID}-2"),
            tasks: vec![2, 3]
        }]
    );
    assert_eq!(d.status.attempt, Some(2));
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert!(d.events.iter().any(|e| e.reason == "Resumed"));
}

#[test]
fn auto_sends_a_large_dataset_to_a_configured_cluster_and_says_why() {
    let mut pj = job("auto");
    let d = decide(&obs(&pj), &settings());
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 40_000_000_000));
    let d = decide(&o, &settings());
    let b = d.status.backend.clone().expect("chosen");
    assert_eq!(b.kind, "dask");
    assert_eq!(b.address.as_deref(), Some("tcp://dask-scheduler.dask:8786"));
    let reason = b.reason.unwrap_or_default();
    assert!(reason.contains("40.0 GB (10-100 GB)"), "{reason}");
    assert!(matches!(
        &d.actions[..],
        [Action::AddFinalizer, Action::SubmitRemote { id, .. }] if id == "events-d1"
    ));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == "BackendChosen" && e.message == reason)
    );

    // TRUTHOUND_DISTRIBUTED_BACKEND overrides the table.
    let mut prefer = settings();
    prefer.clusters.preferred = Some(BackendType::Ray);
    let mut pj = job("auto");
    let d = decide(&obs(&pj), &prefer);
    advance(&mut pj, &d);
    let mut o = obs(&pj);
    o.plan = Some(plan(4, 1000));
    let d = decide(&o, &prefer);
    assert_eq!(d.status.backend.map(|b| b.kind), Some("ray".into()));
}

#[test]
fn a_named_backend_without_an_address_is_an_invalid_spec() {
    let pj = job("dask");
    let d = decide(&obs(&pj), &Settings::default());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let f = cond(&d.status, "Failed");
    assert_eq!(f.reason, "InvalidSpec");
    assert!(
        f.message.contains("DASK_SCHEDULER_ADDRESS"),
        "{}",
        f.message
    );
}
