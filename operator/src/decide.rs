//! The reconciler's decisions: a pure function from what was observed (the ProfileJob, its worker
//! Job, the plan and partials in object storage, the workers' progress) to what to do (actions),
//! what the status says, and which events to emit.
//!
//! Level-triggered: nothing here remembers the previous call. The status is the record of what
//! was done, and every action is safe to repeat (deterministic names, "already exists" means
//! done, a re-run task finds its partial and stops), so an operator restart anywhere is just one
//! more call with the same observations.

use crate::access::AccessPolicy;
use crate::backend::choice::{self, Clusters};
use crate::backend::local;
use crate::backend::tasks::{TaskPhase, TaskState};
use crate::crd::{
    BackendChoice, BackendType, Phase, ProfileJob, ProfileJobStatus, ProgressStatus, ResultStatus,
    Submission, TaskCounts, TaskFailure, WorkDataStatus, WorkerMemoryStatus,
};
use crate::status::{self, *};
use std::collections::BTreeSet;
use std::time::Duration;
use time::OffsetDateTime;

/// Operator-wide settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Progress reports refresh a running job's status at most this often (bounds the status
    /// write rate); a merge pod is looked at this often.
    pub progress_interval: Duration,
    /// A running job is looked at again at least this often when nothing happens (no progress
    /// reported, no pod changed): stalls and deadlines are noticed by this timer.
    pub resync: Duration,
    /// A running task with no report for this long is stalled: its pod is replaced.
    pub stall_timeout: Duration,
    /// Consecutive transient errors (storage unreachable, access denied) tolerated while
    /// planning or merging before the job fails.
    pub max_consecutive_errors: u32,
    /// Merge in a pod instead of in the operator past this many partials ...
    pub merge_in_pod_tasks: u32,
    /// ... or past this many rows (a proxy for the partials' size) ...
    pub merge_in_pod_rows: u64,
    /// ... or past this many exact-value cells: columns × min(rows, the exact distinct limit),
    /// the most value counts the merged exact maps can hold (a wide table with a high
    /// `exactDistinctLimit` is large in memory whatever its row count).
    pub merge_in_pod_cells: u64,
    /// At most this many plans and merges run in the operator process at once (each holds a
    /// dataset listing or a run's partials in memory); more wait their turn.
    pub max_in_process_work: usize,
    /// The clusters the operator knows of, for `auto` and for jobs that name no address.
    pub clusters: Clusters,
    /// The local paths and URLs the operator may read and write for a job.
    pub access: AccessPolicy,
    /// A failed job's work data is deleted this long after it finished (unless the job says
    /// otherwise, spec.output.workDataTTLSecondsAfterFailure).
    pub failed_work_data_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            progress_interval: Duration::from_secs(10),
            resync: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            max_consecutive_errors: 5,
            merge_in_pod_tasks: 2_000,
            merge_in_pod_rows: 2_000_000_000,
            merge_in_pod_cells: 4_000_000,
            max_in_process_work: 2,
            clusters: Clusters::default(),
            access: AccessPolicy::default(),
            failed_work_data_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The plan of the current attempt, as far as decisions need it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSummary {
    pub id: String,
    pub uri: String,
    /// Rows of each task (index = task id); a column-based task counts the rows it reads.
    pub task_rows: Vec<u64>,
    /// Compressed bytes the tasks read (the dataset's listed size), for `auto`.
    pub bytes: u64,
    /// The profiled columns.
    pub columns: u32,
    /// The plan's exact distinct limit (value counts kept exactly per column).
    pub exact_limit: u64,
    /// Tasks whose partials came from the cache when planning: they are not run.
    pub reused: BTreeSet<u32>,
}

impl PlanSummary {
    pub fn tasks(&self) -> u32 {
        self.task_rows.len() as u32
    }

    /// The tasks to run: all but the reused ones.
    pub fn to_run(&self) -> Vec<u32> {
        (0..self.tasks())
            .filter(|t| !self.reused.contains(t))
            .collect()
    }

    /// What the worker Job runs: `None` for every task (pod index = task id), else the task of
    /// each index.
    pub fn worker_tasks(&self) -> Option<Vec<u32>> {
        (!self.reused.is_empty()).then(|| self.to_run())
    }

    /// The most exact value counts a merge of the run holds: columns × min(rows, exact limit).
    pub fn exact_cells(&self) -> u64 {
        let rows: u64 = self.task_rows.iter().sum();
        u64::from(self.columns).saturating_mul(rows.min(self.exact_limit))
    }
}

/// The worker Job as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkersObserved {
    pub name: String,
    pub suspended: bool,
    /// Pods running now.
    pub active: u32,
    /// Pods that failed (each failure of a retried task counts).
    pub failed_pods: u32,
    /// The Job's `completedIndexes`.
    pub completed: BTreeSet<u32>,
    /// The Job's `failedIndexes`: tasks whose retries are exhausted.
    pub failed: BTreeSet<u32>,
    /// The Job finished (`Complete` or `Failed` condition).
    pub finished: bool,
    /// Failures read from the pods (exit code and termination message).
    pub failures: Vec<TaskFailure>,
}

/// The merge pod's Job, when the merge runs in a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeObserved {
    Running,
    Succeeded,
    Failed(String),
}

/// A remote run (the Ray job, the Dask runner Job) as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteObserved {
    /// The cluster could not be asked, and why; nothing else here is known then.
    pub unreachable: Option<String>,
    /// The run exists on the cluster.
    pub found: bool,
    /// The tasks' states, from the driver's lines.
    pub tasks: Vec<TaskState>,
    /// The run is over (its tasks will change no more).
    pub ended: bool,
    /// How it ended when that was not by running every task (failed, stopped): its message
    /// and the tail of its logs.
    pub end_message: Option<String>,
    /// The run's object (the Dask runner Job) exists under the run's name but is another
    /// owner's: which one. Nothing else here is known then.
    pub foreign: Option<String>,
}

/// Progress reported by the workers (gRPC), summed for the job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressObserved {
    /// Rows done by tasks that are still running.
    pub running_rows: u64,
    /// Rows per second over the recent reports.
    pub rows_per_second: f64,
    /// Running tasks with no report for longer than the stall timeout.
    pub stalled: Vec<u32>,
    /// The running worker closest to its memory limit (of those that have one).
    pub memory: Option<WorkerMemory>,
}

/// One worker's memory against its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerMemory {
    pub task: u32,
    pub rss_bytes: u64,
    pub limit_bytes: u64,
}

/// A worker at this share of its memory limit is warned of (the ancestor's thresholds) ...
pub const MEMORY_WARNING_PERCENT: f64 = 80.0;
/// ... and this one is critical: the OOM killer is near.
pub const MEMORY_CRITICAL_PERCENT: f64 = 95.0;

/// `Warning` or `Critical` (or `None` below the warning) for a share of the limit.
pub fn memory_level(percent: f64) -> Option<&'static str> {
    if percent >= MEMORY_CRITICAL_PERCENT {
        Some("Critical")
    } else if percent >= MEMORY_WARNING_PERCENT {
        Some("Warning")
    } else {
        None
    }
}

fn level_rank(level: Option<&str>) -> u8 {
    match level {
        Some("Critical") => 2,
        Some("Warning") => 1,
        _ => 0,
    }
}

