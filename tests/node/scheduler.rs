//! The scheduler's part: every pod without a node (and without scheduling gates) is bound to this
//! node through the `pods/binding` subresource, which also sets its `PodScheduled` condition.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::time::Duration;
use tracing::{info, warn};

/// Binds unscheduled pods in `namespaces` (all when empty) to `node` until the task is dropped.
pub async fn run(client: Client, node: String, namespaces: Vec<String>) {
    // The scheduler's own selector: unassigned and not finished.
    let config = watcher::Config::default()
        .fields("spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed");
    let apis: Vec<Api<Pod>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let streams = apis
        .into_iter()
        .map(|api| watcher(api, config.clone()).boxed());
    let mut events = futures::stream::select_all(streams);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                if schedulable(&pod) {
                    tokio::spawn(bind(client.clone(), node.clone(), pod));
                }
            }
            Ok(_) => {}
            // The watcher retries by itself; say so once per failure.
            Err(e) => warn!(error = %e, "watching unscheduled pods"),
        }
    }
}

fn schedulable(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.node_name.as_ref()).is_none()
        && spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_none_or(|g| g.is_empty())
}

async fn bind(client: Client, node: String, pod: Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        },
    };
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                info!(pod = %format!("{ns}/{name}"), node = %node, "bound");
                return;
            }
            // Already bound (a watch event seen twice) or gone: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return,
            Err(e) => {
                warn!(pod = %format!("{ns}/{name}"), attempt, error = %e, "binding failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
