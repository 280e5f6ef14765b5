//! The reconciler: observe (the ProfileJob, its worker Job and pods, the plan and partials in
//! object storage, the workers' progress), [`decide`](crate::decide::decide), write the status,
//! then act. The status is written before acting, so what an action is about to create is on
//! record first; every action is idempotent, so a crash between the two is repaired by the next
//! reconcile.

use crate::backend::local::{self, MergeParams, WorkerParams};
use crate::backend::remote::{self, RemoteConfig, RemoteError, Target};
use crate::backend::spark::connect::redact;
use crate::backend::tasks::RemoteTasks;
use crate::crd::{ProfileJob, ProfileJobStatus, ResultStatus, TaskFailure};
use crate::decide::{
    self, Action, Decision, EventNote, FailureKind, MergeObserved, Observed, PlanSummary,
    ProgressObserved, Settings, WorkersObserved,
};
use crate::notify;
use crate::status::{parse_ranges, rfc3339};
use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tracing::{info, warn};
use truthound_profile::cache::PartialCache;
use truthound_profile::dataset::{self, Location, StorageOptions};
use truthound_profile::merge::{self, MergeSummary, StoredRun};
use truthound_profile::plan::Strategy;
use truthound_profile::{ErrorClass, Plan, PlanRequest};

/// The field manager of everything the operator writes (server-side apply).
pub const FIELD_MANAGER: &str = "truthound-operator";
/// Finalizer of jobs whose backend has external work to cancel (remote backends).
pub const FINALIZER: &str = "truthound.io/cancel-remote-work";
/// Finalizer of jobs whose work data (`.truthound/<uid>/`) is to be deleted with them.
pub const WORK_DATA_FINALIZER: &str = "truthound.io/work-data";

/// Where the operator's workers report progress, and how it is read back.
pub trait ProgressSource: Send + Sync {
    /// The token a job's workers present.
    fn token(&self, job_uid: &str) -> String;
    /// Progress of a job's running tasks, and those stalled for longer than `stall_timeout`.
    fn observe(&self, job_uid: &str, stall_timeout: Duration) -> ProgressObserved;
    /// The job is finished or gone.
    fn forget(&self, job_uid: &str);
}

/// What the reconciler reports to the metrics.
pub trait MetricsSink: Send + Sync {
    fn job_phase(&self, job_key: &str, phase: Option<&str>);
    fn job_tasks(&self, job_key: &str, pending: u32, running: u32, succeeded: u32, failed: u32);
    fn reconcile_failed(&self, reason: &str);
    /// The status went from `old` (observed) to `new` (written): failures, retries, a job's end.
    fn status_changed(
        &self,
        _job_key: &str,
        _old: Option<&ProfileJobStatus>,
        _new: &ProfileJobStatus,
    ) {
    }
    /// Stalled tasks whose pods were replaced.
    fn tasks_replaced(&self, _n: usize) {}
    /// An operator step retried with backoff, under its event's reason.
    fn step_retried(&self, _reason: &str) {}
    /// A webhook notification attempt: `Delivered`, `Failed` (to be retried) or `GivenUp`.
    fn notification(&self, _result: &str) {}
}

/// Operator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker image when a ProfileJob names none.
    pub worker_image: String,
    /// Address workers reach the progress service at (`http://service.namespace:port`, or
    /// `https://` when it has TLS).
    pub progress_endpoint: Option<String>,
    /// The CA (PEM) workers verify the progress service's certificate against.
    pub progress_ca: Option<String>,
    pub heartbeat_seconds: u64,
    /// The remote backends' settings (th-worker to ship to Ray, the Dask runner's image).
    pub remote: RemoteConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            worker_image: "ghcr.io/truthound/th-worker:latest".into(),
            progress_endpoint: None,
            progress_ca: None,
            heartbeat_seconds: 10,
            remote: RemoteConfig {
                worker_bin: None,
                dask_image: "ghcr.io/truthound/th-worker-dask:latest".into(),
                pod_defaults: Default::default(),
            },
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub config: Config,
    pub recorder: Recorder,
    pub progress: Option<Arc<dyn ProgressSource>>,
    pub metrics: Option<Arc<dyn MetricsSink>>,
    /// Plans read from storage, by URI (a plan never changes once written).
    plans: Mutex<HashMap<String, PlanSummary>>,
    /// The Spark runs this process drives (Spark's client is the operator).
    spark_runs: remote::SparkRuns,
    /// Permits for plans and merges in this process ([`Settings::max_in_process_work`]): the
    /// reconciles of many jobs run at once, and each plan or merge holds a dataset's listing or
    /// a run's partials in memory.
    in_process: tokio::sync::Semaphore,
    /// The webhooks' HTTP client (spec.notify): no redirects, so a receiver cannot send the
    /// operator on to another address.
    webhooks: reqwest::Client,
    /// The event-log records this process wrote, per job.
    recorded: crate::run_log::Recorded,
}

impl Context {
    pub fn new(client: Client, settings: Settings, config: Config, recorder: Recorder) -> Self {
        Context {
            client,
            config,
            recorder,
            progress: None,
            metrics: None,
            plans: Mutex::new(HashMap::new()),
            spark_runs: remote::SparkRuns::default(),
            recorded: Default::default(),
            webhooks: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            in_process: tokio::sync::Semaphore::new(settings.max_in_process_work.max(1)),
            settings,
        }
    }

    /// How many more plans or merges may start in this process now.
    pub fn in_process_permits(&self) -> usize {
        self.in_process.available_permits()
    }
}

/// Reconcile failures. Each says which object or action was at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid(_) => "invalid",
        }
    }
}

/// An action's failure, classified.
#[derive(Debug)]
struct ActionError {
    kind: FailureKind,
    message: String,
}

