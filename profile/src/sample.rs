//! Deterministic row sampling.
//!
//! A row is kept when a hash of (seed, file, position of the row in that file) falls below
//! `fraction × 2^64`: a Bernoulli sample in which every row is kept, independently, with
//! probability `fraction`. The decision depends on where the row sits in its file and on nothing
//! else — not on which task reads it, how the dataset was partitioned, or how many other rows a
//! task reads — so a merged profile of a sample equals the single-pass profile of the same
//! sample, exactly.
//!
//! The file is named by its path relative to the dataset URI (a URI naming one file: the file's
//! name), so a dataset copied to another store or prefix is sampled alike.

use crate::dataset::RowSpans;
use crate::options::Sampling;
use arrow::array::BooleanArray;
use arrow::array::BooleanBufferBuilder;
use arrow::buffer::BooleanBuffer;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the file-name hash (fixed: changing it changes every sample).
const FILE_SEED: u64 = 0x7468_7361_6d70_6c65;
/// The golden-ratio increment of splitmix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// 2^64 as a float.
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

/// The splitmix64 output function (Stafford's variant 13): a bijection of u64 whose outputs for
/// consecutive Weyl-sequence states pass BigCrush.
#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The name a file is sampled under: its path relative to the dataset's path (`root`, a path
/// inside the store), or its file name when the dataset is that one file.
pub fn file_key(root: &str, file_path: &str) -> String {
    let root = root.trim_matches('/');
    let file = file_path.trim_matches('/');
    let relative = if root.is_empty() {
        Some(file)
    } else {
        file.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
    };
    match relative {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => file.rsplit('/').next().unwrap_or(file).to_string(),
    }
}

/// Which rows of one file a sampling keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSampler {
    key: u64,
    /// Rows whose hash is below this are kept; `None`: every row.
    threshold: Option<u64>,
}

impl FileSampler {
    /// The sampler of the file named `file_key` (see [`file_key`]).
    pub fn new(sampling: &Sampling, file_key: &str) -> FileSampler {
        FileSampler {
            key: xxh3_64_with_seed(file_key.as_bytes(), FILE_SEED ^ sampling.seed),
            // The product is below 2^64 for a fraction below 1; `as` saturates anyway.
            threshold: (!sampling.keeps_all()).then_some((sampling.fraction * TWO_64) as u64),
        }
    }

    /// Whether the row at `position` (0-based, in the file) is in the sample.
    #[inline]
    pub fn keeps(&self, position: u64) -> bool {
        match self.threshold {
            None => true,
            // The splitmix64 sequence of this file, at `position`.
            Some(t) => {
                splitmix64(
                    self.key
                        .wrapping_add(position.wrapping_add(1).wrapping_mul(GOLDEN)),
                ) < t
            }
        }
    }

    /// The mask of `len` consecutive rows from `first`.
    pub fn mask_run(&self, first: u64, len: usize) -> BooleanBuffer {
        BooleanBuffer::collect_bool(len, |i| self.keeps(first + i as u64))
    }

    /// The mask of the next `rows` rows of a stream whose rows sit at `spans`; `None` when the
    /// spans hold fewer rows (the file holds other rows than its metadata says).
    pub fn mask(&self, spans: &mut RowSpans, rows: usize) -> Option<BooleanArray> {
        let runs = spans.next_runs(rows)?;
        let bits = match runs.as_slice() {
            [] => BooleanBuffer::new_unset(0),
            [(first, len)] => self.mask_run(*first, *len),
            many => {
                let mut b = BooleanBufferBuilder::new(rows);
                for (first, len) in many {
                    b.append_buffer(&self.mask_run(*first, *len));
                }
                b.finish()
            }
        };
        Some(BooleanArray::new(bits, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_are_relative_to_the_dataset() {
        assert_eq!(
            file_key("data/events", "data/events/a.parquet"),
            "a.parquet"
        );
        assert_eq!(
            file_key("data/events", "data/events/x=1/a.parquet"),
            "x=1/a.parquet"
        );
        assert_eq!(file_key("data/events/a.csv", "data/events/a.csv"), "a.csv");
        assert_eq!(file_key("", "a/b.csv"), "a/b.csv");
        assert_eq!(file_key("d", "dx/a.csv"), "a.csv");
    }

    #[test]
    fn masks_follow_absolute_positions_across_spans() {
        let s = FileSampler::new(&Sampling::new(0.3, 7), "f");
        // Row groups of 5, 7 and 4 rows; a stream of groups 0 and 2, cut in batches of 3.
        let mut spans = RowSpans::new(vec![(0, 5), (12, 4)]);
        let mut got = Vec::new();
        while let Some(m) = s.mask(&mut spans, 3.min(9 - got.len())) {
            got.extend(m.iter().map(|b| b.unwrap()));
            if got.len() == 9 {
                break;
            }
        }
        let want: Vec<bool> = (0..5).chain(12..16).map(|p| s.keeps(p)).collect();
        assert_eq!(got, want);
        assert!(s.mask(&mut spans, 1).is_none(), "past the spans");
    }

    #[test]
    fn keeps_about_the_fraction_and_depends_on_seed_and_file() {
        let n = 200_000u64;
        for fraction in [0.01, 0.25, 0.5, 0.9] {
            let s = FileSampler::new(&Sampling::new(fraction, 1), "f");
            let kept = (0..n).filter(|&p| s.keeps(p)).count() as f64;
            let sigma = (n as f64 * fraction * (1.0 - fraction)).sqrt();
            assert!(
                (kept - n as f64 * fraction).abs() < 6.0 * sigma,
                "{fraction}: {kept}"
            );
        }
        let a = FileSampler::new(&Sampling::new(0.5, 1), "f");
        let b = FileSampler::new(&Sampling::new(0.5, 2), "f");
        let c = FileSampler::new(&Sampling::new(0.5, 1), "g");
        let same = |x: &FileSampler, y: &FileSampler| {
            (0..10_000).filter(|&p| x.keeps(p) == y.keeps(p)).count()
        };
        // Independent samples agree on about half the rows.
        assert!((4_500..5_500).contains(&same(&a, &b)));
        assert!((4_500..5_500).contains(&same(&a, &c)));
        assert_eq!(same(&a, &a), 10_000);
        let all = FileSampler::new(&Sampling::new(1.0, 1), "f");
        assert!((0..1000).all(|p| all.keeps(p)));
    }
}
