//! `th diff` on two real datasets with a known change: January and July 2013 of nycflights13's
//! flights (see tests/fixtures/README.md). Both are profiled by `th profile --keep-state` here;
//! `th diff` must name the columns that changed (the month, the timestamps, departure delays)
//! and none of those whose distribution is the same in both months (verified beforehand with an
//! independent computation: KS distances below 0.04, equal distinct counts or nearly).

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

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nycflights13")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Profiles of both months in `dir`, with state or without.
fn profiles(dir: &Path, keep_state: bool) -> (String, String) {
    let mut out = Vec::new();
    for month in ["01", "07"] {
        let path: PathBuf = dir.join(format!("{month}-{keep_state}.json"));
        let path = path.to_string_lossy().into_owned();
        let data = fixture(&format!("flights-2013-{month}.csv"));
        let mut args = vec!["profile", data.as_str(), "--output", path.as_str()];
        if keep_state {
            args.push("--keep-state");
        }
        let o = th(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out.push(path);
    }
    (out.remove(0), out.remove(0))
}

/// `th diff --json` and its exit code.
fn diff_json(old: &str, new: &str, flags: &[&str]) -> (Value, Option<i32>) {
    let mut args = vec!["diff", old, new, "--json"];
    args.extend_from_slice(flags);
    let o = th(&args);
    let json = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (json, o.status.code())
}

fn drifted(d: &Value) -> Vec<String> {
    let mut names: Vec<String> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn change<'a>(d: &'a Value, column: &str, statistic: &str) -> Option<&'a Value> {
    d["columns"]
        .as_array()?
        .iter()
        .find(|c| c["column"] == column)?["changes"]
        .as_array()?
        .iter()
        .find(|c| c["statistic"] == statistic)
}

/// Columns whose distribution is the same in January and July.
const STABLE: [&str; 9] = [
    "year",
    "day",
    "hour",
    "sched_dep_time",
    "origin",
    "carrier",
    "dest",
    "distance",
    "air_time",
];

#[test]
fn names_the_columns_that_changed_between_two_months_and_not_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (jan, jul) = profiles(dir.path(), true);
    let (d, code) = diff_json(&jan, &jul, &[]);
    assert_eq!(code, Some(1), "drift exits 1: {d}");
    let names = drifted(&d);
    for changed in ["month", "time_hour", "dep_delay"] {
        assert!(
            names.iter().any(|n| n == changed),
            "{changed} not in {names:?}"
        );
    }
    for stable in STABLE {
        assert!(
            !names.iter().any(|n| n == stable),
            "{stable} in {names:?}: {d}"
        );
    }
    assert!(d["added"].as_array().unwrap().is_empty());
    assert!(d["removed"].as_array().unwrap().is_empty());
    assert!(d["retyped"].as_array().unwrap().is_empty());
    // The month went from 1 to 7: every value moved (KS 1), the one frequent value replaced.
    let ks = change(&d, "month", "ks").unwrap();
    assert_eq!(ks["distance"], 1.0);
    assert_eq!(ks["basis"], "state");
    let top = change(&d, "month", "top_values").unwrap();
    assert_eq!(top["appeared"][0]["value"], 7);
    assert_eq!(top["vanished"][0]["value"], 1);
    // July's departures are later: KS 0.133 from exact counts, beyond 0.1 (no rank error).
    let ks = change(&d, "dep_delay", "ks").unwrap();
    let distance = ks["distance"].as_f64().unwrap();
    assert!((distance - 0.1328).abs() < 1e-3, "{distance}");
    assert_eq!(ks["rank_error"], 0.0);

    // The threshold at its edge on real data: at the measured distance it is not drift, a
    // millionth below it is.
    let at = format!("--ks={distance}");
    let (d, _) = diff_json(&jan, &jul, &[&at]);
    assert!(change(&d, "dep_delay", "ks").is_none(), "{d}");
    let below = format!("--ks={}", distance * (1.0 - 1e-6));
    let (d, _) = diff_json(&jan, &jul, &[&below]);
    assert!(change(&d, "dep_delay", "ks").is_some(), "{d}");

    // Generous thresholds everywhere: only the month and the timestamps remain.
    let (d, code) = diff_json(
        &jan,
        &jul,
        &[
            "--ks=0.5",
            "--psi=1",
            "--distinct-ratio=1",
            "--mean-shift=1",
            "--std-ratio=1",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(drifted(&d), vec!["month", "time_hour"], "{d}");

    // A profile compared with itself: no drift, exit 0, and the table prints nothing.
    let o = th(&["diff", &jan, &jan]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The table: one row per change, aligned, then the summary line.
    let o = th(&["diff", &jan, &jul]);
    assert_eq!(o.status.code(), Some(1));
    let table = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("column"), "{table}");
    let at = lines[0].find("measure").unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("month") && l.contains("KS")),
        "{table}"
    );
    let ks_row = lines
        .iter()
        .find(|l| l.starts_with("dep_delay") && l.contains("KS"))
        .unwrap();
    assert!(
        ks_row[..at + "measure".len()]
            .trim_end()
            .ends_with("0.1328"),
        "{table}"
    );
    assert!(
        lines.last().unwrap().contains("columns drifted: ")
            && lines.last().unwrap().contains("month (KS 1"),
        "{table}"
    );
}

