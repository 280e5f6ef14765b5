//! Drift between two profiles of the same table: which columns changed, and by how much,
//! beyond thresholds that tell a change from noise.
//!
//! [`diff`] compares an old profile with a new one, column by column (matched by name):
//!
//! - **Schema.** A column only in the new profile is *added*, one only in the old is *removed*,
//!   and one whose Arrow type changed (`Int64` → `Utf8`) is *retyped*; a retyped column is
//!   compared on its null ratio only, since its values are no longer comparable.
//! - **Null ratio.** The absolute change of `null_count / row_count`.
//! - **Distinct count.** The relative change `|d_new − d_old| / max(d_old, 1)`, reported only
//!   when, in addition, the two estimates' bounds do not overlap (an exact count's bounds are
//!   the count itself; a HyperLogLog estimate's are its `accuracy.distinct_count` bounds, at
//!   99.7% confidence): two estimates of one true count that differ only within their error are
//!   noise, not drift. Not compared when the profiles sample their rows at different rates.
//! - **Mean.** `|mean_new − mean_old| / std_old`: the shift in standard deviations of the old
//!   profile. Not computed when the old column is constant (`std_old` is 0): the distribution
//!   measures below see that change.
//! - **Standard deviation.** `max(std_new / std_old, std_old / std_new) − 1`; not computed when
//!   either is 0.
//! - **Kolmogorov–Smirnov distance.** `D = sup_x |F_old(x) − F_new(x)|` between the two
//!   cumulative distributions (both the `≤ x` and the `< x` form, so that point masses count),
//!   reported when `D − (ε_old + ε_new)` exceeds the threshold, where ε is each side's
//!   normalized rank error (0 for exact figures): a distance the sketches' own error could
//!   explain is not drift. When a profile carries its state (`--keep-state`), the
//!   distributions are the exact value counts while a column has them (`exact_distinct_limit`)
//!   and its KLL sketch after that; the supremum is then taken over every distinct value (exact
//!   counts) or the values at ranks 0, 0.005, …, 1 of each sketch, which underestimates `D` by at
//!   most 0.005. Without state on either side the two profiles' quantile tables (min, p1 … p99,
//!   max; temporal values as seconds or days) are compared as piecewise-linear distributions,
//!   which is less exact (for integers it smooths their steps, which can overstate `D`): such
//!   a change says `basis: quantile_table`.
//! - **Population stability index.** Over bins cut at the old distribution's deciles:
//!   `(−∞, min_old)`, `[min_old, q10]`, `(q10, q20]`, …, `(q90, ∞)` (tied deciles merged, so a
//!   column of few values gets one bin per value), `PSI = Σ (p_new − p_old) · ln(p_new / p_old)`
//!   with each proportion floored at 10⁻⁴ so that an empty bin counts as large, not infinite.
//!   The usual reading: below 0.1 stable, 0.1–0.2 a moderate shift, above 0.2 a major one.
//!   Columns of unordered values (strings, booleans) get the PSI over their shares instead: a
//!   bin per frequent value of the old profile and one for all other values, from the two
//!   top-value lists (an old value the new list leaves out, when that list is cut off, takes the
//!   new share nearest its old one that the list allows: between 0 and its smallest share).
//! - **Top values.** A frequent value of the new profile that is not among the old profile's
//!   frequent values has *appeared*, and one of the old that is not among the new has
//!   *vanished* — when the other list is complete (it lists every distinct value, so absence
//!   means the value did not occur) or, when it is not, when the value's share is at least twice
//!   the smallest share that list shows (so a value that merely moves across the list's
//!   cut-off is not reported).
//!
//! Every measure is drift when it is *beyond* its threshold: a measure exactly at the threshold
//! is not drift (with a relative tolerance of 10⁻⁹, so that `0.15 − 0.10` at a threshold of
//! `0.05` is "at", not above, whatever the floating-point rounding).

