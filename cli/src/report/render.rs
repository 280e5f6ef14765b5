//! The report page: an overview card, then one card per column. One HTML document with its CSS
//! inline and its charts as inline SVG; no scripts, no fonts, no links to anything outside it.

use super::compare::{self, Previous};
use super::html::esc;
use super::svg::{self, Axis};
use crate::numfmt::{self, count, percent};
use serde_json::Value;
use std::fmt::Write;
use truthound_profile::TableProfile;
use truthound_profile::kernel::TemporalUnit;
use truthound_profile::kernel::column::Unit;
use truthound_profile::profile::{ColumnProfile, Estimate, QUANTILES, ValueCount, render_temporal};

const STYLE: &str = include_str!("style.css");

/// The whole page; with `previous`, compared with that profile.
pub fn page(p: &TableProfile, previous: Option<&Previous>) -> String {
    let mut s = String::with_capacity(64 * 1024 + p.columns.len() * 8 * 1024);
    let name = dataset_name(p);
    let _ = write!(
        s,
        concat!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<meta name=\"generator\" content=\"th report ({gen} {ver})\">\n",
            "<title>{name} · profile · {rows} rows × {cols} columns</title>\n",
            "<style>\n{style}</style>\n</head>\n<body>\n"
        ),
        gen = esc(&p.generator.name),
        ver = esc(&p.generator.version),
        name = esc(&name),
        rows = count(p.row_count),
        cols = count(p.column_count),
        style = STYLE,
    );
    let _ = write!(
        s,
        concat!(
            "<header class=\"page-head\">\n<p class=\"eyebrow\">Data profile</p>\n",
            "<h1>{name}</h1>\n<p class=\"sub\">{rows} rows × {cols} columns · profiled {at}</p>\n",
            "</header>\n<main>\n"
        ),
        name = esc(&name),
        rows = count(p.row_count),
        cols = count(p.column_count),
        at = esc(&timestamp(&p.profiled_at)),
    );
    overview(&mut s, p);
    if let Some(prev) = previous {
        compare::overview(&mut s, prev, p);
    }
    s.push_str("<section class=\"columns\" aria-label=\"Columns\">\n");
    for (i, c) in p.columns.iter().enumerate() {
        column(&mut s, i, c, p, previous);
    }
    s.push_str("</section>\n");
    if let Some(prev) = previous {
        compare::removed(&mut s, prev);
    }
    let _ = write!(
        s,
        concat!(
            "</main>\n<footer class=\"page-foot\">\n",
            "<p>Written by <code>th report</code> from a profile in format {fmt} by {gen} {ver}. ",
            "Exact figures are counted; estimates are marked ≈ and carry their bounds.</p>\n",
            "</footer>\n</body>\n</html>\n"
        ),
        fmt = esc(&p.schema_version),
        gen = esc(&p.generator.name),
        ver = esc(&p.generator.version),
    );
    s
}

/// The name a person calls the dataset: the last segment of its URI.
fn dataset_name(p: &TableProfile) -> String {
    match p.sources.as_slice() {
        [] => "profile".into(),
        [one] => {
            let uri = one.uri.trim_end_matches('/');
            let last = uri.rsplit(['/', '\\']).next().unwrap_or(uri);
            if last.is_empty() {
                uri.to_string()
            } else {
                last.to_string()
            }
        }
        many => format!("{} datasets", many.len()),
    }
}

/// `2026-11-21T12:49:59.163229411Z` → `2026-11-21 12:49:59 UTC`.
pub(super) fn timestamp(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((date, time)) if time.ends_with('Z') => {
            let hms = time.trim_end_matches('Z').split('.').next().unwrap_or(time);
            format!("{date} {hms} UTC")
        }
        _ => rfc3339.to_string(),
    }
}

/// A figure tile of the overview.
fn tile(s: &mut String, label: &str, value: &str, note: &str) {
    let _ = write!(
        s,
        "<div class=\"tile\"><dt>{}</dt><dd><span class=\"big\">{}</span>",
        esc(label),
        esc(value)
    );
    if !note.is_empty() {
        let _ = write!(s, "<span class=\"note\">{}</span>", esc(note));
    }
    s.push_str("</dd></div>\n");
}

