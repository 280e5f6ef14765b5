//! Drift between two profiles: every threshold at its edge (a measure exactly at its threshold
//! is not drift, one just above is), on profiles the engine makes of known data, with their
//! state (exact counts and KLL sketches) and without it (quantile tables).

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use truthound_profile::drift::{Basis, Change, Drift, Thresholds, diff};
use truthound_profile::kernel::ColumnState;
use truthound_profile::kernel::column::Scratch;
use truthound_profile::partial::PlanRecord;
use truthound_profile::{PartialProfile, ProfileOptions, Strategy, TableProfile};

/// The profile (with state) of one table of `columns`, profiled in one task.
fn profile_with(columns: &[(&str, ArrayRef)], options: &ProfileOptions) -> TableProfile {
    let rows = columns.first().map_or(0, |c| c.1.len() as u64);
    let mut scratch = Scratch::default();
    let states = columns
        .iter()
        .map(|(name, a)| {
            let mut c = ColumnState::new(name, a.data_type(), options, false);
            c.update(a, &mut scratch).unwrap();
            c
        })
        .collect();
    let key = ("plan".to_string(), 0);
    let partial = PartialProfile {
        plans: BTreeMap::from([(
            "plan".to_string(),
            PlanRecord {
                dataset: "memory".into(),
                strategy: Strategy::RowBased,
                total_tasks: 1,
                columns: columns.iter().map(|c| c.0.to_string()).collect(),
                sampling: None,
            },
        )]),
        tasks: BTreeSet::from([key.clone()]),
        row_slices: BTreeMap::from([(key.clone(), rows)]),
        rows_scanned: BTreeMap::from([(key, rows)]),
        columns: states,
        row_hashes: None,
        task_millis: 0,
        bytes_read: 0,
        unavailable: BTreeSet::new(),
    };
    TableProfile::from_partial(&partial, 0, true, 10)
}

fn profile(columns: &[(&str, ArrayRef)]) -> TableProfile {
    profile_with(columns, &ProfileOptions::default())
}

fn ints(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from(v.into_iter().collect::<Vec<_>>()))
}

fn floats(v: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from(v.into_iter().collect::<Vec<_>>()))
}

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// Thresholds that report nothing but `statistic`, at `threshold`.
fn only(statistic: &str, threshold: f64) -> Thresholds {
    let never = 1e9;
    let mut t = Thresholds {
        null_ratio: never,
        distinct_ratio: never,
        mean_shift: never,
        std_ratio: never,
        ks: never,
        psi: never,
        top_values: false,
    };
    match statistic {
        "null_ratio" => t.null_ratio = threshold,
        "distinct_count" => t.distinct_ratio = threshold,
        "mean" => t.mean_shift = threshold,
        "std" => t.std_ratio = threshold,
        "ks" => t.ks = threshold,
        "psi" => t.psi = threshold,
        other => panic!("{other}"),
    }
    t
}

fn changes(d: &Drift, column: &str) -> Vec<Change> {
    d.columns
        .iter()
        .find(|c| c.column == column)
        .map(|c| c.changes.clone())
        .unwrap_or_default()
}

/// The statistic's measure (as the change reports it) and whether it is reported.
fn measure(c: &Change) -> f64 {
    match c {
        Change::NullRatio { change, .. } => *change,
        Change::DistinctCount { change, .. } => *change,
        Change::Mean { shift, .. } => *shift,
        Change::Std { change, .. } => *change,
        Change::Ks {
            distance,
            rank_error,
            ..
        } => distance - rank_error,
        Change::Psi { psi, .. } => *psi,
        Change::TopValues { .. } => f64::NAN,
    }
}

/// At `at` the statistic is not drift; just above (`at` less a millionth of it as the
/// threshold) it is, with the measure `at`.
fn assert_edge(old: &TableProfile, new: &TableProfile, statistic: &str, at: f64) {
    let d = diff(old, new, &only(statistic, at));
    assert!(d.is_empty(), "{statistic} at its threshold {at}: {d:?}");
    let below = at - at.abs() * 1e-6;
    let d = diff(old, new, &only(statistic, below));
    let c = changes(&d, "x");
    assert_eq!(c.len(), 1, "{statistic} above {below}: {d:?}");
    let m = measure(&c[0]);
    assert!(
        (m - at).abs() <= 1e-12 * at.abs().max(1.0),
        "{statistic}: {m} ≠ {at}"
    );
    assert_eq!(d.drifted_columns(), vec!["x".to_string()]);
}

