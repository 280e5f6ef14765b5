//! The real-Kubernetes tier's pieces for tests (issue 11): the control plane the test command
//! started (`scripts/kube-cluster.sh` → `TH_TEST_KUBECONFIG`), a client for it, a fresh
//! namespace per test, and `th-test-node` (the node agent: kubelet and scheduler) as a child
//! process that is stopped, with every process it ran, when its guard drops.
//!
//! ```no_run
//! # async fn demo() {
//! use truthound_e2e::kube_support::{self, AgentOptions, NodeAgent};
//! let kubeconfig = kube_support::kubeconfig();
//! let client = kube_support::client(&kubeconfig).await;
//! let ns = kube_support::namespace(&client, "operator-run").await;
//! let agent = NodeAgent::start(&kubeconfig, AgentOptions {
//!     // Worker pods (no `command`) run the workspace's th-worker with their args.
//!     images: vec![("*th-worker*".into(), truthound_e2e::bin("th-worker"))],
//!     namespaces: vec![ns.clone()],
//!     ..AgentOptions::default()
//! });
//! // ... create objects in `ns`; a container's output: agent.container_log(&ns, pod, "th-worker");
//! // its process: the pid in `containerStatuses[].containerID` (`th-test-node://<pid>`).
//! # }
//! ```

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The admin kubeconfig of the test run's control plane. Panics, saying how to get one, when
/// `TH_TEST_KUBECONFIG` is not set: a missing control plane must fail the tier, not skip it.
pub fn kubeconfig() -> PathBuf {
    let path = std::env::var_os("TH_TEST_KUBECONFIG").unwrap_or_else(|| {
        panic!(
            "TH_TEST_KUBECONFIG is not set: start a control plane with `scripts/kube-cluster.sh \
             start` (scripts/test.sh does) and export the line it prints, the path of its admin \
             kubeconfig"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "TH_TEST_KUBECONFIG={} is not a file: is the control plane running?",
        path.display()
    );
    path
}

/// A client of the cluster in `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> Client {
    // kube's TLS is rustls with ring; object_store's brings aws-lc-rs into the same build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).expect("Kubernetes client")
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call: `<prefix>-<pid>-<n>`, valid as a namespace or
/// node name when `prefix` is.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh namespace `<prefix>-<pid>-<n>` and waits for its `default` ServiceAccount
/// (the serviceaccount controller's; pods are refused until it exists). Returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"truthound.io/test": "true"}},
    }))
    .expect("namespace object");
    api.create(&Default::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sa.get_opt("default").await {
            Ok(Some(_)) => return name,
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None) => panic!(
                "namespace {name}: no `default` ServiceAccount after 30 s; is the \
                 kube-controller-manager running its serviceaccount controller?"
            ),
            Err(e) => panic!("namespace {name}: reading its ServiceAccount: {e}"),
        }
    }
}

/// Deletes a namespace (and so everything in it); does not wait.
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = api.delete(name, &Default::default()).await {
        eprintln!("deleting namespace {name}: {e}");
    }
}

/// How to start the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `(image glob, executable)`: what runs for a container without a `command`.
    pub images: Vec<(String, PathBuf)>,
    /// `(image glob, PATH dirs)`: searched first for the commands of those images' containers.
    pub image_paths: Vec<(String, String)>,
    /// `(image glob, path in the image, path here)`: the image's files as this host has them.
    pub image_files: Vec<(String, String, PathBuf)>,
    /// The namespaces whose unscheduled pods it binds (all when empty: then two agents at once
    /// would take each other's pods, so tests running in parallel should each name theirs).
    pub namespaces: Vec<String>,
    /// Extra environment for every container (under the container's own).
    pub env: Vec<(String, String)>,
    /// The Node's name; a unique one when `None`.
    pub node_name: Option<String>,
}

/// A running `th-test-node`. Dropping it stops the agent (SIGTERM: it kills every process it
/// ran and deletes its Node; SIGKILL after 15 s); its log is printed when the test failed.
pub struct NodeAgent {
    child: Child,
    node: String,
    work_dir: tempfile::TempDir,
}

impl NodeAgent {
    /// Starts the agent on the cluster of `kubeconfig` and waits until its Node is registered
    /// and its watches run.
    pub fn start(kubeconfig: &Path, opts: AgentOptions) -> NodeAgent {
        let node = opts
            .node_name
            .clone()
            .unwrap_or_else(|| unique_name("th-test-node"));
        let work_dir = tempfile::Builder::new()
            .prefix("th-test-node-")
            .tempdir()
            .expect("agent work dir");
        let log = std::fs::File::create(work_dir.path().join("agent.log")).expect("agent log");
        let mut cmd = Command::new(crate::bin("th-test-node"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--node-name")
            .arg(&node)
            .arg("--work-dir")
            .arg(work_dir.path().join("pods"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // The log goes to a file (printed if the test fails) unless asked for live.
        if std::env::var_os("TH_TEST_NODE_LOG").is_some_and(|v| v == "stderr") {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(log);
        }
        for (pattern, exe) in &opts.images {
            cmd.arg("--image")
                .arg(format!("{pattern}={}", exe.display()));
        }
        for (pattern, dirs) in &opts.image_paths {
            cmd.arg("--image-path").arg(format!("{pattern}={dirs}"));
        }
        for (pattern, inside, host) in &opts.image_files {
            cmd.arg("--image-file")
                .arg(format!("{pattern}={inside}={}", host.display()));
        }
        for ns in &opts.namespaces {
            cmd.arg("--namespace").arg(ns);
        }
        for (k, v) in &opts.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let mut child = cmd.spawn().expect("starting th-test-node");
        let stdout = child.stdout.take().expect("agent stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut agent = NodeAgent {
            child,
            node,
            work_dir,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready ") => agent,
            other => {
                let status = agent.child.try_wait().ok().flatten();
                // Its log follows: the guard prints it as the panic unwinds.
                panic!("th-test-node did not become ready ({other:?}, exit {status:?})");
            }
        }
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The directory of a pod (by namespace and name) holding `<container>.log` and
    /// `<container>.termination-log`, if the agent made one.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{pod}_");
        std::fs::read_dir(self.work_dir.path().join("pods"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
    }

    /// A container's output (stdout and stderr, every run of it), empty if none yet.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.pod_dir(namespace, pod)
            .and_then(|d| std::fs::read_to_string(d.join(format!("{container}.log"))).ok())
            .unwrap_or_default()
    }

    /// Waits until the API shows the Node Ready.
    pub async fn wait_ready(&self, client: &Client) {
        let nodes: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = nodes
                .get_opt(&self.node)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Node {} not Ready after 30 s",
                self.node
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- th-test-node {} log ---\n{}", self.node, self.log());
        }
    }
}
