//! Incremental runs through the real reconciler (against the mocked API server of `run.rs`):
//! with `spec.output.cacheUri`, a second ProfileJob over a dataset where some files changed runs
//! worker pods only for the tasks of new and changed files, reuses the cached partials of the
//! others, and writes the profile a single pass computes.

mod support;

use http::Method;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use support::*;
use truthound_operator::crd::Phase;
use truthound_operator::reconcile::{self, Context};

async fn drive(state: &Shared, ctx: &Arc<Context>, max: usize) {
    for _ in 0..max {
        let Some(pj) = current(state) else { return };
        if pj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_finished)
        {
            return;
        }
        reconcile::reconcile(Arc::new(pj), ctx.clone())
            .await
            .expect("reconcile");
        run_workers(state).await;
    }
}

/// File `n` of the dataset: 50 rows, ids `n*100 + shift ..`.
fn write_csv(dir: &Path, n: u32, shift: u32) {
    let mut text = String::from("id,name,x\n");
    for i in 0..50 {
        let id = n * 100 + shift + i;
        text.push_str(&format!("{id},n{},{}\n", id % 6, f64::from(id) / 8.0));
    }
    std::fs::write(dir.join(format!("part-{n:02}.csv")), text).expect("write");
}

/// One ProfileJob over `data` with the cache, run to its end (each its own output directory:
/// the tests' jobs share one uid, hence one work prefix beside the output): its final state and the
/// worker Jobs it created.
async fn run_job(data: &Path, out: &Path, cache: &Path) -> (Value, Vec<Job>, Vec<u32>) {
    let state: Shared = Arc::default();
    let spec = json!({
        "output": {"cacheUri": format!("file://{}/", cache.display())},
        "partitioning": {"strategy": "row_based", "partitions": 4},
    });
    state.lock().expect("state").pj = Some(profilejob(data, out, spec));
    let ctx = context(fake_api(state.clone()));
    drive(&state, &ctx, 12).await;
    let s = state.lock().expect("state");
    let jobs = s
        .requests
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.starts_with("/apis/batch/v1/"))
        .map(|r| serde_json::from_value(r.body.clone()).expect("Job"))
        .collect();
    (s.pj.clone().expect("job"), jobs, s.tasks_run.clone())
}

fn col<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no column {name}"))
}

#[tokio::test]
async fn a_second_job_runs_pods_only_for_new_and_changed_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("lake/events");
    std::fs::create_dir_all(&data).expect("mkdir");
    for n in 0..20 {
        write_csv(&data, n, 0);
    }
    let cache = dir.path().join("lake/cache");

    let out1 = dir.path().join("lake/profiles/day1/profile.json");
    let (pj, jobs, ran) = run_job(&data, &out1, &cache).await;
    assert_eq!(pj["status"]["phase"], "Succeeded", "{:#}", pj["status"]);
    assert_eq!(ran.len(), 20, "the first run runs every task");
    assert_eq!(pj["status"]["tasks"]["total"], 20);
    assert!(pj["status"]["tasks"].get("reused").is_none());
    assert_eq!(jobs[0].spec.as_ref().and_then(|s| s.completions), Some(20));
    // The merge stored the partials of the tasks that ran.
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 20);

    // Two files changed, one added, one deleted.
    write_csv(&data, 3, 1000);
    write_csv(&data, 11, 2000);
    write_csv(&data, 20, 0);
    std::fs::remove_file(data.join("part-05.csv")).expect("rm");

    let out2 = dir.path().join("lake/profiles/day2/profile.json");
    let (pj, jobs, ran) = run_job(&data, &out2, &cache).await;
    let status = &pj["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    // Files sorted: part-00..04 (tasks 0-4), 06..19 (5-18), 20 (19); 03 and 11 changed.
    assert_eq!(
        ran,
        vec![3, 10, 19],
        "only the new and changed files' tasks run"
    );
    assert_eq!(status["tasks"]["reused"], 17, "{status:#}");
    assert_eq!(status["tasks"]["succeeded"], 20);
    assert_eq!(status["tasks"]["total"], 20);
    let worker = &jobs[0];
    let spec = worker.spec.as_ref().expect("spec");
    assert_eq!(spec.completions, Some(3), "three pods, not twenty");
    assert_eq!(
        worker
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("truthound.io/tasks"))
            .map(String::as_str),
        Some("3,10,19")
    );
    let profile: Value =
        serde_json::from_slice(&std::fs::read(&out2).expect("profile")).expect("json");
    assert_eq!(profile["partitioning"]["tasks_reused"], 17);
    assert_eq!(profile["partitioning"]["tasks_merged"], 20);
    let single = single_pass(&data).await;
    assert_eq!(profile["row_count"], 1000);
    assert_eq!(profile["row_count"], single["row_count"]);
    assert_eq!(
        profile["duplicate_row_count"],
        single["duplicate_row_count"]
    );
    for c in ["id", "name", "x"] {
        for k in ["null_count", "distinct_count", "min", "max", "top_values"] {
            assert_eq!(col(&profile, c)[k], col(&single, c)[k], "{c}.{k}");
        }
    }
    // The three new partials joined the cache; nothing was deleted from it.
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 23);

    // Nothing changed: no worker Job at all, the profile merged from the cache alone.
    let out3 = dir.path().join("lake/profiles/day3/profile.json");
    let (pj, jobs, ran) = run_job(&data, &out3, &cache).await;
    assert_eq!(pj["status"]["phase"], "Succeeded", "{:#}", pj["status"]);
    assert!(ran.is_empty() && jobs.is_empty(), "{ran:?}");
    assert_eq!(pj["status"]["tasks"]["reused"], 20);
    assert_eq!(pj["status"]["result"]["rows"], 1000);
}
