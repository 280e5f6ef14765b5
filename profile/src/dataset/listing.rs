//! Turning a location into the list of data files it holds and their shared schema, from
//! metadata only: object listings, file sizes, Parquet footers, CSV/JSON heads.

use super::compression::{Compression, decompress_head};
use super::csv::{CsvDialect, CsvOptions, Encoding, decode_head, sniff};
use super::parquet_io::ObjectReader;
use super::{Format, Location, StorageOptions};
use crate::{Error, Result};
use arrow::datatypes::{Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

/// How many bytes of a CSV/NDJSON file are read to infer its schema.
const INFER_BYTES: u64 = 1 << 20;
/// Files whose footers are read at once while planning.
const METADATA_CONCURRENCY: usize = 16;

/// One row group of a Parquet file, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowGroupMeta {
    pub rows: u64,
    /// Compressed bytes per column of the dataset schema (0 for a column not in the file).
    pub column_bytes: Vec<u64>,
}

/// A data file of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Full URI, for messages and for the plan.
    pub uri: String,
    /// Path inside the store.
    pub path: String,
    pub size: u64,
    /// Row count when the format records it (Parquet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Row groups (Parquet only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_groups: Vec<RowGroupMeta>,
    /// Quoted CSV: positions where records start, found by a scan when planning (see
    /// `split.rs`), where the file may be cut into byte ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_starts: Vec<u64>,
    /// CSV with a header: where the records after it start (no byte range starts before);
    /// `None` for other files, or when the header was not found in the head (no ranges then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_start: Option<u64>,
    /// The object's identity as the store reported it when the dataset was listed, so that a
    /// cached partial of this file is reused only while the file is the one it was made of
    /// (see `cache.rs`): the ETag (a content hash on S3, inode, mtime and size on a local disk)
    /// and the version, when the store has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Last modification, in nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<i64>,
    /// CSV and NDJSON: how the file is compressed (by its extension, or by its first bytes
    /// when its head is read), `None`: not compressed. A compressed file is read whole, by one
    /// task, decompressed as it streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

impl DataFile {
    /// A file of `object` with no format metadata yet.
    fn of_object(location: &Location, object: &ObjectMeta) -> DataFile {
        DataFile {
            uri: location.uri_of(&object.location),
            path: object.location.to_string(),
            size: object.size,
            rows: None,
            row_groups: Vec::new(),
            record_starts: Vec::new(),
            data_start: None,
            e_tag: object.e_tag.clone(),
            version: object.version.clone(),
            modified_ns: object.last_modified.timestamp_nanos_opt(),
            compression: Compression::from_path(object.location.as_ref()),
        }
    }
}

/// A dataset as discovered: its files, their common schema and the store they live in.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub location: Location,
    pub options: StorageOptions,
    pub store: Arc<dyn ObjectStore>,
    pub format: Format,
    pub files: Vec<DataFile>,
    pub schema: SchemaRef,
    /// How the CSV files are read (CSV only): sniffed from the first file's head, with what the
    /// user said.
    pub csv: Option<CsvDialect>,
}

