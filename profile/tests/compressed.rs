//! Compressed CSV and NDJSON files (`.gz`, `.zst`, `.bz2`): profiled exactly like the plain file,
//! one task each whatever the target task size, the compression recorded in the plan, found by
//! the file's first bytes when its name does not say, and a truncated file or a compressed
//! Parquet file refused with an error naming it.

use std::io::Write;

use serde_json::Value;
use truthound_profile::dataset::{Compression, CsvOptions, StorageOptions, discover_with};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{Plan, PlanRequest, Strategy, TableProfile, plan};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn try_plan(uri: &str, strategy: Strategy, partitions: u32, target: u64) -> Result<Plan, String> {
    rt().block_on(async {
        let ds = discover_with(
            uri,
            None,
            &StorageOptions::default(),
            &CsvOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut req = PlanRequest::new(strategy, partitions);
        req.target_task_bytes = Some(target);
        let p = plan::plan_with_scan(&ds, &req)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Plan::from_json(&p.to_json(), "plan").unwrap())
    })
}

fn make_plan(uri: &str, strategy: Strategy, partitions: u32, target: u64) -> Plan {
    try_plan(uri, strategy, partitions, target).unwrap()
}

fn try_run(plan: &Plan) -> Result<TableProfile, String> {
    rt().block_on(async {
        let store = plan_store(plan).unwrap();
        let mut merged: Option<truthound_profile::PartialProfile> = None;
        for t in &plan.tasks {
            let p = run_task(plan, t.id, store.clone(), &no_progress())
                .await
                .map_err(|e| e.to_string())?;
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.merge(&p).unwrap(),
            }
        }
        Ok(TableProfile::from_partial(&merged.unwrap(), 0, false, 20))
    })
}

fn run(plan: &Plan) -> TableProfile {
    try_run(plan).unwrap()
}

/// The exact figures of a profile: everything but timings, partitioning and sketch bounds.
fn exact(p: &TableProfile) -> Value {
    let cols: Vec<Value> = p
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "rows": c.row_count, "nulls": c.null_count,
                "distinct": c.distinct_count, "min": c.min, "max": c.max, "sum": c.sum,
                "top": c.top_values.iter().map(|v| (v.value.clone(), v.count)).collect::<Vec<_>>(),
                "empty": c.empty_string_count, "min_len": c.min_length, "max_len": c.max_length,
            })
        })
        .collect();
    serde_json::json!({"rows": p.row_count, "duplicates": p.duplicate_row_count, "columns": cols})
}

/// Equal exact figures, and distinct counts within 2%: a distinct count past the exact limit is
/// an HLL estimate, which a union of several tasks' sketches (out-of-order, estimated without
/// HIP) gives slightly differently from one task's sketch.
fn assert_same_up_to_sketches(got: &Value, want: &Value, what: &str) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        let mut distinct = Vec::new();
        for c in v["columns"].as_array_mut().unwrap() {
            distinct.push(c["distinct"].as_f64());
            c.as_object_mut().unwrap().remove("distinct");
        }
        (v, distinct)
    };
    let ((g, gd), (w, wd)) = (strip(got), strip(want));
    assert_eq!(g, w, "{what}");
    for (a, b) in gd.iter().zip(&wd) {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 0.02 * b, "{what}: {a} vs {b}"),
            _ => assert_eq!(a, b, "{what}"),
        }
    }
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn ext(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gz",
        Compression::Zstd => "zst",
        Compression::Bzip2 => "bz2",
    }
}

/// 60,000 rows with quoted line breaks, nulls, repeated and long values: about 3 MB of text,
/// more than the 1 MiB head read when listing, so the head of a compressed file is a prefix.
fn csv_text() -> Vec<u8> {
    csv_rows(0..60_000)
}

const HEADER: &str = "id,name,score,note\n";

fn csv_rows(rows: std::ops::Range<u32>) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in rows {
        let note = match i % 5 {
            0 => "\"two\nlines\"".to_string(),
            1 => String::new(),
            _ => format!("n{}", i % 1013),
        };
        let score = if i % 7 == 0 {
            String::new()
        } else {
            format!("{}", f64::from(i) / 3.0)
        };
        s.push_str(&format!("{i},name-{},{score},{note}\n", i % 97));
    }
    s.into_bytes()
}

fn ndjson_text() -> Vec<u8> {
    (0..30_000u32)
        .map(|i| {
            let v = if i % 11 == 0 {
                "null".to_string()
            } else {
                (i % 500).to_string()
            };
            format!("{{\"k\":{i},\"v\":{v},\"s\":\"s{}\"}}\n", i % 31)
        })
        .collect::<String>()
        .into_bytes()
}

