//! Streaming record batches out of one file: only the row groups and columns a task needs, one
//! batch at a time, so that a task's memory is bounded by a batch and never by its partition.

use super::Format;
use super::compression::{Compression, decompress};
use super::csv::{CsvDialect, ENCODING_HINT, Encoding, TextPosition, Transcoder};
use super::listing::parquet_error;
use super::parquet_io::ObjectReader;
use crate::{Error, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::{Buf, Bytes};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::PageIndexPolicy;
use std::io::Cursor;
use std::sync::Arc;

/// A stream of record batches holding only the projected columns.
pub type BatchStream = BoxStream<'static, Result<RecordBatch>>;

/// The part of one file a task reads.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub uri: String,
    pub path: String,
    pub size: u64,
    /// Row groups to read (Parquet); `None` reads the whole file.
    pub row_groups: Option<Vec<usize>>,
    /// CSV and NDJSON: the records that start in these bytes `[start, end)`; `None`: the whole
    /// file.
    pub bytes: Option<(u64, u64)>,
    /// Parquet: only the rows `[start, end)` of the file (counted from its first row) of the
    /// row groups read; `None`: all their rows.
    pub rows: Option<(u64, u64)>,
    /// CSV and NDJSON: the file's compression (it is then read whole, decompressed).
    pub compression: Option<Compression>,
}

/// Where the rows a stream yields sit in their file: runs of consecutive rows, as (first row,
/// rows), in the order the stream yields them. Row sampling keys each row by its position in the
/// file, so that a row is kept or not whichever task reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpans {
    spans: Vec<(u64, u64)>,
    span: usize,
    offset: u64,
}

impl RowSpans {
    /// A stream of the whole file from its first row.
    pub fn whole_file() -> RowSpans {
        RowSpans::new(vec![(0, u64::MAX)])
    }

    /// Runs of (first row, rows), in stream order.
    pub fn new(spans: Vec<(u64, u64)>) -> RowSpans {
        RowSpans {
            spans,
            span: 0,
            offset: 0,
        }
    }

    /// The positions of the next `rows` rows of the stream, as runs of (first position, rows),
    /// and advances past them; `None` when the spans hold fewer rows.
    pub fn next_runs(&mut self, rows: usize) -> Option<Vec<(u64, usize)>> {
        let mut runs = Vec::with_capacity(1);
        let mut left = rows as u64;
        while left > 0 {
            let &(first, len) = self.spans.get(self.span)?;
            let available = len - self.offset;
            if available == 0 {
                self.span += 1;
                self.offset = 0;
                continue;
            }
            let take = available.min(left);
            runs.push((first + self.offset, take as usize));
            self.offset += take;
            left -= take;
        }
        Some(runs)
    }
}

/// The record batches of a slice, and where their rows sit in the file.
pub struct SliceStream {
    pub batches: BatchStream,
    pub rows: RowSpans,
}

impl std::fmt::Debug for SliceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceStream")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// How a slice's file is decoded: its format, the dataset schema, and for CSV its dialect.
#[derive(Debug, Clone, Copy)]
pub struct Decoding<'a> {
    pub format: Format,
    pub schema: &'a SchemaRef,
    /// CSV: the plan's dialect (`None`: the default, comma-separated with a header, UTF-8).
    pub csv: Option<&'a CsvDialect>,
    /// CSV and NDJSON: the longest record, in bytes (the plan's `max_record_bytes`).
    pub max_record_bytes: u64,
}

/// Opens `slice` and streams the columns `columns` (names of the dataset schema).
pub async fn open_slice(
    store: Arc<dyn ObjectStore>,
    decoding: Decoding<'_>,
    slice: &FileSlice,
    columns: &[String],
    batch_rows: usize,
) -> Result<SliceStream> {
    let Decoding {
        format,
        schema,
        csv,
        max_record_bytes,
    } = decoding;
    let schema = schema.clone();
    let projection = columns
        .iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| Error::invalid("column", format!("`{c}` is not in {}", slice.uri)))
        })
        .collect::<Result<Vec<_>>>()?;
    let path = Path::from(slice.path.as_str());
    let whole = |batches| SliceStream {
        batches,
        rows: RowSpans::whole_file(),
    };
    match format {
        Format::Parquet => parquet_stream(store, path, slice, columns, batch_rows).await,
        Format::Csv | Format::Ndjson => {
            let text = TextRead {
                format,
                schema,
                csv,
                projection,
                batch_rows,
                max_record_bytes,
            };
            text_stream(store, path, slice, text).await.map(whole)
        }
        Format::Ipc => ipc_stream(store, path, slice, projection).await.map(whole),
    }
}