#[test]
fn null_ratio_at_and_above_its_threshold() {
    let col = |nulls: usize| ints((0..100).map(|i| (i >= nulls).then_some(i as i64)));
    let old = profile(&[("x", col(10))]);
    // 0.15 − 0.10 is 0.04999999999999999 in floating point: at 0.05, not above it.
    let d = diff(&old, &profile(&[("x", col(15))]), &only("null_ratio", 0.05));
    assert!(d.is_empty(), "{d:?}");
    let new = profile(&[("x", col(16))]);
    let d = diff(&old, &new, &only("null_ratio", 0.05));
    match changes(&d, "x").as_slice() {
        [Change::NullRatio { old, new, .. }] => assert_eq!((*old, *new), (0.10, 0.16)),
        other => panic!("{other:?}"),
    }
    assert_edge(&old, &new, "null_ratio", 0.16 - 0.10);
    // The default (0.05) sees 0.06 and not 0.05.
    assert!(!diff(&old, &new, &Thresholds::default()).is_empty());
}

#[test]
fn distinct_count_at_and_above_its_threshold_when_exact() {
    let old = profile(&[("x", ints((0..100).map(Some)))]);
    // 110 distinct values: a change of exactly 0.1.
    let at = profile(&[("x", ints((0..110).map(Some)))]);
    assert!(diff(&old, &at, &only("distinct_count", 0.1)).is_empty());
    let above = profile(&[("x", ints((0..111).map(Some)))]);
    match changes(&diff(&old, &above, &only("distinct_count", 0.1)), "x").as_slice() {
        [Change::DistinctCount { old, new, .. }] => assert_eq!((*old, *new), (100, 111)),
        other => panic!("{other:?}"),
    }
    assert_edge(&old, &above, "distinct_count", 0.11);
}

#[test]
fn distinct_counts_whose_bounds_overlap_are_not_drift() {
    // Past the exact limit the counts are HyperLogLog estimates with bounds.
    let options = ProfileOptions {
        exact_distinct_limit: 100,
        ..ProfileOptions::default()
    };
    let a = profile_with(&[("x", ints((0..50_000).map(Some)))], &options);
    let b = profile_with(&[("x", ints((0..50_250).map(Some)))], &options);
    let estimate = |p: &TableProfile| p.columns[0].accuracy.distinct_count.clone().unwrap();
    assert!(!estimate(&a).exact);
    let (ea, eb) = (estimate(&a), estimate(&b));
    assert!(
        eb.lower_bound.unwrap() <= ea.upper_bound.unwrap(),
        "the test needs overlapping bounds: {ea:?} {eb:?}"
    );
    // Even a threshold of zero does not make noise drift.
    assert!(diff(&a, &b, &only("distinct_count", 0.0)).is_empty());
    // Twice the values: bounds apart, and drift.
    let c = profile_with(&[("x", ints((0..100_000).map(Some)))], &options);
    let d = diff(&a, &c, &only("distinct_count", 0.5));
    assert!(
        matches!(changes(&d, "x").as_slice(), [Change::DistinctCount { .. }]),
        "{d:?}"
    );
}

#[test]
fn mean_and_std_at_and_above_their_thresholds() {
    let old = profile(&[("x", floats((0..100).map(f64::from)))]);
    let std_old = old.columns[0].distribution.as_ref().unwrap().std.unwrap();
    // Shifted by 10: the mean moves 10 / std_old, the spread not at all.
    let shifted = profile(&[("x", floats((10..110).map(f64::from)))]);
    assert_edge(&old, &shifted, "mean", 10.0 / std_old);
    assert!(diff(&old, &shifted, &only("std", 0.0)).is_empty());
    // Scaled by 1.5 around its mean: the spread grows by exactly 0.5, the mean stays.
    let scaled = profile(&[(
        "x",
        floats((0..100).map(|v| 49.5 + 1.5 * (f64::from(v) - 49.5))),
    )]);
    assert!(diff(&old, &scaled, &only("mean", 0.0)).is_empty());
    assert_edge(&old, &scaled, "std", 0.5);
    // The defaults: 0.34 σ is not a mean shift (0.5); D = 0.1 is at the KS threshold.
    assert!(
        diff(
            &old,
            &shifted,
            &Thresholds {
                psi: 1e9,
                ..Thresholds::default()
            }
        )
        .is_empty()
    );
}

