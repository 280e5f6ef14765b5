//! Dataset access: where the data is (a URI naming one file, a prefix or a glob on a local disk
//! or an object store), what format it has, which files it holds, and streaming record batches
//! out of them.

mod format;
mod listing;
mod location;
mod parquet_io;
mod read;

pub use format::Format;
pub use listing::{DataFile, Dataset, RowGroupMeta, discover};
pub use location::{
    Location, StorageOptions, is_secret_key, is_storage_key, read_object, write_object,
};
pub use read::{BatchStream, FileSlice, RowSpans, SliceStream, open_slice};
