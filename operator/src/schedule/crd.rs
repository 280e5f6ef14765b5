//! The `ProfileSchedule` resource (`truthound.io/v1alpha1`): a ProfileJob run on a cron schedule,
//! modelled on Kubernetes' CronJob (same field names and semantics, where they apply). Each run
//! is a ProfileJob owned by the schedule; `crdgen` writes these types to
//! `crds/profileschedule.yaml`.

use crate::crd::{Condition, ProfileJobSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Runs a ProfileJob on a cron schedule, keeps the last runs, and compares each successful
/// run's profile with the previous one (drift).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "truthound.io",
    version = "v1alpha1",
    kind = "ProfileSchedule",
    namespaced,
    shortname = "pjs",
    category = "all",
    category = "truthound",
    status = "ProfileScheduleStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Timezone","type":"string","jsonPath":".spec.timeZone"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.activeCount"}"#,
    printcolumn = r#"{"name":"Last Schedule","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Drift","type":"string","jsonPath":".status.lastDrift.display"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(
    doc = "A profiling schedule: creates a ProfileJob from jobTemplate at each time of a cron schedule (like a CronJob), keeps the last runs, and reports the columns whose profile drifted between successive successful runs."
)]
#[serde(rename_all = "camelCase")]
pub struct ProfileScheduleSpec {
    /// The cron schedule: five fields (minute hour day-of-month month day-of-week, as CronJob),
    /// or six with a leading seconds field (an extension, for schedules of seconds), or one of
    /// @yearly, @annually, @monthly, @weekly, @daily, @hourly. Ranges (1-5), steps (*/15),
    /// lists (1,3) and month and weekday names (JAN, MON) are allowed.
    #[schemars(length(min = 1, max = 256))]
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin` (default `Etc/UTC`). The
    /// operator carries its own time zone database, so any IANA name works on any image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// What to do when a run is due while an earlier one is still running: `Allow` (default)
    /// runs both, `Forbid` skips the new run, `Replace` deletes the running one first.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its scheduled time (the operator
    /// was down, or `Forbid` held it back) is skipped and counts as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// No new runs while true; running ones go on. Times missed meanwhile are not caught up
    /// beyond the one most recent (and only within startingDeadlineSeconds).
    #[serde(default)]
    pub suspend: bool,
    /// Successful runs (ProfileJobs) kept; older ones are deleted (default 3). Their profiles
    /// stay in object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed runs kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_jobs_history_limit: Option<i32>,
    /// The ProfileJob each run creates. `spec.output.uri` may hold the scheduled time:
    /// `{date}` (YYYY-MM-DD), `{time}` (HHMMSS), `{timestamp}` (YYYYMMDDTHHMMSS±HHMM) and
    /// `{unix}` (seconds since 1970), all in the schedule's time zone; any other `{...}` is
    /// refused.
    pub job_template: ProfileJobTemplate,
    /// How successive successful runs are compared (default: compared, with the default
    /// thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
}

/// What a run does when an earlier run is still active.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    #[default]
    Allow,
    /// A run due while another is active is skipped.
    Forbid,
    /// A run due while another is active deletes it, then starts.
    Replace,
}

/// The ProfileJob a run creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJobTemplate {
    /// Labels and annotations of the created ProfileJobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The created ProfileJobs' spec.
    pub spec: ProfileJobSpec,
}

/// Labels and annotations copied to each run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of each run (the operator adds `truthound.io/schedule`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of each run (the operator adds `truthound.io/scheduled-at`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Drift between successive successful runs: what counts as a change. A column drifted when any
/// of its figures moved past its threshold; omitted thresholds take the engine's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Compare runs at all (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<DriftThresholds>,
}

/// Thresholds of drift; each omitted one takes the engine's default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftThresholds {
    /// Absolute change of the null ratio (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub null_ratio: Option<f64>,
    /// Relative change of the distinct count, reported only when the two counts' error bounds
    /// do not overlap either (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub distinct_ratio: Option<f64>,
    /// Shift of the mean, in the previous run's standard deviations (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub mean_shift: Option<f64>,
    /// Ratio of the standard deviations (new/old or old/new, whichever is larger), minus one
    /// (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub std_ratio: Option<f64>,
    /// Kolmogorov-Smirnov distance between the two distributions, beyond their rank errors
    /// (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub ks: Option<f64>,
    /// Population stability index over the previous run's deciles (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub psi: Option<f64>,
    /// Report frequent values that appeared or vanished (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_values: Option<bool>,
}

/// What the schedule did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The runs (ProfileJobs) that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ObjectReference>,
    /// How many runs are active (for `kubectl get`).
    #[serde(default)]
    pub active_count: u32,
    /// The scheduled time of the last run created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The next scheduled time (RFC 3339); none while suspended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// When the last successful run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// The last successful run whose profile was compared: the baseline of the next comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_profile: Option<RunProfile>,
    /// The last comparison of two successive successful runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<DriftStatus>,
    /// `Ready` (the schedule is valid and scheduling), `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A run and where its profile is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunProfile {
    /// The run (ProfileJob) name.
    pub job: String,
    /// URI of its profile.
    pub profile_uri: String,
    /// Its scheduled time (RFC 3339).
    pub scheduled_time: String,
}

/// A comparison of a run's profile with the previous successful run's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The run compared.
    pub job: String,
    /// The previous successful run it was compared with.
    pub previous_job: String,
    /// Columns that changed beyond the thresholds (added, removed and retyped columns too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted_columns: Vec<String>,
    /// What changed, for people.
    pub summary: String,
    /// `none`, or the number of drifted columns (for `kubectl get`).
    pub display: String,
    /// When the comparison was made (RFC 3339).
    pub time: String,
}