async fn parquet_stream(
    store: Arc<dyn ObjectStore>,
    path: Path,
    slice: &FileSlice,
    columns: &[String],
    batch_rows: usize,
) -> Result<SliceStream> {
    let uri = slice.uri.clone();
    let reader = ObjectReader::new(store, path, slice.size);
    // A row range reads the offset index (where each page starts and its first row), when the
    // file has one, so that the pages holding none of its rows are neither fetched nor decoded.
    // Without a row range every page is read anyway: the index would be an extra fetch.
    let options = match slice.rows {
        Some(_) => ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
        None => ArrowReaderOptions::new(),
    };
    let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
        .await
        .map_err(|e| parquet_error(&uri, e))?;
    // Project by root column name: the file's own column order may differ from the dataset's.
    let arrow_schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(columns.len());
    for c in columns {
        let idx = arrow_schema
            .index_of(c)
            .map_err(|_| Error::SchemaMismatch {
                column: c.clone(),
                detail: format!("is not in {uri}"),
            })?;
        roots.push(idx);
    }
    // Where each row group starts in the file, from the footer: a stream of some row groups
    // yields their rows one group after the other, in the order asked for.
    let groups_rows: Vec<u64> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as u64)
        .collect();
    let starts: Vec<u64> = groups_rows
        .iter()
        .scan(0u64, |next, rows| {
            let start = *next;
            *next += rows;
            Some(start)
        })
        .collect();
    let all: Vec<usize>;
    let groups = match &slice.row_groups {
        Some(groups) => groups.as_slice(),
        None => {
            all = (0..groups_rows.len()).collect();
            &all
        }
    };
    let spans = groups
        .iter()
        .map(|&g| {
            starts
                .get(g)
                .zip(groups_rows.get(g))
                .map(|(&start, &rows)| (start, rows))
                .ok_or_else(|| Error::Changed {
                    file: uri.clone(),
                    detail: format!(
                        "the plan reads row group {g}, the file has {} row groups",
                        groups_rows.len()
                    ),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let (spans, selection) = match slice.rows {
        None => (spans, None),
        Some(range) => {
            let total: u64 = groups_rows.iter().sum();
            if range.0 > range.1 || range.1 > total {
                return Err(Error::Changed {
                    file: uri.clone(),
                    detail: format!(
                        "the plan reads rows {}..{}, the file has {total} rows",
                        range.0, range.1
                    ),
                });
            }
            let (spans, selection) = select_rows(&spans, range);
            (spans, Some(selection))
        }
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask).with_batch_size(batch_rows);
    if let Some(groups) = &slice.row_groups {
        builder = builder.with_row_groups(groups.clone());
    }
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    let stream = builder.build().map_err(|e| parquet_error(&uri, e))?;
    let columns = columns.to_vec();
    let batches = stream
        .map(move |r| {
            let batch = r.map_err(|e| parquet_error(&uri, e))?;
            // Present columns in the order asked for.
            let schema = batch.schema();
            let idx: Vec<usize> = columns
                .iter()
                .map(|c| schema.index_of(c).expect("projected"))
                .collect();
            batch.project(&idx).map_err(|e| Error::Corrupt {
                file: uri.clone(),
                format: "Parquet",
                detail: e.to_string(),
            })
        })
        .boxed();
    Ok(SliceStream {
        batches,
        rows: RowSpans::new(spans),
    })
}

/// The rows `[start, end)` of a file, out of the row groups read, whose rows in the file are
/// `spans` (first row, rows) in the order they are read: the spans of the rows kept, and the
/// selection of them (relative to the rows of the groups read, one after the other).
fn select_rows(spans: &[(u64, u64)], (start, end): (u64, u64)) -> (Vec<(u64, u64)>, RowSelection) {
    let mut kept = Vec::new();
    let mut selectors = Vec::new();
    for &(first, rows) in spans {
        let lo = start.clamp(first, first + rows);
        let hi = end.clamp(lo, first + rows);
        selectors.push(RowSelector::skip((lo - first) as usize));
        if hi > lo {
            selectors.push(RowSelector::select((hi - lo) as usize));
            kept.push((lo, hi - lo));
        }
        selectors.push(RowSelector::skip((first + rows - hi) as usize));
    }
    // Empty skips mean nothing; the selection merges neighbouring selectors of a kind.
    selectors.retain(|s| s.row_count > 0);
    (kept, RowSelection::from(selectors))
}

/// How a text file is decoded.
struct TextRead<'a> {
    format: Format,
    schema: SchemaRef,
    csv: Option<&'a CsvDialect>,
    projection: Vec<usize>,
    batch_rows: usize,
    max_record_bytes: u64,
}

/// Most bytes handed to a text decoder at once: with the record length counted between calls,
/// a record runs at most this far past the limit before it is refused.
const DECODE_STEP: usize = 1 << 20;

/// The length of the record a text decoder is in the middle of. The decoders buffer a record
/// until it ends, so without a limit a file with no line break (or a CSV quote never closed)
/// would be buffered whole.
struct RecordLength {
    max: u64,
    /// Bytes decoded since a record last ended (counted per call to the decoder).
    open: u64,
    /// Position in the decoded text (the file's bytes for UTF-8) of the decoder's input, and
    /// where the current record started (to within a call).
    pos: u64,
    start: u64,
    /// Records ended before the current one, and the decoder's count when last looked at.
    records: u64,
    seen: usize,
}

impl RecordLength {
    /// `ended`: the decoder's count before any input.
    fn new(max: u64, from: u64, ended: usize) -> RecordLength {
        RecordLength {
            max,
            open: 0,
            pos: from,
            start: from,
            records: 0,
            seen: ended,
        }
    }

    /// Notes that the decoder took `consumed` bytes and now holds `ended` ended records; an
    /// error when the open record is over the limit.
    fn decoded(&mut self, consumed: usize, ended: usize, what: &Labels<'_>) -> Result<()> {
        self.pos += consumed as u64;
        if ended > self.seen {
            self.records += (ended - self.seen) as u64;
            self.open = 0;
            self.start = self.pos;
        } else {
            self.open += consumed as u64;
        }
        self.seen = ended;
        if self.open <= self.max {
            return Ok(());
        }
        let range = if what.from > 0 {
            format!(" of the byte range from {}", what.from)
        } else {
            String::new()
        };
        Err(Error::TooLarge {
            what: what.uri.to_string(),
            detail: format!(
                "{} record {}{range}, from about byte {}, runs on for more than {} bytes without \
                 ending (an unterminated quote, or no line breaks?)",
                what.label,
                self.records + 1,
                self.start,
                self.open
            ),
            limit: format!(
                "{} (max_record_bytes; th --max-record-bytes)",
                crate::limits::bytes_in_words(self.max)
            ),
        })
    }

    /// The decoder was flushed: its count starts again.
    fn flushed(&mut self, ended: usize) {
        self.seen = ended;
    }
}

/// What a record-length error names.
struct Labels<'a> {
    uri: &'a str,
    label: &'static str,
    from: u64,
}

/// CSV and NDJSON: the object's bytes are streamed through arrow's push decoders, so a large
/// file is never held in memory; CSV in another encoding than UTF-8 is transcoded on the way.
async fn text_stream(
    store: Arc<dyn ObjectStore>,
    path: Path,
    slice: &FileSlice,
    read: TextRead<'_>,
) -> Result<BatchStream> {
    let uri = slice.uri.clone();
    let TextRead {
        format,
        schema,
        csv,
        projection,
        batch_rows,
        max_record_bytes,
    } = read;
    if slice.compression.is_some() && slice.bytes.is_some() {
        return Err(Error::invalid(
            "plan",
            format!("{uri} is compressed: it cannot be read in byte ranges"),
        ));
    }
    // A range is read from the byte before its start (to tell whether a record starts there)
    // to the end of the file, and dropped once its last record is complete.
    let cut = slice.bytes.map(|(start, end)| RangeCut::new(start, end));
    let from = cut.as_ref().map_or(0, |c| c.pos);
    let options = object_store::GetOptions {
        range: (from > 0).then_some(object_store::GetRange::Offset(from)),
        ..Default::default()
    };
    let body = {
        let uri = uri.clone();
        store
            .get_opts(&path, options)
            .await
            .map_err(|e| Error::from_store(&uri, e))?
            .into_stream()
            .map_err(move |e| Error::from_store(&uri, e))
            .boxed()
    };
    let body = match slice.compression {
        Some(c) => decompress(body, c, uri.clone()),
        None => body,
    };
    let default_dialect = CsvDialect::default();
    let mut dialect = csv.unwrap_or(&default_dialect).clone();
    // Only the range at the start of the file holds the header.
    if from > 0 {
        dialect.header = false;
    }
    let dialect = &dialect;
    let encoding = match format {
        Format::Csv => dialect.encoding,
        _ => Encoding::Utf8,
    };
    let decoder: Box<dyn TextDecoder> = match format {
        Format::Csv => Box::new(
            arrow::csv::ReaderBuilder::new(schema)
                .with_format(dialect.arrow_format()?)
                .with_batch_size(batch_rows)
                .with_projection(projection)
                .build_decoder(),
        ),
        _ => {
            let projected = Arc::new(
                schema
                    .project(&projection)
                    .map_err(|e| Error::invalid("columns", format!("{uri}: {e}")))?,
            );
            Box::new(
                arrow::json::ReaderBuilder::new(projected)
                    .with_batch_size(batch_rows)
                    .build_decoder()
                    .map_err(|e| Error::invalid("JSON reader", e.to_string()))?,
            )
        }
    };
    let label = if format == Format::Csv { "CSV" } else { "JSON" };
    let bad = move |uri: &str, e: arrow::error::ArrowError| bad_text(uri, label, encoding, e);
    let mut source = TextSource::new(body, encoding, uri.clone());
    source.at_start = from == 0;
    source.cut = cut;
    let length = RecordLength::new(max_record_bytes, from, decoder.ended_records());
    let step = DECODE_STEP.min(usize::try_from(max_record_bytes).unwrap_or(usize::MAX));
    let stream = futures::stream::try_unfold(
        (source, Bytes::new(), false, decoder, length),
        move |(mut source, mut buffered, mut done, mut decoder, mut length)| {
            let uri = uri.clone();
            async move {
                let labels = Labels {
                    uri: &uri,
                    label,
                    from,
                };
                loop {
                    if buffered.is_empty() && !done {
                        match source.next().await? {
                            Some(chunk) => {
                                buffered = chunk;
                                continue;
                            }
                            None => done = true,
                        }
                    }
                    // An empty buffer after the end of the body tells the decoder the input ended.
                    let input = &buffered[..buffered.len().min(step)];
                    let consumed = decoder.decode(input).map_err(|e| bad(&uri, e))?;
                    buffered.advance(consumed);
                    length.decoded(consumed, decoder.ended_records(), &labels)?;
                    if consumed == 0 {
                        let flushed = decoder.flush().map_err(|e| bad(&uri, e))?;
                        length.flushed(decoder.ended_records());
                        match flushed {
                            Some(b) => {
                                return Ok(Some((b, (source, buffered, done, decoder, length))));
                            }
                            None if done && buffered.is_empty() => return Ok(None),
                            None if buffered.is_empty() => {}
                            None => {
                                return Err(Error::BadRecord {
                                    file: uri.clone(),
                                    detail: format!("{label}: the decoder made no progress"),
                                });
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(stream.boxed())
}

/// A decoding error of arrow's, in words that say where and what to do.
fn bad_text(uri: &str, label: &str, encoding: Encoding, e: arrow::error::ArrowError) -> Error {
    let text = e.to_string();
    // Arrow: "Encountered invalid UTF-8 data for line {line} and field {field}".
    if let Some(rest) = text.split("invalid UTF-8 data for line ").nth(1)
        && let Some((line, field)) = rest.split_once(" and field ")
    {
        return Error::BadRecord {
            file: uri.to_string(),
            detail: format!(
                "{label} record {line}, field {}: not valid {encoding}; {ENCODING_HINT}",
                field.trim()
            ),
        };
    }
    Error::BadRecord {
        file: uri.to_string(),
        detail: format!("{label}: {text}"),
    }
}

/// The records of a byte range `[start, end)` of a text file, out of the bytes from `start - 1`
/// on: a record starts at 0 or after a `\n`, and belongs to the range its first byte is in.
/// So a range skips through the first `\n` at or after `start - 1`, and ends with the first `\n`
/// at or after `end - 1`, which finishes its last record. Every range applies the same rule, so
/// the ranges of a file share out its records exactly, whatever the records' lengths (a record
/// longer than a range leaves that range empty).
#[derive(Debug, Clone)]
struct RangeCut {
    /// Position in the file of the next byte to come.
    pos: u64,
    end: u64,
    skipping: bool,
    done: bool,
}

impl RangeCut {
    fn new(start: u64, end: u64) -> RangeCut {
        RangeCut {
            pos: start.saturating_sub(1),
            end,
            skipping: start > 0,
            done: start >= end,
        }
    }

    /// The part of `chunk` (the next bytes of the file) that belongs to the range.
    fn apply(&mut self, mut chunk: Bytes) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        if self.skipping {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    self.pos += i as u64 + 1;
                    chunk.advance(i + 1);
                }
                None => {
                    self.pos += chunk.len() as u64;
                    return Bytes::new();
                }
            }
            if self.pos >= self.end {
                self.done = true;
                return Bytes::new();
            }
        }
        // The last record is the one holding byte end - 1: it ends at the first \n from there.
        let from = (self.end - 1).saturating_sub(self.pos);
        if (from as usize) < chunk.len()
            && let Some(i) = chunk[from as usize..].iter().position(|&b| b == b'\n')
        {
            self.done = true;
            self.pos += (from as usize + i + 1) as u64;
            return chunk.slice(..from as usize + i + 1);
        }
        self.pos += chunk.len() as u64;
        chunk
    }
}

/// The body of a text file as UTF-8 chunks: a UTF-8 byte-order mark skipped, other encodings
/// transcoded. UTF-8 chunks pass through as they are (arrow's decoders validate them).
struct TextSource {
    body: BoxStream<'static, Result<Bytes>>,
    transcoder: Option<Transcoder>,
    encoding: Encoding,
    uri: String,
    /// Whether the start of the file (where a byte-order mark may be) is still to come.
    at_start: bool,
    /// The records of a byte range, when the slice is one.
    cut: Option<RangeCut>,
    ended: bool,
    position: TextPosition,
}

impl TextSource {
    fn new(body: BoxStream<'static, Result<Bytes>>, encoding: Encoding, uri: String) -> TextSource {
        TextSource {
            body,
            transcoder: (encoding != Encoding::Utf8).then(|| Transcoder::new(encoding)),
            encoding,
            uri,
            at_start: true,
            cut: None,
            ended: false,
            position: TextPosition::default(),
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let chunk = match self.body.next().await {
                Some(chunk) => chunk?,
                None => {
                    self.ended = true;
                    Bytes::new()
                }
            };
            let mut chunk = chunk;
            if let Some(cut) = &mut self.cut {
                chunk = cut.apply(chunk);
                if cut.done {
                    self.ended = true;
                }
            }
            if self.at_start && !chunk.is_empty() {
                self.at_start = false;
                chunk.advance(self.encoding.bom_len(&chunk));
            }
            let Some(transcoder) = &mut self.transcoder else {
                if chunk.is_empty() {
                    continue;
                }
                return Ok(Some(chunk));
            };
            let mut text = String::new();
            let pushed = transcoder.push(&chunk, self.ended, &mut text);
            if let Err(byte) = pushed {
                self.position.advance(&text);
                return Err(self.position.undecodable(&self.uri, self.encoding, byte));
            }
            if text.is_empty() {
                continue;
            }
            self.position.advance(&text);
            return Ok(Some(Bytes::from(text.into_bytes())));
        }
    }
}

/// The push decoders of arrow's CSV and JSON readers, behind one face.
trait TextDecoder: Send {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, arrow::error::ArrowError>;
    fn flush(&mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError>;
    /// A count that grows by one with each record the decoder has seen end since its last
    /// flush (its absolute value means nothing).
    fn ended_records(&self) -> usize;
}

impl TextDecoder for arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
    fn ended_records(&self) -> usize {
        // Its capacity is the batch's rows still to come: one less for each ended record.
        usize::MAX - self.capacity()
    }
}

impl TextDecoder for arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
    fn ended_records(&self) -> usize {
        // Its length counts the record it is in the middle of too.
        self.len() - usize::from(self.has_partial_record())
    }
}

/// Arrow IPC files are read whole: their record batches are located through the footer.
async fn ipc_stream(
    store: Arc<dyn ObjectStore>,
    path: Path,
    slice: &FileSlice,
    projection: Vec<usize>,
) -> Result<BatchStream> {
    let uri = slice.uri.clone();
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| Error::from_store(&uri, e))?
        .bytes()
        .await
        .map_err(|e| Error::from_store(&uri, e))?;
    let corrupt = {
        let uri = uri.clone();
        move |e: arrow::error::ArrowError| Error::Corrupt {
            file: uri.clone(),
            format: "Arrow IPC",
            detail: e.to_string(),
        }
    };
    let reader = arrow::ipc::reader::FileReader::try_new(Cursor::new(bytes), Some(projection))
        .map_err(&corrupt)?;
    Ok(futures::stream::iter(reader.map(move |r| r.map_err(&corrupt))).boxed())
}