#[test]
fn ks_and_psi_from_exact_counts_at_and_above_their_thresholds() {
    let old = profile(&[("x", ints((0..100).map(Some)))]);
    let new = profile(&[("x", ints((10..110).map(Some)))]);
    // Below 10 the old distribution has 10% of its values and the new none: D = 0.1, exactly
    // (exact counts have no rank error).
    assert_edge(&old, &new, "ks", 0.1);
    // Old deciles 9, 19, …, 89: the first bin [0, 9] empties (0.1 → the floor), the last one
    // (89, ∞) doubles (0.1 → 0.2).
    let psi = (1e-4 - 0.1) * (1e-4f64 / 0.1).ln() + (0.2 - 0.1) * 2f64.ln();
    assert_edge(&old, &new, "psi", psi);
    let d = diff(&old, &new, &only("psi", 0.0));
    match changes(&d, "x").as_slice() {
        [Change::Psi { bins, basis, .. }] => assert_eq!((*bins, *basis), (11, Basis::State)),
        other => panic!("{other:?}"),
    }
    // The same data is no drift at all, at any threshold.
    let same = profile(&[("x", ints((0..100).rev().map(Some)))]);
    let zero = Thresholds {
        null_ratio: 0.0,
        distinct_ratio: 0.0,
        mean_shift: 0.0,
        std_ratio: 0.0,
        ks: 0.0,
        psi: 0.0,
        top_values: true,
    };
    assert!(diff(&old, &same, &zero).is_empty());
}

#[test]
fn a_constant_that_changes_is_drift_by_ks_and_psi() {
    let old = profile(&[("x", ints(std::iter::repeat_n(Some(1), 50)))]);
    let new = profile(&[("x", ints(std::iter::repeat_n(Some(2), 50)))]);
    let d = diff(&old, &new, &Thresholds::default());
    let c = changes(&d, "x");
    assert!(
        c.iter()
            .any(|c| matches!(c, Change::Ks { distance, .. } if *distance == 1.0)),
        "{c:?}"
    );
    assert!(
        c.iter()
            .any(|c| matches!(c, Change::Psi { psi, .. } if *psi > 10.0)),
        "{c:?}"
    );
    // The single frequent value was replaced (both lists are complete).
    assert!(
        c.iter()
            .any(|c| matches!(c, Change::TopValues { appeared, vanished }
            if appeared[0].value == 2 && vanished[0].value == 1)),
        "{c:?}"
    );
    // A constant old column has no spread to measure the mean's shift in.
    assert!(!c.iter().any(|c| matches!(c, Change::Mean { .. })), "{c:?}");
    assert!(
        d.summary().starts_with("1 column drifted: x (KS 1, PSI "),
        "{}",
        d.summary()
    );
}

