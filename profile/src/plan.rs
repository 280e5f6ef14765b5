//! Partition planning, from metadata only, into a serializable plan of tasks.
//!
//! - `row_based`: N tasks balanced by rows, cut on row-group (Parquet) or file boundaries, and
//!   inside files: CSV and NDJSON into byte ranges, a Parquet row group larger than the target
//!   task size into row ranges (read with a `RowSelection`, through the page index when the file
//!   has one);
//! - `column_based`: N column groups balanced by compressed column size; a task reads only its
//!   columns;
//! - `hybrid`: R row slices × C column groups;
//! - `hash`: N tasks; task i keeps the rows whose key hashes to bucket i, so the key's distinct
//!   count and top values are exact after the merge.

use crate::dataset::{
    CsvDialect, DataFile, Dataset, Format, RowGroupMeta, StorageOptions, TableVersion,
};
use crate::kernel::ValueKind;
use crate::options::{ProfileOptions, Sampling};
use crate::{Error, Result};
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Version of the plan format.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RowBased,
    ColumnBased,
    Hybrid,
    Hash,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RowBased => "row_based",
            Strategy::ColumnBased => "column_based",
            Strategy::Hybrid => "hybrid",
            Strategy::Hash => "hash",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "row_based" | "row" | "rows" => Ok(Strategy::RowBased),
            "column_based" | "column" | "columns" => Ok(Strategy::ColumnBased),
            "hybrid" => Ok(Strategy::Hybrid),
            "hash" => Ok(Strategy::Hash),
            other => Err(Error::invalid(
                "strategy",
                format!("`{other}` (expected row_based, column_based, hybrid or hash)"),
            )),
        }
    }
}

/// What the user asks of the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub strategy: Strategy,
    /// Tasks for `row_based`, column groups for `column_based`, buckets for `hash`.
    pub partitions: u32,
    /// For `hybrid`: row slices and column groups (default: `partitions` × 1... see below).
    pub row_partitions: Option<u32>,
    pub column_partitions: Option<u32>,
    pub hash_column: Option<String>,
    /// Columns to profile; `None`: all.
    pub columns: Option<Vec<String>>,
    /// Settings of the kernel; `options.sampling` samples a fraction of the rows.
    pub options: ProfileOptions,
    /// Instead of `options.sampling`: sample about this many rows. The planner turns it into the
    /// fraction rows / total rows, so it needs the total before reading (Parquet footers).
    pub sample_rows: Option<SampleRows>,
    /// `row_based` and `hybrid`: cut CSV and NDJSON files into byte ranges of about this many
    /// bytes, and Parquet row groups whose compressed size is larger into row ranges of about
    /// this many compressed bytes; `None`: [`DEFAULT_TARGET_TASK_BYTES`], or less so that there
    /// are `partitions` ranges; `Some(0)`: whole files (and whole row groups) only.
    pub target_task_bytes: Option<u64>,
    /// Plan for a cache of partials (`cache.rs`): no task reads more than one file (a file may
    /// still be cut into several tasks), so that a changed file invalidates only its own
    /// tasks, and every task gets a [`Task::cache_key`]. Not with the hash strategy, whose every
    /// task reads every file.
    pub cache: bool,
}

/// Byte ranges of text files (and row ranges of Parquet row groups, in compressed bytes) are at
/// most this large unless asked otherwise.
pub const DEFAULT_TARGET_TASK_BYTES: u64 = 64 << 20;
/// Below this, a file is not cut to make more tasks (unless a target is given).
const MIN_AUTO_RANGE_BYTES: u64 = 1 << 20;

/// A sample of about `rows` rows (a Bernoulli sample: the count varies around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRows {
    pub rows: u64,
    pub seed: u64,
}

impl PlanRequest {
    pub fn new(strategy: Strategy, partitions: u32) -> Self {
        PlanRequest {
            strategy,
            partitions,
            row_partitions: None,
            column_partitions: None,
            hash_column: None,
            columns: None,
            options: ProfileOptions::default(),
            sample_rows: None,
            target_task_bytes: None,
            cache: false,
        }
    }
}

