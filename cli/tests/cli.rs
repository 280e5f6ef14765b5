//! `th` as a user runs it: profiles of every format, and bad input that must end in a clear
//! error naming the thing at fault, a meaningful exit code, and no panic.

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn th(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th"))
        .args(args)
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .output()
        .expect("th runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `th` expecting failure with `code`, and returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = th(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "th {args:?}\nstderr: {err}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn batch(ids: &[i64]) -> RecordBatch {
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.to_vec()))),
        (
            "name",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| format!("n{}", i % 3))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "x",
            Arc::new(Float64Array::from(
                ids.iter().map(|i| *i as f64 / 2.0).collect::<Vec<_>>(),
            )),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

fn write_parquet(path: &Path, b: &RecordBatch) {
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), b.schema(), None).unwrap();
    w.write(b).unwrap();
    w.close().unwrap();
}

fn profile_json(args: &[&str]) -> Value {
    let mut all = vec!["profile"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = th(&all);
    assert!(out.status.success(), "th {all:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn col<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample")
}

#[test]
fn every_format_gives_the_same_profile() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(&(0..500).collect::<Vec<_>>());
    write_parquet(&dir.path().join("d.parquet"), &b);
    let mut csv = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::fs::File::create(dir.path().join("d.csv")).unwrap());
    csv.write(&b).unwrap();
    drop(csv);
    let mut json = arrow::json::LineDelimitedWriter::new(
        std::fs::File::create(dir.path().join("d.ndjson")).unwrap(),
    );
    json.write(&b).unwrap();
    json.finish().unwrap();
    let mut ipc = arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(dir.path().join("d.arrow")).unwrap(),
        &b.schema(),
    )
    .unwrap();
    ipc.write(&b).unwrap();
    ipc.finish().unwrap();
    let reference = profile_json(&[dir.path().join("d.parquet").to_str().unwrap()]);
    for f in ["d.csv", "d.ndjson", "d.arrow"] {
        let p = profile_json(&[dir.path().join(f).to_str().unwrap()]);
        assert_eq!(p["row_count"], 500, "{f}");
        for c in ["id", "name", "x"] {
            for field in [
                "null_count",
                "distinct_count",
                "min",
                "max",
                "sum",
                "top_values",
            ] {
                assert_eq!(
                    col(&p, c)[field],
                    col(&reference, c)[field],
                    "{f}: {c}.{field}"
                );
            }
            // Moments are exact; quantiles come from a randomized KLL sketch and may differ
            // within its bounds from run to run.
            for field in ["mean", "std", "skewness", "kurtosis", "min", "max"] {
                assert_eq!(
                    col(&p, c)["distribution"][field],
                    col(&reference, c)["distribution"][field],
                    "{f}: {c}.{field}"
                );
            }
        }
    }
}

#[test]
fn profiles_the_bundled_sample_with_every_strategy() {
    let sample = sample().join("events");
    let reference = profile_json(&[sample.to_str().unwrap(), "--partitions", "1"]);
    assert_eq!(reference["row_count"], 3000);
    assert_eq!(reference["duplicate_row_count"], 12);
    assert_eq!(col(&reference, "email")["inferred_type"], "email");
    assert_eq!(col(&reference, "device_id")["inferred_type"], "uuid");
    assert_eq!(col(&reference, "note")["inferred_type"], "empty");
    assert_eq!(col(&reference, "plan")["is_constant"], true);
    for args in [
        vec!["--strategy", "row_based", "--partitions", "5"],
        vec!["--strategy", "column_based", "--partitions", "4"],
        vec![
            "--strategy",
            "hybrid",
            "--row-partitions",
            "3",
            "--column-partitions",
            "2",
        ],
        vec![
            "--strategy",
            "hash",
            "--hash-column",
            "country",
            "--partitions",
            "3",
        ],
        vec!["--distributed", "--backend", "local", "--workers", "4"],
    ] {
        let mut all = vec![sample.to_str().unwrap()];
        all.extend(args.iter().copied());
        let p = profile_json(&all);
        assert_eq!(p["row_count"], 3000, "{args:?}");
        assert_eq!(p["duplicate_row_count"], 12, "{args:?}");
        for c in reference["columns"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            for field in [
                "null_count",
                "distinct_count",
                "min",
                "max",
                "sum",
                "top_values",
                "detected_patterns",
                "empty_string_count",
            ] {
                assert_eq!(col(&p, name)[field], c[field], "{args:?}: {name}.{field}");
            }
        }
    }
}

