//! The SQL that Spark runs for one task of a plan: one aggregation over the task's rows that
//! computes, per column, what the engine's [`ColumnState`] holds (counts, min/max, exact sums,
//! moments, DataSketches KLL/HLL/frequent-items sketches), and per column a query of its exact
//! value counts (run only when the column may have few enough distinct values).
//!
//! Spark reads the files itself: `parquet.`URI`` for Parquet (a task's row groups become a
//! filter on Spark's `_metadata.row_index`, from the row counts the plan recorded), and a
//! temporary view with the plan's schema for CSV (with a header row) and NDJSON.
//!
//! [`ColumnState`]: truthound_profile::kernel::ColumnState

use super::SparkError;
use arrow::datatypes::{DataType, TimeUnit};
use truthound_profile::dataset::{Compression, CsvDialect, Encoding, Format};
use truthound_profile::kernel::ValueKind;
use truthound_profile::plan::{FileRead, Plan, Task};

/// What the engine keeps for a column, by its Arrow type (as `ColumnState::new` decides).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Boolean,
    /// Integers up to 32-bit unsigned, read as BIGINT.
    Integer,
    /// Floats, 64-bit unsigned integers and decimals, read as DOUBLE.
    Float,
    /// Dates and timestamps, read as the integer the engine keeps (days, or time units since
    /// the epoch). `expr` turns the column into that integer.
    Temporal {
        expr: String,
    },
    String,
    Binary,
    /// Nested and other types: counts only.
    Other,
}

/// One column of a task.
#[derive(Debug, Clone)]
pub struct ColumnQuery {
    pub name: String,
    pub data_type: DataType,
    pub kind: Kind,
    /// Prefix of this column's result fields (`th_c3_`).
    pub prefix: String,
}

impl ColumnQuery {
    /// The column, quoted.
    fn col(&self) -> String {
        quote_ident(&self.name)
    }

    /// The value that is counted, hashed and sketched: BIGINT for integers and temporal values,
    /// DOUBLE without NaN (and with −0.0 as 0.0) for floats, the string itself for strings.
    pub fn value_expr(&self) -> Option<String> {
        let c = self.col();
        match &self.kind {
            Kind::Integer => Some(format!("CAST({c} AS BIGINT)")),
            Kind::Temporal { expr } => Some(expr.clone()),
            Kind::Float => Some(format!(
                "CASE WHEN isnan(CAST({c} AS DOUBLE)) THEN NULL WHEN CAST({c} AS DOUBLE) = 0 THEN 0D ELSE CAST({c} AS DOUBLE) END"
            )),
            Kind::String => Some(c),
            _ => None,
        }
    }

    pub fn field(&self, stat: &str) -> String {
        format!("{}{stat}", self.prefix)
    }
}

/// The queries of one task.
#[derive(Debug, Clone)]
pub struct TaskQuery {
    /// Statements to run first (temporary views of CSV and NDJSON files).
    pub setup: Vec<String>,
    /// The task's rows, as a subquery (`None`: the task reads no rows).
    pub source: Option<String>,
    pub columns: Vec<ColumnQuery>,
    /// The aggregation: one row.
    pub aggregate: Option<String>,
}

/// Settings the sketches are made with (the plan's).
#[derive(Debug, Clone, Copy)]
pub struct SketchParams {
    pub kll_k: u16,
    pub hll_lg_k: u8,
    /// Spark's `maxItemsTracked`: three quarters of the map size gives the engine's map size.
    pub max_items_tracked: usize,
}

impl SketchParams {
    pub fn of(plan: &Plan) -> SketchParams {
        SketchParams {
            kll_k: plan.options.kll_k,
            hll_lg_k: plan.options.hll_lg_k,
            max_items_tracked: plan.options.frequent_items_map_size * 3 / 4,
        }
    }
}

