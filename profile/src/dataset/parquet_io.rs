//! Parquet reads through `object_store`: byte ranges for pages, one suffix read for the footer.

use crate::limits::MAX_PARQUET_FOOTER_BYTES;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, MetadataFetch};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::Arc;

/// Footers are usually far smaller: one request reads the footer and its metadata together.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// An [`AsyncFileReader`] over one object of known size.
#[derive(Clone, Debug)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }
}

/// A Parquet file whose last 8 bytes declare a footer larger than the reader takes: the footer
/// is refused before it is read (the declared length would otherwise be read, and allocated,
/// whole).
#[derive(Debug, thiserror::Error)]
#[error("the footer declares {declared} bytes of metadata")]
pub struct FooterTooLarge {
    pub declared: u64,
    pub max: u64,
}

/// The metadata reader's fetches, with the footer's declared length checked as soon as the
/// file's tail (always the first fetch) is in.
struct CheckedFetch<'a> {
    reader: &'a mut ObjectReader,
}

impl MetadataFetch for CheckedFetch<'_> {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            let (size, max) = (self.reader.size, MAX_PARQUET_FOOTER_BYTES);
            let bytes = self.reader.get_bytes(range.clone()).await?;
            // The tail: metadata length (4 bytes, little endian) and the magic.
            if range.end == size
                && let Some(tail) = bytes.len().checked_sub(8).map(|at| &bytes[at..])
                && (&tail[4..] == b"PAR1" || &tail[4..] == b"PARE")
            {
                let declared =
                    u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
                // Past the file's own size it is plain corruption, which the reader reports
                // as such; within it, a hostile or broken file the cap refuses before reading.
                if declared > max && declared + 8 <= size {
                    return Err(ParquetError::External(Box::new(FooterTooLarge {
                        declared,
                        max,
                    })));
                }
            }
            Ok(bytes)
        }
        .boxed()
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(external)
            .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(CheckedFetch { reader: self }, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