#[test]
fn ks_from_sketches_allows_for_their_rank_error() {
    // Past the exact limit the distribution is a KLL sketch (k = 200, ε ≈ 1.3% per side).
    let options = ProfileOptions {
        exact_distinct_limit: 100,
        ..ProfileOptions::default()
    };
    let uniform = |from: i64, n: i64| ints((0..n).map(|i| Some(from + (i * 7919) % n)));
    let old = profile_with(&[("x", uniform(0, 200_000))], &options);
    // The same distribution, other values: its KS distance is within the sketches' error.
    let same = profile_with(&[("x", uniform(1, 200_000))], &options);
    let d = diff(&old, &same, &only("ks", 0.0));
    assert!(d.is_empty(), "{d:?}");
    // Shifted by 5% of its range: D ≈ 0.05, beyond the rank errors of 0.02-0.03.
    let shifted = profile_with(&[("x", uniform(10_000, 200_000))], &options);
    let d = diff(&old, &shifted, &only("ks", 0.0));
    match changes(&d, "x").as_slice() {
        [
            Change::Ks {
                distance,
                rank_error,
                basis,
                ..
            },
        ] => {
            assert!((distance - 0.05).abs() < 0.03, "{distance}");
            assert!(*rank_error > 0.0 && *rank_error < 0.05, "{rank_error}");
            assert_eq!(*basis, Basis::State);
            // At the threshold that is the distance less the error: not drift.
            assert!(diff(&old, &shifted, &only("ks", distance - rank_error)).is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_state_the_quantile_tables_are_compared() {
    let strip = |mut p: TableProfile| {
        p.state = None;
        p
    };
    let old = strip(profile(&[("x", floats((0..1000).map(f64::from)))]));
    let same = strip(profile(&[("x", floats((0..1000).rev().map(f64::from)))]));
    let new = strip(profile(&[("x", floats((300..1300).map(f64::from)))]));
    let t = Thresholds::default();
    let d = diff(&old, &same, &t);
    assert!(d.columns.is_empty(), "{d:?}");
    assert!(
        d.notes.iter().any(|n| n.contains("quantile tables")),
        "{d:?}"
    );
    let d = diff(&old, &new, &t);
    let c = changes(&d, "x");
    assert!(
        c.iter().any(
            |c| matches!(c, Change::Ks { distance, basis: Basis::QuantileTable, .. }
            if (distance - 0.3).abs() < 0.01)
        ),
        "{c:?}"
    );
    assert!(
        c.iter().any(|c| matches!(
            c,
            Change::Psi {
                basis: Basis::QuantileTable,
                ..
            }
        )),
        "{c:?}"
    );
}

#[test]
fn top_values_appear_and_vanish() {
    let old = profile(&[("x", strings(&["a", "a", "a", "b", "b", "c"]))]);
    let new = profile(&[("x", strings(&["a", "a", "a", "b", "b", "d"]))]);
    let t = Thresholds {
        top_values: true,
        ..only("ks", 1e9)
    };
    match changes(&diff(&old, &new, &t), "x").as_slice() {
        [Change::TopValues { appeared, vanished }] => {
            assert_eq!(appeared.len(), 1);
            assert_eq!(appeared[0].value, "d");
            assert_eq!(vanished[0].value, "c");
        }
        other => panic!("{other:?}"),
    }
    // Off: not reported.
    assert!(diff(&old, &new, &only("ks", 1e9)).is_empty());
    // Lists cut at top_k: a value that only crosses the cut-off is not new, one that is at
    // least twice the smallest listed share is.
    let options = ProfileOptions {
        top_k: 2,
        ..ProfileOptions::default()
    };
    let cut = |v: &[&str]| profile_with(&[("x", strings(v))], &options);
    let old = cut(&["a", "a", "a", "a", "b", "b", "b", "c", "c", "d"]);
    let crossed = cut(&["a", "a", "a", "a", "c", "c", "c", "b", "b", "d"]);
    assert!(diff(&old, &crossed, &t).is_empty());
    let surged = cut(&["a", "a", "a", "d", "d", "d", "d", "d", "d", "d"]);
    match changes(&diff(&old, &surged, &t), "x").as_slice() {
        [Change::TopValues { appeared, vanished }] => {
            assert_eq!(appeared[0].value, "d");
            // The new list names both of its values: b, absent from it, no longer occurs.
            assert_eq!(vanished.len(), 1, "{vanished:?}");
            assert_eq!(vanished[0].value, "b");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn schema_changes_are_named() {
    let old = profile(&[
        ("kept", ints((0..10).map(Some))),
        ("gone", ints((0..10).map(Some))),
        ("typed", ints((0..10).map(Some))),
    ]);
    let new = profile(&[
        ("kept", ints((0..10).map(Some))),
        (
            "typed",
            strings(&["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
        ),
        ("fresh", ints((0..10).map(Some))),
    ]);
    let d = diff(&old, &new, &Thresholds::default());
    assert_eq!(d.added, vec!["fresh"]);
    assert_eq!(d.removed, vec!["gone"]);
    assert_eq!(d.retyped.len(), 1);
    assert_eq!(
        (d.retyped[0].old.as_str(), d.retyped[0].new.as_str()),
        ("Int64", "Utf8")
    );
    assert!(d.columns.is_empty(), "{d:?}");
    assert_eq!(d.drifted_columns(), vec!["fresh", "gone", "typed"]);
    assert_eq!(
        d.summary(),
        "3 columns drifted: fresh (added), gone (removed), typed (retyped Int64→Utf8)"
    );
    // The drift is JSON with the statistic named in each change.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["retyped"][0]["column"], "typed");
    let d = diff(
        &old,
        &profile(&[("kept", ints((0..10).map(|_| None)))]),
        &Thresholds::default(),
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["columns"][0]["changes"][0]["statistic"], "null_ratio");
    assert_eq!(
        serde_json::from_value::<Drift>(json).unwrap(),
        d,
        "the JSON reads back"
    );
}

#[test]
fn thresholds_read_from_partial_camel_case_json() {
    let t: Thresholds = serde_json::from_str(r#"{"nullRatio": 0.2, "topValues": false}"#).unwrap();
    assert_eq!(
        t,
        Thresholds {
            null_ratio: 0.2,
            top_values: false,
            ..Thresholds::default()
        }
    );
}

#[test]
fn psi_of_unordered_values_over_their_shares() {
    let rows = |a: usize, b: usize, c: usize| {
        let mut v = vec!["a"; a];
        v.extend(vec!["b"; b]);
        v.extend(vec!["c"; c]);
        profile(&[("x", strings(&v))])
    };
    let old = rows(5, 3, 2);
    let new = rows(2, 3, 5);
    // a: 0.5 → 0.2, b: 0.3 → 0.3, c: 0.2 → 0.5, the rest: 0 → 0.
    let psi = (0.2f64 - 0.5) * (0.2f64 / 0.5).ln() + (0.5f64 - 0.2) * (0.5f64 / 0.2).ln();
    assert_edge(&old, &new, "psi", psi);
    match changes(&diff(&old, &new, &only("psi", 0.0)), "x").as_slice() {
        [Change::Psi { bins, basis, .. }] => assert_eq!((*bins, *basis), (4, Basis::TopValues)),
        other => panic!("{other:?}"),
    }
    // The same shares in other rows: nothing.
    assert!(diff(&old, &rows(10, 6, 4), &only("psi", 0.0)).is_empty());
    // A list cut at top_k = 1 says only that b and c are at most 0.4 of the new rows: the old
    // value a at 0.5 → 0.6 is all it can tell, and the rest (0.5 → 0.4).
    let options = ProfileOptions {
        top_k: 1,
        ..ProfileOptions::default()
    };
    let cut = |v: &[&str]| profile_with(&[("x", strings(v))], &options);
    let old = cut(&["a", "a", "a", "a", "a", "b", "b", "b", "c", "c"]);
    let new = cut(&["a", "a", "a", "a", "a", "a", "c", "c", "c", "b"]);
    let psi = (0.6f64 - 0.5) * (0.6f64 / 0.5).ln() + (0.4f64 - 0.5) * (0.4f64 / 0.5).ln();
    assert_edge(&old, &new, "psi", psi);
}

#[test]
fn distinct_counts_of_samples_at_other_rates_are_not_compared() {
    let old = profile(&[("x", ints((0..100).map(Some)))]);
    let mut new = profile(&[("x", ints((0..200).map(Some)))]);
    assert!(!diff(&old, &new, &only("distinct_count", 0.1)).is_empty());
    new.sampling = Some(truthound_profile::profile::SampleInfo {
        fraction: 0.5,
        seed: Some(1),
        rows_scanned: 400,
    });
    let d = diff(&old, &new, &only("distinct_count", 0.1));
    assert!(d.is_empty(), "{d:?}");
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("sample different fractions")),
        "{d:?}"
    );
}
