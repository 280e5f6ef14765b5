//! The operator's test harness on a real Kubernetes control plane (scripts/kube-cluster.sh →
//! `TH_TEST_KUBECONFIG`): the CRD and the chart's rendered objects applied once with server-side
//! apply, the test node agent (`th-test-node`) running pods as local processes, and `th-operator`
//! started per test as a process authenticated as the chart's ServiceAccount (a TokenRequest
//! token), watching only that test's namespace.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use truthound_e2e::kube_support::{self, AgentOptions, NodeAgent};
use truthound_e2e::*;

/// The field manager of everything the tests apply.
pub const MANAGER: &str = "truthound-tests";
/// The chart's namespace and ServiceAccount (deploy/operator.yaml, the chart's defaults).
pub const OPERATOR_NS: &str = "truthound-system";
pub const OPERATOR_SA: &str = "truthound-operator";
/// The image the chart gives workers; the node agent runs the workspace's `th-worker` for it.
pub const WORKER_IMAGE: &str = "ghcr.io/truthound/th-worker:0.1.0";
/// The Dask runner Job's image (the chart's TH_DASK_IMAGE).
pub const DASK_IMAGE: &str = "ghcr.io/truthound/th-worker-dask:0.1.0";
/// An image the node agent maps to `th-worker` behind a pause of `TH_TEST_WORKER_DELAY` seconds
/// (default 3), so that a test can act while tasks run.
pub const SLOW_WORKER_IMAGE: &str = "example.test/th-worker-slow:1";

/// What every test of the binary shares: the cluster's admin kubeconfig, the operator's token
/// kubeconfig and the node agent.
pub struct Cluster {
    pub admin: PathBuf,
    pub operator: PathBuf,
    pub dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let admin = kube_support::kubeconfig();
        let dir = tempfile::Builder::new()
            .prefix("th-kube-tests")
            .tempdir()
            .expect("temp dir")
            .keep();
        let operator = dir.join("operator.kubeconfig");
        multi_thread_rt().block_on(async {
            let client = kube_support::client(&admin).await;
            // With kubectl, as a user would (and as its YAML 1.1 reads `defaultMode: 0440`).
            for file in [
                "crds/profilejob.yaml",
                "crds/profileschedule.yaml",
                "deploy/namespace.yaml",
                "deploy/operator.yaml",
            ] {
                let path = repo(file);
                let out = kubectl_as(
                    &admin,
                    &[
                        "apply",
                        "--server-side",
                        "--force-conflicts",
                        "--field-manager",
                        MANAGER,
                        "-f",
                        path.to_str().expect("path"),
                    ],
                );
                assert!(
                    out.status.success(),
                    "server-side apply of {file}: {}",
                    stderr(&out)
                );
            }
            wait_crd_established(&client).await;
            let token = service_account_token(&client, OPERATOR_NS, OPERATOR_SA).await;
            write_token_kubeconfig(&admin, &token, &operator);
        });
        Cluster {
            admin,
            operator,
            dir,
        }
    })
}

/// A path in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub async fn admin() -> Client {
    kube_support::client(&cluster().admin).await
}

/// Server-side applies one object (into `namespace` when given), or with `dry_run` only asks
/// the apiserver whether it would accept it.
pub async fn apply_value(
    client: &Client,
    value: Value,
    namespace: Option<&str>,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(value).expect("a Kubernetes object");
    let types = obj.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
    let (ar, caps) = pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().expect("metadata.name");
    let api: Api<DynamicObject> = match caps.scope {
        kube::discovery::Scope::Namespaced => {
            let ns = namespace
                .map(str::to_string)
                .or_else(|| obj.metadata.namespace.clone())
                .unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &ar)
        }
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let mut pp = PatchParams::apply(MANAGER).force();
    pp.dry_run = dry_run;
    api.patch(&name, &pp, &Patch::Apply(&obj)).await
}

async fn wait_crd_established(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["profilejobs.truthound.io", "profileschedules.truthound.io"] {
        eventually(
            &format!("the CRD {name} is Established"),
            Duration::from_secs(30),
            || async {
                let crd = crds.get(name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// A token of `namespace/sa` from the TokenRequest API, as a projected token in a pod would be.
pub async fn service_account_token(client: &Client, namespace: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(4 * 3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let mut tries = 0;
    loop {
        match sas
            .create_token_request(sa, &PostParams::default(), &req)
            .await
        {
            Ok(t) => return t.status.expect("token status").token,
            Err(e) if tries < 40 => {
                // the ServiceAccount was applied a moment ago
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("TokenRequest for {namespace}/{sa}: {e}"),
        }
    }
}

/// A kubeconfig for the same apiserver as `admin`, authenticated by `token`.
pub fn write_token_kubeconfig(admin: &Path, token: &str, out: &Path) {
    let kc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).expect("admin kubeconfig"))
            .expect("kubeconfig YAML");
    let cluster = &kc["clusters"][0]["cluster"];
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "sa"}}],
        "current-context": "test",
    });
    std::fs::write(out, serde_yaml::to_string(&doc).expect("YAML")).expect("write kubeconfig");
}