use crate::TableProfile;
use crate::kernel::{ColumnState, ColumnStats, IntState};
use crate::partial::PartialProfile;
use crate::profile::{ColumnProfile, ValueCount};
use crate::stats::{ExactQuantiles, Quantiles};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// How far a statistic may move before it is drift. Field names are camelCase in JSON (the
/// form a Kubernetes resource embeds); a field left out takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Thresholds {
    /// Absolute change of `null_count / row_count` (default 0.05).
    pub null_ratio: f64,
    /// Relative change of the distinct count, `|new − old| / max(old, 1)`, reported only when
    /// the two counts' bounds do not overlap as well (default 0.1).
    pub distinct_ratio: f64,
    /// Shift of the mean in standard deviations of the old profile,
    /// `|mean_new − mean_old| / std_old` (default 0.5).
    pub mean_shift: f64,
    /// `max(std_new / std_old, std_old / std_new) − 1` (default 0.5).
    pub std_ratio: f64,
    /// Kolmogorov–Smirnov distance beyond the two sides' rank errors (default 0.1).
    pub ks: f64,
    /// Population stability index over the old profile's deciles (default 0.2).
    pub psi: f64,
    /// Report frequent values that appeared or vanished (default true).
    pub top_values: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            null_ratio: 0.05,
            distinct_ratio: 0.1,
            mean_shift: 0.5,
            std_ratio: 0.5,
            ks: 0.1,
            psi: 0.2,
            top_values: true,
        }
    }
}

/// What changed between two profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Drift {
    /// Columns of both profiles with changes beyond the thresholds, in the old profile's order.
    pub columns: Vec<ColumnDrift>,
    /// Columns only in the new profile.
    pub added: Vec<String>,
    /// Columns only in the old profile.
    pub removed: Vec<String>,
    /// Columns whose type changed.
    pub retyped: Vec<Retyped>,
    /// What limited the comparison (a profile without state, or with missing tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A column's changes beyond the thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnDrift {
    pub column: String,
    pub changes: Vec<Change>,
}

/// A column whose type changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Retyped {
    pub column: String,
    /// The old profile's Arrow type.
    pub old: String,
    /// The new profile's Arrow type.
    pub new: String,
}

/// What a distribution measure was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The profiles' embedded state: exact value counts or KLL sketches.
    State,
    /// The profiles' quantile tables (p1 … p99), for profiles written without state: less
    /// exact.
    QuantileTable,
    /// The profiles' frequent values (columns of strings and booleans): the PSI over the old
    /// profile's listed values and the rest.
    TopValues,
}

/// One statistic that moved beyond its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "statistic", rename_all = "snake_case")]
pub enum Change {
    NullRatio {
        old: f64,
        new: f64,
        /// `|new − old|`.
        change: f64,
        threshold: f64,
    },
    DistinctCount {
        old: u64,
        new: u64,
        /// Bounds of the old and the new count (equal to the count when exact).
        old_bounds: (f64, f64),
        new_bounds: (f64, f64),
        /// `|new − old| / max(old, 1)`.
        change: f64,
        threshold: f64,
    },
    Mean {
        old: f64,
        new: f64,
        /// `|new − old| / std_old`.
        shift: f64,
        threshold: f64,
    },
    Std {
        old: f64,
        new: f64,
        /// `max(new / old, old / new) − 1`.
        change: f64,
        threshold: f64,
    },
    Ks {
        /// The medians (p50) of the two profiles, for the reader.
        old_median: Option<Value>,
        new_median: Option<Value>,
        /// The Kolmogorov–Smirnov distance.
        distance: f64,
        /// The two sides' rank errors summed: drift is `distance − rank_error > threshold`.
        rank_error: f64,
        threshold: f64,
        basis: Basis,
    },
    Psi {
        old_median: Option<Value>,
        new_median: Option<Value>,
        psi: f64,
        /// Bins the index was summed over.
        bins: usize,
        threshold: f64,
        basis: Basis,
    },
    TopValues {
        /// Frequent values of the new profile not among the old profile's (counts and shares
        /// of the new profile).
        appeared: Vec<ValueCount>,
        /// Frequent values of the old profile not among the new profile's (counts and shares of
        /// the old profile).
        vanished: Vec<ValueCount>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NullRatio { old, new, .. } => {
                write!(f, "null ratio {}→{}", short(*old), short(*new))
            }
            Change::DistinctCount { old, new, .. } => write!(f, "distinct {old}→{new}"),
            Change::Mean {
                old, new, shift, ..
            } => write!(
                f,
                "mean {}→{} ({} σ)",
                short(*old),
                short(*new),
                short(*shift)
            ),
            Change::Std { old, new, .. } => write!(f, "std {}→{}", short(*old), short(*new)),
            Change::Ks { distance, .. } => write!(f, "KS {}", short(*distance)),
            Change::Psi { psi, .. } => write!(f, "PSI {}", short(*psi)),
            Change::TopValues { appeared, vanished } => {
                // A few values, each cut short: a line, not a listing (the JSON has them all).
                let list = |v: &[ValueCount]| {
                    let mut shown: Vec<String> = v
                        .iter()
                        .take(SHOWN_VALUES)
                        .map(|c| cut(&render_value(&c.value), SHOWN_VALUE_CHARS))
                        .collect();
                    if v.len() > SHOWN_VALUES {
                        shown.push(format!("{} more", v.len() - SHOWN_VALUES));
                    }
                    shown.join(", ")
                };
                match (appeared.is_empty(), vanished.is_empty()) {
                    (false, false) => write!(
                        f,
                        "new values {}; vanished {}",
                        list(appeared),
                        list(vanished)
                    ),
                    (false, true) => write!(f, "new values {}", list(appeared)),
                    _ => write!(f, "vanished values {}", list(vanished)),
                }
            }
        }
    }
}