/// `exact`, or the method and bounds of an estimate.
fn bounds_note(e: &Estimate) -> String {
    if e.exact {
        return "exact".into();
    }
    let mut note = method_name(&e.method).to_string();
    if let (Some(lo), Some(hi)) = (e.lower_bound, e.upper_bound) {
        let _ = write!(
            note,
            ", between {} and {}",
            count(lo.max(0.0).floor() as u64),
            count(hi.max(0.0).ceil() as u64)
        );
        if let Some(c) = e.confidence {
            let _ = write!(note, " ({})", percent(c));
        }
    }
    note
}

fn method_name(method: &str) -> &str {
    match method {
        "hll" => "HyperLogLog estimate",
        "kll" => "KLL sketch",
        "frequent_items" => "frequent-items sketch",
        "exact" => "exact",
        other => other,
    }
}

fn overview(s: &mut String, p: &TableProfile) {
    s.push_str(
        "<section class=\"card overview\" id=\"overview\" aria-labelledby=\"overview-h\">\n<h2 id=\"overview-h\">Overview</h2>\n<dl class=\"tiles\">\n",
    );
    tile(s, "Rows", &count(p.row_count), "");
    tile(s, "Columns", &count(p.column_count), "");
    match p.duplicate_row_count {
        Some(d) => {
            let est = p.accuracy.duplicate_row_count.as_ref();
            let approx = est.is_some_and(|e| !e.exact);
            let mut note = p
                .duplicate_row_ratio
                .map(|r| format!("{} of rows", percent(r)))
                .unwrap_or_default();
            if let Some(e) = est {
                let _ = write!(note, " · {}", bounds_note(e));
            }
            let value = format!("{}{}", if approx { "≈ " } else { "" }, count(d));
            tile(s, "Duplicate rows", &value, note.trim_start_matches(" · "));
        }
        None => {
            // A backend that could not hash whole rows says why (e.g. the spark backend).
            let why = p
                .unavailable
                .iter()
                .find(|u| u.statistic == "duplicate_row_count")
                .map_or("not computed", |u| u.reason.as_str());
            tile(s, "Duplicate rows", "—", why)
        }
    }
    tile(
        s,
        "Duration",
        &numfmt::duration_ms(p.profile_duration_ms),
        &format!(
            "task time {}",
            numfmt::duration_ms(p.partitioning.task_time_ms)
        ),
    );
    let part = &p.partitioning;
    tile(
        s,
        "Tasks",
        &format!(
            "{} of {}",
            count(part.tasks_merged),
            count(part.tasks_total)
        ),
        &part.strategies.join(", "),
    );
    tile(s, "Read", &numfmt::bytes(part.bytes_read), "from storage");
    s.push_str("</dl>\n");
    if let Some(sm) = &p.sampling {
        let seed = sm
            .seed
            .map_or("merged samples with different seeds".to_string(), |seed| {
                format!("seed {seed}")
            });
        let _ = writeln!(
            s,
            "<p class=\"callout info\"><strong>Sampled {} of the rows</strong> ({}): {} of {} rows scanned were kept; every figure describes the sample.</p>",
            esc(&percent(sm.fraction)),
            esc(&seed),
            count(p.row_count),
            count(sm.rows_scanned)
        );
    }
    if !part.missing_tasks.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"callout warn\"><strong>Incomplete:</strong> tasks missing ({}); the profile covers only part of the data.</p>",
            esc(&part.missing_tasks.join("; "))
        );
    }
    s.push_str("<dl class=\"meta\">\n");
    let _ = write!(
        s,
        "<div><dt>{}</dt><dd><ul class=\"sources\">",
        if p.sources.len() == 1 {
            "Source"
        } else {
            "Sources"
        }
    );
    for src in &p.sources {
        let _ = write!(
            s,
            "<li><code>{}</code> <span class=\"muted\">plan {}</span></li>",
            esc(&src.uri),
            esc(&src.plan_id)
        );
    }
    s.push_str("</ul></dd></div>\n");
    let _ = writeln!(
        s,
        "<div><dt>Partitioning</dt><dd>{} · {} of {} tasks merged</dd></div>",
        esc(&part.strategies.join(", ")),
        count(part.tasks_merged),
        count(part.tasks_total)
    );
    let _ = write!(
        s,
        "<div><dt>Profiled</dt><dd>{} in {}</dd></div>\n<div><dt>Generator</dt><dd>{} {} · format {}</dd></div>\n</dl>\n",
        esc(&timestamp(&p.profiled_at)),
        esc(&numfmt::duration_ms(p.profile_duration_ms)),
        esc(&p.generator.name),
        esc(&p.generator.version),
        esc(&p.schema_version)
    );
    // The columns at a glance, each linking to its card.
    s.push_str(concat!(
        "<h3>Columns</h3>\n<div class=\"scroll\"><table class=\"index\">\n",
        "<thead><tr><th scope=\"col\">Column</th><th scope=\"col\">Inferred</th>",
        "<th scope=\"col\" class=\"num\">Nulls</th><th scope=\"col\" class=\"num\">Distinct</th>",
        "<th scope=\"col\">Type</th><th scope=\"col\">Min</th><th scope=\"col\">Max</th></tr></thead>\n<tbody>\n"
    ));
    for (i, c) in p.columns.iter().enumerate() {
        let _ = writeln!(
            s,
            "<tr><th scope=\"row\"{}><a href=\"#col-{}\">{}</a></th><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            // Derived columns indented under their nested column.
            match crate::show::depth(p, c) {
                0 => String::new(),
                d => format!(" style=\"padding-left:{}em\"", d.min(6)),
            },
            i + 1,
            esc(&c.name),
            esc(&c.inferred_type),
            esc(&percent(c.null_ratio)),
            esc(&distinct_short(c)),
            esc(&c.physical_type),
            value_cell(
                c,
                numfmt::bound(c.min.as_ref(), c.neg_inf_count, "-inf"),
                24
            ),
            value_cell(c, numfmt::bound(c.max.as_ref(), c.pos_inf_count, "inf"), 24),
        );
    }
    s.push_str("</tbody></table></div>\n</section>\n");
}