impl Dataset {
    /// Total rows, when every file records its row count.
    pub fn total_rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Lists the files of `uri` and reads their metadata; CSV dialects are sniffed.
pub async fn discover(
    uri: &str,
    format: Option<Format>,
    options: &StorageOptions,
) -> Result<Dataset> {
    discover_with(uri, format, options, &CsvOptions::default()).await
}

/// [`discover`], with what the user says of a CSV dataset's dialect (the rest is sniffed).
pub async fn discover_with(
    uri: &str,
    format: Option<Format>,
    options: &StorageOptions,
    csv: &CsvOptions,
) -> Result<Dataset> {
    let location = Location::parse(uri)?;
    let store = location.store(options)?;
    let objects = list_objects(&location, store.as_ref(), format).await?;
    let format = match format {
        Some(f) => f,
        None => detect_format(&location, &objects)?,
    };
    let objects: Vec<ObjectMeta> = objects
        .into_iter()
        .filter(|o| explicit_or_matching(format, o, &location))
        .collect();
    if objects.is_empty() {
        return Err(Error::NoFiles {
            uri: location.uri.clone(),
            looked_for: format!("{format} files"),
        });
    }
    if matches!(format, Format::Parquet | Format::Ipc)
        && let Some(packed) = objects
            .iter()
            .find(|o| Compression::from_path(o.location.as_ref()).is_some())
    {
        return Err(Error::invalid(
            "dataset",
            format!(
                "{} is a compressed {format} file, which cannot be read: {format} compresses \
                 its own pages; decompress the file first",
                location.uri_of(&packed.location)
            ),
        ));
    }
    if let Some(empty) = objects.iter().find(|o| o.size == 0) {
        return Err(Error::EmptyFile {
            file: location.uri_of(&empty.location),
        });
    }
    let (files, schema, dialect) = match format {
        Format::Parquet => with_no_dialect(parquet_files(&location, &store, &objects).await?),
        Format::Csv => csv_files(&location, &store, &objects, csv).await?,
        Format::Ndjson => with_no_dialect(ndjson_files(&location, &store, &objects).await?),
        Format::Ipc => with_no_dialect(ipc_files(&location, &store, &objects).await?),
    };
    Ok(Dataset {
        location,
        options: options.clone(),
        store,
        format,
        files,
        schema,
        csv: dialect,
    })
}

fn with_no_dialect(
    (files, schema): (Vec<DataFile>, SchemaRef),
) -> (Vec<DataFile>, SchemaRef, Option<CsvDialect>) {
    (files, schema, None)
}

/// The objects a location names: the one file it points at, or every file under its prefix
/// (matching its glob), sorted by path so that plans are deterministic.
async fn list_objects(
    location: &Location,
    store: &dyn ObjectStore,
    format: Option<Format>,
) -> Result<Vec<ObjectMeta>> {
    if location.glob.is_none() {
        match store.head(&location.path).await {
            Ok(meta) => return Ok(vec![meta]),
            Err(object_store::Error::NotFound { .. }) => {}
            // A directory on the local file system is not an object: list it below.
            Err(_) if location.is_local() => {}
            Err(e) => return Err(Error::from_store(&location.uri, e)),
        }
    }
    let prefix = (!location.path.as_ref().is_empty()).then_some(&location.path);
    let mut objects: Vec<ObjectMeta> = match store.list(prefix).try_collect().await {
        Ok(list) => list,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(Error::from_store(&location.uri, e)),
    };
    objects.retain(|o| !is_hidden(&o.location, &location.path));
    if let Some(glob) = &location.glob {
        objects.retain(|o| glob.is_match(o.location.as_ref()));
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    if objects.is_empty() {
        return Err(match (&location.glob, format) {
            (Some(_), _) => Error::NoFiles {
                uri: location.uri.clone(),
                looked_for: "files matching the glob".into(),
            },
            _ => Error::NotFound {
                uri: location.uri.clone(),
            },
        });
    }
    Ok(objects)
}

/// Spark's `_SUCCESS`, `.crc` side files and hidden directories are not data.
fn is_hidden(path: &Path, base: &Path) -> bool {
    let base_parts = base.parts().count();
    path.parts()
        .skip(base_parts)
        .any(|p| p.as_ref().starts_with('_') || p.as_ref().starts_with('.'))
}

fn explicit_or_matching(format: Format, object: &ObjectMeta, location: &Location) -> bool {
    // A URI naming one file is read as the format asked for, whatever its extension.
    object.location == location.path || Format::from_path(object.location.as_ref()) == Some(format)
}

fn detect_format(location: &Location, objects: &[ObjectMeta]) -> Result<Format> {
    let mut found: Vec<Format> = objects
        .iter()
        .filter_map(|o| Format::from_path(o.location.as_ref()))
        .collect();
    found.sort_by_key(|f| f.name());
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::NoFiles {
            uri: location.uri.clone(),
            looked_for: format!(
                "files with a known extension ({}); give --format to read others",
                Format::known_extensions()
            ),
        }),
        many => Err(Error::invalid(
            "dataset",
            format!(
                "{} holds files of several formats ({}); give --format or a glob",
                location.uri,
                many.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

async fn parquet_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    objects: &[ObjectMeta],
) -> Result<(Vec<DataFile>, SchemaRef)> {
    let metas: Vec<(String, ObjectMeta, ArrowReaderMetadata)> =
        futures::stream::iter(objects.iter().cloned())
            .map(|object| {
                let store = Arc::clone(store);
                let uri = location.uri_of(&object.location);
                async move {
                    let mut reader = ObjectReader::new(store, object.location.clone(), object.size);
                    let meta =
                        ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                            .await
                            .map_err(|e| parquet_error(&uri, e))?;
                    Ok::<_, Error>((uri, object, meta))
                }
            })
            .buffered(METADATA_CONCURRENCY)
            .try_collect()
            .await?;
    let (first_uri, _, first) = &metas[0];
    let schema = plain_schema(first.schema());
    let mut files = Vec::with_capacity(metas.len());
    for (uri, object, meta) in &metas {
        check_same_schema(&schema, first_uri, &plain_schema(meta.schema()), uri)?;
        let row_groups = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| {
                let mut column_bytes = vec![0u64; schema.fields().len()];
                for chunk in rg.columns() {
                    let root = chunk.column_path().parts().first().map(String::as_str);
                    if let Some(idx) = root.and_then(|r| schema.index_of(r).ok()) {
                        column_bytes[idx] += chunk.compressed_size().max(0) as u64;
                    }
                }
                RowGroupMeta {
                    rows: rg.num_rows().max(0) as u64,
                    column_bytes,
                }
            })
            .collect::<Vec<_>>();
        files.push(DataFile {
            rows: Some(row_groups.iter().map(|r| r.rows).sum()),
            row_groups,
            ..DataFile::of_object(location, object)
        });
    }
    Ok((files, schema))
}

pub(crate) fn parquet_error(uri: &str, e: parquet::errors::ParquetError) -> Error {
    use parquet::errors::ParquetError as P;
    match e {
        P::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store_err) => Error::from_store(uri, *store_err),
            Err(other) => match other.downcast::<super::parquet_io::FooterTooLarge>() {
                Ok(footer) => Error::TooLarge {
                    what: uri.to_string(),
                    detail: format!("{footer}, too large to read (a corrupt or hostile file?)"),
                    limit: crate::limits::bytes_in_words(footer.max),
                },
                Err(other) => Error::Storage {
                    uri: uri.to_string(),
                    detail: other.to_string(),
                },
            },
        },
        other => Error::Corrupt {
            file: uri.to_string(),
            format: "Parquet",
            detail: other.to_string(),
        },
    }
}

/// The schema without field metadata and nullability, which legitimately differ between
/// files written by different tools.
fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn check_same_schema(expected: &Schema, first: &str, actual: &Schema, file: &str) -> Result<()> {
    for field in expected.fields() {
        match actual.field_with_name(field.name()) {
            Ok(other) if other.data_type() == field.data_type() => {}
            Ok(other) => {
                return Err(Error::SchemaMismatch {
                    column: field.name().clone(),
                    detail: format!(
                        "is {} in {first} but {} in {file}",
                        field.data_type(),
                        other.data_type()
                    ),
                });
            }
            Err(_) => {
                return Err(Error::SchemaMismatch {
                    column: field.name().clone(),
                    detail: format!("is in {first} but not in {file}"),
                });
            }
        }
    }
    if let Some(extra) = actual
        .fields()
        .iter()
        .find(|f| expected.field_with_name(f.name()).is_err())
    {
        return Err(Error::SchemaMismatch {
            column: extra.name().clone(),
            detail: format!("is in {file} but not in {first}"),
        });
    }
    Ok(())
}

/// The head of a text file, decompressed when the file is compressed.
struct Head {
    /// At most `INFER_BYTES` of the file's (decompressed) bytes.
    bytes: bytes::Bytes,
    /// Whether that is the whole file.
    whole: bool,
    compression: Option<Compression>,
}

/// Reads the head of `object`. Its compression is what its name says or, for a name that says
/// none, what its first bytes show.
async fn head_bytes(store: &dyn ObjectStore, object: &ObjectMeta, uri: &str) -> Result<Head> {
    let end = object.size.min(INFER_BYTES);
    let bytes = store
        .get_range(&object.location, 0..end)
        .await
        .map_err(|e| Error::from_store(uri, e))?;
    let whole = object.size <= INFER_BYTES;
    let compression =
        Compression::from_path(object.location.as_ref()).or_else(|| Compression::sniff(&bytes));
    let Some(c) = compression else {
        return Ok(Head {
            bytes,
            whole,
            compression,
        });
    };
    let (plain, whole) = decompress_head(&bytes, whole, c, INFER_BYTES as usize, uri)?;
    Ok(Head {
        bytes: plain.into(),
        whole,
        compression,
    })
}

/// The first `INFER_BYTES` of a text file, cut after its last complete line.
fn whole_lines(bytes: &[u8], whole_file: bool) -> &[u8] {
    if whole_file {
        return bytes;
    }
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => bytes,
    }
}