/// Values of a top-values change a summary names, and the characters it keeps of each.
const SHOWN_VALUES: usize = 3;
const SHOWN_VALUE_CHARS: usize = 32;
/// The longest summary, in bytes: a Kubernetes Event's note must stay under 1 KiB.
pub const SUMMARY_MAX_BYTES: usize = 1000;

/// `s` cut to `max` characters, with `…` when it was longer.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A value as a reader wants it: strings without quotes.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Three significant digits, without trailing zeros.
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Columns listed by name in a summary before "and N more".
const SUMMARY_COLUMNS: usize = 10;

impl Drift {
    /// Every column that drifted: changed beyond a threshold, added, removed or retyped; sorted.
    pub fn drifted_columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .columns
            .iter()
            .map(|c| c.column.clone())
            .chain(self.added.iter().cloned())
            .chain(self.removed.iter().cloned())
            .chain(self.retyped.iter().map(|r| r.column.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// No column drifted.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.retyped.is_empty()
    }

    /// One line: `3 columns drifted: a (null ratio 0.01→0.2), b (PSI 0.41), c (retyped
    /// Int64→Utf8)`, the first ten columns by name, at most [`SUMMARY_MAX_BYTES`] long (cut
    /// with `…`); `no drift` when none did.
    pub fn summary(&self) -> String {
        let names = self.drifted_columns();
        if names.is_empty() {
            return "no drift".into();
        }
        let parts: Vec<String> = names
            .iter()
            .take(SUMMARY_COLUMNS)
            .map(|name| format!("{name} ({})", self.describe(name)))
            .collect();
        let more = names.len().saturating_sub(SUMMARY_COLUMNS);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let noun = if names.len() == 1 {
            "column"
        } else {
            "columns"
        };
        let line = format!("{} {noun} drifted: {}{tail}", names.len(), parts.join(", "));
        if line.len() <= SUMMARY_MAX_BYTES {
            return line;
        }
        let mut end = SUMMARY_MAX_BYTES - '…'.len_utf8();
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    }

    /// What happened to one drifted column, e.g. `retyped Int64→Utf8, null ratio 0→0.5`.
    pub fn describe(&self, column: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.added.iter().any(|c| c == column) {
            parts.push("added".into());
        }
        if self.removed.iter().any(|c| c == column) {
            parts.push("removed".into());
        }
        if let Some(r) = self.retyped.iter().find(|r| r.column == column) {
            parts.push(format!("retyped {}→{}", r.old, r.new));
        }
        if let Some(c) = self.columns.iter().find(|c| c.column == column) {
            parts.extend(c.changes.iter().map(|ch| ch.to_string()));
        }
        parts.join(", ")
    }
}

/// `measure` is beyond `threshold`: strictly above it, by more than floating-point rounding.
fn beyond(measure: f64, threshold: f64) -> bool {
    measure > threshold + threshold.abs() * 1e-9 + 1e-12
}

/// The drift from `old` to `new`.
pub fn diff(old: &TableProfile, new: &TableProfile, thresholds: &Thresholds) -> Drift {
    let mut notes = Vec::new();
    let mut state = |p: &TableProfile, which: &str| match p.state() {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!(
                "the {which} profile's state cannot be read ({e}); its quantile table is used"
            ));
            None
        }
    };
    let old_state = state(old, "old");
    let new_state = state(new, "new");
    if old_state.is_none() || new_state.is_none() {
        notes.push(
            "a profile has no state (written without --keep-state, or unreadable): \
             distributions are compared by their quantile tables, which is less exact"
                .into(),
        );
    }
    for (p, which) in [(old, "old"), (new, "new")] {
        if !p.partitioning.missing_tasks.is_empty() {
            notes.push(format!(
                "the {which} profile misses tasks ({}): it covers only part of its data",
                p.partitioning.missing_tasks.join(" ")
            ));
        }
    }
    // A sample has fewer distinct values than its table: counts of samples taken at other rates
    // than each other's are not comparable (ratios and distributions are).
    let fraction = |p: &TableProfile| p.sampling.as_ref().map_or(1.0, |s| s.fraction);
    let same_rate = fraction(old) == fraction(new);
    if !same_rate {
        notes.push(format!(
            "the profiles sample different fractions of their rows ({} and {}): distinct counts \
             are not compared",
            fraction(old),
            fraction(new)
        ));
    }
    let states = old_state.as_ref().zip(new_state.as_ref());
    let mut drift = Drift {
        columns: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        retyped: Vec::new(),
        notes,
    };
    for o in &old.columns {
        let Some(n) = new.columns.iter().find(|c| c.name == o.name) else {
            drift.removed.push(o.name.clone());
            continue;
        };
        let mut changes = Vec::new();
        null_ratio(o, n, thresholds, &mut changes);
        if o.physical_type != n.physical_type {
            drift.retyped.push(Retyped {
                column: o.name.clone(),
                old: o.physical_type.clone(),
                new: n.physical_type.clone(),
            });
        } else {
            if same_rate {
                distinct(o, n, thresholds, &mut changes);
            }
            moments(o, n, thresholds, &mut changes);
            let states = states.map(|(a, b)| (column_state(a, &o.name), column_state(b, &n.name)));
            distribution(o, n, states, thresholds, &mut changes);
            if thresholds.top_values {
                top_values(o, n, &mut changes);
            }
        }
        if !changes.is_empty() {
            drift.columns.push(ColumnDrift {
                column: o.name.clone(),
                changes,
            });
        }
    }
    drift.added = new
        .columns
        .iter()
        .filter(|n| !old.columns.iter().any(|o| o.name == n.name))
        .map(|n| n.name.clone())
        .collect();
    drift
}

