//! The Spark backend's core, without Kubernetes: run a plan's tasks on a Spark cluster through
//! Spark Connect, follow each task's state, cancel, and leave each task's partial where the
//! plan's work prefix says (`<partials_prefix>/<task>`, as `th-worker` writes it).
//!
//! Spark runs no `th-worker`: each task is one aggregation query that Spark plans and runs over
//! the task's files ([`query`]), plus, per column that may have few distinct values, a query of
//! its exact value counts. The answers become the same [`ColumnState`]s the engine makes
//! ([`partial`]), so Spark's partials merge with the engine's: exact counts, min/max, exact
//! integer sums and moments, KLL quantiles, HLL distinct counts and frequent items from Spark's
//! DataSketches aggregates (the same sketches, hashed the same way). What Spark cannot compute
//! (string patterns, duplicate rows) is recorded as unavailable, with the reason, in the partial
//! and in the profile.
//!
//! Tasks run a few at a time ([`SparkSubmit::concurrency`]) in one Spark Connect session; Spark
//! spreads each query over its executors. A task whose query fails transiently (the server
//! unreachable or overloaded, an executor lost) is retried up to [`RemoteTasks::retries`]
//! times; an error of Spark about the data or the query (a missing or corrupt file) fails it at
//! once with Spark's message. [`SparkRun`] reports the same [`RunEvent`]s and [`TaskState`]s as
//! the Dask and Ray backends.
//!
//! [`ColumnState`]: truthound_profile::kernel::ColumnState

pub mod connect;
pub mod partial;
pub mod query;

pub use super::tasks::{RemoteTasks, RunEvent, TaskPhase, TaskState, counts, failures};
pub use connect::{QueryFailure, SparkConnect};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use truthound_profile::Plan;
use truthound_profile::dataset::{self, StorageOptions};

/// Tasks run at once by default.
pub const DEFAULT_CONCURRENCY: usize = 2;

/// What went wrong with a Spark run, or with one of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error("cannot reach Spark Connect at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("Spark Connect at {url} failed transiently: {detail}")]
    Transient { url: String, detail: String },
    /// Spark's own error for a query; `message` is Spark's text.
    #[error("Spark at {url}: {message}")]
    Query {
        url: String,
        message: String,
        class: QueryFailure,
    },
    #[error("unexpected answer from Spark Connect at {url}: {detail}")]
    Protocol { url: String, detail: String },
    /// Reading the plan or writing a partial.
    #[error("{detail}")]
    Storage { detail: String, transient: bool },
    /// What the Spark backend cannot do (said before anything runs), or a bad URL.
    #[error("{0}")]
    Invalid(String),
    #[error("the Spark operation was interrupted")]
    Interrupted,
    #[error("the Spark run was cancelled")]
    Cancelled,
}

impl SparkError {
    /// `th`'s exit code (and a task's, in its [`TaskState`]): 75 unreachable or transient (retry
    /// later, as for Dask and Ray), 65 bad data, 64 invalid, 130 cancelled, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SparkError::Unreachable { .. } | SparkError::Transient { .. } => 75,
            SparkError::Query { class, .. } => match class {
                QueryFailure::BadData => 65,
                QueryFailure::Invalid => 64,
                QueryFailure::Transient => 75,
            },
            SparkError::Storage { transient, .. } => {
                if *transient {
                    75
                } else {
                    1
                }
            }
            SparkError::Invalid(_) => 64,
            SparkError::Interrupted | SparkError::Cancelled => 130,
            SparkError::Protocol { .. } => 1,
        }
    }

    fn retryable(&self) -> bool {
        self.exit_code() == 75
    }

    fn storage(e: truthound_profile::Error, what: String) -> SparkError {
        SparkError::Storage {
            transient: e.class() == truthound_profile::ErrorClass::Transient,
            detail: format!("{what}: {e}"),
        }
    }
}

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct SparkSubmit {
    /// `sc://HOST:PORT[/;token=...;use_ssl=true]`.
    pub connect_url: String,
    /// The tasks, the plan and where the partials go. `env`, `worker_args` and `worker_bin` are
    /// for `th-worker`s and unused: Spark reads the data itself, and this process writes the
    /// partials with `storage`.
    pub work: RemoteTasks,
    /// How to read the plan and write the partials.
    pub storage: StorageOptions,
    /// Tasks run at once.
    pub concurrency: usize,
    /// How long to wait for the server to answer the first time.
    pub connect_timeout: Duration,
}