#[test]
fn summary_and_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("nested/profile.json");
    let out = th(&[
        "profile",
        sample().join("events.csv").to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1,000 rows × 15 columns"), "{text}");
    assert!(
        text.contains("country") && text.contains("categorical"),
        "{text}"
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(written["schema_version"], "1.0");
    assert_eq!(written["row_count"], 1000);
}

#[test]
fn a_profile_written_to_a_file_has_its_event_log_beside_it() {
    use truthound_profile::events::{EventKind, from_jsonl};
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("profile.json");
    let out = th(&[
        "profile",
        sample().join("events").to_str().unwrap(),
        "--partitions",
        "3",
        "--quiet",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(dir.path().join("profile.json.events.jsonl")).expect("the log");
    let log = from_jsonl(&bytes, "log").expect("every line is an event");
    let plan = log.first().expect("lines");
    assert_eq!(plan.event, EventKind::Planned);
    let tasks = plan.tasks.expect("planned tasks");
    assert!(tasks >= 2, "{log:#?}");
    for kind in [EventKind::TaskStarted, EventKind::TaskFinished] {
        let mut seen: Vec<u32> = log
            .iter()
            .filter(|e| e.event == kind)
            .filter_map(|e| e.task)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..tasks).collect::<Vec<_>>(), "{kind:?}: {log:#?}");
    }
    let rows: u64 = log
        .iter()
        .filter(|e| e.event == EventKind::TaskFinished)
        .filter_map(|e| e.rows)
        .sum();
    let last = log.last().expect("lines");
    assert_eq!(last.event, EventKind::MergeFinished);
    assert_eq!(last.rows, Some(rows), "the tasks' rows are the profile's");
    assert!(log.windows(2).all(|w| w[0].time <= w[1].time), "{log:#?}");
    assert!(log.iter().all(|e| e.source == "th" && e.v == 1));
}

#[test]
fn schema_events_prints_the_published_event_log_schema() {
    let out = th(&["schema", "--events"]);
    assert!(out.status.success());
    let published = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/events.schema.json"),
    )
    .expect("schema/events.schema.json is committed");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        published,
        "regenerate with: th schema --events > schema/events.schema.json"
    );
}

#[test]
fn merge_of_kept_states_equals_the_profile_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_parquet(&a, &batch(&(0..300).collect::<Vec<_>>()));
    write_parquet(&b, &batch(&(300..1000).collect::<Vec<_>>()));
    let (pa, pb) = (dir.path().join("pa.json"), dir.path().join("pb.json"));
    for (data, out) in [(&a, &pa), (&b, &pb)] {
        let o = th(&[
            "profile",
            data.to_str().unwrap(),
            "--keep-state",
            "-q",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let merged = th(&["merge", pa.to_str().unwrap(), pb.to_str().unwrap()]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    let merged: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let whole = profile_json(&[dir.path().join("*.parquet").to_str().unwrap()]);
    assert_eq!(merged["row_count"], 1000);
    assert_eq!(merged["sources"].as_array().unwrap().len(), 2);
    for c in ["id", "name", "x"] {
        for field in [
            "null_count",
            "distinct_count",
            "min",
            "max",
            "sum",
            "top_values",
        ] {
            assert_eq!(col(&merged, c)[field], col(&whole, c)[field], "{c}.{field}");
        }
    }
    for c in ["id", "x"] {
        let (m, w) = (
            &col(&merged, c)["distribution"],
            &col(&whole, c)["distribution"],
        );
        for f in ["mean", "std"] {
            let (x, y) = (m[f].as_f64().unwrap(), w[f].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                "{c}.{f}: {x} vs {y}"
            );
        }
    }
    // Merging a profile with itself would count its rows twice.
    let err = fails(&["merge", pa.to_str().unwrap(), pa.to_str().unwrap()], 64);
    assert!(err.contains("twice"), "{err}");
    // A profile written without state cannot be merged, and says how to fix that.
    let plain = dir.path().join("plain.json");
    assert!(
        th(&[
            "profile",
            a.to_str().unwrap(),
            "-q",
            "-o",
            plain.to_str().unwrap()
        ])
        .status
        .success()
    );
    let err = fails(&["merge", plain.to_str().unwrap(), pb.to_str().unwrap()], 1);
    assert!(err.contains("--keep-state"), "{err}");
}

#[test]
fn missing_path() {
    let err = fails(&["profile", "/nonexistent/dir/data.parquet"], 65);
    assert!(
        err.contains("/nonexistent/dir/data.parquet: not found"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.parquet");
    std::fs::write(&f, b"").unwrap();
    let err = fails(&["profile", f.to_str().unwrap()], 65);
    assert!(
        err.contains(&format!("{}: file is empty", f.display())),
        "{err}"
    );
    let c = dir.path().join("empty.csv");
    std::fs::write(&c, b"").unwrap();
    let err = fails(&["profile", c.to_str().unwrap()], 65);
    assert!(err.contains("empty.csv"), "{err}");
}

#[test]
fn corrupt_parquet_footer() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.parquet");
    write_parquet(&f, &batch(&[1, 2, 3]));
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]); // footer length past the file
    std::fs::write(&f, &bytes).unwrap();
    let err = fails(&["profile", f.to_str().unwrap()], 65);
    assert!(
        err.contains(&format!("{}: not a readable Parquet file", f.display())),
        "{err}"
    );
    bytes[n - 4..].copy_from_slice(b"XXXX"); // no magic at all
    std::fs::write(&f, &bytes).unwrap();
    let err = fails(&["profile", f.to_str().unwrap()], 65);
    assert!(err.contains("broken.parquet"), "{err}");
}

#[test]
fn schema_mismatch_names_both_files_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("a.parquet"), &batch(&[1, 2]));
    let other = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["y"])) as ArrayRef),
        ("x", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&dir.path().join("b.parquet"), &other);
    let err = fails(&["profile", dir.path().to_str().unwrap()], 65);
    assert!(err.contains("column `id`"), "{err}");
    assert!(
        err.contains("a.parquet") && err.contains("b.parquet"),
        "{err}"
    );
    assert!(err.contains("Int64") && err.contains("Utf8"), "{err}");
}