/// Everything a decision is made from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: OffsetDateTime,
    pub job: &'a ProfileJob,
    /// The plan in object storage, when it was read.
    pub plan: Option<PlanSummary>,
    /// The worker Job; `None` when it does not exist.
    pub workers: Option<WorkersObserved>,
    /// Tasks whose partial profile is in object storage, when they were listed.
    pub partials: Option<BTreeSet<u32>>,
    pub progress: ProgressObserved,
    /// The merge Job, when the merge runs in a pod and the Job exists.
    pub merge: Option<MergeObserved>,
    /// The remote run of a spark, dask or ray job, when it was looked at.
    pub remote: Option<RemoteObserved>,
    /// Our finalizer is on the object.
    pub has_finalizer: bool,
    /// A child this reconcile would read or create (the worker Job, the merge Job, the Dask
    /// runner Job, the progress-token Secret) exists under its deterministic name but is not
    /// this job's (no controller reference with its uid): which one, e.g. `Job events-w1`. It is
    /// never read as this job's; the job waits for it to go.
    pub foreign: Option<String>,
    /// The work-data finalizer is on the object.
    pub has_work_data_finalizer: bool,
}

impl<'a> Observed<'a> {
    /// The job alone, with nothing else looked at yet.
    pub fn job(now: OffsetDateTime, job: &'a ProfileJob) -> Self {
        Observed {
            now,
            job,
            plan: None,
            workers: None,
            partials: None,
            progress: ProgressObserved::default(),
            merge: None,
            remote: None,
            has_finalizer: false,
            foreign: None,
            has_work_data_finalizer: false,
        }
    }
}

/// Something to do. Each is idempotent.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// List the dataset, plan the tasks and write the plan (reusing a plan already written).
    Plan,
    /// Create the worker Job (and its progress-token Secret) for `tasks` tasks.
    /// `tasks` pods; `only`: the task of each pod index (`None`: index = task id).
    CreateWorkers {
        name: String,
        tasks: u32,
        only: Option<Vec<u32>>,
    },
    /// Set the worker Job's `suspend`.
    SuspendWorkers(bool),
    /// Delete the worker Job and its pods (completed partials stay).
    DeleteWorkers,
    /// Delete the pods of stalled tasks; the Job replaces them.
    ReplacePods(Vec<u32>),
    /// Merge the partials and write the profile; `in_pod` runs it as a Job.
    Merge { missing: Vec<u32>, in_pod: bool },
    /// The merge Job succeeded: read the summary it wrote and finish.
    CollectMerge,
    /// TTL expired: delete the ProfileJob (children go with it).
    DeleteJob,
    /// Remove our finalizer (nothing external is left to cancel).
    RemoveFinalizer,
    /// Add our finalizer, so that deleting the job first stops its remote work.
    AddFinalizer,
    /// Delete the job's work data (`.truthound/<uid>/`) and record it in the status.
    DeleteWorkData,
    /// Add the work-data finalizer, so that deleting the job first deletes its work data.
    AddWorkDataFinalizer,
    /// Remove the work-data finalizer (the work data is deleted, kept, or given up).
    RemoveWorkDataFinalizer,
    /// Submit `tasks` to the remote cluster as run `id` (deterministic: a second submission
    /// of the same id finds the first).
    SubmitRemote { id: String, tasks: Vec<u32> },
    /// Stop the remote run (completed partials stay).
    CancelRemote,
}

/// A Kubernetes event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What to do, and what the status says afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: ProfileJobStatus,
    pub actions: Vec<Action>,
    pub events: Vec<EventNote>,
    /// When to look again (in addition to watch events).
    pub requeue: Option<Duration>,
    /// Tasks failed for good as this decision saw them (for the event log: their failures
    /// are final, the others' are retried).
    pub failed_tasks: BTreeSet<u32>,
}

/// The worker Job's name: deterministic, so a repeated create finds the first one. Kubernetes
/// puts it in a label (63 characters at most), so long names are cut and made unique again with
/// a hash of the ProfileJob's uid.
pub fn workers_name(job_name: &str, uid: &str, attempt: i32) -> String {
    child_name(job_name, uid, &format!("w{attempt}"))
}

/// The id of a remote run: the Ray job's submission id, the Dask runner Job's name.
pub fn remote_id(kind: &str, job_name: &str, uid: &str, attempt: i32) -> String {
    match kind {
        "ray" | "spark" => crate::backend::ray::submission_id(uid, attempt.max(1) as u32),
        _ => child_name(job_name, uid, &format!("{}{attempt}", &kind[..1])),
    }
}

/// The remote backend of a job's status (`dask`, `ray`), if it has one.
pub fn remote_kind(status: &ProfileJobStatus) -> Option<&str> {
    status
        .backend
        .as_ref()
        .map(|b| b.kind.as_str())
        .filter(|k| matches!(*k, "dask" | "ray" | "spark"))
}

/// Retry delay after a failed attempt: exponential in the consecutive errors, capped.
pub fn backoff(consecutive: u32) -> Duration {
    Duration::from_secs((5u64 << consecutive.min(6)).min(300))
}

/// The merge Job's name.
pub fn merge_name(job_name: &str, uid: &str, attempt: i32) -> String {
    child_name(job_name, uid, &format!("m{attempt}"))
}

