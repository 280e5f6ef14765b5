//! Nested and binary columns through `th`: a Parquet file written by pyarrow (structs nested two
//! deep with nulls at both levels, lists with empty and null lists, a list of structs, a map, a
//! binary and a large string column) profiled by `th profile`, each figure compared with what
//! DuckDB computes of the same file (`profile/tests/fixtures/nested.py`); and `th show` and
//! `th report` showing the derived columns under their column.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn th(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th"))
        .args(args)
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .output()
        .expect("th runs")
}

fn python() -> String {
    std::env::var("TH_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TH_TEST_PYTHON is not set: this test writes its Parquet file with pyarrow and checks \
             it with DuckDB; run it through scripts/test.sh or export \
             TH_TEST_PYTHON=$(scripts/py-tools.sh python)"
        )
    })
}

/// Writes the file and DuckDB's figures of it: (data dir, reference).
fn fixture(dir: &Path) -> (PathBuf, Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profile/tests/fixtures/nested.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap())
        .expect("reference JSON");
    (dir.join("data"), reference)
}

fn profile(data: &Path, extra: &[&str]) -> Value {
    let out_path = data.with_file_name(format!("profile{}.json", extra.len()));
    let mut args = vec![
        "profile",
        data.to_str().unwrap(),
        "--quiet",
        "--output",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = th(&args);
    assert!(
        out.status.success(),
        "th {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn nested_and_binary_figures_match_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let (data, reference) = fixture(dir.path());
    let p = profile(&data, &[]);
    let columns = p["columns"].as_array().unwrap();
    let col = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no column `{name}` in the profile"))
    };
    let reference = reference.as_object().unwrap();
    assert_eq!(reference.len(), 17);
    assert_eq!(p["column_count"], 17);
    for (name, want) in reference {
        let c = col(name);
        for k in ["row_count", "null_count", "distinct_count"] {
            if let Some(w) = want.get(k) {
                assert_eq!(&c[k], w, "{name}.{k}");
            }
        }
        for k in ["min", "max"] {
            match want.get(k) {
                Some(Value::String(w)) => assert_eq!(c[k].as_str(), Some(w.as_str()), "{name}.{k}"),
                Some(w) => assert!(
                    close(c[k].as_f64().unwrap(), w.as_f64().unwrap()),
                    "{name}.{k}: {} vs DuckDB's {w}",
                    c[k]
                ),
                None => {}
            }
        }
        if let Some(w) = want.get("mean") {
            let got = c["distribution"]["mean"].as_f64().unwrap();
            assert!(close(got, w.as_f64().unwrap()), "{name}.mean: {got} vs {w}");
        }
        if let Some(w) = want.get("avg_length") {
            assert_eq!(c["min_length"], want["min_length"], "{name}.min_length");
            assert_eq!(c["max_length"], want["max_length"], "{name}.max_length");
            let got = c["avg_length"].as_f64().unwrap();
            assert!(
                close(got, w.as_f64().unwrap()),
                "{name}.avg_length: {got} vs {w}"
            );
            let empty = if name == "bin" {
                "empty_string_count"
            } else {
                "empty_list_count"
            };
            assert_eq!(c[empty], want["empty"], "{name}.{empty}");
            assert_eq!(
                c["length_quantiles"], want["length_quantiles"],
                "{name}.length_quantiles"
            );
            assert_eq!(c["accuracy"]["length_quantiles"]["exact"], true);
        }
    }
    // The tree: each derived column names its parent; the dataset's columns none.
    for (child, parent) in [
        ("s.a", "s"),
        ("s.b", "s"),
        ("s.b.c", "s.b"),
        ("l[]", "l"),
        ("ls[]", "ls"),
        ("ls[].y", "ls[]"),
        ("m{key}", "m"),
        ("m{value}", "m"),
    ] {
        assert_eq!(col(child)["parent"], parent, "{child}");
    }
    for (name, kind) in [
        ("s", "struct"),
        ("l", "list"),
        ("m", "map"),
        ("bin", "binary"),
    ] {
        assert!(col(name).get("parent").is_none(), "{name}");
        assert_eq!(col(name)["inferred_type"], kind, "{name}");
    }
    // Binary values are listed by their hex (values of up to 16 bytes), with DuckDB's counts.
    let bin = col("bin");
    let counts = reference["bin"]["counts"].as_object().unwrap();
    let top = bin["top_values"].as_array().unwrap();
    assert!(top.len() >= 3, "{top:?}");
    for t in top {
        let key = t["value"].as_str().unwrap();
        if !key.contains('…') {
            assert_eq!(Some(&t["count"]), counts.get(key), "bin value {key}");
        }
    }
    assert_eq!(top[0]["value"], "ffffff");
    assert_eq!(bin["accuracy"]["distinct_count"]["exact"], true);
}

/// `a` equals `b`: every count, string and structure exactly, floats to 1e-9 relative (plus
/// 1e-12 for a skewness of about 0) (the
/// moments of merged partials are summed in another order, as for every column).
fn same(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-12,
                "{path}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                let name = y.get("name").and_then(Value::as_str).unwrap_or_default();
                same(x, y, &format!("{path}[{i}]{name}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{path}: fields");
            for (k, v) in x {
                same(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn partitioned_runs_profile_nested_columns_as_the_single_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = fixture(dir.path());
    let single = profile(&data, &["--partitions", "1"]);
    assert_eq!(single["partitioning"]["tasks_total"], 1);
    for extra in [
        &["--partitions", "4"][..],
        &["--strategy", "column_based", "--partitions", "3"][..],
    ] {
        let p = profile(&data, extra);
        assert!(
            p["partitioning"]["tasks_total"].as_u64().unwrap() >= 3,
            "{extra:?}"
        );
        same(&p["columns"], &single["columns"], &format!("{extra:?}"));
        assert_eq!(p["duplicate_row_count"], single["duplicate_row_count"]);
    }
    // Selecting the nested column selects its derived ones; a derived one is named as such.
    let only = profile(&data, &["--columns", "id,ls"]);
    let names: Vec<&str> = only["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "ls", "ls[]", "ls[].x", "ls[].y"]);
    let out = th(&["profile", data.to_str().unwrap(), "--columns", "s.b.c"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`s.b.c` is derived from the nested column `s`"),
        "{err}"
    );
}

#[test]
fn show_and_report_put_derived_columns_under_their_column() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = fixture(dir.path());
    let json = dir.path().join("p.json");
    let out = th(&[
        "profile",
        data.to_str().unwrap(),
        "--quiet",
        "--output",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = th(&["show", json.to_str().unwrap()]);
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    let indent = |name: &str| line(name).len() - line(name).trim_start().len();
    assert_eq!(indent("s"), 0);
    assert_eq!(indent("s.a"), 2);
    assert_eq!(indent("s.b.c"), 4);
    assert_eq!(indent("ls[].x"), 4);
    assert!(line("l[]").contains("int"), "{text}");

    let html = dir.path().join("r.html");
    let out = th(&[
        "report",
        json.to_str().unwrap(),
        "--output",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    // `s` is column 2: its fields link back to it, and it lists them.
    assert!(
        page.contains("Field of <a href=\"#col-2\"><code>s</code></a>"),
        "field link"
    );
    assert!(page.contains("Profiled as <a href=\"#col-3\"><code>s.a</code></a>"));
    assert!(page.contains("Elements of <a href=\"#col-7\"><code>l</code></a>"));
    assert!(page.contains("Keys of <a href=\"#col-13\"><code>m</code></a>"));
    assert!(page.contains("<h3>Length quantiles</h3>"));
    assert!(page.contains("class=\"card column derived\" id=\"col-5\""));
    assert!(page.contains("style=\"--depth:2\""));
}
