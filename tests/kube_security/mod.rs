//! Issue 16 on the real control plane: what a ProfileJob's author must not get from the
//! operator. A worker pod gets only the storage keys of the job's credentials Secret; a Spark
//! Connect token is never shown in the status or events; a child object of the same name that
//! another owner holds is never taken as the job's own.

use super::{create_pj, pods_of, rt};
use crate::control_plane::*;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use truthound_e2e::*;

async fn create_secret(client: &kube::Client, ns: &str, name: &str, data: Value) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .expect("secret"),
        )
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}

fn component(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/component"))
        .cloned()
        .unwrap_or_default()
}

/// A credentials Secret holding the S3 keys and a database password and another token: the
/// worker pods and the merge pod get the two AWS keys, each by `secretKeyRef`, no `envFrom`, and
/// neither of the others; the run still succeeds against the S3 server (with no credentials
/// the workers could not write their partials). With `envFrom`, the assertions on it and on
/// DB_PASSWORD fail.
#[test]
fn worker_and_merge_pods_get_only_the_storage_keys_of_the_secret() {
    cluster();
    let bucket = new_bucket("kube-keys");
    put_parquet_dataset(&bucket, 2, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "keys").await;
        create_secret(
            &client,
            &ns,
            "lake",
            json!({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "DB_PASSWORD": "hunter2", "OTHER_TOKEN": "not-for-workers"}),
        )
        .await;
        // The merge runs in a pod too.
        let op = Operator::start_with(&ns, &cluster().operator, &[("TH_MERGE_IN_POD_TASKS", "1")]);
        let mut pj = profilejob("events", &bucket, json!({}));
        pj["spec"]["dataset"]["credentialsSecretRef"] = json!({"name": "lake"});
        create_pj(&client, &ns, pj).await;
        let done = wait_phase(&client, &op, "events", "Succeeded", 120).await;
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_eq!(profile["row_count"], 1000, "{:#}", done["status"]);

        let pods = pods_of(&client, &ns).await;
        let workers = pods.iter().filter(|p| component(p) == "worker").count();
        let merges = pods.iter().filter(|p| component(p) == "merge").count();
        assert!(
            workers >= 1 && merges == 1,
            "{workers} worker and {merges} merge pods"
        );
        for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let c = &pod.spec.as_ref().expect("pod spec").containers[0];
            assert_eq!(c.env_from, None, "{name}: envFrom");
            let env = c.env.clone().unwrap_or_default();
            let mut refs: Vec<(String, String, String)> = env
                .iter()
                .filter_map(|e| {
                    let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                    (r.name == "lake").then(|| (e.name.clone(), r.name.clone(), r.key.clone()))
                })
                .collect();
            refs.sort();
            assert_eq!(
                refs,
                [
                    (
                        "AWS_ACCESS_KEY_ID".into(),
                        "lake".into(),
                        "AWS_ACCESS_KEY_ID".into()
                    ),
                    (
                        "AWS_SECRET_ACCESS_KEY".into(),
                        "lake".into(),
                        "AWS_SECRET_ACCESS_KEY".into()
                    ),
                ],
                "{name}"
            );
            for absent in ["DB_PASSWORD", "OTHER_TOKEN"] {
                assert!(!env.iter().any(|e| e.name == absent), "{name}: {absent}");
            }
        }
        delete_namespace(&client, &ns).await;
    });
}

fn kubectl_text(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace's events as `kubectl get events -o yaml` prints them.
fn events_yaml(ns: &str) -> String {
    kubectl_text(&["get", "events", "-n", ns, "-o", "yaml"])
}

/// Waits until an event of `reason` about `name` is recorded.
async fn wait_event(ns: &str, name: &str, reason: &str) {
    eventually(
        &format!("a {reason} event of {name}"),
        std::time::Duration::from_secs(60),
        || async {
            let out = kubectl(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.name={name},reason={reason}"),
                "-o",
                "name",
            ]);
            (!out.stdout.is_empty()).then_some(())
        },
    )
    .await;
}