fn column_state<'a>(p: &'a PartialProfile, name: &str) -> Option<&'a ColumnState> {
    p.columns.iter().find(|c| c.name == name)
}

fn null_ratio(o: &ColumnProfile, n: &ColumnProfile, t: &Thresholds, out: &mut Vec<Change>) {
    let change = (n.null_ratio - o.null_ratio).abs();
    if beyond(change, t.null_ratio) {
        out.push(Change::NullRatio {
            old: o.null_ratio,
            new: n.null_ratio,
            change,
            threshold: t.null_ratio,
        });
    }
}

/// A distinct count's bounds: the count itself when exact, else the estimate's bounds.
fn distinct_bounds(p: &ColumnProfile, d: u64) -> (f64, f64) {
    match &p.accuracy.distinct_count {
        Some(e) if !e.exact => (
            e.lower_bound.unwrap_or(d as f64),
            e.upper_bound.unwrap_or(d as f64),
        ),
        _ => (d as f64, d as f64),
    }
}

fn distinct(o: &ColumnProfile, n: &ColumnProfile, t: &Thresholds, out: &mut Vec<Change>) {
    let (Some(od), Some(nd)) = (o.distinct_count, n.distinct_count) else {
        return;
    };
    let change = od.abs_diff(nd) as f64 / od.max(1) as f64;
    let (ob, nb) = (distinct_bounds(o, od), distinct_bounds(n, nd));
    let apart = nb.0 > ob.1 || nb.1 < ob.0;
    if apart && beyond(change, t.distinct_ratio) {
        out.push(Change::DistinctCount {
            old: od,
            new: nd,
            old_bounds: ob,
            new_bounds: nb,
            change,
            threshold: t.distinct_ratio,
        });
    }
}