fn child_name(job_name: &str, uid: &str, suffix: &str) -> String {
    let full = format!("{job_name}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(uid.as_bytes());
    let tail = format!("-{:08x}-{suffix}", hash as u32);
    let mut head = &job_name[..63 - tail.len()];
    head = head.trim_end_matches(['-', '.']);
    format!("{head}{tail}")
}

/// Where a job's working files live: `<dir of output>/.truthound/<uid>`.
pub fn work_prefix(output_uri: &str, uid: &str) -> String {
    let dir = match output_uri.rfind('/') {
        Some(i) if !output_uri[..i].ends_with('/') => &output_uri[..i],
        _ => output_uri,
    };
    format!("{dir}/.truthound/{uid}")
}

/// Checks of the spec that the schema cannot express. `Err` is a message for the user.
pub fn validate(job: &ProfileJob) -> Result<(), String> {
    let spec = &job.spec;
    truthound_profile::dataset::Location::parse(&spec.dataset.uri)
        .map_err(|e| format!("spec.dataset.uri: {e}"))?;
    let out = truthound_profile::dataset::Location::parse(&spec.output.uri)
        .map_err(|e| format!("spec.output.uri: {e}"))?;
    if out.glob.is_some() || spec.output.uri.ends_with('/') {
        return Err(format!(
            "spec.output.uri `{}` must name a file (the profile JSON), not a prefix or glob",
            spec.output.uri
        ));
    }
    let extras = spec
        .dataset
        .options
        .extra
        .keys()
        .chain(spec.output.options.iter().flat_map(|o| o.extra.keys()));
    for k in extras {
        if truthound_profile::dataset::is_secret_key(k) {
            return Err(format!(
                "storage option `{k}` looks like a secret: put it in the Secret named by credentialsSecretRef"
            ));
        }
    }
    let p = &spec.partitioning;
    if p.strategy == crate::crd::PartitionStrategy::Hash && p.hash_column.is_none() {
        return Err("spec.partitioning.strategy hash needs spec.partitioning.hashColumn".into());
    }
    if spec.backend.kind == crate::crd::BackendType::Spark
        && p.target_task_bytes.is_some_and(|t| t > 0)
    {
        return Err(
            "spec.partitioning.targetTaskBytes cuts files into ranges, and the spark backend reads \
             whole CSV and NDJSON files: leave it unset (or 0) with spec.backend.type spark"
                .into(),
        );
    }
    if spec.dataset.columns.as_ref().is_some_and(Vec::is_empty) {
        return Err("spec.dataset.columns is empty: omit it to profile every column".into());
    }
    // The schema's CEL rule says the same; this catches a cluster without CEL validation.
    if let Some(s) = &spec.profile.sampling
        && !(s.fraction > 0.0 && s.fraction <= 1.0)
    {
        return Err(format!(
            "spec.profile.sampling.fraction must be more than 0 and at most 1, got {}",
            s.fraction
        ));
    }
    Ok(())
}

/// The backend that will run the job, and why; `Ok(None)` for `auto`, which is chosen once
/// the dataset is listed; `Err` when it cannot run here.
pub fn choose_backend(
    job: &ProfileJob,
    clusters: &Clusters,
) -> Result<Option<BackendChoice>, String> {
    match job.spec.backend.kind {
        BackendType::Auto => Ok(None),
        kind => choice::named(kind, &job.spec.backend, clusters).map(Some),
    }
}

/// The decision for one reconcile.
pub fn decide(obs: &Observed, settings: &Settings) -> Decision {
    let job = obs.job;
    let generation = job.metadata.generation;
    let mut d = Decision {
        status: job.status.clone().unwrap_or_default(),
        actions: Vec::new(),
        events: Vec::new(),
        requeue: None,
        failed_tasks: BTreeSet::new(),
    };
    d.status.observed_generation = generation;

    if job.metadata.deletion_timestamp.is_some() {
        // Children carry owner references and go with the ProfileJob. A remote run lives on
        // its cluster: the finalizer holds the deletion until it is stopped.
        let active = d.status.phase.is_some_and(|p| !p.is_finished());
        if obs.has_finalizer {
            match remote_kind(&d.status) {
                Some(_) if active => d.actions.push(Action::CancelRemote),
                Some(_) => {}
                None => d.actions.push(Action::DeleteWorkers),
            }
            d.actions.push(Action::RemoveFinalizer);
        }
        // The work data goes before the job does: once the ProfileJob is gone, nothing would
        // know where it is. Running workers are stopped first, so that none writes after.
        if obs.has_work_data_finalizer {
            if work_data_pending(job, &d.status) {
                if active && remote_kind(&d.status).is_none() && obs.workers.is_some() {
                    // Its workers first; the work data once they are gone.
                    if !obs.has_finalizer {
                        d.actions.push(Action::DeleteWorkers);
                    }
                    d.requeue = Some(Duration::from_secs(2));
                    return d;
                }
                d.actions.push(Action::DeleteWorkData);
            }
            d.actions.push(Action::RemoveWorkDataFinalizer);
        }
        return d;
    }

    match d.status.phase {
        None => first_visit(obs, settings, &mut d),
        Some(Phase::Pending) => pending(obs, settings, &mut d),
        Some(Phase::Running) | Some(Phase::Suspended) | Some(Phase::Queued) => {
            running(obs, settings, &mut d)
        }
        Some(Phase::Merging) => merging(obs, settings, &mut d),
        Some(Phase::Succeeded) | Some(Phase::Failed) => finished(obs, settings, &mut d),
    }
    // Before anything writes work data (the plan, on the first visit), the finalizer that
    // deletes it with the job.
    if work_data_pending(job, &d.status) && !obs.has_work_data_finalizer {
        d.actions.insert(0, Action::AddWorkDataFinalizer);
    }
    if obs.has_work_data_finalizer
        && !work_data_pending(job, &d.status)
        && !d.actions.contains(&Action::DeleteWorkData)
    {
        d.actions.push(Action::RemoveWorkDataFinalizer);
    }
    d
}

/// The job's work data (`.truthound/<uid>/`) exists or may, and is to be deleted some day: not
/// kept (spec.output.keepWorkData), not deleted or given up yet, and a plan was to be written
/// (a job refused as invalid wrote nothing, and its output may be somewhere the operator must
/// not touch).
pub fn work_data_pending(job: &ProfileJob, status: &ProfileJobStatus) -> bool {
    !job.spec.output.keep_work_data
        && status
            .submission
            .as_ref()
            .is_some_and(|s| s.plan_uri.is_some())
        && status
            .work_data
            .as_ref()
            .and_then(|w| w.state.as_deref())
            .is_none_or(|s| s != WORK_DATA_DELETED && s != WORK_DATA_GIVEN_UP)
}

/// `status.workData.state` values.
pub const WORK_DATA_DELETED: &str = "Deleted";
pub const WORK_DATA_KEPT: &str = "Kept";
pub const WORK_DATA_GIVEN_UP: &str = "GivenUp";
/// Failed deletions of a job's work data before it is given up (and left to its owner).
pub const WORK_DATA_ATTEMPTS: u32 = 5;

fn first_visit(obs: &Observed, settings: &Settings, d: &mut Decision) {
    let job = obs.job;
    let now = obs.now;
    let generation = job.metadata.generation;
    let checked = validate(job)
        .and_then(|()| settings.access.check_spec(&job.spec))
        .and_then(|()| choose_backend(job, &settings.clusters));
    let backend = match checked {
        Ok(b) => b,
        Err(message) => {
            cond(
                d,
                ACCEPTED,
                false,
                "InvalidSpec",
                &message,
                (now, generation),
            );
            fail(d, "InvalidSpec", &message, now, generation);
            return;
        }
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let prefix = work_prefix(&job.spec.output.uri, &uid);
    d.status.phase = Some(Phase::Pending);
    d.status.attempt = Some(1);
    d.status.start_time = Some(rfc3339(now));
    let id = backend.as_ref().map(|b| match b.kind.as_str() {
        "local" => workers_name(&name, &uid, 1),
        kind => remote_id(kind, &name, &uid, 1),
    });
    d.status.submission = Some(Submission {
        attempt: 1,
        plan_id: None,
        plan_uri: Some(format!("{prefix}/plan")),
        id,
    });
    let msg = match &backend {
        Some(b) => format!(
            "profiling {} with the {} backend{}",
            job.spec.dataset.uri,
            b.kind,
            b.address
                .as_ref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default()
        ),
        None => format!(
            "profiling {}; the backend is chosen once the dataset is listed (auto)",
            job.spec.dataset.uri
        ),
    };
    d.status.backend = backend;
    cond(d, ACCEPTED, true, "Accepted", &msg, (now, generation));
    cond(
        d,
        READY,
        false,
        "Planning",
        "planning the tasks",
        (now, generation),
    );
    d.events.push(EventNote {
        warning: false,
        reason: "Accepted".into(),
        message: msg,
    });
    if let Some(warning) = token_in_spec(job) {
        d.events.push(warning);
    }
    d.actions.push(Action::Plan);
}

/// A Spark Connect token written in `spec.backend.spark.connectUrl` is accepted (the URL form
/// allows it, and refusing it would break existing jobs) but warned about: whoever may read the
/// ProfileJob reads it. The status and events never show it.
fn token_in_spec(job: &ProfileJob) -> Option<EventNote> {
    let url = job.spec.backend.spark.as_ref()?.connect_url.as_deref()?;
    let has_token = crate::backend::spark::connect::ConnectUrl::parse(url)
        .map(|u| u.token.is_some())
        .unwrap_or_else(|_| crate::backend::spark::connect::redact(url) != url);
    has_token.then(|| EventNote {
        warning: true,
        reason: "TokenInSpec".into(),
        message: "token in spec; use tokenSecretRef: spec.backend.spark.connectUrl carries a \
                  Spark Connect token, readable by anyone who may read this ProfileJob; put it \
                  in a Secret and name it in spec.backend.spark.tokenSecretRef"
            .into(),
    })
}

fn pending(obs: &Observed, settings: &Settings, d: &mut Decision) {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    if deadline_passed(obs) {
        fail(
            d,
            "DeadlineExceeded",
            "activeDeadlineSeconds passed before the tasks were planned",
            now,
            generation,
        );
        return;
    }
    let Some(plan) = &obs.plan else {
        d.actions.push(Action::Plan);
        return;
    };
    if let Some(sub) = d.status.submission.as_mut() {
        sub.plan_id = Some(plan.id.clone());
    }
    d.status.consecutive_errors = None;
    if d.status.backend.is_none() {
        // auto: the dataset is listed now, so its size can choose.
        let job = obs.job;
        let choice = choice::auto(&job.spec.backend, &settings.clusters, plan.bytes);
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let id = match choice.kind.as_str() {
            "local" => workers_name(name, uid, 1),
            kind => remote_id(kind, name, uid, 1),
        };
        if let Some(sub) = d.status.submission.as_mut() {
            sub.id = Some(id);
        }
        d.events.push(EventNote {
            warning: false,
            reason: "BackendChosen".into(),
            message: choice.reason.clone().unwrap_or_default(),
        });
        d.status.backend = Some(choice);
    }
    if plan.tasks() == 0 {
        // An empty dataset has nothing to run: its profile is merged from no partials.
        enter_merging(d, Vec::new(), plan, settings, now, generation);
        return;
    }
    if wait_for_foreign(obs, settings, d) {
        return;
    }
    if plan.to_run().is_empty() {
        // Every partial came from the cache: nothing to run, whatever the backend.
        counts_and_progress(obs, plan, &plan.reused, &BTreeSet::new(), 0, 0, d);
        enter_merging(d, Vec::new(), plan, settings, now, generation);
        return;
    }
    if remote_kind(&d.status).is_some() {
        counts_and_progress(obs, plan, &BTreeSet::new(), &BTreeSet::new(), 0, 0, d);
        if obs.job.spec.suspend {
            // Nothing is submitted: the run starts on resume.
            suspend(d, now, generation);
        } else {
            submit_remote(obs, plan.to_run(), d);
        }
        d.requeue = Some(settings.progress_interval);
        return;
    }
    let name = workers_name_of(obs);
    let to_run = plan.to_run().len() as u32;
    d.actions.push(Action::CreateWorkers {
        name: name.clone(),
        tasks: to_run,
        only: plan.worker_tasks(),
    });
    let reused = match plan.reused.len() {
        0 => String::new(),
        n => format!(" ({n} of {} reused from the cache)", plan.tasks()),
    };
    let msg = format!("worker Job {name} runs {to_run} tasks{reused}");
    started(d, "WorkersCreated", msg, (now, generation));
    counts_and_progress(obs, plan, &BTreeSet::new(), &BTreeSet::new(), 0, 0, d);
    // Suspended at creation: the Job is created suspended (mirrored) and the phase says so.
    if obs.job.spec.suspend {
        suspend(d, now, generation);
    } else if let Some(queue) = local::queue_name(obs.job) {
        // Created suspended for the queue to admit.
        queued(d, &name, queue, (now, generation));
    }
    d.requeue = Some(look_again(obs, settings));
}

fn running(obs: &Observed, settings: &Settings, d: &mut Decision) {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    let Some(plan) = &obs.plan else {
        // The plan is written before the workers are created; if it is gone, plan again (the
        // planner writes the same plan for the same dataset).
        d.actions.push(Action::Plan);
        return;
    };
    if deadline_passed(obs) && obs.foreign.is_some() {
        // Nothing of this job runs: it fails, and the other owner's child is left alone.
        let msg = format!(
            "activeDeadlineSeconds ({}) passed while waiting for the previous {} to be deleted",
            obs.job.spec.active_deadline_seconds.unwrap_or_default(),
            obs.foreign.as_deref().unwrap_or_default()
        );
        fail(d, "DeadlineExceeded", &msg, now, generation);
        return;
    }
    if wait_for_foreign(obs, settings, d) {
        return;
    }
    if remote_kind(&d.status).is_some() {
        remote_running(obs, plan, settings, d);
        return;
    }
    let total = plan.tasks();
    let mut completed: BTreeSet<u32> = BTreeSet::new();
    let mut failed: BTreeSet<u32> = BTreeSet::new();
    if let Some(w) = &obs.workers {
        completed.extend(w.completed.iter().copied().filter(|&t| t < total));
        failed.extend(w.failed.iter().copied().filter(|&t| t < total));
        status::push_failures(&mut d.status.last_failures, w.failures.iter().cloned());
    }
    if let Some(p) = &obs.partials {
        completed.extend(p.iter().copied().filter(|&t| t < total));
    }
    // A partial in storage is the truth: a task whose partial exists is done, whatever its pods.
    failed.retain(|t| !completed.contains(t));
    // A finished Job that left tasks neither done nor failed lost their partials (deleted from
    // storage meanwhile): those tasks count as failed rather than leaving the job stuck.
    if let (Some(w), Some(_)) = (&obs.workers, &obs.partials)
        && w.finished
    {
        let lost: Vec<u32> = (0..total)
            .filter(|t| !completed.contains(t) && !failed.contains(t))
            .collect();
        for t in lost {
            failed.insert(t);
            status::push_failures(
                &mut d.status.last_failures,
                [TaskFailure {
                    task: t,
                    reason: "PartialMissing".into(),
                    message:
                        "the worker Job finished but the task's partial profile is not in storage"
                            .into(),
                    time: rfc3339(now),
                }],
            );
        }
    }
    let (running, retried) = workers_running_retried(obs, total, &completed, &failed, d);
    counts_and_progress(obs, plan, &completed, &failed, running, retried, d);
    d.failed_tasks.clone_from(&failed);

    if settle(
        obs,
        plan,
        settings,
        d,
        (&completed, &failed),
        Some(Action::DeleteWorkers),
        "",
    ) {
        return;
    }

    let suspended_now = d.status.phase == Some(Phase::Suspended);
    match &obs.workers {
        None => {
            if obs.job.spec.suspend {
                // Nothing runs; creating the Job suspended would be the same.
                suspend(d, now, generation);
                return;
            }
            // Deleted by someone, or the operator stopped between writing the status and
            // creating the Job. Re-creating is safe: tasks with a partial exit at once.
            let name = workers_name_of(obs);
            d.actions.push(Action::CreateWorkers {
                name: name.clone(),
                tasks: plan.to_run().len() as u32,
                only: plan.worker_tasks(),
            });
            d.events.push(EventNote {
                warning: suspended_now,
                reason: "WorkersCreated".into(),
                message: format!(
                    "worker Job {name} (re)created for {} remaining tasks",
                    total as usize - completed.len() - failed.len()
                ),
            });
            if let Some(queue) = local::queue_name(obs.job) {
                if suspended_now {
                    resumed(d, "the worker Job waits for the queue", (now, generation));
                }
                queued(d, &name, queue, (now, generation));
                d.requeue = Some(look_again(obs, settings));
                return;
            }
        }
        Some(w) => {
            let queue = local::queue_name(obs.job);
            if obs.job.spec.suspend {
                if queue.is_some() {
                    // The Job's `suspend` is the queue's: Kueue would start an admitted Job that
                    // the operator suspended. Stopping means deleting it (partials stay); resume
                    // re-creates it, suspended, for the queue to admit again.
                    d.actions.push(Action::DeleteWorkers);
                } else if !w.suspended {
                    d.actions.push(Action::SuspendWorkers(true));
                }
                suspend(d, now, generation);
                return;
            }
            if w.suspended {
                if let Some(queue) = queue {
                    if suspended_now {
                        resumed(d, "the worker Job waits for the queue", (now, generation));
                    }
                    queued(d, &w.name, queue, (now, generation));
                    d.requeue = Some(look_again(obs, settings));
                    return;
                }
                d.actions.push(Action::SuspendWorkers(false));
            }
            if d.status.phase == Some(Phase::Queued) {
                d.events.push(EventNote {
                    warning: false,
                    reason: "Admitted".into(),
                    message: format!("the queue admitted worker Job {}: tasks run", w.name),
                });
            }
            if !obs.progress.stalled.is_empty() {
                let stalled: Vec<u32> = obs
                    .progress
                    .stalled
                    .iter()
                    .copied()
                    .filter(|t| !completed.contains(t) && !failed.contains(t))
                    .collect();
                if !stalled.is_empty() {
                    d.events.push(EventNote {
                        warning: true,
                        reason: "TaskStalled".into(),
                        message: format!(
                            "no heartbeat from task(s) {} for {}s: replacing their pods",
                            bounded_ranges(&stalled.iter().copied().collect()).unwrap_or_default(),
                            settings.stall_timeout.as_secs()
                        ),
                    });
                    d.actions.push(Action::ReplacePods(stalled));
                }
            }
        }
    }
    if suspended_now {
        resumed(d, "workers resume", (now, generation));
    }
    d.status.phase = Some(Phase::Running);
    let msg = format!("{} of {total} tasks done", completed.len());
    cond(d, RUNNING, true, "TasksRunning", &msg, (now, generation));
    cond(d, READY, false, "Running", &msg, (now, generation));
    d.requeue = Some(look_again(obs, settings));
}

/// What ends a run whoever runs its tasks: the deadline, more failed tasks than tolerated, or
/// every task over (the merge). `stop` stops the tasks still running; `on` says where they ran
/// (" on the ray cluster"). True when one of them decided.
fn settle(
    obs: &Observed,
    plan: &PlanSummary,
    settings: &Settings,
    d: &mut Decision,
    (completed, failed): (&BTreeSet<u32>, &BTreeSet<u32>),
    stop: Option<Action>,
    on: &str,
) -> bool {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    let total = plan.tasks();
    if deadline_passed(obs) {
        d.actions.extend(stop);
        let msg = format!(
            "activeDeadlineSeconds ({}) passed with {} of {total} tasks done",
            obs.job.spec.active_deadline_seconds.unwrap_or_default(),
            completed.len()
        );
        fail(d, "DeadlineExceeded", &msg, now, generation);
        return true;
    }
    let max_failed = obs.job.spec.max_failed_tasks.unwrap_or(0).max(0) as usize;
    if failed.len() > max_failed {
        d.actions.extend(stop);
        let last = d
            .status
            .last_failures
            .iter()
            .rev()
            .find(|f| failed.contains(&f.task))
            .map(|f| format!("; task {}: {}: {}", f.task, f.reason, f.message))
            .unwrap_or_default();
        let msg = format!(
            "{} task(s) failed{on} ({}), more than maxFailedTasks ({max_failed}){last}",
            failed.len(),
            bounded_ranges(failed).unwrap_or_default()
        );
        fail(d, "TooManyFailedTasks", &msg, now, generation);
        return true;
    }
    if completed.len() + failed.len() == total as usize && obs.partials.is_some() {
        let missing: Vec<u32> = failed.iter().copied().collect();
        enter_merging(d, missing, plan, settings, now, generation);
        return true;
    }
    false
}

/// Submits `tasks` as the current attempt's remote run (the finalizer first, so that a deletion
/// from now on stops the run).
fn submit_remote(obs: &Observed, tasks: Vec<u32>, d: &mut Decision) {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    let job = obs.job;
    let attempt = d.status.attempt.unwrap_or(1).max(1);
    let kind = remote_kind(&d.status).unwrap_or("ray").to_string();
    let id = remote_id(
        &kind,
        job.metadata.name.as_deref().unwrap_or_default(),
        job.metadata.uid.as_deref().unwrap_or_default(),
        attempt,
    );
    if let Some(sub) = d.status.submission.as_mut() {
        sub.id = Some(id.clone());
        sub.attempt = attempt;
    }
    if !obs.has_finalizer {
        d.actions.push(Action::AddFinalizer);
    }
    let address = d
        .status
        .backend
        .as_ref()
        .and_then(|b| b.address.clone())
        .unwrap_or_default();
    let what = match kind.as_str() {
        "dask" => format!(
            "the Dask runner Job {id} runs {} tasks on {address}",
            tasks.len()
        ),
        _ => format!(
            "{} tasks submitted to the {kind} cluster at {address} as {id}",
            tasks.len()
        ),
    };
    d.actions.push(Action::SubmitRemote { id, tasks });
    started(d, "Submitted", what, (now, generation));
}

/// The tasks were handed to whatever runs them: the job is Running, and says how.
fn started(d: &mut Decision, reason: &str, msg: String, at: (OffsetDateTime, Option<i64>)) {
    d.status.phase = Some(Phase::Running);
    cond(d, RUNNING, true, reason, &msg, at);
    cond(d, READY, false, "Running", "tasks are running", at);
    d.events.push(EventNote {
        warning: false,
        reason: reason.into(),
        message: msg,
    });
}

/// The worker Job waits, suspended, for the queue to admit it.
fn queued(d: &mut Decision, job: &str, queue: &str, at: (OffsetDateTime, Option<i64>)) {
    let msg = format!("worker Job {job} waits for admission by the queue {queue}");
    if d.status.phase != Some(Phase::Queued) {
        d.events.push(EventNote {
            warning: false,
            reason: "WaitingForAdmission".into(),
            message: msg.clone(),
        });
    }
    d.status.phase = Some(Phase::Queued);
    cond(d, RUNNING, false, "WaitingForAdmission", &msg, at);
    cond(d, READY, false, "WaitingForAdmission", &msg, at);
}

/// `spec.suspend` went back to false; `how` says how the work goes on.
fn resumed(d: &mut Decision, how: &str, at: (OffsetDateTime, Option<i64>)) {
    d.events.push(EventNote {
        warning: false,
        reason: "Resumed".into(),
        message: format!("spec.suspend is false: {how}; completed tasks are kept"),
    });
    cond(d, SUSPENDED, false, "Resumed", "the job was resumed", at);
}

/// A running job of a remote backend: the partials in storage and the run's task states say
/// what is done; the run is (re)submitted, stopped or left alone.
fn remote_running(obs: &Observed, plan: &PlanSummary, settings: &Settings, d: &mut Decision) {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    let total = plan.tasks();
    let remote = obs.remote.clone().unwrap_or_default();
    let kind = remote_kind(&d.status).unwrap_or("remote").to_string();

    if let Some(message) = &remote.unreachable {
        // The cluster did not answer: retried with backoff, then the job fails. Completed
        // partials stay for a later run.
        let errors = d.status.consecutive_errors.unwrap_or(0) + 1;
        let max = settings.max_consecutive_errors;
        if errors >= max {
            let msg = format!("{message} ({errors} attempts)");
            fail(d, "ClusterUnavailable", &msg, now, generation);
            return;
        }
        d.status.consecutive_errors = Some(errors);
        if remote.found && remote.ended && !obs.job.spec.suspend {
            // The run gave up on the cluster (the Dask runner exits when it cannot connect):
            // the retry is a new attempt, which waits for the cluster again.
            let done: BTreeSet<u32> = obs.partials.clone().unwrap_or_default();
            let remaining: Vec<u32> = (0..total).filter(|t| !done.contains(t)).collect();
            d.status.attempt = Some(d.status.attempt.unwrap_or(1).max(1) + 1);
            submit_remote(obs, remaining, d);
        }
        let msg = format!("{message} (attempt {errors} of {max}, retrying)");
        cond(
            d,
            READY,
            false,
            "ClusterUnavailable",
            &msg,
            (now, generation),
        );
        d.events.push(EventNote {
            warning: true,
            reason: "ClusterUnavailable".into(),
            message: msg,
        });
        d.requeue = Some(backoff(errors));
        return;
    }
    if remote.found {
        // The cluster answered for the run: the failures in a row are over. (A run not found
        // is submitted again below, and that submission's outcome counts.)
        d.status.consecutive_errors = None;
    }

    let mut completed: BTreeSet<u32> = BTreeSet::new();
    let mut failed: BTreeSet<u32> = BTreeSet::new();
    if let Some(p) = &obs.partials {
        completed.extend(p.iter().copied().filter(|&t| t < total));
    }
    for t in remote.tasks.iter().filter(|t| t.task < total) {
        match t.phase {
            TaskPhase::Succeeded => {
                completed.insert(t.task);
            }
            TaskPhase::Failed => {
                failed.insert(t.task);
            }
            _ => {}
        }
    }
    failed.retain(|t| !completed.contains(t));
    let reasons = crate::backend::tasks::failures(&remote.tasks);
    status::push_failures(
        &mut d.status.last_failures,
        reasons
            .into_iter()
            .filter(|f| failed.contains(&f.task))
            .map(|f| TaskFailure {
                time: rfc3339(now),
                ..f
            }),
    );
    if remote.ended {
        // The run is over: a task it did not finish will not be finished by it.
        let lost: BTreeSet<u32> = (0..total)
            .filter(|t| !completed.contains(t) && !failed.contains(t))
            .collect();
        if !lost.is_empty() && d.status.phase != Some(Phase::Suspended) {
            let how = remote
                .end_message
                .clone()
                .unwrap_or_else(|| "the run ended before running the task".into());
            status::push_failures(
                &mut d.status.last_failures,
                lost.iter().map(|&t| TaskFailure {
                    task: t,
                    reason: "RunEnded".into(),
                    message: how.clone(),
                    time: rfc3339(now),
                }),
            );
            failed.extend(lost);
        }
    }
    d.failed_tasks.clone_from(&failed);
    let running = remote
        .tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Running && !completed.contains(&t.task))
        .count() as u32;
    let retried = remote
        .tasks
        .iter()
        .map(|t| t.attempts.saturating_sub(1))
        .sum::<u32>()
        .max(d.status.tasks.as_ref().map(|t| t.retried).unwrap_or(0));
    counts_and_progress(obs, plan, &completed, &failed, running, retried, d);
    let live = remote.found && !remote.ended;

    let on = format!(" on the {kind} cluster");
    let stop = live.then_some(Action::CancelRemote);
    if settle(obs, plan, settings, d, (&completed, &failed), stop, &on) {
        return;
    }

    let suspended_now = d.status.phase == Some(Phase::Suspended);
    if obs.job.spec.suspend {
        if live {
            d.actions.push(Action::CancelRemote);
        }
        suspend(d, now, generation);
        d.requeue = Some(settings.progress_interval);
        return;
    }
    let remaining: Vec<u32> = (0..total)
        .filter(|t| !completed.contains(t) && !failed.contains(t))
        .collect();
    if suspended_now {
        if remote.found {
            // The stopped run cannot be restarted: the remaining tasks are a new attempt.
            let attempt = d.status.attempt.unwrap_or(1).max(1) + 1;
            d.status.attempt = Some(attempt);
        }
        submit_remote(obs, remaining, d);
        resumed(
            d,
            "the remaining tasks are submitted again",
            (now, generation),
        );
    } else if !remote.found {
        // Not submitted yet (the operator stopped between recording the submission and making
        // it), or removed from the cluster: the same id again is safe.
        submit_remote(obs, remaining, d);
    } else {
        d.status.phase = Some(Phase::Running);
        let msg = format!("{} of {total} tasks done", completed.len());
        cond(d, RUNNING, true, "TasksRunning", &msg, (now, generation));
        cond(d, READY, false, "Running", &msg, (now, generation));
    }
    // Remote runs report no progress to the operator: they are looked at on a timer.
    d.requeue = Some(settings.progress_interval.min(look_again(obs, settings)));
}

/// When to look at an active job again if nothing triggers a reconcile before: the resync
/// period, or the deadline if it comes first. Progress reports and the Jobs' changes trigger
/// reconciles of their own.
fn look_again(obs: &Observed, settings: &Settings) -> Duration {
    let until_deadline = obs.job.spec.active_deadline_seconds.and_then(|limit| {
        let start = obs
            .job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_deref())
            .and_then(parse_time)?;
        let left = (start + time::Duration::seconds(limit) - obs.now).whole_milliseconds();
        Some(Duration::from_millis(left.max(0) as u64))
    });
    until_deadline.map_or(settings.resync, |d| d.min(settings.resync))
}

