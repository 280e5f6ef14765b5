//! A container's process: spawned in its own process group (so a signal reaches everything it
//! started), with a clean environment, its output in a log file; its exit code as a container
//! runtime reports it (128 + signal when killed); its termination message as the kubelet reads it.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

/// The kubelet's limits: 4 KiB of the message file; from the log, 80 lines and 2 KiB at most.
const MAX_MESSAGE: u64 = 4096;
const MAX_LOG_LINES: usize = 80;
const MAX_LOG_BYTES: u64 = 2048;

/// What to run.
pub struct Launch<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// Applied in order: the agent's base environment, then the container's.
    pub env: &'a [(String, String)],
    pub dir: &'a Path,
    pub log: &'a Path,
}

/// Every live process group this agent started, so that shutdown can kill what is left even if a
/// pod's task is gone.
#[derive(Default)]
pub struct Groups(Mutex<HashSet<i32>>);

impl Groups {
    pub fn add(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }
    pub fn remove(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pgid);
    }
    pub fn kill_all(&self) {
        for pgid in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

/// Starts the process, its stdout and stderr appended to `log`.
pub fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log)?;
    let mut cmd = tokio::process::Command::new(l.program);
    cmd.args(l.args)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(l.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group, led by the process: `kill(-pid)` reaches it and its children.
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
    // async-signal-safe. With it, a container's process dies with the agent even when the agent is
    // killed with SIGKILL and cannot clean up. (The agent runs a current-thread runtime, so the
    // forking thread is the main thread, whose exit is the process's.)
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `sig` to the process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The exit code a container runtime reports: the process's, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 128,
    }
}

/// The container's termination message: the last 4 KiB of its message file; when that is empty
/// (or missing), the container failed and the policy is `FallbackToLogsOnError`, the tail of this
/// run's log (from `log_start`).
pub fn termination_message(
    file: &Path,
    fallback_to_logs: bool,
    exit_code: i32,
    log: &Path,
    log_start: u64,
) -> String {
    let message = match read_tail(file, 0, MAX_MESSAGE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return format!("Error on reading termination log {}: {e}", file.display());
        }
    };
    if !message.is_empty() || !fallback_to_logs || exit_code == 0 {
        return String::from_utf8_lossy(&message).into_owned();
    }
    let tail = read_tail(log, log_start, MAX_LOG_BYTES).unwrap_or_default();
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    lines[lines.len().saturating_sub(MAX_LOG_LINES)..].concat()
}

/// The last `max` bytes of `path` at or after `start`.
fn read_tail(path: &Path, start: u64, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = start.max(len.saturating_sub(max));
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// The current length of a log file (0 when it does not exist yet): where a new run's output
/// begins.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_file_first_then_the_logs_tail_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        let log = dir.path().join("log");
        let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, format!("earlier run\n{lines}")).unwrap();
        let start = "earlier run\n".len() as u64;

        // No file, failure, fallback: the last 80 lines of this run.
        let m = termination_message(&msg, true, 1, &log, start);
        assert!(
            m.starts_with("line 20\n") && m.ends_with("line 99\n"),
            "{m:?}"
        );
        // Success, or no fallback: nothing.
        assert_eq!(termination_message(&msg, true, 0, &log, start), "");
        assert_eq!(termination_message(&msg, false, 1, &log, start), "");
        // The file wins when it says something; only its last 4 KiB.
        std::fs::write(&msg, format!("{}END", "x".repeat(5000))).unwrap();
        let m = termination_message(&msg, true, 1, &log, start);
        assert_eq!(m.len(), 4096);
        assert!(m.ends_with("END"));
        // Long lines: 2 KiB of log at most.
        std::fs::write(&msg, "").unwrap();
        std::fs::write(&log, "y".repeat(10_000)).unwrap();
        assert_eq!(termination_message(&msg, true, 2, &log, 0).len(), 2048);
    }

    #[test]
    fn signals_are_128_plus() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
