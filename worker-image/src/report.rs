//! Best-effort reports to the operator's progress service: STARTED when the plan is read,
//! PROGRESS (rows read so far) at most about once a second, HEARTBEAT when nothing was sent for
//! the heartbeat interval, and FINISHED or FAILED at the end.
//!
//! The task never waits on the operator: the engine's progress callback only bumps a counter,
//! the calls run on a background task, each call is bounded by [`CALL_TIMEOUT`], and the last
//! report by [`FINISH_BUDGET`]. An operator that is unreachable or refuses the token is logged
//! once and otherwise ignored; the pod's own status still tells the operator how the task ended.
//!
//! An `https://` endpoint is reached over TLS, verified against the CA of
//! [`ReportConfig::ca`] (`TH_PROGRESS_CA`, the operator's), else the system's roots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use truthound_profile::error::error_chain;
use truthound_profile::run::{Event, Progress};

mod pb {
    tonic::include_proto!("truthound.progress.v1");
}

use pb::progress_client::ProgressClient;
use pb::{ReportKind, ReportRequest};

/// Longest wait for one call (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the end of the task waits for its last reports.
const FINISH_BUDGET: Duration = Duration::from_secs(3);
/// Least time between two PROGRESS reports.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Longest failure message sent (the operator keeps no more).
const MAX_MESSAGE_BYTES: usize = 4096;

/// Where and as whom to report.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// The operator's progress service, e.g. `http://th-operator.truthound:50051`.
    pub endpoint: String,
    /// The job's token (sent as `authorization: Bearer <token>`).
    pub token: String,
    pub job_uid: String,
    /// This pod's name: a new pod for the same task is a new attempt.
    pub pod: String,
    pub task: u32,
    pub heartbeat: Duration,
    /// The CA certificate(s), PEM, the endpoint's certificate is verified against (https only;
    /// None: the system's roots).
    pub ca: Option<Vec<u8>>,
}

/// How the task ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The partial is written; the rows the task read.
    Finished {
        rows: u64,
    },
    Failed {
        message: String,
    },
}

/// What the task tells the background loop.
#[derive(Default)]
struct Shared {
    rows_done: AtomicU64,
    rows_total: AtomicU64,
    plan_id: Mutex<String>,
    started: AtomicBool,
    wake: Notify,
}

/// Sends reports in the background; [`Reporter::finish`] sends the last one.
pub struct Reporter {
    shared: Arc<Shared>,
    end: Option<oneshot::Sender<Outcome>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Starts the background loop on the current Tokio runtime. Nothing is sent until
    /// [`Reporter::started`] (or [`Reporter::finish`]).
    pub fn start(config: ReportConfig) -> Reporter {
        let shared = Arc::new(Shared::default());
        let (end, ended) = oneshot::channel();
        let handle = tokio::spawn(run(config, shared.clone(), ended));
        Reporter {
            shared,
            end: Some(end),
            handle,
        }
    }

    /// The task began: its plan and the rows it will read (0 when unknown).
    pub fn started(&self, plan_id: &str, rows_total: u64) {
        *self
            .shared
            .plan_id
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = plan_id.to_string();
        self.shared.rows_total.store(rows_total, Ordering::Relaxed);
        self.shared.started.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// A progress sink for the engine: counts the rows it reads (a relaxed add, no I/O).
    pub fn progress(&self) -> Progress {
        let shared = self.shared.clone();
        Arc::new(move |event| {
            if let Event::Rows { rows, .. } = event {
                shared.rows_done.fetch_add(rows, Ordering::Relaxed);
                shared.wake.notify_one();
            }
        })
    }

    /// Sends the last report (and STARTED first if it had not gone out yet), waiting at most
    /// [`FINISH_BUDGET`].
    pub async fn finish(mut self, outcome: Outcome) {
        if let Some(end) = self.end.take() {
            let _ = end.send(outcome);
        }
        if tokio::time::timeout(FINISH_BUDGET, &mut self.handle)
            .await
            .is_err()
        {
            self.handle.abort();
            tracing::debug!("the last progress report did not complete in time");
        }
    }
}

/// The background loop: reports until the task ends, then the last report.
async fn run(config: ReportConfig, shared: Arc<Shared>, mut ended: oneshot::Receiver<Outcome>) {
    let mut sender = match Sender::new(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(endpoint = %config.endpoint, error = %e, "cannot use the progress endpoint; not reporting progress");
            return;
        }
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent_started = false;
    let mut sent_rows = 0u64;
    let mut last_progress: Option<Instant> = None;
    let mut last_sent = Instant::now();
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut ended => break outcome.ok(),
            () = shared.wake.notified() => {}
            _ = tick.tick() => {}
        }
        if sender.off {
            continue;
        }
        let now = Instant::now();
        if !sent_started {
            if shared.started.load(Ordering::Acquire) {
                sender
                    .send(&shared, ReportKind::Started, String::new())
                    .await;
                sent_started = true;
                last_sent = now;
            }
            continue;
        }
        let rows = shared.rows_done.load(Ordering::Relaxed);
        if rows != sent_rows && last_progress.is_none_or(|t| now - t >= PROGRESS_EVERY) {
            sender
                .send(&shared, ReportKind::Progress, String::new())
                .await;
            sent_rows = rows;
            last_progress = Some(now);
            last_sent = now;
        } else if now - last_sent >= config.heartbeat {
            sender
                .send(&shared, ReportKind::Heartbeat, String::new())
                .await;
            last_sent = now;
        }
    };
    let Some(outcome) = outcome else { return };
    if !sent_started && shared.started.load(Ordering::Acquire) {
        sender
            .send(&shared, ReportKind::Started, String::new())
            .await;
    }
    match outcome {
        Outcome::Finished { rows } => {
            shared.rows_done.fetch_max(rows, Ordering::Relaxed);
            sender
                .send(&shared, ReportKind::Finished, String::new())
                .await;
        }
        Outcome::Failed { message } => {
            sender
                .send(
                    &shared,
                    ReportKind::Failed,
                    truncate(message, MAX_MESSAGE_BYTES),
                )
                .await;
        }
    }
}

