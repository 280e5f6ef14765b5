//! What the remote backends share: the per-task states of a run (the local backend's shape: task
//! id → pending/running/succeeded/failed with a message), the JSON lines their drivers print
//! (`worker-image/drivers/dask_runner.py`, `ray_driver.py`) folded into those states, and the
//! operator's [`TaskCounts`] and [`TaskFailure`]s made from them.
//!
//! The drivers' lines, one JSON object per change:
//!
//! ```text
//! {"event": "connected", "workers": N, "threads": T, ...}
//! {"event": "worker_bin", "shipped": [...], "missing": [...]}
//! {"task": I, "state": "running", "attempt": A, "worker": W}
//! {"task": I, "state": "retrying", "attempt": A, "exit_code": C, "message": M}
//! {"task": I, "state": "succeeded", "exit_code": 0, "millis": MS}
//! {"task": I, "state": "failed", "exit_code": C, "message": M}
//! {"event": "finished", "succeeded": N, "failed": M}
//! {"event": "cancelled"}
//! {"event": "error", "kind": "unreachable|missing_dependency|invalid|internal", "message": M}
//! ```

use crate::crd::{TaskCounts, TaskFailure};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What every remote backend is given to run: a plan's tasks, and where the plan and the
/// partials are. The backend's own submission adds its cluster's address and settings.
#[derive(Debug, Clone)]
pub struct RemoteTasks {
    /// Names the run: a reconciler uses the same id again to find its work (Dask keys
    /// `<run_id>-<task>`, the Ray submission id); a CLI run uses a fresh one.
    pub run_id: String,
    /// The plan, where the workers can read it (object storage, or a shared file system).
    pub plan_uri: String,
    /// Task `i` writes its partial to `<partials_prefix>/<i>`.
    pub partials_prefix: String,
    /// The tasks to run (all of the plan's, or those without a partial yet).
    pub tasks: Vec<u32>,
    /// Environment of each `th-worker` (storage endpoint, credentials). It travels through the
    /// cluster (Dask: the scheduler; Ray: a file in the job's `working_dir` package, kept out of
    /// the `runtime_env` the dashboard shows).
    pub env: BTreeMap<String, String>,
    /// Extra arguments of `th-worker run-task` (e.g. `--allow-http`, `--region R`).
    pub worker_args: Vec<String>,
    /// Retries of a task that failed transiently (never of bad data).
    pub retries: u32,
    /// A `th-worker` binary to ship to the cluster (None: its workers must have one on their
    /// PATH).
    pub worker_bin: Option<PathBuf>,
}

/// A task's phase, as for the local backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// One task's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub task: u32,
    pub phase: TaskPhase,
    /// Attempts started (retries are `attempts - 1`).
    pub attempts: u32,
    /// The exit code of the last finished attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What `th-worker` said when the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the last attempt ran (a Dask worker, a Ray node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Milliseconds of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
}

impl TaskState {
    pub fn pending(task: u32) -> TaskState {
        TaskState {
            task,
            phase: TaskPhase::Pending,
            attempts: 0,
            exit_code: None,
            message: None,
            worker: None,
            millis: None,
        }
    }

    /// BadData, Invalid, Transient or Error, from `th-worker`'s exit code (the operator's
    /// [`TaskFailure::reason`]).
    pub fn reason(&self) -> &'static str {
        reason(self.exit_code)
    }
}

fn reason(exit_code: Option<i32>) -> &'static str {
    match exit_code {
        Some(65) => "BadData",
        Some(64) => "Invalid",
        Some(75) => "Transient",
        _ => "Error",
    }
}

/// A change a driver reported.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// Connected to the cluster, which has `workers` workers (Ray: nodes) with `threads` threads
    /// (Ray: CPUs) in all.
    Connected { workers: u32, threads: u32 },
    /// `th-worker` was shipped to these workers; these have none.
    WorkerBin {
        shipped: Vec<String>,
        missing: Vec<String>,
    },
    /// A task changed state.
    Task(TaskState),
    /// A task's attempt failed transiently and is retried.
    Retrying {
        task: u32,
        attempt: u32,
        exit_code: Option<i32>,
        message: String,
    },
    /// Every task ran to an end.
    Finished { succeeded: u32, failed: u32 },
}