fn plain_files(location: &Location, objects: &[ObjectMeta]) -> Vec<DataFile> {
    objects
        .iter()
        .map(|o| DataFile::of_object(location, o))
        .collect()
}

/// The decoded head of a CSV file, cut after its last whole line.
async fn csv_head(
    store: &dyn ObjectStore,
    object: &ObjectMeta,
    uri: &str,
    encoding: Option<Encoding>,
) -> Result<(String, Encoding, Head)> {
    let head = head_bytes(store, object, uri).await?;
    let (text, encoding) = decode_head(&head.bytes, head.whole, encoding, uri)?;
    Ok((text, encoding, head))
}

/// CSV files: the dialect sniffed from the first file's head (what the user said stands), the
/// schema inferred with it; every other file must have the same header, read alike.
async fn csv_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    objects: &[ObjectMeta],
    asked: &CsvOptions,
) -> Result<(Vec<DataFile>, SchemaRef, Option<CsvDialect>)> {
    let first = &objects[0];
    let first_uri = location.uri_of(&first.location);
    let (text, encoding, first_head) =
        csv_head(store.as_ref(), first, &first_uri, asked.encoding).await?;
    let dialect = sniff(&text, first_head.whole, encoding, asked);
    let mut starts = vec![data_start_of(&first_head, first, &dialect)];
    let mut compressions = vec![first_head.compression];
    tracing::debug!(file = %first_uri, ?dialect, "CSV dialect");
    let schema = infer_csv(text.as_bytes(), &dialect, &first_uri)?;
    // Types are checked as rows are parsed; names here.
    for object in &objects[1..] {
        let uri = location.uri_of(&object.location);
        let (text, _, head) =
            csv_head(store.as_ref(), object, &uri, Some(dialect.encoding)).await?;
        starts.push(data_start_of(&head, object, &dialect));
        compressions.push(head.compression);
        let other = infer_csv(text.as_bytes(), &dialect, &uri)?;
        let names = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        };
        if names(&schema) != names(&other) {
            let (a, b) = (names(&schema), names(&other));
            let column = a
                .iter()
                .zip(b.iter())
                .find(|(x, y)| x != y)
                .map(|(x, _)| x.clone())
                .or_else(|| a.get(b.len()).cloned())
                .or_else(|| b.get(a.len()).cloned())
                .unwrap_or_default();
            return Err(Error::SchemaMismatch {
                column,
                detail: format!(
                    "differs between the headers of {first_uri} ({}) and {uri} ({})",
                    a.join(","),
                    b.join(",")
                ),
            });
        }
    }
    let mut files = plain_files(location, objects);
    for ((f, start), compression) in files.iter_mut().zip(starts).zip(compressions) {
        f.data_start = start;
        f.compression = compression;
    }
    Ok((files, schema, Some(dialect)))
}