/// The dataset as a plan records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    pub uri: String,
    pub format: Format,
    /// Storage options without secrets (workers read credentials from their environment).
    #[serde(default)]
    pub storage: StorageOptions,
    /// The dataset's Arrow schema (needed to decode CSV and JSON the same way in every task).
    pub schema: SchemaRef,
    /// CSV: the dialect every task reads the files with (sniffed once, when planning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvDialect>,
    /// A lake table's version read (`files` are its live files then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableVersion>,
}

/// Rows filtered by hash bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashFilter {
    pub column: String,
    pub buckets: u32,
    pub bucket: u32,
}

/// Part of one file a task reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRead {
    /// Index into `Plan::files`.
    pub file: u32,
    /// Row groups of that file; `None`: the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<Vec<u32>>,
    /// CSV and NDJSON: the records starting in these bytes, `[start, end)` (a record starts at
    /// 0 or after a `\n`; the task reads past `end` to finish its last record); `None`: the
    /// whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<[u64; 2]>,
    /// Parquet: only the rows `[start, end)` of the file (counted from its first row), which
    /// lie in `row_groups` (a row group larger than the target task size is cut into row
    /// ranges); `None`: every row of the row groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<[u64; 2]>,
}

/// One unit of work: some rows (a row slice or hash bucket) of some columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u32,
    /// Tasks with the same row slice read the same rows (different columns).
    pub row_slice: u32,
    pub column_group: u32,
    pub reads: Vec<FileRead>,
    /// Columns this task profiles.
    pub columns: Vec<String>,
    /// Whether this task hashes whole rows (of all the plan's columns) for duplicate counting.
    pub row_hash: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashFilter>,
    /// Rows the task reads, when the format says (before a hash filter and before sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes of its files (whole files; row groups: their compressed size; a row range of a
    /// row group: its share of the group's compressed size, by rows).
    pub bytes: u64,
    /// Plans made for a cache: the identity of everything this task's partial depends on (see
    /// `cache::task_key`), under which the partial is cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

/// A plan: everything a worker needs to run any of its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    /// Content hash of the plan: partial profiles name the plan they belong to.
    pub id: String,
    pub dataset: DatasetRef,
    /// The profiled columns, in dataset order.
    pub columns: Vec<String>,
    pub files: Vec<DataFile>,
    pub strategy: Strategy,
    pub options: ProfileOptions,
    pub tasks: Vec<Task>,
}

impl Plan {
    pub fn task(&self, id: u32) -> Result<&Task> {
        self.tasks
            .get(id as usize)
            .filter(|t| t.id == id)
            .ok_or_else(|| {
                Error::invalid(
                    "task",
                    format!(
                        "{id} is not in plan {} (it has tasks 0..{})",
                        self.id,
                        self.tasks.len()
                    ),
                )
            })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("plans serialize")
    }

    pub fn from_json(bytes: &[u8], what: &str) -> Result<Plan> {
        let plan: Plan = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid("plan", format!("{what}: {e}")))?;
        if plan.version != PLAN_VERSION {
            return Err(Error::Version {
                what: "plan",
                found: plan.version,
                supported: PLAN_VERSION,
            });
        }
        // A plan comes from storage: its settings are input like any other.
        plan.options.validate()?;
        if let Some(d) = &plan.dataset.csv {
            d.validate()?;
        }
        Ok(plan)
    }
}