/// The tasks' states of a run and what its driver said about the run itself, folded from the
/// driver's lines.
#[derive(Debug, Default, Clone)]
pub struct TaskBoard {
    pub tasks: BTreeMap<u32, TaskState>,
    /// Workers (nodes) and threads (CPUs), once connected.
    pub workers: Option<(u32, u32)>,
    /// The driver's error: kind and message.
    pub error: Option<(String, String)>,
    /// Every task ran to an end.
    pub finished: bool,
    /// The driver was cancelled.
    pub cancelled: bool,
}

impl TaskBoard {
    /// Every task pending.
    pub fn new(tasks: &[u32]) -> TaskBoard {
        TaskBoard {
            tasks: tasks.iter().map(|&t| (t, TaskState::pending(t))).collect(),
            ..TaskBoard::default()
        }
    }

    /// The tasks' states, by task id.
    pub fn states(&self) -> Vec<TaskState> {
        self.tasks.values().cloned().collect()
    }

    /// Applies one line of the driver's output; the events it makes, or None when the line is
    /// not a JSON object (not the driver's: a library printing on stdout).
    pub fn apply_line(&mut self, line: &str) -> Option<Vec<RunEvent>> {
        let v = serde_json::from_str::<serde_json::Value>(line.trim()).ok()?;
        if !v.is_object() {
            return None;
        }
        let str_of = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let u32_of = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as u32);
        let strings = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(task) = u32_of("task") {
            let exit_code = v
                .get("exit_code")
                .and_then(|x| x.as_i64())
                .map(|x| x as i32);
            let state = self
                .tasks
                .entry(task)
                .or_insert_with(|| TaskState::pending(task));
            let done = matches!(state.phase, TaskPhase::Succeeded | TaskPhase::Failed);
            return Some(match str_of("state").as_deref() {
                Some("running") if !done => {
                    state.phase = TaskPhase::Running;
                    state.attempts = u32_of("attempt").unwrap_or(state.attempts + 1);
                    state.worker = str_of("worker");
                    vec![RunEvent::Task(state.clone())]
                }
                Some("retrying") if !done => {
                    state.exit_code = exit_code;
                    state.message = str_of("message");
                    vec![RunEvent::Retrying {
                        task,
                        attempt: u32_of("attempt").unwrap_or(state.attempts),
                        exit_code,
                        message: str_of("message").unwrap_or_default(),
                    }]
                }
                Some("succeeded") => {
                    state.phase = TaskPhase::Succeeded;
                    state.attempts = state.attempts.max(1);
                    state.exit_code = Some(0);
                    state.message = None;
                    state.millis = v.get("millis").and_then(|x| x.as_u64());
                    vec![RunEvent::Task(state.clone())]
                }
                Some("failed") => {
                    state.phase = TaskPhase::Failed;
                    state.attempts = state.attempts.max(1);
                    state.exit_code = exit_code;
                    state.message = str_of("message");
                    vec![RunEvent::Task(state.clone())]
                }
                _ => Vec::new(),
            });
        }
        Some(match str_of("event").as_deref() {
            Some("connected") => {
                let w = (
                    u32_of("workers").unwrap_or(0),
                    u32_of("threads").unwrap_or(0),
                );
                self.workers = Some(w);
                vec![RunEvent::Connected {
                    workers: w.0,
                    threads: w.1,
                }]
            }
            Some("worker_bin") => vec![RunEvent::WorkerBin {
                shipped: strings("shipped"),
                missing: strings("missing"),
            }],
            Some("finished") => {
                self.finished = true;
                vec![RunEvent::Finished {
                    succeeded: u32_of("succeeded").unwrap_or(0),
                    failed: u32_of("failed").unwrap_or(0),
                }]
            }
            Some("cancelled") => {
                self.cancelled = true;
                Vec::new()
            }
            Some("error") => {
                self.error = Some((
                    str_of("kind").unwrap_or_else(|| "internal".into()),
                    str_of("message").unwrap_or_default(),
                ));
                Vec::new()
            }
            _ => Vec::new(),
        })
    }
}