/// The condition reason while a predecessor's child is in the way.
pub const WAITING_FOR_PREVIOUS: &str = "WaitingForPreviousChild";

/// A child of this job's name belongs to another owner (a ProfileJob of the same name deleted
/// and created again while garbage collection has not yet removed its children): nothing is
/// created, read or changed under that name; the job says so and looks again soon. True when it
/// waits.
fn wait_for_foreign(obs: &Observed, settings: &Settings, d: &mut Decision) -> bool {
    let Some(what) = &obs.foreign else {
        return false;
    };
    let msg = format!(
        "waiting for the previous {what} to be deleted: it has this job's name but another \
         owner (a ProfileJob of the same name deleted and created again before garbage \
         collection removed its children)"
    );
    let already = condition(&d.status.conditions, READY)
        .is_some_and(|c| c.reason == WAITING_FOR_PREVIOUS && c.message == msg);
    if !already {
        d.events.push(EventNote {
            warning: true,
            reason: WAITING_FOR_PREVIOUS.into(),
            message: msg.clone(),
        });
    }
    cond(
        d,
        READY,
        false,
        WAITING_FOR_PREVIOUS,
        &msg,
        (obs.now, obs.job.metadata.generation),
    );
    // Nothing of ours triggers a reconcile when the other owner's child goes.
    d.requeue = Some(settings.progress_interval.min(look_again(obs, settings)));
    true
}