impl From<Error> for ActionError {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Kube(_) => FailureKind::Transient,
            Error::Invalid(_) => FailureKind::Invalid,
        };
        ActionError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<RemoteError> for ActionError {
    fn from(e: RemoteError) -> Self {
        let kind = match e {
            RemoteError::Unreachable(_) => FailureKind::ClusterUnavailable,
            RemoteError::Invalid(_) => FailureKind::Invalid,
            RemoteError::Kube(_) | RemoteError::Foreign(_) => FailureKind::Transient,
        };
        ActionError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<truthound_profile::Error> for ActionError {
    fn from(e: truthound_profile::Error) -> Self {
        let kind = match e.class() {
            ErrorClass::BadData => FailureKind::BadData,
            ErrorClass::Invalid => FailureKind::Invalid,
            ErrorClass::Transient => FailureKind::Transient,
        };
        ActionError {
            kind,
            message: e.to_string(),
        }
    }
}

pub use crate::decide::backoff;

/// The controller's error policy: retry after a delay (the decisions are idempotent).
pub fn error_policy(pj: Arc<ProfileJob>, err: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(job = %pj.name_any(), error = %redact(&err.to_string()), "reconcile failed");
    if let Some(m) = &ctx.metrics {
        m.reconcile_failed(err.metric_label());
    }
    Requeue::requeue(Duration::from_secs(15))
}

/// One reconcile of one ProfileJob.
pub async fn reconcile(pj: Arc<ProfileJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = pj
        .namespace()
        .ok_or_else(|| Error::Invalid("a ProfileJob must be namespaced".into()))?;
    let key = format!("{ns}/{}", pj.name_any());
    let now = OffsetDateTime::now_utc();
    let obs = observe(&pj, &ctx, now).await?;
    let decision = decide::decide(&obs, &ctx.settings);
    let remote_tasks = obs
        .remote
        .as_ref()
        .map(|r| r.tasks.clone())
        .unwrap_or_default();
    drop(obs);
    let Decision {
        status,
        actions,
        events,
        requeue,
        failed_tasks,
    } = decision;

    write_status(&pj, &ctx, &status).await?;
    for e in &events {
        publish(&pj, &ctx, e).await;
    }
    let stalled: Vec<u32> = actions
        .iter()
        .find_map(|a| match a {
            Action::ReplacePods(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_default();
    record_run_log(
        &pj,
        &ctx,
        &crate::run_log::Seen {
            status: &status,
            failed_for_good: &failed_tasks,
            remote_tasks: &remote_tasks,
            stalled: &stalled,
            stall_seconds: ctx.settings.stall_timeout.as_secs(),
            now,
        },
    )
    .await;
    if let Some(m) = &ctx.metrics {
        m.status_changed(&key, pj.status.as_ref(), &status);
        m.job_phase(&key, status.phase.map(|p| p.name()));
        if let Some(t) = &status.tasks {
            m.job_tasks(&key, t.pending, t.running, t.succeeded, t.failed);
        }
    }
    if status.phase.is_some_and(|p| p.is_finished()) {
        let uid = pj.metadata.uid.as_deref().unwrap_or_default();
        if let Some(p) = &ctx.progress {
            p.forget(uid);
        }
        ctx.spark_runs.forget(uid);
        ctx.recorded.forget(uid);
    }

    let mut requeue = requeue;
    // A finished job past its TTL is deleted only once its notifications are sent or given up:
    // deleting it would lose them.
    let notifying = pj.spec.notify.as_ref().is_some_and(|spec| {
        notify::record(spec, &status)
            .iter()
            .any(|n| n.state == notify::PENDING)
    });
    let actions: Vec<Action> = actions
        .into_iter()
        .filter(|a| !(notifying && matches!(a, Action::DeleteJob)))
        .collect();
    let mut latest = status.clone();
    for action in actions {
        if action == Action::DeleteWorkData {
            // Never fails the job (it is finished, or being deleted): failures are recorded,
            // retried a few times, then given up with the place named.
            match delete_work_data(&pj, &ctx, &mut latest).await {
                Ok(()) => continue,
                Err(again) => return Ok(requeue_at(Some(again))),
            }
        }
        match execute(&pj, &ctx, &status, &action, now).await {
            Ok(Outcome::Done) => {
                if let (Action::ReplacePods(tasks), Some(m)) = (&action, &ctx.metrics) {
                    m.tasks_replaced(tasks.len());
                }
            }
            Ok(Outcome::Again) => requeue = Some(Duration::ZERO),
            Ok(Outcome::Merged(result)) => {
                let (done, event) = decide::merged(&pj, status.clone(), result, now);
                write_status(&pj, &ctx, &done).await?;
                latest = done.clone();
                publish(&pj, &ctx, &event).await;
                if let Some(m) = &ctx.metrics {
                    m.status_changed(&key, Some(&status), &done);
                    m.job_phase(&key, done.phase.map(|p| p.name()));
                }
                if let Some(p) = &ctx.progress {
                    p.forget(pj.metadata.uid.as_deref().unwrap_or_default());
                }
                requeue = if decide::work_data_pending(&pj, &done) {
                    // Next: the work data goes (finished's decision).
                    Some(Duration::ZERO)
                } else {
                    pj.spec
                        .ttl_seconds_after_finished
                        .map(|ttl| Duration::from_secs(ttl.max(0) as u64))
                };
            }
            Ok(Outcome::Gone) => return Ok(Requeue::await_change()),
            Err(ActionError { kind, message }) => {
                let what = action_name(&action);
                let (failed, event, retry) = decide::action_failed(
                    &pj,
                    status.clone(),
                    what,
                    kind,
                    &message,
                    &ctx.settings,
                    now,
                );
                warn!(job = %key, action = what, error = %redact(&message), retry, "action failed");
                write_status(&pj, &ctx, &failed).await?;
                publish(&pj, &ctx, &event).await;
                record_run_log(
                    &pj,
                    &ctx,
                    &crate::run_log::Seen {
                        status: &failed,
                        failed_for_good: &BTreeSet::new(),
                        remote_tasks: &[],
                        stalled: &[],
                        stall_seconds: ctx.settings.stall_timeout.as_secs(),
                        now,
                    },
                )
                .await;
                if let Some(m) = &ctx.metrics {
                    m.reconcile_failed(what);
                    m.status_changed(&key, Some(&status), &failed);
                    if retry {
                        m.step_retried(&event.reason);
                    }
                    m.job_phase(&key, failed.phase.map(|p| p.name()));
                }
                let again = retry.then(|| backoff(failed.consecutive_errors.unwrap_or(1)));
                let next = notify_webhooks(&pj, &ctx, &failed).await;
                return Ok(requeue_at(earliest(again, next)));
            }
        }
    }
    let next = notify_webhooks(&pj, &ctx, &latest).await;
    Ok(requeue_at(earliest(requeue, next)))
}

// ---- the run's event log ------------------------------------------------------------------

/// Writes the operator's new event-log records of this reconcile under `<work>/events/`, and,
/// when the status says for the first time that the run failed, the log beside the output (no
/// merge will write it). Never fails the reconcile: the log is a record of the run, not the run.
async fn record_run_log(pj: &ProfileJob, ctx: &Context, seen: &crate::run_log::Seen<'_>) {
    // A finished run's log is written, and its work data may be gone: a later reconcile (or
    // a restarted operator, which remembers nothing) must not write records there again.
    let finished = pj
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished());
    if finished || pj.metadata.deletion_timestamp.is_some() {
        return;
    }
    let uid = pj.metadata.uid.as_deref().unwrap_or_default();
    let failed = crate::run_log::run_failed(pj.status.as_ref(), seen.status, seen.now);
    let fresh = ctx.recorded.new_ones(uid, crate::run_log::records(seen));
    if fresh.is_empty() && failed.is_none() {
        return;
    }
    let opts = match storage(pj, ctx, true).await {
        Ok(o) => o,
        Err(e) => {
            for r in &fresh {
                ctx.recorded.unmark(uid, &r.name);
            }
            warn!(job = %pj.name_any(), error = %redact(&e.to_string()), "cannot write the run's event records");
            return;
        }
    };
    let prefix = work_prefix(pj);
    for r in &fresh {
        if let Err(e) =
            truthound_profile::events::write_record(&prefix, &r.name, &r.events, &opts).await
        {
            ctx.recorded.unmark(uid, &r.name);
            warn!(job = %pj.name_any(), record = %r.name, error = %e, "cannot write an event record");
        }
    }
    if let Some(line) = failed {
        let log = truthound_profile::events::log_uri(&pj.spec.output.uri);
        match truthound_profile::events::write_log(&prefix, &pj.spec.output.uri, vec![line], &opts)
            .await
        {
            Ok(lines) => {
                info!(job = %pj.name_any(), log = %log, lines = lines.len(), "event log written")
            }
            Err(e) => {
                warn!(job = %pj.name_any(), log = %log, error = %e, "cannot write the event log")
            }
        }
    }
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn requeue_at(d: Option<Duration>) -> Requeue {
    match d {
        Some(d) => Requeue::requeue(d),
        None => Requeue::await_change(),
    }
}

// ---- work data -----------------------------------------------------------------------------

/// Deletes the job's work data (`.truthound/<uid>/`) and records it in `status.workData`
/// (written). `Err` is when to try again; after [`decide::WORK_DATA_ATTEMPTS`] failures it is
/// given up (an Event names the place) and `Ok` is returned, so a deletion is never held for
/// good by storage that is gone.
async fn delete_work_data(
    pj: &ProfileJob,
    ctx: &Context,
    status: &mut ProfileJobStatus,
) -> Result<(), Duration> {
    let prefix = work_prefix(pj);
    let result = async {
        let opts = storage(pj, ctx, true).await.map_err(|e| e.to_string())?;
        delete_prefix(&format!("{prefix}/"), &opts).await
    }
    .await;
    let now = rfc3339(OffsetDateTime::now_utc());
    let mut w = status.work_data.clone().unwrap_or_default();
    let (again, note) = match result {
        Ok(n) => {
            info!(job = %pj.name_any(), prefix = %prefix, objects = n, "work data deleted");
            w.state = Some(decide::WORK_DATA_DELETED.into());
            w.message = Some(format!("{n} object(s) under {prefix}/ deleted"));
            w.time = Some(now);
            (None, None)
        }
        Err(e) => {
            let failed = w.failed_attempts.unwrap_or(0) + 1;
            w.failed_attempts = Some(failed);
            if failed >= decide::WORK_DATA_ATTEMPTS {
                let msg = format!(
                    "the work data under {prefix}/ could not be deleted after {failed} attempts ({e}); it holds exact values and top values of the data: delete it by hand"
                );
                w.state = Some(decide::WORK_DATA_GIVEN_UP.into());
                w.message = Some(msg.clone());
                w.time = Some(now);
                (None, Some(("WorkDataNotDeleted", msg)))
            } else {
                let msg = format!(
                    "deleting the work data under {prefix}/ failed (attempt {failed} of {}): {e}",
                    decide::WORK_DATA_ATTEMPTS
                );
                w.message = Some(msg.clone());
                (Some(backoff(failed)), Some(("WorkDataDeleteFailed", msg)))
            }
        }
    };
    status.work_data = Some(w);
    if let Some((reason, message)) = note {
        warn!(job = %pj.name_any(), "{message}");
        publish(
            pj,
            ctx,
            &EventNote {
                warning: true,
                reason: reason.into(),
                message,
            },
        )
        .await;
    }
    if let Err(err) = write_status(pj, ctx, status).await {
        warn!(job = %pj.name_any(), error = %err, "cannot record the work data's deletion");
        return Err(Duration::from_secs(5));
    }
    match again {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// Deletes every object under `prefix` (a directory URI ending in `/`); the number deleted.
async fn delete_prefix(prefix: &str, opts: &StorageOptions) -> Result<usize, String> {
    use futures::StreamExt;
    let loc = Location::parse(prefix).map_err(|e| e.to_string())?;
    let store = loc.store(opts).map_err(|e| e.to_string())?;
    let listed = store.list(Some(&loc.path)).map_ok(|m| m.location).boxed();
    let deleted: Vec<_> = store
        .delete_stream(listed)
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(deleted.len())
}

// ---- notifying -----------------------------------------------------------------------------

/// Sends the webhook notifications (spec.notify) that `status` calls for and that are due,
/// records each attempt in the status, and returns when the next pending one is due. Never fails
/// the reconcile: a failed delivery is recorded, published and retried, and the status write of
/// the record is retried by the next reconcile (which sends again: at least once).
async fn notify_webhooks(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
) -> Option<Duration> {
    let spec = pj.spec.notify.clone().unwrap_or_default();
    let mut rec = notify::record(&spec, status);
    let uid = pj.metadata.uid.clone().unwrap_or_default();
    // Each webhook's notifications in order: the next once the one before is delivered or
    // given up.
    let mut done_now = std::collections::BTreeSet::new();
    while let Some(i) = notify::heads(&rec)
        .into_iter()
        .find(|&i| !done_now.contains(&rec[i].webhook))
    {
        let n = &mut rec[i];
        let now = OffsetDateTime::now_utc();
        if !notify::is_due(n, now) {
            done_now.insert(n.webhook);
            continue;
        }
        let Some(w) = spec.webhooks.get(n.webhook as usize) else {
            done_now.insert(n.webhook);
            continue;
        };
        let field = format!("spec.notify.webhooks[{}]", n.webhook);
        let shown = notify::shown_url(&w.url);
        let mut max = w.max_attempts.unwrap_or(notify::DEFAULT_MAX_ATTEMPTS);
        let result = match ctx
            .settings
            .access
            .check_webhook(&format!("{field}.url"), &w.url)
        {
            // Refused by the operator's policy: no attempt will do better.
            Err(e) => {
                max = 0;
                Err(e)
            }
            Ok(()) => match webhook_delivery(pj, ctx, w, &field, status, &n.event, &uid, now).await
            {
                Ok(d) => notify::send(&ctx.webhooks, &d).await,
                Err(e) => Err(e),
            },
        };
        let failure = result.as_ref().err().cloned();
        notify::attempted(n, result, OffsetDateTime::now_utc(), max);
        let (reason, warning, message) = match (n.state.as_str(), failure) {
            (notify::DELIVERED, _) => (
                "NotificationDelivered",
                false,
                format!(
                    "{field} ({shown}): {} delivered (attempt {})",
                    n.event, n.attempts
                ),
            ),
            (notify::GIVEN_UP, Some(e)) => (
                "NotificationGivenUp",
                true,
                format!(
                    "{field} ({shown}): {} given up after {} attempt(s): {e}",
                    n.event, n.attempts
                ),
            ),
            (_, e) => (
                "NotificationFailed",
                true,
                format!(
                    "{field} ({shown}): {} attempt {} of {max} failed: {}; retrying at {}",
                    n.event,
                    n.attempts,
                    e.unwrap_or_default(),
                    n.next_attempt_time.as_deref().unwrap_or("?")
                ),
            ),
        };
        if warning {
            warn!(job = %pj.name_any(), webhook = %shown, event = %n.event, "{message}");
        } else {
            info!(job = %pj.name_any(), webhook = %shown, event = %n.event, "{message}");
        }
        if let Some(m) = &ctx.metrics {
            m.notification(match n.state.as_str() {
                notify::DELIVERED => "Delivered",
                notify::GIVEN_UP => "GivenUp",
                _ => "Failed",
            });
        }
        publish(
            pj,
            ctx,
            &EventNote {
                warning,
                reason: reason.to_owned(),
                message,
            },
        )
        .await;
        if n.state == notify::PENDING {
            // Retried after its backoff, by a later reconcile.
            done_now.insert(n.webhook);
        }
    }
    if rec != status.notifications {
        let mut s = status.clone();
        s.notifications = rec.clone();
        if let Err(err) = write_status(pj, ctx, &s).await {
            warn!(job = %pj.name_any(), error = %err, "cannot record the notifications; they will be sent again");
            return Some(Duration::from_secs(5));
        }
    }
    notify::next_due(&rec, OffsetDateTime::now_utc())
}

/// One notification's request: its body, and the header and HMAC key from the webhook's Secrets.
#[allow(clippy::too_many_arguments)]
async fn webhook_delivery<'a>(
    pj: &ProfileJob,
    ctx: &Context,
    w: &'a crate::crd::WebhookSpec,
    field: &str,
    status: &ProfileJobStatus,
    event: &'a str,
    uid: &str,
    now: OffsetDateTime,
) -> Result<notify::Delivery<'a>, String> {
    let body = serde_json::to_vec(&notify::body(pj, status, event, now))
        .map_err(|e| format!("encoding the notification: {e}"))?;
    let header = match &w.header_secret_ref {
        Some(h) => {
            let value = secret_key(
                pj,
                ctx,
                &h.name,
                &h.key,
                &format!("{field}.headerSecretRef"),
            )
            .await?;
            let value = String::from_utf8(value).map_err(|_| {
                format!(
                    "{field}.headerSecretRef: key `{}` of Secret `{}` is not text",
                    h.key, h.name
                )
            })?;
            Some((
                h.header
                    .clone()
                    .unwrap_or_else(|| "Authorization".to_owned()),
                value.trim_end_matches(['\n', '\r']).to_owned(),
            ))
        }
        None => None,
    };
    let hmac_key = match &w.hmac_secret_ref {
        Some(r) => {
            Some(secret_key(pj, ctx, &r.name, &r.key, &format!("{field}.hmacSecretRef")).await?)
        }
        None => None,
    };
    Ok(notify::Delivery {
        url: &w.url,
        body,
        event,
        id: format!(
            "{uid}/{}/{event}",
            field
                .trim_start_matches("spec.notify.webhooks[")
                .trim_end_matches(']')
        ),
        header,
        hmac_key,
        timeout: Duration::from_secs(u64::from(
            w.timeout_seconds.unwrap_or(notify::DEFAULT_TIMEOUT_SECONDS),
        )),
    })
}

/// One key of a Secret in the ProfileJob's namespace; the error names `field`.
async fn secret_key(
    pj: &ProfileJob,
    ctx: &Context,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Vec<u8>, String> {
    let ns = pj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("{field}: reading Secret `{name}`: {e}"))?
        .ok_or_else(|| format!("{field}: Secret `{name}` not found in namespace {ns}"))?;
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|v| v.0)
        .ok_or_else(|| format!("{field}: Secret `{name}` has no key `{key}`"))
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Plan => "planning",
        Action::CreateWorkers { .. } => "creating the worker Job",
        Action::SuspendWorkers(_) => "suspending the worker Job",
        Action::DeleteWorkers => "deleting the worker Job",
        Action::ReplacePods(_) => "replacing stalled pods",
        Action::Merge { .. } => "merging",
        Action::CollectMerge => "reading the merge result",
        Action::DeleteJob => "deleting the finished ProfileJob",
        Action::RemoveFinalizer => "removing the finalizer",
        Action::AddFinalizer => "adding the finalizer",
        Action::DeleteWorkData => "deleting the work data",
        Action::AddWorkDataFinalizer => "adding the work-data finalizer",
        Action::RemoveWorkDataFinalizer => "removing the work-data finalizer",
        Action::SubmitRemote { .. } => "submitting to the cluster",
        Action::CancelRemote => "stopping the remote run",
    }
}

/// Writes the status with server-side apply, only when it changed.
async fn write_status(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
) -> Result<(), Error> {
    apply_status(ctx, pj, pj.status.as_ref(), status).await
}

/// Writes `status` of one of our resources (a ProfileJob, a ProfileSchedule) with server-side
/// apply, as the operator's field manager, when it differs from `current`.
pub(crate) async fn apply_status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(pj: &ProfileJob, ctx: &Context, e: &EventNote) {
    let event = Event {
        type_: if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: e.reason.clone(),
        // No Spark Connect token in an event, whatever its message quotes.
        note: Some(crate::status::truncate(&redact(&e.message), 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    // An event is best-effort: failing to record one must not fail the reconcile.
    if let Err(err) = ctx.recorder.publish(&event, &pj.object_ref(&())).await {
        warn!(job = %pj.name_any(), error = %err, "cannot publish event");
    }
}

// ---- observing ---------------------------------------------------------------------------

/// The text entries of a credentials Secret in the ProfileJob's namespace.
async fn secret_data(
    pj: &ProfileJob,
    ctx: &Context,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let ns = pj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let s = api.get_opt(name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "credentials Secret `{name}` not found in namespace {ns}"
        ))
    })?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect())
}

/// The key names of the job's credentials Secrets, read before its pods are created: the pods
/// get the storage keys among them by `secretKeyRef`, never the whole Secret. A missing Secret
/// is an error naming it.
async fn credential_keys(pj: &ProfileJob, ctx: &Context) -> Result<Vec<local::SecretKeys>, Error> {
    let ns = pj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Vec::new();
    for name in local::credentials_secrets(pj) {
        let s = api.get_opt(name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "credentials Secret `{name}` not found in namespace {ns}"
            ))
        })?;
        out.push(local::SecretKeys {
            secret: name.to_string(),
            keys: s.data.unwrap_or_default().into_keys().collect(),
        });
    }
    Ok(out)
}

