//! The operator's lines in a run's event log (`<output>.events.jsonl`, see
//! [`truthound_profile::events`]): what only the operator sees. Workers record their own
//! attempts; the operator records the plan, each failure with its cause (a pod killed for OOM
//! cannot write its own), whether the task runs again or failed for good, stalled tasks, the
//! retries of remote tasks, and, for a run that fails, the log itself with the failure.
//!
//! Each record's name says what it records (a failure's task, reason, message and time; a
//! remote task's attempt), so writing it again — a retried reconcile, a restarted operator —
//! replaces it instead of adding lines. [`Recorded`] remembers what this process wrote, so a
//! reconcile writes only what is new.

use crate::backend::tasks::{TaskPhase, TaskState};
use crate::crd::{Phase, ProfileJobStatus};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use time::OffsetDateTime;
use truthound_profile::events::{EventKind, RunEvent};

/// Record names written per job by this process (forgotten when the job finishes).
#[derive(Default)]
pub struct Recorded(Mutex<HashMap<String, HashSet<String>>>);

impl Recorded {
    /// The records of `fresh` not written yet for job `uid`, marked as written.
    pub fn new_ones(&self, uid: &str, fresh: Vec<Record>) -> Vec<Record> {
        let Ok(mut m) = self.0.lock() else {
            return fresh;
        };
        let seen = m.entry(uid.to_string()).or_default();
        fresh
            .into_iter()
            .filter(|r| seen.insert(r.name.clone()))
            .collect()
    }

    /// Marks `name` as not written after all (its write failed): the next reconcile tries again.
    pub fn unmark(&self, uid: &str, name: &str) {
        if let Ok(mut m) = self.0.lock()
            && let Some(seen) = m.get_mut(uid)
        {
            seen.remove(name);
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}

/// One record: its name under `<work>/events/` and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub events: Vec<RunEvent>,
}

/// What a reconcile saw, for the log.
pub struct Seen<'a> {
    /// The status the decision wrote.
    pub status: &'a ProfileJobStatus,
    /// Tasks failed for good (the rest of the failures are retried).
    pub failed_for_good: &'a BTreeSet<u32>,
    /// The remote run's tasks, when it was looked at.
    pub remote_tasks: &'a [TaskState],
    /// Tasks whose pods are replaced for want of a heartbeat.
    pub stalled: &'a [u32],
    pub stall_seconds: u64,
    pub now: OffsetDateTime,
}

/// The records a reconcile's observations make (pure; the caller writes the new ones).
pub fn records(seen: &Seen<'_>) -> Vec<Record> {
    let mut out = Vec::new();
    for f in &seen.status.last_failures {
        let kind = if seen.failed_for_good.contains(&f.task) {
            EventKind::TaskFailed
        } else {
            EventKind::TaskRetried
        };
        let time = crate::status::parse_time(&f.time).unwrap_or(seen.now);
        let name = format!(
            "operator-failure-{}-{:016x}",
            f.task,
            xxhash_rust::xxh3::xxh3_64(
                format!("{}\n{}\n{}", f.reason, f.message, f.time).as_bytes()
            )
        );
        out.push(Record {
            name,
            events: vec![
                RunEvent::new(kind, "operator", time)
                    .task(f.task)
                    .cause(&f.reason, &f.message),
            ],
        });
    }
    for t in seen.remote_tasks {
        // Every attempt before the last was retried; so was the last while the task waits to
        // run again.
        let retried_up_to = match t.phase {
            TaskPhase::Pending => t.attempts,
            _ => t.attempts.saturating_sub(1),
        };
        for attempt in 1..=retried_up_to {
            out.push(Record {
                name: format!("operator-retry-{}-{attempt}", t.task),
                events: vec![
                    RunEvent::new(EventKind::TaskRetried, "operator", seen.now)
                        .task(t.task)
                        .worker(t.worker.clone().unwrap_or_default())
                        .cause(
                            t.reason(),
                            format!(
                                "attempt {attempt} failed{}",
                                t.message
                                    .as_deref()
                                    .filter(|_| attempt == retried_up_to)
                                    .map(|m| format!(": {m}"))
                                    .unwrap_or_default()
                            ),
                        ),
                ],
            });
        }
    }
    let stamp = seen.now.unix_timestamp_nanos() / 1_000_000;
    for &t in seen.stalled {
        out.push(Record {
            name: format!("operator-stall-{t}-{stamp}"),
            events: vec![
                RunEvent::new(EventKind::TaskStalled, "operator", seen.now)
                    .task(t)
                    .cause(
                        "Stalled",
                        format!(
                            "no heartbeat for {}s: the task's pod is replaced",
                            seen.stall_seconds
                        ),
                    ),
            ],
        });
    }
    out
}