fn distinct_short(c: &ColumnProfile) -> String {
    let approx = c.accuracy.distinct_count.as_ref().is_some_and(|e| !e.exact);
    c.distinct_count
        .map(|d| format!("{}{}", if approx { "≈ " } else { "" }, count(d)))
        .unwrap_or_else(|| "—".into())
}

/// A value as page text: escaped, long ones cut (the whole value in the tooltip), the empty
/// string and nulls spelled out.
fn value_cell(c: &ColumnProfile, v: Option<String>, max: usize) -> String {
    match v {
        None => "<span class=\"muted\">—</span>".into(),
        Some(text) if text.is_empty() && !numfmt::is_float(c) => {
            "<span class=\"special\">(empty string)</span>".into()
        }
        Some(text) if text.chars().count() > max => {
            let cut: String = text.chars().take(max.saturating_sub(1)).collect();
            format!(
                "<span class=\"val\" title=\"{}\">{}…</span>",
                esc(&text),
                esc(&cut)
            )
        }
        Some(text) => format!("<span class=\"val\">{}</span>", esc(&text)),
    }
}

/// A top or bottom value: JSON `null` among a float column's values is an infinity.
fn listed_value(c: &ColumnProfile, v: &Value) -> String {
    match numfmt::value(v) {
        None => format!("<span class=\"special\">{}</span>", numfmt::null_value(c)),
        some => value_cell(c, some, 80),
    }
}

/// The temporal unit of a column, from its Arrow type (`Date32`, `Timestamp(µs, "+00:00")`, ...).
fn temporal_unit(physical: &str) -> Option<TemporalUnit> {
    let unit = || {
        let inner = physical.split_once('(')?.1;
        match inner.split([',', ')']).next()?.trim() {
            "s" | "Second" => Some(Unit::Second),
            "ms" | "Millisecond" => Some(Unit::Millisecond),
            "µs" | "us" | "Microsecond" => Some(Unit::Microsecond),
            "ns" | "Nanosecond" => Some(Unit::Nanosecond),
            _ => None,
        }
    };
    Some(match physical {
        "Date32" => TemporalUnit::Date,
        "Date64" => TemporalUnit::DateMillis,
        t if t.starts_with("Timestamp(") => TemporalUnit::Timestamp {
            unit: unit()?,
            tz: None,
        },
        t if t.starts_with("Time32(") || t.starts_with("Time64(") => TemporalUnit::Time(unit()?),
        t if t.starts_with("Duration(") => TemporalUnit::Duration(unit()?),
        _ => return None,
    })
}

