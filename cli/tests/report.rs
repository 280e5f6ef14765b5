//! `th report` and `th show` as a user runs them: the HTML page's structure (a card per column,
//! escaping, nothing fetched from outside, one histogram bar per bin), the page as headless
//! Chromium renders it on a phone and on a desktop (what a person sees, no horizontal overflow,
//! screenshots kept as artifacts), the terminal table, and errors that name what is at fault.
//!
//! The Chromium test needs Chromium: `scripts/chromium.sh` installs it (Debian's `chromium`) and
//! prints its path; `TH_CHROMIUM` overrides `/usr/bin/chromium`. Without it the test fails.
//! Screenshots go to `TH_ARTIFACTS_DIR` (default `<workspace>/artifacts`).

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate is inside the workspace")
        .to_path_buf()
}

fn th(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_th"))
        .args(args)
        .env_remove("TRUTHOUND_DISTRIBUTED_BACKEND")
        .env_remove("TH_S3_ENDPOINT")
        .output()
        .expect("th runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> Output {
    let out = th(args);
    assert!(
        out.status.success(),
        "th {args:?} failed ({:?})\nstderr: {}",
        out.status.code(),
        text(&out.stderr)
    );
    out
}

/// Runs `th` expecting failure with `code`; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = th(args);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "th {args:?}\nstderr: {err}\nstdout: {}",
        text(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// The bundled sample (3 Parquet files, 15 columns of every kind) profiled into `dir/name`.
fn sample_profile(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let sample = workspace().join("examples/sample/events");
    ok(&[
        "profile",
        sample.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    out
}

const SCRIPT_COLUMN: &str = "<script>alert(1)</script>";
const QUOTED_COLUMN: &str = r#"a&b "q" 'x' <i>"#;

/// A profile whose column names and values are markup, ampersands and quotes.
fn tricky_profile(dir: &Path) -> PathBuf {
    let data = dir.join("tricky.parquet");
    let values = [
        "<b>bold</b>",
        "Tom & Jerry",
        r#""quoted" and 'single'"#,
        "<img src=https://example.com/x.png onerror=alert(2)>",
        "<b>bold</b>",
    ];
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            SCRIPT_COLUMN,
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
        ),
        (QUOTED_COLUMN, Arc::new(StringArray::from(values.to_vec()))),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&data).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = dir.join("tricky.json");
    ok(&[
        "profile",
        data.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    out
}

/// `th report PROFILE -o dir/NAME`, returning the page.
fn report(profile: &Path, out: &Path) -> String {
    ok(&[
        "report",
        profile.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    std::fs::read_to_string(out).expect("the report is UTF-8 text")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn columns(profile: &Value) -> &Vec<Value> {
    profile["columns"].as_array().expect("columns")
}

/// What the page must write for a string from the profile.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The card of the column at `index` (0-based): from its `<article` to its `</article>`.
fn card(html: &str, index: usize) -> &str {
    let marker = format!("<article class=\"card column\" id=\"col-{}\"", index + 1);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no card for column {index}"));
    let end = start + html[start..].find("</article>").expect("card closes");
    &html[start..end]
}

/// A start tag's name and attributes (values with entities as written).
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

/// Every start tag of `html`, read the way a browser's tokenizer does for well-formed markup:
/// text and comments skipped, attribute values quoted with `"` or `'`, or unquoted.
fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        if html[i..].starts_with("!--") {
            i += html[i..].find("-->").map_or(html.len() - i, |e| e + 3);
            continue;
        }
        if i >= b.len() || !b[i].is_ascii_alphabetic() {
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let name = html[start..i].to_ascii_lowercase();
        let mut attrs = Vec::new();
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                break;
            }
            let a = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'>' {
                i += 1;
            }
            let attr = html[a..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i] as char;
                    let end = html[i + 1..].find(q).expect("attribute value closes") + i + 1;
                    value = html[i + 1..end].to_string();
                    i = end + 1;
                } else {
                    let v = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = html[v..i].to_string();
                }
            }
            attrs.push((attr, value));
        }
        out.push(Tag { name, attrs });
    }
    out
}

#[test]
fn every_column_has_a_card_with_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let profile = sample_profile(dir.path(), "p.json");
    let html = report(&profile, &dir.path().join("r.html"));
    let p = json(&profile);
    let cols = columns(&p);
    assert_eq!(cols.len(), 15);
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert_eq!(
        html.matches("<article class=\"card column\"").count(),
        cols.len(),
        "one card per column"
    );
    assert!(html.contains("@media print"), "a print stylesheet");
    // The overview.
    let overview = &html[html.find("id=\"overview\"").expect("overview")..];
    let overview = &overview[..overview.find("</section>").unwrap()];
    for figure in [
        thousands(p["row_count"].as_u64().unwrap()),
        p["column_count"].to_string(),
        thousands(p["duplicate_row_count"].as_u64().unwrap()),
        esc(p["sources"][0]["uri"].as_str().unwrap()),
        "row_based".to_string(),
        "4 of 4".to_string(),
    ] {
        assert!(overview.contains(&figure), "overview lacks {figure}");
    }
    for (i, c) in cols.iter().enumerate() {
        let name = c["name"].as_str().unwrap();
        let card = card(&html, i);
        assert!(
            card.contains(&format!("data-column=\"{}\"", esc(name))),
            "card {i} is not {name}"
        );
        for figure in [
            esc(c["physical_type"].as_str().unwrap()),
            c["inferred_type"].as_str().unwrap().to_string(),
            format!("({})", thousands(c["null_count"].as_u64().unwrap())),
            thousands(c["distinct_count"].as_u64().unwrap()),
        ] {
            assert!(card.contains(&figure), "{name}: card lacks {figure}");
        }
        if let Some(top) = c["top_values"].as_array().and_then(|t| t.first()) {
            let count = thousands(top["count"].as_u64().unwrap());
            assert!(
                card.contains(&format!(">{count}<")),
                "{name}: top count {count}"
            );
        }
        for q in ["p1", "p25", "p50", "p75", "p99"] {
            if !c["quantiles"][q].is_null() {
                assert!(card.contains(&format!("<dt>{q}</dt>")), "{name}: {q}");
            }
        }
        if c["nan_count"].is_u64() {
            assert!(card.contains(">NaN<"), "{name}: a NaN bar");
        }
        if !c["detected_patterns"].as_array().unwrap().is_empty() {
            let pattern = c["detected_patterns"][0]["pattern"].as_str().unwrap();
            assert!(card.contains(&format!(">{pattern}<")), "{name}: pattern");
        }
    }
    // The float column with an infinity: max and its top value read `inf`, the mean undefined.
    let amount = card(&html, 4);
    assert!(amount.contains("data-column=\"amount\""));
    assert!(amount.contains(">inf<"), "amount's max is inf");
    assert!(amount.contains("undefined"), "amount's mean is undefined");
}

#[test]
fn strings_from_the_profile_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let profile = tricky_profile(dir.path());
    let html = report(&profile, &dir.path().join("r.html"));
    assert!(!html.contains(SCRIPT_COLUMN), "raw <script> column name");
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "the page runs no script at all"
    );
    assert!(!html.contains("<b>bold</b>"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<i>"));
    assert!(html.contains(&format!("data-column=\"{}\"", esc(SCRIPT_COLUMN))));
    assert!(html.contains(&format!("data-column=\"{}\"", esc(QUOTED_COLUMN))));
    assert!(html.contains(&format!(">{}<", esc(SCRIPT_COLUMN))));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("Tom &amp; Jerry"));
    assert!(html.contains("&quot;quoted&quot; and &#39;single&#39;"));
    // The markup is what was written: every tag the page opens is one of the page's own.
    let allowed = [
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "main",
        "footer",
        "section",
        "article",
        "h1",
        "h2",
        "h3",
        "p",
        "dl",
        "dt",
        "dd",
        "div",
        "span",
        "strong",
        "code",
        "ul",
        "li",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "figure",
        "figcaption",
        "svg",
        "rect",
        "line",
        "text",
        "title",
    ];
    for t in tags(&html) {
        assert!(
            allowed.contains(&t.name.as_str()),
            "unexpected <{}>",
            t.name
        );
        for (a, _) in &t.attrs {
            assert!(!a.starts_with("on"), "event handler {a} on <{}>", t.name);
        }
    }
    assert_eq!(html.matches("<article").count(), 2);
    assert_eq!(html.matches("</article>").count(), 2);
}