#[test]
fn csv_row_with_the_wrong_field_count() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.csv");
    std::fs::write(&f, "a,b,c\n1,2,3\n4,5\n6,7,8\n").unwrap();
    // Caught while the schema is inferred from the head of the file…
    let err = fails(&["profile", f.to_str().unwrap()], 65);
    assert!(err.contains("bad.csv"), "{err}");
    assert!(
        err.contains("Expected 3 records, found 2 records at line 3"),
        "{err}"
    );
    // …and past the head, while the rows are decoded.
    let mut text = String::from("a,b,c\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i},{i},{i}\n"));
    }
    text.push_str("1,2\n");
    std::fs::write(&f, text).unwrap();
    let err = fails(&["profile", f.to_str().unwrap()], 65);
    assert!(err.contains("bad.csv"), "{err}");
    assert!(err.contains("expected 3 got 2"), "{err}");
}

#[test]
fn invalid_requests() {
    let s = sample().join("events");
    let s = s.to_str().unwrap();
    let err = fails(&["profile", s, "--strategy", "hash"], 64);
    assert!(err.contains("--hash-column"), "{err}");
    let err = fails(&["profile", s, "--columns", "id,nope"], 64);
    assert!(err.contains("`nope` is not in the dataset"), "{err}");
    let err = fails(&["profile", s, "--partitions", "0"], 64);
    assert!(err.contains("partitions"), "{err}");
    let err = fails(&["profile", "ftp://host/x.csv"], 64);
    assert!(err.contains("unsupported scheme `ftp`"), "{err}");
}