fn column(
    s: &mut String,
    i: usize,
    c: &ColumnProfile,
    p: &TableProfile,
    previous: Option<&Previous>,
) {
    let id = i + 1;
    let drifted = previous.is_some_and(|prev| prev.drift.drifted_columns().contains(&c.name));
    // A nested column's derived columns follow it, indented a step per level.
    let depth = crate::show::depth(p, c);
    let _ = writeln!(
        s,
        "<article class=\"card column{}{}\" id=\"col-{id}\" data-column=\"{}\"{} aria-labelledby=\"col-{id}-h\">",
        if drifted { " drifted" } else { "" },
        if depth > 0 { " derived" } else { "" },
        esc(&c.name),
        if depth > 0 {
            format!(" style=\"--depth:{}\"", depth.min(6))
        } else {
            String::new()
        },
    );
    let _ = write!(
        s,
        "<header class=\"col-head\"><h2 id=\"col-{id}-h\"><span class=\"idx\">{id}</span><span class=\"name\">{}</span></h2>\n<p class=\"badges\"><code class=\"badge type\" title=\"Arrow type\">{}</code><span class=\"badge kind\" title=\"inferred type\">{}</span>",
        esc(&c.name),
        esc(&c.physical_type),
        esc(&c.inferred_type)
    );
    let non_null = c.row_count.saturating_sub(c.null_count);
    if non_null == 0 {
        s.push_str("<span class=\"badge flag warn\">all null</span>");
    } else {
        if c.is_unique == Some(true) {
            s.push_str("<span class=\"badge flag\">unique</span>");
        }
        if c.is_constant == Some(true) {
            s.push_str("<span class=\"badge flag\">constant</span>");
        }
    }
    if let Some(prev) = previous {
        compare::badge(s, prev, c);
    }
    s.push_str("</p>");
    let link = |name: &str| match p.columns.iter().position(|x| x.name == name) {
        Some(k) => format!("<a href=\"#col-{}\"><code>{}</code></a>", k + 1, esc(name)),
        None => format!("<code>{}</code>", esc(name)),
    };
    if let Some(parent) = &c.parent {
        let _ = write!(
            s,
            "<p class=\"path\">{} of {}</p>",
            derived_role(&c.name, parent),
            link(parent)
        );
    }
    let children: Vec<String> = p
        .columns
        .iter()
        .filter(|x| x.parent.as_deref() == Some(c.name.as_str()))
        .map(|x| link(&x.name))
        .collect();
    if !children.is_empty() {
        let _ = write!(
            s,
            "<p class=\"path\">Profiled as {}</p>",
            children.join(", ")
        );
    }
    s.push_str("</header>\n");

    // Completeness: nulls, NaN, infinities, empty strings, each a share of the rows.
    s.push_str("<div class=\"meters\">\n");
    meter_row(s, "Nulls", c.null_count, c.row_count, "null");
    if let Some(n) = c.nan_count {
        meter_row(s, "NaN", n, c.row_count, "nan");
    }
    let inf = c.pos_inf_count.unwrap_or(0) + c.neg_inf_count.unwrap_or(0);
    if inf > 0 {
        meter_row(s, "±inf", inf, c.row_count, "inf");
    }
    if let Some(n) = c.empty_string_count {
        let what = if c.inferred_type == "binary" {
            "Empty values"
        } else {
            "Empty strings"
        };
        meter_row(s, what, n, c.row_count, "empty");
    }
    if let Some(n) = c.empty_list_count {
        meter_row(s, "Empty", n, c.row_count, "empty");
    }
    s.push_str("</div>\n");

    stats(s, c);
    if let Some(prev) = previous {
        compare::column(s, prev, c);
    }

    let temporal = temporal_unit(&c.physical_type);
    if let Some(bins) = c.histogram.as_ref().filter(|b| !b.is_empty()) {
        let full = |x: f64| -> String {
            match &temporal {
                Some(unit) => {
                    numfmt::value(&render_temporal(unit, x.round() as i64)).unwrap_or_default()
                }
                None => numfmt::float(x),
            }
        };
        // Datetimes on the axis: dates when the range spans days, else times of day.
        let (first, last) = (full(bins[0].lower), full(bins[bins.len() - 1].upper));
        let same_day = first.split_once('T').map(|d| d.0) == last.split_once('T').map(|d| d.0);
        let tick = |x: f64| -> String {
            let text = full(x);
            match text.split_once('T') {
                Some((date, _)) if !same_day => date.to_string(),
                Some((_, time)) => time.trim_end_matches('Z').to_string(),
                None => text,
            }
        };
        let axis = if temporal.is_some() {
            Axis::Temporal {
                tick: &tick,
                full: &full,
            }
        } else {
            Axis::Numbers
        };
        let _ = write!(
            s,
            "<h3>Histogram</h3>\n<figure class=\"chart\">{}<figcaption>{} {} · {}</figcaption></figure>\n",
            svg::histogram(bins, &axis, &c.name),
            count(bins.len() as u64),
            if bins.len() == 1 { "bin" } else { "bins" },
            esc(&accuracy_note(c.accuracy.histogram.as_ref(), "bin counts"))
        );
    }

    if c.histogram.is_none() && c.quantiles.is_some() && inf > 0 {
        s.push_str("<h3>Histogram</h3>\n<p class=\"fine\">No histogram: the values include infinities, so the bins have no finite range.</p>\n");
    }

    if let Some(q) = c.quantiles.as_ref().filter(|q| !q.is_empty()) {
        s.push_str("<h3>Quantiles</h3>\n");
        if temporal.is_none() {
            let num = |name: &str| q.get(name).and_then(Value::as_f64);
            if let Some(plot) = svg::box_plot(&num, &c.name) {
                let _ = writeln!(s, "<figure class=\"chart\">{plot}</figure>");
            }
        }
        let long = q
            .values()
            .any(|v| numfmt::value(v).is_some_and(|t| t.chars().count() > 10));
        s.push_str(if long {
            "<dl class=\"quantiles long\">"
        } else {
            "<dl class=\"quantiles\">"
        });
        for (name, _) in QUANTILES {
            if let Some(v) = q.get(name) {
                let _ = write!(
                    s,
                    "<div><dt>{}</dt><dd>{}</dd></div>",
                    esc(name),
                    value_cell(c, numfmt::value(v), 40)
                );
            }
        }
        let _ = write!(
            s,
            "</dl>\n<p class=\"fine\">{}</p>\n",
            esc(&accuracy_note(c.accuracy.quantiles.as_ref(), "quantiles"))
        );
    }

    if let Some(q) = c.length_quantiles.as_ref().filter(|q| !q.is_empty()) {
        s.push_str("<h3>Length quantiles</h3>\n<dl class=\"quantiles\">");
        for (name, _) in QUANTILES {
            if let Some(v) = q.get(name).and_then(numfmt::value) {
                let _ = write!(s, "<div><dt>{}</dt><dd>{}</dd></div>", esc(name), esc(&v));
            }
        }
        let _ = write!(
            s,
            "</dl>\n<p class=\"fine\">{}</p>\n",
            esc(&accuracy_note(
                c.accuracy.length_quantiles.as_ref(),
                if c.inferred_type == "binary" {
                    "lengths in bytes"
                } else {
                    "lengths in elements"
                }
            ))
        );
    }

    if !c.top_values.is_empty() {
        s.push_str("<h3>Most frequent</h3>\n");
        values_table(s, c, &c.top_values);
        let _ = writeln!(
            s,
            "<p class=\"fine\">{}</p>",
            esc(&top_note(c.accuracy.top_values.as_ref()))
        );
    }
    // Least frequent values, unless the most frequent already list every value.
    let all_listed = c.accuracy.top_values.as_ref().is_some_and(|e| e.exact)
        && c.distinct_count == Some(c.top_values.len() as u64);
    if let Some(bottom) = c
        .bottom_values
        .as_ref()
        .filter(|b| !b.is_empty() && !all_listed)
    {
        s.push_str("<h3>Least frequent</h3>\n<ul class=\"chips\">");
        for v in bottom {
            let _ = write!(
                s,
                "<li>{} <span class=\"count\">× {}</span></li>",
                listed_value(c, &v.value),
                count(v.count)
            );
        }
        s.push_str("</ul>\n");
    }

    if !c.detected_patterns.is_empty() {
        s.push_str("<h3>Patterns</h3>\n");
        let rows: Vec<(String, u64, f64)> = c
            .detected_patterns
            .iter()
            .map(|m| (esc(&m.pattern).into_owned(), m.match_count, m.match_ratio))
            .collect();
        bar_table(s, "Pattern", "Matches", &rows, "of non-empty strings");
        s.push_str("<p class=\"fine\">share of the non-empty strings</p>\n");
    }
    for u in &c.unavailable {
        let _ = writeln!(
            s,
            "<p class=\"fine\">{}: {}</p>",
            esc(&u.statistic.replace('_', " ")),
            esc(&u.reason)
        );
    }
    if non_null == 0 && p.row_count > 0 {
        s.push_str("<p class=\"fine\">Every value of this column is null.</p>\n");
    }
    s.push_str("</article>\n");
}