/// Storage options (with credentials from the referenced Secret) for the dataset and output.
pub(crate) async fn storage(
    pj: &ProfileJob,
    ctx: &Context,
    output: bool,
) -> Result<StorageOptions, Error> {
    let spec = &pj.spec;
    // Every read and write the operator makes for a job goes through here: a job accepted
    // before the access policy was narrowed is held to it too.
    ctx.settings
        .access
        .check_spec(spec)
        .map_err(Error::Invalid)?;
    let (opts, secret) = if output {
        (
            spec.output
                .options
                .as_ref()
                .unwrap_or(&spec.dataset.options),
            spec.output
                .credentials_secret_ref
                .as_ref()
                .or(spec.dataset.credentials_secret_ref.as_ref()),
        )
    } else {
        (
            &spec.dataset.options,
            spec.dataset.credentials_secret_ref.as_ref(),
        )
    };
    let mut extra = opts.extra.clone();
    if let Some(secret) = secret {
        // Keys are the environment variables workers get (AWS_ACCESS_KEY_ID, ...); lowercased,
        // they are object_store's configuration keys.
        // Only storage keys: the rest of the Secret is none of the endpoint's business.
        for (k, v) in secret_data(pj, ctx, &secret.name).await? {
            if dataset::is_storage_key(&k) {
                extra.insert(k.to_ascii_lowercase(), v);
            }
        }
    }
    Ok(StorageOptions {
        endpoint: opts.endpoint.clone(),
        region: opts.region.clone(),
        allow_http: opts.allow_http,
        extra,
        // The job's Secret or its explicit skip_signature, never the operator's own identity.
        explicit_credentials: true,
    })
}

