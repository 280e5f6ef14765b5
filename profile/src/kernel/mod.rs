//! The one-pass kernel: per-column accumulators updated one record batch at a time, with a
//! tight loop per batch after a single dispatch on the column's type.

pub mod column;
mod hashing;
pub mod kind;
pub mod nested;
mod table;

pub use column::{
    BinaryState, ColumnState, ColumnStats, FloatState, IntState, NestedKind, NestedState,
    StringState, TemporalUnit,
};
pub use hashing::{bucket_mask, hash_rows};
pub use kind::ValueKind;
pub use nested::ColumnTree;
pub use table::RowHashes;