/// What a derived column is of its parent: a field, the elements, the keys or the values.
fn derived_role(name: &str, parent: &str) -> &'static str {
    match name.strip_prefix(parent).unwrap_or_default() {
        s if s.starts_with("[]") => "Elements",
        s if s.starts_with("{key}") => "Keys",
        s if s.starts_with("{value}") => "Values",
        _ => "Field",
    }
}

fn meter_row(s: &mut String, label: &str, n: u64, of: u64, class: &str) {
    let ratio = if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let _ = writeln!(
        s,
        "<div class=\"meter-row\"><span class=\"label\">{}</span>{}<span class=\"num\">{} <span class=\"muted\">({})</span></span></div>",
        esc(label),
        svg::meter(
            ratio,
            class,
            &format!("{label}: {} of rows", percent(ratio))
        ),
        esc(&percent(ratio)),
        count(n)
    );
}

fn stat(s: &mut String, label: &str, value: &str, note: &str) {
    let _ = write!(s, "<div><dt>{}</dt><dd>{}", esc(label), value);
    finish_stat(s, note);
}

/// A figure whose value may be long (a string min or max): it takes a whole row when it is.
fn wide_stat(s: &mut String, label: &str, html: &str, wide: bool) {
    let class = if wide { " class=\"wide\"" } else { "" };
    let _ = write!(s, "<div{class}><dt>{}</dt><dd>{}", esc(label), html);
    finish_stat(s, "");
}