#[test]
fn the_page_references_nothing_outside_itself() {
    let dir = tempfile::tempdir().unwrap();
    // The sample has URLs among its values (column `website`); the tricky one, an <img src=...>.
    for profile in [
        sample_profile(dir.path(), "p.json"),
        tricky_profile(dir.path()),
    ] {
        let html = report(&profile, &dir.path().join("r.html"));
        assert!(
            html.contains("https://"),
            "URLs among the values are shown as text"
        );
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("@import"), "no @import");
        assert!(!lower.contains("url("), "no url() in the CSS");
        assert!(!lower.contains("<link"), "no <link>");
        assert!(!lower.contains("<script"), "no <script>");
        let mut hrefs = 0;
        for t in tags(&html) {
            for (a, v) in &t.attrs {
                let v = v.trim().to_ascii_lowercase();
                if [
                    "src",
                    "href",
                    "xlink:href",
                    "srcset",
                    "action",
                    "formaction",
                    "poster",
                    "data",
                    "background",
                ]
                .contains(&a.as_str())
                {
                    assert!(
                        !v.starts_with("http:") && !v.starts_with("https:") && !v.starts_with("//"),
                        "<{} {a}=\"{v}\"> points outside the page",
                        t.name
                    );
                    assert!(
                        v.starts_with('#'),
                        "<{} {a}=\"{v}\">: only in-page links",
                        t.name
                    );
                    hrefs += 1;
                }
            }
        }
        assert!(hrefs > 0, "the column index links to the cards");
    }
}