/// Plans the profile of `dataset`.
pub fn plan(dataset: &Dataset, request: &PlanRequest) -> Result<Plan> {
    request.options.validate()?;
    let options = resolve_sampling(dataset, request)?;
    if request.partitions == 0 {
        return Err(Error::invalid("partitions", "must be at least 1"));
    }
    let schema = &dataset.schema;
    let columns = select_columns(schema, request.columns.as_deref())?;
    let hash_column = match (request.strategy, &request.hash_column) {
        (Strategy::Hash, None) => {
            return Err(Error::invalid(
                "partitioning",
                "the hash strategy needs a key column (--hash-column)",
            ));
        }
        (Strategy::Hash, Some(c)) => {
            let field = schema
                .field_with_name(c)
                .map_err(|_| unknown_column(schema, c))?;
            if ValueKind::of(field.data_type()) == ValueKind::Other {
                return Err(Error::invalid(
                    "hash column",
                    format!("`{c}` is {}; use a scalar column", field.data_type()),
                ));
            }
            Some(c.clone())
        }
        (_, Some(_)) => {
            return Err(Error::invalid(
                "partitioning",
                format!(
                    "--hash-column goes with the hash strategy, not {}",
                    request.strategy
                ),
            ));
        }
        _ => None,
    };
    if request.cache && hash_column.is_some() {
        return Err(Error::invalid(
            "cache",
            "the hash strategy cannot be cached: each of its tasks reads every file, so any \
             change would invalidate every task; use row_based, column_based or hybrid",
        ));
    }
    let (rows, cols) = match request.strategy {
        Strategy::RowBased => (request.partitions, 1),
        Strategy::ColumnBased => (1, request.partitions),
        Strategy::Hybrid => {
            let r = request.row_partitions.unwrap_or(request.partitions);
            let c = request.column_partitions.unwrap_or(2);
            if r == 0 || c == 0 {
                return Err(Error::invalid(
                    "partitioning",
                    "row and column partitions must be at least 1",
                ));
            }
            (r, c)
        }
        Strategy::Hash => (1, 1),
    };
    let quoted =
        dataset.format == Format::Csv && dataset.csv.as_ref().is_none_or(|d| d.quote.is_some());
    let range = range_bytes(dataset, request, &options).map(|step| (step, quoted));
    let slices = if request.cache {
        file_row_slices(&dataset.files, dataset.format, rows, range)
    } else {
        row_slices(&dataset.files, dataset.format, rows, range)
    };
    let groups = column_groups(&dataset.files, schema, &columns, cols);
    let mut tasks = Vec::new();
    match &hash_column {
        Some(key) => {
            let all = &slices
                .iter()
                .flat_map(|s| s.reads.clone())
                .collect::<Vec<_>>();
            let bytes = slices.iter().map(|s| s.bytes).sum();
            for bucket in 0..request.partitions {
                tasks.push(Task {
                    id: bucket,
                    row_slice: bucket,
                    column_group: 0,
                    reads: all.clone(),
                    columns: columns.clone(),
                    row_hash: options.duplicates,
                    hash: Some(HashFilter {
                        column: key.clone(),
                        buckets: request.partitions,
                        bucket,
                    }),
                    rows: dataset.total_rows(),
                    bytes,
                    cache_key: None,
                });
            }
        }
        None => {
            for (r, slice) in slices.iter().enumerate() {
                for (c, group) in groups.iter().enumerate() {
                    tasks.push(Task {
                        id: tasks.len() as u32,
                        row_slice: r as u32,
                        column_group: c as u32,
                        reads: slice.reads.clone(),
                        columns: group.clone(),
                        row_hash: options.duplicates && c == 0,
                        hash: None,
                        rows: slice.rows,
                        bytes: slice.bytes,
                        cache_key: None,
                    });
                }
            }
        }
    }
    let mut plan = Plan {
        version: PLAN_VERSION,
        id: String::new(),
        dataset: DatasetRef {
            uri: dataset.location.uri.clone(),
            format: dataset.format,
            storage: dataset.options.without_secrets(),
            schema: schema.clone(),
            csv: dataset.csv.clone(),
            table: dataset.table.clone(),
        },
        columns,
        files: dataset.files.clone(),
        strategy: request.strategy,
        options,
        tasks,
    };
    if request.cache {
        for i in 0..plan.tasks.len() {
            let key = crate::cache::task_key(&plan, &plan.tasks[i], crate::cache::ENGINE_VERSION);
            plan.tasks[i].cache_key = Some(key);
        }
    }
    plan.id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&plan.to_json()));
    Ok(plan)
}

/// Plans the profile of `dataset` as [`plan`] does, first scanning quoted CSV files for record
/// starts when they are to be cut into byte ranges (which reads them once; see
/// `dataset::scan_record_starts`).
pub async fn plan_with_scan(dataset: &Dataset, request: &PlanRequest) -> Result<Plan> {
    let options = resolve_sampling(dataset, request)?;
    let needs_scan = dataset.csv.as_ref().is_some_and(|d| d.quote.is_some());
    match range_bytes(dataset, request, &options) {
        Some(step)
            if needs_scan
                && dataset
                    .files
                    .iter()
                    .any(|f| f.size > step && f.compression.is_none()) =>
        {
            let mut scanned = dataset.clone();
            crate::dataset::scan_record_starts(&mut scanned, step).await?;
            plan(&scanned, request)
        }
        _ => plan(dataset, request),
    }
}