fn finish_stat(s: &mut String, note: &str) {
    if !note.is_empty() {
        let _ = write!(s, " <span class=\"note\">{}</span>", esc(note));
    }
    s.push_str("</dd></div>");
}

fn stats(s: &mut String, c: &ColumnProfile) {
    s.push_str("<dl class=\"stats\">");
    // Min and max side by side, or a row each when either is long; none for booleans, whose
    // true and false counts say more.
    let min = numfmt::bound(c.min.as_ref(), c.neg_inf_count, "-inf");
    let max = numfmt::bound(c.max.as_ref(), c.pos_inf_count, "inf");
    if (min.is_some() || max.is_some()) && c.true_count.is_none() {
        let len = |v: &Option<String>| v.as_ref().map_or(0, |v| v.chars().count());
        let wide = len(&min).max(len(&max)) > 14;
        wide_stat(s, "Min", &value_cell(c, min, 80), wide);
        wide_stat(s, "Max", &value_cell(c, max, 80), wide);
    }
    if let Some(d) = c.distinct_count {
        let est = c.accuracy.distinct_count.as_ref();
        let approx = est.is_some_and(|e| !e.exact);
        let mut note = est.map(bounds_note).unwrap_or_default();
        if let Some(u) = c.unique_ratio.filter(|_| d > 0) {
            let _ = write!(note, " · {} unique", percent(u));
        }
        stat(
            s,
            "Distinct",
            &format!("{}{}", if approx { "≈ " } else { "" }, count(d)),
            note.trim_start_matches(" · "),
        );
    }
    if let Some(d) = &c.distribution {
        let f = |v: Option<f64>| v.map(numfmt::float);
        if let Some(m) = f(d.mean) {
            stat(s, "Mean", &esc(&m), "");
        } else if c.pos_inf_count.unwrap_or(0) + c.neg_inf_count.unwrap_or(0) > 0 {
            stat(
                s,
                "Mean",
                "<span class=\"muted\">undefined</span>",
                "values include ±inf",
            );
        }
        if let Some(v) = f(d.std) {
            stat(s, "Std dev", &esc(&v), "");
        }
        if let Some(v) = f(d.median) {
            stat(s, "Median", &esc(&v), "");
        }
        if let Some(v) = f(d.skewness) {
            stat(s, "Skewness", &esc(&v), "");
        }
        if let Some(v) = f(d.kurtosis) {
            stat(s, "Kurtosis", &esc(&v), "excess");
        }
    }
    if let Some(v) = c.sum.as_ref().and_then(numfmt::value) {
        stat(s, "Sum", &esc(&v), "");
    }
    if let Some(n) = c.zero_count {
        stat(s, "Zeros", &count(n), "");
    }
    if let Some(n) = c.negative_count {
        stat(s, "Negatives", &count(n), "");
    }
    if let (Some(t), Some(f)) = (c.true_count, c.false_count) {
        stat(s, "True", &count(t), "");
        stat(s, "False", &count(f), "");
    }
    if let (Some(lo), Some(hi)) = (c.min_length, c.max_length) {
        let avg = c
            .avg_length
            .map(|a| format!("avg {}", numfmt::float((a * 100.0).round() / 100.0)))
            .unwrap_or_default();
        stat(s, "Length", &format!("{} – {}", count(lo), count(hi)), &avg);
    }
    s.push_str("</dl>\n");
}