fn moments(o: &ColumnProfile, n: &ColumnProfile, t: &Thresholds, out: &mut Vec<Change>) {
    let (Some(od), Some(nd)) = (&o.distribution, &n.distribution) else {
        return;
    };
    if let (Some(om), Some(nm), Some(os)) = (od.mean, nd.mean, od.std)
        && os > 0.0
    {
        let shift = (nm - om).abs() / os;
        if shift.is_finite() && beyond(shift, t.mean_shift) {
            out.push(Change::Mean {
                old: om,
                new: nm,
                shift,
                threshold: t.mean_shift,
            });
        }
    }
    if let (Some(os), Some(ns)) = (od.std, nd.std)
        && os > 0.0
        && ns > 0.0
    {
        let change = (ns / os).max(os / ns) - 1.0;
        if change.is_finite() && beyond(change, t.std_ratio) {
            out.push(Change::Std {
                old: os,
                new: ns,
                change,
                threshold: t.std_ratio,
            });
        }
    }
}

/// A column's distribution, as far as one profile knows it.
enum Cdf<'a> {
    /// Exact value counts (the state while the column had them).
    Exact(ExactQuantiles, Vec<f64>),
    /// The state's KLL sketch.
    Sketch(&'a Quantiles),
    /// (value, rank) points of the profile's quantile table, by value: the distribution is
    /// taken as linear between them.
    Table(Vec<(f64, f64)>),
}

/// Ranks at which a sketch is evaluated for the KS supremum.
const KS_GRID: usize = 200;
/// The floor of a PSI bin's proportion.
const PSI_FLOOR: f64 = 1e-4;

impl<'a> Cdf<'a> {
    fn of_state(c: &'a ColumnState) -> Option<Cdf<'a>> {
        let exact = |counts: Vec<(f64, u64)>, integer: bool| {
            let mut values: Vec<f64> = counts.iter().map(|c| c.0).collect();
            values.sort_by(f64::total_cmp);
            Cdf::Exact(ExactQuantiles::new(counts, integer), values)
        };
        let of_ints = |s: &'a IntState| match s.values.exact_counts() {
            Some(map) => exact(map.iter().map(|(v, c)| (*v as f64, *c)).collect(), true),
            None => Cdf::Sketch(&s.quantiles),
        };
        let cdf = match &c.stats {
            ColumnStats::Integer(s) => of_ints(s),
            ColumnStats::Temporal { state, .. } => of_ints(state),
            ColumnStats::Float(s) => match s.values.exact_counts() {
                Some(map) => exact(
                    map.iter()
                        .map(|(bits, c)| (f64::from_bits(*bits), *c))
                        .filter(|(v, _)| v.is_finite())
                        .collect(),
                    false,
                ),
                None => Cdf::Sketch(&s.quantiles),
            },
            _ => return None,
        };
        (cdf.n() > 0).then_some(cdf)
    }

    fn of_table(p: &ColumnProfile) -> Option<Cdf<'static>> {
        let q = p.quantiles.as_ref()?;
        let mut points = vec![(table_number(p.min.as_ref()?)?, 0.0)];
        for (name, rank) in crate::profile::QUANTILES {
            points.push((table_number(q.get(name)?)?, rank));
        }
        points.push((table_number(p.max.as_ref()?)?, 1.0));
        if points.iter().any(|p| !p.0.is_finite()) {
            return None;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        Some(Cdf::Table(points))
    }

    fn n(&self) -> u64 {
        match self {
            Cdf::Exact(e, _) => e.n(),
            Cdf::Sketch(q) => q.n(),
            Cdf::Table(_) => 1,
        }
    }

