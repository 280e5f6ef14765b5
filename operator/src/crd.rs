//! The `ProfileJob` resource (`truthound.io/v1alpha1`): what a user asks for (spec) and the
//! record of what was done (status). `crdgen` turns these types into `crds/profilejob.yaml`;
//! every doc comment becomes the field's description in `kubectl explain`.

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The CEL rule on dataset and output URIs: a scheme the engine knows, so that no plain path
/// (read as the operator's own disk) is admitted. Which local roots and URLs the operator then
/// accepts is its own setting (`crate::access`).
const URI_SCHEME_RULE: &str =
    "self.matches('^(s3|s3a|gs|az|adl|azure|abfs|abfss|http|https|file)://')";

/// Profiles a dataset in object storage: plans partitions, runs one task per partition on the
/// chosen backend, merges the partial profiles and writes the profile to `spec.output.uri`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "truthound.io",
    version = "v1alpha1",
    kind = "ProfileJob",
    namespaced,
    shortname = "pj",
    category = "all",
    category = "truthound",
    status = "ProfileJobStatus",
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".spec.backend.type"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Tasks","type":"string","description":"Tasks succeeded / total","jsonPath":".status.tasks.summary"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.display"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(
    doc = "A profiling run: profiles a dataset in object storage with worker pods or an existing Spark, Dask or Ray cluster, and writes the merged profile next to the data."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.partitioning.strategy != 'hash' || has(self.partitioning.hashColumn)",
        "message": "partitioning.strategy hash needs partitioning.hashColumn"
    },
    {
        "rule": "(!has(self.partitioning.partitions) || self.partitioning.partitions >= 1) && (!has(self.partitioning.rowPartitions) || self.partitioning.rowPartitions >= 1) && (!has(self.partitioning.columnPartitions) || self.partitioning.columnPartitions >= 1)",
        "message": "partitioning.partitions, rowPartitions and columnPartitions must be at least 1"
    }
]))]
pub struct ProfileJobSpec {
    /// The data to profile. Immutable: a ProfileJob profiles one dataset.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "dataset is immutable; create a new ProfileJob"}
    ]))]
    pub dataset: DatasetSpec,
    /// Where the tasks run.
    #[serde(default)]
    pub backend: BackendSpec,
    /// How the dataset is cut into tasks. Immutable: completed tasks belong to one plan.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "partitioning is immutable; create a new ProfileJob"}
    ]))]
    pub partitioning: PartitioningSpec,
    /// What the profile computes, and how accurately.
    #[serde(default)]
    pub profile: ProfileSpec,
    /// Where the profile is written.
    pub output: OutputSpec,
    /// Retries of one task before it counts as failed (default 3). A task that fails on bad data
    /// (exit code 65) is not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit_per_task: Option<i32>,
    /// Failed tasks tolerated before the job fails (default 0: any failed task fails the job).
    /// With failed tasks tolerated, the profile is written from the tasks that succeeded and says
    /// which are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failed_tasks: Option<i32>,
    /// Seconds the job may run (from its start) before it fails with reason DeadlineExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after the job finished (succeeded or failed) when it is deleted, with its workers.
    /// The profile itself stays in object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Suspend the job: running workers are stopped, completed tasks are kept, and the job resumes
    /// where it left off when this is set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// Who is told when the job starts, progresses and ends (webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
}

/// Notifications of a job's start, progress and end.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Webhooks called with a JSON body (`truthound.io/v1alpha1` `ProfileJobNotification`) by
    /// POST. A delivery that fails is retried with backoff; one that keeps failing is an Event
    /// and a metric, never a failed job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub webhooks: Vec<WebhookSpec>,
}

/// One webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// `https://` (or `http://`) URL the notifications are POSTed to.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.startsWith('https://') || self.startsWith('http://')", "message": "notify.webhooks[].url must start with https:// or http://"}
    ]))]
    pub url: String,
    /// Which events are sent (default: Started, Succeeded, Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub events: Option<Vec<NotifyEvent>>,
    /// With the `Progress` event: every this many percent of the tasks done (default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub progress_step_percent: Option<u32>,
    /// Seconds one attempt may take (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
    /// Attempts before a notification is given up (default 10, with backoff from 1 s doubling to
    /// 60 s between them: about 4 minutes in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: Option<u32>,
    /// A header whose value is a Secret's key, e.g. `Authorization: Bearer ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_secret_ref: Option<HeaderSecretRef>,
    /// Sign the body: `X-Truthound-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed with
    /// a Secret's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
}