/// Where a CSV file's records start after its header (the file's size when the head does not
/// show it: the file is then read whole); `None` without a header, and for a compressed file
/// (which is read whole: its byte positions are not the decompressed ones).
fn data_start_of(head: &Head, object: &ObjectMeta, dialect: &CsvDialect) -> Option<u64> {
    if head.compression.is_some() {
        return None;
    }
    dialect
        .header
        .then(|| super::split::data_start(&head.bytes, dialect).unwrap_or(object.size))
}

async fn ndjson_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    objects: &[ObjectMeta],
) -> Result<(Vec<DataFile>, SchemaRef)> {
    let first = &objects[0];
    let first_uri = location.uri_of(&first.location);
    let head = head_bytes(store.as_ref(), first, &first_uri).await?;
    let text = &head.bytes[Encoding::Utf8.bom_len(&head.bytes)..];
    let schema = infer_ndjson(whole_lines(text, head.whole), &first_uri)?;
    let mut files = plain_files(location, objects);
    files[0].compression = head.compression;
    Ok((files, schema))
}

fn infer_csv(lines: &[u8], dialect: &CsvDialect, uri: &str) -> Result<SchemaRef> {
    let (schema, _) = dialect
        .arrow_format()?
        .infer_schema(Cursor::new(lines), Some(10_000))
        .map_err(|e| Error::BadRecord {
            file: uri.to_string(),
            detail: format!("cannot infer a CSV schema: {e}"),
        })?;
    if schema.fields().is_empty() {
        return Err(Error::BadRecord {
            file: uri.to_string(),
            detail: "CSV file has no header".into(),
        });
    }
    Ok(plain_schema(&schema))
}