fn work_prefix(pj: &ProfileJob) -> String {
    decide::work_prefix(
        &pj.spec.output.uri,
        pj.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn summary(plan: &Plan, uri: &str, reused: BTreeSet<u32>) -> PlanSummary {
    PlanSummary {
        reused,
        id: plan.id.clone(),
        uri: uri.to_string(),
        task_rows: plan.tasks.iter().map(|t| t.rows.unwrap_or(0)).collect(),
        bytes: plan.tasks.iter().map(|t| t.bytes).sum(),
        columns: u32::try_from(plan.columns.len()).unwrap_or(u32::MAX),
        exact_limit: plan.options.exact_distinct_limit as u64,
    }
}

async fn observe<'a>(
    pj: &'a ProfileJob,
    ctx: &Context,
    now: OffsetDateTime,
) -> Result<Observed<'a>, Error> {
    let status = pj.status.clone().unwrap_or_default();
    let uid = pj.metadata.uid.clone().unwrap_or_default();
    let ns = pj.namespace().unwrap_or_default();
    let mut obs = Observed {
        has_finalizer: pj.finalizers().iter().any(|f| f == FINALIZER),
        has_work_data_finalizer: pj.finalizers().iter().any(|f| f == WORK_DATA_FINALIZER),
        ..Observed::job(now, pj)
    };
    let Some(phase) = status.phase else {
        return Ok(obs);
    };
    if pj.metadata.deletion_timestamp.is_some() {
        // Deleting the work data waits for the workers to be gone (none writes after it): the
        // worker Job, deleted in the foreground, is there until its pods are.
        if obs.has_work_data_finalizer
            && !phase.is_finished()
            && target(pj, &status).is_none()
            && let Some(name) = status.submission.as_ref().and_then(|s| s.id.clone())
        {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            obs.workers = jobs.get_opt(&name).await?.map(|j| workers_observed(&j));
        }
        return Ok(obs);
    }
    if phase.is_finished() {
        return Ok(obs);
    }
    if ctx.settings.access.check_spec(&pj.spec).is_err() {
        // Nothing is read for a job the access policy refuses: with no plan observed, the
        // decision is to plan, and planning fails the job saying which URI is refused.
        return Ok(obs);
    }
    let out_opts = storage(pj, ctx, true).await?;
    if let Some(uri) = status.submission.as_ref().and_then(|s| s.plan_uri.clone()) {
        obs.plan = read_plan(ctx, &uri, &out_opts).await;
    }
    let Some(plan) = obs.plan.clone() else {
        return Ok(obs);
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if phase == crate::crd::Phase::Pending {
        // The first children are created next: their names must be free of a predecessor's.
        obs.foreign = pending_foreign(pj, ctx, &status).await?;
        return Ok(obs);
    }
    let active = matches!(
        phase,
        crate::crd::Phase::Running | crate::crd::Phase::Suspended | crate::crd::Phase::Queued
    );
    if active && let Some(target) = target(pj, &status) {
        // A remote run: the partials in storage and the run's own record.
        obs.partials = Some(list_partials(&work_prefix(pj), &out_opts).await);
        let remote = remote::observe(&remote_of(ctx), pj, &target, plan.tasks())
            .await
            .map_err(|e| match e {
                RemoteError::Kube(k) => Error::Kube(k),
                other => Error::Invalid(other.to_string()),
            })?;
        obs.foreign = remote.foreign.clone();
        obs.remote = Some(remote);
    } else if active {
        let name = status
            .submission
            .as_ref()
            .and_then(|s| s.id.clone())
            .unwrap_or_default();
        match jobs.get_opt(&name).await? {
            Some(job) if !local::owned_by(&job.metadata, &uid) => {
                // A predecessor's Job of the same name: none of its status is this job's.
                obs.foreign = Some(format!("Job {name}"));
                return Ok(obs);
            }
            Some(job) => {
                let mut w = workers_observed(&job);
                // The real Job controller can publish an index in failedIndexes (podFailurePolicy
                // FailIndex) before its `failed` count: either says there are pods to read.
                if w.failed_pods > 0 || !w.failed.is_empty() {
                    w.failures = pod_failures(ctx, &ns, &job, now).await?;
                }
                obs.workers = Some(w);
            }
            None => {
                // The Job is (re)created next, with its token Secret.
                obs.foreign = foreign_token_secret(pj, ctx, &name).await?;
                if obs.foreign.is_some() {
                    return Ok(obs);
                }
            }
        }
        if let Some(p) = &ctx.progress {
            obs.progress = p.observe(&uid, ctx.settings.stall_timeout);
        }
        let known = obs
            .workers
            .as_ref()
            .map(|w| w.completed.len() + w.failed.len())
            .unwrap_or(0);
        let need_listing = match &obs.workers {
            None => true,
            Some(w) => w.finished || known >= plan.tasks() as usize,
        };
        if need_listing {
            obs.partials = Some(list_partials(&work_prefix(pj), &out_opts).await);
        }
    }
    if phase == crate::crd::Phase::Merging {
        let name = decide::merge_name(&pj.name_any(), &uid, status.attempt.unwrap_or(1));
        let found = jobs.get_opt(&name).await?;
        if found
            .as_ref()
            .is_some_and(|j| !local::owned_by(&j.metadata, &uid))
        {
            obs.foreign = Some(format!("Job {name}"));
            return Ok(obs);
        }
        if let Some(job) = found {
            let w = workers_observed(&job);
            obs.merge = Some(if w.completed.contains(&0) || job_succeeded(&job) {
                MergeObserved::Succeeded
            } else if w.finished || w.failed.contains(&0) {
                // The merge pod's own words (its termination message) say what was at fault.
                let said = pod_failures(ctx, &ns, &job, now)
                    .await?
                    .into_iter()
                    .last()
                    .map(|f| format!(": {}", f.message))
                    .unwrap_or_else(|| "; see its pod's logs".into());
                MergeObserved::Failed(format!("the merge Job {name} failed{said}"))
            } else {
                MergeObserved::Running
            });
        } else if status
            .failed_tasks
            .as_deref()
            .is_some_and(crate::status::is_cut)
        {
            // A merge starts (again) now, and the status lists only some of the failed tasks it
            // goes without: storage says exactly which tasks have a partial.
            let listed = try_list_partials(&work_prefix(pj), &out_opts)
                .await
                .map_err(Error::Invalid)?;
            obs.partials = Some(listed);
        }
    }
    Ok(obs)
}

/// Before the first children of a job are created: a child name already taken by another
/// owner's object, if one is (the worker Job and its token Secret, or the Dask runner Job).
async fn pending_foreign(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
) -> Result<Option<String>, Error> {
    let uid = pj.metadata.uid.clone().unwrap_or_default();
    let name = pj.name_any();
    let attempt = status.attempt.unwrap_or(1).max(1);
    match status.backend.as_ref().map(|b| b.kind.as_str()) {
        // `auto` chooses once the plan is read: most often local.
        None | Some("local") => {
            let workers = decide::workers_name(&name, &uid, attempt);
            if let Some(f) = foreign_job(ctx, pj, &workers).await? {
                return Ok(Some(f));
            }
            foreign_token_secret(pj, ctx, &workers).await
        }
        Some("dask") => {
            foreign_job(ctx, pj, &decide::remote_id("dask", &name, &uid, attempt)).await
        }
        _ => Ok(None),
    }
}

/// `Job <name>` when a Job of that name exists and is not the ProfileJob's.
async fn foreign_job(ctx: &Context, pj: &ProfileJob, name: &str) -> Result<Option<String>, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &pj.namespace().unwrap_or_default());
    let uid = pj.metadata.uid.as_deref().unwrap_or_default();
    Ok(jobs
        .get_opt(name)
        .await?
        .filter(|j| !local::owned_by(&j.metadata, uid))
        .map(|_| format!("Job {name}")))
}

