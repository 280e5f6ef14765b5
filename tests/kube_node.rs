//! th-test-node against a real control plane (kube-apiserver, the Job controller, etcd:
//! `scripts/kube-cluster.sh` → `TH_TEST_KUBECONFIG`): Jobs complete through it, statuses read as
//! a kubelet's, deletion and signals end processes. Each test has its own namespace and agent.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use truthound_e2e::kube_support::{self, AgentOptions, NodeAgent};

/// A cluster client, a fresh namespace, and an agent binding only that namespace's pods.
async fn setup(prefix: &str) -> (Client, String, NodeAgent) {
    setup_with(prefix, AgentOptions::default()).await
}

async fn setup_with(prefix: &str, opts: AgentOptions) -> (Client, String, NodeAgent) {
    let kubeconfig = kube_support::kubeconfig();
    let client = kube_support::client(&kubeconfig).await;
    let ns = kube_support::namespace(&client, prefix).await;
    let agent = NodeAgent::start(
        &kubeconfig,
        AgentOptions {
            namespaces: vec![ns.clone()],
            ..opts
        },
    );
    agent.wait_ready(&client).await;
    (client, ns, agent)
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("pod object")
}

/// Polls the pod until `done` holds; panics with the last status seen after `within`.
async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    within: Duration,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + within;
    loop {
        let p = api.get(name).await.expect("get pod");
        if done(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not as expected after {within:?}; status: {}",
            serde_json::to_string_pretty(&p.status).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone(api: &Api<Pod>, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while api.get_opt(name).await.expect("get pod").is_some() {
        assert!(
            Instant::now() < deadline,
            "pod {name} still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The status JSON of container `i` (`state`, `lastState`, `restartCount`, ...).
fn container(p: &Pod, i: usize) -> Value {
    let s = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    s.and_then(|cs| cs.get(i))
        .map(|c| serde_json::to_value(c).expect("container status"))
        .unwrap_or(Value::Null)
}

/// The process id behind a container: its `th-test-node://<pid>` containerID.
fn pid_of(p: &Pod) -> i32 {
    container(p, 0)["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("th-test-node://"))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", container(p, 0)))
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn job_done(api: &Api<Job>, name: &str, within: Duration) -> Job {
    job_finished(api, name, "Complete", within).await
}

/// Waits for the Job's `Complete` or `Failed` condition and asserts it is `want`.
async fn job_finished(api: &Api<Job>, name: &str, want: &str, within: Duration) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let j = api.get(name).await.expect("get job");
        let conditions = j
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        {
            assert_eq!(c.type_, want, "job {name}: {:?}", j.status);
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} not finished after {within:?}: {:?}",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn job_pods(client: &Client, ns: &str, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list job pods")
        .items
}

fn annotation<'a>(p: &'a Pod, key: &str) -> &'a str {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .unwrap_or("")
}

fn message(p: &Pod, i: usize) -> String {
    container(p, i)["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_completes_with_the_downward_api_and_a_secret() {
    let (client, ns, agent) = setup("node-indexed").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "words"},
        "stringData": {"word": "sesame"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "indexed"},
        "spec": {
            "completionMode": "Indexed", "completions": 3, "parallelism": 2, "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "registry.example/never-pulled:1",
                    "command": ["/bin/sh", "-c"],
                    // `$(IDX)` is Kubernetes' expansion, `$JOB_COMPLETION_INDEX` the shell's (the
                    // Job controller's variable); the message file path is the container's.
                    "args": ["echo \"index=$JOB_COMPLETION_INDEX idx=$(IDX) word=$WORD\" > /dev/termination-log; echo ran $(IDX)"],
                    "env": [
                        {"name": "IDX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                        {"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "words", "key": "word"}}},
                    ],
                }],
            }},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = job_done(&jobs, "indexed", Duration::from_secs(60)).await;
    let status = done.status.unwrap();
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));

    let mut pods = job_pods(&client, &ns, "indexed").await;
    pods.sort_by_key(|p| annotation(p, "batch.kubernetes.io/job-completion-index").to_string());
    assert_eq!(pods.len(), 3, "one pod per index, none retried");
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(phase(p), "Succeeded");
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(agent.node_name())
        );
        let c = container(p, 0);
        assert_eq!(c["state"]["terminated"]["exitCode"], 0);
        assert_eq!(c["state"]["terminated"]["reason"], "Completed");
        assert_eq!(message(p, 0), format!("index={i} idx={i} word=sesame\n"));
        let name = p.metadata.name.as_deref().unwrap();
        assert_eq!(agent.container_log(&ns, name, "main"), format!("ran {i}\n"));
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
        assert!(s.start_time.is_some());
        let conditions = s.conditions.as_ref().unwrap();
        for kind in ["PodScheduled", "Initialized", "Ready", "ContainersReady"] {
            assert!(
                conditions.iter().any(|c| c.type_ == kind),
                "{kind} in {conditions:?}"
            );
        }
    }
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_container_reports_its_exit_code_and_termination_message() {
    let (client, ns, _agent) = setup("node-message").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let p = pod(
        "fails",
        json!({
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "writer", "image": "x",
                    "command": ["/bin/sh", "-c", "printf 'the reason' > \"$MSG\"; exit 3"],
                    // An env value equal to the message path points at the agent's file.
                    "env": [{"name": "MSG", "value": "/dev/termination-log"}],
                },
                {
                    "name": "logger", "image": "x",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "command": ["/bin/sh", "-c", "echo first; echo 'last words' >&2; exit 1"],
                },
                {
                    "name": "quiet", "image": "x",
                    "terminationMessagePath": "/tmp/custom-message",
                    "command": ["/bin/sh", "-c", "echo custom > /tmp/custom-message"],
                },
            ],
        }),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_pod(&pods, "fails", Duration::from_secs(20), |p| {
        phase(p) == "Failed"
    })
    .await;
    let writer = container(&p, 0);
    assert_eq!(writer["state"]["terminated"]["exitCode"], 3);
    assert_eq!(writer["state"]["terminated"]["reason"], "Error");
    assert_eq!(message(&p, 0), "the reason");
    assert!(writer["state"]["terminated"]["startedAt"].is_string());
    assert!(writer["state"]["terminated"]["finishedAt"].is_string());
    assert_eq!(container(&p, 1)["state"]["terminated"]["exitCode"], 1);
    assert_eq!(message(&p, 1), "first\nlast words\n");
    assert_eq!(container(&p, 2)["state"]["terminated"]["exitCode"], 0);
    assert_eq!(message(&p, 2), "custom\n");
    assert!(
        !Path::new("/tmp/custom-message").exists(),
        "the container's path is mapped into the pod's directory"
    );
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_controller_retries_a_failed_index_within_its_backoff_limit() {
    let (client, ns, _agent) = setup("node-retry").await;
    let marks = tempfile::tempdir().unwrap();
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "retried"},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "x",
                    "command": ["/bin/sh", "-c"],
                    // Index 1 fails its first attempt only.
                    "args": ["if [ \"$JOB_COMPLETION_INDEX\" = 1 ] && [ ! -e \"$MARKS/tried\" ]; then touch \"$MARKS/tried\"; echo failing; exit 1; fi"],
                    "env": [{"name": "MARKS", "value": marks.path().to_str().unwrap()}],
                }],
            }},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    // The Job controller waits ~10 s before it replaces a failed pod.
    let done = job_done(&jobs, "retried", Duration::from_secs(60)).await;
    let status = done.status.unwrap();
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.completed_indexes.as_deref(), Some("0,1"));
    assert_eq!(status.failed_indexes.as_deref().unwrap_or(""), "");

    let pods = job_pods(&client, &ns, "retried").await;
    let index1: Vec<&Pod> = pods
        .iter()
        .filter(|p| annotation(p, "batch.kubernetes.io/job-completion-index") == "1")
        .collect();
    let mut phases: Vec<&str> = index1.iter().map(|p| phase(p)).collect();
    phases.sort();
    assert_eq!(
        phases,
        ["Failed", "Succeeded"],
        "index 1: one failure, one retry"
    );
    let failed = index1.iter().find(|p| phase(p) == "Failed").unwrap();
    assert_eq!(container(failed, 0)["state"]["terminated"]["exitCode"], 1);
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_pod_kills_its_process_and_the_pod_goes() {
    let (client, ns, _agent) = setup("node-delete").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // One that stops on SIGTERM, one that ignores it (so SIGKILL at the end of its grace).
    pods.create(
        &PostParams::default(),
        &pod(
            "polite",
            json!({"containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}]}),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "stubborn",
            json!({
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "x", "command": ["/bin/sh", "-c", "trap '' TERM; sleep 300"]}],
            }),
        ),
    )
    .await
    .unwrap();
    let running = |p: &Pod| phase(p) == "Running";
    let polite = wait_pod(&pods, "polite", Duration::from_secs(20), running).await;
    let stubborn = wait_pod(&pods, "stubborn", Duration::from_secs(20), running).await;
    let (polite_pid, stubborn_pid) = (pid_of(&polite), pid_of(&stubborn));
    assert!(alive(polite_pid) && alive(stubborn_pid));
    assert!(container(&polite, 0)["state"]["running"]["startedAt"].is_string());

    let start = Instant::now();
    pods.delete("polite", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&pods, "polite", Duration::from_secs(10)).await;
    let polite_took = start.elapsed();
    assert!(!alive(polite_pid), "process {polite_pid} outlived its pod");
    wait_gone(&pods, "stubborn", Duration::from_secs(15)).await;
    let stubborn_took = start.elapsed();
    assert!(
        !alive(stubborn_pid),
        "process {stubborn_pid} outlived its pod"
    );
    assert!(
        polite_took < Duration::from_secs(2),
        "SIGTERM ends sleep at once: {polite_took:?}"
    );
    assert!(
        stubborn_took >= Duration::from_millis(1900),
        "a process ignoring SIGTERM gets its grace period: {stubborn_took:?}"
    );
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_by_sigkill_reports_exit_code_137() {
    let (client, ns, _agent) = setup("node-sigkill").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod("killed", json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}]})),
    )
    .await
    .unwrap();
    let p = wait_pod(&pods, "killed", Duration::from_secs(20), |p| {
        phase(p) == "Running"
    })
    .await;
    let pid = pid_of(&p);
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let p = wait_pod(&pods, "killed", Duration::from_secs(10), |p| {
        phase(p) == "Failed"
    })
    .await;
    let c = container(&p, 0);
    assert_eq!(c["state"]["terminated"]["exitCode"], 137);
    assert_eq!(c["state"]["terminated"]["signal"], 9);
    assert_eq!(c["state"]["terminated"]["reason"], "Error");
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_in_place_and_a_missing_secret_waits_until_it_exists() {
    let (client, ns, _agent) = setup("node-restart").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let marks = tempfile::tempdir().unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "restarts",
            json!({
                "restartPolicy": "OnFailure",
                "containers": [{
                    "name": "main", "image": "x",
                    "command": ["/bin/sh", "-c", "[ -e \"$M/once\" ] || { touch \"$M/once\"; exit 4; }"],
                    "env": [{"name": "M", "value": marks.path().to_str().unwrap()}],
                }],
            }),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "needs-secret",
            json!({
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "x",
                    "command": ["/bin/sh", "-c", "test \"$TOKEN\" = abc"],
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}],
                }],
            }),
        ),
    )
    .await
    .unwrap();

    let p = wait_pod(&pods, "restarts", Duration::from_secs(20), |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let c = container(&p, 0);
    assert_eq!(c["restartCount"], 1);
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 4);
    assert_eq!(c["state"]["terminated"]["exitCode"], 0);

    let p = wait_pod(&pods, "needs-secret", Duration::from_secs(20), |p| {
        container(p, 0)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(
        container(&p, 0)["state"]["waiting"]["message"],
        "secret \"later\" not found"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "later"}, "stringData": {"token": "abc"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let p = wait_pod(&pods, "needs-secret", Duration::from_secs(20), |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(phase(&p), "Succeeded", "{:?}", p.status);
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stays_ready_with_a_renewed_lease_and_its_processes_die_with_the_agent() {
    let (client, ns, agent) = setup("node-lease").await;
    let node_name = agent.node_name().to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&node_name).await.unwrap();
    let status = node.status.unwrap();
    let allocatable = status.allocatable.unwrap();
    assert!(allocatable.contains_key("cpu") && allocatable.contains_key("pods"));
    let addresses = status.addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod(
            "long",
            json!({"containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}]}),
        ),
    )
    .await
    .unwrap();
    let p = wait_pod(&pods, "long", Duration::from_secs(20), |p| {
        phase(p) == "Running"
    })
    .await;
    let pid = pid_of(&p);

    // The Lease, owned by the Node, renewed within a heartbeat (10 s).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = leases.get(&node_name).await.unwrap();
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(node_name.as_str()));
    let owner = &first.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", node_name.as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = leases.get(&node_name).await.unwrap();
        if renew(&now) != renew(&first) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Lease {node_name} not renewed in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let node = nodes.get(&node_name).await.unwrap();
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // Stopping the agent kills what it ran and deletes its Node.
    assert!(alive(pid));
    drop(agent);
    assert!(!alive(pid), "process {pid} outlived the agent");
    assert!(
        nodes.get_opt(&node_name).await.unwrap().is_none(),
        "Node {node_name} left behind"
    );
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let (client, ns, _agent) = setup("node-deadline").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod(
            "late",
            json!({
                "restartPolicy": "Never", "activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}],
            }),
        ),
    )
    .await
    .unwrap();
    let p = wait_pod(&pods, "late", Duration::from_secs(10), |p| {
        phase(p) == "Failed"
    })
    .await;
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(container(&p, 0)["state"]["terminated"]["exitCode"], 143);
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_runs_its_mapped_entrypoint_with_env_from_secrets_and_config_maps() {
    let opts = AgentOptions {
        images: vec![("*th-test-sh*".into(), "/bin/sh".into())],
        env: vec![("FROM_AGENT".into(), "base".into())],
        ..AgentOptions::default()
    };
    let (client, ns, agent) = setup_with("node-image", opts).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"}, "stringData": {"KEY": "k1", "OTHER": "o1"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "conf"}, "data": {"MODE": "fast"},
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut mapped = pod(
        "mapped",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "ghcr.io/example/th-test-sh:1",
                // No command: the image's entrypoint (/bin/sh here) runs with these args.
                "args": ["-c", "echo \"$P_KEY $P_OTHER $MODE $APP $NODE $FROM_AGENT $(MODE)\" > \"$TERM_LOG\""],
                "envFrom": [
                    {"secretRef": {"name": "creds"}, "prefix": "P_"},
                    {"configMapRef": {"name": "conf"}},
                    {"secretRef": {"name": "absent", "optional": true}},
                ],
                "env": [
                    {"name": "TERM_LOG", "value": "/dev/termination-log"},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
            }],
        }),
    );
    mapped.metadata.labels = Some([("app".to_string(), "demo".to_string())].into());
    pods.create(&PostParams::default(), &mapped).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "unmapped",
            json!({"containers": [{"name": "main", "image": "docker.io/library/busybox:1"}]}),
        ),
    )
    .await
    .unwrap();

    let p = wait_pod(&pods, "mapped", Duration::from_secs(20), |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(phase(&p), "Succeeded", "{:?}", p.status);
    assert_eq!(
        message(&p, 0),
        format!("k1 o1 fast demo {} base fast\n", agent.node_name())
    );
    let p = wait_pod(&pods, "unmapped", Duration::from_secs(20), |p| {
        container(p, 0)["state"]["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    let why = container(&p, 0)["state"]["waiting"]["message"].to_string();
    assert!(why.contains("docker.io/library/busybox:1"), "{why}");
    kube_support::delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failure_policy_fails_an_index_on_its_exit_code_without_retrying() {
    let (client, ns, _agent) = setup("node-policy").await;
    // The shape of the operator's worker Jobs: FailIndex on permanent exit codes, Ignore on
    // disruptions, replacements only for terminal pods.
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "policy"},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "backoffLimitPerIndex": 3, "maxFailedIndexes": 2, "podReplacementPolicy": "Failed",
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailIndex", "onExitCodes": {"containerName": "main", "operator": "In", "values": [64, 65]}},
            ]},
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "x",
                    "command": ["/bin/sh", "-c", "[ \"$JOB_COMPLETION_INDEX\" != 0 ] || exit 65"],
                }],
            }},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = job_finished(&jobs, "policy", "Failed", Duration::from_secs(30)).await;
    let status = done.status.unwrap();
    assert_eq!(status.failed_indexes.as_deref(), Some("0"));
    assert_eq!(status.completed_indexes.as_deref(), Some("1"));
    assert_eq!(status.failed, Some(1), "index 0 is not retried");
    let reason = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason);
    assert_eq!(reason.as_deref(), Some("FailedIndexes"));
    assert_eq!(job_pods(&client, &ns, "policy").await.len(), 2);
    kube_support::delete_namespace(&client, &ns).await;
}

