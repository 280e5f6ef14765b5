//! Stable value hashes: which hash bucket a row belongs to, and whole-row hashes for the
//! duplicate-row estimate. Stable means the same value hashes the same in every task, process
//! and machine (xxh3 with a fixed seed over a canonical byte form).

use super::kind::ValueKind;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

const NULL_HASH: u64 = 0x6e75_6c6c_6e75_6c6c;
const SEED: u64 = 0x7472_7574_686f_756e;

/// A fixed-width value's hash: the murmur3 64-bit finalizer over the seeded value (a bijection,
/// so distinct values never collide; far cheaper than hashing their bytes).
#[inline]
fn hash_u64(v: u64) -> u64 {
    let mut k = v ^ SEED;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(23) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Calls `f(row, hash)` for every row of `array`, hashing each value canonically: integers of
/// any width and temporal values as i64, floats as f64 (−0.0 as 0.0), strings as UTF-8 bytes.
fn for_each_hash(array: &ArrayRef, mut f: impl FnMut(usize, u64)) -> Result<()> {
    let unsupported = || {
        Error::invalid(
            "column for hashing",
            format!(
                "type {} cannot be hashed (use a scalar column)",
                array.data_type()
            ),
        )
    };
    let as_ints = |a: &ArrayRef| -> Result<ArrayRef> {
        match a.data_type() {
            DataType::Int64 => Ok(a.clone()),
            DataType::Date32 | DataType::Time32(_) => {
                let data = a
                    .to_data()
                    .into_builder()
                    .data_type(DataType::Int32)
                    .build()
                    .map_err(|_| unsupported())?;
                cast(&arrow::array::make_array(data), &DataType::Int64).map_err(|_| unsupported())
            }
            DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time64(_)
            | DataType::Duration(_) => {
                let data = a
                    .to_data()
                    .into_builder()
                    .data_type(DataType::Int64)
                    .build()
                    .map_err(|_| unsupported())?;
                Ok(arrow::array::make_array(data))
            }
            _ => cast(a, &DataType::Int64).map_err(|_| unsupported()),
        }
    };
    match ValueKind::of(array.data_type()) {
        ValueKind::Boolean => {
            let a: &BooleanArray = array.as_boolean();
            let [false_hash, true_hash] = [xxh3_64(&[0]), xxh3_64(&[1])];
            for i in 0..a.len() {
                f(
                    i,
                    if a.is_null(i) {
                        NULL_HASH
                    } else if a.value(i) {
                        true_hash
                    } else {
                        false_hash
                    },
                );
            }
        }
        ValueKind::Integer | ValueKind::Temporal => {
            let ints = as_ints(array)?;
            let a = ints.as_primitive::<Int64Type>();
            each_word(a.values().iter().map(|&v| v as u64), a.nulls(), f);
        }
        ValueKind::Float => {
            let floats = cast(array, &DataType::Float64).map_err(|_| unsupported())?;
            let a = floats.as_primitive::<Float64Type>();
            let bits = a
                .values()
                .iter()
                .map(|&v| if v == 0.0 { 0 } else { v.to_bits() });
            each_word(bits, a.nulls(), f);
        }
        ValueKind::String => match array.data_type() {
            DataType::Utf8 => each_str(array.as_string::<i32>().iter(), f),
            DataType::LargeUtf8 => each_str(array.as_string::<i64>().iter(), f),
            DataType::Utf8View => each_str(array.as_string_view().iter(), f),
            _ => {
                let strings = cast(array, &DataType::Utf8).map_err(|_| unsupported())?;
                each_str(strings.as_string::<i32>().iter(), f);
            }
        },
        ValueKind::Binary => {
            let b = cast(array, &DataType::LargeBinary).map_err(|_| unsupported())?;
            for (i, v) in b.as_binary::<i64>().iter().enumerate() {
                f(i, v.map_or(NULL_HASH, |v| xxh3_64_with_seed(v, SEED)));
            }
        }
        // A nested value hashes as arrow's row encoding of it (the same for the same value of
        // the same type, in any batch), so duplicate rows compare their nested columns too.
        ValueKind::Other if super::nested::is_nested(array.data_type()) => {
            let converter = RowConverter::new(vec![SortField::new(array.data_type().clone())])
                .map_err(|_| unsupported())?;
            let rows = converter
                .convert_columns(std::slice::from_ref(array))
                .map_err(|_| unsupported())?;
            let nulls = array.logical_nulls();
            for i in 0..array.len() {
                let null = nulls.as_ref().is_some_and(|n| n.is_null(i));
                f(
                    i,
                    if null {
                        NULL_HASH
                    } else {
                        xxh3_64_with_seed(rows.row(i).as_ref(), SEED)
                    },
                );
            }
        }
        ValueKind::Other => return Err(unsupported()),
    }
    Ok(())
}

/// Hashes fixed-width values given as words; the null test is left out of the loop when there
/// are no nulls.
#[inline]
fn each_word(
    words: impl Iterator<Item = u64>,
    nulls: Option<&NullBuffer>,
    mut f: impl FnMut(usize, u64),
) {
    match nulls.filter(|n| n.null_count() > 0) {
        None => words.enumerate().for_each(|(i, w)| f(i, hash_u64(w))),
        Some(nulls) => words
            .zip(nulls.iter())
            .enumerate()
            .for_each(|(i, (w, valid))| f(i, if valid { hash_u64(w) } else { NULL_HASH })),
    }
}

fn each_str<'a>(values: impl Iterator<Item = Option<&'a str>>, mut f: impl FnMut(usize, u64)) {
    for (i, v) in values.enumerate() {
        f(
            i,
            v.map_or(NULL_HASH, |s| xxh3_64_with_seed(s.as_bytes(), SEED)),
        );
    }
}

/// Which rows of `key` fall in hash bucket `bucket` of `buckets`.
pub fn bucket_mask(key: &ArrayRef, buckets: u32, bucket: u32) -> Result<BooleanArray> {
    let mut keep = Vec::with_capacity(key.len());
    for_each_hash(key, |_, h| {
        keep.push(mix(SEED, h) % u64::from(buckets) == u64::from(bucket))
    })?;
    Ok(BooleanArray::from(keep))
}

/// Whole-row hashes of the columns `columns` (in a fixed order), one per row. Columns of a type
/// that cannot be hashed (unions, for instance) are left out of the hash.
pub fn hash_rows(columns: &[&ArrayRef], rows: usize) -> Vec<u64> {
    let mut out = vec![SEED; rows];
    for col in columns {
        let out = &mut out[..col.len()];
        // A type that cannot be hashed is skipped; every task skips the same columns.
        let _ = for_each_hash(col, |i, h| out[i] = mix(out[i], h));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn integer_widths_hash_alike_and_buckets_partition_rows() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(3)]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        assert_eq!(hash_rows(&[&a], 3), hash_rows(&[&b], 3));
        let s: ArrayRef = Arc::new(StringArray::from(
            (0..100).map(|i| format!("k{i}")).collect::<Vec<_>>(),
        ));
        let total: usize = (0..4)
            .map(|b| bucket_mask(&s, 4, b).unwrap().true_count())
            .sum();
        assert_eq!(total, 100);
    }
}
