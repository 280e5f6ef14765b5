//! `th-worker run-task` as a worker pod runs it: a plan from `th plan`, one task, a partial out;
//! exit codes that say whether to retry.

use std::path::Path;
use std::process::{Command, Output};

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th-worker"))
        .args(args)
        .output()
        .expect("th-worker runs")
}

fn sample_plan(dir: &Path) -> std::path::PathBuf {
    // A plan as `th plan` writes it, made here with the library to keep this crate's tests
    // free of the CLI.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = rt.block_on(async {
        let ds = truthound_profile::dataset::discover(
            sample.to_str().unwrap(),
            None,
            &Default::default(),
        )
        .await
        .unwrap();
        truthound_profile::plan::plan(
            &ds,
            &truthound_profile::PlanRequest::new(truthound_profile::Strategy::RowBased, 3),
        )
        .unwrap()
    });
    let path = dir.join("plan.json");
    std::fs::write(&path, plan.to_json()).unwrap();
    path
}

#[test]
fn runs_each_task_and_the_partials_merge_to_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let mut merged: Option<truthound_profile::PartialProfile> = None;
    for t in 0..3 {
        let out = dir.path().join(format!("partials/{t}"));
        let o = worker(&[
            "run-task",
            "--plan",
            plan.to_str().unwrap(),
            "--task",
            &t.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let p =
            truthound_profile::PartialProfile::from_bytes(&std::fs::read(&out).unwrap(), "partial")
                .unwrap();
        match &mut merged {
            None => merged = Some(p),
            Some(m) => m.merge(&p).unwrap(),
        }
    }
    let merged = merged.unwrap();
    assert!(merged.missing_tasks().is_empty());
    assert_eq!(merged.row_count(), 3000);
}

#[test]
fn the_task_index_comes_from_an_indexed_job() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let out = dir.path().join("p2");
    let o = Command::new(env!("CARGO_BIN_EXE_th-worker"))
        .args([
            "run-task",
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = truthound_profile::PartialProfile::from_bytes(&std::fs::read(&out).unwrap(), "partial")
        .unwrap();
    assert_eq!(p.tasks.iter().map(|t| t.1).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let p = plan.to_str().unwrap();
    let out = dir.path().join("o").to_str().unwrap().to_string();
    // Usage error: 2.
    assert_eq!(worker(&["run-task"]).status.code(), Some(2));
    // A task the plan does not have: 64, retrying will not help.
    let o = worker(&["run-task", "--plan", p, "--task", "7", "--out", &out]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("task: 7 is not in plan"));
    // A plan that is not a plan: 64.
    std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
    let o = worker(&[
        "run-task",
        "--plan",
        dir.path().join("bad.json").to_str().unwrap(),
        "--task",
        "0",
        "--out",
        &out,
    ]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The data changed since the plan: bad data, 65, with the file named.
    let data = dir.path().join("data.parquet");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events/part-0.parquet"),
        &data,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = rt.block_on(async {
        let ds =
            truthound_profile::dataset::discover(data.to_str().unwrap(), None, &Default::default())
                .await
                .unwrap();
        truthound_profile::plan::plan(
            &ds,
            &truthound_profile::PlanRequest::new(truthound_profile::Strategy::RowBased, 1),
        )
        .unwrap()
    });
    std::fs::write(dir.path().join("p1.json"), plan.to_json()).unwrap();
    std::fs::write(&data, b"PAR1 truncated").unwrap();
    let o = worker(&[
        "run-task",
        "--plan",
        dir.path().join("p1.json").to_str().unwrap(),
        "--task",
        "0",
        "--out",
        &out,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(65), "{err}");
    assert!(
        err.contains("data.parquet: changed since the plan was made"),
        "{err}"
    );
    // Structured (JSON) logs on stderr carry the exit code.
    let json_line = err
        .lines()
        .find(|l| l.contains("\"exit_code\""))
        .expect("a log line");
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(v["fields"]["exit_code"], 65);
}

#[test]
fn a_plan_with_settings_the_sketches_reject_is_an_invalid_request_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    json["options"]["kll_k"] = 2.into();
    std::fs::write(&plan, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = dir.path().join("o");
    let o = worker(&[
        "run-task",
        "--plan",
        plan.to_str().unwrap(),
        "--task",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("kll_k must be 8..=65535"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A plan of a copy of the sample, so that a test can take the data away.
fn copied_sample_plan(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("events");
    std::fs::create_dir_all(&data).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    for f in std::fs::read_dir(&sample).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = rt.block_on(async {
        let ds =
            truthound_profile::dataset::discover(data.to_str().unwrap(), None, &Default::default())
                .await
                .unwrap();
        truthound_profile::plan::plan(
            &ds,
            &truthound_profile::PlanRequest::new(truthound_profile::Strategy::RowBased, 3),
        )
        .unwrap()
    });
    let path = dir.join("plan.json");
    std::fs::write(&path, plan.to_json()).unwrap();
    (path, data)
}

#[test]
fn a_task_whose_partial_is_present_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, data) = copied_sample_plan(dir.path());
    let p = plan.to_str().unwrap();
    let out = |t: u32| dir.path().join(format!("partials/{t}"));
    let run = |t: u32| {
        worker(&[
            "run-task",
            "--plan",
            p,
            "--task",
            &t.to_string(),
            "--out",
            out(t).to_str().unwrap(),
        ])
    };
    for t in [0, 1] {
        let o = run(t);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let first = std::fs::read(out(1)).unwrap();

    // The data is gone: only a task that is done can succeed, and it does, untouched.
    let moved = dir.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    let o = run(1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("partial already present"), "{err}");
    assert_eq!(std::fs::read(out(1)).unwrap(), first);

    // Another task's partial, or garbage, at OUT is replaced by running the task.
    std::fs::rename(&moved, &data).unwrap();
    std::fs::copy(out(0), out(1)).unwrap();
    let o = run(1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("partial already present"), "{err}");
    std::fs::write(out(2), b"not a partial").unwrap();
    let o = run(2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for t in [1, 2] {
        let part =
            truthound_profile::PartialProfile::from_bytes(&std::fs::read(out(t)).unwrap(), "p")
                .unwrap();
        assert_eq!(part.tasks.iter().map(|t| t.1).collect::<Vec<_>>(), [t]);
    }
}

#[test]
fn a_failure_is_written_to_the_termination_log() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let log = dir.path().join("termination-log");
    let o = Command::new(env!("CARGO_BIN_EXE_th-worker"))
        .args([
            "run-task",
            "--plan",
            plan.to_str().unwrap(),
            "--task",
            "7",
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ])
        .env("TH_TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.starts_with("exit_code=64 reason=Invalid: invalid task: 7 is not in plan"),
        "{message}"
    );
    // Kubernetes keeps 4 KiB: a long message is cut to fit.
    let long = (0..12).fold(dir.path().to_path_buf(), |p, i| {
        p.join(format!("{i}{}", "d".repeat(200)))
    });
    let o = Command::new(env!("CARGO_BIN_EXE_th-worker"))
        .args(["run-task", "--plan"])
        .arg(long.join("plan.json"))
        .args(["--task", "0", "--out", "/nonexistent/o"])
        .env("TH_TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.starts_with("exit_code=65 reason=BadData: "),
        "{message}"
    );
    assert!((4000..=4096).contains(&message.len()), "{}", message.len());
}

#[test]
fn incomplete_progress_settings_never_fail_a_task() {
    // As a pod whose token Secret is missing would run: endpoint set, token empty.
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let out = dir.path().join("p0");
    let o = Command::new(env!("CARGO_BIN_EXE_th-worker"))
        .args(["run-task", "--plan", plan.to_str().unwrap(), "--task", "0"])
        .arg("--out")
        .arg(&out)
        .env("TH_PROGRESS_ENDPOINT", "http://127.0.0.1:9")
        .env("TH_PROGRESS_TOKEN", "")
        .env("TH_JOB_UID", "job")
        .env("TH_HEARTBEAT_SECONDS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("not reporting progress"), "{err}");
    assert!(out.exists());
}

fn run_all_tasks(plan: &Path, work: &Path, tasks: u32) {
    for t in 0..tasks {
        let out = work.join(format!("partials/{t}"));
        let o = worker(&[
            "run-task",
            "--plan",
            plan.to_str().unwrap(),
            "--task",
            &t.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn merge_writes_the_profile_the_task_table_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let work = dir.path().join("work");
    run_all_tasks(&plan, &work, 3);
    let out = dir.path().join("profile.json");
    let o = worker(&[
        "merge",
        "--plan",
        plan.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--started-at",
        "2026-01-01T00:00:00Z",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let profile = json(&out);
    assert_eq!(profile["row_count"], 3000);
    assert_eq!(profile["partitioning"]["tasks_merged"], 3);
    // The duration runs from --started-at, long ago.
    assert!(profile["profile_duration_ms"].as_u64().unwrap() > 1_000_000);

    let summary = json(&work.join("merge.json"));
    assert_eq!(summary["rows"], 3000);
    assert_eq!(summary["tasksMerged"], 3);
    assert_eq!(summary["profileUri"], out.to_str().unwrap());
    let table = json(&work.join("tasks.json"));
    let states: Vec<&str> = table["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded"; 3]);

    // The same partials merged in the operator's way (the library, in task order) give the
    // same profile, but for the time it was made.
    let mut merged: Option<truthound_profile::PartialProfile> = None;
    for t in 0..3 {
        let p = truthound_profile::PartialProfile::from_bytes(
            &std::fs::read(work.join(format!("partials/{t}"))).unwrap(),
            "partial",
        )
        .unwrap();
        match &mut merged {
            None => merged = Some(p),
            Some(m) => m.merge(&p).unwrap(),
        }
    }
    let expected = truthound_profile::TableProfile::from_partial(
        &merged.unwrap(),
        0,
        false,
        truthound_profile::ProfileOptions::default().histogram_bins,
    );
    let mut expected: serde_json::Value = serde_json::from_slice(&expected.to_json()).unwrap();
    let mut got = profile.clone();
    for v in [&mut expected, &mut got] {
        v["profiled_at"] = serde_json::Value::Null;
        v["profile_duration_ms"] = serde_json::Value::Null;
    }
    assert_eq!(got, expected);
}

#[test]
fn merge_without_a_failed_task_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(dir.path());
    let work = dir.path().join("work");
    run_all_tasks(&plan, &work, 3);
    std::fs::remove_file(work.join("partials/1")).unwrap();
    let out = dir.path().join("profile.json");
    let merge = |missing: Option<&str>| {
        let mut args = vec![
            "merge",
            "--plan",
            plan.to_str().unwrap(),
            "--work",
            work.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(m) = missing {
            args.extend(["--missing", m]);
        }
        worker(&args)
    };

    // A partial that should be there and is not: bad data, the file named.
    let o = merge(None);
    assert_eq!(o.status.code(), Some(65));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("partials/1"), "{err}");
    assert!(!out.exists());

    // Tolerated as failed: merged without it, and said so.
    let o = merge(Some("1"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let profile = json(&out);
    assert_eq!(profile["partitioning"]["tasks_merged"], 2);
    assert_eq!(
        profile["partitioning"]["missing_tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json(&work.join("merge.json"))["missingTasks"],
        serde_json::json!([1])
    );
    assert_eq!(
        json(&work.join("tasks.json"))["tasks"][1]["state"],
        "failed"
    );

    // A bad --started-at is an invalid request.
    let o = worker(&[
        "merge",
        "--plan",
        plan.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--missing",
        "1",
        "--started-at",
        "yesterday",
    ]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--started-at"));
}
