//! Finishing a stored run: read the partial profiles a plan's tasks wrote, merge them, and write
//! the profile, the task table and a small summary of what was merged.
//!
//! The merge also writes the run's event log (`<profile>.events.jsonl`, see [`crate::events`]).
//!
//! The operator calls this in-process for small runs, and `th-worker merge` calls it in a merge
//! pod for large ones; both write the same objects, so the operator finishes either way by
//! reading [`MergeSummary`] back.

use crate::cache::PartialCache;
use crate::dataset::{StorageOptions, read_object, write_object};
use crate::events::{self, EventKind, RunEvent};
use crate::partial::PartialProfile;
use crate::plan::Plan;
use crate::profile::TableProfile;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Partials read ahead of the merge: bounds memory to this many partials plus the merged one,
/// whatever the number of tasks.
const READ_AHEAD: usize = 8;

/// What to merge and where to write it.
#[derive(Debug, Clone)]
pub struct StoredRun<'a> {
    pub plan: &'a Plan,
    /// Incremental runs: the partials of the tasks that ran (not `reused`) are stored here.
    pub cache: Option<PartialCache>,
    /// Tasks whose partials came from the cache.
    pub reused: BTreeSet<u32>,
    /// The run's work prefix: partials are `<work>/partials/<task>`; `tasks.json` and
    /// `merge.json` are written beside them.
    pub work_prefix: String,
    /// Tasks with no partial (failed, tolerated by the job's limit): merged without them.
    pub missing: BTreeSet<u32>,
    /// Where the profile goes.
    pub profile_uri: String,
    /// Time since the run started, reported in the profile.
    pub duration_ms: u64,
    /// Embed the merged state in the profile (`th profile --keep-state`): later profiles merge
    /// with it, and drift compares sketches rather than quantile tables.
    pub keep_state: bool,
}

/// What a merge wrote: enough for the operator to fill the ProfileJob's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeSummary {
    pub plan_id: String,
    pub profile_uri: String,
    pub rows: u64,
    pub columns: u64,
    pub tasks_merged: u32,
    pub missing_tasks: Vec<u32>,
    pub duration_ms: u64,
}

impl StoredRun<'_> {
    pub fn partial_uri(&self, task: u32) -> String {
        format!("{}/partials/{task}", self.work_prefix)
    }

    pub fn summary_uri(&self) -> String {
        summary_uri(&self.work_prefix)
    }
}

/// Where the planner of an incremental run records the tasks it found in the cache (their
/// partials copied to the work data), beside the plan at `plan_uri`: a JSON array of task ids.
pub fn reused_uri(plan_uri: &str) -> String {
    format!("{plan_uri}.reused")
}

/// The tasks reused from the cache; none when the plan had no cache. Unreadable: none, which
/// only runs again tasks whose partials are there (a worker finds them and exits at once) and
/// caches their partials again.
pub async fn read_reused(plan_uri: &str, opts: &StorageOptions) -> BTreeSet<u32> {
    match read_object(&reused_uri(plan_uri), opts).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => BTreeSet::new(),
    }
}

/// Where a merge leaves its [`MergeSummary`].
pub fn summary_uri(work_prefix: &str) -> String {
    format!("{work_prefix}/merge.json")
}

/// Merges the run's partials (in task order, so that the same partials always give the same
/// profile) and writes the profile, `tasks.json` and `merge.json`, the summary last: its presence
/// means the profile is complete.
pub async fn merge_stored(run: &StoredRun<'_>, opts: &StorageOptions) -> Result<MergeSummary> {
    let plan = run.plan;
    let ids: Vec<u32> = (0..plan.tasks.len() as u32)
        .filter(|t| !run.missing.contains(t))
        .collect();
    let started = std::time::Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let mut partials = futures::stream::iter(ids.iter().copied())
        .map(|t| {
            let uri = run.partial_uri(t);
            async move {
                let bytes = read_object(&uri, opts).await?;
                let p = PartialProfile::from_bytes(&bytes, &uri)?;
                if !p.tasks.contains(&(plan.id.clone(), t)) {
                    return Err(Error::Merge(format!(
                        "{uri} is not the partial of task {t} of plan {}",
                        plan.id
                    )));
                }
                if let (Some(cache), false, Ok(task)) =
                    (&run.cache, run.reused.contains(&t), plan.task(t))
                    && let Err(e) = cache.put(task, &p).await
                {
                    // The profile does not need the cache: the next run runs this task again.
                    tracing::warn!(task = t, cache = %cache.uri(), error = %e, "cannot store a partial in the cache");
                }
                Ok(p)
            }
        })
        .buffered(READ_AHEAD);
    let mut merged: Option<PartialProfile> = None;
    while let Some(p) = partials.try_next().await? {
        match &mut merged {
            None => merged = Some(p),
            Some(m) => m.merge(&p)?,
        }
    }
    let Some(merged) = merged else {
        return Err(Error::Merge(
            "no partial profile to merge: every task failed or the dataset is empty".into(),
        ));
    };
    let mut profile = TableProfile::from_partial(
        &merged,
        run.duration_ms,
        run.keep_state,
        plan.options.histogram_bins,
    );
    profile.describe_table(plan);
    if run.cache.is_some() {
        profile.partitioning.tasks_reused = Some(run.reused.len() as u64);
    }
    write_object(&run.profile_uri, opts, profile.to_json()).await?;
    // The event log, beside the profile and before the summary (which says the run is done).
    let mut merge_events: Vec<RunEvent> = run
        .reused
        .iter()
        .map(|&t| RunEvent::new(EventKind::TaskReused, "merge", started_at).task(t))
        .collect();
    merge_events.extend([
        RunEvent::new(EventKind::MergeStarted, "merge", started_at).tasks(ids.len() as u32),
        RunEvent::new(
            EventKind::MergeFinished,
            "merge",
            time::OffsetDateTime::now_utc(),
        )
        .tasks(ids.len() as u32)
        .rows(profile.row_count)
        .millis(started.elapsed().as_millis() as u64),
    ]);
    events::write_log(&run.work_prefix, &run.profile_uri, merge_events, opts).await?;

    let table: Vec<serde_json::Value> = plan
        .tasks
        .iter()
        .map(|t| {
            serde_json::json!({
                "task": t.id,
                "state": if run.missing.contains(&t.id) { "failed" } else { "succeeded" },
                "rows": t.rows,
                "bytes": t.bytes,
                "partial": run.partial_uri(t.id),
            })
        })
        .collect();
    let table = serde_json::json!({"plan": plan.id, "tasks": table});
    write_object(
        &format!("{}/tasks.json", run.work_prefix),
        opts,
        serde_json::to_vec(&table).unwrap_or_default(),
    )
    .await?;

    let summary = MergeSummary {
        plan_id: plan.id.clone(),
        profile_uri: run.profile_uri.clone(),
        rows: profile.row_count,
        columns: profile.column_count,
        tasks_merged: ids.len() as u32,
        missing_tasks: run.missing.iter().copied().collect(),
        duration_ms: run.duration_ms,
    };
    write_object(
        &run.summary_uri(),
        opts,
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )
    .await?;
    Ok(summary)
}

/// Reads the summary a merge wrote (see [`merge_stored`]).
pub async fn read_summary(work_prefix: &str, opts: &StorageOptions) -> Result<MergeSummary> {
    let uri = summary_uri(work_prefix);
    let bytes = read_object(&uri, opts).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Merge(format!("{uri}: not a merge summary: {e}")))
}
