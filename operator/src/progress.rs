//! The gRPC service `th-worker` pods report to: task started, rows read, alive, finished or
//! failed (`proto/progress.proto`).
//!
//! The operator keeps what it hears in a [`ProgressHub`]: per job, per task, the latest figures
//! and when the task was last heard from. The reconciler reads it with
//! [`ProgressHub::snapshot`] to fill `status.progress`, asks [`ProgressHub::stalled`] for tasks
//! gone quiet (their pods are replaced), and learns which jobs changed from a
//! [`ProgressHub::changes`] stream that yields at most once per interval, so a thousand
//! reporting pods do not become a thousand status writes a second.
//!
//! Every report carries a per-job token, `hex(HMAC-SHA256(key, job uid))`, in the
//! `authorization: Bearer …` metadata. The operator hands each job's pods their job's token
//! ([`ProgressHub::token_for`]), so a pod can report for its own job only. The key must stay the
//! same across operator restarts (keep it in a Secret): under a new key the tokens of running
//! pods no longer match, and while their tasks go on, their reports are refused.
//!
//! What the hub holds is soft state: after an operator restart it fills again from the next
//! reports, and a task that is never heard from is judged by its pod's status, as without the
//! channel.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The code generated from `proto/progress.proto` (server and client).
pub mod pb {
    tonic::include_proto!("truthound.progress.v1");
}

use pb::progress_server::{Progress, ProgressServer};
use pb::{ReportKind, ReportRequest, ReportResponse};

/// Shortest HMAC key accepted: a guessable key would let any pod mint any job's token.
pub const MIN_KEY_BYTES: usize = 16;
/// Task ids a job may report: Kubernetes caps an Indexed Job's completions at 100,000, and the
/// bound keeps one job's pods from growing the operator's memory without limit.
pub const MAX_TASKS_PER_JOB: u32 = 100_000;
/// Longest failure message kept per task (the status keeps less).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Largest request the service decodes; a report is well under 5 KiB.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long one call may take before the server gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the progress service.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("the progress token key has {0} bytes; it needs at least {MIN_KEY_BYTES} random bytes")]
    WeakKey(usize),
    #[error("progress service: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("progress service: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("progress service TLS: {0}")]
    Tls(String),
}

/// What the operator knows of one task of a job (of its latest attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskProgress {
    /// Rows read so far (in the plan's unit: rows before a hash filter).
    pub rows_done: u64,
    /// Rows the task reads; 0 when the format does not say (CSV, NDJSON).
    pub rows_total: u64,
    /// When this attempt was first heard from.
    pub started: SystemTime,
    /// When this attempt was last heard from (any report counts as a heartbeat).
    pub last_seen: SystemTime,
    /// The partial profile is written.
    pub finished: bool,
    /// The attempt failed, and why (cleared when a new attempt starts).
    pub failed: Option<String>,
    /// The pod of this attempt.
    pub pod: String,
    /// The plan the worker ran (empty when it could not read one).
    pub plan_id: String,
    /// The worker's resident memory at its last report (0: not reported).
    pub rss_bytes: u64,
    /// Its container's memory limit (0: none, or not reported).
    pub memory_limit_bytes: u64,
}

impl TaskProgress {
    /// Still running: neither finished nor failed.
    pub fn running(&self) -> bool {
        !self.finished && self.failed.is_none()
    }
}

/// What the operator knows of one job's tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobProgress {
    pub tasks: BTreeMap<u32, TaskProgress>,
}

impl JobProgress {
    /// Rows read by the tasks heard from. In column-split plans several tasks read the same
    /// rows, so this is work done, not dataset rows; `rows_done / rows_total` is the fraction.
    pub fn rows_done(&self) -> u64 {
        self.tasks.values().map(|t| t.rows_done).sum()
    }

