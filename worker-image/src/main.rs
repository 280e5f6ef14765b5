//! `th-worker`: runs one task of a profiling plan and writes its partial profile
//! (`run-task`), or merges a run's partials into its profile (`merge`, the merge pod).
//!
//! Exit codes tell the caller whether to retry: 0 done · 64 invalid request (a bad plan or task
//! id; retrying will not help) · 65 bad data (the input is at fault; retrying will not help) ·
//! 75 transient (storage or network; retry) · 1 internal error · 2 usage. On failure the same
//! code and the error go to the Kubernetes termination log, where the operator reads them from
//! the pod's status.
//!
//! A task whose partial is already at `--out` is not run again: a recreated Job's pods skip the
//! tasks that were done. With `--progress-endpoint`, the task reports its progress to the
//! operator ([`report`]).

mod health;
mod report;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::events::{self, EventKind, RunEvent};
use truthound_profile::merge::{StoredRun, merge_stored};
use truthound_profile::run::{self, Event, Progress};
use truthound_profile::{Error, ErrorClass, PartialProfile, Plan};

/// Where Kubernetes reads a container's termination message by default.
const TERMINATION_LOG: &str = "/dev/termination-log";
/// Kubernetes keeps at most 4 KiB of a termination message.
const MAX_TERMINATION_MESSAGE: usize = 4096;

#[derive(Debug, Parser)]
#[command(
    name = "th-worker",
    version,
    about = "Runs a task of a truthound profiling plan, or merges its partial profiles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run task TASK of the plan at PLAN and write its partial profile to OUT.
    RunTask {
        /// The plan (a path or URI), as `th plan` or the operator writes it.
        #[arg(long)]
        plan: String,
        /// Task id (0-based). Defaults to JOB_COMPLETION_INDEX, the index of a Kubernetes
        /// Indexed Job's pod. With --tasks, the index into that list.
        #[arg(long, env = "JOB_COMPLETION_INDEX")]
        task: u32,
        /// The tasks of the Job's pods, as index ranges (`3,7,19-25`): pod i runs the i-th (an
        /// incremental run skips the tasks whose partials came from the cache).
        #[arg(long, value_name = "RANGES")]
        tasks: Option<String>,
        /// Where to write the partial profile (a path or URI); `{task}` is replaced by the
        /// task id.
        #[arg(long)]
        out: String,
        #[command(flatten)]
        storage: StorageArgs,
        /// Worker threads for I/O.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[command(flatten)]
        progress: ProgressArgs,
    },
    /// Merge the partial profiles of a plan's tasks and write the profile: what a merge pod
    /// runs when a run's partials are too many or too large to merge in the operator.
    Merge(MergeCmd),
}

/// `th-worker merge`: merge a stored run's partials and write the profile.
#[derive(Debug, clap::Args)]
struct MergeCmd {
    /// The plan (a path or URI).
    #[arg(long)]
    plan: String,
    /// The run's work prefix: partials are read from `<WORK>/partials/<task>`, and
    /// `tasks.json` and `merge.json` (the summary the operator reads) are written there.
    #[arg(long)]
    work: String,
    /// Where to write the profile.
    #[arg(long)]
    out: String,
    /// Tasks that failed and are merged without (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    missing: Vec<u32>,
    /// Incremental runs: the cache the partials of the tasks that ran go to (the reused
    /// ones are listed beside the plan, in `<PLAN>.reused`).
    #[arg(long, value_name = "URI")]
    cache: Option<String>,
    /// When the run started (RFC 3339), for the profile's duration.
    #[arg(long)]
    started_at: Option<String>,
    /// Embed the merged state (counts, sketches) in the profile, as `th profile --keep-state`:
    /// later profiles merge with it, and drift between runs compares sketches.
    #[arg(long)]
    keep_state: bool,
    #[command(flatten)]
    storage: StorageArgs,
    /// Worker threads for I/O.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Where the plan, partials and outputs are stored.
#[derive(Debug, Clone, clap::Args)]
struct StorageArgs {
    /// Endpoint of an S3-compatible server, for the plan and the output. The dataset's own
    /// storage options come from the plan; credentials from AWS_*/GOOGLE_*/AZURE_*.
    #[arg(long, env = "TH_S3_ENDPOINT")]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    allow_http: bool,
}

impl StorageArgs {
    fn options(self) -> StorageOptions {
        StorageOptions {
            endpoint: self.endpoint,
            region: self.region,
            allow_http: self.allow_http.then_some(true),
            ..StorageOptions::default()
        }
    }
}

/// Reporting to the operator's progress service (all optional; best-effort).
#[derive(Debug, clap::Args)]
struct ProgressArgs {
    /// The operator's progress service (gRPC), e.g. `http://th-operator.truthound:50051`.
    /// Without it, or without a token and job uid, nothing is reported. Reporting never fails
    /// the task: a missing setting or an unreachable operator is logged and the task goes on.
    #[arg(long, env = "TH_PROGRESS_ENDPOINT")]
    progress_endpoint: Option<String>,
    /// The job's progress token, which the operator gives the job's pods.
    #[arg(long, env = "TH_PROGRESS_TOKEN", hide_env_values = true)]
    progress_token: Option<String>,
    /// The ProfileJob's uid the task belongs to.
    #[arg(long, env = "TH_JOB_UID")]
    job_uid: Option<String>,
    /// Seconds between heartbeats while no progress is reported (taken as 1..=3600).
    #[arg(long, env = "TH_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// The CA an `https://` progress endpoint's certificate is verified against: PEM text, or
    /// the path of a PEM file (default: the system's roots). The operator sets it when its
    /// progress service has TLS.
    #[arg(long, env = "TH_PROGRESS_CA", hide_env_values = true)]
    progress_ca: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            tracing::error!(exit_code = code, error = %format!("{err:#}"), "failed");
            eprintln!("error: {err:#}");
            write_termination_log(&failure_message(&err));
            ExitCode::from(code)
        }
    }
}

