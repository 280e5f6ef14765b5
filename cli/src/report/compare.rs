//! `th report NEW --previous OLD`: the previous profile's main figures beside the new ones, per
//! column, and the columns that drifted (by `truthound_profile::drift`) marked.

use super::html::esc;
use crate::numfmt::{self, count, percent};
use std::fmt::Write;
use truthound_profile::TableProfile;
use truthound_profile::drift::Drift;
use truthound_profile::profile::ColumnProfile;

/// The profile a report is compared with, and the drift from it.
pub struct Previous<'a> {
    /// Where it was read from, as the user named it.
    pub uri: String,
    pub profile: &'a TableProfile,
    pub drift: Drift,
}

impl Previous<'_> {
    fn drifted(&self, column: &str) -> bool {
        self.drift.drifted_columns().iter().any(|c| c == column)
    }

    fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.profile.columns.iter().find(|c| c.name == name)
    }
}

/// The comparison card, after the overview: what changed as a whole, and which columns drifted.
pub fn overview(s: &mut String, prev: &Previous, p: &TableProfile) {
    let o = prev.profile;
    let drifted = prev.drift.drifted_columns();
    s.push_str(
        "<section class=\"card overview previous\" id=\"previous\" aria-labelledby=\"previous-h\">\n<h2 id=\"previous-h\">Compared with the previous profile</h2>\n<dl class=\"tiles\">\n",
    );
    let tile = |s: &mut String, label: &str, old: String, new: String| {
        let _ = writeln!(
            s,
            "<div class=\"tile\"><dt>{}</dt><dd><span class=\"big\">{}</span><span class=\"note\">previously {}</span></dd></div>",
            esc(label),
            esc(&new),
            esc(&old)
        );
    };
    tile(s, "Rows", count(o.row_count), count(p.row_count));
    tile(s, "Columns", count(o.column_count), count(p.column_count));
    let _ = writeln!(
        s,
        "<div class=\"tile\"><dt>Drifted columns</dt><dd><span class=\"big\" id=\"drifted-count\">{}</span><span class=\"note\">beyond the drift thresholds</span></dd></div>",
        count(drifted.len() as u64)
    );
    s.push_str("</dl>\n");
    let _ = writeln!(
        s,
        "<p class=\"fine\">Previous profile: <code>{}</code>, profiled {}.</p>",
        esc(&prev.uri),
        esc(&super::render::timestamp(&o.profiled_at))
    );
    if drifted.is_empty() {
        s.push_str("<p class=\"callout info\">No column drifted.</p>\n");
    } else {
        s.push_str("<ul class=\"drifted-list\">\n");
        for name in &drifted {
            let link = p
                .columns
                .iter()
                .position(|c| &c.name == name)
                .map(|i| format!("<a href=\"#col-{}\">{}</a>", i + 1, esc(name)))
                .unwrap_or_else(|| format!("<span class=\"name\">{}</span>", esc(name)));
            let _ = writeln!(
                s,
                "<li data-drifted=\"{}\">{link}: {}</li>",
                esc(name),
                esc(&prev.drift.describe(name))
            );
        }
        s.push_str("</ul>\n");
    }
    for note in &prev.drift.notes {
        let _ = writeln!(s, "<p class=\"fine\">{}</p>", esc(note));
    }
    s.push_str("</section>\n");
}

/// The column's badge: drifted, or new since the previous profile.
pub fn badge(s: &mut String, prev: &Previous, c: &ColumnProfile) {
    if prev.column(&c.name).is_none() {
        s.push_str("<span class=\"badge flag warn drift\">new column</span>");
    } else if prev.drifted(&c.name) {
        s.push_str("<span class=\"badge flag warn drift\">drifted</span>");
    }
}

/// The previous profile's main figures beside this one's, and what drifted.
pub fn column(s: &mut String, prev: &Previous, c: &ColumnProfile) {
    let Some(o) = prev.column(&c.name) else {
        return;
    };
    let described = prev.drift.describe(&c.name);
    if !described.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"callout warn drift-note\">Drifted: {}</p>",
            esc(&described)
        );
    }
    s.push_str("<h3>Previous profile</h3>\n<div class=\"scroll\"><table class=\"beside\"><thead><tr><th scope=\"col\">Figure</th><th scope=\"col\" class=\"num\">Previous</th><th scope=\"col\" class=\"num\">Now</th></tr></thead><tbody>\n");
    let row = |s: &mut String, label: &str, old: Option<String>, new: Option<String>| {
        if old.is_none() && new.is_none() {
            return;
        }
        let cell = |v: Option<String>| v.map_or_else(|| "—".to_string(), |v| esc(&v).into_owned());
        let changed = if old != new { " class=\"changed\"" } else { "" };
        let _ = writeln!(
            s,
            "<tr{changed}><th scope=\"row\">{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(label),
            cell(old),
            cell(new)
        );
    };
    if o.physical_type != c.physical_type {
        row(
            s,
            "Type",
            Some(o.physical_type.clone()),
            Some(c.physical_type.clone()),
        );
    }
    row(
        s,
        "Rows",
        Some(count(o.row_count)),
        Some(count(c.row_count)),
    );
    row(
        s,
        "Nulls",
        Some(percent(o.null_ratio)),
        Some(percent(c.null_ratio)),
    );
    let distinct = |p: &ColumnProfile| {
        let approx = p.accuracy.distinct_count.as_ref().is_some_and(|e| !e.exact);
        p.distinct_count
            .map(|d| format!("{}{}", if approx { "≈ " } else { "" }, count(d)))
    };
    row(s, "Distinct", distinct(o), distinct(c));
    let value = |v: Option<&serde_json::Value>| v.and_then(numfmt::value);
    row(s, "Min", value(o.min.as_ref()), value(c.min.as_ref()));
    row(s, "Max", value(o.max.as_ref()), value(c.max.as_ref()));
    let moment =
        |p: &ColumnProfile, f: fn(&truthound_profile::profile::Distribution) -> Option<f64>| {
            p.distribution.as_ref().and_then(f).map(numfmt::float)
        };
    row(s, "Mean", moment(o, |d| d.mean), moment(c, |d| d.mean));
    row(s, "Std dev", moment(o, |d| d.std), moment(c, |d| d.std));
    let median = |p: &ColumnProfile| value(p.quantiles.as_ref().and_then(|q| q.get("p50")));
    row(s, "Median", median(o), median(c));
    let top = |p: &ColumnProfile| {
        p.top_values.first().map(|t| {
            let v = numfmt::value(&t.value).unwrap_or_else(|| "null".into());
            format!("{v} ({})", percent(t.ratio))
        })
    };
    row(s, "Most frequent", top(o), top(c));
    s.push_str("</tbody></table></div>\n");
}

/// Columns of the previous profile that this one no longer has (they have no card).
pub fn removed(s: &mut String, prev: &Previous) {
    if prev.drift.removed.is_empty() {
        return;
    }
    s.push_str("<section class=\"card removed\" aria-label=\"Removed columns\">\n<h2>Removed since the previous profile</h2>\n<ul class=\"chips\">");
    for name in &prev.drift.removed {
        let _ = write!(s, "<li>{}</li>", esc(name));
    }
    s.push_str("</ul>\n</section>\n");
}