/// `name` as a Spark identifier.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `s` as a Spark string literal.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Spark's CSV options for the plan's dialect, so that Spark cuts the files as the engine does.
/// `multiLine`: quoted fields may hold line breaks (and Spark reads UTF-16 only so).
fn csv_options(dialect: Option<&CsvDialect>) -> String {
    let default = CsvDialect::default();
    let d = dialect.unwrap_or(&default);
    let one = |c: Option<char>| quote_str(&c.map(String::from).unwrap_or_default());
    let mut out = format!(
        ", header '{}', sep {}, quote {}, mode 'FAILFAST', multiLine 'true'",
        d.header,
        one(Some(d.delimiter)),
        one(d.quote)
    );
    // Spark's default escape is a backslash; the engine's (no escape) doubles quotes, which
    // Spark reads with the quote as its escape.
    out.push_str(&format!(", escape {}", one(d.escape.or(d.quote))));
    if let Some(c) = d.comment {
        out.push_str(&format!(", comment {}", one(Some(c))));
    }
    if let Some(token) = d.null_tokens.first() {
        out.push_str(&format!(", nullValue {}", quote_str(token)));
    }
    let charset = match d.encoding {
        Encoding::Utf8 => "UTF-8",
        Encoding::Latin1 => "ISO-8859-1",
        Encoding::Windows1252 => "windows-1252",
        Encoding::Utf16Le => "UTF-16LE",
        Encoding::Utf16Be => "UTF-16BE",
    };
    out.push_str(&format!(", encoding '{charset}'"));
    out
}

/// What Spark cannot do of a plan, said before anything runs (exit 64).
pub fn check_plan(plan: &Plan) -> Result<(), SparkError> {
    if plan.options.effective_sampling().is_some() {
        return Err(SparkError::Invalid(
            "the spark backend does not sample rows: the engine's sample is decided per row by a \
             hash of the seed, the file and the row's position, which Spark cannot reproduce; \
             profile without --sample, or with another backend"
                .into(),
        ));
    }
    if plan.tasks.iter().any(|t| t.hash.is_some()) {
        return Err(SparkError::Invalid(
            "the spark backend does not run the hash strategy: its buckets are the engine's \
             hashes of the key, which Spark cannot reproduce; use row_based, column_based or \
             hybrid with --backend spark"
                .into(),
        ));
    }
    if let Some(d) = &plan.dataset.csv
        && d.null_tokens.len() > 1
    {
        return Err(SparkError::Invalid(format!(
            "Spark's CSV reader takes one null token, the plan has {} ({}); give one with \
             --null, or profile with another backend",
            d.null_tokens.len(),
            d.null_tokens.join(", ")
        )));
    }
    if plan
        .tasks
        .iter()
        .any(|t| t.reads.iter().any(|r| r.bytes.is_some()))
    {
        return Err(SparkError::Invalid(
            "the spark backend reads whole CSV and NDJSON files, and this plan cuts them into \
             byte ranges; plan with --target-task-bytes 0 for Spark"
                .into(),
        ));
    }
    if matches!(plan.dataset.format, Format::Ipc) {
        return Err(SparkError::Invalid(
            "the spark backend reads Parquet, CSV and NDJSON; Spark has no reader for Arrow IPC \
             files: profile them with another backend"
                .into(),
        ));
    }
    for f in &plan.files {
        spark_path(&f.uri)?;
        // Hadoop picks a file's codec by its extension alone: a compressed file whose name
        // does not say so would be read as text.
        if let Some(c) = f.compression
            && Compression::from_path(&f.uri) != Some(c)
        {
            return Err(SparkError::Invalid(format!(
                "{} is {c}-compressed but its name does not end in the extension of {c}; Spark \
                 chooses the codec by the extension: rename the file, or profile it with another \
                 backend",
                f.uri
            )));
        }
    }
    for name in &plan.columns {
        let field = plan
            .dataset
            .schema
            .field_with_name(name)
            .map_err(|e| SparkError::Invalid(format!("column `{name}`: {e}")))?;
        kind(name, field.data_type())?;
    }
    Ok(())
}

/// The URI Spark reads a file by.
pub fn spark_path(uri: &str) -> Result<String, SparkError> {
    if uri.starts_with('/') {
        return Ok(format!("file://{uri}"));
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        SparkError::Invalid(format!(
            "{uri}: a relative path; Spark needs an absolute path or a URI"
        ))
    })?;
    match scheme {
        "file" => Ok(uri.to_string()),
        // Hadoop's S3 connector is s3a; the object keys are the same.
        "s3" | "s3a" => Ok(format!("s3a://{rest}")),
        "gs" | "abfs" | "abfss" | "hdfs" => Ok(uri.to_string()),
        _ => Err(SparkError::Invalid(format!(
            "{uri}: Spark cannot read {scheme}:// URIs; the spark backend reads local paths \
             (on a file system the Spark executors share), s3://, gs://, abfs:// and hdfs://"
        ))),
    }
}

