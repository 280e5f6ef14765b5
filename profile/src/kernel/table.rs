//! Table-level state: whole-row hashes for the duplicate-row count, exact while few, then an
//! HLL sketch.

use datasketches::common::NumStdDev;
use datasketches::hll::{HllSketch, HllType, HllUnion};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// Distinct whole-row hashes seen.
#[derive(Debug, Clone)]
pub struct RowHashes {
    limit: usize,
    lg_k: u8,
    /// Rows hashed (duplicates = hashed − distinct).
    pub hashed_rows: u64,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// The hashes themselves: `hashes[..settled]` sorted and without repeats, the rest as they
    /// came. A flat vector sorted now and then takes 8 bytes a row, where a hash set takes
    /// about 18 (its table doubles past 7/8 full), and it comes out sorted for the sketch.
    Exact {
        hashes: Vec<u64>,
        settled: usize,
    },
    Sketch(HllSketch),
}

impl RowHashes {
    pub fn new(limit: usize, lg_k: u8) -> Self {
        RowHashes {
            limit,
            lg_k,
            hashed_rows: 0,
            state: State::Exact {
                hashes: Vec::new(),
                settled: 0,
            },
        }
    }

    pub fn add(&mut self, new: &[u64]) {
        self.hashed_rows += new.len() as u64;
        match &mut self.state {
            State::Exact { hashes, settled } => {
                hashes.extend_from_slice(new);
                // Sorting again only once the vector has doubled since the last sort keeps the
                // sorting to O(log n) per row, and the memory under twice the limit.
                if hashes.len() > self.limit.max(2 * *settled) {
                    self.settle();
                }
            }
            State::Sketch(hll) => {
                for &h in new {
                    hll.update(h);
                }
            }
        }
    }

    /// Sorts and deduplicates the exact hashes; past the limit they become the sketch.
    pub fn settle(&mut self) {
        if let State::Exact { hashes, settled } = &mut self.state {
            if *settled < hashes.len() {
                hashes.sort_unstable();
                hashes.dedup();
                *settled = hashes.len();
            }
            if hashes.len() > self.limit {
                self.switch_to_sketch();
            }
        }
    }

    fn switch_to_sketch(&mut self) {
        if let State::Exact { hashes, .. } = &mut self.state {
            let mut hll = HllSketch::new(self.lg_k, HllType::Hll8).expect("lg_k validated");
            // Sorted, so that the sketch does not depend on the order the rows came in.
            hashes.sort_unstable();
            for &h in hashes.iter() {
                hll.update(h);
            }
            self.state = State::Sketch(hll);
        }
    }

