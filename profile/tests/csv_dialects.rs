//! CSV dialects and encodings, end to end: files written here in each dialect and encoding are
//! discovered (the dialect sniffed or given), planned (the dialect in the plan) and profiled,
//! and the profiles' columns and values are checked against what was written.

use serde_json::{Value, json};
use truthound_profile::dataset::{CsvDialect, CsvOptions, Encoding, StorageOptions, discover_with};
use truthound_profile::profile::ColumnProfile;
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{Plan, PlanRequest, Strategy, TableProfile, plan};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn make_plan(uri: &str, csv: &CsvOptions, partitions: u32) -> truthound_profile::Result<Plan> {
    rt().block_on(async {
        let ds = discover_with(uri, None, &StorageOptions::default(), csv).await?;
        plan::plan(&ds, &PlanRequest::new(Strategy::RowBased, partitions))
    })
}

fn run(plan: &Plan) -> truthound_profile::Result<TableProfile> {
    rt().block_on(async {
        let store = plan_store(plan)?;
        let mut merged: Option<truthound_profile::PartialProfile> = None;
        for t in &plan.tasks {
            let p = run_task(plan, t.id, store.clone(), &no_progress()).await?;
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.merge(&p)?,
            }
        }
        Ok(TableProfile::from_partial(&merged.unwrap(), 0, false, 20))
    })
}

/// Writes `bytes` as `name` in a new directory; profiles it with `csv`.
fn profile_bytes(name: &str, bytes: &[u8], csv: &CsvOptions) -> (Plan, TableProfile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let plan = make_plan(path.to_str().unwrap(), csv, 1).unwrap();
    // The plan travels as JSON: the dialect must survive it.
    let plan = Plan::from_json(&plan.to_json(), "plan").unwrap();
    let profile = run(&plan).unwrap();
    (plan, profile)
}

fn col<'a>(p: &'a TableProfile, name: &str) -> &'a ColumnProfile {
    p.columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = p.columns.iter().map(|c| c.name.as_str()).collect();
            panic!("no column {name} in {names:?}")
        })
}

fn names(p: &TableProfile) -> Vec<&str> {
    p.columns.iter().map(|c| c.name.as_str()).collect()
}

fn top(c: &ColumnProfile) -> Vec<(Value, u64)> {
    c.top_values
        .iter()
        .map(|v| (v.value.clone(), v.count))
        .collect()
}

#[test]
fn semicolons_are_sniffed() {
    let (plan, p) = profile_bytes(
        "eu.csv",
        b"id;price;city\n1;2,5;Paris\n2;3,5;Lyon\n3;10;Nice\n",
        &CsvOptions::default(),
    );
    assert_eq!(plan.dataset.csv.as_ref().unwrap().delimiter, ';');
    assert_eq!(names(&p), ["id", "price", "city"]);
    assert_eq!(p.row_count, 3);
    assert_eq!(col(&p, "id").sum, Some(json!(6)));
    assert_eq!(col(&p, "city").min, Some(json!("Lyon")));
}

#[test]
fn tabs_are_sniffed() {
    let (plan, p) = profile_bytes("t.tsv", b"a\tb\n1\tx y\n2\tz, w\n", &CsvOptions::default());
    assert_eq!(plan.dataset.csv.as_ref().unwrap().delimiter, '\t');
    assert_eq!(names(&p), ["a", "b"]);
    assert_eq!(col(&p, "b").max, Some(json!("z, w")));
}

