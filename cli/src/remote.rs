//! What `th profile --backend spark|dask|ray` share: plan here, write the plan to a work prefix
//! the cluster's workers can reach, submit the tasks through the backend's core
//! (`truthound_operator::backend::{spark, dask, ray}`), follow the tasks' states with the
//! progress bar (Ctrl-C cancels), then merge the partials and write the profile exactly as the
//! in-process path does ([`crate::finish_profile`]).
//!
//! The work prefix: `--work-dir`, else `.th-work/<run>` beside `--output`, else a local
//! temporary directory (removed afterwards), which only workers on this machine can use.

use crate::args::ProfileArgs;
use crate::{make_plan, progress, runtime};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use truthound_operator::backend::dask::{DaskError, sibling_worker_bin};
use truthound_operator::backend::ray::RayError;
use truthound_operator::backend::spark::SparkError;
use truthound_operator::backend::tasks::{RemoteTasks, RunEvent, TaskPhase, TaskState};
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::run::Event;
use truthound_profile::{PartialProfile, Plan};

/// Tasks that failed on the cluster; the exit code is the worker's (65 bad data, 64 invalid,
/// 75 transient, else 1).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TasksFailed {
    pub code: u8,
    pub message: String,
}

/// `th`'s exit code for the errors of the remote backends, if `err` is one.
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    err.chain().find_map(|e| {
        e.downcast_ref::<DaskError>()
            .map(DaskError::exit_code)
            .or_else(|| e.downcast_ref::<RayError>().map(RayError::exit_code))
            .or_else(|| e.downcast_ref::<SparkError>().map(SparkError::exit_code))
            .or_else(|| e.downcast_ref::<TasksFailed>().map(|t| t.code))
    })
}

/// A remote backend, as `th profile` drives it.
pub trait Backend {
    /// The run it makes.
    type Run: Run;
    /// "Dask", "Ray": the cluster's kind in messages.
    fn name(&self) -> &'static str;
    /// The cluster's address, for messages.
    fn address(&self) -> &str;
    async fn submit(&self, job: RemoteTasks) -> Result<Self::Run>;
}

/// A submitted run.
pub trait Run {
    /// The next change, or None once the run has said everything.
    async fn next_event(&mut self) -> Option<RunEvent>;
    async fn cancel(&mut self);
    /// The tasks' final states, or why the run itself failed.
    async fn finish(self) -> Result<Vec<TaskState>>;
}

fn worker_env(storage: &StorageOptions) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    if let Some(e) = &storage.endpoint {
        env.insert("TH_S3_ENDPOINT".into(), e.clone());
    }
    env
}

fn worker_args(storage: &StorageOptions) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(r) = &storage.region {
        a.extend(["--region".to_string(), r.clone()]);
    }
    if storage.allow_http == Some(true) {
        a.push("--allow-http".into());
    }
    a
}

fn is_uri(s: &str) -> bool {
    s.contains("://")
}

fn absolute(path: &str) -> Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("cannot make {path} absolute"))?
        .display()
        .to_string())
}

/// The work prefix, and a local directory to remove afterwards.
fn work_prefix(args: &ProfileArgs, run_id: &str) -> Result<(String, Option<PathBuf>)> {
    if let Some(w) = &args.work_dir {
        let w = w.trim_end_matches('/');
        let base = if is_uri(w) {
            w.to_string()
        } else {
            absolute(w)?
        };
        return Ok((format!("{base}/{run_id}"), None));
    }
    if let Some(out) = &args.output {
        let parent = if is_uri(out) {
            out.rsplit_once('/').map(|(p, _)| p.to_string())
        } else {
            let abs = std::path::absolute(out)?;
            abs.parent().map(|p| p.display().to_string())
        };
        if let Some(parent) = parent.filter(|p| !p.ends_with(':') && !p.ends_with("//")) {
            return Ok((format!("{parent}/.th-work/{run_id}"), None));
        }
    }
    let dir = std::env::temp_dir().join(run_id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the work directory {}", dir.display()))?;
    Ok((dir.display().to_string(), Some(dir)))
}

/// Removes the local work directory when the run ends, however it ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh name for this run: `th-<plan id>-<time and pid>`.
fn run_id(plan: &Plan) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id: String = plan
        .id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!(
        "th-{id}-{:x}{:04x}",
        nanos % 0xffff_ffff,
        std::process::id() & 0xffff
    )
}

fn failed_error(failed: &[&TaskState], total: usize, cluster: &str) -> TasksFailed {
    let first = failed[0];
    let code = match first.exit_code {
        Some(c @ (64 | 65 | 75)) => c as u8,
        _ => 1,
    };
    let mut message = format!(
        "task {} of {total} failed on the {cluster} cluster{}: {}",
        first.task,
        first
            .worker
            .as_deref()
            .map(|w| format!(" (worker {w})"))
            .unwrap_or_default(),
        first
            .message
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("no message"),
    );
    if failed.len() > 1 {
        let rest: Vec<String> = failed[1..].iter().map(|t| t.task.to_string()).collect();
        message.push_str(&format!(
            " (and {} more failed: task {})",
            rest.len(),
            rest.join(", ")
        ));
    }
    TasksFailed { code, message }
}

/// Reads and merges the partials of every task of the plan.
async fn merge_partials(
    plan: &Plan,
    partials: &str,
    storage: &StorageOptions,
) -> Result<PartialProfile> {
    let mut merged: Option<PartialProfile> = None;
    for t in 0..plan.tasks.len() {
        let uri = format!("{partials}/{t}");
        let bytes = dataset::read_object(&uri, storage)
            .await
            .with_context(|| format!("reading the partial profile of task {t}"))?;
        let p = PartialProfile::from_bytes(&bytes, &uri)?;
        match &mut merged {
            None => merged = Some(p),
            Some(m) => m.merge(&p).with_context(|| format!("merging {uri}"))?,
        }
    }
    merged.context("the plan has no tasks")
}