#[derive(Default)]
struct Shared {
    board: super::tasks::TaskBoard,
    /// Operations of this run that Spark is running now.
    running: BTreeSet<String>,
    cancelled: bool,
}

/// A submitted run: its tasks' queries running in the background, and their states.
pub struct SparkRun {
    client: SparkConnect,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedReceiver<RunEvent>,
    driver: tokio::task::JoinHandle<()>,
}

/// Everything a task needs, shared by the tasks of a run.
struct Context {
    client: SparkConnect,
    plan: Plan,
    submit: SparkSubmit,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<RunEvent>,
}

impl SparkRun {
    /// Reads the plan, checks that Spark can run it, connects and starts the tasks. Fails at
    /// once when the plan asks for what Spark cannot do or the server does not answer.
    pub async fn submit(s: SparkSubmit) -> Result<SparkRun, SparkError> {
        connect::ConnectUrl::parse(&s.connect_url)?;
        let bytes = dataset::read_object(&s.work.plan_uri, &s.storage)
            .await
            .map_err(|e| SparkError::storage(e, format!("reading the plan {}", s.work.plan_uri)))?;
        let plan = Plan::from_json(&bytes, &s.work.plan_uri)
            .map_err(|e| SparkError::Invalid(e.to_string()))?;
        query::check_plan(&plan)?;
        let client = SparkConnect::connect(&s.connect_url, s.connect_timeout).await?;
        // Timestamps without a zone are read as TIMESTAMP_NTZ; their epoch values are those of
        // the same wall time in UTC. This first call also tells whether a Spark Connect server
        // answers at all.
        let first = tokio::time::timeout(
            s.connect_timeout,
            client.sql("SET spark.sql.session.timeZone=UTC", &connect::new_uuid()),
        )
        .await
        .map_err(|_| SparkError::Unreachable {
            url: client.url(),
            detail: format!("no answer within {} s", s.connect_timeout.as_secs()),
        })?;
        first?;
        let (tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared {
            board: super::tasks::TaskBoard::new(&s.work.tasks),
            ..Shared::default()
        }));
        let concurrency = s.concurrency.max(1);
        let _ = tx.send(RunEvent::Connected {
            workers: 1,
            threads: concurrency as u32,
        });
        shared.lock().expect("spark run state").board.workers = Some((1, concurrency as u32));
        let ctx = Arc::new(Context {
            client: client.clone(),
            plan,
            submit: s,
            shared: shared.clone(),
            tx,
        });
        let driver = tokio::spawn(async move {
            use futures::StreamExt;
            let tasks = ctx.submit.work.tasks.clone();
            futures::stream::iter(tasks)
                .for_each_concurrent(concurrency, |t| {
                    let ctx = ctx.clone();
                    async move { run_task(&ctx, t).await }
                })
                .await;
            let states = ctx.lock().board.states();
            let n = |p: TaskPhase| states.iter().filter(|t| t.phase == p).count() as u32;
            ctx.lock().board.finished = true;
            let _ = ctx.tx.send(RunEvent::Finished {
                succeeded: n(TaskPhase::Succeeded),
                failed: n(TaskPhase::Failed),
            });
        });
        Ok(SparkRun {
            client,
            shared,
            events,
            driver,
        })
    }

    /// The server's URL (without its token).
    pub fn url(&self) -> String {
        self.client.url()
    }

    /// The tasks' states now.
    pub fn poll(&self) -> Vec<TaskState> {
        self.lock().board.states()
    }

    /// The next change, or None once every task has ended.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Cancels the run: no task starts any more, and Spark is asked to interrupt the queries
    /// that are running.
    pub async fn cancel(&mut self) {
        let running: Vec<String> = {
            let mut sh = self.lock();
            sh.cancelled = true;
            sh.board.cancelled = true;
            sh.running.iter().cloned().collect()
        };
        for op in running {
            match self.client.interrupt(&op).await {
                Ok(known) => tracing::info!(operation = %op, known, "Spark operation interrupted"),
                Err(e) => {
                    tracing::warn!(operation = %op, "cannot interrupt the Spark operation: {e}")
                }
            }
        }
    }

    /// Waits for every task to end and returns their final states (some may have failed: see
    /// [`TaskState::phase`]), or why the run itself failed.
    pub async fn finish(mut self) -> Result<Vec<TaskState>, SparkError> {
        while self.events.recv().await.is_some() {}
        let _ = (&mut self.driver).await;
        if let Err(e) = self.client.release().await {
            tracing::debug!("cannot release the Spark Connect session: {e}");
        }
        let sh = self.lock();
        if sh.cancelled {
            return Err(SparkError::Cancelled);
        }
        Ok(sh.board.states())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("spark run state")
    }
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("spark run state")
    }

    fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Applies a state change the way the drivers' lines do, and passes its events on.
    fn apply(&self, line: serde_json::Value) {
        let events = self
            .lock()
            .board
            .apply_line(&line.to_string())
            .unwrap_or_default();
        for e in events {
            let _ = self.tx.send(e);
        }
    }

    /// Runs one query as a tracked operation (so that [`SparkRun::cancel`] can interrupt it).
    async fn sql(&self, query: &str) -> Result<Vec<arrow::record_batch::RecordBatch>, SparkError> {
        if self.cancelled() {
            return Err(SparkError::Cancelled);
        }
        let op = connect::new_uuid();
        self.lock().running.insert(op.clone());
        tracing::debug!(operation = %op, %query, "Spark query");
        let out = self.client.sql(query, &op).await;
        self.lock().running.remove(&op);
        out
    }
}