#[test]
fn histograms_have_one_bar_per_bin() {
    let dir = tempfile::tempdir().unwrap();
    let profile = sample_profile(dir.path(), "p.json");
    let html = report(&profile, &dir.path().join("r.html"));
    let p = json(&profile);
    let mut drawn = 0;
    for (i, c) in columns(&p).iter().enumerate() {
        let card = card(&html, i);
        let name = c["name"].as_str().unwrap();
        let Some(bins) = c["histogram"].as_array() else {
            assert!(
                !card.contains("class=\"histogram\""),
                "{name}: no bins, no chart"
            );
            continue;
        };
        let start = card
            .find("<svg class=\"histogram\"")
            .unwrap_or_else(|| panic!("{name}: no histogram"));
        let svg = &card[start..start + card[start..].find("</svg>").unwrap()];
        assert_eq!(
            svg.matches("<rect class=\"bar\"").count(),
            bins.len(),
            "{name}: bars"
        );
        assert!(svg.contains(&format!("data-bins=\"{}\"", bins.len())));
        // Each bar's tooltip has its bin's count, in order.
        let titles: Vec<&str> = svg
            .split("<title>")
            .skip(1)
            .map(|t| &t[..t.find("</title>").unwrap()])
            .collect();
        for (bin, title) in bins.iter().zip(&titles) {
            let count = thousands(bin["count"].as_u64().unwrap());
            assert!(
                title.ends_with(&format!(": {count}")),
                "{name}: {title} vs {count}"
            );
        }
        // The axis carries labels.
        assert!(
            svg.matches("class=\"tick\"").count() >= 5,
            "{name}: axis labels"
        );
        drawn += 1;
    }
    assert!(drawn >= 4, "the sample has numeric and temporal histograms");
    // Temporal bins are labelled as dates, not as day numbers.
    let signup = card(&html, 6);
    assert!(signup.contains("data-column=\"signup_date\""));
    assert!(signup.contains(">2020-01-01</text>"), "date axis label");
}

