//! The remote backends as the reconciler drives them: look at a run, submit it, stop it. Each
//! call is one request or a few, so a reconcile never waits for a cluster's work.
//!
//! - Ray: the job is submitted through the dashboard's Jobs API with the submission id
//!   `<uid>-<attempt>` (a repeated submission finds the first); its status and logs (the
//!   driver's JSON lines) give the tasks' states; `stop` ends it.
//! - Dask: Dask has no submission API, so, like the Dask Kubernetes operator's DaskJob, a
//!   runner `batch/v1` Job (Dask's image with `th-worker`, see the Dockerfile's
//!   `th-worker-dask`) runs `dask_runner.py` against the scheduler; its pod's log (the same JSON
//!   lines) gives the tasks' states; deleting the Job stops the runner, which cancels its
//!   tasks on the cluster.
//! - Spark: each task is one aggregation query through Spark Connect, made into a partial by
//!   the client, so the client is the operator: the run lives in this process ([`SparkRuns`]),
//!   writing each task's partial to the work prefix as it finishes. An operator that restarts
//!   has no run: the reconciler submits the same id again and only the tasks without a partial
//!   run.

use crate::backend::dask::RUNNER_PY;
use crate::backend::local::{
    SecretKeys, container_security_context, owned_by, owned_meta, pod_security_context,
    with_credentials,
};
use crate::backend::ray::{RayError, RayRun, RaySubmit};
use crate::backend::spark::{SparkRun, SparkSubmit};
use crate::backend::tasks::{RemoteTasks, TaskBoard, TaskState, tail_lines};
use crate::crd::ProfileJob;
use crate::decide::RemoteObserved;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, PodTemplateSpec};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use truthound_profile::dataset::StorageOptions;

/// Environment variable prefixes of credentials, passed from the pod's Secret to every task.
const CREDENTIAL_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];
/// The runner Job's container.
pub const RUNNER_CONTAINER: &str = "runner";
/// Where `th-worker` is in the `th-worker-dask` image (shipped from there to workers lacking it).
pub const DASK_IMAGE_WORKER_BIN: &str = "/usr/local/bin/th-worker";

/// Where and what a remote run is.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// `dask` or `ray`.
    pub kind: &'a str,
    /// The cluster's address.
    pub address: &'a str,
    /// The run's id (Ray submission id, Dask runner Job name).
    pub id: &'a str,
    pub attempt: u32,
}

/// What a remote backend needs from the operator's configuration.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `th-worker` to ship to Ray clusters (in the operator's image; `None`: the Ray workers
    /// must have one on their PATH).
    pub worker_bin: Option<PathBuf>,
    /// The runner Job's image when a ProfileJob names none.
    pub dask_image: String,
    /// The operator's pod defaults, for the runner pod (the ProfileJob's `backend.dask` wins).
    pub pod_defaults: crate::backend::pods::PodSettings,
}

use crate::backend::pods::PodSettings;

/// The failure of a remote call, classified for the reconciler.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The cluster did not answer (retry with backoff).
    #[error("{0}")]
    Unreachable(String),
    /// The request is wrong (fail now).
    #[error("{0}")]
    Invalid(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object of the run's name is another owner's (retry: it is being deleted).
    #[error("{0}")]
    Foreign(String),
}

impl From<RayError> for RemoteError {
    fn from(e: RayError) -> Self {
        match e {
            RayError::Invalid(_) | RayError::Unavailable(_) => RemoteError::Invalid(e.to_string()),
            _ => RemoteError::Unreachable(e.to_string()),
        }
    }
}

impl From<crate::backend::spark::SparkError> for RemoteError {
    fn from(e: crate::backend::spark::SparkError) -> Self {
        use crate::backend::spark::SparkError as S;
        match e {
            S::Unreachable { .. }
            | S::Transient { .. }
            | S::Storage {
                transient: true, ..
            } => RemoteError::Unreachable(e.to_string()),
            _ => RemoteError::Invalid(e.to_string()),
        }
    }
}

/// What the reconciler lends the remote backends: its API client and the Spark runs this
/// process holds.
pub struct Remote<'a> {
    pub client: &'a Client,
    pub spark: &'a SparkRuns,
}

/// Looks at the run once.
pub async fn observe(
    r: &Remote<'_>,
    pj: &ProfileJob,
    target: &Target<'_>,
    tasks: u32,
) -> Result<RemoteObserved, RemoteError> {
    let ids: Vec<u32> = (0..tasks).collect();
    match target.kind {
        "ray" => observe_ray(target, &ids).await,
        "spark" => Ok(r.spark.observe(target.id)),
        _ => observe_dask(r.client, pj, target, &ids).await,
    }
}