async fn run_task(ctx: &Context, task: u32) {
    let retries = ctx.submit.work.retries;
    let mut attempt = 0u32;
    loop {
        if ctx.cancelled() {
            return;
        }
        attempt += 1;
        ctx.apply(serde_json::json!({
            "task": task, "state": "running", "attempt": attempt, "worker": ctx.client.url(),
        }));
        let started = Instant::now();
        match task_attempt(ctx, task, attempt, started).await {
            Ok(()) => {
                ctx.apply(serde_json::json!({
                    "task": task, "state": "succeeded", "exit_code": 0,
                    "millis": started.elapsed().as_millis() as u64,
                }));
                return;
            }
            Err(e) => {
                let code = e.exit_code();
                if e.retryable() && attempt <= retries && !ctx.cancelled() {
                    tracing::warn!(task, attempt, "Spark task failed transiently: {e}");
                    ctx.apply(serde_json::json!({
                        "task": task, "state": "retrying", "attempt": attempt,
                        "exit_code": code, "message": e.to_string(),
                    }));
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    continue;
                }
                ctx.apply(serde_json::json!({
                    "task": task, "state": "failed", "exit_code": code, "message": e.to_string(),
                }));
                return;
            }
        }
    }
}

async fn task_attempt(
    ctx: &Context,
    id: u32,
    attempt: u32,
    started: Instant,
) -> Result<(), SparkError> {
    let attempt_started = time::OffsetDateTime::now_utc();
    let plan = &ctx.plan;
    let task = plan
        .task(id)
        .map_err(|e| SparkError::Invalid(e.to_string()))?;
    let run: String = ctx
        .submit
        .work
        .run_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let q = query::task_query(plan, task, &format!("th_{run}_{id}_{attempt}"))?;
    for statement in &q.setup {
        ctx.sql(statement).await?;
    }
    let url = ctx.client.url();
    let batches = match &q.aggregate {
        Some(sql) => Some(ctx.sql(sql).await?),
        None => None,
    };
    let row = batches
        .as_deref()
        .map(|b| partial::Row::new(b, &url))
        .transpose()?;
    let mut counts = Vec::with_capacity(q.columns.len());
    let limit = plan.options.exact_distinct_limit;
    for c in &q.columns {
        let sql = match (&row, &q.source) {
            (Some(row), Some(source)) if partial::may_be_exact(row, c, limit)? => {
                query::value_counts_sql(source, c, limit)
            }
            _ => None,
        };
        counts.push(match sql {
            Some(sql) => Some(partial::counts_of(c, &ctx.sql(&sql).await?, &url)?),
            None => None,
        });
    }
    let millis = started.elapsed().as_millis() as u64;
    let p = partial::task_partial(plan, task, &q, row.as_ref(), &counts, millis)?;
    let uri = format!(
        "{}/{id}",
        ctx.submit.work.partials_prefix.trim_end_matches('/')
    );
    dataset::write_object(&uri, &ctx.submit.storage, p.to_bytes())
        .await
        .map_err(|e| SparkError::storage(e, format!("writing the partial profile {uri}")))?;
    record_attempt(ctx, id, &uri, attempt_started, p.row_count(), millis).await;
    for statement in &q.setup {
        // Views live as long as the session; drop this task's once it is done with them.
        if let Some(view) = statement
            .strip_prefix("CREATE OR REPLACE TEMPORARY VIEW ")
            .and_then(|s| s.split_once(" ("))
            .map(|(v, _)| v)
        {
            let _ = ctx.sql(&format!("DROP VIEW IF EXISTS {view}")).await;
        }
    }
    Ok(())
}

