//! The one-pass kernel: per-column accumulators updated one record batch at a time, with a
//! tight loop per batch after a single dispatch on the column's type.

pub mod column;
mod hashing;
pub mod kind;
mod table;

pub use column::{ColumnState, ColumnStats, FloatState, IntState, StringState, TemporalUnit};
pub use hashing::{bucket_mask, hash_rows};
pub use kind::ValueKind;
pub use table::RowHashes;
