//! Running tasks: one task's streaming pass into a partial profile, and a local pool that runs a
//! whole plan and merges the partials in task order.

use crate::cache::PartialCache;
use crate::dataset::{Decoding, FileSlice, Location, SliceStream, open_slice};
use crate::kernel::column::Scratch;
use crate::kernel::{ColumnTree, RowHashes, bucket_mask, hash_rows};
use crate::partial::PartialProfile;
use crate::plan::Plan;
use crate::sample::{FileSampler, file_key};
use crate::{Error, Result};
use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::boolean::and;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use std::time::Instant;

/// What a running plan reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    TaskStarted {
        task: u32,
    },
    /// Rows read by a task since its last report.
    Rows {
        task: u32,
        rows: u64,
    },
    TaskFinished {
        task: u32,
        rows: u64,
        millis: u64,
    },
}

pub type Progress = Arc<dyn Fn(Event) + Send + Sync>;

/// A progress sink that ignores everything.
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// The store a plan's dataset lives in.
pub fn plan_store(plan: &Plan) -> Result<Arc<dyn ObjectStore>> {
    Location::parse(&plan.dataset.uri)?.store(&plan.dataset.storage)
}

/// Runs task `task_id` of `plan`: one streaming pass over its rows and columns.
pub async fn run_task(
    plan: &Plan,
    task_id: u32,
    store: Arc<dyn ObjectStore>,
    progress: &Progress,
) -> Result<PartialProfile> {
    let started = Instant::now();
    let task = plan.task(task_id)?;
    let schema = &plan.dataset.schema;
    progress(Event::TaskStarted { task: task_id });

    // Columns to read: the profiled ones, every plan column when hashing rows, the hash key.
    let mut read: Vec<String> = if task.row_hash {
        plan.columns.clone()
    } else {
        task.columns.clone()
    };
    if let Some(h) = &task.hash
        && !read.contains(&h.column)
    {
        read.push(h.column.clone());
    }
    read.sort_by_key(|c| schema.index_of(c).unwrap_or(usize::MAX));
    read.dedup();
    let pos = |c: &str| read.iter().position(|r| r == c).expect("read column");

    let key = task.hash.as_ref().map(|h| h.column.clone());
    // A nested column's derived columns (struct fields, list elements, ...) travel with it.
    let taken = |n: &str| plan.columns.iter().any(|c| c == n);
    let mut states: Vec<(usize, ColumnTree)> = task
        .columns
        .iter()
        .map(|c| {
            let field = schema.field_with_name(c).map_err(|_| {
                Error::invalid("plan", format!("column `{c}` is not in the plan's schema"))
            })?;
            let exact = key.as_deref() == Some(c.as_str());
            Ok((
                pos(c),
                ColumnTree::new(c, field.data_type(), &plan.options, exact, &taken),
            ))
        })
        .collect::<Result<_>>()?;
    let hashed: Vec<usize> = if task.row_hash {
        plan.columns.iter().map(|c| pos(c)).collect()
    } else {
        Vec::new()
    };
    let mut row_hashes = task
        .row_hash
        .then(|| RowHashes::new(plan.options.exact_row_hash_limit, plan.options.row_hll_lg_k));
    let key_pos = key.as_deref().map(pos);

    // Sampling keys rows by (file, position in the file): every task keeps the same rows.
    let sampling = plan.options.effective_sampling();
    let root = match sampling {
        Some(_) => Location::parse(&plan.dataset.uri)?.path.to_string(),
        None => String::new(),
    };

    let mut scratch = Scratch::default();
    let mut rows = 0u64;
    let mut scanned = 0u64;
    for r in &task.reads {
        let file = plan.files.get(r.file as usize).ok_or_else(|| {
            Error::invalid(
                "plan",
                format!(
                    "task {task_id} reads file {} of {}",
                    r.file,
                    plan.files.len()
                ),
            )
        })?;
        check_unchanged(store.as_ref(), &file.uri, &file.path, file.size).await?;
        let slice = FileSlice {
            uri: file.uri.clone(),
            path: file.path.clone(),
            size: file.size,
            row_groups: r
                .row_groups
                .as_ref()
                .map(|g| g.iter().map(|&g| g as usize).collect()),
            bytes: r.bytes.map(|[start, end]| (start, end)),
            rows: r.rows.map(|[start, end]| (start, end)),
            compression: file.compression,
        };
        let SliceStream {
            batches: mut stream,
            rows: mut positions,
        } = open_slice(
            store.clone(),
            Decoding {
                format: plan.dataset.format,
                schema,
                csv: plan.dataset.csv.as_ref(),
                max_record_bytes: plan.options.max_record_bytes,
            },
            &slice,
            &read,
            plan.options.batch_rows,
        )
        .await?;
        let sampler = sampling.map(|s| FileSampler::new(&s, &file_key(&root, &file.path)));
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let read_rows = batch.num_rows() as u64;
            // The hash bucket (by content) and the sample (by position): the rows in the bucket
            // are the rows scanned, those of them in the sample are profiled.
            let bucket = match (&task.hash, key_pos) {
                (Some(h), Some(k)) => Some(bucket_mask(batch.column(k), h.buckets, h.bucket)?),
                _ => None,
            };
            scanned += bucket.as_ref().map_or(read_rows, |m| m.true_count() as u64);
            let sample = match &sampler {
                Some(s) => Some(s.mask(&mut positions, batch.num_rows()).ok_or_else(|| {
                    Error::Corrupt {
                        file: file.uri.clone(),
                        format: plan.dataset.format.name(),
                        detail: "the file holds more rows than its metadata says".into(),
                    }
                })?),
                None => None,
            };
            let batch = match combine(bucket, sample)? {
                Some(mask) => filter_record_batch(&batch, &mask)
                    .map_err(|e| Error::invalid("row filter", e.to_string()))?,
                None => batch,
            };
            rows += batch.num_rows() as u64;
            for (idx, state) in &mut states {
                state.update(batch.column(*idx), &mut scratch)?;
            }
            if let Some(rh) = &mut row_hashes {
                let cols: Vec<&ArrayRef> = hashed.iter().map(|&i| batch.column(i)).collect();
                rh.add(&hash_rows(&cols, batch.num_rows()));
            }
            progress(Event::Rows {
                task: task_id,
                rows: read_rows,
            });
        }
    }
    if let Some(h) = &task.hash {
        for (_, tree) in &mut states {
            let root = tree.root_mut();
            if root.name == h.column {
                root.summarize_bucket(&plan.id, h.bucket);
            }
        }
    }
    let mut partial =
        PartialProfile::for_task(plan, task_id, task.row_slice, rows).with_rows_scanned(scanned);
    partial.columns = states.into_iter().flat_map(|(_, t)| t.states).collect();
    partial.row_hashes = row_hashes.map(|mut rh| {
        rh.settle();
        rh
    });
    partial.task_millis = started.elapsed().as_millis() as u64;
    partial.bytes_read = task.bytes;
    progress(Event::TaskFinished {
        task: task_id,
        rows,
        millis: partial.task_millis,
    });
    Ok(partial)
}

