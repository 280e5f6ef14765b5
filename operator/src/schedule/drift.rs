//! Drift between successive successful runs: both profiles are read from object storage (with
//! the run's output storage options and credentials, as the ProfileJob reconciler reads its
//! objects) and compared by `truthound_profile::drift` with the schedule's thresholds.

use super::crd::{DriftStatus, DriftThresholds, ProfileScheduleSpec, RunProfile};
use crate::crd::ProfileJob;
use crate::reconcile::Context;
use crate::status::{rfc3339, truncate};
use time::OffsetDateTime;
use truthound_profile::TableProfile;
use truthound_profile::dataset::{StorageOptions, read_object};
use truthound_profile::drift::{self, Thresholds};

/// Drifted columns listed in the status; the rest are counted in the summary (a status stays
/// small whatever the table's width).
pub const MAX_STATUS_COLUMNS: usize = 50;
/// Longest summary in the status.
pub const MAX_SUMMARY_BYTES: usize = 1024;

/// The engine's thresholds with the schedule's overrides.
pub fn thresholds(spec: &ProfileScheduleSpec) -> Thresholds {
    let mut t = Thresholds::default();
    let Some(o) = spec.drift.as_ref().and_then(|d| d.thresholds.as_ref()) else {
        return t;
    };
    let DriftThresholds {
        null_ratio,
        distinct_ratio,
        mean_shift,
        std_ratio,
        ks,
        psi,
        top_values,
    } = o;
    for (field, value) in [
        (&mut t.null_ratio, null_ratio),
        (&mut t.distinct_ratio, distinct_ratio),
        (&mut t.mean_shift, mean_shift),
        (&mut t.std_ratio, std_ratio),
        (&mut t.ks, ks),
        (&mut t.psi, psi),
    ] {
        if let Some(v) = value {
            *field = *v;
        }
    }
    if let Some(v) = top_values {
        t.top_values = *v;
    }
    t
}

/// The comparison of two profiles, as the status records it.
pub fn status_of(
    d: &drift::Drift,
    run: &RunProfile,
    previous: &RunProfile,
    now: OffsetDateTime,
) -> DriftStatus {
    let mut columns = d.drifted_columns();
    let display = match columns.len() {
        0 => "none".to_string(),
        1 => "1 column".to_string(),
        n => format!("{n} columns"),
    };
    columns.truncate(MAX_STATUS_COLUMNS);
    DriftStatus {
        job: run.job.clone(),
        previous_job: previous.job.clone(),
        drifted_columns: columns,
        summary: truncate(&d.summary(), MAX_SUMMARY_BYTES),
        display,
        time: rfc3339(now),
    }
}

async fn read_profile(uri: &str, opts: &StorageOptions) -> Result<TableProfile, String> {
    let bytes = read_object(uri, opts)
        .await
        .map_err(|e| format!("reading {uri}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{uri} is not a profile: {e}"))
}

/// Compares `run`'s profile with `previous`'s. Both are read with `pj`'s (the new run's) output
/// storage: the runs of one schedule write where its template says.
pub async fn compare(
    pj: &ProfileJob,
    ctx: &Context,
    spec: &ProfileScheduleSpec,
    run: &RunProfile,
    previous: &RunProfile,
) -> Result<DriftStatus, String> {
    let opts = crate::reconcile::storage(pj, ctx, true)
        .await
        .map_err(|e| e.to_string())?;
    let new = read_profile(&run.profile_uri, &opts).await?;
    let old = read_profile(&previous.profile_uri, &opts).await?;
    let d = drift::diff(&old, &new, &thresholds(spec));
    Ok(status_of(&d, run, previous, OffsetDateTime::now_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::crd::DriftSpec;

    #[test]
    fn the_schedule_overrides_only_the_thresholds_it_sets() {
        let mut spec: ProfileScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@daily",
            "jobTemplate": {"spec": {
                "dataset": {"uri": "s3://b/d/"}, "output": {"uri": "s3://b/p.json"}}},
        }))
        .expect("spec");
        assert_eq!(thresholds(&spec), Thresholds::default());
        spec.drift = Some(DriftSpec {
            enabled: None,
            thresholds: Some(DriftThresholds {
                null_ratio: Some(0.01),
                top_values: Some(false),
                ..DriftThresholds::default()
            }),
        });
        let t = thresholds(&spec);
        assert_eq!((t.null_ratio, t.top_values), (0.01, false));
        assert_eq!(t.psi, Thresholds::default().psi);
    }

    #[test]
    fn the_status_lists_columns_bounded_and_says_how_many() {
        let d = drift::Drift {
            columns: Vec::new(),
            added: (0..60).map(|i| format!("c{i:02}")).collect(),
            removed: Vec::new(),
            retyped: Vec::new(),
            notes: Vec::new(),
        };
        let run = RunProfile {
            job: "s-2".into(),
            profile_uri: "s3://b/2.json".into(),
            scheduled_time: "2026-01-01T00:01:00Z".into(),
        };
        let prev = RunProfile {
            job: "s-1".into(),
            ..run.clone()
        };
        let st = status_of(&d, &run, &prev, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(st.drifted_columns.len(), MAX_STATUS_COLUMNS);
        assert_eq!(st.display, "60 columns");
        assert_eq!((st.job.as_str(), st.previous_job.as_str()), ("s-2", "s-1"));
        assert!(
            st.summary.starts_with("60 columns drifted"),
            "{}",
            st.summary
        );
        let none = drift::Drift {
            added: Vec::new(),
            ..d
        };
        assert_eq!(
            status_of(&none, &run, &prev, OffsetDateTime::UNIX_EPOCH).display,
            "none"
        );
    }
}
