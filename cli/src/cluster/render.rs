//! How ProfileJobs print: the table of `get` and `list`, the text of `describe`, the result of
//! `wait`. Every function takes `now` (Unix seconds) so that ages print the same in tests.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use std::fmt::Write as _;
use truthound_operator::ProfileJob;
use truthound_operator::crd::{ProfileJobStatus, StorageOptionsSpec};

/// Left-aligned columns three spaces apart, kubectl-style; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub use crate::numfmt::count as thousands;

/// An age as kubectl prints it: 45s, 5m30s, 42m, 5h10m, 30h, 3d4h, 12d.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if s < 600 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if s < 3 * 3600 => format!("{m}m"),
        _ if s < 8 * 3600 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if s < 48 * 3600 => format!("{h}h"),
        _ if s < 8 * 86400 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ => format!("{d}d"),
    }
}

/// A duration of the spec or the result: 90s, 30m, 1h30m, 1d.
pub fn duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

fn seconds_of(rfc3339: &str) -> Option<i64> {
    rfc3339.parse::<Timestamp>().ok().map(|t| t.as_second())
}

fn age_of(rfc3339: &str, now: i64) -> String {
    seconds_of(rfc3339).map_or_else(|| "-".to_string(), |t| age(now - t))
}

fn created(pj: &ProfileJob) -> Option<i64> {
    pj.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

pub fn phase(pj: &ProfileJob) -> &'static str {
    pj.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("Pending", |p| p.name())
}

fn backend_name(pj: &ProfileJob) -> String {
    pj.status
        .as_ref()
        .and_then(|s| s.backend.as_ref())
        .map_or_else(
            || pj.spec.backend.kind.name().to_string(),
            |b| b.kind.clone(),
        )
}