/// The statistics kind of a column, or why Spark cannot profile it as the engine does.
pub fn kind(name: &str, t: &DataType) -> Result<Kind, SparkError> {
    let c = quote_ident(name);
    let unsupported = |why: &str| {
        Err(SparkError::Invalid(format!(
            "column `{name}` is {t}: {why}; leave it out with --columns, or profile with another backend"
        )))
    };
    Ok(match ValueKind::of(t) {
        ValueKind::Boolean => Kind::Boolean,
        ValueKind::Integer => Kind::Integer,
        ValueKind::Float => Kind::Float,
        ValueKind::String => Kind::String,
        ValueKind::Binary => Kind::Binary,
        ValueKind::Other => Kind::Other,
        ValueKind::Temporal => match t {
            // unix_date is an INT: as BIGINT, the frequent-items sketch holds longs, as the
            // engine's does.
            DataType::Date32 => Kind::Temporal {
                expr: format!("CAST(unix_date({c}) AS BIGINT)"),
            },
            // Spark reads a timestamp without a time zone as TIMESTAMP_NTZ; as TIMESTAMP in the
            // session's zone, which the backend sets to UTC, it has the same epoch value.
            DataType::Timestamp(unit, tz) => {
                let ts = if tz.is_some() {
                    c.clone()
                } else {
                    format!("CAST({c} AS TIMESTAMP)")
                };
                let f = match unit {
                    TimeUnit::Second => "unix_seconds",
                    TimeUnit::Millisecond => "unix_millis",
                    TimeUnit::Microsecond => "unix_micros",
                    TimeUnit::Nanosecond => {
                        return unsupported(
                            "Spark keeps timestamps in microseconds, so nanoseconds would be lost",
                        );
                    }
                };
                Kind::Temporal {
                    expr: format!("{f}({ts})"),
                }
            }
            // Date64, times and durations.
            _ => return unsupported("Spark has no matching type for its integer form"),
        },
    })
}

/// Spark's type for an Arrow type, in a schema DDL (CSV and NDJSON views).
fn ddl_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INT".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            format!("DECIMAL({p},{s})")
        }
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP_NTZ".into(),
        DataType::Binary | DataType::LargeBinary => "BINARY".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        _ => "DOUBLE".into(),
    }
}

/// The rows of one file read, with its row groups (and its row range inside them, when the plan
/// cut a row group) as a row-index filter.
fn parquet_read(plan: &Plan, read: &FileRead, select: &str) -> Result<String, SparkError> {
    let file = plan
        .files
        .get(read.file as usize)
        .ok_or_else(|| SparkError::Invalid(format!("the plan has no file {}", read.file)))?;
    let path = spark_path(&file.uri)?;
    let mut sql = format!("SELECT {select} FROM parquet.{}", quote_ident(&path));
    let all: Vec<u32>;
    let groups = match &read.row_groups {
        Some(g)
            if read.rows.is_some()
                || g.len() != file.row_groups.len()
                || g.iter().enumerate().any(|(i, &x)| x as usize != i) =>
        {
            g
        }
        None if read.rows.is_some() => {
            all = (0..file.row_groups.len() as u32).collect();
            &all
        }
        _ => return Ok(sql),
    };
    // Row groups as row ranges: their rows follow each other in the file.
    let mut starts = Vec::with_capacity(file.row_groups.len() + 1);
    let mut at = 0u64;
    for rg in &file.row_groups {
        starts.push(at);
        at += rg.rows;
    }
    starts.push(at);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &g in groups {
        let g = g as usize;
        let (lo, hi) = match (starts.get(g), starts.get(g + 1)) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => {
                return Err(SparkError::Invalid(format!(
                    "{}: the plan names row group {g}, which the file does not have",
                    file.uri
                )));
            }
        };
        // A row range cuts the groups' rows to its own.
        let (lo, hi) = match read.rows {
            Some([a, b]) => (lo.max(a), hi.min(b)),
            None => (lo, hi),
        };
        if lo >= hi {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => ranges.push((lo, hi)),
        }
    }
    if ranges.is_empty() {
        sql.push_str(" WHERE false");
        return Ok(sql);
    }
    let filter: Vec<String> = ranges
        .iter()
        .map(|(lo, hi)| format!("(_metadata.row_index >= {lo} AND _metadata.row_index < {hi})"))
        .collect();
    sql.push_str(" WHERE ");
    sql.push_str(&filter.join(" OR "));
    Ok(sql)
}

