//! The Dask backend's core, without Kubernetes: submit a plan's tasks to a Dask cluster, follow
//! each task's state, cancel, and leave the partials where the plan's work prefix says.
//!
//! Dask has no job-submission API. As the Dask Kubernetes operator's DaskJob does, a *runner*
//! process connects to the scheduler as a client and maps the tasks over its workers:
//! `worker-image/drivers/dask_runner.py`, embedded here ([`RUNNER_PY`]) and run with a python
//! that has `dask[distributed]` (`TH_DASK_PYTHON`, else the virtualenv `scripts/dask-cluster.sh`
//! installs, else `python3`). Each Dask task runs `th-worker run-task --plan PLAN --task I --out
//! PARTIALS/I` in a subprocess, so the profiling code and the partials are those of every other
//! backend; `th-worker` is shipped to the workers that lack it. The runner reports each task's
//! state changes as JSON lines, which [`DaskRun`] folds into [`TaskState`]s: the same shape
//! (task id → pending/running/succeeded/failed with a message) as the local backend's, and the
//! operator's [`TaskCounts`] and [`TaskFailure`]s.
//!
//! `th profile --backend dask` runs the runner as a local process; the operator will run the same
//! runner as a `batch/v1` Job from the worker image.
//!
//! Retries: a task whose `th-worker` exits with anything but 0, 64 (invalid request) or 65 (bad
//! data) is retried by Dask up to [`DaskSubmit::retries`] times; 64 and 65 fail it at once.

pub use super::tasks::{RemoteTasks, RunEvent, TaskPhase, TaskState, counts, failures};
use super::tasks::{TaskBoard, tail_lines, trim_front};
use crate::crd::{TaskCounts, TaskFailure};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The runner, as `worker-image/drivers/dask_runner.py` holds it.
pub const RUNNER_PY: &str = include_str!("../../../worker-image/drivers/dask_runner.py");
/// The Dask version the runner is tested with (what `scripts/dask-cluster.sh` installs).
pub const DASK_REQUIREMENT: &str = "dask[distributed]==2026.8.0";
/// Default retries of a task that failed transiently.
pub const DEFAULT_RETRIES: u32 = 2;
/// How much of the runner's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct DaskSubmit {
    /// The scheduler's address, e.g. `tcp://dask-scheduler:8786`.
    pub scheduler: String,
    /// The tasks, the plan and where the partials go.
    pub work: RemoteTasks,
    /// The python that runs the runner (None: [`default_python`]).
    pub python: Option<PathBuf>,
    /// How long to wait for the scheduler.
    pub connect_timeout: Duration,
}

impl DaskSubmit {
    /// The runner's input (one JSON object on its stdin, so that credentials are not in its
    /// command line).
    fn runner_input(&self) -> serde_json::Value {
        serde_json::json!({
            "scheduler": self.scheduler,
            "run_id": self.work.run_id,
            "plan_uri": self.work.plan_uri,
            "partials_prefix": self.work.partials_prefix,
            "tasks": self.work.tasks,
            "env": self.work.env,
            "storage_args": self.work.worker_args,
            "retries": self.work.retries,
            "worker_bin": self.work.worker_bin.as_ref().map(|p| p.display().to_string()),
            "connect_timeout": self.connect_timeout.as_secs_f64(),
        })
    }
}

/// What went wrong with the run itself (task failures are in the tasks' states).
#[derive(Debug, thiserror::Error)]
pub enum DaskError {
    #[error("cannot reach the Dask scheduler at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    /// No python, or no `dask.distributed` in it.
    #[error("{0}")]
    Unavailable(String),
    #[error("invalid Dask submission: {0}")]
    Invalid(String),
    #[error("the Dask runner failed: {0}")]
    Runner(String),
    #[error("the Dask run was cancelled")]
    Cancelled,
}

impl DaskError {
    /// `th`'s exit code for it: 75 unreachable (retry later), 69 unavailable, 64 invalid, 130
    /// cancelled, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaskError::Unreachable { .. } => 75,
            DaskError::Unavailable(_) => 69,
            DaskError::Invalid(_) => 64,
            DaskError::Cancelled => 130,
            DaskError::Runner(_) => 1,
        }
    }
}

/// The runner's python: `TH_DASK_PYTHON`; else the virtualenv of `scripts/dask-cluster.sh`
/// (`$TH_CACHE/venv-dask`, `TH_CACHE` defaulting to `$XDG_CACHE_HOME/truthound` or
/// `~/.cache/truthound`) when it exists; else `python3`.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("TH_DASK_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("TH_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(p).join("truthound"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("truthound"))
        });
    if let Some(venv) = cache.map(|c| c.join("venv-dask").join("bin").join("python"))
        && venv.exists()
    {
        return venv;
    }
    PathBuf::from("python3")
}

