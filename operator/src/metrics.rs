//! Prometheus metrics of the operator, served as OpenMetrics text at `/metrics` by [`crate::http`].
//!
//! | metric | type | what it answers |
//! |---|---|---|
//! | `truthound_reconciles_total` | counter | is the controller doing anything? |
//! | `truthound_reconcile_errors_total{reason}` | counter | what keeps failing? |
//! | `truthound_reconcile_duration_seconds` | histogram | is the apiserver or storage slow? |
//! | `truthound_profilejobs{phase}` | gauge | how many jobs are in each phase now |
//! | `truthound_tasks{state}` | gauge | pending/running/succeeded/failed tasks, summed over jobs |
//! | `truthound_task_duration_seconds` | histogram | how long tasks take (1 s … 1 h buckets) |
//! | `truthound_task_duration_quantile_seconds{quantile}` | gauge | p50/p90/p95/p99 of recent tasks |
//! | `truthound_rows_processed_total` | counter | throughput |
//! | `truthound_leader` | gauge | 1 on the replica that holds the lease |
//! | `truthound_task_failures_total{reason}` | counter | failed task attempts, by why they failed |
//! | `truthound_task_retries_total{reason}` | counter | task attempts started again: `Failed` (the Job or cluster retried a failed attempt), `Stalled` (the operator replaced a silent pod) |
//! | `truthound_step_retries_total{reason}` | counter | operator steps retried with backoff (`StorageUnavailable`, `ClusterUnavailable`) |
//! | `truthound_profilejob_failures_total{reason}` | counter | ProfileJobs that failed, by the `Failed` condition's reason |
//! | `truthound_profilejob_successes_total` | counter | ProfileJobs that succeeded |
//! | `truthound_notifications_total{result}` | counter | webhook notification attempts (`spec.notify`): `Delivered`, `Failed` (retried), `GivenUp` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`, `process_start_time_seconds` | counter, gauges | the operator process itself, from `/proc/self` ([`process`]) |
//!
//! ## Cardinality
//!
//! No series carries a job's name, namespace or uid: a cluster with 10,000 ProfileJobs has the
//! same series as one with 1. Per-job facts are summed over jobs (`truthound_profilejobs`,
//! `truthound_tasks`), and per-job detail is in each ProfileJob's status, not in Prometheus.
//! Every label value comes from a fixed list, so the number of series is bounded:
//!
//! | label | values | series |
//! |---|---|---|
//! | `truthound_profilejobs{phase}` | the 6 phases | 6 |
//! | `truthound_tasks{state}` | [`TASK_STATES`] | 4 |
//! | `truthound_task_failures_total{reason}` | [`TASK_FAILURE_REASONS`], else `Other` | 11 |
//! | `truthound_task_retries_total{reason}` | `Failed`, `Stalled` | 2 |
//! | `truthound_step_retries_total{reason}` | `StorageUnavailable`, `ClusterUnavailable` | 2 |
//! | `truthound_profilejob_failures_total{reason}` | [`JOB_FAILURE_REASONS`], else `Other` | 8 |
//! | `truthound_notifications_total{result}` | `Delivered`, `Failed`, `GivenUp` | 3 |
//! | `truthound_reconcile_errors_total{reason}` | an error variant or the name of the step that failed | about 15 |
//! | `truthound_task_duration_quantile_seconds{quantile}` | [`TASK_QUANTILES`] | 4 |
//!
//! The histograms add their buckets (`truthound_reconcile_duration_seconds`: 8 + 1,
//! `truthound_task_duration_seconds`: 13 + 1) and `_sum`/`_count`: about 90 series in all per
//! replica.
//!
//! Task-duration percentiles come two ways. Across replicas and over any window, compute them in
//! PromQL from the histogram, e.g.
//! `histogram_quantile(0.99, sum by (le) (rate(truthound_task_duration_seconds_bucket[1h])))`;
//! that is interpolated within a bucket, so its error is up to a bucket's width. For a quick
//! exact look without PromQL, `truthound_task_duration_quantile_seconds` reports the
//! nearest-rank quantiles of the last [`RECENT_TASKS`] durations this process observed,
//! computed at scrape time.
//!
//! The per-job gauges are kept as sums over jobs: [`Metrics::set_job_phase`] and
//! [`Metrics::set_job_tasks`] remember what each job last reported, so the reconciler can report
//! the level it observed on every pass (level-triggered, idempotent) and the gauges never drift,
//! even when a job is reconciled twice or deleted.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::crd::ProfileJobStatus;

pub mod process;

