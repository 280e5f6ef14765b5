//! The readable summary printed at the end of `th profile`.

use serde_json::Value;
use std::io::{self, Write};
use truthound_profile::TableProfile;

use crate::numfmt::count as thousands;

/// A fraction as a percentage without float noise: 0.1 → 10, 0.125 → 12.5, 1e-5 → 0.001.
fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    let rounded = (p * 1e6).round() / 1e6;
    if rounded == 0.0 {
        format!("{p}")
    } else {
        format!("{rounded}")
    }
}

fn short(v: &Option<Value>, width: usize) -> String {
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.is_empty() => "\"\"".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{}", (f * 1e4).round() / 1e4),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    };
    truncate(&text, width)
}

/// A min or max; an infinite one is `null` in the JSON, with its count beside it.
fn bound(v: &Option<Value>, infinities: Option<u64>, infinity: &str) -> String {
    match (v, infinities) {
        (None | Some(Value::Null), Some(n)) if n > 0 => infinity.to_string(),
        _ => short(v, 16),
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The lines under a profile's headline, in `th profile`'s summary and in `th show`: the sample
/// and the duplicate rows.
pub fn notes(out: &mut impl Write, p: &TableProfile) -> io::Result<()> {
    if let Some(s) = &p.sampling {
        let seed = s
            .seed
            .map_or("seeds differ".to_string(), |s| format!("seed {s}"));
        writeln!(
            out,
            "sampled {}% ({seed}): {} of {} rows; every figure is of the sample",
            percent(s.fraction),
            thousands(p.row_count),
            thousands(s.rows_scanned),
        )?;
    }
    if let Some(d) = p.duplicate_row_count {
        match p.accuracy.duplicate_row_count.as_ref().filter(|e| !e.exact) {
            Some(e) => writeln!(
                out,
                "duplicate rows: ≈{} (between {} and {}, 99.7%)",
                thousands(d),
                thousands(e.lower_bound.unwrap_or(0.0) as u64),
                thousands(e.upper_bound.unwrap_or(0.0) as u64)
            )?,
            None => writeln!(out, "duplicate rows: {}", thousands(d))?,
        }
    } else if let Some(u) = p
        .unavailable
        .iter()
        .find(|u| u.statistic == "duplicate_row_count")
    {
        writeln!(out, "duplicate rows: unavailable ({})", u.reason)?;
    }
    Ok(())
}

pub fn print(
    out: &mut impl Write,
    p: &TableProfile,
    workers: usize,
    written: Option<&str>,
) -> io::Result<()> {
    let source = p.sources.first().map_or("", |s| s.uri.as_str());
    writeln!(
        out,
        "{source}: {} rows × {} columns in {:.2} s ({} tasks, {}, {workers} workers)",
        thousands(p.row_count),
        p.column_count,
        p.profile_duration_ms as f64 / 1000.0,
        p.partitioning.tasks_merged,
        p.partitioning.strategies.join(", "),
    )?;
    notes(out, p)?;
    writeln!(out)?;
    let header = [
        "column",
        "type",
        "inferred",
        "nulls",
        "distinct",
        "min",
        "max",
        "mean",
        "top value",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for c in &p.columns {
        let approx = c.accuracy.distinct_count.as_ref().is_some_and(|e| !e.exact);
        let distinct = c
            .distinct_count
            .map(|d| format!("{}{}", if approx { "≈" } else { "" }, thousands(d)))
            .unwrap_or_default();
        let mean = c
            .distribution
            .as_ref()
            .and_then(|d| d.mean)
            .map(|m| format!("{}", (m * 1e4).round() / 1e4))
            .unwrap_or_default();
        let top = c
            .top_values
            .first()
            .map(|t| {
                format!(
                    "{} ({:.1}%)",
                    short(&Some(t.value.clone()), 14),
                    t.ratio * 100.0
                )
            })
            .unwrap_or_default();
        rows.push(vec![
            // Derived columns (`s.a`, `l[]`) indented under their nested column.
            format!(
                "{}{}",
                "  ".repeat(crate::show::depth(p, c)),
                truncate(&c.name, 20)
            ),
            truncate(&c.physical_type, 14),
            c.inferred_type.clone(),
            format!("{:.1}%", c.null_ratio * 100.0),
            distinct,
            bound(&c.min, c.neg_inf_count, "-inf"),
            bound(&c.max, c.pos_inf_count, "inf"),
            mean,
            top,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                let pad = w - cell.chars().count();
                // Numbers right-aligned, text left-aligned.
                if (3..=4).contains(&i) || i == 7 {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
        if n == 0 {
            writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "─".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            )?;
        }
    }
    if !p.partitioning.missing_tasks.is_empty() {
        writeln!(
            out,
            "\nwarning: missing tasks {}",
            p.partitioning.missing_tasks.join("; ")
        )?;
    }
    match written {
        Some(path) => writeln!(out, "\nprofile written to {path}")?,
        None => writeln!(
            out,
            "\n(--output FILE writes the full profile as JSON; --json prints it)"
        )?,
    }
    Ok(())
}