/// The queries of `task` of `plan`; `view_prefix` names its temporary views (unique per task
/// and attempt: sessions are shared by concurrent tasks).
pub fn task_query(plan: &Plan, task: &Task, view_prefix: &str) -> Result<TaskQuery, SparkError> {
    let schema = &plan.dataset.schema;
    let mut columns = Vec::with_capacity(task.columns.len());
    for (i, name) in task.columns.iter().enumerate() {
        let field = schema
            .field_with_name(name)
            .map_err(|e| SparkError::Invalid(format!("column `{name}`: {e}")))?;
        columns.push(ColumnQuery {
            name: name.clone(),
            data_type: field.data_type().clone(),
            kind: kind(name, field.data_type())?,
            // `th_`: not to be taken for a column of the dataset.
            prefix: format!("th_c{i}_"),
        });
    }
    let select = if columns.is_empty() {
        "1 AS th_one".to_string()
    } else {
        columns
            .iter()
            .map(|c| c.col())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut setup = Vec::new();
    let mut parts = Vec::new();
    for (n, read) in task.reads.iter().enumerate() {
        match plan.dataset.format {
            Format::Parquet => parts.push(parquet_read(plan, read, &select)?),
            Format::Csv | Format::Ndjson => {
                let file = plan.files.get(read.file as usize).ok_or_else(|| {
                    SparkError::Invalid(format!("the plan has no file {}", read.file))
                })?;
                let view = format!("{view_prefix}_{n}");
                let ddl: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", quote_ident(f.name()), ddl_type(f.data_type())))
                    .collect();
                let (source, options) = if plan.dataset.format == Format::Csv {
                    ("csv", csv_options(plan.dataset.csv.as_ref()))
                } else {
                    ("json", ", mode 'FAILFAST'".to_string())
                };
                setup.push(format!(
                    "CREATE OR REPLACE TEMPORARY VIEW {} ({}) USING {source} OPTIONS (path {}{options})",
                    quote_ident(&view),
                    ddl.join(", "),
                    quote_str(&spark_path(&file.uri)?)
                ));
                parts.push(format!("SELECT {select} FROM {}", quote_ident(&view)));
            }
            // check_plan refuses these before anything runs; this is for a caller that did not.
            Format::Ipc => {
                return check_plan(plan).and(Err(SparkError::Invalid(
                    "the spark backend cannot read Arrow IPC files".into(),
                )));
            }
        }
    }
    if parts.is_empty() {
        return Ok(TaskQuery {
            setup,
            source: None,
            columns,
            aggregate: None,
        });
    }
    let source = parts.join(" UNION ALL ");
    let params = SketchParams::of(plan);
    let mut agg = vec!["count(*) AS th_rows".to_string()];
    for c in &columns {
        agg.extend(column_aggregates(c, params));
    }
    let extra: Vec<String> = columns.iter().filter_map(projection).collect();
    let rows = if extra.is_empty() {
        format!("({source})")
    } else {
        format!(
            "(SELECT *, {} FROM ({source}) AS th_read)",
            extra.join(", ")
        )
    };
    let aggregate = format!("SELECT {} FROM {rows} AS th_rows_of_task", agg.join(", "));
    Ok(TaskQuery {
        setup,
        source: Some(source),
        columns,
        aggregate: Some(aggregate),
    })
}

/// A value computed per row before the aggregation: a float's bits for its HLL sketch.
/// DataSketches hashes a double as the long of its bits (`Double.doubleToLongBits`, −0.0 as
/// 0.0), so the same long through `hll_sketch_agg` gives the same hash (a null cannot be passed
/// to `doubleToLongBits`: the CASE keeps it out). `java_method` is not
/// deterministic to Spark's analyzer, which refuses it inside an aggregate: it goes in a
/// projection below.
fn projection(c: &ColumnQuery) -> Option<String> {
    if c.kind != Kind::Float {
        return None;
    }
    let x = c.value_expr()?;
    Some(format!(
        "CASE WHEN {x} IS NULL THEN NULL WHEN {x} = 0 THEN 0L ELSE CAST(java_method('java.lang.Double', 'doubleToLongBits', {x}) AS BIGINT) END AS {}",
        c.field("bits")
    ))
}

/// The aggregates of one column, each `AS <prefix><stat>`.
fn column_aggregates(c: &ColumnQuery, p: SketchParams) -> Vec<String> {
    let col = c.col();
    let f = |stat: &str, expr: String| format!("{expr} AS {}", c.field(stat));
    let mut out = vec![f("n", format!("count({col})"))];
    let (k, lgk, items) = (p.kll_k, p.hll_lg_k, p.max_items_tracked);
    // Counts, min, max and the exact sum of a column of integers `v`.
    let ints = |v: &str, out: &mut Vec<String>| {
        out.push(f("min", format!("min({v})")));
        out.push(f("max", format!("max({v})")));
        out.push(f("sum", format!("sum(CAST({v} AS DECIMAL(38,0)))")));
        out.push(f("zero", format!("count_if({v} = 0)")));
        out.push(f("neg", format!("count_if({v} < 0)")));
        out.push(f("kll", format!("kll_sketch_agg_bigint({v}, {k})")));
        out.push(f("hll", format!("hll_sketch_agg({v}, {lgk})")));
        out.push(f(
            "top",
            format!("approx_top_k_accumulate({v}, {items}).sketch"),
        ));
    };
    let moments = |x: &str, out: &mut Vec<String>| {
        out.push(f("var", format!("var_pop({x})")));
        out.push(f("skew", format!("skewness({x})")));
        out.push(f("kurt", format!("kurtosis({x})")));
    };
    match &c.kind {
        Kind::Boolean => {
            out.push(f("true", format!("count_if({col})")));
            out.push(f("false", format!("count_if(NOT {col})")));
        }
        Kind::Integer => {
            let v = c.value_expr().unwrap_or_default();
            ints(&v, &mut out);
            moments(&format!("CAST({v} AS DOUBLE)"), &mut out);
        }
        Kind::Temporal { expr } => ints(expr, &mut out),
        Kind::Float => {
            let d = format!("CAST({col} AS DOUBLE)");
            // NaN is counted apart and enters nothing else, as in the engine.
            let x = format!("CASE WHEN isnan({d}) THEN NULL ELSE {d} END");
            out.push(f("nan", format!("count_if(isnan({d}))")));
            out.push(f("pinf", format!("count_if({x} = double('inf'))")));
            out.push(f("ninf", format!("count_if({x} = double('-inf'))")));
            out.push(f("zero", format!("count_if({x} = 0)")));
            out.push(f("neg", format!("count_if({x} < 0)")));
            out.push(f("min", format!("min({x})")));
            out.push(f("max", format!("max({x})")));
            out.push(f("sum", format!("sum({x})")));
            out.push(f("mean", format!("avg({x})")));
            out.push(f("cnt", format!("count({x})")));
            moments(&x, &mut out);
            out.push(f("kll", format!("kll_sketch_agg_double({x}, {k})")));
            // hll_sketch_agg takes no doubles: it gets the bits (see `projections`).
            out.push(f(
                "hll",
                format!("hll_sketch_agg({}, {lgk})", c.field("bits")),
            ));
            let v = c.value_expr().unwrap_or_default();
            out.push(f(
                "top",
                format!("approx_top_k_accumulate({v}, {items}).sketch"),
            ));
        }
        Kind::String => {
            out.push(f("empty", format!("count_if({col} = '')")));
            out.push(f("min", format!("min({col})")));
            out.push(f("max", format!("max({col})")));
            out.push(f("lmin", format!("min(char_length({col}))")));
            out.push(f("lmax", format!("max(char_length({col}))")));
            out.push(f(
                "lsum",
                format!("sum(CAST(char_length({col}) AS BIGINT))"),
            ));
            out.push(f("hll", format!("hll_sketch_agg({col}, {lgk})")));
            out.push(f(
                "top",
                format!("approx_top_k_accumulate({col}, {items}).sketch"),
            ));
        }
        Kind::Binary => {
            out.push(f("empty", format!("count_if(octet_length({col}) = 0)")));
            out.push(f("lmin", format!("min(octet_length({col}))")));
            out.push(f("lmax", format!("max(octet_length({col}))")));
            out.push(f(
                "lsum",
                format!("sum(CAST(octet_length({col}) AS BIGINT))"),
            ));
        }
        Kind::Other => {}
    }
    out
}

/// The exact counts of a column's values, at most `limit + 1` of them (one more than the
/// engine keeps exactly: then the column is sketched).
pub fn value_counts_sql(source: &str, c: &ColumnQuery, limit: usize) -> Option<String> {
    let v = c.value_expr()?;
    Some(format!(
        "SELECT k, count(*) AS n FROM (SELECT {v} AS k FROM ({source}) AS th_rows_of_task) AS th_values \
         WHERE k IS NOT NULL GROUP BY k LIMIT {}",
        limit.saturating_add(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_views_read_the_plans_dialect() {
        assert_eq!(
            csv_options(None),
            ", header 'true', sep ',', quote '\"', mode 'FAILFAST', multiLine 'true', \
             escape '\"', encoding 'UTF-8'"
        );
        let d = CsvDialect {
            delimiter: ';',
            quote: None,
            escape: None,
            comment: Some('#'),
            header: false,
            null_tokens: vec!["NA".into()],
            encoding: Encoding::Latin1,
        };
        assert_eq!(
            csv_options(Some(&d)),
            ", header 'false', sep ';', quote '', mode 'FAILFAST', multiLine 'true', escape '', \
             comment '#', nullValue 'NA', encoding 'ISO-8859-1'"
        );
    }

    #[test]
    fn quotes_identifiers_and_strings() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_str("it's a\\b"), "'it\\'s a\\\\b'");
        assert_eq!(spark_path("/d/x.parquet").unwrap(), "file:///d/x.parquet");
        assert_eq!(spark_path("s3://b/k").unwrap(), "s3a://b/k");
        assert!(spark_path("https://h/x").is_err());
    }

    /// A plan of one Parquet file with row groups of 100 and 50 rows.
    fn parquet_plan() -> Plan {
        use truthound_profile::dataset::{DataFile, RowGroupMeta, StorageOptions};
        use truthound_profile::plan::{DatasetRef, PLAN_VERSION, Strategy};
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Int64, true),
        ]));
        let group = |rows| RowGroupMeta {
            rows,
            column_bytes: vec![rows],
        };
        Plan {
            version: PLAN_VERSION,
            id: "p".into(),
            dataset: DatasetRef {
                uri: "/d".into(),
                format: Format::Parquet,
                storage: StorageOptions::default(),
                schema,
                csv: None,
                table: None,
            },
            columns: vec!["a".into()],
            files: vec![DataFile {
                uri: "/d/x.parquet".into(),
                path: "d/x.parquet".into(),
                size: 1000,
                rows: Some(150),
                row_groups: vec![group(100), group(50)],
                record_starts: Vec::new(),
                data_start: None,
                e_tag: None,
                version: None,
                modified_ns: None,
                compression: None,
            }],
            strategy: Strategy::RowBased,
            options: Default::default(),
            tasks: Vec::new(),
        }
    }

    #[test]
    fn parquet_reads_filter_row_groups_and_row_ranges_by_row_index() {
        let plan = parquet_plan();
        let read = |row_groups: Option<Vec<u32>>, rows: Option<[u64; 2]>| {
            let r = FileRead {
                file: 0,
                row_groups,
                bytes: None,
                rows,
            };
            parquet_read(&plan, &r, "a").unwrap()
        };
        let base = "SELECT a FROM parquet.`file:///d/x.parquet`";
        assert_eq!(read(Some(vec![0, 1]), None), base);
        assert_eq!(
            read(Some(vec![1]), None),
            format!("{base} WHERE (_metadata.row_index >= 100 AND _metadata.row_index < 150)")
        );
        // A row range inside a row group, and one across two.
        assert_eq!(
            read(Some(vec![0]), Some([25, 50])),
            format!("{base} WHERE (_metadata.row_index >= 25 AND _metadata.row_index < 50)")
        );
        assert_eq!(
            read(Some(vec![0, 1]), Some([75, 120])),
            format!("{base} WHERE (_metadata.row_index >= 75 AND _metadata.row_index < 120)")
        );
        assert_eq!(
            read(None, Some([0, 10])),
            format!("{base} WHERE (_metadata.row_index >= 0 AND _metadata.row_index < 10)")
        );
    }

    #[test]
    fn kinds_follow_the_engine() {
        assert_eq!(kind("a", &DataType::UInt32).unwrap(), Kind::Integer);
        assert_eq!(kind("a", &DataType::UInt64).unwrap(), Kind::Float);
        assert_eq!(
            kind("t", &DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap(),
            Kind::Temporal {
                expr: "unix_millis(CAST(`t` AS TIMESTAMP))".into()
            }
        );
        let e = kind("t", &DataType::Timestamp(TimeUnit::Nanosecond, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `t`") && e.contains("--columns"), "{e}");
    }
}