#[test]
fn without_state_the_quantile_tables_name_the_same_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (jan, jul) = profiles(dir.path(), false);
    let o = th(&["diff", &jan, &jul, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = drifted(&d);
    for changed in ["month", "time_hour"] {
        assert!(
            names.iter().any(|n| n == changed),
            "{changed} not in {names:?}"
        );
    }
    for stable in STABLE {
        assert!(
            !names.iter().any(|n| n == stable),
            "{stable} in {names:?}: {d}"
        );
    }
    assert_eq!(
        change(&d, "month", "ks").unwrap()["basis"],
        "quantile_table"
    );
    assert!(
        d["notes"][0].as_str().unwrap().contains("quantile tables"),
        "{d}"
    );
}

#[test]
fn errors_exit_with_their_codes_never_1() {
    let dir = tempfile::tempdir().unwrap();
    let (jan, _) = profiles(dir.path(), false);
    let missing = dir.path().join("missing.json");
    let o = th(&["diff", &jan, missing.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = th(&["diff", &jan, &jan, "--psi=-1"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--psi must be a number ≥ 0"));
    let data = fixture("flights-2013-01.csv");
    let o = th(&["diff", &jan, &data]);
    assert_eq!(o.status.code(), Some(65), "a CSV is not a profile");
}

/// The card of `column` in a report.
fn card<'a>(html: &'a str, column: &str) -> &'a str {
    let marker = format!("data-column=\"{column}\"");
    html.split("<article")
        .find(|a| a.contains(&marker))
        .and_then(|a| a.split("</article>").next())
        .unwrap_or_else(|| panic!("no card for {column}"))
}

#[test]
fn report_shows_the_previous_profile_beside_and_marks_drifted_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (jan, jul) = profiles(dir.path(), true);
    let out = dir.path().join("report.html");
    let out = out.to_str().unwrap();
    let o = th(&["report", &jul, "--previous", &jan, "-o", out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out).unwrap();
    assert!(
        html.contains("Compared with the previous profile"),
        "{html}"
    );
    assert!(
        html.contains("previously 6,751"),
        "January's rows beside July's"
    );
    // The same columns as `th diff` names, each linked to its card.
    let count = html
        .split("id=\"drifted-count\">")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap();
    let (d, _) = diff_json(&jan, &jul, &[]);
    assert_eq!(count, drifted(&d).len().to_string());
    for name in drifted(&d) {
        assert!(
            html.contains(&format!("<li data-drifted=\"{name}\">")),
            "{name}"
        );
    }
    let month = card(&html, "month");
    assert!(
        month.starts_with(" class=\"card column drifted\""),
        "{month}"
    );
    assert!(month.contains(">drifted</span>"));
    assert!(month.contains("Drifted: KS 1, PSI"), "{month}");
    // January's figures beside July's: the mean went from 1 to 7.
    assert!(
        month.contains("<tr class=\"changed\"><th scope=\"row\">Mean</th><td class=\"num\">1</td><td class=\"num\">7</td></tr>"),
        "{month}"
    );
    for stable in STABLE {
        let c = card(&html, stable);
        assert!(c.starts_with(" class=\"card column\""), "{stable}: {c}");
        assert!(!c.contains("Drifted:"), "{stable}");
        assert!(c.contains("<h3>Previous profile</h3>"), "{stable}");
    }
    // Without --previous, no comparison.
    let o = th(&["report", &jul, "-o", out]);
    assert!(o.status.success());
    let html = std::fs::read_to_string(out).unwrap();
    assert!(
        !html.contains("id=\"previous\"") && !html.contains("Previous profile"),
        "a report alone compares with nothing"
    );
}

/// The measure a change is compared with its threshold by.
fn measure(change: &Value) -> f64 {
    let f = |k: &str| change[k].as_f64().unwrap();
    match change["statistic"].as_str().unwrap() {
        "null_ratio" | "distinct_count" | "std" => f("change"),
        "mean" => f("shift"),
        "ks" => f("distance") - f("rank_error"),
        "psi" => f("psi"),
        other => panic!("{other}"),
    }
}

#[test]
fn every_threshold_flag_at_its_edge_on_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let (jan, jul) = profiles(dir.path(), true);
    // Departure delays moved on every measure: more nulls (cancellations), more distinct delays,
    // a later and wider distribution.
    let zero = [
        "--null-ratio=0",
        "--distinct-ratio=0",
        "--mean-shift=0",
        "--std-ratio=0",
        "--ks=0",
        "--psi=0",
    ];
    let (all, _) = diff_json(&jan, &jul, &zero);
    for (flag, statistic) in [
        ("null-ratio", "null_ratio"),
        ("distinct-ratio", "distinct_count"),
        ("mean-shift", "mean"),
        ("std-ratio", "std"),
        ("ks", "ks"),
        ("psi", "psi"),
    ] {
        let m = measure(change(&all, "dep_delay", statistic).unwrap());
        assert!(m > 0.0, "{statistic}: {m}");
        let with = |threshold: f64| {
            let mut flags: Vec<String> = zero.iter().map(|f| f.to_string()).collect();
            flags.retain(|f| !f.starts_with(&format!("--{flag}=")));
            flags.push(format!("--{flag}={threshold}"));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            diff_json(&jan, &jul, &flags).0
        };
        // Exactly at the threshold: not drift; a millionth of it above the threshold: drift.
        let d = with(m);
        assert!(
            change(&d, "dep_delay", statistic).is_none(),
            "{flag}={m}: {d}"
        );
        let d = with(m * (1.0 - 1e-6));
        assert!(
            change(&d, "dep_delay", statistic).is_some(),
            "{flag} below {m}"
        );
    }
    // Top values: month's 1 → 7 is reported, and not with --no-top-values.
    assert!(change(&all, "month", "top_values").is_some());
    let (d, _) = diff_json(&jan, &jul, &["--no-top-values"]);
    assert!(change(&d, "month", "top_values").is_none(), "{d}");
}