/// Task counts in the operator's shape.
pub fn counts(tasks: &[TaskState]) -> TaskCounts {
    let n = |p: TaskPhase| tasks.iter().filter(|t| t.phase == p).count() as u32;
    let succeeded = n(TaskPhase::Succeeded);
    TaskCounts {
        total: tasks.len() as u32,
        pending: n(TaskPhase::Pending),
        running: n(TaskPhase::Running),
        succeeded,
        failed: n(TaskPhase::Failed),
        retried: tasks.iter().map(|t| t.attempts.saturating_sub(1)).sum(),
        reused: 0,
        summary: format!("{succeeded}/{}", tasks.len()),
    }
}

/// The failed tasks in the operator's shape (time: now).
pub fn failures(tasks: &[TaskState]) -> Vec<TaskFailure> {
    let now = crate::status::rfc3339(time::OffsetDateTime::now_utc());
    tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Failed)
        .map(|t| TaskFailure {
            task: t.task,
            reason: t.reason().to_string(),
            message: t.message.clone().unwrap_or_default(),
            time: now.clone(),
        })
        .collect()
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Keeps the last `keep` bytes (at a character boundary) of `s` once it is twice as long.
pub fn trim_front(s: &mut String, keep: usize) {
    if s.len() > 2 * keep {
        let mut cut = s.len() - keep;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_driver_lines_into_task_states() {
        let mut b = TaskBoard::new(&[0, 1, 2]);
        let mut other = 0;
        for line in [
            r#"{"event":"connected","scheduler":"tcp://x:1","workers":2,"threads":4}"#,
            r#"{"task":0,"state":"running","attempt":1,"worker":"tcp://w1"}"#,
            r#"{"task":1,"state":"running","attempt":1,"worker":"tcp://w1"}"#,
            r#"{"task":1,"state":"retrying","attempt":1,"exit_code":75,"message":"timeout"}"#,
            r#"{"task":1,"state":"running","attempt":2,"worker":"tcp://w2"}"#,
            r#"{"task":0,"state":"succeeded","exit_code":0,"millis":12}"#,
            r#"{"task":1,"state":"failed","exit_code":65,"message":"exit_code=65 reason=BadData: corrupt"}"#,
            // a late "running" does not undo an end
            r#"{"task":0,"state":"running","attempt":2}"#,
            "not json",
            "[1, 2]",
            r#"{"event":"finished","succeeded":1,"failed":1}"#,
        ] {
            if b.apply_line(line).is_none() {
                other += 1;
            }
        }
        assert_eq!(other, 2);
        assert_eq!(b.workers, Some((2, 4)));
        assert!(b.finished);
        let t = b.states();
        assert_eq!(t[0].phase, TaskPhase::Succeeded);
        assert_eq!(t[0].millis, Some(12));
        assert_eq!(t[1].phase, TaskPhase::Failed);
        assert_eq!(t[1].attempts, 2);
        assert_eq!(t[1].reason(), "BadData");
        assert_eq!(t[2].phase, TaskPhase::Pending);
        let c = counts(&t);
        assert_eq!(
            (
                c.total,
                c.pending,
                c.running,
                c.succeeded,
                c.failed,
                c.retried
            ),
            (3, 1, 0, 1, 1, 1)
        );
        let f = failures(&t);
        assert_eq!((f[0].task, f[0].reason.as_str()), (1, "BadData"));
    }

    #[test]
    fn trims_at_char_boundaries() {
        let mut s = "é".repeat(20);
        trim_front(&mut s, 5);
        assert!(s.len() <= 6 && s.chars().all(|c| c == 'é'));
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
    }
}