#[test]
fn sample_flags_profile_the_same_rows_in_every_plan() {
    let s = sample().join("events");
    let s = s.to_str().unwrap();
    let one = profile_json(&[
        s,
        "--sample",
        "0.5",
        "--sample-seed",
        "3",
        "--partitions",
        "1",
    ]);
    assert_eq!(
        one["sampling"],
        serde_json::json!({"fraction": 0.5, "seed": 3, "rows_scanned": 3000})
    );
    let rows = one["row_count"].as_u64().unwrap();
    assert!((1400..=1600).contains(&rows), "{rows}");
    for args in [
        vec!["--sample", "50%", "--sample-seed", "3", "--partitions", "7"],
        vec![
            "--sample",
            "0.5",
            "--sample-seed",
            "3",
            "--strategy",
            "column_based",
        ],
        vec![
            "--sample",
            "0.5",
            "--sample-seed",
            "3",
            "--strategy",
            "hash",
            "--hash-column",
            "country",
        ],
    ] {
        let mut all = vec![s];
        all.extend(args.iter().copied());
        let p = profile_json(&all);
        assert_eq!(p["sampling"], one["sampling"], "{args:?}");
        assert_eq!(p["row_count"], one["row_count"], "{args:?}");
        for field in ["null_count", "sum", "min", "max"] {
            assert_eq!(
                col(&p, "id")[field],
                col(&one, "id")[field],
                "{args:?}: {field}"
            );
        }
    }
    let other = profile_json(&[s, "--sample", "0.5", "--sample-seed", "4"]);
    assert_ne!(col(&other, "id")["sum"], col(&one, "id")["sum"]);
    assert!(
        profile_json(&[s, "--sample", "1"])
            .get("sampling")
            .is_none()
    );

    // The summary says so.
    let out = th(&["profile", s, "--sample", "10%"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sampled 10% (seed 0): "), "{text}");
    assert!(text.contains(" of 3,000 rows"), "{text}");

    // `th plan` writes the sampling into the plan; --sample-rows becomes a fraction.
    let out = th(&["plan", s, "--sample", "0.25", "--sample-seed", "9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["options"]["sampling"],
        serde_json::json!({"fraction": 0.25, "seed": 9})
    );
    let out = th(&["plan", s, "--sample-rows", "300"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["options"]["sampling"],
        serde_json::json!({"fraction": 0.1, "seed": 0})
    );
}

#[test]
fn bad_sample_flags_are_refused() {
    let s = sample().join("events");
    let s = s.to_str().unwrap();
    for bad in ["0", "1.5", "-0.1", "NaN", "inf", "0%", "150%"] {
        let err = fails(&["profile", s, &format!("--sample={bad}")], 64);
        assert!(
            err.contains("fraction must be more than 0 and at most 1"),
            "{bad}: {err}"
        );
    }
    let err = fails(&["profile", s, "--sample", "half"], 2);
    assert!(err.contains("not a number"), "{err}");
    let err = fails(&["profile", s, "--sample", "0.1", "--sample-rows", "10"], 2);
    assert!(err.contains("--sample-rows"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::fs::File::create(&csv).unwrap());
    w.write(&batch(&[1, 2, 3])).unwrap();
    drop(w);
    let err = fails(
        &["profile", csv.to_str().unwrap(), "--sample-rows", "2"],
        64,
    );
    assert!(
        err.contains("Parquet") && err.contains("--sample 0.1"),
        "{err}"
    );
}

#[test]
fn the_spark_backend_needs_a_spark_connect_url() {
    // Spark, Dask and Ray run against real clusters in tests/spark.rs, dask.rs and ray.rs.
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_th"));
        c.args(["profile", "x.parquet"])
            .args(args)
            .env_remove("SPARK_CONNECT_URL")
            .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--backend", "spark"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--spark-connect sc://HOST:15002"), "{err}");
    let (code, err) = run(&[], &[("TRUTHOUND_DISTRIBUTED_BACKEND", "spark")]);
    assert_eq!(code, Some(64), "{err}");
    // The ancestor's --master: a Spark Connect URL is taken, a spark:// master is explained.
    let (code, err) = run(&["--backend", "spark", "--master", "spark://m:7077"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("Spark master URL")
            && err.contains("start-connect-server.sh --master spark://m:7077"),
        "{err}"
    );
    let (code, err) = run(&["--backend", "spark", "--master", "local[*]"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("Spark Connect") && err.contains("sc://HOST:15002"),
        "{err}"
    );
    let (code, err) = run(
        &["--backend", "spark", "--spark-connect", "http://x:1"],
        &[],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("must start with sc://"), "{err}");
}

#[test]
fn the_ray_backend_needs_a_dashboard_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.csv");
    std::fs::write(&file, "a\n1\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_th"))
            .args(["profile", file.to_str().unwrap(), "--backend", "ray"])
            .args(extra)
            .env_remove("RAY_ADDRESS")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--ray-address"), "{err}");
    // A Ray client address (the ancestor's) is taken for its head's dashboard at Ray's default
    // port; nothing answers there, and the error says which address to give instead. (127.0.0.2:
    // the test run's Ray head may hold 127.0.0.1:8265.)
    let (code, err) = run(&["--ray-address", "ray://127.0.0.2:10001"]);
    assert_eq!(code, Some(75), "{err}");
    assert!(
        err.contains("http://127.0.0.2:8265")
            && err.contains("ray://127.0.0.2:10001")
            && err.contains("--dashboard-port"),
        "{err}"
    );
}

#[test]
fn schema_command_prints_the_published_schema() {
    let out = th(&["schema"]);
    assert!(out.status.success());
    let published = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/profile.schema.json"),
    )
    .expect("schema/profile.schema.json is committed");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        published,
        "regenerate with: th schema > schema/profile.schema.json"
    );
}

#[test]
fn auto_chooses_by_the_listed_size_and_says_why() {
    // The bundled sample is well under 10 GB: in-process, whichever clusters are named (a
    // named cluster that does not even answer is never contacted).
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    for extra in [
        &[][..],
        &[
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--ray-address",
            "http://127.0.0.1:1",
        ][..],
    ] {
        let mut args = vec![
            "profile",
            sample.to_str().unwrap(),
            "--backend",
            "auto",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = th(&args);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("auto: the dataset is") && err.contains("under 10 GB: the local backend"),
            "{err}"
        );
        let p: Value = serde_json::from_slice(&out.stdout).expect("the profile");
        assert_eq!(p["row_count"], 3000);
    }
    // TRUTHOUND_DISTRIBUTED_BACKEND=auto is the same choice.
    let out = Command::new(env!("CARGO_BIN_EXE_th"))
        .args(["profile", sample.to_str().unwrap(), "--json"])
        .env("TRUTHOUND_DISTRIBUTED_BACKEND", "auto")
        .output()
        .expect("th runs");
    assert!(out.status.success());
    assert!(stderr(&out).contains("auto: the dataset is"));
    // A dataset that is not there is named, as for every backend.
    let err = fails(&["profile", "/nonexistent/d/", "--backend", "auto"], 65);
    assert!(err.contains("/nonexistent/d"), "{err}");
}

#[test]
fn csv_dialects_and_encodings_through_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    // A European export: `;`-separated, decimal commas, Latin-1, a comment line.
    let f = dir.path().join("export.csv");
    let text =
        "# Export 2024-05-01; Zürich\nid;ville;montant\n1;Zürich;2,5\n2;Genève;3\n3;Zürich;NA\n";
    let latin1: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    std::fs::write(&f, &latin1).unwrap();
    let path = f.to_str().unwrap();
    let err = fails(&["profile", path], 65);
    assert!(
        err.contains("export.csv: line 1, column 23: byte 0xFC is not valid utf-8"),
        "{err}"
    );
    assert!(err.contains("--encoding"), "{err}");

    let p = profile_json(&[path, "--encoding", "latin1", "--null", "NA"]);
    assert_eq!(p["row_count"], 3);
    assert_eq!(col(&p, "id")["sum"], 6);
    assert_eq!(col(&p, "ville")["top_values"][0]["value"], "Zürich");
    assert_eq!(col(&p, "ville")["top_values"][0]["count"], 2);
    assert_eq!(col(&p, "montant")["null_count"], 1);

    // The plan records the dialect, sniffed and given alike.
    let out = th(&["plan", path, "--encoding", "latin1", "--null", "NA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &plan["dataset"]["csv"];
    assert_eq!(d["delimiter"], ";");
    assert_eq!(d["comment"], "#");
    assert_eq!(d["header"], true);
    assert_eq!(d["encoding"], "latin1");
    assert_eq!(d["null_tokens"], serde_json::json!(["NA"]));

    // No header, a given delimiter, several files read alike.
    let g = dir.path().join("pipes");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("a.csv"), "x|1\ny,z|2\n").unwrap();
    std::fs::write(g.join("b.csv"), "w|3\n").unwrap();
    let p = profile_json(&[
        g.to_str().unwrap(),
        "--delimiter",
        "|",
        "--header",
        "false",
        "--partitions",
        "2",
    ]);
    assert_eq!(p["row_count"], 3);
    assert_eq!(col(&p, "column_2")["sum"], 6);
    assert_eq!(col(&p, "column_1")["min"], "w");

    // Bad settings name their flag.
    let err = fails(&["profile", path, "--delimiter", ";;"], 64);
    assert!(
        err.contains("--delimiter") && err.contains("not one character"),
        "{err}"
    );
    let err = fails(&["profile", path, "--encoding", "ebcdic"], 64);
    assert!(err.contains("ebcdic"), "{err}");
    let err = fails(&["profile", path, "--delimiter", "none"], 64);
    assert!(err.contains("--delimiter"), "{err}");
    let events = sample().join("events");
    let err = fails(
        &["profile", events.to_str().unwrap(), "--delimiter", ";"],
        64,
    );
    assert!(err.contains("for CSV files"), "{err}");
}

#[test]
fn a_gzipped_csv_is_one_task_said_in_the_plan_and_profiles_like_the_plain_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,note\n");
    for i in 0..2000 {
        text.push_str(&format!("{i},\"n{}\nline, {i}\"\n", i % 7));
    }
    let plain = dir.path().join("one.csv");
    std::fs::write(&plain, &text).unwrap();
    let packed = dir.path().join("one.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(&packed, gz.finish().unwrap()).unwrap();
    let path = packed.to_str().unwrap();
    let out = th(&[
        "plan",
        path,
        "--partitions",
        "8",
        "--target-task-bytes",
        "500",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["files"][0]["compression"], "gzip", "{plan}");
    let got = profile_json(&[path, "--partitions", "8", "--target-task-bytes", "500"]);
    let want = profile_json(&[plain.to_str().unwrap(), "--target-task-bytes", "0"]);
    assert_eq!(got["row_count"], 2000);
    for c in 0..2 {
        for k in [
            "null_count",
            "distinct_count",
            "min",
            "max",
            "sum",
            "top_values",
        ] {
            assert_eq!(
                got["columns"][c][k], want["columns"][c][k],
                "column {c} {k}"
            );
        }
    }
}

#[test]
fn target_task_bytes_cuts_one_csv_into_tasks_with_the_same_profile() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one.csv");
    let mut text = String::from("id,note\n");
    for i in 0..200 {
        text.push_str(&format!("{i},\"n{}\nline, {i}\"\n", i % 7));
    }
    std::fs::write(&f, text).unwrap();
    let path = f.to_str().unwrap();
    let out = th(&[
        "plan",
        path,
        "--partitions",
        "8",
        "--target-task-bytes",
        "500",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 8);
    assert!(
        tasks.iter().all(|t| t["reads"][0]["bytes"].is_array()),
        "{plan}"
    );
    let cut = profile_json(&[path, "--partitions", "8", "--target-task-bytes", "500"]);
    let whole = profile_json(&[path, "--target-task-bytes", "0"]);
    assert_eq!(cut["row_count"], 200);
    assert_eq!(
        cut["partitioning"]["tasks_merged"], 8,
        "{}",
        cut["partitioning"]
    );
    for c in ["id", "note"] {
        for k in [
            "null_count",
            "distinct_count",
            "min",
            "max",
            "sum",
            "top_values",
        ] {
            assert_eq!(col(&cut, c)[k], col(&whole, c)[k], "{c}.{k}");
        }
    }
}

/// One big Parquet file of a single row group (the common export): `--partitions 10` cuts it
/// into 10 row ranges by the default target, and profiles it exactly as one task does.
#[test]
fn partitions_cut_one_parquet_row_group_into_tasks_with_the_same_profile() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one-group.parquet");
    let n = 700_000i64;
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from_iter_values(0..n))),
        (
            "x",
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 11 != 0).then_some((i * 37 % 1000) as f64 / 8.0)),
            )),
        ),
    ];
    let b = RecordBatch::try_from_iter(cols).unwrap();
    // Plain 8-byte values, no dictionary: about 11 MB in one row group, over the 1 MiB a task
    // the default target keeps to.
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(n as usize))
        .set_dictionary_enabled(false)
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&f).unwrap(), b.schema(), Some(props)).unwrap();
    w.write(&b).unwrap();
    assert_eq!(w.close().unwrap().num_row_groups(), 1);
    let path = f.to_str().unwrap();
    let out = th(&["plan", path, "--partitions", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 10);
    let mut next = 0;
    for t in tasks {
        let rows = t["reads"][0]["rows"].as_array().expect("a row range");
        let (a, b) = (rows[0].as_u64().unwrap(), rows[1].as_u64().unwrap());
        assert_eq!(a, next, "{t}");
        assert_eq!(t["rows"], b - a);
        assert_eq!(t["reads"][0]["row_groups"], serde_json::json!([0]));
        next = b;
    }
    assert_eq!(next, n as u64);
    let cut = profile_json(&[path, "--partitions", "10"]);
    let one = profile_json(&[path, "--partitions", "1"]);
    assert_eq!(
        cut["partitioning"]["tasks_merged"], 10,
        "{}",
        cut["partitioning"]
    );
    assert_eq!(
        one["partitioning"]["tasks_merged"], 1,
        "{}",
        one["partitioning"]
    );
    assert_eq!(cut["row_count"], n);
    assert_eq!(cut["duplicate_row_count"], one["duplicate_row_count"]);
    // `id`'s 700,000 distinct values are past the exact limit, so its distinct count and top
    // values are sketched (a merge of sketches estimates apart from one sketch); `x`'s 1,000
    // are exact.
    for (c, keys) in [
        ("id", &["null_count", "min", "max", "sum", "mean"][..]),
        (
            "x",
            &[
                "null_count",
                "distinct_count",
                "min",
                "max",
                "sum",
                "mean",
                "top_values",
            ][..],
        ),
    ] {
        for k in keys {
            assert_eq!(col(&cut, c)[k], col(&one, c)[k], "{c}.{k}");
        }
    }
}

