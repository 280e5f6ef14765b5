//! Partial profiles: the versioned, compact, mergeable state of one or more tasks.
//!
//! Merging is associative and commutative. Partials carry the ids of the tasks they cover, so a
//! task merged twice is rejected and a task never merged is reported as missing.

use crate::kernel::{ColumnState, RowHashes};
use crate::options::Sampling;
use crate::plan::{Plan, Strategy};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Bytes every serialized partial starts with.
pub const MAGIC: &[u8; 8] = b"THPART\0\x01";
/// Version of the partial format (bumped on any incompatible change). Version 2 added row
/// sampling, version 3 the statistics a backend could not compute, version 4 nested columns
/// (derived columns, list lengths) and binary value counts; versions 1 to 3 are still read (a
/// version 3 partial is a version 4 one without those statistics).
pub const PARTIAL_VERSION: u32 = 4;

/// A statistic that a backend could not compute for the rows of a partial (the Spark backend
/// cannot reproduce the engine's pattern detection or whole-row hashes, for instance). A merged
/// figure that lacks some rows is not reported: the profile lists it with the reason instead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unavailable {
    /// The column; `None` for a table-level figure (`duplicate_row_count`).
    pub column: Option<String>,
    /// The profile's field, e.g. `detected_patterns`.
    pub statistic: String,
    /// Why, e.g. "not computed by the spark backend".
    pub reason: String,
}

/// What a partial remembers of each plan it has tasks of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub dataset: String,
    pub strategy: Strategy,
    pub total_tasks: u32,
    /// The plan's profiled columns, in dataset order (the merged profile's column order).
    pub columns: Vec<String>,
    /// The plan's row sampling; `None`: every row.
    pub sampling: Option<Sampling>,
}

/// Merged state of some tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialProfile {
    pub plans: BTreeMap<String, PlanRecord>,
    /// (plan id, task id) of every task merged in.
    pub tasks: BTreeSet<(String, u32)>,
    /// Rows of each (plan id, row slice); tasks of one row slice agree on it. These are the
    /// profiled rows: the sampled ones when the plan samples.
    pub row_slices: BTreeMap<(String, u32), u64>,
    /// Rows each (plan id, row slice) read before sampling (equal to `row_slices` without
    /// sampling); tasks of one row slice agree on it.
    pub rows_scanned: BTreeMap<(String, u32), u64>,
    pub columns: Vec<ColumnState>,
    /// Whole-row hashes; `None` when duplicate counting was off.
    pub row_hashes: Option<RowHashes>,
    /// Summed time the tasks took.
    pub task_millis: u64,
    /// Bytes the tasks read from storage (compressed).
    pub bytes_read: u64,
    /// Statistics some task could not compute (empty for the engine's own tasks).
    pub unavailable: BTreeSet<Unavailable>,
}

impl PartialProfile {
    /// A partial of one task of `plan` (its statistics filled in by the kernel) that profiled
    /// `rows` rows; a sampled task's rows scanned are set with [`Self::with_rows_scanned`].
    pub fn for_task(plan: &Plan, task: u32, row_slice: u32, rows: u64) -> Self {
        PartialProfile {
            plans: BTreeMap::from([(
                plan.id.clone(),
                PlanRecord {
                    dataset: plan.dataset.uri.clone(),
                    strategy: plan.strategy,
                    total_tasks: plan.tasks.len() as u32,
                    columns: plan.columns.clone(),
                    sampling: plan.options.effective_sampling(),
                },
            )]),
            tasks: BTreeSet::from([(plan.id.clone(), task)]),
            row_slices: BTreeMap::from([((plan.id.clone(), row_slice), rows)]),
            rows_scanned: BTreeMap::from([((plan.id.clone(), row_slice), rows)]),
            columns: Vec::new(),
            row_hashes: None,
            task_millis: 0,
            bytes_read: 0,
            unavailable: BTreeSet::new(),
        }
    }

    /// Sets the rows this one-task partial read before sampling.
    pub fn with_rows_scanned(mut self, scanned: u64) -> Self {
        for rows in self.rows_scanned.values_mut() {
            *rows = scanned;
        }
        self
    }

    /// Rows profiled (sampled rows, when sampling).
    pub fn row_count(&self) -> u64 {
        self.row_slices.values().sum()
    }