/// `Secret <workers>-token` when the worker Job's progress-token Secret exists and is not the
/// ProfileJob's (its token would not be this job's). Only when the operator hands out tokens.
async fn foreign_token_secret(
    pj: &ProfileJob,
    ctx: &Context,
    workers: &str,
) -> Result<Option<String>, Error> {
    if ctx.progress.is_none() || ctx.config.progress_endpoint.is_none() {
        return Ok(None);
    }
    let name = format!("{workers}-token");
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &pj.namespace().unwrap_or_default());
    let uid = pj.metadata.uid.as_deref().unwrap_or_default();
    Ok(secrets
        .get_opt(&name)
        .await?
        .filter(|s| !local::owned_by(&s.metadata, uid))
        .map(|_| format!("Secret {name}")))
}

async fn read_plan(ctx: &Context, uri: &str, opts: &StorageOptions) -> Option<PlanSummary> {
    if let Some(p) = ctx.plans.lock().ok().and_then(|m| m.get(uri).cloned()) {
        return Some(p);
    }
    let bytes = dataset::read_object(uri, opts).await.ok()?;
    let plan = Plan::from_json(&bytes, uri).ok()?;
    let s = summary(&plan, uri, merge::read_reused(uri, opts).await);
    if let Ok(mut m) = ctx.plans.lock() {
        if m.len() > 1024 {
            m.clear();
        }
        m.insert(uri.to_string(), s.clone());
    }
    Some(s)
}

/// Task ids with a partial under `<prefix>/partials/`. A listing failure is an empty set: the
/// Job's own record still counts, and the next reconcile lists again.
async fn list_partials(prefix: &str, opts: &StorageOptions) -> BTreeSet<u32> {
    match try_list_partials(prefix, opts).await {
        Ok(listed) => listed,
        Err(e) => {
            warn!(prefix = %prefix, error = %e, "cannot list partials");
            BTreeSet::new()
        }
    }
}

/// Task ids with a partial under `<prefix>/partials/`, or why they could not be listed.
async fn try_list_partials(prefix: &str, opts: &StorageOptions) -> Result<BTreeSet<u32>, String> {
    let dir = format!("{prefix}/partials/");
    let names: Vec<String> = async {
        let loc = Location::parse(&dir).map_err(|e| e.to_string())?;
        let store = loc.store(opts).map_err(|e| e.to_string())?;
        store
            .list(Some(&loc.path))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await
            .map_err(|e| e.to_string())
    }
    .await
    .map_err(|e| format!("cannot list the partial profiles under {dir}: {e}"))?;
    Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
}

fn job_succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter().any(|c| {
                (c.type_ == "Complete" || c.type_ == "SuccessCriteriaMet") && c.status == "True"
            })
        })
}

/// What the Job's status says.
pub fn workers_observed(job: &Job) -> WorkersObserved {
    let s = job.status.clone().unwrap_or_default();
    // An incremental run's pod indexes are not task ids: the Job says which task each runs.
    let map = local::task_map(job);
    let tasks = |ranges: Option<&str>| -> BTreeSet<u32> {
        ranges
            .map(parse_ranges)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| local::task_of(map.as_deref(), i))
            .collect()
    };
    let finished = s.conditions.as_ref().is_some_and(|c| {
        c.iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    });
    WorkersObserved {
        name: job.name_any(),
        suspended: job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false),
        active: s.active.unwrap_or(0).max(0) as u32,
        failed_pods: s.failed.unwrap_or(0).max(0) as u32,
        completed: tasks(s.completed_indexes.as_deref()),
        failed: tasks(s.failed_indexes.as_deref()),
        finished,
        failures: Vec::new(),
    }
}

/// Why a worker exited, from its exit code (see th-worker's exit codes).
pub fn failure_reason(exit_code: i32) -> &'static str {
    match exit_code {
        65 => "BadData",
        64 => "Invalid",
        75 => "Transient",
        137 => "Killed",
        _ => "Error",
    }
}

/// The pods of one Job: by its uid (the Job controller's `controller-uid` label), so that a
/// predecessor's pods under the same Job name are never read as this Job's.
fn pods_of_job(job: &Job) -> ListParams {
    let selector = match job.metadata.uid.as_deref() {
        Some(uid) => format!("batch.kubernetes.io/controller-uid={uid}"),
        None => format!("batch.kubernetes.io/job-name={}", job.name_any()),
    };
    ListParams::default().labels(&selector)
}

/// What a worker killed for memory is told: the limit it hit and what to change.
pub fn oom_message(limit: Option<&str>) -> String {
    let hit = match limit {
        Some(l) => format!("its memory limit of {l}"),
        None => "the memory its node could give (it had no limit)".to_owned(),
    };
    format!(
        "killed for using more than {hit} (OOMKilled): raise spec.backend.local.resources.limits.memory, or give each task less to hold: more partitions, or column_based/hybrid with fewer columns per task"
    )
}

async fn pod_failures(
    ctx: &Context,
    ns: &str,
    job: &Job,
    now: OffsetDateTime,
) -> Result<Vec<TaskFailure>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&pods_of_job(job)).await?;
    let mut out = Vec::new();
    let map = local::task_map(job);
    for pod in list.items {
        let Some(task) = pod
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .and_then(|i| i.parse::<u32>().ok())
            .and_then(|i| local::task_of(map.as_deref(), i))
        else {
            continue;
        };
        let Some(status) = &pod.status else { continue };
        if status.phase.as_deref() != Some("Failed") {
            continue;
        }
        let term = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == local::CONTAINER)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let (reason, message) = match term {
            Some(t) if t.reason.as_deref() == Some("OOMKilled") => {
                let limit = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|c| c.name == local::CONTAINER))
                    .and_then(|c| c.resources.as_ref())
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get("memory"))
                    .map(|q| q.0.clone());
                ("OOMKilled", oom_message(limit.as_deref()))
            }
            Some(t) => {
                let message = t
                    .message
                    .clone()
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or_else(|| format!("exit code {}", t.exit_code));
                (failure_reason(t.exit_code), message)
            }
            None => (
                "Error",
                status
                    .message
                    .clone()
                    .unwrap_or_else(|| "the pod failed".into()),
            ),
        };
        out.push(TaskFailure {
            task,
            reason: reason.into(),
            message: message.trim().to_string(),
            time: rfc3339(now),
        });
    }
    out.sort_by_key(|f| f.task);
    Ok(out)
}

// ---- acting ------------------------------------------------------------------------------

enum Outcome {
    Done,
    /// Look again at once (the next step can follow).
    Again,
    Merged(ResultStatus),
    /// The ProfileJob was deleted.
    Gone,
}