fn enter_merging(
    d: &mut Decision,
    missing: Vec<u32>,
    plan: &PlanSummary,
    settings: &Settings,
    now: OffsetDateTime,
    generation: Option<i64>,
) {
    let in_pod = merges_in_pod(plan, settings);
    d.status.phase = Some(Phase::Merging);
    cond(
        d,
        RUNNING,
        false,
        "TasksDone",
        "every task has finished",
        (now, generation),
    );
    let msg = if missing.is_empty() {
        format!("merging {} partial profiles", plan.tasks())
    } else {
        format!(
            "merging {} partial profiles; {} failed task(s) tolerated by maxFailedTasks are missing",
            plan.tasks() as usize - missing.len(),
            missing.len()
        )
    };
    cond(d, MERGING, true, "Merging", &msg, (now, generation));
    cond(d, READY, false, "Merging", &msg, (now, generation));
    d.events.push(EventNote {
        warning: false,
        reason: "Merging".into(),
        message: msg,
    });
    d.actions.push(Action::Merge { missing, in_pod });
    if in_pod {
        d.requeue = Some(settings.progress_interval);
    }
}

/// Many or large partials are merged in a pod rather than in the operator's memory: many
/// tasks, many rows, or wide exact-value maps.
fn merges_in_pod(plan: &PlanSummary, settings: &Settings) -> bool {
    let rows: u64 = plan.task_rows.iter().sum();
    plan.tasks() > settings.merge_in_pod_tasks
        || rows > settings.merge_in_pod_rows
        || plan.exact_cells() > settings.merge_in_pod_cells
}