fn error_class(err: &anyhow::Error) -> Option<ErrorClass> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map(Error::class)
}

fn exit_code(err: &anyhow::Error) -> u8 {
    match error_class(err) {
        Some(ErrorClass::BadData) => 65,
        Some(ErrorClass::Invalid) => 64,
        Some(ErrorClass::Transient) => 75,
        None => 1,
    }
}

/// `exit_code=<n> reason=<class>: <error>`: what the termination log and the FAILED report
/// say, one line the operator can parse without the worker's logs.
fn failure_message(err: &anyhow::Error) -> String {
    let reason = match error_class(err) {
        Some(ErrorClass::BadData) => "BadData",
        Some(ErrorClass::Invalid) => "Invalid",
        Some(ErrorClass::Transient) => "Transient",
        None => "Error",
    };
    format!("exit_code={} reason={reason}: {err:#}", exit_code(err))
}

/// Writes `message` (at most 4 KiB) to the termination log: `TH_TERMINATION_LOG` if set (created
/// if missing), else `/dev/termination-log` if Kubernetes mounted one. Best-effort: a worker
/// outside Kubernetes has none, and the message is on stderr anyway.
fn write_termination_log(message: &str) {
    use std::io::Write;
    let (path, create) = match std::env::var_os("TH_TERMINATION_LOG") {
        Some(p) if !p.is_empty() => (std::path::PathBuf::from(p), true),
        _ => (std::path::PathBuf::from(TERMINATION_LOG), false),
    };
    let mut end = message.len().min(MAX_TERMINATION_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(create)
        .open(&path)
        .and_then(|mut f| f.write_all(&message.as_bytes()[..end]));
    if let Err(e) = written
        && (create || e.kind() != std::io::ErrorKind::NotFound)
    {
        warn!(path = %path.display(), error = %e, "cannot write the termination log");
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::RunTask {
            plan,
            task,
            tasks,
            out,
            storage,
            threads,
            progress,
        } => {
            let task = match &tasks {
                Some(list) => task_at(list, task)?,
                None => task,
            };
            let out = out.replace("{task}", &task.to_string());
            run_task_command(&plan, task, &out, storage.options(), threads, progress)
        }
        Command::Merge(cmd) => {
            let storage = cmd.storage.clone().options();
            runtime(cmd.threads)?.block_on(merge(&cmd, &storage))
        }
    }
}

/// The `index`-th task of `ranges` (`3,7,19-25`, ascending).
fn task_at(ranges: &str, index: u32) -> Result<u32> {
    let bad = |detail: String| Error::Invalid {
        what: "--tasks",
        detail,
    };
    let mut seen = 0u32;
    for part in ranges.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| bad(format!("`{part}` is not a task id or a range of them")))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if b < a {
            return Err(bad(format!("`{part}` is an empty range")).into());
        }
        let len = b - a + 1;
        if index - seen < len {
            return Ok(a + (index - seen));
        }
        seen += len;
    }
    Err(bad(format!(
        "pod index {index} is past the {seen} tasks of `{ranges}`"
    ))
    .into())
}

