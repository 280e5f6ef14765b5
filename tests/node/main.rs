//! th-test-node: the kubelet and the scheduler of the real-Kubernetes test tier (issue 11), in
//! one process. It registers a Node and keeps it Ready (status heartbeats and a Lease), binds
//! every unscheduled pod to it, and runs each pod's containers as local processes: the image's
//! entrypoint comes from `--image PATTERN=EXECUTABLE`, a container's `command` replaces it; the
//! environment, `$(VAR)` expansion, termination messages, exit codes and statuses are the
//! kubelet's; so is its HTTPS endpoint for pod logs (`kubectl logs`), on a free port of 127.0.0.1
//! named in the Node's status. Test support, not part of the product.
//!
//! On SIGTERM or SIGINT it kills every process it started and deletes its Node. It prints
//! `ready node=<name>` on stdout once the Node is registered and the watches run; its log (one
//! line per pod transition) goes to stderr.

mod endpoint;
mod env;
mod expand;
mod images;
mod kubelet;
mod logs;
mod pod;
mod process;
mod registration;
mod scheduler;
mod status;

use anyhow::Context;
use clap::Parser;
use images::ImageMap;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

#[derive(Parser, Debug)]
#[command(
    about = "A node for tests: binds pods to itself and runs their containers as local processes"
)]
struct Args {
    /// The control plane's kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The Node's name (and its Lease's).
    #[arg(long, default_value = "th-test-node")]
    node_name: String,
    /// `PATTERN=EXECUTABLE`: containers whose image matches the glob PATTERN (on the whole
    /// reference, `*` crossing `/`) run EXECUTABLE with their args. Repeatable; the first match wins.
    #[arg(long = "image", value_name = "PATTERN=EXECUTABLE")]
    images: Vec<String>,
    /// `PATTERN=DIR[:DIR...]`: the PATH of images matching PATTERN, searched before the agent's
    /// (the container's own PATH, if it sets one, still wins). Repeatable.
    #[arg(long = "image-path", value_name = "PATTERN=DIRS")]
    image_paths: Vec<String>,
    /// `PATTERN=CONTAINER_PATH=HOST_PATH`: a file of images matching PATTERN, as this host has
    /// it; the container's command, args and env values naming CONTAINER_PATH get HOST_PATH.
    /// Repeatable.
    #[arg(long = "image-file", value_name = "PATTERN=CONTAINER_PATH=HOST_PATH")]
    image_files: Vec<String>,
    /// Bind only unscheduled pods in this namespace (repeatable); all namespaces when absent.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    namespaces: Vec<String>,
    /// `NAME=VALUE` in every container's environment, under the container's own (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Where each pod gets its directory (its logs and termination message files).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long, default_value = "8")]
    cpu: String,
    #[arg(long, default_value = "32Gi")]
    memory: String,
    #[arg(long, default_value = "250")]
    pods: String,
    /// Leave the Node registered on exit (it is deleted by default).
    #[arg(long)]
    keep_node: bool,
}

/// What every pod's task shares.
pub struct Ctx {
    pub client: Client,
    pub node: String,
    pub images: ImageMap,
    pub root: PathBuf,
    /// PATH, then `--env`: under each container's own environment.
    pub base_env: Vec<(String, String)>,
    pub groups: process::Groups,
    /// Every container run's log, for the kubelet endpoint.
    pub logs: Arc<logs::LogIndex>,
}

// One thread: the containers' processes are forked from it, so their parent-death signal fires
// only when the whole agent goes (see process::spawn).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person: the tests keep this log in a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    // kube's TLS is rustls with ring; object_store's brings aws-lc-rs into the same build.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let images = ImageMap::parse_all(&args.images, &args.image_paths, &args.image_files)?;
    let mut base_env = vec![(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    )];
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--env {kv:?}: expected NAME=VALUE"))?;
        base_env.push((k.into(), v.into()));
    }
    let root = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("th-test-node")
            .join(&args.node_name)
    });
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", args.kubeconfig.display()))?;
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let capacity = registration::Capacity {
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods.clone(),
    };
    // Listening before the Node says where: the apiserver may ask for a log at once.
    let endpoint = endpoint::bind(&root, &args.node_name).await?;
    let port = endpoint.port;
    let since = registration::register(&client, &args.node_name, &capacity, port).await?;
    let logs = Arc::new(logs::LogIndex::default());
    let server = tokio::spawn(endpoint::serve(endpoint, logs.clone()));

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node: args.node_name.clone(),
        images,
        root: root.clone(),
        base_env,
        groups: process::Groups::default(),
        logs,
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let heartbeat = tokio::spawn(registration::keep_alive(
        client.clone(),
        args.node_name.clone(),
        capacity,
        port,
        since,
    ));
    let binder = tokio::spawn(scheduler::run(
        client.clone(),
        args.node_name.clone(),
        args.namespaces.clone(),
    ));
    let kubelet = tokio::spawn(kubelet::run(ctx.clone(), shutdown_rx));
    info!(node = %args.node_name, work_dir = %root.display(), "running");
    println!("ready node={}", args.node_name);
    let _ = std::io::stdout().flush();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
    }
    binder.abort();
    let _ = shutdown_tx.send(true);
    let _ = kubelet.await;
    // Whatever a pod's task could not stop.
    ctx.groups.kill_all();
    heartbeat.abort();
    server.abort();
    if !args.keep_node {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            registration::deregister(&client, &args.node_name),
        )
        .await;
    }
    info!("stopped");
    Ok(())
}
