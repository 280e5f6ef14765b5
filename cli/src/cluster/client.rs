//! The connection to the cluster (kubeconfig, context, namespace), and API errors turned into
//! sentences that say what to do.

use super::args::KubeArgs;
use crate::exit::Unavailable;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// A client, the namespace commands act in, and the server's address (for messages).
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub server: String,
}

/// The fully qualified resource, as RBAC and kubectl name it.
pub const RESOURCE: &str = "profilejobs.truthound.io";

const NO_CONFIG: &str = "no Kubernetes configuration found: set KUBECONFIG (or pass --kubeconfig) to a kubeconfig file, \
     or run `kubectl config use-context NAME` to choose a cluster";

/// Chooses rustls' crypto provider for the process: the build has two (kube's ring and
/// object_store's aws-lc-rs), and rustls refuses to guess, panicking when kube builds its TLS
/// configuration.
pub fn install_tls_provider() {
    // Err only when one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn connect(k: &KubeArgs) -> anyhow::Result<Cluster> {
    install_tls_provider();
    let options = KubeConfigOptions {
        context: k.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = if let Some(path) = &k.kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|e| config_error(k, &e))?;
        Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| config_error(k, &e))?
    } else if k.context.is_some() {
        Config::from_kubeconfig(&options)
            .await
            .map_err(|e| config_error(k, &e))?
    } else {
        Config::infer().await.map_err(|e| {
            // The kubeconfig's error is the one a person can act on (the in-cluster one only
            // says this is not a pod).
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            anyhow::Error::new(Unavailable(format!("{NO_CONFIG} ({detail})")))
        })?
    };
    let namespace = k
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = Client::try_from(config).map_err(|e| {
        anyhow::Error::new(Unavailable(format!(
            "cannot set up a client for the Kubernetes API server at {server}: {e}"
        )))
    })?;
    Ok(Cluster {
        client,
        namespace,
        server,
    })
}

fn config_error(k: &KubeArgs, e: &KubeconfigError) -> anyhow::Error {
    let message = match (e, &k.context) {
        (KubeconfigError::LoadContext(_), Some(ctx)) => format!(
            "context `{ctx}` is not in the kubeconfig: `kubectl config get-contexts` lists the contexts there"
        ),
        (KubeconfigError::CurrentContextNotSet, _) => "the kubeconfig has no current context: \
            run `kubectl config use-context NAME`, or pass --context NAME"
            .to_string(),
        (KubeconfigError::ReadConfig(..) | KubeconfigError::FindPath, _) => {
            format!("{NO_CONFIG} ({e})")
        }
        _ => format!("the kubeconfig cannot be used: {e}"),
    };
    anyhow::Error::new(Unavailable(message))
}

/// What a request was for, to say which thing was not found or not allowed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The RBAC verb: create, get, list, delete, patch.
    pub verb: &'a str,
    /// `profilejobs.truthound.io`, `pods`, `pods/log`, `events.events.k8s.io`.
    pub resource: &'a str,
    /// None: every namespace.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Cluster {
    /// Explains an error of a request against this cluster.
    pub fn explain(&self, err: kube::Error, r: Request<'_>) -> anyhow::Error {
        explain(err, r, &self.server)
    }
}

fn in_namespace(r: &Request<'_>) -> String {
    match r.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in every namespace (-A)".to_string(),
    }
}

pub fn explain(err: kube::Error, r: Request<'_>, server: &str) -> anyhow::Error {
    let is_pj = r.resource == RESOURCE;
    let status = match err {
        kube::Error::Api(status) => status,
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => return transport(e, server),
        kube::Error::SerdeError(e) => {
            return anyhow::anyhow!(
                "{} {}: the API server's answer could not be read ({e}): are this th and the cluster's CRD of the same version?",
                r.verb,
                r.resource
            );
        }
        kube::Error::Auth(e) => {
            return anyhow::anyhow!(
                "cannot authenticate to {server}: {e} (`kubectl get ns` checks the same kubeconfig)"
            );
        }
        other => return anyhow::anyhow!("{} {}: {other}", r.verb, r.resource),
    };
    let said = status.message.trim();
    let details = status.details.as_ref();
    match status.code {
        404 => {
            if details.is_some_and(|d| d.kind == "namespaces") {
                let ns = details.map_or("", |d| d.name.as_str());
                anyhow::anyhow!(
                    "namespace `{ns}` does not exist in this cluster: pick another with -n, or create it (kubectl create namespace {ns})"
                )
            } else if details.is_some_and(|d| !d.name.is_empty())
                || said.ends_with("not found") && said.contains('"')
            {
                let ns = r.namespace.unwrap_or("default");
                match (is_pj, r.name) {
                    (true, Some(name)) => anyhow::anyhow!(
                        "ProfileJob `{name}` not found in namespace {ns}: `th list -n {ns}` lists the jobs there, `th list -A` those of every namespace"
                    ),
                    (_, Some(name)) => {
                        anyhow::anyhow!("{} `{name}` not found in namespace {ns}", r.resource)
                    }
                    (_, None) => anyhow::anyhow!("{said}"),
                }
            } else if is_pj {
                anyhow::Error::new(Unavailable(format!(
                    "the ProfileJob resource is not installed in this cluster ({server}): kubectl apply -f crds/ \
                     (or helm install truthound-operator charts/truthound-operator -n truthound-system --create-namespace)"
                )))
            } else {
                anyhow::anyhow!("{} {}: not found ({said})", r.verb, r.resource)
            }
        }
        403 => {
            let role = if is_pj {
                match r.verb {
                    "get" | "list" | "watch" => {
                        "ask for the role truthound-operator-view, or the namespace's view role, which includes it"
                    }
                    _ => {
                        "ask for the role truthound-operator-edit, or the namespace's edit role, which includes it"
                    }
                }
            } else {
                "ask for the namespace's view role"
            };
            anyhow::anyhow!(
                "forbidden: your account may not {} {} {} ({role}); the server said: {said}",
                r.verb,
                r.resource,
                in_namespace(&r)
            )
        }
        401 => anyhow::anyhow!(
            "unauthorized: {server} did not accept your credentials (an expired token? log in again; \
             `kubectl get ns` checks the same kubeconfig)"
        ),
        409 if status.reason == "AlreadyExists" => {
            let ns = r.namespace.unwrap_or("default");
            let name = r.name.unwrap_or("");
            anyhow::anyhow!(
                "ProfileJob `{name}` already exists in namespace {ns}: pick another --name, or `th cancel {name} -n {ns}` first"
            )
        }
        422 => anyhow::anyhow!("the API server rejected the ProfileJob: {said}"),
        code => anyhow::anyhow!(
            "{} {} {}: the API server answered {code} {}: {said}",
            r.verb,
            r.resource,
            in_namespace(&r),
            status.reason
        ),
    }
}

/// The server did not answer: a transport error, named with the server.
fn transport(err: kube::Error, server: &str) -> anyhow::Error {
    let mut refused = false;
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            refused = true;
        }
        let text = e.to_string();
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        source = e.source();
    }
    let message = if refused || chain.iter().any(|c| c.contains("onnection refused")) {
        format!(
            "cannot reach the Kubernetes API server at {server}: connection refused. Is the cluster running, \
             and is this the right context? (`kubectl cluster-info` checks the same kubeconfig)"
        )
    } else {
        format!(
            "cannot reach the Kubernetes API server at {server}: {}",
            chain.join(": ")
        )
    };
    anyhow::Error::new(Unavailable(message))
}