/// Hostile input through `th`: a crafted partial and a record that never ends fail with exit 65,
/// naming the file and the limit, instead of aborting or buffering the whole file.
#[test]
fn hostile_partials_and_endless_records_fail_naming_the_file_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_parquet(&a, &batch(&(0..60).collect::<Vec<_>>()));
    write_parquet(&b, &batch(&(60..120).collect::<Vec<_>>()));
    let kept = |data: &Path, out: &Path| {
        let o = th(&[
            "profile",
            data.to_str().unwrap(),
            "--keep-state",
            "--top-k",
            "7",
            "--exact-distinct-limit",
            "100",
            "-q",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let (pa, pb) = (dir.path().join("pa.json"), dir.path().join("pb.json"));
    kept(&a, &pa);
    kept(&b, &pb);
    // The state of `pa` as a partial, its frequent-items map size (1024, varint 80 08, between
    // hll_lg_k 14 and top_k 7) raised to 2^40: the merge would allocate a table of 2^41 slots
    // when the exact maps (60 + 60 values, limit 100) overflow.
    let profile: truthound_profile::TableProfile =
        serde_json::from_slice(&std::fs::read(&pa).unwrap()).unwrap();
    let mut bytes = profile.state().unwrap().unwrap().to_bytes();
    let (from, to) = (
        [14u8, 0x80, 0x08, 7],
        [14u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 7],
    );
    let mut i = 0;
    let mut edited = 0;
    while i + from.len() <= bytes.len() {
        if bytes[i..i + from.len()] == from {
            bytes.splice(i..i + from.len(), to);
            edited += 1;
        }
        i += 1;
    }
    assert!(edited >= 2, "every value-counted column: {edited}");
    let crafted = dir.path().join("crafted.partial");
    std::fs::write(&crafted, bytes).unwrap();
    let err = fails(
        &["merge", crafted.to_str().unwrap(), pb.to_str().unwrap()],
        65,
    );
    assert!(err.contains("crafted.partial"), "{err}");
    assert!(
        err.contains("frequent-items map size 1099511627776; the limit is 1048576"),
        "{err}"
    );

    // A quote never closed: the record runs to the end of the file.
    let f = dir.path().join("open-quote.csv");
    let mut text = b"a,b\n1,x\n2,\"".to_vec();
    text.resize(text.len() + (4 << 20), b'x');
    std::fs::write(&f, text).unwrap();
    let path = f.to_str().unwrap();
    let err = fails(
        &[
            "profile",
            path,
            "--header",
            "true",
            "--quote",
            "\"",
            "--max-record-bytes",
            "1048576",
        ],
        65,
    );
    assert!(err.contains("open-quote.csv"), "{err}");
    assert!(err.contains("CSV record 2"), "{err}");
    assert!(err.contains("the limit is 1 MiB"), "{err}");
    // A limit below 1 KiB would refuse real records: it is refused itself.
    let err = fails(&["profile", path, "--max-record-bytes", "100"], 64);
    assert!(err.contains("max_record_bytes must be"), "{err}");
}