#[test]
fn estimates_and_samples_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.json");
    let sample = workspace().join("examples/sample/events");
    ok(&[
        "profile",
        sample.to_str().unwrap(),
        "--exact-distinct-limit",
        "100",
        "--sample",
        "50%",
        "--sample-seed",
        "3",
        "--quiet",
        "--output",
        profile.to_str().unwrap(),
    ]);
    let html = report(&profile, &dir.path().join("r.html"));
    let p = json(&profile);
    let rows = thousands(p["row_count"].as_u64().unwrap());
    let scanned = thousands(p["sampling"]["rows_scanned"].as_u64().unwrap());
    assert!(
        html.contains("Sampled 50% of the rows"),
        "the sampling is stated"
    );
    assert!(html.contains(&format!("{rows} of {scanned} rows scanned")));
    let id = card(&html, 0);
    let acc = &columns(&p)[0]["accuracy"];
    assert_eq!(acc["distinct_count"]["method"], "hll", "{acc}");
    let (lo, hi) = (
        acc["distinct_count"]["lower_bound"].as_f64().unwrap() as u64,
        acc["distinct_count"]["upper_bound"]
            .as_f64()
            .unwrap()
            .ceil() as u64,
    );
    let distinct = thousands(columns(&p)[0]["distinct_count"].as_u64().unwrap());
    assert!(
        id.contains(&format!("≈ {distinct}")),
        "an estimate is marked"
    );
    assert!(
        id.contains(&format!(
            "HyperLogLog estimate, between {} and {}",
            thousands(lo),
            thousands(hi)
        )),
        "with its bounds"
    );
    assert!(
        id.contains("frequent-items sketch, each within ±"),
        "top counts' error"
    );
    assert!(
        id.contains("quantiles from a KLL sketch, rank error ±"),
        "quantiles' error"
    );
    // A column still counted exactly says so.
    let country = card(&html, 2);
    assert!(country.contains("exact counts") && !country.contains('≈'));
    let out = ok(&["show", profile.to_str().unwrap()]);
    let table = text(&out.stdout);
    assert!(table.contains(&format!("≈{distinct}")), "{table}");
    assert!(table.contains("sampled 50% (seed 3)"), "{table}");
}

#[test]
fn report_writes_to_stdout_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let profile = sample_profile(dir.path(), "p.json");
    let file = report(&profile, &dir.path().join("r.html"));
    let out = ok(&["report", profile.to_str().unwrap(), "-o", "-"]);
    assert_eq!(text(&out.stdout), file);
    let file_uri = format!("file://{}", profile.display());
    let out = ok(&["report", &file_uri, "-o", "-"]);
    assert_eq!(
        text(&out.stdout),
        file,
        "a file:// URI reads the same profile"
    );
}

#[test]
fn a_missing_profile_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let m = missing.to_str().unwrap();
    for cmd in ["report", "show"] {
        let args: Vec<&str> = if cmd == "report" {
            vec![cmd, m, "-o", "-"]
        } else {
            vec![cmd, m]
        };
        let err = fails(&args, 65);
        assert!(err.contains(m) && err.contains("not found"), "{err}");
    }
    assert!(!dir.path().join("out.html").exists());
}