#[test]
fn quoted_fields_hold_delimiters_newlines_and_quotes() {
    let data = "name,note,n\n\
                \"Smith, J\",\"line one\nline two\",1\n\
                \"Doe\",\"she said \"\"hi\"\"\",2\r\n\
                plain,\"a,b\r\nc\",3\n";
    let (plan, p) = profile_bytes("q.csv", data.as_bytes(), &CsvOptions::default());
    let d = plan.dataset.csv.as_ref().unwrap();
    assert_eq!((d.delimiter, d.quote), (',', Some('"')));
    assert_eq!(p.row_count, 3);
    assert_eq!(col(&p, "n").sum, Some(json!(6)));
    let notes = col(&p, "note");
    let mut values: Vec<Value> = top(notes).into_iter().map(|(v, _)| v).collect();
    values.sort_by_key(|v| v.to_string());
    assert_eq!(
        values,
        [
            json!("a,b\r\nc"),
            json!("line one\nline two"),
            json!("she said \"hi\"")
        ]
    );
    assert_eq!(col(&p, "name").min, Some(json!("Doe")));
}

#[test]
fn backslash_escapes_are_sniffed_or_given() {
    let data = b"k,v\n\"a \\\"b\\\", c\",1\n\"d\",2\n";
    let (plan, p) = profile_bytes("e.csv", data, &CsvOptions::default());
    assert_eq!(plan.dataset.csv.as_ref().unwrap().escape, Some('\\'));
    assert_eq!(col(&p, "k").max, Some(json!("d")));
    assert_eq!(col(&p, "k").min, Some(json!("a \"b\", c")));
}

#[test]
fn a_file_without_header_gets_numbered_columns() {
    let (plan, p) = profile_bytes("n.csv", b"1,a\n2,b\n3,c\n", &CsvOptions::default());
    assert!(!plan.dataset.csv.as_ref().unwrap().header);
    assert_eq!(names(&p), ["column_1", "column_2"]);
    assert_eq!(p.row_count, 3);
    assert_eq!(col(&p, "column_1").sum, Some(json!(6)));
    // Said by the user: the first record is a header after all.
    let asked = CsvOptions {
        header: Some(true),
        ..CsvOptions::default()
    };
    let (_, p) = profile_bytes("n.csv", b"1,a\n2,b\n3,c\n", &asked);
    assert_eq!(names(&p), ["1", "a"]);
    assert_eq!(p.row_count, 2);
}

#[test]
fn comment_lines_are_skipped() {
    let data = b"# exported by a tool, v2\n# columns: a, b\na,b\n1,x\n# a note, mid-file\n2,y\n";
    let (plan, p) = profile_bytes("c.csv", data, &CsvOptions::default());
    assert_eq!(plan.dataset.csv.as_ref().unwrap().comment, Some('#'));
    assert_eq!(names(&p), ["a", "b"]);
    assert_eq!(p.row_count, 2);
    assert_eq!(col(&p, "a").sum, Some(json!(3)));
}

#[test]
fn null_tokens_are_nulls() {
    let asked = CsvOptions {
        null_tokens: Some(vec!["NA".into(), "-".into()]),
        ..CsvOptions::default()
    };
    let (_, p) = profile_bytes("na.csv", b"x,s\n1,a\nNA,-\n3,NA\n-,b\n", &asked);
    assert_eq!(col(&p, "x").null_count, 2);
    assert_eq!(col(&p, "x").physical_type, "Int64");
    assert_eq!(col(&p, "x").sum, Some(json!(4)));
    assert_eq!(col(&p, "s").null_count, 2);
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect()
}

