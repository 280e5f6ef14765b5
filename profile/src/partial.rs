//! Partial profiles: the versioned, compact, mergeable state of one or more tasks.
//!
//! Merging is associative and commutative. Partials carry the ids of the tasks they cover, so a
//! task merged twice is rejected and a task never merged is reported as missing.

use crate::kernel::{ColumnState, RowHashes};
use crate::plan::{Plan, Strategy};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Bytes every serialized partial starts with.
pub const MAGIC: &[u8; 8] = b"THPART\0\x01";
/// Version of the partial format (bumped on any incompatible change).
pub const PARTIAL_VERSION: u32 = 1;

/// What a partial remembers of each plan it has tasks of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub dataset: String,
    pub strategy: Strategy,
    pub total_tasks: u32,
    /// The plan's profiled columns, in dataset order (the merged profile's column order).
    pub columns: Vec<String>,
}

/// Merged state of some tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialProfile {
    pub plans: BTreeMap<String, PlanRecord>,
    /// (plan id, task id) of every task merged in.
    pub tasks: BTreeSet<(String, u32)>,
    /// Rows of each (plan id, row slice); tasks of one row slice agree on it.
    pub row_slices: BTreeMap<(String, u32), u64>,
    pub columns: Vec<ColumnState>,
    /// Whole-row hashes; `None` when duplicate counting was off.
    pub row_hashes: Option<RowHashes>,
    /// Summed time the tasks took.
    pub task_millis: u64,
    /// Bytes the tasks read from storage (compressed).
    pub bytes_read: u64,
}

impl PartialProfile {
    /// A partial of one task of `plan` (its statistics filled in by the kernel).
    pub fn for_task(plan: &Plan, task: u32, row_slice: u32, rows: u64) -> Self {
        PartialProfile {
            plans: BTreeMap::from([(
                plan.id.clone(),
                PlanRecord {
                    dataset: plan.dataset.uri.clone(),
                    strategy: plan.strategy,
                    total_tasks: plan.tasks.len() as u32,
                    columns: plan.columns.clone(),
                },
            )]),
            tasks: BTreeSet::from([(plan.id.clone(), task)]),
            row_slices: BTreeMap::from([((plan.id.clone(), row_slice), rows)]),
            columns: Vec::new(),
            row_hashes: None,
            task_millis: 0,
            bytes_read: 0,
        }
    }

    pub fn row_count(&self) -> u64 {
        self.row_slices.values().sum()
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
        for (key, rows) in &other.row_slices {
            match self.row_slices.get(key) {
                Some(mine) if mine != rows => {
                    return Err(Error::Merge(format!(
                        "row slice {} of plan {} has {mine} rows in one partial and {rows} in another",
                        key.1, key.0
                    )));
                }
                Some(_) => {}
                None => {
                    self.row_slices.insert(key.clone(), *rows);
                }
            }
        }
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
        Ok(())
    }

    /// Columns in the order of the first plan's column list (then any others by name), so that
    /// every merge order gives the same profile.
    pub fn ordered_columns(&self) -> Vec<&ColumnState> {
        let mut order: Vec<&str> = Vec::new();
        for record in self.plans.values() {
            for c in &record.columns {
                if !order.contains(&c.as_str()) {
                    order.push(c);
                }
            }
        }
        let mut cols: Vec<&ColumnState> = self.columns.iter().collect();
        cols.sort_by_key(|c| {
            (
                order
                    .iter()
                    .position(|o| *o == c.name)
                    .unwrap_or(usize::MAX),
                c.name.clone(),
            )
        });
        cols
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
        if version != PARTIAL_VERSION {
            return Err(Error::Version {
                what: "partial profile",
                found: version,
                supported: PARTIAL_VERSION,
            });
        }
        postcard::from_bytes(&bytes[12..])
            .map_err(|e| Error::invalid("partial profile", format!("{what}: {e}")))
    }
}