/// Both row filters, or either.
fn combine(a: Option<BooleanArray>, b: Option<BooleanArray>) -> Result<Option<BooleanArray>> {
    match (a, b) {
        (Some(a), Some(b)) => and(&a, &b)
            .map(Some)
            .map_err(|e| Error::invalid("row filter", e.to_string())),
        (a, b) => Ok(a.or(b)),
    }
}

/// A file that is not what the plan saw would give a partial of other data than its siblings'.
async fn check_unchanged(store: &dyn ObjectStore, uri: &str, path: &str, size: u64) -> Result<()> {
    let meta = store
        .head(&object_store::path::Path::from(path))
        .await
        .map_err(|e| Error::from_store(uri, e))?;
    if meta.size != size {
        return Err(Error::Changed {
            file: uri.to_string(),
            detail: format!("{size} bytes then, {} now", meta.size),
        });
    }
    Ok(())
}

/// A run's failure, with the task named when one task failed.
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", task.map(|t| format!("task {t}: ")).unwrap_or_default())]
pub struct TaskError {
    pub task: Option<u32>,
    #[source]
    pub source: Error,
}

/// Runs every task of `plan` on `workers` concurrent tasks of the current Tokio runtime (which
/// should have that many worker threads), merging the partials in task order (as the stored
/// merge does), so that a run's sketches do not depend on which task finished first. Stops at
/// the first failure.
pub async fn run_plan(
    plan: Arc<Plan>,
    workers: usize,
    progress: Progress,
) -> Result<PartialProfile, TaskError> {
    let reused = vec![None; plan.tasks.len()];
    Ok(run_plan_reusing(plan, workers, progress, reused, None)
        .await?
        .merged)
}