/// Follows the run: progress, failures and retries on stderr, Ctrl-C cancels. The cluster's
/// threads, as the driver said.
async fn follow<R: Run>(
    run: &mut R,
    plan: &Plan,
    args: &ProfileArgs,
    name: &str,
    address: &str,
) -> u32 {
    let bar = progress::Bar::new(plan, args.quiet || args.json);
    let sink = bar.sink();
    let mut threads = 0u32;
    loop {
        tokio::select! {
            ev = run.next_event() => match ev {
                None => break,
                Some(RunEvent::Connected { workers, threads: t }) => {
                    threads = t;
                    tracing::info!(workers, threads = t, "connected to the {name} cluster");
                    if workers == 0 && !args.quiet {
                        eprintln!("warning: the {name} cluster at {address} has no workers yet; the tasks wait for one");
                    }
                }
                Some(RunEvent::WorkerBin { shipped, missing }) => {
                    tracing::info!(?shipped, ?missing, "th-worker on the {name} workers");
                }
                Some(RunEvent::Task(t)) => match t.phase {
                    TaskPhase::Succeeded => {
                        let rows = plan.tasks.get(t.task as usize).and_then(|p| p.rows).unwrap_or(0);
                        sink(Event::Rows { task: t.task, rows });
                        sink(Event::TaskFinished { task: t.task, rows, millis: t.millis.unwrap_or(0) });
                    }
                    TaskPhase::Failed if !args.quiet => eprintln!(
                        "task {} failed: {}",
                        t.task,
                        t.message.as_deref().unwrap_or("no message")
                    ),
                    _ => tracing::debug!(task = t.task, phase = ?t.phase, attempt = t.attempts, "task"),
                },
                Some(RunEvent::Retrying { task, attempt, exit_code, message }) => {
                    if !args.quiet {
                        eprintln!(
                            "task {task}: attempt {attempt} failed (exit code {}): {message}; retrying",
                            exit_code.map_or("?".to_string(), |c| c.to_string())
                        );
                    }
                }
                Some(RunEvent::Finished { .. }) => {}
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("cancelling the {name} run");
                run.cancel().await;
            }
        }
    }
    bar.finish();
    threads
}

/// `th profile` on a remote backend.
pub fn profile<B: Backend>(mut args: ProfileArgs, backend: B) -> Result<()> {
    // The workers run elsewhere: a local dataset path must not depend on this directory.
    if !is_uri(&args.plan.uri) && std::path::Path::new(&args.plan.uri).is_relative() {
        args.plan.uri = absolute(&args.plan.uri)?;
    }
    let storage = args.plan.storage.options()?;
    let rt = runtime(2)?;
    let started = Instant::now();
    let name = backend.name();
    let (plan, merged, threads, log) = rt.block_on(async {
        // Partition for the cluster, not for this machine: twice the workers by default.
        let plan = make_plan(&args.plan, &storage, args.workers.unwrap_or(4), false).await?;
        if let Some(uri) = &args.plan_out {
            dataset::write_object(uri, &storage, plan.to_json())
                .await
                .with_context(|| format!("writing the plan to {uri}"))?;
        }
        let run_id = run_id(&plan);
        let (work, cleanup) = work_prefix(&args, &run_id)?;
        let _cleanup = RemoveOnDrop(cleanup);
        let plan_uri = format!("{work}/plan.json");
        dataset::write_object(&plan_uri, &storage, plan.to_json())
            .await
            .with_context(|| format!("writing the plan to {plan_uri}"))?;
        let partials = format!("{work}/partials");
        let worker_bin = std::env::var_os("TH_WORKER_BIN")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| sibling_worker_bin(&e))
            });
        tracing::info!(address = backend.address(), %run_id, work = %work, tasks = plan.tasks.len(), "submitting to {name}");
        let mut run = backend
            .submit(RemoteTasks {
                run_id,
                plan_uri,
                partials_prefix: partials.clone(),
                tasks: (0..plan.tasks.len() as u32).collect(),
                env: worker_env(&storage),
                worker_args: worker_args(&storage),
                retries: args.retries,
                worker_bin,
            })
            .await?;
        let threads = follow(&mut run, &plan, &args, name, backend.address()).await;
        let states = run.finish().await?;
        let failed: Vec<&TaskState> = states
            .iter()
            .filter(|t| t.phase != TaskPhase::Succeeded)
            .collect();
        if !failed.is_empty() {
            return Err(failed_error(&failed, states.len(), name).into());
        }
        let merged = merge_partials(&plan, &partials, &storage).await?;
        // The workers' records go with the work prefix: collected before it is removed.
        let log = crate::run_log::RunLog::new(&plan);
        match truthound_profile::events::collect(&work, &storage).await {
            Ok(recorded) => log.extend(recorded),
            Err(e) => tracing::warn!(error = %e, "cannot collect the workers' event records"),
        }
        anyhow::Ok((plan, merged, threads, log))
    })?;
    let elapsed = started.elapsed().as_millis() as u64;
    crate::finish_profile(
        &rt,
        &args,
        &storage,
        &plan,
        &merged,
        crate::Ran {
            elapsed_ms: elapsed,
            workers: threads.max(1) as usize,
            reused: None,
            log: &log,
        },
    )
}
