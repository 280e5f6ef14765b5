//! `th-operator`: the ProfileJob and ProfileSchedule controllers.
//!
//! Serves `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`, the workers' progress
//! service (gRPC) on `--progress-addr`, and reconciles ProfileJobs, optionally only while it
//! holds a `Lease` (`--leader-elect`), so that two replicas never both act.

use anyhow::{Context as _, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use truthound_operator::ProfileJob;
use truthound_operator::access::AccessPolicy;
use truthound_operator::backend::choice::Clusters;
use truthound_operator::backend::pods::PodSettings;
use truthound_operator::backend::remote::RemoteConfig;
use truthound_operator::decide::Settings;
use truthound_operator::http::{self, Readiness};
use truthound_operator::leader::{LeaderConfig, LeaderElector};
use truthound_operator::leader_label::LeaderLabel;
use truthound_operator::metrics::Metrics;
use truthound_operator::progress::{self, ProgressHub};
use truthound_operator::reconcile::{self, Config, Context};
use truthound_operator::schedule::{self, ProfileSchedule};

#[derive(Debug, Parser)]
#[command(
    name = "th-operator",
    version,
    about = "The truthound ProfileJob operator"
)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TH_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of the progress service (gRPC) the workers report to.
    #[arg(long, env = "TH_PROGRESS_ADDR", default_value = "0.0.0.0:9090")]
    progress_addr: SocketAddr,
    /// URL workers reach the progress service at, e.g.
    /// `http://truthound-operator-progress.truthound-system:9090`. Without it workers do not report,
    /// and status.progress counts finished tasks only.
    #[arg(long, env = "TH_PROGRESS_ENDPOINT")]
    progress_endpoint: Option<String>,
    /// File holding the key (at least 32 bytes) behind the per-job progress tokens; keep it the
    /// same across restarts (the Helm chart stores one in a Secret). Without it a random key is
    /// used and workers started before a restart can no longer report.
    #[arg(long, env = "TH_PROGRESS_KEY_FILE")]
    progress_key_file: Option<std::path::PathBuf>,
    /// The progress service's TLS certificate (PEM; with `--progress-tls-key`). With it the
    /// service speaks TLS only, and `--progress-endpoint` must be `https://`.
    #[arg(long, env = "TH_PROGRESS_TLS_CERT", requires = "progress_tls_key")]
    progress_tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--progress-tls-cert` (PEM).
    #[arg(long, env = "TH_PROGRESS_TLS_KEY", requires = "progress_tls_cert")]
    progress_tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) workers verify the progress service's certificate against; given to them as
    /// TH_PROGRESS_CA. Default with TLS: the certificate itself (self-signed).
    #[arg(long, env = "TH_PROGRESS_CA_FILE")]
    progress_ca_file: Option<std::path::PathBuf>,
    /// Worker image for ProfileJobs that name none.
    #[arg(
        long,
        env = "TH_WORKER_IMAGE",
        default_value = "ghcr.io/truthound/th-worker:latest"
    )]
    worker_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "TH_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only while holding the Lease `--lease-name` in `--lease-namespace`.
    #[arg(long, env = "TH_LEADER_ELECT")]
    leader_elect: bool,
    #[arg(long, env = "TH_LEASE_NAME", default_value = "truthound-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the operator's own, from POD_NAMESPACE). The leader
    /// labels its pod `--identity` in this namespace, so in a cluster it must be the pod's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the election: its pod's name, the pod the leader labels
    /// `truthound.io/leader=true`.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Progress reports refresh a running job's status at most this often (seconds).
    #[arg(long, env = "TH_PROGRESS_INTERVAL_SECONDS", default_value_t = 10)]
    progress_interval_seconds: u64,
    /// A running job with no news is looked at again after this many seconds (stalls,
    /// deadlines).
    #[arg(long, env = "TH_RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,
    /// Merge in a merge pod (`th-worker merge`) instead of in the operator past this many
    /// tasks ...
    #[arg(long, env = "TH_MERGE_IN_POD_TASKS", default_value_t = Settings::default().merge_in_pod_tasks)]
    merge_in_pod_tasks: u32,
    /// ... or past this many rows ...
    #[arg(long, env = "TH_MERGE_IN_POD_ROWS", default_value_t = Settings::default().merge_in_pod_rows)]
    merge_in_pod_rows: u64,
    /// ... or past this many exact-value cells (columns × min(rows, the exact distinct limit):
    /// the most value counts the merged maps hold).
    #[arg(long, env = "TH_MERGE_IN_POD_CELLS", default_value_t = Settings::default().merge_in_pod_cells)]
    merge_in_pod_cells: u64,
    /// At most this many ProfileJobs are reconciled at once (each reconcile may read storage,
    /// plan or merge); more wait their turn. 0: unbounded.
    #[arg(long, env = "TH_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    max_concurrent_reconciles: u16,
    /// At most this many plans and merges run in the operator process at once.
    #[arg(long, env = "TH_MAX_IN_PROCESS_WORK", default_value_t = Settings::default().max_in_process_work)]
    max_in_process_work: usize,
    /// Seconds after a failed ProfileJob finished when its work data (.truthound/<uid>/) is
    /// deleted, unless the job sets spec.output.workDataTTLSecondsAfterFailure (a success's goes
    /// at once, unless spec.output.keepWorkData).
    #[arg(long, env = "TH_FAILED_WORK_DATA_TTL_SECONDS", default_value_t = Settings::default().failed_work_data_ttl.as_secs())]
    failed_work_data_ttl_seconds: u64,
    /// A running task with no heartbeat for this many seconds is stalled; its pod is replaced.
    #[arg(long, env = "TH_STALL_TIMEOUT_SECONDS", default_value_t = 120)]
    stall_timeout_seconds: u64,
    /// Heartbeat period of the workers.
    #[arg(long, env = "TH_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Spark Connect URL of the Spark cluster `auto` may choose and ProfileJobs of backend
    /// spark use when they name none, e.g. `sc://spark-connect.spark:15002`. Its token, if it
    /// has one, is never shown (`--help` hides the value).
    #[arg(long, env = "SPARK_CONNECT_URL", hide_env_values = true)]
    spark_connect_url: Option<String>,
    /// Scheduler of the Dask cluster `auto` may choose and ProfileJobs of backend dask use
    /// when they name none, e.g. `tcp://dask-scheduler.dask:8786`.
    #[arg(long, env = "DASK_SCHEDULER_ADDRESS")]
    dask_scheduler_address: Option<String>,
    /// Dashboard (Jobs API) of the Ray cluster `auto` may choose and ProfileJobs of backend ray
    /// use when they name none, e.g. `http://ray-head.ray:8265`.
    #[arg(long, env = "RAY_ADDRESS")]
    ray_address: Option<String>,
    /// The backend `auto` uses when set to local, spark, dask or ray (else the dataset's size
    /// decides).
    #[arg(long, env = "TRUTHOUND_DISTRIBUTED_BACKEND")]
    distributed_backend: Option<String>,
    /// Image of the Dask runner Job (Dask with th-worker) for ProfileJobs that name none.
    #[arg(
        long,
        env = "TH_DASK_IMAGE",
        default_value = "ghcr.io/truthound/th-worker-dask:latest"
    )]
    dask_image: String,
    /// Defaults of the pods the operator starts (worker, merge and Dask runner pods): a YAML
    /// file of imagePullSecrets, priorityClassName, nodeSelector, tolerations, affinity,
    /// topologySpreadConstraints, podLabels, podAnnotations, podSecurityContext and
    /// securityContext. A ProfileJob's own settings win field by field.
    #[arg(long, env = "TH_POD_DEFAULTS_FILE", value_name = "PATH")]
    pod_defaults: Option<std::path::PathBuf>,
    /// th-worker binary shipped to Ray clusters with each job (the operator's image has one).
    #[arg(
        long,
        env = "TH_RAY_WORKER_BIN",
        default_value = "/usr/local/bin/th-worker"
    )]
    ray_worker_bin: std::path::PathBuf,
    /// A directory (absolute; repeat the flag or separate with commas) under which ProfileJobs
    /// may name `file://` datasets and outputs: the operator reads and writes those itself, so
    /// only directories mounted for the purpose belong here. Default: none, and local paths are
    /// refused.
    #[arg(long = "file-root", env = "TH_FILE_ROOTS", value_delimiter = ',')]
    file_roots: Vec<std::path::PathBuf>,
    /// Allow `http(s)://` datasets and outputs, which the operator fetches itself (any address
    /// it can reach). Default: refused.
    #[arg(long, env = "TH_ALLOW_HTTP_DATASETS")]
    allow_http_datasets: bool,
    /// A URL prefix (repeat the flag or separate with commas) that ProfileJobs' webhooks
    /// (`spec.notify`) must start with, e.g. `https://hooks.example.com/`. Default: any
    /// `http(s)://` URL (the operator POSTs to it and never reads the answer).
    #[arg(
        long = "notify-url-prefix",
        env = "TH_NOTIFY_URL_PREFIXES",
        value_delimiter = ','
    )]
    notify_url_prefixes: Vec<String>,
    /// Log format: json (default) or text.
    #[arg(long, env = "TH_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format);
    // kube's TLS uses ring and object_store's aws-lc-rs: with both compiled in, rustls cannot
    // pick a provider by itself and the first API connection would panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(err) = run(args).await {
        error!(error = %format!("{err:#}"), "th-operator stopped");
        return Err(err);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(args: Args) -> Result<()> {
    // Read before anything connects: a bad file is a configuration error to stop on at once.
    let pod_defaults = match &args.pod_defaults {
        Some(path) => PodSettings::load(path)?,
        None => PodSettings::default(),
    };
    let client = Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG or run in a pod with a service account")?;
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    readiness.set_not_ready("waiting for the ProfileJob cache to sync");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutting down");
            let _ = stop_tx.send(true);
        });
    }

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", args.metrics_addr))?;
    let http_server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        stopped(),
    ));

    let key = match &args.progress_key_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the progress key {}", path.display()))?,
        None => {
            warn!("no --progress-key-file: progress tokens last only as long as this process");
            ProgressHub::generate_key()
        }
    };
    let hub = ProgressHub::new(key).context("the progress key")?;
    {
        let m = metrics.clone();
        hub.on_finished(move |_job, _task, duration, rows| {
            m.observe_task(duration.as_secs_f64());
            m.add_rows(rows);
        });
    }
    let (progress_tls, progress_ca) = progress_tls(&args)?;
    let progress_server = tokio::spawn(progress::serve(
        hub.clone(),
        args.progress_addr,
        progress_tls,
        stopped(),
    ));

    let election = LeaderConfig::default();
    // Leader election: wait for the lease before acting; losing it ends the process, so a
    // restarted replica campaigns again instead of acting beside the new leader. A standby is
    // ready (it is healthy, and would keep rollouts from settling otherwise); the label on the
    // leader's pod, not readiness, routes the workers' progress reports to the leader.
    // While leading: the election's and the label's tasks, and the channel that says when
    // leadership ends.
    let mut leadership = None;
    let mut leading = None;
    if args.leader_elect {
        let identity = args
            .identity
            .clone()
            .context("--leader-elect needs --identity or POD_NAME")?;
        let elector = LeaderElector::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            election,
        )
        .context("leader election")?;
        let (mut rx, elector) = elector.run_until(stopped());
        let label = tokio::spawn(
            LeaderLabel::new(client.clone(), &args.lease_namespace, &identity)
                .follow(rx.clone(), election.retry_period),
        );
        readiness.set_ready();
        info!(lease = %args.lease_name, %identity, "standing by: waiting for leadership");
        tokio::select! {
            r = rx.wait_for(|leader| *leader) => { r.context("leader election ended")?; }
            _ = stopped() => {
                finish_leadership(elector, label, election).await;
                return Ok(());
            }
        }
        readiness.set_not_ready("leading: waiting for the ProfileJob cache to sync");
        metrics.set_leader(true);
        info!(%identity, "leading");
        leadership = Some((elector, label));
        leading = Some(rx);
    } else {
        // Alone, this replica acts: `truthound_leader` says so, as with a lease.
        metrics.set_leader(true);
    }

    let settings = Settings {
        progress_interval: Duration::from_secs(args.progress_interval_seconds.max(1)),
        stall_timeout: Duration::from_secs(args.stall_timeout_seconds.max(1)),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        merge_in_pod_tasks: args.merge_in_pod_tasks,
        merge_in_pod_rows: args.merge_in_pod_rows,
        merge_in_pod_cells: args.merge_in_pod_cells,
        max_in_process_work: args.max_in_process_work.max(1),
        failed_work_data_ttl: Duration::from_secs(args.failed_work_data_ttl_seconds),
        clusters: Clusters {
            spark_connect_url: args.spark_connect_url.clone().filter(|s| !s.is_empty()),
            dask_scheduler: args
                .dask_scheduler_address
                .clone()
                .filter(|s| !s.is_empty()),
            ray_address: args.ray_address.clone().filter(|s| !s.is_empty()),
            preferred: Clusters::parse_preferred(args.distributed_backend.as_deref())
                .map_err(anyhow::Error::msg)?,
        },
        access: access_policy(&args)?,
        ..Settings::default()
    };
    settings.clusters.validate().map_err(anyhow::Error::msg)?;
    let config = Config {
        worker_image: args.worker_image.clone(),
        progress_endpoint: args.progress_endpoint.clone(),
        progress_ca,
        heartbeat_seconds: args.heartbeat_seconds.max(1),
        remote: RemoteConfig {
            // A missing binary is said when a Ray job is submitted, not at start: most
            // installations never use Ray.
            worker_bin: Some(args.ray_worker_bin.clone()),
            dask_image: args.dask_image.clone(),
            pod_defaults,
        },
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "truthound-operator".into(),
            instance: args.identity.clone(),
        },
    );
    let mut ctx = Context::new(client.clone(), settings, config, recorder);
    ctx.progress = Some(Arc::new(hub.clone()));
    ctx.metrics = Some(Arc::new(metrics.clone()));
    let ctx = Arc::new(ctx);

    let (pjs, jobs, schedules): (Api<ProfileJob>, Api<Job>, Api<ProfileSchedule>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    // Fail early and clearly when the CRD is missing, instead of a watcher retrying forever.
    pjs.list(&kube::api::ListParams::default().limit(1))
        .await
        .context("cannot list ProfileJobs: is the CRD installed (kubectl apply -f crds/) and may the operator's service account list them?")?;

    let schedules_on = schedules_available(&schedules).await?;
    let run_children = pjs.clone();

    // What `Controller::new` builds (a reflector over the ProfileJob watch), spelled out so that
    // readiness follows the watch's first complete list. Waiting on the store instead
    // (`Store::wait_until_ready`) next to the controller never returns: the store's one-shot
    // ready signal wakes only the last of its waiters, which is the controller.
    let writer = reflector::store::Writer::<ProfileJob>::default();
    let store = writer.as_reader();
    let synced = readiness.clone();
    let profilejobs = reflector(
        writer,
        watcher(pjs, watcher::Config::default().any_semantic()),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            synced.set_ready();
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(profilejobs, store.clone())
        .with_config(controller_config(&args))
        .owns(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=truthound-operator"),
        );
    // Progress reports trigger reconciles (at most one per job per progress interval), so a
    // running job's status follows its workers without polling.
    let controller = controller.reconcile_on(progress::reconcile_triggers(
        hub.changes(ctx.settings.progress_interval),
        store.clone(),
    ));
    // Both controllers stop on the stop signal or when leadership is lost.
    let until_stopped = {
        let leading = leading.clone();
        move || {
            let stop = stopped();
            let leading = leading.clone();
            async move {
                let lost = async move {
                    match leading {
                        Some(mut rx) => {
                            let _ = rx.wait_for(|leader| !*leader).await;
                            warn!("lost leadership: stopping");
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = stop => {},
                    _ = lost => {},
                }
            }
        }
    };
    let m = metrics.clone();
    let profilejob_controller = controller
        .graceful_shutdown_on(until_stopped())
        .run(
            move |pj, ctx| {
                let timer = m.reconcile_timer();
                async move {
                    let r = reconcile::reconcile(pj, ctx).await;
                    drop(timer);
                    r
                }
            },
            reconcile::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "reconcile error");
            }
        });
    // ProfileSchedules: a second controller over the same context (client, recorder, access
    // policy), woken by its runs (the ProfileJobs it owns: their phase changes and deletions)
    // and at each scheduled time.
    let schedule_config = controller_config(&args);
    let schedule_controller = async move {
        if !schedules_on {
            return;
        }
        Controller::new(schedules, watcher::Config::default().any_semantic())
            .with_config(schedule_config)
            .owns_stream(schedule::reconcile::run_triggers(watcher(
                run_children,
                watcher::Config::default().labels(schedule::decide::SCHEDULE_LABEL),
            )))
            .graceful_shutdown_on(until_stopped())
            .run(
                schedule::reconcile::reconcile,
                schedule::reconcile::error_policy,
                ctx,
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    warn!(error = %e, "schedule reconcile error");
                }
            })
            .await;
    };
    tokio::join!(profilejob_controller, schedule_controller);
    readiness.set_not_ready("shutting down");
    let _ = stop_tx.send(true);
    if let Some((elector, label)) = leadership {
        finish_leadership(elector, label, election).await;
    }
    let _ = http_server.await;
    let _ = progress_server.await;
    Ok(())
}