fn merging(obs: &Observed, settings: &Settings, d: &mut Decision) {
    let now = obs.now;
    let generation = obs.job.metadata.generation;
    if deadline_passed(obs) {
        fail(
            d,
            "DeadlineExceeded",
            "activeDeadlineSeconds passed while merging",
            now,
            generation,
        );
        return;
    }
    let Some(plan) = &obs.plan else {
        d.actions.push(Action::Plan);
        return;
    };
    if wait_for_foreign(obs, settings, d) {
        return;
    }
    if condition(&d.status.conditions, READY).is_some_and(|c| c.reason == WAITING_FOR_PREVIOUS) {
        cond(d, READY, false, "Merging", "merging", (now, generation));
    }
    match &obs.merge {
        Some(MergeObserved::Failed(message)) => {
            fail(d, "MergeFailed", message, now, generation);
        }
        Some(MergeObserved::Running) => d.requeue = Some(settings.progress_interval),
        // The merge pod wrote the profile; the reconciler reads its summary and finishes.
        Some(MergeObserved::Succeeded) => d.actions.push(Action::CollectMerge),
        // No merge Job: merge (again) — an operator restart mid-merge lands here, and a merge
        // writes the same objects twice without harm.
        None => {
            let Some(missing) = missing_for_merge(obs, plan, settings, d) else {
                return;
            };
            let in_pod = merges_in_pod(plan, settings);
            d.actions.push(Action::Merge { missing, in_pod });
            if in_pod {
                d.requeue = Some(settings.progress_interval);
            }
        }
    }
}