/// How large the parts cut inside files are, when they are cut (row slices only, not the hash
/// strategy): byte ranges of CSV and NDJSON (not a sample, whose rows are keyed by their
/// position in the file, which a byte range does not know; and an encoding in which `\n` is one
/// byte, not UTF-16), and row ranges of Parquet row groups, in compressed bytes (sampled too:
/// the footer gives every row's position).
fn range_bytes(dataset: &Dataset, request: &PlanRequest, options: &ProfileOptions) -> Option<u64> {
    let parquet = dataset.format == Format::Parquet;
    let text = match dataset.format {
        Format::Ndjson => true,
        Format::Csv => dataset.csv.as_ref().is_none_or(|d| {
            !matches!(
                d.encoding,
                crate::dataset::Encoding::Utf16Le | crate::dataset::Encoding::Utf16Be
            )
        }),
        _ => false,
    };
    let rows_split = matches!(request.strategy, Strategy::RowBased | Strategy::Hybrid);
    if !rows_split || !(parquet || text && options.effective_sampling().is_none()) {
        return None;
    }
    match request.target_task_bytes {
        Some(0) => None,
        Some(t) => Some(t),
        None => {
            let slices = match request.strategy {
                Strategy::Hybrid => request.row_partitions.unwrap_or(request.partitions),
                _ => request.partitions,
            }
            .max(1) as u64;
            let total: u64 = if parquet {
                dataset
                    .files
                    .iter()
                    .flat_map(|f| &f.row_groups)
                    .map(group_bytes)
                    .sum()
            } else {
                dataset.files.iter().map(|f| f.size).sum()
            };
            Some(
                total
                    .div_ceil(slices)
                    .clamp(MIN_AUTO_RANGE_BYTES, DEFAULT_TARGET_TASK_BYTES),
            )
        }
    }
}

/// The byte ranges a text file is cut into, about `step` bytes each: at record starts found by
/// a scan for quoted CSV (none found: the whole file), anywhere otherwise (each task then finds
/// the first record boundary after its start).
fn file_ranges(file: &DataFile, step: u64, quoted: bool) -> Vec<Option<[u64; 2]>> {
    // A compressed stream cannot be entered in the middle: one task reads the whole file.
    if file.size <= step || file.compression.is_some() {
        return vec![None];
    }
    let cuts: Vec<u64> = if quoted {
        file.record_starts.clone()
    } else {
        (1..file.size.div_ceil(step)).map(|k| k * step).collect()
    };
    // Only the range at the file's start reads the header.
    let cuts: Vec<u64> = cuts
        .into_iter()
        .filter(|&c| file.data_start.is_none_or(|d| c >= d))
        .collect();
    if cuts.is_empty() {
        return vec![None];
    }
    std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied().chain(std::iter::once(file.size)))
        .filter(|(a, b)| a < b)
        .map(|(a, b)| Some([a, b]))
        .collect()
}

/// The plan's options: sampling that keeps every row dropped (so that the plan, and its id, are
/// those of the unsampled profile), a row count turned into a fraction.
fn resolve_sampling(dataset: &Dataset, request: &PlanRequest) -> Result<ProfileOptions> {
    let mut options = request.options.clone();
    options.sampling = options.effective_sampling();
    let Some(asked) = request.sample_rows else {
        return Ok(options);
    };
    if request.options.sampling.is_some() {
        return Err(Error::invalid(
            "sampling",
            "give a fraction of the rows or a number of rows to sample, not both",
        ));
    }
    if asked.rows == 0 {
        return Err(Error::invalid(
            "sampling",
            "a sample of 0 rows profiles nothing; ask for at least 1 row",
        ));
    }
    let total = dataset.total_rows().ok_or_else(|| {
        Error::invalid(
            "sampling",
            format!(
                "a sample of {} rows needs the dataset's row count before it is read, which only \
                 Parquet footers record, not {} files; sample a fraction of the rows instead \
                 (e.g. --sample 0.1)",
                asked.rows, dataset.format
            ),
        )
    })?;
    options.sampling =
        (asked.rows < total).then(|| Sampling::new(asked.rows as f64 / total as f64, asked.seed));
    Ok(options)
}

