//! Caps on what the engine reads and keeps, in one place.
//!
//! Plans, partials and data files may come from a tenant (a ProfileJob names the dataset and the
//! output endpoint), so a size field read from any of them must not decide an allocation on its
//! own: a crafted `freq_map_size` of 2^40 in a partial, a Parquet footer claiming 4 GiB or a CSV
//! file with an unterminated quote would otherwise abort the process that reads them (the
//! operator, a merge pod) instead of failing the run with an error that says what is wrong.
//! Every default is far above what real data needs, so nothing real is refused.

use std::cell::RefCell;

/// Largest object read whole (a plan, a partial profile, a profile, `tasks.json`): 1 GiB. The
/// biggest of these are partials of wide tables with large exact-value limits, a few hundred
/// MiB at most; plans and profiles are far smaller.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Largest Parquet footer (file metadata) read while planning or reading, and largest Arrow IPC
/// footer: 64 MiB. Footers are usually a few KiB to a few MiB, even with thousands of row groups
/// and columns.
pub const MAX_PARQUET_FOOTER_BYTES: u64 = 64 << 20;

/// Default longest CSV/NDJSON record: 32 MiB. A record is buffered whole before it is decoded,
/// so a file with no line break, or an unterminated quote, would otherwise be buffered whole.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 32 << 20;

/// Range a `max_record_bytes` option may take: from 1 KiB (shorter only refuses real records)
/// to 2 GiB (arrow's string offsets are 32-bit: a longer field cannot be decoded anyway).
pub const RECORD_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(2 << 30);

/// Largest frequent-items map: 2^20 entries. Its error bound is 3.5 / size × weight, so 2^20
/// already counts to 3.3 parts per million; a table of that size takes 64 MiB per column.
pub const MAX_FREQUENT_MAP_SIZE: usize = 1 << 20;

/// Largest exact distinct-value limit per column: 10 million values (about a GiB of exact
/// counts for a string column). Past that, the sketches are the better tool.
pub const MAX_EXACT_DISTINCT_LIMIT: usize = 10_000_000;

/// Largest number of whole-row hashes kept exactly: 2^27 rows (2 GiB at 8 bytes a hash, with
/// the vector's room to grow). Past that, the sketch is the better tool.
pub const MAX_EXACT_ROW_HASH_LIMIT: usize = 1 << 27;

/// Largest `top_k`: as many most (and least) frequent values as a profile may list.
pub const MAX_TOP_K: usize = 10_000;

/// Longest string kept as a column's min or max or as a counted value, in characters: 1024
/// (4 KiB at most). A prefix of a fixed number of characters is monotone in string order, so
/// the min and max of the prefixes are the prefixes of the min and max whatever the merge order;
/// longer counted values keep their prefix and a hash of the whole value (see
/// `stats::values::bounded_key`). (The Spark backend's partials count long values whole: merged
/// with the engine's, a value longer than this is counted under two keys.)
///
/// Sketches whose sizes the `datasketches` crate checks itself are not capped here: HLL images
/// (lg_k at most 21, 2 MiB) and KLL images (k at most 65535, and the crate reads no more items
/// than the image holds).
pub const MAX_KEPT_STRING_CHARS: usize = 1024;

/// Why a value was refused: what it is and the limit it exceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub detail: String,
    pub limit: String,
}

thread_local! {
    /// The last refusal of a `Deserialize` impl on this thread. postcard drops the message of a
    /// custom deserialization error, so the impls leave it here for `PartialProfile::from_bytes`
    /// to report.
    static REFUSAL: RefCell<Option<Refusal>> = const { RefCell::new(None) };
}

/// A deserialization error for a value over a limit, remembered for [`take_refusal`].
pub(crate) fn refuse<E: serde::de::Error>(detail: String, limit: impl ToString) -> E {
    let refusal = Refusal {
        detail,
        limit: limit.to_string(),
    };
    let err = E::custom(format!(
        "{}; the limit is {}",
        refusal.detail, refusal.limit
    ));
    REFUSAL.with(|r| *r.borrow_mut() = Some(refusal));
    err
}

/// The refusal left by the last deserialization on this thread, if any (and forgets it).
pub(crate) fn take_refusal() -> Option<Refusal> {
    REFUSAL.with(|r| r.borrow_mut().take())
}

/// Bytes in words: `64 MiB`, `1 GiB`, `1500 bytes`.
pub fn bytes_in_words(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}
