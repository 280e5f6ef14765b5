//! Command-line arguments. `th profile` also accepts the ancestor's flags as its docs write them
//! (`--distributed --backend local --workers 4`, `--master`, `--scheduler`).

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use truthound_profile::dataset::{CsvOptions, Encoding, Format, StorageOptions, parse_char};
use truthound_profile::{PlanRequest, ProfileOptions, SampleRows, Sampling, Strategy};

/// Profile large datasets: exact counts and moments, DataSketches quantiles, distinct counts and
/// top values, patterns, duplicates. Runs in-process by default; partial profiles merge exactly.
#[derive(Debug, Parser)]
#[command(name = "th", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); or set TH_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The schema of one line of a run's event log (`<output>.events.jsonl`) instead.
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Profile a dataset: one file, a directory or prefix, or a glob.
    ///
    /// Examples:
    ///   th profile data.parquet
    ///   th profile s3://bucket/events/ --endpoint http://127.0.0.1:9000 --output s3://bucket/profile.json
    ///   th profile 'logs/*.csv' --strategy column_based --partitions 4 --json
    ///   th profile users.parquet --strategy hash --hash-column user_id --partitions 8
    #[command(verbatim_doc_comment)]
    // Boxed, as `Plan`: the two large variants (clippy::large_enum_variant).
    Profile(Box<ProfileArgs>),
    /// Write the plan of a profile (its tasks) without running it; `th-worker run-task` runs
    /// one task of it.
    Plan(Box<PlanCmd>),
    /// Merge partial profiles, and profiles written with --keep-state, into one profile.
    Merge(MergeArgs),
    /// Print the JSON Schema of the profile format (`--events`: of the event log's lines).
    Schema(SchemaArgs),
    /// Write a profile as one self-contained HTML page: overview, and per column its types,
    /// nulls, histogram, quantiles, distinct count, top values and patterns.
    ///
    /// Examples:
    ///   th report profile.json -o report.html
    ///   th report s3://bucket/profiles/events.json --endpoint http://127.0.0.1:9000 -o -
    #[command(verbatim_doc_comment)]
    Report(crate::report::ReportArgs),
    /// Print a profile as a table, one row per column (`--json`: the profile JSON as it is).
    Show(crate::show::ShowArgs),
    /// Compare two profiles of one table: the columns that drifted (null ratio, distinct count,
    /// mean, std, KS distance, PSI, top values, added, removed and retyped columns) beyond the
    /// thresholds. Prints nothing when nothing drifted. Exit 0: no drift, 1: drift, 2: usage or
    /// internal error, 64/65/75 as for the other commands (65: a profile missing or not one).
    ///
    /// Examples:
    ///   th diff jan.json feb.json
    ///   th diff s3://bucket/profiles/2024-01.json s3://bucket/profiles/2024-02.json --json
    ///   th diff old.json new.json --ks 0.05 --psi 0.1 --no-top-values
    #[command(verbatim_doc_comment)]
    Diff(crate::diff::DiffArgs),
    /// Cluster commands: submit, get, list, describe, wait, logs, cancel (and completions).
    #[command(flatten)]
    Cluster(crate::cluster::args::ClusterCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Local,
    Spark,
    Dask,
    Ray,
    Auto,
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Endpoint of an S3-compatible server (path-style requests), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TH_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Object store region.
    #[arg(long)]
    pub region: Option<String>,
    /// Allow plain HTTP to the object store (implied by an http:// endpoint).
    #[arg(long)]
    pub allow_http: bool,
    /// Any object_store option, KEY=VALUE (repeatable), e.g. aws_skip_signature=true.
    /// Credentials are read from AWS_*, GOOGLE_*, AZURE_* environment variables.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
}