#[test]
fn compressed_csv_and_ndjson_profile_exactly_like_the_plain_files_one_task_each() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("t.csv", csv_text()), ("t.ndjson", ndjson_text())] {
        let plain = dir.path().join(name);
        std::fs::write(&plain, &text).unwrap();
        let plain_uri = plain.to_str().unwrap();
        // The plain file is cut into byte ranges at this target: the compressed one cannot be.
        let plain_plan = make_plan(plain_uri, Strategy::RowBased, 8, 256 << 10);
        assert!(plain_plan.tasks.len() >= 3, "{name}: the plain file is cut");
        let cut = exact(&run(&plain_plan));
        let want = exact(&run(&make_plan(plain_uri, Strategy::RowBased, 1, 0)));
        assert_same_up_to_sketches(&cut, &want, name);
        for c in Compression::ALL {
            let packed = dir.path().join(format!("{name}.{}", ext(c)));
            std::fs::write(&packed, compress(c, &text)).unwrap();
            let uri = packed.to_str().unwrap();
            let p = make_plan(uri, Strategy::RowBased, 8, 256 << 10);
            assert_eq!(
                p.tasks.len(),
                1,
                "{name}.{c}: one task for a compressed file"
            );
            assert_eq!(p.files[0].compression, Some(c), "{name}.{c}: in the plan");
            assert!(p.tasks[0].reads.iter().all(|r| r.bytes.is_none()));
            assert_eq!(p.dataset.schema, plain_plan.dataset.schema, "{name}.{c}");
            assert_eq!(exact(&run(&p)), want, "{name}.{c}");
            // column_based reads the file once per column group, each decompressing it.
            let cols = make_plan(uri, Strategy::ColumnBased, 2, 0);
            assert_eq!(exact(&run(&cols)), want, "{name}.{c} column_based");
        }
    }
}

#[test]
fn a_folder_of_mixed_plain_and_compressed_files_is_one_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_text();
    let (a, b) = (csv_rows(0..25_000), csv_rows(25_000..60_000));
    let single = dir.path().join("single");
    std::fs::create_dir(&single).unwrap();
    std::fs::write(single.join("all.csv"), &text).unwrap();
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::write(mixed.join("a.csv"), &a).unwrap();
    std::fs::write(mixed.join("b.csv.zst"), compress(Compression::Zstd, &b)).unwrap();
    let want = exact(&run(&make_plan(
        single.to_str().unwrap(),
        Strategy::RowBased,
        1,
        0,
    )));
    let p = make_plan(mixed.to_str().unwrap(), Strategy::RowBased, 4, 64 << 10);
    let compressions: Vec<_> = p.files.iter().map(|f| f.compression).collect();
    assert_eq!(compressions, vec![None, Some(Compression::Zstd)]);
    assert!(p.tasks.len() > 2, "the plain file is still cut");
    assert_same_up_to_sketches(&exact(&run(&p)), &want, "mixed");
}

#[test]
fn a_compressed_file_whose_name_does_not_say_is_found_by_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_text();
    let plain = dir.path().join("plain.csv");
    std::fs::write(&plain, &text).unwrap();
    let want = exact(&run(&make_plan(
        plain.to_str().unwrap(),
        Strategy::RowBased,
        1,
        0,
    )));
    for c in Compression::ALL {
        let path = dir.path().join(format!("export-{c}.csv"));
        std::fs::write(&path, compress(c, &text)).unwrap();
        let p = make_plan(path.to_str().unwrap(), Strategy::RowBased, 4, 64 << 10);
        assert_eq!(p.files[0].compression, Some(c));
        assert_eq!(p.tasks.len(), 1, "{c}");
        assert_eq!(exact(&run(&p)), want, "{c}");
    }
}

#[test]
fn a_truncated_compressed_file_fails_its_task_naming_the_file_and_the_compression() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_text();
    for c in Compression::ALL {
        let mut packed = compress(c, &text);
        packed.truncate(packed.len() * 3 / 4);
        let path = dir.path().join(format!("cut.csv.{}", ext(c)));
        std::fs::write(&path, &packed).unwrap();
        let uri = path.to_str().unwrap();
        let p = make_plan(uri, Strategy::RowBased, 1, 0);
        let e = try_run(&p).unwrap_err();
        assert!(e.contains("cut.csv") && e.contains(c.name()), "{c}: {e}");
    }
    // Not compressed at all, under a compressed name: the error says what was expected.
    let path = dir.path().join("fake.csv.gz");
    std::fs::write(&path, &text).unwrap();
    let e = try_plan(path.to_str().unwrap(), Strategy::RowBased, 1, 0).unwrap_err();
    assert!(e.contains("fake.csv.gz") && e.contains("gzip"), "{e}");
}

#[test]
fn a_compressed_parquet_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet.gz");
    std::fs::write(&path, compress(Compression::Gzip, b"PAR1 not really")).unwrap();
    let e = try_plan(path.to_str().unwrap(), Strategy::RowBased, 1, 0).unwrap_err();
    assert!(
        e.contains("t.parquet.gz") && e.contains("compressed") && e.contains("decompress"),
        "{e}"
    );
}