#[derive(Debug, Default)]
struct Shared {
    board: TaskBoard,
    stderr: String,
}

/// A submitted run: the runner process and the tasks' states.
pub struct DaskRun {
    scheduler: String,
    python: PathBuf,
    child: Child,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedReceiver<RunEvent>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl DaskRun {
    /// Starts the runner; the tasks are submitted once it has connected. Fails at once when the
    /// python cannot be started; an unreachable scheduler or a missing Dask shows in
    /// [`DaskRun::finish`].
    pub async fn submit(s: DaskSubmit) -> Result<DaskRun, DaskError> {
        if s.scheduler.trim().is_empty() {
            return Err(DaskError::Invalid(
                "no scheduler address (give --scheduler, or set DASK_SCHEDULER_ADDRESS)".into(),
            ));
        }
        let python = s.python.clone().unwrap_or_else(default_python);
        let mut cmd = Command::new(&python);
        match std::env::var_os("TH_DASK_RUNNER").filter(|p| !p.is_empty()) {
            Some(path) => cmd.arg(path),
            None => cmd.arg("-c").arg(RUNNER_PY),
        };
        cmd.env("DASK_SCHEDULER_ADDRESS", &s.scheduler)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DaskError::Unavailable(format!(
                    "cannot run {} for the Dask runner: {e}; install Python 3 and `pip install \
                     '{DASK_REQUIREMENT}'` (scripts/dask-cluster.sh install does it in a \
                     virtualenv), or set TH_DASK_PYTHON to a python that has it",
                    python.display()
                ))
            } else {
                DaskError::Runner(format!("cannot start {}: {e}", python.display()))
            }
        })?;
        let input = serde_json::to_vec(&s.runner_input()).expect("runner input serializes");
        if let Some(mut stdin) = child.stdin.take() {
            // A runner that exits at once (no dask) closes its stdin: that shows in finish().
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
        let shared = Arc::new(Mutex::new(Shared {
            board: TaskBoard::new(&s.work.tasks),
            ..Shared::default()
        }));
        let (tx, events) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let shared = shared.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    for ev in apply_line(&shared, &line) {
                        let _ = tx.send(ev);
                    }
                }
            }));
        }
        if let Some(mut stderr) = child.stderr.take() {
            let shared = shared.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut sh = shared.lock().expect("dask run state");
                    sh.stderr.push_str(&String::from_utf8_lossy(&buf[..n]));
                    trim_front(&mut sh.stderr, STDERR_TAIL);
                }
            }));
        }
        Ok(DaskRun {
            scheduler: s.scheduler,
            python,
            child,
            shared,
            events,
            readers,
        })
    }

    /// The tasks' states now.
    pub fn poll(&self) -> Vec<TaskState> {
        self.lock().board.states()
    }

    /// The scheduler's workers and threads, once connected.
    pub fn workers(&self) -> Option<(u32, u32)> {
        self.lock().board.workers
    }

    /// Task counts in the operator's shape.
    pub fn counts(&self) -> TaskCounts {
        counts(&self.poll())
    }

    /// The failed tasks in the operator's shape.
    pub fn failures(&self) -> Vec<TaskFailure> {
        failures(&self.poll())
    }

    /// The next change, or None once the runner has said everything.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Cancels the run: the runner (SIGTERM) cancels the tasks, and running `th-worker`s are
    /// killed within a few seconds; the runner is killed if it has not exited after 10 s.
    pub async fn cancel(&mut self) {
        self.lock().board.cancelled = true;
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Waits for the runner to end and returns the tasks' final states (some may have failed:
    /// see [`TaskState::phase`]), or why the run itself failed.
    pub async fn finish(mut self) -> Result<Vec<TaskState>, DaskError> {
        // Drain the events (their state is already applied), then the process.
        while self.events.recv().await.is_some() {}
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| DaskError::Runner(format!("waiting for the runner: {e}")))?;
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
        let sh = self.lock();
        if sh.board.cancelled {
            return Err(DaskError::Cancelled);
        }
        let stderr_tail = || {
            let t = sh.stderr.trim();
            if t.is_empty() {
                String::new()
            } else {
                format!("; its stderr ends with: {}", tail_lines(t, 10))
            }
        };
        if let Some((kind, message)) = &sh.board.error {
            return Err(match kind.as_str() {
                "unreachable" => DaskError::Unreachable {
                    address: self.scheduler.clone(),
                    detail: message
                        .strip_prefix(&format!(
                            "cannot connect to the Dask scheduler at {}: ",
                            self.scheduler
                        ))
                        .unwrap_or(message)
                        .to_string(),
                },
                "missing_dependency" => DaskError::Unavailable(format!(
                    "{message} (or set TH_DASK_PYTHON to a python that has it; \
                     scripts/dask-cluster.sh install makes one)"
                )),
                "invalid" => DaskError::Invalid(message.clone()),
                _ => DaskError::Runner(message.clone()),
            });
        }
        if !status.success() || !sh.board.finished {
            return Err(DaskError::Runner(format!(
                "{} exited with {status} before every task ended{}",
                self.python.display(),
                stderr_tail()
            )));
        }
        Ok(sh.board.states())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("dask run state")
    }
}