    /// Rows the tasks heard from will read (finished tasks count their rows done, so that a
    /// task whose total was unknown still adds up).
    pub fn rows_total(&self) -> u64 {
        self.tasks
            .values()
            .map(|t| {
                if t.finished {
                    t.rows_total.max(t.rows_done)
                } else {
                    t.rows_total
                }
            })
            .sum()
    }

    pub fn finished(&self) -> usize {
        self.tasks.values().filter(|t| t.finished).count()
    }

    pub fn running(&self) -> usize {
        self.tasks.values().filter(|t| t.running()).count()
    }

    /// When the earliest task heard from started (for a rate: rows / elapsed).
    pub fn first_started(&self) -> Option<SystemTime> {
        self.tasks.values().map(|t| t.started).min()
    }
}

/// Called once per task that reports FINISHED: job uid, task, duration of the attempt as the
/// operator saw it (first report to FINISHED), rows read.
type FinishedHook = Arc<dyn Fn(&str, u32, Duration, u64) + Send + Sync>;
/// Called for every accepted report.
type ReportHook = Arc<dyn Fn(&ReportRequest) + Send + Sync>;

#[derive(Default)]
struct Hooks {
    finished: Vec<FinishedHook>,
    report: Vec<ReportHook>,
}

#[derive(Default)]
struct JobState {
    progress: JobProgress,
    /// Bumped on every accepted report; [`Changes`] compares it with what it last saw.
    version: u64,
}

struct Inner {
    key: ring::hmac::Key,
    jobs: Mutex<HashMap<String, JobState>>,
    /// Bumped on every accepted report; wakes [`Changes`] streams.
    generation: watch::Sender<u64>,
    hooks: RwLock<Hooks>,
}

/// The operator's record of reported progress, shared by the gRPC service and the reconciler.
/// Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ProgressHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProgressHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressHub")
            .field("jobs", &self.jobs().len())
            .finish_non_exhaustive()
    }
}