/// The failed tasks a merge started again (after a restart or a retried error) goes without,
/// exactly. The status's `failedTasks` is the list while it fits; once it was cut at 4 KiB it
/// lists only some, so the list is the tasks without a partial in storage instead, which must
/// be no more than the failed count the status keeps exactly (more: partials have vanished, and
/// the job fails saying so rather than merge without them). `None`: decided otherwise (failed,
/// or looking again once storage is listed).
fn missing_for_merge(
    obs: &Observed,
    plan: &PlanSummary,
    settings: &Settings,
    d: &mut Decision,
) -> Option<Vec<u32>> {
    let Some(listed) = d.status.failed_tasks.as_deref() else {
        return Some(Vec::new());
    };
    if !is_cut(listed) {
        return Some(parse_ranges(listed).into_iter().collect());
    }
    let Some(partials) = &obs.partials else {
        d.requeue = Some(settings.progress_interval);
        return None;
    };
    let missing: Vec<u32> = (0..plan.tasks())
        .filter(|t| !partials.contains(t))
        .collect();
    let failed = d.status.tasks.as_ref().map_or(0, |t| t.failed) as usize;
    if missing.len() > failed {
        let msg = format!(
            "{} task(s) have no partial profile in storage but only {failed} failed: partials \
             were deleted since the tasks ran",
            missing.len()
        );
        fail(d, "MergeFailed", &msg, obs.now, obs.job.metadata.generation);
        return None;
    }
    Some(missing)
}

fn finished(obs: &Observed, settings: &Settings, d: &mut Decision) {
    // A finished job has no remote work left to stop.
    if obs.has_finalizer {
        d.actions.push(Action::RemoveFinalizer);
    }
    let done = d.status.completion_time.as_deref().and_then(parse_time);
    let spec = &obs.job.spec;
    if spec.output.keep_work_data {
        if d.status.work_data.is_none() {
            d.status.work_data = Some(WorkDataStatus {
                state: Some(WORK_DATA_KEPT.into()),
                message: Some(format!(
                    "kept under {} (spec.output.keepWorkData)",
                    work_prefix(
                        &spec.output.uri,
                        obs.job.metadata.uid.as_deref().unwrap_or_default()
                    )
                )),
                ..WorkDataStatus::default()
            });
        }
    } else if work_data_pending(obs.job, &d.status) {
        // A success's work data is of no more use; a failure's is kept a while for a look.
        let wait = match d.status.phase {
            Some(Phase::Failed) => spec
                .output
                .work_data_ttl_seconds_after_failure
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(settings.failed_work_data_ttl),
            _ => Duration::ZERO,
        };
        let expires = done.map(|t| t + wait);
        match expires {
            Some(e) if obs.now < e => {
                let left = Duration::from_secs((e - obs.now).whole_seconds().max(1) as u64);
                d.requeue = Some(d.requeue.map_or(left, |r| r.min(left)));
            }
            _ => {
                d.actions.push(Action::DeleteWorkData);
                // Once deleted (or given up), nothing is left for the finalizer to guard; a
                // failed deletion stops before this, and is tried again.
                if obs.has_work_data_finalizer {
                    d.actions.push(Action::RemoveWorkDataFinalizer);
                }
            }
        }
    }
    let Some(ttl) = spec.ttl_seconds_after_finished else {
        return;
    };
    let Some(done) = done else {
        return;
    };
    let expires = done + time::Duration::seconds(i64::from(ttl.max(0)));
    if obs.now >= expires {
        d.actions.push(Action::DeleteJob);
    } else {
        let left = Duration::from_secs((expires - obs.now).whole_seconds().max(1) as u64);
        d.requeue = Some(d.requeue.map_or(left, |r| r.min(left)));
    }
}

/// The merge wrote the profile: the job succeeded.
pub fn merged(
    job: &ProfileJob,
    mut status: ProfileJobStatus,
    result: ResultStatus,
    now: OffsetDateTime,
) -> (ProfileJobStatus, EventNote) {
    let generation = job.metadata.generation;
    status.phase = Some(Phase::Succeeded);
    status.completion_time = Some(rfc3339(now));
    status.consecutive_errors = None;
    let msg = format!(
        "profile of {} rows and {} columns written to {}",
        result.rows, result.columns, result.profile_uri
    );
    status.result = Some(result);
    if let Some(p) = status.progress.as_mut() {
        p.percent = 100.0;
        p.rows_processed = p.rows_total;
        p.eta_seconds = Some(0);
        p.display = "100%".into();
    }
    set_condition(
        &mut status.conditions,
        MERGING,
        false,
        "Merged",
        &msg,
        now,
        generation,
    );
    set_condition(
        &mut status.conditions,
        SUCCEEDED,
        true,
        "ProfileWritten",
        &msg,
        now,
        generation,
    );
    set_condition(
        &mut status.conditions,
        READY,
        true,
        "Succeeded",
        &msg,
        now,
        generation,
    );
    (
        status,
        EventNote {
            warning: false,
            reason: "Succeeded".into(),
            message: msg,
        },
    )
}

/// The kind of an action's failure, from the engine's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The input is at fault (missing file, corrupt footer, schema mismatch): fail now.
    BadData,
    /// The request is invalid (bad URI, bad option): fail now.
    Invalid,
    /// Storage or API unreachable, access denied: retry with backoff, then fail.
    Transient,
    /// The remote cluster did not answer: retry with backoff, then fail.
    ClusterUnavailable,
}

/// An action failed: what the status says now, the event, and whether to retry.
pub fn action_failed(
    job: &ProfileJob,
    mut status: ProfileJobStatus,
    what: &str,
    kind: FailureKind,
    message: &str,
    settings: &Settings,
    now: OffsetDateTime,
) -> (ProfileJobStatus, EventNote, bool) {
    let generation = job.metadata.generation;
    let errors = status.consecutive_errors.unwrap_or(0) + 1;
    let (reason, retry) = match kind {
        FailureKind::BadData => ("BadData", false),
        FailureKind::Invalid => ("InvalidSpec", false),
        FailureKind::Transient => (
            "StorageUnavailable",
            errors < settings.max_consecutive_errors,
        ),
        FailureKind::ClusterUnavailable => (
            "ClusterUnavailable",
            errors < settings.max_consecutive_errors,
        ),
    };
    let msg = format!("{what}: {message}");
    if retry {
        status.consecutive_errors = Some(errors);
        set_condition(
            &mut status.conditions,
            READY,
            false,
            reason,
            &format!(
                "{msg} (attempt {errors} of {}, retrying)",
                settings.max_consecutive_errors
            ),
            now,
            generation,
        );
    } else {
        let mut d = Decision {
            status,
            actions: Vec::new(),
            events: Vec::new(),
            requeue: None,
            failed_tasks: BTreeSet::new(),
        };
        fail(&mut d, reason, &msg, now, generation);
        status = d.status;
    }
    (
        status,
        EventNote {
            warning: true,
            reason: reason.into(),
            message: msg,
        },
        retry,
    )
}