/// What a webhook is told about.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum NotifyEvent {
    /// The job started running (its workers or remote tasks were started).
    Started,
    /// Every `progressStepPercent` of the tasks done.
    Progress,
    /// The profile was written.
    Succeeded,
    /// The job failed.
    Failed,
}

/// A header whose value is held in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HeaderSecretRef {
    /// The header's name (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key holding the header's value.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The dataset: an object-storage URI and how to read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// `s3://`, `gs://`, `az://`, `abfs://`, `http(s)://` or `file://` URI of one file, a prefix
    /// (every data file under it) or a glob (`s3://bucket/events/*.parquet`). The operator
    /// refuses `file://` outside the directories its administrator allowed, and `http(s)://`
    /// unless allowed.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": URI_SCHEME_RULE, "message": "dataset.uri must start with s3://, s3a://, gs://, az://, adl://, azure://, abfs://, abfss://, http://, https:// or file:// (a plain path would be the operator's own disk)"}
    ]))]
    pub uri: String,
    /// File format; detected from the files' extensions when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DatasetFormat>,
    /// Columns to profile (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Storage options for the dataset's store (no secrets here: use credentialsSecretRef).
    #[serde(default)]
    pub options: StorageOptionsSpec,
    /// A Secret in the job's namespace whose keys are environment variables for object storage
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `GOOGLE_SERVICE_ACCOUNT_KEY`, `AZURE_STORAGE_ACCOUNT_KEY`, ...). The operator reads it to
    /// plan and merge; workers get it as environment variables. Without one the operator uses
    /// no credentials of its own: a public bucket needs `options.extra.skip_signature: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// How CSV files are read; what is left out is sniffed from the first file's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSpec>,
    /// When `uri` is a lake table (a Delta Lake table's directory, an Iceberg table's
    /// directory or metadata file): the version to read, a Delta version or an Iceberg snapshot
    /// id (default: the current one). The profile records the version read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub table_version: Option<i64>,
}

/// The dialect and encoding of a CSV dataset. Characters are one ASCII character, `tab`, or
/// `none` (no such character).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsvSpec {
    /// Field delimiter, e.g. `;`, `|`, `tab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Quote character, or `none` when fields are never quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// Escape character inside quoted fields (e.g. `\\`), or `none` (quotes are doubled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    /// Lines starting with this character are skipped (e.g. `#`), or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether the first record is a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// Values read as null (default: the empty field only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
    /// Text encoding (default `utf-8`; a UTF-16 byte-order mark is detected by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<CsvEncoding>,
}

/// Text encodings of CSV files.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CsvEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "latin1")]
    Latin1,
    #[serde(rename = "windows-1252")]
    Windows1252,
    #[serde(rename = "utf-16")]
    Utf16,
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

/// A file format the engine reads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    Parquet,
    Csv,
    Ndjson,
    Ipc,
}

/// Options of the object store (the `object_store` crate's configuration).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageOptionsSpec {
    /// Endpoint of an S3-compatible server (MinIO, Ceph, R2, ...), e.g. `http://minio.minio:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow plain HTTP to the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Any other object_store configuration key, e.g. `aws_skip_signature: "true"`. Keys that
    /// look like secrets are refused: put those in the credentials Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// A Secret in the ProfileJob's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The backend that runs the tasks, and its settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// `local` (worker pods started by the operator), `spark`, `dask`, `ray` (an existing
    /// cluster) or `auto` (chosen by the operator from the dataset's size and the clusters it
    /// knows).
    #[serde(default, rename = "type")]
    pub kind: BackendType,
    /// Settings of the worker pods (backend `local`, and `auto` when it picks local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalBackend>,
    /// The Spark cluster to submit to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark: Option<SparkBackend>,
    /// The Dask cluster to submit to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dask: Option<DaskBackend>,
    /// The Ray cluster to submit to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray: Option<RayBackend>,
}

/// Where tasks run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    #[default]
    Local,
    Spark,
    Dask,
    Ray,
    Auto,
}

impl BackendType {
    pub fn name(self) -> &'static str {
        match self {
            BackendType::Local => "local",
            BackendType::Spark => "spark",
            BackendType::Dask => "dask",
            BackendType::Ray => "ray",
            BackendType::Auto => "auto",
        }
    }
}