/// The rows of `get` and `list`: the CRD's printer columns.
pub fn job_rows(jobs: &[ProfileJob], with_namespace: bool, now: i64) -> Vec<Vec<String>> {
    let mut header = vec!["NAME", "BACKEND", "STATE", "TASKS", "PROGRESS", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for pj in jobs {
        let status = pj.status.clone().unwrap_or_default();
        let mut row = vec![
            or_dash(pj.metadata.name.as_deref()),
            backend_name(pj),
            phase(pj).to_string(),
            or_dash(status.tasks.as_ref().map(|t| t.summary.as_str())),
            or_dash(status.progress.as_ref().map(|p| p.display.as_str())),
            created(pj).map_or_else(|| "-".to_string(), |t| age(now - t)),
        ];
        if with_namespace {
            row.insert(0, or_dash(pj.metadata.namespace.as_deref()));
        }
        rows.push(row);
    }
    rows
}

fn storage_options(o: &StorageOptionsSpec) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(e) = &o.endpoint {
        parts.push(format!("endpoint {e}"));
    }
    if let Some(r) = &o.region {
        parts.push(format!("region {r}"));
    }
    if o.allow_http == Some(true) {
        parts.push("allow http".to_string());
    }
    for (k, v) in &o.extra {
        parts.push(format!("{k}={v}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn progress_text(status: &ProfileJobStatus) -> Option<String> {
    let p = status.progress.as_ref()?;
    let mut parts = vec![p.display.clone()];
    if p.rows_total > 0 {
        parts.push(format!(
            "{}/{} rows",
            thousands(p.rows_processed),
            thousands(p.rows_total)
        ));
    } else if p.rows_processed > 0 {
        parts.push(format!("{} rows", thousands(p.rows_processed)));
    }
    if p.rows_per_second > 0.0 {
        parts.push(format!("{} rows/s", thousands(p.rows_per_second as u64)));
    }
    if let Some(eta) = p.eta_seconds {
        parts.push(format!("ETA {}", duration(eta)));
    }
    Some(parts.join(" · "))
}

/// One line for a job that is being followed without a terminal.
pub fn progress_line(pj: &ProfileJob) -> String {
    let status = pj.status.clone().unwrap_or_default();
    let mut parts = vec![phase(pj).to_string()];
    if let Some(t) = &status.tasks {
        parts.push(format!("{}/{} tasks", t.succeeded, t.total));
        if t.failed > 0 {
            parts.push(format!("{} failed", t.failed));
        }
    }
    if let Some(p) = progress_text(&status) {
        parts.push(p);
    }
    format!(
        "{}: {}",
        pj.metadata.name.as_deref().unwrap_or(""),
        parts.join(" · ")
    )
}

/// The text of `th describe`.
pub fn describe(pj: &ProfileJob, events: Result<&[Event], &str>, now: i64) -> String {
    let mut o = String::new();
    let spec = &pj.spec;
    let status = pj.status.clone().unwrap_or_default();
    let field = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "{:<15}{v}", format!("{k}:"));
    };
    field(&mut o, "Name", or_dash(pj.metadata.name.as_deref()));
    field(
        &mut o,
        "Namespace",
        or_dash(pj.metadata.namespace.as_deref()),
    );
    if let Some(t) = created(pj) {
        let when = pj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        field(&mut o, "Created", format!("{when} ({} ago)", age(now - t)));
    }
    if let Some(labels) = pj.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        field(&mut o, "Labels", l.join(", "));
    }

    let mut dataset = spec.dataset.uri.clone();
    if let Some(f) = spec.dataset.format {
        let _ = write!(dataset, " ({})", format!("{f:?}").to_lowercase());
    }
    field(&mut o, "Dataset", dataset);
    if let Some(cols) = &spec.dataset.columns {
        field(&mut o, "  columns", cols.join(", "));
    }
    if let Some(opts) = storage_options(&spec.dataset.options) {
        field(&mut o, "  storage", opts);
    }
    if let Some(s) = &spec.dataset.credentials_secret_ref {
        field(&mut o, "  credentials", format!("Secret {}", s.name));
    }
    field(&mut o, "Output", spec.output.uri.clone());
    if let Some(opts) = spec.output.options.as_ref().and_then(storage_options) {
        field(&mut o, "  storage", opts);
    }
    if let Some(s) = &spec.output.credentials_secret_ref {
        field(&mut o, "  credentials", format!("Secret {}", s.name));
    }
    if let Some(c) = &spec.output.cache_uri {
        field(&mut o, "  cache", c.clone());
    }

    let mut backend = spec.backend.kind.name().to_string();
    let address = spec
        .backend
        .spark
        .as_ref()
        .and_then(|s| s.connect_url.clone())
        .or_else(|| {
            spec.backend
                .dask
                .as_ref()
                .and_then(|d| d.scheduler_address.clone())
        })
        .or_else(|| spec.backend.ray.as_ref().and_then(|r| r.address.clone()));
    if let Some(a) = &address {
        let _ = write!(backend, " ({a})");
    }
    if let Some(p) = spec.backend.local.as_ref().and_then(|l| l.parallelism) {
        let _ = write!(backend, ", parallelism {p}");
    }
    if let Some(chosen) = &status.backend {
        let _ = write!(backend, "; running on {}", chosen.kind);
        if let Some(at) = chosen.address.as_ref().filter(|_| address.is_none()) {
            let _ = write!(backend, " at {at}");
        }
        if let Some(why) = &chosen.reason {
            let _ = write!(backend, " ({why})");
        }
    }
    field(&mut o, "Backend", backend);

    let p = &spec.partitioning;
    let mut parts = format!("{}", serde_json::to_value(p.strategy).unwrap_or_default())
        .trim_matches('"')
        .to_string();
    if let Some(n) = p.partitions {
        let _ = write!(parts, ", {n} partitions");
    }
    if let Some(n) = p.row_partitions {
        let _ = write!(parts, ", {n} row partitions");
    }
    if let Some(n) = p.column_partitions {
        let _ = write!(parts, ", {n} column partitions");
    }
    if let Some(c) = &p.hash_column {
        let _ = write!(parts, ", hash column {c}");
    }
    field(&mut o, "Partitioning", parts);

    let pr = &spec.profile;
    let mut profile = Vec::new();
    if let Some(v) = pr.top_k {
        profile.push(format!("top {v}"));
    }
    if let Some(v) = pr.histogram_bins {
        profile.push(format!("{v} histogram bins"));
    }
    if let Some(v) = pr.exact_distinct_limit {
        profile.push(format!("exact distinct up to {v}"));
    }
    if let Some(v) = pr.quantile_sketch_k {
        profile.push(format!("KLL k {v}"));
    }
    if pr.patterns == Some(false) {
        profile.push("no patterns".into());
    }
    if pr.duplicates == Some(false) {
        profile.push("no duplicates".into());
    }
    if let Some(s) = &pr.sampling {
        profile.push(format!(
            "sample {}% (seed {})",
            (s.fraction * 1e8).round() / 1e6,
            s.seed.unwrap_or(0)
        ));
    }
    field(
        &mut o,
        "Profile",
        if profile.is_empty() {
            "defaults".to_string()
        } else {
            profile.join(", ")
        },
    );
    let mut limits = Vec::new();
    if let Some(v) = spec.backoff_limit_per_task {
        limits.push(format!("{v} retries per task"));
    }
    if let Some(v) = spec.max_failed_tasks {
        limits.push(format!("{v} failed tasks tolerated"));
    }
    if let Some(v) = spec.active_deadline_seconds {
        limits.push(format!("deadline {}", duration(v.max(0) as u64)));
    }
    if let Some(v) = spec.ttl_seconds_after_finished {
        limits.push(format!(
            "deleted {} after finishing",
            duration(v.max(0) as u64)
        ));
    }
    if spec.suspend {
        limits.push("suspended".into());
    }
    if !limits.is_empty() {
        field(&mut o, "Limits", limits.join(", "));
    }

    let _ = writeln!(o);
    let mut state = phase(pj).to_string();
    if let Some(a) = status.attempt {
        let _ = write!(state, " (attempt {a})");
    }
    field(&mut o, "State", state);
    if let Some(t) = &status.start_time {
        field(&mut o, "Started", format!("{t} ({} ago)", age_of(t, now)));
    }
    if let Some(t) = &status.completion_time {
        field(&mut o, "Finished", format!("{t} ({} ago)", age_of(t, now)));
    }
    if let Some(p) = progress_text(&status) {
        field(&mut o, "Progress", p);
    }
    if let Some(t) = &status.tasks {
        field(
            &mut o,
            "Tasks",
            format!(
                "{} total: {} pending, {} running, {} succeeded, {} failed; {} retried{}",
                t.total,
                t.pending,
                t.running,
                t.succeeded,
                t.failed,
                t.retried,
                reused_note(t.reused)
            ),
        );
    }
    if let Some(c) = &status.completed_tasks {
        field(&mut o, "  completed", c.clone());
    }
    if let Some(f) = &status.failed_tasks {
        field(&mut o, "  failed", f.clone());
    }
    if let Some(s) = &status.submission {
        let mut text = or_dash(s.id.as_deref());
        if let Some(plan) = &s.plan_uri {
            let _ = write!(text, " (plan {plan})");
        }
        field(&mut o, "Workers", text);
    }
    if let Some(r) = &status.result {
        field(
            &mut o,
            "Result",
            format!(
                "{} rows × {} columns in {} → {}",
                thousands(r.rows),
                r.columns,
                duration(r.duration_seconds.round() as u64),
                r.profile_uri
            ),
        );
        if let Some(m) = &r.missing_tasks {
            field(
                &mut o,
                "  missing",
                format!("tasks {m} (tolerated failures)"),
            );
        }
    }

    let _ = writeln!(o, "\nConditions:");
    if status.conditions.is_empty() {
        let _ = writeln!(o, "  <none>");
    } else {
        let mut rows = vec![vec![
            "TYPE".to_string(),
            "STATUS".into(),
            "REASON".into(),
            "AGE".into(),
            "MESSAGE".into(),
        ]];
        for c in &status.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age_of(&c.last_transition_time, now),
                c.message.clone(),
            ]);
        }
        indent(&mut o, &table(&rows));
    }
    if !status.last_failures.is_empty() {
        let _ = writeln!(o, "\nLast failures:");
        let mut rows = vec![vec![
            "TASK".to_string(),
            "REASON".into(),
            "AGE".into(),
            "MESSAGE".into(),
        ]];
        for f in &status.last_failures {
            rows.push(vec![
                f.task.to_string(),
                f.reason.clone(),
                age_of(&f.time, now),
                f.message.clone(),
            ]);
        }
        indent(&mut o, &table(&rows));
    }
    let _ = writeln!(o, "\nEvents:");
    match events {
        Err(why) => {
            let _ = writeln!(o, "  <cannot list: {why}>");
        }
        Ok([]) => {
            let _ = writeln!(o, "  <none>");
        }
        Ok(events) => {
            let mut rows = vec![vec![
                "TYPE".to_string(),
                "REASON".into(),
                "AGE".into(),
                "FROM".into(),
                "MESSAGE".into(),
            ]];
            for e in events {
                rows.push(vec![
                    or_dash(e.type_.as_deref()),
                    or_dash(e.reason.as_deref()),
                    event_time(e).map_or_else(|| "-".into(), |t| age(now - t)),
                    or_dash(e.reporting_controller.as_deref()),
                    or_dash(e.note.as_deref()),
                ]);
            }
            indent(&mut o, &table(&rows));
        }
    }
    o
}