/// The record of a written plan.
pub fn planned(plan_id: &str, tasks: u32, files: usize, now: OffsetDateTime) -> Record {
    Record {
        name: format!("operator-planned-{plan_id}"),
        events: vec![
            RunEvent::new(EventKind::Planned, "operator", now)
                .tasks(tasks)
                .cause(
                    "Planned",
                    format!("plan {plan_id}: {tasks} task(s) over {files} file(s)"),
                ),
        ],
    }
}

/// The line of a run that failed, when `new` is the status that says so for the first time.
pub fn run_failed(
    old: Option<&ProfileJobStatus>,
    new: &ProfileJobStatus,
    now: OffsetDateTime,
) -> Option<RunEvent> {
    let was_failed = old.is_some_and(|s| s.phase == Some(Phase::Failed));
    if new.phase != Some(Phase::Failed) || was_failed {
        return None;
    }
    let failed = crate::status::condition(&new.conditions, "Failed");
    Some(RunEvent::new(EventKind::RunFailed, "operator", now).cause(
        failed.map_or("Failed", |c| c.reason.as_str()),
        failed.map_or("", |c| c.message.as_str()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TaskFailure;
    use time::macros::datetime;

    fn failure(task: u32, reason: &str) -> TaskFailure {
        TaskFailure {
            task,
            reason: reason.into(),
            message: format!("{reason} of task {task}"),
            time: "2026-12-03T10:00:00Z".into(),
        }
    }

    #[test]
    fn failures_are_retries_unless_the_task_failed_for_good_and_names_are_stable() {
        let status = ProfileJobStatus {
            last_failures: vec![failure(1, "OOMKilled"), failure(2, "BadData")],
            ..Default::default()
        };
        let good = BTreeSet::from([2]);
        let seen = Seen {
            status: &status,
            failed_for_good: &good,
            remote_tasks: &[],
            stalled: &[3],
            stall_seconds: 60,
            now: datetime!(2026-12-03 10:00:05 UTC),
        };
        let r = records(&seen);
        let kinds: Vec<(EventKind, Option<u32>)> = r
            .iter()
            .map(|r| (r.events[0].event, r.events[0].task))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::TaskRetried, Some(1)),
                (EventKind::TaskFailed, Some(2)),
                (EventKind::TaskStalled, Some(3)),
            ]
        );
        assert_eq!(r[0].events[0].time, "2026-12-03T10:00:00.000Z");
        assert_eq!(r[0].events[0].reason.as_deref(), Some("OOMKilled"));
        // The same observation names the same records: a second write replaces them.
        assert_eq!(records(&seen)[..2], r[..2]);
        let recorded = Recorded::default();
        assert_eq!(recorded.new_ones("u", r.clone()).len(), 3);
        assert!(
            recorded
                .new_ones("u", records(&seen)[..2].to_vec())
                .is_empty()
        );
    }

    #[test]
    fn remote_attempts_before_the_last_were_retried() {
        let mut running = TaskState::pending(4);
        running.phase = TaskPhase::Running;
        running.attempts = 3;
        running.message = Some("executor lost".into());
        let status = ProfileJobStatus::default();
        let seen = Seen {
            status: &status,
            failed_for_good: &BTreeSet::new(),
            remote_tasks: &[running],
            stalled: &[],
            stall_seconds: 60,
            now: datetime!(2026-12-03 10:00:05 UTC),
        };
        let names: Vec<String> = records(&seen).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["operator-retry-4-1", "operator-retry-4-2"]);
    }

    #[test]
    fn the_failure_line_is_written_once() {
        let mut failed = ProfileJobStatus {
            phase: Some(Phase::Failed),
            ..Default::default()
        };
        failed.conditions.push(crate::crd::Condition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: "BackoffLimitExceeded".into(),
            message: "task 3 failed".into(),
            last_transition_time: "2026-12-03T10:00:05Z".into(),
            observed_generation: None,
        });
        let now = datetime!(2026-12-03 10:00:05 UTC);
        let e = run_failed(None, &failed, now).expect("first time");
        assert_eq!(e.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(run_failed(Some(&failed), &failed, now).is_none());
    }
}
