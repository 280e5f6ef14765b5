//! The local backend: a `batch/v1` Indexed Job, one index per task, each pod running
//! `th-worker run-task` on the plan in object storage and writing the task's partial beside it;
//! and, for runs too large to merge in the operator, a one-pod merge Job (`th-worker merge`).
//!
//! Failures are the Job controller's to retry: `backoffLimitPerIndex` retries a task,
//! `podFailurePolicy` ignores disruptions (preemption, node drain: not the task's fault) and
//! fails an index at once on the exit codes that say retrying cannot help (64 invalid, 65 bad
//! data).

use crate::backend::pods::PodSettings;
use crate::crd::ProfileJob;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use std::collections::BTreeMap;
use truthound_profile::profile::index_ranges;

/// The worker container's name (podFailurePolicy rules refer to it).
pub const CONTAINER: &str = "worker";
/// Label on every child: the ProfileJob's name.
pub const JOB_LABEL: &str = "truthound.io/profilejob";
/// Kueue's queue label, passed from the ProfileJob to its worker Job.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Exit codes of `th-worker` that fail a task at once (retrying cannot help).
pub const PERMANENT_EXIT_CODES: [i32; 2] = [64, 65];
/// Default worker pods running at once.
pub const DEFAULT_PARALLELISM: i32 = 4;
/// Default retries per task.
pub const DEFAULT_BACKOFF_PER_TASK: i32 = 3;

/// What the worker Job needs besides the ProfileJob.
#[derive(Debug, Clone)]
pub struct WorkerParams {
    /// The Job's name (deterministic, see [`crate::decide::workers_name`]).
    pub name: String,
    /// Pods (completions) of the Job.
    pub tasks: u32,
    /// The task each pod index runs (an incremental run skips the reused tasks); `None`: the
    /// index is the task id.
    pub only: Option<Vec<u32>>,
    pub plan_uri: String,
    /// `<work prefix>/partials`; task i writes `<partials>/<i>`.
    pub partials_prefix: String,
    /// The image when the ProfileJob names none.
    pub default_image: String,
    /// The operator's progress service (`http://host:port`, `https://` with TLS), if it runs
    /// one.
    pub progress_endpoint: Option<String>,
    /// The CA (PEM) the workers verify an `https://` progress endpoint against
    /// (`TH_PROGRESS_CA`; a CA certificate is no secret).
    pub progress_ca: Option<String>,
    /// The Secret holding this job's progress token (key `token`).
    pub token_secret: String,
    /// Heartbeat period of the workers.
    pub heartbeat_seconds: u64,
    /// The operator's pod defaults (the ProfileJob's settings win).
    pub pod_defaults: PodSettings,
    /// The key names of the job's credentials Secrets (only their storage keys reach the pods).
    pub credentials: Vec<SecretKeys>,
}

/// The ProfileJob names a Kueue queue: its Jobs carry the queue label, are created suspended,
/// and their `spec.suspend` belongs to Kueue (the operator never clears it).
pub fn queue_managed(pj: &ProfileJob) -> bool {
    queue_name(pj).is_some()
}

/// The Kueue queue the ProfileJob names, if any.
pub fn queue_name(pj: &ProfileJob) -> Option<&str> {
    pj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(KUEUE_QUEUE_LABEL))
        .map(String::as_str)
}

pub(crate) fn labels(pj: &ProfileJob, component: &str) -> BTreeMap<String, String> {
    let name = pj.metadata.name.clone().unwrap_or_default();
    let mut l = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "truthound".to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "truthound-operator".to_string(),
        ),
        (JOB_LABEL.to_string(), name),
    ]);
    if let Some(q) = queue_name(pj) {
        l.insert(KUEUE_QUEUE_LABEL.to_string(), q.to_string());
    }
    l
}

