//! What a profile computes, and with which accuracy. These travel inside a plan, so that every
//! task of a run uses the same settings and their partial profiles can be merged.

use serde::{Deserialize, Serialize};

/// Settings of the profiling kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileOptions {
    /// How many most (and least) frequent values to report per column.
    pub top_k: usize,
    /// A column's value counts stay exact (distinct count, top and bottom values) until it has
    /// this many distinct values; past that, HLL and frequent-items sketches take over.
    pub exact_distinct_limit: usize,
    /// KLL sketch size: normalized rank error is about 1.65 / k^0.9 (k = 200: 1.33%).
    pub kll_k: u16,
    /// HLL sketch size for distinct counts (relative standard error about 1.04 / sqrt(2^lg_k)).
    pub hll_lg_k: u8,
    /// Frequent-items sketch map size (a power of two); its error bound is 3.5 / size × weight.
    pub frequent_items_map_size: usize,
    /// Number of equal-width histogram bins between a column's min and max.
    pub histogram_bins: usize,
    /// Detect semantic patterns (email, URL, UUID, IP, phone, dates, numbers) in strings.
    pub patterns: bool,
    /// Estimate duplicate rows from a sketch over whole-row hashes.
    pub duplicates: bool,
    /// Rows whose hashes are kept exactly before the duplicate-row count becomes an estimate.
    pub exact_row_hash_limit: usize,
    /// HLL sketch size for the duplicate-row estimate (larger than for columns: the estimate is a
    /// difference of two large numbers).
    pub row_hll_lg_k: u8,
    /// Rows per record batch: bounds the memory of a task.
    pub batch_rows: usize,
    /// Profile a deterministic sample of the rows instead of all of them; `None`: every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// Longest CSV/NDJSON record, in bytes: a longer one (a file without line breaks, an
    /// unterminated quote) fails the task instead of being buffered whole. Not written when it
    /// is the default, so plans of earlier releases read the same.
    #[serde(skip_serializing_if = "is_default_record_bytes")]
    pub max_record_bytes: u64,
}

fn is_default_record_bytes(n: &u64) -> bool {
    *n == crate::limits::DEFAULT_MAX_RECORD_BYTES
}

/// Row sampling: each row is kept, independently, with probability `fraction` (a Bernoulli
/// sample), decided by a hash of `seed`, the row's file (its path relative to the dataset URI)
/// and the row's position in that file. The same rows are therefore kept whatever the
/// partitioning, the number of tasks or the merge order, and the same seed gives the same sample
/// of the same files on every run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Fraction of the rows to keep, in (0, 1]; 1 keeps every row (no sampling).
    pub fraction: f64,
    /// Seed of the sample: another seed keeps other rows.
    #[serde(default)]
    pub seed: u64,
}

impl Sampling {
    /// The seed `th` uses when none is given.
    pub const DEFAULT_SEED: u64 = 0;

    pub fn new(fraction: f64, seed: u64) -> Sampling {
        Sampling { fraction, seed }
    }

    /// Checks the fraction: finite, more than 0, at most 1.
    pub fn validate(&self) -> crate::Result<()> {
        if !self.fraction.is_finite() || self.fraction <= 0.0 || self.fraction > 1.0 {
            return Err(crate::Error::invalid(
                "sampling",
                format!(
                    "fraction must be more than 0 and at most 1 (e.g. 0.1 for 10% of the rows), got {}",
                    self.fraction
                ),
            ));
        }
        Ok(())
    }

    /// Whether this keeps every row (fraction 1).
    pub fn keeps_all(&self) -> bool {
        self.fraction >= 1.0
    }
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self {
            top_k: 10,
            exact_distinct_limit: 10_000,
            kll_k: 200,
            hll_lg_k: 14,
            frequent_items_map_size: 1024,
            histogram_bins: 20,
            patterns: true,
            duplicates: true,
            exact_row_hash_limit: 1 << 20,
            row_hll_lg_k: 18,
            batch_rows: 64 * 1024,
            sampling: None,
            max_record_bytes: crate::limits::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl ProfileOptions {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |detail: String| Err(crate::Error::invalid("profile options", detail));
        use crate::limits::{
            MAX_EXACT_DISTINCT_LIMIT, MAX_EXACT_ROW_HASH_LIMIT, MAX_FREQUENT_MAP_SIZE, MAX_TOP_K,
            RECORD_BYTES_RANGE,
        };
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return bad(format!("top_k must be 1..={MAX_TOP_K}, got {}", self.top_k));
        }
        if self.exact_distinct_limit > MAX_EXACT_DISTINCT_LIMIT {
            return bad(format!(
                "exact_distinct_limit must be at most {MAX_EXACT_DISTINCT_LIMIT}, got {}",
                self.exact_distinct_limit
            ));
        }
        if self.exact_row_hash_limit > MAX_EXACT_ROW_HASH_LIMIT {
            return bad(format!(
                "exact_row_hash_limit must be at most {MAX_EXACT_ROW_HASH_LIMIT}, got {}",
                self.exact_row_hash_limit
            ));
        }
        if !RECORD_BYTES_RANGE.contains(&self.max_record_bytes) {
            return bad(format!(
                "max_record_bytes must be {}..={}, got {}",
                RECORD_BYTES_RANGE.start(),
                RECORD_BYTES_RANGE.end(),
                self.max_record_bytes
            ));
        }
        if !(8..=65535).contains(&self.kll_k) {
            return bad(format!("kll_k must be 8..=65535, got {}", self.kll_k));
        }
        if !(4..=21).contains(&self.hll_lg_k) || !(4..=21).contains(&self.row_hll_lg_k) {
            return bad("hll_lg_k and row_hll_lg_k must be 4..=21".into());
        }
        if !self.frequent_items_map_size.is_power_of_two()
            || self.frequent_items_map_size < 8
            || self.frequent_items_map_size > MAX_FREQUENT_MAP_SIZE
        {
            return bad(format!(
                "frequent_items_map_size must be a power of two from 8 to {MAX_FREQUENT_MAP_SIZE}, got {}",
                self.frequent_items_map_size
            ));
        }
        if self.histogram_bins == 0 || self.histogram_bins > 1000 {
            return bad(format!(
                "histogram_bins must be 1..=1000, got {}",
                self.histogram_bins
            ));
        }
        if self.batch_rows == 0 {
            return bad("batch_rows must be at least 1".into());
        }
        if let Some(s) = &self.sampling {
            s.validate()?;
        }
        Ok(())
    }

    /// The sampling in effect: `None` when there is none or when it keeps every row.
    pub fn effective_sampling(&self) -> Option<Sampling> {
        self.sampling.filter(|s| !s.keeps_all())
    }
}
