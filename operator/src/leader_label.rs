//! The label the leading replica puts on its own pod, `truthound.io/leader: "true"`, so that a
//! Service can select the leader alone.
//!
//! Workers report progress to the operator's memory ([`crate::progress`]), and only the leader's
//! memory is read by a reconciler; so with leader election the progress Service must reach the
//! leader and nobody else. Selecting it by this label (as Vault's `vault-active` and Patroni's
//! `role` labels do) keeps every replica ready: a standby answers `/readyz` like any healthy pod,
//! so rolling updates, `helm install --wait` and Argo CD's Deployment health all settle with more
//! than one replica.
//!
//! [`LeaderLabel::follow`] is level-triggered: it makes the label say what the election says
//! now, retries until the apiserver has it, and removes the label when the election ends. It
//! starts by removing it, because labels outlive containers: a replica that lost the lease and
//! was restarted would otherwise keep receiving reports meant for the new leader.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

/// The label's key. Its only value is `"true"`; a standby's pod does not carry it.
pub const LEADER_LABEL: &str = "truthound.io/leader";

/// The longest pause between attempts to write the label while they keep failing.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// Writes [`LEADER_LABEL`] on one pod: this replica's own.
#[derive(Clone)]
pub struct LeaderLabel {
    pods: Api<Pod>,
    namespace: String,
    pod: String,
}

impl LeaderLabel {
    /// The label of pod `namespace/pod` (this replica's `POD_NAMESPACE` and `POD_NAME`).
    pub fn new(client: kube::Client, namespace: &str, pod: &str) -> Self {
        LeaderLabel {
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
        }
    }

    /// Sets the label (`leading`) or removes it, with a JSON merge patch of the pod's labels:
    /// it touches nothing else, and removing an absent label is not an error.
    pub async fn set(&self, leading: bool) -> Result<(), kube::Error> {
        let value = if leading {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
        self.pods
            .patch(&self.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Keeps the label equal to `leadership` until its sender is dropped (the election ended),
    /// then removes it. A failed write is logged and retried after `retry`, doubling up to
    /// [`MAX_RETRY`] while it keeps failing (a missing permission is not cured by asking every
    /// 2 s): leading goes on without the label, only progress reports miss the leader until it
    /// is written.
    pub async fn follow(self, mut leadership: watch::Receiver<bool>, retry: Duration) {
        let mut written: Option<bool> = None;
        let mut pause = retry;
        loop {
            let leading = *leadership.borrow_and_update();
            if written != Some(leading) {
                match self.set(leading).await {
                    Ok(()) => {
                        tracing::info!(pod = %self.key(), leading, "leader label written");
                        written = Some(leading);
                        pause = retry;
                    }
                    Err(error) => tracing::warn!(
                        pod = %self.key(),
                        leading,
                        %error,
                        "cannot write the leader label (the operator needs patch on pods in its namespace); progress reports may miss the leader until it is written"
                    ),
                }
            }
            let ended = if written == Some(leading) {
                leadership.changed().await.is_err()
            } else {
                let ended = tokio::select! {
                    changed = leadership.changed() => changed.is_err(),
                    () = tokio::time::sleep(pause) => false,
                };
                pause = (pause * 2).min(MAX_RETRY.max(retry));
                ended
            };
            if ended {
                break;
            }
        }
        if written != Some(false)
            && let Err(error) = self.set(false).await
        {
            tracing::warn!(pod = %self.key(), %error, "cannot remove the leader label");
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    const POD_PATH: &str = "/api/v1/namespaces/ops/pods/op-7d9f-abcde";

    fn label() -> (LeaderLabel, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        (LeaderLabel::new(client, "ops", "op-7d9f-abcde"), handle)
    }

    /// Waits for the next request: a merge patch of the pod. Answers `code` and returns the
    /// label value written (`Null` when removed).
    async fn next_patch(api: &mut Handle, code: u16) -> Value {
        // Longer than the longest pause (MAX_RETRY), which paused-time tests reach.
        let (request, send) = tokio::time::timeout(Duration::from_secs(60), api.next_request())
            .await
            .expect("a request within 60 s")
            .expect("the client hung up");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), POD_PATH);
        assert_eq!(
            request.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.expect("body"))
                .expect("JSON");
        // Only the one label: a merge patch of anything else could undo someone's edit.
        let labels = body["metadata"]["labels"].as_object().expect("labels");
        assert_eq!(labels.len(), 1, "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        let answer = if code == 200 {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "op-7d9f-abcde", "namespace": "ops"}})
        } else {
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden",
                   "message": "pods \"op-7d9f-abcde\" is forbidden", "code": code})
        };
        send.send_response(
            Response::builder()
                .status(StatusCode::from_u16(code).expect("a status code"))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                .expect("a response"),
        );
        labels[LEADER_LABEL].clone()
    }

    #[tokio::test]
    async fn the_label_follows_leadership_and_is_removed_when_the_election_ends() {
        let (label, mut api) = label();
        let (tx, rx) = watch::channel(false);
        let following = tokio::spawn(label.follow(rx, Duration::from_millis(20)));
        // A label left by this pod's previous container is removed first.
        assert_eq!(next_patch(&mut api, 200).await, Value::Null);
        tx.send_replace(true);
        assert_eq!(next_patch(&mut api, 200).await, json!("true"));
        tx.send_replace(false);
        assert_eq!(next_patch(&mut api, 200).await, Value::Null);
        tx.send_replace(true);
        assert_eq!(next_patch(&mut api, 200).await, json!("true"));
        // The election ends while leading: the label goes with it.
        drop(tx);
        assert_eq!(next_patch(&mut api, 200).await, Value::Null);
        tokio::time::timeout(Duration::from_secs(5), following)
            .await
            .expect("follow returns once the label is removed")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_refused_write_is_retried_until_the_apiserver_has_it() {
        let (label, mut api) = label();
        let (tx, rx) = watch::channel(true);
        let following = tokio::spawn(label.follow(rx, Duration::from_millis(20)));
        assert_eq!(next_patch(&mut api, 403).await, json!("true"));
        assert_eq!(next_patch(&mut api, 500).await, json!("true"));
        assert_eq!(next_patch(&mut api, 200).await, json!("true"));
        // Written: nothing more until leadership changes.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), api.next_request())
                .await
                .is_err(),
            "a written label is not written again"
        );
        drop(tx);
        assert_eq!(next_patch(&mut api, 200).await, Value::Null);
        following.await.expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_writes_back_off_and_a_success_resets_the_pause() {
        let (label, mut api) = label();
        let (tx, rx) = watch::channel(true);
        let following = tokio::spawn(label.follow(rx, Duration::from_secs(2)));
        let mut at = Vec::new();
        for _ in 0..6 {
            assert_eq!(next_patch(&mut api, 403).await, json!("true"));
            at.push(tokio::time::Instant::now());
        }
        let pauses: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 30], "doubling up to MAX_RETRY");
        assert_eq!(next_patch(&mut api, 200).await, json!("true"));
        // Leadership lost, and the removal fails: the first retry is 2 s again.
        tx.send_replace(false);
        assert_eq!(next_patch(&mut api, 403).await, Value::Null);
        let failed = tokio::time::Instant::now();
        assert_eq!(next_patch(&mut api, 200).await, Value::Null);
        assert_eq!(failed.elapsed().as_secs(), 2);
        drop(tx);
        following.await.expect("no panic");
    }
}
