//! Splitting inside files: CSV and NDJSON files cut into byte ranges profile to exactly the
//! profile of one pass over the whole file, on adversarial files (quoted line breaks, CRLF, a
//! byte-order mark, a header, a last line without a line break, records longer than a range,
//! comment lines), for many range sizes.

use serde_json::Value;
use truthound_profile::dataset::{CsvOptions, StorageOptions, discover_with};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{Plan, PlanRequest, Strategy, TableProfile, plan};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn make_plan(uri: &str, csv: &CsvOptions, strategy: Strategy, target: u64) -> Plan {
    rt().block_on(async {
        let ds = discover_with(uri, None, &StorageOptions::default(), csv)
            .await
            .unwrap();
        let mut req = PlanRequest::new(strategy, 64);
        req.target_task_bytes = Some(target);
        let p = plan::plan_with_scan(&ds, &req).await.unwrap();
        Plan::from_json(&p.to_json(), "plan").unwrap()
    })
}

fn run(plan: &Plan) -> TableProfile {
    rt().block_on(async {
        let store = plan_store(plan).unwrap();
        let mut merged: Option<truthound_profile::PartialProfile> = None;
        for t in &plan.tasks {
            let p = run_task(plan, t.id, store.clone(), &no_progress())
                .await
                .unwrap();
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.merge(&p).unwrap(),
            }
        }
        TableProfile::from_partial(&merged.unwrap(), 0, false, 20)
    })
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

fn ranged_tasks(plan: &Plan) -> usize {
    plan.tasks
        .iter()
        .filter(|t| t.reads.iter().any(|r| r.bytes.is_some()))
        .count()
}

/// Profiles `bytes` whole and cut into ranges of many sizes; every cut profile must equal the
/// whole one, and `expect_rows` rows must be read.
fn check_splits(name: &str, bytes: &[u8], csv: &CsvOptions, expect_rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let uri = path.to_str().unwrap();
    let whole_plan = make_plan(uri, csv, Strategy::RowBased, 0);
    assert_eq!(whole_plan.tasks.len(), 1);
    let whole = exact(&run(&whole_plan));
    assert_eq!(whole["rows"], expect_rows, "{name}: {whole}");
    for target in [1u64, 2, 3, 5, 7, 11, 16, 29, 64, 100, 333] {
        for strategy in [Strategy::RowBased, Strategy::Hybrid] {
            let plan = make_plan(uri, csv, strategy, target);
            if (bytes.len() as u64) > target * 2 {
                assert!(
                    ranged_tasks(&plan) > 1,
                    "{name}: target {target} gave {} tasks",
                    plan.tasks.len()
                );
            }
            let cut = exact(&run(&plan));
            assert_eq!(cut, whole, "{name}, {strategy}, ranges of {target} bytes");
        }
    }
}

#[test]
fn quoted_csv_with_every_hazard() {
    let mut text = String::from("\u{feff}id,note,amount\r\n");
    text.push_str("1,\"first\nline, with comma\",2.5\r\n");
    text.push_str("2,plain,3\n");
    text.push_str("3,\"quote \"\"inside\"\"\r\nand CRLF\",\n");
    text.push_str(&format!("4,\"{}\",7\n", "long\n".repeat(40))); // longer than most ranges
    text.push_str("5,,8\n");
    text.push_str("6,\"\n\n\",9\n");
    text.push_str("7,last without newline,10");
    check_splits("hazards.csv", text.as_bytes(), &CsvOptions::default(), 7);
}

#[test]
fn semicolon_csv_with_comments_and_a_sniffed_dialect() {
    let mut text = String::from("# export\na;b\n");
    for i in 0..40 {
        text.push_str(&format!("{i};\"v{}\n{i}\"\n", i % 7));
        if i % 9 == 0 {
            text.push_str("# a comment with a \" quote\n");
        }
    }
    check_splits("semi.csv", text.as_bytes(), &CsvOptions::default(), 40);
}