/// Row sampling. Each row is kept or not by a hash of the seed, its file and its position in the
/// file, so the sample is the same whatever the partitioning, and the same seed gives the same
/// rows. The profile's counts are the sample's; the profile records the fraction, the seed and
/// the rows scanned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.fraction > 0.0 && self.fraction <= 1.0",
     "message": "sampling.fraction must be more than 0 and at most 1 (0.1 profiles 10% of the rows)"}
]))]
pub struct SamplingSpec {
    /// Fraction of the rows to profile, more than 0 and at most 1 (0.1: 10%; 1: every row).
    pub fraction: f64,
    /// Seed of the sample (default 0): another seed profiles other rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seed: Option<i64>,
}

/// Worker pods: a `batch/v1` Indexed Job with one index per task, running `th-worker`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalBackend {
    /// Worker image (default: the operator's configured worker image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Worker pods running at once (default: min(tasks, 4)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<i32>,
    /// CPU and memory of each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Service account of the worker pods (for workload identity to object storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Secrets for pulling the worker image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// PriorityClass of the worker and merge pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread constraints of the worker pods (e.g. across zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// More labels of the worker and merge pods (the operator's own labels cannot be replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations of the worker and merge pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Pod-level security context fields, each replacing the operator's (non-root 65532,
    /// seccomp RuntimeDefault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Container security context fields, each replacing the operator's (no privilege
    /// escalation, no capabilities, non-root, read-only root file system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Volumes of the worker and merge pods (e.g. a CA bundle for the object store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Mounts of those volumes in the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// An existing Spark (4.x) cluster, reached through Spark Connect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SparkBackend {
    /// Spark Connect URL, e.g. `sc://spark-connect.spark:15002`. A token written in it
    /// (`/;token=...`) is accepted but warned about (event TokenInSpec): anyone who may read the
    /// ProfileJob reads it. Put it in a Secret and name it in tokenSecretRef instead. The
    /// status, conditions and events show the URL with the token as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub connect_url: Option<String>,
    /// The key of a Secret in the ProfileJob's namespace holding the Spark Connect token (sent
    /// as `authorization: Bearer ...`). The operator adds it to the URL in its memory only, when
    /// it connects; it wins over a token in connectUrl. A missing Secret or key fails the job
    /// naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the ProfileJob's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// An existing Dask cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskBackend {
    /// Scheduler address, e.g. `tcp://dask-scheduler.dask:8786`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_address: Option<String>,
    /// Image of the runner Job (Dask with `th-worker`, at the cluster's Dask version); default:
    /// the operator's `th-worker-dask` image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Node selector of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secrets for pulling the runner image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// PriorityClass of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread constraints of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// More labels of the runner pod (the operator's own labels cannot be replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// An existing Ray cluster, reached through the dashboard's Jobs API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayBackend {
    /// Dashboard address, e.g. `http://ray-head.ray:8265`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// How the dataset is cut into tasks (planned from metadata only: sizes and Parquet footers).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitioningSpec {
    /// `row_based` (tasks balanced by rows, cut on row groups and files), `column_based`
    /// (column groups balanced by compressed size), `hybrid` (rowPartitions × columnPartitions)
    /// or `hash` (task i keeps the rows whose hashColumn hashes to i, so that column's distinct
    /// count and top values are exact).
    #[serde(default)]
    pub strategy: PartitionStrategy,
    /// Number of tasks (`row_based`), column groups (`column_based`) or buckets (`hash`).
    /// Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub partitions: Option<u32>,
    /// Row slices of a `hybrid` plan (default: partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub row_partitions: Option<u32>,
    /// Column groups of a `hybrid` plan (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub column_partitions: Option<u32>,
    /// The key column of a `hash` plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_column: Option<String>,
    /// `row_based` and `hybrid`: cut files into tasks of about this many bytes: CSV and NDJSON
    /// files into byte ranges, Parquet row groups of more compressed bytes into row ranges.
    /// Default: the data over partitions, from 1 MiB to 64 MiB; 0: whole files and row groups
    /// only (the spark backend reads whole files: leave it unset or 0 there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub target_task_bytes: Option<u64>,
}

impl Default for PartitioningSpec {
    fn default() -> Self {
        PartitioningSpec {
            strategy: PartitionStrategy::RowBased,
            partitions: None,
            row_partitions: None,
            column_partitions: None,
            hash_column: None,
            target_task_bytes: None,
        }
    }
}

/// A partition strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStrategy {
    #[default]
    RowBased,
    ColumnBased,
    Hybrid,
    Hash,
}