impl StorageArgs {
    pub fn options(&self) -> Result<StorageOptions> {
        let mut extra = BTreeMap::new();
        for kv in &self.storage_options {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--storage-option `{kv}` must be KEY=VALUE");
            };
            extra.insert(k.trim().to_string(), v.to_string());
        }
        Ok(StorageOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http.then_some(true),
            extra,
            ..StorageOptions::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Dataset: a path, file://, s3://, gs://, az://, abfs://, http(s):// URI; one file, a
    /// directory or prefix, or a glob ('data/*.parquet').
    pub uri: String,
    /// File format (default: from the file extensions).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Columns to profile, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Partition strategy.
    #[arg(long, default_value = "row_based", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Tasks (row_based), column groups (column_based), hash buckets (hash), or row slices
    /// (hybrid). Default: twice the workers.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Row slices of a hybrid plan (default: --partitions).
    #[arg(long)]
    pub row_partitions: Option<u32>,
    /// Column groups of a hybrid plan (default: 2).
    #[arg(long)]
    pub column_partitions: Option<u32>,
    /// Key column of the hash strategy: its distinct count and top values come out exact.
    #[arg(long)]
    pub hash_column: Option<String>,
    /// How many most and least frequent values to report.
    #[arg(long, default_value_t = ProfileOptions::default().top_k)]
    pub top_k: usize,
    /// Distinct values counted exactly per column before sketches take over.
    #[arg(long, default_value_t = ProfileOptions::default().exact_distinct_limit)]
    pub exact_distinct_limit: usize,
    /// Histogram bins.
    #[arg(long, default_value_t = ProfileOptions::default().histogram_bins)]
    pub histogram_bins: usize,
    /// Skip pattern detection in strings.
    #[arg(long)]
    pub no_patterns: bool,
    /// Skip the duplicate-row count.
    #[arg(long)]
    pub no_duplicates: bool,
    /// Profile a sample: keep each row with this probability (0 < FRACTION <= 1, or a
    /// percentage: 0.1 and 10% keep about a tenth of the rows). Rows are chosen by a hash of the seed, their file and their position in it, so
    /// every partitioning profiles the same rows.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub sample: Option<f64>,
    /// Profile a sample of about N rows (Parquet only: the row count comes from the footers).
    #[arg(long, value_name = "N", conflicts_with = "sample")]
    pub sample_rows: Option<u64>,
    /// row_based, hybrid: cut files into tasks of about this many bytes: CSV and NDJSON files
    /// into byte ranges, Parquet row groups of more compressed bytes into row ranges (default:
    /// the data over --partitions, from 1 MiB to 64 MiB); 0: whole files and row groups.
    #[arg(long, value_name = "BYTES")]
    pub target_task_bytes: Option<u64>,
    /// CSV and NDJSON: the longest record, in bytes; a longer one (an unterminated quote, a
    /// file without line breaks) fails the run, naming the file and where the record starts,
    /// instead of being read into memory whole.
    #[arg(long, value_name = "BYTES", default_value_t = ProfileOptions::default().max_record_bytes)]
    pub max_record_bytes: u64,
    /// Seed of --sample and --sample-rows: another seed samples other rows.
    #[arg(long, value_name = "SEED", default_value_t = Sampling::DEFAULT_SEED)]
    pub sample_seed: u64,
    /// A lake table (a Delta Lake table's directory, an Iceberg table's directory or metadata
    /// file) at an older version: a Delta version, or an Iceberg snapshot id (default: the
    /// current one). The version read is in the profile (`.sources[].table`).
    #[arg(long, value_name = "VERSION")]
    pub table_version: Option<i64>,
    #[command(flatten)]
    pub csv: CsvArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// How CSV files are read. What is not given is sniffed from the first file's head (and shown
/// in the plan: `th plan ... | jq .dataset.csv`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "CSV")]
pub struct CsvArgs {
    /// Field delimiter: one character, or `tab` (e.g. `;`, `|`, `tab`).
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// Quote character, or `none` when fields are never quoted.
    #[arg(long, value_name = "CHAR")]
    pub quote: Option<String>,
    /// Escape character inside quoted fields (e.g. `\\`), or `none` (quotes are doubled).
    #[arg(long, value_name = "CHAR")]
    pub escape: Option<String>,
    /// Lines starting with this character are skipped (e.g. `#`), or `none`.
    #[arg(long, value_name = "CHAR")]
    pub comment: Option<String>,
    /// Whether the first record is a header: true or false.
    #[arg(long, value_name = "BOOL")]
    pub header: Option<bool>,
    /// Values read as null, comma-separated (e.g. `NA,NULL,-`); default: the empty field.
    #[arg(long = "null", value_name = "TOKENS", value_delimiter = ',')]
    pub null_tokens: Vec<String>,
    /// Text encoding: utf-8 (default), latin1, windows-1252, utf-16 (a byte-order mark is
    /// detected by itself).
    #[arg(long, value_name = "ENCODING")]
    pub encoding: Option<String>,
}

impl CsvArgs {
    /// The engine's CSV options; a malformed setting is an error naming its flag.
    pub fn options(&self) -> Result<CsvOptions> {
        let char_flag = |flag: &'static str, v: &Option<String>| -> Result<Option<Option<u8>>> {
            v.as_deref()
                .map(|s| parse_char(flag, s))
                .transpose()
                .map_err(Into::into)
        };
        let delimiter = match char_flag("--delimiter", &self.delimiter)? {
            Some(None) => {
                return Err(truthound_profile::Error::Invalid {
                    what: "--delimiter",
                    detail: "cannot be `none` (give one character, e.g. `;` or `tab`)".into(),
                }
                .into());
            }
            Some(Some(d)) => Some(d),
            None => None,
        };
        Ok(CsvOptions {
            delimiter,
            quote: char_flag("--quote", &self.quote)?,
            escape: char_flag("--escape", &self.escape)?,
            comment: char_flag("--comment", &self.comment)?,
            header: self.header,
            null_tokens: (!self.null_tokens.is_empty()).then(|| self.null_tokens.clone()),
            encoding: self
                .encoding
                .as_deref()
                .map(str::parse::<Encoding>)
                .transpose()?,
        })
    }

    /// Whether any CSV setting is given (they apply to CSV datasets only).
    pub fn any(&self) -> bool {
        self.delimiter.is_some()
            || self.quote.is_some()
            || self.escape.is_some()
            || self.comment.is_some()
            || self.header.is_some()
            || !self.null_tokens.is_empty()
            || self.encoding.is_some()
    }
}

#[derive(Debug, Args)]
pub struct PlanCmd {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Where to write the plan (default: stdout).
    #[arg(long, short)]
    pub output: Option<String>,
}

impl PlanArgs {
    /// The planner's request; `workers` sets the default partition count.
    pub fn request(&self, workers: usize) -> Result<PlanRequest> {
        let options = ProfileOptions {
            top_k: self.top_k,
            exact_distinct_limit: self.exact_distinct_limit,
            histogram_bins: self.histogram_bins,
            patterns: !self.no_patterns,
            duplicates: !self.no_duplicates,
            sampling: self.sample.map(|f| Sampling::new(f, self.sample_seed)),
            max_record_bytes: self.max_record_bytes,
            ..ProfileOptions::default()
        };
        let partitions = self
            .partitions
            .unwrap_or_else(|| (2 * workers.max(1)) as u32);
        Ok(PlanRequest {
            strategy: self.strategy,
            partitions,
            row_partitions: self.row_partitions,
            column_partitions: self.column_partitions,
            hash_column: self.hash_column.clone(),
            columns: (!self.columns.is_empty()).then(|| self.columns.clone()),
            options,
            sample_rows: self.sample_rows.map(|rows| SampleRows {
                rows,
                seed: self.sample_seed,
            }),
            target_task_bytes: self.target_task_bytes,
            cache: false,
        })
    }
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Where to run: local (in-process, the default), spark, dask, ray, auto.
    #[arg(long, env = "TRUTHOUND_DISTRIBUTED_BACKEND", value_enum)]
    pub backend: Option<Backend>,
    /// Accepted for the ancestor's CLI (`--distributed --backend local`); work is always
    /// partitioned.
    #[arg(long)]
    pub distributed: bool,
    /// Spark master (the ancestor's flag): an sc:// URL here is taken as --spark-connect.
    #[arg(long)]
    pub master: Option<String>,
    /// Spark Connect server the spark backend runs its queries on, e.g. sc://127.0.0.1:15002
    /// (`/;token=...;use_ssl=true` as Spark Connect URLs allow).
    #[arg(long, env = "SPARK_CONNECT_URL", value_name = "URL")]
    pub spark_connect: Option<String>,
    /// Dask scheduler address (the ancestor's flag; for the dask backend).
    #[arg(long, env = "DASK_SCHEDULER_ADDRESS")]
    pub scheduler: Option<String>,
    /// Ray dashboard address, whose Jobs API the ray backend submits to, e.g.
    /// http://127.0.0.1:8265.
    #[arg(long, env = "RAY_ADDRESS", value_name = "URL")]
    pub ray_address: Option<String>,
    /// Worker threads (default: the cores); with --backend spark, tasks run at once (default 2).
    #[arg(long, short = 'w', env = "TRUTHOUND_NUM_WORKERS")]
    pub workers: Option<usize>,
    /// Write the profile JSON here (a path or URI).
    #[arg(long, short)]
    pub output: Option<String>,
    /// Print the profile JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep the mergeable state inside the profile, so it can be merged with others later.
    #[arg(long)]
    pub keep_state: bool,
    /// Also write the merged partial profile (binary) here.
    #[arg(long)]
    pub partial_out: Option<String>,
    /// Also write the plan here.
    #[arg(long)]
    pub plan_out: Option<String>,
    /// Incremental runs: a directory or object-store prefix of task partials. Tasks then read
    /// one file each; a task whose file (path, size, ETag/version or mtime, part read), columns,
    /// options and engine version match a cached partial reuses it, the others run and are
    /// cached. Not with the hash strategy; the local backend only.
    #[arg(long, value_name = "DIR|URI")]
    pub cache: Option<String>,
    /// Remote backends: where the plan and the tasks' partials go, a prefix the cluster's
    /// workers can read and write (default: `.th-work/<run>` beside --output, else a local
    /// temporary directory, which only workers on this machine can reach).
    #[arg(long, value_name = "URI")]
    pub work_dir: Option<String>,
    /// Remote backends: retries of a task that failed transiently (not for bad data).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
}

impl ProfileArgs {
    pub fn backend(&self) -> Result<Backend> {
        Ok(self.backend.unwrap_or(Backend::Local))
    }

    pub fn workers(&self) -> usize {
        self.workers
            .filter(|w| *w > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Partial profiles (from th-worker or --partial-out) and profiles written with --keep-state.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Write the merged profile JSON here (default: stdout).
    #[arg(long, short)]
    pub output: Option<String>,
    /// Also write the merged partial profile here.
    #[arg(long)]
    pub partial_out: Option<String>,
    /// Print the profile JSON on stdout even when writing it.
    #[arg(long)]
    pub json: bool,
    /// Keep the mergeable state inside the merged profile.
    #[arg(long)]
    pub keep_state: bool,
    /// Fail (exit 65) when a plan's tasks are missing.
    #[arg(long)]
    pub require_complete: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: truthound_profile::Error| e.to_string())
}

/// A fraction (0.1) or a percentage (10%).
fn parse_fraction(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (text, 1.0),
    };
    // The range is checked with the other options (exit 64, like them).
    number
        .parse::<f64>()
        .map(|f| f / scale)
        .map_err(|_| format!("`{s}` is not a number (give a fraction such as 0.1, or 10%)"))
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
        .map_err(|e: truthound_profile::Error| e.to_string())
}