fn infer_ndjson(lines: &[u8], uri: &str) -> Result<SchemaRef> {
    let (schema, _) = arrow::json::reader::infer_json_schema(Cursor::new(lines), Some(10_000))
        .map_err(|e| Error::BadRecord {
            file: uri.to_string(),
            detail: format!("cannot infer a JSON schema: {e}"),
        })?;
    if schema.fields().is_empty() {
        return Err(Error::BadRecord {
            file: uri.to_string(),
            detail: "no JSON objects with fields".into(),
        });
    }
    Ok(plain_schema(&schema))
}

async fn ipc_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    objects: &[ObjectMeta],
) -> Result<(Vec<DataFile>, SchemaRef)> {
    let mut schema: Option<(SchemaRef, String)> = None;
    let mut files = Vec::with_capacity(objects.len());
    for object in objects {
        let uri = location.uri_of(&object.location);
        let this = ipc_schema(store.as_ref(), object, &uri).await?;
        match &schema {
            None => schema = Some((this, uri.clone())),
            Some((s, first)) => check_same_schema(s, first, &this, &uri)?,
        }
        files.push(DataFile::of_object(location, object));
    }
    let (schema, _) = schema.expect("at least one file");
    Ok((files, schema))
}

/// An IPC file ends with its footer (which holds the schema), the footer's length and the
/// `ARROW1` magic.
async fn ipc_schema(store: &dyn ObjectStore, object: &ObjectMeta, uri: &str) -> Result<SchemaRef> {
    let corrupt = |detail: String| Error::Corrupt {
        file: uri.to_string(),
        format: "Arrow IPC",
        detail,
    };
    if object.size < 18 {
        return Err(corrupt("too short for an Arrow IPC file".into()));
    }
    let fetch = |range: std::ops::Range<u64>| async move {
        store
            .get_range(&object.location, range)
            .await
            .map_err(|e| Error::from_store(uri, e))
    };
    let tail = fetch(object.size - 10..object.size).await?;
    let tail: [u8; 10] = tail[..]
        .try_into()
        .map_err(|_| corrupt("short read".into()))?;
    let len =
        arrow::ipc::reader::read_footer_length(tail).map_err(|e| corrupt(e.to_string()))? as u64;
    if len + 10 > object.size {
        return Err(corrupt(format!(
            "footer of {len} bytes is larger than the file"
        )));
    }
    let max = crate::limits::MAX_PARQUET_FOOTER_BYTES;
    if len > max {
        return Err(Error::TooLarge {
            what: uri.to_string(),
            detail: format!("the Arrow IPC footer declares {len} bytes, too large to read"),
            limit: crate::limits::bytes_in_words(max),
        });
    }
    let footer_bytes = fetch(object.size - 10 - len..object.size - 10).await?;
    let footer = arrow::ipc::root_as_footer(&footer_bytes).map_err(|e| corrupt(e.to_string()))?;
    let fb = footer
        .schema()
        .ok_or_else(|| corrupt("footer has no schema".into()))?;
    let schema = arrow::ipc::convert::try_fb_to_schema(fb).map_err(|e| corrupt(e.to_string()))?;
    Ok(plain_schema(&schema))
}
