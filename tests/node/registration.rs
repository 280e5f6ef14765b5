//! The Node this agent is, and its heartbeats: the Node's status (Ready, capacity, addresses,
//! the kubelet endpoint's port)
//! applied at start and every [`HEARTBEAT`], and its Lease in `kube-node-lease` renewed as often,
//! so the node-lifecycle controller (when it runs) never finds it NotReady.

use crate::status::{IP, now, now_micro};
use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::time::Duration;
use tracing::{info, warn};

pub const FIELD_MANAGER: &str = "th-test-node";
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Four heartbeats, as the kubelet's default lease (40 s at a 10 s renewal).
const LEASE_SECONDS: i32 = 40;

#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

/// Creates or takes over the Node `name` and writes its status and Lease once; returns the time
/// it became Ready (the conditions' transition time).
pub async fn register(
    client: &Client,
    name: &str,
    capacity: &Capacity,
    port: u16,
) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                "node.kubernetes.io/th-test-node": "true",
            },
        },
        "spec": {},
    });
    nodes
        .patch(name, &pp, &Patch::Apply(&node))
        .await
        .with_context(|| format!("registering Node {name}"))?;
    let since = now();
    heartbeat(client, name, capacity, port, &since).await?;
    info!(node = name, "node registered and Ready");
    Ok(since)
}

/// Renews the status and Lease every [`HEARTBEAT`] until the task is dropped; a failed renewal
/// is logged and tried again at the next beat.
pub async fn keep_alive(
    client: Client,
    name: String,
    capacity: Capacity,
    port: u16,
    since: String,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&client, &name, &capacity, port, &since).await {
            warn!(node = %name, error = %format!("{e:#}"), "heartbeat failed");
        }
    }
}

async fn heartbeat(
    client: &Client,
    name: &str,
    capacity: &Capacity,
    port: u16,
    since: &str,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let node = nodes
        .patch_status(
            name,
            &pp,
            &Patch::Apply(&node_status(name, capacity, port, since)),
        )
        .await
        .with_context(|| format!("writing the status of Node {name}"))?;
    let uid = node.metadata.uid.unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            // As the kubelet's: the Lease goes with its Node.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        },
    });
    leases
        .patch(name, &pp, &Patch::Apply(&lease))
        .await
        .with_context(|| format!("renewing Lease kube-node-lease/{name}"))?;
    Ok(())
}

fn node_status(name: &str, capacity: &Capacity, port: u16, since: &str) -> Value {
    let beat = now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": beat,
            "lastTransitionTime": since,
        })
    };
    let resources = json!({
        "cpu": capacity.cpu,
        "memory": capacity.memory,
        "pods": capacity.pods,
        "ephemeral-storage": "100Gi",
    });
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "th-test-node is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": IP},
                {"type": "Hostname", "address": name},
            ],
            // The log endpoint (crate::endpoint): the apiserver dials the InternalIP (with
            // scripts/kube-cluster.sh's --kubelet-preferred-address-types) at this port.
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": std::process::id().to_string(),
                "kernelVersion": "",
                "osImage": "th-test-node",
                "containerRuntimeVersion": "th-test-node://0.1",
                "kubeletVersion": "v1.36.0-th-test-node",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        },
    })
}

/// Deletes the Node (and so, through its owner reference, its Lease): pods bound to it are then
/// the pod garbage collector's.
pub async fn deregister(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(name, &Default::default()).await {
        Ok(_) => info!(node = name, "node deleted"),
        Err(e) => warn!(node = name, error = %e, "deleting the node failed"),
    }
}
