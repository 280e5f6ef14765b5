//! The run's event log, `<output>.events.jsonl`: one JSON line per planned run, task start,
//! finish, retry, failure, stall and reuse from a cache, merge start and finish, and run failure,
//! in time order.
//!
//! Several processes see parts of a run: a worker knows when its task started and finished,
//! the operator knows what killed a pod or which task went silent, the merge knows when it ran.
//! Each writes its lines as a small object under the run's work prefix (`<work>/events/`), named
//! so that writing the same record again replaces it (a retried reconcile or a re-run pod never
//! duplicates a line). Whoever finishes the run — the merge (in the operator or in a merge pod),
//! the operator for a failed run, or `th profile` — collects them, adds its own, sorts them by
//! time and writes the log beside the profile. The format is documented by
//! `schema/events.schema.json` (`th schema --events`).

use crate::dataset::{Location, StorageOptions, read_object_limited, write_object};
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// The log's format version, in every line (`"v"`).
pub const EVENTS_VERSION: u32 = 1;
/// Event records read per run, at most: a run's records are one per task attempt plus a few
/// per reconcile that saw something, so this bounds a hostile or runaway work prefix only.
const MAX_RECORDS: usize = 100_000;
/// Bytes of one record, at most.
const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Records read at once.
const READ_AHEAD: usize = 16;

/// What happened.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The dataset was listed and the run planned: `tasks` tasks.
    Planned,
    /// A task attempt started (`worker` says where).
    TaskStarted,
    /// A task attempt wrote its partial profile: `rows` rows in `millis` ms.
    TaskFinished,
    /// A task attempt failed and the task runs again (`reason`, `message`).
    TaskRetried,
    /// A task failed for good (`reason`, `message`).
    TaskFailed,
    /// A task sent no heartbeat past the stall timeout; its worker is replaced.
    TaskStalled,
    /// An incremental run found the task's partial in the cache: the task did not run.
    TaskReused,
    /// The merge of the partial profiles started: `tasks` partials.
    MergeStarted,
    /// The profile is written: `rows` rows, `millis` ms for the merge.
    MergeFinished,
    /// The run failed (`reason`, `message`); no profile is written.
    RunFailed,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunEvent {
    /// Format version ([`EVENTS_VERSION`]).
    pub v: u32,
    /// When, in UTC, RFC 3339 with milliseconds (`2026-12-03T11:40:00.123Z`): lines sort by it.
    pub time: String,
    pub event: EventKind,
    /// Who saw it: `worker`, `operator`, `merge` or `th`.
    pub source: String,
    /// The task, for task events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
    /// Where the attempt ran (a pod name, a host and process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Tasks planned or merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
    /// Rows read by the task, or rows of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// How long the task or the merge took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// A short cause (`OOMKilled`, `BadData`, `Stalled`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunEvent {
    /// An event of `kind` seen by `source` at `time`.
    pub fn new(kind: EventKind, source: &str, time: OffsetDateTime) -> Self {
        RunEvent {
            v: EVENTS_VERSION,
            time: format_time(time),
            event: kind,
            source: source.to_string(),
            task: None,
            worker: None,
            tasks: None,
            rows: None,
            millis: None,
            reason: None,
            message: None,
        }
    }

    pub fn task(mut self, task: u32) -> Self {
        self.task = Some(task);
        self
    }

    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    pub fn tasks(mut self, tasks: u32) -> Self {
        self.tasks = Some(tasks);
        self
    }

    pub fn rows(mut self, rows: u64) -> Self {
        self.rows = Some(rows);
        self
    }

    pub fn millis(mut self, millis: u64) -> Self {
        self.millis = Some(millis);
        self
    }

    pub fn cause(mut self, reason: impl Into<String>, message: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self.message = Some(message.into());
        self
    }

    /// The JSON Schema of one line.
    pub fn json_schema() -> String {
        let mut schema = serde_json::to_value(schemars::schema_for!(RunEvent)).unwrap_or_default();
        if let Some(o) = schema.as_object_mut() {
            o.insert(
                "description".into(),
                "One line of a truthound run's event log (`<output>.events.jsonl`).".into(),
            );
        }
        serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
    }
}