fn indent(o: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(o, "  {line}");
    }
}

/// When an event last happened (Unix seconds).
pub fn event_time(e: &Event) -> Option<i64> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.deprecated_last_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// `; 17 reused from the cache` for an incremental run, nothing otherwise.
fn reused_note(reused: u32) -> String {
    match reused {
        0 => String::new(),
        n => format!("; {n} reused from the cache"),
    }
}

/// The result of a finished job; `Err` for a failed one (its reason and message).
pub fn result(pj: &ProfileJob) -> Result<String, (String, String)> {
    let status = pj.status.clone().unwrap_or_default();
    let name = pj.metadata.name.as_deref().unwrap_or("");
    let mut o = String::new();
    let tasks = status.tasks.as_ref().map(|t| {
        let mut s = format!("{}/{} succeeded", t.succeeded, t.total);
        if t.failed > 0 {
            let _ = write!(s, ", {} failed", t.failed);
        }
        if t.retried > 0 {
            let _ = write!(s, ", {} retried", t.retried);
        }
        s.push_str(&reused_note(t.reused));
        s
    });
    if phase(pj) == "Failed" {
        let failed = status.conditions.iter().find(|c| c.type_ == "Failed");
        let reason = failed.map_or("Failed", |c| c.reason.as_str()).to_string();
        let message = failed.map_or("", |c| c.message.as_str()).to_string();
        let _ = writeln!(o, "profilejob.truthound.io/{name} failed: {reason}");
        if let Some(t) = tasks {
            let _ = writeln!(o, "  tasks    {t}");
        }
        for f in &status.last_failures {
            let _ = writeln!(o, "  task {}: {}: {}", f.task, f.reason, f.message);
        }
        return Err((o, format!("{reason}: {message}")));
    }
    let r = status.result.as_ref();
    let took = r.map(|r| format!(" in {}", duration(r.duration_seconds.round() as u64)));
    let _ = writeln!(
        o,
        "profilejob.truthound.io/{name} succeeded{}",
        took.unwrap_or_default()
    );
    match r {
        Some(r) => {
            let _ = writeln!(o, "  profile  {}", r.profile_uri);
            let _ = writeln!(
                o,
                "  rows     {} × {} columns",
                thousands(r.rows),
                r.columns
            );
            if let Some(t) = tasks {
                let _ = writeln!(o, "  tasks    {t}");
            }
            if let Some(m) = &r.missing_tasks {
                let _ = writeln!(
                    o,
                    "  missing  tasks {m} failed (tolerated by maxFailedTasks): the profile covers part of the data"
                );
            }
        }
        None => {
            let _ = writeln!(o, "  profile  {}", pj.spec.output.uri);
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_as_kubectl_does() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (330, "5m30s"),
            (600, "10m"),
            (3 * 3600 + 600, "3h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (12 * 86400, "12d"),
            (-5, "0s"),
        ] {
            assert_eq!(age(s), want, "{s}");
        }
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(86400), "1d");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(&[
            vec!["NAME".into(), "STATE".into(), "AGE".into()],
            vec!["events".into(), "Running".into(), "5m".into()],
        ]);
        assert_eq!(t, "NAME     STATE     AGE\nevents   Running   5m\n");
    }
}