    /// Rows read before sampling.
    pub fn rows_scanned(&self) -> u64 {
        self.rows_scanned.values().sum()
    }

    /// The sampling of this partial's plans (which all sample alike: see [`Self::merge`]), or
    /// `None` when they profile every row.
    pub fn sampling(&self) -> Option<Sampling> {
        self.plans.values().find_map(|p| p.sampling)
    }

    /// The seed of the sample, when every plan samples with the same one.
    pub fn sampling_seed(&self) -> Option<u64> {
        let mut seeds = self
            .plans
            .values()
            .filter_map(|p| p.sampling.map(|s| s.seed));
        let first = seeds.next()?;
        seeds.all(|s| s == first).then_some(first)
    }

    /// Tasks of the known plans that are not in this partial, per plan.
    pub fn missing_tasks(&self) -> BTreeMap<String, Vec<u32>> {
        self.plans
            .iter()
            .map(|(id, p)| {
                let missing = (0..p.total_tasks)
                    .filter(|t| !self.tasks.contains(&(id.clone(), *t)))
                    .collect::<Vec<_>>();
                (id.clone(), missing)
            })
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: &PartialProfile) -> Result<()> {
        if let Some((plan, task)) = self.tasks.intersection(&other.tasks).next() {
            return Err(Error::Merge(format!(
                "task {task} of plan {plan} is in both partial profiles; merging it twice would count its rows twice"
            )));
        }
        // A merge of samples taken at different rates is no uniform sample of anything: its
        // figures would weigh some data more than the rest.
        let fraction = |r: &PlanRecord| r.sampling.map_or(1.0, |s| s.fraction);
        if let (Some((a, mine)), Some((b, theirs))) =
            (self.plans.iter().next(), other.plans.iter().next())
            && fraction(mine) != fraction(theirs)
        {
            let rate = |r: &PlanRecord| match r.sampling {
                Some(s) => format!("samples a fraction {} of its rows", s.fraction),
                None => "profiles every row".to_string(),
            };
            return Err(Error::Merge(format!(
                "plan {a} {} and plan {b} {}; a merged profile would weigh some rows more than \
                 others: profile both at the same sampling fraction",
                rate(mine),
                rate(theirs)
            )));
        }
        for (id, record) in &other.plans {
            match self.plans.get(id) {
                Some(mine) if mine != record => {
                    return Err(Error::Merge(format!(
                        "plan {id} is described differently by two partials"
                    )));
                }
                Some(_) => {}
                None => {
                    self.plans.insert(id.clone(), record.clone());
                }
            }
        }
        // Tasks of one row slice agree on its rows, profiled and scanned.
        merge_agreeing(&mut self.row_slices, &other.row_slices, "has")?;
        merge_agreeing(&mut self.rows_scanned, &other.rows_scanned, "scanned")?;
        for col in &other.columns {
            match self.columns.iter_mut().find(|c| c.name == col.name) {
                Some(mine) => mine.merge(col)?,
                None => self.columns.push(col.clone()),
            }
        }
        self.row_hashes = match (self.row_hashes.take(), &other.row_hashes) {
            (Some(mut a), Some(b)) => {
                a.merge(b);
                Some(a)
            }
            (a, None) => a,
            (None, Some(b)) => Some(b.clone()),
        };
        self.tasks.extend(other.tasks.iter().cloned());
        self.task_millis += other.task_millis;
        self.bytes_read += other.bytes_read;
        self.unavailable.extend(other.unavailable.iter().cloned());
        Ok(())
    }