async fn execute(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
    action: &Action,
    now: OffsetDateTime,
) -> Result<Outcome, ActionError> {
    let ns = pj.namespace().unwrap_or_default();
    let kube_err = |e: kube::Error| ActionError {
        kind: FailureKind::Transient,
        message: e.to_string(),
    };
    match action {
        Action::Plan => {
            plan(pj, ctx, status).await?;
            Ok(Outcome::Again)
        }
        Action::CreateWorkers { name, tasks, only } => {
            let uid = pj.metadata.uid.clone().unwrap_or_default();
            let token_secret = format!("{name}-token");
            if let (Some(p), Some(_)) = (&ctx.progress, &ctx.config.progress_endpoint) {
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
                let s = local::token_secret(pj, &token_secret, &p.token(&uid));
                create_owned(&secrets, &s, &uid).await?;
            }
            let credentials = credential_keys(pj, ctx).await?;
            let prefix = work_prefix(pj);
            let params = WorkerParams {
                name: name.clone(),
                tasks: *tasks,
                only: only.clone(),
                plan_uri: format!("{prefix}/plan"),
                partials_prefix: format!("{prefix}/partials"),
                default_image: ctx.config.worker_image.clone(),
                progress_endpoint: ctx.config.progress_endpoint.clone(),
                progress_ca: ctx.config.progress_ca.clone(),
                token_secret,
                heartbeat_seconds: ctx.config.heartbeat_seconds,
                pod_defaults: ctx.config.remote.pod_defaults.clone(),
                credentials,
            };
            let job = local::worker_job(pj, &params);
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            create_owned(&jobs, &job, &uid).await?;
            info!(job = %pj.name_any(), workers = %name, tasks, "worker Job created");
            Ok(Outcome::Done)
        }
        Action::SuspendWorkers(suspend) => {
            let name = workers_name(pj, status);
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            jobs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": suspend}})),
            )
            .await
            .map_err(kube_err)?;
            Ok(Outcome::Done)
        }
        Action::DeleteWorkers => {
            let name = workers_name(pj, status);
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            // Only this job's: a predecessor's Job of the same name is not ours to delete.
            let uid = pj.metadata.uid.clone().unwrap_or_default();
            if let Some(job) = jobs.get_opt(&name).await.map_err(kube_err)?
                && local::owned_by(&job.metadata, &uid)
            {
                // A job being deleted: in the foreground, so that the Job stays until its pods
                // are gone, which is what the work data's deletion waits for.
                let policy = if pj.metadata.deletion_timestamp.is_some() {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                };
                let dp =
                    DeleteParams {
                        propagation_policy: Some(policy),
                        preconditions: job.metadata.uid.clone().map(|uid| {
                            kube::api::Preconditions {
                                uid: Some(uid),
                                resource_version: None,
                            }
                        }),
                        ..DeleteParams::default()
                    };
                match jobs.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_err(e)),
                }
            }
            Ok(Outcome::Done)
        }
        Action::ReplacePods(tasks) => {
            let name = workers_name(pj, status);
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let list = pods
                .list(
                    &ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")),
                )
                .await
                .map_err(kube_err)?;
            let wanted: BTreeSet<u32> = tasks.iter().copied().collect();
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            let map = jobs
                .get_opt(&name)
                .await
                .map_err(kube_err)?
                .and_then(|j| local::task_map(&j));
            for pod in list.items {
                let index = pod
                    .annotations()
                    .get("batch.kubernetes.io/job-completion-index")
                    .and_then(|i| i.parse::<u32>().ok())
                    .and_then(|i| local::task_of(map.as_deref(), i));
                let running = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Running" || p == "Pending");
                if index.is_some_and(|i| wanted.contains(&i)) && running {
                    delete_idempotent(&pods, &pod.name_any(), pod.metadata.uid.clone())
                        .await
                        .map_err(kube_err)?;
                }
            }
            Ok(Outcome::Done)
        }
        Action::Merge {
            missing,
            in_pod: true,
        } => {
            let uid = pj.metadata.uid.clone().unwrap_or_default();
            let prefix = work_prefix(pj);
            let params = MergeParams {
                name: decide::merge_name(&pj.name_any(), &uid, status.attempt.unwrap_or(1)),
                plan_uri: format!("{prefix}/plan"),
                work_prefix: prefix,
                missing: missing.clone(),
                cache_uri: pj.spec.output.cache_uri.clone(),
                started_at: status.start_time.clone(),
                default_image: ctx.config.worker_image.clone(),
                pod_defaults: ctx.config.remote.pod_defaults.clone(),
                credentials: credential_keys(pj, ctx).await?,
            };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            create_owned(&jobs, &local::merge_job(pj, &params), &uid).await?;
            info!(job = %pj.name_any(), merge = %params.name, "merge Job created");
            Ok(Outcome::Done)
        }
        Action::Merge {
            missing,
            in_pod: false,
        } => {
            let summary = merge(pj, ctx, status, missing, now).await?;
            Ok(Outcome::Merged(result_of(&summary)))
        }
        Action::CollectMerge => {
            let opts = storage(pj, ctx, true).await?;
            let summary = merge::read_summary(&work_prefix(pj), &opts).await?;
            Ok(Outcome::Merged(result_of(&summary)))
        }
        Action::DeleteJob => {
            let api: Api<ProfileJob> = Api::namespaced(ctx.client.clone(), &ns);
            delete_idempotent(&api, &pj.name_any(), pj.metadata.uid.clone())
                .await
                .map_err(kube_err)?;
            info!(job = %pj.name_any(), "ttlSecondsAfterFinished passed: deleted");
            Ok(Outcome::Gone)
        }
        Action::AddFinalizer => {
            patch_finalizer(pj, ctx, FINALIZER, true).await?;
            Ok(Outcome::Done)
        }
        Action::AddWorkDataFinalizer => {
            patch_finalizer(pj, ctx, WORK_DATA_FINALIZER, true).await?;
            Ok(Outcome::Done)
        }
        Action::RemoveWorkDataFinalizer => {
            patch_finalizer(pj, ctx, WORK_DATA_FINALIZER, false).await?;
            Ok(Outcome::Done)
        }
        // Done by the reconcile loop itself (delete_work_data), which records it.
        Action::DeleteWorkData => Ok(Outcome::Done),
        Action::SubmitRemote { id, tasks } => {
            let t = target(pj, status).ok_or_else(|| ActionError {
                kind: FailureKind::Invalid,
                message: "the job's status names no remote cluster".into(),
            })?;
            let t = Target { id, ..t };
            // The status shows the Spark address without its token; the connection gets the
            // URL as written, with the token of tokenSecretRef, in memory only.
            let connect_url;
            let t = if t.kind == "spark" {
                connect_url = spark_connect_url(pj, ctx, t.address).await?;
                Target {
                    address: &connect_url,
                    ..t
                }
            } else {
                t
            };
            let work = remote_tasks(pj, ctx, t.kind, tasks).await?;
            let opts = storage(pj, ctx, true).await?;
            // Only the Dask runner is a pod; the others need no key names.
            let credentials = if t.kind == "dask" {
                credential_keys(pj, ctx).await?
            } else {
                Vec::new()
            };
            remote::submit(
                &remote_of(ctx),
                pj,
                &t,
                work,
                &opts,
                &ctx.config.remote,
                &credentials,
            )
            .await?;
            Ok(Outcome::Done)
        }
        Action::CancelRemote => {
            let Some(t) = target(pj, status) else {
                return Ok(Outcome::Done);
            };
            match remote::cancel(&remote_of(ctx), pj, &t).await {
                Ok(()) => Ok(Outcome::Done),
                // A job being deleted must not wait for a cluster that is gone: its run cannot
                // be stopped, which is said, and the finalizer goes anyway.
                Err(e) if pj.metadata.deletion_timestamp.is_some() => {
                    warn!(job = %pj.name_any(), error = %e, "cannot stop the remote run of a deleted job");
                    let note = EventNote {
                        warning: true,
                        reason: "CancelFailed".into(),
                        message: format!("the remote run {} was not stopped: {e}", t.id),
                    };
                    publish(pj, ctx, &note).await;
                    Ok(Outcome::Done)
                }
                Err(e) => Err(e.into()),
            }
        }
        Action::RemoveFinalizer => {
            // A deleted job's Spark run (cancelled just before) is no longer looked at.
            ctx.spark_runs
                .forget(pj.metadata.uid.as_deref().unwrap_or_default());
            patch_finalizer(pj, ctx, FINALIZER, false).await?;
            Ok(Outcome::Done)
        }
    }
}

/// The JSON patch (RFC 6902) that adds (`add`) or removes our finalizer, conditional on the
/// list as this reconcile saw it, as kube-runtime's finalizer helper writes it: a `test` of the
/// whole list before adding (so that no one else's finalizer added meanwhile is dropped, and ours
/// is not added twice), of our entry before removing it by index. `None`: nothing to change.
pub fn finalizer_patch(current: &[String], add: bool) -> Option<serde_json::Value> {
    named_finalizer_patch(current, FINALIZER, add)
}

/// [`finalizer_patch`] for the finalizer `name`.
pub fn named_finalizer_patch(
    current: &[String],
    name: &str,
    add: bool,
) -> Option<serde_json::Value> {
    let ours = current.iter().position(|f| f == name);
    match (add, ours) {
        (true, Some(_)) | (false, None) => None,
        (true, None) if current.is_empty() => Some(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [name]},
        ])),
        (true, None) => Some(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": name},
        ])),
        (false, Some(i)) => Some(json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": name},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ])),
    }
}

/// Adds or removes our finalizer with [`finalizer_patch`]. A failed `test` (someone changed the
/// list since it was observed) changes nothing: that change is a watch event, whose reconcile
/// patches again from the new list.
async fn patch_finalizer(
    pj: &ProfileJob,
    ctx: &Context,
    name: &str,
    add: bool,
) -> Result<(), ActionError> {
    let Some(ops) = named_finalizer_patch(pj.finalizers(), name, add) else {
        return Ok(());
    };
    let invalid = |e: serde_json::Error| ActionError {
        kind: FailureKind::Invalid,
        message: format!("the finalizer patch: {e}"),
    };
    let patch: Patch<()> = Patch::Json(serde_json::from_value(ops).map_err(invalid)?);
    let api: Api<ProfileJob> =
        Api::namespaced(ctx.client.clone(), &pj.namespace().unwrap_or_default());
    match api
        .patch(&pj.name_any(), &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
            info!(job = %pj.name_any(), add, "the finalizers changed meanwhile: patched at the next reconcile");
            Ok(())
        }
        Err(e) => Err(ActionError {
            kind: FailureKind::Transient,
            message: e.to_string(),
        }),
    }
}