/// Whether ProfileSchedules can be watched. An installation whose CRDs or RBAC predate them
/// (the ProfileSchedule CRD not applied, or no permission to list them) still runs ProfileJobs,
/// and says why schedules are not reconciled; any other error is one to stop on.
async fn schedules_available(api: &Api<ProfileSchedule>) -> Result<bool> {
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {
            warn!(
                error = %s.message,
                "cannot list ProfileSchedules (apply crds/profileschedule.yaml and the chart's RBAC): schedules are not reconciled"
            );
            Ok(false)
        }
        Err(e) => Err(e).context("cannot list ProfileSchedules"),
    }
}

/// The progress service's TLS (`--progress-tls-cert`, `--progress-tls-key`) and the CA the
/// workers get (`--progress-ca-file`, else the certificate). Read at start: a missing file is a
/// configuration error to stop on. TLS with an `http://` endpoint is refused, as workers could
/// then not report.
fn progress_tls(
    args: &Args,
) -> Result<(Option<tonic::transport::ServerTlsConfig>, Option<String>)> {
    let (Some(cert_path), Some(key_path)) = (&args.progress_tls_cert, &args.progress_tls_key)
    else {
        if args
            .progress_endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("https://"))
        {
            anyhow::bail!(
                "--progress-endpoint is https:// but the progress service has no TLS (--progress-tls-cert, --progress-tls-key)"
            );
        }
        return Ok((None, None));
    };
    let read = |p: &std::path::PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("reading the progress {what} {}", p.display()))
    };
    let cert = read(cert_path, "TLS certificate")?;
    let key = read(key_path, "TLS key")?;
    if args
        .progress_endpoint
        .as_deref()
        .is_some_and(|e| !e.starts_with("https://"))
    {
        anyhow::bail!("the progress service has TLS: --progress-endpoint must be https://");
    }
    let ca = match &args.progress_ca_file {
        Some(p) => read(p, "CA")?,
        None => cert.clone(),
    };
    let ca = String::from_utf8(ca).context("the progress CA is not PEM text")?;
    info!("progress service over TLS");
    let tls = progress::tls_config(&cert, &key)
        .with_context(|| format!("{} and {}", cert_path.display(), key_path.display()))?;
    Ok((Some(tls), Some(ca)))
}