/// The engine's settings. Omitted fields take the engine's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    /// Most (and least) frequent values reported per column (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub top_k: Option<u32>,
    /// KLL sketch size behind the quantiles p1…p99 and the histogram: the rank error is about
    /// 1.65 / k^0.9 (default 200: 1.33%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 65535))]
    pub quantile_sketch_k: Option<u32>,
    /// Histogram bins per numeric column (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub histogram_bins: Option<u32>,
    /// Distinct values a column's counts stay exact for before sketches take over
    /// (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000000))]
    pub exact_distinct_limit: Option<u32>,
    /// Detect patterns (email, URL, UUID, IP, phone, dates, numbers) in strings (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patterns: Option<bool>,
    /// Estimate duplicate rows (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<bool>,
    /// Profile a sample of the rows instead of all of them (default: every row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSpec>,
    /// Embed the merged state (exact counts, sketches) in the profile, as `th profile
    /// --keep-state`: `th merge` can merge it with later profiles, and drift between runs
    /// compares the KLL sketches rather than quantile tables. The profile is larger (default
    /// false; a ProfileSchedule's runs default to true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_state: Option<bool>,
}

/// Where the profile goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// URI of the profile JSON, e.g. `s3://bucket/profiles/events.json`. The plan, the task table
    /// and the partial profiles go under `.truthound/<job uid>/` beside it.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": URI_SCHEME_RULE, "message": "output.uri must start with s3://, s3a://, gs://, az://, adl://, azure://, abfs://, abfss://, http://, https:// or file:// (a plain path would be the operator's own disk)"}
    ]))]
    pub uri: String,
    /// Storage options of the output's store (default: the dataset's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<StorageOptionsSpec>,
    /// Credentials of the output's store (default: the dataset's credentialsSecretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Keep the job's work data (`.truthound/<uid>/`: plan, partial profiles, task table) after
    /// it succeeded and after the ProfileJob is deleted. By default it is deleted then: partial
    /// profiles hold exact value counts and top values, which may be personal data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_work_data: bool,
    /// Seconds after a failed job finished when its work data is deleted (default: the
    /// operator's, 7 days), kept meanwhile for a look at what was done.
    #[serde(
        default,
        rename = "workDataTTLSecondsAfterFailure",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub work_data_ttl_seconds_after_failure: Option<i64>,
    /// Incremental runs: a prefix in the output's store (its options and credentials) where
    /// task partials are cached, e.g. `s3://bucket/cache/events/`. Tasks then read one file
    /// each (not with the hash strategy); a task whose file (path, size, ETag/version or
    /// mtime, part read), columns, options and engine version match a cached partial is not
    /// run, and the partials of the tasks that ran are cached after the merge.
    /// `status.tasks.reused` counts the reused tasks. Keep it outside the work data
    /// (`.truthound/`), which is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": URI_SCHEME_RULE, "message": "output.cacheUri must start with s3://, s3a://, gs://, az://, adl://, azure://, abfs://, abfss://, http://, https:// or file://"}
    ]))]
    pub cache_uri: Option<String>,
}

/// The record of what was done. Small at any scale: task sets are index ranges, failures are the
/// last few; the full task table is in object storage beside the plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJobStatus {
    /// `Pending`, `Running`, `Merging`, `Succeeded`, `Failed` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, Running, Merging, Suspended, Succeeded, Failed, and a kstatus-style Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Attempt number (1 for the first run); the plan and its workers belong to one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// What the current attempt created or submitted (written before acting on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<Submission>,
    /// The backend that runs the job (for `auto`: the one chosen) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendChoice>,
    /// Task counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskCounts>,
    /// Tasks whose partial profile is written, as index ranges ("0-12,14").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_tasks: Option<String>,
    /// Tasks that failed for good, as index ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_tasks: Option<String>,
    /// The last task failures (at most 10), newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_failures: Vec<TaskFailure>,
    /// Rows processed, rate and ETA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
    /// When the job started running (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job succeeded or failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The profile that was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultStatus>,
    /// Transient errors in a row (storage unreachable, access denied) while planning or
    /// merging; the job fails when they reach the operator's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<u32>,
    /// What became of the job's work data (`.truthound/<uid>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_data: Option<WorkDataStatus>,
    /// The webhook notifications (spec.notify): sent, pending or given up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationStatus>,
}

