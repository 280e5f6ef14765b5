//! Dataset access: where the data is (a URI naming one file, a prefix or a glob on a local disk
//! or an object store), what format it has, which files it holds, and streaming record batches
//! out of them.

mod compression;
mod csv;
mod format;
mod listing;
mod location;
mod parquet_io;
mod read;
mod split;

pub use compression::Compression;
pub use csv::{CsvDialect, CsvOptions, Encoding, parse_char};
pub use format::Format;
pub use listing::{DataFile, Dataset, RowGroupMeta, discover, discover_with};
pub use location::{
    Location, StorageOptions, is_secret_key, is_storage_key, read_object, read_object_limited,
    write_object,
};
pub use read::{BatchStream, Decoding, FileSlice, RowSpans, SliceStream, open_slice};
pub use split::{data_start, record_starts, scan_record_starts};