    /// The exact distinct hashes, sorted; `None` once sketched.
    fn distinct(&self) -> Option<Cow<'_, [u64]>> {
        match &self.state {
            State::Exact { hashes, settled } if *settled == hashes.len() => {
                Some(Cow::Borrowed(hashes))
            }
            // Some arrived since the last sort (a task settles when it ends, so rarely).
            State::Exact { hashes, .. } => {
                let mut sorted = hashes.clone();
                sorted.sort_unstable();
                sorted.dedup();
                Some(Cow::Owned(sorted))
            }
            State::Sketch(_) => None,
        }
    }

    pub fn merge(&mut self, other: &RowHashes) {
        self.hashed_rows += other.hashed_rows;
        self.limit = self.limit.max(other.limit);
        if let (Some(b), State::Exact { hashes, .. }) = (other.distinct(), &mut self.state) {
            hashes.extend_from_slice(&b);
            self.settle();
            return;
        }
        self.switch_to_sketch();
        let mut theirs = other.clone();
        theirs.switch_to_sketch();
        if let (State::Sketch(a), State::Sketch(b)) = (&mut self.state, &theirs.state) {
            let mut u = HllUnion::new(self.lg_k).expect("lg_k validated");
            u.update(a);
            u.update(b);
            *a = u.to_sketch(HllType::Hll8);
        }
    }

    /// (estimate, lower, upper, exact) of the number of duplicate rows: rows beyond the first
    /// of each distinct row. Bounds are 3 sigma (99.7%).
    pub fn duplicates(&self) -> (u64, u64, u64, bool) {
        let n = self.hashed_rows;
        match &self.state {
            State::Exact { .. } => {
                let distinct = self.distinct().map_or(0, |d| d.len());
                let d = n - distinct as u64;
                (d, d, d, true)
            }
            State::Sketch(hll) => {
                let dup = |distinct: f64| (n as f64 - distinct).clamp(0.0, n as f64);
                (
                    dup(hll.estimate()).round() as u64,
                    dup(hll.upper_bound(NumStdDev::Three)).floor() as u64,
                    dup(hll.lower_bound(NumStdDev::Three)).ceil() as u64,
                    false,
                )
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Stored {
    Exact(Vec<u64>),
    Sketch(Vec<u8>),
}

impl Serialize for RowHashes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let stored = match (&self.state, self.distinct()) {
            (State::Sketch(h), _) => Stored::Sketch(h.serialize()),
            (State::Exact { .. }, distinct) => {
                Stored::Exact(distinct.map(Cow::into_owned).unwrap_or_default())
            }
        };
        (self.limit, self.lg_k, self.hashed_rows, stored).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RowHashes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (limit, lg_k, hashed_rows, stored) = <(usize, u8, u64, Stored)>::deserialize(d)?;
        if !(4..=21).contains(&lg_k) {
            return Err(D::Error::custom(format!(
                "invalid row-hash sketch size {lg_k}"
            )));
        }
        use crate::limits::{MAX_EXACT_ROW_HASH_LIMIT, refuse};
        if limit > MAX_EXACT_ROW_HASH_LIMIT {
            return Err(refuse(
                format!("an exact row-hash limit of {limit} rows"),
                MAX_EXACT_ROW_HASH_LIMIT,
            ));
        }
        let state = match stored {
            // Exact hashes are at most twice the limit (unsettled ones, see `add`): more are not
            // a partial we wrote.
            Stored::Exact(hashes) if hashes.len() > limit.saturating_mul(2) => {
                return Err(refuse(
                    format!(
                        "{} exact row hashes (more than its own limit)",
                        hashes.len()
                    ),
                    format!("2 × {limit}"),
                ));
            }
            Stored::Exact(mut hashes) => {
                // Stored sorted and without repeats; a partial from elsewhere is not trusted to be.
                hashes.sort_unstable();
                hashes.dedup();
                State::Exact {
                    settled: hashes.len(),
                    hashes,
                }
            }
            Stored::Sketch(b) => {
                State::Sketch(HllSketch::deserialize(&b).map_err(D::Error::custom)?)
            }
        };
        Ok(RowHashes {
            limit,
            lg_k,
            hashed_rows,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row hashes with repeats: 3 rows of each of `distinct` rows, interleaved.
    fn rows(distinct: u64) -> Vec<u64> {
        (0..3 * distinct)
            .map(|i| (i % distinct).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect()
    }

    fn fed(limit: usize, hashes: &[u64], batch: usize) -> RowHashes {
        let mut rh = RowHashes::new(limit, 12);
        for b in hashes.chunks(batch) {
            rh.add(b);
        }
        rh
    }

    #[test]
    fn exact_counts_whatever_the_batches() {
        for batch in [1, 7, 64, 3000] {
            let rh = fed(1000, &rows(400), batch);
            assert_eq!(rh.duplicates(), (800, 800, 800, true), "batches of {batch}");
            let back: RowHashes =
                postcard::from_bytes(&postcard::to_allocvec(&rh).unwrap()).expect("round trip");
            assert_eq!(back.duplicates(), rh.duplicates());
        }
    }

    #[test]
    fn past_the_limit_a_sketch_the_same_on_every_run() {
        let hashes = rows(2000);
        for batch in [5, 64, 6000] {
            let image = || {
                let mut rh = fed(1000, &hashes, batch);
                rh.settle();
                postcard::to_allocvec(&rh).unwrap()
            };
            assert_eq!(image(), image(), "batches of {batch}");
            let (d, lo, hi, exact) = fed(1000, &hashes, batch).duplicates();
            assert!(
                !exact && lo <= 4000 && 4000 <= hi && d.abs_diff(4000) < 200,
                "{d}"
            );
        }
    }

    #[test]
    fn merging_exact_halves_adds_up_and_overflows_into_a_sketch() {
        let hashes = rows(300);
        let (a, b) = hashes.split_at(500);
        let mut left = fed(1000, a, 64);
        left.merge(&fed(1000, b, 64));
        assert_eq!(left.duplicates(), (600, 600, 600, true));
        let mut small = fed(400, a, 64);
        small.merge(&fed(400, &rows(1000), 64));
        let (_, lo, hi, exact) = small.duplicates();
        // 1000 distinct rows (the first 300 shared) among 3500.
        assert!(!exact && lo <= 2500 && 2500 <= hi);
    }
}
