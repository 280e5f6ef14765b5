//! Table-level state: whole-row hashes for the duplicate-row count, exact while few, then an
//! HLL sketch.

use datasketches::common::NumStdDev;
use datasketches::hll::{HllSketch, HllType, HllUnion};
use hashbrown::HashSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    Exact(HashSet<u64>),
    Sketch(HllSketch),
}

impl RowHashes {
    pub fn new(limit: usize, lg_k: u8) -> Self {
        RowHashes {
            limit,
            lg_k,
            hashed_rows: 0,
            state: State::Exact(HashSet::new()),
        }
    }

    pub fn add(&mut self, hashes: &[u64]) {
        self.hashed_rows += hashes.len() as u64;
        if let State::Exact(set) = &mut self.state {
            set.extend(hashes.iter().copied());
            if set.len() > self.limit {
                self.switch_to_sketch();
            }
            return;
        }
        if let State::Sketch(hll) = &mut self.state {
            for &h in hashes {
                hll.update(h);
            }
        }
    }

    fn switch_to_sketch(&mut self) {
        if let State::Exact(set) = &self.state {
            let mut hll = HllSketch::new(self.lg_k, HllType::Hll8).expect("lg_k validated");
            // Sorted, so that the sketch does not depend on the set's random iteration order.
            let mut hashes: Vec<u64> = set.iter().copied().collect();
            hashes.sort_unstable();
            for h in hashes {
                hll.update(h);
            }
            self.state = State::Sketch(hll);
        }
    }

    pub fn merge(&mut self, other: &RowHashes) {
        self.hashed_rows += other.hashed_rows;
        self.limit = self.limit.max(other.limit);
        if let (State::Exact(a), State::Exact(b)) = (&mut self.state, &other.state) {
            a.extend(b.iter().copied());
            if a.len() > self.limit {
                self.switch_to_sketch();
            }
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
            State::Exact(set) => {
                let d = n - set.len() as u64;
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
        let stored = match &self.state {
            State::Exact(set) => {
                let mut v: Vec<u64> = set.iter().copied().collect();
                v.sort_unstable();
                Stored::Exact(v)
            }
            State::Sketch(h) => Stored::Sketch(h.serialize()),
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
        let state = match stored {
            Stored::Exact(v) => State::Exact(v.into_iter().collect()),
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