fn remote_of(ctx: &Context) -> remote::Remote<'_> {
    remote::Remote {
        client: &ctx.client,
        spark: &ctx.spark_runs,
    }
}

/// The remote run of the current attempt, for a job of a remote backend.
fn target<'a>(pj: &ProfileJob, status: &'a ProfileJobStatus) -> Option<Target<'a>> {
    let kind = decide::remote_kind(status)?;
    let _ = pj;
    Some(Target {
        kind,
        address: status.backend.as_ref()?.address.as_deref()?,
        id: status.submission.as_ref()?.id.as_deref()?,
        attempt: status.attempt.unwrap_or(1).max(1) as u32,
    })
}

/// The Spark Connect URL to connect with: the address the job was accepted with, as written
/// (the status holds it with its token as `***`), and the token of
/// `spec.backend.spark.tokenSecretRef` when it names one. Never stored, logged or shown.
async fn spark_connect_url(pj: &ProfileJob, ctx: &Context, shown: &str) -> Result<String, Error> {
    use crate::backend::choice;
    use crate::crd::BackendType;
    let url = choice::address(BackendType::Spark, &pj.spec.backend, &ctx.settings.clusters)
        .filter(|u| u == shown || choice::shown(BackendType::Spark, u) == shown)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the Spark Connect address the job was accepted with ({shown}) is no longer \
                 spec.backend.spark.connectUrl or the operator's SPARK_CONNECT_URL"
            ))
        })?;
    let Some(r) = pj
        .spec
        .backend
        .spark
        .as_ref()
        .and_then(|s| s.token_secret_ref.as_ref())
    else {
        return Ok(url);
    };
    let ns = pj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let what = format!(
        "the Spark Connect token Secret `{}` (spec.backend.spark.tokenSecretRef)",
        r.name
    );
    let secret = api
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{what} is not found in namespace {ns}")))?;
    let token = secret
        .data
        .unwrap_or_default()
        .remove(&r.key)
        .ok_or_else(|| Error::Invalid(format!("{what} has no key `{}`", r.key)))?;
    // The token goes into the URL's parameters and an HTTP header: text without `;` or spaces.
    let token = String::from_utf8(token.0)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && !t.contains(';') && !t.chars().any(char::is_whitespace))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{what}, key `{}`: the token must be non-empty text without `;` or spaces",
                r.key
            ))
        })?;
    Ok(crate::backend::spark::connect::with_token(&url, &token))
}

/// What the remote run is given: the plan, where partials go, the tasks' credentials (Ray: from
/// the Secrets, in the job's environment; Dask: the runner's pod has them) and storage flags.
async fn remote_tasks(
    pj: &ProfileJob,
    ctx: &Context,
    kind: &str,
    tasks: &[u32],
) -> Result<RemoteTasks, Error> {
    let prefix = work_prefix(pj);
    let mut env = std::collections::BTreeMap::new();
    if kind == "ray" {
        for secret in [
            pj.spec.dataset.credentials_secret_ref.as_ref(),
            pj.spec.output.credentials_secret_ref.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            // Only storage keys travel in the Ray job's working_dir (th_env.json).
            env.extend(
                secret_data(pj, ctx, &secret.name)
                    .await?
                    .into_iter()
                    .filter(|(k, _)| dataset::is_storage_key(k)),
            );
        }
    }
    Ok(RemoteTasks {
        run_id: pj.metadata.uid.clone().unwrap_or_default(),
        plan_uri: format!("{prefix}/plan"),
        partials_prefix: format!("{prefix}/partials"),
        tasks: tasks.to_vec(),
        env,
        // The storage flags the local backend's workers get (endpoint, region, plain HTTP).
        worker_args: local::storage_args(pj),
        retries: pj
            .spec
            .backoff_limit_per_task
            .unwrap_or(local::DEFAULT_BACKOFF_PER_TASK)
            .max(0) as u32,
        worker_bin: None,
    })
}

fn workers_name(pj: &ProfileJob, status: &ProfileJobStatus) -> String {
    status
        .submission
        .as_ref()
        .and_then(|s| s.id.clone())
        .unwrap_or_else(|| {
            decide::workers_name(
                &pj.name_any(),
                pj.metadata.uid.as_deref().unwrap_or_default(),
                status.attempt.unwrap_or(1),
            )
        })
}

/// Creates one of the job's children; "already exists" is done only when the existing object
/// is the job's own. Another owner's (a predecessor's child, not yet garbage-collected) is a
/// transient failure: the next reconcile sees it and waits for it to go.
async fn create_owned<K>(api: &Api<K>, obj: &K, uid: &str) -> Result<(), ActionError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let transient = |e: kube::Error| ActionError {
        kind: FailureKind::Transient,
        message: e.to_string(),
    };
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            match api.get_opt(&name).await.map_err(transient)? {
                Some(found) if !local::owned_by(found.meta(), uid) => Err(ActionError {
                    kind: FailureKind::Transient,
                    message: format!(
                        "the previous {} {name} (another owner's) is not deleted yet",
                        K::kind(&Default::default())
                    ),
                }),
                _ => Ok(()),
            }
        }
        Err(e) => Err(transient(e)),
    }
}

/// Deletes an object; with `uid`, only that very object (a precondition), not one created
/// since under the same name.
async fn delete_idempotent<K>(
    api: &Api<K>,
    name: &str,
    uid: Option<String>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The planner's request for a ProfileJob.
pub fn plan_request(pj: &ProfileJob) -> PlanRequest {
    let p = &pj.spec.partitioning;
    let strategy = match p.strategy {
        crate::crd::PartitionStrategy::RowBased => Strategy::RowBased,
        crate::crd::PartitionStrategy::ColumnBased => Strategy::ColumnBased,
        crate::crd::PartitionStrategy::Hybrid => Strategy::Hybrid,
        crate::crd::PartitionStrategy::Hash => Strategy::Hash,
    };
    let mut req = PlanRequest::new(strategy, p.partitions.unwrap_or(4));
    req.row_partitions = p.row_partitions;
    req.column_partitions = p.column_partitions;
    req.hash_column = p.hash_column.clone();
    req.columns = pj.spec.dataset.columns.clone();
    req.target_task_bytes = p.target_task_bytes;
    // Spark reads whole CSV and NDJSON files (validate refuses a target with it).
    if pj.spec.backend.kind == crate::crd::BackendType::Spark {
        req.target_task_bytes = Some(0);
    }
    let prof = &pj.spec.profile;
    let o = &mut req.options;
    if let Some(v) = prof.top_k {
        o.top_k = v as usize;
    }
    if let Some(v) = prof.quantile_sketch_k {
        o.kll_k = v.min(u32::from(u16::MAX)) as u16;
    }
    if let Some(v) = prof.histogram_bins {
        o.histogram_bins = v as usize;
    }
    if let Some(v) = prof.exact_distinct_limit {
        o.exact_distinct_limit = v as usize;
    }
    if let Some(v) = prof.patterns {
        o.patterns = v;
    }
    if let Some(v) = prof.duplicates {
        o.duplicates = v;
    }
    if let Some(s) = &prof.sampling {
        o.sampling = Some(truthound_profile::options::Sampling::new(
            s.fraction,
            s.seed.unwrap_or(0).max(0) as u64,
        ));
    }
    req
}

fn format_of(pj: &ProfileJob) -> Option<dataset::Format> {
    use crate::crd::DatasetFormat as F;
    pj.spec.dataset.format.map(|f| match f {
        F::Parquet => dataset::Format::Parquet,
        F::Csv => dataset::Format::Csv,
        F::Ndjson => dataset::Format::Ndjson,
        F::Ipc => dataset::Format::Ipc,
    })
}

/// What the job says of its CSV dialect, in the engine's terms.
pub fn csv_options(pj: &ProfileJob) -> truthound_profile::Result<dataset::CsvOptions> {
    use crate::crd::CsvEncoding as E;
    let Some(c) = &pj.spec.dataset.csv else {
        return Ok(dataset::CsvOptions::default());
    };
    let char_of = |what: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|s| dataset::parse_char(what, s))
            .transpose()
    };
    Ok(dataset::CsvOptions {
        delimiter: char_of("spec.dataset.csv.delimiter", &c.delimiter)?.flatten(),
        quote: char_of("spec.dataset.csv.quote", &c.quote)?,
        escape: char_of("spec.dataset.csv.escape", &c.escape)?,
        comment: char_of("spec.dataset.csv.comment", &c.comment)?,
        header: c.header,
        null_tokens: c.null_values.clone(),
        encoding: c.encoding.map(|e| match e {
            E::Utf8 => dataset::Encoding::Utf8,
            E::Latin1 => dataset::Encoding::Latin1,
            E::Windows1252 => dataset::Encoding::Windows1252,
            E::Utf16 | E::Utf16Le => dataset::Encoding::Utf16Le,
            E::Utf16Be => dataset::Encoding::Utf16Be,
        }),
    })
}