/// How many of the most recent task durations feed the quantile gauges: enough for a stable p99
/// (100 samples above it), small enough (80 KB) to copy and sort on every scrape.
pub const RECENT_TASKS: usize = 10_000;

/// The quantiles published by `truthound_task_duration_quantile_seconds`.
pub const TASK_QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Task states, in the order [`Metrics::set_job_tasks`] takes them.
pub const TASK_STATES: [&str; 4] = ["pending", "running", "succeeded", "failed"];

/// Task failure reasons counted under their own name (th-worker's exit classes, what Kubernetes
/// says of a pod, what the operator concludes); anything else counts as `Other`, so a new reason
/// in a status cannot add series unnoticed.
pub const TASK_FAILURE_REASONS: [&str; 10] = [
    "BadData",
    "Invalid",
    "Transient",
    "Killed",
    "OOMKilled",
    "Evicted",
    "Stalled",
    "DeadlineExceeded",
    "PartialMissing",
    "Error",
];

/// The reasons a ProfileJob fails with (its `Failed` condition's reason, see `decide.rs`); any
/// other counts as `Other`.
pub const JOB_FAILURE_REASONS: [&str; 7] = [
    "InvalidSpec",
    "BadData",
    "StorageUnavailable",
    "ClusterUnavailable",
    "DeadlineExceeded",
    "TooManyFailedTasks",
    "MergeFailed",
];

/// Reconcile latency buckets (seconds): a reconcile is a few apiserver calls, so most land well
/// under a second; the tail catches slow object-store listings.
const RECONCILE_BUCKETS: [f64; 8] = [0.01, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0];

/// Task duration buckets (seconds), 1 s to 1 h at roughly ×2 steps. Round values rather than an
/// exact geometric series so the `le` labels read as durations (`300` is five minutes).
const TASK_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The results of a webhook notification attempt.
pub const NOTIFICATION_RESULTS: [&str; 3] = ["Delivered", "Failed", "GivenUp"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    quantile: String,
}

/// The operator's metrics. Cheap to clone (one `Arc`); every clone updates the same registry, so
/// the reconciler, the progress service and the HTTP server each hold their own.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    jobs_by_phase: Family<PhaseLabels, Gauge>,
    tasks_by_state: Family<StateLabels, Gauge>,
    task_duration: Histogram,
    recent_tasks: Arc<Reservoir>,
    rows_processed: Counter,
    leader: Gauge,
    task_failures: Family<ReasonLabels, Counter>,
    task_retries: Family<ReasonLabels, Counter>,
    step_retries: Family<ReasonLabels, Counter>,
    job_failures: Family<ReasonLabels, Counter>,
    job_successes: Counter,
    notifications: Family<ResultLabels, Counter>,
    /// `process_*`, without the `truthound_` prefix: encoded after `registry`.
    process: Registry,
    /// What each job last reported, so the gauges can be moved rather than recounted. The lock
    /// is held while the gauges move, so two reconciles of one job cannot interleave their
    /// decrement and increment.
    jobs: Mutex<HashMap<String, JobRecord>>,
}

/// One job's contribution to the per-phase and per-state gauges.
#[derive(Debug, Default)]
struct JobRecord {
    phase: Option<String>,
    tasks: [u32; 4],
    /// What [`Metrics::status_changed`] already counted for the job: the failures (task and
    /// time; the most recent [`COUNTED_FAILURES`]), the attempt and its retries, its end.
    counted_failures: VecDeque<(u32, String)>,
    counted_attempt: Option<i32>,
    counted_retried: u32,
    counted_end: bool,
}