    fn rank_error(&self, p: &ColumnProfile) -> f64 {
        match self {
            Cdf::Exact(..) => 0.0,
            Cdf::Sketch(q) if q.is_exact() => 0.0,
            Cdf::Sketch(q) => q.rank_error(),
            Cdf::Table(_) => p
                .accuracy
                .quantiles
                .as_ref()
                .and_then(|e| e.normalized_rank_error)
                .unwrap_or(0.0),
        }
    }

    /// Points where the distribution function may jump or bend.
    fn grid(&self) -> Vec<f64> {
        match self {
            Cdf::Exact(_, values) => values.clone(),
            Cdf::Sketch(q) => {
                let ranks: Vec<f64> = (0..=KS_GRID).map(|i| i as f64 / KS_GRID as f64).collect();
                q.quantiles(&ranks).unwrap_or_default()
            }
            Cdf::Table(points) => points.iter().map(|p| p.0).collect(),
        }
    }

    fn quantiles(&self, ranks: &[f64]) -> Option<Vec<f64>> {
        match self {
            Cdf::Exact(e, _) => e.quantiles(ranks),
            Cdf::Sketch(q) => q.quantiles(ranks),
            Cdf::Table(points) => Some(
                ranks
                    .iter()
                    .map(|&r| {
                        let i = points.partition_point(|p| p.1 < r);
                        match (i.checked_sub(1).map(|j| points[j]), points.get(i)) {
                            (Some(a), Some(b)) if b.1 > a.1 => {
                                a.0 + (b.0 - a.0) * (r - a.1) / (b.1 - a.1)
                            }
                            (_, Some(b)) => b.0,
                            (Some(a), None) => a.0,
                            (None, None) => f64::NAN,
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// The fraction of values at most (`inclusive`) or below each of `points` (increasing).
    fn at(&self, points: &[f64], inclusive: bool) -> Option<Vec<f64>> {
        match self {
            Cdf::Exact(e, _) => e.cdf(points, inclusive),
            Cdf::Sketch(q) => {
                let mut f = q.cdf(points, inclusive)?;
                f.truncate(points.len());
                Some(f)
            }
            Cdf::Table(knots) => Some(
                points
                    .iter()
                    .map(|&x| table_cdf(knots, x, inclusive))
                    .collect(),
            ),
        }
    }
}

/// A quantile, min or max of a profile as a number: numbers as they are, temporal values (ISO
/// 8601 text) as seconds since the epoch, dates as days.
fn table_number(v: &Value) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
                return Some(t.unix_timestamp_nanos() as f64 / 1e9);
            }
            let date =
                time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"));
            date.ok().map(|d| f64::from(d.to_julian_day() - 2_440_588))
        }
        _ => None,
    }
}

/// The piecewise-linear distribution through `knots` at `x`: its value (`inclusive`) or its
/// limit from the left.
fn table_cdf(knots: &[(f64, f64)], x: f64, inclusive: bool) -> f64 {
    // The last knot at (or before) x, and the first one after it.
    let i = if inclusive {
        knots.partition_point(|k| k.0 <= x)
    } else {
        knots.partition_point(|k| k.0 < x)
    };
    match (i.checked_sub(1).map(|j| knots[j]), knots.get(i)) {
        (None, _) => 0.0,
        (Some(_), None) => 1.0,
        (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0),
        (Some(a), Some(_)) => a.1,
    }
}

fn sorted_unique(mut v: Vec<f64>) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

fn ks_distance(o: &Cdf, n: &Cdf) -> Option<f64> {
    let mut grid = o.grid();
    grid.extend(n.grid());
    let grid = sorted_unique(grid);
    if grid.is_empty() {
        return None;
    }
    let mut d: f64 = 0.0;
    for inclusive in [true, false] {
        let (a, b) = (o.at(&grid, inclusive)?, n.at(&grid, inclusive)?);
        for (x, y) in a.iter().zip(&b) {
            d = d.max((x - y).abs());
        }
    }
    Some(d)
}

/// The PSI over the old distribution's deciles, and the number of bins.
fn psi(o: &Cdf, n: &Cdf) -> Option<(f64, usize)> {
    let ranks: Vec<f64> = (1..10).map(|i| i as f64 / 10.0).collect();
    let min = *o.quantiles(&[0.0])?.first()?;
    let edges = sorted_unique(o.quantiles(&ranks)?);
    if !min.is_finite() {
        return None;
    }
    // Cumulative fractions at the cuts: below the old minimum, then at most each decile.
    let cuts = |c: &Cdf| -> Option<Vec<f64>> {
        let mut f = vec![0.0];
        f.extend(c.at(&[min], false)?);
        f.extend(c.at(&edges, true)?);
        f.push(1.0);
        Some(f)
    };
    let (a, b) = (cuts(o)?, cuts(n)?);
    let mut sum = 0.0;
    for i in 1..a.len() {
        sum += psi_term((b[i] - b[i - 1]).max(0.0), (a[i] - a[i - 1]).max(0.0));
    }
    Some((sum, a.len() - 1))
}

fn distribution(
    o: &ColumnProfile,
    n: &ColumnProfile,
    states: Option<(Option<&ColumnState>, Option<&ColumnState>)>,
    t: &Thresholds,
    out: &mut Vec<Change>,
) {
    let from_state = states
        .and_then(|(a, b)| Some((Cdf::of_state(a?)?, Cdf::of_state(b?)?)))
        .map(|(a, b)| (a, b, Basis::State));
    let Some((oc, nc, basis)) =
        from_state.or_else(|| Some((Cdf::of_table(o)?, Cdf::of_table(n)?, Basis::QuantileTable)))
    else {
        // Values without an order: their shares.
        if let Some((psi, bins)) = categorical_psi(o, n)
            && beyond(psi, t.psi)
        {
            out.push(Change::Psi {
                old_median: None,
                new_median: None,
                psi,
                bins,
                threshold: t.psi,
                basis: Basis::TopValues,
            });
        }
        return;
    };
    let median = |p: &ColumnProfile| p.quantiles.as_ref().and_then(|q| q.get("p50").cloned());
    if let Some(distance) = ks_distance(&oc, &nc) {
        let rank_error = oc.rank_error(o) + nc.rank_error(n);
        if beyond(distance - rank_error, t.ks) {
            out.push(Change::Ks {
                old_median: median(o),
                new_median: median(n),
                distance,
                rank_error,
                threshold: t.ks,
                basis,
            });
        }
    }
    if let Some((psi, bins)) = psi(&oc, &nc)
        && beyond(psi, t.psi)
    {
        out.push(Change::Psi {
            old_median: median(o),
            new_median: median(n),
            psi,
            bins,
            threshold: t.psi,
            basis,
        });
    }
}

/// A PSI term, each proportion floored.
fn psi_term(p_new: f64, p_old: f64) -> f64 {
    let (a, e) = (p_new.max(PSI_FLOOR), p_old.max(PSI_FLOOR));
    (a - e) * (a / e).ln()
}

/// The PSI of a column of unordered values over the old profile's frequent values and one bin
/// for the rest, from the two top-value lists. A listed old value absent from an incomplete new
/// list has a new share somewhere between 0 and the smallest share the new list shows: the one
/// nearest its old share is taken, so that what the list cannot tell is never drift.
fn categorical_psi(o: &ColumnProfile, n: &ColumnProfile) -> Option<(f64, usize)> {
    if o.top_values.is_empty() || n.top_values.is_empty() {
        return None;
    }
    let new_complete = complete(n);
    let new_smallest = n
        .top_values
        .iter()
        .map(|v| v.ratio)
        .fold(f64::INFINITY, f64::min);
    let (mut sum, mut old_rest, mut new_rest) = (0.0, 1.0, 1.0);
    for v in &o.top_values {
        let share = match n.top_values.iter().find(|t| t.value == v.value) {
            Some(t) => t.ratio,
            None if new_complete => 0.0,
            None => v.ratio.min(new_smallest),
        };
        sum += psi_term(share, v.ratio);
        old_rest -= v.ratio;
        new_rest -= share;
    }
    sum += psi_term(new_rest.max(0.0), old_rest.max(0.0));
    Some((sum, o.top_values.len() + 1))
}

/// The list names every distinct value, so a value absent from it did not occur.
fn complete(p: &ColumnProfile) -> bool {
    let exact = p.accuracy.top_values.as_ref().is_some_and(|e| e.exact);
    exact && p.distinct_count == Some(p.top_values.len() as u64)
}

/// Values of `from` not among `other`'s frequent values, by the rule in the module docs.
fn missing_from(from: &ColumnProfile, other: &ColumnProfile) -> Vec<ValueCount> {
    let other_complete = complete(other);
    let smallest = other
        .top_values
        .iter()
        .map(|v| v.ratio)
        .fold(f64::INFINITY, f64::min);
    from.top_values
        .iter()
        .filter(|v| !other.top_values.iter().any(|o| o.value == v.value))
        .filter(|v| other_complete || (smallest.is_finite() && v.ratio >= 2.0 * smallest))
        .cloned()
        .collect()
}

fn top_values(o: &ColumnProfile, n: &ColumnProfile, out: &mut Vec<Change>) {
    // A list left out (a backend that did not compute it) says nothing about values.
    if o.top_values.is_empty() || n.top_values.is_empty() {
        return;
    }
    let appeared = missing_from(n, o);
    let vanished = missing_from(o, n);
    if !appeared.is_empty() || !vanished.is_empty() {
        out.push(Change::TopValues { appeared, vanished });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, len: usize) -> Vec<ValueCount> {
        (0..n)
            .map(|i| ValueCount {
                value: Value::String(format!("{i}{}", "é".repeat(len))),
                count: 1,
                ratio: 0.1,
            })
            .collect()
    }

    #[test]
    fn summaries_stay_short_enough_for_an_event() {
        let change = Change::TopValues {
            appeared: values(5, 100),
            vanished: Vec::new(),
        };
        let text = change.to_string();
        assert!(text.starts_with("new values 0éé"), "{text}");
        assert!(text.ends_with("…, 2 more"), "{text}");
        assert!(text.chars().count() < 3 * 40 + 30, "{text}");
        let drift = Drift {
            columns: (0..50)
                .map(|i| ColumnDrift {
                    column: format!("column_{i:02}_{}", "ü".repeat(60)),
                    changes: vec![change.clone()],
                })
                .collect(),
            added: Vec::new(),
            removed: Vec::new(),
            retyped: Vec::new(),
            notes: Vec::new(),
        };
        let summary = drift.summary();
        assert!(
            summary.starts_with("50 columns drifted: column_00_"),
            "{summary}"
        );
        assert!(summary.len() <= SUMMARY_MAX_BYTES, "{}", summary.len());
        assert!(summary.ends_with('…'));
    }

    #[test]
    fn short_numbers_and_the_threshold_edge() {
        assert_eq!(short(0.41234), "0.412");
        assert_eq!(short(18.41883), "18.4");
        assert_eq!(short(1.0), "1");
        assert_eq!(short(1234.6), "1235");
        assert!(!beyond(0.15 - 0.10, 0.05));
        assert!(!beyond(0.05, 0.05));
        assert!(beyond(0.050001, 0.05));
        assert!(!beyond(f64::NAN, 0.0));
    }

    #[test]
    fn table_distribution_is_linear_between_knots_and_steps_at_ties() {
        let knots = [(0.0, 0.0), (10.0, 0.5), (10.0, 0.6), (20.0, 1.0)];
        assert_eq!(table_cdf(&knots, -1.0, true), 0.0);
        assert_eq!(table_cdf(&knots, 5.0, true), 0.25);
        // At a tie the value jumps: below it the left limit, at it the top of the jump.
        assert_eq!(table_cdf(&knots, 10.0, false), 0.5);
        assert_eq!(table_cdf(&knots, 10.0, true), 0.6);
        assert_eq!(table_cdf(&knots, 15.0, true), 0.8);
        assert_eq!(table_cdf(&knots, 20.0, true), 1.0);
        assert_eq!(table_number(&Value::from("2024-01-02")), Some(19724.0));
        assert_eq!(
            table_number(&Value::from("1970-01-01T00:01:00.5Z")),
            Some(60.5)
        );
        assert_eq!(table_number(&Value::from("x")), None);
    }
}