/// `kubectl` (scripts/kube-cluster.sh's) as the admin of the test's control plane.
fn kubectl(args: &[&str]) -> std::process::Output {
    let kubectl = std::env::var("TH_TEST_KUBE_KUBECTL").expect(
        "TH_TEST_KUBE_KUBECTL is not set: scripts/test.sh exports the kubectl that \
         scripts/kube-cluster.sh builds",
    );
    std::process::Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kube_support::kubeconfig())
        .output()
        .expect("kubectl runs")
}

/// The apiserver's pods/log, as `kubectl logs` and every client read it, comes from the agent's
/// kubelet endpoint: the whole log, its tail, a byte limit, a follow that ends with the
/// container, the previous run of a restarted container, and a clear refusal of what the agent
/// cannot serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_are_served_through_the_apiserver_from_the_agents_kubelet_endpoint() {
    use futures::AsyncReadExt;
    use kube::api::LogParams;
    let (client, ns, agent) = setup("node-logs").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let node: Api<Node> = Api::all(client.clone());
    let port = node
        .get(agent.node_name())
        .await
        .unwrap()
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert_ne!(port, 10250, "the Node names the agent's own port");

    // Five lines and one on stderr at once; one more a second later, then it ends.
    let talker = pod(
        "talker",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "registry.example/never-pulled:1",
            "command": ["/bin/sh", "-c",
                "for i in 1 2 3 4 5; do echo \"line $i\"; done; echo 'err line' >&2; sleep 1.5; echo late"],
        }]}),
    );
    pods.create(&PostParams::default(), &talker).await.unwrap();
    wait_pod(&pods, "talker", Duration::from_secs(30), |_| {
        agent
            .container_log(&ns, "talker", "main")
            .contains("err line")
    })
    .await;

    // A follower from now on: everything so far, then "late", then the end when the container ends.
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut stream = pods.log_stream("talker", &follow).await.expect("follow");
    let followed = tokio::spawn(async move {
        let mut all = String::new();
        stream.read_to_string(&mut all).await.map(|_| all)
    });

    let out = kubectl(&["logs", "-n", &ns, "talker"]);
    assert!(
        out.status.success(),
        "kubectl logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\nline 4\nline 5\nerr line\n"
    );
    let tail = LogParams {
        tail_lines: Some(2),
        ..LogParams::default()
    };
    assert_eq!(
        pods.logs("talker", &tail).await.unwrap(),
        "line 5\nerr line\n"
    );
    let limit = LogParams {
        limit_bytes: Some(10),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("talker", &limit).await.unwrap(), "line 1\nlin");
    let both = LogParams {
        tail_lines: Some(3),
        limit_bytes: Some(7),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("talker", &both).await.unwrap(), "line 4\n");

    let all = tokio::time::timeout(Duration::from_secs(30), followed)
        .await
        .expect("the follow ends when the container does")
        .unwrap()
        .expect("reading the followed log");
    assert_eq!(
        all,
        "line 1\nline 2\nline 3\nline 4\nline 5\nerr line\nlate\n"
    );
    let done = wait_pod(&pods, "talker", Duration::from_secs(30), |p| {
        phase(p) == "Succeeded"
    })
    .await;
    assert_eq!(phase(&done), "Succeeded");
    let out = kubectl(&["logs", "-n", &ns, "talker", "--tail=1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");

    // What the agent cannot serve is refused, naming the option.
    let out = kubectl(&["logs", "-n", &ns, "talker", "--since=1h"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinceSeconds"), "{err}");

    // A restarted container: its log is this run's, `previous` the run before.
    let twice = pod(
        "twice",
        json!({"restartPolicy": "OnFailure", "containers": [{
            "name": "main", "image": "registry.example/never-pulled:1",
            "command": ["/bin/sh", "-c",
                "if [ -f marker ]; then echo second; else touch marker; echo first; exit 1; fi"],
        }]}),
    );
    pods.create(&PostParams::default(), &twice).await.unwrap();
    wait_pod(&pods, "twice", Duration::from_secs(30), |p| {
        phase(p) == "Succeeded"
    })
    .await;
    assert_eq!(
        pods.logs("twice", &LogParams::default()).await.unwrap(),
        "second\n"
    );
    let previous = LogParams {
        previous: true,
        ..LogParams::default()
    };
    assert_eq!(pods.logs("twice", &previous).await.unwrap(), "first\n");
    let err = pods.logs("talker", &previous).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("previous terminated container \"main\" in pod \"talker\" not found"),
        "{err}"
    );
    kube_support::delete_namespace(&client, &ns).await;
}