/// What became of a job's work data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkDataStatus {
    /// `Deleted`, `Kept` (spec.output.keepWorkData), or `GivenUp` (it could not be deleted;
    /// `message` says where it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Failed deletions so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u32>,
    /// Where it is, and the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was deleted or given up (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// One notification of one webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    /// Index of the webhook in spec.notify.webhooks.
    pub webhook: u32,
    /// `Started`, `Progress50` (50% of the tasks done), `Succeeded` or `Failed`.
    pub event: String,
    /// `Pending`, `Delivered` or `GivenUp`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the last attempt was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    /// When the next attempt is due (RFC 3339), while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<String>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job's phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Merging,
    Succeeded,
    Failed,
    Suspended,
    /// The worker Job waits for a queue (Kueue) to admit it: created suspended, and its
    /// `spec.suspend` is the queue's to clear.
    Queued,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Merging => "Merging",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Suspended => "Suspended",
            Phase::Queued => "Queued",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A condition in the Kubernetes convention (`metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Accepted, Running, Merging, Suspended, Succeeded, Failed or Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in CamelCase.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What an attempt created or submitted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// The attempt this belongs to.
    pub attempt: i32,
    /// The id of the plan (content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// URI of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_uri: Option<String>,
    /// The backend's id of the work: the worker Job's name, or the remote submission id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The backend that runs a job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendChoice {
    /// local, spark, dask or ray.
    #[serde(rename = "type")]
    pub kind: String,
    /// Why (for `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The cluster submitted to (spark, dask, ray): the ProfileJob's own address or the
    /// operator's configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Task counts of the current attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// Tasks in the plan.
    pub total: u32,
    /// Tasks not started yet.
    pub pending: u32,
    /// Tasks with a running worker.
    pub running: u32,
    /// Tasks whose partial profile is written.
    pub succeeded: u32,
    /// Tasks that failed for good (retries exhausted, or bad data).
    pub failed: u32,
    /// Retries so far (a task's failed attempts that were retried).
    pub retried: u32,
    /// Tasks whose partial came from the cache (`spec.output.cacheUri`), counted as succeeded
    /// without running.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reused: u32,
    /// "succeeded/total", for the printer column.
    pub summary: String,
}

/// One task failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    /// Task index.
    pub task: u32,
    /// BadData, Transient, Invalid, Stalled, Evicted, DeadlineExceeded or Error.
    pub reason: String,
    /// What the worker said.
    pub message: String,
    /// When (RFC 3339).
    pub time: String,
}

/// Progress of the running tasks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// Rows processed / rows total × 100.
    pub percent: f64,
    /// Rows read by finished and running tasks.
    pub rows_processed: u64,
    /// Rows of the dataset (from the plan; 0 when unknown before reading, as for CSV).
    pub rows_total: u64,
    /// Recent rate over all workers.
    pub rows_per_second: f64,
    /// Estimated seconds left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// "42%", for the printer column.
    pub display: String,
    /// The running worker nearest its memory limit, from the workers' reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_memory: Option<WorkerMemoryStatus>,
}

/// A worker's memory against its container's limit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMemoryStatus {
    /// The task of the worker.
    pub task: u32,
    /// Its resident memory.
    pub rss_bytes: u64,
    /// Its container's memory limit.
    pub limit_bytes: u64,
    /// rssBytes / limitBytes × 100.
    pub percent: f64,
    /// `Warning` at 80% of the limit, `Critical` at 95%; absent below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The highest level any worker of this attempt reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_level: Option<String>,
    /// The attempt this is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
}

/// The written profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultStatus {
    /// URI of the profile JSON.
    pub profile_uri: String,
    /// Rows profiled.
    pub rows: u64,
    /// Columns profiled.
    pub columns: u32,
    /// From start to the profile written, in seconds.
    pub duration_seconds: f64,
    /// Tasks missing from the profile (failed, tolerated by maxFailedTasks), as index ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_tasks: Option<String>,
}

/// The CRD as YAML, exactly as `crds/profilejob.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(ProfileJob::crd())
        .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    kubernetes_formats(&mut crd);
    let body = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated by `cargo run -p truthound-operator --bin crdgen`; do not edit.\n---\n{body}"
    ))
}

/// schemars names Rust's unsigned integers `uint32`/`uint64`, formats the apiserver does not
/// know (it warns on every apply: `unrecognized format "uint32"`). Kubernetes' integer formats
/// are int32 and int64: an unsigned value is an int64 that is at least 0.
pub(crate) fn kubernetes_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let unsigned = matches!(
                map.get("format").and_then(|f| f.as_str()),
                Some("uint8" | "uint16" | "uint32" | "uint64" | "uint")
            );
            if unsigned {
                map.insert("format".into(), "int64".into());
                map.entry("minimum").or_insert(serde_json::json!(0.0));
            }
            map.values_mut().for_each(kubernetes_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}