#[test]
fn something_that_is_not_a_profile_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = workspace().join("examples/sample/events");
    let parquet = std::fs::read_dir(&sample)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let plan = d.join("plan.json");
    ok(&[
        "plan",
        sample.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ]);
    let partial = d.join("partial.bin");
    ok(&[
        "profile",
        sample.to_str().unwrap(),
        "--quiet",
        "--partial-out",
        partial.to_str().unwrap(),
    ]);
    let empty = d.join("empty.json");
    std::fs::write(&empty, b"").unwrap();
    let other = d.join("other.json");
    std::fs::write(&other, br#"{"rows": 3}"#).unwrap();
    let future = d.join("future.json");
    std::fs::write(&future, br#"{"schema_version": "2.0", "columns": []}"#).unwrap();
    for (file, says) in [
        (parquet.as_path(), "not JSON"),
        (plan.as_path(), "looks like a plan"),
        (partial.as_path(), "partial profile"),
        (empty.as_path(), "empty"),
        (other.as_path(), "without `schema_version`"),
        (future.as_path(), "this build reads 1.x"),
    ] {
        let f = file.to_str().unwrap();
        for args in [vec!["report", f, "-o", "-"], vec!["show", f]] {
            let err = fails(&args, 65);
            assert!(err.contains(f), "{err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
    let err = fails(&["report", empty.to_str().unwrap(), "-o", "-"], 65);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn show_prints_one_aligned_row_per_column() {
    let dir = tempfile::tempdir().unwrap();
    let profile = sample_profile(dir.path(), "p.json");
    let p = json(&profile);
    let out = ok(&["show", profile.to_str().unwrap()]);
    let table = text(&out.stdout);
    assert!(
        !table.contains('\x1b'),
        "plain text when stdout is not a terminal"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("3,000 rows × 15 columns"), "{table}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("column "))
        .expect("a header");
    for word in [
        "type",
        "nulls",
        "distinct",
        "min",
        "max",
        "mean",
        "top value",
    ] {
        assert!(lines[header].contains(word), "header lacks {word}");
    }
    let rows = &lines[header + 2..];
    assert_eq!(rows.len(), 15, "{table}");
    // Right-aligned columns end at the same place in every row: `nulls` ends where its title does.
    let width = |s: &str| s.chars().count();
    let nulls_end = lines[header].find("nulls").unwrap() + "nulls".len();
    let nulls_end = width(&lines[header][..nulls_end]);
    for (row, c) in rows.iter().zip(columns(&p)) {
        let name = c["name"].as_str().unwrap();
        assert!(row.starts_with(name), "{row}");
        assert!(
            row.contains(&thousands(c["distinct_count"].as_u64().unwrap())),
            "{row}"
        );
        let chars: Vec<char> = row.chars().collect();
        if !name.chars().any(|ch| ch as u32 > 0x1100) {
            assert_eq!(chars[nulls_end - 1], '%', "nulls column aligned: {row}");
        }
    }
    let id = rows[0];
    assert!(id.contains("1500.496"), "mean of id: {id}");
    let amount = rows[4];
    assert!(amount.contains("inf"), "{amount}");
    // --json: the profile as it is.
    let out = ok(&["show", profile.to_str().unwrap(), "--json"]);
    assert_eq!(out.stdout, std::fs::read(&profile).unwrap());
}

// ---- headless Chromium ----

/// Chromium to test with: `TH_CHROMIUM`, else `/usr/bin/chromium`. Missing is a failure.
fn chromium() -> PathBuf {
    let fix = "run scripts/chromium.sh (installs Debian's `chromium` and prints its path), \
               or set TH_CHROMIUM to a Chromium binary";
    match std::env::var_os("TH_CHROMIUM").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "TH_CHROMIUM={} is not a file: {fix}",
                path.display()
            );
            path
        }
        None => {
            let path = PathBuf::from("/usr/bin/chromium");
            assert!(
                path.is_file(),
                "Chromium not found (TH_CHROMIUM is unset and /usr/bin/chromium is missing): {fix}"
            );
            path
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("TH_ARTIFACTS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `extra` flags and a fresh profile directory; returns
/// stdout. Fails after 120 s rather than hang the test run.
fn run_chromium(bin: &Path, width: u32, height: u32, extra: &[String], url: &str) -> String {
    let profile_dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile_dir.path().display()));
    args.push(format!("--window-size={width},{height}"));
    args.extend(extra.iter().cloned());
    args.push(url.to_string());
    let stdout_file = profile_dir.path().join("stdout");
    let stderr_file = profile_dir.path().join("stderr");
    let mut child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish in 120 s\nstderr: {}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::fs::File::open(&stdout_file)
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        status.success(),
        "chromium {args:?} failed ({status})\nstderr: {}",
        std::fs::read_to_string(&stderr_file).unwrap_or_default()
    );
    stdout
}

/// A page that shows the report in a `width`×`height` frame (headless Chromium will not make
/// its window narrower than 500 px, but a frame is a viewport of exactly the size asked), and,
/// once it has loaded, writes what a person sees into `<pre id="probe">` as JSON: the frame's
/// viewport and scroll widths, any element sticking out sideways (outside the page's own
/// scroll boxes), the overview's text and each column card's text.
fn harness(width: u32, height: u32) -> String {
    format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8">
<style>html,body{{margin:0;padding:0;overflow:hidden}}iframe{{border:0;display:block}}</style>
<script>
function probe() {{
  var out = document.getElementById('probe');
  try {{
    var f = document.getElementById('f'), d = f.contentDocument, w = f.contentWindow;
    var root = d.documentElement, vw = root.clientWidth, sticking = [];
    var all = d.body.getElementsByTagName('*');
    for (var i = 0; i < all.length; i++) {{
      var e = all[i], inBox = false;
      for (var a = e.parentElement; a && a !== d.body; a = a.parentElement) {{
        if (w.getComputedStyle(a).overflowX !== 'visible') {{ inBox = true; break; }}
      }}
      if (inBox) continue;
      var r = e.getBoundingClientRect();
      if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5))
        sticking.push(e.tagName.toLowerCase() + '.' + e.getAttribute('class') + ' [' + Math.round(r.left) + ', ' + Math.round(r.right) + ']');
    }}
    var cols = [];
    d.querySelectorAll('[data-column]').forEach(function (c) {{
      cols.push({{name: c.getAttribute('data-column'), text: c.innerText}});
    }});
    out.textContent = JSON.stringify({{
      viewport: vw, inner_width: w.innerWidth, scroll_width: root.scrollWidth,
      body_scroll_width: d.body.scrollWidth, sticking_out: sticking.slice(0, 20),
      overview: d.getElementById('overview').innerText, columns: cols, scripts: d.scripts.length
    }});
  }} catch (e) {{
    out.textContent = JSON.stringify({{error: String(e)}});
  }}
}}
</script></head>
<body><iframe id="f" src="report.html" width="{width}" height="{height}" onload="probe()"></iframe><pre id="probe"></pre></body></html>
"#
    )
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn probe_of(dom: &str) -> Value {
    let start = dom
        .find("<pre id=\"probe\">")
        .expect("the probe in the dumped DOM")
        + 16;
    let end = start + dom[start..].find("</pre>").unwrap();
    let probe: Value = serde_json::from_str(&unescape(&dom[start..end]))
        .unwrap_or_else(|e| panic!("probe JSON: {e}: {}", &dom[start..end]));
    assert!(probe.get("error").is_none(), "probe failed: {probe}");
    probe
}

/// The text of a DOM dump: tags dropped, entities decoded, whitespace collapsed.
fn dom_text(dom: &str) -> String {
    let body = &dom[dom.find("<body").unwrap_or(0)..];
    let mut out = String::new();
    let mut in_tag = false;
    for ch in body.chars() {
        match ch {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A decoded PNG: size and RGB pixels.
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

/// Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes).
fn decode_png(bytes: &[u8]) -> Image {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG (signature)"
    );
    let mut pos = 8;
    let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
                assert_eq!(data[12], 0, "interlaced PNG");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    assert!(width > 0 && height > 0, "no IHDR");
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("PNG data inflates");
    let stride = width as usize * channels;
    assert_eq!(raw.len(), height as usize * (stride + 1), "PNG data size");
    let mut pixels = vec![0u8; height as usize * stride];
    for y in 0..height as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            } as i16;
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            } as i16;
            let c = if x >= channels && y > 0 {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            } as i16;
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predicted as u8);
        }
    }
    let rgb = pixels
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Image { width, height, rgb }
}