/// One line of the runner's stdout, applied to the state; the events it makes.
fn apply_line(shared: &Mutex<Shared>, line: &str) -> Vec<RunEvent> {
    let mut sh = shared.lock().expect("dask run state");
    sh.board.apply_line(line).unwrap_or_else(|| {
        // Not ours (a library printing on stdout): keep it with stderr for error messages.
        sh.stderr.push_str(line);
        sh.stderr.push('\n');
        Vec::new()
    })
}

/// A `th-worker` next to `exe` (as `th` and `th-worker` are installed and built side by side).
pub fn sibling_worker_bin(exe: &Path) -> Option<PathBuf> {
    let p = exe.parent()?.join("th-worker");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn shared(tasks: &[u32]) -> Mutex<Shared> {
        Mutex::new(Shared {
            board: TaskBoard::new(tasks),
            ..Shared::default()
        })
    }

    #[test]
    fn runner_lines_go_to_the_board_and_anything_else_to_the_error_tail() {
        // How the board folds the lines is backend::tasks' (its tests); here: the runner's
        // stdout reaches it, and what is not a runner line is kept for error messages.
        let sh = shared(&[0, 1]);
        let mut events = Vec::new();
        for line in [
            r#"{"event":"connected","scheduler":"tcp://x:1","workers":2,"threads":4}"#,
            r#"{"task":0,"state":"running","attempt":1,"worker":"tcp://w1"}"#,
            r#"{"task":0,"state":"succeeded","exit_code":0,"millis":12}"#,
            "a library printing on stdout",
        ] {
            events.extend(apply_line(&sh, line));
        }
        let s = sh.lock().unwrap();
        assert_eq!(s.board.workers, Some((2, 4)));
        let t: Vec<TaskState> = s.board.states();
        assert_eq!(
            (t[0].phase, t[1].phase),
            (TaskPhase::Succeeded, TaskPhase::Pending)
        );
        assert!(!events.is_empty(), "the board's changes are passed on");
        assert!(s.stderr.contains("a library printing on stdout"));
        assert!(!s.stderr.contains("succeeded"));
    }

    #[test]
    fn task_states_serialize_in_the_local_shape() {
        let mut t = TaskState::pending(3);
        t.phase = TaskPhase::Failed;
        t.exit_code = Some(65);
        t.message = Some("bad".into());
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["task"], 3);
        assert_eq!(v["phase"], "failed");
        assert_eq!(v["message"], "bad");
    }

    #[test]
    fn runner_input_carries_the_submission() {
        let s = DaskSubmit {
            scheduler: "tcp://127.0.0.1:8786".into(),
            work: RemoteTasks {
                run_id: "th-abc".into(),
                plan_uri: "s3://b/run/plan.json".into(),
                partials_prefix: "s3://b/run/partials".into(),
                tasks: vec![0, 1],
                env: BTreeMap::from([("TH_S3_ENDPOINT".into(), "http://x".into())]),
                worker_args: vec!["--allow-http".into()],
                retries: 2,
                worker_bin: Some("/usr/bin/th-worker".into()),
            },
            python: None,
            connect_timeout: Duration::from_secs(5),
        };
        let v = s.runner_input();
        assert_eq!(v["tasks"], serde_json::json!([0, 1]));
        assert_eq!(v["env"]["TH_S3_ENDPOINT"], "http://x");
        assert_eq!(v["worker_bin"], "/usr/bin/th-worker");
        assert_eq!(v["connect_timeout"], 5.0);
    }

    #[test]
    fn the_embedded_runner_is_the_driver() {
        assert!(RUNNER_PY.contains("def _run_task("));
        assert_eq!(DaskError::Unavailable(String::new()).exit_code(), 69);
    }
}