/// The Spark runs of this operator process, by run id.
#[derive(Default)]
pub struct SparkRuns {
    runs: Mutex<HashMap<String, Arc<SparkEntry>>>,
}

/// A Spark run as its follower task keeps it.
#[derive(Default)]
struct SparkEntry {
    state: Mutex<SparkState>,
    cancel: tokio::sync::Notify,
}

#[derive(Default)]
struct SparkState {
    tasks: Vec<TaskState>,
    ended: bool,
    error: Option<String>,
}

impl SparkRuns {
    fn get(&self, id: &str) -> Option<Arc<SparkEntry>> {
        self.runs.lock().ok()?.get(id).cloned()
    }

    fn observe(&self, id: &str) -> RemoteObserved {
        let Some(entry) = self.get(id) else {
            return RemoteObserved::default();
        };
        let st = entry.state.lock().expect("spark entry");
        RemoteObserved {
            unreachable: None,
            found: true,
            tasks: st.tasks.clone(),
            ended: st.ended,
            end_message: st.error.clone(),
            foreign: None,
        }
    }

    /// Starts the run unless it runs already; a follower task keeps its states.
    async fn submit(&self, id: &str, s: SparkSubmit) -> Result<(), RemoteError> {
        if self
            .get(id)
            .is_some_and(|e| !e.state.lock().expect("spark entry").ended)
        {
            return Ok(());
        }
        let mut run = SparkRun::submit(s).await?;
        let entry = Arc::new(SparkEntry::default());
        entry.state.lock().expect("spark entry").tasks = run.poll();
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(id.to_string(), entry.clone());
        }
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = run.next_event() => {
                        entry.state.lock().expect("spark entry").tasks = run.poll();
                        if ev.is_none() {
                            break;
                        }
                    }
                    () = entry.cancel.notified() => run.cancel().await,
                }
            }
            let tasks = run.poll();
            let outcome = run.finish().await;
            let mut st = entry.state.lock().expect("spark entry");
            st.tasks = outcome.as_ref().map_or(tasks, Clone::clone);
            st.error = outcome.err().map(|e| format!("the Spark run {id}: {e}"));
            st.ended = true;
        });
        Ok(())
    }

    fn cancel(&self, id: &str) {
        if let Some(e) = self.get(id) {
            e.cancel.notify_one();
        }
    }

    /// Drops the runs of a job that is finished or gone (their ids start with its uid).
    pub fn forget(&self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let prefix = format!("{uid}-");
        if let Ok(mut runs) = self.runs.lock() {
            runs.retain(|id, _| !id.starts_with(&prefix));
        }
    }
}

async fn observe_ray(target: &Target<'_>, ids: &[u32]) -> Result<RemoteObserved, RemoteError> {
    let run = match RayRun::attach(target.address, target.id, ids, Duration::from_secs(1)).await {
        Ok(run) => run,
        Err(RayError::Api { status: 404, .. }) => return Ok(RemoteObserved::default()),
        Err(e @ (RayError::Invalid(_) | RayError::Unavailable(_))) => {
            return Err(RemoteError::Invalid(e.to_string()));
        }
        Err(e) => {
            return Ok(RemoteObserved {
                unreachable: Some(e.to_string()),
                ..RemoteObserved::default()
            });
        }
    };
    let ended = run.status().is_terminal();
    // A run that ended without finishing every task says why (its message and log tail).
    let end_message = if ended {
        run.outcome().err().map(|e| e.to_string())
    } else {
        None
    };
    Ok(RemoteObserved {
        unreachable: None,
        found: true,
        tasks: run.states(),
        ended,
        end_message,
        foreign: None,
    })
}

/// The most of the Dask runner's log read at an observation (its last lines): the runner runs
/// the spec's image, so its log is the tenant's to fill; one line per task state change.
pub const RUNNER_LOG_BYTES: i64 = 8 << 20;
/// The most lines of the runner's log read at an observation.
pub const RUNNER_LOG_LINES: i64 = 200_000;

/// How the runner's log is read: its last lines, at most [`RUNNER_LOG_BYTES`] of them (the
/// apiserver cuts it, so the operator never holds more).
fn runner_log_params() -> LogParams {
    LogParams {
        container: Some(RUNNER_CONTAINER.into()),
        tail_lines: Some(RUNNER_LOG_LINES),
        limit_bytes: Some(RUNNER_LOG_BYTES),
        ..LogParams::default()
    }
}