/// The screenshot is a PNG of the asked size with a page on it, not a blank or error screen.
fn check_screenshot(path: &Path, width: u32, height: u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let img = decode_png(&bytes);
    assert_eq!(
        (img.width, img.height),
        (width, height),
        "{}",
        path.display()
    );
    let mut colours: BTreeMap<[u8; 3], usize> = BTreeMap::new();
    for p in &img.rgb {
        *colours.entry(*p).or_default() += 1;
    }
    let (background, most) = colours.iter().max_by_key(|(_, n)| **n).unwrap();
    let share = *most as f64 / img.rgb.len() as f64;
    assert!(
        colours.len() >= 50,
        "{}: only {} colours, a blank page?",
        path.display(),
        colours.len()
    );
    assert!(
        share < 0.9,
        "{}: {:.0}% of the pixels are {background:?}",
        path.display(),
        share * 100.0
    );
    // Text and bars: a fair number of dark pixels (the ink is dark on a light page).
    let dark = img
        .rgb
        .iter()
        .filter(|p| p.iter().map(|c| *c as u32).sum::<u32>() < 3 * 110)
        .count();
    assert!(
        dark as f64 / img.rgb.len() as f64 > 0.005,
        "{}: hardly any text ({dark} dark pixels)",
        path.display()
    );
}