pub(crate) fn owned_meta(pj: &ProfileJob, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: pj.metadata.namespace.clone(),
        labels: Some(labels(pj, component)),
        owner_references: pj.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Whether an object found under one of the job's child names is the job's own: it has a
/// controller owner reference with the job's uid. Names are deterministic (`<name>-w1`), so a
/// ProfileJob deleted and created again under the same name finds its predecessor's children
/// until garbage collection removes them; those are someone else's, never read as this job's.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The Secret holding the job's progress token: workers read it from their environment, so the
/// token never appears in the Job's spec.
pub fn token_secret(pj: &ProfileJob, name: &str, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(pj, name, "progress-token"),
        string_data: Some(BTreeMap::from([("token".to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Storage flags of `th-worker` for the plan and the output (the dataset's own options travel
/// inside the plan).
pub(crate) fn storage_args(pj: &ProfileJob) -> Vec<String> {
    let opts = pj
        .spec
        .output
        .options
        .as_ref()
        .unwrap_or(&pj.spec.dataset.options);
    let mut args = Vec::new();
    if let Some(e) = &opts.endpoint {
        args.extend(["--endpoint".to_string(), e.clone()]);
    }
    if let Some(r) = &opts.region {
        args.extend(["--region".to_string(), r.clone()]);
    }
    if opts.allow_http == Some(true) {
        args.push("--allow-http".to_string());
    }
    args
}

/// The worker Job.
pub fn worker_job(pj: &ProfileJob, p: &WorkerParams) -> Job {
    let local = pj.spec.backend.local.clone().unwrap_or_default();
    let tasks = p.tasks.max(1) as i32;
    let parallelism = local
        .parallelism
        .unwrap_or(DEFAULT_PARALLELISM)
        .clamp(1, tasks);
    let backoff = pj
        .spec
        .backoff_limit_per_task
        .unwrap_or(DEFAULT_BACKOFF_PER_TASK)
        .max(0);

    let mut args = vec![
        "run-task".to_string(),
        "--plan".to_string(),
        p.plan_uri.clone(),
        "--out".to_string(),
        // The kubelet expands $(VAR) from the container's environment; the Job controller
        // injects JOB_COMPLETION_INDEX, the task id.
        format!("{}/$(JOB_COMPLETION_INDEX)", p.partials_prefix),
    ];
    let only = p.only.as_ref().map(|ids| index_ranges(ids));
    if let Some(ranges) = &only {
        // Pod i runs the i-th task of the list, and names its partial by the task.
        args[4] = format!("{}/{{task}}", p.partials_prefix);
        args.extend(["--tasks".to_string(), ranges.clone()]);
    }
    let mut env_vars = vec![env("TH_HEARTBEAT_SECONDS", p.heartbeat_seconds.to_string())];
    if let Some(endpoint) = &p.progress_endpoint {
        env_vars.push(env("TH_PROGRESS_ENDPOINT", endpoint.clone()));
        if let Some(ca) = &p.progress_ca {
            env_vars.push(env("TH_PROGRESS_CA", ca.clone()));
        }
        env_vars.push(EnvVar {
            name: "TH_PROGRESS_TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: p.token_secret.clone(),
                    key: "token".into(),
                    optional: Some(true),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let container = container(pj, &p.default_image, args, env_vars, &p.credentials);
    let spec = IndexedJob {
        completions: tasks,
        parallelism,
        backoff_per_index: backoff,
        // A queue-managed Job is created suspended: admission is the queue's (Kueue un-suspends
        // it), and creating it running would let its pods start before the queue decided.
        suspend: pj.spec.suspend || queue_managed(pj),
    };
    let mut job = indexed_job(pj, &p.name, "worker", container, spec, &p.pod_defaults);
    if let Some(ranges) = only {
        job.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TASKS_ANNOTATION.to_string(), ranges);
    }
    job
}

/// On a worker Job that runs some of the plan's tasks: which (index ranges, pod index i runs
/// the i-th).
pub const TASKS_ANNOTATION: &str = "truthound.io/tasks";

/// The task id of each pod index of a worker Job, when they differ (see [`TASKS_ANNOTATION`]).
pub fn task_map(job: &Job) -> Option<Vec<u32>> {
    job.metadata
        .annotations
        .as_ref()?
        .get(TASKS_ANNOTATION)
        .map(|r| crate::status::parse_ranges(r).into_iter().collect())
}

/// The task of pod index `index` under `map`.
pub fn task_of(map: Option<&[u32]>, index: u32) -> Option<u32> {
    match map {
        None => Some(index),
        Some(m) => m.get(index as usize).copied(),
    }
}

/// What the merge Job needs besides the ProfileJob.
#[derive(Debug, Clone)]
pub struct MergeParams {
    /// The Job's name (deterministic, see [`crate::decide::merge_name`]).
    pub name: String,
    pub plan_uri: String,
    /// The run's work prefix (partials, task table and merge summary).
    pub work_prefix: String,
    /// Failed tasks merged without.
    pub missing: Vec<u32>,
    /// Incremental runs: the cache the merge stores the new partials in.
    pub cache_uri: Option<String>,
    /// When the run started (RFC 3339), for the profile's duration.
    pub started_at: Option<String>,
    /// The image when the ProfileJob names none.
    pub default_image: String,
    /// The operator's pod defaults (the ProfileJob's settings win).
    pub pod_defaults: PodSettings,
    /// The key names of the job's credentials Secrets (only their storage keys reach the pod).
    pub credentials: Vec<SecretKeys>,
}

/// The merge Job: one pod running `th-worker merge`, for runs whose partials are too many or
/// too large to merge in the operator's memory. It writes the profile, the task table and the
/// summary the operator reads to finish.
pub fn merge_job(pj: &ProfileJob, p: &MergeParams) -> Job {
    let mut args = vec![
        "merge".to_string(),
        "--plan".to_string(),
        p.plan_uri.clone(),
        "--work".to_string(),
        p.work_prefix.clone(),
        "--out".to_string(),
        pj.spec.output.uri.clone(),
    ];
    if !p.missing.is_empty() {
        let ids: Vec<String> = p.missing.iter().map(u32::to_string).collect();
        args.extend(["--missing".to_string(), ids.join(",")]);
    }
    if let Some(t) = &p.started_at {
        args.extend(["--started-at".to_string(), t.clone()]);
    }
    if let Some(c) = &p.cache_uri {
        args.extend(["--cache".to_string(), c.clone()]);
    }
    if pj.spec.profile.keep_state == Some(true) {
        args.push("--keep-state".to_string());
    }
    let container = container(pj, &p.default_image, args, Vec::new(), &p.credentials);
    let spec = IndexedJob {
        completions: 1,
        parallelism: 1,
        backoff_per_index: MERGE_BACKOFF,
        // A merge is what is left of a run: it is not held back by `suspend`, only by the
        // queue when one manages the job's Jobs.
        suspend: queue_managed(pj),
    };
    indexed_job(pj, &p.name, "merge", container, spec, &p.pod_defaults)
}

/// Retries of the merge pod (transient storage errors); a bad partial fails it at once.
pub const MERGE_BACKOFF: i32 = 2;

/// The `th-worker` container: the image, the storage flags and credentials, the local block's
/// resources and environment, and a locked-down security context.
fn container(
    pj: &ProfileJob,
    default_image: &str,
    mut args: Vec<String>,
    extra_env: Vec<EnvVar>,
    credentials: &[SecretKeys],
) -> Container {
    let local = pj.spec.backend.local.clone().unwrap_or_default();
    args.extend(storage_args(pj));

    let mut env_vars = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        env("TH_JOB_UID", pj.metadata.uid.clone().unwrap_or_default()),
        env("TH_TERMINATION_LOG", "/dev/termination-log"),
    ];
    env_vars.extend(extra_env);
    env_vars.extend(local.env.clone().unwrap_or_default());
    let env_vars = with_credentials(credentials, env_vars);

    Container {
        name: CONTAINER.into(),
        image: Some(
            local
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        ),
        args: Some(args),
        env: Some(env_vars),
        resources: local.resources.clone(),
        volume_mounts: local.volume_mounts.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        // th-worker writes nothing to its file system.
        security_context: Some(container_security_context(true)),
        ..Container::default()
    }
}

/// A container's security context: no privilege escalation, no capabilities, non-root; the
/// root file system read-only when the program writes nothing to it.
pub(crate) fn container_security_context(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: read_only_root.then_some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// The pods' security context: the images' non-root user, the runtime's default seccomp profile
/// (the restricted Pod Security Standard).
pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The key names of one credentials Secret, as the operator read them before creating pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretKeys {
    /// The Secret's name (in the ProfileJob's namespace).
    pub secret: String,
    /// Its keys (all of them: which are forwarded is decided by [`credentials_env`]).
    pub keys: Vec<String>,
}

/// The credentials Secrets a ProfileJob names: the dataset's, then the output's (a key in both:
/// the output's wins).
pub fn credentials_secrets(pj: &ProfileJob) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for s in [
        pj.spec.dataset.credentials_secret_ref.as_ref(),
        pj.spec.output.credentials_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    names
}

/// Credentials as the containers' environment: one `secretKeyRef` per storage key of the job's
/// Secrets ([`dataset::is_storage_key`](truthound_profile::dataset::is_storage_key), the one
/// classification the operator's own stores use too), never the whole Secret (`envFrom`): a
/// database password in the same Secret must not reach a tenant-chosen image. A key in two
/// Secrets comes from the later one; a key that is not a valid variable name is skipped, as
/// `envFrom` skipped it.
pub fn credentials_env(secrets: &[SecretKeys]) -> Vec<EnvVar> {
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for s in secrets {
        for k in &s.keys {
            if truthound_profile::dataset::is_storage_key(k) && is_env_name(k) {
                by_name.insert(k, &s.secret);
            }
        }
    }
    by_name
        .into_iter()
        .map(|(key, secret)| EnvVar {
            name: key.to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_string(),
                    key: key.to_string(),
                    // The operator just read the key: a Secret changed since is an error the
                    // kubelet reports on the pod, not a worker without credentials.
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect()
}

/// A C identifier, what every shell and `std::env` reader accepts as a variable name.
fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The container's environment with the credentials first (so that the job's own `env` may
/// refer to them with `$(VAR)`, as with `envFrom`) and a variable the rest sets not repeated.
pub(crate) fn with_credentials(secrets: &[SecretKeys], rest: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = credentials_env(secrets)
        .into_iter()
        .filter(|c| !rest.iter().any(|e| e.name == c.name))
        .collect();
    out.extend(rest);
    out
}

/// The shape of an Indexed Job.
struct IndexedJob {
    completions: i32,
    parallelism: i32,
    backoff_per_index: i32,
    suspend: bool,
}

fn indexed_job(
    pj: &ProfileJob,
    name: &str,
    component: &str,
    container: Container,
    shape: IndexedJob,
    defaults: &PodSettings,
) -> Job {
    let local = pj.spec.backend.local.clone().unwrap_or_default();
    let rules = vec![
        PodFailurePolicyRule {
            action: "Ignore".into(),
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
            }]),
            on_exit_codes: None,
        },
        PodFailurePolicyRule {
            action: "FailIndex".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(CONTAINER.into()),
                operator: "In".into(),
                values: PERMANENT_EXIT_CODES.to_vec(),
            }),
            on_pod_conditions: None,
        },
    ];

    let mut template_meta = ObjectMeta {
        labels: Some(labels(pj, component)),
        ..ObjectMeta::default()
    };
    if let Some(l) = template_meta.labels.as_mut() {
        l.remove(KUEUE_QUEUE_LABEL);
    }
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        service_account_name: local.service_account_name.clone(),
        automount_service_account_token: Some(local.service_account_name.is_some()),
        volumes: local.volumes.clone(),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        ..PodSpec::default()
    };
    PodSettings::of_local(&local)
        .or(defaults)
        .apply(&mut template_meta, &mut pod);
    // The worker reports its memory against its limit (the operator warns at 80% and 95%);
    // the limit is known here, after the defaults, not from inside every container runtime.
    for c in pod.containers.iter_mut().filter(|c| c.name == CONTAINER) {
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| quantity_bytes(&q.0));
        if let Some(bytes) = limit {
            c.env
                .get_or_insert_with(Vec::new)
                .push(env(MEMORY_LIMIT_ENV, bytes.to_string()));
        }
    }

    Job {
        metadata: owned_meta(pj, name, component),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(shape.completions),
            parallelism: Some(shape.parallelism),
            backoff_limit_per_index: Some(shape.backoff_per_index),
            // The job-level limits are the operator's (maxFailedTasks), but the Job must not
            // stop scheduling other tasks while the operator decides.
            max_failed_indexes: Some(shape.completions),
            pod_failure_policy: Some(PodFailurePolicy { rules }),
            // Required with a podFailurePolicy: a replacement starts only once the old pod is
            // gone, so two pods never write the same partial at once.
            pod_replacement_policy: Some("Failed".into()),
            suspend: Some(shape.suspend),
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The variable a worker reads its container's memory limit from, in bytes.
pub const MEMORY_LIMIT_ENV: &str = "TH_MEMORY_LIMIT_BYTES";

/// A Kubernetes quantity (`512Mi`, `2G`, `1.5Gi`, `1e9`, `128974848`) in bytes; `None` when it
/// is not one.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    let bytes = (n * factor).ceil();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec};

    fn job_with_local(local: &str) -> ProfileJob {
        let spec = format!(
            "dataset: {{uri: 's3://lake/events/'}}\noutput: {{uri: 's3://lake/p.json'}}\n\
             backend: {{type: local, local: {local}}}\n"
        );
        let mut pj = ProfileJob::new(
            "events",
            serde_yaml::from_str(&spec).expect("a ProfileJob spec"),
        );
        pj.metadata.namespace = Some("data".into());
        pj.metadata.uid = Some("uid-1".into());
        pj
    }

    fn worker_params(defaults: PodSettings) -> WorkerParams {
        WorkerParams {
            name: "events-w1".into(),
            tasks: 8,
            only: None,
            plan_uri: "s3://lake/.truthound/uid-1/plan".into(),
            partials_prefix: "s3://lake/.truthound/uid-1/partials".into(),
            default_image: "th-worker:1".into(),
            progress_endpoint: None,
            progress_ca: None,
            token_secret: "events-w1-token".into(),
            heartbeat_seconds: 10,
            pod_defaults: defaults,
            credentials: Vec::new(),
        }
    }

    fn merge_params(defaults: PodSettings) -> MergeParams {
        MergeParams {
            name: "events-m1".into(),
            plan_uri: "s3://lake/.truthound/uid-1/plan".into(),
            work_prefix: "s3://lake/.truthound/uid-1".into(),
            missing: Vec::new(),
            cache_uri: None,
            started_at: None,
            default_image: "th-worker:1".into(),
            pod_defaults: defaults,
            credentials: Vec::new(),
        }
    }

    fn pod_of(job: &Job) -> (&ObjectMeta, &PodSpec) {
        let t = &job.spec.as_ref().expect("spec").template;
        (
            t.metadata.as_ref().expect("template metadata"),
            t.spec.as_ref().expect("pod spec"),
        )
    }

    const SETTINGS: &str = "{imagePullSecrets: [{name: registry}], priorityClassName: batch-high, \
        volumes: [{name: ca, configMap: {name: lake-ca}}], \
        volumeMounts: [{name: ca, mountPath: /etc/ssl/lake, readOnly: true}], \
        podLabels: {team: data, app.kubernetes.io/managed-by: someone-else}, \
        podAnnotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: 'false'}, \
        topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, \
          whenUnsatisfiable: ScheduleAnyway}], \
        nodeSelector: {pool: batch}, \
        podSecurityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000}, \
        securityContext: {readOnlyRootFilesystem: false}}";

    #[test]
    fn worker_and_merge_pods_carry_the_jobs_pod_settings() {
        let pj = job_with_local(SETTINGS);
        for job in [
            worker_job(&pj, &worker_params(PodSettings::default())),
            merge_job(&pj, &merge_params(PodSettings::default())),
        ] {
            let (meta, pod) = pod_of(&job);
            let names = |v: &Option<Vec<LocalObjectReference>>| {
                v.iter()
                    .flatten()
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&pod.image_pull_secrets), ["registry"]);
            assert_eq!(pod.priority_class_name.as_deref(), Some("batch-high"));
            assert_eq!(
                pod.node_selector
                    .as_ref()
                    .and_then(|n| n.get("pool"))
                    .map(String::as_str),
                Some("batch")
            );
            let tsc = pod.topology_spread_constraints.clone().unwrap_or_default();
            assert_eq!(tsc.len(), 1);
            assert_eq!(tsc[0].topology_key, "topology.kubernetes.io/zone");
            let vols = pod.volumes.clone().unwrap_or_default();
            assert_eq!(vols.len(), 1);
            assert_eq!(
                vols[0].config_map.as_ref().map(|c| c.name.as_str()),
                Some("lake-ca")
            );
            let c = &pod.containers[0];
            let mounts = c.volume_mounts.clone().unwrap_or_default();
            assert_eq!(mounts[0].mount_path, "/etc/ssl/lake");
            // labels: the job's added, the operator's kept
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(labels["team"], "data");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "truthound-operator");
            assert_eq!(labels[JOB_LABEL], "events");
            let ann = meta.annotations.clone().unwrap_or_default();
            assert_eq!(
                ann["cluster-autoscaler.kubernetes.io/safe-to-evict"],
                "false"
            );
            // security: the job's fields replace the operator's, the others stay
            let psc = pod.security_context.clone().unwrap_or_default();
            assert_eq!(
                (psc.run_as_user, psc.run_as_group, psc.fs_group),
                (Some(1000), Some(1000), Some(1000))
            );
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(
                psc.seccomp_profile.map(|s| s.type_),
                Some("RuntimeDefault".into())
            );
            let csc = c.security_context.clone().unwrap_or_default();
            assert_eq!(csc.read_only_root_filesystem, Some(false));
            assert_eq!(csc.allow_privilege_escalation, Some(false));
            assert_eq!(
                csc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()])
            );
        }
    }

    #[test]
    fn the_operators_defaults_fill_what_the_job_leaves_unset() {
        let defaults = PodSettings::parse(
            "imagePullSecrets: [{name: platform-registry}]\npriorityClassName: batch-low\n\
             tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoSchedule}]\n\
             podLabels: {cost-center: shared, team: platform}\n",
        )
        .expect("defaults");
        let pj = job_with_local("{priorityClassName: urgent, podLabels: {team: data}}");
        let job = worker_job(&pj, &worker_params(defaults.clone()));
        let (meta, pod) = pod_of(&job);
        assert_eq!(pod.priority_class_name.as_deref(), Some("urgent"));
        assert_eq!(
            pod.image_pull_secrets.clone().unwrap_or_default()[0].name,
            "platform-registry"
        );
        assert_eq!(
            pod.tolerations.clone().unwrap_or_default()[0]
                .key
                .as_deref(),
            Some("dedicated")
        );
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels["cost-center"], "shared");

        // Nothing set anywhere: the pod is as before (no settings invented).
        let plain = worker_job(
            &job_with_local("{}"),
            &worker_params(PodSettings::default()),
        );
        let (meta, pod) = pod_of(&plain);
        assert_eq!(pod.image_pull_secrets, None);
        assert_eq!(pod.priority_class_name, None);
        assert_eq!(pod.volumes, None);
        assert_eq!(meta.annotations, None);
        assert_eq!(pod.security_context, Some(pod_security_context()));
        assert_eq!(
            pod.containers[0].security_context,
            Some(container_security_context(true))
        );
    }

    #[test]
    fn the_merge_pod_keeps_the_state_when_the_job_asks() {
        let args = |pj: &ProfileJob| {
            let job = merge_job(pj, &merge_params(PodSettings::default()));
            let (_, pod) = pod_of(&job);
            pod.containers[0].args.clone().unwrap_or_default()
        };
        let mut pj = job_with_local("{}");
        assert!(!args(&pj).iter().any(|a| a == "--keep-state"));
        pj.spec.profile.keep_state = Some(true);
        assert!(args(&pj).iter().any(|a| a == "--keep-state"));
    }

    #[test]
    fn worker_and_merge_pods_without_resources_get_the_defaults() {
        let pj = job_with_local("{}");
        for job in [
            worker_job(&pj, &worker_params(PodSettings::default())),
            merge_job(&pj, &merge_params(PodSettings::default())),
        ] {
            let (_, pod) = pod_of(&job);
            assert_eq!(
                pod.containers[0].resources,
                Some(crate::backend::pods::default_resources())
            );
        }
        let pj = job_with_local("{resources: {limits: {memory: 8Gi}}}");
        let job = worker_job(&pj, &worker_params(PodSettings::default()));
        let (_, pod) = pod_of(&job);
        let r = pod.containers[0].resources.clone().unwrap_or_default();
        assert_eq!(
            r.requests, None,
            "the job's resources replace the defaults whole"
        );
        assert_eq!(
            r.limits.unwrap_or_default()["memory"].0,
            "8Gi",
            "the job's own resources"
        );
    }

    #[test]
    fn pods_get_only_the_storage_keys_of_the_secrets_by_reference() {
        let mut pj = job_with_local(
            "{env: [{name: AWS_REGION, value: eu-west-1}, {name: TEAM, value: data}]}",
        );
        pj.spec.dataset.credentials_secret_ref = Some(crate::crd::SecretRef {
            name: "lake".into(),
        });
        let credentials = vec![
            SecretKeys {
                secret: "lake".into(),
                keys: [
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                    "AWS_REGION",
                    "DB_PASSWORD",
                    "OTHER_TOKEN",
                    "tls.key",
                ]
                .map(String::from)
                .to_vec(),
            },
            SecretKeys {
                secret: "out".into(),
                keys: vec!["AWS_SECRET_ACCESS_KEY".into(), "GITHUB_TOKEN".into()],
            },
        ];
        let worker = worker_job(
            &pj,
            &WorkerParams {
                credentials: credentials.clone(),
                ..worker_params(PodSettings::default())
            },
        );
        let merge = merge_job(
            &pj,
            &MergeParams {
                credentials,
                ..merge_params(PodSettings::default())
            },
        );
        for job in [worker, merge] {
            let c = &pod_of(&job).1.containers[0];
            assert_eq!(c.env_from, None, "never the whole Secret");
            let env = c.env.clone().unwrap_or_default();
            let by_ref: Vec<(String, String, String)> = env
                .iter()
                .filter_map(|e| {
                    let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                    Some((e.name.clone(), r.name.clone(), r.key.clone()))
                })
                .filter(|(n, _, _)| n != "TH_PROGRESS_TOKEN")
                .collect();
            assert_eq!(
                by_ref,
                [
                    (
                        "AWS_ACCESS_KEY_ID".into(),
                        "lake".into(),
                        "AWS_ACCESS_KEY_ID".into()
                    ),
                    // the output's Secret wins a key both have
                    (
                        "AWS_SECRET_ACCESS_KEY".into(),
                        "out".into(),
                        "AWS_SECRET_ACCESS_KEY".into()
                    ),
                ]
            );
            let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
            for absent in ["DB_PASSWORD", "OTHER_TOKEN", "GITHUB_TOKEN", "tls.key"] {
                assert!(!names.contains(&absent), "{absent} in {names:?}");
            }
            // The job's own env wins (one AWS_REGION, its value), and comes after the
            // credentials it may refer to.
            let region: Vec<&EnvVar> = env.iter().filter(|e| e.name == "AWS_REGION").collect();
            assert_eq!(region.len(), 1);
            assert_eq!(region[0].value.as_deref(), Some("eu-west-1"));
            assert_eq!(names[0], "AWS_ACCESS_KEY_ID");
            assert!(names.contains(&"TEAM"));
        }
    }

    #[test]
    fn only_a_controller_reference_with_the_jobs_uid_makes_a_child_ours() {
        let pj = job_with_local("{}");
        let job = worker_job(&pj, &worker_params(PodSettings::default()));
        assert!(owned_by(&job.metadata, "uid-1"));
        assert!(
            !owned_by(&job.metadata, "uid-2"),
            "another ProfileJob of the same name"
        );
        assert!(!owned_by(&job.metadata, ""));
        let mut not_controller = job.metadata.clone();
        for o in not_controller.owner_references.iter_mut().flatten() {
            o.controller = None;
        }
        assert!(!owned_by(&not_controller, "uid-1"));
        assert!(!owned_by(&ObjectMeta::default(), "uid-1"));
    }

    #[test]
    fn quantities_are_read_as_bytes() {
        for (q, b) in [
            ("128974848", 128_974_848),
            ("512Mi", 512 << 20),
            ("2Gi", 2 << 30),
            ("1.5Gi", 3 << 29),
            ("2G", 2_000_000_000),
            ("129M", 129_000_000),
            ("1e9", 1_000_000_000),
            ("64Ki", 65_536),
        ] {
            assert_eq!(quantity_bytes(q), Some(b), "{q}");
        }
        assert_eq!(quantity_bytes("lots"), None);
        assert_eq!(quantity_bytes("5Xi"), None);
    }

    #[test]
    fn workers_are_told_their_memory_limit_after_the_defaults() {
        let env_of = |job: &Job| {
            let (_, pod) = pod_of(job);
            pod.containers[0]
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == MEMORY_LIMIT_ENV)
                .and_then(|e| e.value)
        };
        let pj = job_with_local("{resources: {limits: {memory: 256Mi}}}");
        let job = worker_job(&pj, &worker_params(PodSettings::default()));
        assert_eq!(env_of(&job).as_deref(), Some("268435456"));
        // Without resources of its own, the default 2Gi limit is the one to warn against.
        let none = job_with_local("{}");
        assert_eq!(
            env_of(&worker_job(&none, &worker_params(PodSettings::default()))).as_deref(),
            Some("2147483648")
        );
    }
}
