//! The kubelet's HTTPS endpoint, reduced to what the apiserver needs for pod logs
//! (`kubectl logs`, the `pods/log` subresource): `GET /containerLogs/{namespace}/{pod}/{container}`
//! with the kubelet's query (`follow`, `tailLines`, `limitBytes`, `previous`), served from the
//! log files this agent writes. The Node's status carries its port.
//!
//! TLS with a self-signed certificate made at start (by `openssl`, as the cluster's own
//! certificates are): kube-apiserver started without `--kubelet-certificate-authority` does not
//! verify the kubelet's certificate (its kubelet transport is `Insecure` when it has no CA), and
//! presents no client certificate without `--kubelet-client-certificate`, so none is asked for.

use crate::logs::{self, LogIndex, LookupError};
use crate::status::IP;
use anyhow::Context;
use bytes::Bytes;
use futures::SinkExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// How often a follower looks for more output.
const POLL: Duration = Duration::from_millis(100);
/// The most a follower reads at once.
const CHUNK: u64 = 64 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

pub struct Endpoint {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pub port: u16,
}

/// Makes the certificate in `dir` and listens on a free port of [`IP`].
pub async fn bind(dir: &Path, node: &str) -> anyhow::Result<Endpoint> {
    let crt = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    self_signed(&crt, &key, node)?;
    let certs = CertificateDer::pem_file_iter(&crt)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", crt.display()))?;
    let private =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .context("the kubelet endpoint's TLS configuration")?;
    // HTTP/1.1 only: chunked responses are how a followed log streams.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind((IP, 0))
        .await
        .with_context(|| format!("listening on {IP} for the kubelet endpoint"))?;
    let port = listener.local_addr()?.port();
    Ok(Endpoint {
        listener,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        port,
    })
}

/// A P-256 key and a certificate for [`IP`] and the node's name, valid for two days.
fn self_signed(crt: &Path, key: &Path, node: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={node}"))
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{IP},DNS:{node}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(crt)
        .output()
        .context("running openssl to make the kubelet endpoint's certificate")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl could not make the kubelet endpoint's certificate ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Serves until the task is dropped.
pub async fn serve(ep: Endpoint, logs: Arc<LogIndex>) {
    info!(port = ep.port, "kubelet endpoint listening");
    loop {
        let (tcp, peer) = match ep.listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "kubelet endpoint: accept failed");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let acceptor = ep.acceptor.clone();
        let logs = logs.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    debug!(%peer, error = %e, "kubelet endpoint: TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let logs = logs.clone();
                async move { Ok::<_, Infallible>(respond(&req, logs)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, error = %e, "kubelet endpoint: connection ended");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, logs: Arc<LogIndex>) -> Response<Body> {
    let res = container_logs(req, logs).unwrap_or_else(|(code, message)| {
        debug!(path = %req.uri().path(), %code, %message, "kubelet endpoint: refused");
        text(code, Bytes::from(message))
    });
    debug!(method = %req.method(), uri = %req.uri(), status = %res.status(), "kubelet endpoint");
    res
}

fn text(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body).map_err(|e: Infallible| match e {}).boxed());
    *res.status_mut() = code;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    res
}

fn container_logs(
    req: &Request<Incoming>,
    logs: Arc<LogIndex>,
) -> Result<Response<Body>, (StatusCode, String)> {
    if req.method() != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not served here; only GET", req.method()),
        ));
    }
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!(
                "{}: th-test-node serves only /containerLogs/{{namespace}}/{{pod}}/{{container}}",
                req.uri().path()
            ),
        )
    };
    let rest = req
        .uri()
        .path()
        .strip_prefix("/containerLogs/")
        .ok_or_else(not_found)?;
    let [ns, pod, container] = rest.split('/').collect::<Vec<_>>()[..] else {
        return Err(not_found());
    };
    let q = logs::parse_query(req.uri().query().unwrap_or(""))
        .map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let run = logs
        .lookup(ns, pod, container, q.previous)
        .map_err(|e| match e {
            LookupError::NoPod { .. } => (StatusCode::NOT_FOUND, e.to_string()),
            _ => (StatusCode::BAD_REQUEST, e.to_string()),
        })?;
    let (mut first, pos) = logs::read_run(&run, q.tail_lines).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log: {e}"),
        )
    })?;
    let mut left = q.limit_bytes;
    if let Some(l) = left.as_mut() {
        first.truncate((*l).min(usize::MAX as u64) as usize);
        *l -= first.len() as u64;
    }
    if !q.follow || left == Some(0) {
        return Ok(text(StatusCode::OK, Bytes::from(first)));
    }

    // Following: what there is, then whatever the run writes until it ends (or the limit, or
    // the client goes).
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(first.into()))).await.is_err() {
            return;
        }
        let mut pos = pos;
        while !tx.is_closed() {
            let Some(now) = logs.again(&ns, &pod, &container, run.number) else {
                return;
            };
            let max = left.unwrap_or(CHUNK).min(CHUNK);
            match logs::read_more(&now, pos, max) {
                Ok((bytes, done)) => {
                    let got = bytes.len() as u64;
                    if got > 0 {
                        pos += got;
                        if let Some(l) = left.as_mut() {
                            *l -= got;
                        }
                        if tx.send(Ok(Frame::data(bytes.into()))).await.is_err() {
                            return;
                        }
                    }
                    if done || left == Some(0) {
                        return;
                    }
                    if got == 0 {
                        tokio::time::sleep(POLL).await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let mut res = Response::new(StreamBody::new(rx).boxed());
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(res)
}