/// A Spark Connect token never reaches the status, conditions or events. Written in the spec
/// (`sc://127.0.0.1:1/;token=...`, nothing listening): the job is accepted with a TokenInSpec
/// warning, tries the cluster, and the token is in the object only where its author wrote it
/// (spec.backend.spark.connectUrl), shown as `;token=***` everywhere else. From tokenSecretRef:
/// it is nowhere at all; and a tokenSecretRef whose Secret is missing fails the job naming the
/// Secret. Before the redaction, status.backend.address and the Accepted and Submitted events
/// carried the token.
#[test]
fn a_spark_connect_token_is_never_shown() {
    cluster();
    let bucket = new_bucket("kube-token");
    put_parquet_dataset(&bucket, 1, 200);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "token").await;
        let op = Operator::start(&ns);

        let literal = profilejob(
            "literal",
            &bucket,
            json!({"backend": {"type": "spark",
                "spark": {"connectUrl": "sc://127.0.0.1:1/;token=s3cr3t-value"}}}),
        );
        create_pj(&client, &ns, literal).await;
        wait_event(&ns, "literal", "TokenInSpec").await;
        wait_event(&ns, "literal", "ClusterUnavailable").await;
        let yaml = kubectl_text(&["get", "profilejob", "literal", "-n", &ns, "-o", "yaml"]);
        assert_eq!(
            yaml.matches("s3cr3t-value").count(),
            1,
            "only the spec's connectUrl holds the token:\n{yaml}"
        );
        let mut pj = get_pj(&client, &ns, "literal").await;
        assert_eq!(
            pj["status"]["backend"]["address"], "sc://127.0.0.1:1/;token=***",
            "{:#}",
            pj["status"]
        );
        pj["spec"]["backend"]["spark"]
            .as_object_mut()
            .expect("spark")
            .remove("connectUrl");
        assert!(!pj.to_string().contains("s3cr3t-value"), "{pj:#}");
        let events = events_yaml(&ns);
        assert!(!events.contains("s3cr3t-value"), "{events}");
        assert!(events.contains(";token=***"), "{events}");
        assert!(
            events.contains("token in spec; use tokenSecretRef"),
            "{events}"
        );

        // From a Secret: the token is nowhere but in the Secret.
        create_secret(
            &client,
            &ns,
            "spark-token",
            json!({"token": "vault-s3cr3t"}),
        )
        .await;
        let from_secret = profilejob(
            "vault",
            &bucket,
            json!({"backend": {"type": "spark", "spark": {"connectUrl": "sc://127.0.0.1:1",
                "tokenSecretRef": {"name": "spark-token", "key": "token"}}}}),
        );
        create_pj(&client, &ns, from_secret).await;
        wait_event(&ns, "vault", "ClusterUnavailable").await;
        let yaml = kubectl_text(&["get", "profilejob", "-n", &ns, "-o", "yaml"]);
        assert!(!yaml.contains("vault-s3cr3t"), "{yaml}");
        let events = events_yaml(&ns);
        assert!(!events.contains("vault-s3cr3t"), "{events}");
        assert!(!events.contains("s3cr3t-value"), "{events}");
        assert!(!op.logs().contains("s3cr3t"), "{}", tail(&op.logs(), 40));

        // A tokenSecretRef to a Secret that does not exist: the job fails naming it.
        let missing = profilejob(
            "missing",
            &bucket,
            json!({"backend": {"type": "spark", "spark": {"connectUrl": "sc://127.0.0.1:1",
                "tokenSecretRef": {"name": "no-such-token", "key": "token"}}}}),
        );
        create_pj(&client, &ns, missing).await;
        let failed = wait_phase(&client, &op, "missing", "Failed", 60).await;
        let message = super::failed_message(&failed);
        assert!(
            message.contains("`no-such-token`") && message.contains("tokenSecretRef"),
            "{message}"
        );
        delete_namespace(&client, &ns).await;
    });
}