/// The controller's settings: at most `--max-concurrent-reconciles` reconciles at once (a
/// tenant creating many ProfileJobs must not make the operator plan and merge them all at
/// the same time).
fn controller_config(args: &Args) -> controller::Config {
    controller::Config::default().concurrency(args.max_concurrent_reconciles)
}

/// The local paths and URLs ProfileJobs may name (`--file-root`, `--allow-http-datasets`).
fn access_policy(args: &Args) -> Result<AccessPolicy> {
    let file_roots: Vec<std::path::PathBuf> = args
        .file_roots
        .iter()
        .filter(|r| !r.as_os_str().is_empty())
        .cloned()
        .collect();
    if let Some(r) = file_roots.iter().find(|r| !r.is_absolute()) {
        anyhow::bail!("--file-root {}: must be an absolute path", r.display());
    }
    if !file_roots.is_empty() {
        info!(roots = ?file_roots, "file:// datasets and outputs allowed under these roots");
    }
    Ok(AccessPolicy {
        file_roots,
        allow_http: args.allow_http_datasets,
        notify_url_prefixes: args
            .notify_url_prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
    })
}

/// Waits, after the stop signal, for the election to release the lease and for the leader label
/// to be removed, so that a successor takes over at once rather than after the lease expires.
/// Bounded by twice the renew deadline (the election's attempt in flight, then the release);
/// past that the lease expires on its own.
async fn finish_leadership(elector: JoinHandle<()>, label: JoinHandle<()>, election: LeaderConfig) {
    let deadline = election.renew_deadline * 2;
    let both = async {
        let _ = elector.await;
        let _ = label.await;
    };
    if tokio::time::timeout(deadline, both).await.is_err() {
        warn!("the lease release or the leader label removal did not finish in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_bounded_by_default_and_by_the_flag() {
        let args = Args::try_parse_from(["th-operator"]).expect("defaults");
        assert_eq!(
            format!("{:?}", controller_config(&args)),
            format!("{:?}", controller::Config::default().concurrency(16))
        );
        assert_eq!(args.max_in_process_work, 2);
        let args = Args::try_parse_from([
            "th-operator",
            "--max-concurrent-reconciles",
            "3",
            "--max-in-process-work",
            "5",
            "--merge-in-pod-cells",
            "77",
        ])
        .expect("flags");
        assert_eq!(
            format!("{:?}", controller_config(&args)),
            format!("{:?}", controller::Config::default().concurrency(3))
        );
        assert_eq!((args.max_in_process_work, args.merge_in_pod_cells), (5, 77));
        assert_ne!(
            format!("{:?}", controller::Config::default().concurrency(3)),
            format!("{:?}", controller::Config::default()),
            "the comparison sees the concurrency"
        );
    }
}
