//! A cache of task partials, for incremental runs: a task's partial is stored under a key that
//! names everything it depends on (the engine, the partial format, the dataset's schema and
//! dialect, the options, the task's columns, the identity of the one file it reads and which
//! part of it), so that a later plan over a dataset where some files changed reuses the
//! partials of the tasks whose key is unchanged and runs only the others.
//!
//! A plan made with [`crate::PlanRequest::cache`] has tasks that read one file each and carry
//! their key ([`crate::plan::Task::cache_key`]). Entries are `<cache>/<key>.partial`, one
//! object each (a put is atomic on every store: a reader never sees half an entry). A cached
//! partial names the plan and task it was made for; [`PartialProfile::rebind`] makes it the
//! partial of the new plan's task, so the merge and its checks work as for a fresh run.
//!
//! What the cache never does: fail a run. A missing, unreadable, corrupt or foreign entry is a
//! miss (with a warning for the last three); the task then runs.

use crate::dataset::{CsvDialect, DataFile, Format, StorageOptions, read_object, write_object};
use crate::options::ProfileOptions;
use crate::partial::{PARTIAL_VERSION, PartialProfile, PlanRecord};
use crate::plan::{PLAN_VERSION, Plan, Task};
use crate::{Error, Result};
use arrow::datatypes::Schema;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

/// The engine whose partials a key names: another release may compute other figures.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entries looked up or stored at once.
const CONCURRENCY: usize = 8;

/// What a task's partial depends on. Not the strategy nor the task's id or row slice: a
/// partial's figures are a function of its rows, its columns and the options alone, and
/// [`PartialProfile::rebind`] gives it the new plan's ids.
#[derive(Serialize)]
struct KeyParts<'a> {
    engine: &'a str,
    partial_version: u32,
    plan_version: u32,
    /// Sampling keys rows by their file's path relative to the dataset's URI.
    dataset: &'a str,
    format: Format,
    schema: &'a Schema,
    csv: &'a Option<CsvDialect>,
    options: &'a ProfileOptions,
    columns: &'a [String],
    /// A task that hashes whole rows hashes every column of the plan.
    row_hash_columns: Option<&'a [String]>,
    reads: Vec<ReadIdentity<'a>>,
}

#[derive(Serialize)]
struct ReadIdentity<'a> {
    path: &'a str,
    size: u64,
    /// With an ETag (a content hash on S3; inode, mtime and size on a local disk) the
    /// modification time adds nothing, and leaving it out lets an identical re-upload to S3 hit.
    e_tag: Option<&'a str>,
    version: Option<&'a str>,
    modified_ns: Option<i64>,
    data_start: Option<u64>,
    row_groups: Option<&'a [u32]>,
    bytes: Option<[u64; 2]>,
    /// A row range of a Parquet row group; left out when there is none, so that the keys of
    /// plans without row ranges are those of the releases before them.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<[u64; 2]>,
}

fn identity<'a>(file: &'a DataFile, read: &'a crate::plan::FileRead) -> ReadIdentity<'a> {
    ReadIdentity {
        path: &file.path,
        size: file.size,
        e_tag: file.e_tag.as_deref(),
        version: file.version.as_deref(),
        modified_ns: if file.e_tag.is_some() {
            None
        } else {
            file.modified_ns
        },
        data_start: file.data_start,
        row_groups: read.row_groups.as_deref(),
        bytes: read.bytes,
        rows: read.rows,
    }
}

/// The cache key of `task` of `plan` for `engine` (a release: [`ENGINE_VERSION`]), 32 hex
/// digits.
pub fn task_key(plan: &Plan, task: &Task, engine: &str) -> String {
    let parts = KeyParts {
        engine,
        partial_version: PARTIAL_VERSION,
        plan_version: PLAN_VERSION,
        dataset: &plan.dataset.uri,
        format: plan.dataset.format,
        schema: plan.dataset.schema.as_ref(),
        csv: &plan.dataset.csv,
        options: &plan.options,
        columns: &task.columns,
        row_hash_columns: task.row_hash.then_some(plan.columns.as_slice()),
        reads: task
            .reads
            .iter()
            .filter_map(|r| plan.files.get(r.file as usize).map(|f| identity(f, r)))
            .collect(),
    };
    let json = serde_json::to_vec(&parts).expect("cache keys serialize");
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&json))
}