/// A fresh namespace for one test, with the S3 credentials Secret its ProfileJobs name, and a
/// node agent that runs that namespace's pods (stopped, with its processes, when dropped).
pub async fn test_namespace(client: &Client, prefix: &str) -> (String, NodeAgent) {
    let name = kube_support::namespace(client, prefix).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "s3-credentials"},
                "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
            }))
            .expect("secret"),
        )
        .await
        .expect("create secret");
    let slow = executable_script(
        &cluster().dir.join("th-worker-slow"),
        &format!(
            "#!/bin/sh\nsleep \"${{TH_TEST_WORKER_DELAY:-3}}\"\nexec {} \"$@\"\n",
            bin("th-worker").display()
        ),
    );
    let agent = NodeAgent::start(
        &cluster().admin,
        AgentOptions {
            images: vec![
                ("*th-worker-slow*".into(), slow),
                ("*th-worker*".into(), bin("th-worker")),
            ],
            // The Dask runner Job's image (the operator's TH_DASK_IMAGE): its `python` is the one
            // with dask (scripts/dask-cluster.sh's virtualenv), its th-worker the workspace's.
            image_paths: vec![("*th-worker-dask*".into(), dask_python_dir())],
            image_files: vec![(
                "*th-worker-dask*".into(),
                truthound_operator::backend::remote::DASK_IMAGE_WORKER_BIN.into(),
                bin("th-worker"),
            )],
            namespaces: vec![name.clone()],
            ..AgentOptions::default()
        },
    );
    (name, agent)
}

pub use kube_support::delete_namespace;

/// The Dask scheduler the test command started (scripts/dask-cluster.sh).
pub fn dask_scheduler() -> String {
    std::env::var("TH_TEST_DASK_SCHEDULER").expect(
        "TH_TEST_DASK_SCHEDULER is not set: start a Dask cluster with `scripts/dask-cluster.sh \
         start` (scripts/test.sh does) and export the line it prints",
    )
}

/// The directory of the python that has dask (the one the operator would run the runner with).
fn dask_python_dir() -> String {
    let python = truthound_operator::backend::dask::default_python();
    python
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no directory in the dask python's path {}",
                python.display()
            )
        })
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "not within {} s: {what}",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A free port on 127.0.0.1 (bound and released: good enough for a test's own servers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One `th-operator` process as the chart runs it (deploy/operator.yaml's environment), but
/// authenticated with the chart ServiceAccount's token, watching one namespace, its servers on
/// free loopback ports. Killed when dropped.
pub struct Operator {
    child: Child,
    pub namespace: String,
    pub metrics: u16,
    pub progress: u16,
    pub log: PathBuf,
    key: PathBuf,
    kubeconfig: PathBuf,
    extra_env: Vec<(String, String)>,
    starts: u32,
}