fn values_table(s: &mut String, c: &ColumnProfile, values: &[ValueCount]) {
    let rows: Vec<(String, u64, f64)> = values
        .iter()
        .map(|v| (listed_value(c, &v.value), v.count, v.ratio))
        .collect();
    bar_table(s, "Value", "Count", &rows, "of non-null values");
}

/// A table of things with a count and a share, the share drawn as a bar under each thing.
fn bar_table(s: &mut String, what: &str, counted: &str, rows: &[(String, u64, f64)], of: &str) {
    let _ = write!(
        s,
        concat!(
            "<div class=\"scroll\"><table class=\"values\"><thead><tr><th scope=\"col\">{}</th>",
            "<th scope=\"col\" class=\"num\">{}</th><th scope=\"col\" class=\"num\">Share</th></tr></thead><tbody>\n"
        ),
        esc(what),
        esc(counted)
    );
    for (html, n, ratio) in rows {
        let _ = writeln!(
            s,
            "<tr><td class=\"v\"><div class=\"vt\">{html}</div>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            svg::meter(*ratio, "accent", &format!("{} {of}", percent(*ratio))),
            count(*n),
            esc(&percent(*ratio))
        );
    }
    s.push_str("</tbody></table></div>\n");
}

fn accuracy_note(e: Option<&Estimate>, what: &str) -> String {
    match e {
        None => String::new(),
        Some(e) if e.exact => format!("exact {what}"),
        Some(e) => {
            let mut note = format!("{what} from a {}", method_name(&e.method));
            if let Some(r) = e.normalized_rank_error {
                let _ = write!(note, ", rank error ±{}", percent(r));
            }
            if let Some(c) = e.confidence {
                let _ = write!(note, " at {} confidence", percent(c));
            }
            note
        }
    }
}

fn top_note(e: Option<&Estimate>) -> String {
    match e {
        None => String::new(),
        Some(e) if e.exact => "exact counts; share of non-null values".into(),
        Some(e) => {
            let mut note = format!("counts from a {}", method_name(&e.method));
            if let Some(err) = e.max_count_error {
                let _ = write!(note, ", each within ±{}", count(err));
            }
            note.push_str("; share of non-null values");
            note
        }
    }
}