/// The attempt's record for the run's event log (as `th-worker` writes one): Spark runs no
/// worker of ours, so the operator writes it. Never fails the task.
async fn record_attempt(
    ctx: &Context,
    task: u32,
    partial_uri: &str,
    started: time::OffsetDateTime,
    rows: u64,
    millis: u64,
) {
    use truthound_profile::events::{self, EventKind, RunEvent};
    let Some(work) = events::work_prefix_of_partial(partial_uri) else {
        return;
    };
    let worker = connect::redact(&ctx.client.url());
    let lines = [
        RunEvent::new(EventKind::TaskStarted, "operator", started)
            .task(task)
            .worker(&worker),
        RunEvent::new(
            EventKind::TaskFinished,
            "operator",
            time::OffsetDateTime::now_utc(),
        )
        .task(task)
        .worker(&worker)
        .rows(rows)
        .millis(millis),
    ];
    let name = format!(
        "task-{task}-spark-{}",
        started.unix_timestamp_nanos() / 1_000_000
    );
    if let Err(e) = events::write_record(work, &name, &lines, &ctx.submit.storage).await {
        tracing::warn!(task, error = %e, "cannot write the task's event record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_other_backends() {
        let q = |class| SparkError::Query {
            url: "sc://h:1".into(),
            message: "m".into(),
            class,
        };
        assert_eq!(q(QueryFailure::BadData).exit_code(), 65);
        assert_eq!(q(QueryFailure::Invalid).exit_code(), 64);
        assert_eq!(q(QueryFailure::Transient).exit_code(), 75);
        let unreachable = SparkError::Unreachable {
            url: "sc://h:1".into(),
            detail: "refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 75);
        assert!(
            unreachable
                .to_string()
                .starts_with("cannot reach Spark Connect at sc://h:1")
        );
        assert_eq!(SparkError::Invalid(String::new()).exit_code(), 64);
        assert_eq!(SparkError::Cancelled.exit_code(), 130);
    }
}