impl ProgressHub {
    /// A hub whose tokens are HMACs under `key` (at least [`MIN_KEY_BYTES`] random bytes, the
    /// same on every start of the operator).
    pub fn new(key: Vec<u8>) -> Result<ProgressHub, ProgressError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(ProgressError::WeakKey(key.len()));
        }
        Ok(ProgressHub {
            inner: Arc::new(Inner {
                key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
                jobs: Mutex::new(HashMap::new()),
                generation: watch::Sender::new(0),
                hooks: RwLock::new(Hooks::default()),
            }),
        })
    }

    /// 32 random bytes, for a key when none is configured (tokens then last as long as the
    /// process).
    pub fn generate_key() -> Vec<u8> {
        use ring::rand::SecureRandom;
        let mut key = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the system's random number generator works");
        key
    }

    /// The token the pods of job `job_uid` present: hex of HMAC-SHA256(key, uid).
    pub fn token_for(&self, job_uid: &str) -> String {
        let tag = ring::hmac::sign(&self.inner.key, job_uid.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is job `job_uid`'s, compared in constant time.
    pub fn verify(&self, job_uid: &str, token: &str) -> bool {
        match unhex(token) {
            Some(tag) => ring::hmac::verify(&self.inner.key, job_uid.as_bytes(), &tag).is_ok(),
            None => false,
        }
    }

    /// What is known of job `job_uid` (empty when nothing was heard).
    pub fn snapshot(&self, job_uid: &str) -> JobProgress {
        self.lock()
            .get(job_uid)
            .map(|j| j.progress.clone())
            .unwrap_or_default()
    }

    /// Drops what is known of a job (deleted, or done and its status written). A pod of it that
    /// still reports with a valid token adds it again.
    pub fn forget(&self, job_uid: &str) {
        self.lock().remove(job_uid);
    }

    /// Uids of the jobs heard from.
    pub fn jobs(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Running tasks of `job_uid` last heard from more than `timeout` before `now`: their pods
    /// are hung or cut off and should be replaced.
    pub fn stalled(&self, job_uid: &str, now: SystemTime, timeout: Duration) -> Vec<u32> {
        let jobs = self.lock();
        let Some(job) = jobs.get(job_uid) else {
            return Vec::new();
        };
        job.progress
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.running()
                    && now
                        .duration_since(t.last_seen)
                        .is_ok_and(|quiet| quiet > timeout)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Registers `f` to be called once for each task that reports FINISHED, with the job uid,
    /// the task, how long the attempt took as the operator saw it, and its rows: what metrics
    /// need for task durations and rows processed. `f` runs on the service's task; keep it short.
    pub fn on_finished(&self, f: impl Fn(&str, u32, Duration, u64) + Send + Sync + 'static) {
        self.hooks_mut().finished.push(Arc::new(f));
    }

    /// Registers `f` to be called with every accepted report (authenticated and valid), e.g. to
    /// count reports by kind. `f` runs on the service's task; keep it short.
    pub fn on_report(&self, f: impl Fn(&ReportRequest) + Send + Sync + 'static) {
        self.hooks_mut().report.push(Arc::new(f));
    }

    fn hooks_mut(&self) -> std::sync::RwLockWriteGuard<'_, Hooks> {
        self.inner.hooks.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream of the jobs whose progress changed, yielding at most once per `every`: the
    /// reconciler's cue to refresh `status.progress` at a bounded rate.
    pub fn changes(&self, every: Duration) -> Changes {
        Changes {
            hub: self.clone(),
            rx: self.inner.generation.subscribe(),
            seen: HashMap::new(),
            every,
            last: None,
        }
    }

    /// The gRPC service, to mount on a tonic server of the caller's own.
    pub fn service(&self) -> ProgressServer<ProgressService> {
        ProgressServer::new(ProgressService { hub: self.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, JobState>> {
        // The map stays consistent even if a holder panicked: each update is a few assignments.
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one authenticated report received at `now`.
    fn record(&self, r: &ReportRequest, now: SystemTime) -> Result<(), Status> {
        let kind = ReportKind::try_from(r.kind)
            .ok()
            .filter(|k| *k != ReportKind::Unspecified)
            .ok_or_else(|| Status::invalid_argument(format!("unknown report kind {}", r.kind)))?;
        if r.task >= MAX_TASKS_PER_JOB {
            return Err(Status::invalid_argument(format!(
                "task {} is out of range (a job has at most {MAX_TASKS_PER_JOB} tasks)",
                r.task
            )));
        }
        let finished_hook = {
            let mut jobs = self.lock();
            let job = jobs.entry(r.job_uid.clone()).or_default();
            let finished = apply(&mut job.progress.tasks, r, kind, now);
            job.version += 1;
            finished
        };
        self.inner
            .generation
            .send_modify(|g| *g = g.wrapping_add(1));
        // Called without the hub's lock held, so a hook may read the hub.
        let (report_hooks, finished_hooks) = {
            let hooks = self.inner.hooks.read().unwrap_or_else(|e| e.into_inner());
            (hooks.report.clone(), hooks.finished.clone())
        };
        for hook in report_hooks {
            hook(r);
        }
        if let Some((duration, rows)) = finished_hook {
            for hook in finished_hooks {
                hook(&r.job_uid, r.task, duration, rows);
            }
        }
        Ok(())
    }

    /// Jobs whose version differs from `seen`, updating `seen` (and dropping forgotten jobs).
    fn changed_since(&self, seen: &mut HashMap<String, u64>) -> Vec<String> {
        let jobs = self.lock();
        seen.retain(|uid, _| jobs.contains_key(uid));
        let mut changed = Vec::new();
        for (uid, j) in jobs.iter() {
            if seen.insert(uid.clone(), j.version) != Some(j.version) {
                changed.push(uid.clone());
            }
        }
        changed.sort();
        changed
    }
}

/// Folds one report into a job's tasks. Returns the duration and rows of a task that has just
/// finished (for the [`ProgressHub::on_finished`] hooks).
///
/// The latest attempt wins: STARTED, or a report from a pod other than the recorded one, starts
/// a new attempt (a restarted container, a replaced pod), except that a finished task stays
/// finished. Counts are
/// cumulative, so within an attempt they only grow, whatever order reports arrive in.
fn apply(
    tasks: &mut BTreeMap<u32, TaskProgress>,
    r: &ReportRequest,
    kind: ReportKind,
    now: SystemTime,
) -> Option<(Duration, u64)> {
    let t = match tasks.entry(r.task) {
        Entry::Vacant(v) => v.insert(TaskProgress {
            rows_done: 0,
            rows_total: 0,
            started: now,
            last_seen: now,
            finished: false,
            failed: None,
            pod: r.pod.clone(),
            plan_id: r.plan_id.clone(),
            rss_bytes: 0,
            memory_limit_bytes: 0,
        }),
        Entry::Occupied(o) => {
            let t = o.into_mut();
            if t.finished && kind != ReportKind::Finished {
                // A late report of an attempt that lost the race changes nothing.
                return None;
            }
            if t.pod != r.pod || kind == ReportKind::Started {
                *t = TaskProgress {
                    rows_done: 0,
                    rows_total: 0,
                    started: now,
                    last_seen: now,
                    finished: t.finished,
                    failed: None,
                    pod: r.pod.clone(),
                    plan_id: r.plan_id.clone(),
                    rss_bytes: 0,
                    memory_limit_bytes: 0,
                };
            }
            t
        }
    };
    t.last_seen = now;
    t.rows_done = t.rows_done.max(r.rows_done);
    if r.rss_bytes > 0 {
        t.rss_bytes = r.rss_bytes;
        t.memory_limit_bytes = r.memory_limit_bytes;
    }
    if r.rows_total > 0 {
        t.rows_total = r.rows_total;
    }
    if !r.plan_id.is_empty() {
        t.plan_id.clone_from(&r.plan_id);
    }
    match kind {
        ReportKind::Finished if !t.finished => {
            t.finished = true;
            t.failed = None;
            let took = now.duration_since(t.started).unwrap_or_default();
            Some((took, t.rows_done))
        }
        ReportKind::Failed if !t.finished => {
            let message = if r.message.is_empty() {
                "failed (no message)"
            } else {
                truncate(&r.message, MAX_MESSAGE_BYTES)
            };
            t.failed = Some(message.to_string());
            None
        }
        _ => None,
    }
}

/// Jobs whose progress changed, at a bounded rate ([`ProgressHub::changes`]).
pub struct Changes {
    hub: ProgressHub,
    rx: watch::Receiver<u64>,
    /// Version of each job when this stream last yielded it.
    seen: HashMap<String, u64>,
    every: Duration,
    last: Option<tokio::time::Instant>,
}

impl Changes {
    /// Waits until some job changed (and at least `every` after the previous yield), then
    /// returns the uids of the jobs that changed since, sorted.
    pub async fn next(&mut self) -> Vec<String> {
        loop {
            if let Some(last) = self.last {
                tokio::time::sleep_until(last + self.every).await;
            }
            if self.rx.changed().await.is_err() {
                // Unreachable: this stream holds the hub, and so the sender.
                std::future::pending::<()>().await;
            }
            self.last = Some(tokio::time::Instant::now());
            let changed = self.hub.changed_since(&mut self.seen);
            if !changed.is_empty() {
                return changed;
            }
        }
    }
}

/// The ProfileJobs to reconcile because their progress changed: [`ProgressHub::changes`]
/// mapped from job uids to the objects in the controller's cache (`Controller::reconcile_on`).
/// A uid the cache does not know (a job deleted since) is dropped.
pub fn reconcile_triggers(
    changes: Changes,
    jobs: kube::runtime::reflector::Store<crate::crd::ProfileJob>,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<crate::crd::ProfileJob>>
+ Send
+ 'static {
    use futures::StreamExt;
    let uids = futures::stream::unfold(changes, |mut changes| async move {
        let uids = changes.next().await;
        Some((uids, changes))
    });
    uids.flat_map(move |uids| {
        let refs: Vec<_> = jobs
            .state()
            .iter()
            .filter(|pj| {
                pj.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| uids.binary_search(u).is_ok())
            })
            .map(|pj| kube::runtime::reflector::ObjectRef::from_obj(pj.as_ref()))
            .collect();
        futures::stream::iter(refs)
    })
}

/// The gRPC service: authenticates each report and records it in the hub.
#[derive(Clone)]
pub struct ProgressService {
    hub: ProgressHub,
}

#[tonic::async_trait]
impl Progress for ProgressService {
    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let token = bearer(&request)?;
        let r = request.into_inner();
        if r.job_uid.is_empty() {
            return Err(Status::invalid_argument("job_uid is empty"));
        }
        if !self.hub.verify(&r.job_uid, token.as_str()) {
            tracing::debug!(job = %r.job_uid, task = r.task, pod = %r.pod, "progress report with a wrong token refused");
            return Err(Status::unauthenticated(
                "the token is not this job's (each job's pods get their own token)",
            ));
        }
        tracing::trace!(job = %r.job_uid, task = r.task, kind = r.kind, rows = r.rows_done, "progress report");
        self.hub.record(&r, SystemTime::now())?;
        Ok(Response::new(ReportResponse {}))
    }
}

/// The bearer token of a request.
fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("no authorization metadata (Bearer <job token>)"))?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .ok_or_else(|| Status::unauthenticated("authorization metadata is not `Bearer <token>`"))
}

/// The progress service's TLS: its certificate (chain) and private key, PEM, as a
/// `kubernetes.io/tls` Secret holds them (`tls.crt`, `tls.key`). Workers verify the certificate
/// against the CA the operator gives them (`TH_PROGRESS_CA`).
/// They are checked here (PEM, a key that goes with the certificate), so a bad pair stops the
/// operator at start instead of leaving it without a progress service.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tonic::transport::ServerTlsConfig, ProgressError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| ProgressError::Tls(format!("{what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("the certificate is not PEM", &e))?;
    if certs.is_empty() {
        return Err(ProgressError::Tls(
            "no certificate in the certificate file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad("the key is not a PEM private key", &e))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("TLS", &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad("the certificate and key", &e))?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem)))
}

/// Serves the progress service on `addr` until `shutdown` completes, over TLS when `tls` is
/// given.
pub async fn serve(
    hub: ProgressHub,
    addr: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProgressError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProgressError::Bind { addr, source })?;
    serve_tls_on(hub, listener, tls, shutdown).await
}

/// Serves the progress service on a bound listener (tests bind `127.0.0.1:0`) until `shutdown`
/// completes.
pub async fn serve_on(
    hub: ProgressHub,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProgressError> {
    serve_tls_on(hub, listener, None, shutdown).await
}

/// [`serve_on`], over TLS when `tls` is given (a bad certificate or key is an error here,
/// before anything is served).
pub async fn serve_tls_on(
    hub: ProgressHub,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProgressError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "progress service listening");
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        // tonic builds its rustls config with the process's provider; with ring and aws-lc-rs
        // both compiled in (kube, object_store) there is none until one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        builder = builder.tls_config(tls)?;
    }
    builder
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(hub.service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_pair_is_checked_before_serving() {
        let cert = include_bytes!("../../tests/fixtures/progress-tls/tls.crt");
        let key = include_bytes!("../../tests/fixtures/progress-tls/tls.key");
        let ca = include_bytes!("../../tests/fixtures/progress-tls/ca.crt");
        assert!(tls_config(cert, key).is_ok());
        for (c, k, want) in [
            (&b"not pem"[..], &key[..], "no certificate"),
            (&cert[..], &b"not pem"[..], "not a PEM private key"),
            // The CA's certificate with the server's key: they do not go together.
            (&ca[..], &key[..], "the certificate and key"),
        ] {
            let err = tls_config(c, k).expect_err("a bad pair").to_string();
            assert!(err.contains(want), "{err}");
        }
    }
    use pb::progress_client::ProgressClient;
    use std::sync::atomic::{AtomicU64, Ordering};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hub() -> ProgressHub {
        ProgressHub::new(KEY.to_vec()).unwrap()
    }

    fn report(job: &str, task: u32, pod: &str, kind: ReportKind, done: u64) -> ReportRequest {
        ReportRequest {
            job_uid: job.into(),
            task,
            pod: pod.into(),
            plan_id: "plan-1".into(),
            kind: kind as i32,
            rows_done: done,
            rows_total: 100,
            message: String::new(),
            ..ReportRequest::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_token_is_good_for_its_own_job_only() {
        let hub = hub();
        let a = hub.token_for("job-a");
        assert_eq!(a.len(), 64);
        assert!(hub.verify("job-a", &a));
        assert!(!hub.verify("job-b", &a));
        assert!(!hub.verify("job-a", &a[..62]));
        let flipped = if a.starts_with('0') { "1" } else { "0" };
        assert!(!hub.verify("job-a", &format!("{flipped}{}", &a[1..])));
        assert!(!hub.verify("job-a", &format!("g{}", &a[1..])));
        assert!(!hub.verify("job-a", ""));
        // Another operator's key mints other tokens.
        let other = ProgressHub::new(vec![7; 32]).unwrap();
        assert!(!hub.verify("job-a", &other.token_for("job-a")));
        assert!(matches!(
            ProgressHub::new(vec![1; 8]),
            Err(ProgressError::WeakKey(8))
        ));
    }

    #[test]
    fn reports_add_up_per_job() {
        let hub = hub();
        hub.record(&report("j", 0, "p0", ReportKind::Started, 0), at(0))
            .unwrap();
        hub.record(&report("j", 1, "p1", ReportKind::Started, 0), at(0))
            .unwrap();
        hub.record(&report("j", 0, "p0", ReportKind::Progress, 40), at(1))
            .unwrap();
        // A late, older report does not take rows back.
        hub.record(&report("j", 0, "p0", ReportKind::Progress, 30), at(2))
            .unwrap();
        hub.record(&report("j", 1, "p1", ReportKind::Finished, 100), at(3))
            .unwrap();
        hub.record(&report("other", 0, "x", ReportKind::Progress, 5), at(3))
            .unwrap();
        let s = hub.snapshot("j");
        assert_eq!(s.tasks.len(), 2);
        assert_eq!(s.rows_done(), 140);
        assert_eq!(s.rows_total(), 200);
        assert_eq!((s.finished(), s.running()), (1, 1));
        assert_eq!(s.tasks[&0].last_seen, at(2));
        assert_eq!(s.tasks[&0].started, at(0));
        assert_eq!(s.tasks[&0].plan_id, "plan-1");
        assert_eq!(s.first_started(), Some(at(0)));
        let mut jobs = hub.jobs();
        jobs.sort();
        assert_eq!(jobs, ["j", "other"]);
        hub.forget("j");
        assert_eq!(hub.snapshot("j"), JobProgress::default());
        assert!(
            hub.record(&report("j", 0, "p", ReportKind::Unspecified, 0), at(4))
                .is_err()
        );
        assert!(
            hub.record(
                &report("j", MAX_TASKS_PER_JOB, "p", ReportKind::Started, 0),
                at(4)
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_pod_is_a_new_attempt_and_a_finished_task_stays_finished() {
        let hub = hub();
        hub.record(&report("j", 0, "p0", ReportKind::Progress, 60), at(0))
            .unwrap();
        let mut failed = report("j", 0, "p0", ReportKind::Failed, 60);
        failed.message = "x".repeat(10_000);
        hub.record(&failed, at(1)).unwrap();
        let t = &hub.snapshot("j").tasks[&0];
        assert_eq!(t.failed.as_deref().map(str::len), Some(MAX_MESSAGE_BYTES));
        assert!(!t.running());

        hub.record(&report("j", 0, "p0-retry", ReportKind::Started, 0), at(5))
            .unwrap();
        let t = hub.snapshot("j").tasks[&0].clone();
        assert_eq!((t.rows_done, t.started, t.failed), (0, at(5), None));
        assert_eq!(t.pod, "p0-retry");

        hub.record(
            &report("j", 0, "p0-retry", ReportKind::Finished, 100),
            at(9),
        )
        .unwrap();
        // The replaced pod's late reports change nothing.
        hub.record(&report("j", 0, "p0", ReportKind::Progress, 70), at(10))
            .unwrap();
        let t = &hub.snapshot("j").tasks[&0];
        assert!(t.finished);
        assert_eq!((t.rows_done, t.pod.as_str()), (100, "p0-retry"));
    }

    #[test]
    fn quiet_running_tasks_are_stalled() {
        let hub = hub();
        for task in 0..4 {
            hub.record(
                &report("j", task, &format!("p{task}"), ReportKind::Started, 0),
                at(0),
            )
            .unwrap();
        }
        hub.record(&report("j", 1, "p1", ReportKind::Heartbeat, 0), at(50))
            .unwrap();
        hub.record(&report("j", 2, "p2", ReportKind::Finished, 100), at(1))
            .unwrap();
        hub.record(&report("j", 3, "p3", ReportKind::Failed, 0), at(1))
            .unwrap();
        let timeout = Duration::from_secs(30);
        assert_eq!(hub.stalled("j", at(29), timeout), Vec::<u32>::new());
        assert_eq!(hub.stalled("j", at(31), timeout), [0]);
        assert_eq!(hub.stalled("j", at(81), timeout), [0, 1]);
        assert_eq!(hub.stalled("unknown", at(81), timeout), Vec::<u32>::new());
        // A clock that went backwards is not a stall.
        assert_eq!(
            hub.stalled("j", at(0) - timeout * 3, timeout),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn hooks_see_reports_and_each_finished_task_once() {
        let hub = hub();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        hub.on_finished(move |job, task, took, rows| {
            c.lock().unwrap().push((job.to_string(), task, took, rows));
        });
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let k = kinds.clone();
        hub.on_report(move |r| k.lock().unwrap().push(r.kind()));
        hub.record(&report("j", 4, "p", ReportKind::Started, 0), at(0))
            .unwrap();
        hub.record(&report("j", 4, "p", ReportKind::Finished, 100), at(7))
            .unwrap();
        hub.record(&report("j", 4, "p", ReportKind::Finished, 100), at(8))
            .unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            [("j".to_string(), 4, Duration::from_secs(7), 100)]
        );
        assert_eq!(
            *kinds.lock().unwrap(),
            [
                ReportKind::Started,
                ReportKind::Finished,
                ReportKind::Finished
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_triggers_a_reconcile_of_the_job_it_belongs_to() {
        use futures::StreamExt;
        use kube::runtime::reflector::{self, ObjectRef};
        use kube::runtime::watcher;
        let job = |name: &str, uid: &str| {
            let mut pj = crate::crd::ProfileJob::new(
                name,
                serde_json::from_value(serde_json::json!({
                    "dataset": {"uri": "s3://b/d.parquet"},
                    "output": {"uri": "s3://b/p.json"}
                }))
                .unwrap(),
            );
            pj.metadata.namespace = Some("ns".into());
            pj.metadata.uid = Some(uid.into());
            pj
        };
        let (store, mut writer) = reflector::store();
        for pj in [job("a", "uid-a"), job("b", "uid-b")] {
            writer.apply_watcher_event(&watcher::Event::Apply(pj));
        }
        let hub = hub();
        let mut triggers = Box::pin(reconcile_triggers(
            hub.changes(Duration::from_secs(1)),
            store,
        ));
        hub.record(&report("uid-b", 0, "p", ReportKind::Started, 0), at(0))
            .unwrap();
        // A job the cache does not know (deleted since) triggers nothing.
        hub.record(&report("uid-gone", 0, "p", ReportKind::Started, 0), at(0))
            .unwrap();
        let got = triggers.next().await.unwrap();
        assert_eq!(got, ObjectRef::new("b").within("ns"));
        hub.record(&report("uid-a", 0, "p", ReportKind::Progress, 5), at(1))
            .unwrap();
        let got = triggers.next().await.unwrap();
        assert_eq!(got, ObjectRef::new("a").within("ns"));
        assert!(
            tokio::time::timeout(Duration::from_secs(5), triggers.next())
                .await
                .is_err(),
            "no report, no reconcile"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_come_at_a_bounded_rate() {
        let hub = hub();
        let mut changes = hub.changes(Duration::from_secs(1));
        hub.record(&report("b", 0, "p", ReportKind::Started, 0), at(0))
            .unwrap();
        hub.record(&report("a", 0, "p", ReportKind::Started, 0), at(0))
            .unwrap();
        assert_eq!(changes.next().await, ["a", "b"]);
        let t0 = tokio::time::Instant::now();
        for rows in 1..=50 {
            hub.record(&report("a", 0, "p", ReportKind::Progress, rows), at(0))
                .unwrap();
        }
        assert_eq!(changes.next().await, ["a"]);
        assert!(t0.elapsed() >= Duration::from_secs(1));
        // Nothing changed: no yield.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), changes.next())
                .await
                .is_err()
        );
    }

    async fn start() -> (
        ProgressHub,
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), ProgressError>>,
    ) {
        let hub = hub();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(hub.clone(), listener, async {
            let _ = stopped.await;
        }));
        (hub, endpoint, stop, server)
    }

    fn authorized(r: ReportRequest, token: &str) -> Request<ReportRequest> {
        let mut req = Request::new(r);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }

    #[tokio::test]
    async fn the_server_takes_reports_with_the_job_token_only() {
        let (hub, endpoint, stop, server) = start().await;
        let rows = Arc::new(AtomicU64::new(0));
        let r = rows.clone();
        hub.on_finished(move |_, _, _, n| {
            r.fetch_add(n, Ordering::SeqCst);
        });
        let mut client = ProgressClient::connect(endpoint).await.unwrap();
        let token_a = hub.token_for("job-a");

        for (kind, done) in [
            (ReportKind::Started, 0),
            (ReportKind::Progress, 50),
            (ReportKind::Heartbeat, 50),
            (ReportKind::Finished, 100),
        ] {
            client
                .report(authorized(
                    report("job-a", 3, "pod-3", kind, done),
                    &token_a,
                ))
                .await
                .unwrap();
        }
        let t = &hub.snapshot("job-a").tasks[&3];
        assert!(t.finished);
        assert_eq!((t.rows_done, t.rows_total), (100, 100));
        assert_eq!(rows.load(Ordering::SeqCst), 100);

        // Job A's token used for job B; no token; garbage.
        let refused = [
            authorized(report("job-b", 0, "pod", ReportKind::Started, 0), &token_a),
            Request::new(report("job-b", 0, "pod", ReportKind::Started, 0)),
            authorized(report("job-b", 0, "pod", ReportKind::Started, 0), "nope"),
        ];
        for req in refused {
            let err = client.report(req).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        }
        assert!(hub.snapshot("job-b").tasks.is_empty());
        let err = client
            .report(authorized(
                report("job-a", 0, "pod", ReportKind::Unspecified, 0),
                &token_a,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = serve(hub(), addr, None, async {}).await.unwrap_err();
        assert!(matches!(err, ProgressError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