/// A Job named as the ProfileJob's worker Job would be (`events-w1`) but another owner's, and
/// failed, as a predecessor's (a ProfileJob deleted and created again before garbage collection
/// removed its children): the new job neither fails from that Job's failed index nor touches
/// it; it reports that it waits for it, and once the stale Job is deleted it runs and succeeds
/// with a worker Job of its own. Before the uid check, the failed Job was taken as the job's
/// (created "already exists") and failed it with TooManyFailedTasks.
#[test]
fn a_stale_child_of_the_same_name_is_waited_for_not_taken_as_ours() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, PropagationPolicy};
    cluster();
    let bucket = new_bucket("kube-stale");
    put_parquet_dataset(&bucket, 2, 500);
    rt().block_on(async {
        let client = admin().await;
        let (ns, _agent) = test_namespace(&client, "stale").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let owner = cms
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "previous-owner"}}))
                    .expect("config map"),
            )
            .await
            .expect("create the other owner");
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let stale: Job = serde_json::from_value(json!({
            "metadata": {"name": "events-w1", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "previous-owner",
                "uid": owner.metadata.uid, "controller": true}]},
            "spec": {
                "completionMode": "Indexed", "completions": 1, "parallelism": 1,
                "backoffLimitPerIndex": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{
                    "name": "worker", "image": WORKER_IMAGE, "args": ["run-task"]}]}},
            },
        }))
        .expect("job");
        let stale = jobs
            .create(&PostParams::default(), &stale)
            .await
            .expect("create the stale Job");
        eventually(
            "the stale Job failed",
            std::time::Duration::from_secs(60),
            || async {
                let j = jobs.get("events-w1").await.ok()?;
                j.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Failed" && c.status == "True")
                    .then_some(())
            },
        )
        .await;

        let op = Operator::start(&ns);
        create_pj(&client, &ns, profilejob("events", &bucket, json!({}))).await;
        let waiting = eventually(
            "the job waits for the stale Job",
            std::time::Duration::from_secs(60),
            || async {
                let pj = get_pj(&client, &ns, "events").await;
                let ready = pj["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")?
                    .clone();
                (ready["reason"] == "WaitingForPreviousChild").then_some(ready)
            },
        )
        .await;
        let message = waiting["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("waiting for the previous Job events-w1 to be deleted"),
            "{message}"
        );
        wait_event(&ns, "events", "WaitingForPreviousChild").await;
        // A few reconciles later (resync 2 s) it still waits, and the stale Job is as it was.
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        let pj = get_pj(&client, &ns, "events").await;
        assert_eq!(pj["status"]["phase"], "Pending", "{:#}", pj["status"]);
        let still = jobs.get("events-w1").await.expect("the stale Job stays");
        assert_eq!(still.metadata.uid, stale.metadata.uid);
        assert!(still.metadata.deletion_timestamp.is_none());
        assert_eq!(still.spec.and_then(|s| s.suspend), Some(false));

        // Garbage collection's part, done by hand: the job then runs on its own Job.
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        jobs.delete("events-w1", &dp)
            .await
            .expect("delete the stale Job");
        let done = wait_phase(&client, &op, "events", "Succeeded", 120).await;
        let profile: Value =
            serde_json::from_slice(&s3_get(&bucket, "profiles/events.json")).expect("profile");
        assert_eq!(profile["row_count"], 1000, "{:#}", done["status"]);
        let ours = jobs
            .get("events-w1")
            .await
            .expect("the job's own worker Job");
        assert_ne!(ours.metadata.uid, stale.metadata.uid);
        let uid = done["metadata"]["uid"].as_str().expect("uid");
        assert!(
            ours.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{:?}",
            ours.metadata.owner_references
        );
        delete_namespace(&client, &ns).await;
    });
}