/// `time` as the log writes it: fixed width, so that the text order is the time order.
pub fn format_time(time: OffsetDateTime) -> String {
    let utc = time.to_offset(time::UtcOffset::UTC);
    utc.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// Where the log of a profile written to `output` goes.
pub fn log_uri(output: &str) -> String {
    format!("{output}.events.jsonl")
}

/// Where a run's event records live.
pub fn records_prefix(work_prefix: &str) -> String {
    format!("{}/events", work_prefix.trim_end_matches('/'))
}

/// The work prefix of a partial written to `<work>/partials/<task>` (as every backend writes
/// them), so that a worker finds where its records go without being told.
pub fn work_prefix_of_partial(partial_uri: &str) -> Option<&str> {
    let (dir, task) = partial_uri.rsplit_once('/')?;
    task.parse::<u32>().ok()?;
    dir.strip_suffix("/partials")
}

/// The events as JSON lines.
pub fn to_jsonl(events: &[RunEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let Ok(line) = serde_json::to_vec(e) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

/// Parses JSON lines; `what` names the source in errors.
pub fn from_jsonl(bytes: &[u8], what: &str) -> Result<Vec<RunEvent>> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| {
            serde_json::from_slice(l)
                .map_err(|e| Error::invalid("event log", format!("{what}: line {}: {e}", i + 1)))
        })
        .collect()
}

/// Writes `events` as the record `name` (letters, digits, `-`, `_`, `.`) of the run at
/// `work_prefix`. The same name replaces the record.
pub async fn write_record(
    work_prefix: &str,
    name: &str,
    events: &[RunEvent],
    opts: &StorageOptions,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let uri = format!("{}/{name}.jsonl", records_prefix(work_prefix));
    write_object(&uri, opts, to_jsonl(events)).await
}

/// Every event recorded for the run at `work_prefix`, in time order. A record that is not
/// readable as events is skipped with a warning: a log with a gap beats no log.
pub async fn collect(work_prefix: &str, opts: &StorageOptions) -> Result<Vec<RunEvent>> {
    let dir = format!("{}/", records_prefix(work_prefix));
    let loc = Location::parse(&dir)?;
    let store = loc.store(opts)?;
    let mut names: Vec<String> = store
        .list(Some(&loc.path))
        .map_ok(|m| loc.uri_of(&m.location))
        .take(MAX_RECORDS + 1)
        .try_collect()
        .await
        .map_err(|e| Error::invalid("event records", format!("cannot list {dir}: {e}")))?;
    if names.len() > MAX_RECORDS {
        tracing::warn!(prefix = %dir, max = MAX_RECORDS, "too many event records; the log keeps the first");
        names.truncate(MAX_RECORDS);
    }
    names.sort();
    let mut records = futures::stream::iter(names)
        .map(|uri| async move {
            let read = read_object_limited(&uri, opts, MAX_RECORD_BYTES).await;
            (uri, read)
        })
        .buffered(READ_AHEAD);
    let mut events = Vec::new();
    while let Some((uri, read)) = records.next().await {
        match read.and_then(|b| from_jsonl(&b, &uri)) {
            Ok(mut e) => events.append(&mut e),
            Err(e) => {
                tracing::warn!(record = %uri, error = %e, "skipping an unreadable event record")
            }
        }
    }
    sort(&mut events);
    Ok(events)
}

/// Time order; at the same millisecond, the order things happen in a run.
pub fn sort(events: &mut [RunEvent]) {
    events.sort_by(|a, b| (&a.time, a.event, a.task).cmp(&(&b.time, b.event, b.task)));
}

/// Collects the run's records, adds `own` and writes the log beside the profile at `output`.
pub async fn write_log(
    work_prefix: &str,
    output: &str,
    own: Vec<RunEvent>,
    opts: &StorageOptions,
) -> Result<Vec<RunEvent>> {
    let mut events = match collect(work_prefix, opts).await {
        Ok(e) => e,
        // No records listed (a store that lists nothing under a missing prefix errs on some
        // backends): the log still has what the finisher saw.
        Err(e) => {
            tracing::warn!(prefix = %work_prefix, error = %e, "cannot collect the run's event records");
            Vec::new()
        }
    };
    events.extend(own);
    sort(&mut events);
    write_object(&log_uri(output), opts, to_jsonl(&events)).await?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_are_fixed_width_utc_so_text_order_is_time_order() {
        let a = format_time(datetime!(2026-12-03 09:05:07.1 +02:00));
        assert_eq!(a, "2026-12-03T07:05:07.100Z");
        let b = format_time(datetime!(2026-12-03 07:05:07.099 UTC));
        assert!(b < a);
    }

    #[test]
    fn lines_round_trip_and_sort_by_time_then_kind() {
        let t = datetime!(2026-12-03 07:05:07 UTC);
        let mut events = vec![
            RunEvent::new(EventKind::TaskFinished, "worker", t)
                .task(1)
                .rows(5)
                .millis(9),
            RunEvent::new(EventKind::TaskStarted, "worker", t)
                .task(1)
                .worker("pod-a"),
            RunEvent::new(EventKind::Planned, "operator", t - time::Duration::SECOND).tasks(2),
        ];
        sort(&mut events);
        let kinds: Vec<EventKind> = events.iter().map(|e| e.event).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Planned,
                EventKind::TaskStarted,
                EventKind::TaskFinished
            ]
        );
        let bytes = to_jsonl(&events);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        assert_eq!(from_jsonl(&bytes, "log").expect("parses"), events);
        let line = std::str::from_utf8(&bytes)
            .expect("utf-8")
            .lines()
            .nth(1)
            .expect("line");
        assert_eq!(
            line,
            r#"{"v":1,"time":"2026-12-03T07:05:07.000Z","event":"task_started","source":"worker","task":1,"worker":"pod-a"}"#
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = from_jsonl(b"{\"v\":1}\n", "rec").expect_err("missing fields");
        assert!(err.to_string().contains("rec: line 1"), "{err}");
    }

    #[test]
    fn a_partial_names_its_work_prefix() {
        assert_eq!(
            work_prefix_of_partial("s3://b/p/.truthound/u1/partials/17"),
            Some("s3://b/p/.truthound/u1")
        );
        assert_eq!(work_prefix_of_partial("s3://b/p/out.partial"), None);
        assert_eq!(work_prefix_of_partial("/tmp/partials/x"), None);
    }

    #[tokio::test]
    async fn records_of_several_writers_make_one_log_and_rewrites_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = format!("file://{}/work", dir.path().display());
        let out = format!("file://{}/profile.json", dir.path().display());
        let opts = StorageOptions::default();
        let t = datetime!(2026-12-03 07:05:07 UTC);
        let started = RunEvent::new(EventKind::TaskStarted, "worker", t).task(0);
        let finished = RunEvent::new(
            EventKind::TaskFinished,
            "worker",
            t + time::Duration::SECOND,
        )
        .task(0)
        .rows(3);
        write_record(
            &work,
            "task-0-pod/a",
            &[started.clone(), finished.clone()],
            &opts,
        )
        .await
        .expect("record");
        // The same record again (a retried write) does not duplicate lines.
        write_record(
            &work,
            "task-0-pod/a",
            &[started.clone(), finished.clone()],
            &opts,
        )
        .await
        .expect("record");
        let planned =
            RunEvent::new(EventKind::Planned, "operator", t - time::Duration::SECOND).tasks(1);
        write_record(
            &work,
            "operator-plan",
            std::slice::from_ref(&planned),
            &opts,
        )
        .await
        .expect("record");
        let merged = RunEvent::new(
            EventKind::MergeFinished,
            "merge",
            t + time::Duration::MINUTE,
        );
        let log = write_log(&work, &out, vec![merged.clone()], &opts)
            .await
            .expect("log");
        assert_eq!(log, vec![planned, started, finished, merged]);
        let written = std::fs::read(dir.path().join("profile.json.events.jsonl")).expect("log");
        assert_eq!(from_jsonl(&written, "log").expect("parses"), log);
    }
}