#[test]
fn unquoted_csv_is_cut_without_a_scan() {
    let asked = CsvOptions {
        quote: Some(None),
        ..CsvOptions::default()
    };
    let mut text = String::from("k,v\r\n");
    for i in 0..50 {
        text.push_str(&format!("k{},{}\r\n", i % 5, i * 3));
    }
    text.push_str("end,1");
    check_splits("plain.csv", text.as_bytes(), &asked, 51);
}

#[test]
fn ndjson_is_cut_at_lines() {
    let mut text = String::from("\u{feff}");
    for i in 0..40 {
        // A JSON string holds no raw line break: every \n ends a record.
        text.push_str(&format!(
            "{{\"id\": {i}, \"s\": \"a\\nb {}\", \"x\": {}}}\n",
            i % 4,
            i as f64 / 3.0
        ));
    }
    text.push_str(&format!(
        "{{\"id\": 99, \"s\": \"{}\", \"x\": 1}}",
        "y".repeat(500)
    ));
    check_splits("rows.ndjson", text.as_bytes(), &CsvOptions::default(), 41);
}

#[test]
fn utf16_files_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = "a,b\n1,2\n3,4\n5,6\n";
    let bytes: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let path = dir.path().join("u16.csv");
    std::fs::write(&path, bytes).unwrap();
    let plan = make_plan(
        path.to_str().unwrap(),
        &CsvOptions::default(),
        Strategy::RowBased,
        4,
    );
    assert_eq!(ranged_tasks(&plan), 0);
    assert_eq!(run(&plan).row_count, 3);
}

mod properties {
    use super::{CsvOptions, exact, make_plan, run};
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use truthound_profile::Strategy as PlanStrategy;

    /// A field: text with the characters that make CSV hard, or a number, or empty.
    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{0,3}".prop_map(String::from),
            (0i64..50).prop_map(|n| n.to_string()),
            prop::collection::vec(
                prop_oneof![
                    Just("x".to_string()),
                    Just(",".to_string()),
                    Just("\"".to_string()),
                    Just("\n".to_string()),
                    Just("\r\n".to_string()),
                    Just("é".to_string()),
                ],
                0..6
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    fn quoted(f: &str) -> String {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_string()
        }
    }

    proptest! {
        #![proptest_config(Config { cases: 24, ..Config::default() })]

        /// Random CSV (quoted line breaks and quotes, CRLF or LF, a BOM or not, a last line
        /// with or without its line break), cut into ranges of a random size: the merged
        /// profile's exact figures equal the single pass's.
        #[test]
        fn cut_csv_profiles_equal_the_single_pass(
            rows in prop::collection::vec((0i64..1000, field(), field()), 1..40),
            crlf in any::<bool>(),
            bom in any::<bool>(),
            final_newline in any::<bool>(),
            target in 1u64..200,
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            text.push_str(&format!("n,s,t{eol}"));
            for (i, (n, s, t)) in rows.iter().enumerate() {
                text.push_str(&format!("{n},{},{}", quoted(s), quoted(t)));
                if i + 1 < rows.len() || final_newline {
                    text.push_str(eol);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.csv");
            std::fs::write(&path, &text).unwrap();
            let uri = path.to_str().unwrap();
            // The dialect is given: the property is about cutting, not sniffing.
            let csv = CsvOptions {
                delimiter: Some(b','),
                quote: Some(Some(b'"')),
                header: Some(true),
                ..CsvOptions::default()
            };
            let whole = exact(&run(&make_plan(uri, &csv, PlanStrategy::RowBased, 0)));
            prop_assert_eq!(&whole["rows"], &serde_json::json!(rows.len()));
            let cut = exact(&run(&make_plan(uri, &csv, PlanStrategy::RowBased, target)));
            prop_assert_eq!(cut, whole);
        }
    }
}