/// Merges the run's partials and writes the profile, the task table and the summary.
async fn merge(cmd: &MergeCmd, storage: &StorageOptions) -> Result<()> {
    let (plan_uri, work, out) = (cmd.plan.as_str(), cmd.work.as_str(), cmd.out.as_str());
    let (cache, started_at) = (cmd.cache.as_deref(), cmd.started_at.as_deref());
    let started = started_at
        .map(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(
                |e| Error::Invalid {
                    what: "--started-at",
                    detail: format!("`{s}` is not an RFC 3339 time: {e}"),
                },
            )
        })
        .transpose()?;
    let bytes = dataset::read_object(plan_uri, storage)
        .await
        .with_context(|| format!("reading the plan {plan_uri}"))?;
    let plan = Plan::from_json(&bytes, plan_uri)?;
    let duration_ms = started
        .map(|t| {
            (time::OffsetDateTime::now_utc() - t)
                .whole_milliseconds()
                .max(0) as u64
        })
        .unwrap_or(0);
    let reused = match cache {
        Some(_) => truthound_profile::merge::read_reused(plan_uri, storage).await,
        None => Default::default(),
    };
    let stored = StoredRun {
        plan: &plan,
        cache: cache.map(|c| truthound_profile::cache::PartialCache::new(c, storage)),
        reused,
        work_prefix: work.trim_end_matches('/').to_string(),
        missing: cmd.missing.iter().copied().collect(),
        profile_uri: out.to_string(),
        duration_ms,
        keep_state: cmd.keep_state,
    };
    info!(plan = %plan.id, tasks = plan.tasks.len(), missing = stored.missing.len(), "merge started");
    let summary = merge_stored(&stored, storage).await?;
    info!(
        profile = %summary.profile_uri,
        rows = summary.rows,
        columns = summary.columns,
        tasks = summary.tasks_merged,
        "profile written"
    );
    Ok(())
}

fn run_task_command(
    plan: &str,
    task: u32,
    out: &str,
    storage: StorageOptions,
    threads: usize,
    progress: ProgressArgs,
) -> Result<()> {
    runtime(threads)?.block_on(async {
        let reporter = report_config(progress, task).map(report::Reporter::start);
        let result = run_task(plan, task, out, &storage, reporter.as_ref()).await;
        if let Some(reporter) = reporter {
            let outcome = match &result {
                Ok(rows) => report::Outcome::Finished { rows: *rows },
                Err(err) => report::Outcome::Failed {
                    message: failure_message(err),
                },
            };
            reporter.finish(outcome).await;
        }
        result.map(|_| ())
    })
}

/// The reporting settings, when an endpoint, a token and a job uid are given.
fn report_config(args: ProgressArgs, task: u32) -> Option<report::ReportConfig> {
    let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let endpoint = nonempty(args.progress_endpoint)?;
    let (Some(token), Some(job_uid)) = (nonempty(args.progress_token), nonempty(args.job_uid))
    else {
        warn!(
            endpoint = %endpoint,
            "a progress endpoint without a token and a job uid (TH_PROGRESS_TOKEN, TH_JOB_UID); not reporting progress"
        );
        return None;
    };
    let ca = match nonempty(args.progress_ca) {
        None => None,
        Some(pem) if pem.trim_start().starts_with("-----BEGIN") => Some(pem.into_bytes()),
        Some(path) => match std::fs::read(&path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                warn!(path = %path, error = %e, "cannot read the progress CA (TH_PROGRESS_CA); not reporting progress");
                return None;
            }
        },
    };
    let pod = ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| format!("th-worker-{}", std::process::id()));
    Some(report::ReportConfig {
        endpoint,
        token,
        job_uid,
        pod,
        task,
        heartbeat: Duration::from_secs(args.heartbeat_seconds.clamp(1, 3600)),
        ca,
    })
}

/// Runs the task (or finds it done) and returns the rows it read.
async fn run_task(
    plan_uri: &str,
    task: u32,
    out: &str,
    storage: &StorageOptions,
    reporter: Option<&report::Reporter>,
) -> Result<u64> {
    let bytes = dataset::read_object(plan_uri, storage)
        .await
        .with_context(|| format!("reading the plan {plan_uri}"))?;
    let plan = Plan::from_json(&bytes, plan_uri)?;
    let planned_rows = plan.task(task)?.rows;
    if let Some(rows) = existing_partial(&plan, task, out, storage).await {
        info!(plan = %plan.id, task, out = %out, "partial already present; not running the task again");
        return Ok(planned_rows.unwrap_or(rows));
    }
    let store = run::plan_store(&plan)?;
    if let Some(r) = reporter {
        r.started(&plan.id, planned_rows.unwrap_or(0));
    }
    let report_rows = reporter.map(report::Reporter::progress);
    let progress: Progress = Arc::new(move |event| {
        if let Event::TaskFinished { task, rows, millis } = event {
            info!(task, rows, millis, "task finished");
        }
        if let Some(p) = &report_rows {
            p(event);
        }
    });
    info!(plan = %plan.id, task, "task started");
    let attempt = Attempt::start(task);
    let ran = async {
        let partial = run::run_task(&plan, task, store, &progress).await?;
        dataset::write_object(out, storage, partial.to_bytes())
            .await
            .with_context(|| format!("writing the partial profile to {out}"))?;
        info!(out = %out, "partial written");
        Ok::<_, anyhow::Error>(partial.row_count())
    }
    .await;
    attempt
        .record(out, ran.as_ref().ok().copied(), storage)
        .await;
    Ok(planned_rows.unwrap_or(ran?))
}