impl PartialProfile {
    /// This one-task partial (of another plan, from the cache) as the partial of `task` of
    /// `plan`: the same figures under the new plan's ids, with no task time or bytes read. Refused when the partial does not fit
    /// the task (another column set, row hashes where the task has none or the other way
    /// round, another sampling), which a key collision or a foreign entry would show.
    pub fn rebind(self, plan: &Plan, task: &Task) -> Result<PartialProfile> {
        let foreign = |why: &str| Error::invalid("cached partial", why.to_string());
        if self.tasks.len() != 1 || self.plans.len() != 1 || self.row_slices.len() != 1 {
            return Err(foreign("it is not the partial of one task"));
        }
        let mine: BTreeSet<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let theirs: BTreeSet<&str> = task.columns.iter().map(String::as_str).collect();
        if mine != theirs {
            return Err(foreign("its columns are not the task's"));
        }
        if self.row_hashes.is_some() != task.row_hash {
            return Err(foreign("it does not hash rows as the task does"));
        }
        if self.sampling() != plan.options.effective_sampling() {
            return Err(foreign("it is not sampled as the plan samples"));
        }
        if !self.unavailable.is_empty() {
            return Err(foreign("it lacks some statistics"));
        }
        let rows = self.row_slices.values().sum();
        let scanned = self.rows_scanned.values().sum();
        let slice = (plan.id.clone(), task.row_slice);
        Ok(PartialProfile {
            plans: BTreeMap::from([(
                plan.id.clone(),
                PlanRecord {
                    dataset: plan.dataset.uri.clone(),
                    strategy: plan.strategy,
                    total_tasks: plan.tasks.len() as u32,
                    columns: plan.columns.clone(),
                    sampling: plan.options.effective_sampling(),
                },
            )]),
            tasks: BTreeSet::from([(plan.id.clone(), task.id)]),
            row_slices: BTreeMap::from([(slice.clone(), rows)]),
            rows_scanned: BTreeMap::from([(slice, scanned)]),
            // This run spent nothing on it: the profile's task time and bytes read are the run's.
            task_millis: 0,
            bytes_read: 0,
            ..self
        })
    }
}

/// Partials of earlier runs, under a directory or object-store prefix.
#[derive(Debug, Clone)]
pub struct PartialCache {
    prefix: String,
    storage: StorageOptions,
}

impl PartialCache {
    /// The cache at `uri` (a path or URI), read and written with `storage`'s credentials.
    pub fn new(uri: &str, storage: &StorageOptions) -> Self {
        PartialCache {
            prefix: uri.trim_end_matches('/').to_string(),
            storage: storage.clone(),
        }
    }

    pub fn uri(&self) -> &str {
        &self.prefix
    }

    /// Where the entry of `key` is.
    pub fn entry_uri(&self, key: &str) -> String {
        format!("{}/{key}.partial", self.prefix)
    }

