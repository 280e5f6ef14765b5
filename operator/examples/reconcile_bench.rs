//! How long the reconciler takes, without a cluster: N new ProfileJobs reconciled once each
//! (validate, write the status, record the event, list the dataset and write the plan), and the
//! periodic reconcile of one job with many tasks running.
//!
//!   cargo run --release -p truthound-operator --example reconcile_bench -- [JOBS] [TASKS]
//!
//! The API server is kube-rs's mocked service answering at once, so the figures are the
//! operator's own cost (plus the local file system for the plan), not the network's.

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use truthound_operator::ProfileJob;
use truthound_operator::decide::{self, Observed, PlanSummary, Settings, WorkersObserved};
use truthound_operator::reconcile::{self, Config, Context};

fn fake_api() -> Client {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if parts.uri.path().ends_with("/status") {
                // Server-side apply answers with the whole object.
                body["metadata"] = json!({"name": "x", "namespace": "bench"});
                body["spec"] =
                    json!({"dataset": {"uri": "file:///x"}, "output": {"uri": "file:///y"}});
            }
            let response = Response::builder()
                .status(if parts.method == http::Method::POST {
                    201
                } else {
                    200
                })
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            send.send_response(response);
        }
    });
    Client::new(service, "bench")
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let tasks: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/sample/events")
        .canonicalize()?;
    let out = tempfile::tempdir()?;

    let client = fake_api();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "truthound-operator".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        Settings::default(),
        Config::default(),
        recorder,
    ));

    let mut times = Vec::with_capacity(jobs);
    let t0 = Instant::now();
    for i in 0..jobs {
        let pj: ProfileJob = serde_json::from_value(json!({
            "apiVersion": "truthound.io/v1alpha1",
            "kind": "ProfileJob",
            "metadata": {"name": format!("job-{i}"), "namespace": "bench",
                         "uid": format!("00000000-0000-4000-8000-{i:012}"), "generation": 1},
            "spec": {
                "dataset": {"uri": format!("file://{}/", data.display())},
                "output": {"uri": format!("file://{}/p{i}/profile.json", out.path().display())},
                "partitioning": {"partitions": 3}
            }
        }))?;
        let t = Instant::now();
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .map_err(|e| anyhow::anyhow!("reconcile: {e}"))?;
        times.push(t.elapsed());
    }
    let total = t0.elapsed();
    times.sort();
    println!(
        "{jobs} new ProfileJobs reconciled once (accept, status, event, plan of 3 Parquet files): \
         {:.2}s in all, {:.2} ms each (p50 {:.2} ms, p99 {:.2} ms)",
        total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / jobs as f64,
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
    );

    // One running job with many tasks: the decision and the size of its status.
    let mut pj: ProfileJob = serde_json::from_value(json!({
        "apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJob",
        "metadata": {"name": "big", "namespace": "bench", "uid": "big", "generation": 1},
        "spec": {"dataset": {"uri": "s3://lake/big/"}, "output": {"uri": "s3://lake/big.json"}}
    }))?;
    let first = decide::decide(
        &Observed::job(time::OffsetDateTime::now_utc(), &pj),
        &Settings::default(),
    );
    pj.status = Some(first.status);
    let plan = PlanSummary {
        id: "p".into(),
        uri: "s3://lake/.truthound/big/plan".into(),
        task_rows: vec![1_000_000; tasks as usize],
        bytes: 0,
        columns: 4,
        exact_limit: 10_000,
        reused: Default::default(),
    };
    let workers = WorkersObserved {
        name: "big-w1".into(),
        active: 1000,
        completed: (0..tasks).step_by(2).collect(),
        ..WorkersObserved::default()
    };
    // The second reconcile creates the workers: the job is Running from here on.
    let second = decide::decide(
        &Observed {
            plan: Some(plan.clone()),
            ..Observed::job(time::OffsetDateTime::now_utc(), &pj)
        },
        &Settings::default(),
    );
    pj.status = Some(second.status);
    let rounds = 20;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        let d = decide::decide(
            &Observed {
                plan: Some(plan.clone()),
                workers: Some(workers.clone()),
                ..Observed::job(time::OffsetDateTime::now_utc(), &pj)
            },
            &Settings::default(),
        );
        bytes = serde_json::to_vec(&d.status)?.len();
    }
    println!(
        "a running job of {tasks} tasks (every other one done): decision {:.1} ms, status {} bytes",
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds),
        bytes
    );
    Ok(())
}