async fn observe_dask(
    client: &Client,
    pj: &ProfileJob,
    target: &Target<'_>,
    ids: &[u32],
) -> Result<RemoteObserved, RemoteError> {
    let ns = pj.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let Some(job) = jobs.get_opt(target.id).await? else {
        return Ok(RemoteObserved::default());
    };
    if !owned_by(
        &job.metadata,
        pj.metadata.uid.as_deref().unwrap_or_default(),
    ) {
        // A predecessor's runner of the same name: its pods and log are not this job's.
        return Ok(RemoteObserved {
            foreign: Some(format!("Job {}", target.id)),
            ..RemoteObserved::default()
        });
    }
    let status = job.status.clone().unwrap_or_default();
    let condition = |t: &str| {
        status
            .conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    let (complete, failed) = (condition("Complete"), condition("Failed"));

    // The runner's pod log holds its JSON lines; the newest pod is the one that counts.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={}", target.id)))
        .await?;
    let newest = list
        .items
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut board = TaskBoard::new(ids);
    let mut other = String::new();
    let mut termination = None;
    if let Some(pod) = newest {
        termination = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == RUNNER_CONTAINER))
            .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone());
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
            });
        if started {
            match pods.logs(&pod.name_any(), &runner_log_params()).await {
                Ok(log) => {
                    for line in log.lines() {
                        if board.apply_line(line).is_none() && !line.trim().is_empty() {
                            other.push_str(line);
                            other.push('\n');
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot read the runner's log")
                }
            }
        }
    }
    // The runner says when the scheduler cannot be reached: that is the cluster's state, not
    // the run's fault.
    if let Some((kind, message)) = &board.error
        && kind == "unreachable"
    {
        return Ok(RemoteObserved {
            unreachable: Some(message.clone()),
            found: true,
            tasks: board.states(),
            ended: complete || failed,
            end_message: None,
            foreign: None,
        });
    }
    let ended = complete || failed;
    let end_message = if !ended || (complete && board.finished && board.error.is_none()) {
        None
    } else {
        let said = board
            .error
            .as_ref()
            .map(|(_, m)| m.clone())
            .or(termination)
            .unwrap_or_else(|| "no message".into());
        let tail = other.trim();
        let logs = if tail.is_empty() || said.contains(tail) {
            String::new()
        } else {
            format!("; its log ends with:\n{}", tail_lines(tail, 20))
        };
        Some(format!(
            "the Dask runner Job {} failed: {said}{logs}",
            target.id
        ))
    };
    Ok(RemoteObserved {
        unreachable: None,
        found: true,
        tasks: board.states(),
        ended,
        end_message,
        foreign: None,
    })
}

