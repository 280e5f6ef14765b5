//! The operator's HTTP endpoints, for Prometheus and the kubelet:
//!
//! - `GET /metrics`: [`Metrics::encode`] as OpenMetrics text.
//! - `GET /healthz`: liveness, `200 ok` for as long as the process can answer at all. It checks
//!   nothing else on purpose: a liveness failure restarts the pod, and restarting does not cure
//!   an unreachable apiserver.
//! - `GET /readyz`: readiness, `200 ok` once [`Readiness::set_ready`] was called (the controller's
//!   caches have synced, or, with leader election, the replica stands by), else `503` with the
//!   reason, so a rollout waits for a working replica. Readiness does not say who leads: the
//!   leader's pod label does ([`crate::leader_label`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// The content type of the OpenMetrics text format, which Prometheus negotiates for.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether this replica is ready to serve, shared between whoever knows (the controller) and
/// `/readyz`. Clones share the flag. Starts not ready, with reason `"starting"`.
#[derive(Clone, Debug)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    reason: Arc<Mutex<String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready yet (`"starting"`).
    pub fn new() -> Self {
        Readiness {
            ready: Arc::new(AtomicBool::new(false)),
            reason: Arc::new(Mutex::new("starting".to_owned())),
        }
    }

    /// Marks the replica ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the replica not ready; `reason` is what `/readyz` answers, for whoever runs
    /// `kubectl describe pod`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        // Reason first, then the flag, so a reader that sees "not ready" sees this reason.
        *self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason.into();
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `None` when ready, else why not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        Some(
            self.reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The routes, for embedding in another server or testing without a socket.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

/// Serves the routes on `listener` until `shutdown` completes, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    }
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.not_ready_reason() {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// One HTTP/1.1 GET over a fresh connection: (status, headers, body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        (status, head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn endpoints_answer_over_real_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new();
        metrics.add_rows(42);
        metrics.reconcile_failure("Kube");
        metrics.set_job_phase("ns/a", Some("Running"));
        metrics.observe_task(12.0);
        let readiness = Readiness::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            metrics.clone(),
            readiness.clone(),
            async move {
                let _ = stopped.await;
            },
        ));

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready: starting"));
        readiness.set_ready();
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        readiness.set_not_ready("lost the apiserver watch");
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: lost the apiserver watch");

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{head}"
        );
        for name in [
            "truthound_reconciles_total",
            "truthound_reconcile_errors",
            "truthound_reconcile_duration_seconds",
            "truthound_profilejobs",
            "truthound_tasks",
            "truthound_task_duration_seconds",
            "truthound_task_duration_quantile_seconds",
            "truthound_rows_processed_total 42",
        ] {
            assert!(body.contains(name), "{name} missing from\n{body}");
        }
        assert!(body.ends_with("# EOF\n"));

        let (status, _, _) = get(addr, "/nope").await;
        assert_eq!(status, 404);

        stop.send(()).expect("server still running");
        server
            .await
            .expect("server task")
            .expect("server shut down cleanly");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
