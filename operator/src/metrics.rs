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

/// How many of the most recent task durations feed the quantile gauges: enough for a stable p99
/// (100 samples above it), small enough (80 KB) to copy and sort on every scrape.
pub const RECENT_TASKS: usize = 10_000;

/// The quantiles published by `truthound_task_duration_quantile_seconds`.
pub const TASK_QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Task states, in the order [`Metrics::set_job_tasks`] takes them.
pub const TASK_STATES: [&str; 4] = ["pending", "running", "succeeded", "failed"];

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
}

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

    /// The whole registry as OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
        {
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
}