/// Failures remembered per job against counting one twice (the status keeps the last 10).
const COUNTED_FAILURES: usize = 64;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and the task states at 0, so dashboards
    /// see all four series before the first job).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("truthound");

        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());

        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error reason",
            reconcile_errors.clone(),
        );

        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconciliation",
            Unit::Seconds,
            reconcile_duration.clone(),
        );

        let jobs_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "profilejobs",
            "ProfileJobs known to this controller, by phase",
            jobs_by_phase.clone(),
        );

        let tasks_by_state = Family::<StateLabels, Gauge>::default();
        for state in TASK_STATES {
            drop(tasks_by_state.get_or_create(&StateLabels {
                state: state.to_owned(),
            }));
        }
        registry.register(
            "tasks",
            "Tasks of all ProfileJobs, by state",
            tasks_by_state.clone(),
        );

        let task_duration = Histogram::new(TASK_BUCKETS);
        registry.register_with_unit(
            "task_duration",
            "Duration of finished tasks; p50..p99 via histogram_quantile()",
            Unit::Seconds,
            task_duration.clone(),
        );

        let recent_tasks = Arc::new(Reservoir::new(RECENT_TASKS));
        registry.register_collector(Box::new(TaskQuantiles {
            reservoir: recent_tasks.clone(),
        }));

        let rows_processed = Counter::default();
        registry.register(
            "rows_processed",
            "Rows read by finished tasks",
            rows_processed.clone(),
        );

        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or runs without election)",
            leader.clone(),
        );

        let task_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "task_failures",
            "Failed task attempts, by reason",
            task_failures.clone(),
        );
        let task_retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "task_retries",
            "Task attempts started again: Failed (a failed attempt retried), Stalled (a silent pod replaced)",
            task_retries.clone(),
        );
        let step_retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "step_retries",
            "Operator steps (planning, merging, submitting) retried with backoff, by reason",
            step_retries.clone(),
        );
        let job_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "profilejob_failures",
            "ProfileJobs that failed, by reason",
            job_failures.clone(),
        );
        let job_successes = Counter::default();
        registry.register(
            "profilejob_successes",
            "ProfileJobs that succeeded",
            job_successes.clone(),
        );

        let notifications = Family::<ResultLabels, Counter>::default();
        for result in NOTIFICATION_RESULTS {
            drop(notifications.get_or_create(&ResultLabels {
                result: result.to_owned(),
            }));
        }
        registry.register(
            "notifications",
            "Webhook notification attempts (spec.notify), by result: Delivered, Failed (to be retried), GivenUp",
            notifications.clone(),
        );

        // Every bounded reason starts at 0, so that `increase()` sees the first failure (a
        // series born at 1 has no earlier sample to increase from) and dashboards show them all.
        for reason in TASK_FAILURE_REASONS.iter().chain(&["Other"]) {
            drop(task_failures.get_or_create(&ReasonLabels {
                reason: (*reason).to_owned(),
            }));
        }
        for reason in ["Failed", "Stalled"] {
            drop(task_retries.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            }));
        }
        for reason in ["StorageUnavailable", "ClusterUnavailable"] {
            drop(step_retries.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            }));
        }
        for reason in JOB_FAILURE_REASONS.iter().chain(&["Other"]) {
            drop(job_failures.get_or_create(&ReasonLabels {
                reason: (*reason).to_owned(),
            }));
        }

        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));

        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                jobs_by_phase,
                tasks_by_state,
                task_duration,
                recent_tasks,
                rows_processed,
                leader,
                task_failures,
                task_retries,
                step_retries,
                job_failures,
                job_successes,
                notifications,
                process,
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts timing one reconciliation: counts it now, observes its duration when the guard
    /// drops, so every return path (including `?`) is measured.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        self.inner.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.inner.reconcile_duration.clone(),
        }
    }

    /// Counts a failed reconciliation under a short, bounded `reason` (an error variant's name,
    /// not its message: every distinct label value is a new time series).
    pub fn reconcile_failure(&self, reason: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records the phase `job_key` (`namespace/name`) is in now; `None` forgets the job entirely
    /// (deleted): its phase and its tasks stop counting. Repeating a call changes nothing.
    pub fn set_job_phase(&self, job_key: &str, phase: Option<&str>) {
        let mut jobs = lock(&self.inner.jobs);
        let Some(phase) = phase else {
            if let Some(old) = jobs.remove(job_key) {
                self.move_phase(old.phase.as_deref(), None);
                self.move_tasks(&old.tasks, &[0; 4]);
            }
            return;
        };
        let record = jobs.entry(job_key.to_owned()).or_default();
        if record.phase.as_deref() != Some(phase) {
            self.move_phase(record.phase.as_deref(), Some(phase));
            record.phase = Some(phase.to_owned());
        }
    }

    /// Forgets `job_key`: the same as `set_job_phase(job_key, None)`.
    pub fn forget_job(&self, job_key: &str) {
        self.set_job_phase(job_key, None);
    }

    /// Records how many of `job_key`'s tasks are in each state now; the `truthound_tasks` gauges
    /// are the sums over all jobs. Repeating a call changes nothing.
    pub fn set_job_tasks(
        &self,
        job_key: &str,
        pending: u32,
        running: u32,
        succeeded: u32,
        failed: u32,
    ) {
        let new = [pending, running, succeeded, failed];
        let mut jobs = lock(&self.inner.jobs);
        let record = jobs.entry(job_key.to_owned()).or_default();
        if record.tasks != new {
            self.move_tasks(&record.tasks, &new);
            record.tasks = new;
        }
    }

    /// Records one finished task's duration. Negative values (clock skew between the worker and
    /// the operator) count as 0; NaN and infinities are dropped rather than poisoning the sums.
    pub fn observe_task(&self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let seconds = seconds.max(0.0);
        self.inner.task_duration.observe(seconds);
        self.inner.recent_tasks.push(seconds);
    }

    /// Adds `n` rows read by finished tasks.
    pub fn add_rows(&self, n: u64) {
        self.inner.rows_processed.inc_by(n);
    }

    /// Records whether this replica is the leader (see [`crate::leader`]).
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// Counts what changed between the status a reconcile observed (`old`) and the one it
    /// wrote (`new`); see [`Transitions::between`]. Counting the change, not the level, means a
    /// status that is written again (another reconcile, another replica after a restart) is not
    /// counted twice.
    ///
    /// A reconcile may also start from a stale copy of the status (the watch cache lags behind
    /// the write the previous reconcile made) and make the same change again: what this process
    /// already counted for `job_key` is not counted twice.
    pub fn status_changed(
        &self,
        job_key: &str,
        old: Option<&ProfileJobStatus>,
        new: &ProfileJobStatus,
    ) {
        let t = Transitions::between(old, new);
        let mut jobs = lock(&self.inner.jobs);
        let r = jobs.entry(job_key.to_owned()).or_default();
        for (task, time, reason) in t.task_failures {
            let key = (task, time);
            if r.counted_failures.contains(&key) {
                continue;
            }
            if r.counted_failures.len() == COUNTED_FAILURES {
                r.counted_failures.pop_front();
            }
            r.counted_failures.push_back(key);
            self.reason_counter(&self.inner.task_failures, reason).inc();
        }
        if r.counted_attempt != new.attempt {
            // A new attempt counts its retries from 0 (the status does too).
            r.counted_attempt = new.attempt;
            r.counted_retried = new
                .tasks
                .as_ref()
                .map_or(0, |c| c.retried)
                .saturating_sub(t.tasks_retried);
        }
        let retried = new.tasks.as_ref().map_or(0, |c| c.retried);
        let fresh = retried
            .saturating_sub(r.counted_retried)
            .min(t.tasks_retried);
        if fresh > 0 {
            self.reason_counter(&self.inner.task_retries, "Failed")
                .inc_by(u64::from(fresh));
        }
        r.counted_retried = r.counted_retried.max(retried);
        if (t.job_failed.is_some() || t.job_succeeded) && !r.counted_end {
            r.counted_end = true;
            match t.job_failed {
                Some(reason) => self.reason_counter(&self.inner.job_failures, reason).inc(),
                None => self.inner.job_successes.inc(),
            };
        }
    }

    /// Counts `n` stalled tasks whose pods the operator replaced.
    pub fn tasks_replaced(&self, n: usize) {
        self.reason_counter(&self.inner.task_retries, "Stalled")
            .inc_by(n as u64);
    }

    /// Counts an operator step retried with backoff, under the reason its event carries.
    pub fn step_retried(&self, reason: &str) {
        let reason = match reason {
            "StorageUnavailable" | "ClusterUnavailable" => reason,
            _ => "Other",
        };
        self.reason_counter(&self.inner.step_retries, reason).inc();
    }

    /// Counts a webhook notification attempt by its result ([`NOTIFICATION_RESULTS`]).
    pub fn notification(&self, result: &str) {
        let result = if NOTIFICATION_RESULTS.contains(&result) {
            result
        } else {
            "Failed"
        };
        self.inner
            .notifications
            .get_or_create_owned(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    fn reason_counter(&self, family: &Family<ReasonLabels, Counter>, reason: &str) -> Counter {
        family.get_or_create_owned(&ReasonLabels {
            reason: reason.to_owned(),
        })
    }

    /// The whole registry as OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.inner.registry)
            .and_then(|()| encode_registry(&mut out, &self.inner.process))
            .and_then(|()| encode_eof(&mut out));
        if let Err(err) = encoded {
            // Writing to a String cannot fail; an error here would come from a metric's own
            // encoder. A partial page is still better than none for whoever is debugging.
            tracing::error!(%err, "encoding metrics");
            let _ = writeln!(out, "# encoding failed: {err}");
        }
        out
    }

    fn move_phase(&self, from: Option<&str>, to: Option<&str>) {
        if let Some(from) = from {
            self.phase_gauge(from).dec();
        }
        if let Some(to) = to {
            self.phase_gauge(to).inc();
        }
    }

    fn phase_gauge(&self, phase: &str) -> Gauge {
        self.inner.jobs_by_phase.get_or_create_owned(&PhaseLabels {
            phase: phase.to_owned(),
        })
    }

    fn move_tasks(&self, from: &[u32; 4], to: &[u32; 4]) {
        for ((state, old), new) in TASK_STATES.iter().zip(from).zip(to) {
            let delta = i64::from(*new) - i64::from(*old);
            if delta != 0 {
                self.inner
                    .tasks_by_state
                    .get_or_create(&StateLabels {
                        state: (*state).to_owned(),
                    })
                    .inc_by(delta);
            }
        }
    }
}

/// What one status write changed, for the counters: see [`Metrics::status_changed`].
#[derive(Debug, Default, PartialEq)]
pub struct Transitions {
    /// Each failed task attempt recorded for the first time (a `lastFailures` entry the old
    /// status did not have): its task, time and reason (mapped onto [`TASK_FAILURE_REASONS`]
    /// or `Other`).
    pub task_failures: Vec<(u32, String, &'static str)>,
    /// How much `tasks.retried` rose.
    pub tasks_retried: u32,
    /// The job entered `Failed`, with this reason (mapped onto [`JOB_FAILURE_REASONS`]).
    pub job_failed: Option<&'static str>,
    /// The job entered `Succeeded`.
    pub job_succeeded: bool,
}

impl Transitions {
    /// What changed from `old` to `new`. `lastFailures` keeps the last 10 entries, so an entry
    /// is new when the old list has no entry of the same task, reason and time.
    pub fn between(old: Option<&ProfileJobStatus>, new: &ProfileJobStatus) -> Self {
        let empty = ProfileJobStatus::default();
        let old = old.unwrap_or(&empty);
        let task_failures = new
            .last_failures
            .iter()
            .filter(|f| {
                !old.last_failures
                    .iter()
                    .any(|g| g.task == f.task && g.reason == f.reason && g.time == f.time)
            })
            .map(|f| {
                (
                    f.task,
                    f.time.clone(),
                    bounded(&f.reason, &TASK_FAILURE_REASONS),
                )
            })
            .collect();
        let retried = |s: &ProfileJobStatus| s.tasks.as_ref().map_or(0, |t| t.retried);
        let entered = |p: crate::crd::Phase| new.phase == Some(p) && old.phase != Some(p);
        let job_failed = entered(crate::crd::Phase::Failed).then(|| {
            let reason = crate::status::condition(&new.conditions, "Failed")
                .map(|c| c.reason.as_str())
                .unwrap_or_default();
            bounded(reason, &JOB_FAILURE_REASONS)
        });
        Transitions {
            task_failures,
            tasks_retried: retried(new).saturating_sub(retried(old)),
            job_failed,
            job_succeeded: entered(crate::crd::Phase::Succeeded),
        }
    }
}

/// `reason` if it is one of `known`, else `Other`: label values from a fixed list.
fn bounded(reason: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == reason)
        .copied()
        .unwrap_or("Other")
}

/// Times one reconciliation; see [`Metrics::reconcile_timer`].
#[must_use = "the duration is observed when the timer drops"]
#[derive(Debug)]
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Locks a mutex, recovering it if a panicking thread poisoned it: the guarded data are counters
/// that stay meaningful, and metrics must never take the operator down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A bounded ring of the most recent task durations.
#[derive(Debug)]
struct Reservoir {
    capacity: usize,
    values: Mutex<VecDeque<f64>>,
}

impl Reservoir {
    fn new(capacity: usize) -> Self {
        Reservoir {
            capacity,
            values: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    fn push(&self, value: f64) {
        let mut values = lock(&self.values);
        if values.len() == self.capacity {
            values.pop_front();
        }
        values.push_back(value);
    }

    /// Nearest-rank quantiles (the smallest value with at least `q` of the values at or below
    /// it), or `None` before the first value.
    fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        // Copy under the lock, sort outside it, so observers never wait on a sort.
        let mut sorted: Vec<f64> = lock(&self.values).iter().copied().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable_by(f64::total_cmp);
        let n = sorted.len();
        let at = |q: f64| {
            let rank = (q * n as f64).ceil() as usize;
            sorted[rank.clamp(1, n) - 1]
        };
        Some(qs.iter().map(|&q| at(q)).collect())
    }
}

/// Publishes the reservoir's quantiles on each scrape.
#[derive(Debug)]
struct TaskQuantiles {
    reservoir: Arc<Reservoir>,
}

impl Collector for TaskQuantiles {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Like an empty `Family`, nothing at all before the first task: no fake zeros.
        let Some(values) = self.reservoir.quantiles(&TASK_QUANTILES) else {
            return Ok(());
        };
        let family = Family::<QuantileLabels, Gauge<f64, AtomicU64>>::default();
        for (q, v) in TASK_QUANTILES.iter().zip(values) {
            family
                .get_or_create(&QuantileLabels {
                    quantile: q.to_string(),
                })
                .set(v);
        }
        let metric = encoder.encode_descriptor(
            "task_duration_quantile",
            "Nearest-rank quantiles of the most recent task durations seen by this replica.",
            Some(&Unit::Seconds),
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `series` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn families_are_absent_until_first_used() {
        let text = Metrics::new().encode();
        for name in [
            "truthound_reconcile_errors",
            "truthound_profilejobs",
            "truthound_task_duration_quantile_seconds",
        ] {
            assert!(!text.contains(name), "{name} present in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // The reason counters are there at 0 from the start (increase() needs a sample before
        // the first failure).
        for series in [
            "truthound_profilejob_failures_total{reason=\"TooManyFailedTasks\"} 0",
            "truthound_profilejob_failures_total{reason=\"Other\"} 0",
            "truthound_task_retries_total{reason=\"Stalled\"} 0",
            "truthound_task_failures_total{reason=\"OOMKilled\"} 0",
            "truthound_step_retries_total{reason=\"ClusterUnavailable\"} 0",
            "truthound_profilejob_successes_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "missing {series:?} in\n{text}"
            );
        }
    }

    #[test]
    fn names_and_types_are_the_documented_ones() {
        let m = Metrics::new();
        m.reconcile_failure("Kube");
        m.set_job_phase("ns/a", Some("Pending"));
        m.observe_task(1.5);
        let text = m.encode();
        for line in [
            "# TYPE truthound_reconciles counter",
            "# TYPE truthound_reconcile_errors counter",
            "# TYPE truthound_reconcile_duration_seconds histogram",
            "# UNIT truthound_reconcile_duration_seconds seconds",
            "# TYPE truthound_profilejobs gauge",
            "# TYPE truthound_tasks gauge",
            "# TYPE truthound_task_duration_seconds histogram",
            "# TYPE truthound_task_duration_quantile_seconds gauge",
            "# TYPE truthound_rows_processed counter",
            "# TYPE truthound_leader gauge",
            "truthound_reconciles_total 0",
            "truthound_reconcile_errors_total{reason=\"Kube\"} 1",
            "truthound_profilejobs{phase=\"Pending\"} 1",
            "truthound_rows_processed_total 0",
            "truthound_tasks{state=\"pending\"} 0",
            "truthound_tasks{state=\"failed\"} 0",
            "truthound_task_duration_seconds_bucket{le=\"1.0\"} 0",
            "truthound_task_duration_seconds_bucket{le=\"2.0\"} 1",
            "truthound_task_duration_seconds_bucket{le=\"3600.0\"} 1",
            "truthound_task_duration_seconds_bucket{le=\"+Inf\"} 1",
            "truthound_task_duration_quantile_seconds{quantile=\"0.99\"} 1.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn phases_move_between_gauges_and_forgetting_removes_the_job() {
        let m = Metrics::new();
        m.set_job_phase("ns/a", Some("Running"));
        m.set_job_phase("ns/b", Some("Running"));
        m.set_job_phase("ns/b", Some("Running")); // repeated observation: no change
        let text = m.encode();
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Running\"}"),
            Some(2.0)
        );

        m.set_job_phase("ns/a", Some("Succeeded"));
        m.set_job_phase("ns/a", Some("Succeeded"));
        let text = m.encode();
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Running\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Succeeded\"}"),
            Some(1.0)
        );

        m.set_job_phase("ns/a", None);
        m.forget_job("ns/a"); // forgetting twice is harmless
        m.set_job_phase("ns/never-seen", None);
        let text = m.encode();
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Running\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Succeeded\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn tasks_are_sums_over_jobs_and_forgetting_subtracts() {
        let m = Metrics::new();
        m.set_job_tasks("ns/a", 10, 4, 0, 0);
        m.set_job_tasks("ns/b", 2, 0, 5, 1);
        m.set_job_tasks("ns/a", 6, 4, 4, 0);
        m.set_job_tasks("ns/a", 6, 4, 4, 0);
        let text = m.encode();
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"pending\"}"),
            Some(8.0)
        );
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"running\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"succeeded\"}"),
            Some(9.0)
        );
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"failed\"}"),
            Some(1.0)
        );

        m.set_job_phase("ns/a", Some("Running"));
        m.forget_job("ns/a");
        let text = m.encode();
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"pending\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"running\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "truthound_tasks{state=\"succeeded\"}"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "truthound_profilejobs{phase=\"Running\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn task_quantiles_are_nearest_rank_over_recent_tasks() {
        let m = Metrics::new();
        for s in 1..=100 {
            m.observe_task(f64::from(s));
        }
        m.observe_task(f64::NAN); // dropped
        m.observe_task(-3.0); // counts as 0
        let text = m.encode();
        let q = |q: &str| {
            sample(
                &text,
                &format!("truthound_task_duration_quantile_seconds{{quantile=\"{q}\"}}"),
            )
        };
        // 101 values: 0, 1, ..., 100.
        assert_eq!(q("0.5"), Some(50.0));
        assert_eq!(q("0.9"), Some(90.0));
        assert_eq!(q("0.95"), Some(95.0));
        assert_eq!(q("0.99"), Some(99.0));
        assert_eq!(
            sample(&text, "truthound_task_duration_seconds_count"),
            Some(101.0)
        );
        assert_eq!(
            sample(&text, "truthound_task_duration_seconds_sum"),
            Some(5050.0)
        );
        assert_eq!(
            sample(&text, "truthound_task_duration_seconds_bucket{le=\"1.0\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "truthound_task_duration_seconds_bucket{le=\"60.0\"}"),
            Some(61.0)
        );
    }

    #[test]
    fn the_reservoir_keeps_only_the_most_recent_values() {
        let r = Reservoir::new(3);
        assert_eq!(r.quantiles(&[0.5]), None);
        for v in [100.0, 1.0, 2.0, 3.0] {
            r.push(v);
        }
        assert_eq!(r.quantiles(&[0.0, 0.5, 1.0]), Some(vec![1.0, 2.0, 3.0]));
    }

    #[test]
    fn reconciles_errors_rows_and_leader_are_counted() {
        let m = Metrics::new();
        drop(m.reconcile_timer());
        {
            let _timer = m.reconcile_timer();
            m.reconcile_failure("Kube");
        }
        m.reconcile_failure("Kube");
        m.reconcile_failure("Storage");
        m.add_rows(1_000);
        m.add_rows(24);
        m.set_leader(true);
        let text = m.encode();
        assert_eq!(sample(&text, "truthound_reconciles_total"), Some(2.0));
        assert_eq!(
            sample(&text, "truthound_reconcile_duration_seconds_count"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "truthound_reconcile_errors_total{reason=\"Kube\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "truthound_reconcile_errors_total{reason=\"Storage\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "truthound_rows_processed_total"),
            Some(1024.0)
        );
        assert_eq!(sample(&text, "truthound_leader"), Some(1.0));
    }

    fn failure(task: u32, reason: &str, time: &str) -> crate::crd::TaskFailure {
        crate::crd::TaskFailure {
            task,
            reason: reason.into(),
            message: "m".into(),
            time: time.into(),
        }
    }

    fn status(phase: crate::crd::Phase, retried: u32) -> ProfileJobStatus {
        ProfileJobStatus {
            phase: Some(phase),
            tasks: Some(crate::crd::TaskCounts {
                total: 4,
                pending: 0,
                running: 0,
                succeeded: 0,
                failed: 0,
                retried,
                reused: 0,
                summary: String::new(),
            }),
            ..ProfileJobStatus::default()
        }
    }

    #[test]
    fn transitions_count_what_is_new_and_nothing_twice() {
        use crate::crd::Phase;
        let mut old = status(Phase::Running, 1);
        old.last_failures = vec![failure(1, "Transient", "t1")];
        let mut new = status(Phase::Running, 3);
        new.last_failures = vec![
            failure(1, "Transient", "t1"),
            failure(2, "OOMKilled", "t2"),
            failure(1, "Transient", "t3"),
            failure(3, "SomethingNew", "t3"),
        ];
        let t = Transitions::between(Some(&old), &new);
        let reasons: Vec<&str> = t.task_failures.iter().map(|f| f.2).collect();
        assert_eq!(reasons, vec!["OOMKilled", "Transient", "Other"]);
        assert_eq!(t.tasks_retried, 2);
        assert_eq!(t.job_failed, None);
        assert!(!t.job_succeeded);
        // The same status again: nothing.
        assert_eq!(
            Transitions::between(Some(&new), &new),
            Transitions::default()
        );
        // A new attempt counts from 0 again: no negative retries.
        let fresh = status(Phase::Running, 0);
        assert_eq!(Transitions::between(Some(&new), &fresh).tasks_retried, 0);
    }

    #[test]
    fn entering_failed_or_succeeded_counts_once_with_a_bounded_reason() {
        use crate::crd::{Condition, Phase};
        let cond = |reason: &str| Condition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: "t".into(),
            observed_generation: None,
        };
        let running = status(Phase::Running, 0);
        let mut failed = status(Phase::Failed, 0);
        failed.conditions = vec![cond("TooManyFailedTasks")];
        assert_eq!(
            Transitions::between(Some(&running), &failed).job_failed,
            Some("TooManyFailedTasks")
        );
        assert_eq!(
            Transitions::between(Some(&failed), &failed).job_failed,
            None
        );
        failed.conditions = vec![cond("a message someone put in a reason")];
        assert_eq!(
            Transitions::between(None, &failed).job_failed,
            Some("Other")
        );
        let done = status(Phase::Succeeded, 0);
        assert!(Transitions::between(Some(&running), &done).job_succeeded);
        assert!(!Transitions::between(Some(&done), &done).job_succeeded);
    }

    #[test]
    fn failure_and_retry_counters_are_exported_by_reason() {
        use crate::crd::Phase;
        let m = Metrics::new();
        let old = status(Phase::Running, 0);
        let mut new = status(Phase::Running, 2);
        new.last_failures = vec![failure(0, "Transient", "t1"), failure(1, "BadData", "t1")];
        m.status_changed("ns/a", Some(&old), &new);
        m.status_changed("ns/a", Some(&new), &new);
        // A reconcile from a stale copy (the old status again) makes the same change: no count.
        m.status_changed("ns/a", Some(&old), &new);
        m.tasks_replaced(3);
        m.step_retried("StorageUnavailable");
        m.step_retried("StorageUnavailable");
        m.step_retried("no such reason");
        let mut failed = new.clone();
        failed.phase = Some(Phase::Failed);
        m.status_changed("ns/a", Some(&new), &failed);
        m.status_changed("ns/a", Some(&new), &failed);
        let done = status(Phase::Succeeded, 2);
        m.status_changed("ns/b", Some(&new), &done);
        m.status_changed("ns/b", Some(&new), &done);
        let text = m.encode();
        for (series, want) in [
            ("truthound_task_failures_total{reason=\"Transient\"}", 1.0),
            ("truthound_task_failures_total{reason=\"BadData\"}", 1.0),
            ("truthound_task_retries_total{reason=\"Failed\"}", 2.0),
            ("truthound_task_retries_total{reason=\"Stalled\"}", 3.0),
            (
                "truthound_step_retries_total{reason=\"StorageUnavailable\"}",
                2.0,
            ),
            ("truthound_step_retries_total{reason=\"Other\"}", 1.0),
            ("truthound_profilejob_failures_total{reason=\"Other\"}", 1.0),
            ("truthound_profilejob_successes_total", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
    }

    #[test]
    fn process_metrics_have_the_standard_names_and_one_eof() {
        let text = Metrics::new().encode();
        for line in [
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_threads gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let rss = sample(&text, "process_resident_memory_bytes").unwrap_or_default();
        assert!(rss > 1e6, "rss {rss}");
        assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|c| c > 0.0));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
        // The truthound_ prefix is not applied to them.
        assert!(!text.contains("truthound_process"));
    }

    /// `operator/metrics.txt` lists every series name the operator exports (what PromQL
    /// selects: `_total`, `_bucket`, ...); scripts/check-deploy.sh checks the chart's alerts and
    /// dashboard against it. A metric added, renamed or removed here fails this test until the
    /// list says so too.
    #[test]
    fn the_exported_series_are_the_ones_listed_for_the_alerts_and_dashboard() {
        let m = Metrics::new();
        drop(m.reconcile_timer());
        m.reconcile_failure("kube");
        m.set_job_phase("ns/a", Some("Running"));
        m.observe_task(1.0);
        m.set_leader(true);
        let text = m.encode();
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/metrics.txt");
        let listed = std::fs::read_to_string(path).unwrap_or_default();
        let listed: std::collections::BTreeSet<&str> = listed
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let want: String = exported.iter().map(|n| format!("{n}\n")).collect();
        assert_eq!(
            exported, listed,
            "{path} must list exactly the exported series; they are:\n{want}"
        );
    }
}
