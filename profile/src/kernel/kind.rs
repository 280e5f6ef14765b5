//! Which statistics an Arrow type gets. One classification serves the column accumulators, the
//! row hashes and every backend, so that two partials of the same column always hold the same
//! kind of state and merge.

use arrow::datatypes::DataType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Boolean,
    /// Signed integers, and unsigned ones that fit an `i64`.
    Integer,
    /// Floats, decimals and `u64` (which may not fit an `i64`), read as `f64`.
    Float,
    /// Dates, times, timestamps and durations, counted in their integer form.
    Temporal,
    /// UTF-8 strings, dictionary-encoded ones included.
    String,
    Binary,
    /// Nested and other types: counts only.
    Other,
}

impl ValueKind {
    pub fn of(t: &DataType) -> ValueKind {
        match t {
            DataType::Boolean => ValueKind::Boolean,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => ValueKind::Integer,
            DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => ValueKind::Float,
            DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_) => ValueKind::Temporal,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueKind::String,
            DataType::Dictionary(_, v) if ValueKind::of(v) == ValueKind::String => {
                ValueKind::String
            }
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => ValueKind::Binary,
            _ => ValueKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};
    use std::sync::Arc;

    #[test]
    fn kinds_of_edge_types() {
        let dict = |v: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(v));
        assert_eq!(ValueKind::of(&DataType::UInt32), ValueKind::Integer);
        // A u64 may not fit an i64: it is read as a float, by every backend.
        assert_eq!(ValueKind::of(&DataType::UInt64), ValueKind::Float);
        assert_eq!(ValueKind::of(&dict(DataType::Utf8View)), ValueKind::String);
        assert_eq!(ValueKind::of(&dict(DataType::Int64)), ValueKind::Other);
        assert_eq!(
            ValueKind::of(&DataType::Duration(TimeUnit::Second)),
            ValueKind::Temporal
        );
        let list = DataType::List(Arc::new(Field::new("x", DataType::Int64, true)));
        assert_eq!(ValueKind::of(&list), ValueKind::Other);
    }
}
