//! The kubelet's sync loop, reduced: watch the pods bound to this node and give each a task
//! ([`crate::pod::supervise`]) that gets every newer view of it; tell the task when the pod is
//! gone; do the final delete of a finished pod that is being deleted.

use crate::Ctx;
use crate::pod::{self, Seen};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// How long the pods' tasks get to kill their processes when the agent stops.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

pub async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut events = watcher(api, config).boxed();
    // Pods with a task, by uid.
    let mut live: HashMap<String, watch::Sender<Seen>> = HashMap::new();
    // Pods whose task has ended: never started again.
    let mut ended: HashSet<String> = HashSet::new();
    // Pods already given their final delete.
    let mut deleted: HashSet<String> = HashSet::new();
    // The uids listed since the watch (re)started, until the list is complete.
    let mut listing: Option<HashSet<String>> = None;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
    let mut tasks = JoinSet::new();

    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if let (Some(l), Some(uid)) = (listing.as_mut(), p.metadata.uid.clone()) {
                        l.insert(uid);
                    }
                    on_pod(&ctx, p, &mut live, &ended, &mut deleted, &ended_tx, &shutdown, &mut tasks);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // What was not listed again was deleted while the watch was down.
                    if let Some(l) = listing.take() {
                        live.retain(|uid, tx| {
                            let keep = l.contains(uid);
                            if !keep {
                                let _ = tx.send(Seen::Gone);
                            }
                            keep
                        });
                    }
                }
                Some(Ok(watcher::Event::Apply(p))) => {
                    on_pod(&ctx, p, &mut live, &ended, &mut deleted, &ended_tx, &shutdown, &mut tasks);
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| live.remove(u)) {
                        let _ = tx.send(Seen::Gone);
                    }
                }
                Some(Err(e)) => warn!(error = %e, "watching this node's pods"),
                None => break,
            },
            Some(uid) = ended_rx.recv() => {
                live.remove(&uid);
                ended.insert(uid);
                while tasks.try_join_next().is_some() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    info!(pods = tasks.len(), "stopping the pods' processes");
    let _ = tokio::time::timeout(SHUTDOWN_BOUND, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
fn on_pod(
    ctx: &Arc<Ctx>,
    p: Pod,
    live: &mut HashMap<String, watch::Sender<Seen>>,
    ended: &HashSet<String>,
    deleted: &mut HashSet<String>,
    ended_tx: &mpsc::UnboundedSender<String>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    if let Some(tx) = live.get(&uid) {
        let _ = tx.send(Seen::Pod(Arc::new(p)));
        return;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded" | "Failed"));
    let deleting = p.metadata.deletion_timestamp.is_some();
    if !terminal && !ended.contains(&uid) {
        let (tx, rx) = watch::channel(Seen::Pod(Arc::new(p)));
        live.insert(uid.clone(), tx);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let ended_tx = ended_tx.clone();
        tasks.spawn(async move {
            pod::supervise(ctx, rx, shutdown).await;
            let _ = ended_tx.send(uid);
        });
    } else if deleting && deleted.insert(uid.clone()) {
        // Finished, and now deleted: nothing runs, only the final delete is left.
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        let label = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let name = p.name_any();
        tasks.spawn(async move { pod::final_delete(&api, &label, &name, &uid).await });
    }
}