/// Lists the dataset, plans and writes the plan, unless the plan of this attempt is already
/// written (a restart between writing it and recording it).
async fn plan(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
) -> Result<(), ActionError> {
    let uri = status
        .submission
        .as_ref()
        .and_then(|s| s.plan_uri.clone())
        .unwrap_or_else(|| format!("{}/plan", work_prefix(pj)));
    let out_opts = storage(pj, ctx, true).await?;
    if read_plan(ctx, &uri, &out_opts).await.is_some() {
        return Ok(());
    }
    let data_opts = storage(pj, ctx, false).await?;
    // One of a few plans or merges in this process at once (the semaphore is never closed).
    let _permit = ctx.in_process.acquire().await.ok();
    let t0 = Instant::now();
    let csv = csv_options(pj)?;
    let table = dataset::TableOptions {
        version: pj.spec.dataset.table_version,
    };
    let ds = dataset::discover_at(
        &pj.spec.dataset.uri,
        format_of(pj),
        &data_opts,
        &csv,
        &table,
    )
    .await?;
    let mut request = plan_request(pj);
    request.cache = pj.spec.output.cache_uri.is_some();
    let plan = truthound_profile::plan::plan_with_scan(&ds, &request).await?;
    // Cached partials go where the tasks' would, before the plan: a plan in storage means the
    // reused tasks are done (a restart before it plans and looks up again).
    let mut reused = BTreeSet::new();
    if let Some(cache_uri) = &pj.spec.output.cache_uri {
        let cache = PartialCache::new(cache_uri, &out_opts);
        let prefix = work_prefix(pj);
        for (task, hit) in plan.tasks.iter().zip(cache.lookup(&plan).await) {
            let Some(partial) = hit else { continue };
            let to = format!("{prefix}/partials/{}", task.id);
            dataset::write_object(&to, &out_opts, partial.to_bytes()).await?;
            reused.insert(task.id);
        }
        let ids = serde_json::to_vec(&reused).unwrap_or_default();
        dataset::write_object(&merge::reused_uri(&uri), &out_opts, ids).await?;
        info!(job = %pj.name_any(), cache = %cache_uri, reused = reused.len(), tasks = plan.tasks.len(), "cache looked up");
    }
    dataset::write_object(&uri, &out_opts, plan.to_json()).await?;
    let planned = crate::run_log::planned(
        &plan.id,
        plan.tasks.len() as u32,
        ds.files.len(),
        OffsetDateTime::now_utc(),
    );
    if let Err(e) = truthound_profile::events::write_record(
        &work_prefix(pj),
        &planned.name,
        &planned.events,
        &out_opts,
    )
    .await
    {
        warn!(job = %pj.name_any(), error = %e, "cannot write the plan's event record");
    }
    info!(
        job = %pj.name_any(),
        plan = %plan.id,
        tasks = plan.tasks.len(),
        files = ds.files.len(),
        millis = t0.elapsed().as_millis() as u64,
        "plan written"
    );
    if let Ok(mut m) = ctx.plans.lock() {
        m.insert(uri.clone(), summary(&plan, &uri, reused));
    }
    Ok(())
}

/// Merges in the operator: reads every partial (a few at a time), merges them, and writes the
/// profile, the task table and the summary, as a merge pod would.
async fn merge(
    pj: &ProfileJob,
    ctx: &Context,
    status: &ProfileJobStatus,
    missing: &[u32],
    now: OffsetDateTime,
) -> Result<MergeSummary, ActionError> {
    // The semaphore is never closed: a permit is always given, in turn.
    let _permit = ctx.in_process.acquire().await.ok();
    let opts = storage(pj, ctx, true).await?;
    let prefix = work_prefix(pj);
    let plan_uri = format!("{prefix}/plan");
    let plan_bytes = dataset::read_object(&plan_uri, &opts).await?;
    let plan = Plan::from_json(&plan_bytes, &plan_uri)?;
    let started = status
        .start_time
        .as_deref()
        .and_then(crate::status::parse_time)
        .unwrap_or(now);
    let reused = merge::read_reused(&plan_uri, &opts).await;
    let run = StoredRun {
        plan: &plan,
        cache: pj
            .spec
            .output
            .cache_uri
            .as_deref()
            .map(|c| PartialCache::new(c, &opts)),
        reused,
        work_prefix: prefix,
        missing: missing.iter().copied().collect(),
        profile_uri: pj.spec.output.uri.clone(),
        duration_ms: (now - started).whole_milliseconds().max(0) as u64,
        keep_state: pj.spec.profile.keep_state == Some(true),
    };
    let summary = merge::merge_stored(&run, &opts).await?;
    info!(job = %pj.name_any(), profile = %summary.profile_uri, rows = summary.rows, "profile written");
    Ok(summary)
}

/// The ProfileJob's result, from what the merge wrote.
fn result_of(s: &MergeSummary) -> ResultStatus {
    let missing: BTreeSet<u32> = s.missing_tasks.iter().copied().collect();
    ResultStatus {
        profile_uri: s.profile_uri.clone(),
        rows: s.rows,
        columns: s.columns as u32,
        duration_seconds: (s.duration_ms as f64 / 100.0).round() / 10.0,
        missing_tasks: crate::status::bounded_ranges(&missing),
    }
}

// ---- adapters ----------------------------------------------------------------------------

impl ProgressSource for crate::progress::ProgressHub {
    fn token(&self, job_uid: &str) -> String {
        self.token_for(job_uid)
    }

    fn observe(&self, job_uid: &str, stall_timeout: Duration) -> ProgressObserved {
        let now = std::time::SystemTime::now();
        let snapshot = self.snapshot(job_uid);
        let running_rows = snapshot
            .tasks
            .values()
            .filter(|t| t.running())
            .map(|t| t.rows_done)
            .sum();
        let rows_per_second = snapshot
            .first_started()
            .and_then(|t0| now.duration_since(t0).ok())
            .map(|d| d.as_secs_f64())
            .filter(|s| *s >= 1.0)
            .map(|s| snapshot.rows_done() as f64 / s)
            .unwrap_or(0.0);
        // The worker nearest its limit, by share of it, as last reported (a task that
        // finished between two reconciles still counts: it got that near).
        let memory = snapshot
            .tasks
            .iter()
            .filter(|(_, t)| t.failed.is_none() && t.memory_limit_bytes > 0 && t.rss_bytes > 0)
            .max_by(|(_, a), (_, b)| {
                let share = |t: &crate::progress::TaskProgress| {
                    t.rss_bytes as f64 / t.memory_limit_bytes as f64
                };
                share(a).total_cmp(&share(b))
            })
            .map(|(&task, t)| decide::WorkerMemory {
                task,
                rss_bytes: t.rss_bytes,
                limit_bytes: t.memory_limit_bytes,
            });
        ProgressObserved {
            running_rows,
            rows_per_second,
            stalled: self.stalled(job_uid, now, stall_timeout),
            memory,
        }
    }

    fn forget(&self, job_uid: &str) {
        crate::progress::ProgressHub::forget(self, job_uid);
    }
}

impl MetricsSink for crate::metrics::Metrics {
    fn job_phase(&self, job_key: &str, phase: Option<&str>) {
        self.set_job_phase(job_key, phase);
    }

    fn job_tasks(&self, job_key: &str, pending: u32, running: u32, succeeded: u32, failed: u32) {
        self.set_job_tasks(job_key, pending, running, succeeded, failed);
    }

    fn reconcile_failed(&self, reason: &str) {
        self.reconcile_failure(reason);
    }

    fn status_changed(
        &self,
        job_key: &str,
        old: Option<&ProfileJobStatus>,
        new: &ProfileJobStatus,
    ) {
        crate::metrics::Metrics::status_changed(self, job_key, old, new);
    }

    fn tasks_replaced(&self, n: usize) {
        crate::metrics::Metrics::tasks_replaced(self, n);
    }

    fn step_retried(&self, reason: &str) {
        crate::metrics::Metrics::step_retried(self, reason);
    }

    fn notification(&self, result: &str) {
        crate::metrics::Metrics::notification(self, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_is_added_and_removed_only_over_the_list_as_seen() {
        assert_eq!(
            finalizer_patch(&[], true),
            Some(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]))
        );
        let others = vec!["other.io/keep".to_string()];
        assert_eq!(
            finalizer_patch(&others, true),
            Some(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["other.io/keep"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ]))
        );
        let with = vec!["other.io/keep".to_string(), FINALIZER.to_string()];
        assert_eq!(finalizer_patch(&with, true), None, "never twice");
        assert_eq!(
            finalizer_patch(&with, false),
            Some(json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ]))
        );
        assert_eq!(finalizer_patch(&others, false), None);
        // What kube's JSON patch type accepts.
        for ops in [finalizer_patch(&[], true), finalizer_patch(&with, false)] {
            let _: Patch<()> =
                Patch::Json(serde_json::from_value(ops.expect("a patch")).expect("RFC 6902"));
        }
    }
}