/// Submits the run (idempotent: the same id again finds the first). `storage` reaches the
/// ProfileJob's output: a Spark run writes the partials from this process. `credentials`: the
/// key names of the job's Secrets, whose storage keys the Dask runner pod gets.
pub async fn submit(
    r: &Remote<'_>,
    pj: &ProfileJob,
    target: &Target<'_>,
    work: RemoteTasks,
    storage: &StorageOptions,
    config: &RemoteConfig,
    credentials: &[SecretKeys],
) -> Result<(), RemoteError> {
    let client = r.client;
    match target.kind {
        "spark" => {
            let s = SparkSubmit {
                connect_url: target.address.to_string(),
                work,
                storage: storage.clone(),
                concurrency: crate::backend::spark::DEFAULT_CONCURRENCY,
                connect_timeout: Duration::from_secs(10),
            };
            r.spark.submit(target.id, s).await?;
            tracing::info!(job = %pj.name_any(), run = %target.id, "Spark run started");
            Ok(())
        }
        "ray" => {
            let run = RayRun::submit(RaySubmit {
                address: target.address.to_string(),
                attempt: target.attempt,
                work: RemoteTasks {
                    worker_bin: config.worker_bin.clone(),
                    ..work
                },
                python: None,
                poll_interval: Duration::from_secs(1),
            })
            .await?;
            tracing::info!(job = %pj.name_any(), submission_id = %run.submission_id(),
                already = run.already_submitted(), "Ray job submitted");
            Ok(())
        }
        _ => {
            let ns = pj.namespace().unwrap_or_default();
            let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
            let job = dask_runner_job(pj, target, &work, config, credentials);
            match jobs.create(&Default::default(), &job).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let uid = pj.metadata.uid.as_deref().unwrap_or_default();
                    let theirs = jobs
                        .get_opt(target.id)
                        .await?
                        .is_some_and(|j| !owned_by(&j.metadata, uid));
                    if theirs {
                        return Err(RemoteError::Foreign(format!(
                            "the previous Job {} (another owner's) is not deleted yet",
                            target.id
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(job = %pj.name_any(), runner = %target.id, "Dask runner Job created");
            Ok(())
        }
    }
}

/// Stops the run; one already gone or over is fine.
pub async fn cancel(
    r: &Remote<'_>,
    pj: &ProfileJob,
    target: &Target<'_>,
) -> Result<(), RemoteError> {
    let client = r.client;
    match target.kind {
        "spark" => {
            r.spark.cancel(target.id);
            tracing::info!(job = %pj.name_any(), run = %target.id, "Spark run cancelled");
            Ok(())
        }
        "ray" => {
            let mut run = match RayRun::attach(
                target.address,
                target.id,
                &[],
                Duration::from_secs(1),
            )
            .await
            {
                Ok(run) => run,
                Err(RayError::Api { status: 404, .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if run.status().is_terminal() {
                return Ok(());
            }
            run.cancel().await?;
            tracing::info!(job = %pj.name_any(), submission_id = %target.id, "Ray job stopped");
            Ok(())
        }
        _ => {
            // Deleting the runner's pod sends it SIGTERM: it cancels its tasks on the cluster.
            let ns = pj.namespace().unwrap_or_default();
            let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
            // Only this job's runner: a same-named Job of another owner is not ours to stop.
            let uid = pj.metadata.uid.as_deref().unwrap_or_default();
            let Some(ours) = jobs
                .get_opt(target.id)
                .await?
                .filter(|j| owned_by(&j.metadata, uid))
            else {
                return Ok(());
            };
            let dp = kube::api::DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
                preconditions: Some(kube::api::Preconditions {
                    uid: ours.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match jobs.delete(target.id, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(job = %pj.name_any(), runner = %target.id, "Dask runner Job deleted");
            Ok(())
        }
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The Dask runner Job: one pod, never restarted by the Job (the reconciler decides what a
/// failed runner means), running the runner embedded in this operator so that the two always
/// agree on the protocol. Its credentials are the storage keys of the job's Secrets, each by
/// `secretKeyRef` (the runner forwards the `AWS_*`, `GOOGLE_*` and `AZURE_*` ones to tasks).
pub fn dask_runner_job(
    pj: &ProfileJob,
    target: &Target<'_>,
    work: &RemoteTasks,
    config: &RemoteConfig,
    credentials: &[SecretKeys],
) -> Job {
    let image = pj
        .spec
        .backend
        .dask
        .as_ref()
        .and_then(|d| d.image.clone())
        .unwrap_or_else(|| config.dask_image.clone());
    let input = serde_json::json!({
        "scheduler": target.address,
        "run_id": work.run_id,
        "plan_uri": work.plan_uri,
        "partials_prefix": work.partials_prefix,
        "tasks": work.tasks,
        "env": work.env,
        "storage_args": work.worker_args,
        "retries": work.retries,
        "worker_bin": DASK_IMAGE_WORKER_BIN,
        "forward_env_prefixes": CREDENTIAL_PREFIXES,
        "connect_timeout": 10,
    });
    let container = Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(image),
        command: Some(vec!["python".into(), "-c".into(), RUNNER_PY.into()]),
        env: Some(with_credentials(
            credentials,
            vec![
                env("DASK_SCHEDULER_ADDRESS", target.address),
                env("TH_DASK_RUNNER_CONFIG", input.to_string()),
                env("PYTHONUNBUFFERED", "1"),
            ],
        )),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        // Python and Dask may write caches to the image's file system.
        security_context: Some(container_security_context(false)),
        ..Container::default()
    };
    let mut meta = kube::api::ObjectMeta {
        labels: Some(BTreeMap::from([(
            crate::backend::local::JOB_LABEL.to_string(),
            pj.name_any(),
        )])),
        ..Default::default()
    };
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        ..PodSpec::default()
    };
    let own = pj.spec.backend.dask.as_ref().map(PodSettings::of_dask);
    own.unwrap_or_default()
        .or(&config.pod_defaults)
        .apply(&mut meta, &mut pod);
    Job {
        metadata: owned_meta(pj, target.id, "dask-runner"),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(meta),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// An operator that stops (its context dropped) stops its Spark runs rather than leave their
/// queries to Spark: the next operator submits the tasks that have no partial again.
impl Drop for SparkRuns {
    fn drop(&mut self) {
        if let Ok(runs) = self.runs.lock() {
            for entry in runs.values() {
                entry.cancel.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_log_is_read_with_a_byte_limit() {
        let req = kube::core::Request::new("/api/v1/namespaces/data/pods")
            .logs("events-d1-abc", &runner_log_params())
            .expect("a logs request");
        let query = req.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains(&format!("limitBytes={RUNNER_LOG_BYTES}")),
            "{query}"
        );
        assert!(
            query.contains(&format!("tailLines={RUNNER_LOG_LINES}")),
            "{query}"
        );
        assert!(query.contains(&format!("container={RUNNER_CONTAINER}")));
    }

    #[test]
    fn a_jobs_spark_runs_are_forgotten_and_no_others() {
        let runs = SparkRuns::default();
        for id in ["uid-a-1", "uid-a-2", "uid-ab-1"] {
            runs.runs
                .lock()
                .expect("runs")
                .insert(id.into(), Arc::new(SparkEntry::default()));
        }
        assert!(runs.observe("uid-a-1").found);
        runs.forget("");
        runs.forget("uid-a");
        assert!(!runs.observe("uid-a-1").found && !runs.observe("uid-a-2").found);
        assert!(runs.observe("uid-ab-1").found, "another job's run stays");
    }

    #[test]
    fn the_dask_runner_pod_carries_the_jobs_scheduling_over_the_defaults() {
        let spec = "dataset: {uri: 's3://lake/e/'}\noutput: {uri: 's3://lake/p.json'}\n\
            backend: {type: dask, dask: {schedulerAddress: 'tcp://s:8786', \
              nodeSelector: {pool: dask}, priorityClassName: batch-high, \
              tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}], \
              imagePullSecrets: [{name: registry}], podLabels: {team: data}, \
              podAnnotations: {a: b}, \
              topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, \
                whenUnsatisfiable: DoNotSchedule}]}}\n";
        let mut pj = ProfileJob::new("events", serde_yaml::from_str(spec).expect("spec"));
        pj.metadata.namespace = Some("data".into());
        pj.metadata.uid = Some("uid-1".into());
        let target = Target {
            kind: "dask",
            address: "tcp://s:8786",
            id: "events-d1",
            attempt: 1,
        };
        let work = RemoteTasks {
            run_id: "uid-1".into(),
            plan_uri: "s3://lake/.truthound/uid-1/plan".into(),
            partials_prefix: "s3://lake/.truthound/uid-1/partials".into(),
            tasks: vec![0, 1],
            env: BTreeMap::new(),
            worker_args: Vec::new(),
            retries: 2,
            worker_bin: None,
        };
        let config = RemoteConfig {
            worker_bin: None,
            dask_image: "dask:1".into(),
            pod_defaults: PodSettings::parse(
                "priorityClassName: batch-low\npodSecurityContext: {fsGroup: 65532}\n",
            )
            .expect("defaults"),
        };
        let credentials = [SecretKeys {
            secret: "lake".into(),
            keys: vec!["AWS_ACCESS_KEY_ID".into(), "DB_PASSWORD".into()],
        }];
        let job = dask_runner_job(&pj, &target, &work, &config, &credentials);
        let t = &job.spec.as_ref().expect("spec").template;
        let pod = t.spec.as_ref().expect("pod");
        // Only the storage key, by reference; never the whole Secret.
        let c = &pod.containers[0];
        assert_eq!(c.env_from, None);
        let env = c.env.clone().unwrap_or_default();
        let refs: Vec<(&str, &str)> = env
            .iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.as_str(), r.name.as_str()))
            })
            .collect();
        assert_eq!(refs, [("AWS_ACCESS_KEY_ID", "lake")]);
        assert!(!env.iter().any(|e| e.name == "DB_PASSWORD"));
        let meta = t.metadata.as_ref().expect("meta");
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-high"));
        assert_eq!(
            pod.node_selector.as_ref().map(|n| n["pool"].as_str()),
            Some("dask")
        );
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            pod.image_pull_secrets.clone().unwrap_or_default()[0].name,
            "registry"
        );
        assert_eq!(
            pod.topology_spread_constraints.as_ref().map(Vec::len),
            Some(1)
        );
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels[crate::backend::local::JOB_LABEL], "events");
        assert_eq!(meta.annotations.clone().unwrap_or_default()["a"], "b");
        // the operator-wide default fills in; the built-in security stays under it
        let psc = pod.security_context.clone().unwrap_or_default();
        assert_eq!((psc.fs_group, psc.run_as_user), (Some(65532), Some(65532)));
        // No resources named anywhere: bounded defaults, not an unbounded pod.
        assert_eq!(
            pod.containers[0].resources,
            Some(crate::backend::pods::default_resources())
        );
    }
}