/// One attempt at a task, for the run's event log: its start, and its finish when the partial
/// is written. A failure is recorded by whoever sees its cause (the operator sees an OOM kill,
/// a stall or a pod's exit message; a worker that dies cannot write).
struct Attempt {
    task: u32,
    worker: String,
    started: time::OffsetDateTime,
    clock: std::time::Instant,
}

impl Attempt {
    fn start(task: u32) -> Self {
        let worker = ["POD_NAME", "HOSTNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
            .map_or_else(
                || format!("pid-{}", std::process::id()),
                |host| format!("{host}-{}", std::process::id()),
            );
        Attempt {
            task,
            worker,
            started: time::OffsetDateTime::now_utc(),
            clock: std::time::Instant::now(),
        }
    }

    /// Writes the attempt's record beside the partial at `out` (`<work>/events/`), when `out`
    /// is a run's partial. Never fails the task: the log is a record, the partial is the work.
    async fn record(&self, out: &str, rows: Option<u64>, storage: &StorageOptions) {
        let Some(work) = events::work_prefix_of_partial(out) else {
            return;
        };
        let mut lines = vec![
            RunEvent::new(EventKind::TaskStarted, "worker", self.started)
                .task(self.task)
                .worker(&self.worker),
        ];
        if let Some(rows) = rows {
            lines.push(
                RunEvent::new(
                    EventKind::TaskFinished,
                    "worker",
                    time::OffsetDateTime::now_utc(),
                )
                .task(self.task)
                .worker(&self.worker)
                .rows(rows)
                .millis(self.clock.elapsed().as_millis() as u64),
            );
        }
        let name = format!(
            "task-{}-{}-{}",
            self.task,
            self.worker,
            self.started.unix_timestamp_nanos() / 1_000_000
        );
        if let Err(e) = events::write_record(work, &name, &lines, storage).await {
            warn!(task = self.task, error = %e, "cannot write the task's event record");
        }
    }
}

/// The rows of the partial at `out` if it is this task's of this plan: a pod that is re-run
/// (a replaced pod, a recreated Job) then skips work that is done. Anything else at `out` (an
/// older plan's partial, garbage) is overwritten by running the task; a failure to look is
/// treated the same way, since running again gives the same partial.
async fn existing_partial(
    plan: &Plan,
    task: u32,
    out: &str,
    storage: &StorageOptions,
) -> Option<u64> {
    let bytes = match dataset::read_object(out, storage).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return None,
        Err(e) => {
            warn!(out = %out, error = %e, "cannot check for an existing partial; running the task");
            return None;
        }
    };
    match PartialProfile::from_bytes(&bytes, out) {
        Ok(p) if is_partial_of(&p, plan, task) => Some(p.row_count()),
        Ok(_) => {
            info!(out = %out, "the partial at OUT is of another plan or task; replacing it");
            None
        }
        Err(e) => {
            warn!(out = %out, error = %e, "OUT holds no readable partial; replacing it");
            None
        }
    }
}

/// `partial` covers exactly task `task` of `plan`.
fn is_partial_of(partial: &PartialProfile, plan: &Plan, task: u32) -> bool {
    partial.tasks.len() == 1
        && partial.tasks.contains(&(plan.id.clone(), task))
        && partial.plans.get(&plan.id).is_some_and(|r| {
            r.total_tasks as usize == plan.tasks.len()
                && r.dataset == plan.dataset.uri
                && r.columns == plan.columns
        })
}

#[cfg(test)]
mod tests {
    use super::task_at;

    #[test]
    fn a_pod_index_is_the_task_at_that_place_of_the_ranges() {
        let got: Vec<u32> = (0..5).map(|i| task_at("3,7,19-21", i).unwrap()).collect();
        assert_eq!(got, vec![3, 7, 19, 20, 21]);
        assert!(task_at("3,7", 2).is_err(), "past the list");
        assert!(task_at("3-x", 0).is_err());
        assert!(task_at("5-2", 0).is_err());
    }
}