#[test]
fn latin1_is_transcoded() {
    let bytes = latin1("ville;pays\nZürich;Suisse\nSão Paulo;Brésil\n");
    // Not UTF-8: the head cannot be read without an encoding, and the error says where and what
    // to do.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l1.csv");
    std::fs::write(&path, &bytes).unwrap();
    let err = make_plan(path.to_str().unwrap(), &CsvOptions::default(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("l1.csv: line 2, column 2: byte 0xFC is not valid utf-8"),
        "{err}"
    );
    assert!(err.contains("--encoding"), "{err}");
    let asked = CsvOptions {
        encoding: Some(Encoding::Latin1),
        ..CsvOptions::default()
    };
    let (plan, p) = profile_bytes("l1.csv", &bytes, &asked);
    assert_eq!(
        plan.dataset.csv.as_ref().unwrap().encoding,
        Encoding::Latin1
    );
    assert_eq!(col(&p, "ville").max, Some(json!("Zürich")));
    assert_eq!(col(&p, "pays").min, Some(json!("Brésil")));
}

#[test]
fn windows_1252_is_transcoded() {
    // 0x80 is € and 0x93/0x94 are curly quotes in Windows-1252 (C1 controls in Latin-1).
    let bytes = b"item,price\ncaf\xE9,\x805\n\x93tea\x94,\x802\n";
    let asked = CsvOptions {
        encoding: Some(Encoding::Windows1252),
        ..CsvOptions::default()
    };
    let (_, p) = profile_bytes("w.csv", bytes, &asked);
    assert_eq!(col(&p, "item").min, Some(json!("café")));
    assert_eq!(col(&p, "item").max, Some(json!("\u{201C}tea\u{201D}")));
    assert_eq!(col(&p, "price").min, Some(json!("€2")));
}

#[test]
fn utf16_with_bom_is_detected() {
    let text = "n\tname\n1\tÅsa\n2\t東京\n";
    for (bom, wide, expected) in [
        (
            [0xFF, 0xFE],
            text.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
            Encoding::Utf16Le,
        ),
        (
            [0xFE, 0xFF],
            text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            Encoding::Utf16Be,
        ),
    ] {
        let bytes: Vec<u8> = bom.into_iter().chain(wide).collect();
        let (plan, p) = profile_bytes("u16.csv", &bytes, &CsvOptions::default());
        let d: &CsvDialect = plan.dataset.csv.as_ref().unwrap();
        assert_eq!((d.encoding, d.delimiter), (expected, '\t'));
        assert_eq!(names(&p), ["n", "name"]);
        assert_eq!(col(&p, "n").sum, Some(json!(3)));
        assert_eq!(col(&p, "name").max, Some(json!("東京")));
    }
}

#[test]
fn a_utf8_bom_is_not_part_of_the_first_name() {
    let (_, p) = profile_bytes(
        "bom.csv",
        b"\xEF\xBB\xBFid,v\n1,2\n",
        &CsvOptions::default(),
    );
    assert_eq!(names(&p), ["id", "v"]);
}

#[test]
fn a_bad_byte_past_the_head_names_the_record_and_the_fix() {
    // The head (1 MiB) is UTF-8; a Latin-1 byte further on fails the read, not the plan.
    let mut data = String::from("id,name\n");
    for i in 0..100_000 {
        data.push_str(&format!("{i},name{i}\n"));
    }
    let mut bytes = data.into_bytes();
    bytes.extend_from_slice(b"100000,Z\xFCrich\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.csv");
    std::fs::write(&path, &bytes).unwrap();
    assert!(bytes.len() > 1 << 20);
    let plan = make_plan(path.to_str().unwrap(), &CsvOptions::default(), 1).unwrap();
    let err = run(&plan).unwrap_err().to_string();
    assert!(err.contains("late.csv"), "{err}");
    assert!(
        err.contains("record 100002, field 2: not valid utf-8"),
        "{err}"
    );
    assert!(err.contains("--encoding"), "{err}");
}

#[test]
fn the_dialect_given_overrides_the_sniffer_for_every_file() {
    // Two files; the first alone would sniff as comma-separated.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), b"k|v\nx,1|1\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), b"k|v\ny|2\n").unwrap();
    let asked = CsvOptions {
        delimiter: Some(b'|'),
        ..CsvOptions::default()
    };
    let plan = make_plan(dir.path().to_str().unwrap(), &asked, 2).unwrap();
    assert_eq!(plan.tasks.len(), 2);
    let p = run(&plan).unwrap();
    assert_eq!(names(&p), ["k", "v"]);
    assert_eq!(col(&p, "v").sum, Some(json!(3)));
    assert_eq!(col(&p, "k").min, Some(json!("x,1")));
}