    /// Columns in the order of the first plan's column list (then any others by name), each
    /// followed by the columns derived from it (a nested column's fields, elements, keys and
    /// values, depth first in schema order), so that every merge order gives the same profile.
    pub fn ordered_columns(&self) -> Vec<&ColumnState> {
        let mut order: Vec<&str> = Vec::new();
        for record in self.plans.values() {
            for c in &record.columns {
                if !order.contains(&c.as_str()) {
                    order.push(c);
                }
            }
        }
        let by_name: BTreeMap<&str, &ColumnState> =
            self.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let derived: BTreeSet<&str> = self
            .columns
            .iter()
            .flat_map(|c| c.children().iter().map(String::as_str))
            .collect();
        let mut roots: Vec<&ColumnState> = self
            .columns
            .iter()
            .filter(|c| !derived.contains(c.name.as_str()))
            .collect();
        roots.sort_by_key(|c| {
            (
                order
                    .iter()
                    .position(|o| *o == c.name)
                    .unwrap_or(usize::MAX),
                c.name.clone(),
            )
        });
        let mut out = Vec::with_capacity(self.columns.len());
        let mut stack: Vec<&ColumnState> = roots.into_iter().rev().collect();
        while let Some(c) = stack.pop() {
            // A partial from elsewhere could list a column as its own descendant.
            if out.len() >= self.columns.len() {
                break;
            }
            out.push(c);
            stack.extend(
                c.children()
                    .iter()
                    .rev()
                    .filter_map(|n| by_name.get(n.as_str()).copied()),
            );
        }
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&PARTIAL_VERSION.to_le_bytes());
        postcard::to_extend(self, out).expect("partials serialize")
    }

    pub fn is_partial(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<PartialProfile> {
        if !Self::is_partial(bytes) || bytes.len() < MAGIC.len() + 4 {
            return Err(Error::invalid(
                "partial profile",
                format!("{what}: not a truthound partial profile"),
            ));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        // A sketch size over a limit is refused inside a `Deserialize` impl, which postcard
        // reports without its message: the impl leaves the refusal for this to name.
        let _ = crate::limits::take_refusal();
        let bad = |e: postcard::Error| match crate::limits::take_refusal() {
            Some(r) => Error::TooLarge {
                what: format!("partial profile {what}"),
                detail: r.detail,
                limit: r.limit,
            },
            None => Error::invalid("partial profile", format!("{what}: {e}")),
        };
        match version {
            PARTIAL_VERSION | 3 => postcard::from_bytes(&bytes[12..]).map_err(bad),
            2 => postcard::from_bytes::<v2::PartialProfile>(&bytes[12..])
                .map(PartialProfile::from)
                .map_err(bad),
            1 => postcard::from_bytes::<v1::PartialProfile>(&bytes[12..])
                .map(PartialProfile::from)
                .map_err(bad),
            _ => Err(Error::Version {
                what: "partial profile",
                found: version,
                supported: PARTIAL_VERSION,
            }),
        }
    }
}

/// Adds `theirs`' row slices to `mine`; a slice both know must have the same count.
fn merge_agreeing(
    mine: &mut BTreeMap<(String, u32), u64>,
    theirs: &BTreeMap<(String, u32), u64>,
    verb: &str,
) -> Result<()> {
    for (key, n) in theirs {
        match mine.get(key) {
            Some(m) if m != n => {
                return Err(Error::Merge(format!(
                    "row slice {} of plan {} {verb} {m} rows in one partial and {n} in another",
                    key.1, key.0
                )));
            }
            Some(_) => {}
            None => {
                mine.insert(key.clone(), *n);
            }
        }
    }
    Ok(())
}

/// Version 1 of the format (before sampling), read into the current one.
mod v1 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct PlanRecord {
        pub dataset: String,
        pub strategy: Strategy,
        pub total_tasks: u32,
        pub columns: Vec<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct PartialProfile {
        pub plans: BTreeMap<String, PlanRecord>,
        pub tasks: BTreeSet<(String, u32)>,
        pub row_slices: BTreeMap<(String, u32), u64>,
        pub columns: Vec<ColumnState>,
        pub row_hashes: Option<RowHashes>,
        pub task_millis: u64,
        pub bytes_read: u64,
    }

    impl From<PartialProfile> for super::PartialProfile {
        fn from(p: PartialProfile) -> Self {
            super::PartialProfile {
                plans: p
                    .plans
                    .into_iter()
                    .map(|(id, r)| {
                        let record = super::PlanRecord {
                            dataset: r.dataset,
                            strategy: r.strategy,
                            total_tasks: r.total_tasks,
                            columns: r.columns,
                            sampling: None,
                        };
                        (id, record)
                    })
                    .collect(),
                tasks: p.tasks,
                rows_scanned: p.row_slices.clone(),
                row_slices: p.row_slices,
                columns: p.columns,
                row_hashes: p.row_hashes,
                task_millis: p.task_millis,
                bytes_read: p.bytes_read,
                unavailable: BTreeSet::new(),
            }
        }
    }
}

/// Version 2 of the format (before unavailable statistics), read into the current one.
mod v2 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct PartialProfile {
        pub plans: BTreeMap<String, super::PlanRecord>,
        pub tasks: BTreeSet<(String, u32)>,
        pub row_slices: BTreeMap<(String, u32), u64>,
        pub rows_scanned: BTreeMap<(String, u32), u64>,
        pub columns: Vec<ColumnState>,
        pub row_hashes: Option<RowHashes>,
        pub task_millis: u64,
        pub bytes_read: u64,
    }

    impl From<PartialProfile> for super::PartialProfile {
        fn from(p: PartialProfile) -> Self {
            super::PartialProfile {
                plans: p.plans,
                tasks: p.tasks,
                row_slices: p.row_slices,
                rows_scanned: p.rows_scanned,
                columns: p.columns,
                row_hashes: p.row_hashes,
                task_millis: p.task_millis,
                bytes_read: p.bytes_read,
                unavailable: BTreeSet::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 partial, as the previous release wrote it.
    fn v1_bytes(p: &v1::PartialProfile) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        postcard::to_extend(p, out).unwrap()
    }

    #[test]
    fn version_1_partials_are_read_as_unsampled() {
        let key = ("abc".to_string(), 0u32);
        let old = v1::PartialProfile {
            plans: BTreeMap::from([(
                "abc".to_string(),
                v1::PlanRecord {
                    dataset: "/d".into(),
                    strategy: Strategy::RowBased,
                    total_tasks: 2,
                    columns: vec!["a".into()],
                },
            )]),
            tasks: BTreeSet::from([key.clone()]),
            row_slices: BTreeMap::from([(key.clone(), 42)]),
            columns: Vec::new(),
            row_hashes: Some(RowHashes::new(16, 12)),
            task_millis: 5,
            bytes_read: 7,
        };
        let p = PartialProfile::from_bytes(&v1_bytes(&old), "old").unwrap();
        assert_eq!(p.row_count(), 42);
        assert_eq!(p.rows_scanned(), 42);
        assert_eq!(p.sampling(), None);
        assert_eq!(p.plans["abc"].total_tasks, 2);
        assert_eq!((p.task_millis, p.bytes_read), (5, 7));
        assert!(p.row_hashes.is_some());
        // Written back in the current version, it reads the same.
        let again = PartialProfile::from_bytes(&p.to_bytes(), "new").unwrap();
        assert_eq!(again.rows_scanned, p.rows_scanned);
        assert_eq!(again.plans, p.plans);
        // An unknown version is refused by name.
        let mut future = p.to_bytes();
        future[8..12].copy_from_slice(&9u32.to_le_bytes());
        let err = PartialProfile::from_bytes(&future, "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 9"), "{err}");
    }

    #[test]
    fn version_2_partials_are_read_with_every_statistic_available() {
        let key = ("p".to_string(), 1u32);
        let old = v2::PartialProfile {
            plans: BTreeMap::new(),
            tasks: BTreeSet::from([key.clone()]),
            row_slices: BTreeMap::from([(key.clone(), 9)]),
            rows_scanned: BTreeMap::from([(key.clone(), 12)]),
            columns: Vec::new(),
            row_hashes: None,
            task_millis: 1,
            bytes_read: 2,
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        let bytes = postcard::to_extend(&old, bytes).unwrap();
        let p = PartialProfile::from_bytes(&bytes, "v2").unwrap();
        assert_eq!((p.row_count(), p.rows_scanned()), (9, 12));
        assert!(p.unavailable.is_empty());
        // What is unavailable survives the current format and merges as a union.
        let mut a = p.clone();
        a.unavailable.insert(Unavailable {
            column: Some("s".into()),
            statistic: "detected_patterns".into(),
            reason: "not computed by the spark backend".into(),
        });
        let a = PartialProfile::from_bytes(&a.to_bytes(), "v3").unwrap();
        let mut b = p.clone();
        b.tasks = BTreeSet::from([("p".to_string(), 2)]);
        b.merge(&a).unwrap();
        assert_eq!(b.unavailable, a.unavailable);
    }
}