fn unknown_column(schema: &SchemaRef, c: &str) -> Error {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Error::invalid(
        "column",
        format!(
            "`{c}` is not in the dataset (its columns: {})",
            names.join(", ")
        ),
    )
}

fn select_columns(schema: &SchemaRef, asked: Option<&[String]>) -> Result<Vec<String>> {
    let all: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let Some(asked) = asked.filter(|a| !a.is_empty()) else {
        return Ok(all);
    };
    for c in asked {
        if !all.contains(c) {
            // `s.a`, `l[]`, `m{key}`: derived columns come with their nested column.
            if let Some(root) = schema.fields().iter().find(|f| {
                crate::kernel::nested::is_nested(f.data_type())
                    && c.strip_prefix(f.name().as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[', '{']))
            }) {
                return Err(Error::invalid(
                    "column",
                    format!(
                        "`{c}` is derived from the nested column `{}`: select `{}`, whose \
                         fields, elements, keys and values are all profiled",
                        root.name(),
                        root.name()
                    ),
                ));
            }
            return Err(unknown_column(schema, c));
        }
    }
    // Dataset order, so that every plan of the same columns lists them alike.
    Ok(all.into_iter().filter(|c| asked.contains(c)).collect())
}

struct RowSlice {
    reads: Vec<FileRead>,
    rows: Option<u64>,
    bytes: u64,
}

/// A row group's compressed size, which the target task size is compared with.
fn group_bytes(rg: &RowGroupMeta) -> u64 {
    rg.column_bytes.iter().sum()
}

/// The row ranges a Parquet row group of `rows` rows and `bytes` compressed bytes is cut into,
/// about `step` compressed bytes each, as (first row within the group, rows, bytes): one range
/// (the whole group) when it is no larger than `step`. Rows are cut evenly, and the group's
/// bytes shared out by rows (so that they add up to the group's size).
fn group_ranges(rows: u64, bytes: u64, step: Option<u64>) -> Vec<(u64, u64, u64)> {
    let pieces = match step {
        Some(step) if step > 0 && bytes > step => bytes.div_ceil(step).min(rows).max(1),
        _ => 1,
    };
    let at = |k: u64, of: u64| (u128::from(of) * u128::from(k) / u128::from(pieces)) as u64;
    (0..pieces)
        .map(|k| {
            let (a, b) = (at(k, rows), at(k + 1, rows));
            // Bytes by the rows' share, so that neighbouring ranges add up exactly.
            let share =
                |r: u64| (u128::from(bytes) * u128::from(r) / u128::from(rows.max(1))) as u64;
            (a, b - a, share(b) - share(a))
        })
        .collect()
}

/// A unit of work that is not cut further.
struct Unit {
    file: u32,
    /// Parquet: the row group (`u32::MAX`: a file without row groups, nothing to read).
    group: Option<u32>,
    /// What slices are balanced by: rows (Parquet) or bytes.
    weight: u64,
    rows: Option<u64>,
    bytes: u64,
    /// CSV and NDJSON: the byte range.
    range: Option<[u64; 2]>,
    /// Parquet: the unit's rows in its file, `[start, end)`, and whether that is less than its
    /// whole row group.
    span: Option<([u64; 2], bool)>,
}

/// The dataset cut into at most `n` contiguous slices of about equal rows (Parquet row groups,
/// or row ranges of groups larger than the step) or bytes (whole files of other formats, or
/// their byte ranges). `range`: the step of cuts inside files and, for CSV, whether fields may
/// be quoted.
fn row_slices(
    files: &[DataFile],
    format: Format,
    n: u32,
    range: Option<(u64, bool)>,
) -> Vec<RowSlice> {
    let mut units: Vec<Unit> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let file = i as u32;
        if format == Format::Parquet && !f.row_groups.is_empty() {
            let mut first = 0u64;
            for (g, rg) in f.row_groups.iter().enumerate() {
                let pieces = group_ranges(rg.rows, group_bytes(rg), range.map(|r| r.0));
                let whole = pieces.len() == 1;
                for (start, rows, bytes) in pieces {
                    units.push(Unit {
                        file,
                        group: Some(g as u32),
                        weight: rows,
                        rows: Some(rows),
                        bytes,
                        range: None,
                        span: Some(([first + start, first + start + rows], !whole)),
                    });
                }
                first += rg.rows;
            }
        } else if format == Format::Parquet {
            // No row groups: nothing to read.
            units.push(Unit {
                file,
                group: Some(u32::MAX),
                weight: 0,
                rows: Some(0),
                bytes: 0,
                range: None,
                span: None,
            });
        } else {
            let ranges = match range {
                Some((step, quoted)) => file_ranges(f, step, quoted),
                None => vec![None],
            };
            for r in ranges {
                let len = r.map_or(f.size, |[a, b]| b - a);
                units.push(Unit {
                    file,
                    group: None,
                    weight: len,
                    rows: None,
                    bytes: len,
                    range: r,
                    span: None,
                });
            }
        }
    }
    let total: u64 = units.iter().map(|u| u.weight).sum();
    let n = (n as usize).min(units.len()).max(1);
    let mut slices: Vec<RowSlice> = Vec::with_capacity(n);
    let empty = || RowSlice {
        reads: Vec::new(),
        rows: Some(0),
        bytes: 0,
    };
    let mut current = empty();
    // Parquet: the rows of the current slice's last read, and whether any of its units is a
    // part of a row group (only then does the read need its row range).
    let mut last_span: Option<([u64; 2], bool)> = None;
    let mut acc = 0u64;
    for (idx, u) in units.iter().enumerate() {
        match (current.reads.last_mut(), u.group) {
            (_, Some(u32::MAX)) => {}
            (Some(last), Some(g)) if last.file == u.file => {
                let groups = last.row_groups.get_or_insert_with(Vec::new);
                if groups.last() != Some(&g) {
                    groups.push(g);
                }
                if let (Some((rows, partial)), Some((span, part))) = (&mut last_span, u.span) {
                    rows[1] = span[1];
                    *partial |= part;
                    last.rows = partial.then_some(*rows);
                }
            }
            // Neighbouring ranges of a file in one slice: one range.
            (Some(last), None)
                if last.file == u.file && last.bytes.is_some() && u.range.is_some() =>
            {
                if let (Some(l), Some([_, end])) = (&mut last.bytes, u.range) {
                    l[1] = end;
                }
            }
            _ => {
                last_span = u.span;
                current.reads.push(FileRead {
                    file: u.file,
                    row_groups: u.group.map(|g| vec![g]),
                    bytes: u.range,
                    rows: u.span.and_then(|(rows, partial)| partial.then_some(rows)),
                });
            }
        }
        current.rows = current.rows.zip(u.rows).map(|(a, b)| a + b);
        current.bytes += u.bytes;
        acc += u.weight;
        let remaining_units = units.len() - idx - 1;
        let remaining_slices = n - slices.len() - 1;
        let target = (total as f64 * (slices.len() + 1) as f64 / n as f64).ceil() as u64;
        // Cut when this slice reached its share, or when every remaining unit must start a slice.
        if remaining_slices > 0 && (acc >= target || remaining_units == remaining_slices) {
            slices.push(std::mem::replace(&mut current, empty()));
            last_span = None;
        }
    }
    slices.push(current);
    slices
}

/// [`row_slices`] that never span files: file `f` gets its share of the `n` slices by weight
/// (at least one), cut as [`row_slices`] cuts, so that every slice reads one file.
fn file_row_slices(
    files: &[DataFile],
    format: Format,
    n: u32,
    range: Option<(u64, bool)>,
) -> Vec<RowSlice> {
    let weight = |f: &DataFile| match format {
        Format::Parquet => f.rows.unwrap_or(0),
        _ => f.size,
    };
    let total: u64 = files.iter().map(weight).sum::<u64>().max(1);
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let share = (u64::from(n) * weight(f)).div_ceil(total).max(1);
        let share = u32::try_from(share).unwrap_or(u32::MAX);
        for mut slice in row_slices(std::slice::from_ref(f), format, share, range) {
            for r in &mut slice.reads {
                r.file = i as u32;
            }
            out.push(slice);
        }
    }
    out
}

/// Columns in at most `n` groups of about equal compressed size (largest first into the
/// lightest group), each group in dataset order.
fn column_groups(
    files: &[DataFile],
    schema: &SchemaRef,
    columns: &[String],
    n: u32,
) -> Vec<Vec<String>> {
    let n = (n as usize).min(columns.len()).max(1);
    let size_of = |c: &str| -> u64 {
        let idx = schema.index_of(c).unwrap_or(0);
        let bytes: u64 = files
            .iter()
            .flat_map(|f| f.row_groups.iter())
            .map(|rg| rg.column_bytes.get(idx).copied().unwrap_or(0))
            .sum();
        bytes.max(1)
    };
    let mut by_size: Vec<(&String, u64)> = columns.iter().map(|c| (c, size_of(c))).collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut loads = vec![0u64; n];
    let mut member = vec![Vec::new(); n];
    for (c, size) in by_size {
        let g = (0..n).min_by_key(|&g| (loads[g], g)).expect("n >= 1");
        loads[g] += size;
        member[g].push(c.clone());
    }
    member
        .into_iter()
        .map(|g| columns.iter().filter(|c| g.contains(c)).cloned().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::RowGroupMeta;

    fn files(groups: &[&[u64]]) -> Vec<DataFile> {
        groups
            .iter()
            .enumerate()
            .map(|(i, rgs)| DataFile {
                uri: format!("/d/{i}.parquet"),
                path: format!("d/{i}.parquet"),
                size: 100,
                rows: Some(rgs.iter().sum()),
                row_groups: rgs
                    .iter()
                    .map(|&rows| RowGroupMeta {
                        rows,
                        column_bytes: vec![rows, 2 * rows, 3],
                    })
                    .collect(),
                record_starts: Vec::new(),
                data_start: None,
                e_tag: None,
                version: None,
                modified_ns: None,
                compression: None,
            })
            .collect()
    }

    #[test]
    fn row_slices_are_balanced_and_cover_every_row_group_once() {
        let f = files(&[&[10, 10, 10], &[10, 10], &[50]]);
        for n in 1..=8 {
            let slices = row_slices(&f, Format::Parquet, n, None);
            assert_eq!(slices.len(), (n as usize).min(6));
            let rows: u64 = slices.iter().map(|s| s.rows.unwrap()).sum();
            assert_eq!(rows, 100);
            let mut seen = Vec::new();
            for s in &slices {
                assert!(!s.reads.is_empty());
                for r in &s.reads {
                    for g in r.row_groups.as_ref().unwrap() {
                        seen.push((r.file, *g));
                    }
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen, sorted, "contiguous");
            sorted.dedup();
            assert_eq!(sorted.len(), 6);
        }
        let two = row_slices(&f, Format::Parquet, 2, None);
        assert_eq!(
            two.iter().map(|s| s.rows.unwrap()).collect::<Vec<_>>(),
            vec![50, 50]
        );
    }

    #[test]
    fn cache_slices_never_span_files_and_keep_each_files_cuts() {
        let f = files(&[&[10, 10, 10], &[10], &[50, 50], &[5]]);
        for n in 1..=8 {
            let slices = file_row_slices(&f, Format::Parquet, n, None);
            assert!(slices.iter().all(|s| s.reads.len() == 1), "n = {n}");
            let rows: u64 = slices.iter().map(|s| s.rows.unwrap()).sum();
            assert_eq!(rows, 145);
            let files: std::collections::BTreeSet<u32> =
                slices.iter().map(|s| s.reads[0].file).collect();
            assert_eq!(files.len(), 4, "every file has a slice");
        }
        // A large file is still cut by its row groups.
        let eight = file_row_slices(&f, Format::Parquet, 8, None);
        assert_eq!(eight.iter().filter(|s| s.reads[0].file == 2).count(), 2);
    }

    #[test]
    fn column_groups_balance_sizes() {
        let f = files(&[&[100]]);
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("b", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("c", arrow::datatypes::DataType::Int64, true),
        ]));
        let cols: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let groups = column_groups(&f, &schema, &cols, 2);
        assert_eq!(
            groups,
            vec![
                vec!["b".to_string()],
                vec!["a".to_string(), "c".to_string()]
            ]
        );
        assert_eq!(column_groups(&f, &schema, &cols, 9).len(), 3);
    }
}