/// A run that reused some partials.
#[derive(Debug, Clone)]
pub struct ReusingRun {
    pub merged: PartialProfile,
    /// Tasks whose partial was given, not computed.
    pub reused: Vec<u32>,
    /// Tasks that ran.
    pub ran: Vec<u32>,
}

/// [`run_plan`], where `reused[t]` is task `t`'s partial when it is already known (from a
/// [`PartialCache`]): only the other tasks run, and their partials are stored in `store_to`
/// as they finish (a failure to store is a warning: the run does not need the cache). The
/// merge is in task order, reused partials in their place, as a run of every task would merge.
pub async fn run_plan_reusing(
    plan: Arc<Plan>,
    workers: usize,
    progress: Progress,
    reused: Vec<Option<PartialProfile>>,
    store_to: Option<&PartialCache>,
) -> Result<ReusingRun, TaskError> {
    let store = plan_store(&plan).map_err(|source| TaskError { task: None, source })?;
    let mut reused = reused;
    reused.resize(plan.tasks.len(), None);
    let (mut reused_ids, mut ran) = (Vec::new(), Vec::new());
    let mut results = futures::stream::iter((0..plan.tasks.len() as u32).zip(reused))
        .map(|(id, known)| {
            let (plan, store, progress) = (plan.clone(), store.clone(), progress.clone());
            async move {
                if let Some(partial) = known {
                    // The progress of a task done before: all its rows, at once.
                    progress(Event::Rows {
                        task: id,
                        rows: partial.rows_scanned(),
                    });
                    progress(Event::TaskFinished {
                        task: id,
                        rows: partial.row_count(),
                        millis: 0,
                    });
                    return Ok((id, partial, true));
                }
                let task_plan = plan.clone();
                let joined =
                    tokio::spawn(async move { run_task(&task_plan, id, store, &progress).await })
                        .await;
                let partial = match joined {
                    Ok(result) => result.map_err(|source| TaskError {
                        task: Some(id),
                        source,
                    })?,
                    Err(panic) => {
                        return Err(TaskError {
                            task: Some(id),
                            source: Error::invalid("task", format!("worker panicked: {panic}")),
                        });
                    }
                };
                if let (Some(cache), Ok(task)) = (store_to, plan.task(id))
                    && let Err(e) = cache.put(task, &partial).await
                {
                    tracing::warn!(task = id, cache = %cache.uri(), error = %e, "cannot store a partial in the cache");
                }
                Ok((id, partial, false))
            }
        })
        // In task order: a frequent-items sketch merged in another order can report other
        // bounds, and the same run should give the same profile.
        .buffered(workers.max(1));
    let mut merged: Option<PartialProfile> = None;
    while let Some(result) = results.next().await {
        let (id, partial, was_reused) = result?;
        if was_reused {
            reused_ids.push(id);
        } else {
            ran.push(id);
        }
        match &mut merged {
            None => merged = Some(partial),
            Some(m) => m
                .merge(&partial)
                .map_err(|source| TaskError { task: None, source })?,
        }
    }
    let merged = merged.ok_or(TaskError {
        task: None,
        source: Error::invalid("plan", "it has no tasks"),
    })?;
    Ok(ReusingRun {
        merged,
        reused: reused_ids,
        ran,
    })
}