    /// The cached partial of `task` of `plan`, rebound to it; `None` on a miss.
    pub async fn get(&self, plan: &Plan, task: &Task) -> Option<PartialProfile> {
        let key = task.cache_key.as_deref()?;
        let uri = self.entry_uri(key);
        let bytes = match read_object(&uri, &self.storage).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return None,
            Err(e) => {
                warn!(entry = %uri, error = %e, "cannot read a cache entry; running its task");
                return None;
            }
        };
        match PartialProfile::from_bytes(&bytes, &uri).and_then(|p| p.rebind(plan, task)) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(entry = %uri, error = %e, "unusable cache entry; running its task");
                None
            }
        }
    }

    /// The cached partials of every task of `plan` (in task order; `None`: a miss).
    pub async fn lookup(&self, plan: &Plan) -> Vec<Option<PartialProfile>> {
        // The futures made before the stream, not by a closure in it: a stream of a closure's
        // futures that borrow is not `Send` for every lifetime, which a controller needs.
        let lookups: Vec<_> = plan.tasks.iter().map(|t| self.get(plan, t)).collect();
        futures::stream::iter(lookups)
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    /// Stores `partial` as the entry of `task` (a task without a key is not cached).
    pub async fn put(&self, task: &Task, partial: &PartialProfile) -> Result<()> {
        let Some(key) = task.cache_key.as_deref() else {
            return Ok(());
        };
        write_object(&self.entry_uri(key), &self.storage, partial.to_bytes()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{DataFile, RowGroupMeta};
    use crate::plan::{DatasetRef, FileRead, Strategy};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn file(path: &str) -> DataFile {
        DataFile {
            uri: format!("/d/{path}"),
            path: format!("d/{path}"),
            size: 100,
            rows: Some(10),
            row_groups: vec![RowGroupMeta {
                rows: 10,
                column_bytes: vec![10, 20],
            }],
            record_starts: Vec::new(),
            data_start: None,
            e_tag: Some("e1".into()),
            version: None,
            modified_ns: Some(1),
            compression: None,
        }
    }

    fn plan() -> Plan {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let task = Task {
            id: 0,
            row_slice: 0,
            column_group: 0,
            reads: vec![FileRead {
                file: 0,
                row_groups: Some(vec![0]),
                bytes: None,
                rows: None,
            }],
            columns: vec!["a".into(), "b".into()],
            row_hash: true,
            hash: None,
            rows: Some(10),
            bytes: 30,
            cache_key: None,
        };
        Plan {
            version: PLAN_VERSION,
            id: "p1".into(),
            dataset: DatasetRef {
                uri: "/d".into(),
                format: Format::Parquet,
                storage: StorageOptions::default(),
                schema,
                csv: None,
                table: None,
            },
            columns: vec!["a".into(), "b".into()],
            files: vec![file("0.parquet")],
            strategy: Strategy::RowBased,
            options: ProfileOptions::default(),
            tasks: vec![task],
        }
    }

    fn key(p: &Plan) -> String {
        task_key(p, &p.tasks[0], ENGINE_VERSION)
    }

    #[test]
    fn the_key_changes_with_every_part_of_the_identity_and_nothing_else() {
        let base = plan();
        let k = key(&base);
        assert_eq!(k.len(), 32);
        // What a partial does not depend on: the plan's id, the strategy, the task's place.
        let mut same = base.clone();
        same.id = "other".into();
        same.strategy = Strategy::Hybrid;
        same.tasks[0].id = 7;
        same.tasks[0].row_slice = 3;
        same.files[0].uri = "s3://elsewhere/d/0.parquet".into();
        assert_eq!(key(&same), k, "unchanged identity, same key");
        // Without an ETag, the modification time stands in for it; with one, it adds nothing.
        let mut touched = base.clone();
        touched.files[0].modified_ns = Some(2);
        assert_eq!(key(&touched), k);
        let mut no_etag = base.clone();
        no_etag.files[0].e_tag = None;
        let k_no_etag = key(&no_etag);
        no_etag.files[0].modified_ns = Some(2);
        assert_ne!(key(&no_etag), k_no_etag, "mtime without an ETag");

        type Change = (&'static str, fn(&mut Plan));
        let changes: Vec<Change> = vec![
            ("path", |p| p.files[0].path = "d/1.parquet".into()),
            ("size", |p| p.files[0].size = 101),
            ("etag", |p| p.files[0].e_tag = Some("e2".into())),
            ("version", |p| p.files[0].version = Some("v2".into())),
            ("row groups", |p| {
                p.tasks[0].reads[0].row_groups = Some(vec![1])
            }),
            ("byte range", |p| p.tasks[0].reads[0].bytes = Some([0, 50])),
            ("row range", |p| p.tasks[0].reads[0].rows = Some([0, 5])),
            ("other row range", |p| {
                p.tasks[0].reads[0].rows = Some([5, 10])
            }),
            ("data start", |p| p.files[0].data_start = Some(8)),
            ("task columns", |p| p.tasks[0].columns = vec!["a".into()]),
            ("row hash", |p| p.tasks[0].row_hash = false),
            ("plan columns", |p| p.columns = vec!["a".into()]),
            ("dataset", |p| p.dataset.uri = "/e".into()),
            ("format", |p| p.dataset.format = Format::Ipc),
            ("schema", |p| {
                p.dataset.schema = Arc::new(Schema::new(vec![
                    Field::new("a", DataType::Int32, true),
                    Field::new("b", DataType::Utf8, true),
                ]))
            }),
            ("csv dialect", |p| {
                p.dataset.csv = Some(CsvDialect::default())
            }),
            ("top_k", |p| p.options.top_k += 1),
            ("patterns", |p| p.options.patterns = !p.options.patterns),
            ("sampling", |p| {
                p.options.sampling = Some(crate::Sampling::new(0.5, 1))
            }),
            ("sampling seed", |p| {
                p.options.sampling = Some(crate::Sampling::new(0.5, 2))
            }),
        ];
        let mut seen = BTreeSet::from([k.clone()]);
        for (what, change) in changes {
            let mut p = base.clone();
            change(&mut p);
            let changed = key(&p);
            assert_ne!(changed, k, "{what} must change the key");
            assert!(seen.insert(changed), "{what}: a key of another change");
        }
        assert_ne!(task_key(&base, &base.tasks[0], "0.0.0-other"), k, "engine");
    }

    #[test]
    fn a_rebound_partial_is_the_new_plans_and_a_foreign_one_is_refused() {
        let old = plan();
        let mut p = PartialProfile::for_task(&old, 0, 0, 10);
        p.columns = ["a", "b"]
            .iter()
            .map(|c| crate::kernel::ColumnState::new(c, &DataType::Int64, &old.options, false))
            .collect();
        p.row_hashes = Some(crate::kernel::RowHashes::new(16, 12));
        let mut new = old.clone();
        new.id = "p2".into();
        new.tasks[0].id = 0;
        new.tasks[0].row_slice = 0;
        let got = p.clone().rebind(&new, &new.tasks[0]).unwrap();
        assert_eq!(got.tasks, BTreeSet::from([("p2".to_string(), 0)]));
        assert_eq!(got.plans.keys().collect::<Vec<_>>(), vec!["p2"]);
        assert_eq!(got.row_count(), 10);
        assert!(got.missing_tasks().is_empty());

        let mut fewer = new.clone();
        fewer.tasks[0].columns = vec!["a".into()];
        assert!(p.clone().rebind(&fewer, &fewer.tasks[0]).is_err());
        let mut unhashed = new.clone();
        unhashed.tasks[0].row_hash = false;
        assert!(p.clone().rebind(&unhashed, &unhashed.tasks[0]).is_err());
        let mut two = p.clone();
        two.tasks.insert(("p1".into(), 1));
        assert!(two.rebind(&new, &new.tasks[0]).is_err());
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_a_miss_and_a_stored_one_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PartialCache::new(dir.path().to_str().unwrap(), &StorageOptions::default());
        let mut plan = plan();
        plan.tasks[0].cache_key = Some(key(&plan));
        let task = plan.tasks[0].clone();
        assert!(cache.get(&plan, &task).await.is_none(), "empty cache");
        std::fs::write(
            dir.path().join(format!("{}.partial", key(&plan))),
            b"not a partial",
        )
        .unwrap();
        assert!(cache.get(&plan, &task).await.is_none(), "corrupt entry");
        let mut p = PartialProfile::for_task(&plan, 0, 0, 10);
        p.columns = ["a", "b"]
            .iter()
            .map(|c| crate::kernel::ColumnState::new(c, &DataType::Int64, &plan.options, false))
            .collect();
        p.row_hashes = Some(crate::kernel::RowHashes::new(16, 12));
        cache.put(&task, &p).await.unwrap();
        let hit = cache.lookup(&plan).await;
        assert_eq!(hit.len(), 1);
        assert_eq!(hit[0].as_ref().map(|p| p.row_count()), Some(10));
    }
}