/// Sets one condition of a decision's status at the decision's time and generation.
fn cond(
    d: &mut Decision,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    (now, generation): (OffsetDateTime, Option<i64>),
) {
    set_condition(
        &mut d.status.conditions,
        type_,
        status,
        reason,
        message,
        now,
        generation,
    );
}

fn workers_name_of(obs: &Observed) -> String {
    let job = obs.job;
    let attempt = job
        .status
        .as_ref()
        .and_then(|s| s.attempt)
        .unwrap_or(1)
        .max(1);
    workers_name(
        job.metadata.name.as_deref().unwrap_or_default(),
        job.metadata.uid.as_deref().unwrap_or_default(),
        attempt,
    )
}

fn deadline_passed(obs: &Observed) -> bool {
    let (Some(limit), Some(start)) = (
        obs.job.spec.active_deadline_seconds,
        obs.job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_deref())
            .and_then(parse_time),
    ) else {
        return false;
    };
    obs.now >= start + time::Duration::seconds(limit)
}

fn suspend(d: &mut Decision, now: OffsetDateTime, generation: Option<i64>) {
    if d.status.phase != Some(Phase::Suspended) {
        d.events.push(EventNote {
            warning: false,
            reason: "Suspended".into(),
            message: "spec.suspend is true: workers are stopped; completed tasks are kept".into(),
        });
    }
    d.status.phase = Some(Phase::Suspended);
    cond(
        d,
        SUSPENDED,
        true,
        "Suspended",
        "spec.suspend is true",
        (now, generation),
    );
    cond(
        d,
        RUNNING,
        false,
        "Suspended",
        "spec.suspend is true",
        (now, generation),
    );
    cond(
        d,
        READY,
        false,
        "Suspended",
        "spec.suspend is true",
        (now, generation),
    );
}

fn fail(d: &mut Decision, reason: &str, message: &str, now: OffsetDateTime, gen_: Option<i64>) {
    d.status.phase = Some(Phase::Failed);
    d.status.completion_time = Some(rfc3339(now));
    for t in [RUNNING, MERGING] {
        if condition(&d.status.conditions, t).is_some() {
            set_condition(
                &mut d.status.conditions,
                t,
                false,
                reason,
                message,
                now,
                gen_,
            );
        }
    }
    set_condition(
        &mut d.status.conditions,
        FAILED,
        true,
        reason,
        message,
        now,
        gen_,
    );
    set_condition(
        &mut d.status.conditions,
        READY,
        false,
        reason,
        message,
        now,
        gen_,
    );
    d.events.push(EventNote {
        warning: true,
        reason: reason.into(),
        message: message.into(),
    });
}

/// Running tasks and retries of the local backend's worker Job.
fn workers_running_retried(
    obs: &Observed,
    total: u32,
    completed: &BTreeSet<u32>,
    failed: &BTreeSet<u32>,
    d: &Decision,
) -> (u32, u32) {
    let running = obs
        .workers
        .as_ref()
        .map(|w| w.active)
        .unwrap_or(0)
        .min(total.saturating_sub((completed.len() + failed.len()) as u32));
    let retried = obs
        .workers
        .as_ref()
        .map(|w| w.failed_pods.saturating_sub(failed.len() as u32))
        .unwrap_or(0)
        .max(d.status.tasks.as_ref().map(|t| t.retried).unwrap_or(0));
    (running, retried)
}

fn counts_and_progress(
    obs: &Observed,
    plan: &PlanSummary,
    completed: &BTreeSet<u32>,
    failed: &BTreeSet<u32>,
    running: u32,
    retried: u32,
    d: &mut Decision,
) {
    let total = plan.tasks();
    let succeeded = completed.len() as u32;
    let failed_n = failed.len() as u32;
    d.status.tasks = Some(TaskCounts {
        total,
        pending: total.saturating_sub(succeeded + failed_n + running),
        running,
        succeeded,
        failed: failed_n,
        retried,
        reused: plan.reused.len() as u32,
        summary: format!("{succeeded}/{total}"),
    });
    d.status.completed_tasks = bounded_ranges(completed);
    d.status.failed_tasks = bounded_ranges(failed);

    let rows_total: u64 = plan.task_rows.iter().sum();
    let done_rows: u64 = completed
        .iter()
        .filter_map(|&t| plan.task_rows.get(t as usize))
        .sum();
    let processed = (done_rows + obs.progress.running_rows).min(rows_total);
    let percent = if rows_total == 0 {
        if total == 0 {
            100.0
        } else {
            100.0 * succeeded as f64 / total as f64
        }
    } else {
        100.0 * processed as f64 / rows_total as f64
    };
    let rate = obs.progress.rows_per_second;
    let eta = (rate > 0.0).then(|| ((rows_total - processed) as f64 / rate).ceil() as u64);
    let old_memory = d
        .status
        .progress
        .as_ref()
        .and_then(|p| p.worker_memory.clone());
    let worker_memory = memory_status(obs, old_memory.as_ref(), d);
    d.status.progress = Some(ProgressStatus {
        percent: (percent * 10.0).round() / 10.0,
        rows_processed: processed,
        rows_total,
        rows_per_second: rate.round(),
        eta_seconds: eta,
        display: format!("{}%", percent.floor() as u64),
        worker_memory,
    });
}

/// The status of the workers' memory: the worker nearest its limit now, and the highest level
/// reached in this attempt. An Event is published when that level rises (at most two a run,
/// whatever the memory does around a threshold).
fn memory_status(
    obs: &Observed,
    old: Option<&WorkerMemoryStatus>,
    d: &mut Decision,
) -> Option<WorkerMemoryStatus> {
    let attempt = d.status.attempt;
    let old = old.filter(|o| o.attempt == attempt);
    let Some(m) = obs.progress.memory.filter(|m| m.limit_bytes > 0) else {
        // No worker reports a limit now: the record of what was reached stays.
        return old.cloned();
    };
    let percent = 100.0 * m.rss_bytes as f64 / m.limit_bytes as f64;
    let level = memory_level(percent);
    let peak = old.and_then(|o| o.peak_level.as_deref());
    let peak = if level_rank(level) > level_rank(peak) {
        let what = if level == Some("Critical") {
            "critical"
        } else {
            "warning"
        };
        d.events.push(EventNote {
            warning: true,
            reason: "WorkerMemoryHigh".into(),
            message: format!(
                "task {} uses {:.0}% of its memory limit ({} of {} bytes, {what}): it may be killed for memory; raise spec.backend.local.resources.limits.memory, or give each task less (more partitions, or column_based with fewer columns per task)",
                m.task, percent, m.rss_bytes, m.limit_bytes
            ),
        });
        level
    } else {
        peak
    };
    Some(WorkerMemoryStatus {
        task: m.task,
        rss_bytes: m.rss_bytes,
        limit_bytes: m.limit_bytes,
        percent: (percent * 10.0).round() / 10.0,
        level: level.map(str::to_owned),
        peak_level: peak.map(str::to_owned),
        attempt,
    })
}