/// This process's health, as a report's fields.
fn health_fields() -> ReportRequest {
    let h = crate::health::sample();
    ReportRequest {
        rss_bytes: h.rss_bytes,
        memory_limit_bytes: h.memory_limit_bytes,
        cpu_seconds: h.cpu_seconds,
        ..ReportRequest::default()
    }
}

/// The client and what it learned about the operator.
struct Sender {
    client: ProgressClient<Channel>,
    config: ReportConfig,
    /// A failure was logged as a warning already (later ones go to debug).
    warned: bool,
    /// The operator refused the token: reporting again would be refused too.
    off: bool,
}

impl Sender {
    fn new(config: &ReportConfig) -> Result<Sender, String> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("not a valid URI: {}", error_chain(&e)))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        if config.endpoint.starts_with("https://") {
            let tls = match &config.ca {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS: {}", error_chain(&e)))?;
        } else if config.ca.is_some() {
            tracing::warn!(endpoint = %config.endpoint, "TH_PROGRESS_CA is set but the progress endpoint is not https://: reporting without TLS");
        }
        let channel = endpoint.connect_lazy();
        Ok(Sender {
            client: ProgressClient::new(channel),
            config: config.clone(),
            warned: false,
            off: false,
        })
    }

    async fn send(&mut self, shared: &Shared, kind: ReportKind, message: String) {
        if self.off {
            return;
        }
        let report = ReportRequest {
            job_uid: self.config.job_uid.clone(),
            task: self.config.task,
            pod: self.config.pod.clone(),
            plan_id: shared
                .plan_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            kind: kind as i32,
            rows_done: shared.rows_done.load(Ordering::Relaxed),
            rows_total: shared.rows_total.load(Ordering::Relaxed),
            message,
            ..health_fields()
        };
        let mut request = tonic::Request::new(report);
        request.set_timeout(CALL_TIMEOUT);
        match format!("Bearer {}", self.config.token).parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => {
                tracing::warn!(
                    "the progress token is not valid header text; not reporting progress"
                );
                self.off = true;
                return;
            }
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, self.client.report(request)).await;
        let status = match result {
            Ok(Ok(_)) => {
                tracing::debug!(kind = kind.as_str_name(), "progress reported");
                return;
            }
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("no answer in time"),
        };
        if status.code() == tonic::Code::Unauthenticated {
            tracing::warn!(endpoint = %self.config.endpoint, job = %self.config.job_uid, error = %status.message(), "the operator refused the progress token; not reporting progress (the task goes on)");
            self.off = true;
        } else if !self.warned {
            // The whole chain: a TLS failure (an unknown CA) is in the causes, not the message.
            tracing::warn!(endpoint = %self.config.endpoint, code = ?status.code(), error = %error_chain(&status), "cannot report progress to the operator (the task goes on; retrying quietly)");
            self.warned = true;
        } else {
            tracing::debug!(code = ?status.code(), error = %status.message(), "progress report failed");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> ReportConfig {
        ReportConfig {
            endpoint: endpoint.into(),
            token: "t".into(),
            job_uid: "job".into(),
            pod: "pod".into(),
            task: 0,
            heartbeat: Duration::from_secs(1),
            ca: None,
        }
    }

    #[tokio::test]
    async fn an_unreachable_operator_delays_the_end_by_the_budget_at_most() {
        // Port 9 (discard) is closed on test machines: connections are refused at once.
        for endpoint in ["http://127.0.0.1:9", "not a uri"] {
            let r = Reporter::start(config(endpoint));
            r.started("plan", 10);
            (r.progress())(Event::Rows { task: 0, rows: 10 });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t0 = std::time::Instant::now();
            r.finish(Outcome::Failed {
                message: "é".repeat(5000),
            })
            .await;
            assert!(t0.elapsed() <= FINISH_BUDGET + Duration::from_millis(500));
        }
    }

    #[test]
    fn messages_are_cut_on_a_char_boundary() {
        let s = truncate("é".repeat(3000), MAX_MESSAGE_BYTES);
        assert_eq!(s.len(), MAX_MESSAGE_BYTES);
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