impl Operator {
    pub fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &cluster().operator, &[])
    }

    pub fn start_with(namespace: &str, kubeconfig: &Path, env: &[(&str, &str)]) -> Operator {
        let c = cluster();
        let key = c.dir.join(format!("progress-key-{namespace}"));
        std::fs::write(&key, format!("test-key-{namespace}-0123456789abcdef")).expect("key");
        let extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut op = Operator {
            child: Command::new("true").spawn().expect("placeholder"),
            namespace: namespace.to_string(),
            metrics: free_port(),
            progress: free_port(),
            log: c.dir.join(format!("operator-{namespace}.log")),
            key,
            kubeconfig: kubeconfig.to_path_buf(),
            extra_env,
            starts: 0,
        };
        let _ = op.child.wait();
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let mut cmd = Command::new(bin("th-operator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", format!("th-operator-{}", self.namespace))
            .env("POD_NAMESPACE", OPERATOR_NS)
            .env("TH_WATCH_NAMESPACE", &self.namespace)
            .env("TH_METRICS_ADDR", format!("127.0.0.1:{}", self.metrics))
            .env("TH_PROGRESS_ADDR", format!("127.0.0.1:{}", self.progress))
            .env(
                "TH_PROGRESS_ENDPOINT",
                format!("http://127.0.0.1:{}", self.progress),
            )
            .env("TH_PROGRESS_KEY_FILE", &self.key)
            .env("TH_WORKER_IMAGE", WORKER_IMAGE)
            .env("TH_DASK_IMAGE", DASK_IMAGE)
            .env("TH_LOG_FORMAT", "text")
            .env("TH_RESYNC_SECONDS", "2")
            .env("TH_PROGRESS_INTERVAL_SECONDS", "1")
            .env("TH_HEARTBEAT_SECONDS", "1")
            .env("TH_LOG", "info,kube=warn,tower=warn")
            .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("th-operator starts");
    }

    /// SIGKILL, as an OOM kill or a node loss would, and start again.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process still runs (no crash, no exit on an error it should have reported).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("th-operator exited ({status}):\n{}", self.logs());
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl` v1.36 built beside the servers (scripts/kube-cluster.sh kubectl), as the admin.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    kubectl_as(&cluster().admin, args)
}

pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let kubectl = std::env::var("TH_TEST_KUBE_KUBECTL")
        .expect("TH_TEST_KUBE_KUBECTL is not set: scripts/test.sh exports the kubectl that scripts/kube-cluster.sh builds");
    Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs")
}

/// A ProfileJob over `s3://bucket/data/` writing `s3://bucket/profiles/<name>.json`, with the
/// test S3 server's endpoint and the namespace's credentials Secret; `extra` is merged into
/// `spec` (objects key by key).
pub fn profilejob(name: &str, bucket: &str, extra: Value) -> Value {
    let mut pj = json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileJob",
        "metadata": {"name": name},
        "spec": {
            "dataset": {
                "uri": format!("s3://{bucket}/data/"),
                "format": "parquet",
                "options": {"endpoint": s3_endpoint(), "region": "us-east-1", "allowHttp": true},
                "credentialsSecretRef": {"name": "s3-credentials"},
            },
            "output": {"uri": format!("s3://{bucket}/profiles/{name}.json")},
            "partitioning": {"strategy": "row_based", "partitions": 3},
        },
    });
    merge(&mut pj["spec"], extra);
    pj
}

pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The ProfileJob as JSON (status and all).
pub async fn get_pj(client: &Client, ns: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pj_resource());
    serde_json::to_value(api.get(name).await.expect("get ProfileJob")).expect("JSON")
}

pub fn pj_resource() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("truthound.io", "v1alpha1", "ProfileJob"),
        "profilejobs",
    )
}

/// Waits until the ProfileJob's phase is `phase`, failing early (with its status and the
/// operator's log) if it ends in another.
pub async fn wait_phase(
    client: &Client,
    op: &Operator,
    name: &str,
    phase: &str,
    limit: u64,
) -> Value {
    let start = Instant::now();
    loop {
        let pj = get_pj(client, &op.namespace, name).await;
        let now = pj["status"]["phase"].as_str().unwrap_or("");
        if now == phase {
            return pj;
        }
        let ended = now == "Succeeded" || now == "Failed";
        if ended || start.elapsed() > Duration::from_secs(limit) {
            panic!(
                "{name} is {now:?}, not {phase} (after {:?}); status: {:#}\noperator log:\n{}",
                start.elapsed(),
                pj["status"],
                tail(&op.logs(), 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Writes a 3-file Parquet dataset (2,000 rows each) to `s3://bucket/data/` and the same files
/// to a local directory, for `th profile` to compare with.
pub fn dataset(bucket: &str) -> tempfile::TempDir {
    let local = tempfile::tempdir().expect("temp dir");
    for f in 0..3 {
        let bytes = parquet_bytes(&table(f * 2000..(f + 1) * 2000), 300);
        std::fs::write(local.path().join(format!("part-{f}.parquet")), &bytes).expect("write");
        put(bucket, &format!("data/part-{f}.parquet"), bytes);
    }
    local
}

/// `th profile` of a local directory, in-process: the reference for exact figures.
pub fn local_profile(dir: &Path) -> Value {
    let out = run("th", &["profile", dir.to_str().expect("path"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("profile JSON")
}

/// An object of the test S3 server, read from inside the tests' async code (the support's
/// `get` runs a runtime of its own).
pub fn s3_get(bucket: &str, key: &str) -> Vec<u8> {
    tokio::task::block_in_place(|| get(bucket, key))
}