#[test]
fn report_renders_in_chromium_on_a_phone_and_a_desktop() {
    let bin = chromium();
    let dir = tempfile::tempdir().unwrap();
    let profile = sample_profile(dir.path(), "p.json");
    let html_path = dir.path().join("report.html");
    report(&profile, &html_path);
    let p = json(&profile);
    let out_dir = artifacts();
    std::fs::copy(&html_path, out_dir.join("report.html")).unwrap();

    let rows = thousands(p["row_count"].as_u64().unwrap());
    let dups = thousands(p["duplicate_row_count"].as_u64().unwrap());
    let source = p["sources"][0]["uri"].as_str().unwrap();

    // The page itself: no scripts, so the DOM is the markup; its text has the figures.
    let url = format!("file://{}", html_path.display());
    let dom = run_chromium(&bin, 1280, 2400, &["--dump-dom".into()], &url);
    assert!(!dom.to_ascii_lowercase().contains("<script"), "no scripts");
    let page = dom_text(&dom);
    for figure in [&rows, &dups, "4 of 4", source, "Overview"] {
        assert!(page.contains(figure), "the page's text lacks {figure}");
    }
    for c in columns(&p) {
        assert!(page.contains(c["name"].as_str().unwrap()), "{}", c["name"]);
    }

    for (label, width, height) in [("phone", 390u32, 844u32), ("desktop", 1280, 2400)] {
        let harness_path = dir.path().join(format!("harness-{label}.html"));
        std::fs::write(&harness_path, harness(width, height)).unwrap();
        let url = format!("file://{}", harness_path.display());
        let dom = run_chromium(
            &bin,
            width,
            height,
            &["--allow-file-access-from-files".into(), "--dump-dom".into()],
            &url,
        );
        let probe = probe_of(&dom);
        assert_eq!(probe["viewport"], width, "{label}: {probe}");
        assert_eq!(probe["scripts"], 0, "{label}: the report runs no script");
        assert!(
            probe["scroll_width"].as_u64().unwrap() <= width as u64
                && probe["body_scroll_width"].as_u64().unwrap() <= width as u64,
            "{label}: the page scrolls sideways: {} px wide in a {width} px viewport; sticking out: {}",
            probe["scroll_width"],
            probe["sticking_out"]
        );
        assert_eq!(
            probe["sticking_out"].as_array().unwrap().len(),
            0,
            "{label}: elements stick out of the {width} px viewport: {}",
            probe["sticking_out"]
        );
        // What a person sees: the overview's figures...
        let overview = probe["overview"].as_str().unwrap();
        for figure in [&rows, "15", &dups, "4 of 4", "row_based", source] {
            assert!(
                overview.contains(figure),
                "{label}: overview lacks {figure}:\n{overview}"
            );
        }
        // ...and every column's card, with its name and its key numbers.
        let cards = probe["columns"].as_array().unwrap();
        assert_eq!(cards.len(), columns(&p).len(), "{label}: cards");
        for (card, c) in cards.iter().zip(columns(&p)) {
            let name = c["name"].as_str().unwrap();
            assert_eq!(card["name"], name, "{label}: card order");
            let seen = card["text"].as_str().unwrap();
            let mut figures = vec![
                name.to_string(),
                c["inferred_type"].as_str().unwrap().to_string(),
                thousands(c["distinct_count"].as_u64().unwrap()),
                format!("({})", thousands(c["null_count"].as_u64().unwrap())),
            ];
            if let Some(top) = c["top_values"].as_array().and_then(|t| t.first()) {
                figures.push(thousands(top["count"].as_u64().unwrap()));
            }
            if let Some(v) = c["quantiles"]["p50"].as_str() {
                figures.push(v.to_string());
            }
            for figure in figures {
                assert!(
                    seen.contains(&figure),
                    "{label}: {name} lacks {figure}:\n{seen}"
                );
            }
        }
        let shot = out_dir.join(format!("report-{label}.png"));
        let _ = std::fs::remove_file(&shot);
        run_chromium(
            &bin,
            width,
            height,
            &[format!("--screenshot={}", shot.display())],
            &url,
        );
        check_screenshot(&shot, width, height);
    }
}
